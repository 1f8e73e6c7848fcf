//! Action targets (`inferenceservice/<ns>/<name>`, `namespace/<ns>`, `application/<name>`),
//! validated as Kubernetes names before anything is called with them.

use std::fmt;

/// A validated action target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    InferenceService { namespace: String, name: String },
    Namespace(String),
    Application { name: String },
    Policy(String),
}

/// RFC 1123 label: lowercase alphanumerics and `-`, starting and ending alphanumeric, ≤ 63.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// RFC 1123 subdomain: labels separated by dots, ≤ 253.
pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

impl Target {
    pub fn parse(text: &str) -> Result<Self, String> {
        let parts: Vec<&str> = text.split('/').collect();
        let check_label = |what: &str, v: &str| {
            if is_dns_label(v) {
                Ok(v.to_owned())
            } else {
                Err(format!("{what} {v:?} is not a valid RFC 1123 name"))
            }
        };
        let check_sub = |what: &str, v: &str| {
            if is_dns_subdomain(v) {
                Ok(v.to_owned())
            } else {
                Err(format!("{what} {v:?} is not a valid RFC 1123 name"))
            }
        };
        match parts.as_slice() {
            ["inferenceservice", ns, name] => Ok(Self::InferenceService {
                namespace: check_label("namespace", ns)?,
                name: check_label("InferenceService name", name)?,
            }),
            ["namespace", ns] => Ok(Self::Namespace(check_label("namespace", ns)?)),
            ["application", name] => Ok(Self::Application {
                name: check_sub("application name", name)?,
            }),
            ["application", _ns, name] => Ok(Self::Application {
                name: check_sub("application name", name)?,
            }),
            ["policy", name] => Ok(Self::Policy(check_sub("policy name", name)?)),
            _ => Err(format!(
                "target {text:?} is not inferenceservice/<ns>/<name>, namespace/<ns>, application/<name> or policy/<name>"
            )),
        }
    }

    /// The first segment, as runbooks name target kinds.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::InferenceService { .. } => "inferenceservice",
            Self::Namespace(_) => "namespace",
            Self::Application { .. } => "application",
            Self::Policy(_) => "policy",
        }
    }

    /// The namespace the target lives in, when it is namespaced.
    pub fn namespace(&self) -> Option<&str> {
        match self {
            Self::InferenceService { namespace, .. } => Some(namespace),
            Self::Namespace(ns) => Some(ns),
            Self::Application { .. } | Self::Policy(_) => None,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InferenceService { namespace, name } => {
                write!(f, "inferenceservice/{namespace}/{name}")
            }
            Self::Namespace(ns) => write!(f, "namespace/{ns}"),
            Self::Application { name } => write!(f, "application/{name}"),
            Self::Policy(name) => write!(f, "policy/{name}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_and_invalid_targets() {
        assert_eq!(
            Target::parse("inferenceservice/ml-team-a/gpt-oss-120b").unwrap(),
            Target::InferenceService {
                namespace: "ml-team-a".into(),
                name: "gpt-oss-120b".into()
            }
        );
        assert_eq!(
            Target::parse("namespace/ml-team-a").unwrap().namespace(),
            Some("ml-team-a")
        );
        assert!(Target::parse("application/ml-team-c-models").is_ok());
        for bad in [
            "inferenceservice/ML/x",
            "inferenceservice/a/b/c",
            "inferenceservice/a/-b",
            "namespace/a_b",
            "namespace/",
            "pod/a/b",
            "inferenceservice/a/b?x=1",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }
}
