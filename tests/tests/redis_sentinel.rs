//! Redis behind Sentinel (issue 16), with real processes: a primary, one replica and three
//! sentinels on loopback (tests/src/redis_sentinel.rs). The services' connection finds the
//! primary through the sentinels, keeps working through a failover without being rebuilt by
//! hand, and never keeps writing to a server that was demoted. The oauth-worker runs on it,
//! and with `REDIS_WAIT_REPLICAS` issues a link only once a replica has its state.

use std::time::{Duration, Instant};

use e2e::redis_sentinel::{SETTLE_TIMEOUT, SentinelTopology, TopologyOptions};
use e2e::servers::RedisServer;
use e2e::{RunningService, TestContext};
use oauth_worker::OAuthWorkerConfig;
use redis::AsyncCommands;
use schemas::events::{ConnectRejectionCode, ConnectRequested, ConnectRequestedReply};
use schemas::subjects::Namespace;
use schemas::{Envelope, SubaccountId, UserEmail};
use service_kit::oauth_state::{PendingAttempt, Put, StateStore, StateStoreError};
use service_kit::redis::{RedisConnection, RedisKeys, calls_for_new_primary, connect};

const LIMIT: Duration = Duration::from_secs(10);

/// Writes `key` through `conn` until a write succeeds (the first ones after a failover fail:
/// the connection learns of the failover from them), returning the errors met on the way.
async fn write_until_accepted(conn: &mut RedisConnection, key: &str, value: &str) -> Vec<String> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    let mut errors = Vec::new();
    loop {
        match conn.set::<_, _, ()>(key, value).await {
            Ok(()) => return errors,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "no write accepted within {SETTLE_TIMEOUT:?}; errors: {errors:?}"
                );
                errors.push(e.to_string());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn get(conn: &mut impl redis::aio::ConnectionLike, key: &str) -> Option<String> {
    redis::cmd("GET")
        .arg(key)
        .query_async(conn)
        .await
        .expect("GET")
}

#[tokio::test]
async fn the_connection_follows_the_primary_through_a_failover() {
    service_kit::tls::install_crypto_provider();
    let mut topology = SentinelTopology::start(TopologyOptions::default()).await;
    let (old, new) = (topology.primary.port(), topology.replica.port());
    let mut conn = connect(&topology.redis_settings(), LIMIT)
        .await
        .expect("the primary is found through the sentinels");

    // (a) A write goes to the primary the sentinels name (REDIS_URL leads nowhere).
    let _: () = conn.set("before", "1").await.expect("SET");
    assert_eq!(
        get(&mut topology.node(old).await, "before")
            .await
            .as_deref(),
        Some("1")
    );
    // Replication is asynchronous: a failover keeps a write only once the replica has it.
    // WAIT counts the replicas that have the writes of its own connection: a dedicated one.
    let mut own = conn.dedicated().await.expect("a connection of its own");
    let _: () = own.set("replicated", "1").await.expect("SET");
    let acked: i64 = redis::cmd("WAIT")
        .arg(1)
        .arg(1000)
        .query_async(&mut own)
        .await
        .expect("WAIT");
    assert_eq!(acked, 1);
    assert_eq!(
        get(&mut topology.node(new).await, "replicated")
            .await
            .as_deref(),
        Some("1"),
        "WAIT answered before the replica had the write"
    );

    // (b) The primary dies.
    topology.primary.kill();

    // (c) The same connection, not rebuilt, writes and reads again once a sentinel has
    // promoted the replica.
    let errors = write_until_accepted(&mut conn, "after", "2").await;
    assert!(
        !errors.is_empty(),
        "the first write after the kill cannot have reached the dead primary"
    );
    assert_eq!(get(&mut conn, "replicated").await.as_deref(), Some("1"));
    assert_eq!(get(&mut conn, "after").await.as_deref(), Some("2"));
    // ... on the promoted replica.
    let role = topology.replication(new).await;
    assert_eq!(role["role"], "master");
    assert_eq!(
        get(&mut topology.node(new).await, "after").await.as_deref(),
        Some("2")
    );
    topology.wait_until_primary_is(new).await;
}

#[tokio::test]
async fn a_demoted_primary_answering_readonly_is_left_for_the_new_one() {
    service_kit::tls::install_crypto_provider();
    // The demotion leaves the connection open: READONLY is the only sign.
    let topology = SentinelTopology::start(TopologyOptions {
        keep_clients_on_demotion: true,
    })
    .await;
    let (old, new) = (topology.primary.port(), topology.replica.port());
    let mut conn = connect(&topology.redis_settings(), LIMIT)
        .await
        .expect("the primary is found through the sentinels");
    let _: () = conn.set("before", "1").await.expect("SET");

    // Both servers stay up; the sentinels swap their roles.
    topology.force_failover().await;
    topology.wait_until_primary_is(new).await;
    topology.wait_until_replicating(old, new).await;

    // The connection still leads to the old primary, which refuses the write as a replica
    // (a script, as the services' state store and limits write)...
    let refused = redis::Script::new("return redis.call('SET', KEYS[1], ARGV[1])")
        .key("after")
        .arg("0")
        .invoke_async::<()>(&mut conn)
        .await
        .expect_err("the demoted primary accepted a write");
    assert_eq!(
        refused.kind(),
        redis::ServerErrorKind::ReadOnly.into(),
        "{refused}"
    );
    // ... which sends the next command to the primary the sentinels name now.
    let _: () = conn
        .set("after", "2")
        .await
        .expect("SET on the new primary");
    assert_eq!(
        get(&mut topology.node(new).await, "after").await.as_deref(),
        Some("2")
    );
    assert_eq!(get(&mut conn, "before").await.as_deref(), Some("1"));
}

/// What a write meets on a replica, in each form the services write in (a command, a
/// transaction, a script), calls for a new primary; an ordinary error does not.
#[tokio::test]
async fn every_form_of_write_refused_by_a_replica_calls_for_a_new_primary() {
    let primary = RedisServer::start();
    let replica = RedisServer::start_replica_of(&primary);
    let mut conn = redis::Client::open(replica.url())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("replica connects");

    let command = conn
        .set::<_, _, ()>("k", "v")
        .await
        .expect_err("replica refuses SET");
    let transaction = redis::pipe()
        .atomic()
        .incr("k", 1)
        .ignore()
        .pexpire("k", 1000)
        .ignore()
        .query_async::<()>(&mut conn)
        .await
        .expect_err("replica refuses MULTI/EXEC");
    let script = redis::Script::new("return redis.call('SET', KEYS[1], ARGV[1])")
        .key("k")
        .arg("v")
        .invoke_async::<()>(&mut conn)
        .await
        .expect_err("replica refuses a writing script");
    for (form, error) in [
        ("command", &command),
        ("transaction", &transaction),
        ("script", &script),
    ] {
        assert!(calls_for_new_primary(error), "{form}: {error:?}");
    }

    let mut primary_conn = redis::Client::open(primary.url())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("primary connects");
    let _: () = primary_conn.rpush("list", "x").await.expect("RPUSH");
    let wrong_type = primary_conn
        .get::<_, String>("list")
        .await
        .expect_err("GET of a list");
    assert!(!calls_for_new_primary(&wrong_type), "{wrong_type:?}");
}

const SUBACCOUNT: &str = "68cf05f060d294db17c06816";

/// A connect request over NATS, as the api sends it, and the oauth-worker's reply.
async fn request_link(nats: &async_nats::Client, ns: &Namespace) -> ConnectRequestedReply {
    let request = Envelope::new(
        SubaccountId::parse(SUBACCOUNT).expect("id"),
        uuid::Uuid::now_v7(),
        ConnectRequested {
            user_email: UserEmail::parse("user@example.com").expect("email"),
            send_email: false,
            tenant_name: None,
        },
    );
    let reply = tokio::time::timeout(
        Duration::from_secs(10),
        nats.request(ns.connect_requested(), request.to_bytes().into()),
    )
    .await
    .expect("answered in time")
    .expect("a responder answered");
    serde_json::from_slice(&reply.payload).expect("reply decodes")
}

#[tokio::test]
async fn with_wait_replicas_a_link_is_issued_only_once_a_replica_has_its_state() {
    let ctx = TestContext::new();
    let mut topology = SentinelTopology::start(TopologyOptions::default()).await;
    let (primary, replica) = (topology.primary.port(), topology.replica.port());
    let settings = topology.settings(&[
        ("REDIS_WAIT_REPLICAS", "1"),
        ("GOOGLE_CLIENT_ID", "client-e2e"),
        (
            "GOOGLE_AUTH_URL",
            "https://accounts.example/o/oauth2/v2/auth",
        ),
    ]);
    let overrides: Vec<(&str, &str)> = settings
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let config: OAuthWorkerConfig = ctx.config(&overrides);
    let mut worker = RunningService::start(oauth_worker::SERVICE, |l, s| {
        oauth_worker::run(config, l, s)
    })
    .await;
    // Ready: it found the primary through the sentinels (REDIS_URL leads nowhere).
    worker.wait_ready(Duration::from_secs(30)).await;
    let nats = ctx.nats().await;
    let ns = Namespace::new(&ctx.id).expect("ns");

    let reply = request_link(&nats, &ns).await;
    let ConnectRequestedReply::Issued { auth_url, .. } = reply else {
        panic!("not issued: {reply:?}");
    };
    let state = url::Url::parse(&auth_url)
        .expect("url")
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .expect("state in the link");
    // The replica had the state before the link was issued (read at once, no waiting).
    let key = RedisKeys::new(ctx.id.clone()).oauth_state(&state);
    for (node, port) in [("primary", primary), ("replica", replica)] {
        let stored: Option<String> = topology
            .node(port)
            .await
            .get(&key)
            .await
            .expect("GET state");
        assert!(
            stored.is_some(),
            "the {node} lacks the state of an issued link"
        );
    }

    // Without a replica to acknowledge, no link is issued: the answer is Redis being down.
    topology.replica.kill();
    let reply = request_link(&nats, &ns).await;
    assert!(
        matches!(
            reply,
            ConnectRequestedReply::Rejected {
                code: ConnectRejectionCode::StateStoreUnavailable,
                ..
            }
        ),
        "{reply:?}"
    );
    worker.stop().await.expect("clean stop");

    // The state store itself: the same write succeeds without WAIT, and with it is reported
    // as not stored (and removed again).
    let conn = connect(&topology.redis_settings(), LIMIT)
        .await
        .expect("primary");
    let keys = RedisKeys::new(ctx.id.clone());
    let mut env = service_kit::Env::from_pairs(Vec::<(String, String)>::new());
    let limits = service_kit::rate_limit::ConnectLimits::from_env(&mut env);
    let store = |replicas| {
        StateStore::new(
            conn.clone(),
            keys.clone(),
            Duration::from_secs(600),
            limits.clone(),
            Duration::from_secs(2),
        )
        .waiting_for_replicas(replicas)
    };
    let attempt = PendingAttempt {
        subaccount_id: SubaccountId::parse(SUBACCOUNT).expect("id"),
        user_email: UserEmail::parse("user@example.com").expect("email"),
        pkce_verifier: "v".repeat(43),
        correlation_id: uuid::Uuid::now_v7(),
        issued_at: chrono::Utc::now(),
        traceparent: None,
        expires_at: None,
        auth_url: None,
        tenant_name: None,
    };
    assert_eq!(
        store(0)
            .put("unreplicated-ok", &attempt, false)
            .await
            .expect("stored"),
        Put::Stored
    );
    let refused = store(1).put("unreplicated", &attempt, false).await;
    assert!(
        matches!(
            refused,
            Err(StateStoreError::NotReplicated {
                wanted: 1,
                acked: 0
            })
        ),
        "{refused:?}"
    );
    let left: Option<String> = topology
        .node(primary)
        .await
        .get(keys.oauth_state("unreplicated"))
        .await
        .expect("GET");
    assert_eq!(left, None, "a state reported as not stored stayed");
}
