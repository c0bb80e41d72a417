//! Proxy mode's rules for the request the outpost sends on to the application and for the
//! answer it passes back: where it goes (the upstream, or a user's `backend_override`), which
//! `Host` it carries, which client headers never cross (hop-by-hop headers, forged identity
//! and forwarding headers, the outpost's own cookies, a consumed `Authorization`), and the
//! `X-Forwarded-*` and `Via` the application can rely on. Pure: header maps in, header maps
//! out; the connection pool and the byte streaming live in `state::upstream` and `http::proxy`.

use std::net::IpAddr;
use std::time::Duration;

use http::header::{
    AUTHORIZATION, CONNECTION, COOKIE, EXPECT, HOST, HeaderMap, HeaderName, HeaderValue,
    PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRAILER, TRANSFER_ENCODING, UPGRADE, VIA,
};
use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use serde_json::Value;
use url::Url;

use crate::core::headers::{X_FORWARDED_HOST, X_FORWARDED_PROTO};

/// `X-Forwarded-For`.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// RFC 7239 `Forwarded`: rebuilt as `X-Forwarded-*`, never passed on from a client.
pub const FORWARDED: HeaderName = HeaderName::from_static("forwarded");
/// `X-Real-IP`, which some applications read before `X-Forwarded-For`.
pub const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
/// Added to every proxied answer, as authentik's outpost does.
pub const X_POWERED_BY: HeaderName = HeaderName::from_static("x-powered-by");
/// What the outpost adds to `Via`.
pub const VIA_VALUE: &str = "1.1 ak-outpost";

/// Default time to open a connection to the upstream.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default time the upstream has to start its answer (status and headers) once the request
/// is sent; bodies may then stream for as long as they take.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);

/// Headers that belong to one connection (RFC 9110 §7.6.1), never forwarded either way.
/// `Upgrade` crosses only in an upgrade handshake, re-added by [`upstream_headers`].
const HOP_BY_HOP: [HeaderName; 9] = [
    CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION,
    TE,
    TRAILER,
    TRANSFER_ENCODING,
    UPGRADE,
];

/// Where a proxy-mode application lives and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// `http(s)://host[:port]`; requests keep their own path and query.
    pub url: Url,
    /// Verify the upstream's certificate (authentik's `internal_host_ssl_validation`).
    pub verify_tls: bool,
    /// The `Host` sent upstream instead of the client's.
    pub host_header: Option<String>,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    /// `url`'s scheme and `host[:port]`, prepared once for every request's URI (`None`:
    /// not usable, every request gets a 502).
    prepared: Option<(Scheme, Authority)>,
}

impl Upstream {
    /// An upstream at `url` with default timeouts. Only the scheme, host and port are used:
    /// like authentik, the request path is sent as the client sent it (`strict` refuses a
    /// path, which a user would expect to be prepended).
    pub fn new(url: &str, verify_tls: bool, strict: bool) -> Result<Upstream, String> {
        let u = parse_base(url).ok_or_else(|| {
            format!("upstream '{url}' is not an http(s) URL like http://app:8080")
        })?;
        if strict && u.path() != "/" {
            return Err(format!(
                "upstream '{url}' has a path; requests keep their own path, so give only scheme, host and port"
            ));
        }
        if !u.username().is_empty() || u.password().is_some() {
            return Err(format!("upstream '{url}' must not contain credentials"));
        }
        Ok(Upstream {
            prepared: scheme_and_authority(&u),
            url: u,
            verify_tls,
            host_header: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
        })
    }

    /// The URI of the upstream request for a client request's path and query: the user's
    /// `backend_override` when it is a usable http(s) URL, else this upstream.
    pub fn target(&self, backend_override: Option<&str>, pq: Option<&PathAndQuery>) -> Option<Uri> {
        let (scheme, authority) = match backend_override.and_then(parse_base) {
            Some(over) => scheme_and_authority(&over)?,
            None => self.prepared.clone()?,
        };
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(scheme);
        parts.authority = Some(authority);
        parts.path_and_query = Some(
            pq.cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
        );
        Uri::from_parts(parts).ok()
    }
}

