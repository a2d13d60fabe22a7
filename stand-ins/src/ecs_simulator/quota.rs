//! The simulator's quota mode: ECS flow control as the service describes it.
//! Calls are counted per access key and region in windows aligned to the
//! clock, one per second and one per minute; past either limit a call gets
//! HTTP 400 `Throttling.User` and is not counted. A minute's quota clears at
//! the next minute (throttled in minute T, callable again at T+1).
//!
//! NB: Alibaba publishes no limit for CancelCopyImage and does not say
//! whether refused calls count; here they do not, so a client that keeps
//! asking is not punished beyond the window.

use std::collections::HashMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::verify::ApiError;

/// The limits, per access key and region; `None`: no limit of that kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QuotaLimits {
    /// Calls accepted per second (window aligned to the clock's seconds).
    #[serde(default)]
    pub per_second: Option<u32>,
    /// Calls accepted per minute (window aligned to the clock's minutes).
    #[serde(default)]
    pub per_minute: Option<u32>,
}

impl QuotaLimits {
    /// Whether any limit is set.
    pub fn is_set(&self) -> bool {
        self.per_second.is_some() || self.per_minute.is_some()
    }
}

/// The body ECS sends with a flow-control refusal.
pub fn throttled() -> ApiError {
    ApiError::new(
        400,
        "Throttling.User",
        "Request was denied due to user flow control.",
    )
}

/// Calls counted in the current windows of one (key, region).
#[derive(Clone, Copy, Debug, Default)]
struct Windows {
    second: i64,
    in_second: u32,
    minute: i64,
    in_minute: u32,
}

/// Counts calls against [`QuotaLimits`].
#[derive(Debug, Default)]
pub struct QuotaMeter {
    limits: QuotaLimits,
    counts: HashMap<(String, String), Windows>,
}

/// Which limit refused a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The second's limit.
    PerSecond,
    /// The minute's limit.
    PerMinute,
}

impl Refusal {
    /// The request log's `fault` text.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PerSecond => "quota-per-second",
            Self::PerMinute => "quota-per-minute",
        }
    }
}

impl QuotaMeter {
    /// A meter with `limits`.
    pub fn new(limits: QuotaLimits) -> Self {
        Self {
            limits,
            counts: HashMap::new(),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> QuotaLimits {
        self.limits
    }

    /// Replaces the limits; what was counted in the current windows stays.
    pub fn set_limits(&mut self, limits: QuotaLimits) {
        self.limits = limits;
    }

    /// Counts a call by `key` to `region` at `now`, or refuses it.
    pub fn admit(&mut self, key: &str, region: &str, now: Timestamp) -> Result<(), Refusal> {
        if !self.limits.is_set() {
            return Ok(());
        }
        let second = now.as_second();
        let minute = second.div_euclid(60);
        let w = self
            .counts
            .entry((key.to_owned(), region.to_owned()))
            .or_default();
        if w.second != second {
            w.second = second;
            w.in_second = 0;
        }
        if w.minute != minute {
            w.minute = minute;
            w.in_minute = 0;
        }
        if self.limits.per_minute.is_some_and(|l| w.in_minute >= l) {
            return Err(Refusal::PerMinute);
        }
        if self.limits.per_second.is_some_and(|l| w.in_second >= l) {
            return Err(Refusal::PerSecond);
        }
        w.in_second += 1;
        w.in_minute += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn per_second_and_per_minute_windows_per_key_and_region() {
        let mut m = QuotaMeter::new(QuotaLimits {
            per_second: Some(2),
            per_minute: Some(5),
        });
        // (key, region, time after 2026-12-02T10:00, want)
        let rows = [
            ("k1", "cn-hangzhou", "00:00.1Z", Ok(())),
            ("k1", "cn-hangzhou", "00:00.5Z", Ok(())),
            ("k1", "cn-hangzhou", "00:00.9Z", Err(Refusal::PerSecond)),
            // Other keys and regions have their own counts.
            ("k2", "cn-hangzhou", "00:00.9Z", Ok(())),
            ("k1", "eu-central-1", "00:00.9Z", Ok(())),
            // The next second clears the second's count, not the minute's.
            ("k1", "cn-hangzhou", "00:01.0Z", Ok(())),
            ("k1", "cn-hangzhou", "00:01.1Z", Ok(())),
            ("k1", "cn-hangzhou", "00:02.0Z", Ok(())),
            ("k1", "cn-hangzhou", "00:03.0Z", Err(Refusal::PerMinute)),
            // Refused calls did not count; the minute's quota clears at the next minute.
            ("k1", "cn-hangzhou", "00:59.9Z", Err(Refusal::PerMinute)),
            ("k1", "cn-hangzhou", "01:00.0Z", Ok(())),
        ];
        for (key, region, time, want) in rows {
            assert_eq!(
                m.admit(key, region, at(&format!("2026-12-02T10:{time}"))),
                want,
                "{key} {region} {time}"
            );
        }
    }

    #[test]
    fn no_limits_admit_everything_and_limits_change_at_run_time() {
        let mut m = QuotaMeter::default();
        let t = at("2026-12-02T10:00:00Z");
        for _ in 0..1000 {
            assert_eq!(m.admit("k", "r", t), Ok(()));
        }
        m.set_limits(QuotaLimits {
            per_second: Some(1),
            per_minute: None,
        });
        assert_eq!(m.admit("k", "r", t), Ok(()));
        assert_eq!(m.admit("k", "r", t), Err(Refusal::PerSecond));
        assert_eq!(m.limits().per_second, Some(1));
    }

    #[test]
    fn the_control_body_names_its_fields() {
        let limits: QuotaLimits = serde_json::from_str(r#"{"perSecond": 50}"#).unwrap();
        assert_eq!(limits.per_second, Some(50));
        assert_eq!(limits.per_minute, None);
        let err = serde_json::from_str::<QuotaLimits>(r#"{"qps": 50}"#).unwrap_err();
        assert!(err.to_string().contains("perSecond"), "{err}");
    }
}
