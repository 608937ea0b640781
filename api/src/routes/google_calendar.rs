//! `POST /api/connectors/{subaccountId}/handlegooglecalendar`: start a Google Calendar
//! connection and answer with the authorization link, exactly as the reference spec does.
//!
//! Checks run cheapest and least revealing first: the token (401), the input (400, 413,
//! 415), the token's access to this subaccount (403), whether it may have the link emailed to
//! `userEmail` (403 `invite_not_permitted`), the connector's existence (404). Only then is a
//! link issued — by the oauth-worker, or here for one that is not emailed
//! ([`crate::local_links`]) — so a refused request leaves no trace (no state, no email, no
//! rate-limit charge).

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::post;
use schemas::events::ConnectRequested;
use schemas::{ConnectorId, DisplayName, SubaccountId, UserEmail};
use serde::{Deserialize, Serialize};
use service_kit::auth::{AuthenticatedUser, MANAGE_CONNECTORS};
use service_kit::http::RequestId;
use tracing::Instrument;
use uuid::Uuid;

use super::Success;
use crate::error::ApiError;
use crate::extract::{ApiJson, SubaccountPath};
use crate::oauth_worker;
use crate::state::AppState;

/// Follows the attempt through every service's logs; the caller gets it to quote in support.
pub const CORRELATION_ID_HEADER: HeaderName = HeaderName::from_static("x-correlation-id");

pub fn router() -> Router<AppState> {
    Router::new().route(
        "/api/connectors/{subaccountId}/handlegooglecalendar",
        post(handle_google_calendar),
    )
}

/// The request body. `sendEmail` defaults to true, as in the spec.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ConnectBody {
    /// Who asked for the connection; receives the link when `sendEmail` is true. Only an
    /// address the mailer can deliver to (else 400 `invalid_email`); an internationalized
    /// domain is mailed to its ASCII form.
    #[schema(value_type = String, format = "email", example = "user@example.com")]
    user_email: UserEmail,
    /// Email the link to `userEmail` (default `true`).
    #[serde(default)]
    #[schema(default = true)]
    send_email: Option<bool>,
    /// Who asks, as the email and the consent page name them beside `PRODUCT_NAME`: the
    /// tenant's display name (1 to 100 characters, no control or bidirectional-override
    /// characters; HTML-escaped wherever shown). Default: `Account {subaccountId}`.
    #[serde(default)]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 100, example = "Acme Dental")]
    tenant_name: Option<DisplayName>,
}

/// The spec's `data`, in the spec's field order.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct ConnectData {
    /// Google's consent page; single use, expires.
    auth_url: String,
    #[schema(value_type = String, format = "email")]
    user_email: UserEmail,
    #[schema(value_type = String)]
    subaccount_id: SubaccountId,
    /// True only once the email job is stored (the message then says "sent", else "created").
    email_sent: bool,
}

#[utoipa::path(
    post,
    path = "/api/connectors/{subaccountId}/handlegooglecalendar",
    operation_id = "handleGoogleCalendar",
    tag = "connect",
    summary = "Start a Google Calendar connection",
    description = "Issues a Google consent link for the subaccount's `google-calendar` connector \
and returns it; emails it to `userEmail` unless `sendEmail` is false. \
The connector must exist (add it with `POST /api/connectors/{subaccountId}`). \
Emailing the link (`sendEmail` true, the default) to an address other than the caller's own (the \
token's `email` claim, compared case-insensitively) needs the `connectors:invite` permission \
besides `connectors:manage`; without it the answer is 403 `invite_not_permitted` and nothing is \
stored, charged or sent. `sendEmail: false` needs only `connectors:manage`: the link is returned \
to the caller, not mailed. A platform whose tokens carry no `email` claim keeps working by \
granting `connectors:invite` to the users (or service) allowed to send links, or by calling with \
`sendEmail: false` and delivering the link itself. Answers from the \
permission check on (200, 403, 404, 429, 5xx) carry `X-Correlation-Id`. \
Limits (429 `rate_limited`, `error.details.limit` names which, nothing is stored or emailed): \
connect requests per subaccount (`connect_per_subaccount`), authorization emails per subaccount \
(`emails_per_subaccount`) and per recipient address across all subaccounts \
(`emails_per_recipient`), both counted only with `sendEmail`, and unused links per subaccount \
(`live_states_per_subaccount`).",
    params(crate::openapi::SubaccountParam),
    request_body = ConnectBody,
    security(("userToken" = [])),
    responses(
        (status = 200, description = "The authorization link.", body = Success<ConnectData>,
            headers(("X-Correlation-Id" = String, description = "Follows this attempt through every service's logs."))),
        crate::openapi::ConnectFailures,
    ),
)]
async fn handle_google_calendar(
    State(state): State<AppState>,
    request_id: RequestId,
    user: AuthenticatedUser,
    SubaccountPath(subaccount): SubaccountPath,
    ApiJson(body): ApiJson<ConnectBody>,
) -> Response {
    // The request's id follows the attempt: the connect request, the email job, the callback
    // and the connection events all carry it as their correlation id.
    let correlation_id = request_id.0;
    let span = tracing::info_span!("connect", %correlation_id, %subaccount, user = %user.sub);
    let response = connect(&state, &user, subaccount, body, correlation_id)
        .instrument(span)
        .await
        .into_response();
    with_correlation_id(correlation_id, response)
}

