//! A fake authentik server for integration tests of the outpost in "authentik mode".
//!
//! It speaks the parts of authentik the proxy outpost depends on, with the wire shapes of
//! authentik's API serializers (reference: `/work/shared/reference/authentik-proxy-outpost.md`
//! §1.3–1.7, §12, §16):
//!
//! * outpost API: `GET /api/v3/outposts/instances/`, `GET /api/v3/root/config/`,
//!   `GET /api/v3/outposts/proxy/` (paged), `POST /api/v3/events/events/`;
//! * the outpost websocket `GET /ws/outpost/<pk>/` (HELLO/ACK, TRIGGER_UPDATE, SESSION_END);
//! * the OAuth2/OIDC provider endpoints under `/application/o/` (authorize with a login form,
//!   token, introspect, revoke, userinfo, end-session, JWKS, discovery), issuing HS256 JWTs
//!   signed with each provider's client secret, like authentik does for proxy providers.
//!
//! Everything is recorded for inspection (requests, HELLOs, events, `id_token_hint`s).
//! URLs that authentik derives from the request (issuer, `oidc_configuration`) are derived
//! from the request's `Host` header (scheme `https` only when `X-Forwarded-Proto: https`),
//! exactly as authentik does; for requests addressed to [`FakeAuthentik::url`] this is `url`.
//!
//! [`FakeAuthentik::start_tls`] serves the same over TLS (API, websocket and OAuth2 alike) with
//! a certificate from a private CA ([`PrivateCa`]), as authentik behind an internal CA; the
//! derived URLs are then `https`.
#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::header::{
    AUTHORIZATION, CACHE_CONTROL, CONNECTION, CONTENT_TYPE, COOKIE, HOST, LOCATION, PRAGMA,
    SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SET_COOKIE, UPGRADE, WWW_AUTHENTICATE,
};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::Rng;
use rand::distributions::Alphanumeric;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

/// Name of the fake's login-session cookie (authentik's Django session cookie).
pub const SESSION_COOKIE: &str = "authentik_session";
/// `acr` claim authentik puts in every token.
pub const ACR_DEFAULT: &str = "goauthentik.io/providers/oauth2/default";
/// The scopes authentik attaches to every proxy provider (`set_oauth_defaults`).
pub const DEFAULT_SCOPES: [&str; 5] = ["openid", "profile", "email", "entitlements", "ak_proxy"];
/// Lifetime of an authorization code (authentik's default `access_code_validity`).
const CODE_VALIDITY_SECS: i64 = 60;
/// Token lifetime when a provider has no `access_token_validity`.
const DEFAULT_TOKEN_VALIDITY_SECS: f64 = 600.0;
/// DRF's default page size in authentik.
const DEFAULT_PAGE_SIZE: usize = 100;

type Body = Full<Bytes>;

// ---------------------------------------------------------------------------------------------
// Public configuration types
// ---------------------------------------------------------------------------------------------

/// One proxy provider together with the application it is assigned to.
#[derive(Clone, Debug)]
pub struct ProviderSpec {
    /// Provider primary key (`pk` in the API).
    pub pk: i64,
    /// Provider name (also used as the application's name).
    pub name: String,
    /// Application slug: issuer, end-session and JWKS URLs contain it.
    pub slug: String,
    /// Public URL of the application.
    pub external_host: String,
    /// Upstream URL (proxy mode).
    pub internal_host: String,
    /// Verify the upstream's TLS certificate (proxy mode).
    pub internal_host_ssl_validation: bool,
    /// `"proxy"`, `"forward_single"` or `"forward_domain"`.
    pub mode: String,
    /// Cookie domain (domain mode).
    pub cookie_domain: String,
    /// Newline-separated regexes of unauthenticated paths.
    pub skip_path_regex: String,
    /// OAuth2 client id.
    pub client_id: String,
    /// OAuth2 client secret; also the HS256 signing key of this provider's tokens.
    pub client_secret: String,
    /// 32 chars `[A-Z0-9]`; the outpost signs its state JWTs with it.
    pub cookie_secret: String,
    /// Inject `Authorization: Basic` built from user attributes.
    pub basic_auth_enabled: bool,
    /// Attribute holding the Basic user name.
    pub basic_auth_user_attribute: String,
    /// Attribute holding the Basic password.
    pub basic_auth_password_attribute: String,
    /// "Receive header authentication" flag.
    pub intercept_header_auth: bool,
    /// Token lifetime in seconds (`null` in the API when `None`; tokens then live 600 s).
    pub access_token_validity: Option<f64>,
    /// Scope names of the provider's scope mappings (`scopes_to_request`).
    pub scopes: Vec<String>,
    /// UUID of a certificate keypair for the outpost's TLS listener (see `add_keypair`).
    pub certificate: Option<String>,
}

fn rand_alnum(n: usize) -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(n)
        .map(char::from)
        .collect()
}

fn rand_upper_digits(n: usize) -> String {
    const SET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut r = rand::thread_rng();
    (0..n)
        .map(|_| SET[r.gen_range(0..SET.len())] as char)
        .collect()
}

fn uuid4() -> String {
    let mut b: [u8; 16] = rand::thread_rng().r#gen();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn sha256_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl ProviderSpec {
    /// A `forward_single` provider with authentik's defaults: random client id (40 chars) and
    /// secret (128 chars), random cookie secret (32 chars `[A-Z0-9]`), the default scopes,
    /// header auth on, 24 h token validity, name = slug.
    pub fn forward_single(pk: i64, slug: &str, external_host: &str) -> ProviderSpec {
        ProviderSpec {
            pk,
            name: slug.to_string(),
            slug: slug.to_string(),
            external_host: external_host.to_string(),
            internal_host: String::new(),
            internal_host_ssl_validation: true,
            mode: "forward_single".into(),
            cookie_domain: String::new(),
            skip_path_regex: String::new(),
            client_id: rand_alnum(40),
            client_secret: rand_alnum(128),
            cookie_secret: rand_upper_digits(32),
            basic_auth_enabled: false,
            basic_auth_user_attribute: String::new(),
            basic_auth_password_attribute: String::new(),
            intercept_header_auth: true,
            access_token_validity: Some(86400.0),
            scopes: DEFAULT_SCOPES.iter().map(|s| s.to_string()).collect(),
            certificate: None,
        }
    }

    /// Like [`ProviderSpec::forward_single`], in `forward_domain` mode with `cookie_domain`.
    pub fn forward_domain(
        pk: i64,
        slug: &str,
        external_host: &str,
        cookie_domain: &str,
    ) -> ProviderSpec {
        let mut p = ProviderSpec::forward_single(pk, slug, external_host);
        p.mode = "forward_domain".into();
        p.cookie_domain = cookie_domain.into();
        p
    }

    /// Like [`ProviderSpec::forward_single`], in `proxy` mode towards `internal_host`.
    pub fn proxy(pk: i64, slug: &str, external_host: &str, internal_host: &str) -> ProviderSpec {
        let mut p = ProviderSpec::forward_single(pk, slug, external_host);
        p.mode = "proxy".into();
        p.internal_host = internal_host.into();
        p
    }

    /// The two redirect URIs authentik registers for a proxy provider (strict matching):
    /// `urljoin(external_host, "outpost.goauthentik.io/callback") + "?X-authentik-auth-callback=true"`
    /// and `external_host + "?X-authentik-auth-callback=true"`.
    pub fn redirect_uris(&self) -> Vec<String> {
        vec![
            format!(
                "{}?X-authentik-auth-callback=true",
                urljoin(&self.external_host, "outpost.goauthentik.io/callback")
            ),
            format!("{}?X-authentik-auth-callback=true", self.external_host),
        ]
    }

    /// The issuer for a server reached at `base` (`scheme://host[:port]`, no trailing slash).
    pub fn issuer(&self, base: &str) -> String {
        format!("{base}/application/o/{}/", self.slug)
    }

    fn validity_secs(&self) -> f64 {
        self.access_token_validity
            .unwrap_or(DEFAULT_TOKEN_VALIDITY_SECS)
    }
}

