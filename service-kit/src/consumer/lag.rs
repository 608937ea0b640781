//! `consumer_lag_messages`: how far a consumer is behind its stream.

use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use tokio_util::sync::CancellationToken;

/// How often [`watch_lag`] reads the consumer's pending count.
pub const LAG_REFRESH: Duration = Duration::from_secs(10);

/// `consumer_lag_messages{consumer}`: messages of the stream matching the consumer's filter
/// that it has not been delivered yet (JetStream's `num_pending`), read every [`LAG_REFRESH`]
/// until `shutdown`.
pub(super) async fn watch_lag(
    consumer: PullConsumer,
    durable: &'static str,
    shutdown: CancellationToken,
) {
    let gauge = metrics::gauge!("consumer_lag_messages", "consumer" => durable);
    loop {
        match consumer.get_info().await {
            // u64 → f64: exact below 2^53 messages.
            Ok(info) => gauge.set(info.num_pending as f64),
            Err(e) => {
                tracing::debug!(consumer = durable, error = %e, "cannot read the consumer's lag")
            }
        }
        tokio::select! {
            () = tokio::time::sleep(LAG_REFRESH) => {}
            () = shutdown.cancelled() => break,
        }
    }
}
