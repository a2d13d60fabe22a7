//! The controller: a pure decision core ([`decide`]) and the kube-runtime
//! shell around it (this module), which watches, resolves credentials,
//! applies the status `decide` returns, sends, and records.
//!
//! ```text
//! watch cache ──▶ reconcile ──▶ decide(Observe) ──▶ apply status (resourceVersion precondition)
//!   (CICs, Secrets)                  │                   │ 409: someone moved; send nothing
//!                                    │ WriteAheadThenSend ▼
//!                                    └──────────────▶ EcsClient::cancel_copy_image
//!                                                          │
//!                   apply status (retried, never resent) ◀─┴─ decide(Attempted(outcome))
//! ```
//!
//! NB: the write-ahead carries the resourceVersion that `decide` looked at,
//! so a stale cache can never cause a second send: the API server refuses
//! the write and nothing is sent.

pub mod conditions;
pub mod decide;
pub mod leader;
pub mod roles;
pub mod run;
pub mod secrets;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use tokio::sync::Semaphore;
use tracing::{Instrument as _, debug, info, warn};

use crate::credentials::AccessKey;
use crate::ecs::RetryClass;
use crate::ecs::client::EcsClient;
use crate::ecs::{CancelOutcome, EndpointOutage, Incident};
use crate::identity::{CredentialError, OperatorCredentials};
use crate::metrics::Metrics;
use crate::pacing::breaker::Health;
use crate::pacing::{Grant, Pacer, Release, Slot, pace};
use crate::resource::{CopyImageCancellation, CopyImageCancellationStatus, Phase};
use crate::retry::Backoff;
use decide::{Decision, EndpointState, EventKind, Input, NextAction, Trigger};

/// Field manager of every status write (server-side apply).
pub const FIELD_MANAGER: &str = "copyimage-canceller";
/// The `reportingController` of published Events.
pub const REPORTING_CONTROLLER: &str = "copyimage-canceller";
/// The Event `action` of everything this controller does.
const EVENT_ACTION: &str = "CancelCopyImage";
/// The Event `action` of Events about the operator's own credentials.
const OPERATOR_EVENT_ACTION: &str = "RefreshCredentials";
/// How often a resource waiting for credentials looks again, in case a
/// Secret event was missed.
const CREDENTIALS_RECHECK: Duration = Duration::from_secs(300);
/// How soon a resource waiting for the operator's own temporary credentials
/// (first fetch pending, or refresh failing) looks again: no event announces them.
const OPERATOR_CREDENTIALS_RECHECK: Duration = Duration::from_secs(5);
/// How soon a resource waiting for its namespace role's first session looks
/// again: the session is usually a single STS call away.
const ROLE_SESSION_PENDING_RECHECK: Duration = Duration::from_secs(1);
/// Delay before looking again after a write lost an optimistic-concurrency race.
const CONFLICT_REQUEUE: Duration = Duration::from_secs(1);
/// Delay before `error_policy` retries a failed reconcile.
const ERROR_REQUEUE: Duration = Duration::from_secs(5);
/// Limit on one status write; beyond it the write counts as failed.
const STATUS_WRITE_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a reconcile waits for the Secret cache's first list.
const SECRETS_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts at recording an outcome before handing it to the next reconcile.
const RECORD_ATTEMPTS: u32 = 4;
/// Least wait after the API server answered 429 or 503 without saying how long.
const THROTTLED_PAUSE: Duration = Duration::from_secs(1);

/// Why a reconcile failed (the resource is requeued by [`error_policy`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A status write failed for another reason than a conflict or deletion.
    #[error("writing the status of {resource}: {source}")]
    StatusWrite {
        /// `namespace/name`.
        resource: String,
        /// What the API server (or the connection) said.
        #[source]
        source: kube::Error,
    },
    /// A status write did not answer in time.
    #[error("writing the status of {resource}: no answer within {timeout:?}")]
    StatusWriteTimeout {
        /// `namespace/name`.
        resource: String,
        /// The limit.
        timeout: Duration,
    },
    /// The Secret cache did not finish its first list.
    #[error(
        "the Secret cache is not ready after {0:?}; check the operator may list and watch Secrets"
    )]
    SecretsNotReady(Duration),
    /// The RamRoleSelector or Namespace cache did not finish its first list.
    #[error(
        "the RamRoleSelector or Namespace cache is not ready after {0:?}; check the operator may list and watch ramroleselectors and namespaces"
    )]
    SelectorsNotReady(Duration),
    /// The object from the watch cache lacks a namespace or UID.
    #[error("{0} has no namespace or UID")]
    Incomplete(String),
}

/// What the operator was started with, shared by every reconcile.
pub struct Settings {
    /// Sends CancelCopyImage.
    pub ecs: EcsClient,
    /// Backoff between retries.
    pub backoff: Backoff,
    /// The operator's own credentials (environment keys, RRSA or the instance
    /// role), for resources without `credentialsSecretRef`.
    pub operator: OperatorCredentials,
    /// Paces CancelCopyImage per access key and region (`--ecs-pacing`,
    /// `--ecs-qps`, `--ecs-burst`), shared by every reconcile.
    pub pacer: Arc<Pacer>,
}

impl Settings {
    /// Whether throttled attempts wait for the pace rather than back off alone.
    fn paced(&self) -> bool {
        self.pacer.adaptive()
    }
}

/// The key a resource is signed with, and whose quota it counts against.
struct Signer {
    key: AccessKey,
    /// The identity behind the key, the pace's scope ([`Pacer::slot`]).
    quota: String,
}

impl Signer {
    /// A long-lived key (a Secret's): its quota is its own.
    fn own(key: AccessKey) -> Self {
        let quota = crate::identity::key_quota_identity(&key);
        Self { key, quota }
    }
}

/// Why a reconcile has no key at hand.
#[derive(Debug)]
enum NoKey {
    /// Missing or failing: the reason, without secrets.
    Missing(String),
    /// Two RamRoleSelectors match the namespace: the reason names both.
    Ambiguous(String),
    /// Expected shortly: the operator's credentials are being fetched for the
    /// first time, or the resource's Secret is not in the cache yet but may
    /// only be behind in its watch ([`SECRET_CACHE_GRACE`]).
    Pending,
}

/// How long a resource's Secret may be absent from the cache before the
/// resource is said to await credentials (a Warning Event and
/// `AwaitingCredentials`). The Secret and the resource come through separate
/// watches, so a Secret created just before the resource (one `kubectl apply`,
/// one GitOps sync) can reach the cache a moment after it; the Secret watch
/// wakes the resource when it does.
const SECRET_CACHE_GRACE: Duration = Duration::from_secs(5);

/// When each resource (by UID) first found its Secret absent from the cache,
/// while that is less than [`SECRET_CACHE_GRACE`] ago. An entry goes when the
/// Secret is found or the resource is said to await credentials.
/// NB: a resource deleted within the grace leaves its entry; that is one
/// entry per such deletion.
#[derive(Default)]
struct SecretMisses(Mutex<HashMap<String, std::time::Instant>>);

impl SecretMisses {
    /// The wait left before resource `uid`, which found its Secret absent
    /// from the cache at `now`, is said to await credentials; `None`: now.
    fn wait_left(
        &self,
        uid: &str,
        now: std::time::Instant,
        already_awaiting: bool,
    ) -> Option<Duration> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let first_miss = *map.entry(uid.to_string()).or_insert(now);
        let left = grace_left(first_miss, now, already_awaiting);
        if left.is_none() {
            map.remove(uid);
        }
        left
    }

    /// Resource `uid` has its Secret at hand (or needs none).
    fn found(&self, uid: &str) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(uid);
    }
}

