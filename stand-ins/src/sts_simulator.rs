//! A local STS endpoint answering `AssumeRoleWithOIDC` and `AssumeRole` like
//! Alibaba Cloud STS: parameter checks, the OIDC token compared with the one
//! it expects, AssumeRole's RPC signature checked with this crate's own code
//! against the callers it knows, a trust table (which principal may assume
//! which role, with which ExternalId), credentials with a configurable
//! lifetime, scriptable error answers, and a call log. Minted keys (with
//! their session policy) can be handed to the ECS simulator, so a whole
//! RRSA → STS → ECS flow, and a tenant's AssumeRole on top, runs on loopback.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use base64::Engine as _;
use jiff::Timestamp;
use rand::Rng as _;
use rand::distr::Alphanumeric;
use sha2::Digest as _;

use super::serve::{Served, SharedState};
use crate::access_key::AccessKey;

/// `HostId` in error bodies.
pub const HOST_ID: &str = "sts.aliyuncs.com";

/// Receives every key a stand-in mints (with its session policy, if any),
/// e.g. to make the ECS simulator accept it.
#[derive(Clone)]
pub struct KeySink(Arc<dyn Fn(AccessKey, Option<String>) + Send + Sync>);

impl KeySink {
    /// A sink calling `f` with each minted key.
    pub fn new(f: impl Fn(AccessKey) + Send + Sync + 'static) -> Self {
        Self(Arc::new(move |key, _| f(key)))
    }

    /// A sink calling `f` with each minted key and its session policy.
    pub fn with_policy(f: impl Fn(AccessKey, Option<String>) + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    /// A sink adding each minted key, with its session policy, to a running ECS simulator.
    pub fn ecs(simulator: Arc<super::ecs_simulator::SimulatorHandle>) -> Self {
        Self::with_policy(move |key, policy| simulator.add_key_with_policy(key, policy))
    }

    /// Hands `key` to the receiver.
    pub(crate) fn send(&self, key: AccessKey, policy: Option<String>) {
        (self.0)(key, policy)
    }
}

/// One line of the trust table: `principal` may assume `role_arn`, with
/// `external_id` when the role's trust policy asks for one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trust {
    /// Who may assume the role: a name given to a caller (see
    /// [`StsSimulatorHandle::add_caller`]), or a role ARN whose sessions may
    /// (keys minted by AssumeRoleWithOIDC for it, say).
    pub principal: String,
    /// The role.
    pub role_arn: String,
    /// The `sts:ExternalId` condition, when there is one.
    pub external_id: Option<String>,
}

/// A session minted by `AssumeRole`: whose key it is, for the logs that
/// prove which session signed a request. Holds no secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MintedSession {
    /// The minted AccessKey ID.
    pub access_key_id: String,
    /// The role assumed.
    pub role_arn: String,
    /// `RoleSessionName`.
    pub session_name: String,
    /// The session policy sent, if any.
    pub policy: Option<String>,
    /// Who assumed it.
    pub principal: String,
    /// When it expires.
    pub expiration: Timestamp,
}

impl std::fmt::Debug for KeySink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeySink")
    }
}

/// An error answer STS gives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StsFault {
    /// HTTP status.
    pub http_status: u16,
    /// `Code`.
    pub code: String,
    /// `Message`.
    pub message: String,
}

impl StsFault {
    /// Any error answer.
    pub fn new(http_status: u16, code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            http_status,
            code: code.into(),
            message: message.into(),
        }
    }

    /// `InvalidParameter.OIDCToken`: the token is not one STS accepts.
    pub fn invalid_oidc_token() -> Self {
        Self::new(
            400,
            "InvalidParameter.OIDCToken",
            "The specified OIDCToken is invalid.",
        )
    }

    /// `AuthenticationFail.OIDCToken.Expired`.
    pub fn oidc_token_expired() -> Self {
        Self::new(
            400,
            "AuthenticationFail.OIDCToken.Expired",
            "The OIDC token has expired.",
        )
    }

    /// `InternalError`.
    pub fn internal_error() -> Self {
        Self::new(
            500,
            "InternalError",
            "The request processing has failed due to some unknown error.",
        )
    }
}

