//! The per-service Kafka ACLs in `deploy/` grant exactly what the code uses: each service's
//! declared publishes and subscriptions (below, read from `services/*/src`) agree with proto's
//! topic table, and the ACLs derived from them equal both the Strimzi KafkaUsers in
//! `deploy/k8s/components/kafka-auth/kafkausers.yaml` and
//! `deploy/k8s/kafka-acls.expected.json` (which `deploy/check.sh` compares with the rendered
//! manifests). A new topic, consumer or producer that is not reflected in all three fails here.
//! Every consuming service may also describe the DLQ replayer's group, whose committed offsets
//! its DLQ size gauges read.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
};

use opsmesh_proto::topics::{self, TopicSpec};
use opsmesh_runtime::bus::DlqSettings;
use serde::Deserialize;
use serde_json::{Value, json};

/// What one service does on the bus.
struct BusAccess {
    service: &'static str,
    /// Topics it publishes to (besides the DLQs of what it consumes).
    publishes: &'static [&'static str],
    /// Topics it consumes in consumer groups (all named `opsmesh-<service>…`); the consume
    /// loop dead-letters to their DLQs.
    consumes: &'static [&'static str],
    /// Topics it reads from their start without a group (state rebuild, ledger replay).
    reads: &'static [&'static str],
}

/// Read from each service's code: `Publisher::publish` payload types, `Context::consume` /
/// `Bus::subscribe` calls and `TopicFollower`s.
const SERVICES: &[BusAccess] = &[
    BusAccess {
        service: "alert-receiver",
        publishes: &[topics::ALERTS],
        consumes: &[],
        reads: &[],
    },
    BusAccess {
        service: "collector",
        publishes: &[topics::TELEMETRY],
        consumes: &[],
        reads: &[],
    },
    BusAccess {
        service: "diagnoser",
        publishes: &[
            topics::DIAGNOSES,
            topics::INVESTIGATION_REQUESTS,
            topics::INVESTIGATIONS,
            topics::INCIDENTS,
        ],
        // Alerts and investigation requests in diagnoser groups; telemetry and outcomes in
        // per-replica groups.
        consumes: &[
            topics::ALERTS,
            topics::TELEMETRY,
            topics::REMEDIATIONS,
            topics::INVESTIGATION_REQUESTS,
        ],
        reads: &[topics::INCIDENTS],
    },
    BusAccess {
        service: "remediator",
        publishes: &[topics::REMEDIATIONS, topics::LEDGER_HEADS],
        consumes: &[topics::DIAGNOSES, topics::APPROVALS, topics::INVESTIGATIONS],
        reads: &[topics::REMEDIATIONS],
    },
    BusAccess {
        service: "reporter",
        // A notification that failed for one route goes to the notifications DLQ directly;
        // `opsmesh dlq replay` (admin) moves it back to the topic.
        publishes: &[
            topics::APPROVALS,
            topics::INVESTIGATION_REQUESTS,
            "opsmesh.notifications.v1.dlq",
        ],
        consumes: &[
            topics::ALERTS,
            topics::TELEMETRY,
            topics::DIAGNOSES,
            topics::REMEDIATIONS,
            topics::APPROVALS,
            topics::INVESTIGATIONS,
            topics::INVESTIGATION_REQUESTS,
            topics::NOTIFICATIONS,
        ],
        reads: &[],
    },
];

/// Consumers the code has and the topic table's `consumers` column does not name yet. Each
/// entry must still be missing from the table (see `the_table_names_every_declared_service`),
/// so this list empties as the table is corrected.
const TABLE_OMITS: &[(&str, &str)] = &[("diagnoser", topics::REMEDIATIONS)];

fn every_topic() -> impl Iterator<Item = &'static TopicSpec> {
    topics::TOPICS.iter().chain(topics::SERVICE_TOPICS)
}

/// The service a table cell names first (`"reporter (console, MCP)"` → `reporter`), if it
/// is one of ours (not `` `opsmesh audit verify` ``).
fn service_named(cell: &str) -> Option<&'static str> {
    let first = cell.split([' ', '(']).next().unwrap_or_default();
    SERVICES
        .iter()
        .map(|s| s.service)
        .find(|service| *service == first)
}

#[test]
fn the_table_names_every_declared_service() {
    for spec in every_topic() {
        let writers: BTreeSet<&str> = SERVICES
            .iter()
            .filter(|s| s.publishes.contains(&spec.name))
            .map(|s| s.service)
            .collect();
        // A topic several services write names each, comma-separated.
        let table_writers: BTreeSet<&str> = spec
            .producer
            .split(", ")
            .filter_map(service_named)
            .collect();
        if topics::TOPICS.contains(spec) {
            assert_eq!(
                writers, table_writers,
                "{}: the table says `{}` writes it",
                spec.name, spec.producer
            );
        }
        let readers: BTreeSet<&str> = SERVICES
            .iter()
            .filter(|s| s.consumes.contains(&spec.name) || s.reads.contains(&spec.name))
            .map(|s| s.service)
            .collect();
        let table_readers: BTreeSet<&str> = spec
            .consumers
            .iter()
            .filter_map(|c| service_named(c))
            .chain(
                TABLE_OMITS
                    .iter()
                    .filter(|(_, topic)| *topic == spec.name)
                    .map(|(service, _)| *service),
            )
            .collect();
        assert_eq!(
            readers, table_readers,
            "{}: the table's consumers are {:?}",
            spec.name, spec.consumers
        );
    }
    for (service, topic) in TABLE_OMITS {
        let spec = every_topic().find(|t| t.name == *topic).unwrap();
        assert!(
            !spec
                .consumers
                .iter()
                .any(|c| service_named(c) == Some(service)),
            "the table now names {service} as a consumer of {topic}: drop it from TABLE_OMITS"
        );
    }
    let provisioned = topics::all_topic_names();
    for access in SERVICES {
        for topic in access
            .publishes
            .iter()
            .chain(access.consumes)
            .chain(access.reads)
        {
            assert!(
                provisioned.iter().any(|t| t == topic),
                "{}: {topic} is not provisioned",
                access.service
            );
        }
    }
}

