//! The TLS listener: certificates from files (standalone), per-provider certificates chosen by
//! SNI with a self-signed fallback (authentik mode).

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::fake_authentik::{FakeAuthentik, FakeUser, ProviderSpec};
use common::*;

fn cert_for(host: &str) -> (String, String) {
    let c = rcgen::generate_simple_self_signed(vec![host.to_string()]).unwrap();
    (c.cert.pem(), c.signing_key.serialize_pem())
}

/// A client that trusts only `ca_pem` and sends `host` as SNI, connecting to `addr`.
fn client(host: &str, addr: SocketAddr, ca_pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .tls_built_in_root_certs(false)
        .resolve(host, addr)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

async fn ping(c: &reqwest::Client, host: &str, port: u16) -> Result<u16, String> {
    c.get(format!("https://{host}:{port}/outpost.goauthentik.io/ping"))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| format!("{e:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_serves_the_configured_certificate() {
    let idp = Idp::start(&IdpOptions::new(vec!["https://app.example.test/cb".into()]));
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = cert_for(APP_HOST);
    std::fs::write(dir.path().join("c.pem"), &cert).unwrap();
    std::fs::write(dir.path().join("k.pem"), &key).unwrap();
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let https = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let yaml = outpost_yaml(
        http,
        &idp.issuer,
        SECRET,
        60,
        &[AppCfg::single("app", format!("https://{APP_HOST}"))],
    )
    .replace(
        "  metrics: \"\"\n",
        &format!(
            "  metrics: \"\"\n  https: \"{https}\"\ntls:\n  cert_file: \"{}\"\n  key_file: \"{}\"\n",
            dir.path().join("c.pem").display(),
            dir.path().join("k.pem").display()
        ),
    );
    assert!(yaml.contains("https:"));
    let _o = Binary::start(http, &yaml).await;
    let c = client(APP_HOST, https, &cert);
    assert_eq!(ping(&c, APP_HOST, https.port()).await, Ok(204));
    // The same endpoints as on plain HTTP: an auth check without a session is a 401.
    let r = c
        .get(format!(
            "https://{APP_HOST}:{}/outpost.goauthentik.io/auth/nginx",
            https.port()
        ))
        .header("X-Original-URL", format!("https://{APP_HOST}/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // A client that trusts another certificate refuses the connection.
    let (other, _) = cert_for(APP_HOST);
    assert!(
        ping(&client(APP_HOST, https, &other), APP_HOST, https.port())
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentik_mode_picks_certificates_by_sni_with_a_fallback() {
    let (cert, key) = cert_for(APP_HOST);
    let mut p = ProviderSpec::forward_single(1, "app", &format!("https://{APP_HOST}"));
    p.certificate = Some("6f2a0c1e-0000-4000-8000-000000000001".into());
    let fa = FakeAuthentik::start(vec![p], vec![FakeUser::new("alice", "pw")]).await;
    fa.add_keypair("6f2a0c1e-0000-4000-8000-000000000001", &cert, &key);
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let https = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut o = Binary::spawn_env(
        http,
        &[
            ("AUTHENTIK_HOST", fa.url.clone()),
            ("AUTHENTIK_TOKEN", fa.token.clone()),
            ("AUTHENTIK_LISTEN__HTTPS", https.to_string()),
        ],
    );
    o.wait_ping().await;
    let c = client(APP_HOST, https, &cert);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match ping(&c, APP_HOST, https.port()).await {
            Ok(204) => break,
            other => assert!(
                Instant::now() < deadline,
                "provider certificate never served: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Another name gets the self-signed fallback: not trusted by a client of the keypair,
    // but served (TLS 1.2+) to a client that accepts it.
    let other = client("unknown.example.test", https, &cert);
    assert!(
        ping(&other, "unknown.example.test", https.port())
            .await
            .is_err()
    );
    let lax = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .resolve("unknown.example.test", https)
        .build()
        .unwrap();
    assert_eq!(
        ping(&lax, "unknown.example.test", https.port()).await,
        Ok(204)
    );
}
