//! api → oauth-worker, on JetStream: a user asked to disconnect one Google account of a
//! subaccount, or all of them. Durable (the revocation at the provider may have to wait for
//! it to recover); the operation's progress is in the tenant's `operations` collection.

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
}

impl Event for DisconnectRequested {
    const TYPE: &'static str = "disconnect-requested";
    const VERSION: u32 = 1;
}

impl StreamEvent for DisconnectRequested {
    /// Not `connection.*`: the metadata-worker's filter takes that family.
    const SUBJECT_TOKENS: &'static str = "disconnect.requested";
}
