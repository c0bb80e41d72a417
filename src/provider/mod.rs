//! The OpenID Connect client: discovery, JWKS, code exchange, refresh, ID-token verification,
//! and the cached token check (RFC 7662 introspection, or userinfo where a provider has no
//! introspection endpoint). Every call has a timeout; concurrent checks of one token share one
//! upstream call; results live in bounded caches.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use base64::Engine;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use moka::Expiry;
use moka::future::Cache;
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::sync::Semaphore;
use url::Url;

pub mod client_tls;

use crate::core::identity::Identity;
use crate::core::token::{TokenSet, token_key, unix_now};

/// How long an inactive or unknown token stays cached.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(5);
/// Entries each token cache holds at most.
pub const CACHE_CAPACITY: u64 = 200_000;
/// Clock skew tolerated on `exp`/`iat`.
pub const LEEWAY_SECS: u64 = 60;
/// Longest wait between two discovery attempts while the provider is down: short, so the
/// outpost is usable again within seconds of the provider's return.
pub const DISCOVERY_RETRY_MAX: Duration = Duration::from_secs(5);
/// Minimum time between two JWKS fetches caused by unknown key ids.
pub const JWKS_REFETCH_INTERVAL: Duration = Duration::from_secs(10);

/// Failure of a call to the provider.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("provider not ready: {0}")]
    NotReady(String),
    #[error("request to provider failed: {0}")]
    Transport(String),
    #[error("provider answered {status}: {detail}")]
    Status { status: u16, detail: String },
    #[error("provider rejected the grant: {0}")]
    Rejected(String),
    #[error("invalid response from provider: {0}")]
    Invalid(String),
    #[error("token verification failed: {0}")]
    Verify(String),
}

impl From<reqwest::Error> for OidcError {
    fn from(e: reqwest::Error) -> Self {
        // Strip the URL: it never carries secrets, but keeps logs short and stable.
        OidcError::Transport(e.without_url().to_string())
    }
}

/// How the outpost authenticates itself at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// Pick from the provider's discovery document (post preferred).
    Auto,
    Post,
    Basic,
}

/// Static client settings.
#[derive(Clone)]
pub struct ClientSettings {
    pub issuer: Url,
    pub client_id: String,
    pub client_secret: String,
    pub scopes: Vec<String>,
    pub client_auth: ClientAuth,
    pub cache_ttl: Duration,
    pub max_concurrent_checks: usize,
    /// Issuers accepted besides the discovery document's (authentik behind a browser-facing
    /// host name signs with either).
    pub extra_issuers: Vec<String>,
}

impl std::fmt::Debug for ClientSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSettings")
            .field("issuer", &self.issuer.as_str())
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// The provider's discovery document, as far as we use it.
#[derive(Debug, Clone, Deserialize)]
pub struct Discovery {
    pub issuer: String,
    pub authorization_endpoint: Url,
    pub token_endpoint: Url,
    #[serde(default, deserialize_with = "lenient_url")]
    pub userinfo_endpoint: Option<Url>,
    #[serde(default, deserialize_with = "lenient_url")]
    pub introspection_endpoint: Option<Url>,
    #[serde(default, deserialize_with = "lenient_url")]
    pub revocation_endpoint: Option<Url>,
    #[serde(default, deserialize_with = "lenient_url")]
    pub end_session_endpoint: Option<Url>,
    #[serde(default, deserialize_with = "lenient_url")]
    pub jwks_uri: Option<Url>,
    #[serde(default)]
    pub token_endpoint_auth_methods_supported: Option<Vec<String>>,
}

struct VerifyKey {
    kid: Option<String>,
    alg: Option<Algorithm>,
    family: KeyFamily,
    key: DecodingKey,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum KeyFamily {
    Rsa,
    Ec,
    Okp,
}

/// Discovery plus keys; swapped whole.
pub struct Metadata {
    pub discovery: Discovery,
    pub client_auth: ClientAuth,
    keys: Vec<VerifyKey>,
    /// `jwks_uri` as a ready header value (`X-authentik-meta-jwks`).
    jwks_header: http::HeaderValue,
}

fn jwks_header(disc: &Discovery) -> http::HeaderValue {
    disc.jwks_uri
        .as_ref()
        .and_then(|u| http::HeaderValue::from_str(u.as_str()).ok())
        .unwrap_or_else(|| http::HeaderValue::from_static(""))
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    id_token: Option<String>,
    #[serde(default)]
    expires_in: Option<Value>,
}

/// Result of checking an access token upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenStatus {
    pub active: bool,
    ttl: Duration,
}

