//! Splunk HTTP Event Collector: configuration, event encoding and the sink.

mod config;
mod event;
mod sink;

pub use config::HecConfig;
pub use event::{EncodeError, HecEvent};
pub use sink::{HecError, HecSink};
