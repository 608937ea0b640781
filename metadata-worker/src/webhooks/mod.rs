//! Signed webhook notifications, in this worker (the connection events already flow here; a
//! separate worker would only add a process to run):
//!
//! - [`fan_out`]: the metadata writer, for each connection event it handles, publishes one
//!   `webhook-delivery-requested` event per enabled endpoint of the subaccount subscribed to
//!   its type (`Nats-Msg-Id` `<event id>.<endpoint id>`, so a redelivered event requests
//!   nothing twice), taking the endpoints from the [`registry`] held in memory;
//! - [`delivery`] (`webhook-delivery`) POSTs each requested webhook, signed ([`signature`]),
//!   to a target the policy allows (`service_kit::webhook::TargetPolicy`, with a DNS resolver
//!   that drops refused addresses), records every attempt in the tenant's
//!   `webhookdeliveries` ([`store`]), and leaves retries (jittered `WEBHOOK_RETRY_DELAYS` up to
//!   `WEBHOOK_MAX_DELIVER`) and the dead-letter stream to the shared consumer runner — except
//!   that a tenant's failed deliveries beyond `WEBHOOK_MAX_RETRYING_PER_TENANT` awaiting a
//!   retry are parked at once ([`retry_cap`]).

pub mod delivery;
pub mod fan_out;
pub mod registry;
pub mod retry_cap;
pub mod signature;
pub mod store;

use std::time::Duration;

use service_kit::config::{Env, HumanDuration, RetryDelays};
use service_kit::consumer::{Fairness, FairnessSettings};
use service_kit::webhook::{TargetPolicy, WebhookSecrets};

/// The webhook settings of the metadata-worker.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Which targets may be POSTed to (checked again at every delivery).
    pub policy: TargetPolicy,
    /// Decrypts the endpoints' signing secrets.
    pub secrets: WebhookSecrets,
    /// Bound on one POST (connect, send, answer).
    pub timeout: Duration,
    /// Deliveries of one webhook before it is parked in the dead-letter stream.
    pub max_deliver: i64,
    /// Redelivery delays after the 1st, 2nd, ... failed attempt; the last repeats.
    pub retry_delays: Vec<Duration>,
    /// Webhooks one replica POSTs at the same time.
    pub concurrency: usize,
    /// Webhooks of one subaccount one replica POSTs at the same time: the per-tenant cap on
    /// deliveries in flight, so one tenant's slow receivers or burst leave the other slots free.
    pub per_tenant_concurrency: usize,
    /// Delivery requests one replica pulls ahead and holds (waiting and in flight): how far it
    /// looks past one tenant's burst for other tenants' webhooks.
    pub buffer: usize,
    /// How long an attempt stays in the delivery log (a TTL index on `attemptedAt`). The log
    /// is also what keeps a replayed event from being delivered twice, so it must outlive
    /// the replay window (`EVENTS_MAX_AGE`).
    pub delivery_log_ttl: Duration,
    /// Webhooks of one subaccount that may wait for a retry at once, across replicas: the
    /// per-tenant cap on the consumer's pending limit (a NAKed message holds a slot of it until
    /// it is redelivered), so one tenant's failing receivers cannot stop everyone's webhooks.
    pub max_retrying_per_tenant: u32,
}

