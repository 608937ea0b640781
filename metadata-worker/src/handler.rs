//! Applies one connection event: the conditional write (retried in-process with jittered
//! backoff when MongoDB fails transiently), then the announcement to the subaccount's webhooks
//! ([`FanOut`]), then the api's connector caches are invalidated; each event is delivered to
//! this worker once for all of it.
//!
//! - The fan-out failing (MongoDB or JetStream) → retryable: redelivered; the write is
//!   conditional and the delivery requests are deduplicated by JetStream, so nothing doubles.
//! - The connector missing: announced to webhooks all the same (as the event happened), then
//!   handled as below.
//!
//! - MongoDB unreachable or timing out after `METADATA_WRITE_ATTEMPTS` tries → retryable: the
//!   runner NAKs with `METADATA_RETRY_DELAYS` until `METADATA_MAX_DELIVER`, then parks it.
//! - The connector does not exist → retryable for `METADATA_MISSING_CONNECTOR_DELIVERIES`
//!   deliveries (it may be being created), then permanent: parked with the reason, replayable
//!   with `gcal-ops dlq replay` once the connector exists.
//! - A Redis failure while invalidating is logged; it does not fail the event (the caches
//!   expire on their own after `CONNECTOR_CACHE_TTL`).
//!
//! Events of one subaccount are applied one at a time within a replica (striped locks); the
//! conditional write keeps them correct across replicas and redeliveries anyway.

use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use schemas::SubaccountId;
use schemas::documents::connector_subaccount::GOOGLE_CALENDAR_CONNECTOR_ID;
use service_kit::Infrastructure;
use service_kit::consumer::{Delivery, EventHandler, HandlerError};
use tokio::sync::Mutex;

use crate::events::{ConnectionEvent, ConnectionEvents};
use crate::metadata::{self, Applied};
use crate::webhooks::fan_out::FanOut;

/// Locks per replica; events of subaccounts that hash alike wait for each other briefly.
const STRIPES: usize = 256;
/// A Redis invalidation slower than this is abandoned (and logged).
const CACHE_TIMEOUT: Duration = Duration::from_millis(500);

#[derive(Debug)]
pub struct ConnectionEventHandler {
    pub infra: Infrastructure,
    pub missing_connector_deliveries: i64,
    pub write_attempts: usize,
    fan_out: FanOut,
    stripes: Vec<Arc<Mutex<()>>>,
}

impl ConnectionEventHandler {
    pub fn new(
        infra: Infrastructure,
        fan_out: FanOut,
        missing_connector_deliveries: i64,
        write_attempts: usize,
    ) -> Self {
        Self {
            fan_out,
            infra,
            missing_connector_deliveries,
            write_attempts,
            stripes: (0..STRIPES).map(|_| Arc::default()).collect(),
        }
    }

    fn stripe(&self, subaccount: &SubaccountId) -> Arc<Mutex<()>> {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        subaccount.hash(&mut hasher);
        self.stripes[(hasher.finish() as usize) % STRIPES].clone()
    }

    async fn write(&self, event: &ConnectionEvent) -> Result<Applied, mongodb::error::Error> {
        let tenants = &self.infra.mongo;
        let attempt = || async {
            match event {
                ConnectionEvent::Succeeded(e) => metadata::apply_succeeded(tenants, e).await,
                ConnectionEvent::Failed(e) => metadata::apply_failed(tenants, e).await,
                ConnectionEvent::Disconnected(e) => metadata::apply_disconnected(tenants, e).await,
            }
        };
        attempt
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(100))
                    .with_max_delay(Duration::from_secs(2))
                    .with_max_times(self.write_attempts.saturating_sub(1))
                    .with_jitter(),
            )
            .notify(|error, after| {
                tracing::warn!(%error, ?after, "metadata write failed; retrying");
            })
            .await
    }

    async fn invalidate_caches(&self, subaccount: &SubaccountId) {
        let keys = [
            self.infra.keys.connector_list_cache(subaccount),
            self.infra
                .keys
                .connector_cache(subaccount, GOOGLE_CALENDAR_CONNECTOR_ID),
        ];
        let mut redis = self.infra.redis.clone();
        let version = self.infra.keys.connector_cache_version(subaccount);
        let invalidated =
            service_kit::redis::invalidate_connector_caches(&mut redis, &version, &keys);
        match tokio::time::timeout(CACHE_TIMEOUT, invalidated).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::warn!(%error, "connector caches not invalidated; the api serves the old metadata until they expire")
            }
            Err(_) => tracing::warn!(
                "connector cache invalidation timed out; the api serves the old metadata until it expires"
            ),
        }
    }
}

impl EventHandler<ConnectionEvents> for ConnectionEventHandler {
    async fn handle(&self, event: ConnectionEvent, delivery: Delivery) -> Result<(), HandlerError> {
        let subaccount = event.subaccount().clone();
        let stripe = self.stripe(&subaccount);
        let _in_order = stripe.lock().await;
        let applied = self
            .write(&event)
            .await
            .map_err(|error| HandlerError::Retryable(format!("MongoDB write failed: {error}")))?;
        self.fan_out.announce(&event).await?;
        match applied {
            Applied::Written => {
                self.invalidate_caches(&subaccount).await;
                tracing::info!("connector metadata updated");
                metrics::counter!("metadata_updates_total", "outcome" => "written").increment(1);
                Ok(())
            }
            Applied::Unchanged => {
                tracing::debug!("metadata already reflects this event or a newer one");
                metrics::counter!("metadata_updates_total", "outcome" => "unchanged").increment(1);
                Ok(())
            }
            Applied::ConnectorMissing => {
                let reason = format!(
                    "subaccount {subaccount} has no {GOOGLE_CALENDAR_CONNECTOR_ID} connector (add it with POST /api/connectors/{subaccount}, then replay this event)"
                );
                metrics::counter!("metadata_updates_total", "outcome" => "connector_missing")
                    .increment(1);
                if delivery.delivered >= self.missing_connector_deliveries {
                    Err(HandlerError::Permanent(reason))
                } else {
                    Err(HandlerError::Retryable(reason))
                }
            }
        }
    }
}
