//! The retry policy shared by the controller and `cancel`: exponential backoff
//! with full jitter, a service-provided `x-acs-retry-after` honoured, counted
//! retries bounded by `backoffLimit`, throttling not counted. Pure: the random
//! source and the remaining time are arguments.

use std::time::Duration;

use rand::Rng;

use crate::ecs::RetryClass;

/// Default first backoff ceiling (`--retry-base-delay`).
pub const DEFAULT_BASE_DELAY: Duration = Duration::from_secs(1);
/// Default largest backoff ceiling (`--retry-max-delay`).
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(300);
/// Default counted retries after the first attempt (`backoffLimit`).
pub const DEFAULT_BACKOFF_LIMIT: u32 = 6;

/// Exponential backoff with full jitter:
/// `delay = rand(0, min(cap, base * 2^n))` for the `n`-th retry (from 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
}

/// Why a backoff configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackoffError {
    /// The base delay was zero.
    #[error("the retry base delay must be greater than zero (for example --retry-base-delay 1s)")]
    ZeroBase,
    /// The cap was below the base.
    #[error(
        "the retry max delay ({cap:?}) must not be below the retry base delay ({base:?}): raise --retry-max-delay or lower --retry-base-delay"
    )]
    CapBelowBase {
        /// The configured base.
        base: Duration,
        /// The configured cap.
        cap: Duration,
    },
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: DEFAULT_BASE_DELAY,
            cap: DEFAULT_MAX_DELAY,
        }
    }
}

impl Backoff {
    /// A backoff with the given base and cap (`0 < base <= cap`).
    pub fn new(base: Duration, cap: Duration) -> Result<Self, BackoffError> {
        if base.is_zero() {
            return Err(BackoffError::ZeroBase);
        }
        if cap < base {
            return Err(BackoffError::CapBelowBase { base, cap });
        }
        Ok(Self { base, cap })
    }

    /// The first ceiling.
    pub fn base(&self) -> Duration {
        self.base
    }

    /// The largest ceiling, and the largest delay ever returned.
    pub fn cap(&self) -> Duration {
        self.cap
    }

    /// The ceiling of the `retry`-th retry (from 0): `min(cap, base * 2^retry)`.
    pub fn ceiling(&self, retry: u32) -> Duration {
        // Saturates instead of overflowing: large retry numbers simply hit the cap.
        let factor = 1u32.checked_shl(retry).unwrap_or(u32::MAX);
        self.base
            .checked_mul(factor)
            .map_or(self.cap, |d| d.min(self.cap))
    }

    /// The delay before the `retry`-th retry (from 0): uniform in
    /// `[0, ceiling(retry)]`, or the service's `retry_after` (capped) when it
    /// sent one.
    pub fn delay<R: Rng + ?Sized>(
        &self,
        retry: u32,
        retry_after: Option<Duration>,
        rng: &mut R,
    ) -> Duration {
        if let Some(after) = retry_after {
            return after.min(self.cap);
        }
        let ceiling = self.ceiling(retry);
        // The cap is at most a few days in practice; u64 nanoseconds hold 584 years.
        let ceiling_nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rng.random_range(0..=ceiling_nanos))
    }
}

/// The retry policy: backoff plus how many counted retries are allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Delays between attempts.
    pub backoff: Backoff,
    /// Counted retries allowed after the first attempt.
    pub backoff_limit: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            backoff: Backoff::default(),
            backoff_limit: DEFAULT_BACKOFF_LIMIT,
        }
    }
}

/// Retries made so far for one cancellation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetryState {
    /// Retries counted against the backoff limit (transient failures).
    pub counted: u32,
    /// Retries not counted (throttling).
    pub throttled: u32,
}

impl RetryState {
    /// All retries made so far; the exponent of the next backoff.
    pub fn total(&self) -> u32 {
        self.counted.saturating_add(self.throttled)
    }
}

