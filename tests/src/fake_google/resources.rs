//! What an access token is good for — userinfo and the primary calendar's list entry — and
//! the revocation endpoint.
//!
//! - `GET /oauth2/v3/userinfo`: `sub` with `openid`; `email`, `email_verified` too with `email`
//!   (or `…/auth/userinfo.email`; `email_verified` as [`super::FakeGoogle::set_email_verified`]
//!   set it, `true` otherwise); 401 `invalid_token` for a bad token, 403 without either.
//! - `GET /calendar/v3/users/me/calendarList/{primary | the account's email}`: needs
//!   `…/auth/calendar` or `…/auth/calendar.readonly` (or the narrower calendarlist scopes) —
//!   as at Google, `calendar.events` is not enough; errors in Google's API error shape.
//! - `POST /revoke` with `token` in the form body (or the query): revokes the token's whole
//!   grant; 400 `invalid_token` for an unknown, expired or already revoked token. Client
//!   credentials, when sent, must be right; with [`super::FakeGoogle::require_client_auth`]
//!   they must be sent, by that method (401 `invalid_client` otherwise).

use std::collections::HashMap;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use serde_json::json;

use super::faults::injected_failure;
use super::state::subject_of;
use super::token::authenticate;
use super::{AppState, CALENDAR_API_PATH, REVOKE_PATH, USERINFO_PATH};

const EMAIL_SCOPES: [&str; 2] = ["email", "https://www.googleapis.com/auth/userinfo.email"];
/// The scopes Google accepts for `calendarList.get`.
const CALENDAR_LIST_SCOPES: [&str; 4] = [
    "https://www.googleapis.com/auth/calendar",
    "https://www.googleapis.com/auth/calendar.readonly",
    "https://www.googleapis.com/auth/calendar.calendarlist",
    "https://www.googleapis.com/auth/calendar.calendarlist.readonly",
];

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route(USERINFO_PATH, get(userinfo))
        .route(
            &format!("{CALENDAR_API_PATH}/users/me/calendarList/{{calendar_id}}"),
            get(calendar_list_entry),
        )
        .route(REVOKE_PATH, post(revoke))
}

/// Whom a live bearer token speaks for, and what it may do.
#[derive(Debug)]
struct Bearer {
    account: String,
    scopes: Vec<String>,
}

impl Bearer {
    fn has_any(&self, scopes: &[&str]) -> bool {
        self.scopes.iter().any(|s| scopes.contains(&s.as_str()))
    }
}

/// The request's bearer token, if it is live (known, unexpired, not revoked).
fn bearer(shared: &AppState, headers: &HeaderMap) -> Option<Bearer> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let state = shared.lock();
    state.live_access_grant(token.trim()).map(|grant| Bearer {
        account: grant.account.clone(),
        scopes: grant.scopes.clone(),
    })
}

async fn userinfo(State(shared): State<AppState>, headers: HeaderMap) -> Response {
    let Some(bearer) = bearer(&shared, &headers) else {
        let mut response = (
            StatusCode::UNAUTHORIZED,
            Json(json!({
                "error": "invalid_token",
                "error_description": "Invalid Credentials",
            })),
        )
            .into_response();
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer error=\"invalid_token\""),
        );
        return response;
    };
    let sub = subject_of(&bearer.account);
    if bearer.has_any(&EMAIL_SCOPES) {
        // Per-account setting first (binding tests), then the provider-wide mode (interop).
        let verified = {
            let state = shared.lock();
            match state.faults.email_verified.get(&bearer.account) {
                Some(verified) => *verified,
                None if state.modes.omit_email_verified => None,
                None => Some(true),
            }
        };
        let mut info = json!({ "sub": sub, "email": bearer.account });
        if let Some(verified) = verified {
            info["email_verified"] = json!(verified);
        }
        Json(info).into_response()
    } else if bearer.has_any(&["openid"]) {
        Json(json!({ "sub": sub })).into_response()
    } else {
        (
            StatusCode::FORBIDDEN,
            Json(json!({
                "error": "insufficient_scope",
                "error_description": "Insufficient Permission",
            })),
        )
            .into_response()
    }
}

/// Google's API error body.
fn api_error(status: StatusCode, message: &str, reason: &str, google_status: &str) -> Response {
    (
        status,
        Json(json!({
            "error": {
                "code": status.as_u16(),
                "message": message,
                "errors": [{ "message": message, "domain": "global", "reason": reason }],
                "status": google_status,
            }
        })),
    )
        .into_response()
}

async fn calendar_list_entry(
    State(shared): State<AppState>,
    Path(calendar_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(bearer) = bearer(&shared, &headers) else {
        return api_error(
            StatusCode::UNAUTHORIZED,
            "Request had invalid authentication credentials. Expected OAuth 2 access token, \
             login cookie or other valid authentication credential.",
            "authError",
            "UNAUTHENTICATED",
        );
    };
    if !bearer.has_any(&CALENDAR_LIST_SCOPES) {
        return api_error(
            StatusCode::FORBIDDEN,
            "Request had insufficient authentication scopes.",
            "insufficientPermissions",
            "PERMISSION_DENIED",
        );
    }
    if calendar_id != "primary" && !calendar_id.eq_ignore_ascii_case(&bearer.account) {
        return api_error(StatusCode::NOT_FOUND, "Not Found", "notFound", "NOT_FOUND");
    }
    Json(json!({
        "kind": "calendar#calendarListEntry",
        "etag": "\"1700000000000000\"",
        "id": bearer.account,
        "summary": bearer.account,
        "timeZone": "UTC",
        "colorId": "14",
        "backgroundColor": "#9fe1e7",
        "foregroundColor": "#000000",
        "selected": true,
        "accessRole": "owner",
        "defaultReminders": [],
        "primary": true,
    }))
    .into_response()
}

async fn revoke(
    State(shared): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let token = form
        .get("token")
        .or_else(|| query.get("token"))
        .map(|t| t.trim().to_owned())
        .unwrap_or_default();

    let mut state = shared.lock();
    state.counters.revoke_requests += 1;
    if let Some(status) = state.faults.failing_revoke.take() {
        return injected_failure(status);
    }
    let required = state.modes.client_auth;
    let presented = headers.contains_key(header::AUTHORIZATION) || form.contains_key("client_id");
    if (required.is_some() || presented)
        && let Err(description) = authenticate(&shared.config, &headers, &form, required)
    {
        state.counters.revoke_requests_unauthenticated += 1;
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({ "error": "invalid_client", "error_description": description })),
        )
            .into_response();
    }
    if token.is_empty() {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({
                "error": "invalid_request",
                "error_description": "Missing required parameter: token",
            })),
        )
            .into_response();
    }
    let expired = state
        .access_tokens
        .get(&token)
        .is_some_and(|access| access.expires_at <= Instant::now());
    let grant = state
        .grant_of(&token)
        .filter(|&id| !expired && !state.grants[id].revoked);
    let Some(grant) = grant else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({
                "error": "invalid_token",
                "error_description": "Token expired or revoked",
            })),
        )
            .into_response();
    };
    state.grants[grant].revoked = true;
    tracing::info!(account = %state.grants[grant].account, "fake Google: token revoked");
    StatusCode::OK.into_response()
}
