//! authentik mode, proxy-mode providers: the real binary, configured by the fake authentik,
//! answers on the applications' own hosts, logs users in and forwards their requests to the
//! providers' `internal_host` (real HTTP and HTTPS echo apps). authentik's proxy-mode
//! conformance cases (reference §11.6) run here against the whole outpost, with the headers
//! the upstream gets (§8) and header authentication (§7).

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::echo::EchoApp;
use common::fake_authentik::{FakeAuthentik, FakeUser, PrivateCa, ProviderSpec};
use common::*;
use serde_json::json;

/// The proxy-mode application of most tests: Basic injection on, `^/public/` unauthenticated,
/// "Receive header authentication" on.
const PROXIED: &str = APP_HOST;
/// A proxy-mode application with "Receive header authentication" off.
const LAX_HOST: &str = "lax.example.test";
/// A proxy-mode application under a path (`/subdir`).
const SUB_HOST: &str = "sub.example.test";
/// A forward_single application on the same outpost.
const FWD_HOST: &str = "fwd.example.test";

/// `Authorization: Basic` of alice's attributes (`alice-basic:s3cret`).
const ALICE_BASIC: &str = "Basic YWxpY2UtYmFzaWM6czNjcmV0";

/// The users: alice (Basic injection and additionalHeaders), bob (`backend_override` to
/// `other`), carol (an unparsable `backend_override`), dave (a superuser with `host_header`).
fn users(other: SocketAddr) -> Vec<FakeUser> {
    let mut bob = FakeUser::new("bob", "bob-password");
    bob.ak_proxy_extra
        .insert("backend_override".into(), json!(format!("http://{other}")));
    let mut carol = FakeUser::new("carol", "carol-password");
    carol
        .ak_proxy_extra
        .insert("backend_override".into(), json!(":qewr"));
    let mut dave = FakeUser::new("dave", "dave-password");
    dave.is_superuser = true;
    dave.ak_proxy_extra
        .insert("host_header".into(), json!("internal.example.test"));
    vec![FakeUser::alice(), bob, carol, dave]
}

struct Setup {
    fa: FakeAuthentik,
    outpost: Binary,
    /// Every proxy-mode provider's `internal_host` (unless a test adds others).
    echo: EchoApp,
    /// bob's `backend_override`.
    other: EchoApp,
    proxied: ProviderSpec,
    fwd: ProviderSpec,
    /// Every provider the fake serves.
    providers: Vec<ProviderSpec>,
    /// Host names of every provider, all served by the outpost.
    hosts: Vec<String>,
}

