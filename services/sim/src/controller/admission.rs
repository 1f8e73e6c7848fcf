//! Admission of pods (LimitRange defaults and bounds, ResourceQuota) and quota status.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use opsmesh_proto::quantity::{format_bytes, json_quantity};

use crate::{resources, world::World};

/// Resources a pod asks for, summed over containers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Demand {
    pub memory_limit: u64,
    pub memory_request: u64,
    pub gpu: u64,
    pub cpu_request: f64,
    /// Per container: memory limit.
    pub container_limits: Vec<Option<u64>>,
}

pub fn pod_demand(pod: &Value) -> Demand {
    let mut d = Demand::default();
    for c in pod["spec"]["containers"].as_array().into_iter().flatten() {
        let r = &c["resources"];
        let lim = r["limits"]
            .get("memory")
            .and_then(json_quantity)
            .map(|v| v as u64);
        let req = r["requests"]
            .get("memory")
            .and_then(json_quantity)
            .map(|v| v as u64)
            .or(lim);
        d.memory_limit += lim.unwrap_or(0);
        d.memory_request += req.unwrap_or(0);
        d.gpu += r["limits"]
            .get("nvidia.com/gpu")
            .and_then(json_quantity)
            .or_else(|| r["requests"].get("nvidia.com/gpu").and_then(json_quantity))
            .unwrap_or(0.0) as u64;
        d.cpu_request += r["requests"]
            .get("cpu")
            .and_then(json_quantity)
            .or_else(|| r["limits"].get("cpu").and_then(json_quantity))
            .unwrap_or(0.0);
        d.container_limits.push(lim);
    }
    d
}

impl World {
    /// Admission of a pod written through the API: LimitRange defaults, then the LimitRange
    /// and ResourceQuota bounds; the reason in words when it is refused.
    pub(crate) fn admit_pod(&self, ns: &str, pod: &mut Value) -> Result<(), String> {
        self.apply_limit_range_defaults(ns, pod);
        let demand = pod_demand(pod);
        match self.limit_range_violation(ns, &demand) {
            Some(msg) => Err(msg),
            None => self.quota_violation(ns, &demand).map_or(Ok(()), Err),
        }
    }

    fn apply_limit_range_defaults(&self, ns: &str, pod: &mut Value) {
        let ranges: Vec<Value> = self
            .objects_of(&resources::LIMIT_RANGES, Some(ns))
            .cloned()
            .collect();
        for lr in ranges {
            for limit in lr["spec"]["limits"].as_array().into_iter().flatten() {
                if limit["type"] != "Container" {
                    continue;
                }
                if let Some(cs) = pod["spec"]["containers"].as_array_mut() {
                    for c in cs {
                        for (field, kind) in [("default", "limits"), ("defaultRequest", "requests")]
                        {
                            if let Some(m) = limit[field].as_object() {
                                for (res, v) in m {
                                    if c["resources"][kind].get(res).is_none() {
                                        c["resources"][kind][res] = v.clone();
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    fn limit_range_violation(&self, ns: &str, demand: &Demand) -> Option<String> {
        for lr in self.objects_of(&resources::LIMIT_RANGES, Some(ns)) {
            for limit in lr["spec"]["limits"].as_array().into_iter().flatten() {
                if limit["type"] != "Container" {
                    continue;
                }
                let max = limit["max"]
                    .get("memory")
                    .and_then(json_quantity)
                    .map(|v| v as u64);
                let min = limit["min"]
                    .get("memory")
                    .and_then(json_quantity)
                    .map(|v| v as u64);
                for lim in demand.container_limits.iter().flatten() {
                    if let Some(max) = max
                        && *lim > max
                    {
                        return Some(format!(
                            "maximum memory usage per Container is {}, but limit is {}",
                            format_bytes(max),
                            format_bytes(*lim)
                        ));
                    }
                    if let Some(min) = min
                        && *lim < min
                    {
                        return Some(format!(
                            "minimum memory usage per Container is {}, but limit is {}",
                            format_bytes(min),
                            format_bytes(*lim)
                        ));
                    }
                }
            }
        }
        None
    }

    /// Resources used in a namespace, by quota resource name.
    fn quota_used(&self, ns: &str) -> BTreeMap<&'static str, f64> {
        let mut used = BTreeMap::new();
        for pod in self.objects_of(&resources::PODS, Some(ns)) {
            let d = pod_demand(pod);
            for (k, v) in quota_amounts(&d) {
                *used.entry(k).or_insert(0.0) += v;
            }
        }
        used
    }

    fn quota_violation(&self, ns: &str, demand: &Demand) -> Option<String> {
        let used = self.quota_used(ns);
        let asked = quota_amounts(demand);
        for q in self.objects_of(&resources::RESOURCE_QUOTAS, Some(ns)) {
            let qname = q["metadata"]["name"].as_str().unwrap_or("");
            for (res, hard) in q["spec"]["hard"].as_object().into_iter().flatten() {
                let Some(hard) = json_quantity(hard) else {
                    continue;
                };
                let Some((k, want)) = asked.iter().find(|(k, _)| *k == res.as_str()) else {
                    continue;
                };
                let have = used.get(k).copied().unwrap_or(0.0);
                if have + want > hard + 1e-9 {
                    let fmt = |v: f64| {
                        if k.contains("memory") {
                            format_bytes(v as u64)
                        } else {
                            format!("{v}")
                        }
                    };
                    return Some(format!(
                        "exceeded quota: {qname}, requested: {res}={}, used: {res}={}, limited: {res}={}",
                        fmt(*want),
                        fmt(have),
                        fmt(hard)
                    ));
                }
            }
        }
        None
    }

    pub(super) fn reconcile_quotas(&mut self) {
        let quotas: Vec<Value> = self
            .objects_of(&resources::RESOURCE_QUOTAS, None)
            .cloned()
            .collect();
        for mut q in quotas {
            let ns = q["metadata"]["namespace"].as_str().unwrap_or("").to_owned();
            let name = q["metadata"]["name"].as_str().unwrap_or("").to_owned();
            let used = self.quota_used(&ns);
            let hard = q["spec"]["hard"].clone();
            let mut used_doc = json!({});
            for (res, _) in hard.as_object().into_iter().flatten() {
                let v = used.get(res.as_str()).copied().unwrap_or(0.0);
                used_doc[res] = json!(if res.contains("memory") {
                    format_bytes(v as u64)
                } else {
                    format!("{v}")
                });
            }
            let status = json!({"hard": hard, "used": used_doc});
            if q["status"] != status {
                q["status"] = status;
                self.put(&resources::RESOURCE_QUOTAS, &ns, &name, q);
            }
        }
    }
}

fn quota_amounts(d: &Demand) -> Vec<(&'static str, f64)> {
    vec![
        ("pods", 1.0),
        ("count/pods", 1.0),
        ("requests.memory", d.memory_request as f64),
        ("memory", d.memory_request as f64),
        ("limits.memory", d.memory_limit as f64),
        ("requests.nvidia.com/gpu", d.gpu as f64),
        ("limits.nvidia.com/gpu", d.gpu as f64),
        ("requests.cpu", d.cpu_request),
        ("cpu", d.cpu_request),
    ]
}
