//! Watch streams: newline-delimited JSON events, bookmarks, initial events, 410 Gone.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::response::Response;
use futures::SinkExt;
use futures::channel::mpsc;
use http::{StatusCode, header};
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

use super::error::ApiError;
use super::resource_types::ResourceType;
use super::state::{Shared, lock};
use super::store::{Change, ChangeKind, Filter, present};
use super::table;

fn line(kind: &str, object: &Value) -> Bytes {
    // `{"type":KIND,"object":OBJECT}` written directly: `json!` would copy the object first.
    let mut bytes = Vec::with_capacity(256);
    bytes.extend_from_slice(b"{\"type\":");
    serde_json::to_writer(&mut bytes, kind).unwrap_or_default();
    bytes.extend_from_slice(b",\"object\":");
    serde_json::to_writer(&mut bytes, object).unwrap_or_default();
    bytes.extend_from_slice(b"}\n");
    Bytes::from(bytes)
}

fn bookmark(t: &ResourceType, rv: u64, initial_end: bool) -> Bytes {
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    line(
        "BOOKMARK",
        &json!({"kind": t.kind, "apiVersion": t.api_version(), "metadata": metadata}),
    )
}

/// The event a watch with `filter` sees for a change, if any: objects moving into or out of
/// the selection appear as ADDED or DELETED, like the API server's watch cache does.
fn event_for(change: &Change, view: &View) -> Option<Bytes> {
    // A view (core/v1 Event) converts before matching; a type serving its own storage
    // matches the stored objects as they are, without copying them.
    let converted = view.t.view_of.is_some();
    let object = converted.then(|| present(&view.t, Value::clone(&change.object)));
    let now = view
        .filter
        .matches(object.as_ref().unwrap_or(&change.object));
    let before = change.old.as_ref().is_some_and(|o| {
        if converted {
            view.filter.matches(&present(&view.t, Value::clone(o)))
        } else {
            view.filter.matches(o)
        }
    });
    let kind = match change.kind {
        ChangeKind::Added => now.then_some(0),
        ChangeKind::Modified => match (before, now) {
            (true, true) => Some(1),
            (false, true) => Some(0),
            (true, false) => Some(2),
            (false, false) => None,
        },
        ChangeKind::Deleted => (now || before).then_some(2),
    }?;
    let name = ["ADDED", "MODIFIED", "DELETED"][kind];
    match object {
        Some(object) => Some(view.line(name, &object)),
        None if view.as_table => Some(view.line(name, &change.object)),
        None => Some(
            change.lines[kind]
                .get_or_init(|| line(name, &change.object))
                .clone(),
        ),
    }
}

/// How one watch presents objects: its type (views convert), filter, and Table rendering.
struct View {
    t: Arc<ResourceType>,
    filter: Filter,
    as_table: bool,
}

impl View {
    fn line(&self, kind: &str, object: &Value) -> Bytes {
        if self.as_table {
            line(
                kind,
                &table::table(&self.t, std::slice::from_ref(object), None),
            )
        } else {
            line(kind, object)
        }
    }
}

