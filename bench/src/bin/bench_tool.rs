//! Helpers for bench/run.sh, each printing one JSON object on stdout:
//!
//! * `login`   — logs a user in through the outpost's real flow (/start → IdP login form →
//!   /callback) and prints the session cookie plus the tokens sealed inside it.
//! * `mint`    — mints many distinct, active access tokens at the IdP with refresh-token grants
//!   (oidc-provider does not rotate a confidential client's refresh token), one per line.
//! * `fill`    — sends one `/auth/nginx` check per token, each with its own sealed session
//!   cookie, so the outpost ends up with that many cached introspections.
//! * `startup` — times exec → first `204` on `/outpost.goauthentik.io/ping`, many runs.
//! * `soak`    — a bounded mixed load (valid and invalid cookies, Bearer tokens, full logins
//!   and sign-outs) with per-kind errors and latency, and the outpost's RSS over time
//!   (`bench/soak.sh`).
//!
//! All network traffic goes to loopback addresses given on the command line.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ak_outpost::core::app::cookie_name;
use ak_outpost::core::identity::Identity;
use ak_outpost::core::seal::Sealer;
use ak_outpost::core::session::Session;
use ak_outpost::core::token::unix_now;
use reqwest::header::{HOST, LOCATION, SET_COOKIE};
use serde_json::{Value, json};

type Res<T> = Result<T, String>;

/// `--name value` arguments.
struct Args(BTreeMap<String, String>);

impl Args {
    fn parse(rest: &[String]) -> Res<Args> {
        let mut m = BTreeMap::new();
        let mut it = rest.iter();
        while let Some(k) = it.next() {
            let k = k
                .strip_prefix("--")
                .ok_or_else(|| format!("expected --name, got {k}"))?;
            let v = it.next().ok_or_else(|| format!("--{k} needs a value"))?;
            m.insert(k.to_string(), v.clone());
        }
        Ok(Args(m))
    }
    fn get(&self, k: &str) -> Res<String> {
        self.0
            .get(k)
            .cloned()
            .ok_or_else(|| format!("missing --{k}"))
    }
    fn num(&self, k: &str, default: usize) -> Res<usize> {
        match self.0.get(k) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|e| format!("--{k}: {e}")),
        }
    }
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    let Some(cmd) = argv.get(1) else {
        eprintln!("usage: bench-tool login|mint|fill|startup|soak --name value ...");
        std::process::exit(2);
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let result = Args::parse(&argv[2..]).and_then(|a| match cmd.as_str() {
        "login" => rt.block_on(login(&a)),
        "mint" => rt.block_on(mint(&a)),
        "fill" => rt.block_on(fill(&a)),
        "startup" => startup(&a),
        "soak" => rt.block_on(soak(&a)),
        other => Err(format!("unknown command {other}")),
    });
    match result {
        Ok(v) => println!("{v}"),
        Err(e) => {
            eprintln!("bench-tool {cmd}: {e}");
            std::process::exit(1);
        }
    }
}

fn client() -> Res<reqwest::Client> {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .no_proxy()
        .build()
        .map_err(|e| e.to_string())
}

/// Logs in: `--outpost 127.0.0.1:P --host app.bench.test --user alice --password ...
/// --secret S --client-id ID`. Requests to the app host are sent to the outpost with that
/// `Host` header; the IdP's own URLs are used as they are.
async fn login(a: &Args) -> Res<Value> {
    let outpost: SocketAddr = a.get("outpost")?.parse().map_err(|e| format!("{e}"))?;
    login_flow(
        outpost,
        &a.get("host")?,
        &a.get("user")?,
        &a.get("password")?,
        &a.get("secret")?,
        &a.get("client-id")?,
    )
    .await
}

