use std::{path::Path, process::ExitCode};

use opsmesh_runtime::launcher;

pub fn run(config: Option<&Path>) -> ExitCode {
    match super::embedded_tree(config) {
        Ok(embedded) => launcher::run_to_exit(embedded.tree, crate::SERVICES.to_vec(), None),
        Err(err) => launcher::fail(&err),
    }
}
