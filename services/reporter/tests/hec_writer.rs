//! The HEC writer against a protocol-faithful HEC test server, on the in-memory bus: Kafka
//! (here the memory bus, with the same consumer-group semantics) is the outbox, so outages,
//! refusals, partial batches, restarts and lost acknowledgements lose nothing.

mod support;

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use opsmesh_runtime::bus::{HEADER_DLQ_ERROR, HEADER_DLQ_GROUP, HEADER_DLQ_ORIGIN};
use support::{
    GROUP, HecServer, Mode, RunningReporter, eventually, ids, incidents, memory_bus,
    missing_and_duplicates, publish, topic_dlq,
};

/// Length of the outage in `a_two_minute_outage_loses_nothing`; the issue asks for two
/// minutes, `OPSMESH_TEST_HEC_OUTAGE_SECS=10` shortens it for local iteration.
fn outage() -> Duration {
    let secs = std::env::var("OPSMESH_TEST_HEC_OUTAGE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);
    Duration::from_secs(secs)
}

const SETTLE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_minute_outage_loses_nothing() {
    let started = Instant::now();
    let hec = HecServer::start().await;
    let bus = memory_bus();
    let reporter = RunningReporter::start(&bus, &hec, &[]).await;

    // Splunk answers 503 for the whole outage while 1,000 incidents flow.
    let outage = outage();
    hec.set_mode(Mode::Busy);
    let outage_began = Instant::now();
    let messages = incidents(1000);
    let waves = 20;
    let per_wave = messages.len() / waves;
    for (n, wave) in messages.chunks(per_wave).enumerate() {
        publish(&bus, wave).await;
        let next = outage_began + outage.mul_f64(0.9) * (n as u32 + 1) / waves as u32;
        tokio::time::sleep_until(next.into()).await;
    }
    tokio::time::sleep_until((outage_began + outage).into()).await;

    // Nothing indexed, nothing committed, and the backlog is visible.
    assert_eq!(hec.indexed_count(), 0);
    assert_eq!(
        bus.lag(GROUP),
        messages.len() as i64,
        "no offset is committed while Splunk is down"
    );
    let oldest = reporter
        .metric("opsmesh_reporter_hec_oldest_unsent_seconds", &[])
        .await;
    assert!(
        oldest >= outage.as_secs_f64() * 0.5,
        "oldest unsent event is {oldest}s old"
    );
    let (status, _) = reporter.readyz().await;
    assert_eq!(status, 200, "an outage is not a configuration error");

    hec.set_mode(Mode::Normal);
    let published = ids(&messages);
    let recovered = Instant::now();
    eventually("every event indexed after the outage", SETTLE, || async {
        (missing_and_duplicates(&hec, &published).0 == 0).then_some(())
    })
    .await;
    let catch_up = recovered.elapsed();
    eventually("every offset committed", SETTLE, || async {
        (bus.lag(GROUP) == 0).then_some(())
    })
    .await;
    let (missing, duplicates) = missing_and_duplicates(&hec, &published);
    let requests = hec.requests();
    let refused = requests.iter().filter(|r| r.status == 503).count();
    println!(
        "outage {outage:?}: {} events published, {missing} missing, {duplicates} duplicates in the index, \
         {refused} requests answered 503, caught up {catch_up:?} after recovery, test took {:?}",
        published.len(),
        started.elapsed()
    );
    assert_eq!(missing, 0);
    assert_eq!(duplicates, 0, "nothing was accepted twice");
    assert_eq!(hec.indexed_count(), published.len());
    reporter.stop().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_batch_resends_only_the_rest_and_dead_letters_the_bad_event() {
    let hec = HecServer::start().await;
    let bus = memory_bus();
    let messages = incidents(10);
    let bad = messages[11].clone();
    hec.reject_event(&bad.id);
    publish(&bus, &messages).await;
    let reporter =
        RunningReporter::start(&bus, &hec, &[("OPSMESH__REPORTER__HEC__LINGER", "1s")]).await;

    let good: HashSet<String> = ids(&messages)
        .into_iter()
        .filter(|id| *id != bad.id)
        .collect();
    eventually("every good event indexed", SETTLE, || async {
        (missing_and_duplicates(&hec, &good).0 == 0).then_some(())
    })
    .await;
    eventually("every offset committed", SETTLE, || async {
        (bus.lag(GROUP) == 0).then_some(())
    })
    .await;

    let requests = hec.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    let first = &requests[0];
    assert_eq!(first.status, 400);
    assert!(first.gzip);
    let position = first.invalid_event.expect("invalid-event-number");
    assert_eq!(first.indexed, position, "events before the bad one indexed");
    assert_eq!(first.envelopes, position + 1);
    let second = &requests[1];
    assert_eq!(second.status, 200);
    assert_eq!(
        second.envelopes,
        messages.len() - position - 1,
        "only the remainder is sent again"
    );
    let counts = hec.counts();
    assert!(!counts.contains_key(&bad.id));
    assert!(counts.values().all(|c| *c == 1), "nothing indexed twice");

    let dlq = bus.snapshot(&topic_dlq(bad.topic));
    assert_eq!(dlq.len(), 1);
    let dead = &dlq[0];
    assert_eq!(dead.payload, bad.bytes, "original bytes");
    assert_eq!(
        dead.header("opsmesh-schema").unwrap(),
        bad.topic.as_bytes(),
        "original headers"
    );
    let error = String::from_utf8_lossy(dead.header(HEADER_DLQ_ERROR).unwrap()).into_owned();
    assert!(
        error.starts_with("rejected: HEC rejected the event (code 6: Invalid data format)"),
        "{error}"
    );
    let origin = String::from_utf8_lossy(dead.header(HEADER_DLQ_ORIGIN).unwrap()).into_owned();
    assert!(origin.starts_with(&format!("{}/", bad.topic)), "{origin}");
    assert_eq!(dead.header(HEADER_DLQ_GROUP).unwrap(), GROUP.as_bytes());
    assert_eq!(
        reporter
            .metric(
                "opsmesh_reporter_hec_dead_lettered_total",
                &[("reason", "rejected")]
            )
            .await,
        1.0
    );
    assert_eq!(
        reporter
            .metric(
                "opsmesh_reporter_hec_batches_total",
                &[("outcome", "partial")]
            )
            .await,
        1.0
    );
    reporter.stop().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_refused_without_an_event_number_is_split_until_the_culprit_is_alone() {
    let hec = HecServer::start().await;
    let bus = memory_bus();
    let messages = incidents(10);
    let bad = messages[17].clone();
    hec.reject_request_with(&bad.id);
    publish(&bus, &messages).await;
    let reporter =
        RunningReporter::start(&bus, &hec, &[("OPSMESH__REPORTER__HEC__LINGER", "1s")]).await;
    let good: HashSet<String> = ids(&messages)
        .into_iter()
        .filter(|id| *id != bad.id)
        .collect();
    eventually("every good event indexed", SETTLE, || async {
        (missing_and_duplicates(&hec, &good).0 == 0).then_some(())
    })
    .await;
    eventually("every offset committed", SETTLE, || async {
        (bus.lag(GROUP) == 0).then_some(())
    })
    .await;
    assert_eq!(missing_and_duplicates(&hec, &good), (0, 0));
    assert!(!hec.counts().contains_key(&bad.id));
    let dlq = bus.snapshot(&topic_dlq(bad.topic));
    assert_eq!(dlq.len(), 1);
    assert_eq!(dlq[0].payload, bad.bytes);
    let error = String::from_utf8_lossy(dlq[0].header(HEADER_DLQ_ERROR).unwrap()).into_owned();
    assert!(
        error.starts_with("rejected: HEC rejected the data (400, code 6"),
        "{error}"
    );
    // log2(30) rounds of halving, each refused request one event smaller: no request was
    // resent unchanged.
    let refused = hec.requests().iter().filter(|r| r.status == 400).count();
    assert!(refused <= 6, "{refused} refused requests");
    reporter.stop().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_pauses_until_the_token_file_is_fixed() {
    let hec = HecServer::start().await;
    let bus = memory_bus();
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("hec-token");
    std::fs::write(&token_file, "11111111-2222-4333-8444-555555555555\n").unwrap();
    let token_path = token_file.to_str().unwrap().to_owned();
    let reporter = RunningReporter::start(
        &bus,
        &hec,
        &[
            ("OPSMESH__REPORTER__HEC__TOKEN_FILE", &token_path),
            ("OPSMESH__REPORTER__HEC__RETRY_BACKOFF_MAX", "1s"),
        ],
    )
    .await;
    let messages = incidents(5);
    publish(&bus, &messages).await;

    let readiness = eventually("readyz fails", SETTLE, || async {
        let (status, body) = reporter.readyz().await;
        (status == 503).then_some(body)
    })
    .await;
    let hec_check = readiness["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "hec")
        .expect("hec readiness check")
        .clone();
    assert!(
        hec_check["error"].as_str().unwrap().contains("403"),
        "{hec_check}"
    );
    assert_eq!(
        reporter.metric("opsmesh_reporter_hec_paused", &[]).await,
        1.0
    );
    // Paused: while the token is refused nothing is indexed, committed or dead-lettered.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(hec.indexed_count(), 0);
    assert_eq!(bus.lag(GROUP), messages.len() as i64, "nothing committed");
    for topic in [
        "opsmesh.alerts.v1",
        "opsmesh.diagnoses.v1",
        "opsmesh.remediations.v1",
    ] {
        assert!(
            bus.snapshot(&topic_dlq(topic)).is_empty(),
            "nothing dropped"
        );
    }
    assert!(hec.requests().iter().all(|r| r.status == 403));

    // The operator fixes the Secret; the mounted file changes.
    std::fs::write(&token_file, format!("{}\n", HecServer::TOKEN)).unwrap();
    let published = ids(&messages);
    eventually("everything delivered", SETTLE, || async {
        (missing_and_duplicates(&hec, &published) == (0, 0)).then_some(())
    })
    .await;
    eventually("committed and ready again", SETTLE, || async {
        let (status, _) = reporter.readyz().await;
        (status == 200 && bus.lag(GROUP) == 0).then_some(())
    })
    .await;
    assert_eq!(
        reporter.metric("opsmesh_reporter_hec_paused", &[]).await,
        0.0
    );
    reporter.stop().await.expect("clean shutdown");
}

/// A token rotated the usual way (Splunk accepts both, the Secret changes, the old token is
/// revoked) is used from the next request on, without a restart and without a refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_token_file_is_used_before_the_old_token_is_revoked() {
    const NEXT: &str = "11111111-2222-4333-8444-555555555555";
    let hec = HecServer::start().await;
    let bus = memory_bus();
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("hec-token");
    std::fs::write(&token_file, format!("{}\n", HecServer::TOKEN)).unwrap();
    let token_path = token_file.to_str().unwrap().to_owned();
    let reporter = RunningReporter::start(
        &bus,
        &hec,
        &[("OPSMESH__REPORTER__HEC__TOKEN_FILE", &token_path)],
    )
    .await;
    let before = incidents(3);
    publish(&bus, &before).await;
    let published = ids(&before);
    eventually("delivered with the first token", SETTLE, || async {
        (missing_and_duplicates(&hec, &published) == (0, 0)).then_some(())
    })
    .await;

    hec.set_tokens(&[HecServer::TOKEN, NEXT]);
    std::fs::write(&token_file, format!("{NEXT}\n")).unwrap();
    // A modification time of its own, whatever the file system's resolution.
    std::fs::File::options()
        .write(true)
        .open(&token_file)
        .unwrap()
        .set_modified(std::time::SystemTime::now() + Duration::from_secs(10))
        .unwrap();
    // The token file is looked at once a second at most.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    hec.set_tokens(&[NEXT]);

    let after = incidents(3);
    publish(&bus, &after).await;
    let published: HashSet<String> = published.into_iter().chain(ids(&after)).collect();
    eventually("delivered with the rotated token", SETTLE, || async {
        (missing_and_duplicates(&hec, &published) == (0, 0)).then_some(())
    })
    .await;
    let refused: Vec<u16> = hec
        .requests()
        .iter()
        .map(|r| r.status)
        .filter(|s| *s != 200)
        .collect();
    assert!(refused.is_empty(), "no request was refused: {refused:?}");
    reporter.stop().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_outage_loses_nothing() {
    let hec = HecServer::start().await;
    let bus = memory_bus();
    let fast = [
        ("OPSMESH__SHUTDOWN__GRACE", "2s"),
        ("OPSMESH__REPORTER__HEC__RETRY_BACKOFF_MAX", "1s"),
    ];
    let first = incidents(100);
    publish(&bus, &first).await;
    let reporter = RunningReporter::start(&bus, &hec, &fast).await;
    eventually("the first batches delivered", SETTLE, || async {
        (hec.indexed_count() > 0).then_some(())
    })
    .await;
    hec.set_mode(Mode::Busy);

    // Mid-outage: a graceful stop cannot flush within the grace period; nothing of what
    // Splunk did not take is committed.
    let second = incidents(100);
    publish(&bus, &second).await;
    eventually("the reporter is retrying", SETTLE, || async {
        (hec.requests().iter().filter(|r| r.status == 503).count() >= 2).then_some(())
    })
    .await;
    reporter
        .stop()
        .await
        .expect("stops within the grace period");

    // The next one crashes (SIGKILL) while retrying.
    let reporter = RunningReporter::start(&bus, &hec, &fast).await;
    // (The memory bus counts lag over the partitions a member owns: wait for it to join.)
    let uncommitted = second.len() as i64;
    eventually(
        "what Splunk did not take stayed uncommitted",
        Duration::from_secs(10),
        || async { (bus.lag(GROUP) >= uncommitted).then_some(()) },
    )
    .await;
    let third = incidents(100);
    publish(&bus, &third).await;
    let requests_before = hec.requests().len();
    eventually("the second reporter is retrying", SETTLE, || async {
        (hec.requests().len() > requests_before + 1).then_some(())
    })
    .await;
    reporter.crash().await;

    // A third one starts during the outage, and Splunk comes back.
    let reporter = RunningReporter::start(&bus, &hec, &fast).await;
    let uncommitted = (second.len() + third.len()) as i64;
    eventually(
        "nothing of the crashed reporter's batches committed",
        Duration::from_secs(10),
        || async { (bus.lag(GROUP) >= uncommitted).then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    hec.set_mode(Mode::Normal);
    let published: HashSet<String> = [first, second, third].iter().flat_map(|m| ids(m)).collect();
    eventually("every event indexed", SETTLE, || async {
        (missing_and_duplicates(&hec, &published).0 == 0).then_some(())
    })
    .await;
    eventually("every offset committed", SETTLE, || async {
        (bus.lag(GROUP) == 0).then_some(())
    })
    .await;
    let (missing, duplicates) = missing_and_duplicates(&hec, &published);
    println!("restart mid-outage: {missing} missing, {duplicates} duplicates");
    assert_eq!(missing, 0);
    reporter.stop().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indexer_acknowledgement_is_awaited_and_a_lost_batch_resent() {
    let hec = HecServer::start().await;
    // Acks stay pending for two polls; the first batch is lost (200 + ackId, never indexed,
    // never acknowledged).
    hec.enable_ack(2, 1);
    let bus = memory_bus();
    let messages = incidents(5);
    publish(&bus, &messages).await;
    let reporter = RunningReporter::start(
        &bus,
        &hec,
        &[
            ("OPSMESH__REPORTER__HEC__ACK__ENABLED", "true"),
            ("OPSMESH__REPORTER__HEC__ACK__POLL_INTERVAL", "200ms"),
            ("OPSMESH__REPORTER__HEC__ACK__TIMEOUT", "3s"),
            ("OPSMESH__REPORTER__HEC__LINGER", "500ms"),
        ],
    )
    .await;

    let published = ids(&messages);
    eventually("every event indexed", SETTLE, || async {
        (missing_and_duplicates(&hec, &published).0 == 0).then_some(())
    })
    .await;
    // Committed only once acknowledged.
    eventually("every offset committed", SETTLE, || async {
        (bus.lag(GROUP) == 0).then_some(())
    })
    .await;
    let (missing, duplicates) = missing_and_duplicates(&hec, &published);
    assert_eq!((missing, duplicates), (0, 0));
    let (pending, acked) = hec.ack_answers();
    assert!(pending >= 2, "acks answered false first ({pending})");
    assert!(acked >= 1, "then true ({acked})");
    assert!(
        reporter
            .metric("opsmesh_reporter_hec_ack_timeouts_total", &[])
            .await
            >= 1.0,
        "the lost batch was resent after the ack timeout"
    );
    let requests = hec.requests();
    assert!(requests.iter().all(|r| r.channel.is_some()));
    let channels: HashSet<_> = requests.iter().map(|r| r.channel.clone()).collect();
    assert_eq!(channels.len(), 1, "one channel per process");
    reporter.stop().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivered_duplicates_reach_splunk_once() {
    let hec = HecServer::start().await;
    let bus = memory_bus();
    let messages = incidents(3);
    publish(&bus, &messages).await;
    // The same envelopes again, as after a producer retry or a consumer restart upstream.
    publish(&bus, &messages[..2]).await;
    let reporter = RunningReporter::start(&bus, &hec, &[]).await;
    let published = ids(&messages);
    eventually("every event indexed", SETTLE, || async {
        (missing_and_duplicates(&hec, &published).0 == 0).then_some(())
    })
    .await;
    eventually("every offset committed", SETTLE, || async {
        (bus.lag(GROUP) == 0).then_some(())
    })
    .await;
    assert_eq!(missing_and_duplicates(&hec, &published), (0, 0));
    assert_eq!(
        reporter
            .metric("opsmesh_reporter_hec_duplicates_total", &[])
            .await,
        2.0
    );
    assert_eq!(
        reporter
            .metric(
                "opsmesh_bus_consumed_total",
                &[("group", GROUP), ("outcome", "duplicate")]
            )
            .await,
        2.0
    );
    reporter.stop().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_respect_the_count_and_byte_limits_and_are_gzipped() {
    let hec = HecServer::start().await;
    let bus = memory_bus();
    let messages = incidents(150);
    publish(&bus, &messages).await;
    let reporter = RunningReporter::start(
        &bus,
        &hec,
        &[
            ("OPSMESH__REPORTER__HEC__MAX_BATCH_EVENTS", "40"),
            ("OPSMESH__REPORTER__HEC__MAX_BATCH_BYTES", "30000"),
        ],
    )
    .await;
    let published = ids(&messages);
    eventually("every event indexed", SETTLE, || async {
        (missing_and_duplicates(&hec, &published).0 == 0).then_some(())
    })
    .await;
    let requests = hec.requests();
    assert!(requests.iter().all(|r| r.status == 200));
    assert!(
        requests
            .iter()
            .all(|r| r.gzip && r.wire_bytes < r.body_bytes)
    );
    assert!(requests.iter().all(|r| r.envelopes <= 40));
    assert!(
        requests.iter().all(|r| r.body_bytes <= 30000),
        "{:?}",
        requests.iter().map(|r| r.body_bytes).max()
    );
    assert!(
        requests.iter().any(|r| r.envelopes > 1),
        "events are batched"
    );
    let events = hec.events();
    let alert = events
        .iter()
        .find(|e| e["sourcetype"] == "opsmesh:alert")
        .unwrap();
    assert_eq!(alert["index"], HecServer::INDEX);
    assert!(alert["time"].is_f64() || alert["time"].is_u64());
    assert!(alert["fields"]["incident_id"].is_string());
    assert_eq!(alert["fields"]["namespace"], "ml-team-a");
    assert_eq!(alert["event"]["schema"], "opsmesh.alerts.v1");
    reporter.stop().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_nothing_in_flight_events_go_at_once_instead_of_lingering() {
    let hec = HecServer::start().await;
    let bus = memory_bus();
    // A linger no test could wait for: only the idle rule can send these.
    let reporter = RunningReporter::start(
        &bus,
        &hec,
        &[
            ("OPSMESH__REPORTER__HEC__LINGER", "1h"),
            ("OPSMESH__REPORTER__HEC__RETRY_BACKOFF_MAX", "1s"),
        ],
    )
    .await;
    for round in 0..3 {
        let messages = incidents(1);
        publish(&bus, &messages).await;
        let published = ids(&messages);
        eventually(&format!("round {round} indexed"), SETTLE, || async {
            (missing_and_duplicates(&hec, &published).0 == 0).then_some(())
        })
        .await;
    }
    // Events that arrive while a batch is on its way go as soon as it settles.
    hec.set_mode(Mode::Busy);
    let first = incidents(1);
    publish(&bus, &first).await;
    eventually(
        "the first batch refused (and being retried)",
        SETTLE,
        || async { hec.requests().iter().any(|r| r.status == 503).then_some(()) },
    )
    .await;
    let second = incidents(1);
    publish(&bus, &second).await;
    hec.set_mode(Mode::Normal);
    let both: HashSet<String> = ids(&first).into_iter().chain(ids(&second)).collect();
    eventually("both indexed", SETTLE, || async {
        (missing_and_duplicates(&hec, &both).0 == 0).then_some(())
    })
    .await;
    eventually("every offset committed", SETTLE, || async {
        (bus.lag(GROUP) == 0).then_some(())
    })
    .await;
    reporter.stop().await.expect("clean shutdown");
}
