//! Trace and span ids on every log line written inside a span, so a line found in Splunk
//! leads to its trace and back.

use std::fmt;

use opentelemetry::trace::TraceContextExt;
use tracing::{Event, Subscriber};
use tracing_subscriber::{
    fmt::{FmtContext, FormatEvent, FormatFields, format::Writer},
    registry::LookupSpan,
};

/// Wraps a line format: the inner format writes the line, then the ids are added as the last
/// fields (`"trace_id":"…","span_id":"…"` in JSON, ` trace_id=… span_id=…` in human lines).
pub(super) struct WithTraceIds<F> {
    inner: F,
    json: bool,
}

impl<F> WithTraceIds<F> {
    pub(super) fn human(inner: F) -> Self {
        Self { inner, json: false }
    }

    pub(super) fn json(inner: F) -> Self {
        Self { inner, json: true }
    }
}

/// The ids of the span current on this thread, hex-encoded, if there is one.
fn current_ids() -> Option<(String, String)> {
    opentelemetry::Context::map_current(|cx| {
        let span = cx.span();
        let context = span.span_context();
        context.is_valid().then(|| {
            (
                context.trace_id().to_string(),
                context.span_id().to_string(),
            )
        })
    })
}

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let Some((trace_id, span_id)) = current_ids() else {
            return self.inner.format_event(ctx, writer, event);
        };
        let mut line = String::with_capacity(256);
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        let line = line.trim_end_matches('\n');
        if self.json {
            // The JSON format writes one object per line: the ids go before its closing brace.
            let object = line.strip_suffix('}').unwrap_or(line);
            writeln!(
                writer,
                "{object},\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\"}}"
            )
        } else {
            writeln!(writer, "{line} trace_id={trace_id} span_id={span_id}")
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io,
        sync::{Arc, Mutex},
    };

    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::{fmt, layer::SubscriberExt};

    use super::*;

    /// Collects what the layer writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn lines(json: bool) -> Vec<String> {
        let captured = Captured::default();
        let writer = {
            let captured = captured.clone();
            move || captured.clone()
        };
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let otel = tracing_opentelemetry::layer().with_tracer(provider.tracer("test"));
        let subscriber = tracing_subscriber::registry().with(otel);
        let run = || {
            tracing::info!("outside any span");
            tracing::info_span!("work").in_scope(|| tracing::info!(answer = 42, "inside"));
        };
        if json {
            let layer = fmt::layer()
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_writer(writer)
                .map_event_format(WithTraceIds::json);
            tracing::subscriber::with_default(subscriber.with(layer), run);
        } else {
            let layer = fmt::layer()
                .with_ansi(false)
                .with_writer(writer)
                .map_event_format(WithTraceIds::human);
            tracing::subscriber::with_default(subscriber.with(layer), run);
        }
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        text.lines().map(str::to_owned).collect()
    }

    #[test]
    fn json_lines_inside_a_span_carry_its_ids() {
        let lines = lines(true);
        let outside: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        assert!(outside.get("trace_id").is_none(), "{outside}");
        let inside: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
        assert_eq!(inside["answer"], 42);
        assert_eq!(inside["trace_id"].as_str().unwrap().len(), 32, "{inside}");
        assert_eq!(inside["span_id"].as_str().unwrap().len(), 16, "{inside}");
    }

    #[test]
    fn human_lines_inside_a_span_end_with_its_ids() {
        let lines = lines(false);
        assert!(!lines[0].contains("trace_id="), "{}", lines[0]);
        let words: Vec<&str> = lines[1].split(' ').collect();
        let [.., answer, trace, span] = words[..] else {
            panic!("{}", lines[1]);
        };
        assert_eq!(answer, "answer=42");
        assert_eq!(trace.strip_prefix("trace_id=").unwrap().len(), 32);
        assert_eq!(span.strip_prefix("span_id=").unwrap().len(), 16);
    }
}
