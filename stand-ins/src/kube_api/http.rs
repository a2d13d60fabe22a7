//! HTTP routing: discovery documents, and the REST verbs on hosted resources.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use base64::Engine;
use http::{HeaderMap, Method, StatusCode, header};
use serde_json::{Value, json};

use super::error::ApiError;
use super::requests::{FaultKind, RequestRecord, Verb};
use super::resource_types::ResourceType;
use super::selector::LabelSelector;
use super::state::{Shared, lock};
use super::store::{self, FieldValidation, Filter, PatchBody, WriteCtx};
use super::{openapi, table, watch};

const MAX_BODY: usize = 16 * 1024 * 1024;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

pub(crate) fn json_response(code: u16, body: &Value) -> Response {
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(serde_json::to_vec(body).unwrap_or_default()))
        .unwrap_or_default()
}

fn error_response(err: &ApiError) -> Response {
    json_response(err.code, &err.to_status())
}

/// 429 as apimachinery's `NewTooManyRequests` renders it: the wait is both in the Status
/// details and in `Retry-After` (the server copies `retryAfterSeconds` into the header).
fn too_many_requests(retry_after_seconds: u32) -> Response {
    let status = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "Too many requests: too many requests, please try again later",
        "reason": "TooManyRequests",
        "details": {"retryAfterSeconds": retry_after_seconds},
        "code": 429,
    });
    let mut response = json_response(429, &status);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, retry_after_seconds.into());
    response
}

/// Where a URL points.
enum Route {
    Version,
    OpenApiRoot,
    OpenApi(String, String),
    Api,
    Apis,
    Group(String),
    GroupVersion(String, String),
    Resource(ResourcePath),
}

struct ResourcePath {
    group: String,
    version: String,
    plural: String,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

fn parse_route(path: &str) -> Option<Route> {
    let segs: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let (group, version, rest) = match segs.as_slice() {
        ["version"] => return Some(Route::Version),
        ["openapi", "v3"] => return Some(Route::OpenApiRoot),
        ["openapi", "v3", "api", v] => return Some(Route::OpenApi(String::new(), v.to_string())),
        ["openapi", "v3", "apis", g, v] => {
            return Some(Route::OpenApi(g.to_string(), v.to_string()));
        }
        ["api"] => return Some(Route::Api),
        ["apis"] => return Some(Route::Apis),
        ["api", v] => return Some(Route::GroupVersion(String::new(), v.to_string())),
        ["apis", g] => return Some(Route::Group(g.to_string())),
        ["apis", g, v] => return Some(Route::GroupVersion(g.to_string(), v.to_string())),
        ["api", v, rest @ ..] => (String::new(), v.to_string(), rest),
        ["apis", g, v, rest @ ..] => (g.to_string(), v.to_string(), rest),
        _ => return None,
    };
    let namespaced_path = rest.len() >= 3
        && rest[0] == "namespaces"
        && !(rest.len() == 3 && matches!(rest[2], "status" | "finalize"));
    let (namespace, tail) = if namespaced_path {
        (Some(rest[1].to_string()), &rest[2..])
    } else {
        (None, rest)
    };
    if tail.is_empty() || tail.len() > 3 {
        return None;
    }
    Some(Route::Resource(ResourcePath {
        group,
        version,
        plural: tail[0].to_string(),
        namespace,
        name: tail.get(1).map(|s| s.to_string()),
        subresource: tail.get(2).map(|s| s.to_string()),
    }))
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let latency = *lock(&shared.latency);
    if let Some(delay) = latency {
        tokio::time::sleep(delay).await;
    }
    let (parts, body) = request.into_parts();
    let Some(route) = parse_route(parts.uri.path()) else {
        return error_response(&ApiError::path_not_found());
    };
    let query: HashMap<String, String> =
        form_urlencoded::parse(parts.uri.query().unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    match route {
        Route::Version => json_response(200, &version()),
        Route::OpenApiRoot => json_response(200, &openapi::root(&shared.store())),
        Route::OpenApi(group, version) => {
            match openapi::group_version(&shared.store(), &group, &version) {
                Some(doc) => json_response(200, &doc),
                None => error_response(&ApiError::path_not_found()),
            }
        }
        Route::Api => json_response(
            200,
            &json!({"kind": "APIVersions", "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": shared.addr.to_string()}]}),
        ),
        Route::Apis => json_response(200, &group_list(&shared)),
        Route::Group(group) => match group_list(&shared)["groups"]
            .as_array()
            .and_then(|g| g.iter().find(|g| g["name"] == json!(group)))
        {
            Some(g) => {
                let mut g = g.clone();
                g["kind"] = json!("APIGroup");
                g["apiVersion"] = json!("v1");
                json_response(200, &g)
            }
            None => error_response(&ApiError::path_not_found()),
        },
        Route::GroupVersion(group, version) => match resource_list(&shared, &group, &version) {
            Some(list) => json_response(200, &list),
            None => error_response(&ApiError::path_not_found()),
        },
        Route::Resource(path) => {
            let body = match axum::body::to_bytes(body, MAX_BODY).await {
                Ok(b) => b,
                Err(e) => {
                    return error_response(&ApiError::bad_request(format!(
                        "reading the request body: {e}"
                    )));
                }
            };
            resource_request(&shared, parts.method, &parts.headers, &query, path, &body).await
        }
    }
}

