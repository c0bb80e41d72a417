//! The forward-auth check (`/auth/nginx`, `/auth/traefik`, `/auth/caddy`, `/auth/envoy`): the
//! session from the cookie (or an `Authorization` header) checked against the provider's cached
//! introspection, renewed when due, then the pure `decide` and its response. The only hot path
//! of the outpost. It neither parses forwarding headers (`core::request` did) nor writes
//! response bytes (`http::respond` does).

use std::net::SocketAddr;
use std::sync::Arc;

use http::header::{AUTHORIZATION, COOKIE, HeaderMap, PROXY_AUTHORIZATION, USER_AGENT};
use http::request::Parts;
use http::{Response, StatusCode};
use url::Url;

use super::login::{callback, start_login};
use super::sign_out::sign_out;
use super::{Ctx, Signature, forbidden, signature};
use crate::core::decide::{Decision, SessionCheck, decide};
use crate::core::identity::Identity;
use crate::core::identity_headers::{Prepared, identity_headers};
use crate::core::paths::Flavour;
use crate::core::redirect::RedirectTarget;
use crate::core::request::{AuthRequest, header_str};
use crate::core::session::{
    CookieState, Session, SessionCookies, clear_session_cookies, open_session,
    read_session_cookies, session_set_cookies,
};
use crate::core::token::{MAX_CREDENTIAL_LEN, token_key, unix_now};
use crate::http::respond::{self, Body};
use crate::provider::{HeaderIdentity, OidcError, RefreshOutcome};
use crate::state::application::Application;
use crate::state::memo::Opened;
use crate::state::outpost::Runtime;

/// The forward-auth check.
pub(super) async fn auth(
    ctx: &Ctx<'_>,
    app: &Arc<Application>,
    parts: &Parts,
    req: &AuthRequest<'_>,
) -> Response<Body> {
    if let Some((sig, query)) = forwarded_signature(req) {
        return match sig {
            Signature::Callback => Box::pin(callback(ctx, app, &parts.headers, query)).await,
            Signature::Logout => Box::pin(sign_out(app, &parts.headers)).await,
        };
    }
    let cookies = read_session_cookies(&parts.headers, &app.cookie_name);
    let now = unix_now();
    let check = check_session(ctx, app, &parts.headers, &cookies, now).await;
    verdict(ctx, app, parts, req, &cookies, check, now)
}

/// The forward-auth check when nothing needs waiting for, as it is for a session checked
/// before: no callback or sign-out signature in the original URL, and the session memo and the
/// provider's caches know all it needs ([`check_session_now`]). `None`: [`auth`] must run.
pub(super) fn auth_now(
    ctx: &Ctx<'_>,
    app: &Arc<Application>,
    parts: &Parts,
    req: &AuthRequest<'_>,
) -> Option<Response<Body>> {
    if forwarded_signature(req).is_some() {
        return None;
    }
    let cookies = read_session_cookies(&parts.headers, &app.cookie_name);
    let now = unix_now();
    let check = check_session_now(ctx, app, &parts.headers, &cookies, now)?;
    Some(verdict(ctx, app, parts, req, &cookies, check, now))
}

/// The answer to a check once its session is known: `decide`, then its response.
fn verdict(
    ctx: &Ctx<'_>,
    app: &Arc<Application>,
    parts: &Parts,
    req: &AuthRequest<'_>,
    cookies: &SessionCookies<'_>,
    check: SessionCheck,
    now: i64,
) -> Response<Body> {
    let decision = decide(req, &check, &app.spec, now);
    let name = app.spec.name.as_str();
    let mut resp = match (&decision, &check) {
        (Decision::Allow, SessionCheck::Valid { .. }) => {
            return allow(ctx, app, parts, cookies, &check, now);
        }
        (Decision::Allow, _) => respond::unauthorized(),
        (Decision::Anonymous, _) => respond::empty(StatusCode::OK),
        (Decision::Login, _) => login(app, parts, req),
        (Decision::Forbidden, SessionCheck::Valid { session, .. }) => {
            return forbidden(ctx, app, &session.identity.username);
        }
        (Decision::Forbidden, _) => respond::unauthorized(),
        (Decision::Unavailable, _) => respond::unavailable(
            &app.oidc
                .not_ready_reason()
                .unwrap_or_else(|| "provider error".into()),
        ),
        (Decision::Misconfigured, _) => misconfigured(ctx, app, parts, req.flavour),
    };
    if matches!(check, SessionCheck::Invalid) {
        respond::add_cookies(&mut resp, clear_session_cookies(app, cookies.chunks_sent));
    }
    ctx.logged(resp, name, outcome(decision), "")
}

