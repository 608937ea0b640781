//! The tenant's `calendars` collection: one entry per `(subaccountId, googleEmail, provider)`,
//! created on the first connection and updated on a reconnect, never duplicated (a unique
//! index backs the upsert). Its `_id` is `connectorsubaccount.metadata.calendarId`.

use bson::{DateTime, doc, oid::ObjectId};
use mongodb::options::ReturnDocument;
use schemas::SubaccountId;
use schemas::documents::calendar::{COLLECTION, Calendar};
use service_kit::Infrastructure;

use crate::provider::PrimaryCalendar;

/// `provider` of the entries this worker writes.
pub const PROVIDER: &str = "google";

/// Creates or updates the account's calendar entry; returns its id.
pub async fn upsert_primary(
    infra: &Infrastructure,
    subaccount: &SubaccountId,
    google_email: &str,
    user_email: &str,
    primary: &PrimaryCalendar,
) -> Result<ObjectId, mongodb::error::Error> {
    let now = DateTime::now();
    let mut set = doc! {
        "userEmail": user_email,
        "providerCalendarId": &primary.id,
        "isActive": true,
        "updatedAt": now,
    };
    if let Some(summary) = &primary.summary {
        set.insert("summary", summary);
    }
    if let Some(zone) = &primary.time_zone {
        set.insert("timeZone", zone);
    }
    let entry = infra
        .mongo
        .connection_for(subaccount)
        .await?
        .collection::<Calendar>(COLLECTION)
        .find_one_and_update(
            doc! { "subaccountId": subaccount.as_str(), "googleEmail": google_email, "provider": PROVIDER },
            doc! { "$set": set, "$setOnInsert": { "_id": ObjectId::new(), "createdAt": now } },
        )
        .upsert(true)
        .return_document(ReturnDocument::After)
        .await?;
    entry
        .map(|calendar| calendar.id)
        .ok_or_else(|| mongodb::error::Error::custom("upsert returned no calendar entry"))
}

/// Marks the account's calendar entry inactive (after a disconnect); the entry is kept.
pub async fn deactivate(
    infra: &Infrastructure,
    subaccount: &SubaccountId,
    google_email: &str,
) -> Result<(), mongodb::error::Error> {
    infra
        .mongo
        .connection_for(subaccount)
        .await?
        .collection::<Calendar>(COLLECTION)
        .update_one(
            doc! { "subaccountId": subaccount.as_str(), "googleEmail": google_email, "provider": PROVIDER },
            doc! { "$set": { "isActive": false, "updatedAt": DateTime::now() } },
        )
        .await?;
    Ok(())
}
