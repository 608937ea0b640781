//! `GET /api/google/callback`: where the provider sends the browser after consent.
//!
//! 1. The `state` is consumed atomically (GETDEL): unknown, expired or used → 400 "link
//!    expired", nothing stored, no event (there is no attempt to attribute one to).
//! 2. `error=` from the provider (`access_denied`, ...) → a page and connection-failed.
//! 3. The code is exchanged with the PKCE verifier (bounded retries), the granted scopes (as
//!    the token response states them; a response without `scope` is refused unless
//!    `OAUTH_TOKEN_RESPONSE_OMITS_SCOPE`) are checked against the required ones, the account's
//!    email is read from userinfo (it must say `email_verified: true`) and its primary calendar
//!    from the Calendar API. An account that `CONSENT_ACCOUNT_POLICY` does not accept is
//!    refused: its grant is revoked at once, nothing is stored, and the page names the expected
//!    account with a button that tries again (a new state for the same attempt). A new account
//!    beyond `MAX_GOOGLE_ACCOUNTS` for the subaccount is refused (and its tokens revoked);
//!    reconnecting a connected one is not.
//!    The cap is exact: the account's document takes one of the subaccount's places (step 4),
//!    so concurrent callbacks of new accounts cannot together exceed it.
//! 4. The calendar entry is upserted; tokens (encrypted) and the connection-succeeded event
//!    are written in one document write (the outbox), then the event is published.
//! 5. A success page, or a redirect to `FRONTEND_REDIRECT_URL`.
//!
//! Every failure after step 1 emits connection-failed with its reason, stored in the outbox
//! before the page is answered (so a crash or a NATS outage cannot lose it). The event ids
//! derive from the state, so the same attempt can never produce two different events.

pub mod page;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use chrono::{SecondsFormat, Utc};
use schemas::events::{ConnectionFailed, ConnectionSucceeded, FailureReason};
use schemas::{Envelope, Event};
use serde::Deserialize;
use service_kit::Infrastructure;
use tracing::Instrument;
use uuid::Uuid;

use crate::authorization::ProviderClient;
use crate::consent_policy::{ConsentPolicy, Mismatch};
use crate::outbox::Outbox;
use crate::provider::{Provider, ProviderError, Tokens, missing_scopes};
use crate::token_store::{NewConnection, TokenStore, TokenStoreError};
use page::{Outcome, RetryLink};
use service_kit::auth_link::issue_retry_link;
use service_kit::oauth_state::{PendingAttempt, Put, StateStore};

/// The callback's path; the redirect URI registered with the provider ends with it.
pub const PATH: &str = "/api/google/callback";

#[derive(Debug)]
pub struct Callback {
    pub infra: Infrastructure,
    pub states: StateStore,
    pub provider: Provider,
    /// Builds the new link a refused account's page offers.
    pub client: ProviderClient,
    /// `OAUTH_PROVIDER_PROFILE`: how that link asks for offline access.
    pub profile: crate::config::ProviderProfile,
    pub tokens: TokenStore,
    pub outbox: Outbox,
    pub required_scopes: Vec<String>,
    /// `OAUTH_TOKEN_RESPONSE_OMITS_SCOPE`: a token response without `scope` means "granted as
    /// requested"; otherwise it is refused.
    pub token_response_omits_scope: bool,
    pub frontend: Option<url::Url>,
    /// `MAX_GOOGLE_ACCOUNTS`.
    pub max_accounts: usize,
    /// `CONSENT_ACCOUNT_POLICY`: which Google account may complete a link.
    pub consent_policy: ConsentPolicy,
}

/// The query the provider sends (RFC 6749 §4.1.2 and §4.1.2.1).
#[derive(Debug, Default, Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

pub fn router(callback: Arc<Callback>) -> Router {
    Router::new().route(PATH, get(handle)).with_state(callback)
}

async fn handle(
    State(callback): State<Arc<Callback>>,
    query: Result<Query<CallbackQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let query = query.map(|Query(q)| q).unwrap_or_default();
    let outcome = callback.complete(query).await;
    match &outcome {
        Outcome::Connected { .. } => {
            metrics::counter!("oauth_callbacks_total", "outcome" => "connected").increment(1);
        }
        Outcome::Failed { reason, .. } => {
            metrics::counter!("oauth_callbacks_total", "outcome" => *reason).increment(1);
        }
    }
    outcome.respond(callback.frontend.as_ref())
}

