//! The tenant's `googleauths` collection: one document per `(subaccountId, googleEmail)` with
//! the account's tokens encrypted by the [`TokenVault`].
//!
//! - [`TokenStore::save_connection`]: after a consent. Replaces the tokens, keeps the stored
//!   refresh token when the provider sent none, re-encrypts with the current key, and writes
//!   the connection-succeeded event into the same document (the outbox) in the same write.
//!   Each connection is a new `generation`; a new account takes one of the subaccount's
//!   `MAX_GOOGLE_ACCOUNTS` places (`slot`, unique by index), which makes the cap exact.
//! - [`TokenStore::delete_generation`]: a disconnect deletes only the generation it was
//!   requested against, never a connection made after the request.
//! - [`TokenStore::load`] / [`TokenStore::save_refreshed`]: the refresh path; a refresh lands
//!   only if the `tokenVersion` it read is still current (fencing).
//! - [`TokenStore::mark`]: `reauth_required` after `invalid_grant`, `revoked` after a disconnect.

use std::time::Duration;

use bson::{DateTime, Document, doc};
use mongodb::Collection;
use mongodb::options::ReturnDocument;
use schemas::SubaccountId;
use schemas::documents::google_auth::{
    AuthStatus, COLLECTION, GENERATION_FIELD, GoogleAuth, PendingEvent, SLOT_FIELD,
};
use service_kit::Infrastructure;

use crate::vault::{SecretToken, TokenBinding, TokenKind, TokenVault, VaultError};

#[derive(Debug, thiserror::Error)]
pub enum TokenStoreError {
    #[error("MongoDB: {0}")]
    Mongo(#[from] mongodb::error::Error),
    #[error("stored tokens cannot be decrypted: {0}")]
    Vault(#[from] VaultError),
    #[error("a stored Google auth document is unreadable: {0}")]
    Corrupt(String),
    /// The subaccount has as many Google accounts as `MAX_GOOGLE_ACCOUNTS` allows.
    #[error("the subaccount already has as many Google accounts as allowed")]
    AccountLimitReached,
    /// Concurrent connections kept taking the free places first.
    #[error("too many concurrent connections for the subaccount; try again")]
    Contended,
}

/// How many lost races one connection tolerates before giving up. Each lost race means
/// another connection of the subaccount took the place, so under the cap this is reached
/// only by a flood of concurrent connections.
const SLOT_ATTEMPTS: usize = 64;

/// What a consent produced, in plaintext until [`TokenStore::save_connection`] encrypts it.
#[derive(Debug)]
pub struct NewConnection<'a> {
    pub subaccount: &'a SubaccountId,
    pub google_email: &'a str,
    pub user_email: &'a str,
    pub tokens: &'a crate::provider::Tokens,
    pub scopes: Vec<String>,
    pub event: PendingEvent,
    /// `MAX_GOOGLE_ACCOUNTS`: a new account is stored only if the subaccount has fewer.
    pub max_accounts: usize,
}

/// What [`TokenStore::save_connection`] stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SavedConnection {
    /// A refresh token is stored (the new one, or the one kept from an earlier consent).
    pub has_refresh_token: bool,
}

/// A stored account with its tokens decrypted.
#[derive(Debug)]
pub struct StoredAuth {
    pub document: GoogleAuth,
    pub access_token: SecretToken,
    pub refresh_token: Option<SecretToken>,
}

#[derive(Debug, Clone)]
pub struct TokenStore {
    infra: Infrastructure,
    vault: TokenVault,
}

impl TokenStore {
    pub fn new(infra: Infrastructure, vault: TokenVault) -> Self {
        Self { infra, vault }
    }

    pub fn vault(&self) -> &TokenVault {
        &self.vault
    }

    pub async fn collection(
        &self,
        subaccount: &SubaccountId,
    ) -> Result<Collection<GoogleAuth>, mongodb::error::Error> {
        Ok(self
            .infra
            .mongo
            .connection_for(subaccount)
            .await?
            .collection(COLLECTION))
    }