/// Python's `urllib.parse.urljoin(base, rel)` for a relative path without dot segments.
fn urljoin(base: &str, rel: &str) -> String {
    let base = base.split(['?', '#']).next().unwrap_or(base);
    let after_scheme = base.find("://").map(|i| i + 3).unwrap_or(0);
    match base[after_scheme..].find('/') {
        None => format!("{base}/{rel}"),
        Some(p) => {
            let path_start = after_scheme + p;
            let last = base.rfind('/').unwrap_or(path_start);
            format!("{}{rel}", &base[..=last])
        }
    }
}

/// A user of the fake.
#[derive(Clone, Debug)]
pub struct FakeUser {
    /// Login name (`preferred_username`, `nickname`).
    pub username: String,
    /// Password for the login form.
    pub password: String,
    /// App password token (for `client_credentials` / HTTP Basic header auth).
    pub app_password: String,
    /// `email` claim.
    pub email: String,
    /// `name` and `given_name` claims.
    pub name: String,
    /// `groups` claim.
    pub groups: Vec<String>,
    /// `entitlements` claim.
    pub entitlements: Vec<String>,
    /// `ak_proxy.user_attributes` (group-merged attributes in authentik).
    pub attributes: Value,
    /// `ak_proxy.is_superuser`.
    pub is_superuser: bool,
    /// More keys of the `ak_proxy` claim, as an admin's own `ak_proxy` scope mapping adds
    /// them next to `user_attributes` and `is_superuser`: `backend_override` (another
    /// upstream for this user, proxy mode) and `host_header` (the `Host` sent upstream).
    pub ak_proxy_extra: Map<String, Value>,
}

impl FakeUser {
    /// A user with `<username>@example.test`, app password `<username>-app-password`,
    /// no groups, no entitlements, empty attributes.
    pub fn new(username: &str, password: &str) -> FakeUser {
        FakeUser {
            username: username.into(),
            password: password.into(),
            app_password: format!("{username}-app-password"),
            email: format!("{username}@example.test"),
            name: username.into(),
            groups: vec![],
            entitlements: vec![],
            attributes: json!({}),
            is_superuser: false,
            ak_proxy_extra: Map::new(),
        }
    }

    /// alice (password `alice-password`) in groups `admins` and `users`, with entitlements
    /// `read` and `write`, and attributes for HTTP Basic injection (user attribute `username`
    /// = `alice-basic`, `password` = `s3cret`) and `additionalHeaders` (`X-Tenant`: text,
    /// `X-Level`: an integer, `X-Bad`: a boolean, which authentik sends empty).
    pub fn alice() -> FakeUser {
        let mut u = FakeUser::new("alice", "alice-password");
        u.name = "Alice Liddell".into();
        u.groups = vec!["admins".into(), "users".into()];
        u.entitlements = vec!["read".into(), "write".into()];
        u.attributes = json!({"username": "alice-basic", "password": "s3cret",
                              "additionalHeaders": {"X-Tenant": "wonderland", "X-Level": 7, "X-Bad": true}});
        u
    }

    /// The `sub` claim the fake uses for this user (SHA-256 hex of the user name, like
    /// authentik's default "hashed user ID" subject mode).
    pub fn sub(&self) -> String {
        sha256_hex(&self.username)
    }
}

/// Tokens minted by [`FakeAuthentik::issue_tokens`].
#[derive(Clone, Debug)]
pub struct TokenSet {
    /// The access token (a JWT; introspectable).
    pub access_token: String,
    /// The ID token.
    pub id_token: String,
    /// The `sid` claim in both.
    pub sid: String,
}

// ---------------------------------------------------------------------------------------------
// Internal state
// ---------------------------------------------------------------------------------------------

struct LoginSession {
    username: String,
    sid: String,
    auth_time: i64,
    seq: u64,
}

struct AuthCode {
    provider_pk: i64,
    username: String,
    session_key: String,
    redirect_uri: String,
    scopes: Vec<String>,
    nonce: Option<String>,
    challenge: Option<(String, String)>,
    expires: i64,
}

struct IssuedToken {
    provider_pk: i64,
    username: String,
    claims: Map<String, Value>,
    scopes: Vec<String>,
    exp: i64,
    sid: Option<String>,
}

#[derive(Default)]
struct State {
    providers: Vec<ProviderSpec>,
    users: Vec<FakeUser>,
    page_size: Option<usize>,
    down: bool,
    outpost_patch: Map<String, Value>,
    hellos: Vec<Value>,
    ws: HashMap<u64, mpsc::UnboundedSender<Message>>,
    next_id: u64,
    ws_requests: Vec<(String, HeaderMap)>,
    api_requests: Vec<(String, String, HeaderMap)>,
    events: Vec<Value>,
    sessions: HashMap<String, LoginSession>,
    codes: HashMap<String, AuthCode>,
    tokens: HashMap<String, IssuedToken>,
    end_session_hints: Vec<String>,
    /// Certificate keypairs by UUID: (certificate PEM, private key PEM).
    keypairs: HashMap<String, (String, String)>,
}

struct Inner {
    url: String,
    /// Served over TLS: URLs derived from requests are `https`.
    tls: bool,
    token: String,
    outpost_pk: String,
    state: Mutex<State>,
    shutdown: watch::Sender<bool>,
}

impl Inner {
    fn st(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends a text frame to every open websocket; drops senders whose task is gone.
    fn broadcast(&self, v: &Value) {
        let text = v.to_string();
        self.st()
            .ws
            .retain(|_, tx| tx.send(Message::text(text.clone())).is_ok());
    }

    /// Deletes a login session (by `sid`), its tokens, and broadcasts SESSION_END.
    fn end_login_session(&self, sid: &str) {
        {
            let mut st = self.st();
            st.sessions.retain(|_, s| s.sid != sid);
            st.tokens.retain(|_, t| t.sid.as_deref() != Some(sid));
        }
        self.broadcast(&session_end_frame(sid));
    }
}

/// One HTTP/1 connection (plain or TLS), upgrades allowed, until it ends or the fake stops.
async fn serve_connection<S>(inner: Arc<Inner>, stream: S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut stop = inner.shutdown.subscribe();
    let svc = service_fn(move |req| {
        let i = Arc::clone(&inner);
        async move { Ok::<_, Infallible>(handle(i, req).await) }
    });
    let conn = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), svc)
        .with_upgrades();
    tokio::select! {
        _ = conn => {}
        _ = async { let _ = stop.wait_for(|s| *s).await; } => {}
    }
}

/// A private certificate authority (unknown to any system trust store) and a server
/// certificate it issued for `127.0.0.1` and `localhost`.
pub struct PrivateCa {
    /// The CA certificate, PEM: what `SSL_CERT_FILE` should hold to trust the server.
    pub ca_pem: String,
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    key_der: Vec<u8>,
}

impl PrivateCa {
    pub fn new() -> PrivateCa {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair, KeyUsagePurpose,
        };
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.distinguished_name
            .push(DnType::CommonName, "fake authentik private CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().expect("server key");
        let mut leaf =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
                .expect("server params");
        leaf.distinguished_name
            .push(DnType::CommonName, "fake authentik");
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = leaf.signed_by(&key, &issuer).expect("server certificate");
        PrivateCa {
            ca_pem: ca_cert.pem(),
            chain: vec![cert.der().clone(), ca_cert.der().clone()],
            key_der: key.serialize_der(),
        }
    }

    /// A TLS 1.2+ server configuration presenting the server certificate and the CA.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let key = rustls::pki_types::PrivateKeyDer::try_from(self.key_der.clone())
            .expect("server key DER");
        let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(self.chain.clone(), key)
        .expect("server certificate");
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(cfg)
    }
}

fn session_end_frame(sid: &str) -> Value {
    json!({"instruction": 4, "args": {"type": "event.session.end", "session_id": sid}})
}

