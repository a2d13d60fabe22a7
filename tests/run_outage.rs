//! ECS outages through the real `run` binary, with its default retry flags,
//! against the simulator's whole-endpoint outages: a backlog that meets an
//! outage longer than the default retry budget is waited out (every resource
//! `Succeeded`, one accepted request each, nothing counted), the resources say
//! `EcsUnavailable` while it lasts, and the metrics and the log say so once. A
//! poisoned image in a healthy region still runs out of retries without
//! opening the breaker; `activeDeadlineSeconds` still ends a resource during
//! an outage; a region whose endpoint does not exist fails with its own
//! reason; SIGTERM during an outage exits. How fast a backlog drains after an
//! outage is the benchmark's (`cargo bench --bench outage`).

mod common;

use std::time::Duration;

use common::{
    Env, FollowedRun, OPERATOR_KEY_ID, OPERATOR_KEY_SECRET, OPERATOR_TOKEN, PATIENCE,
    SandboxOptions, assert_phase, cic, cond, condition, http_get, operator_key,
};
use copyimage_stand_ins::ecs_simulator::{FaultCount, FaultKind, OutageMode, SimulatorConfig};

const REGION: &str = "cn-hangzhou";
/// Longer than the default retry budget (1 s base, full jitter, 6 retries:
/// about half a minute), as the issue asks.
const OUTAGE: Duration = Duration::from_secs(45);
/// Resources finished before the outage, and created during it.
const BEFORE: usize = 5;
const DURING: usize = 15;

