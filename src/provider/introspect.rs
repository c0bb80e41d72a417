//! The cached token check: whether an access token (of a session, or from an `Authorization`
//! header) is live, by RFC 7662 introspection or userinfo. One upstream call per token per time
//! to live however many requests ask at once, a bound on calls in flight, and bounded caches
//! whose entries carry their own time to live. What a live token means for a request is decided
//! elsewhere (`core::decide`).

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use serde_json::{Map, Value};

use crate::core::identity::Identity;
use crate::core::token::{token_key, unix_now};

use super::cache::Expiring;
use super::token::TokenResponse;

use super::{CHECK_TIMEOUT, Metadata, NEGATIVE_TTL, OidcClient, OidcError};

/// Result of checking an access token upstream, as cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenStatus {
    pub active: bool,
    /// Unix seconds until which the answer is current: min(cache TTL, token lifetime), a few
    /// seconds for an inactive token.
    fresh_until: i64,
    /// Unix seconds of the provider's last `active` answer (the outage grace counts from it).
    confirmed_at: i64,
    /// Unix seconds of the last re-check that failed for an outage (0: none).
    failed_at: i64,
    /// How long the cache keeps the entry from when it is stored: an active answer also
    /// through the outage grace, after it stopped being current.
    ttl: Duration,
}

/// After a re-check failed for an outage, other requests with the same token use the grace
/// instead of asking again for this long.
const RECHECK_PAUSE_SECS: i64 = 1;

impl TokenStatus {
    /// The provider's answer at `now`, current for `fresh`.
    fn answered(active: bool, fresh: Duration, grace: Duration, now: i64) -> TokenStatus {
        let fresh = if active {
            fresh
        } else {
            NEGATIVE_TTL.min(fresh)
        };
        TokenStatus {
            active,
            fresh_until: now + fresh.as_secs() as i64,
            confirmed_at: if active { now } else { 0 },
            failed_at: 0,
            ttl: if active { fresh + grace } else { fresh },
        }
    }

    fn is_current(&self, now: i64) -> bool {
        self.fresh_until > now || !self.active
    }

    /// Whether an active answer may still stand in for one the provider cannot give.
    fn within_grace(&self, grace: Duration, now: i64) -> bool {
        self.active && !grace.is_zero() && now - self.confirmed_at <= grace.as_secs() as i64
    }

    /// This (stale) answer after a re-check failed for an outage at `now`: kept until its
    /// grace ends.
    fn failed(self, grace: Duration, now: i64) -> TokenStatus {
        let left = self.confirmed_at + grace.as_secs() as i64 - now;
        TokenStatus {
            failed_at: now,
            ttl: Duration::from_secs(left.max(1) as u64),
            ..self
        }
    }
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
pub(super) struct CachedHeader {
    found: Option<Arc<HeaderIdentity>>,
    ttl: Duration,
}

impl CachedHeader {
    /// The identity while its token lives.
    fn live(self) -> Option<Arc<HeaderIdentity>> {
        self.found.filter(|h| h.expires_at > unix_now())
    }
}

impl Expiring for CachedHeader {
    fn ttl(&self) -> Duration {
        self.ttl
    }
}

impl Expiring for TokenStatus {
    fn ttl(&self) -> Duration {
        self.ttl
    }
}

impl OidcClient {
    /// Whether an access token is still live at the provider, cached per token for
    /// min(cache TTL, token lifetime); inactive answers for a few seconds. Concurrent checks of
    /// one token share one upstream call, and at most `max_concurrent_checks` run at once.
    /// Failures are not cached, but while the provider cannot answer (an outage, see
    /// `outage`), a token it confirmed within the outage grace stays live.
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
        // The other path (an HTTP call) lives in its own allocation, so the future of every
        // check, which hyper keeps per connection, stays small.
        match self.cached_token_answer(key, now) {
            Some(active) => Ok(active),
            None => Box::pin(self.recheck_token(key, access_token, expires_at, now)).await,
        }
    }

    /// The current cached answer for the token with cache key `key`, if there is one: what
    /// [`check_token_keyed`](Self::check_token_keyed) answers without waiting.
    pub fn cached_token_answer(&self, key: [u8; 32], now: i64) -> Option<bool> {
        self.checks
            .get(&key)
            .filter(|s| s.is_current(now))
            .map(|s| s.active)
    }

    /// How long an answer for a token expiring at `expires_at` is current.
    fn fresh_for(&self, expires_at: i64, now: i64) -> Duration {
        let remaining = Duration::from_secs((expires_at - now).max(1) as u64);
        self.settings.cache_ttl.min(remaining)
    }

