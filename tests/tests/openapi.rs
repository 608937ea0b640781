//! The api's OpenAPI document: served at `/openapi.json` exactly as committed in
//! `api/openapi.json`, Swagger UI at `/docs`, and every documented status of every operation
//! produced by a real request — nothing documented that cannot happen, nothing happening that is
//! not documented.

mod api_support;

use std::collections::BTreeSet;

use api_support::*;
use e2e::jwt::MintToken;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use schemas::documents::operation::{
    AccountRevocation, COLLECTION as OPERATIONS, Operation, OperationStatus,
};
use schemas::events::{ConnectLimit, ConnectRejectionCode, ConnectRequestedReply};
use serde_json::{Value, json};

const COMMITTED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../api/openapi.json");
const REGENERATE: &str = "cargo run -p api --bin write-openapi";
const RS256_A: &[u8] = include_bytes!("../fixtures/jwt/rs256-a.pem");

/// A subaccount without any connector.
const EMPTY: &str = "0123456789abcdef01234567";
/// A subaccount the table adds a connector to.
const FRESH: &str = "aaaaaaaaaaaaaaaaaaaaaaaa";
const OPERATION_ID: &str = "0199a3c2-7b1e-7c3a-9d2f-5e8b1a4c6d70";
const WRITER: &str = "gcal_svc_openapi-writer-token-for-tests";
const READER: &str = "gcal_svc_openapi-reader-token-for-tests";

async fn get_text(api: &Api, path: &str) -> (u16, String, String) {
    let response = reqwest::get(format!("{}{path}", api.service.base_url))
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (
        status,
        content_type,
        response.text().await.unwrap_or_default(),
    )
}

/// The first line where two texts differ, for a readable failure.
fn first_difference(a: &str, b: &str) -> String {
    let (mut a_lines, mut b_lines) = (a.lines(), b.lines());
    for line in 1.. {
        match (a_lines.next(), b_lines.next()) {
            (None, None) => break,
            (x, y) if x != y => {
                return format!(
                    "line {line}:\n  served:    {}\n  committed: {}",
                    x.unwrap_or("<end>"),
                    y.unwrap_or("<end>")
                );
            }
            _ => {}
        }
    }
    "only in line endings or the final newline".into()
}

#[tokio::test]
async fn the_served_spec_is_the_committed_api_openapi_json() {
    let api = Api::start(&[]).await;
    let (status, content_type, served) = get_text(&api, "/openapi.json").await;
    assert_eq!(status, 200, "{served}");
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let committed = std::fs::read_to_string(COMMITTED).unwrap_or_default();
    assert!(
        served == committed,
        "GET /openapi.json differs from api/openapi.json ({}). Regenerate it with `{REGENERATE}` \
         and commit it.",
        first_difference(&served, &committed)
    );

    let spec: Value = serde_json::from_str(&served).expect("JSON");
    let version = spec["openapi"].as_str().unwrap_or_default();
    assert!(version.starts_with("3.1."), "OpenAPI {version}");
    assert_eq!(
        spec["paths"]["/api/connectors/{subaccountId}/metadata/update"]["post"]["deprecated"],
        true
    );
    let schemes = &spec["components"]["securitySchemes"];
    assert_eq!(schemes["userToken"]["bearerFormat"], "JWT");
    assert_eq!(schemes["serviceToken"]["name"], "X-Service-Token");
    // Served without a token.
    assert!(spec["paths"].get("/openapi.json").is_none());
}

#[tokio::test]
async fn docs_serve_swagger_ui_from_the_binary_reading_the_served_spec() {
    let api = Api::start(&[]).await;
    // `/docs` redirects to `/docs/` (followed here).
    let (status, content_type, page) = get_text(&api, "/docs").await;
    assert_eq!(status, 200, "{page}");
    assert!(content_type.starts_with("text/html"), "{content_type}");
    assert!(page.contains("swagger-ui"), "{page}");
    assert!(
        !page.contains("https://"),
        "the page loads nothing from the internet: {page}"
    );
    let (status, _, initializer) = get_text(&api, "/docs/swagger-initializer.js").await;
    assert_eq!(status, 200, "{initializer}");
    assert!(initializer.contains("/openapi.json"), "{initializer}");
    let (status, content_type, bundle) = get_text(&api, "/docs/swagger-ui-bundle.js").await;
    assert_eq!(status, 200);
    assert!(content_type.contains("javascript"), "{content_type}");
    assert!(
        bundle.len() > 100_000,
        "the vendored bundle: {} bytes",
        bundle.len()
    );
    // The icon every page's browser asks for: an ICO, not a 404, and no token needed.
    let icon = reqwest::get(format!("{}/favicon.ico", api.service.base_url))
        .await
        .expect("favicon answers");
    assert_eq!(icon.status(), 200);
    assert_eq!(
        icon.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("image/x-icon")
    );
    let bytes = icon.bytes().await.expect("body");
    assert_eq!(&bytes[..4], &[0, 0, 1, 0], "an ICO header");
}

