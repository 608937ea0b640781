//! Signed webhooks over real NATS, MongoDB-wire server and HTTP: endpoints registered through
//! the api, connection events fanned out and POSTed by the metadata-worker to a receiver in
//! this test (axum on 127.0.0.1), verified with the recipe in docs/webhooks.md; retries with the log
//! readable through the api; 410 disabling the endpoint; dead letters replayed with
//! `gcal-ops`; targets the policy refuses, and redirects that are never followed; and the
//! per-tenant cap on deliveries awaiting a retry (a tenant past it is parked, others keep
//! flowing; a Redis outage parks nothing).

mod api_support;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api_support::{Api, SUBACCOUNT, token};
use async_nats::jetstream;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use e2e::{RunningService, TestContext, stream};
use metadata_worker::MetadataWorkerConfig;
use metadata_worker::webhooks::registry::{EndpointRegistry, Source};
use ops::Parser as _;
use schemas::documents::google_auth::EncryptedToken;
use schemas::documents::webhook::{ENDPOINTS_COLLECTION, WebhookEndpoint};
use schemas::events::{
    ConnectionDisconnected, ConnectionFailed, ConnectionSucceeded, FailureReason,
};
use schemas::subjects::{
    METADATA_CONSUMER, Namespace, WEBHOOK_DELIVERY_CONSUMER, WEBHOOK_FAN_OUT_CONSUMER, headers,
};
use schemas::{Envelope, StreamEvent, SubaccountId};
use serde_json::{Value, json};
use service_kit::webhook::endpoints_changed;
use service_kit::{Env, Infrastructure};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(30);

/// The verification recipe of docs/webhooks.md ("Verifying a webhook"), exactly.
mod recipe {
    use hmac::{Hmac, KeyInit, Mac};
    use sha2::Sha256;

    /// Checks a webhook: `secret` is the `whsec_...` value shown at registration, `body` the
    /// raw request body (before any JSON parsing), `now` the current unix time in seconds.
    pub fn verify_webhook(
        secret: &str,
        timestamp: &str,
        signature: &str,
        body: &[u8],
        now: i64,
    ) -> Result<(), &'static str> {
        let sent_at: i64 = timestamp.parse().map_err(|_| "bad timestamp")?;
        if (now - sent_at).abs() > 300 {
            return Err("timestamp older than 5 minutes (a replay?)");
        }
        let expected = signature
            .strip_prefix("v1=")
            .and_then(|hex| hex::decode(hex).ok())
            .ok_or("bad signature header")?;
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).map_err(|_| "bad key")?;
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        // Constant-time comparison.
        mac.verify_slice(&expected)
            .map_err(|_| "signature mismatch")
    }
}

/// One request the receiver got, and what it answered.
#[derive(Debug, Clone)]
struct Received {
    headers: HeaderMap,
    body: Bytes,
    answered: u16,
}

impl Received {
    fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("webhook body is JSON")
    }

    fn verify(&self, secret: &str) -> Result<(), &'static str> {
        recipe::verify_webhook(
            secret,
            &self.header("Gcal-Webhook-Timestamp"),
            &self.header("Gcal-Webhook-Signature"),
            &self.body,
            chrono::Utc::now().timestamp(),
        )
    }
}

#[derive(Debug, Default)]
struct Script {
    /// Statuses for the next requests, in order; then `otherwise`.
    next: VecDeque<u16>,
    otherwise: u16,
    received: Vec<Received>,
}

/// A webhook receiver on 127.0.0.1 that answers as scripted and keeps every request.
#[derive(Debug, Clone)]
struct Receiver {
    url: String,
    script: Arc<Mutex<Script>>,
}

impl Receiver {
    async fn start(first: &[u16], otherwise: u16) -> Self {
        let script = Arc::new(Mutex::new(Script {
            next: first.iter().copied().collect(),
            otherwise,
            received: Vec::new(),
        }));
        let state = script.clone();
        let app = axum::Router::new().route(
            "/hooks/calendar",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let state = state.clone();
                async move {
                    let mut script = state.lock().expect("lock");
                    let status = script.next.pop_front().unwrap_or(script.otherwise);
                    script.received.push(Received {
                        headers,
                        body,
                        answered: status,
                    });
                    StatusCode::from_u16(status).expect("status")
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            url: format!("http://{addr}/hooks/calendar"),
            script,
        }
    }

    fn received(&self) -> Vec<Received> {
        self.script.lock().expect("lock").received.clone()
    }

    fn accepted(&self) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| (200..300).contains(&r.answered))
            .collect()
    }

    fn answer_from_now_on(&self, status: u16) {
        let mut script = self.script.lock().expect("lock");
        script.next.clear();
        script.otherwise = status;
    }
}

/// Settings that let webhooks reach the receiver (plain http on loopback).
const LOCAL_TARGETS: [(&str, &str); 2] = [
    ("WEBHOOK_ALLOW_HTTP", "true"),
    ("WEBHOOK_ALLOW_PRIVATE_TARGETS", "true"),
];

struct Stack {
    api: Api,
    _worker: RunningService,
}

impl Stack {
    /// The api and the metadata-worker in one fresh context, webhooks allowed to reach
    /// loopback, quick retries; `worker` overrides the worker's settings.
    async fn start(worker: &[(&str, &str)]) -> Self {
        Self::start_in(TestContext::new(), worker).await
    }

    /// [`Stack::start`] in `ctx` (its own Redis, say).
    async fn start_in(ctx: TestContext, worker: &[(&str, &str)]) -> Self {
        let api = Api::start_in(ctx.clone(), &LOCAL_TARGETS).await;
        api.seed_google_calendar(SUBACCOUNT).await;
        let mut settings = LOCAL_TARGETS.to_vec();
        settings.extend_from_slice(&[("WEBHOOK_RETRY_DELAYS", "200ms"), ("WEBHOOK_TIMEOUT", "2s")]);
        settings.extend_from_slice(worker);
        let config: MetadataWorkerConfig = ctx.config(&settings);
        let mut service = RunningService::start(metadata_worker::SERVICE, |l, s| {
            metadata_worker::run(config, l, s)
        })
        .await;
        service.wait_ready(WAIT).await;
        Self {
            api,
            _worker: service,
        }
    }

    fn ctx(&self) -> &TestContext {
        &self.api.ctx
    }

    /// Registers `url`; the 201's data (with the secret).
    async fn register(&self, url: &str) -> Value {
        self.register_for(SUBACCOUNT, url).await
    }

