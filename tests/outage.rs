//! Identity-provider outages, against the real IdP made to fail mid-run (5xx, garbage, reset
//! connections, refused connections, answers slower than the outpost waits): sessions the
//! provider confirmed keep working through the outage grace, an answer it gave is never
//! overridden, new logins get a page instead of a redirect to a dead provider, the provider
//! is not hammered, and recovery needs no restart.

mod common;

use std::time::{Duration, Instant};

use common::*;

async fn stack(grace: &'static str) -> Stack {
    Stack::start(StackOptions {
        cache_ttl: 1,
        outage_grace: Some(grace),
        ..Default::default()
    })
    .await
}

/// One `/auth/nginx` check straight to the outpost with the browser's cookies (nginx turns
/// every status but 401/403 into a 500, so the outpost's own answer is read here).
async fn direct(s: &Stack) -> u16 {
    let url = s.app_url("/x");
    s.browser
        .client
        .get(format!(
            "http://{}/outpost.goauthentik.io/auth/nginx",
            s.outpost.addr
        ))
        .header("Host", APP_HOST)
        .header("X-Original-URL", &url)
        .header("Cookie", s.browser.cookies_for(&url))
        .send()
        .await
        .expect("auth check")
        .status()
        .as_u16()
}

async fn ready(s: &Stack) -> (u16, String) {
    let r = reqwest::Client::new()
        .get(format!(
            "http://{}/outpost.goauthentik.io/ready",
            s.outpost.addr
        ))
        .send()
        .await
        .expect("ready");
    (r.status().as_u16(), r.text().await.unwrap_or_default())
}

/// Past the 1 s cache TTL: the next check must ask the provider.
async fn past_ttl() {
    tokio::time::sleep(Duration::from_millis(1200)).await;
}

