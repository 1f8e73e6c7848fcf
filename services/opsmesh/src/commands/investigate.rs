//! `opsmesh investigate`: queue an investigation for the diagnoser's investigator (an incident,
//! or a question about a namespace), follow it to its report, or find out where one stands.
//!
//! The request is a message on `opsmesh.investigation-requests.v1`; the investigator answers
//! on `opsmesh.investigations.v1` under the same id. Both are read with the runtime's
//! [`TopicFollower`] (no consumer group, nothing committed), so asking and looking leave
//! nothing behind on the broker; following a new request reads only what comes after it.

mod render;
mod standing;

use std::{path::Path, process::ExitCode, sync::Arc, time::Duration};

use clap::{Args, builder::NonEmptyStringValueParser};
use tokio::{
    sync::mpsc::{UnboundedReceiver, unbounded_channel},
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;

use opsmesh_proto::{
    Envelope,
    investigation::{
        InvestigationEvent, InvestigationRequest, InvestigationState, InvestigationUpdate,
    },
    topics::{INVESTIGATION_REQUESTS, INVESTIGATIONS},
};
use opsmesh_runtime::{
    Bus, ConfigError, ConfigTree, Publisher, Received, Settings,
    bus::{self, BusError, BusKind, EndOffsets, ReaderSettings, StateTopic, TopicFollower},
    health::Health,
    launcher,
    metrics::{BusMetrics, new_registry},
    telemetry,
};

use standing::Standing;

/// The request is invalid (the message names the field); nothing was published.
const EXIT_INVALID: u8 = 2;
const EXIT_FAILED: u8 = 3;
const EXIT_OVER_BUDGET: u8 = 4;
/// `--timeout` passed before the investigation ended (or before the topics could be read).
const EXIT_TIMEOUT: u8 = 5;

/// `source` of the request envelopes this command publishes.
const SOURCE: &str = "opsmesh-investigate";

/// What `opsmesh investigate --help` says after the options.
pub const AFTER_HELP: &str = "\
Queueing: the request is a message on opsmesh.investigation-requests.v1 (Kafka) and is \
`queued` until the diagnoser's investigator takes it up (diagnoser.investigator.enabled must \
be on; it runs diagnoser.investigator.max_concurrent at once). It answers on \
opsmesh.investigations.v1: `running`, one event per step (model calls, read-only tool calls), \
then a report that ends `completed`, `failed` or `over_budget`. A request it cannot run \
(investigator off, namespace outside diagnoser.investigator.namespaces, unknown incident) ends \
`failed` with the reason. Both topics live in Kafka: the request survives restarts of the \
diagnoser (an investigation cut short runs again: `running: attempt 2`) and of this command; \
--status ID finds it again. The reporter indexes the request and every event in Splunk as \
sourcetype opsmesh:investigation with an indexed investigation_id (index reporter.hec.index, \
`opsmesh` by default): the printed search replays it.

Costs and limits: every investigation is bounded by diagnoser.investigator.limits (max_steps \
tool calls, max_tokens, max_cost_usd at diagnoser.llm's prices, max_wall_time, \
max_result_chars) and by diagnoser.llm.budget_per_hour_usd; one stopped by a limit ends \
`over_budget`. The report carries its tokens and cost. The investigator only reads: its \
proposals are advice.

Exit status:
  0  queued (without --wait); completed; queued or running (--status without --wait)
  1  configuration or bus error, or --status found no such investigation
  2  invalid request (the field is named; nothing was published)
  3  failed
  4  over_budget
  5  --timeout passed first (the investigation goes on; --status ID --wait follows it)";

#[derive(Debug, Args)]
pub struct InvestigateArgs {
    /// The incident to investigate: its alert, diagnosis and history are the facts.
    #[arg(
        value_name = "INCIDENT_ID",
        value_parser = NonEmptyStringValueParser::new(),
        conflicts_with = "status"
    )]
    incident_id: Option<String>,
    /// What to find out (at most 2000 characters); with INCIDENT_ID, what to ask about it.
    #[arg(long, short, conflicts_with = "status")]
    question: Option<String>,
    /// The namespace the question is about (one of diagnoser.investigator.namespaces).
    #[arg(long, short, conflicts_with = "status")]
    namespace: Option<String>,
    /// Ask nothing: print where investigation ID stands (queued, running, completed, failed,
    /// over_budget) from the two topics; with --wait, follow it to its end.
    #[arg(long, value_name = "ID")]
    status: Option<String>,
    /// Follow the investigation, printing each step as it comes, until its report.
    #[arg(long)]
    wait: bool,
    /// How long to wait for the end (and for the topics to be read) before exiting 5.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Print where it stands (with the report once it ended) as one JSON object on stdout;
    /// progress goes to stderr.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum InvestigateError {
    #[error("invalid investigation request: {0}")]
    Invalid(String),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error(
        "bus.kind is \"memory\": the in-memory bus lives inside one process, so no investigator \
         can be reached from here; configure bus.kafka.brokers"
    )]
    MemoryBus,
    #[error("no investigation {0} on {INVESTIGATION_REQUESTS} or {INVESTIGATIONS}")]
    NotFound(String),
    #[error("{0}")]
    TimedOut(String),
}

