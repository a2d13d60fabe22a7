//! The ECS simulator's memory (images, faults, nonces, request log) and the
//! pure decision of what one API request gets. Time and request IDs are
//! arguments, so every decision is reproducible in a unit test.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::faults::{FaultKind, FaultPlan};
use super::quota::{self, QuotaMeter};
use super::verify::{self, ApiError, Checks, KeyRing, NonceCache, ResponseFormat};

/// State of an image in the simulated account.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ImageState {
    /// The destination image of a copy still in progress: CancelCopyImage succeeds and deletes it.
    Copying,
    /// A copy that has completed: `IncorrectImageStatus`.
    Copied,
    /// An image not made by a copy: `ImageCreatedNotFromCopy`.
    NotFromCopy,
}

impl FromStr for ImageState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "copying" => Ok(Self::Copying),
            "copied" => Ok(Self::Copied),
            "not-from-copy" => Ok(Self::NotFromCopy),
            other => Err(format!(
                "unknown image state {other:?}; expected copying, copied or not-from-copy"
            )),
        }
    }
}

impl fmt::Display for ImageState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Copying => "copying",
            Self::Copied => "copied",
            Self::NotFromCopy => "not-from-copy",
        })
    }
}

/// Parses `ID=STATE` as given to `--image`.
pub fn parse_image_arg(text: &str) -> Result<(String, ImageState), String> {
    let (id, state) = text
        .split_once('=')
        .ok_or_else(|| format!("invalid image {text:?}: expected ID=STATE, e.g. m-abc=copying"))?;
    if id.is_empty() {
        return Err(format!("invalid image {text:?}: the image ID is empty"));
    }
    let state = state
        .parse()
        .map_err(|e| format!("invalid image {text:?}: {e}"))?;
    Ok((id.to_owned(), state))
}

/// What happened to the connection a request came on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConnectionFate {
    /// A complete response was sent.
    Answered,
    /// Closed without a response (`drop` fault).
    Dropped,
    /// Headers and part of a body, then held (`stall` fault).
    Stalled,
    /// Held open without any answer (`hang` fault).
    Held,
}

/// One request as the simulator saw it. Holds no secret and no signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestRecord {
    /// When it arrived (simulator clock).
    pub time: Timestamp,
    /// HTTP method.
    pub method: String,
    /// `Action`, if sent.
    pub action: Option<String>,
    /// `RegionId`, if sent.
    pub region_id: Option<String>,
    /// `ImageId`, if sent.
    pub image_id: Option<String>,
    /// `AccessKeyId`, if sent.
    pub access_key_id: Option<String>,
    /// `SignatureNonce` (V3: `x-acs-signature-nonce`), if sent.
    pub signature_nonce: Option<String>,
    /// `SignatureMethod` (`HMAC-SHA1`), or `ACS3-HMAC-SHA256` for a V3
    /// request; `None` when not sent.
    pub signature_method: Option<String>,
    /// Whether the signature was checked and matched; `None` when an earlier check failed first.
    pub signature_valid: Option<bool>,
    /// `Success`, the error code answered, or the fault met (`drop`, `hang`, ...).
    pub code: String,
    /// HTTP status sent, if any.
    pub http_status: Option<u16>,
    /// `RequestId` of the answer, if one was sent.
    pub request_id: Option<String>,
    /// What became of the connection.
    pub connection: ConnectionFate,
    /// The answer-changing fault met, if any.
    pub fault: Option<String>,
    /// Total delay added (global latency plus `latency` faults), in milliseconds.
    pub delay_ms: u64,
}

/// What the shell must do for a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// 200, the copy was cancelled.
    Success,
    /// An ECS error, with `x-acs-retry-after` when set.
    Error {
        /// The error.
        error: ApiError,
        /// `x-acs-retry-after` header.
        retry_after: Option<Duration>,
    },
    /// An HTML 502 page.
    BadGateway,
    /// Close without answering.
    Drop,
    /// Headers and a partial body, then silence.
    Stall,
    /// Never answer.
    Hang,
    /// 200 with a body of this many bytes.
    Oversized(u64),
}

