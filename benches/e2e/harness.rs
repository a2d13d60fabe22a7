//! The end-to-end benchmark's core, shared by `benches/e2e/main.rs` and the
//! smoke test `tests/bench_smoke.rs`: the in-process Kubernetes API and the
//! ECS simulator in this process, the real `copyimage-canceller run` as a
//! child process (so its memory is its own), N resources created at once, and
//! what came of them counted from the API's and the simulator's logs.
//!
//! ```text
//!  bench process                                   child process
//!  ┌──────────────────────────────────────┐        ┌─────────────────────┐
//!  │ creates ──▶ KubeApi (request log) ◀──┼─watch──┤ copyimage-canceller │
//!  │ watcher ◀──┘   ▲                     │ status │ run                 │
//!  │ (Instant when  └─────────────────────┼────────┤  (/proc/PID/status: │
//!  │  final status is seen)               │        │   VmRSS, VmHWM)     │
//!  │ EcsSimulator (request log) ◀─────────┼────────┤                     │
//!  └──────────────────────────────────────┘ Cancel └─────────────────────┘
//! ```
//!
//! Latencies are taken with `Instant`s in this process: from just before a
//! resource's create request is sent to the moment this process's watch sees
//! its final status (the API's own timestamps have one-second precision).
#![allow(dead_code)] // NB: the bench and the smoke test each use a different part.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use copyimage_canceller::credentials::AccessKey;
use copyimage_canceller::ecs::CancelOutcome;
use copyimage_canceller::ecs::client::{EcsClient, EcsClientConfig};
use copyimage_canceller::resource::{CopyImageCancellation, CopyImageCancellationSpec, Phase};
use copyimage_stand_ins::ecs_simulator::{
    EcsSimulator, ImageState, RequestRecord, SimulatorConfig, SimulatorHandle,
};
use copyimage_stand_ins::kube_api::{KubeApi, KubeApiConfig, KubeApiHandle, Verb};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::watcher::{self, watcher};
use kube::{CustomResourceExt, ResourceExt};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The operator's key pair, given to the controller through the environment.
const KEY_ID: &str = "LTAI5tBenchOperatorKey";
const KEY_SECRET: &str = "benchOperatorSecretNotLogged0001";
/// Region of every resource.
const REGION: &str = "cn-hangzhou";
/// Namespace of every resource.
pub const NAMESPACE: &str = "bench";
/// Creates in flight at once: enough to outpace the controller, few enough
/// not to exhaust file descriptors.
const CREATE_CONCURRENCY: usize = 64;
/// How long after the last final status before counting, so reconciles
/// woken by the last writes (and their requests) have finished.
const SETTLE: Duration = Duration::from_secs(3);
/// Largest simulator request log kept by a bench run.
const SIMULATOR_LOG: usize = 100_000;

/// What one bench world is started with.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The `copyimage-canceller` binary (`env!("CARGO_BIN_EXE_copyimage-canceller")`).
    pub controller_bin: PathBuf,
    /// Delay the simulator adds before every answer.
    pub ecs_latency: Duration,
    /// `--max-concurrent-reconciles`.
    pub concurrency: u16,
    /// More `run` flags (e.g. short retry delays).
    pub extra_args: Vec<String>,
    /// Environment variables for the controller (e.g. `MALLOC_ARENA_MAX`).
    pub extra_env: Vec<(String, String)>,
    /// How long one load may take before the run is declared failed.
    pub timeout: Duration,
}

impl Settings {
    /// The ideal throughput: every reconcile slot busy with nothing but the ECS latency.
    pub fn ideal_per_s(&self) -> f64 {
        f64::from(self.concurrency) / self.ecs_latency.as_secs_f64()
    }
}

/// The controller's `run` flags for these settings.
pub fn controller_args(settings: &Settings, endpoint: &str, admin_port: u16) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "run".into(),
        "--ecs-endpoint".into(),
        endpoint.into(),
        "--max-concurrent-reconciles".into(),
        settings.concurrency.to_string(),
        "--admin-addr".into(),
        format!("127.0.0.1:{admin_port}"),
    ];
    args.extend(settings.extra_args.iter().cloned());
    args
}

/// Final statuses seen by the bench's watch: name → (when, phase).
type Finals = Arc<Mutex<HashMap<String, (Instant, Phase)>>>;

/// API, simulator, the controller process, and the bench's own watch.
pub struct World {
    /// The in-process Kubernetes API.
    pub api: KubeApiHandle,
    /// The ECS stand-in.
    pub sim: SimulatorHandle,
    /// A client of the API (the bench's creates and reads).
    pub client: kube::Client,
    settings: Settings,
    dir: tempfile::TempDir,
    controller: tokio::process::Child,
    pid: u32,
    admin_port: u16,
    finals: Finals,
    watch: tokio::task::JoinHandle<()>,
}

