//! Admission for custom resources: pruning, defaulting and validation against the CRD's
//! structural `openAPIV3Schema`, then the CEL rules in `x-kubernetes-validations`.

use std::collections::HashMap;
use std::sync::Arc;

use kube::core::cel::CompiledSchema;

use serde_json::{Map, Value, json};

use super::error::{FieldError, FieldErrorKind};
use super::fields::{child_schema, item_key, items_schema, list_map_keys};

/// `ObjectMeta` fields a client may send; anything else under `metadata` is dropped like the
/// API server's decoder does.
const OBJECT_META_FIELDS: [&str; 15] = [
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
];

/// Non-nullable nulls are dropped before defaulting (so a default, if any, fills them in),
/// as `PruneNonNullableNullsWithoutDefaults` plus `Default` do in the API server.
fn drop_non_nullable_nulls(map: &mut Map<String, Value>, schema: &Value) {
    map.retain(|k, v| {
        !(v.is_null()
            && child_schema(Some(schema), k)
                .is_some_and(|c| c.get("nullable").and_then(Value::as_bool) != Some(true)))
    });
}

fn preserves_unknown(schema: &Value) -> bool {
    schema
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        == Some(true)
}

fn join_index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// Drops fields the schema does not declare (unless `x-kubernetes-preserve-unknown-fields`)
/// and returns their paths, for `fieldValidation` Warn / Strict.
pub(crate) fn prune_object(object: &mut Value, schema: &Value) -> Vec<String> {
    let mut removed = Vec::new();
    let Some(map) = object.as_object_mut() else {
        return removed;
    };
    if let Some(meta) = map.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.retain(|k, _| {
            let known = OBJECT_META_FIELDS.contains(&k.as_str());
            if !known {
                removed.push(format!("metadata.{k}"));
            }
            known
        });
    }
    let keep_unknown = preserves_unknown(schema);
    let props = schema.get("properties").and_then(Value::as_object);
    drop_non_nullable_nulls(map, schema);
    map.retain(|k, _| {
        let known = matches!(k.as_str(), "apiVersion" | "kind" | "metadata")
            || keep_unknown
            || props.is_some_and(|p| p.contains_key(k));
        if !known {
            removed.push(k.clone());
        }
        known
    });
    for (k, v) in map.iter_mut() {
        if matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
            continue;
        }
        if let Some(child) = child_schema(Some(schema), k) {
            prune(v, child, k, &mut removed);
        }
    }
    removed
}

fn prune(value: &mut Value, schema: &Value, path: &str, removed: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if schema
                .get("x-kubernetes-embedded-resource")
                .and_then(Value::as_bool)
                == Some(true)
            {
                return;
            }
            let keep_unknown = preserves_unknown(schema);
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema
                .get("additionalProperties")
                .filter(|a| a.is_object() || a.as_bool() == Some(true));
            if !keep_unknown && additional.is_none() {
                map.retain(|k, _| {
                    let known = props.is_some_and(|p| p.contains_key(k));
                    if !known {
                        removed.push(join(path, k));
                    }
                    known
                });
            }
            drop_non_nullable_nulls(map, schema);
            for (k, v) in map.iter_mut() {
                if let Some(child) = child_schema(Some(schema), k) {
                    prune(v, child, &join(path, k), removed);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    prune(item, item_schema, &join_index(path, i), removed);
                }
            }
        }
        _ => {}
    }
}

/// Fills `default`s, the way the API server does after pruning, in place.
///
/// NB: the same rules as `kube::core::cel::apply_defaults` (which builds a
/// copy of the whole object on every write): a missing declared property gets
/// its default, existing children are defaulted by their own schema (declared
/// properties, else `additionalProperties` unless unknown fields are
/// preserved), array items by `items`, and an inserted default is not itself
/// defaulted further. A test checks both agree.
pub(crate) fn apply_defaults(object: &mut Value, schema: &Value) {
    default_in_place(object, schema, 0);
}

/// kube-cel's depth limit for defaulting.
const MAX_DEFAULT_DEPTH: usize = 64;