/// The login flow of [`login`]; the result's `cookie` is a ready `Cookie` header value.
async fn login_flow(
    outpost: SocketAddr,
    host: &str,
    user: &str,
    password: &str,
    secret: &str,
    client_id: &str,
) -> Res<Value> {
    let host = host.to_string();
    let c = client()?;
    let to_outpost = |path_and_query: &str| {
        c.get(format!("http://{outpost}{path_and_query}"))
            .header(HOST, host.as_str())
    };
    // 1. /start → the IdP's authorization URL.
    let r = to_outpost("/outpost.goauthentik.io/start")
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let mut next = location(&r)?;
    // 2. Follow the IdP to its login form.
    let mut page_url;
    let body;
    loop {
        let r = c.get(&next).send().await.map_err(|e| e.to_string())?;
        page_url = r.url().clone();
        if r.status().is_redirection() {
            next = page_url
                .join(&location(&r)?)
                .map_err(|e| e.to_string())?
                .to_string();
            continue;
        }
        body = r.text().await.map_err(|e| e.to_string())?;
        break;
    }
    let action = form_action(&body).ok_or("no login form at the IdP")?;
    let action = page_url.join(&action).map_err(|e| e.to_string())?;
    let r = c
        .post(action)
        .form(&[("username", user), ("password", password)])
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !r.status().is_redirection() {
        return Err(format!("login POST answered {}", r.status()));
    }
    // 3. Follow the IdP until it sends the browser to the callback on the app host.
    let mut next = page_url.join(&location(&r)?).map_err(|e| e.to_string())?;
    for _ in 0..10 {
        if next.host_str() == Some(host.as_str()) {
            break;
        }
        let r = c
            .get(next.clone())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        next = next.join(&location(&r)?).map_err(|e| e.to_string())?;
    }
    if next.host_str() != Some(host.as_str()) {
        return Err(format!("never redirected to the app host; last {next}"));
    }
    let pq = match next.query() {
        Some(q) => format!("{}?{q}", next.path()),
        None => next.path().to_string(),
    };
    let r = to_outpost(&pq).send().await.map_err(|e| e.to_string())?;
    if r.status().as_u16() != 302 {
        return Err(format!("callback answered {}", r.status()));
    }
    let name = cookie_name(client_id);
    let mut parts: Vec<(String, String)> = Vec::new();
    for v in r.headers().get_all(SET_COOKIE) {
        let v = v.to_str().unwrap_or_default();
        let pair = v.split(';').next().unwrap_or_default();
        if let Some((k, val)) = pair.split_once('=')
            && (k == &*name || k.starts_with(&format!("{name}_")))
            && !val.is_empty()
        {
            parts.push((k.to_string(), val.to_string()));
        }
    }
    if parts.is_empty() {
        return Err("callback set no session cookie".into());
    }
    let joined: String = parts.iter().map(|(_, v)| v.as_str()).collect();
    let cookie = parts
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("; ");
    let sealer = Sealer::new(secret.as_bytes(), "session");
    let plain = sealer
        .unseal(name.as_bytes(), &joined)
        .ok_or("cannot unseal the session cookie (wrong --secret?)")?;
    let session: Value = serde_json::from_slice(&plain).map_err(|e| e.to_string())?;
    Ok(json!({
        "cookie": cookie,
        "cookie_bytes": cookie.len(),
        "access_token": session["at"],
        "refresh_token": session["rt"],
        "access_expires_at": session["ax"],
        "username": session["i"]["u"],
    }))
}

fn location(r: &reqwest::Response) -> Res<String> {
    r.headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .ok_or_else(|| format!("{} {} without Location", r.url(), r.status()))
}

fn form_action(html: &str) -> Option<String> {
    let i = html.find("<form")?;
    let rest = &html[i..];
    let a = rest.find("action=\"")? + "action=\"".len();
    let end = rest[a..].find('"')?;
    Some(
        rest[a..a + end]
            .replace("&amp;", "&")
            .replace("&#x2F;", "/"),
    )
}

/// Mints `--count` access tokens: `--issuer URL --client-id --client-secret --refresh-token
/// --out FILE [--concurrency 8]`. The refresh grants ask for no `openid` scope, so the IdP
/// signs no ID token and minting stays cheap.
async fn mint(a: &Args) -> Res<Value> {
    let count = a.num("count", 1000)?;
    let conc = a.num("concurrency", 8)?.max(1);
    let token_url = format!("{}/token", a.get("issuer")?.trim_end_matches('/'));
    let form = Arc::new(vec![
        ("grant_type", "refresh_token".to_string()),
        ("refresh_token", a.get("refresh-token")?),
        ("client_id", a.get("client-id")?),
        ("client_secret", a.get("client-secret")?),
        (
            "scope",
            a.0.get("scope")
                .cloned()
                .unwrap_or_else(|| "profile email groups".into()),
        ),
    ]);
    let c = client()?;
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let (c, form, next, url) = (
            c.clone(),
            Arc::clone(&form),
            Arc::clone(&next),
            token_url.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < count {
                let r = c
                    .post(&url)
                    .form(&*form)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                let status = r.status();
                let v: Value = r.json().await.map_err(|e| e.to_string())?;
                match v["access_token"].as_str() {
                    Some(t) if status.is_success() => out.push(t.to_string()),
                    _ => return Err(format!("refresh grant answered {status}: {v}")),
                }
            }
            Ok::<_, String>(out)
        }));
    }
    let mut all = Vec::with_capacity(count);
    for t in tasks {
        all.extend(t.await.map_err(|e| e.to_string())??);
    }
    let secs = started.elapsed().as_secs_f64();
    let mut f = std::fs::File::create(a.get("out")?).map_err(|e| e.to_string())?;
    for t in &all {
        writeln!(f, "{t}").map_err(|e| e.to_string())?;
    }
    Ok(json!({"tokens": all.len(), "seconds": secs, "per_second": all.len() as f64 / secs}))
}

