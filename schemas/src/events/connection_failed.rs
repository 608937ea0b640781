//! oauth-worker → metadata-worker / notifiers, on JetStream: a connection attempt failed, or a
//! connected account stopped working (`reauth_required`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::envelope::{Event, StreamEvent};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectionFailed {
    /// The platform user of the attempt, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_email: Option<String>,
    /// The Google account concerned, when known (always set for `reauth_required`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub google_email: Option<String>,
    pub reason: FailureReason,
    /// Human-readable detail, safe to show: never contains tokens or secrets.
    pub message: String,
    /// For `scope_not_granted`: the required scopes the user left unticked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing_scopes: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FailureReason {
    /// The user pressed Deny (`error=access_denied`), or the provider returned another error.
    AccessDenied,
    /// The provider returned an `error=` other than access_denied.
    ProviderError,
    /// The user unticked a required scope.
    ScopeNotGranted,
    /// The code could not be exchanged for tokens (after bounded retries).
    TokenExchangeFailed,
    /// The Google account's email could not be determined.
    IdentityUnavailable,
    /// The refresh token stopped working (`invalid_grant`): the user must connect again.
    ReauthRequired,
    /// The tokens could not be stored (MongoDB unavailable); the user should try again.
    StorageUnavailable,
    /// The subaccount already has `MAX_GOOGLE_ACCOUNTS` connected accounts.
    AccountLimitReached,
    /// `CONSENT_ACCOUNT_POLICY` refused the Google account: it is not the invited `userEmail`
    /// (`invited`), its domain is not allowed (`domain`), or its email is not verified.
    /// `userEmail` is the invited address, `googleEmail` the account used, and `message` says
    /// which account was expected; nothing was stored and the grant was revoked.
    AccountMismatch,
}

impl Event for ConnectionFailed {
    const TYPE: &'static str = "connection-failed";
    const VERSION: u32 = 1;
}

impl StreamEvent for ConnectionFailed {
    const SUBJECT_TOKENS: &'static str = "connection.failed";
}
