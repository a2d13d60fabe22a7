//! End-to-end scenarios through the real `copyimage-canceller run` binary,
//! against the in-process Kubernetes API and the ECS simulator, asserting
//! what a user sees: status, conditions, Events, and what reached ECS.

mod common;

use std::time::Duration;

use common::*;
use copyimage_canceller::resource::SPEC_IMMUTABLE_MESSAGE;
use copyimage_stand_ins::AccessKey;
use copyimage_stand_ins::ecs_simulator::{FaultCount, FaultKind, ImageState};
use copyimage_stand_ins::kube_api::{Fault, Verb};
use futures::StreamExt;
use kube::api::{Patch, PatchParams};
use kube::runtime::watcher;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn success_is_recorded_with_the_request_id_after_one_request() {
    let env = Env::sandbox().await;
    env.copying("m-e2esuccess");
    env.create(&cic("stop-copy", "m-e2esuccess")).await;

    let done = env.wait_finished("stop-copy").await;
    let status = done.status.clone().expect("status");
    let requests = env.ecs_requests("m-e2esuccess");
    assert_eq!(requests.len(), 1, "exactly one CancelCopyImage");
    assert_eq!(requests[0].code, "Success");
    assert_eq!(
        requests[0].access_key_id.as_deref(),
        Some(OPERATOR_KEY_ID),
        "signed with the operator's key"
    );
    assert_phase(&done, "Succeeded");
    assert_eq!(status.request_id, requests[0].request_id);
    assert_eq!(status.attempts, 1);
    assert_eq!(status.error_code, None);
    assert_eq!(outcomes(&done), ["Succeeded"]);
    assert_eq!(status.attempt_history[0].request_id, requests[0].request_id);
    assert_eq!(
        cond(&done, "Ready"),
        Some(("True".into(), "Cancelled".into()))
    );
    assert_eq!(cond_status(&done, "Stalled").as_deref(), Some("False"));
    assert_final_conditions(&done);
    assert_eq!(env.sim.image("m-e2esuccess"), None, "the copy is gone");

    let event = env.wait_event("stop-copy", "Cancelled").await;
    assert_eq!(event.type_.as_deref(), Some("Normal"));
    let note = event.note.unwrap_or_default();
    let request_id = status.request_id.unwrap();
    assert!(
        note.contains(&request_id),
        "the Event names the request ID: {note}"
    );
}

