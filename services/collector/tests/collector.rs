//! The collector against the cluster simulator: real kube-rs / reqwest clients, a
//! multi-namespace cluster with faults, failing and hanging sources isolated.

mod support;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use opsmesh_collector::CollectorConfig;
use opsmesh_proto::{
    Envelope,
    telemetry::{Telemetry, TelemetryRecord},
    topics::TELEMETRY,
};
use opsmesh_runtime::{ConfigTree, bus::MemoryBus, launcher};
use support::{by_key, collector, fixture, tree};
#[tokio::test]
async fn multi_namespace_cluster_telemetry() {
    let f = fixture().await;
    let (collector, _ctx, bus) = collector(&tree(&f, "")).await;
    assert_eq!(
        collector.source_names(),
        ["models", "policies", "costs", "gitops"]
    );
    let pass = collector.collect_once().await;
    assert!(pass.errors.is_empty(), "{:?}", pass.errors);
    let records = by_key(&pass.records);
    let keys: Vec<&String> = records.keys().collect();

    let TelemetryRecord::Models(gpt) = &records["inferenceservice/ml-team-a/gpt-oss-120b"] else {
        panic!("{keys:?}")
    };
    assert!(!gpt.ready);
    assert_eq!((gpt.replicas, gpt.ready_replicas), (2, 0));
    assert_eq!(gpt.restarts, 8);
    assert_eq!(gpt.oom_killed, 2);
    assert_eq!(gpt.last_termination_reason.as_deref(), Some("OOMKilled"));
    assert_eq!(gpt.waiting_reason.as_deref(), Some("CrashLoopBackOff"));
    assert_eq!(gpt.memory_limit.as_deref(), Some("256Mi"));
    assert_eq!(
        gpt.image.as_deref(),
        Some("registry.example.com/kserve/gpt-oss:1.4.2")
    );
    // The image of the predictor Deployment's previous ReplicaSet revision.
    assert_eq!(
        gpt.last_known_good_image.as_deref(),
        Some("registry.example.com/kserve/gpt-oss:1.4.1")
    );
    assert!(
        gpt.warning_events
            .iter()
            .any(|e| e.starts_with("BackOff: Back-off restarting failed container")),
        "{:?}",
        gpt.warning_events
    );

    let TelemetryRecord::Models(embedder) = &records["inferenceservice/ml-team-a/embedder"] else {
        panic!()
    };
    assert!(embedder.ready && embedder.restarts == 0 && embedder.warning_events.is_empty());
    assert_eq!(embedder.last_known_good_image, None, "a single revision");
    // metrics-server's sample of the running model server; none of one waiting in back-off.
    assert_eq!(embedder.peak_working_set_bytes, Some(256 << 20));
    assert_eq!(gpt.peak_working_set_bytes, None, "in back-off: no sample");
    let TelemetryRecord::Models(llama) = &records["inferenceservice/ml-team-b/llama-3-8b"] else {
        panic!()
    };
    assert!(!llama.ready);
    assert!(
        llama
            .warning_events
            .iter()
            .any(|e| e.contains("PolicyViolation")),
        "{:?}",
        llama.warning_events
    );

    let TelemetryRecord::Policies(policy) =
        &records["policyreport/ml-team-b/disallow-root-containers"]
    else {
        panic!("{keys:?}")
    };
    assert_eq!(policy.result, "fail");
    assert_eq!(policy.action.as_deref(), Some("enforce"));
    assert_eq!(policy.resource, "InferenceService/llama-3-8b");
    assert!(policy.denials >= 1);
    assert!(policy.message.contains("runAsNonRoot must be true"));

    let TelemetryRecord::Costs(team_a) = &records["cost/ml-team-a"] else {
        panic!("{keys:?}")
    };
    assert_eq!(team_a.hourly_budget_usd, Some(40.0));
    // 2 x 12.5 + 2.0 per hour: the initial state ran before the simulation began.
    assert!((team_a.hourly_cost_usd - 27.0).abs() < 0.01, "{team_a:?}");
    // Each workload's usual size, from OpenCost's history in steps.
    assert_eq!(
        team_a.baseline_replicas,
        BTreeMap::from([
            ("embedder-predictor".to_owned(), 1),
            ("gpt-oss-120b-predictor".to_owned(), 2)
        ])
    );
    assert!(team_a.gpu_cost_usd > team_a.cpu_cost_usd);
    let TelemetryRecord::Costs(team_b) = &records["cost/ml-team-b"] else {
        panic!()
    };
    assert_eq!(team_b.hourly_budget_usd, None);
    let pod_costs = records
        .keys()
        .filter(|k| k.starts_with("cost/ml-team-a/"))
        .count();
    assert_eq!(pod_costs, 3);

    let TelemetryRecord::Argocd(app) = &records["application/ml-team-b/ml-team-b-models"] else {
        panic!("{keys:?}")
    };
    assert_eq!(
        (app.sync.as_str(), app.health.as_str()),
        ("Synced", "Degraded")
    );
    assert!(app.revision.as_ref().is_some_and(|r| r.len() == 40));

    // One record per resource, every one on the bus, keyed by resource, stamped with the cluster.
    assert_eq!(records.len(), pass.records.len());
    let published = bus.snapshot(TELEMETRY);
    assert_eq!(published.len(), pass.records.len());
    for m in &published {
        let e = Envelope::<Telemetry>::from_slice(&m.payload).unwrap();
        assert_eq!(e.cluster, "sim-eu-1");
        assert_eq!(e.source, "opsmesh-collector");
        assert_eq!(m.key.as_deref(), Some(e.payload.resource.as_bytes()));
        assert!(e.incident_id.is_none());
    }
    // The collector only reads.
    assert!(f.sim.requests().is_empty());
}

