//! Hostile-client tests: open redirects, forged and broken cookies, identity-header smuggling,
//! forwarding-header injection, path tricks against skip_path_regex, login-state abuse,
//! untrusted peers and group restriction. Each test names the advisory class it guards against
//! (see /work/shared/reference/peers.md §4).

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ak_outpost::core::seal::Sealer;
use ak_outpost::core::session::Session;
use ak_outpost::core::token::{random_token, unix_now};
use common::hostile::*;
use common::nginx::{Example, Nginx, NginxVars};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use url::Url;

const EVERY_EXAMPLE: [Example; 4] = [
    Example::Plain,
    Example::DocsStyle,
    Example::Swag,
    Example::DomainLevel,
];

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// `scheme://host:port` of a URL (port always explicit), for origin comparisons.
fn origin(u: &str) -> Option<String> {
    let u = Url::parse(u).ok()?;
    Some(format!(
        "{}://{}:{}",
        u.scheme(),
        u.host_str()?,
        u.port_or_known_default()?
    ))
}

impl Walk {
    fn last(&self) -> &Page {
        self.pages.last().expect("at least one page")
    }

    fn urls(&self) -> Vec<String> {
        self.pages
            .iter()
            .map(|p| format!("{} {}", p.status, p.url))
            .collect()
    }
}

/// Follows redirects from `url` (at most 20), but never requests a URL whose origin is not in
/// `fetchable`; such a target ends the walk and is reported in `left_to`.
async fn walk(b: &Browser, url: &str, fetchable: &[String]) -> Walk {
    let mut pages = Vec::new();
    let mut next = url.to_string();
    for _ in 0..20 {
        let o = origin(&next);
        if !o.as_ref().is_some_and(|o| fetchable.contains(o)) {
            return Walk {
                pages,
                left_to: Some(next),
            };
        }
        let p = b.get(&next).await;
        let loc = p.location();
        let status = p.status;
        let base = p.url.clone();
        pages.push(p);
        match loc {
            Some(l) if (300..400).contains(&status) => next = resolve(&base, &l),
            _ => {
                return Walk {
                    pages,
                    left_to: None,
                };
            }
        }
    }
    panic!(
        "redirect loop from {url}: {:?}",
        pages.iter().map(|p| &p.url).collect::<Vec<_>>()
    );
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn reached_app(&self) -> bool {
        self.status == 200 && self.body.contains("\"headers\"") && self.body.contains("\"path\"")
    }

    /// Whether the answer expires the session cookie.
    fn clears_session(&self) -> bool {
        let name = format!("{}=", session_cookie_name());
        self.all("set-cookie")
            .iter()
            .any(|c| c.starts_with(&name) && c.contains("Max-Age=0"))
    }
}

/// Sends `head` (a complete request without body) on a fresh connection and reads the answer
/// until the server closes it (requests carry `Connection: close`). Bounded to 15 s.
async fn raw_send(addr: SocketAddr, head: Vec<u8>) -> Raw {
    let io = async {
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        s.write_all(&head).await.expect("write request");
        let mut buf = Vec::new();
        // A reset after a complete answer is fine; keep what was read.
        let _ = s.read_to_end(&mut buf).await;
        buf
    };
    let buf = tokio::time::timeout(Duration::from_secs(15), io)
        .await
        .unwrap_or_else(|_| panic!("no answer from {addr} within 15 s"));
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line from {addr}: {text:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Raw {
        status,
        headers,
        body: body.to_string(),
    }
}

/// Builds `GET <target> HTTP/1.1` with the given headers (raw bytes allowed) and
/// `Connection: close`.
fn get_request(target: &str, headers: &[(&str, &[u8])]) -> Vec<u8> {
    let mut r = format!("GET {target} HTTP/1.1\r\n").into_bytes();
    for (k, v) in headers {
        r.extend_from_slice(k.as_bytes());
        r.extend_from_slice(b": ");
        r.extend_from_slice(v);
        r.extend_from_slice(b"\r\n");
    }
    r.extend_from_slice(b"Connection: close\r\n\r\n");
    r
}

/// A forward-auth check sent straight to the outpost (loopback: a trusted proxy by default).
async fn direct(addr: SocketAddr, path: &str, headers: &[(&str, &[u8])]) -> Raw {
    raw_send(addr, get_request(path, headers)).await
}

/// A request sent straight to nginx, bypassing any client-side URL normalisation.
async fn via_nginx(port: u16, target: &str, headers: &[(&str, &[u8])]) -> Raw {
    raw_send(
        SocketAddr::from(([127, 0, 0, 1], port)),
        get_request(target, headers),
    )
    .await
}

/// Drives `b` from `url` through the IdP (submitting the login form as `user` when shown) up
/// to the outpost callback; returns the callback URL without requesting it.
async fn until_callback(b: &Browser, url: &str, user: &User) -> String {
    let mut next = url.to_string();
    for _ in 0..20 {
        if is_callback(&next) {
            return next;
        }
        let p = b.get(&next).await;
        if p.body.contains("login-form") {
            let action = resolve(&p.url, &login_form_action(&p.body).expect("form action"));
            let r = b
                .post_form(
                    &action,
                    &[
                        ("username".into(), user.username.into()),
                        ("password".into(), user.password.into()),
                    ],
                )
                .await;
            assert!(
                (300..400).contains(&r.status),
                "login POST: {} {}",
                r.status,
                r.body
            );
            next = resolve(&r.url, &r.location().expect("login redirect"));
            continue;
        }
        assert!(
            (300..400).contains(&p.status),
            "expected a redirect towards the callback, got {} at {}: {}",
            p.status,
            p.url,
            p.body
        );
        next = resolve(&p.url, &p.location().expect("location"));
    }
    panic!("never reached the callback from {url}");
}

/// Logs alice in through the browser; the session cookie's name and value.
async fn alice_session(s: &Stack) -> (String, String) {
    let landing = s.login("/", &alice()).await;
    assert!(reached_app(&landing), "login failed: {landing:?}");
    let name = session_cookie_name();
    let valid = cookie_value(&s.browser, &s.app_url("/"), &name).expect("session cookie");
    (name, valid)
}

/// A forward-auth check of the app's `/private`, sent straight to the outpost with one
/// credential header (`Cookie` or `Authorization`).
async fn check_private(s: &Stack, header: &str, value: &str) -> Raw {
    let host = format!("{APP_HOST}:{}", s.nginx.port);
    let private = s.app_url("/private");
    direct(
        s.outpost.addr,
        "/outpost.goauthentik.io/auth/nginx",
        &[
            ("Host", host.as_bytes()),
            ("X-Original-URL", private.as_bytes()),
            (header, value.as_bytes()),
        ],
    )
    .await
}

/// The session in a sealed cookie value, opened with the test secret.
fn open_session(value: &str) -> Session {
    let name = session_cookie_name();
    let plain = Sealer::new(SECRET.as_bytes(), "session")
        .unseal(name.as_bytes(), value)
        .expect("the browser's session cookie opens with SECRET");
    serde_json::from_slice(&plain).expect("session JSON")
}

/// Seals `session` as a cookie value under `secret`.
fn seal_session(secret: &str, session: &Session) -> String {
    let name = session_cookie_name();
    Sealer::new(secret.as_bytes(), "session")
        .seal(name.as_bytes(), &serde_json::to_vec(session).expect("json"))
}

/// Flips one character in the middle of a base64url value.
fn flip_middle(v: &str) -> String {
    let mut b = v.as_bytes().to_vec();
    let mid = b.len() / 2;
    b[mid] = if b[mid] == b'A' { b'B' } else { b'A' };
    String::from_utf8(b).expect("ascii")
}

// ---------------------------------------------------------------------------------------------
// 1. Open redirects
// ---------------------------------------------------------------------------------------------

/// Open redirect at /start (GHSA-qqxw-m5fj-f7gv, GHSA-j7px-6hwj-hpjg, GHSA-5m6c-jp6f-2vcv,
/// GHSA-jm34-xm8m-w958, vouch #335): no `rd` sends a logged-in browser off the app host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_rd_never_redirects_off_the_app_host() {
    let s = Stack::start(StackOptions::default()).await;
    let landing = s.login("/", &alice()).await;
    assert!(reached_app(&landing), "login failed: {landing:?}");
    let port = s.nginx.port;
    let app = s.app_url("");
    let app_origin = origin(&app).unwrap();
    let fetchable = vec![app_origin.clone(), origin(&s.idp.issuer).unwrap()];
    let start = format!("{app}/outpost.goauthentik.io/start");

    let hostile: Vec<String> = vec![
        "https://evil.example/".into(),
        "http://evil.example/".into(),
        "HTTPS://EVIL.EXAMPLE/".into(),
        "//evil.example/".into(),
        "///evil.example/".into(),
        "////evil.example/".into(),
        "/\\evil.example/".into(),
        "\\\\evil.example".into(),
        "\\/evil.example".into(),
        "/\\/evil.example".into(),
        "https://app.example.test.evil.example/".into(),
        format!("http://app.example.test:{port}.evil.example/"),
        "https://app.example.test@evil.example/".into(),
        format!("http://app.example.test:{port}@evil.example/"),
        format!("https://user:pw@app.example.test:{port}/"),
        format!("http://user:pw@app.example.test:{port}/"),
        format!("http://user@app.example.test:{port}/"),
        "https://evil.example\\@app.example.test/".into(),
        format!("http://evil.example\\@app.example.test:{port}/"),
        format!("http://evil.example#@app.example.test:{port}/"),
        format!("http://evil.example?@app.example.test:{port}/"),
        format!("http://evil.example%2F@app.example.test:{port}/"),
        "javascript:alert(1)".into(),
        "JaVaScRiPt:alert(1)".into(),
        "javascript://app.example.test/%0aalert(1)".into(),
        "data:text/html,x".into(),
        "vbscript:msgbox(1)".into(),
        "%2F%2Fevil.example".into(),
        "%2f%2fevil.example%2f".into(),
        "%5C%5Cevil.example".into(),
        "/%09/evil.example".into(),
        "/%2F/evil.example".into(),
        "/%5Cevil.example".into(),
        "https:evil.example".into(),
        "https:/evil.example".into(),
        "http:\\\\evil.example".into(),
        "http://[::1]/".into(),
        format!("http://[::1]:{port}/"),
        "http://127.0.0.1/".into(),
        format!("http://127.0.0.1:{port}/"),
        format!("http://localhost:{port}/"),
        format!("http://2130706433:{port}/"),
        "http://app.example.test/".into(),
        format!("http://app.example.test.:{port}/"),
        format!("http://\u{0430}pp.example.test:{port}/"),
        "/\t/evil.example".into(),
        "/\n/evil.example".into(),
        "/\r\n/evil.example".into(),
        "\t//evil.example".into(),
        " //evil.example".into(),
        "//evil.example\t/".into(),
        "java\nscript:alert(1)".into(),
        "ht\ttps://evil.example/".into(),
        "https://evil.example\r\nSet-Cookie: x=1".into(),
        "\u{3000}//evil.example".into(),
        "\u{ff0f}\u{ff0f}evil.example".into(),
    ];
    for x in &hostile {
        let mut forms = vec![("encoded", enc(x))];
        // Unescaped, as nginx's `rd=$scheme://$http_host$request_uri` would send it.
        if !x
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '#')
        {
            forms.push(("raw", x.clone()));
        }
        for (form, q) in forms {
            let w = walk(&s.browser, &format!("{start}?rd={q}"), &fetchable).await;
            assert!(
                w.left_to.is_none(),
                "open redirect: rd={x:?} ({form}) sent the browser to {:?}; hops {:?}",
                w.left_to,
                w.urls()
            );
            let last = w.last();
            assert_eq!(
                origin(&last.url).as_deref(),
                Some(app_origin.as_str()),
                "rd={x:?} ({form}) landed elsewhere; hops {:?}",
                w.urls()
            );
            assert!(
                reached_app(last),
                "rd={x:?} ({form}): expected the app, got {} {}",
                last.status,
                last.body
            );
            assert_eq!(
                last.echoed("x-authentik-username").as_deref(),
                Some("alice")
            );
        }
    }

    // Several `rd`, attempt injection: the first `rd` decides, and it is validated.
    for (q, want_path) in [
        (
            format!("rd={}&rd={}", enc("/ok"), enc("https://evil.example/")),
            "/ok",
        ),
        (
            format!("rd={}&rd={}", enc("https://evil.example/"), enc("/ok")),
            "/",
        ),
        ("rd=https://evil.example/&attempt=1".to_string(), "/"),
        ("attempt=1&rd=//evil.example/".to_string(), "/"),
        ("rd=https://evil.example/&rd=/ok".to_string(), "/"),
    ] {
        let w = walk(&s.browser, &format!("{start}?{q}"), &fetchable).await;
        assert!(w.left_to.is_none(), "{q}: left to {:?}", w.left_to);
        let last = w.last();
        assert!(reached_app(last), "{q}: {} {}", last.status, last.body);
        assert_eq!(last.json()["path"], want_path, "{q}");
    }

    // Legitimate targets still work: encoded path, case-folded host, and the unescaped
    // `rd=$scheme://$http_host$request_uri` form whose original query has its own `&`.
    for (q, want_path, want_query) in [
        (
            format!("rd={}", enc("/some/path?x=1&y=two")),
            "/some/path",
            "x=1&y=two",
        ),
        (
            format!("rd={}", enc(&format!("http://APP.example.TEST:{port}/ok"))),
            "/ok",
            "",
        ),
        (
            format!("rd=http://app.example.test:{port}/some/path?x=1&y=two%20words&z="),
            "/some/path",
            "x=1&y=two%20words&z=",
        ),
        (
            format!("rd=http://app.example.test:{port}/p?a=1&rd=https://evil.example/"),
            "/p",
            "a=1&rd=https://evil.example/",
        ),
    ] {
        let w = walk(&s.browser, &format!("{start}?{q}"), &fetchable).await;
        assert!(w.left_to.is_none(), "{q}: left to {:?}", w.left_to);
        let last = w.last();
        assert!(reached_app(last), "{q}: {} {}", last.status, last.body);
        assert_eq!(last.json()["path"], want_path, "{q}");
        assert_eq!(last.json()["query"], want_query, "{q}");
    }

    // Sign-out takes no redirect parameter from the client (GHSA-36f2-fcrx-fp4j): whatever
    // is appended, it goes to the provider's end-session endpoint, which names no other site.
    for q in [
        format!("rd={}", enc("https://evil.example/")),
        format!("post_logout_redirect_uri={}", enc("https://evil.example/")),
        "redirect=//evil.example/&next=https://evil.example/".to_string(),
    ] {
        for u in [
            format!("{app}/outpost.goauthentik.io/sign_out?{q}"),
            format!("{app}/outpost.goauthentik.io/start?X-authentik-logout=true&{q}"),
        ] {
            let p = s.browser.get(&u).await;
            assert_eq!(p.status, 302, "{u}: {} {}", p.status, p.body);
            let loc = resolve(&p.url, &p.location().unwrap_or_default());
            assert!(
                origin(&loc) == origin(&s.idp.issuer)
                    || origin(&loc).as_deref() == Some(&app_origin),
                "{u}: sign-out redirected to {loc}"
            );
            assert!(
                !loc.contains("evil"),
                "{u}: sign-out redirect carries {loc}"
            );
        }
    }
}

