//! End-to-end harness: the real `copyimage-canceller run` binary against a
//! Kubernetes API (the in-process sandbox, or a real cluster when asked) with
//! the ECS simulator standing in for Alibaba Cloud, plus helpers that read
//! what a user would read (status, conditions, Events, the simulator's log).
#![allow(dead_code)] // NB: each test crate uses a different part of the harness.

pub mod ecs;
pub mod text;
pub mod tool;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use copyimage_canceller::resource::{
    CopyImageCancellation, CopyImageCancellationSpec, CredentialsSecretRef,
};
use copyimage_stand_ins::AccessKey;
use copyimage_stand_ins::ecs_simulator::{
    EcsSimulator, FaultCount, FaultKind, FaultSpec, FaultTarget, ImageState, RequestRecord,
    SimulatorConfig, SimulatorHandle,
};
use copyimage_stand_ins::kube_api::{
    KubeApi, KubeApiConfig, KubeApiHandle, RequestRecord as KubeRequestRecord,
};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{CustomResourceExt, ResourceExt};

/// How long a test waits for the controller to get somewhere. Generous: the
/// controller's own delays are tens of milliseconds, CI machines are slow.
pub const PATIENCE: Duration = Duration::from_secs(60);
/// How often waiting helpers look again.
const POLL: Duration = Duration::from_millis(100);

/// The operator's own key pair (STS, so the token's secrecy is tested too).
pub const OPERATOR_KEY_ID: &str = "LTAI5tE2eOperatorKey";
/// The operator's AccessKey secret: must never appear in any log.
pub const OPERATOR_KEY_SECRET: &str = "e2eOperatorSecretDoNotLeak9f3a";
/// The operator's STS token (Base64, as the simulator checks): must never be logged.
pub const OPERATOR_TOKEN: &str = "ZTJlT3BlcmF0b3JUb2tlbkRvTm90TGVhaw==";

/// The operator's key as the simulator knows it.
pub fn operator_key() -> AccessKey {
    AccessKey::new(
        OPERATOR_KEY_ID,
        OPERATOR_KEY_SECRET,
        Some(OPERATOR_TOKEN.to_string()),
    )
}

/// `key` as the operator holds it (the stand-ins have their own key type).
pub fn operator_side(key: &AccessKey) -> copyimage_canceller::credentials::AccessKey {
    copyimage_canceller::credentials::AccessKey::new(
        key.id.clone(),
        key.secret(),
        key.security_token().map(str::to_owned),
    )
}

/// The Kubernetes side of a test.
enum Cluster {
    /// The in-process API; the controller reaches it through a kubeconfig we write.
    Sandbox(KubeApiHandle),
    /// The cluster `KUBECONFIG` points at; the test owns one fresh namespace.
    Real,
}

/// One scenario's world: API, simulator, and the controller process.
pub struct Env {
    cluster: Cluster,
    /// A client for the API the controller watches.
    pub client: kube::Client,
    /// The ECS stand-in.
    pub sim: SimulatorHandle,
    /// The namespace resources are created in.
    pub namespace: String,
    dir: tempfile::TempDir,
    kubeconfig: Option<PathBuf>,
    controller: Option<tokio::process::Child>,
    starts: usize,
    /// `run` flags before `extra_args`: short retry delays and debug logs unless a test
    /// chose its own ([`Env::sandbox_with`]).
    base_args: Vec<String>,
    extra_args: Vec<String>,
}

