//! `webhook-delivery`: POSTs one requested webhook, signed, and records the attempt.
//!
//! - The endpoint is gone or disabled → nothing to do (acked, logged).
//! - Already delivered to this endpoint (a redelivery after a lost ack, or a replay) → acked
//!   without sending it again.
//! - 2xx → delivered. 410 Gone → the endpoint is disabled (`enabled: false`, `disabledAt`,
//!   `disabledReason`), nothing more is sent to it.
//! - Anything else (another status, a timeout, a refused connection, a target the policy now
//!   refuses at DNS) → retryable: the runner redelivers after the jittered
//!   `WEBHOOK_RETRY_DELAYS` and, after `WEBHOOK_MAX_DELIVER` attempts, parks it in the
//!   dead-letter stream (`gcal-ops dlq replay` sends it again).
//! - Unless its subaccount already has `WEBHOOK_MAX_RETRYING_PER_TENANT` deliveries awaiting a
//!   retry ([`retry_cap`](super::retry_cap)): then it is parked at once (a permanent error), so
//!   one tenant's failing receivers cannot fill the consumer's pending limit. If Redis cannot
//!   say, it is retried as without the cap: an outage of Redis must not dead-letter webhooks.
//!   A redelivered webhook leaves its tenant's count whatever the outcome of this attempt.
//!   While the tenant is at its cap, its new webhooks are parked the same way without being
//!   POSTed at all (a receiver that times out would otherwise hold a slot for
//!   `WEBHOOK_TIMEOUT` per webhook of the backlog); an operator's replay is always POSTed.
//!
//! Redirects are not followed, no proxy is used, and the client's resolver only returns
//! addresses the target policy allows. The secret is decrypted for signing only and never
//! logged.

use std::time::{Duration, Instant};

use reqwest::header::{CONTENT_TYPE, USER_AGENT};
use schemas::Envelope;
use schemas::documents::webhook::{DeliveryOutcome, WebhookDelivery};
use schemas::events::WebhookDeliveryRequested;
use serde_json::json;
use service_kit::Infrastructure;
use service_kit::consumer::{Delivery, EventHandler, HandlerError};

use super::retry_cap::{self, RetryCap, Wait};
use super::{WebhookConfig, signature, store};

#[derive(Debug)]
pub struct DeliveryHandler {
    infra: Infrastructure,
    config: WebhookConfig,
    client: reqwest::Client,
    retries: RetryCap,
}

impl DeliveryHandler {
    pub fn new(
        infra: Infrastructure,
        config: WebhookConfig,
        retries: RetryCap,
    ) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(config.policy.resolver())
            .pool_idle_timeout(Duration::from_secs(30))
            .build()?;
        Ok(Self {
            infra,
            config,
            client,
            retries,
        })
    }
}

/// How a delivery attempt ended, for the message.
enum Settled {
    /// Nothing more to do: ack.
    Done,
    /// Failed, and counted as awaiting its retry (or uncounted, Redis being unavailable): NAK
    /// it for a later redelivery.
    WaitsForRetry(String),
    /// Failed on the last allowed attempt: the runner parks it.
    LastAttemptFailed(String),
}

/// What one attempt came to.
struct Attempt {
    status: Option<u16>,
    error: Option<String>,
    elapsed: Duration,
}

impl EventHandler<WebhookDeliveryRequested> for DeliveryHandler {
    async fn handle(
        &self,
        event: Envelope<WebhookDeliveryRequested>,
        delivery: Delivery,
    ) -> Result<(), HandlerError> {
        let settled = self.deliver(&event, delivery).await;
        // A redelivery may have been awaiting its retry: this attempt ends that, whatever its
        // outcome (one that waits again was kept in place by the cap's script).
        if delivery.delivered > 1
            && !matches!(settled, Ok(Settled::WaitsForRetry(_)))
            && let Err(e) = self.retries.attempted(&event.subaccount_id, delivery).await
        {
            // It stops counting when its expiry passes.
            tracing::warn!(error = %e, "could not take the webhook out of its tenant's retry count");
        }
        match settled? {
            Settled::Done => Ok(()),
            Settled::WaitsForRetry(reason) | Settled::LastAttemptFailed(reason) => {
                Err(HandlerError::Retryable(reason))
            }
        }
    }
}

