//! The api's side of connect-requested: a core NATS request to the oauth-worker queue group,
//! and the mapping of every outcome to either an authorization link or a clear error.
//!
//! The frontend is waiting, so the exchange is bounded by `CONNECT_REQUEST_TIMEOUT` whatever
//! happens (no worker, a slow worker, a NATS connection that is reconnecting). A reply that
//! is not a usable link is never turned into a 200.

use std::time::Duration;

use async_nats::{HeaderMap, RequestErrorKind};
use chrono::{DateTime, Utc};
use schemas::events::{
    ConnectRejectionCode, ConnectRequested, ConnectRequestedReply, LinkSettings,
};
use schemas::subjects::{Namespace, headers};
use schemas::{Envelope, Event, SubaccountId};
use uuid::Uuid;

use crate::error::ApiError;

/// An issued authorization link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthLink {
    /// Carries the single-use OAuth state: handed to the caller, never logged.
    pub auth_url: String,
    pub expires_at: DateTime<Utc>,
    /// True only once JetStream accepted the email job.
    pub email_sent: bool,
    /// The worker's link settings, when the request asked for them.
    pub settings: Option<LinkSettings>,
}

/// Asks the oauth-worker for an authorization link, and with `want_settings` for its link
/// settings too (`Gcal-Link-Settings-Wanted`; see `crate::local_links`).
pub async fn request_auth_link(
    nats: &async_nats::Client,
    namespace: &Namespace,
    subaccount: &SubaccountId,
    correlation_id: Uuid,
    payload: ConnectRequested,
    timeout: Duration,
    want_settings: bool,
) -> Result<AuthLink, ApiError> {
    let envelope = Envelope::new(subaccount.clone(), correlation_id, payload);
    let mut header_map = HeaderMap::new();
    header_map.insert(headers::EVENT_TYPE, ConnectRequested::TYPE);
    header_map.insert(headers::CORRELATION_ID, correlation_id.to_string().as_str());
    if want_settings {
        header_map.insert(headers::LINK_SETTINGS_WANTED, "1");
    }
    // The oauth-worker's handling continues this request's trace.
    service_kit::telemetry::inject_nats(&mut header_map);
    let request = async_nats::Request::new()
        .payload(envelope.to_bytes().into())
        .headers(header_map)
        .timeout(Some(timeout));
    // The client applies `timeout` to the wait for the reply; the outer bound also covers
    // the subscribe and publish, which can queue while the connection is reconnecting.
    let sent = tokio::time::timeout(
        timeout + Duration::from_millis(100),
        nats.send_request(namespace.connect_requested(), request),
    )
    .await;
    let reply = match sent {
        Err(_) => return Err(timed_out(timeout, correlation_id)),
        Ok(Err(error)) => {
            return Err(match error.kind() {
                RequestErrorKind::TimedOut => timed_out(timeout, correlation_id),
                RequestErrorKind::NoResponders => {
                    tracing::warn!(%correlation_id, "no oauth-worker is listening for connect requests");
                    ApiError::OAuthWorkerUnavailable
                }
                _ => {
                    tracing::error!(%correlation_id, error = %error, "connect request could not be sent over NATS");
                    ApiError::OAuthWorkerUnavailable
                }
            });
        }
        Ok(Ok(reply)) => reply,
    };
    interpret(&reply.payload, correlation_id)
}

fn timed_out(timeout: Duration, correlation_id: Uuid) -> ApiError {
    tracing::warn!(%correlation_id, ?timeout, "the oauth-worker did not answer the connect request in time");
    ApiError::OAuthWorkerTimeout { waited: timeout }
}

