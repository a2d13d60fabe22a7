//! The pure decision core: given a resource, the time, and what just happened,
//! the complete status to apply next and what the shell must do after.
//!
//! No I/O, no clock, no randomness: `now` and a jitter sample are inputs, so
//! every case is a table row. The shell applies [`Decision::status`] exactly
//! as returned and then follows [`Decision::action`].
//!
//! ```text
//!  Observe ─┬─ finished? ─────────────────────────────▶ Done (status untouched)
//!           ├─ no status yet ─────────────────────────▶ write-ahead (or AwaitingCredentials)
//!           ├─ deadline passed ───────────────────────▶ Failed DeadlineExceeded
//!           ├─ last attempt still `Unknown` (crash) ──▶ counted failure: retry or RetriesExhausted
//!           ├─ retry not due yet ─────────────────────▶ RequeueAfter(remaining)
//!           └─ otherwise ─────────────────────────────▶ write-ahead, WriteAheadThenSend
//!  CredentialsMissing ── (same checks, then) ─────────▶ AwaitingCredentials, AwaitCredentials
//!                                                       (Warning Event on entering the wait)
//!  CredentialsPending ── (same checks, then) ─────────▶ status untouched, AwaitCredentials
//!  Attempted(outcome) ─┬─ success ────────────────────▶ Succeeded
//!                      ├─ terminal ───────────────────▶ Failed <code> / PreviousAttemptMayHaveSucceeded
//!                      ├─ retryable (counted) ────────▶ RetryScheduled / RetriesExhausted
//!                      ├─ throttled (not counted) ────▶ Throttled
//!                      └─ outage (not counted) ───────▶ EcsUnavailable: wait for the endpoint
//!                                                       (breaker open) or back off (not open)
//!  Unavailable(outage) ── (same checks, then) ────────▶ EcsUnavailable, AwaitSlot
//! ```

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::conditions::{self, reasons, status as cstatus, types};
use crate::ecs::{
    CODES_AFTER_A_POSSIBLE_SUCCESS, CancelOutcome, EndpointOutage, Incident, RetryClass,
    TransportKind,
};
use crate::identity::{CredentialState, CredentialStatus};
use crate::resource::{
    ATTEMPT_HISTORY_LIMIT, AttemptRecord, CopyImageCancellationSpec, CopyImageCancellationStatus,
    Phase,
};
use crate::retry::Backoff;

/// `attemptHistory` outcome of a successful attempt.
pub const OUTCOME_SUCCEEDED: &str = "Succeeded";
/// `attemptHistory` outcome (and `errorCode`) when no usable answer came back.
pub const OUTCOME_TRANSPORT_ERROR: &str = "TransportError";
/// `attemptHistory` outcome of an attempt recorded before sending whose
/// outcome was never recorded.
pub const OUTCOME_UNKNOWN: &str = "Unknown";

/// Longest message written into status and conditions, in characters.
pub const MAX_MESSAGE_CHARS: usize = 1024;

/// Event reasons (the Kubernetes Event `reason` field).
pub mod event_reasons {
    /// The copy was cancelled.
    pub const CANCELLED: &str = "Cancelled";
    /// The controller gave up.
    pub const CANCEL_FAILED: &str = "CancelFailed";
    /// A retry is scheduled.
    pub const RETRY_SCHEDULED: &str = "RetryScheduled";
    /// Nothing can be sent: no credentials (the Secret, a key in it, or the
    /// operator's own credentials are missing or cannot be obtained).
    pub const AWAITING_CREDENTIALS: &str = "AwaitingCredentials";
    /// Nothing can be sent: two RamRoleSelectors match the namespace.
    pub const AMBIGUOUS_ROLE: &str = "AmbiguousRole";
}

/// Event reasons about the operator's own Pod.
pub mod operator_event_reasons {
    /// The operator's temporary credentials could not be refreshed or obtained.
    pub const CREDENTIAL_REFRESH_FAILED: &str = "CredentialRefreshFailed";
    /// They were obtained again after failing.
    pub const CREDENTIALS_RECOVERED: &str = "CredentialsRecovered";
}

/// Whether resources without a Secret are held up (or soon will be) in `state`.
fn credentials_failing(state: CredentialState) -> bool {
    matches!(
        state,
        CredentialState::RefreshFailing | CredentialState::Expired | CredentialState::Unavailable
    )
}

