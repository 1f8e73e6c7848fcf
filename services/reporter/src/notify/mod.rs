//! Slack (incoming webhooks) and PagerDuty (Events API v2) notifications for remediator
//! decisions: trigger on escalated, awaiting approval, failed verification and advised (with
//! the developer fix from the diagnosis); resolve on resolved. PagerDuty's `dedup_key` is the
//! incident id, so a re-sent trigger updates the same alert and `resolve` closes it.
//!
//! Notifications come from a consumer group shared by the replicas
//! (`<group_prefix>reporter-notify`, `opsmesh.remediations.v1`), so each decision is notified
//! by one replica. The handler hands each matching route's notification to a delivery task
//! and returns a deferred settlement: a route that is down for minutes must not hold the
//! consume loop or the incident's key (nor run into `bus.consumer.handler_timeout`). Deliveries to one route about one incident keep their
//! order (a PagerDuty `resolve` never overtakes its `trigger`).
//!
//! Each delivery retries network errors, timeouts, 429 (honouring `Retry-After`) and 5xx with
//! backoff within `retry_budget` (minutes); other 4xx are not retried (the payload or the route
//! is wrong). The consumed message is deferred, not finished, until each of its routes was
//! sent or dead-lettered: a crash or shutdown mid-retry leaves it to be redelivered and
//! resumed (at least once), never lost. A notification that is rejected or runs out of
//! budget is dead-lettered to `opsmesh.notifications.v1.dlq` as a [`NotificationRecord`]
//! for that one route; `opsmesh dlq replay opsmesh.notifications.v1` puts it on
//! `opsmesh.notifications.v1`, which this group also consumes, and only that route is sent
//! again. Off unless a route is configured.

mod config;
mod delivery;
mod notice;
mod template;

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use chrono::Utc;
use prometheus::{IntCounterVec, Opts};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::{sync::oneshot, task::JoinSet, time::Instant};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use opsmesh_proto::{
    Envelope, Payload,
    diagnosis::Diagnosis,
    envelope::{
        CONTENT_TYPE_JSON, HEADER_CONTENT_TYPE, HEADER_SCHEMA, HEADER_TRACEPARENT, Trace,
        derived_id,
    },
    remediation::Remediation,
    topics,
};
use opsmesh_runtime::{
    BoxError, ConfigError, Context, Handler, HandlerError, Publisher, Received,
    bus::{
        HEADER_DLQ_ERROR, HEADER_DLQ_GROUP, HEADER_DLQ_ORIGIN, Outgoing, Pending, Settle, defer,
    },
    metrics::register,
    secret::Secret,
};

pub use config::{NotifyConfig, PagerDutyRoute, RouteFilter, SlackRoute, Templates};
pub use delivery::Delivery;
pub use notice::{Notice, event_of, pagerduty_payload, slack_payload};
pub use template::EventKind;

use crate::timeline::{IncidentStore, IncidentSummary};

/// Consumer group (after `bus.group_prefix`) shared by every replica.
pub const GROUP: &str = "reporter-notify";

/// Replayed notifications (one route each), consumed by [`GROUP`]; dead letters go to its
/// `.dlq`. Not in the contract's topic table yet: created at start when `bus.create_topics`.
pub const NOTIFICATIONS: &str = "opsmesh.notifications.v1";

/// One notification for one route, as it is dead-lettered and replayed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
// Closed in its schema only: a reporter one release older still reads a newer record.
#[schemars(deny_unknown_fields)]
pub struct NotificationRecord {
    /// `slack` or `pagerduty`.
    pub channel: String,
    /// The route's name under `reporter.notify.<channel>`.
    pub route: String,
    /// The event notified (`escalated`, `resolved`, …).
    pub event: String,
    /// The request body, exactly as sent, but without PagerDuty's `routing_key` (a secret,
    /// added back from the route's configuration when sent again).
    pub body: Value,
    /// Attempts made before it was dead-lettered.
    pub attempts: u32,
    /// Why it was dead-lettered.
    pub error: String,
}

impl Payload for NotificationRecord {
    const SCHEMA: &'static str = NOTIFICATIONS;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Channel {
    Slack,
    PagerDuty,
}

impl Channel {
    fn name(self) -> &'static str {
        match self {
            Self::Slack => "slack",
            Self::PagerDuty => "pagerduty",
        }
    }
}

