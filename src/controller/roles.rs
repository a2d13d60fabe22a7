//! Tenant roles in the controller: which identity signs a resource (from the
//! RamRoleSelector and Namespace caches), the role session a selector gets,
//! and the status each selector shows (written by [`write_selector_statuses`]).
//!
//! ```text
//! selector cache ─┐
//! namespace cache ┴─▶ Tenancy::resolve(resource) ──▶ Secret | Role(session) | Operator
//!                                                   | Ambiguous (AmbiguousRole) | NoRole (AwaitingCredentials)
//! every selector ──▶ TenantRoles::session (started eagerly) ──▶ selector_status (pure) ──▶ status write
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::conditions::{self, status as cstatus, types};
use crate::identity::assume_role::AssumeRoleRequest;
use crate::identity::tenant::{RoleSession, TenantRoles};
use crate::identity::{CredentialState, CredentialStatus};
use crate::resource::CopyImageCancellation;
use crate::role_selector::{self, Identity, RamRoleSelector, RamRoleSelectorStatus};

/// Condition reasons of a RamRoleSelector.
pub mod reasons {
    /// The operator assumed the role.
    pub const ROLE_ASSUMED: &str = "RoleAssumed";
    /// The first AssumeRole has not answered yet.
    pub const PENDING: &str = "Pending";
    /// AssumeRole failed without an STS code (STS unreachable, the operator
    /// has no identity of its own).
    pub const ASSUME_ROLE_FAILED: &str = "AssumeRoleFailed";
}

/// How often selector statuses are compared with the sessions' state.
const STATUS_EVERY: Duration = Duration::from_secs(2);

/// What the controller knows about tenant roles, shared by every reconcile.
pub struct Tenancy {
    /// Every RamRoleSelector (cluster-scoped).
    pub selectors: Store<RamRoleSelector>,
    /// Every Namespace (for its labels).
    pub namespaces: Store<Namespace>,
    /// The role sessions.
    pub roles: TenantRoles,
    /// `--require-namespace-role`: never sign with the operator's own identity.
    pub require_namespace_role: bool,
}

/// Which identity signs a resource, resolved against the caches.
#[derive(Debug)]
pub enum Resolved {
    /// Its own Secret.
    Secret,
    /// A tenant role's session, from the selector named.
    Role {
        /// The selector's name.
        selector: String,
        /// The session.
        session: RoleSession,
    },
    /// The operator's own identity.
    Operator,
    /// Two selectors match: the message names both.
    Ambiguous(String),
    /// Nothing may sign it: the message says what an administrator must create.
    Missing(String),
}

/// The AssumeRole request a selector stands for: its role, ExternalId and
/// duration, the session policy, and a session name naming the tenant.
pub fn request_for(selector: &RamRoleSelector) -> AssumeRoleRequest {
    AssumeRoleRequest {
        role_arn: selector.spec.role_arn.clone(),
        external_id: selector.spec.external_id.clone(),
        session_name: role_selector::session_name(selector),
        policy: role_selector::SESSION_POLICY.to_owned(),
        duration: Duration::from_secs(selector.spec.duration_seconds()),
    }
}

impl Tenancy {
    /// The labels of namespace `name`, as cached (none when it is not).
    fn labels(&self, name: &str) -> BTreeMap<String, String> {
        self.namespaces
            .get(&ObjectRef::new(name))
            .and_then(|ns| ns.metadata.labels.clone())
            .unwrap_or_default()
    }