/// The Event about the operator's own Pod when its credentials move from
/// `previous` to `status`: a Warning on entering each failing state
/// (refresh failing while the old key is still valid, expired, never
/// obtained), a Normal one when they are valid again. Nothing on repeats, on
/// the first fetch, or for static keys. The text names the source and the
/// last error (redacted at its source), never a key.
pub fn credential_event(
    previous: Option<CredentialState>,
    status: &CredentialStatus,
) -> Option<EventNote> {
    if previous == Some(status.state) {
        return None;
    }
    let source = status.source.map_or("none", |s| s.as_str());
    let error = status.last_error.as_deref().unwrap_or("no error recorded");
    let waiting = "resources without a credentialsSecretRef wait (AwaitingCredentials) until a refresh \
                   succeeds; resources with their own Secret are not affected";
    let warning = |note: String| {
        Some(EventNote {
            kind: EventKind::Warning,
            reason: operator_event_reasons::CREDENTIAL_REFRESH_FAILED,
            note: bounded(&note),
        })
    };
    match status.state {
        CredentialState::RefreshFailing => {
            let until = status
                .expiration
                .map_or_else(|| "their expiry".to_string(), |t| t.to_string());
            warning(format!(
                "Refreshing the operator's {source} credentials failed ({} time(s) in a row; retrying \
                 with backoff); the current ones stay valid until {until}: {error}",
                status.consecutive_failures
            ))
        }
        CredentialState::Expired => warning(format!(
            "The operator's {source} credentials expired and could not be refreshed: {error}; {waiting}"
        )),
        CredentialState::Unavailable => warning(format!(
            "No {source} credentials could be obtained for the operator: {error}; {waiting}"
        )),
        CredentialState::Valid if previous.is_some_and(credentials_failing) => Some(EventNote {
            kind: EventKind::Normal,
            reason: operator_event_reasons::CREDENTIALS_RECOVERED,
            note: format!(
                "The operator's {source} credentials were refreshed again; resources waiting for them proceed"
            ),
        }),
        _ => None,
    }
}

/// The delay before a retry: the service's `x-acs-retry-after` when it sent
/// one (capped), otherwise full jitter below `backoff.ceiling(retry)`, with
/// `jitter` the uniform draw in `[0, 1]` (values outside are clamped). The
/// same rule as [`Backoff::delay`], with the draw passed in.
pub fn retry_delay(
    backoff: &Backoff,
    retry: u32,
    retry_after: Option<Duration>,
    jitter: f64,
) -> Duration {
    if let Some(after) = retry_after {
        return after.min(backoff.cap());
    }
    backoff.ceiling(retry).mul_f64(jitter.clamp(0.0, 1.0))
}

/// What the shell looked at.
#[derive(Clone, Copy, Debug)]
pub struct Input<'a> {
    /// The resource's spec.
    pub spec: &'a CopyImageCancellationSpec,
    /// The resource's `metadata.generation`.
    pub generation: Option<i64>,
    /// The resource's status as read (for [`Trigger::Attempted`]: the
    /// write-ahead status that was applied before sending).
    pub status: Option<&'a CopyImageCancellationStatus>,
    /// The time now.
    pub now: Timestamp,
    /// Backoff settings (`--retry-base-delay`, `--retry-max-delay`).
    pub backoff: Backoff,
    /// A uniform sample from `[0, 1]`, for full jitter.
    pub jitter: f64,
    /// Whether sends are paced per access key and region (`--ecs-pacing
    /// adaptive`): a throttled attempt is then retried as soon as that pace
    /// allows (never before `x-acs-retry-after`), the pace being the backoff
    /// shared by every resource of the scope; otherwise it backs off alone.
    pub paced: bool,
}

