//! The metadata-worker: writes `connectorsubaccount.metadata` from connection events, with retries and a dead-letter stream.

pub mod config;
pub mod events;
pub mod handler;
pub mod metadata;
pub mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;

use schemas::events::WebhookDeliveryRequested;
use schemas::subjects::{
    METADATA_CONSUMER, Namespace, WEBHOOK_DELIVERY_CONSUMER, WEBHOOK_FAN_OUT_CONSUMER,
};
use service_kit::consumer::{self, Consumer, ConsumerSpec, Fairness};
use service_kit::http::Listen;
use service_kit::{CancellationToken, Infrastructure, StartupError};

pub use config::MetadataWorkerConfig;

use crate::events::ConnectionEvents;
use crate::handler::ConnectionEventHandler;
use crate::webhooks::WebhookConfig;
use crate::webhooks::delivery::DeliveryHandler;
use crate::webhooks::fan_out::FanOut;
use crate::webhooks::retry_cap::RetryCap;

/// How long JetStream waits for an ack before redelivering; the runner signals progress while
/// a write is being retried.
const ACK_WAIT: Duration = Duration::from_secs(30);

/// The name in logs, metrics, the NATS connection and durable consumer names.
pub const SERVICE: &str = "metadata-worker";

/// What the `metadata-worker` binary does: reads its settings from the environment, runs until SIGTERM or
/// SIGINT, and turns a start-up failure into a message and an exit code
/// ([`service_kit::service::main`]). The chaos run (tests/tests/chaos.rs) starts its replicas
/// through this too.
pub async fn main_from_env() -> std::process::ExitCode {
    service_kit::service::main(
        SERVICE,
        |config: MetadataWorkerConfig, shutdown| async move {
            let listen = Listen::at("METADATA_WORKER_HEALTH_ADDR", config.health_addr, false);
            run(config, listen, shutdown).await
        },
    )
    .await
}

/// Runs the metadata-worker until `shutdown` is cancelled: provisions the streams it uses, serves
/// health and metrics on `listen` (bound once everything is connected), then drains the NATS connection.
pub async fn run(
    config: MetadataWorkerConfig,
    listen: impl Into<Listen>,
    shutdown: CancellationToken,
) -> Result<(), StartupError> {
    let infra = Infrastructure::connect(&config.common, SERVICE, &shutdown).await?;
    infra.ensure_streams(&config.common).await?;
    let spec = consumer_spec(&config, &infra.namespace);
    let consumer = infra
        .ensure_consumer(&spec, config.common.startup_timeout)
        .await?;
    let fan_out = FanOut {
        infra: infra.clone(),
        endpoints: Arc::default(),
    };
    let handler = Arc::new(ConnectionEventHandler::new(
        infra.clone(),
        fan_out.clone(),
        config.missing_connector_deliveries,
        config.write_attempts,
    ));
    let mut consumers = vec![Consumer::new::<ConnectionEvents, _>(
        consumer, spec, handler,
    )];
    consumers.extend(webhook_consumers(&config, &infra, fan_out).await?);
    // Bound only now, with the consumers in place: until then a probe is refused at once
    // rather than left waiting in the backlog of a process that cannot answer yet.
    let listener = listen.into().bind().await?;
    let served = consumer::consume_all_and_serve(
        SERVICE,
        &infra,
        listener,
        consumers,
        shutdown,
        config.common.shutdown_grace,
    )
    .await;
    infra.close().await;
    served
}

/// The durable consumer's settings: connection-succeeded and connection-failed of every
/// subaccount.
fn consumer_spec(config: &MetadataWorkerConfig, ns: &Namespace) -> ConsumerSpec {
    ConsumerSpec {
        durable: METADATA_CONSUMER,
        filter_subject: ns.connection_events_filter(),
        ack_wait: ACK_WAIT,
        max_deliver: config.max_deliver,
        // Bounded across replicas: what is handed out but not yet acked.
        max_ack_pending: (config.concurrency as i64 * 8).max(256),
        concurrency: config.concurrency,
        retry_delays: config.retry_delays.clone(),
    }
}

/// The webhook delivery consumer (see [`webhooks`]), which reads the requests the metadata
/// writer's fan-out publishes, and the retired `webhook-fan-out` consumer while a deployment
/// still has it.
async fn webhook_consumers(
    config: &MetadataWorkerConfig,
    infra: &Infrastructure,
    fan_out: FanOut,
) -> Result<Vec<Consumer>, StartupError> {
    let webhooks = &config.webhooks;
    let ns = &infra.namespace;
    let (delivery_spec, delivery_fairness) = delivery_spec(webhooks, ns);
    let delivery = infra
        .ensure_consumer(&delivery_spec, config.common.startup_timeout)
        .await?;
    let retries = RetryCap::new(
        infra.redis.clone(),
        infra.keys.clone(),
        webhooks.max_retrying_per_tenant,
        delivery_spec.clone(),
    );
    let deliverer =
        DeliveryHandler::new(infra.clone(), webhooks.clone(), retries).map_err(|e| {
            StartupError::Misconfigured {
                setting: "WEBHOOK_TIMEOUT",
                cause: format!("cannot build the webhook HTTP client: {e}"),
            }
        })?;
    let mut consumers = vec![
        // Every tenant's receivers share the POST slots: one tenant's burst or slow receivers
        // must not hold back everyone else's webhooks.
        Consumer::fair::<WebhookDeliveryRequested, _>(
            delivery,
            delivery_spec,
            delivery_fairness,
            Arc::new(deliverer),
        ),
    ];
    if let Some(retired) = retired_fan_out(infra).await {
        let spec = ConsumerSpec {
            durable: WEBHOOK_FAN_OUT_CONSUMER,
            ..consumer_spec(config, ns)
        };
        consumers.push(Consumer::new::<ConnectionEvents, _>(
            retired,
            spec,
            Arc::new(fan_out),
        ));
    }
    Ok(consumers)
}

