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
mod fields;
mod http;
mod openapi;
mod resource_types;
mod selector;
mod store;
mod table;
mod validation;
mod watch;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use rand::rngs::SmallRng;
use rand::{Rng as _, SeedableRng as _};
use tokio_util::sync::CancellationToken;

use store::Store;

/// Tunables of the sandbox API.
#[derive(Clone, Debug)]
pub struct KubeApiConfig {
    /// How often watches that asked for bookmarks get one.
    pub bookmark_interval: Duration,
    /// How many changes are kept for watches to resume from; older resourceVersions get 410 Gone.
    pub history_window: usize,
    /// Namespace written into the kubeconfig context and used by [`KubeApiHandle::client`].
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

/// Request verbs, named as in API server audit logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verb {
    /// GET of one object.
    Get,
    /// GET of a collection.
    List,
    /// GET of a collection with `watch=true`.
    Watch,
    /// POST.
    Create,
    /// PUT.
    Update,
    /// PATCH (any patch type, including server-side apply).
    Patch,
    /// DELETE of one object.
    Delete,
    /// DELETE of a collection.
    DeleteCollection,
}

impl Verb {
    /// Whether the verb writes.
    pub fn is_write(self) -> bool {
        matches!(
            self,
            Verb::Create | Verb::Update | Verb::Patch | Verb::Delete | Verb::DeleteCollection
        )
    }
}

/// One request the API answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestRecord {
    /// What was asked.
    pub verb: Verb,
    /// API group (`""` for core).
    pub group: String,
    /// Resource plural, e.g. `copyimagecancellations`.
    pub resource: String,
    /// `"status"` for the status subresource, else `""`.
    pub subresource: String,
    /// Namespace from the URL, if any.
    pub namespace: Option<String>,
    /// Object name from the URL, if any.
    pub name: Option<String>,
    /// The PATCH content type, if a patch.
    pub patch_type: Option<String>,
    /// The `fieldManager` query parameter, if given.
    pub field_manager: Option<String>,
    /// HTTP status code of the answer.
    pub code: u16,
    /// The `User-Agent` header, if sent (tells a test's own requests from the controller's).
    pub user_agent: Option<String>,
    /// When the request arrived.
    pub received: std::time::Instant,
    /// When the answer was ready (for a watch: when the stream started).
    pub time: jiff::Timestamp,
    /// `metadata.resourceVersion` of the object a successful create, update, patch or
    /// delete wrote, so a test can tell which request produced what it reads later.
    pub resource_version: Option<String>,
    /// The injected fault that answered instead of the API, if one did.
    pub injected: Option<FaultKind>,
}

/// How an injected fault answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// 409 Conflict, "the object has been modified".
    Conflict,
    /// 500 InternalError.
    InternalError,
    /// 429 TooManyRequests with a `Retry-After` header and `details.retryAfterSeconds`, as the
    /// API server answers when API Priority and Fairness rejects a request.
    TooManyRequests {
        /// Seconds the client is asked to wait.
        retry_after_seconds: u32,
    },
}

/// Which of the matching requests a fault hits.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Gate {
    /// Every one.
    Each,
    /// The `n`-th, `2n`-th, ... (`seen` matching requests so far).
    Every { n: u32, seen: u64 },
    /// Each with probability `per_million / 1e6`, drawn from a seeded generator.
    Rate { per_million: u32, rng: SmallRng },
}

impl Gate {
    /// Whether this matching request is hit; advances the gate's state.
    fn fires(&mut self) -> bool {
        match self {
            Gate::Each => true,
            Gate::Every { n, seen } => {
                *seen += 1;
                *seen % u64::from(*n) == 0
            }
            Gate::Rate { per_million, rng } => rng.random_range(0..1_000_000) < *per_million,
        }
    }
}

/// A scripted failure for the next matching requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    kind: FaultKind,
    remaining: u32,
    verb: Option<Verb>,
    resource: Option<String>,
    subresource: Option<String>,
    spared_user_agent: Option<String>,
    gate: Gate,
}

impl Fault {
    fn new(kind: FaultKind, times: u32) -> Self {
        Self {
            kind,
            remaining: times,
            verb: None,
            resource: None,
            subresource: None,
            spared_user_agent: None,
            gate: Gate::Each,
        }
    }

