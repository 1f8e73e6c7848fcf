//! Recent telemetry per resource, from `opsmesh.telemetry.v1`: bounded in time and count.

use std::{
    collections::{HashMap, VecDeque},
    sync::RwLock,
};

use chrono::{DateTime, Duration, Utc};

use opsmesh_proto::telemetry::{
    CostAllocation, GitOpsStatus, ModelHealth, PolicyStatus, Telemetry, TelemetryRecord,
};

/// A telemetry record as evidence: where it came from and when.
#[derive(Debug, Clone)]
pub struct Observed<T> {
    pub resource: String,
    pub observed_at: DateTime<Utc>,
    pub record: T,
}

#[derive(Default)]
struct Series {
    models: HashMap<(String, String), VecDeque<Observed<ModelHealth>>>,
    costs: HashMap<(String, Option<String>), VecDeque<Observed<CostAllocation>>>,
    policies: HashMap<(String, String, String), VecDeque<Observed<PolicyStatus>>>,
    gitops: HashMap<String, VecDeque<Observed<GitOpsStatus>>>,
}

pub struct TelemetryStore {
    window: Duration,
    per_resource: usize,
    series: RwLock<Series>,
}

fn push<K: std::hash::Hash + Eq, T>(
    map: &mut HashMap<K, VecDeque<Observed<T>>>,
    key: K,
    item: Observed<T>,
    window: Duration,
    cap: usize,
) {
    let history = map.entry(key).or_default();
    history.push_back(item);
    let newest = history
        .back()
        .map(|o| o.observed_at)
        .unwrap_or_else(Utc::now);
    while history.len() > cap
        || history
            .front()
            .is_some_and(|o| newest - o.observed_at > window)
    {
        history.pop_front();
    }
}

impl TelemetryStore {
    pub fn new(window: std::time::Duration, per_resource: usize) -> Self {
        Self {
            window: Duration::from_std(window).unwrap_or(Duration::hours(1)),
            per_resource: per_resource.max(1),
            series: RwLock::new(Series::default()),
        }
    }

    pub fn record(&self, telemetry: Telemetry) {
        let (window, cap) = (self.window, self.per_resource);
        let mut series = self.series.write().unwrap_or_else(|p| p.into_inner());
        let Telemetry {
            resource,
            observed_at,
            record,
        } = telemetry;
        match record {
            TelemetryRecord::Models(m) => {
                let key = (m.namespace.clone(), m.name.clone());
                push(
                    &mut series.models,
                    key,
                    Observed {
                        resource,
                        observed_at,
                        record: m,
                    },
                    window,
                    cap,
                );
            }
            TelemetryRecord::Costs(c) => {
                let key = (c.namespace.clone(), c.pod.clone());
                push(
                    &mut series.costs,
                    key,
                    Observed {
                        resource,
                        observed_at,
                        record: c,
                    },
                    window,
                    cap,
                );
            }
            TelemetryRecord::Policies(p) => {
                let key = (p.namespace.clone(), p.policy.clone(), p.resource.clone());
                push(
                    &mut series.policies,
                    key,
                    Observed {
                        resource,
                        observed_at,
                        record: p,
                    },
                    window,
                    cap,
                );
            }
            TelemetryRecord::Argocd(g) => {
                let key = g.application.clone();
                push(
                    &mut series.gitops,
                    key,
                    Observed {
                        resource,
                        observed_at,
                        record: g,
                    },
                    window,
                    cap,
                );
            }
            TelemetryRecord::SourceError(_) => {}
        }
    }

    /// Whether anything is known about what `entity` names (its model, its application, its
    /// namespace's costs or policies).
    pub fn knows(&self, entity: &opsmesh_proto::alert::Entity) -> bool {
        let namespace = entity.namespace.as_deref().unwrap_or_default();
        if let Some(app) = &entity.application {
            return self.application(app).is_some();
        }
        if let Some(policy) = &entity.policy {
            return !self.failing_policies(namespace, Some(policy)).is_empty();
        }
        if entity.kind == Some(opsmesh_proto::alert::EntityKind::Inferenceservice) {
            return self
                .model(namespace, entity.name.as_deref().unwrap_or_default())
                .is_some();
        }
        self.costs(namespace).0.is_some()
    }

    /// Latest and oldest (within the window) health of an InferenceService.
    pub fn model(
        &self,
        namespace: &str,
        name: &str,
    ) -> Option<(Observed<ModelHealth>, Observed<ModelHealth>)> {
        let series = self.series.read().unwrap_or_else(|p| p.into_inner());
        let history = series
            .models
            .get(&(namespace.to_owned(), name.to_owned()))?;
        Some((history.back()?.clone(), history.front()?.clone()))
    }

    /// Latest health of every InferenceService of a namespace, with the oldest in the window.
    pub fn models_in(
        &self,
        namespace: &str,
    ) -> Vec<(Observed<ModelHealth>, Observed<ModelHealth>)> {
        let series = self.series.read().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<_> = series
            .models
            .iter()
            .filter(|((ns, _), _)| ns == namespace)
            .filter_map(|(_, h)| Some((h.back()?.clone(), h.front()?.clone())))
            .collect();
        out.sort_by(|a, b| a.0.record.name.cmp(&b.0.record.name));
        out
    }

    /// Latest namespace-level cost and the latest per-pod costs.
    pub fn costs(
        &self,
        namespace: &str,
    ) -> (
        Option<Observed<CostAllocation>>,
        Vec<Observed<CostAllocation>>,
    ) {
        let series = self.series.read().unwrap_or_else(|p| p.into_inner());
        let total = series
            .costs
            .get(&(namespace.to_owned(), None))
            .and_then(|h| h.back().cloned());
        let mut pods: Vec<_> = series
            .costs
            .iter()
            .filter(|((ns, pod), _)| ns == namespace && pod.is_some())
            .filter_map(|(_, h)| h.back().cloned())
            .collect();
        pods.sort_by(|a, b| a.record.pod.cmp(&b.record.pod));
        (total, pods)
    }

    /// Latest failing policy results of a namespace (optionally one policy).
    pub fn failing_policies(
        &self,
        namespace: &str,
        policy: Option<&str>,
    ) -> Vec<Observed<PolicyStatus>> {
        let series = self.series.read().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<_> = series
            .policies
            .iter()
            .filter(|((ns, p, _), _)| ns == namespace && policy.is_none_or(|want| want == p))
            .filter_map(|(_, h)| h.back().cloned())
            .filter(|o| o.record.result == "fail" || o.record.denials > 0)
            .collect();
        out.sort_by(|a, b| a.resource.cmp(&b.resource));
        out
    }

    /// Latest state of an ArgoCD application, by name.
    pub fn application(&self, name: &str) -> Option<Observed<GitOpsStatus>> {
        let series = self.series.read().unwrap_or_else(|p| p.into_inner());
        series.gitops.get(name).and_then(|h| h.back().cloned())
    }

    /// Applications deployed to a namespace.
    pub fn applications_in(&self, namespace: &str) -> Vec<Observed<GitOpsStatus>> {
        let series = self.series.read().unwrap_or_else(|p| p.into_inner());
        series
            .gitops
            .values()
            .filter_map(|h| h.back().cloned())
            .filter(|o| o.record.namespace == namespace)
            .collect()
    }
}