    /// Stores a consent's tokens and its pending event in one single-document write, as a
    /// new generation of the account's connection, and whether the grant has a refresh token
    /// (`noRefreshToken`). An account already stored keeps its place; a new one takes a free
    /// place under `new.max_accounts`, exactly (see [`SLOT_FIELD`]):
    /// [`TokenStoreError::AccountLimitReached`] when there is none.
    pub async fn save_connection(
        &self,
        new: NewConnection<'_>,
    ) -> Result<SavedConnection, TokenStoreError> {
        let collection = self.collection(new.subaccount).await?;
        let filter =
            doc! { "subaccountId": new.subaccount.as_str(), "googleEmail": new.google_email };
        let binding = |kind| TokenBinding {
            subaccount_id: new.subaccount.as_str(),
            google_email: new.google_email,
            kind,
        };
        // A reconnect without a refresh token keeps the stored one, re-encrypted with the
        // current key (rotation happens on every write).
        let refresh_token = match &new.tokens.refresh_token {
            Some(token) => Some(self.vault.encrypt(token, &binding(TokenKind::Refresh))),
            None => match collection.find_one(filter.clone()).await? {
                Some(existing) => match existing.refresh_token {
                    Some(stored) => {
                        let plain = self.vault.decrypt(&stored, &binding(TokenKind::Refresh))?;
                        Some(
                            self.vault
                                .encrypt(plain.expose(), &binding(TokenKind::Refresh)),
                        )
                    }
                    None => None,
                },
                None => None,
            },
        };
        let now = DateTime::now();
        let mut set = doc! {
            "userEmail": new.user_email,
            "accessToken": to_bson(&self.vault.encrypt(&new.tokens.access_token, &binding(TokenKind::Access)))?,
            "expiresAt": expiry(now, new.tokens.expires_in),
            "accessTokenIssuedAt": now,
            "noRefreshToken": refresh_token.is_none(),
            "scopes": &new.scopes,
            "status": to_bson(&AuthStatus::Active)?,
            "connectedAt": now,
            "updatedAt": now,
            "pendingEvent": to_bson(&new.event)?,
        };
        let has_refresh_token = refresh_token.is_some();
        if let Some(refresh) = refresh_token {
            set.insert("refreshToken", to_bson(&refresh)?);
        }
        for _ in 0..SLOT_ATTEMPTS {
            // An account already stored: a new generation in place.
            let updated = collection
                .update_one(
                    filter.clone(),
                    doc! {
                        "$set": set.clone(),
                        "$inc": { "tokenVersion": 1_i64, GENERATION_FIELD: 1_i64 },
                    },
                )
                .await?;
            if updated.matched_count > 0 {
                return Ok(SavedConnection { has_refresh_token });
            }
            // A new account: a free place under the cap, or none.
            let held = self.held_slots(new.subaccount).await?;
            if held.len() >= new.max_accounts {
                return Err(TokenStoreError::AccountLimitReached);
            }
            // Accounts stored before places existed get one first, so they count.
            if let Some((id, _)) = held.iter().find(|(_, slot)| slot.is_none()) {
                let taken: Vec<i32> = held.iter().filter_map(|(_, slot)| *slot).collect();
                let free = (0..).find(|s| !taken.contains(s)).unwrap_or(0);
                self.place(new.subaccount, *id, free).await?;
                continue;
            }
            let places = i32::try_from(new.max_accounts).unwrap_or(i32::MAX);
            let free: Vec<i32> = (0..places)
                .filter(|s| !held.iter().any(|(_, slot)| *slot == Some(*s)))
                .collect();
            if free.is_empty() {
                // More accounts than places (the cap was lowered): none until some go.
                return Err(TokenStoreError::AccountLimitReached);
            }
            let mut document = set.clone();
            document.insert("_id", bson::oid::ObjectId::new());
            document.insert("subaccountId", new.subaccount.as_str());
            document.insert("googleEmail", new.google_email);
            document.insert("tokenVersion", 1_i64);
            document.insert(GENERATION_FIELD, 1_i64);
            document.insert("createdAt", now);
            // A random free place: concurrent connections then rarely collide.
            document.insert(SLOT_FIELD, free[rand::random_range(0..free.len())]);
            match collection
                .clone_with_type::<Document>()
                .insert_one(document)
                .await
            {
                Ok(_) => return Ok(SavedConnection { has_refresh_token }),
                // The place was taken, or the same account was stored meanwhile: look again.
                Err(e) if service_kit::mongo::is_duplicate_key(&e) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        tracing::warn!(
            attempts = SLOT_ATTEMPTS,
            "every free account place was taken by a concurrent connection"
        );
        Err(TokenStoreError::Contended)
    }

    /// Every stored account of the subaccount: its document id and place.
    async fn held_slots(
        &self,
        subaccount: &SubaccountId,
    ) -> Result<Vec<(bson::oid::ObjectId, Option<i32>)>, TokenStoreError> {
        use futures::TryStreamExt;
        let documents: Vec<Document> = self
            .collection(subaccount)
            .await?
            .clone_with_type::<Document>()
            .find(doc! { "subaccountId": subaccount.as_str() })
            .projection(doc! { "_id": 1, SLOT_FIELD: 1 })
            .await?
            .try_collect()
            .await?;
        Ok(documents
            .iter()
            .filter_map(|d| Some((d.get_object_id("_id").ok()?, d.get_i32(SLOT_FIELD).ok())))
            .collect())
    }

    /// Gives an account stored before places existed the place `slot`, unless it has one by
    /// now or the place is taken (the caller looks again either way).
    async fn place(
        &self,
        subaccount: &SubaccountId,
        id: bson::oid::ObjectId,
        slot: i32,
    ) -> Result<(), TokenStoreError> {
        let placed = self
            .collection(subaccount)
            .await?
            .update_one(
                doc! { "_id": id, SLOT_FIELD: { "$exists": false } },
                doc! { "$set": { SLOT_FIELD: slot } },
            )
            .await;
        match placed {
            Ok(_) => Ok(()),
            Err(e) if service_kit::mongo::is_duplicate_key(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The account with its tokens decrypted, or `None` when it is not connected.
    pub async fn load(
        &self,
        subaccount: &SubaccountId,
        google_email: &str,
    ) -> Result<Option<StoredAuth>, TokenStoreError> {
        // A read creates nothing: an access-token request for an unknown subaccount leaves no
        // database behind.
        let found = self
            .infra
            .mongo
            .existing(subaccount)
            .collection::<GoogleAuth>(COLLECTION)
            .find_one(doc! { "subaccountId": subaccount.as_str(), "googleEmail": google_email })
            .await?;
        let Some(document) = found else {
            return Ok(None);
        };
        let binding = |kind| TokenBinding {
            subaccount_id: subaccount.as_str(),
            google_email,
            kind,
        };
        let access_token = self
            .vault
            .decrypt(&document.access_token, &binding(TokenKind::Access))?;
        let refresh_token = document
            .refresh_token
            .as_ref()
            .map(|t| self.vault.decrypt(t, &binding(TokenKind::Refresh)))
            .transpose()?;
        Ok(Some(StoredAuth {
            document,
            access_token,
            refresh_token,
        }))
    }

    /// Writes a refreshed access token if the document is still at `read_version`; `None`
    /// when another writer got there first (the caller re-reads). Re-encrypts the refresh
    /// token with the current key when it was not.
    pub async fn save_refreshed(
        &self,
        stored: &StoredAuth,
        tokens: &crate::provider::Tokens,
    ) -> Result<Option<GoogleAuth>, TokenStoreError> {
        let document = &stored.document;
        let subaccount = SubaccountId::parse(&document.subaccount_id)
            .map_err(|e| TokenStoreError::Corrupt(e.to_string()))?;
        let binding = |kind| TokenBinding {
            subaccount_id: &document.subaccount_id,
            google_email: &document.google_email,
            kind,
        };
        let now = DateTime::now();
        let mut set = doc! {
            "accessToken": to_bson(&self.vault.encrypt(&tokens.access_token, &binding(TokenKind::Access)))?,
            "expiresAt": expiry(now, tokens.expires_in),
            "accessTokenIssuedAt": now,
            "updatedAt": now,
        };
        let refresh = match (&tokens.refresh_token, &stored.refresh_token) {
            (Some(new), _) => Some(new.as_str()),
            (None, Some(old)) => Some(old.expose()),
            (None, None) => None,
        };
        if let Some(refresh) = refresh {
            set.insert(
                "refreshToken",
                to_bson(&self.vault.encrypt(refresh, &binding(TokenKind::Refresh)))?,
            );
        }
        let updated = self
            .collection(&subaccount)
            .await?
            .find_one_and_update(
                doc! {
                    "_id": document.id,
                    "tokenVersion": document.token_version,
                    "status": to_bson(&AuthStatus::Active)?,
                },
                doc! { "$set": set, "$inc": { "tokenVersion": 1_i64 } },
            )
            .return_document(ReturnDocument::After)
            .await?;
        Ok(updated)
    }

    /// Sets the account's status (`reauth_required`, `revoked`); true when it exists.
    pub async fn mark(
        &self,
        subaccount: &SubaccountId,
        google_email: &str,
        status: AuthStatus,
    ) -> Result<bool, TokenStoreError> {
        let result = self
            .collection(subaccount)
            .await?
            .update_one(
                doc! { "subaccountId": subaccount.as_str(), "googleEmail": google_email },
                doc! { "$set": {
                    "status": to_bson(&status)?,
                    "updatedAt": DateTime::now(),
                }, "$inc": { "tokenVersion": 1_i64 } },
            )
            .await?;
        Ok(result.matched_count > 0)
    }

    /// The Google accounts stored for a subaccount.
    pub async fn accounts(
        &self,
        subaccount: &SubaccountId,
    ) -> Result<Vec<String>, TokenStoreError> {
        use futures::TryStreamExt;
        let raw: Collection<Document> =
            self.infra.mongo.existing(subaccount).collection(COLLECTION);
        let documents: Vec<Document> = raw
            .find(doc! { "subaccountId": subaccount.as_str() })
            .projection(doc! { "googleEmail": 1 })
            .await?
            .try_collect()
            .await?;
        Ok(documents
            .iter()
            .filter_map(|d| d.get_str("googleEmail").ok().map(str::to_owned))
            .collect())
    }

    /// Deletes an account's tokens (after they were revoked) if they are still those of
    /// connection `generation`; false when the account was connected again meanwhile (or is
    /// gone). Generation 0 is a document stored before generations existed.
    pub async fn delete_generation(
        &self,
        subaccount: &SubaccountId,
        google_email: &str,
        generation: i64,
    ) -> Result<bool, TokenStoreError> {
        let mut filter = doc! { "subaccountId": subaccount.as_str(), "googleEmail": google_email };
        if generation == 0 {
            filter.insert(GENERATION_FIELD, doc! { "$exists": false });
        } else {
            filter.insert(GENERATION_FIELD, generation);
        }
        let deleted = self
            .collection(subaccount)
            .await?
            .delete_one(filter)
            .await?;
        Ok(deleted.deleted_count > 0)
    }

    /// Clears the outbox entry once JetStream has the event (only if it is still that event).
    pub async fn clear_pending(
        &self,
        subaccount: &SubaccountId,
        event_id: &str,
    ) -> Result<(), TokenStoreError> {
        self.infra
            .mongo
            .existing(subaccount)
            .collection::<Document>(COLLECTION)
            .update_many(
                doc! { "pendingEvent.eventId": event_id },
                doc! { "$unset": { "pendingEvent": "" } },
            )
            .await?;
        Ok(())
    }

    /// Every outbox entry of a tenant.
    pub async fn pending(
        &self,
        subaccount: &SubaccountId,
    ) -> Result<Vec<PendingEvent>, TokenStoreError> {
        use futures::TryStreamExt;
        // `existing`: the relay scans every tenant and must not create collections or
        // indexes in the ones that never connected an account.
        let raw: Collection<Document> =
            self.infra.mongo.existing(subaccount).collection(COLLECTION);
        let documents: Vec<Document> = raw
            .find(doc! { "pendingEvent": { "$exists": true } })
            .projection(doc! { "pendingEvent": 1 })
            .await?
            .try_collect()
            .await?;
        Ok(documents
            .into_iter()
            .filter_map(|d| d.get_document("pendingEvent").ok().cloned())
            .filter_map(|d| bson::from_document::<PendingEvent>(d).ok())
            .collect())
    }
}

/// A value as BSON; our document types always convert, so a failure is reported as corrupt.
fn to_bson<T: serde::Serialize + ?Sized>(value: &T) -> Result<bson::Bson, TokenStoreError> {
    bson::to_bson(value).map_err(|e| TokenStoreError::Corrupt(e.to_string()))
}

fn expiry(now: DateTime, expires_in: Duration) -> DateTime {
    DateTime::from_millis(
        now.timestamp_millis()
            .saturating_add(i64::try_from(expires_in.as_millis()).unwrap_or(i64::MAX)),
    )
}
