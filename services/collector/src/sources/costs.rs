//! The costs source: OpenCost allocations per namespace and pod over the configured window,
//! the namespaces' budgets, and each workload's usual size from OpenCost's allocation history.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::DateTime;
use k8s_openapi::api::core::v1::Namespace;
use kube::{Api, Client, api::ListParams};
use serde_json::Value;

use opsmesh_proto::telemetry::{CostAllocation, TelemetryRecord};

use super::{BUDGET_ANNOTATION, Records, Source, kube_err};
use crate::config::window_hours;

mod baseline_cache;
pub use baseline_cache::BaselineCache;
use baseline_cache::Baselines;

pub struct Costs {
    pub http: reqwest::Client,
    pub url: String,
    pub window: String,
    /// How far back the workloads' usual size is read (an OpenCost window, e.g. `24h`), in
    /// sets of `history_step`.
    pub history: String,
    pub history_step: String,
    /// The last read of that history, reused until `history_refresh`.
    pub baseline_cache: BaselineCache,
    /// For the namespaces' budget annotations; `None`: budgets from the configuration only.
    pub client: Option<Client>,
    pub namespaces: Vec<String>,
    pub budgets: BTreeMap<String, f64>,
    pub default_budget: Option<f64>,
}

impl Costs {
    /// The allocation sets OpenCost answers for `query` (one, accumulated, or one per step).
    async fn sets(&self, query: &[(&str, &str)]) -> Result<Vec<Value>, String> {
        let aggregate = query
            .iter()
            .find(|(k, _)| *k == "aggregate")
            .map_or("", |(_, v)| *v);
        let url = url::Url::parse_with_params(
            &format!("{}/allocation/compute", self.url.trim_end_matches('/')),
            query,
        )
        .map_err(|e| format!("opencost url: {e}"))?;
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| format!("opencost {aggregate}: {e}"))?;
        let status = response.status();
        let body: Value = response
            .json()
            .await
            .map_err(|e| format!("opencost {aggregate}: {status}: {e}"))?;
        if !status.is_success() {
            return Err(format!(
                "opencost {aggregate}: {status}: {}",
                body["message"].as_str().unwrap_or("")
            ));
        }
        Ok(body["data"].as_array().cloned().unwrap_or_default())
    }

    /// Allocations over the window, accumulated into one set.
    async fn allocation(&self, aggregate: &str) -> Result<serde_json::Map<String, Value>, String> {
        let sets = self
            .sets(&[
                ("window", self.window.as_str()),
                ("aggregate", aggregate),
                ("accumulate", "true"),
            ])
            .await?;
        let mut merged = serde_json::Map::new();
        for set in &sets {
            for (k, v) in set.as_object().into_iter().flatten() {
                merged.insert(k.clone(), v.clone());
            }
        }
        Ok(merged)
    }

    /// Each workload's usual size per namespace: pod allocations over `history`, one set per
    /// `history_step` (`accumulate=false`), reduced by [`baselines`].
    async fn history_baselines(&self) -> Result<Baselines, String> {
        let sets = self
            .sets(&[
                ("window", self.history.as_str()),
                ("aggregate", "pod"),
                ("step", self.history_step.as_str()),
                ("accumulate", "false"),
            ])
            .await?;
        Ok(baselines(&sets))
    }

    async fn annotated_budgets(&self) -> Result<BTreeMap<String, f64>, String> {
        let Some(client) = &self.client else {
            return Ok(BTreeMap::new());
        };
        let list = Api::<Namespace>::all(client.clone())
            .list(&ListParams::default())
            .await
            .map_err(|e| kube_err("namespaces", e))?;
        Ok(list
            .items
            .into_iter()
            .filter_map(|ns| {
                let budget = ns
                    .metadata
                    .annotations
                    .as_ref()?
                    .get(BUDGET_ANNOTATION)?
                    .trim()
                    .parse()
                    .ok()?;
                Some((ns.metadata.name?, budget))
            })
            .collect())
    }
}

