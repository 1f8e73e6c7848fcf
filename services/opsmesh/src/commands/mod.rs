pub mod demo;
pub mod run;
pub mod tail;
pub mod topics;
pub mod up;

use std::path::Path;

use opsmesh_runtime::{ConfigError, ConfigTree};

/// Defaults of the single-process modes: in-memory bus, loopback HTTP, HEC to a file unless
/// a Splunk URL is configured.
pub fn embedded_tree(config: Option<&Path>) -> Result<ConfigTree, ConfigError> {
    let probe = ConfigTree::load(config)?;
    let mut defaults =
        String::from("[http]\nlisten = \"127.0.0.1:8080\"\n[bus]\nkind = \"memory\"\n");
    if !probe.contains("reporter.hec.url") {
        defaults.push_str("[reporter.hec]\nfile = \"opsmesh.hec.jsonl\"\n");
    }
    ConfigTree::load_layered(Some(&defaults), config, std::env::vars())
}
