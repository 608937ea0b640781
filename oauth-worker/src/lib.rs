//! The oauth-worker: answers connect requests with authorization URLs, serves the OAuth redirect
//! callback and owns the token vault.

pub mod access_tokens;
pub mod authorization;
pub mod calendars;
pub mod callback;
pub mod config;
pub mod consent_page;
pub mod consent_policy;
pub mod handlers;
pub mod held_tokens;
pub mod outbox;
pub mod provider;
pub mod rpc;
pub mod token_store;
pub mod vault;

use std::sync::Arc;
use std::time::Duration;

use schemas::events::DisconnectRequested;
use schemas::subjects::DISCONNECT_CONSUMER;
use service_kit::consumer::{self, ConsumerSpec};

use service_kit::http::Listen;
use service_kit::{CancellationToken, Infrastructure, StartupError};

pub use config::OAuthWorkerConfig;

use crate::access_tokens::AccessTokens;
use crate::callback::Callback;
use crate::handlers::connect_requested::ConnectRequestedHandler;
use crate::handlers::disconnect_requested::DisconnectHandler;
use crate::held_tokens::HeldTokens;
use crate::outbox::Outbox;
use crate::provider::Provider;
use crate::token_store::TokenStore;
use crate::vault::TokenVault;
use service_kit::oauth_state::StateStore;

/// The name in logs, metrics, the NATS connection and durable consumer names.
pub const SERVICE: &str = "oauth-worker";

/// What the `oauth-worker` binary does: reads its settings from the environment, runs until SIGTERM or
/// SIGINT, and turns a start-up failure into a message and an exit code
/// ([`service_kit::service::main`]). The chaos run (tests/tests/chaos.rs) starts its replicas
/// through this too.
pub async fn main_from_env() -> std::process::ExitCode {
    service_kit::service::main(SERVICE, |config: OAuthWorkerConfig, shutdown| async move {
        let listen = Listen::at(
            "OAUTH_WORKER_HTTP_ADDR",
            config.http_addr,
            config.http_reuse_port,
        );
        run(config, listen, shutdown).await
    })
    .await
}

/// Runs the oauth-worker until `shutdown` is cancelled: answers connect requests over NATS and
/// serves the callback, health and metrics on `listen` (bound once everything is connected);
/// then finishes in-flight work and drains NATS.
pub async fn run(
    config: OAuthWorkerConfig,
    listen: impl Into<Listen>,
    shutdown: CancellationToken,
) -> Result<(), StartupError> {
    let infra = Infrastructure::connect(&config.common, SERVICE, &shutdown).await?;
    infra.ensure_streams(&config.common).await?;
    let grace = config.common.shutdown_grace;
    let client = authorization::provider_client(&config.provider);
    let states = StateStore::new(
        infra.redis.clone(),
        infra.keys.clone(),
        config.state_ttl,
        config.connect_limits.clone(),
        config.state_store_timeout,
    )
    .waiting_for_replicas(config.wait_replicas);
    let tokens = TokenStore::new(infra.clone(), TokenVault::new(&config.vault));
    let (outbox, relay) = Outbox::new(infra.clone(), tokens.clone());
    let relay = tokio::spawn(relay.run(shutdown.clone()));
    let handler = Arc::new(ConnectRequestedHandler {
        provider: client.clone(),
        profile: config.provider.profile,
        scopes: config.provider.scopes.0.clone(),
        states: states.clone(),
        infra: infra.clone(),
        product_name: config.product_name.clone(),
        consent_page: consent_page::url(&config.provider.redirect_uri),
        outbox: outbox.clone(),
        link_settings: config.link_settings(),
    });
    let consent_page = Arc::new(consent_page::ConsentPage {
        states: states.clone(),
        product_name: config.product_name.clone(),
        scopes: config.provider.scopes.0.clone(),
    });
    let provider = Provider::new(&config.provider, client.clone());
    let held_tokens = Arc::new(HeldTokens::new(config.access_token_memory_ttl));
    let access_tokens = Arc::new(AccessTokens {
        infra: infra.clone(),
        store: tokens.clone(),
        provider: provider.clone(),
        outbox: outbox.clone(),
        margin: config.access_token_margin,
        held: held_tokens.clone(),
    });
    let disconnect_spec = ConsumerSpec {
        durable: DISCONNECT_CONSUMER,
        filter_subject: infra.namespace.event_filter::<DisconnectRequested>(),
        ack_wait: Duration::from_secs(60),
        max_deliver: config.disconnect_max_deliver,
        max_ack_pending: 256,
        concurrency: 4,
        retry_delays: config.disconnect_retry_delays.clone(),
    };
    let disconnect_consumer = infra
        .ensure_consumer(&disconnect_spec, config.common.startup_timeout)
        .await?;
    let disconnects = consumer::run::<DisconnectRequested, _>(
        infra.jetstream.clone(),
        infra.namespace.clone(),
        disconnect_consumer,
        disconnect_spec,
        Arc::new(DisconnectHandler {
            infra: infra.clone(),
            tokens: tokens.clone(),
            provider: provider.clone(),
            held: held_tokens,
        }),
        shutdown.clone(),
        grace,
    );
    let callback = Arc::new(Callback {
        infra: infra.clone(),
        states,
        provider,
        client,
        profile: config.provider.profile,
        tokens,
        outbox,
        required_scopes: config.provider.scopes.0.clone(),
        token_response_omits_scope: config.provider.token_response_omits_scope,
        frontend: config.frontend_redirect_url.clone(),
        max_accounts: config.max_accounts,
        consent_policy: config.consent_policy.clone(),
    });
    let connect_requests = rpc::serve(
        infra.nats.clone(),
        infra.namespace.connect_requested(),
        handler,
        shutdown.clone(),
        grace,
    );
    let token_requests = rpc::serve(
        infra.nats.clone(),
        infra.namespace.access_token_requested(),
        access_tokens,
        shutdown.clone(),
        grace,
    );
    let requests = async {
        let (connect, tokens) = tokio::join!(connect_requests, token_requests);
        connect.and(tokens)
    };
    let router = service_kit::health::router(SERVICE, infra.clone())
        .merge(callback::router(callback))
        .merge(consent_page::router(consent_page));
    // Bound only now, with consumers and RPC subscriptions in place: see `Listen`.
    let listener = listen.into().bind().await?;
    let http = service_kit::http::serve(SERVICE, listener, router, shutdown.clone(), grace);
    let (requests, served, ()) = tokio::join!(requests, http, disconnects);
    let _ = relay.await;
    infra.close().await;
    requests.map_err(|e| StartupError::Failed {
        what: "connect request subscription",
        cause: e.to_string(),
    })?;
    served
}
