//! Access tokens for other services (`access-token-requested` over NATS): from this replica's
//! memory ([`HeldTokens`], for `ACCESS_TOKEN_MEMORY_TTL` after it last read the account), else
//! from the Redis cache, while they have at least the margin to live, else from MongoDB, else
//! refreshed. The margin is `ACCESS_TOKEN_MARGIN`, or half the token's lifetime when that is
//! shorter: a provider issuing 30-second tokens would otherwise force a refresh on every
//! request.
//!
//! A refresh happens once across all replicas: the replica that wins a Redis lock (`SET NX
//! PX` with a random value, released only by its holder) refreshes; the others wait for the
//! cache to fill. The write is fenced: it lands only if the document's `tokenVersion` is still
//! the one the holder read, so a holder that stalled past its lock cannot overwrite a newer
//! token. `invalid_grant` marks the account `reauth_required` and emits connection-failed
//! (through the outbox: stored before the reply, published even after a crash). So does an
//! expired token of a grant that came without a refresh token, answered `no_refresh_token`
//! (now and on every later request) so the caller learns why.
//!
//! Cached tokens are encrypted with the vault like stored ones. Tokens never reach logs.

use std::time::Duration;

use chrono::{DateTime, Utc};
use redis::AsyncCommands;
use schemas::documents::google_auth::AuthStatus;
use schemas::events::{
    AccessTokenRejectionCode, AccessTokenReply, AccessTokenRequested, ConnectionFailed,
    FailureReason,
};
use schemas::{Envelope, SubaccountId};
use serde::{Deserialize, Serialize};
use service_kit::Infrastructure;

use crate::held_tokens::HeldTokens;
use crate::outbox::Outbox;
use crate::provider::Provider;
use crate::token_store::{StoredAuth, TokenStore};
use crate::vault::{TokenBinding, TokenKind};

/// How long a refresh lock is held at most: above a refresh's worst case with the defaults
/// (3 attempts of `PROVIDER_TIMEOUT` 10 s plus backoff). Should a holder outlive it anyway,
/// the `tokenVersion` fence keeps a second refresh from overwriting a newer token.
const LOCK_TTL: Duration = Duration::from_secs(60);
/// How long a replica waits for another's refresh before answering `unavailable`: below the
/// 10-second default request timeout of NATS clients, so the caller gets an answer.
const WAIT_FOR_OTHER: Duration = Duration::from_secs(8);
/// How often a replica waiting for another's refresh looks at the cache.
const WAIT_POLL: Duration = Duration::from_millis(50);

#[derive(Debug)]
pub struct AccessTokens {
    pub infra: Infrastructure,
    pub store: TokenStore,
    pub provider: Provider,
    pub outbox: Outbox,
    pub margin: Duration,
    /// Tokens this replica read lately, shared with the disconnect handler (which forgets).
    pub held: std::sync::Arc<HeldTokens>,
}

/// A usable token. Never printed.
pub struct Issued {
    pub access_token: String,
    pub expires_at: DateTime<Utc>,
    /// When it was issued, where known: with `expires_at`, its lifetime, which caps the margin.
    pub issued_at: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AccessTokenError {
    #[error("no Google account {0} is connected for this subaccount")]
    NotConnected(String),
    #[error("Google refused the refresh token for {0}: the user must connect again")]
    ReauthRequired(String),
    #[error(
        "{0} was connected without a refresh token (the provider did not grant offline access) \
         and its access token has expired: the user must connect again"
    )]
    NoRefreshToken(String),
    #[error("{0}")]
    Unavailable(String),
}

/// The cache entry: the token encrypted, and when it expires.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Cached {
    token: String,
    expires_at: DateTime<Utc>,
    /// Absent in entries cached before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    issued_at: Option<DateTime<Utc>>,
}

