//! The reverse proxies other than nginx: the shipped Caddy example run in a real Caddy, the
//! exact request shapes Traefik's forwardAuth and Envoy's ext_authz send to the outpost
//! (neither proxy is installable here), and a parse check of every example file.

mod common;

use std::time::Duration;

use common::caddy::{self, Caddy, CaddyVars};
use common::echo::EchoApp;
use common::*;
use reqwest::header::HeaderMap;
use serde_yaml::Value as Yaml;

/// Every identity header the outpost sets on a 2xx answer (lowercase).
const IDENTITY_HEADERS: [&str; 12] = [
    "x-authentik-username",
    "x-authentik-groups",
    "x-authentik-entitlements",
    "x-authentik-email",
    "x-authentik-name",
    "x-authentik-uid",
    "x-authentik-jwt",
    "x-authentik-meta-jwks",
    "x-authentik-meta-outpost",
    "x-authentik-meta-provider",
    "x-authentik-meta-app",
    "x-authentik-meta-version",
];

/// The page the user asks for first; the login must land exactly here.
const TARGET: &str = "/some/path?x=1&y=two%20words";
const SKIP_REGEX: &str = "^/public/";
const BROWSER_ACCEPT: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
const BROWSER_UA: &str = "Mozilla/5.0 (X11; Linux x86_64) ak-outpost-tests";

fn callback_uri(external: &str) -> String {
    format!("{external}/outpost.goauthentik.io/callback?X-authentik-auth-callback=true")
}

fn app_cfg(external: &str) -> AppCfg {
    let mut app = AppCfg::single("app", external.to_string());
    app.skip_path_regex = SKIP_REGEX.into();
    app
}