impl DeliveryHandler {
    async fn deliver(
        &self,
        event: &Envelope<WebhookDeliveryRequested>,
        delivery: Delivery,
    ) -> Result<Settled, HandlerError> {
        let subaccount = &event.subaccount_id;
        let request = &event.payload;
        let announced = &request.event;
        let event_id = announced.id.to_string();
        let mongo = &self.infra.mongo;
        let retryable = |doing: &str, e: mongodb::error::Error| {
            HandlerError::Retryable(format!("{doing}: {e}"))
        };
        let endpoint = store::endpoint(mongo, subaccount, &request.endpoint_id)
            .await
            .map_err(|e| retryable("reading the webhook endpoint", e))?;
        let Some(endpoint) = endpoint.filter(|e| e.enabled) else {
            tracing::info!(endpoint_id = %request.endpoint_id, "webhook endpoint deleted or disabled; not delivering");
            count("skipped");
            return Ok(Settled::Done);
        };
        if store::already_delivered(mongo, subaccount, &endpoint.id, &event_id)
            .await
            .map_err(|e| retryable("reading the delivery log", e))?
        {
            tracing::info!(endpoint_id = %endpoint.id, "webhook already delivered; not sending it again");
            return Ok(Settled::Done);
        }
        // A first attempt of a tenant already at its retry cap is set aside without a POST:
        // against receivers that time out, one POST each would still let the tenant's backlog
        // hold the consumer far longer than others can wait. An operator's replay is sent: it
        // is how parked webhooks get delivered once the receiver works.
        let held_back = if delivery.delivered == 1 && !delivery.replayed {
            match self.retries.full(subaccount).await {
                Ok(full) => full,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot count the tenant's webhooks awaiting a retry; attempting this one");
                    service_kit::rate_limit::count_unavailable(retry_cap::LIMIT);
                    None
                }
            }
        } else {
            None
        };
        let secret = self
            .config
            .secrets
            .open(&endpoint.secret, subaccount.as_str(), &endpoint.id)
            .map_err(|e| {
                HandlerError::Permanent(format!(
                    "cannot decrypt the endpoint's signing secret: {e}"
                ))
            })?;
        let body = serde_json::to_vec(&json!({
            "id": announced.id,
            "type": announced.event_type,
            "createdAt": announced
                .occurred_at
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "subaccountId": announced.subaccount_id,
            "data": announced.payload,
        }))
        .map_err(|e| HandlerError::Permanent(format!("webhook body: {e}")))?;

        let attempt = match self.config.policy.check_url(&endpoint.url) {
            _ if held_back.is_some() => Attempt {
                status: None,
                error: Some("not attempted".to_owned()),
                elapsed: Duration::ZERO,
            },
            Err(refused) => Attempt {
                status: None,
                error: Some(refused.to_string()),
                elapsed: Duration::ZERO,
            },
            Ok(url) => {
                let timestamp = chrono::Utc::now().timestamp();
                let signed = signature::sign(&secret, timestamp, &body);
                drop(secret);
                let started = Instant::now();
                let sent = self
                    .client
                    .post(url)
                    .header(CONTENT_TYPE, "application/json")
                    .header(USER_AGENT, "gcal-connector-webhooks/1")
                    .header(signature::ID_HEADER, &event_id)
                    .header(signature::TIMESTAMP_HEADER, timestamp.to_string())
                    .header(signature::SIGNATURE_HEADER, signed)
                    .body(body)
                    .send()
                    .await;
                let elapsed = started.elapsed();
                metrics::histogram!("webhook_delivery_duration_seconds")
                    .record(elapsed.as_secs_f64());
                match sent {
                    Ok(response) => Attempt {
                        status: Some(response.status().as_u16()),
                        error: None,
                        elapsed,
                    },
                    Err(e) => Attempt {
                        status: None,
                        error: Some(describe(&e, self.config.timeout)),
                        elapsed,
                    },
                }
            }
        };

