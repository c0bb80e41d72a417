//! The one trust store and the one set of limits for every outbound connection: authentik's
//! API and websocket, discovery, JWKS, the token endpoint, userinfo, introspection and
//! revocation all use [`client_config`] (TLS 1.2+, ring, ALPN `http/1.1`), and every HTTP
//! client is made by [`http_client`] (connect and total timeouts). Roots are the system's
//! (`SSL_CERT_FILE` / `SSL_CERT_DIR` honoured), or the bundled Mozilla list when the system has
//! none; they are read at the first verified TLS handshake, once per process, so an outpost
//! that only speaks plain HTTP never holds them. `AUTHENTIK_INSECURE=true` (the `insecure`
//! argument) turns certificate checks off; only connections to authentik may ask for it.
//! This module owns client-side TLS settings and nothing else: it opens no sockets and knows
//! no configuration; server-side TLS is `state::certs`.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// Longest wait for a TCP connection (and, for the websocket, part of its handshake budget).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The only application protocol offered: reqwest is built without HTTP/2, and a websocket
/// upgrade needs HTTP/1.1.
const ALPN_HTTP11: &[u8] = b"http/1.1";

/// The outbound TLS settings could not be built (rustls refused the protocol versions, or
/// reqwest its client); nothing is sent without them.
#[derive(Debug, Clone, thiserror::Error)]
#[error("outbound TLS cannot be set up: {0}")]
pub struct TlsSetupError(String);

/// The client configuration every outbound TLS connection uses: certificates verified against
/// the process's trust store, or not at all when `insecure`. Built once per mode and shared.
pub fn client_config(insecure: bool) -> Result<Arc<ClientConfig>, TlsSetupError> {
    static VERIFIED: OnceLock<Result<Arc<ClientConfig>, TlsSetupError>> = OnceLock::new();
    static UNVERIFIED: OnceLock<Result<Arc<ClientConfig>, TlsSetupError>> = OnceLock::new();
    let cell = if insecure { &UNVERIFIED } else { &VERIFIED };
    cell.get_or_init(|| build_config(insecure).map(Arc::new))
        .clone()
}

/// An HTTP client for outbound calls: `builder` (user agent, redirect policy) plus the shared
/// TLS configuration, [`CONNECT_TIMEOUT`] and a `total` limit on each whole request.
pub fn http_client(
    insecure: bool,
    total: Duration,
    builder: reqwest::ClientBuilder,
) -> Result<reqwest::Client, TlsSetupError> {
    let tls = client_config(insecure)?;
    builder
        .use_preconfigured_tls(ClientConfig::clone(&tls))
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(total)
        .build()
        .map_err(|e| TlsSetupError(e.to_string()))
}

fn build_config(insecure: bool) -> Result<ClientConfig, TlsSetupError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier: Arc<dyn ServerCertVerifier> = if insecure {
        Arc::new(AcceptAny(Arc::clone(&provider)))
    } else {
        Arc::new(SystemRoots {
            provider: Arc::clone(&provider),
            verifier: OnceLock::new(),
        })
    };
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsSetupError(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    Ok(config)
}

/// Checks certificates against the trust store, which it reads at the first handshake. With
/// no usable root every handshake fails (fail closed).
#[derive(Debug)]
struct SystemRoots {
    provider: Arc<CryptoProvider>,
    verifier: OnceLock<Option<Arc<WebPkiServerVerifier>>>,
}

impl SystemRoots {
    fn verifier(&self) -> Result<&WebPkiServerVerifier, rustls::Error> {
        self.verifier
            .get_or_init(|| {
                let roots = trust_store()?;
                WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots),
                    Arc::clone(&self.provider),
                )
                .build()
                .inspect_err(
                    |e| tracing::error!(error = %e, "outbound TLS: no certificate verifier"),
                )
                .ok()
            })
            .as_deref()
            .ok_or_else(|| rustls::Error::General("no trusted root certificates".into()))
    }
}

/// Whether `SSL_CERT_FILE` / `SSL_CERT_DIR` name the trust store (as rustls-native-certs
/// reads them): then the system's default store is not consulted, and neither is the bundle.
fn explicit_trust_store() -> bool {
    std::env::var_os("SSL_CERT_FILE").is_some()
        || std::env::var_os("SSL_CERT_DIR").is_some_and(|d| !d.is_empty())
}

/// The roots: the system's, or the bundled Mozilla list when the system has none (not when
/// `SSL_CERT_FILE` / `SSL_CERT_DIR` were given and hold nothing: trust nothing then). Logged
/// once, since it runs once.
fn trust_store() -> Option<RootCertStore> {
    let found = rustls_native_certs::load_native_certs();
    if let Some(first) = found.errors.first() {
        tracing::warn!(errors = found.errors.len(), first = %first, "outbound TLS: some system certificates could not be read");
    }
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(found.certs);
    if added > 0 {
        let source = if explicit_trust_store() {
            "SSL_CERT_FILE / SSL_CERT_DIR"
        } else {
            "system"
        };
        tracing::info!(
            roots = added,
            ignored,
            source,
            "outbound TLS trusts the system's root certificates"
        );
        return Some(roots);
    }
    if explicit_trust_store() {
        tracing::error!(
            "outbound TLS: SSL_CERT_FILE / SSL_CERT_DIR hold no usable certificate; every TLS connection will fail"
        );
        return None;
    }
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    tracing::warn!(
        roots = roots.len(),
        "outbound TLS: the system has no root certificates; trusting the bundled Mozilla list (webpki-roots)"
    );
    Some(roots)
}

impl ServerCertVerifier for SystemRoots {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.verifier()?
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Accepts any server certificate (signatures are still checked for consistency by rustls'
/// handshake; the certificate chain and name are not).
#[derive(Debug)]
struct AcceptAny(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_configuration_per_mode_offering_http11_only() {
        let a = client_config(false).unwrap();
        let b = client_config(false).unwrap();
        assert!(Arc::ptr_eq(&a, &b), "built once and shared");
        let lax = client_config(true).unwrap();
        assert!(!Arc::ptr_eq(&a, &lax));
        for c in [&a, &lax] {
            assert_eq!(c.alpn_protocols, vec![b"http/1.1".to_vec()]);
        }
    }

    #[test]
    fn clients_build_with_the_shared_configuration() {
        for insecure in [false, true] {
            http_client(insecure, Duration::from_secs(1), reqwest::Client::builder()).unwrap();
        }
    }
}
