//! Service-to-service authentication: a request from another service carries a service token,
//! validated, becomes a [`ServiceCaller`].
//!
//! Handlers take a [`ServiceCaller`] argument (first, so a request without a usable token is
//! answered before anything else is looked at); the permission check is a second, explicit
//! step ([`ServiceCaller::require`]) performed once the input is valid — the same 401 → 400 →
//! 403 order as user tokens.
//!
//! # Sending a token
//!
//! `X-Service-Token: <token>` (what the reference platform's services send), or
//! `Authorization: Bearer <token>`. When both are present they must carry the same token.
//!
//! # Validation
//!
//! - **Auth server** (`SERVICE_AUTH_URL` set): the api sends
//!   `POST <SERVICE_AUTH_URL>` with `Content-Type: application/json`, body `{"token": "<token>"}`,
//!   bounded by `SERVICE_AUTH_TIMEOUT`, redirects not followed. The answer:
//!
//!   | auth server answers | means |
//!   |---|---|
//!   | `200 {"valid": true, "service": "database-server", "permissions": ["connectors:metadata:write"]}` | valid; `service` is required, `permissions` defaults to `[]`, other fields are ignored |
//!   | `200 {"valid": false}`, or `401`/`403` (any body) | invalid → 401 `invalid_service_token` |
//!   | anything else: another status, a 200 that is not that JSON, a timeout, a refused connection | unavailable → 503 `service_auth_unavailable` |
//!
//!   Verdicts are cached in Redis under `RedisKeys::service_token(<sha256 hex of the token>)` —
//!   the token itself is never stored — valid ones for `SERVICE_TOKEN_CACHE_TTL` (5 minutes,
//!   as the reference spec does; a revoked token keeps working that long), invalid ones for
//!   `SERVICE_TOKEN_NEGATIVE_CACHE_TTL`. "Unavailable" is never cached. When Redis fails the
//!   auth server is asked (and the failure logged); a request never fails because of the cache.
//!   Per replica, concurrent verifications of one token share one lookup, invalid verdicts are
//!   also kept in memory (bounded) for `SERVICE_TOKEN_NEGATIVE_CACHE_TTL`, and at most
//!   `SERVICE_AUTH_MAX_IN_FLIGHT` auth-server calls are outstanding: one that waits longer than
//!   `SERVICE_AUTH_TIMEOUT` for its turn is "unavailable" (503).
//! - **Static list** (`SERVICE_TOKENS`, without an auth server): comma-separated
//!   `service:sha256hex:perm1|perm2` entries, where `sha256hex` is the SHA-256 of the token
//!   (`printf %s "$TOKEN" | sha256sum`); the token's hash is compared with every entry in
//!   constant time. `mint-service-token` prints a fresh token and its entry.
//! - **Neither**: service-token routes answer 503 `service_auth_not_configured` (after a
//!   missing token's 401): the caller's token may be perfectly good, so a 401 would send its
//!   operators looking in the wrong place. The api logs a warning at start-up.
//!
//! Tokens never reach a log line, an error message or Redis.

mod config;
mod extract;
mod verifier;

use axum::http::StatusCode;
use serde_json::{Value, json};

pub use config::{AuthServerUrl, ServiceAuthConfig, StaticServiceToken, StaticServiceTokens};
pub use extract::{SERVICE_TOKEN_HEADER, ServiceCaller};
pub use verifier::{ServiceIdentity, ServiceTokenVerifier, hex, sha256};

/// What a service needs to report a connection's metadata
/// (`POST /api/connectors/{subaccountId}/metadata/update`).
pub const METADATA_WRITE: &str = "connectors:metadata:write";

/// Why a service request is not authenticated or not allowed. Messages are safe to return:
/// they never echo the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceAuthError {
    /// 401: no token in either header.
    #[error(
        "Service token required: send `X-Service-Token: <token>` (or `Authorization: Bearer <token>`)"
    )]
    Missing,
    /// 401: the token is not valid (the reason is safe to show).
    #[error("The service token is invalid: {0}")]
    Invalid(&'static str),
    /// 403: a valid token without the route's permission.
    #[error("Service `{service}` lacks the `{permission}` permission")]
    Forbidden {
        service: String,
        permission: &'static str,
    },
    /// 503: the auth server could not give a verdict (detail logged where seen).
    #[error(
        "Service tokens cannot be verified right now: the auth server is unavailable; try again shortly"
    )]
    Unavailable,
    /// 503, not transient: this deployment accepts no service token at all.
    #[error(
        "Service tokens are not accepted by this deployment: it has neither an auth server nor a token list configured"
    )]
    NotConfigured,
}

impl ServiceAuthError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Missing | Self::Invalid(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden { .. } => StatusCode::FORBIDDEN,
            Self::Unavailable | Self::NotConfigured => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::Missing => "service_token_required",
            Self::Invalid(_) => "invalid_service_token",
            Self::Forbidden { .. } => "insufficient_permission",
            Self::Unavailable => "service_auth_unavailable",
            Self::NotConfigured => "service_auth_not_configured",
        }
    }

    pub fn details(&self) -> Value {
        match self {
            Self::Missing => json!({ "accepted": ["X-Service-Token", "Authorization: Bearer"] }),
            Self::Forbidden {
                service,
                permission,
            } => json!({ "service": service, "permission": permission }),
            _ => Value::Null,
        }
    }

    /// Whether retrying the same request later can succeed (a `Retry-After` is sent).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable)
    }
}
