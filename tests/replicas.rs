//! Replicas and rolling restart: three real `ak-outpost` processes (same YAML but the listen
//! and metrics addresses, same secret) behind one real nginx rendered from the shipped
//! `nginx/app.example.com.conf`, whose `upstream ak_outpost` lists all three (round robin).
//!
//! * Login, header auth, sign-out and revocation behave as with one outpost.
//! * A rolling restart (each outpost in turn: SIGTERM, which drains; start again on the same
//!   port; wait until nginx sends it traffic again) under steady traffic fails no request of
//!   the session.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ak_outpost::core::app::cookie_name;
use ak_outpost::core::seal::Sealer;
use ak_outpost::core::session::Session;
use common::nginx::{Example, Nginx, NginxVars};
use common::*;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// One replica: its check address, its metrics address, and the process.
struct Replica {
    addr: SocketAddr,
    metrics: SocketAddr,
    /// `None` only while it is being restarted.
    bin: Option<Binary>,
}

/// nginx in front of three outposts, the IdP, the echo app.
struct Replicas {
    _echo: echo::EchoApp,
    nginx: Nginx,
    idp: Idp,
    replicas: Vec<Replica>,
    /// Processes stopped during a rolling restart: kept so their config files (in their
    /// temp dirs) outlive them, for the processes started in their place.
    retired: Vec<Binary>,
}

impl Replicas {
    async fn start(cache_ttl: u64) -> Replicas {
        let addrs: Vec<SocketAddr> = (0..3).map(|_| addr(free_port())).collect();
        let echo = echo::EchoApp::start().await;
        let nginx = Nginx::start(
            Example::Plain,
            &NginxVars {
                outpost: addrs[0],
                app_upstream: echo.addr,
                app_host: APP_HOST.into(),
                auth_host: AUTH_HOST.into(),
                outposts: addrs.clone(),
            },
        );
        let idp = Idp::start(&IdpOptions::new(vec![format!(
            "{}/outpost.goauthentik.io/callback?X-authentik-auth-callback=true",
            nginx.base_url(APP_HOST)
        )]));
        let mut replicas = Vec::new();
        for a in addrs {
            let metrics = addr(free_port());
            let yaml = outpost_yaml(
                a,
                &idp.issuer,
                SECRET,
                cache_ttl,
                &[AppCfg::single("app", nginx.base_url(APP_HOST))],
            )
            .replace("  metrics: \"\"\n", &format!("  metrics: \"{metrics}\"\n"));
            assert!(yaml.contains(&metrics.to_string()), "metrics not set");
            let bin = Binary::start(a, &yaml).await;
            replicas.push(Replica {
                addr: a,
                metrics,
                bin: Some(bin),
            });
        }
        for r in &replicas {
            wait_ready(r.addr).await;
        }
        Replicas {
            _echo: echo,
            nginx,
            idp,
            replicas,
            retired: Vec::new(),
        }
    }

    fn app_url(&self, path: &str) -> String {
        format!("{}{path}", self.nginx.base_url(APP_HOST))
    }

    fn browser(&self) -> Browser {
        Browser::new(&[(APP_HOST, self.nginx.port)])
    }

    /// A forward-auth check sent straight to replica `i` with one credential header.
    async fn direct(&self, i: usize, header: &str, value: &str) -> reqwest::Response {
        reqwest::Client::new()
            .get(format!(
                "http://{}/outpost.goauthentik.io/auth/nginx",
                self.replicas[i].addr
            ))
            .header("Host", APP_HOST)
            .header("X-Original-URL", self.app_url("/x"))
            .header(header, value)
            .send()
            .await
            .expect("auth check")
    }

    /// Auth checks replica `i` has answered for the app, from its metrics listener (the
    /// request-duration histogram's count; resets when the process restarts).
    async fn checks_served(&self, i: usize) -> u64 {
        let text = reqwest::Client::new()
            .get(format!("http://{}/metrics", self.replicas[i].metrics))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text");
        text.lines()
            .filter(|l| {
                l.starts_with("authentik_outpost_proxy_request_duration_seconds_count{")
                    && l.contains("host=\"app.example.test")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }
}

/// The session inside the browser's session cookie (chunks joined), opened with the test
/// secret.
fn session_of(cookie_header: &str) -> Session {
    let name = cookie_name(CLIENT_ID);
    let mut parts: Vec<(usize, String)> = cookie_header
        .split(';')
        .filter_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            if k == &*name {
                Some((0, v.to_string()))
            } else {
                let i: usize = k.strip_prefix(&format!("{name}_"))?.parse().ok()?;
                Some((i, v.to_string()))
            }
        })
        .collect();
    parts.sort();
    let joined: String = parts.into_iter().map(|(_, v)| v).collect();
    let plain = Sealer::new(SECRET.as_bytes(), "session")
        .unseal(name.as_bytes(), &joined)
        .expect("the session cookie opens with SECRET");
    serde_json::from_slice(&plain).expect("session JSON")
}

