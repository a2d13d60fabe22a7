//! Field ownership (`metadata.managedFields`, `FieldsV1`) and server-side apply merging.
//!
//! A field set is a set of paths to leaves: scalars, atomic lists, empty maps, and the
//! membership markers of items in `x-kubernetes-list-type: map` lists (a path ending in a
//! key segment). Maps and map-lists are granular: two managers can own different keys.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

/// One step in a field path.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Seg {
    /// A map key or struct field (`f:name`).
    F(String),
    /// An item of a map-list, identified by its key fields as canonical JSON (`k:{"type":"Ready"}`).
    K(String),
    /// A segment kind we do not produce (`v:`, `i:`), kept verbatim so foreign entries round-trip.
    Other(String),
}

/// A path from the object root.
pub(crate) type Path = Vec<Seg>;

/// Which part of the object a write may touch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scope {
    /// The main resource; `status` excluded when the status subresource is on.
    Main { status_subresource: bool },
    /// The `/status` subresource: only `.status`.
    Status,
}

impl Scope {
    pub(crate) fn subresource(self) -> &'static str {
        match self {
            Scope::Main { .. } => "",
            Scope::Status => "status",
        }
    }

    /// Whether a top-level field of the object is owned and written through this scope.
    pub(crate) fn covers(self, top: &str) -> bool {
        match (self, top) {
            (_, "apiVersion" | "kind") => false,
            (Scope::Status, field) => field == "status",
            (Scope::Main { status_subresource }, "status") => !status_subresource,
            (Scope::Main { .. }, _) => true,
        }
    }
}

/// Metadata fields that are owned like user data; the rest of `metadata` is server-managed.
const OWNED_METADATA: [&str; 4] = ["labels", "annotations", "finalizers", "ownerReferences"];

pub(crate) fn child_schema<'a>(schema: Option<&'a Value>, field: &str) -> Option<&'a Value> {
    let schema = schema?;
    schema
        .get("properties")
        .and_then(|p| p.get(field))
        .or_else(|| schema.get("additionalProperties").filter(|a| a.is_object()))
}

pub(crate) fn items_schema(schema: Option<&Value>) -> Option<&Value> {
    schema?.get("items")
}

/// Key field names of a `x-kubernetes-list-type: map` list.
pub(crate) fn list_map_keys(schema: Option<&Value>) -> Option<Vec<String>> {
    let schema = schema?;
    if schema.get("x-kubernetes-list-type").and_then(Value::as_str) != Some("map") {
        return None;
    }
    let keys = schema.get("x-kubernetes-list-map-keys")?.as_array()?;
    Some(
        keys.iter()
            .filter_map(|k| k.as_str().map(String::from))
            .collect(),
    )
}

fn atomic_map(schema: Option<&Value>) -> bool {
    schema
        .and_then(|s| s.get("x-kubernetes-map-type"))
        .and_then(Value::as_str)
        == Some("atomic")
}

/// Canonical identity of a map-list item: its key fields, sorted, as compact JSON.
pub(crate) fn item_key(item: &Value, keys: &[String]) -> String {
    let mut sorted: Vec<&String> = keys.iter().collect();
    sorted.sort();
    let mut map = Map::new();
    for key in sorted {
        map.insert(key.clone(), item.get(key).cloned().unwrap_or(Value::Null));
    }
    Value::Object(map).to_string()
}

fn is_marker(path: &Path) -> bool {
    matches!(path.last(), Some(Seg::K(_)))
}

/// Every owned leaf of `object` within `scope`, with its value (`Null` for item markers).
pub(crate) fn leaves(
    object: &Value,
    schema: Option<&Value>,
    scope: Scope,
) -> BTreeMap<Path, Value> {
    let mut out = BTreeMap::new();
    let Some(map) = object.as_object() else {
        return out;
    };
    for (top, value) in map {
        if !scope.covers(top) {
            continue;
        }
        if top == "metadata" {
            let Some(meta) = value.as_object() else {
                continue;
            };
            for field in OWNED_METADATA {
                if let Some(v) = meta.get(field) {
                    walk(
                        v,
                        None,
                        vec![Seg::F("metadata".into()), Seg::F(field.into())],
                        &mut out,
                    );
                }
            }
            continue;
        }
        walk(
            value,
            child_schema(schema, top),
            vec![Seg::F(top.clone())],
            &mut out,
        );
    }
    out
}

