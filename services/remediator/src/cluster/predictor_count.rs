//! A number under `spec.predictor` that an action sets (`canaryTrafficPercent`,
//! `maxReplicas`): observed before the change, compared for idempotency, merge-patched, and
//! put back on undo.

use serde_json::{Value, json};

use opsmesh_proto::remediation::ActionRecord;

use super::{ActError, Cluster, Observed, param_u64};

pub(super) struct PredictorCount {
    /// The field under `spec.predictor`.
    pub field: &'static str,
    /// The action param holding the wanted value.
    pub param: &'static str,
    /// The observed value recorded before the change.
    pub observed: &'static str,
    /// The diagnosis' param with the value before the change (used when none was observed).
    pub previous: &'static str,
}

impl PredictorCount {
    pub fn of(&self, isvc: &Value) -> Option<u64> {
        isvc["spec"]["predictor"][self.field].as_u64()
    }

    fn patch(&self, value: u64) -> Value {
        json!({"spec": {"predictor": {self.field: value}}})
    }
}

impl Cluster {
    /// Records the current value; returns the InferenceService read.
    pub(super) async fn observe_count(
        &self,
        a: &ActionRecord,
        count: &PredictorCount,
        out: &mut Observed,
    ) -> Result<Value, ActError> {
        let (ns, name) = Self::isvc_target(a)?;
        let isvc = self.get_isvc(&ns, &name).await?;
        if let Some(v) = count.of(&isvc) {
            out.insert(count.observed.into(), json!(v));
        }
        Ok(isvc)
    }

    pub(super) async fn count_is(
        &self,
        a: &ActionRecord,
        count: &PredictorCount,
    ) -> Result<bool, ActError> {
        let (ns, name) = Self::isvc_target(a)?;
        let isvc = self.get_isvc(&ns, &name).await?;
        let want = param_u64(a, count.param);
        Ok(want.is_some() && count.of(&isvc) == want)
    }

    pub(super) async fn set_count(
        &self,
        (ns, name): (&str, &str),
        count: &PredictorCount,
        value: u64,
        dry_run: bool,
    ) -> Result<(), ActError> {
        self.merge_patch(ns, name, &count.patch(value), dry_run)
            .await
    }

    /// Puts back the value recorded before the change (a dry run first).
    pub(super) async fn restore_count(
        &self,
        a: &ActionRecord,
        count: &PredictorCount,
    ) -> Result<String, ActError> {
        let (ns, name) = Self::isvc_target(a)?;
        let previous = param_u64(a, count.observed)
            .or_else(|| param_u64(a, count.previous))
            .ok_or_else(|| ActError::Refused(format!("the previous {} is unknown", count.field)))?;
        self.set_count((&ns, &name), count, previous, true).await?;
        self.set_count((&ns, &name), count, previous, false).await?;
        Ok(format!(
            "{} of {ns}/{name} restored to {previous}",
            count.field
        ))
    }
}
