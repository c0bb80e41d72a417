//! Provider → application: turns the proxy providers authentik assigns to this outpost into
//! the [`Runtime`] that serves them (site settings, session sealer, OIDC client, reused across
//! refreshes while a provider is unchanged). It only builds; fetching from authentik and
//! swapping the runtime in belong to the refresh loop.

use std::sync::Arc;

use url::Url;

use super::api::{OutpostObject, ProxyProvider};
use super::env::{AuthentikEnv, rebase};
use crate::core::app::{AppExtras, AppSpec, Mode, Site, cookie_name};
use crate::core::seal::Sealer;
use crate::core::upstream::Upstream;
use crate::provider::ClientAuth;
use crate::provider::{ClientSettings, Discovery, OidcClient};
use crate::state::application::{AppSet, Application};
use crate::state::memo::SessionMemo;
use crate::state::outpost::Runtime;
use crate::state::upstream::ProxyTo;

fn parse_url(s: Option<&str>) -> Option<Url> {
    s.filter(|s| !s.is_empty())
        .and_then(|s| Url::parse(s).ok())
        .filter(|u| matches!(u.scheme(), "http" | "https"))
}

/// The discovery document a provider's `oidc_configuration` amounts to; browser-facing
/// endpoints move to `AUTHENTIK_HOST_BROWSER` when it is set. `None` unless the authorization
/// and token endpoints are http(s) URLs. Public for the fuzz targets (`fuzz/`).
pub fn discovery_for(p: &ProxyProvider, browser: Option<&Url>) -> Option<Discovery> {
    let c = &p.oidc_configuration;
    let mut authorize = parse_url(Some(&c.authorization_endpoint))?;
    let mut end_session = parse_url(c.end_session_endpoint.as_deref());
    if let Some(b) = browser {
        authorize = rebase(&authorize, b);
        end_session = end_session.map(|u| rebase(&u, b));
    }
    Some(Discovery {
        issuer: c.issuer.clone(),
        authorization_endpoint: authorize,
        token_endpoint: parse_url(Some(&c.token_endpoint))?,
        userinfo_endpoint: parse_url(c.userinfo_endpoint.as_deref()),
        introspection_endpoint: parse_url(c.introspection_endpoint.as_deref()),
        revocation_endpoint: parse_url(c.revocation_endpoint.as_deref()),
        end_session_endpoint: end_session,
        jwks_uri: parse_url(c.jwks_uri.as_deref()),
        token_endpoint_auth_methods_supported: c.token_endpoint_auth_methods_supported.clone(),
    })
}

fn mode_of(p: &ProxyProvider) -> Option<Mode> {
    match p.mode.as_deref().unwrap_or("proxy") {
        "forward_single" => Some(Mode::ForwardSingle),
        "forward_domain" => Some(Mode::ForwardDomain),
        "proxy" => Some(Mode::Proxy),
        _ => None,
    }
}

