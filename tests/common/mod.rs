//! Shared integration-test harness: the reference IdP (node `oidc-provider` from `tests/idp`),
//! the outpost (in-process on port 0, or the real binary), real nginx with the shipped
//! examples, the echo app, and a cookie-keeping HTTP "browser" that can log in.
#![allow(dead_code)]

pub mod backend;
pub mod caddy;
pub mod echo;
pub mod fake_authentik;
pub mod hostile;
pub mod nginx;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ak_outpost::http::server::{self, Listener};
use ak_outpost::source::yaml::Config;
use ak_outpost::state::outpost::{Outpost, Runtime};
use reqwest::header::{HeaderMap, LOCATION};
use serde_json::{Value, json};
use tokio::sync::watch;

pub const CLIENT_ID: &str = "ak-outpost-tests";
pub const CLIENT_SECRET: &str = "test-client-secret-that-is-long-enough-0123456789";
pub const SECRET: &str = "test-sealing-secret-0123456789abcdef-0123456789";
pub const APP_HOST: &str = "app.example.test";
pub const AUTH_HOST: &str = "auth.example.test";
pub const OTHER_HOST: &str = "other.example.test";

/// A free loopback port (bound and released; the race is acceptable in tests).
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A test user of the IdP.
pub struct User {
    pub username: &'static str,
    pub password: &'static str,
    pub email: &'static str,
    pub name: &'static str,
    pub groups: Vec<String>,
}

pub fn alice() -> User {
    User {
        username: "alice",
        password: "alice-password",
        email: "alice@example.test",
        name: "Alice Liddell",
        groups: vec!["admins".into(), "users".into()],
    }
}

pub fn bob() -> User {
    User {
        username: "bob",
        password: "bob-password",
        email: "bob@example.test",
        name: "Bob Builder",
        groups: vec!["users".into()],
    }
}

/// IdP settings for one test.
pub struct IdpOptions {
    pub port: u16,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    pub alg: &'static str,
    pub auth_method: &'static str,
    pub access_token_ttl: u64,
    pub users: Vec<User>,
}

impl IdpOptions {
    pub fn new(redirect_uris: Vec<String>) -> IdpOptions {
        IdpOptions {
            port: 0,
            redirect_uris,
            post_logout_redirect_uris: vec![],
            alg: "RS256",
            auth_method: "client_secret_post",
            access_token_ttl: 3600,
            users: vec![alice(), bob()],
        }
    }
}

