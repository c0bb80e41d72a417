//! Standalone configuration: the YAML file is read once into [`RawConfig`] (a mirror of the
//! file), then [`Config::from_raw`] turns it into typed, validated values. Every problem is
//! collected, so a user sees the whole list in one message; nothing is bound before this
//! passes. It builds its own `Runtime` (`Runtime::from_config`) and never serves.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use url::Url;

use std::sync::Arc;

use crate::core::app::{AppExtras, AppSpec, Mode, Site, cookie_name};
use crate::core::request::is_plain_authority;
use crate::core::seal::Sealer;
use crate::core::upstream::{DEFAULT_CONNECT_TIMEOUT, DEFAULT_RESPONSE_TIMEOUT, Upstream};
use crate::provider::ClientAuth;
use crate::provider::client_tls::TlsSetupError;
use crate::provider::{ClientSettings, OidcClient};
use crate::source::values::{
    ConfigError, DEFAULT_NEW_TOKEN_CHECKS_PER_SECOND, DEFAULT_TRUSTED_PROXIES, parse_cidr,
    parse_duration, parse_outage_grace, resolve_indirection,
};
use crate::state::application::{AppSet, Application};
use crate::state::client_rate::{
    ClientRate, DEFAULT_CLIENT_BURST, DEFAULT_CLIENT_REQUESTS_PER_SECOND,
};
use crate::state::memo::SessionMemo;
use crate::state::outpost::{Runtime, Settings};
use crate::state::upstream::ProxyTo;

/// Smallest accepted sealing secret, in bytes.
pub const MIN_SECRET_LEN: usize = 32;

/// The YAML file as written.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub listen: RawListen,
    pub outpost_name: Option<String>,
    pub secret: Option<String>,
    pub provider: Option<RawProvider>,
    #[serde(default)]
    pub session: RawSession,
    pub trusted_proxies: Option<Vec<String>>,
    #[serde(default)]
    pub log: RawLog,
    #[serde(default)]
    pub tls: RawTls,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub applications: Vec<RawApp>,
}

