//! Secrets never in logs: a Slack delivery that fails — a webhook whose server answers 500,
//! another whose port is closed — while every log line the reporter emits (any target, down
//! to debug) is captured; neither webhook's secret path appears in a line, nor in the dead
//! letters. One test in this binary: it installs the process-wide subscriber.

mod support;

use std::{
    io::Write,
    net::TcpListener,
    sync::{Arc, Mutex},
    time::Duration,
};

use opsmesh_proto::topics;
use opsmesh_reporter::notify::NOTIFICATIONS;
use support::{
    HecServer, RunningReporter, eventually,
    incident::{Incident, publish_awaiting},
    memory_bus,
    receivers::{Answer, Receiver},
};

/// Every formatted log line, shared with the test.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// A loopback URL nothing listens on.
fn closed_port_url(path: &str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}{path}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_slack_deliveries_never_log_the_webhook_url() {
    let logs = Captured::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .try_init()
        .expect("the only subscriber of this test binary");

    // The secret of a Slack webhook URL is its path.
    let failing = Receiver::slack().await;
    failing.go_down(Answer::new(500, "internal_error"));
    let failing_secret = failing.url.split_once("/services/").unwrap().1.to_owned();
    let closed_secret = "T0CLOSED/B0CLOSED/cl0sedp0rtw3bh00ks3cret";
    let closed = closed_port_url(&format!("/services/{closed_secret}"));

    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, format!("{text}\n")).unwrap();
        path.display().to_string()
    };
    let config = dir.path().join("reporter.toml");
    std::fs::write(
        &config,
        format!(
            "[reporter.notify]\nmax_attempts = 2\nretry_backoff = \"50ms\"\nretry_backoff_max = \"100ms\"\ndiagnosis_wait = \"1s\"\n\n[reporter.notify.slack.failing]\nwebhook_url_file = \"{}\"\n\n[reporter.notify.slack.closed]\nwebhook_url_file = \"{}\"\n",
            write("slack-failing", &failing.url),
            write("slack-closed", &closed),
        ),
    )
    .unwrap();
    let (hec, bus) = (HecServer::start().await, memory_bus());
    let reporter = RunningReporter::start_with_file(&bus, &hec, Some(&config), &[]).await;
    publish_awaiting(&bus, &Incident::oom("ml-team-a")).await;

    let dlq = topics::dlq(NOTIFICATIONS);
    let letters = eventually(
        "both routes dead-lettered",
        Duration::from_secs(20),
        || async {
            let letters = bus.snapshot(&dlq);
            (letters.len() >= 2).then_some(letters)
        },
    )
    .await;
    reporter.stop().await.unwrap();

    let text = logs.text();
    // The failures were logged (so the lines below were looked at)…
    assert!(text.contains("notification retry"), "{text}");
    assert!(text.contains("network:"), "the closed port's error: {text}");
    assert!(text.contains("500"), "the server error: {text}");
    // …and no line names either secret.
    for secret in [failing_secret.as_str(), closed_secret] {
        let leaks: Vec<&str> = text.lines().filter(|l| l.contains(secret)).collect();
        assert!(leaks.is_empty(), "{secret} logged:\n{}", leaks.join("\n"));
        for letter in &letters {
            let mut bytes = letter.payload.clone();
            for (_, value) in &letter.headers {
                bytes.extend_from_slice(value);
            }
            assert!(
                !String::from_utf8_lossy(&bytes).contains(secret),
                "{secret} in a dead letter"
            );
        }
    }
}
