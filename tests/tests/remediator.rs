//! The remediator as OS processes on the real broker (tansu), acting through kube-rs on the
//! cluster simulator over HTTP: exactly once across a SIGKILL with two replicas, approvals,
//! rollback after a failed verification, and never a call outside its declared RBAC.
//!
//! Diagnoses are published straight to `opsmesh.diagnoses.v1` (the remediator's input
//! contract), citing the built-in runbooks as the diagnoser does.

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    time::Duration,
};

use serde_json::{Value, json};

use opsmesh_proto::{
    Envelope, IncidentState,
    approval::{Approval, ApprovalDecision},
    remediation::Remediation,
    topics,
};
use opsmesh_remediator::KUBERNETES_PERMISSIONS;
use opsmesh_runbooks::Library;
use opsmesh_runtime::{
    Bus,
    bus::{Outgoing, Subscription},
};
use opsmesh_sim::{
    Clock, Rbac, RbacRule, RequestRecord, Scenario, SimConfig, SimServer, Simulator,
    resources::INFERENCE_SERVICES,
};
use opsmesh_tests::{broker::Broker, eventually, mesh::SESSION_TIMEOUT, process::Service};

const LIMIT: Duration = Duration::from_secs(120);
/// Virtual seconds per wall second: a pod starts in 0.5 s, an OOM loop turns every second.
const SIM_SPEED: f64 = 20.0;

/// Replica settings of most tests: fast verification, limits out of the way.
const FAST_REPLICA: &[(&str, &str)] = &[
    ("OPSMESH__REMEDIATOR__VERIFICATION__ATTEMPTS", "20"),
    ("OPSMESH__REMEDIATOR__VERIFICATION__INTERVAL", "500ms"),
    ("OPSMESH__REMEDIATOR__POLICY__RATE_LIMIT__GLOBAL", "1000"),
    (
        "OPSMESH__REMEDIATOR__POLICY__RATE_LIMIT__PER_NAMESPACE",
        "1000",
    ),
    (
        "OPSMESH__REMEDIATOR__POLICY__MAX_CONCURRENT_ACTIONS",
        "1000",
    ),
];

/// A simulated cluster, the broker, and the remediator replicas acting on them.
struct Rig {
    broker: Broker,
    sim: Simulator,
    server: Option<SimServer>,
    dir: tempfile::TempDir,
    replicas: Vec<Service>,
}

impl Rig {
    /// A cluster holding `state` (scenario YAML `state:` and `faults:`), answering 403 to
    /// anything the remediator's declared permissions do not grant.
    async fn start(cluster_yaml: &str) -> Self {
        let scenario =
            Scenario::parse(&format!("name: rig\n{cluster_yaml}\nexpect: {{}}\n"), "rig")
                .expect("rig scenario");
        let config = SimConfig {
            rbac: Some(remediator_rbac()),
            ..SimConfig::default()
        };
        let sim = Simulator::new(config, Clock::scaled(chrono::Utc::now(), SIM_SPEED));
        sim.seed(&scenario.state);
        for (at, fault, target) in scenario.resolved_faults() {
            sim.inject(at, fault, target);
        }
        let server = SimServer::start(sim.clone(), SocketAddr::from(([127, 0, 0, 1], 0)))
            .expect("simulator listens");
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(
            dir.path().join("kubeconfig"),
            server.kubeconfig_yaml("default"),
        )
        .expect("kubeconfig");
        Self {
            broker: Broker::memory(),
            sim,
            server: Some(server),
            dir,
            replicas: Vec::new(),
        }
    }

    /// Starts one more remediator replica (all in the `opsmesh-remediator` group), with fast
    /// verification and limits out of the way.
    async fn add_replica(&mut self, extra: &[(&str, &str)]) -> usize {
        let mut env = FAST_REPLICA.to_vec();
        env.extend_from_slice(extra);
        self.add_replica_with(&env).await
    }

