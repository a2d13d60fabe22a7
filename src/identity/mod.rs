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
//!
//! Imports point one way: this module and `cli` use the others; `chain`
//! uses the fetchers' configurations; `cache`, `rrsa` and `imds` use only
//! `fetch` (what one fetch yields, and the HTTP plumbing) and `status` (what
//! callers are told), never this module.

pub mod assume_role;
pub mod cache;
pub mod chain;
pub mod cli;
pub mod fetch;
pub mod imds;
pub mod rrsa;
pub mod status;
pub mod tenant;

use std::sync::Arc;

use jiff::Timestamp;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use cache::{Fetcher, RefreshPolicy};
pub use chain::{ChainError, ChainOptions, SourceSpec};
pub use fetch::{FetchError, TemporaryCredentials};
pub use imds::{ImdsConfig, ImdsFetcher};
pub use rrsa::{RrsaConfig, RrsaFetcher};
pub use status::{CredentialError, CredentialState, CredentialStatus, SourceKind};

use crate::credentials::AccessKey;

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
        /// The identity behind the keys (a role), which ECS counts quota against.
        identity: String,
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
            SourceSpec::Rrsa(config) => {
                Fetcher::Rrsa(RrsaFetcher::new(config).map_err(|e| ChainError::Http {
                    what: "STS",
                    reason: e.to_string(),
                })?)
            }
            SourceSpec::EcsRamRole(config) => {
                Fetcher::Imds(ImdsFetcher::new(config).map_err(|e| ChainError::Http {
                    what: "the metadata service",
                    reason: e.to_string(),
                })?)
            }
        };
        Ok(Self::refreshing(fetcher, policy))
    }

    /// Keeps `fetcher`'s credentials fresh in the background under `policy`.
    pub fn refreshing(fetcher: Fetcher, policy: RefreshPolicy) -> Self {
        let source = fetcher.kind();
        let identity = match &fetcher {
            Fetcher::Rrsa(f) => role_quota_identity(&f.config().role_arn),
            Fetcher::Imds(f) => format!(
                "ecs-ram-role:{}",
                f.config().role_name.as_deref().unwrap_or_default()
            ),
            Fetcher::AssumeRole(f) => role_quota_identity(&f.request().role_arn),
        };
        let (tx, rx) = watch::channel(cache::Snapshot::default());
        let stop = CancellationToken::new();
        tokio::spawn(cache::refresh_loop(
            fetcher,
            source,
            tx,
            policy,
            stop.clone(),
        ));
        Self::wrap(Inner::Refreshing {
            source,
            identity,
            rx,
            stop,
        })
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

    /// Whose quota requests signed with `key` (from [`Self::try_current`])
    /// count against: the role behind temporary keys (so the pace outlives
    /// each refresh's new key), the key itself for static keys. Never a label.
    pub fn quota_identity(&self, key: &AccessKey) -> String {
        match &*self.inner {
            Inner::Refreshing { identity, .. } => identity.clone(),
            _ => key_quota_identity(key),
        }
    }

    /// The service's code of the last failed fetch (`NoPermission`), if the
    /// last fetch failed with one.
    pub fn last_error_code(&self) -> Option<String> {
        match &*self.inner {
            Inner::Refreshing { rx, .. } => rx.borrow().last_error_code.clone(),
            _ => None,
        }
    }

    /// Where the credentials stand now.
    pub fn status(&self) -> CredentialStatus {
        self.status_at(Timestamp::now())
    }

    /// Where the credentials stand at `now`.
    pub fn status_at(&self, now: Timestamp) -> CredentialStatus {
        match &*self.inner {
            Inner::None => CredentialStatus::never_refreshed(None, CredentialState::NotConfigured),
            Inner::Static(key) => CredentialStatus {
                access_key_id: Some(key.id.clone()),
                ..CredentialStatus::never_refreshed(
                    Some(SourceKind::Environment),
                    CredentialState::Static,
                )
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

impl assume_role::CallerKey for OperatorCredentials {
    fn caller_key(&self) -> futures::future::BoxFuture<'_, Result<AccessKey, String>> {
        Box::pin(async move { self.current().await.map_err(|e| e.to_string()) })
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

/// The pacing scope's identity for a long-lived key: the key itself (whose
/// quota it is). Never a label or a log field.
pub fn key_quota_identity(key: &AccessKey) -> String {
    format!("key:{}", key.id)
}

/// The pacing scope's identity for a role's temporary keys: the role, so the
/// pace outlives each refresh's new key. Never a label or a log field.
pub fn role_quota_identity(role_arn: &str) -> String {
    format!("role:{role_arn}")
}