// ---------------------------------------------------------------------------------------------
// The server handle
// ---------------------------------------------------------------------------------------------

/// A running fake authentik on `127.0.0.1:<random port>`; stops when dropped.
pub struct FakeAuthentik {
    /// `http://127.0.0.1:<port>` (no trailing slash): use as `AUTHENTIK_HOST`.
    pub url: String,
    /// The outpost API token (`AUTHENTIK_TOKEN`).
    pub token: String,
    inner: Arc<Inner>,
}

impl Drop for FakeAuthentik {
    fn drop(&mut self) {
        let _ = self.inner.shutdown.send(true);
    }
}

impl FakeAuthentik {
    /// Binds `127.0.0.1:0`, generates a random API token and outpost UUID, and serves.
    pub async fn start(providers: Vec<ProviderSpec>, users: Vec<FakeUser>) -> FakeAuthentik {
        FakeAuthentik::serve(providers, users, None).await
    }

    /// Like [`FakeAuthentik::start`], over TLS with `tls` (e.g. [`PrivateCa::server_config`]);
    /// `url` is then `https://127.0.0.1:<port>`.
    pub async fn start_tls(
        providers: Vec<ProviderSpec>,
        users: Vec<FakeUser>,
        tls: Arc<rustls::ServerConfig>,
    ) -> FakeAuthentik {
        FakeAuthentik::serve(providers, users, Some(TlsAcceptor::from(tls))).await
    }

    async fn serve(
        providers: Vec<ProviderSpec>,
        users: Vec<FakeUser>,
        tls: Option<TlsAcceptor>,
    ) -> FakeAuthentik {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake authentik");
        let addr = listener.local_addr().expect("fake authentik addr");
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://{addr}");
        let token = rand_alnum(60);
        let (shutdown, _) = watch::channel(false);
        let inner = Arc::new(Inner {
            url: url.clone(),
            tls: tls.is_some(),
            token: token.clone(),
            outpost_pk: uuid4(),
            state: Mutex::new(State {
                providers,
                users,
                ..Default::default()
            }),
            shutdown,
        });
        let srv = Arc::clone(&inner);
        let mut stop = inner.shutdown.subscribe();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    r = listener.accept() => {
                        let Ok((stream, _)) = r else { continue };
                        let conn_inner = Arc::clone(&srv);
                        let tls = tls.clone();
                        tokio::spawn(async move {
                            match tls {
                                None => serve_connection(conn_inner, stream).await,
                                Some(acceptor) => {
                                    // A client that refuses the certificate ends here.
                                    if let Ok(s) = acceptor.accept(stream).await {
                                        serve_connection(conn_inner, s).await;
                                    }
                                }
                            }
                        });
                    }
                    _ = async { let _ = stop.wait_for(|s| *s).await; } => break,
                }
            }
        });
        FakeAuthentik { url, token, inner }
    }

    /// What an outpost in authentik mode is given to use this fake: `AUTHENTIK_HOST`,
    /// `AUTHENTIK_TOKEN` and `AUTHENTIK_INSECURE=false`.
    pub fn outpost_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AUTHENTIK_HOST", self.url.clone()),
            ("AUTHENTIK_TOKEN", self.token.clone()),
            ("AUTHENTIK_INSECURE", "false".into()),
        ]
    }

    /// Replaces the providers (takes effect for the next API call; tokens already issued stay).
    pub fn set_providers(&self, providers: Vec<ProviderSpec>) {
        self.inner.st().providers = providers;
    }

    /// Replaces the users.
    pub fn set_users(&self, users: Vec<FakeUser>) {
        self.inner.st().users = users;
    }

    /// Forces the page size of `/api/v3/outposts/proxy/` (and `/outposts/instances/`),
    /// whatever `page_size` the client asks for. `0` restores honouring `page_size`.
    pub fn set_page_size(&self, n: usize) {
        self.inner.st().page_size = if n == 0 { None } else { Some(n) };
    }

    /// While down, every HTTP request gets `503` and websocket upgrades are refused with `503`.
    /// Going down also closes every open websocket (as an authentik outage would).
    pub fn set_down(&self, down: bool) {
        let mut st = self.inner.st();
        st.down = down;
        if down {
            st.ws.clear(); // dropping the senders makes each connection task close its socket
        }
    }

    /// Adds a certificate keypair served at `/api/v3/crypto/certificatekeypairs/<uuid>/…`.
    pub fn add_keypair(&self, uuid: &str, cert_pem: &str, key_pem: &str) {
        self.inner.st().keypairs.insert(
            uuid.to_string(),
            (cert_pem.to_string(), key_pem.to_string()),
        );
    }

    /// Deep-merges `patch` into the outpost object served by `/api/v3/outposts/instances/`,
    /// e.g. `json!({"refresh_interval_s": 30, "managed": null, "config": {"log_level": "debug"}})`.
    pub fn patch_outpost(&self, patch: Value) {
        let mut st = self.inner.st();
        if let Value::Object(m) = patch {
            let mut cur = Value::Object(std::mem::take(&mut st.outpost_patch));
            merge(&mut cur, Value::Object(m));
            if let Value::Object(m) = cur {
                st.outpost_patch = m;
            }
        }
    }

    /// Sends TRIGGER_UPDATE (`{"instruction": 2, "args": {}}`) to every connected websocket.
    pub async fn trigger_update(&self) {
        self.inner.broadcast(&json!({"instruction": 2, "args": {}}));
    }

    /// Sends SESSION_END (`{"instruction": 4, "args": {"type": "event.session.end",
    /// "session_id": <session_id>}}`) to every connected websocket. Only the frame: the
    /// fake's own session and tokens are left alone (see [`FakeAuthentik::kill_session`]).
    pub async fn end_session(&self, session_id: &str) {
        self.inner.broadcast(&session_end_frame(session_id));
    }

    /// What authentik does when a session is deleted (logout, admin action): the login session
    /// with that `sid` and all its tokens are gone, and SESSION_END is broadcast.
    pub async fn kill_session(&self, session_id: &str) {
        self.inner.end_login_session(session_id);
    }

    /// The `args` of every HELLO (instruction 1) received, in order.
    pub fn hellos(&self) -> Vec<Value> {
        self.inner.st().hellos.clone()
    }

    /// Currently open websocket connections.
    pub fn ws_connections(&self) -> usize {
        self.inner.st().ws.len()
    }

    /// Every websocket handshake request seen (`path?query`, headers), refused ones included.
    pub fn ws_requests(&self) -> Vec<(String, HeaderMap)> {
        self.inner.st().ws_requests.clone()
    }

    /// Every other HTTP request seen (method, `path?query`, headers), in order.
    pub fn api_requests(&self) -> Vec<(String, String, HeaderMap)> {
        self.inner.st().api_requests.clone()
    }

    /// Requests (HTTP and websocket handshakes) whose path starts with `path_prefix`.
    pub fn count(&self, path_prefix: &str) -> usize {
        let st = self.inner.st();
        let path = |pq: &str| pq.split('?').next().unwrap_or("").to_string();
        st.api_requests
            .iter()
            .filter(|(_, pq, _)| path(pq).starts_with(path_prefix))
            .count()
            + st.ws_requests
                .iter()
                .filter(|(pq, _)| path(pq).starts_with(path_prefix))
                .count()
    }

    /// Forgets the recorded requests, HELLOs, events and end-session hints.
    pub fn clear_records(&self) {
        let mut st = self.inner.st();
        st.api_requests.clear();
        st.ws_requests.clear();
        st.hellos.clear();
        st.events.clear();
        st.end_session_hints.clear();
    }

    /// JSON bodies of every `POST /api/v3/events/events/` (accepted ones).
    pub fn events(&self) -> Vec<Value> {
        self.inner.st().events.clone()
    }

    /// `id_token_hint` values received at end-session, in order (`""` when absent).
    pub fn end_session_hints(&self) -> Vec<String> {
        self.inner.st().end_session_hints.clone()
    }

    /// The `sid` (SHA-256 hex of the session key) of the user's most recent live login session.
    pub fn session_id_of(&self, username: &str) -> Option<String> {
        self.inner
            .st()
            .sessions
            .values()
            .filter(|s| s.username == username)
            .max_by_key(|s| s.seq)
            .map(|s| s.sid.clone())
    }

    /// Deletes every token of the user: introspection answers `{"active": false}` and userinfo
    /// `401` for them from now on. Login sessions stay (a new login issues new tokens).
    pub fn revoke_user(&self, username: &str) {
        self.inner.st().tokens.retain(|_, t| t.username != username);
    }

    /// The outpost's UUID (`pk`).
    pub fn outpost_pk(&self) -> String {
        self.inner.outpost_pk.clone()
    }

    /// Mints tokens for `username` at provider `provider_pk` as if the user had just logged in
    /// (creates a new login session); the issuer uses [`FakeAuthentik::url`].
    pub fn issue_tokens(&self, provider_pk: i64, username: &str) -> TokenSet {
        let mut st = self.inner.st();
        let p = st
            .providers
            .iter()
            .find(|p| p.pk == provider_pk)
            .cloned()
            .expect("issue_tokens: unknown provider");
        let u = st
            .users
            .iter()
            .find(|u| u.username == username)
            .cloned()
            .expect("issue_tokens: unknown user");
        let (_, sid) = new_session(&mut st, username);
        let now = unix_now();
        let (access_token, id_token) = issue(
            &mut st,
            &self.inner.url,
            &p,
            &u,
            &p.scopes.clone(),
            Grant {
                now,
                auth_time: now,
                nonce: None,
                sid: Some(sid.clone()),
                amr: true,
            },
        );
        TokenSet {
            access_token,
            id_token,
            sid,
        }
    }
}