fn default_in_place(value: &mut Value, schema: &Value, depth: usize) {
    if depth > MAX_DEFAULT_DEPTH {
        return;
    }
    match value {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = if preserves_unknown(schema) {
                None
            } else {
                schema.get("additionalProperties").filter(|a| a.is_object())
            };
            if props.is_none_or(Map::is_empty) && additional.is_none() {
                return;
            }
            for (key, child) in map.iter_mut() {
                if let Some(child_schema) = props.and_then(|p| p.get(key)).or(additional) {
                    default_in_place(child, child_schema, depth + 1);
                }
            }
            for (key, prop_schema) in props.into_iter().flatten() {
                if !map.contains_key(key)
                    && let Some(default) = prop_schema.get("default")
                {
                    map.insert(key.clone(), default.clone());
                }
            }
        }
        Value::Array(items) => {
            if let Some(items_schema) = schema.get("items") {
                for item in items {
                    default_in_place(item, items_schema, depth + 1);
                }
            }
        }
        _ => {}
    }
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}

/// The error for a value of the wrong JSON type, as the real server words it.
fn type_invalid(path: &str, value: &Value, expected: &str) -> FieldError {
    FieldError {
        field: path.to_string(),
        kind: FieldErrorKind::TypeInvalid {
            value: json!(json_type(value)),
            detail: format!(
                "{path} in body must be of type {expected}: \"{}\"",
                json_type(value)
            ),
        },
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_matches(expected: &str, value: &Value) -> bool {
    match expected {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "boolean" => value.is_boolean(),
        "number" => value.is_number(),
        "integer" => {
            value.is_i64() || value.is_u64() || value.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        _ => true,
    }
}

/// Structural validation of the whole object (below `metadata`).
pub(crate) fn validate_schema(object: &Value, schema: &Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if let Some(map) = object.as_object() {
        if let Some(required) = schema.get("required").and_then(Value::as_array) {
            for field in required.iter().filter_map(Value::as_str) {
                if !map.contains_key(field) {
                    errors.push(FieldError {
                        field: field.to_string(),
                        kind: FieldErrorKind::Required {
                            detail: String::new(),
                        },
                    });
                }
            }
        }
        for (k, v) in map {
            if matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                continue;
            }
            if let Some(child) = child_schema(Some(schema), k) {
                check(v, child, k, &mut errors);
            }
        }
    }
    errors
}

fn check(value: &Value, schema: &Value, path: &str, errors: &mut Vec<FieldError>) {
    if value.is_null() {
        if schema.get("nullable").and_then(Value::as_bool) == Some(true) {
            return;
        }
        if let Some(expected) = schema.get("type").and_then(Value::as_str) {
            errors.push(FieldError {
                field: path.to_string(),
                kind: FieldErrorKind::TypeInvalid {
                    value: json!("null"),
                    detail: format!("{path} in body must be of type {expected}: \"null\""),
                },
            });
        }
        return;
    }
    let int_or_string = schema
        .get("x-kubernetes-int-or-string")
        .and_then(Value::as_bool)
        == Some(true);
    if int_or_string {
        if !(value.is_string() || value.is_i64() || value.is_u64()) {
            errors.push(type_invalid(path, value, "integer,string"));
            return;
        }
    } else if let Some(expected) = schema.get("type").and_then(Value::as_str)
        && !type_matches(expected, value)
    {
        errors.push(type_invalid(path, value, expected));
        return;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        errors.push(FieldError {
            field: path.to_string(),
            kind: FieldErrorKind::NotSupported {
                value: value.clone(),
                supported: allowed.clone(),
            },
        });
    }
    match value {
        Value::String(s) => check_string(s, value, schema, path, errors),
        Value::Number(_) => check_number(value, schema, path, errors),
        Value::Array(items) => check_array(items, schema, path, errors),
        Value::Object(map) => {
            if let Some(required) = schema.get("required").and_then(Value::as_array) {
                for field in required.iter().filter_map(Value::as_str) {
                    if !map.contains_key(field) {
                        errors.push(FieldError {
                            field: join(path, field),
                            kind: FieldErrorKind::Required {
                                detail: String::new(),
                            },
                        });
                    }
                }
            }
            for (k, v) in map {
                if let Some(child) = child_schema(Some(schema), k) {
                    check(v, child, &join(path, k), errors);
                }
            }
        }
        Value::Bool(_) | Value::Null => {}
    }
}

fn check_string(s: &str, value: &Value, schema: &Value, path: &str, errors: &mut Vec<FieldError>) {
    let chars = s.chars().count() as u64;
    if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
        && chars > max
    {
        errors.push(FieldError {
            field: path.to_string(),
            kind: FieldErrorKind::TooLong { max },
        });
    }
    if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
        && chars < min
    {
        errors.push(FieldError::invalid(
            path,
            value.clone(),
            format!("{path} in body should be at least {min} chars long"),
        ));
    }
    if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
        match cached_regex(pattern) {
            Ok(re) if !re.is_match(s) => {
                errors.push(FieldError::invalid(
                    path,
                    value.clone(),
                    format!("{path} in body should match '{pattern}'"),
                ));
            }
            Ok(_) => {}
            Err(e) => errors.push(FieldError::invalid(
                path,
                value.clone(),
                format!("schema pattern {pattern:?} does not compile: {e}"),
            )),
        }
    }
    if schema.get("format").and_then(Value::as_str) == Some("date-time")
        && s.parse::<jiff::Timestamp>().is_err()
    {
        errors.push(FieldError::invalid(
            path,
            value.clone(),
            format!("{path} in body must be of type date-time: \"{s}\""),
        ));
    }
}

fn check_number(value: &Value, schema: &Value, path: &str, errors: &mut Vec<FieldError>) {
    let Some(n) = value.as_f64() else { return };
    let exclusive = |k: &str| schema.get(k).and_then(Value::as_bool) == Some(true);
    if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
        if exclusive("exclusiveMaximum") && n >= max {
            errors.push(FieldError::invalid(
                path,
                value.clone(),
                format!("{path} in body should be less than {}", fmt_num(max)),
            ));
        } else if n > max {
            errors.push(FieldError::invalid(
                path,
                value.clone(),
                format!(
                    "{path} in body should be less than or equal to {}",
                    fmt_num(max)
                ),
            ));
        }
    }
    if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
        if exclusive("exclusiveMinimum") && n <= min {
            errors.push(FieldError::invalid(
                path,
                value.clone(),
                format!("{path} in body should be greater than {}", fmt_num(min)),
            ));
        } else if n < min {
            errors.push(FieldError::invalid(
                path,
                value.clone(),
                format!(
                    "{path} in body should be greater than or equal to {}",
                    fmt_num(min)
                ),
            ));
        }
    }
}

