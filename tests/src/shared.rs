//! One set of servers per test binary, started by the first test that asks: NATS in operator
//! mode, Redis and the MongoDB-wire server, all three serving TLS only. They die with the
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
        // TLS everywhere, with the certificate NATS serves (valid for 127.0.0.1).
        let (cert, key, ca) = crate::nats_auth::auth().server_tls();
        std::thread::scope(|s| {
            let nats = s.spawn(NatsServer::start);
            let redis = s.spawn(|| RedisServer::start_tls(&cert, &key, &ca));
            let mongo = s.spawn(|| MongoServer::start_tls(&cert, &key, &ca));
            SharedInfra {
                nats: nats.join().expect("nats-server started"),
                redis: redis.join().expect("redis-server started"),
                mongo: mongo.join().expect("secantusd-rs started"),
            }
        })
    })
}
