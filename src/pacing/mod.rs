//! Client-side pacing of CancelCopyImage, one pace per quota scope: ECS
//! counts calls per API, per region and per account, so a scope is (access
//! key ID, region). A scope is made on first use and dropped after
//! [`IDLE_SCOPE`] without requests; its [`pace::Pace`] decides, this shell
//! keeps the queue and the clock.
//!
//! ```text
//!  reconcile ──slot(key, region, uid)──▶ scope ──free?──▶ Slot::Now(grant)
//!                                          │ no: queued, oldest waiter first
//!                                          ▼
//!                                  dispatcher task ──at each slot──▶ Ticket resolves
//!  send ... answer ──answered(grant, answer)──▶ pace: cut on fresh throttling
//! ```
//!
//! Fairness: inside a scope the resource that has waited longest goes next.
//! A resource's wait starts at its first request for a slot and lasts until
//! an answer other than throttling, so a throttled resource keeps its place
//! ahead of resources that came after it, and none starves behind retries.
//!
//! NB: the access key ID is kept only as a hash with a per-process seed; it
//! is never in a label, a log line or `Debug` output.

pub mod pace;

use std::collections::{BinaryHeap, HashMap};
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::metrics::Metrics;
use pace::{Answer, Ceiling, Pace, Reaction};

/// A scope without requests for this long is dropped; it starts again
/// unpaced (the service, too, has forgotten by then).
pub const IDLE_SCOPE: Duration = Duration::from_secs(300);
/// How often idle scopes are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// How pacing is configured (`--ecs-pacing`, `--ecs-qps`, `--ecs-burst`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PacingConfig {
    /// Whether throttling answers engage adaptive pacing.
    pub adaptive: bool,
    /// A hard ceiling on every scope, whether adapted or not.
    pub ceiling: Option<Ceiling>,
}

impl Default for PacingConfig {
    fn default() -> Self {
        Self {
            adaptive: true,
            ceiling: None,
        }
    }
}

/// A quota scope: the hash of the identity behind the key (see
/// [`Pacer::slot`]) and the region.
type ScopeKey = (u64, String);

/// Permission to send one request now. Hand it back with [`Pacer::answered`].
#[derive(Debug)]
pub struct Grant {
    scope: ScopeKey,
    /// Whether a scope keeps track of it (not with pacing off and no ceiling).
    tracked: bool,
    uid: String,
    /// When it was granted, in the pacer's seconds.
    sent_at: f64,
    /// When the wall clock's second it was granted in ends, in the pacer's
    /// seconds: the end of the service's counting window it falls in.
    window_end: f64,
    /// How long the resource waited for it.
    pub waited: Duration,
}

/// A place in a scope's queue.
#[derive(Debug)]
pub struct Ticket(oneshot::Receiver<Grant>);

impl Ticket {
    /// Waits for the slot; `None` once the pacer is closed (shutting down:
    /// nothing more is sent). Dropping the ticket (or this future) gives the
    /// place up.
    pub async fn granted(self) -> Option<Grant> {
        self.0.await.ok()
    }
}

/// What [`Pacer::slot`] gave.
#[derive(Debug)]
pub enum Slot {
    /// Send now.
    Now(Grant),
    /// Wait for the ticket.
    Queued(Ticket),
}

/// One queued resource.
///
/// NB: a resource whose slot was given but never used (its write-ahead lost a
/// race, or it was deleted meanwhile) keeps its `waiting_since` entry until
/// its next answer or until the scope is dropped as idle: one entry each.
struct Waiter {
    /// When the resource started waiting (its first request for a slot since
    /// its last answer other than throttling).
    since: f64,
    seq: u64,
    enqueued: f64,
    uid: String,
    tx: oneshot::Sender<Grant>,
}

impl PartialEq for Waiter {
    fn eq(&self, other: &Self) -> bool {
        self.seq == other.seq
    }
}
impl Eq for Waiter {}
impl PartialOrd for Waiter {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Waiter {
    /// The longest waiting first (a max-heap, so reversed), then arrival order.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other
            .since
            .total_cmp(&self.since)
            .then(other.seq.cmp(&self.seq))
    }
}

struct Scope {
    pace: Pace,
    queue: BinaryHeap<Waiter>,
    /// When each resource of this scope started waiting, by UID.
    waiting_since: HashMap<String, f64>,
    dispatching: bool,
    last_used: f64,
}

struct Scopes {
    map: HashMap<ScopeKey, Scope>,
    seq: u64,
    last_sweep: f64,
    /// Set by [`Pacer::close`]: no slot is given any more.
    closed: bool,
}

