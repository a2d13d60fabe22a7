//! Prometheus metrics of the controller (served on `/metrics` by
//! [`crate::admin`]): reconciles, CancelCopyImage requests by outcome class
//! and by ECS code, retries scheduled, resources by phase, status writes by
//! result, resources ending Failed by reason, the age of the oldest
//! unfinished resource, leadership, and the operator credentials' refreshes
//! and state.
//! Labels never carry resource names, request IDs, keys or messages, and an
//! ECS code the operator does not know becomes `other`: cardinality stays
//! fixed and nothing secret can leak.

use std::collections::HashSet;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use jiff::Timestamp;

use kube::runtime::reflector::Store;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::ecs::{CODES_AFTER_A_POSSIBLE_SUCCESS, CancelOutcome, RetryClass, TransportKind};
use crate::identity::{CredentialState, CredentialStatus};
use crate::resource::{CopyImageCancellation, Phase};

/// ECS error codes that keep their own `code` label value: CancelCopyImage's
/// documented codes, the API gateway's common codes (signature, key, token,
/// throttling, availability), and the two codes the client gives a request it
/// refuses before sending. Any other code is counted as [`OTHER_CODE`].
pub const KNOWN_CODES: &[&str] = &[
    // CancelCopyImage (API reference).
    "ImageCreatedNotFromCopy",
    "IncorrectImageStatus",
    "InvalidDescription.Malformed",
    "CancelNotSupported",
    "InternalError",
    "InvalidRegionId.NotFound",
    "InvalidImageId.NotFound",
    "MissingParameter",
    // API gateway, common to every action.
    "SignatureDoesNotMatch",
    "IncompleteSignature",
    "InvalidAccessKeyId.NotFound",
    "InvalidAccessKeyId.Inactive",
    "InvalidTimeStamp.Expired",
    "InvalidTimeStamp.Format",
    "SignatureNonceUsed",
    "InvalidSignatureMethod",
    "InvalidSignatureVersion",
    "InvalidApi.NotFound",
    "InvalidAction.NotFound",
    "InvalidParameter",
    "Forbidden.RAM",
    "Throttling",
    "Throttling.User",
    "Throttling.Api",
    "Rejected.Throttling",
    "ServiceUnavailable",
    "UnknownError",
    // STS tokens.
    "MissingSecurityToken",
    "InvalidSecurityToken.Expired",
    "InvalidSecurityToken.Malformed",
    "InvalidSecurityToken.MismatchWithAccessKey",
    // Refused by the client before anything was sent.
    "InvalidRegionId.Malformed",
    "InvalidEndpoint",
];

/// `code` label of a success.
pub const SUCCESS_CODE: &str = "Success";
/// `code` label of an ECS code not in [`KNOWN_CODES`].
pub const OTHER_CODE: &str = "other";

/// Every phase, in the contract's order, for the resources-by-phase gauge.
const PHASES: [Phase; 4] = [
    Phase::Pending,
    Phase::Running,
    Phase::Succeeded,
    Phase::Failed,
];

/// Every credential state, so the state gauge can zero the ones not current.
const CREDENTIAL_STATES: [CredentialState; 7] = [
    CredentialState::NotConfigured,
    CredentialState::Static,
    CredentialState::Pending,
    CredentialState::Valid,
    CredentialState::RefreshFailing,
    CredentialState::Expired,
    CredentialState::Unavailable,
];

/// `state`/`source` labels of the operator credential state gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CredentialLabel {
    /// `Valid`, `RefreshFailing`, ... ([`CredentialState::as_str`]).
    pub state: &'static str,
    /// `environment`, `rrsa`, `ecs-ram-role` or `none`.
    pub source: &'static str,
}

/// `class` label of CancelCopyImage requests.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabel {
    /// `success`, `terminal`, `retryable` or `throttled`.
    pub class: &'static str,
}

/// `code`/`outcome` labels of ECS requests.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EcsRequestLabel {
    /// [`code_label`]: `Success`, a known ECS code, `TransportError.<Kind>` or `other`.
    pub code: &'static str,
    /// How the retry policy treated it: `success`, `terminal`, `retryable` or `throttled`.
    pub outcome: &'static str,
}

/// `reason` label of scheduled retries.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RetryLabel {
    /// `RetryScheduled` (counted against backoffLimit) or `Throttled` (not counted).
    pub reason: &'static str,
}

/// `region` label of the pacing metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RegionLabel {
    /// The region ID, or `other` past [`MAX_REGION_LABELS`] regions.
    pub region: String,
}

/// Most distinct `region` label values.
pub const MAX_REGION_LABELS: usize = 64;