impl InvestigateError {
    fn exit_code(&self) -> Option<u8> {
        match self {
            Self::Invalid(_) => Some(EXIT_INVALID),
            Self::TimedOut(_) => Some(EXIT_TIMEOUT),
            _ => None,
        }
    }
}

pub fn run(config: Option<&Path>, args: InvestigateArgs) -> ExitCode {
    match execute(config, &args) {
        Ok(code) => code,
        Err(err) => match err.exit_code() {
            Some(code) => {
                eprintln!("error: {err}");
                ExitCode::from(code)
            }
            None => launcher::fail(&err),
        },
    }
}

/// The request the arguments ask for, validated.
fn request(args: &InvestigateArgs) -> Result<InvestigationRequest, InvestigateError> {
    let user = std::env::var("USER")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| "unknown".into());
    let request = InvestigationRequest {
        investigation_id: format!("inv-{}", uuid::Uuid::now_v7().simple()),
        incident_id: args.incident_id.clone(),
        question: args.question.clone(),
        namespace: args.namespace.clone(),
        requested_by: format!("cli:{user}"),
        facts: None,
    };
    request.validate().map_err(InvestigateError::Invalid)?;
    Ok(request)
}

/// The configured settings, logging only warnings unless configured otherwise: this
/// command's output is the investigation.
fn settings(config: Option<&Path>) -> Result<Settings, InvestigateError> {
    let settings =
        ConfigTree::load_layered(Some("[log]\nlevel = \"warn\"\n"), config, std::env::vars())
            .and_then(|t| t.settings())?;
    if settings.bus.kind == BusKind::Memory {
        return Err(InvestigateError::MemoryBus);
    }
    telemetry::init(&settings.log);
    Ok(settings)
}

/// What the command line asks for.
enum Asked<'a> {
    Investigation(InvestigationRequest),
    /// Where this investigation stands.
    Status(&'a str),
}

fn execute(config: Option<&Path>, args: &InvestigateArgs) -> Result<ExitCode, InvestigateError> {
    // Checked before anything else: a bad request reaches no broker.
    let asked = match &args.status {
        Some(id) => Asked::Status(id),
        None => Asked::Investigation(request(args)?),
    };
    let settings = settings(config)?;
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(async {
        let bus = bus::connect(&settings.bus, SOURCE)?;
        let session = Session {
            bus,
            reader: settings.bus.reader.clone(),
            out: Output { json: args.json },
            deadline: tokio::time::Instant::now() + args.timeout,
            timeout: args.timeout,
            stop: CancellationToken::new(),
        };
        let result = match asked {
            Asked::Investigation(request) => session.ask(&settings, request, args.wait).await,
            Asked::Status(id) => session.status(id, args.wait).await,
        };
        session.stop.cancel();
        result
    })
}

