//! kstatus conditions: their types, the reasons this controller uses, and the
//! one helper that sets a condition without losing its transition time.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Condition types (kstatus).
pub mod types {
    /// `True` once the copy is cancelled.
    pub const READY: &str = "Ready";
    /// `True` while pending, in flight or waiting for a retry.
    pub const RECONCILING: &str = "Reconciling";
    /// `True` once the controller gave up.
    pub const STALLED: &str = "Stalled";
}

/// Condition reasons (CamelCase, as Kubernetes requires).
pub mod reasons {
    /// The first reconcile: nothing sent yet.
    pub const PENDING: &str = "Pending";
    /// The Secret (or a key in it) is missing: nothing is sent until it appears.
    pub const AWAITING_CREDENTIALS: &str = "AwaitingCredentials";
    /// Two RamRoleSelectors match the resource's namespace: nothing is sent
    /// until an administrator removes the overlap.
    pub const AMBIGUOUS_ROLE: &str = "AmbiguousRole";
    /// Nothing sent yet: ECS throttled the signing identity in the region, and the
    /// resource waits for its turn in the pace.
    pub const AWAITING_PACE: &str = "AwaitingPace";
    /// An attempt is recorded and being sent.
    pub const ATTEMPT_IN_FLIGHT: &str = "AttemptInFlight";
    /// A retryable failure: the next attempt is scheduled.
    pub const RETRY_SCHEDULED: &str = "RetryScheduled";
    /// ECS throttled the request: retried without counting against backoffLimit.
    pub const THROTTLED: &str = "Throttled";
    /// ECS answered with success.
    pub const CANCELLED: &str = "Cancelled";
    /// More retryable failures than spec.backoffLimit allows.
    pub const RETRIES_EXHAUSTED: &str = "RetriesExhausted";
    /// spec.activeDeadlineSeconds passed.
    pub const DEADLINE_EXCEEDED: &str = "DeadlineExceeded";
    /// A repeat found the image gone or no longer copying after an attempt whose
    /// outcome is unknown: that attempt may well have cancelled the copy.
    pub const PREVIOUS_ATTEMPT_MAY_HAVE_SUCCEEDED: &str = "PreviousAttemptMayHaveSucceeded";
    /// The region's ECS endpoint is in an outage (its breaker is open): the
    /// resource waits, one probe at a time goes out, nothing is counted.
    pub const ECS_UNAVAILABLE: &str = "EcsUnavailable";
    /// The region's endpoint host name does not exist (NXDOMAIN, confirmed):
    /// no such region (or a wrong endpoint template). Terminal.
    pub const REGION_ENDPOINT_NOT_FOUND: &str = "RegionEndpointNotFound";
    /// Stand-in when an error code has no character a reason may hold.
    pub const SERVICE_ERROR: &str = "ServiceError";
}

/// Condition status values.
pub mod status {
    /// The condition holds.
    pub const TRUE: &str = "True";
    /// The condition does not hold.
    pub const FALSE: &str = "False";
}

/// Longest condition reason Kubernetes accepts.
const MAX_REASON_LEN: usize = 1024;

/// Turns an ECS error code into a valid condition reason
/// (`^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$`): characters outside the
/// allowed set are dropped, so `InvalidImageId.NotFound` becomes
/// `InvalidImageIdNotFound`. The exact code stays in `status.errorCode`.
pub fn sanitize_reason(code: &str) -> String {
    let kept: String = code
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | ',' | ':'))
        .collect();
    let start = kept
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(kept.len());
    let mut reason: String = kept[start..].chars().take(MAX_REASON_LEN).collect();
    while reason.ends_with([',', ':']) {
        reason.pop();
    }
    if reason.is_empty() {
        reasons::SERVICE_ERROR.to_string()
    } else {
        reason
    }
}

/// The `reason` label of a resource that ended Failed: its Stalled reason
/// when this controller sets it for a known cause (a known ECS code included),
/// `other` otherwise, so that an unknown ECS code never grows the label set.
pub fn failed_reason_label(reason: &str) -> &str {
    let known = [
        reasons::RETRIES_EXHAUSTED,
        reasons::DEADLINE_EXCEEDED,
        reasons::PREVIOUS_ATTEMPT_MAY_HAVE_SUCCEEDED,
        reasons::SERVICE_ERROR,
        reasons::REGION_ENDPOINT_NOT_FOUND,
    ];
    let from_known_code = || {
        crate::metrics::KNOWN_CODES
            .iter()
            .chain(crate::ecs::CODES_AFTER_A_POSSIBLE_SUCCESS.iter())
            .any(|code| sanitize_reason(code) == reason)
    };
    if known.contains(&reason) || from_known_code() {
        reason
    } else {
        crate::metrics::OTHER_CODE
    }
}

