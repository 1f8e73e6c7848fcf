//! opsmesh wire contracts.
//!
//! Every message on every topic is an [`Envelope`] around one of the payloads defined here.
//! The JSON Schemas under `proto/schemas/` are generated from these types
//! (`cargo run -p opsmesh-proto --bin opsmesh-proto-gen`) and a test fails when they drift.
//! Changes within a `.v1` topic are additive only; a breaking change is a new `.v2` topic.
//!
//! Services roll in any order, so a consumer may read a message from a newer release:
//! decoding ignores fields it does not know (the types carry `#[schemars(deny_unknown_fields)]`,
//! not serde's). The schemas stay closed (`additionalProperties: false`): they describe what
//! this release writes, and producers serialize these same types, so they cannot write a field
//! the contract does not name. A new enum value is not additive: an older consumer refuses it.

pub mod alert;
pub mod approval;
pub mod diagnosis;
pub mod envelope;
pub mod incident;
pub mod investigation;
pub mod ledger;
pub mod name;
pub mod quantity;
pub mod remediation;
pub mod revisions;
pub mod schema;
pub mod signature;
pub mod storage;
pub mod target;
pub mod telemetry;
pub mod timestamp;
pub mod topics;
pub mod vocabulary;

pub use envelope::{Envelope, Lineage, Payload, Trace};
pub use target::Target;
pub use vocabulary::{ActionKind, IncidentState, RootCause, Severity};
