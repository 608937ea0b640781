//! The webhook documents in the tenant database: endpoints (read; disabled on 410) and the
//! delivery log (one record per attempt).

use std::time::Duration;

use bson::doc;
use futures::TryStreamExt;
use mongodb::Collection;
use schemas::SubaccountId;
use schemas::documents::webhook::{
    DELIVERIES_COLLECTION, DeliveryOutcome, ENDPOINTS_COLLECTION, WebhookDelivery, WebhookEndpoint,
};
use service_kit::mongo::{Expiry, TenantDatabases};

fn endpoints(mongo: &TenantDatabases, subaccount: &SubaccountId) -> Collection<WebhookEndpoint> {
    // Reads and updates of documents the api created (with the indexes): no index check.
    mongo.existing(subaccount).collection(ENDPOINTS_COLLECTION)
}

/// The subaccount's enabled endpoints, whatever events they subscribe to.
pub async fn enabled(
    mongo: &TenantDatabases,
    subaccount: &SubaccountId,
) -> mongodb::error::Result<Vec<WebhookEndpoint>> {
    endpoints(mongo, subaccount)
        .find(doc! { "subaccountId": subaccount.as_str(), "enabled": true })
        .await?
        .try_collect()
        .await
}

/// One endpoint, if it still exists.
pub async fn endpoint(
    mongo: &TenantDatabases,
    subaccount: &SubaccountId,
    endpoint_id: &str,
) -> mongodb::error::Result<Option<WebhookEndpoint>> {
    endpoints(mongo, subaccount)
        .find_one(doc! { "_id": endpoint_id, "subaccountId": subaccount.as_str() })
        .await
}

/// Marks the endpoint disabled (the receiver answered 410 Gone).
pub async fn disable(
    mongo: &TenantDatabases,
    subaccount: &SubaccountId,
    endpoint_id: &str,
    reason: &str,
) -> mongodb::error::Result<()> {
    let now = bson::DateTime::now();
    endpoints(mongo, subaccount)
        .update_one(
            doc! { "_id": endpoint_id, "subaccountId": subaccount.as_str(), "enabled": true },
            doc! { "$set": {
                "enabled": false,
                "disabledAt": now,
                "disabledReason": reason,
                "updatedAt": now,
            } },
        )
        .await
        .map(|_| ())
}

async fn deliveries(
    mongo: &TenantDatabases,
    subaccount: &SubaccountId,
) -> mongodb::error::Result<Collection<WebhookDelivery>> {
    // Creates documents: the indexes are ensured (once per tenant and process).
    Ok(mongo
        .connection_for(subaccount)
        .await?
        .collection(DELIVERIES_COLLECTION))
}

/// Whether this event was already delivered to this endpoint (a redelivery after an ack that
/// got lost, or a replay): then it is not sent again.
pub async fn already_delivered(
    mongo: &TenantDatabases,
    subaccount: &SubaccountId,
    endpoint_id: &str,
    event_id: &str,
) -> mongodb::error::Result<bool> {
    let found = deliveries(mongo, subaccount)
        .await?
        .find_one(doc! {
            "endpointId": endpoint_id,
            "eventId": event_id,
            "outcome": DeliveryOutcome::Delivered.as_str(),
        })
        .await?;
    Ok(found.is_some())
}

/// The delivery log's TTL index: an attempt is deleted `ttl` after `attemptedAt`.
pub fn log_expiry(ttl: Duration) -> Expiry {
    Expiry {
        collection: DELIVERIES_COLLECTION,
        field: "attemptedAt",
        ttl,
    }
}

/// Appends one attempt to the delivery log, which keeps it for `ttl`.
pub async fn record(
    mongo: &TenantDatabases,
    subaccount: &SubaccountId,
    attempt: &WebhookDelivery,
    ttl: Duration,
) -> mongodb::error::Result<()> {
    let db = mongo.connection_for(subaccount).await?;
    mongo.ensure_expiry(&db, log_expiry(ttl)).await?;
    db.collection::<WebhookDelivery>(DELIVERIES_COLLECTION)
        .insert_one(attempt)
        .await
        .map(|_| ())
}