/// The reference OIDC provider, as a node child process.
pub struct Idp {
    pub issuer: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Idp {
    pub fn start(o: &IdpOptions) -> Idp {
        let dir = tempfile::tempdir().expect("tempdir");
        let users: Vec<Value> = o
            .users
            .iter()
            .map(|u| {
                json!({"username": u.username, "password": u.password, "email": u.email,
                       "name": u.name, "groups": u.groups})
            })
            .collect();
        let cfg = json!({
            "port": o.port,
            "access_token_ttl": o.access_token_ttl,
            "clients": [{
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "redirect_uris": o.redirect_uris,
                "post_logout_redirect_uris": o.post_logout_redirect_uris,
                "id_token_signed_response_alg": o.alg,
                "token_endpoint_auth_method": o.auth_method,
            }],
            "users": users,
        });
        let path = dir.path().join("idp.json");
        std::fs::write(&path, cfg.to_string()).expect("write idp config");
        let server = repo().join("tests/idp/server.js");
        assert!(
            repo().join("tests/idp/node_modules").is_dir(),
            "tests/idp/node_modules missing: run scripts/install-deps.sh"
        );
        // A stalled start (seen rarely, twice in a row once on CI) is retried instead of
        // hanging; each stall is described (process state, kernel wait, CPU used) on stderr.
        const WAITS: [u64; 3] = [20, 30, 40];
        let mut attempt = 0;
        let (child, issuer) = loop {
            let wait = WAITS[attempt];
            attempt += 1;
            let started = Instant::now();
            let mut child = Command::new("node")
                .arg(&server)
                .arg(&path)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("start node (is Node.js installed?)");
            let stdout = child.stdout.take().expect("idp stdout");
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let mut line = String::new();
                let mut reader = BufReader::new(stdout);
                let _ = reader.read_line(&mut line);
                let _ = tx.send(line);
                // Keep draining so the IdP never blocks on a full pipe.
                let mut sink = String::new();
                while reader.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
                    sink.clear();
                }
            });
            match rx.recv_timeout(Duration::from_secs(wait)) {
                Ok(line) if line.starts_with("IDP_READY ") => {
                    let issuer = line.trim().trim_start_matches("IDP_READY ").to_string();
                    break (child, issuer);
                }
                other => {
                    let seen = describe_process(child.id());
                    let _ = child.kill();
                    let _ = child.wait();
                    eprintln!(
                        "IdP start {attempt}/{} failed after {:?}: {other:?}; {seen}",
                        WAITS.len(),
                        started.elapsed()
                    );
                    assert!(
                        attempt < WAITS.len(),
                        "IdP did not start: {other:?}; {seen}"
                    );
                }
            }
        };
        Idp {
            issuer,
            child,
            _dir: dir,
        }
    }

    pub fn client(&self) -> reqwest::Client {
        reqwest::Client::new()
    }

    /// Revokes everything of a user at the IdP (tokens, grants, sessions).
    pub async fn revoke_user(&self, sub: &str) -> u64 {
        let v: Value = self
            .client()
            .post(format!("{}/__test/revoke?sub={sub}", self.issuer))
            .send()
            .await
            .expect("revoke")
            .json()
            .await
            .expect("revoke json");
        v["revoked"].as_u64().unwrap_or(0)
    }

    pub async fn stats(&self) -> Value {
        self.client()
            .get(format!("{}/__test/stats", self.issuer))
            .send()
            .await
            .expect("stats")
            .json()
            .await
            .expect("stats json")
    }

    pub async fn reset_stats(&self) {
        self.client()
            .post(format!("{}/__test/stats/reset", self.issuer))
            .send()
            .await
            .expect("reset stats");
    }

    pub async fn tokens(&self, sub: &str) -> Value {
        self.client()
            .get(format!("{}/__test/tokens?sub={sub}", self.issuer))
            .send()
            .await
            .expect("tokens")
            .json()
            .await
            .expect("tokens json")
    }

    /// Breaks every provider endpoint (`mode=status&status=503`, `mode=garbage`,
    /// `mode=reset`) until `mode=none`.
    pub async fn set_fault(&self, query: &str) {
        let r = self
            .client()
            .post(format!("{}/__test/fault?{query}", self.issuer))
            .send()
            .await
            .expect("fault");
        assert_eq!(r.status(), 200, "fault {query}");
    }

    /// Stops listening (connections refused) for `ms` milliseconds.
    pub async fn outage(&self, ms: u64) {
        let r = self
            .client()
            .post(format!("{}/__test/outage?ms={ms}", self.issuer))
            .send()
            .await
            .expect("outage");
        assert_eq!(r.status(), 200, "outage");
    }

    pub async fn set_delay(&self, ms: u64) {
        self.client()
            .post(format!("{}/__test/delay?ms={ms}", self.issuer))
            .send()
            .await
            .expect("delay");
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One application entry of a test configuration.
pub struct AppCfg {
    pub name: String,
    pub external_host: String,
    pub mode: &'static str,
    pub cookie_domain: String,
    pub skip_path_regex: String,
    pub allowed_groups: Vec<String>,
}

impl AppCfg {
    pub fn single(name: &str, external_host: String) -> AppCfg {
        AppCfg {
            name: name.into(),
            external_host,
            mode: "forward_single",
            cookie_domain: String::new(),
            skip_path_regex: String::new(),
            allowed_groups: vec![],
        }
    }
}

/// Builds a standalone YAML configuration.
pub fn outpost_yaml(
    listen: SocketAddr,
    issuer: &str,
    secret: &str,
    cache_ttl_secs: u64,
    apps: &[AppCfg],
) -> String {
    let mut y = format!(
        "listen:\n  http: \"{listen}\"\n  metrics: \"\"\nsecret: \"{secret}\"\nprovider:\n  issuer: \"{issuer}\"\n  client_id: \"{CLIENT_ID}\"\n  client_secret: \"{CLIENT_SECRET}\"\n  scopes: [openid, profile, email, groups]\n  introspection_cache_ttl: {cache_ttl_secs}\nlog:\n  level: info\n  format: text\napplications:\n"
    );
    for a in apps {
        y.push_str(&format!(
            "  - name: {}\n    external_host: \"{}\"\n    mode: {}\n    cookie_domain: \"{}\"\n    skip_path_regex: {}\n    allowed_groups: {}\n",
            a.name,
            a.external_host,
            a.mode,
            a.cookie_domain,
            serde_json::to_string(&a.skip_path_regex).unwrap(),
            serde_json::to_string(&a.allowed_groups).unwrap(),
        ));
    }
    y
}

/// The outpost served in-process on an already bound listener (port 0).
pub struct InProcess {
    pub addr: SocketAddr,
    pub outpost: Arc<Outpost>,
    stop: watch::Sender<bool>,
}

impl InProcess {
    /// Binds 127.0.0.1:0 now; serving starts with [`InProcess::serve`].
    pub fn bind() -> std::net::TcpListener {
        let l = StdListener::bind("127.0.0.1:0").expect("bind outpost");
        l.set_nonblocking(true).expect("nonblocking");
        l
    }

    /// Serves `yaml` on `listener` in the current runtime.
    pub async fn serve(listener: std::net::TcpListener, yaml: &str) -> InProcess {
        let cfg = Config::from_yaml(yaml).unwrap_or_else(|e| panic!("test config invalid: {e}"));
        let addr = listener.local_addr().expect("addr");
        let outpost = Arc::new(Outpost::new(
            Runtime::from_config(&cfg, None).expect("outbound TLS set up"),
        ));
        let (stop, rx) = watch::channel(false);
        let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
        let o = Arc::clone(&outpost);
        tokio::spawn(async move {
            let mut rx = rx;
            server::serve(listener, Listener::Http, None, o, async move {
                let _ = rx.wait_for(|s| *s).await;
            })
            .await;
        });
        let me = InProcess {
            addr,
            outpost,
            stop,
        };
        me.wait_ready().await;
        me
    }

    pub async fn wait_ready(&self) {
        wait_ready(self.addr).await;
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Waits until the outpost at `addr` reports its provider ready (30 s at most; the outpost
/// retries discovery at least every 5 s).
pub async fn wait_ready(addr: SocketAddr) {
    let c = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = c
            .get(format!("http://{addr}/outpost.goauthentik.io/ready"))
            .send()
            .await
            && r.status() == 200
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "outpost at {addr} never became ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The real `ak-outpost` binary as a child process.
pub struct Binary {
    pub addr: SocketAddr,
    pub child: Child,
    pub config: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

pub fn binary_path() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ak-outpost"))
}

impl Binary {
    /// Starts the binary with `yaml` (which must listen on `addr`) and waits for `/ping`.
    pub async fn start(addr: SocketAddr, yaml: &str) -> Binary {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("outpost.yaml");
        std::fs::write(&config, yaml).expect("write config");
        let mut b = Binary::spawn(addr, &config);
        b._dir = Some(dir);
        b.wait_ping().await;
        b
    }

    pub fn spawn(addr: SocketAddr, config: &Path) -> Binary {
        let child = Command::new(binary_path())
            .arg("--config")
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn ak-outpost");
        Binary {
            addr,
            child,
            config: config.to_path_buf(),
            _dir: None,
        }
    }

    /// Starts the binary in authentik mode with `env` (no arguments), listening on `addr`.
    pub fn spawn_env(addr: SocketAddr, env: &[(&str, String)]) -> Binary {
        let mut cmd = Command::new(binary_path());
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("AUTHENTIK_LISTEN__HTTP", addr.to_string())
            .env("AK_OUTPOST_RELOAD_JITTER", "0")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if !env.iter().any(|(k, _)| *k == "AUTHENTIK_LISTEN__METRICS") {
            cmd.env(
                "AUTHENTIK_LISTEN__METRICS",
                format!("127.0.0.1:{}", free_port()),
            );
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        Binary {
            addr,
            child: cmd.spawn().expect("spawn ak-outpost"),
            config: PathBuf::new(),
            _dir: None,
        }
    }

    pub async fn wait_ping(&mut self) {
        let c = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = c
                .get(format!("http://{}/outpost.goauthentik.io/ping", self.addr))
                .send()
                .await
                && r.status() == 204
            {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("ak-outpost exited early: {status}");
            }
            assert!(Instant::now() < deadline, "ak-outpost never answered /ping");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// SIGTERM and wait.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        terminate(&mut self.child, Duration::from_secs(15))
    }
}

/// SIGTERM, then up to `grace` for the process to exit, then SIGKILL; returns how it ended.
pub fn terminate(child: &mut Child, grace: Duration) -> std::process::ExitStatus {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let deadline = Instant::now() + grace;
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return child.wait().expect("wait");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The nginx check (`/outpost.goauthentik.io/auth/nginx`) as nginx asks it of the outpost at
/// `outpost`: `Host` and `X-Original-URL` set, with `headers` besides.
pub async fn nginx_check(
    outpost: SocketAddr,
    host: &str,
    original: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .get(format!(
            "http://{outpost}/outpost.goauthentik.io/auth/nginx"
        ))
        .header("Host", host)
        .header("X-Original-URL", original);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.expect("nginx check")
}

/// An HTTP client with a cookie jar that resolves the test host names to loopback and
/// follows redirects itself (so tests can look at each hop).
pub struct Browser {
    pub client: reqwest::Client,
    pub jar: Arc<reqwest::cookie::Jar>,
}

/// A response with its body read.
#[derive(Debug)]
pub struct Page {
    pub status: u16,
    pub url: String,
    pub headers: HeaderMap,
    pub body: String,
}

impl Page {
    pub fn location(&self) -> Option<String> {
        self.headers
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.to_string())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }

    /// The echo app's view of one request header.
    pub fn echoed(&self, name: &str) -> Option<String> {
        self.json()["headers"][name.to_ascii_lowercase()]
            .as_array()
            .map(|v| {
                v.iter()
                    .map(|s| s.as_str().unwrap_or_default().to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            })
    }

    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all(reqwest::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_string))
            .collect()
    }
}

impl Browser {
    /// `hosts` resolve to `127.0.0.1:port`.
    pub fn new(hosts: &[(&str, u16)]) -> Browser {
        let jar = Arc::new(reqwest::cookie::Jar::default());
        let mut b = reqwest::Client::builder()
            .cookie_provider(Arc::clone(&jar))
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(20));
        for (h, port) in hosts {
            b = b.resolve(h, SocketAddr::from(([127, 0, 0, 1], *port)));
        }
        Browser {
            client: b.build().expect("client"),
            jar,
        }
    }

    pub async fn get(&self, url: &str) -> Page {
        self.get_with(url, &[]).await
    }

    pub async fn get_with(&self, url: &str, headers: &[(&str, &str)]) -> Page {
        let mut req = self.client.get(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let r = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        page(r).await
    }

    pub async fn post_form(&self, url: &str, form: &[(String, String)]) -> Page {
        let r = self
            .client
            .post(url)
            .form(form)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {url}: {e}"));
        page(r).await
    }

    /// Follows redirects (at most 20) from `url`; returns every page in order.
    pub async fn follow(&self, url: &str) -> Vec<Page> {
        let mut pages = Vec::new();
        let mut next = url.to_string();
        for _ in 0..20 {
            let p = self.get(&next).await;
            let loc = p.location();
            let status = p.status;
            let base = p.url.clone();
            pages.push(p);
            match loc {
                Some(l) if (300..400).contains(&status) => next = resolve(&base, &l),
                _ => return pages,
            }
        }
        panic!(
            "redirect loop from {url}: {:?}",
            pages.iter().map(|p| &p.url).collect::<Vec<_>>()
        );
    }

    /// Opens `url`; if it leads to the IdP's login form, logs in as `user`, then follows the
    /// redirects back. Returns the final page.
    pub async fn login(&self, url: &str, user: &str, password: &str) -> Page {
        let pages = self.follow(url).await;
        let last = pages.into_iter().last().expect("a page");
        self.submit_login(last, user, password).await
    }

    /// If `page` is the login form, submits it and follows the redirects.
    pub async fn submit_login(&self, page: Page, user: &str, password: &str) -> Page {
        if !page.body.contains("login-form") {
            return page;
        }
        let action = form_action(&page.body).expect("login form action");
        let action = resolve(&page.url, &action);
        let resp = self
            .post_form(
                &action,
                &[
                    ("username".into(), user.into()),
                    ("password".into(), password.into()),
                ],
            )
            .await;
        assert!(
            (300..400).contains(&resp.status),
            "login POST failed: {} {}",
            resp.status,
            resp.body
        );
        let next = resolve(&resp.url, &resp.location().expect("login redirect"));
        self.follow(&next).await.into_iter().last().expect("page")
    }

    /// Submits the IdP's logout confirmation form if `page` is one; follows redirects.
    pub async fn confirm_logout(&self, page: Page) -> Page {
        let Some(action) = form_action(&page.body) else {
            return page;
        };
        let action = resolve(&page.url, &action);
        let mut form: Vec<(String, String)> = hidden_inputs(&page.body);
        if !form.iter().any(|(k, _)| k == "logout") {
            form.push(("logout".into(), "yes".into()));
        }
        let resp = self.post_form(&action, &form).await;
        match resp.location() {
            Some(l) if (300..400).contains(&resp.status) => {
                let next = resolve(&resp.url, &l);
                self.follow(&next).await.into_iter().last().expect("page")
            }
            _ => resp,
        }
    }

    /// Adds a raw cookie for `url`.
    pub fn add_cookie(&self, cookie: &str, url: &str) {
        self.jar
            .add_cookie_str(cookie, &url.parse().expect("cookie url"));
    }

    /// The `Cookie` header this browser would send to `url`.
    pub fn cookies_for(&self, url: &str) -> String {
        use reqwest::cookie::CookieStore;
        self.jar
            .cookies(&url.parse().expect("url"))
            .and_then(|v| v.to_str().ok().map(str::to_string))
            .unwrap_or_default()
    }
}

async fn page(r: reqwest::Response) -> Page {
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

/// Resolves a `Location` against the URL it came from.
pub fn resolve(base: &str, loc: &str) -> String {
    url::Url::parse(base)
        .and_then(|b| b.join(loc))
        .map(|u| u.to_string())
        .unwrap_or_else(|_| loc.to_string())
}

fn form_action(html: &str) -> Option<String> {
    let i = html.find("<form")?;
    let rest = &html[i..];
    let a = rest.find("action=\"")? + "action=\"".len();
    let end = rest[a..].find('"')?;
    Some(html_unescape(&rest[a..a + end]))
}

fn hidden_inputs(html: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for part in html.split("<input").skip(1) {
        let tag = &part[..part.find('>').unwrap_or(part.len())];
        let attr = |n: &str| {
            let key = format!("{n}=\"");
            tag.find(&key).map(|i| {
                let s = &tag[i + key.len()..];
                html_unescape(&s[..s.find('"').unwrap_or(s.len())])
            })
        };
        if let (Some(n), Some(v)) = (attr("name"), attr("value")) {
            out.push((n, v));
        }
    }
    out
}

fn html_unescape(s: &str) -> String {
    s.replace("&amp;", "&")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#x2F;", "/")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
}

/// A full stack: echo app, nginx with an example, the IdP and an in-process outpost.
pub struct Stack {
    pub echo: echo::EchoApp,
    pub nginx: nginx::Nginx,
    pub idp: Idp,
    pub outpost: InProcess,
    pub browser: Browser,
}

/// Options for [`Stack::start`].
pub struct StackOptions {
    pub example: nginx::Example,
    pub cache_ttl: u64,
    pub access_token_ttl: u64,
    pub alg: &'static str,
    pub skip_path_regex: String,
    pub allowed_groups: Vec<String>,
    /// Groups for alice (default: admins, users).
    pub alice_groups: Option<Vec<String>>,
    /// `provider.outage_grace` (default: unset, the outpost's default).
    pub outage_grace: Option<&'static str>,
    /// `provider.new_token_checks_per_second` (default: unset, the outpost's default).
    pub new_token_checks_per_second: Option<u32>,
}

impl Default for StackOptions {
    fn default() -> Self {
        StackOptions {
            example: nginx::Example::Plain,
            cache_ttl: 60,
            access_token_ttl: 3600,
            alg: "RS256",
            skip_path_regex: String::new(),
            allowed_groups: vec![],
            alice_groups: None,
            outage_grace: None,
            new_token_checks_per_second: None,
        }
    }
}

impl Stack {
    pub async fn start(o: StackOptions) -> Stack {
        let listener = InProcess::bind();
        let outpost_addr = listener.local_addr().expect("addr");
        let echo = echo::EchoApp::start().await;
        let nginx = nginx::Nginx::start(
            o.example,
            &nginx::NginxVars {
                outpost: outpost_addr,
                app_upstream: echo.addr,
                app_host: APP_HOST.into(),
                auth_host: AUTH_HOST.into(),
                outposts: vec![],
            },
        );
        let domain = o.example == nginx::Example::DomainLevel;
        let app_url = nginx.base_url(APP_HOST);
        let auth_url = nginx.base_url(AUTH_HOST);
        let external = if domain {
            auth_url.clone()
        } else {
            app_url.clone()
        };
        let mut idp_o = IdpOptions::new(vec![format!(
            "{external}/outpost.goauthentik.io/callback?X-authentik-auth-callback=true"
        )]);
        idp_o.alg = o.alg;
        idp_o.access_token_ttl = o.access_token_ttl;
        if let Some(g) = o.alice_groups {
            idp_o.users[0].groups = g;
        }
        let idp = Idp::start(&idp_o);
        let mut app = AppCfg::single("app", external);
        app.skip_path_regex = o.skip_path_regex;
        app.allowed_groups = o.allowed_groups;
        if domain {
            app.mode = "forward_domain";
            app.cookie_domain = "example.test".into();
        }
        let mut yaml = outpost_yaml(outpost_addr, &idp.issuer, SECRET, o.cache_ttl, &[app]);
        if let Some(grace) = o.outage_grace {
            let ttl = format!("  introspection_cache_ttl: {}\n", o.cache_ttl);
            yaml = yaml.replace(&ttl, &format!("{ttl}  outage_grace: {grace}\n"));
            assert!(yaml.contains("outage_grace"), "grace not set");
        }
        if let Some(rate) = o.new_token_checks_per_second {
            let ttl = format!("  introspection_cache_ttl: {}\n", o.cache_ttl);
            yaml = yaml.replace(
                &ttl,
                &format!("{ttl}  new_token_checks_per_second: {rate}\n"),
            );
            assert!(yaml.contains("new_token_checks_per_second"), "rate not set");
        }
        let outpost = InProcess::serve(listener, &yaml).await;
        let browser = Browser::new(&[(APP_HOST, nginx.port), (AUTH_HOST, nginx.port)]);
        Stack {
            echo,
            nginx,
            idp,
            outpost,
            browser,
        }
    }

    pub fn app_url(&self, path: &str) -> String {
        format!("{}{path}", self.nginx.base_url(APP_HOST))
    }

    /// Logs `user` in through the app and returns the landing page.
    pub async fn login(&self, path: &str, user: &User) -> Page {
        self.browser
            .login(&self.app_url(path), user.username, user.password)
            .await
    }
}

/// What a child process is doing, from /proc: its state, where the kernel has it waiting,
/// and its CPU time so far (for the message of a helper that did not start in time).
fn describe_process(pid: u32) -> String {
    let read = |name: &str| std::fs::read_to_string(format!("/proc/{pid}/{name}"));
    let state = read("status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("State:"))
                .map(str::to_string)
        })
        .unwrap_or_else(|| "State: gone".into());
    let wchan = read("wchan").unwrap_or_default();
    // Fields 14 and 15 of /proc/<pid>/stat (after the command name): user and system ticks.
    let cpu = read("stat")
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1.split_whitespace().collect::<Vec<_>>();
            Some(format!(
                "utime {} stime {} ticks",
                rest.get(11)?,
                rest.get(12)?
            ))
        })
        .unwrap_or_default();
    format!("pid {pid} {state}, wchan {wchan:?}, {cpu}")
}
