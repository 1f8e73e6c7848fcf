//! OpenCost's allocation history over HTTP: `step` with `accumulate=false` answers one set per
//! step, on the virtual clock, reaching back before the simulation began for the initial
//! state (it ran before); `accumulate=true` sums the steps into one set.

mod common;

use std::time::Duration;

use opsmesh_sim::SimConfig;
use serde_json::Value;

const SPIKE: &str = r#"
name: spike
state:
  namespaces: [{name: ml-team-a, hourly_budget_usd: 40}]
  inference_services:
    - {namespace: ml-team-a, name: gpt-oss-120b, replicas: 2, gpu: 1, hourly_cost_usd: 12.5}
faults:
  - {at: 30m, kind: cost_spike, target: inferenceservice/ml-team-a/gpt-oss-120b, params: {replicas: 8}}
expect: {}
"#;

async fn get(server: &opsmesh_sim::SimServer, query: &str) -> (u16, Value) {
    let response = reqwest::get(format!(
        "{}/allocation/compute?{query}",
        server.opencost_url()
    ))
    .await
    .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// Pod-minutes of the model over the step, per step minute: the replicas it ran.
fn replicas(set: &Value) -> f64 {
    let pods: Vec<&Value> = set
        .as_object()
        .unwrap()
        .values()
        .filter(|a| a["properties"]["controller"] == "gpt-oss-120b-predictor")
        .collect();
    let Some(first) = pods.first() else {
        return 0.0;
    };
    let start =
        chrono::DateTime::parse_from_rfc3339(first["window"]["start"].as_str().unwrap()).unwrap();
    let end =
        chrono::DateTime::parse_from_rfc3339(first["window"]["end"].as_str().unwrap()).unwrap();
    let minutes: f64 = pods.iter().map(|a| a["minutes"].as_f64().unwrap()).sum();
    minutes / ((end - start).num_seconds() as f64 / 60.0)
}

#[tokio::test]
async fn history_in_steps_on_the_virtual_clock() {
    let r = common::start(SPIKE, SimConfig::default()).await;
    r.sim.advance(Duration::from_secs(2 * 3600));
    let (code, body) = get(
        &r.server,
        "window=6h&aggregate=pod&step=1h&accumulate=false",
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let sets = body["data"].as_array().unwrap();
    assert_eq!(sets.len(), 6, "one set per step");
    let per_step: Vec<f64> = sets.iter().map(replicas).collect();
    let rounded: Vec<f64> = per_step.iter().map(|r| (r * 10.0).round() / 10.0).collect();
    // Four hours of the initial state's history, the hour of the spike at 30m, then 8.
    assert_eq!(rounded, [2.0, 2.0, 2.0, 2.0, 5.0, 8.0], "{per_step:?}");
    let first_start = sets[0].as_object().unwrap().values().next().unwrap()["window"]["start"]
        .as_str()
        .unwrap()
        .to_owned();
    let expected = r.sim.clock().at(Duration::ZERO) - chrono::Duration::hours(4);
    assert_eq!(
        first_start,
        expected.format("%Y-%m-%dT%H:%M:%SZ").to_string()
    );

    // Accumulated: one set, the sum of the steps.
    let (_, steps) = get(
        &r.server,
        "window=6h&aggregate=namespace&step=1h&accumulate=false",
    )
    .await;
    let stepped: f64 = steps["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["ml-team-a"]["totalCost"].as_f64().unwrap())
        .sum();
    let (_, whole) = get(
        &r.server,
        "window=6h&aggregate=namespace&step=1h&accumulate=true",
    )
    .await;
    assert_eq!(whole["data"].as_array().unwrap().len(), 1);
    let total = whole["data"][0]["ml-team-a"]["totalCost"].as_f64().unwrap();
    assert!((total - stepped).abs() < 0.01, "{total} vs {stepped}");
    // 4h x 2 + 0.5h x 2 + 1.5h x 8 replicas at 12.5/h.
    assert!((total - 12.5 * (8.0 + 1.0 + 12.0)).abs() < 0.01, "{total}");

    let (code, body) = get(&r.server, "window=6h&step=0s").await;
    assert_eq!(code, 400);
    assert!(body["message"].as_str().unwrap().contains("step"), "{body}");
    let (code, body) = get(&r.server, "window=6h&accumulate=hourly").await;
    assert_eq!(code, 400);
    assert!(
        body["message"].as_str().unwrap().contains("accumulate"),
        "{body}"
    );
}
