//! `rollback_storage_uri`: the predictor goes back to the storage URI of its Deployment's
//! previous revision (the ReplicaSets' pod templates), the only URI it accepts. The model's
//! `storageUri` or, for a custom container, its `STORAGE_URI` env is patched with a JSON
//! patch whose `test` op pins the field it meant.

use serde_json::{Value, json};

use opsmesh_proto::{remediation::ActionRecord, storage};

use super::{ActError, Cluster, Observed, param_str};

impl Cluster {
    /// The storage URI of the predictor's previous revision (another URI than the current).
    async fn previous_storage_uri(
        &self,
        ns: &str,
        name: &str,
        current: &str,
    ) -> Result<Option<String>, ActError> {
        let sets = self.replica_sets(ns, name).await?;
        Ok(storage::previous_storage_uri(
            &sets,
            &format!("{name}-predictor"),
            current,
        ))
    }

    /// The current URI and the previous revision's, for the ledger and the guards.
    pub(super) async fn observe_storage_uri(
        &self,
        a: &ActionRecord,
        out: &mut Observed,
    ) -> Result<(), ActError> {
        let (ns, name) = Self::isvc_target(a)?;
        let isvc = self.get_isvc(&ns, &name).await?;
        if let Some(current) = storage::predictor_storage_uri(&isvc["spec"]["predictor"]) {
            out.insert("observed_storage_uri".into(), json!(current));
            if let Some(previous) = self.previous_storage_uri(&ns, &name, current).await? {
                out.insert("observed_previous_storage_uri".into(), json!(previous));
            }
        }
        Ok(())
    }

    pub(super) async fn storage_uri_is(
        &self,
        a: &ActionRecord,
        param: &str,
    ) -> Result<bool, ActError> {
        let (ns, name) = Self::isvc_target(a)?;
        let isvc = self.get_isvc(&ns, &name).await?;
        Ok(param_str(a, param).is_some()
            && storage::predictor_storage_uri(&isvc["spec"]["predictor"]) == param_str(a, param))
    }

    /// Sets the storage URI to the action's `storage_uri`, which must be the previous
    /// revision's and differ from the current one.
    pub(super) async fn rollback_storage_uri(
        &self,
        a: &ActionRecord,
        dry_run: bool,
    ) -> Result<String, ActError> {
        let (ns, name) = Self::isvc_target(a)?;
        let uri = param_str(a, "storage_uri")
            .filter(|u| u.contains("://"))
            .ok_or_else(|| ActError::Refused("no valid storage_uri".into()))?;
        let isvc = self.get_isvc(&ns, &name).await?;
        let current = storage::predictor_storage_uri(&isvc["spec"]["predictor"])
            .ok_or_else(|| ActError::Refused(format!("{ns}/{name} names no storage URI")))?;
        if current == uri {
            return Err(ActError::Refused(format!(
                "{ns}/{name} already loads from {uri}"
            )));
        }
        let previous = self.previous_storage_uri(&ns, &name, current).await?;
        if previous.as_deref() != Some(uri) {
            return Err(ActError::Refused(format!(
                "{uri} is not the storage URI of {ns}/{name}'s previous revision ({})",
                previous
                    .as_deref()
                    .unwrap_or("no earlier ReplicaSet revision with another URI")
            )));
        }
        self.json_patch(&ns, &name, storage_uri_patch(&isvc, uri)?, dry_run)
            .await?;
        Ok(format!(
            "{}: storage URI of {ns}/{name} {current} → {uri}",
            if dry_run { "dry run" } else { "applied" }
        ))
    }

    /// Puts back the URI recorded before the change.
    pub(super) async fn restore_storage_uri(&self, a: &ActionRecord) -> Result<String, ActError> {
        let (ns, name) = Self::isvc_target(a)?;
        let previous = param_str(a, "observed_storage_uri")
            .or_else(|| param_str(a, "failing_storage_uri"))
            .ok_or_else(|| ActError::Refused("the previous storage URI is unknown".into()))?;
        let isvc = self.get_isvc(&ns, &name).await?;
        let ops = storage_uri_patch(&isvc, previous)?;
        self.json_patch(&ns, &name, ops.clone(), true).await?;
        self.json_patch(&ns, &name, ops, false).await?;
        Ok(format!("storage URI of {ns}/{name} restored to {previous}"))
    }
}

/// A JSON patch setting the model's `storageUri`, else the `STORAGE_URI` env of the custom
/// model-server container.
fn storage_uri_patch(isvc: &Value, uri: &str) -> Result<Value, ActError> {
    let predictor = &isvc["spec"]["predictor"];
    if predictor["model"]["storageUri"].is_string() {
        return Ok(
            json!([{"op": "replace", "path": "/spec/predictor/model/storageUri", "value": uri}]),
        );
    }
    let (index, container) = storage::model_container(&predictor["containers"])
        .ok_or_else(|| ActError::Refused("no predictor container".into()))?;
    let env = storage::env_index(container).ok_or_else(|| {
        ActError::Refused(format!(
            "the predictor container has no {} env",
            storage::STORAGE_URI_ENV
        ))
    })?;
    let base = format!("/spec/predictor/containers/{index}/env/{env}");
    Ok(json!([
        {"op": "test", "path": format!("{base}/name"), "value": storage::STORAGE_URI_ENV},
        {"op": "replace", "path": format!("{base}/value"), "value": uri},
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_patch_names_the_field_the_uri_lives_in() {
        let model = json!({"spec": {"predictor": {"model": {"storageUri": "gs://m/bad"}}}});
        assert_eq!(
            storage_uri_patch(&model, "gs://m/good").unwrap(),
            json!([{"op": "replace", "path": "/spec/predictor/model/storageUri", "value": "gs://m/good"}])
        );
        let custom = json!({"spec": {"predictor": {"containers": [
            {"name": "sidecar"},
            {"name": "kserve-container", "env": [{"name": "A", "value": "b"}, {"name": "STORAGE_URI", "value": "gs://m/bad"}]},
        ]}}});
        assert_eq!(
            storage_uri_patch(&custom, "gs://m/good").unwrap(),
            json!([
                {"op": "test", "path": "/spec/predictor/containers/1/env/1/name", "value": "STORAGE_URI"},
                {"op": "replace", "path": "/spec/predictor/containers/1/env/1/value", "value": "gs://m/good"},
            ])
        );
        let none = json!({"spec": {"predictor": {"containers": [{"name": "kserve-container"}]}}});
        assert!(storage_uri_patch(&none, "gs://m/good").is_err());
    }
}
