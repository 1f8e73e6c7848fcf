//! What an alert, a diagnosis or an action is about, as the wire writes it:
//! `inferenceservice/<ns>/<name>`, `namespace/<ns>`, `application/<name>` or
//! `application/<ns>/<name>`, `policy/<name>`, and `<kind>/<ns>/<name>` for the other namespaced
//! objects alerts and policy reports name (`pod/<ns>/<name>`).
//!
//! Messages carry the string; [`Target`]'s `FromStr` is the one parser (every name checked
//! against RFC 1123 before anything is called with it) and its `Display` the one printer.

use std::{fmt, str::FromStr};

use thiserror::Error;

use crate::name::{NameKind, validate_name};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    InferenceService {
        namespace: String,
        name: String,
    },
    Namespace(String),
    /// An Argo CD Application. The collector keys it by its destination namespace; to the
    /// remediator an application is not a namespaced workload, so [`Target::namespace`] is `None`.
    Application {
        namespace: Option<String>,
        name: String,
    },
    /// A Kyverno policy.
    Policy(String),
    /// Another namespaced object (a pod, a deployment) that an alert or a policy report names.
    /// Diagnoses point at one; no action acts on one.
    Object {
        kind: String,
        namespace: String,
        name: String,
    },
}

/// Kinds with a shape of their own, which [`Target::Object`] never takes.
const KINDS: [&str; 4] = ["inferenceservice", "namespace", "application", "policy"];

/// Why a string is not a target.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TargetError {
    #[error(
        "target {0:?} is not inferenceservice/<ns>/<name>, namespace/<ns>, application/<name>, \
         application/<ns>/<name>, policy/<name> or <kind>/<ns>/<name>"
    )]
    Shape(String),
    #[error("{what} {value:?} is not a valid RFC 1123 name")]
    Name { what: &'static str, value: String },
}

impl Target {
    /// The target of a `kind` object in a namespace (`kind` as Kubernetes spells it, any case):
    /// InferenceServices and Applications get their own variants, anything else is an [`Object`].
    ///
    /// [`Object`]: Target::Object
    pub fn namespaced(kind: &str, namespace: &str, name: &str) -> Self {
        let (namespace, name) = (namespace.to_owned(), name.to_owned());
        match kind.to_ascii_lowercase().as_str() {
            "inferenceservice" => Self::InferenceService { namespace, name },
            "application" => Self::Application {
                namespace: Some(namespace),
                name,
            },
            other => Self::Object {
                kind: other.to_owned(),
                namespace,
                name,
            },
        }
    }

    /// The first segment, as runbooks name target kinds.
    pub fn kind(&self) -> &str {
        match self {
            Self::InferenceService { .. } => "inferenceservice",
            Self::Namespace(_) => "namespace",
            Self::Application { .. } => "application",
            Self::Policy(_) => "policy",
            Self::Object { kind, .. } => kind,
        }
    }

    /// The namespace of the workload the target is or lives in.
    pub fn namespace(&self) -> Option<&str> {
        match self {
            Self::InferenceService { namespace, .. } | Self::Object { namespace, .. } => {
                Some(namespace)
            }
            Self::Namespace(ns) => Some(ns),
            Self::Application { .. } | Self::Policy(_) => None,
        }
    }
}

impl FromStr for Target {
    type Err = TargetError;

