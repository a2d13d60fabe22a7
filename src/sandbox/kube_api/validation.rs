//! Admission for custom resources: pruning, defaulting and validation against the CRD's
//! structural `openAPIV3Schema`, then the CEL rules in `x-kubernetes-validations`.

use std::collections::HashMap;
use std::rc::Rc;

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

/// Fills `default`s, the way the API server does after pruning.
pub(crate) fn apply_defaults(object: &Value, schema: &Value) -> Value {
    kube::core::cel::apply_defaults(schema, object)
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
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
            errors.push(FieldError {
                field: path.to_string(),
                kind: FieldErrorKind::TypeInvalid {
                    value: json!(json_type(value)),
                    detail: format!(
                        "{path} in body must be of type integer,string: \"{}\"",
                        json_type(value)
                    ),
                },
            });
            return;
        }
    } else if let Some(expected) = schema.get("type").and_then(Value::as_str)
        && !type_matches(expected, value)
    {
        errors.push(FieldError {
            field: path.to_string(),
            kind: FieldErrorKind::TypeInvalid {
                value: json!(json_type(value)),
                detail: format!(
                    "{path} in body must be of type {expected}: \"{}\"",
                    json_type(value)
                ),
            },
        });
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
        compiled
            .borrow_mut()
            .entry(pattern.to_string())
            .or_insert_with(|| regex::Regex::new(pattern))
            .clone()
    })
}

/// Evaluates the CEL rules (`x-kubernetes-validations`), with `oldSelf` on updates.
pub(crate) fn validate_cel(
    object: &Value,
    old: Option<&Value>,
    schema: &Value,
    root: &kube::core::cel::RootContext,
) -> Vec<FieldError> {
    thread_local! {
        // Registering every Kubernetes CEL function is not free; do it once per thread.
        static VALIDATOR: kube::core::cel::Validator = kube::core::cel::Validator::new();
        // Compiling every rule of a schema on every write was the sandbox's
        // largest cost under load (the e2e bench); an API serves few schemas.
        static COMPILED: std::cell::RefCell<HashMap<String, Rc<kube::core::cel::CompiledSchema>>> =
            std::cell::RefCell::default();
    }
    let compiled = COMPILED.with(|compiled| {
        compiled
            .borrow_mut()
            .entry(schema.to_string())
            .or_insert_with(|| Rc::new(kube::core::cel::compile_schema(schema)))
            .clone()
    });
    let result =
        VALIDATOR.with(|v| v.validate_compiled_with_context(&compiled, object, old, Some(root)));
    let Err(errors) = result else {
        return Vec::new();
    };
    errors
        .into_vec()
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
    errors.extend(validate_cel(object, old, schema, root));
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
            let got: Vec<String> = validate(&object, None, &schema(), &root())
                .iter()
                .map(FieldError::message)
                .collect();
            assert_eq!(got, expected, "for {object}");
        }
    }

    #[test]
    fn ratcheting_spares_unchanged_invalid_values() {
        let old = json!({"spec": {"regionId": "BAD", "backoffLimit": 50}});
        let status_only = json!({"spec": {"regionId": "BAD", "backoffLimit": 50}, "status": {}});
        assert!(validate(&status_only, Some(&old), &schema(), &root()).is_empty());
        let touched = json!({"spec": {"regionId": "BAD", "backoffLimit": 40}});
        let got: Vec<String> = validate(&touched, Some(&old), &schema(), &root())
            .iter()
            .map(FieldError::message)
            .collect();
        assert_eq!(
            got,
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
        let got: Vec<String> = validate(&new, Some(&old), &schema(), &root())
            .iter()
            .map(FieldError::message)
            .collect();
        assert_eq!(
            got,
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
        let defaulted = apply_defaults(&object, &schema());
        assert_eq!(defaulted["spec"]["backoffLimit"], json!(6));
    }
}
