//! Where the operator's credentials stand, in the words status, events,
//! metrics and logs use: which source, what state, why there is no key.

use jiff::Timestamp;

/// Which source the operator's credentials come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SourceKind {
    /// `ALIBABA_CLOUD_ACCESS_KEY_ID` and friends.
    Environment,
    /// RRSA: STS `AssumeRoleWithOIDC`.
    Rrsa,
    /// The ECS instance RAM role.
    EcsRamRole,
    /// A tenant's RAM role, assumed with STS AssumeRole (RamRoleSelector).
    AssumedRole,
}

impl SourceKind {
    /// A short name for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Environment => "environment",
            Self::Rrsa => "rrsa",
            Self::EcsRamRole => "ecs-ram-role",
            Self::AssumedRole => "assumed-role",
        }
    }
}

impl std::fmt::Display for SourceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why [`super::OperatorCredentials::current`] has no key to give.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// No operator-level source is configured.
    #[error(
        "no operator-level credentials are configured: give the resource a credentialsSecretRef, or configure the operator with ALIBABA_CLOUD_ACCESS_KEY_ID/ALIBABA_CLOUD_ACCESS_KEY_SECRET, RRSA (ALIBABA_CLOUD_ROLE_ARN, ALIBABA_CLOUD_OIDC_PROVIDER_ARN, ALIBABA_CLOUD_OIDC_TOKEN_FILE) or the ECS instance RAM role (ALIBABA_CLOUD_ECS_METADATA)"
    )]
    NotConfigured,
    /// Never obtained; the last attempt failed.
    #[error("no {provider} credentials could be obtained yet: {last_error}")]
    Unavailable {
        /// The source.
        provider: SourceKind,
        /// The last failure.
        last_error: String,
    },
    /// Obtained once, expired, and not refreshed since.
    #[error(
        "the {provider} credentials expired at {expired_at} and could not be refreshed: {last_error}"
    )]
    Expired {
        /// The source.
        provider: SourceKind,
        /// When they expired.
        expired_at: Timestamp,
        /// The last refresh failure.
        last_error: String,
    },
    /// The first fetch has not finished (only from [`super::OperatorCredentials::try_current`]).
    #[error("the first {provider} credential fetch has not finished yet")]
    Pending {
        /// The source.
        provider: SourceKind,
    },
    /// The refresh task is gone (the runtime is shutting down).
    #[error("the {provider} credential refresh has stopped (the operator is shutting down)")]
    Stopped {
        /// The source.
        provider: SourceKind,
    },
}

/// Where the operator's credentials stand, for status, events and metrics.
/// Holds no secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CredentialStatus {
    /// The configured source, if any.
    pub source: Option<SourceKind>,
    /// The state.
    pub state: CredentialState,
    /// The AccessKey ID in use (not secret).
    pub access_key_id: Option<String>,
    /// When the credentials in use expire (temporary ones only).
    pub expiration: Option<Timestamp>,
    /// When the next refresh is due.
    pub next_refresh: Option<Timestamp>,
    /// Failed refreshes since the last success.
    pub consecutive_failures: u32,
    /// The last failure, without secrets; cleared on success.
    pub last_error: Option<String>,
    /// Successful refreshes so far (a counter for metrics).
    pub refreshes_total: u64,
    /// Failed refreshes so far (a counter for metrics).
    pub failures_total: u64,
}

impl CredentialStatus {
    /// The status of a source that never refreshes (none, or fixed keys):
    /// no key ID, expiry or schedule, nothing counted.
    pub fn never_refreshed(source: Option<SourceKind>, state: CredentialState) -> Self {
        Self {
            source,
            state,
            access_key_id: None,
            expiration: None,
            next_refresh: None,
            consecutive_failures: 0,
            last_error: None,
            refreshes_total: 0,
            failures_total: 0,
        }
    }
}

/// The state of the operator's credentials.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CredentialState {
    /// No source configured.
    NotConfigured,
    /// Long-lived keys from the environment.
    Static,
    /// The first fetch has not finished.
    Pending,
    /// Valid, refreshing on schedule.
    Valid,
    /// Valid, but the last refresh failed (retrying with backoff).
    RefreshFailing,
    /// Expired and not refreshed.
    Expired,
    /// Never obtained; the last attempt failed.
    Unavailable,
}

impl CredentialState {
    /// A short name for logs, events and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotConfigured => "NotConfigured",
            Self::Static => "Static",
            Self::Pending => "Pending",
            Self::Valid => "Valid",
            Self::RefreshFailing => "RefreshFailing",
            Self::Expired => "Expired",
            Self::Unavailable => "Unavailable",
        }
    }
}
