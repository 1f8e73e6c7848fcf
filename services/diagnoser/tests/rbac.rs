//! The investigator's RBAC: deploy/k8s/diagnoser-rbac.expected.json (the role of
//! deploy/k8s/components/diagnoser-investigator) is the code's `KUBERNETES_PERMISSIONS`, and
//! against the simulator answering 403 for whatever a Role does not grant, that list is enough
//! for every Kubernetes tool call and each of its verbs is needed by one.

use std::{sync::Arc, time::Duration};

use kube::config::{KubeConfigOptions, Kubeconfig};
use opsmesh_diagnoser::{
    DiagnoserConfig,
    investigator::{InvestigatorConfig, KUBERNETES_PERMISSIONS, Subject, ToolError, Toolbox},
};
use opsmesh_runbooks::Library;
use opsmesh_runtime::ConfigTree;
use opsmesh_sim::{Rbac, RbacRule, Scenario, SimConfig, SimServer, Simulator};
use serde_json::{Value, json};

#[test]
fn the_deployed_role_matches_the_code() {
    let path =
        std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"))
            .join("../../deploy/k8s/diagnoser-rbac.expected.json");
    let deployed: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let declared: Vec<Value> = KUBERNETES_PERMISSIONS
        .iter()
        .map(|p| json!({"apiGroup": p.api_group, "resource": p.resource, "verbs": p.verbs}))
        .collect();
    assert_eq!(
        deployed,
        Value::Array(declared),
        "deploy/k8s/diagnoser-rbac.expected.json"
    );
}

const CLUSTER: &str = r#"
name: investigator-rbac
state:
  namespaces:
    - name: ml-team-a
    - name: ml-team-b
  inference_services:
    - namespace: ml-team-a
      name: gpt-oss-120b
      replicas: 1
      gpu: 1
      memory_limit: 256Mi
      image: registry.example.com/kserve/gpt-oss:1.4.2
      hourly_cost_usd: 12.5
      argocd_app: ml-team-a-models
    - {namespace: ml-team-b, name: llama-3-8b}
  argocd_apps:
    - {name: ml-team-a-models, namespace: ml-team-a}
  policies:
    - {name: disallow-root-containers, action: enforce}
faults:
  - {at: 0s, kind: oom_loop, target: inferenceservice/ml-team-a/gpt-oss-120b, params: {memory_demand: 480Mi}}
  - {at: 0s, kind: policy_denial, target: inferenceservice/ml-team-b/llama-3-8b, params: {policy: disallow-root-containers, reason: "runAsNonRoot must be true"}}
expect: {}
"#;