    /// Which identity signs `obj` in `namespace`.
    pub fn resolve(&self, obj: &CopyImageCancellation, namespace: &str) -> Resolved {
        // NB: a resource with its own Secret never needs the caches, so it
        // is answered before they are read; `choose` then sees no Secret.
        if obj.spec.credentials_secret_ref.is_some() {
            return Resolved::Secret;
        }
        let selectors = self.selectors.state();
        let labels = self.labels(namespace);
        match role_selector::choose(
            false,
            namespace,
            &labels,
            selectors.iter().map(|s| s.as_ref()),
            self.require_namespace_role,
        ) {
            Identity::Secret => Resolved::Secret,
            Identity::Operator => Resolved::Operator,
            Identity::Ambiguous(a, b) => Resolved::Ambiguous(format!(
                "RamRoleSelectors {a} and {b} both select namespace {namespace}; a cluster \
                 administrator must change them so that at most one selects it \
                 (kubectl get ramroleselectors)"
            )),
            Identity::NoRole => Resolved::Missing(no_role_message(namespace)),
            Identity::Role(selector) => {
                let name = selector.name_any();
                match self.roles.session(&request_for(selector)) {
                    Ok(session) => Resolved::Role {
                        selector: name,
                        session,
                    },
                    Err(why) => Resolved::Missing(format!(
                        "the RAM role {} of RamRoleSelector {name} cannot be assumed: {why}",
                        selector.spec.role_arn
                    )),
                }
            }
        }
    }
}

/// What a resource waiting for a role is told when none matches and the
/// operator's own identity is turned off.
pub fn no_role_message(namespace: &str) -> String {
    format!(
        "no RamRoleSelector selects namespace {namespace}, and this operator runs with \
         --require-namespace-role (it never signs with its own identity): a cluster administrator \
         must create a RamRoleSelector whose namespaceSelector selects {namespace} (names: \
         [{namespace}], or a labelSelector matching its labels) with a RAM role the operator may \
         assume; or give this resource a credentialsSecretRef"
    )
}

/// What a resource waiting for a role that cannot be assumed is told: the
/// role, the selector, and STS's answer (with its code).
pub fn role_failure_message(selector: &str, role_arn: &str, error: &str) -> String {
    format!(
        "the RAM role {role_arn} (RamRoleSelector {selector}) could not be assumed: {error}; \
         nothing is sent and no attempt is counted until it can (kubectl get ramroleselector {selector})"
    )
}

/// What an administrator should check for an STS code.
pub fn hint(code: Option<&str>) -> &'static str {
    match code {
        Some("NoPermission") | Some("NoPermission.AssumeRole") => {
            "the role's trust policy must name the operator's identity (its RRSA role, or its RAM \
             user) as a principal, with the ExternalId condition matching spec.externalId, and \
             the operator's identity needs sts:AssumeRole (AliyunSTSAssumeRoleAccess)"
        }
        Some("EntityNotExist.Role") => "the role does not exist: check spec.roleArn",
        Some(code) if code.starts_with("InvalidParameter") => {
            "STS refused a parameter: check spec.externalId and spec.sessionDurationSeconds \
             (at most the role's MaxSessionDuration)"
        }
        Some(code) if code.starts_with("Throttling") => {
            "STS throttled the operator; it retries with backoff"
        }
        Some(_) => "see STS's message",
        None => {
            "STS could not be reached, or the operator has no identity of its own to assume the role with"
        }
    }
}

