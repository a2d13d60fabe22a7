//! Adaptive pacing through the real `run` binary against the ECS simulator's
//! quota mode (calls per access key and region per second, HTTP 400
//! `Throttling.User` past it): every resource ends with exactly one accepted
//! request and no throttling counted against it, the pacing metrics and log
//! line appear without the key ID, a service's `x-acs-retry-after` holds the
//! scope back, and a resource that waits its turn says so from its first
//! status. Correctness only: how fast a backlog drains is the benchmark's
//! (`cargo bench --bench pacing`).

mod common;

use std::time::Duration;

use common::{
    Env, OPERATOR_KEY_ID, SandboxOptions, assert_phase, cic, cond, http_get, operator_key,
};
use copyimage_stand_ins::ecs_simulator::{FaultCount, FaultKind, QuotaLimits, SimulatorConfig};
use jiff::SignedDuration;

const REGION: &str = "cn-hangzhou";
/// Calls the simulator accepts per second for the operator's key in the region.
const QUOTA: u32 = 20;
/// Far more than one second's quota: the controller alone sends a few hundred
/// requests a second here, so the first second throttles.
const RESOURCES: usize = 60;

fn images(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("m-bp1{prefix}{i:04}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_against_the_quota_is_paced_and_each_copy_is_cancelled_once() {
    let mut simulator = SimulatorConfig::new([operator_key()]);
    simulator.quota = QuotaLimits {
        per_second: Some(QUOTA),
        per_minute: None,
    };
    simulator.request_log_capacity = 100_000;
    let mut options = SandboxOptions {
        simulator,
        ..SandboxOptions::default()
    };
    options
        .controller_args
        .extend(["--admin-addr".to_string(), "127.0.0.1:0".to_string()]);
    let mut env = Env::sandbox_with(options).await;
    let images = images("paced", RESOURCES);
    for image in &images {
        env.copying(image);
    }
    env.start_controller();
    let names: Vec<String> = (0..RESOURCES).map(|i| format!("paced-{i:04}")).collect();
    let resources: Vec<_> = names
        .iter()
        .zip(&images)
        .map(|(name, image)| cic(name, image))
        .collect();
    futures::future::join_all(resources.iter().map(|r| env.create(r))).await;

    let mut throttled_in_status = 0;
    for (name, image) in names.iter().zip(&images) {
        let done = env.wait_finished(name).await;
        assert_phase(&done, "Succeeded");
        let status = done.status.as_ref().unwrap();
        // Throttling is retried and never counted against backoffLimit.
        assert_eq!(status.failed_attempts, 0, "{name}");
        let sent = env.ecs_requests(image);
        let accepted: Vec<_> = sent.iter().filter(|r| r.code == "Success").collect();
        assert_eq!(accepted.len(), 1, "{name}: {sent:?}");
        for refused in sent.iter().filter(|r| r.code != "Success") {
            assert_eq!(
                (refused.code.as_str(), refused.fault.as_deref()),
                ("Throttling.User", Some("quota-per-second")),
                "{name}: only the quota refused it"
            );
        }
        // Every request sent is an attempt in status.
        assert_eq!(status.attempts as usize, sent.len(), "{name}");
        throttled_in_status += sent.len() - 1;
    }
    assert!(
        throttled_in_status > 0,
        "the backlog never met the quota: this run proves nothing"
    );

    let admin = env.wait_admin_addr(|| env.controller_log(), "").await;
    let (_, metrics) = http_get(&admin, "/metrics").await.expect("/metrics");
    let throttled_line = format!(
        "copyimage_canceller_ecs_throttled_total{{region=\"{REGION}\"}} {throttled_in_status}"
    );
    assert!(
        metrics.lines().any(|l| l == throttled_line),
        "missing {throttled_line:?} in\n{metrics}"
    );
    assert!(
        metrics.lines().any(|l| l.starts_with(&format!(
            "copyimage_canceller_ecs_pace_requests_per_second{{region=\"{REGION}\"}} "
        ))),
        "{metrics}"
    );
    let log = env.controller_log();
    assert!(
        log.lines()
            .any(|l| l.contains("pacing CancelCopyImage") && l.contains(REGION)),
        "no pacing line in the log"
    );
    for (what, text) in [("metrics", &metrics), ("log", &log)] {
        assert!(
            !text.contains(OPERATOR_KEY_ID),
            "the key ID is in the {what}"
        );
    }
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_holds_the_scope_and_a_new_resource_says_it_waits_its_turn() {
    const FIRST: &str = "m-bp1retryafterfirst";
    const LATE: &str = "m-bp1retryafterlate";
    const HOLD: Duration = Duration::from_secs(4);
    let mut env = Env::sandbox_not_started(&[]).await;
    env.copying(FIRST);
    env.copying(LATE);
    env.fault(
        FIRST,
        FaultKind::Throttling {
            retry_after: Some(HOLD),
        },
        FaultCount::Times(1),
    );
    env.start_controller();
    env.create(&cic("first", FIRST)).await;
    env.wait_for("first", "throttled", |c| {
        cond(c, "Reconciling").is_some_and(|(_, reason)| reason == "Throttled")
    })
    .await;
    env.create(&cic("late", LATE)).await;
    let waiting = env
        .wait_for("late", "awaiting the pace", |c| {
            cond(c, "Reconciling").is_some_and(|(_, reason)| reason == "AwaitingPace")
        })
        .await;
    // Its first status, written before anything was sent.
    assert_phase(&waiting, "Pending");
    assert_eq!(waiting.status.as_ref().unwrap().attempts, 0);
    assert!(env.ecs_requests(LATE).is_empty());

    for name in ["first", "late"] {
        assert_phase(&env.wait_finished(name).await, "Succeeded");
    }
    // Nothing reached the service before x-acs-retry-after had passed since
    // the throttled request (the floor is counted from its answer, later still).
    let throttled_at = env.ecs_requests(FIRST)[0].time;
    let mut after: Vec<_> = env.ecs_requests(FIRST)[1..].to_vec();
    after.extend(env.ecs_requests(LATE));
    assert_eq!(after.len(), 2, "{after:?}");
    for r in after {
        let waited = r.time.duration_since(throttled_at);
        assert!(
            waited >= SignedDuration::try_from(HOLD).unwrap() - SignedDuration::from_millis(50),
            "sent {waited:?} after the throttling answer"
        );
    }
    env.cleanup().await;
}
