//! The key end-to-end scenarios against a REAL cluster (kind, k3d, ...), for
//! users who want to check theirs: the CRD is installed from this build, each
//! test gets a fresh namespace, the ECS simulator runs locally and the
//! controller runs as a local `copyimage-canceller run` process watching that
//! namespace.
//!
//! Opt in with BOTH `KUBECONFIG=<file>` and `COPYIMAGE_CANCELLER_REAL_CLUSTER=1`:
//!
//! ```text
//! COPYIMAGE_CANCELLER_REAL_CLUSTER=1 KUBECONFIG=~/.kube/config \
//!   cargo test --test real_cluster -- --test-threads 1 --nocapture
//! ```
//!
//! NB: without both, every test returns at once after printing
//! "skipped: set COPYIMAGE_CANCELLER_REAL_CLUSTER=1": a pass then proves nothing.

mod common;

use common::*;
use copyimage_canceller::credentials::AccessKey;
use copyimage_canceller::resource::SPEC_IMMUTABLE_MESSAGE;
use copyimage_canceller::sandbox::ecs_simulator::{FaultCount, FaultKind, ImageState};
use kube::api::{Patch, PatchParams};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_cluster_success_after_internal_errors_and_a_terminal_code() {
    let Some(env) =
        Env::real_cluster("real_cluster_success_after_internal_errors_and_a_terminal_code").await
    else {
        return;
    };
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
    assert_eq!(
        phase(&success).as_deref(),
        Some("Succeeded"),
        "{}",
        yaml(&success)
    );
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
    assert_eq!(
        phase(&retried).as_deref(),
        Some("Succeeded"),
        "{}",
        yaml(&retried)
    );
    assert_eq!(retried.status.as_ref().unwrap().attempts, 3);
    assert_eq!(env.ecs_requests("m-realretry").len(), 3);
    assert_eq!(
        outcomes(&retried),
        ["InternalError", "InternalError", "Succeeded"]
    );

    let late = env.wait_finished("too-late").await;
    assert_eq!(phase(&late).as_deref(), Some("Failed"), "{}", yaml(&late));
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
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_cluster_missing_secret_then_created() {
    let Some(env) = Env::real_cluster("real_cluster_missing_secret_then_created").await else {
        return;
    };
    let team = AccessKey::new("LTAI5tRealTeamKey", "realTeamSecret", None);
    env.sim.add_key(team.clone());
    env.copying("m-realwaiting");
    env.create(&cic_with_secret("waiting", "m-realwaiting", "team-keys"))
        .await;
    let waiting = env
        .wait_for("waiting", "AwaitingCredentials", |c| {
            cond(c, "Reconciling") == Some(("True".into(), "AwaitingCredentials".into()))
        })
        .await;
    assert_eq!(waiting.status.unwrap().attempts, 0);
    assert!(env.ecs_requests("m-realwaiting").is_empty());
    env.put_secret("team-keys", &team).await;
    let done = env.wait_finished("waiting").await;
    assert_eq!(
        phase(&done).as_deref(),
        Some("Succeeded"),
        "{}",
        yaml(&done)
    );
    let requests = env.ecs_requests("m-realwaiting");
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].access_key_id.as_deref(), Some(team.id.as_str()));
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_cluster_admission_rejects_bad_input_and_spec_changes() {
    let Some(env) =
        Env::real_cluster("real_cluster_admission_rejects_bad_input_and_spec_changes").await
    else {
        return;
    };
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
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_cluster_sigkill_mid_request_then_restart() {
    let Some(mut env) = Env::real_cluster("real_cluster_sigkill_mid_request_then_restart").await
    else {
        return;
    };
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
    assert_eq!(phase(&done).as_deref(), Some("Failed"), "{}", yaml(&done));
    assert_eq!(outcomes(&done), ["Unknown", "InvalidImageId.NotFound"]);
    assert_eq!(
        cond(&done, "Stalled"),
        Some(("True".into(), "PreviousAttemptMayHaveSucceeded".into()))
    );
    env.cleanup().await;
}
