//! Stable alert identity: the same condition on the same entity always gives the same
//! fingerprint, whatever the volatile fields (times, counts, rates) say.

use opsmesh_proto::alert::{Entity, EntityKind};
use sha2::{Digest, Sha256};

/// 32 hex characters of SHA-256 over the sender family, the alert name and the entity.
pub fn of(family: &str, name: &str, entity: &Entity) -> String {
    let parts = [
        family,
        name,
        entity.cluster.as_deref().unwrap_or(""),
        entity.namespace.as_deref().unwrap_or(""),
        entity.kind.map_or("", kind_name),
        entity.name.as_deref().unwrap_or(""),
        entity.policy.as_deref().unwrap_or(""),
        entity.application.as_deref().unwrap_or(""),
    ];
    let mut hasher = Sha256::new();
    for part in parts {
        update_prefixed(&mut hasher, part.as_bytes());
    }
    // Only an unusable entity adds parts, so every usable entity keeps its fingerprint; its
    // quoted values tell apart alerts that named different garbage.
    for unusable in &entity.unusable {
        update_prefixed(&mut hasher, unusable.field.as_bytes());
        update_prefixed(&mut hasher, unusable.quoted.as_bytes());
    }
    hex_digest(hasher)
}

/// An Alertmanager alert's incident key: the sender's fingerprint namespaced by the source
/// that sent it, so one source's `resolved` can never close another source's incident that
/// happens to carry the same Alertmanager fingerprint (two Alertmanagers fingerprint the same
/// labels alike, and a hostile source can copy any fingerprint it has seen).
pub fn of_alertmanager(source: &str, sender_fingerprint: &str) -> String {
    let mut hasher = Sha256::new();
    for part in ["alertmanager", source, sender_fingerprint] {
        update_prefixed(&mut hasher, part.as_bytes());
    }
    hex_digest(hasher)
}

/// The first 16 bytes of the digest as 32 hex characters.
fn hex_digest(hasher: Sha256) -> String {
    let mut hex = [0u8; 32];
    hex::encode_to_slice(&hasher.finalize()[..16], &mut hex).expect("16 bytes are 32 digits");
    String::from_utf8(hex.to_vec()).expect("hex digits are ASCII")
}

/// The kind as its `Debug` name, which earlier releases hashed: it must never change.
fn kind_name(kind: EntityKind) -> &'static str {
    match kind {
        EntityKind::Inferenceservice => "Inferenceservice",
        EntityKind::Pod => "Pod",
        EntityKind::Namespace => "Namespace",
        EntityKind::Application => "Application",
    }
}

/// Hashes `bytes` behind their length, so adjacent parts cannot run into each other:
/// ("ab", "c") and ("a", "bc") differ.
pub fn update_prefixed(hasher: &mut Sha256, bytes: &[u8]) {
    hasher.update((bytes.len() as u64).to_be_bytes());
    hasher.update(bytes);
}

#[cfg(test)]
mod tests {
    use opsmesh_proto::alert::EntityKind;

    #[test]
    fn kinds_hash_as_their_debug_names() {
        for kind in [
            EntityKind::Inferenceservice,
            EntityKind::Pod,
            EntityKind::Namespace,
            EntityKind::Application,
        ] {
            assert_eq!(super::kind_name(kind), format!("{kind:?}"));
        }
    }
}
