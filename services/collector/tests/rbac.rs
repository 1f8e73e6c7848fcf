//! The collector's RBAC: the deployed roles grant exactly what its code reads, and bound to
//! namespaces by Roles only (deploy/k8s/components/collector-namespaced) it still reports on
//! those namespaces, against the simulator answering 403 for whatever the Roles do not grant.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use opsmesh_collector::{Collector, CollectorConfig, KUBERNETES_PERMISSIONS, Permission};
use opsmesh_proto::telemetry::TelemetryRecord;
use opsmesh_runtime::{ConfigTree, Context, bus::MemoryBus};
use opsmesh_sim::{Rbac, RbacRule, Scenario, SimConfig, SimServer, Simulator};
use serde_json::{Value, json};

#[test]
fn the_deployed_roles_match_the_code() {
    let path =
        std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"))
            .join("../../deploy/k8s/collector-rbac.expected.json");
    let deployed: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let declared: Vec<Value> = KUBERNETES_PERMISSIONS
        .iter()
        .map(|p| {
            json!({
                "apiGroup": p.api_group,
                "resource": p.resource,
                "verbs": p.verbs,
                "scope": if p.cluster_scoped { "cluster" } else { "namespaced" },
            })
        })
        .collect();
    assert_eq!(
        deployed,
        Value::Array(declared),
        "deploy/k8s/collector-rbac.expected.json"
    );
}

const CLUSTER: &str = r#"
name: namespaced-collector
state:
  namespaces:
    - name: ml-team-a
      hourly_budget_usd: 40
    - name: ml-team-b
  inference_services:
    - {namespace: ml-team-a, name: gpt-oss-120b, hourly_cost_usd: 12.5}
    - {namespace: ml-team-b, name: llama-3-8b, argocd_app: ml-team-b-models, hourly_cost_usd: 4.0}
    - {namespace: ml-team-b, name: whisper, argocd_app: ml-team-b-models, hourly_cost_usd: 1.0}
  argocd_apps:
    - {name: ml-team-b-models, namespace: ml-team-b}
  policies:
    - {name: disallow-root-containers, action: enforce}
faults:
  - {at: 0s, kind: policy_denial, target: inferenceservice/ml-team-b/llama-3-8b, params: {policy: disallow-root-containers, reason: "runAsNonRoot must be true"}}
expect: {}
"#;

/// What the deployed roles grant, as the simulator's allow-list: the ClusterRole (every
/// permission, every namespace), or a Role per namespace (the namespaced permissions only).
fn granted(namespaces: Option<&[&str]>) -> Rbac {
    let rule = |p: &Permission| RbacRule {
        verbs: p.verbs.iter().map(|v| (*v).to_owned()).collect(),
        resources: vec![if p.api_group.is_empty() {
            p.resource.to_owned()
        } else {
            format!("{}.{}", p.resource, p.api_group)
        }],
        namespaces: namespaces
            .unwrap_or_default()
            .iter()
            .map(|n| (*n).to_owned())
            .collect(),
    };
    Rbac {
        subject: "system:serviceaccount:opsmesh:opsmesh-collector".into(),
        rules: KUBERNETES_PERMISSIONS
            .iter()
            .filter(|p| namespaces.is_none() || !p.cluster_scoped)
            .map(rule)
            .collect(),
    }
}

struct Fixture {
    server: SimServer,
    dir: tempfile::TempDir,
}

fn fixture(rbac: Rbac) -> Fixture {
    let scenario = Scenario::parse(CLUSTER, "cluster.yaml").unwrap();
    let sim = Simulator::from_scenario(
        &scenario,
        SimConfig {
            rbac: Some(rbac),
            ..SimConfig::default()
        },
    );
    let server = SimServer::start(sim.clone(), "127.0.0.1:0".parse().unwrap()).unwrap();
    sim.advance(Duration::from_secs(300));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("kubeconfig"),
        server.kubeconfig_yaml("default"),
    )
    .unwrap();
    Fixture { server, dir }
}

/// A collector reading the fixture, with `collector` settings from the environment, as a
/// Deployment sets them.
async fn collector(f: &Fixture, env: &[(&str, &str)]) -> Collector {
    let toml = format!(
        "[bus]\nkind = \"memory\"\n[collector]\nsource_timeout = \"2s\"\nkubeconfig = \"{kc}\"\n\
         [collector.opencost]\nurl = \"{oc}\"\n[collector.argocd]\nurl = \"{argo}\"\ntoken = \"{token}\"\n",
        kc = f.dir.path().join("kubeconfig").display(),
        oc = f.server.opencost_url(),
        argo = f.server.argocd_url(),
        token = f.server.argocd_token(),
    );
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let tree = ConfigTree::load_layered(Some(&toml), None, env).unwrap();
    let settings = tree.settings().unwrap();
    let bus = MemoryBus::new(&settings.bus.memory);
    let ctx = Context::new(settings, Arc::new(bus));
    let config: CollectorConfig = tree.section("collector").unwrap();
    Collector::new(config, &ctx).await.unwrap()
}

