//! Sessions across restarts and replicas, revocation, renewal, provider outages, request
//! coalescing, and configuration errors — against the real binary where processes matter.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ak_outpost::core::app::cookie_name;
use ak_outpost::core::identity::Identity;
use ak_outpost::core::seal::Sealer;
use ak_outpost::core::session::Session;
use common::nginx::{Example, Nginx, NginxVars};
use common::*;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// nginx (Plain example) in front of the outposts at `outposts`, plus the IdP.
async fn front(outposts: &[SocketAddr]) -> (echo::EchoApp, Nginx, Idp) {
    let echo = echo::EchoApp::start().await;
    let nginx = Nginx::start(
        Example::Plain,
        &NginxVars {
            outpost: outposts[0],
            app_upstream: echo.addr,
            app_host: APP_HOST.into(),
            auth_host: AUTH_HOST.into(),
            outposts: outposts.to_vec(),
        },
    );
    let idp = Idp::start(&IdpOptions::new(vec![format!(
        "{}/outpost.goauthentik.io/callback?X-authentik-auth-callback=true",
        nginx.base_url(APP_HOST)
    )]));
    (echo, nginx, idp)
}

fn yaml_for(listen: SocketAddr, nginx: &Nginx, issuer: &str, ttl: u64) -> String {
    outpost_yaml(
        listen,
        issuer,
        SECRET,
        ttl,
        &[AppCfg::single("app", nginx.base_url(APP_HOST))],
    )
}

/// A session cookie sealed like the outpost does, for an access token of our choosing.
fn forged_cookie(access_token: &str, expires_at: i64) -> String {
    let now = ak_outpost::core::token::unix_now();
    let s = Session {
        version: 1,
        identity: Identity {
            sub: "alice".into(),
            username: "alice".into(),
            ..Default::default()
        },
        access_token: access_token.into(),
        access_expires_at: expires_at,
        access_issued_at: now,
        refresh_token: None,
        id_token: None,
        expires_at,
    };
    let name = cookie_name(CLIENT_ID);
    let sealed = Sealer::new(SECRET.as_bytes(), "session")
        .seal(name.as_bytes(), &serde_json::to_vec(&s).unwrap());
    format!("{name}={sealed}")
}