    /// Starts one more replica with the default policy and verification, plus `extra`.
    async fn add_replica_with(&mut self, extra: &[(&str, &str)]) -> usize {
        let kubeconfig = self.dir.path().join("kubeconfig");
        let mut env: Vec<(&str, String)> = vec![
            ("OPSMESH__CLUSTER", "test-cluster".into()),
            ("OPSMESH__BUS__KIND", "kafka".into()),
            ("OPSMESH__BUS__KAFKA__BROKERS", self.broker.address()),
            ("OPSMESH__BUS__KAFKA__PARTITIONS", "6".into()),
            (
                "OPSMESH__BUS__KAFKA__SESSION_TIMEOUT",
                format!("{}s", SESSION_TIMEOUT.as_secs()),
            ),
            ("OPSMESH__SHUTDOWN__GRACE", "5s".into()),
            (
                "OPSMESH__REMEDIATOR__KUBECONFIG",
                kubeconfig.display().to_string(),
            ),
        ];
        env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
        let name = format!("remediator-{}", self.replicas.len());
        let mut replica = Service::new(
            &name,
            opsmesh_tests::binary("opsmesh-remediator"),
            &[],
            &env,
            self.dir.path(),
        );
        replica.start();
        replica.wait_ready().await;
        self.replicas.push(replica);
        self.replicas.len() - 1
    }

    async fn publish(&self, topic: &str, key: &str, payload: Vec<u8>) {
        self.broker
            .bus()
            .publish(Outgoing {
                topic: topic.to_owned().into(),
                key: key.into(),
                payload,
                headers: Vec::new(),
            })
            .await
            .expect("published");
    }

    /// Cluster changes the simulator carried out (dry runs and refusals left out).
    fn mutations(&self) -> Vec<RequestRecord> {
        self.sim
            .requests()
            .into_iter()
            .filter(|r| !r.dry_run && (200..300).contains(&r.status))
            .collect()
    }

    /// Lines containing `needle` in every replica's log (all runs of each).
    fn log_count(&self, needle: &str) -> usize {
        self.replicas
            .iter()
            .map(|r| r.log_text().matches(needle).count())
            .sum()
    }

    fn memory_limit(&self, namespace: &str, name: &str) -> String {
        let isvc = self
            .sim
            .with_world(|w| w.get(&INFERENCE_SERVICES, namespace, name).ok());
        isvc.expect("the InferenceService exists")["spec"]["predictor"]["containers"][0]
            ["resources"]["limits"]["memory"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.replicas.clear();
        if std::thread::panicking() {
            eprintln!(
                "----- simulator request log -----\n{}",
                serde_json::to_string_pretty(&self.sim.requests()).unwrap_or_default()
            );
        }
        drop(self.server.take());
    }
}

/// The simulator's allow-list built from what the remediator's code declares it calls.
fn remediator_rbac() -> Rbac {
    Rbac {
        subject: "system:serviceaccount:opsmesh:opsmesh-remediator".into(),
        rules: KUBERNETES_PERMISSIONS
            .iter()
            .map(|p| RbacRule {
                verbs: p.verbs.iter().map(|v| v.to_string()).collect(),
                resources: vec![if p.api_group.is_empty() {
                    p.resource.to_owned()
                } else {
                    format!("{}.{}", p.resource, p.api_group)
                }],
                namespaces: Vec::new(),
            })
            .collect(),
    }
}

/// A diagnosis of `incident` following `section` of runbook `runbook`, recommending `actions`
/// (`[{kind, target, params}]`), as the diagnoser publishes it.
fn diagnosis(
    incident: &str,
    root_cause: &str,
    runbook: &str,
    section: &str,
    actions: Value,
) -> Vec<u8> {
    let library = Library::built_in().expect("built-in runbooks");
    let book = library
        .runbooks()
        .iter()
        .find(|r| r.front.id == runbook)
        .unwrap_or_else(|| panic!("runbook {runbook}"));
    let section = book
        .sections
        .iter()
        .find(|s| s.heading == section)
        .unwrap_or_else(|| panic!("section {section:?} of {runbook}"));
    let example = include_str!("../../proto/examples/opsmesh.diagnoses.v1.json");
    let mut envelope: Value = serde_json::from_str(example).expect("example diagnosis");
    let actions: Vec<Value> = actions
        .as_array()
        .expect("actions")
        .iter()
        .map(|a| {
            let mut a = a.clone();
            a["evidence_ids"] = json!(["ev1", "ev2"]);
            a["rationale"] = json!("test incident");
            a
        })
        .collect();
    envelope["id"] = json!(uuid::Uuid::now_v7());
    envelope["incident_id"] = json!(incident);
    envelope["cluster"] = json!("test-cluster");
    let payload = &mut envelope["payload"];
    payload["fingerprint"] = json!(incident);
    payload["root_cause"] = json!(root_cause);
    payload["target"] = actions[0]["target"].clone();
    payload["runbook"] = serde_json::to_value(book.reference(section)).expect("runbook ref");
    payload["recommended_actions"] = json!(actions);
    let bytes = serde_json::to_vec(&envelope).expect("JSON");
    Envelope::<opsmesh_proto::diagnosis::Diagnosis>::from_slice(&bytes)
        .expect("the test diagnosis is a valid opsmesh.diagnoses.v1 envelope");
    bytes
}

fn oom_diagnosis(incident: &str, model: &str, new_limit: &str) -> Vec<u8> {
    oom_diagnosis_in(incident, "ml-team-a", model, new_limit)
}

fn oom_diagnosis_in(incident: &str, namespace: &str, model: &str, new_limit: &str) -> Vec<u8> {
    diagnosis(
        incident,
        "oom_killed",
        "oom-killed",
        "Raise the memory limit",
        json!([{"kind": "patch_memory_limit", "target": format!("inferenceservice/{namespace}/{model}"),
                "params": {"memory_limit": new_limit, "previous_memory_limit": "256Mi"}}]),
    )
}

/// Every ledger record on `opsmesh.remediations.v1`, read with a group of its own.
struct LedgerReader {
    subscription: Box<dyn Subscription>,
    records: Vec<Envelope<Remediation>>,
}

impl LedgerReader {
    async fn new(broker: &Broker) -> Self {
        let group = format!("test-ledger-{}", uuid::Uuid::now_v7());
        let subscription = broker
            .bus()
            .subscribe(&group, &[topics::REMEDIATIONS])
            .await
            .expect("subscribe");
        Self {
            subscription,
            records: Vec::new(),
        }
    }

