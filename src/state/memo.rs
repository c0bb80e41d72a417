//! Memos of opened sessions: small, bounded tables from what a request authenticates with
//! (a session cookie's exact value, or an `Authorization` header) to what checking it
//! produced the first time: the session, its token's cache key, and the response parts
//! (identity headers, and for header authentication the cookie that stores the session). A
//! client sends the same value on every request, so the hot path skips base64, AES-GCM, JSON
//! and header building after the first check.
//!
//! A memo is an accelerator, not a store: an entry is made only after the value was opened
//! and its token found live, a hit needs the whole value to match byte for byte, and every
//! hit still goes through the session's expiry, the ended-session list and the (cached)
//! token check; a header entry is used only while the cached upstream answer it was built
//! from is the current one. Entries belong to one [`Application`] (by identity), and the
//! tables live in the `Runtime` (`state::outpost`), so a reload starts them empty.
//!
//! Direct-mapped: a slot per hash of the value's tail (for a cookie, the GCM tag, random per
//! cookie), replaced on collision. Memory is bounded by the slot count times the entry size
//! limit.

use std::hash::BuildHasher;
use std::sync::Arc;

use arc_swap::ArcSwapOption;

use crate::core::identity_headers::Prepared;
use crate::core::session::Session;
use crate::provider::HeaderIdentity;
use crate::state::application::Application;

/// Slots in a table (a power of two).
pub const SLOTS: usize = 1024;
/// Values longer than this are not remembered (bounds memory: with the session and the
/// response parts an entry stays within a few KiB, so a full table within a few MiB).
pub const MAX_VALUE_LEN: usize = 4096;
/// Bytes of the value's end that pick the slot.
const TAIL: usize = 24;

/// What checking one value produced.
pub struct Opened {
    /// The app whose key opened it.
    app: Arc<Application>,
    /// The exact value.
    value: Box<[u8]>,
    /// For header authentication: the cached upstream answer this entry was built from.
    pub source: Option<Arc<HeaderIdentity>>,
    pub session: Arc<Session>,
    /// The key (`oidc::token_key`) of the cached upstream answer every hit consults: of the
    /// session's access token for a cookie, of the whole header for an `Authorization` value.
    /// A hit matched the value byte for byte, so this is the key the value would hash to.
    pub token_key: [u8; 32],
    pub prepared: Arc<Prepared>,
}

/// One table.
pub struct SessionMemo {
    slots: Box<[ArcSwapOption<Opened>]>,
    /// Which slot a value takes: keyed per process, so no client can aim its values at
    /// another's slot (foldhash's quality variant: the slot is the hash's low bits).
    hasher: foldhash::quality::RandomState,
}

impl Default for SessionMemo {
    fn default() -> Self {
        SessionMemo::new()
    }
}

impl SessionMemo {
    pub fn new() -> SessionMemo {
        SessionMemo {
            slots: (0..SLOTS).map(|_| ArcSwapOption::empty()).collect(),
            hasher: Default::default(),
        }
    }

    fn slot(&self, value: &[u8]) -> &ArcSwapOption<Opened> {
        let tail = &value[value.len().saturating_sub(TAIL)..];
        let i = self.hasher.hash_one(tail) as usize & (SLOTS - 1);
        &self.slots[i]
    }

    /// The entry for exactly this value of this app, if remembered.
    pub fn get(&self, app: &Arc<Application>, value: impl AsRef<[u8]>) -> Option<Arc<Opened>> {
        let value = value.as_ref();
        let guard = self.slot(value).load();
        let e = guard.as_ref()?;
        (Arc::ptr_eq(&e.app, app) && same_bytes(&e.value, value)).then(|| Arc::clone(e))
    }

    /// Remembers what `value` opened to, replacing whatever shared its slot.
    pub fn put(
        &self,
        app: &Arc<Application>,
        value: impl AsRef<[u8]>,
        source: Option<Arc<HeaderIdentity>>,
        session: Arc<Session>,
        token_key: [u8; 32],
        prepared: Arc<Prepared>,
    ) {
        let value = value.as_ref();
        if value.is_empty() || value.len() > MAX_VALUE_LEN {
            return;
        }
        // A hit never renews (that path opens the cookie itself): the refresh and ID tokens
        // would only take memory here.
        let session = match (&session.refresh_token, &session.id_token) {
            (None, None) => session,
            _ => Arc::new(Session {
                refresh_token: None,
                id_token: None,
                ..(*session).clone()
            }),
        };
        self.slot(value).store(Some(Arc::new(Opened {
            app: Arc::clone(app),
            value: value.into(),
            source,
            session,
            token_key,
            prepared,
        })));
    }