// ---------------------------------------------------------------------------------------------
// Every documented status, produced.

#[derive(Debug, Clone, Copy)]
enum Target {
    /// The api with service tokens configured, a stand-in oauth-worker and seeded data.
    Main,
    /// An api whose identity provider is unreachable (user tokens: 503 `auth_unavailable`) and
    /// that has no service-token validation configured (503 `service_auth_not_configured`).
    Degraded,
    /// An api whose per-caller limits allow one request an hour: each case is sent twice and
    /// the second answer counts (429 `rate_limited`).
    Limited,
}

#[derive(Debug, Clone)]
enum Auth {
    None,
    User(String),
    Service(&'static str),
}

#[derive(Debug, Clone)]
enum Body {
    None,
    Json(Value),
    Raw(&'static str, Vec<u8>),
}

#[derive(Debug, Clone)]
struct Case {
    method: Method,
    /// The path as the spec writes it.
    template: &'static str,
    path: String,
    auth: Auth,
    body: Body,
    target: Target,
    /// How the stand-in oauth-worker answers (connect only).
    worker: Option<Behaviour>,
    status: u16,
    /// The `error.code` expected (failures).
    code: Option<&'static str>,
}

const CONNECT: &str = "/api/connectors/{subaccountId}/handlegooglecalendar";
const CONNECTORS: &str = "/api/connectors/{subaccountId}";
const CONNECTOR: &str = "/api/connectors/{subaccountId}/{connectorId}";
const CONNECTION: &str = "/api/connectors/{subaccountId}/{connectorId}/connections/{googleEmail}";
const OPERATION: &str = "/api/connectors/{subaccountId}/operations/{operationId}";
const METADATA: &str = "/api/connectors/{subaccountId}/metadata/update";
const WEBHOOKS: &str = "/api/connectors/{subaccountId}/webhooks";
const WEBHOOK: &str = "/api/connectors/{subaccountId}/webhooks/{webhookId}";
const DELIVERIES: &str = "/api/connectors/{subaccountId}/webhooks/{webhookId}/deliveries";
/// Stands for the id the table's registration answered with.
const CREATED: &str = "CREATED-WEBHOOK";

fn case(method: Method, template: &'static str, path: String, status: u16) -> Case {
    Case {
        method,
        template,
        path,
        auth: Auth::User(token(SUBACCOUNT)),
        body: Body::None,
        target: Target::Main,
        worker: None,
        status,
        code: None,
    }
}

impl Case {
    fn auth(mut self, auth: Auth) -> Self {
        self.auth = auth;
        self
    }
    fn json(mut self, body: Value) -> Self {
        self.body = Body::Json(body);
        self
    }
    fn raw(mut self, content_type: &'static str, bytes: Vec<u8>) -> Self {
        self.body = Body::Raw(content_type, bytes);
        self
    }
    fn on(mut self, target: Target) -> Self {
        self.target = target;
        self
    }
    fn worker(mut self, behaviour: Behaviour) -> Self {
        self.worker = Some(behaviour);
        self
    }
    fn code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }
}

fn metadata(is_connected: bool) -> Value {
    json!({ "metadata": {
        "calendarId": "507f1f77bcf86cd799439011", "userEmail": "user@example.com",
        "googleEmail": "googleuser@gmail.com", "connectedAt": "2025-10-05T12:00:00.000Z",
        "isConnected": is_connected,
    }})
}

/// More than the default `API_MAX_BODY_BYTES` (16 KiB).
fn too_big() -> Vec<u8> {
    let mut body = b"{\"userEmail\": \"".to_vec();
    body.extend(std::iter::repeat_n(b'a', 20 * 1024));
    body.extend(b"@example.com\"}");
    body
}

/// One request or more for every (method, path, status) the api can answer with.
fn table(degraded_token: &str) -> Vec<Case> {
    use Method as M;
    let sub = SUBACCOUNT;
    let connect = |s: &str| format!("/api/connectors/{s}/handlegooglecalendar");
    let connectors = |s: &str| format!("/api/connectors/{s}");
    let connector = |s: &str, c: &str| format!("/api/connectors/{s}/{c}");
    let connection = |s: &str, c: &str, e: &str| format!("/api/connectors/{s}/{c}/connections/{e}");
    let operation = |s: &str, o: &str| format!("/api/connectors/{s}/operations/{o}");
    let update = |s: &str| format!("/api/connectors/{s}/metadata/update");
    let webhooks = |s: &str| format!("/api/connectors/{s}/webhooks");
    let webhook = |s: &str, w: &str| format!("/api/connectors/{s}/webhooks/{w}");
    let deliveries = |s: &str, w: &str| format!("/api/connectors/{s}/webhooks/{w}/deliveries");
    let target = json!({ "url": "http://127.0.0.1:9/hook" });
    let user_email = json!({ "userEmail": "user@example.com", "sendEmail": false });
    let degraded = Auth::User(degraded_token.to_owned());
    let fresh = Auth::User(token(FRESH));
    let empty = Auth::User(token(EMPTY));
    let no_invite = {
        let mut member = claims(SUBACCOUNT);
        member.permissions = vec!["connectors:manage".into()];
        Auth::User(member.sign_hs256(SECRET.as_bytes()))
    };
    let gc = "google-calendar";
    let email = "googleuser@gmail.com";
    vec![
        // Connect.
        case(M::POST, CONNECT, connect(sub), 200)
            .json(user_email.clone())
            .worker(Behaviour::Reply(issued(AUTH_URL, false))),
        case(M::POST, CONNECT, connect("not-an-id"), 400)
            .json(user_email.clone())
            .code("invalid_subaccount_id"),
        case(M::POST, CONNECT, connect(sub), 400)
            .json(json!({ "sendEmail": false }))
            .code("missing_field"),
        case(M::POST, CONNECT, connect(sub), 401)
            .auth(Auth::None)
            .json(user_email.clone())
            .code("missing_token"),
        case(M::POST, CONNECT, connect(OTHER_SUBACCOUNT), 403)
            .json(user_email.clone())
            .code("subaccount_forbidden"),
        case(M::POST, CONNECT, connect(sub), 403)
            .auth(no_invite.clone())
            .json(json!({ "userEmail": "someone.else@example.com" }))
            .code("invite_not_permitted"),
        case(M::POST, CONNECT, connect(EMPTY), 404)
            .auth(empty.clone())
            .json(user_email.clone())
            .code("connector_not_found"),
        case(M::POST, CONNECT, connect(sub), 413)
            .raw("application/json", too_big())
            .code("payload_too_large"),
        case(M::POST, CONNECT, connect(sub), 415)
            .raw("text/plain", b"user@example.com".to_vec())
            .code("unsupported_media_type"),
        case(M::POST, CONNECT, connect(sub), 500)
            .json(user_email.clone())
            .worker(Behaviour::Reply(ConnectRequestedReply::Rejected {
                code: ConnectRejectionCode::InvalidRequest,
                message: "unknown field".into(),
            }))
            .code("internal_error"),
        case(M::POST, CONNECT, connect(sub), 502)
            .json(user_email.clone())
            .worker(Behaviour::Raw(b"not json".to_vec()))
            .code("oauth_worker_bad_reply"),
        case(M::POST, CONNECT, connect(sub), 429)
            .json(user_email.clone())
            .worker(Behaviour::Reply(ConnectRequestedReply::RateLimited {
                limit: ConnectLimit::EmailsPerRecipient,
                retry_after_ms: 90_000,
                message: "at most 5 per 1h".into(),
            }))
            .code("rate_limited"),
        case(M::POST, CONNECT, connect(EMPTY), 429)
            .on(Target::Limited)
            .auth(empty.clone())
            .json(user_email.clone())
            .code("rate_limited"),
        case(M::POST, CONNECT, connect(sub), 503)
            .json(user_email.clone())
            .worker(Behaviour::Reply(ConnectRequestedReply::Rejected {
                code: ConnectRejectionCode::StateStoreUnavailable,
                message: "Redis is unavailable".into(),
            }))
            .code("state_store_unavailable"),
        case(M::POST, CONNECT, connect(sub), 503)
            .on(Target::Degraded)
            .auth(degraded.clone())
            .json(user_email.clone())
            .code("auth_unavailable"),
        // Add a connector.
        case(M::POST, CONNECTORS, connectors(FRESH), 201)
            .auth(fresh.clone())
            .json(json!({ "connectorId": gc })),
        case(M::POST, CONNECTORS, connectors(FRESH), 409)
            .auth(fresh.clone())
            .json(json!({ "connectorId": gc }))
            .code("connector_exists"),
        case(M::POST, CONNECTORS, connectors(FRESH), 400)
            .auth(fresh.clone())
            .json(json!({ "connectorId": "outlook" }))
            .code("missing_field"),
        case(M::POST, CONNECTORS, connectors(sub), 401)
            .auth(Auth::None)
            .json(json!({ "connectorId": gc }))
            .code("missing_token"),
        case(M::POST, CONNECTORS, connectors(OTHER_SUBACCOUNT), 403)
            .json(json!({ "connectorId": gc }))
            .code("subaccount_forbidden"),
        case(M::POST, CONNECTORS, connectors(sub), 413)
            .raw("application/json", too_big())
            .code("payload_too_large"),
        case(M::POST, CONNECTORS, connectors(sub), 415)
            .raw(
                "application/x-www-form-urlencoded",
                b"connectorId=x".to_vec(),
            )
            .code("unsupported_media_type"),
        case(M::POST, CONNECTORS, connectors(sub), 503)
            .on(Target::Degraded)
            .auth(degraded.clone())
            .json(json!({ "connectorId": gc }))
            .code("auth_unavailable"),
        // List connectors.
        case(M::GET, CONNECTORS, connectors(sub), 200),
        case(
            M::GET,
            CONNECTORS,
            connectors("68CF05F060D294DB17C0685"),
            400,
        )
        .code("invalid_subaccount_id"),
        case(M::GET, CONNECTORS, connectors(sub), 401)
            .auth(Auth::None)
            .code("missing_token"),
        case(M::GET, CONNECTORS, connectors(OTHER_SUBACCOUNT), 403).code("subaccount_forbidden"),
        case(M::GET, CONNECTORS, connectors(sub), 503)
            .on(Target::Degraded)
            .auth(degraded.clone())
            .code("auth_unavailable"),
        // One connector.
        case(M::GET, CONNECTOR, connector(sub, gc), 200),
        case(M::GET, CONNECTOR, connector(sub, "Google_Calendar"), 400)
            .code("invalid_connector_id"),
        case(M::GET, CONNECTOR, connector(sub, gc), 401)
            .auth(Auth::None)
            .code("missing_token"),
        case(M::GET, CONNECTOR, connector(OTHER_SUBACCOUNT, gc), 403).code("subaccount_forbidden"),
        case(M::GET, CONNECTOR, connector(EMPTY, gc), 404)
            .auth(empty.clone())
            .code("connector_not_found"),
        case(M::GET, CONNECTOR, connector(sub, gc), 503)
            .on(Target::Degraded)
            .auth(degraded.clone())
            .code("auth_unavailable"),
        // Disconnect every account.
        case(M::DELETE, CONNECTOR, connector(sub, gc), 202),
        case(M::DELETE, CONNECTOR, connector(sub, "outlook"), 400).code("invalid_field"),
        case(M::DELETE, CONNECTOR, connector(sub, gc), 401)
            .auth(Auth::None)
            .code("missing_token"),
        case(M::DELETE, CONNECTOR, connector(OTHER_SUBACCOUNT, gc), 403)
            .code("subaccount_forbidden"),
        case(M::DELETE, CONNECTOR, connector(EMPTY, gc), 404)
            .auth(empty.clone())
            .code("connector_not_found"),
        case(M::DELETE, CONNECTOR, connector(sub, gc), 503)
            .on(Target::Degraded)
            .auth(degraded.clone())
            .code("auth_unavailable"),
        // Disconnect one account.
        case(M::DELETE, CONNECTION, connection(sub, gc, email), 202),
        case(
            M::DELETE,
            CONNECTION,
            connection(sub, gc, "not-an-address"),
            400,
        )
        .code("invalid_email"),
        case(M::DELETE, CONNECTION, connection(sub, gc, email), 401)
            .auth(Auth::None)
            .code("missing_token"),
        case(
            M::DELETE,
            CONNECTION,
            connection(OTHER_SUBACCOUNT, gc, email),
            403,
        )
        .code("subaccount_forbidden"),
        case(M::DELETE, CONNECTION, connection(EMPTY, gc, email), 404)
            .auth(empty.clone())
            .code("connector_not_found"),
        case(M::DELETE, CONNECTION, connection(sub, gc, email), 503)
            .on(Target::Degraded)
            .auth(degraded.clone())
            .code("auth_unavailable"),
        // An operation.
        case(M::GET, OPERATION, operation(sub, OPERATION_ID), 200),
        case(M::GET, OPERATION, operation("nope", OPERATION_ID), 400).code("invalid_subaccount_id"),
        case(M::GET, OPERATION, operation(sub, OPERATION_ID), 401)
            .auth(Auth::None)
            .code("missing_token"),
        case(
            M::GET,
            OPERATION,
            operation(OTHER_SUBACCOUNT, OPERATION_ID),
            403,
        )
        .code("subaccount_forbidden"),
        case(M::GET, OPERATION, operation(sub, "no-such-operation"), 404)
            .code("operation_not_found"),
        case(M::GET, OPERATION, operation(sub, OPERATION_ID), 503)
            .on(Target::Degraded)
            .auth(degraded.clone())
            .code("auth_unavailable"),
        // The deprecated metadata update.
        case(M::POST, METADATA, update(sub), 202)
            .auth(Auth::Service(WRITER))
            .json(metadata(true)),
        case(M::POST, METADATA, update(sub), 400)
            .auth(Auth::Service(WRITER))
            .json(metadata(false))
            .code("invalid_field"),
        case(M::POST, METADATA, update(sub), 401)
            .auth(Auth::None)
            .json(metadata(true))
            .code("service_token_required"),
        case(M::POST, METADATA, update(sub), 403)
            .auth(Auth::Service(READER))
            .json(metadata(true))
            .code("insufficient_permission"),
        case(M::POST, METADATA, update(EMPTY), 404)
            .auth(Auth::Service(WRITER))
            .json(metadata(true))
            .code("connector_not_found"),
        case(M::POST, METADATA, update(sub), 413)
            .auth(Auth::Service(WRITER))
            .raw("application/json", too_big())
            .code("payload_too_large"),
        case(M::POST, METADATA, update(sub), 415)
            .auth(Auth::Service(WRITER))
            .raw("text/plain", b"{}".to_vec())
            .code("unsupported_media_type"),
        case(M::POST, METADATA, update(EMPTY), 429)
            .on(Target::Limited)
            .auth(Auth::Service(WRITER))
            .json(metadata(true))
            .code("rate_limited"),
        case(M::POST, METADATA, update(sub), 503)
            .on(Target::Degraded)
            .auth(Auth::Service(WRITER))
            .json(metadata(true))
            .code("service_auth_not_configured"),
        // Webhooks (the main api accepts loopback http targets and one endpoint per subaccount).
        case(M::POST, WEBHOOKS, webhooks(sub), 201).json(target.clone()),
        case(M::POST, WEBHOOKS, webhooks(sub), 409)
            .json(target.clone())
            .code("webhook_limit_reached"),
        case(M::POST, WEBHOOKS, webhooks(sub), 400)
            .json(json!({ "url": "ftp://example.com/hook" }))
            .code("invalid_webhook_url"),
        case(M::POST, WEBHOOKS, webhooks(sub), 401)
            .auth(Auth::None)
            .json(target.clone())
            .code("missing_token"),
        case(M::POST, WEBHOOKS, webhooks(OTHER_SUBACCOUNT), 403)
            .json(target.clone())
            .code("subaccount_forbidden"),
        case(M::POST, WEBHOOKS, webhooks(sub), 413)
            .raw("application/json", too_big())
            .code("payload_too_large"),
        case(M::POST, WEBHOOKS, webhooks(sub), 415)
            .raw("text/plain", b"https://example.com".to_vec())
            .code("unsupported_media_type"),
        case(M::POST, WEBHOOKS, webhooks(sub), 503)
            .on(Target::Degraded)
            .auth(degraded.clone())
            .json(target.clone())
            .code("auth_unavailable"),
        case(M::POST, WEBHOOKS, webhooks(sub), 429)
            .on(Target::Limited)
            .json(json!({ "url": "ftp://example.com/hook" }))
            .code("rate_limited"),
        case(M::GET, WEBHOOKS, webhooks(sub), 429)
            .on(Target::Limited)
            .code("rate_limited"),
        case(M::GET, DELIVERIES, deliveries(sub, "no-such-webhook"), 429)
            .on(Target::Limited)
            .code("rate_limited"),
        case(M::DELETE, WEBHOOK, webhook(sub, "no-such-webhook"), 429)
            .on(Target::Limited)
            .code("rate_limited"),
        case(M::GET, WEBHOOKS, webhooks(sub), 200),
        case(M::GET, WEBHOOKS, webhooks("123"), 400).code("invalid_subaccount_id"),
        case(M::GET, WEBHOOKS, webhooks(sub), 401)
            .auth(Auth::None)
            .code("missing_token"),
        case(M::GET, WEBHOOKS, webhooks(OTHER_SUBACCOUNT), 403).code("subaccount_forbidden"),
        case(M::GET, WEBHOOKS, webhooks(sub), 503)
            .on(Target::Degraded)
            .auth(degraded.clone())
            .code("auth_unavailable"),
        case(M::GET, DELIVERIES, deliveries(sub, CREATED), 200),
        case(
            M::GET,
            DELIVERIES,
            format!("{}?limit=0", deliveries(sub, CREATED)),
            400,
        )
        .code("invalid_field"),
        case(M::GET, DELIVERIES, deliveries(sub, CREATED), 401)
            .auth(Auth::None)
            .code("missing_token"),
        case(
            M::GET,
            DELIVERIES,
            deliveries(OTHER_SUBACCOUNT, CREATED),
            403,
        )
        .code("subaccount_forbidden"),
        case(M::GET, DELIVERIES, deliveries(sub, "no-such-webhook"), 404).code("webhook_not_found"),
        case(M::GET, DELIVERIES, deliveries(sub, CREATED), 503)
            .on(Target::Degraded)
            .auth(degraded.clone())
            .code("auth_unavailable"),
        case(M::DELETE, WEBHOOK, webhook(sub, CREATED), 200),
        case(M::DELETE, WEBHOOK, webhook("zz", CREATED), 400).code("invalid_subaccount_id"),
        case(M::DELETE, WEBHOOK, webhook(sub, CREATED), 401)
            .auth(Auth::None)
            .code("missing_token"),
        case(M::DELETE, WEBHOOK, webhook(OTHER_SUBACCOUNT, CREATED), 403)
            .code("subaccount_forbidden"),
        case(M::DELETE, WEBHOOK, webhook(sub, CREATED), 404).code("webhook_not_found"),
        case(M::DELETE, WEBHOOK, webhook(sub, CREATED), 503)
            .on(Target::Degraded)
            .auth(degraded.clone())
            .code("auth_unavailable"),
    ]
}

/// The documented operations, (METHOD, path).
fn operations(documented: &[(String, String, u16, Vec<String>)]) -> BTreeSet<(String, String)> {
    documented
        .iter()
        .map(|(m, p, ..)| (m.clone(), p.clone()))
        .collect()
}

fn body_name(body: &Body) -> String {
    match body {
        Body::None => "no body".into(),
        Body::Json(value) => value.to_string(),
        Body::Raw(content_type, bytes) => format!("{content_type}, {} bytes", bytes.len()),
    }
}

/// A valid value for a path parameter.
fn valid(name: &str) -> &'static str {
    match name {
        "subaccountId" => SUBACCOUNT,
        "connectorId" => "google-calendar",
        "googleEmail" => "googleuser@gmail.com",
        "operationId" => OPERATION_ID,
        _ => "x",
    }
}

