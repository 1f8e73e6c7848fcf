//! The `opsmesh` command: every service in one binary, plus the tools around them.

mod commands;
pub mod harness;
pub mod keys;

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

use opsmesh_runtime::ServiceDef;

/// Every service, by the name used on the command line.
pub const SERVICES: &[&ServiceDef] = &[
    &opsmesh_collector::SERVICE,
    &opsmesh_alert_receiver::SERVICE,
    &opsmesh_diagnoser::SERVICE,
    &opsmesh_remediator::SERVICE,
    &opsmesh_reporter::SERVICE,
];

#[derive(Debug, Parser)]
#[command(
    name = "opsmesh",
    version,
    about = "Splunk alerts into safe, automatic fixes on Kubernetes ML platforms",
    long_about = "opsmesh turns Splunk alerts into evidence, a diagnosis grounded in runbooks, a \
governed remediation and an outcome written back to Splunk over HEC.\n\n\
Configuration is layered: built-in defaults, then --config FILE (TOML), then environment \
variables OPSMESH__SECTION__KEY (e.g. OPSMESH__BUS__KAFKA__BROKERS=127.0.0.1:9092)."
)]
pub struct Cli {
    /// TOML configuration file.
    #[arg(long, short, global = true, env = "OPSMESH_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the whole mesh in one process on the in-memory bus (no external services).
    ///
    /// The receiver on http.listen (default 127.0.0.1:8080), health and metrics on
    /// http.admin_listen (default 127.0.0.1:9090); HEC events
    /// go to reporter.hec.file (default ./opsmesh.hec.jsonl) unless reporter.hec.url is set.
    Up,
    /// Play example incidents through the simulator and the mesh as Splunk would send them,
    /// printing each incident's timeline; then serve the operator console with them.
    ///
    /// Service logs go to opsmesh-demo/opsmesh.log (stderr with --verbose). The console
    /// listens on http.listen (default 127.0.0.1:8080) and opens with the one-time sign-in
    /// link printed at the end; --once exits after the incidents instead.
    Demo(commands::demo::DemoArgs),
    /// The mesh's health at a glance from each process's admin endpoints (http.admin_listen):
    /// readiness, consumer lag, open incidents by state, dead-lettered messages, HEC backlog.
    Status(commands::status::StatusArgs),
    /// Run one or several services in one process against Kafka (bus.kafka.brokers).
    ///
    /// Services: collector, alert-receiver, diagnoser, remediator, reporter.
    Run {
        /// Services to run.
        #[arg(required = true, value_parser = service_names())]
        services: Vec<String>,
    },
    /// Print a Kafka topic's messages as JSON lines, exactly as an outside consumer reads them.
    Tail(commands::tail::TailArgs),
    /// Serve the cluster simulator: Kubernetes (KServe, Kyverno, ArgoCD CRDs), ArgoCD and
    /// OpenCost APIs over HTTP, with faults on a virtual clock.
    Sim(commands::sim::SimArgs),
    /// Play scenarios (cluster state, faults, Splunk alerts, expectations) through the whole
    /// mesh against the simulator and print JSON verdicts.
    Scenario {
        #[command(subcommand)]
        command: commands::scenario::ScenarioCommand,
    },
    /// Play every scenario (N times) and score the runs: detection, localisation, root-cause
    /// accuracy, mitigation success, false remediations, escalations, times, actions, LLM use.
    ///
    /// Exit status 0 only when every run passed and each scenario gave the same verdict
    /// every time.
    Eval(commands::eval::EvalArgs),
    /// Ask the diagnoser's investigator about an incident or a namespace, follow it to its
    /// cited report, or find out where an investigation stands.
    ///
    /// `opsmesh investigate INCIDENT_ID` or `opsmesh investigate --question "…" [--namespace
    /// NS]` queues an investigation on Kafka and prints its id (`inv-…`), `queued`, and the
    /// Splunk search that replays it; --wait then prints each step and the report as they
    /// come. `opsmesh investigate --status ID [--wait]` finds one again (after a restart of
    /// either side).
    #[command(after_help = commands::investigate::AFTER_HELP)]
    Investigate(commands::investigate::InvestigateArgs),
    /// Check the remediator's hash-chained audit ledger (from Kafka or an export).
    Audit {
        #[command(subcommand)]
        command: commands::audit::AuditCommand,
    },
    /// Serve the MCP tools (incidents, runbooks, audit chain, approvals) over stdio.
    ///
    /// Reads the incident timeline from the bus (bus.kafka.brokers) in a consumer group of
    /// its own. approve_action / reject_action need OPSMESH_MCP_TOKEN, a token of
    /// reporter.mcp.tokens_file / tokens_env, whose name is recorded as the approver.
    Mcp,
    /// Inspect a topic's dead-letter queue (<topic>.dlq) and replay it onto the topic.
    Dlq {
        #[command(subcommand)]
        command: commands::dlq::DlqCommand,
    },
    /// Manage Kafka topics from the contract's topic table.
    Topics {
        #[command(subcommand)]
        command: commands::topics::TopicsCommand,
    },
    /// Generate the key pairs approvals and the audit ledger are signed with.
    Keys {
        #[command(subcommand)]
        command: commands::keys::KeysCommand,
    },
}

fn service_names() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(SERVICES.iter().map(|s| s.name))
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = cli.config.as_deref();
    match cli.command {
        Command::Up => commands::up::run(config),
        Command::Demo(args) => commands::demo::run(config, args),
        Command::Status(args) => commands::status::run(config, args),
        Command::Run { services } => commands::run::run(config, &services),
        Command::Tail(args) => commands::tail::run(config, args),
        Command::Topics { command } => commands::topics::run(config, command),
        Command::Dlq { command } => commands::dlq::run(config, command),
        Command::Mcp => commands::mcp::run(config),
        Command::Sim(args) => commands::sim::run(args),
        Command::Scenario { command } => commands::scenario::run(config, command),
        Command::Eval(args) => commands::eval::run(config, args),
        Command::Investigate(args) => commands::investigate::run(config, args),
        Command::Audit { command } => commands::audit::run(config, command),
        Command::Keys { command } => commands::keys::run(command),
    }
}
