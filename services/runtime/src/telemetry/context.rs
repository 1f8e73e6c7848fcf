//! Trace context across process boundaries: a span's parent is taken from the W3C
//! `traceparent` a message or request carries, and what a service sends names the span it
//! was sent from, so the next service's span becomes its child.

use std::borrow::Cow;

use opentelemetry::{
    Context,
    propagation::{Extractor, TextMapPropagator},
    trace::{SpanContext, TraceContextExt, TraceId},
};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opsmesh_proto::envelope::{HEADER_TRACEPARENT, Trace};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// A lone `traceparent` value, as the propagator reads it.
struct Traceparent<'a>(&'a str);

impl Extractor for Traceparent<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == HEADER_TRACEPARENT).then_some(self.0)
    }

    fn keys(&self) -> Vec<&str> {
        vec![HEADER_TRACEPARENT]
    }
}

/// The remote span `traceparent` names; `None` when it is malformed.
fn remote_parent(traceparent: &str) -> Option<Context> {
    let context = TraceContextPropagator::new().extract(&Traceparent(traceparent));
    context.span().span_context().is_valid().then_some(context)
}

/// Makes the span `traceparent` names (if well-formed) the parent of `span`.
fn adopt_parent(span: &Span, traceparent: Option<&[u8]>) {
    let parent = traceparent
        .and_then(|value| std::str::from_utf8(value).ok())
        .and_then(remote_parent);
    if let Some(parent) = parent {
        // Fails only when the span is disabled or tracing is not installed: then there is
        // nothing to link.
        let _ = span.set_parent(parent);
    }
}

fn format_traceparent(context: &SpanContext) -> String {
    format!(
        "00-{}-{}-{:02x}",
        context.trace_id(),
        context.span_id(),
        context.trace_flags().to_u8()
    )
}

/// The current span's context, if there is a span.
fn current_span_context() -> Option<SpanContext> {
    Context::map_current(|cx| {
        let span = cx.span();
        let context = span.span_context();
        context.is_valid().then(|| context.clone())
    })
}

/// The current span as the trace a new envelope starts in (the alert door's request span:
/// the caller's trace if it sent a `traceparent`).
pub fn current_trace() -> Option<Trace> {
    current_span_context().map(|context| Trace {
        traceparent: format_traceparent(&context),
    })
}

/// The `traceparent` to send with a message of `trace`: the current span when it belongs to
/// that trace (the consumer's span handling the message the new one derives from), else the
/// envelope's own.
pub fn traceparent_for(trace: &Trace) -> Cow<'_, str> {
    match current_span_in(trace) {
        Some(context) => Cow::Owned(format_traceparent(&context)),
        None => Cow::Borrowed(&trace.traceparent),
    }
}

/// The current span, if it belongs to `trace`.
fn current_span_in(trace: &Trace) -> Option<SpanContext> {
    let trace_id = TraceId::from_hex(trace.traceparent.get(3..35)?).ok()?;
    current_span_context().filter(|context| context.trace_id() == trace_id)
}

/// The span handling one consumed message: a child of the span that published it (its
/// `traceparent` header), a new trace when the header is missing or malformed.
pub fn consumer_span(topic: &str, group: &str, traceparent: Option<&[u8]>) -> Span {
    let span = tracing::info_span!(
        parent: None,
        "consume",
        otel.name = format!("{topic} process"),
        otel.kind = "consumer",
        messaging.system = "kafka",
        messaging.destination.name = topic,
        messaging.consumer.group.name = group,
    );
    adopt_parent(&span, traceparent);
    span
}

/// The span publishing an envelope of `trace`: a child of the current span when that belongs
/// to the same trace, else of the span the envelope's own `traceparent` names.
pub fn producer_span(topic: &str, trace: &Trace) -> Span {
    let span = tracing::info_span!(
        "publish",
        otel.name = format!("{topic} publish"),
        otel.kind = "producer",
        messaging.system = "kafka",
        messaging.destination.name = topic,
    );
    join_trace(&span, trace);
    span
}

/// Puts `span` (not yet entered) in `trace`, as a child of the span the trace's
/// `traceparent` names, unless the current span already belongs to that trace: background
/// work about an incident (a timer, a retry) joins the incident's trace instead of starting
/// its own.
pub fn join_trace(span: &Span, trace: &Trace) {
    if current_span_in(trace).is_none() {
        adopt_parent(span, Some(trace.traceparent.as_bytes()));
    }
}

/// The span serving one HTTP request: a child of the caller's span when the request carries
/// a `traceparent`. Its status is recorded by [`record_status`].
pub fn server_span(method: &str, route: &str, traceparent: Option<&[u8]>) -> Span {
    let span = tracing::info_span!(
        parent: None,
        "request",
        otel.name = format!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = method,
        http.route = route,
        http.response.status_code = tracing::field::Empty,
    );
    adopt_parent(&span, traceparent);
    span
}

/// Records a response's status on its [`server_span`]; a 5xx marks the span failed.
pub fn record_status(span: &Span, status: u16) {
    span.record("http.response.status_code", status);
    if status >= 500 {
        span.record("otel.status_code", "error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_traceparents_name_no_parent() {
        for bad in [
            "",
            "00-abc",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "zz-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert!(remote_parent(bad).is_none(), "{bad:?}");
        }
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parent = remote_parent(good).expect("well-formed");
        assert_eq!(format_traceparent(parent.span().span_context()), good);
    }

    /// Runs `work` with spans recorded by an OpenTelemetry layer, as in a service.
    fn traced(work: impl FnOnce()) {
        use opentelemetry::trace::TracerProvider as _;
        use tracing_subscriber::layer::SubscriberExt;
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("test"));
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), work);
    }

    const CALLER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_message_sent_while_handling_one_names_the_handling_span() {
        traced(|| {
            let consume = consumer_span("opsmesh.alerts.v1", "g", Some(CALLER.as_bytes()));
            consume.in_scope(|| {
                let handling = current_trace().expect("a current span");
                assert_eq!(handling.traceparent[..36], CALLER[..36], "same trace");
                assert_ne!(handling.traceparent, CALLER, "its own span id");
                let derived = Trace {
                    traceparent: CALLER.replace("00f067aa0ba902b7", "1111111111111111"),
                };
                assert_eq!(traceparent_for(&derived), handling.traceparent);
                // A message of another trace keeps its own.
                let other = Trace::new_root();
                assert_eq!(traceparent_for(&other), other.traceparent.as_str());
            });
        });
    }

    #[test]
    fn background_work_joins_the_trace_it_is_about() {
        traced(|| {
            let incident = Trace {
                traceparent: CALLER.to_owned(),
            };
            let step = tracing::info_span!(parent: None, "step");
            join_trace(&step, &incident);
            let inside = step.in_scope(|| current_trace().expect("a current span"));
            assert_eq!(inside.traceparent[..36], CALLER[..36]);
        });
    }

    #[test]
    fn outside_any_span_a_message_keeps_its_envelopes_traceparent() {
        let trace = Trace::new_root();
        assert_eq!(traceparent_for(&trace), trace.traceparent.as_str());
        assert!(current_trace().is_none());
    }
}
