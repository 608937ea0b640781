//! Google auth: one document per `(subaccountId, googleEmail)` holding that account's tokens,
//! encrypted. The collection name is the one Mongoose gives the spec's `GoogleAuth` model.

use bson::oid::ObjectId;
use bson::{Binary, DateTime};
use serde::{Deserialize, Serialize};

pub const COLLECTION: &str = "googleauths";

/// The field holding an account's place under `MAX_GOOGLE_ACCOUNTS` ([`GoogleAuth::slot`]).
pub const SLOT_FIELD: &str = "slot";

/// The field holding an account's connection generation ([`GoogleAuth::generation`]).
pub const GENERATION_FIELD: &str = "generation";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GoogleAuth {
    #[serde(rename = "_id")]
    pub id: ObjectId,
    pub subaccount_id: String,
    pub google_email: String,
    /// The platform user who connected this account most recently.
    pub user_email: String,
    pub access_token: EncryptedToken,
    /// Absent only if the provider never sent one; a reconnect without one keeps the old one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<EncryptedToken>,
    /// When the access token expires.
    pub expires_at: DateTime,
    /// When the access token was issued: with `expiresAt`, its lifetime, which bounds how
    /// early it is refreshed. Absent in documents written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token_issued_at: Option<DateTime>,
    /// The provider issued no refresh token for this grant and none was kept from an earlier
    /// one (offline access not granted): once the access token expires, the user must
    /// connect again. Absent (false) in documents written before it was recorded.
    #[serde(default)]
    pub no_refresh_token: bool,
    /// The scopes the user actually granted.
    pub scopes: Vec<String>,
    pub status: AuthStatus,
    /// Incremented on every token write; a refresh only lands if the version it read is still
    /// current (fencing against a slow lock holder).
    pub token_version: i64,
    /// Incremented by every connection (consent) of the account, never by a refresh: a
    /// disconnect requested against one generation never ends a later one. Absent (read as 0)
    /// on documents stored before generations existed.
    #[serde(default)]
    pub generation: i64,
    /// When the current generation was connected; absent on documents stored before it was
    /// recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connected_at: Option<DateTime>,
    /// Which of the subaccount's `MAX_GOOGLE_ACCOUNTS` places this account holds, from 0:
    /// unique per subaccount (a partial unique index), so concurrent connections of new
    /// accounts cannot together exceed the cap. `None` on documents stored before places
    /// existed; they get one at the next connection of a new account there is room for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<i32>,
    pub created_at: DateTime,
    pub updated_at: DateTime,
    /// The outbox: an event written together with the tokens that JetStream has not
    /// acknowledged yet. Cleared once published; a relay publishes what a crash or a NATS
    /// outage left here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_event: Option<PendingEvent>,
}

/// An event waiting to be published, exactly as it will go on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingEvent {
    /// The envelope id, also the `Nats-Msg-Id`: a second publish is dropped as a duplicate.
    pub event_id: String,
    /// The event type (`connection-succeeded`).
    pub event_type: String,
    /// The envelope's JSON.
    pub envelope: String,
}

/// AES-256-GCM ciphertext with what is needed to decrypt it; the associated data binds it to
/// `subaccountId` and `googleEmail`, so a ciphertext copied to another record does not decrypt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EncryptedToken {
    /// Which configured key encrypted it; older keys still decrypt after a rotation.
    pub key_id: String,
    /// 96-bit random nonce.
    pub nonce: Binary,
    /// Ciphertext followed by the 128-bit tag.
    pub ciphertext: Binary,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthStatus {
    Active,
    /// The refresh token was refused (`invalid_grant`); the user must connect again.
    ReauthRequired,
    Revoked,
}
