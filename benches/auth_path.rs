//! Micro-benchmarks of the forward-auth hot path, piece by piece and whole (in process, no
//! network): unsealing the session cookie, the introspection cache hit, the decision, the
//! identity headers, and one complete `/auth/nginx` check through `handlers::handle`.
//!
//! Run: `cargo bench --bench auth_path` (or `bash bench/run.sh`, which runs it too).
//! The session is shaped like a real one from the reference IdP (opaque access and refresh
//! tokens, an RS256 ID token, two groups), so the cookie is as large as in production.

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ak_outpost::core::app::{AppExtras, AppSpec, Mode, Site, cookie_name};
use ak_outpost::core::decide::{SessionCheck, decide};
use ak_outpost::core::identity::Identity;
use ak_outpost::core::identity_headers::identity_headers;
use ak_outpost::core::paths::Flavour;
use ak_outpost::core::request::AuthRequest;
use ak_outpost::core::seal::Sealer;
use ak_outpost::core::session::{Session, open_session, read_session_cookies};
use ak_outpost::core::token::unix_now;
use ak_outpost::http::handlers::{self, Conn, Handled};
use ak_outpost::http::respond::{self, Body};
use ak_outpost::provider::ClientAuth;
use ak_outpost::provider::{ClientSettings, Discovery, OidcClient};
use ak_outpost::state::application::{AppSet, Application};
use ak_outpost::state::memo::SessionMemo;
use ak_outpost::state::outpost::{Outpost, Runtime, Settings};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use http::header::{COOKIE, HOST, HeaderMap, HeaderValue, USER_AGENT};
use http::{Request, StatusCode};

const SECRET: &[u8] = b"bench-sealing-secret-0123456789abcdef-0123456789";
const CLIENT_ID: &str = "ak-outpost-bench";
const APP_HOST: &str = "app.bench.test";
const ISSUER: &str = "http://127.0.0.1:1";

/// An opaque token of oidc-provider's length (43 base64url characters).
fn opaque(seed: u8) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([seed; 32])
}

