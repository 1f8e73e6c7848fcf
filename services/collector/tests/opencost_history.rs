//! The collector's OpenCost history cache: the allocation history (24 sets) is read at most
//! once per `history_refresh`, and a failed or hanging read keeps the last baselines until
//! `history_max_age`. A binary of its own: its waits must not slow the timing-bound tests of
//! collector.rs running beside them.

mod support;

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer};

use opsmesh_proto::telemetry::TelemetryRecord;
use opsmesh_runtime::Context;
use support::{by_key, collector, fixture, tree_with_opencost};

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
