//! `connectorsubaccount`: which connectors a subaccount has, kept exactly as the reference spec
//! shows it.
//!
//! ```javascript
//! {
//!   _id: ObjectId("..."),
//!   subaccountId: "68cf05f060d294db17c0685e",
//!   connectorId: "google-calendar",
//!   connectorType: "calendar",
//!   config: { /* existing config */ },
//!   metadata: {
//!     calendarId: "507f1f77bcf86cd799439011",
//!     userEmail: "user@example.com",
//!     googleEmail: "googleuser@gmail.com",
//!     connectedAt: "2025-10-05T12:00:00.000Z",
//!     isConnected: true,
//!     connections: [ /* every Google account of the subaccount, see below */ ]
//!   },
//!   isActive: true,
//!   createdAt: Date(...),
//!   updatedAt: Date(...)
//! }
//! ```
//!
//! The spec's five `metadata` fields describe one account: the most recently connected one that
//! is still connected, or, when none is, the most recently connected one (then `isConnected:
//! false`, with `reason`/`reauthRequiredAt` or `disconnectedAt` saying why). Existing readers keep
//! working. `metadata.connections` (our addition) lists every Google account the subaccount
//! has connected, keyed by `googleEmail`, each in the same shape; a disconnected account stays
//! listed with `isConnected: false` and `disconnectedAt`, which is also what keeps a late,
//! older `connection-succeeded` from bringing it back.

use bson::oid::ObjectId;
use bson::{DateTime, Document};
use serde::{Deserialize, Serialize};

/// The collection's name, as the spec's services use it.
pub const COLLECTION: &str = "connectorsubaccount";
/// The reference spec's connector id for Google Calendar.
pub const GOOGLE_CALENDAR_CONNECTOR_ID: &str = "google-calendar";
/// The spec's `connectorType` for Google Calendar.
pub const CALENDAR_CONNECTOR_TYPE: &str = "calendar";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectorSubaccount {
    #[serde(rename = "_id")]
    pub id: ObjectId,
    pub subaccount_id: String,
    pub connector_id: String,
    pub connector_type: String,
    /// Connector configuration owned by the platform; we never change it.
    #[serde(default)]
    pub config: Document,
    /// Connector-specific state. For `google-calendar` it has the shape of
    /// [`GoogleCalendarMetadata`]; other connectors keep their own, so it stays a document here.
    #[serde(default)]
    pub metadata: Document,
    pub is_active: bool,
    pub created_at: DateTime,
    pub updated_at: DateTime,
}

/// `metadata` of the `google-calendar` connector once connected: the spec's fields for the
/// account it describes, then every account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GoogleCalendarMetadata {
    #[serde(flatten)]
    pub described: GoogleCalendarConnection,
    /// Every account the subaccount has connected (absent in documents written before several
    /// accounts were supported).
    #[serde(default)]
    pub connections: Vec<GoogleCalendarConnection>,
}

/// One Google account of a subaccount, in the spec's shape plus why it is not connected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GoogleCalendarConnection {
    /// Hex `_id` of the calendar entry (`calendars` collection). Absent only for an account
    /// whose disconnect was recorded before its connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calendar_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_email: Option<String>,
    pub google_email: String,
    /// ISO 8601 string with milliseconds and `Z` (not a BSON date), as the spec stores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connected_at: Option<String>,
    pub is_connected: bool,
    /// `reauth_required` when the refresh token stopped working.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reauth_required_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disconnected_at: Option<String>,
}

impl GoogleCalendarConnection {
    /// A connected account, as connection-succeeded describes it.
    pub fn connected(
        calendar_id: &str,
        user_email: &str,
        google_email: &str,
        connected_at: &str,
    ) -> Self {
        Self {
            calendar_id: Some(calendar_id.to_owned()),
            user_email: Some(user_email.to_owned()),
            google_email: google_email.to_owned(),
            connected_at: Some(connected_at.to_owned()),
            is_connected: true,
            reason: None,
            reauth_required_at: None,
            disconnected_at: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connector_document_has_the_specs_field_names() {
        let doc = ConnectorSubaccount {
            id: ObjectId::new(),
            subaccount_id: "68cf05f060d294db17c0685e".into(),
            connector_id: GOOGLE_CALENDAR_CONNECTOR_ID.into(),
            connector_type: CALENDAR_CONNECTOR_TYPE.into(),
            config: Document::new(),
            metadata: bson::to_document(&{
                let account = GoogleCalendarConnection::connected(
                    "507f1f77bcf86cd799439011",
                    "user@example.com",
                    "googleuser@gmail.com",
                    "2025-10-05T12:00:00.000Z",
                );
                GoogleCalendarMetadata {
                    described: account.clone(),
                    connections: vec![account],
                }
            })
            .expect("metadata"),
            is_active: true,
            created_at: DateTime::now(),
            updated_at: DateTime::now(),
        };
        let bson = bson::to_document(&doc).expect("serialize");
        let keys: Vec<_> = bson.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "_id",
                "subaccountId",
                "connectorId",
                "connectorType",
                "config",
                "metadata",
                "isActive",
                "createdAt",
                "updatedAt"
            ]
        );
        let meta_keys: Vec<_> = bson
            .get_document("metadata")
            .expect("doc")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            meta_keys,
            [
                "calendarId",
                "userEmail",
                "googleEmail",
                "connectedAt",
                "isConnected",
                "connections"
            ]
        );
        assert!(matches!(
            bson.get("createdAt"),
            Some(bson::Bson::DateTime(_))
        ));
        assert!(matches!(
            bson.get_document("metadata")
                .expect("doc")
                .get("connectedAt"),
            Some(bson::Bson::String(_))
        ));
        let back: ConnectorSubaccount = bson::from_document(bson).expect("deserialize");
        assert_eq!(back, doc);
    }

    #[test]
    fn documents_written_by_other_systems_still_read() {
        let raw = bson::doc! {
            "_id": ObjectId::new(), "subaccountId": "68cf05f060d294db17c0685e",
            "connectorId": "google-calendar", "connectorType": "calendar",
            "isActive": true, "createdAt": DateTime::now(), "updatedAt": DateTime::now(), "__v": 0,
        };
        let doc: ConnectorSubaccount = bson::from_document(raw).expect("lenient read");
        assert!(doc.metadata.is_empty());
    }
}
