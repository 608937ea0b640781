//! Redis behind Sentinel (issue 16), with real processes: a primary, one replica and three
//! sentinels on loopback (tests/src/redis_sentinel.rs). The services' connection finds the
//! primary through the sentinels, keeps working through a failover without being rebuilt by
//! hand, and never keeps writing to a server that was demoted.

use std::time::{Duration, Instant};

use e2e::redis_sentinel::{SETTLE_TIMEOUT, SentinelTopology, TopologyOptions};
use e2e::servers::RedisServer;
use redis::AsyncCommands;
use service_kit::redis::{RedisConnection, calls_for_new_primary, connect};

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
