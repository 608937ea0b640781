//! Every way an api request can fail, and the one body they all answer with — the reference
//! spec's `{"success": false, "message": "...", "error": {"code": "...", "details": ...}}`.
//!
//! `message` tells a person what to fix; `code` is for programs and never changes meaning.
//! Failures that are ours (a database error, a contract mismatch) become a generic message
//! while the detail goes to the log, so nothing internal — and no secret — reaches a caller.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use schemas::{ConnectorId, IdError, SubaccountId};
use serde::Serialize;
use serde_json::{Value, json};
use service_kit::auth::{AuthError, Forbidden};

use crate::service_auth::ServiceAuthError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 401 (or 503 when the identity provider's keys cannot be fetched).
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// 403: a valid token that does not grant this subaccount or permission.
    #[error(transparent)]
    Forbidden(#[from] Forbidden),
    /// 401, 403 or 503 of a service-token route.
    #[error(transparent)]
    ServiceAuth(#[from] ServiceAuthError),
    /// 400: a path segment is not a valid id.
    #[error("{error}")]
    InvalidPath { field: &'static str, error: IdError },
    /// 400: the body is not JSON at all.
    #[error("Request body is not valid JSON{}: {reason} (line {line}, column {column})", at_field(.field.as_deref()))]
    InvalidJson {
        field: Option<String>,
        reason: String,
        line: usize,
        column: usize,
    },
    #[error("Invalid request body: {message}")]
    UnknownField { field: String, message: String },
    #[error("Invalid request body: {message}")]
    MissingField { field: String, message: String },
    #[error("Invalid request body{}: {reason}", at_field(.field.as_deref()))]
    InvalidField {
        field: Option<String>,
        reason: String,
    },
    /// 400: an email field (`userEmail`, `googleEmail`) holds no address the mailer can
    /// deliver to (schemas::UserEmail says why).
    #[error("Invalid email address at `{field}`: {reason}")]
    InvalidEmail { field: String, reason: String },
    /// 415: not `application/json`, or a `charset` other than UTF-8 (RFC 8259 §8.1).
    #[error(
        "Content-Type must be application/json, in UTF-8 (a charset parameter, if any, must be utf-8)"
    )]
    UnsupportedMediaType,
    #[error("Request body is larger than the {limit} bytes this api accepts")]
    PayloadTooLarge { limit: usize },
    #[error(
        "Connector not found: subaccount {subaccount} has no `{connector}` connector. Add it first with POST /api/connectors/{subaccount}"
    )]
    ConnectorNotFound {
        subaccount: SubaccountId,
        connector: ConnectorId,
    },
    #[error("Connector `{connector}` already exists for subaccount {subaccount}")]
    ConnectorExists {
        subaccount: SubaccountId,
        connector: ConnectorId,
    },
    #[error("The OAuth worker is not available; try again shortly")]
    OAuthWorkerUnavailable,
    #[error("The OAuth worker did not answer within {}; try again", humantime::format_duration(*.waited))]
    OAuthWorkerTimeout { waited: Duration },
    #[error(
        "The authorization link cannot be created right now (its state store is unavailable); try again shortly"
    )]
    StateStoreUnavailable,
    /// 502: the oauth-worker answered something this api cannot use (detail logged where seen).
    #[error("The OAuth worker gave an answer this api cannot use")]
    OAuthWorkerBadReply,
    /// 503: MongoDB did not answer (detail logged where seen).
    #[error("The database is not available; try again shortly")]
    DatabaseUnavailable,
    /// 503: JetStream did not store an event (detail logged where seen).
    #[error(
        "The event could not be recorded right now (the event stream is unavailable); try again shortly"
    )]
    EventStreamUnavailable,
    #[error("No operation {operation} for subaccount {subaccount}")]
    OperationNotFound {
        subaccount: SubaccountId,
        operation: String,
    },
    /// 404: no webhook endpoint with this id for the subaccount.
    #[error("No webhook {webhook} for subaccount {subaccount}")]
    WebhookNotFound {
        subaccount: SubaccountId,
        webhook: String,
    },
    /// 400: the target URL is refused by the webhook target policy (the message says why).
    #[error("Invalid webhook URL: {0}")]
    InvalidWebhookUrl(service_kit::webhook::TargetError),
    /// 409: the subaccount already has `WEBHOOK_MAX_ENDPOINTS` endpoints.
    #[error(
        "This subaccount already has {limit} webhook endpoints, the most allowed; delete one first"
    )]
    WebhookLimitReached { limit: usize },
    /// 429: a rate limit refused the request; nothing was done (`Retry-After` says when to
    /// try again).
    #[error("Too many requests: the `{limit}` limit allows {rule}; try again in {} s", service_kit::rate_limit::retry_after_secs(*.retry_after))]
    RateLimited {
        limit: &'static str,
        /// The limit in words, e.g. `at most 60 per 1m`.
        rule: String,
        retry_after: Duration,
    },
    #[error("No such endpoint")]
    RouteNotFound,
    #[error("This endpoint does not accept this method")]
    MethodNotAllowed,
    /// 500: the detail is logged, the caller learns only that it was our fault.
    #[error("Internal server error")]
    Internal(String),
}

