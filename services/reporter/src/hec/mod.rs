//! Splunk HTTP Event Collector: configuration, event encoding, the request layer (sink),
//! indexer acknowledgement and the batching writer that treats Kafka as its outbox.

mod ack;
mod config;
mod event;
mod health;
mod metrics;
mod sink;
mod writer;

pub use config::{AckConfig, HecConfig};
pub use event::{EncodeError, EncodedEvent, HecEvent};
pub use sink::{Accepted, CHANNEL_HEADER, HecError, HecSink};
pub use writer::{HecWriter, WriterError};
