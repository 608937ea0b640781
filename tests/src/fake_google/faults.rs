//! Breaking the fake on purpose, and looking inside it.
//!
//! On the handle: [`FakeGoogle::set_latency`], [`FakeGoogle::fail_next_token_requests`],
//! [`FakeGoogle::fail_next_revoke_requests`], [`FakeGoogle::set_access_token_lifetime`],
//! [`FakeGoogle::revoke_refresh_tokens_of`], [`FakeGoogle::set_email_verified`], and the
//! observers below them.
//!
//! Over HTTP, for the `fake-google` binary:
//!
//! ```text
//! POST /_fake/faults   {"latencyMs": 250,
//!                       "failNextTokenRequests": {"count": 2, "status": 503},
//!                       "failNextRevokeRequests": {"count": 1, "status": 500},
//!                       "accessTokenLifetimeSecs": 5,
//!                       "revokeRefreshTokensOf": "user@example.com"}   every field optional
//! GET  /_fake/state    the switches, request counters (refresh requests per account too)
//!                      and grants (no token values)
//! ```

use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{AppState, FakeGoogle};

/// The fault switches, part of the shared state.
#[derive(Debug, Default)]
pub(super) struct Faults {
    /// Added before every back-channel request (token, userinfo, Calendar, revoke).
    pub latency: Duration,
    pub failing_token: FailNext,
    pub failing_revoke: FailNext,
    /// Overrides Google's 3599 s for access tokens minted from now on.
    pub access_token_lifetime: Option<Duration>,
    /// Code exchanges return no refresh token (as Google does for a repeated consent without
    /// `prompt=consent`, or for some account types).
    pub withhold_refresh_tokens: bool,
    /// What userinfo says in `email_verified` for these accounts (`None`: the claim is left
    /// out); every other account is verified, as Google's accounts are.
    pub email_verified: std::collections::HashMap<String, Option<bool>>,
}

/// Answer the next `count` requests with `status` and a JSON error body.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailNext {
    pub count: usize,
    pub status: u16,
}

impl FailNext {
    /// The status to fail this request with, if any is left.
    pub(super) fn take(&mut self) -> Option<StatusCode> {
        if self.count == 0 {
            return None;
        }
        self.count -= 1;
        StatusCode::from_u16(self.status).ok()
    }
}

/// Injectable failures are what a client should retry or give up on: 429 and 5xx.
fn injectable(status: u16) -> bool {
    status == 429 || (500..=599).contains(&status)
}

/// The body of an injected failure, shaped like Google's token endpoint errors so the `oauth2`
/// crate reports a server response rather than a parse error.
pub(super) fn injected_failure(status: StatusCode) -> Response {
    let error = match status.as_u16() {
        429 => "rate_limit_exceeded",
        503 => "temporarily_unavailable",
        _ => "server_error",
    };
    (
        status,
        Json(json!({
            "error": error,
            "error_description": format!("fake-google: injected {status} failure"),
        })),
    )
        .into_response()
}

/// Middleware: waits for the configured latency, then serves.
pub(super) async fn latency(
    State(shared): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let delay = shared.lock().faults.latency;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    next.run(request).await
}

impl FakeGoogle {
    /// Delays every token, userinfo, Calendar and revoke request by `latency` (zero: none).
    pub fn set_latency(&self, latency: Duration) {
        self.shared.lock().faults.latency = latency;
    }

    /// Answers the next `n` token requests with `status` (429 or 5xx) and a JSON error body
    /// (`temporarily_unavailable` for 503, `rate_limit_exceeded` for 429, else `server_error`).
    ///
    /// # Panics
    /// If `status` is not 429 or 5xx.
    pub fn fail_next_token_requests(&self, n: usize, status: u16) {
        assert!(injectable(status), "inject 429 or 5xx, not {status}");
        self.shared.lock().faults.failing_token = FailNext { count: n, status };
    }

    /// Answers the next `n` revoke requests with `status` (429 or 5xx), as above.
    ///
    /// # Panics
    /// If `status` is not 429 or 5xx.
    pub fn fail_next_revoke_requests(&self, n: usize, status: u16) {
        assert!(injectable(status), "inject 429 or 5xx, not {status}");
        self.shared.lock().faults.failing_revoke = FailNext { count: n, status };
    }

    /// Access tokens minted from now on live `lifetime` (and say so in `expires_in`) instead
    /// of Google's 3599 s.
    pub fn set_access_token_lifetime(&self, lifetime: Duration) {
        self.shared.lock().faults.access_token_lifetime = Some(lifetime);
    }

    /// From now on, code exchanges return no refresh token (`false` restores Google's rules).
    pub fn withhold_refresh_tokens(&self, withhold: bool) {
        self.shared.lock().faults.withhold_refresh_tokens = withhold;
    }

    /// From now on, userinfo answers `email_verified: verified` for `account`, or leaves the
    /// claim out with `None` (other providers, and some account types, do).
    pub fn set_email_verified(&self, account: &str, verified: Option<bool>) {
        self.shared
            .lock()
            .faults
            .email_verified
            .insert(account.trim().to_ascii_lowercase(), verified);
    }

    /// What the user does at myaccount.google.com → "Remove access": revokes every grant of
    /// `account` (refresh and access tokens). Returns how many grants were revoked.
    pub fn revoke_refresh_tokens_of(&self, account: &str) -> usize {
        revoke_grants_of(&mut self.shared.lock(), account)
    }

    /// How many requests reached the token endpoint with this `grant_type`, including those
    /// answered with an injected failure or an error.
    pub fn token_requests(&self, grant_type: &str) -> usize {
        self.shared
            .lock()
            .counters
            .token_requests
            .get(grant_type)
            .copied()
            .unwrap_or(0)
    }

