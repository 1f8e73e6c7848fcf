//! An RBAC allow-list: anything not granted is answered `403 Forbidden`, as the API server
//! answers a service account whose Role does not grant the verb.

use serde::{Deserialize, Serialize};

use crate::resources::ResourceDef;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rbac {
    /// Who the requests are from, as named in `403` messages.
    #[serde(default = "default_subject")]
    pub subject: String,
    pub rules: Vec<RbacRule>,
}

fn default_subject() -> String {
    "system:serviceaccount:opsmesh:opsmesh".into()
}

/// Verbs × resources (× namespaces). `*` matches any verb or resource. A resource is named
/// `pods`, `pods/status`, or group-qualified `inferenceservices.serving.kserve.io`; an empty
/// `namespaces` list grants every namespace (and cluster-scoped resources).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RbacRule {
    pub verbs: Vec<String>,
    pub resources: Vec<String>,
    #[serde(default)]
    pub namespaces: Vec<String>,
}

impl Rbac {
    pub fn allows(
        &self,
        verb: &str,
        def: &ResourceDef,
        subresource: Option<&str>,
        namespace: Option<&str>,
    ) -> bool {
        let plain = match subresource {
            Some(sub) => format!("{}/{sub}", def.plural),
            None => def.plural.to_owned(),
        };
        let qualified = if def.group.is_empty() {
            plain.clone()
        } else {
            match subresource {
                Some(sub) => format!("{}.{}/{sub}", def.plural, def.group),
                None => format!("{}.{}", def.plural, def.group),
            }
        };
        self.rules.iter().any(|rule| {
            rule.verbs.iter().any(|v| v == "*" || v == verb)
                && rule
                    .resources
                    .iter()
                    .any(|r| r == "*" || *r == plain || *r == qualified)
                && (rule.namespaces.is_empty()
                    || namespace.is_some_and(|ns| rule.namespaces.iter().any(|n| n == ns)))
        })
    }

    /// The API server's message for a refused request.
    pub fn message(
        &self,
        verb: &str,
        def: &ResourceDef,
        subresource: Option<&str>,
        namespace: Option<&str>,
        name: &str,
    ) -> String {
        let resource = match subresource {
            Some(sub) => format!("{}/{sub}", def.plural),
            None => def.plural.to_owned(),
        };
        let what = if name.is_empty() {
            def.qualified()
        } else {
            format!("{} {name:?}", def.qualified())
        };
        let scope = match namespace {
            Some(ns) => format!(" in the namespace {ns:?}"),
            None => " at the cluster scope".into(),
        };
        format!(
            "{what} is forbidden: User {:?} cannot {verb} resource {resource:?} in API group {:?}{scope}",
            self.subject, def.group
        )
    }
}