struct Route {
    name: String,
    channel: Channel,
    /// Slack: the incoming webhook's URL; PagerDuty: the routing key. Re-read when its file
    /// changes, so a rotation needs no restart.
    secret: Secret<String>,
    /// PagerDuty's Events API URL (a Slack route posts to its secret URL).
    events_url: Option<String>,
    filter: RouteFilter,
}

impl Route {
    fn url(&self) -> String {
        match &self.events_url {
            Some(url) => url.clone(),
            None => self.secret.get().as_ref().clone(),
        }
    }

    fn routing_key(&self) -> Option<Arc<String>> {
        (self.channel == Channel::PagerDuty).then(|| self.secret.get())
    }
}

pub struct Notifier {
    config: NotifyConfig,
    routes: Vec<Route>,
    client: reqwest::Client,
    store: Arc<IncidentStore>,
    publisher: Publisher,
    /// `<group_prefix>reporter-notify`, named in dead letters.
    group: String,
    /// Whether to create [`NOTIFICATIONS`] and its DLQ at start (`bus.create_topics`).
    create_topics: bool,
    sent: IntCounterVec,
    dead_lettered: IntCounterVec,
    /// Delivery tasks, awaited at shutdown (finished ones are reaped as new ones start).
    deliveries: Mutex<JoinSet<()>>,
    /// Per route and incident, the completion of the latest delivery: the next one waits for
    /// it, so deliveries about one incident reach a route in order.
    chains: Mutex<HashMap<ChainKey, (u64, oneshot::Receiver<()>)>>,
    next_job: AtomicU64,
}

/// A route (index) and an incident id.
type ChainKey = (usize, String);

/// What a dead letter is derived from: the consumed message that asked for the notification.
#[derive(Debug, Clone)]
struct Parent {
    id: Uuid,
    incident_id: Option<String>,
    cluster: String,
    trace: Trace,
    /// `topic/partition/offset`.
    origin: String,
}

impl Parent {
    fn of<P>(envelope: &Envelope<P>, message: &Received) -> Self {
        Self {
            id: envelope.id,
            incident_id: envelope.incident_id.clone(),
            cluster: envelope.cluster.clone(),
            trace: envelope.trace.clone(),
            origin: format!("{}/{}/{}", message.topic, message.partition, message.offset),
        }
    }
}

/// One notification for one route, handed to a delivery task.
struct Job {
    route: usize,
    event: String,
    body: Value,
    parent: Parent,
    message: Arc<Settlement>,
}

/// The jobs of one consumed message: it is settled (its offset may be committed) once every
/// one of them is done for good, sent or dead-lettered. A job cut short by shutdown never
/// reports, so the message stays unsettled and is redelivered to whoever resumes it.
struct Settlement {
    remaining: AtomicUsize,
    settle: Mutex<Option<Settle>>,
}

impl Settlement {
    fn new(jobs: usize, settle: Settle) -> Arc<Self> {
        Arc::new(Self {
            remaining: AtomicUsize::new(jobs),
            settle: Mutex::new(Some(settle)),
        })
    }

    fn job_done(&self) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1
            && let Some(settle) = lock(&self.settle).take()
        {
            settle.settle();
        }
    }
}

