//! Logging and tracing. `RUST_LOG` filters the logs (default `info`), `LOG_FORMAT` picks text
//! or JSON lines.
//!
//! Every span of the services is also an OpenTelemetry span, so W3C trace context
//! (`traceparent`, `tracestate`) can travel with the work: it is read from HTTP requests
//! ([`crate::http`]) and from NATS messages (the consumer runner, the oauth-worker's request
//! handlers), and written into every NATS message a service sends ([`inject_nats`]). The root
//! span of each unit of work carries a `trace_id` field ([`record_trace_id`]), so log lines
//! show it.
//!
//! Without `OTEL_EXPORTER_OTLP_ENDPOINT` nothing is exported and nothing is sampled: spans
//! still get valid trace and span ids (which is all propagation and logs need), but no span
//! data is recorded. With it, spans are sampled (following the caller's decision when there is
//! one) and exported over OTLP/HTTP (protobuf) in batches, from a background thread.

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TraceId, TracerProvider as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::LogFormat;

pub use schemas::subjects::headers::{TRACEPARENT, TRACESTATE};

/// What [`install`] set up; [`Telemetry::shutdown`] flushes the spans not yet exported.
#[derive(Debug)]
pub struct Telemetry {
    provider: SdkTracerProvider,
    exporting: bool,
}

impl Telemetry {
    /// Whether spans are exported (`OTEL_EXPORTER_OTLP_ENDPOINT` is set).
    pub fn is_exporting(&self) -> bool {
        self.exporting
    }

    /// Exports what is still buffered and stops the exporter. Blocks for at most a few
    /// seconds; call it once the service has stopped.
    pub fn shutdown(self) {
        if self.exporting
            && let Err(e) = self.provider.shutdown()
        {
            eprintln!("could not flush the last spans to OTEL_EXPORTER_OTLP_ENDPOINT: {e}");
        }
    }
}

/// Installs the process-wide subscriber without exporting spans. Idempotent: in tests several
/// services share one process, and the first call wins.
pub fn init(format: LogFormat) -> Telemetry {
    install(format, "gcal-connector", None)
}

/// Installs the process-wide subscriber: logs in `format`, and trace context for every span,
/// exported to `otlp_endpoint` (the OTLP/HTTP base URL, `/v1/traces` is appended) when set.
/// Idempotent: the first call in a process wins.
pub fn install(
    format: LogFormat,
    service: &'static str,
    otlp_endpoint: Option<&url::Url>,
) -> Telemetry {
    let (provider, exporting) = tracer_provider(service, otlp_endpoint);
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_target(true)
            // Colours only on a terminal: log files and collectors get plain text.
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_target(true)
            .with_filter(filter)
            .boxed(),
    };
    let _already_installed = tracing_subscriber::registry()
        .with(logs)
        .with(trace_layer(&provider))
        .try_init();
    Telemetry {
        provider,
        exporting,
    }
}

/// The tracer provider: an OTLP batch exporter when `otlp_endpoint` is set, otherwise none
/// (and no sampling, so spans cost ids only).
pub fn tracer_provider(
    service: &'static str,
    otlp_endpoint: Option<&url::Url>,
) -> (SdkTracerProvider, bool) {
    let builder = SdkTracerProvider::builder()
        .with_resource(Resource::builder_empty().with_service_name(service).build());
    let Some(endpoint) = otlp_endpoint else {
        return (builder.with_sampler(Sampler::AlwaysOff).build(), false);
    };
    use opentelemetry_otlp::WithExportConfig as _;
    let traces = format!("{}/v1/traces", endpoint.as_str().trim_end_matches('/'));
    match opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(traces)
        .build()
    {
        Ok(exporter) => (
            builder
                .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
                .with_batch_exporter(exporter)
                .build(),
            true,
        ),
        Err(e) => {
            eprintln!(
                "OTEL_EXPORTER_OTLP_ENDPOINT: cannot export spans ({e}); tracing locally only"
            );
            (builder.with_sampler(Sampler::AlwaysOff).build(), false)
        }
    }
}

/// The layer that turns spans (INFO and above, never log events) into OpenTelemetry spans of
/// `provider`'s tracer. Public so that tests can install it under their own subscriber.
pub fn trace_layer<S>(provider: &SdkTracerProvider) -> impl Layer<S> + Send + Sync + 'static
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
{
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("gcal-connector"))
        // Parents come from the tracing span tree; no OpenTelemetry context is attached to the
        // thread on every poll of every span.
        .with_context_activation(false)
        .with_tracked_inactivity(false)
        .with_location(false)
        .with_threads(false)
        .with_level(false)
        .with_target(false)
        // Spans only: log lines stay logs (no span event, no allocation per line).
        .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
            meta.is_span() && *meta.level() <= tracing::Level::INFO
        }))
}

/// Parents `span` on the trace context in `carrier` (when it holds a valid `traceparent`) and
/// records its `trace_id` field. Call it right after creating the span, before entering it.
pub fn continue_trace(span: &Span, carrier: &dyn Extractor) {
    if carrier.get(TRACEPARENT).is_some() {
        continue_trace_with(span, TraceContextPropagator::new().extract(carrier));
    } else {
        record_trace_id(span);
    }
}

/// [`continue_trace`] with a context already extracted (an empty one starts a new trace).
pub fn continue_trace_with(span: &Span, parent: opentelemetry::Context) {
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
    record_trace_id(span);
}

