//! Signing keys and ID tokens: the JWKS document parsed into verification keys (what cannot be
//! used is skipped), a re-fetch when a token names an unknown key (rate-limited), and ID-token
//! verification (signature, issuer, audience, expiry, nonce). Key material and verification
//! only; no token-endpoint calls.

use std::sync::Arc;
use std::time::Instant;

use jsonwebtoken::jwk::{AlgorithmParameters, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use url::Url;

use super::{JWKS_REFETCH_INTERVAL, LEEWAY_SECS, Metadata, OidcClient, OidcError};

pub(super) struct VerifyKey {
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

impl OidcClient {
    pub(super) async fn fetch_jwks(&self, url: &Url) -> Result<Vec<VerifyKey>, OidcError> {
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
}
