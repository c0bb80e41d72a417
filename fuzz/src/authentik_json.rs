//! `authentik_json`: what authentik's API sends — a page of `/api/v3/outposts/proxy/`
//! (`Page<Value>` → `providers_of` → `spec_for` and `discovery_for`, with and without
//! `AUTHENTIK_HOST_BROWSER`; `next_page`), a single `ProxyProvider`, a page of
//! `OutpostObject`s, and a websocket message (`ws::handle`).
//!
//! Input: JSON text (any bytes; what is not JSON is refused by serde).
//!
//! Invariants: the next page is always after the current one and at most `MAX_PAGES` (a
//! listing ends); a provider's application has an http(s) external host without credentials,
//! query or fragment, the mode its provider names (none → proxy), a redirect URI on the
//! external host, and in forward_domain a cookie domain with a dot containing the external
//! host on a label boundary; a discovery document has http(s) endpoints, and with
//! `AUTHENTIK_HOST_BROWSER` its authorization endpoint is on the browser host.

use std::sync::OnceLock;

use ak_outpost::core::app::{AppSpec, Mode};
use ak_outpost::source::authentik::api::{
    MAX_PAGES, OutpostObject, Page, ProxyProvider, next_page, providers_of,
};
use ak_outpost::source::authentik::apps::{discovery_for, spec_for};
use ak_outpost::source::authentik::{AuthentikEnv, ws};
use ak_outpost::state::outpost::Outpost;
use serde_json::Value;
use tokio::sync::Notify;
use url::Url;

/// The browser-facing authentik host of the second environment.
const BROWSER: &str = "https://login.example.com/";

/// Two environments: plain, and with `AUTHENTIK_HOST_BROWSER`.
fn envs() -> &'static [AuthentikEnv; 2] {
    static ENVS: OnceLock<[AuthentikEnv; 2]> = OnceLock::new();
    ENVS.get_or_init(|| {
        let env = |browser: Option<&str>| {
            AuthentikEnv::from_lookup(|k| match k {
                "AUTHENTIK_HOST" => Some("http://authentik:9000".into()),
                "AUTHENTIK_TOKEN" => Some("fuzz-token".into()),
                "AUTHENTIK_HOST_BROWSER" => browser.map(str::to_string),
                _ => None,
            })
            .unwrap_or_else(|e| panic!("fuzz env: {e}"))
        };
        [env(None), env(Some(BROWSER))]
    })
}

fn outpost() -> &'static (Outpost, Notify) {
    static OUTPOST: OnceLock<(Outpost, Notify)> = OnceLock::new();
    OUTPOST.get_or_init(|| (Outpost::new(envs()[0].empty_runtime()), Notify::new()))
}

pub fn run(data: &[u8]) {
    if let Ok(page) = serde_json::from_slice::<Page<Value>>(data) {
        for current in [1, 2, MAX_PAGES - 1, MAX_PAGES] {
            if let Ok(Some(next)) = next_page(&page.pagination, current) {
                assert!(next > current && next <= MAX_PAGES, "{current} → {next}");
            }
        }
        for p in providers_of(page.results) {
            check_provider(&p);
        }
    }
    if let Ok(p) = serde_json::from_slice::<ProxyProvider>(data) {
        check_provider(&p);
    }
    if let Ok(page) = serde_json::from_slice::<Page<OutpostObject>>(data) {
        let _ = page
            .results
            .first()
            .map(|o| (&o.pk, &o.config, o.refresh_interval_s));
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let (outpost, refresh) = outpost();
        ws::handle(text, outpost, refresh);
    }
}

/// The invariants of one provider's application and discovery document.
pub fn check_provider(p: &ProxyProvider) {
    let [plain, browser_env] = envs();
    if let Some(spec) = spec_for(plain, p) {
        check_spec(&spec, p);
    }
    let browser = browser_env.host_browser.as_ref();
    for b in [None, browser] {
        let Some(d) = discovery_for(p, b) else {
            continue;
        };
        for u in [&d.authorization_endpoint, &d.token_endpoint]
            .into_iter()
            .chain(d.userinfo_endpoint.as_ref())
            .chain(d.end_session_endpoint.as_ref())
            .chain(d.introspection_endpoint.as_ref())
            .chain(d.revocation_endpoint.as_ref())
            .chain(d.jwks_uri.as_ref())
        {
            assert!(matches!(u.scheme(), "http" | "https"), "{u}");
        }
        if let Some(b) = b {
            assert_eq!(
                d.authorization_endpoint.host_str(),
                b.host_str(),
                "{} is not on the browser host",
                d.authorization_endpoint
            );
        }
    }
}

fn check_spec(spec: &AppSpec, p: &ProxyProvider) {
    let u = &spec.external_host;
    assert!(matches!(u.scheme(), "http" | "https"), "{u}");
    assert!(u.username().is_empty() && u.password().is_none(), "{u}");
    assert!(u.query().is_none() && u.fragment().is_none(), "{u}");
    let host = u.host_str().unwrap_or_else(|| panic!("{u} has no host"));
    let want = match p.mode.as_deref().unwrap_or("proxy") {
        "forward_single" => Mode::ForwardSingle,
        "forward_domain" => Mode::ForwardDomain,
        "proxy" => Mode::Proxy,
        other => panic!("mode {other:?} accepted"),
    };
    assert_eq!(spec.mode, want);
    if spec.mode == Mode::ForwardDomain {
        let cd = &spec.cookie_domain;
        let h = host.trim_end_matches('.');
        assert!(cd.contains('.'), "{cd:?}");
        assert!(
            h == cd || h.ends_with(&format!(".{cd}")),
            "{host} not under {cd}"
        );
    } else {
        assert!(spec.cookie_domain.is_empty());
    }
    let redirect = Url::parse(&spec.redirect_uri)
        .unwrap_or_else(|e| panic!("redirect URI {}: {e}", spec.redirect_uri));
    assert_eq!(redirect.host_str(), Some(host));
}