/// What to do after an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NextStep {
    /// The outcome is final (success or terminal error): send nothing more.
    Done,
    /// Send again after `delay`; `counted` says whether this retry counts
    /// against the backoff limit. `state` is the state after this retry.
    Retry {
        /// How long to wait.
        delay: Duration,
        /// Whether the retry counts against the backoff limit.
        counted: bool,
        /// The retry state once this retry is made.
        state: RetryState,
    },
    /// A retryable failure, but the backoff limit is used up.
    RetriesExhausted,
    /// The retry would start after the deadline.
    DeadlineExceeded,
}

impl RetryPolicy {
    /// Decides what follows an attempt of class `class`, given the retries
    /// made so far, the service's `retry_after` if any, and the time left
    /// before the deadline (`None`: no deadline).
    pub fn next_step<R: Rng + ?Sized>(
        &self,
        class: RetryClass,
        state: RetryState,
        retry_after: Option<Duration>,
        time_left: Option<Duration>,
        rng: &mut R,
    ) -> NextStep {
        let counted = match class {
            RetryClass::Success | RetryClass::Terminal => return NextStep::Done,
            // NB: a one-shot command has no endpoint breaker to wait behind:
            // an outage uses up its retries and it says so (like an SDK's
            // retry quota); the controller waits outages out instead.
            RetryClass::Retryable | RetryClass::Outage => true,
            RetryClass::Throttled => false,
        };
        if counted && state.counted >= self.backoff_limit {
            return NextStep::RetriesExhausted;
        }
        let delay = self.backoff.delay(state.total(), retry_after, rng);
        if time_left.is_some_and(|left| delay >= left) {
            return NextStep::DeadlineExceeded;
        }
        let mut next = state;
        if counted {
            next.counted += 1;
        } else {
            next.throttled = next.throttled.saturating_add(1);
        }
        NextStep::Retry {
            delay,
            counted,
            state: next,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    const S: fn(u64) -> Duration = Duration::from_secs;
    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn defaults_are_one_second_and_five_minutes() {
        let b = Backoff::default();
        assert_eq!((b.base(), b.cap()), (S(1), S(300)));
        assert_eq!(RetryPolicy::default().backoff_limit, 6);
    }

    #[test]
    fn ceiling_table() {
        let b = Backoff::default();
        let table = [
            (0, S(1)),
            (1, S(2)),
            (2, S(4)),
            (5, S(32)),
            (8, S(256)),
            (9, S(300)),
            (31, S(300)),
            (32, S(300)),
            (u32::MAX, S(300)),
        ];
        for (retry, want) in table {
            assert_eq!(b.ceiling(retry), want, "retry {retry}");
        }
        let small = Backoff::new(MS(250), S(2)).unwrap();
        let table = [(0, MS(250)), (1, MS(500)), (2, S(1)), (3, S(2)), (4, S(2))];
        for (retry, want) in table {
            assert_eq!(small.ceiling(retry), want, "retry {retry}");
        }
    }

    #[test]
    fn invalid_configuration_names_the_flag() {
        assert_eq!(
            Backoff::new(Duration::ZERO, S(1)),
            Err(BackoffError::ZeroBase)
        );
        let err = Backoff::new(S(10), S(1)).unwrap_err();
        assert!(err.to_string().contains("--retry-max-delay"), "{err}");
        assert!(Backoff::new(S(1), S(1)).is_ok());
    }

    #[test]
    fn full_jitter_stays_under_the_ceiling_and_spreads_over_it() {
        let b = Backoff::default();
        let mut rng = StdRng::seed_from_u64(7);
        for retry in [0u32, 1, 3, 9, 40] {
            let ceiling = b.ceiling(retry);
            let delays: Vec<Duration> = (0..400).map(|_| b.delay(retry, None, &mut rng)).collect();
            assert!(delays.iter().all(|d| *d <= ceiling), "retry {retry}");
            // Full jitter, not equal jitter: both the low and the high quarter occur.
            assert!(delays.iter().any(|d| *d < ceiling / 4), "retry {retry}");
            assert!(delays.iter().any(|d| *d > ceiling * 3 / 4), "retry {retry}");
        }
    }

    #[test]
    fn same_seed_same_delays() {
        let b = Backoff::default();
        let run = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (0..8)
                .map(|n| b.delay(n, None, &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
    }

    #[test]
    fn retry_after_is_used_as_the_delay_and_capped() {
        let b = Backoff::new(S(1), S(60)).unwrap();
        let mut rng = StdRng::seed_from_u64(1);
        let table = [
            (MS(1500), MS(1500)),
            (Duration::ZERO, Duration::ZERO),
            (S(60), S(60)),
            (S(3600), S(60)),
        ];
        for (after, want) in table {
            assert_eq!(b.delay(0, Some(after), &mut rng), want, "{after:?}");
        }
    }

    type Row = (
        RetryClass,
        RetryState,
        Option<Duration>,
        Option<Duration>,
        NextStep,
    );

    /// One row per case: class, state before, limit, retry-after, time left
    /// → expected step (delays are pinned by retry-after or checked by range).
    #[test]
    fn next_step_table() {
        let policy = RetryPolicy {
            backoff: Backoff::new(S(1), S(8)).unwrap(),
            backoff_limit: 2,
        };
        let st = |counted, throttled| RetryState { counted, throttled };
        let retry = |delay, counted, state| NextStep::Retry {
            delay,
            counted,
            state,
        };
        use NextStep::{DeadlineExceeded, Done, RetriesExhausted};
        use RetryClass::{Retryable, Success, Terminal, Throttled};
        #[rustfmt::skip]
        let rows: [Row; 10] = [
            (Success,   st(0, 0), None,         None,                 Done),
            (Terminal,  st(1, 3), None,         None,                 Done),
            (Retryable, st(0, 0), Some(MS(10)), None,                 retry(MS(10), true, st(1, 0))),
            (Retryable, st(1, 5), Some(MS(10)), None,                 retry(MS(10), true, st(2, 5))),
            (Retryable, st(2, 0), Some(MS(10)), None,                 RetriesExhausted),
            // Throttling is not counted: it goes on past the backoff limit.
            (Throttled, st(2, 0), Some(MS(10)), None,                 retry(MS(10), false, st(2, 1))),
            (Throttled, st(0, 0), Some(MS(10)), Some(S(1)),           retry(MS(10), false, st(0, 1))),
            // ... but not past the deadline.
            (Throttled, st(0, 9), Some(S(5)),   Some(S(4)),           DeadlineExceeded),
            (Retryable, st(0, 0), Some(S(5)),   Some(S(5)),           DeadlineExceeded),
            (Retryable, st(0, 0), Some(S(5)),   Some(Duration::ZERO), DeadlineExceeded),
        ];
        let mut rng = StdRng::seed_from_u64(3);
        for (i, (class, state, after, left, want)) in rows.into_iter().enumerate() {
            assert_eq!(
                policy.next_step(class, state, after, left, &mut rng),
                want,
                "row {i}"
            );
        }
    }

    #[test]
    fn next_step_backoff_grows_with_all_retries_made() {
        let policy = RetryPolicy {
            backoff: Backoff::new(S(1), S(300)).unwrap(),
            backoff_limit: 6,
        };
        let mut rng = StdRng::seed_from_u64(9);
        for (state, ceiling) in [
            (
                RetryState {
                    counted: 0,
                    throttled: 0,
                },
                S(1),
            ),
            (
                RetryState {
                    counted: 1,
                    throttled: 2,
                },
                S(8),
            ),
            (
                RetryState {
                    counted: 0,
                    throttled: 20,
                },
                S(300),
            ),
        ] {
            for _ in 0..100 {
                match policy.next_step(RetryClass::Throttled, state, None, None, &mut rng) {
                    NextStep::Retry { delay, .. } => assert!(delay <= ceiling, "{state:?}"),
                    other => panic!("{state:?}: {other:?}"),
                }
            }
        }
    }
}