    fn from_str(text: &str) -> Result<Self, TargetError> {
        fn checked(what: &'static str, value: &str, kind: NameKind) -> Result<String, TargetError> {
            validate_name(value, kind)
                .map(|()| value.to_owned())
                .map_err(|_| TargetError::Name {
                    what,
                    value: value.to_owned(),
                })
        }
        let label = |what, v| checked(what, v, NameKind::Label);
        let subdomain = |what, v| checked(what, v, NameKind::Subdomain);
        match text.split('/').collect::<Vec<_>>().as_slice() {
            ["inferenceservice", ns, name] => Ok(Self::InferenceService {
                namespace: label("namespace", ns)?,
                name: label("InferenceService name", name)?,
            }),
            ["namespace", ns] => Ok(Self::Namespace(label("namespace", ns)?)),
            ["application", name] => Ok(Self::Application {
                namespace: None,
                name: subdomain("application name", name)?,
            }),
            ["application", ns, name] => Ok(Self::Application {
                namespace: Some(label("namespace", ns)?),
                name: subdomain("application name", name)?,
            }),
            ["policy", name] => Ok(Self::Policy(subdomain("policy name", name)?)),
            [kind, ns, name] if !KINDS.contains(kind) => Ok(Self::Object {
                kind: label("kind", kind)?,
                namespace: label("namespace", ns)?,
                name: subdomain("name", name)?,
            }),
            _ => Err(TargetError::Shape(text.to_owned())),
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
            Self::Application {
                namespace: Some(ns),
                name,
            } => write!(f, "application/{ns}/{name}"),
            Self::Application {
                namespace: None,
                name,
            } => write!(f, "application/{name}"),
            Self::Policy(name) => write!(f, "policy/{name}"),
            Self::Object {
                kind,
                namespace,
                name,
            } => write!(f, "{kind}/{namespace}/{name}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shape_parses_and_prints_back() {
        for text in [
            "inferenceservice/ml-team-a/gpt-oss-120b",
            "namespace/ml-team-a",
            "application/ml-team-c-models",
            "application/argocd/ml-team-c.models",
            "policy/disallow-root-containers",
            "pod/ml-team-a/gpt-oss-120b-predictor-0",
        ] {
            let target: Target = text.parse().unwrap();
            assert_eq!(target.to_string(), text);
        }
        assert_eq!(
            "inferenceservice/ml-team-a/gpt-oss-120b".parse(),
            Ok(Target::InferenceService {
                namespace: "ml-team-a".into(),
                name: "gpt-oss-120b".into()
            })
        );
        assert_eq!(
            "namespace/ml-team-a".parse::<Target>().unwrap().namespace(),
            Some("ml-team-a")
        );
        assert_eq!(
            "application/argocd/app"
                .parse::<Target>()
                .unwrap()
                .namespace(),
            None
        );
    }

    #[test]
    fn errors_name_what_is_wrong() {
        for (bad, error) in [
            ("inferenceservice/ML/x", r#"namespace "ML" is not"#),
            (
                "inferenceservice/a/-b",
                r#"InferenceService name "-b" is not"#,
            ),
            ("namespace/a_b", r#"namespace "a_b" is not"#),
            ("namespace/", r#"namespace "" is not"#),
            ("Pod/a/b", r#"kind "Pod" is not"#),
            ("policy/a..b", r#"policy name "a..b" is not"#),
            ("inferenceservice/a/b?x=1", r#"name "b?x=1" is not"#),
            (
                "inferenceservice/a/b/c",
                "is not inferenceservice/<ns>/<name>",
            ),
            ("namespace/a/b", "is not inferenceservice/<ns>/<name>"),
            ("policy/a/b", "is not inferenceservice/<ns>/<name>"),
            ("pod/a", "is not inferenceservice/<ns>/<name>"),
            ("", "is not inferenceservice/<ns>/<name>"),
        ] {
            let e = bad.parse::<Target>().unwrap_err().to_string();
            assert!(e.contains(error), "{bad}: {e}");
        }
    }

    #[test]
    fn namespaced_maps_kinds_to_their_variants() {
        assert_eq!(
            Target::namespaced("InferenceService", "a", "b").to_string(),
            "inferenceservice/a/b"
        );
        assert_eq!(
            Target::namespaced("application", "a", "b"),
            "application/a/b".parse().unwrap()
        );
        assert_eq!(Target::namespaced("Pod", "a", "b").to_string(), "pod/a/b");
        assert_eq!(Target::namespaced("Pod", "a", "b").kind(), "pod");
    }
}
