//! The checked-in contract files must match the Rust types: schemas and topic table do not
//! drift, and every golden example round-trips unchanged.

use std::path::{Path, PathBuf};

use opsmesh_proto::{
    Envelope, Payload, alert::Alert, approval::Approval, diagnosis::Diagnosis,
    incident::IncidentRecord, remediation::Remediation, schema, telemetry::Telemetry, topics,
};

fn root() -> PathBuf {
    PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"))
}

const REGENERATE: &str = "regenerate with `cargo run -p opsmesh-proto --bin opsmesh-proto-gen`";

#[test]
fn checked_in_schemas_match_the_types() {
    for (name, generated) in schema::all() {
        let path = root().join("schemas").join(&name);
        let on_disk = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{} missing ({e}); {REGENERATE}", path.display()));
        assert!(
            on_disk == generated,
            "{name} drifted from the Rust types; {REGENERATE}"
        );
    }
}

#[test]
fn topic_table_matches_the_code() {
    let on_disk = std::fs::read_to_string(root().join("TOPICS.md")).unwrap();
    assert_eq!(
        on_disk,
        topics::markdown_table(),
        "TOPICS.md drifted; {REGENERATE}"
    );
}

fn round_trip<P: Payload>(dir: &Path) {
    let path = dir.join(format!("{}.json", P::SCHEMA));
    let text = std::fs::read_to_string(&path).unwrap();
    let original: serde_json::Value = serde_json::from_str(&text).unwrap();
    let parsed = Envelope::<P>::from_slice(text.as_bytes())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let reserialized = serde_json::to_value(&parsed).unwrap();
    assert_eq!(
        original,
        reserialized,
        "{} does not round-trip",
        path.display()
    );
}

#[test]
fn golden_examples_round_trip() {
    let dir = root().join("examples");
    round_trip::<Alert>(&dir);
    round_trip::<Telemetry>(&dir);
    round_trip::<Diagnosis>(&dir);
    round_trip::<Remediation>(&dir);
    round_trip::<Approval>(&dir);
    round_trip::<IncidentRecord>(&dir);
}

#[test]
fn every_topic_has_a_schema_and_an_example() {
    let schemas: Vec<String> = schema::all().into_iter().map(|(n, _)| n).collect();
    for t in topics::TOPICS {
        assert!(
            schemas.contains(&format!("{}.schema.json", t.name)),
            "{}",
            t.name
        );
        assert!(
            root()
                .join("examples")
                .join(format!("{}.json", t.name))
                .exists(),
            "{}",
            t.name
        );
    }
}

#[test]
fn unknown_envelope_fields_are_rejected() {
    let text = std::fs::read_to_string(root().join("examples/opsmesh.approvals.v1.json")).unwrap();
    let mut value: serde_json::Value = serde_json::from_str(&text).unwrap();
    value["surprise"] = serde_json::json!(1);
    let err = Envelope::<Approval>::from_slice(value.to_string().as_bytes()).unwrap_err();
    assert!(err.to_string().contains("surprise"), "{err}");
}