/// `run` flags: the default retry delays (none given), an admin server.
fn default_retry_args() -> Vec<String> {
    ["--log-level", "debug", "--admin-addr", "127.0.0.1:0"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

async fn metrics(env: &Env) -> String {
    let admin = env.wait_admin_addr(|| env.controller_log(), "").await;
    http_get(&admin, "/metrics").await.expect("/metrics").1
}

fn metric(text: &str, name: &str) -> Option<f64> {
    let prefix = format!("{name}{{region=\"{REGION}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.parse().expect("a number"))
}

fn reason(c: &copyimage_canceller::resource::CopyImageCancellation) -> Option<String> {
    cond(c, "Reconciling").map(|(_, reason)| reason)
}

/// One outage of `mode` in the middle of a backlog, waited out.
async fn waited_out(mode: OutageMode) {
    let mut simulator = SimulatorConfig::new([operator_key()]);
    simulator.request_log_capacity = 100_000;
    let mut env = Env::sandbox_with(SandboxOptions {
        simulator,
        controller_args: default_retry_args(),
        ..SandboxOptions::default()
    })
    .await;
    let name = |i: usize| format!("{mode}-{i:03}");
    let image = |i: usize| format!("m-bp1{mode}{i:04}");
    for i in 0..BEFORE + DURING {
        env.copying(&image(i));
    }
    env.start_controller();
    // The backlog's head goes through while the endpoint answers.
    let head: Vec<_> = (0..BEFORE).map(|i| cic(&name(i), &image(i))).collect();
    futures::future::join_all(head.iter().map(|r| env.create(r))).await;
    for i in 0..BEFORE {
        assert_phase(&env.wait_finished(&name(i)).await, "Succeeded");
    }
    let before = metrics(&env).await;
    assert_eq!(
        metric(&before, "copyimage_canceller_ecs_endpoint_available"),
        Some(1.0),
        "{mode}: available before the outage\n{before}"
    );

    env.sim.set_outage(Some(mode), None).await;
    let started = tokio::time::Instant::now();
    let rest: Vec<_> = (BEFORE..BEFORE + DURING)
        .map(|i| cic(&name(i), &image(i)))
        .collect();
    futures::future::join_all(rest.iter().map(|r| env.create(r))).await;
    // While it lasts, resources say why they wait: region, since, last error.
    let names: Vec<String> = (BEFORE..BEFORE + DURING).map(name).collect();
    env.eventually_async(
        &format!("{mode}: a resource waits with EcsUnavailable"),
        || {
            let env = &env;
            let names = &names;
            async move {
                for n in names {
                    let c = env.get(n).await;
                    if reason(&c).as_deref() == Some("EcsUnavailable") {
                        let message = condition(&c, "Reconciling").unwrap().message.clone();
                        assert!(
                            message.contains(REGION)
                                && message.contains("unavailable since")
                                && message.contains("last error"),
                            "{mode}: {message}"
                        );
                        return true;
                    }
                }
                false
            }
        },
    )
    .await;
    let during = metrics(&env).await;
    assert_eq!(
        metric(&during, "copyimage_canceller_ecs_endpoint_available"),
        Some(0.0),
        "{mode}: unavailable during the outage\n{during}"
    );
    tokio::time::sleep_until(started + OUTAGE).await;
    // Nothing counted, nothing failed, whatever the outage cost.
    for n in &names {
        let c = env.get(n).await;
        let status = c.status.clone().unwrap_or_default();
        assert_eq!(status.failed_attempts, 0, "{mode}: {n} counted an outage");
        assert_ne!(
            status.phase.map(|p| format!("{p:?}")).as_deref(),
            Some("Failed"),
            "{mode}: {n}"
        );
    }
    env.sim.set_outage(None, None).await;

    for i in 0..BEFORE + DURING {
        let done = env.wait_finished(&name(i)).await;
        assert_phase(&done, "Succeeded");
        let status = done.status.as_ref().unwrap();
        assert_eq!(status.failed_attempts, 0, "{mode}: {}", name(i));
        let sent = env.ecs_requests(&image(i));
        let accepted = sent.iter().filter(|r| r.code == "Success").count();
        assert_eq!(accepted, 1, "{mode}: {}: {sent:?}", name(i));
    }
    let after = metrics(&env).await;
    assert_eq!(
        metric(&after, "copyimage_canceller_ecs_endpoint_available"),
        Some(1.0),
        "{mode}: available again\n{after}"
    );
    assert!(
        metric(&after, "copyimage_canceller_ecs_requests_held_total").is_some_and(|n| n >= 1.0),
        "{mode}: {after}"
    );
    assert!(
        metric(&after, "copyimage_canceller_ecs_outage_seconds_total").is_some_and(|s| s > 0.0),
        "{mode}: {after}"
    );
    // Logged once when it opened and once when it closed, not per resource.
    let log = env.controller_log();
    let opened = log
        .lines()
        .filter(|l| l.contains("the ECS endpoint of this region is failing"))
        .count();
    let closed = log
        .lines()
        .filter(|l| l.contains("the ECS endpoint of this region answers again"))
        .count();
    assert_eq!((opened, closed), (1, 1), "{mode}: open/close log lines");
    // The outage's words (the breaker's last error, shown to every waiting
    // resource and logged) carry no secret.
    for leaked in [OPERATOR_KEY_SECRET, OPERATOR_TOKEN] {
        assert!(!log.contains(leaked), "{mode}: a secret in the log");
        for n in &names {
            let status = serde_json::to_string(&env.get(n).await.status).unwrap();
            assert!(!status.contains(leaked), "{mode}: a secret in {n}'s status");
        }
    }
    env.cleanup().await;
}

/// The three kinds at once, each with its own API and simulator, so the
/// suite's time grows by about one outage, not three.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_outage_kind_in_the_middle_of_a_backlog_is_waited_out() {
    futures::future::join3(
        waited_out(OutageMode::Refuse),
        waited_out(OutageMode::Blackhole),
        waited_out(OutageMode::Unavailable),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poisoned_image_in_a_healthy_region_runs_out_of_retries_and_the_breaker_stays_closed() {
    const POISONED: &str = "m-bp1poisoned0001";
    let mut env = Env::sandbox_not_started(&["--admin-addr", "127.0.0.1:0"]).await;
    env.copying(POISONED);
    env.fault(POISONED, FaultKind::InternalError, FaultCount::Always);
    let healthy: Vec<String> = (0..6).map(|i| format!("m-bp1healthy{i:04}")).collect();
    for image in &healthy {
        env.copying(image);
    }
    env.start_controller();
    env.create(&cic("poisoned", POISONED)).await;
    for (i, image) in healthy.iter().enumerate() {
        env.create(&cic(&format!("healthy-{i}"), image)).await;
    }
    let done = env.wait_finished("poisoned").await;
    assert_phase(&done, "Failed");
    assert_eq!(
        cond(&done, "Stalled"),
        Some(("True".into(), "RetriesExhausted".into()))
    );
    let status = done.status.as_ref().unwrap();
    assert_eq!(
        status.failed_attempts, 7,
        "backoffLimit 6 + 1, every one counted"
    );
    assert_eq!(env.ecs_requests(POISONED).len(), 7);
    for i in 0..healthy.len() {
        assert_phase(
            &env.wait_finished(&format!("healthy-{i}")).await,
            "Succeeded",
        );
    }
    let text = metrics(&env).await;
    assert_eq!(
        metric(&text, "copyimage_canceller_ecs_endpoint_available"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "copyimage_canceller_ecs_requests_held_total"),
        None,
        "{text}"
    );
    assert!(
        !env.controller_log().contains("region is failing"),
        "the breaker opened for one image's InternalError"
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_deadline_ends_a_resource_during_an_outage() {
    const IMAGE: &str = "m-bp1deadline0001";
    let mut env = Env::sandbox_with(SandboxOptions {
        controller_args: default_retry_args(),
        ..SandboxOptions::default()
    })
    .await;
    env.copying(IMAGE);
    env.sim
        .set_outage(Some(OutageMode::Unavailable), None)
        .await;
    env.start_controller();
    let mut resource = cic("deadline", IMAGE);
    resource.spec.active_deadline_seconds = Some(8);
    env.create(&resource).await;
    let done = env.wait_finished("deadline").await;
    assert_phase(&done, "Failed");
    assert_eq!(
        cond(&done, "Stalled"),
        Some(("True".into(), "DeadlineExceeded".into()))
    );
    let status = done.status.as_ref().unwrap();
    assert_eq!(status.failed_attempts, 0, "the outage was never counted");
    assert_eq!(status.error_code.as_deref(), Some("ServiceUnavailable"));
    // Requests went out (the first, and probes), none accepted.
    let sent = env.ecs_requests(IMAGE);
    assert!(
        !sent.is_empty() && sent.iter().all(|r| r.code == "ServiceUnavailable"),
        "{sent:?}"
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_an_outage_exits_and_nothing_is_lost() {
    let mut env = Env::sandbox_with(SandboxOptions {
        controller_args: default_retry_args(),
        ..SandboxOptions::default()
    })
    .await;
    let images: Vec<String> = (0..5).map(|i| format!("m-bp1sigterm{i:04}")).collect();
    for image in &images {
        env.copying(image);
    }
    env.sim.set_outage(Some(OutageMode::Refuse), None).await;
    env.start_controller();
    for (i, image) in images.iter().enumerate() {
        env.create(&cic(&format!("sigterm-{i}"), image)).await;
    }
    env.wait_for("sigterm-0", "waiting for the endpoint", |c| {
        reason(c).as_deref() == Some("EcsUnavailable")
    })
    .await;
    let status = env.terminate_controller().await;
    assert!(status.success(), "{status:?}");
    // The next process starts with the breaker closed and finishes the work.
    env.sim.set_outage(None, None).await;
    env.start_controller();
    for i in 0..images.len() {
        let done = env.wait_finished(&format!("sigterm-{i}")).await;
        assert_phase(&done, "Succeeded");
        assert_eq!(done.status.as_ref().unwrap().failed_attempts, 0);
    }
    env.cleanup().await;
}

/// The user's path to a region that does not exist: the endpoint template's
/// host is under `.invalid` (RFC 6761: never resolves), looked up by the
/// machine's own resolver, confirmed, and reported as such.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_whose_endpoint_does_not_resolve_fails_with_its_own_reason() {
    let env = Env::sandbox_with(SandboxOptions::default()).await;
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_copyimage-canceller"));
    command
        .arg("run")
        .args(["--ecs-endpoint", "http://ecs.{regionId}.invalid:8080"])
        .args(["--allow-insecure-endpoint", "--log-format", "json"])
        .args(["--admin-addr", "127.0.0.1:0"])
        .env("ALIBABA_CLOUD_ACCESS_KEY_ID", OPERATOR_KEY_ID)
        .env("ALIBABA_CLOUD_ACCESS_KEY_SECRET", OPERATOR_KEY_SECRET)
        .env("ALIBABA_CLOUD_SECURITY_TOKEN", OPERATOR_TOKEN)
        .env("KUBECONFIG", env.dir().join("kubeconfig"))
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG");
    let mut run = FollowedRun::spawn(command).await;
    env.create(&cic("nowhere", "m-bp1nowhere0001")).await;
    let done = env.wait_finished("nowhere").await;
    assert_phase(&done, "Failed");
    assert_eq!(
        cond(&done, "Stalled"),
        Some(("True".into(), "RegionEndpointNotFound".into()))
    );
    let status = done.status.as_ref().unwrap();
    assert_eq!(
        (
            status.attempts,
            status.failed_attempts,
            status.ambiguous_attempts
        ),
        (1, 0, 0)
    );
    let message = &condition(&done, "Stalled").unwrap().message;
    assert!(
        message.contains("ecs.cn-hangzhou.invalid") && message.contains("does not exist"),
        "{message}"
    );
    assert!(env.sim.requests().is_empty(), "nothing reached any ECS");
    let log = run.log();
    assert!(
        !log.contains("region is failing"),
        "NXDOMAIN is not an outage"
    );
    let _ = run.kill().await;
    env.cleanup().await;
}

/// The staging rehearsal: `ecs-simulator --outage` starts one on a timer,
/// and `PUT /_simulator/outage` starts and ends one by hand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_rehearses_an_incident_from_its_flag_and_its_control_route() {
    use tokio::io::AsyncBufReadExt;
    let mut sim = tokio::process::Command::new(env!("CARGO_BIN_EXE_copyimage-canceller"))
        .args(["ecs-simulator", "--listen", "127.0.0.1:0"])
        .args(["--image", "m-bp1rehearsal01=copying"])
        .args(["--outage", "unavailable:1h"])
        .env("ALIBABA_CLOUD_ACCESS_KEY_ID", OPERATOR_KEY_ID)
        .env("ALIBABA_CLOUD_ACCESS_KEY_SECRET", OPERATOR_KEY_SECRET)
        .env_remove("ALIBABA_CLOUD_SECURITY_TOKEN")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn ecs-simulator");
    let stdout = sim.stdout.take().expect("stdout");
    let endpoint = tokio::io::BufReader::new(stdout)
        .lines()
        .next_line()
        .await
        .expect("read the endpoint")
        .expect("the endpoint line");
    let client = copyimage_canceller::ecs::client::EcsClient::new(
        copyimage_canceller::ecs::client::EcsClientConfig {
            endpoint: endpoint.clone(),
            ..Default::default()
        },
    )
    .unwrap();
    let key = copyimage_canceller::credentials::AccessKey::new(
        OPERATOR_KEY_ID,
        OPERATOR_KEY_SECRET,
        None,
    );
    let cancel = || client.cancel_copy_image(&key, REGION, "m-bp1rehearsal01");
    let outcome = cancel().await;
    assert_eq!(
        outcome.retry_class(),
        copyimage_canceller::ecs::RetryClass::Outage,
        "{outcome:?}"
    );
    let http = reqwest::Client::new();
    let put = |body: &'static str| {
        http.put(format!("{endpoint}/_simulator/outage"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let refused = put(r#"{"mode":"refuse"}"#).await.unwrap();
    assert_eq!(refused.status().as_u16(), 400);
    assert!(refused.text().await.unwrap().contains("forMs"));
    assert!(
        put(r#"{"mode":"none"}"#)
            .await
            .unwrap()
            .status()
            .is_success()
    );
    let mode = || async {
        let body = http
            .get(format!("{endpoint}/_simulator/outage"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        Some(body)
    };
    // NB: the change is applied a moment after the answer.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while mode().await.is_none_or(|m| !m.contains("\"none\"")) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the outage never ended"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let outcome = cancel().await;
    assert_eq!(
        outcome.retry_class(),
        copyimage_canceller::ecs::RetryClass::Success,
        "{outcome:?}"
    );
    sim.kill().await.expect("stop ecs-simulator");
}