/// The decision about one API request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// What to send.
    pub answer: Answer,
    /// How long to wait first (from `latency` faults).
    pub delay: Duration,
    /// The format asked for.
    pub format: ResponseFormat,
    /// The log entry (its `delay_ms` excludes the global latency, which the shell adds).
    pub record: RequestRecord,
}

/// Everything the simulator remembers.
#[derive(Debug)]
pub struct SimulatorState {
    /// Access keys.
    pub keys: KeyRing,
    /// Known region IDs.
    pub regions: BTreeSet<String>,
    /// Largest accepted `Timestamp` skew.
    pub max_skew: Duration,
    /// Images by ID.
    pub images: BTreeMap<String, ImageState>,
    /// Scripted faults.
    pub faults: FaultPlan,
    /// Nonces of accepted requests.
    pub nonces: NonceCache,
    /// The most recent requests, oldest first.
    pub requests: VecDeque<RequestRecord>,
    /// How many requests the log keeps.
    pub request_log_capacity: usize,
    /// Flow control per access key and region.
    pub quota: QuotaMeter,
    /// Session policies of keys minted by STS AssumeRole with a `Policy`,
    /// by AccessKey ID: requests they do not allow get `Forbidden.RAM`.
    pub session_policies: BTreeMap<String, String>,
}

impl SimulatorState {
    /// Appends to the request log, forgetting the oldest entry when full.
    pub fn log(&mut self, record: RequestRecord) {
        if self.request_log_capacity == 0 {
            return;
        }
        while self.requests.len() >= self.request_log_capacity {
            self.requests.pop_front();
        }
        self.requests.push_back(record);
    }

    /// Decides what a request with these merged parameters gets, updating
    /// nonces, faults and images. Does not log: the shell logs the record once
    /// it knows the final delay.
    pub fn decide(
        &mut self,
        method: &str,
        params: &BTreeMap<String, String>,
        now: Timestamp,
    ) -> Decision {
        self.decide_checked(method, params, now, |checks| {
            verify::check(method, params, checks, now)
        })
    }

