//! The controller shell end to end, in process: `run_controllers` against the
//! in-process Kubernetes API, with the ECS simulator as ECS. Asserts on what a
//! user sees (status, conditions, Events) and on how many CancelCopyImage
//! requests reached "ECS".

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::{FollowedRun, PATIENCE, within};
use copyimage_canceller::admin::Health;
use copyimage_canceller::controller::Settings;
use copyimage_canceller::controller::run::{WatchOptions, run_controllers};
use copyimage_canceller::ecs::client::{EcsClient, EcsClientConfig};
use copyimage_canceller::identity::OperatorCredentials;
use copyimage_canceller::pacing::{Pacer, PacingConfig};
use copyimage_canceller::resource::{
    CopyImageCancellation, CopyImageCancellationSpec, CopyImageCancellationStatus,
    CredentialsSecretRef, Phase,
};
use copyimage_canceller::retry::Backoff;
use copyimage_stand_ins::AccessKey;
use copyimage_stand_ins::ecs_simulator::{
    EcsSimulator, FaultCount, FaultKind, FaultSpec, FaultTarget, ImageState, SimulatorConfig,
    SimulatorHandle,
};
use copyimage_stand_ins::kube_api::{Fault, KubeApi, KubeApiHandle, Verb};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{CustomResourceExt, ResourceExt};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const NS: &str = "images";
const IMAGE: &str = "m-bp1caf3yicx5jlfl";
const REGION: &str = "cn-hangzhou";
const KEY_ID: &str = "LTAI5tSmokeTestKeyId";
const KEY_SECRET: &str = "smoke-secret-value-never-shown";

fn key() -> AccessKey {
    AccessKey::new(KEY_ID, KEY_SECRET, None)
}