fn merge(dst: &mut Value, src: Value) {
    match (dst, src) {
        (Value::Object(d), Value::Object(s)) => {
            for (k, v) in s {
                match d.get_mut(&k) {
                    Some(dv) if dv.is_object() && v.is_object() => merge(dv, v),
                    _ => {
                        d.insert(k, v);
                    }
                }
            }
        }
        (d, s) => *d = s,
    }
}

fn new_session(st: &mut State, username: &str) -> (String, String) {
    let key = rand_alnum(32).to_lowercase();
    let sid = sha256_hex(&key);
    st.next_id += 1;
    let seq = st.next_id;
    st.sessions.insert(
        key.clone(),
        LoginSession {
            username: username.into(),
            sid: sid.clone(),
            auth_time: unix_now(),
            seq,
        },
    );
    (key, sid)
}

struct Grant {
    now: i64,
    auth_time: i64,
    nonce: Option<String>,
    sid: Option<String>,
    amr: bool,
}

/// Builds the ID-token claims, stores the access token and returns (access JWT, ID JWT).
fn issue(
    st: &mut State,
    base: &str,
    p: &ProviderSpec,
    u: &FakeUser,
    scopes: &[String],
    g: Grant,
) -> (String, String) {
    let exp = g.now + p.validity_secs() as i64;
    let mut c = Map::new();
    c.insert("iss".into(), json!(p.issuer(base)));
    c.insert("sub".into(), json!(u.sub()));
    c.insert("aud".into(), json!(p.client_id));
    c.insert("exp".into(), json!(exp));
    c.insert("iat".into(), json!(g.now));
    c.insert("auth_time".into(), json!(g.auth_time));
    c.insert("acr".into(), json!(ACR_DEFAULT));
    if g.amr {
        c.insert("amr".into(), json!(["pwd"]));
    }
    if let Some(n) = &g.nonce {
        c.insert("nonce".into(), json!(n));
    }
    if let Some(s) = &g.sid {
        c.insert("sid".into(), json!(s));
    }
    c.extend(scope_claims(u, scopes));
    let id_token = sign(p, &Value::Object(c.clone()));
    let mut at = c.clone();
    at.insert("azp".into(), json!(p.client_id));
    at.insert("uid".into(), json!(rand_alnum(40)));
    let access_token = sign(p, &Value::Object(at));
    st.tokens.insert(
        access_token.clone(),
        IssuedToken {
            provider_pk: p.pk,
            username: u.username.clone(),
            claims: c,
            scopes: scopes.to_vec(),
            exp,
            sid: g.sid,
        },
    );
    (access_token, id_token)
}

/// Claims of authentik's default scope mappings for the granted scopes.
fn scope_claims(u: &FakeUser, scopes: &[String]) -> Map<String, Value> {
    let mut c = Map::new();
    let has = |s: &str| scopes.iter().any(|x| x == s);
    if has("email") {
        c.insert("email".into(), json!(u.email));
        c.insert("email_verified".into(), json!(false));
    }
    if has("profile") {
        c.insert("name".into(), json!(u.name));
        c.insert("given_name".into(), json!(u.name));
        c.insert("preferred_username".into(), json!(u.username));
        c.insert("nickname".into(), json!(u.username));
        c.insert("groups".into(), json!(u.groups));
    }
    if has("entitlements") {
        c.insert("entitlements".into(), json!(u.entitlements));
    }
    if has("ak_proxy") {
        let mut ak = Map::new();
        ak.insert("user_attributes".into(), u.attributes.clone());
        ak.insert("is_superuser".into(), json!(u.is_superuser));
        ak.extend(u.ak_proxy_extra.clone());
        c.insert("ak_proxy".into(), Value::Object(ak));
    }
    c
}

fn sign(p: &ProviderSpec, claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(p.client_secret.as_bytes()),
    )
    .expect("sign token")
}

// ---------------------------------------------------------------------------------------------
// Request handling
// ---------------------------------------------------------------------------------------------

fn resp(status: StatusCode, ctype: &str, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, ctype)
        .body(Full::new(body.into()))
        .expect("response")
}

fn json_resp(status: StatusCode, v: &Value) -> Response<Body> {
    resp(status, "application/json", v.to_string())
}

