//! Kafka group consumers: offsets stored only after handling and committed on revoke; pause
//! and resume that keep polling; a lag gauge per owned partition from librdkafka statistics;
//! and a watchdog that rejoins the group when the member is left holding nothing although
//! the group is not larger than its topics' partitions (tansu 0.6 forms such a group when a
//! restarted process joins before the dead one's session expired).

use std::{
    collections::HashSet,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use async_trait::async_trait;
use futures::FutureExt;
use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};
use rdkafka::{
    ClientContext, TopicPartitionList,
    consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer},
    error::{KafkaError, RDKafkaErrorCode},
    statistics::Statistics,
};

use super::{KafkaSettings, SetAll, base_config, millis};
use crate::bus::{BusError, Received, Subscription};

/// How often a subscription looks at whether it holds nothing for too long.
const WATCHDOG_TICK: Duration = Duration::from_secs(1);

/// The group consumers' metrics, shared by every subscription of one bus.
#[derive(Clone)]
pub(super) struct GroupMetrics {
    rejoins: IntCounterVec,
    lag: IntGaugeVec,
}

impl GroupMetrics {
    pub(super) fn new() -> Self {
        Self {
            rejoins: IntCounterVec::new(
                Opts::new(
                    "bus_rejoins_total",
                    "Times a consumer left holding no partition rejoined its group, by group",
                ),
                &["group"],
            )
            .expect("valid counter"),
            lag: IntGaugeVec::new(
                Opts::new(
                    "bus_consumer_lag",
                    "Messages of a partition this process owns that its group has not committed \
                     yet (high watermark - committed offset), from librdkafka statistics",
                ),
                &["group", "topic", "partition"],
            )
            .expect("valid gauge"),
        }
    }

    pub(super) fn register(&self, registry: &Registry) {
        crate::metrics::register(registry, self.rejoins.clone());
        crate::metrics::register(registry, self.lag.clone());
    }
}

/// What the client's callbacks and the subscription share.
struct Membership {
    group: String,
    metrics: GroupMetrics,
    /// When the last rebalance left this member holding nothing; `None` while it holds
    /// partitions or has not been given an assignment yet (still joining).
    idle_since: Mutex<Option<Instant>>,
    /// Partitions assigned while paused are paused too.
    paused: AtomicBool,
    /// Partitions whose lag series this member set, to remove them once it loses them.
    reported: Mutex<HashSet<(String, i32)>>,
}