/// What just happened.
#[derive(Clone, Copy, Debug)]
pub enum Trigger<'a> {
    /// A reconcile with credentials at hand: look at the resource.
    Observe,
    /// A reconcile without usable credentials (the reason names the Secret
    /// or key, never a value).
    CredentialsMissing(&'a str),
    /// A reconcile whose namespace two RamRoleSelectors match (the reason
    /// names both): nothing is guessed, the resource waits like one without
    /// credentials, under its own reason.
    AmbiguousRole(&'a str),
    /// A reconcile while the credentials are expected shortly (the operator's
    /// own being fetched for the first time, or a Secret the cache has not
    /// seen yet): a short, expected wait, so no status change or Event (a new
    /// resource gets its first status, reason Pending).
    CredentialsPending,
    /// A send was due, but the pace of its access key and region has no slot
    /// yet: the shell holds a place in the queue. No status change (a new
    /// resource gets its first status, reason AwaitingPace).
    AwaitingPace,
    /// The attempt recorded by the last write-ahead came back; how it is
    /// treated is [`CancelOutcome::retry_class`]'s call.
    Attempted(&'a CancelOutcome),
    /// Like [`Trigger::Attempted`], with what the region endpoint's breaker
    /// made of the answer ([`CancelOutcome::retry_class_in`] decides).
    AttemptedAt(&'a CancelOutcome, EndpointState<'a>),
    /// A send was due, but the region's endpoint is in an outage: the shell
    /// holds a place in its queue. Status says so (`EcsUnavailable`).
    Unavailable(&'a EndpointOutage),
}

/// What the region endpoint's breaker made of an answer.
#[derive(Clone, Copy, Debug)]
pub enum EndpointState<'a> {
    /// The endpoint answers: an `InternalError` is the resource's own.
    Answering,
    /// A run of `InternalError` across resources, the breaker not open yet:
    /// the endpoint's incident, retried with backoff, not counted.
    Incident,
    /// The breaker is open: the resource waits for the endpoint.
    Unavailable(&'a EndpointOutage),
}

/// What the shell must do once the status is applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NextAction {
    /// Apply the status with the read `resourceVersion` as precondition (the
    /// attempt is now recorded), then send CancelCopyImage and decide again
    /// with [`Trigger::Attempted`]. A conflict means do NOT send.
    WriteAheadThenSend,
    /// Look again after this long (zero: straight away).
    RequeueAfter(Duration),
    /// Wait for the Secret to appear or change; with a deadline, look again
    /// no later than this (so `DeadlineExceeded` lands on time).
    AwaitCredentials(Option<Duration>),
    /// Wait for the slot the pace will give, then decide again; with a
    /// deadline, no longer than this.
    AwaitSlot(Option<Duration>),
    /// Finished: nothing will ever be sent again.
    Done,
}

/// Kind of a Kubernetes Event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// Something worth knowing.
    Normal,
    /// Something went wrong.
    Warning,
}

/// A Kubernetes Event to publish about the resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventNote {
    /// Normal or Warning.
    pub kind: EventKind,
    /// One of [`event_reasons`].
    pub reason: &'static str,
    /// Human-readable text.
    pub note: String,
}

/// The decision: the complete status to apply, what to do next, and the
/// Event to publish.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// The full status to apply (equal to the input status when nothing changed).
    pub status: CopyImageCancellationStatus,
    /// What to do once the status is applied.
    pub action: NextAction,
    /// The Event to publish, if any.
    pub event: Option<EventNote>,
}

/// Decides the next status and action. Pure: same input, same answer.
pub fn decide(input: &Input<'_>, trigger: Trigger<'_>) -> Decision {
    let now = whole_seconds(input.now);
    let current = input.status.cloned().unwrap_or_default();
    // NB: a finished cancellation is never sent again, and nothing that
    // happens afterwards may overwrite what was recorded.
    if current.phase.is_some_and(Phase::is_finished) {
        return Decision {
            status: current,
            action: NextAction::Done,
            event: None,
        };
    }
    let d = Draft {
        input,
        now,
        status: current,
    };
    match trigger {
        Trigger::Attempted(outcome) => d.attempted(outcome, outcome.retry_class(), None),
        Trigger::AttemptedAt(outcome, endpoint) => {
            let (incident, outage) = match endpoint {
                EndpointState::Answering => (Incident::No, None),
                EndpointState::Incident => (Incident::Yes, None),
                EndpointState::Unavailable(outage) => (Incident::Yes, Some(outage)),
            };
            d.attempted(outcome, outcome.retry_class_in(incident), outage)
        }
        Trigger::Unavailable(outage) => d.observe(Some(Hold::Unavailable(outage))),
        Trigger::Observe => d.observe(None),
        Trigger::CredentialsMissing(why) => d.observe(Some(Hold::Missing(why))),
        Trigger::AmbiguousRole(why) => d.observe(Some(Hold::Ambiguous(why))),
        Trigger::CredentialsPending => d.observe(Some(Hold::Pending)),
        Trigger::AwaitingPace => d.observe(Some(Hold::Pace)),
    }
}

