//! Reading a topic from its start to its end, then following it: how a service rebuilds the
//! state it keeps on a topic (the diagnoser's incidents, the remediator's ledger) and keeps it
//! current with what other replicas write. Outside any consumer group: nothing is committed
//! and no group is left behind on the broker by a restart.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use serde::Deserialize;
use tokio::sync::{OnceCell, watch};
use tokio_util::sync::CancellationToken;

use super::{Bus, BusError, Received};
use crate::{
    config::{ConfigError, Validate},
    health::{Gate, Health},
};

/// Per partition, an offset: the end of the log (the offset its next record will get), or how
/// far a reader has read.
pub type EndOffsets = BTreeMap<i32, i64>;

/// Per partition, its log start offset and end offset (`(low, high)`).
pub type Watermarks = BTreeMap<i32, (i64, i64)>;

#[derive(Debug)]
pub enum ReadEvent {
    Record(Received),
    /// Every partition was read up to the end it had when the reader was opened.
    CaughtUp,
}

/// A topic read from its start (or given offsets): every partition, no consumer group, no
/// commits.
#[async_trait]
pub trait TopicReader: Send {
    /// The next record (each partition's in offset order), or [`ReadEvent::CaughtUp`] exactly
    /// once: as soon as every partition was read up to its end offset at open (at once for an
    /// empty topic). Then records written since, as they arrive. An error is transient (the
    /// broker is unreachable): call again, the reader keeps its place.
    async fn next(&mut self) -> Result<ReadEvent, BusError>;
    /// Per partition, the offset below which every record was returned by `next` (records
    /// retention or compaction removed count as read).
    fn positions(&self) -> EndOffsets;
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReaderSettings {
    /// First pause after a failed attempt to open or read a state topic; doubles per attempt,
    /// with jitter, up to `retry_backoff_max`. A service keeps trying (not ready meanwhile):
    /// a broker outage at start delays it, it never leaves it working without its state.
    #[serde(with = "humantime_serde")]
    pub retry_backoff: Duration,
    #[serde(with = "humantime_serde")]
    pub retry_backoff_max: Duration,
}

impl Default for ReaderSettings {
    fn default() -> Self {
        Self {
            retry_backoff: Duration::from_millis(200),
            retry_backoff_max: Duration::from_secs(5),
        }
    }
}

impl Validate for ReaderSettings {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        if self.retry_backoff.is_zero() || self.retry_backoff > self.retry_backoff_max {
            return Err(ConfigError::invalid(
                format!("{prefix}.retry_backoff"),
                "must be > 0 and not exceed retry_backoff_max",
            ));
        }
        Ok(())
    }
}

/// A topic applied to a service's state: read to its end before [`TopicFollower::start`]
/// returns, then followed in the background until shutdown.
#[derive(Clone)]
pub struct TopicFollower {
    shared: Arc<Shared>,
}

struct Shared {
    bus: Arc<dyn Bus>,
    topic: String,
    /// How far the follower has applied, per partition.
    applied: watch::Receiver<EndOffsets>,
}

/// A topic a service keeps its state on, declared while the service is built: from the first
/// probe, `/readyz` reports `state:<topic>` not ready ("loading state") until a
/// [`TopicFollower`] read the topic to its end.
#[derive(Clone)]
pub struct StateTopic {
    topic: String,
    loaded: Gate,
}

impl StateTopic {
    pub fn declare(health: &Health, topic: &str) -> Self {
        Self {
            topic: topic.to_owned(),
            loaded: health.gate(format!("state:{topic}"), "loading state"),
        }
    }
}

impl TopicFollower {
    /// Opens `state`'s topic and hands every record to `apply` up to the end offsets at open,
    /// then returns and keeps applying new records in the background until `shutdown`.
    /// Opening and reading are retried until they succeed (each failure logged); `state` is
    /// ready once the end was reached. `None` when `shutdown` came first.
    pub async fn start<F>(
        bus: Arc<dyn Bus>,
        state: &StateTopic,
        settings: &ReaderSettings,
        apply: F,
        shutdown: &CancellationToken,
    ) -> Option<Self>
    where
        F: FnMut(&Received) + Send + 'static,
    {
        Self::start_from(bus, state, &EndOffsets::new(), settings, apply, shutdown).await
    }

