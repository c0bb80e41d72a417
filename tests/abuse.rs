//! Abuse bounds: floods of made-up credentials cannot overload the identity provider and do
//! not starve valid users; oversized requests are refused, not crashed on; one address that
//! is not a trusted proxy cannot hold every connection.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn random_text(n: usize) -> String {
    use rand::Rng;
    let mut r = rand::thread_rng();
    (0..n)
        .map(|_| {
            let c = r.gen_range(0..64u8);
            (match c {
                0..=25 => b'a' + c,
                26..=51 => b'A' + c - 26,
                52..=61 => b'0' + c - 52,
                62 => b'-',
                _ => b'_',
            }) as char
        })
        .collect()
}

async fn check(c: &reqwest::Client, s: &Stack, header: (&str, String)) -> u16 {
    c.get(format!(
        "http://{}/outpost.goauthentik.io/auth/nginx",
        s.outpost.addr
    ))
    .header("Host", APP_HOST)
    .header("X-Original-URL", s.app_url("/x"))
    .header(header.0, header.1)
    .send()
    .await
    .map(|r| r.status().as_u16())
    .unwrap_or(0)
}

/// Runs `flood` from 8 tasks (a request every 5 ms each at most: enough to overrun the
/// budget many times, not so much that this test's own runtime starves the valid user) for
/// `secs` seconds while a valid user checks every 25 ms;
/// returns (flood requests, flood requests answered 200, valid checks, valid failures).
async fn flood_with_valid_traffic(
    s: &Arc<Stack>,
    secs: u64,
    flood: fn() -> (&'static str, String),
) -> (u64, u64, u64, u64) {
    let until = Instant::now() + Duration::from_secs(secs);
    let sent = Arc::new(AtomicU64::new(0));
    let passed = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (s, sent, passed) = (Arc::clone(s), Arc::clone(&sent), Arc::clone(&passed));
        tasks.push(tokio::spawn(async move {
            let c = reqwest::Client::new();
            while Instant::now() < until {
                if check(&c, &s, flood()).await == 200 {
                    passed.fetch_add(1, Ordering::Relaxed);
                }
                sent.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    let c = reqwest::Client::new();
    let cookie = s.browser.cookies_for(&s.app_url("/x"));
    let (mut valid, mut failed) = (0, 0);
    while Instant::now() < until {
        valid += 1;
        if check(&c, s, ("Cookie", cookie.clone())).await != 200 {
            failed += 1;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    for t in tasks {
        t.await.expect("flood task");
    }
    (
        sent.load(Ordering::Relaxed),
        passed.load(Ordering::Relaxed),
        valid,
        failed,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_random_bearer_tokens_is_bounded_and_valid_users_are_served() {
    let s = Arc::new(
        Stack::start(StackOptions {
            new_token_checks_per_second: Some(5),
            ..Default::default()
        })
        .await,
    );
    assert_eq!(s.login("/", &alice()).await.status, 200);
    s.idp.reset_stats().await;
    let t = Instant::now();
    let (sent, passed, valid, failed) = flood_with_valid_traffic(&s, 4, || {
        ("Authorization", format!("Bearer {}", random_text(43)))
    })
    .await;
    let secs = t.elapsed().as_secs_f64();
    let calls = s.idp.stats().await["introspection_requests"]
        .as_u64()
        .unwrap_or(u64::MAX);
    let bound = (5.0 * secs + 5.0 + 3.0) as u64;
    assert!(
        sent >= 2 * bound,
        "the flood sent only {sent} requests (bound {bound})"
    );
    assert_eq!(passed, 0, "a random token was accepted");
    assert!(valid >= 20, "only {valid} valid checks");
    assert_eq!(
        failed, 0,
        "{failed} of {valid} valid checks failed during the flood"
    );
    assert!(
        calls <= bound,
        "{calls} introspection calls in {secs:.1} s from {sent} random tokens (budget 5/s, bound {bound})"
    );
    assert!(calls >= 5, "the budget was not used ({calls} calls)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_session_cookies_never_reach_the_provider() {
    let s = Arc::new(Stack::start(StackOptions::default()).await);
    assert_eq!(s.login("/", &alice()).await.status, 200);
    s.idp.reset_stats().await;
    let (sent, passed, valid, failed) = flood_with_valid_traffic(&s, 3, || {
        let name = ak_outpost::core::app::cookie_name(CLIENT_ID);
        ("Cookie", format!("{name}={}", random_text(1200)))
    })
    .await;
    let calls = s.idp.stats().await["introspection_requests"]
        .as_u64()
        .unwrap_or(u64::MAX);
    assert!(sent > 100, "the flood sent only {sent} requests");
    assert_eq!(passed, 0);
    assert_eq!(
        failed, 0,
        "{failed} of {valid} valid checks failed during the flood"
    );
    assert_eq!(calls, 0, "unreadable cookies must not cost a provider call");
}

async fn raw(addr: SocketAddr, head: &[u8]) -> String {
    let mut c = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let _ = c.write_all(head).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_heads_are_refused_and_the_server_goes_on() {
    let s = Stack::start(StackOptions::default()).await;
    let big = format!(
        "GET /outpost.goauthentik.io/auth/nginx HTTP/1.1\r\nHost: {APP_HOST}\r\nX-Original-URL: {}\r\nCookie: a={}\r\n\r\n",
        s.app_url("/x"),
        "x".repeat(200 * 1024)
    );
    let answer = raw(s.outpost.addr, big.as_bytes()).await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "oversized head: {}",
        answer.lines().next().unwrap_or_default()
    );
    let many = format!(
        "GET /outpost.goauthentik.io/auth/nginx HTTP/1.1\r\nHost: {APP_HOST}\r\n{}\r\n",
        (0..500)
            .map(|i| format!("X-H{i}: v\r\n"))
            .collect::<String>()
    );
    let answer = raw(s.outpost.addr, many.as_bytes()).await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "too many headers: {}",
        answer.lines().next().unwrap_or_default()
    );
    // Still serving.
    let ok = format!(
        "GET /outpost.goauthentik.io/ping HTTP/1.1\r\nHost: {APP_HOST}\r\nConnection: close\r\n\r\n"
    );
    assert!(
        raw(s.outpost.addr, ok.as_bytes())
            .await
            .starts_with("HTTP/1.1 204")
    );
}

/// One forward_single app on `app.example.test`, `trusted` the only trusted proxies, `extra`
/// appended to the file.
fn app_yaml(addr: SocketAddr, idp: &Idp, trusted: &str, extra: &str) -> String {
    let apps = [AppCfg::single("app", "http://app.example.test".into())];
    format!(
        "{}trusted_proxies: [\"{trusted}\"]\n{extra}",
        outpost_yaml(addr, &idp.issuer, SECRET, 60, &apps)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_untrusted_address_cannot_hold_every_connection() {
    let idp = Idp::start(&IdpOptions::new(vec!["http://app.example.test/cb".into()]));
    let listener = InProcess::bind();
    let addr = listener.local_addr().unwrap();
    // Loopback is not a trusted proxy here: this test's client is an ordinary peer.
    let yaml = app_yaml(addr, &idp, "10.0.0.0/8", "");
    let o = InProcess::serve(listener, &yaml).await;
    let mut held = Vec::new();
    for _ in 0..ak_outpost::http::limits::MAX_CONNECTIONS_PER_PEER {
        held.push(
            tokio::net::TcpStream::connect(o.addr)
                .await
                .expect("connect"),
        );
    }
    // One more from the same address is closed at once, without an answer.
    let answer = raw(
        o.addr,
        b"GET /outpost.goauthentik.io/ping HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    assert!(answer.is_empty(), "over the cap: {answer}");
    // Places come back when connections close.
    held.truncate(10);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let answer = raw(
        o.addr,
        b"GET /outpost.goauthentik.io/ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        answer.starts_with("HTTP/1.1 204"),
        "after closing: {answer}"
    );
}

/// A client that is not a trusted proxy gets its burst of logins, then `429` with
/// `Retry-After` beyond its rate; forward-auth checks (a proxy asking for its users) and
/// trusted proxies are never counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_client_over_its_rate_gets_429_and_others_are_served() {
    let idp = Idp::start(&IdpOptions::new(vec!["http://app.example.test/cb".into()]));
    let limits = "limits: {client_requests_per_second: 2, client_burst: 10}\n";
    // A host of its own, so that its request metrics are this test's only, even when the
    // tests of this file share a process (`cargo test`).
    let yaml_for = |addr: SocketAddr, trusted: &str| {
        app_yaml(addr, &idp, trusted, limits).replace("app.example.test", "rate.example.test")
    };
    let c = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let get = |addr: SocketAddr, path: &'static str| {
        c.get(format!("http://{addr}{path}"))
            .header("Host", "rate.example.test")
            .header("X-Original-URL", "http://rate.example.test/x")
            .send()
    };
    let start = "/outpost.goauthentik.io/start?rd=http%3A%2F%2Frate.example.test%2F";
    let check = "/outpost.goauthentik.io/auth/nginx";
    // Loopback untrusted: a client like any other.
    let listener = InProcess::bind();
    let addr = listener.local_addr().unwrap();
    let o = InProcess::serve(listener, &yaml_for(addr, "10.0.0.0/8")).await;
    let mut statuses = Vec::new();
    let started = std::time::Instant::now();
    for _ in 0..30 {
        let r = get(o.addr, start).await.expect("start");
        if r.status() == 429 {
            assert_eq!(r.headers()["retry-after"], "1");
        }
        statuses.push(r.status().as_u16());
    }
    // The burst, then no more than the rate refilled while the requests were sent.
    let refilled = (started.elapsed().as_secs_f64() * 2.0).ceil() as usize;
    let served = statuses.iter().filter(|s| **s == 302).count();
    assert!(statuses[..10].iter().all(|s| *s == 302), "{statuses:?}");
    assert!(served <= 10 + refilled, "{served} served: {statuses:?}");
    assert!(statuses.contains(&429), "{statuses:?}");
    assert!(
        statuses.iter().all(|s| *s == 302 || *s == 429),
        "{statuses:?}"
    );
    // The refused requests count in the application's metrics like its other answers.
    let health = ak_outpost::state::metrics::Health {
        ready: true,
        providers_up: true,
        cached_checks: 0,
        grace_served: 0,
    };
    let metrics = ak_outpost::state::metrics::render("m", &health);
    let app_gets = format!(
        "authentik_outpost_proxy_request_duration_seconds_count{{outpost_name=\"m\",method=\"GET\",host=\"rate.example.test\",type=\"app\"}} {}",
        statuses.len()
    );
    assert!(metrics.contains(&app_gets), "{app_gets} not in\n{metrics}");
    // Its checks are answered all the same.
    for _ in 0..30 {
        assert_eq!(get(o.addr, check).await.expect("check").status(), 401);
    }
    // The same logins from a trusted proxy are never counted.
    let listener = InProcess::bind();
    let addr = listener.local_addr().unwrap();
    let t = InProcess::serve(listener, &yaml_for(addr, "127.0.0.0/8")).await;
    for _ in 0..30 {
        assert_eq!(get(t.addr, start).await.expect("start").status(), 302);
    }
}
