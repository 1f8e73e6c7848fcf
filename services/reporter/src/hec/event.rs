//! opsmesh envelope → HEC event envelope.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use opsmesh_proto::{
    envelope::Envelope,
    topics::{
        ALERTS, APPROVALS, DIAGNOSES, INVESTIGATION_REQUESTS, INVESTIGATIONS, REMEDIATIONS,
        TELEMETRY,
    },
};

#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("not an opsmesh envelope: {0}")]
    NotAnEnvelope(#[from] serde_json::Error),
    #[error("unknown schema {0:?}")]
    UnknownSchema(String),
}

/// One HEC event envelope.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HecEvent {
    /// Event time, epoch seconds with fraction.
    pub time: f64,
    pub host: String,
    pub source: String,
    pub sourcetype: String,
    pub index: String,
    /// Flat indexed fields: what `incident_id=<id>` searches match.
    pub fields: Map<String, Value>,
    pub event: Value,
}

/// An event ready for the wire: its HEC envelope as one line of JSON (no trailing newline),
/// and what the writer needs to know about it.
#[derive(Debug, Clone)]
pub struct EncodedEvent {
    /// The opsmesh envelope id (deduplication key).
    pub id: Uuid,
    /// Event time, epoch seconds.
    pub time: f64,
    pub sourcetype: &'static str,
    pub line: Vec<u8>,
}

/// The envelope's HEC metadata, serialised before the event itself.
#[derive(Serialize)]
struct Head<'a> {
    time: f64,
    host: &'a str,
    source: &'a str,
    sourcetype: &'a str,
    index: &'a str,
    fields: &'a Map<String, Value>,
}

struct Parsed {
    envelope: Envelope<Value>,
    sourcetype: &'static str,
    fields: Map<String, Value>,
    time: f64,
}

fn parse(bytes: &[u8]) -> Result<Parsed, EncodeError> {
    let envelope: Envelope<Value> = serde_json::from_slice(bytes)?;
    let payload = &envelope.payload;
    let sourcetype = match envelope.schema.as_str() {
        ALERTS => "opsmesh:alert",
        DIAGNOSES => "opsmesh:diagnosis",
        REMEDIATIONS => "opsmesh:remediation",
        APPROVALS => "opsmesh:approval",
        // Requests (queued) beside the investigator's messages: one search replays an
        // investigation from the request to the report.
        INVESTIGATIONS | INVESTIGATION_REQUESTS => "opsmesh:investigation",
        TELEMETRY => match str_at(payload, &["record", "kind"]) {
            Some("models") => "opsmesh:models",
            Some("policies") => "opsmesh:policies",
            Some("costs") => "opsmesh:costs",
            Some("argocd") => "opsmesh:argocd",
            _ => "opsmesh:collector",
        },
        other => return Err(EncodeError::UnknownSchema(other.to_owned())),
    };
    let mut fields = Map::new();
    let mut put = |name: &str, value: Option<&str>| {
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            fields.insert(name.to_owned(), Value::String(v.to_owned()));
        }
    };
    put("incident_id", envelope.incident_id.as_deref());
    put("cluster", Some(&envelope.cluster));
    put("event_id", Some(&envelope.id.to_string()));
    // The trace id of `00-<trace id>-<span id>-<flags>`: the id a trace viewer shows.
    put("trace_id", envelope.trace.traceparent.get(3..35));
    put(
        "namespace",
        str_at(payload, &["entity", "namespace"]).or(str_at(payload, &["record", "namespace"])),
    );
    put("root_cause", str_at(payload, &["root_cause"]));
    put("action", str_at(payload, &["action", "kind"]));
    put("outcome", str_at(payload, &["state"]));
    put("investigation_id", str_at(payload, &["investigation_id"]));
    let time = envelope.occurred_at.timestamp_micros() as f64 / 1e6;
    Ok(Parsed {
        envelope,
        sourcetype,
        fields,
        time,
    })
}

impl HecEvent {
    pub fn from_envelope(bytes: &[u8], index: &str, host: &str) -> Result<Self, EncodeError> {
        let Parsed {
            envelope,
            sourcetype,
            fields,
            time,
        } = parse(bytes)?;
        Ok(Self {
            time,
            host: host.to_owned(),
            source: envelope.source.clone(),
            sourcetype: sourcetype.to_owned(),
            index: index.to_owned(),
            fields,
            event: serde_json::to_value(&envelope)?,
        })
    }
}