    /// [`TopicFollower::start`] with each partition in `from` read from its offset there (see
    /// [`Bus::read_topic_from`]): for who only wants the records written after a point.
    pub async fn start_from<F>(
        bus: Arc<dyn Bus>,
        state: &StateTopic,
        from: &EndOffsets,
        settings: &ReaderSettings,
        apply: F,
        shutdown: &CancellationToken,
    ) -> Option<Self>
    where
        F: FnMut(&Received) + Send + 'static,
    {
        let topic = state.topic.as_str();
        let mut attempt = 0;
        let reader = loop {
            match bus.read_topic_from(topic, from).await {
                Ok(reader) => break reader,
                Err(err) => {
                    attempt += 1;
                    let delay = crate::backoff::delay(
                        settings.retry_backoff,
                        settings.retry_backoff_max,
                        attempt,
                    );
                    tracing::warn!(topic, error = %err, attempt, retry_in = ?delay, "cannot open the state topic yet");
                    tokio::select! {
                        () = shutdown.cancelled() => return None,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        };
        let (applied_tx, applied) = watch::channel(reader.positions());
        let mut pump = Pump {
            reader,
            apply,
            applied: applied_tx,
            topic: topic.to_owned(),
            settings: settings.clone(),
            failures: 0,
        };
        let mut records = 0u64;
        loop {
            match pump.step(shutdown).await? {
                ReadEvent::CaughtUp => break,
                ReadEvent::Record(_) => records += 1,
            }
        }
        state.loaded.open();
        tracing::info!(topic, records, "state loaded; following");
        let stop = shutdown.clone();
        tokio::spawn(async move { while pump.step(&stop).await.is_some() {} });
        Some(Self {
            shared: Arc::new(Shared {
                bus,
                topic: topic.to_owned(),
                applied,
            }),
        })
    }

    /// Waits until every record on the topic now (at the end offsets asked for on entry) has
    /// been applied: what another replica wrote before this call is in the state after it.
    pub async fn catch_up(&self) -> Result<(), BusError> {
        let ends = self.shared.bus.end_offsets(&self.shared.topic).await?;
        let mut applied = self.shared.applied.clone();
        // Partitions added to the topic after the reader opened are not read (nor waited for).
        applied
            .wait_for(|positions| {
                positions
                    .iter()
                    .all(|(p, at)| ends.get(p).is_none_or(|end| at >= end))
            })
            .await
            .map(drop)
            .map_err(|_| BusError::Consume(format!("{} is no longer followed", self.shared.topic)))
    }
}

/// The reading side of a [`TopicFollower`].
struct Pump<F> {
    reader: Box<dyn TopicReader>,
    apply: F,
    applied: watch::Sender<EndOffsets>,
    topic: String,
    settings: ReaderSettings,
    failures: u32,
}

impl<F: FnMut(&Received)> Pump<F> {
    /// Applies the next event, retrying through errors; `None` on shutdown.
    async fn step(&mut self, shutdown: &CancellationToken) -> Option<ReadEvent> {
        loop {
            let next = tokio::select! {
                () = shutdown.cancelled() => return None,
                next = self.reader.next() => next,
            };
            match next {
                Ok(event) => {
                    self.failures = 0;
                    if let ReadEvent::Record(record) = &event {
                        (self.apply)(record);
                    }
                    self.applied.send_replace(self.reader.positions());
                    return Some(event);
                }
                Err(err) => {
                    self.failures += 1;
                    let delay = crate::backoff::delay(
                        self.settings.retry_backoff,
                        self.settings.retry_backoff_max,
                        self.failures,
                    );
                    tracing::warn!(topic = %self.topic, error = %err, attempt = self.failures, retry_in = ?delay, "reading the state topic failed");
                    tokio::select! {
                        () = shutdown.cancelled() => return None,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }
}

/// Holds a consumer's messages of a partition the consume loop reported (re)started (see
/// [`super::Handler::partition_resumed`]) until a [`TopicFollower`] caught up: a replica that
/// gains a partition applies what its previous owner wrote before handling its messages.
pub struct PartitionBarrier {
    follower: TopicFollower,
    resumed: Mutex<Resumed>,
}

/// Partitions awaiting a catch-up, each with the one their messages share.
type Resumed = HashMap<(String, i32), Arc<OnceCell<()>>>;

impl PartitionBarrier {
    pub fn new(follower: TopicFollower) -> Self {
        Self {
            follower,
            resumed: Mutex::new(HashMap::new()),
        }
    }

    /// The partition's next messages wait for a catch-up.
    pub fn resumed(&self, topic: &str, partition: i32) {
        self.lock()
            .insert((topic.to_owned(), partition), Arc::new(OnceCell::new()));
    }

    /// Returns once the state is caught up for `message`'s partition: at once, unless the
    /// partition resumed since its last catch-up. Concurrent messages share one catch-up.
    pub async fn wait(&self, message: &Received) -> Result<(), BusError> {
        let id = (message.topic.clone(), message.partition);
        let Some(cell) = self.lock().get(&id).cloned() else {
            return Ok(());
        };
        cell.get_or_try_init(|| self.follower.catch_up()).await?;
        let mut resumed = self.lock();
        // Not if the partition resumed again meanwhile: that needs a catch-up of its own.
        if resumed.get(&id).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
            resumed.remove(&id);
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Resumed> {
        self.resumed.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

    use super::*;
    use crate::bus::{Delivered, MemoryBus, MemorySettings, Outgoing, Subscription};

    fn msg(topic: &'static str, key: &str, n: u32) -> Outgoing {
        Outgoing {
            topic: topic.into(),
            key: key.into(),
            payload: n.to_string().into_bytes(),
            headers: vec![],
        }
    }

    fn number(record: &Received) -> u32 {
        String::from_utf8_lossy(&record.payload).parse().unwrap()
    }

    fn quick() -> ReaderSettings {
        ReaderSettings {
            retry_backoff: Duration::from_millis(1),
            retry_backoff_max: Duration::from_millis(5),
        }
    }

    async fn next(reader: &mut Box<dyn TopicReader>) -> ReadEvent {
        tokio::time::timeout(Duration::from_secs(10), reader.next())
            .await
            .expect("an event within 10s")
            .unwrap()
    }

    #[tokio::test]
    async fn an_empty_topic_is_caught_up_at_once() {
        let bus = MemoryBus::new(&MemorySettings::default());
        let mut reader = bus.read_topic("t").await.unwrap();
        assert!(matches!(next(&mut reader).await, ReadEvent::CaughtUp));
        bus.publish(msg("t", "k", 1)).await.unwrap();
        assert!(matches!(next(&mut reader).await, ReadEvent::Record(r) if number(&r) == 1));
    }

    #[tokio::test]
    async fn records_before_open_then_caught_up_at_their_end_then_new_records() {
        let bus = MemoryBus::new(&MemorySettings::default());
        for n in 0..20 {
            bus.publish(msg("t", &format!("k{n}"), n)).await.unwrap();
        }
        let mut reader = bus.read_topic("t").await.unwrap();
        for n in 20..25 {
            bus.publish(msg("t", &format!("k{n}"), n)).await.unwrap();
        }
        // Partitions interleave: one at its end may go on before the others get there, but
        // `CaughtUp` comes right after the last record that was there at open.
        let mut read = Vec::new();
        while let ReadEvent::Record(r) = next(&mut reader).await {
            read.push(number(&r));
        }
        assert!(
            *read.last().unwrap() < 20,
            "caught up later than at the end: {read:?}"
        );
        assert!((0..20).all(|n| read.contains(&n)), "{read:?}");
        while read.len() < 25 {
            match next(&mut reader).await {
                ReadEvent::Record(r) => read.push(number(&r)),
                ReadEvent::CaughtUp => panic!("caught up is reported once"),
            }
        }
        read.sort_unstable();
        assert_eq!(read, (0..25).collect::<Vec<_>>(), "each record once");
        assert_eq!(reader.positions(), bus.end_offsets("t").await.unwrap());
    }

    #[tokio::test]
    async fn records_retention_removed_are_skipped() {
        let bus = MemoryBus::new(&MemorySettings {
            partitions: 1,
            retention_messages: 3,
        });
        for n in 0..10 {
            bus.publish(msg("t", "k", n)).await.unwrap();
        }
        let mut reader = bus.read_topic("t").await.unwrap();
        let mut read = Vec::new();
        while let ReadEvent::Record(r) = next(&mut reader).await {
            read.push((r.offset, number(&r)));
        }
        assert_eq!(read, [(7, 7), (8, 8), (9, 9)]);
    }

    #[tokio::test]
    async fn a_reader_opened_from_offsets_yields_only_the_records_at_and_after_them() {
        let bus = MemoryBus::new(&MemorySettings {
            partitions: 2,
            retention_messages: 4,
        });
        for n in 0..12 {
            bus.publish(msg("t", &format!("k{n}"), n)).await.unwrap();
        }
        let marks = bus.watermarks("t").await.unwrap();
        assert!(marks[&1].0 > 0 && marks[&0].1 > 1, "{marks:?}");
        // Partition 0 from one before its end; partition 1 from before what retention kept,
        // so from its oldest record.
        let from = EndOffsets::from([(0, marks[&0].1 - 1), (1, 0)]);
        let mut reader = bus.read_topic_from("t", &from).await.unwrap();
        assert_eq!(
            reader.positions(),
            EndOffsets::from([(0, marks[&0].1 - 1), (1, marks[&1].0)])
        );
        let mut read = Vec::new();
        while let ReadEvent::Record(r) = next(&mut reader).await {
            read.push((r.partition, r.offset));
        }
        let expected: Vec<_> = std::iter::once((0, marks[&0].1 - 1))
            .chain((marks[&1].0..marks[&1].1).map(|o| (1, o)))
            .collect();
        read.sort_unstable();
        assert_eq!(read, expected);
        // Past the end: the next record written, not one skipped.
        let far = EndOffsets::from([(0, 1_000), (1, 1_000)]);
        let mut reader = bus.read_topic_from("t", &far).await.unwrap();
        assert!(matches!(next(&mut reader).await, ReadEvent::CaughtUp));
        bus.publish(msg("t", "k", 99)).await.unwrap();
        assert!(matches!(next(&mut reader).await, ReadEvent::Record(r) if number(&r) == 99));
    }

    /// A slow state: each record takes a while to apply, so a reader lags its topic.
    fn slow_state() -> (Arc<Mutex<Vec<u32>>>, impl FnMut(&Received) + Send + 'static) {
        let applied = Arc::new(Mutex::new(Vec::new()));
        let state = applied.clone();
        let apply = move |record: &Received| {
            std::thread::sleep(Duration::from_millis(5));
            state.lock().unwrap().push(number(record));
        };
        (applied, apply)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_follower_loads_then_catch_up_waits_for_records_another_producer_wrote() {
        let bus = MemoryBus::new(&MemorySettings::default());
        for n in 0..10 {
            bus.publish(msg("t", &format!("k{n}"), n)).await.unwrap();
        }
        let (applied, apply) = slow_state();
        let health = Health::default();
        let shutdown = CancellationToken::new();
        let follower = TopicFollower::start(
            Arc::new(bus.clone()),
            &StateTopic::declare(&health, "t"),
            &quick(),
            apply,
            &shutdown,
        )
        .await
        .unwrap();
        assert_eq!(
            applied.lock().unwrap().len(),
            10,
            "loaded before start returns"
        );
        assert!(health.readiness().await.ready);

        let other = bus.clone();
        for n in 10..40 {
            other.publish(msg("t", &format!("k{n}"), n)).await.unwrap();
        }
        follower.catch_up().await.unwrap();
        let mut seen = applied.lock().unwrap().clone();
        seen.sort_unstable();
        assert_eq!(seen, (0..40).collect::<Vec<_>>());
        shutdown.cancel();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_resumed_partition_waits_for_the_catch_up_others_do_not() {
        let bus = MemoryBus::new(&MemorySettings::default());
        let (applied, apply) = slow_state();
        let shutdown = CancellationToken::new();
        let follower = TopicFollower::start(
            Arc::new(bus.clone()),
            &StateTopic::declare(&Health::default(), "state"),
            &quick(),
            apply,
            &shutdown,
        )
        .await
        .unwrap();
        let barrier = PartitionBarrier::new(follower);
        let work = |partition| Received {
            topic: "work".into(),
            partition,
            offset: 0,
            key: None,
            payload: Vec::new(),
            headers: Vec::new(),
        };
        for n in 0..30 {
            bus.publish(msg("state", &format!("k{n}"), n))
                .await
                .unwrap();
        }
        barrier.resumed("work", 1);
        barrier.wait(&work(1)).await.unwrap();
        assert_eq!(applied.lock().unwrap().len(), 30);
        shutdown.cancel();
    }

    /// A memory bus whose topics cannot be opened while `down`.
    struct Flaky {
        inner: MemoryBus,
        down: AtomicBool,
        attempts: AtomicU32,
    }

    #[async_trait]
    impl Bus for Flaky {
        async fn publish(&self, message: Outgoing) -> Result<Delivered, BusError> {
            self.inner.publish(message).await
        }
        async fn subscribe(
            &self,
            group: &str,
            topics: &[&str],
        ) -> Result<Box<dyn Subscription>, BusError> {
            self.inner.subscribe(group, topics).await
        }
        async fn read_topic_from(
            &self,
            topic: &str,
            from: &EndOffsets,
        ) -> Result<Box<dyn TopicReader>, BusError> {
            self.attempts.fetch_add(1, Ordering::SeqCst);
            if self.down.load(Ordering::SeqCst) {
                return Err(BusError::Unavailable("all brokers down".into()));
            }
            self.inner.read_topic_from(topic, from).await
        }
        async fn ensure_topics(&self, topics: &[String]) -> Result<(), BusError> {
            self.inner.ensure_topics(topics).await
        }
        async fn check(&self) -> Result<(), BusError> {
            Ok(())
        }
        async fn flush(&self, _timeout: Duration) -> Result<(), BusError> {
            Ok(())
        }
        fn kind(&self) -> &'static str {
            "flaky"
        }
    }

    #[tokio::test]
    async fn opening_is_retried_and_the_service_is_not_ready_until_loaded() {
        let bus = Arc::new(Flaky {
            inner: MemoryBus::new(&MemorySettings::default()),
            down: AtomicBool::new(true),
            attempts: AtomicU32::new(0),
        });
        bus.publish(msg("t", "k", 7)).await.unwrap();
        let health = Health::default();
        let shutdown = CancellationToken::new();
        let (applied, apply) = slow_state();
        let state = StateTopic::declare(&health, "t");
        let readiness = health.readiness().await;
        assert!(!readiness.ready, "not ready before the follower started");
        assert_eq!(readiness.checks[0].name, "state:t");
        let start = tokio::spawn({
            let (bus, shutdown) = (bus.clone(), shutdown.clone());
            async move {
                TopicFollower::start(bus, &state, &quick(), apply, &shutdown)
                    .await
                    .is_some()
            }
        });
        while bus.attempts.load(Ordering::SeqCst) < 3 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let readiness = health.readiness().await;
        assert!(!readiness.ready);
        assert_eq!(readiness.checks[0].name, "state:t");
        bus.down.store(false, Ordering::SeqCst);
        assert!(start.await.unwrap(), "started once the bus came back");
        assert!(health.readiness().await.ready);
        assert_eq!(*applied.lock().unwrap(), [7]);
        shutdown.cancel();
    }
}
