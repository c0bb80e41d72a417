//! What a `200` for an authenticated user tells the app: authentik's identity headers, every
//! one present even when empty, plus the user's extras, built once per session and app and kept
//! as [`Prepared`] while the session is remembered (`state::memo`). Pure: the JWKS value is
//! handed in, never fetched from the provider client.

use http::header::{HeaderMap, HeaderValue, SET_COOKIE, USER_AGENT};

use crate::core::app::Site;
use crate::core::extras::extra_headers;
use crate::core::headers::*;
use crate::core::session::Session;

/// The identity headers authentik sends for an authenticated user of `app`, every one present
/// even when empty, plus the user's extras. Built once per session and app (see
/// `state::memo`); `allow` (`http::respond`) adds the per-request part.
pub fn identity_headers(
    app: &Site,
    jwks: HeaderValue,
    session: &Session,
    outpost_name: &str,
    send_jwt: bool,
) -> HeaderMap {
    let mut h = HeaderMap::with_capacity(16);
    let id = &session.identity;
    set_text(&mut h, AK_USERNAME, &id.username);
    set_text(&mut h, AK_GROUPS, &id.groups.join("|"));
    set_text(&mut h, AK_ENTITLEMENTS, &id.entitlements.join("|"));
    set_text(&mut h, AK_EMAIL, &id.email);
    set_text(&mut h, AK_NAME, &id.name);
    set_text(&mut h, AK_UID, &id.sub);
    set_text(&mut h, AK_JWT, if send_jwt { session.jwt() } else { "" });
    h.insert(AK_META_JWKS, jwks);
    set_text(&mut h, AK_META_OUTPOST, outpost_name);
    set_text(&mut h, AK_META_PROVIDER, &app.provider_name);
    set_text(&mut h, AK_META_APP, &app.app_slug);
    h.insert(AK_META_VERSION, HeaderValue::from_static(META_VERSION));
    extra_headers(&mut h, app, &session.identity);
    // The slot of the per-request `User-Agent`: `allow` (`http::respond`) replaces its value in the copy
    // instead of adding an entry, which would grow (and rehash) the copied map every time.
    h.insert(USER_AGENT, HeaderValue::from_static(""));
    h
}

/// What a `200` for one session carries besides the per-request `User-Agent`, built once
/// and shared while the session is remembered (see `state::memo`).
#[derive(Debug, Default)]
pub struct Prepared {
    /// [`identity_headers`].
    pub headers: HeaderMap,
    /// For header authentication: the same headers followed by the `Set-Cookie` values that
    /// store the session (the session cookie first: nginx copies only the first), and how many
    /// cookies those are. A whole map, so a response copies it instead of growing a copy.
    pub with_cookies: Option<(HeaderMap, usize)>,
}

impl Prepared {
    /// `headers`, and with `set_cookies` (if any) the map that also stores the session.
    pub fn new(headers: HeaderMap, set_cookies: Option<Vec<HeaderValue>>) -> Prepared {
        let with_cookies = set_cookies.filter(|c| !c.is_empty()).map(|cookies| {
            let n = cookies.len();
            let mut h = headers.clone();
            for c in cookies {
                h.append(SET_COOKIE, c);
            }
            (h, n)
        });
        Prepared {
            headers,
            with_cookies,
        }
    }
}
