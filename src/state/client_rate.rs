//! Requests per second per client address, for peers that are not trusted proxies: a token
//! bucket per address (a steady rate and a burst a page load fits in), in a bounded map
//! (sharded locks) that forgets idle addresses when it fills up. Behind a reverse proxy every request comes from a
//! trusted peer and nothing is counted, nor are forward-auth checks from any peer (see
//! `http::handlers::handle`); browsers that talk to the outpost directly (proxy mode, the
//! login endpoints on a published port) and hostile clients are.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Default steady rate per client address.
pub const DEFAULT_CLIENT_REQUESTS_PER_SECOND: u32 = 100;
/// Default burst per client address: a page with a few hundred assets loads without waiting.
pub const DEFAULT_CLIENT_BURST: u32 = 1000;
/// Client addresses tracked at most.
pub const MAX_TRACKED_CLIENTS: u64 = 100_000;
/// An address idle this long starts again with a full bucket (and may be forgotten).
pub const IDLE_FORGET: Duration = Duration::from_secs(600);

/// The rate and burst; a rate of 0 counts nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientRate {
    pub per_second: u32,
    pub burst: u32,
}

impl Default for ClientRate {
    fn default() -> Self {
        ClientRate {
            per_second: DEFAULT_CLIENT_REQUESTS_PER_SECOND,
            burst: DEFAULT_CLIENT_BURST,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Shards of the address map, so that clients rarely wait for each other's lock.
const SHARDS: usize = 16;

/// One bucket per client address.
pub struct ClientRates {
    shards: [Mutex<HashMap<IpAddr, Bucket>>; SHARDS],
}

impl Default for ClientRates {
    fn default() -> Self {
        ClientRates {
            shards: std::array::from_fn(|_| Mutex::new(HashMap::new())),
        }
    }
}

impl ClientRates {
    /// Takes one request from `ip`'s bucket at `now`; false when it is empty.
    pub fn admit(&self, ip: IpAddr, rate: ClientRate, now: Instant) -> bool {
        if rate.per_second == 0 {
            return true;
        }
        let burst = f64::from(rate.burst.max(1));
        let shard = &self.shards[shard_of(ip)];
        // A poisoned lock only means another request panicked mid-update: the numbers are
        // still numbers.
        let mut map = shard.lock().unwrap_or_else(PoisonError::into_inner);
        let per_shard = MAX_TRACKED_CLIENTS as usize / SHARDS;
        if map.len() >= per_shard && !map.contains_key(&ip) {
            map.retain(|_, b| now.saturating_duration_since(b.at) < IDLE_FORGET);
            if map.len() >= per_shard {
                // More active addresses than can be tracked: a per-address limit means
                // nothing then; serve rather than refuse everyone new.
                return true;
            }
        }
        let b = map.entry(ip).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let idle = now.saturating_duration_since(b.at);
        let refill = if idle >= IDLE_FORGET {
            burst
        } else {
            idle.as_secs_f64() * f64::from(rate.per_second)
        };
        b.tokens = (b.tokens + refill).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

fn shard_of(ip: IpAddr) -> usize {
    let low = match ip {
        IpAddr::V4(v4) => u32::from(v4) as usize,
        // The interface half of an IPv6 address varies the most between clients.
        IpAddr::V6(v6) => (u128::from(v6) >> 64) as usize ^ u128::from(v6) as usize,
    };
    (low ^ (low >> 8) ^ (low >> 16)) % SHARDS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_steady_rate_per_address() {
        let rates = ClientRates::default();
        let rate = ClientRate {
            per_second: 10,
            burst: 5,
        };
        let (a, b): (IpAddr, IpAddr) = (
            "203.0.113.1".parse().unwrap(),
            "203.0.113.2".parse().unwrap(),
        );
        let t0 = Instant::now();
        let admitted = (0..8).filter(|_| rates.admit(a, rate, t0)).count();
        assert_eq!(admitted, 5, "the burst");
        assert!(
            rates.admit(b, rate, t0),
            "another address has its own bucket"
        );
        // 10 per second: one more after 100 ms, none more at the same instant.
        let t1 = t0 + Duration::from_millis(100);
        assert!(rates.admit(a, rate, t1));
        assert!(!rates.admit(a, rate, t1));
        // A long pause refills up to the burst, not beyond.
        let t2 = t1 + Duration::from_secs(60);
        let admitted = (0..20).filter(|_| rates.admit(a, rate, t2)).count();
        assert_eq!(admitted, 5);
        // Rate 0: nothing counted.
        let off = ClientRate {
            per_second: 0,
            burst: 0,
        };
        assert!((0..1000).all(|_| rates.admit(a, off, t2)));
    }
}
