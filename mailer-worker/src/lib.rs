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
use service_kit::consumer::{self, Consumer, ConsumerSpec, Fairness};
use service_kit::http::Listen;
use service_kit::{CancellationToken, Infrastructure, StartupError};

pub use config::MailerWorkerConfig;
use handlers::auth_link_issued::AuthLinkIssuedHandler;
use smtp::SmtpSender;

/// The name in logs, metrics, the NATS connection and durable consumer names.
pub const SERVICE: &str = "mailer-worker";

/// Unacknowledged auth-link events waiting for a redelivery delay the consumer leaves room
/// for, across replicas: generous, an SMTP outage parks many. The consumer's `max_ack_pending`
/// is this plus the replicas' buffers ([`Fairness::max_ack_pending`]).
const RETRY_HEADROOM: i64 = 1000;

/// How long the server waits for an ack before redelivering. A delivery being handled tells the
/// server so every `ACK_WAIT / 3` (service-kit's consumer), so this bounds only how soon an
/// event is retried after its replica vanished. A redelivery that overtakes a send still in
/// progress is harmless: it finds the send claim and backs off.
const ACK_WAIT: Duration = Duration::from_secs(30);

/// What the `mailer-worker` binary does: reads its settings from the environment, runs until SIGTERM or
/// SIGINT, and turns a start-up failure into a message and an exit code
/// ([`service_kit::service::main`]). The chaos run (tests/tests/chaos.rs) starts its replicas
/// through this too.
pub async fn main_from_env() -> std::process::ExitCode {
    service_kit::service::main(SERVICE, |config: MailerWorkerConfig, shutdown| async move {
        let listen = Listen::at("MAILER_WORKER_HEALTH_ADDR", config.health_addr, false);
        run(config, listen, shutdown).await
    })
    .await
}

/// Runs the mailer-worker until `shutdown` is cancelled: provisions the streams and its durable
/// consumer, serves health and metrics on `listen` (bound once everything is connected) while consuming, then lets in-flight
/// emails finish (up to `SHUTDOWN_GRACE`) and drains the NATS connection.
pub async fn run(
    config: MailerWorkerConfig,
    listen: impl Into<Listen>,
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
    let (spec, fairness) = consumer_spec(&config, &infra.namespace);
    let consumer = infra
        .ensure_consumer(&spec, config.common.startup_timeout)
        .await?;
    tracing::info!(smtp = sender.server(), from = %config.mail_from, "emailing authorization links");
    // A claim outlives the longest delivery, so only a dead one's claim is taken over.
    let lease = sender.max_send_duration() + Duration::from_secs(30);
    let handler = Arc::new(AuthLinkIssuedHandler {
        sender,
        from: config.mail_from.clone(),
        tenants: infra.mongo.clone(),
        lease,
        sent_links_ttl: config.sent_links_ttl,
    });

    // Links of every tenant share the senders: one tenant's burst must not make another's
    // links expire in the queue.
    let consumers = vec![Consumer::fair::<AuthLinkIssued, _>(
        consumer, spec, fairness, handler,
    )];
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

/// The durable consumer's settings, and how it shares the senders between tenants.
fn consumer_spec(config: &MailerWorkerConfig, ns: &Namespace) -> (ConsumerSpec, Fairness) {
    let fairness = Fairness {
        per_tenant_concurrency: config.per_tenant_concurrency,
        buffer: config.buffer,
    };
    let spec = ConsumerSpec {
        durable: MAILER_CONSUMER,
        filter_subject: ns.event_filter::<AuthLinkIssued>(),
        ack_wait: ACK_WAIT,
        max_deliver: config.max_deliver,
        max_ack_pending: fairness.max_ack_pending(RETRY_HEADROOM),
        concurrency: config.concurrency,
        retry_delays: config.retry_delays.clone(),
    };
    (spec, fairness)
}

#[cfg(test)]
mod tests {
    use super::*;
    use service_kit::Env;
    use service_kit::ServiceConfig;

    #[test]
    fn the_default_consumer_is_fair_and_its_pending_limit_holds_the_buffers() {
        let config = MailerWorkerConfig::from_env(Env::from_pairs(Vec::<(String, String)>::new()))
            .expect("defaults are valid");
        let (spec, fairness) = consumer_spec(&config, &Namespace::new("gcal").expect("ns"));
        assert_eq!(fairness.check(&spec), Ok(()));
        assert_eq!(fairness.per_tenant_concurrency, 2);
        assert!(
            spec.max_ack_pending
                >= RETRY_HEADROOM
                    + service_kit::consumer::BUFFERED_REPLICAS
                        * i64::try_from(fairness.buffer).expect("small")
        );
    }
}
