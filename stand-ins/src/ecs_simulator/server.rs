//! The ECS simulator's HTTP shell (hyper 1): reads requests, asks the pure
//! decision, waits, and writes the answer, including the broken ones.
//!
//! Routes: `GET|POST /` is the API. Control routes:
//! - `GET /_simulator/requests`, `DELETE /_simulator/requests`: the request log (JSON).
//! - `GET /_simulator/images`; `PUT /_simulator/images/{id}` with `{"state":"copying"}`;
//!   `DELETE /_simulator/images/{id}`.
//! - `GET /_simulator/faults`; `POST /_simulator/faults` with `{"fault":"m-abc=internal-error*2"}`;
//!   `DELETE /_simulator/faults`.
//! - `GET /_simulator/quota`; `PUT /_simulator/quota` with `{"perSecond":50,"perMinute":null}`.
//! - `GET /_simulator/outage`; `PUT /_simulator/outage` with `{"mode":"refuse","forMs":60000}`
//!   (`refuse`, `blackhole`, `unavailable`, or `none` to end it; see [`super::outage`]).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt as _;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::clock::Clock;
use super::faults::FaultSpec;
use super::outage::{OutageMode, OutageRequest};
use super::quota::QuotaLimits;
use super::render::{self, Rendered};
use super::state::{Answer, ConnectionFate, ImageState, RequestRecord, SimulatorState};
use super::verify::{self, ApiError, ResponseFormat};
use super::verify_v3;

/// Shared by the handle and every connection.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) state: Mutex<SimulatorState>,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) latency: Duration,
    pub(super) host_id: String,
    pub(super) shutdown: CancellationToken,
    /// The whole-endpoint outage in force, if any.
    pub(super) outage: tokio::sync::watch::Sender<Option<OutageMode>>,
    /// Counts outage changes, so a timed end ends only its own outage.
    pub(super) outage_generation: AtomicU64,
    /// Cancelled (and replaced) when a `refuse` outage starts or a `blackhole`
    /// ends: closes every open connection.
    pub(super) connections: Mutex<CancellationToken>,
    /// Whether the port has a listener (false during a `refuse` outage).
    pub(super) listening: tokio::sync::watch::Sender<bool>,
}

impl Shared {
    pub(super) fn state(&self) -> MutexGuard<'_, SimulatorState> {
        // NB: the state stays consistent even if a holder panicked: every
        // mutation is a single call.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The token of the connections open now.
    fn connections(&self) -> CancellationToken {
        self.connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The outage in force.
    pub(super) fn outage(&self) -> Option<OutageMode> {
        *self.outage.borrow()
    }
}

/// Starts (`Some`) or ends (`None`) a whole-endpoint outage, for `lasts` when
/// given.
pub(super) fn set_outage(shared: &Arc<Shared>, mode: Option<OutageMode>, lasts: Option<Duration>) {
    let generation = shared.outage_generation.fetch_add(1, Ordering::SeqCst) + 1;
    let before = shared.outage.send_replace(mode);
    // A closed port takes its open connections with it, and the requests a
    // blackhole held end with it (cut, as when a proxy restarts).
    let leaving_blackhole = before == Some(OutageMode::Blackhole) && mode != before;
    if mode == Some(OutageMode::Refuse) || leaving_blackhole {
        let old = std::mem::replace(
            &mut *shared.connections.lock().unwrap_or_else(|e| e.into_inner()),
            CancellationToken::new(),
        );
        old.cancel();
    }
    tracing::info!(outage = %mode.map_or("none".to_owned(), |m| m.to_string()), lasts = ?lasts, "ecs-simulator: outage changed");
    if let (Some(_), Some(lasts)) = (mode, lasts) {
        let shared = shared.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(lasts) => {}
                _ = shared.shutdown.cancelled() => return,
            }
            if shared.outage_generation.load(Ordering::SeqCst) == generation {
                set_outage(&shared, None, None);
            }
        });
    }
}

/// Largest request body read; the API takes two short parameters.
const MAX_REQUEST_BODY: usize = 64 * 1024;
/// Size of each chunk of an `oversized` body.
const OVERSIZED_CHUNK: usize = 64 * 1024;