impl Setup {
    /// The fake authentik with four providers (`PROXIED`, `LAX_HOST`, `SUB_HOST` in proxy
    /// mode, `FWD_HOST` forward_single) and those `extra` makes for the outpost's port, and
    /// the outpost started with `env` besides the fake's, serving them all.
    async fn start(
        extra: impl FnOnce(u16) -> Vec<ProviderSpec>,
        env: Vec<(&'static str, String)>,
    ) -> Setup {
        let o = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let port = o.port();
        let echo = EchoApp::start().await;
        let other = EchoApp::start().await;
        let internal = format!("http://{}", echo.addr);
        let base = |host: &str| format!("http://{host}:{port}");
        let mut proxied = ProviderSpec::proxy(1, "proxied", &base(PROXIED), &internal);
        proxied.name = "Proxied provider".into();
        proxied.skip_path_regex = "^/public/".into();
        proxied.basic_auth_enabled = true;
        proxied.basic_auth_user_attribute = "username".into();
        proxied.basic_auth_password_attribute = "password".into();
        // The path of an internal_host is not prepended to requests (as with authentik).
        let mut lax =
            ProviderSpec::proxy(2, "lax", &base(LAX_HOST), &format!("{internal}/ignored/"));
        lax.intercept_header_auth = false;
        let sub = ProviderSpec::proxy(3, "sub", &format!("{}/subdir", base(SUB_HOST)), &internal);
        let fwd = ProviderSpec::forward_single(4, "fwd", &base(FWD_HOST));
        let mut providers = vec![proxied.clone(), lax, sub, fwd.clone()];
        providers.extend(extra(port));
        let hosts = providers
            .iter()
            .filter_map(|p| url::Url::parse(&p.external_host).ok())
            .filter_map(|u| u.host_str().map(str::to_string))
            .collect();
        let fa = FakeAuthentik::start(providers.clone(), users(other.addr)).await;
        let mut all_env = fa.outpost_env();
        all_env.extend(env);
        let mut outpost = Binary::spawn_env(o, &all_env);
        outpost.wait_ping().await;
        let s = Setup {
            fa,
            outpost,
            echo,
            other,
            proxied,
            fwd,
            providers,
            hosts,
        };
        s.wait_serving().await;
        s
    }

    /// Waits until the configuration arrived (503 before) and the proxied application sends
    /// anonymous visitors to the login.
    async fn wait_serving(&self) {
        let b = self.browser();
        let deadline = Instant::now() + Duration::from_secs(15);
        while b.get(&self.url(PROXIED, "/")).await.status != 302 {
            assert!(Instant::now() < deadline, "outpost never served {PROXIED}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn port(&self) -> u16 {
        self.outpost.addr.port()
    }

    /// `http://<host>:<outpost port><path>`.
    fn url(&self, host: &str, path: &str) -> String {
        format!("http://{host}:{}{path}", self.port())
    }

    /// A browser that finds every application's host at the outpost.
    fn browser(&self) -> Browser {
        let port = self.port();
        let hosts: Vec<(&str, u16)> = self.hosts.iter().map(|h| (h.as_str(), port)).collect();
        Browser::new(&hosts)
    }

    /// A browser logged in as `user` through `host`, and the page it landed on after the login
    /// that opening `path` started.
    async fn logged_in(&self, user: &str, host: &str, path: &str) -> (Browser, Page) {
        let b = self.browser();
        let page = b
            .login(&self.url(host, path), user, &format!("{user}-password"))
            .await;
        (b, page)
    }

    /// An access token of `user` at the provider `pk`, as authentik issues them.
    fn bearer(&self, pk: i64, user: &str) -> String {
        format!("Bearer {}", self.fa.issue_tokens(pk, user).access_token)
    }
}

fn no_more_providers(_: u16) -> Vec<ProviderSpec> {
    vec![]
}

/// The names of the request headers the upstream received.
fn echoed_names(p: &Page) -> Vec<String> {
    p.json()["headers"]
        .as_object()
        .map(|h| h.keys().cloned().collect())
        .unwrap_or_default()
}

/// authentik's `TestProxy_Redirect` and `TestProxy_Redirect_Subdirectory`: an anonymous
/// request is sent to `/start` on the application's external host (under its path), with the
/// page to return to; `/start` goes to authentik's authorize endpoint for that provider,
/// whose callback is on the application's own host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_visitors_are_sent_to_start_on_the_external_host() {
    let s = Setup::start(no_more_providers, vec![]).await;
    let port = s.port();
    let b = s.browser();
    let p = b.get(&s.url(PROXIED, "/foo")).await;
    assert_eq!(p.status, 302, "{}", p.body);
    let start = p.location().unwrap();
    assert_eq!(
        start,
        format!(
            "http://{PROXIED}:{port}/outpost.goauthentik.io/start?rd=http%3A%2F%2F{PROXIED}%3A{port}%2Ffoo"
        )
    );
    let p = b.get(&s.url(SUB_HOST, "/foo")).await;
    assert_eq!(p.status, 302, "{}", p.body);
    assert_eq!(
        p.location().unwrap(),
        format!(
            "http://{SUB_HOST}:{port}/subdir/outpost.goauthentik.io/start?rd=http%3A%2F%2F{SUB_HOST}%3A{port}%2Fsubdir%2Ffoo"
        )
    );
    let authorize = b.get(&start).await;
    assert_eq!(authorize.status, 302, "{}", authorize.body);
    let to = url::Url::parse(&authorize.location().unwrap()).unwrap();
    assert!(
        to.as_str()
            .starts_with(&format!("{}/application/o/authorize/", s.fa.url)),
        "{to}"
    );
    let q: std::collections::HashMap<_, _> = to.query_pairs().into_owned().collect();
    assert_eq!(q["client_id"], s.proxied.client_id);
    assert_eq!(q["redirect_uri"], s.proxied.redirect_uris()[0]);
    // The callback authentik registered for the provider: on the application's own host.
    assert!(q["redirect_uri"].starts_with(&s.url(PROXIED, "/outpost.goauthentik.io/callback")));
}

/// A browser logs in through a proxy-mode provider and lands on the page it asked for, served
/// by the upstream with the user's headers (§8.1, §8.2) and nothing of the outpost's own or
/// forged by the client; signing out (path or query signature) ends the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_login_sign_out_and_the_headers_the_upstream_sees() {
    let s = Setup::start(no_more_providers, vec![]).await;
    let b = s.browser();
    let wanted = s.url(PROXIED, "/dash?x=1");
    let hops = b.follow(&wanted).await;
    let urls: Vec<&str> = hops.iter().map(|p| p.url.as_str()).collect();
    assert_eq!(urls.len(), 3, "{urls:?}");
    assert!(
        urls[1].starts_with(&s.url(PROXIED, "/outpost.goauthentik.io/start?rd=")),
        "{urls:?}"
    );
    assert!(
        urls[2].starts_with(&format!("{}/application/o/authorize/", s.fa.url)),
        "{urls:?}"
    );
    let landing = b
        .submit_login(hops.into_iter().last().unwrap(), "alice", "alice-password")
        .await;
    assert_eq!(landing.status, 200, "{}", landing.body);
    assert_eq!(landing.url, wanted);
    let body = landing.json();
    assert_eq!(body["path"], "/dash");
    assert_eq!(body["query"], "x=1");
    assert_eq!(body["listener"], s.echo.addr.to_string());
    let alice = FakeUser::alice();
    for (name, want) in [
        ("x-authentik-username", "alice"),
        ("x-authentik-groups", "admins|users"),
        ("x-authentik-entitlements", "read|write"),
        ("x-authentik-email", "alice@example.test"),
        ("x-authentik-name", "Alice Liddell"),
        ("x-authentik-uid", alice.sub().as_str()),
        ("x-authentik-meta-provider", "Proxied provider"),
        ("x-authentik-meta-app", "proxied"),
        ("x-authentik-meta-outpost", "fake-outpost"),
        ("authorization", ALICE_BASIC),
        ("x-tenant", "wonderland"),
        ("x-level", "7"),
        ("x-bad", ""),
    ] {
        assert_eq!(landing.echoed(name).as_deref(), Some(want), "{name}");
    }
    let jwt = landing.echoed("x-authentik-jwt").unwrap();
    assert_eq!(jwt.split('.').count(), 3, "the access token: {jwt}");
    assert!(
        landing
            .echoed("x-authentik-meta-version")
            .unwrap()
            .starts_with("goauthentik.io/outpost/")
    );

    // The browser sends its session cookie and a cookie of the application's, and forges
    // identity headers; only the application's cookie and the real identity get through. The
    // peer is a trusted proxy by default (loopback), so its X-Forwarded-For is extended.
    b.add_cookie("theme=dark; Path=/", &s.url(PROXIED, "/"));
    let sent = b.cookies_for(&s.url(PROXIED, "/"));
    assert!(sent.contains("authentik_proxy_"), "{sent}");
    let again = b
        .get_with(
            &s.url(PROXIED, "/again"),
            &[
                ("X-authentik-username", "mallory"),
                ("X_AUTHENTIK_USERNAME", "mallory"),
                ("X-Authentik_Groups", "admins"),
                ("X-authentik-meta-app", "forged"),
                ("X-Forwarded-For", "203.0.113.7"),
            ],
        )
        .await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.echoed("cookie").as_deref(), Some("theme=dark"));
    assert_eq!(
        again.echoed("x-authentik-username").as_deref(),
        Some("alice")
    );
    assert_eq!(
        again.echoed("x-authentik-meta-app").as_deref(),
        Some("proxied")
    );
    let names = echoed_names(&again);
    assert!(names.iter().all(|n| !n.contains('_')), "{names:?}");
    assert_eq!(
        again.echoed("x-forwarded-for").as_deref(),
        Some("203.0.113.7, 127.0.0.1")
    );