/// A callback or sign-out signature in the original URL's query (Traefik and Caddy send
/// every request of the app, callbacks included, to the check), with the query to use.
fn forwarded_signature<'r>(req: &'r AuthRequest<'_>) -> Option<(Signature, &'r str)> {
    if !matches!(req.flavour, Flavour::Traefik | Flavour::Caddy) {
        return None;
    }
    let u = req.original.as_ref().ok()?;
    let sig = signature(u.raw_query().unwrap_or_default())?;
    Some((sig, u.url().and_then(Url::query).unwrap_or_default()))
}

/// `200` with the identity headers of a live session (`check` is `Valid`), storing the
/// session again when it was renewed.
fn allow(
    ctx: &Ctx<'_>,
    app: &Application,
    parts: &Parts,
    cookies: &SessionCookies<'_>,
    check: &SessionCheck,
    now: i64,
) -> Response<Body> {
    let SessionCheck::Valid {
        session,
        renewed,
        prepared,
    } = check
    else {
        return respond::unauthorized();
    };
    let built;
    let prepared = match prepared {
        Some(p) => p.as_ref(),
        None => {
            built = prepare(ctx.rt, app, session, None);
            &built
        }
    };
    // A renewed session is stored again. The prepared cookies do unless the browser sent
    // more chunks than they set (the extra ones must be expired). A remembered cookie's
    // Max-Age counts from when it was built (at most the header cache TTL ago), so the
    // browser may keep it that much longer; the session inside still ends at its own expiry.
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
    ctx.logged(r, &app.spec.name, "allow", &session.identity.username)
}

/// Not authenticated: `401` for nginx (its config sends browsers to `/start`) and for API
/// clients; other proxies' browsers go straight to the login, back to where they were.
fn login(app: &Application, parts: &Parts, req: &AuthRequest<'_>) -> Response<Body> {
    if req.flavour == Flavour::Nginx || !req.navigation {
        return respond::unauthorized();
    }
    let target = req
        .original
        .as_ref()
        .ok()
        .and_then(|u| u.url())
        .and_then(|u| RedirectTarget::check(u.clone(), &app.spec))
        .unwrap_or_else(|| RedirectTarget::home(&app.spec));
    start_login(app, &parts.headers, target, 0)
}

/// `500` for a proxy that sent no usable original URL, logged and reported to authentik.
fn misconfigured(
    ctx: &Ctx<'_>,
    app: &Application,
    parts: &Parts,
    flavour: Flavour,
) -> Response<Body> {
    let name = app.spec.name.as_str();
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

/// The outcome a decision is logged as.
fn outcome(decision: Decision) -> &'static str {
    match decision {
        Decision::Allow => "allow",
        Decision::Anonymous => "skip",
        Decision::Login => "unauthenticated",
        Decision::Forbidden => "forbidden",
        Decision::Unavailable => "unavailable",
        Decision::Misconfigured => "misconfigured",
    }
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
        Flavour::Proxy => "ak-outpost",
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
pub(super) async fn check_session(
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
    let Some(authz) = accepted_authorization(app, headers) else {
        return from_cookie;
    };
    let header = HeaderAuth::new(ctx, app, authz);
    let found = app
        .oidc
        .header_auth_keyed(header.key, authz, app.extras.basic_header)
        .await;
    header_session(ctx, app, header, found, from_cookie, now)
}

/// [`check_session`] without waiting: its verdict when the session memo and the provider's
/// caches have all it needs, `None` when a provider call, a renewal or opening the cookie
/// may be needed (then `check_session` runs in full).
fn check_session_now(
    ctx: &Ctx<'_>,
    app: &Arc<Application>,
    headers: &HeaderMap,
    cookies: &SessionCookies<'_>,
    now: i64,
) -> Option<SessionCheck> {
    let from_cookie = cookie_session_now(ctx, app, cookies, now)?;
    if matches!(from_cookie, SessionCheck::Valid { .. }) {
        return Some(from_cookie);
    }
    let Some(authz) = accepted_authorization(app, headers) else {
        return Some(from_cookie);
    };
    let header = HeaderAuth::new(ctx, app, authz);
    let found = app.oidc.cached_header_auth(header.key)?;
    Some(header_session(
        ctx,
        app,
        header,
        Ok(found),
        from_cookie,
        now,
    ))
}

/// The `Authorization` value, if it is of a kind the app accepts (Bearer, Basic) and no longer
/// than any real credential.
fn accepted_authorization<'h>(app: &Application, headers: &'h HeaderMap) -> Option<&'h str> {
    let authz = header_str(headers, AUTHORIZATION).filter(|a| a.len() <= MAX_CREDENTIAL_LEN)?;
    let bearer = authz.len() > 7 && authz[..7].eq_ignore_ascii_case("bearer ");
    (bearer && app.extras.bearer_header || !bearer && app.extras.basic_header).then_some(authz)
}

