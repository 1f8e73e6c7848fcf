use std::{io::Write, path::Path, process::ExitCode};

use clap::Args;
use tokio_util::sync::CancellationToken;

use opsmesh_runtime::{ConfigTree, bus, launcher, shutdown, telemetry};

#[derive(Debug, Args)]
pub struct TailArgs {
    /// Topic to print, e.g. opsmesh.alerts.v1 (or its .dlq).
    topic: String,
    /// Start at the oldest retained message instead of new ones only.
    #[arg(long)]
    from_beginning: bool,
    /// Exit after this many messages.
    #[arg(long)]
    limit: Option<u64>,
}

pub fn run(config: Option<&Path>, args: TailArgs) -> ExitCode {
    let mut settings = match ConfigTree::load(config).and_then(|t| t.settings()) {
        Ok(settings) => settings,
        Err(err) => return launcher::fail(&err),
    };
    telemetry::init(&settings.log);
    // A throwaway group that never commits: tailing must not disturb anyone's offsets.
    let kafka = &mut settings.bus.kafka;
    let reset = if args.from_beginning {
        "earliest"
    } else {
        "latest"
    };
    kafka
        .client
        .insert("auto.offset.reset".into(), reset.into());
    kafka
        .client
        .insert("enable.auto.commit".into(), "false".into());
    let group = format!("opsmesh-tail-{}", uuid::Uuid::now_v7());
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(async move {
        let bus = match bus::connect(&settings.bus, "opsmesh-tail") {
            Ok(bus) => bus,
            Err(err) => return launcher::fail(&err),
        };
        let mut subscription = match bus.subscribe(&group, &[&args.topic]).await {
            Ok(s) => s,
            Err(err) => return launcher::fail(&err),
        };
        let stop = CancellationToken::new();
        shutdown::cancel_on_signal(stop.clone());
        let mut printed = 0u64;
        let stdout = std::io::stdout();
        while args.limit.is_none_or(|limit| printed < limit) {
            let message = tokio::select! {
                () = stop.cancelled() => break,
                message = subscription.recv() => message,
            };
            match message {
                Ok(message) => {
                    let mut out = stdout.lock();
                    if out
                        .write_all(&message.payload)
                        .and_then(|()| out.write_all(b"\n"))
                        .and_then(|()| out.flush())
                        .is_err()
                    {
                        break; // stdout closed (e.g. piped into head)
                    }
                    printed += 1;
                }
                Err(err) => tracing::warn!(error = %err, "receive failed"),
            }
        }
        ExitCode::SUCCESS
    })
}