fn fmt_num(n: f64) -> String {
    if n.fract() == 0.0 {
        format!("{}", n as i64)
    } else {
        n.to_string()
    }
}

fn check_array(items: &[Value], schema: &Value, path: &str, errors: &mut Vec<FieldError>) {
    if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
        && items.len() as u64 > max
    {
        errors.push(FieldError {
            field: path.to_string(),
            kind: FieldErrorKind::TooMany {
                actual: items.len(),
                max,
            },
        });
    }
    if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
        && (items.len() as u64) < min
    {
        errors.push(FieldError::invalid(
            path,
            json!(items.len()),
            format!("{path} in body should have at least {min} items"),
        ));
    }
    let item_schema = items_schema(Some(schema));
    if let Some(keys) = list_map_keys(Some(schema)) {
        let mut seen = std::collections::HashSet::new();
        for (i, item) in items.iter().enumerate() {
            let key = item_key(item, &keys);
            if !seen.insert(key.clone()) {
                let value: Value = serde_json::from_str(&key).unwrap_or(Value::Null);
                errors.push(FieldError {
                    field: format!("{path}[{i}]"),
                    kind: FieldErrorKind::Duplicate { value },
                });
            }
        }
    }
    if schema.get("x-kubernetes-list-type").and_then(Value::as_str) == Some("set") {
        for (i, item) in items.iter().enumerate() {
            if items[..i].contains(item) {
                errors.push(FieldError {
                    field: format!("{path}[{i}]"),
                    kind: FieldErrorKind::Duplicate {
                        value: item.clone(),
                    },
                });
            }
        }
    }
    if let Some(item_schema) = item_schema {
        for (i, item) in items.iter().enumerate() {
            check(item, item_schema, &format!("{path}[{i}]"), errors);
        }
    }
}