/// Answers `?watch=true`.
pub(crate) fn watch(
    shared: Arc<Shared>,
    ty: usize,
    filter: Filter,
    as_table: bool,
    query: &HashMap<String, String>,
) -> Result<Response, ApiError> {
    let flag = |k: &str| matches!(query.get(k).map(String::as_str), Some("true" | "1"));
    let bookmarks = flag("allowWatchBookmarks");
    let send_initial = flag("sendInitialEvents");
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .map(Duration::from_secs);
    let from = query
        .get("resourceVersion")
        .filter(|rv| !rv.is_empty() && rv.as_str() != "0");
    let from = match from {
        Some(rv) => Some(
            rv.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv:?}")))?,
        ),
        None => None,
    };

    // What the watch starts with is gathered under the store's lock (the history holds
    // shared changes; a list is copied out) and serialized after it is released.
    let (t, backlog, initial, start, mut rx, view, storage) = {
        let store = shared.store();
        let t = store.types[ty].clone();
        let storage = store.storage_of(ty);
        let rx = store.tx.subscribe();
        let view = View {
            t: t.clone(),
            filter,
            as_table,
        };
        let mut backlog = Vec::new();
        let mut initial = Vec::new();
        let start = match from {
            Some(from) if !send_initial => match store.changes_since(from) {
                Ok(changes) => {
                    let start = from.max(changes.last().map_or(0, |c| c.rv));
                    backlog = changes;
                    start
                }
                Err(gone) => {
                    // The real server answers 200 and reports expiry as an ERROR event.
                    let body = line("ERROR", &gone.to_status());
                    return Ok(stream_response(Body::from(body)));
                }
            },
            _ => {
                initial = store.list(ty, &view.filter, None);
                store.rv
            }
        };
        (t, backlog, initial, start, rx, view, storage)
    };
    // Each line with the commit time of its change (a lagging watch holds it until then
    // plus the lag); the initial list is current state, sent at once.
    let mut first: Vec<(Option<Instant>, Bytes)> = backlog
        .iter()
        .filter(|c| c.ty == storage)
        .filter_map(|c| Some((Some(c.at), event_for(c, &view)?)))
        .collect();
    first.extend(
        initial
            .iter()
            .map(|object| (None, view.line("ADDED", object))),
    );
    if send_initial && bookmarks {
        first.push((None, bookmark(&t, start, true)));
    }

    let (mut tx, body_rx) = mpsc::channel::<Result<Bytes, Infallible>>(64);
    let dropped = shared.watch_token();
    let shutdown = shared.shutdown.clone();
    let interval = shared.config.bookmark_interval;
    // Waits out the watch lag for a change committed `at`; false if the watch ended meanwhile.
    let lagged = {
        let (dropped, shutdown) = (dropped.clone(), shutdown.clone());
        move |at: Instant| {
            let lag = *lock(&shared.watch_lag);
            let (dropped, shutdown) = (dropped.clone(), shutdown.clone());
            async move {
                let Some(lag) = lag else { return true };
                tokio::select! {
                    _ = dropped.cancelled() => false,
                    _ = shutdown.cancelled() => false,
                    _ = tokio::time::sleep_until(at + lag) => true,
                }
            }
        }
    };
    tokio::spawn(async move {
        for (at, bytes) in first {
            if let Some(at) = at
                && !lagged(at).await
            {
                return;
            }
            if tx.send(Ok(bytes)).await.is_err() {
                return;
            }
        }
        let mut last = start;
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        let deadline = tokio::time::sleep(timeout.unwrap_or(Duration::from_secs(365 * 24 * 3600)));
        tokio::pin!(deadline);
        loop {
            let bytes = tokio::select! {
                _ = dropped.cancelled() => return,
                _ = shutdown.cancelled() => return,
                _ = &mut deadline => return,
                _ = ticker.tick(), if bookmarks => bookmark(&t, last, false),
                received = rx.recv() => match received {
                    Ok(change) => {
                        if change.rv <= last {
                            continue;
                        }
                        last = change.rv;
                        if change.ty != storage {
                            continue;
                        }
                        let Some(bytes) = event_for(&change, &view) else {
                            continue;
                        };
                        if !lagged(change.at).await {
                            return;
                        }
                        bytes
                    }
                    // A watcher too slow for the buffer is closed, as the real server does;
                    // the client resumes from its last resourceVersion.
                    Err(RecvError::Lagged(_)) | Err(RecvError::Closed) => return,
                },
            };
            if tx.send(Ok(bytes)).await.is_err() {
                return;
            }
        }
    });
    Ok(stream_response(Body::from_stream(body_rx)))
}

fn stream_response(body: Body) -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body)
        .unwrap_or_default()
}
