//! The one envelope shared by all topics.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Kafka header carrying the media type of the value (always `application/json`).
pub const HEADER_CONTENT_TYPE: &str = "content-type";
/// Kafka header repeating [`Envelope::schema`], so consumers can route without parsing.
pub const HEADER_SCHEMA: &str = "opsmesh-schema";
/// Kafka header repeating the W3C `traceparent` of [`Trace`].
pub const HEADER_TRACEPARENT: &str = "traceparent";
pub const CONTENT_TYPE_JSON: &str = "application/json";

/// A payload type bound to the schema id (and topic) it travels under.
pub trait Payload: Serialize + DeserializeOwned + JsonSchema + Send + Sync + 'static {
    /// Schema id, equal to the topic the payload is published on (`opsmesh.alerts.v1`).
    const SCHEMA: &'static str;
}

/// W3C trace context carried across services.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Trace {
    /// `00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`.
    pub traceparent: String,
}

impl Trace {
    /// Starts a new trace (used at ingress).
    pub fn new_root() -> Self {
        // Trace id (16 bytes) then span id (8), hex-encoded on the stack: this runs for every
        // alert received.
        let ids: [u8; 24] = rand::random();
        let mut hex = [0u8; 48];
        hex::encode_to_slice(ids, &mut hex).expect("48 hex digits encode 24 bytes");
        let hex = std::str::from_utf8(&hex).expect("hex digits are ASCII");
        let mut traceparent = String::with_capacity(55);
        for part in ["00-", &hex[..32], "-", &hex[32..], "-01"] {
            traceparent.push_str(part);
        }
        Self { traceparent }
    }

    /// A child span of this trace: same trace id, a span id derived from `salt` so that a
    /// message handled twice yields the same trace context.
    pub fn child(&self, salt: &[u8]) -> Self {
        let mut parts = self.traceparent.split('-');
        let (Some(version), Some(trace_id), Some(_), Some(flags)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Self::new_root();
        };
        let digest = Sha256::new()
            .chain_update(self.traceparent.as_bytes())
            .chain_update(salt)
            .finalize();
        Self {
            traceparent: format!("{version}-{trace_id}-{}-{flags}", hex::encode(&digest[..8])),
        }
    }
}

/// The envelope every topic carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Envelope<P> {
    /// Schema id of `payload`; equal to the topic name, e.g. `opsmesh.alerts.v1`.
    pub schema: String,
    /// UUIDv7. Consumers deduplicate on it: a message handled twice produces outputs with the
    /// same ids (see [`Envelope::derive`]).
    pub id: Uuid,
    /// Incident this message belongs to; also the Kafka key of alerts and everything after.
    /// Telemetry, which precedes incidents, carries none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident_id: Option<String>,
    /// When the fact the message reports happened (RFC 3339, UTC).
    #[serde(serialize_with = "crate::timestamp::serialize")]
    pub occurred_at: DateTime<Utc>,
    /// Producing service and instance, e.g. `opsmesh-alert-receiver`.
    pub source: String,
    /// Kubernetes cluster the message is about.
    pub cluster: String,
    pub trace: Trace,
    pub payload: P,
}

impl<P: Payload> Envelope<P> {
    /// A fresh envelope at ingress: new UUIDv7 id and a new trace.
    pub fn new(
        source: impl Into<String>,
        cluster: impl Into<String>,
        incident_id: Option<String>,
        payload: P,
    ) -> Self {
        Self {
            schema: P::SCHEMA.to_owned(),
            id: Uuid::now_v7(),
            incident_id,
            occurred_at: Utc::now(),
            source: source.into(),
            cluster: cluster.into(),
            trace: Trace::new_root(),
            payload,
        }
    }

    /// An envelope produced while handling `parent`. Its id is a UUIDv7 whose time is the
    /// parent's and whose remaining bits hash the parent id, the schema and `discriminator`:
    /// handling the same message again (at-least-once delivery) produces the same id, so
    /// downstream consumers drop the repeat.
    pub fn derive<Q>(
        parent: &Envelope<Q>,
        source: impl Into<String>,
        discriminator: &str,
        payload: P,
    ) -> Self {
        Self::derive_from(&parent.lineage(), source, discriminator, payload)
    }