    /// Registers `url` for `subaccount`; the 201's data (with the secret).
    async fn register_for(&self, subaccount: &str, url: &str) -> Value {
        let reply = self
            .api
            .post(
                &webhooks_path(subaccount),
                Some(&token(subaccount)),
                &json!({ "url": url, "description": "test receiver" }),
            )
            .await;
        assert_eq!(reply.status, 201, "{}", reply.body);
        assert_eq!(reply.body["success"], true);
        reply.body["data"].clone()
    }

    async fn list(&self) -> Vec<Value> {
        let reply = self
            .api
            .get(&webhooks_path(SUBACCOUNT), Some(&token(SUBACCOUNT)))
            .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.body["data"].as_array().expect("list").clone()
    }

    async fn deliveries(&self, webhook_id: &str) -> Vec<Value> {
        let reply = self
            .api
            .get(
                &format!("{}/{webhook_id}/deliveries", webhooks_path(SUBACCOUNT)),
                Some(&token(SUBACCOUNT)),
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.body["data"].as_array().expect("log").clone()
    }

    async fn publish<E: StreamEvent>(&self, event: &Envelope<E>) {
        let js = jetstream::new(self.ctx().nats().await);
        service_kit::nats::publish_event(&js, &self.api.namespace, event)
            .await
            .expect("published");
    }

    /// Waits until the connection-event consumer (which announces to webhooks) and the
    /// delivery consumer have nothing pending or unacknowledged.
    async fn drained(&self) {
        self.drained_of(&[METADATA_CONSUMER, WEBHOOK_DELIVERY_CONSUMER])
            .await;
    }

    async fn drained_of(&self, durables: &[&str]) {
        let js = jetstream::new(self.ctx().nats().await);
        let stream = js
            .get_stream(self.api.namespace.events_stream())
            .await
            .expect("events stream");
        eventually("the consumers to drain", || async {
            for &durable in durables {
                let consumer = stream
                    .get_consumer::<jetstream::consumer::pull::Config>(durable)
                    .await
                    .ok()?;
                let info = consumer.get_info().await.ok()?;
                if info.num_pending > 0 || info.num_ack_pending > 0 {
                    return None;
                }
            }
            Some(())
        })
        .await;
    }
}

fn webhooks_path(subaccount: &str) -> String {
    format!("/api/connectors/{subaccount}/webhooks")
}

fn subaccount() -> SubaccountId {
    SubaccountId::parse(SUBACCOUNT).expect("id")
}

fn succeeded(google: &str) -> Envelope<ConnectionSucceeded> {
    succeeded_for(SUBACCOUNT, google)
}

fn succeeded_for(subaccount: &str, google: &str) -> Envelope<ConnectionSucceeded> {
    Envelope::new(
        SubaccountId::parse(subaccount).expect("id"),
        uuid::Uuid::now_v7(),
        ConnectionSucceeded {
            calendar_id: "507f1f77bcf86cd799439011".into(),
            user_email: "user@example.com".into(),
            google_email: google.into(),
            connected_at: "2025-10-05T12:00:00.000Z".into(),
        },
    )
}

/// Polls `check` until it yields, for at most [`WAIT`] ([`e2e::eventually`]).
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    e2e::eventually(what, WAIT, || {
        let next = check();
        async move { next.await.ok_or("nothing yet") }
    })
    .await
}

async fn wait_for_requests(receiver: &Receiver, count: usize) -> Vec<Received> {
    eventually(&format!("{count} webhook requests"), || async {
        let received = receiver.received();
        (received.len() >= count).then_some(received)
    })
    .await
}

