//! `opsmesh audit verify`: checks the remediator's audit ledger — each incident's hash chain,
//! the remediator's signature on every record (with `--keys`), signed chain heads against a
//! chain cut short — read from Kafka (`opsmesh.remediations.v1` and
//! `opsmesh.ledger-heads.v1`, up to their end) and/or from a JSON-lines export (envelopes as
//! `opsmesh tail` prints them, HEC events, or Splunk results with `_raw`). Given both, it also
//! compares the two copies and names where they first differ.

use std::{path::Path, path::PathBuf, process::ExitCode};

use clap::{Args, Subcommand};

use opsmesh_proto::{Envelope, topics};
use opsmesh_remediator::ledger::{self, Checks, Difference, Exported, Report};
use opsmesh_runtime::{
    ConfigTree,
    bus::{self, ReadEvent},
    launcher,
    signing::KeyRing,
    telemetry,
};

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Verify every incident's chain; exit 1 when any record was edited, removed, inserted,
    /// reordered, unsigned or mis-signed, a chain is shorter than a signed head says, or the
    /// Kafka copy and the export differ.
    Verify(VerifyArgs),
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// JSON-lines export to read (`-` for stdin), e.g. from Splunk:
    /// `index=opsmesh sourcetype=opsmesh:remediation | table _raw`. Alone, it is verified
    /// instead of Kafka; with --kafka, both are verified and compared.
    #[arg(long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Read Kafka as well as --file, and compare the two copies.
    #[arg(long)]
    pub kafka: bool,
    /// The remediator's public key(s) (SPKI PEM, several during a rotation): every record
    /// must be signed by one of them, and signed chain heads are checked. Without it only
    /// the hash chains are checked.
    #[arg(long, value_name = "PEM_FILE", env = "OPSMESH_AUDIT_KEYS")]
    pub keys: Option<PathBuf>,
    /// Only this incident.
    #[arg(long)]
    pub incident: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// What the command found, printed as text or JSON.
#[derive(serde::Serialize)]
struct Verdict {
    #[serde(skip_serializing_if = "Option::is_none")]
    kafka: Option<Report>,
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<Report>,
    /// Where the Kafka copy and the export first differ, per incident.
    differences: Vec<Difference>,
}

impl Verdict {
    fn ok(&self) -> bool {
        self.kafka.iter().chain(&self.file).all(Report::ok) && self.differences.is_empty()
    }
}

pub fn run(config: Option<&Path>, command: AuditCommand) -> ExitCode {
    let AuditCommand::Verify(args) = command;
    match verify(config, &args) {
        Ok(verdict) => {
            print(&verdict, args.json);
            if verdict.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => launcher::fail(&e),
    }
}

fn verify(config: Option<&Path>, args: &VerifyArgs) -> Result<Verdict, String> {
    let keys = args
        .keys
        .as_ref()
        .map(|path| {
            std::fs::read_to_string(path)
                .map_err(|e| e.to_string())
                .and_then(|pem| KeyRing::from_pem(&pem))
                .map_err(|e| format!("--keys {}: {e}", path.display()))
        })
        .transpose()?;
    let exported = args.file.as_ref().map(|path| read_file(path)).transpose()?;
    let from_kafka = if exported.is_none() || args.kafka {
        Some(read_kafka(config)?)
    } else {
        None
    };
    let only = |mut e: Exported| {
        if let Some(incident) = &args.incident {
            e.records
                .retain(|r| r.incident_id.as_ref() == Some(incident));
        }
        e
    };
    let (from_kafka, exported) = (from_kafka.map(only), exported.map(only));
    let check = |e: &Exported| {
        Checks {
            keys: keys.as_ref(),
            heads: &e.heads,
        }
        .verify(&e.records)
    };
    let differences = match (&from_kafka, &exported) {
        (Some(k), Some(f)) => ledger::compare(("kafka", &k.records), ("file", &f.records)),
        _ => Vec::new(),
    };
    Ok(Verdict {
        kafka: from_kafka.as_ref().map(check),
        // An export holds no heads of its own: hold it to Kafka's when both were read.
        file: exported.map(|mut f| {
            if let Some(k) = &from_kafka {
                f.heads.clone_from(&k.heads);
            }
            check(&f)
        }),
        differences,
    })
}

fn read_file(path: &Path) -> Result<Exported, String> {
    let text = if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(path)
    };
    text.map_err(|e| format!("{}: {e}", path.display()))
        .and_then(|t| ledger::parse_jsonl(&t).map_err(|e| format!("{}: {e}", path.display())))
}

fn print(verdict: &Verdict, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(verdict).expect("reports serialize")
        );
        return;
    }
    for (name, report) in [("kafka", &verdict.kafka), ("file", &verdict.file)] {
        let Some(report) = report else { continue };
        println!(
            "{name}: {} record(s), {} incident(s), {} redelivered duplicate(s)",
            report.records, report.incidents, report.duplicates
        );
        if report.signatures_checked {
            println!(
                "{name}: {} signed record(s), {} from before signing; {} signed head message(s) checked",
                report.signed, report.legacy, report.heads_checked
            );
        } else {
            println!("{name}: signatures not checked (no --keys)");
        }
        for rejected in &report.heads_rejected {
            println!("{name}: ignored untrusted heads: {rejected}");
        }
        if report.ok() {
            println!("{name}: OK: every chain is intact");
        }
        for b in &report.breaks {
            println!(
                "{name}: BROKEN incident {}: record #{} (envelope {}, seq {}) {:?}: {}",
                b.incident_id, b.index, b.envelope_id, b.seq, b.kind, b.detail
            );
        }
    }
    for d in &verdict.differences {
        println!(
            "DIFFERENT incident {} from seq {}: {}",
            d.incident_id, d.seq, d.detail
        );
    }
}

/// Reads the ledger and its heads from Kafka, each topic up to the end it had when opened.
fn read_kafka(config: Option<&Path>) -> Result<Exported, String> {
    let settings = ConfigTree::load(config)
        .and_then(|t| t.settings())
        .map_err(|e| e.to_string())?;
    telemetry::init(&settings.log);
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(async {
        let bus = bus::connect(&settings.bus, "opsmesh-audit").map_err(|e| e.to_string())?;
        let mut out = Exported::default();
        for topic in [topics::REMEDIATIONS, topics::LEDGER_HEADS] {
            let mut reader = bus.read_topic(topic).await.map_err(|e| e.to_string())?;
            loop {
                let message = match reader.next().await.map_err(|e| e.to_string())? {
                    ReadEvent::CaughtUp => break,
                    ReadEvent::Record(message) => message,
                };
                let parsed = if topic == topics::REMEDIATIONS {
                    Envelope::from_slice(&message.payload).map(|e| out.records.push(e))
                } else {
                    Envelope::from_slice(&message.payload).map(|e| out.heads.push(e))
                };
                if let Err(e) = parsed {
                    tracing::warn!(topic, partition = message.partition, offset = message.offset, error = %e, "unreadable; skipped");
                }
            }
        }
        Ok(out)
    })
}