/// An `Authorization` value being checked: the value, its cache key, and what the header
/// memo remembers of it.
struct HeaderAuth<'a> {
    value: &'a str,
    key: [u8; 32],
    remembered: Option<Arc<Opened>>,
}

impl<'a> HeaderAuth<'a> {
    /// A remembered header already knows its cache key: no hashing of the token per request.
    fn new(ctx: &Ctx<'_>, app: &Arc<Application>, value: &'a str) -> HeaderAuth<'a> {
        let remembered = ctx.rt.header_memo.get(app, value);
        let key = remembered
            .as_ref()
            .map_or_else(|| token_key(value), |hit| hit.token_key);
        HeaderAuth {
            value,
            key,
            remembered,
        }
    }
}

/// The session the provider's answer on an `Authorization` value makes: the remembered one
/// when the answer is the same cached one it was built from, a new one (remembered) for a
/// new answer; `from_cookie` when the header authenticates nobody (or an ended provider
/// session), and unverifiable instead of "no session" when the provider could not be asked.
fn header_session(
    ctx: &Ctx<'_>,
    app: &Arc<Application>,
    header: HeaderAuth<'_>,
    found: Result<Option<Arc<HeaderIdentity>>, Arc<OidcError>>,
    from_cookie: SessionCheck,
    now: i64,
) -> SessionCheck {
    let h = match found {
        Ok(Some(h)) if !is_ended(ctx, &h.identity) => h,
        Ok(_) => return from_cookie,
        Err(e) => {
            tracing::warn!(error = %e, "header authentication failed");
            return match from_cookie {
                SessionCheck::None => SessionCheck::Unverifiable,
                other => other,
            };
        }
    };
    // The same header as before, answered by the same cached upstream check: reuse the
    // session, headers and cookie built then.
    if let Some(hit) = header.remembered
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
        header.value,
        Some(h),
        Arc::clone(&session),
        header.key,
        Arc::clone(&prepared),
    );
    SessionCheck::Valid {
        session,
        renewed: true,
        prepared: Some(prepared),
    }
}