impl Notifier {
    /// `None` when no route is configured.
    pub fn new(
        ctx: &Context,
        config: &NotifyConfig,
        store: Arc<IncidentStore>,
    ) -> Result<Option<Self>, ConfigError> {
        if config.slack.is_empty() && config.pagerduty.is_empty() {
            return Ok(None);
        }
        let mut routes = Vec::new();
        for (name, route) in &config.slack {
            routes.push(Route {
                name: name.clone(),
                channel: Channel::Slack,
                secret: config::route_secret(
                    route.webhook_url_file.as_deref(),
                    route.webhook_url_env.as_deref(),
                    &format!("reporter.notify.slack.{name}.webhook_url"),
                )?,
                events_url: None,
                filter: route.filter.clone(),
            });
        }
        for (name, route) in &config.pagerduty {
            routes.push(Route {
                name: name.clone(),
                channel: Channel::PagerDuty,
                secret: config::route_secret(
                    route.routing_key_file.as_deref(),
                    route.routing_key_env.as_deref(),
                    &format!("reporter.notify.pagerduty.{name}.routing_key"),
                )?,
                events_url: Some(route.url.clone()),
                filter: route.filter.clone(),
            });
        }
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("opsmesh-reporter/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ConfigError::invalid("reporter.notify", e.to_string()))?;
        let sent = register(
            &ctx.registry,
            IntCounterVec::new(
                Opts::new(
                    "reporter_notifications_total",
                    "Notifications by channel, route, event and outcome (sent, rejected, gave_up, interrupted, filtered)",
                ),
                &["channel", "route", "event", "outcome"],
            )
            .expect("valid metric"),
        );
        let dead_lettered = register(
            &ctx.registry,
            IntCounterVec::new(
                Opts::new(
                    "notifications_dead_lettered_total",
                    "Notifications sent to opsmesh.notifications.v1.dlq, by channel, route and reason (rejected, retries_exhausted, unknown_route)",
                ),
                &["channel", "route", "reason"],
            )
            .expect("valid metric"),
        );
        Ok(Some(Self {
            config: config.clone(),
            routes,
            client,
            store,
            publisher: ctx.publisher.clone(),
            group: format!("{}{GROUP}", ctx.settings.bus.group_prefix),
            create_topics: ctx.settings.bus.create_topics,
            sent,
            dead_lettered,
            deliveries: Mutex::new(JoinSet::new()),
            chains: Mutex::new(HashMap::new()),
            next_job: AtomicU64::new(0),
        }))
    }

    pub async fn run(
        self: &Arc<Self>,
        ctx: &Context,
        shutdown: CancellationToken,
    ) -> Result<(), BoxError> {
        tracing::info!(
            routes = ?self.routes.iter().map(|r| format!("{}:{}", r.channel.name(), r.name)).collect::<Vec<_>>(),
            "notifications on"
        );
        if self.create_topics {
            let names = [NOTIFICATIONS.to_owned(), topics::dlq(NOTIFICATIONS)];
            self.publisher.bus().ensure_topics(&names).await?;
        }
        let handler = NotifyHandler {
            notifier: self.clone(),
            shutdown: shutdown.clone(),
        };
        let consumed = ctx
            .consume(
                GROUP,
                &[topics::REMEDIATIONS, NOTIFICATIONS],
                Arc::new(handler),
                shutdown,
            )
            .await;
        // The shutdown token ends the retries; what was pending stays unsettled and is
        // redelivered to whoever owns the partition next.
        let mut deliveries = std::mem::take(&mut *lock(&self.deliveries));
        while deliveries.join_next().await.is_some() {}
        consumed?;
        Ok(())
    }

    /// Hands every matching route's notification of `envelope` (a remediator decision, read
    /// as `message`) to a delivery task.
    async fn notify(
        self: &Arc<Self>,
        envelope: &Envelope<Remediation>,
        message: &Received,
        shutdown: &CancellationToken,
    ) -> Option<Pending> {
        let event = event_of(&envelope.payload)?;
        let (diagnosis, incident) = self.context_of(envelope).await;
        let notice = Notice::new(
            event,
            envelope,
            diagnosis.as_ref().map(|d| &d.payload),
            incident.as_ref(),
            self.config.console_url.as_deref(),
        );
        let text = template::render(self.config.templates.get(event), &notice.values);
        let parent = Parent::of(envelope, message);
        let mut jobs = Vec::new();
        for (index, route) in self.routes.iter().enumerate() {
            if !route.filter.matches(&notice) {
                self.count(route, event.name(), "filtered");
                continue;
            }
            let body = match route.channel {
                Channel::Slack => slack_payload(&text),
                Channel::PagerDuty => pagerduty_payload(
                    &notice,
                    route.routing_key().as_deref().map_or("", String::as_str),
                    &text,
                ),
            };
            jobs.push((index, body));
        }
        if jobs.is_empty() {
            return None;
        }
        let (settle, pending) = defer();
        let settlement = Settlement::new(jobs.len(), settle);
        for (route, body) in jobs {
            self.start(
                Job {
                    route,
                    event: event.name().to_owned(),
                    body,
                    parent: parent.clone(),
                    message: settlement.clone(),
                },
                shutdown,
            );
        }
        Some(pending)
    }

    /// Re-sends a replayed dead letter to its one route.
    async fn resend(
        self: &Arc<Self>,
        envelope: &Envelope<NotificationRecord>,
        message: &Received,
        shutdown: &CancellationToken,
    ) -> Option<Pending> {
        let record = &envelope.payload;
        let parent = Parent::of(envelope, message);
        let found = self
            .routes
            .iter()
            .position(|r| r.channel.name() == record.channel && r.name == record.route);
        let Some(index) = found else {
            let error = format!(
                "route {}:{} is not configured (any more)",
                record.channel, record.route
            );
            self.dead_letter_record(&parent, record.clone(), "unknown_route", error, shutdown)
                .await;
            return None;
        };
        let mut body = record.body.clone();
        if let Some(key) = self.routes[index].routing_key() {
            body["routing_key"] = json!(key.as_str());
        }
        let (settle, pending) = defer();
        self.start(
            Job {
                route: index,
                event: record.event.clone(),
                body,
                parent,
                message: Settlement::new(1, settle),
            },
            shutdown,
        );
        Some(pending)
    }

    /// Spawns the delivery of `job`, after the previous one to the same route and incident.
    fn start(self: &Arc<Self>, job: Job, shutdown: &CancellationToken) {
        let key = (
            job.route,
            job.parent.incident_id.clone().unwrap_or_default(),
        );
        let seq = self.next_job.fetch_add(1, Ordering::Relaxed);
        let (done, finished) = oneshot::channel::<()>();
        let previous = lock(&self.chains).insert(key.clone(), (seq, finished));
        let notifier = self.clone();
        let shutdown = shutdown.clone();
        let mut deliveries = lock(&self.deliveries);
        // Reap finished tasks so the set only holds pending deliveries.
        while deliveries.try_join_next().is_some() {}
        deliveries.spawn(async move {
            if let Some((_, previous)) = previous {
                // Resolves when the previous delivery finished, whatever its outcome.
                let _ = previous.await;
            }
            notifier.run_job(job, &shutdown).await;
            drop(done);
            let mut chains = lock(&notifier.chains);
            if chains.get(&key).is_some_and(|(s, _)| *s == seq) {
                chains.remove(&key);
            }
        });
    }

    async fn run_job(&self, job: Job, shutdown: &CancellationToken) {
        let route = &self.routes[job.route];
        if shutdown.is_cancelled() {
            // Its message stays unsettled: whoever resumes the partition sends it.
            return;
        }
        let outcome = self.deliver(route, &job.body, shutdown).await;
        self.count(route, &job.event, outcome.label());
        let incident = job.parent.incident_id.as_deref().unwrap_or_default();
        let (reason, attempts, error) = match outcome {
            Delivery::Sent { attempts } => {
                tracing::info!(
                    route = %route.name, channel = route.channel.name(), event = %job.event,
                    %incident, attempts, "notified"
                );
                job.message.job_done();
                return;
            }
            Delivery::Interrupted { attempts, last } => {
                tracing::info!(
                    route = %route.name, channel = route.channel.name(), event = %job.event,
                    %incident, attempts, %last, "notification interrupted by shutdown; left to be redelivered"
                );
                return;
            }
            Delivery::Rejected { status, body } => {
                ("rejected", 1, format!("HTTP {status}: {body}"))
            }
            Delivery::GaveUp { attempts, last } => ("retries_exhausted", attempts, last),
        };
        tracing::error!(
            route = %route.name, channel = route.channel.name(), event = %job.event,
            %incident, reason, attempts, %error, "notification failed; dead-lettered"
        );
        let mut body = job.body;
        if let Some(fields) = body.as_object_mut() {
            fields.remove("routing_key");
        }
        let record = NotificationRecord {
            channel: route.channel.name().to_owned(),
            route: route.name.clone(),
            event: job.event,
            body,
            attempts,
            error: error.clone(),
        };
        if self
            .dead_letter_record(&job.parent, record, reason, error, shutdown)
            .await
        {
            job.message.job_done();
        }
    }

    /// Publishes `record` to `opsmesh.notifications.v1.dlq`, retrying while the bus is down
    /// (dropping it would lose the notification) until shutdown; `false` if it was not
    /// published. Its id derives from the parent's, so a redelivered decision yields the same
    /// dead letter (and a replay of both sends once), while a replayed one that fails again
    /// yields a new one (not dropped as already seen).
    async fn dead_letter_record(
        &self,
        parent: &Parent,
        record: NotificationRecord,
        reason: &str,
        error: String,
        shutdown: &CancellationToken,
    ) -> bool {
        let discriminator = format!("{}:{}", record.channel, record.route);
        let id = derived_id(parent.id, NOTIFICATIONS, &discriminator);
        let (channel, route) = (record.channel.clone(), record.route.clone());
        let envelope = Envelope {
            schema: NOTIFICATIONS.to_owned(),
            id,
            incident_id: parent.incident_id.clone(),
            occurred_at: Utc::now(),
            source: "opsmesh-reporter".to_owned(),
            cluster: parent.cluster.clone(),
            trace: parent.trace.child(id.as_bytes()),
            payload: record,
        };
        let message = Outgoing {
            topic: topics::dlq(NOTIFICATIONS).into(),
            key: parent.incident_id.clone().unwrap_or_default(),
            payload: envelope.to_vec(),
            headers: vec![
                (
                    HEADER_CONTENT_TYPE.into(),
                    CONTENT_TYPE_JSON.as_bytes().into(),
                ),
                (HEADER_SCHEMA.into(), NOTIFICATIONS.as_bytes().into()),
                (
                    HEADER_TRACEPARENT.into(),
                    envelope.trace.traceparent.into_bytes().into(),
                ),
                (
                    HEADER_DLQ_ERROR.into(),
                    format!("{reason}: {error}").into_bytes().into(),
                ),
                (
                    HEADER_DLQ_ORIGIN.into(),
                    parent.origin.clone().into_bytes().into(),
                ),
                (
                    HEADER_DLQ_GROUP.into(),
                    self.group.clone().into_bytes().into(),
                ),
            ],
        };
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            match self.publisher.publish_raw(message.clone()).await {
                Ok(_) => break,
                Err(err) => {
                    tracing::warn!(%channel, %route, attempt, error = %err, "dead letter not published yet; retrying");
                    tokio::select! {
                        () = shutdown.cancelled() => return false,
                        () = tokio::time::sleep(self.backoff(attempt)) => {}
                    }
                }
            }
        }
        self.dead_lettered
            .with_label_values(&[&channel, &route, reason])
            .inc();
        true
    }

