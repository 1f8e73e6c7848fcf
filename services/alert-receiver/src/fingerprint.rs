//! Stable alert identity: the same condition on the same entity always gives the same
//! fingerprint, whatever the volatile fields (times, counts, rates) say.

use opsmesh_proto::alert::Entity;
use sha2::{Digest, Sha256};

/// 32 hex characters of SHA-256 over the sender family, the alert name and the entity.
pub fn of(family: &str, name: &str, entity: &Entity) -> String {
    let kind = entity.kind.map(|k| format!("{k:?}")).unwrap_or_default();
    let parts = [
        family,
        name,
        entity.cluster.as_deref().unwrap_or(""),
        entity.namespace.as_deref().unwrap_or(""),
        &kind,
        entity.name.as_deref().unwrap_or(""),
        entity.policy.as_deref().unwrap_or(""),
        entity.application.as_deref().unwrap_or(""),
    ];
    let mut hasher = Sha256::new();
    for part in parts {
        update_prefixed(&mut hasher, part.as_bytes());
    }
    hex::encode(&hasher.finalize()[..16])
}

/// Hashes `bytes` behind their length, so adjacent parts cannot run into each other:
/// ("ab", "c") and ("a", "bc") differ.
pub fn update_prefixed(hasher: &mut Sha256, bytes: &[u8]) {
    hasher.update((bytes.len() as u64).to_be_bytes());
    hasher.update(bytes);
}
