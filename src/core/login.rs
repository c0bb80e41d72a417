//! The login round trip. The OAuth `state` parameter is a sealed [`LoginState`] carrying the
//! PKCE verifier, the nonce, the return target and a hash of a per-browser binding cookie, so
//! nothing is stored server-side and any replica can finish a login another one started. It
//! cannot be read or altered in transit, expires, is bound to the browser that started the
//! login, and each one is accepted once per process (the provider's single-use codes cover
//! replays across replicas). Pure: sealing and checks only; which states were used is
//! remembered in `state::outpost`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::core::seal::Sealer;

/// How long a login may take, from `/start` to `/callback`.
pub const STATE_TTL_SECS: i64 = 1800;
/// Lifetime of the binding cookie.
pub const BINDING_TTL_SECS: i64 = 3600;
/// Login restarts (after a failed callback) before the outpost gives up with an error page.
pub const MAX_ATTEMPTS: u8 = 3;

/// What the outpost needs back at the callback.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LoginState {
    /// Random id, for replay detection.
    #[serde(rename = "j")]
    pub id: String,
    /// Hash of the binding cookie's value.
    #[serde(rename = "b")]
    pub binding: String,
    #[serde(rename = "v")]
    pub verifier: String,
    #[serde(rename = "n")]
    pub nonce: String,
    /// The validated return target.
    #[serde(rename = "r")]
    pub redirect: String,
    #[serde(rename = "t")]
    pub issued_at: i64,
    /// Which restart of the login this is (0 for the first).
    #[serde(rename = "a", default)]
    pub attempt: u8,
}

/// Why a state was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateError {
    /// Not ours, tampered, or malformed.
    Unreadable,
    Expired(Box<LoginState>),
    /// The binding cookie is missing or belongs to another browser.
    WrongBrowser(Box<LoginState>),
}

/// Name of the binding cookie next to the session cookie.
pub fn binding_cookie_name(session_cookie: &str) -> String {
    format!("{session_cookie}_login")
}

/// Hash of a binding cookie value, as stored in the state.
pub fn binding_hash(cookie_value: &str) -> String {
    URL_SAFE_NO_PAD.encode(&Sha256::digest(cookie_value.as_bytes())[..16])
}

/// A binding value is 32 random bytes in base64url.
pub fn is_binding_value(v: &str) -> bool {
    v.len() == 43
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl LoginState {
    pub fn seal(&self, sealer: &Sealer, aad: &[u8]) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        sealer.seal(aad, &json)
    }

    /// Opens and checks a state against the browser's binding cookie.
    pub fn open(
        sealer: &Sealer,
        aad: &[u8],
        sealed: &str,
        binding_cookie: Option<&str>,
        now: i64,
    ) -> Result<LoginState, StateError> {
        let plain = sealer.unseal(aad, sealed).ok_or(StateError::Unreadable)?;
        let st: LoginState = serde_json::from_slice(&plain).map_err(|_| StateError::Unreadable)?;
        if now - st.issued_at > STATE_TTL_SECS || st.issued_at - now > 60 {
            return Err(StateError::Expired(Box::new(st)));
        }
        match binding_cookie {
            Some(v) if binding_hash(v) == st.binding => Ok(st),
            _ => Err(StateError::WrongBrowser(Box::new(st))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(binding: &str, now: i64) -> LoginState {
        LoginState {
            id: "id".into(),
            binding: binding_hash(binding),
            verifier: "v".into(),
            nonce: "n".into(),
            redirect: "https://app/".into(),
            issued_at: now,
            attempt: 0,
        }
    }

    #[test]
    fn state_round_trip_and_failures() {
        let s = Sealer::new(b"0123456789abcdef0123456789abcdef", "state");
        let b = "browser-binding";
        let st = state(b, 1000);
        let sealed = st.seal(&s, b"c");
        assert_eq!(
            LoginState::open(&s, b"c", &sealed, Some(b), 1010),
            Ok(st.clone())
        );
        assert_eq!(
            LoginState::open(&s, b"c", &sealed, Some("other"), 1010),
            Err(StateError::WrongBrowser(Box::new(st.clone())))
        );
        assert_eq!(
            LoginState::open(&s, b"c", &sealed, None, 1010),
            Err(StateError::WrongBrowser(Box::new(st.clone())))
        );
        assert_eq!(
            LoginState::open(&s, b"c", &sealed, Some(b), 1000 + STATE_TTL_SECS + 1),
            Err(StateError::Expired(Box::new(st.clone())))
        );
        assert_eq!(
            LoginState::open(&s, b"other-app", &sealed, Some(b), 1010),
            Err(StateError::Unreadable)
        );
        assert_eq!(
            LoginState::open(&s, b"c", "garbage", Some(b), 1010),
            Err(StateError::Unreadable)
        );
    }

    #[test]
    fn binding_values() {
        assert!(is_binding_value(&crate::core::token::random_token(32)));
        assert!(!is_binding_value("short"));
        assert!(!is_binding_value(&format!("{}!", "a".repeat(42))));
    }
}
