//! Scriptable faults of the ECS simulator: what they are, their text syntax
//! (`TARGET=KIND[:ARG][*COUNT]`), and the pure bookkeeping that decides which
//! fault a request meets.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;

/// Default size of an `oversized` answer body.
pub const DEFAULT_OVERSIZED_BYTES: u64 = 8 * 1024 * 1024;

/// The full syntax, shown by `ecs-simulator --help`.
pub const SYNTAX_HELP: &str = "\
FAULTS (--fault TARGET=KIND[:ARG][*COUNT], repeatable; also POST /_simulator/faults):
  TARGET   an image ID (m-abc) or * for any image ID, present or not.
  COUNT    how many requests meet the fault: a number (default 1) or 'always'.
  KIND     internal-error          500 InternalError
           throttling[:AFTER]      400 Throttling.User; with AFTER (e.g. 1500ms, 2s) also
                                   the header x-acs-retry-after: <milliseconds>
           service-unavailable     503 ServiceUnavailable
           bad-gateway             502 with an HTML page, as a proxy in front would send
           drop                    close the connection without any response
           stall                   send 200 headers and part of the body, then nothing more
           hang                    hold the request open, never answer
           oversized[:BYTES]       200 with a body of BYTES (default 8MiB; suffixes k, m)
           latency:DURATION        wait DURATION, then go on to the next fault or the answer
  Faults meet requests that passed every check (signature, timestamp, nonce), so they never
  hide a client error, and are consumed in the order given, before the image's state answers.
  Example: --fault m-abc=internal-error*2 --fault m-abc=latency:200ms --fault '*=throttling*1'";

/// What a fault does to the request that meets it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum FaultKind {
    /// 500 `InternalError`.
    InternalError,
    /// 400 `Throttling.User`, with `x-acs-retry-after` when set.
    Throttling {
        /// Value of the `x-acs-retry-after` header.
        #[serde(rename = "retryAfterMs", serialize_with = "ser_opt_ms")]
        retry_after: Option<Duration>,
    },
    /// 503 `ServiceUnavailable`.
    ServiceUnavailable,
    /// 502 HTML page from a proxy.
    BadGateway,
    /// Connection closed without a response.
    Drop,
    /// Headers and part of a body, then silence.
    Stall,
    /// No answer at all.
    Hang,
    /// 200 with a body this large.
    Oversized {
        /// Body size in bytes.
        bytes: u64,
    },
    /// A delay before the next fault or the answer.
    Latency {
        /// How long.
        #[serde(rename = "delayMs", serialize_with = "ser_ms")]
        delay: Duration,
    },
}

fn ser_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u128(d.as_millis())
}

fn ser_opt_ms<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&d.as_millis()),
        None => s.serialize_none(),
    }
}

/// Which requests a fault applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaultTarget {
    /// Requests for any image ID.
    AnyImage,
    /// Requests for this image ID.
    Image(String),
}

impl FaultTarget {
    fn matches(&self, image_id: &str) -> bool {
        match self {
            Self::AnyImage => true,
            Self::Image(id) => id == image_id,
        }
    }
}

impl Serialize for FaultTarget {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::AnyImage => s.serialize_str("*"),
            Self::Image(id) => s.serialize_str(id),
        }
    }
}

/// How many requests a fault meets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultCount {
    /// This many, then the fault is spent.
    Times(u32),
    /// Every request.
    Always,
}

impl Serialize for FaultCount {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Times(n) => s.serialize_u32(*n),
            Self::Always => s.serialize_str("always"),
        }
    }
}

/// One scripted fault: target, effect and how many times.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FaultSpec {
    /// Which requests it applies to.
    pub target: FaultTarget,
    /// What it does.
    #[serde(flatten)]
    pub kind: FaultKind,
    /// How many more requests it meets.
    #[serde(rename = "remaining")]
    pub count: FaultCount,
}

impl FaultSpec {
    /// A fault meeting `count` requests for `target`.
    pub fn new(target: FaultTarget, kind: FaultKind, count: FaultCount) -> Self {
        Self {
            target,
            kind,
            count,
        }
    }
}

/// Why a fault spec could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid fault {spec:?}: {reason} (syntax: TARGET=KIND[:ARG][*COUNT], e.g. m-abc=internal-error*2; see --help)"
)]
pub struct FaultParseError {
    spec: String,
    reason: String,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("{text:?} is not a duration like 250ms or 2s ({e})"))
}

