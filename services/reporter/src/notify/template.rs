//! Notification events and `{placeholder}` templates.

use std::collections::BTreeMap;

use serde::Deserialize;

/// What happened, as routes and templates name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Escalated,
    AwaitingApproval,
    VerificationFailed,
    Advised,
    Resolved,
}

impl EventKind {
    pub const ALL: &'static [EventKind] = &[
        Self::Escalated,
        Self::AwaitingApproval,
        Self::VerificationFailed,
        Self::Advised,
        Self::Resolved,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Escalated => "escalated",
            Self::AwaitingApproval => "awaiting_approval",
            Self::VerificationFailed => "verification_failed",
            Self::Advised => "advised",
            Self::Resolved => "resolved",
        }
    }
}

/// Every placeholder a template may use.
pub const PLACEHOLDERS: &[&str] = &[
    "event",
    "incident_id",
    "cluster",
    "namespace",
    "target",
    "severity",
    "state",
    "root_cause",
    "summary",
    "reason",
    "action",
    "verification",
    "developer_fix",
    "console_link",
];

/// Checks that every `{name}` is known and braces are balanced (`{{` / `}}` are literal).
pub fn check(template: &str) -> Result<(), String> {
    let mut rest = template;
    while let Some(start) = rest.find(['{', '}']) {
        let after = &rest[start + 1..];
        if rest[start..].starts_with("{{") || rest[start..].starts_with("}}") {
            rest = &rest[start + 2..];
            continue;
        }
        if rest.as_bytes()[start] == b'}' {
            return Err("unmatched `}` (write `}}` for a literal brace)".into());
        }
        let end = after
            .find('}')
            .ok_or_else(|| "unclosed `{` (write `{{` for a literal brace)".to_owned())?;
        let name = &after[..end];
        if !PLACEHOLDERS.contains(&name) {
            return Err(format!(
                "unknown placeholder {{{name}}}; known: {}",
                PLACEHOLDERS.join(", ")
            ));
        }
        rest = &after[end + 1..];
    }
    Ok(())
}

/// Fills a checked template.
pub fn render(template: &str, values: &BTreeMap<&'static str, String>) -> String {
    let mut out = String::with_capacity(template.len() * 2);
    let mut rest = template;
    while let Some(start) = rest.find(['{', '}']) {
        out.push_str(&rest[..start]);
        if rest[start..].starts_with("{{") {
            out.push('{');
            rest = &rest[start + 2..];
        } else if rest[start..].starts_with("}}") {
            out.push('}');
            rest = &rest[start + 2..];
        } else if let Some(end) = rest[start..].find('}')
            && rest.as_bytes()[start] == b'{'
        {
            let name = &rest[start + 1..start + end];
            out.push_str(values.get(name).map_or("", String::as_str));
            rest = &rest[start + end + 1..];
        } else {
            out.push_str(&rest[start..start + 1]);
            rest = &rest[start + 1..];
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_render_and_check() {
        let mut values = BTreeMap::new();
        values.insert("incident_id", "inc-1".to_owned());
        values.insert("summary", "OOM".to_owned());
        assert_eq!(
            render("{{x}} {incident_id}: {summary}", &values),
            "{x} inc-1: OOM"
        );
        check("{incident_id} {{literal}}").unwrap();
        assert!(
            check("{nope}")
                .unwrap_err()
                .contains("unknown placeholder {nope}")
        );
        assert!(check("{incident_id").is_err());
        assert!(check("a } b").is_err());
    }
}
