//! End-to-end login through real nginx (the shipped examples), the real IdP and the outpost.

mod common;

use common::nginx::Example;
use common::*;

/// The whole journey: first visit redirects, login lands on the original path and query with
/// the identity headers, the next visit goes straight through, sign-out forces a new login.
async fn journey(example: Example) {
    let s = Stack::start(StackOptions {
        example,
        ..Default::default()
    })
    .await;
    let target = s.app_url("/some/path?x=1&y=two%20words");

    // First visit: nginx turns the outpost's 401 into a redirect to /start.
    let first = s.browser.get(&target).await;
    assert_eq!(first.status, 302, "{example:?}: {}", first.body);
    let loc = first.location().expect("location");
    assert!(loc.contains("/outpost.goauthentik.io/start?rd="), "{loc}");
    if example == Example::DomainLevel {
        assert!(loc.starts_with(&s.nginx.base_url(AUTH_HOST)), "{loc}");
    }

    // Login lands on the original URL, with the identity headers.
    let landing = s.login("/some/path?x=1&y=two%20words", &alice()).await;
    assert_eq!(landing.status, 200, "{example:?}: {}", landing.body);
    let body = landing.json();
    assert_eq!(body["path"], "/some/path", "{example:?}");
    assert_eq!(body["query"], "x=1&y=two%20words", "{example:?}");
    assert_eq!(
        landing.echoed("x-authentik-username").as_deref(),
        Some("alice")
    );
    assert_eq!(
        landing.echoed("x-authentik-groups").as_deref(),
        Some("admins|users")
    );
    assert_eq!(
        landing.echoed("x-authentik-email").as_deref(),
        Some("alice@example.test")
    );
    assert_eq!(
        landing.echoed("x-authentik-name").as_deref(),
        Some("Alice Liddell")
    );
    assert_eq!(landing.echoed("x-authentik-uid").as_deref(), Some("alice"));

    // Second visit: straight through, and client-sent identity headers never reach the app.
    let again = s
        .browser
        .get_with(
            &s.app_url("/again"),
            &[
                ("X-authentik-username", "mallory"),
                ("X-Authentik-Groups", "admins"),
            ],
        )
        .await;
    assert_eq!(again.status, 200, "{example:?}");
    assert_eq!(
        again.echoed("x-authentik-username").as_deref(),
        Some("alice")
    );
    assert_eq!(
        again.echoed("x-authentik-groups").as_deref(),
        Some("admins|users")
    );

    // Sign out: cookies cleared, provider session ended; the next visit asks for a password.
    let out_url = match example {
        Example::DomainLevel => format!(
            "{}/outpost.goauthentik.io/sign_out",
            s.nginx.base_url(AUTH_HOST)
        ),
        _ => s.app_url("/outpost.goauthentik.io/sign_out"),
    };
    let pages = s.browser.follow(&out_url).await;
    assert_eq!(pages[0].status, 302);
    assert!(
        pages[0]
            .set_cookies()
            .iter()
            .any(|c| c.contains("Max-Age=0")),
        "{:?}",
        pages[0].set_cookies()
    );
    let end = pages[0].location().unwrap();
    assert!(
        end.starts_with(&format!("{}/session/end", s.idp.issuer)),
        "{end}"
    );
    let last = pages.into_iter().last().unwrap();
    s.browser.confirm_logout(last).await;
    let after = s.browser.follow(&target).await;
    let last = after.last().unwrap();
    assert!(
        last.body.contains("login-form"),
        "{example:?}: expected the IdP login form, got {} {}",
        last.status,
        last.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journey_plain_nginx() {
    journey(Example::Plain).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journey_docs_style_nginx() {
    journey(Example::DocsStyle).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journey_swag() {
    journey(Example::Swag).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journey_domain_level() {
    journey(Example::DomainLevel).await;
}

/// ID tokens signed with ES256 (JWKS) and HS256 (client secret) are verified too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn es256_and_hs256_id_tokens() {
    for alg in ["ES256", "HS256"] {
        let s = Stack::start(StackOptions {
            alg,
            ..Default::default()
        })
        .await;
        let page = s.login("/alg", &alice()).await;
        assert_eq!(page.status, 200, "{alg}: {}", page.body);
        assert_eq!(
            page.echoed("x-authentik-username").as_deref(),
            Some("alice"),
            "{alg}"
        );
    }
}

/// A session too large for one cookie is split into numbered cookies and read back whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_sessions_are_split_into_several_cookies() {
    // About 5 KB of groups: two cookies (the ID token is dropped from such sessions, and the
    // whole Cookie header stays under nginx's default 8 KB line limit).
    let groups: Vec<String> = (0..140)
        .map(|i| format!("department-{i:03}-long"))
        .collect();
    let s = Stack::start(StackOptions {
        alice_groups: Some(groups.clone()),
        ..Default::default()
    })
    .await;
    let page = s.login("/big", &alice()).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let cookies = s.browser.cookies_for(&s.app_url("/"));
    let name = ak_outpost::core::app::cookie_name(CLIENT_ID);
    assert!(cookies.contains(&format!("{name}=")), "{cookies}");
    assert!(
        cookies.contains(&format!("{name}_1=")),
        "expected a second chunk: {cookies}"
    );
    for c in cookies.split("; ") {
        assert!(c.len() < 4000, "cookie too large: {}", c.len());
    }
    assert_eq!(page.echoed("x-authentik-groups"), Some(groups.join("|")));
    let again = s.browser.get(&s.app_url("/again")).await;
    assert_eq!(again.status, 200);
}

/// Sign-out revokes the tokens at the provider (revocation endpoint), not only the cookie.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_out_revokes_tokens_at_the_provider() {
    let s = Stack::start(StackOptions::default()).await;
    assert_eq!(s.login("/", &alice()).await.status, 200);
    let before = s.idp.tokens("alice").await;
    assert!(before["access_tokens"].as_u64().unwrap() >= 1, "{before}");
    // A copy of the cookie taken before signing out…
    let stolen = s.browser.cookies_for(&s.app_url("/"));
    s.idp.reset_stats().await;
    let pages = s
        .browser
        .follow(&s.app_url("/outpost.goauthentik.io/sign_out"))
        .await;
    assert_eq!(pages[0].status, 302);
    let stats = s.idp.stats().await;
    assert!(
        stats["revocation_requests"].as_u64().unwrap() >= 1,
        "{stats}"
    );
    let after = s.idp.tokens("alice").await;
    assert_eq!(after["access_tokens"], 0, "{after}");
    // …no longer opens the app once the cached answer expires (immediately on this outpost).
    let replay = reqwest::Client::new()
        .get(format!(
            "http://{}/outpost.goauthentik.io/auth/nginx",
            s.outpost.addr
        ))
        .header("Host", APP_HOST)
        .header("X-Original-URL", s.app_url("/x"))
        .header("Cookie", stolen)
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), 401);
}