fn query_param(url: &str, name: &str) -> Option<String> {
    url::Url::parse(url)
        .ok()?
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Stores every `Set-Cookie` of `page` in the browser's jar for `url`, as a browser does with
/// a response the proxy passed through.
fn keep_cookies(browser: &Browser, page: &Page, url: &str) {
    for c in page.set_cookies() {
        browser.add_cookie(&c, url);
    }
}

fn identity_in_response(h: &HeaderMap) -> Vec<String> {
    h.keys()
        .map(|k| k.as_str().to_string())
        .filter(|k| k.contains("authentik"))
        .collect()
}

/// Header values the echo app received that are unreplaced Caddy placeholders.
fn placeholders(p: &Page) -> Vec<String> {
    p.json()["headers"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, v)| v.to_string().contains("{http."))
        .map(|(k, v)| format!("{k}: {v}"))
        .collect()
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// Asserts that `p` is the outpost sending the browser to the IdP's authorization endpoint for
/// `external`; returns (authorize URL, state).
fn assert_login_redirect(p: &Page, idp: &Idp, external: &str, what: &str) -> (String, String) {
    assert_eq!(p.status, 302, "{what}: {} {}", p.status, p.body);
    let loc = p.location().expect("Location");
    assert!(
        loc.starts_with(&idp.issuer),
        "{what}: not sent to the IdP: {loc}"
    );
    assert_eq!(
        query_param(&loc, "redirect_uri").as_deref(),
        Some(callback_uri(external).as_str()),
        "{what}: {loc}"
    );
    assert_eq!(
        query_param(&loc, "client_id").as_deref(),
        Some(CLIENT_ID),
        "{loc}"
    );
    assert_eq!(
        query_param(&loc, "response_type").as_deref(),
        Some("code"),
        "{loc}"
    );
    let state = query_param(&loc, "state").unwrap_or_default();
    assert!(!state.is_empty(), "{what}: no state in {loc}");
    assert!(
        !p.set_cookies().is_empty(),
        "{what}: the login redirect sets no (browser binding) cookie"
    );
    (loc, state)
}

async fn to_page(r: reqwest::Response) -> Page {
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let url = r.url().to_string();
    let body = r.text().await.unwrap_or_default();
    Page {
        status,
        url,
        headers,
        body,
    }
}

fn plain_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

// ---------------------------------------------------------------------------------------------
// 1. Caddy, for real
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_journey() {
    let listener = InProcess::bind();
    let outpost_addr = listener.local_addr().expect("addr");
    let echo = EchoApp::start().await;
    let caddy = Caddy::start(&CaddyVars {
        outpost: outpost_addr,
        app_upstream: echo.addr,
        app_host: APP_HOST.into(),
    });
    let external = caddy.base_url(APP_HOST);
    let idp = Idp::start(&IdpOptions::new(vec![callback_uri(&external)]));
    let yaml = outpost_yaml(outpost_addr, &idp.issuer, SECRET, 60, &[app_cfg(&external)]);
    let _outpost = InProcess::serve(listener, &yaml).await;
    let browser = Browser::new(&[(APP_HOST, caddy.port)]);
    let url = |p: &str| format!("{external}{p}");
    let target = url(TARGET);
    let log = || format!("--- caddy log ---\n{}", caddy.log());

    // Fetch/XHR/API requests without a session get 401, never a redirect to a login page.
    for (what, headers) in [
        (
            "Accept: application/json",
            vec![("Accept", "application/json")],
        ),
        (
            "X-Requested-With",
            vec![("X-Requested-With", "XMLHttpRequest")],
        ),
        (
            "Sec-Fetch-Mode: cors",
            vec![("Sec-Fetch-Mode", "cors"), ("Accept", "*/*")],
        ),
    ] {
        let p = browser.get_with(&url("/api/items"), &headers).await;
        assert_eq!(p.status, 401, "{what}: {} {}\n{}", p.status, p.body, log());
        assert!(p.location().is_none(), "{what}: {:?}", p.location());
    }
    // Caddy checks with GET but says X-Forwarded-Method: POST; a POST is no page load.
    let post = browser
        .client
        .post(url("/api/items"))
        .body("x=1")
        .send()
        .await
        .expect("POST");
    assert_eq!(post.status().as_u16(), 401, "POST without a session");

    // A page load goes straight to the IdP (Caddy passes the outpost's 302 through).
    let first = browser.get(&target).await;
    assert_login_redirect(&first, &idp, &external, "first visit through Caddy");

    // Forwarding headers sent by the client do not reach the outpost: Caddy sets its own
    // X-Forwarded-Host and X-Forwarded-Uri, so a skip path cannot be claimed.
    let spoof = browser
        .get_with(
            &url("/private"),
            &[
                ("X-Forwarded-Uri", "/public/x"),
                ("X-Forwarded-Host", OTHER_HOST),
                ("X-Forwarded-Proto", "https"),
            ],
        )
        .await;
    assert_eq!(
        spoof.status, 302,
        "client X-Forwarded-* believed: {}",
        spoof.body
    );

    // A skip path passes without login and without any identity header, even ones the client
    // sent itself (the Caddyfile removes them; Caddy 2.6's copy_headers would not).
    let public = browser
        .get_with(
            &url("/public/page?a=1"),
            &[
                ("X-Authentik-Username", "mallory"),
                ("x-authentik-groups", "admins"),
                ("X_Authentik_Username", "mallory"),
            ],
        )
        .await;
    assert_eq!(public.status, 200, "{}\n{}", public.body, log());
    assert_eq!(public.json()["path"], "/public/page");
    let leaked: Vec<String> = public.json()["headers"]
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| k.contains("authentik"))
        .cloned()
        .collect();
    assert!(
        leaked.is_empty(),
        "client identity headers reached the app: {leaked:?} {}",
        public.body
    );

    // The login lands on the original path and query, with the identity headers.
    let landing = browser
        .login(&target, alice().username, alice().password)
        .await;
    assert_eq!(landing.status, 200, "{}\n{}", landing.body, log());
    let body = landing.json();
    assert_eq!(body["path"], "/some/path");
    assert_eq!(body["query"], "x=1&y=two%20words");
    assert_eq!(
        landing.echoed("x-authentik-username").as_deref(),
        Some("alice")
    );
    assert_eq!(
        landing.echoed("x-authentik-groups").as_deref(),
        Some("admins|users")
    );
    assert_eq!(
        landing.echoed("x-authentik-email").as_deref(),
        Some("alice@example.test")
    );
    assert_eq!(
        landing.echoed("x-authentik-name").as_deref(),
        Some("Alice Liddell")
    );
    assert_eq!(landing.echoed("x-authentik-uid").as_deref(), Some("alice"));
    assert_eq!(
        landing.echoed("x-authentik-meta-app").as_deref(),
        Some("app")
    );

    // Signed in: client-sent identity headers are replaced, also the ones the outpost sends
    // empty (entitlements) and underscore spellings.
    let again = browser
        .get_with(
            &url("/again"),
            &[
                ("X-Authentik-Username", "mallory"),
                ("X-authentik-groups", "admins"),
                ("X-Authentik-Entitlements", "admin"),
                ("X_Authentik_Groups", "admins"),
                ("x_authentik_username", "mallory"),
            ],
        )
        .await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(
        again.echoed("x-authentik-username").as_deref(),
        Some("alice")
    );
    assert_eq!(
        again.echoed("x-authentik-groups").as_deref(),
        Some("admins|users")
    );
    let ent = again.echoed("x-authentik-entitlements").unwrap_or_default();
    assert!(
        !ent.contains("admin"),
        "client entitlements reached the app: {ent:?}"
    );
    let underscored: Vec<String> = again.json()["headers"]
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| k.contains("_authentik"))
        .cloned()
        .collect();
    assert!(underscored.is_empty(), "{underscored:?}");
    assert!(
        placeholders(&again).is_empty(),
        "{:?}",
        placeholders(&again)
    );

    // Signed in, fetch/XHR requests go through too.
    let xhr = browser
        .get_with(&url("/api/items"), &[("Accept", "application/json")])
        .await;
    assert_eq!(xhr.status, 200, "{}", xhr.body);
    assert_eq!(xhr.echoed("x-authentik-username").as_deref(), Some("alice"));

    // Sign out through Caddy: cookies cleared, provider session ended, next visit asks for a
    // password again.
    let pages = browser
        .follow(&url("/outpost.goauthentik.io/sign_out"))
        .await;
    assert_eq!(pages[0].status, 302, "{}", pages[0].body);
    assert!(
        pages[0]
            .set_cookies()
            .iter()
            .any(|c| c.contains("Max-Age=0")),
        "{:?}",
        pages[0].set_cookies()
    );
    let end = pages[0].location().unwrap();
    assert!(
        end.starts_with(&format!("{}/session/end", idp.issuer)),
        "{end}"
    );
    let last = pages.into_iter().last().unwrap();
    browser.confirm_logout(last).await;
    let after = browser.follow(&target).await;
    let last = after.last().unwrap();
    assert!(
        last.body.contains("login-form"),
        "expected the IdP login form after sign-out, got {} {}",
        last.status,
        last.body
    );
}

