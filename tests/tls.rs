//! The TLS listener: certificates from files (standalone), per-provider certificates chosen by
//! SNI with a self-signed fallback (authentik mode). And the outbound trust store: authentik
//! behind a private CA is reached by the API, the OIDC calls and the websocket alike when the
//! CA is in `SSL_CERT_FILE`, by none of them when it is not, and by all with
//! `AUTHENTIK_INSECURE=true`.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::fake_authentik::{FakeAuthentik, FakeUser, PrivateCa, ProviderSpec};
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

/// authentik behind a private CA, and the outpost started against it.
struct BehindPrivateCa {
    fa: FakeAuthentik,
    o: Binary,
    /// Holds the CA file.
    _dir: tempfile::TempDir,
}

/// The providers at first: two, so that an unknown host is not served by a lone application.
fn providers() -> Vec<ProviderSpec> {
    vec![
        ProviderSpec::forward_single(1, "app", &format!("https://{APP_HOST}")),
        ProviderSpec::forward_single(2, "auth", &format!("https://{AUTH_HOST}")),
    ]
}

/// authentik behind a private CA (`https://127.0.0.1:<port>`) with [`providers`], and the
/// outpost started against it with `extra` environment (`{ca_file}` in a value is the CA
/// certificate's path; no `AUTHENTIK_INSECURE` unless given).
async fn behind_private_ca(extra: &[(&str, &str)]) -> BehindPrivateCa {
    let ca = PrivateCa::new();
    let fa = FakeAuthentik::start_tls(
        providers(),
        vec![FakeUser::new("alice", "pw")],
        ca.server_config(),
    )
    .await;
    assert!(fa.url.starts_with("https://127.0.0.1:"), "{}", fa.url);
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("private-ca.pem");
    std::fs::write(&ca_file, &ca.ca_pem).unwrap();
    let mut env = vec![
        ("AUTHENTIK_HOST", fa.url.clone()),
        ("AUTHENTIK_TOKEN", fa.token.clone()),
    ];
    for (k, v) in extra {
        let v = v.replace("{ca_file}", &ca_file.display().to_string());
        env.push((k, v));
    }
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut o = Binary::spawn_env(http, &env);
    o.wait_ping().await;
    BehindPrivateCa { fa, o, _dir: dir }
}

/// Status and body of an nginx-style check for `host` at the outpost.
async fn check(o: &Binary, host: &str) -> (u16, String) {
    let r = reqwest::Client::new()
        .get(format!(
            "http://{}/outpost.goauthentik.io/auth/nginx",
            o.addr
        ))
        .header("Host", host)
        .header("X-Original-URL", format!("https://{host}/"))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap_or_default())
}

/// Status and body of the outpost's readiness endpoint: 200 once the configuration is loaded
/// and every provider's keys (JWKS) are fetched.
async fn ready(o: &Binary) -> (u16, String) {
    let r = reqwest::Client::new()
        .get(format!("http://{}/outpost.goauthentik.io/ready", o.addr))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap_or_default())
}

/// Waits until `cond` holds, for at most 15 s.
async fn eventually<F: AsyncFn() -> bool>(what: &str, cond: F) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !cond().await {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// API, OIDC and websocket all connect over TLS once they share one trust store: a ready
/// outpost, a HELLO over the websocket, and a pushed update that takes effect.
async fn everything_connects(fa: &FakeAuthentik, o: &Binary) {
    eventually(
        "ready (configuration and provider keys loaded over TLS)",
        async || ready(o).await.0 == 200,
    )
    .await;
    assert_eq!(check(o, APP_HOST).await.0, 401);
    assert!(
        fa.count("/application/o/") > 0,
        "the provider's keys came from authentik"
    );
    eventually("a HELLO over the websocket", async || {
        !fa.hellos().is_empty()
    })
    .await;
    assert_eq!(fa.ws_connections(), 1);
    // A provider added in authentik arrives through TRIGGER_UPDATE on that websocket, long
    // before the 300 s refresh.
    let mut providers = providers();
    providers.push(ProviderSpec::forward_single(
        3,
        "other",
        &format!("https://{OTHER_HOST}"),
    ));
    fa.set_providers(providers);
    assert_ne!(check(o, OTHER_HOST).await.0, 401);
    fa.trigger_update().await;
    eventually("the pushed update applied", async || {
        check(o, OTHER_HOST).await.0 == 401
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_ca_in_ssl_cert_file_is_trusted_by_api_and_websocket() {
    let s = behind_private_ca(&[("SSL_CERT_FILE", "{ca_file}")]).await;
    everything_connects(&s.fa, &s.o).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentik_insecure_connects_api_and_websocket_without_the_ca() {
    let s = behind_private_ca(&[("AUTHENTIK_INSECURE", "true")]).await;
    everything_connects(&s.fa, &s.o).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_private_ca_is_refused_everywhere() {
    let s = behind_private_ca(&[("AUTHENTIK_INSECURE", "false")]).await;
    let (fa, o) = (&s.fa, &s.o);
    // The outpost retries every 3 s; give it a few attempts.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (status, body) = check(o, APP_HOST).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("not received its configuration"), "{body}");
    let (status, body) = ready(o).await;
    assert_eq!(status, 503);
    assert!(body.contains("configuration not loaded yet"), "{body}");
    // No request got through: every TLS handshake was refused (the fake records requests
    // only after the handshake).
    assert!(fa.api_requests().is_empty(), "{:?}", fa.api_requests());
    assert!(fa.ws_requests().is_empty());
    assert!(fa.hellos().is_empty());
}