    /// The next `times` writes (create, update, patch, delete) answer 409 Conflict.
    pub fn conflict(times: u32) -> Self {
        Self::new(FaultKind::Conflict, times)
    }

    /// The next `times` writes answer 500 InternalError.
    pub fn internal_error(times: u32) -> Self {
        Self::new(FaultKind::InternalError, times)
    }

    /// The next `times` writes answer 429 TooManyRequests asking the client to wait
    /// `retry_after_seconds`.
    pub fn too_many_requests(times: u32, retry_after_seconds: u32) -> Self {
        Self::new(
            FaultKind::TooManyRequests {
                retry_after_seconds,
            },
            times,
        )
    }

    /// Only requests with this verb (may be a read verb, e.g. [`Verb::List`]).
    pub fn verb(mut self, verb: Verb) -> Self {
        self.verb = Some(verb);
        self
    }

    /// Only requests for this resource plural (e.g. `copyimagecancellations`).
    pub fn resource(mut self, plural: &str) -> Self {
        self.resource = Some(plural.to_string());
        self
    }

    /// Only requests for this subresource (`"status"`, or `""` for the main resource).
    pub fn subresource(mut self, subresource: &str) -> Self {
        self.subresource = Some(subresource.to_string());
        self
    }

    /// Hits only every `n`-th matching request (the `n`-th, `2n`-th, ...); the others pass
    /// through untouched. `times` then counts the hits, not the matching requests.
    ///
    /// NB: `n` of 0 is taken as 1.
    pub fn every(mut self, n: u32) -> Self {
        self.gate = Gate::Every {
            n: n.max(1),
            seen: 0,
        };
        self
    }

    /// Hits each matching request with probability `rate` (clamped to `0..=1`, resolution
    /// one in a million), drawn from a generator seeded with `seed`: the same seed and the
    /// same request order give the same hits. `times` counts the hits.
    pub fn rate(mut self, rate: f64, seed: u64) -> Self {
        // The clamp bounds the product to 0..=1e6, so the cast cannot truncate.
        let per_million = (rate.clamp(0.0, 1.0) * 1_000_000.0).round() as u32;
        self.gate = Gate::Rate {
            per_million,
            rng: SmallRng::seed_from_u64(seed),
        };
        self
    }

    /// Requests sent with exactly this `User-Agent` pass untouched (e.g. a test's own
    /// client, so that the test's polling does not use up faults meant for the controller).
    pub fn sparing_user_agent(mut self, user_agent: &str) -> Self {
        self.spared_user_agent = Some(user_agent.to_string());
        self
    }

    fn matches(&self, request: &RequestRecord) -> bool {
        self.remaining > 0
            && self
                .verb
                .map_or(request.verb.is_write(), |v| v == request.verb)
            && self
                .resource
                .as_deref()
                .is_none_or(|r| r == request.resource)
            && self
                .subresource
                .as_deref()
                .is_none_or(|s| s == request.subresource)
            && (self.spared_user_agent.is_none() || self.spared_user_agent != request.user_agent)
    }
}

/// Takes the fault a request meets, if any, spending it. Every matching fault's gate sees
/// the request, in order, until one fires: a gated fault that lets a request pass leaves it
/// to the faults after it.
fn take_fault(faults: &mut Vec<Fault>, request: &RequestRecord) -> Option<FaultKind> {
    let mut hit = None;
    for fault in faults.iter_mut() {
        if fault.matches(request) && fault.gate.fires() {
            hit = Some(fault);
            break;
        }
    }
    let fault = hit?;
    fault.remaining -= 1;
    let kind = fault.kind;
    faults.retain(|f| f.remaining > 0);
    Some(kind)
}