/// `pattern` compiled once per thread: compiling it on every validated
/// string was a large part of each write's cost under load.
fn cached_regex(pattern: &str) -> Result<regex::Regex, regex::Error> {
    thread_local! {
        static COMPILED: std::cell::RefCell<HashMap<String, Result<regex::Regex, regex::Error>>> =
            std::cell::RefCell::default();
    }
    COMPILED.with(|compiled| {
        if let Some(found) = compiled.borrow().get(pattern) {
            return found.clone();
        }
        compiled
            .borrow_mut()
            .entry(pattern.to_string())
            .or_insert_with(|| regex::Regex::new(pattern))
            .clone()
    })
}

/// Whether a compiled schema node, or any node below it, carries CEL rules.
fn has_rules(node: &CompiledSchema) -> bool {
    !node.validations.is_empty()
        || node.properties.values().any(has_rules)
        || node.items.as_deref().is_some_and(has_rules)
        || node.additional_properties.as_deref().is_some_and(has_rules)
        || node
            .all_of
            .iter()
            .chain(&node.one_of)
            .chain(&node.any_of)
            .any(has_rules)
}

/// `prefix` joined with a field path reported by a subtree validation, as the
/// whole-object walk would have written it (`spec` + `.x` / `x` / `[0]` / ``).
fn prefixed(prefix: &str, path: &str) -> String {
    if prefix.is_empty() {
        path.to_string()
    } else if path.is_empty() {
        prefix.to_string()
    } else if path.starts_with('.') || path.starts_with('[') {
        format!("{prefix}{path}")
    } else {
        format!("{prefix}.{path}")
    }
}

/// How deep [`rule_subtrees`] follows plain properties before handing a node
/// over whole (far below kube-cel's own depth limit, so that limit still
/// reports the same errors).
const SUBTREE_DEPTH: usize = 16;

/// The nodes the CEL validator must see: descends through plain properties
/// (nodes without rules of their own, no `allOf`/`oneOf`/`anyOf`) and collects
/// each rule-bearing subtree with its value, old value and path. Subtrees
/// without rules are left out: kube-cel converts every node it walks (new and
/// old) to CEL values, which for a status write meant converting the whole
/// object twice per level only to evaluate the one rule on `spec`.
///
/// NB: the same rules see the same values as a walk from the root: missing
/// fields are skipped by both, and a missing field with a `default` (which the
/// validator fills in before walking) hands its parent over whole.
#[allow(clippy::type_complexity)]
fn rule_subtrees<'a>(
    node: &'a CompiledSchema,
    value: &'a Value,
    old: Option<&'a Value>,
    path: String,
    depth: usize,
    out: &mut Vec<(&'a CompiledSchema, &'a Value, Option<&'a Value>, String)>,
) {
    let plain = node.validations.is_empty()
        && node.all_of.is_empty()
        && node.one_of.is_empty()
        && node.any_of.is_empty()
        && node.items.as_deref().is_none_or(|i| !has_rules(i))
        && node
            .additional_properties
            .as_deref()
            .is_none_or(|a| !has_rules(a));
    let Some(map) = value.as_object() else {
        if has_rules(node) {
            out.push((node, value, old, path));
        }
        return;
    };
    let defaults_missing = node
        .properties
        .iter()
        .any(|(k, c)| c.default.is_some() && !map.contains_key(k));
    if !plain || defaults_missing || depth >= SUBTREE_DEPTH {
        if has_rules(node) {
            out.push((node, value, old, path));
        }
        return;
    }
    for (name, child) in &node.properties {
        if let Some(child_value) = map.get(name)
            && has_rules(child)
        {
            let child_old = old.and_then(|o| o.get(name));
            let child_path = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}.{name}")
            };
            rule_subtrees(child, child_value, child_old, child_path, depth + 1, out);
        }
    }
}

/// A CRD version's rules, compiled once when the API starts serving it.
pub(crate) fn compile_rules(schema: &Value) -> Arc<CompiledSchema> {
    Arc::new(kube::core::cel::compile_schema(schema))
}

/// What a walk of the whole object with `validator` reports, found by
/// validating only the subtrees that carry rules (see [`rule_subtrees`]).
fn cel_errors(
    validator: &kube::core::cel::Validator,
    object: &Value,
    old: Option<&Value>,
    compiled: &CompiledSchema,
    root: &kube::core::cel::RootContext,
) -> Vec<kube::core::cel::ValidationError> {
    let mut subtrees = Vec::new();
    rule_subtrees(compiled, object, old, String::new(), 0, &mut subtrees);
    let mut found = Vec::new();
    for (node, value, old_value, path) in subtrees {
        // Only the object's root binds apiVersion / apiGroup / kind.
        let root = path.is_empty().then_some(root);
        if let Err(errors) = validator.validate_compiled_with_context(node, value, old_value, root)
        {
            found.extend(errors.into_vec().into_iter().map(|mut e| {
                e.field_path = prefixed(&path, &e.field_path);
                e
            }));
        }
    }
    found
}