/// The status a selector shows, from its session's state at `now`. Pure.
pub fn selector_status(
    selector: &RamRoleSelector,
    matched_namespaces: i32,
    session: &CredentialStatus,
    code: Option<&str>,
    now: Timestamp,
) -> RamRoleSelectorStatus {
    let previous = selector.status.clone().unwrap_or_default();
    let generation = selector.metadata.generation;
    let arn = &selector.spec.role_arn;
    let (status, reason, message, error_code) = match session.state {
        CredentialState::Valid | CredentialState::RefreshFailing => (
            cstatus::TRUE,
            reasons::ROLE_ASSUMED.to_owned(),
            format!(
                "The operator assumed {arn} (session {}); the session is refreshed before it expires",
                role_selector::session_name(selector)
            ),
            None,
        ),
        CredentialState::Pending | CredentialState::NotConfigured | CredentialState::Static => (
            cstatus::FALSE,
            reasons::PENDING.to_owned(),
            format!("The operator has not assumed {arn} yet"),
            None,
        ),
        CredentialState::Unavailable | CredentialState::Expired => {
            let error = session.last_error.as_deref().unwrap_or("no error recorded");
            (
                cstatus::FALSE,
                code.map_or_else(
                    || reasons::ASSUME_ROLE_FAILED.to_owned(),
                    conditions::sanitize_reason,
                ),
                super::decide::bounded(&format!(
                    "The operator could not assume {arn}: {error}. {}",
                    hint(code)
                )),
                code.map(str::to_owned),
            )
        }
    };
    let mut conditions = previous.conditions;
    conditions::set(
        &mut conditions,
        types::READY,
        status,
        &reason,
        &message,
        generation,
        now,
    );
    let session_expiration = match session.state {
        CredentialState::Valid | CredentialState::RefreshFailing => {
            session.expiration.map(|t| t.to_string())
        }
        _ => None,
    };
    RamRoleSelectorStatus {
        observed_generation: generation,
        matched_namespaces,
        error_code,
        session_expiration,
        conditions,
    }
}

/// Whether two statuses say the same, transition times aside (a status is
/// written only when what it says changed).
fn same(a: Option<&RamRoleSelectorStatus>, b: &RamRoleSelectorStatus) -> bool {
    let Some(a) = a else { return false };
    let strip = |s: &RamRoleSelectorStatus| {
        let mut s = s.clone();
        for c in &mut s.conditions {
            c.last_transition_time =
                k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::UNIX_EPOCH);
        }
        s
    };
    strip(a) == strip(b)
}