impl Membership {
    fn idle_since(&self) -> Option<Instant> {
        *self.idle_since.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_idle_since(&self, since: Option<Instant>) {
        *self.idle_since.lock().unwrap_or_else(|p| p.into_inner()) = since;
    }

    fn report_lag(&self, statistics: &Statistics) {
        let mut owned = HashSet::new();
        for (topic, stats) in &statistics.topics {
            for partition in stats.partitions.values() {
                // -1 is librdkafka's internal unassigned partition; `desired` means assigned.
                if partition.partition < 0 || !partition.desired {
                    continue;
                }
                let lag = if partition.consumer_lag >= 0 {
                    partition.consumer_lag
                } else if partition.committed_offset < 0
                    && partition.hi_offset >= 0
                    && partition.lo_offset >= 0
                {
                    // Nothing committed yet: everything retained is unread (offsets reset
                    // to the earliest).
                    partition.hi_offset - partition.lo_offset
                } else {
                    // Not fetched yet: unknown, not zero.
                    continue;
                };
                let label = partition.partition.to_string();
                self.metrics
                    .lag
                    .with_label_values(&[self.group.as_str(), topic, &label])
                    .set(lag);
                owned.insert((topic.clone(), partition.partition));
            }
        }
        let mut reported = self.reported.lock().unwrap_or_else(|p| p.into_inner());
        for (topic, partition) in reported.difference(&owned) {
            let _ = self.metrics.lag.remove_label_values(&[
                self.group.as_str(),
                topic,
                &partition.to_string(),
            ]);
        }
        *reported = owned;
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        let reported = self.reported.get_mut().unwrap_or_else(|p| p.into_inner());
        for (topic, partition) in reported.drain() {
            let _ = self.metrics.lag.remove_label_values(&[
                self.group.as_str(),
                &topic,
                &partition.to_string(),
            ]);
        }
    }
}

/// Commits stored offsets before partitions are taken away, so the next owner starts exactly
/// after the last handled message; keeps track of what the member holds.
struct GroupContext(Arc<Membership>);

impl ClientContext for GroupContext {
    fn stats(&self, statistics: Statistics) {
        self.0.report_lag(&statistics);
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(partitions) = rebalance {
            // A rebalance is under way: not idle until it assigns something (or nothing).
            self.0.set_idle_since(None);
            match consumer.commit_consumer_state(CommitMode::Sync) {
                Ok(()) => tracing::info!(partitions = partitions.count(), "committed on revoke"),
                Err(err) if is_nothing_to_commit(&err) => {}
                Err(err) => tracing::warn!(error = %err, "commit on revoke failed"),
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(assigned) = rebalance {
            // The whole assignment, also under an incremental (cooperative) protocol.
            let held = consumer
                .assignment()
                .map_or(assigned.count(), |a| a.count());
            tracing::info!(group = %self.0.group, partitions = held, "partitions assigned");
            self.0.set_idle_since((held == 0).then(Instant::now));
            if self.0.paused.load(Ordering::SeqCst)
                && assigned.count() > 0
                && let Err(err) = consumer.pause(assigned)
            {
                tracing::warn!(group = %self.0.group, error = %err, "pausing newly assigned partitions failed");
            }
        }
    }
}

fn is_nothing_to_commit(err: &KafkaError) -> bool {
    matches!(err, KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset))
}

/// Joins `group` for `topics` as `instance` (static membership) if given.
pub(super) fn subscribe(
    settings: &KafkaSettings,
    client_id: &str,
    metrics: &GroupMetrics,
    group: &str,
    topics: &[&str],
    instance: Option<String>,
) -> Result<KafkaSubscription, BusError> {
    let membership = Arc::new(Membership {
        group: group.to_owned(),
        metrics: metrics.clone(),
        idle_since: Mutex::new(None),
        paused: AtomicBool::new(false),
        reported: Mutex::new(HashSet::new()),
    });
    let mut config = base_config(settings, client_id)?;
    config
        .set("group.id", group)
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .set("auto.commit.interval.ms", millis(settings.commit_interval))
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", millis(settings.session_timeout))
        .set(
            "heartbeat.interval.ms",
            millis(settings.session_timeout / 3),
        )
        .set("max.poll.interval.ms", millis(settings.max_poll_interval))
        .set("fetch.wait.max.ms", millis(settings.fetch_wait_max))
        .set("statistics.interval.ms", millis(settings.stats_interval));
    if let Some(instance) = &instance {
        config.set("group.instance.id", instance);
    }
    let consumer: StreamConsumer<GroupContext> = config
        .set_all(&settings.client)
        .create_with_context(GroupContext(membership.clone()))
        .map_err(|e| BusError::Client(e.to_string()))?;
    consumer
        .subscribe(topics)
        .map_err(|e| BusError::Consume(e.to_string()))?;
    let mut watchdog = tokio::time::interval(WATCHDOG_TICK);
    watchdog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    Ok(KafkaSubscription {
        consumer: Arc::new(consumer),
        membership,
        topics: topics.iter().map(|t| t.to_string()).collect(),
        rejoin_idle_after: settings.rejoin_idle_after,
        request_timeout: settings.request_timeout,
        watchdog,
        check: None,
    })
}

pub(super) struct KafkaSubscription {
    consumer: Arc<StreamConsumer<GroupContext>>,
    membership: Arc<Membership>,
    topics: Vec<String>,
    rejoin_idle_after: Duration,
    request_timeout: Duration,
    watchdog: tokio::time::Interval,
    check: Option<Check>,
}

/// Why a member that holds nothing does (or does not) rejoin.
#[derive(Debug)]
enum Idle {
    /// More members than any subscribed topic has partitions: someone must hold nothing.
    Legitimate { members: usize, partitions: usize },
    /// The topics do not exist (yet): there is nothing to hold.
    NoPartitions,
    /// Room for this member, yet it holds nothing: the assignment is broken.
    Stranded {
        members: Option<usize>,
        partitions: usize,
    },
}

impl KafkaSubscription {
    /// Rejoins the group if this member has held nothing for `rejoin_idle_after` while it
    /// should hold something. The broker is asked off the runtime, by a task that outlives
    /// this call: `recv` is raced against other work and dropped often, and the questions can
    /// take longer than the caller waits.
    fn watch(&mut self) {
        if self.rejoin_idle_after.is_zero() {
            return;
        }
        if let Some(check) = &mut self.check {
            if !check.task.is_finished() {
                return;
            }
            let asked_since = check.since;
            let verdict = (&mut check.task).now_or_never();
            self.check = None;
            // A rebalance since the question was asked makes the answer stale.
            if self.membership.idle_since() == Some(asked_since)
                && let Some(verdict) = verdict
            {
                self.act(asked_since, verdict);
            }
            return;
        }
        let Some(since) = self.membership.idle_since() else {
            return;
        };
        if since.elapsed() < self.rejoin_idle_after {
            return;
        }
        let (consumer, group, topics, timeout) = (
            self.consumer.clone(),
            self.membership.group.clone(),
            self.topics.clone(),
            self.request_timeout,
        );
        self.check = Some(Check {
            since,
            task: tokio::task::spawn_blocking(move || {
                diagnose(&consumer, &group, &topics, timeout)
            }),
        });
    }

