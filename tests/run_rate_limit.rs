//! The real `run` binary with `--ecs-qps`/`--ecs-burst`: a burst of resources
//! reaches the ECS simulator no faster than the token bucket allows. Asserts
//! a lower bound on spacing only (slowness cannot fail it).

use std::time::Duration;

use copyimage_canceller::credentials::AccessKey;
use copyimage_canceller::resource::{CopyImageCancellation, CopyImageCancellationSpec, Phase};
use copyimage_canceller::sandbox::ecs_simulator::{EcsSimulator, ImageState, SimulatorConfig};
use copyimage_canceller::sandbox::kube_api::KubeApi;
use kube::CustomResourceExt;
use kube::api::{Api, ListParams, PostParams};

/// Generous: only a bound on a hung test, never a performance assertion.
const PATIENCE: Duration = Duration::from_secs(120);
const NS: &str = "images";
const KEY_ID: &str = "LTAI5tRateLimitKeyId";
const KEY_SECRET: &str = "rate-limit-secret-never-shown";
const RESOURCES: usize = 20;
const QPS: u32 = 5;
const BURST: u32 = 2;
/// Requests that transit jitter may bunch beyond the bucket's allowance
/// (the simulator stamps arrival, not release): 2 at 5 qps is 400 ms of jitter.
const SLACK: f64 = 2.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_resources_never_exceeds_the_configured_rate() {
    let api = KubeApi::start(vec![CopyImageCancellation::crd()])
        .await
        .unwrap();
    let images: Vec<String> = (0..RESOURCES)
        .map(|i| format!("m-bp1ratelimit{i:04}"))
        .collect();
    let mut config = SimulatorConfig::new([AccessKey::new(KEY_ID, KEY_SECRET, None)]);
    for image in &images {
        config = config.with_image(image, ImageState::Copying);
    }
    let ecs = EcsSimulator::start(config).await.unwrap();
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
        .args(["--max-concurrent-reconciles", "16"])
        .env("KUBECONFIG", &kubeconfig)
        .env("ALIBABA_CLOUD_ACCESS_KEY_ID", KEY_ID)
        .env("ALIBABA_CLOUD_ACCESS_KEY_SECRET", KEY_SECRET)
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    let cics: Api<CopyImageCancellation> = Api::namespaced(api.client().unwrap(), NS);
    for (i, image) in images.iter().enumerate() {
        let mut cic = CopyImageCancellation::new(
            &format!("burst-{i}"),
            CopyImageCancellationSpec {
                region_id: "cn-hangzhou".into(),
                image_id: image.clone(),
                credentials_secret_ref: None,
                backoff_limit: 6,
                active_deadline_seconds: None,
            },
        );
        cic.metadata.namespace = Some(NS.into());
        cics.create(&PostParams::default(), &cic).await.unwrap();
    }
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
            if done == RESOURCES {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("every resource Succeeded within PATIENCE");
    child.start_kill().unwrap();

    let mut times: Vec<jiff::Timestamp> = ecs
        .requests()
        .into_iter()
        .filter(|r| r.action.as_deref() == Some("CancelCopyImage"))
        .map(|r| r.time)
        .collect();
    assert_eq!(times.len(), RESOURCES, "one request per resource");
    times.sort();
    // Any run of requests i..=j fits the bucket: at most BURST plus QPS per
    // second of the span between them (plus SLACK for transit jitter).
    for i in 0..times.len() {
        for j in i + 1..times.len() {
            let span = times[j].duration_since(times[i]).as_secs_f64();
            let count = (j - i + 1) as f64;
            let allowed = f64::from(BURST) + f64::from(QPS) * span + SLACK;
            assert!(
                count <= allowed,
                "requests {i}..={j}: {count} within {span:.3}s, allowed {allowed:.1}"
            );
        }
    }
}
