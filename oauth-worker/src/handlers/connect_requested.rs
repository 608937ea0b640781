//! Answers connect-requested: issue an authorization link, remember the attempt, and — when
//! asked — queue the email, replying only once JetStream (or, while JetStream cannot take it,
//! the outbox in MongoDB) has the email job. The caller gets
//! the provider's URL (the spec's `authUrl`); the email links to the consent page, which says
//! who asks and leads on to the same URL.
//!
//! When the request carries `Gcal-Link-Settings-Wanted`, an `Issued` reply also carries the
//! [`LinkSettings`]: with them the api issues the links it returns (`sendEmail: false`) itself,
//! through the same [`service_kit::auth_link`] and [`service_kit::oauth_state`] code, until they
//! are `LINK_SETTINGS_TTL` old. The emailed links stay here, with the outbox.

use chrono::Utc;
use schemas::events::{
    AuthLinkIssued, ConnectRejectionCode, ConnectRequested, ConnectRequestedReply, LinkSettings,
};
use schemas::subjects::headers;
use schemas::{DisplayName, Envelope, SubaccountId};
use service_kit::Infrastructure;

use crate::authorization::ProviderClient;
use crate::outbox::Outbox;
use service_kit::auth_link::issue_link;
use service_kit::oauth_state::{PendingAttempt, Put, StateStore};

/// How long the email job's publish may wait for JetStream before the outbox keeps it: well
/// inside the api's wait for this reply (`CONNECT_REQUEST_TIMEOUT`, 5 s by default).
const EMAIL_PUBLISH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

#[derive(Debug)]
pub struct ConnectRequestedHandler {
    pub provider: ProviderClient,
    /// `OAUTH_PROVIDER_PROFILE`: how the link asks for offline access.
    pub profile: crate::config::ProviderProfile,
    pub scopes: Vec<String>,
    pub states: StateStore,
    pub infra: Infrastructure,
    /// `PRODUCT_NAME`, carried to the email.
    pub product_name: DisplayName,
    /// The consent page (next to the callback); the email links to it with the state.
    pub consent_page: url::Url,
    /// Keeps the email job when JetStream cannot take it at once.
    pub outbox: Outbox,
    /// Handed to the api when it asks (`Gcal-Link-Settings-Wanted`).
    pub link_settings: LinkSettings,
}

impl crate::rpc::Responder for ConnectRequestedHandler {
    async fn respond(&self, request: &[u8], with: Option<&async_nats::HeaderMap>) -> Vec<u8> {
        let mut reply = self.handle(request).await;
        let wanted = with.is_some_and(|h| h.get(headers::LINK_SETTINGS_WANTED).is_some());
        if let (true, ConnectRequestedReply::Issued { link_settings, .. }) = (wanted, &mut reply) {
            *link_settings = Some(self.link_settings.clone());
        }
        serde_json::to_vec(&reply).expect("replies always serialize")
    }
}

impl ConnectRequestedHandler {
    /// The reply for one request body. Never fails: every problem becomes a `Rejected` reply
    /// (or `emailSent: false`), so the api always gets an answer it can map.
    pub async fn handle(&self, body: &[u8]) -> ConnectRequestedReply {
        let request = match Envelope::<ConnectRequested>::decode(body) {
            Ok(request) => request,
            Err(e) => {
                tracing::error!(error = %e, "undecodable connect request");
                return ConnectRequestedReply::Rejected {
                    code: ConnectRejectionCode::InvalidRequest,
                    message: format!("connect request not understood: {e}"),
                };
            }
        };
        let span = tracing::info_span!("connect_requested", correlation_id = %request.correlation_id,
            subaccount_id = %request.subaccount_id);
        tracing::Instrument::instrument(self.issue(request), span).await
    }