/// `template` with its parameters valid, except `bad` (if any) replaced by `with`.
fn instance(template: &str, bad: Option<&str>, with: &str) -> String {
    template
        .split('/')
        .map(
            |segment| match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(name) if Some(name) == bad => with.to_owned(),
                Some(name) => valid(name).to_owned(),
                None => segment.to_owned(),
            },
        )
        .collect::<Vec<_>>()
        .join("/")
}

/// Requests to one operation: each parameter invalid in turn (and not UTF-8), every kind of
/// credential, and for a method with a body every kind of broken body.
fn sweep(method: &str, template: &str) -> Vec<Case> {
    let method: Method = method.parse().expect("method");
    let params: Vec<&str> = template
        .split('/')
        .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .collect();
    let mut paths = vec![instance(template, None, "")];
    for param in &params {
        paths.push(instance(template, Some(param), "Not_Valid!"));
        paths.push(instance(template, Some(param), "%FF"));
    }
    let mut expired = claims(SUBACCOUNT);
    expired.exp = expired.nbf.unwrap_or_default().saturating_sub(3600);
    expired.nbf = Some(expired.exp.saturating_sub(3600));
    expired.iat = expired.nbf;
    let mut powerless = claims(SUBACCOUNT);
    powerless.permissions.clear();
    let auths = [
        Auth::None,
        Auth::User("not.a.jwt".into()),
        Auth::User(expired.sign_hs256(SECRET.as_bytes())),
        Auth::User(powerless.sign_hs256(SECRET.as_bytes())),
        Auth::User(token(OTHER_SUBACCOUNT)),
        Auth::User(token(SUBACCOUNT)),
        Auth::Service(READER),
        Auth::Service(WRITER),
    ];
    let bodies = if method == Method::GET || method == Method::DELETE {
        vec![Body::None]
    } else {
        vec![
            Body::None,
            Body::Json(json!({})),
            Body::Json(json!([])),
            Body::Raw("application/json", b"{\"truncated\": ".to_vec()),
            Body::Raw("text/plain", b"hello".to_vec()),
            Body::Raw("application/json", too_big()),
        ]
    };
    let mut cases = Vec::new();
    for path in &paths {
        for auth in &auths {
            for body in &bodies {
                let mut case = case(method.clone(), "", path.clone(), 0).auth(auth.clone());
                case.body = body.clone();
                cases.push(case);
            }
        }
    }
    cases
}

