//! The admin HTTP server: the kubelet's probes, `/livez` (restart me when
//! false) and `/readyz` (caches synced, not shutting down), and Prometheus
//! `/metrics`.
//!
//! NB: neither is unconditional. Liveness fails once a controller loop has
//! ended while the process was not asked to stop; readiness waits for every
//! watch cache's first list, is false while the Kubernetes API cannot be
//! reached ([`ApiReachability`]), and turns false as soon as shutdown begins.
//! An API outage does not fail liveness: a restart would not end it.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::routing::get;

use crate::metrics::Metrics;

/// Longest API failure reason `/readyz` shows (kube errors can run long).
const REASON_MAX: usize = 200;

/// Whether the Kubernetes API answers, from the outcomes of the controller's
/// requests to it: the newest outcome wins, where a success counts from the
/// moment its request was *sent*, so that an answer to a request sent before
/// a failure was seen does not hide that failure.
///
/// NB: watch errors report failures, but a watch that comes back on a quiet
/// cluster reports nothing (kube's watcher resumes from its resourceVersion
/// without an event), so successes come from a periodic probe request.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ApiReachability {
    failure: Option<(Instant, String)>,
    answered: Option<Instant>,
}

impl ApiReachability {
    /// A request failed, seen `at`, for `reason` (bounded here).
    pub fn failed(&mut self, at: Instant, reason: &str) {
        self.failure = Some((at, bounded(reason, REASON_MAX)));
    }

    /// A request sent `sent` was answered.
    pub fn answered(&mut self, sent: Instant) {
        if self.answered.is_none_or(|last| last < sent) {
            self.answered = Some(sent);
        }
    }

    /// Why the API counts as unreachable now, if it does.
    pub fn unreachable(&self) -> Option<&str> {
        let (at, reason) = self.failure.as_ref()?;
        match self.answered {
            Some(sent) if sent >= *at => None,
            _ => Some(reason),
        }
    }
}

