//! One set of servers per test binary, started by the first test that asks. They die with the
//! test process (see [`crate::process`]); their directories are removed by the next run.

use std::sync::OnceLock;

use crate::servers::{MongoServer, NatsServer, RedisServer};

#[derive(Debug)]
pub struct SharedInfra {
    pub nats: NatsServer,
    pub redis: RedisServer,
    pub mongo: MongoServer,
}

static SHARED: OnceLock<SharedInfra> = OnceLock::new();

/// The shared servers, started (in parallel) on first use.
pub fn shared() -> &'static SharedInfra {
    SHARED.get_or_init(|| {
        std::thread::scope(|s| {
            let nats = s.spawn(NatsServer::start);
            let redis = s.spawn(RedisServer::start);
            let mongo = s.spawn(MongoServer::start);
            SharedInfra {
                nats: nats.join().expect("nats-server started"),
                redis: redis.join().expect("redis-server started"),
                mongo: mongo.join().expect("secantusd-rs started"),
            }
        })
    })
}
