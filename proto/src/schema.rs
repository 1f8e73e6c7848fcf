//! JSON Schemas of every topic's envelope, generated from the Rust types.

use schemars::{JsonSchema, schema_for};

use crate::{
    Envelope, Payload,
    alert::Alert,
    approval::Approval,
    diagnosis::Diagnosis,
    incident::IncidentRecord,
    investigation::{InvestigationEvent, InvestigationRequest},
    ledger::LedgerHeads,
    remediation::Remediation,
    telemetry::Telemetry,
};

fn envelope_schema<P: Payload + JsonSchema>() -> (String, String) {
    let schema = schema_for!(Envelope<P>);
    let text = serde_json::to_string_pretty(&schema).expect("schemas serialize") + "\n";
    (format!("{}.schema.json", P::SCHEMA), text)
}

/// `(file name, pretty JSON)` for every topic, in topic-table order.
pub fn all() -> Vec<(String, String)> {
    vec![
        envelope_schema::<Alert>(),
        envelope_schema::<Telemetry>(),
        envelope_schema::<Diagnosis>(),
        envelope_schema::<Remediation>(),
        envelope_schema::<LedgerHeads>(),
        envelope_schema::<Approval>(),
        envelope_schema::<InvestigationEvent>(),
        envelope_schema::<InvestigationRequest>(),
        envelope_schema::<IncidentRecord>(),
    ]
}
