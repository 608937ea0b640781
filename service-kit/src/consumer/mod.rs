//! Durable JetStream consumers, the same for every worker.
//!
//! A worker supplies an [`EventHandler`] for one event type and a [`ConsumerSpec`]; this module
//! does the rest:
//! - provisions the durable pull consumer (explicit ack, finite `max_deliver`, bounded
//!   `max_ack_pending`), creating or updating it;
//! - decodes each message; an undecodable one is dead-lettered at once with the decode error;
//! - runs the handler with bounded concurrency, sending `+WPI` (progress) while it works so a
//!   slow but healthy handler is not redelivered under it;
//! - acks only after the handler returned `Ok` (its effect is durable by then);
//! - a [`HandlerError::Retryable`] is NAKed with a growing delay (never an immediate NAK loop)
//!   until the last allowed delivery, then dead-lettered; a [`HandlerError::Permanent`] is
//!   dead-lettered at once;
//! - dead-lettering publishes the original payload and headers, plus why, where and when, to
//!   the dead-letter stream, and acks the original only once that publish is acknowledged — the
//!   original also stays in the domain stream, so nothing is ever lost;
//! - a message JetStream stops delivering because nobody answered it `max_deliver` times (a
//!   crashing or hanging handler) is parked too, from the server's max-deliveries advisory;
//! - on shutdown stops pulling and lets in-flight handlers finish.
//!
//! Messages are handled in stream order by default. A consumer whose messages come from many
//! tenants can instead be [run fairly](run_fair): pulled ahead into one queue per tenant and
//! started round-robin with a per-tenant cap ([`fair`]).

mod dead_letters;
mod fair;
mod lag;
mod worker;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, consumer::PullConsumer};
use futures::StreamExt;
use schemas::subjects::Namespace;
use schemas::{DecodeError, Envelope, StreamEvent};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::startup::StartupError;

use dead_letters::watch_max_deliveries;
pub use fair::{BUFFERED_REPLICAS, Fairness, FairnessSettings, MAX_BUFFER};
pub use lag::LAG_REFRESH;
use lag::watch_lag;
use worker::Worker;

/// How one durable consumer behaves.
#[derive(Debug, Clone)]
pub struct ConsumerSpec {
    /// Durable name, shared by every replica of the worker (they split the work).
    pub durable: &'static str,
    /// Which subjects of the domain stream it reads.
    pub filter_subject: String,
    /// How long the server waits for an ack before redelivering.
    pub ack_wait: Duration,
    /// Deliveries before a retryable failure is dead-lettered.
    pub max_deliver: i64,
    /// Unacknowledged messages the server hands out at once (across replicas).
    pub max_ack_pending: i64,
    /// Messages one replica handles at the same time.
    pub concurrency: usize,
    /// NAK delay after the n-th failed delivery; the last entry repeats.
    pub retry_delays: Vec<Duration>,
}

impl ConsumerSpec {
    fn retry_delay(&self, delivered: i64) -> Duration {
        let index = usize::try_from(delivered.saturating_sub(1)).unwrap_or(0);
        self.retry_delays
            .get(index)
            .or(self.retry_delays.last())
            .copied()
            .unwrap_or(Duration::from_secs(1))
    }

    /// The latest a message NAKed after its `delivered`-th delivery is due back: its retry
    /// delay with the most [`RETRY_JITTER`]. For handlers that keep track of what waits for a
    /// redelivery.
    pub fn latest_redelivery(&self, delivered: i64) -> Duration {
        jitter(self.retry_delay(delivered), 1.0)
    }

    /// [`retry_delay`](Self::retry_delay) spread by ±[`RETRY_JITTER`], so messages that failed
    /// together (a receiver or database that was down) do not all come back at the same
    /// instant.
    fn jittered_retry_delay(&self, delivered: i64) -> Duration {
        jitter(self.retry_delay(delivered), rand::random_range(0.0..=1.0))
    }
}

/// How far a NAK delay may move either way, as a fraction of it.
pub const RETRY_JITTER: f64 = 0.2;

/// `delay` scaled by a factor between `1 - RETRY_JITTER` (`unit` 0) and `1 + RETRY_JITTER`
/// (`unit` 1).
fn jitter(delay: Duration, unit: f64) -> Duration {
    let factor = 1.0 - RETRY_JITTER + 2.0 * RETRY_JITTER * unit.clamp(0.0, 1.0);
    delay.mul_f64(factor)
}

/// What went wrong in a handler, and so what happens to the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandlerError {
    /// Might work later (a server unreachable, a timeout): redeliver after a delay.
    #[error("{0}")]
    Retryable(String),
    /// Will never work (bad data, a refused recipient): dead-letter now.
    #[error("{0}")]
    Permanent(String),
}

