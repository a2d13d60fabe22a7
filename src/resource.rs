//! The `CopyImageCancellation` custom resource: spec, status and the CRD schema.
//!
//! One resource is one cancellation: the spec is immutable (a CEL transition
//! rule enforces it at admission), and the status records every attempt so
//! that a finished cancellation is never sent again. This module knows
//! nothing of HTTP; it only describes the shape users and the API server see.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of the resource.
pub const GROUP: &str = "ecs.alibabacloud.com";
/// API version of the resource.
pub const VERSION: &str = "v1alpha1";
/// Kind of the resource.
pub const KIND: &str = "CopyImageCancellation";
/// How many attempts `status.attemptHistory` keeps (the most recent ones).
pub const ATTEMPT_HISTORY_LIMIT: usize = 10;
/// Default for `spec.backoffLimit`.
pub const DEFAULT_BACKOFF_LIMIT: i32 = 6;
/// Upper bound for `spec.backoffLimit`.
pub const MAX_BACKOFF_LIMIT: i32 = 20;
/// Upper bound for `spec.activeDeadlineSeconds` (30 days).
pub const MAX_ACTIVE_DEADLINE_SECONDS: i64 = 30 * 24 * 60 * 60;
/// The message the API server returns when someone edits the spec.
pub const SPEC_IMMUTABLE_MESSAGE: &str = "spec is immutable: one CopyImageCancellation is one cancellation; \
     delete this resource and create a new one to cancel another copy";

fn default_backoff_limit() -> i32 {
    DEFAULT_BACKOFF_LIMIT
}

/// Which image copy to cancel, with whose credentials, and how long to keep
/// trying. Immutable: to cancel another copy, create another resource.
// NB: clippy reads the repeated `printcolumn(type_ = ...)` keys as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "ecs.alibabacloud.com",
    version = "v1alpha1",
    kind = "CopyImageCancellation",
    plural = "copyimagecancellations",
    shortname = "cic",
    category = "alibabacloud",
    category = "ecs",
    namespaced,
    status = "CopyImageCancellationStatus",
    derive = "PartialEq",
    cel,
    doc = "Cancels an in-progress Alibaba Cloud ECS cross-region image copy (CancelCopyImage). \
           One resource is one cancellation: the controller sends the request until one answer \
           is recorded as final, retrying transient failures with backoff, and writes the outcome \
           in status.",
    printcolumn(
        name = "Region",
        type_ = "string",
        json_path = ".spec.regionId",
        description = "Region of the destination image"
    ),
    printcolumn(
        name = "Image",
        type_ = "string",
        json_path = ".spec.imageId",
        description = "ID of the image being copied"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Pending, Running, Succeeded or Failed"
    ),
    printcolumn(
        name = "Request ID",
        type_ = "string",
        json_path = ".status.requestId",
        description = "RequestId of the last ECS response"
    ),
    printcolumn(
        name = "Error",
        type_ = "string",
        json_path = ".status.errorCode",
        description = "ECS error code of the last failed attempt"
    ),
    printcolumn(
        name = "Attempts",
        type_ = "integer",
        json_path = ".status.attempts",
        description = "CancelCopyImage calls sent so far"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = kube::core::Rule::new("self == oldSelf").message(SPEC_IMMUTABLE_MESSAGE))]
#[serde(rename_all = "camelCase")]
pub struct CopyImageCancellationSpec {
    /// Region of the DESTINATION image, the region the image is being copied
    /// to (for example `cn-hangzhou`). CancelCopyImage is sent to this region's
    /// ECS endpoint.
    #[schemars(regex(pattern = r"^[a-z]{2,}(-[a-z0-9]+)+$"), length(max = 64))]
    pub region_id: String,

    /// ID of the image being copied, in the destination region (the ID that
    /// CopyImage returned, for example `m-bp1caf3yicx5jlfl`).
    #[schemars(regex(pattern = r"^m-[a-z0-9]+$"), length(max = 64))]
    pub image_id: String,

    /// Secret in the same namespace holding the Alibaba Cloud credentials to
    /// sign the request with (keys `accessKeyId`, `accessKeySecret`, and
    /// optionally `securityToken`). When omitted, the operator's own
    /// credentials are used. While the Secret or a key is missing, nothing is
    /// sent and the resource waits (reason `AwaitingCredentials`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<CredentialsSecretRef>,

    /// Number of retries after the first attempt for transient failures
    /// (InternalError, HTTP 5xx, ServiceUnavailable, transport failures) before
    /// giving up with reason `RetriesExhausted`. Throttling is retried without
    /// counting. Default 6.
    #[serde(default = "default_backoff_limit")]
    #[schemars(range(min = 0, max = 20))]
    pub backoff_limit: i32,

    /// Seconds after the controller first saw this resource (status.startTime)
    /// after which it gives up (Failed, reason `DeadlineExceeded`), however
    /// many retries remain. Bounds throttled retries too. At most 30 days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 2_592_000))]
    pub active_deadline_seconds: Option<i64>,
}

