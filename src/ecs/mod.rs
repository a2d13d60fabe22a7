//! Alibaba Cloud ECS `CancelCopyImage`: signing, sending, and what came back.
//!
//! This module knows nothing of Kubernetes. [`CancelOutcome`] is what one
//! attempt produced; [`CancelOutcome::retry_class`] is the one place that
//! decides whether an outcome is retried.

pub mod client;
pub mod resolve;
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

/// Whether the endpoint is in an incident: a run of `InternalError` answers
/// across resources, or its breaker open (decided by `crate::pacing`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Incident {
    /// The endpoint answers other requests: an `InternalError` is the resource's.
    No,
    /// The endpoint is failing as a whole: an `InternalError` says nothing
    /// about the resource.
    Yes,
}

/// An endpoint (region) in an outage, as its waiting resources are told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointOutage {
    /// The region whose endpoint fails.
    pub region: String,
    /// When the outage was noticed.
    pub since: jiff::Timestamp,
    /// The last error seen from it, in words (no resource's details).
    pub last_error: String,
}

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
    /// The endpoint's host name does not exist (NXDOMAIN, confirmed by more
    /// than one lookup): nothing was sent, and waiting will not help.
    HostNotFound,
}

impl TransportKind {
    /// Every kind, for tables and metric pre-registration.
    pub const ALL: [TransportKind; 5] = [
        Self::Connect,
        Self::Timeout,
        Self::Interrupted,
        Self::InvalidResponse,
        Self::HostNotFound,
    ];

    /// A short CamelCase name (`Timeout`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "Connect",
            Self::Timeout => "Timeout",
            Self::Interrupted => "Interrupted",
            Self::InvalidResponse => "InvalidResponse",
            Self::HostNotFound => "HostNotFound",
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
    /// The endpoint, not the resource, is failing: retried, never counted,
    /// and fed to the endpoint's breaker (bounded only by
    /// `activeDeadlineSeconds`).
    Outage,
}

/// HTTP statuses a gateway answers when the service behind it is down.
const GATEWAY_DOWN: [u16; 3] = [502, 503, 504];

impl CancelOutcome {
    /// How the retry policy treats this outcome when its endpoint is not in
    /// an incident; see [`CancelOutcome::retry_class_in`].
    pub fn retry_class(&self) -> RetryClass {
        self.retry_class_in(Incident::No)
    }

    /// How the retry policy treats this outcome. The one place that decides:
    /// success; any `Throttling*` code is throttled (retried, not counted);
    /// no whole answer (no connection, timeout, cut, unparseable body), HTTP
    /// 502/503/504 and `ServiceUnavailable` are the endpoint's outage (retried,
    /// not counted); a host name that does not exist is terminal;
    /// `InternalError` and any other 5xx are retryable (counted), except
    /// `InternalError` while the endpoint is in an [`Incident`] (a run of them
    /// across resources), which is the endpoint's outage too; every other
    /// code is terminal. The code decides before the status does.
    pub fn retry_class_in(&self, incident: Incident) -> RetryClass {
        match self {
            CancelOutcome::Cancelled { .. } => RetryClass::Success,
            CancelOutcome::Transport(t) if t.kind == TransportKind::HostNotFound => {
                RetryClass::Terminal
            }
            CancelOutcome::Transport(_) => RetryClass::Outage,
            CancelOutcome::Service(err) => {
                let code = err.code.as_str();
                if code.starts_with("Throttling") {
                    RetryClass::Throttled
                } else if code == "InternalError" {
                    match incident {
                        Incident::Yes => RetryClass::Outage,
                        Incident::No => RetryClass::Retryable,
                    }
                } else if code == "ServiceUnavailable" || GATEWAY_DOWN.contains(&err.http_status) {
                    RetryClass::Outage
                } else if (500..600).contains(&err.http_status) {
                    RetryClass::Retryable
                } else {
                    RetryClass::Terminal
                }
            }
        }
    }

    /// Whether this is an `InternalError` answer: the one code whose meaning
    /// (this resource's failure, or the endpoint's) depends on the others.
    pub fn is_internal_error(&self) -> bool {
        matches!(self, CancelOutcome::Service(err) if err.code == "InternalError")
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
            // Code before status: InternalError on a 503 stays the resource's.
            (service(503, "InternalError"), RetryClass::Retryable),
            (service(503, "ServiceUnavailable"), RetryClass::Outage),
            (service(400, "ServiceUnavailable"), RetryClass::Outage),
            (service(502, "SomethingNew"), RetryClass::Outage),
            (service(504, "GatewayTimeout"), RetryClass::Outage),
            (service(500, "SomethingNew"), RetryClass::Retryable),
            (service(501, "NotImplemented"), RetryClass::Retryable),
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
                RetryClass::Outage,
            ),
            (
                CancelOutcome::Transport(TransportError {
                    kind: TransportKind::InvalidResponse,
                    message: "HTTP 502 with an HTML body".into(),
                    http_status: Some(502),
                }),
                RetryClass::Outage,
            ),
        ];
        for (outcome, want) in rows {
            assert_eq!(outcome.retry_class(), want, "{outcome:?}");
        }
        // Every transport kind but a host that does not exist is the endpoint's.
        for kind in TransportKind::ALL {
            let outcome = CancelOutcome::Transport(TransportError {
                kind,
                message: String::new(),
                http_status: None,
            });
            let want = if kind == TransportKind::HostNotFound {
                RetryClass::Terminal
            } else {
                RetryClass::Outage
            };
            assert_eq!(outcome.retry_class(), want, "{kind:?}");
            assert_eq!(outcome.retry_class_in(Incident::Yes), want, "{kind:?}");
        }
    }

    #[test]
    fn an_incident_changes_only_internal_error() {
        let rows = [
            (service(500, "InternalError"), RetryClass::Outage),
            (service(400, "InternalError"), RetryClass::Outage),
            (service(500, "SomethingNew"), RetryClass::Retryable),
            (service(400, "Throttling.User"), RetryClass::Throttled),
            (
                service(404, "InvalidImageId.NotFound"),
                RetryClass::Terminal,
            ),
            (service(503, "ServiceUnavailable"), RetryClass::Outage),
        ];
        for (outcome, want) in rows {
            assert_eq!(outcome.retry_class_in(Incident::Yes), want, "{outcome:?}");
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