/// Open redirect in forward_domain mode (GHSA-4mf2-f3wh-gvf2, vouch #335): only hosts under
/// the cookie domain on a label boundary are accepted as `rd`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_rd_in_domain_mode_allows_only_hosts_under_the_cookie_domain() {
    let s = Stack::start(StackOptions {
        example: Example::DomainLevel,
        ..Default::default()
    })
    .await;
    let port = s.nginx.port;
    let b = Browser::new(&[(APP_HOST, port), (AUTH_HOST, port), (OTHER_HOST, port)]);
    let landing = b.login(&s.app_url("/"), "alice", "alice-password").await;
    assert!(reached_app(&landing), "login failed: {landing:?}");
    let auth = s.nginx.base_url(AUTH_HOST);
    let auth_origin = origin(&auth).unwrap();
    let other = s.nginx.base_url(OTHER_HOST);
    let fetchable = vec![
        origin(&s.app_url("")).unwrap(),
        auth_origin.clone(),
        origin(&other).unwrap(),
        origin(&s.idp.issuer).unwrap(),
    ];
    let start = format!("{auth}/outpost.goauthentik.io/start");

    // A sibling under the cookie domain is allowed (and shares the session).
    let w = walk(
        &b,
        &format!("{start}?rd={}", enc(&format!("{other}/x?y=1"))),
        &fetchable,
    )
    .await;
    assert!(w.left_to.is_none(), "left to {:?}", w.left_to);
    let last = w.last();
    assert_eq!(origin(&last.url), origin(&other), "hops {:?}", w.urls());
    assert!(reached_app(last), "{} {}", last.status, last.body);
    assert_eq!(last.json()["path"], "/x");
    assert_eq!(
        last.echoed("x-authentik-username").as_deref(),
        Some("alice")
    );
    // The same for another scheme/port under the domain: the redirect names it exactly.
    let w = walk(
        &b,
        &format!("{start}?rd={}", enc("https://other.example.test/x")),
        &fetchable,
    )
    .await;
    assert_eq!(
        w.left_to.as_deref(),
        Some("https://other.example.test/x"),
        "hops {:?}",
        w.urls()
    );

    for x in [
        "https://example.test.evil.example/".to_string(),
        "https://evilexample.test/".to_string(),
        format!("http://evilexample.test:{port}/"),
        "https://evil.example/".to_string(),
        "//other.example.test/".to_string(),
        "https://other.example.test.evil.example/".to_string(),
        "https://other.example.test@evil.example/".to_string(),
        format!("http://user@other.example.test:{port}/"),
        "https://evil.example\\.example.test/".to_string(),
        "https://evil.example#.example.test/".to_string(),
        "https://evil.example?.example.test/".to_string(),
        "https://evil.example%2F.example.test/".to_string(),
        "http://127.0.0.1/".to_string(),
        "http://[::1]/".to_string(),
        "https://test/".to_string(),
        "javascript:alert(1)//.example.test".to_string(),
    ] {
        for q in [enc(&x), x.clone()] {
            let w = walk(&b, &format!("{start}?rd={q}"), &fetchable).await;
            assert!(
                w.left_to.is_none(),
                "open redirect: rd={q:?} sent the browser to {:?}; hops {:?}",
                w.left_to,
                w.urls()
            );
            assert_eq!(
                origin(&w.last().url).as_deref(),
                Some(auth_origin.as_str()),
                "rd={q:?}: expected the external host, hops {:?}",
                w.urls()
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Cookies
// ---------------------------------------------------------------------------------------------

/// The outpost remembers sessions it has opened (cookie values and Authorization headers,
/// `src/state/memo.rs`), but a remembered one is still checked at the provider on every request:
/// revoking the user's tokens ends both within the cache TTL, and a remembered value is never
/// accepted for anything but its exact bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remembered_sessions_are_still_checked_every_time() {
    let s = Stack::start(StackOptions {
        cache_ttl: 1,
        ..Default::default()
    })
    .await;
    let (name, valid) = alice_session(&s).await;
    let token = open_session(&valid).access_token;
    let stack = &s;
    let check = |header: &'static str, value: String| async move {
        check_private(stack, header, &value).await
    };
    let cookie = format!("{name}={valid}");
    let bearer = format!("Bearer {token}");
    let mut stored = Vec::new();
    // The first check of a value opens it and asks the provider; later ones are answered at
    // once from the memo and the caches (`handlers::handle`): with the same answer, byte for
    // byte but the date.
    type Answer = Vec<(String, String)>;
    let answer = |r: &Raw| -> Answer {
        let mut h: Vec<_> = r
            .headers
            .iter()
            .filter(|(k, _)| k != "date")
            .cloned()
            .collect();
        h.sort();
        h
    };
    let mut first: Option<(Answer, Answer)> = None;
    for _ in 0..3 {
        let r = check("Cookie", cookie.clone()).await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.header("x-authentik-uid"), Some("alice"));
        let from_cookie = answer(&r);
        let r = check("Authorization", bearer.clone()).await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.header("x-authentik-username"), Some("alice"));
        let from_header = answer(&r);
        match &first {
            None => first = Some((from_cookie, from_header)),
            Some((c, h)) => {
                assert_eq!(&from_cookie, c, "a remembered cookie's answer");
                assert_eq!(&from_header, h, "a remembered header's answer");
            }
        }
        let set = r
            .header("set-cookie")
            .expect("header auth stores a session")
            .to_string();
        let value = set
            .split(';')
            .next()
            .and_then(|p| p.split_once('='))
            .map(|(_, v)| v.to_string())
            .expect("cookie value");
        assert_eq!(open_session(&value).identity.sub, "alice");
        stored.push(value);
    }
    // The cookie made for the header works as a session cookie of its own.
    assert_eq!(
        check("Cookie", format!("{name}={}", stored[2]))
            .await
            .status,
        200
    );
    // Near misses of a remembered value: one character more, less, or changed.
    for (label, v) in [
        ("appended", format!("{cookie}A")),
        ("truncated", cookie[..cookie.len() - 1].to_string()),
        ("flipped", format!("{name}={}", flip_middle(&valid))),
    ] {
        assert_ne!(check("Cookie", v).await.status, 200, "{label}");
    }
    assert_ne!(
        check("Authorization", format!("{bearer}A")).await.status,
        200,
        "a longer bearer token"
    );

    assert!(s.idp.revoke_user("alice").await > 0);
    let revoked_at = Instant::now();
    let (mut cookie_ended, mut bearer_ended) = (false, false);
    while !(cookie_ended && bearer_ended) {
        assert!(
            revoked_at.elapsed() < Duration::from_secs(5),
            "remembered session still allowed {:?} after revocation (TTL 1 s): cookie ended {cookie_ended}, bearer ended {bearer_ended}",
            revoked_at.elapsed()
        );
        cookie_ended |= check("Cookie", cookie.clone()).await.status == 401;
        bearer_ended |= check("Authorization", bearer.clone()).await.status == 401;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Once ended, they stay ended.
    assert_eq!(check("Cookie", cookie).await.status, 401);
    assert_eq!(check("Authorization", bearer).await.status, 401);
}

