//! The running API's state, shared by the HTTP handlers, the watches and
//! the handle: the store, pending faults, the request log, injected latency,
//! and the tunables it was started with.

use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::faults::{self, Fault};
use super::requests::{FaultKind, RequestRecord};
use super::store::Store;

/// Tunables of the sandbox API.
#[derive(Clone, Debug)]
pub struct KubeApiConfig {
    /// How often watches that asked for bookmarks get one.
    pub bookmark_interval: Duration,
    /// How many changes are kept for watches to resume from; older resourceVersions get 410 Gone.
    pub history_window: usize,
    /// Namespace written into the kubeconfig context and used by [`super::KubeApiHandle::client`].
    pub namespace: String,
}

impl Default for KubeApiConfig {
    fn default() -> Self {
        Self {
            bookmark_interval: Duration::from_secs(5),
            history_window: 1000,
            namespace: "default".into(),
        }
    }
}

/// State shared by the HTTP handlers and the handle.
pub(crate) struct Shared {
    pub(super) store: Mutex<Store>,
    pub(super) faults: Mutex<Vec<Fault>>,
    pub(super) log: Mutex<Vec<RequestRecord>>,
    pub(super) latency: Mutex<Option<Duration>>,
    /// How long after its commit each watch event is delivered.
    pub(super) watch_lag: Mutex<Option<Duration>>,
    /// Cancelled (and replaced) to drop every open watch.
    pub(super) watches: Mutex<CancellationToken>,
    pub(super) shutdown: CancellationToken,
    pub(super) config: KubeApiConfig,
    pub(super) addr: SocketAddr,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves data that is still usable for a test double.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    pub(super) fn store(&self) -> MutexGuard<'_, Store> {
        lock(&self.store)
    }

    /// Takes one matching fault, if any.
    pub(super) fn take_fault(&self, request: &RequestRecord) -> Option<FaultKind> {
        faults::take_fault(&mut lock(&self.faults), request)
    }

    pub(super) fn log(&self, record: RequestRecord) {
        lock(&self.log).push(record);
    }

    pub(super) fn watch_token(&self) -> CancellationToken {
        lock(&self.watches).clone()
    }
}
