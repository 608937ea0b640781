//! The one Redis connection type the services hold, whatever finds the server: cloning it is
//! cheap and every clone shares the same connection, like the `ConnectionManager` it wraps.
//! It implements [`ConnectionLike`], so commands, pipelines and scripts take it as they took
//! the manager.

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::{Cmd, Pipeline, RedisFuture, Value};

/// A multiplexed connection to the Redis primary that reconnects by itself.
#[derive(Clone)]
pub struct RedisConnection(Route);

#[derive(Clone)]
enum Route {
    /// `REDIS_URL`'s server: the manager reconnects to it after a failure.
    Direct(ConnectionManager),
}

impl RedisConnection {
    pub(crate) fn direct(manager: ConnectionManager) -> Self {
        Self(Route::Direct(manager))
    }
}

impl std::fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Route::Direct(_) => f.write_str("RedisConnection(REDIS_URL)"),
        }
    }
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &mut self.0 {
            Route::Direct(manager) => manager.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match &mut self.0 {
            Route::Direct(manager) => manager.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match &self.0 {
            Route::Direct(manager) => manager.get_db(),
        }
    }
}
