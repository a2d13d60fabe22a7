//! The health of one ECS endpoint (a region) as pure arithmetic: is it in an
//! outage, who may send, and what an answer says about it. Time is a number
//! of seconds handed in and the jitter a draw handed in, so every case is a
//! table row.
//!
//! ```text
//!  closed ──outage-class answer (any one resource)──────────────────▶ open
//!    │    ──InternalError from INTERNAL_ERROR_RUN resources in a row,
//!    │      with no other answer between ──────────────────────────▶ open
//!    ▲                                                               │
//!    └──── the first answer that is neither (probe or late answer) ──┘
//!          open: nothing is sent but one probe at a time, spaced
//!          PROBE_BASE·2ⁿ (capped at PROBE_CAP), equal jitter
//! ```
//!
//! Why one answer opens it: an outage-class answer (no connection, no whole
//! answer, 502/503/504, `ServiceUnavailable`) says nothing about the resource
//! and costs it nothing, so opening early is cheap: the waiting resources
//! lose at most one probe's spacing (under a second after a lone blip). Not
//! opening would let every resource hammer a failing endpoint on its own.
//!
//! Why `InternalError` needs a run: an image that always gets it while the
//! region answers others is that image's failure (counted, so it ends
//! `RetriesExhausted`). Answers from several resources in a row with nothing
//! else between is the endpoint's incident. From the second resource of a run
//! on, an `InternalError` is not counted ([`Verdict::incident`]); the first
//! one of a run is (nothing yet says it is not the resource's), and so is a
//! resource's second one in the same run.
//!
//! Why an `InternalError` incident is given up: when the probe of a resource
//! whose own probe already got `InternalError` in this outage gets it again,
//! every resource waiting has been tried and the endpoint answers nothing but
//! these images' failures. Those resources are then judged on their own
//! ([`Change::GaveUp`]): their `InternalError`s are counted and form no run
//! until they get another answer. Otherwise a few poisoned images left alone
//! in a region would hold it open, and themselves, forever; a real regional
//! incident with many resources is still waited out (each is probed once
//! before any is probed twice).

/// Distinct resources whose `InternalError` answers, in a row, open the breaker.
pub const INTERNAL_ERROR_RUN: usize = 3;
/// The first probe's spacing after opening, in seconds (before jitter).
pub const PROBE_BASE: f64 = 1.0;
/// The longest spacing between probes, in seconds: one request every ten
/// seconds costs nothing, and a longer cap only delays noticing recovery.
pub const PROBE_CAP: f64 = 10.0;
/// The most resources remembered as failing on their own (a bound on memory;
/// past it, a resource is judged by the run rule as any other).
const MAX_POISONED: usize = 4096;

/// What an answer says about the endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    /// An answer that is not outage-class: the endpoint answers.
    Answers,
    /// An outage-class answer, with the error in words (for status messages).
    Outage(String),
    /// `InternalError`, with the error in words: the resource's failure or,
    /// in a run across resources, the endpoint's.
    InternalError(String),
}

/// What [`Breaker::answered`] made of an answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    /// Whether the endpoint is in an incident: an `InternalError` then says
    /// nothing about the resource and is not counted.
    pub incident: bool,
    /// Whether the breaker opened or closed with this answer.
    pub change: Option<Change>,
}

/// A change of the breaker's state.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// It opened.
    Opened,
    /// It closed after being open this many seconds.
    Closed {
        /// How long it was open.
        after: f64,
    },
    /// It closed after this many seconds because the only answers left were
    /// `InternalError` for resources already probed: they are judged on their
    /// own from now on.
    GaveUp {
        /// How long it was open.
        after: f64,
    },
}

/// An open breaker's probe.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Probe {
    /// The next one may go at this time.
    Due(f64),
    /// One is out.
    InFlight,
}

#[derive(Clone, Debug, PartialEq)]
enum State {
    Closed,
    Open {
        since: f64,
        last_error: String,
        probe: Probe,
        /// Probes failed since opening: the spacing's exponent.
        failed_probes: u32,
    },
}

/// One endpoint's breaker.
#[derive(Clone, Debug, PartialEq)]
pub struct Breaker {
    state: State,
    /// Resources whose `InternalError` answers came in a row, in order, each once.
    run: Vec<String>,
    /// Resources whose probe got `InternalError` while open, this outage.
    probed_failing: Vec<String>,
    /// Resources judged to fail on their own (see the module docs), until
    /// they get another answer.
    poisoned: std::collections::HashSet<String>,
}

impl Default for Breaker {
    fn default() -> Self {
        Self::new()
    }
}

impl Breaker {
    /// A closed breaker: a new process (or a new leader) trusts every endpoint.
    pub fn new() -> Self {
        Self {
            state: State::Closed,
            run: Vec::new(),
            probed_failing: Vec::new(),
            poisoned: std::collections::HashSet::new(),
        }
    }

    /// Whether the breaker is open (the endpoint is in an outage).
    pub fn is_open(&self) -> bool {
        matches!(self.state, State::Open { .. })
    }

