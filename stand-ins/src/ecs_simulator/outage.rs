//! Whole-endpoint outages, for rehearsing an incident: the simulator stops
//! answering everyone (not one image, as faults do) until the outage ends.
//!
//! - `refuse`: no listener on the port (connections refused); open
//!   connections are closed; on recovery the same port is bound again.
//! - `blackhole`: connections are accepted and requests read, never answered.
//! - `unavailable`: every API request gets HTTP 503 `ServiceUnavailable`
//!   with ECS's own body.
//!
//! A `refuse` outage closes every open connection (a pooled keep-alive
//! connection must not outlive the port), and the end of a `blackhole` cuts
//! the requests it held (as when a proxy restarts; a client would otherwise
//! wait out its whole timeout).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How the endpoint fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutageMode {
    /// No listener on the port.
    Refuse,
    /// Accept, never answer.
    Blackhole,
    /// HTTP 503 `ServiceUnavailable`.
    Unavailable,
}

impl OutageMode {
    /// Every mode, for tables and help.
    pub const ALL: [OutageMode; 3] = [Self::Refuse, Self::Blackhole, Self::Unavailable];
}

impl fmt::Display for OutageMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Refuse => "refuse",
            Self::Blackhole => "blackhole",
            Self::Unavailable => "unavailable",
        })
    }
}

impl FromStr for OutageMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|m| m.to_string() == s)
            .ok_or_else(|| {
                format!("unknown outage mode {s:?} (one of refuse, blackhole, unavailable)")
            })
    }
}

/// An outage to start: `MODE[:FOR][@AFTER]` on the command line, e.g.
/// `refuse:60s@30s` (refuse connections for 60 s, 30 s after start).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutagePlan {
    /// How the endpoint fails.
    pub mode: OutageMode,
    /// How long; `None`: until ended (`PUT /_simulator/outage {"mode":"none"}`).
    pub lasts: Option<Duration>,
    /// How long after start it begins.
    pub after: Duration,
}

/// The `--outage` syntax, for help texts and errors.
pub const OUTAGE_SYNTAX: &str = "MODE[:FOR][@AFTER], MODE one of refuse, blackhole, unavailable; \
     e.g. refuse:60s@30s (FOR is required for refuse: the control route goes with the listener)";

impl FromStr for OutagePlan {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let fail = |why: String| format!("invalid outage {s:?}: {why} (syntax: {OUTAGE_SYNTAX})");
        let (rest, after) = match s.split_once('@') {
            Some((rest, after)) => (
                rest,
                humantime::parse_duration(after)
                    .map_err(|e| fail(format!("AFTER {after:?}: {e}")))?,
            ),
            None => (s, Duration::ZERO),
        };
        let (mode, lasts) = match rest.split_once(':') {
            Some((mode, lasts)) => (
                mode,
                Some(
                    humantime::parse_duration(lasts)
                        .map_err(|e| fail(format!("FOR {lasts:?}: {e}")))?,
                ),
            ),
            None => (rest, None),
        };
        let mode: OutageMode = mode.parse().map_err(fail)?;
        if mode == OutageMode::Refuse && lasts.is_none() {
            return Err(fail("refuse needs FOR: nothing could end it".to_owned()));
        }
        Ok(Self { mode, lasts, after })
    }
}

/// The body of `PUT /_simulator/outage`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutageRequest {
    /// `refuse`, `blackhole`, `unavailable`, or `none` to end the outage.
    pub mode: String,
    /// How long, in milliseconds; required for `refuse`.
    #[serde(default)]
    pub for_ms: Option<u64>,
}

impl OutageRequest {
    /// The mode to set (`None`: end the outage) and for how long.
    pub fn parse(&self) -> Result<(Option<OutageMode>, Option<Duration>), String> {
        let lasts = self.for_ms.map(Duration::from_millis);
        if self.mode == "none" {
            return Ok((None, None));
        }
        let mode: OutageMode = self.mode.parse()?;
        if mode == OutageMode::Refuse && lasts.is_none() {
            return Err(
                "mode refuse needs forMs: the listener this route is on goes away, so nothing could end it"
                    .to_owned(),
            );
        }
        Ok((Some(mode), lasts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_syntax_table() {
        let s = Duration::from_secs;
        let ok = [
            ("blackhole", OutageMode::Blackhole, None, s(0)),
            (
                "unavailable:45s",
                OutageMode::Unavailable,
                Some(s(45)),
                s(0),
            ),
            ("refuse:60s@30s", OutageMode::Refuse, Some(s(60)), s(30)),
            ("blackhole@1m", OutageMode::Blackhole, None, s(60)),
        ];
        for (text, mode, lasts, after) in ok {
            assert_eq!(
                text.parse::<OutagePlan>(),
                Ok(OutagePlan { mode, lasts, after }),
                "{text}"
            );
        }
        for (text, names) in [
            ("refuse", "refuse needs FOR"),
            ("flaky:10s", "unknown outage mode \"flaky\""),
            ("blackhole:soon", "FOR \"soon\""),
            ("unavailable@x", "AFTER \"x\""),
        ] {
            let err = text.parse::<OutagePlan>().unwrap_err();
            assert!(
                err.contains(names) && err.contains("syntax"),
                "{text}: {err}"
            );
        }
    }

    #[test]
    fn request_table() {
        let req = |mode: &str, for_ms: Option<u64>| OutageRequest {
            mode: mode.to_owned(),
            for_ms,
        };
        assert_eq!(req("none", None).parse(), Ok((None, None)));
        assert_eq!(
            req("refuse", Some(1500)).parse(),
            Ok((Some(OutageMode::Refuse), Some(Duration::from_millis(1500))))
        );
        assert_eq!(
            req("unavailable", None).parse(),
            Ok((Some(OutageMode::Unavailable), None))
        );
        assert!(req("refuse", None).parse().unwrap_err().contains("forMs"));
        assert!(
            req("down", None)
                .parse()
                .unwrap_err()
                .contains("unknown outage mode")
        );
    }
}
