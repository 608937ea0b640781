//! The api's connector cache against a real Redis: a read that began before a write cannot put
//! the old document back after the write invalidated the cache (the cache-aside race that left
//! a stale connector served for CONNECTOR_CACHE_TTL).

use std::time::Duration;

use redis::AsyncCommands;
use schemas::SubaccountId;
use service_kit::redis::{
    RedisKeys, connect, connector_cache_version, fill_connector_cache, invalidate_connector_caches,
};

#[tokio::test]
async fn a_read_older_than_an_invalidation_does_not_fill_the_cache() {
    let ctx = e2e::TestContext::new();
    let mut redis = connect(&ctx.common(&[]).redis, Duration::from_secs(10))
        .await
        .expect("redis");
    let keys = RedisKeys::new(ctx.id.clone());
    let subaccount = SubaccountId::parse("68cf05f060d294db17c06801").expect("id");
    let version_key = keys.connector_cache_version(&subaccount);
    let key = keys.connector_cache(&subaccount, "google-calendar");

    // A read notes the version and reads the old document; a write lands and invalidates.
    let noted = connector_cache_version(&mut redis, &version_key)
        .await
        .expect("version");
    invalidate_connector_caches(&mut redis, &version_key, std::slice::from_ref(&key))
        .await
        .expect("invalidate");
    // The slow read's fill is refused.
    fill_connector_cache(&mut redis, &version_key, &noted, &key, "old", 60)
        .await
        .expect("fill");
    let cached: Option<String> = redis.get(&key).await.expect("get");
    assert_eq!(cached, None, "the old document was put back");

    // A read that began after the write fills it as usual.
    let noted = connector_cache_version(&mut redis, &version_key)
        .await
        .expect("version");
    fill_connector_cache(&mut redis, &version_key, &noted, &key, "new", 60)
        .await
        .expect("fill");
    let cached: Option<String> = redis.get(&key).await.expect("get");
    assert_eq!(cached.as_deref(), Some("new"));
}
