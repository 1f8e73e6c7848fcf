use std::{collections::BTreeSet, path::Path, process::ExitCode};

use clap::Subcommand;

use opsmesh_proto::topics;
use opsmesh_runtime::{
    ConfigError, ConfigTree, Settings,
    bus::{self, BusError, BusKind, KafkaBus, TopicDescription},
    launcher, telemetry,
};

#[derive(Debug, Subcommand)]
pub enum TopicsCommand {
    /// Create every topic and its DLQ (idempotent), with the table's retention.ms and
    /// cleanup.policy (DLQs: delete, 30 days); partitions and replication from
    /// bus.kafka.partitions / bus.kafka.replication_factor. Existing topics are not changed.
    Create,
    /// Print the topic table (producer, consumers, key, partitions, retention, DLQ).
    List,
    /// Compare the cluster's topics with the table: a missing topic or DLQ, fewer partitions
    /// than bus.kafka.partitions, fewer replicas than bus.kafka.replication_factor, or a
    /// retention.ms / cleanup.policy other than declared. Prints one line per topic.
    ///
    /// Exit status: 0 no drift; 1 drift; 2 the check could not be made (cluster unreachable,
    /// or a broker that does not describe topic settings: they are reported as not checked).
    #[command(verbatim_doc_comment)]
    Check,
}

pub fn run(config: Option<&Path>, command: TopicsCommand) -> ExitCode {
    match command {
        TopicsCommand::List => {
            print!("{}", topics::markdown_table());
            ExitCode::SUCCESS
        }
        TopicsCommand::Create => create(config),
        TopicsCommand::Check => check(config),
    }
}

fn load(config: Option<&Path>) -> Result<Settings, ConfigError> {
    let settings = ConfigTree::load(config).and_then(|t| t.settings())?;
    telemetry::init(&settings.log);
    Ok(settings)
}

fn create(config: Option<&Path>) -> ExitCode {
    let settings = match load(config) {
        Ok(settings) => settings,
        Err(err) => return launcher::fail(&err),
    };
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

/// Why `topics check` could not compare the cluster with the table.
#[derive(Debug, thiserror::Error)]
enum CheckError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("topics check reads a Kafka cluster: set bus.kind = \"kafka\" and bus.kafka.brokers")]
    NotKafka,
    #[error(transparent)]
    Bus(#[from] BusError),
}

/// What the check found for one topic.
#[derive(Debug, Default)]
struct Findings {
    drift: Vec<String>,
    /// Settings that could not be read, and why.
    unchecked: Option<String>,
}

fn check(config: Option<&Path>) -> ExitCode {
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    match runtime.block_on(check_cluster(config)) {
        Ok(report) => {
            let (mut drifted, mut unchecked) = (0, 0);
            for (name, findings) in &report {
                let status = if findings.drift.is_empty() {
                    "ok"
                } else {
                    drifted += 1;
                    "DRIFT"
                };
                let mut notes = findings.drift.clone();
                if let Some(why) = &findings.unchecked {
                    unchecked += 1;
                    notes.push(format!(
                        "retention.ms and cleanup.policy not checked: {why}"
                    ));
                }
                match notes.is_empty() {
                    true => println!("{status:<5} {name}"),
                    false => println!("{status:<5} {name}: {}", notes.join("; ")),
                }
            }
            println!(
                "{} topics: {drifted} drifted, {unchecked} with settings not checked",
                report.len()
            );
            if drifted > 0 {
                ExitCode::from(1)
            } else if unchecked > 0 {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(err) => {
            launcher::fail(&err);
            ExitCode::from(2)
        }
    }
}

async fn check_cluster(config: Option<&Path>) -> Result<Vec<(String, Findings)>, CheckError> {
    let settings = load(config)?;
    if settings.bus.kind != BusKind::Kafka {
        return Err(CheckError::NotKafka);
    }
    let kafka = &settings.bus.kafka;
    let bus = KafkaBus::new(kafka, "opsmesh-topics")?;
    let described = bus.describe_topics(&topics::all_topic_names()).await?;
    Ok(described
        .into_iter()
        .map(|(name, description)| {
            let findings = compare(
                &name,
                description.as_ref(),
                kafka.partitions,
                kafka.replication_factor,
            );
            (name, findings)
        })
        .collect())
}

/// `description` against the table's row for `name` and the configured shape.
fn compare(
    name: &str,
    description: Option<&TopicDescription>,
    partitions: i32,
    replication_factor: i32,
) -> Findings {
    let mut findings = Findings::default();
    let Some(topic) = description else {
        findings.drift.push("missing".to_owned());
        return findings;
    };
    let want = |n: i32| usize::try_from(n).unwrap_or(0);
    if topic.partitions < want(partitions) {
        findings.drift.push(format!(
            "{} partitions, expected at least {partitions} (bus.kafka.partitions)",
            topic.partitions
        ));
    }
    if topic.replication_factor < want(replication_factor) {
        findings.drift.push(format!(
            "{} replicas, expected at least {replication_factor} (bus.kafka.replication_factor)",
            topic.replication_factor
        ));
    }
    let declared = topics::config_of(name).expect("every provisioned topic is in the table");
    match &topic.configs {
        Err(why) => findings.unchecked = Some(why.clone()),
        Ok(configs) => {
            for (key, expected) in declared.entries() {
                match configs.get(key) {
                    Some(actual) if same_setting(key, actual, &expected) => {}
                    Some(actual) => {
                        findings
                            .drift
                            .push(format!("{key} is {actual}, declared {expected}"));
                    }
                    None => findings.drift.push(format!(
                        "{key} is not set (the broker's default applies), declared {expected}"
                    )),
                }
            }
        }
    }
    findings
}

/// `cleanup.policy` is a list (`compact,delete`): its order does not matter.
fn same_setting(key: &str, actual: &str, expected: &str) -> bool {
    if key == "cleanup.policy" {
        fn set(s: &str) -> BTreeSet<&str> {
            s.split(',').map(str::trim).collect()
        }
        set(actual) == set(expected)
    } else {
        actual.trim() == expected
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn described(configs: &[(&str, &str)]) -> TopicDescription {
        TopicDescription {
            partitions: 6,
            replication_factor: 1,
            configs: Ok(configs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()),
        }
    }

    #[test]
    fn each_setting_that_differs_is_named_with_both_values() {
        let topic = described(&[("retention.ms", "604800000"), ("cleanup.policy", "delete")]);
        let findings = compare(topics::INCIDENTS, Some(&topic), 6, 1);
        assert_eq!(
            findings.drift,
            [
                "retention.ms is 604800000, declared 2592000000",
                "cleanup.policy is delete, declared compact"
            ]
        );
        let findings = compare(topics::INCIDENTS, Some(&topic), 12, 3);
        assert!(findings.drift[0].starts_with("6 partitions, expected at least 12"));
        assert!(findings.drift[1].starts_with("1 replicas, expected at least 3"));
    }

    #[test]
    fn a_matching_topic_has_no_drift_and_policy_order_does_not_matter() {
        let topic = described(&[("retention.ms", "604800000"), ("cleanup.policy", "delete")]);
        assert!(compare(topics::ALERTS, Some(&topic), 6, 1).drift.is_empty());
        assert!(same_setting(
            "cleanup.policy",
            "delete, compact",
            "compact,delete"
        ));
    }
}