/// Where a message stands in its delivery history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    pub stream_sequence: u64,
    /// 1 on the first delivery.
    pub delivered: i64,
    pub max_deliver: i64,
    /// An operator's replay (`gcal-ops`): it carries the original's message id
    /// (`Gcal-Original-Msg-Id`).
    pub replayed: bool,
}

impl Delivery {
    /// No redelivery follows a retryable failure of this attempt.
    pub fn is_last_attempt(&self) -> bool {
        self.delivered >= self.max_deliver
    }
}

/// What a consumer reads: one event type (every [`StreamEvent`] is one, read as its
/// [`Envelope`]), or a family of them decoded into one enum (a consumer whose filter spans
/// several types).
pub trait Consumable: Send + Sync + 'static {
    /// What the handler receives.
    type Message: Send + 'static;
    /// For logs and metrics (`connection-succeeded`; `connection` for the family).
    const NAME: &'static str;
    fn decode(bytes: &[u8]) -> Result<Self::Message, DecodeError>;
    /// Identifies a message in logs: `(event id, correlation id, subaccount id)`.
    fn describe(message: &Self::Message) -> (uuid::Uuid, uuid::Uuid, String);
}

impl<E: StreamEvent> Consumable for E {
    type Message = Envelope<E>;
    const NAME: &'static str = E::TYPE;

    fn decode(bytes: &[u8]) -> Result<Envelope<E>, DecodeError> {
        Envelope::<E>::decode(bytes)
    }

    fn describe(event: &Envelope<E>) -> (uuid::Uuid, uuid::Uuid, String) {
        (
            event.id,
            event.correlation_id,
            event.subaccount_id.to_string(),
        )
    }
}

/// Handles what consumer `E` reads. Must be idempotent: JetStream delivers at least once.
pub trait EventHandler<E: Consumable>: Send + Sync + 'static {
    fn handle(
        &self,
        event: E::Message,
        delivery: Delivery,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;
}

/// Creates the durable consumer, or updates it to `spec`.
pub async fn ensure_consumer(
    js: &jetstream::Context,
    ns: &Namespace,
    spec: &ConsumerSpec,
) -> Result<PullConsumer, StartupError> {
    let misconfigured = |cause: String| StartupError::Provisioning {
        what: format!("JetStream consumer {}", spec.durable),
        cause,
    };
    let stream = js
        .get_stream(ns.events_stream())
        .await
        .map_err(|e| misconfigured(e.to_string()))?;
    let config = jetstream::consumer::pull::Config {
        durable_name: Some(spec.durable.to_owned()),
        description: Some(format!("{} (calendar connector)", spec.durable)),
        filter_subject: spec.filter_subject.clone(),
        ack_policy: jetstream::consumer::AckPolicy::Explicit,
        ack_wait: spec.ack_wait,
        max_deliver: spec.max_deliver,
        max_ack_pending: spec.max_ack_pending,
        deliver_policy: jetstream::consumer::DeliverPolicy::All,
        ..Default::default()
    };
    stream
        .create_consumer(config)
        .await
        .map_err(|e| misconfigured(e.to_string()))
}

/// Runs the consumer until `shutdown`, then waits up to `grace` for in-flight handlers.
/// Messages are started in the order they are pulled.
pub async fn run<E, H>(
    js: jetstream::Context,
    ns: Namespace,
    consumer: PullConsumer,
    spec: ConsumerSpec,
    handler: Arc<H>,
    shutdown: CancellationToken,
    grace: Duration,
) where
    E: Consumable,
    H: EventHandler<E>,
{
    run_scheduled(js, ns, consumer, spec, None, handler, shutdown, grace).await;
}

/// [`run`], sharing the consumer fairly between tenants (see [`Fairness`]): up to `buffer`
/// messages are pulled ahead into one queue per tenant and started round-robin, at most
/// `per_tenant_concurrency` of one tenant at a time. On shutdown the buffered messages that
/// have not started are handed back at once (NAK without delay) for another replica.
#[allow(clippy::too_many_arguments)]
pub async fn run_fair<E, H>(
    js: jetstream::Context,
    ns: Namespace,
    consumer: PullConsumer,
    spec: ConsumerSpec,
    fairness: Fairness,
    handler: Arc<H>,
    shutdown: CancellationToken,
    grace: Duration,
) where
    E: Consumable,
    H: EventHandler<E>,
{
    run_scheduled(
        js,
        ns,
        consumer,
        spec,
        Some(fairness),
        handler,
        shutdown,
        grace,
    )
    .await;
}