/// Sets condition `type_` in `conditions` the way `meta.SetStatusCondition`
/// does: `lastTransitionTime` moves only when the status flips.
pub fn set(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    observed_generation: Option<i64>,
    now: Timestamp,
) {
    let fresh = Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message: message.to_string(),
        observed_generation,
        last_transition_time: Time(now),
    };
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(existing) => {
            let last_transition_time = if existing.status == status {
                existing.last_transition_time.clone()
            } else {
                fresh.last_transition_time.clone()
            };
            *existing = Condition {
                last_transition_time,
                ..fresh
            };
        }
        None => conditions.push(fresh),
    }
}

/// Looks up condition `type_`.
pub fn get<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_reason_labels_are_bounded() {
        let rows = [
            ("RetriesExhausted", "RetriesExhausted"),
            ("DeadlineExceeded", "DeadlineExceeded"),
            (
                "PreviousAttemptMayHaveSucceeded",
                "PreviousAttemptMayHaveSucceeded",
            ),
            ("ServiceError", "ServiceError"),
            ("RegionEndpointNotFound", "RegionEndpointNotFound"),
            ("InvalidImageIdNotFound", "InvalidImageIdNotFound"),
            ("ForbiddenRAM", "ForbiddenRAM"),
            ("ImageCreatedNotFromCopy", "ImageCreatedNotFromCopy"),
            // An unknown ECS code, or anything else, is `other`.
            ("BrandNewCode", "other"),
            // A server string never becomes a label, whatever it holds.
            ("LTAI5tSecretLookingCode", "other"),
            ("InvalidImageId.NotFound", "other"),
            ("", "other"),
        ];
        for (reason, want) in rows {
            assert_eq!(failed_reason_label(reason), want, "{reason}");
        }
    }

    #[test]
    fn reasons_are_sanitised_to_what_kubernetes_accepts() {
        let cases = [
            ("InvalidImageId.NotFound", "InvalidImageIdNotFound"),
            ("IncorrectImageStatus", "IncorrectImageStatus"),
            ("Forbidden.RAM", "ForbiddenRAM"),
            ("SignatureDoesNotMatch", "SignatureDoesNotMatch"),
            ("InvalidParameter.Region-Id", "InvalidParameterRegionId"),
            ("404.NotFound", "NotFound"),
            ("Weird:", "Weird"),
            ("a_b,c:d", "a_b,c:d"),
            ("...", "ServiceError"),
            ("", "ServiceError"),
            ("Ünïcode.Code", "ncodeCode"),
        ];
        for (code, want) in cases {
            assert_eq!(sanitize_reason(code), want, "code {code:?}");
        }
        let long = "A".repeat(5000);
        assert_eq!(sanitize_reason(&long).len(), MAX_REASON_LEN);
    }

    #[test]
    fn transition_time_moves_only_when_status_flips() {
        let t0 = Timestamp::from_second(1_800_000_000).unwrap();
        let t1 = Timestamp::from_second(1_800_000_100).unwrap();
        let mut conditions = Vec::new();
        set(
            &mut conditions,
            types::READY,
            status::FALSE,
            reasons::PENDING,
            "a",
            Some(1),
            t0,
        );
        set(
            &mut conditions,
            types::READY,
            status::FALSE,
            reasons::RETRY_SCHEDULED,
            "b",
            Some(1),
            t1,
        );
        let ready = get(&conditions, types::READY).unwrap();
        assert_eq!(ready.last_transition_time, Time(t0));
        assert_eq!(ready.reason, reasons::RETRY_SCHEDULED);
        assert_eq!(ready.message, "b");
        set(
            &mut conditions,
            types::READY,
            status::TRUE,
            reasons::CANCELLED,
            "c",
            Some(1),
            t1,
        );
        assert_eq!(
            get(&conditions, types::READY).unwrap().last_transition_time,
            Time(t1)
        );
        assert_eq!(conditions.len(), 1);
    }
}
