//! The edge: an incoming forward-auth request becomes an [`AuthRequest`] here, and nothing
//! after this reads raw forwarding headers. Forwarding headers count only from trusted peers.
//! Pure: it reads the request head and the trust decision it is given, never the network.

use std::borrow::Cow;
use std::sync::OnceLock;

use http::header::{ACCEPT, AsHeaderName, HOST, HeaderMap};
use http::request::Parts;
use url::Url;

use crate::core::headers::{
    ACCESS_CONTROL_REQUEST_METHOD, SEC_FETCH_MODE, X_FORWARDED_HOST, X_FORWARDED_METHOD,
    X_FORWARDED_PROTO, X_FORWARDED_URI, X_ORIGINAL_METHOD, X_ORIGINAL_URI, X_ORIGINAL_URL,
    X_REQUESTED_WITH,
};
use crate::core::paths::{AUTH_ENVOY_PREFIX, Flavour};

/// Why the original URL is not known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardError {
    /// A trusted proxy sent no (or incomplete) forwarding headers: a proxy misconfiguration.
    Missing,
    /// The forwarding headers do not form an http(s) URL.
    Unparsable,
    /// The peer is not a trusted proxy, so its forwarding headers were ignored.
    Untrusted,
}

/// The URL the user asked the reverse proxy for: an absolute `http(s)://host[:port]/path`,
/// checked at the edge. It becomes a [`Url`] only when something needs one (skip paths, a
/// login redirect): most checks of a live session never do. A text is left unparsed only
/// when `surely_parses` vouches that `Url::parse` accepts it; anything else is parsed at
/// the edge, so an unparsable URL is refused there whatever the session.
#[derive(Debug, Clone)]
pub struct OriginalUrl<'a> {
    text: Cow<'a, str>,
    /// Where the `host[:port]` is in `text`.
    authority: std::ops::Range<usize>,
    url: OnceLock<Option<Url>>,
}

impl<'a> OriginalUrl<'a> {
    /// Checks `text`, already known to be `scheme://authority/path` with a lowercase http(s)
    /// scheme, a plain authority and no control characters; `sure` when [`check_parts`]
    /// found that [`surely_parses`] vouches for the authority. `None` if it does not parse
    /// as a URL with a host.
    fn new(
        text: Cow<'a, str>,
        scheme_len: usize,
        authority_len: usize,
        sure: bool,
    ) -> Option<Self> {
        let start = scheme_len + "://".len();
        let authority = start..start + authority_len;
        let url = OnceLock::new();
        if !sure {
            let _ = url.set(Some(parse_url(&text)?));
        }
        Some(OriginalUrl {
            text,
            authority,
            url,
        })
    }

    /// An already parsed URL (tests, benchmarks).
    pub fn from_url(u: Url) -> OriginalUrl<'static> {
        let text = u.as_str().to_owned();
        let authority = split_absolute(&text)
            .map(|(scheme, authority, _)| scheme.len() + 3..scheme.len() + 3 + authority.len())
            .unwrap_or(0..0);
        OriginalUrl {
            text: Cow::Owned(text),
            authority,
            url: OnceLock::from(Some(u)),
        }
    }

    /// The URL as the proxy sent it (scheme lowercase).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The `host[:port]` part, as sent.
    pub fn authority(&self) -> &str {
        self.text.get(self.authority.clone()).unwrap_or_default()
    }

    /// The path as sent (before any `?` or `#`), without parsing the URL.
    pub fn raw_path(&self) -> &str {
        let rest = self.text.get(self.authority.end..).unwrap_or_default();
        rest.split(['?', '#']).next().unwrap_or_default()
    }

    /// The query as sent (before any `#`), without parsing the URL.
    pub fn raw_query(&self) -> Option<&str> {
        let before_fragment = self.text.split('#').next().unwrap_or_default();
        before_fragment.split_once('?').map(|(_, q)| q)
    }

    /// The parsed URL. `None` cannot happen for a value made by [`AuthRequest::parse`] (its
    /// text was either parsed already or vouched for); callers treat it as "unknown URL".
    pub fn url(&self) -> Option<&Url> {
        self.url.get_or_init(|| parse_url(&self.text)).as_ref()
    }
}