/// What is left of [`SECRET_CACHE_GRACE`] for a Secret first found absent at
/// `first_miss`; `None` when it is over, or when the resource already awaits
/// credentials (its status says so: nothing to be quiet about).
fn grace_left(
    first_miss: std::time::Instant,
    now: std::time::Instant,
    already_awaiting: bool,
) -> Option<Duration> {
    if already_awaiting {
        return None;
    }
    SECRET_CACHE_GRACE
        .checked_sub(now.saturating_duration_since(first_miss))
        .filter(|left| !left.is_zero())
}

/// An outcome that came back but could not be written to status yet: kept
/// so the next reconcile records it instead of sending again.
struct Unrecorded {
    /// The resource as returned by the write-ahead.
    written: CopyImageCancellation,
    outcome: CancelOutcome,
    /// What the region endpoint's breaker made of the answer.
    incident: Incident,
    /// The endpoint's outage, when its breaker was open after the answer.
    outage: Option<EndpointOutage>,
}

/// State handed to every reconcile of one watch scope (all namespaces or one).
pub struct Context {
    client: kube::Client,
    settings: Arc<Settings>,
    /// Secrets of the scope, kept by a reflector (no per-reconcile GET);
    /// `None` when the operator may not read Secrets.
    secrets: Option<Store<Secret>>,
    recorder: Recorder,
    /// The Events' `reportingInstance` (the pod name); default: the controller's name.
    reporting_instance: Option<String>,
    /// Bounds concurrent reconciles across scopes (`--max-concurrent-reconciles`).
    permits: Arc<Semaphore>,
    /// Outcomes not yet recorded, by resource UID.
    unrecorded: Arc<Mutex<HashMap<String, Unrecorded>>>,
    /// Our own status writes the watch cache has not caught up with yet.
    own_writes: OwnWrites,
    /// Secrets found absent from the cache within the grace.
    secret_misses: SecretMisses,
    metrics: Arc<Metrics>,
    /// RamRoleSelectors, Namespaces and role sessions; `None`: no tenant
    /// roles (every resource without a Secret uses the operator's identity).
    tenancy: Option<Arc<roles::Tenancy>>,
}

impl Context {
    /// A context for one watch scope.
    pub fn new(
        client: kube::Client,
        settings: Arc<Settings>,
        secrets: Option<Store<Secret>>,
        recorder: Recorder,
        permits: Arc<Semaphore>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            client,
            settings,
            secrets,
            recorder,
            reporting_instance: None,
            permits,
            unrecorded: Arc::default(),
            own_writes: OwnWrites::default(),
            secret_misses: SecretMisses::default(),
            metrics,
            tenancy: None,
        }
    }

    /// Resolves identities with tenant roles: a resource without its own
    /// Secret is signed by the one RamRoleSelector matching its namespace.
    pub fn with_tenancy(mut self, tenancy: Arc<roles::Tenancy>) -> Self {
        self.tenancy = Some(tenancy);
        self
    }

    /// The key for `obj`, in order: its Secret's when it names one, else the
    /// session of the one RamRoleSelector matching its namespace, else the
    /// operator's (unless `--require-namespace-role`). Without one, why (no
    /// secrets in it); with it, how soon to look again when the wait is not
    /// ended by a Secret event.
    fn credentials(
        &self,
        obj: &CopyImageCancellation,
        namespace: &str,
    ) -> (Result<Signer, NoKey>, Option<Duration>) {
        let resolved = match &self.tenancy {
            Some(tenancy) => tenancy.resolve(obj, namespace),
            None if obj.spec.credentials_secret_ref.is_some() => roles::Resolved::Secret,
            None => roles::Resolved::Operator,
        };
        match resolved {
            roles::Resolved::Secret => {
                let name = obj
                    .spec
                    .credentials_secret_ref
                    .as_ref()
                    .map(|r| r.name.as_str())
                    .unwrap_or_default();
                let (key, recheck) = self.secret_credentials(obj, name, namespace);
                (key.map(Signer::own), recheck)
            }
            roles::Resolved::Ambiguous(why) => (
                Err(NoKey::Ambiguous(why)),
                Some(OPERATOR_CREDENTIALS_RECHECK),
            ),
            roles::Resolved::Missing(why) => {
                (Err(NoKey::Missing(why)), Some(OPERATOR_CREDENTIALS_RECHECK))
            }
            roles::Resolved::Role { selector, session } => match session.try_current() {
                Ok(key) => {
                    let quota = session.quota_identity();
                    (Ok(Signer { key, quota }), None)
                }
                Err(CredentialError::Pending { .. }) => {
                    (Err(NoKey::Pending), Some(ROLE_SESSION_PENDING_RECHECK))
                }
                Err(err) => (
                    Err(NoKey::Missing(roles::role_failure_message(
                        &selector,
                        &session.request().role_arn,
                        &err.to_string(),
                    ))),
                    Some(OPERATOR_CREDENTIALS_RECHECK),
                ),
            },
            roles::Resolved::Operator => match self.settings.operator.try_current() {
                Ok(key) => {
                    let quota = self.settings.operator.quota_identity(&key);
                    (Ok(Signer { key, quota }), None)
                }
                Err(CredentialError::NotConfigured) => (
                    Err(NoKey::Missing(CredentialError::NotConfigured.to_string())),
                    None,
                ),
                Err(CredentialError::Pending { .. }) => {
                    (Err(NoKey::Pending), Some(OPERATOR_CREDENTIALS_RECHECK))
                }
                Err(err) => (
                    Err(NoKey::Missing(err.to_string())),
                    Some(OPERATOR_CREDENTIALS_RECHECK),
                ),
            },
        }
    }

    /// The key in Secret `secret_name` that `obj` names, or why there is none
    /// (and when to look again). A Secret absent from the cache is
    /// [`NoKey::Pending`] for the first [`SECRET_CACHE_GRACE`] of an
    /// unfinished resource, then missing.
    fn secret_credentials(
        &self,
        obj: &CopyImageCancellation,
        secret_name: &str,
        namespace: &str,
    ) -> (Result<AccessKey, NoKey>, Option<Duration>) {
        let Some(secrets) = &self.secrets else {
            let why = format!(
                "this operator runs with --per-resource-secrets=false and does not read Secret \
                 {namespace}/{secret_name}; remove credentialsSecretRef to use the operator's own credentials, \
                 or have the operator allowed to read Secrets"
            );
            return (Err(NoKey::Missing(why)), None);
        };
        let secret = secrets.get(&ObjectRef::<Secret>::new(secret_name).within(namespace));
        let uid = obj.uid().unwrap_or_default();
        let unfinished = !obj
            .status
            .as_ref()
            .is_some_and(|s| s.phase.is_some_and(crate::resource::Phase::is_finished));
        if secret.is_none() && unfinished {
            let awaiting = decide::awaiting_credentials(obj.status.as_ref());
            if let Some(left) =
                self.secret_misses
                    .wait_left(&uid, std::time::Instant::now(), awaiting)
            {
                return (Err(NoKey::Pending), Some(left));
            }
        } else {
            self.secret_misses.found(&uid);
        }
        let key = secrets::access_key_from_secret(secret.as_deref(), namespace, secret_name);
        (key.map_err(NoKey::Missing), None)
    }

    /// Sets the Events' `reportingInstance` (as given to the shared [`Recorder`]).
    pub fn with_reporting_instance(mut self, instance: Option<String>) -> Self {
        self.reporting_instance = instance;
        self
    }

    /// Publishes `note` about `obj`.
    ///
    /// NB: the final Event of a resource (Cancelled, CancelFailed) happens
    /// once, so it is created directly. kube's Recorder would keep it in its
    /// aggregation cache for six minutes for nothing (its key holds the
    /// resourceVersion, which each of our writes changes): with 10,000
    /// resources finishing at once that cache was most of the memory beyond
    /// the resource cache. Events that may repeat go through the Recorder.
    async fn publish(&self, obj: &CopyImageCancellation, note: &decide::EventNote) {
        let event = to_event(note, EVENT_ACTION);
        // NB: the client waits out 429s (Retry-After) itself; the limit keeps a
        // long wait from holding the reconcile. An Event is a courtesy; status
        // holds the record.
        let regarding = obj.object_ref(&());
        let publish = async {
            match note.reason {
                decide::event_reasons::CANCELLED | decide::event_reasons::CANCEL_FAILED => {
                    self.create_event(&event, regarding).await
                }
                _ => self.recorder.publish(&event, &regarding).await,
            }
        };
        match tokio::time::timeout(STATUS_WRITE_TIMEOUT, publish).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                warn!(resource = %describe(obj), reason = note.reason, error = %err, "could not publish Event")
            }
            Err(_) => {
                warn!(resource = %describe(obj), reason = note.reason, timeout = ?STATUS_WRITE_TIMEOUT, "could not publish Event in time")
            }
        }
    }
}

