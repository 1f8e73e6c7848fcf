//! Recent telemetry per resource, from `opsmesh.telemetry.v1`: bounded in time and count per
//! resource, and in the number of resources (`diagnoser.telemetry_max_resources`): resources
//! come and go (every rollout names new pods), so the least recently updated is dropped first.

use std::{collections::VecDeque, sync::RwLock};

use chrono::{DateTime, Duration, Utc};

use opsmesh_proto::telemetry::{
    CostAllocation, GitOpsStatus, ModelHealth, PolicyStatus, Telemetry, TelemetryRecord,
};

use crate::tables::{DiagnoserMetrics, Lru, TableMetrics};

/// Resources kept by default: a large cluster's models, their pods' costs across weeks of
/// rollouts, policy results and applications. At most this × `telemetry_per_resource`
/// records are held.
pub const DEFAULT_MAX_RESOURCES: usize = 20_000;

/// A telemetry record as evidence: where it came from and when.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Observed<T> {
    pub resource: String,
    pub observed_at: DateTime<Utc>,
    pub record: T,
}

type History<T> = VecDeque<Observed<T>>;

/// One map per record kind; `updates` stamps every update across all four, so the least
/// recently updated resource of any kind is the one with the smallest stamp.
#[derive(Default)]
struct Series {
    models: Lru<(String, String), History<ModelHealth>>,
    costs: Lru<(String, Option<String>), History<CostAllocation>>,
    policies: Lru<(String, String, String), History<PolicyStatus>>,
    gitops: Lru<String, History<GitOpsStatus>>,
    updates: u64,
}

impl Series {
    fn len(&self) -> usize {
        self.models.len() + self.costs.len() + self.policies.len() + self.gitops.len()
    }

    /// Drops the least recently updated resource, of whichever kind.
    fn evict_oldest(&mut self) {
        let oldest = [
            self.models.oldest(),
            self.costs.oldest(),
            self.policies.oldest(),
            self.gitops.oldest(),
        ];
        let Some((kind, _)) = oldest
            .iter()
            .enumerate()
            .filter_map(|(kind, stamp)| Some((kind, (*stamp)?)))
            .min_by_key(|(_, stamp)| *stamp)
        else {
            return;
        };
        match kind {
            0 => drop(self.models.pop_oldest()),
            1 => drop(self.costs.pop_oldest()),
            2 => drop(self.policies.pop_oldest()),
            _ => drop(self.gitops.pop_oldest()),
        }
    }
}

pub struct TelemetryStore {
    window: Duration,
    per_resource: usize,
    max_resources: usize,
    metrics: TableMetrics,
    series: RwLock<Series>,
}

/// Appends an item to its resource's history, keeping the history within `window` of its newest record and `cap` records.
struct Append {
    window: Duration,
    cap: usize,
    stamp: u64,
}

impl Append {
    fn to<K: std::hash::Hash + Eq + Clone, T>(
        &self,
        map: &mut Lru<K, History<T>>,
        key: K,
        item: Observed<T>,
    ) {
        let history = map.update(key, self.stamp);
        history.push_back(item);
        let newest = history
            .back()
            .map(|o| o.observed_at)
            .unwrap_or_else(Utc::now);
        while history.len() > self.cap
            || history
                .front()
                .is_some_and(|o| newest - o.observed_at > self.window)
        {
            history.pop_front();
        }
    }
}

impl TelemetryStore {
    /// A store holding up to [`DEFAULT_MAX_RESOURCES`] resources; [`Self::with_capacity`]
    /// sets the bound and where its evictions are counted.
    pub fn new(window: std::time::Duration, per_resource: usize) -> Self {
        Self {
            window: Duration::from_std(window).unwrap_or(Duration::hours(1)),
            per_resource: per_resource.max(1),
            max_resources: DEFAULT_MAX_RESOURCES,
            metrics: DiagnoserMetrics::new(&prometheus::Registry::new()).table("telemetry"),
            series: RwLock::new(Series::default()),
        }
    }

    pub fn with_capacity(mut self, max_resources: usize, metrics: TableMetrics) -> Self {
        self.max_resources = max_resources.max(1);
        self.metrics = metrics;
        self
    }

