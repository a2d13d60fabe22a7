//! Temporary credentials kept fresh in the background: the pure decisions
//! (when to refresh, what a failure changes, what a caller gets) and the
//! task that applies them.
//!
//! ```text
//! refresh task ──fetch──▶ apply(snapshot, result, now) ──▶ sleep until the returned time
//!        │                        │ (pure)
//!        ▼                        ▼
//!   watch::Sender<Snapshot> ──▶ callers: available(snapshot, now) (pure)
//! ```
//!
//! NB: a failed refresh keeps the old credentials in use until they expire;
//! it is retried with backoff and shows in [`CredentialStatus`].

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use rand::Rng;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::assume_role::AssumeRoleFetcher;
use super::fetch::{FetchError, TemporaryCredentials};
use super::imds::ImdsFetcher;
use super::rrsa::RrsaFetcher;
use super::status::{CredentialError, CredentialState, CredentialStatus, SourceKind};
use crate::credentials::AccessKey;
use crate::retry::Backoff;

/// What fetches temporary credentials.
#[derive(Clone, Debug)]
pub enum Fetcher {
    /// RRSA.
    Rrsa(RrsaFetcher),
    /// The instance role.
    Imds(ImdsFetcher),
    /// A tenant's role, assumed from the operator's identity.
    AssumeRole(AssumeRoleFetcher),
}

impl Fetcher {
    /// One fetch.
    pub async fn fetch(&self) -> Result<TemporaryCredentials, FetchError> {
        match self {
            Self::Rrsa(f) => f.fetch().await,
            Self::Imds(f) => f.fetch().await,
            Self::AssumeRole(f) => f.fetch().await,
        }
    }

    /// Which source this is.
    pub fn kind(&self) -> SourceKind {
        match self {
            Self::Rrsa(_) => SourceKind::Rrsa,
            Self::Imds(_) => SourceKind::EcsRamRole,
            Self::AssumeRole(_) => SourceKind::AssumedRole,
        }
    }
}

/// When to refresh, and how to retry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RefreshPolicy {
    /// Refresh this long before `Expiration` (15 minutes, like the SDKs)...
    pub lead: Duration,
    /// ...unless that would use less than half the lifetime; then refresh
    /// after this share of the lifetime, in percent (80).
    pub short_lifetime_percent: u32,
    /// Delays between failed attempts.
    pub backoff: Backoff,
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        Self {
            lead: Duration::from_secs(15 * 60),
            short_lifetime_percent: 80,
            backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(60))
                .expect("1s <= 60s"),
        }
    }
}

/// When credentials obtained at `obtained` and expiring at `expiration`
/// should be replaced. Pure.
///
/// Normally `lead` before expiry; when the lifetime is shorter than twice
/// the lead (STS's 15-minute minimum, tests), after
/// `short_lifetime_percent` of it instead, so short credentials are still
/// used for most of their life and never refreshed in a loop.
pub fn refresh_at(obtained: Timestamp, expiration: Timestamp, policy: &RefreshPolicy) -> Timestamp {
    let lifetime = expiration.duration_since(obtained);
    if lifetime <= SignedDuration::ZERO {
        return obtained;
    }
    let lead = SignedDuration::try_from(policy.lead).unwrap_or(SignedDuration::MAX);
    if lifetime >= lead.checked_mul(2).unwrap_or(SignedDuration::MAX) {
        return expiration - lead;
    }
    let percent = i64::from(policy.short_lifetime_percent.min(100));
    let used = SignedDuration::from_nanos(
        i64::try_from(lifetime.as_nanos() * i128::from(percent) / 100).unwrap_or(i64::MAX),
    );
    obtained + used
}

/// What the refresh task keeps, and what callers read.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// The credentials in use, even when their refresh is failing.
    pub credentials: Option<TemporaryCredentials>,
    /// When they were obtained (local clock).
    pub obtained_at: Option<Timestamp>,
    /// Whether at least one attempt finished.
    pub attempted: bool,
    /// Failures since the last success.
    pub consecutive_failures: u32,
    /// The last failure, in words without secrets; cleared on success.
    pub last_error: Option<String>,
    /// The service's error code of the last failure, when it sent one
    /// (`NoPermission`); cleared on success.
    pub last_error_code: Option<String>,
    /// When the task will try next.
    pub next_refresh: Option<Timestamp>,
    /// Successful fetches so far.
    pub refreshes_total: u64,
    /// Failed fetches so far.
    pub failures_total: u64,
}