/// Result of a refresh-token grant.
#[derive(Clone)]
pub enum RefreshOutcome {
    Renewed(TokenSet),
    /// The provider refused the refresh token (revoked, expired): the session is over.
    Rejected,
}

/// Who an `Authorization` header authenticates.
#[derive(Clone)]
pub struct HeaderIdentity {
    pub identity: Identity,
    /// The token to keep in the session (the bearer token, or the ID token for Basic).
    pub token: String,
    pub expires_at: i64,
}

#[derive(Clone)]
struct CachedHeader {
    found: Option<Arc<HeaderIdentity>>,
    ttl: Duration,
}

/// A cached value that carries its own time to live.
trait Ttl {
    fn ttl(&self) -> Duration;
}

impl Ttl for CachedHeader {
    fn ttl(&self) -> Duration {
        self.ttl
    }
}

impl Ttl for TokenStatus {
    fn ttl(&self) -> Duration {
        self.ttl
    }
}

/// Expires each cache entry after the time to live it carries.
struct PerEntryTtl;

impl<V: Ttl> Expiry<[u8; 32], V> for PerEntryTtl {
    fn expire_after_create(
        &self,
        _key: &[u8; 32],
        value: &V,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(value.ttl())
    }
}

/// One OIDC client (one per provider).
pub struct OidcClient {
    pub settings: ClientSettings,
    http: reqwest::Client,
    meta: ArcSwapOption<Metadata>,
    last_error: ArcSwapOption<String>,
    jwks_fetch: tokio::sync::Mutex<Option<Instant>>,
    checks: Cache<[u8; 32], TokenStatus>,
    refreshes: Cache<[u8; 32], RefreshOutcome>,
    header_cache: Cache<[u8; 32], CachedHeader>,
    permits: Semaphore,
}

