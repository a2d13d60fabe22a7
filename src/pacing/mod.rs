//! Client-side pacing of CancelCopyImage, one pace per quota scope: ECS
//! counts calls per API, per region and per account, so a scope is (the
//! identity behind the key, region): the role behind temporary keys, the
//! access key ID of a long-lived key (see [`Pacer::slot`]). A scope is made
//! on first use and dropped after [`IDLE_SCOPE`] without requests; its
//! [`pace::Pace`] decides, this shell keeps the queue and the clock.
//!
//! ```text
//!  reconcile ──slot(identity, region, uid)──▶ scope ──free?──▶ Slot::Now(grant)
//!                                               │ no: queued, oldest waiter first
//!                                               ▼
//!                                       dispatcher task ──at each slot──▶ Ticket resolves
//!  send ... answer ──answered(grant, answer)──▶ pace: cut on fresh throttling
//! ```
//!
//! Fairness: inside a scope the resource that has waited longest goes next.
//! A resource's wait starts at its first request for a slot and lasts until
//! an answer other than throttling, so a throttled resource keeps its place
//! ahead of resources that came after it, and none starves behind retries.
//!
//! Outages: each region's endpoint has a [`breaker::Breaker`]. While it is
//! open, [`Pacer::slot`] holds every resource of the region
//! ([`Slot::Unavailable`]) in its queue, oldest waiter first; a task per open
//! region hands one probe at a time to the longest waiting resource, and the
//! first answer that is not outage-class releases them all, in order, to the
//! pace. The controller reports answers with [`Pacer::answered_by_endpoint`].
//!
//! NB: the identity (a role ARN or an access key ID) is kept only as a hash
//! with a per-process seed; it is never in a label, a log line or `Debug`
//! output.

pub mod breaker;
pub mod pace;

use std::collections::{BinaryHeap, HashMap};
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use crate::ecs::{EndpointOutage, Incident};
use crate::metrics::Metrics;
use breaker::{Breaker, Change, Health};
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
    /// Set when it is an open breaker's probe.
    probe: Option<ProbeGuard>,
}

impl Grant {
    /// Whether this is the probe of an endpoint in an outage.
    pub fn is_probe(&self) -> bool {
        self.probe.is_some()
    }
}

/// Tells the breaker when a probe is dropped without its answer being
/// reported (its write-ahead lost a race, the resource went away), so the
/// next probe is not held up forever.
#[derive(Debug)]
struct ProbeGuard {
    pacer: Weak<Pacer>,
    region: String,
    armed: bool,
}

impl ProbeGuard {
    /// Done with: the answer was reported (or the probe never left the pacer).
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for ProbeGuard {
    fn drop(&mut self) {
        if self.armed
            && let Some(pacer) = self.pacer.upgrade()
        {
            pacer.probe_unused(&self.region);
        }
    }
}

/// What a resource held by an open breaker is told.
#[derive(Debug)]
pub enum Release {
    /// Send now: this request is the endpoint's probe.
    Probe(Grant),
    /// The endpoint answers again: ask for a slot again.
    Closed,
}

/// A place in the queue of an endpoint in an outage.
#[derive(Debug)]
pub struct HeldTicket(oneshot::Receiver<Release>);

impl HeldTicket {
    /// Waits for the probe's turn or the end of the outage; `None` once the
    /// pacer is closed (shutting down). Dropping it gives the place up.
    pub async fn released(self) -> Option<Release> {
        self.0.await.ok()
    }
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
    /// The region's endpoint is in an outage: wait for the ticket.
    Unavailable(HeldTicket, EndpointOutage),
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

/// A resource held by an open breaker.
struct Held {
    since: f64,
    seq: u64,
    uid: String,
    tx: oneshot::Sender<Release>,
}

impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        self.seq == other.seq
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Held {
    /// The longest waiting first (a max-heap, so reversed), then arrival order.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other
            .since
            .total_cmp(&self.since)
            .then(other.seq.cmp(&self.seq))
    }
}

/// One region's endpoint: its breaker and, while open, who waits.
struct Endpoint {
    breaker: Breaker,
    /// When it opened, on the wall clock (for status messages).
    opened_at: Option<jiff::Timestamp>,
    queue: BinaryHeap<Held>,
    /// When each resource started waiting for this endpoint, by UID: kept
    /// across outage-class answers, so a resource keeps its place.
    waiting_since: HashMap<String, f64>,
    /// Whether the probe task runs.
    probing: bool,
    /// Wakes the probe task (a probe answered or unused, a new waiter).
    wake: Arc<Notify>,
    /// Up to when the outage seconds metric is counted.
    accounted: f64,
}

impl Endpoint {
    fn new() -> Self {
        Self {
            breaker: Breaker::new(),
            opened_at: None,
            queue: BinaryHeap::new(),
            waiting_since: HashMap::new(),
            probing: false,
            wake: Arc::new(Notify::new()),
            accounted: 0.0,
        }
    }

