//! Access tokens held in this replica's memory for `ACCESS_TOKEN_MEMORY_TTL` (2 s by
//! default) after it last read or refreshed them, so that an account asked for many times a
//! second is answered without a Redis round trip each time (the round trip was most of the
//! cost of a cache hit).
//!
//! What it may serve that Redis would not: a token of an account that another replica
//! disconnected or marked `reauth_required` in the last `ACCESS_TOKEN_MEMORY_TTL`. That adds
//! nothing a caller could not have had anyway: any caller that asked a moment before the
//! disconnect holds the same token for the rest of its lifetime, and a disconnect revokes it
//! at the provider. This replica's own disconnects, reconnects and `reauth_required` forget
//! the account at once ([`HeldTokens::forget`]), and a read that began before such a forget
//! cannot put the old token back (a generation check).
//!
//! The tokens are plaintext here (as they are while being served) and zeroed when dropped.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use schemas::SubaccountId;
use zeroize::Zeroizing;

use crate::access_tokens::Issued;

/// Accounts held at most; past it the expired entries go, then (if still full) all.
const CAPACITY: usize = 100_000;

struct Held {
    access_token: Zeroizing<String>,
    expires_at: DateTime<Utc>,
    issued_at: Option<DateTime<Utc>>,
    /// Served from memory until then.
    until: Instant,
}

/// Where a read started, to check at [`HeldTokens::hold`] that nothing was forgotten since.
#[derive(Debug, Clone, Copy)]
pub struct ReadStart(u64);

/// This replica's held access tokens, by subaccount and Google account.
pub struct HeldTokens {
    ttl: Duration,
    entries: Mutex<HashMap<(SubaccountId, String), Held>>,
    /// Bumped by every forget: a read that started before one does not hold what it read.
    generation: AtomicU64,
}

impl std::fmt::Debug for HeldTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeldTokens")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl HeldTokens {
    /// Holds tokens for `ttl` (zero: holds nothing).
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::default(),
            generation: AtomicU64::new(0),
        }
    }

    /// The held token of the account, if held within the TTL and `usable` says it still has
    /// enough life left.
    pub fn get(
        &self,
        subaccount: &SubaccountId,
        google_email: &str,
        usable: impl FnOnce(DateTime<Utc>, Option<DateTime<Utc>>) -> bool,
    ) -> Option<Issued> {
        if self.ttl.is_zero() {
            return None;
        }
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let held = entries.get(&(subaccount.clone(), google_email.to_owned()))?;
        if held.until <= Instant::now() || !usable(held.expires_at, held.issued_at) {
            return None;
        }
        Some(Issued {
            access_token: held.access_token.to_string(),
            expires_at: held.expires_at,
            issued_at: held.issued_at,
        })
    }

    /// Notes where a read of Redis, MongoDB or the provider starts.
    pub fn read_start(&self) -> ReadStart {
        ReadStart(self.generation.load(Ordering::Acquire))
    }

    /// Holds what a read that started at `start` found, unless an account was forgotten since.
    pub fn hold(
        &self,
        start: ReadStart,
        subaccount: &SubaccountId,
        google_email: &str,
        access_token: &str,
        expires_at: DateTime<Utc>,
        issued_at: Option<DateTime<Utc>>,
    ) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        // Under the lock: a forget bumps the generation under it too.
        if self.generation.load(Ordering::Acquire) != start.0 {
            return;
        }
        let now = Instant::now();
        if entries.len() >= CAPACITY {
            entries.retain(|_, held| held.until > now);
            if entries.len() >= CAPACITY {
                entries.clear();
            }
        }
        entries.insert(
            (subaccount.clone(), google_email.to_owned()),
            Held {
                access_token: Zeroizing::new(access_token.to_owned()),
                expires_at,
                issued_at,
                until: now + self.ttl,
            },
        );
    }

    /// Forgets the account's token (disconnected, connected again, or `reauth_required`), and
    /// keeps reads under way from putting it back.
    pub fn forget(&self, subaccount: &SubaccountId, google_email: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        self.generation.fetch_add(1, Ordering::AcqRel);
        entries.remove(&(subaccount.clone(), google_email.to_owned()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account() -> (SubaccountId, &'static str) {
        (
            SubaccountId::parse("68cf05f060d294db17c0685e").expect("id"),
            "a@gmail.com",
        )
    }

    fn hold(held: &HeldTokens, start: ReadStart, token: &str) {
        let (sub, email) = account();
        let expires = Utc::now() + chrono::Duration::hours(1);
        held.hold(start, &sub, email, token, expires, None);
    }

    fn get(held: &HeldTokens) -> Option<String> {
        let (sub, email) = account();
        held.get(&sub, email, |_, _| true).map(|t| t.access_token)
    }

    #[test]
    fn a_held_token_is_served_until_its_ttl() {
        let held = HeldTokens::new(Duration::from_millis(200));
        hold(&held, held.read_start(), "t1");
        assert_eq!(get(&held).as_deref(), Some("t1"));
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(get(&held), None);
    }

    #[test]
    fn a_token_without_enough_life_left_is_not_served() {
        let held = HeldTokens::new(Duration::from_secs(60));
        hold(&held, held.read_start(), "t1");
        let (sub, email) = account();
        assert!(held.get(&sub, email, |_, _| false).is_none());
    }

    #[test]
    fn a_read_that_started_before_a_forget_does_not_put_the_token_back() {
        let held = HeldTokens::new(Duration::from_secs(60));
        let (sub, email) = account();
        let before = held.read_start();
        held.forget(&sub, email);
        hold(&held, before, "stale");
        assert_eq!(get(&held), None);
        hold(&held, held.read_start(), "fresh");
        assert_eq!(get(&held).as_deref(), Some("fresh"));
        held.forget(&sub, email);
        assert_eq!(get(&held), None);
    }

    #[test]
    fn a_zero_ttl_holds_nothing() {
        let held = HeldTokens::new(Duration::ZERO);
        hold(&held, held.read_start(), "t1");
        assert_eq!(get(&held), None);
    }
}
