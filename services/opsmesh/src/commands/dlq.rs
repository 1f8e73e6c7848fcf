//! `opsmesh dlq list|replay|skip <topic>`: inspect a topic's dead-letter queue, re-drive it
//! once the cause is fixed, or mark what nobody will fix as dealt with.
//!
//! The replayer is a consumer group (`bus.dlq.replay_group`, `opsmesh-dlq-replay` by default)
//! whose committed offsets on `<topic>.dlq` mark what was replayed; each offset is committed
//! right after its message was acknowledged on `<topic>`, so running replay twice replays
//! nothing twice, and a replay cut short (crash, broker gone) repeats at most the one message
//! in hand. The services count the DLQ's messages above those offsets as not replayed.

use std::{borrow::Cow, path::Path, process::ExitCode, time::Duration};

use clap::{Args, Subcommand};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use opsmesh_proto::topics::{self, DLQ_SUFFIX};
use opsmesh_runtime::{
    ConfigError, ConfigTree, Settings,
    bus::{
        self, BusError, BusKind, HEADER_DLQ_ERROR, HEADER_DLQ_GROUP, HEADER_DLQ_ORIGIN, Outgoing,
        ReadEvent, Received, Subscription,
    },
    launcher, shutdown, telemetry,
};

/// Header a replayed message carries: `<dlq topic>/<partition>/<offset>` it was replayed from.
pub const HEADER_REPLAYED_FROM: &str = "opsmesh-replayed-from";
/// Prefix of the headers dead-lettering adds (and replay removes).
const DLQ_HEADER_PREFIX: &str = "opsmesh-dlq-";

const REPLAY_END_HELP: &str = "The replayer reads as a member of its consumer group (that is \
how it remembers what it replayed), and a group member has no \"end\" to stop at: replay \
stops once no message arrived for --idle. Keep it above the broker's group-join time (a few \
seconds). `list` reads the DLQ up to its end offsets instead and needs no such wait.";

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Print every message of <topic>.dlq: where it came from, which group gave up on it and
    /// why, its key and envelope. Reads every partition up to the end it had at start, outside
    /// any consumer group: nobody's offsets move.
    List(ListArgs),
    /// Re-publish the messages of <topic>.dlq not replayed yet onto <topic>, with their
    /// original key, bytes and headers (minus opsmesh-dlq-*, plus opsmesh-replayed-from).
    ///
    /// Progress is the consumer group's committed offsets on <topic>.dlq, committed after
    /// each publish was acknowledged: a second run replays nothing already replayed. The
    /// consumers of <topic> deduplicate on the envelope id, so a message they already handled
    /// (rather than dead-lettered) is dropped again.
    #[command(after_help = REPLAY_END_HELP)]
    Replay(ReplayArgs),
    /// Mark the messages of <topic>.dlq not replayed yet as dealt with, without putting them
    /// back: for dead letters nobody will fix (a poison message would only be dead-lettered
    /// again). They stay listed until retention; the services stop counting them as waiting
    /// (opsmesh_bus_dlq_unreplayed_messages), which clears the DLQ alert.
    #[command(after_help = REPLAY_END_HELP)]
    Skip(ReplayArgs),
}

/// What `replay` and `skip` do with each message they mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Redrive {
    /// Re-publish it onto its topic, then mark it.
    Replay,
    /// Only mark it.
    Skip,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// The topic whose DLQ to read, e.g. opsmesh.remediations.v1 (or its .dlq name).
    topic: String,
    /// One JSON object per message instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The topic to re-drive, e.g. opsmesh.notifications.v1 (or its .dlq name).
    topic: String,
    /// Replay at most this many messages; the rest stay for the next run.
    #[arg(long)]
    limit: Option<u64>,
    /// Print what would be replayed; publish and commit nothing.
    #[arg(long)]
    dry_run: bool,
    /// Stop reading after no message arrived for this long.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    idle: Duration,
    /// Consumer group whose committed offsets mark what was replayed; default:
    /// bus.dlq.replay_group (opsmesh-dlq-replay), the group the services' DLQ sizes count
    /// replays of (opsmesh_bus_dlq_unreplayed_messages).
    #[arg(long)]
    group: Option<String>,
}

