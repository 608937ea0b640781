//! The plumbing every service of the calendar connector runs on, so no binary re-implements
//! another's: typed [`config`], [`telemetry`], graceful [`shutdown`], [`nats`] and JetStream
//! provisioning, tenant [`mongo`] databases, [`redis`] with every key in one place, the
//! [`health`] and [`metrics`] endpoints, [`http`] serving, and the [`service`] entry point;
//! and what both issuers of authorization links share: [`auth_link`] and [`oauth_state`].

pub mod aead;
pub mod auth;
pub mod auth_link;
pub mod config;
pub mod consent;
pub mod consumer;
pub mod exposure;
pub mod health;
pub mod http;
pub mod infrastructure;
pub mod metrics;
pub mod mongo;
pub mod nats;
pub mod oauth_state;
pub mod rate_limit;
pub mod redis;
pub mod service;
pub mod shutdown;
pub mod startup;
pub mod telemetry;
pub mod tls;
pub mod webhook;

pub use config::{CommonConfig, Env};
pub use infrastructure::Infrastructure;
pub use service::ServiceConfig;
pub use startup::StartupError;
pub use tokio_util::sync::CancellationToken;
