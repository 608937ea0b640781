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
//!     isConnected: true
//!   },
//!   isActive: true,
//!   createdAt: Date(...),
//!   updatedAt: Date(...)
//! }
//! ```

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

/// `metadata` of the `google-calendar` connector once connected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GoogleCalendarMetadata {
    /// Hex `_id` of the calendar entry (`calendars` collection).
    pub calendar_id: String,
    pub user_email: String,
    pub google_email: String,
    /// ISO 8601 string with milliseconds and `Z` (not a BSON date), as the spec stores it.
    pub connected_at: String,
    pub is_connected: bool,
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
            metadata: bson::to_document(&GoogleCalendarMetadata {
                calendar_id: "507f1f77bcf86cd799439011".into(),
                user_email: "user@example.com".into(),
                google_email: "googleuser@gmail.com".into(),
                connected_at: "2025-10-05T12:00:00.000Z".into(),
                is_connected: true,
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
                "isConnected"
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
