//! The real `run` binary with the `--ecs-qps`/`--ecs-burst` ceiling (one access
//! key, one region: one pace scope): a burst of 200
//! resources created at once reaches the ECS simulator no faster than the
//! token bucket allows, in any window of its request log, and each resource
//! gets exactly one request. Asserts an upper bound on the rate only
//! (slowness cannot fail it).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use copyimage_canceller::resource::{CopyImageCancellation, CopyImageCancellationSpec, Phase};
use copyimage_stand_ins::AccessKey;
use copyimage_stand_ins::ecs_simulator::{
    EcsSimulator, ImageState, RequestRecord, SimulatorConfig,
};
use copyimage_stand_ins::kube_api::KubeApi;
use futures::StreamExt;
use kube::CustomResourceExt;
use kube::api::{Api, ListParams, PostParams};

/// Generous: only a bound on a hung test, never a performance assertion.
const PATIENCE: Duration = Duration::from_secs(120);
const NS: &str = "images";
const KEY_ID: &str = "LTAI5tRateLimitKeyId";
const KEY_SECRET: &str = "rate-limit-secret-never-shown";
const RESOURCES: usize = 200;
/// Well below what this path manages with no bucket at all (about 20/s on a
/// loaded 2-core machine, where the same check fails), so that the bucket is
/// what paces the requests; 200 at 10/s take about 20 s.
const QPS: u32 = 10;
const BURST: u32 = 10;
/// Reconciles at once: well above the burst, so that the bucket (not the
/// concurrency limit) is what holds the requests back.
const CONCURRENCY: &str = "64";
/// The simulator stamps a request when it arrives, not when the bucket let it
/// go: a request delayed on the way (signing, connecting, a busy CI machine)
/// can land next to the one released after it. `QPS * TRANSIT_JITTER` = one
/// request of allowance in any window for that (the simulator runs on its own
/// thread so that this stays small; on a shared runtime it was several).
const TRANSIT_JITTER: f64 = 0.1;
/// The image of the resource that goes first, alone.
const WARM_UP: &str = "m-bp1ratelimitwarmup";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_resources_never_exceeds_the_configured_rate() {
    let api = KubeApi::start(vec![CopyImageCancellation::crd()])
        .await
        .unwrap();
    let images: Vec<String> = (0..RESOURCES)
        .map(|i| format!("m-bp1ratelimit{i:04}"))
        .collect();
    let mut config = SimulatorConfig::new([AccessKey::new(KEY_ID, KEY_SECRET, None)]);
    for image in images.iter().map(String::as_str).chain([WARM_UP]) {
        config = config.with_image(image, ImageState::Copying);
    }
    let ecs = IsolatedSimulator::start(config);
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig).unwrap();

    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_copyimage-canceller"));
    for (name, _) in std::env::vars() {
        if name.starts_with("ALIBABA_CLOUD_") {
            command.env_remove(name);
        }
    }
    let (qps, burst) = (QPS.to_string(), BURST.to_string());
    let mut child = command
        .args(["run", "--ecs-endpoint", &ecs.endpoint()])
        .args(["--ecs-qps", &qps, "--ecs-burst", &burst])
        .args(["--max-concurrent-reconciles", CONCURRENCY])
        .env("KUBECONFIG", &kubeconfig)
        .env("ALIBABA_CLOUD_ACCESS_KEY_ID", KEY_ID)
        .env("ALIBABA_CLOUD_ACCESS_KEY_SECRET", KEY_SECRET)
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    let cics: Api<CopyImageCancellation> = Api::namespaced(api.client().unwrap(), NS);
    // One resource first, so that the burst does not also pay for the
    // process's first request (lazy set-up, the first connection); then a
    // pause that refills the bucket.
    create(&cics, "warm-up", WARM_UP).await;
    wait_succeeded(&cics, 1).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    // All at once (16 creates in flight), as `kubectl apply -f dir/` would.
    futures::stream::iter(images.iter().enumerate())
        .for_each_concurrent(16, |(i, image)| {
            let cics = cics.clone();
            async move { create(&cics, &format!("burst-{i}"), image).await }
        })
        .await;
    wait_succeeded(&cics, RESOURCES + 1).await;
    child.start_kill().unwrap();

    let requests = common::cancel_requests(ecs.stop());
    let mut per_image: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &requests {
        *per_image
            .entry(r.image_id.as_deref().unwrap_or("-"))
            .or_default() += 1;
    }
    assert_eq!(
        per_image.len(),
        RESOURCES + 1,
        "every resource got a request"
    );
    assert!(
        per_image.values().all(|n| *n == 1),
        "exactly one request each: {:?}",
        per_image
            .iter()
            .filter(|(_, n)| **n != 1)
            .collect::<Vec<_>>()
    );
    let mut times: Vec<jiff::Timestamp> = requests.iter().map(|r| r.time).collect();
    times.sort();
    // Every window [times[i], times[j]] holds j - i + 1 requests: at most the
    // burst plus QPS per second of its length, +1 for rounding, plus the
    // transit jitter allowance.
    let mut worst = (f64::MIN, 0, 0);
    for i in 0..times.len() {
        for j in i + 1..times.len() {
            let span = times[j].duration_since(times[i]).as_secs_f64();
            let count = (j - i + 1) as f64;
            let allowed = f64::from(BURST) + f64::from(QPS) * (span + TRANSIT_JITTER) + 1.0;
            assert!(
                count <= allowed,
                "requests {i}..={j}: {count} within {span:.3}s, allowed {allowed:.1} \
                 (burst {BURST}, {QPS}/s)"
            );
            let excess = count - f64::from(BURST) - f64::from(QPS) * span;
            if excess > worst.0 {
                worst = (excess, i, j);
            }
        }
    }
    let first_to_last = times[times.len() - 1].duration_since(times[0]);
    println!(
        "{} requests over {:.2}s; closest to the bound: requests {}..={}, {:.2} over burst + qps x span",
        times.len(),
        first_to_last.as_secs_f64(),
        worst.1,
        worst.2,
        worst.0
    );
}