async fn direct_check(outpost: SocketAddr, nginx: &Nginx, cookie: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!(
            "http://{outpost}/outpost.goauthentik.io/auth/nginx"
        ))
        .header("Host", APP_HOST)
        .header("X-Original-URL", format!("{}/x", nginx.base_url(APP_HOST)))
        .header("Cookie", cookie)
        .send()
        .await
        .expect("auth check")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_the_session() {
    let o = addr(free_port());
    let (_echo, nginx, idp) = front(&[o]).await;
    let yaml = yaml_for(o, &nginx, &idp.issuer, 60);
    let mut first = Binary::start(o, &yaml).await;
    wait_ready(o).await;
    let b = Browser::new(&[(APP_HOST, nginx.port)]);
    let url = format!("{}/before", nginx.base_url(APP_HOST));
    let page = b.login(&url, "alice", "alice-password").await;
    assert_eq!(page.status, 200);

    let status = first.stop();
    assert!(
        status.success(),
        "SIGTERM should end the outpost cleanly: {status}"
    );
    let down = b
        .get(&format!("{}/while-down", nginx.base_url(APP_HOST)))
        .await;
    assert_ne!(
        down.status, 200,
        "nothing may pass while the outpost is down"
    );

    let config = first.config.clone();
    let mut second = Binary::spawn(o, &config);
    second.wait_ping().await;
    wait_ready(o).await;
    let after = b.get(&format!("{}/after", nginx.base_url(APP_HOST))).await;
    assert_eq!(
        after.status, 200,
        "session must survive a restart: {}",
        after.body
    );
    assert_eq!(
        after.echoed("x-authentik-username").as_deref(),
        Some("alice")
    );
    drop(first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_outposts_share_sessions() {
    let (a, c) = (addr(free_port()), addr(free_port()));
    let (_echo, nginx, idp) = front(&[a, c]).await;
    let _one = Binary::start(a, &yaml_for(a, &nginx, &idp.issuer, 60)).await;
    let _two = Binary::start(c, &yaml_for(c, &nginx, &idp.issuer, 60)).await;
    wait_ready(a).await;
    wait_ready(c).await;
    let b = Browser::new(&[(APP_HOST, nginx.port)]);
    let page = b
        .login(
            &format!("{}/start-here", nginx.base_url(APP_HOST)),
            "alice",
            "alice-password",
        )
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    // Through nginx (round robin over both) every request passes...
    for i in 0..8 {
        let p = b.get(&format!("{}/n/{i}", nginx.base_url(APP_HOST))).await;
        assert_eq!(p.status, 200, "request {i}");
    }
    // ...and each outpost on its own accepts the cookie the other may have minted.
    let cookie = b.cookies_for(&nginx.base_url(APP_HOST));
    for o in [a, c] {
        let r = direct_check(o, &nginx, &cookie).await;
        assert_eq!(r.status(), 200, "outpost {o}");
        assert_eq!(r.headers()["x-authentik-username"], "alice");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_at_the_idp_takes_effect_within_the_ttl() {
    let s = Stack::start(StackOptions {
        cache_ttl: 1,
        ..Default::default()
    })
    .await;
    assert_eq!(s.login("/", &alice()).await.status, 200);
    assert_eq!(s.browser.get(&s.app_url("/cached")).await.status, 200);
    assert!(s.idp.revoke_user("alice").await > 0);
    let revoked_at = Instant::now();
    loop {
        let p = s.browser.get(&s.app_url("/poll")).await;
        if p.status == 302 {
            break;
        }
        assert_eq!(p.status, 200);
        assert!(
            revoked_at.elapsed() < Duration::from_secs(4),
            "still allowed {:?} after revocation with a 1 s TTL",
            revoked_at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_tokens_are_renewed_with_the_refresh_token() {
    let s = Stack::start(StackOptions {
        access_token_ttl: 4,
        ..Default::default()
    })
    .await;
    assert_eq!(s.login("/", &alice()).await.status, 200);
    let cookie_before = s.browser.cookies_for(&s.app_url("/"));
    s.idp.reset_stats().await;
    // Past the access token's expiry the session still works: it was renewed.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let p = s.browser.get(&s.app_url("/later")).await;
    assert_eq!(p.status, 200, "{}", p.body);
    assert_eq!(p.echoed("x-authentik-username").as_deref(), Some("alice"));
    let stats = s.idp.stats().await;
    assert_eq!(stats["token_requests"], 1, "one refresh grant: {stats}");
    let cookie_after = s.browser.cookies_for(&s.app_url("/"));
    assert_ne!(
        cookie_before, cookie_after,
        "the renewed session must be stored in the browser"
    );
    // The renewed cookie works on its own, without another refresh.
    let p = s.browser.get(&s.app_url("/again")).await;
    assert_eq!(p.status, 200);
    assert_eq!(s.idp.stats().await["token_requests"], 1);

    // Once the IdP revokes the grant, renewal fails and the user must log in again.
    assert!(s.idp.revoke_user("alice").await > 0);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let p = s.browser.get(&s.app_url("/after-revoke")).await;
    assert_eq!(p.status, 302, "{}", p.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_outage_at_start_is_a_503_not_a_loop_or_a_pass() {
    let idp_port = free_port();
    let o = addr(free_port());
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
    let issuer = format!("http://127.0.0.1:{idp_port}");
    let _outpost = Binary::start(o, &yaml_for(o, &nginx, &issuer, 60)).await;
    let c = reqwest::Client::new();
    let ready = c
        .get(format!("http://{o}/outpost.goauthentik.io/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503, "not ready without the provider");
    let ping = c
        .get(format!("http://{o}/outpost.goauthentik.io/ping"))
        .send()
        .await
        .unwrap();
    assert_eq!(ping.status(), 204, "alive without the provider");

    // A session cookie cannot be verified: 503, never 200.
    let now = ak_outpost::core::token::unix_now();
    let r = direct_check(o, &nginx, &forged_cookie("some-token", now + 3600)).await;
    assert_eq!(r.status(), 503);
    // A browser without a session reaches /start, which cannot send it anywhere: 503 page.
    let b = Browser::new(&[(APP_HOST, nginx.port)]);
    let pages = b.follow(&format!("{}/x", nginx.base_url(APP_HOST))).await;
    assert_eq!(pages.last().unwrap().status, 503, "{:?}", pages.last());

    // The provider comes up: the outpost finds it and logins work.
    let mut opts = IdpOptions::new(vec![format!(
        "{}/outpost.goauthentik.io/callback?X-authentik-auth-callback=true",
        nginx.base_url(APP_HOST)
    )]);
    opts.port = idp_port;
    let idp = Idp::start(&opts);
    assert_eq!(idp.issuer, issuer);
    wait_ready(o).await;
    let page = b
        .login(
            &format!("{}/x", nginx.base_url(APP_HOST)),
            "alice",
            "alice-password",
        )
        .await;
    assert_eq!(page.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_checks_of_one_new_token_make_one_introspection_call() {
    let s = Stack::start(StackOptions::default()).await;
    assert_eq!(s.login("/", &alice()).await.status, 200);
    let cookie = s.browser.cookies_for(&s.app_url("/"));
    // A second outpost with an empty cache, same secret and provider.
    let listener = InProcess::bind();
    let a = listener.local_addr().unwrap();
    let fresh = InProcess::serve(
        listener,
        &outpost_yaml(
            a,
            &s.idp.issuer,
            SECRET,
            60,
            &[AppCfg::single("app", s.app_url(""))],
        ),
    )
    .await;
    s.idp.reset_stats().await;
    s.idp.set_delay(300).await;
    let c = reqwest::Client::builder()
        .pool_max_idle_per_host(1000)
        .build()
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..1000 {
        let c = c.clone();
        let cookie = cookie.clone();
        let url = s.app_url("/x");
        tasks.push(tokio::spawn(async move {
            c.get(format!("http://{a}/outpost.goauthentik.io/auth/nginx"))
                .header("Host", APP_HOST)
                .header("X-Original-URL", url)
                .header("Cookie", cookie)
                .send()
                .await
                .map(|r| r.status().as_u16())
        }));
    }
    let mut ok = 0;
    for t in tasks {
        if t.await.unwrap().unwrap() == 200 {
            ok += 1;
        }
    }
    s.idp.set_delay(0).await;
    assert_eq!(ok, 1000);
    let stats = s.idp.stats().await;
    assert_eq!(stats["introspection_requests"], 1, "{stats}");
    drop(fresh);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distinct_invalid_tokens_respect_the_concurrency_limit() {
    let s = Stack::start(StackOptions::default()).await;
    let listener = InProcess::bind();
    let a = listener.local_addr().unwrap();
    let yaml = outpost_yaml(
        a,
        &s.idp.issuer,
        SECRET,
        60,
        &[AppCfg::single("app", s.app_url(""))],
    )
    .replace(
        "  introspection_cache_ttl: 60\n",
        // The budget for unknown tokens (tests/abuse.rs) is off: this is about concurrency.
        "  introspection_cache_ttl: 60\n  max_concurrent_introspections: 4\n  new_token_checks_per_second: 0\n",
    );
    assert!(yaml.contains("max_concurrent_introspections: 4"));
    let _limited = InProcess::serve(listener, &yaml).await;
    s.idp.reset_stats().await;
    s.idp.set_delay(20).await;
    let now = ak_outpost::core::token::unix_now();
    let c = reqwest::Client::new();
    let mut tasks = Vec::new();
    for i in 0..1000 {
        let c = c.clone();
        let cookie = forged_cookie(&format!("not-a-real-token-{i}"), now + 3600);
        let url = s.app_url("/x");
        tasks.push(tokio::spawn(async move {
            c.get(format!("http://{a}/outpost.goauthentik.io/auth/nginx"))
                .header("Host", APP_HOST)
                .header("X-Original-URL", url)
                .header("Cookie", cookie)
                .send()
                .await
                .map(|r| r.status().as_u16())
        }));
    }
    for t in tasks {
        assert_eq!(
            t.await.unwrap().unwrap(),
            401,
            "an unknown token is not authenticated"
        );
    }
    s.idp.set_delay(0).await;
    let stats = s.idp.stats().await;
    assert_eq!(stats["introspection_requests"], 1000, "{stats}");
    let max = stats["introspection_max_in_flight"].as_u64().unwrap();
    assert!((1..=4).contains(&max), "max in flight {max}: {stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_config_exits_64_listing_every_problem_before_binding() {
    // The port is taken: if the binary tried to bind first it would fail differently.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        format!(
            "listen: {{http: \"127.0.0.1:{port}\"}}\nsecret: short\nprovider: {{issuer: \"not a url\", client_id: x}}\napplications:\n  - name: a\n    external_host: \"ftp://a\"\n    mode: sideways\n  - name: p\n    external_host: \"https://p.example.com\"\n    mode: proxy\n"
        ),
    )
    .unwrap();
    let out = std::process::Command::new(binary_path())
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "secret: too short",
        "provider.issuer",
        "provider.client_secret: missing",
        "external_host 'ftp://a'",
        "mode 'sideways'",
        "applications[1] (p): mode 'proxy' needs an upstream",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_config_examples_are_valid() {
    for f in [
        "config/outpost.yaml",
        "config/domain-level.yaml",
        "config/proxy-mode.yaml",
    ] {
        let out = std::process::Command::new(binary_path())
            .args(["--check-config", "--config", f])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env(
                "AK_OUTPOST_SECRET",
                "example-secret-for-config-validation-only-0123",
            )
            .env("AK_OUTPOST_CLIENT_SECRET", "example-client-secret")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{f}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_file_and_rejects_a_bad_one() {
    let idp = Idp::start(&IdpOptions::new(vec!["http://a.example.test/cb".into()]));
    let o = addr(free_port());
    let apps = |n: usize| -> Vec<AppCfg> {
        (1..=n)
            .map(|i| AppCfg::single(&format!("app{i}"), format!("http://app{i}.example.test")))
            .collect()
    };
    let mut b = Binary::start(o, &outpost_yaml(o, &idp.issuer, SECRET, 60, &apps(2))).await;
    wait_ready(o).await;
    let status = |host: &'static str| async move {
        reqwest::Client::new()
            .get(format!("http://{o}/outpost.goauthentik.io/auth/nginx"))
            .header("Host", host)
            .header("X-Original-URL", format!("http://{host}/"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(status("app3.example.test").await, 400, "not configured yet");
    let hup = |pid: u32| {
        std::process::Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .unwrap()
    };
    std::fs::write(
        &b.config,
        outpost_yaml(o, &idp.issuer, SECRET, 60, &apps(3)),
    )
    .unwrap();
    assert!(hup(b.child.id()).success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while status("app3.example.test").await != 401 {
        assert!(Instant::now() < deadline, "reload not applied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A broken file is refused; the running configuration stays.
    std::fs::write(&b.config, "secret: short\napplications: []\n").unwrap();
    assert!(hup(b.child.id()).success());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        b.child.try_wait().unwrap().is_none(),
        "a bad reload must not stop the outpost"
    );
    assert_eq!(status("app3.example.test").await, 401);
    assert_eq!(status("app1.example.test").await, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_listener_serves_prometheus_text_ping_and_readiness() {
    let idp = Idp::start(&IdpOptions::new(vec!["http://a.example.test/cb".into()]));
    let o = addr(free_port());
    let m = addr(free_port());
    let yaml = outpost_yaml(
        o,
        &idp.issuer,
        SECRET,
        60,
        &[
            AppCfg::single("app", "http://app.example.test".into()),
            // A second app, so that an unknown host finds none.
            AppCfg::single("other", "http://other.example.test".into()),
        ],
    )
    .replace("  metrics: \"\"\n", &format!("  metrics: \"{m}\"\n"));
    assert!(yaml.contains(&m.to_string()));
    let _b = Binary::start(o, &yaml).await;
    wait_ready(o).await;
    let c = reqwest::Client::new();
    let check = |method: &[u8], host: &str| {
        c.request(
            reqwest::Method::from_bytes(method).unwrap(),
            format!("http://{o}/outpost.goauthentik.io/auth/nginx"),
        )
        .header("Host", host)
        .header("X-Original-URL", format!("http://{host}/x"))
        .send()
    };
    for _ in 0..3 {
        assert_eq!(
            check(b"GET", "app.example.test").await.unwrap().status(),
            401
        );
    }
    // Label values stay bounded: an unknown host counts under host="", an unusual method as
    // OTHER.
    let r = check(b"GET", "random-1234.example.test").await.unwrap();
    assert_eq!(r.status(), 400);
    let r = check(b"PROPFIND", "app.example.test").await.unwrap();
    assert_eq!(r.status(), 401);
    let ping = c
        .head(format!("http://{m}/outpost.goauthentik.io/ping"))
        .send()
        .await
        .unwrap();
    assert_eq!(ping.status(), 204);
    let ready = c
        .get(format!("http://{m}/outpost.goauthentik.io/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let text = c
        .get(format!("http://{m}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = |needle: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with(needle))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {needle} in:\n{text}"))
    };
    // authentik's label set: outpost_name, method, host (the app's external host), type.
    let series = |method: &str, host: &str, ty: &str| {
        format!("{{outpost_name=\"ak-outpost\",method=\"{method}\",host=\"{host}\",type=\"{ty}\"")
    };
    let app_get = series("GET", "app.example.test", "app");
    let metric = "authentik_outpost_proxy_request_duration_seconds";
    let count = line(&format!("{metric}_count{app_get}}}"));
    let inf = line(&format!("{metric}_bucket{app_get},le=\"+Inf\"}}"));
    let first = line(&format!("{metric}_bucket{app_get},le=\"0.005\"}}"));
    assert_eq!(count, 3, "{text}");
    assert_eq!(inf, count);
    assert!(first <= inf, "buckets are cumulative");
    let other = series("OTHER", "app.example.test", "app");
    assert_eq!(line(&format!("{metric}_count{other}}}")), 1, "{text}");
    // The unknown host and the outpost's own endpoints (/ready while starting) count under
    // host="".
    assert!(line(&format!("{metric}_count{}}}", series("GET", "", "app"))) >= 1);
    assert!(!text.contains("random-1234"), "{text}");
    assert_eq!(
        line(&format!("{metric}_count{}}}", series("HEAD", "", "ping"))),
        1,
        "{text}"
    );
    assert_eq!(line("ak_outpost_provider_ready"), 1);
}