        let why = match (attempt.status, &attempt.error) {
            (Some(status), _) => format!("the receiver answered HTTP {status}"),
            (None, Some(error)) => error.clone(),
            (None, None) => "unknown failure".to_owned(),
        };
        let mut outcome = match attempt.status {
            Some(200..=299) => DeliveryOutcome::Delivered,
            Some(410) => DeliveryOutcome::EndpointDisabled,
            _ if delivery.is_last_attempt() => DeliveryOutcome::Failed,
            _ => DeliveryOutcome::Retrying,
        };
        // Room to wait for the retry, or parked now (see `retry_cap`).
        let mut over_cap = held_back;
        if over_cap.is_some() {
            outcome = DeliveryOutcome::Failed;
        } else if outcome == DeliveryOutcome::Retrying {
            match self.retries.wait(subaccount, delivery).await {
                Ok(Wait::Admitted { .. }) => {}
                Ok(Wait::Full { awaiting }) => {
                    outcome = DeliveryOutcome::Failed;
                    over_cap = Some(awaiting);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot count the tenant's webhooks awaiting a retry; retrying this one uncapped");
                    service_kit::rate_limit::count_unavailable(retry_cap::LIMIT);
                }
            }
        }
        if outcome == DeliveryOutcome::EndpointDisabled
            && let Err(e) = store::disable(
                mongo,
                subaccount,
                &endpoint.id,
                "the receiver answered 410 Gone",
            )
            .await
        {
            return Err(retryable("disabling the webhook endpoint", e));
        }
        if outcome == DeliveryOutcome::EndpointDisabled {
            service_kit::webhook::endpoints_changed(
                &self.infra.redis,
                &self.infra.keys,
                subaccount,
            )
            .await;
        }
        let record = WebhookDelivery {
            id: uuid::Uuid::now_v7().to_string(),
            endpoint_id: endpoint.id.clone(),
            subaccount_id: subaccount.to_string(),
            event_id: event_id.clone(),
            event_type: announced.event_type.clone(),
            attempt: delivery.delivered,
            attempted_at: bson::DateTime::now(),
            status_code: attempt.status.map(i32::from),
            error: match over_cap {
                // The receiver's owner reads the log: say why it was not retried.
                Some(awaiting) => Some(format!(
                    "{why}; not retried: {awaiting} webhooks of this subaccount already await a \
                     retry, so this one was set aside for an operator to send again"
                )),
                None => attempt.error.clone(),
            },
            duration_ms: i64::try_from(attempt.elapsed.as_millis()).unwrap_or(i64::MAX),
            outcome,
        };
        if let Err(e) =
            store::record(mongo, subaccount, &record, self.config.delivery_log_ttl).await
        {
            // The log is for people; it never decides whether a webhook is sent again.
            tracing::warn!(error = %e, "could not record the webhook attempt");
        }
        let not_delivered = format!("webhook to endpoint {} not delivered: {why}", endpoint.id);
        if let Some(awaiting) = over_cap {
            count("parked_retry_cap");
            let reason = format!(
                "tenant has {awaiting} webhook deliveries awaiting retry; parked to keep other \
                 tenants' deliveries flowing (replay with gcal-ops dlq replay --consumer {})",
                schemas::subjects::WEBHOOK_DELIVERY_CONSUMER
            );
            tracing::warn!(endpoint_id = %endpoint.id, failure = %why, attempt = delivery.delivered, %reason, "webhook not delivered; parked");
            return Err(HandlerError::Permanent(format!(
                "{not_delivered}; {reason}"
            )));
        }
        count(outcome.as_str());
        match outcome {
            DeliveryOutcome::Delivered => {
                tracing::info!(endpoint_id = %endpoint.id, status = attempt.status, "webhook delivered");
                Ok(Settled::Done)
            }
            DeliveryOutcome::EndpointDisabled => {
                tracing::warn!(endpoint_id = %endpoint.id, "receiver answered 410 Gone; webhook endpoint disabled");
                Ok(Settled::Done)
            }
            DeliveryOutcome::Retrying => {
                tracing::warn!(endpoint_id = %endpoint.id, reason = %why, attempt = delivery.delivered, "webhook not delivered; will retry");
                Ok(Settled::WaitsForRetry(not_delivered))
            }
            DeliveryOutcome::Failed => {
                tracing::warn!(endpoint_id = %endpoint.id, reason = %why, attempt = delivery.delivered, "webhook not delivered on its last attempt");
                Ok(Settled::LastAttemptFailed(not_delivered))
            }
        }
    }
}

/// A transport error, without its URL (a target URL may carry a token in its query).
fn describe(error: &reqwest::Error, timeout: Duration) -> String {
    if error.is_timeout() {
        return format!("no answer within {}", humantime::format_duration(timeout));
    }
    let mut text = if error.is_connect() {
        "could not connect".to_owned()
    } else {
        "request failed".to_owned()
    };
    // The innermost cause says why (refused, a refused address from the policy resolver, ...).
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(error);
    let mut last = None;
    while let Some(cause) = source {
        last = Some(cause.to_string());
        source = cause.source();
    }
    if let Some(cause) = last {
        text.push_str(": ");
        text.push_str(&cause);
    }
    text
}

fn count(outcome: &'static str) {
    metrics::counter!("webhook_deliveries_total", "outcome" => outcome).increment(1);
}
