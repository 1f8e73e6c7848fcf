use k8s_openapi::api::core::v1::ContainerStatus;
use serde_json::json;

use super::{costs::baselines, *};

fn status(last_finished: &str, current: Option<&str>) -> ContainerStatus {
    let mut cs = json!({
        "name": "kserve-container", "image": "m:1", "imageID": "", "ready": true, "restartCount": 1,
        "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137, "finishedAt": last_finished}},
        "state": {"running": {"startedAt": last_finished}},
    });
    if let Some(at) = current {
        cs["state"] = json!({"terminated": {"reason": "Error", "exitCode": 1, "finishedAt": at}});
    }
    serde_json::from_value(cs).unwrap()
}

#[test]
fn an_old_termination_is_not_evidence_now() {
    let since = "2026-12-05T12:00:00Z".parse().unwrap();
    let recent = status("2026-12-05T12:30:00Z", None);
    assert_eq!(
        recent_termination(&recent, since)
            .map(|(_, r)| r)
            .as_deref(),
        Some("OOMKilled")
    );
    let last_week = status("2026-11-28T12:00:00Z", None);
    assert_eq!(recent_termination(&last_week, since), None);
    // The current state's termination is the newer one.
    let both = status("2026-12-05T12:30:00Z", Some("2026-12-05T12:40:00Z"));
    assert_eq!(
        recent_termination(&both, since).map(|(_, r)| r).as_deref(),
        Some("Error")
    );
}

fn pod(ns: &str, controller: &str, minutes: f64, start: &str, end: &str) -> serde_json::Value {
    json!({
        "properties": {"namespace": ns, "controller": controller, "pod": format!("{controller}-{minutes}")},
        "window": {"start": start, "end": end},
        "minutes": minutes,
    })
}

#[test]
fn the_usual_size_is_the_median_of_replicas_per_step() {
    let step = |hour: u32, pods: &[f64]| {
        let start = format!("2026-12-05T{hour:02}:00:00Z");
        let end = format!("2026-12-05T{:02}:00:00Z", hour + 1);
        let set: serde_json::Map<String, serde_json::Value> = pods
            .iter()
            .enumerate()
            .map(|(i, m)| (format!("p{i}"), pod("a", "big-predictor", *m, &start, &end)))
            .collect();
        serde_json::Value::Object(set)
    };
    let sets = [
        // Two pods all hour; a pod replaced mid-hour counts once.
        step(0, &[60.0, 60.0]),
        step(1, &[60.0, 30.0, 30.0]),
        step(2, &[60.0, 60.0]),
        // The spike: 8 for the last hour only.
        step(3, &[60.0; 8]),
    ];
    let usual = baselines(&sets);
    assert_eq!(usual["a"]["big-predictor"], 2, "{usual:?}");
    assert!(baselines(&[]).is_empty());
}
