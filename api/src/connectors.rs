//! A subaccount's connectors: the tenant's `connectorsubaccount` collection behind a Redis
//! cache-aside.
//!
//! Reads try Redis first (`RedisKeys::connector_list_cache` / `connector_cache`), fall back to
//! MongoDB and fill the cache for `CONNECTOR_CACHE_TTL`. Writes go to MongoDB and then delete
//! both keys; the metadata worker deletes the same keys when it changes `metadata`. Redis only
//! ever makes reads faster: when it fails or is slow the request reads MongoDB (and logs it),
//! it never fails because of Redis. After a Redis failure the cache is bypassed for a few
//! seconds, so an outage costs one timeout every few seconds rather than one per request.
//!
//! The connect endpoint only needs to know that a connector *exists*; positive answers are
//! also remembered in-process ([`ConnectorStore::exists`]) for `CONNECTOR_CACHE_TTL` (at most
//! [`EXISTS_TTL_CAP`]), which takes a Redis round trip and a JSON parse off every connect
//! request. Connectors are never removed through this api, so a remembered "exists" can only
//! be wrong after another system deletes the document, for at most that long.
//!
//! Reads never create anything: they use the tenant database as it is
//! ([`service_kit::mongo::TenantDatabases::existing`]), so a read of a subaccount that has no
//! database (a typo, a probe, a tenant that never connected) leaves none behind. Only
//! [`ConnectorStore::create`] ensures the tenant's indexes, and so creates its database.
//!
//! Documents are returned as the platform's Node services return them (Mongoose's JSON):
//! `_id` and other ObjectIds as hex strings, dates as ISO 8601 strings with milliseconds,
//! `config` and `metadata` as objects, and any field written by another system kept as is.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bson::{Bson, Document, doc, oid::ObjectId};
use futures::TryStreamExt;
use mongodb::error::ErrorKind;
use redis::AsyncCommands;
use schemas::documents::connector_subaccount::{COLLECTION, ConnectorSubaccount};
use schemas::{ConnectorId, SubaccountId};
use serde_json::{Map, Value};
use service_kit::Infrastructure;

use crate::error::ApiError;

/// A cache operation slower than this is abandoned and the request reads MongoDB instead.
/// Redis answers in well under a millisecond when it is healthy.
const CACHE_TIMEOUT: Duration = Duration::from_millis(250);
/// After a cache failure, reads skip Redis for this long before trying it again.
const CACHE_BYPASS: Duration = Duration::from_secs(5);
/// The longest an in-process "this connector exists" is trusted.
pub const EXISTS_TTL_CAP: Duration = Duration::from_secs(30);
/// Distinct `(subaccount, connector)` pairs remembered in-process; the least recently used
/// go first.
const EXISTS_CAPACITY: u64 = 100_000;

/// What `POST /api/connectors/{subaccountId}` asks to create, already validated.
#[derive(Debug, Clone)]
pub struct NewConnector {
    pub connector_id: ConnectorId,
    pub connector_type: String,
    pub config: Document,
}

#[derive(Debug, Clone)]
pub struct ConnectorStore {
    infra: Infrastructure,
    /// Zero: no caching.
    ttl: Duration,
    breaker: Arc<Breaker>,
    /// Connectors seen to exist recently; `None` when caching is off.
    known: Option<moka::sync::Cache<(SubaccountId, ConnectorId), ()>>,
}

/// Remembers a recent Redis failure so that reads stop waiting on a cache that is down.
#[derive(Debug)]
struct Breaker {
    epoch: Instant,
    /// Milliseconds after `epoch` before which reads do not use the cache.
    closed_until_ms: AtomicU64,
}

impl Breaker {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn allows(&self) -> bool {
        self.now_ms() >= self.closed_until_ms.load(Ordering::Relaxed)
    }

    fn tripped(&self) {
        let until = self
            .now_ms()
            .saturating_add(CACHE_BYPASS.as_millis() as u64);
        self.closed_until_ms.store(until, Ordering::Relaxed);
    }
}