#[tokio::test]
async fn connection_events_arrive_signed_and_verify_with_the_readme_recipe() {
    let stack = Stack::start(&[]).await;
    let receiver = Receiver::start(&[], 200).await;

    let registered = stack.register(&receiver.url).await;
    let secret = registered["secret"].as_str().expect("secret").to_owned();
    assert!(secret.starts_with("whsec_"), "{registered}");
    assert_eq!(
        registered["events"],
        json!([
            "connection-succeeded",
            "connection-failed",
            "connection-disconnected"
        ])
    );
    assert_eq!(registered["enabled"], true);
    assert_eq!(registered["url"], receiver.url);
    let webhook_id = registered["id"].as_str().expect("id").to_owned();
    // The secret is shown once: never in the list.
    let listed = stack.list().await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], webhook_id);
    assert!(listed[0].get("secret").is_none(), "{}", listed[0]);
    assert!(!listed[0].to_string().contains(&secret));
    // Nor stored in plain text.
    let stored = stack
        .api
        .tenant_db(SUBACCOUNT)
        .await
        .collection::<bson::Document>("webhookendpoints")
        .find_one(bson::doc! { "_id": &webhook_id })
        .await
        .expect("read")
        .expect("stored");
    assert!(!format!("{stored:?}").contains(&secret[6..]), "{stored:?}");

    // connection-succeeded, connection-failed (reauth_required) and connection-disconnected.
    let success = succeeded("googleuser@gmail.com");
    stack.publish(&success).await;
    let reauth = Envelope::new(
        subaccount(),
        uuid::Uuid::now_v7(),
        ConnectionFailed {
            user_email: None,
            google_email: Some("googleuser@gmail.com".into()),
            reason: FailureReason::ReauthRequired,
            message: "refresh token revoked".into(),
            missing_scopes: vec![],
        },
    );
    stack.publish(&reauth).await;
    let gone = Envelope::new(
        subaccount(),
        uuid::Uuid::now_v7(),
        ConnectionDisconnected {
            google_email: "googleuser@gmail.com".into(),
            disconnected_at: "2025-10-06T12:00:00.000Z".into(),
            operation_id: None,
            revocation: None,
        },
    );
    stack.publish(&gone).await;

    let received = wait_for_requests(&receiver, 3).await;
    let by_id = |id: uuid::Uuid| {
        received
            .iter()
            .find(|r| r.header("Gcal-Webhook-Id") == id.to_string())
            .unwrap_or_else(|| panic!("no webhook for {id}: {received:?}"))
    };
    for (id, event_type, payload) in [
        (
            success.id,
            "connection-succeeded",
            serde_json::to_value(&success.payload).expect("json"),
        ),
        (
            reauth.id,
            "connection-failed",
            serde_json::to_value(&reauth.payload).expect("json"),
        ),
        (
            gone.id,
            "connection-disconnected",
            serde_json::to_value(&gone.payload).expect("json"),
        ),
    ] {
        let webhook = by_id(id);
        assert_eq!(webhook.header("content-type"), "application/json");
        let timestamp: i64 = webhook
            .header("Gcal-Webhook-Timestamp")
            .parse()
            .expect("unix seconds");
        assert!((chrono::Utc::now().timestamp() - timestamp).abs() < 60);
        assert!(webhook.header("Gcal-Webhook-Signature").starts_with("v1="));
        webhook
            .verify(&secret)
            .unwrap_or_else(|e| panic!("{event_type}: {e}"));
        let body = webhook.json();
        assert_eq!(body["id"], id.to_string());
        assert_eq!(body["type"], event_type);
        assert_eq!(body["subaccountId"], SUBACCOUNT);
        assert_eq!(body["data"], payload);
        assert!(
            body["createdAt"]
                .as_str()
                .expect("createdAt")
                .ends_with('Z')
        );
        assert_eq!(body.as_object().expect("object").len(), 5, "{body}");

        // A tampered body, another secret or an old timestamp fail the recipe.
        let mut tampered = webhook.clone();
        tampered.body = Bytes::from(
            String::from_utf8(webhook.body.to_vec())
                .expect("utf-8")
                .replace("googleuser@gmail.com", "attacker@gmail.com"),
        );
        assert_ne!(tampered.body, webhook.body);
        assert_eq!(tampered.verify(&secret), Err("signature mismatch"));
        assert_eq!(
            webhook.verify("whsec_someone-elses-secret"),
            Err("signature mismatch")
        );
        assert!(
            recipe::verify_webhook(
                &secret,
                &webhook.header("Gcal-Webhook-Timestamp"),
                &webhook.header("Gcal-Webhook-Signature"),
                &webhook.body,
                timestamp + 301,
            )
            .is_err()
        );
    }
    assert_eq!(
        success.payload.google_email,
        by_id(success.id).json()["data"]["googleEmail"]
    );

    // The log shows each delivery.
    let log = eventually("three delivered attempts in the log", || async {
        let log = stack.deliveries(&webhook_id).await;
        (log.len() == 3 && log.iter().all(|d| d["outcome"] == "delivered")).then_some(log)
    })
    .await;
    assert!(
        log.iter()
            .all(|d| d["statusCode"] == 200 && d["attempt"] == 1),
        "{log:?}"
    );

    // Deleted: 200, then 404, and nothing more is delivered.
    let path = format!("{}/{webhook_id}", webhooks_path(SUBACCOUNT));
    let deleted = stack
        .api
        .send(
            reqwest::Method::DELETE,
            &path,
            Some(&token(SUBACCOUNT)),
            None,
        )
        .await;
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    stack
        .api
        .send(
            reqwest::Method::DELETE,
            &path,
            Some(&token(SUBACCOUNT)),
            None,
        )
        .await
        .assert_error(404, "webhook_not_found");
    stack.publish(&succeeded("other@gmail.com")).await;
    stack.drained().await;
    assert_eq!(receiver.received().len(), 3);
}

/// A deployment upgraded from the versions with a `webhook-fan-out` consumer of its own: the
/// consumer is served until an operator deletes it, and an event both it and the metadata
/// writer announce is delivered once.
#[tokio::test]
async fn a_retired_fan_out_consumer_is_still_served_and_nothing_is_sent_twice() {
    let ctx = TestContext::new();
    let ns = Namespace::new(&ctx.id).expect("ns");
    let js = jetstream::new(ctx.nats().await);
    service_kit::nats::ensure_streams(&js, &ns, &ctx.common(&[]).streams)
        .await
        .expect("streams");
    let retired = service_kit::consumer::ConsumerSpec {
        durable: WEBHOOK_FAN_OUT_CONSUMER,
        filter_subject: ns.connection_events_filter(),
        ack_wait: Duration::from_secs(30),
        max_deliver: 5,
        max_ack_pending: 256,
        concurrency: 4,
        retry_delays: vec![Duration::from_millis(200)],
    };
    service_kit::consumer::ensure_consumer(&js, &ns, &retired)
        .await
        .expect("the retired consumer, as an older version left it");

    let stack = Stack::start_in(ctx, &[]).await;
    let receiver = Receiver::start(&[], 200).await;
    stack.register(&receiver.url).await;
    let event = succeeded("retired@gmail.com");
    stack.publish(&event).await;
    eventually("the event delivered", || async {
        (!receiver.accepted().is_empty()).then_some(())
    })
    .await;
    stack
        .drained_of(&[
            METADATA_CONSUMER,
            WEBHOOK_FAN_OUT_CONSUMER,
            WEBHOOK_DELIVERY_CONSUMER,
        ])
        .await;
    let accepted = receiver.accepted();
    assert_eq!(
        accepted.len(),
        1,
        "announced twice, delivered once: {accepted:?}"
    );
    assert_eq!(accepted[0].header("Gcal-Webhook-Id"), event.id.to_string());
}