impl std::fmt::Debug for OidcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcClient")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl OidcClient {
    pub fn new(settings: ClientSettings, http: reqwest::Client) -> OidcClient {
        let permits = Semaphore::new(settings.max_concurrent_checks.max(1));
        OidcClient {
            settings,
            http,
            meta: ArcSwapOption::empty(),
            last_error: ArcSwapOption::from_pointee("discovery not attempted yet".to_string()),
            jwks_fetch: tokio::sync::Mutex::new(None),
            checks: Cache::builder()
                .max_capacity(CACHE_CAPACITY)
                .expire_after(PerEntryTtl)
                .build(),
            refreshes: Cache::builder()
                .max_capacity(CACHE_CAPACITY / 10)
                .time_to_live(Duration::from_secs(30))
                .build(),
            header_cache: Cache::builder()
                .max_capacity(CACHE_CAPACITY / 10)
                .expire_after(PerEntryTtl)
                .build(),
            permits,
        }
    }

    /// The HTTP client for provider calls: rustls, timeouts, no redirects.
    pub fn http_client(insecure: bool) -> reqwest::Client {
        reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(15))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("ak-outpost/", env!("CARGO_PKG_VERSION")))
            .danger_accept_invalid_certs(insecure)
            .build()
            .unwrap_or_else(|_| reqwest::Client::new())
    }

    pub fn metadata(&self) -> Option<Arc<Metadata>> {
        self.meta.load_full()
    }

    /// Why the provider is not usable, or `None` when it is.
    pub fn not_ready_reason(&self) -> Option<String> {
        if self.meta.load().is_some() {
            None
        } else {
            Some(
                self.last_error
                    .load_full()
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_default(),
            )
        }
    }

    pub fn is_ready(&self) -> bool {
        self.meta.load().is_some()
    }

    /// Keeps trying discovery and JWKS with capped exponential backoff until both load.
    pub fn spawn_discovery(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        self.spawn_until_ready(None)
    }

    /// Keeps trying to load the keys of a known discovery document until it works.
    pub fn spawn_install(self: &Arc<Self>, disc: Discovery) -> tokio::task::JoinHandle<()> {
        self.spawn_until_ready(Some(disc))
    }

    fn spawn_until_ready(
        self: &Arc<Self>,
        known: Option<Discovery>,
    ) -> tokio::task::JoinHandle<()> {
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(500);
            let mut attempt: u32 = 0;
            loop {
                attempt += 1;
                let result = match &known {
                    Some(d) => me.install(d.clone()).await,
                    None => me.discover().await,
                };
                match result {
                    Ok(()) => {
                        tracing::info!(issuer = %me.settings.issuer, "provider ready");
                        return;
                    }
                    Err(e) => {
                        let msg = e.to_string();
                        // First failures at WARN, then quietly, to keep logs readable.
                        if attempt <= 3 || attempt.is_multiple_of(20) {
                            tracing::warn!(issuer = %me.settings.issuer, error = %msg, retry_in_ms = delay.as_millis() as u64, "provider discovery failed");
                        } else {
                            tracing::debug!(error = %msg, "provider discovery failed");
                        }
                        me.last_error.store(Some(Arc::new(msg)));
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(DISCOVERY_RETRY_MAX);
                    }
                }
            }
        })
    }

    /// Fetches discovery and JWKS once.
    pub async fn discover(&self) -> Result<(), OidcError> {
        let base = self.settings.issuer.as_str().trim_end_matches('/');
        let url = format!("{base}/.well-known/openid-configuration");
        let resp = self.http.get(&url).send().await?;
        if !resp.status().is_success() {
            return Err(OidcError::Status {
                status: resp.status().as_u16(),
                detail: format!("discovery at {url}"),
            });
        }
        let disc: Discovery = resp
            .json()
            .await
            .map_err(|e| OidcError::Invalid(format!("discovery document: {e}")))?;
        if disc.issuer.trim_end_matches('/') != base {
            return Err(OidcError::Invalid(format!(
                "discovery says issuer '{}' but the configured issuer is '{}'",
                disc.issuer, self.settings.issuer
            )));
        }
        self.install(disc).await
    }

    /// Uses a known discovery document (authentik sends it with each provider).
    pub async fn install(&self, disc: Discovery) -> Result<(), OidcError> {
        let keys = match &disc.jwks_uri {
            Some(u) => self.fetch_jwks(u).await?,
            None => Vec::new(),
        };
        let client_auth = resolve_client_auth(self.settings.client_auth, &disc);
        self.meta.store(Some(Arc::new(Metadata {
            jwks_header: jwks_header(&disc),
            discovery: disc,
            client_auth,
            keys,
        })));
        self.last_error.store(None);
        Ok(())
    }

    async fn fetch_jwks(&self, url: &Url) -> Result<Vec<VerifyKey>, OidcError> {
        let resp = self.http.get(url.clone()).send().await?;
        if !resp.status().is_success() {
            return Err(OidcError::Status {
                status: resp.status().as_u16(),
                detail: "JWKS".into(),
            });
        }
        let doc: Value = resp
            .json()
            .await
            .map_err(|e| OidcError::Invalid(format!("JWKS: {e}")))?;
        Ok(parse_jwks(&doc))
    }

    /// Re-fetches the JWKS after an unknown key id, at most once per interval.
    async fn refetch_jwks(&self) -> bool {
        let mut last = self.jwks_fetch.lock().await;
        if last.is_some_and(|t| t.elapsed() < JWKS_REFETCH_INTERVAL) {
            return false;
        }
        *last = Some(Instant::now());
        let Some(meta) = self.meta.load_full() else {
            return false;
        };
        let Some(uri) = meta.discovery.jwks_uri.clone() else {
            return false;
        };
        match self.fetch_jwks(&uri).await {
            Ok(keys) => {
                self.meta.store(Some(Arc::new(Metadata {
                    discovery: meta.discovery.clone(),
                    client_auth: meta.client_auth,
                    keys,
                    jwks_header: meta.jwks_header.clone(),
                })));
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "JWKS re-fetch failed");
                false
            }
        }
    }

    fn ready_meta(&self) -> Result<Arc<Metadata>, OidcError> {
        self.meta
            .load_full()
            .ok_or_else(|| OidcError::NotReady(self.not_ready_reason().unwrap_or_default()))
    }

    /// The authorization URL for a login: code flow with PKCE S256, state and nonce.
    pub fn authorize_url(
        &self,
        redirect_uri: &str,
        state: &str,
        nonce: &str,
        code_challenge: &str,
    ) -> Result<Url, OidcError> {
        let meta = self.ready_meta()?;
        let mut u = meta.discovery.authorization_endpoint.clone();
        let scope = self.settings.scopes.join(" ");
        u.query_pairs_mut()
            .append_pair("client_id", &self.settings.client_id)
            .append_pair("code_challenge", code_challenge)
            .append_pair("code_challenge_method", "S256")
            .append_pair("nonce", nonce)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("response_type", "code")
            .append_pair("scope", &scope)
            .append_pair("state", state);
        Ok(u)
    }

    /// Where sign-out sends the browser: the provider's end-session endpoint, if any.
    pub fn end_session_url(&self, id_token_hint: Option<&str>) -> Option<Url> {
        let meta = self.meta.load_full()?;
        let mut u = meta.discovery.end_session_endpoint.clone()?;
        {
            let mut q = u.query_pairs_mut();
            if let Some(h) = id_token_hint {
                q.append_pair("id_token_hint", h);
            }
            q.append_pair("client_id", &self.settings.client_id);
        }
        Some(u)
    }

    /// `X-authentik-meta-jwks`: the JWKS URL (empty before discovery).
    pub fn jwks_header(&self) -> http::HeaderValue {
        self.meta
            .load()
            .as_ref()
            .map(|m| m.jwks_header.clone())
            .unwrap_or_else(|| http::HeaderValue::from_static(""))
    }

    fn with_client_auth(
        &self,
        meta: &Metadata,
        req: reqwest::RequestBuilder,
        form: &mut Vec<(&'static str, String)>,
    ) -> reqwest::RequestBuilder {
        match meta.client_auth {
            ClientAuth::Basic => {
                // RFC 6749 §2.3.1: form-encode id and secret before Basic encoding.
                let id = form_encode(&self.settings.client_id);
                let secret = form_encode(&self.settings.client_secret);
                req.basic_auth(id, Some(secret))
            }
            _ => {
                form.push(("client_id", self.settings.client_id.clone()));
                form.push(("client_secret", self.settings.client_secret.clone()));
                req
            }
        }
    }

    async fn token_request(
        &self,
        mut form: Vec<(&'static str, String)>,
    ) -> Result<TokenSet, OidcError> {
        let meta = self.ready_meta()?;
        let req = self.http.post(meta.discovery.token_endpoint.clone());
        let req = self.with_client_auth(&meta, req, &mut form);
        let resp = req.form(&form).send().await?;
        let status = resp.status();
        if status.as_u16() == 400 || status.as_u16() == 401 {
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            let code = body
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("unknown");
            return Err(OidcError::Rejected(code.to_string()));
        }
        if !status.is_success() {
            return Err(OidcError::Status {
                status: status.as_u16(),
                detail: "token endpoint".into(),
            });
        }
        let t: TokenResponse = resp
            .json()
            .await
            .map_err(|e| OidcError::Invalid(format!("token response: {e}")))?;
        if t.access_token.is_empty() {
            return Err(OidcError::Invalid("empty access_token".into()));
        }
        let now = unix_now();
        let expires_in = match &t.expires_in {
            Some(Value::Number(n)) => n.as_i64(),
            Some(Value::String(s)) => s.parse().ok(),
            _ => None,
        }
        .filter(|&s| s > 0)
        .unwrap_or(3600);
        Ok(TokenSet {
            access_token: t.access_token,
            refresh_token: t.refresh_token.filter(|r| !r.is_empty()),
            id_token: t.id_token.filter(|r| !r.is_empty()),
            issued_at: now,
            expires_at: now + expires_in,
        })
    }

    /// Exchanges an authorization code (with its PKCE verifier).
    pub async fn exchange_code(
        &self,
        code: &str,
        redirect_uri: &str,
        verifier: &str,
    ) -> Result<TokenSet, OidcError> {
        self.token_request(vec![
            ("grant_type", "authorization_code".into()),
            ("code", code.into()),
            ("redirect_uri", redirect_uri.into()),
            ("code_verifier", verifier.into()),
        ])
        .await
    }

    /// Renews tokens with a refresh token. Concurrent renewals of one refresh token share a
    /// single call and its result (providers that rotate refresh tokens treat a second use as
    /// theft).
    pub async fn refresh(&self, refresh_token: &str) -> Result<RefreshOutcome, Arc<OidcError>> {
        let key = token_key(refresh_token);
        // A shared result is only reused while young; a provider that does not rotate refresh
        // tokens sees the same one again at the next renewal, which must really renew.
        if let Some(RefreshOutcome::Renewed(t)) = self.refreshes.get(&key).await
            && !t.is_fresh(unix_now())
        {
            self.refreshes.invalidate(&key).await;
        }
        let rt = refresh_token.to_string();
        self.refreshes
            .try_get_with(key, async move {
                match self
                    .token_request(vec![
                        ("grant_type", "refresh_token".into()),
                        ("refresh_token", rt.clone()),
                    ])
                    .await
                {
                    Ok(mut t) => {
                        if t.refresh_token.is_none() {
                            t.refresh_token = Some(rt);
                        }
                        Ok(RefreshOutcome::Renewed(t))
                    }
                    Err(OidcError::Rejected(_)) => Ok(RefreshOutcome::Rejected),
                    Err(e) => Err(e),
                }
            })
            .await
    }

    /// Verifies an ID token: signature (JWKS, or HMAC with the client secret), issuer,
    /// audience, expiry, and the nonce when one is expected. Returns its claims.
    pub async fn verify_id_token(
        &self,
        token: &str,
        nonce: Option<&str>,
    ) -> Result<Map<String, Value>, OidcError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| OidcError::Verify(format!("header: {e}")))?;
        let mut meta = self.ready_meta()?;
        let key = match find_key(&meta, &header, &self.settings.client_secret) {
            Some(k) => k,
            None => {
                if self.refetch_jwks().await {
                    meta = self.ready_meta()?;
                }
                find_key(&meta, &header, &self.settings.client_secret)
                    .ok_or_else(|| OidcError::Verify("no key matches the token's kid/alg".into()))?
            }
        };
        let mut v = Validation::new(header.alg);
        let mut issuers = vec![meta.discovery.issuer.clone()];
        issuers.extend(self.settings.extra_issuers.iter().cloned());
        v.set_issuer(&issuers);
        v.set_audience(&[self.settings.client_id.as_str()]);
        v.leeway = LEEWAY_SECS;
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &v)
            .map_err(|e| OidcError::Verify(e.to_string()))?;
        let claims = data.claims;
        if let Some(expected) = nonce
            && claims.get("nonce").and_then(Value::as_str) != Some(expected)
        {
            return Err(OidcError::Verify("nonce mismatch".into()));
        }
        // With several audiences the token must have been issued to us (OIDC core 3.1.3.7).
        if let Some(Value::Array(aud)) = claims.get("aud")
            && aud.len() > 1
            && let Some(azp) = claims.get("azp").and_then(Value::as_str)
            && azp != self.settings.client_id
        {
            return Err(OidcError::Verify("azp is another client".into()));
        }
        Ok(claims)
    }

    /// Fetches userinfo claims for an access token.
    pub async fn userinfo(&self, access_token: &str) -> Result<Map<String, Value>, OidcError> {
        let meta = self.ready_meta()?;
        let Some(url) = meta.discovery.userinfo_endpoint.clone() else {
            return Ok(Map::new());
        };
        let resp = self.http.get(url).bearer_auth(access_token).send().await?;
        if !resp.status().is_success() {
            return Err(OidcError::Status {
                status: resp.status().as_u16(),
                detail: "userinfo".into(),
            });
        }
        let ct = resp
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        if !ct.starts_with("application/json") {
            // A signed userinfo response (application/jwt) is not used; claims come from the ID token.
            return Ok(Map::new());
        }
        resp.json()
            .await
            .map_err(|e| OidcError::Invalid(format!("userinfo: {e}")))
    }

    /// Whether an access token is still live at the provider, cached per token for
    /// min(cache TTL, token lifetime); inactive answers for a few seconds. Concurrent checks of
    /// one token share one upstream call, and at most `max_concurrent_checks` run at once.
    /// Transport failures are not cached.
    pub async fn check_token(
        &self,
        access_token: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<bool, Arc<OidcError>> {
        self.check_token_keyed(token_key(access_token), access_token, expires_at, now)
            .await
    }

    /// [`check_token`](Self::check_token) with the token's cache key already computed
    /// (`token_key(access_token)`).
    pub async fn check_token_keyed(
        &self,
        key: [u8; 32],
        access_token: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<bool, Arc<OidcError>> {
        if let Some(s) = self.checks.get(&key).await {
            return Ok(s.active);
        }
        // The miss path (an HTTP call) lives in its own allocation, so the future of every
        // check, which hyper keeps per connection, stays small.
        Box::pin(self.check_token_miss(key, access_token, expires_at, now)).await
    }

    async fn check_token_miss(
        &self,
        key: [u8; 32],
        access_token: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<bool, Arc<OidcError>> {
        let remaining = Duration::from_secs((expires_at - now).max(1) as u64);
        let ttl = self.settings.cache_ttl.min(remaining);
        let status = self
            .checks
            .try_get_with(key, async {
                let _permit = self
                    .permits
                    .acquire()
                    .await
                    .map_err(|_| OidcError::NotReady("shutting down".into()))?;
                let active = self.check_upstream(access_token).await?;
                Ok::<_, OidcError>(TokenStatus {
                    active,
                    ttl: if active { ttl } else { NEGATIVE_TTL.min(ttl) },
                })
            })
            .await?;
        Ok(status.active)
    }

    /// Forgets a token's cached status (after sign-out).
    pub async fn forget_token(&self, access_token: &str) {
        self.checks.invalidate(&token_key(access_token)).await;
    }

    /// Number of cached token checks (for metrics and benchmarks).
    pub fn cached_checks(&self) -> u64 {
        self.checks.entry_count()
    }

    async fn check_upstream(&self, access_token: &str) -> Result<bool, OidcError> {
        let meta = self.ready_meta()?;
        if meta.discovery.introspection_endpoint.is_some() {
            return Ok(self.introspect(&meta, access_token).await?.is_some());
        }
        if let Some(url) = meta.discovery.userinfo_endpoint.clone() {
            let resp = self.http.get(url).bearer_auth(access_token).send().await?;
            return match resp.status().as_u16() {
                200 => Ok(true),
                401 | 403 => Ok(false),
                s => Err(OidcError::Status {
                    status: s,
                    detail: "userinfo check".into(),
                }),
            };
        }
        // Nothing to ask: the token's own expiry (checked by the caller) is all we have.
        Ok(true)
    }

    /// RFC 7662 introspection: the response claims when the token is active and was issued to
    /// this client, `None` otherwise.
    async fn introspect(
        &self,
        meta: &Metadata,
        token: &str,
    ) -> Result<Option<Map<String, Value>>, OidcError> {
        let Some(url) = meta.discovery.introspection_endpoint.clone() else {
            return Err(OidcError::NotReady(
                "the provider has no introspection endpoint".into(),
            ));
        };
        let mut form = vec![
            ("token", token.to_string()),
            ("token_type_hint", "access_token".to_string()),
        ];
        let req = self.with_client_auth(meta, self.http.post(url), &mut form);
        let resp = req.form(&form).send().await?;
        if resp.status().as_u16() != 200 {
            return Err(OidcError::Status {
                status: resp.status().as_u16(),
                detail: "introspection".into(),
            });
        }
        let body: Map<String, Value> = resp
            .json()
            .await
            .map_err(|e| OidcError::Invalid(format!("introspection: {e}")))?;
        let active = body.get("active").and_then(Value::as_bool).unwrap_or(false);
        // A token issued to another client must not open this one's applications.
        let foreign = body
            .get("client_id")
            .and_then(Value::as_str)
            .is_some_and(|c| c != self.settings.client_id);
        Ok((active && !foreign).then_some(body))
    }

    /// Authenticates an `Authorization` header (cached per header value: successes for the
    /// cache TTL, failures for a few seconds). Bearer tokens are introspected; Basic
    /// credentials are exchanged with the client_credentials grant (authentik app passwords;
    /// user `goauthentik.io/token` carries a bearer token as its password).
    /// `key` is the header's [`token_key`] (the caller may know it already).
    pub async fn header_auth_keyed(
        &self,
        key: [u8; 32],
        header: &str,
        allow_basic: bool,
    ) -> Result<Option<Arc<HeaderIdentity>>, Arc<OidcError>> {
        let entry = match self.header_cache.get(&key).await {
            Some(e) => e,
            None => Box::pin(self.header_auth_miss(key, header, allow_basic)).await?,
        };
        Ok(entry.found.filter(|h| h.expires_at > unix_now()))
    }

    async fn header_auth_miss(
        &self,
        key: [u8; 32],
        header: &str,
        allow_basic: bool,
    ) -> Result<CachedHeader, Arc<OidcError>> {
        let ttl = self.settings.cache_ttl;
        self.header_cache
            .try_get_with(key, async {
                let _permit = self
                    .permits
                    .acquire()
                    .await
                    .map_err(|_| OidcError::NotReady("shutting down".into()))?;
                let found = self
                    .header_auth_upstream(header, allow_basic)
                    .await?
                    .map(Arc::new);
                let ttl = match &found {
                    Some(h) => ttl.min(Duration::from_secs(
                        (h.expires_at - unix_now()).max(1) as u64
                    )),
                    None => NEGATIVE_TTL,
                };
                Ok::<_, OidcError>(CachedHeader { found, ttl })
            })
            .await
    }

    async fn header_auth_upstream(
        &self,
        header: &str,
        allow_basic: bool,
    ) -> Result<Option<HeaderIdentity>, OidcError> {
        let meta = self.ready_meta()?;
        let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
        if scheme.eq_ignore_ascii_case("bearer") {
            return self.bearer_identity(&meta, rest.trim()).await;
        }
        if !allow_basic || !scheme.eq_ignore_ascii_case("basic") {
            return Ok(None);
        }
        let Some((user, pass)) = base64::engine::general_purpose::STANDARD
            .decode(rest.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| {
                s.split_once(':')
                    .map(|(u, p)| (u.to_string(), p.to_string()))
            })
        else {
            return Ok(None);
        };
        if user == "goauthentik.io/token"
            && let Some(found) = self.bearer_identity(&meta, &pass).await?
        {
            return Ok(Some(found));
        }
        let form = vec![
            ("grant_type", "client_credentials".to_string()),
            ("client_id", self.settings.client_id.clone()),
            ("username", user),
            ("password", pass),
            ("scope", self.settings.scopes.join(" ")),
        ];
        let resp = self
            .http
            .post(meta.discovery.token_endpoint.clone())
            .form(&form)
            .send()
            .await?;
        if resp.status().as_u16() != 200 {
            return Ok(None);
        }
        let t: TokenResponse = resp
            .json()
            .await
            .map_err(|e| OidcError::Invalid(format!("token response: {e}")))?;
        let Some(id_token) = t.id_token else {
            return Ok(None);
        };
        let claims = match self.verify_id_token(&id_token, None).await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "client_credentials token rejected");
                return Ok(None);
            }
        };
        let Some(identity) = Identity::from_claims(&claims) else {
            return Ok(None);
        };
        let expires_at = claims
            .get("exp")
            .and_then(Value::as_i64)
            .unwrap_or_else(|| unix_now() + 60);
        Ok(Some(HeaderIdentity {
            identity,
            token: id_token,
            expires_at,
        }))
    }

    async fn bearer_identity(
        &self,
        meta: &Metadata,
        token: &str,
    ) -> Result<Option<HeaderIdentity>, OidcError> {
        if token.is_empty() {
            return Ok(None);
        }
        let Some(claims) = self.introspect(meta, token).await? else {
            return Ok(None);
        };
        let Some(mut identity) = Identity::from_claims(&claims) else {
            return Ok(None);
        };
        if identity.username.is_empty() || identity.email.is_empty() {
            match self.userinfo(token).await {
                Ok(info) => identity.merge_userinfo(&info),
                Err(e) => tracing::debug!(error = %e, "userinfo for a bearer token failed"),
            }
        }
        let expires_at = claims
            .get("exp")
            .and_then(Value::as_i64)
            .unwrap_or_else(|| unix_now() + self.settings.cache_ttl.as_secs() as i64);
        Ok(Some(HeaderIdentity {
            identity,
            token: token.to_string(),
            expires_at,
        }))
    }

    /// Revokes a token at the provider when it has a revocation endpoint. Best effort.
    pub async fn revoke(&self, token: &str, hint: &str) {
        let Ok(meta) = self.ready_meta() else { return };
        let Some(url) = meta.discovery.revocation_endpoint.clone() else {
            return;
        };
        let mut form = vec![
            ("token", token.to_string()),
            ("token_type_hint", hint.to_string()),
        ];
        let req = self.with_client_auth(&meta, self.http.post(url), &mut form);
        match req.form(&form).send().await {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => tracing::warn!(status = r.status().as_u16(), "token revocation refused"),
            Err(e) => tracing::warn!(error = %OidcError::from(e), "token revocation failed"),
        }
    }
}