/// Broken or forged session cookies (CVE-2026-25748 class, authentik §5.6): each is "not
/// logged in" (nginx redirects to login, the outpost answers 401 and expires the cookie),
/// never 200 and never 500; the cookie alone is not trusted without the provider.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_session_cookies_mean_login_and_are_cleared() {
    let s = Stack::start(StackOptions::default()).await;
    let (name, valid) = alice_session(&s).await;
    let session = open_session(&valid);
    let host = format!("{APP_HOST}:{}", s.nginx.port);
    let private = s.app_url("/private");
    let now = unix_now();

    let stack = &s;
    let check = |value: String| {
        let cookie = format!("{name}={value}");
        async move { check_private(stack, "Cookie", &cookie).await }
    };

    // Controls: the real cookie, and the same session resealed by the test, are accepted.
    // (So the rejections below are about the changes, not about how the test seals.)
    for (label, v) in [
        ("real", valid.clone()),
        ("resealed", seal_session(SECRET, &session)),
    ] {
        let r = check(v).await;
        assert_eq!(r.status, 200, "{label} cookie: {r:?}");
        assert_eq!(r.header("x-authentik-uid"), Some("alice"), "{label}");
    }

    let mut expired = session.clone();
    expired.expires_at = now - 10;
    let mut fake_token = session.clone();
    fake_token.access_token = "made-up-access-token-0123456789".into();
    fake_token.access_expires_at = now + 3600;
    fake_token.access_issued_at = now;
    fake_token.refresh_token = None;
    let mut dead_access = session.clone();
    dead_access.access_expires_at = now - 10;
    dead_access.access_issued_at = now - 3600;
    dead_access.refresh_token = None;
    let mut fake_refresh = dead_access.clone();
    fake_refresh.access_token = "made-up-access-token-0123456789".into();
    fake_refresh.refresh_token = Some("made-up-refresh-token-0123456789".into());
    let mut no_sub = session.clone();
    no_sub.identity.sub = String::new();
    let mut bad_version = session.clone();
    bad_version.version = 99;
    let wrong_purpose = Sealer::new(SECRET.as_bytes(), "session").seal(
        format!("{name}/state").as_bytes(),
        &serde_json::to_vec(&session).unwrap(),
    );
    let wrong_context = Sealer::new(SECRET.as_bytes(), "state")
        .seal(name.as_bytes(), &serde_json::to_vec(&session).unwrap());

    let bad: Vec<(&str, String)> = vec![
        ("tampered", flip_middle(&valid)),
        ("truncated by half", valid[..valid.len() / 2].to_string()),
        ("truncated by 4", valid[..valid.len() - 4].to_string()),
        ("extended", format!("{valid}AAAA")),
        ("garbage", "garbage".into()),
        ("long base64", "A".repeat(300)),
        ("empty", String::new()),
        ("quoted garbage", "\"abc\"".into()),
        (
            "other secret",
            seal_session("another-secret-0123456789abcdef-0123456789", &session),
        ),
        ("sealed for another purpose", wrong_purpose),
        ("sealed under another key context", wrong_context),
        ("expired session", seal_session(SECRET, &expired)),
        ("made-up access token", seal_session(SECRET, &fake_token)),
        (
            "expired access token, no refresh token",
            seal_session(SECRET, &dead_access),
        ),
        ("made-up refresh token", seal_session(SECRET, &fake_refresh)),
        ("no subject", seal_session(SECRET, &no_sub)),
        ("unknown version", seal_session(SECRET, &bad_version)),
    ];
    for (label, value) in bad {
        // Straight to the outpost: 401 and the cookie is expired.
        let r = check(value.clone()).await;
        assert_eq!(r.status, 401, "{label}: {r:?}");
        assert!(r.header("x-authentik-uid").is_none(), "{label}: {r:?}");
        assert!(r.clears_session(), "{label}: no expiring Set-Cookie: {r:?}");

        // Through nginx in a browser that has only this cookie: a redirect to login, which
        // also hands the expiring cookie to the browser.
        let b = Browser::new(&[(APP_HOST, s.nginx.port)]);
        b.add_cookie(&format!("{name}={value}; Path=/"), &s.app_url("/"));
        let p = b.get(&private).await;
        assert_eq!(p.status, 302, "{label}: {} {}", p.status, p.body);
        let loc = p.location().unwrap_or_default();
        assert!(
            loc.contains("/outpost.goauthentik.io/start"),
            "{label}: {loc}"
        );
        if !value.is_empty() {
            assert!(
                p.set_cookies()
                    .iter()
                    .any(|c| c.starts_with(&format!("{name}=")) && c.contains("Max-Age=0")),
                "{label}: nginx did not pass on the expiring cookie: {:?}",
                p.set_cookies()
            );
        }
    }

    // A real cookie shown to another outpost (another secret) for the same application.
    let listener = InProcess::bind();
    let addr = listener.local_addr().unwrap();
    let yaml = outpost_yaml(
        addr,
        &s.idp.issuer,
        "another-secret-0123456789abcdef-0123456789",
        60,
        &[AppCfg::single("app", s.app_url(""))],
    );
    let other = InProcess::serve(listener, &yaml).await;
    let r = direct(
        other.addr,
        "/outpost.goauthentik.io/auth/nginx",
        &[
            ("Host", host.as_bytes()),
            ("X-Original-URL", private.as_bytes()),
            ("Cookie", format!("{name}={valid}").as_bytes()),
        ],
    )
    .await;
    assert_eq!(r.status, 401, "cookie of another secret: {r:?}");
    assert!(r.clears_session(), "{r:?}");
}

