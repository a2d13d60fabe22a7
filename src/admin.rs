//! The admin HTTP server: the kubelet's probes, `/livez` (restart me when
//! false) and `/readyz` (caches synced, not shutting down), and Prometheus
//! `/metrics`.
//!
//! NB: neither is unconditional. Liveness fails once a controller loop has
//! ended while the process was not asked to stop; readiness waits for every
//! watch cache's first list and turns false as soon as shutdown begins.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::routing::get;

use crate::metrics::Metrics;

/// What the probes report, updated by the controller wiring.
#[derive(Debug, Default)]
pub struct Health {
    caches_expected: AtomicUsize,
    caches_synced: AtomicUsize,
    stopping: AtomicBool,
    broken: Mutex<Option<String>>,
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

    /// `Ok` while the process is worth keeping; otherwise why not.
    pub fn liveness(&self) -> Result<(), String> {
        match &*self.broken.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(why) => Err(why.clone()),
            None => Ok(()),
        }
    }

    /// `Ok` once every cache is synced and while not stopping; otherwise why not.
    pub fn readiness(&self) -> Result<(), String> {
        self.liveness()?;
        if self.stopping.load(Ordering::SeqCst) {
            return Err("shutting down".into());
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
