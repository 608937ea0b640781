//! The connector endpoints on real MongoDB and Redis: add, list, read, the unique index, the
//! cache-aside shared with the metadata worker, and Redis failures that never fail a read.

mod api_support;

use std::time::{Duration, Instant};

use api_support::*;
use e2e::servers::RedisServer;
use redis::AsyncCommands;
use schemas::SubaccountId;
use serde_json::json;
use service_kit::redis::RedisKeys;

fn list_path(subaccount: &str) -> String {
    format!("/api/connectors/{subaccount}")
}

fn one_path(subaccount: &str, connector: &str) -> String {
    format!("/api/connectors/{subaccount}/{connector}")
}

fn is_iso_millis(value: &serde_json::Value) -> bool {
    value
        .as_str()
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok().map(|_| s))
        .is_some_and(|s| s.ends_with('Z') && s.len() == "2025-10-05T12:00:00.000Z".len())
}

#[tokio::test]
async fn an_added_connector_is_stored_as_the_spec_shows_and_read_back() {
    let api = Api::start(&[]).await;
    let token = token(SUBACCOUNT);

    let created = api
        .post(
            &list_path(SUBACCOUNT),
            Some(&token),
            &json!({ "connectorId": "google-calendar", "config": { "timezone": "Europe/Paris" } }),
        )
        .await;

    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.body["success"], true);
    assert_eq!(
        created
            .headers
            .get("location")
            .and_then(|v| v.to_str().ok()),
        Some(one_path(SUBACCOUNT, "google-calendar").as_str())
    );
    let data = &created.body["data"];
    let id = data["_id"].as_str().expect("_id as a hex string");
    assert_eq!(id.len(), 24);
    assert_eq!(data["subaccountId"], SUBACCOUNT);
    assert_eq!(data["connectorId"], "google-calendar");
    assert_eq!(
        data["connectorType"], "calendar",
        "implied for google-calendar"
    );
    assert_eq!(data["config"], json!({ "timezone": "Europe/Paris" }));
    assert_eq!(data["metadata"], json!({}));
    assert_eq!(data["isActive"], true);
    assert!(is_iso_millis(&data["createdAt"]), "{data}");
    assert!(is_iso_millis(&data["updatedAt"]), "{data}");

    // In MongoDB it is the seed's document: real ObjectId and dates, not strings.
    let stored = api.stored_connectors(SUBACCOUNT).await;
    assert_eq!(stored.len(), 1);
    let keys: Vec<_> = stored[0].keys().map(String::as_str).collect();
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
    assert_eq!(
        stored[0].get_object_id("_id").expect("ObjectId").to_hex(),
        id
    );
    assert!(stored[0].get_datetime("createdAt").is_ok());

    let one = api
        .get(&one_path(SUBACCOUNT, "google-calendar"), Some(&token))
        .await;
    assert_eq!(one.status, 200, "{}", one.body);
    assert_eq!(one.body, json!({ "success": true, "data": data }));

    let list = api.get(&list_path(SUBACCOUNT), Some(&token)).await;
    assert_eq!(list.status, 200, "{}", list.body);
    assert_eq!(list.body, json!({ "success": true, "data": [data] }));
}

#[tokio::test]
async fn adding_the_same_connector_twice_is_a_409() {
    let api = Api::start(&[]).await;
    let token = token(SUBACCOUNT);
    let body = json!({ "connectorId": "google-calendar", "connectorType": "calendar" });
    assert_eq!(
        api.post(&list_path(SUBACCOUNT), Some(&token), &body)
            .await
            .status,
        201
    );

    let again = api.post(&list_path(SUBACCOUNT), Some(&token), &body).await;

    again.assert_error(409, "connector_exists");
    assert_eq!(api.stored_connectors(SUBACCOUNT).await.len(), 1);
}