/// Why nothing can be sent yet.
#[derive(Clone, Copy)]
enum Hold<'a> {
    /// No key: missing or failing (the reason).
    Missing(&'a str),
    /// Two selectors match the namespace (the reason).
    Ambiguous(&'a str),
    /// The key is expected shortly.
    Pending,
    /// The pace of the key and region has no slot yet.
    Pace,
    /// The region's endpoint is in an outage.
    Unavailable(&'a EndpointOutage),
}

/// A status being worked on.
struct Draft<'i, 'a> {
    input: &'i Input<'a>,
    now: Timestamp,
    status: CopyImageCancellationStatus,
}

impl Draft<'_, '_> {
    fn observe(mut self, hold: Option<Hold<'_>>) -> Decision {
        if self.status.phase.is_none() {
            // NB: with credentials at hand the first status written is the
            // write-ahead itself (Reconciling=True, observedGeneration, the
            // attempt as Unknown), still before anything is sent: one status
            // write fewer per resource than a separate Pending step.
            self.status.phase = Some(Phase::Pending);
            self.status.start_time = Some(Time(self.now));
            let spec = self.input.spec;
            return match hold {
                Some(Hold::Missing(why)) => self.awaiting_credentials(why),
                Some(Hold::Ambiguous(why)) => self.ambiguous_role(why),
                Some(Hold::Pending) => {
                    // The operator's credentials are being fetched: say so
                    // now (kstatus sees Reconciling), send once they are here.
                    let message = format!(
                        "Nothing sent yet: about to cancel the copy to {} in {}",
                        spec.image_id, spec.region_id
                    );
                    self.in_progress(reasons::PENDING, &message);
                    let by_deadline = self.deadline().map(|d| until(self.input.now, d));
                    self.finish(NextAction::AwaitCredentials(by_deadline), None)
                }
                Some(Hold::Pace) => {
                    let message = format!(
                        "Nothing sent yet: ECS throttled the identity signing it in {}, so its requests \
                         are paced; the cancellation of {} waits for its turn",
                        spec.region_id, spec.image_id
                    );
                    self.in_progress(reasons::AWAITING_PACE, &message);
                    let by_deadline = self.deadline().map(|d| until(self.input.now, d));
                    self.finish(NextAction::AwaitSlot(by_deadline), None)
                }
                Some(Hold::Unavailable(outage)) => {
                    self.await_endpoint(outage, "Nothing sent yet: ")
                }
                None => self.write_ahead(),
            };
        }
        if let Some(decision) = self.deadline_check() {
            return decision;
        }
        if self.in_flight_index().is_some() {
            // The controller stopped between the write-ahead and recording the
            // outcome: the attempt may or may not have reached ECS.
            let number = self.status.attempts;
            let message = format!(
                "the outcome of attempt {number} was never recorded (the controller stopped while it was in flight)"
            );
            return self.counted_failure(Failure {
                code: None,
                message,
                http_status: None,
                request_id: None,
                ambiguous: true,
                retry_after: None,
                reason: None,
            });
        }
        if let Some(next) = self.status.next_attempt_time.as_ref().map(|t| t.0)
            && next > self.input.now
        {
            let wait = until(self.input.now, next);
            let wait = self.bounded_by_deadline(wait);
            return self.finish(NextAction::RequeueAfter(wait), None);
        }
        let by_deadline = self.deadline().map(|d| until(self.input.now, d));
        match hold {
            Some(Hold::Missing(why)) => self.awaiting_credentials(why),
            Some(Hold::Ambiguous(why)) => self.ambiguous_role(why),
            Some(Hold::Pending) => self.finish(NextAction::AwaitCredentials(by_deadline), None),
            Some(Hold::Pace) => self.finish(NextAction::AwaitSlot(by_deadline), None),
            Some(Hold::Unavailable(outage)) => self.await_endpoint(outage, ""),
            None => self.write_ahead(),
        }
    }

    /// Waits for the region's endpoint to answer again: `EcsUnavailable`
    /// with the region, since when and the last error, and what ends the wait.
    fn await_endpoint(mut self, outage: &EndpointOutage, prefix: &str) -> Decision {
        let message = format!("{prefix}{}", self.outage_message(outage));
        self.in_progress(reasons::ECS_UNAVAILABLE, &message);
        let by_deadline = self.deadline().map(|d| until(self.input.now, d));
        self.finish(NextAction::AwaitSlot(by_deadline), None)
    }

    fn outage_message(&self, outage: &EndpointOutage) -> String {
        let end = match self.deadline() {
            Some(deadline) => format!("activeDeadlineSeconds ends the wait at {deadline}"),
            None => {
                "with no activeDeadlineSeconds the wait lasts as long as the outage".to_string()
            }
        };
        format!(
            "The ECS endpoint of {} is unavailable since {} (last error: {}); waiting for it to \
             answer, one probe at a time for the region; nothing counts against backoffLimit; {end}",
            outage.region,
            whole_seconds(outage.since),
            outage.last_error,
        )
    }

    /// Waits for credentials, with a Warning Event when the wait begins (not
    /// on every recheck: the reason stays, only the message may change).
    fn awaiting_credentials(mut self, why: &str) -> Decision {
        let already_waiting = awaiting_credentials(Some(&self.status));
        let message = format!("Nothing is sent until credentials are available: {why}");
        self.in_progress(reasons::AWAITING_CREDENTIALS, &message);
        let event = (!already_waiting).then(|| EventNote {
            kind: EventKind::Warning,
            reason: event_reasons::AWAITING_CREDENTIALS,
            note: bounded(&message),
        });
        let by_deadline = self.deadline().map(|d| until(self.input.now, d));
        self.finish(NextAction::AwaitCredentials(by_deadline), event)
    }

    /// Waits for an administrator to remove overlapping selectors, with a
    /// Warning Event when the wait begins.
    fn ambiguous_role(mut self, why: &str) -> Decision {
        let already_waiting = conditions::get(&self.status.conditions, types::RECONCILING)
            .is_some_and(|c| c.reason == reasons::AMBIGUOUS_ROLE);
        let message = format!("Nothing is sent, nothing is guessed: {why}");
        self.in_progress(reasons::AMBIGUOUS_ROLE, &message);
        let event = (!already_waiting).then(|| EventNote {
            kind: EventKind::Warning,
            reason: event_reasons::AMBIGUOUS_ROLE,
            note: bounded(&message),
        });
        let by_deadline = self.deadline().map(|d| until(self.input.now, d));
        self.finish(NextAction::AwaitCredentials(by_deadline), event)
    }

    fn write_ahead(mut self) -> Decision {
        let now = self.now;
        let st = &mut self.status;
        st.attempts += 1;
        st.phase = Some(Phase::Running);
        st.last_attempt_time = Some(Time(now));
        st.next_attempt_time = None;
        st.start_time.get_or_insert(Time(now));
        push_history(
            &mut st.attempt_history,
            AttemptRecord {
                number: st.attempts,
                time: Time(now),
                outcome: OUTCOME_UNKNOWN.to_string(),
                request_id: None,
            },
        );
        let message = format!(
            "Sending CancelCopyImage (attempt {}) for {} in {}",
            st.attempts, self.input.spec.image_id, self.input.spec.region_id
        );
        self.in_progress(reasons::ATTEMPT_IN_FLIGHT, &message);
        self.finish(NextAction::WriteAheadThenSend, None)
    }

    fn attempted(
        mut self,
        outcome: &CancelOutcome,
        class: RetryClass,
        outage: Option<&EndpointOutage>,
    ) -> Decision {
        let history_outcome = match outcome {
            CancelOutcome::Cancelled { .. } => OUTCOME_SUCCEEDED.to_string(),
            CancelOutcome::Service(e) => e.code.clone(),
            CancelOutcome::Transport(_) => OUTCOME_TRANSPORT_ERROR.to_string(),
        };
        let request_id = match outcome {
            CancelOutcome::Cancelled { request_id } => Some(request_id.clone()),
            CancelOutcome::Service(e) => e.request_id.clone(),
            CancelOutcome::Transport(_) => None,
        };
        self.record_outcome(history_outcome, request_id.clone());
        if let Some(id) = &request_id {
            self.status.request_id = Some(id.clone());
        }

        let failure = match outcome {
            CancelOutcome::Cancelled { .. } => None,
            CancelOutcome::Service(e) => Some(Failure {
                code: Some(e.code.clone()),
                message: e.message.clone(),
                http_status: Some(i32::from(e.http_status)),
                request_id: e.request_id.clone(),
                ambiguous: false,
                retry_after: e.retry_after,
                reason: None,
            }),
            CancelOutcome::Transport(t) => {
                // NB: a host name that does not exist: nothing was sent.
                let not_found = t.kind == TransportKind::HostNotFound;
                Some(Failure {
                    code: Some(OUTCOME_TRANSPORT_ERROR.to_string()),
                    message: t.message.clone(),
                    http_status: t.http_status.map(i32::from),
                    request_id: None,
                    ambiguous: !not_found,
                    retry_after: None,
                    reason: not_found.then_some(reasons::REGION_ENDPOINT_NOT_FOUND),
                })
            }
        };
        match (class, failure) {
            (RetryClass::Success, _) | (_, None) => self.succeeded(request_id),
            (RetryClass::Terminal, Some(f)) => self.terminal(f),
            (RetryClass::Retryable, Some(f)) => self.counted_failure(f),
            (RetryClass::Throttled, Some(f)) => self.throttled(f),
            (RetryClass::Outage, Some(f)) => self.endpoint_failed(f, outage),
        }
    }

    /// The endpoint, not the resource, failed: never counted. An answer that
    /// may have reached ECS stays ambiguous (exactly-once: a later
    /// `InvalidImageId.NotFound` ends `PreviousAttemptMayHaveSucceeded`).
    /// With the breaker open the resource waits for the endpoint; otherwise
    /// (a run of `InternalError` not yet long enough to open it) it backs off.
    fn endpoint_failed(mut self, f: Failure, outage: Option<&EndpointOutage>) -> Decision {
        self.record_error(&f);
        if f.ambiguous {
            self.status.ambiguous_attempts += 1;
        }
        if let Some(decision) = self.deadline_check() {
            return decision;
        }
        match outage {
            Some(outage) => {
                self.status.phase = Some(Phase::Running);
                self.status.next_attempt_time = None;
                let message = format!(
                    "Attempt {} failed: {}. {}",
                    self.status.attempts,
                    f.headline(),
                    self.outage_message(outage)
                );
                self.in_progress(reasons::ECS_UNAVAILABLE, &message);
                // NB: at once: the next slot holds it in the endpoint's queue.
                self.finish(NextAction::RequeueAfter(Duration::ZERO), None)
            }
            None => self.schedule_retry(
                reasons::ECS_UNAVAILABLE,
                &f,
                "the region's endpoint failed, not this resource: not counted against backoffLimit",
            ),
        }
    }

    /// Replaces the in-flight `Unknown` entry with what came back. Without one
    /// (the shell always writes it first) the outcome is appended, so it is
    /// never lost.
    fn record_outcome(&mut self, outcome: String, request_id: Option<String>) {
        match self.in_flight_index() {
            Some(i) => {
                let entry = &mut self.status.attempt_history[i];
                entry.outcome = outcome;
                entry.request_id = request_id;
            }
            None => push_history(
                &mut self.status.attempt_history,
                AttemptRecord {
                    number: self.status.attempts,
                    time: self
                        .status
                        .last_attempt_time
                        .clone()
                        .unwrap_or(Time(self.now)),
                    outcome,
                    request_id,
                },
            ),
        }
    }

    fn succeeded(mut self, request_id: Option<String>) -> Decision {
        let spec = self.input.spec;
        let st = &mut self.status;
        st.phase = Some(Phase::Succeeded);
        st.error_code = None;
        st.error_message = None;
        st.http_status = None;
        st.next_attempt_time = None;
        st.completion_time = Some(Time(self.now));
        let id = request_id.as_deref().unwrap_or("none");
        let message = format!(
            "Cancelled the copy to {} in {} (request ID {id})",
            spec.image_id, spec.region_id
        );
        self.set_conditions(
            cstatus::TRUE,
            cstatus::FALSE,
            cstatus::FALSE,
            reasons::CANCELLED,
            &message,
        );
        let event = EventNote {
            kind: EventKind::Normal,
            reason: event_reasons::CANCELLED,
            note: message,
        };
        self.finish(NextAction::Done, Some(event))
    }

    fn terminal(mut self, f: Failure) -> Decision {
        self.record_error(&f);
        if let Some(reason) = f.reason {
            return self.failed(reason, &f.describe());
        }
        let code = f.code.clone().unwrap_or_default();
        if self.status.ambiguous_attempts > 0
            && CODES_AFTER_A_POSSIBLE_SUCCESS.contains(&code.as_str())
        {
            let message = format!(
                "Attempt {} got {code} ({}), but {} earlier attempt(s) ended without a known outcome: \
                 the earlier attempt may well have cancelled the copy already. Check image {} in {} \
                 before creating a new cancellation",
                self.status.attempts,
                f.describe(),
                self.status.ambiguous_attempts,
                self.input.spec.image_id,
                self.input.spec.region_id,
            );
            return self.failed(reasons::PREVIOUS_ATTEMPT_MAY_HAVE_SUCCEEDED, &message);
        }
        let message = format!("{code}: {}", f.describe());
        self.failed(&conditions::sanitize_reason(&code), &message)
    }

    fn counted_failure(mut self, f: Failure) -> Decision {
        self.record_error(&f);
        self.status.failed_attempts += 1;
        if f.ambiguous {
            self.status.ambiguous_attempts += 1;
        }
        let limit = self.input.spec.backoff_limit.max(0);
        if self.status.failed_attempts > limit {
            let message = format!(
                "Gave up after {} failed attempt(s) (backoffLimit {limit}); last: {}{}",
                self.status.failed_attempts,
                f.headline(),
                self.ambiguity_note(),
            );
            return self.failed(reasons::RETRIES_EXHAUSTED, &message);
        }
        if let Some(decision) = self.deadline_check() {
            return decision;
        }
        // NB: "retry N of M" rather than "K retries left": with one retry
        // left the one being scheduled is the last, and "0 left" read wrong.
        let remark = format!("retry {} of {limit}", self.status.failed_attempts);
        self.schedule_retry(reasons::RETRY_SCHEDULED, &f, &remark)
    }

    fn throttled(mut self, f: Failure) -> Decision {
        self.record_error(&f);
        if let Some(decision) = self.deadline_check() {
            return decision;
        }
        if self.input.paced {
            // NB: no backoff of its own: the pace of the key and region slows
            // every resource of the scope, and this one keeps its place in it.
            let delay = f
                .retry_after
                .unwrap_or_default()
                .min(self.input.backoff.cap());
            let remark = format!(
                "as soon as the pace of this access key in {} allows; throttling does not count \
                 against backoffLimit",
                self.input.spec.region_id
            );
            return self.schedule_retry_after(reasons::THROTTLED, &f, delay, &remark);
        }
        self.schedule_retry(
            reasons::THROTTLED,
            &f,
            "throttling does not count against backoffLimit",
        )
    }

    fn schedule_retry(self, reason: &str, f: &Failure, remark: &str) -> Decision {
        let retry = u32::try_from(self.status.attempts.saturating_sub(1)).unwrap_or(0);
        let delay = retry_delay(&self.input.backoff, retry, f.retry_after, self.input.jitter);
        self.schedule_retry_after(reason, f, delay, remark)
    }

    fn schedule_retry_after(
        mut self,
        reason: &str,
        f: &Failure,
        delay: Duration,
        remark: &str,
    ) -> Decision {
        let next = ceil_seconds(self.input.now + delay);
        let wait = until(self.input.now, next);
        self.status.phase = Some(Phase::Running);
        self.status.next_attempt_time = Some(Time(next));
        let message = format!(
            "Attempt {} failed: {}; next attempt in {} ({remark})",
            self.status.attempts,
            f.headline(),
            humantime::format_duration(Duration::from_secs(wait.as_secs_f64().ceil() as u64)),
        );
        self.in_progress(reason, &message);
        let event = EventNote {
            kind: EventKind::Normal,
            reason: event_reasons::RETRY_SCHEDULED,
            note: message,
        };
        let wait = self.bounded_by_deadline(wait);
        self.finish(NextAction::RequeueAfter(wait), Some(event))
    }

    /// `Failed DeadlineExceeded` once `activeDeadlineSeconds` has passed.
    fn deadline_check(&mut self) -> Option<Decision> {
        let deadline = self.deadline()?;
        if self.input.now < deadline {
            return None;
        }
        let seconds = self.input.spec.active_deadline_seconds.unwrap_or_default();
        let last = match (&self.status.error_code, &self.status.error_message) {
            (Some(code), Some(msg)) => format!("; last error {code}: {msg}"),
            (Some(code), None) => format!("; last error {code}"),
            _ => String::new(),
        };
        let message = format!(
            "activeDeadlineSeconds ({seconds}s) passed after {} attempt(s){last}{}",
            self.status.attempts,
            self.ambiguity_note()
        );
        let draft = Draft {
            input: self.input,
            now: self.now,
            status: std::mem::take(&mut self.status),
        };
        Some(draft.failed(reasons::DEADLINE_EXCEEDED, &message))
    }

    fn deadline(&self) -> Option<Timestamp> {
        let seconds = self.input.spec.active_deadline_seconds?;
        let start = self.status.start_time.as_ref()?.0;
        start.checked_add(SignedDuration::from_secs(seconds)).ok()
    }

    /// Wakes up no later than the deadline, so `DeadlineExceeded` lands on time.
    fn bounded_by_deadline(&self, wait: Duration) -> Duration {
        match self.deadline() {
            Some(deadline) => wait.min(until(self.input.now, deadline)),
            None => wait,
        }
    }

    fn ambiguity_note(&self) -> String {
        match self.status.ambiguous_attempts {
            0 => String::new(),
            n => format!(
                ". NB: {n} attempt(s) ended without a known outcome and may have cancelled the copy"
            ),
        }
    }

    fn failed(mut self, reason: &str, message: &str) -> Decision {
        self.status.phase = Some(Phase::Failed);
        self.status.next_attempt_time = None;
        self.status.completion_time = Some(Time(self.now));
        self.set_conditions(
            cstatus::FALSE,
            cstatus::FALSE,
            cstatus::TRUE,
            reason,
            message,
        );
        let event = EventNote {
            kind: EventKind::Warning,
            reason: event_reasons::CANCEL_FAILED,
            note: bounded(&format!("{reason}: {message}")),
        };
        self.finish(NextAction::Done, Some(event))
    }

    fn record_error(&mut self, f: &Failure) {
        if let Some(code) = &f.code {
            self.status.error_code = Some(code.clone());
            self.status.error_message = Some(bounded(&f.message));
            self.status.http_status = f.http_status;
        }
    }

    fn in_progress(&mut self, reason: &str, message: &str) {
        self.set_conditions(
            cstatus::FALSE,
            cstatus::TRUE,
            cstatus::FALSE,
            reason,
            message,
        );
    }

    fn set_conditions(
        &mut self,
        ready: &str,
        reconciling: &str,
        stalled: &str,
        reason: &str,
        message: &str,
    ) {
        let message = bounded(message);
        let generation = self.input.generation;
        for (type_, value) in [
            (types::READY, ready),
            (types::RECONCILING, reconciling),
            (types::STALLED, stalled),
        ] {
            conditions::set(
                &mut self.status.conditions,
                type_,
                value,
                reason,
                &message,
                generation,
                self.now,
            );
        }
    }

    fn finish(mut self, action: NextAction, event: Option<EventNote>) -> Decision {
        if self.input.status != Some(&self.status) {
            self.status.observed_generation = self.input.generation;
        }
        Decision {
            status: self.status,
            action,
            event,
        }
    }

    /// Index of the attempt recorded by a write-ahead and not yet resolved.
    /// NB: once an unrecorded attempt has been counted, a retry is scheduled
    /// (`nextAttemptTime`), which is what keeps it from being counted twice.
    fn in_flight_index(&self) -> Option<usize> {
        attempt_in_flight(&self.status).then(|| self.status.attempt_history.len() - 1)
    }
}

/// The condition reason of the retry a decision scheduled (`RetryScheduled`
/// or `Throttled`), for the retries metric; `None` when it scheduled none.
pub fn retry_reason<'s>(
    status: &'s CopyImageCancellationStatus,
    event: Option<&EventNote>,
) -> Option<&'s str> {
    event.filter(|e| e.reason == event_reasons::RETRY_SCHEDULED)?;
    conditions::get(&status.conditions, types::RECONCILING).map(|c| c.reason.as_str())
}

