//! Discovery: fetching and checking the provider's `.well-known/openid-configuration`
//! (retried with backoff until it works), installing it with its keys, and the URLs made from
//! it (authorization, end of session, the JWKS header value). Touches only the provider's
//! discovery and JWKS endpoints.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use url::Url;

use super::{ClientAuth, DISCOVERY_RETRY_MAX, Metadata, OidcClient, OidcError};

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

fn jwks_header(disc: &Discovery) -> http::HeaderValue {
    disc.jwks_uri
        .as_ref()
        .and_then(|u| http::HeaderValue::from_str(u.as_str()).ok())
        .unwrap_or_else(|| http::HeaderValue::from_static(""))
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

impl OidcClient {
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
