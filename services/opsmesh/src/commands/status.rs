//! `opsmesh status`: the mesh's health at a glance, from each process's admin endpoints
//! (`http.admin_listen`): readiness (`/readyz`), and from `/metrics` the consumer lag, the
//! open incidents by state, the sizes of the DLQs of the topics it consumes (as the bus
//! reports them, so they survive restarts), what it dead-lettered since it started, and the
//! HEC backlog.

use std::{collections::BTreeMap, path::Path, process::ExitCode, time::Duration};

use clap::Args;
use serde::Deserialize;

use opsmesh_runtime::{ConfigTree, launcher};

/// Where `opsmesh up` and `opsmesh demo` serve health and metrics by default.
const DEFAULT_ADMIN: &str = "127.0.0.1:9090";

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Admin endpoint of a process (its http.admin_listen), once per process; default: the
    /// configured http.admin_listen, else http://127.0.0.1:9090.
    #[arg(long = "url", value_name = "URL")]
    pub urls: Vec<String>,
    /// How long each endpoint may take to answer.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
enum StatusError {
    #[error("{url} did not answer: {source}")]
    Unreachable { url: String, source: reqwest::Error },
    #[error("{url} answered {status}, not readiness JSON: {body}")]
    NotReadiness {
        url: String,
        status: u16,
        body: String,
    },
}

#[derive(Debug, Deserialize)]
struct Readiness {
    ready: bool,
    checks: Vec<CheckResult>,
}

#[derive(Debug, Deserialize)]
struct CheckResult {
    name: String,
    ok: bool,
    error: Option<String>,
}

/// One process's answers.
struct Endpoint {
    readiness: Readiness,
    metrics: Metrics,
}

