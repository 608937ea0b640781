//! The metadata-worker: writes `connectorsubaccount.metadata` from connection events, with retries and a dead-letter stream.

pub mod config;
pub mod events;
pub mod handler;
pub mod metadata;

use std::sync::Arc;
use std::time::Duration;

use schemas::subjects::{METADATA_CONSUMER, Namespace};
use service_kit::consumer::{self, ConsumerSpec};
use service_kit::{CancellationToken, Infrastructure, StartupError};
use tokio::net::TcpListener;

pub use config::MetadataWorkerConfig;

use crate::events::ConnectionEvents;
use crate::handler::ConnectionEventHandler;

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
    let served = consumer::consume_and_serve::<ConnectionEvents, _>(
        SERVICE,
        &infra,
        listener,
        consumer,
        spec,
        handler,
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