impl EncodedEvent {
    /// Encodes one opsmesh envelope. The event is the envelope's original bytes when they
    /// are already one line of JSON (the common case: producers write compact JSON), so an
    /// event is parsed once and never re-serialised.
    pub fn from_envelope(bytes: &[u8], index: &str, host: &str) -> Result<Self, EncodeError> {
        let parsed = parse(bytes)?;
        let head = Head {
            time: parsed.time,
            host,
            source: &parsed.envelope.source,
            sourcetype: parsed.sourcetype,
            index,
            fields: &parsed.fields,
        };
        let mut line = Vec::with_capacity(bytes.len() + 256);
        serde_json::to_writer(&mut line, &head)?;
        // Replace the closing brace of the head with the event.
        line.pop();
        line.extend_from_slice(b",\"event\":");
        let raw = bytes.trim_ascii();
        if raw.iter().any(|b| *b == b'\n' || *b == b'\r') {
            serde_json::to_writer(&mut line, &parsed.envelope)?;
        } else {
            line.extend_from_slice(raw);
        }
        line.push(b'}');
        Ok(Self {
            id: parsed.envelope.id,
            time: parsed.time,
            sourcetype: parsed.sourcetype,
            line,
        })
    }
}

fn str_at<'v>(value: &'v Value, path: &[&str]) -> Option<&'v str> {
    path.iter().try_fold(value, |v, key| v.get(key))?.as_str()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALERT: &str = include_str!("../../../../proto/examples/opsmesh.alerts.v1.json");
    const DIAGNOSIS: &str = include_str!("../../../../proto/examples/opsmesh.diagnoses.v1.json");

    #[test]
    fn the_encoded_line_equals_the_typed_event() {
        for example in [ALERT, DIAGNOSIS] {
            let compact =
                serde_json::to_vec(&serde_json::from_str::<Value>(example).unwrap()).unwrap();
            for bytes in [example.as_bytes(), compact.as_slice()] {
                let typed = HecEvent::from_envelope(bytes, "opsmesh", "h").unwrap();
                let encoded = EncodedEvent::from_envelope(bytes, "opsmesh", "h").unwrap();
                assert!(!encoded.line.contains(&b'\n'));
                let decoded: HecEvent = serde_json::from_slice(&encoded.line).unwrap();
                assert_eq!(decoded, typed);
                assert_eq!(encoded.sourcetype, typed.sourcetype);
            }
        }
    }

    #[test]
    fn investigation_steps_have_their_sourcetype() {
        let step = include_str!("../../../../proto/examples/opsmesh.investigations.v1.json");
        let event = HecEvent::from_envelope(step.as_bytes(), "opsmesh", "h").unwrap();
        assert_eq!(event.sourcetype, "opsmesh:investigation");
        assert_eq!(event.event["payload"]["update"]["tool"], "splunk_search");
        assert!(event.fields.contains_key("incident_id"));
        let request =
            include_str!("../../../../proto/examples/opsmesh.investigation-requests.v1.json");
        let queued = HecEvent::from_envelope(request.as_bytes(), "opsmesh", "h").unwrap();
        assert_eq!(queued.sourcetype, "opsmesh:investigation");
        assert_eq!(
            queued.fields["investigation_id"],
            queued.event["payload"]["investigation_id"]
        );
    }

    #[test]
    fn fields_are_flat_strings() {
        let event = HecEvent::from_envelope(DIAGNOSIS.as_bytes(), "opsmesh", "h").unwrap();
        assert_eq!(event.sourcetype, "opsmesh:diagnosis");
        assert!(event.fields.values().all(Value::is_string));
        assert!(event.fields.contains_key("incident_id"));
        assert!(event.fields.contains_key("root_cause"));
        let traceparent = event.event["trace"]["traceparent"].as_str().unwrap();
        assert_eq!(event.fields["trace_id"], traceparent[3..35]);
    }

    #[test]
    fn unknown_schemas_and_garbage_are_refused() {
        let err = EncodedEvent::from_envelope(b"{\"x\":", "i", "h").unwrap_err();
        assert!(err.to_string().starts_with("not an opsmesh envelope"));
        let other = ALERT.replace("opsmesh.alerts.v1", "opsmesh.other.v9");
        let err = EncodedEvent::from_envelope(other.as_bytes(), "i", "h").unwrap_err();
        assert!(matches!(err, EncodeError::UnknownSchema(_)));
    }
}
