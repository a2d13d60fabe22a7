//! The real `run` binary's life cycle around its work: SIGTERM with requests
//! in flight (drained when they finish within `--shutdown-timeout`, abandoned
//! and named when they do not), and `/readyz` following the reachability of
//! the Kubernetes API.

mod common;

use std::time::{Duration, Instant};

use common::{Env, OPERATOR_KEY_SECRET, OPERATOR_TOKEN, cic, outcomes, phase, yaml};
use copyimage_canceller::sandbox::ecs_simulator::{FaultCount, FaultKind};

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
    assert_eq!(
        phase(&done).as_deref(),
        Some("Succeeded"),
        "{}",
        yaml(&done)
    );
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
    assert_eq!(
        phase(&done).as_deref(),
        Some("Succeeded"),
        "{}",
        yaml(&done)
    );
    assert_eq!(outcomes(&done), ["Unknown", "Succeeded"]);
    assert_eq!(env.ecs_requests("m-held").len(), 2);
}
