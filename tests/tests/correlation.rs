//! One connect attempt, followed through all four services: the api's request id is the
//! `correlationId` of every event and request the attempt causes, W3C trace context travels in
//! the NATS headers (one trace id from the caller's `traceparent` to the last consumer), every
//! service logs the id and the trace id, and every service's `/metrics` counts what happened.

mod api_support;
mod oauth_support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use api_support::{Api, connect_path, token};
use async_nats::jetstream;
use e2e::fake_google::Decision;
use e2e::smtp::SmtpSink;
use e2e::{RunningService, TestContext};
use futures::StreamExt;
use mailer_worker::MailerWorkerConfig;
use metadata_worker::MetadataWorkerConfig;
use oauth_support::{OAuthStack, SUBACCOUNT};
use schemas::events::{AuthLinkIssued, ConnectionSucceeded};
use schemas::subjects::{MAILER_CONSUMER, METADATA_CONSUMER, headers};
use schemas::{Envelope, StreamEvent};
use serde_json::json;
use tracing::field::{Field, Visit};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);
/// The caller's trace: the whole attempt must stay in it.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// One log line as the services wrote it: where from, and the ids of the spans around it.
#[derive(Debug, Clone, Default)]
struct Line {
    target: String,
    message: String,
    fields: HashMap<&'static str, String>,
}

/// The span fields a line inherits.
const FIELDS: [&str; 5] = [
    "correlation_id",
    "request_id",
    "trace_id",
    "consumer",
    "subject",
];

#[derive(Default)]
struct SpanFields(HashMap<&'static str, String>);

impl Visit for SpanFields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if let Some(name) = FIELDS.iter().find(|name| **name == field.name()) {
            self.0.insert(name, format!("{value:?}"));
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if let Some(name) = FIELDS.iter().find(|name| **name == field.name()) {
            self.0.insert(name, value.to_owned());
        }
    }
}

struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

/// A layer that keeps every log line with its spans' ids, in this process (all four services
/// run in it).
struct Capture(Arc<Mutex<Vec<Line>>>);

impl<S> Layer<S> for Capture
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: Context<'_, S>,
    ) {
        let mut fields = SpanFields::default();
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(fields);
        }
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        ctx: Context<'_, S>,
    ) {
        if let Some(span) = ctx.span(id)
            && let Some(fields) = span.extensions_mut().get_mut::<SpanFields>()
        {
            values.record(fields);
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        let mut line = Line {
            target: event.metadata().target().to_owned(),
            ..Line::default()
        };
        let mut message = Message(String::new());
        event.record(&mut message);
        line.message = message.0;
        if let Some(scope) = ctx.event_scope(event) {
            // Innermost first: the nearest span's value wins.
            for span in scope {
                if let Some(fields) = span.extensions().get::<SpanFields>() {
                    for (name, value) in &fields.0 {
                        line.fields.entry(*name).or_insert_with(|| value.clone());
                    }
                }
            }
        }
        if let Ok(mut lines) = self.0.lock() {
            lines.push(line);
        }
    }
}

/// Installs the capture and the services' trace layer once for this test binary.
fn captured_lines() -> Arc<Mutex<Vec<Line>>> {
    static LINES: OnceLock<Arc<Mutex<Vec<Line>>>> = OnceLock::new();
    LINES
        .get_or_init(|| {
            let lines = Arc::new(Mutex::new(Vec::new()));
            let (provider, _) = service_kit::telemetry::tracer_provider("e2e", None);
            let provider = Box::leak(Box::new(provider));
            let subscriber = tracing_subscriber::registry()
                .with(
                    Capture(lines.clone())
                        .with_filter(tracing_subscriber::filter::LevelFilter::INFO),
                )
                .with(service_kit::telemetry::trace_layer(provider));
            tracing::subscriber::set_global_default(subscriber).expect("first subscriber");
            lines
        })
        .clone()
}

/// The trace id in a `traceparent`.
fn trace_id_of(traceparent: &str) -> &str {
    traceparent.split('-').nth(1).unwrap_or_default()
}

/// Every message of `E` in the domain stream, with its headers.
async fn messages<E: StreamEvent + serde::de::DeserializeOwned>(
    nats: &async_nats::Client,
    ns: &schemas::subjects::Namespace,
) -> Vec<(Envelope<E>, async_nats::HeaderMap)> {
    let js = jetstream::new(nats.clone());
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let found: Vec<_> =
            e2e::stream::messages(&js, &ns.events_stream(), Some(ns.event_filter::<E>()))
                .await
                .expect("stream")
                .iter()
                .map(|message| {
                    (
                        Envelope::<E>::decode(&message.payload).expect("event decodes"),
                        message.headers.clone().unwrap_or_default(),
                    )
                })
                .collect();
        if !found.is_empty() || tokio::time::Instant::now() >= deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The value of the first series `name{...}` whose labels include every one of `labels`.
fn series(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|line| {
            labels
                .iter()
                .all(|(key, value)| line.contains(&format!("{key}=\"{value}\"")))
        })
        .find_map(|line| line.rsplit(' ').next()?.parse().ok())
}