// ---------------------------------------------------------------------------------------------
// 2./3. Traefik and Envoy request shapes
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    /// Traefik `forwardAuth` (pkg/middlewares/auth/forward.go): always a GET to the configured
    /// address (so `Host` is the outpost's), every client header copied, plus
    /// `X-Forwarded-Method/-Proto/-Host/-Uri/-For` describing the original request.
    Traefik,
    /// Envoy `ext_authz` HTTP service: the original method, the original path and query
    /// appended to `path_prefix`, the original `Host`, `Content-Length: 0`, and the client
    /// headers listed in `allowed_headers` (here the ones the example allows, with
    /// `x-forwarded-proto` as Envoy's connection manager sets it).
    Envoy,
}

/// The IdP and an in-process outpost, called directly in one proxy's request shape. The echo
/// app stands in for the app host: the IdP sends the browser to
/// `<external>/outpost.goauthentik.io/callback?...`, the echo app records that URL, and the
/// test hands it to the outpost the way the proxy would.
struct ShapeStack {
    shape: Shape,
    echo: EchoApp,
    idp: Idp,
    outpost: InProcess,
    browser: Browser,
    external: String,
    client: reqwest::Client,
}

impl ShapeStack {
    async fn start(shape: Shape) -> ShapeStack {
        let echo = EchoApp::start().await;
        let external = format!("http://{APP_HOST}:{}", echo.addr.port());
        let listener = InProcess::bind();
        let outpost_addr = listener.local_addr().expect("addr");
        let idp = Idp::start(&IdpOptions::new(vec![callback_uri(&external)]));
        let yaml = outpost_yaml(outpost_addr, &idp.issuer, SECRET, 60, &[app_cfg(&external)]);
        let outpost = InProcess::serve(listener, &yaml).await;
        let browser = Browser::new(&[(APP_HOST, echo.addr.port())]);
        ShapeStack {
            shape,
            echo,
            idp,
            outpost,
            browser,
            external,
            client: plain_client(),
        }
    }

    fn host(&self) -> String {
        format!("{APP_HOST}:{}", self.echo.addr.port())
    }

    /// The browser's cookies for the app, as the proxy would pass them on.
    fn cookie(&self) -> String {
        self.browser.cookies_for(&self.external)
    }

    /// One check as the proxy sends it for a browser request `method path_and_query` carrying
    /// the browser's cookies and `headers` (which replace the default browser headers of the
    /// same name).
    async fn check(&self, method: &str, path_and_query: &str, headers: &[(&str, &str)]) -> Page {
        self.check_with_cookie(method, path_and_query, headers, &self.cookie())
            .await
    }