/// `text` cut to at most `max` bytes on a character boundary, marked with `...`.
fn bounded(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max.saturating_sub(3);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

/// What the probes report, updated by the controller wiring.
#[derive(Debug, Default)]
pub struct Health {
    caches_expected: AtomicUsize,
    caches_synced: AtomicUsize,
    stopping: AtomicBool,
    broken: Mutex<Option<String>>,
    api: Mutex<ApiReachability>,
}

impl Health {
    /// A fresh state: not ready until caches are registered and synced.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Registers `n` more watch caches that must finish their first list.
    pub fn expect_caches(&self, n: usize) {
        self.caches_expected.fetch_add(n, Ordering::SeqCst);
    }

    /// One registered cache finished its first list.
    pub fn cache_synced(&self) {
        self.caches_synced.fetch_add(1, Ordering::SeqCst);
    }

    /// Shutdown has begun: no new work is taken.
    pub fn stopping(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// Something that should run for the life of the process has ended.
    pub fn broken(&self, why: impl Into<String>) {
        let mut broken = self.broken.lock().unwrap_or_else(|e| e.into_inner());
        broken.get_or_insert_with(|| why.into());
    }

    /// A request to the Kubernetes API failed just now (a watch or the probe).
    pub fn api_failed(&self, reason: &str) {
        self.api().failed(Instant::now(), reason);
    }

    /// A request to the Kubernetes API sent at `sent` was answered.
    pub fn api_answered(&self, sent: Instant) {
        self.api().answered(sent);
    }

    fn api(&self) -> std::sync::MutexGuard<'_, ApiReachability> {
        self.api.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `Ok` while the process is worth keeping; otherwise why not.
    pub fn liveness(&self) -> Result<(), String> {
        match &*self.broken.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(why) => Err(why.clone()),
            None => Ok(()),
        }
    }

    /// `Ok` once every cache is synced, while the API answers and while not
    /// stopping; otherwise why not.
    pub fn readiness(&self) -> Result<(), String> {
        self.liveness()?;
        if self.stopping.load(Ordering::SeqCst) {
            return Err("shutting down".into());
        }
        if let Some(why) = self.api().unreachable() {
            return Err(format!("Kubernetes API unreachable: {why}"));
        }
        let expected = self.caches_expected.load(Ordering::SeqCst);
        let synced = self.caches_synced.load(Ordering::SeqCst);
        if expected == 0 || synced < expected {
            return Err(format!("watch caches synced: {synced} of {expected}"));
        }
        Ok(())
    }
}

fn answer(result: Result<(), String>) -> (StatusCode, String) {
    match result {
        Ok(()) => (StatusCode::OK, "ok\n".to_string()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    }
}

/// Content type of the OpenMetrics text exposition.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The admin routes.
pub fn router(health: Arc<Health>, metrics: Arc<Metrics>) -> Router {
    let probes = Router::new()
        .route(
            "/livez",
            get(|State(h): State<Arc<Health>>| async move { answer(h.liveness()) }),
        )
        .route(
            "/readyz",
            get(|State(h): State<Arc<Health>>| async move { answer(h.readiness()) }),
        )
        .with_state(health);
    let exposition = Router::new()
        .route(
            "/metrics",
            get(|State(m): State<Arc<Metrics>>| async move {
                (
                    [(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)],
                    m.encode(),
                )
            }),
        )
        .with_state(metrics);
    probes.merge(exposition)
}

/// Binds `addr`; the error names the flag.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|err| anyhow::anyhow!("--admin-addr {addr}: cannot listen: {err}"))
}

/// Serves the admin routes on `listener` until `stop` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    stop: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(health, metrics))
        .with_graceful_shutdown(stop)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_follows_caches_and_shutdown() {
        let h = Health::new();
        assert!(h.readiness().is_err(), "nothing registered yet");
        h.expect_caches(2);
        assert_eq!(h.readiness(), Err("watch caches synced: 0 of 2".into()));
        h.cache_synced();
        h.cache_synced();
        assert_eq!(h.readiness(), Ok(()));
        assert_eq!(h.liveness(), Ok(()));
        h.stopping();
        assert_eq!(h.readiness(), Err("shutting down".into()));
        assert_eq!(h.liveness(), Ok(()), "draining is not dying");
    }

    #[test]
    fn the_newest_api_outcome_wins_counting_successes_from_when_they_were_sent() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + std::time::Duration::from_millis(ms);
        // (events in order: Err(reason) seen at, or Ok(sent at)), expected reason
        type Step = Result<u64, (u64, &'static str)>;
        let cases: [(&[Step], Option<&str>); 7] = [
            (&[], None),
            (&[Ok(0)], None),
            (
                &[Err((10, "connection refused"))],
                Some("connection refused"),
            ),
            (&[Err((10, "refused")), Ok(20)], None),
            // Sent before the failure was seen: proves nothing about now.
            (&[Err((10, "refused")), Ok(5)], Some("refused")),
            (&[Ok(20), Err((30, "timed out"))], Some("timed out")),
            // Answers arrive out of order; the probe sent at 22 was in
            // flight when the watch failed at 25, so it does not clear that.
            (&[Ok(20), Ok(5), Err((25, "watch")), Ok(22)], Some("watch")),
        ];
        for (steps, want) in cases {
            let mut api = ApiReachability::default();
            for step in steps {
                match *step {
                    Ok(sent) => api.answered(at(sent)),
                    Err((seen, reason)) => api.failed(at(seen), reason),
                }
            }
            assert_eq!(api.unreachable(), want, "{steps:?}");
        }
    }

    #[test]
    fn api_failure_reasons_are_bounded_on_a_character_boundary() {
        let long = "é".repeat(300);
        let mut api = ApiReachability::default();
        api.failed(Instant::now(), &long);
        let reason = api.unreachable().unwrap();
        assert!(reason.len() <= REASON_MAX, "{}", reason.len());
        assert!(reason.ends_with("..."));
        assert_eq!(bounded("short", REASON_MAX), "short");
    }

    #[test]
    fn an_unreachable_api_fails_readiness_with_the_reason_but_not_liveness() {
        let h = Health::new();
        h.expect_caches(1);
        h.cache_synced();
        let before = Instant::now();
        h.api_failed("error trying to connect: connection refused");
        assert_eq!(
            h.readiness(),
            Err("Kubernetes API unreachable: error trying to connect: connection refused".into())
        );
        assert_eq!(h.liveness(), Ok(()), "a restart does not fix an API outage");
        h.api_answered(before);
        assert!(h.readiness().is_err(), "sent before the failure");
        h.api_answered(Instant::now());
        assert_eq!(h.readiness(), Ok(()));
        h.api_failed("refused");
        h.stopping();
        assert_eq!(h.readiness(), Err("shutting down".into()));
    }

    #[test]
    fn a_broken_loop_fails_both_probes_with_the_first_reason() {
        let h = Health::new();
        h.expect_caches(1);
        h.cache_synced();
        h.broken("controller for all namespaces ended");
        h.broken("second reason");
        assert_eq!(
            h.liveness(),
            Err("controller for all namespaces ended".into())
        );
        assert_eq!(
            h.readiness(),
            Err("controller for all namespaces ended".into())
        );
    }
}
