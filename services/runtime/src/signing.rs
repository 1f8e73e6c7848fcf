//! Ed25519 keys for what opsmesh signs (approvals, ledger records): a [`Signer`] holds one
//! private key, a [`Verifier`] the public keys it trusts (several during a rotation). Keys are
//! PEM files as `openssl genpkey -algorithm ed25519` and `openssl pkey -pubout` write them, or
//! as `opsmesh keys generate` does, loaded through [`crate::secret`] so a rotated file is
//! picked up without a restart.

use base64::{Engine as _, engine::general_purpose::STANDARD};
use ed25519_dalek::{
    Signer as _, SigningKey, Verifier as _, VerifyingKey,
    pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, spki::der::pem},
};
use sha2::{Digest, Sha256};

use opsmesh_proto::signature::Signature;

use crate::{
    ConfigError,
    secret::{Secret, SecretSource},
};

/// Why a signature was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("not signed")]
    Missing,
    #[error("signed with key {0}, which is not trusted")]
    UnknownKey(String),
    #[error("signature by key {0} does not match the content")]
    Mismatch(String),
    #[error("signature is malformed: {0}")]
    Malformed(String),
}

/// Id of a public key: the first 8 bytes of its SHA-256, hex.
pub fn key_id(key: &VerifyingKey) -> String {
    hex::encode(&Sha256::digest(key.as_bytes())[..8])
}

/// A private key and its id.
pub struct KeyPair {
    key: SigningKey,
    id: String,
}

impl KeyPair {
    /// A fresh random key.
    pub fn generate() -> Self {
        Self::from_key(SigningKey::from_bytes(&rand::random::<[u8; 32]>()))
    }

    fn from_key(key: SigningKey) -> Self {
        let id = key_id(&key.verifying_key());
        Self { key, id }
    }

    /// Parses a PKCS#8 PEM private key (`-----BEGIN PRIVATE KEY-----`).
    pub fn from_pem(text: &str) -> Result<Self, String> {
        SigningKey::from_pkcs8_pem(text.trim())
            .map(Self::from_key)
            .map_err(|e| format!("not an Ed25519 PKCS#8 PEM private key: {e}"))
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The private key as PKCS#8 PEM.
    pub fn private_pem(&self) -> String {
        self.key
            .to_pkcs8_pem(pem::LineEnding::LF)
            .expect("an Ed25519 key encodes")
            .to_string()
    }

    /// The public key as SPKI PEM.
    pub fn public_pem(&self) -> String {
        self.key
            .verifying_key()
            .to_public_key_pem(pem::LineEnding::LF)
            .expect("an Ed25519 key encodes")
    }

    pub fn sign(&self, message: &[u8]) -> Signature {
        Signature {
            key_id: self.id.clone(),
            value: STANDARD.encode(self.key.sign(message).to_bytes()),
        }
    }
}

/// Public keys trusted to verify, by id.
pub struct KeyRing {
    keys: Vec<(String, VerifyingKey)>,
}

impl KeyRing {
    /// Parses one or more SPKI PEM public keys (`-----BEGIN PUBLIC KEY-----` blocks, e.g. the
    /// current and the next key during a rotation).
    pub fn from_pem(text: &str) -> Result<Self, String> {
        const BEGIN: &str = "-----BEGIN PUBLIC KEY-----";
        let mut keys = Vec::new();
        for (n, block) in text.split(BEGIN).skip(1).enumerate() {
            let pem = format!("{BEGIN}{block}");
            let key = VerifyingKey::from_public_key_pem(pem.trim())
                .map_err(|e| format!("public key #{}: not an Ed25519 SPKI PEM key: {e}", n + 1))?;
            keys.push((key_id(&key), key));
        }
        if keys.is_empty() {
            return Err(format!("no `{BEGIN}` block found"));
        }
        Ok(Self { keys })
    }

    pub fn ids(&self) -> Vec<&str> {
        self.keys.iter().map(|(id, _)| id.as_str()).collect()
    }

