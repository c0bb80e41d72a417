//! authentik's outpost API: the calls a proxy outpost makes and the JSON shapes it reads (field
//! names as in authentik's OpenAPI schema). Unknown fields are ignored; missing optional ones
//! take authentik's defaults. Calls and shapes only: it builds no applications.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use url::Url;

use crate::provider::OidcError;
use crate::provider::client_tls::{self, TlsSetupError};

/// Providers requested per page, as authentik's outposts do.
pub const PAGE_SIZE: usize = 100;
/// Longest one API call may take, connection included (a page of 100 providers, a keypair).
pub const API_TIMEOUT: Duration = Duration::from_secs(30);
/// Pages read at most in one refresh (100 × 100 providers); more is treated as an error.
pub const MAX_PAGES: u64 = 100;

/// The pagination object of every list endpoint.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct Pagination {
    #[serde(default)]
    pub next: f64,
    #[serde(default)]
    pub count: f64,
    #[serde(default)]
    pub current: f64,
    #[serde(default)]
    pub total_pages: f64,
}

/// One page of a list endpoint.
#[derive(Debug, Deserialize)]
pub struct Page<T> {
    #[serde(default)]
    pub pagination: Pagination,
    pub results: Vec<T>,
}

/// The providers of one page of `/api/v3/outposts/proxy/`: every element of the expected
/// shape; the others are logged and skipped, so one odd provider never hides the rest.
pub fn providers_of(results: Vec<Value>) -> Vec<ProxyProvider> {
    let mut out = Vec::with_capacity(results.len());
    for item in results {
        match serde_json::from_value::<ProxyProvider>(item.clone()) {
            Ok(prov) => out.push(prov),
            Err(e) => {
                let name = item
                    .get("name")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or("?");
                tracing::error!(provider = %name, error = %e, "provider skipped: unexpected shape");
            }
        }
    }
    out
}

/// The page to read after page `page`: `None` when `pagination.next` says this was the last
/// (0, or not after `page`, so a listing always ends), an error past [`MAX_PAGES`].
pub fn next_page(pagination: &Pagination, page: u64) -> Result<Option<u64>, OidcError> {
    // `as` saturates: NaN and negative numbers are 0, huge ones u64::MAX.
    let next = pagination.next as u64;
    if next == 0 || next <= page {
        return Ok(None);
    }
    if next > MAX_PAGES {
        return Err(OidcError::Invalid("too many provider pages".into()));
    }
    Ok(Some(next))
}

/// An outpost object (`/api/v3/outposts/instances/`).
#[derive(Debug, Clone, Deserialize)]
pub struct OutpostObject {
    pub pk: String,
    pub name: String,
    #[serde(default)]
    pub config: Value,
    #[serde(default)]
    pub managed: Option<String>,
    #[serde(default)]
    pub refresh_interval_s: Option<i64>,
}

/// The provider's OIDC endpoints, as the server built them.
#[derive(Debug, Clone, Deserialize)]
pub struct OidcConfiguration {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    #[serde(default)]
    pub userinfo_endpoint: Option<String>,
    #[serde(default)]
    pub end_session_endpoint: Option<String>,
    #[serde(default)]
    pub introspection_endpoint: Option<String>,
    #[serde(default)]
    pub revocation_endpoint: Option<String>,
    #[serde(default)]
    pub jwks_uri: Option<String>,
    #[serde(default)]
    pub token_endpoint_auth_methods_supported: Option<Vec<String>>,
}

