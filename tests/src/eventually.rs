//! Waiting for something the system does in the background: one poll loop for every test.

use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

/// How often [`eventually`] asks again.
pub const POLL_EVERY: Duration = Duration::from_millis(20);

/// Asks `check` every [`POLL_EVERY`] until it answers `Ok`, and returns that value; fails the
/// test after `limit`, naming `what` and the last `Err` it answered (what was seen instead).
pub async fn eventually<T, Seen, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    Seen: Debug,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Seen>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let seen = match check().await {
            Ok(value) => return value,
            Err(seen) => seen,
        };
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}; last seen: {seen:?}"
        );
        tokio::time::sleep(POLL_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn returns_the_first_ok_and_fails_naming_what_it_saw() {
        let tries = AtomicUsize::new(0);
        let got = eventually("the third try", Duration::from_secs(5), || async {
            let n = tries.fetch_add(1, Ordering::SeqCst) + 1;
            if n == 3 { Ok(n) } else { Err(n) }
        })
        .await;
        assert_eq!(got, 3);

        let failed = tokio::spawn(async {
            eventually("never", Duration::from_millis(50), || async {
                Err::<(), _>("still nothing")
            })
            .await;
        })
        .await
        .expect_err("it gives up");
        let message = failed
            .into_panic()
            .downcast::<String>()
            .expect("a formatted message");
        assert!(message.contains("waiting for never"), "{message}");
        assert!(message.contains("still nothing"), "{message}");
    }
}