/// The `webhook-fan-out` consumer of the versions that announced events to webhooks from a
/// durable consumer of their own, if it still exists: it may hold events the metadata writer
/// acknowledged before the upgrade and it did not announce yet, so it is served (never
/// created) until an operator deletes it. Announcing an event twice requests nothing twice.
async fn retired_fan_out(infra: &Infrastructure) -> Option<jetstream::consumer::PullConsumer> {
    let stream = infra
        .jetstream
        .get_stream(infra.namespace.events_stream())
        .await
        .ok()?;
    let consumer = stream
        .get_consumer::<jetstream::consumer::pull::Config>(WEBHOOK_FAN_OUT_CONSUMER)
        .await
        .ok()?;
    tracing::warn!(
        consumer = WEBHOOK_FAN_OUT_CONSUMER,
        "the retired webhook fan-out consumer still exists and is served; once its pending count is 0 on every replica's version, delete it (operator guide, \"Upgrading\")"
    );
    Some(consumer)
}

/// The webhook delivery consumer's settings, and how it shares the POST slots between tenants.
fn delivery_spec(webhooks: &WebhookConfig, ns: &Namespace) -> (ConsumerSpec, Fairness) {
    let fairness = webhooks.fairness();
    let spec = ConsumerSpec {
        durable: WEBHOOK_DELIVERY_CONSUMER,
        filter_subject: ns.event_filter::<WebhookDeliveryRequested>(),
        // Progress is signalled while a POST runs; this only bounds a hung process.
        ack_wait: webhooks.timeout + ACK_WAIT,
        max_deliver: webhooks.max_deliver,
        // Room for the webhooks waiting for a retry, plus every replica's buffer.
        max_ack_pending: webhooks.max_ack_pending(),
        concurrency: webhooks.concurrency,
        retry_delays: webhooks.retry_delays.clone(),
    };
    (spec, fairness)
}

#[cfg(test)]
mod tests {
    use super::*;
    use service_kit::{Env, ServiceConfig};

    fn config(
        pairs: &[(&str, &str)],
    ) -> Result<MetadataWorkerConfig, service_kit::config::ConfigError> {
        MetadataWorkerConfig::from_env(Env::from_pairs(pairs.iter().copied()))
    }

    #[test]
    fn webhook_deliveries_are_fair_by_default_and_the_pending_limit_holds_the_buffers() {
        let config = config(&[]).expect("defaults are valid");
        let (spec, fairness) =
            delivery_spec(&config.webhooks, &Namespace::new("gcal").expect("ns"));
        assert_eq!(fairness.per_tenant_concurrency, 4);
        assert_eq!(fairness.buffer, 1000);
        assert_eq!(fairness.check(&spec), Ok(()));
        assert_eq!(spec.max_ack_pending, 256 + 4 * 1000);
    }

    #[test]
    fn the_per_tenant_retry_cap_is_at_least_one_and_at_most_half_the_pending_limit() {
        let defaults = config(&[]).expect("defaults are valid");
        assert_eq!(defaults.webhooks.max_retrying_per_tenant, 100);
        // Half of 256 + 4 × 1000.
        for raw in ["0", "-1", "lots", "2129"] {
            let err = config(&[("WEBHOOK_MAX_RETRYING_PER_TENANT", raw)]).expect_err(raw);
            assert!(
                err.problems
                    .iter()
                    .any(|p| p.setting == "WEBHOOK_MAX_RETRYING_PER_TENANT"),
                "{raw}: {err}"
            );
        }
        let err = config(&[("WEBHOOK_MAX_RETRYING_PER_TENANT", "0")]).expect_err("0");
        assert!(
            err.to_string().contains("must be between 1 and 2128"),
            "the error says what is allowed: {err}"
        );
        // The bound follows the pending limit: 256 + 4 × 16 with a buffer of 16.
        config(&[
            ("WEBHOOK_BUFFER", "16"),
            ("WEBHOOK_MAX_RETRYING_PER_TENANT", "161"),
        ])
        .expect_err("above half of 320");
        for raw in ["1", "2128"] {
            config(&[("WEBHOOK_MAX_RETRYING_PER_TENANT", raw)]).expect(raw);
        }
    }

    #[test]
    fn webhook_fairness_settings_must_fit_the_concurrency() {
        for (pairs, setting) in [
            (
                vec![("WEBHOOK_PER_TENANT_CONCURRENCY", "0")],
                "WEBHOOK_PER_TENANT_CONCURRENCY",
            ),
            (
                vec![("WEBHOOK_PER_TENANT_CONCURRENCY", "17")],
                "WEBHOOK_PER_TENANT_CONCURRENCY",
            ),
            (vec![("WEBHOOK_BUFFER", "15")], "WEBHOOK_BUFFER"),
            (vec![("WEBHOOK_BUFFER", "lots")], "WEBHOOK_BUFFER"),
        ] {
            let err = config(&pairs).expect_err("refused");
            assert!(
                err.problems.iter().any(|p| p.setting == setting),
                "{pairs:?}: {err}"
            );
        }
        config(&[
            ("WEBHOOK_CONCURRENCY", "2"),
            ("WEBHOOK_PER_TENANT_CONCURRENCY", "2"),
            ("WEBHOOK_BUFFER", "2"),
        ])
        .expect("a cap equal to the concurrency and the smallest buffer are valid");
    }
}