/// Limits on clients that are not trusted proxies.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub client_requests_per_second: Option<u32>,
    pub client_burst: Option<u32>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawListen {
    pub http: Option<String>,
    pub https: Option<String>,
    pub metrics: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawProvider {
    pub issuer: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub token_endpoint_auth_method: Option<String>,
    pub introspection_cache_ttl: Option<RawDuration>,
    pub max_concurrent_introspections: Option<usize>,
    pub send_jwt_header: Option<bool>,
    pub outage_grace: Option<RawDuration>,
    pub new_token_checks_per_second: Option<u32>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawSession {
    pub lifetime: Option<RawDuration>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    pub level: Option<String>,
    pub format: Option<String>,
    pub requests: Option<bool>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawApp {
    pub name: Option<String>,
    pub external_host: Option<String>,
    pub mode: Option<String>,
    pub cookie_domain: Option<String>,
    pub skip_path_regex: Option<String>,
    #[serde(default)]
    pub allowed_groups: Vec<String>,
    pub allow_cors_preflight: Option<bool>,
    /// Proxy mode: where requests go.
    pub upstream: Option<RawUpstream>,
}

/// Proxy mode's upstream: a URL, or the URL with its settings.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawUpstream {
    Url(String),
    Full(RawUpstreamSettings),
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamSettings {
    pub url: Option<String>,
    pub tls_verify: Option<bool>,
    pub host_header: Option<String>,
    pub connect_timeout: Option<RawDuration>,
    pub response_timeout: Option<RawDuration>,
}

/// A duration written as whole seconds (`60`) or with a unit (`90s`, `5m`, `12h`, `7d`).
#[derive(Debug, Deserialize, Clone)]
#[serde(untagged)]
pub enum RawDuration {
    Seconds(u64),
    Text(String),
}

impl RawDuration {
    fn parse(&self) -> Result<Duration, String> {
        match self {
            RawDuration::Seconds(s) => Ok(Duration::from_secs(*s)),
            RawDuration::Text(t) => parse_duration(t),
        }
    }
}

/// OIDC client settings, validated.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    pub issuer: Url,
    pub client_id: String,
    pub client_secret: String,
    pub scopes: Vec<String>,
    pub client_auth: ClientAuth,
    pub introspection_cache_ttl: Duration,
    pub max_concurrent_introspections: usize,
    pub send_jwt_header: bool,
    /// How long a session the provider confirmed keeps working while it cannot be reached.
    pub outage_grace: Duration,
    /// Checks per second of `Authorization` values the provider never confirmed (0: no limit).
    pub new_token_checks_per_second: u32,
}

/// Log output settings.
#[derive(Debug, Clone)]
pub struct LogConfig {
    pub level: String,
    /// `json`, `text`, or `auto` (JSON unless stderr is a terminal).
    pub format: String,
    /// One line per request at INFO.
    pub requests: bool,
}

/// The whole standalone configuration, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen_http: SocketAddr,
    /// TLS listener, when configured.
    pub listen_https: Option<SocketAddr>,
    /// PEM certificate chain and key; `None` means a self-signed certificate.
    pub tls_pem: Option<(String, String)>,
    pub listen_metrics: Option<SocketAddr>,
    pub outpost_name: String,
    pub secret: Vec<u8>,
    pub provider: ProviderConfig,
    pub session_lifetime: Duration,
    pub trusted_proxies: Vec<IpNet>,
    pub log: LogConfig,
    pub client_rate: ClientRate,
    pub apps: Vec<AppSpec>,
}

impl Config {
    /// Reads and validates a YAML file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::one(format!("cannot read {}: {e}", path.display())))?;
        Self::from_yaml(&text)
    }

    /// Parses and validates YAML text.
    pub fn from_yaml(text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig =
            serde_yaml::from_str(text).map_err(|e| ConfigError::one(format!("YAML: {e}")))?;
        Self::from_raw(raw)
    }

    /// Validates a raw configuration, collecting every problem.
    pub fn from_raw(raw: RawConfig) -> Result<Config, ConfigError> {
        let mut p: Vec<String> = Vec::new();

        let listen_http = parse_addr(
            raw.listen.http.as_deref().unwrap_or("0.0.0.0:9000"),
            "listen.http",
            &mut p,
        );
        let listen_https = match raw.listen.https.as_deref() {
            None | Some("") => None,
            Some(a) => parse_addr(a, "listen.https", &mut p),
        };
        let tls_pem = read_tls(&raw.tls, &mut p);
        if tls_pem.is_some() && listen_https.is_none() {
            p.push("tls: a certificate is configured but listen.https is not set".into());
        }
        let listen_metrics = match raw.listen.metrics.as_deref() {
            None => parse_addr("0.0.0.0:9300", "listen.metrics", &mut p),
            Some("") => None,
            Some(a) => parse_addr(a, "listen.metrics", &mut p),
        };

        let secret = read_secret(raw.secret.as_deref(), &mut p);

        let provider = validate_provider(raw.provider.unwrap_or_default(), &mut p);

        let session_lifetime = session_lifetime(raw.session.lifetime.as_ref(), &mut p);

        let trusted_proxies = trusted_proxies(raw.trusted_proxies, &mut p);

        let level = raw.log.level.unwrap_or_else(|| "info".into());
        if !["trace", "debug", "info", "warn", "warning", "error"].contains(&level.as_str()) {
            p.push(format!(
                "log.level: '{level}' is not one of trace, debug, info, warn, error"
            ));
        }
        let format = raw.log.format.unwrap_or_else(|| "auto".into());
        if !["auto", "json", "text"].contains(&format.as_str()) {
            p.push(format!(
                "log.format: '{format}' is not one of auto, json, text"
            ));
        }

        let apps = validate_apps(raw.applications, &mut p);

        match (listen_http, provider, p.is_empty()) {
            (Some(listen_http), Some(provider), true) => Ok(Config {
                client_rate: ClientRate {
                    per_second: raw
                        .limits
                        .client_requests_per_second
                        .unwrap_or(DEFAULT_CLIENT_REQUESTS_PER_SECOND),
                    burst: raw.limits.client_burst.unwrap_or(DEFAULT_CLIENT_BURST),
                },
                listen_http,
                listen_https,
                tls_pem,
                listen_metrics,
                outpost_name: raw.outpost_name.unwrap_or_else(|| "ak-outpost".into()),
                secret,
                provider,
                session_lifetime,
                trusted_proxies,
                log: LogConfig {
                    level: if level == "warning" {
                        "warn".into()
                    } else {
                        level
                    },
                    format,
                    requests: raw.log.requests.unwrap_or(false),
                },
                apps,
            }),
            _ => Err(ConfigError { problems: p }),
        }
    }
}

