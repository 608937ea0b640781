//! api → oauth-worker, as a NATS request in a queue group: the frontend is waiting for the
//! authorization URL, so this is request/reply rather than a stream event.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::envelope::Event;
use crate::ids::{DisplayName, UserEmail};

/// A frontend asked to connect a Google Calendar for a subaccount.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectRequested {
    /// Who asked; receives the link and becomes `metadata.userEmail`.
    pub user_email: UserEmail,
    /// Whether the oauth-worker should also email the link (the spec's default: true).
    pub send_email: bool,
    /// Who asks, as the email and the consent page name them (the tenant's display name);
    /// absent: the subaccount id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_name: Option<DisplayName>,
}

impl Event for ConnectRequested {
    const TYPE: &'static str = "connect-requested";
    const VERSION: u32 = 1;
}

/// The oauth-worker's answer. Either the link was issued or the request was refused with a
/// code the api maps to an HTTP status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "status", rename_all = "camelCase", deny_unknown_fields)]
pub enum ConnectRequestedReply {
    #[serde(rename_all = "camelCase")]
    Issued {
        /// The provider's consent URL, with state and PKCE challenge.
        auth_url: String,
        /// When the state behind the URL expires; after that the callback refuses it.
        expires_at: DateTime<Utc>,
        /// True only once the auth-link-issued event was acknowledged by JetStream. False when
        /// no email was asked for, or when JetStream did not accept it: the link still works
        /// and the caller can hand it to the user directly.
        email_sent: bool,
        /// Present only when the request asked for them (`Gcal-Link-Settings-Wanted`): what
        /// the api needs to issue links itself.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        link_settings: Option<LinkSettings>,
    },
    #[serde(rename_all = "camelCase")]
    Rejected {
        code: ConnectRejectionCode,
        /// Safe to show to the caller: never contains secrets.
        message: String,
    },
    /// A limit refused the request; nothing was stored, published or emailed.
    #[serde(rename_all = "camelCase")]
    RateLimited {
        /// The refusing limit that frees up last.
        limit: ConnectLimit,
        /// How long until a retry can succeed.
        retry_after_ms: u64,
        /// Safe to show to the caller: the limit and its rate, in words.
        message: String,
    },
}

/// The limits a connect request is held to, decided by the oauth-worker atomically with the
/// OAuth state it stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConnectLimit {
    /// Connect requests per subaccount and period.
    ConnectPerSubaccount,
    /// Authorization emails per subaccount and period.
    EmailsPerSubaccount,
    /// Authorization emails per recipient address and period, across all subaccounts.
    EmailsPerRecipient,
    /// Issued, not yet used OAuth states per subaccount.
    LiveStatesPerSubaccount,
}

impl ConnectLimit {
    /// The limit's stable name: the serialized form, a metric label, part of a Redis key.
    pub const fn name(self) -> &'static str {
        match self {
            Self::ConnectPerSubaccount => "connect_per_subaccount",
            Self::EmailsPerSubaccount => "emails_per_subaccount",
            Self::EmailsPerRecipient => "emails_per_recipient",
            Self::LiveStatesPerSubaccount => "live_states_per_subaccount",
        }
    }

    /// Every limit, in the order they are checked.
    pub const ALL: [Self; 4] = [
        Self::ConnectPerSubaccount,
        Self::EmailsPerSubaccount,
        Self::EmailsPerRecipient,
        Self::LiveStatesPerSubaccount,
    ];
}

/// Why the oauth-worker could not issue a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConnectRejectionCode {
    /// The request could not be decoded (a contract mismatch between deployed versions).
    InvalidRequest,
    /// Redis, where the single-use state lives, is unavailable: no link can be issued.
    StateStoreUnavailable,
}

/// What an issuer of links must know besides the secrets it never needs: the oauth-worker hands
/// it to the api in an `Issued` reply when the request carries `Gcal-Link-Settings-Wanted`, so
/// the api can issue the links it returns (`sendEmail: false`) itself, with exactly the
/// worker's provider settings and limits. Nothing in it is secret: the client id, the endpoint,
/// the redirect URI and the scopes are in every link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LinkSettings {
    /// The OAuth client id.
    pub client_id: String,
    /// The provider's authorization endpoint.
    pub auth_url: String,
    /// The oauth-worker's callback.
    pub redirect_uri: String,
    /// The scopes a link asks for.
    pub scopes: Vec<String>,
    /// How a link asks for offline access.
    pub profile: ProviderProfile,
    /// How long a link stays usable (`OAUTH_STATE_TTL`).
    pub state_ttl_ms: u64,
    /// Bound on each Redis step of storing a state (`STATE_STORE_TIMEOUT`).
    pub state_store_timeout_ms: u64,
    /// Redis replicas that must have a state before its link is issued (`REDIS_WAIT_REPLICAS`).
    pub wait_replicas: u32,
    /// The limits decided when a state is stored.
    pub limits: LinkLimits,
}

/// The connect request's limits as the oauth-worker applies them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LinkLimits {
    pub connect_per_subaccount: RateSpec,
    pub emails_per_subaccount: RateSpec,
    pub emails_per_recipient: RateSpec,
    pub live_states_per_subaccount: u32,
}

/// `count` requests per `periodMs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateSpec {
    pub count: u32,
    pub period_ms: u64,
}

/// How a provider is asked for offline access (a refresh token): `OAUTH_PROVIDER_PROFILE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProviderProfile {
    /// Google: `access_type=offline` and `prompt=consent` (plus `include_granted_scopes`).
    Google,
    /// OpenID Connect Core §11: the `offline_access` scope with `prompt=consent`.
    Oidc,
}

impl std::str::FromStr for ProviderProfile {
    type Err = String;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        match raw.trim() {
            "google" => Ok(Self::Google),
            "oidc" => Ok(Self::Oidc),
            other => Err(format!("{other:?} is not google or oidc")),
        }
    }
}