impl Callback {
    async fn complete(&self, query: CallbackQuery) -> Outcome {
        let Some(state) = query
            .state
            .clone()
            .filter(|s| !s.is_empty() && s.len() <= 512)
        else {
            tracing::info!("callback without a usable state");
            return link_expired();
        };
        let attempt = match self.states.take(&state).await {
            Ok(Some(attempt)) => attempt,
            Ok(None) => {
                tracing::info!("callback with an unknown, expired or already used state");
                return link_expired();
            }
            Err(error) => {
                tracing::error!(%error, "cannot read the OAuth state");
                return Outcome::failed(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "temporarily_unavailable",
                    "Please try again",
                    "We could not check your link just now. Please try again in a moment.",
                );
            }
        };
        let span = tracing::info_span!("callback", correlation_id = %attempt.correlation_id,
            subaccount_id = %attempt.subaccount_id, trace_id = tracing::field::Empty);
        // The attempt's trace (begun by the connect request) goes on.
        service_kit::telemetry::continue_trace_from(&span, attempt.traceparent.as_deref());
        self.connect(query, &state, attempt).instrument(span).await
    }

    async fn connect(&self, query: CallbackQuery, state: &str, attempt: PendingAttempt) -> Outcome {
        let pending = &attempt;
        let failed = |reason, google_email: Option<&str>, message: String, missing: Vec<String>| {
            let google_email = google_email.map(str::to_owned);
            async move {
                self.emit_failure(
                    state,
                    pending,
                    reason,
                    google_email.as_deref(),
                    message,
                    missing,
                )
                .await;
            }
        };
        if let Some(error) = query.error {
            let (reason, title, message) = if error == "access_denied" {
                (
                    FailureReason::AccessDenied,
                    "Connection cancelled",
                    "Google Calendar was not connected because access was denied. You can close this window, or start again from the app.".to_owned(),
                )
            } else {
                (
                    FailureReason::ProviderError,
                    "Google could not complete the connection",
                    format!(
                        "Google reported: {}. Please start again from the app.",
                        short(&error)
                    ),
                )
            };
            tracing::info!(error = %short(&error), description = ?query.error_description.as_deref().map(short), "the provider returned an error");
            failed(
                reason,
                None,
                format!("provider returned error={}", short(&error)),
                vec![],
            )
            .await;
            return Outcome::failed(
                StatusCode::BAD_REQUEST,
                Outcome::reason_name(reason),
                title,
                message,
            );
        }
        let Some(code) = query.code.filter(|c| !c.is_empty()) else {
            failed(
                FailureReason::ProviderError,
                None,
                "the callback carried neither code nor error".into(),
                vec![],
            )
            .await;
            return Outcome::failed(
                StatusCode::BAD_REQUEST,
                "provider_error",
                "Google could not complete the connection",
                "The response from Google was incomplete. Please start again from the app.",
            );
        };
        let tokens = match self
            .provider
            .exchange_code(&code, &attempt.pkce_verifier)
            .await
        {
            Ok(tokens) => tokens,
            Err(error) => {
                tracing::warn!(%error, "code exchange failed");
                failed(
                    FailureReason::TokenExchangeFailed,
                    None,
                    format!("code exchange failed: {error}"),
                    vec![],
                )
                .await;
                return provider_failure(&error);
            }
        };
        // The token response says what was granted; the `scope` on the redirect went through
        // the browser and proves nothing. A provider that omits it is trusted to have granted
        // what was asked only when configured as one that does (fail closed).
        let granted: Vec<String> = match tokens.scopes.clone() {
            Some(scopes) => scopes,
            None if self.token_response_omits_scope => self.required_scopes.clone(),
            None => {
                tracing::warn!(
                    "the token response does not say which scopes were granted; refused \
                     (OAUTH_TOKEN_RESPONSE_OMITS_SCOPE=true accepts that from a provider known to omit it)"
                );
                self.give_back(&tokens.access_token);
                failed(
                    FailureReason::ProviderError,
                    None,
                    "the token response did not say which scopes were granted".into(),
                    vec![],
                )
                .await;
                return Outcome::failed(
                    StatusCode::BAD_GATEWAY,
                    "provider_error",
                    "Google could not complete the connection",
                    "Google Calendar was not connected: the sign-in did not say which permissions were granted. Please start again from the app.",
                );
            }
        };
        let missing = missing_scopes(&self.required_scopes, &granted);
        if !missing.is_empty() {
            tracing::info!(?missing, "the user did not grant every required scope");
            self.give_back(&tokens.access_token);
            failed(
                FailureReason::ScopeNotGranted,
                None,
                "the user did not grant every required scope".into(),
                missing.clone(),
            )
            .await;
            return Outcome::failed(
                StatusCode::BAD_REQUEST,
                "scope_not_granted",
                "Calendar access is needed",
                "Google Calendar was not connected because calendar access was not granted. Please start again and leave every permission ticked.",
            );
        }
        let identity = match self.provider.identity(&tokens.access_token).await {
            Ok(identity) => identity,
            Err(error) => {
                tracing::warn!(%error, "cannot read the account's email");
                // Without a (verified) email nothing is stored: the grant is given back now,
                // not left live at the provider.
                self.revoke_refused(&tokens, "identity_unavailable").await;
                failed(
                    FailureReason::IdentityUnavailable,
                    None,
                    format!("userinfo failed: {error}"),
                    vec![],
                )
                .await;
                return provider_failure(&error);
            }
        };
        if let Err(mismatch) = self
            .consent_policy
            .check(attempt.user_email.as_str(), &identity)
        {
            return self
                .refuse_account(state, &attempt, &tokens, &mismatch)
                .await;
        }
        let google_email = identity.email.as_str();
        match self.room_for(&attempt.subaccount_id, google_email).await {
            Ok(true) => {}
            Ok(false) => {
                return self
                    .account_limit_reached(state, &attempt, google_email, &tokens)
                    .await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot count the subaccount's accounts");
                failed(
                    FailureReason::StorageUnavailable,
                    Some(google_email),
                    "the connected accounts could not be counted".into(),
                    vec![],
                )
                .await;
                return storage_failure();
            }
        }
        let primary = match self.provider.primary_calendar(&tokens.access_token).await {
            Ok(primary) => primary,
            Err(error) => {
                tracing::warn!(%error, "cannot read the account's primary calendar");
                failed(
                    FailureReason::ProviderError,
                    Some(google_email),
                    format!("calendar lookup failed: {error}"),
                    vec![],
                )
                .await;
                return provider_failure(&error);
            }
        };
        let subaccount = &attempt.subaccount_id;
        let user_email = attempt.user_email.as_str();
        let calendar_id = match crate::calendars::upsert_primary(
            &self.infra,
            subaccount,
            google_email,
            user_email,
            &primary,
        )
        .await
        {
            Ok(id) => id,
            Err(error) => {
                tracing::error!(%error, "cannot store the calendar entry");
                failed(
                    FailureReason::StorageUnavailable,
                    Some(google_email),
                    "the calendar entry could not be stored".into(),
                    vec![],
                )
                .await;
                return storage_failure();
            }
        };
        let mut event = Envelope::new(
            subaccount.clone(),
            attempt.correlation_id,
            ConnectionSucceeded {
                calendar_id: calendar_id.to_hex(),
                user_email: user_email.to_owned(),
                google_email: google_email.to_owned(),
                connected_at: Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
            },
        );
        event.id = event_id(state, &attempt, ConnectionSucceeded::TYPE);
        let entry = Outbox::entry(&event);
        let saved = self
            .tokens
            .save_connection(NewConnection {
                subaccount,
                google_email,
                user_email,
                tokens: &tokens,
                scopes: granted,
                event: entry.clone(),
                max_accounts: self.max_accounts,
            })
            .await;
        let saved = match saved {
            Ok(saved) => saved,
            Err(TokenStoreError::AccountLimitReached) => {
                // Concurrent connections of new accounts filled the last place since the
                // check above: the calendar entry just made active goes back to inactive.
                if let Err(error) =
                    crate::calendars::deactivate(&self.infra, subaccount, google_email).await
                {
                    tracing::warn!(%error, "calendar entry of a refused account left active");
                }
                return self
                    .account_limit_reached(state, &attempt, google_email, &tokens)
                    .await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot store the tokens");
                failed(
                    FailureReason::StorageUnavailable,
                    Some(google_email),
                    "the tokens could not be stored".into(),
                    vec![],
                )
                .await;
                return storage_failure();
            }
        };
        if !saved.has_refresh_token {
            // Stored as such: once the access token expires, the access-token RPC answers
            // `no_refresh_token` instead of trying.
            tracing::warn!(
                "the provider issued no refresh token (offline access not granted; see \
                 OAUTH_PROVIDER_PROFILE): the connection works until the access token expires"
            );
        }
        let published = self.outbox.publish_now(subaccount, &entry).await;
        tracing::info!(calendar_id = %calendar_id.to_hex(), published, "Google account connected");
        Outcome::Connected {
            subaccount_id: subaccount.to_string(),
            google_email: google_email.to_owned(),
        }
    }