/// What the reply means for the caller.
fn interpret(payload: &[u8], correlation_id: Uuid) -> Result<AuthLink, ApiError> {
    let reply: ConnectRequestedReply = serde_json::from_slice(payload).map_err(|error| {
        tracing::error!(%correlation_id, %error, "undecodable reply from the oauth-worker (are the api and the worker the same version?)");
        ApiError::OAuthWorkerBadReply
    })?;
    match reply {
        ConnectRequestedReply::Issued {
            auth_url,
            expires_at,
            email_sent,
            link_settings,
        } => {
            if !is_http_url(&auth_url) {
                tracing::error!(%correlation_id, "the oauth-worker issued an authorization URL that is not an http(s) URL");
                return Err(ApiError::OAuthWorkerBadReply);
            }
            Ok(AuthLink {
                auth_url,
                expires_at,
                email_sent,
                settings: link_settings,
            })
        }
        ConnectRequestedReply::RateLimited {
            limit,
            retry_after_ms,
            message,
        } => Err(ApiError::RateLimited {
            limit: limit.name(),
            rule: message,
            retry_after: Duration::from_millis(retry_after_ms),
        }),
        ConnectRequestedReply::Rejected { code, message } => match code {
            ConnectRejectionCode::StateStoreUnavailable => {
                tracing::warn!(%correlation_id, %message, "the oauth-worker cannot store OAuth state");
                Err(ApiError::StateStoreUnavailable)
            }
            ConnectRejectionCode::InvalidRequest => Err(ApiError::Internal(format!(
                "the oauth-worker refused connect request {correlation_id} as invalid (contract mismatch between versions?): {message}"
            ))),
        },
    }
}

/// `http(s)://` followed by a host: enough to know the caller gets a link a browser opens,
/// without parsing the whole (long, percent-encoded) URL on every request.
fn is_http_url(url: &str) -> bool {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    rest.is_some_and(|rest| {
        let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
        !host.is_empty() && !host.contains(char::is_whitespace)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn reply(value: serde_json::Value) -> Result<AuthLink, ApiError> {
        interpret(value.to_string().as_bytes(), Uuid::now_v7())
    }

    #[test]
    fn issued_links_are_returned() {
        let link = reply(json!({
            "status": "issued", "authUrl": "https://accounts.google.com/o/oauth2/v2/auth?x=1",
            "expiresAt": "2025-10-05T12:10:00Z", "emailSent": false,
        }))
        .expect("link");
        assert!(!link.email_sent);
        assert!(link.auth_url.starts_with("https://accounts.google.com/"));
    }

    #[test]
    fn rejections_and_nonsense_are_never_a_link() {
        let state = reply(
            json!({"status": "rejected", "code": "state_store_unavailable", "message": "redis down"}),
        );
        assert_eq!(state.unwrap_err().code(), "state_store_unavailable");
        let limited = reply(
            json!({"status": "rateLimited", "limit": "emails_per_recipient",
            "retryAfterMs": 720000, "message": "at most 5 per 1h"}),
        )
        .unwrap_err();
        assert_eq!(limited.code(), "rate_limited");
        assert_eq!(limited.status(), 429);
        let invalid =
            reply(json!({"status": "rejected", "code": "invalid_request", "message": "bad"}));
        assert_eq!(invalid.unwrap_err().code(), "internal_error");
        for nonsense in [
            json!({"status": "issued", "authUrl": "", "expiresAt": "2025-10-05T12:10:00Z", "emailSent": true}),
            json!({"status": "issued", "authUrl": "javascript:alert(1)", "expiresAt": "2025-10-05T12:10:00Z", "emailSent": true}),
            json!({"status": "issued", "authUrl": "https:///no-host", "expiresAt": "2025-10-05T12:10:00Z", "emailSent": true}),
            json!({"status": "issued", "authUrl": "https://exa mple.com/", "expiresAt": "2025-10-05T12:10:00Z", "emailSent": true}),
            json!({"status": "issued", "expiresAt": "2025-10-05T12:10:00Z", "emailSent": true}),
            json!({"status": "maybe"}),
            json!("issued"),
        ] {
            assert_eq!(
                reply(nonsense.clone()).unwrap_err().code(),
                "oauth_worker_bad_reply",
                "{nonsense}"
            );
        }
        assert_eq!(
            interpret(b"not json", Uuid::now_v7()).unwrap_err().code(),
            "oauth_worker_bad_reply"
        );
    }
}
