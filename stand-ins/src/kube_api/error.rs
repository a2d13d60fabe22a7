//! API errors rendered as `meta/v1 Status` bodies, with the codes, reasons and messages a real API server uses.

use serde_json::{Value, json};

use super::resource_types::ResourceType;

/// One field-level validation error, shaped like `k8s.io/apimachinery/pkg/util/validation/field.Error`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct FieldError {
    /// Dotted path such as `spec.regionId` or `spec.items[0]`.
    pub field: String,
    pub kind: FieldErrorKind,
}

/// The error types the API server reports, each with the reason string clients see in `causes`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum FieldErrorKind {
    Invalid { value: Value, detail: String },
    TypeInvalid { value: Value, detail: String },
    Required { detail: String },
    TooLong { max: u64 },
    TooMany { actual: usize, max: u64 },
    NotSupported { value: Value, supported: Vec<Value> },
    Duplicate { value: Value },
    Forbidden { detail: String },
}

impl FieldError {
    pub(crate) fn invalid(field: &str, value: Value, detail: impl Into<String>) -> Self {
        Self {
            field: field.to_string(),
            kind: FieldErrorKind::Invalid {
                value,
                detail: detail.into(),
            },
        }
    }

    pub(crate) fn reason(&self) -> &'static str {
        match self.kind {
            FieldErrorKind::Invalid { .. } => "FieldValueInvalid",
            FieldErrorKind::TypeInvalid { .. } => "FieldValueTypeInvalid",
            FieldErrorKind::Required { .. } => "FieldValueRequired",
            FieldErrorKind::TooLong { .. } => "FieldValueTooLong",
            FieldErrorKind::TooMany { .. } => "FieldValueTooMany",
            FieldErrorKind::NotSupported { .. } => "FieldValueNotSupported",
            FieldErrorKind::Duplicate { .. } => "FieldValueDuplicate",
            FieldErrorKind::Forbidden { .. } => "FieldValueForbidden",
        }
    }

    /// The message without the field prefix (`ErrorBody()` in apimachinery).
    pub(crate) fn body(&self) -> String {
        fn with_detail(head: String, detail: &str) -> String {
            if detail.is_empty() {
                head
            } else {
                format!("{head}: {detail}")
            }
        }
        match &self.kind {
            FieldErrorKind::Invalid { value, detail }
            | FieldErrorKind::TypeInvalid { value, detail } => {
                with_detail(format!("Invalid value: {}", go_value(value)), detail)
            }
            FieldErrorKind::Required { detail } => {
                with_detail("Required value".to_string(), detail)
            }
            FieldErrorKind::TooLong { max } => {
                format!("Too long: may not be more than {max} bytes")
            }
            FieldErrorKind::TooMany { actual, max } => {
                format!("Too many: {actual}: must have at most {max} items")
            }
            FieldErrorKind::NotSupported { value, supported } => {
                let list: Vec<String> = supported.iter().map(go_value).collect();
                format!(
                    "Unsupported value: {}: supported values: {}",
                    go_value(value),
                    list.join(", ")
                )
            }
            FieldErrorKind::Duplicate { value } => format!("Duplicate value: {}", go_value(value)),
            FieldErrorKind::Forbidden { detail } => with_detail("Forbidden".to_string(), detail),
        }
    }

    /// The full message, `field: body`, as printed inside the Status message.
    pub(crate) fn message(&self) -> String {
        if self.field.is_empty() {
            self.body()
        } else {
            format!("{}: {}", self.field, self.body())
        }
    }
}

/// Renders a value the way Go's `%#v` prints the scalars apimachinery passes (quoted strings, bare numbers).
fn go_value(value: &Value) -> String {
    match value {
        Value::String(s) => serde_json::to_string(s).unwrap_or_default(),
        Value::Null => "\"null\"".to_string(),
        other => other.to_string(),
    }
}