#[allow(clippy::too_many_arguments)]
async fn run_scheduled<E, H>(
    js: jetstream::Context,
    ns: Namespace,
    consumer: PullConsumer,
    spec: ConsumerSpec,
    fairness: Option<Fairness>,
    handler: Arc<H>,
    shutdown: CancellationToken,
    grace: Duration,
) where
    E: Consumable,
    H: EventHandler<E>,
{
    let watcher = tokio::spawn(watch_max_deliveries(
        js.clone(),
        js.client(),
        ns.events_stream(),
        ns.dead_letter(spec.durable),
        spec.clone(),
        shutdown.clone(),
    ));
    let lag = tokio::spawn(watch_lag(consumer.clone(), spec.durable, shutdown.clone()));
    let worker = Arc::new(Worker {
        js,
        dead_letter_subject: ns.dead_letter(spec.durable),
        spec,
        handler,
        first_errors: Mutex::default(),
        shutdown: shutdown.clone(),
    });
    let tracker = TaskTracker::new();
    tracing::info!(consumer = worker.spec.durable, filter = %worker.spec.filter_subject, "consuming");
    if let Some(Err(problem)) = fairness.map(|f| f.check(&worker.spec)) {
        // The services check this at start-up; a caller that did not still gets a working
        // runner (the numbers are clamped into range) and this warning.
        tracing::warn!(consumer = worker.spec.durable, %problem, "fairness settings do not fit the consumer");
    }
    match fairness {
        None => pull_in_order::<E, H>(&consumer, &worker, &tracker, &shutdown).await,
        Some(fairness) => {
            fair::pull_fairly::<E, H>(&consumer, &worker, fairness, &tracker, &shutdown).await
        }
    }
    tracker.close();
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!(
            consumer = worker.spec.durable,
            ?grace,
            "handlers outlived SHUTDOWN_GRACE; their messages will be redelivered"
        );
    }
    let _ = watcher.await;
    let _ = lag.await;
    tracing::info!(consumer = worker.spec.durable, "stopped consuming");
}

/// Pulls and starts messages in stream order on `tracker`, `concurrency` at a time, until
/// `shutdown`.
async fn pull_in_order<E, H>(
    consumer: &PullConsumer,
    worker: &Arc<Worker<H>>,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) where
    E: Consumable,
    H: EventHandler<E>,
{
    let permits = Arc::new(Semaphore::new(worker.spec.concurrency.max(1)));
    'pull: while !shutdown.is_cancelled() {
        // No more than can run at once: a prefetched message waits without progress acks.
        let batch = worker.spec.concurrency.max(1);
        let stream = consumer
            .stream()
            .max_messages_per_batch(batch)
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await;
        let mut messages = match stream {
            Ok(messages) => messages,
            Err(e) => {
                tracing::warn!(consumer = worker.spec.durable, error = %e, "cannot pull; retrying in 1 s");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue 'pull,
                    () = shutdown.cancelled() => break 'pull,
                }
            }
        };
        loop {
            let permit = tokio::select! {
                permit = permits.clone().acquire_owned() => permit.expect("semaphore is never closed"),
                () = shutdown.cancelled() => break 'pull,
            };
            let next = tokio::select! {
                next = messages.next() => next,
                () = shutdown.cancelled() => break 'pull,
            };
            match next {
                Some(Ok(message)) => {
                    let worker = worker.clone();
                    tracker.spawn(async move {
                        worker.process::<E>(message).await;
                        drop(permit);
                    });
                }
                Some(Err(e)) => {
                    // Missed heartbeats and the like: the pull is renewed below.
                    tracing::warn!(consumer = worker.spec.durable, error = %e, "pull interrupted; renewing");
                    continue 'pull;
                }
                None => continue 'pull,
            }
        }
    }
}

/// A worker's whole life: `run` for its consumer and the health endpoints on `listener`, until
/// `shutdown` or either of them ending (the other is then stopped too). Closes nothing: the
/// caller closes `infra` afterwards.
#[allow(clippy::too_many_arguments)]
pub async fn consume_and_serve<E, H>(
    service: &'static str,
    infra: &crate::Infrastructure,
    listener: tokio::net::TcpListener,
    consumer: PullConsumer,
    spec: ConsumerSpec,
    handler: Arc<H>,
    shutdown: CancellationToken,
    grace: Duration,
) -> Result<(), StartupError>
where
    E: Consumable,
    H: EventHandler<E>,
{
    let consumers = vec![Consumer::new::<E, H>(consumer, spec, handler)];
    consume_all_and_serve(service, infra, listener, consumers, shutdown, grace).await
}

/// One durable consumer ready to [`run`], its event type erased so that a worker can run
/// several of them side by side ([`consume_all_and_serve`]).
pub struct Consumer {
    durable: &'static str,
    start: Box<dyn FnOnce(RunContext) -> futures::future::BoxFuture<'static, ()> + Send>,
}

/// What [`run`] needs besides the consumer itself.
struct RunContext {
    js: jetstream::Context,
    ns: Namespace,
    shutdown: CancellationToken,
    grace: Duration,
}

