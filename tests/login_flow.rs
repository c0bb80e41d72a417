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
