//! Ed25519 signatures carried on the wire: who signed (the key id) and the signature. What
//! each payload signs is defined beside it ([`crate::approval::signed_bytes`],
//! [`crate::ledger::LedgerLink`]); signing and key handling live in the runtime.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Signature {
    /// First 8 bytes of the SHA-256 of the signer's public key, hex: which key to check with,
    /// so keys can be rotated (verifiers hold the old and the new one for a while).
    pub key_id: String,
    /// The 64-byte Ed25519 signature, base64 (standard alphabet, padded).
    pub value: String,
}

/// Bytes signed for `message` under `domain`: the domain, a NUL, the message. A signature made
/// for one purpose (an approval) can never be replayed as another (a ledger record).
pub fn domain_separated(domain: &str, message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(domain.len() + 1 + message.len());
    out.extend_from_slice(domain.as_bytes());
    out.push(0);
    out.extend_from_slice(message);
    out
}
