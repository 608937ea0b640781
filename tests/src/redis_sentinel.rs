//! Redis behind Sentinel on loopback, every process a child that can be SIGKILLed: a primary,
//! one replica (`--replicaof`) and three sentinels (`redis-server <conf> --sentinel`) that
//! monitor the primary as [`MASTER`] with a quorum of 2 and fail over within seconds
//! (`down-after-milliseconds` 1000, `failover-timeout` 3000).
//!
//! [`SentinelTopology::start`] returns once every sentinel knows the replica and the two other
//! sentinels: before that, a killed primary would not be failed over.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use service_kit::Env;
use service_kit::redis::RedisSettings;

use crate::process::{free_port, scratch_dir, spawn, terminate, wait_for_line};
use crate::servers::RedisServer;
use crate::tools::binary;

/// The name the sentinels monitor the primary under (the settings' default).
pub const MASTER: &str = "mymaster";

/// How long the sentinels may take to find each other and the replica, or to fail over.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

const START_TIMEOUT: Duration = Duration::from_secs(60);

/// `REDIS_URL` in Sentinel mode: its host and port lead nowhere, so a connection that used
/// them instead of the sentinels' answer would fail.
pub const IGNORED_REDIS_URL: &str = "redis://127.0.0.1:1";

#[derive(Debug, Clone, Copy, Default)]
pub struct TopologyOptions {
    /// The sentinels demote a server without closing its clients' connections (they are told
    /// to send `EXISTS` where they would send `CLIENT KILL`), so a client still connected to
    /// a demoted primary learns it only from the `READONLY` answers to its writes.
    pub keep_clients_on_demotion: bool,
}

/// A primary, its replica and three sentinels.
#[derive(Debug)]
pub struct SentinelTopology {
    pub primary: RedisServer,
    pub replica: RedisServer,
    pub sentinels: Vec<Sentinel>,
}

impl SentinelTopology {
    /// Starts the primary, its replica (waiting until it is in sync), then the sentinels, and
    /// waits until they know each other and the replica.
    pub async fn start(options: TopologyOptions) -> Self {
        let primary = RedisServer::start();
        let replica = RedisServer::start_replica_of(&primary);
        let topology = Self {
            sentinels: Vec::new(),
            primary,
            replica,
        };
        topology
            .wait_until_replicating(topology.replica.port(), topology.primary.port())
            .await;
        let sentinels = (0..3)
            .map(|_| Sentinel::start(topology.primary.port(), options))
            .collect();
        let topology = Self {
            sentinels,
            ..topology
        };
        topology.wait_until_monitored().await;
        topology
    }

