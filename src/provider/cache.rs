//! The provider's caches of answers per token (checks, header authentications, refreshes):
//! bounded maps from a token's SHA-256 to an answer that carries its own time to live, where
//! concurrent askers of one token share one computation (single flight).
//!
//! Written for the job instead of a general cache: an entry is the key, the answer and its
//! expiry in a sharded `HashMap` (≈ 100 bytes at 100,000 tokens, against ≈ 420 in the general
//! cache this replaced, whose access-order queues, expiry timers and frequency sketch a token
//! cache does not need), and a lookup is one uncontended lock and a keyed hash.
//!
//! - **Single flight.** [`TokenCache::resolve`] either returns a settled answer, waits for
//!   the computation another caller runs for the same key, or runs it itself. If that caller
//!   is dropped half-way (its client went away), its waiters run it again, one of them at a
//!   time. A failed computation is shared with its waiters and not cached; the answer it
//!   was replacing stays.
//! - **Bounds.** Each shard holds at most `capacity / SHARDS` entries. Expired entries are
//!   swept out once a shard has stored as many answers as it holds (so memory follows the
//!   live entries, at O(1) per store on average); a shard that is full of live entries drops
//!   an eighth of them (hash order: random with respect to the tokens), which costs those
//!   tokens one more call to the provider and nothing else.
//! - **Removal wins.** An answer computed while its key was removed or overwritten (a
//!   sign-out) is returned to its askers but not stored.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use foldhash::fast::RandomState;
use tokio::sync::watch;

/// A token's cache key (`core::token::token_key`).
pub type Key = [u8; 32];

/// Independent locks; a key's shard is chosen by its first byte (a SHA-256 output).
const SHARDS: usize = 16;

/// An answer that says how long it may be kept.
pub(super) trait Expiring {
    fn ttl(&self) -> Duration;
}

/// What a flight hands its waiters: nothing yet, then the answer or the shared error.
type Outcome<V, E> = Option<Result<V, Arc<E>>>;

/// The cache.
pub(super) struct TokenCache<V, E> {
    shards: Box<[Mutex<Shard<V, E>>]>,
    shard_capacity: usize,
}

struct Shard<V, E> {
    /// Keys are SHA-256 outputs of tokens anyone can send: hashed with a per-process random
    /// seed (foldhash: a few instructions for 32 bytes, where std's SipHash takes hundreds).
    map: HashMap<Key, Slot<V, E>, RandomState>,
    /// Answers stored since expired entries were last swept out.
    stores: usize,
}

enum Slot<V, E> {
    Ready {
        value: V,
        expires: Instant,
    },
    /// Being computed; the receiver is cloned by each waiter.
    Pending(watch::Receiver<Outcome<V, E>>),
}

/// What [`TokenCache::resolve`] found under the lock.
enum Begin<V, E> {
    Settled(V),
    Wait(watch::Receiver<Outcome<V, E>>),
    Lead(Flight<V, E>),
}

/// A computation this caller runs for its key. Dropped unfinished, it puts the key back as
/// it found it, and its waiters (their channel closed) try again.
struct Flight<V, E> {
    key: Key,
    tx: watch::Sender<Outcome<V, E>>,
    /// The receiver in the key's slot, to tell this flight's `Pending` from a later one's.
    rx: watch::Receiver<Outcome<V, E>>,
    /// The entry it replaced, restored if the computation fails or is dropped.
    old: Option<(V, Instant)>,
    finished: bool,
}

impl<V: Clone + Expiring, E> TokenCache<V, E> {
    /// An empty cache of at most about `capacity` entries.
    pub fn new(capacity: usize) -> Self {
        let shards = (0..SHARDS)
            .map(|_| {
                Mutex::new(Shard {
                    map: HashMap::default(),
                    stores: 0,
                })
            })
            .collect();
        TokenCache {
            shards,
            shard_capacity: capacity.div_ceil(SHARDS).max(1),
        }
    }