    /// How many refresh-token grants reached the token endpoint with a refresh token of
    /// `account` (revoked ones included), whatever the answer; injected failures, which
    /// answer before the token is read, are not counted.
    pub fn refresh_requests_of(&self, account: &str) -> usize {
        self.shared
            .lock()
            .counters
            .refresh_requests_by_account
            .get(&account.trim().to_ascii_lowercase())
            .copied()
            .unwrap_or(0)
    }

    /// How many requests reached the revocation endpoint.
    pub fn revoke_requests(&self) -> usize {
        self.shared.lock().counters.revoke_requests
    }

    /// How many revocation requests were refused because the client did not authenticate
    /// (or not as required).
    pub fn unauthenticated_revoke_requests(&self) -> usize {
        self.shared.lock().counters.revoke_requests_unauthenticated
    }

    /// Whether `token` (access or refresh) was issued here and has been revoked. Unknown
    /// tokens are not "revoked"; expired access tokens are not either.
    pub fn is_revoked(&self, token: &str) -> bool {
        let state = self.shared.lock();
        state
            .grant_of(token)
            .is_some_and(|grant| state.grants[grant].revoked)
    }

    /// The most recently issued refresh token of `account` (revoked or not).
    pub fn refresh_token_of(&self, account: &str) -> Option<String> {
        let account = account.trim().to_ascii_lowercase();
        self.shared
            .lock()
            .grants
            .iter()
            .rev()
            .filter(|grant| grant.account == account)
            .find_map(|grant| grant.refresh_token.clone())
    }

    /// How many access tokens were minted, by code exchange and refresh together.
    pub fn issued_access_tokens(&self) -> usize {
        self.shared.lock().counters.issued_access_tokens
    }
}

fn revoke_grants_of(state: &mut super::State, account: &str) -> usize {
    let account = account.trim().to_ascii_lowercase();
    let mut revoked = 0;
    for grant in state.grants.iter_mut() {
        if grant.account == account && !grant.revoked {
            grant.revoked = true;
            revoked += 1;
        }
    }
    if revoked > 0 {
        tracing::info!(%account, grants = revoked, "fake Google: access removed by the user");
    }
    revoked
}

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/_fake/faults", post(set_faults))
        .route("/_fake/state", get(snapshot))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FaultsUpdate {
    latency_ms: Option<u64>,
    fail_next_token_requests: Option<FailNext>,
    fail_next_revoke_requests: Option<FailNext>,
    access_token_lifetime_secs: Option<u64>,
    revoke_refresh_tokens_of: Option<String>,
}

async fn set_faults(State(shared): State<AppState>, Json(update): Json<FaultsUpdate>) -> Response {
    for fail in [
        update.fail_next_token_requests,
        update.fail_next_revoke_requests,
    ]
    .into_iter()
    .flatten()
    {
        if !injectable(fail.status) {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({ "error": format!("inject 429 or 5xx, not {}", fail.status) })),
            )
                .into_response();
        }
    }
    {
        let mut state = shared.lock();
        if let Some(ms) = update.latency_ms {
            state.faults.latency = Duration::from_millis(ms);
        }
        if let Some(fail) = update.fail_next_token_requests {
            state.faults.failing_token = fail;
        }
        if let Some(fail) = update.fail_next_revoke_requests {
            state.faults.failing_revoke = fail;
        }
        if let Some(secs) = update.access_token_lifetime_secs {
            state.faults.access_token_lifetime = Some(Duration::from_secs(secs));
        }
        if let Some(account) = &update.revoke_refresh_tokens_of {
            revoke_grants_of(&mut state, account);
        }
    }
    snapshot(State(shared)).await.into_response()
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Snapshot {
    latency_ms: u128,
    access_token_lifetime_secs: u64,
    fail_next_token_requests: FailNext,
    fail_next_revoke_requests: FailNext,
    token_requests: std::collections::BTreeMap<String, usize>,
    revoke_requests: usize,
    unauthenticated_revoke_requests: usize,
    issued_access_tokens: usize,
    /// Refresh-token grants by the account whose refresh token they carried.
    refresh_requests_by_account: std::collections::BTreeMap<String, usize>,
    pending_consents: usize,
    profile: &'static str,
    client_auth: Option<&'static str>,
    grants: Vec<GrantView>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct GrantView {
    account: String,
    client_id: String,
    scope: String,
    offline: bool,
    revoked: bool,
}

async fn snapshot(State(shared): State<AppState>) -> Json<Snapshot> {
    let state = shared.lock();
    Json(Snapshot {
        latency_ms: state.faults.latency.as_millis(),
        access_token_lifetime_secs: state
            .faults
            .access_token_lifetime
            .unwrap_or(super::state::DEFAULT_ACCESS_TOKEN_LIFETIME)
            .as_secs(),
        fail_next_token_requests: state.faults.failing_token,
        fail_next_revoke_requests: state.faults.failing_revoke,
        token_requests: state.counters.token_requests.clone(),
        revoke_requests: state.counters.revoke_requests,
        unauthenticated_revoke_requests: state.counters.revoke_requests_unauthenticated,
        issued_access_tokens: state.counters.issued_access_tokens,
        refresh_requests_by_account: state.counters.refresh_requests_by_account.clone(),
        pending_consents: state.pending.len(),
        profile: match state.modes.profile {
            super::Profile::Google => "google",
            super::Profile::Oidc => "oidc",
        },
        client_auth: state.modes.client_auth.map(super::ClientAuth::name),
        grants: state
            .grants
            .iter()
            .map(|grant| GrantView {
                account: grant.account.clone(),
                client_id: grant.client_id.clone(),
                scope: super::scope_string(&grant.scopes),
                offline: grant.refresh_token.is_some(),
                revoked: grant.revoked,
            })
            .collect(),
    })
}