/// `tls.cert_file` / `tls.key_file`: both or neither, readable and a valid pair.
fn read_tls(raw: &RawTls, p: &mut Vec<String>) -> Option<(String, String)> {
    match (&raw.cert_file, &raw.key_file) {
        (None, None) => None,
        (Some(c), Some(k)) => match (std::fs::read_to_string(c), std::fs::read_to_string(k)) {
            (Ok(cert), Ok(key)) => match crate::state::certs::from_pem(&cert, &key) {
                Ok(_) => Some((cert, key)),
                Err(e) => {
                    p.push(format!("tls: {e}"));
                    None
                }
            },
            (Err(e), _) => {
                p.push(format!("tls.cert_file: cannot read {c}: {e}"));
                None
            }
            (_, Err(e)) => {
                p.push(format!("tls.key_file: cannot read {k}: {e}"));
                None
            }
        },
        _ => {
            p.push("tls: cert_file and key_file go together".into());
            None
        }
    }
}

/// `secret`: at least [`MIN_SECRET_LEN`] characters after indirection.
fn read_secret(raw: Option<&str>, p: &mut Vec<String>) -> Vec<u8> {
    match raw.map(resolve_indirection) {
        None => {
            p.push(format!(
            "secret: missing (set at least {MIN_SECRET_LEN} random characters, e.g. `openssl rand -base64 48`)"
        ));
            Vec::new()
        }
        Some(Err(e)) => {
            p.push(format!("secret: {e}"));
            Vec::new()
        }
        Some(Ok(s)) if s.trim().len() < MIN_SECRET_LEN => {
            p.push(format!(
                "secret: too short ({} characters; at least {MIN_SECRET_LEN} required)",
                s.trim().len()
            ));
            Vec::new()
        }
        Some(Ok(s)) => s.trim().as_bytes().to_vec(),
    }
}

/// `session.lifetime`: at least a minute, a day by default.
fn session_lifetime(raw: Option<&RawDuration>, p: &mut Vec<String>) -> Duration {
    match raw.map(RawDuration::parse) {
        None => Duration::from_secs(86400),
        Some(Ok(d)) if d.as_secs() >= 60 => d,
        Some(Ok(_)) => {
            p.push("session.lifetime: must be at least 60 seconds".into());
            Duration::from_secs(86400)
        }
        Some(Err(e)) => {
            p.push(format!("session.lifetime: {e}"));
            Duration::from_secs(86400)
        }
    }
}

/// `trusted_proxies`: addresses or CIDR ranges, loopback and private ranges by default.
fn trusted_proxies(raw: Option<Vec<String>>, p: &mut Vec<String>) -> Vec<IpNet> {
    let trusted_src: Vec<String> = raw.unwrap_or_else(|| {
        DEFAULT_TRUSTED_PROXIES
            .iter()
            .map(|s| s.to_string())
            .collect()
    });
    let mut trusted_proxies = Vec::new();
    for (i, cidr) in trusted_src.iter().enumerate() {
        match parse_cidr(cidr) {
            Some(net) => trusted_proxies.push(net),
            None => p.push(format!(
                "trusted_proxies[{i}]: '{cidr}' is not an IP address or CIDR range"
            )),
        }
    }
    trusted_proxies
}