/// An optional endpoint: empty or malformed values count as absent.
fn lenient_url<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Url>, D::Error> {
    let v: Option<Value> = Option::deserialize(d)?;
    Ok(v.and_then(|v| v.as_str().and_then(|s| Url::parse(s).ok()))
        .filter(|u| matches!(u.scheme(), "http" | "https")))
}

fn resolve_client_auth(configured: ClientAuth, disc: &Discovery) -> ClientAuth {
    match configured {
        ClientAuth::Auto => match &disc.token_endpoint_auth_methods_supported {
            Some(m)
                if !m.iter().any(|s| s == "client_secret_post")
                    && m.iter().any(|s| s == "client_secret_basic") =>
            {
                ClientAuth::Basic
            }
            _ => ClientAuth::Post,
        },
        other => other,
    }
}

fn form_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn parse_jwks(doc: &Value) -> Vec<VerifyKey> {
    let Some(keys) = doc.get("keys").and_then(Value::as_array) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for k in keys {
        if k.get("use").and_then(Value::as_str) == Some("enc") {
            continue;
        }
        let Ok(jwk) = serde_json::from_value::<Jwk>(k.clone()) else {
            continue;
        };
        let family = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => KeyFamily::Rsa,
            AlgorithmParameters::EllipticCurve(_) => KeyFamily::Ec,
            AlgorithmParameters::OctetKeyPair(_) => KeyFamily::Okp,
            AlgorithmParameters::OctetKey(_) => continue,
        };
        let Ok(key) = DecodingKey::from_jwk(&jwk) else {
            continue;
        };
        let alg = k
            .get("alg")
            .and_then(Value::as_str)
            .and_then(|a| a.parse::<Algorithm>().ok());
        out.push(VerifyKey {
            kid: jwk.common.key_id.clone(),
            alg,
            family,
            key,
        });
    }
    out
}