    /// Number of remembered values (for tests and benchmarks).
    pub fn len(&self) -> usize {
        self.slots.iter().filter(|s| s.load().is_some()).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whether two values are equal, looking at every byte whatever the first difference: how
/// long a comparison takes must not tell a client how much of someone's cookie it guessed.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut diff = 0u64;
    let (wa, wb) = (a.chunks_exact(8), b.chunks_exact(8));
    for (x, y) in wa.remainder().iter().zip(wb.remainder()) {
        diff |= u64::from(x ^ y);
    }
    for (x, y) in wa.zip(wb) {
        let (x, y) = (<[u8; 8]>::try_from(x), <[u8; 8]>::try_from(y));
        if let (Ok(x), Ok(y)) = (x, y) {
            diff |= u64::from_ne_bytes(x) ^ u64::from_ne_bytes(y);
        }
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::app::Mode;
    use crate::core::identity::Identity;
    use crate::state::application::tests::app;

    fn session(sub: &str) -> Arc<Session> {
        Arc::new(Session {
            version: 1,
            identity: Identity {
                sub: sub.into(),
                ..Default::default()
            },
            access_token: format!("token-of-{sub}"),
            access_expires_at: 100,
            access_issued_at: 0,
            refresh_token: None,
            id_token: None,
            expires_at: 100,
        })
    }

    fn put(m: &SessionMemo, a: &Arc<Application>, cookie: &str, sub: &str) {
        m.put(a, cookie, None, session(sub), [0; 32], Arc::default());
    }

    #[test]
    fn hits_need_the_exact_value_and_the_same_app() {
        let m = SessionMemo::new();
        let a = app("https://a.example.com", Mode::ForwardSingle, "");
        let b = app("https://b.example.com", Mode::ForwardSingle, "");
        let cookie = "x".repeat(100) + "tail-of-the-cookie-with-its-tag";
        put(&m, &a, &cookie, "alice");
        assert_eq!(m.get(&a, &cookie).unwrap().session.identity.sub, "alice");
        // Same tail (same slot), different body: a miss, never alice's session.
        let forged = "y".repeat(100) + "tail-of-the-cookie-with-its-tag";
        assert!(m.get(&a, &forged).is_none());
        // One byte longer or shorter: a miss.
        assert!(m.get(&a, &cookie[1..]).is_none());
        assert!(m.get(&a, format!("{cookie}=")).is_none());
        // The same cookie presented for another app (another key): a miss.
        assert!(m.get(&b, &cookie).is_none());
        // An app rebuilt by a reload is another app.
        let a2 = app("https://a.example.com", Mode::ForwardSingle, "");
        assert!(m.get(&a2, &cookie).is_none());
    }

    #[test]
    fn byte_comparison() {
        for (a, b, same) in [
            ("", "", true),
            ("abc", "abc", true),
            ("abc", "abd", false),
            ("abc", "abcd", false),
            ("0123456789abcdefXYZ", "0123456789abcdefXYZ", true),
            ("0123456789abcdefXYZ", "0123456789abcdefXYz", false),
            ("0123456789abcdefXYZ", "1123456789abcdefXYZ", false),
            ("0123456789abcdef", "0123456789abcdeF", false),
        ] {
            assert_eq!(
                same_bytes(a.as_bytes(), b.as_bytes()),
                same,
                "{a:?} vs {b:?}"
            );
        }
    }

    #[test]
    fn bounded_and_replacing() {
        let m = SessionMemo::new();
        let a = app("https://a.example.com", Mode::ForwardSingle, "");
        for i in 0..SLOTS * 4 {
            put(&m, &a, &format!("cookie-number-{i:08}"), "u");
        }
        assert!(m.len() <= SLOTS);
        assert!(m.len() > SLOTS / 2, "the hash spreads over the slots");
        // The latest value is always found (it replaced whatever shared its slot).
        let last = format!("cookie-number-{:08}", SLOTS * 4 - 1);
        assert!(m.get(&a, &last).is_some());
        // Empty and oversized values are never remembered.
        put(&m, &a, "", "u");
        assert!(m.get(&a, "").is_none());
        let huge = "z".repeat(MAX_VALUE_LEN + 1);
        put(&m, &a, &huge, "u");
        assert!(m.get(&a, &huge).is_none());
    }
}