/// Evaluates the CEL rules (`x-kubernetes-validations`), with `oldSelf` on updates.
pub(crate) fn validate_cel(
    object: &Value,
    old: Option<&Value>,
    compiled: &CompiledSchema,
    root: &kube::core::cel::RootContext,
) -> Vec<FieldError> {
    thread_local! {
        // Registering every Kubernetes CEL function is not free; do it once per thread.
        static VALIDATOR: kube::core::cel::Validator = kube::core::cel::Validator::new();
    }
    let found = VALIDATOR.with(|v| cel_errors(v, object, old, compiled, root));
    found
        .into_iter()
        .filter(|e| {
            // Ratcheting: rules without oldSelf are skipped for unchanged values.
            old.is_none_or(|old| {
                e.rule.contains("oldSelf") || !unchanged(object, old, &e.field_path)
            })
        })
        .map(|e| {
            let value_type = value_at(object, &e.field_path)
                .map(json_type)
                .unwrap_or("object");
            let kind = match e.reason.as_deref() {
                Some("FieldValueRequired") => FieldErrorKind::Required {
                    detail: e.message.clone(),
                },
                Some("FieldValueForbidden") => FieldErrorKind::Forbidden {
                    detail: e.message.clone(),
                },
                Some("FieldValueDuplicate") => FieldErrorKind::Duplicate {
                    value: json!(value_type),
                },
                _ => FieldErrorKind::Invalid {
                    value: json!(value_type),
                    detail: e.message.clone(),
                },
            };
            FieldError {
                field: e.field_path.clone(),
                kind,
            }
        })
        .collect()
}

