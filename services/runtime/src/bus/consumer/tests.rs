//! The consume loop on the in-memory bus: order, offsets, bounds, drain, DLQ, deferral.
use std::sync::Mutex;

use uuid::Uuid;

use super::{lanes::PartitionProgress, *};
use crate::{
    bus::{Bus, HEADER_DLQ_ERROR, HEADER_DLQ_ORIGIN, MemoryBus, MemorySettings, Outgoing},
    metrics::{BusMetrics, new_registry},
};

struct Recorder {
    seen: Mutex<Vec<Vec<u8>>>,
    fail_first: Mutex<u32>,
}

#[async_trait]
impl Handler for Recorder {
    async fn handle(&self, message: &Received) -> Result<(), HandlerError> {
        if message.payload.windows(6).any(|w| w == b"poison") {
            return Err(HandlerError::Permanent("payload says poison".into()));
        }
        let mut fail = self.fail_first.lock().unwrap();
        if *fail > 0 {
            *fail -= 1;
            return Err(HandlerError::Transient("flaky".into()));
        }
        self.seen.lock().unwrap().push(message.payload.clone());
        Ok(())
    }
}

fn envelope(id: Uuid, body: &str) -> Outgoing {
    Outgoing {
        topic: "t".into(),
        key: "k".into(),
        payload: format!(r#"{{"id":"{id}","body":"{body}"}}"#).into_bytes(),
        headers: vec![("opsmesh-schema".into(), b"t".into())],
    }
}

async fn run_until_idle(bus: &MemoryBus, handler: Arc<Recorder>, settings: ConsumerSettings) {
    let metrics = BusMetrics::new(&new_registry());
    let publisher = Publisher::new(Arc::new(bus.clone()), metrics.clone());
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.cancel();
    });
    consume(
        &publisher,
        &metrics,
        &settings,
        "g",
        &["t"],
        handler,
        shutdown,
    )
    .await
    .unwrap();
}

fn fast() -> ConsumerSettings {
    ConsumerSettings {
        retry_backoff: Duration::from_millis(1),
        retry_backoff_max: Duration::from_millis(2),
        ..ConsumerSettings::default()
    }
}

fn keyed(key: &str, body: &str) -> Outgoing {
    Outgoing {
        key: key.into(),
        ..envelope(Uuid::now_v7(), body)
    }
}

