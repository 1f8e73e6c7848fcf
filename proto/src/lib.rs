//! opsmesh wire contracts.
//!
//! Every message on every topic is an [`Envelope`] around one of the payloads defined here.
//! The JSON Schemas under `proto/schemas/` are generated from these types
//! (`cargo run -p opsmesh-proto --bin opsmesh-proto-gen`) and a test fails when they drift.
//! Changes within a `.v1` topic are additive only; a breaking change is a new `.v2` topic.

pub mod alert;
pub mod approval;
pub mod diagnosis;
pub mod envelope;
pub mod incident;
pub mod ledger;
pub mod remediation;
pub mod schema;
pub mod telemetry;
pub mod timestamp;
pub mod topics;
pub mod vocabulary;

pub use envelope::{Envelope, Payload, Trace};
pub use vocabulary::{ActionKind, IncidentState, RootCause, Severity};
