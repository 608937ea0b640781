//! The one Redis connection type the services hold, whatever finds the server: cloning it is
//! cheap and every clone shares the same connection. It implements [`ConnectionLike`], so
//! commands, pipelines and scripts take it as they took the `ConnectionManager`.

use std::sync::Arc;

use redis::aio::{ConnectionLike, ConnectionManager, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Cmd, Pipeline, RedisFuture, RedisResult, Value};

use super::sentinel::SentinelConnection;

/// A multiplexed connection to the Redis primary that reconnects by itself: to `REDIS_URL`'s
/// server, or (with `REDIS_SENTINELS`) to whichever server the sentinels name, asked again
/// after a failover.
#[derive(Clone)]
pub struct RedisConnection(Route);

#[derive(Clone)]
enum Route {
    /// `REDIS_URL`'s server: the manager reconnects to it after a failure. The client opens
    /// the dedicated connections.
    Direct {
        manager: ConnectionManager,
        dedicated: Arc<(redis::Client, AsyncConnectionConfig)>,
    },
    Sentinel(SentinelConnection),
}

impl RedisConnection {
    pub(super) fn direct(
        manager: ConnectionManager,
        client: redis::Client,
        config: AsyncConnectionConfig,
    ) -> Self {
        Self(Route::Direct {
            manager,
            dedicated: Arc::new((client, config)),
        })
    }

    pub(super) fn sentinel(conn: SentinelConnection) -> Self {
        Self(Route::Sentinel(conn))
    }

    /// A new connection of its own to the current primary, not shared with any other caller:
    /// for commands whose meaning depends on the connection, such as `WAIT` (it waits for the
    /// replication of the writes made *on this connection*, and blocks the connection while
    /// it waits). Costs a connection set-up each time.
    pub async fn dedicated(&self) -> RedisResult<DedicatedConnection> {
        match &self.0 {
            Route::Direct { dedicated, .. } => {
                let (client, config) = dedicated.as_ref();
                Ok(DedicatedConnection {
                    conn: client
                        .get_multiplexed_async_connection_with_config(config)
                        .await?,
                    primary: None,
                })
            }
            Route::Sentinel(sentinel) => {
                let primary = sentinel.primary().await?;
                let conn = primary
                    .client
                    .get_multiplexed_async_connection_with_config(sentinel.config())
                    .await;
                match conn {
                    Ok(conn) => Ok(DedicatedConnection {
                        conn,
                        primary: Some((sentinel.clone(), primary.generation)),
                    }),
                    Err(error) => {
                        sentinel.observe(primary.generation, Err(&error));
                        Err(error)
                    }
                }
            }
        }
    }
}

impl std::fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Route::Direct { .. } => f.write_str("RedisConnection(REDIS_URL)"),
            Route::Sentinel(_) => f.write_str("RedisConnection(REDIS_SENTINELS)"),
        }
    }
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &mut self.0 {
            Route::Direct { manager, .. } => manager.req_packed_command(cmd),
            Route::Sentinel(sentinel) => sentinel.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match &mut self.0 {
            Route::Direct { manager, .. } => manager.req_packed_commands(pipeline, offset, count),
            Route::Sentinel(sentinel) => sentinel.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match &self.0 {
            Route::Direct { manager, .. } => manager.get_db(),
            Route::Sentinel(sentinel) => sentinel.get_db(),
        }
    }
}

/// A connection of its own to the primary ([`RedisConnection::dedicated`]). Behind Sentinel, a
/// failure on it that calls for a new primary makes the shared connection ask the sentinels
/// again too.
pub struct DedicatedConnection {
    conn: MultiplexedConnection,
    primary: Option<(SentinelConnection, u64)>,
}

impl std::fmt::Debug for DedicatedConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DedicatedConnection")
            .finish_non_exhaustive()
    }
}

impl DedicatedConnection {
    fn observe(&self, outcome: Result<&[Value], &redis::RedisError>) {
        if let Some((sentinel, generation)) = &self.primary {
            sentinel.observe(*generation, outcome);
        }
    }
}

impl ConnectionLike for DedicatedConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let result = self.conn.req_packed_command(cmd).await;
            self.observe(result.as_ref().map(std::slice::from_ref));
            result
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let result = self.conn.req_packed_commands(pipeline, offset, count).await;
            self.observe(result.as_deref());
            result
        })
    }

    fn get_db(&self) -> i64 {
        self.conn.get_db()
    }
}