/// Creates resource `name` for `image` (the operator's own credentials).
async fn create(cics: &Api<CopyImageCancellation>, name: &str, image: &str) {
    let mut cic = CopyImageCancellation::new(
        name,
        CopyImageCancellationSpec {
            region_id: "cn-hangzhou".into(),
            image_id: image.into(),
            credentials_secret_ref: None,
            backoff_limit: 6,
            active_deadline_seconds: None,
        },
    );
    cic.metadata.namespace = Some(NS.into());
    cics.create(&PostParams::default(), &cic).await.unwrap();
}

/// Waits (at most [`PATIENCE`]) until `count` resources have Succeeded.
async fn wait_succeeded(cics: &Api<CopyImageCancellation>, count: usize) {
    tokio::time::timeout(PATIENCE, async {
        loop {
            let done = cics
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .iter()
                .filter(|c| c.status.as_ref().and_then(|s| s.phase) == Some(Phase::Succeeded))
                .count();
            if done >= count {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{count} resources Succeeded within {PATIENCE:?}"));
}

/// The ECS simulator on a thread and runtime of its own, so that the time it
/// stamps on a request is when the request arrived, not when a runtime busy
/// with the in-process Kubernetes API (hundreds of status writes and watch
/// events) got round to it.
struct IsolatedSimulator {
    endpoint: String,
    stop: tokio::sync::oneshot::Sender<()>,
    log: std::sync::mpsc::Receiver<Vec<RequestRecord>>,
}

impl IsolatedSimulator {
    fn start(config: SimulatorConfig) -> Self {
        let (endpoint_tx, endpoint_rx) = std::sync::mpsc::channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (log_tx, log) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the simulator");
            runtime.block_on(async move {
                let sim = EcsSimulator::start(config)
                    .await
                    .expect("start the simulator");
                endpoint_tx.send(sim.endpoint()).expect("send the endpoint");
                let _ = stop_rx.await;
                let _ = log_tx.send(sim.requests());
            });
        });
        let endpoint = endpoint_rx.recv().expect("the simulator started");
        Self {
            endpoint,
            stop,
            log,
        }
    }

    fn endpoint(&self) -> String {
        self.endpoint.clone()
    }

    /// Stops the simulator and returns its request log.
    fn stop(self) -> Vec<RequestRecord> {
        let _ = self.stop.send(());
        self.log.recv().expect("the simulator's request log")
    }
}