impl PartialEq for OriginalUrl<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

fn parse_url(text: &str) -> Option<Url> {
    Url::parse(text).ok().filter(|u| u.host_str().is_some())
}

/// Whether `Url::parse` certainly accepts a URL with this authority, the rest being a
/// lowercase http(s) scheme and a path without control characters (the path cannot make the
/// parse fail): a host of non-empty ASCII labels (letters, digits, `-`, `_`) whose last label
/// starts with a letter (so it is never read as an IPv4 address) and none starting `xn--`
/// (punycode, which can be invalid), and a port of at most 65535. Anything else is simply
/// parsed at once.
fn surely_parses(authority: &str) -> bool {
    let authority = authority.as_bytes();
    let (host, port) = match authority.iter().position(|&b| b == b':') {
        Some(i) => (&authority[..i], Some(&authority[i + 1..])),
        None => (authority, None),
    };
    if let Some(p) = port {
        if !(1..=5).contains(&p.len()) {
            return false;
        }
        // At most five digits: no overflow.
        let n = p.iter().try_fold(0u32, |n, &b| {
            b.is_ascii_digit().then(|| n * 10 + u32::from(b - b'0'))
        });
        if n.is_none_or(|n| n > 65535) {
            return false;
        }
    }
    // One pass over the host: label boundaries, allowed bytes, `xn--` prefixes.
    let mut label_start = 0;
    for (i, &b) in host.iter().enumerate() {
        if b == b'.' {
            if i == label_start {
                return false;
            }
            label_start = i + 1;
        } else {
            let allowed = b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
            // A label starting with `xn--` (punycode) is left to the URL parser.
            if !allowed
                || (i == label_start
                    && host
                        .get(i..i + 4)
                        .is_some_and(|p| p.eq_ignore_ascii_case(b"xn--")))
            {
                return false;
            }
        }
    }
    host.get(label_start).is_some_and(u8::is_ascii_alphabetic)
}

/// A forward-auth check, parsed.
#[derive(Debug, Clone)]
pub struct AuthRequest<'a> {
    pub flavour: Flavour,
    /// The URL the user asked the reverse proxy for.
    pub original: Result<OriginalUrl<'a>, ForwardError>,
    /// A browser page navigation (may be redirected to a login page); other requests
    /// (fetch/XHR, API clients) get 401 instead. Always false for nginx, which never gets a
    /// redirect.
    pub navigation: bool,
    /// A CORS preflight (`OPTIONS` with `Access-Control-Request-Method`); browsers send no
    /// cookies with it.
    pub preflight: bool,
}

/// A header as text, if present and valid.
pub fn header_str(h: &HeaderMap, name: impl AsHeaderName) -> Option<&str> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// The host the request is for. Traefik and Caddy call the outpost under its own address and
/// name the original host in `X-Forwarded-Host` (believed from trusted proxies only). nginx
/// checks are routed by the host of `X-Original-URL` (what the documented configs set from the
/// protected request; ingress-nginx calls the outpost under its own `Host`), else by `Host`.
/// A client-sent `X-Forwarded-Host` that nginx passes through never selects the app.
pub fn request_host(parts: &Parts, trusted: bool, flavour: Option<Flavour>) -> Option<&str> {
    let h = &parts.headers;
    if trusted {
        match flavour {
            Some(Flavour::Traefik | Flavour::Caddy) => {
                if let Some(x) = header_str(h, X_FORWARDED_HOST) {
                    // A list (proxy chains) names the original host first.
                    return x.split(',').next().map(str::trim);
                }
            }
            Some(Flavour::Nginx) => {
                if let Some(authority) = header_str(h, X_ORIGINAL_URL).and_then(url_authority) {
                    return Some(authority);
                }
            }
            _ => {}
        }
    }
    header_str(h, HOST).or_else(|| parts.uri.authority().map(|a| a.as_str()))
}

/// The `host[:port]` of an absolute http(s) URL, if it is a plain one.
fn url_authority(url: &str) -> Option<&str> {
    let (scheme, authority, _) = split_absolute(url)?;
    lower_http_scheme(scheme)?;
    is_plain_authority(authority).then_some(authority)
}

