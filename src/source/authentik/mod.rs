//! authentik mode: a drop-in for authentik's proxy outpost container. Configuration comes
//! from the authentik API (`AUTHENTIK_HOST` + `AUTHENTIK_TOKEN`), is kept live over the
//! outpost websocket and a periodic refresh, and is swapped atomically; the last good
//! configuration keeps serving while authentik is unreachable.

pub mod api;
pub mod ws;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use tokio::sync::Notify;
use url::Url;

use crate::core::app::{AppExtras, AppSpec, Mode, Site, cookie_name};
use crate::core::seal::Sealer;
use crate::provider::ClientAuth;
use crate::provider::{ClientSettings, Discovery, OidcClient};
use crate::source::values::resolve_indirection;
use crate::source::values::{ConfigError, DEFAULT_TRUSTED_PROXIES, parse_cidr};
use crate::state::application::{AppSet, Application};
use crate::state::certs::CertStore;
use crate::state::memo::SessionMemo;
use crate::state::outpost::{Outpost, Runtime, Settings};
use api::{Api, OutpostObject, ProxyProvider};
use rustls::sign::CertifiedKey;

/// How long introspection answers for cookie sessions are trusted in authentik mode.
pub const CACHE_TTL: Duration = Duration::from_secs(60);
/// Retry interval while authentik cannot be reached at start.
pub const START_RETRY: Duration = Duration::from_secs(3);

/// The environment of authentik's outpost container, validated.
#[derive(Clone)]
pub struct AuthentikEnv {
    /// `AUTHENTIK_HOST`, with a trailing slash.
    pub host: Url,
    pub token: String,
    pub insecure: bool,
    pub host_browser: Option<Url>,
    pub listen_http: SocketAddr,
    pub listen_https: SocketAddr,
    pub listen_metrics: SocketAddr,
    pub trusted_proxies: Vec<IpNet>,
    /// Upper bound of the per-process delay before a triggered refresh (authentik: 0–9 s).
    pub reload_jitter: Duration,
    pub log_requests: bool,
    pub log_level: String,
    /// `AK_OUTPOST_ALLOW_CORS_PREFLIGHT`: let CORS preflights through unauthenticated.
    pub allow_cors_preflight: bool,
}

impl std::fmt::Debug for AuthentikEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthentikEnv")
            .field("host", &self.host.as_str())
            .field("token", &"<redacted>")
            .field("insecure", &self.insecure)
            .finish_non_exhaustive()
    }
}

/// Parses `true/false/1/0/yes/no/on/off`, any case.
pub fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" | "" => Some(false),
        _ => None,
    }
}

