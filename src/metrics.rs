//! Prometheus metrics of the controller (served on `/metrics` by
//! [`crate::admin`]): reconciles, CancelCopyImage requests by outcome class,
//! status writes by result, and the operator credentials' refreshes and state.
//! Labels never carry resource names, keys or messages: cardinality stays
//! fixed and nothing secret can leak.

use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::ecs::RetryClass;
use crate::identity::{CredentialState, CredentialStatus};

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
    request_duration: Histogram,
    status_writes: Family<ResultLabel, Counter>,
    credential_refreshes: Counter,
    credential_refresh_failures: Counter,
    credential_state: Family<CredentialLabel, Gauge>,
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
        Self {
            registry,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            requests,
            request_duration,
            status_writes,
            credential_refreshes,
            credential_refresh_failures,
            credential_state,
        }
    }
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

    /// Counts a CancelCopyImage request of `class` that took `seconds`.
    pub fn request(&self, class: RetryClass, seconds: f64) {
        let class = match class {
            RetryClass::Success => "success",
            RetryClass::Terminal => "terminal",
            RetryClass::Retryable => "retryable",
            RetryClass::Throttled => "throttled",
        };
        self.requests.get_or_create(&ClassLabel { class }).inc();
        self.request_duration.observe(seconds);
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

    #[test]
    fn exposition_names_and_labels() {
        let m = Metrics::default();
        {
            let _timer = m.reconcile();
        }
        m.request(RetryClass::Success, 0.2);
        m.request(RetryClass::Throttled, 0.1);
        m.status_write("applied");
        m.status_write("conflict");
        let text = m.encode();
        for line in [
            "copyimage_canceller_reconciles_total 1",
            "copyimage_canceller_reconcile_errors_total 0",
            "copyimage_canceller_cancel_requests_total{class=\"success\"} 1",
            "copyimage_canceller_cancel_requests_total{class=\"throttled\"} 1",
            "copyimage_canceller_status_writes_total{result=\"applied\"} 1",
            "copyimage_canceller_status_writes_total{result=\"conflict\"} 1",
            "copyimage_canceller_reconcile_duration_seconds_count 1",
            "copyimage_canceller_cancel_request_duration_seconds_count 2",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert!(text.ends_with("# EOF\n"));
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
            for line in expected {
                let line = format!("copyimage_canceller_credential_{line}");
                assert!(
                    text.lines().any(|l| l == line),
                    "missing {line:?} in\n{text}"
                );
            }
            for other in CREDENTIAL_STATES {
                let line = format!(
                    "copyimage_canceller_credential_state{{state=\"{}\",source=\"rrsa\"}} {}",
                    other.as_str(),
                    i64::from(other == state)
                );
                assert!(
                    text.lines().any(|l| l == line),
                    "missing {line:?} in\n{text}"
                );
            }
            assert!(!text.contains("STS.NotSecret") && !text.contains("InternalError"));
        }
    }
}