/// `skip_path_regex` with invalid lines dropped (logged), as authentik's outpost does.
fn usable_skip_regex(p: &ProxyProvider) -> String {
    let raw = p.skip_path_regex.clone().unwrap_or_default();
    raw.split('\n')
        .filter(|line| {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() {
                return false;
            }
            match regex_lite::Regex::new(line) {
                Ok(_) => true,
                Err(_) => {
                    tracing::warn!(provider = %p.name, regex = %line, "invalid skip_path_regex line ignored");
                    false
                }
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Builds the applications for a provider list. OIDC clients of unchanged providers are
/// reused from `previous`, so their caches and keys survive a refresh.
pub async fn build_runtime(
    env: &AuthentikEnv,
    http: &reqwest::Client,
    outpost: &OutpostObject,
    providers: &[ProxyProvider],
    previous: Option<&Runtime>,
) -> Runtime {
    let mut apps = Vec::new();
    for p in providers {
        let Some(spec) = spec_for(env, p) else {
            continue;
        };
        if let Some(app) = app_for_provider(env, http, p, spec, previous).await {
            apps.push(app);
        }
    }
    if apps.is_empty() {
        tracing::warn!("no providers are assigned to this outpost");
    }
    Runtime {
        apps: AppSet::new(apps),
        settings: env.settings(&outpost.name),
        loaded: true,
        memo: SessionMemo::new(),
        header_memo: SessionMemo::new(),
    }
}

/// A provider's validated application settings; `None` (logged) when its mode or its
/// settings cannot be served. Public for the fuzz targets (`fuzz/`).
pub fn spec_for(env: &AuthentikEnv, p: &ProxyProvider) -> Option<AppSpec> {
    let Some(mode) = mode_of(p) else {
        tracing::error!(provider = %p.name, mode = ?p.mode, "provider skipped: unknown mode");
        return None;
    };
    match AppSpec::new(
        p.name.clone(),
        &p.external_host,
        mode,
        p.cookie_domain.as_deref().unwrap_or_default(),
        &usable_skip_regex(p),
        Vec::new(),
    ) {
        Ok(mut s) => {
            s.allow_cors_preflight = env.allow_cors_preflight;
            if mode == Mode::Proxy {
                s.upstream = Some(upstream_of(p)?);
            }
            Some(s)
        }
        Err(errs) => {
            tracing::error!(provider = %p.name, problems = %errs.join("; "), "provider skipped");
            None
        }
    }
}

/// Where a proxy-mode provider forwards to: `internal_host` (its path is not prepended, as
/// with authentik) and `internal_host_ssl_validation`; `None` (logged) when unusable.
fn upstream_of(p: &ProxyProvider) -> Option<Upstream> {
    let internal = p.internal_host.as_deref().unwrap_or_default();
    match Upstream::new(internal, p.internal_host_ssl_validation, false) {
        Ok(u) => Some(u),
        Err(e) => {
            tracing::error!(provider = %p.name, problem = %e, "provider skipped: proxy mode needs a usable internal_host");
            None
        }
    }
}

/// A provider's application: its OIDC client (reused from `previous` when unchanged) and its
/// site; `None` (logged) when its `oidc_configuration` is unusable.
async fn app_for_provider(
    env: &AuthentikEnv,
    http: &reqwest::Client,
    p: &ProxyProvider,
    spec: AppSpec,
    previous: Option<&Runtime>,
) -> Option<Arc<Application>> {
    let Some(disc) = discovery_for(p, env.host_browser.as_ref()) else {
        tracing::error!(provider = %p.name, "provider skipped: unusable oidc_configuration");
        return None;
    };
    let settings = client_settings(env, p, &disc);
    let oidc = match reusable_client(previous, &settings, &disc) {
        Some(o) => o,
        None => new_client(http, settings, disc, p).await,
    };
    let upstream = match &spec.upstream {
        Some(u) => {
            match ProxyTo::new(
                previous.and_then(|r| r.upstream_client(u)),
                u,
                &spec.host_key(),
            ) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::error!(provider = %p.name, error = %e, "provider skipped");
                    return None;
                }
            }
        }
        None => None,
    };
    Some(application(p, spec, oidc, upstream))
}

/// The OIDC client settings of a provider: its credentials, its scopes (always with
/// `openid`), and the browser-facing issuer when `AUTHENTIK_HOST_BROWSER` is set.
fn client_settings(env: &AuthentikEnv, p: &ProxyProvider, disc: &Discovery) -> ClientSettings {
    let mut scopes = p.scopes_to_request.clone();
    scopes.sort();
    if !scopes.iter().any(|s| s == "openid") {
        scopes.insert(0, "openid".into());
    }
    let mut extra_issuers = Vec::new();
    if let (Some(b), Ok(iss)) = (&env.host_browser, Url::parse(&disc.issuer)) {
        extra_issuers.push(rebase(&iss, b).to_string());
    }
    ClientSettings {
        issuer: Url::parse(&disc.issuer).unwrap_or_else(|_| disc.token_endpoint.clone()),
        client_id: p.client_id.clone(),
        client_secret: p.client_secret.clone(),
        scopes,
        client_auth: ClientAuth::Auto,
        cache_ttl: env.token_cache_ttl,
        max_concurrent_checks: 32,
        extra_issuers,
        outage_grace: env.outage_grace,
        new_token_checks_per_second: env.new_token_checks_per_second,
    }
}

/// The client of `previous` with the same credentials, scopes and discovery, if any.
fn reusable_client(
    previous: Option<&Runtime>,
    settings: &ClientSettings,
    disc: &Discovery,
) -> Option<Arc<OidcClient>> {
    previous.and_then(|rt| {
        rt.apps
            .iter()
            .find(|a| {
                a.oidc.settings.client_id == settings.client_id
                    && a.oidc.settings.client_secret == settings.client_secret
                    && a.oidc.settings.scopes == settings.scopes
                    && a.oidc
                        .metadata()
                        .is_some_and(|m| same_discovery(&m.discovery, disc))
            })
            .map(|a| Arc::clone(&a.oidc))
    })
}

/// A new client on the shared HTTP client; its keys are fetched now, or in the background
/// when authentik cannot serve them yet.
async fn new_client(
    http: &reqwest::Client,
    settings: ClientSettings,
    disc: Discovery,
    p: &ProxyProvider,
) -> Arc<OidcClient> {
    // One HTTP client (connection pool, root store) serves every provider.
    let o = Arc::new(OidcClient::new(settings, http.clone()));
    if let Err(e) = o.install(disc.clone()).await {
        // Keys could not be fetched now; the client stays not-ready and retries.
        tracing::warn!(provider = %p.name, error = %e, "provider keys not loaded yet");
        o.spawn_install(disc);
    }
    o
}

/// The application of a provider: its settings, session sealer, extras and OIDC client.
fn application(
    p: &ProxyProvider,
    spec: AppSpec,
    oidc: Arc<OidcClient>,
    upstream: Option<ProxyTo>,
) -> Arc<Application> {
    let secret = p
        .cookie_secret
        .clone()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| p.client_secret.clone());
    let basic_auth = p.basic_auth_enabled.then(|| {
        (
            p.basic_auth_user_attribute.clone().unwrap_or_default(),
            p.basic_auth_password_attribute.clone().unwrap_or_default(),
        )
    });
    Arc::new(Application {
        metrics: crate::state::metrics::host_metrics(&spec.host_key()),
        site: Site {
            cookie_name: cookie_name(&p.client_id),
            sealer: Arc::new(Sealer::new(secret.as_bytes(), "session")),
            provider_name: p.name.clone(),
            app_slug: p.assigned_application_slug.clone().unwrap_or_default(),
            extras: AppExtras {
                basic_auth,
                bearer_header: true,
                basic_header: true,
                intercept_header_auth: p.intercept_header_auth,
            },
            spec,
        },
        oidc,
        upstream,
    })
}

fn same_discovery(a: &Discovery, b: &Discovery) -> bool {
    a.issuer == b.issuer
        && a.authorization_endpoint == b.authorization_endpoint
        && a.token_endpoint == b.token_endpoint
        && a.userinfo_endpoint == b.userinfo_endpoint
        && a.introspection_endpoint == b.introspection_endpoint
        && a.revocation_endpoint == b.revocation_endpoint
        && a.end_session_endpoint == b.end_session_endpoint
        && a.jwks_uri == b.jwks_uri
}
