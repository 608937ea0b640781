//! The try-it page of a local run (`API_DEV_MODE=true` only): `GET /` serves a small page where
//! a person picks a subaccount and an email, presses Connect, consents at the (fake or real)
//! Google, and comes back to watch the connector's metadata change, the email arrive in the
//! local SMTP sink and the attempt's events appear.
//!
//! Routes, all absent (the house 404) when dev mode is off:
//!
//! - `GET /`, `GET /dev/page.js`, `GET /dev/page.css`: the page; no external asset, a strict
//!   `Content-Security-Policy` (scripts and styles from this origin only).
//! - `POST /dev/token` `{"subaccountId"}`: a user JWT for that subaccount with
//!   `connectors:manage` and `connectors:invite` (what connect, emailing the link to any
//!   address, and disconnect need), valid for [`TOKEN_TTL`], signed with
//!   `JWT_SECRET`. Dev mode therefore requires `JWT_ALGORITHM=HS256` (checked at start-up).
//! - `GET /dev/inbox?to=<email>`: the local SMTP sink's messages (`DEV_SMTP_SINK_URL/messages`)
//!   addressed to that email, newest first.
//! - `GET /dev/events?correlationId=<uuid>`: the events of the domain stream carrying that
//!   `Gcal-Correlation-Id`, in stream order, read with an ephemeral ordered consumer that starts
//!   shortly before the correlation id's own time (it is a UUIDv7) and scans at most
//!   [`MAX_SCANNED`] messages.
//!
//! Anyone who can reach the api in dev mode can mint a token for any subaccount: it is for a
//! developer's machine, never for a shared deployment.

use std::collections::HashMap;
use std::time::Duration;

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use jsonwebtoken::{EncodingKey, Header};
use schemas::SubaccountId;
use schemas::subjects::headers;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use service_kit::Env;
use service_kit::auth::{Audience, INVITE, JwtAlgorithm, JwtConfig, MANAGE_CONNECTORS, UserClaims};
use uuid::Uuid;

use super::routes::Success;
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::state::AppState;

/// How long a token from `POST /dev/token` is valid. The page mints a fresh one when it comes
/// back from the consent screen.
pub const TOKEN_TTL: Duration = Duration::from_secs(30 * 60);
/// Most stream messages one `GET /dev/events` looks at.
pub const MAX_SCANNED: usize = 5_000;
/// How long one `GET /dev/events` may spend reading the stream.
const SCAN_TIME: Duration = Duration::from_secs(3);
/// How long before the correlation id's time the scan starts (clock skew between services).
const SCAN_LEAD: Duration = Duration::from_secs(60);
/// Where the scan starts when the correlation id carries no usable time.
const SCAN_FALLBACK: Duration = Duration::from_secs(3600);
/// Bound on one call to the SMTP sink.
const SINK_TIMEOUT: Duration = Duration::from_secs(3);

const PAGE_HTML: &str = include_str!("page.html");
const PAGE_JS: &str = include_str!("page.js");
const PAGE_CSS: &str = include_str!("page.css");
/// Everything from this origin only; no inline script or style, no frames, no plugins.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// `API_DEV_MODE` and what it needs.
#[derive(Debug, Clone)]
pub struct TryItConfig {
    /// Serve the page and the `/dev/...` routes.
    pub enabled: bool,
    /// The local SMTP sink's HTTP address (its `/messages` is read).
    pub smtp_sink_url: reqwest::Url,
    /// Signs the page's tokens (HS256 with `JWT_SECRET`, checked when enabled).
    pub auth: JwtConfig,
}

impl TryItConfig {
    /// Reads `API_DEV_MODE` and `DEV_SMTP_SINK_URL`; dev mode with a signing key the api does
    /// not hold is a configuration problem.
    pub fn from_env(env: &mut Env, auth: &JwtConfig) -> Self {
        let enabled: bool = env.value(
            "API_DEV_MODE",
            "false",
            "true serves the try-it page at / and its /dev/... helpers (token minting, mailbox, \
             event trail): for a developer's machine only. Requires JWT_ALGORITHM=HS256.",
        );
        let smtp_sink_url: reqwest::Url = env.value(
            "DEV_SMTP_SINK_URL",
            "http://127.0.0.1:8025",
            "The local SMTP sink's HTTP address, whose /messages the try-it page shows (dev mode only).",
        );
        if !matches!(smtp_sink_url.scheme(), "http" | "https") {
            env.problem("DEV_SMTP_SINK_URL", "must be an http:// or https:// URL");
        }
        if enabled && auth.algorithm != JwtAlgorithm::Hs256 {
            env.problem(
                "API_DEV_MODE",
                format!(
                    "dev mode mints the try-it page's tokens with JWT_SECRET, so it requires \
                     JWT_ALGORITHM=HS256 (it is {}; with RS256/ES256 only the identity provider \
                     holds the signing key). Turn API_DEV_MODE off or use HS256.",
                    auth.algorithm
                ),
            );
        }
        Self {
            enabled,
            smtp_sink_url,
            auth: auth.clone(),
        }
    }
}

