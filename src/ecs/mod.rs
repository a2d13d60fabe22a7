//! Alibaba Cloud ECS `CancelCopyImage`: signing, sending, and what came back.
//!
//! This module knows nothing of Kubernetes. [`CancelOutcome`] is what one
//! attempt produced; [`CancelOutcome::retry_class`] is the one place that
//! decides whether an outcome is retried.

pub mod client;
pub mod signature;
pub mod signature_v3;

use std::time::Duration;

/// The ECS API version this operator speaks.
pub const API_VERSION: &str = "2014-05-26";
/// The one action this operator sends.
pub const ACTION: &str = "CancelCopyImage";

/// Codes that, after an attempt whose outcome is unknown, mean that attempt
/// may itself have cancelled the copy.
pub const CODES_AFTER_A_POSSIBLE_SUCCESS: [&str; 2] =
    ["InvalidImageId.NotFound", "IncorrectImageStatus"];

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
    /// What kind of failure (a bounded set, fit for metric labels).
    pub kind: TransportKind,
    /// What went wrong, in words fit for a status message.
    pub message: String,
    /// HTTP status, when a response started but its body was unusable.
    pub http_status: Option<u16>,
}

/// The kind of a [`TransportError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransportKind {
    /// No connection could be made (refused, DNS, TLS handshake).
    Connect,
    /// No complete answer within the request timeout.
    Timeout,
    /// The connection broke (reset, closed) or the body was cut short.
    Interrupted,
    /// An answer came that is not an ECS API answer (HTML from a proxy, no
    /// `Code`, too large).
    InvalidResponse,
}

impl TransportKind {
    /// Every kind, for tables and metric pre-registration.
    pub const ALL: [TransportKind; 4] = [
        Self::Connect,
        Self::Timeout,
        Self::Interrupted,
        Self::InvalidResponse,
    ];

    /// A short CamelCase name (`Timeout`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "Connect",
            Self::Timeout => "Timeout",
            Self::Interrupted => "Interrupted",
            Self::InvalidResponse => "InvalidResponse",
        }
    }
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

impl CancelOutcome {
    /// How the retry policy treats this outcome. The one place that decides:
    /// success; any `Throttling*` code is throttled (retried, not counted);
    /// `InternalError`, `ServiceUnavailable`, any HTTP 5xx and every transport
    /// failure are retryable (counted); every other code is terminal. The code
    /// decides before the status does.
    pub fn retry_class(&self) -> RetryClass {
        match self {
            CancelOutcome::Cancelled { .. } => RetryClass::Success,
            CancelOutcome::Transport(_) => RetryClass::Retryable,
            CancelOutcome::Service(err) => {
                let code = err.code.as_str();
                if code.starts_with("Throttling") {
                    RetryClass::Throttled
                } else if matches!(code, "InternalError" | "ServiceUnavailable")
                    || (500..600).contains(&err.http_status)
                {
                    RetryClass::Retryable
                } else {
                    RetryClass::Terminal
                }
            }
        }
    }

    /// The `RequestId` that came back, success or error.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            CancelOutcome::Cancelled { request_id } => Some(request_id),
            CancelOutcome::Service(err) => err.request_id.as_deref(),
            CancelOutcome::Transport(_) => None,
        }
    }

    /// Whether this answer, coming after an attempt whose outcome is unknown
    /// (no usable answer), means that earlier attempt may itself have
    /// cancelled the copy: the image is gone (`InvalidImageId.NotFound`) or
    /// no longer copying (`IncorrectImageStatus`).
    pub fn may_follow_a_success(&self) -> bool {
        matches!(self, CancelOutcome::Service(err)
            if CODES_AFTER_A_POSSIBLE_SUCCESS.contains(&err.code.as_str()))
    }

    /// The service's `x-acs-retry-after`, when it sent one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            CancelOutcome::Service(err) => err.retry_after,
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(http_status: u16, code: &str) -> CancelOutcome {
        CancelOutcome::Service(ServiceError {
            http_status,
            code: code.to_owned(),
            message: String::new(),
            request_id: Some("R".to_owned()),
            host_id: None,
            recommend: None,
            retry_after: None,
        })
    }

    #[test]
    fn retry_class_table() {
        let rows = [
            (
                CancelOutcome::Cancelled {
                    request_id: "R".into(),
                },
                RetryClass::Success,
            ),
            (service(400, "Throttling"), RetryClass::Throttled),
            (service(400, "Throttling.User"), RetryClass::Throttled),
            (service(400, "Throttling.Api"), RetryClass::Throttled),
            // Code before status: a throttling code on a 503 is still not counted.
            (service(503, "Throttling"), RetryClass::Throttled),
            (service(500, "InternalError"), RetryClass::Retryable),
            // Keyed on the code: InternalError with an unexpected status.
            (service(400, "InternalError"), RetryClass::Retryable),
            (service(503, "ServiceUnavailable"), RetryClass::Retryable),
            (service(502, "SomethingNew"), RetryClass::Retryable),
            (service(400, "IncorrectImageStatus"), RetryClass::Terminal),
            (
                service(404, "InvalidImageId.NotFound"),
                RetryClass::Terminal,
            ),
            (service(400, "SignatureDoesNotMatch"), RetryClass::Terminal),
            (
                service(404, "InvalidAccessKeyId.NotFound"),
                RetryClass::Terminal,
            ),
            (service(403, "Forbidden.RAM"), RetryClass::Terminal),
            (service(400, "SignatureNonceUsed"), RetryClass::Terminal),
            (
                service(400, "InvalidSecurityToken.Expired"),
                RetryClass::Terminal,
            ),
            (
                CancelOutcome::Transport(TransportError {
                    kind: TransportKind::Interrupted,
                    message: "connection reset".into(),
                    http_status: None,
                }),
                RetryClass::Retryable,
            ),
            (
                CancelOutcome::Transport(TransportError {
                    kind: TransportKind::InvalidResponse,
                    message: "HTTP 502 with an HTML body".into(),
                    http_status: Some(502),
                }),
                RetryClass::Retryable,
            ),
        ];
        for (outcome, want) in rows {
            assert_eq!(outcome.retry_class(), want, "{outcome:?}");
        }
    }

    #[test]
    fn may_follow_a_success_table() {
        let rows = [
            (service(404, "InvalidImageId.NotFound"), true),
            (service(400, "IncorrectImageStatus"), true),
            (service(400, "ImageCreatedNotFromCopy"), false),
            (service(500, "InternalError"), false),
            (
                CancelOutcome::Cancelled {
                    request_id: "R".into(),
                },
                false,
            ),
            (
                CancelOutcome::Transport(TransportError {
                    kind: TransportKind::Connect,
                    message: String::new(),
                    http_status: None,
                }),
                false,
            ),
        ];
        for (outcome, want) in rows {
            assert_eq!(outcome.may_follow_a_success(), want, "{outcome:?}");
        }
    }
}