impl AuthentikEnv {
    /// Reads the process environment.
    pub fn from_env() -> Result<AuthentikEnv, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads variables through `get` (tests pass a map); every problem is reported.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<AuthentikEnv, ConfigError> {
        let mut p = Vec::new();
        let mut var = |name: &str| -> Option<String> {
            let raw = get(name)?;
            match resolve_indirection(&raw) {
                Ok(v) => Some(v.trim().to_string()),
                Err(e) => {
                    p.push(format!("{name}: {e}"));
                    None
                }
            }
        };
        let host_raw = var("AUTHENTIK_HOST");
        let token = var("AUTHENTIK_TOKEN");
        let insecure_raw = var("AUTHENTIK_INSECURE");
        let browser_raw = var("AUTHENTIK_HOST_BROWSER");
        let http_raw = var("AUTHENTIK_LISTEN__HTTP");
        let https_raw = var("AUTHENTIK_LISTEN__HTTPS");
        let metrics_raw = var("AUTHENTIK_LISTEN__METRICS");
        let cidrs_raw = var("AUTHENTIK_LISTEN__TRUSTED_PROXY_CIDRS");
        let jitter_raw = var("AK_OUTPOST_RELOAD_JITTER");
        let log_requests_raw = var("AK_OUTPOST_LOG_REQUESTS");
        let preflight_raw = var("AK_OUTPOST_ALLOW_CORS_PREFLIGHT");
        let level_raw = var("AUTHENTIK_LOG_LEVEL");

        let host = match host_raw.as_deref() {
            None | Some("") => {
                p.push("environment variable AUTHENTIK_HOST not set (e.g. https://authentik.example.com)".into());
                None
            }
            Some(h) => parse_base(h, "AUTHENTIK_HOST", &mut p),
        };
        let token = match token {
            None => {
                p.push("environment variable AUTHENTIK_TOKEN not set (the outpost's token from authentik)".into());
                String::new()
            }
            Some(t) if t.is_empty() => {
                p.push("environment variable AUTHENTIK_TOKEN is empty".into());
                String::new()
            }
            Some(t) => t,
        };
        let insecure = match insecure_raw.as_deref().map(parse_bool) {
            None => false,
            Some(Some(b)) => b,
            Some(None) => {
                p.push("AUTHENTIK_INSECURE: use true or false".into());
                false
            }
        };
        let host_browser = match browser_raw.as_deref() {
            None | Some("") => None,
            Some(h) => parse_base(h, "AUTHENTIK_HOST_BROWSER", &mut p),
        };
        let mut addr = |raw: Option<String>, default: &str, name: &str| -> SocketAddr {
            let text = raw
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| default.to_string());
            // A list (newer authentik) means several addresses; the first is used.
            let first = text
                .split(',')
                .next()
                .unwrap_or_default()
                .trim()
                .to_string();
            match first.parse::<SocketAddr>() {
                Ok(a) => a,
                Err(_) => {
                    p.push(format!(
                        "{name}: '{text}' is not an address like 0.0.0.0:9000"
                    ));
                    SocketAddr::from(([0, 0, 0, 0], 0))
                }
            }
        };
        let listen_http = addr(http_raw, "0.0.0.0:9000", "AUTHENTIK_LISTEN__HTTP");
        let listen_https = addr(https_raw, "0.0.0.0:9443", "AUTHENTIK_LISTEN__HTTPS");
        let listen_metrics = addr(metrics_raw, "0.0.0.0:9300", "AUTHENTIK_LISTEN__METRICS");
        let mut trusted_proxies = Vec::new();
        match cidrs_raw.as_deref() {
            None | Some("") => {
                trusted_proxies = DEFAULT_TRUSTED_PROXIES
                    .iter()
                    .filter_map(|c| parse_cidr(c))
                    .collect();
            }
            Some(list) => {
                for c in list.split(',').map(str::trim).filter(|c| !c.is_empty()) {
                    match parse_cidr(c) {
                        Some(n) => trusted_proxies.push(n),
                        None => p.push(format!(
                            "AUTHENTIK_LISTEN__TRUSTED_PROXY_CIDRS: '{c}' is not a CIDR range"
                        )),
                    }
                }
            }
        }
        let reload_jitter = match jitter_raw
            .as_deref()
            .map(crate::source::values::parse_duration)
        {
            None => Duration::from_secs(9),
            Some(Ok(d)) => d,
            Some(Err(e)) => {
                p.push(format!("AK_OUTPOST_RELOAD_JITTER: {e}"));
                Duration::from_secs(9)
            }
        };
        let log_requests = log_requests_raw
            .as_deref()
            .and_then(parse_bool)
            .unwrap_or(false);
        let allow_cors_preflight = match preflight_raw.as_deref().map(parse_bool) {
            None => false,
            Some(Some(b)) => b,
            Some(None) => {
                p.push("AK_OUTPOST_ALLOW_CORS_PREFLIGHT: use true or false".into());
                false
            }
        };
        let log_level = match level_raw.as_deref().map(str::to_ascii_lowercase).as_deref() {
            Some("trace") => "trace",
            Some("debug") => "debug",
            Some("warning" | "warn") => "warn",
            Some("error") => "error",
            _ => "info",
        }
        .to_string();
        match host {
            Some(host) if p.is_empty() => Ok(AuthentikEnv {
                host,
                token,
                insecure,
                host_browser,
                listen_http,
                listen_https,
                listen_metrics,
                trusted_proxies,
                reload_jitter,
                log_requests,
                log_level,
                allow_cors_preflight,
            }),
            _ => Err(ConfigError { problems: p }),
        }
    }

    fn settings(&self, outpost_name: &str) -> Settings {
        Settings {
            outpost_name: outpost_name.to_string(),
            trusted_proxies: self.trusted_proxies.clone(),
            session_lifetime: Duration::from_secs(86400),
            send_jwt_header: true,
            log_requests: self.log_requests,
        }
    }

    /// The runtime before authentik answered: no applications, requests get 503.
    pub fn empty_runtime(&self) -> Runtime {
        Runtime {
            apps: AppSet::new(Vec::new()),
            settings: self.settings(""),
            loaded: false,
            memo: SessionMemo::new(),
            header_memo: SessionMemo::new(),
        }
    }
}

