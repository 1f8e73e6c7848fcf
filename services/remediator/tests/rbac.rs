//! The remediator's RBAC manifest grants exactly what its code declares it uses.

use opsmesh_remediator::KUBERNETES_PERMISSIONS;
use serde_json::{Value, json};

#[test]
fn the_deployed_role_matches_the_code() {
    let path =
        std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"))
            .join("../../deploy/k8s/remediator-rbac.expected.json");
    let deployed: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let declared: Vec<Value> = KUBERNETES_PERMISSIONS
        .iter()
        .map(|p| json!({"apiGroup": p.api_group, "resource": p.resource, "verbs": p.verbs}))
        .collect();
    assert_eq!(
        deployed,
        Value::Array(declared),
        "deploy/k8s/remediator-rbac.expected.json"
    );
}