#[async_trait]
impl Source for Costs {
    fn name(&self) -> &'static str {
        "costs"
    }

    async fn collect(&self) -> Result<Records, String> {
        let hours = window_hours(&self.window).unwrap_or(1.0);
        let history_read = async {
            if let Some(claim) = self.baseline_cache.claim_read() {
                claim.finish(self.history_baselines().await);
            }
        };
        // A failed history read is the cache's to handle (it keeps the last baselines), not
        // a failure of the costs read.
        let (namespaces, pods, annotated, ()) = tokio::join!(
            self.allocation("namespace"),
            self.allocation("pod"),
            self.annotated_budgets(),
            history_read
        );
        let mut baselines = self.baseline_cache.current();
        let (namespaces, pods, annotated) = (namespaces?, pods?, annotated?);
        let budget = |ns: &str| {
            annotated
                .get(ns)
                .or_else(|| self.budgets.get(ns))
                .copied()
                .or(self.default_budget)
        };
        let wanted =
            |ns: &str| self.namespaces.is_empty() || self.namespaces.iter().any(|n| n == ns);
        let record = |ns: String, pod: Option<String>, a: &Value| CostAllocation {
            hourly_budget_usd: if pod.is_none() { budget(&ns) } else { None },
            namespace: ns,
            pod,
            window: self.window.clone(),
            hourly_cost_usd: round(a["totalCost"].as_f64().unwrap_or(0.0) / hours),
            cpu_cost_usd: round(a["cpuCost"].as_f64().unwrap_or(0.0) / hours),
            gpu_cost_usd: round(a["gpuCost"].as_f64().unwrap_or(0.0) / hours),
            ram_cost_usd: round(a["ramCost"].as_f64().unwrap_or(0.0) / hours),
            baseline_replicas: BTreeMap::new(),
        };
        let mut out = Vec::new();
        for (key, a) in &namespaces {
            let ns = a["properties"]["namespace"]
                .as_str()
                .unwrap_or(key)
                .to_owned();
            if key.starts_with("__") || !wanted(&ns) {
                continue;
            }
            let mut total = record(ns.clone(), None, a);
            total.baseline_replicas = baselines.remove(&ns).unwrap_or_default();
            out.push((format!("cost/{ns}"), TelemetryRecord::Costs(total)));
        }
        for (key, a) in &pods {
            let ns = a["properties"]["namespace"]
                .as_str()
                .unwrap_or("")
                .to_owned();
            let pod = a["properties"]["pod"].as_str().unwrap_or(key).to_owned();
            if key.starts_with("__") || ns.is_empty() || !wanted(&ns) {
                continue;
            }
            out.push((
                format!("cost/{ns}/{pod}"),
                TelemetryRecord::Costs(record(ns, Some(pod), a)),
            ));
        }
        Ok(out)
    }
}

fn round(v: f64) -> f64 {
    (v * 10_000.0).round() / 10_000.0
}

/// Replicas each controller ran per step: its pods' minutes in the step over the step's
/// length (so pods replaced mid-step count once); the median over the steps it ran in,
/// rounded, by namespace and controller. Pods without a controller are left out.
pub(super) fn baselines(sets: &[Value]) -> Baselines {
    let mut per_step: BTreeMap<(String, String), Vec<f64>> = BTreeMap::new();
    for set in sets {
        let mut replicas: BTreeMap<(String, String), f64> = BTreeMap::new();
        for a in set.as_object().into_iter().flat_map(|s| s.values()) {
            let props = &a["properties"];
            let (Some(ns), Some(controller)) =
                (props["namespace"].as_str(), props["controller"].as_str())
            else {
                continue;
            };
            let time = |k: &str| {
                a["window"][k]
                    .as_str()
                    .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            };
            let (Some(start), Some(end)) = (time("start"), time("end")) else {
                continue;
            };
            let step_minutes = (end - start).num_seconds() as f64 / 60.0;
            if step_minutes <= 0.0 {
                continue;
            }
            *replicas
                .entry((ns.to_owned(), controller.to_owned()))
                .or_default() += a["minutes"].as_f64().unwrap_or(0.0) / step_minutes;
        }
        for (key, r) in replicas {
            per_step.entry(key).or_default().push(r);
        }
    }
    let mut out = Baselines::new();
    for ((ns, controller), mut steps) in per_step {
        steps.sort_by(f64::total_cmp);
        let mid = steps.len() / 2;
        let median = if steps.len() % 2 == 0 {
            (steps[mid - 1] + steps[mid]) / 2.0
        } else {
            steps[mid]
        };
        let usual = median.round() as u32;
        if usual > 0 {
            out.entry(ns).or_default().insert(controller, usual);
        }
    }
    out
}