#[tokio::test]
async fn bound_to_namespaces_by_roles_only_it_reports_on_them() {
    let f = fixture(granted(Some(&["ml-team-b"])));
    let collector = collector(
        &f,
        &[
            ("OPSMESH__COLLECTOR__SCOPE", "namespaces"),
            ("OPSMESH__COLLECTOR__NAMESPACES", "ml-team-b"),
            ("OPSMESH__COLLECTOR__DEFAULT_HOURLY_BUDGET_USD", "3.5"),
        ],
    )
    .await;
    let pass = collector.collect_once().await;
    assert!(pass.errors.is_empty(), "{:?}", pass.errors);
    let records: BTreeMap<_, _> = pass.records.into_iter().collect();
    let keys: Vec<&String> = records.keys().collect();
    assert!(
        records.contains_key("inferenceservice/ml-team-b/llama-3-8b"),
        "{keys:?}"
    );
    let TelemetryRecord::Policies(policy) =
        &records["policyreport/ml-team-b/disallow-root-containers"]
    else {
        panic!("{keys:?}")
    };
    assert_eq!(policy.result, "fail");
    let TelemetryRecord::Costs(cost) = &records["cost/ml-team-b"] else {
        panic!("{keys:?}")
    };
    assert_eq!(cost.hourly_budget_usd, Some(3.5), "from the configuration");
    assert!(records.contains_key("application/ml-team-b/ml-team-b-models"));
    assert!(
        !keys.iter().any(|k| k.contains("ml-team-a")),
        "only the bound namespace: {keys:?}"
    );
}

#[tokio::test]
async fn bound_to_namespaces_without_saying_so_the_cluster_reads_fail() {
    // The behaviour `collector.scope = "namespaces"` exists for: with only Roles, the
    // cluster-scoped reads are refused and the policies and costs sources fail every interval.
    let f = fixture(granted(Some(&["ml-team-b"])));
    let collector = collector(&f, &[("OPSMESH__COLLECTOR__NAMESPACES", "ml-team-b")]).await;
    let pass = collector.collect_once().await;
    let failed: Vec<&str> = pass.errors.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(failed, ["policies", "costs"], "{:?}", pass.errors);
    assert!(
        pass.errors.iter().all(|(_, e)| e.contains("403")),
        "{:?}",
        pass.errors
    );
}

#[tokio::test]
async fn with_the_cluster_role_every_read_is_granted() {
    let f = fixture(granted(None));
    let collector = collector(&f, &[]).await;
    let pass = collector.collect_once().await;
    assert!(pass.errors.is_empty(), "{:?}", pass.errors);
    let records: BTreeMap<_, _> = pass.records.into_iter().collect();
    let TelemetryRecord::Policies(policy) =
        &records["policyreport/ml-team-b/disallow-root-containers"]
    else {
        panic!()
    };
    assert_eq!(
        policy.action.as_deref(),
        Some("enforce"),
        "read from the Kyverno ClusterPolicy"
    );
    let TelemetryRecord::Costs(cost) = &records["cost/ml-team-a"] else {
        panic!()
    };
    assert_eq!(
        cost.hourly_budget_usd,
        Some(40.0),
        "from the namespace annotation"
    );
}

#[test]
fn a_namespaced_scope_needs_valid_namespaces() {
    let err = |env: &[(&str, &str)]| {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        ConfigTree::load_layered(None, None, env)
            .unwrap()
            .section::<CollectorConfig>("collector")
            .unwrap_err()
            .to_string()
    };
    assert!(err(&[("OPSMESH__COLLECTOR__SCOPE", "namespaces")]).contains("`collector.namespaces`"));
    let bad = err(&[(
        "OPSMESH__COLLECTOR__NAMESPACES",
        "ml-team-a, Not_A_Namespace",
    )]);
    assert!(
        bad.contains("`collector.namespaces`") && bad.contains("Not_A_Namespace"),
        "{bad}"
    );
    assert!(err(&[("OPSMESH__COLLECTOR__SCOPE", "everywhere")]).contains("`collector.scope`"));
}
