//! The pace of one quota scope (identity, region) as pure arithmetic:
//! time is a number of seconds handed in, so every case is a table row and a
//! whole minute of traffic against a model quota runs in microseconds.
//!
//! ```text
//!  no throttling yet ──▶ no client-side limit (only the optional ceiling)
//!        │ first fresh Throttling* answer
//!        ▼
//!  cut: w_max = min(pace now, what the service accepted in the last second)
//!       pace = BETA * w_max; nothing sent until the current second ends
//!        │ time passes
//!        ▼
//!  grow: pace(t) = CUBIC_C * (t - cut - K)^3 + w_max   (back to w_max after K,
//!        at most twice what was actually sent)          then probing above it)
//!        │ next fresh Throttling* answer ──▶ cut again
//! ```
//!
//! Differences from the AWS SDKs' adaptive retry mode, which this follows:
//! a throttling answer to a request sent *before* the last cut carries no
//! news and is ignored (AWS cuts again for each, so a burst in flight drives
//! the pace to its floor); the cut is measured against what the service
//! accepted in the last second (Alibaba counts per second and per minute, so
//! that is the quota), not the rate offered; and after a cut nothing is sent
//! until the current second ends: the service counts calls in windows aligned
//! to the clock (throttled in minute T, callable again at T+1), and the rest
//! of a window that just throttled is spent. And a cut is undone when a
//! request sent later in the same window is accepted: a spent window refuses
//! everything after, so that throttling was not the quota (a stray refusal,
//! another gateway's hiccup), and a pace cut for it would only sink.

use std::collections::VecDeque;
use std::time::Duration;

/// Share of the measured rate the pace restarts at after a cut.
pub const BETA: f64 = 0.7;
/// CUBIC's scale, in requests/s per s³: how fast the pace grows back.
pub const CUBIC_C: f64 = 0.4;
/// The slowest pace, in requests per second.
pub const MIN_RATE: f64 = 0.5;
/// The window over which accepted and sent requests are counted, in seconds:
/// the service's shortest counting window.
const WINDOW: f64 = 1.0;
/// How far behind its schedule a late dispatcher may catch up, in seconds
/// (timers fire a millisecond or so late; without this, lateness would
/// accumulate into a slower pace at high rates).
const CATCH_UP: f64 = 0.02;

/// The optional hard ceiling (`--ecs-qps`, `--ecs-burst`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ceiling {
    /// Requests per second, at most.
    pub rate: f64,
    /// Requests that may go at once after a quiet spell.
    pub burst: u32,
}

/// What the service said to one request, as far as the pace cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Any answer but throttling: the request counted against the quota.
    Accepted,
    /// A `Throttling*` answer, with the service's `x-acs-retry-after`.
    Throttled {
        /// The service's `x-acs-retry-after`, when it sent one.
        retry_after: Option<Duration>,
    },
    /// No usable answer (transport failure): says nothing about the quota.
    Unknown,
}

/// What a throttling answer did to the pace.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Reaction {
    /// The pace was cut: the new pace (requests/s) and the pause before the
    /// next request (seconds).
    Cut {
        /// Requests per second right after the cut.
        rate: f64,
        /// Seconds until the next request may go.
        pause: f64,
    },
    /// The request was sent before the last cut (its answer was already
    /// accounted for), or adaptive pacing is off: only `x-acs-retry-after`,
    /// if any, was taken.
    Ignored,
    /// An accepted answer to a request sent after the throttled one, in the
    /// same window, showed the last cut was not the quota: the pace before it
    /// is back.
    Undone,
}

/// What a cut replaced, kept until the throttled request's window ends.
#[derive(Clone, Copy, Debug)]
struct Undo {
    cubic: Option<Cubic>,
    /// The pause to go back to (the cut's `x-acs-retry-after` kept).
    paused_until: f64,
    /// When the throttled request was sent, and when its window ends.
    throttled_sent_at: f64,
    window_end: f64,
}

/// The CUBIC curve since the last cut.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Cubic {
    /// The pace the service was taken to allow at the cut.
    w_max: f64,
    /// When the cut happened.
    cut_at: f64,
    /// Seconds from the cut until the curve is back at `w_max`.
    k: f64,
}

impl Cubic {
    fn new(w_max: f64, cut_at: f64) -> Self {
        Self {
            w_max,
            cut_at,
            k: (w_max * (1.0 - BETA) / CUBIC_C).cbrt(),
        }
    }

    fn at(&self, t: f64) -> f64 {
        CUBIC_C * (t - self.cut_at - self.k).powi(3) + self.w_max
    }
}

/// Event times, oldest first, forgotten once older than [`WINDOW`].
#[derive(Clone, Debug, Default)]
struct Recent(VecDeque<f64>);

impl Recent {
    fn push(&mut self, t: f64) {
        while self.0.front().is_some_and(|&e| e <= t - WINDOW) {
            self.0.pop_front();
        }
        self.0.push_back(t);
    }