/// `applications`: at least one, each valid, no external host or name used twice.
fn validate_apps(raw: Vec<RawApp>, p: &mut Vec<String>) -> Vec<AppSpec> {
    if raw.is_empty() {
        p.push("applications: at least one application is required".into());
    }
    let mut apps: Vec<AppSpec> = Vec::new();
    for (i, app) in raw.into_iter().enumerate() {
        if let Some(spec) = validate_app(i, app, p) {
            if let Some(other) = apps.iter().find(|a| a.host_key() == spec.host_key()) {
                p.push(format!(
                    "applications[{i}] ({}): external_host {} is already used by {}",
                    spec.name,
                    spec.host_key(),
                    other.name
                ));
            } else if let Some(other) = apps.iter().find(|a| a.name == spec.name) {
                p.push(format!(
                    "applications[{i}]: name '{}' is already used by another application ({})",
                    spec.name,
                    other.host_key()
                ));
            } else {
                apps.push(spec);
            }
        }
    }
    apps
}

fn parse_addr(text: &str, field: &str, p: &mut Vec<String>) -> Option<SocketAddr> {
    match text.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            p.push(format!(
                "{field}: '{text}' is not an address like 0.0.0.0:9000 or [::]:9000"
            ));
            None
        }
    }
}

/// Parses `10.0.0.0/8` or a bare address (as a single-host range).
fn validate_provider(raw: RawProvider, p: &mut Vec<String>) -> Option<ProviderConfig> {
    let start = p.len();
    let issuer = match raw.issuer.as_deref() {
        None | Some("") => {
            p.push("provider.issuer: missing (the OpenID Connect issuer URL)".into());
            None
        }
        Some(s) => match Url::parse(s) {
            Ok(u) if (u.scheme() == "https" || u.scheme() == "http") && u.host().is_some() => {
                if u.query().is_some() || u.fragment().is_some() {
                    p.push(format!(
                        "provider.issuer: '{s}' must not have a query or fragment"
                    ));
                }
                Some(u)
            }
            _ => {
                p.push(format!("provider.issuer: '{s}' is not an http(s) URL"));
                None
            }
        },
    };
    let client_id = match raw.client_id.as_deref().map(resolve_indirection) {
        None => {
            p.push("provider.client_id: missing".into());
            String::new()
        }
        Some(Err(e)) => {
            p.push(format!("provider.client_id: {e}"));
            String::new()
        }
        Some(Ok(s)) if s.trim().is_empty() => {
            p.push("provider.client_id: empty".into());
            String::new()
        }
        Some(Ok(s)) => s.trim().to_string(),
    };
    let client_secret = match raw.client_secret.as_deref().map(resolve_indirection) {
        None => {
            p.push("provider.client_secret: missing (the outpost is a confidential client)".into());
            String::new()
        }
        Some(Err(e)) => {
            p.push(format!("provider.client_secret: {e}"));
            String::new()
        }
        Some(Ok(s)) if s.trim().is_empty() => {
            p.push("provider.client_secret: empty".into());
            String::new()
        }
        Some(Ok(s)) => s.trim().to_string(),
    };
    let scopes = raw
        .scopes
        .unwrap_or_else(|| vec!["openid".into(), "profile".into(), "email".into()]);
    if !scopes.iter().any(|s| s == "openid") {
        p.push("provider.scopes: must include 'openid'".into());
    }
    if let Some(bad) = scopes.iter().find(|s| {
        s.is_empty()
            || s.chars()
                .any(|c| c.is_whitespace() || c == '"' || c == '\\')
    }) {
        p.push(format!(
            "provider.scopes: '{bad}' is not a valid scope name"
        ));
    }
    let client_auth = match raw.token_endpoint_auth_method.as_deref() {
        None | Some("auto") => ClientAuth::Auto,
        Some("client_secret_post") => ClientAuth::Post,
        Some("client_secret_basic") => ClientAuth::Basic,
        Some(other) => {
            p.push(format!(
                "provider.token_endpoint_auth_method: '{other}' is not one of auto, client_secret_post, client_secret_basic"
            ));
            ClientAuth::Auto
        }
    };
    let ttl = match raw.introspection_cache_ttl.as_ref().map(RawDuration::parse) {
        None => Duration::from_secs(60),
        Some(Ok(d)) if d.as_secs() >= 1 && d.as_secs() <= 3600 => d,
        Some(Ok(_)) => {
            p.push("provider.introspection_cache_ttl: must be between 1s and 1h".into());
            Duration::from_secs(60)
        }
        Some(Err(e)) => {
            p.push(format!("provider.introspection_cache_ttl: {e}"));
            Duration::from_secs(60)
        }
    };
    let max_conc = raw.max_concurrent_introspections.unwrap_or(32);
    if max_conc == 0 || max_conc > 4096 {
        p.push("provider.max_concurrent_introspections: must be between 1 and 4096".into());
    }
    let outage_grace = parse_outage_grace(
        raw.outage_grace.as_ref().map(RawDuration::parse),
        "provider.outage_grace",
        p,
    );
    if p.len() > start {
        return None;
    }
    Some(ProviderConfig {
        issuer: issuer?,
        client_id,
        client_secret,
        scopes,
        client_auth,
        introspection_cache_ttl: ttl,
        max_concurrent_introspections: max_conc,
        send_jwt_header: raw.send_jwt_header.unwrap_or(true),
        outage_grace,
        new_token_checks_per_second: raw
            .new_token_checks_per_second
            .unwrap_or(DEFAULT_NEW_TOKEN_CHECKS_PER_SECOND),
    })
}