    // Sign out at the path: authentik's end-session with the ID token, and the next visit is
    // anonymous again.
    let out = b
        .get(&s.url(PROXIED, "/outpost.goauthentik.io/sign_out"))
        .await;
    assert_eq!(out.status, 302, "{}", out.body);
    let end = out.location().unwrap();
    assert!(
        end.starts_with(&format!("{}/application/o/proxied/end-session/", s.fa.url)),
        "{end}"
    );
    assert_eq!(b.follow(&end).await.last().unwrap().status, 200);
    assert!(
        s.fa.end_session_hints()
            .last()
            .is_some_and(|h| h.split('.').count() == 3),
        "{:?}",
        s.fa.end_session_hints()
    );
    assert_eq!(b.get(&s.url(PROXIED, "/dash")).await.status, 302);

    // The sign-out signature works on any path of the application, and is never proxied.
    let back = b
        .login(&s.url(PROXIED, "/back"), "alice", "alice-password")
        .await;
    assert_eq!(back.json()["path"], "/back");
    let out = b
        .get(&s.url(PROXIED, "/any/page?X-authentik-logout=true"))
        .await;
    assert_eq!(out.status, 302, "{}", out.body);
    assert!(
        out.location()
            .unwrap()
            .starts_with(&format!("{}/application/o/proxied/end-session/", s.fa.url))
    );
    assert_eq!(b.get(&s.url(PROXIED, "/back")).await.status, 302);
}

