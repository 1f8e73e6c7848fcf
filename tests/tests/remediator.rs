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
    signing::KeyPair,
};
use opsmesh_sim::{
    Clock, Rbac, RbacRule, RequestRecord, Scenario, SimConfig, SimServer, Simulator,
    resources::INFERENCE_SERVICES,
};
use opsmesh_tests::{broker::Broker, eventually, keys, mesh::SESSION_TIMEOUT, process::Service};

const LIMIT: Duration = Duration::from_secs(120);
/// Virtual seconds per wall second: a pod starts in 0.5 s, an OOM loop turns every second.
const SIM_SPEED: f64 = 20.0;

/// The namespaces the rig's replicas may act on (auto mode needs the list).
const ALLOWED_NAMESPACES: (&str, &str) = (
    "OPSMESH__REMEDIATOR__POLICY__ALLOWED_NAMESPACES",
    "ml-team-a,ml-team-b",
);

/// Replica settings of most tests: fast verification, limits out of the way.
const FAST_REPLICA: &[(&str, &str)] = &[
    ALLOWED_NAMESPACES,
    ("OPSMESH__REMEDIATOR__LEDGER__HEADS_INTERVAL", "1s"),
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
        env.extend(keys::keys().remediator_env());
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

/// `diagnosis` with one more piece of evidence, `values` from `opsmesh.telemetry.v1`, cited by
/// every action.
fn citing_telemetry(diagnosis: Vec<u8>, values: Value) -> Vec<u8> {
    let mut envelope: Value = serde_json::from_slice(&diagnosis).expect("diagnosis JSON");
    let payload = &mut envelope["payload"];
    let id = format!(
        "ev{}",
        payload["evidence"].as_array().map_or(0, Vec::len) + 1
    );
    payload["evidence"]
        .as_array_mut()
        .expect("evidence")
        .push(json!({"id": id, "source": "telemetry", "query": "opsmesh.telemetry.v1 cost", "row_count": 1, "values": values}));
    for action in payload["recommended_actions"]
        .as_array_mut()
        .expect("actions")
    {
        action["evidence_ids"]
            .as_array_mut()
            .expect("evidence ids")
            .push(json!(id));
    }
    serde_json::to_vec(&envelope).expect("JSON")
}

/// An OpenCost namespace total over its budget, as the collector publishes it.
fn over_budget(namespace: &str) -> Value {
    json!({"namespace": namespace, "window": "1h", "hourly_cost_usd": 102.0, "hourly_budget_usd": 40.0})
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
    audit_matches_an_export(&rig, &ledger, &incidents[0]).await;
    eprintln!(
        "{applied_at_kill} of {INCIDENTS} patches before the kill; {redelivered} diagnoses delivered again"
    );
}

/// `opsmesh audit verify --keys … --kafka --file …`, as an auditor runs it: every record of
/// both replicas (one SIGKILLed) is signed, the signed chain heads hold, and an export (HEC
/// events, as Splunk holds them) that lost the last record of every incident is named as
/// different.
async fn audit_matches_an_export(rig: &Rig, ledger: &LedgerReader, incident: &str) {
    let keys = rig.dir.path().join("ledger.pub.pem");
    std::fs::write(&keys, keys::keys().ledger.public_pem()).unwrap();
    let export = |records: &[&Envelope<Remediation>]| {
        let path = rig.dir.path().join("export.jsonl");
        let lines: Vec<String> = records
            .iter()
            .map(|r| json!({"sourcetype": "opsmesh:remediation", "event": r}).to_string())
            .collect();
        std::fs::write(&path, lines.join("\n")).unwrap();
        path
    };
    let audit = |file: &std::path::Path| {
        let output = std::process::Command::new(opsmesh_tests::binary("opsmesh"))
            .args(["audit", "verify", "--kafka", "--keys"])
            .arg(&keys)
            .arg("--file")
            .arg(file)
            .env("OPSMESH__BUS__KIND", "kafka")
            .env("OPSMESH__BUS__KAFKA__BROKERS", rig.broker.address())
            .output()
            .expect("opsmesh audit verify runs");
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        (output.status.success(), text)
    };
    // The last heads go out within a second of the last record.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let all: Vec<&Envelope<Remediation>> = ledger.records.iter().collect();
    let (ok, text) = audit(&export(&all));
    assert!(ok, "{text}");
    assert!(text.contains("kafka: OK"), "{text}");
    assert!(
        !text.contains(" 0 signed head message(s)"),
        "heads were checked: {text}"
    );
    // The export lost the last record of every incident: each is named as different, and
    // those whose end a signed head had already named (not every one: a replica killed
    // right after a record takes that record's head with it) are found cut short by the
    // export alone.
    let last = |incident: &str| ledger.incident(incident).len() as u64 - 1;
    let lossy: Vec<&Envelope<Remediation>> = all
        .into_iter()
        .filter(|r| {
            let id = r.incident_id.as_deref().unwrap_or_default();
            r.payload.ledger.seq != last(id)
        })
        .collect();
    let (ok, text) = audit(&export(&lossy));
    assert!(!ok, "{text}");
    assert!(
        text.contains(&format!(
            "DIFFERENT incident {incident} from seq {}: only kafka",
            last(incident)
        )),
        "{text}"
    );
    assert!(
        text.contains("file: BROKEN") && text.contains("Truncated"),
        "the export alone is cut short: {text}"
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

    let unsigned = |approver: &str| {
        Envelope::new(
            "opsmesh-reporter",
            "test-cluster",
            Some(incident.clone()),
            Approval {
                idempotency_key: action.idempotency_key.clone(),
                decision: ApprovalDecision::Approve,
                approver: approver.into(),
                comment: Some("agreed with the model owner".into()),
                signature: None,
            },
        )
    };
    let approval = |approver: &str| {
        let mut envelope = unsigned(approver);
        keys::keys().sign_approval(&mut envelope);
        envelope.to_vec()
    };

    // Whoever can write to the approvals topic cannot approve: an unsigned approval, one
    // signed by another key, and a signed one edited afterwards are refused and recorded.
    rig.publish(topics::APPROVALS, &incident, unsigned("mallory").to_vec())
        .await;
    let mut forged = unsigned("mallory");
    forged.payload.signature =
        Some(KeyPair::generate().sign(&opsmesh_proto::approval::signed_bytes(&forged)));
    rig.publish(topics::APPROVALS, &incident, forged.to_vec())
        .await;
    let mut edited = unsigned("carol@example.com");
    keys::keys().sign_approval(&mut edited);
    edited.payload.approver = "mallory".into();
    rig.publish(topics::APPROVALS, &incident, edited.to_vec())
        .await;
    let refused = |ledger: &LedgerReader| -> Vec<String> {
        ledger
            .incident(&incident)
            .into_iter()
            .filter(|r| r.reason.starts_with("refused an approval"))
            .map(|r| r.reason.clone())
            .collect()
    };
    let waiting_since = std::time::Instant::now();
    while refused(&ledger).len() < 3 && waiting_since.elapsed() < Duration::from_secs(30) {
        ledger.poll(Duration::from_millis(500)).await;
    }
    let refusals = refused(&ledger);
    assert_eq!(refusals.len(), 3, "{refusals:?}");
    assert!(refusals[0].contains("not signed"), "{refusals:?}");
    assert!(refusals[1].contains("not trusted"), "{refusals:?}");
    assert!(refusals[2].contains("does not match"), "{refusals:?}");
    assert!(rig.mutations().is_empty(), "{:?}", rig.mutations());
    assert_eq!(
        ledger.last_state(&incident),
        Some(IncidentState::AwaitingApproval)
    );

    // An approval without an approver identity is ignored.
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
    // The ceiling is the limit proposed: the runbook's ladder has no higher step to take.
    let (rig, mut ledger) = one_oom_model(
        "too-small",
        &[
            ("OPSMESH__REMEDIATOR__VERIFICATION__ATTEMPTS", "6"),
            ("OPSMESH__REMEDIATOR__POLICY__MEMORY_CEILING", "320Mi"),
        ],
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
    let escalated = records.last().expect("records");
    assert!(
        escalated.reason.contains(
            "ladder ends after step 1: step 2 (patch_memory_limit): the memory limit 320Mi cannot be raised: × 1.5 is 512Mi, above the ceiling 320Mi"
        ),
        "the escalation gives the numbers: {}",
        escalated.reason
    );
    // The limit went to 320Mi and back to what it was.
    let limits: Vec<Value> = rig.mutations().iter().map(|m| m.body.clone()).collect();
    assert_eq!(limits.len(), 2, "{limits:?}");
    assert!(limits[0].to_string().contains("320Mi"), "{limits:?}");
    assert!(limits[1].to_string().contains("256Mi"), "{limits:?}");
    assert_eq!(rig.memory_limit("ml-team-a", "too-small"), "256Mi");
}

/// A model that needs 700Mi under 256Mi, diagnosed to 320Mi: the oom-killed runbook's ladder
/// raises × 1.5 (to a multiple of 64Mi) to 512Mi, then 768Mi, and the model is healthy. The replica is SIGKILLed while it
/// verifies the second step and restarted: it resumes the ladder from the ledger, and every
/// step reached the cluster exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_ladder_climbs_to_a_healthy_limit_and_a_sigkill_mid_ladder_repeats_no_step() {
    let mut rig = Rig::start(&models_yaml(
        &["climbing"],
        &[("climbing", "kind: oom_loop, params: {memory_demand: 700Mi}")],
    ))
    .await;
    // The diagnosis stays uncommitted, so the restarted replica gets it again.
    let replica = rig
        .add_replica(&[("OPSMESH__BUS__KAFKA__COMMIT_INTERVAL", "60s")])
        .await;
    let mut ledger = LedgerReader::new(&rig.broker).await;
    let incident = "ladder".to_owned();
    rig.publish(
        topics::DIAGNOSES,
        &incident,
        oom_diagnosis(&incident, "climbing", "320Mi"),
    )
    .await;
    eventually("the ladder's second step applied", LIMIT, || async {
        (rig.mutations().len() >= 2).then_some(())
    })
    .await;
    rig.replicas[replica].kill();
    rig.replicas[replica].start();
    rig.replicas[replica].wait_ready().await;
    let resolved = ledger.until_state(&incident, IncidentState::Resolved).await;
    assert!(resolved.verification.is_some_and(|v| v.healthy));

    let limits: Vec<String> = rig.mutations().iter().map(|m| m.body.to_string()).collect();
    assert_eq!(limits.len(), 3, "one patch per step: {limits:#?}");
    for (limit, want) in limits.iter().zip(["320Mi", "512Mi", "768Mi"]) {
        assert!(limit.contains(want), "{want}: {limit}");
    }
    assert_eq!(rig.memory_limit("ml-team-a", "climbing"), "768Mi");
    let records = ledger.incident(&incident);
    let steps: Vec<(&str, String)> = records
        .iter()
        .filter(|r| r.state == IncidentState::Executing)
        .filter_map(|r| r.action.as_ref())
        .map(|a| {
            (
                a.idempotency_key.rsplit(':').next().unwrap_or_default(),
                a.params["memory_limit"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            ("inferenceservice/ml-team-a/climbing", "320Mi".to_owned()),
            ("inferenceservice/ml-team-a/climbing#2", "512Mi".to_owned()),
            ("inferenceservice/ml-team-a/climbing#3", "768Mi".to_owned()),
        ],
        "one intent per step, each under its own key"
    );
    let climbed = records
        .iter()
        .filter(|r| r.state == IncidentState::Executing)
        .nth(1)
        .expect("step 2");
    assert!(
        climbed.verification.as_ref().is_some_and(|v| !v.healthy)
            && climbed.reason.contains(
                "step 1 did not help and did not make things worse: ladder step 2 of at most 4"
            ),
        "step 2 records why: {climbed:?}"
    );
    let report = opsmesh_remediator::ledger::verify(&ledger.records);
    assert!(report.ok(), "the hash chain holds: {:?}", report.breaks);
}

/// A healthy model with a known good image is restarted (the crash-loop runbook's first step)
/// and then crash-loops for good: the restart left fewer containers ready than before it, so
/// the ladder ends there — escalated, its rollback step never taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_step_that_leaves_fewer_containers_ready_ends_the_ladder() {
    let mut rig = Rig::start(&models_yaml(&["steady"], &[])).await;
    // Checks 3 s apart: the crash loop below begins well before the first.
    rig.add_replica(&[
        ("OPSMESH__REMEDIATOR__VERIFICATION__ATTEMPTS", "3"),
        ("OPSMESH__REMEDIATOR__VERIFICATION__INTERVAL", "3s"),
    ])
    .await;
    let mut ledger = LedgerReader::new(&rig.broker).await;
    let ready = || {
        rig.sim.with_world(|w| {
            w.get(&INFERENCE_SERVICES, "ml-team-a", "steady")
                .ok()
                .is_some_and(|isvc| {
                    isvc["status"]["conditions"].as_array().is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c["type"] == "Ready" && c["status"] == "True")
                    })
                })
        })
    };
    eventually("the model is ready", LIMIT, || async {
        ready().then_some(())
    })
    .await;
    let incident = "worse".to_owned();
    rig.publish(
        topics::DIAGNOSES,
        &incident,
        diagnosis(
            &incident,
            "crash_loop",
            "crash-loop",
            "Restart the InferenceService once",
            json!([{"kind": "restart_inference_service", "target": "inferenceservice/ml-team-a/steady"}]),
        ),
    )
    .await;
    let deadline = tokio::time::Instant::now() + LIMIT;
    while !ledger.states(&incident).contains(&IncidentState::Executing) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            ledger.states(&incident)
        );
        ledger.poll(Duration::from_millis(100)).await;
    }
    rig.sim.inject(
        Duration::ZERO,
        opsmesh_sim::scenario::Fault::CrashLoop {
            persistent: true,
            exit_code: 1,
        },
        "inferenceservice/ml-team-a/steady".parse().ok(),
    );
    ledger.until_terminal(std::slice::from_ref(&incident)).await;

    let records = ledger.incident(&incident);
    let restart = records
        .iter()
        .find(|r| r.state == IncidentState::Executing)
        .and_then(|r| r.action.as_ref())
        .expect("the restart");
    assert_eq!(
        restart.params["observed_ready_containers"],
        json!(2),
        "{restart:?}"
    );
    let last = records.last().expect("records");
    assert_eq!(last.state, IncidentState::Escalated);
    assert!(
        last.reason.contains(
            "step 1 made things worse (0 predictor container(s) ready after it, 2 before)"
        ),
        "{}",
        last.reason
    );
    let executed: Vec<_> = records
        .iter()
        .filter(|r| r.state == IncidentState::Executing)
        .filter_map(|r| r.action.as_ref().map(|a| a.kind))
        .collect();
    assert_eq!(
        executed,
        [opsmesh_proto::ActionKind::RestartInferenceService],
        "no rollback after a step that made things worse"
    );
    assert_eq!(rig.mutations().len(), 1, "{:?}", rig.mutations());
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
  - {at: 0s, kind: oom_loop, target: inferenceservice/ml-team-a/undersized, params: {memory_demand: 64Gi}}
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
            citing_telemetry(
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
                over_budget("ml-team-b"),
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

/// The default verification (5 checks, 30 s apart) and the default policy (its namespaces
/// listed, so auto mode acts), one replica, 40
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
    rig.add_replica_with(&[(
        "OPSMESH__REMEDIATOR__POLICY__ALLOWED_NAMESPACES",
        &namespaces.join(","),
    )])
    .await;
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

/// An approval for `incident`'s proposal `key`, by alice, signed as the reporter signs it.
fn approval(incident: &str, key: &str) -> Vec<u8> {
    let mut envelope = Envelope::new(
        "opsmesh-reporter",
        "test-cluster",
        Some(incident.to_owned()),
        Approval {
            idempotency_key: key.to_owned(),
            decision: ApprovalDecision::Approve,
            approver: "alice@example.com".into(),
            comment: None,
            signature: None,
        },
    );
    keys::keys().sign_approval(&mut envelope);
    envelope.to_vec()
}

/// Waits for `incident`'s proposal, approves it and waits for its terminal record.
async fn approve(rig: &Rig, ledger: &mut LedgerReader, incident: &str) -> Remediation {
    let proposal = ledger
        .until_state(incident, IncidentState::AwaitingApproval)
        .await;
    let key = proposal
        .action
        .expect("the proposed action")
        .idempotency_key;
    rig.publish(topics::APPROVALS, incident, approval(incident, &key))
        .await;
    ledger.until_terminal(&[incident.to_owned()]).await;
    ledger
        .incident(incident)
        .last()
        .map(|r| (*r).clone())
        .expect("a terminal record")
}

/// Proposals wait for approval while other incidents act and the cluster moves on: each
/// approval runs its action only if cooldown, rate limit and blast radius (on the replicas
/// the InferenceService has now) still allow it; otherwise the incident is refused, saying
/// which rule and with which figures, and the refusal is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_late_approval_runs_only_if_the_policy_still_allows_it() {
    // `big` ran 8 replicas when the diagnosis was made; someone has scaled it to 20 since.
    let mut yaml = models_yaml(
        &["first", "second"],
        &[("first", OOM_FAULT), ("second", OOM_FAULT)],
    );
    yaml = yaml.replace(
        "faults:\n",
        "    - {namespace: ml-team-a, name: big, replicas: 8, memory_limit: 1Gi, hourly_cost_usd: 12.5}\nfaults:\n  - {at: 0s, kind: cost_spike, target: inferenceservice/ml-team-a/big, params: {replicas: 20}}\n",
    );
    let mut rig = Rig::start(&yaml).await;
    rig.add_replica(&[
        ("OPSMESH__REMEDIATOR__POLICY__MODE", "approve"),
        ("OPSMESH__REMEDIATOR__POLICY__RATE_LIMIT__GLOBAL", "1"),
    ])
    .await;
    let mut ledger = LedgerReader::new(&rig.broker).await;
    let scale = citing_telemetry(
        diagnosis(
            "late-scale",
            "cost_overrun",
            "cost-overrun",
            "Scale down and cap the namespace",
            json!([{"kind": "scale_inference_service", "target": "inferenceservice/ml-team-a/big",
                    "params": {"replicas": 2, "previous_replicas": 8}}]),
        ),
        over_budget("ml-team-a"),
    );
    let proposals = [
        ("late-scale", scale),
        ("late-first", oom_diagnosis("late-first", "first", "640Mi")),
        ("late-again", oom_diagnosis("late-again", "first", "704Mi")),
        (
            "late-second",
            oom_diagnosis("late-second", "second", "640Mi"),
        ),
    ];
    // Every proposal passes the policy when planned: nothing has acted yet.
    for (incident, payload) in &proposals {
        rig.publish(topics::DIAGNOSES, incident, payload.clone())
            .await;
        ledger
            .until_state(incident, IncidentState::AwaitingApproval)
            .await;
    }

    let blast = approve(&rig, &mut ledger, "late-scale").await;
    assert_eq!(blast.state, IncidentState::Refused, "{blast:?}");
    assert!(
        blast
            .reason
            .contains("refused (blast_radius) just before executing: scaling 20 → 2 takes away 90% of the replicas; the policy allows 80%"),
        "{}",
        blast.reason
    );
    let done = approve(&rig, &mut ledger, "late-first").await;
    assert_eq!(done.state, IncidentState::Resolved, "{done:?}");
    let again = approve(&rig, &mut ledger, "late-again").await;
    assert_eq!(again.state, IncidentState::Refused, "{again:?}");
    assert!(
        again.reason.starts_with(
            "refused (cooldown) just before executing: inferenceservice/ml-team-a/first was acted on at "
        ) && again.reason.ends_with("by another incident; cooldown 10m"),
        "{}",
        again.reason
    );
    let rated = approve(&rig, &mut ledger, "late-second").await;
    assert_eq!(rated.state, IncidentState::Refused, "{rated:?}");
    assert_eq!(
        rated.reason,
        "refused (rate_limit) just before executing: 1 cluster-changing actions in the last 1h (global limit 1)"
    );

    let mutations = rig.mutations();
    assert_eq!(mutations.len(), 1, "only late-first acted: {mutations:?}");
    assert_eq!(rig.memory_limit("ml-team-a", "first"), "640Mi");
    assert_eq!(rig.memory_limit("ml-team-a", "second"), "256Mi");
    let replica = &rig.replicas[0];
    for reason in ["blast_radius", "cooldown", "rate_limit"] {
        assert_eq!(
            replica
                .metric("opsmesh_remediator_refusals_total", &[("reason", reason)])
                .await,
            1.0,
            "{reason}"
        );
    }
}