/// `https://ak.example/sub` → `https://ak.example/sub/` (a base for joining paths).
fn parse_base(raw: &str, name: &str, p: &mut Vec<String>) -> Option<Url> {
    match Url::parse(raw) {
        Ok(mut u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {
            if !u.path().ends_with('/') {
                let path = format!("{}/", u.path());
                u.set_path(&path);
            }
            Some(u)
        }
        _ => {
            p.push(format!("{name}: '{raw}' is not an http(s) URL"));
            None
        }
    }
}

/// Replaces scheme, host and port of `u` with `base`'s.
fn rebase(u: &Url, base: &Url) -> Url {
    let mut out = u.clone();
    let _ = out.set_scheme(base.scheme());
    let _ = out.set_host(base.host_str());
    let _ = out.set_port(base.port());
    out
}

fn parse_url(s: Option<&str>) -> Option<Url> {
    s.filter(|s| !s.is_empty())
        .and_then(|s| Url::parse(s).ok())
        .filter(|u| matches!(u.scheme(), "http" | "https"))
}

/// The discovery document a provider's `oidc_configuration` amounts to; browser-facing
/// endpoints move to `AUTHENTIK_HOST_BROWSER` when it is set.
fn discovery_for(p: &ProxyProvider, browser: Option<&Url>) -> Option<Discovery> {
    let c = &p.oidc_configuration;
    let mut authorize = parse_url(Some(&c.authorization_endpoint))?;
    let mut end_session = parse_url(c.end_session_endpoint.as_deref());
    if let Some(b) = browser {
        authorize = rebase(&authorize, b);
        end_session = end_session.map(|u| rebase(&u, b));
    }
    Some(Discovery {
        issuer: c.issuer.clone(),
        authorization_endpoint: authorize,
        token_endpoint: parse_url(Some(&c.token_endpoint))?,
        userinfo_endpoint: parse_url(c.userinfo_endpoint.as_deref()),
        introspection_endpoint: parse_url(c.introspection_endpoint.as_deref()),
        revocation_endpoint: parse_url(c.revocation_endpoint.as_deref()),
        end_session_endpoint: end_session,
        jwks_uri: parse_url(c.jwks_uri.as_deref()),
        token_endpoint_auth_methods_supported: c.token_endpoint_auth_methods_supported.clone(),
    })
}

fn mode_of(p: &ProxyProvider) -> Option<Mode> {
    match p.mode.as_deref().unwrap_or("proxy") {
        "forward_single" => Some(Mode::ForwardSingle),
        "forward_domain" => Some(Mode::ForwardDomain),
        "proxy" => Some(Mode::Proxy),
        _ => None,
    }
}

/// `skip_path_regex` with invalid lines dropped (logged), as authentik's outpost does.
fn usable_skip_regex(p: &ProxyProvider) -> String {
    let raw = p.skip_path_regex.clone().unwrap_or_default();
    raw.split('\n')
        .filter(|line| {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() {
                return false;
            }
            match regex::Regex::new(line) {
                Ok(_) => true,
                Err(_) => {
                    tracing::warn!(provider = %p.name, regex = %line, "invalid skip_path_regex line ignored");
                    false
                }
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Builds the applications for a provider list. OIDC clients of unchanged providers are
/// reused from `previous`, so their caches and keys survive a refresh.
pub async fn build_runtime(
    env: &AuthentikEnv,
    http: &reqwest::Client,
    outpost: &OutpostObject,
    providers: &[ProxyProvider],
    previous: Option<&Runtime>,
) -> Runtime {
    let mut apps = Vec::new();
    let mut proxy_mode = Vec::new();
    for p in providers {
        let Some(mode) = mode_of(p) else {
            tracing::error!(provider = %p.name, mode = ?p.mode, "provider skipped: unknown mode");
            continue;
        };
        let spec = match AppSpec::new(
            p.name.clone(),
            &p.external_host,
            mode,
            p.cookie_domain.as_deref().unwrap_or_default(),
            &usable_skip_regex(p),
            Vec::new(),
        ) {
            Ok(mut s) => {
                s.allow_cors_preflight = env.allow_cors_preflight;
                s
            }
            Err(errs) => {
                tracing::error!(provider = %p.name, problems = %errs.join("; "), "provider skipped");
                continue;
            }
        };
        if mode == Mode::Proxy {
            proxy_mode.push(format!("{} ({})", p.name, p.external_host));
        }
        let Some(disc) = discovery_for(p, env.host_browser.as_ref()) else {
            tracing::error!(provider = %p.name, "provider skipped: unusable oidc_configuration");
            continue;
        };
        let mut scopes = p.scopes_to_request.clone();
        scopes.sort();
        if !scopes.iter().any(|s| s == "openid") {
            scopes.insert(0, "openid".into());
        }
        let mut extra_issuers = Vec::new();
        if let (Some(b), Ok(iss)) = (&env.host_browser, Url::parse(&disc.issuer)) {
            extra_issuers.push(rebase(&iss, b).to_string());
        }
        let settings = ClientSettings {
            issuer: Url::parse(&disc.issuer).unwrap_or_else(|_| disc.token_endpoint.clone()),
            client_id: p.client_id.clone(),
            client_secret: p.client_secret.clone(),
            scopes,
            client_auth: ClientAuth::Auto,
            cache_ttl: CACHE_TTL,
            max_concurrent_checks: 32,
            extra_issuers,
        };
        let reused = previous.and_then(|rt| {
            rt.apps
                .iter()
                .find(|a| {
                    a.oidc.settings.client_id == settings.client_id
                        && a.oidc.settings.client_secret == settings.client_secret
                        && a.oidc.settings.scopes == settings.scopes
                        && a.oidc
                            .metadata()
                            .is_some_and(|m| same_discovery(&m.discovery, &disc))
                })
                .map(|a| Arc::clone(&a.oidc))
        });
        let oidc = match reused {
            Some(o) => o,
            None => {
                // One HTTP client (connection pool, root store) serves every provider.
                let o = Arc::new(OidcClient::new(settings, http.clone()));
                if let Err(e) = o.install(disc.clone()).await {
                    // Keys could not be fetched now; the client stays not-ready and retries.
                    tracing::warn!(provider = %p.name, error = %e, "provider keys not loaded yet");
                    o.spawn_install(disc);
                }
                o
            }
        };
        let secret = p
            .cookie_secret
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| p.client_secret.clone());
        let basic_auth = p.basic_auth_enabled.then(|| {
            (
                p.basic_auth_user_attribute.clone().unwrap_or_default(),
                p.basic_auth_password_attribute.clone().unwrap_or_default(),
            )
        });
        apps.push(Arc::new(Application {
            metrics: crate::state::metrics::host_metrics(&spec.host_key()),
            site: Site {
                cookie_name: cookie_name(&p.client_id),
                sealer: Arc::new(Sealer::new(secret.as_bytes(), "session")),
                provider_name: p.name.clone(),
                app_slug: p.assigned_application_slug.clone().unwrap_or_default(),
                extras: AppExtras {
                    basic_auth,
                    bearer_header: true,
                    basic_header: true,
                },
                spec,
            },
            oidc,
        }));
    }
    if !proxy_mode.is_empty() {
        tracing::warn!(
            providers = %proxy_mode.join(", "),
            "providers in proxy mode are not served by ak-outpost (forward auth only); their hosts get an error page"
        );
    }
    if apps.is_empty() {
        tracing::warn!("no providers are assigned to this outpost");
    }
    Runtime {
        apps: AppSet::new(apps),
        settings: env.settings(&outpost.name),
        loaded: true,
        memo: SessionMemo::new(),
        header_memo: SessionMemo::new(),
    }
}

fn same_discovery(a: &Discovery, b: &Discovery) -> bool {
    a.issuer == b.issuer
        && a.authorization_endpoint == b.authorization_endpoint
        && a.token_endpoint == b.token_endpoint
        && a.userinfo_endpoint == b.userinfo_endpoint
        && a.introspection_endpoint == b.introspection_endpoint
        && a.revocation_endpoint == b.revocation_endpoint
        && a.end_session_endpoint == b.end_session_endpoint
        && a.jwks_uri == b.jwks_uri
}

/// A random UUIDv4 for this process (the websocket's `instance_uuid`).
pub fn instance_uuid() -> String {
    use rand::RngCore;
    let mut b = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Why the controller stopped.
#[derive(Debug)]
pub enum Fatal {
    /// The token sees no outpost (authentik's outpost exits in this case too).
    NoOutpost,
}

/// Loads the configuration, keeps it live, and never returns unless it must stop.
pub async fn control(
    env: AuthentikEnv,
    outpost: Arc<Outpost>,
    refresh: Arc<Notify>,
    certs: Option<Arc<CertStore>>,
) -> Fatal {
    let api = Api::new(env.host.clone(), env.token.clone(), env.insecure);
    let mut attempt = 0u32;
    let obj = loop {
        attempt += 1;
        match api.outpost().await {
            Ok(Some(o)) => break o,
            Ok(None) => {
                tracing::error!(
                    "No outposts found with given token, ensure the given token corresponds to an authentik Outpost"
                );
                return Fatal::NoOutpost;
            }
            Err(e) => {
                if attempt <= 3 || attempt.is_multiple_of(20) {
                    tracing::warn!(error = %e, "cannot reach authentik yet; retrying every 3 s");
                }
                tokio::time::sleep(START_RETRY).await;
            }
        }
    };
    if let Err(e) = api.root_config().await {
        tracing::warn!(error = %e, "root config not readable");
    }
    tracing::info!(outpost = %obj.name, "outpost found");
    let instance = instance_uuid();
    tokio::spawn(ws::run(
        env.host.clone(),
        env.token.clone(),
        obj.pk.clone(),
        instance,
        env.insecure,
        Arc::clone(&outpost),
        Arc::clone(&refresh),
    ));
    // Misconfiguration reports go to authentik's event log, from a task of their own.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<serde_json::Value>(16);
    outpost.report_to(tx);
    let reporter = api.clone();
    tokio::spawn(async move {
        while let Some(event) = rx.recv().await {
            reporter.configuration_error(event).await;
        }
    });
    let mut loader = Loader {
        http: OidcClient::http_client(env.insecure),
        api,
        current: obj,
        certs,
        keypairs: KeypairCache::default(),
    };
    // First load: retry until it works; answer 503 meanwhile.
    while let Err(e) = loader.refresh(&env, &outpost).await {
        tracing::warn!(error = %e, "cannot load providers yet; retrying");
        tokio::time::sleep(START_RETRY).await;
    }
    let offset = jitter(env.reload_jitter);
    loop {
        let interval = match loader.current.refresh_interval_s.unwrap_or(300) {
            s if s <= 0 => 300,
            s if s < 30 => 30,
            s => s,
        } as u64;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(interval) + offset) => {}
            _ = refresh.notified() => {
                tokio::time::sleep(offset).await;
            }
        }
        if let Err(e) = loader.refresh(&env, &outpost).await {
            tracing::warn!(error = %e, "refresh failed; the previous configuration keeps serving");
        }
    }
}

/// What a refresh needs between runs: the API, one HTTP client for every provider, the latest
/// outpost object, and the downloaded certificates.
struct Loader {
    http: reqwest::Client,
    api: Api,
    current: OutpostObject,
    certs: Option<Arc<CertStore>>,
    keypairs: KeypairCache,
}

impl Loader {
    /// Reads the outpost and its providers, builds a new configuration and swaps it in.
    async fn refresh(
        &mut self,
        env: &AuthentikEnv,
        outpost: &Outpost,
    ) -> Result<(), crate::provider::OidcError> {
        if let Some(o) = self.api.outpost().await? {
            self.current = o;
        }
        let providers = self.api.providers().await?;
        if let Some(store) = &self.certs {
            update_certificates(&self.api, store, &mut self.keypairs, &providers).await;
        }
        let previous = outpost.runtime();
        let rt = build_runtime(env, &self.http, &self.current, &providers, Some(&previous)).await;
        let n = rt.apps.len();
        outpost.swap(rt);
        crate::state::metrics::set_last_update();
        tracing::info!(providers = n, "configuration loaded from authentik");
        Ok(())
    }
}

fn jitter(max: Duration) -> Duration {
    use rand::Rng;
    let secs = max.as_secs();
    if secs == 0 {
        return Duration::ZERO;
    }
    Duration::from_secs(rand::thread_rng().gen_range(0..=secs))
}

/// Certificates of authentik's keypairs, by keypair UUID, with their fingerprints.
#[derive(Default)]
pub struct KeypairCache {
    by_uuid: HashMap<String, (String, Arc<CertifiedKey>)>,
}

/// Loads the TLS certificates providers name, re-downloading a keypair only when its
/// fingerprint changed, and installs them by SNI host name. Failures leave the fallback.
async fn update_certificates(
    api: &Api,
    store: &CertStore,
    cache: &mut KeypairCache,
    providers: &[ProxyProvider],
) {
    let mut by_name = HashMap::new();
    for p in providers {
        let Some(uuid) = p.certificate.as_deref().filter(|u| !u.is_empty()) else {
            continue;
        };
        let Some(host) = Url::parse(&p.external_host)
            .ok()
            .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
        else {
            continue;
        };
        let fingerprint = match api.keypair_fingerprint(uuid).await {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(provider = %p.name, error = %e, "certificate not loaded");
                continue;
            }
        };
        let cached = cache
            .by_uuid
            .get(uuid)
            .filter(|(f, _)| *f == fingerprint)
            .map(|(_, ck)| Arc::clone(ck));
        let key = match cached {
            Some(ck) => ck,
            None => match api.keypair_pem(uuid).await {
                Ok((cert, key)) => match crate::state::certs::from_pem(&cert, &key) {
                    Ok(ck) => {
                        let ck = Arc::new(ck);
                        cache
                            .by_uuid
                            .insert(uuid.to_string(), (fingerprint, Arc::clone(&ck)));
                        ck
                    }
                    Err(e) => {
                        tracing::warn!(provider = %p.name, error = %e, "certificate unusable");
                        continue;
                    }
                },
                Err(e) => {
                    tracing::warn!(provider = %p.name, error = %e, "certificate not loaded");
                    continue;
                }
            },
        };
        by_name.insert(host, key);
    }
    store.set(by_name);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Result<AuthentikEnv, ConfigError> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        AuthentikEnv::from_lookup(|k| m.get(k).cloned())
    }

    #[test]
    fn required_variables_are_reported_together() {
        let e = env(&[("AUTHENTIK_INSECURE", "maybe")]).unwrap_err();
        let all = e.problems.join("\n");
        assert!(all.contains("AUTHENTIK_HOST not set"), "{all}");
        assert!(all.contains("AUTHENTIK_TOKEN not set"), "{all}");
        assert!(all.contains("AUTHENTIK_INSECURE"), "{all}");
    }

    #[test]
    fn defaults_and_spellings() {
        let e = env(&[
            ("AUTHENTIK_HOST", "https://ak.example/sub"),
            ("AUTHENTIK_TOKEN", "t"),
            ("AUTHENTIK_INSECURE", "TRUE"),
        ])
        .unwrap();
        assert_eq!(e.host.as_str(), "https://ak.example/sub/");
        assert!(e.insecure);
        assert_eq!(e.listen_http.to_string(), "0.0.0.0:9000");
        assert_eq!(e.listen_https.to_string(), "0.0.0.0:9443");
        assert_eq!(e.listen_metrics.to_string(), "0.0.0.0:9300");
        for (v, want) in [("1", true), ("yes", true), ("False", false), ("0", false)] {
            assert_eq!(parse_bool(v), Some(want), "{v}");
        }
        assert_eq!(parse_bool("maybe"), None);
    }

    #[test]
    fn browser_host_moves_only_browser_endpoints() {
        let base = Url::parse("https://browser.example/").unwrap();
        let u = Url::parse("http://authentik-server:9000/application/o/authorize/?a=1").unwrap();
        assert_eq!(
            rebase(&u, &base).as_str(),
            "https://browser.example/application/o/authorize/?a=1"
        );
    }

    #[test]
    fn instance_uuids_are_v4() {
        let u = instance_uuid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert_ne!(u, instance_uuid());
    }
}
