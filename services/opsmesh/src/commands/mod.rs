pub mod audit;
pub mod demo;
pub mod dlq;
pub mod eval;
pub mod investigate;
pub mod keys;
pub mod mcp;
pub mod run;
pub mod scenario;
pub mod sim;
pub mod status;
pub mod tail;
pub mod topics;
pub mod up;

use std::path::Path;

use opsmesh_runtime::{ConfigError, ConfigTree};

/// Name of the alert source the single-process modes configure when none is.
pub const LOCAL_SOURCE: &str = "local";

/// Defaults of the single-process modes: in-memory bus, loopback HTTP, HEC to a file unless
/// a Splunk URL is configured, and an alert source `local` with a fresh signing secret
/// (written to a private file in the temp directory) unless sources are configured, and
/// approval and ledger keys generated at start unless configured.
pub fn embedded_tree(config: Option<&Path>) -> Result<ConfigTree, ConfigError> {
    let probe = ConfigTree::load(config)?;
    let mut defaults = String::from(
        "[http]\nlisten = \"127.0.0.1:8080\"\nadmin_listen = \"127.0.0.1:9090\"\n[bus]\nkind = \"memory\"\n",
    );
    if !probe.contains("reporter.hec.url") {
        defaults.push_str("[reporter.hec]\nfile = \"opsmesh.hec.jsonl\"\n");
    }
    if !probe.contains("receiver.sources") {
        let secret = uuid::Uuid::new_v4().simple().to_string();
        let path =
            std::env::temp_dir().join(format!("opsmesh-local-{}.secret", std::process::id()));
        write_private(&path, &secret).map_err(|e| {
            ConfigError::invalid(
                "receiver.sources",
                format!("writing {}: {e}", path.display()),
            )
        })?;
        eprintln!(
            "alert source {LOCAL_SOURCE:?}: signing secret in {} (X-Opsmesh-Signature)",
            path.display()
        );
        defaults.push_str(&format!(
            "[receiver.sources.{LOCAL_SOURCE}]\nsecrets_file = {:?}\n",
            path.display().to_string()
        ));
    }
    defaults.push_str(
        &crate::keys::embedded(&probe, true)
            .map_err(|e| ConfigError::invalid("remediator.ledger", e))?,
    );
    ConfigTree::load_layered(Some(&defaults), config, std::env::vars())
}

fn write_private(path: &Path, secret: &str) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    options.open(path)?.write_all(secret.as_bytes())
}