/// The page and its helpers when dev mode is on; nothing otherwise (the api's fallback then
/// answers 404 `route_not_found`).
pub fn router(state: &AppState) -> Router<AppState> {
    if !state.try_it.enabled {
        return Router::new();
    }
    Router::new()
        .route("/", get(page))
        .route("/dev/page.js", get(script))
        .route("/dev/page.css", get(style))
        .route("/dev/token", post(mint_token))
        .route("/dev/inbox", get(inbox))
        .route("/dev/events", get(events))
        // Every request is charged to the client's `dev_per_client` budget.
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::limits::dev_per_client,
        ))
}

/// A static asset with the page's security headers.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn page() -> Response {
    asset("text/html; charset=utf-8", PAGE_HTML)
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", PAGE_JS)
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", PAGE_CSS)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TokenBody {
    subaccount_id: SubaccountId,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct TokenData {
    token: String,
    subaccount_id: SubaccountId,
    expires_at: String,
}

/// `POST /dev/token`: what `mint-dev-token <subaccountId> --sub try-it --ttl 30m` prints.
async fn mint_token(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<TokenBody>,
) -> Result<Json<Success<TokenData>>, ApiError> {
    let auth = &state.try_it.auth;
    let now = jsonwebtoken::get_current_timestamp();
    let exp = now + TOKEN_TTL.as_secs();
    let claims = UserClaims {
        sub: "try-it".to_owned(),
        subaccount_ids: vec![body.subaccount_id.to_string()],
        roles: Vec::new(),
        permissions: vec![MANAGE_CONNECTORS.to_owned(), INVITE.to_owned()],
        email: None,
        iss: auth.issuer.clone(),
        aud: auth.audience.clone().map(Audience::One),
        exp,
        nbf: Some(now),
        iat: Some(now),
    };
    let key = EncodingKey::from_secret(auth.secret.expose())
        .map_err(|e| ApiError::Internal(format!("JWT_SECRET cannot sign: {e}")))?;
    let token = jsonwebtoken::encode(&Header::new(jsonwebtoken::Algorithm::HS256), &claims, &key)
        .map_err(|e| ApiError::Internal(format!("cannot sign a dev token: {e}")))?;
    let expires_at = chrono::DateTime::from_timestamp(i64::try_from(exp).unwrap_or(i64::MAX), 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default();
    Ok(Json(Success::new(
        None,
        TokenData {
            token,
            subaccount_id: body.subaccount_id,
            expires_at,
        },
    )))
}

/// A failure only the `/dev/...` helpers have, in the house error shape.
struct DevError {
    status: StatusCode,
    code: &'static str,
    message: String,
    details: Value,
}

impl IntoResponse for DevError {
    fn into_response(self) -> Response {
        let body = json!({
            "success": false,
            "message": self.message,
            "error": { "code": self.code, "details": self.details },
        });
        (self.status, Json(body)).into_response()
    }
}

/// The query parameters, or a 400 in the house shape.
fn query(
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<HashMap<String, String>, ApiError> {
    query
        .map(|Query(params)| params)
        .map_err(|e| ApiError::InvalidField {
            field: None,
            reason: e.body_text(),
        })
}

/// `GET /dev/inbox?to=<email>`: the sink's messages to that address, newest first.
async fn inbox(
    State(state): State<AppState>,
    params: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    let params = match query(params) {
        Ok(params) => params,
        Err(e) => return e.into_response(),
    };
    let to = params
        .get("to")
        .map(|t| t.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let sink = &state.try_it.smtp_sink_url;
    let url = match sink.join("messages") {
        Ok(url) => url,
        Err(e) => return ApiError::Internal(format!("DEV_SMTP_SINK_URL: {e}")).into_response(),
    };
    let unavailable = |why: String| DevError {
        status: StatusCode::BAD_GATEWAY,
        code: "dev_smtp_sink_unavailable",
        message: format!(
            "The local SMTP sink at {sink} cannot be read ({why}). scripts/run-local.sh starts it \
             (dev-smtp-sink); elsewhere set DEV_SMTP_SINK_URL to its HTTP address."
        ),
        details: json!({ "url": sink.as_str() }),
    };
    let fetched = async {
        let response = reqwest::Client::new()
            .get(url)
            .timeout(SINK_TIMEOUT)
            .send()
            .await
            .map_err(|e| without_url(&e))?;
        if !response.status().is_success() {
            return Err(format!("it answered {}", response.status()));
        }
        response
            .json::<Vec<Value>>()
            .await
            .map_err(|e| format!("its answer is not a list of messages: {}", without_url(&e)))
    };
    let mut messages = match fetched.await {
        Ok(messages) => messages,
        Err(why) => return unavailable(why).into_response(),
    };
    if !to.is_empty() {
        messages.retain(|m| {
            m["to"].as_array().is_some_and(|recipients| {
                recipients
                    .iter()
                    .filter_map(Value::as_str)
                    .any(|r| r.trim().eq_ignore_ascii_case(&to))
            })
        });
    }
    messages.reverse();
    Json(Success::new(
        None,
        json!({ "to": to, "sink": sink.as_str(), "messages": messages }),
    ))
    .into_response()
}

/// A reqwest error without the URL it carries (already in the message).
fn without_url(error: &reqwest::Error) -> String {
    let mut described = if error.is_timeout() {
        "no answer in time".to_owned()
    } else if error.is_connect() {
        "connection refused".to_owned()
    } else {
        error.to_string()
    };
    if let Some(url) = error.url() {
        described = described.replace(&format!(" ({url})"), "");
    }
    described
}

/// One event of the trail.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct TrailEvent {
    stream_sequence: u64,
    #[serde(rename = "type")]
    event_type: String,
    subject: String,
    /// The envelope's `occurredAt` (when the fact happened).
    time: Value,
    event_id: Value,
    payload: Value,
}

/// `GET /dev/events?correlationId=<uuid>`.
async fn events(
    State(state): State<AppState>,
    params: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<Success<Value>>, ApiError> {
    let params = query(params)?;
    let raw = params.get("correlationId").map(|s| s.trim()).unwrap_or("");
    let correlation_id = Uuid::parse_str(raw).map_err(|_| ApiError::InvalidField {
        field: Some("correlationId".into()),
        reason: "must be the UUID from the connect answer's X-Correlation-Id header".into(),
    })?;
    let infra = &state.infra;
    let stream_name = infra.namespace.events_stream();
    let (events, scanned, complete) = scan(&infra.jetstream, &stream_name, correlation_id)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, stream = %stream_name, "event trail not readable");
            ApiError::EventStreamUnavailable
        })?;
    Ok(Json(Success::new(
        None,
        json!({
            "correlationId": correlation_id,
            "stream": stream_name,
            "connectRequestSubject": infra.namespace.connect_requested(),
            "scanned": scanned,
            "complete": complete,
            "events": events,
        }),
    )))
}