impl crate::rpc::Responder for AccessTokens {
    async fn respond(&self, request: &[u8], _headers: Option<&async_nats::HeaderMap>) -> Vec<u8> {
        let reply = match Envelope::<AccessTokenRequested>::decode(request) {
            Err(error) => AccessTokenReply::Rejected {
                code: AccessTokenRejectionCode::InvalidRequest,
                message: format!("access token request not understood: {error}"),
            },
            Ok(request) => {
                let email = schemas::google_account_key(&request.payload.google_email);
                match self.get(&request.subaccount_id, &email).await {
                    Ok(issued) => AccessTokenReply::Issued {
                        access_token: issued.access_token,
                        expires_at: issued.expires_at,
                    },
                    Err(error) => {
                        let code = match &error {
                            AccessTokenError::NotConnected(_) => {
                                AccessTokenRejectionCode::NotConnected
                            }
                            AccessTokenError::ReauthRequired(_) => {
                                AccessTokenRejectionCode::ReauthRequired
                            }
                            AccessTokenError::NoRefreshToken(_) => {
                                AccessTokenRejectionCode::NoRefreshToken
                            }
                            AccessTokenError::Unavailable(_) => {
                                AccessTokenRejectionCode::Unavailable
                            }
                        };
                        AccessTokenReply::Rejected {
                            code,
                            message: error.to_string(),
                        }
                    }
                }
            }
        };
        serde_json::to_vec(&reply).expect("replies always serialize")
    }
}

impl AccessTokens {
    /// A token with at least the margin to live.
    pub async fn get(
        &self,
        subaccount: &SubaccountId,
        google_email: &str,
    ) -> Result<Issued, AccessTokenError> {
        let usable = |expires_at, issued_at| {
            expires_at - self.margin_for(issued_at, expires_at) > Utc::now()
        };
        if let Some(held) = self.held.get(subaccount, google_email, usable) {
            metrics::counter!("access_tokens_total", "source" => "memory").increment(1);
            return Ok(held);
        }
        let start = self.held.read_start();
        let issued = self.read_or_refresh(subaccount, google_email).await?;
        self.held.hold(
            start,
            subaccount,
            google_email,
            &issued.access_token,
            issued.expires_at,
            issued.issued_at,
        );
        Ok(issued)
    }

    /// From Redis, else MongoDB, else the provider.
    async fn read_or_refresh(
        &self,
        subaccount: &SubaccountId,
        google_email: &str,
    ) -> Result<Issued, AccessTokenError> {
        if let Some(issued) = self.cached(subaccount, google_email).await {
            metrics::counter!("access_tokens_total", "source" => "cache").increment(1);
            return Ok(issued);
        }
        let stored = self.load(subaccount, google_email).await?;
        if let Some(issued) = self.fresh(&stored) {
            self.cache(subaccount, google_email, &issued).await;
            metrics::counter!("access_tokens_total", "source" => "database").increment(1);
            return Ok(issued);
        }
        self.refresh_once(subaccount, google_email).await
    }

