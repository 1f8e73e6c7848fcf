//! How many messages wait in the DLQs a process's consumer groups dead-letter to: asked of the
//! bus every `bus.dlq.size_interval` (and at once when a consumer starts), so the figure
//! survives restarts, unlike `bus_dead_lettered_total`, which counts since the process started.
//!
//! Two gauges per DLQ: the messages it holds (each partition's high watermark minus its log
//! start offset), and of those the ones `opsmesh dlq replay` has not replayed yet (above the
//! replay group's committed offset). Replaying does not remove a message from a DLQ (the DLQ
//! keeps what was replayed until retention), so "waiting for an operator" is the second.

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use prometheus::{IntGaugeVec, Opts, Registry};
use serde::Deserialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{Bus, BusError, EndOffsets, Watermarks};
use crate::config::{ConfigError, Validate};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DlqSettings {
    /// How often each process asks the bus how many messages the DLQs of the topics it
    /// consumes hold (`bus_dlq_messages`, `bus_dlq_unreplayed_messages`); `0s` turns it off.
    #[serde(with = "humantime_serde")]
    pub size_interval: Duration,
    /// The consumer group of `opsmesh dlq replay` (its default `--group`): its committed
    /// offsets on a DLQ mark what was replayed.
    pub replay_group: String,
}

impl Default for DlqSettings {
    fn default() -> Self {
        Self {
            size_interval: Duration::from_secs(30),
            replay_group: "opsmesh-dlq-replay".into(),
        }
    }
}

impl Validate for DlqSettings {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        if self.replay_group.trim().is_empty() {
            return Err(ConfigError::invalid(
                format!("{prefix}.replay_group"),
                "must not be empty",
            ));
        }
        Ok(())
    }
}

/// The DLQ gauges and the DLQs to measure, shared by the consumers that add to them and the
/// task that refreshes them ([`DlqSizes::refresh_until`]).
#[derive(Clone)]
pub struct DlqSizes {
    held: IntGaugeVec,
    unreplayed: IntGaugeVec,
    watched: Arc<Watched>,
}

#[derive(Default)]
struct Watched {
    dlqs: Mutex<BTreeSet<String>>,
    /// Signalled when a DLQ is added, so its size shows without waiting for the interval.
    added: Notify,
}

impl DlqSizes {
    pub(crate) fn new(registry: &Registry) -> Self {
        let gauge = |name: &str, help: &str| {
            crate::metrics::register(
                registry,
                IntGaugeVec::new(Opts::new(name, help), &["topic"]).expect("valid gauge"),
            )
        };
        Self {
            held: gauge(
                "bus_dlq_messages",
                "Messages a DLQ topic holds (high watermark - log start offset, over its partitions), replayed ones included",
            ),
            unreplayed: gauge(
                "bus_dlq_unreplayed_messages",
                "Messages a DLQ topic holds that opsmesh dlq replay has not replayed yet (bus.dlq.replay_group)",
            ),
            watched: Arc::default(),
        }
    }

    /// Measures `dlq` from now on.
    pub fn watch(&self, dlq: String) {
        let added = self
            .watched
            .dlqs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(dlq);
        if added {
            // A permit: a refresh in progress goes round once more.
            self.watched.added.notify_one();
        }
    }

    /// Refreshes the gauges of every watched DLQ every `settings.size_interval` and whenever
    /// one is added, until `shutdown`. A DLQ the bus cannot measure keeps its last figure (a
    /// broker outage also fails `/readyz`), with a warning.
    pub async fn refresh_until(
        self,
        bus: Arc<dyn Bus>,
        settings: DlqSettings,
        shutdown: CancellationToken,
    ) {
        let mut tick = tokio::time::interval_at(
            tokio::time::Instant::now() + settings.size_interval,
            settings.size_interval,
        );
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
                () = self.watched.added.notified() => {}
            }
            let dlqs = self
                .watched
                .dlqs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            for dlq in &dlqs {
                if let Err(error) = self
                    .refresh(bus.as_ref(), dlq, &settings.replay_group)
                    .await
                {
                    tracing::warn!(dlq, %error, "cannot tell the DLQ's size; keeping the last figure");
                }
            }
        }
    }

    /// What the DLQ holds is set even when the replay group's offsets cannot be had (a
    /// principal without `Describe` on that group).
    async fn refresh(&self, bus: &dyn Bus, dlq: &str, replay_group: &str) -> Result<(), BusError> {
        let marks = bus.watermarks(dlq).await?;
        let (held, _) = sizes(&marks, &EndOffsets::new());
        self.held.with_label_values(&[dlq]).set(held);
        let replayed = bus.committed(replay_group, dlq).await?;
        let (_, unreplayed) = sizes(&marks, &replayed);
        self.unreplayed.with_label_values(&[dlq]).set(unreplayed);
        Ok(())
    }
}

