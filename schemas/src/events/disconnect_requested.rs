//! api → oauth-worker, on JetStream: a user asked to disconnect one Google account of a
//! subaccount, or all of them. Durable (the revocation at the provider may have to wait for
//! it to recover); the operation's progress is in the tenant's `operations` collection.
//!
//! Fenced by connection generation: the request names each account with the generation it
//! had when the request was made, and only that connection is disconnected. An account
//! connected again since (a new generation) is left alone, however late the request is
//! handled (a slow worker, a redelivery, a replay).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::envelope::{Event, StreamEvent};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DisconnectRequested {
    /// The operation the api created (`GET /api/connectors/{id}/operations/{operationId}`).
    pub operation_id: String,
    /// One account; absent: every account of the subaccount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub google_email: Option<String>,
    /// The connections to end: every account concerned (one, or all of the subaccount's) with
    /// the generation it had when the request was made. An account not listed is not
    /// touched. Absent in requests published before generations existed: those end a
    /// connection only if it was made before the request (its `connectedAt` is not after the
    /// event's `occurredAt`, or unknown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<Vec<ConnectionGeneration>>,
}

/// One connection of a Google account: the account and the generation its current grant has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectionGeneration {
    pub google_email: String,
    /// `generation` of the account's `googleauths` document: 1 for its first connection, one
    /// more for each connection after it; 0 for a document stored before generations existed.
    pub generation: i64,
}

impl Event for DisconnectRequested {
    const TYPE: &'static str = "disconnect-requested";
    const VERSION: u32 = 1;
}

impl StreamEvent for DisconnectRequested {
    /// Not `connection.*`: the metadata-worker's filter takes that family.
    const SUBJECT_TOKENS: &'static str = "disconnect.requested";
}
