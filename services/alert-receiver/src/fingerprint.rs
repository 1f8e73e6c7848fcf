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
