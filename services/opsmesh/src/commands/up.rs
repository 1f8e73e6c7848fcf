use std::{path::Path, process::ExitCode};

use opsmesh_runtime::launcher;

pub fn run(config: Option<&Path>) -> ExitCode {
    match super::embedded_tree(config) {
        Ok(tree) => launcher::run_to_exit(tree, crate::SERVICES.to_vec(), None),
        Err(err) => launcher::fail(&err),
    }
}
