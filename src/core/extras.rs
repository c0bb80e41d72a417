//! authentik's per-user extras from the `ak_proxy` claim: HTTP Basic credentials for the app
//! (`basic_auth_enabled`) and `additionalHeaders` from user attributes. Pure: values come from
//! the identity's claims; names that would change framing, routing or cookies are refused.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

use crate::core::app::Site;
use crate::core::identity::Identity;

/// Headers a user attribute may never set: they would change how the response itself is
/// framed or routed, or forge cookies.
const FORBIDDEN: &[&str] = &[
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "set-cookie",
    "location",
    "host",
    "proxy-authenticate",
    "proxy-authorization",
];

/// Adds Basic credentials and `additionalHeaders`, then drops every header whose name has an
/// underscore (a proxy may map `X_Authentik_Username` onto `X-Authentik-Username`).
pub fn extra_headers(h: &mut HeaderMap, app: &Site, id: &Identity) {
    if let Some(attrs) = id
        .ak_proxy
        .as_ref()
        .and_then(|a| a.get("user_attributes"))
        .and_then(Value::as_object)
    {
        if let Some((user_attr, pw_attr)) = &app.extras.basic_auth {
            let pw = attrs
                .get(pw_attr)
                .and_then(Value::as_str)
                .unwrap_or_default();
            let user = attrs
                .get(user_attr)
                .and_then(Value::as_str)
                .unwrap_or(id.email.as_str());
            if !pw.is_empty() {
                let token = STANDARD.encode(format!("{user}:{pw}"));
                if let Ok(v) = HeaderValue::from_str(&format!("Basic {token}")) {
                    h.insert(AUTHORIZATION, v);
                }
            }
        }
        if let Some(extra) = attrs.get("additionalHeaders").and_then(Value::as_object) {
            for (k, v) in extra {
                let Ok(name) = HeaderName::from_bytes(k.as_bytes()) else {
                    continue;
                };
                if FORBIDDEN.contains(&name.as_str()) {
                    continue;
                }
                // Strings as-is, integers in decimal, anything else empty (authentik's rule).
                let text = match v {
                    Value::String(s) => s.clone(),
                    Value::Number(n) if n.is_i64() || n.is_u64() => n.to_string(),
                    _ => String::new(),
                };
                let value = HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static(""));
                h.insert(name, value);
            }
        }
    }
    let underscored: Vec<HeaderName> = h
        .keys()
        .filter(|k| k.as_str().contains('_'))
        .cloned()
        .collect();
    for k in underscored {
        h.remove(k);
    }
}
