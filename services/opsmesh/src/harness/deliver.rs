//! Alert deliveries: when each alert of a scenario is sent, and sending it as Splunk (alert
//! action, webhook) or Alertmanager would, signed or authenticated as the receiver expects.

use std::time::Duration;

use serde_json::{Value, json};

use opsmesh_proto::alert::AlertStatus;
use opsmesh_sim::{
    Scenario,
    scenario::{AlertSpec, Via},
};

use super::{SOURCE, files::Files};

/// Every delivery of every alert, by virtual time.
pub(super) fn schedule(scenario: &Scenario) -> Vec<(Duration, usize, u32)> {
    let mut out = Vec::new();
    for (i, a) in scenario.alerts.iter().enumerate() {
        let every = a
            .value
            .every
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(10));
        for n in 0..a.value.repeat {
            out.push((a.value.at.0 + every * n, i, n));
        }
    }
    out.sort_by_key(|(t, i, n)| (*t, *i, *n));
    out
}

/// Posts the `n`th delivery of `alert` to the receiver at `receiver`.
pub(super) async fn deliver(
    http: &reqwest::Client,
    receiver: std::net::SocketAddr,
    files: &Files,
    alert: &AlertSpec,
    n: u32,
    virtual_now: chrono::DateTime<chrono::Utc>,
    starts_at: chrono::DateTime<chrono::Utc>,
) -> Result<(), String> {
    let rows = alert.string_rows();
    let ts = virtual_now.timestamp();
    let sid = format!(
        "scheduler__admin__opsmesh__RMD5{:08x}_at_{ts}_{n}",
        fxhash(&alert.search_name)
    );
    let link = format!("https://splunk.example.com:8000/app/opsmesh/@go?sid={sid}");
    let (url, body, auth): (String, Value, Option<(&str, String)>) = match alert.via {
        Via::SplunkAlertAction => (
            format!("http://{receiver}/v1/alerts/splunk"),
            json!({"sid": sid, "search_name": alert.search_name, "app": "opsmesh", "owner": "admin", "results_link": link, "result": rows[0], "rows": rows}),
            None,
        ),
        Via::SplunkWebhook => (
            format!(
                "http://{receiver}/v1/alerts/splunk/{SOURCE}/{}",
                files.path_token
            ),
            json!({"sid": sid, "search_name": alert.search_name, "app": "opsmesh", "owner": "admin", "results_link": link, "result": rows[0]}),
            None,
        ),
        Via::Alertmanager => {
            let mut labels = serde_json::Map::new();
            for (k, v) in &rows[0] {
                labels.insert(
                    k.clone(),
                    json!(
                        v.as_str()
                            .map(str::to_owned)
                            .unwrap_or_else(|| v.to_string())
                    ),
                );
            }
            labels.insert("alertname".into(), json!(alert.search_name));
            let stamp = |t: chrono::DateTime<chrono::Utc>| {
                t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            };
            // As Alertmanager sends it: a resolved alert keeps the episode's start and says
            // when it ended; a firing one has no end (Go's zero time).
            let (status, ends) = match alert.status {
                AlertStatus::Firing => ("firing", "0001-01-01T00:00:00Z".to_owned()),
                AlertStatus::Resolved => ("resolved", stamp(virtual_now)),
            };
            (
                format!("http://{receiver}/v1/alerts/alertmanager"),
                json!({
                    "version": "4", "groupKey": format!("{{}}:{{alertname=\"{}\"}}", alert.search_name), "truncatedAlerts": 0,
                    "status": status, "receiver": "opsmesh", "groupLabels": {"alertname": alert.search_name},
                    "commonLabels": labels, "commonAnnotations": {}, "externalURL": "http://alertmanager.example.com",
                    "alerts": [{"status": status, "labels": labels, "annotations": {}, "startsAt": stamp(starts_at), "endsAt": ends, "generatorURL": "http://prometheus.example.com/graph"}],
                }),
                Some(("authorization", format!("Bearer {}", files.bearer))),
            )
        }
    };
    let bytes = serde_json::to_vec(&body).map_err(|e| e.to_string())?;
    let mut request = http.post(&url).header("content-type", "application/json");
    if alert.via == Via::SplunkAlertAction {
        let signature =
            opsmesh_alert_receiver::sign(&files.secret, chrono::Utc::now().timestamp(), &bytes);
        request = request.header(opsmesh_alert_receiver::SIGNATURE_HEADER, signature);
    }
    if let Some((name, value)) = auth {
        request = request.header(name, value);
    }
    let response = request
        .body(bytes)
        .send()
        .await
        .map_err(|e| format!("posting the alert: {e}"))?;
    let status = response.status();
    if status.as_u16() != 202 {
        let text = response.text().await.unwrap_or_default();
        return Err(format!("the receiver answered {status}: {text}"));
    }
    Ok(())
}

fn fxhash(s: &str) -> u32 {
    s.bytes().fold(0x811c9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x01000193)
    })
}
