//! Errors as the Kubernetes API server writes them: `Status` objects with a reason and code.

use serde_json::{Value, json};

use crate::resources::ResourceDef;

#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Value,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.reason, self.message)
    }
}

impl std::error::Error for ApiError {}

fn details(def: Option<&ResourceDef>, name: &str) -> Value {
    let mut d = json!({});
    if !name.is_empty() {
        d["name"] = json!(name);
    }
    if let Some(def) = def {
        d["group"] = json!(def.group);
        d["kind"] = json!(def.plural);
    }
    d
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: Value::Null,
        }
    }

    pub fn not_found(def: &ResourceDef, name: &str) -> Self {
        Self {
            code: 404,
            reason: "NotFound",
            message: format!("{} {name:?} not found", def.qualified()),
            details: details(Some(def), name),
        }
    }

    pub fn path_not_found(path: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        )
    }

    pub fn already_exists(def: &ResourceDef, name: &str) -> Self {
        Self {
            code: 409,
            reason: "AlreadyExists",
            message: format!("{} {name:?} already exists", def.qualified()),
            details: details(Some(def), name),
        }
    }

    pub fn conflict(def: &ResourceDef, name: &str) -> Self {
        Self {
            code: 409,
            reason: "Conflict",
            message: format!(
                "Operation cannot be fulfilled on {} {name:?}: the object has been modified; \
                 please apply your changes to the latest version and try again",
                def.qualified()
            ),
            details: details(Some(def), name),
        }
    }

    /// Server-side apply found fields owned by other managers.
    pub fn apply_conflict(def: &ResourceDef, name: &str, conflicts: &[(String, String)]) -> Self {
        let api_version = def.api_version();
        let causes: Vec<Value> = conflicts
            .iter()
            .map(|(field, manager)| {
                json!({
                    "reason": "FieldManagerConflict",
                    "message": format!("conflict with {manager:?} using {api_version}"),
                    "field": field,
                })
            })
            .collect();
        let list: Vec<String> = conflicts
            .iter()
            .map(|(field, manager)| {
                format!("- conflict with {manager:?} using {api_version}: {field}")
            })
            .collect();
        let mut d = details(Some(def), name);
        d["causes"] = json!(causes);
        Self {
            code: 409,
            reason: "Conflict",
            message: format!(
                "Apply failed with {} conflict{}: {}",
                conflicts.len(),
                if conflicts.len() == 1 { "" } else { "s" },
                list.join("\n")
            ),
            details: d,
        }
    }

    /// `422 Invalid` naming the field.
    pub fn invalid(def: &ResourceDef, name: &str, field: &str, problem: &str) -> Self {
        let kind = if def.group.is_empty() {
            def.kind.to_owned()
        } else {
            format!("{}.{}", def.kind, def.group)
        };
        let mut d = details(Some(def), name);
        d["kind"] = json!(def.kind);
        d["causes"] = json!([{"reason": "FieldValueInvalid", "message": format!("Invalid value: {problem}"), "field": field}]);
        Self {
            code: 422,
            reason: "Invalid",
            message: format!("{kind} {name:?} is invalid: {field}: Invalid value: {problem}"),
            details: d,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub fn forbidden(def: Option<&ResourceDef>, name: &str, message: impl Into<String>) -> Self {
        Self {
            code: 403,
            reason: "Forbidden",
            message: message.into(),
            details: details(def, name),
        }
    }

    /// What kube-apiserver answers while it cannot serve (`api_outage`).
    pub fn service_unavailable() -> Self {
        Self::new(
            503,
            "ServiceUnavailable",
            "the server is currently unable to handle the request",
        )
    }

    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message)
    }

    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got {content_type:?})"
            ),
        )
    }

    /// The `Status` object sent as the response body.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if !self.details.is_null() {
            status["details"] = self.details.clone();
        }
        status
    }
}