/// An approval that finds every action slot taken waits for one, and is refused once
/// `policy.queue_timeout` passes without a slot freeing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_approved_action_waits_for_a_slot_and_is_refused_when_none_frees() {
    let mut rig = Rig::start(&models_yaml(
        &["busy", "queued"],
        &[("busy", OOM_FAULT), ("queued", OOM_FAULT)],
    ))
    .await;
    rig.add_replica(&[
        ("OPSMESH__REMEDIATOR__POLICY__MODE", "approve"),
        ("OPSMESH__REMEDIATOR__POLICY__MAX_CONCURRENT_ACTIONS", "1"),
        ("OPSMESH__REMEDIATOR__POLICY__QUEUE_TIMEOUT", "2s"),
        // A waiting incident looks for a slot at least this often.
        ("OPSMESH__REMEDIATOR__RETRY_BACKOFF", "100ms"),
        ("OPSMESH__REMEDIATOR__RETRY_BACKOFF_MAX", "300ms"),
        // 320Mi stays OOMKilled: `busy` holds the only slot through 20 failing checks (10 s).
        ("OPSMESH__REMEDIATOR__VERIFICATION__ATTEMPTS", "20"),
    ])
    .await;
    let mut ledger = LedgerReader::new(&rig.broker).await;
    for (incident, model, limit) in [
        ("slot-busy", "busy", "320Mi"),
        ("slot-queued", "queued", "640Mi"),
    ] {
        rig.publish(
            topics::DIAGNOSES,
            incident,
            oom_diagnosis(incident, model, limit),
        )
        .await;
        ledger
            .until_state(incident, IncidentState::AwaitingApproval)
            .await;
    }
    let busy = ledger
        .incident("slot-busy")
        .last()
        .and_then(|r| r.action.clone())
        .expect("busy's proposal");
    rig.publish(
        topics::APPROVALS,
        "slot-busy",
        approval("slot-busy", &busy.idempotency_key),
    )
    .await;
    ledger
        .until_state("slot-busy", IncidentState::Verifying)
        .await;

    let queued = approve(&rig, &mut ledger, "slot-queued").await;
    assert_eq!(queued.state, IncidentState::Refused, "{queued:?}");
    assert_eq!(
        queued.reason,
        "refused (max_concurrent_actions) just before executing: 1 incidents are already executing or verifying (limit 1); no slot freed within policy.queue_timeout (2s)"
    );
    assert!(rig.log_count("waiting for a free action slot") > 0);
    assert_eq!(
        ledger.last_state("slot-busy"),
        Some(IncidentState::Verifying),
        "the refusal came while busy still held the slot"
    );
    assert_eq!(rig.memory_limit("ml-team-a", "queued"), "256Mi");
    assert_eq!(
        rig.replicas[0]
            .metric(
                "opsmesh_remediator_refusals_total",
                &[("reason", "max_concurrent_actions")]
            )
            .await,
        1.0
    );
}

