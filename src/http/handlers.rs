//! Endpoint handlers. Each one parses its input, does the I/O it needs (session check, token
//! calls), and hands the outcome to `respond`; the forward-auth verdict itself comes from the
//! pure `decide`.

use std::net::SocketAddr;
use std::sync::Arc;

use http::header::{AUTHORIZATION, COOKIE, HeaderMap, PROXY_AUTHORIZATION, USER_AGENT};
use http::request::Parts;
use http::{Response, StatusCode};
use url::Url;

use crate::core::app::Mode;
use crate::core::decide::{Decision, SessionCheck, decide};
use crate::core::identity::Identity;
use crate::core::identity_headers::{Prepared, identity_headers};
use crate::core::login::{
    BINDING_TTL_SECS, LoginState, MAX_ATTEMPTS, StateError, binding_cookie_name, binding_hash,
    is_binding_value,
};
use crate::core::paths::Flavour;
use crate::core::paths::{CALLBACK_SIGNATURE, LOGOUT_SIGNATURE, Route, START_PATH};
use crate::core::redirect::{RedirectTarget, rd_from_query};
use crate::core::request::{AuthRequest, header_str, request_host};
use crate::core::session::{
    CookieState, Session, SessionCookies, clear_session_cookies, cookie_header, open_session,
    read_cookie, read_session_cookies, session_set_cookies,
};
use crate::core::token::{pkce_pair, random_token, token_key, unix_now};
use crate::http::respond::{self, Body};
use crate::provider::{OidcError, RefreshOutcome};
use crate::state::application::Application;
use crate::state::metrics::HostMetrics;
use crate::state::outpost::{Outpost, Runtime};

/// What the request log line reports, attached to the response as an extension.
#[derive(Debug, Clone, Default)]
pub struct LogInfo {
    pub app: String,
    pub outcome: &'static str,
    pub user: String,
}

/// Per-request context.
struct Ctx<'a> {
    outpost: &'a Outpost,
    rt: &'a Runtime,
    /// Whether the request line will be logged (so [`LogInfo`] is worth building).
    log: bool,
    /// The TCP peer.
    peer: SocketAddr,
}

impl Ctx<'_> {
    /// [`with_log`] when the request line will be logged; forward-auth checks skip the
    /// allocation otherwise.
    fn logged(
        &self,
        r: Response<Body>,
        app: &str,
        outcome: &'static str,
        user: &str,
    ) -> Response<Body> {
        if self.log {
            with_log(r, app, outcome, user)
        } else {
            r
        }
    }
}

/// Answers one request on the outpost listener (HTTP or HTTPS). `answered_by` is set to the histograms of
/// the application the request was for, once known.
pub async fn handle(
    outpost: &Outpost,
    parts: Parts,
    peer: SocketAddr,
    answered_by: &mut Option<&'static HostMetrics>,
) -> Response<Body> {
    let route = Route::from_path(parts.uri.path());
    match route {
        Route::Ping => return respond::empty(StatusCode::NO_CONTENT),
        Route::Ready => return ready(outpost),
        _ => {}
    }
    let rt = outpost.runtime();
    if !rt.loaded {
        return respond::unavailable("the outpost has not received its configuration yet");
    }
    let trusted = rt.settings.is_trusted(peer.ip());
    let flavour = match route {
        Route::Auth(f) => Some(f),
        _ => None,
    };
    // A check is parsed once, here: its original URL also names the application.
    let req = flavour.map(|f| AuthRequest::parse(f, &parts, trusted));
    let host = match &req {
        Some(r) => r.host(&parts, trusted),
        None => request_host(&parts, trusted, None),
    }
    .unwrap_or_default();
    let Some(app) = rt.apps.lookup(host).cloned() else {
        tracing::debug!(host, "no application for this host");
        return with_log(respond::no_app(host), "", "no_app", "");
    };
    *answered_by = Some(app.metrics);
    if app.spec.mode == Mode::Proxy {
        return with_log(
            respond::error_page(
                StatusCode::NOT_IMPLEMENTED,
                "Proxy mode is not supported",
                &format!(
                    "The provider for {host} is in proxy mode, where the outpost itself forwards requests to the application. ak-outpost only does forward auth: switch the provider to \"Forward auth (single application)\" or \"Forward auth (domain level)\" and put your reverse proxy in front of the app."
                ),
            ),
            &app.spec.name,
            "proxy_mode",
            "",
        );
    }
    let ctx = Ctx {
        outpost,
        rt: &rt,
        log: rt.settings.log_requests
            || tracing::enabled!(target: "ak_outpost::http::server", tracing::Level::DEBUG),
        peer,
    };
    let query = parts.uri.query().unwrap_or_default();
    // Like authentik, a callback or sign-out signature in the query wins over the path, except
    // on the forward-auth checks, whose own query is not the user's.
    if !matches!(
        route,
        Route::Auth(Flavour::Nginx | Flavour::Traefik | Flavour::Caddy)
    ) {
        match signature(query) {
            Some(Signature::Callback) => {
                return Box::pin(callback(&ctx, &app, &parts.headers, query)).await;
            }
            Some(Signature::Logout) => return Box::pin(sign_out(&app, &parts.headers)).await,
            None => {}
        }
    }
    match route {
        Route::Start => start(&app, &parts.headers, query),
        // The login and logout futures (token calls) are boxed: the check's future, which
        // hyper keeps per connection, stays small.
        Route::Callback => Box::pin(callback(&ctx, &app, &parts.headers, query)).await,
        Route::SignOut => Box::pin(sign_out(&app, &parts.headers)).await,
        Route::Auth(_) => match req {
            Some(req) => auth(&ctx, &app, &parts, req).await,
            None => respond::text(StatusCode::NOT_FOUND, "404 page not found"),
        },
        _ => respond::text(StatusCode::NOT_FOUND, "404 page not found"),
    }
}