/// Where progress goes: stdout, or stderr when stdout holds the JSON.
struct Output {
    json: bool,
}

impl Output {
    fn progress(&self, text: &str) {
        if self.json {
            eprint!("{text}");
        } else {
            print!("{text}");
        }
    }

    /// One event as it comes; with --json the report is left to [`Output::finish`].
    fn event(&self, event: &InvestigationEvent) {
        if !(self.json && matches!(event.update, InvestigationUpdate::Report(_))) {
            self.progress(&render::event(event));
        }
    }

    /// Prints the JSON (with --json) and answers the exit code of where it stands.
    fn finish(&self, standing: &Standing) -> ExitCode {
        if self.json {
            println!(
                "{}",
                serde_json::to_string_pretty(standing).expect("a standing serializes")
            );
        }
        ExitCode::from(match standing.state {
            InvestigationState::Failed => EXIT_FAILED,
            InvestigationState::OverBudget => EXIT_OVER_BUDGET,
            InvestigationState::Queued
            | InvestigationState::Running
            | InvestigationState::Completed => 0,
        })
    }
}

struct Session {
    bus: Arc<dyn Bus>,
    reader: ReaderSettings,
    out: Output,
    deadline: tokio::time::Instant,
    timeout: Duration,
    /// Stops the topic followers.
    stop: CancellationToken,
}

impl Session {
    /// Publishes `request`, then (with `wait`) follows it to its end.
    async fn ask(
        &self,
        settings: &Settings,
        request: InvestigationRequest,
        wait: bool,
    ) -> Result<ExitCode, InvestigateError> {
        // Noted before publishing: every answer to this request lies past these offsets.
        let answers_from = if wait {
            Some(self.bus.end_offsets(INVESTIGATIONS).await?)
        } else {
            None
        };
        let id = request.investigation_id.clone();
        let envelope = Envelope::new(
            SOURCE,
            settings.cluster.as_str(),
            request.incident_id.clone(),
            request,
        );
        Publisher::new(self.bus.clone(), BusMetrics::new(&new_registry()))
            .publish(&id, &envelope)
            .await?;
        let mut standing = Standing::requested(&envelope.payload);
        self.out.progress(&format!(
            "{id} queued\n  status: opsmesh investigate --status {id}\n  splunk: {}\n",
            splunk_search(&id)
        ));
        let Some(from) = answers_from else {
            return Ok(self.out.finish(&standing));
        };
        let (_, mut events) = self.follow(INVESTIGATIONS, from, events_of(&id), &self.stop);
        self.watch(&mut events, &mut standing).await
    }

    /// Prints where investigation `id` stands, then (with `wait`) follows it to its end.
    async fn status(&self, id: &str, wait: bool) -> Result<ExitCode, InvestigateError> {
        // The request is read once: only its events are followed after.
        let reading_requests = self.stop.child_token();
        let (read, mut requests) = self.follow(
            INVESTIGATION_REQUESTS,
            EndOffsets::new(),
            request_of(id),
            &reading_requests,
        );
        self.read_to_end(INVESTIGATION_REQUESTS, read).await?;
        reading_requests.cancel();
        let request = requests.try_recv().ok();
        let (read, mut events) =
            self.follow(INVESTIGATIONS, EndOffsets::new(), events_of(id), &self.stop);
        self.read_to_end(INVESTIGATIONS, read).await?;
        let mut found = request.is_some();
        let mut standing =
            request.map_or_else(|| Standing::unknown(id), |r| Standing::requested(&r));
        while let Ok(event) = events.try_recv() {
            standing.apply(&event);
            found = true;
        }
        if !found {
            return Err(InvestigateError::NotFound(id.to_owned()));
        }
        self.out.progress(&render::standing(&standing));
        if wait && !standing.ended() {
            self.watch(&mut events, &mut standing).await
        } else {
            Ok(self.out.finish(&standing))
        }
    }

