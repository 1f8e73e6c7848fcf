use std::{path::Path, process::ExitCode};

use clap::Subcommand;

use opsmesh_proto::topics;
use opsmesh_runtime::{ConfigTree, bus, launcher, telemetry};

#[derive(Debug, Subcommand)]
pub enum TopicsCommand {
    /// Create every topic and its DLQ (idempotent); partitions and replication from
    /// bus.kafka.partitions / bus.kafka.replication_factor.
    Create,
    /// Print the topic table (producer, consumers, key, partitions, retention, DLQ).
    List,
}

pub fn run(config: Option<&Path>, command: TopicsCommand) -> ExitCode {
    match command {
        TopicsCommand::List => {
            print!("{}", topics::markdown_table());
            ExitCode::SUCCESS
        }
        TopicsCommand::Create => create(config),
    }
}

fn create(config: Option<&Path>) -> ExitCode {
    let settings = match ConfigTree::load(config).and_then(|t| t.settings()) {
        Ok(settings) => settings,
        Err(err) => return launcher::fail(&err),
    };
    telemetry::init(&settings.log);
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(async {
        let bus = match bus::connect(&settings.bus, "opsmesh-topics") {
            Ok(bus) => bus,
            Err(err) => return launcher::fail(&err),
        };
        let names = topics::all_topic_names();
        match bus.ensure_topics(&names).await {
            Ok(()) => {
                for name in names {
                    println!("{name}");
                }
                ExitCode::SUCCESS
            }
            Err(err) => launcher::fail(&err),
        }
    })
}