/// authentik's `TokenResponse`: JSON with `Cache-Control: no-store` and `Pragma: no-cache`.
fn token_resp(status: StatusCode, v: &Value) -> Response<Body> {
    let mut r = json_resp(status, v);
    r.headers_mut()
        .insert(CACHE_CONTROL, "no-store".parse().expect("hv"));
    r.headers_mut()
        .insert(PRAGMA, "no-cache".parse().expect("hv"));
    r
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response<Body> {
    token_resp(
        status,
        &json!({"error": error, "error_description": description, "request_id": rand_alnum(32).to_lowercase()}),
    )
}

fn html(status: StatusCode, body: String) -> Response<Body> {
    resp(status, "text/html; charset=utf-8", body)
}

fn not_found() -> Response<Body> {
    json_resp(StatusCode::NOT_FOUND, &json!({"detail": "Not found."}))
}

fn method_not_allowed(m: &Method) -> Response<Body> {
    json_resp(
        StatusCode::METHOD_NOT_ALLOWED,
        &json!({"detail": format!("Method \"{m}\" not allowed.")}),
    )
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&#39;")
}

fn parse_form(s: &str) -> HashMap<String, String> {
    let mut m = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(s.as_bytes()) {
        m.entry(k.into_owned()).or_insert_with(|| v.into_owned());
    }
    m
}

fn header_str(h: &HeaderMap, name: http::header::HeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// `scheme://host` as authentik's `request.build_absolute_uri` would see it (`https` on a TLS
/// listener).
fn request_base(h: &HeaderMap, fallback: &str, tls: bool) -> String {
    match header_str(h, HOST) {
        Some(host) if !host.is_empty() => {
            let https = tls
                || h.get("x-forwarded-proto")
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.eq_ignore_ascii_case("https"));
            format!("{}://{host}", if https { "https" } else { "http" })
        }
        _ => fallback.to_string(),
    }
}

fn cookie(h: &HeaderMap, name: &str) -> Option<String> {
    for v in h.get_all(COOKIE) {
        let Ok(s) = v.to_str() else { continue };
        for part in s.split(';') {
            if let Some((k, val)) = part.trim().split_once('=')
                && k == name
            {
                return Some(val.to_string());
            }
        }
    }
    None
}

/// DRF token check: `Ok` or the 403 response DRF gives (authentik has no WWW-Authenticate).
fn check_api_auth(inner: &Inner, h: &HeaderMap) -> Result<(), Box<Response<Body>>> {
    let forbid = |d: &str| {
        Err(Box::new(json_resp(
            StatusCode::FORBIDDEN,
            &json!({"detail": d}),
        )))
    };
    let raw = header_str(h, AUTHORIZATION).unwrap_or("").trim();
    if raw.is_empty() || !raw.contains(' ') {
        return forbid("Authentication credentials were not provided.");
    }
    let (kind, cred) = raw.split_once(' ').unwrap_or(("", ""));
    if !kind.eq_ignore_ascii_case("bearer") {
        return forbid("Unsupported authentication type");
    }
    if cred.is_empty() {
        return forbid("Malformed header");
    }
    if cred != inner.token {
        return forbid("Token invalid/expired");
    }
    Ok(())
}

async fn handle(inner: Arc<Inner>, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let pq = if query.is_empty() {
        path.clone()
    } else {
        format!("{path}?{query}")
    };
    let headers = req.headers().clone();
    let is_ws = path.starts_with("/ws/");
    {
        let mut st = inner.st();
        if is_ws {
            st.ws_requests.push((pq.clone(), headers.clone()));
        } else {
            st.api_requests
                .push((method.to_string(), pq.clone(), headers.clone()));
        }
        if st.down {
            return json_resp(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({"detail": "Service Unavailable"}),
            );
        }
    }
    if is_ws {
        return ws_upgrade(inner, req, &path);
    }
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let body = String::from_utf8_lossy(&body).into_owned();
    let base = request_base(&headers, &inner.url, inner.tls);

    if let Some(api) = path.strip_prefix("/api/v3/") {
        return api_route(&inner, &method, api, &query, &headers, &body, &base);
    }
    if let Some(o) = path.strip_prefix("/application/o/") {
        return oauth_route(&inner, &method, o, &query, &headers, &body, &base);
    }
    not_found()
}

// ---------------------------------------------------------------------------------------------
// API
// ---------------------------------------------------------------------------------------------

fn api_route(
    inner: &Inner,
    method: &Method,
    api: &str,
    query: &str,
    headers: &HeaderMap,
    body: &str,
    base: &str,
) -> Response<Body> {
    if api == "root/config/" {
        // AllowAny in authentik.
        if method != Method::GET {
            return method_not_allowed(method);
        }
        return json_resp(StatusCode::OK, &root_config());
    }
    if let Err(r) = check_api_auth(inner, headers) {
        return *r;
    }
    let q = parse_form(query);
    match api {
        "outposts/instances/" => {
            if method != Method::GET {
                return method_not_allowed(method);
            }
            let outpost = outpost_object(inner, base);
            paged(inner, vec![outpost], &q)
        }
        "outposts/proxy/" => {
            if method != Method::GET {
                return method_not_allowed(method);
            }
            let mut providers = inner.st().providers.clone();
            providers.sort_by(|a, b| a.name.cmp(&b.name).then(a.pk.cmp(&b.pk)));
            let items = providers.iter().map(|p| proxy_config(p, base)).collect();
            paged(inner, items, &q)
        }
        kp if kp.starts_with("crypto/certificatekeypairs/") => {
            let rest = &kp["crypto/certificatekeypairs/".len()..];
            let (uuid, view) = rest.split_once('/').unwrap_or((rest, ""));
            let Some((cert, key)) = inner.st().keypairs.get(uuid).cloned() else {
                return not_found();
            };
            use sha2::Digest;
            let fp: String = sha2::Sha256::digest(cert.as_bytes())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            match view {
                "" => json_resp(
                    StatusCode::OK,
                    &json!({"pk": uuid, "name": uuid, "fingerprint_sha256": fp, "fingerprint_sha1": "",
                            "cert_expiry": "2030-01-01T00:00:00Z", "cert_subject": "", "private_key_available": !key.is_empty(),
                            "key_type": "ecdsa", "certificate_download_url": "", "private_key_download_url": "", "managed": null}),
                ),
                "view_certificate/" => json_resp(StatusCode::OK, &json!({"data": cert})),
                "view_private_key/" => json_resp(StatusCode::OK, &json!({"data": key})),
                _ => not_found(),
            }
        }
        "events/events/" => {
            if method != Method::POST {
                return method_not_allowed(method);
            }
            let Ok(Value::Object(mut ev)) = serde_json::from_str::<Value>(body) else {
                return json_resp(
                    StatusCode::BAD_REQUEST,
                    &json!({"non_field_errors": ["Invalid data. Expected a dictionary."]}),
                );
            };
            if !ev.contains_key("action") || !ev.contains_key("app") {
                return json_resp(
                    StatusCode::BAD_REQUEST,
                    &json!({"action": ["This field is required."]}),
                );
            }
            inner.st().events.push(Value::Object(ev.clone()));
            ev.insert("pk".into(), json!(uuid4()));
            ev.insert("created".into(), json!("2026-01-01T00:00:00.000000Z"));
            json_resp(StatusCode::CREATED, &Value::Object(ev))
        }
        _ => not_found(),
    }
}

/// DRF page-number pagination as authentik renders it (next/previous 0 when absent).
fn paged(inner: &Inner, items: Vec<Value>, q: &HashMap<String, String>) -> Response<Body> {
    let forced = inner.st().page_size;
    let per_page = forced.unwrap_or_else(|| {
        q.get("page_size")
            .and_then(|s| s.parse::<usize>().ok())
            .filter(|n| *n > 0)
            .unwrap_or(DEFAULT_PAGE_SIZE)
    });
    let count = items.len();
    let num_pages = if count == 0 {
        1
    } else {
        count.div_ceil(per_page)
    };
    let page = match q.get("page").map(String::as_str) {
        None | Some("") => 1,
        Some("last") => num_pages,
        Some(s) => s.parse::<usize>().unwrap_or_default(),
    };
    if page < 1 || page > num_pages {
        return json_resp(StatusCode::NOT_FOUND, &json!({"detail": "Invalid page."}));
    }
    let start = (page - 1) * per_page;
    let results: Vec<Value> = items.into_iter().skip(start).take(per_page).collect();
    let start_index = if count == 0 { 0 } else { start + 1 };
    let end_index = if page == num_pages {
        count
    } else {
        page * per_page
    };
    json_resp(
        StatusCode::OK,
        &json!({
            "pagination": {
                "next": if page < num_pages { page + 1 } else { 0 },
                "previous": page.saturating_sub(1),
                "count": count,
                "current": page,
                "total_pages": num_pages,
                "start_index": start_index,
                "end_index": end_index,
            },
            "results": results,
            "autocomplete": {},
        }),
    )
}

fn root_config() -> Value {
    json!({
        "error_reporting": {
            "enabled": false,
            "sentry_dsn": "",
            "environment": "customer",
            "send_pii": false,
            "traces_sample_rate": 0.1,
        },
        "capabilities": ["can_save_media", "can_impersonate"],
        "cache_timeout": 300,
        "cache_timeout_flows": 300,
        "cache_timeout_policies": 300,
        "cache_timeout_reputation": 300,
    })
}

/// authentik's default outpost config (`OutpostConfig` dataclass) for `authentik_host`.
fn default_outpost_config(authentik_host: &str) -> Value {
    json!({
        "authentik_host": authentik_host,
        "authentik_host_insecure": false,
        "authentik_host_browser": "",
        "log_level": "info",
        "object_naming_template": "ak-outpost-%(name)s",
        "refresh_interval": "minutes=5",
        "container_image": null,
        "docker_network": null,
        "docker_map_ports": true,
        "docker_labels": null,
        "kubernetes_replicas": 1,
        "kubernetes_namespace": "authentik",
        "kubernetes_ingress_annotations": {},
        "kubernetes_ingress_secret_name": "authentik-outpost-tls",
        "kubernetes_ingress_class_name": null,
        "kubernetes_ingress_path_type": null,
        "kubernetes_httproute_annotations": {},
        "kubernetes_httproute_parent_refs": [],
        "kubernetes_service_type": "ClusterIP",
        "kubernetes_disabled_components": [],
        "kubernetes_image_pull_secrets": [],
        "kubernetes_json_patches": null,
    })
}

/// `ProviderSerializer` shape (the items of `providers_obj`).
fn provider_obj(p: &ProviderSpec) -> Value {
    json!({
        "pk": p.pk,
        "name": p.name,
        "authentication_flow": null,
        "authorization_flow": "00000000-0000-4000-8000-00000000a001",
        "invalidation_flow": "00000000-0000-4000-8000-00000000a002",
        "property_mappings": [],
        "component": "ak-provider-proxy-form",
        "assigned_application_slug": p.slug,
        "assigned_application_name": p.name,
        "assigned_backchannel_application_slug": "",
        "assigned_backchannel_application_name": "",
        "verbose_name": "Proxy Provider",
        "verbose_name_plural": "Proxy Providers",
        "meta_model_name": "authentik_providers_proxy.proxyprovider",
    })
}

fn outpost_object(inner: &Inner, base: &str) -> Value {
    let st = inner.st();
    let mut o = json!({
        "pk": inner.outpost_pk,
        "name": "fake-outpost",
        "type": "proxy",
        "providers": st.providers.iter().map(|p| p.pk).collect::<Vec<_>>(),
        "providers_obj": st.providers.iter().map(provider_obj).collect::<Vec<_>>(),
        "service_connection": null,
        "service_connection_obj": null,
        "refresh_interval_s": 300,
        "token_identifier": format!("ak-outpost-{}-api", inner.outpost_pk),
        "config": default_outpost_config(&format!("{base}/")),
        "managed": null,
    });
    merge(&mut o, Value::Object(st.outpost_patch.clone()));
    o
}

/// `ProviderInfoView.get_info`: the discovery document / `oidc_configuration`.
fn oidc_info(p: &ProviderSpec, base: &str) -> Value {
    let o = format!("{base}/application/o");
    let mut scopes = p.scopes.clone();
    if !scopes.iter().any(|s| s == "openid") {
        scopes.push("openid".into());
    }
    json!({
        "issuer": p.issuer(base),
        "authorization_endpoint": format!("{o}/authorize/"),
        "token_endpoint": format!("{o}/token/"),
        "userinfo_endpoint": format!("{o}/userinfo/"),
        "end_session_endpoint": format!("{o}/{}/end-session/", p.slug),
        "introspection_endpoint": format!("{o}/introspect/"),
        "revocation_endpoint": format!("{o}/revoke/"),
        "device_authorization_endpoint": format!("{o}/device/"),
        "response_types_supported": [
            "code", "id_token", "id_token token", "code token", "code id_token",
            "code id_token token"
        ],
        "response_modes_supported": ["query", "fragment", "form_post"],
        "jwks_uri": format!("{o}/{}/jwks/", p.slug),
        "grant_types_supported": [
            "authorization_code", "refresh_token", "implicit", "client_credentials", "password",
            "urn:ietf:params:oauth:grant-type:device_code"
        ],
        "id_token_signing_alg_values_supported": ["HS256"],
        "subject_types_supported": ["public"],
        "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
        "acr_values_supported": [ACR_DEFAULT],
        "scopes_supported": scopes,
        "request_parameter_supported": false,
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "acr"],
        "claims_parameter_supported": false,
        "code_challenge_methods_supported": ["plain", "S256"],
    })
}

