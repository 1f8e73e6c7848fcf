//! The missing-reference rule: the predictor reads a Secret or ConfigMap that does not exist.
//! Nothing in the cluster can be changed safely (opsmesh never invents a secret's value), so
//! it escalates with the exact object, the keys the pods read and the fix.

use serde_json::json;

use opsmesh_proto::{
    ActionKind, RootCause,
    telemetry::{MissingReference, ReferenceKind},
};

use super::{Finding, proposal};

pub(super) fn missing_reference(
    target: &str,
    namespace: &str,
    missing: &MissingReference,
    ev: &[&str],
) -> Finding {
    let (kind, lower, data) = match missing.kind {
        ReferenceKind::Secret => ("Secret", "secret", "stringData"),
        ReferenceKind::ConfigMap => ("ConfigMap", "configmap", "data"),
    };
    let name = &missing.name;
    let object = format!("{kind} {namespace}/{name}");
    let keys: Vec<&str> = if missing.keys.is_empty() {
        vec!["<key>"]
    } else {
        missing.keys.iter().map(String::as_str).collect()
    };
    let used_by = if missing.used_by.is_empty() {
        "the predictor pods".to_owned()
    } else {
        missing.used_by.join(", ")
    };
    let create = format!(
        "kubectl create {lower} {}{name} -n {namespace} {}",
        if missing.kind == ReferenceKind::Secret {
            "generic "
        } else {
            ""
        },
        keys.iter()
            .map(|k| format!("--from-literal={k}=<value>"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let yaml = format!(
        "# {object} is read by {used_by} and does not exist. Create it with the values the \
         model needs (or correct the reference in the InferenceService):\n\
         apiVersion: v1\nkind: {kind}\nmetadata:\n  name: {name}\n  namespace: {namespace}\n{}{data}:\n{}",
        if missing.kind == ReferenceKind::Secret {
            "type: Opaque\n"
        } else {
            ""
        },
        keys.iter()
            .map(|k| format!("  {k}: <value>\n"))
            .collect::<String>()
    );
    Finding {
        root_cause: RootCause::MissingReference,
        confidence: 0.95,
        target: Some(target.to_owned()),
        summary: format!("{target} cannot start: {object} does not exist; escalate"),
        explanation: format!(
            "The kubelet cannot create the predictor container: {:?} ({}). {object} is read by \
             {used_by}. opsmesh never creates a {kind} (it cannot know the value); a human \
             creates it (`{create}`) or fixes the reference, and the pods start on their own.",
            missing.message,
            ev.join(", ")
        ),
        actions: vec![proposal(
            ActionKind::Escalate,
            target,
            json!({"missing_object": object, "keys": missing.keys, "fix": create}),
            ev,
            format!("{object} is missing; only its owner can create it"),
        )],
        developer_fix: Some(yaml),
        evidence: Vec::new(),
        query: format!("missing {kind} {lower} not found CreateContainerConfigError escalate"),
    }
}
