//! An asynchronous operation a caller can follow (`GET /api/connectors/{id}/operations/{id}`):
//! today, disconnects. Created `pending` by the api, finished by the worker that carries it out.

use bson::DateTime;
use serde::{Deserialize, Serialize};

pub const COLLECTION: &str = "operations";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Operation {
    /// A UUIDv7, also in the event that carries the operation.
    #[serde(rename = "_id")]
    pub id: String,
    pub subaccount_id: String,
    /// `disconnect`.
    pub kind: String,
    /// The account concerned; absent: all of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub google_email: Option<String>,
    pub status: OperationStatus,
    /// What was done (the accounts disconnected).
    #[serde(default)]
    pub disconnected: Vec<String>,
    /// For each account disconnected, what the provider answered to the revocation: a
    /// `refused` one is disconnected here but may still be live at the provider.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub revocations: Vec<AccountRevocation>,
    /// Why it failed, when it did (safe to show).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub created_at: DateTime,
    pub updated_at: DateTime,
}

/// One account's revocation in a disconnect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountRevocation {
    pub google_email: String,
    pub outcome: crate::events::RevocationOutcome,
    /// The provider's refusal (its error code and description; safe to show), when refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperationStatus {
    Pending,
    Done,
    Failed,
}
