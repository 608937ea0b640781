//! The metadata-worker: writes `connectorsubaccount.metadata` from connection events, with retries and a dead-letter stream.

pub mod config;
pub mod events;
pub mod handler;
pub mod metadata;
pub mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use schemas::events::WebhookDeliveryRequested;
use schemas::subjects::{
    METADATA_CONSUMER, Namespace, WEBHOOK_DELIVERY_CONSUMER, WEBHOOK_FAN_OUT_CONSUMER,
};
use service_kit::consumer::{self, Consumer, ConsumerSpec};
use service_kit::{CancellationToken, Infrastructure, StartupError};
use tokio::net::TcpListener;

pub use config::MetadataWorkerConfig;

use crate::events::ConnectionEvents;
use crate::handler::ConnectionEventHandler;
use crate::webhooks::delivery::DeliveryHandler;
use crate::webhooks::fan_out::FanOutHandler;

/// How long JetStream waits for an ack before redelivering; the runner signals progress while
/// a write is being retried.
const ACK_WAIT: Duration = Duration::from_secs(30);

/// The name in logs, metrics, the NATS connection and durable consumer names.
pub const SERVICE: &str = "metadata-worker";

/// Runs the metadata-worker until `shutdown` is cancelled: provisions the streams it uses, serves
/// health and metrics on `listener`, then drains the NATS connection.
pub async fn run(
    config: MetadataWorkerConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), StartupError> {
    let infra = Infrastructure::connect(&config.common, SERVICE, &shutdown).await?;
    infra.ensure_streams(&config.common).await?;
    let spec = consumer_spec(&config, &infra.namespace);
    let consumer = consumer::ensure_consumer(&infra.jetstream, &infra.namespace, &spec).await?;
    let handler = Arc::new(ConnectionEventHandler::new(
        infra.clone(),
        config.missing_connector_deliveries,
        config.write_attempts,
    ));
    let mut consumers = vec![Consumer::new::<ConnectionEvents, _>(
        consumer, spec, handler,
    )];
    consumers.extend(webhook_consumers(&config, &infra).await?);
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

/// The two webhook consumers (see [`webhooks`]): the fan-out reads the same connection events
/// as the metadata writer under its own durable name, the delivery reads the requests the
/// fan-out publishes.
async fn webhook_consumers(
    config: &MetadataWorkerConfig,
    infra: &Infrastructure,
) -> Result<Vec<Consumer>, StartupError> {
    let webhooks = &config.webhooks;
    if webhooks.secrets.uses_dev_key() {
        tracing::warn!(
            "WEBHOOK_SECRET_KEYS holds the public development key: stored webhook secrets are \
             readable by anyone with the database. Set your own key before real use."
        );
    }
    let ns = &infra.namespace;
    // The same events and retry settings as the metadata writer, under its own durable name.
    let fan_out_spec = ConsumerSpec {
        durable: WEBHOOK_FAN_OUT_CONSUMER,
        ..consumer_spec(config, ns)
    };
    let delivery_spec = ConsumerSpec {
        durable: WEBHOOK_DELIVERY_CONSUMER,
        filter_subject: ns.event_filter::<WebhookDeliveryRequested>(),
        // Progress is signalled while a POST runs; this only bounds a hung process.
        ack_wait: webhooks.timeout + ACK_WAIT,
        max_deliver: webhooks.max_deliver,
        max_ack_pending: (webhooks.concurrency as i64 * 8).max(256),
        concurrency: webhooks.concurrency,
        retry_delays: webhooks.retry_delays.clone(),
    };
    let fan_out = consumer::ensure_consumer(&infra.jetstream, ns, &fan_out_spec).await?;
    let delivery = consumer::ensure_consumer(&infra.jetstream, ns, &delivery_spec).await?;
    let deliverer = DeliveryHandler::new(infra.clone(), webhooks.clone()).map_err(|e| {
        StartupError::Misconfigured {
            setting: "WEBHOOK_TIMEOUT",
            cause: format!("cannot build the webhook HTTP client: {e}"),
        }
    })?;
    Ok(vec![
        Consumer::new::<ConnectionEvents, _>(
            fan_out,
            fan_out_spec,
            Arc::new(FanOutHandler {
                infra: infra.clone(),
            }),
        ),
        Consumer::new::<WebhookDeliveryRequested, _>(delivery, delivery_spec, Arc::new(deliverer)),
    ])
}
