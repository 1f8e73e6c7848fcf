//! The collector against the cluster simulator: real kube-rs / reqwest clients, a
//! multi-namespace cluster with faults, failing and hanging sources isolated.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer};

use opsmesh_collector::{Collector, CollectorConfig};
use opsmesh_proto::{
    Envelope,
    telemetry::{Telemetry, TelemetryRecord},
    topics::TELEMETRY,
};
use opsmesh_runtime::{ConfigTree, Context, bus::MemoryBus, launcher};
use opsmesh_sim::{Scenario, SimConfig, SimServer, Simulator};

const CLUSTER: &str = r#"
name: collector-cluster
state:
  namespaces:
    - name: ml-team-a
      hourly_budget_usd: 40
    - name: ml-team-b
  inference_services:
    - {namespace: ml-team-a, name: gpt-oss-120b, replicas: 2, gpu: 1, memory_limit: 256Mi, hourly_cost_usd: 12.5, image: "registry.example.com/kserve/gpt-oss:1.4.2", previous_image: "registry.example.com/kserve/gpt-oss:1.4.1"}
    - {namespace: ml-team-a, name: embedder, memory_limit: 512Mi, hourly_cost_usd: 2.0}
    - {namespace: ml-team-b, name: llama-3-8b, image: "registry.example.com/kserve/llama:3.8.0", argocd_app: ml-team-b-models, hourly_cost_usd: 4.0}
    - {namespace: ml-team-b, name: whisper, argocd_app: ml-team-b-models}
  argocd_apps:
    - {name: ml-team-b-models, namespace: ml-team-b}
  policies:
    - {name: disallow-root-containers, action: enforce}
faults:
  - {at: 0s, kind: oom_loop, target: inferenceservice/ml-team-a/gpt-oss-120b, params: {memory_demand: 480Mi}}
  - {at: 0s, kind: policy_denial, target: inferenceservice/ml-team-b/llama-3-8b, params: {policy: disallow-root-containers, reason: "runAsNonRoot must be true"}}
expect: {}
"#;

struct Fixture {
    sim: Simulator,
    server: SimServer,
    dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let scenario = Scenario::parse(CLUSTER, "cluster.yaml").unwrap();
    let sim = Simulator::from_scenario(&scenario, SimConfig::default());
    let server = SimServer::start(sim.clone(), "127.0.0.1:0".parse().unwrap()).unwrap();
    sim.advance(Duration::from_secs(300));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("kubeconfig"),
        server.kubeconfig_yaml("default"),
    )
    .unwrap();
    Fixture { sim, server, dir }
}

fn tree(f: &Fixture, extra: &str) -> ConfigTree {
    tree_with_opencost(f, &f.server.opencost_url(), "", extra)
}

/// [`tree`] with the collector reading OpenCost at `opencost`, with `opencost_settings` in
/// `[collector.opencost]`.
fn tree_with_opencost(
    f: &Fixture,
    opencost: &str,
    opencost_settings: &str,
    extra: &str,
) -> ConfigTree {
    let toml = format!(
        "cluster = \"sim-eu-1\"\n[http]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n[bus]\nkind = \"memory\"\n[collector]\ninterval = \"200ms\"\nsource_timeout = \"2s\"\nkubeconfig = \"{kc}\"\n[collector.opencost]\nurl = \"{oc}\"\nwindow = \"1h\"\n{opencost_settings}\n[collector.argocd]\nurl = \"{argo}\"\ntoken = \"{token}\"\n{extra}",
        kc = f.dir.path().join("kubeconfig").display(),
        oc = opencost,
        argo = f.server.argocd_url(),
        token = f.server.argocd_token(),
    );
    ConfigTree::load_layered(Some(&toml), None, Vec::<(String, String)>::new()).unwrap()
}

async fn collector(tree: &ConfigTree) -> (Collector, Context, MemoryBus) {
    let settings = tree.settings().unwrap();
    let bus = MemoryBus::new(&settings.bus.memory);
    let ctx = Context::new(settings, Arc::new(bus.clone()));
    let config: CollectorConfig = tree.section("collector").unwrap();
    (Collector::new(config, &ctx).await.unwrap(), ctx, bus)
}