#[tokio::test]
async fn a_receiver_that_is_down_gets_each_event_later_exactly_once() {
    let stack = Stack::start(&[("WEBHOOK_MAX_DELIVER", "20")]).await;
    // 503 three times, then up.
    let receiver = Receiver::start(&[503, 503, 503], 200).await;
    let registered = stack.register(&receiver.url).await;
    let webhook_id = registered["id"].as_str().expect("id").to_owned();
    let secret = registered["secret"].as_str().expect("secret").to_owned();

    let first = succeeded("a@gmail.com");
    let second = succeeded("b@gmail.com");
    stack.publish(&first).await;
    stack.publish(&second).await;
    eventually("both events accepted", || async {
        (receiver.accepted().len() >= 2).then_some(())
    })
    .await;
    stack.drained().await;

    let received = receiver.received();
    assert_eq!(received.len(), 5, "3 refused + 2 accepted: {received:?}");
    let accepted = receiver.accepted();
    let mut ids: Vec<String> = accepted
        .iter()
        .map(|r| r.header("Gcal-Webhook-Id"))
        .collect();
    ids.sort();
    let mut expected = vec![first.id.to_string(), second.id.to_string()];
    expected.sort();
    assert_eq!(ids, expected, "exactly one accepted delivery per event id");
    for webhook in &received {
        webhook.verify(&secret).expect("every attempt is signed");
    }

    // The log, newest first: the refused attempts with their status, then the deliveries.
    let log = stack.deliveries(&webhook_id).await;
    assert_eq!(log.len(), 5, "{log:?}");
    let times: Vec<&str> = log
        .iter()
        .map(|d| d["attemptedAt"].as_str().expect("attemptedAt"))
        .collect();
    let mut sorted = times.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(times, sorted, "newest first");
    assert_eq!(
        log.iter().filter(|d| d["outcome"] == "retrying").count(),
        3,
        "{log:?}"
    );
    for attempt in log.iter().filter(|d| d["outcome"] == "retrying") {
        assert_eq!(attempt["statusCode"], 503, "{attempt}");
    }
    for event in [&first, &second] {
        let delivered: Vec<&Value> = log
            .iter()
            .filter(|d| d["eventId"] == event.id.to_string() && d["outcome"] == "delivered")
            .collect();
        assert_eq!(delivered.len(), 1, "{log:?}");
        assert_eq!(delivered[0]["statusCode"], 200);
        let tries = log
            .iter()
            .filter(|d| d["eventId"] == event.id.to_string())
            .count() as i64;
        assert_eq!(delivered[0]["attempt"], tries, "{log:?}");
    }
    let limited = stack
        .api
        .get(
            &format!(
                "{}/{webhook_id}/deliveries?limit=2",
                webhooks_path(SUBACCOUNT)
            ),
            Some(&token(SUBACCOUNT)),
        )
        .await;
    assert_eq!(limited.body["data"].as_array().map(Vec::len), Some(2));
    assert_eq!(limited.body["data"][0], log[0]);
    for bad in ["0", "101", "x"] {
        stack
            .api
            .get(
                &format!(
                    "{}/{webhook_id}/deliveries?limit={bad}",
                    webhooks_path(SUBACCOUNT)
                ),
                Some(&token(SUBACCOUNT)),
            )
            .await
            .assert_error(400, "invalid_field");
    }
}

#[tokio::test]
async fn a_410_disables_the_endpoint_and_nothing_more_is_sent() {
    let stack = Stack::start(&[]).await;
    let receiver = Receiver::start(&[], 410).await;
    let registered = stack.register(&receiver.url).await;
    let webhook_id = registered["id"].as_str().expect("id").to_owned();

    stack.publish(&succeeded("a@gmail.com")).await;
    let endpoint = eventually("the endpoint disabled", || async {
        stack
            .list()
            .await
            .into_iter()
            .find(|e| e["id"] == webhook_id && e["enabled"] == false)
    })
    .await;
    assert!(endpoint["disabledAt"].is_string(), "{endpoint}");
    assert!(
        endpoint["disabledReason"]
            .as_str()
            .is_some_and(|r| r.contains("410")),
        "{endpoint}"
    );
    stack.drained().await;
    let log = stack.deliveries(&webhook_id).await;
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0]["outcome"], "endpoint_disabled");
    assert_eq!(log[0]["statusCode"], 410);

    stack.publish(&succeeded("b@gmail.com")).await;
    stack.drained().await;
    assert_eq!(
        receiver.received().len(),
        1,
        "a disabled endpoint gets nothing"
    );
}

