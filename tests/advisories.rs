//! Advisories as regression tests. Every advisory of `../shared/reference/peers.md` §4 ("Security
//! advisories that hit forward-auth servers") that `tests/security.rs` does not already cover
//! exactly has a test here named after it; README.md's "Security model" lists which test covers
//! which advisory. Everything goes through the real server (in-process on port 0, or the binary)
//! behind real nginx or real Caddy, against the reference IdP; only authentik's API is faked.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ak_outpost::core::app::{AppSpec, Mode, host_in_domain};
use ak_outpost::core::login::{LoginState, binding_hash};
use ak_outpost::core::redirect::RedirectTarget;
use ak_outpost::core::seal::Sealer;
use ak_outpost::core::session::Session;
use ak_outpost::core::token::{pkce_pair, random_token, unix_now};
use ak_outpost::source::authentik::env::AuthentikEnv;
use common::caddy::{Caddy, CaddyVars};
use common::echo::EchoApp;
use common::fake_authentik::{FakeAuthentik, FakeUser, ProviderSpec};
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

const NGINX_CHECK: &str = "/outpost.goauthentik.io/auth/nginx";
const TRAEFIK_CHECK: &str = "/outpost.goauthentik.io/auth/traefik";
const CADDY_CHECK: &str = "/outpost.goauthentik.io/auth/caddy";
const ENVOY_CHECK: &str = "/outpost.goauthentik.io/auth/envoy";

// ---------------------------------------------------------------------------------------------
// Helpers (the same shapes as tests/security.rs, which a test file cannot import)
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

/// The session in a sealed cookie value, opened with the test secret.
fn open_session(value: &str) -> Session {
    let plain = Sealer::new(SECRET.as_bytes(), "session")
        .unseal(session_cookie_name().as_bytes(), value)
        .expect("the session cookie opens with SECRET");
    serde_json::from_slice(&plain).expect("session JSON")
}

impl Walk {
    fn last(&self) -> &Page {
        self.pages.last().expect("at least one page")
    }

    /// Each hop as `status URL`, queries cut short.
    fn urls(&self) -> Vec<String> {
        self.pages
            .iter()
            .map(|p| {
                let short: String = p.url.chars().take(90).collect();
                format!("{} {short}", p.status)
            })
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
    panic!("redirect loop from {url}");
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

    fn is_2xx(&self) -> bool {
        (200..300).contains(&self.status)
    }

    fn reached_app(&self) -> bool {
        self.status == 200 && looks_like_echo(&self.body)
    }

    /// Every `X-authentik-*` header of the answer.
    fn identity(&self) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(k, _)| k.to_ascii_lowercase().starts_with("x-authentik-"))
            .map(|(k, v)| format!("{k}: {v}"))
            .collect()
    }

    fn uid(&self) -> &str {
        self.header("x-authentik-uid").unwrap_or_default()
    }

    fn location(&self) -> String {
        self.header("location").unwrap_or_default().to_string()
    }
}

/// Sends `head` on a fresh connection and reads until the server closes it. `None` when the
/// server closed or reset the connection without an answer (a refusal). Bounded to 15 s.
async fn raw_try(addr: SocketAddr, head: Vec<u8>) -> Option<Raw> {
    let io = async {
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        // A server may answer (and close) before reading everything: keep what was read.
        let _ = s.write_all(&head).await;
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf).await;
        buf
    };
    let buf = tokio::time::timeout(Duration::from_secs(15), io)
        .await
        .unwrap_or_else(|_| panic!("no answer from {addr} within 15 s"));
    if buf.is_empty() {
        return None;
    }
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap_or_default()
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Some(Raw {
        status,
        headers,
        body: body.to_string(),
    })
}

async fn raw_send(addr: SocketAddr, head: Vec<u8>) -> Raw {
    raw_try(addr, head)
        .await
        .unwrap_or_else(|| panic!("{addr} closed the connection without an answer"))
}

/// `GET <target> HTTP/1.1` with the given headers (raw bytes allowed) and `Connection: close`
/// (unless the headers name a `Connection` of their own).
fn get_request(target: &[u8], headers: &[(&str, &[u8])]) -> Vec<u8> {
    let mut r = b"GET ".to_vec();
    r.extend_from_slice(target);
    r.extend_from_slice(b" HTTP/1.1\r\n");
    for (k, v) in headers {
        r.extend_from_slice(k.as_bytes());
        r.extend_from_slice(b": ");
        r.extend_from_slice(v);
        r.extend_from_slice(b"\r\n");
    }
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("connection"))
    {
        r.extend_from_slice(b"Connection: close\r\n");
    }
    r.extend_from_slice(b"\r\n");
    r
}

/// A request sent straight to the outpost (loopback: a trusted proxy by default).
async fn direct(addr: SocketAddr, path: &str, headers: &[(&str, &[u8])]) -> Raw {
    raw_send(addr, get_request(path.as_bytes(), headers)).await
}

/// A request sent straight to a proxy on loopback, bypassing client-side URL normalisation.
async fn via_proxy(port: u16, target: &[u8], headers: &[(&str, &[u8])]) -> Raw {
    raw_send(
        SocketAddr::from(([127, 0, 0, 1], port)),
        get_request(target, headers),
    )
    .await
}

