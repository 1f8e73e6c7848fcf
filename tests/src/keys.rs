//! The signing keys a test hands to the services it starts: one approval key pair (the
//! reporter signs, the remediator verifies) and one ledger key pair (the remediator signs,
//! `opsmesh audit verify --keys` checks), generated once per test process.

use std::sync::OnceLock;

use opsmesh_proto::{
    Envelope,
    approval::{Approval, signed_bytes},
};
use opsmesh_runtime::signing::KeyPair;

pub struct TestKeys {
    pub approvals: KeyPair,
    pub ledger: KeyPair,
}

/// This process's keys.
pub fn keys() -> &'static TestKeys {
    static KEYS: OnceLock<TestKeys> = OnceLock::new();
    KEYS.get_or_init(|| TestKeys {
        approvals: KeyPair::generate(),
        ledger: KeyPair::generate(),
    })
}

impl TestKeys {
    /// Environment giving a remediator the approval public key and the ledger private key.
    pub fn remediator_env(&self) -> Vec<(&'static str, String)> {
        vec![
            (
                "OPSMESH__REMEDIATOR__APPROVALS__VERIFY_KEYS__VALUE",
                self.approvals.public_pem(),
            ),
            (
                "OPSMESH__REMEDIATOR__LEDGER__SIGNING_KEY__VALUE",
                self.ledger.private_pem(),
            ),
        ]
    }

    /// Environment giving a reporter the approval private key.
    pub fn reporter_env(&self) -> Vec<(&'static str, String)> {
        vec![(
            "OPSMESH__REPORTER__APPROVALS__SIGNING_KEY__VALUE",
            self.approvals.private_pem(),
        )]
    }

    /// Signs `envelope` as the reporter does.
    pub fn sign_approval(&self, envelope: &mut Envelope<Approval>) {
        envelope.payload.signature = Some(self.approvals.sign(&signed_bytes(envelope)));
    }
}
