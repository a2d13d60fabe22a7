//! Two real `run --leader-elect` processes against the in-process API and the
//! ECS simulator: only the Lease holder sends (exactly one request per
//! resource), a SIGKILLed leader is replaced by the other process, and SIGTERM
//! releases the Lease.

mod common;

use common::{Env, PATIENCE, cic, phase};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;

const LEASE: &str = "copyimage-canceller";
const LEASE_NS: &str = "default";
const REPLICA_B: &str = "replica-b";
const ELECTION_ARGS: [&str; 7] = [
    "--leader-elect",
    "--leader-election-namespace",
    LEASE_NS,
    "--leader-lease-duration",
    "3s",
    "--leader-renew-grace",
    "1s",
];

async fn holder(env: &Env) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), LEASE_NS);
    leases
        .get_opt(LEASE)
        .await
        .expect("read the Lease")
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
        .filter(|h| !h.is_empty())
}

async fn wait_holder(env: &Env, what: &str, ok: impl Fn(Option<&str>) -> bool) -> Option<String> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let h = holder(env).await;
        if ok(h.as_deref()) {
            return h;
        }
        if tokio::time::Instant::now() > deadline {
            env.fail(&format!(
                "Lease holder not {what} after {PATIENCE:?} (now {h:?}); replica b log:\n{}",
                env.replica_log(REPLICA_B)
            ));
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Creates resources `prefix-0..n` and checks each ends Succeeded after exactly one request.
async fn cancel_batch(env: &Env, prefix: &str, n: usize) {
    let images: Vec<String> = (0..n)
        .map(|i| format!("m-bp1leader{prefix}{i:03}"))
        .collect();
    for (i, image) in images.iter().enumerate() {
        env.copying(image);
        env.create(&cic(&format!("{prefix}-{i}"), image)).await;
    }
    for (i, image) in images.iter().enumerate() {
        let name = format!("{prefix}-{i}");
        let done = env.wait_finished(&name).await;
        assert_eq!(phase(&done).as_deref(), Some("Succeeded"), "{name}");
        let requests = env.ecs_requests(image);
        assert_eq!(
            requests.len(),
            1,
            "{name}: exactly one CancelCopyImage expected, got {requests:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_lease_holder_sends_and_the_follower_takes_over() {
    let mut env = Env::sandbox_with_args(&ELECTION_ARGS).await;
    // The second replica (the harness runs the first).
    let mut b = env.spawn_replica(REPLICA_B, &ELECTION_ARGS);
    let first = wait_holder(&env, "set", |h| h.is_some()).await.unwrap();

    cancel_batch(&env, "before", 6).await;
    // Both processes still running: the follower waited, it did not fail.
    assert!(env.controller_alive(), "replica a exited");
    assert!(
        b.try_wait().expect("poll replica b").is_none(),
        "replica b exited"
    );

    // SIGKILL the leader: no release, the follower must wait out the Lease.
    let mut survivor = if first == REPLICA_B {
        b.kill().await.expect("SIGKILL replica b");
        None
    } else {
        env.kill_controller().await;
        Some(b)
    };
    let second = wait_holder(&env, "taken over", |h| h.is_some_and(|h| h != first))
        .await
        .unwrap();
    assert_ne!(second, first);

    cancel_batch(&env, "after", 6).await;

    // SIGTERM the new leader: it releases the Lease on the way out.
    let pid = match &survivor {
        Some(b) => b.id().expect("replica b pid"),
        None => env.controller_pid(),
    };
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    wait_holder(&env, "released", |h| h.is_none()).await;
    if let Some(b) = survivor.as_mut() {
        let exit = tokio::time::timeout(PATIENCE, b.wait())
            .await
            .expect("replica b exits after SIGTERM")
            .expect("wait for replica b");
        assert!(exit.success(), "replica b after SIGTERM: {exit:?}");
    }
    env.cleanup().await;
}