/// The stream's messages carrying `correlation_id`, how many were looked at, and whether the
/// end of the stream was reached (false when a bound cut the scan short).
async fn scan(
    js: &async_nats::jetstream::Context,
    stream_name: &str,
    correlation_id: Uuid,
) -> Result<(Vec<TrailEvent>, usize, bool), String> {
    use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
    let wanted = correlation_id.to_string();
    let start_time = async_nats::datetime::from_nanos(start_nanos(correlation_id))
        .map_err(|e| format!("start time: {e}"))?;
    let stream = js
        .get_stream(stream_name)
        .await
        .map_err(|e| e.to_string())?;
    let mut consumer = stream
        .create_consumer(OrderedConfig {
            deliver_policy: DeliverPolicy::ByStartTime { start_time },
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    let mut pending = consumer
        .info()
        .await
        .map_err(|e| e.to_string())?
        .num_pending;
    if pending == 0 {
        return Ok((Vec::new(), 0, true));
    }
    // Deleted once read (best effort): a page polls every second, and an abandoned ordered
    // consumer would otherwise linger on the server for its 30 s inactivity threshold.
    let name = consumer.cached_info().name.clone();
    let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
    let scanned_ok = read_trail(&mut messages, &wanted, &mut pending).await;
    drop(messages);
    if let Err(e) = stream.delete_consumer(&name).await {
        tracing::debug!(error = %e, consumer = %name, "event trail consumer not deleted; it expires");
    }
    let (found, scanned) = scanned_ok?;
    Ok((found, scanned, pending == 0))
}

/// Reads `messages` until the end of the stream or a bound, keeping those of `wanted`.
async fn read_trail(
    messages: &mut async_nats::jetstream::consumer::pull::Ordered,
    wanted: &str,
    pending: &mut u64,
) -> Result<(Vec<TrailEvent>, usize), String> {
    let mut found = Vec::new();
    let mut scanned = 0;
    let deadline = tokio::time::Instant::now() + SCAN_TIME;
    while *pending > 0 && scanned < MAX_SCANNED {
        let message = match tokio::time::timeout_at(deadline, messages.next()).await {
            Err(_) | Ok(None) => break,
            Ok(Some(Err(e))) => return Err(e.to_string()),
            Ok(Some(Ok(message))) => message,
        };
        scanned += 1;
        let Ok(info) = message.info() else { continue };
        *pending = info.pending;
        let sequence = info.stream_sequence;
        let header = |name: &str| {
            message
                .headers
                .as_ref()
                .and_then(|h| h.get(name))
                .map(|v| v.as_str().to_owned())
        };
        if header(headers::CORRELATION_ID).as_deref() != Some(wanted) {
            continue;
        }
        let envelope: Value = serde_json::from_slice(&message.payload).unwrap_or(Value::Null);
        found.push(TrailEvent {
            stream_sequence: sequence,
            event_type: header(headers::EVENT_TYPE)
                .or_else(|| envelope["type"].as_str().map(str::to_owned))
                .unwrap_or_default(),
            subject: message.subject.to_string(),
            time: envelope["occurredAt"].clone(),
            event_id: envelope["id"].clone(),
            payload: envelope["payload"].clone(),
        });
    }
    Ok((found, scanned))
}

/// Nanoseconds since the epoch where the scan starts: [`SCAN_LEAD`] before the correlation
/// id's own time when it is a plausible UUIDv7 (within the last day), else [`SCAN_FALLBACK`]
/// ago.
fn start_nanos(correlation_id: Uuid) -> i128 {
    let now = chrono::Utc::now();
    let fallback = now - SCAN_FALLBACK;
    let issued = correlation_id
        .get_timestamp()
        .and_then(|ts| {
            let (secs, nanos) = ts.to_unix();
            chrono::DateTime::from_timestamp(i64::try_from(secs).ok()?, nanos)
        })
        .filter(|t| *t <= now + SCAN_LEAD && *t >= now - chrono::Duration::days(1));
    let start = issued.map_or(fallback, |t| t - SCAN_LEAD);
    i128::from(start.timestamp()) * 1_000_000_000 + i128::from(start.timestamp_subsec_nanos())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(pairs: &[(&str, &str)]) -> Result<TryItConfig, service_kit::config::ConfigError> {
        let mut env = Env::from_pairs(pairs.iter().copied());
        let auth = JwtConfig::from_env(&mut env);
        let config = TryItConfig::from_env(&mut env, &auth);
        env.finish().map(|()| config)
    }

    #[test]
    fn off_by_default_and_on_with_hs256() {
        let config = read(&[]).expect("defaults");
        assert!(!config.enabled);
        assert_eq!(config.smtp_sink_url.as_str(), "http://127.0.0.1:8025/");
        assert!(read(&[("API_DEV_MODE", "true")]).expect("hs256").enabled);
    }

    #[test]
    fn dev_mode_refuses_a_key_it_does_not_hold() {
        let err = read(&[
            ("API_DEV_MODE", "true"),
            ("JWT_ALGORITHM", "RS256"),
            ("JWT_JWKS_URL", "https://idp.example/jwks"),
        ])
        .expect_err("RS256");
        let problem = err
            .problems
            .iter()
            .find(|p| p.setting == "API_DEV_MODE")
            .expect("API_DEV_MODE named");
        assert!(problem.reason.contains("HS256"), "{}", problem.reason);
        assert!(read(&[("API_DEV_MODE", "maybe")]).is_err());
        assert!(read(&[("DEV_SMTP_SINK_URL", "ftp://x")]).is_err());
    }

    #[test]
    fn the_scan_starts_just_before_the_attempt() {
        let id = Uuid::now_v7();
        let now = chrono::Utc::now().timestamp();
        let start = i64::try_from(start_nanos(id) / 1_000_000_000).expect("fits");
        assert!((now - 62..=now - 58).contains(&start), "{start} vs {now}");
        let start = i64::try_from(start_nanos(Uuid::from_u128(42)) / 1_000_000_000).expect("fits");
        assert!(
            (now - 3602..=now - 3598).contains(&start),
            "{start} vs {now}"
        );
    }
}
