//! An in-process Kubernetes API server on loopback, for tests and `copyimage-canceller demo`.
//!
//! It hosts the given CRDs plus core/v1 Namespace, Secret, ConfigMap and Event,
//! events.k8s.io/v1 Event (core/v1 Event is a converted view of the same objects) and
//! coordination.k8s.io/v1 Lease, and speaks the real API's HTTP protocol well enough for kube-rs
//! (`Api<T>`, `watcher`, `Controller`, `Recorder`) and kubectl (`get`/`-w`/`apply`/`wait`/
//! `describe`/`explain`): discovery, `/openapi/v3`, Table output with printer columns,
//! get/list/watch (label and field selectors, `limit`/`continue`, bookmarks, initial-events
//! bookmark, 410 Gone after the history window), create (`generateName`), update, delete
//! (finalizers honoured), merge / JSON / apply patches with managedFields, the status
//! subresource, `fieldValidation`, and admission against the CRD's structural schema and CEL
//! rules. The handle injects faults and counts requests.
//!
//! NB: not emulated: authentication and authorization (every request is allowed), admission
//! webhooks and ValidatingAdmissionPolicy, conversion between CRD versions (each served version
//! is a separate store), graceful deletion periods, garbage collection (ownerReferences),
//! namespace lifecycle (objects may live in any namespace whether or not a Namespace object
//! exists; deleting a Namespace deletes nothing else), `dryRun` (refused with 400), protobuf and
//! CBOR bodies (refused with 415, so `kubectl create secret|namespace` generators fail while
//! `kubectl apply -f` works), `resourceVersionMatch` on lists (a `continue` page reads current
//! state, not a snapshot), exact validation ratcheting (approximated: errors about values an
//! update left unchanged are dropped, list items correlate by index), per-kind validation of built-ins (Secrets,
//! Events and Leases are stored as sent), and strategic-merge list semantics (strategic merge
//! patches are applied as merge patches).

mod convert;
mod error;
mod faults;
mod fields;
mod http;
mod openapi;
mod requests;
mod resource_types;
mod selector;
mod state;
mod store;
mod table;
mod validation;
mod watch;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use tokio_util::sync::CancellationToken;

use state::{Shared, lock};
use store::Store;

pub use faults::Fault;
pub use requests::{FaultKind, RequestRecord, Verb};
pub use state::KubeApiConfig;

/// Starts sandbox API servers.
pub struct KubeApi;

impl KubeApi {
    /// Starts an API hosting `crds` on `127.0.0.1:0` with the default configuration.
    pub async fn start(crds: Vec<CustomResourceDefinition>) -> anyhow::Result<KubeApiHandle> {
        Self::start_with(crds, KubeApiConfig::default()).await
    }

    /// Starts an API hosting `crds` on `127.0.0.1:0`.
    pub async fn start_with(
        crds: Vec<CustomResourceDefinition>,
        config: KubeApiConfig,
    ) -> anyhow::Result<KubeApiHandle> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the sandbox Kubernetes API")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::new(&crds, config.history_window)),
            faults: Mutex::new(Vec::new()),
            log: Mutex::new(Vec::new()),
            latency: Mutex::new(None),
            watch_lag: Mutex::new(None),
            watches: Mutex::new(CancellationToken::new()),
            shutdown: CancellationToken::new(),
            config,
            addr,
        });
        let router = http::router(shared.clone());
        let stop = shared.shutdown.clone();
        let server = tokio::spawn(async move {
            let result = axum::serve(listener, router)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
            if let Err(error) = result {
                tracing::warn!(%error, "sandbox Kubernetes API server stopped with an error");
            }
        });
        Ok(KubeApiHandle {
            shared,
            server: Some(server),
        })
    }
}

/// Control of a running sandbox API. Dropping it stops the server.
pub struct KubeApiHandle {
    shared: Arc<Shared>,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl KubeApiHandle {
    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// A kube client for this API, with the configured default namespace.
    pub fn client(&self) -> anyhow::Result<kube::Client> {
        let mut config = kube::Config::new(self.url().parse()?);
        config.default_namespace = self.shared.config.namespace.clone();
        Ok(kube::Client::try_from(config)?)
    }

    /// A kubeconfig pointing at this API (cluster, user and context `sandbox`).
    pub fn kubeconfig_yaml(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: sandbox\n  cluster:\n    server: {url}\nusers:\n- name: sandbox\n  user: {{}}\ncontexts:\n- name: sandbox\n  context:\n    cluster: sandbox\n    user: sandbox\n    namespace: {ns}\ncurrent-context: sandbox\npreferences: {{}}\n",
            url = self.url(),
            ns = self.shared.config.namespace
        )
    }

    /// Writes [`Self::kubeconfig_yaml`] to `path`, for `KUBECONFIG`.
    pub fn write_kubeconfig(&self, path: &Path) -> anyhow::Result<()> {
        std::fs::write(path, self.kubeconfig_yaml())
            .with_context(|| format!("writing kubeconfig {}", path.display()))
    }

    /// Adds a scripted failure; faults are consumed in the order added.
    pub fn inject_fault(&self, fault: Fault) {
        lock(&self.shared.faults).push(fault);
    }

    /// Removes every pending fault.
    pub fn clear_faults(&self) {
        lock(&self.shared.faults).clear();
    }

    /// Ends every open watch now (clients see the stream close and re-watch).
    pub fn drop_watches(&self) {
        let mut token = lock(&self.shared.watches);
        token.cancel();
        *token = CancellationToken::new();
    }

    /// Compacts the history: the next watch from any resourceVersion handed out so far gets
    /// 410 Gone. Open watches are not touched; combine with [`Self::drop_watches`].
    pub fn expire_history(&self) {
        self.shared.store().expire_history();
    }

    /// Delays every request by `latency` (or stops delaying with `None`).
    pub fn set_latency(&self, latency: Option<Duration>) {
        *lock(&self.shared.latency) = latency;
    }

    /// Delivers each watch event `lag` after its write was committed (or at once with
    /// `None`), on open watches too: a watch cache that lags behind the writes its own
    /// client made, as under API-server load. Events keep their order.
    pub fn set_watch_lag(&self, lag: Option<Duration>) {
        *lock(&self.shared.watch_lag) = lag;
    }

    /// Every request answered so far, oldest first.
    pub fn requests(&self) -> Vec<RequestRecord> {
        lock(&self.shared.log).clone()
    }

    /// How many requests had this verb, resource plural and subresource (`""` for the main resource).
    pub fn count(&self, verb: Verb, resource: &str, subresource: &str) -> usize {
        lock(&self.shared.log)
            .iter()
            .filter(|r| r.verb == verb && r.resource == resource && r.subresource == subresource)
            .count()
    }

    /// Request counts keyed by (verb, resource, subresource).
    pub fn counters(&self) -> HashMap<(Verb, String, String), usize> {
        let mut counts = HashMap::new();
        for r in lock(&self.shared.log).iter() {
            *counts
                .entry((r.verb, r.resource.clone(), r.subresource.clone()))
                .or_default() += 1;
        }
        counts
    }

    /// Forgets the request log.
    pub fn clear_requests(&self) {
        lock(&self.shared.log).clear();
    }

    /// The latest resourceVersion handed out.
    pub fn resource_version(&self) -> u64 {
        self.shared.store().rv
    }

    /// Stops the server and waits for it to finish.
    pub async fn shutdown(mut self) {
        self.shared.shutdown.cancel();
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }
}

impl Drop for KubeApiHandle {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
    }
}