    /// As [`Envelope::derive`], from what an envelope passes on to those derived from it.
    pub fn derive_from(
        parent: &Lineage,
        source: impl Into<String>,
        discriminator: &str,
        payload: P,
    ) -> Self {
        let id = derived_id(parent.id, P::SCHEMA, discriminator);
        Self {
            schema: P::SCHEMA.to_owned(),
            id,
            incident_id: parent.incident_id.clone(),
            occurred_at: Utc::now(),
            source: source.into(),
            cluster: parent.cluster.clone(),
            trace: parent.trace.child(id.as_bytes()),
            payload,
        }
    }
}

/// What an envelope passes on to the envelopes derived from it, whatever its payload: its
/// id (which theirs derive from), incident, cluster and trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lineage {
    pub id: Uuid,
    pub incident_id: Option<String>,
    pub cluster: String,
    pub trace: Trace,
}

impl<P> Envelope<P> {
    pub fn lineage(&self) -> Lineage {
        Lineage {
            id: self.id,
            incident_id: self.incident_id.clone(),
            cluster: self.cluster.clone(),
            trace: self.trace.clone(),
        }
    }
}

/// Deterministic UUIDv7 for an output of `parent`.
pub fn derived_id(parent: Uuid, schema: &str, discriminator: &str) -> Uuid {
    let millis = parent
        .get_timestamp()
        .map(|ts| {
            let (secs, nanos) = ts.to_unix();
            secs * 1000 + u64::from(nanos) / 1_000_000
        })
        .unwrap_or(0);
    let digest = Sha256::new()
        .chain_update(parent.as_bytes())
        .chain_update(schema.as_bytes())
        .chain_update([0u8])
        .chain_update(discriminator.as_bytes())
        .finalize();
    let mut random = [0u8; 10];
    random.copy_from_slice(&digest[..10]);
    uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid()
}

/// Error decoding an envelope from bytes.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("message is not valid JSON for {schema}: {source}")]
    Json {
        schema: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("message carries schema {found:?}, expected {expected:?}")]
    WrongSchema {
        expected: &'static str,
        found: String,
    },
}

impl<P: Payload> Envelope<P> {
    /// Parses and checks the schema id.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, DecodeError> {
        let envelope: Self = serde_json::from_slice(bytes).map_err(|source| DecodeError::Json {
            schema: P::SCHEMA,
            source,
        })?;
        if envelope.schema != P::SCHEMA {
            return Err(DecodeError::WrongSchema {
                expected: P::SCHEMA,
                found: envelope.schema,
            });
        }
        Ok(envelope)
    }

    pub fn to_vec(&self) -> Vec<u8> {
        // Envelopes are mostly 0.5–4 KiB: starting at 1 KiB instead of serde_json's 128 bytes
        // saves three or four grow-and-copy steps on every message.
        let mut bytes = Vec::with_capacity(1024);
        serde_json::to_writer(&mut bytes, self).expect("envelopes always serialize");
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::approval::{Approval, ApprovalDecision};

    fn approval() -> Approval {
        Approval {
            idempotency_key: "k".into(),
            decision: ApprovalDecision::Approve,
            approver: "alice@example.com".into(),
            comment: None,
            signature: None,
        }
    }

    #[test]
    fn derived_ids_are_stable_v7_and_distinct_per_discriminator() {
        let parent = Envelope::new("test", "c1", Some("inc".into()), approval());
        let a = Envelope::derive(&parent, "svc", "x", approval());
        let b = Envelope::derive(&parent, "svc", "x", approval());
        let c = Envelope::derive(&parent, "svc", "y", approval());
        assert_eq!(a.id, b.id);
        assert_ne!(a.id, c.id);
        assert_eq!(a.id.get_version_num(), 7);
        assert_eq!(a.incident_id.as_deref(), Some("inc"));
        assert_eq!(
            a.trace.traceparent[..35],
            parent.trace.traceparent[..35],
            "child keeps the trace id"
        );
    }

    #[test]
    fn wrong_schema_is_rejected_with_both_names() {
        let mut env = Envelope::new("test", "c1", None, approval());
        env.schema = "opsmesh.alerts.v1".into();
        let err = Envelope::<Approval>::from_slice(&env.to_vec()).unwrap_err();
        assert!(err.to_string().contains("opsmesh.alerts.v1"), "{err}");
    }
}
