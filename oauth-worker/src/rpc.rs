//! Serving NATS request/reply: requests arrive in a queue group, so replicas share them; each
//! is answered on its own task, at most `MAX_IN_FLIGHT` at once per replica and subject.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use schemas::subjects::OAUTH_WORKER_QUEUE;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// Requests answered concurrently by one replica; past it, requests wait in the subscription
/// (and other replicas of the queue group take theirs).
pub const MAX_IN_FLIGHT: usize = 256;

/// Turns a request (its body, and its headers when it has any) into a reply body. Never
/// fails: every problem is a reply the caller can map.
pub trait Responder: Send + Sync + 'static {
    fn respond(
        &self,
        request: &[u8],
        headers: Option<&async_nats::HeaderMap>,
    ) -> impl Future<Output = Vec<u8>> + Send;
}

/// Subscribes to `subject` and answers with `responder` until `shutdown`; then stops taking
/// new requests and waits (at most `grace`) for those in flight.
pub async fn serve<R: Responder>(
    nats: async_nats::Client,
    subject: String,
    responder: Arc<R>,
    shutdown: CancellationToken,
    grace: Duration,
) -> Result<(), async_nats::SubscribeError> {
    let mut requests = nats
        .queue_subscribe(subject.clone(), OAUTH_WORKER_QUEUE.to_owned())
        .await?;
    tracing::info!(%subject, queue = OAUTH_WORKER_QUEUE, "answering requests");
    let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    // One reference count per request rather than one per field of the client and responder.
    let shared = Arc::new((responder, nats.clone()));
    let tracker = TaskTracker::new();
    let mut draining = false;
    loop {
        let message = if draining {
            // Bounded: with NATS gone the confirmation never comes.
            tokio::time::timeout(grace, requests.next())
                .await
                .unwrap_or_default()
        } else {
            tokio::select! {
                message = requests.next() => message,
                () = shutdown.cancelled() => {
                    // Stop receiving, so the queue group routes new requests to other
                    // replicas, but answer every request already routed here: the server
                    // confirms the unsubscribe after them, then the subscription ends.
                    draining = true;
                    if let Err(e) = requests.drain().await {
                        tracing::warn!(%subject, error = %e, "could not drain the subscription");
                        break;
                    }
                    continue;
                }
            }
        };
        let Some(message) = message else { break };
        let Some(reply_to) = message.reply else {
            tracing::warn!(%subject, "request without a reply subject; ignored");
            continue;
        };
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let shared = shared.clone();
        // The caller's trace goes on here (its `traceparent` header), or a new one starts.
        let span = tracing::info_span!("rpc", subject = %message.subject, trace_id = tracing::field::Empty);
        match &message.headers {
            Some(headers) => service_kit::telemetry::continue_trace(
                &span,
                &service_kit::telemetry::NatsHeaders(headers),
            ),
            None => service_kit::telemetry::record_trace_id(&span),
        }
        tracker.spawn(
            async move {
                let (responder, nats) = &*shared;
                let body = responder
                    .respond(&message.payload, message.headers.as_ref())
                    .await;
                if let Err(e) = nats.publish(reply_to, body.into()).await {
                    tracing::warn!(error = %e, "could not send a reply");
                }
                drop(permit);
            }
            .instrument(span),
        );
    }
    tracker.close();
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!(%subject, ?grace, "requests outlived SHUTDOWN_GRACE");
    }
    Ok(())
}