/// Records the result of one fetch finished at `now` and returns when to
/// fetch next. Pure (the jitter comes from `rng`).
pub fn apply<R: Rng + ?Sized>(
    snapshot: &mut Snapshot,
    result: Result<TemporaryCredentials, FetchError>,
    now: Timestamp,
    policy: &RefreshPolicy,
    rng: &mut R,
) -> Timestamp {
    snapshot.attempted = true;
    let result = result.and_then(|fresh| {
        if fresh.expiration <= now {
            // Refetching at once would loop; the clock is the likely culprit.
            Err(FetchError::InvalidResponse {
                service: "the credential source",
                message: format!(
                    "the credentials it returned expire at {}, which is not after the local time {now}: check the clock (NTP)",
                    fresh.expiration
                ),
            })
        } else {
            Ok(fresh)
        }
    });
    let next = match result {
        Ok(fresh) => {
            let next = refresh_at(now, fresh.expiration, policy);
            snapshot.credentials = Some(fresh);
            snapshot.obtained_at = Some(now);
            snapshot.consecutive_failures = 0;
            snapshot.last_error = None;
            snapshot.last_error_code = None;
            snapshot.refreshes_total += 1;
            next
        }
        Err(err) => {
            let delay = policy
                .backoff
                .delay(snapshot.consecutive_failures, None, rng);
            snapshot.consecutive_failures = snapshot.consecutive_failures.saturating_add(1);
            snapshot.failures_total += 1;
            snapshot.last_error = Some(err.to_string());
            snapshot.last_error_code = err.code().map(str::to_owned);
            now + delay
        }
    };
    snapshot.next_refresh = Some(next);
    next
}

/// What a caller gets at `now`.
#[derive(Clone, Debug)]
pub enum Available {
    /// Valid credentials.
    Key(AccessKey),
    /// No attempt has finished yet: wait for the first.
    Wait,
    /// None to give.
    Error(CredentialError),
}

/// What a caller gets from `snapshot` at `now`. Pure.
pub fn available(snapshot: &Snapshot, source: SourceKind, now: Timestamp) -> Available {
    match &snapshot.credentials {
        Some(c) if now < c.expiration => Available::Key(c.key.clone()),
        Some(c) => Available::Error(CredentialError::Expired {
            provider: source,
            expired_at: c.expiration,
            last_error: snapshot
                .last_error
                .clone()
                .unwrap_or_else(|| "no refresh has finished since".to_owned()),
        }),
        None if !snapshot.attempted => Available::Wait,
        None => Available::Error(CredentialError::Unavailable {
            provider: source,
            last_error: snapshot.last_error.clone().unwrap_or_default(),
        }),
    }
}

/// The status a controller shows, from `snapshot` at `now`. Pure.
pub fn status(snapshot: &Snapshot, source: SourceKind, now: Timestamp) -> CredentialStatus {
    let state = match (&snapshot.credentials, snapshot.attempted) {
        (None, false) => CredentialState::Pending,
        (None, true) => CredentialState::Unavailable,
        (Some(c), _) if now >= c.expiration => CredentialState::Expired,
        (Some(_), _) if snapshot.consecutive_failures > 0 => CredentialState::RefreshFailing,
        (Some(_), _) => CredentialState::Valid,
    };
    CredentialStatus {
        source: Some(source),
        state,
        access_key_id: snapshot.credentials.as_ref().map(|c| c.key.id.clone()),
        expiration: snapshot.credentials.as_ref().map(|c| c.expiration),
        next_refresh: snapshot.next_refresh,
        consecutive_failures: snapshot.consecutive_failures,
        last_error: snapshot.last_error.clone(),
        refreshes_total: snapshot.refreshes_total,
        failures_total: snapshot.failures_total,
    }
}