/// [`continue_trace`] from a `traceparent` (and `tracestate`) stored as text.
pub fn continue_trace_from(span: &Span, traceparent: Option<&str>) {
    match traceparent {
        Some(traceparent) => continue_trace(span, &TraceParent(traceparent)),
        None => record_trace_id(span),
    }
}

/// Records `span`'s trace id in its `trace_id` field (declared `tracing::field::Empty`), so
/// every log line inside shows it. Starts the span's OpenTelemetry side: set its parent first.
pub fn record_trace_id(span: &Span) {
    if let Some(trace_id) = trace_id_of(span) {
        span.record("trace_id", tracing::field::display(trace_id));
    }
}

/// `span`'s trace id, `None` when it has none (no tracing subscriber, or the span disabled).
pub fn trace_id_of(span: &Span) -> Option<TraceId> {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then(|| span_context.trace_id())
}

/// Writes the current span's trace context (`traceparent`, `tracestate`) into `carrier`.
/// Nothing when there is no current trace.
pub fn inject(carrier: &mut dyn Injector) {
    let context = Span::current().context();
    if context.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&context, carrier);
    }
}

/// The current span's `traceparent`, to store with work that continues later (e.g. a pending
/// OAuth attempt whose callback arrives minutes after the link was issued).
pub fn current_traceparent() -> Option<String> {
    let mut carrier = Captured(None);
    inject(&mut carrier);
    carrier.0
}

/// [`inject`] into NATS message headers.
pub fn inject_nats(headers: &mut async_nats::HeaderMap) {
    inject(&mut NatsHeadersMut(headers));
}

/// Reads trace context from NATS message headers.
#[derive(Debug)]
pub struct NatsHeaders<'a>(pub &'a async_nats::HeaderMap);

impl Extractor for NatsHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(async_nats::HeaderValue::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(name, _)| name.as_ref()).collect()
    }
}

/// Writes trace context into NATS message headers.
#[derive(Debug)]
pub struct NatsHeadersMut<'a>(pub &'a mut async_nats::HeaderMap);

impl Injector for NatsHeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        // An empty `tracestate` says nothing: not sent.
        if !value.is_empty() {
            self.0.insert(key, value);
        }
    }
}

/// Reads trace context from HTTP request headers.
#[derive(Debug)]
pub struct HttpHeaders<'a>(pub &'a axum::http::HeaderMap);

impl Extractor for HttpHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(axum::http::HeaderName::as_str).collect()
    }
}

/// A stored `traceparent` alone.
struct TraceParent<'a>(&'a str);

impl Extractor for TraceParent<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == TRACEPARENT).then_some(self.0)
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT]
    }
}

/// Keeps the `traceparent` an injection writes.
struct Captured(Option<String>);

impl Injector for Captured {
    fn set(&mut self, key: &str, value: String) {
        if key == TRACEPARENT {
            self.0 = Some(value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_is_continued_and_written_back() {
        let (provider, _) = tracer_provider("test", None);
        let subscriber = tracing_subscriber::registry().with(trace_layer(&provider));
        tracing::subscriber::with_default(subscriber, || {
            let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
            let span = tracing::info_span!("work", trace_id = tracing::field::Empty);
            continue_trace_from(&span, Some(incoming));
            assert_eq!(
                trace_id_of(&span).map(|t| t.to_string()).as_deref(),
                Some("4bf92f3577b34da6a3ce929d0e0e4736")
            );
            let _entered = span.enter();
            let child = tracing::info_span!("child");
            let _child = child.enter();
            let out = current_traceparent().expect("a traceparent");
            assert!(
                out.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
                "{out}"
            );
            assert!(!out.contains("00f067aa0ba902b7"), "a new span id: {out}");
        });
    }

    #[test]
    fn with_an_endpoint_spans_are_sampled_and_exported() {
        use std::io::{Read, Write};
        // A collector that answers one export and reports its request line.
        let collector = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let endpoint: url::Url = format!("http://{}/", collector.local_addr().expect("addr"))
            .parse()
            .expect("url");
        let received = std::thread::spawn(move || {
            let (mut socket, _) = collector.accept().expect("an export arrives");
            let mut request = vec![0_u8; 64 * 1024];
            let read = socket.read(&mut request).expect("read");
            let _ = socket.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
            String::from_utf8_lossy(&request[..read])
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned()
        });
        let (provider, exporting) = tracer_provider("test", Some(&endpoint));
        assert!(exporting);
        let subscriber = tracing_subscriber::registry().with(trace_layer(&provider));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("work");
            let _entered = span.enter();
            let traceparent = current_traceparent().expect("a traceparent");
            assert!(traceparent.ends_with("-01"), "sampled: {traceparent}");
        });
        Telemetry {
            provider,
            exporting,
        }
        .shutdown();
        assert_eq!(
            received.join().expect("collector"),
            "POST /v1/traces HTTP/1.1"
        );
    }

    #[test]
    fn without_a_traceparent_a_new_trace_starts() {
        let (provider, _) = tracer_provider("test", None);
        let subscriber = tracing_subscriber::registry().with(trace_layer(&provider));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("work", trace_id = tracing::field::Empty);
            continue_trace_from(&span, Some("garbage"));
            assert!(trace_id_of(&span).is_some());
            let mut headers = async_nats::HeaderMap::new();
            let _entered = span.enter();
            inject_nats(&mut headers);
            let traceparent = headers.get(TRACEPARENT).expect("traceparent").as_str();
            assert_eq!(traceparent.len(), 55, "{traceparent}");
        });
    }
}