/// An error answer from the API: HTTP code plus the `Status` body.
#[derive(Clone, Debug)]
pub(crate) struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    fn with_details(mut self, ty: &ResourceType, name: &str) -> Self {
        self.details = Some(json!({"name": name, "group": ty.group, "kind": ty.plural}));
        self
    }

    pub(crate) fn not_found(ty: &ResourceType, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", ty.group_resource()),
        )
        .with_details(ty, name)
    }

    pub(crate) fn already_exists(ty: &ResourceType, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", ty.group_resource()),
        )
        .with_details(ty, name)
    }

    pub(crate) fn conflict_modified(ty: &ResourceType, name: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                ty.group_resource()
            ),
        )
        .with_details(ty, name)
    }

    /// Server-side apply conflicts: `(manager, field path)` pairs.
    pub(crate) fn apply_conflicts(
        ty: &ResourceType,
        name: &str,
        conflicts: &[(String, String)],
    ) -> Self {
        let lines: Vec<String> = conflicts
            .iter()
            .map(|(manager, field)| format!("conflict with \"{manager}\": {field}"))
            .collect();
        let message = if lines.len() == 1 {
            format!("Apply failed with 1 conflict: {}", lines[0])
        } else {
            format!(
                "Apply failed with {} conflicts: {}",
                lines.len(),
                lines.join("\n")
            )
        };
        let causes: Vec<Value> = conflicts
            .iter()
            .map(|(manager, field)| {
                json!({"reason": "FieldManagerConflict", "message": format!("conflict with \"{manager}\""), "field": field})
            })
            .collect();
        let mut err = Self::new(409, "Conflict", message).with_details(ty, name);
        if let Some(Value::Object(d)) = err.details.as_mut() {
            d.insert("causes".into(), Value::Array(causes));
        }
        err
    }

    pub(crate) fn invalid(ty: &ResourceType, name: &str, errors: &[FieldError]) -> Self {
        let messages: Vec<String> = errors.iter().map(FieldError::message).collect();
        let joined = if messages.len() == 1 {
            messages[0].clone()
        } else {
            format!("[{}]", messages.join(", "))
        };
        let causes: Vec<Value> = errors
            .iter()
            .map(|e| json!({"reason": e.reason(), "message": e.body(), "field": e.field}))
            .collect();
        Self {
            code: 422,
            reason: "Invalid",
            message: format!("{} \"{name}\" is invalid: {joined}", ty.group_kind()),
            details: Some(
                json!({"name": name, "group": ty.group, "kind": ty.kind, "causes": causes}),
            ),
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self::new(
            500,
            "InternalError",
            format!("Internal error occurred: {}", message.into()),
        )
    }

    pub(crate) fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    pub(crate) fn method_not_allowed() -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
    }

    pub(crate) fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got {content_type:?})"
            ),
        )
    }

    pub(crate) fn path_not_found() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    /// The `meta/v1 Status` body.
    pub(crate) fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_error_messages_match_apimachinery() {
        let cases = [
            (
                FieldError::invalid(
                    "spec.regionId",
                    json!("BAD"),
                    "spec.regionId in body should match '^a$'",
                ),
                "spec.regionId: Invalid value: \"BAD\": spec.regionId in body should match '^a$'",
                "FieldValueInvalid",
            ),
            (
                FieldError {
                    field: "spec.imageId".into(),
                    kind: FieldErrorKind::Required {
                        detail: String::new(),
                    },
                },
                "spec.imageId: Required value",
                "FieldValueRequired",
            ),
            (
                FieldError {
                    field: "spec.regionId".into(),
                    kind: FieldErrorKind::TooLong { max: 64 },
                },
                "spec.regionId: Too long: may not be more than 64 bytes",
                "FieldValueTooLong",
            ),
            (
                FieldError::invalid(
                    "spec.backoffLimit",
                    json!(21),
                    "spec.backoffLimit in body should be less than or equal to 20",
                ),
                "spec.backoffLimit: Invalid value: 21: spec.backoffLimit in body should be less than or equal to 20",
                "FieldValueInvalid",
            ),
            (
                FieldError {
                    field: "spec.mode".into(),
                    kind: FieldErrorKind::NotSupported {
                        value: json!("c"),
                        supported: vec![json!("a"), json!("b")],
                    },
                },
                "spec.mode: Unsupported value: \"c\": supported values: \"a\", \"b\"",
                "FieldValueNotSupported",
            ),
        ];
        for (error, message, reason) in cases {
            assert_eq!(error.message(), message);
            assert_eq!(error.reason(), reason);
        }
    }
}
