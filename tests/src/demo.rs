//! `opsmesh demo` as a child process: the incidents it plays (real services, the simulator,
//! the remediator's own ledger), then the console it leaves running behind a one-time
//! sign-in link.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use nix::{sys::signal::Signal, unistd::Pid};

use crate::binary;

/// A child process interrupted like Ctrl-C (SIGINT) when dropped, then waited for.
pub struct Interrupted(pub Child);

impl Drop for Interrupted {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(Pid::from_raw(self.0.id() as i32), Signal::SIGINT);
        let _ = self.0.wait();
    }
}

/// A running demo, interrupted like Ctrl-C when dropped.
pub struct Demo {
    _process: Interrupted,
    /// Its stdout up to the sign-in link and the status hint.
    pub stdout: String,
    /// The one-time sign-in link to the console.
    pub link: String,
    /// The admin (health, metrics) URL it prints for `opsmesh status --url`.
    pub admin: String,
}

impl Demo {
    /// Starts `opsmesh demo --timeout <timeout>` in `dir` on free loopback ports and waits
    /// (up to `wait`) until it printed the console's sign-in link and the status hint.
    pub fn start(dir: &Path, timeout: &str, wait: Duration) -> Self {
        let mut child = Command::new(binary("opsmesh"))
            .args(["demo", "--timeout", timeout])
            .current_dir(dir)
            .env_clear()
            .env("OPSMESH__HTTP__LISTEN", "127.0.0.1:0")
            .env("OPSMESH__HTTP__ADMIN_LISTEN", "127.0.0.1:0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("opsmesh demo starts");
        let lines = stdout_lines(&mut child);
        let mut demo = Self {
            _process: Interrupted(child),
            stdout: String::new(),
            link: String::new(),
            admin: String::new(),
        };
        demo.link = loop {
            let line = lines
                .recv_timeout(wait)
                .unwrap_or_else(|e| panic!("no sign-in link ({e}) in:\n{}", demo.stdout));
            demo.stdout.push_str(&line);
            demo.stdout.push('\n');
            if let Some(url) = line.trim().strip_prefix("http://")
                && url.contains("/console/login?token=")
            {
                break format!("http://{url}");
            }
        };
        demo.admin = lines
            .recv_timeout(Duration::from_secs(5))
            .ok()
            .and_then(|l| l.split("--url ").nth(1).map(str::to_owned))
            .unwrap_or_else(|| panic!("no status hint after the link:\n{}", demo.stdout));
        demo
    }

    /// `http://<console address>`.
    pub fn base(&self) -> &str {
        self.link.split("/console/").next().unwrap_or_default()
    }
}

/// The lines of `child`'s stdout as they come.
fn stdout_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().expect("piped stdout");
    let (lines, received) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    received
}
