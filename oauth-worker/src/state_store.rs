//! Pending connect attempts in Redis, keyed by their single-use OAuth `state`. Redis is the
//! right home: an attempt is worth nothing after its TTL, and losing one only means the user
//! asks for a new link.

use std::time::Duration;

use chrono::{DateTime, Utc};
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use schemas::{SubaccountId, UserEmail};
use serde::{Deserialize, Serialize};
use service_kit::redis::RedisKeys;
use uuid::Uuid;

/// What the callback needs to finish an attempt. Holds the PKCE verifier: a secret, so it has
/// no `Debug` that prints it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingAttempt {
    pub subaccount_id: SubaccountId,
    pub user_email: UserEmail,
    pub pkce_verifier: String,
    pub correlation_id: Uuid,
    pub issued_at: DateTime<Utc>,
    /// W3C `traceparent` of the span that issued the link: the callback, minutes later and
    /// from the user's browser, continues the connect attempt's trace. Absent in attempts
    /// stored by older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

impl std::fmt::Debug for PendingAttempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingAttempt")
            .field("subaccount_id", &self.subaccount_id)
            .field("user_email", &self.user_email)
            .field("correlation_id", &self.correlation_id)
            .field("issued_at", &self.issued_at)
            .field("traceparent", &self.traceparent)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
pub struct StateStore {
    redis: ConnectionManager,
    keys: RedisKeys,
    ttl: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum StateStoreError {
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("a pending attempt in Redis is not readable: {0}")]
    Corrupt(#[from] serde_json::Error),
    #[error("state collision (a state was issued twice); refusing to overwrite")]
    Collision,
}

impl StateStore {
    pub fn new(redis: ConnectionManager, keys: RedisKeys, ttl: Duration) -> Self {
        Self { redis, keys, ttl }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Stores a new attempt under `state` with the TTL. `SET NX`: a state is never reused.
    pub async fn put(&self, state: &str, attempt: &PendingAttempt) -> Result<(), StateStoreError> {
        let mut conn = self.redis.clone();
        let value = serde_json::to_string(attempt)?;
        let options = redis::SetOptions::default()
            .conditional_set(redis::ExistenceCheck::NX)
            .with_expiration(redis::SetExpiry::PX(
                u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX),
            ));
        let stored: Option<String> = conn
            .set_options(self.keys.oauth_state(state), value, options)
            .await?;
        match stored {
            Some(_) => Ok(()),
            None => Err(StateStoreError::Collision),
        }
    }

    /// Consumes the attempt stored under `state`, atomically (`GETDEL`): of two callbacks with
    /// the same state, exactly one gets it. `None` when unknown, expired or already used.
    pub async fn take(&self, state: &str) -> Result<Option<PendingAttempt>, StateStoreError> {
        let mut conn = self.redis.clone();
        let raw: Option<String> = conn.get_del(self.keys.oauth_state(state)).await?;
        Ok(raw.map(|raw| serde_json::from_str(&raw)).transpose()?)
    }
}