fn validate_app(i: usize, raw: RawApp, p: &mut Vec<String>) -> Option<AppSpec> {
    let start = p.len();
    let name = raw.name.unwrap_or_default();
    let label = if name.is_empty() {
        format!("applications[{i}]")
    } else {
        format!("applications[{i}] ({name})")
    };
    if name.trim().is_empty() {
        p.push(format!("{label}: name missing"));
    } else if name.chars().any(|c| c.is_control()) {
        p.push(format!("{label}: name has control characters"));
    }
    let mode = match raw.mode.as_deref() {
        None | Some("forward_single") => Mode::ForwardSingle,
        Some("forward_domain") => Mode::ForwardDomain,
        Some("proxy") => Mode::Proxy,
        Some(other) => {
            p.push(format!(
                "{label}: mode '{other}' is not one of forward_single, forward_domain, proxy"
            ));
            Mode::ForwardSingle
        }
    };
    let upstream = match (mode, raw.upstream) {
        (Mode::Proxy, None) => {
            p.push(format!(
                "{label}: mode 'proxy' needs an upstream (the application's address, e.g. upstream: http://app:8080)"
            ));
            None
        }
        (Mode::Proxy, Some(u)) => validate_upstream(&label, u, p),
        (_, Some(_)) => {
            p.push(format!(
                "{label}: upstream is only used in mode 'proxy'; in forward modes your reverse proxy reaches the app"
            ));
            None
        }
        (_, None) => None,
    };
    let cookie_domain = raw.cookie_domain.unwrap_or_default();
    let skip = raw.skip_path_regex.unwrap_or_default();
    let spec = match raw.external_host.as_deref() {
        None | Some("") => {
            p.push(format!("{label}: external_host missing"));
            None
        }
        Some(eh) => match AppSpec::new(
            name.trim().to_string(),
            eh,
            mode,
            &cookie_domain,
            &skip,
            raw.allowed_groups,
        ) {
            Ok(mut spec) => {
                spec.allow_cors_preflight = raw.allow_cors_preflight.unwrap_or(false);
                spec.upstream = upstream;
                Some(spec)
            }
            Err(errs) => {
                for e in errs {
                    p.push(format!("{label}: {e}"));
                }
                None
            }
        },
    };
    if p.len() > start { None } else { spec }
}