struct Harness {
    api: KubeApiHandle,
    sim: SimulatorHandle,
    client: kube::Client,
    shutdown: CancellationToken,
    run: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Harness {
    /// The in-process API and the simulator; nothing reconciles yet.
    async fn idle(sim: SimulatorConfig) -> Self {
        let api = KubeApi::start(vec![CopyImageCancellation::crd()])
            .await
            .unwrap();
        let sim = EcsSimulator::start(sim).await.unwrap();
        let client = api.client().unwrap();
        Self {
            api,
            sim,
            client,
            shutdown: CancellationToken::new(),
            run: None,
        }
    }

    /// The controllers in process, every namespace watched, without operator credentials.
    async fn start(sim: SimulatorConfig, backoff: Backoff) -> Self {
        let options = WatchOptions {
            namespaces: Vec::new(),
            selector: None,
            max_concurrent_reconciles: 4,
            instance: Some("smoke-test".into()),
            ..WatchOptions::default()
        };
        Self::start_with(sim, backoff, OperatorCredentials::none(), options).await
    }

    /// [`Harness::idle`] with `run_controllers` running as `options` say, sending to
    /// the simulator with `backoff` and `operator` as the operator's credentials.
    async fn start_with(
        sim: SimulatorConfig,
        backoff: Backoff,
        operator: OperatorCredentials,
        options: WatchOptions,
    ) -> Self {
        let mut h = Self::idle(sim).await;
        let settings = Arc::new(Settings {
            ecs: EcsClient::new(EcsClientConfig {
                endpoint: h.sim.endpoint(),
                ..EcsClientConfig::default()
            })
            .unwrap(),
            backoff,
            operator,
            pacer: Pacer::new(PacingConfig::default(), None),
        });
        h.run = Some(tokio::spawn(run_controllers(
            h.client.clone(),
            settings,
            options,
            h.shutdown.clone(),
        )));
        h
    }

    /// [`Harness::start_with`] `options`, [`IMAGE`] a copy in progress, [`key`] as
    /// the operator's credentials.
    async fn start_with_operator_key(options: WatchOptions) -> Self {
        let operator = OperatorCredentials::fixed(common::operator_side(&key()));
        Self::start_with(copying(), fast(), operator, options).await
    }

    /// [`Harness::start`] with [`IMAGE`]'s first answer 2 seconds late ([`slow_once`]), the
    /// Secret and resource `stop-copy` created, once its attempt is recorded
    /// (write-ahead) and in flight; that status.
    async fn with_request_in_flight() -> (Self, CopyImageCancellationStatus) {
        let h = Self::start(copying().with_fault(slow_once()), fast()).await;
        h.create_secret().await;
        h.create("stop-copy", 6).await;
        let status = h
            .wait_for("stop-copy", "the write-ahead", |s| {
                s.attempts == 1 && s.phase == Some(Phase::Running)
            })
            .await;
        (h, status)
    }

    /// The real binary's `run` against this API (its kubeconfig written into `dir`)
    /// and the simulator, with no operator credentials in its environment.
    fn run_command(&self, dir: &std::path::Path) -> tokio::process::Command {
        let kubeconfig = dir.join("kubeconfig");
        self.api.write_kubeconfig(&kubeconfig).unwrap();
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_copyimage-canceller"));
        command
            .args(["run", "--ecs-endpoint", &self.sim.endpoint()])
            .env("KUBECONFIG", &kubeconfig)
            .env_remove("ALIBABA_CLOUD_ACCESS_KEY_ID")
            .env_remove("ALIBABA_CLOUD_ACCESS_KEY_SECRET")
            .env_remove("ALIBABA_CLOUD_SECURITY_TOKEN");
        command
    }

    fn cics(&self) -> Api<CopyImageCancellation> {
        Api::namespaced(self.client.clone(), NS)
    }

    async fn create_secret(&self) {
        let secret = common::key_secret("alibaba-credentials", NS, &key());
        Api::<Secret>::namespaced(self.client.clone(), NS)
            .create(&PostParams::default(), &secret)
            .await
            .unwrap();
    }

    async fn create(&self, name: &str, backoff_limit: i32) {
        let mut cic = CopyImageCancellation::new(
            name,
            CopyImageCancellationSpec {
                region_id: REGION.into(),
                image_id: IMAGE.into(),
                credentials_secret_ref: Some(CredentialsSecretRef {
                    name: "alibaba-credentials".into(),
                }),
                backoff_limit,
                active_deadline_seconds: None,
            },
        );
        cic.metadata.namespace = Some(NS.into());
        self.cics()
            .create(&PostParams::default(), &cic)
            .await
            .unwrap();
    }

    async fn status(&self, name: &str) -> Option<CopyImageCancellationStatus> {
        self.cics().get(name).await.unwrap().status
    }

    /// Polls the status until `done` holds.
    async fn wait_for(
        &self,
        name: &str,
        what: &str,
        done: impl Fn(&CopyImageCancellationStatus) -> bool,
    ) -> CopyImageCancellationStatus {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let status = self.status(name).await;
            if let Some(s) = &status
                && done(s)
            {
                return s.clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name}: waited {PATIENCE:?} for {what}; status: {status:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn sent(&self) -> usize {
        common::cancel_requests(self.sim.requests()).len()
    }

    async fn events(&self, reason: &str) -> Vec<K8sEvent> {
        Api::<K8sEvent>::namespaced(self.client.clone(), NS)
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some(reason))
            .collect()
    }

    /// Waits for at least one Event with `reason` (published just after the
    /// status write it describes).
    async fn wait_events(&self, reason: &str) -> Vec<K8sEvent> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let events = self.events(reason).await;
            if !events.is_empty() {
                return events;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {reason} Event after {PATIENCE:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Touches the resource (a label), which makes the controller look at it again.
    async fn touch(&self, name: &str, value: &str) {
        let patch = serde_json::json!({"metadata": {"labels": {"touched": value}}});
        self.cics()
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }

    /// Waits until `stop-copy` is final, and asserts that it Succeeded on the
    /// first attempt with exactly one request sent (`why` says what that shows).
    async fn assert_succeeded_with_one_request(&self, why: &str) {
        let s = self.wait_for("stop-copy", "Succeeded", finished).await;
        assert_eq!(s.phase, Some(Phase::Succeeded), "{why}");
        assert_eq!(s.attempts, 1, "{why}");
        assert_eq!(self.sent(), 1, "{why}");
    }

    /// Polls until `name` says it is AwaitingCredentials.
    async fn wait_awaiting_credentials(&self, name: &str) -> CopyImageCancellationStatus {
        self.wait_for(name, "AwaitingCredentials", |s| {
            s.conditions
                .iter()
                .any(|c| c.reason == "AwaitingCredentials")
        })
        .await
    }

    async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(run) = self.run.take() {
            within(run).await.unwrap().unwrap();
        }
    }
}

/// The simulator knowing [`key`], with [`IMAGE`] a copy in progress.
fn copying() -> SimulatorConfig {
    SimulatorConfig::new([key()]).with_image(IMAGE, ImageState::Copying)
}

/// [`IMAGE`]'s next CancelCopyImage answers after 2 seconds.
fn slow_once() -> FaultSpec {
    FaultSpec::new(
        FaultTarget::Image(IMAGE.into()),
        FaultKind::Latency {
            delay: Duration::from_secs(2),
        },
        FaultCount::Times(1),
    )
}

fn fast() -> Backoff {
    Backoff::new(Duration::from_millis(10), Duration::from_millis(50)).unwrap()
}

fn condition<'a>(
    s: &'a CopyImageCancellationStatus,
    type_: &str,
) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    s.conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {s:#?}"))
}

fn finished(s: &CopyImageCancellationStatus) -> bool {
    s.phase.is_some_and(Phase::is_finished)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancels_once_and_reports_ready() {
    let h = Harness::start(copying(), fast()).await;
    h.create_secret().await;
    h.create("stop-copy", 6).await;
    let s = h.wait_for("stop-copy", "Succeeded", finished).await;

    assert_eq!(s.phase, Some(Phase::Succeeded));
    assert_eq!(s.attempts, 1);
    assert!(s.error_code.is_none());
    let request_id = s.request_id.clone().expect("request ID recorded");
    let ready = condition(&s, "Ready");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("True", "Cancelled")
    );
    assert_eq!(condition(&s, "Reconciling").status, "False");
    assert_eq!(condition(&s, "Stalled").status, "False");
    assert_eq!(s.observed_generation, Some(1));
    assert_eq!(s.attempt_history.len(), 1);
    assert_eq!(s.attempt_history[0].outcome, "Succeeded");
    assert_eq!(h.sim.image(IMAGE), None, "the copy was cancelled");
    assert_eq!(h.sent(), 1);

    // The write-ahead and the record: two status writes (the
    // sandbox logs a request once answered, so give the log a moment).
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while h.api.count(Verb::Patch, "copyimagecancellations", "status") < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:#?}",
            h.api.requests()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let cancelled = h.wait_events("Cancelled").await;
    assert_eq!(cancelled.len(), 1, "{cancelled:#?}");
    assert!(
        cancelled[0]
            .note
            .as_deref()
            .unwrap_or("")
            .contains(&request_id)
    );
    assert_eq!(cancelled[0].type_.as_deref(), Some("Normal"));

    // A finished resource is never sent again, however often it is looked at.
    for n in 0..3 {
        h.touch("stop-copy", &n.to_string()).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(h.sent(), 1);
    assert_eq!(h.status("stop-copy").await.unwrap().attempts, 1);
    // NB: the Secret and the resource come through separate watches; when
    // the resource's arrives first, it waits quietly for the Secret: one
    // Pending write, no AwaitingCredentials and no Warning Event.
    assert_eq!(h.events("AwaitingCredentials").await.len(), 0);
    let writes = h.api.count(Verb::Patch, "copyimagecancellations", "status");
    assert!(
        (2..=3).contains(&writes),
        "no status write beyond the write-ahead, the record and at most one Pending: {:#?}",
        h.api.requests()
    );

    // The secret appears nowhere a user can read.
    let everything = format!(
        "{}{:?}",
        serde_json::to_string(&h.cics().get("stop-copy").await.unwrap()).unwrap(),
        h.events("Cancelled").await
    );
    assert!(!everything.contains(KEY_SECRET));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_for_credentials_then_proceeds_when_the_secret_appears() {
    let h = Harness::start(copying(), fast()).await;
    h.create("stop-copy", 6).await;
    let s = h.wait_awaiting_credentials("stop-copy").await;
    assert_eq!(s.phase, Some(Phase::Pending));
    assert_eq!(s.attempts, 0);
    assert_eq!(condition(&s, "Reconciling").status, "True");
    assert!(
        condition(&s, "Reconciling")
            .message
            .contains("Secret images/alibaba-credentials not found")
    );
    assert_eq!(h.sent(), 0, "nothing is sent without credentials");

    h.create_secret().await;
    h.assert_succeeded_with_one_request("").await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_transient_failures_then_succeeds() {
    let fault = FaultSpec::new(
        FaultTarget::Image(IMAGE.into()),
        FaultKind::InternalError,
        FaultCount::Times(2),
    );
    let h = Harness::start(copying().with_fault(fault), fast()).await;
    h.create_secret().await;
    h.create("stop-copy", 6).await;
    let s = h.wait_for("stop-copy", "Succeeded", finished).await;
    assert_eq!(s.phase, Some(Phase::Succeeded));
    assert_eq!((s.attempts, s.failed_attempts), (3, 2));
    let outcomes: Vec<&str> = s
        .attempt_history
        .iter()
        .map(|a| a.outcome.as_str())
        .collect();
    assert_eq!(outcomes, ["InternalError", "InternalError", "Succeeded"]);
    assert!(s.error_code.is_none(), "cleared on success");
    assert_eq!(h.sent(), 3);
    assert_eq!(
        h.events("RetryScheduled").await.len(),
        1,
        "repeated Events aggregate into a series"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_error_fails_after_exactly_one_attempt() {
    // The image is not there at all: InvalidImageId.NotFound.
    let h = Harness::start(SimulatorConfig::new([key()]), fast()).await;
    h.create_secret().await;
    h.create("stop-copy", 6).await;
    let s = h.wait_for("stop-copy", "Failed", finished).await;
    assert_eq!(s.phase, Some(Phase::Failed));
    assert_eq!(s.attempts, 1);
    assert_eq!(s.error_code.as_deref(), Some("InvalidImageId.NotFound"));
    assert_eq!(s.http_status, Some(404));
    let stalled = condition(&s, "Stalled");
    assert_eq!(
        (stalled.status.as_str(), stalled.reason.as_str()),
        ("True", "InvalidImageIdNotFound")
    );
    assert_eq!(condition(&s, "Ready").status, "False");
    let failed = h.wait_events("CancelFailed").await;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].type_.as_deref(), Some("Warning"));

    h.touch("stop-copy", "again").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(h.sent(), 1, "a terminal error is never sent again");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_status_write_is_retried_without_sending_again() {
    let (h, _) = Harness::with_request_in_flight().await;
    h.api.inject_fault(
        Fault::internal_error(2)
            .verb(Verb::Patch)
            .resource("copyimagecancellations")
            .subresource("status"),
    );
    h.assert_succeeded_with_one_request("the outcome was recorded, not re-sent")
        .await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflicting_status_write_sends_nothing_and_looks_again() {
    let h = Harness::start(copying(), fast()).await;
    h.create_secret().await;
    h.api.inject_fault(
        Fault::conflict(3)
            .verb(Verb::Patch)
            .resource("copyimagecancellations")
            .subresource("status"),
    );
    h.create("stop-copy", 6).await;
    h.assert_succeeded_with_one_request("").await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_the_request_in_flight_finish_and_be_recorded() {
    let (mut h, _) = Harness::with_request_in_flight().await;
    assert_eq!(
        h.status("stop-copy").await.unwrap().attempt_history[0].outcome,
        "Unknown"
    );
    h.shutdown.cancel();
    within(h.run.take().unwrap()).await.unwrap().unwrap();
    let s = h.status("stop-copy").await.unwrap();
    assert_eq!(
        s.phase,
        Some(Phase::Succeeded),
        "recorded before exiting: {s:#?}"
    );
    assert_eq!(h.sent(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resource_deleted_mid_retry_is_let_go() {
    // NB: InternalError, a counted retry (ServiceUnavailable is an outage now:
    // never counted, so failedAttempts would never move).
    let failing = FaultSpec::new(
        FaultTarget::Image(IMAGE.into()),
        FaultKind::InternalError,
        FaultCount::Always,
    );
    let h = Harness::start(
        copying().with_fault(failing),
        Backoff::new(Duration::from_millis(100), Duration::from_millis(200)).unwrap(),
    )
    .await;
    h.create_secret().await;
    h.create("stop-copy", 20).await;
    h.wait_for("stop-copy", "a retry", |s| s.failed_attempts >= 2)
        .await;
    h.cics()
        .delete("stop-copy", &DeleteParams::default())
        .await
        .unwrap();
    // Let whatever was in flight finish.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let sent = h.sent();
    let writes = h.api.count(Verb::Patch, "copyimagecancellations", "status");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        h.sent(),
        sent,
        "nothing more is sent for a deleted resource"
    );
    assert_eq!(
        h.api.count(Verb::Patch, "copyimagecancellations", "status"),
        writes,
        "no status writes loop on a deleted resource"
    );
    assert!(
        !h.run.as_ref().unwrap().is_finished(),
        "the controller keeps running"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_watched_namespace_is_handled() {
    let health = Health::new();
    let options = WatchOptions {
        namespaces: vec!["watched".into()],
        selector: Some("team=images".into()),
        max_concurrent_reconciles: 2,
        instance: None,
        health: Some(health.clone()),
        ..WatchOptions::default()
    };
    let h = Harness::start_with_operator_key(options).await;
    let client = h.client.clone();
    let make = |ns: &str, name: &str, labelled: bool| {
        let mut cic = CopyImageCancellation::new(
            name,
            CopyImageCancellationSpec {
                region_id: REGION.into(),
                image_id: IMAGE.into(),
                credentials_secret_ref: None,
                backoff_limit: 6,
                active_deadline_seconds: None,
            },
        );
        cic.metadata.namespace = Some(ns.into());
        if labelled {
            cic.metadata.labels =
                Some(BTreeMap::from([("team".to_string(), "images".to_string())]));
        }
        cic
    };
    for (ns, name, labelled) in [
        ("other", "ignored-ns", true),
        ("watched", "ignored-label", false),
        ("watched", "mine", true),
    ] {
        Api::<CopyImageCancellation>::namespaced(client.clone(), ns)
            .create(&PostParams::default(), &make(ns, name, labelled))
            .await
            .unwrap();
    }
    let watched: Api<CopyImageCancellation> = Api::namespaced(client.clone(), "watched");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let s = watched.get("mine").await.unwrap().status;
        if s.as_ref().is_some_and(finished) {
            assert_eq!(
                s.unwrap().phase,
                Some(Phase::Succeeded),
                "operator credentials were used"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "mine never finished"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(watched.get("ignored-label").await.unwrap().status.is_none());
    let other: Api<CopyImageCancellation> = Api::namespaced(client.clone(), "other");
    assert!(other.get("ignored-ns").await.unwrap().status.is_none());
    assert_eq!(
        other.get("ignored-ns").await.unwrap().name_any(),
        "ignored-ns"
    );
    // Both caches of the one watched namespace have synced.
    within(async {
        while health.readiness().is_err() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    h.stop().await;
    assert_eq!(health.readiness(), Err("shutting down".into()));
    assert_eq!(
        health.liveness(),
        Ok(()),
        "a requested stop is not a broken loop"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metadata_change_during_the_request_does_not_lose_the_outcome() {
    let (h, _) = Harness::with_request_in_flight().await;
    // The resourceVersion moves while the request is in flight.
    h.touch("stop-copy", "mid-flight").await;
    h.assert_succeeded_with_one_request("").await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resource_recreated_under_the_same_name_never_inherits_an_outcome() {
    let (h, first) = Harness::with_request_in_flight().await;
    assert_eq!(first.attempt_history[0].outcome, "Unknown");
    let old_uid = h.cics().get("stop-copy").await.unwrap().uid();
    h.cics()
        .delete("stop-copy", &DeleteParams::default())
        .await
        .unwrap();
    h.create("stop-copy", 6).await;
    assert_ne!(h.cics().get("stop-copy").await.unwrap().uid(), old_uid);

    // The first request cancels the copy; the new resource sends its own
    // request, which finds the image gone.
    let s = h.wait_for("stop-copy", "a final answer", finished).await;
    assert_eq!(s.phase, Some(Phase::Failed), "{s:#?}");
    assert_eq!(s.attempts, 1);
    assert_eq!(s.error_code.as_deref(), Some("InvalidImageId.NotFound"));
    assert_eq!(h.sent(), 2);
    h.stop().await;
}

async fn http_status(addr: &str, path: &str) -> Option<u16> {
    common::http_get(addr, path).await.map(|(code, _)| code)
}

/// The real binary: `run` with KUBECONFIG pointing at the sandbox API, the
/// admin server's probes, and SIGTERM.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_run_subcommand_serves_probes_cancels_and_stops_on_sigterm() {
    let h = Harness::idle(copying()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut command = h.run_command(dir.path());
    command.args(["--admin-addr", "127.0.0.1:0"]).args([
        "--retry-base-delay",
        "10ms",
        "--retry-max-delay",
        "50ms",
        "--log-format",
        "json",
    ]);
    let mut run = FollowedRun::spawn(command).await;
    let admin = run.admin.clone();
    assert_eq!(http_status(&admin, "/livez").await, Some(200));
    within(async {
        while http_status(&admin, "/readyz").await != Some(200) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;

    h.create_secret().await;
    h.create("stop-copy", 6).await;
    h.assert_succeeded_with_one_request("").await;

    let (code, metrics) = common::http_get(&admin, "/metrics").await.unwrap();
    assert_eq!(code, 200);
    common::text::assert_lines(
        &metrics,
        &[
            "copyimage_canceller_cancel_requests_total{class=\"success\"} 1",
            "copyimage_canceller_cancel_request_duration_seconds_count 1",
        ],
    );
    assert!(metrics.contains("copyimage_canceller_status_writes_total{result=\"applied\"}"));
    assert!(!metrics.contains(KEY_SECRET) && !metrics.contains("stop-copy"));

    let pid = run.child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let exit = within(run.child.wait()).await.unwrap();
    assert!(exit.success(), "run exited with {exit:?}");
    let log = run.log();
    assert!(log.contains("SIGTERM"), "{log}");
    assert!(!log.contains(KEY_SECRET), "the secret reached the log");
    assert!(log.contains("\"level\":\"INFO\""), "JSON log lines: {log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_secret_access_resources_naming_a_secret_wait_and_say_why() {
    let health = Health::new();
    let options = WatchOptions {
        max_concurrent_reconciles: 2,
        health: Some(health.clone()),
        without_secrets: true,
        ..WatchOptions::default()
    };
    let h = Harness::start_with_operator_key(options).await;
    h.create_secret().await;
    h.create("names-a-secret", 6).await;
    let s = h.wait_awaiting_credentials("names-a-secret").await;
    let message = &condition(&s, "Reconciling").message;
    assert!(
        message.contains("--per-resource-secrets=false"),
        "{message}"
    );
    assert!(message.contains("images/alibaba-credentials"), "{message}");
    assert_eq!(h.sent(), 0);
    // Only the resource cache has to sync (readiness is polled, so give it a moment).
    within(async {
        while health.readiness().is_err() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    for verb in [Verb::List, Verb::Watch, Verb::Get] {
        let reads = h
            .api
            .requests()
            .into_iter()
            .filter(|r| r.verb == verb && r.resource == "secrets" && r.field_manager.is_none())
            .count();
        assert_eq!(reads, 0, "{verb:?} on Secrets");
    }
    h.stop().await;
}

/// The real binary: `run --signature-version v3` signs its CancelCopyImage
/// with ACS3-HMAC-SHA256, and the simulator's own V3 check accepts it.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_run_subcommand_signs_with_v3_when_asked() {
    let h = Harness::idle(copying()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut child = h
        .run_command(dir.path())
        .args(["--signature-version", "v3"])
        .args(["--retry-base-delay", "10ms", "--retry-max-delay", "50ms"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    h.create_secret().await;
    h.create("stop-copy-v3", 6).await;
    let s = h.wait_for("stop-copy-v3", "Succeeded", finished).await;
    assert_eq!((s.phase, s.attempts), (Some(Phase::Succeeded), 1));
    let log = h.sim.requests();
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0].signature_valid, Some(true));
    assert_eq!(log[0].signature_method.as_deref(), Some("ACS3-HMAC-SHA256"));
    child.kill().await.unwrap();
}
