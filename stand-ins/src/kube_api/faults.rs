//! Scripted failures: which requests they hit (verb, resource, subresource,
//! every n-th, a seeded rate) and how many times.

use rand::rngs::SmallRng;
use rand::{Rng as _, SeedableRng as _};

use super::requests::{FaultKind, RequestRecord, Verb};

/// Which of the matching requests a fault hits.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Gate {
    /// Every one.
    Each,
    /// The `n`-th, `2n`-th, ... (`seen` matching requests so far).
    Every { n: u32, seen: u64 },
    /// Each with probability `per_million / 1e6`, drawn from a seeded generator.
    Rate { per_million: u32, rng: SmallRng },
}

impl Gate {
    /// Whether this matching request is hit; advances the gate's state.
    fn fires(&mut self) -> bool {
        match self {
            Gate::Each => true,
            Gate::Every { n, seen } => {
                *seen += 1;
                *seen % u64::from(*n) == 0
            }
            Gate::Rate { per_million, rng } => rng.random_range(0..1_000_000) < *per_million,
        }
    }
}

/// A scripted failure for the next matching requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    kind: FaultKind,
    remaining: u32,
    verb: Option<Verb>,
    resource: Option<String>,
    subresource: Option<String>,
    spared_user_agent: Option<String>,
    gate: Gate,
}

impl Fault {
    fn new(kind: FaultKind, times: u32) -> Self {
        Self {
            kind,
            remaining: times,
            verb: None,
            resource: None,
            subresource: None,
            spared_user_agent: None,
            gate: Gate::Each,
        }
    }

    /// The next `times` writes (create, update, patch, delete) answer 409 Conflict.
    pub fn conflict(times: u32) -> Self {
        Self::new(FaultKind::Conflict, times)
    }

    /// The next `times` writes answer 500 InternalError.
    pub fn internal_error(times: u32) -> Self {
        Self::new(FaultKind::InternalError, times)
    }

    /// The next `times` writes answer 429 TooManyRequests asking the client to wait
    /// `retry_after_seconds`.
    pub fn too_many_requests(times: u32, retry_after_seconds: u32) -> Self {
        Self::new(
            FaultKind::TooManyRequests {
                retry_after_seconds,
            },
            times,
        )
    }

    /// Only requests with this verb (may be a read verb, e.g. [`Verb::List`]).
    pub fn verb(mut self, verb: Verb) -> Self {
        self.verb = Some(verb);
        self
    }

    /// Only requests for this resource plural (e.g. `copyimagecancellations`).
    pub fn resource(mut self, plural: &str) -> Self {
        self.resource = Some(plural.to_string());
        self
    }

    /// Only requests for this subresource (`"status"`, or `""` for the main resource).
    pub fn subresource(mut self, subresource: &str) -> Self {
        self.subresource = Some(subresource.to_string());
        self
    }

    /// Hits only every `n`-th matching request (the `n`-th, `2n`-th, ...); the others pass
    /// through untouched. `times` then counts the hits, not the matching requests.
    ///
    /// NB: `n` of 0 is taken as 1.
    pub fn every(mut self, n: u32) -> Self {
        self.gate = Gate::Every {
            n: n.max(1),
            seen: 0,
        };
        self
    }

    /// Hits each matching request with probability `rate` (clamped to `0..=1`, resolution
    /// one in a million), drawn from a generator seeded with `seed`: the same seed and the
    /// same request order give the same hits. `times` counts the hits.
    pub fn rate(mut self, rate: f64, seed: u64) -> Self {
        // The clamp bounds the product to 0..=1e6, so the cast cannot truncate.
        let per_million = (rate.clamp(0.0, 1.0) * 1_000_000.0).round() as u32;
        self.gate = Gate::Rate {
            per_million,
            rng: SmallRng::seed_from_u64(seed),
        };
        self
    }

    /// Requests sent with exactly this `User-Agent` pass untouched (e.g. a test's own
    /// client, so that the test's polling does not use up faults meant for the controller).
    pub fn sparing_user_agent(mut self, user_agent: &str) -> Self {
        self.spared_user_agent = Some(user_agent.to_string());
        self
    }

    fn matches(&self, request: &RequestRecord) -> bool {
        self.remaining > 0
            && self
                .verb
                .map_or(request.verb.is_write(), |v| v == request.verb)
            && self
                .resource
                .as_deref()
                .is_none_or(|r| r == request.resource)
            && self
                .subresource
                .as_deref()
                .is_none_or(|s| s == request.subresource)
            && (self.spared_user_agent.is_none() || self.spared_user_agent != request.user_agent)
    }
}

