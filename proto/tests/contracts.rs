//! The checked-in contract files must match the Rust types: schemas and topic table do not
//! drift, every golden example round-trips unchanged, and consumers read a message from a
//! newer release (fields they do not know) as the same value.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use opsmesh_proto::{
    Envelope, Payload,
    alert::Alert,
    approval::Approval,
    diagnosis::Diagnosis,
    incident::IncidentRecord,
    investigation::{InvestigationEvent, InvestigationRequest},
    ledger::LedgerHeads,
    remediation::Remediation,
    schema,
    telemetry::Telemetry,
    topics,
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
    round_trip::<LedgerHeads>(&dir);
    round_trip::<IncidentRecord>(&dir);
    round_trip::<InvestigationEvent>(&dir);
    round_trip::<InvestigationRequest>(&dir);
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

/// The field a newer release might add; its value is deliberately not a scalar, so skipping
/// it exercises the whole value.
const ADDED: &str = "added_by_a_newer_release";

fn added_value() -> Value {
    json!({"nested": [1, "two", {"three": null}]})
}

/// JSON pointers of every object in `value`, outermost first.
fn object_pointers(value: &Value, at: String, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            out.push(at.clone());
            for (key, child) in map {
                let key = key.replace('~', "~0").replace('/', "~1");
                object_pointers(child, format!("{at}/{key}"), out);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                object_pointers(child, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

fn with_added_field(value: &Value, pointers: &[&String]) -> Value {
    let mut value = value.clone();
    for pointer in pointers {
        value
            .pointer_mut(pointer)
            .and_then(Value::as_object_mut)
            .expect("points at an object")
            .insert(ADDED.to_owned(), added_value());
    }
    value
}

/// Decodes as a consumer does and serializes again, as a producer would write it.
fn reread<P: Payload>(value: &Value) -> Result<Value, String> {
    Envelope::<P>::from_slice(value.to_string().as_bytes())
        .map(|envelope| serde_json::to_value(&envelope).unwrap())
        .map_err(|e| e.to_string())
}

/// A consumer one release older reads a message carrying a field it does not know — at the
/// top, in the trace, in the payload and in every nested struct — as the same value.
fn unknown_fields_are_ignored<P: Payload>(dir: &Path) {
    let path = dir.join(format!("{}.json", P::SCHEMA));
    let original: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut pointers = Vec::new();
    object_pointers(&original, String::new(), &mut pointers);
    // Each object on its own: a struct ignores the field; a map (labels, rows, evidence
    // values) keeps it as an entry, or refuses a value of the wrong type, but never calls it
    // unknown.
    let mut structs = Vec::new();
    for pointer in &pointers {
        let with = with_added_field(&original, &[pointer]);
        match reread::<P>(&with) {
            Ok(read) if read == original => structs.push(pointer),
            Ok(read) => assert_eq!(read, with, "{}: {pointer:?} changed", P::SCHEMA),
            Err(e) => assert!(
                !e.contains("unknown field"),
                "{}: an unknown field at {pointer:?} was refused: {e}",
                P::SCHEMA
            ),
        }
    }
    for expected in ["", "/trace", "/payload"] {
        assert!(
            structs.iter().any(|p| p.as_str() == expected),
            "{}: {expected:?} did not ignore an unknown field; structs: {structs:?}",
            P::SCHEMA
        );
    }
    // All of them at once.
    let with = with_added_field(&original, &structs);
    assert_eq!(
        reread::<P>(&with).as_ref(),
        Ok(&original),
        "{}: unknown fields in {structs:?} changed the value",
        P::SCHEMA
    );
}

#[test]
fn consumers_read_unknown_fields_as_the_same_value() {
    let dir = root().join("examples");
    unknown_fields_are_ignored::<Alert>(&dir);
    unknown_fields_are_ignored::<Telemetry>(&dir);
    unknown_fields_are_ignored::<Diagnosis>(&dir);
    unknown_fields_are_ignored::<Remediation>(&dir);
    unknown_fields_are_ignored::<Approval>(&dir);
    unknown_fields_are_ignored::<LedgerHeads>(&dir);
    unknown_fields_are_ignored::<IncidentRecord>(&dir);
    unknown_fields_are_ignored::<InvestigationEvent>(&dir);
    unknown_fields_are_ignored::<InvestigationRequest>(&dir);
}

/// Producers stay strict: the schemas close every struct (`additionalProperties: false`), so
/// a message validated against them carries only what this release knows.
#[test]
fn schemas_close_every_struct() {
    for (name, text) in schema::all() {
        let schema: Value = serde_json::from_str(&text).unwrap();
        let mut closed = 0;
        let mut open = Vec::new();
        count_objects(&schema, "", &mut closed, &mut open);
        assert!(open.is_empty(), "{name}: open object schemas at {open:?}");
        assert!(closed > 1, "{name}: no closed object schema");
    }
}

/// Counts object schemas with named properties (structs) and lists those not closed.
fn count_objects(schema: &Value, at: &str, closed: &mut usize, open: &mut Vec<String>) {
    match schema {
        Value::Object(map) => {
            if map.contains_key("properties") {
                if map.get("additionalProperties") == Some(&Value::Bool(false)) {
                    *closed += 1;
                } else {
                    open.push(at.to_owned());
                }
            }
            for (key, child) in map {
                count_objects(child, &format!("{at}/{key}"), closed, open);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                count_objects(child, &format!("{at}/{i}"), closed, open);
            }
        }
        _ => {}
    }
}