/// The attempt a reconcile of a resource with `status` is about: the last one
/// when it is finished or in flight, otherwise the next one to send (so it is
/// the number a write-ahead will give the attempt). For logs.
pub fn current_attempt(status: Option<&CopyImageCancellationStatus>) -> i64 {
    match status {
        None => 1,
        Some(s) if s.phase.is_some_and(Phase::is_finished) || attempt_in_flight(s) => {
            i64::from(s.attempts)
        }
        Some(s) => i64::from(s.attempts) + 1,
    }
}

/// Whether `status` says the resource awaits credentials.
pub fn awaiting_credentials(status: Option<&CopyImageCancellationStatus>) -> bool {
    status.is_some_and(|s| {
        conditions::get(&s.conditions, types::RECONCILING)
            .is_some_and(|c| c.reason == reasons::AWAITING_CREDENTIALS)
    })
}

/// Whether `status` holds an attempt recorded before sending whose outcome
/// is not recorded yet (in flight, or lost in a crash).
pub fn attempt_in_flight(status: &CopyImageCancellationStatus) -> bool {
    status.attempt_history.last().is_some_and(|entry| {
        status.phase == Some(Phase::Running)
            && status.next_attempt_time.is_none()
            && entry.outcome == OUTCOME_UNKNOWN
            && entry.number == status.attempts
    })
}

