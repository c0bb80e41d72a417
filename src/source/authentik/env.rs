//! The environment of authentik's outpost container: [`AuthentikEnv`] reads and validates
//! `AUTHENTIK_*` / `AK_OUTPOST_*` variables once at start-up, reporting every problem at once,
//! and gives the settings and the empty runtime they imply. It knows nothing of providers, the
//! API or the refresh loop, and never serves requests.

use std::net::SocketAddr;
use std::time::Duration;

use ipnet::IpNet;
use url::Url;

use crate::source::values::resolve_indirection;
use crate::source::values::{
    ConfigError, DEFAULT_NEW_TOKEN_CHECKS_PER_SECOND, DEFAULT_TRUSTED_PROXIES, parse_cidr,
    parse_duration, parse_outage_grace,
};
use crate::state::application::AppSet;
use crate::state::client_rate::{
    ClientRate, DEFAULT_CLIENT_BURST, DEFAULT_CLIENT_REQUESTS_PER_SECOND,
};
use crate::state::memo::SessionMemo;
use crate::state::outpost::{Runtime, Settings};

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
    /// `AK_OUTPOST_OUTAGE_GRACE`: how long a session authentik confirmed keeps working while
    /// authentik cannot be reached (`0`: not at all).
    pub outage_grace: Duration,
    /// `AK_OUTPOST_TOKEN_CACHE_TTL`: how long a token check is cached (1 s – 1 h; 60 s).
    pub token_cache_ttl: Duration,
    /// `AK_OUTPOST_NEW_TOKEN_CHECKS_PER_SECOND`: checks per second of tokens authentik never
    /// confirmed (0: no limit).
    pub new_token_checks_per_second: u32,
    /// Requests per second (and burst) per client address that is not a trusted proxy.
    pub client_rate: ClientRate,
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
        let raw = RawEnv::read(get, &mut p);
        let host = parse_host(raw.host.as_deref(), &mut p);
        let token = parse_token(raw.token, &mut p);
        let insecure = parse_flag(raw.insecure.as_deref(), "AUTHENTIK_INSECURE", &mut p);
        let host_browser = parse_host_browser(raw.host_browser.as_deref(), &mut p);
        let listen_http = parse_listen(
            raw.listen_http,
            "0.0.0.0:9000",
            "AUTHENTIK_LISTEN__HTTP",
            &mut p,
        );
        let listen_https = parse_listen(
            raw.listen_https,
            "0.0.0.0:9443",
            "AUTHENTIK_LISTEN__HTTPS",
            &mut p,
        );
        let listen_metrics = parse_listen(
            raw.listen_metrics,
            "0.0.0.0:9300",
            "AUTHENTIK_LISTEN__METRICS",
            &mut p,
        );
        let trusted_proxies = parse_trusted_proxies(raw.trusted_proxy_cidrs.as_deref(), &mut p);
        let reload_jitter = parse_reload_jitter(raw.reload_jitter.as_deref(), &mut p);
        let log_requests = raw
            .log_requests
            .as_deref()
            .and_then(parse_bool)
            .unwrap_or(false);
        let allow_cors_preflight = parse_flag(
            raw.allow_cors_preflight.as_deref(),
            "AK_OUTPOST_ALLOW_CORS_PREFLIGHT",
            &mut p,
        );
        let log_level = parse_log_level(raw.log_level.as_deref());
        let outage_grace = parse_outage_grace(
            raw.outage_grace.as_deref().map(parse_duration),
            "AK_OUTPOST_OUTAGE_GRACE",
            &mut p,
        );
        let token_cache_ttl = parse_token_cache_ttl(raw.token_cache_ttl.as_deref(), &mut p);
        let mut count = |raw: Option<&str>, name: &str, default: u32| match raw.map(str::parse) {
            None => default,
            Some(Ok(n)) => n,
            Some(Err(_)) => {
                p.push(format!("{name}: use a whole number (0: no limit)"));
                default
            }
        };
        let new_token_checks_per_second = count(
            raw.new_token_checks.as_deref(),
            "AK_OUTPOST_NEW_TOKEN_CHECKS_PER_SECOND",
            DEFAULT_NEW_TOKEN_CHECKS_PER_SECOND,
        );
        let client_rate = ClientRate {
            per_second: count(
                raw.client_rate.as_deref(),
                "AK_OUTPOST_CLIENT_REQUESTS_PER_SECOND",
                DEFAULT_CLIENT_REQUESTS_PER_SECOND,
            ),
            burst: count(
                raw.client_burst.as_deref(),
                "AK_OUTPOST_CLIENT_BURST",
                DEFAULT_CLIENT_BURST,
            ),
        };
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
                outage_grace,
                token_cache_ttl,
                new_token_checks_per_second,
                client_rate,
            }),
            _ => Err(ConfigError { problems: p }),
        }
    }

    pub(super) fn settings(&self, outpost_name: &str) -> Settings {
        Settings {
            outpost_name: outpost_name.to_string(),
            trusted_proxies: self.trusted_proxies.clone(),
            session_lifetime: Duration::from_secs(86400),
            send_jwt_header: true,
            log_requests: self.log_requests,
            client_rate: self.client_rate,
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

/// The variables as read: indirections resolved, trimmed; `None` when unset or unreadable.
struct RawEnv {
    host: Option<String>,
    token: Option<String>,
    insecure: Option<String>,
    host_browser: Option<String>,
    listen_http: Option<String>,
    listen_https: Option<String>,
    listen_metrics: Option<String>,
    trusted_proxy_cidrs: Option<String>,
    reload_jitter: Option<String>,
    outage_grace: Option<String>,
    token_cache_ttl: Option<String>,
    new_token_checks: Option<String>,
    client_rate: Option<String>,
    client_burst: Option<String>,
    log_requests: Option<String>,
    allow_cors_preflight: Option<String>,
    log_level: Option<String>,
}

impl RawEnv {
    /// Reads every variable through `get`, in a fixed order; unreadable indirections go to `p`.
    fn read(get: impl Fn(&str) -> Option<String>, p: &mut Vec<String>) -> RawEnv {
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
        let host = var("AUTHENTIK_HOST");
        let token = var("AUTHENTIK_TOKEN");
        let insecure = var("AUTHENTIK_INSECURE");
        let host_browser = var("AUTHENTIK_HOST_BROWSER");
        let listen_http = var("AUTHENTIK_LISTEN__HTTP");
        let listen_https = var("AUTHENTIK_LISTEN__HTTPS");
        let listen_metrics = var("AUTHENTIK_LISTEN__METRICS");
        let trusted_proxy_cidrs = var("AUTHENTIK_LISTEN__TRUSTED_PROXY_CIDRS");
        let reload_jitter = var("AK_OUTPOST_RELOAD_JITTER");
        let outage_grace = var("AK_OUTPOST_OUTAGE_GRACE");
        let token_cache_ttl = var("AK_OUTPOST_TOKEN_CACHE_TTL");
        let new_token_checks = var("AK_OUTPOST_NEW_TOKEN_CHECKS_PER_SECOND");
        let client_rate = var("AK_OUTPOST_CLIENT_REQUESTS_PER_SECOND");
        let client_burst = var("AK_OUTPOST_CLIENT_BURST");
        let log_requests = var("AK_OUTPOST_LOG_REQUESTS");
        let allow_cors_preflight = var("AK_OUTPOST_ALLOW_CORS_PREFLIGHT");
        let log_level = var("AUTHENTIK_LOG_LEVEL");
        RawEnv {
            host,
            token,
            insecure,
            host_browser,
            listen_http,
            listen_https,
            listen_metrics,
            trusted_proxy_cidrs,
            reload_jitter,
            outage_grace,
            token_cache_ttl,
            new_token_checks,
            client_rate,
            client_burst,
            log_requests,
            allow_cors_preflight,
            log_level,
        }
    }
}

/// `AUTHENTIK_HOST`: required, an http(s) URL.
fn parse_host(raw: Option<&str>, p: &mut Vec<String>) -> Option<Url> {
    match raw {
        None | Some("") => {
            p.push(
                "environment variable AUTHENTIK_HOST not set (e.g. https://authentik.example.com)"
                    .into(),
            );
            None
        }
        Some(h) => parse_base(h, "AUTHENTIK_HOST", p),
    }
}

/// `AUTHENTIK_TOKEN`: required, not empty.
fn parse_token(raw: Option<String>, p: &mut Vec<String>) -> String {
    match raw {
        None => {
            p.push(
                "environment variable AUTHENTIK_TOKEN not set (the outpost's token from authentik)"
                    .into(),
            );
            String::new()
        }
        Some(t) if t.is_empty() => {
            p.push("environment variable AUTHENTIK_TOKEN is empty".into());
            String::new()
        }
        Some(t) => t,
    }
}

/// An optional true/false variable; unset means false, anything unreadable is a problem.
fn parse_flag(raw: Option<&str>, name: &str, p: &mut Vec<String>) -> bool {
    match raw.map(parse_bool) {
        None => false,
        Some(Some(b)) => b,
        Some(None) => {
            p.push(format!("{name}: use true or false"));
            false
        }
    }
}

/// `AUTHENTIK_HOST_BROWSER`: optional, an http(s) URL.
fn parse_host_browser(raw: Option<&str>, p: &mut Vec<String>) -> Option<Url> {
    match raw {
        None | Some("") => None,
        Some(h) => parse_base(h, "AUTHENTIK_HOST_BROWSER", p),
    }
}

/// A listen address, `default` when unset or empty.
fn parse_listen(raw: Option<String>, default: &str, name: &str, p: &mut Vec<String>) -> SocketAddr {
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
}

/// `AUTHENTIK_LISTEN__TRUSTED_PROXY_CIDRS`: a comma-separated list; the defaults when unset.
fn parse_trusted_proxies(raw: Option<&str>, p: &mut Vec<String>) -> Vec<IpNet> {
    let mut trusted_proxies = Vec::new();
    match raw {
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
    trusted_proxies
}

/// `AK_OUTPOST_RELOAD_JITTER`: a duration, 9 s when unset.
fn parse_reload_jitter(raw: Option<&str>, p: &mut Vec<String>) -> Duration {
    match raw.map(crate::source::values::parse_duration) {
        None => Duration::from_secs(9),
        Some(Ok(d)) => d,
        Some(Err(e)) => {
            p.push(format!("AK_OUTPOST_RELOAD_JITTER: {e}"));
            Duration::from_secs(9)
        }
    }
}

/// `AK_OUTPOST_TOKEN_CACHE_TTL`: a duration from 1 s to 1 h, 60 s when unset (authentik's
/// outpost caches for the same time).
fn parse_token_cache_ttl(raw: Option<&str>, p: &mut Vec<String>) -> Duration {
    const DEFAULT: Duration = Duration::from_secs(60);
    match raw.map(parse_duration) {
        None => DEFAULT,
        Some(Ok(d)) if (1..=3600).contains(&d.as_secs()) => d,
        Some(Ok(_)) => {
            p.push("AK_OUTPOST_TOKEN_CACHE_TTL: must be between 1s and 1h".into());
            DEFAULT
        }
        Some(Err(e)) => {
            p.push(format!("AK_OUTPOST_TOKEN_CACHE_TTL: {e}"));
            DEFAULT
        }
    }
}

/// `AUTHENTIK_LOG_LEVEL` as a tracing level; anything unknown is `info`.
fn parse_log_level(raw: Option<&str>) -> String {
    match raw.map(str::to_ascii_lowercase).as_deref() {
        Some("trace") => "trace",
        Some("debug") => "debug",
        Some("warning" | "warn") => "warn",
        Some("error") => "error",
        _ => "info",
    }
    .to_string()
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
pub(super) fn rebase(u: &Url, base: &Url) -> Url {
    let mut out = u.clone();
    let _ = out.set_scheme(base.scheme());
    let _ = out.set_host(base.host_str());
    let _ = out.set_port(base.port());
    out
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
}
