//! Prometheus metrics of the controller (served on `/metrics` by
//! [`crate::admin`]): reconciles, CancelCopyImage requests by outcome class,
//! and status writes by result. Labels never carry resource names, keys or
//! messages: cardinality stays fixed and nothing secret can leak.

use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::ecs::RetryClass;

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
        Self {
            registry,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            requests,
            request_duration,
            status_writes,
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
}