fn at_field(field: Option<&str>) -> String {
    field.map(|f| format!(" at `{f}`")).unwrap_or_default()
}

/// The body every failure answers with (the seed's, field order included).
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = ErrorResponse)]
pub(crate) struct ErrorBody<'a> {
    /// Always `false`.
    success: bool,
    /// What went wrong and what to do about it, for a person.
    message: String,
    error: ErrorInfo<'a>,
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = ErrorDetail)]
pub(crate) struct ErrorInfo<'a> {
    /// Stable machine-readable code, e.g. `connector_not_found`; each response lists its codes.
    code: &'a str,
    /// Structured context (e.g. `{"field": "userEmail"}`), or `null`.
    details: Value,
}

impl ApiError {
    /// A MongoDB failure while `doing` something, logged with its cause; the caller sees
    /// 503 `database_unavailable` (the cause is not shown).
    pub fn database(error: mongodb::error::Error, doing: &'static str) -> Self {
        tracing::error!(%error, doing, "MongoDB operation failed");
        Self::DatabaseUnavailable
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::Auth(e) => e.status(),
            Self::ServiceAuth(e) => e.status(),
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::InvalidPath { .. }
            | Self::InvalidJson { .. }
            | Self::UnknownField { .. }
            | Self::MissingField { .. }
            | Self::InvalidField { .. }
            | Self::InvalidEmail { .. } => StatusCode::BAD_REQUEST,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::ConnectorNotFound { .. }
            | Self::OperationNotFound { .. }
            | Self::WebhookNotFound { .. }
            | Self::RouteNotFound => StatusCode::NOT_FOUND,
            Self::InvalidWebhookUrl(_) => StatusCode::BAD_REQUEST,
            Self::WebhookLimitReached { .. } => StatusCode::CONFLICT,
            Self::ConnectorExists { .. } => StatusCode::CONFLICT,
            Self::OAuthWorkerUnavailable
            | Self::OAuthWorkerTimeout { .. }
            | Self::StateStoreUnavailable
            | Self::DatabaseUnavailable
            | Self::EventStreamUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::OAuthWorkerBadReply => StatusCode::BAD_GATEWAY,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::Auth(e) => e.code(),
            Self::ServiceAuth(e) => e.code(),
            Self::Forbidden(Forbidden::Subaccount(_)) => "subaccount_forbidden",
            Self::Forbidden(Forbidden::Permission(_)) => "permission_denied",
            Self::Forbidden(Forbidden::Invite) => "invite_not_permitted",
            Self::InvalidPath {
                field: "connectorId",
                ..
            } => "invalid_connector_id",
            Self::InvalidPath { .. } => "invalid_subaccount_id",
            Self::InvalidJson { .. } => "invalid_json",
            Self::UnknownField { .. } => "unknown_field",
            Self::MissingField { .. } => "missing_field",
            Self::InvalidField { .. } => "invalid_field",
            Self::InvalidEmail { .. } => "invalid_email",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::ConnectorNotFound { .. } => "connector_not_found",
            Self::ConnectorExists { .. } => "connector_exists",
            Self::OAuthWorkerUnavailable => "oauth_worker_unavailable",
            Self::OAuthWorkerTimeout { .. } => "oauth_worker_timeout",
            Self::StateStoreUnavailable => "state_store_unavailable",
            Self::OAuthWorkerBadReply => "oauth_worker_bad_reply",
            Self::DatabaseUnavailable => "database_unavailable",
            Self::EventStreamUnavailable => "event_stream_unavailable",
            Self::OperationNotFound { .. } => "operation_not_found",
            Self::WebhookNotFound { .. } => "webhook_not_found",
            Self::InvalidWebhookUrl(_) => "invalid_webhook_url",
            Self::WebhookLimitReached { .. } => "webhook_limit_reached",
            Self::RouteNotFound => "route_not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::RateLimited { .. } => "rate_limited",
            Self::Internal(_) => "internal_error",
        }
    }

    fn details(&self) -> Value {
        match self {
            Self::Forbidden(Forbidden::Subaccount(subaccount)) => {
                json!({ "subaccountId": subaccount })
            }
            Self::Forbidden(Forbidden::Permission(permission)) => {
                json!({ "permission": permission })
            }
            Self::Forbidden(Forbidden::Invite) => {
                json!({ "permission": service_kit::auth::INVITE, "field": "userEmail" })
            }
            Self::ServiceAuth(e) => e.details(),
            Self::InvalidPath { field, .. } => json!({ "field": field }),
            Self::InvalidJson {
                field,
                line,
                column,
                ..
            } => json!({ "field": field, "line": line, "column": column }),
            Self::UnknownField { field, .. } | Self::MissingField { field, .. } => {
                json!({ "field": field })
            }
            Self::InvalidField { field, .. } => json!({ "field": field }),
            Self::InvalidEmail { field, .. } => json!({ "field": field }),
            Self::PayloadTooLarge { limit } => json!({ "limitBytes": limit }),
            Self::ConnectorNotFound {
                subaccount,
                connector,
            } => json!({
                "subaccountId": subaccount,
                "connectorId": connector,
                "addWith": format!("POST /api/connectors/{subaccount}"),
            }),
            Self::ConnectorExists {
                subaccount,
                connector,
            } => json!({ "subaccountId": subaccount, "connectorId": connector }),
            Self::OperationNotFound {
                subaccount,
                operation,
            } => json!({ "subaccountId": subaccount, "operationId": operation }),
            Self::WebhookNotFound {
                subaccount,
                webhook,
            } => json!({ "subaccountId": subaccount, "webhookId": webhook }),
            Self::InvalidWebhookUrl(refused) => {
                json!({ "field": "url", "reason": refused.reason() })
            }
            Self::WebhookLimitReached { limit } => json!({ "limit": limit }),
            Self::RateLimited {
                limit, retry_after, ..
            } => json!({
                "limit": limit,
                "retryAfterSeconds": service_kit::rate_limit::retry_after_secs(*retry_after),
            }),
            Self::OAuthWorkerTimeout { waited } => {
                json!({ "timeoutMs": u64::try_from(waited.as_millis()).unwrap_or(u64::MAX) })
            }
            _ => Value::Null,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let this = match self {
            // The extractor's own answer carries the WWW-Authenticate challenge.
            Self::Auth(auth) => return auth.into_response(),
            other => other,
        };
        if let Self::Internal(detail) = &this {
            tracing::error!(%detail, "request failed");
        }
        let status = this.status();
        let body = ErrorBody {
            success: false,
            message: this.to_string(),
            error: ErrorInfo {
                code: this.code(),
                details: this.details(),
            },
        };
        let mut response = (status, Json(body)).into_response();
        // Every 503 here but a missing configuration is transient; say when a retry makes sense.
        let transient = match &this {
            Self::ServiceAuth(e) => e.is_transient(),
            _ => status == StatusCode::SERVICE_UNAVAILABLE,
        };
        if let Self::RateLimited { retry_after, .. } = &this {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(service_kit::rate_limit::retry_after_secs(*retry_after)),
            );
        } else if transient {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if matches!(
            this,
            Self::ServiceAuth(ServiceAuthError::Missing | ServiceAuthError::Invalid(_))
        ) {
            // RFC 9110 §11.6.1: a 401 names a scheme the caller can use.
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Bearer realm="service""#),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(error: ApiError) -> (StatusCode, Value) {
        let response = error.into_response();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .expect("body");
        (status, serde_json::from_slice(&bytes).expect("json"))
    }

    #[tokio::test]
    async fn errors_use_the_seed_shape() {
        let (status, value) = body(ApiError::ConnectorNotFound {
            subaccount: SubaccountId::parse("68cf05f060d294db17c0685e").expect("id"),
            connector: ConnectorId::google_calendar(),
        })
        .await;
        assert_eq!(status, 404);
        assert_eq!(value["success"], false);
        assert_eq!(value["error"]["code"], "connector_not_found");
        let message = value["message"].as_str().expect("message");
        assert!(message.starts_with("Connector not found"), "{message}");
        assert!(
            message.contains("POST /api/connectors/68cf05f060d294db17c0685e"),
            "{message}"
        );
        assert_eq!(
            value.as_object().expect("object").len(),
            3,
            "exactly success, message, error: {value}"
        );
    }

    #[tokio::test]
    async fn rate_limited_answers_name_the_limit_and_when_to_retry() {
        let response = ApiError::RateLimited {
            limit: "connect_per_subaccount",
            rule: "at most 60 per 1m".into(),
            retry_after: Duration::from_millis(2500),
        }
        .into_response();
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()[header::RETRY_AFTER], "3");
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .expect("body");
        let value: Value = serde_json::from_slice(&bytes).expect("json");
        assert_eq!(value["error"]["code"], "rate_limited");
        assert_eq!(value["error"]["details"]["limit"], "connect_per_subaccount");
        assert_eq!(value["error"]["details"]["retryAfterSeconds"], 3);
        let message = value["message"].as_str().expect("message");
        assert!(message.contains("at most 60 per 1m"), "{message}");
        assert!(message.contains("3 s"), "{message}");
    }

    #[tokio::test]
    async fn internal_errors_hide_their_detail() {
        let (status, value) = body(ApiError::Internal("mongo said s3cr3t things".into())).await;
        assert_eq!(status, 500);
        assert_eq!(value["error"]["code"], "internal_error");
        assert!(!value.to_string().contains("s3cr3t"), "{value}");
    }
}
