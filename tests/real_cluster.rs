//! The key end-to-end scenarios against a REAL cluster (kind, k3d, ...), for
//! users who want to check theirs: the CRD is installed from this build, each
//! test gets a fresh namespace, the ECS simulator runs locally and the
//! controller runs as a local `copyimage-canceller run --watch-namespace NS`
//! process.
//!
//! Opt in with BOTH `KUBECONFIG=<file>` and `COPYIMAGE_CANCELLER_REAL_CLUSTER=1`:
//!
//! ```text
//! COPYIMAGE_CANCELLER_REAL_CLUSTER=1 KUBECONFIG=~/.kube/config \
//!   cargo test --test real_cluster -- --nocapture
//! ```
//!
//! NB: without both, every `real_cluster_*` test returns at once after
//! printing "skipped: set COPYIMAGE_CANCELLER_REAL_CLUSTER=1": a pass then
//! proves nothing about a cluster. `rehearsal_*` runs the same scenarios on
//! the in-process API, set up the same way, so the suite itself stays working.

mod common;

use common::*;
use copyimage_canceller::resource::SPEC_IMMUTABLE_MESSAGE;
use copyimage_stand_ins::AccessKey;
use copyimage_stand_ins::ecs_simulator::{FaultCount, FaultKind, ImageState};
use kube::api::{Patch, PatchParams};

/// Success, two InternalErrors then success, and a terminal code.
async fn outcomes_scenario(env: &mut Env) {
    env.copying("m-realsuccess");
    env.copying("m-realretry");
    env.fault(
        "m-realretry",
        FaultKind::InternalError,
        FaultCount::Times(2),
    );
    env.sim.set_image("m-realcopied", ImageState::Copied);
    env.create(&cic("success", "m-realsuccess")).await;
    env.create(&cic("retried", "m-realretry")).await;
    env.create(&cic("too-late", "m-realcopied")).await;

    let success = env.wait_finished("success").await;
    assert_phase(&success, "Succeeded");
    assert_eq!(
        success.status.as_ref().unwrap().request_id,
        env.ecs_requests("m-realsuccess")[0].request_id
    );
    assert_eq!(
        cond(&success, "Ready"),
        Some(("True".into(), "Cancelled".into()))
    );
    assert_final_conditions(&success);
    env.wait_event("success", "Cancelled").await;

    let retried = env.wait_finished("retried").await;
    assert_phase(&retried, "Succeeded");
    assert_eq!(retried.status.as_ref().unwrap().attempts, 3);
    assert_eq!(env.ecs_requests("m-realretry").len(), 3);
    assert_eq!(
        outcomes(&retried),
        ["InternalError", "InternalError", "Succeeded"]
    );

    let late = env.wait_finished("too-late").await;
    assert_phase(&late, "Failed");
    assert_eq!(env.ecs_requests("m-realcopied").len(), 1);
    assert_eq!(
        late.status.as_ref().unwrap().error_code.as_deref(),
        Some("IncorrectImageStatus")
    );
    assert_eq!(
        cond(&late, "Stalled"),
        Some(("True".into(), "IncorrectImageStatus".into()))
    );
    env.wait_event("too-late", "CancelFailed").await;
}

/// Nothing is sent until the Secret exists; then its key signs the request.
async fn missing_secret_scenario(env: &mut Env) {
    let team = AccessKey::new("LTAI5tRealTeamKey", "realTeamSecret", None);
    env.create_with_team_secret("waiting", "m-realwaiting", &team)
        .await;
    let waiting = env.wait_awaiting_credentials("waiting").await;
    assert_eq!(waiting.status.unwrap().attempts, 0);
    assert!(env.ecs_requests("m-realwaiting").is_empty());
    env.put_secret("team-keys", &team).await;
    env.assert_succeeded_with_key("waiting", "m-realwaiting", &team)
        .await;
}

/// The API server refuses bad input and spec changes with the schema's and CEL's messages.
async fn admission_scenario(env: &mut Env) {
    let refused = |result: Result<_, kube::Error>| match result {
        Err(kube::Error::Api(status)) => status.message,
        Ok(_) => panic!("admitted"),
        Err(other) => panic!("not an API error: {other}"),
    };
    let mut bad_region = cic("bad-region", "m-realadmission");
    bad_region.spec.region_id = "Hangzhou_1".into();
    let message = refused(env.try_create(&bad_region).await);
    assert!(message.contains("spec.regionId"), "{message}");
    let message = refused(env.try_create(&cic("bad-image", "img-123")).await);
    assert!(message.contains("spec.imageId"), "{message}");

    env.sim.set_image("m-realadmission", ImageState::Copied);
    env.create(&cic("immutable", "m-realadmission")).await;
    let change = serde_json::json!({"spec": {"imageId": "m-realother"}});
    let message = refused(
        env.cics()
            .patch("immutable", &PatchParams::default(), &Patch::Merge(&change))
            .await,
    );
    assert!(message.contains(SPEC_IMMUTABLE_MESSAGE), "{message}");
}

/// SIGKILL while ECS holds the request; the restarted controller explains the `Unknown` attempt.
async fn sigkill_scenario(env: &mut Env) {
    env.copying("m-realkill");
    env.fault("m-realkill", FaultKind::Hang, FaultCount::Times(1));
    env.create(&cic("killed", "m-realkill")).await;
    env.eventually("the request held at ECS", |env| {
        env.ecs_requests("m-realkill").len() == 1
    })
    .await;
    env.kill_controller().await;
    // The first request did cancel the copy: the repeat finds no image.
    env.sim.remove_image("m-realkill");
    env.start_controller();
    let done = env.wait_finished("killed").await;
    assert_phase(&done, "Failed");
    assert_eq!(outcomes(&done), ["Unknown", "InvalidImageId.NotFound"]);
    assert_eq!(
        cond(&done, "Stalled"),
        Some(("True".into(), "PreviousAttemptMayHaveSucceeded".into()))
    );
}

macro_rules! real_cluster_test {
    ($name:ident, $scenario:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let Some(mut env) = Env::real_cluster(stringify!($name)).await else {
                return;
            };
            $scenario(&mut env).await;
            env.cleanup().await;
        }
    };
}

real_cluster_test!(
    real_cluster_success_retries_and_a_terminal_code,
    outcomes_scenario
);
real_cluster_test!(
    real_cluster_missing_secret_then_created,
    missing_secret_scenario
);
real_cluster_test!(
    real_cluster_admission_rejects_bad_input_and_spec_changes,
    admission_scenario
);
real_cluster_test!(
    real_cluster_sigkill_mid_request_then_restart,
    sigkill_scenario
);

/// The same scenarios on the in-process API, set up like a cluster (fresh
/// Namespace, `--watch-namespace`), so the real-cluster suite cannot rot
/// unnoticed. Not evidence about any real cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rehearsal_of_the_real_cluster_scenarios_on_the_sandbox() {
    let mut env = Env::sandbox_like_a_cluster().await;
    outcomes_scenario(&mut env).await;
    missing_secret_scenario(&mut env).await;
    admission_scenario(&mut env).await;
    sigkill_scenario(&mut env).await;
    env.cleanup().await;
}
