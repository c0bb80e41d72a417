//! The login round trip: `/start` (or an unauthenticated browser) goes to the provider with a
//! sealed state bound to this browser (`/start` also expires a session cookie the browser
//! brought); `/callback` checks that state, exchanges the code, verifies the ID token and
//! stores the session cookie, then returns to the state's target, validated again. Failures
//! restart the login a bounded number of times, then end on a page, never in a loop. The state
//! format and its checks are `core::login`'s, the token calls the provider's.

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
    CookieState, Session, clear_session_cookies, cookie_header, open_session, read_cookie,
    read_session_cookies, session_set_cookies,
};
use crate::core::token::{TokenSet, pkce_pair, random_token, unix_now};
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
    let mut r = start_login(app, headers, target, attempt);
    // A sign-in starts logged out: a session cookie the browser brought (perhaps planted by
    // another host, session fixation) is expired with the redirect to the provider, so an
    // abandoned sign-in leaves no session. (Not when the provider is unavailable.)
    let sent = read_session_cookies(headers, &app.cookie_name).chunks_sent;
    if sent > 0 && r.status() == StatusCode::FOUND {
        respond::add_cookies(&mut r, clear_session_cookies(app, sent));
    }
    with_log(r, &app.spec.name, "start", "")
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
    if app.oidc.down_since().is_some() {
        // The provider is known to be down: a page now, not a redirect to a dead login.
        return respond::login_unavailable();
    }
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
    let query = CallbackQuery::parse(query);
    match finish_login(ctx, app, headers, query, unix_now()).await {
        Ok(r) => r,
        Err(failure) => failure.render(app),
    }
}

/// The parameters a provider sends back to the callback.
#[derive(Default)]
struct CallbackQuery {
    state: Option<String>,
    code: Option<String>,
    error: Option<String>,
}

impl CallbackQuery {
    fn parse(query: &str) -> CallbackQuery {
        let mut q = CallbackQuery::default();
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            match k.as_ref() {
                "state" => q.state = Some(v.into_owned()),
                "code" => q.code = Some(v.into_owned()),
                "error" => q.error = Some(v.into_owned()),
                _ => {}
            }
        }
        q
    }
}

/// Why a callback did not log the browser in, turned into a response by [`Failure::render`].
enum Failure {
    /// Start the login again towards `target` (a page once `attempt` reaches
    /// [`MAX_ATTEMPTS`]); logged as `restart`.
    Restart {
        target: String,
        attempt: u8,
        why: String,
    },
    /// A finished response, and the outcome the request log reports, if any.
    Answer(Box<Response<Body>>, Option<&'static str>),
}

impl Failure {
    /// The next attempt of the login `st` started.
    fn retry(st: &LoginState, why: impl Into<String>) -> Failure {
        Failure::Restart {
            target: st.redirect.clone(),
            attempt: st.attempt + 1,
            why: why.into(),
        }
    }

    /// The last attempt, back to the application's home: there is no state to learn from.
    fn last_try(app: &Application, why: &str) -> Failure {
        Failure::Restart {
            target: app.spec.external_host.as_str().to_string(),
            attempt: MAX_ATTEMPTS - 1,
            why: why.to_string(),
        }
    }