impl Context {
    /// Creates `event` about `regarding` as kube's Recorder does for an
    /// Event it has not seen before (same name scheme and fields), without
    /// keeping it.
    async fn create_event(
        &self,
        event: &Event,
        regarding: k8s_openapi::api::core::v1::ObjectReference,
    ) -> Result<(), kube::Error> {
        use k8s_openapi::api::events::v1::Event as K8sEvent;
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
        let now = Timestamp::now();
        let namespace = regarding
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_string());
        let name = format!(
            "{}.{:x}",
            regarding.name.as_deref().unwrap_or(REPORTING_CONTROLLER),
            now.as_nanosecond()
        );
        let k8s_event = K8sEvent {
            action: Some(event.action.clone()),
            reason: Some(event.reason.clone()),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding),
            note: event.note.clone(),
            metadata: ObjectMeta {
                namespace: Some(namespace.clone()),
                name: Some(name),
                ..ObjectMeta::default()
            },
            reporting_controller: Some(REPORTING_CONTROLLER.to_string()),
            reporting_instance: Some(
                self.reporting_instance
                    .clone()
                    .unwrap_or_else(|| REPORTING_CONTROLLER.to_string()),
            ),
            type_: Some(
                match event.type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .to_string(),
            ),
            ..K8sEvent::default()
        };
        Api::<K8sEvent>::namespaced(self.client.clone(), &namespace)
            .create(&kube::api::PostParams::default(), &k8s_event)
            .await
            .map(drop)
    }
}

/// The resourceVersions our own status writes replaced, by resource UID,
/// and the object the last write returned, until the watch cache shows a
/// newer version.
///
/// A write's watch event can reach the cache after the next reconcile of the
/// same resource has started (every write wakes its resource), and while the
/// watch is down (the API server failing LISTs) it does not reach it at all.
/// Deciding on the replaced version would only earn a 409 from the
/// resourceVersion precondition (nothing is sent), so such a reconcile
/// decides on what our last write returned instead: no wasted write per
/// resource under load, and retries go on while the watch cannot resume.
#[derive(Default)]
struct OwnWrites(Mutex<HashMap<String, OwnWrite>>);

struct OwnWrite {
    replaced: Vec<String>,
    latest: CopyImageCancellation,
}

impl OwnWrites {
    /// Our write replaced `replaced` on the resource `uid` and returned `latest`.
    fn replaced(&self, uid: &str, replaced: Option<String>, latest: &CopyImageCancellation) {
        if let Some(rv) = replaced {
            let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
            let entry = map.entry(uid.to_string()).or_insert_with(|| OwnWrite {
                replaced: Vec::new(),
                latest: latest.clone(),
            });
            entry.replaced.push(rv);
            entry.latest = latest.clone();
        }
    }

    /// What our last write returned, if the cached copy at `rv` is one our
    /// writes already replaced. A newer version forgets the entry, so the map
    /// only holds resources whose cache is behind.
    /// NB: a resource deleted while its cache is behind leaves its entry;
    /// that is one object per such deletion.
    fn newer_than_cache(&self, uid: &str, rv: Option<&str>) -> Option<CopyImageCancellation> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let own = map.get(uid)?;
        if rv.is_some_and(|rv| own.replaced.iter().any(|r| r == rv)) {
            return Some(own.latest.clone());
        }
        map.remove(uid);
        None
    }
}

/// Publishes Events about the operator's own Pod (from `POD_NAME`,
/// `POD_NAMESPACE` and, when set, `POD_UID`, which the chart passes through
/// the downward API): the credential transitions of [`decide::credential_event`].
pub struct OperatorEvents {
    recorder: Recorder,
    pod: k8s_openapi::api::core::v1::ObjectReference,
}

impl OperatorEvents {
    /// `None` outside a pod (no `POD_NAME` or `POD_NAMESPACE`): there is
    /// nothing to attach the Events to, and the logs say the same.
    pub fn from_env(client: kube::Client, instance: Option<String>) -> Option<Self> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let (name, namespace) = (var("POD_NAME")?, var("POD_NAMESPACE")?);
        let recorder = Recorder::new(
            client,
            kube::runtime::events::Reporter {
                controller: REPORTING_CONTROLLER.to_string(),
                instance,
            },
        );
        let pod = k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(name),
            namespace: Some(namespace),
            uid: var("POD_UID"),
            ..Default::default()
        };
        Some(Self { recorder, pod })
    }

    /// Publishes `note` about the Pod; a failure is only logged.
    pub async fn publish(&self, note: &decide::EventNote) {
        let event = to_event(note, OPERATOR_EVENT_ACTION);
        if let Err(err) = self.recorder.publish(&event, &self.pod).await {
            warn!(reason = note.reason, error = %err, "could not publish an Event about the operator Pod (needs create/patch on events.k8s.io events in its namespace)");
        }
    }
}

/// The Kubernetes Event of a decided `note`, recorded as `action`.
fn to_event(note: &decide::EventNote, action: &str) -> Event {
    Event {
        type_: match note.kind {
            EventKind::Normal => EventType::Normal,
            EventKind::Warning => EventType::Warning,
        },
        reason: note.reason.to_string(),
        note: Some(note.note.clone()),
        action: action.to_string(),
        secondary: None,
    }
}

fn describe(obj: &CopyImageCancellation) -> String {
    format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
}

/// Outcome of one status write.
enum Written {
    /// Applied; the object as stored.
    Applied(Box<CopyImageCancellation>),
    /// The precondition failed: someone else moved the resource.
    Conflict,
    /// The resource is gone.
    Gone,
}

