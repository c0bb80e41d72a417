//! Helpers of the hostile-client suites (`tests/security.rs`, `tests/advisories.rs`): reading
//! what came back (raw HTTP answers, redirect walks, cookies), recognising the echo app and
//! the IdP's login form.

use ak_outpost::core::app::cookie_name;
use url::Url;

use super::*;

/// Percent-encodes a query value (every byte but unreserved characters).
pub fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

pub fn looks_like_echo(body: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(body)
        .map(|v| v.get("headers").is_some() && v.get("path").is_some())
        .unwrap_or(false)
}

/// Whether a page is the echo app's answer (the request reached the protected app).
pub fn reached_app(p: &Page) -> bool {
    p.status == 200 && looks_like_echo(&p.body)
}

/// One cookie's value from the `Cookie` header a browser would send to `url`.
pub fn cookie_value(b: &Browser, url: &str, name: &str) -> Option<String> {
    b.cookies_for(url).split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k == name).then(|| v.to_string())
    })
}

pub fn session_cookie_name() -> String {
    cookie_name(CLIENT_ID).to_string()
}

pub fn binding_cookie_name() -> String {
    format!("{}_login", session_cookie_name())
}

/// The result of following redirects while refusing to leave a set of origins.
pub struct Walk {
    pub pages: Vec<Page>,
    /// The first redirect target outside the fetchable origins (not requested).
    pub left_to: Option<String>,
}

/// A raw HTTP answer.
#[derive(Debug)]
pub struct Raw {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// The IdP login form's action.
pub fn login_form_action(html: &str) -> Option<String> {
    let i = html.find("<form")?;
    let rest = &html[i..];
    let a = rest.find("action=\"")? + "action=\"".len();
    let end = rest[a..].find('"')?;
    Some(rest[a..a + end].replace("&amp;", "&"))
}

pub fn is_callback(u: &str) -> bool {
    Url::parse(u).is_ok_and(|u| u.path() == "/outpost.goauthentik.io/callback")
}