/// A histogram of the seconds resources waited for a slot.
fn pace_wait_histogram() -> Histogram {
    Histogram::new([
        0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
    ])
}

/// `phase` label of the resources gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabel {
    /// `Pending`, `Running`, `Succeeded` or `Failed`.
    pub phase: &'static str,
}

/// `reason` label of resources that ended Failed.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailedLabel {
    /// The Stalled condition's reason, bounded by the controller
    /// (`RetriesExhausted`, `DeadlineExceeded`, a known ECS code as a reason ... or `other`).
    pub reason: String,
}

/// `result` label of status writes.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// `applied`, `conflict`, `gone` or `error`.
    pub result: &'static str,
}

/// The controller's metrics and the registry that exposes them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    reconciles: Counter,
    reconcile_errors: Counter,
    reconcile_duration: Histogram,
    requests: Family<ClassLabel, Counter>,
    ecs_requests: Family<EcsRequestLabel, Counter>,
    request_duration: Histogram,
    retries_scheduled: Family<RetryLabel, Counter>,
    resources: ResourceStores,
    leader: Gauge,
    status_writes: Family<ResultLabel, Counter>,
    resources_failed: Family<FailedLabel, Counter>,
    credential_refreshes: Counter,
    credential_refresh_failures: Counter,
    credential_state: Family<CredentialLabel, Gauge>,
    ecs_pace: Family<RegionLabel, Gauge<f64, AtomicU64>>,
    ecs_throttled: Family<RegionLabel, Counter>,
    ecs_pace_wait: Family<RegionLabel, Histogram, fn() -> Histogram>,
    ecs_endpoint_available: Family<RegionLabel, Gauge>,
    ecs_outage_seconds: Family<RegionLabel, Counter<f64, AtomicU64>>,
    ecs_requests_held: Family<RegionLabel, Counter>,
    regions_seen: Mutex<HashSet<String>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("copyimage_canceller");
        let reconciles = Counter::default();
        registry.register("reconciles", "Reconciles run", reconciles.clone());
        let reconcile_errors = Counter::default();
        registry.register(
            "reconcile_errors",
            "Reconciles that failed and were requeued",
            reconcile_errors.clone(),
        );
        let reconcile_duration = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        registry.register(
            "reconcile_duration_seconds",
            "Time spent in one reconcile, the CancelCopyImage request included",
            reconcile_duration.clone(),
        );
        let requests = Family::<ClassLabel, Counter>::default();
        registry.register(
            "cancel_requests",
            "CancelCopyImage requests sent, by how the outcome was treated",
            requests.clone(),
        );
        let ecs_requests = Family::<EcsRequestLabel, Counter>::default();
        registry.register(
            "ecs_requests",
            "CancelCopyImage requests by ECS code (Success, a known code, TransportError.<kind>, \
             or other) and by how the retry policy treated the outcome",
            ecs_requests.clone(),
        );
        let retries_scheduled = Family::<RetryLabel, Counter>::default();
        registry.register(
            "retries_scheduled",
            "Retries scheduled, by reason (RetryScheduled counts against backoffLimit, Throttled does not)",
            retries_scheduled.clone(),
        );
        // NB: both reasons exist from the start, so rate() sees the first retry.
        for class in [
            RetryClass::Retryable,
            RetryClass::Throttled,
            RetryClass::Outage,
        ] {
            let _ = retries_scheduled.get_or_create(&RetryLabel {
                reason: retry_reason_label(class),
            });
        }
        let resources = ResourceStores::default();
        registry.register_collector(Box::new(resources.clone()));
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this process runs the controllers (holds the leader Lease, or --leader-elect is off), \
             0 while it waits as a follower",
            leader.clone(),
        );
        let request_duration = Histogram::new(exponential_buckets(0.01, 2.0, 14));
        registry.register(
            "cancel_request_duration_seconds",
            "Time from sending CancelCopyImage to its outcome",
            request_duration.clone(),
        );
        let status_writes = Family::<ResultLabel, Counter>::default();
        registry.register(
            "status_writes",
            "Status writes (server-side apply), by result",
            status_writes.clone(),
        );
        // NB: every result exists from the start, so rate() sees the first error.
        for result in ["applied", "conflict", "gone", "error"] {
            let _ = status_writes.get_or_create(&ResultLabel { result });
        }
        let resources_failed = Family::<FailedLabel, Counter>::default();
        registry.register(
            "resources_failed",
            "Resources this process moved to phase Failed, by the Stalled condition's reason",
            resources_failed.clone(),
        );
        let credential_refreshes = Counter::default();
        registry.register(
            "credential_refreshes",
            "Successful fetches of the operator's temporary credentials (RRSA or instance role)",
            credential_refreshes.clone(),
        );
        let credential_refresh_failures = Counter::default();
        registry.register(
            "credential_refresh_failures",
            "Failed fetches of the operator's temporary credentials",
            credential_refresh_failures.clone(),
        );
        let credential_state = Family::<CredentialLabel, Gauge>::default();
        registry.register(
            "credential_state",
            "1 for the operator credentials' current state and source, 0 for the others",
            credential_state.clone(),
        );
        let ecs_pace = Family::<RegionLabel, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "ecs_pace_requests_per_second",
            "Client-side pace of CancelCopyImage towards a region, summed over the access keys \
             ECS has throttled there (absent: no key is paced in the region, nothing holds requests back)",
            ecs_pace.clone(),
        );
        let ecs_throttled = Family::<RegionLabel, Counter>::default();
        registry.register(
            "ecs_throttled",
            "Throttling answers (Throttling, Throttling.User, Throttling.Api ...) from ECS, by region",
            ecs_throttled.clone(),
        );
        let ecs_pace_wait =
            Family::<RegionLabel, Histogram, fn() -> Histogram>::new_with_constructor(
                pace_wait_histogram,
            );
        registry.register(
            "ecs_pace_wait_seconds",
            "Time resources waited for the pace of their access key and region before sending",
            ecs_pace_wait.clone(),
        );
        let ecs_endpoint_available = Family::<RegionLabel, Gauge>::default();
        registry.register(
            "ecs_endpoint_available",
            "1 while the region's ECS endpoint answers (its breaker closed), 0 during an outage \
             (open: resources wait with reason EcsUnavailable)",
            ecs_endpoint_available.clone(),
        );
        let ecs_outage_seconds = Family::<RegionLabel, Counter<f64, AtomicU64>>::default();
        registry.register(
            "ecs_outage_seconds",
            "Seconds the region's ECS endpoint breaker has been open",
            ecs_outage_seconds.clone(),
        );
        let ecs_requests_held = Family::<RegionLabel, Counter>::default();
        registry.register(
            "ecs_requests_held",
            "Requests not sent because the region's ECS endpoint was in an outage (once per resource made to wait)",
            ecs_requests_held.clone(),
        );
        Self {
            ecs_pace,
            ecs_throttled,
            ecs_pace_wait,
            ecs_endpoint_available,
            ecs_outage_seconds,
            ecs_requests_held,
            regions_seen: Mutex::default(),
            registry,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            requests,
            ecs_requests,
            request_duration,
            retries_scheduled,
            resources,
            leader,
            status_writes,
            resources_failed,
            credential_refreshes,
            credential_refresh_failures,
            credential_state,
        }
    }
}

