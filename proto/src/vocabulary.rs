//! Shared vocabulary (root causes, actions, incident states), as in the scenario contract.

/// Declares a closed set of names, spelled in snake_case alike on the wire, in the schemas and
/// in text (`Display`, `FromStr`, `&'static str`), with every value listed (`VARIANTS`).
macro_rules! vocabulary {
    ($(#[$attr:meta])* pub enum $name:ident { $($variants:tt)* }) => {
        $(#[$attr])*
        #[derive(
            Debug,
            Clone,
            Copy,
            PartialEq,
            Eq,
            Hash,
            ::serde::Serialize,
            ::serde::Deserialize,
            ::schemars::JsonSchema,
            ::strum::Display,
            ::strum::EnumString,
            ::strum::IntoStaticStr,
            ::strum::VariantArray,
        )]
        #[serde(rename_all = "snake_case")]
        #[strum(serialize_all = "snake_case")]
        pub enum $name { $($variants)* }
    };
}
pub(crate) use vocabulary;

vocabulary! {
    #[derive(PartialOrd, Ord)]
    pub enum Severity {
        Info,
        Low,
        Medium,
        High,
        Critical,
    }
}

impl Severity {
    /// Maps the many spellings senders use (Splunk 1–6, Alertmanager labels) to one scale.
    pub fn parse_lenient(value: &str) -> Option<Self> {
        Some(match value.trim().to_ascii_lowercase().as_str() {
            "info" | "informational" | "1" | "2" => Self::Info,
            "low" | "warning" | "warn" | "3" => Self::Low,
            "medium" | "moderate" | "4" => Self::Medium,
            "high" | "error" | "major" | "5" => Self::High,
            "critical" | "fatal" | "page" | "6" => Self::Critical,
            _ => return None,
        })
    }
}

vocabulary! {
    pub enum RootCause {
        OomKilled,
        CrashLoop,
        ImagePullError,
        PolicyViolation,
        CostOverrun,
        GitopsDrift,
        // The predictor references a Secret or ConfigMap that does not exist.
        MissingReference,
        // The model cannot be loaded (bad `storageUri`): the storage initializer fails.
        ModelLoadFailure,
        // A canary revision fails more requests than the stable one.
        CanaryRegression,
        // The autoscaler runs the predictor at its maxReplicas while latency rises.
        AutoscalerSaturated,
        // Predictor pods stay Pending: no node has the GPUs they request.
        GpuUnschedulable,
        Unknown,
        None,
    }
}

vocabulary! {
    pub enum ActionKind {
        PatchMemoryLimit,
        RestartInferenceService,
        ScaleInferenceService,
        ArgocdSync,
        ApplyResourceQuota,
        RollbackImage,
        // Back to the previous revision's `storageUri`.
        RollbackStorageUri,
        // KServe `canaryTrafficPercent` (0: all traffic back to the stable revision).
        SetCanaryTraffic,
        // KServe `spec.predictor.maxReplicas`, only ever raised.
        RaiseMaxReplicas,
        // Capacity advice for the developer (no room to scale); changes nothing.
        AdviseCapacity,
        SuggestPolicyFix,
        Escalate,
    }
}

vocabulary! {
    /// Where an incident stands in the remediator's state machine.
    pub enum IncidentState {
        Received,
        Planned,
        AwaitingApproval,
        Executing,
        Verifying,
        Resolved,
        RolledBack,
        Escalated,
        Refused,
        Advised,
        DryRun,
        NoAction,
    }
}

impl IncidentState {
    /// States that end an incident for the remediator (a dry run ends it without a change).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Resolved
                | Self::Escalated
                | Self::Refused
                | Self::Advised
                | Self::DryRun
                | Self::NoAction
        )
    }
}

#[cfg(test)]
mod tests {
    use serde::Serialize;
    use strum::VariantArray;

    use super::*;

    /// strum and serde must agree on every wire name.
    #[test]
    fn display_matches_serde() {
        fn check<T: Serialize + std::fmt::Display + VariantArray>() {
            for v in T::VARIANTS {
                assert_eq!(serde_json::to_value(v).unwrap(), v.to_string());
            }
        }
        check::<Severity>();
        check::<RootCause>();
        check::<ActionKind>();
        check::<IncidentState>();
    }
}
