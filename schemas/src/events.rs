//! One module per event, each named for the fact it records (past tense).

pub mod access_token_requested;
pub mod auth_link_issued;
pub mod connect_requested;
pub mod connection_disconnected;
pub mod connection_failed;
pub mod connection_reported;
pub mod connection_succeeded;
pub mod disconnect_requested;
pub mod webhook_delivery_requested;

pub use access_token_requested::{
    AccessTokenRejectionCode, AccessTokenReply, AccessTokenRequested,
};
pub use auth_link_issued::AuthLinkIssued;
pub use connect_requested::{
    ConnectLimit, ConnectRejectionCode, ConnectRequested, ConnectRequestedReply, LinkLimits,
    LinkSettings, ProviderProfile, RateSpec,
};
pub use connection_disconnected::{ConnectionDisconnected, RevocationOutcome};
pub use connection_failed::{ConnectionFailed, FailureReason};
pub use connection_reported::ConnectionReported;
pub use connection_succeeded::ConnectionSucceeded;
pub use disconnect_requested::{ConnectionGeneration, DisconnectRequested};
pub use webhook_delivery_requested::{WebhookDeliveryRequested, WebhookEvent};
