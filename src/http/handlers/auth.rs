//! The forward-auth check (`/auth/nginx`, `/auth/traefik`, `/auth/caddy`, `/auth/envoy`):
//! the session from the cookie (or an `Authorization` header) checked against the provider's
//! cached introspection, renewed when due, then the pure `decide` and its response. The only
//! hot path of the outpost.

use std::net::SocketAddr;
use std::sync::Arc;

use http::header::{AUTHORIZATION, COOKIE, HeaderMap, PROXY_AUTHORIZATION, USER_AGENT};
use http::request::Parts;
use http::{Response, StatusCode};
use url::Url;

use super::login::{callback, start_login};
use super::sign_out::sign_out;
use super::{Ctx, Signature, signature};
use crate::core::decide::{Decision, SessionCheck, decide};
use crate::core::identity_headers::{Prepared, identity_headers};
use crate::core::paths::Flavour;
use crate::core::redirect::RedirectTarget;
use crate::core::request::{AuthRequest, header_str};
use crate::core::session::{
    CookieState, Session, SessionCookies, clear_session_cookies, open_session,
    read_session_cookies, session_set_cookies,
};
use crate::core::token::{token_key, unix_now};
use crate::http::respond::{self, Body};
use crate::provider::RefreshOutcome;
use crate::state::application::Application;
use crate::state::outpost::Runtime;

/// The forward-auth check.
pub(super) async fn auth(
    ctx: &Ctx<'_>,
    app: &Arc<Application>,
    parts: &Parts,
    req: AuthRequest<'_>,
) -> Response<Body> {
    let flavour = req.flavour;
    if matches!(flavour, Flavour::Traefik | Flavour::Caddy)
        && let Ok(u) = &req.original
        && let Some(sig) = signature(u.raw_query().unwrap_or_default())
    {
        match sig {
            Signature::Callback => {
                let query = u.url().and_then(Url::query).unwrap_or_default();
                return Box::pin(callback(ctx, app, &parts.headers, query)).await;
            }
            Signature::Logout => return Box::pin(sign_out(app, &parts.headers)).await,
        }
    }
    let cookies = read_session_cookies(&parts.headers, &app.cookie_name);
    let now = unix_now();
    let check = check_session(ctx, app, &parts.headers, &cookies, now).await;
    let decision = decide(&req, &check, &app.spec, now);
    let name = app.spec.name.as_str();
    let mut resp = match (&decision, &check) {
        (
            Decision::Allow,
            SessionCheck::Valid {
                session,
                renewed,
                prepared,
            },
        ) => {
            let built;
            let prepared = match prepared {
                Some(p) => p.as_ref(),
                None => {
                    built = prepare(ctx.rt, app, session, None);
                    &built
                }
            };
            // A renewed session is stored again. The prepared cookies do unless the browser
            // sent more chunks than they set (the extra ones must be expired). A remembered
            // cookie's Max-Age counts from when it was built (at most the header cache TTL
            // ago), so the browser may keep it that much longer; the session inside still
            // ends at its own expiry.
            let stored = prepared
                .with_cookies
                .as_ref()
                .filter(|(_, n)| *renewed && cookies.chunks_sent <= *n)
                .map(|(h, _)| h);
            let ua = parts.headers.get(USER_AGENT);
            let mut r = respond::allow(stored.unwrap_or(&prepared.headers), ua);
            if *renewed && stored.is_none() {
                // The session cookie must be the first Set-Cookie: nginx copies only that one.
                respond::add_cookies(
                    &mut r,
                    session_set_cookies(app, session, now, cookies.chunks_sent),
                );
            }
            return ctx.logged(r, name, "allow", &session.identity.username);
        }
        (Decision::Allow, _) => respond::unauthorized(),
        (Decision::Anonymous, _) => respond::empty(StatusCode::OK),
        (Decision::Login, _) => {
            if flavour == Flavour::Nginx || !req.navigation {
                respond::unauthorized()
            } else {
                let target = req
                    .original
                    .as_ref()
                    .ok()
                    .and_then(|u| u.url())
                    .and_then(|u| RedirectTarget::check(u.clone(), &app.spec))
                    .unwrap_or_else(|| RedirectTarget::home(&app.spec));
                start_login(app, &parts.headers, target, 0)
            }
        }
        (Decision::Forbidden, SessionCheck::Valid { session, .. }) => {
            let user = session.identity.username.clone();
            let r = respond::error_page(
                StatusCode::FORBIDDEN,
                "Access denied",
                &format!(
                    "You are signed in as {user}, but your account is not allowed to use {name}."
                ),
            );
            return ctx.logged(r, name, "forbidden", &user);
        }
        (Decision::Forbidden, _) => respond::unauthorized(),
        (Decision::Unavailable, _) => respond::unavailable(
            &app.oidc
                .not_ready_reason()
                .unwrap_or_else(|| "provider error".into()),
        ),
        (Decision::Misconfigured, _) => {
            tracing::warn!(
                app = name,
                flavour = flavour.as_str(),
                "reverse proxy sent no usable original URL (X-Original-URL / X-Forwarded-*)"
            );
            ctx.outpost.report(name, || {
                misconfiguration_event(&ctx.rt.settings.outpost_name, app, parts, flavour, ctx.peer)
            });
            respond::text(StatusCode::INTERNAL_SERVER_ERROR, "configuration error")
        }
    };
    if matches!(check, SessionCheck::Invalid) {
        respond::add_cookies(&mut resp, clear_session_cookies(app, cookies.chunks_sent));
    }
    let outcome = match decision {
        Decision::Allow => "allow",
        Decision::Anonymous => "skip",
        Decision::Login => "unauthenticated",
        Decision::Forbidden => "forbidden",
        Decision::Unavailable => "unavailable",
        Decision::Misconfigured => "misconfigured",
    };
    ctx.logged(resp, name, outcome, "")
}