fn by_key(records: &[(String, TelemetryRecord)]) -> BTreeMap<String, TelemetryRecord> {
    let map: BTreeMap<_, _> = records.iter().cloned().collect();
    map
}

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

/// OpenCost in front of the simulator's: forwards every allocation query, counts the history
/// queries (`accumulate=false`) and, while `fail_history` is set, answers those as OpenCost
/// answers a failed computation; while `hang_history` is set, never answers them.
struct OpenCostProxy {
    url: String,
    history_queries: Arc<AtomicUsize>,
    fail_history: Arc<AtomicBool>,
    hang_history: Arc<AtomicBool>,
}

impl OpenCostProxy {
    fn start(upstream: String) -> Self {
        let history_queries = Arc::new(AtomicUsize::new(0));
        let fail_history = Arc::new(AtomicBool::new(false));
        let hang_history = Arc::new(AtomicBool::new(false));
        let (count, fail, hang) = (
            history_queries.clone(),
            fail_history.clone(),
            hang_history.clone(),
        );
        let forward = move |req: HttpRequest| {
            let (upstream, count, fail, hang) =
                (upstream.clone(), count.clone(), fail.clone(), hang.clone());
            async move {
                let query = req.query_string().to_owned();
                if query.split('&').any(|kv| kv == "accumulate=false") {
                    count.fetch_add(1, Ordering::SeqCst);
                    if hang.load(Ordering::SeqCst) {
                        std::future::pending::<()>().await;
                    }
                    if fail.load(Ordering::SeqCst) {
                        return HttpResponse::InternalServerError().json(serde_json::json!({
                            "code": 500, "status": "error",
                            "message": "error computing allocation: prometheus query timed out"
                        }));
                    }
                }
                let answer = reqwest::get(format!("{upstream}{}?{query}", req.path()))
                    .await
                    .expect("the simulator answers");
                let status = answer.status().as_u16();
                let body = answer.bytes().await.expect("the simulator's body");
                HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap())
                    .content_type("application/json")
                    .body(body)
            }
        };
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = HttpServer::new(move || {
            App::new().default_service(actix_web::web::to(forward.clone()))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .unwrap()
        .run();
        tokio::spawn(server);
        Self {
            url,
            history_queries,
            fail_history,
            hang_history,
        }
    }

    fn history_queries(&self) -> usize {
        self.history_queries.load(Ordering::SeqCst)
    }
}

/// The value of the collector's metric `name` (`opsmesh_` prefixed), a counter or a gauge.
fn metric(ctx: &Context, name: &str) -> f64 {
    let family = ctx
        .registry
        .gather()
        .into_iter()
        .find(|f| f.name() == format!("opsmesh_{name}"))
        .unwrap_or_else(|| panic!("no metric {name}"));
    let m = &family.get_metric()[0];
    if family.get_field_type() == prometheus::proto::MetricType::COUNTER {
        m.get_counter().get_value()
    } else {
        m.get_gauge().get_value()
    }
}

/// `ml-team-a`'s usual sizes in a pass that read costs without error.
fn team_a_baselines(pass: &opsmesh_collector::Pass) -> BTreeMap<String, u32> {
    assert!(pass.errors.is_empty(), "{:?}", pass.errors);
    let records = by_key(&pass.records);
    let TelemetryRecord::Costs(team_a) = &records["cost/ml-team-a"] else {
        panic!("{:?}", records.keys())
    };
    // The costs themselves are read every pass.
    assert!((team_a.hourly_cost_usd - 27.0).abs() < 0.01, "{team_a:?}");
    team_a.baseline_replicas.clone()
}

fn usual_team_a() -> BTreeMap<String, u32> {
    BTreeMap::from([
        ("embedder-predictor".to_owned(), 1),
        ("gpt-oss-120b-predictor".to_owned(), 2),
    ])
}

#[tokio::test]
async fn the_opencost_history_is_read_once_per_refresh() {
    // Within the refresh (an hour: no pass outlasts it), every pass reuses the first read.
    let f = fixture().await;
    let opencost = OpenCostProxy::start(f.server.opencost_url());
    let t = tree_with_opencost(
        &f,
        &opencost.url,
        "history_refresh = \"1h\"\nhistory_max_age = \"2h\"\n",
        "",
    );
    let (hourly, _ctx, _bus) = collector(&t).await;
    for _ in 0..3 {
        assert_eq!(
            team_a_baselines(&hourly.collect_once().await),
            usual_team_a()
        );
    }
    assert_eq!(
        opencost.history_queries(),
        1,
        "the later passes reused the first's"
    );

    // Past the refresh, the next pass reads it again.
    let opencost = OpenCostProxy::start(f.server.opencost_url());
    let t = tree_with_opencost(&f, &opencost.url, "history_refresh = \"200ms\"\n", "");
    let (collector, ctx, _bus) = collector(&t).await;
    collector.collect_once().await;
    let first_done = Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        team_a_baselines(&collector.collect_once().await),
        usual_team_a()
    );
    assert_eq!(
        opencost.history_queries(),
        2,
        "read again after the refresh"
    );
    let age = metric(&ctx, "collector_opencost_history_age_seconds");
    assert!(
        age < first_done.elapsed().as_secs_f64(),
        "{age}: the second read, after the first pass ended"
    );
    assert_eq!(
        metric(&ctx, "collector_opencost_history_refresh_failures_total"),
        0.0
    );
}

