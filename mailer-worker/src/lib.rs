//! The mailer-worker: emails authorization links over SMTP, never the same link twice.
//!
//! A durable JetStream consumer of `auth-link-issued` (shared by every replica) hands each event
//! to [`handlers::auth_link_issued`], which builds the email ([`email`]), sends it ([`smtp`])
//! and records the send ([`sent`]). Retries, redelivery delays and dead-lettering are
//! service-kit's consumer runner; what is retryable and what is not is decided here.

pub mod config;
pub mod email;
pub mod handlers;
pub mod sent;
pub mod smtp;

use std::sync::Arc;
use std::time::Duration;

use schemas::events::AuthLinkIssued;
use schemas::subjects::{MAILER_CONSUMER, Namespace};
use service_kit::consumer::{self, ConsumerSpec};
use service_kit::{CancellationToken, Infrastructure, StartupError};
use tokio::net::TcpListener;

pub use config::MailerWorkerConfig;
use handlers::auth_link_issued::AuthLinkIssuedHandler;
use smtp::SmtpSender;

/// The name in logs, metrics, the NATS connection and durable consumer names.
pub const SERVICE: &str = "mailer-worker";

/// Unacknowledged auth-link events the server hands out at once, across replicas. Events
/// waiting for a redelivery delay count too, so this is generous: an SMTP outage parks many.
const MAX_ACK_PENDING: i64 = 1000;

/// How long the server waits for an ack before redelivering. A delivery being handled tells the
/// server so every `ACK_WAIT / 3` (service-kit's consumer), so this bounds only how soon an
/// event is retried after its replica vanished. A redelivery that overtakes a send still in
/// progress is harmless: it finds the send claim and backs off.
const ACK_WAIT: Duration = Duration::from_secs(30);

/// Runs the mailer-worker until `shutdown` is cancelled: provisions the streams and its durable
/// consumer, serves health and metrics on `listener` while consuming, then lets in-flight
/// emails finish (up to `SHUTDOWN_GRACE`) and drains the NATS connection.
pub async fn run(
    config: MailerWorkerConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), StartupError> {
    let sender = SmtpSender::new(&config.smtp_url, config.smtp_timeout).map_err(|cause| {
        StartupError::Misconfigured {
            setting: "SMTP_URL",
            cause,
        }
    })?;
    let infra = Infrastructure::connect(&config.common, SERVICE, &shutdown).await?;
    infra.ensure_streams(&config.common).await?;
    let spec = consumer_spec(&config, &infra.namespace);
    let consumer = consumer::ensure_consumer(&infra.jetstream, &infra.namespace, &spec).await?;
    tracing::info!(smtp = sender.server(), from = %config.mail_from, "emailing authorization links");
    // A claim outlives the longest delivery, so only a dead one's claim is taken over.
    let lease = sender.max_send_duration() + Duration::from_secs(30);
    let handler = Arc::new(AuthLinkIssuedHandler {
        sender,
        from: config.mail_from.clone(),
        tenants: infra.mongo.clone(),
        lease,
    });

    let served = consumer::consume_and_serve::<AuthLinkIssued, _>(
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

/// The durable consumer's settings.
fn consumer_spec(config: &MailerWorkerConfig, ns: &Namespace) -> ConsumerSpec {
    ConsumerSpec {
        durable: MAILER_CONSUMER,
        filter_subject: ns.event_filter::<AuthLinkIssued>(),
        ack_wait: ACK_WAIT,
        max_deliver: config.max_deliver,
        max_ack_pending: MAX_ACK_PENDING,
        concurrency: config.concurrency,
        retry_delays: config.retry_delays.clone(),
    }
}