/// Proxy mode's upstream settings, validated; problems are pushed under `label`.
fn validate_upstream(label: &str, raw: RawUpstream, p: &mut Vec<String>) -> Option<Upstream> {
    let start = p.len();
    let raw = match raw {
        RawUpstream::Url(url) => RawUpstreamSettings {
            url: Some(url),
            ..Default::default()
        },
        RawUpstream::Full(s) => s,
    };
    let mut up = match raw.url.as_deref() {
        None | Some("") => {
            p.push(format!("{label}: upstream.url missing"));
            None
        }
        Some(url) => Upstream::new(url, raw.tls_verify.unwrap_or(true), true)
            .map_err(|e| p.push(format!("{label}: {e}")))
            .ok(),
    };
    let mut timeout = |raw: Option<RawDuration>, name: &str, default: Duration| match raw
        .as_ref()
        .map(RawDuration::parse)
    {
        None => default,
        Some(Ok(d)) if !d.is_zero() && d <= Duration::from_secs(86_400) => d,
        Some(Ok(_)) => {
            p.push(format!(
                "{label}: upstream.{name} must be between 1s and 24h"
            ));
            default
        }
        Some(Err(e)) => {
            p.push(format!("{label}: upstream.{name}: {e}"));
            default
        }
    };
    let connect = timeout(
        raw.connect_timeout,
        "connect_timeout",
        DEFAULT_CONNECT_TIMEOUT,
    );
    let response = timeout(
        raw.response_timeout,
        "response_timeout",
        DEFAULT_RESPONSE_TIMEOUT,
    );
    if let Some(h) = raw
        .host_header
        .as_deref()
        .map(str::trim)
        .filter(|h| !h.is_empty())
    {
        if is_plain_authority(h) {
            if let Some(u) = up.as_mut() {
                u.host_header = Some(h.to_string());
            }
        } else {
            p.push(format!(
                "{label}: upstream.host_header '{h}' is not a host name (with an optional port)"
            ));
        }
    }
    if let Some(u) = up.as_mut() {
        u.connect_timeout = connect;
        u.response_timeout = response;
    }
    if p.len() > start { None } else { up }
}

