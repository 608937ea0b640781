//! auth-link-issued → one email with the link, never two.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use chrono::Utc;
use lettre::message::Mailbox;
use schemas::Envelope;
use schemas::events::AuthLinkIssued;
use service_kit::consumer::{Delivery, EventHandler, HandlerError};
use service_kit::mongo::TenantDatabases;

use crate::email;
use crate::sent::{Claim, SentLinks};
use crate::smtp::{SendError, SmtpSender};

/// Emails the authorization link of each auth-link-issued event.
///
/// Exactly once as far as SMTP allows. Before sending, the delivery claims the event in the
/// tenant's [`SentLinks`]; an event already sent is acked without sending, and one that another
/// delivery is sending right now is retried later (by then it is sent, and skipped). After the
/// server accepts the message the event is marked sent. Redeliveries, replays and a second
/// publish of the same event under a new message id therefore send nothing.
///
/// One window remains, inherent to SMTP: if the process dies (or MongoDB stays unreachable)
/// between the server's `250` after DATA and marking the event sent, its claim expires after
/// `lease` and a later delivery sends the email a second time. The same holds when the
/// connection drops after the server stored the message but before its `250` reached us. Both
/// are narrow (one round trip), and a second copy of a link is the lesser harm than none.
#[derive(Debug, Clone)]
pub struct AuthLinkIssuedHandler {
    pub sender: SmtpSender,
    pub from: Mailbox,
    pub tenants: TenantDatabases,
    /// How long a claim protects a send in progress; longer than any one delivery can take.
    pub lease: Duration,
    /// How long the record of a sent link is kept ([`SentLinks::expiry`]).
    pub sent_links_ttl: Duration,
}

impl EventHandler<AuthLinkIssued> for AuthLinkIssuedHandler {
    async fn handle(
        &self,
        event: Envelope<AuthLinkIssued>,
        _delivery: Delivery,
    ) -> Result<(), HandlerError> {
        let db = self
            .tenants
            .connection_for(&event.subaccount_id)
            .await
            .map_err(|e| HandlerError::Retryable(format!("MongoDB unavailable: {e}")))?;
        self.tenants
            .ensure_expiry(&db, SentLinks::expiry(self.sent_links_ttl))
            .await
            .map_err(|e| HandlerError::Retryable(format!("MongoDB unavailable: {e}")))?;
        let sent = SentLinks::new(&db);
        // Without knowing whether it was sent, do not send: wait for MongoDB instead.
        let claim = sent.claim(&event, self.lease).await.map_err(|e| {
            HandlerError::Retryable(format!("cannot check earlier sends in MongoDB: {e}"))
        })?;
        let token = match claim {
            Claim::Claimed(token) => token,
            Claim::AlreadySent => {
                tracing::info!("authorization link was already emailed; not sending it again");
                count_email("already_sent");
                return Ok(());
            }
            Claim::InProgress => {
                return Err(HandlerError::Retryable(
                    "another delivery of this event is sending the email; checking again later"
                        .into(),
                ));
            }
        };
        if let Err(e) = self.send(&event).await {
            count_email(match e {
                HandlerError::Permanent(_) => "failed_permanent",
                HandlerError::Retryable(_) => "failed_transient",
            });
            if let Err(release) = sent.release(&event, &token).await {
                tracing::warn!(error = %release, "cannot release the send claim; it expires by itself");
            }
            return Err(e);
        }
        // The recipient is logged, the link never is: it carries the single-use OAuth state.
        tracing::info!(to = %event.payload.user_email, smtp = self.sender.server(), "authorization link emailed");
        count_email("sent");
        mark_sent(&sent, &event).await;
        Ok(())
    }
}

impl AuthLinkIssuedHandler {
    async fn send(&self, event: &Envelope<AuthLinkIssued>) -> Result<(), HandlerError> {
        if event.payload.expires_at <= Utc::now() {
            return Err(HandlerError::Permanent(format!(
                "the link expired at {} before it could be emailed",
                event.payload.expires_at.to_rfc3339()
            )));
        }
        let message = email::auth_link_email(&self.from, event)
            .map_err(|e| HandlerError::Permanent(e.to_string()))?;
        self.sender.send(&message).await.map_err(|e| match e {
            SendError::Permanent(_) => HandlerError::Permanent(e.to_string()),
            SendError::Transient(_) => HandlerError::Retryable(e.to_string()),
        })
    }
}

/// `emails_sent_total{outcome}`: `sent`, `already_sent` (a redelivery or replay; nothing sent),
/// `failed_transient` (retried later), `failed_permanent` (refused or expired; dead-lettered).
fn count_email(outcome: &'static str) {
    metrics::counter!("emails_sent_total", "outcome" => outcome).increment(1);
}

/// Marks the event sent, retrying briefly. If MongoDB stays away the event is still acked: the
/// email went out, and a redelivery is exactly what could send it twice.
async fn mark_sent(sent: &SentLinks, event: &Envelope<AuthLinkIssued>) {
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(2))
        .with_max_times(5)
        .with_jitter();
    let marked = (|| sent.mark_sent(event))
        .retry(backoff)
        .notify(|e: &mongodb::error::Error, next: Duration| {
            tracing::warn!(error = %e, retry_in = ?next, "cannot record the sent email yet; retrying");
        })
        .await;
    if let Err(e) = marked {
        tracing::error!(error = %e, "email sent but not recorded; once its claim expires, a replay of this event would email the link again");
    }
}