    async fn check_with_cookie(
        &self,
        method: &str,
        path_and_query: &str,
        headers: &[(&str, &str)],
        cookie: &str,
    ) -> Page {
        // What the proxy sends besides the client's own headers.
        let mut all: Vec<(String, String)> = match self.shape {
            Shape::Traefik => vec![
                ("x-forwarded-method".into(), method.into()),
                ("x-forwarded-proto".into(), "http".into()),
                ("x-forwarded-host".into(), self.host()),
                ("x-forwarded-uri".into(), path_and_query.into()),
                ("x-forwarded-for".into(), "203.0.113.7".into()),
                ("x-forwarded-port".into(), self.echo.addr.port().to_string()),
                ("x-forwarded-server".into(), "traefik".into()),
                ("x-real-ip".into(), "203.0.113.7".into()),
            ],
            Shape::Envoy => vec![
                ("host".into(), self.host()),
                ("content-length".into(), "0".into()),
                ("x-forwarded-proto".into(), "http".into()),
                ("x-forwarded-for".into(), "203.0.113.7".into()),
            ],
        };
        all.push(("user-agent".into(), BROWSER_UA.into()));
        all.push(("accept".into(), BROWSER_ACCEPT.into()));
        if !cookie.is_empty() {
            all.push(("cookie".into(), cookie.into()));
        }
        for (k, v) in headers {
            all.retain(|(n, _)| !n.eq_ignore_ascii_case(k));
            all.push((k.to_ascii_lowercase(), v.to_string()));
        }
        let outpost = self.outpost.addr;
        let mut req = match self.shape {
            // Traefik always checks with GET, at the configured address.
            Shape::Traefik => self.client.get(format!(
                "http://{outpost}/outpost.goauthentik.io/auth/traefik"
            )),
            // Envoy keeps the method and appends the original path and query to the prefix.
            Shape::Envoy => self.client.request(
                reqwest::Method::from_bytes(method.as_bytes()).expect("method"),
                format!("http://{outpost}/outpost.goauthentik.io/auth/envoy{path_and_query}"),
            ),
        };
        for (k, v) in &all {
            req = req.header(k.as_str(), v.as_str());
        }
        to_page(req.send().await.expect("check request")).await
    }

    /// A browser request for one of the outpost's own endpoints, which the shipped examples
    /// route straight to the outpost (no check): the original `Host` kept, forwarding headers
    /// added by the proxy (Traefik: `X-Forwarded-Proto/-Host/-For`; Envoy:
    /// `x-forwarded-proto/-for`).
    async fn direct(&self, path_and_query: &str) -> Page {
        let mut req = self
            .client
            .get(format!("http://{}{path_and_query}", self.outpost.addr))
            .header("host", self.host())
            .header("x-forwarded-proto", "http")
            .header("x-forwarded-for", "203.0.113.7")
            .header("user-agent", BROWSER_UA)
            .header("accept", BROWSER_ACCEPT);
        if self.shape == Shape::Traefik {
            req = req
                .header("x-forwarded-host", self.host())
                .header("x-forwarded-port", self.echo.addr.port().to_string())
                .header("x-forwarded-server", "traefik")
                .header("x-real-ip", "203.0.113.7");
        }
        let cookie = self.cookie();
        if !cookie.is_empty() {
            req = req.header("cookie", cookie);
        }
        to_page(req.send().await.expect("direct request")).await
    }
}

