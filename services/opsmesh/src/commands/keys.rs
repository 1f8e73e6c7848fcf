//! `opsmesh keys generate`: the Ed25519 key pairs opsmesh signs with — approvals (the
//! reporter signs, the remediator verifies) and the audit ledger (the remediator signs,
//! `opsmesh audit verify --keys` checks). The single-process modes generate theirs in memory
//! ([`crate::keys`]).

use std::{path::Path, path::PathBuf, process::ExitCode};

use clap::{Args, Subcommand};

use opsmesh_runtime::{launcher, signing::KeyPair};

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Write a new approval key pair and a new ledger key pair into a directory:
    /// `approvals.key.pem` / `approvals.pub.pem` and `ledger.key.pem` / `ledger.pub.pem`
    /// (private keys mode 0600). Refuses to overwrite existing files.
    Generate(GenerateArgs),
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Directory to write the keys into (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

/// What each key file is for, printed after generation.
const USES: &[(&str, &str)] = &[
    ("approvals.key.pem", "reporter.approvals.signing_key.file"),
    ("approvals.pub.pem", "remediator.approvals.verify_keys.file"),
    ("ledger.key.pem", "remediator.ledger.signing_key.file"),
    ("ledger.pub.pem", "opsmesh audit verify --keys"),
];

pub fn run(command: KeysCommand) -> ExitCode {
    let KeysCommand::Generate(args) = command;
    match generate(&args.out) {
        Ok(()) => {
            for (file, use_) in USES {
                println!("{}  ->  {use_}", args.out.join(file).display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => launcher::fail(&e),
    }
}

fn generate(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for (file, _) in USES {
        let path = dir.join(file);
        if path.exists() {
            return Err(format!("{} exists; not overwritten", path.display()));
        }
    }
    for name in ["approvals", "ledger"] {
        let pair = KeyPair::generate();
        super::write_private(&dir.join(format!("{name}.key.pem")), &pair.private_pem())
            .and_then(|()| std::fs::write(dir.join(format!("{name}.pub.pem")), pair.public_pem()))
            .map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_load_where_their_use_says_and_are_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        generate(dir.path()).unwrap();
        let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).unwrap();
        let approvals = KeyPair::from_pem(&read("approvals.key.pem")).unwrap();
        let ring = opsmesh_runtime::signing::KeyRing::from_pem(&read("approvals.pub.pem")).unwrap();
        assert_eq!(ring.ids(), [approvals.id()]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("ledger.key.pem"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "private keys are private: {mode:o}");
        }
        let again = generate(dir.path()).unwrap_err();
        assert!(again.contains("not overwritten"), "{again}");
    }
}
