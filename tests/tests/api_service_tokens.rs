//! Service tokens and the deprecated `POST /api/connectors/{subaccountId}/metadata/update`, on
//! real NATS (JetStream), MongoDB and Redis. The auth server is a small axum server inside the
//! test that counts its hits and can be told to fail, to hang, or be stopped.

mod api_support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use api_support::*;
use async_nats::jetstream;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use redis::AsyncCommands;
use schemas::events::ConnectionReported;
use schemas::subjects::headers;
use schemas::{Envelope, Event};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

const WRITE: &str = "connectors:metadata:write";
/// The instant the endpoint is deprecated since (RFC 9745 `Deprecation: @<unix time>`).
const DEPRECATION: &str = "@1795910400";

// ---------------------------------------------------------------------------------------------
// The auth server

#[derive(Debug, Clone, Copy, PartialEq)]
enum AuthMode {
    /// Answers by its token table: `{"valid": true, ...}`, or `{"valid": false}`; tokens that
    /// start with `reject-` get a bare 401.
    Answer,
    /// 500 for everything.
    Fail,
    /// Answers, but only after this long.
    Slow(Duration),
}

#[derive(Debug, Clone)]
struct AuthState {
    tokens: Arc<HashMap<String, (String, Vec<String>)>>,
    mode: Arc<Mutex<AuthMode>>,
    hits: Arc<AtomicUsize>,
    /// Calls being answered now, and the most there ever were at once.
    in_flight: Arc<AtomicUsize>,
    most_in_flight: Arc<AtomicUsize>,
    bodies: Arc<Mutex<Vec<Value>>>,
}

#[derive(Debug)]
struct AuthServer {
    url: String,
    state: AuthState,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl AuthServer {
    /// `tokens`: (token, service, permissions).
    async fn start(tokens: &[(&str, &str, &[&str])]) -> Self {
        let state = AuthState {
            tokens: Arc::new(
                tokens
                    .iter()
                    .map(|(token, service, permissions)| {
                        (
                            (*token).to_owned(),
                            (
                                (*service).to_owned(),
                                permissions.iter().map(|p| (*p).to_owned()).collect(),
                            ),
                        )
                    })
                    .collect(),
            ),
            mode: Arc::new(Mutex::new(AuthMode::Answer)),
            hits: Arc::new(AtomicUsize::new(0)),
            in_flight: Arc::new(AtomicUsize::new(0)),
            most_in_flight: Arc::new(AtomicUsize::new(0)),
            bodies: Arc::new(Mutex::new(Vec::new())),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind auth server");
        let url = format!(
            "http://{}/v1/service-tokens/validate",
            listener.local_addr().expect("addr")
        );
        let router = axum::Router::new()
            .route("/v1/service-tokens/validate", axum::routing::post(validate))
            .with_state(state.clone());
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let task = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
                .expect("auth server");
        });
        Self {
            url,
            state,
            shutdown,
            task,
        }
    }

    fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }

    fn most_in_flight(&self) -> usize {
        self.state.most_in_flight.load(Ordering::SeqCst)
    }

    fn set_mode(&self, mode: AuthMode) {
        *self.state.mode.lock().expect("mode") = mode;
    }

    fn bodies(&self) -> Vec<Value> {
        self.state.bodies.lock().expect("bodies").clone()
    }

    /// Stops listening: the port refuses connections from now on.
    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.expect("auth server stopped");
    }
}

