//! The api: the only surface the frontend calls.
//!
//! - [`routes`]: `POST /api/connectors/{subaccountId}/handlegooglecalendar` and the connector
//!   endpoints, plus the shared `/healthz`, `/readyz`, `/metrics`.
//! - [`extract`] and [`error`]: input parsed into valid values, every failure in the spec's
//!   error shape.
//! - [`connectors`]: the tenant's `connectorsubaccount` collection behind a Redis cache-aside.
//! - [`oauth_worker`]: the NATS request that asks the oauth-worker for an authorization link.
//! - [`service_auth`]: service tokens, for the deprecated
//!   `POST /api/connectors/{subaccountId}/metadata/update`.
//! - [`openapi`]: the OpenAPI 3.1 document (`GET /openapi.json`) and Swagger UI (`/docs`).
//! - [`try_it`]: the try-it page at `/` and its `/dev/...` helpers, with `API_DEV_MODE` only.
//! - [`limits`]: per-caller rate limits shared by every replica (Redis).
//!
//! Users authenticate with a bearer JWT (`service_kit::auth`), other services with a service
//! token ([`service_auth`]).

pub mod config;
pub mod connectors;
pub mod error;
pub mod extract;
pub mod limits;
pub mod local_links;
pub mod oauth_worker;
pub mod openapi;
pub mod routes;
pub mod service_auth;
pub mod state;
pub mod try_it;

use service_kit::auth::JwtVerifier;
use service_kit::http::Listen;
use service_kit::{CancellationToken, Infrastructure, StartupError};

pub use config::ApiConfig;

use crate::connectors::ConnectorStore;
use crate::extract::BodyLimit;
use crate::service_auth::ServiceTokenVerifier;
use crate::state::{AppState, Shared};

/// The name in logs, metrics and the NATS connection.
pub const SERVICE: &str = "api";

/// What the `api` binary does: reads its settings from the environment, runs until SIGTERM or
/// SIGINT, and turns a start-up failure into a message and an exit code
/// ([`service_kit::service::main`]). The chaos run (tests/tests/chaos.rs) starts its replicas
/// through this too.
pub async fn main_from_env() -> std::process::ExitCode {
    service_kit::service::main(SERVICE, |config: ApiConfig, shutdown| async move {
        let listen = Listen::at("API_HTTP_ADDR", config.http_addr, config.http_reuse_port);
        run(config, listen, shutdown).await
    })
    .await
}

/// Runs the api on `listen` (bound once its dependencies are connected) until `shutdown` is
/// cancelled, then drains in-flight requests and the NATS connection.
pub async fn run(
    config: ApiConfig,
    listen: impl Into<Listen>,
    shutdown: CancellationToken,
) -> Result<(), StartupError> {
    let verifier = JwtVerifier::new(&config.auth)?;
    tracing::info!(algorithm = %config.auth.algorithm, "user tokens: algorithm pinned");
    if config.try_it.enabled {
        tracing::info!(
            page = %format_args!("http://{}/", config.http_addr),
            "API_DEV_MODE is on: the try-it page and /dev/token mint a token for any subaccount \
             for anyone who can reach this api. For a developer's machine only."
        );
    }
    let infra = Infrastructure::connect(&config.common, SERVICE, &shutdown).await?;
    // The deprecated metadata update publishes to the domain stream: make sure it exists even
    // when no worker has started yet.
    infra.ensure_streams(&config.common).await?;
    let service_tokens = ServiceTokenVerifier::new(&config.service_auth, &infra)?;
    if service_tokens.is_configured() {
        tracing::info!(
            mode = service_tokens.mode_name(),
            "service tokens: validation configured"
        );
    } else {
        tracing::warn!(
            "service tokens: neither SERVICE_AUTH_URL nor SERVICE_TOKENS is set; \
             service-token routes answer 503 service_auth_not_configured"
        );
    }
    let state = AppState::new(Shared {
        infra: infra.clone(),
        verifier,
        connectors: ConnectorStore::new(infra.clone(), config.connector_cache_ttl),
        connect_timeout: config.connect_request_timeout,
        body_limit: BodyLimit(config.max_body_bytes),
        service_tokens,
        publish_timeout: config.publish_timeout,
        webhooks: config.webhooks.clone(),
        try_it: config.try_it.clone(),
        limiter: crate::limits::Limiter::new(config.limits.clone(), &infra),
        local_links: crate::local_links::LocalLinks::new(config.link_settings_ttl, infra.clone()),
    });
    // Bound only now, with everything connected: see `Listen`.
    let listener = listen.into().bind().await?;
    let served = service_kit::http::serve(
        SERVICE,
        listener,
        routes::router(state),
        shutdown,
        config.common.shutdown_grace,
    )
    .await;
    infra.close().await;
    served
}