/// The YAML source's way to a [`Runtime`] (here, so that `state/` never reads a file).
impl Runtime {
    /// Builds applications from a standalone configuration, reusing `previous`'s OIDC client
    /// when the provider settings did not change (keeps caches and readiness across reloads).
    /// Fails only when no HTTP client can be made for a new provider (outbound TLS).
    pub fn from_config(cfg: &Config, previous: Option<&Runtime>) -> Result<Runtime, TlsSetupError> {
        let p = &cfg.provider;
        let settings = ClientSettings {
            issuer: p.issuer.clone(),
            client_id: p.client_id.clone(),
            client_secret: p.client_secret.clone(),
            scopes: p.scopes.clone(),
            client_auth: p.client_auth,
            cache_ttl: p.introspection_cache_ttl,
            max_concurrent_checks: p.max_concurrent_introspections,
            extra_issuers: Vec::new(),
            outage_grace: p.outage_grace,
            new_token_checks_per_second: p.new_token_checks_per_second,
        };
        let reusable = previous
            .and_then(|r| r.apps.iter().next())
            .map(|a| Arc::clone(&a.oidc))
            .filter(|o| same_client(&o.settings, &settings));
        let oidc = match reusable {
            Some(c) => c,
            None => {
                let c = Arc::new(OidcClient::new(settings, OidcClient::http_client(false)?));
                c.spawn_discovery();
                c
            }
        };
        let sealer = Arc::new(Sealer::new(&cfg.secret, "session"));
        let cookie = cookie_name(&p.client_id);
        let apps = cfg
            .apps
            .iter()
            .map(|spec| {
                let upstream = spec
                    .upstream
                    .as_ref()
                    .map(|u| {
                        ProxyTo::new(
                            previous.and_then(|r| r.upstream_client(u)),
                            u,
                            &spec.host_key(),
                        )
                    })
                    .transpose()?;
                Ok(Arc::new(Application {
                    site: Site {
                        spec: spec.clone(),
                        sealer: Arc::clone(&sealer),
                        cookie_name: cookie.clone(),
                        provider_name: spec.name.clone(),
                        app_slug: spec.name.clone(),
                        extras: AppExtras {
                            basic_auth: None,
                            bearer_header: true,
                            basic_header: false,
                            intercept_header_auth: true,
                        },
                    },
                    oidc: Arc::clone(&oidc),
                    metrics: crate::state::metrics::host_metrics(&spec.host_key()),
                    upstream,
                }))
            })
            .collect::<Result<Vec<_>, TlsSetupError>>()?;
        Ok(Runtime {
            loaded: true,
            memo: SessionMemo::new(),
            header_memo: SessionMemo::new(),
            apps: AppSet::new(apps),
            settings: Settings {
                outpost_name: cfg.outpost_name.clone(),
                trusted_proxies: cfg.trusted_proxies.clone(),
                session_lifetime: cfg.session_lifetime,
                send_jwt_header: p.send_jwt_header,
                log_requests: cfg.log.requests,
                client_rate: cfg.client_rate,
            },
        })
    }
}