/// `scheme://authority/path…` split into its scheme, authority and the rest (from the first
/// `/` after the authority); `None` without `://` after the scheme or a `/` after the
/// authority. The scheme ends at the first `:`.
fn split_absolute(s: &str) -> Option<(&str, &str, &str)> {
    let colon = memchr::memchr(b':', s.as_bytes())?;
    let rest = s[colon..].strip_prefix("://")?;
    let slash = memchr::memchr(b'/', rest.as_bytes())?;
    Some((&s[..colon], &rest[..slash], &rest[slash..]))
}

fn first_value(v: &str) -> &str {
    v.split(',').next().unwrap_or_default().trim()
}

/// The longest host name DNS allows.
const MAX_HOST_LEN: usize = 253;

/// Whether `authority` is a plain `host[:port]`: DNS labels (letters, digits, `-`, `_`, `.`)
/// or a bracketed IPv6 address, and an optional numeric port. Anything else (`\\`, `?`, `#`,
/// `@`, `/`, spaces, empty) could move characters from the host into the path when parsed.
pub fn is_plain_authority(authority: &str) -> bool {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        match rest.split_once(']') {
            Some((v6, after)) => {
                if v6.is_empty()
                    || !v6
                        .bytes()
                        .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
                {
                    return false;
                }
                (v6, after)
            }
            None => return false,
        }
    } else {
        match authority.find(':') {
            Some(i) => (&authority[..i], &authority[i..]),
            None => (authority, ""),
        }
    };
    let port_ok = port.is_empty()
        || port.strip_prefix(':').is_some_and(|p| {
            !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
        });
    let host_ok = !host.is_empty()
        && host.len() <= MAX_HOST_LEN
        && (authority.starts_with('[')
            || host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_')));
    host_ok && port_ok
}

/// Builds an http(s) URL from a scheme, a `host[:port]` and a path with query. `None` unless
/// every part is well-formed, so no part can leak into another.
fn absolute(scheme: &str, host: &str, path_and_query: &str) -> Option<OriginalUrl<'static>> {
    let scheme = lower_http_scheme(scheme)?;
    let sure = check_parts(host, path_and_query)?;
    let text = format!("{scheme}://{host}{path_and_query}");
    OriginalUrl::new(Cow::Owned(text), scheme.len(), host.len(), sure)
}

/// `http` or `https`, whatever the case; `None` for any other scheme.
fn lower_http_scheme(scheme: &str) -> Option<&'static str> {
    if scheme.eq_ignore_ascii_case("http") {
        Some("http")
    } else if scheme.eq_ignore_ascii_case("https") {
        Some("https")
    } else {
        None
    }
}

/// Whether `host` is a plain `host[:port]` and the path starts with `/` and has no control
/// characters: `Some(sure)`, `sure` when [`surely_parses`] vouches for the authority (then
/// the URL need not be parsed at the edge), `None` if any part is malformed. One pass over
/// the authority in the usual case: what `surely_parses` accepts is a plain authority unless
/// it is longer than a host may be.
fn check_parts(host: &str, path_and_query: &str) -> Option<bool> {
    if !path_and_query.starts_with('/') || has_control(path_and_query) {
        return None;
    }
    if host.len() <= MAX_HOST_LEN && surely_parses(host) {
        return Some(true);
    }
    is_plain_authority(host).then_some(false)
}

/// Whether `s` has a control character (C0, DEL or C1); byte by byte while it is ASCII.
fn has_control(s: &str) -> bool {
    if s.is_ascii() {
        s.bytes().any(|b| b.is_ascii_control())
    } else {
        s.chars().any(char::is_control)
    }
}

/// Checks an absolute `http(s)://host[:port]/path?query` strictly (see [`absolute`]).
fn parse_absolute(s: &str) -> Option<OriginalUrl<'_>> {
    let (scheme, authority, path_and_query) = split_absolute(s)?;
    if matches!(scheme, "http" | "https") {
        // Already in the form `absolute` would build: keep it as it is.
        let sure = check_parts(authority, path_and_query)?;
        return OriginalUrl::new(Cow::Borrowed(s), scheme.len(), authority.len(), sure);
    }
    absolute(scheme, authority, path_and_query)
}

