//! What the axum-based stand-ins (STS, instance metadata) share: binding,
//! serving until stopped, and state their handle and handlers both hold.

use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};

use axum::Router;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A stand-in's app being served; dropping it stops serving.
#[derive(Debug)]
pub(crate) struct Served {
    addr: SocketAddr,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Served {
    /// Binds `listen` and serves `app` until stopped; `name` (`sts-simulator`)
    /// names the stand-in in the error and the log.
    pub(crate) async fn start(name: &str, listen: SocketAddr, app: Router) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| anyhow::anyhow!("{name} cannot listen on {listen}: {e}"))?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let shutdown = stop.clone();
        let name = name.to_owned();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move { shutdown.cancelled().await })
                .await;
            if let Err(e) = served {
                tracing::warn!(error = %e, "{name} stopped");
            }
        });
        Ok(Self {
            addr,
            stop,
            task: Some(task),
        })
    }

    /// The address it listens on.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`.
    pub(crate) fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops serving and waits for the listener to close.
    pub(crate) async fn shutdown(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// State a stand-in's handle and its request handlers share.
#[derive(Debug)]
pub(crate) struct SharedState<T>(Mutex<T>);

impl<T> SharedState<T> {
    /// Shares `state`.
    pub(crate) fn new(state: T) -> Self {
        Self(Mutex::new(state))
    }

    /// The state, locked.
    pub(crate) fn state(&self) -> MutexGuard<'_, T> {
        // NB: every mutation is a single step, so a poisoned lock is still consistent.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}