    /// Reads what has arrived (waiting at most `wait` for the first record).
    async fn poll(&mut self, wait: Duration) {
        let mut wait = wait;
        while let Ok(Ok(message)) = tokio::time::timeout(wait, self.subscription.recv()).await {
            self.records.push(
                Envelope::<Remediation>::from_slice(&message.payload).expect("ledger record"),
            );
            wait = Duration::from_millis(50);
        }
    }

    /// An incident's records in ledger order, each once.
    fn incident(&self, incident: &str) -> Vec<&Remediation> {
        let mut by_seq: BTreeMap<u64, &Remediation> = BTreeMap::new();
        for e in &self.records {
            if e.incident_id.as_deref() == Some(incident) {
                by_seq.insert(e.payload.ledger.seq, &e.payload);
            }
        }
        by_seq.into_values().collect()
    }

    fn states(&self, incident: &str) -> Vec<IncidentState> {
        self.incident(incident).iter().map(|r| r.state).collect()
    }

    fn last_state(&self, incident: &str) -> Option<IncidentState> {
        self.incident(incident).last().map(|r| r.state)
    }

    /// Waits until the last record of `incident` is in `state`.
    async fn until_state(&mut self, incident: &str, state: IncidentState) -> Remediation {
        let deadline = tokio::time::Instant::now() + LIMIT;
        loop {
            self.poll(Duration::from_millis(500)).await;
            if let Some(last) = self.incident(incident).last()
                && last.state == state
            {
                return (*last).clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{incident} not {state} within {LIMIT:?}: {:?}",
                self.states(incident)
            );
        }
    }