    /// Refuses a new account over `MAX_GOOGLE_ACCOUNTS`: its grant is given back, and
    /// connection-failed says why.
    async fn account_limit_reached(
        &self,
        state: &str,
        attempt: &PendingAttempt,
        google_email: &str,
        tokens: &crate::provider::Tokens,
    ) -> Outcome {
        tracing::info!(
            max = self.max_accounts,
            "the subaccount already has as many Google accounts as allowed"
        );
        self.give_back(&tokens.access_token);
        self.emit_failure(
            state,
            attempt,
            FailureReason::AccountLimitReached,
            Some(google_email),
            format!(
                "the subaccount already has {} connected Google accounts",
                self.max_accounts
            ),
            vec![],
        )
        .await;
        Outcome::failed(
            StatusCode::CONFLICT,
            "account_limit_reached",
            "Too many Google accounts",
            "Google Calendar was not connected: this workspace already has as many Google accounts connected as it may. Disconnect one, then try again.",
        )
    }

    /// Whether `google_email` may be stored: it is already connected, or the subaccount has
    /// fewer than `MAX_GOOGLE_ACCOUNTS`. A cheap early answer that spares the calendar lookup
    /// when the subaccount is plainly full; the exact gate is the place
    /// [`TokenStore::save_connection`] takes, which concurrent callbacks cannot both get.
    async fn room_for(
        &self,
        subaccount: &schemas::SubaccountId,
        google_email: &str,
    ) -> Result<bool, crate::token_store::TokenStoreError> {
        let accounts = self.tokens.accounts(subaccount).await?;
        Ok(accounts.iter().any(|a| a == google_email) || accounts.len() < self.max_accounts)
    }