impl ConnectorStore {
    pub fn new(infra: Infrastructure, ttl: Duration) -> Self {
        Self {
            infra,
            ttl,
            breaker: Arc::new(Breaker {
                epoch: Instant::now(),
                closed_until_ms: AtomicU64::new(0),
            }),
            known: (!ttl.is_zero()).then(|| {
                moka::sync::Cache::builder()
                    .max_capacity(EXISTS_CAPACITY)
                    .time_to_live(ttl.min(EXISTS_TTL_CAP))
                    .build()
            }),
        }
    }

    /// Whether the subaccount has the connector: answered in-process when it was seen
    /// recently, otherwise by [`Self::get`] (Redis, then MongoDB). Only "exists" is remembered,
    /// so a connector added a moment ago is found at once.
    pub async fn exists(
        &self,
        subaccount: &SubaccountId,
        connector: &ConnectorId,
    ) -> Result<bool, ApiError> {
        let key = (subaccount.clone(), connector.clone());
        if let Some(known) = &self.known
            && known.contains_key(&key)
        {
            return Ok(true);
        }
        let found = self.get(subaccount, connector).await?.is_some();
        if found && let Some(known) = &self.known {
            known.insert(key, ());
        }
        Ok(found)
    }

    /// Every connector of the subaccount, oldest first.
    pub async fn list(&self, subaccount: &SubaccountId) -> Result<Vec<Value>, ApiError> {
        let key = self.infra.keys.connector_list_cache(subaccount);
        if let Some(Value::Array(cached)) = self.cache_get(&key).await {
            return Ok(cached);
        }
        let version = self.cache_version(subaccount).await;
        let documents: Vec<Document> = self
            .existing(subaccount)
            .find(doc! { "subaccountId": subaccount.as_str() })
            .sort(doc! { "createdAt": 1, "_id": 1 })
            .await
            .map_err(|e| database_error(e, "listing connectors"))?
            .try_collect()
            .await
            .map_err(|e| database_error(e, "listing connectors"))?;
        let rendered: Vec<Value> = documents.into_iter().map(render_document).collect();
        self.cache_put(subaccount, version, &key, &Value::Array(rendered.clone()))
            .await;
        Ok(rendered)
    }

    /// One connector, or `None` when the subaccount does not have it. Only found documents
    /// are cached, so a connector added by another system shows up at once.
    pub async fn get(
        &self,
        subaccount: &SubaccountId,
        connector: &ConnectorId,
    ) -> Result<Option<Value>, ApiError> {
        let key = self
            .infra
            .keys
            .connector_cache(subaccount, connector.as_str());
        if let Some(cached @ Value::Object(_)) = self.cache_get(&key).await {
            return Ok(Some(cached));
        }
        let version = self.cache_version(subaccount).await;
        let found = self
            .existing(subaccount)
            .find_one(
                doc! { "subaccountId": subaccount.as_str(), "connectorId": connector.as_str() },
            )
            .await
            .map_err(|e| database_error(e, "reading a connector"))?;
        let Some(document) = found else {
            return Ok(None);
        };
        let rendered = render_document(document);
        self.cache_put(subaccount, version, &key, &rendered).await;
        Ok(Some(rendered))
    }

    /// Adds a connector; a second add of the same connector is a conflict (the unique index
    /// decides, so two concurrent adds cannot both win).
    pub async fn create(
        &self,
        subaccount: &SubaccountId,
        new: NewConnector,
    ) -> Result<Value, ApiError> {
        let now = bson::DateTime::now();
        let document = ConnectorSubaccount {
            id: ObjectId::new(),
            subaccount_id: subaccount.as_str().to_owned(),
            connector_id: new.connector_id.as_str().to_owned(),
            connector_type: new.connector_type,
            config: new.config,
            metadata: Document::new(),
            is_active: true,
            created_at: now,
            updated_at: now,
        };
        let raw = bson::to_document(&document)
            .map_err(|e| ApiError::Internal(format!("connector document: {e}")))?;
        let inserted = self
            .for_writing(subaccount)
            .await?
            .insert_one(raw.clone())
            .await;
        match inserted {
            Ok(_) => {}
            Err(e) if service_kit::mongo::is_duplicate_key(&e) => {
                return Err(ApiError::ConnectorExists {
                    subaccount: subaccount.clone(),
                    connector: new.connector_id,
                });
            }
            Err(e) => return Err(database_error(e, "adding a connector")),
        }
        self.invalidate(subaccount, &new.connector_id).await;
        Ok(render_document(raw))
    }

