//! The end-to-end harness: real servers on free loopback ports, isolated per test, and the
//! services started in-process on port 0.
//!
//! - [`servers`]: nats-server, redis-server and secantusd-rs as child processes, each with its
//!   own data directory; stoppable and restartable on the same port.
//! - [`shared`]: one set of those servers per test binary, started on first use.
//! - [`context`]: a [`TestContext`] per test — its own NATS namespace, database names and Redis
//!   key prefix on the shared servers, so tests run in parallel without seeing each other.
//! - [`service`]: a service's `run(config, listener, shutdown)` started on port 0 and waited on.
//! - [`startup`]: runs a service *binary* to check how it starts, fails and stops.
//! - [`jwt`]: mints user JWTs for tests that call the api.
//! - [`nats_auth`]: the NATS operator, TLS and per-test credentials every test server runs with.
//! - [`stream`]: reads what a JetStream stream holds.
//! - [`eventually`]: the one poll loop for waiting on what the system does in the background.
//! - [`redis_sentinel`]: Redis behind Sentinel (a primary, a replica, three sentinels), every
//!   process killable.
//! - [`cluster`]: the cluster shape (three NATS nodes, two replicas of every service), every
//!   process killable; [`chaos`]: the chaos run on it (tests/tests/chaos.rs).
//!
//! Logs of the services under test are silent unless `TEST_LOG=1`.

pub mod browser;
pub mod chaos;
pub mod cluster;
pub mod context;
pub mod eventually;
pub mod fake_google;
pub mod jwt;
pub mod nats_auth;
pub mod pki;
pub mod process;
pub mod redis_sentinel;
pub mod servers;
pub mod service;
pub mod shared;
pub mod startup;
pub mod stream;
pub mod tools;

pub use context::TestContext;
pub use eventually::eventually;
pub use service::RunningService;
pub mod smtp;
