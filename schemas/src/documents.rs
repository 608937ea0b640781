//! The MongoDB documents of one tenant database (the database `connection_for(subaccountId)`
//! returns). Documents are read leniently (no `deny_unknown_fields`): other systems of the
//! platform write `connectorsubaccount` too, e.g. Mongoose adds `__v`.

pub mod calendar;
pub mod connector_subaccount;
pub mod google_auth;
pub mod operation;
pub mod outbox;
pub mod webhook;

pub use calendar::Calendar;
pub use connector_subaccount::{
    ConnectorSubaccount, GoogleCalendarConnection, GoogleCalendarMetadata,
};
pub use google_auth::{AuthStatus, EncryptedToken, GoogleAuth};
pub use operation::{Operation, OperationStatus};
pub use outbox::OutboxEntry;
pub use webhook::{DeliveryOutcome, WebhookDelivery, WebhookEndpoint};