    /// Deletes both cached reads this connector appears in. A failure is logged: the cache
    /// then serves the old answer until its TTL, which is the bound we accept.
    pub async fn invalidate(&self, subaccount: &SubaccountId, connector: &ConnectorId) {
        let keys = [
            self.infra.keys.connector_list_cache(subaccount),
            self.infra
                .keys
                .connector_cache(subaccount, connector.as_str()),
        ];
        let mut redis = self.infra.redis.clone();
        match tokio::time::timeout(
            CACHE_TIMEOUT,
            service_kit::redis::invalidate_connector_caches(
                &mut redis,
                &self.infra.keys.connector_cache_version(subaccount),
                &keys,
            ),
        )
        .await
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, %subaccount, "connector cache not invalidated; stale reads until it expires")
            }
            Err(_) => {
                tracing::warn!(%subaccount, "connector cache invalidation timed out; stale reads until it expires")
            }
        }
    }

    /// For reads: the collection as it is, creating nothing.
    fn existing(&self, subaccount: &SubaccountId) -> mongodb::Collection<Document> {
        self.infra
            .mongo
            .existing(subaccount)
            .collection::<Document>(COLLECTION)
    }

    /// For adding a connector: the tenant's indexes ensured first (the unique
    /// `(subaccountId, connectorId)` decides conflicts).
    async fn for_writing(
        &self,
        subaccount: &SubaccountId,
    ) -> Result<mongodb::Collection<Document>, ApiError> {
        let db = self
            .infra
            .mongo
            .connection_for(subaccount)
            .await
            .map_err(|e| database_error(e, "opening the tenant database"))?;
        Ok(db.collection::<Document>(COLLECTION))
    }

    async fn cache_get(&self, key: &str) -> Option<Value> {
        if self.ttl.is_zero() || !self.breaker.allows() {
            return None;
        }
        let mut redis = self.infra.redis.clone();
        match tokio::time::timeout(CACHE_TIMEOUT, redis.get::<_, Option<String>>(key)).await {
            Ok(Ok(Some(text))) => match serde_json::from_str(&text) {
                Ok(value) => Some(value),
                Err(e) => {
                    tracing::warn!(error = %e, key, "unreadable cache entry ignored");
                    None
                }
            },
            Ok(Ok(None)) => None,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, bypass = ?CACHE_BYPASS, "Redis read failed; reading MongoDB");
                self.breaker.tripped();
                None
            }
            Err(_) => {
                tracing::warn!(bypass = ?CACHE_BYPASS, "Redis read timed out; reading MongoDB");
                self.breaker.tripped();
                None
            }
        }
    }

    /// The subaccount's invalidation counter, noted before a read of MongoDB; `None` (do not
    /// fill the cache) when the cache is off or Redis does not answer.
    async fn cache_version(&self, subaccount: &SubaccountId) -> Option<String> {
        if self.ttl.is_zero() || !self.breaker.allows() {
            return None;
        }
        let mut redis = self.infra.redis.clone();
        let key = self.infra.keys.connector_cache_version(subaccount);
        match tokio::time::timeout(
            CACHE_TIMEOUT,
            service_kit::redis::connector_cache_version(&mut redis, &key),
        )
        .await
        {
            Ok(Ok(version)) => Some(version),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "Redis read failed; not caching");
                self.breaker.tripped();
                None
            }
            Err(_) => {
                tracing::warn!("Redis read timed out; not caching");
                self.breaker.tripped();
                None
            }
        }
    }

    /// Caches a read, unless the subaccount's reads were invalidated since `version` was noted
    /// (a write landed meanwhile, and this read may hold the old document).
    async fn cache_put(
        &self,
        subaccount: &SubaccountId,
        version: Option<String>,
        key: &str,
        value: &Value,
    ) {
        let Some(version) = version else {
            return;
        };
        let mut redis = self.infra.redis.clone();
        let version_key = self.infra.keys.connector_cache_version(subaccount);
        let text = value.to_string();
        let fill = service_kit::redis::fill_connector_cache(
            &mut redis,
            &version_key,
            &version,
            key,
            &text,
            self.ttl.as_secs().max(1),
        );
        match tokio::time::timeout(CACHE_TIMEOUT, fill).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "Redis write failed; not cached");
                self.breaker.tripped();
            }
            Err(_) => {
                tracing::warn!("Redis write timed out; not cached");
                self.breaker.tripped();
            }
        }
    }
}

