//! Helpers for bench/run.sh, each printing one JSON object on stdout:
//!
//! * `login`   — logs a user in through the outpost's real flow (/start → IdP login form →
//!   /callback) and prints the session cookie plus the tokens sealed inside it.
//! * `mint`    — mints many distinct, active access tokens at the IdP with refresh-token grants
//!   (oidc-provider does not rotate a confidential client's refresh token), one per line.
//! * `fill`    — sends one `/auth/nginx` check per token, each with its own sealed session
//!   cookie, so the outpost ends up with that many cached introspections.
//! * `startup` — times exec → first `204` on `/outpost.goauthentik.io/ping`, many runs.
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
use ak_outpost::core::token::unix_now;
use ak_outpost::core::seal::Sealer;
use ak_outpost::core::identity::Identity;
use ak_outpost::core::session::Session;
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
        eprintln!("usage: bench-tool login|mint|fill|startup --name value ...");
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
    let host = a.get("host")?;
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
        .form(&[
            ("username", a.get("user")?),
            ("password", a.get("password")?),
        ])
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
    let name = cookie_name(&a.get("client-id")?);
    let mut parts: Vec<(String, String)> = Vec::new();
    for v in r.headers().get_all(SET_COOKIE) {
        let v = v.to_str().unwrap_or_default();
        let pair = v.split(';').next().unwrap_or_default();
        if let Some((k, val)) = pair.split_once('=')
            && (k == name || k.starts_with(&format!("{name}_")))
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
    let sealer = Sealer::new(a.get("secret")?.as_bytes(), "session");
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