/// An http(s) URL's scheme and `host[:port]` as URI parts.
fn scheme_and_authority(u: &Url) -> Option<(Scheme, Authority)> {
    let authority = match (u.host_str(), u.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        _ => return None,
    };
    Some((
        u.scheme().parse().ok()?,
        Authority::from_maybe_shared(bytes::Bytes::from(authority)).ok()?,
    ))
}

/// An absolute http(s) URL with a host, no query and no fragment.
fn parse_base(s: &str) -> Option<Url> {
    let u = Url::parse(s.trim()).ok()?;
    (matches!(u.scheme(), "http" | "https")
        && u.host_str().is_some_and(|h| !h.is_empty())
        && u.query().is_none()
        && u.fragment().is_none())
    .then_some(u)
}

/// A string field of the user's `ak_proxy` claim (`backend_override`, `host_header`).
pub fn ak_proxy_text<'a>(ak_proxy: Option<&'a Value>, field: &str) -> Option<&'a str> {
    ak_proxy?
        .get(field)?
        .as_str()
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// What the upstream request's headers are built from besides the client's headers.
#[derive(Debug)]
pub struct Forwarding<'a> {
    /// The TCP peer.
    pub peer: IpAddr,
    /// The peer is a trusted proxy (a TLS terminator in front): its forwarding headers stand.
    pub trusted: bool,
    /// The client connection is TLS.
    pub tls: bool,
    /// The `Host` the client asked for.
    pub host: &'a str,
    /// The `Host` to send instead (upstream setting or the user's `host_header`).
    pub host_override: Option<&'a str>,
    /// Names of the outpost's own cookies (session chunks share the prefix), removed from
    /// `Cookie`.
    pub cookie_prefix: &'a str,
    /// The outpost's login-binding cookie, removed from `Cookie` too.
    pub binding_cookie: &'a str,
    /// The `Authorization` header was the user's credential at the outpost: not passed on.
    pub drop_authorization: bool,
    /// The client asks to switch protocols (`Connection: upgrade` + `Upgrade`): keep them.
    pub upgrade: bool,
}

/// Whether a request asks to switch protocols (WebSocket and the like).
pub fn wants_upgrade(h: &HeaderMap) -> bool {
    h.contains_key(UPGRADE) && connection_tokens(h).any(|t| t.eq_ignore_ascii_case("upgrade"))
}