    /// Waits until every incident has a terminal record.
    async fn until_terminal(&mut self, incidents: &[String]) {
        let deadline = tokio::time::Instant::now() + LIMIT;
        loop {
            self.poll(Duration::from_millis(500)).await;
            let open: Vec<&String> = incidents
                .iter()
                .filter(|i| !self.last_state(i).is_some_and(IncidentState::is_terminal))
                .collect();
            if open.is_empty() {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no terminal ledger record within {LIMIT:?} for {open:?}; records: {:#?}",
                open.iter().map(|i| (i, self.states(i))).collect::<Vec<_>>()
            );
        }
    }
}

/// A model that needs 480Mi while its limit is 256Mi: its pods keep being OOMKilled.
const OOM_FAULT: &str = "kind: oom_loop, params: {memory_demand: 480Mi}";

/// One OOM-looping model, one replica started with `replica_env`, and a reader of the ledger.
async fn one_oom_model(model: &str, replica_env: &[(&str, &str)]) -> (Rig, LedgerReader) {
    let mut rig = Rig::start(&models_yaml(&[model], &[(model, OOM_FAULT)])).await;
    rig.add_replica(replica_env).await;
    let ledger = LedgerReader::new(&rig.broker).await;
    (rig, ledger)
}

fn models_yaml(models: &[&str], faults: &[(&str, &str)]) -> String {
    let mut text =
        String::from("state:\n  namespaces:\n    - name: ml-team-a\n  inference_services:\n");
    for model in models {
        text.push_str(&format!(
            "    - {{namespace: ml-team-a, name: {model}, replicas: 2, memory_limit: 256Mi, image: registry.example.com/kserve/{model}:1.0.0, previous_image: registry.example.com/kserve/{model}:0.9.0}}\n"
        ));
    }
    text.push_str("faults:\n");
    for (model, fault) in faults {
        text.push_str(&format!(
            "  - {{at: 0s, target: inferenceservice/ml-team-a/{model}, {fault}}}\n"
        ));
    }
    if faults.is_empty() {
        text.push_str("  []\n");
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_and_a_sigkill_mutate_each_target_exactly_once() {
    const INCIDENTS: usize = 12;
    let models: Vec<String> = (0..INCIDENTS).map(|i| format!("model-{i}")).collect();
    let names: Vec<&str> = models.iter().map(String::as_str).collect();
    let faults: Vec<(&str, &str)> = names.iter().map(|m| (*m, OOM_FAULT)).collect();
    let mut rig = Rig::start(&models_yaml(&names, &faults)).await;
    // Offsets are committed only every minute, so everything the killed replica handled is
    // delivered again to whichever replica takes its partitions over.
    let slow_commits = [("OPSMESH__BUS__KAFKA__COMMIT_INTERVAL", "60s")];
    let a = rig.add_replica(&slow_commits).await;
    rig.add_replica(&slow_commits).await;
    let mut ledger = LedgerReader::new(&rig.broker).await;

    let incidents: Vec<String> = (0..INCIDENTS)
        .map(|i| format!("exactly-once-{i}"))
        .collect();
    // A stream: one diagnosis every 200 ms while the replicas work.
    let publisher = {
        let bus = rig.broker.bus();
        let work: Vec<(String, Vec<u8>)> = incidents
            .iter()
            .zip(&models)
            .map(|(i, m)| (i.clone(), oom_diagnosis(i, m, "640Mi")))
            .collect();
        tokio::spawn(async move {
            for (incident, payload) in work {
                bus.publish(Outgoing {
                    topic: topics::DIAGNOSES.into(),
                    key: incident,
                    payload,
                    headers: Vec::new(),
                })
                .await
                .expect("diagnosis published");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };

    // Kill one replica while the stream is being worked on, then bring it back.
    eventually("a few memory patches applied", LIMIT, || async {
        (rig.mutations().len() >= 3).then_some(())
    })
    .await;
    rig.replicas[a].kill();
    let applied_at_kill = rig.mutations().len();
    // Restarted at once, while the broker still lists the dead member.
    rig.replicas[a].start();
    rig.replicas[a].wait_ready().await;
    publisher.await.expect("publisher");

    ledger.until_terminal(&incidents).await;
    let redelivered = eventually(
        "the killed replica's diagnoses delivered again",
        LIMIT,
        || async {
            // A diagnosis the killed replica had finished is skipped as decided; one it was
            // still working on (its offset held back until the incident came to rest) is
            // resumed from the ledger, its patch found already applied when the intent was
            // recorded. Which happens depends on when the rebalance moved its partitions.
            let count = rig.log_count("diagnosis delivered again")
                + rig.log_count("already in the wanted state; not applied again");
            (count > 0).then_some(count)
        },
    )
    .await;
    assert!(
        applied_at_kill < INCIDENTS,
        "the kill came after the whole stream ({applied_at_kill} patches): not mid-stream"
    );
    let mut patches: HashMap<String, usize> = HashMap::new();
    for m in rig.mutations() {
        assert_eq!(
            (m.verb.as_str(), m.resource.as_str()),
            ("patch", "inferenceservices.serving.kserve.io"),
            "{m:?}"
        );
        assert_eq!(m.field_manager.as_deref(), Some("opsmesh"));
        *patches.entry(m.name.clone()).or_default() += 1;
    }
    for model in &models {
        assert_eq!(
            patches.get(model),
            Some(&1),
            "{model} patched exactly once: {patches:?}"
        );
        assert_eq!(rig.memory_limit("ml-team-a", model), "640Mi");
    }
    for incident in &incidents {
        assert_eq!(
            ledger.last_state(incident),
            Some(IncidentState::Resolved),
            "{incident}: {:?}",
            ledger.states(incident)
        );
    }
    let report = opsmesh_remediator::ledger::verify(&ledger.records);
    assert!(report.ok(), "the hash chains hold: {:?}", report.breaks);
    eprintln!(
        "{applied_at_kill} of {INCIDENTS} patches before the kill; {redelivered} diagnoses delivered again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_approved_action_runs_once_and_nothing_changes_before() {
    let (rig, mut ledger) =
        one_oom_model("gated", &[("OPSMESH__REMEDIATOR__POLICY__MODE", "approve")]).await;
    let incident = "approval-gate".to_owned();
    rig.publish(
        topics::DIAGNOSES,
        &incident,
        oom_diagnosis(&incident, "gated", "640Mi"),
    )
    .await;

    // The proposal, with its projected effect; the cluster only saw a dry run.
    let proposal = ledger
        .until_state(&incident, IncidentState::AwaitingApproval)
        .await;
    let action = proposal.action.clone().expect("the proposed action");
    assert!(
        proposal
            .projected_effect
            .as_deref()
            .is_some_and(|e| e.contains("640Mi")),
        "{proposal:?}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(rig.mutations().is_empty(), "{:?}", rig.mutations());
    assert!(
        rig.sim.requests().iter().any(|r| r.dry_run),
        "the proposal was checked by a server-side dry run"
    );
    assert_eq!(rig.memory_limit("ml-team-a", "gated"), "256Mi");

    // An approval without an approver identity is ignored.
    let approval = |approver: &str| {
        let envelope = Envelope::new(
            "opsmesh-reporter",
            "test-cluster",
            Some(incident.clone()),
            Approval {
                idempotency_key: action.idempotency_key.clone(),
                decision: ApprovalDecision::Approve,
                approver: approver.into(),
                comment: Some("agreed with the model owner".into()),
            },
        );
        envelope.to_vec()
    };
    rig.publish(topics::APPROVALS, &incident, approval("  "))
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(rig.mutations().is_empty(), "{:?}", rig.mutations());

    // Approved twice (two operators clicking): one patch.
    rig.publish(topics::APPROVALS, &incident, approval("alice@example.com"))
        .await;
    rig.publish(topics::APPROVALS, &incident, approval("bob@example.com"))
        .await;
    ledger.until_terminal(std::slice::from_ref(&incident)).await;
    ledger.poll(Duration::from_secs(2)).await;
    assert_eq!(
        ledger.last_state(&incident),
        Some(IncidentState::Resolved),
        "{:?}",
        ledger.states(&incident)
    );
    let executed = ledger
        .incident(&incident)
        .into_iter()
        .find(|r| r.state == IncidentState::Executing)
        .expect("an executing record")
        .clone();
    assert_eq!(
        executed.action.and_then(|a| a.approved_by).as_deref(),
        Some("alice@example.com")
    );
    let mutations = rig.mutations();
    assert_eq!(mutations.len(), 1, "{mutations:?}");
    assert_eq!(mutations[0].name, "gated");
    assert_eq!(rig.memory_limit("ml-team-a", "gated"), "640Mi");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_verification_rolls_back_and_escalates() {
    let (rig, mut ledger) = one_oom_model(
        "too-small",
        &[("OPSMESH__REMEDIATOR__VERIFICATION__ATTEMPTS", "6")],
    )
    .await;
    let incident = "rollback".to_owned();
    // 320Mi is below the 480Mi the model needs: the pods keep being OOMKilled.
    rig.publish(
        topics::DIAGNOSES,
        &incident,
        oom_diagnosis(&incident, "too-small", "320Mi"),
    )
    .await;
    ledger.until_terminal(std::slice::from_ref(&incident)).await;

    let states = ledger.states(&incident);
    use IncidentState::*;
    assert_eq!(
        states,
        [
            Received, Planned, Executing, Verifying, RolledBack, Escalated
        ],
        "{states:?}"
    );
    let records = ledger.incident(&incident);
    let failed = records
        .iter()
        .find_map(|r| r.verification.clone())
        .expect("the verification verdict is recorded");
    assert!(!failed.healthy);
    assert_eq!(failed.attempts, 6);
    assert!(failed.detail.contains("OOMKilled"), "{failed:?}");
    // The limit went to 320Mi and back to what it was.
    let limits: Vec<Value> = rig.mutations().iter().map(|m| m.body.clone()).collect();
    assert_eq!(limits.len(), 2, "{limits:?}");
    assert!(limits[0].to_string().contains("320Mi"), "{limits:?}");
    assert!(limits[1].to_string().contains("256Mi"), "{limits:?}");
    assert_eq!(rig.memory_limit("ml-team-a", "too-small"), "256Mi");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_kubernetes_action_stays_within_the_declared_rbac() {
    let state = "state:
  namespaces:
    - {name: ml-team-a}
    - {name: ml-team-b, hourly_budget_usd: 40}
  inference_services:
    - {namespace: ml-team-a, name: oom, replicas: 2, memory_limit: 256Mi}
    - {namespace: ml-team-a, name: undersized, replicas: 2, memory_limit: 256Mi}
    - {namespace: ml-team-a, name: crashing, replicas: 2, memory_limit: 1Gi}
    - {namespace: ml-team-a, name: bad-image, replicas: 2, image: registry.example.com/kserve/reranker:2.1.0, previous_image: registry.example.com/kserve/reranker:2.0.3}
    - {namespace: ml-team-b, name: gpu-model, replicas: 2, gpu: 1, memory_limit: 1Gi, hourly_cost_usd: 12.5}
faults:
  - {at: 0s, kind: oom_loop, target: inferenceservice/ml-team-a/oom, params: {memory_demand: 480Mi}}
  - {at: 0s, kind: oom_loop, target: inferenceservice/ml-team-a/undersized, params: {memory_demand: 480Mi}}
  - {at: 0s, kind: crash_loop, target: inferenceservice/ml-team-a/crashing, params: {exit_code: 1}}
  - {at: 0s, kind: image_pull_error, target: inferenceservice/ml-team-a/bad-image}
  - {at: 0s, kind: cost_spike, target: inferenceservice/ml-team-b/gpu-model, params: {replicas: 8}}
";
    let mut rig = Rig::start(state).await;
    rig.add_replica(&[("OPSMESH__REMEDIATOR__VERIFICATION__ATTEMPTS", "10")])
        .await;
    let mut ledger = LedgerReader::new(&rig.broker).await;
    let isvc = |ns: &str, name: &str| format!("inferenceservice/{ns}/{name}");
    let cases: Vec<(&str, Vec<u8>, IncidentState)> = vec![
        (
            "rbac-memory",
            oom_diagnosis("rbac-memory", "oom", "640Mi"),
            IncidentState::Resolved,
        ),
        (
            "rbac-rollback",
            oom_diagnosis("rbac-rollback", "undersized", "320Mi"),
            IncidentState::Escalated,
        ),
        (
            "rbac-restart",
            diagnosis(
                "rbac-restart",
                "crash_loop",
                "crash-loop",
                "Restart the InferenceService once",
                json!([{"kind": "restart_inference_service", "target": isvc("ml-team-a", "crashing")}]),
            ),
            IncidentState::Resolved,
        ),
        (
            "rbac-image",
            diagnosis(
                "rbac-image",
                "image_pull_error",
                "image-pull-error",
                "Roll back to the last known good image",
                json!([{"kind": "rollback_image", "target": isvc("ml-team-a", "bad-image"),
                        "params": {"image": "registry.example.com/kserve/reranker:2.0.3",
                                   "failing_image": "registry.example.com/kserve/reranker:2.1.0"}}]),
            ),
            IncidentState::Resolved,
        ),
        (
            "rbac-cost",
            diagnosis(
                "rbac-cost",
                "cost_overrun",
                "cost-overrun",
                "Scale down and cap the namespace",
                json!([
                    {"kind": "scale_inference_service", "target": isvc("ml-team-b", "gpu-model"),
                     "params": {"replicas": 2, "previous_replicas": 8}},
                    {"kind": "apply_resource_quota", "target": "namespace/ml-team-b",
                     "params": {"pods": 3, "projected_saving_usd": 100.0}}
                ]),
            ),
            IncidentState::Resolved,
        ),
    ];
    let incidents: Vec<String> = cases.iter().map(|(i, _, _)| i.to_string()).collect();
    for (incident, payload, _) in &cases {
        rig.publish(topics::DIAGNOSES, incident, payload.clone())
            .await;
    }
    ledger.until_terminal(&incidents).await;

    let all = rig.sim.requests();
    let refused: Vec<&RequestRecord> = all.iter().filter(|r| r.status == 403).collect();
    assert!(
        refused.is_empty(),
        "calls outside the declared RBAC: {refused:#?}"
    );
    for (incident, _, outcome) in &cases {
        assert_eq!(
            ledger.last_state(incident),
            Some(*outcome),
            "{incident}: {:#?}",
            ledger.incident(incident)
        );
    }
    assert!(
        ledger
            .states("rbac-rollback")
            .contains(&IncidentState::RolledBack),
        "{:?}",
        ledger.states("rbac-rollback")
    );
    // Every mutating kind reached the cluster.
    let touched: std::collections::BTreeSet<(String, String)> = rig
        .mutations()
        .iter()
        .map(|m| (m.resource.clone(), m.name.clone()))
        .collect();
    for (resource, name) in [
        ("inferenceservices.serving.kserve.io", "oom"),
        ("inferenceservices.serving.kserve.io", "undersized"),
        ("inferenceservices.serving.kserve.io", "crashing"),
        ("inferenceservices.serving.kserve.io", "bad-image"),
        ("inferenceservices.serving.kserve.io", "gpu-model"),
        ("resourcequotas", "opsmesh-cost-guard"),
        ("limitranges", "opsmesh-default-limits"),
    ] {
        assert!(
            touched.contains(&(resource.to_owned(), name.to_owned())),
            "{resource}/{name} not changed: {touched:?}"
        );
    }
}

/// The default verification (5 checks, 30 s apart) and the default policy, one replica, 40
/// models OOM-looping at once in four namespaces: the incidents are verified side by side, a
/// slot at a time up to `max_concurrent_actions`, the rest waiting for a slot rather than
/// refused. Serially this takes at least 40 verification intervals (20 min); the bound below
/// is 8.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forty_models_oom_looping_at_once_are_all_resolved_in_a_few_verification_intervals() {
    const INTERVAL: Duration = Duration::from_secs(30);
    let namespaces = ["team-a", "team-b", "team-c", "team-d"];
    let models: Vec<(&str, String)> = (0..40)
        .map(|i| (namespaces[i % 4], format!("model-{i}")))
        .collect();
    let mut yaml = String::from("state:\n  namespaces:\n");
    for ns in namespaces {
        yaml.push_str(&format!("    - name: {ns}\n"));
    }
    yaml.push_str("  inference_services:\n");
    for (ns, model) in &models {
        yaml.push_str(&format!(
            "    - {{namespace: {ns}, name: {model}, replicas: 1, memory_limit: 256Mi, image: registry.example.com/kserve/{model}:1.0.0}}\n"
        ));
    }
    yaml.push_str("faults:\n");
    for (ns, model) in &models {
        yaml.push_str(&format!(
            "  - {{at: 0s, target: inferenceservice/{ns}/{model}, {OOM_FAULT}}}\n"
        ));
    }
    let mut rig = Rig::start(&yaml).await;
    rig.add_replica_with(&[]).await;
    let mut ledger = LedgerReader::new(&rig.broker).await;
    let started = tokio::time::Instant::now();
    let incidents: Vec<String> = models.iter().map(|(ns, m)| format!("{ns}-{m}")).collect();
    for (incident, (ns, model)) in incidents.iter().zip(&models) {
        rig.publish(
            topics::DIAGNOSES,
            incident,
            oom_diagnosis_in(incident, ns, model, "640Mi"),
        )
        .await;
    }
    let deadline = started + INTERVAL * 8;
    loop {
        ledger.poll(Duration::from_secs(1)).await;
        let open: Vec<&String> = incidents
            .iter()
            .filter(|i| !ledger.last_state(i).is_some_and(IncidentState::is_terminal))
            .collect();
        if open.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of 40 not decided within 8 verification intervals: {:?}",
            open.len(),
            open.iter()
                .take(5)
                .map(|i| (i, ledger.states(i)))
                .collect::<Vec<_>>()
        );
    }
    let took = started.elapsed();
    for (incident, (ns, model)) in incidents.iter().zip(&models) {
        assert_eq!(
            ledger.last_state(incident),
            Some(IncidentState::Resolved),
            "{incident}: {:?}",
            ledger.incident(incident)
        );
        assert_eq!(rig.memory_limit(ns, model), "640Mi");
    }
    assert!(
        rig.log_count("waiting for a free action slot") > 0,
        "more incidents than slots: some waited (none refused)"
    );
    let report = opsmesh_remediator::ledger::verify(&ledger.records);
    assert!(report.ok(), "the hash chains hold: {:?}", report.breaks);
    eprintln!(
        "40 incidents resolved in {took:.1?} ({:.1} verification intervals)",
        took.as_secs_f64() / INTERVAL.as_secs_f64()
    );
}

/// The Kubernetes API goes away for good: the remediator retries the incident's step with
/// backoff for `retry_budget`, then escalates it as stuck, saying where it stopped and why.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_incident_that_cannot_progress_is_escalated_as_stuck() {
    // The API answers 503 (kube-apiserver's ServiceUnavailable) from the start, for hours.
    let mut yaml = models_yaml(&["unreachable"], &[("unreachable", OOM_FAULT)]);
    yaml.push_str("  - {at: 0s, kind: api_outage, params: {duration: 10h}}\n");
    let mut rig = Rig::start(&yaml).await;
    rig.add_replica(&[
        ("OPSMESH__REMEDIATOR__RETRY_BUDGET", "3s"),
        ("OPSMESH__REMEDIATOR__RETRY_BACKOFF", "200ms"),
        ("OPSMESH__REMEDIATOR__RETRY_BACKOFF_MAX", "500ms"),
        ("OPSMESH__REMEDIATOR__POLICY__QUEUE_TIMEOUT", "1s"),
        ("OPSMESH__REMEDIATOR__STUCK_AFTER", "20s"),
    ])
    .await;
    let mut ledger = LedgerReader::new(&rig.broker).await;
    rig.publish(
        topics::DIAGNOSES,
        "stuck-1",
        oom_diagnosis("stuck-1", "unreachable", "640Mi"),
    )
    .await;
    let last = ledger
        .until_state("stuck-1", IncidentState::Escalated)
        .await;
    assert!(
        last.reason.starts_with("stuck in planned for "),
        "{}",
        last.reason
    );
    assert!(last.reason.contains("last error"), "{}", last.reason);
    assert!(
        rig.log_count("incident step failed; retrying") >= 2,
        "retried with backoff before giving up"
    );
    assert!(rig.mutations().is_empty(), "nothing changed in the cluster");
}