#[tokio::test]
async fn a_failing_source_is_reported_and_isolated() {
    let f = fixture().await;
    // A wrong ArgoCD token and an OpenCost that is not there.
    let toml = format!(
        "[bus]\nkind = \"memory\"\n[collector]\ninterval = \"200ms\"\nsource_timeout = \"2s\"\nkubeconfig = \"{}\"\n[collector.opencost]\nurl = \"http://127.0.0.1:9\"\n[collector.argocd]\nurl = \"{}\"\ntoken = \"wrong\"\n",
        f.dir.path().join("kubeconfig").display(),
        f.server.argocd_url()
    );
    let t = ConfigTree::load_layered(Some(&toml), None, Vec::<(String, String)>::new()).unwrap();
    let (collector, ctx, _bus) = collector(&t).await;
    let pass = collector.collect_once().await;
    let failed: Vec<&str> = pass.errors.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(failed, ["costs", "gitops"]);
    assert!(pass.errors[1].1.contains("401"), "{:?}", pass.errors);
    let records = by_key(&pass.records);
    assert!(records.contains_key("inferenceservice/ml-team-a/gpt-oss-120b"));
    assert!(records.contains_key("policyreport/ml-team-b/disallow-root-containers"));
    let TelemetryRecord::SourceError(e) = &records["collector/gitops"] else {
        panic!()
    };
    assert_eq!(e.source, "gitops");
    assert!(records.contains_key("collector/costs"));
    let metrics = prometheus::TextEncoder::new()
        .encode_to_string(&ctx.registry.gather())
        .unwrap();
    assert!(
        metrics.contains("opsmesh_collector_source_errors_total{source=\"gitops\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("opsmesh_collector_records_total{source=\"models\"} 4"),
        "{metrics}"
    );
    assert!(
        metrics.contains("opsmesh_collector_source_seconds_bucket"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_hanging_source_times_out_alone() {
    let f = fixture().await;
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hang = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let toml = format!(
        "[bus]\nkind = \"memory\"\n[collector]\nsource_timeout = \"300ms\"\nkubeconfig = \"{}\"\n[collector.opencost]\nurl = \"http://{hang}\"\n",
        f.dir.path().join("kubeconfig").display()
    );
    let t = ConfigTree::load_layered(Some(&toml), None, Vec::<(String, String)>::new()).unwrap();
    let (collector, _ctx, _bus) = collector(&t).await;
    let started = std::time::Instant::now();
    let pass = collector.collect_once().await;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(pass.errors.len(), 1);
    assert_eq!(pass.errors[0].0, "costs");
    assert!(by_key(&pass.records).contains_key("inferenceservice/ml-team-b/whisper"));
}

#[tokio::test]
async fn runs_on_its_interval_as_a_service() {
    let f = fixture().await;
    let t = tree(&f, "");
    let settings = t.settings().unwrap();
    let bus = MemoryBus::new(&settings.bus.memory);
    let app = launcher::build(
        &t,
        settings,
        &[&opsmesh_collector::SERVICE],
        Some(Arc::new(bus.clone())),
    )
    .await
    .unwrap();
    let stop = app.shutdown_token();
    let running = tokio::spawn(app.run_until_stopped());
    tokio::time::sleep(Duration::from_millis(900)).await;
    stop.cancel();
    running.await.unwrap().unwrap();
    let gpt: Vec<_> = bus
        .snapshot(TELEMETRY)
        .into_iter()
        .filter(|m| m.key.as_deref() == Some(b"inferenceservice/ml-team-a/gpt-oss-120b".as_slice()))
        .collect();
    assert!(
        gpt.len() >= 2 && gpt.len() <= 6,
        "one record per interval, got {}",
        gpt.len()
    );
}

#[test]
fn configuration_errors_name_the_key() {
    let err = |toml: &str| {
        ConfigTree::load_layered(Some(toml), None, Vec::<(String, String)>::new())
            .unwrap()
            .section::<CollectorConfig>("collector")
            .unwrap_err()
            .to_string()
    };
    assert!(
        err("[collector.opencost]\nurl = \"not a url\"\n").contains("`collector.opencost.url`")
    );
    assert!(
        err("[collector.opencost]\nwindow = \"forever\"\n").contains("`collector.opencost.window`")
    );
    assert!(
        err("[collector.argocd]\nurl = \"http://argocd\"\n").contains("`collector.argocd.token`")
    );
    assert!(err("[collector.argocd]\nurl = \"http://argocd\"\ntoken = \"a\"\ntoken_file = \"/etc/hosts\"\n").contains("`collector.argocd.token_file`"));
    assert!(err("[collector]\ninterval = \"1ms\"\n").contains("`collector.interval`"));
    assert!(err("[collector]\nkubeconfig = \"/nonexistent\"\n").contains("`collector.kubeconfig`"));
    assert!(err("[collector]\nintreval = \"1s\"\n").contains("intreval"));
    assert!(
        err("[collector.budgets]\nml-team-a = -1.0\n").contains("`collector.budgets.ml-team-a`")
    );
    assert!(
        err("[collector.opencost]\nhistory_refresh = \"0s\"\n")
            .contains("`collector.opencost.history_refresh`")
    );
    assert!(
        err("[collector.opencost]\nhistory_refresh = \"1h\"\nhistory_max_age = \"30m\"\n")
            .contains("`collector.opencost.history_max_age`")
    );
}
