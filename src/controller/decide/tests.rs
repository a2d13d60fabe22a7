//! Table tests for the decision core: one row per case, the expected status
//! written out in full as the API server would store it.

use serde_json::{Value, json};

use super::*;
use crate::ecs::{ServiceError, TransportError};

const IMAGE: &str = "m-bp1caf3yicx5jlfl";
const REGION: &str = "cn-hangzhou";
const T0: &str = "2026-11-27T21:00:00Z";
const T1: &str = "2026-11-27T21:00:01Z";
const T2: &str = "2026-11-27T21:00:02Z";
const T3: &str = "2026-11-27T21:00:03Z";
const T4: &str = "2026-11-27T21:00:04Z";
const T5: &str = "2026-11-27T21:00:05Z";
const T10: &str = "2026-11-27T21:00:10Z";

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// What `decide` is given at `now`: generation 1, default backoff, no
/// jitter, unpaced.
fn input<'a>(
    spec: &'a CopyImageCancellationSpec,
    status: Option<&'a CopyImageCancellationStatus>,
    now: Timestamp,
) -> Input<'a> {
    Input {
        spec,
        generation: Some(1),
        status,
        now,
        backoff: Backoff::default(),
        jitter: 0.0,
        paced: false,
    }
}

fn spec(extra: Value) -> CopyImageCancellationSpec {
    let mut base = json!({
        "regionId": REGION,
        "imageId": IMAGE,
        "credentialsSecretRef": {"name": "alibaba-credentials"},
    });
    base.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    serde_json::from_value(base).unwrap()
}

/// The three kstatus conditions sharing one reason and message;
/// `times` are the lastTransitionTimes of Ready, Reconciling, Stalled.
fn conds(statuses: [&str; 3], reason: &str, message: &str, times: [&str; 3]) -> Value {
    let types = ["Ready", "Reconciling", "Stalled"];
    Value::Array(
        (0..3)
            .map(|i| {
                json!({
                    "type": types[i], "status": statuses[i], "reason": reason, "message": message,
                    "observedGeneration": 1, "lastTransitionTime": times[i],
                })
            })
            .collect(),
    )
}

const IN_PROGRESS: [&str; 3] = ["False", "True", "False"];
const SUCCEEDED: [&str; 3] = ["True", "False", "False"];
const FAILED: [&str; 3] = ["False", "False", "True"];

fn service(http_status: u16, code: &str, message: &str, request_id: &str) -> CancelOutcome {
    CancelOutcome::Service(ServiceError {
        http_status,
        code: code.to_string(),
        message: message.to_string(),
        request_id: Some(request_id.to_string()),
        host_id: Some("ecs.cn-hangzhou.aliyuncs.com".to_string()),
        recommend: None,
        retry_after: None,
    })
}

/// The message of an InternalError answer.
const INTERNAL_ERROR: &str = "The request processing has failed due to some unknown error.";

/// Attempt 1 answered with InternalError (request REQ-1).
fn internal_error() -> CancelOutcome {
    service(500, "InternalError", INTERNAL_ERROR, "REQ-1")
}

/// Attempt 1 in the history, failed with InternalError.
fn attempt_1_internal_error() -> Value {
    json!({"number": 1, "time": T1, "outcome": "InternalError", "requestId": "REQ-1"})
}

/// A row for a resource that succeeded at T2 and sees `trigger` later: it
/// stays as it is and nothing is sent.
fn finished(name: &'static str, trigger: Trig) -> Row {
    Row {
        name,
        before: Some(succeeded()),
        now: T10,
        trigger,
        status: succeeded(),
        action: NextAction::Done,
        ..base()
    }
}

/// The row for attempt 1 failing with InternalError while retry 1 of `of`
/// is allowed: retry 0's window is 1 s, jitter 0.5 → 0.5 s, rounded up to the
/// next whole second.
fn counted_retry(name: &'static str, spec: Value, of: u32) -> Row {
    let message: &'static str = Box::leak(
        format!(
            "Attempt 1 failed: InternalError: {INTERNAL_ERROR} (HTTP 500, request ID REQ-1); \
             next attempt in 1s (retry 1 of {of})"
        )
        .into_boxed_str(),
    );
    Row {
        name,
        spec,
        before: Some(in_flight_1()),
        now: T2,
        jitter: 0.5,
        trigger: Trig::Attempted(internal_error(), RetryClass::Retryable),
        status: json!({
            "phase": "Running", "attempts": 1, "failedAttempts": 1, "requestId": "REQ-1",
            "errorCode": "InternalError", "httpStatus": 500, "errorMessage": INTERNAL_ERROR,
            "startTime": T0, "lastAttemptTime": T1, "nextAttemptTime": T3,
            "attemptHistory": [attempt_1_internal_error()],
            "observedGeneration": 1,
            "conditions": conds(IN_PROGRESS, "RetryScheduled", message, [T0; 3]),
        }),
        action: NextAction::RequeueAfter(Duration::from_secs(1)),
        event: normal("RetryScheduled", message),
    }
}

/// Attempt 2's answer (request REQ-2): the image is gone.
fn image_gone() -> CancelOutcome {
    service(
        404,
        "InvalidImageId.NotFound",
        "The specified ImageId does not exist.",
        "REQ-2",
    )
}

fn transport(message: &str) -> CancelOutcome {
    CancelOutcome::Transport(TransportError {
        kind: crate::ecs::TransportKind::Interrupted,
        message: message.to_string(),
        http_status: None,
    })
}

fn cancelled(request_id: &str) -> CancelOutcome {
    CancelOutcome::Cancelled {
        request_id: request_id.to_string(),
    }
}

// Statuses that several rows start from.

/// What versions before the merged first write wrote first; may still be
/// found after an upgrade.
fn pending() -> Value {
    json!({
        "phase": "Pending", "attempts": 0, "startTime": T0, "observedGeneration": 1,
        "conditions": conds(IN_PROGRESS, "Pending",
            "Nothing sent yet: about to cancel the copy to m-bp1caf3yicx5jlfl in cn-hangzhou", [T0; 3]),
    })
}

const STS_FAILING: &str = "no rrsa credentials could be obtained yet: STS answered HTTP 500 \
     InternalError: The request processing has failed due to some unknown error. (request ID STS-REQ-1)";
const STS_DENIED: &str = "no rrsa credentials could be obtained yet: STS answered HTTP 400 \
     AuthenticationFail.OIDCToken.Expired: token expired (request ID STS-REQ-2)";

/// Pending since T0 and waiting for credentials, for `why`. (Conditions keep
/// their T0 transition times: only the reason and message move.)
fn awaiting(why: &str) -> Value {
    let message = format!("Nothing is sent until credentials are available: {why}");
    json!({
        "phase": "Pending", "attempts": 0, "startTime": T0, "observedGeneration": 1,
        "conditions": conds(IN_PROGRESS, "AwaitingCredentials", &message, [T0; 3]),
    })
}

const AMBIGUOUS: &str = "RamRoleSelectors a and b both select namespace images; a cluster \
     administrator must change them so that at most one selects it (kubectl get ramroleselectors)";
const AMBIGUOUS_NOTE: &str = "Nothing is sent, nothing is guessed: RamRoleSelectors a and b both \
     select namespace images; a cluster administrator must change them so that at most one selects it \
     (kubectl get ramroleselectors)";
const AWAITING_DENIED_NOTE: &str = "Nothing is sent until credentials are available: no rrsa \
     credentials could be obtained yet: STS answered HTTP 400 AuthenticationFail.OIDCToken.Expired: \
     token expired (request ID STS-REQ-2)";

/// Pending since T0 and waiting for an administrator to remove two overlapping selectors.
fn ambiguous() -> Value {
    json!({
        "phase": "Pending", "attempts": 0, "startTime": T0, "observedGeneration": 1,
        "conditions": conds(IN_PROGRESS, "AmbiguousRole", AMBIGUOUS_NOTE, [T0; 3]),
    })
}