/// authentik's `TestProxy_ModifyRequest` and its `_Claims` and `_Claims_Invalid` variants:
/// the upstream gets the path unchanged, the client's own `Host`, `X-Forwarded-Host` and
/// `-Proto` from the connection (a client that is no trusted proxy cannot set them); a
/// user's `backend_override` sends the request to another backend, an unparsable one is
/// ignored, and `host_header` replaces the `Host`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_request_keeps_host_and_path_and_honours_ak_proxy() {
    let untrusted = vec![(
        "AUTHENTIK_LISTEN__TRUSTED_PROXY_CIDRS",
        "192.0.2.0/24".to_string(),
    )];
    let s = Setup::start(no_more_providers, untrusted).await;
    let client_host = format!("{PROXIED}:{}", s.port());
    let (alice, landing) = s.logged_in("alice", PROXIED, "/foo?a=1&b=%2F").await;
    assert_eq!(landing.status, 200, "{}", landing.body);
    let forged = alice
        .get_with(
            &s.url(PROXIED, "/foo/bar?a=1"),
            &[
                ("X-Forwarded-Host", "evil.example"),
                ("X-Forwarded-Proto", "https"),
                ("X-Forwarded-For", "203.0.113.7"),
                ("Forwarded", "for=203.0.113.7;proto=https"),
                ("X-Real-IP", "203.0.113.7"),
            ],
        )
        .await;
    for p in [&landing, &forged] {
        assert_eq!(p.json()["listener"], s.echo.addr.to_string());
        assert_eq!(p.echoed("host").as_deref(), Some(client_host.as_str()));
        assert_eq!(
            p.echoed("x-forwarded-host").as_deref(),
            Some(client_host.as_str())
        );
        assert_eq!(p.echoed("x-forwarded-proto").as_deref(), Some("http"));
        assert_eq!(p.echoed("x-forwarded-for").as_deref(), Some("127.0.0.1"));
        assert_eq!(p.echoed("x-real-ip").as_deref(), Some("127.0.0.1"));
        assert_eq!(p.echoed("forwarded"), None);
    }
    assert_eq!(landing.json()["path"], "/foo");
    assert_eq!(landing.json()["query"], "a=1&b=%2F");
    assert_eq!(forged.json()["path"], "/foo/bar");

    let (_, bob) = s.logged_in("bob", PROXIED, "/foo").await;
    assert_eq!(bob.status, 200, "{}", bob.body);
    assert_eq!(bob.json()["listener"], s.other.addr.to_string());
    assert_eq!(bob.json()["path"], "/foo");
    assert_eq!(bob.echoed("host").as_deref(), Some(client_host.as_str()));
    assert_eq!(bob.echoed("x-authentik-username").as_deref(), Some("bob"));

    let (_, carol) = s.logged_in("carol", PROXIED, "/foo").await;
    assert_eq!(carol.status, 200, "{}", carol.body);
    assert_eq!(carol.json()["listener"], s.echo.addr.to_string());
    assert_eq!(carol.echoed("host").as_deref(), Some(client_host.as_str()));

    let (_, dave) = s.logged_in("dave", PROXIED, "/foo").await;
    assert_eq!(dave.status, 200, "{}", dave.body);
    assert_eq!(dave.json()["listener"], s.echo.addr.to_string());
    assert_eq!(
        dave.echoed("host").as_deref(),
        Some("internal.example.test")
    );
    assert_eq!(
        dave.echoed("x-forwarded-host").as_deref(),
        Some(client_host.as_str())
    );
}