impl<'a> AuthRequest<'a> {
    /// Parses a check for `flavour`. `trusted` says whether the TCP peer is a trusted proxy.
    pub fn parse(flavour: Flavour, parts: &'a Parts, trusted: bool) -> AuthRequest<'a> {
        let h = &parts.headers;
        let original = match flavour {
            Flavour::Proxy => Self::proxied_url(parts, trusted, false),
            Flavour::Envoy => Self::envoy_url(parts, trusted),
            _ if !trusted => Err(ForwardError::Untrusted),
            Flavour::Nginx => Self::nginx_url(parts),
            Flavour::Traefik | Flavour::Caddy => {
                match (
                    header_str(h, X_FORWARDED_PROTO),
                    header_str(h, X_FORWARDED_HOST),
                    header_str(h, X_FORWARDED_URI),
                ) {
                    (Some(p), Some(host), Some(uri)) => {
                        absolute(first_value(p), first_value(host), uri)
                            .ok_or(ForwardError::Unparsable)
                    }
                    _ => Err(ForwardError::Missing),
                }
            }
        };
        // The method matters only for a navigation (never for nginx) or with a preflight's
        // header: nginx checks of ordinary requests skip two header lookups.
        let nginx = flavour == Flavour::Nginx;
        let preflight_header = header_str(h, ACCESS_CONTROL_REQUEST_METHOD).is_some();
        let method = if nginx && !preflight_header {
            ""
        } else {
            original_method(parts, trusted)
        };
        AuthRequest {
            flavour,
            original,
            // nginx's auth_request passes only the status on (its error_page starts the
            // login), so an nginx check is never answered with a redirect.
            navigation: !nginx && is_navigation(method, h),
            preflight: preflight_header && method.eq_ignore_ascii_case("OPTIONS"),
        }
    }

    /// Proxy mode: the application's own request, on the connection (TLS or not) it came in
    /// on. Only a trusted proxy in front may say the scheme was https.
    pub fn proxied(parts: &'a Parts, trusted: bool, tls: bool) -> AuthRequest<'a> {
        let h = &parts.headers;
        let method = parts.method.as_str();
        AuthRequest {
            flavour: Flavour::Proxy,
            original: Self::proxied_url(parts, trusted, tls),
            navigation: is_navigation(method, h),
            preflight: method.eq_ignore_ascii_case("OPTIONS")
                && header_str(h, ACCESS_CONTROL_REQUEST_METHOD).is_some(),
        }
    }

    fn proxied_url(
        parts: &Parts,
        trusted: bool,
        tls: bool,
    ) -> Result<OriginalUrl<'a>, ForwardError> {
        let forwarded = trusted
            .then(|| header_str(&parts.headers, X_FORWARDED_PROTO).map(first_value))
            .flatten();
        let scheme = forwarded.unwrap_or(if tls { "https" } else { "http" });
        let host = request_host(parts, false, None).ok_or(ForwardError::Missing)?;
        let pq = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        absolute(scheme, host, pq).ok_or(ForwardError::Unparsable)
    }

    /// The host that selects the application: for nginx the original URL's (already checked
    /// here), else as [`request_host`] says.
    pub fn host<'p>(&'p self, parts: &'p Parts, trusted: bool) -> Option<&'p str> {
        if self.flavour == Flavour::Nginx
            && let Ok(u) = &self.original
        {
            return Some(u.authority());
        }
        request_host(parts, trusted, Some(self.flavour))
    }

    /// nginx: `X-Original-URL` (absolute) first — the header the documented configs set — and
    /// only without it `X-Original-URI` (a path) on the request's host.
    fn nginx_url(parts: &'a Parts) -> Result<OriginalUrl<'a>, ForwardError> {
        let h = &parts.headers;
        if let Some(u) = header_str(h, X_ORIGINAL_URL) {
            return parse_absolute(u).ok_or(ForwardError::Unparsable);
        }
        if let Some(uri) = header_str(h, X_ORIGINAL_URI) {
            let scheme = header_str(h, X_FORWARDED_PROTO)
                .map(first_value)
                .unwrap_or("http");
            let host = request_host(parts, true, Some(Flavour::Nginx)).unwrap_or_default();
            return absolute(scheme, host, uri).ok_or(ForwardError::Unparsable);
        }
        Err(ForwardError::Missing)
    }

    /// Envoy appends the original path to the check path and keeps the original `Host`.
    fn envoy_url(parts: &Parts, trusted: bool) -> Result<OriginalUrl<'a>, ForwardError> {
        let path = parts.uri.path();
        let rest = path.strip_prefix(AUTH_ENVOY_PREFIX).unwrap_or(path);
        let rest = if rest.is_empty() { "/" } else { rest };
        let pq = match parts.uri.query() {
            Some(q) => format!("{rest}?{q}"),
            None => rest.to_string(),
        };
        let scheme = if trusted {
            header_str(&parts.headers, X_FORWARDED_PROTO)
                .map(first_value)
                .unwrap_or("https")
        } else {
            "https"
        };
        let host = header_str(&parts.headers, HOST).ok_or(ForwardError::Missing)?;
        absolute(scheme, host, &pq).ok_or(ForwardError::Unparsable)
    }
}

/// The method of the request being checked: a trusted proxy's `X-Forwarded-Method` or
/// `X-Original-Method`, else the check's own.
fn original_method(parts: &Parts, trusted: bool) -> &str {
    let h = &parts.headers;
    if trusted {
        header_str(h, X_FORWARDED_METHOD)
            .or_else(|| header_str(h, X_ORIGINAL_METHOD))
            .unwrap_or(parts.method.as_str())
    } else {
        parts.method.as_str()
    }
}

/// A page navigation by a browser: GET/HEAD, no fetch/XHR markers, and an `Accept` that
/// takes HTML (or says nothing).
pub fn is_navigation(method: &str, h: &HeaderMap) -> bool {
    if !method.eq_ignore_ascii_case("GET") && !method.eq_ignore_ascii_case("HEAD") {
        return false;
    }
    if let Some(mode) = header_str(h, SEC_FETCH_MODE)
        && !mode.eq_ignore_ascii_case("navigate")
    {
        return false;
    }
    if header_str(h, X_REQUESTED_WITH).is_some() {
        return false;
    }
    match header_str(h, ACCEPT) {
        None => true,
        Some(a) => ["text/html", "*/*", "application/xhtml"]
            .iter()
            .any(|t| contains_ignore_case(a, t)),
    }
}

/// ASCII case-insensitive substring test, without allocating.
fn contains_ignore_case(haystack: &str, needle: &str) -> bool {
    haystack
        .as_bytes()
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = http::Request::builder().uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn nginx_prefers_original_url_over_injectable_uri() {
        let p = parts(
            "/outpost.goauthentik.io/auth/nginx",
            &[
                ("host", "app.example.com"),
                ("x-original-url", "https://app.example.com/private?a=1"),
                ("x-original-uri", "/public"),
            ],
        );
        let r = AuthRequest::parse(Flavour::Nginx, &p, true);
        let u = r.original.unwrap();
        assert_eq!(u.as_str(), "https://app.example.com/private?a=1");
        assert_eq!(u.authority(), "app.example.com");
        assert_eq!(u.raw_query(), Some("a=1"));
        assert_eq!(u.raw_path(), "/private");
        let u = OriginalUrl::from_url(Url::parse("http://h:81/x#f?g").unwrap());
        assert_eq!((u.authority(), u.raw_query()), ("h:81", None));
    }

    #[test]
    fn nginx_uri_fallback_and_errors() {
        let p = parts(
            "/x",
            &[("host", "app.example.com"), ("x-original-uri", "/a?b=c")],
        );
        let r = AuthRequest::parse(Flavour::Nginx, &p, true);
        assert_eq!(r.original.unwrap().as_str(), "http://app.example.com/a?b=c");
        let p = parts("/x", &[("host", "app.example.com")]);
        assert_eq!(
            AuthRequest::parse(Flavour::Nginx, &p, true).original,
            Err(ForwardError::Missing)
        );
        for bad in [
            "not a url",
            "javascript:alert(1)",
            "https://user:pw@app.example.com/",
            "/relative",
        ] {
            let p = parts("/x", &[("x-original-url", bad)]);
            assert_eq!(
                AuthRequest::parse(Flavour::Nginx, &p, true).original,
                Err(ForwardError::Unparsable),
                "{bad}"
            );
        }
        let p = parts("/x", &[("x-original-uri", "//evil.com/x"), ("host", "app")]);
        let u = AuthRequest::parse(Flavour::Nginx, &p, true)
            .original
            .unwrap();
        assert_eq!(
            u.url().and_then(Url::host_str),
            Some("app"),
            "a path never changes the host"
        );
    }

    #[test]
    fn host_parts_cannot_leak_into_the_path() {
        for bad in [
            "http:///evil/public/x",
            "http://app.example.test\\public\\/private",
            "http://app.example.test?/private",
            "http://app.example.test#/private",
            "http://user@app.example.test/private",
            "http://app.example.test:80:80/private",
            "http://app.example.test:/private",
            "http://app example/private",
            "http://app.example.test",
        ] {
            let p = parts("/x", &[("x-original-url", bad)]);
            assert_eq!(
                AuthRequest::parse(Flavour::Nginx, &p, true).original,
                Err(ForwardError::Unparsable),
                "{bad}"
            );
        }
        for good in [
            "http://app.example.test/p?q=1",
            "https://[::1]:8443/x",
            "http://10.0.0.1:80/",
        ] {
            let p = parts("/x", &[("x-original-url", good)]);
            assert!(
                AuthRequest::parse(Flavour::Nginx, &p, true)
                    .original
                    .is_ok(),
                "{good}"
            );
        }
        let p = parts(
            "/",
            &[
                ("x-forwarded-proto", "http"),
                ("x-forwarded-host", "a?b"),
                ("x-forwarded-uri", "/"),
            ],
        );
        assert_eq!(
            AuthRequest::parse(Flavour::Traefik, &p, true).original,
            Err(ForwardError::Unparsable)
        );
    }

    /// Whether [`OriginalUrl::new`] would leave `text` unparsed.
    fn vouched_for(text: &str) -> bool {
        split_absolute(text).is_some_and(|(scheme, authority, path)| {
            let sure = check_parts(authority, path) == Some(true);
            // The one pass of `check_parts` stands for both checks: what it vouches for is
            // also a plain authority.
            assert!(!sure || is_plain_authority(authority), "{text}");
            matches!(scheme, "http" | "https") && sure
        })
    }

    #[test]
    fn urls_left_unparsed_are_ones_the_parser_accepts() {
        for (text, vouched) in [
            ("http://app.example.test/p?q=1", true),
            ("https://App-1_x.example.test:65535/", true),
            ("http://localhost/%zz/../\\x y", true),
            ("http://app.example.test:65536/", false),
            ("http://app.example.test:/", false),
            ("http://10.0.0.1/", false),
            ("http://0x7f.1/", false),
            ("http://a.0x1/", false),
            ("http://a..b/", false),
            ("http://app.example.test./", false),
            ("http://xn--a.example/", false),
            ("http://a.XN--nxasmq6b/", false),
            ("http://[::1]/", false),
            ("HTTP://app/", false),
            ("http://app", false),
        ] {
            assert_eq!(vouched_for(text), vouched, "{text}");
        }
        // A host as long as DNS allows, and one byte longer.
        assert_eq!(check_parts(&"a".repeat(253), "/"), Some(true));
        assert_eq!(check_parts(&"a".repeat(254), "/"), None);
        assert_eq!(check_parts("[::1]:8080", "/"), Some(false));
        assert_eq!(check_parts("app", "/\u{7f}"), None);
        // Random texts from an alphabet full of host-parser corner cases: whatever is vouched
        // for must parse, to a URL with a host.
        let pieces = [
            "a", "Z", "0", "9", "x", "n", "-", "_", ".", ":", "xn--", "0x", "ff", "65535", "65536",
            "1", "/", "%", "?", "#", "\\", "@", " ", "é",
        ];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut vouched = 0;
        for _ in 0..200_000 {
            let mut text = String::from(if next() % 2 == 0 {
                "http://"
            } else {
                "https://"
            });
            for _ in 0..(1 + next() % 8) {
                text.push_str(pieces[(next() % pieces.len() as u64) as usize]);
            }
            text.push('/');
            if vouched_for(&text) {
                vouched += 1;
                assert!(
                    parse_url(&text).is_some(),
                    "vouched for but unparsable: {text}"
                );
            }
        }
        assert!(
            vouched > 1000,
            "the generator rarely makes plain hosts: {vouched}"
        );
    }

    #[test]
    fn untrusted_peers_forwarding_headers_are_ignored() {
        let p = parts(
            "/x",
            &[
                ("host", "app.example.com"),
                ("x-original-url", "https://app.example.com/public"),
            ],
        );
        assert_eq!(
            AuthRequest::parse(Flavour::Nginx, &p, false).original,
            Err(ForwardError::Untrusted)
        );
        let p = parts(
            "/x",
            &[
                ("host", "outpost:9000"),
                ("x-forwarded-host", "app.example.com"),
            ],
        );
        assert_eq!(
            request_host(&p, false, Some(Flavour::Traefik)),
            Some("outpost:9000")
        );
        assert_eq!(
            request_host(&p, true, Some(Flavour::Traefik)),
            Some("app.example.com")
        );
        assert_eq!(
            request_host(&p, true, Some(Flavour::Nginx)),
            Some("outpost:9000")
        );
        assert_eq!(request_host(&p, true, None), Some("outpost:9000"));
    }

    #[test]
    fn traefik_needs_all_three_headers() {
        let full = [
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "app.example.com"),
            ("x-forwarded-uri", "/path?q=1"),
        ];
        let p = parts("/outpost.goauthentik.io/auth/traefik", &full);
        let r = AuthRequest::parse(Flavour::Traefik, &p, true);
        let u = r.original.unwrap();
        assert_eq!(u.as_str(), "https://app.example.com/path?q=1");
        assert_eq!(u.authority(), "app.example.com");
        let p = parts("/outpost.goauthentik.io/auth/traefik", &full[..2]);
        assert_eq!(
            AuthRequest::parse(Flavour::Traefik, &p, true).original,
            Err(ForwardError::Missing)
        );
        let p = parts(
            "/",
            &[
                ("x-forwarded-proto", "gopher"),
                ("x-forwarded-host", "a"),
                ("x-forwarded-uri", "/"),
            ],
        );
        assert_eq!(
            AuthRequest::parse(Flavour::Caddy, &p, true).original,
            Err(ForwardError::Unparsable)
        );
    }

