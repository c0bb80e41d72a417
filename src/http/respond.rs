//! The one place that turns outcomes into HTTP responses: statuses, bodies, identity headers
//! and cookies. Handlers decide; this module writes. It decides nothing and does no I/O.

use bytes::Bytes;
use http::header::{
    CACHE_CONTROL, CONTENT_TYPE, HeaderMap, HeaderValue, LOCATION, SET_COOKIE, USER_AGENT,
    WWW_AUTHENTICATE,
};
use http::{Response, StatusCode};

pub use crate::state::body::Body;

/// A response with a plain-text body (Go's `http.Error` shape).
pub fn text(status: StatusCode, msg: &str) -> Response<Body> {
    plain(status, Bytes::from(format!("{msg}\n")))
}

fn plain(status: StatusCode, body: Bytes) -> Response<Body> {
    let mut r = Response::new(Body::new(body));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// An empty response.
pub fn empty(status: StatusCode) -> Response<Body> {
    let mut r = Response::new(Body::new(Bytes::new()));
    *r.status_mut() = status;
    r
}

/// `302 Found` to `location`.
pub fn redirect(location: &str) -> Response<Body> {
    let body = format!("<a href=\"{}\">Found</a>.\n", html_escape(location));
    let mut r = Response::new(Body::new(Bytes::from(body)));
    *r.status_mut() = StatusCode::FOUND;
    let h = r.headers_mut();
    match HeaderValue::from_str(location) {
        Ok(v) => {
            h.insert(LOCATION, v);
        }
        Err(_) => {
            return error_page(
                StatusCode::BAD_REQUEST,
                "Bad Request",
                "Invalid redirect target.",
            );
        }
    }
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// An HTML error page for browsers.
pub fn error_page(status: StatusCode, title: &str, message: &str) -> Response<Body> {
    let body = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
<title>{t}</title><style>body{{font-family:system-ui,sans-serif;max-width:40rem;margin:4rem auto;padding:0 1rem;color:#222}}\
h1{{font-size:1.4rem}}p{{line-height:1.5}}</style></head>\
<body><h1>{t}</h1><p>{m}</p><p><a href=\"/\">Go to home</a></p></body></html>\n",
        t = html_escape(title),
        m = html_escape(message)
    );
    let mut r = Response::new(Body::new(Bytes::from(body)));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// `400` for a host no application serves (authentik's JSON shape, tab-indented).
pub fn no_app(host: &str) -> Response<Body> {
    let host_json = serde_json::to_string(host).unwrap_or_else(|_| "\"\"".into());
    let detail = serde_json::to_string(&format!(
        "Check the outpost settings and make sure '{host}' is included."
    ))
    .unwrap_or_else(|_| "\"\"".into());
    let body = format!(
        "{{\n\t\"Message\": \"no app for hostname\",\n\t\"Host\": {host_json},\n\t\"Detail\": {detail}\n}}"
    );
    let mut r = Response::new(Body::new(Bytes::from(body)));
    *r.status_mut() = StatusCode::BAD_REQUEST;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// `401` for nginx and API clients.
pub fn unauthorized() -> Response<Body> {
    let mut r = plain(
        StatusCode::UNAUTHORIZED,
        Bytes::from_static(b"unauthorized request\n"),
    );
    r.headers_mut().insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"ak-outpost\""),
    );
    r
}

/// `429` for a client over its request rate.
pub fn too_many_requests() -> Response<Body> {
    let mut r = text(StatusCode::TOO_MANY_REQUESTS, "too many requests");
    r.headers_mut()
        .insert("retry-after", HeaderValue::from_static("1"));
    r
}

/// `503` while the provider cannot be used.
pub fn unavailable(reason: &str) -> Response<Body> {
    let mut r = error_page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Login temporarily unavailable",
        &format!(
            "The identity provider cannot be reached, so this session cannot be verified right now. Please try again in a moment. ({reason})"
        ),
    );
    r.headers_mut()
        .insert("retry-after", HeaderValue::from_static("5"));
    r
}

/// `503` for a browser that would be sent to log in while the provider is down.
pub fn login_unavailable() -> Response<Body> {
    let mut r = error_page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Login temporarily unavailable",
        "The identity provider cannot be reached, so you cannot sign in right now. If you were already signed in recently, your session keeps working. Please try again in a few minutes.",
    );
    r.headers_mut()
        .insert("retry-after", HeaderValue::from_static("30"));
    r
}

/// Appends `Set-Cookie` values.
pub fn add_cookies(r: &mut Response<Body>, cookies: impl IntoIterator<Item = HeaderValue>) {
    for c in cookies {
        r.headers_mut().append(SET_COOKIE, c);
    }
}

/// `200` for an authenticated user: the identity headers, and `User-Agent` echoing the
/// request's, as authentik does.
pub fn allow(identity: &HeaderMap, user_agent: Option<&HeaderValue>) -> Response<Body> {
    let mut r = empty(StatusCode::OK);
    let h = r.headers_mut();
    *h = identity.clone();
    h.insert(
        USER_AGENT,
        user_agent
            .cloned()
            .unwrap_or_else(|| HeaderValue::from_static("")),
    );
    r
}

/// Escapes text for HTML element content and attribute values.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::headers::AK_USERNAME;
    use crate::core::identity_headers::Prepared;

    #[test]
    fn allow_echoes_the_user_agent_once() {
        let mut identity = HeaderMap::new();
        identity.insert(AK_USERNAME, HeaderValue::from_static("alice"));
        identity.insert(USER_AGENT, HeaderValue::from_static(""));
        let ua = HeaderValue::from_static("curl/8");
        for (map, sent, want) in [
            (&identity, Some(&ua), "curl/8"),
            (&identity, None, ""),
            (&HeaderMap::new(), Some(&ua), "curl/8"),
        ] {
            let r = allow(map, sent);
            let got: Vec<_> = r.headers().get_all(USER_AGENT).iter().collect();
            assert_eq!(got, vec![want], "{map:?} {sent:?}");
        }
        assert_eq!(allow(&identity, None).headers()[AK_USERNAME], "alice");
    }

    #[test]
    fn prepared_cookies_follow_the_identity_headers_in_order() {
        let mut identity = HeaderMap::new();
        identity.insert(AK_USERNAME, HeaderValue::from_static("alice"));
        identity.insert(USER_AGENT, HeaderValue::from_static(""));
        let cookies = vec![
            HeaderValue::from_static("s=1"),
            HeaderValue::from_static("s_1=; Max-Age=0"),
        ];
        let p = Prepared::new(identity.clone(), Some(cookies));
        let (h, n) = p.with_cookies.as_ref().expect("cookies prepared");
        assert_eq!(*n, 2);
        let r = allow(h, Some(&HeaderValue::from_static("curl/8")));
        let set: Vec<_> = r.headers().get_all(SET_COOKIE).iter().collect();
        assert_eq!(set, vec!["s=1", "s_1=; Max-Age=0"], "session cookie first");
        assert_eq!(r.headers()[USER_AGENT], "curl/8");
        assert_eq!(r.headers()[AK_USERNAME], "alice");
        assert_eq!(p.headers, identity, "the plain map has no cookies");
        assert!(Prepared::new(identity.clone(), None).with_cookies.is_none());
        assert!(Prepared::new(identity, Some(vec![])).with_cookies.is_none());
    }

    #[test]
    fn escaping() {
        assert_eq!(
            html_escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn no_app_body_is_authentiks_json() {
        let r = no_app("evil\"host");
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let body = format!("{:?}", r.body());
        assert!(body.contains("no app for hostname"));
    }

    #[test]
    fn redirect_refuses_header_breaking_targets() {
        assert_eq!(
            redirect("https://a/\r\nx: y").status(),
            StatusCode::BAD_REQUEST
        );
        let r = redirect("https://a/b");
        assert_eq!(r.status(), StatusCode::FOUND);
        assert_eq!(r.headers()[LOCATION], "https://a/b");
    }
}