/// The `reason` label of a scheduled retry: the condition reason it sets.
fn retry_reason_label(class: RetryClass) -> &'static str {
    match class {
        RetryClass::Throttled => "Throttled",
        RetryClass::Outage => "EcsUnavailable",
        _ => "RetryScheduled",
    }
}

/// The `outcome` label value of a retry class.
fn class_label(class: RetryClass) -> &'static str {
    match class {
        RetryClass::Success => "success",
        RetryClass::Terminal => "terminal",
        RetryClass::Retryable => "retryable",
        RetryClass::Throttled => "throttled",
        RetryClass::Outage => "outage",
    }
}

/// The `code` label of an outcome: `Success`, the ECS code when it is one of
/// [`KNOWN_CODES`], `TransportError.<kind>` when no usable answer came, and
/// [`OTHER_CODE`] for any other code (a server string never becomes a label).
pub fn code_label(outcome: &CancelOutcome) -> &'static str {
    match outcome {
        CancelOutcome::Cancelled { .. } => SUCCESS_CODE,
        CancelOutcome::Service(err) => KNOWN_CODES
            .iter()
            .chain(CODES_AFTER_A_POSSIBLE_SUCCESS.iter())
            .find(|known| **known == err.code)
            .copied()
            .unwrap_or(OTHER_CODE),
        CancelOutcome::Transport(err) => match err.kind {
            TransportKind::Connect => "TransportError.Connect",
            TransportKind::Timeout => "TransportError.Timeout",
            TransportKind::Interrupted => "TransportError.Interrupted",
            TransportKind::InvalidResponse => "TransportError.InvalidResponse",
            TransportKind::HostNotFound => "TransportError.HostNotFound",
        },
    }
}