/// Counts a call in flight while it lives.
struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn validate(State(state): State<AuthState>, body: axum::body::Bytes) -> Response {
    state.hits.fetch_add(1, Ordering::SeqCst);
    let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    state.most_in_flight.fetch_max(now, Ordering::SeqCst);
    let _in_flight = InFlight(state.in_flight.clone());
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    state.bodies.lock().expect("bodies").push(body.clone());
    let mode = *state.mode.lock().expect("mode");
    match mode {
        AuthMode::Fail => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({"error": "boom"})),
            )
                .into_response();
        }
        AuthMode::Slow(delay) => tokio::time::sleep(delay).await,
        AuthMode::Answer => {}
    }
    let token = body["token"].as_str().unwrap_or_default();
    if token.starts_with("reject-") {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    match state.tokens.get(token) {
        Some((service, permissions)) => Json(json!({
            "valid": true, "service": service, "permissions": permissions,
            "issuedBy": "test auth server",
        }))
        .into_response(),
        None => Json(json!({ "valid": false })).into_response(),
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn path(subaccount: &str) -> String {
    format!("/api/connectors/{subaccount}/metadata/update")
}

fn metadata() -> Value {
    json!({
        "metadata": {
            "calendarId": "507f1f77bcf86cd799439011",
            "userEmail": "user@example.com",
            "googleEmail": "googleuser@gmail.com",
            "connectedAt": "2025-10-05T12:00:00.000Z",
            "isConnected": true
        }
    })
}

fn sha256_hex(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// POSTs `body` (JSON) with the given extra headers.
async fn update(api: &Api, subaccount: &str, headers: &[(&str, &str)], body: &Value) -> Reply {
    send(
        api,
        subaccount,
        headers,
        "application/json",
        body.to_string(),
    )
    .await
}

async fn send(
    api: &Api,
    subaccount: &str,
    headers: &[(&str, &str)],
    content_type: &str,
    body: String,
) -> Reply {
    let mut request = api
        .request(reqwest::Method::POST, &path(subaccount))
        .header("content-type", content_type)
        .body(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    api_support::reply(request).await
}

fn header<'a>(reply: &'a Reply, name: &str) -> Option<&'a str> {
    reply.headers.get(name).and_then(|v| v.to_str().ok())
}

/// The api configured with this auth server.
async fn api_with(auth: &AuthServer, extra: &[(&str, &str)]) -> Api {
    let mut settings = vec![("SERVICE_AUTH_URL", auth.url.as_str())];
    settings.extend_from_slice(extra);
    Api::start(&settings).await
}

/// What the workers do at start-up: provision the event streams.
async fn provision_streams(api: &Api) {
    let nats = api.ctx.nats().await;
    let js = jetstream::new(nats);
    service_kit::nats::ensure_streams(&js, &api.namespace, &api.ctx.common(&[]).streams)
        .await
        .expect("streams");
}

/// Everything on the domain stream of this test (none when it does not exist).
async fn published(api: &Api) -> Vec<jetstream::Message> {
    let nats = api.ctx.nats().await;
    let js = jetstream::new(nats);
    e2e::stream::messages(&js, &api.namespace.events_stream(), None)
        .await
        .unwrap_or_default()
}

async fn redis(api: &Api) -> redis::aio::MultiplexedConnection {
    api.ctx
        .redis_client()
        .get_multiplexed_async_connection()
        .await
        .expect("redis connection")
}

/// Every Redis key of this test, with its value when it is a string.
async fn redis_entries(api: &Api) -> Vec<(String, Option<String>)> {
    let mut conn = redis(api).await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:*", api.ctx.id))
        .query_async(&mut conn)
        .await
        .expect("keys");
    let mut entries = Vec::new();
    for key in keys {
        let value: Option<String> = conn.get(&key).await.unwrap_or(None);
        entries.push((key, value));
    }
    entries
}

fn service_token_key(api: &Api, token: &str) -> String {
    format!("{}:auth:service-token:{}", api.ctx.id, sha256_hex(token))
}

// ---------------------------------------------------------------------------------------------
// The endpoint

#[tokio::test]
async fn a_valid_token_publishes_connection_reported_and_answers_202_deprecated() {
    let auth = AuthServer::start(&[("db-token", "database-server", &[WRITE])]).await;
    let api = api_with(&auth, &[]).await;
    api.seed_google_calendar(SUBACCOUNT).await;
    provision_streams(&api).await;

    let reply = update(
        &api,
        SUBACCOUNT,
        &[("x-service-token", "db-token")],
        &metadata(),
    )
    .await;

    assert_eq!(reply.status, 202, "{}", reply.body);
    let event_id = reply.body["data"]["eventId"]
        .as_str()
        .expect("eventId")
        .to_owned();
    assert_eq!(
        reply.body,
        json!({
            "success": true,
            "message": "Metadata update accepted",
            "data": { "eventId": event_id }
        })
    );
    assert_eq!(header(&reply, "deprecation"), Some(DEPRECATION));
    assert_eq!(
        header(&reply, "link"),
        Some(
            format!(
                "</api/connectors/{SUBACCOUNT}/handlegooglecalendar>; rel=\"successor-version\""
            )
            .as_str()
        )
    );
    let correlation = header(&reply, "x-correlation-id").expect("X-Correlation-Id");

    // The auth server was asked with the documented request.
    assert_eq!(auth.bodies(), [json!({ "token": "db-token" })]);

    // The event is on JetStream: the callback's facts, under the api's own event type.
    let messages = published(&api).await;
    assert_eq!(messages.len(), 1);
    let message = &messages[0];
    assert_eq!(
        message.subject.as_str(),
        format!("{}.events.connection.reported.{SUBACCOUNT}", api.ctx.id)
    );
    let event: Envelope<ConnectionReported> =
        Envelope::decode(&message.payload).expect("a connection-reported envelope");
    assert_eq!(event.id.to_string(), event_id);
    assert_eq!(event.subaccount_id.as_str(), SUBACCOUNT);
    assert_eq!(event.correlation_id.to_string(), correlation);
    assert_eq!(
        event.payload,
        ConnectionReported {
            calendar_id: "507f1f77bcf86cd799439011".into(),
            user_email: "user@example.com".into(),
            google_email: "googleuser@gmail.com".into(),
            connected_at: "2025-10-05T12:00:00.000Z".into(),
        }
    );
    let nats_headers = message.headers.clone().expect("headers");
    assert_eq!(
        nats_headers.get("Nats-Msg-Id").map(|v| v.as_str()),
        Some(event_id.as_str())
    );
    assert_eq!(
        nats_headers.get(headers::EVENT_TYPE).map(|v| v.as_str()),
        Some(ConnectionReported::TYPE)
    );

    // The api wrote nothing to MongoDB itself: that is the metadata-worker's job.
    let stored = api.stored_connectors(SUBACCOUNT).await;
    assert_eq!(stored.len(), 1);
    assert!(
        stored[0]
            .get_document("metadata")
            .expect("metadata")
            .is_empty(),
        "{stored:?}"
    );

    // The same report again, as a bearer token this time: the same event id, stored once.
    let again = update(
        &api,
        SUBACCOUNT,
        &[("authorization", "Bearer db-token")],
        &metadata(),
    )
    .await;
    assert_eq!(again.status, 202, "{}", again.body);
    assert_eq!(again.body["data"]["eventId"], event_id.as_str());
    assert_eq!(
        published(&api).await.len(),
        1,
        "a retried report is one event"
    );
}

#[tokio::test]
async fn verdicts_are_cached_in_redis_under_the_tokens_hash_never_the_token() {
    let auth = AuthServer::start(&[("db-token-cached", "database-server", &[WRITE])]).await;
    let api = api_with(&auth, &[]).await;
    api.seed_google_calendar(SUBACCOUNT).await;
    provision_streams(&api).await;

    for minute in 0..4 {
        let mut body = metadata();
        body["metadata"]["connectedAt"] = json!(format!("2025-10-05T12:0{minute}:00.000Z"));
        let reply = update(
            &api,
            SUBACCOUNT,
            &[("x-service-token", "db-token-cached")],
            &body,
        )
        .await;
        assert_eq!(reply.status, 202, "{}", reply.body);
    }
    assert_eq!(
        auth.hits(),
        1,
        "the auth server is asked once within the TTL"
    );
    assert_eq!(published(&api).await.len(), 4);

    let key = service_token_key(&api, "db-token-cached");
    let mut conn = redis(&api).await;
    let ttl_ms: i64 = conn.pttl(&key).await.expect("pttl");
    assert!(
        ttl_ms > 290_000 && ttl_ms <= 300_000,
        "SERVICE_TOKEN_CACHE_TTL defaults to 5m: {ttl_ms}"
    );
    let entries = redis_entries(&api).await;
    let cached = entries
        .iter()
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.clone())
        .expect("the verdict is cached under the hash");
    assert_eq!(
        serde_json::from_str::<Value>(&cached).expect("json"),
        json!({ "valid": true, "service": "database-server", "permissions": [WRITE] })
    );
    for (k, v) in &entries {
        assert!(!k.contains("db-token-cached"), "token in a key: {k}");
        assert!(
            !v.as_deref().unwrap_or_default().contains("db-token-cached"),
            "token in the value of {k}"
        );
    }
}

#[tokio::test]
async fn invalid_tokens_get_401_and_the_refusal_is_cached_briefly() {
    let auth = AuthServer::start(&[("db-token", "database-server", &[WRITE])]).await;
    let api = api_with(&auth, &[("SERVICE_TOKEN_NEGATIVE_CACHE_TTL", "1s")]).await;
    api.seed_google_calendar(SUBACCOUNT).await;
    provision_streams(&api).await;

    for _ in 0..3 {
        let reply = update(
            &api,
            SUBACCOUNT,
            &[("x-service-token", "forged")],
            &metadata(),
        )
        .await;
        reply.assert_error(401, "invalid_service_token");
        assert!(header(&reply, "www-authenticate").is_some());
        assert!(!reply.body.to_string().contains("forged"), "{}", reply.body);
    }
    assert_eq!(auth.hits(), 1, "the refusal is cached");
    let key = service_token_key(&api, "forged");
    let mut conn = redis(&api).await;
    let ttl_ms: i64 = conn.pttl(&key).await.expect("pttl");
    assert!(ttl_ms > 0 && ttl_ms <= 1_000, "{ttl_ms}");
    let cached: String = conn.get(&key).await.expect("cached");
    assert_eq!(cached, r#"{"valid":false}"#);

    // Briefly: once it expires, the auth server is asked again.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    update(
        &api,
        SUBACCOUNT,
        &[("x-service-token", "forged")],
        &metadata(),
    )
    .await
    .assert_error(401, "invalid_service_token");
    assert_eq!(auth.hits(), 2);

    // A bare 401 from the auth server is a refusal too.
    update(
        &api,
        SUBACCOUNT,
        &[("x-service-token", "reject-me")],
        &metadata(),
    )
    .await
    .assert_error(401, "invalid_service_token");
    // Two different tokens in the two headers are refused without asking anyone.
    let hits = auth.hits();
    update(
        &api,
        SUBACCOUNT,
        &[
            ("x-service-token", "db-token"),
            ("authorization", "Bearer forged"),
        ],
        &metadata(),
    )
    .await
    .assert_error(401, "invalid_service_token");
    assert_eq!(auth.hits(), hits);

    assert!(published(&api).await.is_empty(), "nothing published");
}

#[tokio::test]
async fn a_token_without_the_permission_gets_403_and_nothing_is_published() {
    let auth = AuthServer::start(&[("reader", "reporting", &["connectors:read"])]).await;
    let api = api_with(&auth, &[]).await;
    api.seed_google_calendar(SUBACCOUNT).await;
    provision_streams(&api).await;

    let reply = update(
        &api,
        SUBACCOUNT,
        &[("x-service-token", "reader")],
        &metadata(),
    )
    .await;

    reply.assert_error(403, "insufficient_permission");
    assert_eq!(
        reply.body["error"]["details"],
        json!({ "service": "reporting", "permission": WRITE })
    );
    assert_eq!(header(&reply, "deprecation"), Some(DEPRECATION));
    assert!(published(&api).await.is_empty());
}

#[tokio::test]
async fn a_missing_token_gets_401_service_token_required() {
    let auth = AuthServer::start(&[("db-token", "database-server", &[WRITE])]).await;
    let api = api_with(&auth, &[]).await;
    api.seed_google_calendar(SUBACCOUNT).await;
    provision_streams(&api).await;

    for headers in [
        vec![],
        vec![("authorization", "Basic dXNlcjpwYXNz")],
        vec![("authorization", "Bearer ")],
    ] {
        let reply = update(&api, SUBACCOUNT, &headers, &metadata()).await;
        reply.assert_error(401, "service_token_required");
        assert!(
            reply.message().starts_with("Service token required"),
            "{}",
            reply.body
        );
        assert!(header(&reply, "www-authenticate").is_some());
        assert_eq!(header(&reply, "deprecation"), Some(DEPRECATION));
    }
    assert_eq!(auth.hits(), 0);
    assert!(published(&api).await.is_empty());
}

#[tokio::test]
async fn an_auth_server_that_fails_hangs_or_is_gone_means_503_and_is_never_cached() {
    let auth = AuthServer::start(&[
        ("token-a", "database-server", &[WRITE]),
        ("token-b", "database-server", &[WRITE]),
        ("token-c", "database-server", &[WRITE]),
    ])
    .await;
    let api = api_with(&auth, &[("SERVICE_AUTH_TIMEOUT", "300ms")]).await;
    api.seed_google_calendar(SUBACCOUNT).await;
    provision_streams(&api).await;

    // 500: unavailable, not invalid, and not remembered.
    auth.set_mode(AuthMode::Fail);
    let reply = update(
        &api,
        SUBACCOUNT,
        &[("x-service-token", "token-a")],
        &metadata(),
    )
    .await;
    reply.assert_error(503, "service_auth_unavailable");
    assert_eq!(header(&reply, "retry-after"), Some("1"));
    assert!(
        redis_entries(&api)
            .await
            .iter()
            .all(|(k, _)| !k.contains(":auth:service-token:")),
        "an outage is never cached"
    );
    auth.set_mode(AuthMode::Answer);
    let reply = update(
        &api,
        SUBACCOUNT,
        &[("x-service-token", "token-a")],
        &metadata(),
    )
    .await;
    assert_eq!(reply.status, 202, "{}", reply.body);

    // Slower than SERVICE_AUTH_TIMEOUT: 503 within the bound, not a hang.
    auth.set_mode(AuthMode::Slow(Duration::from_secs(3)));
    let started = Instant::now();
    let reply = update(
        &api,
        SUBACCOUNT,
        &[("x-service-token", "token-b")],
        &metadata(),
    )
    .await;
    reply.assert_error(503, "service_auth_unavailable");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // Gone: connection refused.
    let hits = auth.hits();
    auth.stop().await;
    let reply = update(
        &api,
        SUBACCOUNT,
        &[("x-service-token", "token-c")],
        &metadata(),
    )
    .await;
    reply.assert_error(503, "service_auth_unavailable");
    // A token verified before the outage keeps working from the cache.
    let cached = update(
        &api,
        SUBACCOUNT,
        &[("x-service-token", "token-a")],
        &metadata(),
    )
    .await;
    assert_eq!(cached.status, 202, "{}", cached.body);
    assert_eq!(hits, 3, "a (500), a again (answered), b (too slow)");

    // Only the two accepted reports (the same one twice: one event) were published.
    assert_eq!(published(&api).await.len(), 1);
}

#[tokio::test]
async fn a_static_list_of_hashed_tokens_works_without_an_auth_server() {
    let writer = "gcal_svc_static-writer-token-for-tests";
    let reader = "gcal_svc_static-reader-token-for-tests";
    let tokens = format!(
        "database-server:{}:{WRITE}|connectors:read, reporting:{}:connectors:read",
        sha256_hex(writer),
        sha256_hex(reader).to_uppercase()
    );
    let api = Api::start(&[("SERVICE_TOKENS", tokens.as_str())]).await;
    api.seed_google_calendar(SUBACCOUNT).await;
    provision_streams(&api).await;

    let bearer = format!("Bearer {writer}");
    let reply = update(
        &api,
        SUBACCOUNT,
        &[("authorization", bearer.as_str())],
        &metadata(),
    )
    .await;
    assert_eq!(reply.status, 202, "{}", reply.body);
    assert_eq!(header(&reply, "deprecation"), Some(DEPRECATION));

    update(
        &api,
        SUBACCOUNT,
        &[("x-service-token", reader)],
        &metadata(),
    )
    .await
    .assert_error(403, "insufficient_permission");
    // The hash itself is not a token.
    let hash = sha256_hex(writer);
    update(
        &api,
        SUBACCOUNT,
        &[("x-service-token", hash.as_str())],
        &metadata(),
    )
    .await
    .assert_error(401, "invalid_service_token");
    update(&api, SUBACCOUNT, &[], &metadata())
        .await
        .assert_error(401, "service_token_required");

    let messages = published(&api).await;
    assert_eq!(messages.len(), 1);
    let event: Envelope<ConnectionReported> =
        Envelope::decode(&messages[0].payload).expect("event");
    assert_eq!(
        event.id.to_string(),
        reply.body["data"]["eventId"].as_str().expect("id")
    );
    assert!(
        redis_entries(&api)
            .await
            .iter()
            .all(|(k, _)| !k.contains(":auth:service-token:")),
        "the static list needs no cache"
    );
}

#[tokio::test]
async fn with_no_service_auth_configured_service_routes_answer_503_not_configured() {
    let api = Api::start(&[]).await;
    api.seed_google_calendar(SUBACCOUNT).await;
    provision_streams(&api).await;

    let reply = update(
        &api,
        SUBACCOUNT,
        &[("x-service-token", "anything")],
        &metadata(),
    )
    .await;
    reply.assert_error(503, "service_auth_not_configured");
    assert!(
        header(&reply, "retry-after").is_none(),
        "retrying does not help: {:?}",
        reply.headers
    );
    update(&api, SUBACCOUNT, &[], &metadata())
        .await
        .assert_error(401, "service_token_required");
    assert!(published(&api).await.is_empty());
}

#[tokio::test]
async fn bad_bodies_get_400_naming_the_field_and_nothing_is_published() {
    let auth = AuthServer::start(&[("db-token", "database-server", &[WRITE])]).await;
    let api = api_with(&auth, &[]).await;
    api.seed_google_calendar(SUBACCOUNT).await;
    provision_streams(&api).await;
    let token = [("x-service-token", "db-token")];

    let with = |field: &str, value: Value| {
        let mut body = metadata();
        body["metadata"][field] = value;
        body
    };
    let without = |field: &str| {
        let mut body = metadata();
        body["metadata"]
            .as_object_mut()
            .expect("object")
            .remove(field);
        body
    };
    let cases: Vec<(&str, Value, &str, &str)> = vec![
        (
            "calendarId not an ObjectId",
            with("calendarId", json!("primary")),
            "invalid_field",
            "metadata.calendarId",
        ),
        (
            "userEmail not an address",
            with("userEmail", json!("user")),
            "invalid_email",
            "metadata.userEmail",
        ),
        (
            "googleEmail missing",
            without("googleEmail"),
            "missing_field",
            "metadata.googleEmail",
        ),
        (
            "connectedAt not a date",
            with("connectedAt", json!("last tuesday")),
            "invalid_field",
            "metadata.connectedAt",
        ),
        (
            "connectedAt in the future",
            with("connectedAt", json!("2999-01-01T00:00:00.000Z")),
            "invalid_field",
            "metadata.connectedAt",
        ),
        (
            "isConnected false",
            with("isConnected", json!(false)),
            "invalid_field",
            "metadata.isConnected",
        ),
        (
            "isConnected a string",
            with("isConnected", json!("true")),
            "invalid_field",
            "metadata.isConnected",
        ),
        (
            "unknown metadata field",
            with("calendarName", json!("Work")),
            "unknown_field",
            "metadata.calendarName",
        ),
        (
            "unknown top-level field",
            {
                let mut body = metadata();
                body["subaccountId"] = json!(SUBACCOUNT);
                body
            },
            "unknown_field",
            "subaccountId",
        ),
        (
            "metadata at the top level",
            metadata()["metadata"].clone(),
            "unknown_field",
            "calendarId",
        ),
    ];
    for (case, body, code, field) in cases {
        let reply = update(&api, SUBACCOUNT, &token, &body).await;
        assert_eq!(
            (
                reply.status,
                reply.code(),
                reply.body["error"]["details"]["field"].as_str()
            ),
            (400, code, Some(field)),
            "{case}: {}",
            reply.body
        );
        let name = field.rsplit('.').next().unwrap_or(field);
        assert!(reply.message().contains(name), "{case}: {}", reply.body);
        assert_eq!(header(&reply, "deprecation"), Some(DEPRECATION), "{case}");
    }

    update(&api, "not-a-subaccount", &token, &metadata())
        .await
        .assert_error(400, "invalid_subaccount_id");
    send(
        &api,
        SUBACCOUNT,
        &token,
        "text/plain",
        metadata().to_string(),
    )
    .await
    .assert_error(415, "unsupported_media_type");
    send(&api, SUBACCOUNT, &token, "application/json", "{".into())
        .await
        .assert_error(400, "invalid_json");

    assert!(published(&api).await.is_empty(), "nothing published");
}

#[tokio::test]
async fn a_subaccount_without_the_connector_is_404_and_nothing_is_published() {
    let auth = AuthServer::start(&[("db-token", "database-server", &[WRITE])]).await;
    let api = api_with(&auth, &[]).await;
    provision_streams(&api).await;

    let reply = update(
        &api,
        SUBACCOUNT,
        &[("x-service-token", "db-token")],
        &metadata(),
    )
    .await;

    reply.assert_error(404, "connector_not_found");
    assert_eq!(reply.body["error"]["details"]["subaccountId"], SUBACCOUNT);
    assert!(published(&api).await.is_empty());
}

#[tokio::test]
async fn without_the_event_stream_the_update_is_503_event_stream_unavailable() {
    let auth = AuthServer::start(&[("db-token", "database-server", &[WRITE])]).await;
    let api = api_with(&auth, &[("API_PUBLISH_TIMEOUT", "1s")]).await;
    api.seed_google_calendar(SUBACCOUNT).await;
    // The api provisioned the stream at start-up; an operator deleted it since: JetStream has
    // nowhere to store the event.
    let nats = api.ctx.nats().await;
    jetstream::new(nats)
        .delete_stream(api.namespace.events_stream())
        .await
        .expect("stream deleted");

    let started = Instant::now();
    let reply = update(
        &api,
        SUBACCOUNT,
        &[("x-service-token", "db-token")],
        &metadata(),
    )
    .await;

    reply.assert_error(503, "event_stream_unavailable");
    assert_eq!(header(&reply, "retry-after"), Some("1"));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(published(&api).await.is_empty());
}

#[tokio::test]
async fn concurrent_requests_with_one_unknown_token_make_one_auth_server_call() {
    let auth = AuthServer::start(&[("db-token", "database-server", &[WRITE])]).await;
    // Slow enough that every request arrives while the first call is still out.
    auth.set_mode(AuthMode::Slow(Duration::from_millis(500)));
    let api = api_with(&auth, &[]).await;
    api.seed_google_calendar(SUBACCOUNT).await;
    provision_streams(&api).await;

    let body = metadata();
    let replies = futures::future::join_all((0..50).map(|_| {
        update(
            &api,
            SUBACCOUNT,
            &[("x-service-token", "unknown-token")],
            &body,
        )
    }))
    .await;
    for reply in &replies {
        reply.assert_error(401, "invalid_service_token");
    }
    assert_eq!(auth.hits(), 1, "one call for the fifty");

    // Within SERVICE_TOKEN_NEGATIVE_CACHE_TTL the refusal is remembered: no call at all.
    update(
        &api,
        SUBACCOUNT,
        &[("x-service-token", "unknown-token")],
        &metadata(),
    )
    .await
    .assert_error(401, "invalid_service_token");
    assert_eq!(auth.hits(), 1);
    assert!(published(&api).await.is_empty(), "nothing published");
}

#[tokio::test]
async fn random_tokens_never_have_more_auth_server_calls_in_flight_than_the_bound() {
    let auth = AuthServer::start(&[("db-token", "database-server", &[WRITE])]).await;
    auth.set_mode(AuthMode::Slow(Duration::from_millis(200)));
    let api = api_with(
        &auth,
        &[
            ("SERVICE_AUTH_MAX_IN_FLIGHT", "2"),
            ("SERVICE_AUTH_TIMEOUT", "500ms"),
        ],
    )
    .await;
    api.seed_google_calendar(SUBACCOUNT).await;
    provision_streams(&api).await;

    let tokens: Vec<String> = (0..30).map(|n| format!("random-token-{n}")).collect();
    let body = metadata();
    let headers: Vec<[(&str, &str); 1]> = tokens
        .iter()
        .map(|token| [("x-service-token", token.as_str())])
        .collect();
    let replies = futures::future::join_all(
        headers
            .iter()
            .map(|header| update(&api, SUBACCOUNT, header, &body)),
    )
    .await;
    assert!(
        auth.most_in_flight() <= 2,
        "{} calls at once",
        auth.most_in_flight()
    );
    // Those that could not get a turn in time are told to come back, not refused as invalid.
    let mut unavailable = 0;
    for reply in &replies {
        match reply.status {
            401 => reply.assert_error(401, "invalid_service_token"),
            _ => {
                reply.assert_error(503, "service_auth_unavailable");
                assert!(header(reply, "retry-after").is_some());
                unavailable += 1;
            }
        }
    }
    assert!(
        unavailable > 0,
        "30 calls of 200 ms, 2 at a time, cannot all fit in 500 ms"
    );
    assert_eq!(
        auth.hits() + unavailable,
        30,
        "a refused turn makes no call"
    );
}