#[tokio::test]
async fn a_failing_history_keeps_the_last_baselines_until_their_max_age() {
    let f = fixture().await;
    let opencost = OpenCostProxy::start(f.server.opencost_url());
    let t = tree_with_opencost(
        &f,
        &opencost.url,
        // The max age leaves room for slow passes under load before it is meant to pass.
        "history_refresh = \"300ms\"\nhistory_max_age = \"4s\"\n",
        "",
    );
    let (collector, ctx, _bus) = collector(&t).await;
    let failures = || metric(&ctx, "collector_opencost_history_refresh_failures_total");
    let read = Instant::now();
    assert_eq!(
        team_a_baselines(&collector.collect_once().await),
        usual_team_a()
    );

    opencost.fail_history.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let pass = collector.collect_once().await;
    assert_eq!(opencost.history_queries(), 2);
    assert_eq!(
        team_a_baselines(&pass),
        usual_team_a(),
        "the last read's kept"
    );
    assert_eq!(failures(), 1.0);
    let age = metric(&ctx, "collector_opencost_history_age_seconds");
    assert!((0.4..4.0).contains(&age), "{age}");

    // Past history_max_age the stale sizes are dropped; the costs are still reported.
    tokio::time::sleep_until((read + Duration::from_millis(4300)).into()).await;
    let pass = collector.collect_once().await;
    assert_eq!(opencost.history_queries(), 3);
    assert_eq!(team_a_baselines(&pass), BTreeMap::new());
    assert_eq!(failures(), 2.0);
    assert!(metric(&ctx, "collector_opencost_history_age_seconds") >= 4.0);

    opencost.fail_history.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        team_a_baselines(&collector.collect_once().await),
        usual_team_a()
    );
    assert_eq!(opencost.history_queries(), 4);
    assert_eq!(failures(), 2.0);
}

#[tokio::test]
async fn a_hanging_history_counts_as_failed_and_waits_for_the_refresh() {
    let f = fixture().await;
    let opencost = OpenCostProxy::start(f.server.opencost_url());
    let t = tree_with_opencost(&f, &opencost.url, "history_refresh = \"1h\"\n", "");
    let (collector, ctx, _bus) = collector(&t).await;
    opencost.hang_history.store(true, Ordering::SeqCst);
    // The HTTP client's bound (source_timeout) fails the history read, or the source's own
    // bound (the same) abandons it, whichever fires first: the read counts as failed either way.
    let pass = collector.collect_once().await;
    assert!(
        pass.errors
            .iter()
            .all(|(source, e)| source == "costs" && e.contains("timed out")),
        "{:?}",
        pass.errors
    );
    assert_eq!(
        metric(&ctx, "collector_opencost_history_refresh_failures_total"),
        1.0
    );

    // The slow history is not asked again before the refresh; the costs are read without it.
    opencost.hang_history.store(false, Ordering::SeqCst);
    assert_eq!(
        team_a_baselines(&collector.collect_once().await),
        BTreeMap::new()
    );
    assert_eq!(opencost.history_queries(), 1);
}
