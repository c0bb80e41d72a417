//! The OpenID Connect client, one per provider: discovery, JWKS, code exchange, refresh,
//! ID-token verification, and the cached token check (RFC 7662 introspection, or userinfo
//! where a provider has no introspection endpoint). Every call has a timeout; concurrent
//! checks of one token share one upstream call; results live in bounded caches. This layer
//! talks to the identity provider and nothing else: it uses only `core`, and knows nothing of
//! applications, configurations or the HTTP server.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use tokio::sync::Semaphore;
use url::Url;

mod budget;
mod cache;
pub mod client_tls;
mod discovery;
mod introspect;
mod keys;
mod outage;
mod token;

pub use discovery::Discovery;
pub use introspect::{HeaderIdentity, TokenStatus};
pub use token::RefreshOutcome;

use budget::Budget;
use cache::TokenCache;
use introspect::CachedHeader;
use keys::VerifyKey;
use outage::Breaker;

/// How long an inactive or unknown token stays cached.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(5);

/// Entries each token cache holds at most.
pub const CACHE_CAPACITY: usize = 200_000;

/// Clock skew tolerated on `exp`/`iat`.
pub const LEEWAY_SECS: u64 = 60;

/// Longest wait between two discovery attempts while the provider is down: short, so the
/// outpost is usable again within seconds of the provider's return.
pub const DISCOVERY_RETRY_MAX: Duration = Duration::from_secs(5);

/// Longest wait for a token check (introspection or userinfo): short, so that a provider
/// that stopped answering turns into the outage grace (or a 503) within seconds instead of
/// holding requests for the client's whole timeout.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

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
    /// The provider is down (the breaker is open): the call was not made.
    #[error("identity provider unavailable: {0}")]
    Unavailable(String),
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
    /// How long after its last confirmation by the provider a live token keeps being
    /// accepted while the provider cannot be reached; zero turns this off.
    pub outage_grace: Duration,
    /// Checks per second of `Authorization` values the provider never confirmed (0: no limit).
    pub new_token_checks_per_second: u32,
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

/// Discovery plus keys; swapped whole.
pub struct Metadata {
    pub discovery: Discovery,
    pub client_auth: ClientAuth,
    keys: Vec<VerifyKey>,
    /// `jwks_uri` as a ready header value (`X-authentik-meta-jwks`).
    jwks_header: http::HeaderValue,
}

/// One OIDC client (one per provider).
pub struct OidcClient {
    pub settings: ClientSettings,
    http: reqwest::Client,
    meta: ArcSwapOption<Metadata>,
    last_error: ArcSwapOption<String>,
    jwks_fetch: tokio::sync::Mutex<Option<Instant>>,
    checks: TokenCache<TokenStatus, OidcError>,
    refreshes: TokenCache<RefreshOutcome, OidcError>,
    header_cache: TokenCache<CachedHeader, OidcError>,
    permits: Semaphore,
    breaker: Breaker,
    budget: Budget,
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
        let budget = Budget::new(settings.new_token_checks_per_second);
        OidcClient {
            settings,
            http,
            meta: ArcSwapOption::empty(),
            last_error: ArcSwapOption::from_pointee("discovery not attempted yet".to_string()),
            jwks_fetch: tokio::sync::Mutex::new(None),
            checks: TokenCache::new(CACHE_CAPACITY),
            refreshes: TokenCache::new(CACHE_CAPACITY / 10),
            header_cache: TokenCache::new(CACHE_CAPACITY / 10),
            permits,
            breaker: Breaker::default(),
            budget,
        }
    }

    /// The HTTP client for provider calls: the shared trust store ([`client_tls`]), connect
    /// and total timeouts, no redirects. `insecure` only for a provider that is authentik
    /// under `AUTHENTIK_INSECURE=true`.
    pub fn http_client(insecure: bool) -> Result<reqwest::Client, client_tls::TlsSetupError> {
        client_tls::http_client(
            insecure,
            Duration::from_secs(15),
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("ak-outpost/", env!("CARGO_PKG_VERSION"))),
        )
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

    /// Unix seconds since when the provider is unreachable (its circuit breaker is open).
    pub fn down_since(&self) -> Option<i64> {
        self.breaker.down_since()
    }

    /// Checks of unknown tokens refused because their budget was spent.
    pub fn checks_refused(&self) -> u64 {
        self.budget.refused()
    }

    /// Token checks answered from the outage grace so far.
    pub fn grace_served(&self) -> u64 {
        self.breaker.grace_served()
    }

    /// Runs one call to the provider through the circuit breaker: refused at once while the
    /// provider is down (but for one probe now and then), and counted when it fails for an
    /// outage.
    async fn guarded<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, OidcError>>,
    ) -> Result<T, OidcError> {
        if self.breaker.admit() == outage::Admission::Refuse {
            return Err(OidcError::Unavailable(
                "the provider did not answer recent calls".into(),
            ));
        }
        let result = call.await;
        match &result {
            Err(e) if e.is_outage() => self.breaker.failure(e, self.settings.outage_grace),
            // Nothing was asked (no discovery yet): says nothing about the provider.
            Err(OidcError::NotReady(_)) => {}
            _ => self.breaker.success(),
        }
        result
    }

    pub fn is_ready(&self) -> bool {
        self.meta.load().is_some()
    }

    fn ready_meta(&self) -> Result<Arc<Metadata>, OidcError> {
        self.meta
            .load_full()
            .ok_or_else(|| OidcError::NotReady(self.not_ready_reason().unwrap_or_default()))
    }
}