/// The first status is written before anything is sent, and each attempt is
/// recorded (write-ahead) before its request reaches ECS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_is_written_before_any_request() {
    let env = Env::sandbox().await;
    env.copying("m-e2efirst");
    // Hold the answer so the state while the request is at ECS can be read.
    env.fault(
        "m-e2efirst",
        FaultKind::Latency {
            delay: Duration::from_secs(3),
        },
        FaultCount::Times(1),
    );
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let watch = {
        let seen = seen.clone();
        let stream = watcher(
            env.cics(),
            watcher::Config::default().fields("metadata.name=first"),
        );
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                if let Ok(watcher::Event::Apply(obj) | watcher::Event::InitApply(obj)) = event {
                    seen.lock().unwrap().push(obj);
                }
            }
        })
    };
    // Let the watch start before the resource exists, so no version is missed.
    tokio::time::sleep(Duration::from_millis(500)).await;
    env.create(&cic("first", "m-e2efirst")).await;

    env.eventually("the request at ECS", |env| {
        !env.ecs_requests("m-e2efirst").is_empty()
    })
    .await;
    let in_flight = env.get("first").await;
    let status = in_flight.status.clone().expect("status before the answer");
    assert_eq!(status.attempts, 1, "{}", yaml(&in_flight));
    assert_eq!(outcomes(&in_flight), ["Unknown"], "recorded before sending");
    assert_eq!(phase(&in_flight).as_deref(), Some("Running"));
    assert_eq!(
        cond(&in_flight, "Reconciling"),
        Some(("True".into(), "AttemptInFlight".into()))
    );
    assert_eq!(cond_status(&in_flight, "Ready").as_deref(), Some("False"));

    env.wait_finished("first").await;
    watch.abort();
    let seen = seen.lock().unwrap().clone();
    let first = seen
        .iter()
        .find(|o| o.status.is_some())
        .expect("a version with status");
    let status = first.status.as_ref().unwrap();
    // The first status is the write-ahead of attempt 1: in progress, with
    // observedGeneration, the attempt recorded as Unknown before its answer.
    assert_eq!(phase(first).as_deref(), Some("Running"), "{}", yaml(first));
    assert_eq!(status.attempts, 1, "{}", yaml(first));
    assert_eq!(outcomes(first), ["Unknown"]);
    assert_eq!(status.request_id, None, "no answer yet");
    assert_eq!(status.observed_generation, Some(1));
    assert_eq!(
        cond(first, "Reconciling"),
        Some(("True".into(), "AttemptInFlight".into()))
    );
    assert_eq!(cond_status(first, "Ready").as_deref(), Some("False"));
    assert_eq!(
        condition(first, "Reconciling").unwrap().observed_generation,
        Some(1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_internal_errors_then_success_takes_three_requests() {
    let env = Env::sandbox().await;
    env.copying("m-e2eretry");
    env.fault("m-e2eretry", FaultKind::InternalError, FaultCount::Times(2));
    env.create(&cic("retried", "m-e2eretry")).await;

    let done = env.wait_finished("retried").await;
    let status = done.status.clone().unwrap();
    let requests = env.ecs_requests("m-e2eretry");
    let codes: Vec<&str> = requests.iter().map(|r| r.code.as_str()).collect();
    assert_eq!(codes, ["InternalError", "InternalError", "Success"]);
    assert_phase(&done, "Succeeded");
    assert_eq!(status.attempts, 3);
    assert_eq!(status.failed_attempts, 2);
    assert_eq!(
        outcomes(&done),
        ["InternalError", "InternalError", "Succeeded"]
    );
    let history_ids: Vec<_> = status
        .attempt_history
        .iter()
        .map(|a| a.request_id.clone())
        .collect();
    let sim_ids: Vec<_> = requests.iter().map(|r| r.request_id.clone()).collect();
    assert_eq!(history_ids, sim_ids, "every attempt keeps its request ID");
    assert_eq!(status.request_id, requests[2].request_id);
    assert_eq!(status.error_code, None, "cleared on success");
    assert_eq!(status.error_message, None);
    assert_eq!(status.http_status, None);
    assert_eq!(
        cond(&done, "Ready"),
        Some(("True".into(), "Cancelled".into()))
    );
    assert_final_conditions(&done);
    let retry = env.wait_event("retried", "RetryScheduled").await;
    assert_eq!(retry.type_.as_deref(), Some("Normal"));
    assert!(
        retry.note.unwrap_or_default().contains("InternalError"),
        "the retry Event says why"
    );
    env.wait_event("retried", "Cancelled").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_error_forever_ends_retries_exhausted_after_backoff_limit_plus_one() {
    let env = Env::sandbox().await;
    env.copying("m-e2eforever");
    env.fault("m-e2eforever", FaultKind::InternalError, FaultCount::Always);
    let mut r = cic("forever", "m-e2eforever");
    r.spec.backoff_limit = 2;
    env.create(&r).await;

    let done = env.wait_finished("forever").await;
    let status = done.status.clone().unwrap();
    assert_phase(&done, "Failed");
    assert_eq!(
        env.ecs_requests("m-e2eforever").len(),
        3,
        "backoffLimit + 1"
    );
    assert_eq!(status.attempts, 3);
    assert_eq!(status.error_code.as_deref(), Some("InternalError"));
    assert_eq!(status.http_status, Some(500));
    assert_eq!(
        cond(&done, "Stalled"),
        Some(("True".into(), "RetriesExhausted".into()))
    );
    assert_eq!(cond_status(&done, "Ready").as_deref(), Some("False"));
    assert_final_conditions(&done);
    let failed = env.wait_event("forever", "CancelFailed").await;
    assert_eq!(failed.type_.as_deref(), Some("Warning"));
    assert!(failed.note.unwrap_or_default().contains("InternalError"));
    // Finished means finished: nothing more is sent.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(env.ecs_requests("m-e2eforever").len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_terminal_code_fails_at_once_after_exactly_one_request() {
    let env = Env::sandbox().await;
    env.sim.set_image("m-e2ecopied", ImageState::Copied);
    env.sim.set_image("m-e2enotcopy", ImageState::NotFromCopy);
    // m-e2eabsent is unknown to ECS.
    let cases = [
        (
            "too-late",
            "m-e2ecopied",
            "IncorrectImageStatus",
            "IncorrectImageStatus",
        ),
        (
            "not-a-copy",
            "m-e2enotcopy",
            "ImageCreatedNotFromCopy",
            "ImageCreatedNotFromCopy",
        ),
        (
            "no-such-image",
            "m-e2eabsent",
            "InvalidImageId.NotFound",
            "InvalidImageIdNotFound",
        ),
    ];
    for (name, image, _, _) in cases {
        env.create(&cic(name, image)).await;
    }
    for (name, image, code, reason) in cases {
        let done = env.wait_finished(name).await;
        let status = done.status.clone().unwrap();
        let requests = env.ecs_requests(image);
        assert_eq!(requests.len(), 1, "{name}: exactly one request");
        assert_eq!(requests[0].code, code);
        assert_phase(&done, "Failed");
        assert_eq!(status.attempts, 1, "{name}");
        assert_eq!(
            status.error_code.as_deref(),
            Some(code),
            "{name}: exact code"
        );
        assert_eq!(status.request_id, requests[0].request_id);
        assert_eq!(
            status.http_status.map(|s| s as u16),
            requests[0].http_status
        );
        assert!(
            status
                .error_message
                .as_deref()
                .is_some_and(|m| !m.is_empty()),
            "{name}: the service's message"
        );
        assert_eq!(
            cond(&done, "Stalled"),
            Some(("True".into(), reason.into())),
            "{name}: sanitised reason"
        );
        assert!(
            condition(&done, "Stalled").unwrap().message.contains(code),
            "{name}: the message names the code"
        );
        assert_eq!(cond_status(&done, "Ready").as_deref(), Some("False"));
        assert_final_conditions(&done);
        let event = env.wait_event(name, "CancelFailed").await;
        assert_eq!(event.type_.as_deref(), Some("Warning"));
        assert!(event.note.unwrap_or_default().contains(code));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (name, image, _, _) in cases {
        assert_eq!(env.ecs_requests(image).len(), 1, "{name}: never sent again");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_is_retried_without_counting_against_backoff_limit() {
    let env = Env::sandbox().await;
    env.copying("m-e2ethrottled");
    env.fault(
        "m-e2ethrottled",
        FaultKind::Throttling { retry_after: None },
        FaultCount::Times(2),
    );
    let mut r = cic("throttled", "m-e2ethrottled");
    r.spec.backoff_limit = 0;
    env.create(&r).await;

    let done = env.wait_finished("throttled").await;
    let status = done.status.clone().unwrap();
    assert_phase(&done, "Succeeded");
    assert_eq!(env.ecs_requests("m-e2ethrottled").len(), 3);
    assert_eq!(status.attempts, 3);
    assert_eq!(status.failed_attempts, 0, "throttling is not counted");
    assert_eq!(
        outcomes(&done),
        ["Throttling.User", "Throttling.User", "Succeeded"]
    );
    assert_final_conditions(&done);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_secret_holds_the_request_until_it_is_created() {
    let env = Env::sandbox().await;
    let team = AccessKey::new("LTAI5tE2eTeamKey", "e2eTeamSecretDoNotLeak", None);
    env.create_with_team_secret("waiting", "m-e2ewaiting", &team)
        .await;

    let waiting = env.wait_awaiting_credentials("waiting").await;
    let status = waiting.status.clone().unwrap();
    assert_eq!(phase(&waiting).as_deref(), Some("Pending"));
    assert_eq!(status.attempts, 0);
    let message = &condition(&waiting, "Reconciling").unwrap().message;
    assert!(
        message.contains("images/team-keys"),
        "names the Secret: {message}"
    );
    // Give the controller time to (wrongly) send something.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        env.ecs_requests("m-e2ewaiting").is_empty(),
        "nothing sent without credentials"
    );
    assert_eq!(env.get("waiting").await.status.unwrap().attempts, 0);

    env.put_secret("team-keys", &team).await;
    let done = env
        .assert_succeeded_with_key("waiting", "m-e2ewaiting", &team)
        .await;
    assert_eq!(done.status.unwrap().attempts, 1);
}

/// A Secret that reaches the controller a moment after its resource (applied
/// in the same sync, through a separate watch) is waited for quietly: the
/// first status says Pending, then the request goes with the Secret's key; no
/// AwaitingCredentials and no Warning Event for a Secret that was on its way.
/// (A CI run once showed that Warning for a Secret created before its resource.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_arriving_just_after_its_resource_raises_no_warning() {
    let env = Env::sandbox().await;
    let team = AccessKey::new("LTAI5tE2eLateKey", "e2eLateSecretDoNotLeak", None);
    env.create_with_team_secret("late", "m-e2elate", &team)
        .await;
    // The controller has looked without the Secret: a quiet Pending.
    env.wait_for(
        "late",
        "Pending while the Secret is not in the cache",
        |c| cond(c, "Reconciling") == Some(("True".into(), "Pending".into())),
    )
    .await;
    env.put_secret("team-keys", &team).await;

    env.assert_succeeded_with_key("late", "m-e2elate", &team)
        .await;
    let events = env.events_for("late").await;
    assert!(
        events
            .iter()
            .all(|e| e.reason.as_deref() != Some("AwaitingCredentials")),
        "{events:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_secret_is_used_without_a_restart() {
    let env = Env::sandbox().await;
    let old = AccessKey::new("LTAI5tE2eOldKey", "e2eOldSecret", None);
    let new = AccessKey::new("LTAI5tE2eNewKey", "e2eNewSecret", None);
    env.sim.add_key(old.clone());
    env.put_secret("team-keys", &old).await;
    env.copying("m-e2ebefore");
    env.copying("m-e2eafter");

    env.create(&cic_with_secret("before", "m-e2ebefore", "team-keys"))
        .await;
    let before = env.wait_finished("before").await;
    assert_phase(&before, "Succeeded");
    assert_eq!(
        env.ecs_requests("m-e2ebefore")[0].access_key_id.as_deref(),
        Some(old.id.as_str())
    );

    // Rotation: ECS now accepts only the new key.
    env.sim.add_key(new.clone());
    env.put_secret("team-keys", &new).await;
    assert!(env.sim.remove_key(&old.id));
    // NB: the Secret and the resources come through separate watches; a user
    // creating the next resource a moment after rotating is the case here.
    tokio::time::sleep(Duration::from_secs(1)).await;
    env.create(&cic_with_secret("after", "m-e2eafter", "team-keys"))
        .await;
    env.assert_succeeded_with_key("after", "m-e2eafter", &new)
        .await;
    let mut env = env;
    assert!(env.controller_alive(), "same controller process throughout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicts_on_status_writes_never_cause_a_second_request() {
    let env = Env::sandbox().await;
    env.copying("m-e2econflict");
    // Keep the request at ECS long enough to arm the second conflict.
    env.fault(
        "m-e2econflict",
        FaultKind::Latency {
            delay: Duration::from_secs(3),
        },
        FaultCount::Times(1),
    );
    let status_conflict = || {
        Fault::conflict(1)
            .verb(Verb::Patch)
            .resource("copyimagecancellations")
            .subresource("status")
    };
    let api = env.sandbox_api();
    // The first status write (before anything is sent) meets a 409 ...
    api.inject_fault(status_conflict());
    env.create(&cic("conflicted", "m-e2econflict")).await;
    env.eventually("the request at ECS", |env| {
        !env.ecs_requests("m-e2econflict").is_empty()
    })
    .await;
    // ... and so does the write that records the answer.
    api.inject_fault(status_conflict());

    let done = env.wait_finished("conflicted").await;
    assert_phase(&done, "Succeeded");
    let conflicts = api
        .requests()
        .iter()
        .filter(|r| {
            r.resource == "copyimagecancellations" && r.subresource == "status" && r.code == 409
        })
        .count();
    assert_eq!(conflicts, 2, "both injected 409s were met");
    assert_eq!(
        env.ecs_requests("m-e2econflict").len(),
        1,
        "exactly one request"
    );
    let status = done.status.unwrap();
    assert_eq!(status.attempts, 1);
    assert_eq!(
        status.request_id,
        env.ecs_requests("m-e2econflict")[0].request_id
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        env.ecs_requests("m-e2econflict").len(),
        1,
        "never sent again"
    );
}

/// SIGKILL while ECS holds the request open: the restarted controller shows
/// the `Unknown` attempt, repeats it, and explains the result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_request_then_restart_explains_the_unknown_attempt() {
    let mut env = Env::sandbox().await;
    // still-copying: the first request never arrived, the repeat cancels.
    // cancelled-by-first: the first request did cancel (the image is gone).
    // finished-meanwhile: the copy completed (IncorrectImageStatus on repeat).
    let cases = [
        ("still-copying", "m-e2ekill1"),
        ("cancelled-by-first", "m-e2ekill2"),
        ("finished-meanwhile", "m-e2ekill3"),
    ];
    for (name, image) in cases {
        env.copying(image);
        env.fault(image, FaultKind::Hang, FaultCount::Times(1));
        env.create(&cic(name, image)).await;
    }
    env.eventually("all three requests held at ECS", |env| {
        cases
            .iter()
            .all(|(_, image)| env.ecs_requests(image).len() == 1)
    })
    .await;
    for (name, _) in cases {
        let held = env.get(name).await;
        assert_eq!(outcomes(&held), ["Unknown"], "{}", yaml(&held));
    }
    env.kill_controller().await;
    env.sim.remove_image("m-e2ekill2");
    env.sim.set_image("m-e2ekill3", ImageState::Copied);
    env.start_controller();

    let still = env.wait_finished("still-copying").await;
    assert_phase(&still, "Succeeded");
    assert_eq!(outcomes(&still), ["Unknown", "Succeeded"]);
    assert_eq!(still.status.as_ref().unwrap().attempts, 2);
    assert_eq!(env.ecs_requests("m-e2ekill1").len(), 2);

    for (name, image, code) in [
        (
            "cancelled-by-first",
            "m-e2ekill2",
            "InvalidImageId.NotFound",
        ),
        ("finished-meanwhile", "m-e2ekill3", "IncorrectImageStatus"),
    ] {
        let done = env.wait_finished(name).await;
        let status = done.status.clone().unwrap();
        assert_phase(&done, "Failed");
        assert_eq!(outcomes(&done), ["Unknown", code], "{name}");
        assert_eq!(status.attempts, 2);
        assert_eq!(status.ambiguous_attempts, 1);
        assert_eq!(status.error_code.as_deref(), Some(code));
        assert_eq!(env.ecs_requests(image).len(), 2);
        assert_eq!(
            cond(&done, "Stalled"),
            Some(("True".into(), "PreviousAttemptMayHaveSucceeded".into()))
        );
        let message = &condition(&done, "Stalled").unwrap().message;
        assert!(
            message.contains("may well have cancelled the copy"),
            "{name}: the message explains: {message}"
        );
    }
}

/// Found by the chaos soak: while the watch could not resume (every LIST
/// failing), a resource whose cache lagged behind our own status write waited
/// for the watch event instead of retrying, for as long as the outage lasted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_go_on_while_the_watch_cannot_resume() {
    let env = Env::sandbox().await;
    env.copying("m-e2enowatch");
    env.fault(
        "m-e2enowatch",
        FaultKind::InternalError,
        FaultCount::Times(3),
    );
    env.create(&cic("retries-without-watch", "m-e2enowatch"))
        .await;
    env.eventually("the first request", |env| {
        !env.ecs_requests("m-e2enowatch").is_empty()
    })
    .await;
    let api = env.sandbox_api();
    api.inject_fault(
        Fault::internal_error(u32::MAX)
            .verb(Verb::List)
            .resource("copyimagecancellations")
            .sparing_user_agent(HARNESS_USER_AGENT),
    );
    api.expire_history();
    api.drop_watches();

    let done = env.wait_finished("retries-without-watch").await;
    assert_phase(&done, "Succeeded");
    assert_eq!(
        outcomes(&done),
        [
            "InternalError",
            "InternalError",
            "InternalError",
            "Succeeded"
        ]
    );
    assert_eq!(env.ecs_requests("m-e2enowatch").len(), 4);
    assert!(
        env.controller_requests()
            .iter()
            .any(|r| r.verb == Verb::List && r.code == 500),
        "the watch really could not resume"
    );
}

/// Found by the chaos soak, twice: a 500 on the start-up list made `run` exit
/// (and in a cluster, crash-loop with growing delays) instead of trying again;
/// then 8 failures in a row (about 18 s) still did. Nine failures (about 28 s)
/// are waited out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_start_up_list_is_tried_again_not_fatal() {
    const FAILURES: usize = 9;
    let mut env = Env::sandbox_with(SandboxOptions::default()).await;
    env.copying("m-e2eboot");
    env.create(&cic("boots-through-500s", "m-e2eboot")).await;
    let cics = "copyimagecancellations";
    env.sandbox_api().inject_fault(
        Fault::internal_error(FAILURES as u32)
            .verb(Verb::List)
            .resource(cics)
            .sparing_user_agent(HARNESS_USER_AGENT),
    );
    env.start_controller();

    let done = env.wait_finished("boots-through-500s").await;
    assert_phase(&done, "Succeeded");
    assert!(env.controller_alive(), "the controller still runs");
    let lists: Vec<u16> = env
        .controller_requests()
        .iter()
        .filter(|r| r.verb == Verb::List && r.resource == cics)
        .map(|r| r.code)
        .collect();
    assert_eq!(
        lists[..=FAILURES],
        [[500; FAILURES].as_slice(), &[200]].concat(),
        "{lists:?}"
    );
    assert_eq!(
        env.controller_log()
            .matches("listing copyimagecancellations in all namespaces failed; trying again")
            .count(),
        FAILURES
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_resources_and_spec_changes_are_rejected_at_admission() {
    let env = Env::sandbox().await;
    let api_error = |result: Result<_, kube::Error>| match result {
        Err(kube::Error::Api(status)) => (status.code, status.message),
        Ok(_) => panic!("admitted"),
        Err(other) => panic!("not an API error: {other}"),
    };

    let mut bad_region = cic("bad-region", "m-e2eadmission");
    bad_region.spec.region_id = "Hangzhou_1".into();
    let (code, message) = api_error(env.try_create(&bad_region).await);
    assert_eq!(code, 422);
    assert!(
        message.contains("spec.regionId") && message.contains("^[a-z]{2,}(-[a-z0-9]+)+$"),
        "{message}"
    );

    let bad_image = cic("bad-image", "img-123");
    let (code, message) = api_error(env.try_create(&bad_image).await);
    assert_eq!(code, 422);
    assert!(
        message.contains("spec.imageId") && message.contains("^m-[a-z0-9]+$"),
        "{message}"
    );

    let mut bad_limit = cic("bad-limit", "m-e2eadmission");
    bad_limit.spec.backoff_limit = 21;
    let (code, message) = api_error(env.try_create(&bad_limit).await);
    assert_eq!(code, 422);
    assert!(message.contains("spec.backoffLimit"), "{message}");

    env.sim.set_image("m-e2eadmission", ImageState::Copied);
    env.create(&cic("immutable", "m-e2eadmission")).await;
    let change = serde_json::json!({"spec": {"imageId": "m-e2eother"}});
    let (code, message) = api_error(
        env.cics()
            .patch("immutable", &PatchParams::default(), &Patch::Merge(&change))
            .await,
    );
    assert_eq!(code, 422);
    assert!(message.contains(SPEC_IMMUTABLE_MESSAGE), "{message}");
    let kept = env.wait_finished("immutable").await;
    assert_eq!(kept.spec.image_id, "m-e2eadmission");
    assert_eq!(kept.metadata.generation, Some(1));
    assert!(env.ecs_requests("m-e2eother").is_empty());
    assert_eq!(env.ecs_requests("m-e2eadmission").len(), 1);
    for name in ["bad-region", "bad-image", "bad-limit"] {
        assert!(env.cics().get_opt(name).await.unwrap().is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_resource_mid_retry_stops_it_cleanly() {
    let mut env = Env::sandbox().await;
    env.copying("m-e2edeleted");
    env.fault("m-e2edeleted", FaultKind::InternalError, FaultCount::Always);
    let mut r = cic("deleted", "m-e2edeleted");
    r.spec.backoff_limit = 20;
    env.create(&r).await;
    env.wait_for("deleted", "retrying", |c| {
        c.status.as_ref().is_some_and(|s| s.failed_attempts >= 2)
    })
    .await;

    env.delete("deleted").await;
    // No finalizer: the resource is gone straight away.
    assert!(env.cics().get_opt("deleted").await.unwrap().is_none());
    // A request already in flight may still land; after that, silence.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let settled = env.ecs_requests("m-e2edeleted").len();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        env.ecs_requests("m-e2edeleted").len(),
        settled,
        "nothing sent for a deleted resource"
    );

    // Still healthy: the next resource goes through.
    env.copying("m-e2eafterdelete");
    env.create(&cic("next", "m-e2eafterdelete")).await;
    let next = env.wait_finished("next").await;
    assert_phase(&next, "Succeeded");
    assert!(env.controller_alive());
    let log = env.controller_log();
    let failures: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("reconcile failed") || l.contains(" ERROR "))
        .collect();
    assert!(
        failures.is_empty(),
        "no error loop in the controller's log:\n{}",
        failures.join("\n")
    );
}

/// The controller's log never holds an AccessKey secret or STS token, even at
/// debug level, across success, errors, retries and Secret-based keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_the_log_status_or_events() {
    secrets_never_leak(Env::sandbox().await).await;
}

/// The same with `--log-format json` (fields are rendered differently).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_the_json_log() {
    secrets_never_leak(Env::sandbox_with_args(&["--log-format", "json"]).await).await;
}

async fn secrets_never_leak(env: Env) {
    use base64::Engine as _;
    let team_secret = "e2eTeamSecretMustNotLeak";
    let team_token = "ZTJlVGVhbVRva2VuTXVzdE5vdExlYWs=";
    let team = AccessKey::new("LTAI5tE2eLeakTeam", team_secret, Some(team_token.into()));
    env.sim.add_key(team.clone());
    env.put_secret("team-keys", &team).await;
    env.copying("m-e2eleak1");
    env.copying("m-e2eleak2");
    env.fault("m-e2eleak2", FaultKind::InternalError, FaultCount::Times(1));
    env.create(&cic("operator-keys", "m-e2eleak1")).await;
    env.create(&cic_with_secret("team-keys", "m-e2eleak2", "team-keys"))
        .await;
    env.create(&cic("unknown-image", "m-e2eleak3")).await;
    let mut everything = String::new();
    for name in ["operator-keys", "team-keys", "unknown-image"] {
        everything += &yaml(&env.wait_finished(name).await);
        for e in env.events_for(name).await {
            everything += &format!("{e:?}");
        }
    }
    assert_eq!(
        phase(&env.get("team-keys").await).as_deref(),
        Some("Succeeded")
    );
    let log = env.controller_log();
    assert!(
        log.contains("CancelCopyImage"),
        "the log has content:\n{log}"
    );
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    for secret in [OPERATOR_KEY_SECRET, OPERATOR_TOKEN, team_secret, team_token] {
        for form in [secret.to_string(), b64(secret)] {
            assert!(!log.contains(&form), "the controller log leaks {form}");
            assert!(!everything.contains(&form), "status or Events leak {form}");
        }
    }
    assert!(!log.contains("Signature="), "no signed query in the log");
}

/// The user's path: `kubectl apply -f deploy/samples/...`, `kubectl wait` for
/// Ready and for Stalled, `kubectl get` (printer columns) and `-o yaml`.
/// Skipped only where kubectl is not installed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_apply_the_samples_then_wait_for_ready_and_stalled() {
    if std::process::Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_err()
    {
        eprintln!("kubectl is not installed: skipping the kubectl user path");
        return;
    }
    let env = Env::sandbox().await;
    let samples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/samples");
    let cancelled = samples.join("copyimagecancellation-operator-credentials.yaml");
    let too_late = samples.join("copyimagecancellation-copy-finished.yaml");
    let image_of = |path: &std::path::Path| {
        let r: copyimage_canceller::resource::CopyImageCancellation =
            serde_yaml_ng::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        (r.metadata.name.unwrap(), r.spec.image_id)
    };
    let (cancelled_name, cancelled_image) = image_of(&cancelled);
    let (late_name, late_image) = image_of(&too_late);
    env.copying(&cancelled_image);
    env.sim.set_image(&late_image, ImageState::Copied);

    let (ok, out) = kubectl(
        &env,
        &[
            "apply",
            "-f",
            cancelled.to_str().unwrap(),
            "-f",
            too_late.to_str().unwrap(),
        ],
    )
    .await;
    assert!(ok, "{out}");
    let ready = format!("cic/{cancelled_name}");
    let stalled = format!("cic/{late_name}");
    let (ok, out) = kubectl_wait(&env, "Ready", &ready, "60s").await;
    assert!(ok && out.contains("condition met"), "{out}");
    let (ok, out) = kubectl_wait(&env, "Stalled", &stalled, "60s").await;
    assert!(ok && out.contains("condition met"), "{out}");
    // A terminal failure is not Ready: waiting for Ready must time out.
    let (ok, out) = kubectl_wait(&env, "Ready", &stalled, "2s").await;
    assert!(!ok, "Ready must not be met by a failed cancellation: {out}");

    let (ok, out) = kubectl(&env, &["-n", "images", "get", "cic"]).await;
    assert!(ok, "{out}");
    let mut lines = out.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME", "REGION", "IMAGE", "PHASE", "REQUEST", "ID", "ERROR", "ATTEMPTS", "AGE"
        ]
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split_whitespace().collect()).collect();
    let row = |name: &str| rows.iter().find(|r| r[0] == name).unwrap().clone();
    let request_id = env.ecs_requests(&cancelled_image)[0]
        .request_id
        .clone()
        .unwrap();
    assert_eq!(
        row(&cancelled_name)[3..],
        [
            "Succeeded",
            request_id.as_str(),
            "1",
            row(&cancelled_name)[6]
        ]
    );
    assert_eq!(row(&late_name)[3], "Failed");
    assert_eq!(row(&late_name)[5], "IncorrectImageStatus");
    assert_eq!(row(&late_name)[6], "1");

    let (ok, out) = kubectl(&env, &["-n", "images", "get", &ready, "-o", "yaml"]).await;
    assert!(ok, "{out}");
    assert!(out.contains("phase: Succeeded"), "{out}");
    assert!(out.contains("reason: Cancelled"), "{out}");
    assert!(out.contains(&format!("requestId: {request_id}")), "{out}");
}

/// Runs kubectl against the test's API, as a user would; (success, stdout + stderr).
async fn kubectl(env: &Env, args: &[&str]) -> (bool, String) {
    let out = tokio::process::Command::new("kubectl")
        .args(args)
        .env("KUBECONFIG", env.dir().join("kubeconfig"))
        .env("HOME", env.dir())
        .output()
        .await
        .expect("kubectl runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// `kubectl wait --for=condition=<condition> <resource> --timeout=<timeout>` in the
/// test namespace; (condition met, stdout + stderr).
async fn kubectl_wait(env: &Env, condition: &str, resource: &str, timeout: &str) -> (bool, String) {
    let for_condition = format!("--for=condition={condition}");
    let timeout = format!("--timeout={timeout}");
    kubectl(
        env,
        &[
            "-n",
            &env.namespace,
            "wait",
            &for_condition,
            resource,
            &timeout,
        ],
    )
    .await
}

/// Throttling is retried without counting, but only until
/// activeDeadlineSeconds: then Failed, reason DeadlineExceeded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_throttling_ends_at_the_active_deadline() {
    let env = Env::sandbox().await;
    env.copying("m-e2edeadline");
    env.fault(
        "m-e2edeadline",
        FaultKind::Throttling { retry_after: None },
        FaultCount::Always,
    );
    let mut r = cic("deadline", "m-e2edeadline");
    r.spec.backoff_limit = 0;
    r.spec.active_deadline_seconds = Some(3);
    env.create(&r).await;

    let done = env.wait_finished("deadline").await;
    let status = done.status.clone().unwrap();
    assert_phase(&done, "Failed");
    assert_eq!(
        cond(&done, "Stalled"),
        Some(("True".into(), "DeadlineExceeded".into()))
    );
    assert!(
        status.attempts >= 2,
        "throttled retries went on: {}",
        yaml(&done)
    );
    assert_eq!(status.failed_attempts, 0, "throttling is never counted");
    assert_eq!(status.error_code.as_deref(), Some("Throttling.User"));
    let sent = env.ecs_requests("m-e2edeadline").len();
    assert_eq!(i32::try_from(sent).unwrap(), status.attempts);
    let started = status.start_time.unwrap().0;
    let completed = status.completion_time.unwrap().0;
    assert!(
        completed.duration_since(started) >= jiff::SignedDuration::from_secs(3),
        "not before the deadline: {started} .. {completed}"
    );
    assert_final_conditions(&done);
    env.wait_event("deadline", "CancelFailed").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        env.ecs_requests("m-e2edeadline").len(),
        sent,
        "never sent again"
    );
}
