//! A local ECS instance metadata service (the part at 100.100.100.200 that
//! hands out the instance RAM role's credentials): the IMDSv2 token flow,
//! the role listing, the credentials, a hardened mode that refuses tokenless
//! calls, and modes where the service is old (no tokens) or down.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use jiff::Timestamp;

use super::serve::{Served, SharedState};
use super::sts_simulator::{KeySink, mint_key};
use crate::access_key::AccessKey;

/// The IMDSv2 request header asking for a token's lifetime (seconds).
pub const TOKEN_TTL_HEADER: &str = "X-aliyun-ecs-metadata-token-ttl-seconds";
/// The IMDSv2 request header carrying the token.
pub const TOKEN_HEADER: &str = "X-aliyun-ecs-metadata-token";

/// How the service behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetadataMode {
    /// IMDSv2 tokens are issued and honoured; tokenless calls also work (the default on ECS).
    TokenOptional,
    /// Hardened mode: every call without a valid token gets 403.
    TokenRequired,
    /// An old service without IMDSv2: `PUT /latest/api/token` gives 404, tokenless calls work.
    TokenUnsupported,
    /// Down: every request gets 503.
    Unavailable,
}

/// How to start a metadata simulator.
#[derive(Clone, Debug)]
pub struct MetadataSimulatorConfig {
    /// Address to listen on (default `127.0.0.1:0`).
    pub listen: SocketAddr,
    /// The RAM role attached to the instance (`None`: no role, listing gives 404).
    pub role_name: Option<String>,
    /// Behaviour.
    pub mode: MetadataMode,
    /// Lifetime of minted credentials (default 6 hours, like ECS).
    pub lifetime: Duration,
    /// Receives every minted key.
    pub sink: Option<KeySink>,
}

impl Default for MetadataSimulatorConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            role_name: Some("EcsRamRoleCanceller".to_owned()),
            mode: MetadataMode::TokenOptional,
            lifetime: Duration::from_secs(6 * 3600),
            sink: None,
        }
    }
}

/// One request, as the simulator saw it (no token values).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetadataCall {
    /// `GET` or `PUT`.
    pub method: String,
    /// The path.
    pub path: String,
    /// Whether a valid IMDSv2 token came with it.
    pub with_token: bool,
    /// The answer's HTTP status.
    pub status: u16,
}

#[derive(Debug)]
struct MetadataState {
    role_name: Option<String>,
    mode: MetadataMode,
    lifetime: Duration,
    sink: Option<KeySink>,
    tokens: HashMap<String, Timestamp>,
    calls: Vec<MetadataCall>,
    minted: Vec<AccessKey>,
}

type Shared = SharedState<MetadataState>;

/// The simulator, started with [`MetadataSimulator::start`].
#[derive(Debug)]
pub struct MetadataSimulator;

impl MetadataSimulator {
    /// Binds `config.listen` and serves until the handle is shut down or dropped.
    pub async fn start(config: MetadataSimulatorConfig) -> anyhow::Result<MetadataSimulatorHandle> {
        let shared = Arc::new(Shared::new(MetadataState {
            role_name: config.role_name,
            mode: config.mode,
            lifetime: config.lifetime,
            sink: config.sink,
            tokens: HashMap::new(),
            calls: Vec::new(),
            minted: Vec::new(),
        }));
        let app = Router::new()
            .route("/latest/api/token", put(token))
            .route("/latest/meta-data/ram/security-credentials/", get(listing))
            .route(
                "/latest/meta-data/ram/security-credentials/{role}",
                get(credentials),
            )
            .fallback(not_found)
            .with_state(shared.clone());
        let served = Served::start("metadata-simulator", config.listen, app).await?;
        Ok(MetadataSimulatorHandle { served, shared })
    }
}

/// Controls a running metadata simulator. Dropping it stops the simulator.
#[derive(Debug)]
pub struct MetadataSimulatorHandle {
    served: Served,
    shared: Arc<Shared>,
}

impl MetadataSimulatorHandle {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.served.addr()
    }

    /// `http://ADDR`, the base URL to use instead of `http://100.100.100.200`.
    pub fn endpoint(&self) -> String {
        self.served.endpoint()
    }

    /// Changes the behaviour.
    pub fn set_mode(&self, mode: MetadataMode) {
        self.shared.state().mode = mode;
    }

    /// Every request so far, oldest first.
    pub fn calls(&self) -> Vec<MetadataCall> {
        self.shared.state().calls.clone()
    }

    /// Every key minted so far, oldest first.
    pub fn minted(&self) -> Vec<AccessKey> {
        self.shared.state().minted.clone()
    }

    /// Stops serving and waits for the listener to close.
    pub async fn shutdown(self) {
        self.served.shutdown().await;
    }
}

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain")], body.into()).into_response()
}