    fn render(self, app: &Application) -> Response<Body> {
        let name = app.spec.name.as_str();
        match self {
            Failure::Restart {
                target,
                attempt,
                why,
            } => with_log(restart(app, &target, attempt, &why), name, "restart", ""),
            Failure::Answer(r, Some(outcome)) => with_log(*r, name, outcome, ""),
            Failure::Answer(r, None) => *r,
        }
    }
}

/// The callback's steps: the state, its single use, the provider's answer, the code exchange,
/// the identity, and finally the session cookie.
async fn finish_login(
    ctx: &Ctx<'_>,
    app: &Application,
    headers: &HeaderMap,
    query: CallbackQuery,
    now: i64,
) -> Result<Response<Body>, Failure> {
    let st = open_state(app, headers, query.state.as_deref(), now)?;
    claim_state(ctx, app, headers, &st, now)?;
    if let Some(err) = query.error {
        return Err(provider_error(&err));
    }
    let code = query
        .code
        .ok_or_else(|| Failure::retry(&st, "callback without code"))?;
    let tokens = exchange_code(app, &code, &st).await?;
    let identity = identify(app, &tokens, &st).await?;
    Ok(store_session(
        ctx, app, headers, identity, &tokens, &st, now,
    ))
}

/// Opens the sealed `state` parameter, bound to this browser's binding cookie.
fn open_state(
    app: &Application,
    headers: &HeaderMap,
    state: Option<&str>,
    now: i64,
) -> Result<LoginState, Failure> {
    let binding = read_cookie(headers, &binding_cookie_name(&app.cookie_name));
    let Some(state) = state else {
        return Err(Failure::last_try(app, "callback without state"));
    };
    match LoginState::open(&app.sealer, &state_aad(app), state, binding, now) {
        Ok(st) => Ok(st),
        Err(StateError::Unreadable) => Err(Failure::last_try(app, "unreadable state")),
        Err(StateError::Expired(st)) => Err(Failure::retry(&st, "state expired")),
        Err(StateError::WrongBrowser(st)) => Err(Failure::retry(
            &st,
            "login started in another browser or cookie missing",
        )),
    }
}

/// Where a finished login returns: the state's target, validated again against the
/// application as it is configured now (a sealed state proves who made it, not that the
/// target was checked, e.g. by another version or after a reload), else its home.
fn return_target(app: &Application, st: &LoginState) -> RedirectTarget {
    RedirectTarget::parse_or_home(Some(&st.redirect), &app.spec)
}

/// Uses the state up; a replayed callback is harmless if this browser is already logged in.
fn claim_state(
    ctx: &Ctx<'_>,
    app: &Application,
    headers: &HeaderMap,
    st: &LoginState,
    now: i64,
) -> Result<(), Failure> {
    if ctx.outpost.claim_state(&st.id) {
        return Ok(());
    }
    let cookies = read_session_cookies(headers, &app.cookie_name);
    if let CookieState::Present(_) = open_session(app, &cookies, now) {
        return Err(Failure::Answer(
            Box::new(respond::redirect(return_target(app, st).as_str())),
            Some("replay"),
        ));
    }
    Err(Failure::retry(st, "state already used"))
}

/// The provider's `error` parameter as a page.
fn provider_error(err: &str) -> Failure {
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
    Failure::Answer(
        Box::new(respond::error_page(status, "Login failed", &msg)),
        Some("idp_error"),
    )
}

/// Exchanges the code (with the state's PKCE verifier) for tokens.
async fn exchange_code(
    app: &Application,
    code: &str,
    st: &LoginState,
) -> Result<TokenSet, Failure> {
    let name = app.spec.name.as_str();
    match app
        .oidc
        .exchange_code(code, &app.spec.redirect_uri, &st.verifier)
        .await
    {
        Ok(t) => Ok(t),
        Err(OidcError::Rejected(e)) => Err(Failure::retry(st, format!("code rejected: {e}"))),
        Err(e @ (OidcError::NotReady(_) | OidcError::Transport(_))) => {
            tracing::warn!(app = name, error = %e, "code exchange failed");
            Err(Failure::Answer(
                Box::new(respond::unavailable(&e.to_string())),
                None,
            ))
        }
        Err(e) => {
            tracing::warn!(app = name, error = %e, "code exchange failed");
            Err(Failure::Answer(
                Box::new(respond::error_page(
                    StatusCode::BAD_GATEWAY,
                    "Login failed",
                    "The identity provider returned an unexpected answer. Please try again.",
                )),
                None,
            ))
        }
    }
}

/// Who logged in: the verified ID token's claims (with the state's nonce), completed by
/// userinfo where the provider answers it.
async fn identify(
    app: &Application,
    tokens: &TokenSet,
    st: &LoginState,
) -> Result<Identity, Failure> {
    let name = app.spec.name.as_str();
    let bad_gateway = |msg: &str| {
        Failure::Answer(
            Box::new(respond::error_page(
                StatusCode::BAD_GATEWAY,
                "Login failed",
                msg,
            )),
            None,
        )
    };
    let Some(id_token) = tokens.id_token.as_deref() else {
        tracing::warn!(
            app = name,
            "provider returned no ID token; is the 'openid' scope granted?"
        );
        return Err(bad_gateway("The identity provider returned no ID token."));
    };
    let claims = match app.oidc.verify_id_token(id_token, Some(&st.nonce)).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(app = name, error = %e, "ID token rejected");
            return Err(Failure::retry(st, "ID token rejected"));
        }
    };
    let Some(mut identity) = Identity::from_claims(&claims) else {
        return Err(bad_gateway("The ID token names no subject."));
    };
    match app.oidc.userinfo(&tokens.access_token).await {
        Ok(info) => identity.merge_userinfo(&info),
        Err(e) => tracing::debug!(error = %e, "userinfo not used"),
    }
    Ok(identity)
}

/// The redirect back to where the login started, with the cookies that store the session.
fn store_session(
    ctx: &Ctx<'_>,
    app: &Application,
    headers: &HeaderMap,
    identity: Identity,
    tokens: &TokenSet,
    st: &LoginState,
    now: i64,
) -> Response<Body> {
    let mut session = Session::new(
        identity,
        tokens,
        now,
        ctx.rt.settings.session_lifetime.as_secs() as i64,
    );
    session.shrink_to_fit();
    let cookies = read_session_cookies(headers, &app.cookie_name);
    let mut r = respond::redirect(return_target(app, st).as_str());
    respond::add_cookies(
        &mut r,
        session_set_cookies(app, &session, now, cookies.chunks_sent),
    );
    let name = app.spec.name.as_str();
    tracing::info!(app = name, user = %session.identity.username, "login");
    with_log(r, name, "login", &session.identity.username)
}