    /// The account is not one `CONSENT_ACCOUNT_POLICY` accepts: its grant is revoked before
    /// the page is shown, nothing is stored, connection-failed says who was expected and who
    /// came, and the page offers a new link for the same attempt (unless a frontend shows the
    /// outcome: it starts a new attempt itself).
    async fn refuse_account(
        &self,
        state: &str,
        attempt: &PendingAttempt,
        tokens: &Tokens,
        mismatch: &Mismatch,
    ) -> Outcome {
        tracing::info!(
            policy = self.consent_policy.name(),
            detail = %mismatch.describe(),
            "the Google account does not fit CONSENT_ACCOUNT_POLICY; revoking its grant"
        );
        self.revoke_refused(tokens, "account_mismatch").await;
        self.emit_failure(
            state,
            attempt,
            FailureReason::AccountMismatch,
            Some(&mismatch.used),
            mismatch.describe(),
            vec![],
        )
        .await;
        let retry = match self.frontend {
            Some(_) => None,
            None => self.retry_link(attempt, mismatch).await,
        };
        let next = match &retry {
            Some(_) => "Use the button below to sign in with the expected account.",
            None => "Please start again from the app and sign in with the expected account.",
        };
        let outcome = Outcome::failed(
            StatusCode::FORBIDDEN,
            Outcome::reason_name(FailureReason::AccountMismatch),
            "This is not the expected Google account",
            format!("{} {next}", mismatch.explain()),
        );
        match retry {
            Some(link) => outcome.with_retry(link),
            None => outcome,
        }
    }

    /// Revokes a grant we refuse, now, and waits for the answer: the refresh token when there
    /// is one (it ends the whole grant), else the access token. A failed revocation is logged
    /// and counted (`callback_revocations_total{outcome="failed"}`); the refusal stands.
    async fn revoke_refused(&self, tokens: &Tokens, reason: &'static str) {
        let token = tokens
            .refresh_token
            .as_deref()
            .unwrap_or(&tokens.access_token);
        let outcome = match self.provider.revoke(token).await {
            Ok(crate::provider::Revocation::Revoked) => "revoked",
            Ok(crate::provider::Revocation::AlreadyInvalid) => "already_invalid",
            Err(error) => {
                tracing::warn!(%error, reason, "could not revoke a refused account's grant");
                "failed"
            }
        };
        metrics::counter!("callback_revocations_total", "reason" => reason, "outcome" => outcome)
            .increment(1);
    }