// ---------------------------------------------------------------------------------------------
// 3. Identity header smuggling
// ---------------------------------------------------------------------------------------------

const SMUGGLED: [(&str, &str); 12] = [
    ("X-authentik-username", "mallory"),
    ("X-AUTHENTIK-USERNAME", "mallory2"),
    ("x-authentik-username", "mallory3"),
    ("X-Authentik-Groups", "admins"),
    ("X_authentik_username", "mallory"),
    ("X_Authentik_Groups", "admins"),
    ("X-authentik-email", "evil@x"),
    ("X-authentik-uid", "mallory"),
    ("X-authentik-name", "Mallory"),
    ("X-authentik-entitlements", "everything"),
    ("X-authentik-jwt", "forged.jwt.value"),
    ("X-authentik-email", "evil2@x"),
];

/// Identity header smuggling (GHSA-vjrc-mh2v-45x6 / CVE-2025-64484): through every shipped
/// nginx example the app sees only the outpost's identity, never client-sent values or
/// underscore/case variants; unauthenticated requests carrying them never reach the app.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_identity_headers_never_reach_the_app() {
    for example in EVERY_EXAMPLE {
        let s = Stack::start(StackOptions {
            example,
            ..Default::default()
        })
        .await;
        // Unauthenticated first: redirected, never passed through.
        let b = Browser::new(&[(APP_HOST, s.nginx.port), (AUTH_HOST, s.nginx.port)]);
        let p = b.get_with(&s.app_url("/h"), &SMUGGLED).await;
        assert_eq!(p.status, 302, "{example:?}: {} {}", p.status, p.body);
        assert!(
            p.location()
                .unwrap_or_default()
                .contains("/outpost.goauthentik.io/start"),
            "{example:?}: {:?}",
            p.location()
        );

        let landing = s.login("/", &alice()).await;
        assert!(
            reached_app(&landing),
            "{example:?}: login failed: {landing:?}"
        );
        let p = s.browser.get_with(&s.app_url("/h"), &SMUGGLED).await;
        assert!(reached_app(&p), "{example:?}: {} {}", p.status, p.body);
        let want = [
            ("x-authentik-username", Some("alice")),
            ("x-authentik-groups", Some("admins|users")),
            ("x-authentik-email", Some("alice@example.test")),
            ("x-authentik-uid", Some("alice")),
            ("x-authentik-name", Some("Alice Liddell")),
            ("x_authentik_username", None),
            ("x_authentik_groups", None),
        ];
        for (h, v) in want {
            assert_eq!(
                p.echoed(h).as_deref(),
                v,
                "{example:?}: app saw {h} = {:?}",
                p.echoed(h)
            );
        }
        let ent = p.echoed("x-authentik-entitlements").unwrap_or_default();
        assert!(
            !ent.contains("everything"),
            "{example:?}: entitlements {ent:?}"
        );
        let jwt = p.echoed("x-authentik-jwt").unwrap_or_default();
        assert!(!jwt.contains("forged"), "{example:?}: jwt {jwt:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Direct forward-auth calls (CVE-2026-25748, GHSA-5wcc-hf24-rf5h, GHSA-68wm-pfjf-wqp6)
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    /// Exactly this status, never a 2xx.
    Status(u16),
    /// 200 without identity: a configured skip path.
    Anonymous,
    /// 200 as alice.
    Alice,
    /// Not logged in: 401 (nginx) or a redirect to the provider (traefik/caddy/envoy).
    Denied,
    /// Either "not logged in" (401) or alice: for inputs where both readings are sound.
    DeniedOrAlice,
}

/// Forward-auth checks sent straight to the outpost with missing, malformed or injected
/// forwarding data and broken Cookie headers (CVE-2026-25748, GHSA-5wcc-hf24-rf5h,
/// GHSA-68wm-pfjf-wqp6): errors are 500 "configuration error" or 401, never a pass; every 2xx
/// names a real user or is a configured skip path; nothing panics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_auth_checks_fail_closed() {
    let s = Stack::start(StackOptions {
        skip_path_regex: "^/public/".into(),
        ..Default::default()
    })
    .await;
    let (name, valid) = alice_session(&s).await;
    let host = format!("{APP_HOST}:{}", s.nginx.port);
    let app = s.app_url("");
    let url = |p: &str| format!("{app}{p}");
    let nginx = "/outpost.goauthentik.io/auth/nginx";
    let ok_cookie = format!("{name}={valid}");
    let junk = format!("{name}={}", "J".repeat(8192));
    let junk_other = format!("x={}", "%".repeat(8192));
    let half = valid.len() / 2;
    let split = format!("{name}={}; {name}_1={}", &valid[..half], &valid[half..]);
    let many_chunks = (0..9)
        .map(|i| {
            let n = if i == 0 {
                name.clone()
            } else {
                format!("{name}_{i}")
            };
            format!("{n}={}", "Q".repeat(300))
        })
        .collect::<Vec<_>>()
        .join("; ");

    type Case = (String, &'static str, Vec<(&'static str, Vec<u8>)>, Want);
    let h = |k: &'static str, v: &str| (k, v.as_bytes().to_vec());
    let private = url("/private");
    let public = url("/public/x");
    let mut cases: Vec<Case> = vec![
        // Missing / unparsable X-Original-URL.
        (
            "no X-Original-URL".into(),
            nginx,
            vec![h("Host", &host)],
            Want::Status(500),
        ),
        (
            "no X-Original-URL, valid cookie".into(),
            nginx,
            vec![h("Host", &host), h("Cookie", &ok_cookie)],
            Want::Status(500),
        ),
        (
            "no X-Original-URL, bare prefix".into(),
            "/outpost.goauthentik.io",
            vec![h("Host", &host)],
            Want::Status(500),
        ),
    ];
    for bad in [
        "not a url",
        "javascript:alert(1)",
        "/private",
        "http://",
        "http://user:pw@app.example.test/private",
        "ftp://app.example.test/public/x",
        "http://[::1/public/x",
        "http://app.example.test:99999/public/x",
    ] {
        cases.push((
            format!("unparsable X-Original-URL {bad:?}"),
            nginx,
            vec![h("Host", &host), h("X-Original-URL", bad)],
            Want::Status(500),
        ));
    }
    // Injected X-Original-URI (GHSA-5wcc-hf24-rf5h) and outpost paths.
    for uri in [
        "/outpost.goauthentik.io/start",
        "/outpost.goauthentik.io/callback?X-authentik-auth-callback=true",
        "/outpost.goauthentik.io/sign_out",
        "/outpost.goauthentik.io/ping",
        "/outpost.goauthentik.io/auth/nginx",
        "/private?X-authentik-auth-callback=true",
    ] {
        cases.push((
            format!("X-Original-URI {uri}, no cookie"),
            nginx,
            vec![h("Host", &host), h("X-Original-URI", uri)],
            Want::Status(401),
        ));
        cases.push((
            format!("X-Original-URL {uri}, no cookie"),
            nginx,
            vec![h("Host", &host), h("X-Original-URL", &url(uri))],
            Want::Status(401),
        ));
    }
    cases.extend([
        (
            "X-Original-URL private, X-Original-URI public".into(),
            nginx,
            vec![
                h("Host", &host),
                h("X-Original-URL", &private),
                h("X-Original-URI", "/public/x"),
            ],
            Want::Status(401),
        ),
        (
            "X-Original-URL private, X-Original-URI outpost path".into(),
            nginx,
            vec![
                h("Host", &host),
                h("X-Original-URL", &private),
                h("X-Original-URI", "/outpost.goauthentik.io/start"),
            ],
            Want::Status(401),
        ),
        (
            "X-Original-URL public, X-Original-URI private".into(),
            nginx,
            vec![
                h("Host", &host),
                h("X-Original-URL", &public),
                h("X-Original-URI", "/private"),
            ],
            Want::Anonymous,
        ),
        (
            "X-Original-URL public".into(),
            nginx,
            vec![h("Host", &host), h("X-Original-URL", &public)],
            Want::Anonymous,
        ),
        (
            "X-Original-URL private, valid cookie".into(),
            nginx,
            vec![
                h("Host", &host),
                h("X-Original-URL", &private),
                h("Cookie", &ok_cookie),
            ],
            Want::Alice,
        ),
        (
            "X-Original-URL private, no cookie".into(),
            nginx,
            vec![h("Host", &host), h("X-Original-URL", &private)],
            Want::Status(401),
        ),
        (
            "bare prefix, private, no cookie".into(),
            "/outpost.goauthentik.io",
            vec![h("Host", &host), h("X-Original-URL", &private)],
            Want::Status(401),
        ),
    ]);
    // Broken Cookie headers (every one with a private X-Original-URL).
    let cookie_cases: Vec<(&str, Vec<Vec<u8>>, Want)> = vec![
        (
            "non-UTF-8 value",
            vec![[name.as_bytes(), b"=\xff\xfe\x80abc"].concat()],
            Want::Status(401),
        ),
        (
            "non-UTF-8 header",
            vec![b"\xff\xff\xff".to_vec()],
            Want::Status(401),
        ),
        (
            "8 KB junk value",
            vec![junk.clone().into_bytes()],
            Want::Status(401),
        ),
        (
            "8 KB unrelated junk",
            vec![junk_other.clone().into_bytes()],
            Want::Status(401),
        ),
        (
            "repeated name, garbage twice",
            vec![format!("{name}=garbage; {name}=garbage2").into_bytes()],
            Want::Status(401),
        ),
        (
            "repeated name, garbage then valid",
            vec![format!("{name}=garbage; {ok_cookie}").into_bytes()],
            Want::DeniedOrAlice,
        ),
        (
            "repeated name, valid then garbage",
            vec![format!("{ok_cookie}; {name}=garbage").into_bytes()],
            Want::DeniedOrAlice,
        ),
        (
            "quoted garbage",
            vec![format!("{name}=\"garbage\"").into_bytes()],
            Want::Status(401),
        ),
        (
            "quoted valid",
            vec![format!("{name}=\"{valid}\"").into_bytes()],
            Want::DeniedOrAlice,
        ),
        (
            "name=",
            vec![format!("{name}=").into_bytes()],
            Want::Status(401),
        ),
        (
            "name==",
            vec![format!("{name}==").into_bytes()],
            Want::Status(401),
        ),
        (
            "bare name",
            vec![name.clone().into_bytes()],
            Want::Status(401),
        ),
        (
            "only separators",
            vec![b";;;; ; =;=".to_vec()],
            Want::Status(401),
        ),
        (
            "chunk without head",
            vec![format!("{name}_1={valid}").into_bytes()],
            Want::Status(401),
        ),
        (
            "nine junk chunks",
            vec![many_chunks.clone().into_bytes()],
            Want::Status(401),
        ),
        (
            "valid split in chunks",
            vec![split.clone().into_bytes()],
            Want::DeniedOrAlice,
        ),
        (
            "valid plus a non-UTF-8 header",
            vec![ok_cookie.clone().into_bytes(), b"x=\xff".to_vec()],
            Want::Alice,
        ),
        (
            "name with spaces around",
            vec![format!(" {name} = garbage ").into_bytes()],
            Want::Status(401),
        ),
    ];
    for (label, cookies, want) in cookie_cases {
        let mut hs = vec![h("Host", &host), h("X-Original-URL", &private)];
        for c in cookies {
            hs.push(("Cookie", c));
        }
        cases.push((format!("cookie: {label}"), nginx, hs, want));
    }
    // Other flavours.
    let fwd = |uri: &str| {
        vec![
            h("Host", &host),
            h("X-Forwarded-Proto", "http"),
            h("X-Forwarded-Host", &host),
            h("X-Forwarded-Uri", uri),
        ]
    };
    cases.extend([
        (
            "traefik without forwarding headers".into(),
            "/outpost.goauthentik.io/auth/traefik",
            vec![h("Host", &host)],
            Want::Status(500),
        ),
        (
            "caddy without forwarding headers".into(),
            "/outpost.goauthentik.io/auth/caddy",
            vec![h("Host", &host)],
            Want::Status(500),
        ),
        (
            "traefik outpost path".into(),
            "/outpost.goauthentik.io/auth/traefik",
            fwd("/outpost.goauthentik.io/start"),
            Want::Denied,
        ),
        (
            "caddy outpost path".into(),
            "/outpost.goauthentik.io/auth/caddy",
            fwd("/outpost.goauthentik.io/ping"),
            Want::Denied,
        ),
        (
            "traefik dot-segment escape".into(),
            "/outpost.goauthentik.io/auth/traefik",
            fwd("/public/../private"),
            Want::Denied,
        ),
        (
            "traefik public".into(),
            "/outpost.goauthentik.io/auth/traefik",
            fwd("/public/x"),
            Want::Anonymous,
        ),
        (
            "envoy outpost path".into(),
            "/outpost.goauthentik.io/auth/envoy/outpost.goauthentik.io/start",
            vec![h("Host", &host)],
            Want::Denied,
        ),
        (
            "envoy private".into(),
            "/outpost.goauthentik.io/auth/envoy/private",
            vec![h("Host", &host)],
            Want::Denied,
        ),
        (
            "envoy public".into(),
            "/outpost.goauthentik.io/auth/envoy/public/x",
            vec![h("Host", &host)],
            Want::Anonymous,
        ),
    ]);

    let mut failures = Vec::new();
    for (label, path, headers, want) in &cases {
        let hs: Vec<(&str, &[u8])> = headers.iter().map(|(k, v)| (*k, v.as_slice())).collect();
        let r = direct(s.outpost.addr, path, &hs).await;
        let uid = r.header("x-authentik-uid").unwrap_or_default().to_string();
        let ok = match want {
            Want::Status(code) => r.status == *code,
            Want::Anonymous => r.status == 200 && uid.is_empty(),
            Want::Alice => r.status == 200 && uid == "alice",
            Want::Denied => r.status == 401 || r.status == 302,
            Want::DeniedOrAlice => r.status == 401 || (r.status == 200 && uid == "alice"),
        };
        // The invariant behind every row: a 2xx is a real user or a configured skip path.
        let is_2xx = (200..300).contains(&r.status);
        let invariant = !is_2xx || uid == "alice" || *want == Want::Anonymous;
        if *want == Want::Status(500) && r.status == 500 && !r.body.contains("configuration error")
        {
            failures.push(format!(
                "{label}: 500 without 'configuration error': {:?}",
                r.body
            ));
        }
        if !ok || !invariant {
            failures.push(format!(
                "{label}: want {want:?}, got {} uid={uid:?} body={:?}",
                r.status,
                r.body.chars().take(200).collect::<String>()
            ));
        }
    }
    // Still alive after all of that.
    let r = direct(
        s.outpost.addr,
        "/outpost.goauthentik.io/ping",
        &[("Host", host.as_bytes())],
    )
    .await;
    assert_eq!(r.status, 204, "outpost no longer answers: {r:?}");
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Forwarding headers injected by the client through nginx (GHSA-5wcc-hf24-rf5h,
/// GHSA-7x63-xv5r-3p2x, CVE-2024-45410 class): with a skip path configured, an unauthenticated
/// request for a private path never reaches the app whatever X-Original-*/X-Forwarded-* it
/// carries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_forwarding_headers_through_nginx_never_bypass_login() {
    for example in EVERY_EXAMPLE {
        let skip = if example == Example::DomainLevel {
            "^https?://[^/]+/public/"
        } else {
            "^/public/"
        };
        let s = Stack::start(StackOptions {
            example,
            skip_path_regex: skip.into(),
            ..Default::default()
        })
        .await;
        let b = Browser::new(&[(APP_HOST, s.nginx.port), (AUTH_HOST, s.nginx.port)]);
        // Control: the skip path is open.
        let p = b.get(&s.app_url("/public/x")).await;
        assert!(
            reached_app(&p),
            "{example:?}: skip path closed: {} {}",
            p.status,
            p.body
        );
        let public = s.app_url("/public/x");
        let sets: Vec<Vec<(&str, &str)>> = vec![
            vec![("X-Original-URL", public.as_str())],
            vec![("X-Original-URI", "/public/x")],
            vec![("X-Original-URI", "/outpost.goauthentik.io/start")],
            vec![("X-Original-URI", "/outpost.goauthentik.io/callback")],
            vec![
                ("X-Forwarded-Uri", "/public/x"),
                ("X-Forwarded-Proto", "http"),
                ("X-Forwarded-Host", "app.example.test"),
            ],
            vec![("X-Forwarded-Host", "evil.example")],
            vec![("X-Forwarded-Method", "OPTIONS")],
            vec![(
                "Connection",
                "close, X-Original-URL, X-Forwarded-Host, Host",
            )],
            vec![(
                "User-Agent",
                "kube-probe/1.29 ELB-HealthChecker/2.0 GoogleHC/1.0",
            )],
            vec![("Authorization", "Bearer made-up-token")],
            vec![("Authorization", "Basic YWxpY2U6d3Jvbmc=")],
        ];
        for hs in &sets {
            let p = b.get_with(&s.app_url("/private"), hs).await;
            assert!(
                !reached_app(&p) && p.status != 200,
                "{example:?}: {hs:?} reached the app unauthenticated: {} {}",
                p.status,
                p.body
            );
        }
    }
}