    /// Resources held now.
    pub fn resource_count(&self) -> usize {
        self.series.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn record(&self, telemetry: Telemetry) {
        let mut series = self.series.write().unwrap_or_else(|p| p.into_inner());
        series.updates += 1;
        let append = Append {
            window: self.window,
            cap: self.per_resource,
            stamp: series.updates,
        };
        let Telemetry {
            resource,
            observed_at,
            record,
        } = telemetry;
        match record {
            TelemetryRecord::Models(m) => {
                let key = (m.namespace.clone(), m.name.clone());
                let known = series.models.contains(&key);
                self.make_room(&mut series, known);
                let item = Observed {
                    resource,
                    observed_at,
                    record: m,
                };
                append.to(&mut series.models, key, item);
            }
            TelemetryRecord::Costs(c) => {
                let key = (c.namespace.clone(), c.pod.clone());
                let known = series.costs.contains(&key);
                self.make_room(&mut series, known);
                let item = Observed {
                    resource,
                    observed_at,
                    record: c,
                };
                append.to(&mut series.costs, key, item);
            }
            TelemetryRecord::Policies(p) => {
                let key = (p.namespace.clone(), p.policy.clone(), p.resource.clone());
                let known = series.policies.contains(&key);
                self.make_room(&mut series, known);
                let item = Observed {
                    resource,
                    observed_at,
                    record: p,
                };
                append.to(&mut series.policies, key, item);
            }
            TelemetryRecord::Argocd(g) => {
                let key = g.application.clone();
                let known = series.gitops.contains(&key);
                self.make_room(&mut series, known);
                let item = Observed {
                    resource,
                    observed_at,
                    record: g,
                };
                append.to(&mut series.gitops, key, item);
            }
            TelemetryRecord::SourceError(_) => {}
        }
        self.metrics.entries.set(series.len() as i64);
    }

    /// Before a resource not yet held is added: drops the least recently updated ones until
    /// there is room for it.
    fn make_room(&self, series: &mut Series, known: bool) {
        while !known && series.len() >= self.max_resources {
            series.evict_oldest();
            self.metrics.evictions.inc();
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

    /// What the collector last reported about a namespace — its models (latest and oldest in
    /// the window), cost, failing policies and applications — as the investigator's facts.
    /// Per-pod costs are left out: a namespace's pods would crowd out the rest.
    pub fn namespace_facts(&self, namespace: &str) -> serde_json::Value {
        let models: Vec<_> = self
            .models_in(namespace)
            .into_iter()
            .map(|(latest, oldest)| serde_json::json!({"latest": latest, "oldest_in_window": oldest}))
            .collect();
        serde_json::json!({
            "namespace": namespace,
            "models": models,
            "cost": self.costs(namespace).0,
            "failing_policies": self.failing_policies(namespace, None),
            "applications": self.applications_in(namespace),
        })
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

#[cfg(test)]
mod tests {
    use opsmesh_proto::telemetry::{CostAllocation, ModelHealth};

    use super::*;
    use crate::tables::DiagnoserMetrics;

    fn store(max_resources: usize) -> (TelemetryStore, TableMetrics) {
        let metrics = DiagnoserMetrics::new(&prometheus::Registry::new()).table("telemetry");
        let store = TelemetryStore::new(std::time::Duration::from_secs(3600), 10)
            .with_capacity(max_resources, metrics.clone());
        (store, metrics)
    }

    fn model(name: &str, at: DateTime<Utc>) -> Telemetry {
        Telemetry {
            resource: format!("inferenceservice/ns/{name}"),
            observed_at: at,
            record: TelemetryRecord::Models(ModelHealth {
                namespace: "ns".into(),
                name: name.into(),
                ..ModelHealth::default()
            }),
        }
    }

    fn pod_cost(pod: &str, at: DateTime<Utc>) -> Telemetry {
        Telemetry {
            resource: format!("cost/ns/{pod}"),
            observed_at: at,
            record: TelemetryRecord::Costs(CostAllocation {
                namespace: "ns".into(),
                pod: Some(pod.into()),
                window: "1h".into(),
                hourly_cost_usd: 1.0,
                cpu_cost_usd: 0.0,
                gpu_cost_usd: 1.0,
                ram_cost_usd: 0.0,
                ..CostAllocation::default()
            }),
        }
    }

    #[test]
    fn a_flood_of_resources_stays_within_the_capacity_and_live_ones_survive() {
        let (store, metrics) = store(50);
        let t0 = Utc::now();
        for i in 0..10_000 {
            let at = t0 + Duration::seconds(i);
            // A model reported every interval, and a new pod name each time (rollouts).
            store.record(model("served", at));
            store.record(pod_cost(&format!("pod-{i}"), at));
            assert!(store.resource_count() <= 50);
        }
        assert_eq!(store.resource_count(), 50);
        assert_eq!(metrics.entries.get(), 50);
        // 10 001 resources seen, 50 held.
        assert_eq!(metrics.evictions.get(), 9_951);
        let (latest, _) = store
            .model("ns", "served")
            .expect("updated every time: kept");
        assert_eq!(latest.observed_at, t0 + Duration::seconds(9_999));
        let (_, pods) = store.costs("ns");
        assert_eq!(pods.len(), 49);
        assert!(pods.iter().any(|p| p.resource == "cost/ns/pod-9999"));
        assert!(!pods.iter().any(|p| p.resource == "cost/ns/pod-0"));
    }

    #[test]
    fn the_least_recently_updated_resource_of_any_kind_goes_first() {
        let (store, metrics) = store(3);
        let t0 = Utc::now();
        store.record(model("a", t0));
        store.record(pod_cost("p", t0));
        store.record(model("b", t0));
        // `a` updated again: `p` is now the least recently updated.
        store.record(model("a", t0 + Duration::seconds(1)));
        store.record(model("c", t0 + Duration::seconds(2)));
        assert!(store.costs("ns").1.is_empty(), "the pod's cost went");
        assert!(
            ["a", "b", "c"]
                .iter()
                .all(|n| store.model("ns", n).is_some())
        );
        // Updating a held resource makes no room.
        store.record(model("c", t0 + Duration::seconds(3)));
        assert_eq!(metrics.evictions.get(), 1);
    }
}