    #[test]
    fn envoy_strips_prefix_and_uses_host() {
        let p = parts(
            "/outpost.goauthentik.io/auth/envoy/app/x?y=1",
            &[("host", "app.example.com"), ("x-forwarded-proto", "http")],
        );
        let r = AuthRequest::parse(Flavour::Envoy, &p, true);
        assert_eq!(
            r.original.unwrap().as_str(),
            "http://app.example.com/app/x?y=1"
        );
        let r = AuthRequest::parse(Flavour::Envoy, &p, false);
        assert_eq!(
            r.original.unwrap().as_str(),
            "https://app.example.com/app/x?y=1"
        );
    }

    #[test]
    fn navigation_detection() {
        let h = |pairs: &[(&str, &str)]| parts("/", pairs).headers;
        assert!(is_navigation("GET", &h(&[])));
        assert!(is_navigation(
            "GET",
            &h(&[("accept", "text/html,application/xhtml+xml")])
        ));
        assert!(is_navigation("GET", &h(&[("sec-fetch-mode", "navigate")])));
        assert!(!is_navigation("POST", &h(&[])));
        assert!(!is_navigation("GET", &h(&[("sec-fetch-mode", "cors")])));
        assert!(!is_navigation("GET", &h(&[("accept", "application/json")])));
        assert!(!is_navigation(
            "GET",
            &h(&[("x-requested-with", "XMLHttpRequest")])
        ));
    }
}
