//! Typed publishing with the envelope headers and metrics.

use std::{borrow::Cow, sync::Arc, time::Instant};

use opsmesh_proto::{
    Envelope, Payload,
    envelope::{CONTENT_TYPE_JSON, HEADER_CONTENT_TYPE, HEADER_SCHEMA, HEADER_TRACEPARENT},
};

use tracing::Instrument;

use super::{Bus, BusError, Delivered, Outgoing};
use crate::{metrics::BusMetrics, telemetry::context};

/// Publishes envelopes on their schema's topic, keyed by incident (or an explicit key).
#[derive(Clone)]
pub struct Publisher {
    bus: Arc<dyn Bus>,
    metrics: BusMetrics,
}

impl Publisher {
    pub fn new(bus: Arc<dyn Bus>, metrics: BusMetrics) -> Self {
        Self { bus, metrics }
    }

    /// Publishes on `P::SCHEMA`'s topic, keyed by `key`, in a producer span; returns once
    /// acknowledged.
    pub async fn publish<P: Payload>(
        &self,
        key: &str,
        envelope: &Envelope<P>,
    ) -> Result<Delivered, BusError> {
        let span = context::producer_span(P::SCHEMA, &envelope.trace);
        let message = span.in_scope(|| Self::message(key, envelope));
        self.publish_raw(message).instrument(span).await
    }

    /// The message [`Publisher::publish`] sends: the envelope's bytes and headers on
    /// `P::SCHEMA`'s topic. For callers that check every message's size before sending any.
    /// Its `traceparent` header names the current span when that is in the envelope's trace
    /// (see [`context::traceparent_for`]), so the consumer's span becomes its child.
    pub fn message<P: Payload>(key: &str, envelope: &Envelope<P>) -> Outgoing {
        let schema = if envelope.schema == P::SCHEMA {
            Cow::Borrowed(P::SCHEMA.as_bytes())
        } else {
            Cow::Owned(envelope.schema.as_bytes().to_vec())
        };
        let headers = vec![
            (
                HEADER_CONTENT_TYPE.into(),
                CONTENT_TYPE_JSON.as_bytes().into(),
            ),
            (HEADER_SCHEMA.into(), schema),
            (
                HEADER_TRACEPARENT.into(),
                context::traceparent_for(&envelope.trace)
                    .into_owned()
                    .into_bytes()
                    .into(),
            ),
        ];
        Outgoing {
            topic: P::SCHEMA.into(),
            key: key.to_owned(),
            payload: envelope.to_vec(),
            headers,
        }
    }

    /// `Err(TooLarge)` if `message` exceeds the bus's limit: a publish that can never succeed.
    pub fn check_size(&self, message: &Outgoing) -> Result<(), BusError> {
        match self.bus.max_message_bytes() {
            Some(limit) if message.size() > limit => Err(BusError::TooLarge {
                topic: message.topic.clone().into_owned(),
                size: message.size(),
                limit: Some(limit),
            }),
            _ => Ok(()),
        }
    }

    /// Publishes prepared bytes (DLQ forwarding keeps the original bytes and headers).
    pub async fn publish_raw(&self, message: Outgoing) -> Result<Delivered, BusError> {
        // Kept for the metrics; a constant topic is borrowed, so this copies nothing.
        let topic = message.topic.clone();
        let started = Instant::now();
        let result = match self.check_size(&message) {
            Ok(()) => self.bus.publish(message).await,
            Err(too_large) => Err(too_large),
        };
        self.metrics
            .publish_seconds
            .with_label_values(&[&topic])
            .observe(started.elapsed().as_secs_f64());
        match &result {
            Ok(_) => self.metrics.published.with_label_values(&[&topic]).inc(),
            Err(err) => {
                self.metrics
                    .publish_errors
                    .with_label_values(&[&topic])
                    .inc();
                tracing::warn!(%topic, error = %err, "publish failed");
            }
        }
        result
    }

    pub fn bus(&self) -> &Arc<dyn Bus> {
        &self.bus
    }
}