fn connection_tokens(h: &HeaderMap) -> impl Iterator<Item = &str> {
    h.get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Removes hop-by-hop headers, including those a `Connection` header names, except that
/// names whose removal would hide who the client is (`X-Forwarded-*`, `Forwarded`) are
/// rebuilt by the caller rather than trusted to the client's list.
pub fn remove_hop_by_hop(h: &mut HeaderMap) {
    // One pass over the names present (a handful) instead of a hashed `remove` for each of
    // the nine: most messages carry none of them, or only `Connection`.
    let present: Vec<HeaderName> = h
        .keys()
        .filter(|k| HOP_BY_HOP.contains(k))
        .cloned()
        .collect();
    if present.is_empty() {
        return;
    }
    let named: Vec<HeaderName> = connection_tokens(h)
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    for n in named.into_iter().chain(present) {
        h.remove(n);
    }
}

/// Turns a client request's headers into the upstream request's: hop-by-hop, forged identity
/// (`X-authentik-*`, any name with `_`) and client forwarding headers out, the outpost's
/// cookies and a consumed `Authorization` out, then `identity` (the user's headers, if any)
/// in, then `Host`, `X-Forwarded-{For,Host,Proto}` and `Via`.
pub fn upstream_headers(h: &mut HeaderMap, identity: Option<&HeaderMap>, f: &Forwarding<'_>) {
    let upgrade = f.upgrade.then(|| h.get(UPGRADE).cloned()).flatten();
    let (prior_for, prior_proto, prior_host) = if f.trusted {
        (
            joined(h, &X_FORWARDED_FOR),
            first(h, &X_FORWARDED_PROTO),
            first(h, &X_FORWARDED_HOST),
        )
    } else {
        (None, None, None)
    };
    remove_hop_by_hop(h);
    // Forged identity and forwarding headers (and `Expect`), found in one pass over the names
    // present.
    let forged: Vec<HeaderName> = h
        .keys()
        .filter(|k| {
            let n = k.as_str();
            n.starts_with("x-authentik-")
                || n.contains('_')
                || n.starts_with("x-forwarded-")
                || **k == FORWARDED
                || **k == X_REAL_IP
                // The outpost's server side has answered `Expect: 100-continue` itself.
                || **k == EXPECT
        })
        .cloned()
        .collect();
    for n in forged {
        h.remove(n);
    }
    // Room for what is added below, so the map grows once.
    h.reserve(identity.map_or(0, HeaderMap::len) + 7);
    if f.drop_authorization {
        h.remove(AUTHORIZATION);
    }
    strip_cookies(h, f.cookie_prefix, f.binding_cookie);
    if let Some(id) = identity {
        for (name, value) in id {
            // The identity map keeps an empty `User-Agent` slot for forward-auth answers.
            if name != http::header::USER_AGENT {
                h.insert(name.clone(), value.clone());
            }
        }
    }
    // The client's `Host` as a value once: usually it is the `Host` the client sent.
    let host = match h.get(HOST) {
        Some(v) if v.as_bytes() == f.host.as_bytes() => Some(v.clone()),
        _ => HeaderValue::from_str(f.host).ok(),
    };
    if let Some(v) = f.host_override.and_then(|s| HeaderValue::from_str(s).ok()) {
        h.insert(HOST, v);
    } else if let Some(v) = &host {
        h.insert(HOST, v.clone());
    }
    let peer = ip_text(f.peer);
    match prior_for {
        Some(prior) => set(h, X_FORWARDED_FOR, &format!("{prior}, {peer}")),
        None => set(h, X_FORWARDED_FOR, &peer),
    }
    set(h, X_REAL_IP, &peer);
    match prior_proto {
        Some(proto) => set(h, X_FORWARDED_PROTO, &proto),
        None => {
            let proto = if f.tls { "https" } else { "http" };
            h.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
        }
    }
    match (prior_host, host) {
        (Some(prior), _) => set(h, X_FORWARDED_HOST, &prior),
        (None, Some(v)) => {
            h.insert(X_FORWARDED_HOST, v);
        }
        (None, None) => {}
    }
    h.append(VIA, HeaderValue::from_static(VIA_VALUE));
    if let Some(u) = upgrade {
        h.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(UPGRADE, u);
    }
}

/// The upstream answer's headers as the client gets them: hop-by-hop out (kept for a
/// `101 Switching Protocols`, whose `Connection`/`Upgrade` complete the handshake), `Via`
/// and `X-Powered-By` in.
pub fn downstream_headers(h: &mut HeaderMap, switching: bool) {
    let upgrade = if switching {
        h.get(UPGRADE).cloned()
    } else {
        None
    };
    remove_hop_by_hop(h);
    if let Some(u) = upgrade {
        h.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(UPGRADE, u);
    }
    h.append(VIA, HeaderValue::from_static(VIA_VALUE));
    h.insert(X_POWERED_BY, HeaderValue::from_static("goauthentik.io"));
}

/// Removes the outpost's cookies from every `Cookie` header (dropping a header left empty):
/// the session chunks (`<prefix>`, `<prefix>_1`, …) and the login binding cookie. They are the
/// outpost's credentials, not the application's.
pub fn strip_cookies(h: &mut HeaderMap, prefix: &str, binding: &str) {
    if !h.contains_key(COOKIE) {
        return;
    }
    let ours = |name: &[u8]| {
        name == binding.as_bytes()
            || name
                .strip_prefix(prefix.as_bytes())
                .is_some_and(|rest| rest.is_empty() || is_chunk_suffix(rest))
    };
    // Byte by byte (the session cookie alone is ≈1.4 KB): pairs split with `memchr`, kept
    // pairs copied once into the new value.
    let mut kept: Vec<u8> = Vec::new();
    for v in h.get_all(COOKIE) {
        let line = v.as_bytes();
        // Only visible ASCII, as `HeaderValue::to_str` accepts (a line with anything else
        // is dropped whole).
        if !is_visible_ascii(line) {
            continue;
        }
        let mut start = 0;
        while start <= line.len() {
            let end = memchr::memchr(b';', &line[start..]).map_or(line.len(), |i| start + i);
            let pair = trim_ows(&line[start..end]);
            start = end + 1;
            if pair.is_empty() {
                continue;
            }
            let name = memchr::memchr(b'=', pair).map_or(pair, |i| &pair[..i]);
            if ours(trim_ows(name)) {
                continue;
            }
            if !kept.is_empty() {
                kept.extend_from_slice(b"; ");
            }
            kept.extend_from_slice(pair);
        }
    }
    h.remove(COOKIE);
    if !kept.is_empty()
        && let Ok(v) = HeaderValue::from_maybe_shared(bytes::Bytes::from(kept))
    {
        h.insert(COOKIE, v);
    }
}

/// What `HeaderValue::to_str` accepts: tab and `0x20..=0x7e`. Without an early exit, so the
/// loop is vectorised.
fn is_visible_ascii(b: &[u8]) -> bool {
    b.iter().fold(true, |ok, &c| {
        ok & ((0x20..0x7f).contains(&c) | (c == b'\t'))
    })
}

/// Without leading and trailing spaces and tabs (the only whitespace a visible-ASCII value
/// has).
fn trim_ows(mut b: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = b {
        b = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = b {
        b = rest;
    }
    b
}

/// `_1` … `_99`: the suffix of a session cookie chunk.
fn is_chunk_suffix(rest: &[u8]) -> bool {
    rest.strip_prefix(b"_")
        .is_some_and(|n| !n.is_empty() && n.len() <= 2 && n.iter().all(u8::is_ascii_digit))
}

/// Every value of a header joined with `, `, if any is text.
fn joined(h: &HeaderMap, name: &HeaderName) -> Option<String> {
    let parts: Vec<&str> = h
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// The first list element of a header, if it is text.
fn first(h: &HeaderMap, name: &HeaderName) -> Option<String> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// An address as `Display` writes it (IPv4-mapped IPv6 as IPv4), IPv4 without `fmt`.
fn ip_text(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let mut s = String::with_capacity(15);
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    s.push('.');
                }
                if octet >= 100 {
                    s.push(char::from(b'0' + octet / 100));
                }
                if octet >= 10 {
                    s.push(char::from(b'0' + octet / 10 % 10));
                }
                s.push(char::from(b'0' + octet % 10));
            }
            s
        }
        v6 => v6.to_string(),
    }
}