/// Header authentication (§7): a Bearer token, or Basic with an app password or with
/// `goauthentik.io/token` and a token, lets the request through, and the client's
/// `Authorization` never reaches the upstream (only alice's injected Basic does). A cookie
/// session leaves an `Authorization` of the application's alone. Credentials that
/// authenticate nobody get the 401 page with "Receive header authentication", else the login.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_authentication_is_consumed_by_the_outpost() {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let s = Setup::start(no_more_providers, vec![]).await;
    let pk = s.proxied.pk;
    let carol_bearer = s.bearer(pk, "carol");
    let carol_token = carol_bearer.trim_start_matches("Bearer ");
    let url = s.url(PROXIED, "/api/items");
    for authz in [
        carol_bearer.clone(),
        // The same header again: answered from the outpost's header cache, still consumed.
        carol_bearer.clone(),
        format!("Basic {}", b64("carol:carol-app-password")),
        format!(
            "Basic {}",
            b64(&format!("goauthentik.io/token:{carol_token}"))
        ),
    ] {
        let p = s
            .browser()
            .get_with(&url, &[("Authorization", authz.as_str())])
            .await;
        assert_eq!(p.status, 200, "{authz}: {}", p.body);
        assert_eq!(p.json()["path"], "/api/items");
        assert_eq!(p.echoed("x-authentik-username").as_deref(), Some("carol"));
        assert_eq!(p.echoed("authorization"), None, "{authz}");
        // As with authentik, the header's session is stored in a cookie too.
        assert!(
            p.set_cookies()
                .iter()
                .any(|c| c.starts_with("authentik_proxy_")),
            "{:?}",
            p.set_cookies()
        );
    }
    let p = s
        .browser()
        .get_with(
            &s.url(LAX_HOST, "/api/items"),
            &[("Authorization", s.bearer(2, "carol").as_str())],
        )
        .await;
    assert_eq!(p.status, 200, "{}", p.body);
    assert_eq!(p.json()["path"], "/api/items");
    assert_eq!(p.echoed("authorization"), None);
    // alice's attributes make a Basic header for the upstream: it replaces her token.
    let p = s
        .browser()
        .get_with(&url, &[("Authorization", s.bearer(pk, "alice").as_str())])
        .await;
    assert_eq!(p.status, 200, "{}", p.body);
    assert_eq!(p.echoed("authorization").as_deref(), Some(ALICE_BASIC));

    // Logged in by cookie, the application's own Authorization is the application's.
    let (carol, _) = s.logged_in("carol", PROXIED, "/").await;
    let p = carol
        .get_with(&url, &[("Authorization", "Bearer app-specific")])
        .await;
    assert_eq!(p.status, 200, "{}", p.body);
    assert_eq!(p.echoed("x-authentik-username").as_deref(), Some("carol"));
    assert_eq!(
        p.echoed("authorization").as_deref(),
        Some("Bearer app-specific")
    );

    for bad in [
        "Bearer not-a-token".to_string(),
        format!("Basic {}", b64("carol:wrong")),
        // A token of another provider.
        s.bearer(s.fwd.pk, "carol"),
    ] {
        let p = s
            .browser()
            .get_with(&url, &[("Authorization", bad.as_str())])
            .await;
        assert_eq!(p.status, 401, "{bad}: {}", p.body);
        assert!(p.location().is_none());
        assert!(p.body.contains("Unauthenticated"), "{}", p.body);
        assert!(
            p.body.contains("Receive header authentication"),
            "{}",
            p.body
        );
        let p = s
            .browser()
            .get_with(
                &s.url(LAX_HOST, "/api/items"),
                &[("Authorization", bad.as_str())],
            )
            .await;
        assert_eq!(p.status, 302, "{bad}: {}", p.body);
        assert!(
            p.location()
                .unwrap()
                .starts_with(&s.url(LAX_HOST, "/outpost.goauthentik.io/start?rd=")),
            "{:?}",
            p.location()
        );
    }
}

