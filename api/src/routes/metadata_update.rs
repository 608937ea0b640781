//! `POST /api/connectors/{subaccountId}/metadata/update` — **deprecated**, kept because the
//! reference spec's database-server still has it: another service reports a completed
//! connection's metadata.
//!
//! It writes nothing itself. The metadata goes down the same path as the OAuth callback's: a
//! `connection-reported` event on JetStream (the facts of `connection-succeeded` under a type of
//! their own: the api's NATS identity may not publish `connection-succeeded`, which only the
//! oauth-worker, having run the consent, can vouch for), which the metadata-worker applies like
//! `connection-succeeded` (idempotently, with retries and a dead-letter stream). The answer is
//! 202 once JetStream has stored the event.
//!
//! Checks, cheapest and least revealing first: the service token (401, or 503 when it cannot
//! be verified), the input (400, 413, 415), the token's permission `connectors:metadata:write`
//! (403), the connector's existence (404). A refused request publishes nothing.
//!
//! Every answer, errors included, carries `Deprecation: @<unix time>` (RFC 9745: deprecated
//! since that instant) and `Link: <.../handlegooglecalendar>; rel="successor-version"`: the
//! connect flow records the metadata by itself.
//!
//! The body is `{"metadata": {"calendarId", "userEmail", "googleEmail", "connectedAt",
//! "isConnected"}}`, the spec's `connectorsubaccount.metadata`. `isConnected` must be `true`:
//! this endpoint reports connections; a disconnect goes through `DELETE
//! /api/connectors/{id}/google-calendar`, which also revokes the tokens, so `false` is a 400
//! rather than a metadata change that leaves live tokens behind.
//!
//! The event id is derived from the subaccount and the metadata (a UUIDv7 whose time is
//! `connectedAt`), so a caller that retries the same report — after a timeout, say — gets the
//! same `eventId`, and JetStream stores the event once.

use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::post;
use chrono::{DateTime, SecondsFormat, Utc};
use schemas::events::ConnectionReported;
use schemas::{ConnectorId, Envelope, SubaccountId, UserEmail};
use serde::{Deserialize, Serialize};
use tracing::Instrument;
use uuid::Uuid;

use super::Success;
use super::google_calendar::with_correlation_id;
use crate::error::ApiError;
use crate::extract::{ApiJson, SubaccountPath};
use crate::service_auth::{METADATA_WRITE, ServiceCaller};
use crate::state::AppState;

/// The instant this endpoint was declared deprecated (2026-11-29T00:00:00Z): it arrived in
/// this api already deprecated.
pub const DEPRECATED_SINCE_UNIX: i64 = 1_795_910_400;
/// RFC 9745's `Deprecation` header.
pub const DEPRECATION_HEADER: HeaderName = HeaderName::from_static("deprecation");
/// How far in the future a `connectedAt` may lie (clock skew between services).
const FUTURE_SKEW: Duration = Duration::from_secs(300);

pub fn router() -> Router<AppState> {
    Router::new().route(
        "/api/connectors/{subaccountId}/metadata/update",
        post(update_metadata).layer(middleware::from_fn(deprecation_headers)),
    )
}

/// The request body: the spec's metadata, under `metadata`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct UpdateBody {
    metadata: MetadataBody,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct MetadataBody {
    /// The calendar entry's ObjectId: 24 hexadecimal characters.
    #[schema(value_type = String, pattern = "^[0-9a-fA-F]{24}$", example = "507f1f77bcf86cd799439011")]
    calendar_id: CalendarId,
    #[schema(value_type = String, format = "email", example = "user@example.com")]
    user_email: UserEmail,
    /// Stored trimmed and lower-case, the key the account has everywhere (disconnect finds it
    /// however it was spelled here).
    #[schema(value_type = String, format = "email", example = "googleuser@gmail.com")]
    google_email: UserEmail,
    /// With a time zone; not in the future.
    #[schema(value_type = String, format = DateTime, example = "2025-10-05T12:00:00.000Z")]
    connected_at: ConnectedAt,
    /// Must be `true`: this endpoint reports connections only.
    is_connected: bool,
}

/// Hex `_id` of the calendar entry (a MongoDB ObjectId), lower-case.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "String")]
struct CalendarId(String);

impl TryFrom<String> for CalendarId {
    type Error = &'static str;
    fn try_from(raw: String) -> Result<Self, Self::Error> {
        if raw.len() == 24 && raw.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Self(raw.to_ascii_lowercase()))
        } else {
            Err("must be 24 hexadecimal characters (the calendar entry's ObjectId)")
        }
    }
}

/// An RFC 3339 instant; stored the way the metadata stores it (`2025-10-05T12:00:00.000Z`).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(try_from = "String")]
struct ConnectedAt(DateTime<Utc>);

