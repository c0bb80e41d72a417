//! The login round trip: `/start` (or an unauthenticated browser) goes to the provider with a
//! sealed state bound to this browser; `/callback` checks that state, exchanges the code,
//! verifies the ID token and stores the session cookie. Failures restart the login a bounded
//! number of times, then end on a page, never in a loop.

use http::header::HeaderMap;
use http::{Response, StatusCode};
use url::Url;

use super::{Ctx, with_log};
use crate::core::identity::Identity;
use crate::core::login::{
    BINDING_TTL_SECS, LoginState, MAX_ATTEMPTS, StateError, binding_cookie_name, binding_hash,
    is_binding_value,
};
use crate::core::paths::START_PATH;
use crate::core::redirect::{RedirectTarget, rd_from_query};
use crate::core::session::{
    CookieState, Session, cookie_header, open_session, read_cookie, read_session_cookies,
    session_set_cookies,
};
use crate::core::token::{pkce_pair, random_token, unix_now};
use crate::http::respond::{self, Body};
use crate::provider::OidcError;
use crate::state::application::Application;

/// `/start`: begin a login that returns to `rd`.
pub(super) fn start(app: &Application, headers: &HeaderMap, query: &str) -> Response<Body> {
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
pub(super) fn start_login(
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
pub(super) async fn callback(
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