/// authentik's `configuration_error` event for a check whose original URL is unknown. The
/// request's headers go along (first value of each, as authentik sends them) except
/// credentials, which are replaced: the event log is no place for session cookies.
fn misconfiguration_event(
    outpost_name: &str,
    app: &Application,
    parts: &Parts,
    flavour: Flavour,
    peer: SocketAddr,
) -> serde_json::Value {
    let proxy = match flavour {
        Flavour::Nginx => "nginx",
        Flavour::Traefik => "Traefik",
        Flavour::Caddy => "Caddy",
        Flavour::Envoy => "Envoy",
    };
    let mut headers = serde_json::Map::new();
    for name in parts.headers.keys() {
        let secret = [COOKIE, AUTHORIZATION, PROXY_AUTHORIZATION].contains(name);
        let value = match parts.headers.get(name).map(|v| v.to_str()) {
            _ if secret => "(redacted)".to_string(),
            Some(Ok(v)) => v.to_string(),
            _ => "(not text)".to_string(),
        };
        headers.insert(name.as_str().to_string(), value.into());
    }
    serde_json::json!({
        "action": "configuration_error",
        "app": "authentik.providers.proxy",
        "client_ip": peer.ip().to_string(),
        "context": {
            "message": format!(
                "Outpost {outpost_name} (Provider {}) failed to detect a forward URL from {proxy}",
                app.provider_name
            ),
            "provider": app.provider_name,
            "outpost": outpost_name,
            "url": parts.uri.to_string(),
            "headers": headers,
        },
    })
}

/// Finds the request's session: the cookie first, then (if the app accepts them) an
/// `Authorization` header, which on success yields a new session to store in a cookie.
async fn check_session(
    ctx: &Ctx<'_>,
    app: &Arc<Application>,
    headers: &HeaderMap,
    cookies: &SessionCookies<'_>,
    now: i64,
) -> SessionCheck {
    let from_cookie = cookie_session(ctx, app, cookies, now).await;
    if matches!(from_cookie, SessionCheck::Valid { .. }) {
        return from_cookie;
    }
    let Some(authz) = header_str(headers, AUTHORIZATION) else {
        return from_cookie;
    };
    let bearer = authz.len() > 7 && authz[..7].eq_ignore_ascii_case("bearer ");
    if !(bearer && app.extras.bearer_header || !bearer && app.extras.basic_header) {
        return from_cookie;
    }
    // A remembered header already knows its cache key: no hashing of the token per request.
    let remembered = ctx.rt.header_memo.get(app, authz);
    let key = remembered
        .as_ref()
        .map_or_else(|| token_key(authz), |hit| hit.token_key);
    match app
        .oidc
        .header_auth_keyed(key, authz, app.extras.basic_header)
        .await
    {
        Ok(Some(h)) => {
            if h.identity
                .sid
                .as_deref()
                .is_some_and(|sid| ctx.outpost.is_ended(sid))
            {
                return from_cookie;
            }
            // The same header as before, answered by the same cached upstream check: reuse
            // the session, headers and cookie built then.
            if let Some(hit) = remembered
                && hit.source.as_ref().is_some_and(|s| Arc::ptr_eq(s, &h))
            {
                return SessionCheck::Valid {
                    session: Arc::clone(&hit.session),
                    renewed: true,
                    prepared: Some(Arc::clone(&hit.prepared)),
                };
            }
            let session = Arc::new(Session {
                version: 1,
                identity: h.identity.clone(),
                access_token: h.token.clone(),
                access_expires_at: h.expires_at,
                access_issued_at: now,
                refresh_token: None,
                id_token: None,
                expires_at: h.expires_at,
            });
            let prepared = Arc::new(prepare(ctx.rt, app, &session, Some(now)));
            ctx.rt.header_memo.put(
                app,
                authz,
                Some(h),
                Arc::clone(&session),
                key,
                Arc::clone(&prepared),
            );
            SessionCheck::Valid {
                session,
                renewed: true,
                prepared: Some(prepared),
            }
        }
        Ok(None) => from_cookie,
        Err(e) => {
            tracing::warn!(error = %e, "header authentication failed");
            match from_cookie {
                SessionCheck::None => SessionCheck::Unverifiable,
                other => other,
            }
        }
    }
}

