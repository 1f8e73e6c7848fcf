//! `opsmesh investigate --wait` against the real diagnoser process, its investigator on the
//! scripted OpenAI-compatible model: a question ends with a cited report; and a diagnoser
//! SIGKILLed while the model thinks leaves the request on the queue, so the restarted
//! diagnoser runs the same investigation to its report while the command waits.

use std::{path::Path, time::Duration};

use serde_json::json;

use opsmesh_testkit::openai::{ScriptedModel, Turn};
use opsmesh_tests::{broker::Broker, eventually, process::Service};

use super::{NAMESPACE, QUESTION};
use crate::support::{Running, broker};

const KEY: &str = "sk-investigate-cli";

/// The diagnoser with its investigator on `model`, allowed to read `NAMESPACE`.
fn diagnoser(broker: &Broker, model: &ScriptedModel, dir: &Path) -> Service {
    let key_file = dir.join("openai-key");
    std::fs::write(&key_file, KEY).unwrap();
    // A file: `diagnoser.investigator.namespaces` is a list, which OPSMESH__ cannot set yet.
    let config = dir.join("diagnoser.toml");
    std::fs::write(
        &config,
        format!(
            "[diagnoser.llm]\nbase_url = {:?}\napi_key_file = {:?}\nmodel = \"test-model\"\n\
             [diagnoser.investigator]\nenabled = true\nnamespaces = [{NAMESPACE:?}]\n",
            model.url(),
            key_file.display().to_string(),
        ),
    )
    .unwrap();
    let env = [
        ("OPSMESH__CLUSTER", "test-cluster".to_owned()),
        ("OPSMESH__BUS__KAFKA__BROKERS", broker.address()),
        ("OPSMESH__BUS__KAFKA__PARTITIONS", "3".into()),
        // A killed member's partitions go to its successor after this (plus a rejoin).
        ("OPSMESH__BUS__KAFKA__SESSION_TIMEOUT", "6s".into()),
        ("OPSMESH_CONFIG", config.display().to_string()),
    ];
    let binary = opsmesh_tests::binary("opsmesh-diagnoser");
    Service::new("diagnoser", binary, &[], &env, dir)
}

/// The model's final answer: a report with one finding citing the first tool result.
fn report_turn() -> Turn {
    Turn::answer(
        json!({"summary": "ml-team-a runs one model", "root_cause": "unknown", "risk": "low",
               "findings": [{"claim": "the question names ml-team-a", "evidence_ids": ["t1"]}],
               "proposed_actions": []})
        .to_string(),
    )
}

fn asked(broker: &Broker) -> Running {
    Running::start(
        broker,
        &[
            "--question",
            QUESTION,
            "--namespace",
            NAMESPACE,
            "--wait",
            "--timeout",
            "150s",
        ],
    )
}

/// What a completed investigation of the scripted conversation prints.
fn assert_completed(stdout: &str) {
    for expected in [
        "  step 1  model call  1000 prompt + 100 completion tokens",
        "  step 2  incident_facts → t1",
        "completed (answered)",
        "root cause: unknown   risk: low",
        "summary: ml-team-a runs one model",
        "  - the question names ml-team-a\n      t1 incident_facts\n",
        "tokens: 2000 prompt + 200 completion in 3 step(s)",
    ] {
        assert!(stdout.contains(expected), "{expected:?} not in\n{stdout}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_diagnoser_runs_a_queued_question_to_its_cited_report() {
    let broker = broker().await;
    let model = ScriptedModel::start(
        KEY,
        vec![Turn::call("incident_facts", json!({})), report_turn()],
    )
    .await;
    let logs = tempfile::tempdir().unwrap();
    let mut diagnoser = diagnoser(&broker, &model, logs.path());
    diagnoser.start().wait_ready().await;

    let mut cli = asked(&broker);
    cli.line_with(" queued").await;
    let running = cli.line_with("running").await;
    assert!(running.starts_with("running: taken up"), "{running}");
    let (exit, stdout, stderr) = cli.finish().await;
    assert_eq!(
        exit.code(),
        Some(0),
        "{stdout}\n{stderr}\n{}",
        diagnoser.log_text()
    );
    assert_completed(&stdout);
    assert_eq!(model.requests().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_investigation_cut_short_by_kill_9_completes_after_the_diagnoser_restarts() {
    let broker = broker().await;
    // The first answer never comes in time: the diagnoser is killed while it waits.
    let model = ScriptedModel::start(
        KEY,
        vec![
            Turn::call("incident_facts", json!({})).delayed(Duration::from_secs(120)),
            Turn::call("incident_facts", json!({})),
            report_turn(),
        ],
    )
    .await;
    let logs = tempfile::tempdir().unwrap();
    let mut diagnoser = diagnoser(&broker, &model, logs.path());
    diagnoser.start().wait_ready().await;

    let mut cli = asked(&broker);
    cli.line_with("running").await;
    eventually("the model is asked", Duration::from_secs(30), || async {
        (!model.requests().is_empty()).then_some(())
    })
    .await;
    diagnoser.kill();
    diagnoser.start().wait_ready().await;

    // The request was not done: the restarted diagnoser takes it up again.
    cli.line_with("running").await;
    let (exit, stdout, stderr) = cli.finish().await;
    assert_eq!(
        exit.code(),
        Some(0),
        "{stdout}\n{stderr}\n{}",
        diagnoser.log_text()
    );
    assert_completed(&stdout);
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("running")).count(),
        2,
        "{stdout}"
    );
    assert_eq!(model.requests().len(), 3, "the slow call, then the re-run");
}