/// One ACL as `kafka-acls.expected.json` writes it.
fn acl(principal: &str, kind: &str, name: &str, pattern: &str, operations: &[&str]) -> Value {
    let mut operations = operations.to_vec();
    operations.sort_unstable();
    json!({"principal": principal, "type": kind, "name": name, "patternType": pattern, "operations": operations})
}

/// The ACLs the declarations call for, sorted like the expected file.
fn derived_acls() -> Vec<Value> {
    let mut acls = Vec::new();
    for access in SERVICES {
        let principal = format!("opsmesh-{}", access.service);
        let mut operations: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
        for topic in access.publishes {
            operations
                .entry(topic.to_string())
                .or_default()
                .insert("Write");
        }
        for topic in access.consumes {
            operations
                .entry(topic.to_string())
                .or_default()
                .insert("Read");
            operations
                .entry(topics::dlq(topic))
                .or_default()
                .insert("Write");
        }
        for topic in access.reads {
            operations
                .entry(topic.to_string())
                .or_default()
                .insert("Read");
        }
        for (topic, ops) in operations {
            let ops: Vec<&str> = ops.into_iter().chain(["Describe"]).collect();
            acls.push(acl(&principal, "topic", &topic, "literal", &ops));
        }
        if !access.consumes.is_empty() {
            acls.push(acl(&principal, "group", &principal, "prefix", &["Read"]));
            // The DLQ size gauges read what `opsmesh dlq replay`'s group committed.
            let replay_group = DlqSettings::default().replay_group;
            acls.push(acl(
                &principal,
                "group",
                &replay_group,
                "literal",
                &["Describe"],
            ));
        }
    }
    // Operators and the topics Job: everything under the opsmesh prefixes, nothing else.
    acls.push(acl(
        "opsmesh-admin",
        "topic",
        "opsmesh.",
        "prefix",
        &["Create", "Describe", "DescribeConfigs", "Read", "Write"],
    ));
    acls.push(acl(
        "opsmesh-admin",
        "group",
        "opsmesh-",
        "prefix",
        &["Describe", "Read"],
    ));
    sort(acls)
}

fn sort(mut acls: Vec<Value>) -> Vec<Value> {
    acls.sort_by_key(|a| {
        (
            a["principal"].as_str().unwrap_or_default().to_owned(),
            a["type"].as_str().unwrap_or_default().to_owned(),
            a["name"].as_str().unwrap_or_default().to_owned(),
        )
    });
    acls
}

fn deploy_file(path: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/k8s")
        .join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[derive(Deserialize)]
struct KafkaUser {
    kind: String,
    metadata: Metadata,
    spec: UserSpec,
}

#[derive(Deserialize)]
struct Metadata {
    name: String,
}

#[derive(Deserialize)]
struct UserSpec {
    authentication: Authentication,
    authorization: Authorization,
}

#[derive(Deserialize)]
struct Authentication {
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct Authorization {
    acls: Vec<Acl>,
}

#[derive(Deserialize)]
struct Acl {
    resource: Resource,
    operations: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Resource {
    #[serde(rename = "type")]
    kind: String,
    name: String,
    pattern_type: String,
}

#[test]
fn the_kafka_users_grant_exactly_the_derived_acls() {
    let text = deploy_file("components/kafka-auth/kafkausers.yaml");
    let mut acls = Vec::new();
    for document in serde_norway::Deserializer::from_str(&text) {
        let user = KafkaUser::deserialize(document).expect("a KafkaUser");
        assert_eq!(user.kind, "KafkaUser");
        assert_eq!(
            user.spec.authentication.kind, "scram-sha-512",
            "{}: every principal authenticates with SCRAM-SHA-512",
            user.metadata.name
        );
        for entry in user.spec.authorization.acls {
            let ops: Vec<&str> = entry.operations.iter().map(String::as_str).collect();
            acls.push(acl(
                &user.metadata.name,
                &entry.resource.kind,
                &entry.resource.name,
                &entry.resource.pattern_type,
                &ops,
            ));
        }
    }
    let derived = derived_acls();
    let (manifest, derived): (BTreeSet<String>, BTreeSet<String>) = (
        acls.iter().map(Value::to_string).collect(),
        derived.iter().map(Value::to_string).collect(),
    );
    let extra: Vec<_> = manifest.difference(&derived).collect();
    let missing: Vec<_> = derived.difference(&manifest).collect();
    assert!(
        extra.is_empty() && missing.is_empty(),
        "kafkausers.yaml grants more than the code uses: {extra:#?}\nand less: {missing:#?}"
    );
}

#[test]
fn the_expected_file_for_deploy_check_matches_the_derived_acls() {
    let expected: Vec<Value> =
        serde_json::from_str(&deploy_file("kafka-acls.expected.json")).unwrap();
    assert_eq!(
        sort(expected),
        derived_acls(),
        "deploy/k8s/kafka-acls.expected.json"
    );
}

#[test]
fn no_service_may_create_delete_or_alter_topics() {
    for entry in derived_acls() {
        if entry["principal"] == "opsmesh-admin" {
            continue;
        }
        for op in entry["operations"].as_array().unwrap() {
            assert!(
                ["Read", "Write", "Describe"].contains(&op.as_str().unwrap()),
                "{entry}"
            );
        }
    }
}
