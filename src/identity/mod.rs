//! Operator-level identity: the credentials the controller uses for
//! resources without their own Secret, from the first configured source in
//! the official SDKs' order (environment keys, RRSA, ECS instance RAM role),
//! with temporary credentials refreshed in the background.
//!
//! ```text
//! environment ──chain::resolve (pure)──▶ SourceSpec ──▶ OperatorCredentials
//!                                                         │ Static(AccessKey)
//!                                                         │ Refreshing: cache::refresh_loop
//!                                                         │     ├─ rrsa::RrsaFetcher  (STS AssumeRoleWithOIDC)
//!                                                         │     └─ imds::ImdsFetcher  (100.100.100.200, IMDSv2)
//!                                                         ▼
//!                        controller: current().await → AccessKey, status() → CredentialStatus
//! ```
//!
//! A resource's own Secret still wins over all of this: that choice is the
//! controller's, which asks [`OperatorCredentials::current`] only for
//! resources without `credentialsSecretRef`.

pub mod cache;
pub mod chain;
pub mod cli;
pub mod imds;
pub mod rrsa;

use std::sync::{Arc, Once};
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use cache::RefreshPolicy;
pub use chain::{ChainError, ChainOptions, SourceSpec};
pub use imds::{ImdsConfig, ImdsFetcher};
pub use rrsa::{RrsaConfig, RrsaFetcher};

use crate::credentials::AccessKey;

/// The most characters of an error message kept (status, events, logs).
const MAX_MESSAGE_CHARS: usize = 512;

/// Credentials with an expiry (STS or the instance role).
#[derive(Clone, Debug)]
pub struct TemporaryCredentials {
    /// The key, with its security token.
    pub key: AccessKey,
    /// When STS stops accepting it.
    pub expiration: Timestamp,
}

/// Which source the operator's credentials come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SourceKind {
    /// `ALIBABA_CLOUD_ACCESS_KEY_ID` and friends.
    Environment,
    /// RRSA: STS `AssumeRoleWithOIDC`.
    Rrsa,
    /// The ECS instance RAM role.
    EcsRamRole,
}

impl SourceKind {
    /// A short name for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Environment => "environment",
            Self::Rrsa => "rrsa",
            Self::EcsRamRole => "ecs-ram-role",
        }
    }
}

impl std::fmt::Display for SourceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why one fetch of temporary credentials failed. Messages hold no secret,
/// token or key material.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// The projected OIDC token could not be read.
    #[error(
        "cannot read the OIDC token file {path}: {reason} (is the service account token projected into the pod? ACK's RRSA webhook mounts it)"
    )]
    TokenFile {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The service could not be reached or its answer was cut short.
    #[error("{service} could not be reached: {message}")]
    Transport {
        /// Which service.
        service: &'static str,
        /// What failed.
        message: String,
    },
    /// The service answered with an error body.
    #[error(
        "{service} answered HTTP {http_status} {code}: {message}{}",
        .request_id.as_ref().map(|id| format!(" (request ID {id})")).unwrap_or_default()
    )]
    Service {
        /// Which service.
        service: &'static str,
        /// HTTP status.
        http_status: u16,
        /// The error code (`AuthenticationFail.OIDCToken.Expired`).
        code: String,
        /// The service's message, redacted and bounded.
        message: String,
        /// The request ID, for support tickets.
        request_id: Option<String>,
    },
    /// An answer that is not what the service sends.
    #[error("{service} answered with something else than expected: {message}")]
    InvalidResponse {
        /// Which service.
        service: &'static str,
        /// What was wrong.
        message: String,
    },
    /// The metadata service failed (unreachable, refused, no role).
    #[error("ECS metadata service: {message}")]
    Metadata {
        /// What failed.
        message: String,
    },
}

/// Why [`OperatorCredentials::current`] has no key to give.
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
    /// The first fetch has not finished (only from [`OperatorCredentials::try_current`]).
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

/// What fetches temporary credentials.
#[derive(Clone, Debug)]
pub enum Fetcher {
    /// RRSA.
    Rrsa(RrsaFetcher),
    /// The instance role.
    Imds(ImdsFetcher),
}

impl Fetcher {
    /// One fetch.
    pub async fn fetch(&self) -> Result<TemporaryCredentials, FetchError> {
        match self {
            Self::Rrsa(f) => f.fetch().await,
            Self::Imds(f) => f.fetch().await,
        }
    }