    /// Asks the provider about a token with no current answer. Concurrent checks of one
    /// token wait for one call and share its answer; when the provider cannot answer, an old
    /// active answer stands while its grace lasts.
    async fn recheck_token(
        &self,
        key: [u8; 32],
        access_token: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<bool, Arc<OidcError>> {
        let fresh = self.fresh_for(expires_at, now);
        let grace = self.settings.outage_grace;
        // Another request re-checked (or failed to, for an outage) while this one waited.
        let settled = |s: &TokenStatus| s.is_current(now) || s.failed_at > now - RECHECK_PAUSE_SECS;
        let status = self
            .checks
            .resolve(key, settled, |old| async move {
                match self.ask_provider(access_token).await {
                    Ok(active) => Ok(TokenStatus::answered(active, fresh, grace, now)),
                    Err(e) if e.is_outage() => match old.filter(|s| s.within_grace(grace, now)) {
                        Some(s) => Ok(s.failed(grace, now)),
                        None => Err(e),
                    },
                    Err(e) => Err(e),
                }
            })
            .await?;
        self.verdict(&status, now)
    }

    /// What a cached answer says now: current answers as they are, an old active one while
    /// its outage grace lasts (counted), otherwise unverifiable.
    fn verdict(&self, s: &TokenStatus, now: i64) -> Result<bool, Arc<OidcError>> {
        if s.is_current(now) {
            return Ok(s.active);
        }
        if s.within_grace(self.settings.outage_grace, now) {
            self.breaker.count_grace();
            return Ok(true);
        }
        Err(Arc::new(OidcError::Unavailable(
            "the provider cannot confirm this token".into(),
        )))
    }

    /// One check of an `Authorization` value the provider never confirmed, from the budget.
    /// (Tokens from session cookies are not counted: a cookie opens only if this outpost
    /// sealed it, so no one can make them up, and after a restart every signed-in user
    /// arrives with a token this process has not checked yet.)
    fn spend_budget(&self) -> Result<(), OidcError> {
        if self.budget.take() {
            Ok(())
        } else {
            Err(OidcError::Unavailable(
                "too many checks of unknown tokens, try again".into(),
            ))
        }
    }

    /// Records that the provider itself just handed out `access_token` (a code exchange or a
    /// refresh): it is live, so the first check after a login needs no call.
    pub async fn note_issued(&self, access_token: &str, expires_at: i64, now: i64) {
        let fresh = self.fresh_for(expires_at, now);
        let status = TokenStatus::answered(true, fresh, self.settings.outage_grace, now);
        self.checks.insert(token_key(access_token), status);
    }

    /// One upstream check, within the bound on checks in flight.
    async fn ask_provider(&self, access_token: &str) -> Result<bool, OidcError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| OidcError::NotReady("shutting down".into()))?;
        self.check_upstream(access_token).await
    }

    /// Forgets a token's cached status (after sign-out).
    pub async fn forget_token(&self, access_token: &str) {
        self.checks.remove(&token_key(access_token));
    }

    /// Number of cached token checks (for metrics and benchmarks).
    pub fn cached_checks(&self) -> u64 {
        self.checks.len() as u64
    }

    async fn check_upstream(&self, access_token: &str) -> Result<bool, OidcError> {
        let meta = self.ready_meta()?;
        if meta.discovery.introspection_endpoint.is_some() {
            return Ok(self.introspect(&meta, access_token).await?.is_some());
        }
        if let Some(url) = meta.discovery.userinfo_endpoint.clone() {
            let check = async {
                let req = self.http.get(url).bearer_auth(access_token);
                let resp = req.timeout(CHECK_TIMEOUT).send().await?;
                match resp.status().as_u16() {
                    200 => Ok(true),
                    401 | 403 => Ok(false),
                    s => Err(OidcError::Status {
                        status: s,
                        detail: "userinfo check".into(),
                    }),
                }
            };
            return self.guarded(check).await;
        }
        // Nothing to ask: the token's own expiry (checked by the caller) is all we have.
        Ok(true)
    }

    /// RFC 7662 introspection: the response claims when the token is active and was issued to
    /// this client, `None` otherwise. Through the circuit breaker.
    async fn introspect(
        &self,
        meta: &Metadata,
        token: &str,
    ) -> Result<Option<Map<String, Value>>, OidcError> {
        self.guarded(self.post_introspection(meta, token)).await
    }

    async fn post_introspection(
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
        let resp = req.form(&form).timeout(CHECK_TIMEOUT).send().await?;
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
        if let Some(found) = self.cached_header_auth(key) {
            return Ok(found);
        }
        let entry = Box::pin(self.header_auth_miss(key, header, allow_basic)).await?;
        Ok(entry.live())
    }

    /// The cached answer for the `Authorization` value with cache key `key`, if there is one:
    /// what [`header_auth_keyed`](Self::header_auth_keyed) answers without waiting.
    pub fn cached_header_auth(&self, key: [u8; 32]) -> Option<Option<Arc<HeaderIdentity>>> {
        self.header_cache.get(&key).map(CachedHeader::live)
    }

    async fn header_auth_miss(
        &self,
        key: [u8; 32],
        header: &str,
        allow_basic: bool,
    ) -> Result<CachedHeader, Arc<OidcError>> {
        let ttl = self.settings.cache_ttl;
        self.header_cache
            .resolve(
                key,
                |_| true,
                |_| async {
                    self.spend_budget()?;
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
                },
            )
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
        let grant = async {
            let req = self.http.post(meta.discovery.token_endpoint.clone());
            Ok(req.form(&form).send().await?)
        };
        let resp = self.guarded(grant).await?;
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
}
