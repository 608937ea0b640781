//! service-kit's plumbing against the real servers.

use std::time::Duration;

use e2e::TestContext;
use mongodb::bson::doc;
use schemas::SubaccountId;
use schemas::documents::connector_subaccount;
use service_kit::nats::{StreamChange, ensure_streams};
use service_kit::{CancellationToken, Infrastructure};

#[tokio::test]
async fn stream_provisioning_is_idempotent_and_updates_changed_settings() {
    let ctx = TestContext::new();
    let config = ctx.common(&[]);
    let infra = Infrastructure::connect(&config, "provisioning-test", &CancellationToken::new())
        .await
        .expect("connect");
    let changes = |c: Vec<(String, StreamChange)>| {
        c.into_iter().map(|(_, change)| change).collect::<Vec<_>>()
    };

    let first = ensure_streams(&infra.jetstream, &infra.namespace, &config.streams)
        .await
        .expect("create");
    assert_eq!(
        changes(first),
        [StreamChange::Created, StreamChange::Created]
    );
    let again = ensure_streams(&infra.jetstream, &infra.namespace, &config.streams)
        .await
        .expect("again");
    assert_eq!(
        changes(again),
        [StreamChange::Unchanged, StreamChange::Unchanged]
    );

    let longer = ctx.common(&[("EVENTS_MAX_AGE", "45d"), ("EVENTS_DUPLICATE_WINDOW", "5m")]);
    let updated = ensure_streams(&infra.jetstream, &infra.namespace, &longer.streams)
        .await
        .expect("update");
    assert_eq!(
        changes(updated),
        [StreamChange::Updated, StreamChange::Updated],
        "max age changes the events stream; the duplicate window changes both"
    );
    let mut stream = infra
        .jetstream
        .get_stream(infra.namespace.events_stream())
        .await
        .expect("stream");
    let info = stream.info().await.expect("info");
    assert_eq!(info.config.max_age, Duration::from_secs(45 * 86_400));
    assert_eq!(info.config.duplicate_window, Duration::from_secs(300));
    infra.close().await;
}

#[tokio::test]
async fn concurrent_provisioning_from_many_replicas_agrees() {
    let ctx = TestContext::new();
    let config = ctx.common(&[]);
    let infra = Infrastructure::connect(&config, "race-test", &CancellationToken::new())
        .await
        .expect("connect");
    let runs = (0..6).map(|_| ensure_streams(&infra.jetstream, &infra.namespace, &config.streams));
    for result in futures::future::join_all(runs).await {
        result.expect("every replica provisions without error");
    }
    infra.close().await;
}

#[tokio::test]
async fn tenant_databases_are_isolated_and_indexed_on_first_use() {
    let ctx = TestContext::new();
    let infra = Infrastructure::connect(&ctx.common(&[]), "tenant-test", &CancellationToken::new())
        .await
        .expect("connect");
    let a = SubaccountId::parse("68cf05f060d294db17c0685e").expect("id");
    let b = SubaccountId::parse("68cf05f060d294db17c0685f").expect("id");
    let db_a = infra.mongo.connection_for(&a).await.expect("tenant a");
    let db_b = infra.mongo.connection_for(&b).await.expect("tenant b");
    assert_eq!(db_a.name(), format!("{}_{a}", ctx.id));
    assert_ne!(db_a.name(), db_b.name());

    let connectors = db_a.collection::<mongodb::bson::Document>(connector_subaccount::COLLECTION);
    let doc = doc! { "subaccountId": a.as_str(), "connectorId": "google-calendar" };
    connectors
        .insert_one(doc.clone())
        .await
        .expect("first insert");
    let duplicate = connectors
        .insert_one(doc)
        .await
        .expect_err("unique (subaccountId, connectorId)");
    assert!(
        duplicate.to_string().contains("E11000")
            || duplicate.to_string().to_lowercase().contains("duplicate"),
        "{duplicate}"
    );
    let in_b = db_b.collection::<mongodb::bson::Document>(connector_subaccount::COLLECTION);
    assert_eq!(
        in_b.count_documents(doc! {}).await.expect("count"),
        0,
        "tenants are isolated"
    );
    infra.close().await;
}

#[test]
fn tls_clients_work_although_the_build_has_two_rustls_backends() {
    // This test binary links rustls with both ring (our clients) and aws-lc-rs (the SMTP
    // sink's dependency), so rustls cannot choose a default provider by itself.
    service_kit::tls::install_crypto_provider();
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    assert!(config.alpn_protocols.is_empty());
}

/// The suite's MongoDB-wire server serves TLS only: the connection string's `tls=true` with
/// the CA in `tlsCAFile` reaches it; without the CA, or without TLS, nothing does.
#[tokio::test]
async fn mongodb_over_tls_needs_the_ca_in_the_connection_string() {
    let ctx = TestContext::new();
    assert!(ctx.mongodb_uri.contains("tls=true"), "{}", ctx.mongodb_uri);
    let ping = |uri: String| async move {
        let mut options = mongodb::options::ClientOptions::parse(&uri)
            .await
            .expect("connection string");
        options.server_selection_timeout = Some(Duration::from_secs(2));
        let client = mongodb::Client::with_options(options).expect("client");
        service_kit::mongo::ping(&client).await
    };
    ping(ctx.mongodb_uri.clone())
        .await
        .expect("TLS with the CA reaches the server");
    let port = ctx
        .mongodb_uri
        .split(':')
        .nth(2)
        .and_then(|rest| rest.split('/').next())
        .expect("port");
    let without_ca = format!("mongodb://127.0.0.1:{port}/?tls=true");
    assert!(
        ping(without_ca).await.is_err(),
        "a server certificate from an unknown CA is trusted"
    );
    let plaintext = format!("mongodb://127.0.0.1:{port}");
    assert!(
        ping(plaintext).await.is_err(),
        "a plaintext client reached a TLS-only server"
    );
}

/// What the MongoDB-wire server of the local run guarantees, checked: every write the
/// services' client had acknowledged (write concern majority, journaled) is still there after
/// the server is SIGKILLed and restarted. It takes `--sync-on-commit`, which the local run
/// sets: without it about a tenth of 300 quick writes acknowledged before the kill were lost.
#[tokio::test]
async fn acknowledged_writes_survive_a_mongodb_crash() {
    let mut mongo = e2e::servers::MongoServer::start_durable();
    let mut ctx = TestContext::new();
    ctx.mongodb_uri = mongo.uri();
    let config = ctx.common(&[]);
    let infra = Infrastructure::connect(&config, "crash-test", &CancellationToken::new())
        .await
        .expect("connect");
    let collection = infra
        .mongo
        .client()
        .database(&format!("{}_crash", ctx.id))
        .collection::<mongodb::bson::Document>("writes");
    const WRITES: i64 = 300;
    for i in 0..WRITES {
        collection
            .insert_one(doc! { "i": i })
            .await
            .expect("acknowledged");
    }
    mongo.crash_and_restart();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let count = loop {
        match collection.count_documents(doc! {}).await {
            Ok(count) => break count,
            Err(e) if std::time::Instant::now() < deadline => {
                tracing::debug!(error = %e, "not back yet");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("MongoDB did not come back: {e}"),
        }
    };
    assert_eq!(count, WRITES as u64, "acknowledged writes lost in a crash");
}