/// Keeps every selector's session started and its status current (written
/// by `field_manager`), and drops the sessions no selector asks for, until `stop`.
pub async fn write_selector_statuses(
    client: kube::Client,
    tenancy: Arc<Tenancy>,
    field_manager: &'static str,
    stop: CancellationToken,
) {
    let api: Api<RamRoleSelector> = Api::all(client);
    loop {
        // NB: a bounded wait, looked at again each round: kube-runtime's
        // `wait_until_ready` wakes only the latest of several waiters.
        let ready = tokio::time::timeout(STATUS_EVERY, tenancy.selectors.wait_until_ready())
            .await
            .is_ok_and(|r| r.is_ok());
        if ready {
            let selectors = tenancy.selectors.state();
            let requests: Vec<AssumeRoleRequest> =
                selectors.iter().map(|s| request_for(s)).collect();
            tenancy.roles.retain(|r| requests.contains(r));
            let namespaces = tenancy.namespaces.state();
            for (selector, request) in selectors.iter().zip(&requests) {
                if selector.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                let session = match tenancy.roles.session(request) {
                    Ok(session) => session,
                    Err(err) => {
                        warn!(selector = %selector.name_any(), error = %err, "cannot start the role session");
                        continue;
                    }
                };
                let matched = namespaces
                    .iter()
                    .filter(|ns| {
                        selector.spec.namespace_selector.matches(
                            &ns.name_any(),
                            ns.metadata.labels.as_ref().unwrap_or(&BTreeMap::new()),
                        )
                    })
                    .count();
                let status = selector_status(
                    selector,
                    i32::try_from(matched).unwrap_or(i32::MAX),
                    &session.status(),
                    session.last_error_code().as_deref(),
                    Timestamp::now(),
                );
                if same(selector.status.as_ref(), &status) {
                    continue;
                }
                let patch = serde_json::json!({
                    "apiVersion": RamRoleSelector::api_version(&()),
                    "kind": RamRoleSelector::kind(&()),
                    "metadata": {"name": selector.name_any(), "uid": selector.uid()},
                    "status": status,
                });
                let params = PatchParams::apply(field_manager).force();
                match api
                    .patch_status(&selector.name_any(), &params, &Patch::Apply(&patch))
                    .await
                {
                    Ok(_) => debug!(selector = %selector.name_any(), "selector status written"),
                    Err(err) => {
                        warn!(selector = %selector.name_any(), error = %err, "could not write the selector's status")
                    }
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(STATUS_EVERY) => {}
            _ = stop.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::SourceKind;
    use crate::role_selector::{NamespaceSelector, RamRoleSelectorSpec};

    fn selector() -> RamRoleSelector {
        let mut s = RamRoleSelector::new(
            "images",
            RamRoleSelectorSpec {
                role_arn: "acs:ram::1234567890123456:role/images".into(),
                namespace_selector: NamespaceSelector {
                    names: vec!["images".into()],
                    label_selector: None,
                },
                external_id: None,
                session_duration_seconds: None,
            },
        );
        s.metadata.generation = Some(3);
        s
    }

    fn session(state: CredentialState, error: Option<&str>) -> CredentialStatus {
        CredentialStatus {
            expiration: Some("2026-12-06T11:00:00Z".parse().unwrap()),
            last_error: error.map(Into::into),
            ..CredentialStatus::never_refreshed(Some(SourceKind::AssumedRole), state)
        }
    }

    #[test]
    fn selector_status_table() {
        let now: Timestamp = "2026-12-06T10:00:00Z".parse().unwrap();
        let refused = "STS answered HTTP 403 NoPermission: You are not authorized to do this action. You should be authorized by RAM.";
        // (state, last error, code) → (Ready status, reason, error code, expiration shown, message part)
        let rows = [
            (
                session(CredentialState::Valid, None),
                None,
                ("True", "RoleAssumed", None, true, "session cic.images"),
            ),
            (
                session(CredentialState::Pending, None),
                None,
                ("False", "Pending", None, false, "not assumed"),
            ),
            (
                session(CredentialState::Unavailable, Some(refused)),
                Some("NoPermission"),
                (
                    "False",
                    "NoPermission",
                    Some("NoPermission"),
                    false,
                    "trust policy must name the operator's identity",
                ),
            ),
            (
                session(
                    CredentialState::Unavailable,
                    Some("STS could not be reached"),
                ),
                None,
                (
                    "False",
                    "AssumeRoleFailed",
                    None,
                    false,
                    "could not be reached",
                ),
            ),
            (
                session(CredentialState::Expired, Some("x")),
                Some("EntityNotExist.Role"),
                (
                    "False",
                    "EntityNotExistRole",
                    Some("EntityNotExist.Role"),
                    false,
                    "check spec.roleArn",
                ),
            ),
        ];
        for (i, (session, code, (ready, reason, error_code, expiration, text))) in
            rows.into_iter().enumerate()
        {
            let status = selector_status(&selector(), 2, &session, code, now);
            let c = conditions::get(&status.conditions, types::READY).unwrap();
            assert_eq!(c.status, ready, "row {i}");
            assert_eq!(c.reason, reason, "row {i}");
            assert!(c.message.contains(text), "row {i}: {}", c.message);
            assert_eq!(c.observed_generation, Some(3), "row {i}");
            assert_eq!(status.error_code.as_deref(), error_code, "row {i}");
            assert_eq!(status.session_expiration.is_some(), expiration, "row {i}");
            assert_eq!(status.matched_namespaces, 2);
            assert_eq!(status.observed_generation, Some(3));
        }
    }

    #[test]
    fn a_status_that_says_the_same_is_not_written_again() {
        let now: Timestamp = "2026-12-06T10:00:00Z".parse().unwrap();
        let mut s = selector();
        let first = selector_status(&s, 1, &session(CredentialState::Valid, None), None, now);
        s.status = Some(first.clone());
        let later = selector_status(
            &s,
            1,
            &session(CredentialState::Valid, None),
            None,
            now + jiff::SignedDuration::from_secs(60),
        );
        assert!(same(Some(&first), &later));
        let moved = selector_status(&s, 2, &session(CredentialState::Valid, None), None, now);
        assert!(!same(Some(&first), &moved));
    }
}