    /// A new link for the same attempt (same subaccount, invited address and correlation id;
    /// a fresh state and PKCE pair, as the old state is spent), suggesting the expected
    /// account. `None` when the state store refuses or fails: the page then says to start
    /// again from the app.
    async fn retry_link(&self, attempt: &PendingAttempt, mismatch: &Mismatch) -> Option<RetryLink> {
        let hint = mismatch.login_hint(attempt.user_email.as_str());
        let link = issue_retry_link(&self.client, self.profile, &self.required_scopes, hint);
        let issued_at = Utc::now();
        let retry = PendingAttempt {
            subaccount_id: attempt.subaccount_id.clone(),
            user_email: attempt.user_email.clone(),
            pkce_verifier: link.pkce_verifier,
            correlation_id: attempt.correlation_id,
            issued_at,
            traceparent: service_kit::telemetry::current_traceparent(),
            expires_at: Some(issued_at + self.states.ttl()),
            auth_url: Some(link.url.to_string()),
            tenant_name: attempt.tenant_name.clone(),
        };
        match self.states.put(&link.state, &retry, false).await {
            Ok(Put::Stored) => Some(RetryLink {
                url: link.url,
                label: mismatch.retry_label(hint),
            }),
            Ok(Put::Limited { limit, .. }) => {
                tracing::info!(
                    limit = limit.name(),
                    "no new link for the refused account: over a limit"
                );
                None
            }
            Err(error) => {
                tracing::warn!(%error, "no new link for the refused account");
                None
            }
        }
    }

    /// Tokens we will not keep are given back to the provider, in the background.
    fn give_back(&self, access_token: &str) {
        let provider = self.provider.clone();
        let token = access_token.to_owned();
        tokio::spawn(async move {
            if let Err(error) = provider.revoke(&token).await {
                tracing::warn!(%error, "could not revoke a grant we do not keep");
            }
        });
    }

    /// Stores connection-failed in the outbox (before the page is answered) and publishes it.
    async fn emit_failure(
        &self,
        state: &str,
        attempt: &PendingAttempt,
        reason: FailureReason,
        google_email: Option<&str>,
        message: String,
        missing_scopes: Vec<String>,
    ) {
        let mut event = Envelope::new(
            attempt.subaccount_id.clone(),
            attempt.correlation_id,
            ConnectionFailed {
                user_email: Some(attempt.user_email.to_string()),
                google_email: google_email.map(str::to_owned),
                reason,
                message,
                missing_scopes,
            },
        );
        event.id = event_id(state, attempt, ConnectionFailed::TYPE);
        self.outbox.publish_durably(event).await;
    }
}

/// A UUIDv7 derived from the attempt: its timestamp is when the link was issued, its random
/// bits a hash of the state and the event type. The same attempt always yields the same id
/// (JetStream drops a second publish), different attempts never collide.
pub fn event_id(state: &str, attempt: &PendingAttempt, event_type: &str) -> Uuid {
    let millis = u64::try_from(attempt.issued_at.timestamp_millis()).unwrap_or_default();
    schemas::derived_event_id(
        "gcal-connector/callback-event/v1",
        &[event_type.as_bytes(), state.as_bytes()],
        millis,
    )
}

fn link_expired() -> Outcome {
    Outcome::failed(
        StatusCode::BAD_REQUEST,
        "link_expired",
        "This link has expired",
        "This connection link has expired or was already used. Please start again from the app to get a new one.",
    )
}

fn provider_failure(error: &ProviderError) -> Outcome {
    let status = if error.is_transient() {
        StatusCode::BAD_GATEWAY
    } else {
        StatusCode::BAD_REQUEST
    };
    Outcome::failed(
        status,
        "provider_error",
        "Google could not complete the connection",
        "Google Calendar was not connected: Google did not complete the sign-in. Please start again from the app.",
    )
}

fn storage_failure() -> Outcome {
    Outcome::failed(
        StatusCode::SERVICE_UNAVAILABLE,
        "storage_unavailable",
        "Please try again",
        "Google Calendar was not connected because we could not save the connection. Please start again from the app in a moment.",
    )
}

/// Provider-supplied text in logs and pages: short, printable.
fn short(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(100).collect()
}
