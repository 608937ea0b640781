//! oauth-worker → mailer-worker, on JetStream: a link was issued and should be emailed.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::envelope::{Event, StreamEvent};
use crate::ids::UserEmail;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthLinkIssued {
    /// The recipient.
    pub user_email: UserEmail,
    /// The consent URL to put in the email.
    pub auth_url: String,
    /// The email says until when the link works.
    pub expires_at: DateTime<Utc>,
}

impl Event for AuthLinkIssued {
    const TYPE: &'static str = "auth-link-issued";
    const VERSION: u32 = 1;
}

impl StreamEvent for AuthLinkIssued {
    const SUBJECT_TOKENS: &'static str = "auth-link.issued";
}