fn version() -> Value {
    json!({
        "major": "1", "minor": "33", "gitVersion": "v1.33.0-copyimage-canceller-sandbox",
        "gitCommit": "", "gitTreeState": "clean", "buildDate": "2025-01-01T00:00:00Z",
        "goVersion": "go1.24", "compiler": "gc", "platform": "linux/amd64"
    })
}

fn group_list(shared: &Shared) -> Value {
    let store = shared.store();
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for t in store.types.iter().filter(|t| !t.group.is_empty()) {
        match groups.iter_mut().find(|(g, _)| *g == t.group) {
            Some((_, versions)) => {
                if !versions.contains(&t.version) {
                    versions.push(t.version.clone());
                }
            }
            None => groups.push((t.group.clone(), vec![t.version.clone()])),
        }
    }
    let groups: Vec<Value> = groups
        .into_iter()
        .map(|(g, versions)| {
            let vs: Vec<Value> = versions
                .iter()
                .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
                .collect();
            json!({"name": g, "versions": vs, "preferredVersion": vs[0]})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

fn resource_list(shared: &Shared, group: &str, version: &str) -> Option<Value> {
    let store = shared.store();
    let types = store.types_in(group, version);
    if types.is_empty() {
        return None;
    }
    let verbs = json!([
        "create",
        "delete",
        "deletecollection",
        "get",
        "list",
        "patch",
        "update",
        "watch"
    ]);
    let mut resources = Vec::new();
    for t in types {
        let mut r = json!({"name": t.plural, "singularName": t.singular, "namespaced": t.namespaced, "kind": t.kind, "verbs": verbs});
        if !t.short_names.is_empty() {
            r["shortNames"] = json!(t.short_names);
        }
        if !t.categories.is_empty() {
            r["categories"] = json!(t.categories);
        }
        resources.push(r);
        if t.status_subresource {
            resources.push(json!({"name": format!("{}/status", t.plural), "singularName": "", "namespaced": t.namespaced,
                "kind": t.kind, "verbs": ["get", "patch", "update"]}));
        }
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}),
    )
}

/// A create or update body; protobuf is refused with 415 so client-go falls back to JSON.
fn parse_object_body(content_type: &str, body: &[u8]) -> Result<Value, ApiError> {
    if content_type.contains("protobuf") || content_type.contains("cbor") {
        return Err(ApiError::unsupported_media_type(content_type));
    }
    parse_body(body)
}

fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .or_else(|_| serde_yaml_ng::from_slice::<Value>(body))
        .map_err(|e| {
            ApiError::bad_request(format!("the request body is not valid JSON or YAML: {e}"))
        })
}

fn user_agent_manager(headers: &HeaderMap) -> String {
    let agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let prefix = agent.split('/').next().unwrap_or_default().trim();
    if prefix.is_empty() {
        "unknown".into()
    } else {
        prefix.to_string()
    }
}

fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    rv: u64,
    namespace: String,
    name: String,
}