fn body_of(payload: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(payload).unwrap()["body"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Records when each body starts and ends; `slow*` bodies take 150 ms, `block*` bodies
/// never end.
#[derive(Default)]
struct Timeline {
    events: Mutex<Vec<String>>,
}

#[async_trait]
impl Handler for Timeline {
    async fn handle(&self, message: &Received) -> Result<(), HandlerError> {
        let body = body_of(&message.payload);
        self.events.lock().unwrap().push(format!("start {body}"));
        if body.starts_with("slow") {
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        if body.starts_with("block") {
            std::future::pending::<()>().await;
        }
        self.events.lock().unwrap().push(format!("end {body}"));
        Ok(())
    }
}

impl Timeline {
    fn position(&self, event: &str) -> usize {
        let events = self.events.lock().unwrap();
        events
            .iter()
            .position(|e| e == event)
            .unwrap_or_else(|| panic!("{event:?} not in {events:?}"))
    }

    async fn wait_for(&self, event: &str) {
        for _ in 0..500 {
            if self.events.lock().unwrap().iter().any(|e| e == event) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!(
            "{event:?} never happened: {:?}",
            self.events.lock().unwrap()
        );
    }
}

fn one_partition() -> MemoryBus {
    MemoryBus::new(&MemorySettings {
        partitions: 1,
        ..MemorySettings::default()
    })
}

fn spawn_consumer(
    bus: &MemoryBus,
    handler: Arc<dyn Handler>,
    settings: ConsumerSettings,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<Result<(), BusError>>,
) {
    let metrics = BusMetrics::new(&new_registry());
    let publisher = Publisher::new(Arc::new(bus.clone()), metrics.clone());
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    let task = tokio::spawn(async move {
        consume(&publisher, &metrics, &settings, "g", &["t"], handler, stop).await
    });
    (shutdown, task)
}

#[tokio::test]
async fn keys_are_handled_concurrently_and_each_key_in_order() {
    let bus = one_partition();
    for (key, body) in [("a", "slow-a1"), ("b", "b1"), ("b", "b2"), ("a", "a2")] {
        bus.publish(keyed(key, body)).await.unwrap();
    }
    let timeline = Arc::new(Timeline::default());
    let (shutdown, task) = spawn_consumer(&bus, timeline.clone(), fast());
    timeline.wait_for("end a2").await;
    shutdown.cancel();
    task.await.unwrap().unwrap();
    let _member = bus.subscribe("g", &["t"]).await.unwrap();
    let at = |e: &str| timeline.position(e);
    assert!(
        at("end b2") < at("end slow-a1"),
        "b is not held up by a's slow message"
    );
    assert!(at("end b1") < at("start b2"), "b in order, one at a time");
    assert!(
        at("end slow-a1") < at("start a2"),
        "a2 waits for a1 though it arrived after b's"
    );
    assert_eq!(bus.lag("g"), 0, "everything finished is stored");
}

#[tokio::test]
async fn a_kill_during_a_slow_handler_redelivers_it_and_everything_after_it() {
    let bus = one_partition();
    for (key, body) in [("x", "first"), ("a", "block-a"), ("b", "b1"), ("c", "c1")] {
        bus.publish(keyed(key, body)).await.unwrap();
    }
    let timeline = Arc::new(Timeline::default());
    let (_shutdown, task) = spawn_consumer(&bus, timeline.clone(), fast());
    timeline.wait_for("end b1").await;
    timeline.wait_for("end c1").await;
    // The process dies: no drain, no commit beyond what was stored.
    task.abort();
    let _ = task.await;
    let mut next = bus.subscribe("g", &["t"]).await.unwrap();
    assert_eq!(
        bus.lag("g"),
        3,
        "only the message before the unfinished one is stored"
    );
    let again = next.recv().await.unwrap();
    assert_eq!(body_of(&again.payload), "block-a", "redelivered");
}

#[tokio::test]
async fn shutdown_lets_the_handler_in_hand_finish_and_stores_it() {
    let bus = one_partition();
    bus.publish(keyed("a", "slow-1")).await.unwrap();
    let timeline = Arc::new(Timeline::default());
    let (shutdown, task) = spawn_consumer(&bus, timeline.clone(), fast());
    timeline.wait_for("start slow-1").await;
    shutdown.cancel();
    task.await.unwrap().unwrap();
    assert!(timeline.position("end slow-1") > 0);
    let _member = bus.subscribe("g", &["t"]).await.unwrap();
    assert_eq!(bus.lag("g"), 0, "the drained message is committed");
}

#[tokio::test]
async fn the_in_flight_bound_stops_fetching_until_a_slot_frees() {
    let bus = one_partition();
    for key in ["a", "b", "c"] {
        bus.publish(keyed(key, &format!("block-{key}")))
            .await
            .unwrap();
    }
    bus.publish(keyed("d", "d1")).await.unwrap();
    let timeline = Arc::new(Timeline::default());
    let settings = ConsumerSettings {
        max_in_flight: 3,
        ..fast()
    };
    let (shutdown, task) = spawn_consumer(&bus, timeline.clone(), settings);
    timeline.wait_for("start block-c").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !timeline
            .events
            .lock()
            .unwrap()
            .iter()
            .any(|e| e == "start d1"),
        "a fourth message is not taken while three are in hand"
    );
    shutdown.cancel();
    task.abort();
}

struct Panicky;

#[async_trait]
impl Handler for Panicky {
    async fn handle(&self, message: &Received) -> Result<(), HandlerError> {
        if body_of(&message.payload) == "boom" {
            panic!("bug in the handler");
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_panicking_handler_dead_letters_its_message_and_the_loop_carries_on() {
    let bus = one_partition();
    bus.publish(keyed("a", "boom")).await.unwrap();
    bus.publish(keyed("a", "fine")).await.unwrap();
    let (shutdown, task) = spawn_consumer(&bus, Arc::new(Panicky), fast());
    for _ in 0..200 {
        if bus.snapshot("t.dlq").len() == 1 && bus.lag("g") == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(bus.lag("g"), 0, "the message after the panic was handled");
    shutdown.cancel();
    task.await.unwrap().unwrap();
    let dlq = bus.snapshot("t.dlq");
    assert_eq!(dlq.len(), 1);
    let error = String::from_utf8(dlq[0].header(HEADER_DLQ_ERROR).unwrap().to_vec()).unwrap();
    assert!(error.contains("bug in the handler"), "{error}");
}

/// Defers every message and hands its `Settle` to the test.
#[derive(Default)]
struct Deferring {
    settles: Mutex<Vec<(String, Settle)>>,
}

#[async_trait]
impl Handler for Deferring {
    async fn handle(&self, _: &Received) -> Result<(), HandlerError> {
        unreachable!("the consume loop calls handle_or_defer")
    }

    async fn handle_or_defer(&self, message: &Received) -> Result<Option<Pending>, HandlerError> {
        let (settle, pending) = defer();
        self.settles
            .lock()
            .unwrap()
            .push((body_of(&message.payload), settle));
        Ok(Some(pending))
    }
}

#[tokio::test]
async fn deferred_work_frees_the_key_but_holds_the_offset_until_settled() {
    let bus = one_partition();
    for body in ["one", "two"] {
        bus.publish(keyed("same-key", body)).await.unwrap();
    }
    let handler = Arc::new(Deferring::default());
    let (shutdown, task) = spawn_consumer(&bus, handler.clone(), fast());
    for _ in 0..200 {
        if handler.settles.lock().unwrap().len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut settles = std::mem::take(&mut *handler.settles.lock().unwrap());
    assert_eq!(
        settles.len(),
        2,
        "the key is free while the first is deferred"
    );
    assert_eq!(bus.lag("g"), 2, "nothing stored while unsettled");
    let (_, two) = settles.pop().unwrap();
    two.settle();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(bus.lag("g"), 2, "two settled, but one before it is not");
    let (_, one) = settles.pop().unwrap();
    one.settle();
    for _ in 0..200 {
        if bus.lag("g") == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(bus.lag("g"), 0, "both settled: both stored");
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn deferred_work_dropped_unsettled_is_redelivered() {
    let bus = one_partition();
    bus.publish(keyed("k", "one")).await.unwrap();
    let handler = Arc::new(Deferring::default());
    let (shutdown, task) = spawn_consumer(&bus, handler.clone(), fast());
    for _ in 0..200 {
        if !handler.settles.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    handler.settles.lock().unwrap().clear();
    shutdown.cancel();
    task.await.unwrap().unwrap();
    let mut next = bus.subscribe("g", &["t"]).await.unwrap();
    assert_eq!(bus.lag("g"), 1);
    assert_eq!(body_of(&next.recv().await.unwrap().payload), "one");
}

#[test]
fn progress_stores_only_the_finished_front() {
    let mut p = PartitionProgress::default();
    for offset in 10..14 {
        assert!(p.received(offset));
    }
    assert_eq!(p.finished(12), None, "10 and 11 are unfinished");
    assert_eq!(p.finished(10), Some(10));
    assert_eq!(p.finished(11), Some(12), "11 releases 12 too");
    assert!(!p.received(11), "a lower offset is a rewind");
    assert_eq!(p.finished(13), None, "forgotten with the old assignment");
    assert_eq!(p.finished(11), Some(11));
}

#[test]
fn recent_ids_are_bounded() {
    let mut recent = RecentIds::new(2);
    let ids: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
    for id in &ids {
        recent.insert(*id);
    }
    assert!(!recent.contains(&ids[0]), "the oldest is forgotten");
    assert!(recent.contains(&ids[1]) && recent.contains(&ids[2]));
    assert_eq!(recent.set.len(), 2);
}

#[tokio::test]
async fn duplicates_are_dropped_and_transient_errors_retried() {
    let bus = MemoryBus::new(&MemorySettings::default());
    let id = Uuid::now_v7();
    bus.publish(envelope(id, "a")).await.unwrap();
    bus.publish(envelope(id, "a")).await.unwrap();
    bus.publish(envelope(Uuid::now_v7(), "b")).await.unwrap();
    let handler = Arc::new(Recorder {
        seen: Mutex::new(vec![]),
        fail_first: Mutex::new(2),
    });
    run_until_idle(&bus, handler.clone(), fast()).await;
    let seen = handler.seen.lock().unwrap();
    assert_eq!(
        seen.len(),
        2,
        "a once (after two transient failures), b once"
    );
}

#[tokio::test]
async fn poison_and_permanent_errors_go_to_the_dlq_with_origin_and_reason() {
    let bus = MemoryBus::new(&MemorySettings::default());
    bus.publish(Outgoing {
        payload: b"not json".to_vec(),
        ..envelope(Uuid::nil(), "")
    })
    .await
    .unwrap();
    bus.publish(envelope(Uuid::now_v7(), "poison"))
        .await
        .unwrap();
    bus.publish(envelope(Uuid::now_v7(), "fine")).await.unwrap();
    let handler = Arc::new(Recorder {
        seen: Mutex::new(vec![]),
        fail_first: Mutex::new(0),
    });
    run_until_idle(&bus, handler.clone(), fast()).await;
    assert_eq!(
        handler.seen.lock().unwrap().len(),
        1,
        "the consumer kept going"
    );
    let dlq = bus.snapshot("t.dlq");
    assert_eq!(dlq.len(), 2);
    assert_eq!(dlq[0].payload, b"not json", "original bytes kept");
    let error = String::from_utf8(dlq[0].header(HEADER_DLQ_ERROR).unwrap().to_vec()).unwrap();
    assert!(
        error.starts_with("poison: not an opsmesh envelope"),
        "{error}"
    );
    let error = String::from_utf8(dlq[1].header(HEADER_DLQ_ERROR).unwrap().to_vec()).unwrap();
    assert!(error.contains("payload says poison"), "{error}");
    let origin = format!("t/{}/1", dlq[1].partition);
    assert_eq!(dlq[1].header(HEADER_DLQ_ORIGIN).unwrap(), origin.as_bytes());
    assert_eq!(
        dlq[1].header("opsmesh-schema").unwrap(),
        b"t",
        "original headers kept"
    );
}

#[tokio::test]
async fn transient_errors_past_the_attempt_limit_are_dead_lettered() {
    let bus = MemoryBus::new(&MemorySettings::default());
    bus.publish(envelope(Uuid::now_v7(), "x")).await.unwrap();
    let handler = Arc::new(Recorder {
        seen: Mutex::new(vec![]),
        fail_first: Mutex::new(100),
    });
    run_until_idle(
        &bus,
        handler,
        ConsumerSettings {
            max_attempts: 3,
            ..fast()
        },
    )
    .await;
    let dlq = bus.snapshot("t.dlq");
    assert_eq!(dlq.len(), 1);
    let error = String::from_utf8(dlq[0].header(HEADER_DLQ_ERROR).unwrap().to_vec()).unwrap();
    assert!(error.contains("after 3 attempts"), "{error}");
}
