//! Header names the outpost reads and writes, spelled once, and the identity header set.
//! Constants and a setter; nothing here decides anything.

use http::header::{HeaderMap, HeaderName, HeaderValue};

pub const X_ORIGINAL_URL: HeaderName = HeaderName::from_static("x-original-url");
pub const X_ORIGINAL_URI: HeaderName = HeaderName::from_static("x-original-uri");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub const X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");
pub const X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
pub const X_ORIGINAL_METHOD: HeaderName = HeaderName::from_static("x-original-method");
pub const SEC_FETCH_MODE: HeaderName = HeaderName::from_static("sec-fetch-mode");
pub const X_REQUESTED_WITH: HeaderName = HeaderName::from_static("x-requested-with");
pub const ACCESS_CONTROL_REQUEST_METHOD: HeaderName =
    HeaderName::from_static("access-control-request-method");

pub const AK_USERNAME: HeaderName = HeaderName::from_static("x-authentik-username");
pub const AK_GROUPS: HeaderName = HeaderName::from_static("x-authentik-groups");
pub const AK_ENTITLEMENTS: HeaderName = HeaderName::from_static("x-authentik-entitlements");
pub const AK_EMAIL: HeaderName = HeaderName::from_static("x-authentik-email");
pub const AK_NAME: HeaderName = HeaderName::from_static("x-authentik-name");
pub const AK_UID: HeaderName = HeaderName::from_static("x-authentik-uid");
pub const AK_JWT: HeaderName = HeaderName::from_static("x-authentik-jwt");
pub const AK_META_JWKS: HeaderName = HeaderName::from_static("x-authentik-meta-jwks");
pub const AK_META_OUTPOST: HeaderName = HeaderName::from_static("x-authentik-meta-outpost");
pub const AK_META_PROVIDER: HeaderName = HeaderName::from_static("x-authentik-meta-provider");
pub const AK_META_APP: HeaderName = HeaderName::from_static("x-authentik-meta-app");
pub const AK_META_VERSION: HeaderName = HeaderName::from_static("x-authentik-meta-version");

/// `goauthentik.io/outpost/<version>`, as `X-authentik-meta-version` carries it.
pub const META_VERSION: &str = concat!("goauthentik.io/outpost/", env!("CARGO_PKG_VERSION"));

/// Sets a header from text; a value that is not a valid header value (control characters)
/// becomes empty rather than failing the request or smuggling a line break.
pub fn set_text(map: &mut HeaderMap, name: HeaderName, value: &str) {
    let v =
        HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| HeaderValue::from_static(""));
    map.insert(name, v);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_values_become_empty() {
        let mut m = HeaderMap::new();
        set_text(&mut m, AK_NAME, "evil\r\nX-Injected: 1");
        assert_eq!(m.get(&AK_NAME).unwrap(), "");
        set_text(&mut m, AK_NAME, "Zoë");
        // Non-ASCII UTF-8 is carried as bytes, as Go does.
        assert_eq!(m.get(&AK_NAME).unwrap().as_bytes(), "Zoë".as_bytes());
    }
}