fn parse_bytes(text: &str) -> Result<u64, String> {
    let lower = text.to_ascii_lowercase();
    let (digits, factor) = if let Some(d) = lower
        .strip_suffix("mib")
        .or_else(|| lower.strip_suffix('m'))
    {
        (d, 1024 * 1024)
    } else if let Some(d) = lower
        .strip_suffix("kib")
        .or_else(|| lower.strip_suffix('k'))
    {
        (d, 1024)
    } else {
        (lower.as_str(), 1)
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(factor))
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{text:?} is not a size like 4096, 64k or 8m"))
}

impl FromStr for FaultKind {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (name, arg) = match text.split_once(':') {
            Some((n, a)) => (n, Some(a)),
            None => (text, None),
        };
        let no_arg = |kind: FaultKind| match arg {
            None => Ok(kind),
            Some(a) => Err(format!("{name} takes no argument, got {a:?}")),
        };
        match name {
            "internal-error" => no_arg(Self::InternalError),
            "service-unavailable" => no_arg(Self::ServiceUnavailable),
            "bad-gateway" => no_arg(Self::BadGateway),
            "drop" => no_arg(Self::Drop),
            "stall" => no_arg(Self::Stall),
            "hang" => no_arg(Self::Hang),
            "throttling" => Ok(Self::Throttling {
                retry_after: arg.map(parse_duration).transpose()?,
            }),
            "oversized" => Ok(Self::Oversized {
                bytes: arg
                    .map(parse_bytes)
                    .transpose()?
                    .unwrap_or(DEFAULT_OVERSIZED_BYTES),
            }),
            "latency" => match arg {
                Some(a) => Ok(Self::Latency {
                    delay: parse_duration(a)?,
                }),
                None => Err("latency needs a duration, e.g. latency:200ms".to_owned()),
            },
            other => Err(format!(
                "unknown kind {other:?}; expected internal-error, throttling, service-unavailable, bad-gateway, drop, stall, hang, oversized or latency"
            )),
        }
    }
}

impl FromStr for FaultSpec {
    type Err = FaultParseError;

    fn from_str(spec: &str) -> Result<Self, FaultParseError> {
        let fail = |reason: String| FaultParseError {
            spec: spec.to_owned(),
            reason,
        };
        let (target, rest) = spec
            .split_once('=')
            .ok_or_else(|| fail("missing '=' between target and kind".to_owned()))?;
        let target = match target.trim() {
            "" => return Err(fail("empty target; use an image ID or *".to_owned())),
            "*" => FaultTarget::AnyImage,
            id => FaultTarget::Image(id.to_owned()),
        };
        let (kind, count) = match rest.rsplit_once('*') {
            Some((k, c)) => (k, Some(c)),
            None => (rest, None),
        };
        let count = match count {
            None => FaultCount::Times(1),
            Some("always") => FaultCount::Always,
            Some(n) => match n.parse::<u32>() {
                Ok(n) if n > 0 => FaultCount::Times(n),
                _ => {
                    return Err(fail(format!(
                        "count {n:?} must be a positive number or 'always'"
                    )));
                }
            },
        };
        let kind = kind.trim().parse::<FaultKind>().map_err(fail)?;
        Ok(Self::new(target, kind, count))
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InternalError => f.write_str("internal-error"),
            Self::Throttling { retry_after: None } => f.write_str("throttling"),
            Self::Throttling {
                retry_after: Some(d),
            } => write!(f, "throttling:{}ms", d.as_millis()),
            Self::ServiceUnavailable => f.write_str("service-unavailable"),
            Self::BadGateway => f.write_str("bad-gateway"),
            Self::Drop => f.write_str("drop"),
            Self::Stall => f.write_str("stall"),
            Self::Hang => f.write_str("hang"),
            Self::Oversized { bytes } => write!(f, "oversized:{bytes}"),
            Self::Latency { delay } => write!(f, "latency:{}ms", delay.as_millis()),
        }
    }
}

/// The faults a request met: delays to wait, then at most one answer-changing fault.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetFaults {
    /// Sum of the `latency` faults met.
    pub delay: Duration,
    /// The fault that replaces the answer, if any.
    pub answer: Option<FaultKind>,
}

/// The scripted faults still to be met, in the order they were added.
#[derive(Clone, Debug, Default)]
pub struct FaultPlan {
    faults: Vec<FaultSpec>,
}

impl FaultPlan {
    /// Appends a fault.
    pub fn push(&mut self, fault: FaultSpec) {
        self.faults.push(fault);
    }

    /// Forgets every fault.
    pub fn clear(&mut self) {
        self.faults.clear();
    }

    /// Faults not yet spent.
    pub fn pending(&self) -> &[FaultSpec] {
        &self.faults
    }