/// Polls until every replica refuses `header: value` with 401; panics after `limit`.
async fn until_all_refuse(
    r: &Replicas,
    header: &str,
    value: &str,
    since: Instant,
    limit: Duration,
) {
    let mut refused = [false; 3];
    while !refused.iter().all(|x| *x) {
        assert!(
            since.elapsed() < limit,
            "{header} still accepted {:?} later (refused by {refused:?})",
            since.elapsed()
        );
        for (i, done) in refused.iter_mut().enumerate() {
            if !*done {
                let status = r.direct(i, header, value).await.status().as_u16();
                assert!(
                    status == 200 || status == 401,
                    "replica {i}: unexpected {status} for {header}"
                );
                *done = status == 401;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_outposts_behave_as_one() {
    // A 1 s introspection cache: revocation and sign-out must reach every replica within it.
    let r = Replicas::start(1).await;
    let b = r.browser();
    // Login through nginx: /start, the callback and the checks land on different replicas.
    let page = b
        .login(&r.app_url("/start-here"), "alice", "alice-password")
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(
        page.echoed("x-authentik-username").as_deref(),
        Some("alice")
    );

    // Round robin spreads the checks over all three; every one passes.
    let before: Vec<u64> = futures_all(&r).await;
    for i in 0..30 {
        let p = b.get(&r.app_url(&format!("/n/{i}"))).await;
        assert_eq!(p.status, 200, "request {i}: {}", p.body);
        assert_eq!(p.echoed("x-authentik-username").as_deref(), Some("alice"));
    }
    let after: Vec<u64> = futures_all(&r).await;
    for i in 0..3 {
        assert!(
            after[i] >= before[i] + 5,
            "replica {i} answered {} of 30 checks through nginx (before {before:?}, after {after:?})",
            after[i] - before[i]
        );
    }
    // Each replica on its own accepts the cookie, whichever replica minted it.
    let cookie = b.cookies_for(&r.app_url("/"));
    for i in 0..3 {
        let resp = r.direct(i, "Cookie", &cookie).await;
        assert_eq!(resp.status(), 200, "replica {i}");
        assert_eq!(resp.headers()["x-authentik-username"], "alice");
    }

    // Header auth: the session's access token as a Bearer token, through nginx (a client
    // without cookies) and at each replica directly.
    let bearer = format!("Bearer {}", session_of(&cookie).access_token);
    let plain = Browser::new(&[(APP_HOST, r.nginx.port)]);
    for i in 0..9 {
        let p = plain
            .get_with(
                &r.app_url(&format!("/api/{i}")),
                &[("Authorization", bearer.as_str())],
            )
            .await;
        assert_eq!(p.status, 200, "bearer request {i}: {}", p.body);
        assert_eq!(p.echoed("x-authentik-username").as_deref(), Some("alice"));
    }
    for i in 0..3 {
        let resp = r.direct(i, "Authorization", &bearer).await;
        assert_eq!(resp.status(), 200, "bearer at replica {i}");
    }
    let junk = r
        .direct(0, "Authorization", "Bearer not-a-token-at-all")
        .await;
    assert_eq!(junk.status(), 401);

    // Sign-out through nginx (one replica handles it and revokes the tokens at the IdP):
    // a copy of the cookie taken before is refused by all three within the cache TTL, and so
    // is the access token as a Bearer token.
    let pages = b
        .follow(&r.app_url("/outpost.goauthentik.io/sign_out"))
        .await;
    assert_eq!(pages[0].status, 302, "{:?}", pages[0]);
    let signed_out = Instant::now();
    until_all_refuse(&r, "Cookie", &cookie, signed_out, Duration::from_secs(5)).await;
    until_all_refuse(
        &r,
        "Authorization",
        &bearer,
        signed_out,
        Duration::from_secs(5),
    )
    .await;
    let replay = plain
        .get_with(&r.app_url("/replay"), &[("Cookie", cookie.as_str())])
        .await;
    assert_eq!(replay.status, 302, "a signed-out cookie is sent to login");
    let again = b.get(&r.app_url("/after-sign-out")).await;
    assert_eq!(again.status, 302, "the browser is signed out");

    // Revocation at the IdP: a new session, accepted (and cached) by every replica, is
    // refused by all three within the 1 s TTL.
    let b2 = r.browser();
    let page = b2
        .login(&r.app_url("/second"), "alice", "alice-password")
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    let cookie2 = b2.cookies_for(&r.app_url("/"));
    let bearer2 = format!("Bearer {}", session_of(&cookie2).access_token);
    for i in 0..3 {
        assert_eq!(r.direct(i, "Cookie", &cookie2).await.status(), 200);
        assert_eq!(r.direct(i, "Authorization", &bearer2).await.status(), 200);
    }
    assert!(r.idp.revoke_user("alice").await > 0);
    let revoked = Instant::now();
    until_all_refuse(&r, "Cookie", &cookie2, revoked, Duration::from_secs(5)).await;
    until_all_refuse(
        &r,
        "Authorization",
        &bearer2,
        revoked,
        Duration::from_secs(5),
    )
    .await;
    for i in 0..6 {
        let p = b2.get(&r.app_url(&format!("/revoked/{i}"))).await;
        assert_eq!(p.status, 302, "revoked session through nginx, request {i}");
    }
}

/// Every replica's served-check count.
async fn futures_all(r: &Replicas) -> Vec<u64> {
    let mut v = Vec::new();
    for i in 0..3 {
        v.push(r.checks_served(i).await);
    }
    v
}

/// One request of the background traffic.
struct Shot {
    at: Duration,
    outcome: Result<u16, String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_loses_no_session_and_fails_no_request() {
    let mut r = Replicas::start(60).await;
    let b = r.browser();
    let page = b
        .login(&r.app_url("/start"), "alice", "alice-password")
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    let cookie = b.cookies_for(&r.app_url("/"));

    // Steady traffic through nginx with the session cookie: one request at a time, one every
    // 10 ms, for at most 90 s (stopped as soon as the restart is over).
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let traffic = {
        let stop = Arc::clone(&stop);
        let url = r.app_url("/traffic");
        let port = r.nginx.port;
        let cookie = cookie.clone();
        tokio::spawn(async move {
            let c = reqwest::Client::builder()
                .resolve(APP_HOST, addr(port))
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap();
            let mut shots = Vec::new();
            while !stop.load(Ordering::Relaxed) && t0.elapsed() < Duration::from_secs(90) {
                let outcome = c
                    .get(&url)
                    .header("Cookie", &cookie)
                    .send()
                    .await
                    .map(|resp| resp.status().as_u16())
                    .map_err(|e| e.to_string());
                shots.push(Shot {
                    at: t0.elapsed(),
                    outcome,
                });
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            shots
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut steps = Vec::new();
    for i in 0..3 {
        let stopped_at = t0.elapsed();
        let mut old = r.replicas[i].bin.take().expect("running");
        let status = tokio::task::block_in_place(|| old.stop());
        assert!(
            status.success(),
            "replica {i}: SIGTERM should drain and exit 0: {status}"
        );
        // Traffic runs while it is down: nginx must send every check to the other two.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let config = old.config.clone();
        let mut fresh = Binary::spawn(r.replicas[i].addr, &config);
        fresh.wait_ping().await;
        wait_ready(r.replicas[i].addr).await;
        r.replicas[i].bin = Some(fresh);
        r.retired.push(old);
        let ready_at = t0.elapsed();
        // Before the next one goes down, nginx must be sending this one traffic again
        // (after a failed connection nginx leaves a server out for `fail_timeout`, 10 s by
        // default): only then are two replicas left while the next restarts.
        let deadline = Instant::now() + Duration::from_secs(30);
        while r.checks_served(i).await < 3 {
            assert!(
                Instant::now() < deadline,
                "nginx never sent replica {i} traffic again after its restart"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        steps.push((i, stopped_at, ready_at, t0.elapsed()));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let shots = traffic.await.unwrap();

    let failed: Vec<(Duration, &Result<u16, String>)> = shots
        .iter()
        .filter(|s| s.outcome != Ok(200))
        .map(|s| (s.at, &s.outcome))
        .collect();
    eprintln!(
        "rolling restart: {} requests in {:?}, {} failed; steps (replica, stopped, ready, back in rotation): {steps:?}",
        shots.len(),
        t0.elapsed(),
        failed.len()
    );
    assert!(
        t0.elapsed() < Duration::from_secs(90),
        "the restart took longer than the traffic ran"
    );
    assert!(shots.len() > 100, "too little traffic: {}", shots.len());
    assert!(
        failed.is_empty(),
        "requests failed during the rolling restart: {failed:?}\n--- nginx error.log ---\n{}",
        r.nginx.error_log()
    );
    // The session still works everywhere, on the restarted processes.
    for i in 0..3 {
        let resp = r.direct(i, "Cookie", &cookie).await;
        assert_eq!(resp.status(), 200, "replica {i} after the restart");
    }
}