/// How to start an STS simulator.
#[derive(Clone, Debug)]
pub struct StsSimulatorConfig {
    /// Address to listen on (default `127.0.0.1:0`).
    pub listen: SocketAddr,
    /// The one OIDC token accepted (`None`: any non-empty token).
    pub expected_token: Option<String>,
    /// The only `RoleArn` that exists (`None`: any well-formed one).
    pub role_arn: Option<String>,
    /// The only `OIDCProviderArn` that exists (`None`: any well-formed one).
    pub oidc_provider_arn: Option<String>,
    /// Lifetime of minted credentials (`None`: the `DurationSeconds` asked for).
    pub lifetime: Option<Duration>,
    /// Receives every minted key.
    pub sink: Option<KeySink>,
    /// Keys that may call the signed `AssumeRole`, each with its principal name.
    pub callers: Vec<(AccessKey, String)>,
    /// The trust table of `AssumeRole`.
    pub trust: Vec<Trust>,
}

impl Default for StsSimulatorConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            expected_token: None,
            role_arn: None,
            oidc_provider_arn: None,
            lifetime: None,
            sink: None,
            callers: Vec::new(),
            trust: Vec::new(),
        }
    }
}

/// One call, as the simulator saw it. Holds no token, only its SHA-256.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StsCall {
    /// When it arrived.
    pub time: Timestamp,
    /// `Action`.
    pub action: Option<String>,
    /// `RoleArn`.
    pub role_arn: Option<String>,
    /// `OIDCProviderArn`.
    pub oidc_provider_arn: Option<String>,
    /// `RoleSessionName`.
    pub session_name: Option<String>,
    /// `DurationSeconds`.
    pub duration_seconds: Option<String>,
    /// Hex SHA-256 of `OIDCToken`, when one was sent.
    pub token_sha256: Option<String>,
    /// Whether the call carried an `AccessKeyId` or `Signature` (it should not: the call is unsigned).
    pub signed: bool,
    /// Whether `OIDCToken` came in the URL's query (where proxies log it) rather than the body.
    pub token_in_query: bool,
    /// `Success` or the error code answered.
    pub code: String,
    /// The AccessKey ID minted, on success.
    pub access_key_id: Option<String>,
    /// `AssumeRole`: the AccessKey ID that signed the call.
    pub caller_access_key_id: Option<String>,
    /// `AssumeRole`: `ExternalId`, when sent.
    pub external_id: Option<String>,
    /// `Policy`, when sent.
    pub policy: Option<String>,
}

/// Hex SHA-256 of a token, to compare with [`StsCall::token_sha256`].
pub fn token_sha256(token: &str) -> String {
    hex::encode(sha2::Sha256::digest(token.trim().as_bytes()))
}

#[derive(Debug)]
struct StsState {
    expected_token: Option<String>,
    role_arn: Option<String>,
    oidc_provider_arn: Option<String>,
    lifetime: Option<Duration>,
    sink: Option<KeySink>,
    faults: VecDeque<StsFault>,
    persistent_fault: Option<StsFault>,
    calls: Vec<StsCall>,
    minted: Vec<AccessKey>,
    /// Callers of `AssumeRole` by AccessKey ID: the key and its principal.
    callers: BTreeMap<String, (AccessKey, String)>,
    trust: Vec<Trust>,
    sessions: Vec<MintedSession>,
}

type Shared = SharedState<StsState>;

/// The simulator, started with [`StsSimulator::start`].
#[derive(Debug)]
pub struct StsSimulator;

impl StsSimulator {
    /// Binds `config.listen` and serves until the handle is shut down or dropped.
    pub async fn start(config: StsSimulatorConfig) -> anyhow::Result<StsSimulatorHandle> {
        let shared = Arc::new(Shared::new(StsState {
            expected_token: config.expected_token.map(|t| t.trim().to_owned()),
            role_arn: config.role_arn,
            oidc_provider_arn: config.oidc_provider_arn,
            lifetime: config.lifetime,
            sink: config.sink,
            faults: VecDeque::new(),
            persistent_fault: None,
            calls: Vec::new(),
            minted: Vec::new(),
            callers: config
                .callers
                .into_iter()
                .map(|(key, principal)| (key.id.clone(), (key, principal)))
                .collect(),
            trust: config.trust,
            sessions: Vec::new(),
        }));
        let app = Router::new()
            .route("/", any(api))
            .with_state(shared.clone());
        let served = Served::start("sts-simulator", config.listen, app).await?;
        Ok(StsSimulatorHandle { served, shared })
    }
}

