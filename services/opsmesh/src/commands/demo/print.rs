//! What the demo prints of each incident: its timeline as Splunk indexes it, the numbers
//! that decided it (memory step, projected saving and overage, the YAML fix), its outcome and
//! the search that shows it in Splunk; in colour on a terminal.

use std::{io::IsTerminal, path::Path};

use serde_json::Value;

use opsmesh_proto::Target;

use crate::harness::Verdict;

/// Colour when stdout is a terminal and `NO_COLOR` is unset (<https://no-color.org>).
#[derive(Debug, Clone, Copy)]
pub(super) struct Style {
    colour: bool,
}

impl Style {
    pub(super) fn detect() -> Self {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Self {
            colour: std::io::stdout().is_terminal() && !no_color,
        }
    }

    fn paint(self, sgr: &str, text: &str) -> String {
        if self.colour {
            format!("\x1b[{sgr}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }

    pub(super) fn bold(self, text: &str) -> String {
        self.paint("1", text)
    }

    fn dim(self, text: &str) -> String {
        self.paint("2", text)
    }

    fn cyan(self, text: &str) -> String {
        self.paint("36", text)
    }

    fn yellow(self, text: &str) -> String {
        self.paint("33", text)
    }

    fn outcome(self, outcome: &str) -> String {
        match outcome {
            "resolved" | "cleared" => self.paint("1;32", outcome),
            "failed" | "none" => self.paint("1;31", outcome),
            _ => self.paint("1;33", outcome),
        }
    }
}

/// The HEC events in `path` (one JSON object a line), as Splunk would index them.
pub(super) fn read_events(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The incidents the events belong to, in order of first appearance.
pub(super) fn incident_ids(events: &[Value]) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    for id in events
        .iter()
        .filter_map(|e| e["event"]["incident_id"].as_str())
    {
        if !ids.iter().any(|known| known == id) {
            ids.push(id.to_owned());
        }
    }
    ids
}

/// The Splunk search that shows one incident's whole story.
pub(super) fn spl(events: &[Value], incident: &str) -> String {
    let index = events
        .iter()
        .find_map(|e| e["index"].as_str())
        .unwrap_or("opsmesh");
    format!("index={index} incident_id={incident} | sort _time")
}

/// Prints the incident steps Splunk would show for `index=opsmesh incident_id=<id>`, each
/// diagnosis followed by the numbers that decided it.
pub(super) fn timeline(style: Style, events: &[Value]) {
    for event in events {
        let payload = &event["event"]["payload"];
        let line = match event["sourcetype"].as_str().unwrap_or_default() {
            "opsmesh:alert" => format!(
                "{} {:?} on {} ({})",
                style.cyan("alert     "),
                payload["name"].as_str().unwrap_or_default(),
                target(&payload["entity"]),
                payload["source_kind"].as_str().unwrap_or_default()
            ),
            "opsmesh:diagnosis" => format!(
                "{} {} (confidence {:.2}, {} evidence, runbook {} / {:?}): {}",
                style.cyan("diagnosis "),
                style.bold(payload["root_cause"].as_str().unwrap_or_default()),
                payload["confidence"].as_f64().unwrap_or_default(),
                payload["evidence"].as_array().map_or(0, Vec::len),
                payload["runbook"]["id"].as_str().unwrap_or("-"),
                payload["runbook"]["section"].as_str().unwrap_or("-"),
                payload["summary"].as_str().unwrap_or_default()
            ),
            "opsmesh:remediation" => format!(
                "{} {:<17} {}{}",
                style.cyan(&format!(
                    "ledger #{:<2}",
                    payload["ledger"]["seq"].as_u64().unwrap_or_default()
                )),
                payload["state"].as_str().unwrap_or_default(),
                payload["action"]["kind"]
                    .as_str()
                    .map(|k| format!(
                        "{k} {}: ",
                        payload["action"]["target"].as_str().unwrap_or_default()
                    ))
                    .unwrap_or_default(),
                payload["reason"].as_str().unwrap_or_default()
            ),
            _ => continue,
        };
        let time = event["event"]["occurred_at"].as_str().unwrap_or_default();
        println!("   {} {line}", style.dim(time.get(11..23).unwrap_or(time)));
        if event["sourcetype"] == "opsmesh:diagnosis" {
            decisive_numbers(style, payload);
        }
    }
}

/// What decided a diagnosis: the memory step of a limit patch, the overage and projected
/// saving (Δ = k·r·t) of a cost finding, and the exact YAML fix for developers.
fn decisive_numbers(style: Style, diagnosis: &Value) {
    let label = |name: &str| style.yellow(&format!("{name:<10}"));
    for action in diagnosis["recommended_actions"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let params = &action["params"];
        if let Some(new) = params["memory_limit"].as_str() {
            println!(
                "                {} {} → {} ({} {})",
                label("memory"),
                params["previous_memory_limit"].as_str().unwrap_or("unset"),
                style.bold(new),
                action["kind"].as_str().unwrap_or_default(),
                action["target"].as_str().unwrap_or_default()
            );
        }
    }
    let explanation = diagnosis["explanation"].as_str().unwrap_or_default();
    for sentence in explanation.split(". ") {
        let name = if sentence.starts_with("New limit") {
            "step"
        } else if sentence.contains("% over budget") || sentence.contains("Δ = k·r·t") {
            "cost"
        } else {
            continue;
        };
        println!(
            "                {} {}",
            label(name),
            sentence.trim_end_matches('.')
        );
    }
    if let Some(yaml) = diagnosis["developer_fix"].as_str() {
        println!("                {}", label("fix (YAML)"));
        for line in yaml.lines() {
            println!("                  {line}");
        }
    }
}

pub(super) fn outcome(style: Style, verdict: &Verdict) {
    let actions: Vec<String> = verdict
        .actions
        .iter()
        .map(|a| format!("{} {}", a.kind, a.target))
        .collect();
    println!(
        "   outcome: {} after {} (virtual time); actions: {}; {} events written to HEC",
        style.outcome(verdict.outcome.as_deref().unwrap_or("none")),
        verdict.time_to_outcome.as_deref().unwrap_or("-"),
        if actions.is_empty() {
            "none".into()
        } else {
            actions.join(", ")
        },
        verdict.hec_events
    );
    if let Some(error) = &verdict.error {
        println!("   error: {error}");
    }
}

fn target(entity: &Value) -> String {
    let part = |k: &str| entity[k].as_str().unwrap_or_default().to_owned();
    match entity["kind"].as_str() {
        Some("namespace") => Target::Namespace(part("namespace")).to_string(),
        Some(kind) => Target::namespaced(kind, &part("namespace"), &part("name")).to_string(),
        None => part("namespace"),
    }
}