/// Fetches, records, sleeps until the next refresh; until `stop`.
pub(super) async fn refresh_loop(
    fetcher: Fetcher,
    source: SourceKind,
    tx: watch::Sender<Snapshot>,
    policy: RefreshPolicy,
    stop: CancellationToken,
) {
    let mut rng: rand::rngs::StdRng = rand::SeedableRng::from_os_rng();
    loop {
        let result = tokio::select! {
            result = fetcher.fetch() => result,
            _ = stop.cancelled() => return,
        };
        let now = Timestamp::now();
        let mut next = now;
        tx.send_modify(|snapshot| {
            next = apply(snapshot, result, now, &policy, &mut rng);
            match (&snapshot.credentials, &snapshot.last_error) {
                (_, Some(err)) => tracing::warn!(
                    source = source.as_str(),
                    failures = snapshot.consecutive_failures,
                    next_attempt = %next,
                    error = %err,
                    "credential refresh failed"
                ),
                (Some(c), None) => tracing::info!(
                    source = source.as_str(),
                    access_key_id = %c.key.id,
                    expiration = %c.expiration,
                    next_refresh = %next,
                    "credentials refreshed"
                ),
                (None, None) => {}
            }
        });
        let wait = next
            .duration_since(Timestamp::now())
            .try_into()
            .unwrap_or(Duration::ZERO);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng as _;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn creds(id: &str, expiration: &str) -> TemporaryCredentials {
        TemporaryCredentials {
            key: AccessKey::new(id, "sec", Some("CAIS".into())),
            expiration: t(expiration),
        }
    }

    fn failure() -> FetchError {
        FetchError::Service {
            service: "STS",
            http_status: 400,
            code: "AuthenticationFail.OIDCToken.Expired".into(),
            message: "The OIDC token has expired.".into(),
            request_id: None,
        }
    }

    #[test]
    fn refresh_at_table() {
        let p = RefreshPolicy::default();
        let rows = [
            // obtained, expiration, refresh at
            (
                "2026-01-01T00:00:00Z",
                "2026-01-01T01:00:00Z",
                "2026-01-01T00:45:00Z",
            ), // 1 h: 15 min early
            (
                "2026-01-01T00:00:00Z",
                "2026-01-01T12:00:00Z",
                "2026-01-01T11:45:00Z",
            ), // 12 h
            (
                "2026-01-01T00:00:00Z",
                "2026-01-01T00:30:00Z",
                "2026-01-01T00:15:00Z",
            ), // exactly twice the lead
            (
                "2026-01-01T00:00:00Z",
                "2026-01-01T00:15:00Z",
                "2026-01-01T00:12:00Z",
            ), // STS minimum: 80%
            (
                "2026-01-01T00:00:00Z",
                "2026-01-01T00:00:10Z",
                "2026-01-01T00:00:08Z",
            ), // tests: 80%
            (
                "2026-01-01T00:00:00Z",
                "2026-01-01T00:00:00Z",
                "2026-01-01T00:00:00Z",
            ), // already expired
            (
                "2026-01-01T00:00:00Z",
                "2025-12-31T23:00:00Z",
                "2026-01-01T00:00:00Z",
            ),
        ];
        for (obtained, expiration, want) in rows {
            assert_eq!(
                refresh_at(t(obtained), t(expiration), &p),
                t(want),
                "{obtained} → {expiration}"
            );
        }
    }

    /// One step of the state machine: (before, result, now) → (after, next attempt).
    #[test]
    fn apply_table() {
        let p = RefreshPolicy {
            backoff: Backoff::new(Duration::from_secs(2), Duration::from_secs(8)).unwrap(),
            ..RefreshPolicy::default()
        };
        let now = t("2026-01-01T00:00:00Z");
        struct Row {
            before: Snapshot,
            result: Result<TemporaryCredentials, FetchError>,
            /// The key held, consecutive failures and whether an error is kept, after.
            after: (Option<&'static str>, u32, bool),
            next_within: (Duration, Duration),
        }
        let failing = Snapshot {
            credentials: Some(creds("old", "2026-01-01T00:10:00Z")),
            attempted: true,
            consecutive_failures: 3,
            last_error: Some("earlier".into()),
            ..Snapshot::default()
        };
        let rows = vec![
            // First success: refresh 15 minutes before a one-hour expiry.
            Row {
                before: Snapshot::default(),
                result: Ok(creds("new", "2026-01-01T01:00:00Z")),
                after: (Some("new"), 0, false),
                next_within: (Duration::from_secs(2700), Duration::from_secs(2700)),
            },
            // First failure: no key, retry within the first backoff ceiling.
            Row {
                before: Snapshot::default(),
                result: Err(failure()),
                after: (None, 1, true),
                next_within: (Duration::ZERO, Duration::from_secs(2)),
            },
            // A failing refresh keeps the old key; the backoff grows to its cap.
            Row {
                before: failing.clone(),
                result: Err(failure()),
                after: (Some("old"), 4, true),
                next_within: (Duration::ZERO, Duration::from_secs(8)),
            },
            // Success after failures clears them.
            Row {
                before: failing,
                result: Ok(creds("new", "2026-01-01T00:00:10Z")),
                after: (Some("new"), 0, false),
                next_within: (Duration::from_secs(8), Duration::from_secs(8)),
            },
            // Credentials already expired on arrival count as a failure.
            Row {
                before: Snapshot::default(),
                result: Ok(creds("stale", "2025-12-31T23:59:59Z")),
                after: (None, 1, true),
                next_within: (Duration::ZERO, Duration::from_secs(2)),
            },
        ];
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for (i, row) in rows.into_iter().enumerate() {
            let mut s = row.before;
            let next = apply(&mut s, row.result, now, &p, &mut rng);
            let in_secs = Duration::try_from(next.duration_since(now)).unwrap();
            assert!(
                (row.next_within.0..=row.next_within.1).contains(&in_secs),
                "row {i}: next in {in_secs:?}"
            );
            assert_eq!(s.next_refresh, Some(next), "row {i}");
            assert!(s.attempted, "row {i}");
            assert_eq!(
                s.credentials.as_ref().map(|c| c.key.id.as_str()),
                row.after.0,
                "row {i}"
            );
            assert_eq!(s.consecutive_failures, row.after.1, "row {i}");
            assert_eq!(s.last_error.is_some(), row.after.2, "row {i}");
        }
    }

    #[test]
    fn available_and_status_table() {
        let now = t("2026-01-01T00:00:00Z");
        let valid = creds("k", "2026-01-01T00:00:01Z");
        let expired = creds("k", "2026-01-01T00:00:00Z");
        // Attempted, holding `credentials`, after `failures` failures in a row (each "boom").
        let tried = |credentials, failures| Snapshot {
            attempted: true,
            credentials,
            consecutive_failures: failures,
            last_error: (failures > 0).then(|| "boom".into()),
            ..Snapshot::default()
        };
        let rows: Vec<(Snapshot, &str, CredentialState)> = vec![
            (Snapshot::default(), "wait", CredentialState::Pending),
            (
                tried(None, 1),
                "error: no rrsa credentials could be obtained yet: boom",
                CredentialState::Unavailable,
            ),
            (
                tried(Some(valid.clone()), 0),
                "key k",
                CredentialState::Valid,
            ),
            (
                tried(Some(valid), 2),
                "key k",
                CredentialState::RefreshFailing,
            ),
            (
                tried(Some(expired), 2),
                "error: the rrsa credentials expired at 2026-01-01T00:00:00Z and could not be refreshed: boom",
                CredentialState::Expired,
            ),
        ];
        for (i, (snapshot, want, state)) in rows.into_iter().enumerate() {
            let got = match available(&snapshot, SourceKind::Rrsa, now) {
                Available::Key(k) => format!("key {}", k.id),
                Available::Wait => "wait".to_owned(),
                Available::Error(e) => format!("error: {e}"),
            };
            assert_eq!(got, want, "row {i}");
            assert_eq!(
                status(&snapshot, SourceKind::Rrsa, now).state,
                state,
                "row {i}"
            );
        }
    }
}
