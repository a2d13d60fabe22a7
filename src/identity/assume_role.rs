//! STS `AssumeRole` from the operator's own identity: a tenant's RAM role,
//! RPC-signed exactly like CancelCopyImage, with a `RoleSessionName` naming
//! the tenant, the `ExternalId` when the role wants one, and a session
//! policy narrowing the session to what the operator does.
//!
//! NB: the caller's key comes through [`CallerKey`], not the operator's
//! credentials type, so this module never imports its parent (no circle).

use std::time::Duration;

use futures::future::BoxFuture;
use jiff::Timestamp;
use reqwest::Url;

use super::fetch::{FetchError, TemporaryCredentials, http_client};
use crate::credentials::AccessKey;
use crate::ecs::signature::{self, Method};

/// The action.
pub const ACTION: &str = "AssumeRole";

/// Where the key that calls AssumeRole comes from (the operator's identity).
pub trait CallerKey: Send + Sync + std::fmt::Debug {
    /// The key to sign with now, or why there is none (no secret in it).
    fn caller_key(&self) -> BoxFuture<'_, Result<AccessKey, String>>;
}

/// One role to assume, and how. Holds no secret.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AssumeRoleRequest {
    /// `RoleArn`.
    pub role_arn: String,
    /// `ExternalId`, when the role's trust policy wants one.
    pub external_id: Option<String>,
    /// `RoleSessionName`, shown in ActionTrail.
    pub session_name: String,
    /// `Policy`: the session policy.
    pub policy: String,
    /// `DurationSeconds`.
    pub duration: Duration,
}

/// Calls `AssumeRole` for one request with the caller's key.
#[derive(Clone, Debug)]
pub struct AssumeRoleFetcher {
    request: AssumeRoleRequest,
    endpoint: Url,
    caller: std::sync::Arc<dyn CallerKey>,
    http: reqwest::Client,
}

impl AssumeRoleFetcher {
    /// A fetcher sending `request` to the STS `endpoint`, signed with
    /// `caller`'s key; fails only when the HTTP client cannot be built.
    pub fn new(
        request: AssumeRoleRequest,
        endpoint: Url,
        caller: std::sync::Arc<dyn CallerKey>,
        connect_timeout: Duration,
        request_timeout: Duration,
    ) -> reqwest::Result<Self> {
        let http = http_client(connect_timeout, request_timeout, false)?;
        Ok(Self {
            request,
            endpoint,
            caller,
            http,
        })
    }

    /// The request.
    pub fn request(&self) -> &AssumeRoleRequest {
        &self.request
    }

    /// Assumes the role once.
    pub async fn fetch(&self) -> Result<TemporaryCredentials, FetchError> {
        let key = self
            .caller
            .caller_key()
            .await
            .map_err(|message| FetchError::Caller { message })?;
        let nonce = uuid::Uuid::new_v4().to_string();
        let body = signed_body(&self.request, &key, &nonce, Timestamp::now());
        let mut sensitive: Vec<&str> = vec![key.secret()];
        sensitive.extend(key.security_token());
        super::rrsa::post_form(&self.http, self.endpoint.clone(), body, &sensitive).await
    }
}

/// The signed form body of one AssumeRole call (every parameter in the
/// body, so the token never lands in a URL). Pure.
pub fn signed_body(
    request: &AssumeRoleRequest,
    key: &AccessKey,
    nonce: &str,
    now: Timestamp,
) -> String {
    let duration = request.duration.as_secs().to_string();
    let timestamp = signature::format_timestamp(now);
    let mut params: Vec<(&str, &str)> = vec![
        ("AccessKeyId", &key.id),
        ("Action", ACTION),
        ("DurationSeconds", &duration),
        ("Format", signature::FORMAT),
        ("Policy", &request.policy),
        ("RoleArn", &request.role_arn),
        ("RoleSessionName", &request.session_name),
        ("SignatureMethod", signature::SIGNATURE_METHOD),
        ("SignatureNonce", nonce),
        ("SignatureVersion", signature::SIGNATURE_VERSION),
        ("Timestamp", &timestamp),
        ("Version", super::rrsa::STS_API_VERSION),
    ];
    if let Some(external_id) = &request.external_id {
        params.push(("ExternalId", external_id));
    }
    if let Some(token) = key.security_token() {
        params.push(("SecurityToken", token));
    }
    let signed = signature::signature_for(Method::Post, key.secret(), &params);
    params.push(("Signature", &signed));
    signature::canonicalized_query(&params)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn request(external_id: Option<&str>) -> AssumeRoleRequest {
        AssumeRoleRequest {
            role_arn: "acs:ram::1234567890123456:role/images".into(),
            external_id: external_id.map(Into::into),
            session_name: "cic.images".into(),
            policy: crate::role_selector::SESSION_POLICY.into(),
            duration: Duration::from_secs(900),
        }
    }

    fn parse(body: &str) -> BTreeMap<String, String> {
        form_urlencoded::parse(body.as_bytes())
            .into_owned()
            .collect()
    }

    #[test]
    fn debug_never_shows_the_callers_secret_or_token() {
        let caller = crate::identity::OperatorCredentials::fixed(AccessKey::new(
            "LTAI5tCaller",
            "caller-secret-x9",
            Some("CAIS-caller-token".into()),
        ));
        let fetcher = AssumeRoleFetcher::new(
            request(Some("tenant-42")),
            "https://sts.aliyuncs.com".parse().unwrap(),
            std::sync::Arc::new(caller),
            Duration::from_secs(1),
            Duration::from_secs(1),
        )
        .unwrap();
        let debug = format!("{fetcher:?} {fetcher:#?}");
        assert!(!debug.contains("caller-secret-x9"), "{debug}");
        assert!(!debug.contains("CAIS-caller-token"), "{debug}");
        assert!(debug.contains("acs:ram::1234567890123456:role/images"));
    }

    #[test]
    fn body_carries_what_sts_needs_and_a_signature_over_it() {
        let key = AccessKey::new("LTAI5tCaller", "caller-secret", Some("CAIS-tok".into()));
        let now = "2026-12-06T10:00:00Z".parse().unwrap();
        for external_id in [None, Some("tenant-42")] {
            let p = parse(&signed_body(&request(external_id), &key, "n-1", now));
            assert_eq!(p["Action"], "AssumeRole");
            assert_eq!(p["Version"], "2015-04-01");
            assert_eq!(p["RoleArn"], "acs:ram::1234567890123456:role/images");
            assert_eq!(p["RoleSessionName"], "cic.images");
            assert_eq!(p["DurationSeconds"], "900");
            assert_eq!(p["Policy"], crate::role_selector::SESSION_POLICY);
            assert_eq!(p["SecurityToken"], "CAIS-tok");
            assert_eq!(p["Timestamp"], "2026-12-06T10:00:00Z");
            assert_eq!(p.get("ExternalId").map(String::as_str), external_id);
            // The signature is over every other parameter, as sent.
            let unsigned: Vec<(&str, &str)> = p
                .iter()
                .filter(|(k, _)| *k != "Signature")
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            assert_eq!(
                p["Signature"],
                signature::signature_for(Method::Post, "caller-secret", &unsigned)
            );
        }
    }
}