/// Sends one check per token with a freshly sealed session cookie around it:
/// `--outpost ADDR --host H --url ORIGINAL_URL --secret S --client-id ID --tokens FILE
/// [--count N] [--concurrency 32]`.
async fn fill(a: &Args) -> Res<Value> {
    let outpost = a.get("outpost")?;
    let host = a.get("host")?;
    let original = a.get("url")?;
    let name = cookie_name(&a.get("client-id")?);
    let sealer = Arc::new(Sealer::new(a.get("secret")?.as_bytes(), "session"));
    let text = std::fs::read_to_string(a.get("tokens")?).map_err(|e| e.to_string())?;
    let mut tokens: Vec<String> = text
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    tokens.truncate(a.num("count", tokens.len())?);
    let tokens = Arc::new(tokens);
    let conc = a.num("concurrency", 32)?.max(1);
    let c = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(conc)
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| e.to_string())?;
    let url = format!("http://{outpost}/outpost.goauthentik.io/auth/nginx");
    let now = unix_now();
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let (c, tokens, next, sealer) = (
            c.clone(),
            Arc::clone(&tokens),
            Arc::clone(&next),
            Arc::clone(&sealer),
        );
        let (url, host, original, name) =
            (url.clone(), host.clone(), original.clone(), name.clone());
        tasks.push(tokio::spawn(async move {
            let mut counts: BTreeMap<u16, u64> = BTreeMap::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(token) = tokens.get(i) else { break };
                let s = Session {
                    version: 1,
                    identity: Identity {
                        sub: "alice".into(),
                        username: "alice".into(),
                        email: "alice@example.test".into(),
                        name: "Alice Liddell".into(),
                        groups: vec!["admins".into(), "users".into()],
                        ..Default::default()
                    },
                    access_token: token.clone(),
                    access_expires_at: now + 3000,
                    access_issued_at: now,
                    refresh_token: None,
                    id_token: None,
                    expires_at: now + 3000,
                };
                let sealed =
                    sealer.seal(name.as_bytes(), &serde_json::to_vec(&s).unwrap_or_default());
                let status = match c
                    .get(&url)
                    .header(HOST, &host)
                    .header("X-Original-URL", &original)
                    .header("Cookie", format!("{name}={sealed}"))
                    .send()
                    .await
                {
                    Ok(r) => r.status().as_u16(),
                    Err(_) => 0,
                };
                *counts.entry(status).or_default() += 1;
            }
            counts
        }));
    }
    let mut counts: BTreeMap<u16, u64> = BTreeMap::new();
    for t in tasks {
        for (k, v) in t.await.map_err(|e| e.to_string())? {
            *counts.entry(k).or_default() += v;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let counts: BTreeMap<String, u64> = counts
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    Ok(json!({"requests": tokens.len(), "status": counts, "seconds": secs}))
}

/// Times exec → first 204 on /ping: `--bin PATH --config FILE --addr ADDR [--runs 30]`.
fn startup(a: &Args) -> Res<Value> {
    let bin = a.get("bin")?;
    let config = a.get("config")?;
    let addr: SocketAddr = a.get("addr")?.parse().map_err(|e| format!("{e}"))?;
    let runs = a.num("runs", 30)?;
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        let mut child = Command::new(&bin)
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawn {bin}: {e}"))?;
        let deadline = started + Duration::from_secs(10);
        let took = loop {
            if ping(addr) {
                break started.elapsed();
            }
            if let Ok(Some(st)) = child.try_wait() {
                return Err(format!("ak-outpost exited during start-up: {st}"));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err("no 204 on /ping within 10 s".into());
            }
            std::thread::sleep(Duration::from_micros(200));
        };
        times.push(took.as_secs_f64() * 1000.0);
        let _ = child.kill();
        let _ = child.wait();
        // Let the port go before the next run.
        std::thread::sleep(Duration::from_millis(30));
    }
    let mut sorted = times.clone();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let pick = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
    Ok(json!({
        "runs": runs, "median_ms": pick(0.5), "min_ms": pick(0.0), "p90_ms": pick(0.9),
        "max_ms": pick(1.0)
    }))
}