/// One element of `/api/v3/outposts/proxy/` (ProxyOutpostConfig).
#[derive(Clone, Deserialize)]
pub struct ProxyProvider {
    pub pk: i64,
    pub name: String,
    #[serde(default)]
    pub internal_host: Option<String>,
    #[serde(default = "default_true")]
    pub internal_host_ssl_validation: bool,
    pub external_host: String,
    pub client_id: String,
    pub client_secret: String,
    pub oidc_configuration: OidcConfiguration,
    #[serde(default)]
    pub cookie_secret: Option<String>,
    #[serde(default)]
    pub certificate: Option<String>,
    #[serde(default)]
    pub skip_path_regex: Option<String>,
    #[serde(default)]
    pub basic_auth_enabled: bool,
    #[serde(default)]
    pub basic_auth_password_attribute: Option<String>,
    #[serde(default)]
    pub basic_auth_user_attribute: Option<String>,
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub cookie_domain: Option<String>,
    #[serde(default)]
    pub access_token_validity: Option<f64>,
    #[serde(default = "default_true")]
    pub intercept_header_auth: bool,
    #[serde(default)]
    pub scopes_to_request: Vec<String>,
    #[serde(default)]
    pub assigned_application_slug: Option<String>,
    #[serde(default)]
    pub assigned_application_name: Option<String>,
}

fn default_true() -> bool {
    true
}

impl std::fmt::Debug for ProxyProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyProvider")
            .field("pk", &self.pk)
            .field("name", &self.name)
            .field("external_host", &self.external_host)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

/// A client for the outpost API of one authentik server.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    /// `AUTHENTIK_HOST` with a trailing slash.
    base: Url,
    token: String,
}

/// `User-Agent` for every API and websocket request.
pub fn user_agent() -> String {
    format!("goauthentik.io/outpost/{}", env!("CARGO_PKG_VERSION"))
}

impl Api {
    /// A client on the shared trust store (certificates unchecked when `insecure`), with
    /// connect and total timeouts; redirects are followed, as authentik's outpost does.
    pub fn new(base: Url, token: String, insecure: bool) -> Result<Api, TlsSetupError> {
        let http = client_tls::http_client(
            insecure,
            API_TIMEOUT,
            reqwest::Client::builder().user_agent(user_agent()),
        )?;
        Ok(Api { http, base, token })
    }

    pub fn base(&self) -> &Url {
        &self.base
    }