/// Applies `status` with server-side apply through the status subresource.
/// With `resource_version`, the write succeeds only if the object is still at
/// that version (optimistic concurrency). The UID is sent too, so a resource
/// deleted and re-created under the same name is never written to.
async fn apply_status(
    metrics: &Metrics,
    api: &Api<CopyImageCancellation>,
    obj: &CopyImageCancellation,
    status: &CopyImageCancellationStatus,
    resource_version: Option<&str>,
) -> Result<Written, Error> {
    let name = obj.name_any();
    let mut metadata = serde_json::json!({"name": name});
    if let Some(uid) = obj.uid() {
        metadata["uid"] = uid.into();
    }
    if let Some(rv) = resource_version {
        metadata["resourceVersion"] = rv.into();
    }
    let patch = serde_json::json!({
        "apiVersion": CopyImageCancellation::api_version(&()),
        "kind": CopyImageCancellation::kind(&()),
        "metadata": metadata,
        "status": status,
    });
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let patch = Patch::Apply(&patch);
    let write = api.patch_status(&name, &params, &patch);
    let written = match tokio::time::timeout(STATUS_WRITE_TIMEOUT, write).await {
        Err(_) => Err(Error::StatusWriteTimeout {
            resource: describe(obj),
            timeout: STATUS_WRITE_TIMEOUT,
        }),
        Ok(Ok(applied)) => Ok(Written::Applied(Box::new(applied))),
        Ok(Err(kube::Error::Api(status))) if status.code == 409 => Ok(Written::Conflict),
        Ok(Err(kube::Error::Api(status))) if status.code == 404 => Ok(Written::Gone),
        // NB: a UID mismatch (the name now belongs to a new resource) is refused as invalid.
        Ok(Err(kube::Error::Api(status)))
            if status.code == 422 && obj.uid().is_some() && status.message.contains("uid") =>
        {
            Ok(Written::Gone)
        }
        Ok(Err(source)) => Err(Error::StatusWrite {
            resource: describe(obj),
            source,
        }),
    };
    metrics.status_write(match &written {
        Ok(Written::Applied(_)) => "applied",
        Ok(Written::Conflict) => "conflict",
        Ok(Written::Gone) => "gone",
        Err(_) => "error",
    });
    if let (Ok(Written::Applied(_)), Some(reason)) = (&written, newly_failed(obj, status)) {
        metrics.resource_failed(conditions::failed_reason_label(reason));
    }
    written
}

/// The Stalled reason when `status` moves `obj` to Failed (counted once: a
/// resource already Failed is not counted again by the next writer).
fn newly_failed<'a>(
    obj: &CopyImageCancellation,
    status: &'a CopyImageCancellationStatus,
) -> Option<&'a str> {
    let was_failed = obj.status.as_ref().and_then(|s| s.phase) == Some(Phase::Failed);
    if was_failed || status.phase != Some(Phase::Failed) {
        return None;
    }
    Some(
        status
            .conditions
            .iter()
            .find(|c| c.type_ == conditions::types::STALLED)
            .map_or(crate::metrics::OTHER_CODE, |c| c.reason.as_str()),
    )
}

/// Like [`requeue`], looking again within `recheck` when waiting for credentials.
fn requeue_within(action: NextAction, recheck: Option<Duration>) -> Action {
    match (action, recheck) {
        (NextAction::AwaitCredentials(by_deadline), Some(recheck)) => requeue(
            NextAction::AwaitCredentials(Some(by_deadline.map_or(recheck, |d| d.min(recheck)))),
        ),
        (action, _) => requeue(action),
    }
}

/// Maps what `decide` asked for onto a requeue.
fn requeue(action: NextAction) -> Action {
    match action {
        NextAction::RequeueAfter(wait) => Action::requeue(wait),
        NextAction::AwaitCredentials(by_deadline) => {
            Action::requeue(by_deadline.map_or(CREDENTIALS_RECHECK, |d| d.min(CREDENTIALS_RECHECK)))
        }
        NextAction::Done => Action::await_change(),
        // NB: only reached when the write-ahead could not be applied, or the
        // wait for a slot could not be held.
        NextAction::WriteAheadThenSend | NextAction::AwaitSlot(_) => {
            Action::requeue(CONFLICT_REQUEUE)
        }
    }
}

/// The retries metric's class of a retry scheduled with condition `reason`.
fn retry_class_of(reason: &str) -> RetryClass {
    if reason == conditions::reasons::THROTTLED {
        RetryClass::Throttled
    } else if reason == conditions::reasons::ECS_UNAVAILABLE {
        RetryClass::Outage
    } else {
        RetryClass::Retryable
    }
}

/// Reconciles one resource: see the module documentation for the flow.
///
/// Runs in a `reconcile` span with the resource's `namespace` and name (field
/// `resource`), the `attempt` it is about ([`decide::current_attempt`]) and,
/// once ECS answered, its `request_id`, so every log line inside carries them.
/// Each field is set once (the text format appends a recorded field again).
///
/// NB: not `name`: the JSON log format writes the span's own name under that key.
/// NB: the attempt is read from the status the reconcile decides on, which is
/// our own last write when the cache has not seen it yet (a retry due before
/// the watch delivered the failure it follows would otherwise be logged under
/// the failed attempt's number).
pub async fn reconcile(
    cached: Arc<CopyImageCancellation>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let latest = cached.uid().and_then(|uid| {
        ctx.own_writes
            .newer_than_cache(&uid, cached.resource_version().as_deref())
    });
    let behind = latest.is_some();
    let obj = latest.map_or(cached, Arc::new);
    let span = tracing::info_span!(
        "reconcile",
        namespace = obj.namespace().unwrap_or_default(),
        resource = obj.name_any(),
        attempt = decide::current_attempt(obj.status.as_ref()),
        request_id = tracing::field::Empty,
    );
    if behind {
        span.in_scope(|| debug!(resource = %describe(&obj), "the cache has not seen our last status write yet; deciding on what it returned"));
    }
    reconcile_in_span(obj, ctx).instrument(span).await
}