fn with_log(mut r: Response<Body>, app: &str, outcome: &'static str, user: &str) -> Response<Body> {
    r.extensions_mut().insert(LogInfo {
        app: app.to_string(),
        outcome,
        user: user.to_string(),
    });
    r
}

fn ready(outpost: &Outpost) -> Response<Body> {
    match outpost.ready() {
        Ok(()) => respond::text(StatusCode::OK, "ready"),
        Err(reason) => respond::text(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("not ready: {reason}"),
        ),
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Signature {
    Callback,
    Logout,
}

fn signature(query: &str) -> Option<Signature> {
    if query.is_empty() {
        return None;
    }
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        if v.eq_ignore_ascii_case("true") {
            if k == CALLBACK_SIGNATURE {
                return Some(Signature::Callback);
            }
            if k == LOGOUT_SIGNATURE {
                return Some(Signature::Logout);
            }
        }
    }
    None
}

/// The forward-auth check.
async fn auth(
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
fn prepare(rt: &Runtime, app: &Application, session: &Session, store_at: Option<i64>) -> Prepared {
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

/// `/start`: begin a login that returns to `rd`.
fn start(app: &Application, headers: &HeaderMap, query: &str) -> Response<Body> {
    let rd = rd_from_query(query);
    let attempt = url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "attempt")
        .and_then(|(_, v)| v.parse::<u8>().ok())
        .unwrap_or(0)
        .min(MAX_ATTEMPTS);
    let target = RedirectTarget::parse_or_home(rd.as_deref(), &app.spec);
    with_log(
        start_login(app, headers, target, attempt),
        &app.spec.name,
        "start",
        "",
    )
}

fn state_aad(app: &Application) -> Vec<u8> {
    format!("{}/state", app.cookie_name).into_bytes()
}

/// Redirects the browser to the provider, with a fresh sealed state bound to this browser.
fn start_login(
    app: &Application,
    headers: &HeaderMap,
    target: RedirectTarget,
    attempt: u8,
) -> Response<Body> {
    let binding_name = binding_cookie_name(&app.cookie_name);
    // Reuse the browser's binding so logins in several tabs do not undo each other.
    let binding = read_cookie(headers, &binding_name)
        .filter(|v| is_binding_value(v))
        .map(str::to_string)
        .unwrap_or_else(|| random_token(32));
    let (verifier, challenge) = pkce_pair();
    let state = LoginState {
        id: random_token(16),
        binding: binding_hash(&binding),
        verifier,
        nonce: random_token(16),
        redirect: target.as_str().to_string(),
        issued_at: unix_now(),
        attempt,
    };
    let sealed = state.seal(&app.sealer, &state_aad(app));
    match app
        .oidc
        .authorize_url(&app.spec.redirect_uri, &sealed, &state.nonce, &challenge)
    {
        Ok(url) => {
            let mut r = respond::redirect(url.as_str());
            respond::add_cookies(
                &mut r,
                cookie_header(app, &binding_name, &binding, Some(BINDING_TTL_SECS)),
            );
            r
        }
        Err(e) => respond::unavailable(&e.to_string()),
    }
}

/// Sends the browser back to `/start` after a callback that cannot complete, or gives up
/// with an explanation once it has tried a few times (no endless loops).
fn restart(app: &Application, target: &str, attempt: u8, why: &str) -> Response<Body> {
    tracing::info!(app = %app.spec.name, attempt, reason = why, "restarting login");
    if attempt >= MAX_ATTEMPTS {
        return respond::error_page(
            StatusCode::BAD_REQUEST,
            "Login could not be completed",
            "The login did not complete after several attempts. Please make sure your browser accepts cookies for this site, then open the application again.",
        );
    }
    let target = RedirectTarget::parse_or_home(Some(target), &app.spec);
    let mut u: Url = app.spec.external_host.clone();
    let base = app
        .spec
        .external_host
        .path()
        .trim_end_matches('/')
        .to_string();
    u.set_path(&format!("{base}{START_PATH}"));
    u.query_pairs_mut()
        .append_pair("rd", target.as_str())
        .append_pair("attempt", &attempt.to_string());
    respond::redirect(u.as_str())
}

/// `/callback`: finish the login.
async fn callback(
    ctx: &Ctx<'_>,
    app: &Application,
    headers: &HeaderMap,
    query: &str,
) -> Response<Body> {
    let name = app.spec.name.as_str();
    let mut state_param = None;
    let mut code = None;
    let mut error = None;
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        match k.as_ref() {
            "state" => state_param = Some(v.into_owned()),
            "code" => code = Some(v.into_owned()),
            "error" => error = Some(v.into_owned()),
            _ => {}
        }
    }
    let home = app.spec.external_host.as_str().to_string();
    let now = unix_now();
    let binding = read_cookie(headers, &binding_cookie_name(&app.cookie_name));
    let st = match state_param
        .as_deref()
        .map(|s| LoginState::open(&app.sealer, &state_aad(app), s, binding, now))
    {
        None => {
            return with_log(
                restart(app, &home, MAX_ATTEMPTS - 1, "callback without state"),
                name,
                "restart",
                "",
            );
        }
        Some(Err(StateError::Unreadable)) => {
            return with_log(
                restart(app, &home, MAX_ATTEMPTS - 1, "unreadable state"),
                name,
                "restart",
                "",
            );
        }
        Some(Err(StateError::Expired(st))) => {
            return with_log(
                restart(app, &st.redirect, st.attempt + 1, "state expired"),
                name,
                "restart",
                "",
            );
        }
        Some(Err(StateError::WrongBrowser(st))) => {
            return with_log(
                restart(
                    app,
                    &st.redirect,
                    st.attempt + 1,
                    "login started in another browser or cookie missing",
                ),
                name,
                "restart",
                "",
            );
        }
        Some(Ok(st)) => st,
    };
    if !ctx.outpost.claim_state(&st.id) {
        // A replayed callback: harmless if this browser is already logged in.
        let cookies = read_session_cookies(headers, &app.cookie_name);
        if let CookieState::Present(_) = open_session(app, &cookies, now) {
            return with_log(respond::redirect(&st.redirect), name, "replay", "");
        }
        return with_log(
            restart(app, &st.redirect, st.attempt + 1, "state already used"),
            name,
            "restart",
            "",
        );
    }
    if let Some(err) = error {
        let (status, msg) = if err == "access_denied" {
            (
                StatusCode::FORBIDDEN,
                "The identity provider denied access.".to_string(),
            )
        } else {
            (
                StatusCode::UNAUTHORIZED,
                format!("The identity provider could not log you in ({err})."),
            )
        };
        return with_log(
            respond::error_page(status, "Login failed", &msg),
            name,
            "idp_error",
            "",
        );
    }
    let Some(code) = code else {
        return with_log(
            restart(app, &st.redirect, st.attempt + 1, "callback without code"),
            name,
            "restart",
            "",
        );
    };
    let tokens = match app
        .oidc
        .exchange_code(&code, &app.spec.redirect_uri, &st.verifier)
        .await
    {
        Ok(t) => t,
        Err(OidcError::Rejected(e)) => {
            return with_log(
                restart(
                    app,
                    &st.redirect,
                    st.attempt + 1,
                    &format!("code rejected: {e}"),
                ),
                name,
                "restart",
                "",
            );
        }
        Err(e @ (OidcError::NotReady(_) | OidcError::Transport(_))) => {
            tracing::warn!(app = name, error = %e, "code exchange failed");
            return respond::unavailable(&e.to_string());
        }
        Err(e) => {
            tracing::warn!(app = name, error = %e, "code exchange failed");
            return respond::error_page(
                StatusCode::BAD_GATEWAY,
                "Login failed",
                "The identity provider returned an unexpected answer. Please try again.",
            );
        }
    };
    let Some(id_token) = tokens.id_token.as_deref() else {
        tracing::warn!(
            app = name,
            "provider returned no ID token; is the 'openid' scope granted?"
        );
        return respond::error_page(
            StatusCode::BAD_GATEWAY,
            "Login failed",
            "The identity provider returned no ID token.",
        );
    };
    let claims = match app.oidc.verify_id_token(id_token, Some(&st.nonce)).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(app = name, error = %e, "ID token rejected");
            return with_log(
                restart(app, &st.redirect, st.attempt + 1, "ID token rejected"),
                name,
                "restart",
                "",
            );
        }
    };
    let Some(mut identity) = Identity::from_claims(&claims) else {
        return respond::error_page(
            StatusCode::BAD_GATEWAY,
            "Login failed",
            "The ID token names no subject.",
        );
    };
    match app.oidc.userinfo(&tokens.access_token).await {
        Ok(info) => identity.merge_userinfo(&info),
        Err(e) => tracing::debug!(error = %e, "userinfo not used"),
    }
    let mut session = Session::new(
        identity,
        &tokens,
        now,
        ctx.rt.settings.session_lifetime.as_secs() as i64,
    );
    session.shrink_to_fit();
    let cookies = read_session_cookies(headers, &app.cookie_name);
    let mut r = respond::redirect(&st.redirect);
    respond::add_cookies(
        &mut r,
        session_set_cookies(app, &session, now, cookies.chunks_sent),
    );
    tracing::info!(app = name, user = %session.identity.username, "login");
    with_log(r, name, "login", &session.identity.username)
}

