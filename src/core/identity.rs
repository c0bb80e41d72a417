//! Who the user is: the identity claims of an ID token, userinfo answer or introspection,
//! as the identity headers report them. Pure data; it never holds a token.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Who the user is, as the identity headers report it.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Identity {
    #[serde(rename = "s")]
    pub sub: String,
    #[serde(rename = "u", default, skip_serializing_if = "String::is_empty")]
    pub username: String,
    #[serde(rename = "e", default, skip_serializing_if = "String::is_empty")]
    pub email: String,
    #[serde(rename = "n", default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(rename = "g", default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    #[serde(rename = "en", default, skip_serializing_if = "Vec::is_empty")]
    pub entitlements: Vec<String>,
    #[serde(rename = "sid", default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// authentik's `ak_proxy` claim (user attributes for Basic injection and extra headers).
    #[serde(rename = "ak", default, skip_serializing_if = "Option::is_none")]
    pub ak_proxy: Option<Value>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("sub", &self.sub)
            .field("username", &self.username)
            .field("groups", &self.groups)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// Reads identity claims from an ID token or userinfo object. `None` without a `sub`.
    pub fn from_claims(c: &Map<String, Value>) -> Option<Identity> {
        let sub = c.get("sub")?.as_str()?.to_string();
        if sub.is_empty() {
            return None;
        }
        let text = |k: &str| {
            c.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        Some(Identity {
            sub,
            username: text("preferred_username"),
            email: text("email"),
            name: text("name"),
            groups: string_list(c.get("groups")),
            entitlements: string_list(c.get("entitlements")),
            sid: c.get("sid").and_then(Value::as_str).map(str::to_string),
            ak_proxy: c.get("ak_proxy").filter(|v| v.is_object()).cloned(),
        })
    }

    /// Fills fields the ID token left empty from userinfo claims of the same subject.
    pub fn merge_userinfo(&mut self, info: &Map<String, Value>) {
        if info.get("sub").and_then(Value::as_str) != Some(self.sub.as_str()) {
            return;
        }
        if let Some(more) = Identity::from_claims(info) {
            if self.username.is_empty() {
                self.username = more.username;
            }
            if self.email.is_empty() {
                self.email = more.email;
            }
            if self.name.is_empty() {
                self.name = more.name;
            }
            if self.groups.is_empty() {
                self.groups = more.groups;
            }
            if self.entitlements.is_empty() {
                self.entitlements = more.entitlements;
            }
            if self.ak_proxy.is_none() {
                self.ak_proxy = more.ak_proxy;
            }
        }
    }
}

/// A claim that should be a list of strings: arrays keep their string (and number) items,
/// a single string becomes one item, anything else is empty.
pub fn string_list(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|i| match i {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .collect(),
        Some(Value::String(s)) if !s.is_empty() => vec![s.clone()],
        _ => Vec::new(),
    }
}