/// Controls a running STS simulator. Dropping it stops the simulator.
#[derive(Debug)]
pub struct StsSimulatorHandle {
    served: Served,
    shared: Arc<Shared>,
}

impl StsSimulatorHandle {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.served.addr()
    }

    /// `http://ADDR`, for `ALIBABA_CLOUD_STS_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        self.served.endpoint()
    }

    /// Accepts only this token from now on (a rotated token file).
    pub fn set_expected_token(&self, token: impl Into<String>) {
        self.shared.state().expected_token = Some(token.into().trim().to_owned());
    }

    /// Lifetime of credentials minted from now on.
    pub fn set_lifetime(&self, lifetime: Duration) {
        self.shared.state().lifetime = Some(lifetime);
    }

    /// Answers the next call with `fault` (queued, in order).
    pub fn push_fault(&self, fault: StsFault) {
        self.shared.state().faults.push_back(fault);
    }

    /// Answers every call with `fault` until cleared with `None`.
    pub fn set_persistent_fault(&self, fault: Option<StsFault>) {
        self.shared.state().persistent_fault = fault;
    }

    /// Every call so far, oldest first.
    pub fn calls(&self) -> Vec<StsCall> {
        self.shared.state().calls.clone()
    }

    /// How many calls arrived.
    pub fn call_count(&self) -> usize {
        self.shared.state().calls.len()
    }

    /// Every key minted so far, oldest first.
    pub fn minted(&self) -> Vec<AccessKey> {
        self.shared.state().minted.clone()
    }

    /// Lets `key` call `AssumeRole` as `principal`.
    pub fn add_caller(&self, key: AccessKey, principal: impl Into<String>) {
        self.shared
            .state()
            .callers
            .insert(key.id.clone(), (key, principal.into()));
    }

    /// Replaces the trust table.
    pub fn set_trust(&self, trust: Vec<Trust>) {
        self.shared.state().trust = trust;
    }

    /// Every session `AssumeRole` minted, oldest first.
    pub fn sessions(&self) -> Vec<MintedSession> {
        self.shared.state().sessions.clone()
    }

    /// The session that minted the key `access_key_id`, if `AssumeRole` did.
    pub fn session_of(&self, access_key_id: &str) -> Option<MintedSession> {
        self.shared
            .state()
            .sessions
            .iter()
            .find(|s| s.access_key_id == access_key_id)
            .cloned()
    }

    /// Stops serving and waits for the listener to close.
    pub async fn shutdown(self) {
        self.served.shutdown().await;
    }
}