fn in_flight_1() -> Value {
    json!({
        "phase": "Running", "attempts": 1, "startTime": T0, "lastAttemptTime": T1,
        "attemptHistory": [{"number": 1, "time": T1, "outcome": "Unknown"}],
        "observedGeneration": 1,
        "conditions": conds(IN_PROGRESS, "AttemptInFlight",
            "Sending CancelCopyImage (attempt 1) for m-bp1caf3yicx5jlfl in cn-hangzhou", [T0; 3]),
    })
}

/// Attempt 1 failed with InternalError; attempt 2 is in flight.
fn in_flight_2_after_internal_error() -> Value {
    json!({
        "phase": "Running", "attempts": 2, "failedAttempts": 1, "startTime": T0, "lastAttemptTime": T3,
        "requestId": "REQ-1", "errorCode": "InternalError", "httpStatus": 500,
        "errorMessage": "The request processing has failed due to some unknown error.",
        "attemptHistory": [attempt_1_internal_error(), {"number": 2, "time": T3, "outcome": "Unknown"}],
        "observedGeneration": 1,
        "conditions": conds(IN_PROGRESS, "AttemptInFlight",
            "Sending CancelCopyImage (attempt 2) for m-bp1caf3yicx5jlfl in cn-hangzhou", [T0; 3]),
    })
}

/// Attempt 1's outcome was lost in a crash and counted; attempt 2 is in flight.
fn in_flight_2_after_unknown() -> Value {
    json!({
        "phase": "Running", "attempts": 2, "failedAttempts": 1, "ambiguousAttempts": 1,
        "startTime": T0, "lastAttemptTime": T5,
        "attemptHistory": [
            {"number": 1, "time": T1, "outcome": "Unknown"},
            {"number": 2, "time": T5, "outcome": "Unknown"},
        ],
        "observedGeneration": 1,
        "conditions": conds(IN_PROGRESS, "AttemptInFlight",
            "Sending CancelCopyImage (attempt 2) for m-bp1caf3yicx5jlfl in cn-hangzhou", [T0; 3]),
    })
}

/// Attempt 1 failed ("boom") and a retry is due at `next`; the
/// conditions (set at T0) give `reason` and `message`.
fn retry_due(next: &str, reason: &str, message: &str) -> Value {
    json!({
        "phase": "Running", "attempts": 1, "failedAttempts": 1, "requestId": "REQ-1",
        "errorCode": "InternalError", "httpStatus": 500, "errorMessage": "boom",
        "startTime": T0, "lastAttemptTime": T1, "nextAttemptTime": next,
        "attemptHistory": [attempt_1_internal_error()],
        "observedGeneration": 1,
        "conditions": conds(IN_PROGRESS, reason, message, [T0; 3]),
    })
}

fn succeeded() -> Value {
    json!({
        "phase": "Succeeded", "attempts": 1, "requestId": "REQ-OK",
        "startTime": T0, "lastAttemptTime": T1, "completionTime": T2,
        "attemptHistory": [{"number": 1, "time": T1, "outcome": "Succeeded", "requestId": "REQ-OK"}],
        "observedGeneration": 1,
        "conditions": conds(SUCCEEDED, "Cancelled",
            "Cancelled the copy to m-bp1caf3yicx5jlfl in cn-hangzhou (request ID REQ-OK)", [T2, T2, T0]),
    })
}

struct Row {
    name: &'static str,
    spec: Value,
    before: Option<Value>,
    now: &'static str,
    jitter: f64,
    trigger: Trig,
    status: Value,
    action: NextAction,
    event: ExpectedEvent,
}

/// The defaults rows leave out: no spec fields beyond the required, no jitter.
fn base() -> Row {
    Row {
        name: "",
        spec: json!({}),
        before: None,
        now: T0,
        jitter: 0.0,
        trigger: Trig::Observe,
        status: Value::Null,
        action: NextAction::Done,
        event: None,
    }
}

type ExpectedEvent = Option<(EventKind, &'static str, &'static str)>;

fn normal(reason: &'static str, note: &'static str) -> ExpectedEvent {
    Some((EventKind::Normal, reason, note))
}

fn warning(reason: &'static str, note: &'static str) -> ExpectedEvent {
    Some((EventKind::Warning, reason, note))
}