impl Consumer {
    /// A consumer that handles messages in stream order ([`run`]).
    pub fn new<E, H>(consumer: PullConsumer, spec: ConsumerSpec, handler: Arc<H>) -> Self
    where
        E: Consumable,
        H: EventHandler<E>,
    {
        Self::scheduled::<E, H>(consumer, spec, None, handler)
    }

    /// A consumer that shares its capacity fairly between tenants ([`run_fair`]).
    pub fn fair<E, H>(
        consumer: PullConsumer,
        spec: ConsumerSpec,
        fairness: Fairness,
        handler: Arc<H>,
    ) -> Self
    where
        E: Consumable,
        H: EventHandler<E>,
    {
        Self::scheduled::<E, H>(consumer, spec, Some(fairness), handler)
    }

    fn scheduled<E, H>(
        consumer: PullConsumer,
        spec: ConsumerSpec,
        fairness: Option<Fairness>,
        handler: Arc<H>,
    ) -> Self
    where
        E: Consumable,
        H: EventHandler<E>,
    {
        Self {
            durable: spec.durable,
            start: Box::new(move |cx: RunContext| {
                Box::pin(run_scheduled::<E, H>(
                    cx.js,
                    cx.ns,
                    consumer,
                    spec,
                    fairness,
                    handler,
                    cx.shutdown,
                    cx.grace,
                ))
            }),
        }
    }
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("durable", &self.durable)
            .finish_non_exhaustive()
    }
}

/// [`consume_and_serve`] for several consumers in one process: each is `run` concurrently
/// with the health endpoints, until `shutdown` or any of them ending (the others are then
/// stopped too). Closes nothing: the caller closes `infra` afterwards.
pub async fn consume_all_and_serve(
    service: &'static str,
    infra: &crate::Infrastructure,
    listener: tokio::net::TcpListener,
    consumers: Vec<Consumer>,
    shutdown: CancellationToken,
    grace: Duration,
) -> Result<(), StartupError> {
    let stop = shutdown.child_token();
    let consuming = futures::future::join_all(consumers.into_iter().map(|consumer| {
        let stop = stop.clone();
        let running = (consumer.start)(RunContext {
            js: infra.jetstream.clone(),
            ns: infra.namespace.clone(),
            shutdown: stop.clone(),
            grace,
        });
        async move {
            running.await;
            stop.cancel();
        }
    }));
    let serving = async {
        let router = crate::health::router(service, infra.clone());
        let served = crate::http::serve(service, listener, router, stop.clone(), grace).await;
        stop.cancel();
        served
    };
    let (_, served) = tokio::join!(consuming, serving);
    served
}

/// `events_processed_total{consumer,outcome}`: `acked`, `retried` (NAKed for a later
/// redelivery), `dead_lettered` (parked after a permanent failure or the last retry, or given up
/// on by JetStream), `undecodable` (parked at once), `park_failed` (the dead-letter stream did
/// not take it, e.g. it is full: the message is NAKed, or on its last delivery held and
/// parking retried; counted at each failed try).
fn count(consumer: &'static str, outcome: &'static str) {
    metrics::counter!("events_processed_total", "consumer" => consumer, "outcome" => outcome)
        .increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(delays: &[u64]) -> ConsumerSpec {
        ConsumerSpec {
            durable: "test",
            filter_subject: "t.events.>".into(),
            ack_wait: Duration::from_secs(30),
            max_deliver: 5,
            max_ack_pending: 10,
            concurrency: 1,
            retry_delays: delays.iter().map(|s| Duration::from_secs(*s)).collect(),
        }
    }

    #[test]
    fn retry_delays_follow_the_list_and_the_last_repeats() {
        let spec = spec(&[10, 60, 300]);
        assert_eq!(spec.retry_delay(1), Duration::from_secs(10));
        assert_eq!(spec.retry_delay(3), Duration::from_secs(300));
        assert_eq!(spec.retry_delay(9), Duration::from_secs(300));
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        let base = Duration::from_secs(100);
        assert_eq!(jitter(base, 0.0), Duration::from_secs(80));
        assert_eq!(jitter(base, 0.5), Duration::from_secs(100));
        assert_eq!(jitter(base, 1.0), Duration::from_secs(120));
        let spec = spec(&[100]);
        assert_eq!(spec.latest_redelivery(1), Duration::from_secs(120));
        assert_eq!(spec.latest_redelivery(7), Duration::from_secs(120));
        let seen: Vec<Duration> = (0..200).map(|_| spec.jittered_retry_delay(1)).collect();
        assert!(
            seen.iter()
                .all(|d| (Duration::from_secs(80)..=Duration::from_secs(120)).contains(d))
        );
        assert!(
            seen.iter().any(|d| *d != seen[0]),
            "the delays are spread, not all equal"
        );
    }
}