/// A JWT-shaped ID token of realistic size (RS256: ~340-byte signature).
fn id_token() -> String {
    use base64::Engine;
    let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = e.encode(br#"{"alg":"RS256","typ":"JWT","kid":"bench-key-id-0123456789"}"#);
    let claims = e.encode(
        serde_json::json!({
            "sub": "alice", "preferred_username": "alice", "name": "Alice Liddell",
            "email": "alice@example.test", "email_verified": true, "groups": ["admins", "users"],
            "nonce": "n-0123456789abcdef0123", "at_hash": "0123456789abcdef012345",
            "sid": "0123456789abcdef0123456789abcdef", "aud": CLIENT_ID, "exp": 4_000_000_000u64,
            "iat": 1_700_000_000u64, "iss": ISSUER
        })
        .to_string(),
    );
    let sig = e.encode([7u8; 256]);
    format!("{header}.{claims}.{sig}")
}

fn session(now: i64) -> Session {
    Session {
        version: 1,
        identity: Identity {
            sub: "alice".into(),
            username: "alice".into(),
            email: "alice@example.test".into(),
            name: "Alice Liddell".into(),
            groups: vec!["admins".into(), "users".into()],
            entitlements: vec![],
            sid: None,
            ak_proxy: None,
        },
        access_token: opaque(1),
        access_expires_at: now + 3600,
        access_issued_at: now,
        refresh_token: Some(opaque(2)),
        id_token: Some(id_token()),
        expires_at: now + 86400,
    }
}

/// An OIDC client whose provider has no introspection or userinfo endpoint: the first check
/// of a token is answered locally (active) and cached, so later checks are pure cache hits.
fn oidc_client(rt: &tokio::runtime::Runtime) -> Arc<OidcClient> {
    let settings = ClientSettings {
        issuer: ISSUER.parse().unwrap(),
        client_id: CLIENT_ID.into(),
        client_secret: "bench-client-secret-0123456789abcdef".into(),
        scopes: vec!["openid".into(), "profile".into(), "email".into()],
        client_auth: ClientAuth::Post,
        cache_ttl: Duration::from_secs(3600),
        max_concurrent_checks: 32,
        extra_issuers: vec![],
        outage_grace: Duration::from_secs(900),
        new_token_checks_per_second: 0,
    };
    let client = Arc::new(OidcClient::new(
        settings,
        OidcClient::http_client(false).unwrap(),
    ));
    let disc: Discovery = serde_json::from_value(serde_json::json!({
        "issuer": ISSUER,
        "authorization_endpoint": format!("{ISSUER}/auth"),
        "token_endpoint": format!("{ISSUER}/token"),
    }))
    .unwrap();
    rt.block_on(client.install(disc)).unwrap();
    client
}

fn application(oidc: Arc<OidcClient>) -> Arc<Application> {
    let spec = AppSpec::new(
        "app".into(),
        &format!("http://{APP_HOST}"),
        Mode::ForwardSingle,
        "",
        "^/public/",
        vec![],
    )
    .unwrap();
    Arc::new(Application {
        upstream: None,
        metrics: ak_outpost::state::metrics::host_metrics(&spec.host_key()),
        site: Site {
            provider_name: spec.name.clone(),
            app_slug: spec.name.clone(),
            spec,
            sealer: Arc::new(Sealer::new(SECRET, "session")),
            cookie_name: cookie_name(CLIENT_ID),
            extras: AppExtras {
                basic_auth: None,
                bearer_header: true,
                basic_header: false,
                intercept_header_auth: true,
            },
        },
        oidc,
    })
}

fn sealed_cookie(app: &Application, s: &Session) -> String {
    let json = serde_json::to_vec(s).unwrap();
    format!(
        "{}={}",
        app.cookie_name,
        app.sealer.seal(app.cookie_name.as_bytes(), &json)
    )
}

fn auth_request(cookie: Option<&str>) -> http::request::Parts {
    let mut b = Request::get("/outpost.goauthentik.io/auth/nginx")
        .header(HOST, APP_HOST)
        .header("x-original-url", format!("http://{APP_HOST}/dashboard?x=1"))
        .header("x-forwarded-for", "127.0.0.1")
        .header("x-forwarded-proto", "http")
        .header(USER_AGENT, "wrk");
    if let Some(c) = cookie {
        b = b.header(COOKIE, c);
    }
    b.body(()).unwrap().into_parts().0
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let now = unix_now();
    let oidc = oidc_client(&rt);
    let app = application(Arc::clone(&oidc));
    let s = session(now);
    let cookie = sealed_cookie(&app, &s);
    let sealed_value = cookie.split_once('=').unwrap().1.to_string();
    let parts = auth_request(Some(&cookie));

    // BENCH_QUICK=1 (bench/run.sh QUICK=1): a short smoke run.
    let quick = std::env::var("BENCH_QUICK").is_ok_and(|v| v == "1");
    let mut g = c.benchmark_group("hot_path");
    g.measurement_time(Duration::from_millis(if quick { 500 } else { 3000 }));
    g.warm_up_time(Duration::from_millis(if quick { 200 } else { 1000 }));
    if quick {
        g.sample_size(20);
    }

    // 1. Unsealing the cookie: AES-256-GCM open of the raw value ...
    g.bench_function("unseal/aes_gcm_open", |b| {
        b.iter(|| {
            app.sealer.unseal(
                black_box(app.cookie_name.as_bytes()),
                black_box(&sealed_value),
            )
        })
    });
    // ... and the whole step the handler does: find the cookie, open it, parse the JSON.
    g.bench_function("unseal/read_and_open_session", |b| {
        b.iter(|| {
            let cookies = read_session_cookies(black_box(&parts.headers), &app.cookie_name);
            open_session(&app, &cookies, now)
        })
    });

    // ... and finding the session among other applications' cookies, as a browser sends
    // them (the Cookie line of bench/browser.sh, 2.5 KB with this session).
    let mut browser = HeaderMap::new();
    let line = format!(
        "_ga=GA1.1.1843572218.1733400000; _ga_5Q8L2H1XJ4=GS1.1.1733400000.3.1.1733401234.0.0.0; \
         csrftoken=tH3kF8vQ2mZpL9xR4wN7yB1cD6eG0jA5; sessionid=k2v9x7q4m1p8s3t6w0z5y2b7n4c1f8h3; \
         {}={sealed_value}; grafana_session=9f3c2a7e4b1d8f6a0c5e3b9d7f2a4c6e; \
         grafana_session_expiry=1733404834; theme=dark",
        app.cookie_name
    );
    browser.insert(COOKIE, HeaderValue::from_str(&line).expect("a cookie line"));
    g.bench_function("cookies/read_session_cookies_browser", |b| {
        b.iter(|| {
            read_session_cookies(black_box(&browser), &app.cookie_name)
                .value
                .map(|v| v.len())
        })
    });

    // 2. The introspection cache hit (`provider::cache`; no await point is ever pending).
    let token = s.access_token.clone();
    assert!(
        matches!(
            oidc.check_token(&token, now + 3600, now).now_or_never(),
            Some(Ok(true))
        ),
        "priming the cache"
    );
    g.bench_function("cache_hit/check_token", |b| {
        b.iter(|| {
            oidc.check_token(black_box(&token), now + 3600, now)
                .now_or_never()
                .expect("a cache hit never waits")
        })
    });

    // 3. Header building: the 12 X-authentik-* headers (once per session, then remembered) and
    // the per-request response made from them plus User-Agent.
    let ua = HeaderValue::from_static("wrk");
    g.bench_function("headers/identity_headers", |b| {
        b.iter(|| {
            identity_headers(
                black_box(&app),
                app.oidc.jwks_header(),
                black_box(&s),
                "ak-outpost",
                true,
            )
        })
    });
    let identity = identity_headers(&app, app.oidc.jwks_header(), &s, "ak-outpost", true);
    g.bench_function("headers/allow_response", |b| {
        b.iter(|| respond::allow(black_box(&identity), Some(&ua)))
    });

    // 4. The decision (with the request parsing that feeds it).
    let req = AuthRequest::parse(Flavour::Nginx, &parts, true);
    let check = SessionCheck::Valid {
        session: Arc::new(s.clone()),
        renewed: false,
        prepared: None,
    };
    g.bench_function("decide/decide", |b| {
        b.iter(|| decide(black_box(&req), black_box(&check), &app.spec, now))
    });
    g.bench_function("decide/parse_request", |b| {
        b.iter(|| AuthRequest::parse(Flavour::Nginx, black_box(&parts), true))
    });

    // 5. One whole check through the handler (everything but hyper and the socket). The
    // session cookie is opened once, then found in the memo (`src/state/memo.rs`), as it is for a
    // browser's repeated requests; (1) is what a first request pays on top.
    let outpost = Arc::new(Outpost::new(Runtime {
        apps: AppSet::new(vec![Arc::clone(&app)]),
        settings: Settings {
            outpost_name: "ak-outpost".into(),
            trusted_proxies: vec!["127.0.0.0/8".parse().unwrap()],
            session_lifetime: Duration::from_secs(86400),
            send_jwt_header: true,
            log_requests: false,
            client_rate: Default::default(),
        },
        loaded: true,
        memo: SessionMemo::new(),
        header_memo: SessionMemo::new(),
    }));
    let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let no_cookie = auth_request(None);
    // The first check of the cookie opens it (the full path, whose future completes without
    // waiting: the token's answer is cached); later ones are answered at once.
    let check_once = |p: &http::request::Parts| {
        handlers::handle(
            Arc::clone(&outpost),
            p.clone(),
            Body::empty(),
            Conn { peer, tls: false },
        )
        .answer()
        .now_or_never()
        .expect("a cached check never waits")
        .0
    };
    let check_now = |p: http::request::Parts| match handlers::handle(
        Arc::clone(&outpost),
        p,
        Body::empty(),
        Conn { peer, tls: false },
    ) {
        Handled::Now(resp, _) => resp,
        Handled::Later(_) => panic!("a remembered session and a missing one are answered at once"),
    };
    assert_eq!(check_once(&parts).status(), StatusCode::OK);
    assert_eq!(check_now(parts.clone()).status(), StatusCode::OK);
    assert_eq!(
        check_now(no_cookie.clone()).status(),
        StatusCode::UNAUTHORIZED
    );
    g.bench_function("handler/auth_nginx_valid_session", |b| {
        b.iter_batched(|| parts.clone(), check_now, BatchSize::SmallInput)
    });
    g.bench_function("handler/auth_nginx_no_cookie", |b| {
        b.iter_batched(|| no_cookie.clone(), check_now, BatchSize::SmallInput)
    });
    g.finish();
}

criterion_group!(auth_path, benches);
criterion_main!(auth_path);
