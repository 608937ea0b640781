//! Handing a message to the SMTP server, with a short in-process retry of transient failures,
//! and the classification of what went wrong: worth retrying later, or never going to work.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use lettre::transport::smtp;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::SmtpUrl;

/// Retries inside one delivery: a few quick, jittered attempts absorb a blip (a restarting relay,
/// a greylisting 4xx) without a JetStream round trip. Longer outages are JetStream's job
/// (`MAILER_RETRY_DELAYS`), so this stays short: at most ~3 s of waiting in all.
const IN_PROCESS_RETRIES: usize = 3;
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(200);
const MAX_RETRY_DELAY: Duration = Duration::from_secs(2);

/// Why a message was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The server could not be reached, timed out or answered 4xx: try again later.
    #[error("SMTP transient failure: {0}")]
    Transient(String),
    /// The server answered 5xx (e.g. the recipient does not exist): resending cannot help.
    #[error("SMTP permanent failure: {0}")]
    Permanent(String),
}

impl SendError {
    fn from_lettre(err: &smtp::Error) -> Self {
        // lettre's messages name the failure and the server's reply, never the credentials.
        let reason = err.to_string();
        if err.is_permanent() {
            Self::Permanent(reason)
        } else {
            // 4xx, connection refused, network errors, timeouts, TLS handshakes (often a relay
            // that is restarting or a certificate being rotated) and client-side errors such as
            // no common AUTH mechanism (a configuration an operator fixes, after which a
            // redelivery succeeds). After MAILER_MAX_DELIVER deliveries they are parked too.
            Self::Transient(reason)
        }
    }
}

/// The SMTP client. Opens one connection per message (no pool): authorization emails are
/// rare, and a fresh connection never trips over a server-side idle timeout.
#[derive(Clone)]
pub struct SmtpSender {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    /// Bound on one whole attempt (connect, TLS, AUTH, MAIL, RCPT, DATA), on top of lettre's
    /// per-command timeout, so a server that drips bytes cannot hold a delivery forever.
    attempt_timeout: Duration,
    /// Where mail goes, without credentials, for logs.
    server: String,
}

impl std::fmt::Debug for SmtpSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpSender")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl SmtpSender {
    /// Builds the client; nothing is contacted until the first send.
    pub fn new(url: &SmtpUrl, timeout: Duration) -> Result<Self, String> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose())
            .map_err(|_| "is not accepted by the SMTP client".to_owned())?
            .timeout(Some(timeout))
            .build();
        Ok(Self {
            transport,
            attempt_timeout: timeout * 2,
            server: url.redacted(),
        })
    }

    /// The server, without credentials.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The longest one [`Self::send`] can take: every attempt timing out, plus the waits.
    pub fn max_send_duration(&self) -> Duration {
        let attempts = u32::try_from(IN_PROCESS_RETRIES + 1).unwrap_or(u32::MAX);
        let waits = MAX_RETRY_DELAY * 2 * attempts; // jitter can double a wait
        self.attempt_timeout * attempts + waits
    }

    /// Sends `message`, retrying transient failures a few times. `Ok` means the server took
    /// responsibility for the message (250 after DATA).
    pub async fn send(&self, message: &Message) -> Result<(), SendError> {
        let envelope = message.envelope();
        let bytes = message.formatted();
        let attempt = || async {
            match tokio::time::timeout(
                self.attempt_timeout,
                self.transport.send_raw(envelope, &bytes),
            )
            .await
            {
                Ok(Ok(_response)) => Ok(()),
                Ok(Err(e)) => Err(SendError::from_lettre(&e)),
                Err(_) => Err(SendError::Transient(format!(
                    "no answer within {:?}",
                    self.attempt_timeout
                ))),
            }
        };
        let backoff = ExponentialBuilder::default()
            .with_min_delay(FIRST_RETRY_DELAY)
            .with_max_delay(MAX_RETRY_DELAY)
            .with_max_times(IN_PROCESS_RETRIES)
            .with_jitter();
        attempt
            .retry(backoff)
            .when(|e| matches!(e, SendError::Transient(_)))
            .notify(|e: &SendError, next: Duration| {
                tracing::warn!(error = %e, retry_in = ?next, "SMTP send failed; retrying");
            })
            .await
    }
}
