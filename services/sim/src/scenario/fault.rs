//! Faults a scenario injects: their kinds, parameters (checked by [`FaultSpec::resolve`]) and
//! targets.

use std::{collections::BTreeMap, time::Duration};

use serde::Deserialize;
use serde_json::Value;

use opsmesh_proto::{Target, quantity::parse_bytes, telemetry::ReferenceKind};

use crate::duration::parse_duration;

use super::Dur;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKindName {
    OomLoop,
    CrashLoop,
    ImagePullError,
    PolicyDenial,
    CostSpike,
    GitopsDrift,
    ApiOutage,
    MissingReference,
    ModelLoadFailure,
    CanaryRegression,
    AutoscalerSaturated,
    GpuShortage,
    None,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    #[serde(default)]
    pub at: Dur,
    pub kind: FaultKindName,
    #[serde(default)]
    pub target: Option<String>,
    #[serde(default)]
    pub params: BTreeMap<String, Value>,
}

/// A fault with its parameters checked.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    OomLoop {
        memory_demand: u64,
    },
    CrashLoop {
        persistent: bool,
        exit_code: i32,
    },
    ImagePullError,
    PolicyDenial {
        policy: String,
        resource: Option<String>,
        reason: String,
    },
    CostSpike {
        replicas: u32,
    },
    GitopsDrift,
    /// The APIs answer 503 for `duration` of virtual time.
    ApiOutage {
        duration: Duration,
        apis: Vec<Api>,
        /// Begin at the first accepted write to the Kubernetes API at or after `at` (the
        /// moment a fix lands), not at `at`: how long a remediation takes in virtual time
        /// depends on wall-clock latency, so a fixed time could not aim at verification.
        after_write: bool,
    },
    /// A rollout makes the predictor read `key` of a Secret or ConfigMap that does not exist,
    /// into the env variable `env`: the kubelet cannot create the container.
    MissingReference {
        kind: ReferenceKind,
        name: String,
        key: String,
        env: String,
    },
    /// A rollout points the predictor at `storage_uri`, which holds no model: the storage
    /// initializer fails until the URI changes.
    ModelLoadFailure {
        storage_uri: String,
    },
    /// A new image rolled out as a KServe canary (`canaryTrafficPercent`); its error rate is
    /// what the scenario's alert rows report (the simulator serves no request metrics).
    CanaryRegression {
        image: String,
        traffic_percent: u32,
    },
    /// The load asks the autoscaler for `demand` replicas, more than `spec.predictor.maxReplicas`
    /// (set to `max_replicas`): it runs at the bound. Latency is what the scenario's alert rows
    /// report (the simulator serves no request metrics).
    AutoscalerSaturated {
        max_replicas: u32,
        demand: u32,
    },
    /// From now the cluster has `nodes` GPU nodes of `gpus_per_node` GPUs each (pods already
    /// running keep theirs) and the target asks for `replicas`: pods that find no free GPU stay
    /// Pending, unschedulable, with the scheduler's `FailedScheduling` event.
    GpuShortage {
        nodes: u32,
        gpus_per_node: u32,
        replicas: u32,
    },
    None,
}

/// An API the simulator serves, as `api_outage`'s `apis` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Kubernetes,
    Argocd,
    Opencost,
}

impl Api {
    fn parse(name: &str) -> Result<Self, String> {
        match name {
            "kubernetes" => Ok(Self::Kubernetes),
            "argocd" => Ok(Self::Argocd),
            "opencost" => Ok(Self::Opencost),
            other => Err(format!(
                "params.apis: unknown API {other:?}; expected kubernetes, argocd or opencost"
            )),
        }
    }
}

impl Fault {
    pub fn name(&self) -> &'static str {
        match self {
            Self::OomLoop { .. } => "oom_loop",
            Self::CrashLoop { .. } => "crash_loop",
            Self::ImagePullError => "image_pull_error",
            Self::PolicyDenial { .. } => "policy_denial",
            Self::CostSpike { .. } => "cost_spike",
            Self::GitopsDrift => "gitops_drift",
            Self::ApiOutage { .. } => "api_outage",
            Self::MissingReference { .. } => "missing_reference",
            Self::ModelLoadFailure { .. } => "model_load_failure",
            Self::CanaryRegression { .. } => "canary_regression",
            Self::AutoscalerSaturated { .. } => "autoscaler_saturated",
            Self::GpuShortage { .. } => "gpu_shortage",
            Self::None => "none",
        }
    }
}