/// How many resources are in each phase; a resource without a status yet
/// counts as `Pending` (nothing has been sent for it).
pub fn phase_counts(phases: impl IntoIterator<Item = Option<Phase>>) -> [(Phase, u64); 4] {
    let mut counts = PHASES.map(|p| (p, 0));
    for phase in phases {
        let phase = phase.unwrap_or(Phase::Pending);
        if let Some(slot) = counts.iter_mut().find(|(p, _)| *p == phase) {
            slot.1 += 1;
        }
    }
    counts
}

fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Pending => "Pending",
        Phase::Running => "Running",
        Phase::Succeeded => "Succeeded",
        Phase::Failed => "Failed",
    }
}

/// The controllers' resource caches, counted by phase at scrape time: exact
/// after deletions (the cache forgets them) and restarts (it is listed anew).
#[derive(Clone, Default)]
struct ResourceStores(Arc<Mutex<Vec<Store<CopyImageCancellation>>>>);

impl std::fmt::Debug for ResourceStores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let stores = self.0.lock().map(|s| s.len()).unwrap_or_default();
        f.debug_struct("ResourceStores")
            .field("stores", &stores)
            .finish()
    }
}

impl Collector for ResourceStores {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let objects: Vec<Arc<CopyImageCancellation>> = self
            .0
            .lock()
            .expect("resource stores poisoned")
            .iter()
            .flat_map(Store::state)
            .collect();
        let counts = phase_counts(
            objects
                .iter()
                .map(|o| o.status.as_ref().and_then(|s| s.phase)),
        );
        let mut metric = encoder.encode_descriptor(
            "resources",
            "CopyImageCancellations in the watched scope by status.phase (no status yet counts as \
             Pending); counted from the controller's cache, so 0 on a follower",
            None,
            MetricType::Gauge,
        )?;
        for (phase, count) in counts {
            let label = PhaseLabel {
                phase: phase_name(phase),
            };
            ConstGauge::new(i64::try_from(count).unwrap_or(i64::MAX))
                .encode(metric.encode_family(&label)?)?;
        }
        let age = oldest_unfinished_age(
            objects.iter().map(|o| {
                (
                    o.status.as_ref().and_then(|s| s.phase),
                    o.metadata.creation_timestamp.as_ref().map(|t| t.0),
                )
            }),
            Timestamp::now(),
        );
        let metric = encoder.encode_descriptor(
            "oldest_unfinished_resource_age_seconds",
            "Seconds since the oldest resource that is not Succeeded or Failed was created \
             (0 when none); from the controller's cache, so 0 on a follower",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(age).encode(metric)?;
        Ok(())
    }
}

/// Seconds since the oldest of `resources` (phase, creation time) that is not
/// final was created, at `now`; 0 when every one is final (or there are none).
pub fn oldest_unfinished_age(
    resources: impl IntoIterator<Item = (Option<Phase>, Option<Timestamp>)>,
    now: Timestamp,
) -> f64 {
    resources
        .into_iter()
        .filter(|(phase, _)| !phase.is_some_and(Phase::is_finished))
        .filter_map(|(_, created)| created)
        .min()
        // NB: a creation time ahead of our clock (skew) is no age at all.
        .map_or(0.0, |created| {
            now.duration_since(created).as_secs_f64().max(0.0)
        })
}

/// Observes a reconcile's duration when dropped, whichever way it ends.
pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    started: Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.metrics
            .reconcile_duration
            .observe(self.started.elapsed().as_secs_f64());
    }
}