#[tokio::test]
async fn other_connectors_need_a_type_and_config_keys_are_checked() {
    let api = Api::start(&[]).await;
    let token = token(SUBACCOUNT);
    let path = list_path(SUBACCOUNT);

    let reply = api
        .post(&path, Some(&token), &json!({ "connectorId": "hubspot" }))
        .await;
    reply.assert_error(400, "missing_field");
    assert_eq!(reply.body["error"]["details"]["field"], "connectorType");

    let reply = api
        .post(
            &path,
            Some(&token),
            &json!({ "connectorId": "hubspot", "connectorType": "crm", "config": { "a": { "$where": "1" } } }),
        )
        .await;
    reply.assert_error(400, "invalid_field");
    assert_eq!(reply.body["error"]["details"]["field"], "config.a.$where");

    let reply = api
        .post(&path, Some(&token), &json!({ "connectorId": "Not An Id" }))
        .await;
    reply.assert_error(400, "invalid_field");
    assert_eq!(reply.body["error"]["details"]["field"], "connectorId");

    let reply = api
        .post(
            &path,
            Some(&token),
            &json!({ "connectorId": "hubspot", "metadata": { "isConnected": true } }),
        )
        .await;
    reply.assert_error(400, "unknown_field");
    assert!(
        api.stored_connectors(SUBACCOUNT).await.is_empty(),
        "nothing stored for bad input"
    );

    let reply = api
        .post(
            &path,
            Some(&token),
            &json!({ "connectorId": "hubspot", "connectorType": "crm", "config": { "portal": 42, "tags": ["a"] } }),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert_eq!(
        reply.body["data"]["config"],
        json!({ "portal": 42, "tags": ["a"] })
    );
}

#[tokio::test]
async fn connector_endpoints_apply_the_same_token_rules_and_error_shape() {
    let api = Api::start(&[]).await;
    api.seed_google_calendar(SUBACCOUNT).await;

    api.get(&list_path(SUBACCOUNT), None)
        .await
        .assert_error(401, "missing_token");
    api.get(
        &one_path(SUBACCOUNT, "google-calendar"),
        Some(&token(OTHER_SUBACCOUNT)),
    )
    .await
    .assert_error(403, "subaccount_forbidden");
    api.post(
        &list_path(SUBACCOUNT),
        Some(&token(OTHER_SUBACCOUNT)),
        &json!({ "connectorId": "hubspot", "connectorType": "crm" }),
    )
    .await
    .assert_error(403, "subaccount_forbidden");
    assert_eq!(
        api.stored_connectors(SUBACCOUNT).await.len(),
        1,
        "nothing added"
    );

    let token = token(SUBACCOUNT);
    api.get(&one_path(SUBACCOUNT, "Bad_Id"), Some(&token))
        .await
        .assert_error(400, "invalid_connector_id");
    api.get(&list_path("xyz"), Some(&token))
        .await
        .assert_error(400, "invalid_subaccount_id");
    let missing = api
        .get(&one_path(SUBACCOUNT, "hubspot"), Some(&token))
        .await;
    missing.assert_error(404, "connector_not_found");
    assert!(missing.message().starts_with("Connector not found"));

    api.get("/api/nothing-here", Some(&token))
        .await
        .assert_error(404, "route_not_found");
    api.send(
        reqwest::Method::DELETE,
        &list_path(SUBACCOUNT),
        Some(&token),
        None,
    )
    .await
    .assert_error(405, "method_not_allowed");
}

#[tokio::test]
async fn reads_are_cached_until_a_write_or_the_metadata_worker_invalidates_them() {
    let api = Api::start(&[]).await;
    let token = token(SUBACCOUNT);
    let one = one_path(SUBACCOUNT, "google-calendar");
    let created = api
        .post(
            &list_path(SUBACCOUNT),
            Some(&token),
            &json!({ "connectorId": "google-calendar" }),
        )
        .await;
    assert_eq!(created.status, 201);
    // Both reads fill the cache.
    assert_eq!(
        api.get(&one, Some(&token)).await.body["data"]["metadata"],
        json!({})
    );
    assert_eq!(
        api.get(&list_path(SUBACCOUNT), Some(&token)).await.body["data"][0]["metadata"],
        json!({})
    );

    // Another system changes the document behind the api's back.
    api.tenant_db(SUBACCOUNT)
        .await
        .collection::<mongodb::bson::Document>("connectorsubaccount")
        .update_one(
            mongodb::bson::doc! { "connectorId": "google-calendar" },
            mongodb::bson::doc! { "$set": { "metadata.isConnected": true } },
        )
        .await
        .expect("update");

    // Cached: the old answer, from Redis.
    assert_eq!(
        api.get(&one, Some(&token)).await.body["data"]["metadata"],
        json!({})
    );
    assert_eq!(
        api.get(&list_path(SUBACCOUNT), Some(&token)).await.body["data"][0]["metadata"],
        json!({})
    );

    // Adding a connector invalidates the list.
    let added = api
        .post(
            &list_path(SUBACCOUNT),
            Some(&token),
            &json!({ "connectorId": "hubspot", "connectorType": "crm" }),
        )
        .await;
    assert_eq!(added.status, 201);
    let list = api.get(&list_path(SUBACCOUNT), Some(&token)).await;
    assert_eq!(list.body["data"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        list.body["data"][0]["metadata"],
        json!({ "isConnected": true })
    );

    // The metadata worker invalidates the single read by deleting the shared key.
    let keys = RedisKeys::new(api.ctx.id.clone());
    let subaccount = SubaccountId::parse(SUBACCOUNT).expect("id");
    let mut redis = api
        .ctx
        .redis_client()
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let key = keys.connector_cache(&subaccount, "google-calendar");
    let cached: Option<String> = redis.get(&key).await.expect("get");
    assert!(
        cached.is_some(),
        "the api caches under the shared key {key}"
    );
    let ttl: i64 = redis.ttl(&key).await.expect("ttl");
    assert!(
        (1..=300).contains(&ttl),
        "cached for CONNECTOR_CACHE_TTL: {ttl}"
    );
    let () = redis.del(&key).await.expect("del");
    assert_eq!(
        api.get(&one, Some(&token)).await.body["data"]["metadata"],
        json!({ "isConnected": true })
    );
}

#[tokio::test]
async fn a_redis_outage_degrades_reads_to_mongodb_and_never_fails_a_request() {
    let ctx = e2e::TestContext::new();
    let redis = RedisServer::start();
    let redis_url = redis.url();
    let api = Api::start_in(ctx, &[("REDIS_URL", redis_url.as_str())]).await;
    let token = token(SUBACCOUNT);
    let created = api
        .post(
            &list_path(SUBACCOUNT),
            Some(&token),
            &json!({ "connectorId": "google-calendar" }),
        )
        .await;
    assert_eq!(created.status, 201);
    assert_eq!(
        api.get(&one_path(SUBACCOUNT, "google-calendar"), Some(&token))
            .await
            .status,
        200
    );

    drop(redis); // stops the server

    let started = Instant::now();
    for _ in 0..3 {
        let one = api
            .get(&one_path(SUBACCOUNT, "google-calendar"), Some(&token))
            .await;
        assert_eq!(one.status, 200, "{}", one.body);
        assert_eq!(one.body["data"]["connectorId"], "google-calendar");
        let list = api.get(&list_path(SUBACCOUNT), Some(&token)).await;
        assert_eq!(list.status, 200, "{}", list.body);
    }
    // One cache timeout, then the cache is bypassed for a while: six reads do not each wait.
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "a Redis outage costs one short timeout, not one per read: {:?}",
        started.elapsed()
    );
    let added = api
        .post(
            &list_path(SUBACCOUNT),
            Some(&token),
            &json!({ "connectorId": "hubspot", "connectorType": "crm" }),
        )
        .await;
    assert_eq!(
        added.status, 201,
        "writes do not need Redis: {}",
        added.body
    );
    let list = api.get(&list_path(SUBACCOUNT), Some(&token)).await;
    assert_eq!(list.body["data"].as_array().map(Vec::len), Some(2));
}

/// The tenant databases of this test's context on the server.
async fn tenant_databases(api: &Api) -> Vec<String> {
    let client = mongodb::Client::with_uri_str(&api.ctx.mongodb_uri)
        .await
        .expect("mongo client");
    let prefix = format!("{}_", api.ctx.id);
    client
        .list_database_names()
        .await
        .expect("list databases")
        .into_iter()
        .filter(|name| name.starts_with(&prefix))
        .collect()
}

#[tokio::test]
async fn reads_of_an_unknown_subaccount_create_no_database() {
    let api = Api::start(&[]).await;
    const UNKNOWN: &str = "68cf05f060d294db17c06800";
    let token = token(UNKNOWN);
    let webhook = "0190a8c2-6d6e-7cc3-8f4e-4f1f4f7a1b2c";
    for (path, status) in [
        (list_path(UNKNOWN), 200),
        (one_path(UNKNOWN, "google-calendar"), 404),
        (one_path(UNKNOWN, "outlook"), 404),
        (format!("/api/connectors/{UNKNOWN}/operations/nope"), 404),
        (format!("/api/connectors/{UNKNOWN}/webhooks"), 200),
        (
            format!("/api/connectors/{UNKNOWN}/webhooks/{webhook}/deliveries"),
            404,
        ),
    ] {
        let reply = api.get(&path, Some(&token)).await;
        assert_eq!(reply.status, status, "GET {path}: {}", reply.body);
    }
    // Requests refused because the connector does not exist read, and so create nothing either.
    api.post(
        &connect_path(UNKNOWN),
        Some(&token),
        &json!({ "userEmail": "user@example.com" }),
    )
    .await
    .assert_error(404, "connector_not_found");
    api.send(
        reqwest::Method::DELETE,
        &one_path(UNKNOWN, "google-calendar"),
        Some(&token),
        None,
    )
    .await
    .assert_error(404, "connector_not_found");
    assert_eq!(tenant_databases(&api).await, Vec::<String>::new());

    // Adding a connector is a write: it creates the database (and shows the check above sees one).
    let created = api
        .post(
            &list_path(UNKNOWN),
            Some(&token),
            &json!({ "connectorId": "google-calendar" }),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(
        tenant_databases(&api).await,
        [format!("{}_{UNKNOWN}", api.ctx.id)]
    );
}
