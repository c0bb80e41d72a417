//! `/sign_out` (or `?X-authentik-logout=true`): clears the session cookies, revokes the tokens
//! at the provider and sends the browser to its end-session endpoint when it has one. Nothing
//! here decides who is logged in.

use http::Response;
use http::header::HeaderMap;

use super::with_log;
use crate::core::login::binding_cookie_name;
use crate::core::session::{
    CookieState, clear_session_cookies, cookie_header, open_session, read_session_cookies,
};
use crate::core::token::unix_now;
use crate::http::respond::{self, Body};
use crate::state::application::Application;

/// `/sign_out`: end the session here and at the provider.
pub(super) async fn sign_out(app: &Application, headers: &HeaderMap) -> Response<Body> {
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