/// Why a `dlq` command failed. (Display by hand: this crate does not depend on thiserror.)
#[derive(Debug)]
pub enum DlqError {
    Config(ConfigError),
    Bus(BusError),
    /// The in-memory bus lives inside one process: its DLQs are unreachable from here.
    MemoryBus,
    /// Replayed, but its offset could not be committed: the next replay repeats it.
    Mark {
        from: String,
        topic: String,
        source: BusError,
    },
    /// Marking a message skipped failed: it still counts as waiting.
    Skip {
        from: String,
        source: BusError,
    },
}

impl std::fmt::Display for DlqError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Config(e) => e.fmt(f),
            Self::Bus(e) => e.fmt(f),
            Self::MemoryBus => f.write_str(
                "bus.kind is \"memory\": the in-memory bus lives inside one process, so its \
                 DLQs are not reachable from here; configure bus.kafka.brokers",
            ),
            Self::Mark {
                from,
                topic,
                source,
            } => write!(
                f,
                "{from} was replayed onto {topic} but marking it replayed failed ({source}); the \
                 next replay repeats it (consumers drop the repeat by envelope id)"
            ),
            Self::Skip { from, source } => write!(
                f,
                "marking {from} skipped failed ({source}); it still waits: run skip again"
            ),
        }
    }
}

impl std::error::Error for DlqError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Config(e) => Some(e),
            Self::Bus(e) | Self::Mark { source: e, .. } | Self::Skip { source: e, .. } => Some(e),
            Self::MemoryBus => None,
        }
    }
}

impl From<ConfigError> for DlqError {
    fn from(e: ConfigError) -> Self {
        Self::Config(e)
    }
}

impl From<BusError> for DlqError {
    fn from(e: BusError) -> Self {
        Self::Bus(e)
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let n: Option<u64> = t[..split].parse().ok();
    match (n, &t[split..]) {
        (Some(n), "ms") => Ok(Duration::from_millis(n)),
        (Some(n), "s" | "") => Ok(Duration::from_secs(n)),
        (Some(n), "m") => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("{s:?} is not a duration like 500ms, 5s or 1m")),
    }
}

/// `<topic>` and `<topic>.dlq` from what the user typed (either name).
fn names(topic: &str) -> (String, String) {
    let base = topic.strip_suffix(DLQ_SUFFIX).unwrap_or(topic).to_owned();
    let dlq = topics::dlq(&base);
    (base, dlq)
}

pub fn run(config: Option<&Path>, command: DlqCommand) -> ExitCode {
    let result = match command {
        DlqCommand::List(args) => list(config, &args),
        DlqCommand::Replay(args) => redrive(config, &args, Redrive::Replay),
        DlqCommand::Skip(args) => redrive(config, &args, Redrive::Skip),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => launcher::fail(&err),
    }
}

/// Settings for reading a DLQ from the beginning (for a group without committed offsets)
/// with only explicit commits.
fn settings(config: Option<&Path>) -> Result<Settings, DlqError> {
    let mut settings = ConfigTree::load(config).and_then(|t| t.settings())?;
    if settings.bus.kind == BusKind::Memory {
        return Err(DlqError::MemoryBus);
    }
    telemetry::init(&settings.log);
    let client = &mut settings.bus.kafka.client;
    client.insert("auto.offset.reset".into(), "earliest".into());
    client.insert("enable.auto.commit".into(), "false".into());
    Ok(settings)
}

/// The next message, or `None` after `idle` without one or when stopped.
async fn next(
    subscription: &mut Box<dyn Subscription>,
    idle: Duration,
    stop: &CancellationToken,
) -> Result<Option<Received>, BusError> {
    tokio::select! {
        () = stop.cancelled() => Ok(None),
        next = tokio::time::timeout(idle, subscription.recv()) => match next {
            Ok(message) => message.map(Some),
            Err(_) => Ok(None),
        },
    }
}