fn walk(value: &Value, schema: Option<&Value>, path: Path, out: &mut BTreeMap<Path, Value>) {
    match value {
        Value::Object(map) if !map.is_empty() && !atomic_map(schema) => {
            for (k, v) in map {
                let mut p = path.clone();
                p.push(Seg::F(k.clone()));
                walk(v, child_schema(schema, k), p, out);
            }
        }
        Value::Array(items) if !items.is_empty() && list_map_keys(schema).is_some() => {
            let keys = list_map_keys(schema).unwrap_or_default();
            let item_schema = items_schema(schema);
            for item in items {
                let mut p = path.clone();
                p.push(Seg::K(item_key(item, &keys)));
                out.insert(p.clone(), Value::Null);
                if let Some(fields) = item.as_object() {
                    for (k, v) in fields {
                        let mut child = p.clone();
                        child.push(Seg::F(k.clone()));
                        walk(v, child_schema(item_schema, k), child, out);
                    }
                }
            }
        }
        _ => {
            out.insert(path, value.clone());
        }
    }
}

/// Human form of a path, as the API server prints it in apply conflicts (`.spec.x`, `.status.conditions[type="Ready"]`).
pub(crate) fn path_string(path: &Path) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::F(name) => {
                s.push('.');
                s.push_str(name);
            }
            Seg::K(key) => {
                let map: Map<String, Value> = serde_json::from_str(key).unwrap_or_default();
                let parts: Vec<String> = map.iter().map(|(k, v)| format!("{k}={v}")).collect();
                s.push_str(&format!("[{}]", parts.join(",")));
            }
            Seg::Other(raw) => {
                s.push('.');
                s.push_str(raw);
            }
        }
    }
    s
}

fn find_item<'a>(items: &'a mut [Value], key: &str) -> Option<&'a mut Value> {
    let wanted: Map<String, Value> = serde_json::from_str(key).ok()?;
    items.iter_mut().find(|item| {
        wanted
            .iter()
            .all(|(k, v)| item.get(k).unwrap_or(&Value::Null) == v)
    })
}

/// Removes the value at `path` (a field, or a map-list item for a marker path).
pub(crate) fn remove_path(object: &mut Value, path: &Path) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut node = object;
    for seg in parents {
        let next = match seg {
            Seg::F(name) => node.get_mut(name.as_str()),
            Seg::K(key) => node.as_array_mut().and_then(|items| find_item(items, key)),
            Seg::Other(_) => None,
        };
        match next {
            Some(n) => node = n,
            None => return,
        }
    }
    match last {
        Seg::F(name) => {
            if let Some(map) = node.as_object_mut() {
                map.remove(name);
            }
        }
        Seg::K(key) => {
            if let (Some(items), Ok(wanted)) = (
                node.as_array_mut(),
                serde_json::from_str::<Map<String, Value>>(key),
            ) {
                items.retain(|item| {
                    !wanted
                        .iter()
                        .all(|(k, v)| item.get(k).unwrap_or(&Value::Null) == v)
                });
            }
        }
        Seg::Other(_) => {}
    }
}