impl Metrics {
    /// Counts a reconcile and times it until the timer is dropped.
    pub fn reconcile(&self) -> ReconcileTimer<'_> {
        self.reconciles.inc();
        ReconcileTimer {
            metrics: self,
            started: Instant::now(),
        }
    }

    /// Counts a failed reconcile.
    pub fn reconcile_failed(&self) {
        self.reconcile_errors.inc();
    }

    /// Counts a CancelCopyImage request that produced `outcome` in `seconds`.
    pub fn request(&self, outcome: &CancelOutcome, seconds: f64) {
        let class = class_label(outcome.retry_class());
        self.requests.get_or_create(&ClassLabel { class }).inc();
        self.ecs_requests
            .get_or_create(&EcsRequestLabel {
                code: code_label(outcome),
                outcome: class,
            })
            .inc();
        self.request_duration.observe(seconds);
    }

    /// Counts a retry scheduled after an outcome of class `class`
    /// (`Retryable`: counted against backoffLimit; `Throttled`: not).
    pub fn retry_scheduled(&self, class: RetryClass) {
        self.retries_scheduled
            .get_or_create(&RetryLabel {
                reason: retry_reason_label(class),
            })
            .inc();
    }

    /// Sets the client-side pace towards `region` (requests per second,
    /// summed over its paced access keys); `None`: no key is paced there.
    pub fn ecs_pace(&self, region: &str, per_second: Option<f64>) {
        let label = self.region_label(region);
        match per_second {
            Some(rate) => {
                self.ecs_pace.get_or_create(&label).set(rate);
            }
            None => {
                self.ecs_pace.remove(&label);
            }
        }
    }

    /// Counts a `Throttling*` answer from `region`.
    pub fn ecs_throttled(&self, region: &str) {
        self.ecs_throttled
            .get_or_create(&self.region_label(region))
            .inc();
    }

    /// Observes how long a resource waited for a slot to send to `region`.
    pub fn ecs_pace_wait(&self, region: &str, seconds: f64) {
        self.ecs_pace_wait
            .get_or_create(&self.region_label(region))
            .observe(seconds);
    }

    /// Sets whether `region`'s endpoint answers (its breaker closed) or is in
    /// an outage (open).
    pub fn ecs_endpoint_available(&self, region: &str, available: bool) {
        self.ecs_endpoint_available
            .get_or_create(&self.region_label(region))
            .set(i64::from(available));
    }

    /// Adds `seconds` to the time `region`'s breaker has been open.
    pub fn ecs_outage_seconds(&self, region: &str, seconds: f64) {
        self.ecs_outage_seconds
            .get_or_create(&self.region_label(region))
            .inc_by(seconds);
    }

    /// Counts a resource made to wait because `region`'s breaker is open.
    pub fn ecs_request_held(&self, region: &str) {
        self.ecs_requests_held
            .get_or_create(&self.region_label(region))
            .inc();
    }

    /// The `region` label: the region ID for the first [`MAX_REGION_LABELS`]
    /// regions seen, [`OTHER_CODE`] beyond (region IDs come from resources,
    /// so their number is not ours to bound).
    fn region_label(&self, region: &str) -> RegionLabel {
        let mut seen = self.regions_seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.contains(region)
            || (seen.len() < MAX_REGION_LABELS && seen.insert(region.to_string()))
        {
            RegionLabel {
                region: region.to_string(),
            }
        } else {
            RegionLabel {
                region: OTHER_CODE.to_string(),
            }
        }
    }

    /// Sets the leader gauge: whether this process runs the controllers.
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// Counts `store`'s resources by phase at every scrape (one store per
    /// watched namespace, or one for all).
    pub fn watch_resources(&self, store: Store<CopyImageCancellation>) {
        self.resources
            .0
            .lock()
            .expect("resource stores poisoned")
            .push(store);
    }

    /// Counts a resource that this process moved to phase Failed with the
    /// Stalled condition `reason` (already bounded by the caller).
    pub fn resource_failed(&self, reason: &str) {
        self.resources_failed
            .get_or_create(&FailedLabel {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Counts a status write with `result` (`applied`, `conflict`, `gone`, `error`).
    pub fn status_write(&self, result: &'static str) {
        self.status_writes
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    /// Records where the operator credentials stand: the refresh counters
    /// catch up with the status' totals, and the state gauge moves to its state.
    pub fn credentials(&self, status: &CredentialStatus) {
        let refreshes = status
            .refreshes_total
            .saturating_sub(self.credential_refreshes.get());
        self.credential_refreshes.inc_by(refreshes);
        let failures = status
            .failures_total
            .saturating_sub(self.credential_refresh_failures.get());
        self.credential_refresh_failures.inc_by(failures);
        let source = status.source.map_or("none", |s| s.as_str());
        for state in CREDENTIAL_STATES {
            let value = i64::from(state == status.state);
            self.credential_state
                .get_or_create(&CredentialLabel {
                    state: state.as_str(),
                    source,
                })
                .set(value);
        }
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // NB: writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{assert_lines, cancellation};

    #[test]
    fn exposition_names_and_labels() {
        let m = Metrics::default();
        {
            let _timer = m.reconcile();
        }
        m.request(
            &CancelOutcome::Cancelled {
                request_id: "R-1".into(),
            },
            0.2,
        );
        m.request(&service(400, "Throttling.User"), 0.1);
        m.status_write("applied");
        m.status_write("conflict");
        let text = m.encode();
        assert_lines(
            &text,
            [
                "copyimage_canceller_reconciles_total 1",
                "copyimage_canceller_reconcile_errors_total 0",
                "copyimage_canceller_cancel_requests_total{class=\"success\"} 1",
                "copyimage_canceller_cancel_requests_total{class=\"throttled\"} 1",
                "copyimage_canceller_status_writes_total{result=\"applied\"} 1",
                "copyimage_canceller_status_writes_total{result=\"conflict\"} 1",
                "copyimage_canceller_reconcile_duration_seconds_count 1",
                "copyimage_canceller_cancel_request_duration_seconds_count 2",
            ],
        );
        assert!(text.ends_with("# EOF\n"));
    }

    fn service(http_status: u16, code: &str) -> CancelOutcome {
        CancelOutcome::Service(crate::ecs::ServiceError {
            http_status,
            code: code.into(),
            message: "secret message".into(),
            request_id: Some("REQUEST-ID-1".into()),
            host_id: None,
            recommend: None,
            retry_after: None,
        })
    }

    fn transport(kind: TransportKind) -> CancelOutcome {
        CancelOutcome::Transport(crate::ecs::TransportError {
            kind,
            message: "connection reset".into(),
            http_status: None,
        })
    }

    #[test]
    fn code_labels_are_bounded() {
        let rows = [
            (
                CancelOutcome::Cancelled {
                    request_id: "R".into(),
                },
                "Success",
            ),
            (
                service(404, "InvalidImageId.NotFound"),
                "InvalidImageId.NotFound",
            ),
            (service(400, "IncorrectImageStatus"), "IncorrectImageStatus"),
            (service(500, "InternalError"), "InternalError"),
            (service(503, "ServiceUnavailable"), "ServiceUnavailable"),
            (service(400, "Throttling.User"), "Throttling.User"),
            (
                service(400, "SignatureDoesNotMatch"),
                "SignatureDoesNotMatch",
            ),
            (
                service(400, "InvalidRegionId.Malformed"),
                "InvalidRegionId.Malformed",
            ),
            (service(400, "MissingSecurityToken"), "MissingSecurityToken"),
            // Unknown codes, and server strings a label must never carry.
            (service(400, "Brand.NewCode"), "other"),
            (service(502, "internalerror"), "other"),
            (service(400, "LTAI5t-secret-looking-code"), "other"),
            (service(400, ""), "other"),
            (transport(TransportKind::Connect), "TransportError.Connect"),
            (transport(TransportKind::Timeout), "TransportError.Timeout"),
            (
                transport(TransportKind::Interrupted),
                "TransportError.Interrupted",
            ),
            (
                transport(TransportKind::InvalidResponse),
                "TransportError.InvalidResponse",
            ),
        ];
        for (outcome, want) in rows {
            assert_eq!(code_label(&outcome), want, "{outcome:?}");
        }
        for code in KNOWN_CODES {
            assert_eq!(code_label(&service(400, code)), *code);
        }
        // Every kind has its own label.
        let kinds: std::collections::HashSet<_> = TransportKind::ALL
            .into_iter()
            .map(|k| code_label(&transport(k)))
            .collect();
        assert_eq!(kinds.len(), TransportKind::ALL.len());
    }

    #[test]
    fn ecs_requests_by_code_and_outcome_and_retries_by_reason() {
        let m = Metrics::default();
        m.request(&service(500, "InternalError"), 0.1);
        m.request(&service(500, "InternalError"), 0.1);
        m.request(&service(418, "Teapot.Secret"), 0.1);
        m.request(&transport(TransportKind::Timeout), 0.1);
        m.retry_scheduled(RetryClass::Retryable);
        m.retry_scheduled(RetryClass::Throttled);
        m.retry_scheduled(RetryClass::Throttled);
        let text = m.encode();
        assert_lines(
            &text,
            [
                "copyimage_canceller_ecs_requests_total{code=\"InternalError\",outcome=\"retryable\"} 2",
                "copyimage_canceller_ecs_requests_total{code=\"other\",outcome=\"terminal\"} 1",
                "copyimage_canceller_ecs_requests_total{code=\"TransportError.Timeout\",outcome=\"outage\"} 1",
                "copyimage_canceller_retries_scheduled_total{reason=\"RetryScheduled\"} 1",
                "copyimage_canceller_retries_scheduled_total{reason=\"Throttled\"} 2",
            ],
        );
        for leaked in ["Teapot", "secret message", "REQUEST-ID-1"] {
            assert!(!text.contains(leaked), "{leaked} in\n{text}");
        }
    }

    #[test]
    fn outage_metrics_by_region() {
        let m = Metrics::default();
        m.ecs_endpoint_available("cn-hangzhou", true);
        m.ecs_endpoint_available("eu-central-1", true);
        m.ecs_endpoint_available("eu-central-1", false);
        m.ecs_outage_seconds("eu-central-1", 1.5);
        m.ecs_outage_seconds("eu-central-1", 1.0);
        m.ecs_request_held("eu-central-1");
        m.ecs_request_held("eu-central-1");
        m.retry_scheduled(RetryClass::Outage);
        for i in 0..MAX_REGION_LABELS + 5 {
            m.ecs_request_held(&format!("xx-test-{i}"));
        }
        let text = m.encode();
        assert_lines(
            &text,
            [
                "copyimage_canceller_ecs_endpoint_available{region=\"cn-hangzhou\"} 1",
                "copyimage_canceller_ecs_endpoint_available{region=\"eu-central-1\"} 0",
                "copyimage_canceller_ecs_outage_seconds_total{region=\"eu-central-1\"} 2.5",
                "copyimage_canceller_ecs_requests_held_total{region=\"eu-central-1\"} 2",
                "copyimage_canceller_ecs_requests_held_total{region=\"other\"} 7",
                "copyimage_canceller_retries_scheduled_total{reason=\"EcsUnavailable\"} 1",
            ],
        );
    }

    #[test]
    fn pacing_metrics_by_region_with_a_bounded_label_set() {
        let m = Metrics::default();
        m.ecs_pace("cn-hangzhou", Some(35.5));
        m.ecs_pace("eu-central-1", Some(2.0));
        m.ecs_pace("eu-central-1", None);
        m.ecs_throttled("cn-hangzhou");
        m.ecs_throttled("cn-hangzhou");
        m.ecs_pace_wait("cn-hangzhou", 0.3);
        for i in 0..MAX_REGION_LABELS + 5 {
            m.ecs_throttled(&format!("xx-test-{i}"));
        }
        let text = m.encode();
        assert_lines(
            &text,
            [
                "copyimage_canceller_ecs_pace_requests_per_second{region=\"cn-hangzhou\"} 35.5",
                "copyimage_canceller_ecs_throttled_total{region=\"cn-hangzhou\"} 2",
                "copyimage_canceller_ecs_pace_wait_seconds_count{region=\"cn-hangzhou\"} 1",
                "copyimage_canceller_ecs_pace_wait_seconds_bucket{le=\"0.5\",region=\"cn-hangzhou\"} 1",
                // cn-hangzhou and eu-central-1 took two of the labels.
                "copyimage_canceller_ecs_throttled_total{region=\"other\"} 7",
            ],
        );
        // A region no key is paced in has no pace at all (not a pace of 0).
        assert!(
            !text.contains("ecs_pace_requests_per_second{region=\"eu-central-1\"}"),
            "{text}"
        );
    }

    #[test]
    fn phase_counts_cover_every_phase() {
        use Phase::*;
        let rows: [(&[Option<Phase>], [u64; 4]); 4] = [
            (&[], [0, 0, 0, 0]),
            (&[None], [1, 0, 0, 0]),
            (&[None, Some(Pending), Some(Running)], [2, 1, 0, 0]),
            (
                &[
                    Some(Succeeded),
                    Some(Failed),
                    Some(Succeeded),
                    Some(Running),
                ],
                [0, 1, 2, 1],
            ),
        ];
        for (phases, want) in rows {
            let got = phase_counts(phases.iter().copied()).map(|(_, n)| n);
            assert_eq!(got, want, "{phases:?}");
        }
    }

    #[test]
    fn resources_gauge_counts_the_stores_at_scrape_time_and_leader_gauge() {
        use kube::runtime::watcher::Event;
        let m = Metrics::default();
        let text = m.encode();
        assert_lines(
            &text,
            ["Pending", "Running", "Succeeded", "Failed"]
                .map(|phase| format!("copyimage_canceller_resources{{phase=\"{phase}\"}} 0")),
        );
        assert_lines(&text, ["copyimage_canceller_leader 0"]);
        m.set_leader(true);
        let (store, mut writer) = kube::runtime::reflector::store::<CopyImageCancellation>();
        m.watch_resources(store);
        let cic = |name: &str, phase: Option<Phase>| {
            let mut r = cancellation("images", name, "m-bp1");
            r.status = phase.map(|p| crate::resource::CopyImageCancellationStatus {
                phase: Some(p),
                ..Default::default()
            });
            r
        };
        writer.apply_watcher_event(&Event::Apply(cic("a", None)));
        writer.apply_watcher_event(&Event::Apply(cic("b", Some(Phase::Failed))));
        writer.apply_watcher_event(&Event::Apply(cic("c", Some(Phase::Succeeded))));
        writer.apply_watcher_event(&Event::Delete(cic("c", Some(Phase::Succeeded))));
        let text = m.encode();
        assert_lines(
            &text,
            [
                "copyimage_canceller_resources{phase=\"Pending\"} 1",
                "copyimage_canceller_resources{phase=\"Running\"} 0",
                "copyimage_canceller_resources{phase=\"Succeeded\"} 0",
                "copyimage_canceller_resources{phase=\"Failed\"} 1",
                "copyimage_canceller_leader 1",
            ],
        );
        assert!(!text.contains("\"a\"") && !text.contains("images"));
    }

    #[test]
    fn oldest_unfinished_age_skips_final_resources() {
        use Phase::*;
        let now: Timestamp = "2026-01-01T12:00:00Z".parse().unwrap();
        let ago = |s: i64| Some(now - jiff::SignedDuration::from_secs(s));
        type Resource = (Option<Phase>, Option<Timestamp>);
        let rows: [(&[Resource], f64); 6] = [
            (&[], 0.0),
            (
                &[(Some(Succeeded), ago(900)), (Some(Failed), ago(800))],
                0.0,
            ),
            (&[(None, ago(30))], 30.0),
            (
                &[
                    (Some(Succeeded), ago(900)),
                    (Some(Running), ago(120)),
                    (Some(Pending), ago(60)),
                ],
                120.0,
            ),
            // No creation time (never from an API server): not counted.
            (&[(Some(Running), None)], 0.0),
            // Clock skew: created "in the future" is no age.
            (&[(Some(Pending), ago(-5))], 0.0),
        ];
        for (resources, want) in rows {
            assert_eq!(
                oldest_unfinished_age(resources.iter().copied(), now),
                want,
                "{resources:?}"
            );
        }
    }

    #[test]
    fn resources_failed_by_reason_and_oldest_age_are_exposed() {
        let m = Metrics::default();
        m.resource_failed("RetriesExhausted");
        m.resource_failed("RetriesExhausted");
        m.resource_failed("other");
        let (store, mut writer) = kube::runtime::reflector::store::<CopyImageCancellation>();
        m.watch_resources(store);
        let mut old = cancellation("images", "old", "m-bp1");
        old.metadata.creation_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                Timestamp::now() - jiff::SignedDuration::from_secs(3600),
            ));
        writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(old));
        let text = m.encode();
        assert_lines(
            &text,
            [
                "copyimage_canceller_resources_failed_total{reason=\"RetriesExhausted\"} 2",
                "copyimage_canceller_resources_failed_total{reason=\"other\"} 1",
            ],
        );
        let age: f64 = text
            .lines()
            .find_map(|l| {
                l.strip_prefix("copyimage_canceller_oldest_unfinished_resource_age_seconds ")
            })
            .unwrap_or_else(|| panic!("no age gauge in\n{text}"))
            .parse()
            .unwrap();
        assert!(age >= 3600.0, "{age}");
    }

    fn status(state: CredentialState, refreshes: u64, failures: u64) -> CredentialStatus {
        CredentialStatus {
            source: Some(crate::identity::SourceKind::Rrsa),
            state,
            access_key_id: Some("STS.NotSecret".into()),
            expiration: None,
            next_refresh: None,
            consecutive_failures: 0,
            last_error: Some("STS answered HTTP 500 InternalError".into()),
            refreshes_total: refreshes,
            failures_total: failures,
        }
    }

    #[test]
    fn credential_counters_follow_the_totals_and_the_gauge_the_state() {
        let m = Metrics::default();
        for (state, refreshes, failures, expected) in [
            (
                CredentialState::Valid,
                1,
                0,
                ["refreshes_total 1", "refresh_failures_total 0"],
            ),
            (
                CredentialState::RefreshFailing,
                1,
                2,
                ["refreshes_total 1", "refresh_failures_total 2"],
            ),
            // Seen twice: counted once.
            (
                CredentialState::RefreshFailing,
                1,
                2,
                ["refreshes_total 1", "refresh_failures_total 2"],
            ),
            (
                CredentialState::Valid,
                2,
                2,
                ["refreshes_total 2", "refresh_failures_total 2"],
            ),
        ] {
            m.credentials(&status(state, refreshes, failures));
            let text = m.encode();
            assert_lines(
                &text,
                expected
                    .iter()
                    .map(|line| format!("copyimage_canceller_credential_{line}")),
            );
            assert_lines(
                &text,
                CREDENTIAL_STATES.iter().map(|other| {
                    format!(
                        "copyimage_canceller_credential_state{{state=\"{}\",source=\"rrsa\"}} {}",
                        other.as_str(),
                        i64::from(*other == state)
                    )
                }),
            );
            assert!(!text.contains("STS.NotSecret") && !text.contains("InternalError"));
        }
    }
}