/// Whether `path` is an instance of `template` (`{name}` matches one non-empty segment).
fn matches(template: &str, path: &str) -> bool {
    let path = path.split('?').next().unwrap_or_default();
    let (t, p): (Vec<&str>, Vec<&str>) = (template.split('/').collect(), path.split('/').collect());
    t.len() == p.len()
        && t.iter()
            .zip(&p)
            .all(|(t, p)| (t.starts_with('{') && !p.is_empty()) || t == p)
}

async fn send(api: &Api, case: &Case) -> Reply {
    let mut request = api.request(case.method.clone(), &case.path);
    request = match &case.auth {
        Auth::None => request,
        Auth::User(token) => request.bearer_auth(token),
        Auth::Service(token) => request.header("x-service-token", *token),
    };
    request = match &case.body {
        Body::None => request,
        Body::Json(value) => request
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(value.to_string()),
        Body::Raw(content_type, bytes) => request
            .header(reqwest::header::CONTENT_TYPE, *content_type)
            .body(bytes.clone()),
    };
    api_support::reply(request).await
}

/// Every (METHOD, path, status) the spec documents, with the codes of each failure.
fn documented(spec: &Value) -> Vec<(String, String, u16, Vec<String>)> {
    let mut out = Vec::new();
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            for (status, response) in operation["responses"].as_object().expect("responses") {
                let codes = response["x-error-codes"]
                    .as_array()
                    .map(|codes| {
                        codes
                            .iter()
                            .filter_map(|c| c.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                out.push((
                    method.to_uppercase(),
                    path.clone(),
                    status.parse().expect("numeric status"),
                    codes,
                ));
            }
        }
    }
    out
}

/// A token the degraded api can only check against keys it cannot fetch.
fn rs256_token() -> String {
    let mut claims = claims(SUBACCOUNT);
    claims.aud = Some(service_kit::auth::Audience::One("anything".into()));
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("key-a".into());
    let key = EncodingKey::from_rsa_pem(RS256_A).expect("fixture key");
    jsonwebtoken::encode(&header, &claims, &key).expect("sign")
}

async fn seed_operation(api: &Api) {
    let now = mongodb::bson::DateTime::now();
    api.tenant_db(SUBACCOUNT)
        .await
        .collection::<Operation>(OPERATIONS)
        .insert_one(Operation {
            id: OPERATION_ID.into(),
            subaccount_id: SUBACCOUNT.into(),
            kind: "disconnect".into(),
            google_email: None,
            status: OperationStatus::Done,
            disconnected: vec!["googleuser@gmail.com".into()],
            revocations: vec![AccountRevocation {
                google_email: "googleuser@gmail.com".into(),
                outcome: schemas::events::RevocationOutcome::Refused,
                error: Some("the provider refused the request: invalid_client".into()),
            }],
            error: None,
            created_at: now,
            updated_at: now,
        })
        .await
        .expect("seed operation");
}

fn sha256_hex(token: &str) -> String {
    api::service_auth::hex(&api::service_auth::sha256(token))
}

#[tokio::test]
async fn every_documented_status_is_produced_and_nothing_else() {
    let tokens = format!(
        "database-server:{}:connectors:metadata:write, reporting:{}:connectors:read",
        sha256_hex(WRITER),
        sha256_hex(READER)
    );
    // The sweep below sends hundreds of requests as one caller: the main api's limits are
    // far above them, the limited api's far below.
    let main = Api::start(&[
        ("SERVICE_TOKENS", tokens.as_str()),
        ("WEBHOOK_ALLOW_HTTP", "true"),
        ("WEBHOOK_ALLOW_PRIVATE_TARGETS", "true"),
        ("WEBHOOK_MAX_ENDPOINTS", "1"),
        ("RATE_LIMIT_WEBHOOK_MANAGEMENT_PER_CALLER", "100000/1m"),
        ("RATE_LIMIT_METADATA_UPDATE_PER_CALLER", "100000/1m"),
        ("RATE_LIMIT_CONNECT_PER_SUBACCOUNT", "100000/1m"),
    ])
    .await;
    let limited = Api::start(&[
        ("SERVICE_TOKENS", tokens.as_str()),
        ("RATE_LIMIT_WEBHOOK_MANAGEMENT_PER_CALLER", "1/1h"),
        ("RATE_LIMIT_METADATA_UPDATE_PER_CALLER", "1/1h"),
        ("RATE_LIMIT_CONNECT_PER_SUBACCOUNT", "1/1h"),
    ])
    .await;
    main.seed_google_calendar(SUBACCOUNT).await;
    seed_operation(&main).await;
    let worker = Responder::start(&main, Behaviour::Silent).await;
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let jwks = format!("http://127.0.0.1:{closed}/.well-known/jwks.json");
    let degraded = Api::start(&[("JWT_ALGORITHM", "RS256"), ("JWT_JWKS_URL", jwks.as_str())]).await;

    let (status, _, served) = get_text(&main, "/openapi.json").await;
    assert_eq!(status, 200);
    let spec: Value = serde_json::from_str(&served).expect("spec JSON");
    let documented = documented(&spec);
    let documented_triples: BTreeSet<(String, String, u16)> = documented
        .iter()
        .map(|(m, p, s, _)| (m.clone(), p.clone(), *s))
        .collect();

    let mut problems = Vec::new();
    let mut exercised = BTreeSet::new();
    let mut created = String::new();
    for mut case in table(&rs256_token()) {
        assert!(
            matches(case.template, &case.path),
            "table error: {} is not an instance of {}",
            case.path,
            case.template
        );
        if let Some(behaviour) = &case.worker {
            worker.answer_with(behaviour.clone());
        }
        let api = match case.target {
            Target::Main => &main,
            Target::Degraded => &degraded,
            Target::Limited => &limited,
        };
        case.path = case.path.replace(CREATED, &created);
        if matches!(case.target, Target::Limited) {
            // Spends the one request the hour allows.
            send(api, &case).await;
        }
        let reply = send(api, &case).await;
        if case.template == WEBHOOKS && reply.status == 201 {
            created = reply.body["data"]["id"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
        }
        let what = format!("{} {} ({})", case.method, case.path, case.template);
        exercised.insert((
            case.method.to_string(),
            case.template.to_owned(),
            reply.status,
        ));
        if reply.status != case.status {
            problems.push(format!(
                "{what}: expected {}, got {}: {}",
                case.status, reply.status, reply.body
            ));
            continue;
        }
        if reply.status == 429 {
            // As documented: `Retry-After` in whole seconds, the same in the body, and the limit.
            let header = reply
                .headers
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            let details = &reply.body["error"]["details"];
            if header.is_none_or(|secs| secs == 0)
                || header != details["retryAfterSeconds"].as_u64()
                || !details["limit"].is_string()
            {
                problems.push(format!(
                    "{what}: a 429 without matching Retry-After ({header:?}) and details: {}",
                    reply.body
                ));
            }
        }
        if reply.status >= 400 {
            let code = reply.code().to_owned();
            if case.code.is_some_and(|expected| expected != code) {
                problems.push(format!(
                    "{what}: expected code {:?}, got {code:?}",
                    case.code
                ));
            }
            let listed = documented.iter().find(|(m, p, s, _)| {
                *m == case.method.as_str() && p == case.template && *s == reply.status
            });
            if let Some((.., codes)) = listed
                && !codes.contains(&code)
            {
                problems.push(format!(
                    "{what}: code {code:?} is not among the documented {codes:?} for {}",
                    reply.status
                ));
            }
        } else if reply.body["success"] != true {
            problems.push(format!(
                "{what}: a {} without success: {}",
                reply.status, reply.body
            ));
        }
    }
    // Beyond the table: hostile and odd requests to every documented operation (with the
    // worker answering nonsense) must only ever get a documented status with a documented code.
    worker.answer_with(Behaviour::Raw(b"not json".to_vec()));
    for (method, template) in operations(&documented) {
        for case in sweep(&method, &template) {
            let reply = send(&main, &case).await;
            let what = format!(
                "sweep: {} {} ({:?}, {:?})",
                case.method,
                case.path,
                case.auth,
                body_name(&case.body)
            );
            exercised.insert((case.method.to_string(), template.clone(), reply.status));
            let listed = documented.iter().find(|(m, p, s, _)| {
                *m == case.method.as_str() && *p == template && *s == reply.status
            });
            match listed {
                None => problems.push(format!(
                    "{what}: answered {} which is not documented: {}",
                    reply.status, reply.body
                )),
                Some((.., codes))
                    if reply.status >= 400 && !codes.contains(&reply.code().to_owned()) =>
                {
                    problems.push(format!(
                        "{what}: code {:?} is not among the documented {codes:?} for {}",
                        reply.code(),
                        reply.status
                    ))
                }
                Some(_) => {}
            }
        }
    }

    let undocumented: Vec<_> = exercised.difference(&documented_triples).collect();
    let unproduced: Vec<_> = documented_triples.difference(&exercised).collect();
    if !undocumented.is_empty() {
        problems.push(format!(
            "answered but not documented in the spec: {undocumented:?}"
        ));
    }
    if !unproduced.is_empty() {
        problems.push(format!(
            "documented but produced by no case of the table: {unproduced:?}"
        ));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
