//! Kubernetes name rules (RFC 1123, [`opsmesh_proto::name`]), applied to every name taken
//! from an alert, and the shape of Alertmanager fingerprints.

pub use opsmesh_proto::name::NameKind;

/// The reason in words: it becomes the problem's `detail`.
pub fn validate(value: &str, kind: NameKind) -> Result<(), String> {
    opsmesh_proto::name::validate_name(value, kind).map_err(|e| e.to_string())
}

/// Alertmanager fingerprints are hex strings (16 characters today).
pub fn is_fingerprint(value: &str) -> bool {
    !value.is_empty() && value.len() <= 64 && value.bytes().all(|b| b.is_ascii_hexdigit())
}
