//! A bounded set of strings, each forgotten a fixed time after it was added: the process's
//! used login states, the provider sessions ended by the server, and the applications whose
//! misconfiguration was reported recently (`state::outpost`).
//!
//! One lock around a map and a queue in insertion order. Every entry lives the same time, so
//! the queue's front is always the next to expire (dropped on the next insert) and, when the
//! set is full, the oldest (dropped to make room, as a bounded cache would). The lookup on
//! every check, [`TtlSet::contains`], takes no lock while the set is empty, which it is
//! unless the provider ends sessions; these sets replaced a general cache crate, whose code
//! (≈ 120 KB of the binary, all of it mapped) and per-lookup bookkeeping they did not need.
//!
//! Members are kept as a keyed 64-bit hash (SipHash with a key random per set), not as the
//! string: ≈ 50 bytes a member however long the string (login states are a few hundred
//! bytes), so a set at its bound stays small. Two strings sharing a hash would count as one:
//! with a key no client knows, that happens with odds of about one in 10^13 for a full set
//! of a million, and it can only make a set say "member" (a login state refused as used, a
//! session as ended), never let something in.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// The set.
pub struct TtlSet {
    ttl: Duration,
    capacity: usize,
    /// Entries held, possibly expired ones included: zero means certainly empty.
    len: AtomicUsize,
    /// The key of the members' hashes.
    hasher: RandomState,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Each member's hash and when it was added.
    map: HashMap<u64, Instant>,
    /// The members in the order they were added.
    order: VecDeque<(Instant, u64)>,
}

impl TtlSet {
    /// An empty set of at most `capacity` members, each kept for `ttl`.
    pub fn new(capacity: usize, ttl: Duration) -> TtlSet {
        TtlSet {
            ttl,
            capacity: capacity.max(1),
            len: AtomicUsize::new(0),
            hasher: RandomState::new(),
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Adds `key`; true if it was not a member (a member that expired counts as absent and
    /// is added again, its time restarting).
    pub fn insert(&self, key: &str) -> bool {
        self.insert_at(key, Instant::now())
    }

    /// Whether `key` is a member that has not expired.
    pub fn contains(&self, key: &str) -> bool {
        if self.len.load(Ordering::Acquire) == 0 {
            return false;
        }
        let now = Instant::now();
        let key = self.hasher.hash_one(key);
        self.lock()
            .map
            .get(&key)
            .is_some_and(|added| now.saturating_duration_since(*added) < self.ttl)
    }

    fn insert_at(&self, key: &str, now: Instant) -> bool {
        let key = self.hasher.hash_one(key);
        let mut inner = self.lock();
        self.forget_expired(&mut inner, now);
        if inner.map.contains_key(&key) {
            return false;
        }
        while inner.map.len() >= self.capacity {
            let Some((_, oldest)) = inner.order.pop_front() else {
                break;
            };
            inner.map.remove(&oldest);
        }
        inner.map.insert(key, now);
        inner.order.push_back((now, key));
        self.len.store(inner.map.len(), Ordering::Release);
        true
    }

    /// Drops the members added `ttl` or longer before `now` (all at the queue's front).
    fn forget_expired(&self, inner: &mut Inner, now: Instant) {
        while let Some((added, _)) = inner.order.front() {
            if now.saturating_duration_since(*added) < self.ttl {
                break;
            }
            if let Some((_, key)) = inner.order.pop_front() {
                inner.map.remove(&key);
            }
        }
    }

    /// The lock; a panic while it was held left the set consistent (every change is a few
    /// map and queue operations that cannot panic half-way in a way that matters here), so a
    /// poisoned lock is used as is.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(60);

    #[test]
    fn a_member_is_found_until_it_expires_then_can_be_added_again() {
        let s = TtlSet::new(10, T);
        let t0 = Instant::now();
        assert!(!s.contains("a"));
        assert!(s.insert_at("a", t0));
        assert!(!s.insert_at("a", t0 + Duration::from_secs(59)));
        assert!(s.contains("a"));
        assert!(!s.contains("b"));
        // Expired: absent for insert, added again with a new time.
        assert!(s.insert_at("a", t0 + T));
        assert!(!s.insert_at("a", t0 + T + Duration::from_secs(59)));
    }

    #[test]
    fn contains_does_not_report_an_expired_member() {
        let s = TtlSet::new(10, Duration::ZERO);
        assert!(s.insert("a"));
        assert!(!s.contains("a"));
    }

    #[test]
    fn a_full_set_drops_its_oldest_members() {
        let s = TtlSet::new(3, T);
        let t0 = Instant::now();
        for (i, k) in ["a", "b", "c", "d"].iter().enumerate() {
            assert!(s.insert_at(k, t0 + Duration::from_secs(i as u64)));
        }
        assert!(!s.contains("a"));
        for k in ["b", "c", "d"] {
            assert!(s.contains(k), "{k}");
        }
        assert_eq!(s.lock().map.len(), 3);
        assert_eq!(s.lock().order.len(), 3);
    }

    #[test]
    fn expired_members_are_dropped_on_insert() {
        let s = TtlSet::new(100, T);
        let t0 = Instant::now();
        for i in 0..50 {
            s.insert_at(&i.to_string(), t0);
        }
        s.insert_at("late", t0 + T);
        let inner = s.lock();
        assert_eq!(inner.map.len(), 1);
        assert_eq!(inner.order.len(), 1);
        drop(inner);
        assert_eq!(s.len.load(Ordering::Acquire), 1);
    }
}