fn same_client(a: &ClientSettings, b: &ClientSettings) -> bool {
    a.issuer == b.issuer
        && a.client_id == b.client_id
        && a.client_secret == b.client_secret
        && a.scopes == b.scopes
        && a.client_auth == b.client_auth
        && a.cache_ttl == b.cache_ttl
        && a.max_concurrent_checks == b.max_concurrent_checks
        && a.outage_grace == b.outage_grace
        && a.new_token_checks_per_second == b.new_token_checks_per_second
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
secret: "0123456789abcdef0123456789abcdef-long-enough"
provider:
  issuer: https://idp.example.com/
  client_id: outpost
  client_secret: s3cret
applications:
  - name: app
    external_host: https://app.example.com
"#;

    #[test]
    fn minimal_config_is_valid_with_defaults() {
        let c = Config::from_yaml(GOOD).expect("valid");
        assert_eq!(c.listen_http.to_string(), "0.0.0.0:9000");
        assert_eq!(
            c.listen_metrics.map(|a| a.to_string()).as_deref(),
            Some("0.0.0.0:9300")
        );
        assert_eq!(c.provider.introspection_cache_ttl, Duration::from_secs(60));
        assert_eq!(c.provider.scopes, vec!["openid", "profile", "email"]);
        assert_eq!(c.apps.len(), 1);
        assert_eq!(c.trusted_proxies.len(), DEFAULT_TRUSTED_PROXIES.len());
    }

    #[test]
    fn every_problem_is_listed_at_once() {
        let yaml = r#"
secret: short
listen: { http: "nonsense" }
provider:
  issuer: ftp://x
  scopes: [profile]
  introspection_cache_ttl: 5y
trusted_proxies: ["10.0.0.0/8", "not-a-cidr"]
applications:
  - name: a
    external_host: "not a url"
  - name: b
    external_host: https://b.example.com
    mode: forward_domain
  - name: c
    external_host: https://c.example.com
    skip_path_regex: "^/ok\n(unclosed"
"#;
        let err = Config::from_yaml(yaml).expect_err("invalid");
        let all = err.problems.join("\n");
        for needle in [
            "secret: too short",
            "listen.http",
            "provider.issuer",
            "provider.client_id: missing",
            "provider.client_secret: missing",
            "must include 'openid'",
            "introspection_cache_ttl",
            "not-a-cidr",
            "applications[0] (a): external_host",
            "applications[1] (b): cookie_domain",
            "applications[2] (c): skip_path_regex line 2",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
        assert!(err.problems.len() >= 11, "{all}");
    }

    #[test]
    fn unknown_keys_and_missing_apps_are_errors() {
        let err = Config::from_yaml("secret: x\nbogus: 1\n").expect_err("invalid");
        assert!(err.problems[0].contains("bogus"), "{:?}", err.problems);
        let err = Config::from_yaml(
            "secret: 0123456789abcdef0123456789abcdef\nprovider: {issuer: 'https://i', client_id: a, client_secret: b}\n",
        )
        .expect_err("invalid");
        assert!(
            err.problems
                .iter()
                .any(|p| p.contains("at least one application"))
        );
    }

    #[test]
    fn proxy_mode_apps_need_a_usable_upstream() {
        let ok = format!(
            "{GOOD}  - name: short\n    external_host: https://s.example.com\n    mode: proxy\n    upstream: http://app:8080\n  - name: long\n    external_host: https://l.example.com\n    mode: proxy\n    upstream:\n      url: https://10.0.0.5:8443\n      tls_verify: false\n      host_header: internal.example\n      connect_timeout: 2s\n      response_timeout: 5m\n"
        );
        let c = Config::from_yaml(&ok).expect("valid");
        let short = c.apps[1].upstream.as_ref().expect("upstream");
        assert_eq!(short.url.as_str(), "http://app:8080/");
        assert!(short.verify_tls);
        assert_eq!(short.response_timeout, DEFAULT_RESPONSE_TIMEOUT);
        let long = c.apps[2].upstream.as_ref().expect("upstream");
        assert!(!long.verify_tls);
        assert_eq!(long.host_header.as_deref(), Some("internal.example"));
        assert_eq!(long.connect_timeout, Duration::from_secs(2));
        assert_eq!(long.response_timeout, Duration::from_secs(300));
        assert!(c.apps[0].upstream.is_none());

        let bad = format!(
            "{GOOD}  - name: none\n    external_host: https://n.example.com\n    mode: proxy\n  - name: pathy\n    external_host: https://p.example.com\n    mode: proxy\n    upstream: http://app:8080/sub\n  - name: odd\n    external_host: https://o.example.com\n    mode: proxy\n    upstream: {{url: 'ftp://app', host_header: 'a b', response_timeout: 0}}\n  - name: fwd\n    external_host: https://f.example.com\n    upstream: http://app\n"
        );
        let err = Config::from_yaml(&bad).expect_err("invalid");
        let all = err.problems.join("\n");
        for needle in [
            "applications[1] (none): mode 'proxy' needs an upstream",
            "applications[2] (pathy): upstream 'http://app:8080/sub' has a path",
            "applications[3] (odd): upstream 'ftp://app' is not an http(s) URL",
            "applications[3] (odd): upstream.host_header 'a b'",
            "applications[3] (odd): upstream.response_timeout must be between",
            "applications[4] (fwd): upstream is only used in mode 'proxy'",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
    }

    #[test]
    fn duplicate_hosts_are_rejected() {
        let yaml =
            format!("{GOOD}  - name: app2\n    external_host: https://app.example.com/other\n");
        let err = Config::from_yaml(&yaml).expect_err("invalid");
        assert!(
            err.problems.iter().any(|p| p.contains("already used")),
            "{:?}",
            err.problems
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_duration("1d").unwrap(), Duration::from_secs(86400));
        assert!(parse_duration("1w").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("-5s").is_err());
    }

    #[test]
    fn cidrs() {
        assert!(parse_cidr("10.0.0.0/8").is_some());
        assert!(parse_cidr("192.168.1.1").is_some());
        assert!(parse_cidr("::1").is_some());
        assert!(parse_cidr("10.0.0.0/33").is_none());
        assert!(parse_cidr("example.com").is_none());
    }
}