async fn reconcile_in_span(
    obj: Arc<CopyImageCancellation>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let mut permit = Some(acquire(&ctx.permits).await);
    let _timer = ctx.metrics.reconcile();
    let (Some(namespace), Some(uid)) = (obj.namespace(), obj.uid()) else {
        return Err(Error::Incomplete(describe(&obj)));
    };
    let api: Api<CopyImageCancellation> = Api::namespaced(ctx.client.clone(), &namespace);

    if let Some(action) = record_unrecorded(&ctx, &api, &obj, &uid).await? {
        return Ok(action);
    }

    let settings = &ctx.settings;
    let mut current: CopyImageCancellation = (*obj).clone();
    // The pace's slot for the next send, once given, and the place in its
    // queue while waiting for one.
    let mut grant: Option<Grant> = None;
    let mut queued = None;
    // The place in the queue of the region's endpoint in an outage.
    let mut held: Option<(crate::pacing::HeldTicket, EndpointOutage)> = None;
    // A decision to look again at once is followed here, from what the API
    // server returned, rather than through the (maybe stale) cache; so is the
    // wait for a slot (queued, waiting, sending: three turns) and for the
    // endpoint (held, waiting, then the pace: three more).
    for _ in 0..7 {
        if current.spec.credentials_secret_ref.is_some()
            && let Some(secrets) = &ctx.secrets
            && !cache_ready(secrets, Some(SECRETS_READY_TIMEOUT)).await
        {
            return Err(Error::SecretsNotReady(SECRETS_READY_TIMEOUT));
        }
        // NB: before the selector and Namespace caches have their first list,
        // a tenant's resource would look like one without a role and be
        // signed with the operator's identity.
        if current.spec.credentials_secret_ref.is_none()
            && let Some(tenancy) = &ctx.tenancy
            && !(cache_ready(&tenancy.selectors, Some(SECRETS_READY_TIMEOUT)).await
                && cache_ready(&tenancy.namespaces, Some(SECRETS_READY_TIMEOUT)).await)
        {
            return Err(Error::SelectorsNotReady(SECRETS_READY_TIMEOUT));
        }
        let (credentials, recheck) = ctx.credentials(&current, &namespace);
        let trigger = match &credentials {
            Ok(_) if let Some((_, outage)) = &held => Trigger::Unavailable(outage),
            Ok(_) if queued.is_some() => Trigger::AwaitingPace,
            Ok(_) => Trigger::Observe,
            Err(NoKey::Missing(why)) => Trigger::CredentialsMissing(why),
            Err(NoKey::Ambiguous(why)) => Trigger::AmbiguousRole(why),
            Err(NoKey::Pending) => Trigger::CredentialsPending,
        };
        let decision = decide::decide(
            &Input {
                spec: &current.spec,
                generation: current.metadata.generation,
                status: current.status.as_ref(),
                now: Timestamp::now(),
                backoff: settings.backoff,
                jitter: rand::random::<f64>(),
                paced: settings.paced(),
            },
            trigger,
        );
        let Decision {
            status,
            action,
            event,
        } = decision;
        if action == NextAction::WriteAheadThenSend && grant.is_none() {
            // NB: the slot comes before the write-ahead, so that a wait for it
            // is never recorded as an attempt in flight.
            let signer = credentials
                .as_ref()
                .expect("decide sends only with credentials at hand");
            match settings
                .pacer
                .slot(&signer.quota, &current.spec.region_id, &uid)
            {
                Slot::Now(now) => grant = Some(now),
                Slot::Queued(ticket) => {
                    queued = Some(ticket);
                    continue;
                }
                Slot::Unavailable(ticket, outage) => {
                    held = Some((ticket, outage));
                    continue;
                }
            }
        }
        let written = if status_unchanged(&current, &status) {
            if let Some(note) = &event {
                ctx.publish(&current, note).await;
            }
            None
        } else {
            let rv = current.resource_version();
            let written = match apply_status(&ctx.metrics, &api, &current, &status, rv.as_deref())
                .await?
            {
                Written::Applied(written) => {
                    ctx.own_writes.replaced(&uid, rv, &written);
                    *written
                }
                Written::Conflict => {
                    debug!(resource = %describe(&current), "status moved under us; looking again, nothing sent");
                    return Ok(Action::requeue(CONFLICT_REQUEUE));
                }
                Written::Gone => return Ok(Action::await_change()),
            };
            if let Some(reason) = decide::retry_reason(&status, event.as_ref()) {
                ctx.metrics.retry_scheduled(retry_class_of(reason));
            }
            if let Some(note) = &event {
                ctx.publish(&written, note).await;
            }
            Some(written)
        };
        match (action, written) {
            (NextAction::WriteAheadThenSend, Some(written)) => {
                let signer = credentials.expect("decide sends only with credentials at hand");
                let grant = grant
                    .take()
                    .expect("a slot is taken before the write-ahead");
                return send_and_record(&ctx, &api, written, &signer.key, &uid, grant).await;
            }
            (NextAction::AwaitSlot(limit), written) if held.is_some() => {
                let (ticket, _) = held.take().expect("checked above");
                if let Some(written) = written {
                    current = written;
                }
                // NB: no reconcile permit while waiting, as for the pace.
                drop(permit.take());
                let released = match limit {
                    Some(limit) => tokio::time::timeout(limit, ticket.released()).await.ok(),
                    None => Some(ticket.released().await),
                };
                match released {
                    Some(None) => {
                        debug!(resource = %describe(&current), "shutting down: given up waiting for the ECS endpoint, nothing sent");
                        return Ok(Action::await_change());
                    }
                    Some(Some(Release::Probe(probe))) => grant = Some(probe),
                    // The endpoint answers again (ask the pace), or the
                    // deadline passed (the next decision says so).
                    Some(Some(Release::Closed)) | None => {}
                }
                permit = Some(acquire(&ctx.permits).await);
            }
            (NextAction::AwaitSlot(limit), written) => {
                let Some(ticket) = queued.take() else {
                    return Ok(requeue(NextAction::AwaitSlot(limit)));
                };
                if let Some(written) = written {
                    current = written;
                }
                // NB: the wait holds no reconcile permit: resources queued
                // behind a pace must not keep others (other keys, other
                // regions, status-only reconciles) from running.
                drop(permit.take());
                let waited = match limit {
                    Some(limit) => tokio::time::timeout(limit, ticket.granted()).await.ok(),
                    None => Some(ticket.granted().await),
                };
                if let Some(None) = waited {
                    debug!(resource = %describe(&current), "shutting down: given up waiting for the pace, nothing sent");
                    return Ok(Action::await_change());
                }
                permit = Some(acquire(&ctx.permits).await);
                // Past the deadline (None), the next decision says so.
                grant = waited.flatten();
            }
            (NextAction::RequeueAfter(wait), Some(written)) if wait.is_zero() => current = written,
            (other, _) => return Ok(requeue_within(other, recheck)),
        }
    }
    Ok(Action::requeue(CONFLICT_REQUEUE))
}

/// A reconcile permit (`--max-concurrent-reconciles`).
async fn acquire(permits: &Arc<Semaphore>) -> tokio::sync::OwnedSemaphorePermit {
    permits
        .clone()
        .acquire_owned()
        .await
        .expect("the semaphore is never closed")
}

/// Waits until `store` has its first list (at most `limit`); whether it has.
///
/// NB: kube-runtime 5's `Store::wait_until_ready` wakes only the most recent
/// of several concurrent waiters (the controller itself is one), so this polls
/// it again every few hundred milliseconds instead of awaiting it once.
pub async fn cache_ready<K>(store: &Store<K>, limit: Option<Duration>) -> bool
where
    K: kube::runtime::reflector::Lookup + Clone + 'static,
    K::DynamicType: std::hash::Hash + Eq + Clone,
{
    let poll = Duration::from_millis(200);
    let started = tokio::time::Instant::now();
    loop {
        match tokio::time::timeout(poll, store.wait_until_ready()).await {
            Ok(result) => return result.is_ok(),
            Err(_) if limit.is_some_and(|limit| started.elapsed() >= limit) => return false,
            Err(_) => {}
        }
    }
}

fn status_unchanged(obj: &CopyImageCancellation, status: &CopyImageCancellationStatus) -> bool {
    obj.status.as_ref() == Some(status)
}

