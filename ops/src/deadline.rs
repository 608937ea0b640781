//! The overall deadline of a long operation (`--deadline`, 10 minutes by default).
//!
//! A replay waits for JetStream's acknowledgement of every message it re-publishes, and reads
//! its range message by message; each wait is bounded, but their sum grows with the number of
//! messages and with a server that acknowledges slowly, so without an overall bound a replay
//! of a large range against a struggling server runs for hours. At the deadline the command
//! stops where it is — the message in progress is reported as interrupted (it may or may not
//! have been stored; a replay twice is harmless, every consumer is idempotent), the rest as not
//! attempted — prints its report as usual and exits with [`crate::EXIT_DEADLINE`].

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// When a command must have finished.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    at: Instant,
    budget: Duration,
}

/// The work did not finish in time; the report says what was done.
#[derive(Debug, thiserror::Error)]
#[error(
    "stopped at the deadline (--deadline {}): {done} done, {interrupted} interrupted, {not_attempted} not attempted{resume}",
    humantime::format_duration(*budget)
)]
pub struct DeadlineReached {
    pub budget: Duration,
    /// Messages handled (replayed, or failed for their own reason).
    pub done: usize,
    /// The message in progress when the deadline came (0 or 1).
    pub interrupted: usize,
    /// Messages left alone (for an events replay: at most this many; the range is read as it
    /// goes).
    pub not_attempted: u64,
    /// How to go on: `; resume with ...`, or empty.
    pub resume: String,
}

impl Deadline {
    pub fn start(budget: Duration) -> Self {
        Self {
            at: Instant::now() + budget,
            budget,
        }
    }

    pub fn budget(&self) -> Duration {
        self.budget
    }

    /// Whether the deadline has come.
    pub fn passed(&self) -> bool {
        Instant::now() >= self.at
    }

    /// `work`, unless the deadline comes first (then `None`; `work` is dropped).
    pub async fn bound<T>(&self, work: impl Future<Output = T>) -> Option<T> {
        if self.passed() {
            return None;
        }
        tokio::time::timeout_at(self.at, work).await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn work_that_outlives_the_deadline_is_abandoned() {
        let deadline = Deadline::start(Duration::from_secs(10));
        assert_eq!(deadline.bound(async { 1 }).await, Some(1));
        assert!(!deadline.passed());
        assert_eq!(deadline.bound(std::future::pending::<()>()).await, None);
        assert!(deadline.passed());
        assert_eq!(
            deadline.bound(async { 2 }).await,
            None,
            "nothing starts after it"
        );
    }
}