/// What a fault is aimed at: a wire target, which scenarios may also write `isvc/<ns>/<name>`.
/// Faults act on InferenceServices, applications and namespaces only.
fn fault_target(text: &str) -> Result<Target, String> {
    let target = match text.split_once('/') {
        Some(("isvc", rest)) => ["inferenceservice", rest].join("/").parse(),
        _ => text.parse(),
    };
    match target {
        Ok(
            t @ (Target::InferenceService { .. }
            | Target::Application { .. }
            | Target::Namespace(_)),
        ) => Ok(t),
        Ok(_) => Err(format!(
            "target {text:?} must be inferenceservice/<namespace>/<name>, application/<name> or namespace/<name>"
        )),
        Err(e) => Err(e.to_string()),
    }
}

impl FaultSpec {
    /// Checks the parameters of the kind and the target.
    pub fn resolve(&self) -> Result<(Fault, Option<Target>), String> {
        let allowed: &[&str] = match self.kind {
            FaultKindName::OomLoop => &["memory_demand"],
            FaultKindName::CrashLoop => &["persistent", "exit_code"],
            FaultKindName::PolicyDenial => &["policy", "resource", "reason"],
            FaultKindName::CostSpike => &["replicas"],
            FaultKindName::ApiOutage => &["duration", "apis", "after_write"],
            FaultKindName::MissingReference => &["secret", "config_map", "key", "env"],
            FaultKindName::ModelLoadFailure => &["storage_uri"],
            FaultKindName::CanaryRegression => &["image", "traffic_percent"],
            FaultKindName::AutoscalerSaturated => &["max_replicas", "demand"],
            FaultKindName::GpuShortage => &["nodes", "gpus_per_node", "replicas"],
            _ => &[],
        };
        if let Some(unknown) = self.params.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(format!(
                "params: unknown parameter `{unknown}` for this fault kind; expected {}",
                if allowed.is_empty() {
                    "none".to_owned()
                } else {
                    allowed.join(", ")
                }
            ));
        }
        let text = |k: &str| -> Option<String> {
            self.params.get(k).map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
        };
        let count = |k: &str| -> Result<u32, String> {
            let v = self
                .params
                .get(k)
                .ok_or_else(|| format!("params.{k} (a positive integer) is required"))?;
            v.as_u64()
                .filter(|n| *n >= 1)
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| format!("params.{k} must be a positive integer, got {v}"))
        };
        let fault = match self.kind {
            FaultKindName::OomLoop => Fault::OomLoop {
                memory_demand: parse_bytes(
                    &text("memory_demand")
                        .ok_or("params.memory_demand is required for oom_loop")?,
                )
                .map_err(|e| format!("params.memory_demand: {e}"))?,
            },
            FaultKindName::CrashLoop => Fault::CrashLoop {
                persistent: match self.params.get("persistent") {
                    None => false,
                    Some(Value::Bool(b)) => *b,
                    Some(other) => {
                        return Err(format!(
                            "params.persistent must be true or false, got {other}"
                        ));
                    }
                },
                exit_code: match self.params.get("exit_code") {
                    None => 1,
                    Some(v) => v
                        .as_i64()
                        .and_then(|c| i32::try_from(c).ok())
                        .ok_or_else(|| format!("params.exit_code must be an integer, got {v}"))?,
                },
            },
            FaultKindName::ImagePullError => Fault::ImagePullError,
            FaultKindName::PolicyDenial => Fault::PolicyDenial {
                policy: text("policy").unwrap_or_else(|| "disallow-root-containers".into()),
                resource: text("resource"),
                reason: text("reason")
                    .unwrap_or_else(|| "validation error: the resource violates the policy".into()),
            },
            FaultKindName::CostSpike => Fault::CostSpike {
                replicas: self
                    .params
                    .get("replicas")
                    .and_then(Value::as_u64)
                    .and_then(|r| u32::try_from(r).ok())
                    .ok_or("params.replicas (a non-negative integer) is required for cost_spike")?,
            },
            FaultKindName::GitopsDrift => Fault::GitopsDrift,
            FaultKindName::ApiOutage => Fault::ApiOutage {
                duration: parse_duration(
                    &text("duration").ok_or("params.duration is required for api_outage")?,
                )
                .map_err(|e| format!("params.duration: {e}"))?,
                apis: match self.params.get("apis") {
                    None => vec![Api::Kubernetes],
                    Some(Value::Array(names)) if !names.is_empty() => names
                        .iter()
                        .map(|n| {
                            n.as_str()
                                .ok_or_else(|| format!("params.apis: {n} is not an API name"))
                                .and_then(Api::parse)
                        })
                        .collect::<Result<_, _>>()?,
                    Some(other) => {
                        return Err(format!(
                            "params.apis must be a non-empty list of kubernetes, argocd, opencost; got {other}"
                        ));
                    }
                },
                after_write: match self.params.get("after_write") {
                    None => false,
                    Some(Value::Bool(b)) => *b,
                    Some(other) => {
                        return Err(format!(
                            "params.after_write must be true or false, got {other}"
                        ));
                    }
                },
            },
            FaultKindName::MissingReference => {
                let (kind, name) = match (text("secret"), text("config_map")) {
                    (Some(n), None) => (ReferenceKind::Secret, n),
                    (None, Some(n)) => (ReferenceKind::ConfigMap, n),
                    _ => {
                        return Err(
                            "missing_reference needs exactly one of params.secret and params.config_map (the object's name)"
                                .into(),
                        );
                    }
                };
                if !opsmesh_proto::name::is_dns_subdomain(&name) {
                    return Err(format!(
                        "params.{}: {name:?} is not a valid object name",
                        if kind == ReferenceKind::Secret {
                            "secret"
                        } else {
                            "config_map"
                        }
                    ));
                }
                Fault::MissingReference {
                    env: text("env")
                        .unwrap_or_else(|| name.to_uppercase().replace(['-', '.'], "_")),
                    key: text("key").unwrap_or_else(|| "value".into()),
                    kind,
                    name,
                }
            }
            FaultKindName::ModelLoadFailure => Fault::ModelLoadFailure {
                storage_uri: text("storage_uri")
                    .filter(|u| u.contains("://"))
                    .ok_or("params.storage_uri (a URI like gs://bucket/model) is required for model_load_failure")?,
            },
            FaultKindName::CanaryRegression => Fault::CanaryRegression {
                image: text("image").ok_or("params.image (the canary's image) is required for canary_regression")?,
                traffic_percent: match self.params.get("traffic_percent") {
                    None => 10,
                    Some(v) => v
                        .as_u64()
                        .filter(|p| (1..=99).contains(p))
                        .map(|p| p as u32)
                        .ok_or_else(|| format!("params.traffic_percent must be an integer from 1 to 99, got {v}"))?,
                },
            },
            FaultKindName::AutoscalerSaturated => {
                let (max_replicas, demand) = (count("max_replicas")?, count("demand")?);
                if demand <= max_replicas {
                    return Err(format!(
                        "params.demand ({demand}) must be above params.max_replicas ({max_replicas}): the autoscaler is saturated only when the load asks for more"
                    ));
                }
                Fault::AutoscalerSaturated {
                    max_replicas,
                    demand,
                }
            }
            FaultKindName::GpuShortage => Fault::GpuShortage {
                nodes: count("nodes")?,
                gpus_per_node: count("gpus_per_node")?,
                replicas: count("replicas")?,
            },
            FaultKindName::None => Fault::None,
        };
        let target = match (&fault, self.target.as_deref()) {
            (Fault::None | Fault::ApiOutage { .. }, None) => None,
            (Fault::ApiOutage { .. }, Some(_)) => {
                return Err(
                    "api_outage takes no target: it affects whole APIs (params.apis)".into(),
                );
            }
            (_, Some(t)) => Some(fault_target(t)?),
            (_, None) => return Err("target is required for this fault kind".into()),
        };
        match (&fault, &target) {
            (Fault::GitopsDrift, Some(Target::Application { .. }))
            | (Fault::None | Fault::ApiOutage { .. }, _) => {}
            (Fault::GitopsDrift, _) => {
                return Err("gitops_drift needs an application/<name> target".into());
            }
            (_, Some(Target::InferenceService { .. })) => {}
            (f, _) => {
                return Err(format!(
                    "{} needs an inferenceservice/<namespace>/<name> target",
                    f.name()
                ));
            }
        }
        Ok((fault, target))
    }
}
