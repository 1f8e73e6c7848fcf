//! Approval and ledger keys for the services of one process (`opsmesh up`, `demo`, the
//! scenario harness), generated at start unless configured.

use opsmesh_runtime::{ConfigTree, signing::KeyPair};

/// Configuration (TOML) giving the services of one process fresh approval and ledger keys,
/// for the keys `probe` does not configure. With `announce`, the ledger's public key is
/// written to a file named on stderr, for `opsmesh audit verify --keys`.
pub fn embedded(probe: &ConfigTree, announce: bool) -> Result<String, String> {
    let mut toml = String::new();
    let approvals = KeyPair::generate();
    if !probe.contains("reporter.approvals.signing_key") {
        toml.push_str(&format!(
            "[reporter.approvals.signing_key]\nvalue = {:?}\n",
            approvals.private_pem()
        ));
    }
    if !probe.contains("remediator.approvals.verify_keys") {
        toml.push_str(&format!(
            "[remediator.approvals.verify_keys]\nvalue = {:?}\n",
            approvals.public_pem()
        ));
    }
    if !probe.contains("remediator.ledger.signing_key") {
        let ledger = KeyPair::generate();
        if announce {
            let path =
                std::env::temp_dir().join(format!("opsmesh-ledger-{}.pub.pem", std::process::id()));
            std::fs::write(&path, ledger.public_pem())
                .map_err(|e| format!("writing {}: {e}", path.display()))?;
            eprintln!(
                "audit ledger: signed with a key generated at start; public key in {} (opsmesh audit verify --keys)",
                path.display()
            );
        }
        toml.push_str(&format!(
            "[remediator.ledger.signing_key]\nvalue = {:?}\n",
            ledger.private_pem()
        ));
    }
    Ok(toml)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_keys_parse_and_pair_up() {
        let probe = ConfigTree::load_with_env(None, Vec::<(String, String)>::new()).unwrap();
        let toml = embedded(&probe, false).unwrap();
        let tree =
            ConfigTree::load_layered(Some(&toml), None, Vec::<(String, String)>::new()).unwrap();
        assert!(tree.contains("reporter.approvals.signing_key"));
        assert!(tree.contains("remediator.approvals.verify_keys"));
        assert!(tree.contains("remediator.ledger.signing_key"));
    }
}
