//! The opened-session memo: a small, bounded table from a session cookie's exact value to what
//! opening it produced (the session, its token's cache key, the identity headers). A browser
//! sends the same cookie on every request, so the hot path skips base64, AES-GCM, JSON and
//! header building after the first check.
//!
//! It is an accelerator, not a store: an entry is made only after the cookie was unsealed and
//! its token found live, a hit needs the whole cookie value to match byte for byte, and every
//! hit still goes through the session's expiry, the ended-session list and the (cached)
//! token check. Entries belong to one [`Application`] (by identity), and the table lives in
//! the [`Runtime`](crate::outpost::Runtime), so a reload starts it empty.
//!
//! Direct-mapped: a slot per hash of the value's tail (the GCM tag, which is random per
//! cookie), replaced on collision. Memory is bounded by the slot count times the entry size
//! limit.

use std::hash::BuildHasher;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use http::HeaderMap;

use crate::app::Application;
use crate::session::Session;

/// Slots in the table (a power of two).
pub const SLOTS: usize = 2048;
/// Cookies longer than this are not remembered (bounds memory: ~3 entries' worth of text
/// each, so the full table stays within a few MiB).
pub const MAX_COOKIE_LEN: usize = 4096;
/// Bytes of the cookie's end that pick the slot.
const TAIL: usize = 24;

/// What opening one cookie produced.
pub struct Opened {
    /// The app whose key opened it.
    app: Arc<Application>,
    /// The exact cookie value.
    cookie: Box<str>,
    pub session: Arc<Session>,
    /// `oidc::token_key` of the session's access token.
    pub token_key: [u8; 32],
    /// The identity headers for this session and app (without the per-request `User-Agent`).
    pub headers: Arc<HeaderMap>,
}

/// The table.
pub struct SessionMemo {
    slots: Box<[ArcSwapOption<Opened>]>,
    hasher: std::collections::hash_map::RandomState,
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

    fn slot(&self, cookie: &str) -> &ArcSwapOption<Opened> {
        let b = cookie.as_bytes();
        let tail = &b[b.len().saturating_sub(TAIL)..];
        let i = self.hasher.hash_one(tail) as usize & (SLOTS - 1);
        &self.slots[i]
    }

    /// The entry for exactly this cookie value of this app, if remembered.
    pub fn get(&self, app: &Arc<Application>, cookie: &str) -> Option<Arc<Opened>> {
        let guard = self.slot(cookie).load();
        let e = guard.as_ref()?;
        (Arc::ptr_eq(&e.app, app) && *e.cookie == *cookie).then(|| Arc::clone(e))
    }

    /// Remembers what `cookie` opened to, replacing whatever shared its slot.
    pub fn put(
        &self,
        app: &Arc<Application>,
        cookie: &str,
        session: Arc<Session>,
        token_key: [u8; 32],
        headers: Arc<HeaderMap>,
    ) {
        if cookie.is_empty() || cookie.len() > MAX_COOKIE_LEN {
            return;
        }
        self.slot(cookie).store(Some(Arc::new(Opened {
            app: Arc::clone(app),
            cookie: cookie.into(),
            session,
            token_key,
            headers,
        })));
    }

    /// Number of remembered cookies (for tests and benchmarks).
    pub fn len(&self) -> usize {
        self.slots.iter().filter(|s| s.load().is_some()).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::Mode;
    use crate::app::tests::app;
    use crate::session::Identity;

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
        m.put(a, cookie, session(sub), [0; 32], Arc::new(HeaderMap::new()));
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
        assert!(m.get(&a, &format!("{cookie}=")).is_none());
        // The same cookie presented for another app (another key): a miss.
        assert!(m.get(&b, &cookie).is_none());
        // An app rebuilt by a reload is another app.
        let a2 = app("https://a.example.com", Mode::ForwardSingle, "");
        assert!(m.get(&a2, &cookie).is_none());
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
        let huge = "z".repeat(MAX_COOKIE_LEN + 1);
        put(&m, &a, &huge, "u");
        assert!(m.get(&a, &huge).is_none());
    }
}