/// A receiver that answers every POST with `307 Temporary Redirect` to `location`, and a
/// target that counts what reaches it: a webhook must never be redirected inside the network
/// (the registration check saw only the first URL).
#[tokio::test]
async fn a_receiver_redirecting_inside_the_network_is_not_followed() {
    let stack = Stack::start(&[("WEBHOOK_MAX_DELIVER", "2")]).await;
    let internal = Receiver::start(&[], 200).await;
    let location = internal.url.clone();
    let app = axum::Router::new().route(
        "/hooks/calendar",
        axum::routing::post(move || {
            let location = location.clone();
            async move {
                (
                    StatusCode::TEMPORARY_REDIRECT,
                    [(axum::http::header::LOCATION, location)],
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let redirecting = format!(
        "http://{}/hooks/calendar",
        listener.local_addr().expect("addr")
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let registered = stack.register(&redirecting).await;
    let webhook_id = registered["id"].as_str().expect("id").to_owned();

    stack.publish(&succeeded("a@gmail.com")).await;
    // A followed redirect would be part of the logged attempt: once the attempt is in the
    // log, the internal target would have been reached.
    let log = eventually("the attempt logged", || async {
        let log = stack.deliveries(&webhook_id).await;
        (!log.is_empty()).then_some(log)
    })
    .await;
    assert_eq!(log[0]["statusCode"], 307, "{log:?}");
    assert_ne!(log[0]["outcome"], "delivered", "{log:?}");
    assert!(
        internal.received().is_empty(),
        "the redirect was followed: {:?}",
        internal.received()
    );
}

#[tokio::test]
async fn targets_on_internal_addresses_are_refused_with_a_clear_400() {
    // The production defaults: https only, no private targets.
    let api = Api::start(&[("WEBHOOK_MAX_ENDPOINTS", "2")]).await;
    let path = webhooks_path(SUBACCOUNT);
    let tok = token(SUBACCOUNT);
    for (url, reason) in [
        ("http://127.0.0.1:8080/hook", "not_https"),
        ("https://127.0.0.1:8080/hook", "private_address"),
        ("https://10.0.0.5/", "private_address"),
        (
            "https://169.254.169.254/latest/meta-data",
            "private_address",
        ),
        ("https://localhost/", "private_address"),
        ("https://[::1]/", "private_address"),
        ("https://[::ffff:192.168.0.1]/", "private_address"),
        ("https://0x7f000001/", "private_address"),
        ("http://example.com/hook", "not_https"),
        ("https://user:pass@example.com/", "credentials_in_url"),
        ("ftp://example.com/", "unsupported_scheme"),
        ("not a url", "malformed"),
        ("https://no-such-host.invalid/", "unresolvable"),
    ] {
        let reply = api.post(&path, Some(&tok), &json!({ "url": url })).await;
        reply.assert_error(400, "invalid_webhook_url");
        assert_eq!(
            reply.body["error"]["details"]["reason"], reason,
            "{url}: {}",
            reply.body
        );
        assert_eq!(reply.body["error"]["details"]["field"], "url");
        assert!(
            reply.message().starts_with("Invalid webhook URL: "),
            "{}",
            reply.message()
        );
    }
    // The message says why.
    let reply = api
        .post(&path, Some(&tok), &json!({ "url": "https://10.0.0.5/" }))
        .await;
    assert!(reply.message().contains("private"), "{}", reply.message());
    let reply = api
        .post(&path, Some(&tok), &json!({ "url": "http://example.com/" }))
        .await;
    assert!(reply.message().contains("https"), "{}", reply.message());

    // Other bad input.
    api.post(
        &path,
        Some(&tok),
        &json!({ "url": "https://8.8.8.8/", "events": ["connection-exploded"] }),
    )
    .await
    .assert_error(400, "invalid_field");
    api.post(
        &path,
        Some(&tok),
        &json!({ "url": "https://8.8.8.8/", "events": [] }),
    )
    .await
    .assert_error(400, "invalid_field");
    api.post(&path, Some(&tok), &json!({ "events": [] }))
        .await
        .assert_error(400, "missing_field");
    api.post(&path, None, &json!({ "url": "https://8.8.8.8/" }))
        .await
        .assert_error(401, "missing_token");
    api.post(
        &webhooks_path(api_support::OTHER_SUBACCOUNT),
        Some(&tok),
        &json!({ "url": "https://8.8.8.8/" }),
    )
    .await
    .assert_error(403, "subaccount_forbidden");

    // Nothing was stored.
    let listed = api.get(&path, Some(&tok)).await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    assert_eq!(listed.body["data"], json!([]));
    assert_eq!(
        api.tenant_db(SUBACCOUNT)
            .await
            .collection::<bson::Document>("webhookendpoints")
            .count_documents(bson::doc! {})
            .await
            .expect("count"),
        0
    );

    // A public IP literal is accepted (no DNS needed), up to the cap.
    for _ in 0..2 {
        let ok = api
            .post(
                &path,
                Some(&tok),
                &json!({ "url": "https://8.8.8.8/hook", "events": ["connection-failed"] }),
            )
            .await;
        assert_eq!(ok.status, 201, "{}", ok.body);
        assert_eq!(ok.body["data"]["events"], json!(["connection-failed"]));
    }
    api.post(&path, Some(&tok), &json!({ "url": "https://8.8.8.8/hook" }))
        .await
        .assert_error(409, "webhook_limit_reached");
    api.get(&format!("{path}/nope/deliveries"), Some(&tok))
        .await
        .assert_error(404, "webhook_not_found");
}

#[tokio::test]
async fn exhausted_retries_park_the_webhook_and_gcal_ops_replays_it() {
    let stack = Stack::start(&[("WEBHOOK_MAX_DELIVER", "2")]).await;
    let receiver = Receiver::start(&[], 503).await;
    let registered = stack.register(&receiver.url).await;
    let webhook_id = registered["id"].as_str().expect("id").to_owned();
    let secret = registered["secret"].as_str().expect("secret").to_owned();
    let event = succeeded("a@gmail.com");
    stack.publish(&event).await;

    // Two refused attempts, then a dead letter from the delivery consumer.
    let ctx = stack.ctx().clone();
    let ns: Namespace = stack.api.namespace.clone();
    let js = jetstream::new(ctx.nats().await);
    let letter = eventually("a webhook dead letter", || async {
        dead_letters(&js, &ns)
            .await
            .into_iter()
            .find(|(consumer, _)| consumer == WEBHOOK_DELIVERY_CONSUMER)
    })
    .await;
    assert!(
        letter.1.contains("503"),
        "last error names the status: {}",
        letter.1
    );
    assert_eq!(receiver.received().len(), 2);
    let log = stack.deliveries(&webhook_id).await;
    assert_eq!(
        log.iter()
            .map(|d| d["outcome"].as_str().unwrap_or_default())
            .collect::<Vec<_>>(),
        ["failed", "retrying"],
        "{log:?}"
    );

    // The receiver is fixed; the operator replays the dead letter.
    receiver.answer_from_now_on(200);
    let out = replay_webhook_dead_letters(&ctx).await;
    assert!(out.contains("replayed"), "{out}");

    let accepted = eventually("the replayed webhook accepted", || async {
        let accepted = receiver.accepted();
        (!accepted.is_empty()).then_some(accepted)
    })
    .await;
    stack.drained().await;
    assert_eq!(receiver.accepted().len(), 1);
    assert_eq!(accepted[0].header("Gcal-Webhook-Id"), event.id.to_string());
    accepted[0].verify(&secret).expect("signed");
    assert!(
        dead_letters(&js, &ns)
            .await
            .iter()
            .all(|(consumer, _)| consumer != WEBHOOK_DELIVERY_CONSUMER),
        "the replayed dead letter is gone"
    );
    let log = stack.deliveries(&webhook_id).await;
    assert_eq!(log[0]["outcome"], "delivered", "{log:?}");
    assert_eq!(log[0]["statusCode"], 200);
}

/// `(consumer, last error)` of every dead letter in the namespace.
async fn dead_letters(js: &jetstream::Context, ns: &Namespace) -> Vec<(String, String)> {
    stream::messages(js, &ns.dead_letter_stream(), None)
        .await
        .unwrap_or_default()
        .iter()
        .map(|message| {
            (
                stream::header(message, headers::DEAD_LETTER_CONSUMER),
                stream::header(message, headers::DEAD_LETTER_LAST_ERROR),
            )
        })
        .collect()
}

#[tokio::test]
async fn concurrent_registrations_never_exceed_the_cap() {
    let api = Api::start(&[
        ("WEBHOOK_MAX_ENDPOINTS", "5"),
        ("RATE_LIMIT_WEBHOOK_MANAGEMENT_PER_CALLER", "1000/1m"),
    ])
    .await;
    let path = webhooks_path(SUBACCOUNT);
    let tok = token(SUBACCOUNT);
    let register = |i: usize| {
        let body = json!({ "url": format!("https://8.8.8.8/hook/{i}") });
        let (api, path, tok) = (&api, &path, &tok);
        async move { api.post(path, Some(tok), &body).await }
    };
    // Fifty at once, far more than the places.
    let replies = futures::future::join_all((0..50).map(register)).await;
    let created = replies.iter().filter(|r| r.status == 201).count();
    for refused in replies.iter().filter(|r| r.status != 201) {
        refused.assert_error(409, "webhook_limit_reached");
    }
    assert_eq!(created, 5, "exactly the cap is registered");
    let endpoints = api
        .tenant_db(SUBACCOUNT)
        .await
        .collection::<bson::Document>("webhookendpoints");
    assert_eq!(
        endpoints
            .count_documents(bson::doc! {})
            .await
            .expect("count"),
        5
    );

    // Deleting one makes room for exactly one.
    let id = replies
        .iter()
        .find(|r| r.status == 201)
        .and_then(|r| r.body["data"]["id"].as_str())
        .expect("an id")
        .to_owned();
    let deleted = api
        .send(
            reqwest::Method::DELETE,
            &format!("{path}/{id}"),
            Some(&tok),
            None,
        )
        .await;
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    let again = futures::future::join_all((50..54).map(register)).await;
    assert_eq!(again.iter().filter(|r| r.status == 201).count(), 1);

    // Endpoints stored before places existed still count, and get a place at the next
    // registration there is room for.
    let mut legacy: Vec<bson::Document> = Vec::new();
    let mut cursor = endpoints.find(bson::doc! {}).await.expect("find");
    while let Some(mut doc) = futures::TryStreamExt::try_next(&mut cursor)
        .await
        .expect("read")
    {
        doc.remove("slot");
        legacy.push(doc);
    }
    endpoints.delete_many(bson::doc! {}).await.expect("delete");
    endpoints
        .insert_many(legacy)
        .await
        .expect("legacy endpoints");
    register(99)
        .await
        .assert_error(409, "webhook_limit_reached");
    let unplaced = endpoints
        .find_one(bson::doc! {})
        .await
        .expect("find")
        .expect("one");
    let id = unplaced.get_str("_id").expect("id");
    let deleted = api
        .send(
            reqwest::Method::DELETE,
            &format!("{path}/{id}"),
            Some(&tok),
            None,
        )
        .await;
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    let again = futures::future::join_all((100..104).map(register)).await;
    assert_eq!(
        again.iter().filter(|r| r.status == 201).count(),
        1,
        "{:?}",
        again
            .iter()
            .map(|r| (r.status, r.body.clone()))
            .collect::<Vec<_>>()
    );
    let mut slots: Vec<i32> = Vec::new();
    let mut cursor = endpoints.find(bson::doc! {}).await.expect("find");
    while let Some(doc) = futures::TryStreamExt::try_next(&mut cursor)
        .await
        .expect("read")
    {
        slots.push(doc.get_i32("slot").expect("placed"));
    }
    slots.sort_unstable();
    assert_eq!(slots, [0, 1, 2, 3, 4]);
}

/// Dead letters of the webhook-delivery consumer (all of them, not only the first 100).
async fn parked_deliveries(js: &jetstream::Context, ns: &Namespace) -> usize {
    use futures::TryStreamExt as _;
    js.get_stream(ns.dead_letter_stream())
        .await
        .expect("the dead-letter stream")
        .info_with_subjects(ns.dead_letter(WEBHOOK_DELIVERY_CONSUMER))
        .await
        .expect("dead-letter subjects")
        .try_fold(0, |sum, (_, count)| async move { Ok(sum + count) })
        .await
        .expect("dead-letter counts")
}

/// `(members, PTTL in ms)` of `subaccount`'s set of webhook deliveries awaiting a retry.
async fn awaiting_retry(ctx: &TestContext, subaccount: &str) -> (Vec<String>, i64) {
    let client = ctx.redis_client();
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let key = service_kit::redis::RedisKeys::new(ctx.id.clone())
        .webhook_retrying(&SubaccountId::parse(subaccount).expect("id"));
    let members: Vec<String> = redis::cmd("ZRANGE")
        .arg(&key)
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .expect("ZRANGE");
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .expect("PTTL");
    (members, ttl)
}

/// What the pending limit is with [`CAPPED`]: `max(256, 8 × 4) + 4 × 4`.
const PENDING_LIMIT: usize = 272;

/// A small delivery consumer (its `max_ack_pending` is [`PENDING_LIMIT`]) whose tenants may
/// each have 3 deliveries awaiting a retry, two minutes away (the test is over by then).
const CAPPED: [(&str, &str); 5] = [
    ("WEBHOOK_MAX_RETRYING_PER_TENANT", "3"),
    ("WEBHOOK_RETRY_DELAYS", "2m"),
    ("WEBHOOK_CONCURRENCY", "4"),
    ("WEBHOOK_PER_TENANT_CONCURRENCY", "2"),
    ("WEBHOOK_BUFFER", "4"),
];

/// Tenant A registers 10 endpoints (the cap) on a receiver that answers 500 and produces more
/// failing deliveries than the consumer's whole pending limit. Its first 3 wait for their
/// retry; every further one is parked at once with the reason. Tenant B's webhook is then
/// delivered within seconds — without the cap, A's NAKed deliveries would hold every pending
/// slot and JetStream would hand B's out only after A's retries ran out. Once A's receiver
/// works, replaying the parked ones with `gcal-ops` delivers them.
#[tokio::test]
async fn a_tenant_past_its_retry_cap_is_parked_and_other_tenants_webhooks_still_flow() {
    let stack = Stack::start(&CAPPED).await;
    stack
        .api
        .seed_google_calendar(api_support::OTHER_SUBACCOUNT)
        .await;
    let failing = Receiver::start(&[], 500).await;
    let healthy = Receiver::start(&[], 200).await;
    let mut a_endpoints = Vec::new();
    for _ in 0..10 {
        let registered = stack.register_for(SUBACCOUNT, &failing.url).await;
        a_endpoints.push(registered["id"].as_str().expect("id").to_owned());
    }
    stack
        .register_for(api_support::OTHER_SUBACCOUNT, &healthy.url)
        .await;

    // 28 connection events × 10 endpoints: more failing deliveries than the pending limit.
    let events = 28;
    let deliveries = events * 10;
    assert!(deliveries > PENDING_LIMIT);
    for n in 0..events {
        stack.publish(&succeeded(&format!("a{n}@gmail.com"))).await;
    }
    let ctx = stack.ctx().clone();
    let ns: Namespace = stack.api.namespace.clone();
    let js = jetstream::new(ctx.nats().await);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let parked = parked_deliveries(&js, &ns).await;
        if parked >= deliveries - 3 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {parked} of tenant A's failing deliveries parked, {} requests received",
            failing.received().len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // 3 wait for their retry, the rest are parked. Once the cap is full, new ones are parked
    // without a POST: only those already in flight then (at most WEBHOOK_CONCURRENCY) were
    // sent besides the 3.
    let posted = failing.received().len();
    assert!((3..=3 + 4).contains(&posted), "{posted} POSTs");
    assert_eq!(parked_deliveries(&js, &ns).await, deliveries - 3);
    let (members, ttl) = awaiting_retry(&ctx, SUBACCOUNT).await;
    assert_eq!(members.len(), 3, "{members:?}");
    // Expires with its latest member: at most 2 min + 20 % + ack_wait (2 s + 30 s).
    assert!((1..=176_000).contains(&ttl), "PTTL {ttl}");
    let reason = "tenant has 3 webhook deliveries awaiting retry; parked to keep other tenants' \
                  deliveries flowing (replay with gcal-ops dlq replay --consumer webhook-delivery)";
    let letters = dead_letters(&js, &ns).await;
    assert!(!letters.is_empty());
    let mut not_attempted = 0;
    for (consumer, last_error) in &letters {
        assert_eq!(consumer, WEBHOOK_DELIVERY_CONSUMER);
        assert!(
            (last_error.contains("the receiver answered HTTP 500")
                || last_error.contains("not delivered: not attempted"))
                && last_error.contains(reason),
            "{last_error}"
        );
        not_attempted += usize::from(last_error.contains("not attempted"));
    }
    assert!(
        not_attempted > 0,
        "parked without a POST once the cap was full"
    );
    // The tenant's log says why a parked one was not retried.
    let log = stack.deliveries(&a_endpoints[0]).await;
    assert!(
        log.iter().any(|d| d["outcome"] == "failed"
            && d["error"]
                .as_str()
                .is_some_and(|e| e.contains("already await a retry"))),
        "{log:?}"
    );

    // Tenant B is not held up by A's failures.
    let started = tokio::time::Instant::now();
    let b_event = succeeded_for(api_support::OTHER_SUBACCOUNT, "b@gmail.com");
    stack.publish(&b_event).await;
    loop {
        if !healthy.accepted().is_empty() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "tenant B's webhook not delivered within 5 s while tenant A is failing"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        healthy.accepted()[0].header("Gcal-Webhook-Id"),
        b_event.id.to_string()
    );

    // A's receiver is fixed; the operator replays the parked deliveries.
    failing.answer_from_now_on(200);
    replay_webhook_dead_letters(&ctx).await;
    let accepted = eventually("the replayed webhooks accepted", || async {
        let accepted = failing.accepted();
        (accepted.len() >= deliveries - 3).then_some(accepted)
    })
    .await;
    let mut per_event = std::collections::HashMap::<String, usize>::new();
    for webhook in &accepted {
        *per_event
            .entry(webhook.header("Gcal-Webhook-Id"))
            .or_default() += 1;
    }
    assert_eq!(per_event.len(), events, "every event reached the receiver");
    assert!(per_event.values().all(|n| *n <= 10), "{per_event:?}");
    assert_eq!(
        parked_deliveries(&js, &ns).await,
        0,
        "every dead letter replayed"
    );
}

/// A delivery that fails counts against its tenant's cap while it waits for the retry, and
/// leaves it once the retry succeeds: the set empties and its key is gone.
#[tokio::test]
async fn a_delivery_that_succeeds_on_retry_leaves_its_tenants_retry_count() {
    let stack = Stack::start(&[
        ("WEBHOOK_MAX_RETRYING_PER_TENANT", "3"),
        ("WEBHOOK_RETRY_DELAYS", "3s"),
    ])
    .await;
    let receiver = Receiver::start(&[500, 500], 200).await;
    stack.register(&receiver.url).await;
    let first = succeeded("a@gmail.com");
    let second = succeeded("b@gmail.com");
    stack.publish(&first).await;
    stack.publish(&second).await;

    let ctx = stack.ctx().clone();
    // Both failed and wait (at least 2.4 s) for their retry.
    eventually("two deliveries awaiting a retry", || async {
        let (members, ttl) = awaiting_retry(&ctx, SUBACCOUNT).await;
        (members.len() == 2 && ttl > 0).then_some(())
    })
    .await;
    assert!(receiver.accepted().is_empty());

    eventually("both delivered on retry", || async {
        (receiver.accepted().len() == 2).then_some(())
    })
    .await;
    eventually("the tenant's retry count emptied", || async {
        let (members, ttl) = awaiting_retry(&ctx, SUBACCOUNT).await;
        (members.is_empty() && ttl == -2).then_some(())
    })
    .await;
    stack.drained().await;
    assert_eq!(receiver.received().len(), 4);
}

/// With Redis down the cap cannot be counted: failing deliveries are retried as before (none
/// parked), even past a cap of 1, and arrive once the receiver is back.
#[tokio::test]
async fn while_redis_is_down_failing_deliveries_are_retried_not_parked() {
    let mut redis = e2e::servers::RedisServer::start();
    let mut ctx = TestContext::new();
    ctx.redis_url = redis.url();
    let stack = Stack::start_in(
        ctx,
        &[
            ("WEBHOOK_MAX_RETRYING_PER_TENANT", "1"),
            ("WEBHOOK_RETRY_DELAYS", "500ms"),
        ],
    )
    .await;
    let receiver = Receiver::start(&[500, 500, 500], 200).await;
    stack.register(&receiver.url).await;
    redis.stop();

    let events: Vec<_> = (0..3)
        .map(|n| succeeded(&format!("u{n}@gmail.com")))
        .collect();
    for event in &events {
        stack.publish(event).await;
    }
    eventually("all three delivered after a retry", || async {
        (receiver.accepted().len() == 3).then_some(())
    })
    .await;
    stack.drained().await;
    assert_eq!(receiver.received().len(), 6, "3 refused, 3 accepted");
    let js = jetstream::new(stack.ctx().nats().await);
    assert_eq!(parked_deliveries(&js, &stack.api.namespace).await, 0);
}

/// `gcal-ops dlq replay --all --consumer webhook-delivery`, as an operator runs it; its output.
async fn replay_webhook_dead_letters(ctx: &TestContext) -> String {
    let argv = [
        "gcal-ops",
        "--nats-url",
        &ctx.nats_url,
        "--namespace",
        &ctx.id,
        "dlq",
        "replay",
        "--all",
        "--consumer",
        WEBHOOK_DELIVERY_CONSUMER,
    ];
    let cli = ops::Cli::try_parse_from(argv).expect("command line");
    let mut out = Vec::new();
    ops::run_with_env(
        cli,
        Env::from_pairs(ctx.operator_env(schemas::bus_access::Identity::Operator)),
        &mut out,
    )
    .await
    .unwrap_or_else(|e| panic!("replay failed: {e:#}\n{}", String::from_utf8_lossy(&out)));
    String::from_utf8_lossy(&out).into_owned()
}

/// An endpoint document as the api stores it, for the registry tests that change the
/// endpoints behind the api's back.
fn endpoint_document(subaccount: &SubaccountId, url: &str) -> WebhookEndpoint {
    let now = bson::DateTime::now();
    WebhookEndpoint {
        id: uuid::Uuid::now_v7().to_string(),
        subaccount_id: subaccount.to_string(),
        url: url.into(),
        events: vec!["connection-succeeded".into()],
        description: None,
        enabled: true,
        created_at: now,
        updated_at: now,
        disabled_at: None,
        disabled_reason: None,
        // Never opened: the registry does not decrypt secrets.
        secret: EncryptedToken {
            key_id: "unused".into(),
            nonce: bson::Binary {
                subtype: bson::spec::BinarySubtype::Generic,
                bytes: vec![0; 12],
            },
            ciphertext: bson::Binary {
                subtype: bson::spec::BinarySubtype::Generic,
                bytes: vec![0; 16],
            },
        },
        slot: None,
    }
}

#[tokio::test]
async fn the_endpoint_registry_rereads_mongodb_only_after_a_change_mark_or_without_redis() {
    let mut redis = e2e::servers::RedisServer::start();
    let mut ctx = TestContext::new();
    ctx.redis_url = redis.url();
    let infra =
        Infrastructure::connect(&ctx.common(&[]), "registry-test", &CancellationToken::new())
            .await
            .expect("connect");
    let tenant = subaccount();
    let endpoints = infra
        .mongo
        .connection_for(&tenant)
        .await
        .expect("tenant db")
        .collection::<WebhookEndpoint>(ENDPOINTS_COLLECTION);
    let registry = EndpointRegistry::default();
    let lookup = || registry.subscribed(&infra, &tenant, "connection-succeeded");
    let urls = |found: &[WebhookEndpoint]| -> Vec<String> {
        let mut urls: Vec<String> = found.iter().map(|e| e.url.clone()).collect();
        urls.sort();
        urls
    };

    endpoints
        .insert_one(endpoint_document(&tenant, "https://a.example/hook"))
        .await
        .expect("insert a");
    let (found, source) = lookup().await.expect("lookup");
    assert_eq!(
        (urls(&found), source),
        (vec!["https://a.example/hook".to_owned()], Source::Loaded)
    );
    let (found, source) = lookup().await.expect("lookup");
    assert_eq!(source, Source::Registry, "held: MongoDB is not read again");
    assert_eq!(found.len(), 1);

    // A change without its mark is not seen (the bound is ENDPOINT_REGISTRY_TTL) ...
    endpoints
        .insert_one(endpoint_document(&tenant, "https://b.example/hook"))
        .await
        .expect("insert b");
    let (found, source) = lookup().await.expect("lookup");
    assert_eq!((found.len(), source), (1, Source::Registry));
    // ... and with it, by the next lookup.
    endpoints_changed(&infra.redis, &infra.keys, &tenant).await;
    let (found, source) = lookup().await.expect("lookup");
    assert_eq!(
        (urls(&found), source),
        (
            vec![
                "https://a.example/hook".to_owned(),
                "https://b.example/hook".to_owned()
            ],
            Source::Loaded
        )
    );
    // Another subaccount's change leaves this one's entry alone.
    endpoints_changed(
        &infra.redis,
        &infra.keys,
        &SubaccountId::parse(api_support::OTHER_SUBACCOUNT).expect("id"),
    )
    .await;
    assert_eq!(lookup().await.expect("lookup").1, Source::Registry);

    // Without Redis the mark cannot be compared: every lookup reads MongoDB.
    endpoints
        .insert_one(endpoint_document(&tenant, "https://c.example/hook"))
        .await
        .expect("insert c");
    redis.stop();
    let (found, source) = lookup().await.expect("lookup");
    assert_eq!((found.len(), source), (3, Source::Unmarked));
}

#[tokio::test]
async fn an_endpoint_registered_between_two_events_gets_the_second() {
    let stack = Stack::start(&[]).await;
    let first = Receiver::start(&[], 200).await;
    let second = Receiver::start(&[], 200).await;
    stack.register(&first.url).await;
    stack.publish(&succeeded("a@gmail.com")).await;
    wait_for_requests(&first, 1).await;

    // The registry holds the endpoints as they were; the registration's answer comes after
    // its change mark, so the very next event sees the new endpoint.
    stack.register(&second.url).await;
    stack.publish(&succeeded("b@gmail.com")).await;
    wait_for_requests(&second, 1).await;
    wait_for_requests(&first, 2).await;
    assert_eq!(
        second.received()[0].json()["data"]["googleEmail"],
        "b@gmail.com"
    );

    // A deleted endpoint gets nothing more.
    let webhook_id = stack
        .list()
        .await
        .into_iter()
        .find(|e| e["url"] == first.url.as_str())
        .expect("first")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let reply = stack
        .api
        .send(
            reqwest::Method::DELETE,
            &format!("{}/{webhook_id}", webhooks_path(SUBACCOUNT)),
            Some(&token(SUBACCOUNT)),
            None,
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    stack.publish(&succeeded("c@gmail.com")).await;
    wait_for_requests(&second, 2).await;
    stack.drained().await;
    assert_eq!(
        first.received().len(),
        2,
        "the deleted endpoint got the third event"
    );
}

#[tokio::test]
async fn with_redis_down_the_fan_out_reads_the_endpoints_from_mongodb() {
    let mut redis = e2e::servers::RedisServer::start();
    let mut ctx = TestContext::new();
    ctx.redis_url = redis.url();
    let stack = Stack::start_in(ctx, &[]).await;
    let first = Receiver::start(&[], 200).await;
    let second = Receiver::start(&[], 200).await;
    stack.register(&first.url).await;
    stack.publish(&succeeded("a@gmail.com")).await;
    wait_for_requests(&first, 1).await;
    // Registered while the worker holds only the first endpoint; then the mark is out of reach.
    stack.register(&second.url).await;
    redis.stop();

    stack.publish(&succeeded("b@gmail.com")).await;
    wait_for_requests(&second, 1).await;
    wait_for_requests(&first, 2).await;
}