/// Sends the attempt that `written` records, then records what came back.
async fn send_and_record(
    ctx: &Context,
    api: &Api<CopyImageCancellation>,
    written: CopyImageCancellation,
    key: &AccessKey,
    uid: &str,
    grant: Grant,
) -> Result<Action, Error> {
    let attempt = written.status.as_ref().map_or(0, |s| s.attempts);
    let span = tracing::Span::current();
    info!(resource = %describe(&written), attempt, "sending CancelCopyImage");
    let started = std::time::Instant::now();
    let outcome = ctx
        .settings
        .ecs
        .cancel_copy_image(key, &written.spec.region_id, &written.spec.image_id)
        .await;
    let probe = grant.is_probe();
    let (incident, outage) = ctx.settings.pacer.answered_by_endpoint(
        grant,
        pace_answer(&outcome),
        endpoint_health(&outcome),
    );
    ctx.metrics
        .request(&outcome, started.elapsed().as_secs_f64());
    if let Some(request_id) = outcome.request_id() {
        span.record("request_id", request_id);
    }
    info!(
        resource = %describe(&written),
        attempt,
        outcome = outcome_label(&outcome),
        request_id = outcome.request_id().unwrap_or(""),
        probe,
        "CancelCopyImage answered"
    );
    let unrecorded = Unrecorded {
        written,
        outcome,
        incident,
        outage,
    };
    record(ctx, api, unrecorded, uid).await
}

/// What an outcome says about the region's endpoint, for its breaker: the
/// retry class decides; the error in words names no resource (it is shown
/// to every resource waiting on the endpoint).
fn endpoint_health(outcome: &CancelOutcome) -> Health {
    let summary = || match outcome {
        CancelOutcome::Service(e) => match &e.request_id {
            Some(id) => format!("{} (HTTP {}, request ID {id})", e.code, e.http_status),
            None => format!("{} (HTTP {})", e.code, e.http_status),
        },
        CancelOutcome::Transport(t) => {
            format!("{}: {}", decide::OUTCOME_TRANSPORT_ERROR, t.message)
        }
        CancelOutcome::Cancelled { .. } => String::new(),
    };
    match outcome.retry_class() {
        RetryClass::Outage => Health::Outage(summary()),
        _ if outcome.is_internal_error() => Health::InternalError(summary()),
        _ => Health::Answers,
    }
}

/// What an outcome tells the pace: throttled, counted against the quota, or
/// nothing (no usable answer).
fn pace_answer(outcome: &CancelOutcome) -> pace::Answer {
    match (outcome.retry_class(), outcome) {
        (RetryClass::Throttled, _) => pace::Answer::Throttled {
            retry_after: outcome.retry_after(),
        },
        (_, CancelOutcome::Transport(_)) => pace::Answer::Unknown,
        _ => pace::Answer::Accepted,
    }
}

fn outcome_label(outcome: &CancelOutcome) -> &str {
    match outcome {
        CancelOutcome::Cancelled { .. } => decide::OUTCOME_SUCCEEDED,
        CancelOutcome::Service(e) => &e.code,
        CancelOutcome::Transport(_) => decide::OUTCOME_TRANSPORT_ERROR,
    }
}

/// Writes the outcome into status, retrying the write (never the send). If
/// every try fails, the outcome is kept for the next reconcile.
///
/// NB: the write carries the write-ahead's resourceVersion. A conflict is
/// resolved by reading the resource once: if it is still the same resource
/// (UID) with the write-ahead status, only metadata moved and the write is
/// repeated at the new version; otherwise (deleted, re-created under the same
/// name, or already recorded) there is nothing to record.
async fn record(
    ctx: &Context,
    api: &Api<CopyImageCancellation>,
    mut unrecorded: Unrecorded,
    uid: &str,
) -> Result<Action, Error> {
    let mut pause = Duration::from_millis(200);
    let mut last_error = None;
    for attempt in 1..=RECORD_ATTEMPTS {
        let decision = decide::decide(
            &Input {
                spec: &unrecorded.written.spec,
                generation: unrecorded.written.metadata.generation,
                status: unrecorded.written.status.as_ref(),
                now: Timestamp::now(),
                backoff: ctx.settings.backoff,
                jitter: rand::random::<f64>(),
                paced: ctx.settings.paced(),
            },
            Trigger::AttemptedAt(
                &unrecorded.outcome,
                match (&unrecorded.outage, unrecorded.incident) {
                    (Some(outage), _) => EndpointState::Unavailable(outage),
                    (None, Incident::Yes) => EndpointState::Incident,
                    (None, Incident::No) => EndpointState::Answering,
                },
            ),
        );
        let rv = unrecorded.written.resource_version();
        // Some(stored) once applied, None when there is nothing to record.
        let result = match apply_status(
            &ctx.metrics,
            api,
            &unrecorded.written,
            &decision.status,
            rv.as_deref(),
        )
        .await
        {
            Ok(Written::Applied(stored)) => {
                ctx.own_writes.replaced(uid, rv, &stored);
                Ok(Some(stored))
            }
            Ok(Written::Gone) => Ok(None),
            Ok(Written::Conflict) => match still_waiting_for_record(api, &unrecorded.written).await
            {
                Ok(Some(fresh)) => {
                    unrecorded.written = fresh;
                    continue;
                }
                Ok(None) => Ok(None),
                Err(err) => Err(err),
            },
            Err(err) => Err(err),
        };
        match result {
            Ok(Some(stored)) => {
                let recorded = stored.status.as_ref();
                if let Some(reason) =
                    decide::retry_reason(&decision.status, decision.event.as_ref())
                {
                    ctx.metrics.retry_scheduled(retry_class_of(reason));
                    info!(
                        reason,
                        next_attempt_time = recorded
                            .and_then(|s| s.next_attempt_time.as_ref())
                            .map(|t| t.0.to_string())
                            .unwrap_or_default(),
                        "outcome recorded; retry scheduled"
                    );
                } else {
                    let phase = recorded
                        .and_then(|s| s.phase)
                        .map(|p| format!("{p:?}"))
                        .unwrap_or_default();
                    info!(phase, "outcome recorded");
                }
                if let Some(note) = &decision.event {
                    ctx.publish(&stored, note).await;
                }
                return Ok(requeue(decision.action));
            }
            Ok(None) => {
                info!(resource = %describe(&unrecorded.written), "gone, re-created or already recorded: nothing to record");
                return Ok(Action::await_change());
            }
            Err(err) => {
                warn!(resource = %describe(&unrecorded.written), attempt, error = %err, "could not record the outcome; retrying the write");
                last_error = Some(err);
            }
        }
        if attempt < RECORD_ATTEMPTS {
            let (code, retry_after) = last_error.as_ref().map_or((None, None), refusal);
            let wait = pause_after_refusal(code, retry_after, pause, ctx.settings.backoff.cap());
            tokio::time::sleep(wait).await;
            pause *= 3;
        }
    }
    ctx.unrecorded
        .lock()
        .expect("unrecorded map poisoned")
        .insert(uid.to_string(), unrecorded);
    Err(last_error.unwrap_or_else(|| Error::Incomplete(format!("{uid} (the status kept moving)"))))
}

/// After a conflicting record: the resource as it is now if it is the same
/// resource, still holding the write-ahead status; `None` otherwise.
async fn still_waiting_for_record(
    api: &Api<CopyImageCancellation>,
    written: &CopyImageCancellation,
) -> Result<Option<CopyImageCancellation>, Error> {
    let read = tokio::time::timeout(STATUS_WRITE_TIMEOUT, api.get_opt(&written.name_any()))
        .await
        .map_err(|_| Error::StatusWriteTimeout {
            resource: describe(written),
            timeout: STATUS_WRITE_TIMEOUT,
        })?
        .map_err(|source| Error::StatusWrite {
            resource: describe(written),
            source,
        })?;
    Ok(read.filter(|fresh| fresh.uid() == written.uid() && fresh.status == written.status))
}

