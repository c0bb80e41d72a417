//! The token endpoint and the calls made with a token: authorization-code exchange, refresh
//! (concurrent renewals of one token share one grant), userinfo and revocation, each with the
//! client authentication the provider supports. Only concurrent renewals are shared; nothing
//! else is cached here.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::core::token::{TokenSet, token_key, unix_now};

use super::cache::Expiring;
use super::{ClientAuth, Metadata, OidcClient, OidcError};

#[derive(Deserialize)]
pub(super) struct TokenResponse {
    pub(super) access_token: String,
    #[serde(default)]
    pub(super) refresh_token: Option<String>,
    #[serde(default)]
    pub(super) id_token: Option<String>,
    #[serde(default)]
    pub(super) expires_in: Option<Value>,
}

/// Result of a refresh-token grant.
#[derive(Clone)]
pub enum RefreshOutcome {
    Renewed(TokenSet),
    /// The provider refused the refresh token (revoked, expired): the session is over.
    Rejected,
}

/// How long a refresh's outcome is shared with the requests that bring the same refresh
/// token (the browser's parallel requests when a session's access token ran out).
const REFRESH_SHARED_FOR: Duration = Duration::from_secs(30);

impl Expiring for RefreshOutcome {
    fn ttl(&self) -> Duration {
        REFRESH_SHARED_FOR
    }
}

fn form_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

impl OidcClient {
    pub(super) fn with_client_auth(
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

    /// A grant at the token endpoint, through the circuit breaker. The access token it
    /// returns is live (the provider just issued it to this client): noted as checked.
    async fn token_request(
        &self,
        form: Vec<(&'static str, String)>,
    ) -> Result<TokenSet, OidcError> {
        let t = self.guarded(self.token_grant(form)).await?;
        self.note_issued(&t.access_token, t.expires_at, t.issued_at)
            .await;
        Ok(t)
    }

    async fn token_grant(
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
        if let Some(RefreshOutcome::Renewed(t)) = self.refreshes.get(&key)
            && !t.is_fresh(unix_now())
        {
            self.refreshes.remove(&key);
        }
        let rt = refresh_token.to_string();
        self.refreshes
            .resolve(
                key,
                |_| true,
                |_| async move {
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
                },
            )
            .await
    }

    /// Fetches userinfo claims for an access token (through the circuit breaker).
    pub async fn userinfo(&self, access_token: &str) -> Result<Map<String, Value>, OidcError> {
        self.guarded(self.fetch_userinfo(access_token)).await
    }

    async fn fetch_userinfo(&self, access_token: &str) -> Result<Map<String, Value>, OidcError> {
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
        let sent = self.guarded(async { Ok(req.form(&form).send().await?) });
        match sent.await {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => tracing::warn!(status = r.status().as_u16(), "token revocation refused"),
            Err(e) => tracing::warn!(error = %e, "token revocation failed"),
        }
    }
}
