//! Alibaba Cloud ECS `CancelCopyImage`: signing, sending, and what came back.
//!
//! This module knows nothing of Kubernetes. [`CancelOutcome`] is what one
//! attempt produced; [`CancelOutcome::retry_class`] is the one place that
//! decides whether an outcome is retried.

pub mod client;
pub mod signature;

use std::time::Duration;

/// The ECS API version this operator speaks.
pub const API_VERSION: &str = "2014-05-26";
/// The one action this operator sends.
pub const ACTION: &str = "CancelCopyImage";

/// What one CancelCopyImage attempt produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CancelOutcome {
    /// HTTP 200 with a `RequestId`: the copy was cancelled.
    Cancelled {
        /// `RequestId` of the response.
        request_id: String,
    },
    /// ECS answered with an error body (`Code`, `Message`, ...).
    Service(ServiceError),
    /// No usable answer: connect failure, timeout, reset, truncated or
    /// unparseable body (for example an HTML 502 from a proxy).
    Transport(TransportError),
}

/// An error answer from ECS, already redacted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceError {
    /// HTTP status of the response.
    pub http_status: u16,
    /// The ECS error code, exactly as sent (`InvalidImageId.NotFound`).
    pub code: String,
    /// The service's message, redacted (no string-to-sign echo, no token) and bounded.
    pub message: String,
    /// `RequestId` of the response, when there was one.
    pub request_id: Option<String>,
    /// `HostId` of the response, when there was one.
    pub host_id: Option<String>,
    /// `Recommend` (troubleshooting link), when there was one.
    pub recommend: Option<String>,
    /// The `x-acs-retry-after` header (milliseconds), when the service sent one.
    pub retry_after: Option<Duration>,
}

/// Why no usable answer came back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransportError {
    /// What went wrong, in words fit for a status message.
    pub message: String,
    /// HTTP status, when a response started but its body was unusable.
    pub http_status: Option<u16>,
}

/// How an outcome is treated by the retry policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryClass {
    /// Done, successfully.
    Success,
    /// Done, failed: never sent again.
    Terminal,
    /// Retried, counted against `backoffLimit`.
    Retryable,
    /// Retried, not counted (bounded only by `activeDeadlineSeconds`).
    Throttled,
}