    fn act(&mut self, since: Instant, verdict: Result<Idle, tokio::task::JoinError>) {
        let group = self.membership.group.as_str();
        match verdict {
            Ok(Idle::Stranded {
                members,
                partitions,
            }) => {
                tracing::warn!(
                    group,
                    idle = ?since.elapsed(),
                    ?members,
                    partitions,
                    "this member holds no partition although the group has room for it \
                     (a broker that formed the group around a dead member?); rejoining"
                );
                self.membership.set_idle_since(None);
                self.membership
                    .metrics
                    .rejoins
                    .with_label_values(&[group])
                    .inc();
                let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
                self.consumer.unsubscribe();
                if let Err(err) = self.consumer.subscribe(&topics) {
                    tracing::error!(group, error = %err, "resubscribing failed");
                }
            }
            Ok(Idle::Legitimate {
                members,
                partitions,
            }) => {
                tracing::debug!(
                    group,
                    members,
                    partitions,
                    "holding no partition: the group has more members than partitions"
                );
                // Look again after another period: the group may shrink.
                self.membership.set_idle_since(Some(Instant::now()));
            }
            Ok(Idle::NoPartitions) => {
                // The topics may be created later (librdkafka then rebalances on its own).
                self.membership.set_idle_since(Some(Instant::now()));
            }
            Err(err) => tracing::warn!(group, error = %err, "group check failed"),
        }
    }
}

/// A question to the broker about an idle member, asked at `since`'s idleness.
struct Check {
    since: Instant,
    task: tokio::task::JoinHandle<Idle>,
}

/// Blocking: asks the broker how many members the group has and how many partitions the
/// largest subscribed topic has.
fn diagnose(
    consumer: &StreamConsumer<GroupContext>,
    group: &str,
    topics: &[String],
    timeout: Duration,
) -> Idle {
    let mut partitions = 0;
    for topic in topics {
        // Unknown topics count as no partitions; a failed request as unknown (rejoin).
        match consumer.fetch_metadata(Some(topic), timeout) {
            Ok(metadata) => {
                let count = metadata
                    .topics()
                    .iter()
                    .filter(|t| t.error().is_none())
                    .map(|t| t.partitions().len())
                    .max()
                    .unwrap_or(0);
                partitions = partitions.max(count);
            }
            Err(err) => {
                tracing::debug!(group, topic, error = %err, "topic metadata not fetched");
                partitions = partitions.max(1);
            }
        }
    }
    if partitions == 0 {
        return Idle::NoPartitions;
    }
    let members = consumer
        .fetch_group_list(Some(group), timeout)
        .ok()
        .and_then(|list| {
            list.groups()
                .iter()
                .find(|g| g.name() == group)
                .map(|g| g.members().len())
        })
        .filter(|&n| n > 0);
    match members {
        Some(members) if members > partitions => Idle::Legitimate {
            members,
            partitions,
        },
        members => Idle::Stranded {
            members,
            partitions,
        },
    }
}

#[async_trait]
impl Subscription for KafkaSubscription {
    async fn recv(&mut self) -> Result<Received, BusError> {
        loop {
            let message = tokio::select! {
                message = self.consumer.recv() => message,
                _ = self.watchdog.tick() => {
                    self.watch();
                    continue;
                }
            };
            let message = message.map_err(|e| BusError::Consume(e.to_string()))?;
            return Ok(super::reader::received(&message));
        }
    }

    fn store(&mut self, message: &Received) -> Result<(), BusError> {
        // `rd_kafka_offset_store` stores offset + 1, the next position to read.
        self.consumer
            .store_offset(&message.topic, message.partition, message.offset)
            .map_err(|e| BusError::Commit(e.to_string()))
    }

    async fn commit(&mut self) -> Result<(), BusError> {
        match self.consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) => Ok(()),
            Err(err) if is_nothing_to_commit(&err) => Ok(()),
            Err(err) => Err(BusError::Commit(err.to_string())),
        }
    }

    fn pause(&mut self) -> Result<(), BusError> {
        self.membership.paused.store(true, Ordering::SeqCst);
        self.set_paused(true)
    }

    fn resume(&mut self) -> Result<(), BusError> {
        self.membership.paused.store(false, Ordering::SeqCst);
        self.set_paused(false)
    }
}

impl KafkaSubscription {
    fn set_paused(&self, pause: bool) -> Result<(), BusError> {
        let assigned: TopicPartitionList = self
            .consumer
            .assignment()
            .map_err(|e| BusError::Consume(e.to_string()))?;
        if assigned.count() == 0 {
            return Ok(());
        }
        let done = if pause {
            self.consumer.pause(&assigned)
        } else {
            self.consumer.resume(&assigned)
        };
        done.map_err(|e| BusError::Consume(e.to_string()))
    }
}