/// Records an outcome a previous reconcile could not write. `None` when there
/// is nothing (left) to record.
async fn record_unrecorded(
    ctx: &Context,
    api: &Api<CopyImageCancellation>,
    cached: &CopyImageCancellation,
    uid: &str,
) -> Result<Option<Action>, Error> {
    let pending = ctx
        .unrecorded
        .lock()
        .expect("unrecorded map poisoned")
        .remove(uid);
    let Some(pending) = pending else {
        return Ok(None);
    };
    let written_attempts = pending.written.status.as_ref().map_or(0, |s| s.attempts);
    let already_recorded = cached.status.as_ref().is_some_and(|s| {
        s.phase.is_some_and(crate::resource::Phase::is_finished)
            || (s.attempts >= written_attempts && !decide::attempt_in_flight(s))
    });
    if already_recorded {
        // The write did land (only its answer was lost).
        return Ok(None);
    }
    record(ctx, api, pending, uid).await.map(Some)
}

/// Requeues a failed reconcile after a short pause, or after the API
/// server's Retry-After when it was overloaded.
pub fn error_policy(obj: Arc<CopyImageCancellation>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_failed();
    let (code, retry_after) = refusal(error);
    let wait = pause_after_refusal(code, retry_after, ERROR_REQUEUE, ctx.settings.backoff.cap());
    warn!(resource = %describe(&obj), error = %error, retry_in = ?wait, "reconcile failed; retrying");
    Action::requeue(wait)
}

/// The HTTP status of a refused status write and the wait the API server
/// asked for (`details.retryAfterSeconds`, which the server also sends as
/// `Retry-After`).
fn refusal(error: &Error) -> (Option<u16>, Option<Duration>) {
    match error {
        Error::StatusWrite {
            source: kube::Error::Api(status),
            ..
        } => (
            Some(status.code),
            status
                .details
                .as_ref()
                .map(|d| d.retry_after_seconds)
                .filter(|s| *s > 0)
                .map(|s| Duration::from_secs(s.into())),
        ),
        _ => (None, None),
    }
}

/// How long to wait before trying a write again after the API server refused
/// it with `code` (`None`: no answer) and asked for `retry_after`: on 429 or
/// 503 at least what it asked (at least [`THROTTLED_PAUSE`] when it did not
/// say), at most `cap` (`--retry-max-delay`); `pause` otherwise.
///
/// NB: kube-rs's client already retries 429, 503 and 504 honouring
/// Retry-After, up to 15 times, within each request; this is the pause
/// after a write that still failed.
pub fn pause_after_refusal(
    code: Option<u16>,
    retry_after: Option<Duration>,
    pause: Duration,
    cap: Duration,
) -> Duration {
    match code {
        Some(429 | 503) => pause
            .max(retry_after.unwrap_or(THROTTLED_PAUSE))
            .min(cap.max(pause)),
        _ => pause,
    }
}