#[tokio::test]
async fn one_connect_attempt_has_one_id_and_one_trace_in_every_service() {
    let lines = captured_lines();
    let ctx = TestContext::new();
    let stack = OAuthStack::start(ctx.clone(), &[]).await;
    let api = Api::start_in(ctx.clone(), &[]).await;
    api.seed_google_calendar(SUBACCOUNT).await;
    let sink = SmtpSink::start();
    let smtp_url = sink.url();
    let mailer_config: MailerWorkerConfig = ctx.config(&[("SMTP_URL", smtp_url.as_str())]);
    let mut mailer = RunningService::start(mailer_worker::SERVICE, |l, s| {
        mailer_worker::run(mailer_config, l, s)
    })
    .await;
    mailer.wait_ready(WAIT).await;
    let metadata_config: MetadataWorkerConfig = ctx.config(&[]);
    let mut metadata = RunningService::start(metadata_worker::SERVICE, |l, s| {
        metadata_worker::run(metadata_config, l, s)
    })
    .await;
    metadata.wait_ready(WAIT).await;
    // A plain (not queue-group) subscriber sees a copy of the api's connect request.
    let mut rpc_requests = stack
        .nats
        .subscribe(stack.ns.connect_requested())
        .await
        .expect("subscribe");

    // The caller sends a trace, and no request id: the trace id becomes the request id.
    let http = reqwest::Client::new();
    let response = http
        .post(format!(
            "{}{}",
            api.service.base_url,
            connect_path(SUBACCOUNT)
        ))
        .bearer_auth(token(SUBACCOUNT))
        .header("traceparent", TRACEPARENT)
        .json(&json!({"userEmail": "user@example.com"}))
        .send()
        .await
        .expect("api answers");
    assert_eq!(response.status(), 200);
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let request_id = header("x-request-id").expect("x-request-id");
    assert_eq!(header("x-correlation-id"), Some(request_id.clone()));
    let correlation_id = Uuid::parse_str(&request_id).expect("a UUID");
    assert_eq!(correlation_id.simple().to_string(), TRACE_ID);
    let body: serde_json::Value = response.json().await.expect("json");
    let auth_url = body["data"]["authUrl"]
        .as_str()
        .expect("authUrl")
        .to_owned();

    // api → oauth-worker: the request carries the id and the trace.
    let rpc = tokio::time::timeout(WAIT, rpc_requests.next())
        .await
        .expect("the request was seen")
        .expect("a request");
    let rpc_headers = rpc.headers.clone().unwrap_or_default();
    assert_eq!(
        rpc_headers.get(headers::CORRELATION_ID).map(|v| v.as_str()),
        Some(request_id.as_str())
    );
    let rpc_traceparent = rpc_headers
        .get(headers::TRACEPARENT)
        .expect("traceparent on the connect request")
        .as_str();
    assert_eq!(trace_id_of(rpc_traceparent), TRACE_ID);
    assert_ne!(
        rpc_traceparent, TRACEPARENT,
        "the api's own span is the parent, not the caller's"
    );

    // The user consents; the callback completes the connection.
    let callback = stack.consent(&auth_url, Decision::allow()).await;
    let page = stack.open(&callback).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.headers.contains_key("x-request-id"));

    // oauth-worker → mailer and → metadata-worker: same id, same trace.
    let issued = messages::<AuthLinkIssued>(&stack.nats, &stack.ns).await;
    let succeeded = messages::<ConnectionSucceeded>(&stack.nats, &stack.ns).await;
    assert_eq!(issued.len(), 1, "{issued:?}");
    assert_eq!(succeeded.len(), 1, "{succeeded:?}");
    for (correlation, message_headers) in [
        (issued[0].0.correlation_id, &issued[0].1),
        (succeeded[0].0.correlation_id, &succeeded[0].1),
    ] {
        assert_eq!(correlation, correlation_id);
        assert_eq!(
            message_headers
                .get(headers::CORRELATION_ID)
                .map(|v| v.as_str()),
            Some(request_id.as_str())
        );
        let traceparent = message_headers
            .get(headers::TRACEPARENT)
            .expect("traceparent on the event")
            .as_str()
            .to_owned();
        assert_eq!(trace_id_of(&traceparent), TRACE_ID, "{traceparent}");
    }

    // The mailer sent the link and the metadata-worker wrote the connection.
    sink.wait_for_messages(1, WAIT).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let connected = api.stored_connectors(SUBACCOUNT).await.iter().any(|doc| {
            doc.get_document("metadata")
                .is_ok_and(|m| m.get_bool("isConnected") == Ok(true))
        });
        if connected {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "metadata not written"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Let the consumers' last lines (after the ack) land.
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Every service logged the attempt under the id, in the one trace.
    let lines = lines.lock().expect("lines").clone();
    let of_attempt: Vec<&Line> = lines
        .iter()
        .filter(|line| {
            line.fields.get("correlation_id") == Some(&request_id)
                || line.fields.get("request_id") == Some(&request_id)
        })
        .collect();
    let logged_by = |service: &str| {
        of_attempt
            .iter()
            .filter(|line| match service {
                "mailer" => {
                    line.target.starts_with("mailer_worker")
                        || line.fields.get("consumer").map(String::as_str) == Some(MAILER_CONSUMER)
                }
                "metadata" => {
                    line.target.starts_with("metadata_worker")
                        || line.fields.get("consumer").map(String::as_str)
                            == Some(METADATA_CONSUMER)
                }
                prefix => line.target.starts_with(prefix),
            })
            .copied()
            .collect::<Vec<_>>()
    };
    for service in ["api", "oauth_worker", "mailer", "metadata"] {
        let logged = logged_by(service);
        assert!(
            !logged.is_empty(),
            "{service} logged nothing under correlation_id={request_id}; lines of the attempt: {of_attempt:#?}"
        );
        for line in logged {
            assert_eq!(
                line.fields.get("trace_id").map(String::as_str),
                Some(TRACE_ID),
                "{service}: {line:?}"
            );
        }
    }
    // The callback's lines (a request of its own, from the browser) carry the attempt's id.
    assert!(
        of_attempt
            .iter()
            .any(|line| line.target.starts_with("oauth_worker::callback")),
        "{of_attempt:#?}"
    );

    // Each service's /metrics counts the attempt (in this process they share one registry, so
    // each endpoint shows all of it; deployed, each shows its own).
    let scrape = |service: &RunningService| {
        let url = format!("{}/metrics", service.base_url);
        async move {
            reqwest::get(url)
                .await
                .expect("metrics")
                .text()
                .await
                .expect("text")
        }
    };
    // The lag gauge is read every 10 s; its first reading is at start-up.
    let text = scrape(&metadata).await;
    for (name, labels) in [
        (
            "connect_requests_total",
            &[("outcome", "issued_and_queued")][..],
        ),
        ("auth_url_duration_seconds_count", &[][..]),
        ("oauth_callbacks_total", &[("outcome", "connected")][..]),
        ("emails_sent_total", &[("outcome", "sent")][..]),
        (
            "events_processed_total",
            &[("consumer", MAILER_CONSUMER), ("outcome", "acked")][..],
        ),
        (
            "events_processed_total",
            &[("consumer", METADATA_CONSUMER), ("outcome", "acked")][..],
        ),
        ("metadata_updates_total", &[("outcome", "written")][..]),
        (
            "http_requests_total",
            &[("service", "api"), ("status", "200")][..],
        ),
    ] {
        let value = series(&text, name, labels);
        assert!(
            value.is_some_and(|v| v > 0.0),
            "{name}{labels:?} = {value:?} in\n{text}"
        );
    }
    for consumer in [MAILER_CONSUMER, METADATA_CONSUMER] {
        assert!(
            series(&text, "consumer_lag_messages", &[("consumer", consumer)]).is_some(),
            "lag of {consumer} in\n{text}"
        );
    }
    for service in [&mailer, &metadata, &stack.worker, &api.service] {
        let text = scrape(service).await;
        assert!(
            series(&text, "events_processed_total", &[("outcome", "acked")]).is_some(),
            "{}",
            service.name
        );
    }

    // Another request: a caller's own UUID request id is kept, and echoed.
    let own = Uuid::new_v4();
    let answer = http
        .get(format!("{}/healthz", api.service.base_url))
        .header("x-request-id", own.to_string())
        .send()
        .await
        .expect("healthz");
    assert_eq!(
        answer
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok()),
        Some(own.to_string().as_str())
    );
    // Without either header, a new UUIDv7.
    let answer = http
        .get(format!("{}/healthz", api.service.base_url))
        .header("x-request-id", "not-a-uuid")
        .send()
        .await
        .expect("healthz");
    let minted = answer
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| Uuid::parse_str(v).ok())
        .expect("a minted id");
    assert_eq!(minted.get_version_num(), 7);

    for service in [mailer, metadata, api.service] {
        service.stop().await.expect("clean stop");
    }
}