enum Trig {
    Observe,
    CredentialsMissing(&'static str),
    AmbiguousRole(&'static str),
    CredentialsPending,
    Attempted(CancelOutcome, RetryClass),
    /// An answer with what the endpoint's breaker made of it.
    AttemptedAt(CancelOutcome, RetryClass, Ep),
    /// Held: the region's endpoint is in an outage.
    Unavailable(EndpointOutage),
}

/// [`EndpointState`], owned.
enum Ep {
    Incident,
    Unavailable(EndpointOutage),
}

/// The region's endpoint has refused connections since T1.
fn outage() -> EndpointOutage {
    EndpointOutage {
        region: REGION.to_string(),
        since: ts(T1),
        last_error: "TransportError: connection refused".to_string(),
    }
}

/// What a resource waiting for [`outage`] is told, with no deadline.
const OUTAGE_WAIT: &str = "The ECS endpoint of cn-hangzhou is unavailable since 2026-11-27T21:00:01Z \
     (last error: TransportError: connection refused); waiting for it to answer, one probe at a time \
     for the region; nothing counts against backoffLimit; with no activeDeadlineSeconds the wait lasts \
     as long as the outage";

fn run(row: &Row) {
    let spec = spec(row.spec.clone());
    let before: Option<CopyImageCancellationStatus> = row
        .before
        .clone()
        .map(|v| serde_json::from_value(v).unwrap());
    let input = Input {
        jitter: row.jitter,
        ..input(&spec, before.as_ref(), ts(row.now))
    };
    let trigger = match &row.trigger {
        Trig::Observe => Trigger::Observe,
        Trig::CredentialsMissing(why) => Trigger::CredentialsMissing(why),
        Trig::AmbiguousRole(why) => Trigger::AmbiguousRole(why),
        Trig::CredentialsPending => Trigger::CredentialsPending,
        Trig::Attempted(outcome, class) => {
            assert_eq!(
                outcome.retry_class(),
                *class,
                "{}: the row's class is the client's",
                row.name
            );
            Trigger::Attempted(outcome)
        }
        Trig::AttemptedAt(outcome, class, ep) => {
            let (incident, state) = match ep {
                Ep::Incident => (crate::ecs::Incident::Yes, EndpointState::Incident),
                Ep::Unavailable(o) => (crate::ecs::Incident::Yes, EndpointState::Unavailable(o)),
            };
            assert_eq!(
                outcome.retry_class_in(incident),
                *class,
                "{}: the row's class is the client's",
                row.name
            );
            Trigger::AttemptedAt(outcome, state)
        }
        Trig::Unavailable(outage) => Trigger::Unavailable(outage),
    };
    let decision = decide(&input, trigger);
    let got = serde_json::to_value(&decision.status).unwrap();
    assert_eq!(
        got,
        row.status,
        "{}: status\n got: {}\nwant: {}",
        row.name,
        serde_json::to_string_pretty(&got).unwrap(),
        serde_json::to_string_pretty(&row.status).unwrap()
    );
    assert_eq!(decision.action, row.action, "{}: action", row.name);
    let event = decision
        .event
        .as_ref()
        .map(|e| (e.kind, e.reason, e.note.as_str()));
    assert_eq!(event, row.event, "{}: event", row.name);
    // The log's attempt number is the one a write-ahead gives, and an
    // outcome belongs to the attempt in flight.
    if matches!(row.trigger, Trig::Attempted(..) | Trig::AttemptedAt(..))
        || decision.action == NextAction::WriteAheadThenSend
    {
        assert_eq!(
            current_attempt(before.as_ref()),
            i64::from(decision.status.attempts),
            "{}: the attempt a reconcile logs is the one it sends or records",
            row.name
        );
    }
    // The retries metric: counted exactly when a retry is scheduled, by reason.
    let retry = retry_reason(&decision.status, decision.event.as_ref());
    match row.event {
        Some((_, "RetryScheduled", _)) => assert!(
            matches!(
                retry,
                Some("RetryScheduled" | "Throttled" | "EcsUnavailable")
            ),
            "{}: retry reason {retry:?}",
            row.name
        ),
        _ => assert_eq!(retry, None, "{}: retry reason", row.name),
    }
    // Deciding again on what was just written must not flip any condition's
    // transition time (kstatus consumers watch those).
    let written: CopyImageCancellationStatus = serde_json::from_value(got).unwrap();
    assert_eq!(
        written, decision.status,
        "{}: status survives a round trip",
        row.name
    );
}

#[rustfmt::skip]
#[test]
fn table() {
    let rows = vec![
        Row { name: "first reconcile writes the write-ahead before anything is sent", now: T0,
            trigger: Trig::Observe,
            status: json!({
                "phase": "Running", "attempts": 1, "startTime": T0, "lastAttemptTime": T0,
                "attemptHistory": [{"number": 1, "time": T0, "outcome": "Unknown"}],
                "observedGeneration": 1,
                "conditions": conds(IN_PROGRESS, "AttemptInFlight",
                    "Sending CancelCopyImage (attempt 1) for m-bp1caf3yicx5jlfl in cn-hangzhou", [T0; 3]),
            }),
            action: NextAction::WriteAheadThenSend, ..base() },
        Row { name: "first reconcile without credentials waits, counts nothing", now: T0,
            trigger: Trig::CredentialsMissing("Secret images/alibaba-credentials not found"),
            status: json!({
                "phase": "Pending", "attempts": 0, "startTime": T0, "observedGeneration": 1,
                "conditions": conds(IN_PROGRESS, "AwaitingCredentials",
                    "Nothing is sent until credentials are available: Secret images/alibaba-credentials not found",
                    [T0; 3]),
            }),
            action: NextAction::AwaitCredentials(None),
            event: warning("AwaitingCredentials",
                "Nothing is sent until credentials are available: Secret images/alibaba-credentials not found"), ..base() },
        Row { name: "two selectors match the namespace: waits under AmbiguousRole, counts nothing", now: T0,
            trigger: Trig::AmbiguousRole(AMBIGUOUS),
            status: ambiguous(),
            action: NextAction::AwaitCredentials(None),
            event: warning("AmbiguousRole", AMBIGUOUS_NOTE), ..base() },
        Row { name: "still ambiguous on a recheck: no second Event", now: T2,
            before: Some(ambiguous()),
            trigger: Trig::AmbiguousRole(AMBIGUOUS),
            status: ambiguous(),
            action: NextAction::AwaitCredentials(None), ..base() },
        Row { name: "the overlap removed, the role not assumable yet: AwaitingCredentials with its Warning", now: T2,
            before: Some(ambiguous()),
            trigger: Trig::CredentialsMissing(STS_DENIED),
            status: awaiting(STS_DENIED),
            action: NextAction::AwaitCredentials(None),
            event: warning("AwaitingCredentials", AWAITING_DENIED_NOTE), ..base() },
        Row { name: "still waiting on a recheck: no second Event", now: T2,
            before: Some(awaiting(STS_FAILING)),
            trigger: Trig::CredentialsMissing(STS_FAILING),
            status: awaiting(STS_FAILING),
            action: NextAction::AwaitCredentials(None), ..base() },
        Row { name: "still waiting, for another reason: the message follows, no second Event", now: T2,
            before: Some(awaiting(STS_FAILING)),
            trigger: Trig::CredentialsMissing(STS_DENIED),
            status: awaiting(STS_DENIED),
            action: NextAction::AwaitCredentials(None), ..base() },
        Row { name: "operator credentials still being fetched at the first reconcile: Pending, no Event", now: T0,
            trigger: Trig::CredentialsPending,
            status: pending(),
            action: NextAction::AwaitCredentials(None), ..base() },
        Row { name: "operator credentials still being fetched later: status untouched, deadline watched", now: T10, spec: json!({"activeDeadlineSeconds": 60}),
            before: Some(pending()),
            trigger: Trig::CredentialsPending,
            status: pending(),
            action: NextAction::AwaitCredentials(Some(Duration::from_secs(50))), ..base() },
        Row { name: "the first fetch of the operator credentials failed: the wait begins with a Warning", now: T1,
            before: Some(pending()),
            trigger: Trig::CredentialsMissing(STS_FAILING),
            status: awaiting(STS_FAILING),
            action: NextAction::AwaitCredentials(None),
            event: warning("AwaitingCredentials",
                "Nothing is sent until credentials are available: no rrsa credentials could be obtained \
                yet: STS answered HTTP 500 InternalError: The request processing has failed due to some \
                unknown error. (request ID STS-REQ-1)"), ..base() },
        Row { name: "a Pending status (as earlier versions wrote first) proceeds to the write-ahead", now: T1,
            before: Some(pending()),
            trigger: Trig::Observe,
            status: in_flight_1(),
            action: NextAction::WriteAheadThenSend, ..base() },
        Row { name: "credentials appear: the waiting resource proceeds to its first attempt", now: T1,
            before: Some(awaiting("Secret images/alibaba-credentials not found")),
            trigger: Trig::Observe,
            status: in_flight_1(),
            action: NextAction::WriteAheadThenSend, ..base() },
        Row { name: "success", now: T2,
            before: Some(in_flight_1()),
            trigger: Trig::Attempted(cancelled("REQ-OK"), RetryClass::Success),
            status: succeeded(),
            action: NextAction::Done,
            event: normal("Cancelled",
                "Cancelled the copy to m-bp1caf3yicx5jlfl in cn-hangzhou (request ID REQ-OK)"), ..base() },
        Row { name: "success after a failed attempt clears the error fields", now: T4,
            before: Some(in_flight_2_after_internal_error()),
            trigger: Trig::Attempted(cancelled("REQ-2"), RetryClass::Success),
            status: json!({
                "phase": "Succeeded", "attempts": 2, "failedAttempts": 1, "requestId": "REQ-2",
                "startTime": T0, "lastAttemptTime": T3, "completionTime": T4,
                "attemptHistory": [attempt_1_internal_error(), {"number": 2, "time": T3, "outcome": "Succeeded", "requestId": "REQ-2"}],
                "observedGeneration": 1,
                "conditions": conds(SUCCEEDED, "Cancelled",
                    "Cancelled the copy to m-bp1caf3yicx5jlfl in cn-hangzhou (request ID REQ-2)", [T4, T4, T0]),
            }),
            action: NextAction::Done,
            event: normal("Cancelled",
                "Cancelled the copy to m-bp1caf3yicx5jlfl in cn-hangzhou (request ID REQ-2)"), ..base() },
        counted_retry("counted retry: InternalError schedules the next attempt", json!({}), 6),
        counted_retry("counted retry: the last allowed retry is numbered against backoffLimit",
            json!({"backoffLimit": 1}), 1),
        Row { name: "outage, breaker not open: a transport failure is ambiguous, not counted, and backs off", now: T4, jitter: 0.75,
            before: Some(in_flight_2_after_internal_error()),
            trigger: Trig::Attempted(transport("connection reset by peer"), RetryClass::Outage),
            // retry 1: window 2 s, jitter 0.75 → 1.5 s → due at T6 (rounded up).
            status: json!({
                "phase": "Running", "attempts": 2, "failedAttempts": 1, "ambiguousAttempts": 1,
                "requestId": "REQ-1", "errorCode": "TransportError",
                "errorMessage": "connection reset by peer",
                "startTime": T0, "lastAttemptTime": T3, "nextAttemptTime": "2026-11-27T21:00:06Z",
                "attemptHistory": [attempt_1_internal_error(), {"number": 2, "time": T3, "outcome": "TransportError"}],
                "observedGeneration": 1,
                "conditions": conds(IN_PROGRESS, "EcsUnavailable",
                    "Attempt 2 failed: TransportError: connection reset by peer; next attempt in 2s (the region's \
                     endpoint failed, not this resource: not counted against backoffLimit)",
                    [T0; 3]),
            }),
            action: NextAction::RequeueAfter(Duration::from_secs(2)),
            event: normal("RetryScheduled",
                "Attempt 2 failed: TransportError: connection reset by peer; next attempt in 2s (the region's \
                endpoint failed, not this resource: not counted against backoffLimit)"), ..base() },
        Row { name: "outage, breaker open: not counted, still ambiguous, waits for the endpoint at once", now: T4,
            before: Some(in_flight_2_after_internal_error()),
            trigger: Trig::AttemptedAt(transport("connection refused"), RetryClass::Outage, Ep::Unavailable(outage())),
            status: json!({
                "phase": "Running", "attempts": 2, "failedAttempts": 1, "ambiguousAttempts": 1,
                "requestId": "REQ-1", "errorCode": "TransportError",
                "errorMessage": "connection refused",
                "startTime": T0, "lastAttemptTime": T3,
                "attemptHistory": [attempt_1_internal_error(), {"number": 2, "time": T3, "outcome": "TransportError"}],
                "observedGeneration": 1,
                "conditions": conds(IN_PROGRESS, "EcsUnavailable",
                    Box::leak(format!("Attempt 2 failed: TransportError: connection refused. {OUTAGE_WAIT}").into_boxed_str()),
                    [T0; 3]),
            }),
            action: NextAction::RequeueAfter(Duration::ZERO), ..base() },
        Row { name: "outage, breaker open: 503 ServiceUnavailable is an answer (not ambiguous), not counted", now: T2,
            before: Some(in_flight_1()),
            trigger: Trig::AttemptedAt(service(503, "ServiceUnavailable", "The request has failed due to a temporary failure of the server.", "REQ-1"),
                RetryClass::Outage, Ep::Unavailable(outage())),
            status: json!({
                "phase": "Running", "attempts": 1, "requestId": "REQ-1",
                "errorCode": "ServiceUnavailable", "httpStatus": 503,
                "errorMessage": "The request has failed due to a temporary failure of the server.",
                "startTime": T0, "lastAttemptTime": T1,
                "attemptHistory": [{"number": 1, "time": T1, "outcome": "ServiceUnavailable", "requestId": "REQ-1"}],
                "observedGeneration": 1,
                "conditions": conds(IN_PROGRESS, "EcsUnavailable",
                    Box::leak(format!("Attempt 1 failed: ServiceUnavailable: The request has failed due to a temporary \
                        failure of the server. (HTTP 503, request ID REQ-1). {OUTAGE_WAIT}").into_boxed_str()),
                    [T0; 3]),
            }),
            action: NextAction::RequeueAfter(Duration::ZERO), ..base() },
        Row { name: "InternalError in a run across resources: the endpoint's incident, not counted, backs off", now: T2, jitter: 0.5,
            before: Some(in_flight_1()),
            trigger: Trig::AttemptedAt(internal_error(), RetryClass::Outage, Ep::Incident),
            status: json!({
                "phase": "Running", "attempts": 1, "requestId": "REQ-1",
                "errorCode": "InternalError", "httpStatus": 500, "errorMessage": INTERNAL_ERROR,
                "startTime": T0, "lastAttemptTime": T1, "nextAttemptTime": T3,
                "attemptHistory": [attempt_1_internal_error()],
                "observedGeneration": 1,
                "conditions": conds(IN_PROGRESS, "EcsUnavailable",
                    "Attempt 1 failed: InternalError: The request processing has failed due to some unknown error. \
                     (HTTP 500, request ID REQ-1); next attempt in 1s (the region's endpoint failed, not this \
                     resource: not counted against backoffLimit)",
                    [T0; 3]),
            }),
            action: NextAction::RequeueAfter(Duration::from_secs(1)),
            event: normal("RetryScheduled",
                "Attempt 1 failed: InternalError: The request processing has failed due to some unknown error. \
                (HTTP 500, request ID REQ-1); next attempt in 1s (the region's endpoint failed, not this \
                resource: not counted against backoffLimit)"), ..base() },
        Row { name: "held by an outage before anything was sent: EcsUnavailable, waits for the endpoint", now: T2,
            trigger: Trig::Unavailable(outage()),
            status: json!({
                "phase": "Pending", "attempts": 0, "startTime": T2, "observedGeneration": 1,
                "conditions": conds(IN_PROGRESS, "EcsUnavailable",
                    Box::leak(format!("Nothing sent yet: {OUTAGE_WAIT}").into_boxed_str()), [T2; 3]),
            }),
            action: NextAction::AwaitSlot(None), ..base() },
        Row { name: "held by an outage with a deadline: the message says when the wait ends", now: T4,
            spec: json!({"activeDeadlineSeconds": 60}),
            before: Some(retry_due(T3, "RetryScheduled", "Attempt 1 failed: boom")),
            trigger: Trig::Unavailable(outage()),
            status: json!({
                "phase": "Running", "attempts": 1, "failedAttempts": 1, "requestId": "REQ-1",
                "errorCode": "InternalError", "httpStatus": 500, "errorMessage": "boom",
                "startTime": T0, "lastAttemptTime": T1, "nextAttemptTime": T3,
                "attemptHistory": [attempt_1_internal_error()],
                "observedGeneration": 1,
                "conditions": conds(IN_PROGRESS, "EcsUnavailable",
                    "The ECS endpoint of cn-hangzhou is unavailable since 2026-11-27T21:00:01Z (last error: \
                     TransportError: connection refused); waiting for it to answer, one probe at a time for the \
                     region; nothing counts against backoffLimit; activeDeadlineSeconds ends the wait at \
                     2026-11-27T21:01:00Z", [T0; 3]),
            }),
            action: NextAction::AwaitSlot(Some(Duration::from_secs(56))), ..base() },
        Row { name: "only activeDeadlineSeconds ends a resource during an outage", now: "2026-11-27T21:01:00Z",
            spec: json!({"activeDeadlineSeconds": 60}),
            before: Some(retry_due(T3, "EcsUnavailable", "waiting")),
            trigger: Trig::Unavailable(outage()),
            status: json!({
                "phase": "Failed", "attempts": 1, "failedAttempts": 1, "requestId": "REQ-1",
                "errorCode": "InternalError", "httpStatus": 500, "errorMessage": "boom",
                "startTime": T0, "lastAttemptTime": T1, "completionTime": "2026-11-27T21:01:00Z",
                "attemptHistory": [attempt_1_internal_error()],
                "observedGeneration": 1,
                "conditions": conds(FAILED, "DeadlineExceeded",
                    "activeDeadlineSeconds (60s) passed after 1 attempt(s); last error InternalError: boom",
                    [T0, "2026-11-27T21:01:00Z", "2026-11-27T21:01:00Z"]),
            }),
            action: NextAction::Done,
            event: warning("CancelFailed",
                "DeadlineExceeded: activeDeadlineSeconds (60s) passed after 1 attempt(s); last error InternalError: boom"),
            ..base() },
        Row { name: "a region whose endpoint does not resolve: Failed RegionEndpointNotFound at once, not ambiguous", now: T2,
            before: Some(in_flight_1()),
            trigger: Trig::Attempted(CancelOutcome::Transport(TransportError {
                kind: crate::ecs::TransportKind::HostNotFound,
                message: "the endpoint host ecs.cn-nowhere-1.aliyuncs.com does not exist (NXDOMAIN, 3 lookups in a row)".into(),
                http_status: None,
            }), RetryClass::Terminal),
            status: json!({
                "phase": "Failed", "attempts": 1, "errorCode": "TransportError",
                "errorMessage": "the endpoint host ecs.cn-nowhere-1.aliyuncs.com does not exist (NXDOMAIN, 3 lookups in a row)",
                "startTime": T0, "lastAttemptTime": T1, "completionTime": T2,
                "attemptHistory": [{"number": 1, "time": T1, "outcome": "TransportError"}],
                "observedGeneration": 1,
                "conditions": conds(FAILED, "RegionEndpointNotFound",
                    "the endpoint host ecs.cn-nowhere-1.aliyuncs.com does not exist (NXDOMAIN, 3 lookups in a row)",
                    [T0, T2, T2]),
            }),
            action: NextAction::Done,
            event: warning("CancelFailed",
                "RegionEndpointNotFound: the endpoint host ecs.cn-nowhere-1.aliyuncs.com does not exist (NXDOMAIN, 3 lookups in a row)"),
            ..base() },
        Row { name: "throttled retry is not counted and honours the service's retry-after hint", now: T2,
            before: Some(in_flight_1()),
            trigger: Trig::Attempted(CancelOutcome::Service(ServiceError {
                http_status: 400, code: "Throttling.User".into(),
                message: "Request was denied due to user flow control.".into(),
                request_id: Some("REQ-T".into()), host_id: None, recommend: None,
                retry_after: Some(Duration::from_secs(3)),
            }), RetryClass::Throttled),
            status: json!({
                "phase": "Running", "attempts": 1, "requestId": "REQ-T",
                "errorCode": "Throttling.User", "httpStatus": 400,
                "errorMessage": "Request was denied due to user flow control.",
                "startTime": T0, "lastAttemptTime": T1, "nextAttemptTime": T5,
                "attemptHistory": [{"number": 1, "time": T1, "outcome": "Throttling.User", "requestId": "REQ-T"}],
                "observedGeneration": 1,
                "conditions": conds(IN_PROGRESS, "Throttled",
                    "Attempt 1 failed: Throttling.User: Request was denied due to user flow control. \
                     (HTTP 400, request ID REQ-T); next attempt in 3s (throttling does not count against backoffLimit)",
                    [T0; 3]),
            }),
            action: NextAction::RequeueAfter(Duration::from_secs(3)),
            event: normal("RetryScheduled",
                "Attempt 1 failed: Throttling.User: Request was denied due to user flow control. \
                (HTTP 400, request ID REQ-T); next attempt in 3s (throttling does not count against backoffLimit)"), ..base() },
        Row { name: "backoff limit reached: Failed RetriesExhausted with the last code", now: T4, spec: json!({"backoffLimit": 1}),
            before: Some(in_flight_2_after_internal_error()),
            trigger: Trig::Attempted(service(500, "InternalError", "The request processing has failed due to some unknown error.", "REQ-2"), RetryClass::Retryable),
            status: json!({
                "phase": "Failed", "attempts": 2, "failedAttempts": 2, "requestId": "REQ-2",
                "errorCode": "InternalError", "httpStatus": 500,
                "errorMessage": "The request processing has failed due to some unknown error.",
                "startTime": T0, "lastAttemptTime": T3, "completionTime": T4,
                "attemptHistory": [attempt_1_internal_error(), {"number": 2, "time": T3, "outcome": "InternalError", "requestId": "REQ-2"}],
                "observedGeneration": 1,
                "conditions": conds(FAILED, "RetriesExhausted",
                    "Gave up after 2 failed attempt(s) (backoffLimit 1); last: InternalError: The request \
                     processing has failed due to some unknown error. (HTTP 500, request ID REQ-2)",
                    [T0, T4, T4]),
            }),
            action: NextAction::Done,
            event: warning("CancelFailed",
                "RetriesExhausted: Gave up after 2 failed attempt(s) (backoffLimit 1); last: InternalError: \
                The request processing has failed due to some unknown error. (HTTP 500, request ID REQ-2)"), ..base() },
        Row { name: "backoffLimit 0: the first retryable failure is final", now: T2, spec: json!({"backoffLimit": 0}),
            before: Some(in_flight_1()),
            trigger: Trig::Attempted(internal_error(), RetryClass::Retryable),
            status: json!({
                "phase": "Failed", "attempts": 1, "failedAttempts": 1, "requestId": "REQ-1",
                "errorCode": "InternalError", "httpStatus": 500,
                "errorMessage": "The request processing has failed due to some unknown error.",
                "startTime": T0, "lastAttemptTime": T1, "completionTime": T2,
                "attemptHistory": [attempt_1_internal_error()],
                "observedGeneration": 1,
                "conditions": conds(FAILED, "RetriesExhausted",
                    "Gave up after 1 failed attempt(s) (backoffLimit 0); last: InternalError: The request \
                     processing has failed due to some unknown error. (HTTP 500, request ID REQ-1)",
                    [T0, T2, T2]),
            }),
            action: NextAction::Done,
            event: warning("CancelFailed",
                "RetriesExhausted: Gave up after 1 failed attempt(s) (backoffLimit 0); last: InternalError: The \
                request processing has failed due to some unknown error. (HTTP 500, request ID REQ-1)"), ..base() },
        Row { name: "deadline passed while waiting for a retry: Failed DeadlineExceeded, nothing sent", now: T5, spec: json!({"activeDeadlineSeconds": 5}),
            before: Some(retry_due("2026-11-27T21:01:00Z", "RetryScheduled", "Attempt 1 failed")),
            trigger: Trig::Observe,
            status: json!({
                "phase": "Failed", "attempts": 1, "failedAttempts": 1, "requestId": "REQ-1",
                "errorCode": "InternalError", "httpStatus": 500, "errorMessage": "boom",
                "startTime": T0, "lastAttemptTime": T1, "completionTime": T5,
                "attemptHistory": [attempt_1_internal_error()],
                "observedGeneration": 1,
                "conditions": conds(FAILED, "DeadlineExceeded",
                    "activeDeadlineSeconds (5s) passed after 1 attempt(s); last error InternalError: boom",
                    [T0, T5, T5]),
            }),
            action: NextAction::Done,
            event: warning("CancelFailed",
                "DeadlineExceeded: activeDeadlineSeconds (5s) passed after 1 attempt(s); last error InternalError: boom"), ..base() },
        Row { name: "a retry due after the deadline wakes up at the deadline", now: T4, spec: json!({"activeDeadlineSeconds": 5}), jitter: 0.99,
            before: Some(in_flight_2_after_internal_error()),
            trigger: Trig::Attempted(service(500, "InternalError", INTERNAL_ERROR, "REQ-2"), RetryClass::Retryable),
            // retry 1: window 2 s, jitter 0.99 → 1.98 s → due at T6, but the deadline is T5.
            status: json!({
                "phase": "Running", "attempts": 2, "failedAttempts": 2,
                "requestId": "REQ-2", "errorCode": "InternalError", "httpStatus": 500, "errorMessage": INTERNAL_ERROR,
                "startTime": T0, "lastAttemptTime": T3, "nextAttemptTime": "2026-11-27T21:00:06Z",
                "attemptHistory": [attempt_1_internal_error(), {"number": 2, "time": T3, "outcome": "InternalError", "requestId": "REQ-2"}],
                "observedGeneration": 1,
                "conditions": conds(IN_PROGRESS, "RetryScheduled",
                    Box::leak(format!("Attempt 2 failed: InternalError: {INTERNAL_ERROR} (HTTP 500, request ID REQ-2); next attempt in 2s (retry 2 of 6)").into_boxed_str()), [T0; 3]),
            }),
            action: NextAction::RequeueAfter(Duration::from_secs(1)),
            event: normal("RetryScheduled",
                Box::leak(format!("Attempt 2 failed: InternalError: {INTERNAL_ERROR} (HTTP 500, request ID REQ-2); next attempt in 2s (retry 2 of 6)").into_boxed_str())) },
        Row { name: "unknown outcome after a crash: counted, kept as Unknown, retried with backoff", now: T4, jitter: 0.5,
            before: Some(in_flight_1()),
            trigger: Trig::Observe,
            status: json!({
                "phase": "Running", "attempts": 1, "failedAttempts": 1, "ambiguousAttempts": 1,
                "startTime": T0, "lastAttemptTime": T1, "nextAttemptTime": T5,
                "attemptHistory": [{"number": 1, "time": T1, "outcome": "Unknown"}],
                "observedGeneration": 1,
                "conditions": conds(IN_PROGRESS, "RetryScheduled",
                    "Attempt 1 failed: the outcome of attempt 1 was never recorded (the controller stopped while \
                     it was in flight); next attempt in 1s (retry 1 of 6)",
                    [T0; 3]),
            }),
            action: NextAction::RequeueAfter(Duration::from_secs(1)),
            event: normal("RetryScheduled",
                "Attempt 1 failed: the outcome of attempt 1 was never recorded (the controller stopped while \
                it was in flight); next attempt in 1s (retry 1 of 6)"), ..base() },
        Row { name: "the repeat after an unknown outcome is written ahead like any attempt", now: T5,
            before: Some(json!({
                "phase": "Running", "attempts": 1, "failedAttempts": 1, "ambiguousAttempts": 1,
                "startTime": T0, "lastAttemptTime": T1, "nextAttemptTime": T5,
                "attemptHistory": [{"number": 1, "time": T1, "outcome": "Unknown"}],
                "observedGeneration": 1,
                "conditions": conds(IN_PROGRESS, "RetryScheduled", "Attempt 1 failed", [T0; 3]),
            })),
            trigger: Trig::Observe,
            status: in_flight_2_after_unknown(),
            action: NextAction::WriteAheadThenSend, ..base() },
        Row { name: "PreviousAttemptMayHaveSucceeded: image gone after an unknown outcome", now: T10,
            before: Some(in_flight_2_after_unknown()),
            trigger: Trig::Attempted(image_gone(), RetryClass::Terminal),
            status: json!({
                "phase": "Failed", "attempts": 2, "failedAttempts": 1, "ambiguousAttempts": 1,
                "requestId": "REQ-2", "errorCode": "InvalidImageId.NotFound", "httpStatus": 404,
                "errorMessage": "The specified ImageId does not exist.",
                "startTime": T0, "lastAttemptTime": T5, "completionTime": T10,
                "attemptHistory": [
                    {"number": 1, "time": T1, "outcome": "Unknown"},
                    {"number": 2, "time": T5, "outcome": "InvalidImageId.NotFound", "requestId": "REQ-2"},
                ],
                "observedGeneration": 1,
                "conditions": conds(FAILED, "PreviousAttemptMayHaveSucceeded",
                    "Attempt 2 got InvalidImageId.NotFound (The specified ImageId does not exist. (HTTP 404, \
                     request ID REQ-2)), but 1 earlier attempt(s) ended without a known outcome: the earlier \
                     attempt may well have cancelled the copy already. Check image m-bp1caf3yicx5jlfl in \
                     cn-hangzhou before creating a new cancellation",
                    [T0, T10, T10]),
            }),
            action: NextAction::Done,
            event: warning("CancelFailed",
                "PreviousAttemptMayHaveSucceeded: Attempt 2 got InvalidImageId.NotFound (The specified ImageId \
                does not exist. (HTTP 404, request ID REQ-2)), but 1 earlier attempt(s) ended without a known \
                outcome: the earlier attempt may well have cancelled the copy already. Check image \
                m-bp1caf3yicx5jlfl in cn-hangzhou before creating a new cancellation"), ..base() },
        Row { name: "credentials missing when a retry is due: no attempt counted, deadline still watched", now: T3, spec: json!({"activeDeadlineSeconds": 60}),
            before: Some(retry_due(T3, "RetryScheduled", "Attempt 1 failed")),
            trigger: Trig::CredentialsMissing("Secret images/alibaba-credentials has no key accessKeySecret"),
            // The deadline (T0 + 60 s) still lands on time while waiting.
            status: retry_due(T3, "AwaitingCredentials",
                "Nothing is sent until credentials are available: Secret images/alibaba-credentials has no \
                 key accessKeySecret"),
            action: NextAction::AwaitCredentials(Some(Duration::from_secs(57))),
            event: warning("AwaitingCredentials",
                "Nothing is sent until credentials are available: Secret images/alibaba-credentials has no \
                key accessKeySecret"), ..base() },
        Row { name: "a retry not yet due: wait for the rest, status untouched", now: T4,
            before: Some(json!({
                "phase": "Running", "attempts": 1, "failedAttempts": 1,
                "startTime": T0, "lastAttemptTime": T1, "nextAttemptTime": T10,
                "attemptHistory": [{"number": 1, "time": T1, "outcome": "InternalError"}],
                "observedGeneration": 1,
                "conditions": conds(IN_PROGRESS, "RetryScheduled", "Attempt 1 failed", [T0; 3]),
            })),
            trigger: Trig::Observe,
            status: json!({
                "phase": "Running", "attempts": 1, "failedAttempts": 1,
                "startTime": T0, "lastAttemptTime": T1, "nextAttemptTime": T10,
                "attemptHistory": [{"number": 1, "time": T1, "outcome": "InternalError"}],
                "observedGeneration": 1,
                "conditions": conds(IN_PROGRESS, "RetryScheduled", "Attempt 1 failed", [T0; 3]),
            }),
            action: NextAction::RequeueAfter(Duration::from_secs(6)), ..base() },
        finished("a finished resource is never sent again", Trig::Observe),
        finished("a finished resource does not wait for credentials either", Trig::CredentialsMissing("Secret images/alibaba-credentials not found")),
        finished("a recorded success is never overwritten by a late outcome", Trig::Attempted(transport("timed out"), RetryClass::Outage)),
    ];
    for row in &rows {
        run(row);
    }
}

/// Every terminal code fails at once, after exactly one attempt, with the
/// code sanitised into the reason and kept verbatim in errorCode.
#[test]
fn terminal_codes() {
    let cases = [
        (
            404,
            "InvalidImageId.NotFound",
            "InvalidImageIdNotFound",
            "The specified ImageId does not exist.",
        ),
        (
            400,
            "IncorrectImageStatus",
            "IncorrectImageStatus",
            "The image has completed copy.",
        ),
        (
            403,
            "Forbidden.RAM",
            "ForbiddenRAM",
            "User not authorized to operate on the specified resource.",
        ),
        (
            400,
            "SignatureDoesNotMatch",
            "SignatureDoesNotMatch",
            "Specified signature is not matched.",
        ),
        (
            404,
            "InvalidAccessKeyId.NotFound",
            "InvalidAccessKeyIdNotFound",
            "Specified access key is not found.",
        ),
        (
            400,
            "InvalidRegionId.NotFound",
            "InvalidRegionIdNotFound",
            "The specified RegionId does not exist.",
        ),
    ];
    for (http, code, reason, message) in cases {
        run(&Row {
            name: code,
            spec: json!({}),
            before: Some(in_flight_1()),
            now: T2,
            jitter: 0.0,
            trigger: Trig::Attempted(service(http, code, message, "REQ-1"), RetryClass::Terminal),
            status: json!({
                "phase": "Failed", "attempts": 1, "requestId": "REQ-1",
                "errorCode": code, "httpStatus": http, "errorMessage": message,
                "startTime": T0, "lastAttemptTime": T1, "completionTime": T2,
                "attemptHistory": [{"number": 1, "time": T1, "outcome": code, "requestId": "REQ-1"}],
                "observedGeneration": 1,
                "conditions": conds(FAILED, reason,
                    &format!("{code}: {message} (HTTP {http}, request ID REQ-1)"), [T0, T2, T2]),
            }),
            action: NextAction::Done,
            event: Some((
                EventKind::Warning,
                "CancelFailed",
                Box::leak(
                    format!("{reason}: {code}: {message} (HTTP {http}, request ID REQ-1)")
                        .into_boxed_str(),
                ),
            )),
        });
    }
}

/// The "may have succeeded" verdict survives the history rotating past the
/// ambiguous attempt, and also follows IncorrectImageStatus.
#[test]
fn previous_attempt_may_have_succeeded_survives_history_rotation() {
    let history: Vec<Value> = (3..=12)
        .map(|n| {
            let outcome = if n == 12 { "Unknown" } else { "Throttling" };
            json!({"number": n, "time": T5, "outcome": outcome})
        })
        .collect();
    let before = json!({
        "phase": "Running", "attempts": 12, "failedAttempts": 1, "ambiguousAttempts": 1,
        "startTime": T0, "lastAttemptTime": T5, "attemptHistory": history,
        "observedGeneration": 1,
        "conditions": conds(IN_PROGRESS, "AttemptInFlight", "Sending", [T0; 3]),
    });
    let spec = spec(json!({}));
    let before: CopyImageCancellationStatus = serde_json::from_value(before).unwrap();
    assert!(
        !before
            .attempt_history
            .iter()
            .any(|a| a.number < 12 && (a.outcome == "Unknown" || a.outcome == "TransportError")),
        "the ambiguous attempt has rotated out of the history"
    );
    let input = input(&spec, Some(&before), ts(T10));
    let outcome = service(
        400,
        "IncorrectImageStatus",
        "The specified image is not coping.",
        "REQ-12",
    );
    let d = decide(&input, Trigger::Attempted(&outcome));
    assert_eq!(d.status.phase, Some(Phase::Failed));
    assert_eq!(d.status.error_code.as_deref(), Some("IncorrectImageStatus"));
    let stalled = conditions::get(&d.status.conditions, types::STALLED).unwrap();
    assert_eq!(stalled.status, "True");
    assert_eq!(stalled.reason, "PreviousAttemptMayHaveSucceeded");
    assert!(
        stalled.message.contains("may well have cancelled the copy"),
        "{}",
        stalled.message
    );
    assert_eq!(d.status.attempt_history.len(), 10);
    assert_eq!(d.status.attempt_history[9].outcome, "IncorrectImageStatus");
}

/// Without an earlier ambiguous attempt the same code is a plain terminal error.
#[test]
fn image_gone_without_ambiguity_is_a_plain_terminal_error() {
    let spec = spec(json!({}));
    let before: CopyImageCancellationStatus =
        serde_json::from_value(in_flight_2_after_internal_error()).unwrap();
    let input = input(&spec, Some(&before), ts(T10));
    let d = decide(&input, Trigger::Attempted(&image_gone()));
    let stalled = conditions::get(&d.status.conditions, types::STALLED).unwrap();
    assert_eq!(stalled.reason, "InvalidImageIdNotFound");
}

/// The history keeps the last 10 attempts; numbering continues.
#[test]
fn history_keeps_the_last_ten() {
    let spec = spec(json!({"backoffLimit": 20}));
    let mut status: Option<CopyImageCancellationStatus> = None;
    let mut now = ts(T0);
    for _ in 0..15 {
        let input = input(&spec, status.as_ref(), now);
        let d = decide(&input, Trigger::Observe);
        let d = if d.action == NextAction::WriteAheadThenSend {
            let input = Input {
                status: Some(&d.status),
                ..input
            };
            decide(&input, Trigger::Attempted(&transport("reset")))
        } else {
            d
        };
        status = Some(d.status);
        now += SignedDuration::from_secs(1);
    }
    let status = status.unwrap();
    assert_eq!(status.attempts, 15, "every pass sent once");
    // Outage-class answers are never counted; each may have reached ECS.
    assert_eq!(status.failed_attempts, 0);
    assert_eq!(status.ambiguous_attempts, 15);
    let numbers: Vec<i32> = status.attempt_history.iter().map(|a| a.number).collect();
    assert_eq!(numbers, (6..=15).collect::<Vec<_>>());
}

#[test]
fn messages_are_bounded() {
    let spec = spec(json!({}));
    let before: CopyImageCancellationStatus = serde_json::from_value(in_flight_1()).unwrap();
    let input = input(&spec, Some(&before), ts(T2));
    let long = "x".repeat(10_000);
    let outcome = service(400, "InvalidParameter", &long, "REQ-1");
    let d = decide(&input, Trigger::Attempted(&outcome));
    assert_eq!(
        d.status.error_message.as_ref().unwrap().chars().count(),
        MAX_MESSAGE_CHARS
    );
    for c in &d.status.conditions {
        assert!(c.message.chars().count() <= MAX_MESSAGE_CHARS);
    }
    assert!(d.event.unwrap().note.chars().count() <= MAX_MESSAGE_CHARS);
}

#[test]
fn retry_delay_is_full_jitter_or_the_services_hint() {
    let backoff = Backoff::default();
    let windows: Vec<u64> = (0..12)
        .map(|n| retry_delay(&backoff, n, None, 1.0).as_secs())
        .collect();
    assert_eq!(windows, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
    assert_eq!(retry_delay(&backoff, 3, None, 0.25), Duration::from_secs(2));
    assert_eq!(retry_delay(&backoff, 3, None, 0.0), Duration::ZERO);
    assert_eq!(
        retry_delay(&backoff, u32::MAX, None, 0.5),
        Duration::from_secs(150)
    );
    assert_eq!(
        retry_delay(&backoff, 0, Some(Duration::from_secs(7)), 0.0),
        Duration::from_secs(7)
    );
    assert_eq!(
        retry_delay(&backoff, 0, Some(Duration::from_secs(900)), 0.0),
        Duration::from_secs(300)
    );
}

/// The operator Pod's Events: one per transition into a failing state, one
/// on recovery, none on repeats, first fetches or static keys; no key in any.
#[test]
fn credential_events_on_transitions_only() {
    use crate::identity::{CredentialState as S, CredentialStatus, SourceKind};
    let status = |state: S, failures: u32| CredentialStatus {
        source: Some(SourceKind::Rrsa),
        state,
        access_key_id: Some("STS.KeyIdNotInEvents".into()),
        expiration: Some(ts("2026-11-27T22:00:00Z")),
        next_refresh: None,
        consecutive_failures: failures,
        last_error: (failures > 0)
            .then(|| "STS answered HTTP 500 InternalError: boom (request ID R-1)".into()),
        refreshes_total: 1,
        failures_total: u64::from(failures),
    };
    let waiting = "resources without a credentialsSecretRef wait (AwaitingCredentials) until a \
                   refresh succeeds; resources with their own Secret are not affected";
    type Expected = Option<(EventKind, &'static str, String)>;
    let refresh_failed =
        |note: String| -> Expected { Some((EventKind::Warning, "CredentialRefreshFailed", note)) };
    let recovered = || -> Expected {
        let note = "The operator's rrsa credentials were refreshed again; resources waiting for them proceed";
        Some((EventKind::Normal, "CredentialsRecovered", note.to_string()))
    };
    let rows: Vec<(Option<S>, S, u32, Expected)> = vec![
        (None, S::Pending, 0, None),
        (Some(S::Pending), S::Valid, 0, None),
        (Some(S::Valid), S::Valid, 0, None),
        (None, S::Static, 0, None),
        (
            Some(S::Pending),
            S::Unavailable,
            1,
            refresh_failed(format!(
                "No rrsa credentials could be obtained for the operator: STS answered HTTP 500 \
                 InternalError: boom (request ID R-1); {waiting}"
            )),
        ),
        (Some(S::Unavailable), S::Unavailable, 2, None),
        (
            Some(S::Valid),
            S::RefreshFailing,
            1,
            refresh_failed(
                "Refreshing the operator's rrsa credentials failed (1 time(s) in a row; retrying with \
                 backoff); the current ones stay valid until 2026-11-27T22:00:00Z: STS answered HTTP \
                 500 InternalError: boom (request ID R-1)"
                    .to_string(),
            ),
        ),
        (Some(S::RefreshFailing), S::RefreshFailing, 2, None),
        (
            Some(S::RefreshFailing),
            S::Expired,
            3,
            refresh_failed(format!(
                "The operator's rrsa credentials expired and could not be refreshed: STS answered \
                 HTTP 500 InternalError: boom (request ID R-1); {waiting}"
            )),
        ),
        (Some(S::Expired), S::Valid, 0, recovered()),
        (Some(S::Unavailable), S::Valid, 0, recovered()),
    ];
    for (previous, state, failures, want) in rows {
        let got = credential_event(previous, &status(state, failures));
        if let Some(note) = &got {
            assert!(!note.note.contains("STS.KeyIdNotInEvents"), "{note:?}");
        }
        let got = got.map(|e| (e.kind, e.reason, e.note));
        assert_eq!(
            got.as_ref().map(|(k, r, n)| (*k, *r, n.as_str())),
            want.as_ref().map(|(k, r, n)| (*k, *r, n.as_str())),
            "{previous:?} -> {state:?}"
        );
    }
}

/// Decides `trigger` on `before` at T2 with pacing on.
fn decide_paced(
    spec: &CopyImageCancellationSpec,
    before: Option<Value>,
    trigger: Trigger<'_>,
) -> Decision {
    let before: Option<CopyImageCancellationStatus> =
        before.map(|v| serde_json::from_value(v).unwrap());
    let input = Input {
        jitter: 0.75,
        paced: true,
        ..input(spec, before.as_ref(), ts(T2))
    };
    decide(&input, trigger)
}

#[test]
fn paced_throttling_retries_as_the_pace_allows_never_before_retry_after() {
    let plain = "Request was denied due to user flow control.";
    // (x-acs-retry-after, nextAttemptTime, wait)
    for (retry_after, next, wait) in [(None, T2, 0), (Some(3), T5, 3)] {
        let outcome = CancelOutcome::Service(ServiceError {
            retry_after: retry_after.map(Duration::from_secs),
            ..match service(400, "Throttling.User", plain, "REQ-T") {
                CancelOutcome::Service(e) => e,
                _ => unreachable!(),
            }
        });
        let d = decide_paced(
            &spec(json!({})),
            Some(in_flight_1()),
            Trigger::Attempted(&outcome),
        );
        let message = format!(
            "Attempt 1 failed: Throttling.User: {plain} (HTTP 400, request ID REQ-T); next attempt in {wait}s \
             (as soon as the pace of this access key in cn-hangzhou allows; throttling does not count against backoffLimit)"
        );
        assert_eq!(
            serde_json::to_value(&d.status).unwrap(),
            json!({
                "phase": "Running", "attempts": 1, "requestId": "REQ-T",
                "errorCode": "Throttling.User", "httpStatus": 400, "errorMessage": plain,
                "startTime": T0, "lastAttemptTime": T1, "nextAttemptTime": next,
                "attemptHistory": [{"number": 1, "time": T1, "outcome": "Throttling.User", "requestId": "REQ-T"}],
                "observedGeneration": 1,
                "conditions": conds(IN_PROGRESS, "Throttled", &message, [T0; 3]),
            }),
            "retry-after {retry_after:?}"
        );
        assert_eq!(
            d.action,
            NextAction::RequeueAfter(Duration::from_secs(wait))
        );
        assert_eq!(retry_reason(&d.status, d.event.as_ref()), Some("Throttled"));
        // The jitter draw (0.75 of a 1 s window) played no part.
    }
}

#[test]
fn awaiting_the_pace_writes_a_first_status_and_nothing_else() {
    let message = "Nothing sent yet: ECS throttled the identity signing it in cn-hangzhou, so its requests are \
                   paced; the cancellation of m-bp1caf3yicx5jlfl waits for its turn";
    // A new resource: its first status says why nothing is sent (kstatus
    // reads it as in progress); the wait is bounded by the deadline.
    for (extra, limit) in [
        (json!({}), None),
        (
            json!({"activeDeadlineSeconds": 60}),
            Some(Duration::from_secs(60)),
        ),
    ] {
        let d = decide_paced(&spec(extra), None, Trigger::AwaitingPace);
        assert_eq!(
            serde_json::to_value(&d.status).unwrap(),
            json!({
                "phase": "Pending", "attempts": 0, "startTime": T2, "observedGeneration": 1,
                "conditions": conds(IN_PROGRESS, "AwaitingPace", message, [T2; 3]),
            })
        );
        assert_eq!((d.action, d.event), (NextAction::AwaitSlot(limit), None));
    }
    // A resource with a status (a throttled attempt due again) keeps it: no
    // write while it waits its turn.
    let outcome = service(
        400,
        "Throttling",
        "Request was denied due to request throttling.",
        "REQ-T",
    );
    let throttled = decide_paced(
        &spec(json!({})),
        Some(in_flight_1()),
        Trigger::Attempted(&outcome),
    );
    let before = serde_json::to_value(&throttled.status).unwrap();
    let d = decide_paced(
        &spec(json!({})),
        Some(before.clone()),
        Trigger::AwaitingPace,
    );
    assert_eq!(serde_json::to_value(&d.status).unwrap(), before);
    assert_eq!((d.action, d.event), (NextAction::AwaitSlot(None), None));
}

/// Exactly-once through an outage: a timeout while the endpoint is down is
/// not counted but stays ambiguous, so the repeat that finds the image gone
/// ends `PreviousAttemptMayHaveSucceeded`, not a bare error.
#[test]
fn an_ambiguous_answer_during_an_outage_still_guards_exactly_once() {
    let spec = spec(json!({}));
    let before: CopyImageCancellationStatus = serde_json::from_value(in_flight_1()).unwrap();
    let timeout = CancelOutcome::Transport(TransportError {
        kind: crate::ecs::TransportKind::Timeout,
        message: "request to ecs.cn-hangzhou.aliyuncs.com timed out (limit 30s)".into(),
        http_status: None,
    });
    let outage = outage();
    let d = decide(
        &input(&spec, Some(&before), ts(T2)),
        Trigger::AttemptedAt(&timeout, EndpointState::Unavailable(&outage)),
    );
    assert_eq!(
        (d.status.failed_attempts, d.status.ambiguous_attempts),
        (0, 1)
    );
    assert_eq!(d.action, NextAction::RequeueAfter(Duration::ZERO));
    // The endpoint is back: the next decision sends again at once.
    let d = decide(&input(&spec, Some(&d.status), ts(T3)), Trigger::Observe);
    assert_eq!(d.action, NextAction::WriteAheadThenSend);
    assert_eq!(d.status.attempts, 2);
    let d = decide(
        &input(&spec, Some(&d.status), ts(T4)),
        Trigger::AttemptedAt(&image_gone(), EndpointState::Answering),
    );
    assert_eq!(d.status.phase, Some(Phase::Failed));
    assert_eq!(d.status.failed_attempts, 0);
    let stalled = conditions::get(&d.status.conditions, types::STALLED).unwrap();
    assert_eq!(stalled.reason, "PreviousAttemptMayHaveSucceeded");
}