    async fn issue(&self, request: Envelope<ConnectRequested>) -> ConnectRequestedReply {
        let started = std::time::Instant::now();
        let user_email = request.payload.user_email.clone();
        let link = issue_link(
            &self.provider,
            self.profile,
            &self.scopes,
            user_email.as_str(),
        );
        let issued_at = Utc::now();
        let expires_at = issued_at + self.states.ttl();
        let attempt = PendingAttempt {
            subaccount_id: request.subaccount_id.clone(),
            user_email: user_email.clone(),
            pkce_verifier: link.pkce_verifier,
            correlation_id: request.correlation_id,
            issued_at,
            traceparent: service_kit::telemetry::current_traceparent(),
            expires_at: Some(expires_at),
            auth_url: Some(link.url.to_string()),
            tenant_name: request.payload.tenant_name.clone(),
        };
        let stored = self
            .states
            .put(&link.state, &attempt, request.payload.send_email)
            .await;
        // Building the link (state, PKCE pair, URL) and remembering the attempt in Redis.
        metrics::histogram!("auth_url_duration_seconds").record(started.elapsed().as_secs_f64());
        match stored {
            Ok(Put::Stored) => {}
            Ok(Put::Limited { limit, retry_after }) => {
                tracing::info!(
                    limit = limit.name(),
                    ?retry_after,
                    "connect request over a limit; no link issued"
                );
                metrics::counter!("connect_requests_total", "outcome" => "rate_limited", "issuer" => "oauth-worker")
                    .increment(1);
                return ConnectRequestedReply::RateLimited {
                    limit,
                    retry_after_ms: u64::try_from(retry_after.as_millis()).unwrap_or(u64::MAX),
                    message: self.states.limits().describe(limit),
                };
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot store the OAuth state; no link issued");
                metrics::counter!("connect_requests_total", "outcome" => "state_store_unavailable", "issuer" => "oauth-worker")
                    .increment(1);
                return ConnectRequestedReply::Rejected {
                    code: ConnectRejectionCode::StateStoreUnavailable,
                    message: "the state store (Redis) is unavailable; try again shortly".into(),
                };
            }
        }
        let auth_url = link.url.to_string();
        let email_sent = request.payload.send_email
            && self
                .queue_email(
                    &request.subaccount_id,
                    request.correlation_id,
                    AuthLinkIssued {
                        user_email,
                        auth_url: crate::consent_page::link(&self.consent_page, &link.state)
                            .to_string(),
                        expires_at,
                        issued_at: Some(issued_at),
                        product_name: Some(self.product_name.clone()),
                        tenant_name: request.payload.tenant_name.clone(),
                        scopes: self.scopes.clone(),
                    },
                )
                .await;
        let outcome = match (request.payload.send_email, email_sent) {
            (false, _) => "issued",
            (true, true) => "issued_and_queued",
            (true, false) => "issued_email_failed",
        };
        metrics::counter!("connect_requests_total", "outcome" => outcome, "issuer" => "oauth-worker")
            .increment(1);
        tracing::info!(email_sent, %expires_at, "authorization link issued");
        ConnectRequestedReply::Issued {
            auth_url,
            expires_at,
            email_sent,
            link_settings: None,
        }
    }

    /// Publishes auth-link-issued and waits for JetStream's ack; when JetStream cannot take it
    /// now (a stream electing a new leader after a node died answers "no responders" for a few
    /// seconds), keeps it in the outbox, which publishes it as soon as JetStream can. `true`
    /// once either holds the email job. `false` when neither does, or when a stream bound
    /// refused it (retrying would not help): the link is still valid and is returned to the
    /// caller, who can pass it on.
    async fn queue_email(
        &self,
        subaccount: &SubaccountId,
        correlation_id: uuid::Uuid,
        payload: AuthLinkIssued,
    ) -> bool {
        let event = Envelope::new(subaccount.clone(), correlation_id, payload);
        let published = tokio::time::timeout(
            EMAIL_PUBLISH_TIMEOUT,
            service_kit::nats::publish_event(&self.infra.jetstream, &self.infra.namespace, &event),
        )
        .await;
        let cause = match published {
            Ok(Ok(_)) => return true,
            Ok(Err(e)) if e.refused_by.is_some() => {
                tracing::error!(error = %e, "email job refused by a stream bound; replying emailSent=false");
                return false;
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("JetStream did not answer within {EMAIL_PUBLISH_TIMEOUT:?}"),
        };
        match self.outbox.keep(&event).await {
            Ok(()) => {
                tracing::warn!(%cause, event_id = %event.id,
                    "email job kept in the outbox; it is published once JetStream takes it");
                metrics::counter!("email_jobs_deferred_total").increment(1);
                true
            }
            Err(error) => {
                tracing::error!(%cause, %error,
                    "email job neither accepted by JetStream nor kept in the outbox; replying emailSent=false");
                false
            }
        }
    }
}