/// Merged query and form parameters; the form wins, like the gateway.
fn params(query: Option<&str>, body: &[u8]) -> BTreeMap<String, String> {
    let mut params: BTreeMap<String, String> =
        form_urlencoded::parse(query.unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    params.extend(form_urlencoded::parse(body).into_owned());
    params
}

fn error(request_id: &str, fault: &StsFault) -> Response {
    let body = serde_json::json!({
        "RequestId": request_id,
        "HostId": HOST_ID,
        "Code": fault.code,
        "Message": fault.message,
        "Recommend": format!("https://api.aliyun.com/troubleshoot?q={}&product=Sts&requestId={request_id}", fault.code),
    });
    (
        StatusCode::from_u16(fault.http_status).unwrap_or(StatusCode::BAD_REQUEST),
        [(header::CONTENT_TYPE, "application/json;charset=utf-8")],
        body.to_string(),
    )
        .into_response()
}

fn missing(name: &str) -> StsFault {
    StsFault::new(
        400,
        format!("Missing{name}"),
        format!("{name} is mandatory for this action."),
    )
}

fn invalid_version() -> StsFault {
    StsFault::new(
        400,
        "InvalidVersion",
        "Specified parameter Version is not valid.",
    )
}

fn no_such_role() -> StsFault {
    StsFault::new(404, "EntityNotExist.Role", "The role not exists.")
}

fn invalid(name: &str, why: &str) -> StsFault {
    StsFault::new(
        400,
        format!("InvalidParameter.{name}"),
        format!("The parameter {name} {why}."),
    )
}

/// The checks STS makes, in order; `Ok` means mint. Pure.
fn check(state: &StsState, p: &BTreeMap<String, String>) -> Result<u64, StsFault> {
    let get = |k: &str| param(p, k);
    match get("Action") {
        Some("AssumeRoleWithOIDC") => {}
        Some(_) | None => {
            return Err(StsFault::new(
                404,
                "InvalidAction.NotFound",
                "Specified api is not found, please check your url and method.",
            ));
        }
    }
    if get("Version") != Some("2015-04-01") {
        return Err(invalid_version());
    }
    if !get("Format").is_some_and(|f| f.eq_ignore_ascii_case("JSON")) {
        return Err(invalid("Format", "must be JSON for this simulator"));
    }
    let role = role_arn(p)?;
    let provider = get("OIDCProviderArn").ok_or_else(|| missing("OIDCProviderArn"))?;
    if !arn_ok(provider, "oidc-provider/") {
        return Err(invalid(
            "OIDCProviderArn",
            "is not an OIDC provider ARN (acs:ram::<account>:oidc-provider/<name>)",
        ));
    }
    let token = get("OIDCToken").ok_or_else(|| missing("OIDCToken"))?;
    let duration = session_and_duration(p)?;
    if let Some(ts) = get("Timestamp")
        && ts.parse::<Timestamp>().is_err()
    {
        return Err(StsFault::new(
            400,
            "InvalidTimeStamp.Format",
            "Specified time stamp or date value is not well formatted.",
        ));
    }
    if state.role_arn.as_deref().is_some_and(|r| r != role) {
        return Err(no_such_role());
    }
    if state
        .oidc_provider_arn
        .as_deref()
        .is_some_and(|r| r != provider)
    {
        return Err(StsFault::new(
            404,
            "EntityNotExist.OIDCProvider",
            "The OIDC provider not exists.",
        ));
    }
    if state
        .expected_token
        .as_deref()
        .is_some_and(|t| t != token.trim())
    {
        return Err(StsFault::invalid_oidc_token());
    }
    Ok(duration)
}

/// What a checked `AssumeRole` call may mint.
#[derive(Debug, PartialEq, Eq)]
struct Assumed {
    duration: u64,
    principal: String,
}

/// The checks STS makes on a signed `AssumeRole` sent with HTTP `method`,
/// in order: the signature (this crate's own RPC verifier), the parameters,
/// then the trust table. Pure.
fn check_assume_role(
    state: &StsState,
    method: &str,
    p: &BTreeMap<String, String>,
) -> Result<Assumed, StsFault> {
    use crate::ecs_simulator::verify;
    let get = |k: &str| param(p, k);
    if get("Version") != Some("2015-04-01") {
        return Err(invalid_version());
    }
    for name in [
        "AccessKeyId",
        "Signature",
        "SignatureMethod",
        "SignatureVersion",
        "SignatureNonce",
        "Timestamp",
    ] {
        get(name).ok_or_else(|| missing(name))?;
    }
    if get("SignatureMethod") != Some("HMAC-SHA1") {
        return Err(StsFault::new(
            400,
            "InvalidSignatureMethod",
            "Specified signature method is not supported.",
        ));
    }
    if get("SignatureVersion") != Some("1.0") {
        return Err(StsFault::new(
            400,
            "InvalidSignatureVersion",
            "Specified signature version is not supported.",
        ));
    }
    if get("Timestamp").and_then(verify::parse_timestamp).is_none() {
        return Err(StsFault::new(
            400,
            "InvalidTimeStamp.Format",
            "Specified time stamp or date value is not well formatted.",
        ));
    }
    let key_id = get("AccessKeyId").unwrap_or_default();
    let Some((key, principal)) = state.callers.get(key_id) else {
        return Err(StsFault::new(
            404,
            "InvalidAccessKeyId.NotFound",
            "Specified access key is not found.",
        ));
    };
    let string_to_sign = verify::string_to_sign(method, p);
    if !verify::signature_matches(
        key.secret(),
        &string_to_sign,
        get("Signature").unwrap_or_default(),
    ) {
        return Err(StsFault::new(
            400,
            "SignatureDoesNotMatch",
            "Specified signature is not matched with our calculation.",
        ));
    }
    if key.security_token() != get("SecurityToken") {
        return Err(StsFault::new(
            400,
            "InvalidSecurityToken.MismatchWithAccessKey",
            "The security token you provided does not match the access key.",
        ));
    }
    let role = role_arn(p)?;
    let duration = session_and_duration(p)?;
    let external_id = get("ExternalId");
    if let Some(id) = external_id {
        let allowed = |c: char| c.is_ascii_alphanumeric() || "_+=,.@:/-".contains(c);
        if !(2..=1224).contains(&id.len()) || !id.chars().all(allowed) {
            return Err(invalid("ExternalId", "is not valid"));
        }
    }
    if let Some(policy) = get("Policy")
        && !serde_json::from_str::<serde_json::Value>(policy).is_ok_and(|v| v.is_object())
    {
        return Err(StsFault::new(
            400,
            "InvalidParameter.PolicyGrammar",
            "The parameter Policy has not a valid grammar.",
        ));
    }
    let for_role: Vec<&Trust> = state.trust.iter().filter(|t| t.role_arn == role).collect();
    if for_role.is_empty() {
        return Err(no_such_role());
    }
    let trusted = for_role.iter().any(|t| {
        &t.principal == principal
            && t.external_id
                .as_deref()
                .is_none_or(|e| Some(e) == external_id)
    });
    if !trusted {
        return Err(StsFault::new(
            403,
            "NoPermission",
            "You are not authorized to do this action. You should be authorized by RAM.",
        ));
    }
    Ok(Assumed {
        duration,
        principal: principal.clone(),
    })
}

/// A present, non-empty parameter.
fn param<'a>(p: &'a BTreeMap<String, String>, name: &str) -> Option<&'a str> {
    p.get(name).map(String::as_str).filter(|v| !v.is_empty())
}