/// Adds `X-Correlation-Id` to an answer, success or error alike.
pub fn with_correlation_id(correlation_id: Uuid, mut response: Response) -> Response {
    if let Ok(value) = HeaderValue::try_from(correlation_id.to_string()) {
        response.headers_mut().insert(CORRELATION_ID_HEADER, value);
    }
    response
}

async fn connect(
    state: &AppState,
    user: &AuthenticatedUser,
    subaccount: SubaccountId,
    body: ConnectBody,
    correlation_id: Uuid,
) -> Result<Json<Success<ConnectData>>, ApiError> {
    user.authorize(&subaccount, MANAGE_CONNECTORS)?;
    let send_email = body.send_email.unwrap_or(true);
    if send_email {
        // Mailing a link to someone else is an invitation: a separate permission, so a member
        // of one tenant cannot have consent links sent to anyone (the link is returned to
        // the caller alone with sendEmail: false).
        user.may_email_link_to(&body.user_email)?;
    }
    let connector = ConnectorId::google_calendar();
    if !state.connectors.exists(&subaccount, &connector).await? {
        // Never reaches the oauth-worker, which decides the connect limits: charged here to
        // the same budget, so a flood of these is bounded too.
        let limiter = &state.limiter;
        limiter
            .charge(&limiter.limits.connect_per_subaccount, subaccount.as_str())
            .await?;
        return Err(ApiError::ConnectorNotFound {
            subaccount,
            connector,
        });
    }
    let request = ConnectRequested {
        user_email: body.user_email.clone(),
        send_email,
        tenant_name: body.tenant_name,
    };
    // A link that is not emailed is issued here once the api knows the worker's link
    // settings (see `crate::local_links`); an emailed one always by the worker, which owns
    // the outbox.
    let local = if send_email {
        None
    } else {
        state.local_links.issuer()
    };
    let link = match local {
        Some(issuer) => {
            tracing::info!(send_email, "connect requested; issuing the link here");
            issuer.issue(&subaccount, correlation_id, &request).await?
        }
        None => {
            tracing::info!(send_email, "connect requested; asking the oauth-worker");
            let link = oauth_worker::request_auth_link(
                &state.infra.nats,
                &state.infra.namespace,
                &subaccount,
                correlation_id,
                request,
                state.connect_timeout,
                state.local_links.wanted(),
            )
            .await?;
            if let Some(settings) = &link.settings {
                state.local_links.learn(settings);
            }
            link
        }
    };
    tracing::info!(email_sent = link.email_sent, expires_at = %link.expires_at, "authorization link issued");
    let message = if link.email_sent {
        format!("Authorization link sent to {}", body.user_email)
    } else {
        format!("Authorization link created for {}", body.user_email)
    };
    Ok(Json(Success::new(
        Some(message),
        ConnectData {
            auth_url: link.auth_url,
            user_email: body.user_email,
            subaccount_id: subaccount,
            email_sent: link.email_sent,
        },
    )))
}
