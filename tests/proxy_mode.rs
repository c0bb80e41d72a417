//! Proxy mode, standalone: the outpost is the reverse proxy in front of a real backend, with
//! the real IdP. Login on the application's own host, identity headers upstream, what never
//! crosses, skip paths, WebSockets, bodies streamed both ways (1 GiB through the real binary
//! with flat memory), and pages for a dead or slow upstream.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::backend::{self, Backend};
use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const DEAD_HOST: &str = "dead.example.test";

/// The IdP, a backend, and an outpost (no trusted proxies) with two proxy-mode apps: `app.example.test` in front of
/// the backend (response timeout 1 s) and `dead.example.test`, whose upstream is a closed
/// port and whose paths are all public.
struct Setup {
    idp: Idp,
    backend: Backend,
    outpost: InProcess,
    browser: Browser,
    base: String,
}

impl Setup {
    async fn start(skip_path_regex: &str) -> Setup {
        Setup::start_at("", skip_path_regex).await
    }

    /// With the app's external host at `path` (e.g. `/sub`).
    async fn start_at(path: &str, skip_path_regex: &str) -> Setup {
        let listener = InProcess::bind();
        let addr = listener.local_addr().expect("addr");
        let base = format!("http://{APP_HOST}:{}{path}", addr.port());
        let idp = Idp::start(&IdpOptions::new(vec![format!(
            "{base}/outpost.goauthentik.io/callback?X-authentik-auth-callback=true"
        )]));
        let backend = Backend::start().await;
        let yaml = proxy_yaml(addr, &idp.issuer, &base, skip_path_regex, backend.addr);
        let outpost = InProcess::serve(listener, &yaml).await;
        let browser = Browser::new(&[(APP_HOST, addr.port()), (DEAD_HOST, addr.port())]);
        Setup {
            idp,
            backend,
            outpost,
            browser,
            base,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn login(&self, path: &str) -> Page {
        let u = alice();
        self.browser
            .login(&self.url(path), u.username, u.password)
            .await
    }
}

fn proxy_yaml(
    listen: SocketAddr,
    issuer: &str,
    base: &str,
    skip: &str,
    upstream: SocketAddr,
) -> String {
    let mut app = AppCfg::single("app", base.to_string());
    app.mode = "proxy";
    app.skip_path_regex = skip.to_string();
    let mut dead = AppCfg::single("dead", format!("http://{DEAD_HOST}:{}", listen.port()));
    dead.mode = "proxy";
    dead.skip_path_regex = "^/".into();
    // A port that was free a moment ago: nothing listens there.
    let closed = SocketAddr::from(([127, 0, 0, 1], free_port()));
    // Loopback is not a trusted proxy here: the tests' clients are the browsers themselves.
    let yaml = outpost_yaml(listen, issuer, SECRET, 60, &[app, dead]).replace(
        "applications:\n",
        "trusted_proxies: [\"192.0.2.0/24\"]\napplications:\n",
    );
    // Each app's upstream goes right after its own entry.
    let (first, second) = yaml
        .split_once("  - name: dead\n")
        .expect("two applications");
    format!(
        "{first}    upstream:\n      url: \"http://{upstream}\"\n      response_timeout: 1s\n  - name: dead\n{second}    upstream: \"http://{closed}\"\n"
    )
}

/// The whole journey: a first visit is sent to log in on the app's own host, the login lands
/// on the original page served by the backend with the user's identity, the backend's own
/// headers and cookies come back, and nothing the client forges or the outpost owns reaches
/// the backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_then_requests_are_proxied_with_identity() {
    let s = Setup::start("").await;
    let first = s.browser.get(&s.url("/some/page?x=1")).await;
    assert_eq!(first.status, 302, "{}", first.body);
    let port = s.outpost.addr.port();
    let expected = s.url(&format!(
        "/outpost.goauthentik.io/start?rd=http%3A%2F%2Fapp.example.test%3A{port}%2Fsome%2Fpage%3Fx%3D1"
    ));
    assert_eq!(first.location(), Some(expected));

    let landing = s.login("/some/page?x=1").await;
    assert_eq!(landing.status, 200, "{}", landing.body);
    assert_eq!(landing.url, s.url("/some/page?x=1"));
    let body = landing.json();
    assert_eq!(body["path"], "/some/page");
    assert_eq!(body["query"], "x=1");
    assert_eq!(
        landing.echoed("x-authentik-username").as_deref(),
        Some("alice")
    );
    assert_eq!(
        landing.echoed("x-authentik-groups").as_deref(),
        Some("admins|users")
    );
    let host = format!("{APP_HOST}:{}", s.outpost.addr.port());
    assert_eq!(landing.echoed("host").as_deref(), Some(host.as_str()));
    assert_eq!(
        landing.echoed("x-forwarded-host").as_deref(),
        Some(host.as_str())
    );
    assert_eq!(landing.echoed("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(
        landing.echoed("x-forwarded-for").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(landing.echoed("via").as_deref(), Some("1.1 ak-outpost"));
    assert_eq!(landing.headers["x-powered-by"], "goauthentik.io");

    // Forged identity, forwarding and hop-by-hop headers from the client.
    s.browser.add_cookie("theirs=kept", &s.url("/"));
    let again = s
        .browser
        .get_with(
            &s.url("/again"),
            &[
                ("X-authentik-username", "mallory"),
                ("X-Authentik-Groups", "admins"),
                ("X_AUTHENTIK_USERNAME", "mallory"),
                ("X-Forwarded-For", "203.0.113.7"),
                ("X-Forwarded-Host", "evil.example"),
                ("Forwarded", "for=203.0.113.7"),
                ("Connection", "keep-alive, X-Drop-Me"),
                ("X-Drop-Me", "1"),
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
    assert_eq!(
        again.echoed("x-forwarded-for").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(
        again.echoed("x-forwarded-host").as_deref(),
        Some(host.as_str())
    );
    for gone in [
        "x_authentik_username",
        "forwarded",
        "x-drop-me",
        "connection",
    ] {
        assert_eq!(again.echoed(gone), None, "{gone} reached the backend");
    }
    let cookies = again.echoed("cookie").unwrap_or_default();
    assert!(cookies.contains("theirs=kept"), "{cookies}");
    assert!(
        !cookies.contains("authentik_proxy"),
        "session cookie leaked: {cookies}"
    );
    // The backend's own cookie reaches the browser.
    assert!(
        again
            .set_cookies()
            .iter()
            .any(|c| c.starts_with("backend=1")),
        "{:?}",
        again.set_cookies()
    );

    // Upstream connections are kept alive and reused.
    let before = s
        .backend
        .connections
        .load(std::sync::atomic::Ordering::Relaxed);
    for i in 0..30 {
        let r = s.browser.get(&s.url(&format!("/n/{i}"))).await;
        assert_eq!(r.status, 200);
    }
    let opened = s
        .backend
        .connections
        .load(std::sync::atomic::Ordering::Relaxed)
        - before;
    assert!(
        opened <= 2,
        "{opened} upstream connections for 30 sequential requests"
    );

    // The upstream's latency is in the metrics, under authentik's name and labels.
    let metrics = ak_outpost::state::metrics::render("ak-outpost", &Default::default());
    let series = format!(
        "authentik_outpost_proxy_upstream_response_duration_seconds_count{{outpost_name=\"ak-outpost\",method=\"GET\",scheme=\"http\",host=\"{host}\",upstream_host=\"{}\"}}",
        s.backend.addr
    );
    assert!(metrics.contains(&series), "{series} missing in:\n{metrics}");

    // A POST body goes through whole.
    let posted = s
        .browser
        .client
        .post(s.url("/count"))
        .body(vec![7u8; 300_000])
        .send()
        .await
        .expect("post");
    assert_eq!(posted.status(), 200);
    let v: serde_json::Value = posted.json().await.expect("json");
    assert_eq!(v["bytes"], 300_000);
    assert_eq!(v["sum"], 2_100_000);

    // Sign-out ends it: the next visit is sent to log in again.
    let out = s
        .browser
        .follow(&s.url("/outpost.goauthentik.io/sign_out"))
        .await;
    let last = out.into_iter().last().expect("page");
    s.browser.confirm_logout(last).await;
    let after = s.browser.get(&s.url("/again")).await;
    assert_eq!(after.status, 302, "{}", after.body);
    assert!(
        after
            .location()
            .unwrap_or_default()
            .contains("/outpost.goauthentik.io/start?rd="),
        "{:?}",
        after.location()
    );
}

/// An external host with a path has its login under that path, and it completes (no loop).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_host_with_a_path_logs_in_under_it() {
    let s = Setup::start_at("/sub", "").await;
    let first = s.browser.get(&s.url("/page")).await;
    assert_eq!(first.status, 302);
    let loc = first.location().unwrap_or_default();
    assert!(
        loc.starts_with(&s.url("/outpost.goauthentik.io/start?rd=")),
        "{loc}"
    );
    let landing = s.login("/page").await;
    assert_eq!(landing.status, 200, "{}", landing.body);
    assert_eq!(landing.url, s.url("/page"));
    assert_eq!(landing.json()["path"], "/sub/page");
    assert_eq!(
        landing.echoed("x-authentik-username").as_deref(),
        Some("alice")
    );
}

/// Skip paths reach the backend without a login and without identity; a client cannot
/// bring its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_paths_are_proxied_anonymously() {
    let s = Setup::start("^/public/").await;
    let r = s
        .browser
        .get_with(
            &s.url("/public/status?full=1"),
            &[("X-authentik-username", "mallory")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["path"], "/public/status");
    assert_eq!(r.echoed("x-authentik-username"), None);
    let private = s.browser.get(&s.url("/private")).await;
    assert_eq!(private.status, 302);
    // An API client with a credential the outpost cannot confirm gets a 401 page, not a
    // redirect to a login it cannot follow.
    let api = s
        .browser
        .get_with(&s.url("/private"), &[("Authorization", "Bearer made-up")])
        .await;
    assert_eq!(api.status, 401, "{}", api.body);
    assert!(api.location().is_none());
    // A tunnel is not the application, even on a public path.
    let tunnel = s
        .browser
        .client
        .request(reqwest::Method::CONNECT, s.url("/public/x"))
        .send()
        .await
        .expect("connect");
    assert_eq!(tunnel.status(), 405);
}

/// A WebSocket is bridged to the backend once logged in; without a session the handshake is
/// answered with the login redirect instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_are_bridged_for_signed_in_users() {
    let s = Setup::start("").await;
    let landing = s.login("/").await;
    assert_eq!(landing.status, 200, "{}", landing.body);
    let cookies = s.browser.cookies_for(&s.url("/ws"));
    let ws_url = format!("ws://{APP_HOST}:{}/ws", s.outpost.addr.port());

    let mut req = ws_url.as_str().into_client_request().expect("request");
    req.headers_mut()
        .insert("cookie", cookies.parse().expect("cookie"));
    let tcp = tokio::net::TcpStream::connect(s.outpost.addr)
        .await
        .expect("connect");
    let (mut ws, resp) = tokio_tungstenite::client_async(req, tcp)
        .await
        .expect("websocket handshake through the outpost");
    assert_eq!(resp.status(), 101);
    for i in 0..20 {
        ws.send(Message::text(format!("hello {i}")))
            .await
            .expect("send");
        let got = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("echo in time")
            .expect("a message")
            .expect("no error");
        assert_eq!(got, Message::text(format!("echo:hello {i}")));
    }
    let big = vec![42u8; 1 << 20];
    ws.send(Message::binary(big.clone())).await.expect("send");
    let got = ws.next().await.expect("message").expect("ok");
    assert_eq!(got.into_data().as_ref(), big.as_slice());
    ws.close(None).await.expect("close");

    // No session: no bridge.
    let req = ws_url.as_str().into_client_request().expect("request");
    let tcp = tokio::net::TcpStream::connect(s.outpost.addr)
        .await
        .expect("connect");
    match tokio_tungstenite::client_async(req, tcp).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 302),
        other => panic!("unauthenticated websocket: {other:?}"),
    }
}

/// A dead upstream is a 502 page and a slow one a 504 page, each promptly; the outpost keeps
/// serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_and_slow_upstreams_get_pages() {
    let s = Setup::start("").await;
    let dead = s
        .browser
        .get(&format!("http://{DEAD_HOST}:{}/x", s.outpost.addr.port()))
        .await;
    assert_eq!(dead.status, 502, "{}", dead.body);
    assert!(dead.body.contains("Bad Gateway"), "{}", dead.body);
    assert!(
        !dead.body.contains("127.0.0.1"),
        "details only for superusers"
    );

    s.login("/").await;
    let slow = s.browser.get(&s.url("/slow/3000")).await;
    assert_eq!(slow.status, 504, "{}", slow.body);
    let quick = s.browser.get(&s.url("/slow/10")).await;
    assert_eq!(quick.status, 200);
    assert_eq!(quick.body, "slow");
}

/// Bodies stream both ways unchanged: a download without a length and an upload sent in
/// pieces, checked byte for byte by sum and size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_stream_both_ways_unchanged() {
    let s = Setup::start("").await;
    s.login("/").await;
    let n: u64 = 8 * 1024 * 1024 + 12_345;
    let r = s
        .browser
        .client
        .get(s.url(&format!("/bytes/{n}")))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 200);
    let body = r.bytes().await.expect("body");
    assert_eq!(body.len() as u64, n);
    assert_eq!(backend::sum(&body), backend::pattern_sum(n));

    let cookie = s.browser.cookies_for(&s.url("/count"));
    let v = upload(s.outpost.addr, &cookie, n).await;
    assert_eq!(v["bytes"], n);
    assert_eq!(v["sum"], backend::pattern_sum(n));
    drop(s.idp);
    drop(s.backend);
}

