//! What the pipeline holds: a received message's entry (an encoded event, a duplicate or
//! poison), the batch being filled, and a delivered batch's fate per entry.

use opsmesh_runtime::Received;
use tokio::time::Instant;

use crate::hec::EncodedEvent;

pub(super) enum Kind {
    Event(EncodedEvent),
    /// Its envelope id was already taken (or is being sent) in this process.
    Duplicate,
    /// Not an opsmesh envelope (or of an unknown schema): to the DLQ with this reason.
    Poison(String),
}

pub(super) struct Entry {
    pub(super) message: Received,
    pub(super) kind: Kind,
}

impl Entry {
    pub(super) fn line(&self) -> &[u8] {
        match &self.kind {
            Kind::Event(event) => &event.line,
            _ => &[],
        }
    }
}

#[derive(Default)]
pub(super) struct Batch {
    pub(super) entries: Vec<Entry>,
    pub(super) events: usize,
    pub(super) bytes: usize,
    /// Event time of the oldest event.
    pub(super) oldest: Option<f64>,
    /// When the first entry arrived (linger starts).
    pub(super) started: Option<Instant>,
}

impl Batch {
    pub(super) fn push(&mut self, entry: Entry) {
        if let Kind::Event(event) = &entry.kind {
            self.events += 1;
            self.bytes += event.line.len() + 1;
            self.oldest = Some(self.oldest.map_or(event.time, |t| t.min(event.time)));
        }
        self.started.get_or_insert_with(Instant::now);
        self.entries.push(entry);
    }

    pub(super) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(super) fn meta(&self) -> Meta {
        Meta {
            entries: self.entries.len(),
            events: self.events,
            oldest: self.oldest,
        }
    }
}

/// What the gauges need of a batch that is being delivered.
#[derive(Clone, Copy)]
pub(super) struct Meta {
    pub(super) entries: usize,
    pub(super) events: usize,
    pub(super) oldest: Option<f64>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Fate {
    Delivered,
    Duplicate,
    DeadLettered,
}

impl Fate {
    /// `bus_consumed_total{outcome}`, as the shared consumer loop counts.
    pub(super) fn label(self) -> &'static str {
        match self {
            Self::Delivered => "handled",
            Self::Duplicate => "duplicate",
            Self::DeadLettered => "dead_lettered",
        }
    }
}

pub(super) struct Settled {
    pub(super) batch: Batch,
    pub(super) fates: Vec<Fate>,
    /// The shutdown deadline came first: nothing of it (or after it) may be stored.
    pub(super) abandoned: bool,
}