/// The resources a Secret change should wake: those in its namespace that
/// name it and are not finished.
pub fn resources_using_secret(
    secret: &Secret,
    resources: &[Arc<CopyImageCancellation>],
) -> Vec<ObjectRef<CopyImageCancellation>> {
    let namespace = secret.namespace();
    let name = secret.name_any();
    resources
        .iter()
        .filter(|r| r.namespace() == namespace)
        .filter(|r| {
            r.spec
                .credentials_secret_ref
                .as_ref()
                .is_some_and(|s| s.name == name)
        })
        .filter(|r| {
            !r.status
                .as_ref()
                .and_then(|s| s.phase)
                .is_some_and(crate::resource::Phase::is_finished)
        })
        .map(|r| ObjectRef::from_obj(r.as_ref()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::{CopyImageCancellationSpec, CredentialsSecretRef, Phase};

    fn cic(
        namespace: &str,
        name: &str,
        secret: Option<&str>,
        phase: Option<Phase>,
    ) -> Arc<CopyImageCancellation> {
        let mut r = CopyImageCancellation::new(
            name,
            CopyImageCancellationSpec {
                region_id: "cn-hangzhou".into(),
                image_id: "m-bp1caf3yicx5jlfl".into(),
                credentials_secret_ref: secret.map(|s| CredentialsSecretRef { name: s.into() }),
                backoff_limit: 6,
                active_deadline_seconds: None,
            },
        );
        r.metadata.namespace = Some(namespace.into());
        r.status = phase.map(|p| CopyImageCancellationStatus {
            phase: Some(p),
            ..Default::default()
        });
        Arc::new(r)
    }

    #[test]
    fn a_failed_resource_is_counted_once_by_its_stalled_reason() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
        let stalled = |reason: &str| Condition {
            type_: conditions::types::STALLED.into(),
            status: conditions::status::TRUE.into(),
            reason: reason.into(),
            message: String::new(),
            last_transition_time: Time(Timestamp::UNIX_EPOCH),
            observed_generation: None,
        };
        let status = |phase: Phase, reason: Option<&str>| CopyImageCancellationStatus {
            phase: Some(phase),
            conditions: reason.map(stalled).into_iter().collect(),
            ..Default::default()
        };
        let rows = [
            // (phase before, the status written, counted reason)
            (
                None,
                status(Phase::Failed, Some("RetriesExhausted")),
                Some("RetriesExhausted"),
            ),
            (
                Some(Phase::Running),
                status(Phase::Failed, Some("DeadlineExceeded")),
                Some("DeadlineExceeded"),
            ),
            (
                Some(Phase::Pending),
                status(Phase::Failed, None),
                Some("other"),
            ),
            // Already Failed (written by us before, or by an earlier leader): not again.
            (
                Some(Phase::Failed),
                status(Phase::Failed, Some("RetriesExhausted")),
                None,
            ),
            (Some(Phase::Running), status(Phase::Running, None), None),
            (Some(Phase::Running), status(Phase::Succeeded, None), None),
        ];
        for (before, written, want) in rows {
            let obj = cic("images", "a", None, before);
            assert_eq!(
                newly_failed(&obj, &written),
                want,
                "{before:?} -> {written:?}"
            );
        }
    }

    #[test]
    fn a_secret_absent_from_the_cache_is_waited_for_quietly_within_the_grace() {
        let t0 = std::time::Instant::now();
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        // (seconds since the first miss, already awaiting credentials, wait left)
        let rows = [
            (ms(0), false, Some(SECRET_CACHE_GRACE)),
            (ms(1500), false, Some(SECRET_CACHE_GRACE - ms(1500))),
            (SECRET_CACHE_GRACE - ms(1), false, Some(ms(1))),
            (SECRET_CACHE_GRACE, false, None),
            (SECRET_CACHE_GRACE + s(60), false, None),
            // The status already says so: nothing to be quiet about.
            (ms(0), true, None),
            (ms(1500), true, None),
        ];
        for (since, awaiting, want) in rows {
            assert_eq!(
                grace_left(t0, t0 + since, awaiting),
                want,
                "{since:?} after the first miss, awaiting: {awaiting}"
            );
        }
    }

    #[test]
    fn secret_misses_keep_the_first_miss_until_found_or_reported() {
        let misses = SecretMisses::default();
        let t0 = std::time::Instant::now();
        let later = t0 + Duration::from_secs(1);
        assert_eq!(misses.wait_left("a", t0, false), Some(SECRET_CACHE_GRACE));
        // Counted from the first miss, not the latest.
        assert_eq!(
            misses.wait_left("a", later, false),
            Some(SECRET_CACHE_GRACE - Duration::from_secs(1))
        );
        // Reported missing once the grace is over: the entry goes.
        assert_eq!(misses.wait_left("a", t0 + SECRET_CACHE_GRACE, false), None);
        assert!(misses.0.lock().unwrap().is_empty());
        // Found: the next miss starts a new grace.
        assert_eq!(misses.wait_left("b", t0, false), Some(SECRET_CACHE_GRACE));
        misses.found("b");
        assert!(misses.0.lock().unwrap().is_empty());
        assert_eq!(
            misses.wait_left("b", later, false),
            Some(SECRET_CACHE_GRACE)
        );
    }

    #[test]
    fn a_secret_wakes_the_unfinished_resources_that_name_it_in_its_namespace() {
        let resources = vec![
            cic("images", "a", Some("creds"), None),
            cic("images", "b", Some("creds"), Some(Phase::Running)),
            cic("images", "done", Some("creds"), Some(Phase::Succeeded)),
            cic("images", "other-secret", Some("other"), None),
            cic("images", "operator-keys", None, None),
            cic("elsewhere", "same-name", Some("creds"), None),
        ];
        let mut secret = Secret::default();
        secret.metadata.name = Some("creds".into());
        secret.metadata.namespace = Some("images".into());
        let woken: Vec<String> = resources_using_secret(&secret, &resources)
            .into_iter()
            .map(|r| r.name)
            .collect();
        assert_eq!(woken, ["a", "b"]);
    }

    #[test]
    fn a_refused_write_waits_what_an_overloaded_api_server_asks_within_the_cap() {
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        let cap = s(300);
        for (code, retry_after, pause, expected) in [
            // No answer (timeout, connection): the caller's own pause.
            (None, None, ms(200), ms(200)),
            // Refusals that waiting does not cure: the caller's pause.
            (Some(500), Some(s(10)), ms(200), ms(200)),
            (Some(403), None, s(5), s(5)),
            // Overloaded: what the server asks, never less than the caller's pause.
            (Some(429), Some(s(3)), ms(200), s(3)),
            (Some(429), Some(s(1)), s(5), s(5)),
            (Some(503), Some(s(2)), ms(600), s(2)),
            // Overloaded without saying how long: at least a second.
            (Some(429), None, ms(200), THROTTLED_PAUSE),
            (Some(429), None, s(5), s(5)),
            // An absurd Retry-After is cut to --retry-max-delay.
            (Some(429), Some(s(86_400)), ms(200), cap),
        ] {
            assert_eq!(
                pause_after_refusal(code, retry_after, pause, cap),
                expected,
                "{code:?} {retry_after:?} {pause:?}"
            );
        }
        // A cap below the caller's own pause does not shorten that pause.
        assert_eq!(
            pause_after_refusal(Some(429), Some(s(60)), s(5), s(2)),
            s(5)
        );
    }

    #[test]
    fn the_wait_comes_from_the_status_details_of_a_refused_write() {
        let status = |code: u16, retry_after_seconds: u32| Error::StatusWrite {
            resource: "images/a".into(),
            source: kube::Error::Api(Box::new(kube::core::Status {
                code,
                details: Some(kube::core::response::StatusDetails {
                    name: "a".into(),
                    group: "ecs.alibabacloud.com".into(),
                    kind: "copyimagecancellations".into(),
                    uid: String::new(),
                    causes: Vec::new(),
                    retry_after_seconds,
                }),
                ..kube::core::Status::failure("Too many requests", "TooManyRequests")
            })),
        };
        assert_eq!(
            refusal(&status(429, 7)),
            (Some(429), Some(Duration::from_secs(7)))
        );
        assert_eq!(refusal(&status(429, 0)), (Some(429), None));
        assert_eq!(refusal(&status(500, 0)), (Some(500), None));
        let timeout = Error::StatusWriteTimeout {
            resource: "images/a".into(),
            timeout: STATUS_WRITE_TIMEOUT,
        };
        assert_eq!(refusal(&timeout), (None, None));
    }

    #[test]
    fn requeue_follows_the_decision() {
        assert_eq!(
            requeue(NextAction::RequeueAfter(Duration::from_secs(7))),
            Action::requeue(Duration::from_secs(7))
        );
        assert_eq!(requeue(NextAction::Done), Action::await_change());
        assert_eq!(
            requeue(NextAction::AwaitCredentials(None)),
            Action::requeue(CREDENTIALS_RECHECK)
        );
        assert_eq!(
            requeue(NextAction::AwaitCredentials(Some(Duration::from_secs(9)))),
            Action::requeue(Duration::from_secs(9))
        );
    }

    #[test]
    fn waiting_for_operator_credentials_looks_again_soon() {
        let soon = Some(OPERATOR_CREDENTIALS_RECHECK);
        for (action, recheck, expected) in [
            (
                NextAction::AwaitCredentials(None),
                soon,
                Action::requeue(OPERATOR_CREDENTIALS_RECHECK),
            ),
            (
                NextAction::AwaitCredentials(Some(Duration::from_secs(2))),
                soon,
                Action::requeue(Duration::from_secs(2)),
            ),
            (
                NextAction::AwaitCredentials(Some(Duration::from_secs(60))),
                soon,
                Action::requeue(OPERATOR_CREDENTIALS_RECHECK),
            ),
            (
                NextAction::AwaitCredentials(None),
                None,
                Action::requeue(CREDENTIALS_RECHECK),
            ),
            (NextAction::Done, soon, Action::await_change()),
        ] {
            assert_eq!(requeue_within(action, recheck), expected);
        }
    }

    #[test]
    fn own_writes_tell_a_stale_cache_until_it_catches_up() {
        let own = OwnWrites::default();
        let written = |rv: &str| {
            let mut r = (*cic("images", "a", None, None)).clone();
            r.metadata.resource_version = Some(rv.into());
            r
        };
        let rv_of = |r: Option<CopyImageCancellation>| r.and_then(|r| r.metadata.resource_version);
        assert_eq!(
            rv_of(own.newer_than_cache("u1", Some("10"))),
            None,
            "no write yet"
        );
        own.replaced("u1", Some("10".into()), &written("11"));
        own.replaced("u1", Some("11".into()), &written("12"));
        assert_eq!(
            rv_of(own.newer_than_cache("u1", Some("10"))),
            Some("12".into()),
            "before both writes: the last write's object"
        );
        assert_eq!(
            rv_of(own.newer_than_cache("u1", Some("11"))),
            Some("12".into()),
            "between the writes"
        );
        assert_eq!(
            rv_of(own.newer_than_cache("u2", Some("11"))),
            None,
            "another resource"
        );
        assert_eq!(
            rv_of(own.newer_than_cache("u1", Some("12"))),
            None,
            "caught up"
        );
        assert_eq!(
            rv_of(own.newer_than_cache("u1", Some("10"))),
            None,
            "forgotten once caught up (versions only move forward)"
        );
        own.replaced("u1", None, &written("13"));
        assert_eq!(
            rv_of(own.newer_than_cache("u1", None)),
            None,
            "no version: nothing known"
        );
    }
}