fn header_text(message: &Received, name: &str) -> Option<String> {
    message
        .header(name)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// What `list` shows of one DLQ message.
fn describe(message: &Received) -> Value {
    let envelope: Option<Value> = serde_json::from_slice(&message.payload).ok();
    let field = |name: &str| envelope.as_ref().and_then(|e| e.get(name)).cloned();
    json!({
        "dlq": format!("{}/{}/{}", message.topic, message.partition, message.offset),
        "origin": header_text(message, HEADER_DLQ_ORIGIN),
        "group": header_text(message, HEADER_DLQ_GROUP),
        "error": header_text(message, HEADER_DLQ_ERROR),
        "key": message.key.as_deref().map(String::from_utf8_lossy),
        "envelope_id": field("id"),
        "envelope_type": field("schema"),
        "incident_id": field("incident_id"),
        "replayed_from": header_text(message, HEADER_REPLAYED_FROM),
    })
}

fn print_text(d: &Value) {
    let text = |k: &str| d[k].as_str().unwrap_or("-").to_owned();
    println!("{}", text("dlq"));
    println!("  origin:   {}", text("origin"));
    println!("  group:    {}", text("group"));
    println!("  error:    {}", text("error"));
    println!("  key:      {}", text("key"));
    match d["envelope_id"].as_str() {
        Some(id) => println!("  envelope: {id} ({})", text("envelope_type")),
        None => println!("  envelope: (not an opsmesh envelope)"),
    }
    if let Some(from) = d["replayed_from"].as_str() {
        println!("  replayed before from: {from}");
    }
}

fn list(config: Option<&Path>, args: &ListArgs) -> Result<(), DlqError> {
    let settings = settings(config)?;
    let (_, dlq) = names(&args.topic);
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(async {
        let bus = bus::connect(&settings.bus, "opsmesh-dlq")?;
        let mut reader = bus.read_topic(&dlq).await?;
        let stop = CancellationToken::new();
        shutdown::cancel_on_signal(stop.clone());
        let mut count = 0u64;
        loop {
            let event = tokio::select! {
                () = stop.cancelled() => break,
                event = reader.next() => event?,
            };
            let ReadEvent::Record(message) = event else {
                break;
            };
            let d = describe(&message);
            if args.json {
                println!("{d}");
            } else {
                print_text(&d);
            }
            count += 1;
        }
        if !args.json {
            eprintln!("{count} message(s) in {dlq}");
        }
        Ok(())
    })
}

/// `message` (read from `dlq`) as it goes back onto `topic`.
fn replayed(message: &Received, dlq: &str, topic: &str) -> Outgoing {
    let mut headers: Vec<(Cow<'static, str>, Cow<'static, [u8]>)> = message
        .headers
        .iter()
        .filter(|(name, _)| {
            !name.starts_with(DLQ_HEADER_PREFIX) && name.as_str() != HEADER_REPLAYED_FROM
        })
        .map(|(name, value)| (name.clone().into(), value.clone().into()))
        .collect();
    headers.push((
        HEADER_REPLAYED_FROM.into(),
        format!("{dlq}/{}/{}", message.partition, message.offset)
            .into_bytes()
            .into(),
    ));
    Outgoing {
        topic: topic.to_owned().into(),
        key: message
            .key
            .as_deref()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .unwrap_or_default(),
        payload: message.payload.clone(),
        headers,
    }
}

/// `replay` or `skip`: marks the DLQ's messages the group has not marked yet, re-publishing
/// each first when replaying.
fn redrive(config: Option<&Path>, args: &ReplayArgs, mode: Redrive) -> Result<(), DlqError> {
    let settings = settings(config)?;
    let (topic, dlq) = names(&args.topic);
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(async {
        let bus = bus::connect(&settings.bus, "opsmesh-dlq-replay")?;
        let group = args
            .group
            .as_ref()
            .unwrap_or(&settings.bus.dlq.replay_group);
        let mut subscription = bus.subscribe(group, &[&dlq]).await?;
        let stop = CancellationToken::new();
        shutdown::cancel_on_signal(stop.clone());
        let mut count = 0u64;
        while args.limit.is_none_or(|limit| count < limit) {
            let Some(message) = next(&mut subscription, args.idle, &stop).await? else {
                break;
            };
            let from = format!("{dlq}/{}/{}", message.partition, message.offset);
            if args.dry_run {
                match mode {
                    Redrive::Replay => {
                        println!("would replay {from} onto {topic}: {}", describe(&message));
                    }
                    Redrive::Skip => println!("would skip {from}: {}", describe(&message)),
                }
                count += 1;
                continue;
            }
            let delivered = match mode {
                Redrive::Replay => Some(bus.publish(replayed(&message, &dlq, &topic)).await?),
                Redrive::Skip => None,
            };
            // A replayed message is marked only once its copy is acknowledged: a failure in
            // between replays it again next time rather than losing it.
            let marked = match subscription.store(&message) {
                Ok(()) => subscription.commit().await,
                Err(e) => Err(e),
            };
            if let Err(source) = marked {
                return Err(match mode {
                    Redrive::Replay => DlqError::Mark {
                        from,
                        topic: topic.clone(),
                        source,
                    },
                    Redrive::Skip => DlqError::Skip { from, source },
                });
            }
            match delivered {
                Some(at) => println!(
                    "replayed {from} onto {topic}/{}/{}",
                    at.partition, at.offset
                ),
                None => println!("skipped {from}"),
            }
            count += 1;
        }
        let done = match (mode, args.dry_run) {
            (Redrive::Replay, true) => {
                format!("would replay {count} message(s) from {dlq} onto {topic}")
            }
            (Redrive::Replay, false) => {
                format!("replayed {count} message(s) from {dlq} onto {topic}")
            }
            (Redrive::Skip, true) => format!("would skip {count} message(s) of {dlq}"),
            (Redrive::Skip, false) => format!("skipped {count} message(s) of {dlq}"),
        };
        eprintln!("{done}");
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn either_name_selects_the_topic_and_its_dlq() {
        let expected = (
            "opsmesh.alerts.v1".to_owned(),
            "opsmesh.alerts.v1.dlq".to_owned(),
        );
        assert_eq!(names("opsmesh.alerts.v1"), expected);
        assert_eq!(names("opsmesh.alerts.v1.dlq"), expected);
    }

    #[test]
    fn a_replayed_copy_drops_the_dlq_headers_and_says_where_it_came_from() {
        let message = Received {
            topic: "t.dlq".into(),
            partition: 2,
            offset: 7,
            key: Some(b"incident-1".to_vec()),
            payload: b"{\"id\":\"x\"}".to_vec(),
            headers: vec![
                ("opsmesh-schema".into(), b"t".to_vec()),
                (HEADER_DLQ_ERROR.into(), b"permanent: no".to_vec()),
                (HEADER_DLQ_ORIGIN.into(), b"t/1/3".to_vec()),
                (HEADER_DLQ_GROUP.into(), b"g".to_vec()),
                (HEADER_REPLAYED_FROM.into(), b"t.dlq/0/1".to_vec()),
            ],
        };
        let out = replayed(&message, "t.dlq", "t");
        assert_eq!(out.topic, "t");
        assert_eq!(out.key, "incident-1");
        assert_eq!(out.payload, message.payload);
        let headers: Vec<(&str, &[u8])> = out
            .headers
            .iter()
            .map(|(k, v)| (k.as_ref(), v.as_ref()))
            .collect();
        assert_eq!(
            headers,
            [
                ("opsmesh-schema", &b"t"[..]),
                (HEADER_REPLAYED_FROM, &b"t.dlq/2/7"[..]),
            ]
        );
    }
}
