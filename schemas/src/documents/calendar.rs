//! The calendar entry the spec's webhook-server creates after a successful consent; its `_id`
//! (as hex) becomes `connectorsubaccount.metadata.calendarId`. One per `(subaccountId,
//! googleEmail)`: a reconnect updates it instead of adding another.

use bson::DateTime;
use bson::oid::ObjectId;
use serde::{Deserialize, Serialize};

pub const COLLECTION: &str = "calendars";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Calendar {
    #[serde(rename = "_id")]
    pub id: ObjectId,
    pub subaccount_id: String,
    pub google_email: String,
    pub user_email: String,
    /// `google` — kept so the collection can hold other providers' calendars.
    pub provider: String,
    /// The provider's id for the calendar (Google's primary calendar id is the account email).
    pub provider_calendar_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// False after a disconnect; the entry is kept for history.
    pub is_active: bool,
    pub created_at: DateTime,
    pub updated_at: DateTime,
}