/// A safe default: `auto` without an explicit namespace allow-list waits for an approval,
/// saying why in the ledger and the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn auto_mode_needs_an_allow_list_of_namespaces() {
    let mut rig = Rig::start(&models_yaml(&["unlisted"], &[("unlisted", OOM_FAULT)])).await;
    // The default policy (auto), without FAST_REPLICA's allow-list.
    rig.add_replica_with(&[]).await;
    let mut ledger = LedgerReader::new(&rig.broker).await;
    rig.publish(
        topics::DIAGNOSES,
        "unlisted",
        oom_diagnosis("unlisted", "unlisted", "640Mi"),
    )
    .await;
    let proposal = ledger
        .until_state("unlisted", IncidentState::AwaitingApproval)
        .await;
    let planned = ledger
        .incident("unlisted")
        .into_iter()
        .find(|r| r.state == IncidentState::Planned)
        .expect("planned")
        .clone();
    assert!(
        planned.reason.contains("mode approve (patch_memory_limit is configured auto, but policy.allowed_namespaces is empty"),
        "{}",
        planned.reason
    );
    assert_eq!(
        proposal.action.map(|a| a.mode),
        Some(opsmesh_proto::remediation::ActionMode::Approve)
    );
    assert!(rig.log_count("auto mode downgraded") > 0);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(rig.mutations().is_empty(), "{:?}", rig.mutations());
}