/// The pacer shared by every reconcile.
pub struct Pacer {
    config: PacingConfig,
    seed: std::collections::hash_map::RandomState,
    epoch: Instant,
    scopes: Mutex<Scopes>,
    metrics: Option<Arc<Metrics>>,
}

impl std::fmt::Debug for Pacer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pacer")
            .field("config", &self.config)
            .field("scopes", &self.lock().map.len())
            .finish()
    }
}

impl Pacer {
    /// A pacer with no scopes yet, reporting to `metrics` when given.
    pub fn new(config: PacingConfig, metrics: Option<Arc<Metrics>>) -> Arc<Self> {
        Arc::new(Self {
            config,
            seed: std::collections::hash_map::RandomState::new(),
            epoch: Instant::now(),
            scopes: Mutex::new(Scopes {
                map: HashMap::new(),
                seq: 0,
                last_sweep: 0.0,
                closed: false,
            }),
            metrics,
        })
    }

    /// Whether throttling answers engage adaptive pacing.
    pub fn adaptive(&self) -> bool {
        self.config.adaptive
    }

    fn lock(&self) -> MutexGuard<'_, Scopes> {
        self.scopes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now(&self) -> f64 {
        self.epoch.elapsed().as_secs_f64()
    }

    /// A slot for resource `uid` to send to `region` as `identity`: now, or a
    /// place in the scope's queue.
    ///
    /// `identity` is who the request counts against, not the key that signs
    /// it: the role behind temporary keys (an assumed role, RRSA), so the
    /// pace is not started afresh by every refresh's new AccessKey ID; the
    /// AccessKey ID of a long-lived key. Hashed, never a label.
    pub fn slot(self: &Arc<Self>, identity: &str, region: &str, uid: &str) -> Slot {
        let t = self.now();
        if !self.config.adaptive && self.config.ceiling.is_none() {
            // Nothing to pace and nothing to learn: no scope, no lock.
            return Slot::Now(Grant {
                scope: (0, region.to_string()),
                tracked: false,
                uid: String::new(),
                sent_at: t,
                window_end: t,
                waited: Duration::ZERO,
            });
        }
        let key = (self.seed.hash_one(identity), region.to_string());
        let mut scopes = self.lock();
        if scopes.closed {
            // NB: the sender is dropped at once: the ticket says closed.
            return Slot::Queued(Ticket(oneshot::channel().1));
        }
        if t - scopes.last_sweep >= SWEEP_EVERY.as_secs_f64() {
            scopes.last_sweep = t;
            self.sweep(&mut scopes, t);
        }
        scopes.seq += 1;
        let seq = scopes.seq;
        let config = self.config;
        let scope = scopes.map.entry(key.clone()).or_insert_with(|| Scope {
            pace: Pace::new(config.adaptive, config.ceiling),
            queue: BinaryHeap::new(),
            waiting_since: HashMap::new(),
            dispatching: false,
            last_used: t,
        });
        scope.last_used = t;
        let since = *scope.waiting_since.entry(uid.to_string()).or_insert(t);
        if scope.queue.is_empty() && scope.pace.take(t).is_ok() {
            if scope.pace.is_adapted() {
                self.report_pace(&scopes, &key.1, t);
            }
            drop(scopes);
            self.observe_wait(region, Duration::ZERO);
            return Slot::Now(Grant {
                scope: key,
                tracked: true,
                uid: uid.to_string(),
                sent_at: t,
                window_end: t + seconds_to_next_wall_second(),
                waited: Duration::ZERO,
            });
        }
        let (tx, rx) = oneshot::channel();
        scope.queue.push(Waiter {
            since,
            seq,
            enqueued: t,
            uid: uid.to_string(),
            tx,
        });
        if !scope.dispatching {
            scope.dispatching = true;
            tokio::spawn(self.clone().dispatch(key));
        }
        Slot::Queued(Ticket(rx))
    }