async fn resource_request(
    shared: &Arc<Shared>,
    method: Method,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    path: ResourcePath,
    body: &[u8],
) -> Response {
    let found = {
        let store = shared.store();
        store
            .find_type(&path.group, &path.version, &path.plural)
            .map(|i| (i, store.types[i].clone()))
    };
    let Some((ty, t)) = found else {
        return error_response(&ApiError::path_not_found());
    };
    let subresource = path.subresource.clone().unwrap_or_default();
    let shape_ok = (t.namespaced || path.namespace.is_none())
        && (path.namespace.is_some() || path.name.is_none() || !t.namespaced)
        && (subresource.is_empty()
            || (subresource == "status" && t.status_subresource && path.name.is_some()));
    if !shape_ok {
        return error_response(&ApiError::path_not_found());
    }
    let is_watch = matches!(query.get("watch").map(String::as_str), Some("true" | "1"));
    let verb = match (&method, path.name.is_some()) {
        (&Method::GET, false) if is_watch => Verb::Watch,
        (&Method::GET, false) => Verb::List,
        (&Method::GET, true) => Verb::Get,
        (&Method::POST, false) if subresource.is_empty() => Verb::Create,
        (&Method::PUT, true) => Verb::Update,
        (&Method::PATCH, true) => Verb::Patch,
        (&Method::DELETE, true) if subresource.is_empty() => Verb::Delete,
        (&Method::DELETE, false) => Verb::DeleteCollection,
        _ => return error_response(&ApiError::method_not_allowed()),
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let mut record = RequestRecord {
        verb,
        group: t.group.clone(),
        resource: t.plural.clone(),
        subresource: subresource.clone(),
        namespace: path.namespace.clone(),
        name: path.name.clone(),
        patch_type: (verb == Verb::Patch).then(|| content_type.clone()),
        field_manager: query.get("fieldManager").cloned(),
        code: 200,
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(String::from),
        received: std::time::Instant::now(),
        time: jiff::Timestamp::now(),
        resource_version: None,
        injected: None,
    };
    record.injected = shared.take_fault(&record);
    let response = match record.injected {
        Some(fault) => {
            let name = path.name.clone().unwrap_or_default();
            match fault {
                FaultKind::Conflict => error_response(&ApiError::conflict_modified(&t, &name)),
                FaultKind::InternalError => error_response(&ApiError::internal("injected fault")),
                FaultKind::TooManyRequests {
                    retry_after_seconds,
                } => too_many_requests(retry_after_seconds),
            }
        }
        None => match serve(
            shared,
            ty,
            &t,
            verb,
            headers,
            query,
            &path,
            &subresource,
            &content_type,
            body,
        )
        .await
        {
            Ok(response) => response,
            Err(err) => error_response(&err),
        },
    };
    record.code = response.status().as_u16();
    record.time = jiff::Timestamp::now();
    record.resource_version = response
        .extensions()
        .get::<WrittenVersion>()
        .map(|w| w.0.clone());
    shared.log(record);
    response
}

/// Response extension naming the resourceVersion a write produced, for the request log.
#[derive(Clone)]
struct WrittenVersion(String);

/// A JSON answer carrying a written object, tagged with its resourceVersion.
fn written_response(code: u16, object: &Value) -> Response {
    let mut response = json_response(code, object);
    if let Some(rv) = object
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
    {
        response
            .extensions_mut()
            .insert(WrittenVersion(rv.to_string()));
    }
    response
}

#[allow(clippy::too_many_arguments)]
async fn serve(
    shared: &Arc<Shared>,
    ty: usize,
    t: &ResourceType,
    verb: Verb,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    path: &ResourcePath,
    subresource: &str,
    content_type: &str,
    body: &[u8],
) -> Result<Response, ApiError> {
    if verb.is_write() && query.contains_key("dryRun") {
        return Err(ApiError::bad_request(
            "dryRun is not supported by the sandbox Kubernetes API",
        ));
    }
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let namespace = path.namespace.clone().unwrap_or_default();
    let name = path.name.clone().unwrap_or_default();
    let status = subresource == "status";
    let ctx = WriteCtx {
        manager: query
            .get("fieldManager")
            .cloned()
            .unwrap_or_else(|| user_agent_manager(headers)),
        now: now(),
        field_validation: match query.get("fieldValidation").map(String::as_str) {
            None | Some("" | "Warn") => FieldValidation::Warn,
            Some("Ignore") => FieldValidation::Ignore,
            Some("Strict") => FieldValidation::Strict,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "fieldValidation parameter unsupported: {other:?} (use Ignore, Warn or Strict)"
                )));
            }
        },
        warnings: std::sync::Mutex::new(Vec::new()),
    };
    let filter = || -> Result<Filter, ApiError> {
        Ok(Filter {
            namespace: path.namespace.clone(),
            labels: LabelSelector::parse(
                query
                    .get("labelSelector")
                    .map(String::as_str)
                    .unwrap_or_default(),
            )?,
            fields: store::parse_field_selector(
                t,
                query
                    .get("fieldSelector")
                    .map(String::as_str)
                    .unwrap_or_default(),
            )?,
        })
    };
    let mut response = match verb {
        Verb::Get => {
            let object = shared.store().get(ty, &namespace, &name)?;
            if table::wants_table(accept) {
                return Ok(json_response(
                    200,
                    &table::table(t, std::slice::from_ref(&object), None),
                ));
            }
            Ok(json_response(200, &object))
        }
        Verb::List => list(shared, ty, t, &filter()?, query, table::wants_table(accept)),
        Verb::Watch => watch::watch(
            shared.clone(),
            ty,
            filter()?,
            table::wants_table(accept),
            query,
        ),
        Verb::Create => {
            let object = parse_object_body(content_type, body)?;
            // Bound first so the store's lock is released before the answer is serialized.
            let created = shared.store().create(ty, &namespace, object, &ctx)?;
            Ok(written_response(201, &created))
        }
        Verb::Update => {
            let object = parse_object_body(content_type, body)?;
            let updated = shared
                .store()
                .update(ty, &namespace, &name, object, status, &ctx)?;
            Ok(written_response(200, &updated))
        }
        Verb::Patch => {
            let media = content_type.split(';').next().unwrap_or_default().trim();
            let patch = match media {
                "application/merge-patch+json" => PatchBody::Merge(parse_body(body)?),
                "application/json-patch+json" => PatchBody::Json(
                    serde_json::from_slice(body)
                        .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?,
                ),
                "application/strategic-merge-patch+json" if t.schema.is_none() => {
                    PatchBody::Strategic(parse_body(body)?)
                }
                "application/apply-patch+yaml" => {
                    if query.get("fieldManager").is_none_or(|m| m.is_empty()) {
                        return Err(ApiError::bad_request(
                            "fieldManager is required for apply requests",
                        ));
                    }
                    let force =
                        matches!(query.get("force").map(String::as_str), Some("true" | "1"));
                    PatchBody::Apply {
                        config: parse_body(body)?,
                        force,
                    }
                }
                other => return Err(ApiError::unsupported_media_type(other)),
            };
            // One lock for both: whether an apply creates, and the patch itself.
            let (created, object) = {
                let mut store = shared.store();
                let created = matches!(patch, PatchBody::Apply { .. })
                    && !store.contains(ty, &namespace, &name);
                (
                    created,
                    store.patch(ty, &namespace, &name, patch, status, &ctx)?,
                )
            };
            Ok(written_response(if created { 201 } else { 200 }, &object))
        }
        Verb::Delete => {
            let options: Value = if body.is_empty() {
                json!({})
            } else {
                parse_body(body)?
            };
            let pre = |k: &str| {
                options
                    .pointer(&format!("/preconditions/{k}"))
                    .and_then(Value::as_str)
                    .map(String::from)
            };
            let object = shared.store().delete(
                ty,
                &namespace,
                &name,
                (pre("resourceVersion"), pre("uid")),
                &ctx.now,
            )?;
            Ok(written_response(200, &object))
        }
        Verb::DeleteCollection => {
            let filter = filter()?;
            let mut store = shared.store();
            let mut deleted = Vec::new();
            for object in store.list(ty, &filter, None) {
                let ns = object
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let n = object
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                deleted.push(Arc::unwrap_or_clone(store.delete(
                    ty,
                    &ns,
                    &n,
                    (None, None),
                    &ctx.now,
                )?));
            }
            let rv = store.rv;
            Ok(json_response(
                200,
                &json!({"kind": format!("{}List", t.kind), "apiVersion": t.api_version(), "metadata": {"resourceVersion": rv.to_string()}, "items": deleted}),
            ))
        }
    }?;
    let warnings = ctx.warnings.lock().map(|w| w.clone()).unwrap_or_default();
    for warning in warnings {
        let text = format!(
            "299 - {}",
            serde_json::to_string(&warning).unwrap_or_default()
        );
        if let Ok(value) = http::HeaderValue::from_str(&text) {
            response.headers_mut().append(header::WARNING, value);
        }
    }
    Ok(response)
}

