//! Provider outages: a circuit breaker over the calls to the identity provider, and what the
//! rest of the client needs to keep recently verified sessions working while the provider is
//! away (stale-if-error, see `introspect`). An outage is a call the provider could not answer
//! — connection refused or reset, a timeout, a 5xx or 429, a body that is not what the
//! protocol promises; an answer such as `active: false` or a rejected grant is not one, and
//! nothing here ever overrides it. No request handling and no caches: callers ask whether a
//! call may go out and report how it went.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::core::token::unix_now;

use super::OidcError;

/// Consecutive outage failures that open the breaker.
pub const FAILURES_TO_OPEN: u32 = 3;
/// How long the breaker stays open before its first probe; doubled after each failed probe.
pub const FIRST_WAIT: Duration = Duration::from_secs(1);
/// The longest wait between two probes.
pub const MAX_WAIT: Duration = Duration::from_secs(30);
/// A probe that never reported back (its request was dropped) stops blocking the next one
/// after this long (longer than any provider call may take).
const PROBE_DEADLINE: Duration = Duration::from_secs(20);

impl OidcError {
    /// Whether this failure means the provider is unreachable or broken, rather than an
    /// answer: what the breaker counts and what grace may cover.
    pub fn is_outage(&self) -> bool {
        match self {
            OidcError::Transport(_) | OidcError::Invalid(_) | OidcError::Unavailable(_) => true,
            OidcError::Status { status, .. } => *status >= 500 || *status == 429,
            OidcError::NotReady(_) | OidcError::Rejected(_) | OidcError::Verify(_) => false,
        }
    }
}

/// Whether a call may go to the provider now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Admission {
    /// The provider is believed up.
    Go,
    /// The breaker is open and this call is the one probe that tests whether it is back.
    Probe,
    /// The breaker is open: fail at once, without a call.
    Refuse,
}

#[derive(Debug, Default)]
struct State {
    /// Outage failures in a row.
    failures: u32,
    /// While open: when the next probe may go.
    open_until: Option<Instant>,
    /// The current wait between probes.
    wait: Duration,
    /// When the probe in flight started, if one is.
    probe_started: Option<Instant>,
    /// Unix seconds since when the provider is considered down.
    down_since: Option<i64>,
}

/// The breaker of one provider. Closed: every call goes. After [`FAILURES_TO_OPEN`] outage
/// failures in a row it opens: calls fail at once, and after a wait (doubling up to
/// [`MAX_WAIT`]) one call at a time probes; the first success closes it again. The outage is
/// logged once when it starts and once when it ends.
#[derive(Debug, Default)]
pub(super) struct Breaker {
    state: Mutex<State>,
    /// Token checks answered from grace while the provider was away.
    grace_served: AtomicU64,
}

impl Breaker {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn admit(&self) -> Admission {
        let mut s = self.lock();
        let Some(until) = s.open_until else {
            return Admission::Go;
        };
        let now = Instant::now();
        if now < until {
            return Admission::Refuse;
        }
        if s.probe_started.is_some_and(|t| now < t + PROBE_DEADLINE) {
            return Admission::Refuse;
        }
        s.probe_started = Some(now);
        Admission::Probe
    }

    /// The provider answered (whatever the answer).
    pub(super) fn success(&self) {
        let mut s = self.lock();
        s.failures = 0;
        s.open_until = None;
        s.probe_started = None;
        s.wait = FIRST_WAIT;
        if let Some(since) = s.down_since.take() {
            tracing::warn!(
                down_for_secs = unix_now() - since,
                "identity provider reachable again"
            );
        }
    }

    /// The provider could not answer: `e` is an outage failure.
    pub(super) fn failure(&self, e: &OidcError, grace: Duration) {
        let mut s = self.lock();
        s.failures = s.failures.saturating_add(1);
        let now = Instant::now();
        if s.open_until.is_some() {
            // A failed probe: wait longer before the next one.
            s.wait = (s.wait * 2).clamp(FIRST_WAIT, MAX_WAIT);
            s.open_until = Some(now + s.wait);
            s.probe_started = None;
        } else if s.failures >= FAILURES_TO_OPEN {
            s.wait = FIRST_WAIT;
            s.open_until = Some(now + s.wait);
        }
        if s.open_until.is_some() && s.down_since.is_none() {
            s.down_since = Some(unix_now());
            tracing::warn!(
                error = %e,
                grace_secs = grace.as_secs(),
                "identity provider unreachable: sessions it confirmed within the grace window keep working, new logins get a 503 until it is back"
            );
        }
    }

    /// Unix seconds since when the provider is down (the breaker is open), if it is.
    pub(super) fn down_since(&self) -> Option<i64> {
        self.lock().down_since
    }

    pub(super) fn count_grace(&self) {
        self.grace_served.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn grace_served(&self) -> u64 {
        self.grace_served.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn down() -> OidcError {
        OidcError::Transport("connection refused".into())
    }

    #[test]
    fn opens_after_consecutive_failures_and_probes_one_at_a_time() {
        let b = Breaker::default();
        for _ in 0..FAILURES_TO_OPEN - 1 {
            assert_eq!(b.admit(), Admission::Go);
            b.failure(&down(), Duration::ZERO);
        }
        assert_eq!(b.down_since(), None, "not open before the threshold");
        b.failure(&down(), Duration::ZERO);
        assert!(b.down_since().is_some());
        assert_eq!(
            b.admit(),
            Admission::Refuse,
            "open: no call during the wait"
        );
        b.lock().open_until = Some(Instant::now());
        assert_eq!(b.admit(), Admission::Probe);
        assert_eq!(b.admit(), Admission::Refuse, "one probe at a time");
        b.failure(&down(), Duration::ZERO);
        assert_eq!(
            b.lock().wait,
            FIRST_WAIT * 2,
            "a failed probe doubles the wait"
        );
        b.lock().open_until = Some(Instant::now());
        assert_eq!(b.admit(), Admission::Probe);
        b.success();
        assert_eq!(b.admit(), Admission::Go, "a successful probe closes it");
        assert_eq!(b.down_since(), None);
    }

    #[test]
    fn an_answer_resets_the_count() {
        let b = Breaker::default();
        for _ in 0..10 {
            b.failure(&down(), Duration::ZERO);
            b.failure(&down(), Duration::ZERO);
            b.success();
        }
        assert_eq!(b.admit(), Admission::Go);
    }

    #[test]
    fn an_abandoned_probe_does_not_block_for_ever() {
        let b = Breaker::default();
        for _ in 0..FAILURES_TO_OPEN {
            b.failure(&down(), Duration::ZERO);
        }
        b.lock().open_until = Some(Instant::now());
        assert_eq!(b.admit(), Admission::Probe);
        b.lock().probe_started = Some(Instant::now() - PROBE_DEADLINE);
        assert_eq!(b.admit(), Admission::Probe);
    }

    #[test]
    fn outages_are_failures_to_answer_not_answers() {
        let outage = [
            OidcError::Transport("timed out".into()),
            OidcError::Invalid("not json".into()),
            OidcError::Status {
                status: 503,
                detail: String::new(),
            },
            OidcError::Status {
                status: 429,
                detail: String::new(),
            },
        ];
        assert!(outage.iter().all(OidcError::is_outage));
        let answers = [
            OidcError::Status {
                status: 401,
                detail: String::new(),
            },
            OidcError::Rejected("invalid_grant".into()),
            OidcError::Verify("bad signature".into()),
            OidcError::NotReady("no discovery".into()),
        ];
        assert!(!answers.iter().any(OidcError::is_outage));
    }
}