/// What the mode and the token header decide before any route runs:
/// `Err` is the refusal, `Ok(with_token)` lets the route answer.
fn gate(
    state: &mut MetadataState,
    headers: &HeaderMap,
    now: Timestamp,
) -> Result<bool, (StatusCode, &'static str)> {
    state.tokens.retain(|_, expiry| *expiry > now);
    let sent = headers.get(TOKEN_HEADER).and_then(|v| v.to_str().ok());
    match state.mode {
        MetadataMode::Unavailable => Err((StatusCode::SERVICE_UNAVAILABLE, "service unavailable")),
        MetadataMode::TokenUnsupported => Ok(false),
        mode => match sent {
            Some(t) if state.tokens.contains_key(t) => Ok(true),
            Some(_) => Err((
                StatusCode::UNAUTHORIZED,
                "invalid or expired metadata token",
            )),
            None if mode == MetadataMode::TokenRequired => Err((
                StatusCode::FORBIDDEN,
                "this instance requires IMDSv2: request a token first",
            )),
            None => Ok(false),
        },
    }
}

fn record(
    state: &mut MetadataState,
    method: &Method,
    path: &str,
    with_token: bool,
    response: &Response,
) {
    state.calls.push(MetadataCall {
        method: method.to_string(),
        path: path.to_owned(),
        with_token,
        status: response.status().as_u16(),
    });
}

async fn token(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let mut state = shared.state();
    let now = Timestamp::now();
    let response = match state.mode {
        MetadataMode::Unavailable => text(StatusCode::SERVICE_UNAVAILABLE, "service unavailable"),
        MetadataMode::TokenUnsupported => text(StatusCode::NOT_FOUND, "not found"),
        MetadataMode::TokenOptional | MetadataMode::TokenRequired => {
            let ttl = headers
                .get(TOKEN_TTL_HEADER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .filter(|ttl| (1..=21600).contains(ttl));
            match ttl {
                None => text(
                    StatusCode::BAD_REQUEST,
                    format!("{TOKEN_TTL_HEADER} must be between 1 and 21600"),
                ),
                Some(ttl) => {
                    let token = mint_key().secret().to_owned();
                    state
                        .tokens
                        .insert(token.clone(), now + Duration::from_secs(ttl));
                    text(StatusCode::OK, token)
                }
            }
        }
    };
    record(
        &mut state,
        &Method::PUT,
        "/latest/api/token",
        false,
        &response,
    );
    response
}

async fn listing(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let mut state = shared.state();
    let path = "/latest/meta-data/ram/security-credentials/";
    let (with_token, response) = match gate(&mut state, &headers, Timestamp::now()) {
        Err((status, body)) => (false, text(status, body)),
        Ok(with_token) => (
            with_token,
            match &state.role_name {
                Some(role) => text(StatusCode::OK, role.clone()),
                None => text(StatusCode::NOT_FOUND, "not found"),
            },
        ),
    };
    record(&mut state, &Method::GET, path, with_token, &response);
    response
}

async fn credentials(
    State(shared): State<Arc<Shared>>,
    Path(role): Path<String>,
    headers: HeaderMap,
) -> Response {
    let mut state = shared.state();
    let now = Timestamp::now();
    let path = format!("/latest/meta-data/ram/security-credentials/{role}");
    let (with_token, response) = match gate(&mut state, &headers, now) {
        Err((status, body)) => (false, text(status, body)),
        Ok(with_token) if state.role_name.as_deref() == Some(role.as_str()) => {
            let key = mint_key();
            let fmt = |t: Timestamp| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
            let body = serde_json::json!({
                "AccessKeyId": key.id,
                "AccessKeySecret": key.secret(),
                "Expiration": fmt(now + state.lifetime),
                "SecurityToken": key.security_token().unwrap_or_default(),
                "LastUpdated": fmt(now),
                "Code": "Success",
            });
            state.minted.push(key.clone());
            if let Some(sink) = &state.sink {
                sink.send(key, None);
            }
            (
                with_token,
                (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, "text/plain")],
                    body.to_string(),
                )
                    .into_response(),
            )
        }
        Ok(with_token) => (with_token, text(StatusCode::NOT_FOUND, "not found")),
    };
    record(&mut state, &Method::GET, &path, with_token, &response);
    response
}

async fn not_found(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: axum::http::Uri,
) -> Response {
    let mut state = shared.state();
    let response = if state.mode == MetadataMode::Unavailable {
        text(StatusCode::SERVICE_UNAVAILABLE, "service unavailable")
    } else {
        text(StatusCode::NOT_FOUND, "not found")
    };
    record(&mut state, &method, uri.path(), false, &response);
    response
}