/// `skip_path_regex` (§9.1): an anonymous request for a skipped path is proxied without any
/// identity header (forged ones included); a logged-in user still gets hers there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skipped_paths_are_proxied_anonymously() {
    let s = Setup::start(no_more_providers, vec![]).await;
    let p = s
        .browser()
        .get_with(
            &s.url(PROXIED, "/public/logo.png?v=2"),
            &[
                ("X-authentik-username", "mallory"),
                ("X_AUTHENTIK_UID", "0"),
                ("Authorization", "Bearer not-a-token"),
            ],
        )
        .await;
    assert_eq!(p.status, 200, "{}", p.body);
    assert_eq!(p.json()["path"], "/public/logo.png");
    assert_eq!(p.json()["query"], "v=2");
    let names = echoed_names(&p);
    assert!(
        names
            .iter()
            .all(|n| !n.starts_with("x-authentik-") && !n.contains('_')),
        "{names:?}"
    );
    // Not skipped: the login.
    let p = s.browser().get(&s.url(PROXIED, "/private/public/x")).await;
    assert_eq!(p.status, 302);

    let (alice, _) = s.logged_in("alice", PROXIED, "/").await;
    let p = alice.get(&s.url(PROXIED, "/public/logo.png")).await;
    assert_eq!(p.status, 200, "{}", p.body);
    assert_eq!(p.echoed("x-authentik-username").as_deref(), Some("alice"));
}