    /// Which source this is.
    pub fn kind(&self) -> SourceKind {
        match self {
            Self::Rrsa(_) => SourceKind::Rrsa,
            Self::Imds(_) => SourceKind::EcsRamRole,
        }
    }
}

/// The operator's credentials: cheap to clone, shared by every reconcile.
/// The background refresh stops when the last clone is dropped.
#[derive(Clone, Debug)]
pub struct OperatorCredentials {
    inner: Arc<Inner>,
}

#[derive(Debug)]
enum Inner {
    None,
    Static(AccessKey),
    Refreshing {
        source: SourceKind,
        rx: watch::Receiver<cache::Snapshot>,
        stop: CancellationToken,
    },
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Self::Refreshing { stop, .. } = self {
            stop.cancel();
        }
    }
}

impl OperatorCredentials {
    /// Selects the source from the process environment and starts it.
    /// Must run inside a Tokio runtime (temporary credentials are fetched by
    /// a background task).
    pub fn from_env(options: &ChainOptions) -> Result<Self, ChainError> {
        Self::from_lookup(|name| std::env::var(name).ok(), options)
    }

    /// Like [`OperatorCredentials::from_env`], with `lookup` standing in for
    /// the environment.
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
        options: &ChainOptions,
    ) -> Result<Self, ChainError> {
        let spec = chain::resolve(lookup, options, Timestamp::now())?;
        Self::start(spec, options.refresh)
    }

    /// Starts `spec`: static keys as they are, temporary ones with a
    /// background refresh under `policy`.
    pub fn start(spec: SourceSpec, policy: RefreshPolicy) -> Result<Self, ChainError> {
        let fetcher = match spec {
            SourceSpec::None => return Ok(Self::wrap(Inner::None)),
            SourceSpec::Environment(key) => return Ok(Self::wrap(Inner::Static(key))),
            SourceSpec::Rrsa(config) => Fetcher::Rrsa(RrsaFetcher::new(config)?),
            SourceSpec::EcsRamRole(config) => Fetcher::Imds(ImdsFetcher::new(config)?),
        };
        Ok(Self::refreshing(fetcher, policy))
    }

    /// Keeps `fetcher`'s credentials fresh in the background under `policy`.
    pub fn refreshing(fetcher: Fetcher, policy: RefreshPolicy) -> Self {
        let source = fetcher.kind();
        let (tx, rx) = watch::channel(cache::Snapshot::default());
        let stop = CancellationToken::new();
        tokio::spawn(cache::refresh_loop(
            fetcher,
            source,
            tx,
            policy,
            stop.clone(),
        ));
        Self::wrap(Inner::Refreshing { source, rx, stop })
    }

    /// Fixed keys (tests, and callers that resolved keys themselves).
    pub fn fixed(key: AccessKey) -> Self {
        Self::wrap(Inner::Static(key))
    }

    /// No operator-level credentials.
    pub fn none() -> Self {
        Self::wrap(Inner::None)
    }

    fn wrap(inner: Inner) -> Self {
        Self {
            inner: Arc::new(inner),
        }
    }

    /// The configured source, if any.
    pub fn source(&self) -> Option<SourceKind> {
        match &*self.inner {
            Inner::None => None,
            Inner::Static(_) => Some(SourceKind::Environment),
            Inner::Refreshing { source, .. } => Some(*source),
        }
    }

    /// The key to sign with now. Returns at once, except before the first
    /// fetch has finished, when it waits for that fetch (bounded by its
    /// timeouts). Old credentials are returned while a refresh is failing,
    /// until they expire.
    pub async fn current(&self) -> Result<AccessKey, CredentialError> {
        let (source, rx) = match &*self.inner {
            Inner::None => return Err(CredentialError::NotConfigured),
            Inner::Static(key) => return Ok(key.clone()),
            Inner::Refreshing { source, rx, .. } => (*source, rx),
        };
        let mut rx = rx.clone();
        if rx.wait_for(|s| s.attempted).await.is_err() {
            return Err(CredentialError::Stopped { provider: source });
        }
        match cache::available(&rx.borrow(), source, Timestamp::now()) {
            cache::Available::Key(key) => Ok(key),
            cache::Available::Error(err) => Err(err),
            cache::Available::Wait => Err(CredentialError::Stopped { provider: source }),
        }
    }

    /// Like [`OperatorCredentials::current`], but never waits: before the
    /// first fetch has finished it returns [`CredentialError::Pending`]. For a
    /// reconcile that would rather requeue than hold a worker.
    pub fn try_current(&self) -> Result<AccessKey, CredentialError> {
        match &*self.inner {
            Inner::None => Err(CredentialError::NotConfigured),
            Inner::Static(key) => Ok(key.clone()),
            Inner::Refreshing { source, rx, .. } => {
                match cache::available(&rx.borrow(), *source, Timestamp::now()) {
                    cache::Available::Key(key) => Ok(key),
                    cache::Available::Error(err) => Err(err),
                    cache::Available::Wait => Err(CredentialError::Pending { provider: *source }),
                }
            }
        }
    }

    /// Where the credentials stand now.
    pub fn status(&self) -> CredentialStatus {
        self.status_at(Timestamp::now())
    }

    /// Where the credentials stand at `now`.
    pub fn status_at(&self, now: Timestamp) -> CredentialStatus {
        match &*self.inner {
            Inner::None => CredentialStatus {
                source: None,
                state: CredentialState::NotConfigured,
                access_key_id: None,
                expiration: None,
                next_refresh: None,
                consecutive_failures: 0,
                last_error: None,
                refreshes_total: 0,
                failures_total: 0,
            },
            Inner::Static(key) => CredentialStatus {
                source: Some(SourceKind::Environment),
                state: CredentialState::Static,
                access_key_id: Some(key.id.clone()),
                expiration: None,
                next_refresh: None,
                consecutive_failures: 0,
                last_error: None,
                refreshes_total: 0,
                failures_total: 0,
            },
            Inner::Refreshing { source, rx, .. } => cache::status(&rx.borrow(), *source, now),
        }
    }

    /// Resolves when a fetch finishes (success or failure): for a controller
    /// that turns refresh failures into events, and for tests. `None` for
    /// sources that never refresh.
    pub fn changes(&self) -> Option<CredentialChanges> {
        match &*self.inner {
            Inner::Refreshing { source, rx, .. } => Some(CredentialChanges {
                source: *source,
                rx: rx.clone(),
            }),
            _ => None,
        }
    }
}