    /// The answer stored for `key`, unless it has expired.
    pub fn get(&self, key: &Key) -> Option<V> {
        match self.shard(key).map.get(key) {
            Some(Slot::Ready { value, expires }) if *expires > Instant::now() => {
                Some(value.clone())
            }
            _ => None,
        }
    }

    /// Stores `value` for `key` (for its time to live), replacing whatever was there.
    pub fn insert(&self, key: Key, value: V) {
        let mut shard = self.shard(&key);
        self.store(&mut shard, key, value, Instant::now());
    }

    /// Forgets `key`; a computation in flight for it will not store its answer.
    pub fn remove(&self, key: &Key) {
        self.shard(key).map.remove(key);
    }

    /// Entries held (expired ones not yet swept out and computations in flight included).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).map.len()).sum()
    }

    /// The answer for `key`: a stored one that `settled` accepts, or the one a computation
    /// already in flight for `key` gives, or else `make`'s, which is given the stored answer
    /// `settled` refused (if any) and whose result is stored unless it is an error.
    pub async fn resolve<F, Fut>(
        &self,
        key: Key,
        settled: impl Fn(&V) -> bool,
        make: F,
    ) -> Result<V, Arc<E>>
    where
        F: FnOnce(Option<V>) -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        let mut flight = loop {
            match self.begin(key, &settled) {
                Begin::Settled(v) => return Ok(v),
                Begin::Wait(mut rx) => {
                    // An error here: the computing caller was dropped; try again.
                    if let Ok(outcome) = rx.wait_for(Option::is_some).await
                        && let Some(result) = outcome.as_ref()
                    {
                        return result.clone();
                    }
                }
                Begin::Lead(flight) => {
                    break FlightGuard {
                        cache: self,
                        flight,
                    };
                }
            }
        };
        let old = flight.flight.old.as_ref().map(|(v, _)| v.clone());
        let result = make(old).await.map_err(Arc::new);
        flight.finish(&result);
        result
    }

    fn begin(&self, key: Key, settled: &impl Fn(&V) -> bool) -> Begin<V, E> {
        let mut shard = self.shard(&key);
        let now = Instant::now();
        let old = match shard.map.get(&key) {
            Some(Slot::Pending(rx)) => return Begin::Wait(rx.clone()),
            Some(Slot::Ready { value, expires }) if *expires > now => {
                if settled(value) {
                    return Begin::Settled(value.clone());
                }
                Some((value.clone(), *expires))
            }
            _ => None,
        };
        let (tx, rx) = watch::channel(None);
        shard.map.insert(key, Slot::Pending(rx.clone()));
        Begin::Lead(Flight {
            key,
            tx,
            rx,
            old,
            finished: false,
        })
    }

    /// Stores an answer and keeps the shard within its bounds.
    fn store(&self, shard: &mut Shard<V, E>, key: Key, value: V, now: Instant) {
        shard.stores += 1;
        if shard.stores >= shard.map.len().max(64) {
            sweep(shard, now);
        }
        if shard.map.len() >= self.shard_capacity && !shard.map.contains_key(&key) {
            Self::make_room(shard, now, self.shard_capacity);
        }
        let expires = now + value.ttl();
        shard.map.insert(key, Slot::Ready { value, expires });
    }

    /// Drops expired entries, then, while still full, an eighth of the live answers.
    fn make_room(shard: &mut Shard<V, E>, now: Instant, capacity: usize) {
        sweep(shard, now);
        if shard.map.len() < capacity {
            return;
        }
        let drop: Vec<Key> = shard
            .map
            .iter()
            .filter(|(_, slot)| matches!(slot, Slot::Ready { .. }))
            .map(|(k, _)| *k)
            .take((capacity / 8).max(1))
            .collect();
        for k in &drop {
            shard.map.remove(k);
        }
    }

    fn shard(&self, key: &Key) -> MutexGuard<'_, Shard<V, E>> {
        lock(&self.shards[usize::from(key[0]) % SHARDS])
    }
}

/// Drops a shard's expired answers (computations in flight stay).
fn sweep<V, E>(shard: &mut Shard<V, E>, now: Instant) {
    shard.stores = 0;
    shard.map.retain(|_, slot| match slot {
        Slot::Ready { expires, .. } => *expires > now,
        Slot::Pending(_) => true,
    });
}