/// The response parts for `session`: its identity headers and, with `store_at` (the time
/// now), the cookie that stores it.
pub(super) fn prepare(
    rt: &Runtime,
    app: &Application,
    session: &Session,
    store_at: Option<i64>,
) -> Prepared {
    Prepared::new(
        identity_headers(
            app,
            app.oidc.jwks_header(),
            session,
            &rt.settings.outpost_name,
            rt.settings.send_jwt_header,
        ),
        store_at.map(|now| session_set_cookies(app, session, now, 0)),
    )
}

/// Opens the session cookie and checks it upstream: renews tokens when they are about to
/// expire, otherwise asks the (cached) introspection whether the access token is still live.
/// A cookie opened before comes from the memo, which skips the unsealing; every other check
/// still runs.
async fn cookie_session(
    ctx: &Ctx<'_>,
    app: &Arc<Application>,
    cookies: &SessionCookies<'_>,
    now: i64,
) -> SessionCheck {
    let Some(value) = cookies.value.as_deref() else {
        return SessionCheck::None;
    };
    if let Some(hit) = ctx.rt.memo.get(app, value) {
        let s = &hit.session;
        let ended = || {
            s.identity
                .sid
                .as_deref()
                .is_some_and(|sid| ctx.outpost.is_ended(sid))
        };
        // Expired, ended or due for renewal: the full path below handles it.
        if s.expires_at > now && !s.needs_renewal(now) && !ended() {
            return match app
                .oidc
                .check_token_keyed(hit.token_key, &s.access_token, s.access_expires_at, now)
                .await
            {
                Ok(true) => SessionCheck::Valid {
                    session: Arc::clone(&hit.session),
                    renewed: false,
                    prepared: Some(Arc::clone(&hit.prepared)),
                },
                Ok(false) => SessionCheck::Invalid,
                Err(e) => {
                    tracing::warn!(error = %e, "token check failed");
                    SessionCheck::Unverifiable
                }
            };
        }
    }
    let mut session = match open_session(app, cookies, now) {
        CookieState::Absent => return SessionCheck::None,
        CookieState::Invalid => return SessionCheck::Invalid,
        CookieState::Present(s) => s,
    };
    if session
        .identity
        .sid
        .as_deref()
        .is_some_and(|sid| ctx.outpost.is_ended(sid))
    {
        return SessionCheck::Invalid;
    }
    if session.needs_renewal(now) {
        match session.refresh_token.clone() {
            Some(rt) => match Box::pin(app.oidc.refresh(&rt)).await {
                Ok(RefreshOutcome::Renewed(t)) => {
                    session.access_token = t.access_token;
                    session.access_expires_at = t.expires_at;
                    session.access_issued_at = now;
                    session.refresh_token = t.refresh_token;
                    if t.id_token.is_some() {
                        session.id_token = t.id_token;
                    }
                    session.shrink_to_fit();
                    return SessionCheck::Valid {
                        session: Arc::new(*session),
                        renewed: true,
                        prepared: None,
                    };
                }
                Ok(RefreshOutcome::Rejected) => return SessionCheck::Invalid,
                Err(e) => {
                    tracing::warn!(error = %e, "token renewal failed");
                    if session.access_expires_at <= now {
                        return SessionCheck::Unverifiable;
                    }
                }
            },
            None if session.access_expires_at <= now => return SessionCheck::Invalid,
            None => {}
        }
    }
    let key = token_key(&session.access_token);
    match app
        .oidc
        .check_token_keyed(key, &session.access_token, session.access_expires_at, now)
        .await
    {
        Ok(true) => {
            let session = Arc::new(*session);
            let prepared = Arc::new(prepare(ctx.rt, app, &session, None));
            // Only a session that needs nothing but the token check is remembered.
            if !session.needs_renewal(now) {
                ctx.rt.memo.put(
                    app,
                    value,
                    None,
                    Arc::clone(&session),
                    key,
                    Arc::clone(&prepared),
                );
            }
            SessionCheck::Valid {
                session,
                renewed: false,
                prepared: Some(prepared),
            }
        }
        Ok(false) => SessionCheck::Invalid,
        Err(e) => {
            tracing::warn!(error = %e, "token check failed");
            SessionCheck::Unverifiable
        }
    }
}