/// Sends `n` pattern bytes to `/count` chunked, by hand over TCP (no client buffering), and
/// returns the backend's JSON answer.
async fn upload(outpost: SocketAddr, cookie: &str, n: u64) -> serde_json::Value {
    let mut tcp = tokio::net::TcpStream::connect(outpost)
        .await
        .expect("connect");
    let head = format!(
        "POST /count HTTP/1.1\r\nHost: {APP_HOST}:{}\r\nCookie: {cookie}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        outpost.port()
    );
    tcp.write_all(head.as_bytes()).await.expect("head");
    let chunk = backend::chunk();
    let mut left = n;
    while left > 0 {
        let k = left.min(chunk.len() as u64) as usize;
        tcp.write_all(format!("{k:x}\r\n").as_bytes())
            .await
            .expect("size");
        tcp.write_all(&chunk[..k]).await.expect("data");
        tcp.write_all(b"\r\n").await.expect("crlf");
        left -= k as u64;
    }
    tcp.write_all(b"0\r\n\r\n").await.expect("end");
    let mut answer = Vec::new();
    tcp.read_to_end(&mut answer).await.expect("answer");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let body = text.split("\r\n\r\n").nth(1).expect("body");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Peak resident memory of a process, KiB.
fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

/// 1 GiB down and 1 GiB up through the real binary: the outpost's peak memory stays flat
/// (it streams; it never holds a body).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gigabyte_each_way_with_flat_memory() {
    const GIB: u64 = 1 << 30;
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let base = format!("http://{APP_HOST}:{}", addr.port());
    let idp = Idp::start(&IdpOptions::new(vec![format!(
        "{base}/outpost.goauthentik.io/callback?X-authentik-auth-callback=true"
    )]));
    let backend = Backend::start().await;
    let yaml = proxy_yaml(addr, &idp.issuer, &base, "", backend.addr);
    let bin = Binary::start(addr, &yaml).await;
    wait_ready(addr).await;
    let browser = Browser::new(&[(APP_HOST, addr.port())]);
    let u = alice();
    let landing = browser
        .login(&format!("{base}/"), u.username, u.password)
        .await;
    assert_eq!(landing.status, 200, "{}", landing.body);
    let warm = vm_hwm_kib(bin.child.id());

    let mut r = browser
        .client
        .get(format!("{base}/bytes/{GIB}"))
        .timeout(Duration::from_secs(600))
        .send()
        .await
        .expect("download");
    assert_eq!(r.status(), 200);
    let (mut got, mut sum) = (0u64, 0u64);
    while let Some(c) = r.chunk().await.expect("chunk") {
        got += c.len() as u64;
        sum += backend::sum(&c);
    }
    assert_eq!(got, GIB);
    assert_eq!(sum, backend::pattern_sum(GIB));

    let cookie = browser.cookies_for(&format!("{base}/count"));
    let v = upload(addr, &cookie, GIB).await;
    assert_eq!(v["bytes"], GIB);
    assert_eq!(v["sum"], backend::pattern_sum(GIB));

    let peak = vm_hwm_kib(bin.child.id());
    eprintln!("outpost peak RSS: {warm} KiB after login, {peak} KiB after 2 GiB proxied");
    assert!(
        peak < warm + 16 * 1024,
        "memory grew with the body: {warm} KiB -> {peak} KiB"
    );
}