/// The whole journey in one proxy's request shape: misconfiguration, fetch/XHR, skip path,
/// login redirect with a state that round-trips through the IdP, the callback delivered as a
/// check, the signed-in check with identity headers, and sign-out.
async fn shape_journey(shape: Shape) {
    let s = ShapeStack::start(shape).await;

    // A proxy that sends no usable description of the request is a misconfiguration: 500.
    match shape {
        Shape::Traefik => {
            let bare = s
                .client
                .get(format!(
                    "http://{}/outpost.goauthentik.io/auth/traefik",
                    s.outpost.addr
                ))
                .send()
                .await
                .expect("bare check");
            assert_eq!(bare.status().as_u16(), 500, "no X-Forwarded-* at all");
            let partial = s
                .client
                .get(format!(
                    "http://{}/outpost.goauthentik.io/auth/traefik",
                    s.outpost.addr
                ))
                .header("X-Forwarded-Proto", "https")
                .header("X-Forwarded-Host", s.host())
                .send()
                .await
                .expect("partial check");
            assert_eq!(partial.status().as_u16(), 500, "X-Forwarded-Uri missing");
        }
        Shape::Envoy => {
            let p = s
                .check("GET", "/x", &[("x-forwarded-proto", "gopher")])
                .await;
            assert_eq!(p.status, 500, "unusable scheme: {}", p.body);
        }
    }

    // Fetch/XHR/API requests without a session: 401, no redirect.
    for (what, method, headers) in [
        (
            "Accept: application/json",
            "GET",
            vec![("accept", "application/json")],
        ),
        (
            "X-Requested-With",
            "GET",
            vec![("x-requested-with", "XMLHttpRequest")],
        ),
        (
            "Sec-Fetch-Mode: cors",
            "GET",
            vec![("sec-fetch-mode", "cors")],
        ),
        ("POST", "POST", vec![]),
    ] {
        let p = s.check(method, "/api/items?page=2", &headers).await;
        assert_eq!(p.status, 401, "{shape:?} {what}: {} {}", p.status, p.body);
        assert!(p.location().is_none(), "{shape:?} {what}");
    }

    // A skip path: 200 without identity headers (the client's own, which the proxy copies
    // into the check, are not echoed back).
    let p = s
        .check(
            "GET",
            "/public/page?a=1",
            &[("x-authentik-username", "mallory")],
        )
        .await;
    assert_eq!(p.status, 200, "{shape:?} skip path: {}", p.body);
    assert!(
        identity_in_response(&p.headers).is_empty(),
        "{shape:?}: {:?}",
        p.headers
    );

    // A page load: 302 to the IdP, with a cookie that binds the login to this browser.
    let first = s.check("GET", TARGET, &[]).await;
    let (authorize, state) = assert_login_redirect(
        &first,
        &s.idp,
        &s.external,
        &format!("{shape:?} first visit"),
    );
    keep_cookies(&s.browser, &first, &s.external);

    // Log in at the IdP; it sends the browser back to the app host's callback URL (recorded by
    // the echo app) with the same state.
    let back = s
        .browser
        .login(&authorize, alice().username, alice().password)
        .await;
    assert_eq!(back.status, 200, "{shape:?}: {} {}", back.status, back.body);
    assert!(
        back.url
            .starts_with(&format!("{}&", callback_uri(&s.external))),
        "{shape:?}: IdP sent the browser to {}",
        back.url
    );
    assert_eq!(
        query_param(&back.url, "state").as_deref(),
        Some(state.as_str()),
        "{shape:?}: state did not round-trip"
    );
    assert!(query_param(&back.url, "code").is_some(), "{}", back.url);

    // The callback arrives as a check (the proxy checks every request on the app host):
    // 302 to the original URL, with the session cookie.
    let callback_pq = {
        let u = url::Url::parse(&back.url).unwrap();
        format!("{}?{}", u.path(), u.query().unwrap_or_default())
    };
    let done = s.check("GET", &callback_pq, &[]).await;
    assert_eq!(done.status, 302, "{shape:?} callback: {}", done.body);
    assert_eq!(
        done.location().as_deref(),
        Some(format!("{}{TARGET}", s.external).as_str()),
        "{shape:?}: callback does not return to the original URL"
    );
    assert!(
        !done.set_cookies().is_empty(),
        "{shape:?}: no session cookie"
    );
    keep_cookies(&s.browser, &done, &s.external);

    // Signed in: 200 with the identity headers, whatever the client sent.
    let ok = s
        .check(
            "GET",
            TARGET,
            &[
                ("x-authentik-username", "mallory"),
                ("x-authentik-groups", "admins"),
            ],
        )
        .await;
    assert_eq!(ok.status, 200, "{shape:?} signed in: {}", ok.body);
    let h = &ok.headers;
    assert_eq!(
        header(h, "x-authentik-username"),
        Some("alice"),
        "{shape:?}"
    );
    assert_eq!(header(h, "x-authentik-groups"), Some("admins|users"));
    assert_eq!(header(h, "x-authentik-email"), Some("alice@example.test"));
    assert_eq!(header(h, "x-authentik-name"), Some("Alice Liddell"));
    assert_eq!(header(h, "x-authentik-uid"), Some("alice"));
    assert_eq!(header(h, "x-authentik-meta-app"), Some("app"));
    for name in IDENTITY_HEADERS {
        assert!(h.contains_key(name), "{shape:?}: {name} missing in {h:?}");
    }
    assert!(ok.location().is_none());

    // Signed in, fetch/XHR and POST requests pass too.
    let xhr = s
        .check("GET", "/api/items", &[("accept", "application/json")])
        .await;
    assert_eq!(xhr.status, 200, "{shape:?} XHR signed in: {}", xhr.body);
    let post = s.check("POST", "/api/items", &[]).await;
    assert_eq!(post.status, 200, "{shape:?} POST signed in: {}", post.body);

    // Sign-out by URL signature, as a check: 302 to the IdP's end-session endpoint, cookies
    // cleared; the old cookie no longer works.
    let old_cookie = s.cookie();
    let out = s
        .check("GET", "/anything?X-authentik-logout=true", &[])
        .await;
    assert_eq!(out.status, 302, "{shape:?} sign-out: {}", out.body);
    let end = out.location().unwrap_or_default();
    assert!(
        end.starts_with(&format!("{}/session/end", s.idp.issuer)),
        "{shape:?}: {end}"
    );
    assert!(
        out.set_cookies().iter().any(|c| c.contains("Max-Age=0")),
        "{shape:?}: {:?}",
        out.set_cookies()
    );
    keep_cookies(&s.browser, &out, &s.external);
    let after = s.check("GET", TARGET, &[]).await;
    assert_login_redirect(
        &after,
        &s.idp,
        &s.external,
        &format!("{shape:?} after sign-out"),
    );
    let replay = s.check_with_cookie("GET", TARGET, &[], &old_cookie).await;
    assert_ne!(
        replay.status, 200,
        "{shape:?}: the cookie from before sign-out still works"
    );

    // Log in again, this time with the callback and sign-out going the way the shipped
    // examples route them: straight to the outpost, not through the check.
    let first = s.check("GET", TARGET, &[]).await;
    let (authorize, state) = assert_login_redirect(
        &first,
        &s.idp,
        &s.external,
        &format!("{shape:?} second login"),
    );
    keep_cookies(&s.browser, &first, &s.external);
    let back = s
        .browser
        .login(&authorize, alice().username, alice().password)
        .await;
    assert_eq!(
        query_param(&back.url, "state").as_deref(),
        Some(state.as_str())
    );
    let u = url::Url::parse(&back.url).unwrap();
    let done = s
        .direct(&format!("{}?{}", u.path(), u.query().unwrap_or_default()))
        .await;
    assert_eq!(done.status, 302, "{shape:?} direct callback: {}", done.body);
    assert_eq!(
        done.location().as_deref(),
        Some(format!("{}{TARGET}", s.external).as_str())
    );
    keep_cookies(&s.browser, &done, &s.external);
    let ok = s.check("GET", TARGET, &[]).await;
    assert_eq!(
        ok.status, 200,
        "{shape:?} after direct callback: {}",
        ok.body
    );
    assert_eq!(header(&ok.headers, "x-authentik-username"), Some("alice"));
    let out = s.direct("/outpost.goauthentik.io/sign_out").await;
    assert_eq!(out.status, 302, "{shape:?} direct sign-out: {}", out.body);
    assert!(
        out.location()
            .unwrap_or_default()
            .starts_with(&format!("{}/session/end", s.idp.issuer)),
        "{:?}",
        out.location()
    );
    keep_cookies(&s.browser, &out, &s.external);
    let after = s.check("GET", TARGET, &[]).await;
    assert_eq!(after.status, 302, "{shape:?} after direct sign-out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traefik_request_shape() {
    shape_journey(Shape::Traefik).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_request_shape() {
    shape_journey(Shape::Envoy).await;
}

// ---------------------------------------------------------------------------------------------
// 4. Every example file parses and talks to the right endpoint
// ---------------------------------------------------------------------------------------------

fn read_example(name: &str) -> String {
    let path = caddy::example_path(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn yaml_example(name: &str) -> Yaml {
    serde_yaml::from_str(&read_example(name)).unwrap_or_else(|e| panic!("{name}: not YAML: {e}"))
}

fn strings(v: &Yaml) -> Vec<String> {
    v.as_sequence()
        .map(|s| {
            s.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// `x-authentik-meta-jwks` -> `X-Authentik-Meta-Jwks` (Go's canonical header key).
fn canonical(name: &str) -> String {
    name.split('-')
        .map(|p| {
            let mut c = p.chars();
            match c.next() {
                Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

fn non_comment_lines(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_example_is_valid_and_complete() {
    let path = caddy::example_path(caddy::EXAMPLE);
    if let Err(e) = caddy::validate(&path) {
        panic!("caddy validate {}: {e}", path.display());
    }
    let diff = caddy::fmt_diff(&path);
    assert!(diff.is_empty(), "caddy fmt would change: {diff:#?}");
    let text = read_example(caddy::EXAMPLE);
    let lines = non_comment_lines(&text);
    assert!(
        lines
            .iter()
            .any(|l| l.trim() == "uri /outpost.goauthentik.io/auth/caddy"),
        "forward_auth uri"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.trim() == "reverse_proxy /outpost.goauthentik.io/* outpost:9000"),
        "outpost endpoints route"
    );
    let copy = lines
        .iter()
        .find(|l| l.trim_start().starts_with("copy_headers "))
        .expect("copy_headers line");
    let copied: Vec<&str> = copy.split_whitespace().skip(1).collect();
    for name in IDENTITY_HEADERS {
        assert!(
            copied.contains(&canonical(name).as_str()),
            "copy_headers lacks {} (spelled exactly so): {copy}",
            canonical(name)
        );
    }
    // The client's identity headers are removed before the check, in the same route.
    let strip = lines
        .iter()
        .position(|l| l.trim() == "request_header -*uthentik*")
        .expect("request_header removal");
    let fwd = lines
        .iter()
        .position(|l| l.trim_start().starts_with("forward_auth "))
        .expect("forward_auth");
    assert!(strip < fwd, "header removal must come before forward_auth");
    // Caddy 2.6's literal placeholders are removed after it.
    let cleanup = lines
        .iter()
        .position(|l| l.trim() == "request_header @ak_no_identity -*uthentik*")
        .expect("placeholder cleanup");
    assert!(
        cleanup > fwd,
        "placeholder cleanup must come after forward_auth"
    );
    assert!(
        !lines.iter().any(|l| l.contains("trusted_proxies")),
        "trusted_proxies must stay a comment in the example"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traefik_examples_parse_and_are_complete() {
    // File provider.
    let y = yaml_example("traefik/dynamic.yml");
    let fa = &y["http"]["middlewares"]["ak-outpost"]["forwardAuth"];
    assert_eq!(
        fa["address"].as_str(),
        Some("http://outpost:9000/outpost.goauthentik.io/auth/traefik")
    );
    assert_eq!(fa["trustForwardHeader"].as_bool(), Some(true));
    let copied: Vec<String> = strings(&fa["authResponseHeaders"])
        .iter()
        .map(|h| h.to_ascii_lowercase())
        .collect();
    for name in IDENTITY_HEADERS {
        assert!(
            copied.iter().any(|h| h == name),
            "authResponseHeaders lacks {name}"
        );
    }
    let routers = &y["http"]["routers"];
    assert_eq!(strings(&routers["app"]["middlewares"]), vec!["ak-outpost"]);
    let outpost_router = &routers["app-outpost"];
    assert!(
        outpost_router["rule"]
            .as_str()
            .unwrap_or_default()
            .contains("PathPrefix(`/outpost.goauthentik.io/`)"),
        "{outpost_router:?}"
    );
    assert!(
        outpost_router["middlewares"].is_null(),
        "no auth on the outpost's endpoints"
    );
    assert_eq!(outpost_router["service"].as_str(), Some("ak-outpost"));
    assert!(
        outpost_router["priority"].as_u64().unwrap_or(0) > 0,
        "the outpost router must win over the app router"
    );
    assert_eq!(
        y["http"]["services"]["ak-outpost"]["loadBalancer"]["servers"][0]["url"].as_str(),
        Some("http://outpost:9000")
    );

    // Docker labels.
    let c = yaml_example("traefik/docker-compose.yml");
    let labels = |svc: &str| strings(&c["services"][svc]["labels"]);
    let outpost = labels("outpost");
    let label = |prefix: &str| {
        outpost
            .iter()
            .find_map(|l| l.strip_prefix(prefix).map(str::to_string))
            .unwrap_or_else(|| panic!("docker-compose.yml: no label {prefix}"))
    };
    assert_eq!(
        label("traefik.http.middlewares.ak-outpost.forwardauth.address="),
        "http://outpost:9000/outpost.goauthentik.io/auth/traefik"
    );
    let hdrs = label("traefik.http.middlewares.ak-outpost.forwardauth.authResponseHeaders=")
        .to_ascii_lowercase();
    let hdrs: Vec<&str> = hdrs.split(',').collect();
    for name in IDENTITY_HEADERS {
        assert!(
            hdrs.contains(&name),
            "label authResponseHeaders lacks {name}"
        );
    }
    assert!(
        label("traefik.http.routers.app-outpost.rule=")
            .contains("PathPrefix(`/outpost.goauthentik.io/`)")
    );
    assert!(
        labels("app")
            .iter()
            .any(|l| l == "traefik.http.routers.app.middlewares=ak-outpost@docker"),
        "the app router must use the middleware"
    );
}

/// Finds the HTTP filter called `name` in the first HTTP connection manager.
fn envoy_filter<'a>(filters: &'a [Yaml], name: &str) -> (usize, &'a Yaml) {
    filters
        .iter()
        .enumerate()
        .find(|(_, f)| f["name"].as_str() == Some(name))
        .map(|(i, f)| (i, &f["typed_config"]))
        .unwrap_or_else(|| panic!("envoy.yaml: no http filter {name}"))
}

fn patterns(v: &Yaml, kind: &str) -> Vec<String> {
    v["patterns"]
        .as_sequence()
        .map(|s| {
            s.iter()
                .filter_map(|p| p[kind].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_example_parses_and_is_complete() {
    let y = yaml_example("envoy/envoy.yaml");
    let hcm =
        &y["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
    assert_eq!(hcm["use_remote_address"].as_bool(), Some(true));
    let filters = hcm["http_filters"].as_sequence().expect("http_filters");
    let (strip_at, strip) = envoy_filter(filters, "envoy.filters.http.header_mutation");
    let (authz_at, authz) = envoy_filter(filters, "envoy.filters.http.ext_authz");
    let (router_at, _) = envoy_filter(filters, "envoy.filters.http.router");
    assert!(strip_at < authz_at && authz_at < router_at, "filter order");
    let removed: Vec<&str> = strip["mutations"]["request_mutations"]
        .as_sequence()
        .expect("request_mutations")
        .iter()
        .filter_map(|m| m["remove"].as_str())
        .collect();
    for name in IDENTITY_HEADERS {
        assert!(
            removed.contains(&name),
            "header_mutation does not remove {name}"
        );
    }

    let svc = &authz["http_service"];
    assert_eq!(
        svc["path_prefix"].as_str(),
        Some("/outpost.goauthentik.io/auth/envoy")
    );
    assert_eq!(svc["server_uri"]["cluster"].as_str(), Some("ak_outpost"));
    assert_eq!(authz["failure_mode_allow"].as_bool(), Some(false));
    let allowed = patterns(&authz["allowed_headers"], "exact");
    for h in ["cookie", "accept", "x-forwarded-proto"] {
        assert!(allowed.iter().any(|a| a == h), "allowed_headers lacks {h}");
    }
    let resp = &svc["authorization_response"];
    assert_eq!(
        patterns(&resp["allowed_upstream_headers"], "prefix"),
        vec!["x-authentik-"]
    );
    let client = patterns(&resp["allowed_client_headers"], "exact");
    for h in ["set-cookie", "location"] {
        assert!(
            client.iter().any(|a| a == h),
            "allowed_client_headers lacks {h}"
        );
    }
    assert_eq!(
        patterns(&resp["allowed_client_headers_on_success"], "exact"),
        vec!["set-cookie"]
    );

    // The outpost's endpoints: routed to the outpost, without the check.
    let routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
        .as_sequence()
        .expect("routes");
    let first = &routes[0];
    assert_eq!(
        first["match"]["prefix"].as_str(),
        Some("/outpost.goauthentik.io/")
    );
    assert_eq!(first["route"]["cluster"].as_str(), Some("ak_outpost"));
    assert_eq!(
        first["typed_per_filter_config"]["envoy.filters.http.ext_authz"]["disabled"].as_bool(),
        Some(true)
    );
    let clusters: Vec<&str> = y["static_resources"]["clusters"]
        .as_sequence()
        .expect("clusters")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert!(clusters.contains(&"ak_outpost") && clusters.contains(&"app"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_example_is_complete() {
    let text = read_example("haproxy/haproxy.cfg");
    let lines = non_comment_lines(&text);
    let check = lines
        .iter()
        .position(|l| {
            l.contains("lua.auth-intercept ak_outpost /outpost.goauthentik.io/auth/traefik GET")
        })
        .expect("auth-intercept line");
    for name in IDENTITY_HEADERS {
        let del = lines
            .iter()
            .position(|l| {
                l.trim()
                    .eq_ignore_ascii_case(&format!("http-request del-header {name}"))
            })
            .unwrap_or_else(|| panic!("haproxy.cfg does not remove the client's {name}"));
        assert!(del < check, "{name} must be removed before the check");
    }
    for h in [
        "X-Forwarded-Proto",
        "X-Forwarded-Host",
        "X-Forwarded-Uri",
        "X-Forwarded-Method",
    ] {
        let set = lines
            .iter()
            .position(|l| {
                l.trim()
                    .starts_with(&format!("http-request set-header {h} "))
            })
            .unwrap_or_else(|| panic!("haproxy.cfg does not set {h}"));
        assert!(set < check, "{h} must be set before the check");
    }
    assert!(
        lines
            .iter()
            .any(|l| l.trim() == "use_backend ak_outpost if host_app outpost_path"),
        "outpost endpoints route"
    );
    haproxy_syntax_check(&text);
}

/// `haproxy -c` on the example if HAProxy is installed (it is not part of the test
/// dependencies), with a stub in place of auth-request.lua that registers the same actions.
fn haproxy_syntax_check(text: &str) {
    let Some(bin) = ["/usr/sbin/haproxy", "/usr/bin/haproxy"]
        .into_iter()
        .find(|p| std::path::Path::new(p).is_file())
    else {
        eprintln!("haproxy not installed: syntax check of haproxy.cfg skipped");
        return;
    };
    for placeholder in [
        "/usr/share/haproxy/",
        "bind :443 ssl crt /etc/haproxy/certs/app.example.com.pem alpn h2,http/1.1",
        "outpost:9000",
        "app-backend:8080",
    ] {
        assert!(
            text.contains(placeholder),
            "haproxy.cfg: {placeholder:?} not found"
        );
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    std::fs::create_dir_all(d.join("haproxy-lua-http")).unwrap();
    std::fs::write(d.join("haproxy-lua-http/http.lua"), "return {}\n").unwrap();
    std::fs::write(
        d.join("auth-request.lua"),
        "core.register_action(\"auth-intercept\", { \"http-req\" }, function(txn, be, path, \
         method, hreq, hok, hfail) end, 6)\n\
         core.register_action(\"auth-request\", { \"http-req\" }, function(txn, be, path) end, 2)\n",
    )
    .unwrap();
    let cfg = text
        .replace("/usr/share/haproxy/", &format!("{}/", d.display()))
        .replace(
            "bind :443 ssl crt /etc/haproxy/certs/app.example.com.pem alpn h2,http/1.1",
            // `-c` binds nothing; any port does.
            "bind 127.0.0.1:18443",
        )
        .replace("outpost:9000", "127.0.0.1:9000")
        .replace("app-backend:8080", "127.0.0.1:8080");
    std::fs::write(d.join("haproxy.cfg"), cfg).unwrap();
    let out = std::process::Command::new(bin)
        .arg("-c")
        .arg("-f")
        .arg(d.join("haproxy.cfg"))
        .output()
        .expect("run haproxy -c");
    assert!(
        out.status.success(),
        "haproxy -c failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