type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// Returned by the service to make hyper close the connection without a response.
#[derive(Debug, thiserror::Error)]
#[error("connection closed by the simulator (scripted fault or shutdown)")]
pub(super) struct CloseConnection;

fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into())
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}

fn rendered(r: Rendered, retry_after: Option<Duration>) -> Response<Body> {
    let mut builder = Response::builder()
        .status(r.status)
        .header(header::CONTENT_TYPE, r.content_type);
    if let Some(after) = retry_after {
        builder = builder.header("x-acs-retry-after", after.as_millis().to_string());
    }
    builder
        .body(full(r.body))
        .expect("valid static response parts")
}

fn control_json(status: StatusCode, value: &impl serde::Serialize) -> Response<Body> {
    let body = serde_json::to_vec(value).expect("control answers serialize");
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(full(body))
        .expect("valid static response parts")
}

fn control_error(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    control_json(status, &serde_json::json!({ "error": message.into() }))
}

/// Accepts connections until shutdown; during a `refuse` outage holds no
/// listener at all, and binds the same address again when it ends.
pub(super) async fn accept_loop(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    let addr = listener.local_addr().ok();
    let mut listener = Some(listener);
    let mut modes = shared.outage.subscribe();
    loop {
        if *modes.borrow_and_update() == Some(OutageMode::Refuse) {
            // NB: dropping the listener closes the port: connects are refused.
            listener = None;
            shared.listening.send_replace(false);
            tokio::select! {
                _ = shared.shutdown.cancelled() => return,
                _ = modes.changed() => continue,
            }
        }
        let Some(bound) = listener.as_ref() else {
            let Some(addr) = addr else { return };
            match tokio::net::TcpListener::bind(addr).await {
                Ok(bound) => {
                    listener = Some(bound);
                    shared.listening.send_replace(true);
                }
                Err(e) => {
                    tracing::warn!(error = %e, %addr, "ecs-simulator: cannot listen again yet");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            continue;
        };
        let accepted = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = modes.changed() => continue,
            accepted = bound.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(e) => {
                // NB: accept fails transiently (e.g. too many open files); back off briefly.
                tracing::warn!(error = %e, "ecs-simulator: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let token = shared.shutdown.clone();
            let outage_change = shared.connections();
            let service = hyper::service::service_fn(move |req| handle(shared.clone(), req));
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = conn => {}
                _ = token.cancelled() => {}
                _ = outage_change.cancelled() => {}
            }
        });
    }
}

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Body>, CloseConnection> {
    let path = req.uri().path().to_owned();
    if let Some(rest) = path.strip_prefix("/_simulator/") {
        return Ok(control(&shared, rest.to_owned(), req).await);
    }
    if path == "/" && (req.method() == Method::GET || req.method() == Method::POST) {
        return api(&shared, req).await;
    }
    // Like the gateway: anything else is an unknown API.
    let format = ResponseFormat::of(
        &verify::merge_params(req.uri().query().unwrap_or(""), None).unwrap_or_default(),
    );
    let error = ApiError::new(
        404,
        "InvalidApi.NotFound",
        "Specified api is not found, please check your url and method.",
    );
    let request_id = render::new_request_id();
    let record = refused_record(
        shared.clock.now(),
        req.method().to_string(),
        &error,
        &request_id,
        0,
    );
    log_request(&shared, record);
    Ok(rendered(
        render::error(format, &request_id, &shared.host_id, &error),
        None,
    ))
}

/// The log entry of a request refused before its parameters were read.
fn refused_record(
    time: jiff::Timestamp,
    method: String,
    error: &ApiError,
    request_id: &str,
    delay_ms: u64,
) -> RequestRecord {
    RequestRecord {
        time,
        method,
        action: None,
        region_id: None,
        image_id: None,
        access_key_id: None,
        signature_nonce: None,
        signature_method: None,
        signature_valid: None,
        code: error.code.clone(),
        http_status: Some(error.http_status),
        request_id: Some(request_id.to_owned()),
        connection: ConnectionFate::Answered,
        fault: None,
        delay_ms,
    }
}

fn log_request(shared: &Shared, record: RequestRecord) {
    tracing::info!(
        method = %record.method,
        action = record.action.as_deref().unwrap_or("-"),
        region_id = record.region_id.as_deref().unwrap_or("-"),
        image_id = record.image_id.as_deref().unwrap_or("-"),
        access_key_id = record.access_key_id.as_deref().unwrap_or("-"),
        signature_valid = ?record.signature_valid,
        code = %record.code,
        http_status = ?record.http_status,
        request_id = record.request_id.as_deref().unwrap_or("-"),
        connection = ?record.connection,
        delay_ms = record.delay_ms,
        "ecs-simulator request"
    );
    shared.state().log(record);
}

/// A request's parameters, and for a V3 request everything its signature
/// check needs.
struct Received {
    params: BTreeMap<String, String>,
    v3: Option<(http::request::Parts, Bytes)>,
}

async fn read_params(req: Request<Incoming>) -> Result<Received, ApiError> {
    let is_form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        });
    let query = req.uri().query().unwrap_or("").to_owned();
    let (parts, body) = req.into_parts();
    let body = Limited::new(body, MAX_REQUEST_BODY)
        .collect()
        .await
        .map_err(|_| {
            ApiError::new(
                400,
                "InvalidParameter",
                "The request body is too large or was cut short.",
            )
        })?
        .to_bytes();
    if verify_v3::is_v3(&parts.headers) {
        let params = verify_v3::params_of(&raw_request(&parts, &body))?;
        return Ok(Received {
            params,
            v3: Some((parts, body)),
        });
    }
    let params = verify::merge_params(&query, is_form.then_some(&body[..]))?;
    Ok(Received { params, v3: None })
}