/// A failed attempt, whatever its class.
struct Failure {
    /// The ECS code, `TransportError`, or none when the outcome is unknown.
    code: Option<String>,
    message: String,
    http_status: Option<i32>,
    request_id: Option<String>,
    /// The attempt may have reached ECS and succeeded.
    ambiguous: bool,
    retry_after: Option<Duration>,
    /// The condition reason when it is not derived from the code.
    reason: Option<&'static str>,
}

impl Failure {
    /// `message (HTTP 503, request ID X)`.
    fn describe(&self) -> String {
        let mut extra = Vec::new();
        if let Some(status) = self.http_status {
            extra.push(format!("HTTP {status}"));
        }
        if let Some(id) = &self.request_id {
            extra.push(format!("request ID {id}"));
        }
        if extra.is_empty() {
            self.message.clone()
        } else {
            format!("{} ({})", self.message, extra.join(", "))
        }
    }

    /// `CODE: message (...)`, or just the message when there is no code.
    fn headline(&self) -> String {
        match &self.code {
            Some(code) => format!("{code}: {}", self.describe()),
            None => self.describe(),
        }
    }
}

fn push_history(history: &mut Vec<AttemptRecord>, record: AttemptRecord) {
    history.push(record);
    if history.len() > ATTEMPT_HISTORY_LIMIT {
        let excess = history.len() - ATTEMPT_HISTORY_LIMIT;
        history.drain(..excess);
    }
}

/// Truncates to [`MAX_MESSAGE_CHARS`] characters, marking the cut.
pub fn bounded(message: &str) -> String {
    if message.chars().count() <= MAX_MESSAGE_CHARS {
        return message.to_string();
    }
    let mut out: String = message.chars().take(MAX_MESSAGE_CHARS - 1).collect();
    out.push('…');
    out
}

/// The API server stores whole seconds; deciding on the same precision keeps
/// a status read back equal to the one written.
fn whole_seconds(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).unwrap_or(t)
}

fn ceil_seconds(t: Timestamp) -> Timestamp {
    let floor = whole_seconds(t);
    if floor == t {
        t
    } else {
        Timestamp::from_second(floor.as_second() + 1).unwrap_or(t)
    }
}

/// Time from `now` until `then`, zero if `then` has passed.
fn until(now: Timestamp, then: Timestamp) -> Duration {
    Duration::try_from(then.duration_since(now)).unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests;