    fn url(&self, path: &str) -> Result<Url, OidcError> {
        self.base
            .join(path)
            .map_err(|e| OidcError::Invalid(format!("API URL: {e}")))
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, OidcError> {
        let resp = self
            .http
            .get(self.url(path)?)
            .bearer_auth(&self.token)
            .header(http::header::ACCEPT, "application/json")
            .send()
            .await?;
        let status = resp.status().as_u16();
        if status == 401 || status == 403 {
            return Err(OidcError::Status {
                status,
                detail: "the outpost token was refused (check AUTHENTIK_TOKEN)".into(),
            });
        }
        if !resp.status().is_success() {
            return Err(OidcError::Status {
                status,
                detail: format!("GET {path}"),
            });
        }
        resp.json()
            .await
            .map_err(|e| OidcError::Invalid(format!("{path}: {e}")))
    }

    /// The outpost this token belongs to (`results[0]`), if any.
    pub async fn outpost(&self) -> Result<Option<OutpostObject>, OidcError> {
        let page: Page<OutpostObject> = self.get("api/v3/outposts/instances/").await?;
        Ok(page.results.into_iter().next())
    }

    /// `root/config`, read once at start (only checked for reachability).
    pub async fn root_config(&self) -> Result<Value, OidcError> {
        self.get("api/v3/root/config/").await
    }

    /// Every proxy provider assigned to this outpost, all pages. Any failing page fails the
    /// whole listing, so a partial list never replaces a complete one.
    pub async fn providers(&self) -> Result<Vec<ProxyProvider>, OidcError> {
        let mut out = Vec::new();
        let mut page = 1u64;
        loop {
            let p: Page<Value> = self
                .get(&format!(
                    "api/v3/outposts/proxy/?page={page}&page_size={PAGE_SIZE}"
                ))
                .await?;
            out.extend(providers_of(p.results));
            match next_page(&p.pagination, page)? {
                Some(next) => page = next,
                None => return Ok(out),
            }
        }
    }

    /// A keypair's SHA-256 fingerprint (to decide whether to download it again).
    pub async fn keypair_fingerprint(&self, uuid: &str) -> Result<String, OidcError> {
        let v: Value = self
            .get(&format!("api/v3/crypto/certificatekeypairs/{uuid}/"))
            .await?;
        Ok(v.get("fingerprint_sha256")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string())
    }

    /// A keypair's certificate chain and private key, as PEM.
    pub async fn keypair_pem(&self, uuid: &str) -> Result<(String, String), OidcError> {
        let cert: Value = self
            .get(&format!(
                "api/v3/crypto/certificatekeypairs/{uuid}/view_certificate/"
            ))
            .await?;
        let key: Value = self
            .get(&format!(
                "api/v3/crypto/certificatekeypairs/{uuid}/view_private_key/"
            ))
            .await?;
        let text = |v: &Value| {
            v.get("data")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        Ok((text(&cert), text(&key)))
    }

    /// Reports a forward-auth misconfiguration to authentik's event log (best effort).
    pub async fn configuration_error(&self, body: Value) {
        let Ok(url) = self.url("api/v3/events/events/") else {
            return;
        };
        match self
            .http
            .post(url)
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => tracing::debug!(status = r.status().as_u16(), "event not accepted"),
            Err(e) => tracing::debug!(error = %OidcError::from(e), "event not sent"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paging_always_ends() {
        let p = |next: f64| Pagination {
            next,
            ..Default::default()
        };
        assert_eq!(next_page(&p(2.0), 1).unwrap(), Some(2));
        assert_eq!(next_page(&p(100.0), 99).unwrap(), Some(100));
        for (next, page) in [(0.0, 1), (1.0, 1), (1.0, 3), (f64::NAN, 1), (-3.0, 1)] {
            assert_eq!(
                next_page(&p(next), page).unwrap(),
                None,
                "{next} after {page}"
            );
        }
        for next in [101.0, 1e300, f64::INFINITY] {
            assert!(next_page(&p(next), 1).is_err(), "{next}");
        }
        let results = vec![
            serde_json::json!({"pk": "x", "name": "odd"}),
            serde_json::json!(7),
        ];
        assert!(providers_of(results).is_empty(), "odd shapes are skipped");
    }

    #[test]
    fn provider_shape_parses_with_defaults() {
        let v = serde_json::json!({
            "pk": 3, "name": "grafana", "internal_host": "", "external_host": "https://grafana.example.com",
            "internal_host_ssl_validation": true, "client_id": "cid", "client_secret": "cs",
            "oidc_configuration": {
                "issuer": "https://ak/application/o/grafana/",
                "authorization_endpoint": "https://ak/application/o/authorize/",
                "token_endpoint": "https://ak/application/o/token/",
                "userinfo_endpoint": "https://ak/application/o/userinfo/",
                "end_session_endpoint": "https://ak/application/o/grafana/end-session/",
                "introspection_endpoint": "https://ak/application/o/introspect/",
                "jwks_uri": "https://ak/application/o/grafana/jwks/",
                "response_types_supported": ["code"],
                "id_token_signing_alg_values_supported": ["HS256"],
                "subject_types_supported": ["public"],
                "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"]
            },
            "cookie_secret": "ABC", "certificate": null, "skip_path_regex": "", "basic_auth_enabled": false,
            "basic_auth_password_attribute": "", "basic_auth_user_attribute": "", "mode": "forward_single",
            "cookie_domain": "", "access_token_validity": 300.0, "intercept_header_auth": true,
            "scopes_to_request": ["openid", "profile"], "assigned_application_slug": "grafana",
            "assigned_application_name": "Grafana"
        });
        let p: ProxyProvider = serde_json::from_value(v).unwrap();
        assert_eq!(p.pk, 3);
        assert_eq!(p.mode.as_deref(), Some("forward_single"));
        assert!(format!("{p:?}").contains("grafana"));
        assert!(
            !format!("{p:?}").contains("cs\""),
            "secrets are not printed"
        );
    }
}