/// Whether the provider ended the session this identity belongs to.
fn is_ended(ctx: &Ctx<'_>, identity: &Identity) -> bool {
    identity
        .sid
        .as_deref()
        .is_some_and(|sid| ctx.outpost.is_ended(sid))
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

/// What the session memo knows of a request's cookie.
enum Remembered {
    /// The verdict, without waiting: no cookie, or a cookie opened before whose token has a
    /// current cached answer.
    Answer(SessionCheck),
    /// A cookie opened before whose token's cached answer is due: the provider is asked (or
    /// the outage grace applies) without opening the cookie again.
    Recheck(Arc<Opened>),
    /// Not remembered, or expired, ended or due for renewal: the cookie must be opened.
    Open,
}

/// What the session memo knows of the request's cookie: what both [`cookie_session_now`] and
/// [`cookie_session`] start from, so the two cannot answer differently.
fn remembered_cookie(
    ctx: &Ctx<'_>,
    app: &Arc<Application>,
    cookies: &SessionCookies<'_>,
    now: i64,
) -> Remembered {
    let Some(value) = cookies.value.as_deref() else {
        return Remembered::Answer(SessionCheck::None);
    };
    let Some(hit) = ctx.rt.memo.get(app, value) else {
        return Remembered::Open;
    };
    let s = &hit.session;
    if s.expires_at <= now || s.needs_renewal(now) || is_ended(ctx, &s.identity) {
        return Remembered::Open;
    }
    match app.oidc.cached_token_answer(hit.token_key, now) {
        Some(live) => Remembered::Answer(token_verdict(Ok(live), || remembered_valid(&hit))),
        None => Remembered::Recheck(hit),
    }
}

/// A remembered session, valid.
fn remembered_valid(hit: &Opened) -> SessionCheck {
    SessionCheck::Valid {
        session: Arc::clone(&hit.session),
        renewed: false,
        prepared: Some(Arc::clone(&hit.prepared)),
    }
}

/// The cookie's verdict without waiting ([`Remembered::Answer`]); `None`: [`cookie_session`]
/// must ask the provider or open the cookie.
fn cookie_session_now(
    ctx: &Ctx<'_>,
    app: &Arc<Application>,
    cookies: &SessionCookies<'_>,
    now: i64,
) -> Option<SessionCheck> {
    match remembered_cookie(ctx, app, cookies, now) {
        Remembered::Answer(check) => Some(check),
        Remembered::Recheck(_) | Remembered::Open => None,
    }
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
    match remembered_cookie(ctx, app, cookies, now) {
        Remembered::Answer(check) => return check,
        Remembered::Recheck(hit) => {
            let s = &hit.session;
            let live = app
                .oidc
                .check_token_keyed(hit.token_key, &s.access_token, s.access_expires_at, now)
                .await;
            return token_verdict(live, || remembered_valid(&hit));
        }
        Remembered::Open => {}
    }
    let Some(value) = cookies.value.as_deref() else {
        return SessionCheck::None;
    };
    let mut session = match open_session(app, cookies, now) {
        CookieState::Absent => return SessionCheck::None,
        CookieState::Invalid => return SessionCheck::Invalid,
        CookieState::Present(s) => s,
    };
    if is_ended(ctx, &session.identity) {
        return SessionCheck::Invalid;
    }
    if session.needs_renewal(now) {
        // Boxed, like every token call: the check's future, which hyper keeps per
        // connection, holds no renewal state.
        match Box::pin(renew(app, &mut session, now)).await {
            Renewal::Renewed => {
                return SessionCheck::Valid {
                    session: Arc::new(*session),
                    renewed: true,
                    prepared: None,
                };
            }
            Renewal::Over(check) => return check,
            Renewal::Unchanged => {}
        }
    }
    let key = token_key(&session.access_token);
    let live = app
        .oidc
        .check_token_keyed(key, &session.access_token, session.access_expires_at, now)
        .await;
    token_verdict(live, || {
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
    })
}

/// What the provider's answer on an access token means: `valid` when it is live.
fn token_verdict(
    live: Result<bool, Arc<OidcError>>,
    valid: impl FnOnce() -> SessionCheck,
) -> SessionCheck {
    match live {
        Ok(true) => valid(),
        Ok(false) => SessionCheck::Invalid,
        Err(e) => {
            tracing::warn!(error = %e, "token check failed");
            SessionCheck::Unverifiable
        }
    }
}

/// How renewing a session's tokens went.
enum Renewal {
    /// New tokens are in the session.
    Renewed,
    /// The check ends here with this verdict.
    Over(SessionCheck),
    /// No renewal (no refresh token, or the provider failed) but the access token still
    /// lives: the usual token check decides.
    Unchanged,
}

/// Renews the session's tokens with its refresh token.
async fn renew(app: &Application, session: &mut Session, now: i64) -> Renewal {
    let Some(refresh_token) = session.refresh_token.clone() else {
        return if session.access_expires_at <= now {
            Renewal::Over(SessionCheck::Invalid)
        } else {
            Renewal::Unchanged
        };
    };
    match app.oidc.refresh(&refresh_token).await {
        Ok(RefreshOutcome::Renewed(t)) => {
            session.access_token = t.access_token;
            session.access_expires_at = t.expires_at;
            session.access_issued_at = now;
            session.refresh_token = t.refresh_token;
            if t.id_token.is_some() {
                session.id_token = t.id_token;
            }
            session.shrink_to_fit();
            Renewal::Renewed
        }
        Ok(RefreshOutcome::Rejected) => Renewal::Over(SessionCheck::Invalid),
        Err(e) => {
            tracing::warn!(error = %e, "token renewal failed");
            if session.access_expires_at <= now {
                Renewal::Over(SessionCheck::Unverifiable)
            } else {
                Renewal::Unchanged
            }
        }
    }
}