fn list(
    shared: &Shared,
    ty: usize,
    t: &ResourceType,
    filter: &Filter,
    query: &HashMap<String, String>,
    as_table: bool,
) -> Result<Response, ApiError> {
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let token: Option<ContinueToken> = match query.get("continue").filter(|c| !c.is_empty()) {
        Some(raw) => Some(
            engine
                .decode(raw)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .ok_or_else(|| ApiError::bad_request("continue key is not valid"))?,
        ),
        None => None,
    };
    let after = token
        .as_ref()
        .map(|t| (t.namespace.clone(), t.name.clone()));
    let limit = query
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0);
    // The page is copied out under the lock and rendered after it is released.
    let (items, remaining, current_rv) = {
        let store = shared.store();
        let (items, remaining) = store.list_page(ty, filter, after.as_ref(), limit);
        (items, remaining, store.rv)
    };
    let rv = token.as_ref().map_or(current_rv, |t| t.rv);
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if remaining > 0
        && let Some(last) = items.last()
    {
        let next = ContinueToken {
            rv,
            namespace: last
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            name: last
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        };
        metadata["continue"] = json!(engine.encode(serde_json::to_vec(&next).unwrap_or_default()));
        metadata["remainingItemCount"] = json!(remaining);
    }
    if as_table {
        let mut rendered = table::table(t, &items, Some(rv));
        rendered["metadata"] = metadata;
        return Ok(json_response(200, &rendered));
    }
    // NB: built by hand, not with `json!`, which would copy every item.
    let mut list = serde_json::Map::new();
    list.insert("kind".into(), json!(format!("{}List", t.kind)));
    list.insert("apiVersion".into(), json!(t.api_version()));
    list.insert("metadata".into(), metadata);
    list.insert("items".into(), Value::Array(items));
    Ok(json_response(200, &Value::Object(list)))
}
