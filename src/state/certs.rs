//! Server certificates for the HTTPS listener: one per SNI host name (authentik's provider
//! keypairs) and a fallback, swapped atomically while connections are served; PEM loading, the
//! self-signed fallback and the TLS 1.2+ server configuration. No request handling:
//! certificates are loaded at start-up and on refresh.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::pki_types::CertificateDer;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// Server certificates: one per SNI host name, and a fallback for everything else.
#[derive(Debug)]
pub struct CertStore {
    fallback: Arc<CertifiedKey>,
    by_name: ArcSwap<HashMap<String, Arc<CertifiedKey>>>,
}

impl CertStore {
    pub fn new(fallback: CertifiedKey) -> CertStore {
        CertStore {
            fallback: Arc::new(fallback),
            by_name: ArcSwap::from_pointee(HashMap::new()),
        }
    }

    /// Replaces the per-host certificates atomically (host names lower-case, no port).
    pub fn set(&self, certs: HashMap<String, Arc<CertifiedKey>>) {
        self.by_name.store(Arc::new(certs));
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let named = hello
            .server_name()
            .and_then(|n| self.by_name.load().get(&n.to_ascii_lowercase()).cloned());
        Some(named.unwrap_or_else(|| Arc::clone(&self.fallback)))
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A self-signed certificate for `ak-outpost` (the fallback, as authentik's outpost has).
pub fn self_signed() -> Result<CertifiedKey, String> {
    let cert = rcgen::generate_simple_self_signed(vec!["ak-outpost".to_string()])
        .map_err(|e| format!("self-signed certificate: {e}"))?;
    let key_der = rustls::pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der())
        .map_err(|e| format!("self-signed key: {e}"))?;
    let key = provider()
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| format!("self-signed key: {e}"))?;
    Ok(CertifiedKey::new(vec![cert.cert.der().clone()], key))
}

/// A certificate chain and key from PEM text.
pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<CertifiedKey, String> {
    use rustls::pki_types::pem::PemObject;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("certificate: {e}"))?;
    if chain.is_empty() {
        return Err("certificate: no PEM certificate found".into());
    }
    let key_der = rustls::pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| format!("private key: {e}"))?;
    let key = provider()
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| format!("private key: {e}"))?;
    Ok(CertifiedKey::new(chain, key))
}

/// TLS 1.2+ server configuration resolving certificates from `store`.
pub fn server_config(store: Arc<CertStore>) -> Result<rustls::ServerConfig, String> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(store);
    // HTTP/2 for browsers talking to the outpost directly (proxy mode); HTTP/1.1 for the rest
    // and for WebSockets, which browsers open over HTTP/1.1 when the server offers no
    // extended CONNECT.
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_and_pem_round_trip() {
        assert!(self_signed().is_ok());
        let cert = rcgen::generate_simple_self_signed(vec!["app.example.com".to_string()]).unwrap();
        let ck = from_pem(&cert.cert.pem(), &cert.signing_key.serialize_pem()).unwrap();
        assert_eq!(ck.cert.len(), 1);
        assert!(from_pem("garbage", "garbage").is_err());
        assert!(from_pem(&cert.cert.pem(), "").is_err());
    }
}