/// One granted verb: (API group, resource, verb).
type Grant = (&'static str, &'static str, &'static str);

fn declared_grants() -> Vec<Grant> {
    KUBERNETES_PERMISSIONS
        .iter()
        .flat_map(|p| p.verbs.iter().map(|v| (p.api_group, p.resource, *v)))
        .collect()
}

/// `grants` in `namespace` only, as a RoleBinding of the deployed ClusterRole grants them.
fn role(grants: &[Grant], namespace: &str) -> Rbac {
    Rbac {
        subject: "system:serviceaccount:opsmesh:opsmesh-diagnoser".into(),
        rules: grants
            .iter()
            .map(|(group, resource, verb)| RbacRule {
                verbs: vec![(*verb).to_owned()],
                resources: vec![if group.is_empty() {
                    (*resource).to_owned()
                } else {
                    format!("{resource}.{group}")
                }],
                namespaces: vec![namespace.to_owned()],
            })
            .collect(),
    }
}

struct Fixture {
    sim: Simulator,
    _server: SimServer,
    tools: Toolbox,
}

async fn fixture() -> Fixture {
    let scenario = Scenario::parse(CLUSTER, "cluster.yaml").unwrap();
    let sim = Simulator::from_scenario(&scenario, SimConfig::default());
    let server = SimServer::start(sim.clone(), "127.0.0.1:0".parse().unwrap()).unwrap();
    sim.advance(Duration::from_secs(300));
    let kubeconfig = Kubeconfig::from_yaml(&server.kubeconfig_yaml("default")).unwrap();
    let client = kube::Client::try_from(
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .unwrap(),
    )
    .unwrap();
    let config = InvestigatorConfig {
        namespaces: vec!["ml-team-a".into(), "ml-team-b".into()],
        ..InvestigatorConfig::default()
    };
    let tools = Toolbox::new(
        &config,
        None,
        Some(client),
        Arc::new(Library::built_in().unwrap()),
    )
    .unwrap();
    Fixture {
        sim,
        _server: server,
        tools,
    }
}

fn subject() -> Subject {
    Subject {
        incident_id: None,
        question: "why?".into(),
        namespace: Some("ml-team-a".into()),
        facts: Value::Null,
    }
}

/// The API server's refusal of a call, if it was refused.
fn refusal(result: &Result<Value, ToolError>) -> Option<&str> {
    match result {
        Err(ToolError::Kube(message)) if message.ends_with("(403)") => Some(message),
        _ => None,
    }
}

impl Fixture {
    async fn call(&self, tool: &str, arguments: Value) -> Result<Value, ToolError> {
        self.tools.call(tool, &arguments, &subject()).await
    }

    /// The kinds `kubernetes_get` serves, as its refusal of an unknown kind tells the model.
    async fn readable_kinds(&self) -> Vec<String> {
        match self
            .call(
                "kubernetes_get",
                json!({"kind": "secret", "namespace": "ml-team-a"}),
            )
            .await
        {
            Err(ToolError::Kind(_, readable)) => readable.split(", ").map(str::to_owned).collect(),
            other => panic!("a Secret is not readable: {other:?}"),
        }
    }

    /// Every Kubernetes tool call the model can make in `namespace` (each kind listed and one
    /// of it read by name, events, container states, a log), with `grants`: (call, result).
    async fn every_call(&self, grants: &[Grant], namespace: &str) -> Vec<(Value, Value)> {
        self.sim
            .with_world(|w| w.config.rbac = Some(role(&declared_grants(), namespace)));
        // Names to read, found with every permission.
        let pods = self
            .call("container_states", json!({"namespace": namespace}))
            .await
            .unwrap();
        let pod = pods["pods"][0]["pod"]
            .as_str()
            .unwrap_or_else(|| panic!("a pod: {pods}"))
            .to_owned();
        let mut calls = vec![
            ("kubernetes_events", json!({"namespace": namespace})),
            (
                "kubernetes_events",
                json!({"namespace": namespace, "object": pod}),
            ),
            ("container_states", json!({"namespace": namespace})),
            (
                "container_states",
                json!({"namespace": namespace, "pod": pod}),
            ),
            (
                "kubernetes_logs",
                json!({"namespace": namespace, "pod": pod, "tail_lines": 5}),
            ),
        ];
        for kind in self.readable_kinds().await {
            let list = self
                .call(
                    "kubernetes_get",
                    json!({"kind": kind, "namespace": namespace}),
                )
                .await
                .unwrap();
            // A kind with no object here is read by a name that is not there: a 404, not a 403.
            let name = list["items"][0]["metadata"]["name"]
                .as_str()
                .unwrap_or("absent")
                .to_owned();
            calls.push((
                "kubernetes_get",
                json!({"kind": kind, "namespace": namespace}),
            ));
            calls.push((
                "kubernetes_get",
                json!({"kind": kind, "namespace": namespace, "name": name}),
            ));
        }
        self.sim
            .with_world(|w| w.config.rbac = Some(role(grants, namespace)));
        let mut results = Vec::new();
        for (tool, arguments) in calls {
            let result = self.call(tool, arguments.clone()).await;
            let outcome = match (&result, refusal(&result)) {
                (_, Some(message)) => json!({"refused": message}),
                (Ok(_), None) => json!("ok"),
                (Err(other), None) => json!({"error": other.to_string()}),
            };
            results.push((json!({"tool": tool, "arguments": arguments}), outcome));
        }
        results
    }
}

#[tokio::test]
async fn the_declared_permissions_let_every_kubernetes_tool_read() {
    let f = fixture().await;
    let results = f.every_call(&declared_grants(), "ml-team-a").await;
    let refused: Vec<_> = results
        .iter()
        .filter(|(_, r)| r["refused"].is_string())
        .collect();
    assert!(refused.is_empty(), "{refused:#?}");
    // Only a read by name of a kind with no object here may fail (404).
    let failed: Vec<_> = results
        .iter()
        .filter(|(call, r)| {
            *r != "ok"
                && !(call["arguments"]["name"] == "absent"
                    && r["error"].as_str().is_some_and(|e| e.ends_with("(404)")))
        })
        .collect();
    assert!(failed.is_empty(), "{failed:#?}");
    let logs = results
        .iter()
        .find(|(call, _)| call["tool"] == "kubernetes_logs")
        .unwrap();
    assert_eq!(logs.1, "ok", "the log is read");
}

#[tokio::test]
async fn each_declared_verb_is_needed_by_a_tool_call() {
    let f = fixture().await;
    let declared = declared_grants();
    for left_out in &declared {
        let grants: Vec<Grant> = declared
            .iter()
            .filter(|g| *g != left_out)
            .copied()
            .collect();
        let results = f.every_call(&grants, "ml-team-a").await;
        let (_, resource, verb) = left_out;
        let refused = results.iter().find(|(_, r)| {
            r["refused"]
                .as_str()
                .is_some_and(|m| m.contains(&format!("cannot {verb} resource \"{resource}\"")))
        });
        assert!(
            refused.is_some(),
            "without {left_out:?} no call is refused: the permission is not needed\n{results:#?}"
        );
    }
}

#[tokio::test]
async fn outside_the_bound_namespaces_the_reads_are_refused() {
    // Why the RoleBindings must equal `diagnoser.investigator.namespaces`: a namespace the
    // investigator is allowed but not bound in answers 403.
    let f = fixture().await;
    f.sim
        .with_world(|w| w.config.rbac = Some(role(&declared_grants(), "ml-team-a")));
    let elsewhere = f
        .call(
            "kubernetes_get",
            json!({"kind": "inferenceservice", "namespace": "ml-team-b"}),
        )
        .await;
    let message = refusal(&elsewhere).unwrap_or_else(|| panic!("{elsewhere:?}"));
    assert!(
        message.contains("opsmesh-diagnoser") && message.contains("\"ml-team-b\""),
        "{message}"
    );
}

#[test]
fn the_namespaces_are_set_from_the_environment_as_the_deployment_does() {
    // deploy/k8s/components/diagnoser-investigator and its overlay configure the investigator
    // through the diagnoser's ConfigMap: a comma-separated list, as the RoleBindings' namespaces.
    let env: Vec<(String, String)> = [
        ("OPSMESH__DIAGNOSER__INVESTIGATOR__ENABLED", "true"),
        (
            "OPSMESH__DIAGNOSER__INVESTIGATOR__NAMESPACES",
            "ml-team-a, ml-team-b",
        ),
        (
            "OPSMESH__DIAGNOSER__LLM__API_KEY_FILE",
            "/var/run/secrets/opsmesh/llm/api-key",
        ),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    let config: DiagnoserConfig = ConfigTree::load_layered(None, None, env)
        .unwrap()
        .section("diagnoser")
        .unwrap();
    assert!(config.investigator.enabled);
    assert_eq!(config.investigator.namespaces, ["ml-team-a", "ml-team-b"]);
}
