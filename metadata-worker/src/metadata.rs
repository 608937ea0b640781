//! The conditional writes to `connectorsubaccount.metadata`, in the tenant's database.
//!
//! Idempotent and ordered without any field the spec's document does not have for a connected
//! account: `metadata.connectedAt` (ISO 8601 with milliseconds and `Z`, so strings compare in
//! time order) is the version.
//! - connection-succeeded sets `metadata` to exactly `{calendarId, userEmail, googleEmail,
//!   connectedAt, isConnected: true}` only if the stored `connectedAt` is older (or absent) and
//!   no newer failure was recorded: a redelivered or replayed event matches nothing, an older
//!   one arriving after a newer one changes nothing.
//! - connection-failed with `reauth_required` for the account the metadata describes sets
//!   `isConnected: false`, `reason` and `reauthRequiredAt` (the event's time), keeping the other
//!   fields, only if the connection it describes is older than the failure and no later failure
//!   is recorded. Other failures (a denied or abandoned attempt) leave a working connection
//!   alone.
//! - connection-disconnected for the account the metadata describes sets `isConnected: false`
//!   and `disconnectedAt`, keeping the other fields, if that connection is older than the
//!   disconnect. A later connection-succeeded replaces the whole object again (a reconnect);
//!   one older than a recorded disconnect or reauth changes nothing.

use bson::{Document, doc};
use mongodb::Collection;
use schemas::documents::connector_subaccount::{COLLECTION, GOOGLE_CALENDAR_CONNECTOR_ID};
use schemas::events::{
    ConnectionDisconnected, ConnectionFailed, ConnectionSucceeded, FailureReason,
};
use schemas::{Envelope, SubaccountId};
use service_kit::mongo::TenantDatabases;

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The metadata changed.
    Written,
    /// Nothing to do: a duplicate, an older event, or a failure that does not concern the
    /// stored connection.
    Unchanged,
    /// The subaccount has no `google-calendar` connector.
    ConnectorMissing,
}

/// `2025-10-05T12:00:00.000Z`, the format of `connectedAt`.
fn iso_millis(at: chrono::DateTime<chrono::Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Only updates: the connector exists (or the event waits for it), created by the api or the
/// platform, which ensured the indexes.
fn collection(tenants: &TenantDatabases, subaccount: &SubaccountId) -> Collection<Document> {
    tenants.existing(subaccount).collection(COLLECTION)
}

fn connector(subaccount: &SubaccountId) -> Document {
    doc! { "subaccountId": subaccount.as_str(), "connectorId": GOOGLE_CALENDAR_CONNECTOR_ID }
}

/// `field` is absent, or holds a time before `at` (ISO strings compare in time order).
fn absent_or_before(field: &str, at: &str) -> Document {
    doc! { "$or": [ { field: { "$exists": false } }, { field: { "$lt": at } } ] }
}

/// Unchanged, or missing: told apart by whether the connector exists at all.
async fn nothing_matched(
    connectors: &Collection<Document>,
    subaccount: &SubaccountId,
) -> mongodb::error::Result<Applied> {
    let exists = connectors
        .find_one(connector(subaccount))
        .projection(doc! { "_id": 1 })
        .await?
        .is_some();
    Ok(if exists {
        Applied::Unchanged
    } else {
        Applied::ConnectorMissing
    })
}

pub async fn apply_succeeded(
    tenants: &TenantDatabases,
    event: &Envelope<ConnectionSucceeded>,
) -> mongodb::error::Result<Applied> {
    let connectors = collection(tenants, &event.subaccount_id);
    let p = &event.payload;
    let mut filter = connector(&event.subaccount_id);
    filter.insert(
        "$and",
        vec![
            absent_or_before("metadata.connectedAt", &p.connected_at),
            absent_or_before("metadata.reauthRequiredAt", &p.connected_at),
            absent_or_before("metadata.disconnectedAt", &p.connected_at),
        ],
    );
    let update = doc! { "$set": {
        "metadata": {
            "calendarId": &p.calendar_id,
            "userEmail": &p.user_email,
            "googleEmail": &p.google_email,
            "connectedAt": &p.connected_at,
            "isConnected": true,
        },
        "updatedAt": bson::DateTime::now(),
    } };
    let result = connectors.update_one(filter, update).await?;
    if result.matched_count > 0 {
        return Ok(Applied::Written);
    }
    nothing_matched(&connectors, &event.subaccount_id).await
}

pub async fn apply_failed(
    tenants: &TenantDatabases,
    event: &Envelope<ConnectionFailed>,
) -> mongodb::error::Result<Applied> {
    let (FailureReason::ReauthRequired, Some(google_email)) =
        (event.payload.reason, event.payload.google_email.as_deref())
    else {
        return Ok(Applied::Unchanged);
    };
    let connectors = collection(tenants, &event.subaccount_id);
    let at = iso_millis(event.occurred_at);
    let mut filter = connector(&event.subaccount_id);
    filter.insert("metadata.googleEmail", google_email);
    filter.insert("metadata.connectedAt", doc! { "$lt": &at });
    filter.extend(absent_or_before("metadata.reauthRequiredAt", &at));
    let update = doc! { "$set": {
        "metadata.isConnected": false,
        "metadata.reason": "reauth_required",
        "metadata.reauthRequiredAt": &at,
        "updatedAt": bson::DateTime::now(),
    } };
    let result = connectors.update_one(filter, update).await?;
    if result.matched_count > 0 {
        return Ok(Applied::Written);
    }
    nothing_matched(&connectors, &event.subaccount_id).await
}

pub async fn apply_disconnected(
    tenants: &TenantDatabases,
    event: &Envelope<ConnectionDisconnected>,
) -> mongodb::error::Result<Applied> {
    let connectors = collection(tenants, &event.subaccount_id);
    let at = &event.payload.disconnected_at;
    let mut filter = connector(&event.subaccount_id);
    filter.insert("metadata.googleEmail", &event.payload.google_email);
    filter.insert("metadata.connectedAt", doc! { "$lt": at });
    filter.extend(absent_or_before("metadata.disconnectedAt", at));
    let update = doc! { "$set": {
        "metadata.isConnected": false,
        "metadata.disconnectedAt": at,
        "updatedAt": bson::DateTime::now(),
    } };
    let result = connectors.update_one(filter, update).await?;
    if result.matched_count > 0 {
        return Ok(Applied::Written);
    }
    nothing_matched(&connectors, &event.subaccount_id).await
}