fn alg_family(alg: Algorithm) -> Option<KeyFamily> {
    use Algorithm::*;
    match alg {
        RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => Some(KeyFamily::Rsa),
        ES256 | ES384 => Some(KeyFamily::Ec),
        EdDSA => Some(KeyFamily::Okp),
        HS256 | HS384 | HS512 => None,
    }
}

fn find_key(
    meta: &Metadata,
    header: &jsonwebtoken::Header,
    client_secret: &str,
) -> Option<DecodingKey> {
    let Some(family) = alg_family(header.alg) else {
        // HMAC-signed tokens (authentik proxy providers) use the client secret.
        return Some(DecodingKey::from_secret(client_secret.as_bytes()));
    };
    let fits = |k: &&VerifyKey| k.family == family && k.alg.is_none_or(|a| a == header.alg);
    match &header.kid {
        Some(kid) => meta
            .keys
            .iter()
            .filter(fits)
            .find(|k| k.kid.as_deref() == Some(kid.as_str())),
        None => {
            let mut candidates = meta.keys.iter().filter(fits);
            let first = candidates.next();
            // Without a kid, only an unambiguous key is used.
            if candidates.next().is_some() {
                None
            } else {
                first
            }
        }
    }
    .map(|k| k.key.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwks_parsing_skips_what_it_cannot_use() {
        let doc = serde_json::json!({"keys": [
            {"kty": "EC", "crv": "P-256", "kid": "ec1", "alg": "ES256", "use": "sig",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
             "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty": "RSA", "kid": "enc1", "use": "enc", "n": "AQAB", "e": "AQAB"},
            {"kty": "weird"},
            {"kty": "oct", "k": "c2VjcmV0"}
        ]});
        let keys = parse_jwks(&doc);
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].kid.as_deref(), Some("ec1"));
        assert!(keys[0].family == KeyFamily::Ec);
    }

    #[test]
    fn client_auth_resolution() {
        let mut d: Discovery = serde_json::from_value(serde_json::json!({
            "issuer": "https://i", "authorization_endpoint": "https://i/a", "token_endpoint": "https://i/t"
        }))
        .unwrap();
        assert_eq!(resolve_client_auth(ClientAuth::Auto, &d), ClientAuth::Post);
        d.token_endpoint_auth_methods_supported = Some(vec!["client_secret_basic".into()]);
        assert_eq!(resolve_client_auth(ClientAuth::Auto, &d), ClientAuth::Basic);
        assert_eq!(resolve_client_auth(ClientAuth::Post, &d), ClientAuth::Post);
    }
}