/// A shard's lock. A panic while it was held left the map consistent (each change is one
/// map operation), so a poisoned lock is used as is.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A running [`Flight`] tied to its cache, so dropping it unfinished undoes its `Pending`.
struct FlightGuard<'a, V: Clone + Expiring, E> {
    cache: &'a TokenCache<V, E>,
    flight: Flight<V, E>,
}

impl<V: Clone + Expiring, E> FlightGuard<'_, V, E> {
    /// Stores the answer (if the key is still this flight's) and hands the outcome to the
    /// waiters.
    fn finish(&mut self, result: &Result<V, Arc<E>>) {
        let f = &mut self.flight;
        f.finished = true;
        let mut shard = self.cache.shard(&f.key);
        if owns(&shard, f) {
            match result {
                Ok(v) => self
                    .cache
                    .store(&mut shard, f.key, v.clone(), Instant::now()),
                Err(_) => restore(&mut shard, f),
            }
        }
        drop(shard);
        f.tx.send_replace(Some(result.clone()));
    }
}

impl<V: Clone + Expiring, E> Drop for FlightGuard<'_, V, E> {
    fn drop(&mut self) {
        if self.flight.finished {
            return;
        }
        let mut shard = self.cache.shard(&self.flight.key);
        if owns(&shard, &self.flight) {
            restore(&mut shard, &mut self.flight);
        }
        // The sender goes with the flight: waiters see their channel closed and retry.
    }
}

/// Whether the key's slot is still the `Pending` of this flight.
fn owns<V, E>(shard: &Shard<V, E>, f: &Flight<V, E>) -> bool {
    matches!(shard.map.get(&f.key), Some(Slot::Pending(rx)) if f.rx.same_channel(rx))
}