/// `RoleArn`, checked the same way by both actions.
fn role_arn(p: &BTreeMap<String, String>) -> Result<&str, StsFault> {
    let role = param(p, "RoleArn").ok_or_else(|| missing("RoleArn"))?;
    if !arn_ok(role, "role/") {
        return Err(invalid(
            "RoleArn",
            "is not a RAM role ARN (acs:ram::<account>:role/<name>)",
        ));
    }
    Ok(role)
}

/// `RoleSessionName` then `DurationSeconds` (one hour when absent), checked
/// the same way by both actions; the session's lifetime in seconds.
fn session_and_duration(p: &BTreeMap<String, String>) -> Result<u64, StsFault> {
    let session = param(p, "RoleSessionName").ok_or_else(|| missing("RoleSessionName"))?;
    if !is_valid_session_name(session) {
        return Err(invalid("RoleSessionName", "is not valid"));
    }
    match param(p, "DurationSeconds") {
        None => Ok(3600),
        Some(d) => d
            .parse()
            .ok()
            .filter(|d| (900..=43200).contains(d))
            .ok_or_else(|| invalid("DurationSeconds", "must be between 900 and 43200")),
    }
}

fn arn_ok(arn: &str, kind: &str) -> bool {
    arn.strip_prefix("acs:ram::")
        .and_then(|rest| rest.split_once(':'))
        .is_some_and(|(account, resource)| {
            !account.is_empty()
                && account.bytes().all(|b| b.is_ascii_digit())
                && resource.strip_prefix(kind).is_some_and(|n| !n.is_empty())
        })
}

fn random_alnum(len: usize) -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// Whether STS accepts `name` as `RoleSessionName`: 2 to 64 of letters,
/// digits, `.`, `@`, `-`, `_`.
fn is_valid_session_name(name: &str) -> bool {
    let allowed = |c: char| c.is_ascii_alphanumeric() || ".@-_".contains(c);
    (2..=64).contains(&name.len()) && name.chars().all(allowed)
}