    pub fn verify(
        &self,
        message: &[u8],
        signature: Option<&Signature>,
    ) -> Result<(), SignatureError> {
        let signature = signature.ok_or(SignatureError::Missing)?;
        let (_, key) = self
            .keys
            .iter()
            .find(|(id, _)| *id == signature.key_id)
            .ok_or_else(|| SignatureError::UnknownKey(signature.key_id.clone()))?;
        let bytes = STANDARD
            .decode(&signature.value)
            .map_err(|e| SignatureError::Malformed(e.to_string()))?;
        let bytes: [u8; 64] = bytes.try_into().map_err(|b: Vec<u8>| {
            SignatureError::Malformed(format!("{} bytes, not 64", b.len()))
        })?;
        key.verify(message, &ed25519_dalek::Signature::from_bytes(&bytes))
            .map_err(|_| SignatureError::Mismatch(signature.key_id.clone()))
    }
}

/// A service's signing key, configured at `key`, re-read when its file changes.
#[derive(Debug)]
pub struct Signer(Secret<KeyPair>);

impl Signer {
    /// `None` when nothing is configured at `key`.
    pub fn load(key: &str, source: &SecretSource) -> Result<Option<Self>, ConfigError> {
        Ok(Secret::load(key, source, KeyPair::from_pem)?.map(Self))
    }

    /// A signer holding `pair` in memory only (a key generated at start, tests).
    pub fn fixed(key: &str, pair: KeyPair) -> Self {
        Self(Secret::fixed(key, pair, KeyPair::from_pem))
    }

    pub fn sign(&self, message: &[u8]) -> Signature {
        self.0.get().sign(message)
    }

    /// The public half of the current key, as SPKI PEM (to hand to verifiers).
    pub fn public_pem(&self) -> String {
        self.0.get().public_pem()
    }
}

/// The public keys a service trusts, configured at `key`, re-read when their file changes.
#[derive(Debug)]
pub struct Verifier(Secret<KeyRing>);

impl Verifier {
    /// `None` when nothing is configured at `key`.
    pub fn load(key: &str, source: &SecretSource) -> Result<Option<Self>, ConfigError> {
        Ok(Secret::load(key, source, KeyRing::from_pem)?.map(Self))
    }

    /// A verifier trusting `ring`, held in memory only.
    pub fn fixed(key: &str, ring: KeyRing) -> Self {
        Self(Secret::fixed(key, ring, KeyRing::from_pem))
    }

    pub fn verify(
        &self,
        message: &[u8],
        signature: Option<&Signature>,
    ) -> Result<(), SignatureError> {
        self.0.get().verify(message, signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_only_for_its_message_and_key() {
        let pair = KeyPair::generate();
        let other = KeyPair::generate();
        let ring =
            KeyRing::from_pem(&format!("{}{}", other.public_pem(), pair.public_pem())).unwrap();
        assert_eq!(ring.ids(), [other.id(), pair.id()]);

        let signature = pair.sign(b"approve k1");
        assert_eq!(ring.verify(b"approve k1", Some(&signature)), Ok(()));
        assert_eq!(
            ring.verify(b"approve k2", Some(&signature)),
            Err(SignatureError::Mismatch(pair.id().to_owned()))
        );
        assert_eq!(
            ring.verify(b"approve k1", None),
            Err(SignatureError::Missing)
        );

        let stranger = KeyPair::generate();
        assert_eq!(
            ring.verify(b"approve k1", Some(&stranger.sign(b"approve k1"))),
            Err(SignatureError::UnknownKey(stranger.id().to_owned()))
        );
        // A stranger claiming a trusted key's id is a mismatch, not a pass.
        let mut forged = stranger.sign(b"approve k1");
        forged.key_id = pair.id().to_owned();
        assert!(matches!(
            ring.verify(b"approve k1", Some(&forged)),
            Err(SignatureError::Mismatch(_))
        ));
        let mut truncated = signature.clone();
        truncated.value.truncate(20);
        assert!(matches!(
            ring.verify(b"approve k1", Some(&truncated)),
            Err(SignatureError::Malformed(_))
        ));
    }

    #[test]
    fn keys_round_trip_through_pem_and_bad_pem_says_why() {
        let pair = KeyPair::generate();
        let again = KeyPair::from_pem(&pair.private_pem()).unwrap();
        assert_eq!(again.id(), pair.id());
        assert!(
            KeyPair::from_pem(&pair.public_pem())
                .err()
                .unwrap()
                .contains("PKCS#8")
        );
        assert!(KeyRing::from_pem("").err().unwrap().contains("no `"));
        assert!(
            KeyRing::from_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
                .err()
                .unwrap()
                .contains("public key #1")
        );
    }

    #[test]
    fn loaders_name_the_key_in_errors() {
        let err = Signer::load(
            "reporter.approvals.signing_key",
            &SecretSource::value("nope"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("`reporter.approvals.signing_key.value`"),
            "{err}"
        );
        assert!(
            Verifier::load("k", &SecretSource::default())
                .unwrap()
                .is_none()
        );
    }
}
