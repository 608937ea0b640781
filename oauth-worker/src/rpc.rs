//! Serving NATS request/reply: connect requests arrive in a queue group, so replicas share
//! them; each is answered on its own task, at most `MAX_IN_FLIGHT` at once per replica.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use schemas::subjects::OAUTH_WORKER_QUEUE;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::handlers::connect_requested::ConnectRequestedHandler;

/// Requests answered concurrently by one replica; past it, requests wait in the subscription
/// (and other replicas of the queue group take theirs).
const MAX_IN_FLIGHT: usize = 256;

/// Subscribes to connect requests and answers them until `shutdown`; then stops taking new
/// ones and waits (at most `grace`) for those in flight.
pub async fn serve_connect_requests(
    nats: async_nats::Client,
    subject: String,
    handler: Arc<ConnectRequestedHandler>,
    shutdown: CancellationToken,
    grace: Duration,
) -> Result<(), async_nats::SubscribeError> {
    let mut requests = nats
        .queue_subscribe(subject.clone(), OAUTH_WORKER_QUEUE.to_owned())
        .await?;
    tracing::info!(%subject, queue = OAUTH_WORKER_QUEUE, "answering connect requests");
    let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    // One reference count per request rather than one per field of the client and handler.
    let shared = Arc::new((handler, nats.clone()));
    let tracker = TaskTracker::new();
    loop {
        let message = tokio::select! {
            message = requests.next() => message,
            () = shutdown.cancelled() => break,
        };
        let Some(message) = message else { break };
        let Some(reply_to) = message.reply else {
            tracing::warn!("connect request without a reply subject; ignored");
            continue;
        };
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let shared = shared.clone();
        tracker.spawn(async move {
            let (handler, nats) = &*shared;
            let reply = handler.handle(&message.payload).await;
            let body = serde_json::to_vec(&reply).unwrap_or_default();
            if let Err(e) = nats.publish(reply_to, body.into()).await {
                tracing::warn!(error = %e, "could not send the connect reply");
            }
            drop(permit);
        });
    }
    // Stop receiving first, so the queue group routes new requests to other replicas.
    let _ = requests.unsubscribe().await;
    tracker.close();
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!(?grace, "connect requests outlived SHUTDOWN_GRACE");
    }
    Ok(())
}
