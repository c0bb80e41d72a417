//! TLS certificates of authentik's keypairs: [`KeypairCache`] remembers downloaded keypairs by
//! fingerprint, and each refresh installs the providers' certificates by SNI host name into the
//! certificate store. It touches no application or session state.

use std::collections::HashMap;
use std::sync::Arc;

use rustls::sign::CertifiedKey;
use url::Url;

use super::api::{Api, ProxyProvider};
use crate::state::certs::CertStore;

/// Certificates of authentik's keypairs, by keypair UUID, with their fingerprints.
#[derive(Default)]
pub struct KeypairCache {
    by_uuid: HashMap<String, (String, Arc<CertifiedKey>)>,
}

/// Loads the TLS certificates providers name, re-downloading a keypair only when its
/// fingerprint changed, and installs them by SNI host name. Failures leave the fallback.
pub(super) async fn update_certificates(
    api: &Api,
    store: &CertStore,
    cache: &mut KeypairCache,
    providers: &[ProxyProvider],
) {
    let mut by_name = HashMap::new();
    for p in providers {
        let Some(uuid) = p.certificate.as_deref().filter(|u| !u.is_empty()) else {
            continue;
        };
        let Some(host) = Url::parse(&p.external_host)
            .ok()
            .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
        else {
            continue;
        };
        let fingerprint = match api.keypair_fingerprint(uuid).await {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(provider = %p.name, error = %e, "certificate not loaded");
                continue;
            }
        };
        let cached = cache
            .by_uuid
            .get(uuid)
            .filter(|(f, _)| *f == fingerprint)
            .map(|(_, ck)| Arc::clone(ck));
        let key = match cached {
            Some(ck) => ck,
            None => match api.keypair_pem(uuid).await {
                Ok((cert, key)) => match crate::state::certs::from_pem(&cert, &key) {
                    Ok(ck) => {
                        let ck = Arc::new(ck);
                        cache
                            .by_uuid
                            .insert(uuid.to_string(), (fingerprint, Arc::clone(&ck)));
                        ck
                    }
                    Err(e) => {
                        tracing::warn!(provider = %p.name, error = %e, "certificate unusable");
                        continue;
                    }
                },
                Err(e) => {
                    tracing::warn!(provider = %p.name, error = %e, "certificate not loaded");
                    continue;
                }
            },
        };
        by_name.insert(host, key);
    }
    store.set(by_name);
}