impl WebhookConfig {
    pub fn from_env(env: &mut Env) -> Self {
        let policy = TargetPolicy::from_env(env);
        let secrets = WebhookSecrets::from_env(env);
        let timeout: Duration = env
            .value::<HumanDuration>(
                "WEBHOOK_TIMEOUT",
                "10s",
                "Bound on one webhook POST (connecting, sending and the receiver's answer); slower counts as a failed attempt.",
            )
            .into();
        if !(Duration::from_millis(100)..=Duration::from_secs(60)).contains(&timeout) {
            env.problem("WEBHOOK_TIMEOUT", "must be between 100ms and 60s");
        }
        let max_deliver: i64 = env.value(
            "WEBHOOK_MAX_DELIVER",
            "16",
            "Attempts to deliver one webhook before it is parked in the dead-letter stream (with the default delays, 16 span about 11 hours).",
        );
        if !(2..=1000).contains(&max_deliver) {
            env.problem("WEBHOOK_MAX_DELIVER", "must be between 2 and 1000");
        }
        let retry_delays: RetryDelays = env.value(
            "WEBHOOK_RETRY_DELAYS",
            "10s,1m,5m,15m,30m,1h",
            "Delays before a failed webhook is tried again: after the 1st, 2nd, ... failure; the last repeats. Each is spread by ±20 %.",
        );
        let concurrency: usize = env.value(
            "WEBHOOK_CONCURRENCY",
            "16",
            "Webhooks one metadata-worker replica POSTs at the same time.",
        );
        if !(1..=1024).contains(&concurrency) {
            env.problem("WEBHOOK_CONCURRENCY", "must be between 1 and 1024");
        }
        let Fairness {
            per_tenant_concurrency,
            buffer,
        } = Fairness::read(
            env,
            &FairnessSettings {
                concurrency: "WEBHOOK_CONCURRENCY",
                per_tenant: "WEBHOOK_PER_TENANT_CONCURRENCY",
                per_tenant_default: "4",
                per_tenant_description: "Webhooks of one subaccount one metadata-worker replica POSTs at the same time (1 to WEBHOOK_CONCURRENCY), so one tenant's slow receivers or burst cannot take every slot.",
                buffer: "WEBHOOK_BUFFER",
                buffer_default: "1000",
                buffer_description: "Webhook delivery requests one metadata-worker replica pulls ahead and holds, so another tenant's webhook is found behind a burst (WEBHOOK_CONCURRENCY to 100000).",
            },
            concurrency,
        );
        let delivery_log_ttl = env
            .value::<HumanDuration>(
                "WEBHOOK_DELIVERY_LOG_TTL",
                "35d",
                "How long a webhook delivery attempt stays in the endpoint's delivery log (deleted by a TTL index). At least EVENTS_MAX_AGE: the log also keeps a replayed event from being delivered twice.",
            )
            .into();
        let max_retrying_per_tenant: u32 = env.value(
            "WEBHOOK_MAX_RETRYING_PER_TENANT",
            "100",
            "Webhook deliveries of one subaccount that may wait for a retry at once, across replicas. A failed delivery beyond it is parked in the dead-letter stream at once (replay with gcal-ops dlq replay --consumer webhook-delivery) instead of waiting, so one tenant's failing receivers cannot fill the consumer's pending limit and stop every tenant's webhooks (1 to half that limit).",
        );
        let config = Self {
            policy,
            secrets,
            timeout,
            max_deliver,
            retry_delays: retry_delays.0,
            concurrency,
            per_tenant_concurrency,
            buffer,
            delivery_log_ttl,
            max_retrying_per_tenant,
        };
        let most = config.max_ack_pending() / 2;
        if max_retrying_per_tenant == 0 || i64::from(max_retrying_per_tenant) > most {
            env.problem(
                "WEBHOOK_MAX_RETRYING_PER_TENANT",
                format!(
                    "must be between 1 and {most}: half the webhook-delivery consumer's pending \
                     limit with these WEBHOOK_CONCURRENCY and WEBHOOK_BUFFER, so that one \
                     tenant's retries leave the rest to the others"
                ),
            );
        }
        config
    }

    /// How the delivery consumer shares its POST slots between tenants.
    pub fn fairness(&self) -> Fairness {
        Fairness {
            per_tenant_concurrency: self.per_tenant_concurrency,
            buffer: self.buffer,
        }
    }

    /// The delivery consumer's `max_ack_pending`: room for webhooks waiting for a retry
    /// (`max(256, 8 × WEBHOOK_CONCURRENCY)`), plus every replica's buffer.
    pub fn max_ack_pending(&self) -> i64 {
        let concurrency = i64::try_from(self.concurrency).unwrap_or(i64::MAX);
        self.fairness()
            .max_ack_pending(concurrency.saturating_mul(8).max(256))
    }
}
