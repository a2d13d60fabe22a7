//! The real `run` binary's life cycle around its work: SIGTERM with requests
//! in flight (drained when they finish within `--shutdown-timeout`, abandoned
//! and named when they do not), and `/readyz` following the reachability of
//! the Kubernetes API.

mod common;

use std::time::{Duration, Instant};

use common::{
    Env, OPERATOR_KEY_SECRET, OPERATOR_TOKEN, PATIENCE, assert_phase, cic, http_get, outcomes,
    phase, yaml,
};
use copyimage_stand_ins::ecs_simulator::{FaultCount, FaultKind};
use copyimage_stand_ins::kube_api::{Fault, Verb};

/// SIGTERM while ECS answers within the timeout: the answer is recorded, exit 0.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_request_that_answers_within_the_timeout_be_recorded() {
    let mut env = Env::sandbox_with_args(&["--shutdown-timeout", "40s"]).await;
    env.copying("m-drained");
    env.fault(
        "m-drained",
        FaultKind::Latency {
            delay: Duration::from_secs(2),
        },
        FaultCount::Times(1),
    );
    env.create(&cic("drained", "m-drained")).await;
    env.eventually("the request at ECS", |env| {
        !env.ecs_requests("m-drained").is_empty()
    })
    .await;
    let exit = env.terminate_controller().await;
    assert!(exit.success(), "{exit:?}\n{}", env.controller_log());
    let done = env.get("drained").await;
    assert_phase(&done, "Succeeded");
    assert_eq!(outcomes(&done), ["Succeeded"]);
    assert_eq!(env.ecs_requests("m-drained").len(), 1);
}

/// SIGTERM while ECS holds the request open: the process gives up after
/// `--shutdown-timeout`, names the resource and exits 1; the write-ahead left
/// an `Unknown` attempt that the next process repeats.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_abandons_a_request_held_past_the_timeout_and_names_it() {
    let mut env = Env::sandbox_with_args(&["--shutdown-timeout", "2s"]).await;
    env.copying("m-held");
    env.fault("m-held", FaultKind::Hang, FaultCount::Times(1));
    env.create(&cic("held", "m-held")).await;
    env.eventually("the request held at ECS", |env| {
        !env.ecs_requests("m-held").is_empty()
    })
    .await;
    let signalled = Instant::now();
    let exit = env.terminate_controller().await;
    let took = signalled.elapsed();
    let log = env.controller_log();
    assert_eq!(exit.code(), Some(1), "{exit:?}\n{log}");
    // Generous: without the timeout the held request would keep it forever.
    assert!(took < Duration::from_secs(30), "exited after {took:?}");
    let warning = log
        .lines()
        .find(|l| l.contains("WARN") && l.contains("--shutdown-timeout 2s passed"))
        .unwrap_or_else(|| panic!("no shutdown Warning in\n{log}"));
    assert!(warning.contains("images/held"), "{warning}");
    assert!(warning.contains("count=1"), "{warning}");
    assert!(log.contains("reconcile(s) still in flight"), "{log}");
    for secret in [OPERATOR_KEY_SECRET, OPERATOR_TOKEN] {
        assert!(!log.contains(secret), "a secret reached the log");
    }
    let held = env.get("held").await;
    assert_eq!(outcomes(&held), ["Unknown"], "{}", yaml(&held));
    assert_eq!(phase(&held).as_deref(), Some("Running"));

    // The next process sends the attempt again; the copy was still running.
    env.start_controller();
    let done = env.wait_finished("held").await;
    assert_phase(&done, "Succeeded");
    assert_eq!(outcomes(&done), ["Unknown", "Succeeded"]);
    assert_eq!(env.ecs_requests("m-held").len(), 2);
}

/// Polls `path` until its answer satisfies `done`; returns that answer.
async fn poll_until(
    env: &Env,
    admin: &str,
    path: &str,
    what: &str,
    done: impl Fn(u16, &str) -> bool,
) -> (u16, String) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut last = None;
    loop {
        if let Some((code, body)) = http_get(admin, path).await {
            if done(code, &body) {
                return (code, body);
            }
            last = Some((code, body));
        }
        if tokio::time::Instant::now() > deadline {
            env.fail(&format!(
                "{path}: not {what} after {PATIENCE:?}; last: {last:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The API answers 500 to every list and watch: /readyz turns 503 naming the
/// API while /livez stays 200; once the API answers again /readyz is 200 and
/// the controller works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_not_ready_while_the_kubernetes_api_fails_and_recovers_after() {
    let env = Env::sandbox_with_args(&[
        "--admin-addr",
        "127.0.0.1:0",
        "--api-probe-interval",
        "300ms",
    ])
    .await;
    let admin = env.wait_admin_addr(|| env.controller_log(), "").await;
    poll_until(&env, &admin, "/readyz", "ready", |code, _| code == 200).await;

    let api = env.sandbox_api();
    for verb in [Verb::List, Verb::Watch] {
        api.inject_fault(Fault::internal_error(u32::MAX).verb(verb));
    }
    // Open watches end and cannot start again; the probe's list fails too.
    api.drop_watches();
    let (_, why) = poll_until(&env, &admin, "/readyz", "unready", |code, _| code == 503).await;
    assert!(why.starts_with("Kubernetes API unreachable: "), "{why}");
    assert!(
        why.contains("500") || why.contains("InternalError"),
        "{why}"
    );
    let (live, _) = http_get(&admin, "/livez").await.expect("/livez answers");
    assert_eq!(live, 200, "an API outage is not a reason to restart");
    // It stays unready while the API keeps failing (the probe does not clear it).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (code, body) = http_get(&admin, "/readyz").await.expect("/readyz answers");
    assert_eq!(
        (code, body.starts_with("Kubernetes API unreachable")),
        (503, true),
        "{body}"
    );

    api.clear_faults();
    poll_until(&env, &admin, "/readyz", "ready again", |code, _| {
        code == 200
    })
    .await;
    env.copying("m-afteroutage");
    env.create(&cic("after-outage", "m-afteroutage")).await;
    let done = env.wait_finished("after-outage").await;
    assert_phase(&done, "Succeeded");
    let log = env.controller_log();
    for secret in [OPERATOR_KEY_SECRET, OPERATOR_TOKEN] {
        assert!(!log.contains(secret), "a secret reached the log");
    }
}
