//! oauth-worker → mailer-worker, on JetStream: a link was issued and should be emailed.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::envelope::{Event, StreamEvent};
use crate::ids::{DisplayName, UserEmail};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthLinkIssued {
    /// The recipient.
    pub user_email: UserEmail,
    /// The link to put in the email: the oauth-worker's consent page for this attempt, which
    /// says who asks and leads on to the provider.
    pub auth_url: String,
    /// The email says until when the link works.
    pub expires_at: DateTime<Utc>,
    /// When the link's state was stored: with `expiresAt`, how long the link works. Absent in
    /// events of older versions (the email then counts from the event's `occurredAt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_at: Option<DateTime<Utc>>,
    /// The product that asks (`PRODUCT_NAME`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_name: Option<DisplayName>,
    /// The tenant that asks; absent: the email names the subaccount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_name: Option<DisplayName>,
    /// The OAuth scopes asked for, which the email puts in plain words.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
}

impl Event for AuthLinkIssued {
    const TYPE: &'static str = "auth-link-issued";
    const VERSION: u32 = 1;
}

impl StreamEvent for AuthLinkIssued {
    const SUBJECT_TOKENS: &'static str = "auth-link.issued";
}