impl TryFrom<String> for ConnectedAt {
    type Error = &'static str;
    fn try_from(raw: String) -> Result<Self, Self::Error> {
        DateTime::parse_from_rfc3339(raw.trim())
            .map(|at| Self(at.with_timezone(&Utc)))
            .map_err(
                |_| "must be an ISO 8601 date-time with a time zone, e.g. 2025-10-05T12:00:00.000Z",
            )
    }
}

impl ConnectedAt {
    fn canonical(&self) -> String {
        self.0.to_rfc3339_opts(SecondsFormat::Millis, true)
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct Accepted {
    /// The same report always gets the same id (and is stored once).
    #[schema(value_type = String, format = "uuid")]
    event_id: Uuid,
}

#[utoipa::path(
    post,
    path = "/api/connectors/{subaccountId}/metadata/update",
    operation_id = "updateMetadata",
    tag = "deprecated",
    summary = "Report a completed connection's metadata (deprecated)",
    description = "For other services, with a service token granting `connectors:metadata:write`. \
Publishes `connection-reported` (the metadata-worker records it as it records \
`connection-succeeded`, which only the oauth-worker may publish) and answers 202; writes \
nothing itself. Deprecated: the connect flow records the metadata by itself. Every answer \
carries `Deprecation` and `Link` (rel=\"successor-version\"); answers from the permission check \
on also `X-Correlation-Id`.",
    params(crate::openapi::SubaccountParam),
    request_body = UpdateBody,
    security(("serviceToken" = []), ("serviceBearer" = [])),
    responses(
        (status = 202, description = "Accepted: the event is stored.", body = Success<Accepted>,
            headers(
                ("X-Correlation-Id" = String, description = "Follows this attempt through every service's logs."),
                ("Deprecation" = String, description = "RFC 9745: `@<unix time>` it was deprecated."),
                ("Link" = String, description = "The successor: `<.../handlegooglecalendar>; rel=\"successor-version\"`."),
            )),
        crate::openapi::MetadataUpdateFailures,
    ),
)]
async fn update_metadata(
    State(state): State<AppState>,
    request_id: service_kit::http::RequestId,
    caller: ServiceCaller,
    SubaccountPath(subaccount): SubaccountPath,
    ApiJson(body): ApiJson<UpdateBody>,
) -> Response {
    let correlation_id = request_id.0;
    let span = tracing::info_span!("metadata_update", %correlation_id, %subaccount, service = caller.service());
    let response = accept(&state, &caller, subaccount, body.metadata, correlation_id)
        .instrument(span)
        .await
        .into_response();
    with_correlation_id(correlation_id, response)
}

async fn accept(
    state: &AppState,
    caller: &ServiceCaller,
    subaccount: SubaccountId,
    metadata: MetadataBody,
    correlation_id: Uuid,
) -> Result<(StatusCode, Json<Success<Accepted>>), ApiError> {
    if !metadata.is_connected {
        return Err(ApiError::InvalidField {
            field: Some("metadata.isConnected".into()),
            reason: "must be true: this endpoint records a completed connection; there is no disconnect through it".into(),
        });
    }
    let connected_at = metadata.connected_at.0;
    if connected_at.timestamp_millis() < 0 || connected_at > Utc::now() + FUTURE_SKEW {
        return Err(ApiError::InvalidField {
            field: Some("metadata.connectedAt".into()),
            reason: "must not lie in the future (nor before 1970)".into(),
        });
    }
    caller.require(METADATA_WRITE)?;
    let limiter = &state.limiter;
    limiter
        .charge(
            &limiter.limits.metadata_update_per_caller,
            &service_kit::rate_limit::subject_digest(caller.service()),
        )
        .await?;
    let connector = ConnectorId::google_calendar();
    if !state.connectors.exists(&subaccount, &connector).await? {
        return Err(ApiError::ConnectorNotFound {
            subaccount,
            connector,
        });
    }
    let payload = ConnectionReported {
        calendar_id: metadata.calendar_id.0,
        user_email: metadata.user_email.to_string(),
        // The key every other writer and every lookup uses: stored as the caller spelled it,
        // disconnect could not find it.
        google_email: metadata.google_email.google_account_key(),
        connected_at: metadata.connected_at.canonical(),
    };
    let mut event = Envelope::new(subaccount.clone(), correlation_id, payload);
    event.id = event_id(&subaccount, &event.payload, connected_at);
    event.occurred_at = connected_at;
    let published = tokio::time::timeout(
        state.publish_timeout,
        service_kit::nats::publish_event(&state.infra.jetstream, &state.infra.namespace, &event),
    )
    .await;
    match published {
        Ok(Ok(ack)) => {
            tracing::info!(event_id = %event.id, duplicate = ack.duplicate, "deprecated metadata update accepted as connection-reported");
        }
        Ok(Err(error)) => {
            tracing::error!(%error, "connection-reported not stored");
            return Err(ApiError::EventStreamUnavailable);
        }
        Err(_) => {
            tracing::warn!(timeout = ?state.publish_timeout, event_id = %event.id, "JetStream did not acknowledge connection-reported in time");
            return Err(ApiError::EventStreamUnavailable);
        }
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(Success::new(
            Some("Metadata update accepted".into()),
            Accepted { event_id: event.id },
        )),
    ))
}

