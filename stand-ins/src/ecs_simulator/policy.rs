//! RAM session policies, as the simulator enforces them on keys minted by
//! STS AssumeRole with a `Policy`: a request the policy does not allow is
//! refused with ECS's `Forbidden.RAM` answer.
//!
//! NB: a small subset of RAM's policy language: `Effect`, `Action` and
//! `Resource` (strings or lists, `*` wildcards, actions compared without
//! case); an explicit `Deny` wins over any `Allow`. Conditions are not read.

use serde_json::Value;

use super::verify::ApiError;

/// ECS's answer to a request its signer's policies do not allow.
pub fn forbidden() -> ApiError {
    ApiError::new(
        403,
        "Forbidden.RAM",
        "User not authorized to operate on the specified resource, or this API doesn't support RAM.",
    )
}

/// Whether `text` matches `pattern`, where `*` is any run of characters. Pure.
fn glob(pattern: &str, text: &str, fold_case: bool) -> bool {
    let (p, t) = if fold_case {
        (pattern.to_ascii_lowercase(), text.to_ascii_lowercase())
    } else {
        (pattern.to_owned(), text.to_owned())
    };
    let parts: Vec<&str> = p.split('*').collect();
    if parts.len() == 1 {
        return p == t;
    }
    let mut rest = t.as_str();
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
    }
    true
}

fn strings(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

/// Whether the session `policy` (JSON) allows `action` (`ecs:CancelCopyImage`)
/// on `resource` (`acs:ecs:cn-hangzhou:*:image/m-1`). A policy that is not
/// JSON allows nothing. Pure.
pub fn allows(policy: &str, action: &str, resource: &str) -> bool {
    let Ok(doc) = serde_json::from_str::<Value>(policy) else {
        return false;
    };
    let statements = match doc.get("Statement") {
        Some(Value::Array(items)) => items.clone(),
        Some(one @ Value::Object(_)) => vec![one.clone()],
        _ => return false,
    };
    let applies = |s: &Value| {
        strings(s.get("Action"))
            .iter()
            .any(|a| glob(a, action, true))
            && strings(s.get("Resource"))
                .iter()
                .any(|r| glob(r, resource, false))
    };
    fn effect(s: &Value) -> &str {
        s.get("Effect").and_then(Value::as_str).unwrap_or("")
    }
    let denied = statements.iter().any(|s| effect(s) == "Deny" && applies(s));
    let allowed = statements
        .iter()
        .any(|s| effect(s) == "Allow" && applies(s));
    allowed && !denied
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_table() {
        let only_cancel = r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":["ecs:CancelCopyImage"],"Resource":["*"]}]}"#;
        let describe = r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":"ecs:Describe*","Resource":"*"}]}"#;
        let ecs_all_but = r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":"ecs:*","Resource":"*"},{"Effect":"Deny","Action":"ecs:CancelCopyImage","Resource":"acs:ecs:cn-beijing:*:image/*"}]}"#;
        let one_region = r#"{"Statement":{"Effect":"Allow","Action":"ecs:cancelcopyimage","Resource":"acs:ecs:cn-hangzhou:*:image/*"}}"#;
        let image = |region: &str| format!("acs:ecs:{region}:*:image/m-1");
        let rows = [
            (only_cancel, "cn-hangzhou", true),
            (describe, "cn-hangzhou", false),
            (ecs_all_but, "cn-hangzhou", true),
            (ecs_all_but, "cn-beijing", false),
            (one_region, "cn-hangzhou", true),
            (one_region, "cn-beijing", false),
            ("not json", "cn-hangzhou", false),
            ("{}", "cn-hangzhou", false),
        ];
        for (i, (policy, region, want)) in rows.into_iter().enumerate() {
            assert_eq!(
                allows(policy, "ecs:CancelCopyImage", &image(region)),
                want,
                "row {i}"
            );
        }
    }
}