/// State shared by the HTTP handlers and the handle.
pub(crate) struct Shared {
    store: Mutex<Store>,
    faults: Mutex<Vec<Fault>>,
    log: Mutex<Vec<RequestRecord>>,
    latency: Mutex<Option<Duration>>,
    /// How long after its commit each watch event is delivered.
    watch_lag: Mutex<Option<Duration>>,
    /// Cancelled (and replaced) to drop every open watch.
    watches: Mutex<CancellationToken>,
    shutdown: CancellationToken,
    config: KubeApiConfig,
    addr: SocketAddr,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves data that is still usable for a test double.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    fn store(&self) -> MutexGuard<'_, Store> {
        lock(&self.store)
    }

    /// Takes one matching fault, if any.
    fn take_fault(&self, request: &RequestRecord) -> Option<FaultKind> {
        take_fault(&mut lock(&self.faults), request)
    }

    fn log(&self, record: RequestRecord) {
        lock(&self.log).push(record);
    }

    fn watch_token(&self) -> CancellationToken {
        lock(&self.watches).clone()
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    const CICS: &str = "copyimagecancellations";

    fn request(verb: Verb, subresource: &str, user_agent: Option<&str>) -> RequestRecord {
        RequestRecord {
            verb,
            group: "ecs.alibabacloud.com".into(),
            resource: CICS.into(),
            subresource: subresource.into(),
            namespace: Some("images".into()),
            name: Some("a".into()),
            patch_type: None,
            field_manager: None,
            code: 200,
            user_agent: user_agent.map(String::from),
            received: std::time::Instant::now(),
            time: jiff::Timestamp::now(),
            resource_version: None,
            injected: None,
        }
    }

    #[test]
    fn a_spared_user_agent_passes_and_does_not_use_the_fault_up() {
        let mut faults = vec![Fault::internal_error(1).sparing_user_agent("test-harness")];
        let harness = request(Verb::Patch, "status", Some("test-harness"));
        assert_eq!(take_fault(&mut faults, &harness), None);
        assert_eq!(
            take_fault(&mut faults, &request(Verb::Patch, "status", None)),
            Some(FaultKind::InternalError)
        );
        assert!(faults.is_empty());
    }

    /// Which of `n` status patches the faults answer, and with what.
    fn hits(faults: &mut Vec<Fault>, n: usize) -> Vec<Option<FaultKind>> {
        (0..n)
            .map(|_| take_fault(faults, &request(Verb::Patch, "status", None)))
            .collect()
    }

    #[test]
    fn every_nth_matching_request_is_hit_and_times_counts_the_hits() {
        let mut faults = vec![Fault::conflict(2).every(3).subresource("status")];
        let c = Some(FaultKind::Conflict);
        assert_eq!(
            hits(&mut faults, 8),
            [None, None, c, None, None, c, None, None]
        );
        assert!(faults.is_empty(), "spent after two hits");
    }

    #[test]
    fn requests_a_filter_rejects_do_not_advance_the_gate() {
        let mut faults = vec![Fault::internal_error(10).every(2).subresource("status")];
        assert_eq!(
            take_fault(&mut faults, &request(Verb::Patch, "", None)),
            None
        );
        assert_eq!(
            take_fault(&mut faults, &request(Verb::Get, "status", None)),
            None
        );
        assert_eq!(hits(&mut faults, 2), [None, Some(FaultKind::InternalError)]);
    }

    #[test]
    fn a_gated_fault_that_passes_leaves_the_request_to_the_next_fault() {
        let mut faults = vec![Fault::conflict(u32::MAX).every(2), Fault::internal_error(1)];
        assert_eq!(
            hits(&mut faults, 3),
            [
                Some(FaultKind::InternalError),
                Some(FaultKind::Conflict),
                None
            ]
        );
    }

    #[test]
    fn a_rate_is_reproducible_from_its_seed_and_close_to_the_rate() {
        let run = |seed| hits(&mut vec![Fault::conflict(u32::MAX).rate(0.2, seed)], 5000);
        let first = run(7);
        assert_eq!(first, run(7), "same seed, same hits");
        assert_ne!(first, run(8), "another seed, other hits");
        let hit = first.iter().filter(|h| h.is_some()).count();
        // 5000 draws at 20%: the standard deviation is about 28.
        assert!((800..=1200).contains(&hit), "{hit} hits of 5000 at 20%");
        assert!(
            hits(&mut vec![Fault::conflict(5).rate(0.0, 1)], 100)
                .iter()
                .all(Option::is_none)
        );
        assert_eq!(
            hits(&mut vec![Fault::conflict(5).rate(1.0, 1)], 6)
                .iter()
                .filter(|h| h.is_some())
                .count(),
            5
        );
    }
}
