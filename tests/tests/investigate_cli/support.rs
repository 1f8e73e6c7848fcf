//! Running `opsmesh investigate` against a test broker and reading what it prints.

use std::{
    process::{ExitStatus, Output, Stdio},
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, BufReader},
    process::{Child, Command},
    sync::mpsc,
};

use opsmesh_proto::topics::{INVESTIGATION_REQUESTS, INVESTIGATIONS};
use opsmesh_runtime::Bus;
use opsmesh_tests::broker::Broker;

/// Bound on anything a test waits for: a line, an exit.
pub const LIMIT: Duration = Duration::from_secs(60);

/// A broker with the two topics, as the diagnoser creates them at start.
pub async fn broker() -> Broker {
    let broker = Broker::memory();
    broker
        .bus()
        .ensure_topics(&[INVESTIGATION_REQUESTS.into(), INVESTIGATIONS.into()])
        .await
        .unwrap();
    broker
}

/// `opsmesh investigate ARGS` against `broker`, run by user `alice`.
fn opsmesh(broker: &Broker, args: &[&str]) -> Command {
    let mut command = Command::new(opsmesh_tests::binary("opsmesh"));
    command
        .arg("investigate")
        .args(args)
        .env_clear()
        .env("OPSMESH__BUS__KAFKA__BROKERS", broker.address())
        .env("USER", "alice")
        .kill_on_drop(true);
    command
}

pub async fn run(broker: &Broker, args: &[&str]) -> Output {
    tokio::time::timeout(LIMIT, opsmesh(broker, args).output())
        .await
        .expect("opsmesh investigate ends")
        .expect("opsmesh runs")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// A running `opsmesh investigate --wait`, its stdout read line by line as it prints them.
pub struct Running {
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    stdout: Vec<String>,
}

impl Running {
    pub fn start(broker: &Broker, args: &[&str]) -> Self {
        let mut child = opsmesh(broker, args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("opsmesh starts");
        let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(line)) = out.next_line().await {
                let _ = tx.send(line);
            }
        });
        Self {
            child,
            lines,
            stdout: Vec::new(),
        }
    }

    /// Waits for a printed line containing `needle` (it must come before the process ends).
    pub async fn line_with(&mut self, needle: &str) -> String {
        loop {
            let line = tokio::time::timeout(LIMIT, self.lines.recv())
                .await
                .unwrap_or_else(|_| panic!("no line with {needle:?} in {:#?}", self.stdout))
                .unwrap_or_else(|| panic!("exited without {needle:?}: {:#?}", self.stdout));
            self.stdout.push(line.clone());
            if line.contains(needle) {
                return line;
            }
        }
    }

    /// Its exit status, everything it printed on stdout, and its stderr.
    pub async fn finish(mut self) -> (ExitStatus, String, String) {
        let status = tokio::time::timeout(LIMIT, self.child.wait())
            .await
            .expect("opsmesh investigate ends")
            .unwrap();
        while let Some(line) = self.lines.recv().await {
            self.stdout.push(line);
        }
        let mut stderr = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .await
            .unwrap();
        (status, self.stdout.join("\n"), stderr)
    }
}
