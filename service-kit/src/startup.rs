//! Start-up: what can go wrong before a service takes work (or makes it stop), and the bounded retry that waits
//! for infrastructure that is still coming up.

use std::future::Future;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};

use crate::config::ConfigError;

/// Why a service could not start. Every variant names the setting to look at; none carries a
/// secret (URLs are never echoed).
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(
        "{setting}: {what} was unreachable for {waited:?} (STARTUP_TIMEOUT); last error: {cause}"
    )]
    Unreachable {
        setting: &'static str,
        what: &'static str,
        waited: Duration,
        cause: String,
    },
    #[error("{setting}: {cause}")]
    Misconfigured {
        setting: &'static str,
        cause: String,
    },
    /// JetStream did not create or update a stream or consumer. Often passing: for a few seconds
    /// after a cluster node restarts, JetStream API requests time out while a leader is elected.
    #[error("NATS_URL: cannot provision {what}: {cause}")]
    Provisioning { what: String, cause: String },
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Several(Vec<StartupError>),
    /// Shutdown was requested before start-up finished (not a failure: exit code 0).
    #[error("shutdown requested during start-up")]
    Interrupted,
    /// A running service stopped on an error it could not recover from.
    #[error("{what} failed: {cause}")]
    Failed { what: &'static str, cause: String },
    #[error("{setting}: cannot listen on {addr}: {cause}")]
    Bind {
        setting: &'static str,
        addr: String,
        cause: std::io::Error,
    },
}

impl StartupError {
    /// One error from several (each is still reported).
    pub fn several(mut errors: Vec<StartupError>) -> Self {
        if errors.len() == 1 {
            errors.remove(0)
        } else {
            StartupError::Several(errors)
        }
    }
}

/// Runs `attempt` again while it fails with [`StartupError::Provisioning`] (backing off from
/// 100 ms to 2 s), until it succeeds, fails otherwise, or `limit` would pass.
pub async fn retry_provisioning<T, F, Fut>(
    limit: Duration,
    mut attempt: F,
) -> Result<T, StartupError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StartupError>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    let mut delay = Duration::from_millis(100);
    loop {
        match attempt().await {
            Err(e @ StartupError::Provisioning { .. })
                if tokio::time::Instant::now() + delay < deadline =>
            {
                tracing::warn!(error = %e, retry_in = ?delay, "JetStream is not answering yet; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            other => return other,
        }
    }
}

/// An infrastructure dependency, as start-up errors name it.
#[derive(Debug, Clone, Copy)]
pub struct Dependency {
    /// The setting that points at it (`NATS_URL`).
    pub setting: &'static str,
    /// Its name for people (`NATS`).
    pub what: &'static str,
}

impl Dependency {
    /// It stayed unreachable for `waited`; `cause` is the last error seen.
    pub fn unreachable(self, waited: Duration, cause: String) -> StartupError {
        StartupError::Unreachable {
            setting: self.setting,
            what: self.what,
            waited,
            cause,
        }
    }
}

/// Retries `attempt` with jittered exponential backoff (100 ms up to 2 s) until it succeeds or
/// `limit` has passed, whichever is first; then `dependency` is unreachable, with the error of
/// the last attempt as the cause.
pub async fn retry_for<T, E, F, Fut>(
    limit: Duration,
    dependency: Dependency,
    attempt: F,
) -> Result<T, StartupError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let last_error = std::sync::Mutex::new(String::from("no attempt finished in time"));
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(2))
        .with_max_times(usize::MAX)
        .with_jitter();
    let attempts = attempt.retry(backoff).notify(|err: &E, next: Duration| {
        let message = err.to_string();
        tracing::warn!(dependency = dependency.what, error = %message, retry_in = ?next, "not reachable yet");
        if let Ok(mut last) = last_error.lock() {
            *last = message;
        }
    });
    match tokio::time::timeout(limit, attempts).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(dependency.unreachable(limit, err.to_string())),
        Err(_elapsed) => Err(dependency.unreachable(
            limit,
            last_error
                .lock()
                .map(|s| s.clone())
                .unwrap_or_else(|_| "unknown".into()),
        )),
    }
}