/// Drives `b` from `url` through the IdP (submitting the login form as `user` when shown) up
/// to the outpost callback; returns the callback URL without requesting it. Every page seen
/// is appended to `seen`.
async fn until_callback(b: &Browser, url: &str, user: &User, seen: &mut Vec<Page>) -> String {
    let mut next = url.to_string();
    for _ in 0..20 {
        if is_callback(&next) {
            return next;
        }
        let p = b.get(&next).await;
        if p.body.contains("login-form") {
            let action = resolve(&p.url, &login_form_action(&p.body).expect("form action"));
            seen.push(p);
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
            seen.push(r);
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
        seen.push(p);
    }
    panic!("never reached the callback from {url}");
}

/// Follows redirects from `url`, appending every page to `seen`; returns the last one's index.
async fn follow_into(b: &Browser, url: &str, seen: &mut Vec<Page>) -> usize {
    for p in b.follow(url).await {
        seen.push(p);
    }
    seen.len() - 1
}

/// Logs `user` in through the app in browser `b` of stack `s`; the session cookie value.
async fn session_of(s: &Stack, b: &Browser, user: &User) -> String {
    let landing = b.login(&s.app_url("/"), user.username, user.password).await;
    assert!(reached_app(&landing), "login failed: {landing:?}");
    cookie_value(b, &s.app_url("/"), &session_cookie_name()).expect("session cookie")
}

/// A forward-auth check of the app's `/private`, sent straight to the outpost with extra
/// headers.
async fn check_private(s: &Stack, headers: &[(&str, &[u8])]) -> Raw {
    let host = format!("{APP_HOST}:{}", s.nginx.port);
    let private = s.app_url("/private");
    let mut hs: Vec<(&str, &[u8])> = vec![
        ("Host", host.as_bytes()),
        ("X-Original-URL", private.as_bytes()),
    ];
    hs.extend_from_slice(headers);
    direct(s.outpost.addr, NGINX_CHECK, &hs).await
}

/// Asserts that following `/start?rd=<x>` (encoded, and raw where a URL can carry it) in a
/// logged-in browser ends on `home_origin`, never anywhere else.
async fn assert_rd_lands_home(
    b: &Browser,
    start: &str,
    fetchable: &[String],
    home_origin: &str,
    hostile: &[String],
) {
    let mut failures = Vec::new();
    for x in hostile {
        let mut forms = vec![("encoded", enc(x))];
        if !x
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '#' || !c.is_ascii())
        {
            forms.push(("raw", x.clone()));
        }
        for (form, q) in forms {
            let w = walk(b, &format!("{start}?rd={q}"), fetchable).await;
            if let Some(to) = &w.left_to {
                failures.push(format!(
                    "open redirect: rd={x:?} ({form}) sent the browser to {to}; hops {:?}",
                    w.urls()
                ));
                continue;
            }
            // Home: the app (or nginx's answer for an odd but local path, or the sign-in
            // host's own page in domain mode).
            let last = w.last();
            if origin(&last.url).as_deref() != Some(home_origin) {
                failures.push(format!(
                    "rd={x:?} ({form}) ended at {} {} (want {home_origin}); hops {:?}",
                    last.status,
                    last.url,
                    w.urls()
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Caddy (the shipped Caddyfile) in front of the echo app and an in-process outpost.
struct CaddyStack {
    _echo: EchoApp,
    caddy: Caddy,
    idp: Idp,
    outpost: InProcess,
    external: String,
    browser: Browser,
}

impl CaddyStack {
    async fn start(skip_path_regex: &str) -> CaddyStack {
        let listener = InProcess::bind();
        let outpost_addr = listener.local_addr().expect("addr");
        let echo = EchoApp::start().await;
        let caddy = Caddy::start(&CaddyVars {
            outpost: outpost_addr,
            app_upstream: echo.addr,
            app_host: APP_HOST.into(),
        });
        let external = caddy.base_url(APP_HOST);
        let idp = Idp::start(&IdpOptions::new(vec![format!(
            "{external}/outpost.goauthentik.io/callback?X-authentik-auth-callback=true"
        )]));
        let mut app = AppCfg::single("app", external.clone());
        app.skip_path_regex = skip_path_regex.into();
        let yaml = outpost_yaml(outpost_addr, &idp.issuer, SECRET, 60, &[app]);
        let outpost = InProcess::serve(listener, &yaml).await;
        let browser = Browser::new(&[(APP_HOST, caddy.port)]);
        CaddyStack {
            _echo: echo,
            caddy,
            idp,
            outpost,
            external,
            browser,
        }
    }

    fn host(&self) -> String {
        format!("{APP_HOST}:{}", self.caddy.port)
    }

    /// A check in Traefik's or Caddy's shape (`X-Forwarded-*`), sent straight to the outpost.
    async fn forwarded(&self, check: &str, uri: &[u8], extra: &[(&str, &[u8])]) -> Raw {
        let host = self.host();
        let mut hs: Vec<(&str, &[u8])> = vec![
            ("Host", b"outpost:9000"),
            ("X-Forwarded-Proto", b"http"),
            ("X-Forwarded-Host", host.as_bytes()),
            ("X-Forwarded-Uri", uri),
        ];
        hs.extend_from_slice(extra);
        direct(self.outpost.addr, check, &hs).await
    }

    /// A check in Envoy's shape: the original path appended to the check path.
    async fn envoy(&self, path_and_query: &[u8], extra: &[(&str, &[u8])]) -> Raw {
        let host = self.host();
        let mut hs: Vec<(&str, &[u8])> =
            vec![("Host", host.as_bytes()), ("X-Forwarded-Proto", b"http")];
        hs.extend_from_slice(extra);
        let target = [ENVOY_CHECK.as_bytes(), path_and_query].concat();
        raw_send(self.outpost.addr, get_request(&target, &hs)).await
    }

    /// A request through Caddy.
    async fn via_caddy(&self, target: &[u8], extra: &[(&str, &[u8])]) -> Raw {
        let host = self.host();
        let mut hs: Vec<(&str, &[u8])> = vec![("Host", host.as_bytes())];
        hs.extend_from_slice(extra);
        via_proxy(self.caddy.port, target, &hs).await
    }

    async fn login_alice(&self) -> String {
        let landing = self
            .browser
            .login(&format!("{}/", self.external), "alice", "alice-password")
            .await;
        assert!(
            reached_app(&landing),
            "login through Caddy failed: {landing:?}\n{}",
            self.caddy.log()
        );
        cookie_value(&self.browser, &self.external, &session_cookie_name()).expect("session")
    }
}

/// Every forward-auth flavour, sent straight to the outpost for `target` (path and query as
/// the client asked for it): `(flavour, answer)`.
async fn every_flavour(
    cs: &CaddyStack,
    target: &[u8],
    extra: &[(&str, &[u8])],
) -> Vec<(&'static str, Raw)> {
    let url = [cs.external.as_bytes(), target].concat();
    let host = cs.host();
    let mut nginx_headers: Vec<(&str, &[u8])> =
        vec![("Host", host.as_bytes()), ("X-Original-URL", &url)];
    nginx_headers.extend_from_slice(extra);
    vec![
        (
            "nginx",
            direct(cs.outpost.addr, NGINX_CHECK, &nginx_headers).await,
        ),
        ("traefik", cs.forwarded(TRAEFIK_CHECK, target, extra).await),
        ("caddy", cs.forwarded(CADDY_CHECK, target, extra).await),
        ("envoy", cs.envoy(target, extra).await),
    ]
}

// ---------------------------------------------------------------------------------------------
// Trusting client-controlled forwarding data
// ---------------------------------------------------------------------------------------------

/// CVE-2024-45410 (Traefik) and GHSA-4xc6-mgv4-5v44 (Apache httpd): a client listed
/// `X-Forwarded-*` as hop-by-hop in `Connection`, the proxy dropped them, and the auth server
/// filled in defaults. Through real Caddy such a request still needs a login; straight to the
/// outpost, a check missing any one forwarding header is a configuration error (500), never a
/// default that matches a skip path (`^/$` here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cve_2024_45410_connection_header_cannot_drop_forwarding_headers() {
    let cs = CaddyStack::start("^/public/\n^/$").await;
    let log = || format!("--- caddy log ---\n{}", cs.caddy.log());
    // Controls: the skip paths are open, a private path is not.
    assert!(
        cs.via_caddy(b"/public/x", &[]).await.reached_app(),
        "{}",
        log()
    );
    assert!(cs.via_caddy(b"/", &[]).await.reached_app(), "{}", log());
    let r = cs.via_caddy(b"/private", &[]).await;
    assert_eq!(r.status, 302, "control /private: {r:?}");

    let hop_by_hop: [&[u8]; 4] = [
        b"close, X-Forwarded-Uri, X-Forwarded-Host, X-Forwarded-Proto, X-Forwarded-Method",
        b"close, x-forwarded-uri",
        b"close, X-Forwarded-Host, Host",
        b"close, X-Original-URL, X-Original-URI, X-Forwarded-For, Forwarded",
    ];
    for connection in hop_by_hop {
        for spoof in [
            vec![],
            vec![
                ("X-Forwarded-Uri", b"/public/x".as_slice()),
                (
                    "X-Original-URL",
                    b"http://app.example.test/public/x".as_slice(),
                ),
                ("X-Forwarded-Host", OTHER_HOST.as_bytes()),
            ],
        ] {
            let mut hs: Vec<(&str, &[u8])> = vec![("Connection", connection)];
            hs.extend(spoof.iter().copied());
            for target in [b"/private".as_slice(), b"/private?x=/"] {
                let r = cs.via_caddy(target, &hs).await;
                assert!(
                    !r.reached_app() && r.status == 302,
                    "Connection: {} on {}: want the login redirect, got {} {}\n{}",
                    String::from_utf8_lossy(connection),
                    String::from_utf8_lossy(target),
                    r.status,
                    r.body,
                    log()
                );
                assert!(r.location().starts_with(&cs.idp.issuer), "{}", r.location());
            }
        }
    }

    // Straight to the outpost: every subset of Traefik's/Caddy's three forwarding headers
    // with one missing. The remaining ones name the skip path `/`.
    let host = cs.host();
    let full: [(&str, &[u8]); 3] = [
        ("X-Forwarded-Proto", b"http"),
        ("X-Forwarded-Host", host.as_bytes()),
        ("X-Forwarded-Uri", b"/"),
    ];
    for check in [TRAEFIK_CHECK, CADDY_CHECK] {
        // Control: all three present → the skip path passes.
        let mut hs: Vec<(&str, &[u8])> = vec![("Host", host.as_bytes())];
        hs.extend(full);
        let r = direct(cs.outpost.addr, check, &hs).await;
        assert_eq!(r.status, 200, "{check} control: {r:?}");
        for missing in 0..full.len() {
            for empty in [false, true] {
                let mut hs: Vec<(&str, &[u8])> = vec![("Host", host.as_bytes())];
                for (i, h) in full.iter().enumerate() {
                    if i != missing {
                        hs.push(*h);
                    } else if empty {
                        hs.push((h.0, b""));
                    }
                }
                // The header named as hop-by-hop, as the proxy in front would have read it.
                let conn = format!("{}, keep-alive", full[missing].0);
                hs.push(("Connection", conn.as_bytes()));
                let r = raw_send(
                    cs.outpost.addr,
                    [
                        get_request(check.as_bytes(), &hs),
                        // A second request closes the connection.
                        get_request(b"/outpost.goauthentik.io/ping", &[("Host", b"x")]),
                    ]
                    .concat(),
                )
                .await;
                assert!(
                    r.status == 500 && r.body.contains("configuration error"),
                    "{check} without {} (empty: {empty}): want 500 configuration error, got {} {}",
                    full[missing].0,
                    r.status,
                    r.body
                );
            }
        }
    }
    // Envoy: the original host is `Host` itself; without it nothing is known.
    let r = raw_send(
        cs.outpost.addr,
        b"GET /outpost.goauthentik.io/auth/envoy/ HTTP/1.1\r\nX-Forwarded-Proto: http\r\nConnection: close\r\n\r\n".to_vec(),
    )
    .await;
    assert!(!r.is_2xx(), "envoy check without Host: {r:?}");
}

/// CVE-2026-76835 (oauth2-proxy #3506): a fix for spoofed forwarding headers was inert because
/// the default trusted-proxy set was `0.0.0.0/0`. Here the default (standalone and authentik
/// mode) is loopback and private ranges only, never a public address, and an explicit empty
/// list trusts nobody, loopback included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cve_2026_76835_trusted_proxies_default_is_never_everyone() {
    let external = "http://app.example.test:8081";
    let idp = Idp::start(&IdpOptions::new(vec![format!(
        "{external}/outpost.goauthentik.io/callback?X-authentik-auth-callback=true"
    )]));
    let mut app = AppCfg::single("app", external.into());
    app.skip_path_regex = "^/public/".into();
    let serve = |trusted: Option<&'static str>| {
        let issuer = idp.issuer.clone();
        let apps = vec![AppCfg {
            name: app.name.clone(),
            external_host: app.external_host.clone(),
            mode: app.mode,
            cookie_domain: app.cookie_domain.clone(),
            skip_path_regex: app.skip_path_regex.clone(),
            allowed_groups: vec![],
        }];
        async move {
            let l = InProcess::bind();
            let mut yaml = outpost_yaml(l.local_addr().unwrap(), &issuer, SECRET, 60, &apps);
            if let Some(t) = trusted {
                yaml = yaml.replace(
                    "applications:\n",
                    &format!("trusted_proxies: {t}\napplications:\n"),
                );
            }
            assert_eq!(yaml.contains("trusted_proxies"), trusted.is_some());
            InProcess::serve(l, &yaml).await
        }
    };
    let default = serve(None).await;
    let nobody = serve(Some("[]")).await;

    let public: [IpAddr; 6] = [
        "8.8.8.8".parse().unwrap(),
        "203.0.113.7".parse().unwrap(),
        "100.64.0.1".parse().unwrap(),
        "2001:db8::1".parse().unwrap(),
        "::ffff:8.8.8.8".parse().unwrap(),
        "0.0.0.0".parse().unwrap(),
    ];
    let rt = default.outpost.runtime();
    for ip in public {
        assert!(
            !rt.settings.is_trusted(ip),
            "the default trusted_proxies trust {ip}"
        );
    }
    for ip in ["127.0.0.1", "::1", "10.1.2.3", "192.168.1.1", "172.20.0.2"] {
        assert!(rt.settings.is_trusted(ip.parse().unwrap()), "{ip}");
    }
    // authentik mode: unset and empty AUTHENTIK_LISTEN__TRUSTED_PROXY_CIDRS both mean the
    // defaults, never "everyone".
    for cidrs in [None, Some(""), Some(" , ")] {
        let env = AuthentikEnv::from_lookup(|k| match k {
            "AUTHENTIK_HOST" => Some("http://authentik.example.test:9000".into()),
            "AUTHENTIK_TOKEN" => Some("token-0123456789".into()),
            "AUTHENTIK_LISTEN__TRUSTED_PROXY_CIDRS" => cidrs.map(str::to_string),
            _ => None,
        })
        .expect("valid environment");
        for ip in public {
            assert!(
                !env.trusted_proxies.iter().any(|n| n.contains(&ip)),
                "AUTHENTIK_LISTEN__TRUSTED_PROXY_CIDRS={cidrs:?} trusts {ip}"
            );
        }
    }

    // Through the server: X-Original-URL of a skip path counts from loopback by default, and
    // from nobody with `trusted_proxies: []`.
    let skip: [(&str, &[u8]); 2] = [
        ("Host", b"app.example.test:8081"),
        ("X-Original-URL", b"http://app.example.test:8081/public/x"),
    ];
    let r = direct(default.addr, NGINX_CHECK, &skip).await;
    assert_eq!(
        r.status, 200,
        "control (loopback trusted by default): {r:?}"
    );
    let r = direct(nobody.addr, NGINX_CHECK, &skip).await;
    assert_eq!(
        r.status, 401,
        "trusted_proxies: [] still believed loopback: {r:?}"
    );
    let r = direct(
        nobody.addr,
        TRAEFIK_CHECK,
        &[
            ("Host", b"app.example.test:8081"),
            ("X-Forwarded-Proto", b"http"),
            ("X-Forwarded-Host", b"app.example.test:8081"),
            ("X-Forwarded-Uri", b"/public/x"),
        ],
    )
    .await;
    assert!(
        !r.is_2xx(),
        "trusted_proxies: [] still believed X-Forwarded-*: {r:?}"
    );
}

/// CVE-2023-36456 (authentik) and CVE-2024-47070 (authentik core): `X-Forwarded-For` /
/// `X-Real-IP` were believed from anyone. The outpost takes no decision on a client address;
/// the one place it reports one (authentik's `configuration_error` event) is the TCP peer,
/// whatever forwarding headers the request carries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cve_2023_36456_client_ip_never_comes_from_forwarding_headers() {
    let external = "http://app.example.test:8081";
    let fa = FakeAuthentik::start(
        vec![ProviderSpec::forward_single(1, "grafana", external)],
        vec![FakeUser::new("alice", "alice-password")],
    )
    .await;
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut outpost = Binary::spawn_env(
        addr,
        &[
            ("AUTHENTIK_HOST", fa.url.clone()),
            ("AUTHENTIK_TOKEN", fa.token.clone()),
        ],
    );
    outpost.wait_ping().await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = direct(
            addr,
            NGINX_CHECK,
            &[
                ("Host", b"app.example.test:8081"),
                ("X-Original-URL", b"http://app.example.test:8081/"),
            ],
        )
        .await;
        if r.status == 401 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "outpost never served the app: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    fa.clear_records();
    let r = direct(
        addr,
        NGINX_CHECK,
        &[
            ("Host", b"app.example.test:8081"),
            ("X-Forwarded-For", b"203.0.113.9, 198.51.100.1"),
            ("X-Real-IP", b"203.0.113.10"),
            ("Forwarded", b"for=203.0.113.11;proto=https"),
            ("True-Client-IP", b"203.0.113.12"),
            ("CF-Connecting-IP", b"203.0.113.13"),
        ],
    )
    .await;
    assert_eq!(r.status, 500, "{r:?}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while fa.events().is_empty() {
        assert!(Instant::now() < deadline, "no event reached authentik");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let e = &fa.events()[0];
    assert_eq!(e["action"], "configuration_error", "{e}");
    assert_eq!(
        e["client_ip"], "127.0.0.1",
        "the event's client IP came from a client header: {e}"
    );
}

// ---------------------------------------------------------------------------------------------
// Failing open on malformed input
// ---------------------------------------------------------------------------------------------

/// CVE-2026-25748 (authentik, Traefik/Caddy): a malformed session cookie produced a 2xx without
/// `X-authentik-*` headers. Here, on the Traefik, Caddy and Envoy checks and through real
/// Caddy, an unreadable cookie is "not logged in" (401 or a login redirect): no 2xx, no
/// identity header; every 2xx names the user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cve_2026_25748_malformed_cookie_never_passes() {
    let cs = CaddyStack::start("^/public/").await;
    let valid = cs.login_alice().await;
    let name = session_cookie_name();
    let half = valid.len() / 2;
    let mut flipped = valid.clone().into_bytes();
    flipped[half] = if flipped[half] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap();
    let other_secret = {
        let s = open_session(&valid);
        Sealer::new(b"another-secret-0123456789abcdef-0123456789", "session")
            .seal(name.as_bytes(), &serde_json::to_vec(&s).unwrap())
    };
    let nine = (0..9)
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
    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("tampered", format!("{name}={flipped}").into_bytes()),
        (
            "truncated",
            format!("{name}={}", &valid[..half]).into_bytes(),
        ),
        ("extended", format!("{name}={valid}AAAA").into_bytes()),
        (
            "other secret",
            format!("{name}={other_secret}").into_bytes(),
        ),
        ("garbage", format!("{name}=garbage").into_bytes()),
        ("empty", format!("{name}=").into_bytes()),
        ("bare name", name.clone().into_bytes()),
        ("quoted", format!("{name}=\"garbage\"").into_bytes()),
        ("non-UTF-8", [name.as_bytes(), b"=\xff\xfe\x80abc"].concat()),
        ("8 KB", format!("{name}={}", "J".repeat(8192)).into_bytes()),
        (
            "chunk without head",
            format!("{name}_1={valid}").into_bytes(),
        ),
        ("nine junk chunks", nine.into_bytes()),
        (
            "valid split with a junk chunk",
            format!("{name}={}; {name}_1=junk", &valid[..half]).into_bytes(),
        ),
        ("separators only", b";;; ; =;=".to_vec()),
        ("base64 padding", format!("{name}={valid}==").into_bytes()),
    ];
    let mut failures = Vec::new();
    // Control: the valid cookie passes everywhere, with the identity.
    let ok_cookie = format!("{name}={valid}");
    for (flavour, r) in every_flavour(&cs, b"/private", &[("Cookie", ok_cookie.as_bytes())]).await {
        assert!(
            r.status == 200 && r.uid() == "alice",
            "control {flavour}: {r:?}"
        );
    }
    for (label, cookie) in &bad {
        for accept in [b"text/html".as_slice(), b"application/json"] {
            let extra: [(&str, &[u8]); 2] = [("Cookie", cookie), ("Accept", accept)];
            for (flavour, r) in every_flavour(&cs, b"/private", &extra).await {
                let fine = match r.status {
                    401 => true,
                    302 => r.location().starts_with(&cs.idp.issuer),
                    _ => false,
                };
                if !fine || !r.identity().is_empty() {
                    failures.push(format!(
                        "{flavour}, cookie {label}, Accept {}: {} {:?} {:?}",
                        String::from_utf8_lossy(accept),
                        r.status,
                        r.identity(),
                        r.body.chars().take(120).collect::<String>()
                    ));
                }
            }
            // Through Caddy, as a browser that has only this cookie.
            let r = cs.via_caddy(b"/private", &extra).await;
            if r.reached_app() || r.is_2xx() || !matches!(r.status, 302 | 401) {
                failures.push(format!(
                    "Caddy, cookie {label}, Accept {}: {} {}",
                    String::from_utf8_lossy(accept),
                    r.status,
                    r.body.chars().take(200).collect::<String>()
                ));
            }
            // A skip path stays anonymous: 200 without identity, whatever the cookie.
            let r = cs.via_caddy(b"/public/x", &extra).await;
            let leaked: Vec<String> = serde_json::from_str::<serde_json::Value>(&r.body)
                .ok()
                .and_then(|v| v["headers"].as_object().cloned())
                .map(|h| {
                    h.keys()
                        .filter(|k| k.contains("authentik"))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            if !r.reached_app() || !leaked.is_empty() {
                failures.push(format!(
                    "Caddy skip path, cookie {label}: {} {leaked:?}",
                    r.status
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// GHSA-68wm-pfjf-wqp6 / CVE-2021-32637 (Authelia): a malformed request URI sent through
/// nginx's `auth_request` made the verify endpoint answer 200. Through every shipped nginx
/// example, malformed, over-long, absolute-form and oddly encoded request targets for private
/// paths never reach the app unauthenticated; targets nginx and the outpost both read as a
/// skip path still pass (one normalisation on both sides).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ghsa_68wm_pfjf_wqp6_malformed_uri_via_nginx_is_never_a_pass() {
    let long_private = format!("/private/{}", "a".repeat(9000));
    let long_dots = format!("/public/{}private", "x/../".repeat(1700));
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
        let port = s.nginx.port;
        let host = format!("{APP_HOST}:{port}");
        let absolute_private = format!("http://{host}/private");
        // (label, request target, extra headers)
        type Case<'a> = (&'a str, Vec<u8>, Vec<(&'a str, Vec<u8>)>);
        let closed: Vec<Case> = vec![
            ("bare %", b"/private%".to_vec(), vec![]),
            ("bad escape", b"/private%zz".to_vec(), vec![]),
            ("escape of 0xff", b"/private%ff".to_vec(), vec![]),
            (
                "0xff then dots",
                b"/public/%ff/../../private".to_vec(),
                vec![],
            ),
            (
                "overlong UTF-8 dots",
                b"/public/%c0%ae%c0%ae/private".to_vec(),
                vec![],
            ),
            (
                "NUL then dots",
                b"/public/x%00/../../private".to_vec(),
                vec![],
            ),
            (
                "encoded CRLF",
                b"/public/x%0d%0aX:%20y/../../private".to_vec(),
                vec![],
            ),
            (
                "encoded backslash",
                b"/public/%2e%2e%5cprivate".to_vec(),
                vec![],
            ),
            ("raw backslash", b"/public/..\\private".to_vec(), vec![]),
            ("raw 0xff", b"/public/\xff/../../private".to_vec(), vec![]),
            (
                "dot-dot into a skip path",
                b"/private/../public/x".to_vec(),
                vec![],
            ),
            (
                "encoded dot-dot into a skip path",
                b"/private/%2e%2e/public/x".to_vec(),
                vec![],
            ),
            (
                "encoded slashes and dot-dot into a skip path",
                b"/private%2f..%2fpublic/x".to_vec(),
                vec![],
            ),
            ("no leading slash", b"private".to_vec(), vec![]),
            ("asterisk", b"*".to_vec(), vec![]),
            ("space", b"/public/ /../private".to_vec(), vec![]),
            ("tab", b"/public/\t/../private".to_vec(), vec![]),
            ("control byte", b"/public/\x01/../private".to_vec(), vec![]),
            ("over-long", long_private.clone().into_bytes(), vec![]),
            ("over-long dots", long_dots.clone().into_bytes(), vec![]),
            (
                "absolute form, other host",
                b"http://evil.example/private".to_vec(),
                vec![],
            ),
            (
                "absolute form, Host of another site",
                absolute_private.clone().into_bytes(),
                vec![("Host", OTHER_HOST.as_bytes().to_vec())],
            ),
            (
                "absolute form with userinfo",
                format!("http://x@{host}/private").into_bytes(),
                vec![],
            ),
            (
                "duplicate Host",
                b"/private".to_vec(),
                vec![("Host", b"evil.example".to_vec())],
            ),
        ];
        for (label, target, extra) in &closed {
            let mut hs: Vec<(&str, &[u8])> = Vec::new();
            if !extra.iter().any(|(k, _)| *k == "Host") || *label == "duplicate Host" {
                hs.push(("Host", host.as_bytes()));
            }
            for (k, v) in extra {
                hs.push((k, v));
            }
            let Some(r) = raw_try(
                SocketAddr::from(([127, 0, 0, 1], port)),
                get_request(target, &hs),
            )
            .await
            else {
                continue; // nginx closed the connection: refused
            };
            if r.reached_app() || r.is_2xx() {
                failures.push(format!(
                    "{example:?}, {label} ({}): reached the app unauthenticated: {} {}",
                    String::from_utf8_lossy(target)
                        .chars()
                        .take(80)
                        .collect::<String>(),
                    r.status,
                    r.body.chars().take(200).collect::<String>()
                ));
            } else if r.status == 302 && !r.location().contains("/outpost.goauthentik.io/start") {
                failures.push(format!(
                    "{example:?}, {label}: redirected to {}",
                    r.location()
                ));
            }
        }
        // Read the same way by nginx and the outpost: public.
        for open in ["/%70ublic/x", "/public/./x", "/public//x", "/public/%41"] {
            let r = via_proxy(port, open.as_bytes(), &[("Host", host.as_bytes())]).await;
            if !r.reached_app() {
                failures.push(format!(
                    "{example:?}: {open} should be public: {} {}",
                    r.status, r.body
                ));
            }
        }
        // The outpost still answers.
        let r = direct(
            s.outpost.addr,
            "/outpost.goauthentik.io/ping",
            &[("Host", b"x")],
        )
        .await;
        assert_eq!(r.status, 204, "{example:?}: {r:?}");
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// Path normalisation and allow-list matching
// ---------------------------------------------------------------------------------------------

/// Whether every flavour (and Caddy, when `through_caddy`) treats `target` as `want_open`:
/// open = anonymous 200 (the app reached without identity), closed = no 2xx.
async fn judge_everywhere(
    cs: &CaddyStack,
    target: &[u8],
    want_open: bool,
    through_caddy: bool,
    failures: &mut Vec<String>,
) {
    let shown = String::from_utf8_lossy(target).to_string();
    for (flavour, r) in every_flavour(cs, target, &[]).await {
        let open = r.status == 200 && r.identity().is_empty();
        if open != want_open || (!want_open && r.is_2xx()) {
            failures.push(format!(
                "{flavour} {shown:?}: want {}, got {} {}",
                if want_open { "open" } else { "closed" },
                r.status,
                r.body.chars().take(100).collect::<String>()
            ));
        }
    }
    if through_caddy {
        let r = cs.via_caddy(target, &[]).await;
        if r.reached_app() != want_open || (!want_open && r.is_2xx()) {
            failures.push(format!(
                "through Caddy {shown:?}: want {}, got {} {}",
                if want_open { "open" } else { "closed" },
                r.status,
                r.body.chars().take(200).collect::<String>()
            ));
        }
    }
}

/// GHSA-7rh7-c77v-6434 (oauth2-proxy: skip routes matched against path + query) and
/// GHSA-pxq7-h93f-9jrg (fragments evaluated as part of allowed routes): on every flavour's
/// check and through real Caddy, a skip rule sees the path only; a query or fragment naming a
/// public path never opens a private one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ghsa_7rh7_c77v_6434_skip_routes_never_match_the_query() {
    let cs = CaddyStack::start("^/public/\n^/health$\n/status$").await;
    let mut failures = Vec::new();
    for open in [
        "/public/x",
        "/public/x?next=/private",
        "/health",
        "/health?x=1",
        "/app/status",
        "/app/status?private",
    ] {
        judge_everywhere(&cs, open.as_bytes(), true, true, &mut failures).await;
    }
    for closed in [
        "/private?x=/public/",
        "/private?/public/",
        "/private?x=/health",
        "/private?=/health",
        "/healthz?x=/health",
        "/private?status",
        "/private?x=/app/status",
        "/private/?/status",
        "/private%3F/public/",
        "/private%23/public/",
    ] {
        judge_everywhere(&cs, closed.as_bytes(), false, true, &mut failures).await;
    }
    // Fragments never reach a proxy from a browser, but a client can put one in the request
    // target; the checks must not read it as part of the path.
    for closed in ["/private#/public/", "/private#/health", "/private?#/status"] {
        judge_everywhere(&cs, closed.as_bytes(), false, false, &mut failures).await;
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// CVE-2021-39206 / CVE-2023-33189 (Pomerium with Envoy: path-prefix policies mis-evaluated),
/// CVE-2026-95811 (LemonLDAP::NG, the same class six years after CVE-2020-24660): dot
/// segments, encoded dots and separators, doubled slashes and case tricks are judged on every
/// flavour's check and through real Caddy exactly as nginx routes them (tests/security.rs
/// covers nginx itself).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cve_2021_39206_every_flavour_judges_the_normalised_path() {
    let cs = CaddyStack::start("^/public/").await;
    let mut failures = Vec::new();
    for open in [
        "/public/x",
        "/public//x",
        "/./public/x",
        "/%70ublic/x",
        "/public/a/./x",
    ] {
        judge_everywhere(&cs, open.as_bytes(), true, true, &mut failures).await;
    }
    let closed: [&[u8]; 21] = [
        b"/public/../private",
        b"/public/%2e%2e/private",
        b"/public/%2E%2E/private",
        b"/public/.%2e/private",
        b"/public/%2e./private",
        b"/public%2F..%2Fprivate",
        b"/public%2f..%2fprivate",
        b"/public/..%2Fprivate",
        b"/public/%2e%2e%2fprivate",
        b"/public/x/../../private",
        b"/public/./../private",
        b"//public/../private",
        b"/public/%2e%2e%5cprivate",
        b"/public/..\\private",
        b"/public/%ff/../../private",
        b"/public/%c0%ae%c0%ae/private",
        b"/%00/public/x",
        b"/PUBLIC/x",
        b"/publicx",
        b"/private/public/",
        b"/private//public/",
    ];
    for target in closed {
        judge_everywhere(&cs, target, false, true, &mut failures).await;
    }
    // Paths that resolve to a skip path, but that nginx and Caddy hand to the application as
    // sent: an application that does not resolve `..` itself (many routers match the raw
    // path) serves a private page. No skip rule applies to a path with a `..` segment.
    let dot_dot: [&[u8]; 7] = [
        b"/private/../public/x",
        b"/private/%2e%2e/public/x",
        b"/private/.%2E/public/x",
        b"/private/..%2fpublic/x",
        b"/private%2f..%2fpublic/x",
        b"/private/x/../../public/x",
        b"/public/../public/x",
    ];
    for target in dot_dot {
        judge_everywhere(&cs, target, false, true, &mut failures).await;
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// Open redirects
// ---------------------------------------------------------------------------------------------

/// GHSA-j7px-6hwj-hpjg (oauth2-proxy): encoded whitespace bypassed the redirect check.
/// Percent-encoded, double-encoded and Unicode whitespace around or inside `//`, in schemes
/// and in hosts: `rd` decodes once and is validated as decoded; the login always lands on the
/// app.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ghsa_j7px_6hwj_hpjg_encoded_whitespace_redirects() {
    let s = Stack::start(StackOptions::default()).await;
    let b = Browser::new(&[(APP_HOST, s.nginx.port)]);
    session_of(&s, &b, &alice()).await;
    let app = s.app_url("");
    let app_origin = origin(&app).unwrap();
    let fetchable = vec![app_origin.clone(), origin(&s.idp.issuer).unwrap()];
    let mut hostile: Vec<String> = Vec::new();
    for ws in [
        "%09",
        "%0a",
        "%0A",
        "%0d",
        "%0D",
        "%0d%0a",
        "%0b",
        "%0c",
        "%20",
        "%00",
        "%2509",
        "%250a",
        "%C2%A0",
        "%E2%80%A8",
        "%E3%80%80",
        "%EF%BB%BF",
        "%E2%80%8B",
    ] {
        hostile.push(format!("/{ws}/evil.example"));
        hostile.push(format!("{ws}//evil.example"));
        hostile.push(format!("/{ws}\\evil.example"));
        hostile.push(format!("https:{ws}//evil.example"));
        hostile.push(format!("https://evil.example{ws}.app.example.test/"));
        hostile.push(format!("{ws}https://evil.example/"));
        hostile.push(format!("/%2F{ws}evil.example"));
    }
    for raw in [
        "\u{0b}//evil.example",
        "\u{0c}//evil.example",
        "\u{a0}//evil.example",
        "\u{feff}//evil.example",
        "\u{200b}//evil.example",
        "\u{2028}//evil.example",
        "/\u{a0}/evil.example",
        "/ /evil.example",
        " \t //evil.example",
        "https://evil.example\u{a0}/",
        "java%0ascript:alert(1)",
        "%6aavascript:alert(1)",
        "http%3A%2F%2Fevil.example",
        "http%3a//evil.example",
        "%68ttps://evil.example",
        "/%5C%09evil.example",
    ] {
        hostile.push(raw.to_string());
    }
    // Whatever the encoding, the app is reached on its own origin (a path that merely
    // contains whitespace is a path of the app, which is fine).
    assert_rd_lands_home(
        &b,
        &format!("{app}/outpost.goauthentik.io/start"),
        &fetchable,
        &app_origin,
        &hostile,
    )
    .await;
}

/// vouch-proxy PR #335: `example.com.attacker.tld` passed a prefix/suffix check. Look-alike,
/// IDN (homoglyph, punycode, fullwidth and ideographic dots), suffix, prefix and userinfo
/// hosts are compared as parsed hosts: in forward_single only the app's own host is a target,
/// in forward_domain only hosts under the cookie domain on a label boundary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vouch_pr_335_lookalike_hosts() {
    // forward_single
    let s = Stack::start(StackOptions::default()).await;
    let port = s.nginx.port;
    let b = Browser::new(&[(APP_HOST, port)]);
    session_of(&s, &b, &alice()).await;
    let app = s.app_url("");
    let app_origin = origin(&app).unwrap();
    let fetchable = vec![app_origin.clone(), origin(&s.idp.issuer).unwrap()];
    let punycode_app = Url::parse(&format!("http://\u{430}pp.example.test:{port}/"))
        .unwrap()
        .host_str()
        .unwrap()
        .to_string();
    assert!(punycode_app.starts_with("xn--"), "{punycode_app}");
    let single: Vec<String> = vec![
        format!("http://{punycode_app}:{port}/"),
        format!("http://\u{430}pp.example.test:{port}/"),
        format!("http://app.\u{435}xample.test:{port}/"),
        format!("http://app.example.test\u{3002}evil.example:{port}/"),
        format!("http://app\u{ff0e}example\u{ff0e}test\u{ff0e}evil.example:{port}/"),
        format!("http://app.example.test%2eevil.example:{port}/"),
        format!("http://app.example.test.evil.example:{port}/"),
        format!("http://APP.EXAMPLE.TEST.evil.example:{port}/"),
        format!("http://evil.example.app.example.test:{port}/"),
        format!("http://evilapp.example.test:{port}/"),
        format!("http://app-example.test:{port}/"),
        format!("http://appexample.test:{port}/"),
        format!("http://www.app.example.test:{port}/"),
        format!("http://app.example.tes:{port}/"),
        format!("http://app.example.test:{port}.evil.example/"),
        format!("http://app.example.test:{port}%40evil.example/"),
        format!("http://app.example.test:{port}\u{ff20}evil.example/"),
        format!("http://evil.example\u{ff03}@app.example.test:{port}/"),
        format!("http://evil.example\u{2044}app.example.test:{port}/"),
        format!("http://evil.example\u{2215}app.example.test:{port}/"),
        format!("http://evil.example\u{ff0f}app.example.test:{port}/"),
        format!("http://app.example.test:{port}:80/"),
        format!("http://app.example.test:0{port}/"),
        format!("http://app.example.test:{}/", port as u32 + 65536),
        format!("http://app.example.test:{port}@evil.example:{port}/"),
        "http://0x7f.1/".to_string(),
        format!("http://0177.0.0.1:{port}/"),
    ];
    assert_rd_lands_home(
        &b,
        &format!("{app}/outpost.goauthentik.io/start"),
        &fetchable,
        &app_origin,
        &single,
    )
    .await;
    // The app's own host in another spelling is the app: the redirect names it in ASCII.
    for same in [
        format!("http://app\u{ff0e}example\u{ff0e}test:{port}/same"),
        format!("http://APP.example.test:{port}/same"),
        format!("http://app.example.test%3A{port}/same"),
    ] {
        let w = walk(
            &b,
            &format!("{app}/outpost.goauthentik.io/start?rd={}", enc(&same)),
            &fetchable,
        )
        .await;
        assert!(w.left_to.is_none(), "{same}: {:?}", w.left_to);
        assert!(reached_app(w.last()), "{same}: {:?}", w.urls());
        assert_eq!(origin(&w.last().url).as_deref(), Some(app_origin.as_str()));
    }
    drop(s);

    // forward_domain (cookie domain example.test): the sign-in host is auth.example.test.
    let s = Stack::start(StackOptions {
        example: Example::DomainLevel,
        ..Default::default()
    })
    .await;
    let port = s.nginx.port;
    let b = Browser::new(&[(APP_HOST, port), (AUTH_HOST, port), (OTHER_HOST, port)]);
    session_of(&s, &b, &alice()).await;
    let auth = s.nginx.base_url(AUTH_HOST);
    let auth_origin = origin(&auth).unwrap();
    let fetchable = vec![
        origin(&s.app_url("")).unwrap(),
        auth_origin.clone(),
        origin(&s.nginx.base_url(OTHER_HOST)).unwrap(),
        origin(&s.idp.issuer).unwrap(),
    ];
    let punycode_domain = Url::parse("https://\u{435}xample.test/")
        .unwrap()
        .host_str()
        .unwrap()
        .to_string();
    let domain: Vec<String> = vec![
        format!("https://{punycode_domain}/"),
        format!("https://other.{punycode_domain}/"),
        "https://other.\u{435}xample.test/".to_string(),
        "https://example.test\u{3002}evil.example/".to_string(),
        "https://other.example.test\u{ff0e}evil.example/".to_string(),
        "https://other.example.test%2eevil.example/".to_string(),
        "https://xample.test/".to_string(),
        "https://example.tes/".to_string(),
        "https://example.test-evil.example/".to_string(),
        "https://evil-example.test/".to_string(),
        "https://example.testevil.example/".to_string(),
        "https://other.example.test:443@evil.example/".to_string(),
        "https://other.example.test%40evil.example/".to_string(),
        "https://evil.example\u{ff0f}.example.test/".to_string(),
        "https://evil.example\u{ff03}.example.test/".to_string(),
        "https://evil.example%23.example.test/".to_string(),
        "https://10.0.0.1/".to_string(),
        "https://[::ffff:7f00:1]/".to_string(),
    ];
    assert_rd_lands_home(
        &b,
        &format!("{auth}/outpost.goauthentik.io/start"),
        &fetchable,
        &auth_origin,
        &domain,
    )
    .await;
}

/// A tiny deterministic generator (xorshift64*), so a failing input can be reproduced.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[(self.next() % from.len() as u64) as usize]
    }
}

/// Builds a redirect target from pieces that broke validators before.
fn fuzz_target(rng: &mut Rng, port: u16) -> String {
    let port_piece = format!(":{port}");
    let pieces: Vec<&str> = vec![
        "/",
        "//",
        "///",
        "\\",
        "\\\\",
        "%2f",
        "%2F",
        "%5c",
        "%5C",
        "%09",
        "%0a",
        "%0d",
        "%20",
        "%00",
        "%25",
        "%2e",
        "%2E",
        "%40",
        "%3a",
        "%23",
        "%3F",
        "\t",
        "\n",
        " ",
        "@",
        ":",
        ".",
        "..",
        "#",
        "?",
        "&",
        "%",
        ";",
        ",",
        "evil.example",
        "evil.example.",
        "app.example.test",
        "APP.example.TEST",
        "example.test",
        &port_piece,
        ":80",
        ":443",
        "http:",
        "https:",
        "javascript:",
        "data:",
        "http://",
        "https://",
        "HTTP://",
        "\u{3002}",
        "\u{ff0e}",
        "\u{ff0f}",
        "\u{2215}",
        "\u{ff20}",
        "[::1]",
        "127.0.0.1",
        "0x7f000001",
        "xn--",
        "user:pw@",
        "\u{200b}",
        "\u{a0}",
        "\u{feff}",
        "//evil.example/",
        "/.",
        "./",
        "rd=",
        "\u{1}",
        "\u{430}",
        "@evil.example",
        ".evil.example",
    ];
    let n = 1 + rng.next() % 7;
    (0..n).map(|_| rng.pick(&pieces)).collect()
}

/// GHSA-5m6c-jp6f-2vcv (oauth2-proxy: further open-redirect cases; lesson: fuzz the
/// validator). Thousands of generated targets through the validator itself, in both modes:
/// whatever it accepts is an http(s) URL on an allowed host, without userinfo, whitespace or
/// backslashes. A sample of them goes through the real login round trip, which must land on
/// the app.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ghsa_5m6c_jp6f_2vcv_fuzzed_rd_never_leaves_the_app() {
    let s = Stack::start(StackOptions::default()).await;
    let port = s.nginx.port;
    let app = s.app_url("");
    let single = AppSpec::new("app".into(), &app, Mode::ForwardSingle, "", "", vec![]).unwrap();
    let domain = AppSpec::new(
        "app".into(),
        &format!("http://{AUTH_HOST}:{port}"),
        Mode::ForwardDomain,
        "example.test",
        "",
        vec![],
    )
    .unwrap();
    let mut rng = Rng(0x5eed_0a11_ce5e_ed01);
    let mut failures = Vec::new();
    let mut accepted = 0;
    for _ in 0..30_000 {
        let x = fuzz_target(&mut rng, port);
        for (mode, spec) in [("single", &single), ("domain", &domain)] {
            let Some(t) = RedirectTarget::parse(&x, spec) else {
                continue;
            };
            accepted += 1;
            let u = t.url();
            let text = t.as_str();
            let reparsed = Url::parse(text).ok();
            let host_ok = match spec.mode {
                Mode::ForwardDomain => u.host_str().is_some_and(|h| {
                    (h == AUTH_HOST && u.port() == Some(port)) || host_in_domain(h, "example.test")
                }),
                _ => u.host_str() == Some(APP_HOST) && u.port() == Some(port),
            };
            let clean = !text
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '\\');
            let stable = reparsed.as_ref().map(|r| (r.host_str(), r.port()))
                == Some((u.host_str(), u.port()));
            if !matches!(u.scheme(), "http" | "https")
                || !host_ok
                || !u.username().is_empty()
                || u.password().is_some()
                || !clean
                || !stable
            {
                failures.push(format!("{mode}: {x:?} accepted as {text}"));
            }
        }
    }
    assert!(
        accepted > 1000,
        "the generator rarely makes valid targets ({accepted})"
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures
            .iter()
            .take(40)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );

    // A sample through the real round trip.
    let b = Browser::new(&[(APP_HOST, port)]);
    session_of(&s, &b, &alice()).await;
    let app_origin = origin(&app).unwrap();
    let fetchable = vec![app_origin.clone(), origin(&s.idp.issuer).unwrap()];
    let mut rng = Rng(0xfeed_beef_0bad_cafe);
    let sample: Vec<String> = (0..60).map(|_| fuzz_target(&mut rng, port)).collect();
    let start = format!("{app}/outpost.goauthentik.io/start");
    let mut failures = Vec::new();
    for x in &sample {
        let w = walk(&b, &format!("{start}?rd={}", enc(x)), &fetchable).await;
        if w.left_to.is_some() || origin(&w.last().url).as_deref() != Some(app_origin.as_str()) {
            failures.push(format!("rd={x:?}: {:?} left to {:?}", w.urls(), w.left_to));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// GHSA-36f2-fcrx-fp4j (Authelia: open redirect on the logout endpoint). Sign-out is reached
/// four ways (its path, `?X-authentik-logout=true` on any URL, the same inside Traefik's and
/// Caddy's forwarded URL, and Envoy's appended path), here also through real Caddy and with
/// forwarding headers naming another site: it always goes to the provider's end-session
/// endpoint (or the app), never to a client-named target. tests/security.rs covers nginx.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ghsa_36f2_fcrx_fp4j_logout_redirect_is_validated() {
    let cs = CaddyStack::start("^/public/").await;
    let valid = cs.login_alice().await;
    let name = session_cookie_name();
    let evil = [
        format!("rd={}", enc("https://evil.example/")),
        "rd=https://evil.example/".to_string(),
        format!("post_logout_redirect_uri={}", enc("https://evil.example/")),
        "redirect_uri=//evil.example&next=https://evil.example/&url=/%5Cevil.example".to_string(),
    ];
    let idp_origin = origin(&cs.idp.issuer).unwrap();
    let app_origin = origin(&cs.external).unwrap();
    let mut failures = Vec::new();
    let mut judge = |what: String, r: &Raw| {
        let loc = resolve(&cs.external, &r.location());
        let o = origin(&loc);
        let allowed =
            o.as_deref() == Some(idp_origin.as_str()) || o.as_deref() == Some(app_origin.as_str());
        let extra_params: Vec<String> = Url::parse(&loc)
            .map(|u| {
                u.query_pairs()
                    .map(|(k, _)| k.into_owned())
                    .filter(|k| !["id_token_hint", "client_id"].contains(&k.as_str()))
                    .collect()
            })
            .unwrap_or_default();
        if r.status != 302
            || !allowed
            || loc.contains("evil")
            || (o.as_deref() == Some(idp_origin.as_str()) && !extra_params.is_empty())
        {
            failures.push(format!("{what}: {} -> {loc} {extra_params:?}", r.status));
        }
    };
    let host = cs.host();
    let cookie = format!("{name}={valid}");
    for q in &evil {
        // Through Caddy: the sign-out path, and the logout signature on an app URL.
        for target in [
            format!("/outpost.goauthentik.io/sign_out?{q}"),
            format!("/any/page?X-authentik-logout=true&{q}"),
            format!("/public/x?{q}&X-authentik-logout=true"),
        ] {
            let r = cs
                .via_caddy(target.as_bytes(), &[("Cookie", cookie.as_bytes())])
                .await;
            judge(format!("Caddy {target}"), &r);
        }
        // Straight to the outpost in each proxy's shape, with forwarding headers that name
        // another site.
        let uri = format!("/x?X-authentik-logout=true&{q}");
        for check in [TRAEFIK_CHECK, CADDY_CHECK] {
            let r = cs
                .forwarded(
                    check,
                    uri.as_bytes(),
                    &[("X-Original-URL", b"https://evil.example/")],
                )
                .await;
            judge(format!("{check} {uri}"), &r);
        }
        let r = cs
            .envoy(uri.as_bytes(), &[("X-Forwarded-Host", b"evil.example")])
            .await;
        judge(format!("envoy {uri}"), &r);
        let r = direct(
            cs.outpost.addr,
            &format!("/outpost.goauthentik.io/sign_out?{q}"),
            &[
                ("Host", host.as_bytes()),
                ("X-Forwarded-Host", b"evil.example"),
                ("X-Forwarded-Proto", b"javascript"),
                ("X-Original-URL", b"https://evil.example/x"),
                ("Referer", b"https://evil.example/"),
            ],
        )
        .await;
        judge(format!("sign_out with forwarding headers {q}"), &r);
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// thomseddon/traefik-forward-auth PR #77: the redirect carried in `state` was not validated
/// (lesson: validate it even when the state is CSRF-bound), and GHSA-jm34-xm8m-w958 (validate
/// `rd` on both ends of the flow). A state that opens and is bound to this browser but names
/// another site (as any state from a component or version that did not check it would) still
/// lands on the application after the login, and its replay too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tfa_pr_77_redirect_in_state_is_validated_again() {
    let s = Stack::start(StackOptions::default()).await;
    let app = s.app_url("");
    let app_origin = origin(&app).unwrap();
    let idp_origin = origin(&s.idp.issuer).unwrap();
    let name = session_cookie_name();
    for target in [
        "https://evil.example/",
        "//evil.example/",
        "/\\evil.example",
        "javascript:alert(1)",
        "http://app.example.test.evil.example/",
    ] {
        let b = Browser::new(&[(APP_HOST, s.nginx.port)]);
        // A real start, for the binding cookie and the authorization URL.
        let p = b
            .get(&format!("{app}/outpost.goauthentik.io/start?rd=%2Fx"))
            .await;
        assert_eq!(p.status, 302, "{p:?}");
        let binding = cookie_value(&b, &app, &binding_cookie_name()).expect("binding cookie");
        let (verifier, challenge) = pkce_pair();
        let state = LoginState {
            id: random_token(16),
            binding: binding_hash(&binding),
            verifier,
            nonce: random_token(16),
            redirect: target.to_string(),
            issued_at: unix_now(),
            attempt: 0,
        };
        let sealed = state.seal(
            &Sealer::new(SECRET.as_bytes(), "session"),
            format!("{name}/state").as_bytes(),
        );
        let mut authorize = Url::parse(&p.location().unwrap()).unwrap();
        let pairs: Vec<(String, String)> = authorize
            .query_pairs()
            .map(|(k, v)| {
                let v = match k.as_ref() {
                    "state" => sealed.clone(),
                    "nonce" => state.nonce.clone(),
                    "code_challenge" => challenge.clone(),
                    _ => v.into_owned(),
                };
                (k.into_owned(), v)
            })
            .collect();
        authorize.query_pairs_mut().clear().extend_pairs(pairs);
        let mut seen = Vec::new();
        let cb = until_callback(&b, authorize.as_str(), &alice(), &mut seen).await;
        for round in ["callback", "replayed callback"] {
            let w = walk(&b, &cb, &[app_origin.clone(), idp_origin.clone()]).await;
            assert!(
                w.left_to.is_none(),
                "{round}: a state naming {target:?} sent the browser to {:?}; hops {:?}",
                w.left_to,
                w.urls()
            );
            let last = w.last();
            assert!(
                reached_app(last) && origin(&last.url).as_deref() == Some(app_origin.as_str()),
                "{round} with {target:?}: {} {} hops {:?}",
                last.status,
                last.url,
                w.urls()
            );
            assert_eq!(
                last.echoed("x-authentik-username").as_deref(),
                Some("alice")
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Sessions, cookies, identity parsing
// ---------------------------------------------------------------------------------------------

/// GHSA-f24x-5g9q-753f (oauth2-proxy: session fixation; the session cookie was not cleared when
/// sign-in started). A session cookie planted in the victim's browser (here bob's, as an
/// attacker on a sibling host could toss it) is expired by `/start`, so an abandoned sign-in
/// leaves the browser logged out rather than logged in as the attacker; a completed sign-in
/// stores a new cookie for the new user, and the planted value never becomes the victim's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ghsa_f24x_5g9q_753f_session_fixation() {
    let s = Stack::start(StackOptions::default()).await;
    let port = s.nginx.port;
    let app = s.app_url("");
    let name = session_cookie_name();
    let attacker = Browser::new(&[(APP_HOST, port)]);
    let planted = session_of(&s, &attacker, &bob()).await;

    // The victim's browser gets the attacker's cookie and is sent to sign in.
    let victim = Browser::new(&[(APP_HOST, port)]);
    victim.add_cookie(&format!("{name}={planted}; Path=/"), &app);
    let p = victim
        .get(&format!("{app}/outpost.goauthentik.io/start?rd=%2Fmine"))
        .await;
    assert_eq!(p.status, 302, "{p:?}");
    assert!(
        p.set_cookies()
            .iter()
            .any(|c| c.starts_with(&format!("{name}=;")) && c.contains("Max-Age=0")),
        "/start kept the session cookie the browser brought: {:?}",
        p.set_cookies()
    );
    // Abandoned at the provider: the app asks for a login instead of serving bob.
    let r = victim.get(&s.app_url("/private")).await;
    assert_eq!(
        r.status, 302,
        "after an abandoned sign-in: {} {}",
        r.status, r.body
    );
    assert!(!reached_app(&r));

    // Completed: a fresh cookie for alice, nothing of bob's.
    let victim = Browser::new(&[(APP_HOST, port)]);
    victim.add_cookie(&format!("{name}={planted}; Path=/"), &app);
    let mut seen = Vec::new();
    let cb = until_callback(
        &victim,
        &format!("{app}/outpost.goauthentik.io/start?rd=%2Fmine"),
        &alice(),
        &mut seen,
    )
    .await;
    let last = follow_into(&victim, &cb, &mut seen).await;
    let landing = &seen[last];
    assert!(reached_app(landing), "{landing:?}");
    assert_eq!(landing.json()["path"], "/mine");
    assert_eq!(
        landing.echoed("x-authentik-username").as_deref(),
        Some("alice")
    );
    let now = cookie_value(&victim, &app, &name).expect("a session cookie");
    assert_ne!(
        now, planted,
        "the session cookie was not renewed at sign-in"
    );
    assert_eq!(open_session(&now).identity.sub, "alice");
    // The attacker's value is still bob's (or nobody's), never alice's.
    let r = check_private(&s, &[("Cookie", format!("{name}={planted}").as_bytes())]).await;
    assert_ne!(r.uid(), "alice", "{r:?}");
    assert!(r.uid() == "bob" || r.status == 401, "{r:?}");
}

/// GHSA-9v87-664x-72qc (LemonLDAP::NG: session-cache corruption let a loop of logins
/// alternate identities). Hundreds of concurrent checks mixing two users' cookies and bearer
/// tokens, broken variants and fresh cookies, across a cache expiry: every answer names
/// exactly the user its credential belongs to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ghsa_9v87_664x_72qc_concurrent_sessions_never_swap_identities() {
    let s = Stack::start(StackOptions {
        cache_ttl: 1,
        ..Default::default()
    })
    .await;
    let port = s.nginx.port;
    let name = session_cookie_name();
    let a = Browser::new(&[(APP_HOST, port)]);
    let b = Browser::new(&[(APP_HOST, port)]);
    let alice_cookie = session_of(&s, &a, &alice()).await;
    let bob_cookie = session_of(&s, &b, &bob()).await;
    let alice_token = open_session(&alice_cookie).access_token;
    let bob_token = open_session(&bob_cookie).access_token;
    let half = alice_cookie.len() / 2;
    // (header, value, the uid a 200 must name; None: never a 200)
    let creds: Vec<(&str, String, Option<&str>)> = vec![
        ("Cookie", format!("{name}={alice_cookie}"), Some("alice")),
        ("Cookie", format!("{name}={bob_cookie}"), Some("bob")),
        (
            "Authorization",
            format!("Bearer {alice_token}"),
            Some("alice"),
        ),
        ("Authorization", format!("Bearer {bob_token}"), Some("bob")),
        (
            "Cookie",
            format!(
                "{name}={}; {name}_1={}",
                &alice_cookie[..half],
                &bob_cookie[half..]
            ),
            None,
        ),
        ("Cookie", format!("{name}={alice_cookie}{bob_cookie}"), None),
        (
            "Authorization",
            format!("Bearer {alice_token}{bob_token}"),
            None,
        ),
        (
            "Authorization",
            format!("Bearer {}", &bob_token[..bob_token.len() - 1]),
            None,
        ),
    ];
    let host = format!("{APP_HOST}:{port}");
    let url = s.app_url("/private");
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let check = format!("http://{}{NGINX_CHECK}", s.outpost.addr);
    for round in 0..3 {
        let mut tasks = Vec::new();
        for i in 0..240 {
            let (header, value, want) = creds[i % creds.len()].clone();
            let (client, check, host, url) =
                (client.clone(), check.clone(), host.clone(), url.clone());
            tasks.push(tokio::spawn(async move {
                let r = client
                    .get(&check)
                    .header("Host", host)
                    .header("X-Original-URL", url)
                    .header(header, value)
                    .send()
                    .await
                    .expect("check");
                let status = r.status().as_u16();
                let uid = r
                    .headers()
                    .get("x-authentik-uid")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                let user = r
                    .headers()
                    .get("x-authentik-username")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                (i, header, want, status, uid, user)
            }));
        }
        for t in tasks {
            let (i, header, want, status, uid, user) = t.await.unwrap();
            match want {
                Some(u) => assert!(
                    status == 200 && uid == u && user == u,
                    "round {round}, #{i} ({header} of {u}): {status} uid={uid:?} user={user:?}"
                ),
                None => assert!(
                    status != 200 && uid.is_empty(),
                    "round {round}, #{i} (broken {header}): {status} uid={uid:?}"
                ),
            }
        }
        // Let the introspection cache (TTL 1 s) expire between rounds.
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
}

/// GHSA-c5c4-8r6x-56w3 / CVE-2026-40574 (oauth2-proxy: `a@evil.com@company.com` passed
/// `email_domain`; lesson: strict claim parsing) and GHSA-652x-m2gr-hppm (group authorisation
/// silently stopped working; a failed authorisation setup must deny). `allowed_groups` matches
/// group names exactly: case variants, prefixes, suffixes, padded and joined names are other
/// groups, and a user without any groups claim is denied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ghsa_c5c4_8r6x_56w3_group_claims_are_matched_exactly() {
    let cases: Vec<(Vec<String>, bool)> = vec![
        (
            [
                "Admins",
                "ADMINS",
                "admins ",
                " admins",
                "xadmins",
                "admins-readonly",
                "admin",
                "admins|users",
                "users,admins",
                "admins\u{200b}",
                "\u{430}dmins",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            false,
        ),
        (vec![], false),
        (vec!["wheel".into(), "admins".into()], true),
    ];
    for (groups, allowed) in cases {
        let s = Stack::start(StackOptions {
            allowed_groups: vec!["admins".into()],
            alice_groups: Some(groups.clone()),
            ..Default::default()
        })
        .await;
        let b = Browser::new(&[(APP_HOST, s.nginx.port)]);
        let p = b.login(&s.app_url("/x"), "alice", "alice-password").await;
        if allowed {
            assert!(reached_app(&p), "{groups:?}: {} {}", p.status, p.body);
            continue;
        }
        assert_eq!(
            p.status, 403,
            "alice with groups {groups:?}: {} {}",
            p.status, p.body
        );
        assert!(!looks_like_echo(&p.body));
        let cookie = cookie_value(&b, &s.app_url("/"), &session_cookie_name())
            .expect("a session (authenticated, not authorised)");
        let r = check_private(
            &s,
            &[(
                "Cookie",
                format!("{}={cookie}", session_cookie_name()).as_bytes(),
            )],
        )
        .await;
        assert_eq!(r.status, 403, "{groups:?}: {r:?}");
        assert!(r.identity().is_empty(), "{groups:?}: {r:?}");
    }
}

/// vouch-proxy #605 (a parent-domain cookie is sent to, and can be replayed by, every
/// subdomain): in forward_single the session and binding cookies are host-only (no `Domain`),
/// `HttpOnly`, `SameSite=Lax`, `Path=/`; only forward_domain scopes them to the cookie domain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vouch_605_cookies_are_host_only_unless_domain_mode() {
    for example in [Example::Plain, Example::DomainLevel] {
        let s = Stack::start(StackOptions {
            example,
            ..Default::default()
        })
        .await;
        let b = Browser::new(&[(APP_HOST, s.nginx.port), (AUTH_HOST, s.nginx.port)]);
        let mut seen = Vec::new();
        let cb = until_callback(&b, &s.app_url("/x"), &alice(), &mut seen).await;
        let callback = b.get(&cb).await;
        seen.push(callback);
        let name = session_cookie_name();
        let bname = binding_cookie_name();
        let mut checked = 0;
        for p in &seen {
            for c in p.set_cookies() {
                let cname = c.split('=').next().unwrap_or_default();
                if cname != name && cname != bname {
                    continue;
                }
                checked += 1;
                let attrs: Vec<String> = c
                    .split(';')
                    .skip(1)
                    .map(|a| a.trim().to_ascii_lowercase())
                    .collect();
                let domain: Vec<&String> =
                    attrs.iter().filter(|a| a.starts_with("domain=")).collect();
                match example {
                    Example::DomainLevel => {
                        assert_eq!(domain, vec![&"domain=example.test".to_string()], "{c}")
                    }
                    _ => assert!(
                        domain.is_empty(),
                        "forward_single cookie with a domain: {c}"
                    ),
                }
                for want in ["httponly", "samesite=lax", "path=/"] {
                    assert!(attrs.iter().any(|a| a == want), "{c}: no {want}");
                }
            }
        }
        assert!(
            checked >= 2,
            "{example:?}: session and binding cookies not seen"
        );
    }
}

/// Oversized headers and cookies (authentik #13271 class, and the limits every advisory above
/// relies on): a huge `Cookie`, `Authorization`, `X-Original-URL` or too many headers are
/// refused (431/400/401, or the connection closed), never a 200 and never a crash; a valid
/// session next to a large unrelated cookie still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_and_cookies_never_pass() {
    let s = Stack::start(StackOptions::default()).await;
    let b = Browser::new(&[(APP_HOST, s.nginx.port)]);
    let valid = session_of(&s, &b, &alice()).await;
    let name = session_cookie_name();
    let host = format!("{APP_HOST}:{}", s.nginx.port);
    let private = s.app_url("/private");
    let addr = s.outpost.addr;
    let big = |n: usize| "A".repeat(n);
    let many_headers: Vec<(String, Vec<u8>)> = (0..300)
        .map(|i| (format!("X-Filler-{i}"), b"x".to_vec()))
        .collect();
    let many_chunks = (0..400)
        .map(|i| format!("{name}_{i}={}", big(100)))
        .collect::<Vec<_>>()
        .join("; ");
    type Case = (&'static str, Vec<(String, Vec<u8>)>);
    let h = |k: &str, v: Vec<u8>| (k.to_string(), v);
    let cases: Vec<Case> = vec![
        (
            "64 KB session cookie",
            vec![h("Cookie", format!("{name}={}", big(65536)).into_bytes())],
        ),
        (
            "1 MB session cookie",
            vec![h("Cookie", format!("{name}={}", big(1 << 20)).into_bytes())],
        ),
        ("400 chunks", vec![h("Cookie", many_chunks.into_bytes())]),
        (
            "200 Cookie headers",
            (0..200)
                .map(|i| h("Cookie", format!("c{i}={}", big(200)).into_bytes()))
                .collect(),
        ),
        (
            "64 KB bearer",
            vec![h(
                "Authorization",
                format!("Bearer {}", big(65536)).into_bytes(),
            )],
        ),
        (
            "64 KB basic",
            vec![h(
                "Authorization",
                format!("Basic {}", big(65536)).into_bytes(),
            )],
        ),
        ("300 headers", many_headers),
        (
            "64 KB X-Original-URL",
            vec![h(
                "X-Original-URL",
                format!("{private}/{}", big(65536)).into_bytes(),
            )],
        ),
        (
            "64 KB X-Original-URL to a skip-looking path",
            vec![h(
                "X-Original-URL",
                format!("{}/public/{}", s.app_url(""), big(65536)).into_bytes(),
            )],
        ),
    ];
    let mut failures = Vec::new();
    for (label, extra) in &cases {
        let mut hs: Vec<(&str, &[u8])> = vec![("Host", host.as_bytes())];
        if !extra.iter().any(|(k, _)| k == "X-Original-URL") {
            hs.push(("X-Original-URL", private.as_bytes()));
        }
        for (k, v) in extra {
            hs.push((k.as_str(), v.as_slice()));
        }
        let started = Instant::now();
        // No answer at all (the connection closed) is a refusal too.
        if let Some(r) = raw_try(addr, get_request(NGINX_CHECK.as_bytes(), &hs)).await
            && (r.is_2xx() || !matches!(r.status, 400 | 401 | 413 | 414 | 431 | 500))
        {
            failures.push(format!(
                "{label}: {} {:?} {}",
                r.status,
                r.identity(),
                r.body.chars().take(100).collect::<String>()
            ));
        }
        if started.elapsed() > Duration::from_secs(5) {
            failures.push(format!("{label}: took {:?}", started.elapsed()));
        }
    }
    // A valid session next to a large unrelated cookie.
    let r = check_private(
        &s,
        &[(
            "Cookie",
            format!("junk={}; {name}={valid}", big(16384)).as_bytes(),
        )],
    )
    .await;
    assert!(r.status == 200 && r.uid() == "alice", "{r:?}");
    // Through nginx: refused by nginx or sent to the login, never the app.
    for (label, cookie) in [
        ("6 KB", format!("{name}={}", big(6000))),
        ("32 KB", format!("{name}={}", big(32768))),
        (
            "valid + 32 KB",
            format!("{name}={valid}; junk={}", big(32768)),
        ),
    ] {
        if let Some(r) = raw_try(
            SocketAddr::from(([127, 0, 0, 1], s.nginx.port)),
            get_request(
                b"/private",
                &[("Host", host.as_bytes()), ("Cookie", cookie.as_bytes())],
            ),
        )
        .await
            && (r.reached_app() || !matches!(r.status, 302 | 400 | 431 | 494))
        {
            failures.push(format!("nginx, {label} cookie: {} {}", r.status, r.body));
        }
    }
    // Still alive and still right.
    let r = direct(addr, "/outpost.goauthentik.io/ping", &[("Host", b"x")]).await;
    assert_eq!(r.status, 204, "{r:?}");
    let r = check_private(&s, &[("Cookie", format!("{name}={valid}").as_bytes())]).await;
    assert!(r.status == 200 && r.uid() == "alice", "{r:?}");
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// State replay across replicas (GHSA-fv82-r8qv-ch4v's lesson, "verify all state you round
/// trip", where one process's single-use memory does not reach): a callback already completed
/// through one outpost, replayed at a second replica with the same secret and the victim's
/// binding cookie, yields no session there (the provider's codes are single-use) and restarts
/// the login.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_replay_on_another_replica_yields_no_session() {
    let s = Stack::start(StackOptions::default()).await;
    let listener = InProcess::bind();
    let yaml = outpost_yaml(
        listener.local_addr().unwrap(),
        &s.idp.issuer,
        SECRET,
        60,
        &[AppCfg::single("app", s.app_url(""))],
    );
    let replica = InProcess::serve(listener, &yaml).await;
    let a = Browser::new(&[(APP_HOST, s.nginx.port)]);
    let mut seen = Vec::new();
    let cb = until_callback(&a, &s.app_url("/wanted"), &alice(), &mut seen).await;
    let binding = cookie_value(&a, &s.app_url("/"), &binding_cookie_name()).expect("binding");
    let last = follow_into(&a, &cb, &mut seen).await;
    assert!(reached_app(&seen[last]), "{:?}", seen[last]);

    let cb_url = Url::parse(&cb).unwrap();
    let target = format!("{}?{}", cb_url.path(), cb_url.query().unwrap_or_default());
    let host = format!("{APP_HOST}:{}", s.nginx.port);
    let cookie = format!("{}={binding}", binding_cookie_name());
    for (which, addr) in [
        ("the same outpost", s.outpost.addr),
        ("a replica", replica.addr),
    ] {
        let r = direct(
            addr,
            &target,
            &[("Host", host.as_bytes()), ("Cookie", cookie.as_bytes())],
        )
        .await;
        assert_eq!(r.status, 302, "replay at {which}: {r:?}");
        assert!(
            r.location().contains("/outpost.goauthentik.io/start"),
            "replay at {which}: {}",
            r.location()
        );
        let sessions: Vec<&str> = r
            .all("set-cookie")
            .into_iter()
            .filter(|c| {
                c.starts_with(&format!("{}=", session_cookie_name())) && !c.contains("Max-Age=0")
            })
            .collect();
        assert!(
            sessions.is_empty(),
            "replay at {which} stored a session: {sessions:?}"
        );
    }
}

/// The binary with its log (stdout and stderr) captured in a file.
struct LoggedBinary {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl LoggedBinary {
    fn spawn(yaml: &str) -> LoggedBinary {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("outpost.yaml");
        std::fs::write(&config, yaml).expect("write config");
        let log = dir.path().join("outpost.log");
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(binary_path())
            .arg("--config")
            .arg(&config)
            .env_remove("RUST_LOG")
            .stdout(Stdio::from(file.try_clone().expect("log file")))
            .stderr(Stdio::from(file))
            .spawn()
            .expect("spawn ak-outpost");
        LoggedBinary {
            child,
            log,
            _dir: dir,
        }
    }

    /// Stops the process (SIGTERM, so everything is flushed) and returns its log.
    fn stop_and_read(&mut self) -> String {
        terminate(&mut self.child, Duration::from_secs(15));
        std::fs::read_to_string(&self.log).expect("read log")
    }
}

impl Drop for LoggedBinary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The forms a secret could take in a log line or a page: as is, form- and
/// percent-encoded, and each part of a JWT on its own.
fn secret_forms(secret: &str) -> Vec<String> {
    let mut forms = vec![secret.to_string(), enc(secret)];
    if secret.split('.').count() == 3 {
        forms.extend(
            secret
                .split('.')
                .skip(1)
                .filter(|p| p.len() >= 16)
                .map(str::to_string),
        );
    }
    forms
}

/// GO-2024-2965 (Pomerium: the user-info endpoint showed the OAuth access and ID tokens to the
/// browser) and GO-2022-0783 (Pomerium: a JWT leaked through a redirect URL). The real binary,
/// logging at `trace` with one line per request, behind real nginx: a login, checks by cookie
/// and by bearer token, a broken cookie, a misconfigured check, a replayed callback, a token
/// renewal and a sign-out. No access, refresh or ID token, cookie value, authorization code,
/// state or secret appears in the log; no page the outpost shows the browser carries an access
/// or refresh token, and an ID token only as `id_token_hint` to the provider's own end-session
/// endpoint (OpenID Connect RP-initiated logout, as authentik does).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_2024_2965_tokens_never_in_pages_or_logs() {
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let echo = EchoApp::start().await;
    let nginx = Nginx::start(
        Example::Plain,
        &NginxVars {
            outpost: addr,
            app_upstream: echo.addr,
            app_host: APP_HOST.into(),
            auth_host: AUTH_HOST.into(),
            outposts: vec![],
        },
    );
    let external = nginx.base_url(APP_HOST);
    let mut idp_o = IdpOptions::new(vec![format!(
        "{external}/outpost.goauthentik.io/callback?X-authentik-auth-callback=true"
    )]);
    idp_o.access_token_ttl = 4; // renewed after 3 s
    let idp = Idp::start(&idp_o);
    let yaml = outpost_yaml(
        addr,
        &idp.issuer,
        SECRET,
        60,
        &[AppCfg::single("app", external.clone())],
    );
    let quiet = "log:\n  level: info\n  format: text\n";
    assert!(yaml.contains(quiet));
    let yaml = yaml.replace(
        quiet,
        "log:\n  level: trace\n  format: json\n  requests: true\n",
    );
    let mut outpost = LoggedBinary::spawn(&yaml);
    wait_ready(addr).await;

    let url = |p: &str| format!("{external}{p}");
    let app_origin = origin(&external).unwrap();
    let idp_origin = origin(&idp.issuer).unwrap();
    let name = session_cookie_name();
    let host = format!("{APP_HOST}:{}", nginx.port);
    let private = url("/private");
    let b = Browser::new(&[(APP_HOST, nginx.port)]);
    let mut seen = Vec::new();

    // Login.
    let cb = until_callback(&b, &url("/wanted?q=1"), &alice(), &mut seen).await;
    let cb_url = Url::parse(&cb).unwrap();
    let param = |k: &str| {
        cb_url
            .query_pairs()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.into_owned())
            .unwrap_or_else(|| panic!("no {k} in {cb}"))
    };
    let (code, state) = (param("code"), param("state"));
    let binding = cookie_value(&b, &url("/"), &binding_cookie_name()).expect("binding cookie");
    let last = follow_into(&b, &cb, &mut seen).await;
    assert!(reached_app(&seen[last]), "{:?}", seen[last]);
    let first = cookie_value(&b, &url("/"), &name).expect("session cookie");
    let s1 = open_session(&first);

    // Checks: by cookie through nginx, by bearer token, a broken cookie, no original URL.
    for p in ["/again", "/again?x=1"] {
        let page = b.get(&url(p)).await;
        assert!(reached_app(&page), "{page:?}");
    }
    let bearer = format!("Bearer {}", s1.access_token);
    let check = |extra: Vec<(&'static str, Vec<u8>)>| {
        let (host, private) = (host.clone(), private.clone());
        async move {
            let mut hs: Vec<(&str, &[u8])> = vec![
                ("Host", host.as_bytes()),
                ("X-Original-URL", private.as_bytes()),
            ];
            for (k, v) in &extra {
                hs.push((k, v));
            }
            direct(addr, NGINX_CHECK, &hs).await
        }
    };
    let r = check(vec![("Authorization", bearer.clone().into_bytes())]).await;
    assert_eq!(r.status, 200, "{r:?}");
    let mut broken = first.clone().into_bytes();
    let mid = broken.len() / 2;
    broken[mid] = if broken[mid] == b'A' { b'B' } else { b'A' };
    let r = check(vec![("Cookie", [name.as_bytes(), b"=", &broken].concat())]).await;
    assert_eq!(r.status, 401, "{r:?}");
    let r = direct(
        addr,
        NGINX_CHECK,
        &[
            ("Host", host.as_bytes()),
            ("Cookie", format!("{name}={first}").as_bytes()),
            ("Authorization", bearer.as_bytes()),
        ],
    )
    .await;
    assert_eq!(r.status, 500, "{r:?}");
    // The callback replayed in another browser: a restart, logged with its reason.
    let other = Browser::new(&[(APP_HOST, nginx.port)]);
    let p = other.get(&cb).await;
    assert_eq!(p.status, 302, "{p:?}");
    seen.push(p);

    // Renewal with the refresh token.
    tokio::time::sleep(Duration::from_millis(3300)).await;
    let page = b.get(&url("/renewed")).await;
    assert!(reached_app(&page), "{page:?}");
    let second = cookie_value(&b, &url("/"), &name).expect("session cookie");
    assert_ne!(second, first, "the session was not renewed");
    let s2 = open_session(&second);
    assert_ne!(s2.access_token, s1.access_token);

    // Sign-out (through the provider's logout pages).
    let signed_out_from = seen.len();
    follow_into(&b, &url("/outpost.goauthentik.io/sign_out"), &mut seen).await;
    let log = outpost.stop_and_read();

    // The log is really on: request lines, the login, the user, the restart.
    for want in [
        "\"outcome\":\"login\"",
        "\"outcome\":\"allow\"",
        "\"outcome\":\"sign_out\"",
        "\"user\":\"alice\"",
        "restarting login",
        "reverse proxy sent no usable original URL",
    ] {
        assert!(log.contains(want), "the log has no {want}:\n{log}");
    }
    let mut secrets: Vec<(&str, String)> = vec![
        ("access token", s1.access_token.clone()),
        ("renewed access token", s2.access_token.clone()),
        ("session cookie", first.clone()),
        ("renewed session cookie", second.clone()),
        ("binding cookie", binding.clone()),
        ("authorization code", code.clone()),
        ("state", state.clone()),
        ("client secret", CLIENT_SECRET.to_string()),
        ("sealing secret", SECRET.to_string()),
    ];
    for (what, t) in [
        ("refresh token", &s1.refresh_token),
        ("renewed refresh token", &s2.refresh_token),
        ("ID token", &s1.id_token),
        ("renewed ID token", &s2.id_token),
    ] {
        if let Some(t) = t {
            secrets.push((what, t.clone()));
        }
    }
    assert!(
        secrets.iter().any(|(w, _)| *w == "refresh token")
            && secrets.iter().any(|(w, _)| *w == "ID token"),
        "the session holds no refresh or ID token: nothing to look for"
    );
    let mut failures = Vec::new();
    for (what, secret) in &secrets {
        for form in secret_forms(secret) {
            if let Some(i) = log.find(&form) {
                let line = log[..i].rfind('\n').map_or(0, |n| n + 1);
                let end = log[i..].find('\n').map_or(log.len(), |n| i + n);
                failures.push(format!("log shows the {what}: {}", &log[line..end]));
                break;
            }
        }
    }

    // Pages: what the outpost (through nginx) showed the browser, not the app's echo and not
    // the provider's own pages.
    let ours: Vec<&Page> = seen
        .iter()
        .filter(|p| {
            origin(&p.url).as_deref() == Some(app_origin.as_str()) && !looks_like_echo(&p.body)
        })
        .collect();
    assert!(
        ours.len() >= 4,
        "too few outpost pages: {:?}",
        seen.iter().map(|p| &p.url).collect::<Vec<_>>()
    );
    let mut hinted = false;
    for p in &ours {
        let location = p.location().unwrap_or_default();
        // A redirect's body links to its Location: that link is judged as the Location.
        let link = location
            .replace('&', "&amp;")
            .replace('"', "&quot;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('\'', "&#39;");
        let body = if location.is_empty() {
            p.body.clone()
        } else {
            p.body.replace(&link, "(the Location)")
        };
        let shown: String = p
            .headers
            .iter()
            .filter(|(k, _)| *k != reqwest::header::SET_COOKIE && *k != reqwest::header::LOCATION)
            .map(|(k, v)| format!("{k}: {}\n", String::from_utf8_lossy(v.as_bytes())))
            .collect::<String>()
            + &body;
        for (what, secret) in &secrets {
            if [
                "state",
                "binding cookie",
                "session cookie",
                "renewed session cookie",
            ]
            .contains(what)
            {
                continue; // the state travels in the authorization URL; cookies in Set-Cookie
            }
            for form in secret_forms(secret) {
                if shown.contains(&form) {
                    failures.push(format!("{} {} shows the {what}", p.status, p.url));
                }
                if location.contains(&form) {
                    let hint = Url::parse(&location).ok().filter(|u| {
                        origin(u.as_str()).as_deref() == Some(idp_origin.as_str())
                            && u.query_pairs()
                                .any(|(k, v)| k == "id_token_hint" && v == secret.as_str())
                    });
                    if what.contains("ID token") && hint.is_some() {
                        hinted = true;
                    } else {
                        failures.push(format!(
                            "{} {} redirects with the {what}: {location}",
                            p.status, p.url
                        ));
                    }
                }
            }
        }
        for h in p.headers.keys() {
            if h.as_str().starts_with("x-authentik") {
                failures.push(format!("{} {} shows the browser {h}", p.status, p.url));
            }
        }
    }
    assert!(
        seen[signed_out_from..]
            .iter()
            .any(|p| p.location().is_some_and(|l| l.starts_with(&idp.issuer))),
        "sign-out did not go to the provider"
    );
    assert!(
        hinted,
        "the sign-out redirect carried no id_token_hint: the check above saw nothing"
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