/// `run` flags every scenario gets unless it chose its own: short retry delays, debug logs.
fn default_controller_args() -> Vec<String> {
    [
        "--retry-base-delay",
        "50ms",
        "--retry-max-delay",
        "200ms",
        "--log-level",
        "debug",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// How [`Env::sandbox_with`] sets up its world, for scenarios the defaults do not fit
/// (large request logs, quieter logs, API tunables).
pub struct SandboxOptions {
    /// The in-process API's tunables.
    pub api: KubeApiConfig,
    /// The simulator; it must accept [`operator_key`].
    pub simulator: SimulatorConfig,
    /// `run` flags replacing the default retry delays and log level.
    pub controller_args: Vec<String>,
}

impl Default for SandboxOptions {
    /// What [`Env::sandbox`] uses.
    fn default() -> Self {
        Self {
            api: KubeApiConfig::default(),
            simulator: SimulatorConfig::new([operator_key()]),
            controller_args: default_controller_args(),
        }
    }
}

/// The in-process API with our CRD, the harness's client for it, and a temp
/// dir holding its kubeconfig.
async fn sandbox_api(
    config: KubeApiConfig,
) -> (KubeApiHandle, kube::Client, tempfile::TempDir, PathBuf) {
    let api = KubeApi::start_with(vec![CopyImageCancellation::crd()], config)
        .await
        .expect("start the in-process Kubernetes API");
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig)
        .expect("write the kubeconfig");
    let client = harness_client(&api);
    (api, client, dir, kubeconfig)
}

impl Env {
    /// The in-process API with our CRD, the simulator accepting the operator
    /// key, and the controller started.
    pub async fn sandbox() -> Env {
        Self::sandbox_with_args(&[]).await
    }

    /// [`Env::sandbox`], with extra `run` flags.
    pub async fn sandbox_with_args(extra_args: &[&str]) -> Env {
        let mut env = Self::sandbox_not_started(extra_args).await;
        env.start_controller();
        env
    }

    /// [`Env::sandbox_with_args`] without starting the controller (so faults
    /// can be set up for its start-up): call [`Env::start_controller`].
    pub async fn sandbox_not_started(extra_args: &[&str]) -> Env {
        let mut env = Self::sandbox_with(SandboxOptions::default()).await;
        env.extra_args = extra_args.iter().map(|s| s.to_string()).collect();
        env
    }

    /// The in-process API and the simulator as `options` say, resources in namespace
    /// `images`; the controller is NOT started (call [`Env::start_controller`]), so a
    /// scenario can script faults and create resources first.
    pub async fn sandbox_with(options: SandboxOptions) -> Env {
        let (api, client, dir, kubeconfig) = sandbox_api(options.api).await;
        let sim = EcsSimulator::start(options.simulator)
            .await
            .expect("start the ECS simulator");
        Env {
            cluster: Cluster::Sandbox(api),
            client,
            sim,
            namespace: "images".to_string(),
            dir,
            kubeconfig: Some(kubeconfig),
            controller: None,
            starts: 0,
            base_args: options.controller_args,
            extra_args: Vec::new(),
        }
    }

    /// The cluster `KUBECONFIG` points at, when `COPYIMAGE_CANCELLER_REAL_CLUSTER=1`
    /// is set as well; `None` (after printing why) otherwise. Installs the
    /// CRD, creates a fresh namespace and starts the controller watching it.
    pub async fn real_cluster(test: &str) -> Option<Env> {
        let opted_in = std::env::var("COPYIMAGE_CANCELLER_REAL_CLUSTER").as_deref() == Ok("1");
        let kubeconfig = std::env::var("KUBECONFIG").ok().filter(|k| !k.is_empty());
        if !opted_in || kubeconfig.is_none() {
            println!(
                "{test}: skipped: set COPYIMAGE_CANCELLER_REAL_CLUSTER=1 (and KUBECONFIG) to run it against a real cluster"
            );
            return None;
        }
        let client = kube::Client::try_default()
            .await
            .expect("a kube client from KUBECONFIG");
        install_crd(&client).await;
        let dir = tempfile::tempdir().expect("temp dir");
        Some(Self::in_fresh_namespace(Cluster::Real, client, dir, None).await)
    }

    /// The in-process API set up the way [`Env::real_cluster`] sets up a
    /// cluster (a fresh Namespace, the controller with `--watch-namespace`):
    /// a rehearsal of the real-cluster scenarios, not a substitute for them.
    pub async fn sandbox_like_a_cluster() -> Env {
        let (api, client, dir, kubeconfig) = sandbox_api(KubeApiConfig::default()).await;
        Self::in_fresh_namespace(Cluster::Sandbox(api), client, dir, Some(kubeconfig)).await
    }

    async fn in_fresh_namespace(
        cluster: Cluster,
        client: kube::Client,
        dir: tempfile::TempDir,
        kubeconfig: Option<PathBuf>,
    ) -> Env {
        let namespace = format!(
            "cic-e2e-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..10]
        );
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let mut ns = Namespace::default();
        ns.metadata.name = Some(namespace.clone());
        namespaces
            .create(&PostParams::default(), &ns)
            .await
            .expect("create the test namespace");
        let sim = start_simulator().await;
        let mut env = Env {
            cluster,
            client,
            sim,
            extra_args: vec!["--watch-namespace".into(), namespace.clone()],
            namespace,
            dir,
            kubeconfig,
            controller: None,
            starts: 0,
            base_args: default_controller_args(),
        };
        env.start_controller();
        env
    }

    /// The in-process API, for fault injection and request counts.
    pub fn sandbox_api(&self) -> &KubeApiHandle {
        match &self.cluster {
            Cluster::Sandbox(api) => api,
            Cluster::Real => panic!("this scenario needs the in-process API"),
        }
    }

    /// Spawns `copyimage-canceller run` with short retry delays, its stderr
    /// going to `controller-N.log` in the test's directory.
    pub fn start_controller(&mut self) {
        assert!(
            self.controller.is_none(),
            "the controller is already running"
        );
        self.starts += 1;
        let cmd = self.controller_command(&self.extra_args, &self.log_path(self.starts));
        self.controller = Some(spawn(cmd));
    }

    /// Spawns another `run` against the same API and simulator (a second replica),
    /// started like [`Env::start_controller`]'s but named `pod_name` (`POD_NAME`)
    /// and with `args` instead of the scenario's extra flags; its stderr goes to
    /// [`Env::replica_log`].
    pub fn spawn_replica(&self, pod_name: &str, args: &[&str]) -> tokio::process::Child {
        let log = self.dir.path().join(format!("{pod_name}.log"));
        let mut cmd = self.controller_command(args, &log);
        cmd.env("POD_NAME", pod_name);
        spawn(cmd)
    }

    /// Everything replica `pod_name` ([`Env::spawn_replica`]) wrote on stderr so far.
    pub fn replica_log(&self, pod_name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{pod_name}.log"))).unwrap_or_default()
    }

    /// `run` with the operator's keys, `--ecs-endpoint` the simulator, the base
    /// flags then `args`, stderr to a new file at `log`.
    fn controller_command(
        &self,
        args: &[impl AsRef<std::ffi::OsStr>],
        log: &Path,
    ) -> tokio::process::Command {
        let log = std::fs::File::create(log).expect("create the controller log");
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_copyimage-canceller"));
        cmd.arg("run")
            .args(["--ecs-endpoint", &self.sim.endpoint()])
            .args(&self.base_args)
            .args(args)
            .env("ALIBABA_CLOUD_ACCESS_KEY_ID", OPERATOR_KEY_ID)
            .env("ALIBABA_CLOUD_ACCESS_KEY_SECRET", OPERATOR_KEY_SECRET)
            .env("ALIBABA_CLOUD_SECURITY_TOKEN", OPERATOR_TOKEN)
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        if let Some(kubeconfig) = &self.kubeconfig {
            cmd.env("KUBECONFIG", kubeconfig);
        }
        cmd
    }

    /// Kills the controller with SIGKILL (no chance to record anything) and waits for it to die.
    pub async fn kill_controller(&mut self) {
        let mut child = self.controller.take().expect("the controller is running");
        child.kill().await.expect("SIGKILL the controller");
    }

    /// Sends SIGTERM to the controller and waits (at most [`PATIENCE`]) for
    /// it to exit on its own; returns its exit status.
    #[cfg(unix)]
    pub async fn terminate_controller(&mut self) -> std::process::ExitStatus {
        let pid = self.controller_pid().to_string();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill -TERM");
        assert!(sent.success(), "kill -TERM {pid}");
        let child = self.controller.as_mut().expect("the controller is running");
        let exit = tokio::time::timeout(PATIENCE, child.wait()).await;
        match exit {
            Ok(status) => {
                self.controller = None;
                status.expect("wait for the controller")
            }
            Err(_) => self.fail(&format!("still running {PATIENCE:?} after SIGTERM")),
        }
    }

    /// The controller process's id (to send it signals).
    pub fn controller_pid(&self) -> u32 {
        self.controller
            .as_ref()
            .and_then(|child| child.id())
            .expect("the controller is running")
    }

    /// If the controller process has exited on its own, forgets it (so it can be
    /// started again) and returns how it ended.
    pub fn take_exited(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.controller.as_mut()?.try_wait().ok()??;
        self.controller = None;
        Some(status)
    }

    /// How many times the controller was started.
    pub fn controller_starts(&self) -> usize {
        self.starts
    }

    /// Whether the controller process is still running.
    pub fn controller_alive(&mut self) -> bool {
        match &mut self.controller {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    fn log_path(&self, start: usize) -> PathBuf {
        self.dir.path().join(format!("controller-{start}.log"))
    }

    /// Everything the controller processes wrote on stderr so far.
    pub fn controller_log(&self) -> String {
        (1..=self.starts)
            .map(|n| std::fs::read_to_string(self.log_path(n)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Where the test's files (kubeconfig, logs) live.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The resources' API in the test namespace.
    pub fn cics(&self) -> Api<CopyImageCancellation> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Creates a resource (admission may refuse it: the error is returned).
    pub async fn try_create(
        &self,
        cic: &CopyImageCancellation,
    ) -> Result<CopyImageCancellation, kube::Error> {
        self.cics().create(&PostParams::default(), cic).await
    }

    /// Creates a resource that must be admitted.
    pub async fn create(&self, cic: &CopyImageCancellation) -> CopyImageCancellation {
        self.try_create(cic)
            .await
            .unwrap_or_else(|e| panic!("creating {}: {e}", cic.name_any()))
    }

    /// Deletes a resource.
    pub async fn delete(&self, name: &str) {
        self.cics()
            .delete(name, &DeleteParams::default())
            .await
            .unwrap_or_else(|e| panic!("deleting {name}: {e}"));
    }

    /// Creates or replaces Secret `name` holding `key` in the test namespace.
    pub async fn put_secret(&self, name: &str, key: &AccessKey) {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        let exists = secrets
            .get_opt(name)
            .await
            .expect("look the Secret up")
            .is_some();
        let secret = key_secret(name, &self.namespace, key);
        if exists {
            secrets
                .replace(name, &PostParams::default(), &secret)
                .await
                .expect("replace the Secret");
        } else {
            secrets
                .create(&PostParams::default(), &secret)
                .await
                .expect("create the Secret");
        }
    }

    /// Reads a resource now.
    pub async fn get(&self, name: &str) -> CopyImageCancellation {
        self.cics()
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("reading {name}: {e}"))
    }

    /// Polls `name` until `done` holds, panicking with the last object and
    /// the controller's log after [`PATIENCE`].
    pub async fn wait_for(
        &self,
        name: &str,
        what: &str,
        done: impl Fn(&CopyImageCancellation) -> bool,
    ) -> CopyImageCancellation {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let mut last = None;
        loop {
            if let Ok(Some(cic)) = self.cics().get_opt(name).await {
                if done(&cic) {
                    return cic;
                }
                last = Some(cic);
            }
            if tokio::time::Instant::now() > deadline {
                self.fail(&format!(
                    "{name}: not {what} after {PATIENCE:?}; last seen:\n{}",
                    last.map(|c| yaml(&c)).unwrap_or_else(|| "(nothing)".into())
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until `name` is finished (phase Succeeded or Failed).
    pub async fn wait_finished(&self, name: &str) -> CopyImageCancellation {
        self.wait_for(name, "finished", |c| {
            matches!(phase(c).as_deref(), Some("Succeeded" | "Failed"))
        })
        .await
    }

    /// Polls `name` until its Reconciling condition is True for AwaitingCredentials.
    pub async fn wait_awaiting_credentials(&self, name: &str) -> CopyImageCancellation {
        self.wait_for(name, "AwaitingCredentials", |c| {
            cond(c, "Reconciling") == Some(("True".into(), "AwaitingCredentials".into()))
        })
        .await
    }

    /// Has the simulator accept `team`, and creates resource `name` cancelling
    /// `image_id` (a copy in progress) with the keys of Secret `team-keys`, which
    /// is not created here.
    pub async fn create_with_team_secret(&self, name: &str, image_id: &str, team: &AccessKey) {
        self.sim.add_key(team.clone());
        self.copying(image_id);
        self.create(&cic_with_secret(name, image_id, "team-keys"))
            .await;
    }

    /// Waits until `name` is final, and asserts that it Succeeded with exactly one
    /// request for `image_id`, signed with `key`.
    pub async fn assert_succeeded_with_key(
        &self,
        name: &str,
        image_id: &str,
        key: &AccessKey,
    ) -> CopyImageCancellation {
        let done = self.wait_finished(name).await;
        assert_phase(&done, "Succeeded");
        let requests = self.ecs_requests(image_id);
        assert_eq!(requests.len(), 1, "{name}: {requests:#?}");
        assert_eq!(requests[0].access_key_id.as_deref(), Some(key.id.as_str()));
        done
    }

    /// Polls until `check` holds (any condition outside a resource).
    pub async fn eventually(&self, what: &str, check: impl Fn(&Env) -> bool) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while !check(self) {
            if tokio::time::Instant::now() > deadline {
                self.fail(&format!("not {what} after {PATIENCE:?}"));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Polls until `check()` resolves to true (for checks that read the API).
    pub async fn eventually_async<F, Fut>(&self, what: &str, check: F)
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while !check().await {
            if tokio::time::Instant::now() > deadline {
                self.fail(&format!("not {what} after {PATIENCE:?}"));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until `log()` (text format) names an admin server address other than
    /// `skip` (the previous start's, after a restart), and returns it.
    pub async fn wait_admin_addr(&self, log: impl Fn() -> String, skip: &str) -> String {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Some(addr) = logged_admin_addr(&log()).filter(|a| a != skip) {
                return addr;
            }
            if tokio::time::Instant::now() > deadline {
                self.fail("no admin server address in the log");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Panics with `message`, the simulator's log and the tail of the controller's log.
    pub fn fail(&self, message: &str) -> ! {
        let log = self.controller_log();
        let tail: Vec<&str> = log.lines().rev().take(60).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        panic!(
            "{message}\n--- ECS simulator requests ---\n{:#?}\n--- controller log (tail) ---\n{}",
            self.sim
                .requests()
                .iter()
                .map(|r| format!(
                    "{} {} {} {}",
                    r.image_id.as_deref().unwrap_or("-"),
                    r.access_key_id.as_deref().unwrap_or("-"),
                    r.code,
                    r.request_id.as_deref().unwrap_or("-")
                ))
                .collect::<Vec<_>>(),
            tail.join("\n")
        );
    }

    /// Requests the in-process API answered for anyone but the test itself
    /// (the controller, in practice), oldest first.
    pub fn controller_requests(&self) -> Vec<KubeRequestRecord> {
        self.sandbox_api()
            .requests()
            .into_iter()
            .filter(|r| r.user_agent.as_deref() != Some(HARNESS_USER_AGENT))
            .collect()
    }

    /// CancelCopyImage requests the simulator received for `image_id`, oldest first.
    pub fn ecs_requests(&self, image_id: &str) -> Vec<RequestRecord> {
        self.sim
            .requests()
            .into_iter()
            .filter(|r| {
                r.action.as_deref() == Some("CancelCopyImage")
                    && r.image_id.as_deref() == Some(image_id)
            })
            .collect()
    }

    /// Makes `image_id` a copy in progress (CancelCopyImage will succeed).
    pub fn copying(&self, image_id: &str) {
        self.sim.set_image(image_id, ImageState::Copying);
    }

    /// Scripts `count` faults of `kind` for `image_id`.
    pub fn fault(&self, image_id: &str, kind: FaultKind, count: FaultCount) {
        self.sim.add_fault(FaultSpec::new(
            FaultTarget::Image(image_id.to_string()),
            kind,
            count,
        ));
    }

    /// Events published about resource `name`, oldest first.
    pub async fn events_for(&self, name: &str) -> Vec<Event> {
        let events: Api<Event> = Api::namespaced(self.client.clone(), &self.namespace);
        let mut list: Vec<Event> = events
            .list(&ListParams::default())
            .await
            .expect("list Events")
            .items
            .into_iter()
            .filter(|e| {
                e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
                    && e.regarding.as_ref().and_then(|r| r.kind.as_deref())
                        == Some("CopyImageCancellation")
            })
            .collect();
        list.sort_by_key(|e| e.metadata.creation_timestamp.clone().map(|t| t.0));
        list
    }

    /// Waits until an Event with `reason` was published about `name`, and returns it.
    pub async fn wait_event(&self, name: &str, reason: &str) -> Event {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Some(event) = self
                .events_for(name)
                .await
                .into_iter()
                .find(|e| e.reason.as_deref() == Some(reason))
            {
                return event;
            }
            if tokio::time::Instant::now() > deadline {
                let seen: Vec<_> = self
                    .events_for(name)
                    .await
                    .into_iter()
                    .map(|e| (e.type_, e.reason, e.note))
                    .collect();
                self.fail(&format!(
                    "{name}: no Event with reason {reason} after {PATIENCE:?}; seen: {seen:?}"
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Deletes the test namespace of a real cluster (the sandbox just stops).
    pub async fn cleanup(mut self) {
        if let Some(mut child) = self.controller.take() {
            let _ = child.kill().await;
        }
        if matches!(self.cluster, Cluster::Real) {
            let namespaces: Api<Namespace> = Api::all(self.client.clone());
            if let Err(err) = namespaces
                .delete(&self.namespace, &DeleteParams::background())
                .await
            {
                eprintln!("could not delete namespace {}: {err}", self.namespace);
            }
        }
    }
}

fn spawn(mut cmd: tokio::process::Command) -> tokio::process::Child {
    cmd.spawn().expect("spawn copyimage-canceller run")
}

/// `User-Agent` of the test's own requests, so that request counts can leave them out.
pub const HARNESS_USER_AGENT: &str = "copyimage-canceller-e2e-harness";

/// A client for the sandbox API whose requests carry [`HARNESS_USER_AGENT`].
fn harness_client(api: &KubeApiHandle) -> kube::Client {
    let mut config = kube::Config::new(api.url().parse().expect("the sandbox URL"));
    config.default_namespace = "default".into();
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_static(HARNESS_USER_AGENT),
    ));
    kube::Client::try_from(config).expect("kube client for the sandbox")
}

/// Starts the simulator accepting the operator key, on loopback.
async fn start_simulator() -> SimulatorHandle {
    EcsSimulator::start(SimulatorConfig::new([operator_key()]))
        .await
        .expect("start the ECS simulator")
}

/// Installs (server-side apply) our CRD on a real cluster and waits until it is served.
async fn install_crd(client: &kube::Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = CopyImageCancellation::crd();
    let name = crd.name_any();
    crds.patch(
        &name,
        &PatchParams::apply("copyimage-canceller-e2e").force(),
        &Patch::Apply(&crd),
    )
    .await
    .expect("install the CRD (needs cluster-admin-like rights)");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let established = crds
            .get(&name)
            .await
            .ok()
            .and_then(|c| c.status)
            .and_then(|s| s.conditions)
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
            });
        if established {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the CRD is not Established"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Secret `name` in `namespace` holding `key` the way resources reference keys
/// (`accessKeyId`, `accessKeySecret`, and `securityToken` for an STS key).
pub fn key_secret(name: &str, namespace: &str, key: &AccessKey) -> Secret {
    let mut data = std::collections::BTreeMap::from([
        ("accessKeyId".to_string(), key.id.clone()),
        ("accessKeySecret".to_string(), key.secret().to_string()),
    ]);
    if let Some(token) = key.security_token() {
        data.insert("securityToken".to_string(), token.to_string());
    }
    Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        // NB: data, not stringData: the sandbox may not turn stringData into data.
        data: Some(
            data.into_iter()
                .map(|(k, v)| (k, k8s_openapi::ByteString(v.into_bytes())))
                .collect(),
        ),
        ..Default::default()
    }
}

/// A resource for `image_id` in cn-hangzhou with the operator's credentials.
pub fn cic(name: &str, image_id: &str) -> CopyImageCancellation {
    CopyImageCancellation::new(
        name,
        CopyImageCancellationSpec {
            region_id: "cn-hangzhou".into(),
            image_id: image_id.into(),
            credentials_secret_ref: None,
            backoff_limit: 6,
            active_deadline_seconds: None,
        },
    )
}

/// [`cic`] signing with the keys in Secret `secret`.
pub fn cic_with_secret(name: &str, image_id: &str, secret: &str) -> CopyImageCancellation {
    let mut r = cic(name, image_id);
    r.spec.credentials_secret_ref = Some(CredentialsSecretRef {
        name: secret.into(),
    });
    r
}

/// `status.phase` as text.
pub fn phase(cic: &CopyImageCancellation) -> Option<String> {
    cic.status
        .as_ref()
        .and_then(|s| s.phase)
        .map(|p| format!("{p:?}"))
}

/// The condition of type `type_`, if set.
pub fn condition<'a>(cic: &'a CopyImageCancellation, type_: &str) -> Option<&'a Condition> {
    cic.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}

/// `(status, reason)` of condition `type_`, for compact assertions.
pub fn cond(cic: &CopyImageCancellation, type_: &str) -> Option<(String, String)> {
    condition(cic, type_).map(|c| (c.status.clone(), c.reason.clone()))
}

/// The status (True, False, Unknown) of condition `type_`.
pub fn cond_status(cic: &CopyImageCancellation, type_: &str) -> Option<String> {
    condition(cic, type_).map(|c| c.status.clone())
}

/// `attemptHistory` outcomes, oldest first.
pub fn outcomes(cic: &CopyImageCancellation) -> Vec<String> {
    cic.status
        .as_ref()
        .map(|s| {
            s.attempt_history
                .iter()
                .map(|a| a.outcome.clone())
                .collect()
        })
        .unwrap_or_default()
}

/// The resource as `kubectl get -o yaml` would show it (without managedFields).
pub fn yaml(cic: &CopyImageCancellation) -> String {
    let mut cic = cic.clone();
    cic.metadata.managed_fields = None;
    serde_yaml_ng::to_string(&cic).unwrap_or_else(|e| format!("(unprintable: {e})"))
}

/// Asserts that `status.phase` is `want`, showing the resource when it is not.
#[track_caller]
pub fn assert_phase(cic: &CopyImageCancellation, want: &str) {
    assert_eq!(phase(cic).as_deref(), Some(want), "{}", yaml(cic));
}

/// Asserts the common shape of a finished resource: every condition carries
/// the current generation, and exactly one of Ready / Stalled is True.
pub fn assert_final_conditions(cic: &CopyImageCancellation) {
    let status = cic.status.as_ref().expect("status");
    assert_eq!(
        status.observed_generation, cic.metadata.generation,
        "observedGeneration"
    );
    for c in &status.conditions {
        assert_eq!(
            c.observed_generation, cic.metadata.generation,
            "condition {} observedGeneration",
            c.type_
        );
    }
    assert_eq!(
        cond(cic, "Reconciling").map(|c| c.0).as_deref(),
        Some("False"),
        "Reconciling is False once finished:\n{}",
        yaml(cic)
    );
    assert!(status.completion_time.is_some(), "completionTime set");
}

/// The admin address the last start of `run` logged (text format: `addr=...` on
/// the admin server's line).
fn logged_admin_addr(log: &str) -> Option<String> {
    log.lines()
        .filter(|l| l.contains("admin server"))
        .filter_map(|l| l.split("addr=").nth(1))
        .map(|rest| {
            rest.split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned()
        })
        .next_back()
}

/// `future`'s output; panics if it takes longer than [`PATIENCE`] (a hung test, never a
/// performance assertion).
pub async fn within<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, future)
        .await
        .unwrap_or_else(|_| panic!("not finished after {PATIENCE:?}"))
}

/// A spawned `run` (with `--log-format json` and `--admin-addr`) whose stderr the
/// test follows: started once the admin server logged the address it listens on.
pub struct FollowedRun {
    /// The process (to signal or wait for).
    pub child: tokio::process::Child,
    /// Where the admin server listens (`host:port`).
    pub admin: String,
    log_rx: tokio::sync::mpsc::UnboundedReceiver<String>,
    log: Vec<String>,
}

impl FollowedRun {
    /// Spawns `command` with stderr piped and follows its JSON log lines until one
    /// carries the admin server's `addr`; panics if `run` exits first or takes longer
    /// than [`PATIENCE`].
    pub async fn spawn(mut command: tokio::process::Command) -> Self {
        use tokio::io::AsyncBufReadExt;

        let mut child = command
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn copyimage-canceller run");
        let mut lines = tokio::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
        let (log_tx, mut log_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if log_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut log = Vec::new();
        let admin = within(async {
            loop {
                let line = log_rx
                    .recv()
                    .await
                    .expect("run exited before starting its admin server");
                log.push(line.clone());
                if let Ok(entry) = serde_json::from_str::<serde_json::Value>(&line)
                    && let Some(addr) = entry["fields"]["addr"].as_str()
                {
                    break addr.to_string();
                }
            }
        })
        .await;
        Self {
            child,
            admin,
            log_rx,
            log,
        }
    }

    /// Every line `run` logged so far.
    pub fn log(&mut self) -> String {
        while let Ok(line) = self.log_rx.try_recv() {
            self.log.push(line);
        }
        self.log.join("\n")
    }

    /// Kills the process (SIGKILL) and returns everything it logged.
    pub async fn kill(mut self) -> String {
        self.child.start_kill().expect("kill run");
        within(self.child.wait()).await.expect("wait for run");
        self.log()
    }
}

/// `GET path` on `addr` over plain HTTP/1.0 (the admin server): the status
/// code and the body; `None` while nothing answers.
pub async fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.ok()?;
    let code = answer.split_whitespace().nth(1)?.parse().ok()?;
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((code, body))
}

/// The `CancelCopyImage` calls among the simulator's `requests`, in order.
pub fn cancel_requests(requests: impl IntoIterator<Item = RequestRecord>) -> Vec<RequestRecord> {
    requests
        .into_iter()
        .filter(|r| r.action.as_deref() == Some("CancelCopyImage"))
        .collect()
}