/// An HTTP/1.0 request without `Host` makes nginx's `X-Original-URL`
/// (`$scheme://$http_host$request_uri`) read `http:///evil/public/x`, which URL parsers read as
/// host `evil`, path `/public/x`: the first path segment must not be swallowed into a host so
/// that a private path matches skip_path_regex (CVE-2021-32637 / CVE-2026-95811 class).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_without_host_cannot_turn_a_private_path_into_a_skip_path() {
    let mut failures = Vec::new();
    for example in EVERY_EXAMPLE {
        let skip = if example == Example::DomainLevel {
            "^https?://[^/]+/public/"
        } else {
            "^/public/"
        };
        let s = Stack::start(StackOptions {
            example,
            skip_path_regex: skip.into(),
            ..Default::default()
        })
        .await;
        let host = format!("{APP_HOST}:{}", s.nginx.port);
        // Controls over HTTP/1.1: the skip path passes, the private path does not.
        let r = via_nginx(s.nginx.port, "/public/x", &[("Host", host.as_bytes())]).await;
        assert!(r.reached_app(), "{example:?}: control /public/x: {r:?}");
        let r = via_nginx(s.nginx.port, "/evil/public/x", &[("Host", host.as_bytes())]).await;
        assert_eq!(r.status, 302, "{example:?}: control /evil/public/x: {r:?}");

        for target in ["/evil/public/x", "//evil/public/x", "/private/public/x"] {
            let head = format!("GET {target} HTTP/1.0\r\n\r\n").into_bytes();
            let r = raw_send(SocketAddr::from(([127, 0, 0, 1], s.nginx.port)), head).await;
            if r.reached_app() {
                failures.push(format!(
                    "{example:?}: HTTP/1.0 without Host, GET {target}: the private path reached \
                     the app unauthenticated ({} {})",
                    r.status, r.body
                ));
            }
        }
        // The same input straight to the outpost.
        for u in [
            "http:///evil/public/x",
            "http:////evil/public/x",
            "http:/evil/public/x",
        ] {
            let r = direct(
                s.outpost.addr,
                "/outpost.goauthentik.io/auth/nginx",
                &[
                    ("Host", APP_HOST.as_bytes()),
                    ("X-Original-URL", u.as_bytes()),
                ],
            )
            .await;
            if r.status == 200 {
                failures.push(format!(
                    "{example:?}: X-Original-URL {u:?} (empty authority) was let through: {r:?}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// 5. Path normalisation vs skip_path_regex
// ---------------------------------------------------------------------------------------------

/// Path normalisation vs skip_path_regex (GHSA-7rh7-c77v-6434, GHSA-pxq7-h93f-9jrg,
/// CVE-2020-24660, GHSA-3q34-rx83-r6mq): only paths nginx really routes under `/public/` pass
/// unauthenticated; dot segments, encoded separators, queries and fragments do not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_path_regex_matches_the_normalised_path_only() {
    let s = Stack::start(StackOptions {
        skip_path_regex: "^/public/".into(),
        ..Default::default()
    })
    .await;
    let host = format!("{APP_HOST}:{}", s.nginx.port);
    let port = s.nginx.port;

    for ok in [
        "/public/x",
        "/public/",
        "/public/a/b?c=/private",
        "/public//x",
        "/./public/x",
    ] {
        let r = via_nginx(port, ok, &[("Host", host.as_bytes())]).await;
        assert!(r.reached_app(), "{ok} should be public: {r:?}");
        assert!(
            !r.body.contains("x-authentik-username"),
            "{ok}: anonymous request carries identity: {}",
            r.body
        );
    }

    let hostile = [
        "/public/../private",
        "/public/%2e%2e/private",
        "/public/%2E%2E/private",
        "/public/.%2e/private",
        "/public%2F..%2Fprivate",
        "/public%2f..%2fprivate",
        "/public/..%2Fprivate",
        "/public/%2e%2e%2fprivate",
        "/public/x/../../private",
        "/public/./../private",
        "/public/%2e/../private",
        "/private?x=/public/",
        "/private?/public/",
        "/private#/public/",
        "//public/../private",
        "/private//public/",
        "/private/public/",
        "/PUBLIC/x",
        "/public",
        "/publicx",
        "/%00/public/x",
        "/private%3F/public/",
        "/private%23/public/",
    ];
    for p in hostile {
        let r = via_nginx(port, p, &[("Host", host.as_bytes())]).await;
        assert!(
            !r.reached_app(),
            "through nginx, {p} reached the app unauthenticated: {} {}",
            r.status,
            r.body
        );
        assert!(
            r.status == 302 || r.status == 400,
            "through nginx, {p}: want 302 to login (or nginx's 400), got {} {}",
            r.status,
            r.body
        );
        if r.status == 302 {
            assert!(
                r.header("location")
                    .unwrap_or_default()
                    .contains("/outpost.goauthentik.io/start"),
                "{p}: {r:?}"
            );
        }

        let u = format!("http://{host}{p}");
        let r = direct(
            s.outpost.addr,
            "/outpost.goauthentik.io/auth/nginx",
            &[("Host", host.as_bytes()), ("X-Original-URL", u.as_bytes())],
        )
        .await;
        assert!(
            r.status == 401 || r.status == 500,
            "X-Original-URL {u}: want 401, got {} {}",
            r.status,
            r.body
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 6. Login state
// ---------------------------------------------------------------------------------------------

/// Login state abuse (GHSA-fv82-r8qv-ch4v, TFA #77, GHSA-f24x-5g9q-753f): a callback from
/// another browser, a replayed, tampered or missing state restarts the login (302, never a
/// dead end on the first try) and never yields a session for the wrong browser.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callback_state_is_bound_to_the_browser_and_single_use() {
    let s = Stack::start(StackOptions::default()).await;
    let port = s.nginx.port;
    let app = s.app_url("");
    let name = session_cookie_name();
    let bname = binding_cookie_name();
    let fresh = || Browser::new(&[(APP_HOST, port)]);
    let has_session =
        |b: &Browser| cookie_value(b, &s.app_url("/"), &name).is_some_and(|v| !v.is_empty());
    let restarts = |p: &Page, what: &str| {
        assert_eq!(
            p.status, 302,
            "{what}: want a restart, got {} {}",
            p.status, p.body
        );
        let loc = p.location().unwrap_or_default();
        assert!(
            loc.contains("/outpost.goauthentik.io/start"),
            "{what}: want a redirect to /start, got {loc}"
        );
    };

    // Browser A starts and completes the IdP login, but we hold the callback.
    let a = fresh();
    let cb = until_callback(&a, &s.app_url("/wanted?q=1"), &alice()).await;
    assert!(cb.starts_with(&app), "{cb}");
    let a_binding = cookie_value(&a, &s.app_url("/"), &bname).expect("binding cookie");

    // Browser B receives A's callback URL (login CSRF / link sharing).
    let b = fresh();
    let pages = b.follow(&cb).await;
    restarts(&pages[0], "callback in another browser");
    let last = pages.last().unwrap();
    assert!(
        last.body.contains("login-form"),
        "browser B should have to log in itself: {} {} {}",
        last.status,
        last.url,
        last.body
    );
    assert!(
        !has_session(&b),
        "browser B got a session from A's callback"
    );

    // A can still finish its own login: B's attempt did not burn it.
    let pages = a.follow(&cb).await;
    let last = pages.last().unwrap();
    assert!(
        reached_app(last),
        "A's login: {} {}",
        last.status,
        last.body
    );
    assert_eq!(last.json()["path"], "/wanted");
    assert_eq!(
        last.echoed("x-authentik-username").as_deref(),
        Some("alice")
    );

    // Replay in A (already logged in): lands again, no error.
    let pages = a.follow(&cb).await;
    assert!(
        (300..400).contains(&pages[0].status),
        "replay in A: {:?}",
        pages[0]
    );
    let last = pages.last().unwrap();
    assert!(
        reached_app(last),
        "replay in A: {} {}",
        last.status,
        last.body
    );
    assert_eq!(last.json()["path"], "/wanted");

    // Replay in a fresh browser C: restart, login form, no session.
    let c = fresh();
    let pages = c.follow(&cb).await;
    restarts(&pages[0], "replay in a fresh browser");
    assert!(pages.last().unwrap().body.contains("login-form"));
    assert!(!has_session(&c), "replayed callback created a session");

    // Replay by D holding A's binding cookie but no session: state already used.
    let d = fresh();
    d.add_cookie(&format!("{bname}={a_binding}; Path=/"), &s.app_url("/"));
    let pages = d.follow(&cb).await;
    restarts(&pages[0], "replay with A's binding cookie");
    assert!(pages.last().unwrap().body.contains("login-form"));
    assert!(
        !has_session(&d),
        "replayed callback with stolen binding created a session"
    );

    // Tampered state, missing state, garbage state, and a session cookie as state.
    let cb_url = Url::parse(&cb).unwrap();
    let state = cb_url
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .expect("state in callback");
    let code = cb_url
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .expect("code in callback");
    let a_session = cookie_value(&a, &s.app_url("/"), &name).unwrap();
    let callback = |q: String| {
        format!("{app}/outpost.goauthentik.io/callback?X-authentik-auth-callback=true{q}")
    };
    let variants = [
        (
            "tampered state",
            callback(format!(
                "&state={}&code={}",
                enc(&flip_middle(&state)),
                enc(&code)
            )),
        ),
        (
            "truncated state",
            callback(format!(
                "&state={}&code={}",
                enc(&state[..state.len() / 2]),
                enc(&code)
            )),
        ),
        ("no state", callback(format!("&code={}", enc(&code)))),
        (
            "empty state",
            callback(format!("&state=&code={}", enc(&code))),
        ),
        ("garbage state", callback("&state=garbage&code=x".into())),
        (
            "session cookie as state",
            callback(format!("&state={}&code=x", enc(&a_session))),
        ),
        ("no parameters", callback(String::new())),
        (
            "state via signature on another path",
            format!(
                "{app}/outpost.goauthentik.io/start?X-authentik-auth-callback=true&state={}&code=x",
                enc(&flip_middle(&state))
            ),
        ),
    ];
    for (what, u) in &variants {
        let e = fresh();
        let pages = e.follow(u).await;
        restarts(&pages[0], what);
        assert!(
            pages.last().unwrap().body.contains("login-form"),
            "{what}: {:?}",
            pages.last()
        );
        assert!(!has_session(&e), "{what}: created a session");
        // In a browser logged in at the IdP the restart completes (no dead end).
        let pages = a.follow(u).await;
        restarts(&pages[0], what);
        let last = pages.last().unwrap();
        assert!(
            reached_app(last),
            "{what}, logged-in browser: {} {}",
            last.status,
            last.body
        );
    }

    // A callback with a good state but no code restarts towards the original target.
    let cb2 = until_callback(
        &a,
        &format!("{app}/outpost.goauthentik.io/start?rd=%2Fsecond"),
        &alice(),
    )
    .await;
    let mut u = Url::parse(&cb2).unwrap();
    let kept: Vec<(String, String)> = u
        .query_pairs()
        .filter(|(k, _)| k != "code")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    u.query_pairs_mut().clear().extend_pairs(kept);
    let pages = a.follow(u.as_str()).await;
    restarts(&pages[0], "no code");
    let last = pages.last().unwrap();
    assert!(reached_app(last), "no code: {} {}", last.status, last.body);
    assert_eq!(last.json()["path"], "/second");
}

/// Failing logins do not loop: every callback in the chain fails (the binding cookie changes
/// each time), and after a few restarts the outpost stops with an explanation page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_callbacks_end_on_a_page_not_a_loop() {
    let s = Stack::start(StackOptions::default()).await;
    let landing = s.login("/", &alice()).await;
    assert!(reached_app(&landing), "login failed: {landing:?}");
    let bname = binding_cookie_name();
    let app = s.app_url("");
    for first in [
        format!(
            "{app}/outpost.goauthentik.io/callback?X-authentik-auth-callback=true&state=garbage&code=x"
        ),
        format!("{app}/outpost.goauthentik.io/start?rd=%2Floop"),
        format!("{app}/outpost.goauthentik.io/start?rd=%2Floop&attempt=0"),
        format!("{app}/outpost.goauthentik.io/start?rd=%2Floop&attempt=-5"),
        format!("{app}/outpost.goauthentik.io/start?rd=%2Floop&attempt=255"),
    ] {
        let mut next = first.clone();
        let mut callbacks = 0;
        let mut hops = Vec::new();
        let mut last = None;
        for _ in 0..60 {
            if is_callback(&next) {
                callbacks += 1;
                // Another browser's binding every time: each callback fails.
                s.browser.add_cookie(
                    &format!("{bname}={}; Path=/", random_token(32)),
                    &s.app_url("/"),
                );
            }
            let p = s.browser.get(&next).await;
            hops.push(format!("{} {}", p.status, p.url));
            match p.location() {
                Some(l) if (300..400).contains(&p.status) => next = resolve(&p.url, &l),
                _ => {
                    last = Some(p);
                    break;
                }
            }
        }
        let last = last.unwrap_or_else(|| panic!("{first}: no end after 60 hops: {hops:#?}"));
        assert_eq!(last.status, 400, "{first}: {} {}", last.status, last.body);
        assert!(
            last.body.contains("Login could not be completed"),
            "{first}: {}",
            last.body
        );
        assert!(
            (1..=4).contains(&callbacks),
            "{first}: {callbacks} failing callbacks before giving up: {hops:#?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 7. Untrusted peers and application selection
// ---------------------------------------------------------------------------------------------

/// Forwarding headers from untrusted peers are ignored (CVE-2023-36456, CVE-2026-76835):
/// with trusted_proxies not covering loopback, X-Original-URL cannot reach a skip path and
/// X-Forwarded-Host cannot select another application.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_peer_cannot_use_forwarding_headers() {
    let app_ext = "http://app.example.test:8081";
    let other_ext = "http://other.example.test:8082";
    let idp = Idp::start(&IdpOptions::new(vec![
        format!("{app_ext}/outpost.goauthentik.io/callback?X-authentik-auth-callback=true"),
        format!("{other_ext}/outpost.goauthentik.io/callback?X-authentik-auth-callback=true"),
    ]));
    let apps = || {
        let mut a = AppCfg::single("app", app_ext.into());
        a.skip_path_regex = "^/public/".into();
        let mut o = AppCfg::single("other", other_ext.into());
        o.skip_path_regex = "^/".into();
        vec![a, o]
    };
    let serve = |trusted: Option<&'static str>| {
        let issuer = idp.issuer.clone();
        let apps = apps();
        async move {
            let l = InProcess::bind();
            let mut yaml = outpost_yaml(l.local_addr().unwrap(), &issuer, SECRET, 60, &apps);
            if let Some(t) = trusted {
                yaml = yaml.replace(
                    "applications:\n",
                    &format!("trusted_proxies: {t}\napplications:\n"),
                );
                assert!(yaml.contains("trusted_proxies"), "{yaml}");
            }
            InProcess::serve(l, &yaml).await
        }
    };
    let untrusted = serve(Some("[\"10.9.9.9/32\"]")).await;
    let trusted = serve(None).await;
    let nginx = "/outpost.goauthentik.io/auth/nginx";
    let host = "app.example.test:8081";

    let redirect_uri = |r: &Raw| {
        let loc = r.header("location").unwrap_or_default().to_string();
        Url::parse(&loc)
            .ok()
            .and_then(|u| {
                u.query_pairs()
                    .find(|(k, _)| k == "redirect_uri")
                    .map(|(_, v)| v.into_owned())
            })
            .unwrap_or_else(|| panic!("no redirect_uri in {loc:?}"))
    };

    // Skip path via X-Original-URL.
    let skip = [
        ("Host", host.as_bytes()),
        (
            "X-Original-URL",
            b"http://app.example.test:8081/public/x".as_slice(),
        ),
    ];
    let r = direct(trusted.addr, nginx, &skip).await;
    assert_eq!(r.status, 200, "control (trusted peer): {r:?}");
    let r = direct(untrusted.addr, nginx, &skip).await;
    assert_eq!(r.status, 401, "untrusted peer reached a skip path: {r:?}");
    // X-Original-URI likewise.
    let r = direct(
        untrusted.addr,
        nginx,
        &[("Host", host.as_bytes()), ("X-Original-URI", b"/public/x")],
    )
    .await;
    assert_eq!(r.status, 401, "untrusted X-Original-URI: {r:?}");

    // Application selection via X-Forwarded-Host.
    let xfh_unknown = [
        ("Host", host.as_bytes()),
        ("X-Forwarded-Host", b"nowhere.example".as_slice()),
        (
            "X-Original-URL",
            b"http://app.example.test:8081/private".as_slice(),
        ),
    ];
    // nginx checks are routed by Host even from a trusted peer: nginx passes a client's
    // X-Forwarded-Host through unless the config overwrites it.
    let r = direct(trusted.addr, nginx, &xfh_unknown).await;
    assert_eq!(
        r.status, 401,
        "trusted nginx check must be routed by Host, not X-Forwarded-Host: {r:?}"
    );
    // Traefik asks under the outpost's own address: there X-Forwarded-Host (trusted) routes.
    let traefik_unknown = [
        ("Host", b"outpost:9000".as_slice()),
        ("X-Forwarded-Host", b"nowhere.example".as_slice()),
        ("X-Forwarded-Proto", b"http".as_slice()),
        ("X-Forwarded-Uri", b"/private".as_slice()),
    ];
    let r = direct(
        trusted.addr,
        "/outpost.goauthentik.io/auth/traefik",
        &traefik_unknown,
    )
    .await;
    assert_eq!(
        r.status, 400,
        "control (trusted traefik check picks by X-Forwarded-Host): {r:?}"
    );
    let r = direct(
        untrusted.addr,
        "/outpost.goauthentik.io/auth/traefik",
        &traefik_unknown,
    )
    .await;
    assert_ne!(r.status, 200, "untrusted traefik check: {r:?}");
    let r = direct(untrusted.addr, nginx, &xfh_unknown).await;
    assert_eq!(
        r.status, 401,
        "untrusted X-Forwarded-Host selected an application: {r:?}"
    );

    let start = [
        ("Host", host.as_bytes()),
        ("X-Forwarded-Host", b"other.example.test:8082".as_slice()),
    ];
    let r = direct(trusted.addr, "/outpost.goauthentik.io/start", &start).await;
    assert!(
        redirect_uri(&r).starts_with(app_ext),
        "/start is routed by Host even from a trusted peer: {}",
        redirect_uri(&r)
    );
    let r = direct(untrusted.addr, "/outpost.goauthentik.io/start", &start).await;
    assert_eq!(r.status, 302, "{r:?}");
    assert!(
        redirect_uri(&r).starts_with(app_ext),
        "untrusted X-Forwarded-Host chose the login of another app: {}",
        redirect_uri(&r)
    );
    // X-Forwarded-Host towards the skip-everything app, with its URL.
    let r = direct(
        untrusted.addr,
        nginx,
        &[
            ("Host", host.as_bytes()),
            ("X-Forwarded-Host", b"other.example.test:8082"),
            ("X-Original-URL", b"http://other.example.test:8082/private"),
        ],
    )
    .await;
    assert_eq!(r.status, 401, "{r:?}");
}

/// Client-sent X-Forwarded-Host through nginx (the examples do not overwrite it on the auth
/// sub-request) must not make the outpost judge the request by another application's rules
/// (here: a second app whose skip_path_regex opens everything). The examples' README says
/// the outpost picks the provider by the `Host` nginx sends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_x_forwarded_host_through_nginx_cannot_select_another_application() {
    let mut failures = Vec::new();
    for example in [Example::Plain, Example::DocsStyle, Example::Swag] {
        let listener = InProcess::bind();
        let outpost_addr = listener.local_addr().unwrap();
        let echo = common::echo::EchoApp::start().await;
        let nginx = Nginx::start(
            example,
            &NginxVars {
                outpost: outpost_addr,
                app_upstream: echo.addr,
                app_host: APP_HOST.into(),
                auth_host: AUTH_HOST.into(),
                outposts: vec![],
            },
        );
        let app_ext = nginx.base_url(APP_HOST);
        let other_ext = nginx.base_url(OTHER_HOST);
        let idp = Idp::start(&IdpOptions::new(vec![
            format!("{app_ext}/outpost.goauthentik.io/callback?X-authentik-auth-callback=true"),
            format!("{other_ext}/outpost.goauthentik.io/callback?X-authentik-auth-callback=true"),
        ]));
        let app = AppCfg::single("app", app_ext.clone());
        let mut open = AppCfg::single("status-page", other_ext.clone());
        open.skip_path_regex = "^/".into();
        let yaml = outpost_yaml(outpost_addr, &idp.issuer, SECRET, 60, &[app, open]);
        let outpost = InProcess::serve(listener, &yaml).await;

        // Control: the other app really is open.
        let other_host = format!("{OTHER_HOST}:{}", nginx.port);
        let r = direct(
            outpost.addr,
            "/outpost.goauthentik.io/auth/nginx",
            &[
                ("Host", other_host.as_bytes()),
                ("X-Original-URL", format!("{other_ext}/x").as_bytes()),
            ],
        )
        .await;
        assert_eq!(r.status, 200, "{example:?}: control: {r:?}");

        let b = Browser::new(&[(APP_HOST, nginx.port)]);
        let p = b.get(&format!("{app_ext}/private")).await;
        assert_eq!(
            p.status, 302,
            "{example:?}: control: {} {}",
            p.status, p.body
        );
        for xfh in [
            other_host.as_str(),
            OTHER_HOST,
            "OTHER.example.test",
            "other.example.test, app.example.test",
        ] {
            let p = b
                .get_with(&format!("{app_ext}/private"), &[("X-Forwarded-Host", xfh)])
                .await;
            if reached_app(&p) {
                failures.push(format!(
                    "{example:?}: X-Forwarded-Host: {xfh} made the outpost apply the other \
                     application's skip_path_regex; /private on {APP_HOST} reached the app \
                     unauthenticated ({} {})",
                    p.status, p.body
                ));
            }
        }
        drop(outpost);
        drop(nginx);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// 8. Group restriction
// ---------------------------------------------------------------------------------------------

/// Group restriction (GHSA-652x-m2gr-hppm): a user outside allowed_groups gets 403 from nginx,
/// even when sending a forged groups header; a member gets in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_groups_are_enforced() {
    let s = Stack::start(StackOptions {
        allowed_groups: vec!["admins".into()],
        ..Default::default()
    })
    .await;
    let bob_page = s.login("/", &bob()).await;
    assert_eq!(
        bob_page.status, 403,
        "bob: {} {}",
        bob_page.status, bob_page.body
    );
    assert!(
        !looks_like_echo(&bob_page.body),
        "bob reached the app: {}",
        bob_page.body
    );
    for hs in [
        vec![("X-authentik-groups", "admins")],
        vec![
            ("X-authentik-username", "alice"),
            ("X-authentik-uid", "alice"),
        ],
    ] {
        let p = s.browser.get_with(&s.app_url("/x"), &hs).await;
        assert_eq!(p.status, 403, "bob with {hs:?}: {} {}", p.status, p.body);
    }
    // Straight to the outpost: 403, no identity headers.
    let name = session_cookie_name();
    let bob_cookie = cookie_value(&s.browser, &s.app_url("/"), &name).expect("bob's session");
    let host = format!("{APP_HOST}:{}", s.nginx.port);
    let r = direct(
        s.outpost.addr,
        "/outpost.goauthentik.io/auth/nginx",
        &[
            ("Host", host.as_bytes()),
            ("X-Original-URL", s.app_url("/x").as_bytes()),
            ("Cookie", format!("{name}={bob_cookie}").as_bytes()),
        ],
    )
    .await;
    assert_eq!(r.status, 403, "{r:?}");
    assert!(r.header("x-authentik-uid").is_none(), "{r:?}");

    let alice_browser = Browser::new(&[(APP_HOST, s.nginx.port)]);
    let p = alice_browser
        .login(&s.app_url("/"), "alice", "alice-password")
        .await;
    assert!(reached_app(&p), "alice: {} {}", p.status, p.body);
    assert_eq!(p.echoed("x-authentik-username").as_deref(), Some("alice"));
}

/// A Host header nginx accepts but URL parsers read differently (`\` is a path separator in
/// http URLs, `?`/`#` end the authority) must not move part of nginx's `$http_host` into the
/// path or drop the real path, so that a private path matches skip_path_regex
/// (CVE-2021-32637 / CVE-2026-95811 class).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crafted_host_header_cannot_turn_a_private_path_into_a_skip_path() {
    let mut failures = Vec::new();
    for example in EVERY_EXAMPLE {
        let skip = if example == Example::DomainLevel {
            "^https?://[^/]+/public/\n^https?://[^/]+/$"
        } else {
            "^/public/\n^/$"
        };
        let s = Stack::start(StackOptions {
            example,
            skip_path_regex: skip.into(),
            ..Default::default()
        })
        .await;
        let port = s.nginx.port;
        // Controls: both skip rules work, a private path needs login.
        let host = format!("{APP_HOST}:{port}");
        for (target, open) in [("/", true), ("/public/x", true), ("/private", false)] {
            let r = via_nginx(port, target, &[("Host", host.as_bytes())]).await;
            assert_eq!(
                r.reached_app(),
                open,
                "{example:?}: control {target}: {r:?}"
            );
        }
        // The same X-Original-URL values straight to the outpost.
        for u in [
            format!("http://{APP_HOST}\\public\\/private"),
            format!("http://{APP_HOST}:{port}\\public\\/private"),
            format!("http://{APP_HOST}?/private"),
            format!("http://{APP_HOST}#/private"),
        ] {
            let r = direct(
                s.outpost.addr,
                "/outpost.goauthentik.io/auth/nginx",
                &[
                    ("Host", APP_HOST.as_bytes()),
                    ("X-Original-URL", u.as_bytes()),
                ],
            )
            .await;
            if r.status == 200 {
                failures.push(format!("{example:?}: X-Original-URL {u:?} was let through"));
            }
        }
        let hosts = [
            format!("{APP_HOST}\\public\\"),
            format!("{APP_HOST}:{port}\\public\\"),
            format!("{APP_HOST}\\public"),
            format!("{APP_HOST}?"),
            format!("{APP_HOST}#"),
            format!("{APP_HOST}:{port}?"),
            format!("{APP_HOST}:{port}#"),
            format!("{APP_HOST}%2Fpublic%2F"),
            format!("{APP_HOST}@"),
            format!("x@{APP_HOST}"),
            format!("{APP_HOST}\t"),
        ];
        for h in &hosts {
            for target in ["/private", "/private/x"] {
                let r = via_nginx(port, target, &[("Host", h.as_bytes())]).await;
                if r.reached_app() {
                    failures.push(format!(
                        "{example:?}: Host {h:?}, GET {target}: reached the app \
                         unauthenticated ({} {})",
                        r.status, r.body
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