/// `internal_host_ssl_validation` (§9.2): an HTTPS upstream's certificate is checked against
/// the outpost's trust store (here a private CA in `SSL_CERT_FILE`); one from an unknown CA
/// is a 502 page (the error itself only for superusers), unless the provider turns the
/// check off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_certificates_are_checked_unless_the_provider_says_not_to() {
    let trusted_ca = PrivateCa::new();
    let unknown_ca = PrivateCa::new();
    let trusted = EchoApp::start_tls(trusted_ca.server_config()).await;
    let unknown = EchoApp::start_tls(unknown_ca.server_config()).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &trusted_ca.ca_pem).unwrap();
    let (t, u) = (trusted.addr, unknown.addr);
    let s = Setup::start(
        move |port| {
            let app = |pk, slug: &str, upstream: SocketAddr| {
                ProviderSpec::proxy(
                    pk,
                    slug,
                    &format!("http://{slug}.example.test:{port}"),
                    &format!("https://{upstream}"),
                )
            };
            let mut unverified = app(12, "unverified", u);
            unverified.internal_host_ssl_validation = false;
            vec![app(10, "verified", t), app(11, "refused", u), unverified]
        },
        vec![("SSL_CERT_FILE", ca_file.display().to_string())],
    )
    .await;
    let get = |slug: &'static str, pk: i64, user: &'static str| {
        let url = s.url(&format!("{slug}.example.test"), "/tls");
        let authz = s.bearer(pk, user);
        let b = s.browser();
        async move { b.get_with(&url, &[("Authorization", authz.as_str())]).await }
    };
    let p = get("verified", 10, "alice").await;
    assert_eq!(p.status, 200, "{}", p.body);
    assert_eq!(p.json()["listener"], trusted.addr.to_string());
    assert_eq!(p.json()["path"], "/tls");

    let p = get("unverified", 12, "alice").await;
    assert_eq!(p.status, 200, "{}", p.body);
    assert_eq!(p.json()["listener"], unknown.addr.to_string());
    assert_eq!(p.echoed("x-authentik-username").as_deref(), Some("alice"));

    let p = get("refused", 11, "alice").await;
    assert_eq!(p.status, 502, "{}", p.body);
    assert!(p.body.contains("Bad Gateway"), "{}", p.body);
    assert!(
        p.body.contains("Failed to connect to backend."),
        "{}",
        p.body
    );
    assert!(!p.body.contains("certificate"), "{}", p.body);
    let p = get("refused", 11, "dave").await;
    assert_eq!(p.status, 502, "{}", p.body);
    assert!(
        p.body.contains("Error proxying to upstream server: "),
        "{}",
        p.body
    );
    assert!(p.body.contains("certificate"), "{}", p.body);

    // Turned off at authentik, the check stops with the next update (a new client for the
    // upstream, not the pooled one).
    let providers: Vec<ProviderSpec> = s
        .providers
        .iter()
        .cloned()
        .map(|mut p| {
            if p.slug == "refused" {
                p.internal_host_ssl_validation = false;
            }
            p
        })
        .collect();
    s.fa.set_providers(providers);
    s.fa.trigger_update().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let p = get("refused", 11, "alice").await;
        if p.status == 200 {
            assert_eq!(p.json()["listener"], unknown.addr.to_string());
            break;
        }
        assert_eq!(p.status, 502, "{}", p.body);
        assert!(Instant::now() < deadline, "the update did not apply");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A proxy-mode and a forward_single provider on one outpost: each logs in on its own host,
/// the forward_single one answers checks and proxies nothing, the proxy-mode one proxies
/// everything that is not its login (the forward-auth paths included).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_and_forward_single_providers_share_an_outpost() {
    let s = Setup::start(no_more_providers, vec![]).await;
    let host = format!("{FWD_HOST}:{}", s.port());
    let original = s.url(FWD_HOST, "/x");
    let check = |cookie: String| {
        let (host, original) = (host.clone(), original.clone());
        let addr = s.outpost.addr;
        async move { nginx_check(addr, &host, &original, &[("Cookie", &cookie)]).await }
    };
    assert_eq!(check(String::new()).await.status(), 401);
    let b = s.browser();
    let nothing = b.get(&s.url(FWD_HOST, "/x")).await;
    assert_eq!(nothing.status, 404, "{}", nothing.body);

    let landing = b
        .login(&s.url(PROXIED, "/p"), "alice", "alice-password")
        .await;
    assert_eq!(landing.status, 200, "{}", landing.body);
    assert_eq!(landing.json()["path"], "/p");
    // The forward_single application's login, on its own host (authentik remembers alice).
    let rd: String =
        url::form_urlencoded::byte_serialize(s.url(FWD_HOST, "/x").as_bytes()).collect();
    let start = s.url(FWD_HOST, &format!("/outpost.goauthentik.io/start?rd={rd}"));
    let back = b.login(&start, "alice", "alice-password").await;
    assert_eq!(back.url, s.url(FWD_HOST, "/x"));
    assert_eq!(back.status, 404);
    let r = check(b.cookies_for(&s.url(FWD_HOST, "/"))).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-authentik-username"], "alice");
    assert_eq!(r.headers()["x-authentik-meta-app"], "fwd");
    // The proxy-mode cookie is not the forward_single one.
    let r = check(b.cookies_for(&s.url(PROXIED, "/"))).await;
    assert_eq!(r.status(), 401);

    let p = b
        .get(&s.url(PROXIED, "/outpost.goauthentik.io/auth/nginx"))
        .await;
    assert_eq!(p.status, 200, "{}", p.body);
    assert_eq!(p.json()["path"], "/outpost.goauthentik.io/auth/nginx");
    assert_eq!(p.echoed("x-authentik-username").as_deref(), Some("alice"));
}
