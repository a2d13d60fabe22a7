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

use super::Shared;
use super::error::ApiError;
use super::store::{Change, ChangeKind, Filter, ResourceType, present};
use super::table;

fn line(kind: &str, object: &Value) -> Bytes {
    let mut bytes =
        serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
    bytes.push(b'\n');
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
    let object = present(&view.t, change.object.clone());
    let now = view.filter.matches(&object);
    let before = change
        .old
        .as_ref()
        .is_some_and(|o| view.filter.matches(&present(&view.t, o.clone())));
    let kind = match change.kind {
        ChangeKind::Added => now.then_some("ADDED"),
        ChangeKind::Modified => match (before, now) {
            (true, true) => Some("MODIFIED"),
            (false, true) => Some("ADDED"),
            (true, false) => Some("DELETED"),
            (false, false) => None,
        },
        ChangeKind::Deleted => (now || before).then_some("DELETED"),
    }?;
    Some(view.line(kind, object))
}

/// How one watch presents objects: its type (views convert), filter, and Table rendering.
struct View {
    t: Arc<ResourceType>,
    filter: Filter,
    as_table: bool,
}

impl View {
    fn line(&self, kind: &str, object: Value) -> Bytes {
        if self.as_table {
            line(kind, &table::table(&self.t, &[object], None))
        } else {
            line(kind, &object)
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

    let (t, mut first, start, mut rx, view, storage) = {
        let store = shared.store();
        let t = store.types[ty].clone();
        let storage = store.storage_of(ty);
        let rx = store.tx.subscribe();
        let view = View {
            t: t.clone(),
            filter,
            as_table,
        };
        let mut first = Vec::new();
        let start = match from {
            Some(from) if !send_initial => match store.changes_since(from) {
                Ok(changes) => {
                    first.extend(
                        changes
                            .iter()
                            .filter(|c| c.ty == storage)
                            .filter_map(|c| event_for(c, &view)),
                    );
                    from.max(changes.last().map_or(0, |c| c.rv))
                }
                Err(gone) => {
                    // The real server answers 200 and reports expiry as an ERROR event.
                    let body = line("ERROR", &gone.to_status());
                    return Ok(stream_response(Body::from(body)));
                }
            },
            _ => {
                for object in store.list(ty, &view.filter, None) {
                    first.push(view.line("ADDED", object));
                }
                store.rv
            }
        };
        (t, first, start, rx, view, storage)
    };
    if send_initial && bookmarks {
        first.push(bookmark(&t, start, true));
    }

    let (mut tx, body_rx) = mpsc::channel::<Result<Bytes, Infallible>>(64);
    let dropped = shared.watch_token();
    let shutdown = shared.shutdown.clone();
    let interval = shared.config.bookmark_interval;
    tokio::spawn(async move {
        for bytes in first {
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
                        match event_for(&change, &view) {
                            Some(bytes) => bytes,
                            None => continue,
                        }
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