    /// Applies and prints the investigation's events until it ended or the deadline passed.
    async fn watch(
        &self,
        events: &mut UnboundedReceiver<InvestigationEvent>,
        standing: &mut Standing,
    ) -> Result<ExitCode, InvestigateError> {
        while !standing.ended() {
            match tokio::time::timeout_at(self.deadline, events.recv()).await {
                Ok(Some(event)) => {
                    standing.apply(&event);
                    self.out.event(&event);
                }
                // The follower stops when told to, after this returns, or when it panicked.
                Ok(None) => {
                    return Err(
                        BusError::Consume(format!("following {INVESTIGATIONS} stopped")).into(),
                    );
                }
                Err(_) => {
                    self.out.finish(standing);
                    return Err(InvestigateError::TimedOut(format!(
                        "{} still {} after {}; `opsmesh investigate --status {} --wait` follows it",
                        standing.investigation_id,
                        standing.state,
                        humantime::format_duration(self.timeout),
                        standing.investigation_id
                    )));
                }
            }
        }
        Ok(self.out.finish(standing))
    }

    /// Follows `topic` from `from` (a partition not in it from its start) until `stop`,
    /// sending what `pick` finds in each record. The records before `from` are not fetched.
    /// The handle ends once what the topic held at open was read.
    fn follow<T: Send + 'static>(
        &self,
        topic: &'static str,
        from: EndOffsets,
        mut pick: impl FnMut(&Received) -> Option<T> + Send + 'static,
        stop: &CancellationToken,
    ) -> (JoinHandle<bool>, UnboundedReceiver<T>) {
        let (found, receiver) = unbounded_channel();
        let apply = move |record: &Received| {
            if let Some(item) = pick(record) {
                let _ = found.send(item);
            }
        };
        let (bus, reader, stop) = (self.bus.clone(), self.reader.clone(), stop.clone());
        let read = tokio::spawn(async move {
            let state = StateTopic::declare(&Health::default(), topic);
            TopicFollower::start_from(bus, &state, &from, &reader, apply, &stop)
                .await
                .is_some()
        });
        (read, receiver)
    }

    async fn read_to_end(
        &self,
        topic: &str,
        read: JoinHandle<bool>,
    ) -> Result<(), InvestigateError> {
        match tokio::time::timeout_at(self.deadline, read).await {
            Ok(Ok(true)) => Ok(()),
            Ok(Ok(false) | Err(_)) => {
                Err(BusError::Consume(format!("reading {topic} stopped")).into())
            }
            Err(_) => Err(InvestigateError::TimedOut(format!(
                "{topic} could not be read within {}",
                humantime::format_duration(self.timeout)
            ))),
        }
    }
}

/// The SPL that shows the investigation's events in Splunk.
fn splunk_search(id: &str) -> String {
    format!("index=opsmesh sourcetype=\"opsmesh:investigation\" investigation_id=\"{id}\"")
}

/// Picks investigation `id`'s request off the requests topic.
fn request_of(id: &str) -> impl FnMut(&Received) -> Option<InvestigationRequest> + Send + 'static {
    let id = id.to_owned();
    move |record| decode::<InvestigationRequest>(record).filter(|r| r.investigation_id == id)
}

/// Picks investigation `id`'s events off the investigations topic.
fn events_of(id: &str) -> impl FnMut(&Received) -> Option<InvestigationEvent> + Send + 'static {
    let id = id.to_owned();
    move |record| decode::<InvestigationEvent>(record).filter(|e| e.investigation_id == id)
}

fn decode<P: opsmesh_proto::Payload>(record: &Received) -> Option<P> {
    match Envelope::<P>::from_slice(&record.payload) {
        Ok(envelope) => Some(envelope.payload),
        Err(err) => {
            tracing::warn!(topic = %record.topic, partition = record.partition, offset = record.offset, error = %err, "unreadable; skipped");
            None
        }
    }
}
