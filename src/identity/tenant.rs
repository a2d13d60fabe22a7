//! Tenants' role sessions: one background-refreshed session per (role,
//! ExternalId, session policy, session name), assumed from the operator's
//! identity and shared by every namespace (and resource) that uses it.
//!
//! ```text
//! RamRoleSelector ──AssumeRoleRequest──▶ TenantRoles::session ──▶ RoleSession (OperatorCredentials,
//!                                              │ first use starts      Refreshing: cache::refresh_loop
//!                                              │ the refresh                └─ AssumeRoleFetcher)
//! selectors gone ──TenantRoles::retain──▶ session dropped, refresh stopped
//! ```
//!
//! NB: the refresh is the same machinery as RRSA's (`cache`): sessions are
//! renewed ahead of expiry and a failing AssumeRole backs off, so STS sees
//! one call per session lifetime, not one per request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::Url;

use super::OperatorCredentials;
use super::assume_role::{AssumeRoleFetcher, AssumeRoleRequest, CallerKey};
use super::cache::{Fetcher, RefreshPolicy};
use super::status::CredentialError;
use crate::credentials::AccessKey;

/// One tenant role's session: credentials kept fresh in the background.
/// Cheap to clone; the refresh stops when [`TenantRoles`] drops it and the
/// last clone is gone.
#[derive(Clone, Debug)]
pub struct RoleSession {
    request: AssumeRoleRequest,
    credentials: OperatorCredentials,
}

impl RoleSession {
    /// What is assumed.
    pub fn request(&self) -> &AssumeRoleRequest {
        &self.request
    }

    /// The key to sign with now, never waiting: before the first AssumeRole
    /// has answered, [`CredentialError::Pending`].
    pub fn try_current(&self) -> Result<AccessKey, CredentialError> {
        self.credentials.try_current()
    }

    /// Whose quota the session's requests count against: the role.
    pub fn quota_identity(&self) -> String {
        super::role_quota_identity(&self.request.role_arn)
    }

    /// Where the session stands (state, expiry, last error, never a secret).
    pub fn status(&self) -> super::CredentialStatus {
        self.credentials.status()
    }

    /// The STS code of the last failed AssumeRole, while it is failing.
    pub fn last_error_code(&self) -> Option<String> {
        self.credentials.last_error_code()
    }
}

/// Every tenant role session of this operator.
#[derive(Debug)]
pub struct TenantRoles {
    caller: Arc<dyn CallerKey>,
    endpoint: Url,
    policy: RefreshPolicy,
    connect_timeout: Duration,
    request_timeout: Duration,
    sessions: Mutex<HashMap<AssumeRoleRequest, RoleSession>>,
}

impl TenantRoles {
    /// Sessions assumed with `caller`'s key at the STS `endpoint`, refreshed
    /// under `policy`.
    pub fn new(
        caller: OperatorCredentials,
        endpoint: Url,
        policy: RefreshPolicy,
        connect_timeout: Duration,
        request_timeout: Duration,
    ) -> Self {
        Self {
            caller: Arc::new(caller),
            endpoint,
            policy,
            connect_timeout,
            request_timeout,
            sessions: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<AssumeRoleRequest, RoleSession>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The session for `request`, started (first AssumeRole in the
    /// background) on first use. Must run inside a Tokio runtime.
    pub fn session(&self, request: &AssumeRoleRequest) -> Result<RoleSession, String> {
        let mut sessions = self.lock();
        if let Some(session) = sessions.get(request) {
            return Ok(session.clone());
        }
        let fetcher = AssumeRoleFetcher::new(
            request.clone(),
            self.endpoint.clone(),
            self.caller.clone(),
            self.connect_timeout,
            self.request_timeout,
        )
        .map_err(|e| format!("cannot build the STS client: {e}"))?;
        let session = RoleSession {
            request: request.clone(),
            credentials: OperatorCredentials::refreshing(Fetcher::AssumeRole(fetcher), self.policy),
        };
        sessions.insert(request.clone(), session.clone());
        Ok(session)
    }

    /// Drops (and stops refreshing) every session `keep` says no to: those
    /// no selector asks for any more.
    pub fn retain(&self, keep: impl Fn(&AssumeRoleRequest) -> bool) {
        self.lock().retain(|request, _| keep(request));
    }

    /// How many sessions are kept.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no session is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::rrsa::{RrsaConfig, RrsaFetcher};

    fn request(role: &str, external_id: Option<&str>) -> AssumeRoleRequest {
        AssumeRoleRequest {
            role_arn: role.into(),
            external_id: external_id.map(Into::into),
            session_name: "cic.images".into(),
            policy: crate::role_selector::SESSION_POLICY.into(),
            duration: Duration::from_secs(900),
        }
    }

    /// The pace is keyed by whom ECS counts the quota against: the role
    /// behind temporary keys, the key itself for long-lived ones.
    #[tokio::test]
    async fn quota_identity_is_the_role_behind_temporary_keys() {
        let key = AccessKey::new("STS.Temp1", "s", Some("t".into()));
        assert_eq!(
            OperatorCredentials::fixed(AccessKey::new("LTAI5tLong", "s", None))
                .quota_identity(&AccessKey::new("LTAI5tLong", "s", None)),
            "key:LTAI5tLong"
        );
        let rrsa = RrsaFetcher::new(RrsaConfig {
            role_arn: "acs:ram::1:role/operator".into(),
            oidc_provider_arn: "acs:ram::1:oidc-provider/p".into(),
            token_file: "/nonexistent/token".into(),
            session_name: "s1".into(),
            endpoint: "http://127.0.0.1:9".parse().unwrap(),
            duration: Duration::from_secs(900),
            connect_timeout: Duration::from_millis(100),
            request_timeout: Duration::from_millis(100),
        })
        .unwrap();
        let operator =
            OperatorCredentials::refreshing(Fetcher::Rrsa(rrsa), RefreshPolicy::default());
        assert_eq!(
            operator.quota_identity(&key),
            "role:acs:ram::1:role/operator"
        );

        let roles = TenantRoles::new(
            operator,
            "http://127.0.0.1:9".parse().unwrap(),
            RefreshPolicy::default(),
            Duration::from_millis(100),
            Duration::from_millis(100),
        );
        let a = roles.session(&request("acs:ram::1:role/a", None)).unwrap();
        assert_eq!(a.quota_identity(), "role:acs:ram::1:role/a");
        // One session per (role, ExternalId, policy, session name), shared.
        roles.session(&request("acs:ram::1:role/a", None)).unwrap();
        roles
            .session(&request("acs:ram::1:role/a", Some("ext-1")))
            .unwrap();
        assert_eq!(roles.len(), 2);
        roles.retain(|r| r.external_id.is_some());
        assert_eq!(roles.len(), 1);
    }
}