/// Merges an applied configuration into a live value: maps merge by key, map-lists by item key,
/// everything else (scalars, atomic lists) is replaced.
pub(crate) fn merge(live: &mut Value, config: &Value, schema: Option<&Value>) {
    match (live, config) {
        (Value::Object(live_map), Value::Object(cfg_map)) if !atomic_map(schema) => {
            for (k, v) in cfg_map {
                let child = child_schema(schema, k);
                match live_map.get_mut(k) {
                    Some(existing) => merge(existing, v, child),
                    None => {
                        live_map.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (Value::Array(live_items), Value::Array(cfg_items)) if list_map_keys(schema).is_some() => {
            let keys = list_map_keys(schema).unwrap_or_default();
            let item_schema = items_schema(schema);
            for item in cfg_items {
                let key = item_key(item, &keys);
                match find_item(live_items, &key) {
                    Some(existing) => merge(existing, item, item_schema),
                    None => live_items.push(item.clone()),
                }
            }
        }
        (live, config) => *live = config.clone(),
    }
}

/// One `managedFields` entry.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ManagedEntry {
    pub manager: String,
    pub operation: String,
    pub subresource: String,
    pub api_version: String,
    pub time: String,
    pub fields: BTreeSet<Path>,
}

impl ManagedEntry {
    /// A new entry: `writer` owns `fields` since now.
    fn new(writer: &Writer, operation: &str, subresource: &str, fields: BTreeSet<Path>) -> Self {
        ManagedEntry {
            manager: writer.manager.to_string(),
            operation: operation.into(),
            subresource: subresource.to_string(),
            api_version: writer.api_version.to_string(),
            time: writer.now.to_string(),
            fields,
        }
    }

    fn same_owner(&self, manager: &str, operation: &str, subresource: &str) -> bool {
        self.manager == manager && self.operation == operation && self.subresource == subresource
    }
}

/// Reads `metadata.managedFields` of a stored object.
pub(crate) fn read_managed(object: &Value) -> Vec<ManagedEntry> {
    let Some(entries) = object
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    entries
        .iter()
        .map(|e| {
            let text = |k: &str| {
                e.get(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            let mut fields = BTreeSet::new();
            if let Some(v1) = e.get("fieldsV1") {
                parse_fields_v1(v1, Vec::new(), &mut fields);
            }
            ManagedEntry {
                manager: text("manager"),
                operation: text("operation"),
                subresource: text("subresource"),
                api_version: text("apiVersion"),
                time: text("time"),
                fields,
            }
        })
        .collect()
}

fn parse_fields_v1(node: &Value, path: Path, out: &mut BTreeSet<Path>) {
    let Some(map) = node.as_object() else { return };
    for (key, child) in map {
        if key == "." {
            continue;
        }
        let seg = if let Some(name) = key.strip_prefix("f:") {
            Seg::F(name.to_string())
        } else if let Some(k) = key.strip_prefix("k:") {
            Seg::K(
                serde_json::from_str::<Value>(k)
                    .map(|v| v.to_string())
                    .unwrap_or_else(|_| k.to_string()),
            )
        } else {
            Seg::Other(key.clone())
        };
        let mut p = path.clone();
        p.push(seg);
        let child_map = child.as_object();
        if child_map.is_none_or(|m| m.is_empty() || m.contains_key(".")) {
            out.insert(p.clone());
        }
        parse_fields_v1(child, p, out);
    }
}

#[derive(Default)]
struct Trie {
    member: bool,
    children: BTreeMap<String, Trie>,
}

fn seg_key(seg: &Seg) -> String {
    match seg {
        Seg::F(name) => format!("f:{name}"),
        Seg::K(key) => format!("k:{key}"),
        Seg::Other(raw) => raw.clone(),
    }
}

fn render_trie(trie: &Trie, item: bool) -> Value {
    let mut map = Map::new();
    if trie.member && (item || !trie.children.is_empty()) {
        map.insert(".".into(), json!({}));
    }
    for (k, child) in &trie.children {
        map.insert(k.clone(), render_trie(child, k.starts_with("k:")));
    }
    Value::Object(map)
}

/// Renders a field set as `FieldsV1` JSON.
pub(crate) fn fields_v1(fields: &BTreeSet<Path>) -> Value {
    let mut root = Trie::default();
    for path in fields {
        let mut node = &mut root;
        for seg in path {
            node = node.children.entry(seg_key(seg)).or_default();
        }
        node.member = true;
    }
    render_trie(&root, false)
}

/// Writes entries back as `metadata.managedFields` (removed when empty).
pub(crate) fn write_managed(object: &mut Value, entries: &[ManagedEntry]) {
    let rendered: Vec<Value> = entries
        .iter()
        .map(|e| {
            let mut v = json!({
                "manager": e.manager,
                "operation": e.operation,
                "apiVersion": e.api_version,
                "time": e.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": fields_v1(&e.fields),
            });
            if !e.subresource.is_empty() {
                v["subresource"] = json!(e.subresource);
            }
            v
        })
        .collect();
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        if rendered.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(rendered));
        }
    }
}

/// Who is writing, for ownership bookkeeping.
pub(crate) struct Writer<'a> {
    pub manager: &'a str,
    pub scope: Scope,
    pub api_version: &'a str,
    pub now: &'a str,
}

/// Records a non-apply write (create, update, merge/JSON patch): the writer takes ownership of
/// every leaf it changed, other owners lose those leaves, removed leaves lose all owners.
pub(crate) fn record_update(
    entries: &mut Vec<ManagedEntry>,
    writer: &Writer<'_>,
    old: &BTreeMap<Path, Value>,
    new: &BTreeMap<Path, Value>,
) {
    let changed: BTreeSet<Path> = new
        .iter()
        .filter(|(p, v)| old.get(*p) != Some(*v))
        .map(|(p, _)| p.clone())
        .collect();
    let removed: BTreeSet<Path> = old
        .keys()
        .filter(|p| !new.contains_key(*p))
        .cloned()
        .collect();
    for entry in entries.iter_mut() {
        entry
            .fields
            .retain(|p| !changed.contains(p) && !removed.contains(p));
    }
    if !changed.is_empty() {
        let sub = writer.scope.subresource();
        match entries
            .iter_mut()
            .find(|e| e.same_owner(writer.manager, "Update", sub))
        {
            Some(entry) => {
                entry.fields.extend(changed);
                entry.time = writer.now.to_string();
                entry.api_version = writer.api_version.to_string();
            }
            None => entries.push(ManagedEntry::new(writer, "Update", sub, changed)),
        }
    }
    entries.retain(|e| !e.fields.is_empty());
}

/// Server-side apply of `config` onto `live` by `writer`. Returns the merged object, or the
/// conflicts `(manager, field)` when another manager owns a field with a different value and
/// `force` is off.
pub(crate) fn apply(
    live: &Value,
    config: &Value,
    schema: Option<&Value>,
    entries: &mut Vec<ManagedEntry>,
    writer: &Writer<'_>,
    force: bool,
) -> Result<Value, Vec<(String, String)>> {
    let sub = writer.scope.subresource();
    let cfg = leaves(config, schema, writer.scope);
    let live_leaves = leaves(live, schema, writer.scope);
    let mut conflicts = Vec::new();
    for entry in entries.iter_mut() {
        if entry.manager == writer.manager {
            continue;
        }
        let clashing: Vec<Path> = cfg
            .iter()
            .filter(|(p, v)| {
                !is_marker(p) && entry.fields.contains(*p) && live_leaves.get(*p) != Some(*v)
            })
            .map(|(p, _)| p.clone())
            .collect();
        for p in &clashing {
            conflicts.push((entry.manager.clone(), path_string(p)));
        }
        if force {
            entry.fields.retain(|p| !clashing.contains(p));
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflicts);
    }
    let previous = entries
        .iter()
        .find(|e| e.same_owner(writer.manager, "Apply", sub))
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    let others: BTreeSet<&Path> = entries
        .iter()
        .filter(|e| !e.same_owner(writer.manager, "Apply", sub))
        .flat_map(|e| e.fields.iter())
        .collect();
    let mut removed: Vec<&Path> = previous
        .iter()
        .filter(|p| !cfg.contains_key(*p) && !others.contains(p))
        .collect();
    // Item markers before their fields: an item is found by its key fields, so they must
    // still be there when the item itself goes.
    removed.sort_by_key(|p| p.len());

    let mut merged = live.clone();
    merge(&mut merged, config, schema);
    for path in removed {
        remove_path(&mut merged, path);
    }
    let fields: BTreeSet<Path> = cfg.into_keys().collect();
    match entries
        .iter_mut()
        .find(|e| e.same_owner(writer.manager, "Apply", sub))
    {
        Some(entry) => {
            if entry.fields != fields {
                entry.time = writer.now.to_string();
            }
            entry.fields = fields;
            entry.api_version = writer.api_version.to_string();
        }
        None => entries.push(ManagedEntry::new(writer, "Apply", sub, fields)),
    }
    entries.retain(|e| !e.fields.is_empty());
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conditions_schema() -> Value {
        json!({"type": "object", "properties": {"status": {"type": "object", "properties": {
            "phase": {"type": "string"},
            "conditions": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"],
                "items": {"type": "object", "properties": {"type": {"type": "string"}, "status": {"type": "string"}}}}
        }}}})
    }

    #[test]
    fn fields_v1_round_trips() {
        let schema = conditions_schema();
        let obj = json!({"metadata": {"labels": {"a": "1"}}, "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}]}});
        let set: BTreeSet<Path> = leaves(
            &obj,
            Some(&schema),
            Scope::Main {
                status_subresource: false,
            },
        )
        .into_keys()
        .collect();
        let v1 = fields_v1(&set);
        assert_eq!(
            v1,
            json!({"f:metadata": {"f:labels": {"f:a": {}}}, "f:status": {"f:phase": {}, "f:conditions": {"k:{\"type\":\"Ready\"}": {".": {}, "f:type": {}, "f:status": {}}}}})
        );
        let mut parsed = BTreeSet::new();
        parse_fields_v1(&v1, Vec::new(), &mut parsed);
        assert_eq!(parsed, set);
    }

    #[test]
    fn apply_removes_fields_the_manager_stopped_applying_and_merges_map_lists() {
        let schema = conditions_schema();
        let scope = Scope::Main {
            status_subresource: false,
        };
        let writer = Writer {
            manager: "a",
            scope,
            api_version: "v1",
            now: "t",
        };
        let mut entries = Vec::new();
        let first = json!({"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}]}});
        let live = apply(
            &json!({}),
            &first,
            Some(&schema),
            &mut entries,
            &writer,
            false,
        )
        .unwrap();
        let other = Writer {
            manager: "b",
            scope,
            api_version: "v1",
            now: "t",
        };
        let second = json!({"status": {"conditions": [{"type": "Stalled", "status": "True"}]}});
        let live = apply(&live, &second, Some(&schema), &mut entries, &other, false).unwrap();
        assert_eq!(live["status"]["conditions"].as_array().unwrap().len(), 2);
        let third = json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        let live = apply(&live, &third, Some(&schema), &mut entries, &writer, false).unwrap();
        assert_eq!(
            live,
            json!({"status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "Stalled", "status": "True"}]}})
        );
        let clash = json!({"status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}});
        let err = apply(&live, &clash, Some(&schema), &mut entries, &other, false).unwrap_err();
        assert_eq!(
            err,
            vec![(
                "a".to_string(),
                ".status.conditions[type=\"Ready\"].status".to_string()
            )]
        );
    }
}