/// `ProxyOutpostConfigSerializer` shape.
fn proxy_config(p: &ProviderSpec, base: &str) -> Value {
    json!({
        "pk": p.pk,
        "name": p.name,
        "internal_host": p.internal_host,
        "external_host": p.external_host,
        "internal_host_ssl_validation": p.internal_host_ssl_validation,
        "client_id": p.client_id,
        "client_secret": p.client_secret,
        "oidc_configuration": oidc_info(p, base),
        "cookie_secret": p.cookie_secret,
        "certificate": p.certificate,
        "skip_path_regex": p.skip_path_regex,
        "basic_auth_enabled": p.basic_auth_enabled,
        "basic_auth_password_attribute": p.basic_auth_password_attribute,
        "basic_auth_user_attribute": p.basic_auth_user_attribute,
        "mode": p.mode,
        "cookie_domain": p.cookie_domain,
        "access_token_validity": p.access_token_validity,
        "intercept_header_auth": p.intercept_header_auth,
        "scopes_to_request": p.scopes,
        "assigned_application_slug": p.slug,
        "assigned_application_name": p.name,
    })
}

// ---------------------------------------------------------------------------------------------
// WebSocket
// ---------------------------------------------------------------------------------------------

fn ws_upgrade(inner: Arc<Inner>, mut req: Request<Incoming>, path: &str) -> Response<Body> {
    let h = req.headers();
    let forbidden = || resp(StatusCode::FORBIDDEN, "text/plain", "Forbidden");
    let pk = path
        .strip_prefix("/ws/outpost/")
        .and_then(|r| r.strip_suffix('/'))
        .unwrap_or("");
    if pk.is_empty() || pk.contains('/') {
        return not_found();
    }
    // authentik's websocket auth: `Authorization: Bearer <token>`; no/invalid → denied.
    let authed = header_str(h, AUTHORIZATION)
        .and_then(|v| v.split_once(' '))
        .is_some_and(|(k, t)| k.eq_ignore_ascii_case("bearer") && t == inner.token);
    if !authed || pk != inner.outpost_pk {
        return forbidden();
    }
    let is_upgrade = header_str(h, UPGRADE).is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let Some(key) = h.get(SEC_WEBSOCKET_KEY).map(|v| v.as_bytes().to_vec()) else {
        return resp(StatusCode::BAD_REQUEST, "text/plain", "Bad Request");
    };
    if !is_upgrade {
        return resp(StatusCode::BAD_REQUEST, "text/plain", "Bad Request");
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let id = {
        let mut st = inner.st();
        st.next_id += 1;
        let id = st.next_id;
        st.ws.insert(id, tx);
        id
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let task_inner = Arc::clone(&inner);
    tokio::spawn(async move {
        if let Ok(upgraded) = on_upgrade.await {
            let ws =
                WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
            ws_session(&task_inner, ws, rx).await;
        }
        task_inner.st().ws.remove(&id);
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(CONNECTION, "Upgrade")
        .header(UPGRADE, "websocket")
        .header(SEC_WEBSOCKET_ACCEPT, derive_accept_key(&key))
        .body(Full::new(Bytes::new()))
        .expect("101")
}

async fn ws_session<S>(
    inner: &Inner,
    mut ws: WebSocketStream<S>,
    mut rx: mpsc::UnboundedReceiver<Message>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut stop = inner.shutdown.subscribe();
    loop {
        tokio::select! {
            incoming = ws.next() => match incoming {
                Some(Ok(Message::Text(t))) => {
                    let Ok(v) = serde_json::from_str::<Value>(t.as_str()) else {
                        // authentik's consumer fails on undecodable frames and drops the socket.
                        let _ = ws.close(None).await;
                        break;
                    };
                    let instruction = v.get("instruction").and_then(Value::as_i64);
                    let Some(instruction) = instruction else {
                        let _ = ws.close(None).await;
                        break;
                    };
                    if instruction == 1 {
                        let args = v.get("args").cloned().unwrap_or_else(|| json!({}));
                        inner.st().hellos.push(args);
                    }
                    if instruction != 0 {
                        let ack = json!({"instruction": 0, "args": {}}).to_string();
                        if ws.send(Message::text(ack)).await.is_err() {
                            break;
                        }
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
            out = rx.recv() => match out {
                Some(m) => {
                    if ws.send(m).await.is_err() {
                        break;
                    }
                }
                None => {
                    // Sender dropped (set_down): close like a server going away.
                    let _ = ws.close(None).await;
                    break;
                }
            },
            _ = async { let _ = stop.wait_for(|s| *s).await; } => {
                let _ = ws.close(None).await;
                break;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// OAuth2 / OIDC
// ---------------------------------------------------------------------------------------------

fn oauth_route(
    inner: &Inner,
    method: &Method,
    rest: &str,
    query: &str,
    headers: &HeaderMap,
    body: &str,
    base: &str,
) -> Response<Body> {
    match rest {
        "authorize/" => {
            if *method != Method::GET && *method != Method::POST {
                return method_not_allowed(method);
            }
            authorize(inner, method, query, headers, body)
        }
        "token/" => match *method {
            Method::POST => token(inner, headers, body, base),
            Method::OPTIONS => token_resp(StatusCode::OK, &json!({})),
            _ => method_not_allowed(method),
        },
        "introspect/" => {
            if *method != Method::POST {
                return method_not_allowed(method);
            }
            introspect(inner, headers, body)
        }
        "revoke/" => {
            if *method != Method::POST {
                return method_not_allowed(method);
            }
            revoke(inner, headers, body)
        }
        "userinfo/" => userinfo(inner, headers),
        _ => {
            let Some((slug, tail)) = rest.split_once('/') else {
                return not_found();
            };
            let provider = inner
                .st()
                .providers
                .iter()
                .find(|p| p.slug == slug)
                .cloned();
            let Some(p) = provider else {
                return not_found();
            };
            match tail {
                "end-session/" => end_session(inner, &p, query, headers, body),
                "jwks/" => json_resp(StatusCode::OK, &json!({"keys": []})),
                ".well-known/openid-configuration" => {
                    json_resp(StatusCode::OK, &oidc_info(&p, base))
                }
                _ => not_found(),
            }
        }
    }
}

fn login_page(action: &str, error: Option<&str>) -> Response<Body> {
    let err = error
        .map(|e| format!("<p class=\"error\">{}</p>", html_escape(e)))
        .unwrap_or_default();
    html(
        StatusCode::OK,
        format!(
            "<!DOCTYPE html><html><head><title>authentik</title></head><body>\
             <h1>Welcome to authentik!</h1>{err}\
             <form id=\"login-form\" method=\"post\" action=\"{}\">\
             <input type=\"text\" name=\"username\" autocomplete=\"username\">\
             <input type=\"password\" name=\"password\" autocomplete=\"current-password\">\
             <button type=\"submit\">Log in</button></form></body></html>",
            html_escape(action)
        ),
    )
}

fn error_page(status: StatusCode, title: &str, detail: &str) -> Response<Body> {
    html(
        status,
        format!(
            "<!DOCTYPE html><html><head><title>{t}</title></head><body><h1>{t}</h1><p>{d}</p></body></html>",
            t = html_escape(title),
            d = html_escape(detail)
        ),
    )
}

fn authorize(
    inner: &Inner,
    method: &Method,
    query: &str,
    headers: &HeaderMap,
    body: &str,
) -> Response<Body> {
    let q = parse_form(query);
    let get = |k: &str| q.get(k).cloned().unwrap_or_default();
    let client_id = get("client_id");
    let Some(p) = inner
        .st()
        .providers
        .iter()
        .find(|p| p.client_id == client_id)
        .cloned()
    else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Invalid client identifier",
            &client_id,
        );
    };
    let redirect_uri = get("redirect_uri");
    if !p.redirect_uris().contains(&redirect_uri) {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Redirect URI Error",
            &format!(
                "The request fails due to a missing, invalid, or mismatching redirection URI (redirect_uri): {redirect_uri}"
            ),
        );
    }
    if get("response_type") != "code" {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Unsupported response type",
            &get("response_type"),
        );
    }
    let challenge = match q.get("code_challenge").filter(|c| !c.is_empty()) {
        None => None,
        Some(c) => {
            let m = q
                .get("code_challenge_method")
                .filter(|m| !m.is_empty())
                .cloned()
                .unwrap_or_else(|| "plain".into());
            if m != "S256" && m != "plain" {
                return error_page(StatusCode::BAD_REQUEST, "Invalid PKCE method", &m);
            }
            Some((c.clone(), m))
        }
    };
    let self_url = format!("/application/o/authorize/?{query}");

    let session_key = if *method == Method::POST {
        let f = parse_form(body);
        let user = f.get("username").cloned().unwrap_or_default();
        let pass = f.get("password").cloned().unwrap_or_default();
        let mut st = inner.st();
        let ok = st
            .users
            .iter()
            .any(|u| u.username == user && u.password == pass && !pass.is_empty());
        if !ok {
            drop(st);
            return login_page(&self_url, Some("Invalid username or password"));
        }
        let (key, _) = new_session(&mut st, &user);
        return Response::builder()
            .status(StatusCode::FOUND)
            .header(LOCATION, &self_url)
            .header(
                SET_COOKIE,
                format!("{SESSION_COOKIE}={key}; Path=/; HttpOnly; SameSite=Lax"),
            )
            .body(Full::new(Bytes::new()))
            .expect("302");
    } else {
        cookie(headers, SESSION_COOKIE)
    };

    let mut st = inner.st();
    let session = session_key
        .as_ref()
        .and_then(|k| st.sessions.get(k).map(|s| (k.clone(), s.username.clone())));
    let Some((key, username)) = session else {
        drop(st);
        return login_page(&self_url, None);
    };
    let requested: Vec<String> = get("scope")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let mut scopes: Vec<String> = Vec::new();
    for s in requested {
        if p.scopes.contains(&s) && !scopes.contains(&s) {
            scopes.push(s);
        }
    }
    let code = rand_alnum(32).to_lowercase();
    st.codes.insert(
        code.clone(),
        AuthCode {
            provider_pk: p.pk,
            username,
            session_key: key,
            redirect_uri: redirect_uri.clone(),
            scopes,
            nonce: q.get("nonce").filter(|n| !n.is_empty()).cloned(),
            challenge,
            expires: unix_now() + CODE_VALIDITY_SECS,
        },
    );
    drop(st);
    let mut params = url::form_urlencoded::Serializer::new(String::new());
    params.append_pair("code", &code);
    if let Some(state) = q.get("state") {
        params.append_pair("state", state);
    }
    let sep = if redirect_uri.contains('?') { '&' } else { '?' };
    Response::builder()
        .status(StatusCode::FOUND)
        .header(LOCATION, format!("{redirect_uri}{sep}{}", params.finish()))
        .body(Full::new(Bytes::new()))
        .expect("302")
}

/// Client credentials from `Authorization: Basic` (authentik's regex `^Basic\s.+$`) or the form.
fn client_auth(headers: &HeaderMap, form: &HashMap<String, String>) -> (String, String) {
    if let Some(v) = header_str(headers, AUTHORIZATION)
        && let Some(b64) = v
            .strip_prefix("Basic")
            .filter(|r| r.starts_with(char::is_whitespace))
        && let Ok(raw) = STANDARD.decode(b64.trim())
    {
        let raw = String::from_utf8_lossy(&raw).into_owned();
        if let Some((id, secret)) = raw.split_once(':') {
            return (percent_decode(id), percent_decode(secret));
        }
    }
    (
        form.get("client_id").cloned().unwrap_or_default(),
        form.get("client_secret").cloned().unwrap_or_default(),
    )
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

const INVALID_GRANT: &str = "The provided authorization grant or refresh token is invalid, expired, revoked, does not match the redirection URI used in the authorization request, or was issued to another client";
const INVALID_CLIENT: &str = "Client authentication failed (e.g., unknown client, no client authentication included, or unsupported authentication method)";

fn token(inner: &Inner, headers: &HeaderMap, body: &str, base: &str) -> Response<Body> {
    let f = parse_form(body);
    let get = |k: &str| f.get(k).cloned().unwrap_or_default();
    let (client_id, client_secret) = client_auth(headers, &f);
    let mut st = inner.st();
    let Some(p) = st
        .providers
        .iter()
        .find(|p| p.client_id == client_id)
        .cloned()
    else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_client", INVALID_CLIENT);
    };
    let grant_type = get("grant_type");
    let now = unix_now();
    let respond = |access: String, id: String, scopes: &[String]| {
        token_resp(
            StatusCode::OK,
            &json!({
                "access_token": access,
                "token_type": "Bearer",
                "scope": scopes.join(" "),
                "expires_in": p.validity_secs() as i64,
                "id_token": id,
            }),
        )
    };
    match grant_type.as_str() {
        "authorization_code" => {
            if client_secret != p.client_secret {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_client", INVALID_CLIENT);
            }
            let redirect_uri = get("redirect_uri");
            if !p.redirect_uris().contains(&redirect_uri) {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_client", INVALID_CLIENT);
            }
            let raw = get("code");
            let valid = st.codes.get(&raw).is_some_and(|c| {
                c.provider_pk == p.pk && c.expires > now && c.redirect_uri == redirect_uri
            });
            if !valid {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", INVALID_GRANT);
            }
            let verifier = f.get("code_verifier").filter(|v| !v.is_empty());
            let code = st.codes.get(&raw).expect("code");
            let pkce_ok = match (&code.challenge, verifier) {
                (None, None) => true,
                (None, Some(_)) => false,
                (Some(_), None) => false,
                (Some((c, m)), Some(v)) => {
                    if m == "S256" {
                        URL_SAFE_NO_PAD.encode(Sha256::digest(v.as_bytes())) == *c
                    } else {
                        v == c
                    }
                }
            };
            if !pkce_ok {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", INVALID_GRANT);
            }
            let code = st.codes.remove(&raw).expect("code");
            let Some(u) = st
                .users
                .iter()
                .find(|u| u.username == code.username)
                .cloned()
            else {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", INVALID_GRANT);
            };
            let (sid, auth_time) = match st.sessions.get(&code.session_key) {
                Some(s) => (Some(s.sid.clone()), s.auth_time),
                None => (Some(sha256_hex(&code.session_key)), now),
            };
            let (a, i) = issue(
                &mut st,
                base,
                &p,
                &u,
                &code.scopes,
                Grant {
                    now,
                    auth_time,
                    nonce: code.nonce.clone(),
                    sid,
                    amr: true,
                },
            );
            respond(a, i, &code.scopes)
        }
        "client_credentials" | "password" => {
            let username = get("username");
            let password = get("password");
            let user = st
                .users
                .iter()
                .find(|u| {
                    !username.is_empty()
                        && u.username == username
                        && !u.app_password.is_empty()
                        && u.app_password == password
                })
                .cloned();
            let Some(u) = user else {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", INVALID_GRANT);
            };
            let mut scopes: Vec<String> = Vec::new();
            for s in get("scope").split_whitespace() {
                if p.scopes.iter().any(|x| x == s) && !scopes.iter().any(|x| x == s) {
                    scopes.push(s.to_string());
                }
            }
            let (a, i) = issue(
                &mut st,
                base,
                &p,
                &u,
                &scopes,
                Grant {
                    now,
                    auth_time: now,
                    nonce: None,
                    sid: None,
                    amr: false,
                },
            );
            respond(a, i, &scopes)
        }
        "refresh_token" => {
            // Proxy providers get no refresh tokens (no offline_access), so none is valid.
            oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", INVALID_GRANT)
        }
        _ => oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "The authorization grant type is not supported by the authorization server.",
        ),
    }
}

fn introspect(inner: &Inner, headers: &HeaderMap, body: &str) -> Response<Body> {
    let f = parse_form(body);
    let (client_id, client_secret) = client_auth(headers, &f);
    let inactive = || token_resp(StatusCode::OK, &json!({"active": false}));
    let st = inner.st();
    let Some(p) = st
        .providers
        .iter()
        .find(|p| p.client_id == client_id && p.client_secret == client_secret)
    else {
        return inactive();
    };
    let raw = f.get("token").cloned().unwrap_or_default();
    let Some(t) = st.tokens.get(&raw) else {
        return inactive();
    };
    if t.provider_pk != p.pk || t.exp <= unix_now() {
        return inactive();
    }
    let mut out = t.claims.clone();
    out.insert("active".into(), json!(true));
    out.insert("scope".into(), json!(t.scopes.join(" ")));
    out.insert("client_id".into(), json!(p.client_id));
    token_resp(StatusCode::OK, &Value::Object(out))
}

fn revoke(inner: &Inner, headers: &HeaderMap, body: &str) -> Response<Body> {
    let f = parse_form(body);
    let (client_id, client_secret) = client_auth(headers, &f);
    let mut st = inner.st();
    let Some(pk) = st
        .providers
        .iter()
        .find(|p| p.client_id == client_id && p.client_secret == client_secret)
        .map(|p| p.pk)
    else {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", INVALID_CLIENT);
    };
    let raw = f.get("token").cloned().unwrap_or_default();
    if st.tokens.get(&raw).is_some_and(|t| t.provider_pk == pk) {
        st.tokens.remove(&raw);
    }
    token_resp(StatusCode::OK, &json!({}))
}

fn userinfo(inner: &Inner, headers: &HeaderMap) -> Response<Body> {
    let unauthorized = || {
        let mut r = resp(StatusCode::UNAUTHORIZED, "text/plain", "");
        r.headers_mut().insert(
            WWW_AUTHENTICATE,
            "error=\"invalid_token\"".parse().expect("hv"),
        );
        r
    };
    let raw = header_str(headers, AUTHORIZATION)
        .and_then(|v| v.split_once(' '))
        .filter(|(k, _)| k.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.to_string());
    let Some(raw) = raw else {
        return unauthorized();
    };
    let st = inner.st();
    let Some(t) = st.tokens.get(&raw).filter(|t| t.exp > unix_now()) else {
        return unauthorized();
    };
    let Some(u) = st.users.iter().find(|u| u.username == t.username) else {
        return unauthorized();
    };
    let mut c = Map::new();
    c.insert("sub".into(), json!(u.sub()));
    c.extend(scope_claims(u, &t.scopes));
    json_resp(StatusCode::OK, &Value::Object(c))
}

fn end_session(
    inner: &Inner,
    p: &ProviderSpec,
    query: &str,
    headers: &HeaderMap,
    body: &str,
) -> Response<Body> {
    let mut params = parse_form(query);
    for (k, v) in parse_form(body) {
        params.entry(k).or_insert(v);
    }
    let hint = params.get("id_token_hint").cloned().unwrap_or_default();
    inner.st().end_session_hints.push(hint.clone());
    if !hint.is_empty() {
        let mut v = Validation::new(Algorithm::HS256);
        v.validate_exp = false;
        v.set_audience(&[p.client_id.as_str()]);
        v.set_required_spec_claims::<&str>(&[]);
        let ok = jsonwebtoken::decode::<Value>(
            &hint,
            &DecodingKey::from_secret(p.client_secret.as_bytes()),
            &v,
        )
        .is_ok();
        if !ok {
            return error_page(
                StatusCode::BAD_REQUEST,
                "Invalid id_token_hint",
                "The id_token_hint could not be verified.",
            );
        }
    }
    let sid = cookie(headers, SESSION_COOKIE)
        .and_then(|k| inner.st().sessions.get(&k).map(|s| s.sid.clone()));
    if let Some(sid) = &sid {
        inner.end_login_session(sid);
    }
    let mut r = html(
        StatusCode::OK,
        format!(
            "<!DOCTYPE html><html><head><title>Signed out</title></head><body>\
             <h1>Signed out</h1><p>You've logged out of {}.</p></body></html>",
            html_escape(&p.name)
        ),
    );
    r.headers_mut().insert(
        SET_COOKIE,
        format!("{SESSION_COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax")
            .parse()
            .expect("hv"),
    );
    r
}