/// A UUIDv7 whose time is `connected_at` and whose random bits are a hash of what is
/// reported: the same report always has the same id (JetStream keeps one), different reports
/// never share one.
fn event_id(
    subaccount: &SubaccountId,
    payload: &ConnectionReported,
    connected_at: DateTime<Utc>,
) -> Uuid {
    let millis = u64::try_from(connected_at.timestamp_millis()).unwrap_or_default();
    // Every part is followed by a separator (the empty last part): the recipe as first
    // written, so ids of reports already published stay the same.
    schemas::derived_event_id(
        "gcal-connector/metadata-update/v1",
        &[
            subaccount.as_str().as_bytes(),
            payload.calendar_id.as_bytes(),
            payload.user_email.as_bytes(),
            payload.google_email.as_bytes(),
            payload.connected_at.as_bytes(),
            b"",
        ],
        millis,
    )
}

/// `Deprecation` and the successor `Link` on every answer of the route, errors included.
async fn deprecation_headers(request: Request, next: Next) -> Response {
    let successor = request
        .uri()
        .path()
        .strip_suffix("/metadata/update")
        .map(|base| format!("<{base}/handlegooglecalendar>; rel=\"successor-version\""));
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::try_from(format!("@{DEPRECATED_SINCE_UNIX}")) {
        headers.insert(DEPRECATION_HEADER, value);
    }
    if let Some(link) = successor.and_then(|l| HeaderValue::try_from(l).ok()) {
        headers.append(header::LINK, link);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::parse_json;

    const SUB: &str = "68cf05f060d294db17c0685e";

    fn body(metadata: serde_json::Value) -> Result<UpdateBody, ApiError> {
        parse_json(
            serde_json::json!({ "metadata": metadata })
                .to_string()
                .as_bytes(),
        )
    }

    fn good() -> serde_json::Value {
        serde_json::json!({
            "calendarId": "507F1F77BCF86CD799439011", "userEmail": "user@example.com",
            "googleEmail": "googleuser@gmail.com", "connectedAt": "2025-10-05T14:00:00+02:00",
            "isConnected": true,
        })
    }

    #[test]
    fn the_specs_metadata_is_accepted_and_normalised() {
        let metadata = body(good()).expect("valid").metadata;
        assert_eq!(metadata.calendar_id.0, "507f1f77bcf86cd799439011");
        assert_eq!(
            metadata.connected_at.canonical(),
            "2025-10-05T12:00:00.000Z"
        );
    }

    #[test]
    fn problems_name_their_field() {
        let field_of = |error: ApiError| match error {
            ApiError::InvalidField { field, .. } => field.unwrap_or_default(),
            ApiError::UnknownField { field, .. }
            | ApiError::MissingField { field, .. }
            | ApiError::InvalidEmail { field, .. } => field,
            other => panic!("{other:?}"),
        };
        for (change, field) in [
            (
                ("calendarId", serde_json::json!("nope")),
                "metadata.calendarId",
            ),
            (
                ("userEmail", serde_json::json!("nope")),
                "metadata.userEmail",
            ),
            (
                ("googleEmail", serde_json::json!(1)),
                "metadata.googleEmail",
            ),
            (
                ("connectedAt", serde_json::json!("yesterday")),
                "metadata.connectedAt",
            ),
            (
                ("isConnected", serde_json::json!("true")),
                "metadata.isConnected",
            ),
            (("surprise", serde_json::json!(1)), "metadata.surprise"),
        ] {
            let mut metadata = good();
            metadata[change.0] = change.1;
            assert_eq!(field_of(body(metadata).expect_err(field)), field);
        }
        let mut missing = good();
        missing
            .as_object_mut()
            .expect("object")
            .remove("googleEmail");
        assert_eq!(
            field_of(body(missing).expect_err("missing")),
            "metadata.googleEmail"
        );
    }

    #[test]
    fn the_same_report_has_the_same_event_id() {
        let subaccount = SubaccountId::parse(SUB).expect("id");
        let metadata = body(good()).expect("valid").metadata;
        let payload = ConnectionReported {
            calendar_id: metadata.calendar_id.0.clone(),
            user_email: metadata.user_email.to_string(),
            google_email: metadata.google_email.to_string(),
            connected_at: metadata.connected_at.canonical(),
        };
        let at = metadata.connected_at.0;
        let id = event_id(&subaccount, &payload, at);
        assert_eq!(id, event_id(&subaccount, &payload, at));
        assert_eq!(id.get_version_num(), 7);
        let other = ConnectionReported {
            google_email: "other@gmail.com".into(),
            ..payload.clone()
        };
        assert_ne!(id, event_id(&subaccount, &other, at));
    }
}