/// A stream of "a fetch finished" notifications, from [`OperatorCredentials::changes`].
#[derive(Debug)]
pub struct CredentialChanges {
    source: SourceKind,
    rx: watch::Receiver<cache::Snapshot>,
}

impl CredentialChanges {
    /// Waits for the next finished fetch and returns the status after it;
    /// `None` once the refresh has stopped.
    pub async fn next(&mut self) -> Option<CredentialStatus> {
        self.rx.changed().await.ok()?;
        Some(cache::status(
            &self.rx.borrow_and_update(),
            self.source,
            Timestamp::now(),
        ))
    }
}

/// Installs the ring crypto provider for rustls, once per process.
fn install_crypto_provider() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // NB: fails only when another provider (e.g. the ECS client's) is
        // already installed, which is just as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// An HTTP client with these timeouts and no redirects (a redirect would
/// resend the token elsewhere); `no_proxy` for the link-local metadata service.
fn http_client(
    connect_timeout: Duration,
    request_timeout: Duration,
    no_proxy: bool,
) -> reqwest::Result<reqwest::Client> {
    install_crypto_provider();
    let mut builder = reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .timeout(request_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("copyimage-canceller/", env!("CARGO_PKG_VERSION")));
    if no_proxy {
        builder = builder.no_proxy();
    }
    builder.build()
}

/// A transport failure in words: what failed, where, and why.
fn describe_reqwest(err: &reqwest::Error, host: &str) -> String {
    let what = if err.is_timeout() {
        format!("request to {host} timed out")
    } else if err.is_connect() {
        format!("could not connect to {host}")
    } else {
        format!("request to {host} failed")
    };
    let mut text = what;
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Reads at most `cap` bytes of the body.
async fn read_capped(response: &mut reqwest::Response, cap: usize) -> Result<Vec<u8>, String> {
    if response.content_length().is_some_and(|n| n > cap as u64) {
        return Err(format!("the answer is larger than {cap} bytes"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| format!("the answer was cut short ({e})"))?
    {
        if body.len() + chunk.len() > cap {
            return Err(format!("the answer is larger than {cap} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// `text` with every `sensitive` value replaced, bounded in length.
fn redact(text: &str, sensitive: &[&str]) -> String {
    let mut out = text.to_owned();
    for value in sensitive.iter().filter(|v| v.len() >= 4) {
        out = out.replace(value, "[REDACTED]");
    }
    if out.chars().count() > MAX_MESSAGE_CHARS {
        out = out.chars().take(MAX_MESSAGE_CHARS).collect::<String>() + "…";
    }
    out
}
