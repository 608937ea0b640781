//! The webhook endpoints of each subaccount, held in memory by the fan-out so that a
//! connection event does not cost a MongoDB read of `webhookendpoints`.
//!
//! Every change of a subaccount's endpoints (the api registering or deleting one, a delivery
//! disabling one on 410 Gone) sets the subaccount's change mark in Redis to a new random value
//! after the change is stored ([`RedisKeys::webhook_endpoints_mark`]). Per event the fan-out
//! reads the mark (one Redis GET, cheaper than the MongoDB query it replaces) and uses what it
//! holds only if it was loaded under that same mark; otherwise it reads MongoDB — after noting
//! the mark, so what it loads is at least as new as the mark it files it under. So an endpoint
//! whose registration was answered is seen by every event the fan-out handles afterwards, on
//! every replica.
//!
//! Where that cannot hold, the bounds:
//! - Redis does not answer the GET (within [`CHANGE_MARK_TIMEOUT`]): the endpoints are read from
//!   MongoDB for that event (exact, as before the registry).
//! - The change was stored but its mark could not be set (Redis down at that moment; logged as
//!   a warning by [`service_kit::webhook::endpoints_changed`]): an entry is trusted at most
//!   [`ENDPOINT_REGISTRY_TTL`] after it was loaded, so the change reaches every event within
//!   that.
//!
//! Announcing to an endpoint that was deleted or disabled meanwhile sends nothing: the
//! delivery reads the endpoint again before each POST.
//!
//! [`RedisKeys::webhook_endpoints_mark`]: service_kit::redis::RedisKeys::webhook_endpoints_mark

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use schemas::SubaccountId;
use schemas::documents::webhook::WebhookEndpoint;
use service_kit::Infrastructure;
use service_kit::webhook::{CHANGE_MARK_TIMEOUT, ENDPOINT_REGISTRY_TTL};

use super::store;

/// Subaccounts held at most; past it the expired entries go, then (if still full) all.
const CAPACITY: usize = 10_000;

/// Where an event's endpoints came from, for `webhook_endpoint_lookups_total{source}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Held, loaded under the current mark.
    Registry,
    /// Read from MongoDB (and held from now on).
    Loaded,
    /// Read from MongoDB because the mark could not be read (not held).
    Unmarked,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Source::Registry => "registry",
            Source::Loaded => "mongodb",
            Source::Unmarked => "mongodb_redis_unavailable",
        }
    }
}

#[derive(Debug)]
struct Entry {
    mark: Option<String>,
    loaded: Instant,
    /// The subaccount's enabled endpoints, whatever events they subscribe to.
    endpoints: Arc<Vec<WebhookEndpoint>>,
}

/// The endpoints each subaccount had when last loaded, and the change mark they were loaded
/// under.
#[derive(Debug, Default)]
pub struct EndpointRegistry {
    entries: Mutex<HashMap<SubaccountId, Entry>>,
}

impl EndpointRegistry {
    /// The subaccount's enabled endpoints subscribed to `event_type`, and where they came from.
    pub async fn subscribed(
        &self,
        infra: &Infrastructure,
        subaccount: &SubaccountId,
        event_type: &str,
    ) -> mongodb::error::Result<(Vec<WebhookEndpoint>, Source)> {
        let (endpoints, source) = self.enabled(infra, subaccount).await?;
        metrics::counter!("webhook_endpoint_lookups_total", "source" => source.as_str())
            .increment(1);
        let subscribed = endpoints
            .iter()
            .filter(|e| e.events.iter().any(|t| t == event_type))
            .cloned()
            .collect();
        Ok((subscribed, source))
    }

    async fn enabled(
        &self,
        infra: &Infrastructure,
        subaccount: &SubaccountId,
    ) -> mongodb::error::Result<(Arc<Vec<WebhookEndpoint>>, Source)> {
        let Some(mark) = current_mark(infra, subaccount).await else {
            let endpoints = store::enabled(&infra.mongo, subaccount).await?;
            return Ok((Arc::new(endpoints), Source::Unmarked));
        };
        if let Some(held) = self.held(subaccount, &mark) {
            return Ok((held, Source::Registry));
        }
        let endpoints = Arc::new(store::enabled(&infra.mongo, subaccount).await?);
        self.hold(subaccount, mark, endpoints.clone());
        Ok((endpoints, Source::Loaded))
    }

    fn held(
        &self,
        subaccount: &SubaccountId,
        mark: &Option<String>,
    ) -> Option<Arc<Vec<WebhookEndpoint>>> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(subaccount)
            .filter(|e| &e.mark == mark && e.loaded.elapsed() < ENDPOINT_REGISTRY_TTL)
            .map(|e| e.endpoints.clone())
    }

    fn hold(
        &self,
        subaccount: &SubaccountId,
        mark: Option<String>,
        endpoints: Arc<Vec<WebhookEndpoint>>,
    ) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= CAPACITY && !entries.contains_key(subaccount) {
            entries.retain(|_, e| e.loaded.elapsed() < ENDPOINT_REGISTRY_TTL);
            if entries.len() >= CAPACITY {
                entries.clear();
            }
        }
        entries.insert(
            subaccount.clone(),
            Entry {
                mark,
                loaded: Instant::now(),
                endpoints,
            },
        );
    }
}

/// The subaccount's change mark (`Some(None)`: no change within the mark's lifetime); `None`
/// when Redis did not answer.
async fn current_mark(infra: &Infrastructure, subaccount: &SubaccountId) -> Option<Option<String>> {
    let mut redis = infra.redis.clone();
    let key = infra.keys.webhook_endpoints_mark(subaccount);
    match tokio::time::timeout(
        CHANGE_MARK_TIMEOUT,
        service_kit::redis::change_mark(&mut redis, &key),
    )
    .await
    {
        Ok(Ok(mark)) => Some(mark),
        Ok(Err(error)) => {
            tracing::warn!(%error, "webhook endpoints' change mark unreadable; reading them from MongoDB");
            None
        }
        Err(_) => {
            tracing::warn!("webhook endpoints' change mark timed out; reading them from MongoDB");
            None
        }
    }
}