    /// `REDIS_SENTINELS`: the three, as `host:port`.
    pub fn sentinels_setting(&self) -> String {
        self.sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The settings that put a service in Sentinel mode on this topology (plaintext, on
    /// loopback); `extra` are added.
    pub fn settings<'a>(&'a self, extra: &[(&'a str, &'a str)]) -> Vec<(String, String)> {
        let mut pairs = vec![
            ("REDIS_URL".to_owned(), IGNORED_REDIS_URL.to_owned()),
            ("REDIS_SENTINELS".to_owned(), self.sentinels_setting()),
            ("REDIS_SENTINEL_MASTER".to_owned(), MASTER.to_owned()),
            // The suite's shared Redis is TLS; this one is not.
            ("REDIS_TLS_CA_FILE".to_owned(), String::new()),
        ];
        pairs.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        pairs
    }

    /// [`Self::settings`] as `service_kit` reads them.
    pub fn redis_settings(&self) -> RedisSettings {
        let mut env = Env::from_pairs(self.settings(&[]));
        let settings = RedisSettings::from_env(&mut env);
        env.finish()
            .unwrap_or_else(|e| panic!("Sentinel settings: {e}"));
        settings
    }

    /// A connection straight to the server on `port`, bypassing the sentinels.
    pub async fn node(&self, port: u16) -> MultiplexedConnection {
        redis::Client::open(format!("redis://127.0.0.1:{port}"))
            .expect("redis URL")
            .get_multiplexed_async_connection()
            .await
            .unwrap_or_else(|e| panic!("redis-server on {port}: {e}"))
    }

    /// The `INFO replication` fields of the server on `port`.
    pub async fn replication(&self, port: u16) -> HashMap<String, String> {
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut self.node(port).await)
            .await
            .expect("INFO replication");
        info.lines()
            .filter_map(|line| line.trim().split_once(':'))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    /// Waits until the server on `port` is a replica of `primary` with its link up (in sync).
    pub async fn wait_until_replicating(&self, port: u16, primary: u16) {
        let expected = primary.to_string();
        let expected = &expected;
        self.wait_for(
            &format!("{port} replicating {primary}"),
            move || async move {
                let info = self.replication(port).await;
                info.get("role").map(String::as_str) == Some("slave")
                    && info.get("master_port") == Some(expected)
                    && info.get("master_link_status").map(String::as_str) == Some("up")
            },
        )
        .await;
    }

    /// Waits until every sentinel knows the two others and the replica.
    async fn wait_until_monitored(&self) {
        self.wait_for(
            "sentinels know each other and the replica",
            move || async move {
                for sentinel in &self.sentinels {
                    let master: HashMap<String, String> = redis::cmd("SENTINEL")
                        .arg("MASTER")
                        .arg(MASTER)
                        .query_async(&mut self.node(sentinel.port).await)
                        .await
                        .expect("SENTINEL MASTER");
                    if master.get("num-other-sentinels").map(String::as_str) != Some("2")
                        || master.get("num-slaves").map(String::as_str) != Some("1")
                    {
                        return false;
                    }
                }
                true
            },
        )
        .await;
    }

    /// Waits until every sentinel names the server on `port` as the primary.
    pub async fn wait_until_primary_is(&self, port: u16) {
        self.wait_for(
            &format!("sentinels name {port} the primary"),
            move || async move {
                for sentinel in &self.sentinels {
                    let addr: Option<(String, u16)> = redis::cmd("SENTINEL")
                        .arg("GET-MASTER-ADDR-BY-NAME")
                        .arg(MASTER)
                        .query_async(&mut self.node(sentinel.port).await)
                        .await
                        .expect("SENTINEL GET-MASTER-ADDR-BY-NAME");
                    if addr.map(|(_, p)| p) != Some(port) {
                        return false;
                    }
                }
                true
            },
        )
        .await;
    }

    /// Asks a sentinel to fail over now (`SENTINEL FAILOVER`), with both servers up.
    pub async fn force_failover(&self) {
        let _: () = redis::cmd("SENTINEL")
            .arg("FAILOVER")
            .arg(MASTER)
            .query_async(&mut self.node(self.sentinels[0].port).await)
            .await
            .expect("SENTINEL FAILOVER");
    }

    /// Polls `condition` every 100 ms until it holds, panicking after [`SETTLE_TIMEOUT`].
    async fn wait_for<F, Fut>(&self, what: &str, mut condition: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        while !condition().await {
            assert!(
                Instant::now() < deadline,
                "not within {SETTLE_TIMEOUT:?}: {what}; sentinel log:\n{}",
                self.sentinels
                    .first()
                    .map(Sentinel::log_tail)
                    .unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// One sentinel process, with its configuration file (which it rewrites) in its own directory.
#[derive(Debug)]
pub struct Sentinel {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
    log: PathBuf,
}

impl Sentinel {
    fn start(primary: u16, options: TopologyOptions) -> Self {
        let dir = scratch_dir("sentinel");
        let log = dir.join("sentinel.log");
        // Redis cannot pick its own port; if another process takes ours first, try again.
        for _ in 0..5 {
            let port = free_port();
            let config = dir.join("sentinel.conf");
            let mut text = format!(
                "port {port}\nbind 127.0.0.1\ndir {dir}\n\
                 sentinel monitor {MASTER} 127.0.0.1 {primary} 2\n\
                 sentinel down-after-milliseconds {MASTER} 1000\n\
                 sentinel failover-timeout {MASTER} 3000\n\
                 sentinel parallel-syncs {MASTER} 1\n",
                dir = dir.display()
            );
            if options.keep_clients_on_demotion {
                // `EXISTS KILL TYPE normal` counts keys: the demoted server's clients stay.
                text.push_str(&format!("sentinel rename-command {MASTER} CLIENT EXISTS\n"));
            }
            std::fs::write(&config, text).expect("sentinel.conf");
            let mut command = Command::new(binary("redis-server"));
            command.arg(&config).arg("--sentinel");
            let mut child = spawn(command, &log).expect("redis-server --sentinel starts");
            match wait_for_line(&mut child, &log, "+monitor master", START_TIMEOUT) {
                Ok(_) => {
                    return Self {
                        child: Some(child),
                        port,
                        dir,
                        log,
                    };
                }
                Err(e) if e.to_string().contains("Address already in use") => {
                    terminate(&mut child);
                    let _ = std::fs::write(&log, "");
                }
                Err(e) => panic!("sentinel did not start: {e}"),
            }
        }
        panic!("sentinel found no free port in 5 tries");
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<_> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
