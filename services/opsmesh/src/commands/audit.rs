//! `opsmesh audit verify`: checks the remediator's hash-chained audit ledger, read from
//! Kafka (`opsmesh.remediations.v1`) or from a JSON-lines export (envelopes as `opsmesh tail`
//! prints them, HEC events, or Splunk results with `_raw`), and names the first record that
//! breaks each incident's chain.

use std::{path::Path, path::PathBuf, process::ExitCode, time::Duration};

use clap::{Args, Subcommand};

use opsmesh_proto::{Envelope, remediation::Remediation, topics};
use opsmesh_remediator::ledger::{self, Report};
use opsmesh_runtime::{ConfigTree, bus, launcher, telemetry};

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Verify every incident's chain; exit 1 when any record was edited, removed, inserted or
    /// reordered.
    Verify(VerifyArgs),
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// JSON-lines export to read instead of Kafka (`-` for stdin).
    #[arg(long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Topic to read from the beginning (with the configured bus).
    #[arg(long, default_value = topics::REMEDIATIONS)]
    pub topic: String,
    /// Reading Kafka stops after no record arrived for this long.
    #[arg(long, default_value = "5s", value_parser = humantime_duration)]
    pub idle: Duration,
    /// Only this incident.
    #[arg(long)]
    pub incident: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

fn humantime_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n.parse().map_err(|_| format!("{s:?} is not a duration"))?;
    Ok(match unit {
        "ms" => Duration::from_millis(n),
        "s" | "" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        _ => return Err(format!("{s:?} is not a duration (ms, s, m)")),
    })
}

pub fn run(config: Option<&Path>, command: AuditCommand) -> ExitCode {
    let AuditCommand::Verify(args) = command;
    let records = match &args.file {
        Some(path) => {
            let text = if path.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())
            } else {
                std::fs::read_to_string(path)
            };
            match text
                .map_err(|e| format!("{}: {e}", path.display()))
                .and_then(|t| {
                    ledger::parse_jsonl(&t).map_err(|e| format!("{}: {e}", path.display()))
                }) {
                Ok(r) => r,
                Err(e) => return launcher::fail(&e),
            }
        }
        None => match read_topic(config, &args) {
            Ok(r) => r,
            Err(e) => return launcher::fail(&e),
        },
    };
    let records: Vec<Envelope<Remediation>> = records
        .into_iter()
        .filter(|r| {
            args.incident
                .as_ref()
                .is_none_or(|i| r.incident_id.as_ref() == Some(i))
        })
        .collect();
    let report = ledger::verify(&records);
    print(&report, args.json);
    if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn print(report: &Report, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(report).expect("reports serialize")
        );
        return;
    }
    println!(
        "{} record(s), {} incident(s), {} redelivered duplicate(s)",
        report.records, report.incidents, report.duplicates
    );
    if report.ok() {
        println!("OK: every chain is intact");
    }
    for b in &report.breaks {
        println!(
            "BROKEN incident {}: record #{} (envelope {}, seq {}) {:?}: {}",
            b.incident_id, b.index, b.envelope_id, b.seq, b.kind, b.detail
        );
    }
}

fn read_topic(
    config: Option<&Path>,
    args: &VerifyArgs,
) -> Result<Vec<Envelope<Remediation>>, String> {
    let mut settings = ConfigTree::load(config)
        .and_then(|t| t.settings())
        .map_err(|e| e.to_string())?;
    telemetry::init(&settings.log);
    let kafka = &mut settings.bus.kafka;
    kafka
        .client
        .insert("auto.offset.reset".into(), "earliest".into());
    kafka
        .client
        .insert("enable.auto.commit".into(), "false".into());
    let group = format!("opsmesh-audit-{}", uuid::Uuid::now_v7());
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(async {
        let bus = bus::connect(&settings.bus, "opsmesh-audit").map_err(|e| e.to_string())?;
        let mut subscription = bus
            .subscribe(&group, &[&args.topic])
            .await
            .map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        while let Ok(next) = tokio::time::timeout(args.idle, subscription.recv()).await {
            let message = next.map_err(|e| e.to_string())?;
            match Envelope::<Remediation>::from_slice(&message.payload) {
                Ok(e) => out.push(e),
                Err(e) => tracing::warn!(
                    partition = message.partition,
                    offset = message.offset,
                    error = %e,
                    "not a remediation record; skipped"
                ),
            }
        }
        Ok(out)
    })
}