impl CopyImageCancellationSpec {
    /// A spec for `image_id` in `region_id` with what a manifest that says no
    /// more gets: the operator's own credentials, backoffLimit 6, no deadline.
    pub fn new(region_id: impl Into<String>, image_id: impl Into<String>) -> Self {
        Self {
            region_id: region_id.into(),
            image_id: image_id.into(),
            credentials_secret_ref: None,
            backoff_limit: default_backoff_limit(),
            active_deadline_seconds: None,
        }
    }
}

/// A Secret in the resource's own namespace.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsSecretRef {
    /// Name of the Secret, in the same namespace as this resource. Keys:
    /// `accessKeyId`, `accessKeySecret`, and optionally `securityToken` (for
    /// temporary STS credentials).
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Where the cancellation stands: `Pending` (nothing sent yet), `Running` (an
/// attempt is in flight or a retry is scheduled), `Succeeded` (the copy was
/// cancelled) or `Failed` (gave up; see the `Stalled` condition for why).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Nothing sent yet.
    Pending,
    /// An attempt is in flight or a retry is scheduled.
    Running,
    /// The copy was cancelled (ECS answered with success).
    Succeeded,
    /// Gave up: a terminal error, retries exhausted or the deadline passed.
    Failed,
}

impl Phase {
    /// Succeeded or Failed: nothing is ever sent again.
    pub fn is_finished(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed)
    }
}

/// What the controller has done about this cancellation. Written only by the
/// controller, through the status subresource.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CopyImageCancellationStatus {
    /// Where the cancellation stands (see [`Phase`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,

    /// RequestId of the last ECS response, success or error. Quote it in
    /// support tickets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,

    /// ECS error code of the last failed attempt, exactly as the service sent
    /// it (for example `InvalidImageId.NotFound`), or `TransportError` when no
    /// usable answer came back. Cleared on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,

    /// Message of the last failed attempt (redacted, bounded). Cleared on
    /// success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,

    /// HTTP status of the last failed attempt, when a response came back.
    /// Cleared on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<i32>,

    /// CancelCopyImage calls sent so far (each is recorded here before it is
    /// sent).
    #[serde(default)]
    pub attempts: i32,

    /// Failed attempts counted against spec.backoffLimit: retryable errors,
    /// transport failures and attempts whose outcome was never recorded.
    /// Throttled attempts are not counted.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failed_attempts: i32,

    /// Attempts whose outcome is not known (`TransportError` or `Unknown`):
    /// each may have reached ECS and cancelled the copy. Kept as a count
    /// because attemptHistory only holds the last 10.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ambiguous_attempts: i32,

    /// When the controller first saw this resource (RFC 3339);
    /// spec.activeDeadlineSeconds counts from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,

    /// When the last attempt was sent (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempt_time: Option<Time>,

    /// When the next attempt is due, while a retry is scheduled (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_time: Option<Time>,

    /// When the resource reached Succeeded or Failed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,

    /// The last 10 attempts, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub attempt_history: Vec<AttemptRecord>,

    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Ready`, `Reconciling` and `Stalled`, following kstatus conventions:
    /// `Ready=True` (reason `Cancelled`) on success; `Reconciling=True` while
    /// pending, in flight or waiting for a retry; `Stalled=True` on a final
    /// failure, with the ECS error code (or `RetriesExhausted`,
    /// `DeadlineExceeded`, `PreviousAttemptMayHaveSucceeded`) as reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

/// One CancelCopyImage attempt.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AttemptRecord {
    /// Attempt number, counting from 1 (matches status.attempts when it was sent).
    pub number: i32,
    /// When the attempt was sent (RFC 3339).
    pub time: Time,
    /// `Succeeded`, the ECS error code, `TransportError` (no usable answer), or
    /// `Unknown` (recorded before sending; the outcome never came back, for
    /// example because the controller stopped).
    pub outcome: String,
    /// RequestId of the response, when one came back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// The CRD as YAML: what `copyimage-canceller crd` prints and
/// `crds/copyimagecancellations.yaml` holds.
pub fn crd_yaml() -> Result<String, serde_yaml_ng::Error> {
    serde_yaml_ng::to_string(&CopyImageCancellation::crd())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_the_contract() {
        let crd = CopyImageCancellation::crd();
        assert_eq!(
            crd.metadata.name.as_deref(),
            Some("copyimagecancellations.ecs.alibabacloud.com")
        );
        assert_eq!(crd.spec.group, GROUP);
        assert_eq!(crd.spec.names.kind, KIND);
        assert_eq!(crd.spec.versions[0].name, VERSION);
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(crd.spec.names.short_names, Some(vec!["cic".to_string()]));
        assert_eq!(
            crd.spec.names.categories,
            Some(vec!["alibabacloud".to_string(), "ecs".to_string()])
        );
    }

    #[test]
    fn status_round_trips_without_empty_fields() {
        let status = CopyImageCancellationStatus {
            phase: Some(Phase::Pending),
            ..Default::default()
        };
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(json, serde_json::json!({"phase": "Pending", "attempts": 0}));
        let back: CopyImageCancellationStatus = serde_json::from_value(json).unwrap();
        assert_eq!(back, status);
    }
}