    /// Hands out the scope's slots to its queue, oldest waiter first, until
    /// the queue is empty.
    async fn dispatch(self: Arc<Self>, key: ScopeKey) {
        loop {
            let mut granted = Vec::new();
            let wake = {
                let mut scopes = self.lock();
                let t = self.now();
                let Some(scope) = scopes.map.get_mut(&key) else {
                    return;
                };
                let wake = loop {
                    // NB: a waiter that gave up (its reconcile was dropped)
                    // takes no slot.
                    while scope.queue.peek().is_some_and(|w| w.tx.is_closed()) {
                        scope.queue.pop();
                    }
                    if scope.queue.is_empty() {
                        scope.dispatching = false;
                        break None;
                    }
                    match scope.pace.take(t) {
                        Ok(()) => {
                            let waiter = scope.queue.pop().expect("peeked above");
                            let waited = Duration::from_secs_f64((t - waiter.enqueued).max(0.0));
                            let grant = Grant {
                                scope: key.clone(),
                                tracked: true,
                                uid: waiter.uid,
                                sent_at: t,
                                window_end: t + seconds_to_next_wall_second(),
                                waited,
                            };
                            if waiter.tx.send(grant).is_ok() {
                                granted.push(waited);
                            }
                        }
                        Err(at) => break Some(at),
                    }
                };
                scope.last_used = t;
                self.report_pace(&scopes, &key.1, t);
                wake
            };
            for waited in granted {
                self.observe_wait(&key.1, waited);
            }
            match wake {
                Some(at) => {
                    tokio::time::sleep_until(self.epoch + Duration::from_secs_f64(at)).await
                }
                None => return,
            }
        }
    }

    /// Gives no more slots (the controller is shutting down): every waiter's
    /// ticket resolves to `None`, and so does every later one. Nothing that
    /// waited was sent or recorded, so nothing is lost.
    pub fn close(&self) {
        let mut scopes = self.lock();
        scopes.closed = true;
        for scope in scopes.map.values_mut() {
            scope.queue.clear();
        }
    }

    /// Takes in what the service answered to the request `grant` allowed.
    pub fn answered(&self, grant: Grant, answer: Answer) {
        let region = &grant.scope.1;
        if let (Answer::Throttled { .. }, Some(metrics)) = (answer, &self.metrics) {
            metrics.ecs_throttled(region);
        }
        if !grant.tracked {
            return;
        }
        let t = self.now();
        let mut scopes = self.lock();
        let Some(scope) = scopes.map.get_mut(&grant.scope) else {
            return;
        };
        let reaction = scope
            .pace
            .answered(t, grant.sent_at, answer, grant.window_end);
        if !matches!(answer, Answer::Throttled { .. }) {
            scope.waiting_since.remove(&grant.uid);
        }
        if let Some(reaction) = reaction {
            if reaction == Reaction::Undone {
                tracing::debug!(region = %region, "a request sent after a throttled one in the same second was accepted: that was not the quota; the cut is undone");
            }
            if let Reaction::Cut { rate, pause } = reaction {
                tracing::info!(
                    region = %region,
                    pace_per_s = format_args!("{rate:.2}"),
                    pause_ms = (pause * 1000.0).round() as u64,
                    "ECS throttled this access key in the region; pacing CancelCopyImage"
                );
            }
            self.report_pace(&scopes, region, t);
        }
    }

    /// Drops scopes idle for [`IDLE_SCOPE`].
    fn sweep(&self, scopes: &mut Scopes, t: f64) {
        let idle = IDLE_SCOPE.as_secs_f64();
        let mut dropped = Vec::new();
        scopes.map.retain(|key, scope| {
            let keep = scope.dispatching || !scope.queue.is_empty() || t - scope.last_used < idle;
            if !keep {
                dropped.push(key.1.clone());
            }
            keep
        });
        for region in dropped {
            self.report_pace(scopes, &region, t);
        }
    }

    /// Sets the region's pace gauge: the sum of its adapted scopes' paces,
    /// or none while no scope there is paced.
    fn report_pace(&self, scopes: &Scopes, region: &str, t: f64) {
        let Some(metrics) = &self.metrics else {
            return;
        };
        let mut sum = None;
        for ((_, r), scope) in &scopes.map {
            if r == region && scope.pace.is_adapted() {
                let rate = scope.pace.rate(t).unwrap_or(0.0);
                sum = Some(sum.unwrap_or(0.0) + rate);
            }
        }
        metrics.ecs_pace(region, sum);
    }

    fn observe_wait(&self, region: &str, waited: Duration) {
        if let Some(metrics) = &self.metrics {
            metrics.ecs_pace_wait(region, waited.as_secs_f64());
        }
    }

    /// How many scopes are held (for tests and `Debug`).
    pub fn scopes(&self) -> usize {
        self.lock().map.len()
    }
}

/// The time left in the current second of the wall clock: the service counts
/// calls in windows aligned to it.
fn seconds_to_next_wall_second() -> f64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    1.0 - f64::from(since_epoch.subsec_nanos()) / 1e9
}

#[cfg(test)]
mod tests;