/// Logs a MongoDB failure and says what the caller sees: unavailable when the server could
/// not be reached (retrying helps), internal otherwise.
fn database_error(error: mongodb::error::Error, doing: &'static str) -> ApiError {
    tracing::error!(error = %error, doing, "MongoDB operation failed");
    match error.kind.as_ref() {
        ErrorKind::ServerSelection { .. }
        | ErrorKind::Io(_)
        | ErrorKind::ConnectionPoolCleared { .. }
        | ErrorKind::DnsResolve { .. } => ApiError::DatabaseUnavailable,
        _ => ApiError::Internal(format!("MongoDB failed while {doing}")),
    }
}

/// A stored document as JSON (see the module docs).
pub fn render_document(document: Document) -> Value {
    render(Bson::Document(document))
}

fn render(value: Bson) -> Value {
    match value {
        Bson::ObjectId(id) => Value::String(id.to_hex()),
        Bson::DateTime(at) => {
            let at = at.to_chrono();
            Value::String(at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        }
        Bson::Document(document) => Value::Object(
            document
                .into_iter()
                .map(|(k, v)| (k, render(v)))
                .collect::<Map<_, _>>(),
        ),
        Bson::Array(items) => Value::Array(items.into_iter().map(render).collect()),
        Bson::String(s) => Value::String(s),
        Bson::Boolean(b) => Value::Bool(b),
        Bson::Null | Bson::Undefined => Value::Null,
        Bson::Int32(i) => Value::from(i),
        Bson::Int64(i) => Value::from(i),
        Bson::Double(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
        Bson::Decimal128(d) => Value::String(d.to_string()),
        // Rare in connector documents; extended JSON keeps them lossless.
        other => other.into_relaxed_extjson(),
    }
}

/// JSON `config` from a request as a BSON document. Keys MongoDB would refuse or misread
/// (`$`-prefixed, dotted, NUL) are refused here with the path that has one.
pub fn config_document(config: Map<String, Value>) -> Result<Document, ApiError> {
    check_keys(&config, "config", 1)?;
    bson::to_document(&config).map_err(|e| ApiError::InvalidField {
        field: Some("config".into()),
        reason: format!("cannot be stored: {e}"),
    })
}

/// How deep a connector's `config` may nest. MongoDB refuses documents nested more than 100
/// levels, and every layer below (checks, BSON conversion, the driver) recurses once per level:
/// a limit well under both keeps a hostile body from reaching either.
pub const MAX_CONFIG_DEPTH: usize = 32;

fn check_keys(object: &Map<String, Value>, path: &str, depth: usize) -> Result<(), ApiError> {
    if depth > MAX_CONFIG_DEPTH {
        return Err(ApiError::InvalidField {
            field: Some("config".into()),
            reason: format!("may nest at most {MAX_CONFIG_DEPTH} levels"),
        });
    }
    for (key, value) in object {
        let here = format!("{path}.{key}");
        if key.is_empty() || key.starts_with('$') || key.contains('.') || key.contains('\0') {
            return Err(ApiError::InvalidField {
                field: Some(here),
                reason: "keys may not be empty, start with `$` or contain `.`".into(),
            });
        }
        check_value(value, &here, depth)?;
    }
    Ok(())
}

fn check_value(value: &Value, path: &str, depth: usize) -> Result<(), ApiError> {
    match value {
        Value::Object(object) => check_keys(object, path, depth + 1),
        Value::Array(items) => {
            if depth + 1 > MAX_CONFIG_DEPTH {
                return Err(ApiError::InvalidField {
                    field: Some("config".into()),
                    reason: format!("may nest at most {MAX_CONFIG_DEPTH} levels"),
                });
            }
            items
                .iter()
                .enumerate()
                .try_for_each(|(i, item)| check_value(item, &format!("{path}[{i}]"), depth + 1))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn documents_render_like_mongoose_json() {
        let id = ObjectId::parse_str("507f1f77bcf86cd799439011").expect("oid");
        let at = bson::DateTime::from_millis(1_759_665_600_000);
        let rendered = render_document(doc! {
            "_id": id, "subaccountId": "68cf05f060d294db17c0685e", "connectorId": "google-calendar",
            "connectorType": "calendar", "config": { "n": 1_i32, "nested": { "at": at } },
            "metadata": { "connectedAt": "2025-10-05T12:00:00.000Z", "isConnected": true },
            "isActive": true, "createdAt": at, "updatedAt": at, "__v": 0_i32,
        });
        assert_eq!(
            rendered,
            json!({
                "_id": "507f1f77bcf86cd799439011", "subaccountId": "68cf05f060d294db17c0685e",
                "connectorId": "google-calendar", "connectorType": "calendar",
                "config": { "n": 1, "nested": { "at": "2025-10-05T12:00:00.000Z" } },
                "metadata": { "connectedAt": "2025-10-05T12:00:00.000Z", "isConnected": true },
                "isActive": true, "createdAt": "2025-10-05T12:00:00.000Z",
                "updatedAt": "2025-10-05T12:00:00.000Z", "__v": 0,
            })
        );
    }

    #[test]
    fn config_keys_mongodb_would_refuse_are_named() {
        let ok = json!({ "calendar": { "timezone": "Europe/Paris" }, "list": [1, {"a": 2}] });
        let Value::Object(ok) = ok else {
            unreachable!()
        };
        assert!(config_document(ok).is_ok());
        let bad = json!({ "list": [ {"$where": "1"} ] });
        let Value::Object(bad) = bad else {
            unreachable!()
        };
        match config_document(bad) {
            Err(ApiError::InvalidField { field, .. }) => {
                assert_eq!(field.as_deref(), Some("config.list[0].$where"));
            }
            other => panic!("{other:?}"),
        }
    }

    /// `depth` levels of objects (or arrays) around one number.
    fn nested(depth: usize, array: bool) -> Map<String, Value> {
        let mut value = json!(1);
        for _ in 1..depth {
            value = if array {
                json!([value])
            } else {
                json!({ "a": value })
            };
        }
        let mut top = Map::new();
        top.insert("a".into(), value);
        top
    }

    #[test]
    fn config_may_nest_32_levels_not_33() {
        for array in [false, true] {
            assert!(config_document(nested(MAX_CONFIG_DEPTH, array)).is_ok());
            match config_document(nested(MAX_CONFIG_DEPTH + 1, array)) {
                Err(ApiError::InvalidField { field, reason }) => {
                    assert_eq!(field.as_deref(), Some("config"));
                    assert!(reason.contains("32"), "{reason}");
                }
                other => panic!("{other:?}"),
            }
        }
        // Far deeper than the stack of a debug build would survive unchecked.
        assert!(config_document(nested(120, false)).is_err());
    }
}