    /// Since when it is open and the last error, while open.
    pub fn outage(&self) -> Option<(f64, &str)> {
        match &self.state {
            State::Open {
                since, last_error, ..
            } => Some((*since, last_error)),
            State::Closed => None,
        }
    }

    /// When the next probe may go, while open and none is out.
    pub fn probe_due(&self) -> Option<f64> {
        match self.state {
            State::Open {
                probe: Probe::Due(at),
                ..
            } => Some(at),
            _ => None,
        }
    }

    /// A probe went out (its answer comes to [`Breaker::answered`] with `probe`).
    pub fn probe_sent(&mut self) {
        if let State::Open { probe, .. } = &mut self.state {
            *probe = Probe::InFlight;
        }
    }

    /// The probe given out at `t` was never sent (its write-ahead lost a
    /// race, the resource went away or ran out of time): the next may go now.
    pub fn probe_unused(&mut self, t: f64) {
        if let State::Open { probe, .. } = &mut self.state
            && *probe == Probe::InFlight
        {
            *probe = Probe::Due(t);
        }
    }

    /// Takes in the answer to a request from resource `uid` at time `t`;
    /// `probe` when it was the open breaker's probe; `jitter` a uniform draw
    /// in `[0, 1]` for the next probe's spacing.
    pub fn answered(
        &mut self,
        t: f64,
        uid: &str,
        health: &Health,
        probe: bool,
        jitter: f64,
    ) -> Verdict {
        match health {
            Health::Answers => {
                self.run.clear();
                self.poisoned.remove(uid);
                let change = match self.state {
                    State::Open { since, .. } => {
                        self.state = State::Closed;
                        self.probed_failing.clear();
                        Some(Change::Closed { after: t - since })
                    }
                    State::Closed => None,
                };
                Verdict {
                    incident: false,
                    change,
                }
            }
            Health::Outage(error) => {
                let change = self.failing(t, error, probe, jitter);
                Verdict {
                    incident: true,
                    change,
                }
            }
            Health::InternalError(error) => {
                if self.poisoned.contains(uid) {
                    // Its own failure: counted, and no sign of the endpoint's.
                    if self.is_open() {
                        self.failing(t, error, probe, jitter);
                    }
                    return Verdict {
                        incident: false,
                        change: None,
                    };
                }
                if let State::Open { since, .. } = self.state {
                    if probe && self.probed_failing.iter().any(|u| u == uid) {
                        return self.give_up(t - since, uid);
                    }
                    if probe {
                        self.probed_failing.push(uid.to_owned());
                    }
                    self.failing(t, error, probe, jitter);
                    return Verdict {
                        incident: true,
                        change: None,
                    };
                }
                // NB: a resource's second InternalError in the same run is
                // counted: two images failing in turn with nothing else
                // between must not be retried forever uncounted.
                let repeat = self.run.iter().any(|u| u == uid);
                if !repeat {
                    self.run.push(uid.to_owned());
                }
                let incident = !repeat && self.run.len() >= 2;
                let change = if self.run.len() >= INTERNAL_ERROR_RUN {
                    self.failing(t, error, probe, jitter)
                } else {
                    None
                };
                Verdict { incident, change }
            }
        }
    }

    /// Gives an `InternalError` incident up: every resource probed in it is
    /// judged on its own from now on (this answer, from `uid`, is counted).
    fn give_up(&mut self, after: f64, uid: &str) -> Verdict {
        self.state = State::Closed;
        self.run.clear();
        for failing in self.probed_failing.drain(..).chain([uid.to_owned()]) {
            if self.poisoned.len() < MAX_POISONED {
                self.poisoned.insert(failing);
            }
        }
        Verdict {
            incident: false,
            change: Some(Change::GaveUp { after }),
        }
    }

    /// An answer that says the endpoint is failing: opens, or keeps open and
    /// spaces the next probe when it was the probe.
    fn failing(&mut self, t: f64, error: &str, probe: bool, jitter: f64) -> Option<Change> {
        match &mut self.state {
            State::Closed => {
                self.run.clear();
                self.probed_failing.clear();
                self.state = State::Open {
                    since: t,
                    last_error: error.to_owned(),
                    probe: Probe::Due(t + probe_spacing(0, jitter)),
                    failed_probes: 0,
                };
                Some(Change::Opened)
            }
            State::Open {
                last_error,
                probe: next,
                failed_probes,
                ..
            } => {
                error.clone_into(last_error);
                if probe {
                    *failed_probes = failed_probes.saturating_add(1);
                    *next = Probe::Due(t + probe_spacing(*failed_probes, jitter));
                }
                None
            }
        }
    }
}

/// The spacing before probe `n + 1` after `n` failed ones: `PROBE_BASE·2ⁿ`
/// capped at [`PROBE_CAP`], with equal jitter (half fixed, half drawn), so
/// probes from several replicas or regions do not line up and never come
/// faster than half the spacing.
pub fn probe_spacing(failed: u32, jitter: f64) -> f64 {
    let ceiling = (PROBE_BASE * 2f64.powi(failed.min(16) as i32)).min(PROBE_CAP);
    ceiling * (0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests;