/// A key shaped like STS's: `STS.` ID, 40-character secret, `CAIS` Base64 token.
pub fn mint_key() -> AccessKey {
    let mut token_bytes = [0u8; 96];
    rand::rng().fill(&mut token_bytes[..]);
    AccessKey::new(
        format!("STS.{}", random_alnum(24)),
        random_alnum(40),
        Some(format!(
            "CAIS{}",
            base64::engine::general_purpose::STANDARD.encode(token_bytes)
        )),
    )
}

async fn api(
    State(shared): State<Arc<Shared>>,
    method: axum::http::Method,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let p = params(query.as_deref(), &body);
    let request_id = uuid::Uuid::new_v4().to_string().to_uppercase();
    let now = Timestamp::now();
    let mut state = shared.state();
    let assume_role = p.get("Action").map(String::as_str) == Some("AssumeRole");
    let mut call = StsCall {
        time: now,
        action: p.get("Action").cloned(),
        role_arn: p.get("RoleArn").cloned(),
        oidc_provider_arn: p.get("OIDCProviderArn").cloned(),
        session_name: p.get("RoleSessionName").cloned(),
        duration_seconds: p.get("DurationSeconds").cloned(),
        token_sha256: p.get("OIDCToken").map(|t| token_sha256(t)),
        signed: p.contains_key("AccessKeyId") || p.contains_key("Signature"),
        token_in_query: form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes())
            .any(|(k, _)| k == "OIDCToken"),
        code: String::new(),
        access_key_id: None,
        caller_access_key_id: p.get("AccessKeyId").cloned().filter(|_| assume_role),
        external_id: p.get("ExternalId").cloned(),
        policy: p.get("Policy").cloned(),
    };
    let outcome = match state
        .faults
        .pop_front()
        .or_else(|| state.persistent_fault.clone())
    {
        Some(fault) => Err(fault),
        None if assume_role => {
            check_assume_role(&state, method.as_str(), &p).map(|a| (a.duration, Some(a.principal)))
        }
        None => check(&state, &p).map(|d| (d, None)),
    };
    let response = match outcome {
        Err(fault) => {
            call.code = fault.code.clone();
            error(&request_id, &fault)
        }
        Ok((duration, principal)) => {
            let lifetime = state.lifetime.unwrap_or(Duration::from_secs(duration));
            let key = mint_key();
            let expires = now + lifetime;
            let expiration = expires.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
            let role = call.role_arn.clone().unwrap_or_default();
            let session = call.session_name.clone().unwrap_or_default();
            let body = serde_json::json!({
                "RequestId": request_id,
                "AssumedRoleUser": {
                    "Arn": format!("{}/{session}", role.replace(":role/", ":assumed-role/")),
                    "AssumedRoleId": format!("3{}:{session}", random_alnum(16)),
                },
                "Credentials": {
                    "AccessKeyId": key.id,
                    "AccessKeySecret": key.secret(),
                    "SecurityToken": key.security_token().unwrap_or_default(),
                    "Expiration": expiration,
                },
            });
            call.code = "Success".to_owned();
            call.access_key_id = Some(key.id.clone());
            state.minted.push(key.clone());
            // A session of the role may itself call AssumeRole as the role
            // (RRSA's keys, say): the trust table names roles as principals.
            state
                .callers
                .insert(key.id.clone(), (key.clone(), role.clone()));
            if let Some(principal) = principal {
                state.sessions.push(MintedSession {
                    access_key_id: key.id.clone(),
                    role_arn: role.clone(),
                    session_name: session.clone(),
                    policy: call.policy.clone(),
                    principal,
                    expiration: expires,
                });
            }
            if let Some(sink) = &state.sink {
                sink.send(key, call.policy.clone());
            }
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json;charset=utf-8")],
                body.to_string(),
            )
                .into_response()
        }
    };
    tracing::info!(
        action = call.action.as_deref().unwrap_or("-"),
        code = %call.code,
        role_arn = call.role_arn.as_deref().unwrap_or("-"),
        session_name = call.session_name.as_deref().unwrap_or("-"),
        caller = call.caller_access_key_id.as_deref().unwrap_or("-"),
        access_key_id = call.access_key_id.as_deref().unwrap_or("-"),
        "sts-simulator call"
    );
    state.calls.push(call);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> BTreeMap<String, String> {
        [
            ("Action", "AssumeRoleWithOIDC"),
            ("Version", "2015-04-01"),
            ("Format", "JSON"),
            ("RoleArn", "acs:ram::123:role/r"),
            ("OIDCProviderArn", "acs:ram::123:oidc-provider/p"),
            ("OIDCToken", "tok"),
            ("RoleSessionName", "s1"),
            ("DurationSeconds", "900"),
            ("Timestamp", "2026-11-27T12:00:00Z"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    fn state() -> StsState {
        StsState {
            expected_token: Some("tok".into()),
            role_arn: Some("acs:ram::123:role/r".into()),
            oidc_provider_arn: None,
            lifetime: None,
            sink: None,
            faults: VecDeque::new(),
            persistent_fault: None,
            calls: Vec::new(),
            minted: Vec::new(),
            callers: BTreeMap::new(),
            trust: Vec::new(),
            sessions: Vec::new(),
        }
    }

    #[test]
    fn check_table() {
        let rows: Vec<(&str, Option<&str>, Result<u64, &str>)> = vec![
            ("", None, Ok(900)),
            ("DurationSeconds", None, Ok(3600)),
            (
                "DurationSeconds",
                Some("899"),
                Err("InvalidParameter.DurationSeconds"),
            ),
            ("Action", Some("AssumeRole"), Err("InvalidAction.NotFound")),
            ("Version", Some("2014-05-26"), Err("InvalidVersion")),
            ("Format", Some("XML"), Err("InvalidParameter.Format")),
            ("RoleArn", None, Err("MissingRoleArn")),
            ("RoleArn", Some("role/r"), Err("InvalidParameter.RoleArn")),
            (
                "RoleArn",
                Some("acs:ram::123:role/other"),
                Err("EntityNotExist.Role"),
            ),
            (
                "OIDCProviderArn",
                Some("acs:ram::x:oidc-provider/p"),
                Err("InvalidParameter.OIDCProviderArn"),
            ),
            ("OIDCToken", None, Err("MissingOIDCToken")),
            (
                "OIDCToken",
                Some("other"),
                Err("InvalidParameter.OIDCToken"),
            ),
            (
                "RoleSessionName",
                Some("a b"),
                Err("InvalidParameter.RoleSessionName"),
            ),
            (
                "Timestamp",
                Some("yesterday"),
                Err("InvalidTimeStamp.Format"),
            ),
        ];
        for (name, value, want) in rows {
            let mut p = base();
            match value {
                Some(v) => {
                    p.insert(name.into(), v.into());
                }
                None => {
                    p.remove(name);
                }
            }
            let got = check(&state(), &p).map_err(|f| f.code);
            assert_eq!(got, want.map_err(str::to_owned), "{name}={value:?}");
        }
    }

    /// A signed AssumeRole by `key`, with `extra` parameters set (or removed when `None`).
    fn assume_role(key: &AccessKey, extra: &[(&str, Option<&str>)]) -> BTreeMap<String, String> {
        let mut p: BTreeMap<String, String> = [
            ("Action", "AssumeRole"),
            ("Version", "2015-04-01"),
            ("Format", "JSON"),
            ("AccessKeyId", key.id.as_str()),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureVersion", "1.0"),
            ("SignatureNonce", "n-1"),
            ("Timestamp", "2026-12-06T10:00:00Z"),
            ("RoleArn", "acs:ram::123:role/tenant"),
            ("RoleSessionName", "cic.images"),
            ("DurationSeconds", "900"),
            ("Policy", r#"{"Version":"1","Statement":[]}"#),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        if let Some(token) = key.security_token() {
            p.insert("SecurityToken".into(), token.into());
        }
        for (k, v) in extra {
            match v {
                Some(v) => p.insert(k.to_string(), v.to_string()),
                None => p.remove(*k),
            };
        }
        let signature = crate::ecs_simulator::verify::signature(
            key.secret(),
            &crate::ecs_simulator::verify::string_to_sign("POST", &p),
        );
        p.insert("Signature".into(), signature);
        p
    }

    #[test]
    fn assume_role_checks_table() {
        let operator = AccessKey::new("LTAI5tOp", "op-secret", Some("CAISop".into()));
        let stranger = AccessKey::new("LTAI5tNo", "no-secret", None);
        let mut st = state();
        st.callers
            .insert(operator.id.clone(), (operator.clone(), "operator".into()));
        st.trust = vec![
            Trust {
                principal: "operator".into(),
                role_arn: "acs:ram::123:role/tenant".into(),
                external_id: None,
            },
            Trust {
                principal: "operator".into(),
                role_arn: "acs:ram::123:role/guarded".into(),
                external_id: Some("ext-1".into()),
            },
            Trust {
                principal: "someone-else".into(),
                role_arn: "acs:ram::123:role/theirs".into(),
                external_id: None,
            },
        ];
        let guarded = Some("acs:ram::123:role/guarded");
        // (caller, parameters changed, what STS answers)
        type Row<'a> = (
            &'a AccessKey,
            Vec<(&'a str, Option<&'a str>)>,
            Result<u64, &'a str>,
        );
        let rows: Vec<Row> = vec![
            (&operator, vec![], Ok(900)),
            (&operator, vec![("DurationSeconds", None)], Ok(3600)),
            (&stranger, vec![], Err("InvalidAccessKeyId.NotFound")),
            (
                &operator,
                vec![("SecurityToken", Some("CAISother"))],
                Err("InvalidSecurityToken.MismatchWithAccessKey"),
            ),
            (
                &operator,
                vec![("Timestamp", Some("today"))],
                Err("InvalidTimeStamp.Format"),
            ),
            (&operator, vec![("RoleArn", None)], Err("MissingRoleArn")),
            (
                &operator,
                vec![("RoleSessionName", Some("a b"))],
                Err("InvalidParameter.RoleSessionName"),
            ),
            (
                &operator,
                vec![("Policy", Some("not json"))],
                Err("InvalidParameter.PolicyGrammar"),
            ),
            (
                &operator,
                vec![("RoleArn", Some("acs:ram::123:role/gone"))],
                Err("EntityNotExist.Role"),
            ),
            (
                &operator,
                vec![("RoleArn", Some("acs:ram::123:role/theirs"))],
                Err("NoPermission"),
            ),
            (&operator, vec![("RoleArn", guarded)], Err("NoPermission")),
            (
                &operator,
                vec![("RoleArn", guarded), ("ExternalId", Some("ext-2"))],
                Err("NoPermission"),
            ),
            (
                &operator,
                vec![("RoleArn", guarded), ("ExternalId", Some("ext-1"))],
                Ok(900),
            ),
            (
                &operator,
                vec![("ExternalId", Some("x"))],
                Err("InvalidParameter.ExternalId"),
            ),
        ];
        for (i, (key, extra, want)) in rows.into_iter().enumerate() {
            let p = assume_role(key, &extra);
            let got = check_assume_role(&st, "POST", &p)
                .map(|a| a.duration)
                .map_err(|f| f.code);
            assert_eq!(got, want.map_err(str::to_owned), "row {i}");
        }
        // Signed for GET, sent as POST; or a parameter changed after signing.
        let p = assume_role(&operator, &[]);
        assert_eq!(
            check_assume_role(&st, "GET", &p).unwrap_err().code,
            "SignatureDoesNotMatch"
        );
        let mut tampered = p.clone();
        tampered.insert("RoleArn".into(), "acs:ram::123:role/guarded".into());
        assert_eq!(
            check_assume_role(&st, "POST", &tampered).unwrap_err().code,
            "SignatureDoesNotMatch"
        );
    }

    #[test]
    fn minted_keys_look_like_sts_keys() {
        let key = mint_key();
        assert!(key.id.starts_with("STS."));
        assert_eq!(key.secret().len(), 40);
        let token = key.security_token().unwrap();
        assert!(token.starts_with("CAIS"));
        assert!(
            token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b))
        );
    }
}