fn value_at<'a>(object: &'a Value, path: &str) -> Option<&'a Value> {
    if path.is_empty() {
        return Some(object);
    }
    let mut node = object;
    for part in path.split('.') {
        let (name, index) = match part.split_once('[') {
            Some((name, rest)) => (name, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        node = node.get(name)?;
        if let Some(i) = index {
            node = node.get(i)?;
        }
    }
    Some(node)
}

/// Parent of a dotted path: `a.b[2]` -> `a.b`, `a.b` -> `a`, `a` -> ``.
fn parent(path: &str) -> &str {
    if path.ends_with(']') {
        return path.rfind('[').map_or("", |i| &path[..i]);
    }
    path.rfind('.').map_or("", |i| &path[..i])
}

/// Validation ratcheting (on by default since Kubernetes 1.30): an error about a value the
/// update did not change is not reported. A missing field is judged by its nearest present
/// ancestor.
fn unchanged(object: &Value, old: &Value, field: &str) -> bool {
    let mut path = field;
    loop {
        if let Some(value) = value_at(object, path) {
            return value_at(old, path) == Some(value);
        }
        if path.is_empty() {
            return false;
        }
        path = parent(path);
    }
}

/// The full admission check of a custom resource: structural errors first; CEL only runs
/// when no type error makes the object unreadable, as the API server does. On updates,
/// errors about unchanged values are ratcheted away (transition rules always apply).
pub(crate) fn validate(
    object: &Value,
    old: Option<&Value>,
    schema: &Value,
    rules: &CompiledSchema,
    root: &kube::core::cel::RootContext,
) -> Vec<FieldError> {
    let mut errors = validate_schema(object, schema);
    if let Some(old) = old {
        errors.retain(|e| !unchanged(object, old, &e.field));
    }
    if errors
        .iter()
        .any(|e| matches!(e.kind, FieldErrorKind::TypeInvalid { .. }))
    {
        errors.push(FieldError {
            field: String::new(),
            kind: FieldErrorKind::Invalid {
                value: json!("null"),
                detail: "some validation rules were not checked because the object was invalid; correct the existing errors to complete validation".into(),
            },
        });
        return errors;
    }
    errors.extend(validate_cel(object, old, rules, root));
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Value {
        json!({"type": "object", "properties": {"spec": {
            "type": "object",
            "required": ["regionId"],
            "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "spec is immutable"}],
            "properties": {
                "regionId": {"type": "string", "pattern": "^[a-z]{2,}(-[a-z0-9]+)+$", "maxLength": 64},
                "backoffLimit": {"type": "integer", "minimum": 0, "maximum": 20, "default": 6},
                "mode": {"type": "string", "enum": ["a", "b"]},
                "zones": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}}
            }
        }}})
    }

    fn root() -> kube::core::cel::RootContext {
        kube::core::cel::RootContext {
            api_version: "x/v1".into(),
            api_group: "x".into(),
            kind: "T".into(),
        }
    }

    /// What validating `object` (an update of `old`, if any) against [`schema`] reports.
    fn messages(object: &Value, old: Option<&Value>) -> Vec<String> {
        validate(object, old, &schema(), &compile_rules(&schema()), &root())
            .iter()
            .map(FieldError::message)
            .collect()
    }

    #[test]
    fn table_of_schema_errors() {
        let cases = [
            (json!({"spec": {"regionId": "cn-hangzhou"}}), vec![]),
            (
                json!({"spec": {"regionId": "BAD"}}),
                vec![
                    "spec.regionId: Invalid value: \"BAD\": spec.regionId in body should match '^[a-z]{2,}(-[a-z0-9]+)+$'",
                ],
            ),
            (json!({"spec": {}}), vec!["spec.regionId: Required value"]),
            (
                json!({"spec": {"regionId": "cn-hangzhou", "backoffLimit": 21}}),
                vec![
                    "spec.backoffLimit: Invalid value: 21: spec.backoffLimit in body should be less than or equal to 20",
                ],
            ),
            (
                json!({"spec": {"regionId": "cn-hangzhou", "backoffLimit": -1}}),
                vec![
                    "spec.backoffLimit: Invalid value: -1: spec.backoffLimit in body should be greater than or equal to 0",
                ],
            ),
            (
                json!({"spec": {"regionId": "cn-hangzhou", "mode": "c"}}),
                vec!["spec.mode: Unsupported value: \"c\": supported values: \"a\", \"b\""],
            ),
            (
                json!({"spec": {"regionId": "cn-hangzhou", "zones": ["a", "b", "a"]}}),
                vec!["spec.zones[2]: Duplicate value: \"a\""],
            ),
            (
                json!({"spec": {"regionId": format!("cn-{}", "a".repeat(62))}}),
                vec!["spec.regionId: Too long: may not be more than 64 bytes"],
            ),
        ];
        for (object, expected) in cases {
            assert_eq!(messages(&object, None), expected, "for {object}");
        }
    }

    #[test]
    fn ratcheting_spares_unchanged_invalid_values() {
        let old = json!({"spec": {"regionId": "BAD", "backoffLimit": 50}});
        let status_only = json!({"spec": {"regionId": "BAD", "backoffLimit": 50}, "status": {}});
        assert!(messages(&status_only, Some(&old)).is_empty());
        let touched = json!({"spec": {"regionId": "BAD", "backoffLimit": 40}});
        assert_eq!(
            messages(&touched, Some(&old)),
            vec![
                "spec.backoffLimit: Invalid value: 40: spec.backoffLimit in body should be less than or equal to 20",
                "spec: Invalid value: \"object\": spec is immutable",
            ],
            "the changed value and the transition rule are reported, the unchanged regionId is not"
        );
        assert_eq!(parent("a.b[2]"), "a.b");
        assert_eq!(parent("a.b"), "a");
        assert_eq!(parent("a"), "");
    }

    #[test]
    fn transition_rule_sees_old_self() {
        let old = json!({"spec": {"regionId": "cn-hangzhou"}});
        let new = json!({"spec": {"regionId": "cn-beijing"}});
        assert_eq!(
            messages(&new, Some(&old)),
            vec!["spec: Invalid value: \"object\": spec is immutable"]
        );
    }

    #[test]
    fn pruning_keeps_declared_fields_and_metadata() {
        let mut object = json!({"apiVersion": "x/v1", "kind": "T", "metadata": {"name": "a", "bogus": 1},
            "spec": {"regionId": "cn-hangzhou", "extra": true, "mode": null}, "other": 1});
        let removed = prune_object(&mut object, &schema());
        assert_eq!(removed, vec!["metadata.bogus", "other", "spec.extra"]);
        assert_eq!(
            object,
            json!({"apiVersion": "x/v1", "kind": "T", "metadata": {"name": "a"}, "spec": {"regionId": "cn-hangzhou"}})
        );
        apply_defaults(&mut object, &schema());
        assert_eq!(object["spec"]["backoffLimit"], json!(6));
    }

    /// Schemas with defaults and rules at several depths: under plain
    /// properties, in a list's items, in a map's values, at the root, and
    /// with `fieldPath`.
    fn nested_schema() -> Value {
        json!({"type": "object", "properties": {
            "spec": {"type": "object",
                "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "spec is immutable"}],
                "properties": {
                    "n": {"type": "integer", "default": 3},
                    "inner": {"type": "object", "default": {}, "properties": {
                        "a": {"type": "string", "default": "x"},
                        "b": {"type": "integer",
                            "x-kubernetes-validations": [{"rule": "self < 10", "message": "b below 10"}]}}}}},
            "status": {"type": "object", "properties": {
                "items": {"type": "array", "items": {"type": "object",
                    "x-kubernetes-validations": [{"rule": "self.v >= 0", "message": "v not negative", "fieldPath": ".v"}],
                    "properties": {"v": {"type": "integer"}, "w": {"type": "string", "default": "w"}}}},
                "byName": {"type": "object", "additionalProperties": {"type": "object",
                    "properties": {"c": {"type": "integer", "default": 1}},
                    "x-kubernetes-validations": [{"rule": "self.c != 2", "message": "c is not 2"}]}},
                "plain": {"type": "object", "properties": {"deep": {"type": "object", "properties": {
                    "d": {"type": "integer", "x-kubernetes-validations": [{"rule": "self != 7", "message": "d is not 7"}]}}}}}}}}
        })
    }

    fn objects() -> Vec<Value> {
        vec![
            json!({"metadata": {"name": "a"}}),
            json!({"spec": {}}),
            json!({"spec": {"n": 1, "inner": {"b": 12}}}),
            json!({"spec": {"n": 1, "inner": {"a": "y", "b": 3}}, "status": {}}),
            json!({"spec": {"n": 1}, "status": {"items": [{"v": -1}, {"v": 2, "w": "q"}], "byName": {"k": {"c": 2}, "l": {}},
                "plain": {"deep": {"d": 7}}}}),
            json!({"spec": {"n": 2}, "status": {"items": [], "byName": {}, "plain": {"deep": {}}}}),
            json!({"status": {"plain": {"deep": {"d": 6}}, "items": [{}]}}),
        ]
    }

    #[test]
    fn in_place_defaults_match_kube_cel() {
        let schema = nested_schema();
        for object in objects() {
            let expected = kube::core::cel::apply_defaults(&schema, &object);
            let mut got = object.clone();
            apply_defaults(&mut got, &schema);
            assert_eq!(got, expected, "defaulting {object}");
        }
    }

    #[test]
    fn subtree_validation_reports_what_the_whole_walk_reports() {
        let schema = nested_schema();
        let compiled = compile_rules(&schema);
        let validator = kube::core::cel::Validator::new();
        let key = |e: &kube::core::cel::ValidationError| {
            (e.field_path.clone(), e.message.clone(), e.rule.clone())
        };
        let mut compared = 0;
        for object in objects() {
            for old in std::iter::once(None).chain(objects().into_iter().map(Some)) {
                let mut whole: Vec<_> = validator
                    .validate_compiled_with_context(&compiled, &object, old.as_ref(), Some(&root()))
                    .err()
                    .map(|e| e.into_vec())
                    .unwrap_or_default()
                    .iter()
                    .map(key)
                    .collect();
                let mut subtrees: Vec<_> =
                    cel_errors(&validator, &object, old.as_ref(), &compiled, &root())
                        .iter()
                        .map(key)
                        .collect();
                whole.sort();
                subtrees.sort();
                assert_eq!(subtrees, whole, "object {object}, old {old:?}");
                compared += usize::from(!whole.is_empty());
            }
        }
        assert!(
            compared > 10,
            "the cases must produce errors to compare ({compared})"
        );
    }
}