/// Puts back the entry a flight replaced, or removes the key.
fn restore<V, E>(shard: &mut Shard<V, E>, f: &mut Flight<V, E>) {
    match f.old.take() {
        Some((value, expires)) if expires > Instant::now() => {
            shard.map.insert(f.key, Slot::Ready { value, expires });
        }
        _ => {
            shard.map.remove(&f.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Debug, Clone, PartialEq)]
    struct Answer(u32, Duration);

    impl Expiring for Answer {
        fn ttl(&self) -> Duration {
            self.1
        }
    }

    const LONG: Duration = Duration::from_secs(3600);

    fn key(n: u32) -> Key {
        let mut k = [0u8; 32];
        k[..4].copy_from_slice(&n.to_le_bytes());
        k
    }

    type Cache = TokenCache<Answer, String>;

    #[test]
    fn get_insert_remove_and_expiry() {
        let c = Cache::new(100);
        assert_eq!(c.get(&key(1)), None);
        c.insert(key(1), Answer(1, LONG));
        c.insert(key(2), Answer(2, Duration::ZERO));
        assert_eq!(c.get(&key(1)), Some(Answer(1, LONG)));
        assert_eq!(c.get(&key(2)), None, "expired at once");
        c.remove(&key(1));
        assert_eq!(c.get(&key(1)), None);
    }

    #[tokio::test]
    async fn concurrent_askers_share_one_computation() {
        let c = Arc::new(Cache::new(100));
        let calls = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..200 {
            let (c, calls) = (Arc::clone(&c), Arc::clone(&calls));
            tasks.push(tokio::spawn(async move {
                c.resolve(
                    key(7),
                    |_| true,
                    |_| async {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok(Answer(7, LONG))
                    },
                )
                .await
            }));
        }
        for t in tasks {
            assert_eq!(t.await.ok().and_then(Result::ok), Some(Answer(7, LONG)));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(c.get(&key(7)), Some(Answer(7, LONG)));
    }

    #[tokio::test]
    async fn an_error_is_shared_not_stored_and_the_old_answer_stays() {
        let c = Arc::new(Cache::new(100));
        c.insert(key(3), Answer(1, LONG));
        let calls = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let (c, calls) = (Arc::clone(&c), Arc::clone(&calls));
            tasks.push(tokio::spawn(async move {
                c.resolve(
                    key(3),
                    |a| a.0 > 1,
                    |old| async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        assert_eq!(old, Some(Answer(1, LONG)));
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        Err::<Answer, _>("down".to_string())
                    },
                )
                .await
            }));
        }
        for t in tasks {
            let r = t.await.ok().map(|r| r.map_err(|e| e.to_string()));
            assert_eq!(r, Some(Err("down".to_string())));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(c.get(&key(3)), Some(Answer(1, LONG)));
        // A settled answer is returned without computing.
        let r = c
            .resolve(key(3), |_| true, |_| async { Ok(Answer(9, LONG)) })
            .await;
        assert_eq!(r.ok(), Some(Answer(1, LONG)));
        // One that is not settled is replaced.
        let r = c
            .resolve(key(3), |a| a.0 > 1, |_| async { Ok(Answer(2, LONG)) })
            .await;
        assert_eq!(r.ok(), Some(Answer(2, LONG)));
        assert_eq!(c.get(&key(3)), Some(Answer(2, LONG)));
    }

    #[tokio::test]
    async fn a_dropped_computation_is_taken_over_by_a_waiter() {
        let c = Arc::new(Cache::new(100));
        let leader = {
            let c = Arc::clone(&c);
            tokio::spawn(async move {
                c.resolve(
                    key(4),
                    |_| true,
                    |_| async {
                        tokio::time::sleep(LONG).await;
                        Ok(Answer(0, LONG))
                    },
                )
                .await
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let waiter = {
            let c = Arc::clone(&c);
            tokio::spawn(async move {
                c.resolve(key(4), |_| true, |_| async { Ok(Answer(4, LONG)) })
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "waits for the first computation");
        leader.abort();
        let r = tokio::time::timeout(Duration::from_secs(5), waiter).await;
        assert_eq!(
            r.ok().and_then(Result::ok).and_then(Result::ok),
            Some(Answer(4, LONG))
        );
        assert_eq!(c.get(&key(4)), Some(Answer(4, LONG)));
    }

    #[tokio::test]
    async fn a_key_removed_during_its_computation_is_not_stored() {
        let c = Arc::new(Cache::new(100));
        let task = {
            let c = Arc::clone(&c);
            tokio::spawn(async move {
                c.resolve(
                    key(5),
                    |_| true,
                    |_| async {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok(Answer(5, LONG))
                    },
                )
                .await
            })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        c.remove(&key(5));
        let r = task.await.ok().and_then(Result::ok);
        assert_eq!(r, Some(Answer(5, LONG)), "the askers still get it");
        assert_eq!(c.get(&key(5)), None);
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn the_cache_stays_within_its_capacity() {
        let cap = 1_600;
        let c = Cache::new(cap);
        for n in 0..20_000u32 {
            // Spread over the shards like SHA-256 outputs.
            let mut k = key(n);
            k[0] = (n % 251) as u8;
            c.insert(k, Answer(n, LONG));
            assert!(c.len() <= cap + SHARDS, "{} after {n}", c.len());
        }
        // The newest answer is always kept.
        let mut k = key(19_999);
        k[0] = (19_999 % 251) as u8;
        assert_eq!(c.get(&k), Some(Answer(19_999, LONG)));
    }

    #[test]
    fn expired_entries_are_swept_out_as_answers_are_stored() {
        let c = Cache::new(100_000);
        for n in 0..10_000u32 {
            c.insert(key(n), Answer(n, Duration::ZERO));
        }
        // Each shard sweeps once it stored as many answers as it holds.
        assert!(c.len() < 2_000, "{}", c.len());
        for n in 0..10_000u32 {
            c.insert(key(n + 100_000), Answer(n, LONG));
        }
        assert_eq!(
            (0..10_000u32)
                .filter(|n| c.get(&key(n + 100_000)).is_some())
                .count(),
            10_000
        );
        assert!(c.len() < 12_000, "{}", c.len());
    }
}