/// Takes the fault a request meets, if any, spending it. Every matching fault's gate sees
/// the request, in order, until one fires: a gated fault that lets a request pass leaves it
/// to the faults after it.
pub(super) fn take_fault(faults: &mut Vec<Fault>, request: &RequestRecord) -> Option<FaultKind> {
    let mut hit = None;
    for fault in faults.iter_mut() {
        if fault.matches(request) && fault.gate.fires() {
            hit = Some(fault);
            break;
        }
    }
    let fault = hit?;
    fault.remaining -= 1;
    let kind = fault.kind;
    faults.retain(|f| f.remaining > 0);
    Some(kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CICS: &str = "copyimagecancellations";

    fn request(verb: Verb, subresource: &str, user_agent: Option<&str>) -> RequestRecord {
        RequestRecord {
            verb,
            group: "ecs.alibabacloud.com".into(),
            resource: CICS.into(),
            subresource: subresource.into(),
            namespace: Some("images".into()),
            name: Some("a".into()),
            patch_type: None,
            field_manager: None,
            code: 200,
            user_agent: user_agent.map(String::from),
            received: std::time::Instant::now(),
            time: jiff::Timestamp::now(),
            resource_version: None,
            injected: None,
        }
    }

    #[test]
    fn a_spared_user_agent_passes_and_does_not_use_the_fault_up() {
        let mut faults = vec![Fault::internal_error(1).sparing_user_agent("test-harness")];
        let harness = request(Verb::Patch, "status", Some("test-harness"));
        assert_eq!(take_fault(&mut faults, &harness), None);
        assert_eq!(
            take_fault(&mut faults, &request(Verb::Patch, "status", None)),
            Some(FaultKind::InternalError)
        );
        assert!(faults.is_empty());
    }

    /// Which of `n` status patches the faults answer, and with what.
    fn hits(faults: &mut Vec<Fault>, n: usize) -> Vec<Option<FaultKind>> {
        (0..n)
            .map(|_| take_fault(faults, &request(Verb::Patch, "status", None)))
            .collect()
    }

    #[test]
    fn every_nth_matching_request_is_hit_and_times_counts_the_hits() {
        let mut faults = vec![Fault::conflict(2).every(3).subresource("status")];
        let c = Some(FaultKind::Conflict);
        assert_eq!(
            hits(&mut faults, 8),
            [None, None, c, None, None, c, None, None]
        );
        assert!(faults.is_empty(), "spent after two hits");
    }

    #[test]
    fn requests_a_filter_rejects_do_not_advance_the_gate() {
        let mut faults = vec![Fault::internal_error(10).every(2).subresource("status")];
        assert_eq!(
            take_fault(&mut faults, &request(Verb::Patch, "", None)),
            None
        );
        assert_eq!(
            take_fault(&mut faults, &request(Verb::Get, "status", None)),
            None
        );
        assert_eq!(hits(&mut faults, 2), [None, Some(FaultKind::InternalError)]);
    }

    #[test]
    fn a_gated_fault_that_passes_leaves_the_request_to_the_next_fault() {
        let mut faults = vec![Fault::conflict(u32::MAX).every(2), Fault::internal_error(1)];
        assert_eq!(
            hits(&mut faults, 3),
            [
                Some(FaultKind::InternalError),
                Some(FaultKind::Conflict),
                None
            ]
        );
    }

    #[test]
    fn a_rate_is_reproducible_from_its_seed_and_close_to_the_rate() {
        let run = |seed| hits(&mut vec![Fault::conflict(u32::MAX).rate(0.2, seed)], 5000);
        let first = run(7);
        assert_eq!(first, run(7), "same seed, same hits");
        assert_ne!(first, run(8), "another seed, other hits");
        let hit = first.iter().filter(|h| h.is_some()).count();
        // 5000 draws at 20%: the standard deviation is about 28.
        assert!((800..=1200).contains(&hit), "{hit} hits of 5000 at 20%");
        assert!(
            hits(&mut vec![Fault::conflict(5).rate(0.0, 1)], 100)
                .iter()
                .all(Option::is_none)
        );
        assert_eq!(
            hits(&mut vec![Fault::conflict(5).rate(1.0, 1)], 6)
                .iter()
                .filter(|h| h.is_some())
                .count(),
            5
        );
    }
}