/// On the TLS listener, browsers that offer HTTP/2 get it, and proxy mode serves them over
/// it (an HTTP/1.1 upstream behind): requests and bodies go through, `X-Forwarded-Proto` says
/// https. Clients offering only HTTP/1.1 still get it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_over_tls_is_served_and_proxied() {
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let https = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let idp = Idp::start(&IdpOptions::new(vec![format!(
        "https://{APP_HOST}:{}/outpost.goauthentik.io/callback?X-authentik-auth-callback=true",
        https.port()
    )]));
    let backend = Backend::start().await;
    let base = format!("https://{APP_HOST}:{}", https.port());
    // Self-signed certificate (no `tls:` section); everything public so no login is needed.
    let yaml = proxy_yaml(http, &idp.issuer, &base, "^/", backend.addr).replace(
        "  metrics: \"\"\n",
        &format!("  metrics: \"\"\n  https: \"{https}\"\n"),
    );
    assert!(yaml.contains("https:"));
    let _bin = Binary::start(http, &yaml).await;
    let client = |h2: bool| {
        let b = reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .resolve(APP_HOST, https)
            .timeout(Duration::from_secs(20));
        if h2 { b } else { b.http1_only() }.build().expect("client")
    };
    for (h2, version) in [
        (true, reqwest::Version::HTTP_2),
        (false, reqwest::Version::HTTP_11),
    ] {
        let r = client(h2)
            .get(format!("{base}/page?q=1"))
            .header("X-authentik-username", "mallory")
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), 200);
        assert_eq!(r.version(), version);
        let v: serde_json::Value = r.json().await.expect("json");
        assert_eq!(v["path"], "/page");
        assert_eq!(v["query"], "q=1");
        let host = format!("{APP_HOST}:{}", https.port());
        assert_eq!(v["headers"]["host"][0], host.as_str());
        assert_eq!(v["headers"]["x-forwarded-proto"][0], "https");
        assert!(v["headers"].get("x-authentik-username").is_none(), "{v}");

        let n = 3 * 1024 * 1024 + 7;
        let up: serde_json::Value = client(h2)
            .post(format!("{base}/count"))
            .body(vec![1u8; n])
            .send()
            .await
            .expect("post")
            .json()
            .await
            .expect("json");
        assert_eq!(up["bytes"], n);
    }
}