/// `/sign_out`: end the session here and at the provider.
async fn sign_out(app: &Application, headers: &HeaderMap) -> Response<Body> {
    let cookies = read_session_cookies(headers, &app.cookie_name);
    let now = unix_now();
    let mut user = String::new();
    let location = match open_session(app, &cookies, now) {
        CookieState::Present(s) => {
            user = s.identity.username.clone();
            if let Some(rt) = &s.refresh_token {
                app.oidc.revoke(rt, "refresh_token").await;
            }
            app.oidc.revoke(&s.access_token, "access_token").await;
            app.oidc.forget_token(&s.access_token).await;
            app.oidc.end_session_url(s.logout_hint())
        }
        _ => app.oidc.end_session_url(None),
    };
    let location = location
        .map(|u| u.to_string())
        .unwrap_or_else(|| app.spec.external_host.to_string());
    let mut r = respond::redirect(&location);
    respond::add_cookies(&mut r, clear_session_cookies(app, cookies.chunks_sent));
    respond::add_cookies(
        &mut r,
        cookie_header(app, &binding_cookie_name(&app.cookie_name), "", Some(0)),
    );
    with_log(r, &app.spec.name, "sign_out", &user)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures() {
        assert_eq!(
            signature("X-authentik-auth-callback=true&code=1"),
            Some(Signature::Callback)
        );
        assert_eq!(
            signature("a=1&X-authentik-logout=TRUE"),
            Some(Signature::Logout)
        );
        assert_eq!(signature("X-authentik-auth-callback=false"), None);
        assert_eq!(signature(""), None);
    }
}
