//! Sealing: AES-256-GCM encryption with authentication, for session cookies and login state. A
//! value sealed for one purpose (the additional data, e.g. the cookie name) cannot be opened as
//! another. Keys are derived from the configured secret with HMAC-SHA256, so the same secret on
//! every replica yields the same keys and sessions survive restarts. Pure cryptography: no
//! clock, no cookie semantics.

use aes_gcm::aead::{Aead, AeadInPlace, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// Encrypts and authenticates small values; opens only what it sealed.
pub struct Sealer {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(<redacted>)")
    }
}

impl Sealer {
    /// Derives a key from `secret` for one `context` (e.g. "session").
    pub fn new(secret: &[u8], context: &str) -> Sealer {
        let key = derive_key(secret, context);
        Sealer {
            cipher: Aes256Gcm::new(&key.into()),
        }
    }

    /// Seals `plaintext` bound to `aad`; the result is URL- and cookie-safe text.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut nonce);
        // Encryption only fails for inputs beyond GCM's 64 GiB limit.
        let ct = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .unwrap_or_default();
        let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        URL_SAFE_NO_PAD.encode(out)
    }

    /// Opens a sealed value; `None` for anything tampered, truncated, foreign or malformed.
    pub fn unseal(&self, aad: &[u8], sealed: impl AsRef<[u8]>) -> Option<Vec<u8>> {
        let mut raw = URL_SAFE_NO_PAD.decode(sealed.as_ref().trim_ascii()).ok()?;
        if raw.len() < NONCE_LEN + TAG_LEN {
            return None;
        }
        // Decrypt in the decoded buffer itself: no second allocation on the hot path.
        let tag_at = raw.len() - TAG_LEN;
        let (head, tag) = raw.split_at_mut(tag_at);
        let (nonce, ct) = head.split_at_mut(NONCE_LEN);
        self.cipher
            .decrypt_in_place_detached(Nonce::from_slice(nonce), aad, ct, Tag::from_slice(tag))
            .ok()?;
        raw.truncate(tag_at);
        raw.drain(..NONCE_LEN);
        Some(raw)
    }
}

/// HMAC-SHA256(secret, "ak-outpost/" + context): a 32-byte key per purpose.
pub fn derive_key(secret: &[u8], context: &str) -> [u8; 32] {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(b"ak-outpost/");
    mac.update(context.as_bytes());
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_binding() {
        let s = Sealer::new(b"0123456789abcdef0123456789abcdef", "session");
        let sealed = s.seal(b"cookie_a", b"hello");
        assert_eq!(
            s.unseal(b"cookie_a", &sealed).as_deref(),
            Some(&b"hello"[..])
        );
        assert_eq!(s.unseal(b"cookie_b", &sealed), None, "bound to its purpose");
        let other = Sealer::new(b"another-secret-another-secret-xx", "session");
        assert_eq!(other.unseal(b"cookie_a", &sealed), None, "foreign key");
        let ctx = Sealer::new(b"0123456789abcdef0123456789abcdef", "state");
        assert_eq!(ctx.unseal(b"cookie_a", &sealed), None, "foreign context");
    }

    #[test]
    fn tampering_and_garbage_fail_closed() {
        let s = Sealer::new(b"0123456789abcdef0123456789abcdef", "session");
        let sealed = s.seal(b"a", b"payload");
        let mut bytes = sealed.clone().into_bytes();
        let mid = bytes.len() / 2;
        bytes[mid] = if bytes[mid] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).unwrap();
        assert_eq!(s.unseal(b"a", &tampered), None);
        for junk in [
            "",
            "x",
            "!!!!",
            "AAAA",
            &sealed[..sealed.len() - 2],
            "a.b.c",
            "\u{1F600}",
        ] {
            assert_eq!(s.unseal(b"a", junk), None, "{junk:?}");
        }
    }

    #[test]
    fn nonces_differ() {
        let s = Sealer::new(b"0123456789abcdef0123456789abcdef", "x");
        assert_ne!(s.seal(b"", b"same"), s.seal(b"", b"same"));
    }
}