fn set(h: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(name, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream() -> Upstream {
        Upstream::new("http://backend:8012", true, true).unwrap()
    }

    fn fwd<'a>() -> Forwarding<'a> {
        Forwarding {
            peer: "10.0.0.7".parse().unwrap(),
            trusted: false,
            tls: false,
            host: "frontend",
            host_override: None,
            cookie_prefix: "authentik_proxy_abcd1234",
            binding_cookie: "authentik_proxy_abcd1234_login",
            drop_authorization: false,
            upgrade: false,
        }
    }

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn addresses_as_display_writes_them() {
        for ip in [
            "0.0.0.0",
            "10.0.0.7",
            "127.0.0.1",
            "192.168.100.255",
            "9.99.100.200",
            "::1",
            "2001:db8::1",
            "::ffff:203.0.113.9",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(ip_text(ip), ip.to_canonical().to_string(), "{ip}");
        }
        for n in 0..=255u8 {
            let ip = IpAddr::from([n, n / 2, 255 - n, 0]);
            assert_eq!(ip_text(ip), ip.to_string());
        }
    }

    #[test]
    fn upstream_urls() {
        assert!(Upstream::new("http://app:8080", true, true).is_ok());
        assert!(Upstream::new("https://app/", true, true).is_ok());
        for bad in [
            "app:8080",
            "ftp://app",
            "http://",
            "http://u:p@app",
            "http://app/?q",
            "",
        ] {
            assert!(Upstream::new(bad, true, true).is_err(), "{bad}");
        }
        assert!(Upstream::new("http://app/sub", true, true).is_err());
        assert!(Upstream::new("http://app/sub", true, false).is_ok());
    }

    /// authentik's `TestProxy_ModifyRequest*`: path and query unchanged, host from the
    /// upstream or a parsable `backend_override`.
    #[test]
    fn targets() {
        let u = upstream();
        let pq = PathAndQuery::from_static("/foo?a=1&b=%2F");
        let t = |o| u.target(o, Some(&pq)).unwrap().to_string();
        assert_eq!(t(None), "http://backend:8012/foo?a=1&b=%2F");
        assert_eq!(
            t(Some("http://other-backend:8123")),
            "http://other-backend:8123/foo?a=1&b=%2F"
        );
        assert_eq!(t(Some(":qewr")), "http://backend:8012/foo?a=1&b=%2F");
        assert_eq!(
            t(Some("javascript:alert(1)")),
            "http://backend:8012/foo?a=1&b=%2F"
        );
        let sub = Upstream::new("https://backend/ignored", false, false).unwrap();
        assert_eq!(
            sub.target(None, None).unwrap().to_string(),
            "https://backend/"
        );
    }

    #[test]
    fn ak_proxy_fields() {
        let v = serde_json::json!({"backend_override": " http://b:1 ", "host_header": "", "n": 1});
        assert_eq!(
            ak_proxy_text(Some(&v), "backend_override"),
            Some("http://b:1")
        );
        assert_eq!(ak_proxy_text(Some(&v), "host_header"), None);
        assert_eq!(ak_proxy_text(Some(&v), "n"), None);
        assert_eq!(ak_proxy_text(None, "host_header"), None);
    }

    /// The client's Host is kept (authentik's `TestProxy_ModifyRequest`), forwarding headers
    /// come from the connection, and nothing a client forges reaches the application.
    #[test]
    fn request_headers_from_an_untrusted_client() {
        let mut h = map(&[
            ("host", "frontend"),
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-host", "evil"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-user", "admin"),
            ("forwarded", "for=1.2.3.4"),
            ("x-real-ip", "1.2.3.4"),
            ("x-authentik-username", "admin"),
            ("X-Authentik_Username", "admin"),
            ("x_authentik_groups", "admins"),
            ("connection", "keep-alive, x-custom"),
            ("x-custom", "gone"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("proxy-authorization", "Basic eA=="),
            ("upgrade", "websocket"),
            ("accept", "text/html"),
            ("expect", "100-continue"),
            ("authorization", "Bearer kept"),
            (
                "cookie",
                "a=1; authentik_proxy_abcd1234=s1; authentik_proxy_abcd1234_1=s2",
            ),
            (
                "cookie",
                "authentik_proxy_abcd1234_login=b; authentik_proxy_abcd1234x=other",
            ),
        ]);
        upstream_headers(&mut h, None, &fwd());
        let got = |n: &str| {
            h.get_all(n)
                .iter()
                .map(|v| v.to_str().unwrap().to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(got("host"), ["frontend"]);
        assert_eq!(got("x-forwarded-for"), ["10.0.0.7"]);
        assert_eq!(got("x-real-ip"), ["10.0.0.7"]);
        assert_eq!(got("x-forwarded-host"), ["frontend"]);
        assert_eq!(got("x-forwarded-proto"), ["http"]);
        assert_eq!(got("via"), [VIA_VALUE]);
        assert_eq!(got("accept"), ["text/html"]);
        assert_eq!(got("authorization"), ["Bearer kept"]);
        assert_eq!(got("cookie"), ["a=1; authentik_proxy_abcd1234x=other"]);
        for gone in [
            "x-forwarded-user",
            "forwarded",
            "x-authentik-username",
            "x_authentik_groups",
            "connection",
            "x-custom",
            "keep-alive",
            "te",
            "proxy-authorization",
            "upgrade",
            "expect",
        ] {
            assert!(!h.contains_key(gone), "{gone} passed: {h:?}");
        }
        assert!(h.keys().all(|k| !k.as_str().contains('_')), "{h:?}");
    }

    /// What the outpost's cookies leave of `Cookie`: spaces trimmed, empty pairs dropped,
    /// several lines joined, a line with anything but visible ASCII dropped whole, and no
    /// header at all when nothing is left.
    #[test]
    fn cookie_lines_without_the_outposts_cookies() {
        let strip = |lines: &[&[u8]]| {
            let mut h = HeaderMap::new();
            for l in lines {
                h.append(COOKIE, HeaderValue::from_bytes(l).unwrap());
            }
            strip_cookies(
                &mut h,
                "authentik_proxy_abcd1234",
                "authentik_proxy_abcd1234_login",
            );
            let got: Vec<_> = h
                .get_all(COOKIE)
                .iter()
                .map(|v| v.as_bytes().to_vec())
                .collect();
            got
        };
        assert_eq!(
            strip(&[b"  a=1 ;;\tb = 2 ; authentik_proxy_abcd1234_7=x;c", b"d=4"]),
            [b"a=1; b = 2; c; d=4".to_vec()]
        );
        assert_eq!(
            strip(&[
                b"authentik_proxy_abcd1234=s",
                b" authentik_proxy_abcd1234_login=b "
            ]),
            Vec::<Vec<u8>>::new()
        );
        assert_eq!(
            strip(&[b"a=\xe9t\xe9", b"authentik_proxy_abcd1234_100=kept; x=1"]),
            [b"authentik_proxy_abcd1234_100=kept; x=1".to_vec()]
        );
        assert_eq!(
            strip(&[b"=v; authentik_proxy_abcd1234 =s"]),
            [b"=v".to_vec()]
        );
    }

    #[test]
    fn a_trusted_proxy_in_front_is_appended_to() {
        let mut h = map(&[
            ("host", "frontend"),
            ("x-forwarded-for", "203.0.113.9, 10.1.1.1"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "app.example.com"),
            ("via", "1.1 caddy"),
        ]);
        let f = Forwarding {
            trusted: true,
            ..fwd()
        };
        upstream_headers(&mut h, None, &f);
        assert_eq!(h["x-forwarded-for"], "203.0.113.9, 10.1.1.1, 10.0.0.7");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "app.example.com");
        let via: Vec<_> = h.get_all(VIA).iter().collect();
        assert_eq!(via, ["1.1 caddy", VIA_VALUE]);
    }

    /// CVE-2024-45410's shape: naming forwarding headers in `Connection` cannot remove them,
    /// they are rebuilt from the connection.
    #[test]
    fn connection_cannot_drop_forwarding_headers() {
        let mut h = map(&[
            ("host", "frontend"),
            (
                "connection",
                "x-forwarded-for, x-forwarded-proto, x-forwarded-host, x-real-ip",
            ),
        ]);
        let f = Forwarding { tls: true, ..fwd() };
        upstream_headers(&mut h, None, &f);
        assert_eq!(h["x-forwarded-for"], "10.0.0.7");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "frontend");
    }

    #[test]
    fn identity_overwrites_and_credentials_stay_home() {
        let mut h = map(&[
            ("host", "frontend"),
            ("authorization", "Bearer the-users-token"),
            ("user-agent", "browser/1"),
            ("x-authentik-username", "forged"),
            ("cookie", "authentik_proxy_abcd1234=s1"),
        ]);
        let id = map(&[
            ("x-authentik-username", "alice"),
            ("x-authentik-groups", ""),
            ("user-agent", ""),
        ]);
        let f = Forwarding {
            drop_authorization: true,
            host_override: Some("internal.example"),
            ..fwd()
        };
        upstream_headers(&mut h, Some(&id), &f);
        assert_eq!(h["x-authentik-username"], "alice");
        assert_eq!(h["x-authentik-groups"], "");
        assert_eq!(h["user-agent"], "browser/1");
        assert_eq!(h["host"], "internal.example");
        assert_eq!(h["x-forwarded-host"], "frontend");
        assert!(!h.contains_key(AUTHORIZATION));
        assert!(!h.contains_key(COOKIE));
        // Basic injection: the identity's Authorization replaces the client's.
        let mut h = map(&[("host", "f"), ("authorization", "Bearer t")]);
        let id = map(&[("authorization", "Basic Zm9vOmJheg==")]);
        upstream_headers(
            &mut h,
            Some(&id),
            &Forwarding {
                drop_authorization: true,
                ..fwd()
            },
        );
        assert_eq!(h["authorization"], "Basic Zm9vOmJheg==");
    }

    #[test]
    fn upgrades_keep_their_handshake() {
        let mut h = map(&[
            ("host", "frontend"),
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ]);
        assert!(wants_upgrade(&h));
        upstream_headers(
            &mut h,
            None,
            &Forwarding {
                upgrade: true,
                ..fwd()
            },
        );
        assert_eq!(h["connection"], "upgrade");
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["sec-websocket-key"], "dGhlIHNhbXBsZSBub25jZQ==");
        assert!(!wants_upgrade(&map(&[("upgrade", "websocket")])));
        assert!(!wants_upgrade(&map(&[("connection", "upgrade")])));
    }

    #[test]
    fn response_headers() {
        let mut h = map(&[
            ("content-type", "text/plain"),
            ("connection", "close, x-secret"),
            ("x-secret", "1"),
            ("transfer-encoding", "chunked"),
            ("keep-alive", "timeout=5"),
            ("upgrade", "h2c"),
            ("set-cookie", "app=1"),
        ]);
        downstream_headers(&mut h, false);
        assert_eq!(h["content-type"], "text/plain");
        assert_eq!(h["set-cookie"], "app=1");
        assert_eq!(h["x-powered-by"], "goauthentik.io");
        assert_eq!(h["via"], VIA_VALUE);
        for gone in [
            "connection",
            "x-secret",
            "transfer-encoding",
            "keep-alive",
            "upgrade",
        ] {
            assert!(!h.contains_key(gone), "{gone}");
        }
        let mut h = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        downstream_headers(&mut h, true);
        assert_eq!(h["connection"], "upgrade");
        assert_eq!(h["upgrade"], "websocket");
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Header names a hostile client might send: identity and forwarding look-alikes,
        /// hop-by-hop names, underscores, case variants, and ordinary ones.
        fn name() -> impl Strategy<Value = String> {
            prop_oneof![
                Just("x-authentik-username".to_string()),
                Just("X-Authentik-Groups".to_string()),
                Just("x_authentik_uid".to_string()),
                Just("x-forwarded-for".to_string()),
                Just("x-forwarded-host".to_string()),
                Just("forwarded".to_string()),
                Just("connection".to_string()),
                Just("keep-alive".to_string()),
                Just("te".to_string()),
                Just("upgrade".to_string()),
                Just("proxy-authorization".to_string()),
                Just("cookie".to_string()),
                "[a-zA-Z][a-zA-Z0-9_-]{0,12}",
            ]
        }

        /// Values: cookie lines mixing the outpost's cookies with others, `Connection`
        /// token lists, and arbitrary visible text.
        fn value() -> impl Strategy<Value = String> {
            prop_oneof![
                proptest::collection::vec(
                    prop_oneof![
                        Just("authentik_proxy_abcd1234=s".to_string()),
                        Just("authentik_proxy_abcd1234_3=c".to_string()),
                        Just("authentik_proxy_abcd1234_login=b".to_string()),
                        Just(" authentik_proxy_abcd1234 =x".to_string()),
                        "[a-z_]{1,20}=[!-~]{0,10}",
                    ],
                    0..5
                )
                .prop_map(|v| v.join("; ")),
                Just("x-forwarded-for, x-authentik-username, keep-alive".to_string()),
                "[ -~]{0,30}",
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(3000))]

            /// Whatever the client sends, the upstream gets no forged identity, no header with
            /// `_`, no hop-by-hop header, none of the outpost's cookies, and forwarding headers
            /// that name the connection.
            #[test]
            fn nothing_forged_crosses(pairs in proptest::collection::vec((name(), value()), 0..12)) {
                let mut h = HeaderMap::new();
                for (n, v) in &pairs {
                    if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(n.as_bytes()), HeaderValue::from_str(v)) {
                        h.append(n, v);
                    }
                }
                upstream_headers(&mut h, None, &fwd());
                for (n, v) in &h {
                    let n = n.as_str();
                    prop_assert!(!n.starts_with("x-authentik-") && !n.contains('_'), "{n} crossed");
                    prop_assert!(!HOP_BY_HOP.iter().any(|hop| hop.as_str() == n), "{n} crossed");
                    prop_assert!(n != "forwarded", "forwarded crossed");
                    if n == "cookie" {
                        let text = v.to_str().unwrap_or_default();
                        for pair in text.split(';') {
                            let cookie = pair.split('=').next().unwrap_or_default().trim();
                            prop_assert!(
                                cookie != "authentik_proxy_abcd1234"
                                    && cookie != "authentik_proxy_abcd1234_3"
                                    && cookie != "authentik_proxy_abcd1234_login",
                                "{text}"
                            );
                        }
                    }
                }
                prop_assert_eq!(h.get_all(X_FORWARDED_FOR).iter().count(), 1);
                prop_assert_eq!(&h[X_FORWARDED_FOR], "10.0.0.7");
                prop_assert_eq!(&h[X_FORWARDED_HOST], "frontend");
                prop_assert_eq!(&h[HOST], "frontend");
            }
        }
    }
}
