//! `forwarded_url`: the edge of a check — `AuthRequest::parse` for every proxy flavour
//! (nginx `X-Original-URL` / `X-Original-URI`, Traefik and Caddy `X-Forwarded-*`, Envoy's
//! path and `Host`), trusted or not, and `AuthRequest::host`.
//!
//! Input: the first byte picks the flavour and whether the peer is trusted. The rest is lines:
//! the first is the request's path and query; each further line is a header, its first byte
//! picking the name from [`HEADERS`], the rest its value (lines that are not valid header
//! values are dropped).
//!
//! Invariants: an untrusted peer's forwarding headers are ignored; a parsed original URL is
//! `http://` or `https://`, has a plain authority, parses (vouched-for texts included) to a URL
//! with a host, no userinfo, the same scheme, port and — for a DNS name — the same host as its
//! authority text (the text selects the application, the URL is what skip paths and redirects
//! see); an nginx check's host is that authority; nginx checks are never navigations.

use ak_outpost::core::paths::{AUTH_ENVOY_PREFIX, Flavour};
use ak_outpost::core::request::{AuthRequest, ForwardError, is_plain_authority, request_host};
use http::HeaderValue;
use url::Host;

/// Header names a line can set.
pub const HEADERS: &[&str] = &[
    "x-original-url",
    "x-original-uri",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-uri",
    "host",
    "x-forwarded-method",
    "x-original-method",
    "accept",
    "sec-fetch-mode",
    "x-requested-with",
    "access-control-request-method",
];

const FLAVOURS: [Flavour; 4] = [
    Flavour::Nginx,
    Flavour::Traefik,
    Flavour::Caddy,
    Flavour::Envoy,
];

pub fn run(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let flavour = FLAVOURS[usize::from(first & 3)];
    let trusted = first & 4 != 0;
    let mut lines = rest.split(|&b| b == b'\n');
    let path = lines.next().unwrap_or_default();
    let mut uri = Vec::new();
    if flavour == Flavour::Envoy && first & 8 == 0 {
        uri.extend_from_slice(AUTH_ENVOY_PREFIX.as_bytes());
    }
    uri.extend_from_slice(path);
    let mut req = http::Request::builder().uri(if uri.is_empty() { &b"/"[..] } else { &uri });
    if first & 16 != 0 {
        req = req.method("OPTIONS");
    }
    for line in lines {
        let Some((&name, value)) = line.split_first() else {
            continue;
        };
        if let Ok(v) = HeaderValue::from_bytes(value) {
            req = req.header(HEADERS[usize::from(name) % HEADERS.len()], v);
        }
    }
    let Ok(req) = req.body(()) else {
        return;
    };
    let (parts, ()) = req.into_parts();
    let r = AuthRequest::parse(flavour, &parts, trusted);
    if !trusted && flavour != Flavour::Envoy {
        assert_eq!(r.original, Err(ForwardError::Untrusted));
    }
    if flavour == Flavour::Nginx {
        assert!(!r.navigation, "nginx checks are never redirected");
    }
    if let Ok(u) = &r.original {
        let text = u.as_str();
        let scheme = if text.starts_with("https://") {
            "https"
        } else {
            assert!(text.starts_with("http://"), "not http(s): {text:?}");
            "http"
        };
        let authority = u.authority();
        assert!(
            is_plain_authority(authority),
            "authority {authority:?} of {text:?}"
        );
        assert_eq!(
            text.get(scheme.len() + 3..)
                .and_then(|t| t.strip_prefix(authority))
                .map(|p| p.starts_with('/')),
            Some(true),
            "{text:?} is not scheme://authority/path"
        );
        let url = u
            .url()
            .unwrap_or_else(|| panic!("original URL {text:?} does not parse"));
        assert_eq!(url.scheme(), scheme, "{text:?}");
        assert!(
            url.username().is_empty() && url.password().is_none(),
            "{text:?}"
        );
        let (host, port) = split_authority(authority);
        if let Some(Host::Domain(d)) = url.host() {
            assert_eq!(d, host.to_ascii_lowercase(), "host of {text:?}");
        }
        assert!(url.host().is_some(), "{text:?} has no host");
        if let Some(p) = port {
            let p: u16 = p.parse().unwrap_or_else(|_| panic!("port of {text:?}"));
            assert_eq!(url.port_or_known_default(), Some(p), "port of {text:?}");
        } else {
            assert_eq!(url.port(), None, "port of {text:?}");
        }
        if flavour == Flavour::Nginx {
            assert_eq!(r.host(&parts, trusted), Some(authority));
        }
    }
    let _ = r.host(&parts, trusted);
    let _ = request_host(&parts, trusted, None);
}

/// `host[:port]` or `[v6][:port]` split at the port's colon.
fn split_authority(authority: &str) -> (&str, Option<&str>) {
    if authority.starts_with('[') {
        return match authority.rsplit_once("]:") {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        };
    }
    match authority.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (authority, None),
    }
}