/// Messages held over every partition (`high - low`) and, of those, the ones above where the
/// replay group committed (`high - max(low, committed)`; all of them where it committed none).
fn sizes(marks: &Watermarks, replayed: &EndOffsets) -> (i64, i64) {
    marks
        .iter()
        .fold((0, 0), |(held, unreplayed), (partition, &(low, high))| {
            let from = replayed
                .get(partition)
                .map_or(low, |&at| at.clamp(low, high));
            (held + (high - low), unreplayed + (high - from))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::{MemoryBus, MemorySettings, Outgoing};

    #[test]
    fn sizes_count_what_is_held_and_what_the_replay_group_has_not_passed() {
        let marks = Watermarks::from([(0, (0, 5)), (1, (10, 12)), (2, (3, 3))]);
        assert_eq!(sizes(&marks, &EndOffsets::new()), (7, 7));
        // Partition 0 replayed up to 4; partition 1's commit is older than its log start
        // (retention removed what it had not replayed); one past the end counts nothing.
        let replayed = EndOffsets::from([(0, 4), (1, 2), (2, 9)]);
        assert_eq!(sizes(&marks, &replayed), (7, 3));
        assert_eq!(sizes(&Watermarks::new(), &replayed), (0, 0));
    }

    #[test]
    fn an_empty_replay_group_is_refused_naming_the_field() {
        let settings = DlqSettings {
            replay_group: " ".into(),
            ..DlqSettings::default()
        };
        let error = settings.validate("bus.dlq").unwrap_err().to_string();
        assert!(error.contains("bus.dlq.replay_group"), "{error}");
    }

    #[tokio::test]
    async fn a_watched_dlq_is_measured_at_once_then_every_interval() {
        let registry = crate::metrics::new_registry();
        let sizes = DlqSizes::new(&registry);
        let bus = MemoryBus::new(&MemorySettings::default());
        let dead = |n: u32| Outgoing {
            topic: "t.dlq".into(),
            key: format!("k{n}"),
            payload: Vec::new(),
            headers: Vec::new(),
        };
        for n in 0..3 {
            bus.publish(dead(n)).await.unwrap();
        }
        let shutdown = CancellationToken::new();
        let settings = DlqSettings {
            size_interval: Duration::from_millis(50),
            ..DlqSettings::default()
        };
        let task = tokio::spawn(sizes.clone().refresh_until(
            Arc::new(bus.clone()),
            settings,
            shutdown.clone(),
        ));
        sizes.watch("t.dlq".into());
        let held = |n: u32| format!("opsmesh_bus_dlq_messages{{topic=\"t.dlq\"}} {n}");
        let unreplayed =
            |n: u32| format!("opsmesh_bus_dlq_unreplayed_messages{{topic=\"t.dlq\"}} {n}");
        let exposes = |lines: Vec<String>| {
            let registry = registry.clone();
            async move {
                let mut text = String::new();
                for _ in 0..200 {
                    text = prometheus::TextEncoder::new()
                        .encode_to_string(&registry.gather())
                        .unwrap();
                    if lines.iter().all(|l| text.lines().any(|t| t == l)) {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                panic!("never {lines:?}:\n{text}");
            }
        };
        exposes(vec![held(3), unreplayed(3)]).await;
        bus.publish(dead(3)).await.unwrap();
        exposes(vec![held(4), unreplayed(4)]).await;
        // The replayer takes one: still held, no longer waiting.
        let mut replayer = bus
            .subscribe("opsmesh-dlq-replay", &["t.dlq"])
            .await
            .unwrap();
        let replayed = replayer.recv().await.unwrap();
        replayer.store(&replayed).unwrap();
        exposes(vec![held(4), unreplayed(3)]).await;
        shutdown.cancel();
        task.await.unwrap();
    }
}
