//! The cached token check: whether an access token (of a session, or from an `Authorization`
//! header) is live, by RFC 7662 introspection or userinfo. One upstream call per token per time
//! to live however many requests ask at once, a bound on calls in flight, and bounded caches
//! whose entries carry their own time to live. What a live token means for a request is decided
//! elsewhere (`core::decide`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use moka::Expiry;
use serde_json::{Map, Value};

use crate::core::identity::Identity;
use crate::core::token::{token_key, unix_now};

use super::token::TokenResponse;
use super::{Metadata, NEGATIVE_TTL, OidcClient, OidcError};

/// Result of checking an access token upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenStatus {
    pub active: bool,
    ttl: Duration,
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
pub(super) struct PerEntryTtl;

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

impl OidcClient {
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
}