/// An ArgoCD application is checked against the namespaces ArgoCD says it deploys to (not the
/// one the diagnosis names), and a diagnosis about another cluster is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn applications_and_diagnoses_are_checked_against_where_they_act() {
    let state = "state:
  namespaces:
    - {name: ml-team-a}
    - {name: payments}
  inference_services:
    - {namespace: ml-team-a, name: model, replicas: 2, memory_limit: 256Mi}
    - {namespace: payments, name: fraud, replicas: 2, argocd_app: payments-models}
  argocd_apps:
    - {name: payments-models, namespace: payments}
faults:
  - {at: 0s, kind: gitops_drift, target: application/payments-models}
  - {at: 0s, kind: oom_loop, target: inferenceservice/ml-team-a/model, params: {memory_demand: 480Mi}}
";
    let mut rig = Rig::start(state).await;
    let argocd_url = rig.server.as_ref().expect("server").argocd_url();
    let argocd_token = rig
        .server
        .as_ref()
        .expect("server")
        .argocd_token()
        .to_owned();
    rig.add_replica(&[
        (
            "OPSMESH__REMEDIATOR__POLICY__ALLOWED_NAMESPACES",
            "ml-team-a",
        ),
        ("OPSMESH__REMEDIATOR__ARGOCD__URL", &argocd_url),
        ("OPSMESH__REMEDIATOR__ARGOCD__TOKEN", &argocd_token),
    ])
    .await;
    let mut ledger = LedgerReader::new(&rig.broker).await;
    // The diagnosis names the application under an allowed namespace; ArgoCD says it deploys
    // to `payments`.
    rig.publish(
        topics::DIAGNOSES,
        "drift",
        diagnosis(
            "drift",
            "gitops_drift",
            "gitops-drift",
            "Sync the application to git",
            json!([{"kind": "argocd_sync", "target": "application/ml-team-a/payments-models"}]),
        ),
    )
    .await;
    let mut foreign: Value =
        serde_json::from_slice(&oom_diagnosis("elsewhere", "model", "640Mi")).expect("JSON");
    foreign["cluster"] = json!("prod-us-2");
    rig.publish(
        topics::DIAGNOSES,
        "elsewhere",
        serde_json::to_vec(&foreign).expect("JSON"),
    )
    .await;
    ledger
        .until_terminal(&["drift".to_owned(), "elsewhere".to_owned()])
        .await;

    let drift = ledger
        .incident("drift")
        .last()
        .map(|r| (*r).clone())
        .unwrap();
    assert_eq!(drift.state, IncidentState::Refused, "{drift:?}");
    assert_eq!(
        drift.reason,
        "refused (namespace_not_allowed) just before executing: the application deploys to payments: namespace payments is not in the allow-list (ml-team-a)"
    );
    let elsewhere = ledger
        .incident("elsewhere")
        .last()
        .map(|r| (*r).clone())
        .unwrap();
    assert_eq!(elsewhere.state, IncidentState::Refused, "{elsewhere:?}");
    assert_eq!(
        elsewhere.reason,
        "refused (wrong_cluster): the diagnosis is about cluster \"prod-us-2\", but this remediator acts on cluster \"test-cluster\""
    );
    let acted: Vec<RequestRecord> = rig
        .sim
        .requests()
        .into_iter()
        .filter(|r| !r.dry_run && matches!(r.verb.as_str(), "sync" | "patch" | "apply"))
        .collect();
    assert!(acted.is_empty(), "nothing changed: {acted:#?}");
    assert_eq!(rig.memory_limit("ml-team-a", "model"), "256Mi");
}