    /// Events per second over the window ending at `t`.
    fn per_second(&self, t: f64) -> f64 {
        let old = self.0.partition_point(|&e| e <= t - WINDOW);
        (self.0.len() - old) as f64 / WINDOW
    }
}

/// The pace of one quota scope.
#[derive(Clone, Debug)]
pub struct Pace {
    /// Whether throttling answers engage pacing (`--ecs-pacing adaptive`).
    adaptive: bool,
    ceiling: Option<Ceiling>,
    /// `None` until the first fresh throttling answer.
    cubic: Option<Cubic>,
    accepted: Recent,
    sent: Recent,
    /// The next slot on the schedule (GCRA's theoretical arrival time).
    next_slot: f64,
    /// Nothing is sent before this.
    paused_until: f64,
    /// When the pace was last cut; answers to requests sent before it are stale.
    last_cut: f64,
    /// How to take the last cut back, while its window may still show it wrong.
    undo: Option<Undo>,
}

impl Pace {
    /// A scope's pace: unlimited (but for `ceiling`) until a throttling
    /// answer when `adaptive`, never adapted otherwise.
    pub fn new(adaptive: bool, ceiling: Option<Ceiling>) -> Self {
        Self {
            adaptive,
            ceiling,
            cubic: None,
            accepted: Recent::default(),
            sent: Recent::default(),
            next_slot: f64::NEG_INFINITY,
            paused_until: f64::NEG_INFINITY,
            last_cut: f64::NEG_INFINITY,
            undo: None,
        }
    }

    /// Whether the service has throttled this scope (the adaptive pace is on).
    pub fn is_adapted(&self) -> bool {
        self.cubic.is_some()
    }

    /// Requests per second allowed at `t`; `None`: no client-side limit.
    pub fn rate(&self, t: f64) -> Option<f64> {
        let adaptive = match self.cubic {
            Some(cubic) => {
                // NB: growth beyond w_max is measured against what is actually
                // sent, so a quiet scope does not grow a pace it never tried.
                let cap = 2.0 * self.sent.per_second(t).max(cubic.w_max);
                Some(cubic.at(t).min(cap).max(MIN_RATE))
            }
            None => None,
        };
        match (adaptive, self.ceiling) {
            (Some(a), Some(c)) => Some(a.min(c.rate)),
            (a, c) => a.or(c.map(|c| c.rate)),
        }
    }

    /// Takes a slot at `t`, or says when to ask again.
    pub fn take(&mut self, t: f64) -> Result<(), f64> {
        if t < self.paused_until {
            return Err(self.paused_until);
        }
        if let Some(rate) = self.rate(t) {
            let interval = 1.0 / rate;
            // The ceiling's burst applies while the ceiling is what paces.
            let burst = match (self.cubic, self.ceiling) {
                (None, Some(c)) => c.burst.max(1),
                _ => 1,
            };
            let tolerance = f64::from(burst - 1) * interval;
            if self.next_slot > t + tolerance {
                return Err(self.next_slot - tolerance);
            }
            self.next_slot = self.next_slot.max(t - CATCH_UP) + interval;
        }
        self.sent.push(t);
        Ok(())
    }

    /// Takes in the answer, at `t`, to a request sent at `sent_at`, in the
    /// service's counting window that ends at `window_end` (the end of the
    /// wall clock's second it was sent in).
    pub fn answered(
        &mut self,
        t: f64,
        sent_at: f64,
        answer: Answer,
        window_end: f64,
    ) -> Option<Reaction> {
        let retry_after = match answer {
            Answer::Accepted => {
                self.accepted.push(t);
                let undo = self
                    .undo
                    .filter(|u| sent_at > u.throttled_sent_at && sent_at < u.window_end)?;
                self.cubic = undo.cubic;
                self.paused_until = undo.paused_until;
                self.undo = None;
                return Some(Reaction::Undone);
            }
            Answer::Unknown => return None,
            Answer::Throttled { retry_after } => retry_after,
        };
        if let Some(after) = retry_after {
            self.paused_until = self.paused_until.max(t + after.as_secs_f64());
        }
        if !self.adaptive || sent_at < self.last_cut {
            return Some(Reaction::Ignored);
        }
        let accepted = self.accepted.per_second(t);
        let offered = self.rate(t).unwrap_or(f64::INFINITY);
        self.undo = Some(Undo {
            cubic: self.cubic,
            paused_until: self.paused_until,
            throttled_sent_at: sent_at,
            window_end,
        });
        let cubic = Cubic::new(accepted.min(offered).max(MIN_RATE), t);
        self.cubic = Some(cubic);
        self.last_cut = t;
        // NB: the window the throttled request counted in is spent; the
        // answer may arrive after it ended, and then there is nothing to wait.
        self.paused_until = self.paused_until.max(window_end);
        Some(Reaction::Cut {
            rate: self.rate(t).unwrap_or(MIN_RATE),
            pause: (self.paused_until - t).max(0.0),
        })
    }
}

#[cfg(test)]
mod tests;
