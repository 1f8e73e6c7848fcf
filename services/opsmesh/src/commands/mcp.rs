//! `opsmesh mcp`: the reporter's MCP tools over stdio, for AI assistants that launch servers
//! as subprocesses (Claude Desktop, IDEs). The timeline is read from the bus.

use std::{path::Path, process::ExitCode};

use opsmesh_runtime::{ConfigTree, launcher, shutdown, telemetry};
use tokio_util::sync::CancellationToken;

/// Environment variable holding the bearer token that authorises approve/reject.
pub const TOKEN_ENV: &str = "OPSMESH_MCP_TOKEN";

pub fn run(config: Option<&Path>) -> ExitCode {
    let tree = match ConfigTree::load(config) {
        Ok(tree) => tree,
        Err(err) => return launcher::fail(&err),
    };
    match tree.settings() {
        Ok(settings) => telemetry::init(&settings.log),
        Err(err) => return launcher::fail(&err),
    }
    let token = std::env::var(TOKEN_ENV).ok().filter(|t| !t.is_empty());
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => return launcher::fail(&err),
    };
    runtime.block_on(async move {
        let stop = CancellationToken::new();
        shutdown::cancel_on_signal(stop.clone());
        match opsmesh_reporter::mcp::run_stdio(&tree, token.as_deref(), stop).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => launcher::fail(&err),
        }
    })
}