    fn outage(&self, region: &str) -> Option<EndpointOutage> {
        let (_, last_error) = self.breaker.outage()?;
        Some(EndpointOutage {
            region: region.to_owned(),
            since: self.opened_at.unwrap_or_else(jiff::Timestamp::now),
            last_error: last_error.to_owned(),
        })
    }
}

struct Scopes {
    map: HashMap<ScopeKey, Scope>,
    /// Each region's endpoint health, made on its first answer.
    endpoints: HashMap<String, Endpoint>,
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
                endpoints: HashMap::new(),
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
        if let Some(held) = self.hold_if_unavailable(region, uid, t) {
            return held;
        }
        if !self.config.adaptive && self.config.ceiling.is_none() {
            // Nothing to pace and nothing to learn: no scope.
            return Slot::Now(Grant {
                scope: (0, region.to_string()),
                tracked: false,
                uid: uid.to_string(),
                sent_at: t,
                window_end: t,
                waited: Duration::ZERO,
                probe: None,
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
                probe: None,
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
                                probe: None,
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
        for endpoint in scopes.endpoints.values_mut() {
            endpoint.queue.clear();
            endpoint.wake.notify_one();
        }
    }

    /// Holds resource `uid` when `region`'s endpoint is in an outage: a
    /// place in its queue (counted once per hold) and what the outage is.
    /// `None` when the endpoint is not in one (or shutting down).
    fn hold_if_unavailable(self: &Arc<Self>, region: &str, uid: &str, t: f64) -> Option<Slot> {
        let mut scopes = self.lock();
        if scopes.closed {
            // NB: the sender is dropped at once: the ticket says closed.
            return Some(Slot::Queued(Ticket(oneshot::channel().1)));
        }
        scopes.seq += 1;
        let seq = scopes.seq;
        let endpoint = scopes.endpoints.get_mut(region)?;
        if !endpoint.breaker.is_open() {
            return None;
        }
        let since = *endpoint.waiting_since.entry(uid.to_string()).or_insert(t);
        let (tx, rx) = oneshot::channel();
        endpoint.queue.push(Held {
            since,
            seq,
            uid: uid.to_string(),
            tx,
        });
        endpoint.wake.notify_one();
        if !endpoint.probing {
            endpoint.probing = true;
            tokio::spawn(self.clone().probe(region.to_string()));
        }
        let outage = endpoint.outage(region)?;
        if let Some(metrics) = &self.metrics {
            metrics.ecs_request_held(region);
        }
        Some(Slot::Unavailable(HeldTicket(rx), outage))
    }

    /// While `region`'s breaker is open: gives the probe to the longest
    /// waiting resource whenever one is due, and counts outage seconds.
    async fn probe(self: Arc<Self>, region: String) {
        loop {
            let (wake, at) = {
                let mut scopes = self.lock();
                let t = self.now();
                let closed = scopes.closed;
                let Some(endpoint) = scopes.endpoints.get_mut(&region) else {
                    return;
                };
                self.account_outage(endpoint, &region, t);
                if closed || !endpoint.breaker.is_open() {
                    endpoint.probing = false;
                    return;
                }
                // NB: wakes at least every second to keep the outage seconds current.
                let mut at = t + 1.0;
                match endpoint.breaker.probe_due() {
                    Some(due) if due <= t => {
                        while let Some(held) = endpoint.queue.pop() {
                            let grant = Grant {
                                scope: (0, region.clone()),
                                tracked: false,
                                uid: held.uid.clone(),
                                sent_at: t,
                                window_end: t,
                                waited: Duration::from_secs_f64((t - held.since).max(0.0)),
                                probe: Some(ProbeGuard {
                                    pacer: Arc::downgrade(&self),
                                    region: region.clone(),
                                    armed: true,
                                }),
                            };
                            match held.tx.send(Release::Probe(grant)) {
                                Ok(()) => {
                                    endpoint.breaker.probe_sent();
                                    // NB: the probed resource goes to the back:
                                    // one image that always fails (a poisoned
                                    // one) must not be every probe.
                                    endpoint.waiting_since.insert(held.uid, t);
                                    break;
                                }
                                Err(Release::Probe(mut unused)) => {
                                    // Gave up its place (deadline, deleted):
                                    // the next in line probes instead.
                                    if let Some(guard) = unused.probe.take() {
                                        guard.disarm();
                                    }
                                }
                                Err(Release::Closed) => {}
                            }
                        }
                    }
                    Some(due) => at = at.min(due),
                    None => {}
                }
                (endpoint.wake.clone(), at)
            };
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep_until(self.epoch + Duration::from_secs_f64(at)) => {}
            }
        }
    }

    /// Adds the time `endpoint` has been open since last counted.
    fn account_outage(&self, endpoint: &mut Endpoint, region: &str, t: f64) {
        if endpoint.breaker.is_open() && t > endpoint.accounted {
            if let Some(metrics) = &self.metrics {
                metrics.ecs_outage_seconds(region, t - endpoint.accounted);
            }
            endpoint.accounted = t;
        }
    }

    /// A probe of `region` was dropped without its answer.
    fn probe_unused(&self, region: &str) {
        let t = self.now();
        let mut scopes = self.lock();
        if let Some(endpoint) = scopes.endpoints.get_mut(region) {
            endpoint.breaker.probe_unused(t);
            endpoint.wake.notify_one();
        }
    }

    /// Takes in what the service answered to the request `grant` allowed:
    /// `answer` for the pace of its access key, `health` for its region's
    /// endpoint. Whether the endpoint is in an incident (an `InternalError`
    /// then says nothing about the resource), and the outage while its
    /// breaker is open.
    pub fn answered_by_endpoint(
        &self,
        mut grant: Grant,
        answer: Answer,
        health: Health,
    ) -> (Incident, Option<EndpointOutage>) {
        let probe = grant.probe.take().map(ProbeGuard::disarm).is_some();
        let region = grant.scope.1.clone();
        let verdict = {
            let t = self.now();
            let mut scopes = self.lock();
            let endpoint = scopes.endpoints.entry(region.clone()).or_insert_with(|| {
                if let Some(metrics) = &self.metrics {
                    metrics.ecs_endpoint_available(&region, true);
                }
                Endpoint::new()
            });
            let verdict =
                endpoint
                    .breaker
                    .answered(t, &grant.uid, &health, probe, rand::random::<f64>());
            let says_nothing_of_the_resource = match health {
                Health::Outage(_) => true,
                Health::InternalError(_) => verdict.incident,
                Health::Answers => false,
            };
            if !says_nothing_of_the_resource {
                endpoint.waiting_since.remove(&grant.uid);
            }
            match verdict.change {
                Some(Change::Opened) => {
                    endpoint.opened_at = Some(jiff::Timestamp::now());
                    endpoint.accounted = t;
                    let last_error = endpoint.breaker.outage().map(|(_, e)| e).unwrap_or("");
                    tracing::warn!(
                        region = %region,
                        last_error,
                        "the ECS endpoint of this region is failing: its resources wait (EcsUnavailable), \
                         one probe at a time; nothing counts against backoffLimit until it answers"
                    );
                    if let Some(metrics) = &self.metrics {
                        metrics.ecs_endpoint_available(&region, false);
                    }
                }
                Some(Change::Closed { after } | Change::GaveUp { after }) => {
                    if let Some(metrics) = &self.metrics {
                        if after > 0.0 && t > endpoint.accounted {
                            metrics.ecs_outage_seconds(&region, t - endpoint.accounted);
                        }
                        metrics.ecs_endpoint_available(&region, true);
                    }
                    endpoint.accounted = t;
                    endpoint.opened_at = None;
                    let waiting = endpoint.queue.len();
                    if matches!(verdict.change, Some(Change::GaveUp { .. })) {
                        tracing::warn!(
                            region = %region,
                            outage_s = after.round() as u64,
                            waiting,
                            "the ECS endpoint of this region answers only InternalError, and again for images \
                             already probed: those images fail on their own (counted against backoffLimit); \
                             its waiting resources go, in order"
                        );
                    } else {
                        tracing::info!(
                            region = %region,
                            outage_s = after.round() as u64,
                            waiting,
                            "the ECS endpoint of this region answers again: its waiting resources go, in order"
                        );
                    }
                    // Oldest first: the heap's order is the pace's order.
                    while let Some(held) = endpoint.queue.pop() {
                        let _ = held.tx.send(Release::Closed);
                    }
                    endpoint.waiting_since.clear();
                    endpoint.wake.notify_one();
                }
                None if probe => endpoint.wake.notify_one(),
                None => {}
            }
            let outage = endpoint.outage(&region);
            (verdict.incident, outage)
        };
        let (incident, outage) = verdict;
        self.answered(grant, answer);
        let incident = if incident {
            Incident::Yes
        } else {
            Incident::No
        };
        (incident, outage)
    }

    /// Whether `region`'s endpoint is in an outage now (for tests and logs).
    pub fn endpoint_outage(&self, region: &str) -> Option<EndpointOutage> {
        self.lock().endpoints.get(region)?.outage(region)
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
        // NB: no usable answer (an outage) says nothing about the resource
        // either: it keeps its place for when the endpoint is back.
        if !matches!(answer, Answer::Throttled { .. } | Answer::Unknown) {
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
                    "ECS throttled this identity in the region; pacing CancelCopyImage"
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
        // An endpoint with nothing to remember is made again on its next answer.
        scopes.endpoints.retain(|_, endpoint| {
            endpoint.probing
                || !endpoint.queue.is_empty()
                || !endpoint.waiting_since.is_empty()
                || endpoint.breaker != Breaker::new()
        });
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
mod outage_tests;
#[cfg(test)]
mod tests;
