//! authentik mode: the real binary configured only by AUTHENTIK_HOST / AUTHENTIK_TOKEN against
//! a fake authentik server (API, websocket, OAuth2 endpoints at authentik's paths), behind real
//! nginx.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::fake_authentik::{FakeAuthentik, FakeUser, ProviderSpec};
use common::nginx::{Example, Nginx, NginxVars};
use common::*;

fn addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// Waits until the outpost answers auth checks for `host` (not 503, not 400).
async fn wait_serving(o: SocketAddr, host: &str) {
    let c = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = c
            .get(format!("http://{o}/outpost.goauthentik.io/auth/nginx"))
            .header("Host", host)
            .header("X-Original-URL", format!("http://{host}/"))
            .send()
            .await;
        if let Ok(r) = r
            && r.status() == 401
        {
            return;
        }
        assert!(Instant::now() < deadline, "outpost never served {host}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct Setup {
    _echo: echo::EchoApp,
    nginx: Nginx,
    fa: FakeAuthentik,
    outpost: Binary,
    app: ProviderSpec,
}

impl Setup {
    async fn start(example: Example, extra: Vec<ProviderSpec>) -> Setup {
        let o = addr();
        let echo = echo::EchoApp::start().await;
        let nginx = Nginx::start(
            example,
            &NginxVars {
                outpost: o,
                app_upstream: echo.addr,
                app_host: APP_HOST.into(),
                auth_host: AUTH_HOST.into(),
                outposts: vec![],
            },
        );
        let app = if example == Example::DomainLevel {
            let mut p = ProviderSpec::forward_domain(
                1,
                "domain",
                &nginx.base_url(AUTH_HOST),
                "example.test",
            );
            p.name = "Domain provider".into();
            p
        } else {
            let mut p = ProviderSpec::forward_single(1, "grafana", &nginx.base_url(APP_HOST));
            p.name = "Grafana provider".into();
            p.skip_path_regex = "^/public/\n(broken".into();
            p.basic_auth_enabled = true;
            p.basic_auth_user_attribute = "username".into();
            p.basic_auth_password_attribute = "password".into();
            p
        };
        let mut providers = vec![app.clone()];
        providers.extend(extra);
        let fa = FakeAuthentik::start(providers, vec![FakeUser::alice()]).await;
        let mut outpost = Binary::spawn_env(o, &fa.outpost_env());
        outpost.wait_ping().await;
        let host = if example == Example::DomainLevel {
            AUTH_HOST
        } else {
            APP_HOST
        };
        wait_serving(o, host).await;
        Setup {
            _echo: echo,
            nginx,
            fa,
            outpost,
            app,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.nginx.base_url(APP_HOST))
    }

    fn browser(&self) -> Browser {
        Browser::new(&[(APP_HOST, self.nginx.port), (AUTH_HOST, self.nginx.port)])
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_in_login_through_nginx_with_authentik_headers() {
    let s = Setup::start(Example::Plain, vec![]).await;
    // The API was used the way authentik's outpost uses it.
    let reqs = s.fa.api_requests();
    assert!(
        reqs.iter()
            .any(|(m, p, _)| m == "GET" && p.starts_with("/api/v3/outposts/instances/")),
        "{reqs:?}"
    );
    for (_, p, h) in reqs
        .iter()
        .filter(|(_, p, _)| p.starts_with("/api/v3/outposts/"))
    {
        assert_eq!(
            h.get("authorization").and_then(|v| v.to_str().ok()),
            Some(format!("Bearer {}", s.fa.token).as_str()),
            "{p}"
        );
        let ua = h
            .get("user-agent")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        assert!(ua.starts_with("goauthentik.io/outpost/"), "{ua}");
    }
    assert!(
        reqs.iter()
            .any(|(_, p, _)| p.contains("/api/v3/outposts/proxy/?page=1&page_size=100"))
    );

    let b = s.browser();
    let first = b.get(&s.url("/dash?x=1")).await;
    assert_eq!(first.status, 302);
    let page = b
        .login(&s.url("/dash?x=1"), "alice", "alice-password")
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(page.json()["path"], "/dash");
    assert_eq!(page.json()["query"], "x=1");
    assert_eq!(
        page.echoed("x-authentik-username").as_deref(),
        Some("alice")
    );
    assert_eq!(
        page.echoed("x-authentik-groups").as_deref(),
        Some("admins|users")
    );
    assert_eq!(
        page.echoed("x-authentik-entitlements").as_deref(),
        Some("read|write")
    );
    assert_eq!(
        page.echoed("x-authentik-email").as_deref(),
        Some("alice@example.test")
    );
    assert_eq!(
        page.echoed("x-authentik-name").as_deref(),
        Some("Alice Liddell")
    );
    assert_eq!(
        page.echoed("x-authentik-uid"),
        Some(FakeUser::alice().sub())
    );
    assert_eq!(
        page.echoed("x-authentik-meta-provider").as_deref(),
        Some("Grafana provider")
    );
    assert_eq!(
        page.echoed("x-authentik-meta-app").as_deref(),
        Some("grafana")
    );
    let jwt = page.echoed("x-authentik-jwt").unwrap();
    assert_eq!(jwt.split('.').count(), 3, "the access token JWT: {jwt}");
    assert!(
        page.echoed("x-authentik-meta-version")
            .unwrap()
            .starts_with("goauthentik.io/outpost/")
    );

    // Direct check: Basic credentials from user attributes and additionalHeaders.
    let cookie = b.cookies_for(&s.url("/"));
    let r = reqwest::Client::new()
        .get(format!(
            "http://{}/outpost.goauthentik.io/auth/nginx",
            s.outpost.addr
        ))
        .header("Host", APP_HOST)
        .header("X-Original-URL", s.url("/x"))
        .header("Cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["authorization"],
        "Basic YWxpY2UtYmFzaWM6czNjcmV0"
    ); // alice-basic:s3cret
    assert_eq!(r.headers()["x-tenant"], "wonderland");
    assert_eq!(r.headers()["x-level"], "7");
    assert_eq!(r.headers()["x-bad"], "");

    // Skip paths from the provider (the broken line is ignored, not fatal).
    let p = b.get(&s.url("/public/logo.png")).await;
    assert_eq!(p.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_websocket_hello_and_live_updates() {
    let others: Vec<ProviderSpec> = (2..=4)
        .map(|i| {
            ProviderSpec::forward_single(
                i,
                &format!("app{i}"),
                &format!("http://app{i}.example.test"),
            )
        })
        .collect();
    let s = Setup::start(Example::Plain, others).await;
    // HELLO with authentik's keys, over a websocket that carries the token and instance uuid.
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.fa.hellos().is_empty() {
        assert!(Instant::now() < deadline, "no HELLO");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let hello = &s.fa.hellos()[0];
    for k in [
        "version",
        "buildHash",
        "uuid",
        "golangVersion",
        "opensslEnabled",
        "opensslVersion",
        "fipsEnabled",
    ] {
        assert!(hello.get(k).is_some(), "HELLO lacks {k}: {hello}");
    }
    let (path, headers) = &s.fa.ws_requests()[0];
    assert!(
        path.starts_with(&format!(
            "/ws/outpost/{}/?instance_uuid=",
            s.fa.outpost_pk()
        )),
        "{path}"
    );
    assert_eq!(headers["authorization"], format!("Bearer {}", s.fa.token));

    // Four providers at one per page: the refresh walks every page.
    s.fa.set_page_size(1);
    s.fa.clear_records();
    s.fa.trigger_update().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.fa.count("/api/v3/outposts/proxy/") < 4 {
        assert!(
            Instant::now() < deadline,
            "pages not walked: {:?}",
            s.fa.api_requests()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pages: Vec<String> =
        s.fa.api_requests()
            .into_iter()
            .map(|(_, p, _)| p)
            .filter(|p| p.starts_with("/api/v3/outposts/proxy/"))
            .collect();
    for n in 1..=4 {
        assert!(
            pages.iter().any(|p| p.contains(&format!("page={n}&"))),
            "{pages:?}"
        );
    }
    for i in 2..=4 {
        wait_serving(s.outpost.addr, &format!("app{i}.example.test")).await;
    }
    // A new provider appears: TRIGGER_UPDATE makes it live without a restart.
    s.fa.set_page_size(0);
    let mut all = vec![s.app.clone()];
    all.push(ProviderSpec::forward_single(
        9,
        "late",
        "http://late.example.test",
    ));
    s.fa.set_providers(all);
    let c = reqwest::Client::new();
    let late = |c: reqwest::Client| async move {
        c.get(format!(
            "http://{}/outpost.goauthentik.io/auth/nginx",
            s.outpost.addr
        ))
        .header("Host", "late.example.test")
        .header("X-Original-URL", "http://late.example.test/")
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
    };
    assert_eq!(late(c.clone()).await, 400, "unknown before the update");
    s.fa.trigger_update().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while late(c.clone()).await != 401 {
        assert!(Instant::now() < deadline, "update not applied");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Removed providers stop being served.
    wait_serving(s.outpost.addr, APP_HOST).await;
    let status = c
        .get(format!(
            "http://{}/outpost.goauthentik.io/auth/nginx",
            s.outpost.addr
        ))
        .header("Host", "app2.example.test")
        .header("X-Original-URL", "http://app2.example.test/")
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_end_from_authentik_logs_out_at_once() {
    let s = Setup::start(Example::Plain, vec![]).await;
    let b = s.browser();
    assert_eq!(
        b.login(&s.url("/"), "alice", "alice-password").await.status,
        200
    );
    assert_eq!(b.get(&s.url("/cached")).await.status, 200);
    let sid = s.fa.session_id_of("alice").expect("sid");
    s.fa.end_session(&sid).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let p = b.get(&s.url("/after")).await;
        if p.status == 302 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "session still valid after SESSION_END"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_and_basic_header_auth() {
    let s = Setup::start(Example::Plain, vec![]).await;
    let tokens = s.fa.issue_tokens(s.app.pk, "alice");
    let url = s.url("/api");
    let check = |authz: String| {
        let url = url.clone();
        let addr = s.outpost.addr;
        async move { nginx_check(addr, APP_HOST, &url, &[("Authorization", &authz)]).await }
    };
    let r = check(format!("Bearer {}", tokens.access_token)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-authentik-username"], "alice");
    assert!(
        r.headers().get("set-cookie").is_some(),
        "header auth stores a session"
    );
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let r = check(format!("Basic {}", b64("alice:alice-app-password"))).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-authentik-email"], "alice@example.test");
    let r = check(format!(
        "Basic {}",
        b64(&format!("goauthentik.io/token:{}", tokens.access_token))
    ))
    .await;
    assert_eq!(r.status(), 200);
    for bad in [
        "Bearer not-a-token".to_string(),
        format!("Basic {}", b64("alice:wrong")),
        "Basic !!!".to_string(),
        "Negotiate abc".to_string(),
    ] {
        assert_eq!(check(bad.clone()).await.status(), 401, "{bad}");
    }
    // Revoked at authentik: the cached answer is per header value and bounded by the TTL;
    // a different token of the revoked user is refused at once.
    s.fa.revoke_user("alice");
    let fresh = s.fa.issue_tokens(s.app.pk, "alice");
    s.fa.revoke_user("alice");
    assert_eq!(
        check(format!("Bearer {}", fresh.access_token))
            .await
            .status(),
        401
    );
}

/// A reverse proxy that sends no original URL is reported to authentik's event log (§9.4), as
/// authentik's outpost does: a `configuration_error` event naming outpost, provider and proxy,
/// with the request's headers except credentials; at most one per application per minute, and
/// the check itself is a 500, never a pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misconfigured_proxies_are_reported_to_the_event_log() {
    let s = Setup::start(Example::Plain, vec![]).await;
    s.fa.clear_records();
    for _ in 0..3 {
        let r = reqwest::Client::new()
            .get(format!(
                "http://{}/outpost.goauthentik.io/auth/nginx",
                s.outpost.addr
            ))
            .header("Host", APP_HOST)
            .header("Cookie", "authentik_proxy_x=secret-session")
            .header("Authorization", "Bearer secret-token")
            .header("X-Test", "1")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 500);
        assert_eq!(r.text().await.unwrap().trim(), "configuration error");
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while s.fa.events().is_empty() {
        assert!(Instant::now() < deadline, "no event reached authentik");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let events = s.fa.events();
    assert_eq!(
        events.len(),
        1,
        "one report per application per minute: {events:#?}"
    );
    let e = &events[0];
    assert_eq!(e["action"], "configuration_error");
    assert_eq!(e["app"], "authentik.providers.proxy");
    assert_eq!(e["client_ip"], "127.0.0.1");
    let c = &e["context"];
    assert_eq!(
        c["message"],
        format!(
            "Outpost fake-outpost (Provider {}) failed to detect a forward URL from nginx",
            s.app.name
        )
    );
    assert_eq!(c["provider"], s.app.name.as_str());
    assert_eq!(c["outpost"], "fake-outpost");
    assert_eq!(c["url"], "/outpost.goauthentik.io/auth/nginx");
    assert_eq!(c["headers"]["x-test"], "1");
    assert_eq!(c["headers"]["host"], APP_HOST);
    assert_eq!(c["headers"]["cookie"], "(redacted)");
    assert_eq!(c["headers"]["authorization"], "(redacted)");
    assert!(!e.to_string().contains("secret-"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_domain_one_login_for_every_host() {
    let s = Setup::start(Example::DomainLevel, vec![]).await;
    let b = s.browser();
    let page = b
        .login(&s.url("/deep/link?q=1"), "alice", "alice-password")
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(page.json()["path"], "/deep/link");
    // The cookie is for the whole domain: another host under it is logged in too.
    let cookie = b.cookies_for(&format!("http://{OTHER_HOST}:{}/", s.nginx.port));
    assert!(cookie.contains("authentik_proxy_"), "{cookie}");
    let r = reqwest::Client::new()
        .get(format!(
            "http://{}/outpost.goauthentik.io/auth/nginx",
            s.outpost.addr
        ))
        .header("Host", OTHER_HOST)
        .header("X-Original-URL", format!("http://{OTHER_HOST}/x"))
        .header("Cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-authentik-username"], "alice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_authentik_is_retried_and_restart_keeps_sessions() {
    let o = addr();
    let echo = echo::EchoApp::start().await;
    let nginx = Nginx::start(
        Example::Plain,
        &NginxVars {
            outpost: o,
            app_upstream: echo.addr,
            app_host: APP_HOST.into(),
            auth_host: AUTH_HOST.into(),
            outposts: vec![],
        },
    );
    let app = ProviderSpec::forward_single(1, "grafana", &nginx.base_url(APP_HOST));
    let fa = FakeAuthentik::start(vec![app], vec![FakeUser::alice()]).await;
    fa.set_down(true);
    let mut outpost = Binary::spawn_env(o, &fa.outpost_env());
    outpost.wait_ping().await;
    let c = reqwest::Client::new();
    let r = c
        .get(format!("http://{o}/outpost.goauthentik.io/auth/nginx"))
        .header("Host", APP_HOST)
        .header("X-Original-URL", format!("{}/x", nginx.base_url(APP_HOST)))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        503,
        "nothing is judged before the configuration arrives"
    );
    let ready = c
        .get(format!("http://{o}/outpost.goauthentik.io/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    fa.set_down(false);
    wait_serving(o, APP_HOST).await;

    let b = Browser::new(&[(APP_HOST, nginx.port)]);
    let url = format!("{}/x", nginx.base_url(APP_HOST));
    assert_eq!(b.login(&url, "alice", "alice-password").await.status, 200);
    // authentik goes away: the last configuration keeps serving (within the cache TTL).
    fa.set_down(true);
    assert_eq!(b.get(&url).await.status, 200);
    fa.set_down(false);
    // Restart: the cookie key comes from the provider's cookie_secret, so nobody is logged out.
    let _ = outpost.stop();
    let mut again = Binary::spawn_env(o, &fa.outpost_env());
    again.wait_ping().await;
    wait_serving(o, APP_HOST).await;
    assert_eq!(b.get(&url).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_environment_exits_64_with_every_problem() {
    let out = std::process::Command::new(binary_path())
        .env_clear()
        .env("AUTHENTIK_TOKEN", "")
        .env("AUTHENTIK_INSECURE", "perhaps")
        .env("AUTHENTIK_LISTEN__HTTP", "nonsense")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "AUTHENTIK_HOST not set",
        "AUTHENTIK_TOKEN is empty",
        "AUTHENTIK_INSECURE",
        "AUTHENTIK_LISTEN__HTTP",
    ] {
        assert!(err.contains(needle), "missing {needle}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_swaps_fail_no_request() {
    let s = Setup::start(Example::Plain, vec![]).await;
    let b = s.browser();
    assert_eq!(
        b.login(&s.url("/"), "alice", "alice-password").await.status,
        200
    );
    let cookie = b.cookies_for(&s.url("/"));
    let addr = s.outpost.addr;
    let url = s.url("/x");
    // The load runs until the swaps are done and seen by the outpost (at least 400 checks,
    // at most 20 s), so every swap happens while checks are in flight.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_load = Arc::clone(&stop);
    let load = tokio::spawn(async move {
        let c = reqwest::Client::new();
        let mut codes = Vec::new();
        let started = Instant::now();
        while codes.len() < 400
            || !stop_load.load(std::sync::atomic::Ordering::Relaxed)
                && started.elapsed() < Duration::from_secs(20)
        {
            let r = c
                .get(format!("http://{addr}/outpost.goauthentik.io/auth/nginx"))
                .header("Host", APP_HOST)
                .header("X-Original-URL", &url)
                .header("Cookie", &cookie)
                .send()
                .await
                .unwrap();
            codes.push(r.status().as_u16());
        }
        codes
    });
    for i in 0..5 {
        // Each update changes the provider list, so a new configuration is really built.
        let mut all = vec![s.app.clone()];
        all.push(ProviderSpec::forward_single(
            100 + i,
            &format!("extra{i}"),
            &format!("http://extra{i}.example.test"),
        ));
        s.fa.set_providers(all);
        s.fa.trigger_update().await;
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.fa.count("/api/v3/outposts/proxy/") < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let codes = load.await.unwrap();
    assert!(
        codes.iter().all(|&c| c == 200),
        "{:?}",
        codes.iter().filter(|&&c| c != 200).collect::<Vec<_>>()
    );
    assert!(
        s.fa.count("/api/v3/outposts/proxy/") >= 3,
        "refreshes happened during the load"
    );
}