impl World {
    /// Starts everything and waits until the controller reports ready
    /// (`/readyz`: its caches synced) and the bench's watch has its first list.
    pub async fn start(settings: &Settings) -> anyhow::Result<World> {
        let api = KubeApi::start_with(
            vec![CopyImageCancellation::crd()],
            KubeApiConfig {
                // NB: a real API server's watch cache keeps minutes of
                // changes, tens of thousands at this rate; the sandbox's
                // default (1,000) would send every watch that falls behind
                // for a whole relist.
                history_window: 200_000,
                namespace: NAMESPACE.into(),
                ..KubeApiConfig::default()
            },
        )
        .await?;
        let dir = tempfile::tempdir()?;
        let kubeconfig = dir.path().join("kubeconfig");
        api.write_kubeconfig(&kubeconfig)?;
        let client = api.client()?;
        let mut sim_config = SimulatorConfig::new([copyimage_stand_ins::AccessKey::new(
            KEY_ID, KEY_SECRET, None,
        )]);
        sim_config.latency = settings.ecs_latency;
        sim_config.request_log_capacity = SIMULATOR_LOG;
        sim_config.nonce_capacity = 4 * SIMULATOR_LOG;
        let sim = EcsSimulator::start(sim_config).await?;

        let finals: Finals = Arc::default();
        let (synced_tx, synced_rx) = tokio::sync::oneshot::channel();
        let watch = tokio::spawn(watch_finals(client.clone(), finals.clone(), synced_tx));
        tokio::time::timeout(Duration::from_secs(30), synced_rx)
            .await
            .context("the bench's watch did not sync")?
            .context("the bench's watch ended")?;

        let admin_port = free_port()?;
        let log = std::fs::File::create(dir.path().join("controller.log"))?;
        let mut cmd = tokio::process::Command::new(&settings.controller_bin);
        cmd.args(controller_args(settings, &sim.endpoint(), admin_port))
            .env("KUBECONFIG", &kubeconfig)
            .env("ALIBABA_CLOUD_ACCESS_KEY_ID", KEY_ID)
            .env("ALIBABA_CLOUD_ACCESS_KEY_SECRET", KEY_SECRET)
            .env_remove("ALIBABA_CLOUD_SECURITY_TOKEN")
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .envs(settings.extra_env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        let controller = cmd
            .spawn()
            .with_context(|| format!("spawning {}", settings.controller_bin.display()))?;
        let pid = controller.id().context("the controller has no pid")?;
        let mut world = World {
            api,
            sim,
            client,
            settings: settings.clone(),
            dir,
            controller,
            pid,
            admin_port,
            finals,
            watch,
        };
        world.wait_ready().await?;
        Ok(world)
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = self.controller.try_wait() {
                bail!(
                    "the controller exited ({status}) before it was ready:\n{}",
                    self.log_tail(40)
                );
            }
            if http_status(self.admin_port, "/readyz").await == Some(200) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the controller was not ready after 60 s:\n{}",
                    self.log_tail(40)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The controller's process id.
    pub fn controller_pid(&self) -> u32 {
        self.pid
    }

    /// The port of the controller's admin server (`/metrics`).
    pub fn admin_port(&self) -> u16 {
        self.admin_port
    }

    /// The last `lines` lines the controller wrote on stderr.
    pub fn log_tail(&self, lines: usize) -> String {
        let log =
            std::fs::read_to_string(self.dir.path().join("controller.log")).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The controller's memory now.
    pub fn memory(&self) -> anyhow::Result<Memory> {
        Memory::of(self.pid)
    }

    fn finals_seen(&self, names: &[String]) -> usize {
        let finals = self.finals.lock().expect("finals lock");
        names.iter().filter(|n| finals.contains_key(*n)).count()
    }

    fn all_final(&self, names: &[String]) -> bool {
        let finals = self.finals.lock().expect("finals lock");
        // NB: looking every name up on each poll cost this process (which
        // hosts the API too) a good share of its CPU at 10,000.
        finals.len() >= names.len() && names.iter().all(|n| finals.contains_key(n))
    }

    /// Creates `names` (`CREATE_CONCURRENCY` at a time, as fast as the API
    /// answers) with images the simulator knows as copies in progress, and
    /// returns when each create was sent.
    async fn create_all(
        &self,
        names: &[String],
        image_of: impl Fn(&str) -> String,
    ) -> anyhow::Result<HashMap<String, Instant>> {
        for name in names {
            self.sim.set_image(image_of(name), ImageState::Copying);
        }
        let api: Api<CopyImageCancellation> = Api::namespaced(self.client.clone(), NAMESPACE);
        let sent: Vec<(String, Instant)> = futures::stream::iter(names.iter().cloned())
            .map(|name| {
                let api = api.clone();
                let resource = resource(&name, &image_of(&name));
                async move {
                    let at = Instant::now();
                    api.create(&PostParams::default(), &resource)
                        .await
                        .with_context(|| format!("creating {name}"))?;
                    anyhow::Ok((name, at))
                }
            })
            .buffer_unordered(CREATE_CONCURRENCY)
            .try_collect()
            .await?;
        Ok(sent.into_iter().collect())
    }

    /// Waits until every one of `names` has a final status in the bench's watch.
    async fn wait_finals(&self, names: &[String], limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            if self.all_final(names) {
                return Ok(());
            }
            if Instant::now() > deadline {
                let seen = self.finals_seen(names);
                bail!(
                    "{seen} of {} resources final after {limit:?}; controller log (tail):\n{}",
                    names.len(),
                    self.log_tail(40)
                );
            }
            // NB: the times measured are taken by the watch task; polling
            // more often would only cost CPU.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Creates `names` at once and waits until each is final: the time from
    /// the first create to the last final status (no counting, no memory
    /// sampling: for benches that count from the simulator's log).
    pub async fn drain(&self, names: &[String]) -> anyhow::Result<Duration> {
        let started = Instant::now();
        self.create_all(names, image_id).await?;
        self.wait_finals(names, self.settings.timeout).await?;
        let finals = self.finals.lock().expect("finals lock");
        let last = names
            .iter()
            .filter_map(|n| finals.get(n).map(|(at, _)| *at))
            .max()
            .unwrap_or(started);
        Ok(last.duration_since(started))
    }

    /// `samples` resources one after the other, each created once the
    /// previous one is final and its writes have landed: the time to a final
    /// status of an idle controller.
    pub async fn idle(&self, samples: usize) -> anyhow::Result<IdleFigures> {
        let mut latencies = Vec::with_capacity(samples);
        for i in 0..samples {
            let name = format!("idle-{i:04}");
            let names = [name.clone()];
            let sent = self.create_all(&names, image_id).await?;
            self.wait_finals(&names, Duration::from_secs(30)).await?;
            let final_at = self.finals.lock().expect("finals lock")[&name].0;
            latencies.push(final_at.duration_since(sent[&name]));
            // Let the record write's echo reach the controller: idle means idle.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let target = self.settings.ecs_latency + Duration::from_millis(50);
        let p99 = percentile(&mut latencies, 99.0);
        Ok(IdleFigures {
            samples,
            p50_ms: ms(percentile(&mut latencies, 50.0)),
            p99_ms: ms(p99),
            max_ms: ms(latencies.iter().max().copied().unwrap_or_default()),
            target_p99_ms: ms(target),
            pass: p99 <= target,
        })
    }

    /// `count` CancelCopyImage calls straight to the simulator with the
    /// controller's concurrency and no Kubernetes at all: the throughput the
    /// ECS side allows on this machine, beside the computed ideal.
    pub async fn direct_baseline(&self, count: usize) -> anyhow::Result<f64> {
        let client = EcsClient::new(EcsClientConfig {
            endpoint: self.sim.endpoint(),
            ..EcsClientConfig::default()
        })?;
        let key = AccessKey::new(KEY_ID, KEY_SECRET, None);
        let images: Vec<String> = (0..count).map(|i| format!("m-baseline{i:06}")).collect();
        for image in &images {
            self.sim.set_image(image.clone(), ImageState::Copying);
        }
        let started = Instant::now();
        let outcomes: Vec<CancelOutcome> = futures::stream::iter(images.iter())
            .map(|image| client.cancel_copy_image(&key, REGION, image))
            .buffer_unordered(usize::from(self.settings.concurrency))
            .collect()
            .await;
        let elapsed = started.elapsed();
        let failed = outcomes
            .iter()
            .filter(|o| !matches!(o, CancelOutcome::Cancelled { .. }))
            .count();
        if failed > 0 {
            bail!("{failed} of {count} direct CancelCopyImage calls failed");
        }
        Ok(count as f64 / elapsed.as_secs_f64())
    }

    /// The load: `n` resources created at once, measured until every one is
    /// final, then counted.
    pub async fn load(&self, n: usize) -> anyhow::Result<LoadFigures> {
        // Idle: caches synced, nothing to do yet; a moment for start-up to settle.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let idle = self.memory()?;
        let baseline_count = n.clamp(1, 2000);
        let baseline_per_s = self.direct_baseline(baseline_count).await?;
        let cpu_before = cpu_seconds(self.pid)?;
        let own_cpu_before = cpu_seconds(std::process::id())?;
        let load_before = load_average();
        self.api.clear_requests();
        self.sim.clear_requests();

        let names: Vec<String> = (0..n).map(|i| format!("load-{i:06}")).collect();
        let sampler = RssSampler::start(self.pid);
        let started = Instant::now();
        let sent = self.create_all(&names, image_id).await?;
        let created_all = started.elapsed();
        self.wait_finals(&names, self.settings.timeout).await?;
        let peak_sampled = sampler.stop().await;
        let busy = self.memory()?;
        let cpu = cpu_seconds(self.pid)? - cpu_before;
        let own_cpu = cpu_seconds(std::process::id())? - own_cpu_before;
        let load_after = load_average();
        let finals: HashMap<String, (Instant, Phase)> = {
            let finals = self.finals.lock().expect("finals lock");
            names.iter().map(|n| (n.clone(), finals[n])).collect()
        };
        let last_final = finals.values().map(|(at, _)| *at).max().unwrap_or(started);
        let total = last_final.duration_since(started);
        let mut latencies: Vec<Duration> = names
            .iter()
            .map(|n| finals[n].0.duration_since(sent[n]))
            .collect();

        tokio::time::sleep(SETTLE).await;
        let after = self.memory()?;
        let counts = self.count(&names).await?;
        let throughput = n as f64 / total.as_secs_f64();
        let ideal = self.settings.ideal_per_s();
        Ok(LoadFigures {
            n,
            concurrency: self.settings.concurrency,
            ecs_latency_ms: ms(self.settings.ecs_latency),
            created_all_s: created_all.as_secs_f64(),
            total_s: total.as_secs_f64(),
            throughput_per_s: throughput,
            ideal_per_s: ideal,
            direct_baseline_per_s: baseline_per_s,
            direct_baseline_requests: baseline_count,
            throughput_of_ideal: throughput / ideal,
            p50_ms: ms(percentile(&mut latencies, 50.0)),
            p99_ms: ms(percentile(&mut latencies, 99.0)),
            max_ms: ms(latencies.iter().max().copied().unwrap_or_default()),
            succeeded: finals
                .values()
                .filter(|(_, p)| *p == Phase::Succeeded)
                .count(),
            failed: finals.values().filter(|(_, p)| *p == Phase::Failed).count(),
            rss_idle_mib: mib(idle.rss_kib),
            rss_peak_mib: mib(busy.hwm_kib),
            rss_peak_sampled_mib: mib(peak_sampled.max(idle.rss_kib)),
            rss_after_mib: mib(after.rss_kib),
            controller_cpu_s: cpu,
            controller_cpu_ms_per_resource: 1000.0 * cpu / n.max(1) as f64,
            bench_process_cpu_s: own_cpu,
            load_average_before: load_before,
            load_average_after: load_after,
            counts,
        })
    }

    /// What the load cost, from the simulator's and the API's request logs
    /// (cleared when the load began) and the Events stored.
    async fn count(&self, names: &[String]) -> anyhow::Result<Counts> {
        let images: HashMap<String, &String> = names.iter().map(|n| (image_id(n), n)).collect();
        let mut ecs_by_resource: HashMap<&String, usize> = HashMap::new();
        let mut ecs_other = 0;
        for r in self.sim.requests() {
            if r.action.as_deref() != Some("CancelCopyImage") {
                continue;
            }
            match r.image_id.as_ref().and_then(|i| images.get(i)) {
                Some(name) => *ecs_by_resource.entry(*name).or_default() += 1,
                None => ecs_other += 1,
            }
        }
        let ecs_requests: usize = ecs_by_resource.values().sum();
        let not_one = names
            .iter()
            .filter(|n| ecs_by_resource.get(n).copied().unwrap_or(0) != 1)
            .count();

        let log = self.api.requests();
        let mut status_by_resource: HashMap<&str, usize> = HashMap::new();
        let (mut status_patches, mut status_applied, mut status_conflicts) = (0, 0, 0);
        let (mut event_creates, mut event_patches, mut cic_gets, mut cic_lists) = (0, 0, 0, 0);
        let mut writes_other = 0;
        for r in &log {
            match (r.verb, r.resource.as_str(), r.subresource.as_str()) {
                (Verb::Patch | Verb::Update, "copyimagecancellations", "status") => {
                    status_patches += 1;
                    match r.code {
                        200..=299 => status_applied += 1,
                        409 => status_conflicts += 1,
                        _ => {}
                    }
                    if let Some(name) = &r.name {
                        *status_by_resource.entry(name.as_str()).or_default() += 1;
                    }
                }
                (Verb::Create, "events", _) => event_creates += 1,
                (Verb::Patch | Verb::Update, "events", _) => event_patches += 1,
                (Verb::Get, "copyimagecancellations", _) => cic_gets += 1,
                (Verb::List, "copyimagecancellations", _) => cic_lists += 1,
                // The bench's own creates.
                (Verb::Create, "copyimagecancellations", "") => {}
                (verb, _, _) if verb.is_write() => writes_other += 1,
                _ => {}
            }
        }

        let events: Api<Event> = Api::namespaced(self.client.clone(), NAMESPACE);
        let mut events_by_resource: HashMap<String, usize> = HashMap::new();
        for event in events.list(&ListParams::default()).await?.items {
            let regarding = event.regarding.as_ref();
            if regarding.and_then(|r| r.kind.as_deref()) != Some("CopyImageCancellation") {
                continue;
            }
            if let Some(name) = regarding.and_then(|r| r.name.clone()) {
                // A series counts each occurrence.
                let occurrences = event.series.as_ref().map_or(1, |s| s.count.max(1));
                *events_by_resource.entry(name).or_default() += occurrences as usize;
            }
        }
        let name_set: HashSet<&str> = names.iter().map(String::as_str).collect();
        let events_total: usize = events_by_resource
            .iter()
            .filter(|(n, _)| name_set.contains(n.as_str()))
            .map(|(_, c)| *c)
            .sum();

        // Read back through the API, independent of the bench's watch.
        let cics: Api<CopyImageCancellation> = Api::namespaced(self.client.clone(), NAMESPACE);
        let stored = cics.list(&ListParams::default()).await?.items;
        let final_in_api = stored
            .iter()
            .filter(|c| name_set.contains(c.name_any().as_str()))
            .filter(|c| {
                c.status
                    .as_ref()
                    .and_then(|s| s.phase)
                    .is_some_and(Phase::is_finished)
            })
            .count();
        let attempts_recorded: i64 = stored
            .iter()
            .filter(|c| name_set.contains(c.name_any().as_str()))
            .map(|c| i64::from(c.status.as_ref().map_or(0, |s| s.attempts)))
            .sum();

        let n = names.len().max(1) as f64;
        let max_of = |m: &HashMap<&str, usize>| m.values().copied().max().unwrap_or(0);
        Ok(Counts {
            ecs_requests,
            ecs_requests_per_resource: ecs_requests as f64 / n,
            ecs_min_per_resource: names
                .iter()
                .map(|n| ecs_by_resource.get(n).copied().unwrap_or(0))
                .min()
                .unwrap_or(0),
            ecs_max_per_resource: ecs_by_resource.values().copied().max().unwrap_or(0),
            resources_without_exactly_one_request: not_one,
            ecs_requests_for_other_images: ecs_other,
            attempts_recorded,
            status_patches,
            status_patches_applied: status_applied,
            status_patches_conflict: status_conflicts,
            status_patches_per_resource: status_patches as f64 / n,
            status_patches_max_one_resource: max_of(&status_by_resource),
            event_creates,
            event_patches,
            events_per_resource: events_total as f64 / n,
            events_max_one_resource: events_by_resource
                .iter()
                .filter(|(n, _)| name_set.contains(n.as_str()))
                .map(|(_, c)| *c)
                .max()
                .unwrap_or(0),
            kube_writes_per_resource: (status_patches + event_creates + event_patches) as f64 / n,
            other_writes: writes_other,
            resource_gets: cic_gets,
            resource_lists: cic_lists,
            final_in_api,
        })
    }

    /// Stops the controller (SIGKILL: the bench has what it needs) and the servers.
    pub async fn stop(mut self) {
        let _ = self.controller.kill().await;
        self.watch.abort();
        self.sim.shutdown().await;
        self.api.shutdown().await;
    }
}

/// Follows every resource and notes the first time each is seen final.
async fn watch_finals(
    client: kube::Client,
    finals: Finals,
    synced: tokio::sync::oneshot::Sender<()>,
) {
    let api: Api<CopyImageCancellation> = Api::namespaced(client, NAMESPACE);
    let mut synced = Some(synced);
    let mut stream = watcher(api, watcher::Config::default()).boxed();
    while let Some(event) = stream.next().await {
        let seen = Instant::now();
        match event {
            Ok(watcher::Event::Apply(obj) | watcher::Event::InitApply(obj)) => {
                if let Some(phase) = obj.status.as_ref().and_then(|s| s.phase)
                    && phase.is_finished()
                {
                    finals
                        .lock()
                        .expect("finals lock")
                        .entry(obj.name_any())
                        .or_insert((seen, phase));
                }
            }
            Ok(watcher::Event::InitDone) => {
                if let Some(tx) = synced.take() {
                    let _ = tx.send(());
                }
            }
            Ok(_) => {}
            Err(err) => {
                eprintln!("bench watch: {err}; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

fn resource(name: &str, image: &str) -> CopyImageCancellation {
    CopyImageCancellation::new(
        name,
        CopyImageCancellationSpec {
            region_id: REGION.into(),
            image_id: image.into(),
            credentials_secret_ref: None,
            backoff_limit: 6,
            active_deadline_seconds: None,
        },
    )
}

/// The image a bench resource cancels the copy of (`^m-[a-z0-9]+$`).
pub fn image_id(name: &str) -> String {
    let digits: String = name.chars().filter(char::is_ascii_alphanumeric).collect();
    format!("m-{digits}")
}

/// How many of `names` did not get exactly one accepted (`Success`)
/// request for their image in `log`: the outage and pacing benches' "no
/// duplicate, no lost cancel" count.
pub fn not_exactly_one_accepted<'a>(
    names: &[String],
    log: impl IntoIterator<Item = &'a RequestRecord>,
) -> usize {
    let mut accepted: HashMap<&str, usize> = HashMap::new();
    for r in log {
        if r.code == "Success"
            && let Some(image) = &r.image_id
        {
            *accepted.entry(image.as_str()).or_default() += 1;
        }
    }
    names
        .iter()
        .filter(|n| accepted.get(image_id(n).as_str()).copied().unwrap_or(0) != 1)
        .count()
}

/// The `p`th percentile (nearest rank) of `values`.
pub fn percentile(values: &mut [Duration], p: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    values.sort_unstable();
    let rank = ((p / 100.0) * values.len() as f64).ceil() as usize;
    values[rank.clamp(1, values.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The 1-minute load average (`/proc/loadavg`), 0 when unreadable.
fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// A free loopback port (NB: another process could take it before the
/// controller binds it; the start-up then fails loudly, never silently).
fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// The HTTP status of `GET path` on the admin server, if it answers.
async fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut head = vec![0; 64];
    let read = stream.read(&mut head).await.ok()?;
    let line = String::from_utf8_lossy(&head[..read]);
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A process's resident memory, from `/proc/PID/status`.
#[derive(Clone, Copy, Debug)]
pub struct Memory {
    /// `VmRSS`: resident now, KiB.
    pub rss_kib: u64,
    /// `VmHWM`: the most ever resident, KiB.
    pub hwm_kib: u64,
}

impl Memory {
    /// Reads `/proc/PID/status`.
    pub fn of(pid: u32) -> anyhow::Result<Memory> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .with_context(|| format!("reading /proc/{pid}/status (Linux only)"))?;
        Ok(Memory {
            rss_kib: status_field(&status, "VmRSS:")?,
            hwm_kib: status_field(&status, "VmHWM:")?,
        })
    }
}

fn status_field(status: &str, field: &str) -> anyhow::Result<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no {field} in /proc/PID/status"))
}

/// User plus system CPU time of a process, from `/proc/PID/stat`.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may hold spaces; the fields after it are fixed.
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| -> anyhow::Result<u64> {
        fields
            .get(i)
            .and_then(|v| v.parse().ok())
            .context("unexpected /proc/PID/stat")
    };
    // utime and stime are fields 14 and 15 (11 and 12 after the name), in
    // USER_HZ ticks: 100 per second on Linux whatever the kernel's HZ.
    Ok((ticks(11)? + ticks(12)?) as f64 / 100.0)
}

/// Samples VmRSS every 50 ms while a load runs (VmHWM gives the true peak;
/// the samples show it was reached during the load, not at start-up).
struct RssSampler {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<u64>,
}

impl RssSampler {
    fn start(pid: u32) -> Self {
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut max = 0;
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            loop {
                tokio::select! {
                    _ = &mut stopped => return max,
                    _ = tick.tick() => {
                        if let Ok(m) = Memory::of(pid) {
                            max = max.max(m.rss_kib);
                        }
                    }
                }
            }
        });
        Self { stop, task }
    }

    async fn stop(self) -> u64 {
        let _ = self.stop.send(());
        self.task.await.unwrap_or(0)
    }
}

/// Time to a final status with nothing else going on.
#[derive(Clone, Debug, Serialize)]
pub struct IdleFigures {
    /// Resources created one after the other.
    pub samples: usize,
    /// Median create-sent → final-status-seen, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Slowest, ms.
    pub max_ms: f64,
    /// ECS latency + 50 ms.
    pub target_p99_ms: f64,
    /// Whether p99 is within the target.
    pub pass: bool,
}

/// What one load measured.
#[derive(Clone, Debug, Serialize)]
pub struct LoadFigures {
    /// Resources created at once.
    pub n: usize,
    /// `--max-concurrent-reconciles`.
    pub concurrency: u16,
    /// The simulator's latency, ms.
    pub ecs_latency_ms: f64,
    /// Time to send every create, s.
    pub created_all_s: f64,
    /// First create sent → last final status seen, s.
    pub total_s: f64,
    /// `n / total_s`.
    pub throughput_per_s: f64,
    /// `concurrency / latency`.
    pub ideal_per_s: f64,
    /// Direct CancelCopyImage calls per second at the same concurrency, no Kubernetes.
    pub direct_baseline_per_s: f64,
    /// How many direct calls the baseline made.
    pub direct_baseline_requests: usize,
    /// `throughput / ideal`.
    pub throughput_of_ideal: f64,
    /// Median create-sent → final-status-seen, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Slowest, ms.
    pub max_ms: f64,
    /// Resources that ended Succeeded.
    pub succeeded: usize,
    /// Resources that ended Failed.
    pub failed: usize,
    /// VmRSS with caches synced, before the load, MiB.
    pub rss_idle_mib: f64,
    /// VmHWM at the end of the load, MiB.
    pub rss_peak_mib: f64,
    /// Largest VmRSS sampled during the load, MiB.
    pub rss_peak_sampled_mib: f64,
    /// VmRSS a few seconds after the load, MiB.
    pub rss_after_mib: f64,
    /// Controller CPU (user + system) during the load, s.
    pub controller_cpu_s: f64,
    /// `controller_cpu_s` per resource, ms.
    pub controller_cpu_ms_per_resource: f64,
    /// CPU of this process (the API, the simulator, the bench's watch) during the load, s.
    pub bench_process_cpu_s: f64,
    /// The machine's 1-minute load average as the load began (other work competing for CPU).
    pub load_average_before: f64,
    /// The same as the last resource became final.
    pub load_average_after: f64,
    /// Requests counted.
    pub counts: Counts,
}

/// Requests the load caused.
#[derive(Clone, Debug, Serialize)]
pub struct Counts {
    /// CancelCopyImage requests for the load's images.
    pub ecs_requests: usize,
    /// `ecs_requests / n`.
    pub ecs_requests_per_resource: f64,
    /// Fewest requests one resource got.
    pub ecs_min_per_resource: usize,
    /// Most requests one resource got.
    pub ecs_max_per_resource: usize,
    /// Resources with 0 or more than 1 request.
    pub resources_without_exactly_one_request: usize,
    /// CancelCopyImage requests for images not in the load.
    pub ecs_requests_for_other_images: usize,
    /// Sum of `status.attempts` over the load's resources.
    pub attempts_recorded: i64,
    /// PATCH/PUT requests on `copyimagecancellations/status`, any answer.
    pub status_patches: usize,
    /// Of which applied (2xx).
    pub status_patches_applied: usize,
    /// Of which refused with 409.
    pub status_patches_conflict: usize,
    /// `status_patches / n`.
    pub status_patches_per_resource: f64,
    /// Most status writes to one resource.
    pub status_patches_max_one_resource: usize,
    /// Event creates.
    pub event_creates: usize,
    /// Event patches (series).
    pub event_patches: usize,
    /// Event occurrences about the load's resources / n.
    pub events_per_resource: f64,
    /// Most Event occurrences about one resource.
    pub events_max_one_resource: usize,
    /// (status writes + Event writes) / n.
    pub kube_writes_per_resource: f64,
    /// Other writes (leases, ...).
    pub other_writes: usize,
    /// GETs of single resources.
    pub resource_gets: usize,
    /// LISTs of resources (the bench's final read-back is one).
    pub resource_lists: usize,
    /// Resources final when read back from the API.
    pub final_in_api: usize,
}

/// One target and how the run did against it.
#[derive(Clone, Debug, Serialize)]
pub struct Target {
    /// What is promised.
    pub name: String,
    /// Which run (N), or `None` for the idle measurement.
    pub n: Option<usize>,
    /// The bound, in words.
    pub target: String,
    /// What was measured.
    pub measured: String,
    /// Met or not.
    pub pass: bool,
}

/// Peak RSS bound (stated for 10,000 resources; held to at every N).
pub const PEAK_RSS_MIB: f64 = 64.0;
/// Idle RSS bound.
pub const IDLE_RSS_MIB: f64 = 20.0;
/// Fraction of the ideal throughput to reach.
pub const THROUGHPUT_OF_IDEAL: f64 = 0.7;

/// The issue's targets, judged on these figures.
pub fn targets(idle: Option<&IdleFigures>, loads: &[LoadFigures]) -> Vec<Target> {
    let mut out = Vec::new();
    for l in loads {
        let c = &l.counts;
        let n = Some(l.n);
        out.push(Target {
            name: "exactly 1 ECS request per resource".into(),
            n,
            target: "every resource: 1".into(),
            measured: format!(
                "{} requests, min {} max {} per resource",
                c.ecs_requests, c.ecs_min_per_resource, c.ecs_max_per_resource
            ),
            pass: c.resources_without_exactly_one_request == 0 && c.ecs_requests == l.n,
        });
        out.push(Target {
            name: "at most 2 status writes per resource".into(),
            n,
            target: "max <= 2".into(),
            measured: format!(
                "max {}, mean {:.2} ({} conflicts)",
                c.status_patches_max_one_resource,
                c.status_patches_per_resource,
                c.status_patches_conflict
            ),
            pass: c.status_patches_max_one_resource <= 2,
        });
        out.push(Target {
            name: "at most 1 Event per resource".into(),
            n,
            target: "max <= 1".into(),
            measured: format!(
                "max {}, mean {:.2}",
                c.events_max_one_resource, c.events_per_resource
            ),
            pass: c.events_max_one_resource <= 1 && c.event_creates + c.event_patches <= l.n,
        });
        out.push(Target {
            name: "every resource final".into(),
            n,
            target: format!("{} final", l.n),
            measured: format!(
                "{} Succeeded, {} Failed, {} final in the API",
                l.succeeded, l.failed, c.final_in_api
            ),
            pass: l.succeeded + l.failed == l.n && c.final_in_api == l.n,
        });
        out.push(Target {
            name: "throughput >= 70% of ideal".into(),
            n,
            target: format!(
                ">= {:.0}/s (ideal {:.0}/s = {} / {} ms)",
                THROUGHPUT_OF_IDEAL * l.ideal_per_s,
                l.ideal_per_s,
                l.concurrency,
                l.ecs_latency_ms
            ),
            measured: format!(
                "{:.0}/s ({:.0}% of ideal)",
                l.throughput_per_s,
                100.0 * l.throughput_of_ideal
            ),
            pass: l.throughput_of_ideal >= THROUGHPUT_OF_IDEAL,
        });
        out.push(Target {
            name: "peak RSS <= 64 MiB".into(),
            n,
            target: format!("<= {PEAK_RSS_MIB} MiB"),
            measured: format!("{:.1} MiB", l.rss_peak_mib),
            pass: l.rss_peak_mib <= PEAK_RSS_MIB,
        });
        out.push(Target {
            name: "idle RSS <= 20 MiB".into(),
            n,
            target: format!("<= {IDLE_RSS_MIB} MiB"),
            measured: format!("{:.1} MiB", l.rss_idle_mib),
            pass: l.rss_idle_mib <= IDLE_RSS_MIB,
        });
    }
    if let Some(idle) = idle {
        out.push(Target {
            name: "idle time to status p99 <= ECS latency + 50 ms".into(),
            n: None,
            target: format!("<= {:.0} ms", idle.target_p99_ms),
            measured: format!("{:.1} ms over {} resources", idle.p99_ms, idle.samples),
            pass: idle.pass,
        });
    }
    out
}

/// Everything a bench run reports (the JSON file).
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// When (UTC).
    pub date: String,
    /// The machine.
    pub machine: Machine,
    /// The arguments the bench ran with.
    pub command: String,
    /// Idle time to status, when measured.
    pub idle: Option<IdleFigures>,
    /// One entry per N.
    pub loads: Vec<LoadFigures>,
    /// The targets, judged.
    pub targets: Vec<Target>,
    /// Whether every target was met.
    pub all_met: bool,
}

impl Report {
    /// Judges the figures and describes the machine.
    pub fn new(command: String, idle: Option<IdleFigures>, loads: Vec<LoadFigures>) -> Self {
        let targets = targets(idle.as_ref(), &loads);
        let all_met = targets.iter().all(|t| t.pass);
        Self {
            date: jiff::Timestamp::now()
                .round(jiff::Unit::Second)
                .map_or_else(|_| jiff::Timestamp::now().to_string(), |t| t.to_string()),
            machine: Machine::this(),
            command,
            idle,
            loads,
            targets,
            all_met,
        }
    }

    /// Writes the report as pretty JSON to `path` (creating its directory).
    pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
    }

    /// The figures as a text table.
    pub fn table(&self) -> String {
        fn per_s_text(rate: f64) -> String {
            format!("{rate:.0}/s")
        }
        fn mib_text(mib: f64) -> String {
            format!("{mib:.1} MiB")
        }
        let mut rows: Vec<(String, Vec<String>)> = Vec::new();
        let mut row = |label: &str, f: &dyn Fn(&LoadFigures) -> String| {
            rows.push((label.to_string(), self.loads.iter().map(f).collect()));
        };
        row("resources (N)", &|l| l.n.to_string());
        row("max concurrent reconciles", &|l| l.concurrency.to_string());
        row("ECS latency", &|l| format!("{} ms", l.ecs_latency_ms));
        row("time until all final", &|l| format!("{:.2} s", l.total_s));
        row("throughput", &|l| per_s_text(l.throughput_per_s));
        row("ideal (concurrency/latency)", &|l| {
            per_s_text(l.ideal_per_s)
        });
        row("throughput / ideal", &|l| {
            format!("{:.0}%", 100.0 * l.throughput_of_ideal)
        });
        row("direct ECS calls, same concurrency", &|l| {
            per_s_text(l.direct_baseline_per_s)
        });
        row("creation → final p50", &|l| format!("{:.0} ms", l.p50_ms));
        row("creation → final p99", &|l| format!("{:.0} ms", l.p99_ms));
        row("creation → final max", &|l| format!("{:.0} ms", l.max_ms));
        row("controller RSS idle", &|l| mib_text(l.rss_idle_mib));
        row("controller RSS peak (VmHWM)", &|l| mib_text(l.rss_peak_mib));
        row("controller RSS after", &|l| mib_text(l.rss_after_mib));
        row("controller CPU", &|l| {
            format!(
                "{:.1} s ({:.2} ms/resource)",
                l.controller_cpu_s, l.controller_cpu_ms_per_resource
            )
        });
        row("API + simulator + bench CPU", &|l| {
            format!("{:.1} s", l.bench_process_cpu_s)
        });
        row("load average before / after", &|l| {
            format!("{:.1} / {:.1}", l.load_average_before, l.load_average_after)
        });
        row("ECS requests / resource", &|l| {
            format!(
                "{:.3} (min {}, max {})",
                l.counts.ecs_requests_per_resource,
                l.counts.ecs_min_per_resource,
                l.counts.ecs_max_per_resource
            )
        });
        row("status writes / resource", &|l| {
            format!(
                "{:.3} (max {}, 409s {})",
                l.counts.status_patches_per_resource,
                l.counts.status_patches_max_one_resource,
                l.counts.status_patches_conflict
            )
        });
        row("Events / resource", &|l| {
            format!(
                "{:.3} (max {})",
                l.counts.events_per_resource, l.counts.events_max_one_resource
            )
        });
        row("Kubernetes writes / resource", &|l| {
            format!("{:.3}", l.counts.kube_writes_per_resource)
        });
        row("resource GETs / LISTs", &|l| {
            format!("{} / {}", l.counts.resource_gets, l.counts.resource_lists)
        });
        row("Succeeded / Failed", &|l| {
            format!("{} / {}", l.succeeded, l.failed)
        });

        let label_width = rows
            .iter()
            .map(|(l, _)| l.chars().count())
            .max()
            .unwrap_or(0);
        let col_width = rows
            .iter()
            .flat_map(|(_, v)| v.iter().map(|s| s.chars().count()))
            .max()
            .unwrap_or(0);
        let mut out = String::new();
        for (label, values) in &rows {
            out += &format!("{label:<label_width$}");
            for v in values {
                out += &format!("  {v:>col_width$}");
            }
            out += "\n";
        }
        if let Some(idle) = &self.idle {
            out += &format!(
                "\nidle time to status over {} resources: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms\n",
                idle.samples, idle.p50_ms, idle.p99_ms, idle.max_ms
            );
        }
        out += "\ntargets:\n";
        for t in &self.targets {
            let at = t.n.map(|n| format!(" (N={n})")).unwrap_or_default();
            out += &format!(
                "  [{}] {}{at}: {} — measured {}\n",
                if t.pass { "met" } else { "MISSED" },
                t.name,
                t.target,
                t.measured
            );
        }
        out
    }
}

/// The machine a report was made on.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    /// Logical CPUs this process may use.
    pub cpus: usize,
    /// `model name` from /proc/cpuinfo.
    pub cpu_model: String,
    /// `MemTotal` from /proc/meminfo, MiB.
    pub memory_mib: u64,
    /// `rustc -V`.
    pub rustc: String,
}

impl Machine {
    /// Reads what Linux and rustc say.
    pub fn this() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let rustc = std::process::Command::new(std::env::var("RUSTC").unwrap_or("rustc".into()))
            .arg("-V")
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        Self {
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu_model: cpuinfo
                .lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_string())
                .unwrap_or_default(),
            memory_mib: status_field(&meminfo, "MemTotal:").unwrap_or(0) / 1024,
            rustc,
        }
    }
}

/// Runs the whole bench: the idle measurement (when `idle_samples > 0`) in
/// a world of its own, then one fresh world per N.
pub async fn run(
    settings: &Settings,
    ns: &[usize],
    idle_samples: usize,
    command: String,
) -> anyhow::Result<Report> {
    let idle = if idle_samples > 0 {
        let world = World::start(settings).await?;
        let figures = world.idle(idle_samples).await;
        world.stop().await;
        Some(figures?)
    } else {
        None
    };
    let mut loads = Vec::new();
    for &n in ns {
        let world = World::start(settings).await?;
        let figures = world.load(n).await;
        world.stop().await;
        loads.push(figures?);
    }
    Ok(Report::new(command, idle, loads))
}