fn raw_request<'a>(parts: &'a http::request::Parts, body: &'a [u8]) -> verify_v3::RawRequest<'a> {
    verify_v3::RawRequest {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query().unwrap_or(""),
        headers: &parts.headers,
        body,
    }
}

/// Waits `delay`, or fails if the simulator shuts down first.
async fn wait(shared: &Shared, delay: Duration) -> Result<(), CloseConnection> {
    if delay.is_zero() {
        return Ok(());
    }
    tokio::select! {
        _ = tokio::time::sleep(delay) => Ok(()),
        _ = shared.shutdown.cancelled() => Err(CloseConnection),
    }
}

async fn api(
    shared: &Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Body>, CloseConnection> {
    let method = req.method().to_string();
    let outage_change = shared.connections();
    let params = read_params(req).await;
    if let Some(mode) = shared.outage() {
        return during_outage(shared, mode, method, params, outage_change).await;
    }
    wait(shared, shared.latency).await?;
    let now = shared.clock.now();
    let request_id = render::new_request_id();
    let received = match params {
        Ok(received) => received,
        Err(error) => {
            let latency = u64::try_from(shared.latency.as_millis()).unwrap_or(u64::MAX);
            let record = refused_record(now, method, &error, &request_id, latency);
            log_request(shared, record);
            return Ok(rendered(
                render::error(ResponseFormat::Json, &request_id, &shared.host_id, &error),
                None,
            ));
        }
    };
    let params = &received.params;
    let mut decision = match &received.v3 {
        None => shared.state().decide(&method, params, now),
        Some((parts, body)) => {
            let raw = raw_request(parts, body);
            shared
                .state()
                .decide_checked(&method, params, now, |checks| {
                    verify_v3::check(&raw, params, checks, now)
                })
        }
    };
    decision.record.delay_ms = decision
        .record
        .delay_ms
        .saturating_add(u64::try_from(shared.latency.as_millis()).unwrap_or(u64::MAX));
    if !matches!(decision.answer, Answer::Drop | Answer::Hang) {
        decision.record.request_id = Some(request_id.clone());
    }
    log_request(shared, decision.record);
    wait(shared, decision.delay).await?;
    let format = decision.format;
    Ok(match decision.answer {
        Answer::Success => rendered(render::success(format, &request_id), None),
        Answer::Error { error, retry_after } => rendered(
            render::error(format, &request_id, &shared.host_id, &error),
            retry_after,
        ),
        Answer::BadGateway => rendered(render::bad_gateway_page(), None),
        Answer::Drop => return Err(CloseConnection),
        Answer::Hang => {
            shared.shutdown.cancelled().await;
            return Err(CloseConnection);
        }
        Answer::Stall => stalled_response(shared, &request_id),
        Answer::Oversized(bytes) => oversized_response(&request_id, bytes),
    })
}

/// An API request during a whole-endpoint outage: logged (fault
/// `outage:MODE`), then answered 503 or held until the outage changes.
async fn during_outage(
    shared: &Arc<Shared>,
    mode: OutageMode,
    method: String,
    params: Result<Received, ApiError>,
    outage_change: CancellationToken,
) -> Result<Response<Body>, CloseConnection> {
    let params = params.map(|r| r.params).unwrap_or_default();
    let error = ApiError::new(
        503,
        "ServiceUnavailable",
        "The request has failed due to a temporary failure of the server.",
    );
    let request_id = render::new_request_id();
    let mut record = refused_record(shared.clock.now(), method, &error, &request_id, 0);
    record.action = params.get("Action").cloned();
    record.region_id = params.get("RegionId").cloned();
    record.image_id = params.get("ImageId").cloned();
    record.fault = Some(format!("outage:{mode}"));
    match mode {
        OutageMode::Unavailable => {
            log_request(shared, record);
            let format = ResponseFormat::of(&params);
            Ok(rendered(
                render::error(format, &request_id, &shared.host_id, &error),
                None,
            ))
        }
        // A connection accepted just before the port closed: cut, like a reset.
        OutageMode::Refuse => Err(CloseConnection),
        OutageMode::Blackhole => {
            record.code = format!("outage:{mode}");
            record.http_status = None;
            record.request_id = None;
            record.connection = ConnectionFate::Held;
            log_request(shared, record);
            tokio::select! {
                _ = outage_change.cancelled() => {}
                _ = shared.shutdown.cancelled() => {}
            }
            Err(CloseConnection)
        }
    }
}

/// 200 headers and the start of a JSON body, then nothing until shutdown.
fn stalled_response(shared: &Shared, request_id: &str) -> Response<Body> {
    let first = Bytes::from(format!("{{\"RequestId\":\"{request_id}\","));
    let token = shared.shutdown.clone();
    let stream = futures::stream::once(async move { Ok(Frame::data(first)) }).chain(
        futures::stream::once(async move {
            token.cancelled().await;
            Err(std::io::Error::other(
                "ecs-simulator shut down during a stalled response",
            ))
        }),
    );
    Response::builder()
        .status(200)
        .header(header::CONTENT_TYPE, render::JSON_CONTENT_TYPE)
        .body(StreamBody::new(stream).boxed_unsync())
        .expect("valid static response parts")
}

/// 200 with a well-formed JSON body of `bytes` bytes (or the smallest such body), sent in chunks.
fn oversized_response(request_id: &str, bytes: u64) -> Response<Body> {
    let head = format!("{{\"RequestId\":\"{request_id}\",\"Padding\":\"");
    let tail = "\"}";
    let overhead = (head.len() + tail.len()) as u64;
    let mut padding = bytes.saturating_sub(overhead);
    let head = Bytes::from(head);
    let chunk = Bytes::from(vec![b'a'; OVERSIZED_CHUNK]);
    let stream = futures::stream::once(async move { head })
        .chain(futures::stream::unfold((), move |()| {
            let chunk = chunk.clone();
            let next = if padding == 0 {
                None
            } else {
                let n = padding.min(OVERSIZED_CHUNK as u64);
                padding -= n;
                Some((chunk.slice(..n as usize), ()))
            };
            async move { next }
        }))
        .chain(futures::stream::once(async move {
            Bytes::from_static(tail.as_bytes())
        }))
        .map(|b| Ok(Frame::data(b)));
    Response::builder()
        .status(200)
        .header(header::CONTENT_TYPE, render::JSON_CONTENT_TYPE)
        .body(StreamBody::new(stream).boxed_unsync())
        .expect("valid static response parts")
}

#[derive(Deserialize)]
struct ImageBody {
    state: ImageState,
}

#[derive(Deserialize)]
struct FaultBody {
    fault: String,
}

async fn control(shared: &Arc<Shared>, rest: String, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().clone();
    let body = match Limited::new(req.into_body(), MAX_REQUEST_BODY)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => return control_error(StatusCode::PAYLOAD_TOO_LARGE, "body too large"),
    };
    let parts: Vec<&str> = rest.split('/').collect();
    match (method, parts.as_slice()) {
        (Method::GET, ["requests"]) => control_json(StatusCode::OK, &shared.state().requests),
        (Method::DELETE, ["requests"]) => {
            shared.state().requests.clear();
            control_json(StatusCode::OK, &serde_json::json!({}))
        }
        (Method::GET, ["images"]) => control_json(StatusCode::OK, &shared.state().images),
        (Method::PUT, ["images", id]) if !id.is_empty() => {
            match serde_json::from_slice::<ImageBody>(&body) {
                Ok(b) => {
                    shared.state().images.insert((*id).to_owned(), b.state);
                    control_json(
                        StatusCode::OK,
                        &serde_json::json!({ "id": id, "state": b.state }),
                    )
                }
                Err(e) => control_error(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "expected {{\"state\": \"copying\"|\"copied\"|\"not-from-copy\"}}: {e}"
                    ),
                ),
            }
        }
        (Method::DELETE, ["images", id]) if !id.is_empty() => {
            match shared.state().images.remove(*id) {
                Some(_) => control_json(StatusCode::OK, &serde_json::json!({ "id": id })),
                None => control_error(StatusCode::NOT_FOUND, format!("no image {id}")),
            }
        }
        (Method::GET, ["faults"]) => control_json(StatusCode::OK, &shared.state().faults.pending()),
        (Method::POST, ["faults"]) => {
            let spec = serde_json::from_slice::<FaultBody>(&body)
                .map_err(|e| format!("expected {{\"fault\": \"TARGET=KIND[:ARG][*COUNT]\"}}: {e}"))
                .and_then(|b| b.fault.parse::<FaultSpec>().map_err(|e| e.to_string()));
            match spec {
                Ok(spec) => {
                    let mut state = shared.state();
                    state.faults.push(spec);
                    control_json(StatusCode::CREATED, &state.faults.pending())
                }
                Err(message) => control_error(StatusCode::BAD_REQUEST, message),
            }
        }
        (Method::DELETE, ["faults"]) => {
            shared.state().faults.clear();
            control_json(StatusCode::OK, &serde_json::json!([]))
        }
        (Method::GET, ["quota"]) => control_json(StatusCode::OK, &shared.state().quota.limits()),
        (Method::PUT, ["quota"]) => match serde_json::from_slice::<QuotaLimits>(&body) {
            Ok(limits) => {
                shared.state().quota.set_limits(limits);
                control_json(StatusCode::OK, &limits)
            }
            Err(e) => control_error(
                StatusCode::BAD_REQUEST,
                format!("expected {{\"perSecond\": N|null, \"perMinute\": N|null}}: {e}"),
            ),
        },
        (Method::GET, ["outage"]) => control_json(
            StatusCode::OK,
            &serde_json::json!({ "mode": shared.outage().map_or("none".to_owned(), |m| m.to_string()) }),
        ),
        (Method::PUT, ["outage"]) => {
            let parsed = serde_json::from_slice::<OutageRequest>(&body)
                .map_err(|e| {
                    format!(
                        "expected {{\"mode\": \"refuse\"|\"blackhole\"|\"unavailable\"|\"none\", \"forMs\": N}}: {e}"
                    )
                })
                .and_then(|request| request.parse());
            match parsed {
                Ok((mode, lasts)) => {
                    // NB: a moment later, so this answer is written before
                    // the change closes the connection it goes out on.
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        set_outage(&shared, mode, lasts);
                    });
                    let mode = mode.map_or("none".to_owned(), |m| m.to_string());
                    control_json(
                        StatusCode::OK,
                        &serde_json::json!({ "mode": mode, "forMs": lasts.map(|d| d.as_millis() as u64) }),
                    )
                }
                Err(e) => control_error(StatusCode::BAD_REQUEST, e),
            }
        }
        (_, ["requests"] | ["images"] | ["images", _] | ["faults"] | ["quota"] | ["outage"]) => {
            control_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this control route",
            )
        }
        _ => control_error(
            StatusCode::NOT_FOUND,
            "unknown control route; see /_simulator/requests, /_simulator/images, /_simulator/faults, \
             /_simulator/quota, /_simulator/outage",
        ),
    }
}