/// Keeps the session in use (each check must pass) until the outpost reports the provider
/// down on /ready.
async fn until_degraded(s: &Stack, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        assert_eq!(direct(s).await, 200, "{what}: a confirmed session failed");
        let (status, text) = ready(s).await;
        assert_eq!(
            status, 200,
            "{what}: /ready must stay 200 in an outage: {text}"
        );
        if text.contains("degraded") {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: never reported degraded");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Keeps the session in use until /ready is plain "ready" again (probes find the provider).
async fn until_recovered(s: &Stack, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        assert_eq!(
            direct(s).await,
            200,
            "{what}: session failed during recovery"
        );
        if ready(s).await == (200, "ready\n".to_string()) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: never recovered");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A browser without a session is not sent to the dead provider: it ends on our 503 page.
async fn new_login_gets_a_page(s: &Stack, idp: &str, what: &str) {
    let b = Browser::new(&[(APP_HOST, s.nginx.port)]);
    let pages = b.follow(&s.app_url("/new")).await;
    let last = pages.last().expect("a page");
    assert_eq!(last.status, 503, "{what}: {:?}", last.url);
    assert!(
        last.body.contains("Login temporarily unavailable"),
        "{what}: {}",
        last.body
    );
    assert!(
        pages.iter().all(|p| !p.url.starts_with(idp)),
        "{what}: sent to the provider while it is down"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmed_sessions_survive_every_kind_of_outage_and_recover_without_restart() {
    let s = stack("5m").await;
    assert_eq!(s.login("/", &alice()).await.status, 200);
    assert_eq!(direct(&s).await, 200);
    for (what, fault) in [
        ("5xx", "mode=status&status=503"),
        ("garbage JSON", "mode=garbage"),
        ("reset connections", "mode=reset"),
        ("refused connections", ""),
    ] {
        if fault.is_empty() {
            s.idp.outage(10_000).await;
        } else {
            s.idp.set_fault(fault).await;
        }
        past_ttl().await;
        until_degraded(&s, what).await;
        // Through nginx too: the app is reached.
        assert_eq!(
            s.browser.get(&s.app_url("/during")).await.status,
            200,
            "{what}"
        );
        new_login_gets_a_page(&s, &s.idp.issuer, what).await;
        if !fault.is_empty() {
            s.idp.set_fault("mode=none").await;
        }
        until_recovered(&s, what).await;
        // Back to normal: a new browser is sent to the provider again.
        let b = Browser::new(&[(APP_HOST, s.nginx.port)]);
        let pages = b.follow(&s.app_url("/after")).await;
        assert!(
            pages.iter().any(|p| p.url.starts_with(&s.idp.issuer)),
            "{what}: logins go to the provider again"
        );
    }
    let grace = s
        .outpost
        .outpost
        .providers()
        .iter()
        .map(|c| c.grace_served())
        .sum::<u64>();
    assert!(grace > 0, "checks answered from grace are counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inactive_answer_is_never_revived_by_grace() {
    let s = stack("5m").await;
    assert_eq!(s.login("/", &alice()).await.status, 200);
    assert_eq!(direct(&s).await, 200);
    assert!(s.idp.revoke_user("alice").await > 0);
    past_ttl().await;
    // The provider answers `active: false` once; then it goes down.
    let cookie = s.browser.cookies_for(&s.app_url("/x"));
    assert_eq!(direct(&s).await, 401, "revoked");
    s.idp.set_fault("mode=status&status=503").await;
    let until = Instant::now() + Duration::from_secs(8);
    while Instant::now() < until {
        // The revoked cookie itself, whatever the browser did with the cleared one.
        let r = reqwest::Client::new()
            .get(format!(
                "http://{}/outpost.goauthentik.io/auth/nginx",
                s.outpost.addr
            ))
            .header("Host", APP_HOST)
            .header("X-Original-URL", s.app_url("/x"))
            .header("Cookie", &cookie)
            .send()
            .await
            .expect("check");
        assert_ne!(
            r.status(),
            200,
            "a revoked session came back during an outage"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_grace_means_503_and_the_grace_window_ends() {
    // Off: an outage is a clear 503 as soon as the cached answer is old.
    let s = stack("0").await;
    assert_eq!(s.login("/", &alice()).await.status, 200);
    assert_eq!(direct(&s).await, 200);
    s.idp.set_fault("mode=status&status=502").await;
    past_ttl().await;
    assert_eq!(direct(&s).await, 503);
    drop(s);

    // 3 s: the session works until 3 s after the provider last confirmed it, then 503.
    let s = stack("3s").await;
    assert_eq!(s.login("/", &alice()).await.status, 200);
    assert_eq!(direct(&s).await, 200);
    let confirmed = Instant::now();
    s.idp.set_fault("mode=reset").await;
    past_ttl().await;
    assert_eq!(direct(&s).await, 200, "within the grace");
    tokio::time::sleep(
        Duration::from_secs(3).saturating_sub(confirmed.elapsed()) + Duration::from_millis(1500),
    )
    .await;
    assert_eq!(direct(&s).await, 503, "after the grace");
    s.idp.set_fault("mode=none").await;
    let deadline = Instant::now() + Duration::from_secs(40);
    while direct(&s).await != 200 {
        assert!(Instant::now() < deadline, "never recovered");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_slower_than_the_check_timeout_is_an_outage() {
    let s = stack("5m").await;
    assert_eq!(s.login("/", &alice()).await.status, 200);
    assert_eq!(direct(&s).await, 200);
    // Introspection now answers after 8 s; the outpost waits 5 s at most.
    s.idp.set_delay(8000).await;
    past_ttl().await;
    let t = Instant::now();
    assert_eq!(direct(&s).await, 200, "served from grace after the timeout");
    let waited = t.elapsed();
    assert!(
        waited < Duration::from_millis(7500),
        "the check must not wait for the slow provider ({waited:?})"
    );
    s.idp.set_delay(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_provider_is_not_hammered() {
    let s = stack("5m").await;
    assert_eq!(s.login("/", &alice()).await.status, 200);
    assert_eq!(direct(&s).await, 200);
    s.idp.set_fault("mode=status&status=503").await;
    past_ttl().await;
    s.idp.reset_stats().await;
    // 4 s of checks, 40 at a time: without a breaker each would ask the provider.
    let until = Instant::now() + Duration::from_secs(4);
    let mut checks = 0;
    while Instant::now() < until {
        let batch: Vec<_> = (0..40).map(|_| direct(&s)).collect();
        for status in futures_util::future::join_all(batch).await {
            assert_eq!(status, 200);
            checks += 1;
        }
    }
    let calls = s.idp.stats().await["introspection_requests"]
        .as_u64()
        .unwrap_or(u64::MAX);
    assert!(checks >= 120, "only {checks} checks");
    assert!(
        calls <= 8,
        "{calls} introspection calls reached a provider that answers 503 ({checks} checks)"
    );
    s.idp.set_fault("mode=none").await;
}

/// authentik mode: the real binary against the fake authentik, which goes down (every API,
/// websocket and OAuth2 endpoint answers 503) and comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentik_outage_keeps_confirmed_sessions_and_recovers() {
    use common::fake_authentik::{FakeAuthentik, FakeUser, ProviderSpec};
    use common::nginx::{Example, Nginx, NginxVars};

    let o = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
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
    let fa = FakeAuthentik::start(vec![app], vec![FakeUser::new("alice", "alice-password")]).await;
    let env = vec![
        ("AUTHENTIK_HOST", fa.url.clone()),
        ("AUTHENTIK_TOKEN", fa.token.clone()),
        ("AK_OUTPOST_TOKEN_CACHE_TTL", "1s".into()),
        ("AK_OUTPOST_OUTAGE_GRACE", "5m".into()),
    ];
    let mut outpost = Binary::spawn_env(o, &env);
    outpost.wait_ping().await;
    let c = reqwest::Client::new();
    let ready = || async {
        let r = c
            .get(format!("http://{o}/outpost.goauthentik.io/ready"))
            .send()
            .await
            .expect("ready");
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while ready().await.0 != 200 {
        assert!(Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let b = Browser::new(&[(APP_HOST, nginx.port)]);
    let url = format!("{}/x", nginx.base_url(APP_HOST));
    assert_eq!(b.login(&url, "alice", "alice-password").await.status, 200);

    fa.set_down(true);
    past_ttl().await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        assert_eq!(b.get(&url).await.status, 200, "a confirmed session failed");
        let (status, text) = ready().await;
        assert_eq!(status, 200, "{text}");
        if text.contains("degraded") {
            break;
        }
        assert!(Instant::now() < deadline, "never reported degraded");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let fresh = Browser::new(&[(APP_HOST, nginx.port)]);
    let pages = fresh.follow(&url).await;
    let last = pages.last().expect("a page");
    assert_eq!(last.status, 503, "{}", last.url);
    assert!(last.body.contains("Login temporarily unavailable"));

    fa.set_down(false);
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        assert_eq!(
            b.get(&url).await.status,
            200,
            "session failed during recovery"
        );
        if ready().await == (200, "ready\n".to_string()) {
            break;
        }
        assert!(Instant::now() < deadline, "never recovered");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let _ = outpost.stop();
}
