use std::{path::Path, process::ExitCode};

use opsmesh_runtime::{ConfigTree, launcher};

pub fn run(config: Option<&Path>, names: &[String]) -> ExitCode {
    let tree = match ConfigTree::load(config) {
        Ok(tree) => tree,
        Err(err) => return launcher::fail(&err),
    };
    let services = crate::SERVICES
        .iter()
        .copied()
        .filter(|s| names.iter().any(|n| n == s.name))
        .collect();
    launcher::run_to_exit(tree, services, None)
}