    /// Like [`State::decide`], with the authentication checks given (V3
    /// requests are checked on their headers, see
    /// [`super::verify_v3::check`]); `params` fill the request log.
    pub fn decide_checked(
        &mut self,
        method: &str,
        params: &BTreeMap<String, String>,
        now: Timestamp,
        check: impl FnOnce(Checks<'_>) -> Result<verify::Authenticated, ApiError>,
    ) -> Decision {
        let format = ResponseFormat::of(params);
        let param = |name: &str| params.get(name).cloned();
        let mut record = RequestRecord {
            time: now,
            method: method.to_owned(),
            action: param("Action"),
            region_id: param("RegionId"),
            image_id: param("ImageId"),
            access_key_id: param("AccessKeyId"),
            signature_nonce: param("SignatureNonce"),
            signature_method: param("SignatureMethod"),
            signature_valid: None,
            code: String::new(),
            http_status: None,
            request_id: None,
            connection: ConnectionFate::Answered,
            fault: None,
            delay_ms: 0,
        };
        let checks = Checks {
            keys: &self.keys,
            regions: &self.regions,
            max_skew: self.max_skew,
        };
        let (answer, delay) = match check(checks) {
            Err(error) => {
                record.signature_valid = signature_verdict(&error);
                (
                    Answer::Error {
                        error,
                        retry_after: None,
                    },
                    Duration::ZERO,
                )
            }
            Ok(auth) => {
                record.signature_valid = Some(true);
                match self
                    .nonces
                    .claim(&auth.access_key_id, &auth.nonce, auth.timestamp, now)
                {
                    Err(error) => (
                        Answer::Error {
                            error,
                            retry_after: None,
                        },
                        Duration::ZERO,
                    ),
                    Ok(()) if !self.session_allows(&auth) => (
                        Answer::Error {
                            error: super::policy::forbidden(),
                            retry_after: None,
                        },
                        Duration::ZERO,
                    ),
                    Ok(()) => match self.quota.admit(&auth.access_key_id, &auth.region_id, now) {
                        Err(refusal) => {
                            record.fault = Some(refusal.as_str().to_owned());
                            (
                                Answer::Error {
                                    error: quota::throttled(),
                                    retry_after: None,
                                },
                                Duration::ZERO,
                            )
                        }
                        Ok(()) => {
                            let met = self.faults.meet(&auth.image_id);
                            let faulted = met.answer.and_then(|kind| {
                                let answer = fault_answer(&kind)?;
                                record.fault = Some(kind.to_string());
                                Some(answer)
                            });
                            let answer = match faulted {
                                Some(answer) => answer,
                                None => self.image_answer(&auth.image_id),
                            };
                            (answer, met.delay)
                        }
                    },
                }
            }
        };
        let (code, status, fate) = match &answer {
            Answer::Success => ("Success".to_owned(), Some(200), ConnectionFate::Answered),
            Answer::Error { error, .. } => (
                error.code.clone(),
                Some(error.http_status),
                ConnectionFate::Answered,
            ),
            Answer::BadGateway => ("BadGateway".to_owned(), Some(502), ConnectionFate::Answered),
            Answer::Drop => (
                "ConnectionDropped".to_owned(),
                None,
                ConnectionFate::Dropped,
            ),
            Answer::Stall => (
                "ResponseStalled".to_owned(),
                Some(200),
                ConnectionFate::Stalled,
            ),
            Answer::Hang => ("RequestHeld".to_owned(), None, ConnectionFate::Held),
            Answer::Oversized(_) => (
                "OversizedBody".to_owned(),
                Some(200),
                ConnectionFate::Answered,
            ),
        };
        record.code = code;
        record.http_status = status;
        record.connection = fate;
        record.delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        Decision {
            answer,
            delay,
            format,
            record,
        }
    }

    /// Whether the signer's session policy, if it has one, allows this
    /// CancelCopyImage.
    fn session_allows(&self, auth: &verify::Authenticated) -> bool {
        self.session_policies
            .get(&auth.access_key_id)
            .is_none_or(|policy| {
                super::policy::allows(
                    policy,
                    "ecs:CancelCopyImage",
                    &format!("acs:ecs:{}:*:image/{}", auth.region_id, auth.image_id),
                )
            })
    }

    fn image_answer(&mut self, image_id: &str) -> Answer {
        let error = |status, code: &str, message: &str| Answer::Error {
            error: ApiError::new(status, code, message),
            retry_after: None,
        };
        match self.images.get(image_id) {
            Some(ImageState::Copying) => {
                // The destination image is deleted by a cancel.
                self.images.remove(image_id);
                Answer::Success
            }
            Some(ImageState::Copied) => {
                error(400, "IncorrectImageStatus", "The image is copied finished.")
            }
            Some(ImageState::NotFromCopy) => error(
                400,
                "ImageCreatedNotFromCopy",
                "The specified image is not the target image of a copy action.",
            ),
            None => error(
                404,
                "InvalidImageId.NotFound",
                "The specified ImageId does not exist.",
            ),
        }
    }
}

/// Whether a failed check got as far as comparing the signature.
fn signature_verdict(error: &ApiError) -> Option<bool> {
    match error.code.as_str() {
        "SignatureDoesNotMatch" => Some(false),
        // The API's own parameters are checked after the signature matched.
        "MissingRegionId" | "MissingImageId" | "InvalidRegionId.NotFound" => Some(true),
        _ => None,
    }
}

/// The answer a fault forces; `None` for `latency`, which only delays.
fn fault_answer(kind: &FaultKind) -> Option<Answer> {
    let error = |status, code: &str, message: &str, retry_after| Answer::Error {
        error: ApiError::new(status, code, message),
        retry_after,
    };
    Some(match *kind {
        FaultKind::InternalError => error(
            500,
            "InternalError",
            "The request processing has failed due to some unknown error.",
            None,
        ),
        FaultKind::Throttling { retry_after } => error(
            400,
            "Throttling.User",
            "Request was denied due to user flow control.",
            retry_after,
        ),
        FaultKind::ServiceUnavailable => error(
            503,
            "ServiceUnavailable",
            "The request has failed due to a temporary failure of the server.",
            None,
        ),
        FaultKind::BadGateway => Answer::BadGateway,
        FaultKind::Drop => Answer::Drop,
        FaultKind::Stall => Answer::Stall,
        FaultKind::Hang => Answer::Hang,
        FaultKind::Oversized { bytes } => Answer::Oversized(bytes),
        FaultKind::Latency { .. } => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access_key::AccessKey;
    use crate::ecs_simulator::verify::{signature, string_to_sign};

    const ID: &str = "LTAI5tStateTest";
    const SECRET: &str = "state-secret";

    fn now() -> Timestamp {
        "2024-05-01T12:00:00Z".parse().unwrap()
    }

    fn state() -> SimulatorState {
        SimulatorState {
            keys: KeyRing::new([AccessKey::new(ID, SECRET, None)]),
            regions: ["cn-hangzhou".to_owned()].into(),
            max_skew: verify::DEFAULT_MAX_SKEW,
            images: [
                ("m-copying".to_owned(), ImageState::Copying),
                ("m-copied".to_owned(), ImageState::Copied),
                ("m-native".to_owned(), ImageState::NotFromCopy),
            ]
            .into(),
            faults: FaultPlan::default(),
            nonces: NonceCache::new(1000, verify::DEFAULT_MAX_SKEW),
            requests: VecDeque::new(),
            request_log_capacity: 3,
            quota: QuotaMeter::default(),
            session_policies: BTreeMap::new(),
        }
    }

    fn request(image: &str, nonce: &str) -> BTreeMap<String, String> {
        let mut p: BTreeMap<String, String> = [
            ("Action", "CancelCopyImage"),
            ("Version", "2014-05-26"),
            ("Format", "JSON"),
            ("AccessKeyId", ID),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureVersion", "1.0"),
            ("SignatureNonce", nonce),
            ("Timestamp", "2024-05-01T12:00:00Z"),
            ("RegionId", "cn-hangzhou"),
            ("ImageId", image),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let sig = signature(SECRET, &string_to_sign("GET", &p));
        p.insert("Signature".into(), sig);
        p
    }

    fn code(d: &Decision) -> &str {
        &d.record.code
    }

    #[test]
    fn image_states_answer_like_ecs() {
        let mut s = state();
        let table = [
            ("m-copying", "n1", "Success", 200),
            ("m-copying", "n2", "InvalidImageId.NotFound", 404),
            ("m-copied", "n3", "IncorrectImageStatus", 400),
            ("m-native", "n4", "ImageCreatedNotFromCopy", 400),
            ("m-unknown", "n5", "InvalidImageId.NotFound", 404),
        ];
        for (image, nonce, want_code, want_status) in table {
            let d = s.decide("GET", &request(image, nonce), now());
            assert_eq!(
                (code(&d), d.record.http_status),
                (want_code, Some(want_status)),
                "{image}"
            );
            assert_eq!(d.record.signature_valid, Some(true));
            assert_eq!(d.record.image_id.as_deref(), Some(image));
        }
        assert!(!s.images.contains_key("m-copying"));
    }

    #[test]
    fn a_session_policy_that_does_not_allow_the_cancel_gets_forbidden_ram() {
        let mut s = state();
        let describe_only = r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":"ecs:Describe*","Resource":"*"}]}"#;
        s.session_policies.insert(ID.into(), describe_only.into());
        let d = s.decide("GET", &request("m-copying", "p1"), now());
        assert_eq!(
            (code(&d), d.record.http_status),
            ("Forbidden.RAM", Some(403))
        );
        assert_eq!(s.images.get("m-copying"), Some(&ImageState::Copying));
        let cancel_only = r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":["ecs:CancelCopyImage"],"Resource":["*"]}]}"#;
        s.session_policies.insert(ID.into(), cancel_only.into());
        let d = s.decide("GET", &request("m-copying", "p2"), now());
        assert_eq!(code(&d), "Success");
    }

    #[test]
    fn reused_nonce_is_refused_without_touching_the_image() {
        let mut s = state();
        assert_eq!(
            code(&s.decide("GET", &request("m-copied", "same"), now())),
            "IncorrectImageStatus"
        );
        let replay = s.decide("GET", &request("m-copying", "same"), now());
        assert_eq!(code(&replay), "SignatureNonceUsed");
        assert_eq!(s.images.get("m-copying"), Some(&ImageState::Copying));
    }

    #[test]
    fn failed_checks_do_not_burn_nonces_or_faults() {
        let mut s = state();
        s.faults.push("*=internal-error".parse().unwrap());
        let mut bad = request("m-copying", "n1");
        bad.insert("Signature".into(), "AAAA".into());
        let d = s.decide("GET", &bad, now());
        assert_eq!(code(&d), "SignatureDoesNotMatch");
        assert_eq!(d.record.signature_valid, Some(false));
        assert!(s.nonces.is_empty());
        assert_eq!(s.faults.pending().len(), 1);
    }

    #[test]
    fn quota_mode_throttles_past_the_limit_before_faults_and_images() {
        let mut s = state();
        s.quota = QuotaMeter::new(super::super::QuotaLimits {
            per_second: Some(1),
            per_minute: None,
        });
        s.faults.push("*=internal-error*1".parse().unwrap());
        let first = s.decide("GET", &request("m-copying", "q1"), now());
        assert_eq!(code(&first), "InternalError");
        let second = s.decide("GET", &request("m-copying", "q2"), now());
        assert_eq!(
            (code(&second), second.record.http_status),
            ("Throttling.User", Some(400))
        );
        assert_eq!(second.record.fault.as_deref(), Some("quota-per-second"));
        let Answer::Error { error, retry_after } = &second.answer else {
            panic!("{:?}", second.answer)
        };
        assert_eq!(
            error.message,
            "Request was denied due to user flow control."
        );
        assert_eq!(*retry_after, None);
        // The throttled call met no fault and left the image as it was.
        assert_eq!(s.images.get("m-copying"), Some(&ImageState::Copying));
        let next_second = now() + std::time::Duration::from_secs(1);
        let third = s.decide("GET", &request("m-copying", "q3"), next_second);
        assert_eq!(code(&third), "Success");
    }

    #[test]
    fn faults_come_before_the_image_state() {
        let mut s = state();
        for f in [
            "m-copying=internal-error*1",
            "m-copying=latency:250ms",
            "*=throttling:2s",
            "m-copying=service-unavailable",
            "*=drop",
            "*=hang",
            "*=stall",
            "*=bad-gateway",
            "*=oversized:1k",
        ] {
            s.faults.push(f.parse().unwrap());
        }
        let expected = [
            ("InternalError", Some(500), Duration::ZERO),
            ("Throttling.User", Some(400), Duration::from_millis(250)),
            ("ServiceUnavailable", Some(503), Duration::ZERO),
            ("ConnectionDropped", None, Duration::ZERO),
            ("RequestHeld", None, Duration::ZERO),
            ("ResponseStalled", Some(200), Duration::ZERO),
            ("BadGateway", Some(502), Duration::ZERO),
            ("OversizedBody", Some(200), Duration::ZERO),
            ("Success", Some(200), Duration::ZERO),
        ];
        for (i, (want_code, want_status, want_delay)) in expected.into_iter().enumerate() {
            let d = s.decide("GET", &request("m-copying", &format!("n{i}")), now());
            assert_eq!(
                (code(&d), d.record.http_status, d.delay),
                (want_code, want_status, want_delay),
                "step {i}"
            );
            if want_code == "Throttling.User" {
                assert!(
                    matches!(d.answer, Answer::Error { retry_after: Some(r), .. } if r == Duration::from_secs(2))
                );
            }
        }
    }

    #[test]
    fn request_log_is_bounded() {
        let mut s = state();
        for i in 0..5 {
            let d = s.decide("GET", &request("m-unknown", &format!("n{i}")), now());
            s.log(d.record);
        }
        let nonces: Vec<_> = s
            .requests
            .iter()
            .map(|r| r.signature_nonce.clone().unwrap())
            .collect();
        assert_eq!(nonces, ["n2", "n3", "n4"]);
    }

    #[test]
    fn image_args_parse() {
        assert_eq!(
            parse_image_arg("m-a=copying").unwrap(),
            ("m-a".to_owned(), ImageState::Copying)
        );
        assert_eq!(
            parse_image_arg("m-a=not-from-copy").unwrap().1,
            ImageState::NotFromCopy
        );
        assert!(parse_image_arg("m-a").unwrap_err().contains("ID=STATE"));
        assert!(
            parse_image_arg("m-a=gone")
                .unwrap_err()
                .contains("copying, copied or not-from-copy")
        );
        assert!(parse_image_arg("=copying").unwrap_err().contains("empty"));
    }
}