pub fn run(config: Option<&Path>, args: StatusArgs) -> ExitCode {
    let urls = match endpoints(config, args.urls) {
        Ok(urls) => urls,
        Err(err) => return launcher::fail(&err),
    };
    let http = match reqwest::Client::builder().timeout(args.timeout).build() {
        Ok(http) => http,
        Err(err) => return launcher::fail(&err),
    };
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let answers = runtime.block_on(ask_all(&http, &urls));
    let mut healthy = true;
    for (url, answer) in urls.iter().zip(answers) {
        println!("{url}");
        match answer {
            Ok(endpoint) => {
                healthy &= endpoint.readiness.ready;
                print_endpoint(&endpoint);
            }
            Err(err) => {
                healthy = false;
                println!("   error       {err}");
            }
        }
    }
    if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The admin URLs asked: those given, else the configured `http.admin_listen`.
fn endpoints(
    config: Option<&Path>,
    given: Vec<String>,
) -> Result<Vec<String>, opsmesh_runtime::ConfigError> {
    if !given.is_empty() {
        return Ok(given
            .into_iter()
            .map(|u| u.trim_end_matches('/').to_owned())
            .collect());
    }
    let tree = ConfigTree::load(config)?;
    let admin = if tree.contains("http.admin_listen") {
        tree.settings()?.http.admin_listen.to_string()
    } else {
        DEFAULT_ADMIN.to_owned()
    };
    Ok(vec![format!("http://{admin}")])
}

async fn ask_all(http: &reqwest::Client, urls: &[String]) -> Vec<Result<Endpoint, StatusError>> {
    let mut answers = Vec::with_capacity(urls.len());
    let asks: Vec<_> = urls
        .iter()
        .map(|url| tokio::spawn(ask(http.clone(), url.clone())))
        .collect();
    for ask in asks {
        answers.push(ask.await.expect("status task"));
    }
    answers
}

async fn ask(http: reqwest::Client, url: String) -> Result<Endpoint, StatusError> {
    let unreachable = |source| StatusError::Unreachable {
        url: url.clone(),
        source,
    };
    // `/readyz` answers 503 with the same JSON when not ready.
    let response = http
        .get(format!("{url}/readyz"))
        .send()
        .await
        .map_err(unreachable)?;
    let status = response.status().as_u16();
    let body = response.text().await.map_err(unreachable)?;
    let readiness = serde_json::from_str(&body).map_err(|_| StatusError::NotReadiness {
        url: url.clone(),
        status,
        body: body.chars().take(200).collect(),
    })?;
    let metrics = http
        .get(format!("{url}/metrics"))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(unreachable)?
        .text()
        .await
        .map_err(unreachable)?;
    Ok(Endpoint {
        readiness,
        metrics: Metrics::parse(&metrics),
    })
}

fn print_endpoint(endpoint: &Endpoint) {
    let checks: Vec<String> = endpoint
        .readiness
        .checks
        .iter()
        .map(|c| match &c.error {
            Some(error) if !c.ok => format!("{} FAILING: {error}", c.name),
            _ => format!("{} ok", c.name),
        })
        .collect();
    println!(
        "   ready       {} ({})",
        if endpoint.readiness.ready {
            "yes"
        } else {
            "NO"
        },
        checks.join(", ")
    );
    let m = &endpoint.metrics;
    println!(
        "   lag         {}",
        listing(
            &m.sum_by("opsmesh_bus_consumer_lag", "group"),
            "no consumer groups"
        )
    );
    println!("   DLQ         {}", dlq_sizes(m));
    println!(
        "   sent to DLQ {} since this process started, by topic",
        listing(
            &m.sum_by("opsmesh_bus_dead_lettered_total", "topic"),
            "none"
        )
    );
    // The reporter is the process that writes to HEC; only it knows the incidents.
    if !m.has("opsmesh_reporter_hec_unsent_events") {
        println!("   incidents   - (no reporter in this process)");
        println!("   HEC backlog - (no reporter in this process)");
        return;
    }
    let open = if m.has("opsmesh_reporter_open_incidents") {
        format!(
            "open: {}",
            listing(
                &m.sum_by("opsmesh_reporter_open_incidents", "state"),
                "none"
            )
        )
    } else {
        "- (this reporter does not export opsmesh_reporter_open_incidents)".into()
    };
    println!("   incidents   {open}");
    println!(
        "   HEC backlog {} events unsent, oldest {:.0} s",
        m.sum("opsmesh_reporter_hec_unsent_events"),
        m.sum("opsmesh_reporter_hec_oldest_unsent_seconds")
    );
}

/// The DLQs' sizes the process last asked the bus for: the messages no replay has put back
/// yet, by DLQ, and every message they hold (replayed ones stay until retention).
fn dlq_sizes(m: &Metrics) -> String {
    if !m.has("opsmesh_bus_dlq_messages") {
        return "- (not measured here: this process consumes no topic, or bus.dlq.size_interval \
                is 0s)"
            .into();
    }
    let held = m.sum("opsmesh_bus_dlq_messages");
    if held == 0.0 {
        return "none".into();
    }
    let waiting = if m.has("opsmesh_bus_dlq_unreplayed_messages") {
        listing(
            &m.sum_by("opsmesh_bus_dlq_unreplayed_messages", "topic"),
            "none",
        )
    } else {
        "unknown (the replay group's offsets could not be read; see the process's log)".into()
    };
    format!("not replayed {waiting}; held {held} (replayed ones included)")
}

/// The total and its non-zero parts (`3 (a 1, b 2)`), or `none` when there is nothing.
fn listing(values: &BTreeMap<String, f64>, none: &str) -> String {
    if values.is_empty() {
        return none.to_owned();
    }
    let total: f64 = values.values().sum();
    let parts: Vec<String> = values
        .iter()
        .filter(|(_, v)| **v != 0.0)
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    if parts.is_empty() {
        total.to_string()
    } else {
        format!("{total} ({})", parts.join(", "))
    }
}

/// Samples of a Prometheus text exposition: name, labels, value.
struct Metrics {
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Metrics {
    fn parse(text: &str) -> Self {
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                let value: f64 = value.parse().ok()?;
                let (name, labels) = match series.split_once('{') {
                    Some((name, rest)) => (name, parse_labels(rest.trim_end_matches('}'))),
                    None => (series, BTreeMap::new()),
                };
                Some((name.to_owned(), labels, value))
            })
            .collect();
        Self { samples }
    }

    fn has(&self, name: &str) -> bool {
        self.samples.iter().any(|(n, _, _)| n == name)
    }

    fn sum(&self, name: &str) -> f64 {
        self.samples
            .iter()
            .filter(|(n, _, _)| n == name)
            .map(|(_, _, v)| v)
            .sum()
    }

    /// The samples of `name` summed by the value of `label`.
    fn sum_by(&self, name: &str, label: &str) -> BTreeMap<String, f64> {
        let mut sums = BTreeMap::new();
        for (_, labels, value) in self.samples.iter().filter(|(n, _, _)| n == name) {
            let key = labels.get(label).cloned().unwrap_or_default();
            *sums.entry(key).or_insert(0.0) += value;
        }
        sums
    }
}