fn ping(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(50)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(
        b"GET /outpost.goauthentik.io/ping HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n",
    )
    .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 64];
    let mut got = 0;
    while got < 12 {
        match s.read(&mut buf[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    got >= 12 && &buf[9..12] == b"204"
}

/// The request kinds of the soak, with the status each must answer.
const SOAK_KINDS: [(&str, u16); 6] = [
    ("valid_cookie", 200),
    ("invalid_cookie", 401),
    ("bearer", 200),
    ("login", 200),
    ("sign_out", 302),
    ("signed_out_cookie", 401),
];

/// Per-kind counts and latencies (microseconds).
#[derive(Default)]
struct Tally {
    requests: [u64; 6],
    errors: [u64; 6],
    latencies: [Vec<u32>; 6],
    examples: Vec<String>,
}

impl Tally {
    fn record(&mut self, kind: usize, took: Duration, outcome: Result<u16, String>) {
        self.requests[kind] += 1;
        self.latencies[kind].push(took.as_micros().min(u32::MAX as u128) as u32);
        let want = SOAK_KINDS[kind].1;
        if outcome.as_ref().ok() != Some(&want) {
            self.errors[kind] += 1;
            if self.examples.len() < 20 {
                self.examples.push(format!(
                    "{}: {outcome:?}, expected {want}",
                    SOAK_KINDS[kind].0
                ));
            }
        }
    }
}

/// VmRSS of `pid` and the two parts of it: RssAnon (the process's own memory: heap, stacks)
/// and RssFile (pages mapped from files: the binary's code and constants), in KiB.
fn mem_kib(pid: &str) -> Res<Mem> {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| format!("{e}"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .ok_or_else(|| format!("no {name} in /proc/{pid}/status"))
    };
    Ok(Mem {
        rss: field("VmRSS:")?,
        anon: field("RssAnon:")?,
        file: field("RssFile:")?,
    })
}

#[derive(Clone, Copy)]
struct Mem {
    rss: u64,
    anon: u64,
    file: u64,
}

fn percentile(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize] as f64 / 1000.0
}

/// A bounded mixed load against one outpost:
/// `--outpost ADDR --host H --url ORIGINAL_URL --secret S --client-id ID --user U
/// --password P --pid OUTPOST_PID --out-dir DIR [--duration 300] [--rate 200]
/// [--warmup 60] [--sample 10] [--workers 4] [--login-every-ms 1000]`.
///
/// `--rate` checks per second are spread over `--workers` paced loops, each picking its next
/// kind from a fixed cycle of 20: 16 valid session cookies, 2 invalid cookies (random, never
/// the same twice), 2 Bearer tokens (the session's access token). One more loop runs, every
/// `--login-every-ms`, a full login through `/start` and the IdP to `/callback`, then
/// `/sign_out` with the new session, then a check with the signed-out cookie (401).
/// VmRSS of `--pid` is sampled every `--sample` seconds. Writes `soak.csv` (per kind) and
/// `soak-rss.csv` (samples) to `--out-dir`, prints a table on stderr and a JSON summary.
async fn soak(a: &Args) -> Res<Value> {
    let outpost: SocketAddr = a.get("outpost")?.parse().map_err(|e| format!("{e}"))?;
    let host = a.get("host")?;
    let original = a.get("url")?;
    let secret = a.get("secret")?;
    let client_id = a.get("client-id")?;
    let (user, password) = (a.get("user")?, a.get("password")?);
    let pid = a.get("pid")?;
    let out_dir = std::path::PathBuf::from(a.get("out-dir")?);
    let duration = Duration::from_secs(a.num("duration", 300)? as u64);
    let warmup = Duration::from_secs(a.num("warmup", 60)? as u64);
    let sample = Duration::from_secs(a.num("sample", 10)?.max(1) as u64);
    let rate = a.num("rate", 200)?.max(1);
    let workers = a.num("workers", 4)?.clamp(1, rate);
    let login_every = Duration::from_millis(a.num("login-every-ms", 1000)?.max(50) as u64);
    if warmup >= duration {
        return Err("--warmup must be shorter than --duration".into());
    }

    // The long-lived session every valid check uses.
    let main = login_flow(outpost, &host, &user, &password, &secret, &client_id).await?;
    let cookie = main["cookie"].as_str().ok_or("no cookie")?.to_string();
    let bearer = format!(
        "Bearer {}",
        main["access_token"].as_str().ok_or("no access token")?
    );
    let name = cookie_name(&client_id);
    // The outpost closes a keep-alive connection idle for 15 s (its header timeout); a
    // client that keeps one longer may send on it as it closes and get a transport error
    // (one in 365,000 checks in a 30-minute soak). nginx retries such a request on a new
    // connection, reqwest does not: so idle connections are dropped first, as nginx's would
    // be with a `keepalive_timeout` under 15 s.
    let checks = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(workers + 2)
        .pool_idle_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())?;
    let auth_url = format!("http://{outpost}/outpost.goauthentik.io/auth/nginx");
    let tally = Arc::new(std::sync::Mutex::new(Tally::default()));
    let started = Instant::now();
    let end = started + duration;
    let mut tasks = Vec::new();

    let check = {
        let (checks, auth_url, host, original) = (
            checks.clone(),
            auth_url.clone(),
            host.clone(),
            original.clone(),
        );
        move |header: &'static str, value: String| {
            let req = checks
                .get(&auth_url)
                .header(HOST, &host)
                .header("X-Original-URL", &original)
                .header(header, value);
            async move {
                req.send()
                    .await
                    .map(|r| r.status().as_u16())
                    .map_err(|e| e.to_string())
            }
        }
    };

    // The check loops.
    let per_worker = Duration::from_secs_f64(workers as f64 / rate as f64);
    for w in 0..workers {
        let (tally, check, cookie, bearer, name) = (
            Arc::clone(&tally),
            check.clone(),
            cookie.clone(),
            bearer.clone(),
            name.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(per_worker);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut n: u64 = w as u64 * 7;
            let mut salt: u64 = 0x9e37_79b9_7f4a_7c15 ^ (w as u64) << 32 ^ unix_now() as u64;
            while Instant::now() < end {
                tick.tick().await;
                n += 1;
                let (kind, header, value) = match n % 20 {
                    0 | 10 => {
                        // xorshift: a different invalid value every time.
                        salt ^= salt << 13;
                        salt ^= salt >> 7;
                        salt ^= salt << 17;
                        (1, "Cookie", format!("{name}=AAAA{salt:016x}{n:x}garbage"))
                    }
                    5 | 15 => (2, "Authorization", bearer.clone()),
                    _ => (0, "Cookie", cookie.clone()),
                };
                let t = Instant::now();
                let outcome = check(header, value).await;
                let took = t.elapsed();
                tally.lock().unwrap().record(kind, took, outcome);
            }
        }));
    }

    // The login / sign-out loop.
    {
        let (tally, check, host, user, password, secret, client_id) = (
            Arc::clone(&tally),
            check.clone(),
            host.clone(),
            user.clone(),
            password.clone(),
            secret.clone(),
            client_id.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(login_every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let plain = reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(10))
                .build()
                .expect("client");
            while Instant::now() < end {
                tick.tick().await;
                let t = Instant::now();
                let got = login_flow(outpost, &host, &user, &password, &secret, &client_id).await;
                let took = t.elapsed();
                let cookie = match got {
                    Ok(v) => {
                        tally.lock().unwrap().record(3, took, Ok(200));
                        v["cookie"].as_str().unwrap_or_default().to_string()
                    }
                    Err(e) => {
                        tally.lock().unwrap().record(3, took, Err(e));
                        continue;
                    }
                };
                let t = Instant::now();
                let outcome = plain
                    .get(format!("http://{outpost}/outpost.goauthentik.io/sign_out"))
                    .header(HOST, &host)
                    .header("Cookie", &cookie)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .map_err(|e| e.to_string());
                tally.lock().unwrap().record(4, t.elapsed(), outcome);
                let t = Instant::now();
                let outcome = check("Cookie", cookie).await;
                tally.lock().unwrap().record(5, t.elapsed(), outcome);
            }
        }));
    }

    // RSS samples.
    let mut samples: Vec<(f64, Mem)> = vec![(0.0, mem_kib(&pid)?)];
    let mut next = started + sample;
    while Instant::now() < end {
        tokio::time::sleep_until(next.min(end).into()).await;
        next += sample;
        let mem = mem_kib(&pid)?;
        let t = started.elapsed().as_secs_f64();
        samples.push((t, mem));
        let (reqs, errs) = {
            let g = tally.lock().unwrap();
            (g.requests.iter().sum::<u64>(), g.errors.iter().sum::<u64>())
        };
        eprintln!(
            "[soak {t:6.1}s] rss {} KiB (anon {}, file {}), requests {reqs}, errors {errs}",
            mem.rss, mem.anon, mem.file
        );
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let last = mem_kib(&pid)?;
    samples.push((elapsed, last));
    let final_rss = last.rss;

    // RSS after warm-up: the first sample at or after the warm-up.
    let warm_mem = samples
        .iter()
        .find(|(t, _)| *t >= warmup.as_secs_f64() - 0.5)
        .map(|s| s.1)
        .unwrap_or(last);
    let warm = warm_mem.rss;
    let max_after = samples
        .iter()
        .filter(|(t, _)| *t >= warmup.as_secs_f64() - 0.5)
        .map(|s| s.1.rss)
        .max()
        .unwrap_or(final_rss);
    let pct = |from: u64, to: u64| (to as f64 - from as f64) / from.max(1) as f64 * 100.0;
    let growth = pct(warm, final_rss);

    let mut g = tally.lock().unwrap();
    std::fs::create_dir_all(&out_dir).map_err(|e| e.to_string())?;
    let mut csv = String::from("kind,expected_status,requests,errors,p50_ms,p99_ms,max_ms\n");
    let mut kinds = Vec::new();
    eprintln!(
        "\n{:<18} {:>9} {:>7} {:>9} {:>9} {:>9}",
        "kind", "requests", "errors", "p50 ms", "p99 ms", "max ms"
    );
    for (k, (kind, want)) in SOAK_KINDS.iter().enumerate() {
        let l = &mut g.latencies[k];
        l.sort_unstable();
        let (p50, p99, max) = (percentile(l, 0.5), percentile(l, 0.99), percentile(l, 1.0));
        let (n, e) = (g.requests[k], g.errors[k]);
        eprintln!("{kind:<18} {n:>9} {e:>7} {p50:>9.3} {p99:>9.3} {max:>9.3}");
        csv.push_str(&format!(
            "{kind},{want},{n},{e},{p50:.3},{p99:.3},{max:.3}\n"
        ));
        kinds.push(
            json!({"kind": kind, "expected": want, "requests": n, "errors": e,
                          "p50_ms": p50, "p99_ms": p99, "max_ms": max}),
        );
    }
    let (requests, errors) = (g.requests.iter().sum::<u64>(), g.errors.iter().sum::<u64>());
    eprintln!(
        "total {requests} requests, {errors} errors in {elapsed:.0} s; RSS {} KiB at start, \
         {warm} KiB after the {} s warm-up, {final_rss} KiB at the end ({growth:+.2} %), \
         max {max_after} KiB after warm-up; of which own memory (RssAnon) {} -> {} KiB, \
         mapped files (RssFile) {} -> {} KiB",
        samples[0].1.rss,
        warmup.as_secs(),
        warm_mem.anon,
        last.anon,
        warm_mem.file,
        last.file
    );
    for e in &g.examples {
        eprintln!("  error: {e}");
    }
    std::fs::write(out_dir.join("soak.csv"), csv).map_err(|e| e.to_string())?;
    let mut rss_csv = String::from("t_s,rss_kib,anon_kib,file_kib\n");
    for (t, m) in &samples {
        rss_csv.push_str(&format!("{t:.1},{},{},{}\n", m.rss, m.anon, m.file));
    }
    std::fs::write(out_dir.join("soak-rss.csv"), rss_csv).map_err(|e| e.to_string())?;
    Ok(json!({
        "seconds": elapsed, "rate": rate, "requests": requests, "errors": errors,
        "rss_start_kib": samples[0].1.rss, "rss_warm_kib": warm, "rss_end_kib": final_rss,
        "rss_max_after_warmup_kib": max_after, "rss_growth_pct": growth,
        "anon_warm_kib": warm_mem.anon, "anon_end_kib": last.anon,
        "anon_growth_pct": pct(warm_mem.anon, last.anon),
        "file_warm_kib": warm_mem.file, "file_end_kib": last.file,
        "kinds": kinds, "error_examples": g.examples,
    }))
}