    fn count(&self, route: &Route, event: &str, outcome: &str) {
        self.sent
            .with_label_values(&[route.channel.name(), &route.name, event, outcome])
            .inc();
    }

    /// The decision's diagnosis and incident from the timeline, waiting a little for the
    /// timeline consumer to catch up (it reads the same topics in another group).
    async fn context_of(
        &self,
        envelope: &Envelope<Remediation>,
    ) -> (Option<Envelope<Diagnosis>>, Option<IncidentSummary>) {
        let deadline = Instant::now() + self.config.diagnosis_wait;
        loop {
            if let Some((diagnosis, incident)) = self.store.diagnosis(envelope.payload.diagnosis_id)
            {
                return (Some(diagnosis), Some(incident));
            }
            if Instant::now() >= deadline {
                let incident = envelope
                    .incident_id
                    .as_deref()
                    .and_then(|id| self.store.summary(id));
                tracing::warn!(
                    diagnosis = %envelope.payload.diagnosis_id,
                    "diagnosis not in the timeline yet; notifying without it"
                );
                return (None, incident);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

struct NotifyHandler {
    notifier: Arc<Notifier>,
    shutdown: CancellationToken,
}

#[async_trait]
impl Handler for NotifyHandler {
    async fn handle(&self, _message: &Received) -> Result<(), HandlerError> {
        unreachable!("the consume loop calls handle_or_defer")
    }

    /// Deliveries run in the background (a route may be down for minutes); the message is
    /// settled once each of its routes was sent or dead-lettered.
    async fn handle_or_defer(&self, message: &Received) -> Result<Option<Pending>, HandlerError> {
        if message.topic == NOTIFICATIONS {
            let envelope = Envelope::<NotificationRecord>::from_slice(&message.payload)
                .map_err(|e| HandlerError::Permanent(e.to_string()))?;
            return Ok(self
                .notifier
                .resend(&envelope, message, &self.shutdown)
                .await);
        }
        // Not an envelope: the HEC writer dead-letters it; nothing to notify.
        let Ok(envelope) = Envelope::<Remediation>::from_slice(&message.payload) else {
            return Ok(None);
        };
        Ok(self
            .notifier
            .notify(&envelope, message, &self.shutdown)
            .await)
    }
}
