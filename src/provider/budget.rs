//! The budget for checks of `Authorization` values (Bearer tokens, Basic credentials) the
//! provider never confirmed: a token bucket that bounds how many such checks per second reach
//! the provider, so a flood of made-up credentials cannot turn the outpost into a way to
//! overload it. Session cookies are not counted: one opens only if this outpost sealed it, so
//! nobody can make them up (random cookies never reach the provider), and after a restart
//! every signed-in user arrives with a token this process has not checked yet. Re-checks of
//! cached answers are not counted either: they are what keeps valid users served.
//! No I/O and no waiting: a check either fits in the budget now or is refused now.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// A token bucket: `rate` checks per second, bursts of up to `rate` (at least one).
#[derive(Debug)]
pub(super) struct Budget {
    rate: f64,
    state: Mutex<(f64, Instant)>,
    refused: AtomicU64,
}

impl Budget {
    /// `rate` 0 means no limit.
    pub(super) fn new(rate: u32) -> Budget {
        let rate = f64::from(rate);
        Budget {
            rate,
            state: Mutex::new((rate.max(1.0), Instant::now())),
            refused: AtomicU64::new(0),
        }
    }

    /// Takes one check from the budget; false (and counted) when it is spent.
    pub(super) fn take(&self) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let refill = now.duration_since(s.1).as_secs_f64() * self.rate;
        s.0 = (s.0 + refill).min(self.rate.max(1.0));
        s.1 = now;
        if s.0 >= 1.0 {
            s.0 -= 1.0;
            true
        } else {
            self.refused.fetch_add(1, Ordering::Relaxed);
            false
        }
    }

    /// Checks refused so far.
    pub(super) fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_rate_then_refusals_then_refills() {
        let b = Budget::new(10);
        assert_eq!((0..100).filter(|_| b.take()).count(), 10, "one burst");
        assert_eq!(b.refused(), 90);
        b.state.lock().unwrap().1 -= std::time::Duration::from_millis(500);
        assert_eq!(
            (0..100).filter(|_| b.take()).count(),
            5,
            "half a second refills half"
        );
    }

    #[test]
    fn zero_means_unlimited() {
        let b = Budget::new(0);
        assert!((0..10_000).all(|_| b.take()));
    }
}