    async fn load(
        &self,
        subaccount: &SubaccountId,
        google_email: &str,
    ) -> Result<StoredAuth, AccessTokenError> {
        let stored = self
            .store
            .load(subaccount, google_email)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "cannot read stored tokens");
                AccessTokenError::Unavailable("stored tokens cannot be read right now".into())
            })?
            .ok_or_else(|| AccessTokenError::NotConnected(google_email.to_owned()))?;
        match stored.document.status {
            AuthStatus::Active => Ok(stored),
            AuthStatus::ReauthRequired if stored.refresh_token.is_none() => {
                Err(AccessTokenError::NoRefreshToken(google_email.to_owned()))
            }
            AuthStatus::ReauthRequired => {
                Err(AccessTokenError::ReauthRequired(google_email.to_owned()))
            }
            AuthStatus::Revoked => Err(AccessTokenError::NotConnected(google_email.to_owned())),
        }
    }

    /// The stored access token, if it still has the margin to live.
    fn fresh(&self, stored: &StoredAuth) -> Option<Issued> {
        let expires_at = stored.document.expires_at.to_chrono();
        let issued_at = stored
            .document
            .access_token_issued_at
            .map(bson::DateTime::to_chrono);
        (expires_at - self.margin_for(issued_at, expires_at) > Utc::now()).then(|| Issued {
            access_token: stored.access_token.expose().to_owned(),
            expires_at,
            issued_at,
        })
    }

    /// How long before its expiry a token stops being handed out: `ACCESS_TOKEN_MARGIN`, or
    /// half the token's lifetime when that is shorter (known when it was issued).
    fn margin_for(
        &self,
        issued_at: Option<DateTime<Utc>>,
        expires_at: DateTime<Utc>,
    ) -> chrono::Duration {
        let margin = chrono::Duration::from_std(self.margin).unwrap_or_default();
        match issued_at {
            Some(issued_at) if expires_at > issued_at => margin.min((expires_at - issued_at) / 2),
            _ => margin,
        }
    }

    /// Refreshes under the lock, or waits for the replica that holds it.
    async fn refresh_once(
        &self,
        subaccount: &SubaccountId,
        google_email: &str,
    ) -> Result<Issued, AccessTokenError> {
        let lock_key = self.infra.keys.refresh_lock(subaccount, google_email);
        // 122 random bits: only this holder can release the lock.
        let holder = uuid::Uuid::new_v4().simple().to_string();
        let mut redis = self.infra.redis.clone();
        let options = redis::SetOptions::default()
            .conditional_set(redis::ExistenceCheck::NX)
            .with_expiration(redis::SetExpiry::PX(LOCK_TTL.as_millis() as u64));
        let acquired: Option<String> = redis
            .set_options(&lock_key, &holder, options)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "Redis unavailable for the refresh lock");
                AccessTokenError::Unavailable("the token cache (Redis) is unavailable".into())
            })?;
        if acquired.is_none() {
            return self.wait_for_other(subaccount, google_email).await;
        }
        let result = self.refresh_holding_lock(subaccount, google_email).await;
        // Released only if still ours: a Lua compare-and-delete.
        let released: redis::RedisResult<i32> = redis::Script::new(
            "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end",
        )
        .key(&lock_key)
        .arg(&holder)
        .invoke_async(&mut redis)
        .await;
        if let Err(e) = released {
            tracing::warn!(error = %e, "refresh lock not released; it expires on its own");
        }
        result
    }

    async fn refresh_holding_lock(
        &self,
        subaccount: &SubaccountId,
        google_email: &str,
    ) -> Result<Issued, AccessTokenError> {
        // Another replica may have refreshed between our cache miss and the lock.
        let stored = self.load(subaccount, google_email).await?;
        if let Some(issued) = self.fresh(&stored) {
            self.cache(subaccount, google_email, &issued).await;
            return Ok(issued);
        }
        let Some(refresh_token) = stored.refresh_token.as_ref() else {
            self.reauth_required(
                subaccount,
                google_email,
                "the access token expired and the grant has no refresh token (the provider did \
                 not grant offline access)",
            )
            .await;
            return Err(AccessTokenError::NoRefreshToken(google_email.to_owned()));
        };
        let tokens = match self.provider.refresh(refresh_token.expose()).await {
            Ok(tokens) => tokens,
            Err(error) if error.is_invalid_grant() => {
                return Err(self
                    .reauth_required(
                        subaccount,
                        google_email,
                        "the provider refused the refresh token (invalid_grant)",
                    )
                    .await);
            }
            Err(error) => {
                tracing::warn!(%error, "token refresh failed");
                metrics::counter!("token_refreshes_total", "outcome" => "failed").increment(1);
                return Err(AccessTokenError::Unavailable(format!(
                    "the provider did not refresh the token: {error}"
                )));
            }
        };
        let written = self
            .store
            .save_refreshed(&stored, &tokens)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "cannot store the refreshed token");
                metrics::counter!("token_refreshes_total", "outcome" => "store_failed")
                    .increment(1);
                AccessTokenError::Unavailable(
                    "the refreshed token cannot be stored right now".into(),
                )
            })?;
        metrics::counter!("token_refreshes_total", "outcome" => "refreshed").increment(1);
        let Some(document) = written else {
            // Fenced: someone wrote a newer version; theirs wins.
            tracing::info!("a newer token was stored meanwhile; using it");
            let stored = self.load(subaccount, google_email).await?;
            return self.fresh(&stored).ok_or_else(|| {
                AccessTokenError::Unavailable(
                    "the token changed during the refresh; try again".into(),
                )
            });
        };
        let issued = Issued {
            access_token: tokens.access_token,
            expires_at: document.expires_at.to_chrono(),
            issued_at: document
                .access_token_issued_at
                .map(bson::DateTime::to_chrono),
        };
        self.cache(subaccount, google_email, &issued).await;
        tracing::info!(expires_at = %issued.expires_at, "access token refreshed");
        Ok(issued)
    }

    async fn reauth_required(
        &self,
        subaccount: &SubaccountId,
        google_email: &str,
        why: &str,
    ) -> AccessTokenError {
        tracing::warn!(why, "the account needs to be connected again");
        self.held.forget(subaccount, google_email);
        metrics::counter!("token_refreshes_total", "outcome" => "reauth_required").increment(1);
        // The event is stored before the account is marked, so a crash between the two
        // cannot leave a marked account nobody was told about (at worst the next request
        // finds the refresh token refused again and announces it again).
        let event = Envelope::new(
            subaccount.clone(),
            uuid::Uuid::now_v7(),
            ConnectionFailed {
                user_email: None,
                google_email: Some(google_email.to_owned()),
                reason: FailureReason::ReauthRequired,
                message: format!("{why}; the user must connect Google Calendar again"),
                missing_scopes: vec![],
            },
        );
        self.outbox.publish_durably(event).await;
        if let Err(error) = self
            .store
            .mark(subaccount, google_email, AuthStatus::ReauthRequired)
            .await
        {
            tracing::error!(%error, "cannot mark the account reauth_required");
        }
        let mut redis = self.infra.redis.clone();
        let _: redis::RedisResult<()> = redis
            .del(self.infra.keys.access_token(subaccount, google_email))
            .await;
        AccessTokenError::ReauthRequired(google_email.to_owned())
    }

    async fn wait_for_other(
        &self,
        subaccount: &SubaccountId,
        google_email: &str,
    ) -> Result<Issued, AccessTokenError> {
        let deadline = tokio::time::Instant::now() + WAIT_FOR_OTHER;
        let lock = self.infra.keys.refresh_lock(subaccount, google_email);
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(WAIT_POLL).await;
            if let Some(issued) = self.cached(subaccount, google_email).await {
                metrics::counter!("access_tokens_total", "source" => "other_replica").increment(1);
                return Ok(issued);
            }
            // The lock first, MongoDB after: the holder stores its outcome (the new token, or
            // the account marked for reauth) before it lets go, so only once the lock is gone
            // is MongoDB final. Read the other way round, a read before the holder's write and
            // a release just after it looked like a refresh that produced nothing; and every
            // poll read MongoDB for as long as the refresh took.
            let mut redis = self.infra.redis.clone();
            let held: bool = redis.exists(&lock).await.unwrap_or(true);
            if held {
                continue;
            }
            // The holder may have failed (reauth, provider down): its outcome is in MongoDB.
            let stored = self.load(subaccount, google_email).await?;
            if let Some(issued) = self.fresh(&stored) {
                metrics::counter!("access_tokens_total", "source" => "other_replica").increment(1);
                return Ok(issued);
            }
            return Err(AccessTokenError::Unavailable(
                "another replica's refresh did not produce a token; try again".into(),
            ));
        }
        Err(AccessTokenError::Unavailable(
            "another replica's refresh did not finish in time; try again".into(),
        ))
    }

    async fn cached(&self, subaccount: &SubaccountId, google_email: &str) -> Option<Issued> {
        let mut redis = self.infra.redis.clone();
        let raw: Option<String> = redis
            .get(self.infra.keys.access_token(subaccount, google_email))
            .await
            .ok()?;
        let cached: Cached = serde_json::from_str(&raw?).ok()?;
        if cached.expires_at - self.margin_for(cached.issued_at, cached.expires_at) <= Utc::now() {
            return None;
        }
        let binding = TokenBinding::new(subaccount.as_str(), google_email, TokenKind::Access);
        let token = self
            .store
            .vault()
            .decrypt_from_str(&cached.token, &binding)
            .ok()?;
        Some(Issued {
            access_token: token.expose().to_owned(),
            expires_at: cached.expires_at,
            issued_at: cached.issued_at,
        })
    }

    /// Caches until the margin before expiry.
    async fn cache(&self, subaccount: &SubaccountId, google_email: &str, issued: &Issued) {
        let margin = self.margin_for(issued.issued_at, issued.expires_at);
        let ttl = (issued.expires_at - margin - Utc::now()).num_milliseconds();
        if ttl <= 0 {
            return;
        }
        let binding = TokenBinding::new(subaccount.as_str(), google_email, TokenKind::Access);
        let entry = Cached {
            token: self
                .store
                .vault()
                .encrypt_to_string(&issued.access_token, &binding),
            expires_at: issued.expires_at,
            issued_at: issued.issued_at,
        };
        let Ok(text) = serde_json::to_string(&entry) else {
            return;
        };
        let mut redis = self.infra.redis.clone();
        let stored: redis::RedisResult<()> = redis
            .pset_ex(
                self.infra.keys.access_token(subaccount, google_email),
                text,
                ttl as u64,
            )
            .await;
        if let Err(e) = stored {
            tracing::warn!(error = %e, "access token not cached");
        }
    }
}