    /// Consumes the faults a request for `image_id` meets: every matching
    /// `latency` fault before the first matching answer-changing fault, and
    /// that one.
    pub fn meet(&mut self, image_id: &str) -> MetFaults {
        let mut met = MetFaults::default();
        for fault in self.faults.iter_mut() {
            if !fault.target.matches(image_id) {
                continue;
            }
            if let FaultCount::Times(n) = &mut fault.count {
                *n -= 1;
            }
            match &fault.kind {
                FaultKind::Latency { delay } => met.delay += *delay,
                other => {
                    met.answer = Some(other.clone());
                    break;
                }
            }
        }
        self.faults.retain(|f| f.count != FaultCount::Times(0));
        met
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(s: &str) -> FaultSpec {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn parses_every_kind() {
        use FaultCount::{Always, Times};
        use FaultKind::{
            BadGateway, Drop, Hang, InternalError, Latency, Oversized, ServiceUnavailable, Stall,
            Throttling,
        };
        use FaultTarget::AnyImage;
        let image = |id: &str| FaultTarget::Image(id.into());
        #[rustfmt::skip]
        let table = [
            ("m-abc=internal-error*2",     image("m-abc"), InternalError,                                                 Times(2)),
            ("*=throttling",               AnyImage,       Throttling { retry_after: None },                              Times(1)),
            ("*=throttling:1500ms*always", AnyImage,       Throttling { retry_after: Some(Duration::from_millis(1500)) }, Always),
            ("m-a=service-unavailable*3",  image("m-a"),   ServiceUnavailable,                                            Times(3)),
            ("m-a=bad-gateway",            image("m-a"),   BadGateway,                                                    Times(1)),
            ("m-a=drop",                   image("m-a"),   Drop,                                                          Times(1)),
            ("m-a=stall",                  image("m-a"),   Stall,                                                         Times(1)),
            ("m-a=hang",                   image("m-a"),   Hang,                                                          Times(1)),
            ("m-a=oversized",              image("m-a"),   Oversized { bytes: DEFAULT_OVERSIZED_BYTES },                  Times(1)),
            ("m-a=oversized:64k",          image("m-a"),   Oversized { bytes: 65536 },                                    Times(1)),
            ("m-a=latency:200ms",          image("m-a"),   Latency { delay: Duration::from_millis(200) },                 Times(1)),
        ];
        for (text, target, kind, count) in table {
            assert_eq!(spec(text), FaultSpec::new(target, kind, count), "{text}");
        }
    }

    #[test]
    fn refuses_bad_specs_naming_the_problem() {
        let table = [
            ("internal-error", "missing '='"),
            ("=drop", "empty target"),
            ("m-a=explode", "unknown kind"),
            ("m-a=drop*0", "positive number"),
            ("m-a=drop*x", "positive number"),
            ("m-a=latency", "needs a duration"),
            ("m-a=latency:soon", "not a duration"),
            ("m-a=drop:1", "takes no argument"),
            ("m-a=oversized:-1", "not a size"),
        ];
        for (text, needle) in table {
            let err = text.parse::<FaultSpec>().unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
            assert!(err.contains("TARGET=KIND"), "{text}: {err}");
        }
    }

    #[test]
    fn faults_are_met_in_order_and_spent() {
        let mut plan = FaultPlan::default();
        plan.push(spec("m-a=internal-error*2"));
        plan.push(spec("m-a=latency:200ms*3"));
        plan.push(spec("*=throttling:1s"));
        plan.push(spec("m-b=drop*always"));

        let first = plan.meet("m-a");
        assert_eq!(
            first,
            MetFaults {
                delay: Duration::ZERO,
                answer: Some(FaultKind::InternalError)
            }
        );
        assert_eq!(plan.meet("m-a").answer, Some(FaultKind::InternalError));
        let third = plan.meet("m-a");
        assert_eq!(third.delay, Duration::from_millis(200));
        assert_eq!(
            third.answer,
            Some(FaultKind::Throttling {
                retry_after: Some(Duration::from_secs(1))
            })
        );
        // Throttling spent; latency still has two left; no answer fault for m-a.
        assert_eq!(
            plan.meet("m-a"),
            MetFaults {
                delay: Duration::from_millis(200),
                answer: None
            }
        );
        assert_eq!(plan.meet("m-a").answer, None);
        assert_eq!(plan.meet("m-a"), MetFaults::default());
        for _ in 0..3 {
            assert_eq!(plan.meet("m-b").answer, Some(FaultKind::Drop));
        }
        assert_eq!(plan.pending().len(), 1);
    }

    #[test]
    fn display_round_trips() {
        for text in [
            "internal-error",
            "throttling",
            "throttling:1500ms",
            "oversized:4096",
            "latency:20ms",
            "hang",
        ] {
            let kind: FaultKind = text.parse().unwrap();
            assert_eq!(kind.to_string(), text);
        }
    }
}