/// `a="1",b="x"` (label values never hold `",` in these metrics).
fn parse_labels(text: &str) -> BTreeMap<String, String> {
    text.split("\",")
        .filter_map(|pair| {
            let (key, value) = pair.split_once("=\"")?;
            Some((
                key.trim().to_owned(),
                value.trim_end_matches('"').to_owned(),
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_summed_by_label() {
        let m = Metrics::parse(
            "# HELP opsmesh_bus_consumer_lag x\nopsmesh_bus_consumer_lag{group=\"g1\",topic=\"t\",partition=\"0\"} 2\n\
             opsmesh_bus_consumer_lag{group=\"g1\",topic=\"t\",partition=\"1\"} 3\n\
             opsmesh_bus_consumer_lag{group=\"g2\",topic=\"t\",partition=\"0\"} 0\nopsmesh_reporter_hec_unsent_events 7\n",
        );
        let lag = m.sum_by("opsmesh_bus_consumer_lag", "group");
        assert_eq!((lag["g1"], lag["g2"]), (5.0, 0.0));
        assert_eq!(m.sum("opsmesh_reporter_hec_unsent_events"), 7.0);
        assert_eq!(listing(&lag, "none"), "5 (g1 5)");
        assert_eq!(listing(&BTreeMap::from([("g".into(), 0.0)]), "none"), "0");
        assert_eq!(listing(&BTreeMap::new(), "none"), "none");
        assert!(!m.has("opsmesh_reporter_open_incidents"));
        assert!(dlq_sizes(&m).starts_with("- (not measured here"));
    }

    #[test]
    fn dlq_sizes_show_what_waits_by_dlq_and_what_is_held() {
        let m = Metrics::parse(
            "# TYPE opsmesh_bus_dlq_messages gauge\n\
             opsmesh_bus_dlq_messages{topic=\"opsmesh.alerts.v1.dlq\"} 3\n\
             opsmesh_bus_dlq_messages{topic=\"opsmesh.telemetry.v1.dlq\"} 0\n\
             opsmesh_bus_dlq_unreplayed_messages{topic=\"opsmesh.alerts.v1.dlq\"} 2\n\
             opsmesh_bus_dlq_unreplayed_messages{topic=\"opsmesh.telemetry.v1.dlq\"} 0\n",
        );
        assert_eq!(
            dlq_sizes(&m),
            "not replayed 2 (opsmesh.alerts.v1.dlq 2); held 3 (replayed ones included)"
        );
        let empty = Metrics::parse(
            "opsmesh_bus_dlq_messages{topic=\"opsmesh.alerts.v1.dlq\"} 0\n\
             opsmesh_bus_dlq_unreplayed_messages{topic=\"opsmesh.alerts.v1.dlq\"} 0\n",
        );
        assert_eq!(dlq_sizes(&empty), "none");
        let held_only =
            Metrics::parse("opsmesh_bus_dlq_messages{topic=\"opsmesh.alerts.v1.dlq\"} 3\n");
        assert!(
            dlq_sizes(&held_only).starts_with("not replayed unknown ("),
            "{}",
            dlq_sizes(&held_only)
        );
    }
}
