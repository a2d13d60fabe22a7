//! A minimal OpenAPI v3 surface (`/openapi/v3`): enough for kubectl to see that PATCH takes
//! `fieldValidation` (so `kubectl apply` validates on the server) and for `kubectl explain`
//! to read the CRD schemas.

use serde_json::{Map, Value, json};

use super::resource_types::ResourceType;
use super::store::Store;

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `GET /openapi/v3`: one entry per group-version.
pub(crate) fn root(store: &Store) -> Value {
    let mut paths = Map::new();
    for t in &store.types {
        let path = gv_path(&t.group, &t.version);
        paths.insert(
            path.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash=sandbox")}),
        );
    }
    json!({"paths": paths})
}

fn schema_name(t: &ResourceType) -> String {
    // Reverse-DNS of the group, like the API server (`com.example.test.v1.Widget`).
    let mut parts: Vec<&str> = if t.group.is_empty() {
        vec!["io", "k8s", "api", "core"]
    } else {
        t.group.split('.').rev().collect()
    };
    parts.push(&t.version);
    parts.push(&t.kind);
    parts.join(".")
}

fn parameter(name: &str) -> Value {
    json!({"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": true}})
}

/// `GET /openapi/v3/apis/{group}/{version}` (or `/openapi/v3/api/v1`).
pub(crate) fn group_version(store: &Store, group: &str, version: &str) -> Option<Value> {
    let types = store.types_in(group, version);
    if types.is_empty() {
        return None;
    }
    let mut paths = Map::new();
    let mut schemas = Map::new();
    for t in types {
        let gvk = json!({"group": t.group, "version": t.version, "kind": t.kind});
        let base = if t.group.is_empty() {
            format!("/api/{version}")
        } else {
            format!("/apis/{group}/{version}")
        };
        let item = if t.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}/{{name}}", t.plural)
        } else {
            format!("{base}/{}/{{name}}", t.plural)
        };
        let op = |action: &str, params: &[&str]| {
            json!({"x-kubernetes-group-version-kind": gvk, "x-kubernetes-action": action,
                "parameters": params.iter().map(|p| parameter(p)).collect::<Vec<_>>(),
                "responses": {"200": {"description": "OK"}}})
        };
        paths.insert(
            item,
            json!({
                "get": op("get", &[]),
                "put": op("put", &["dryRun", "fieldManager", "fieldValidation"]),
                "patch": op("patch", &["dryRun", "fieldManager", "fieldValidation", "force"]),
                "delete": op("delete", &["dryRun", "gracePeriodSeconds", "propagationPolicy"]),
            }),
        );
        let mut schema = t.schema.clone().unwrap_or_else(
            || json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
        );
        schema["x-kubernetes-group-version-kind"] = json!([gvk]);
        schemas.insert(schema_name(t), schema);
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}
