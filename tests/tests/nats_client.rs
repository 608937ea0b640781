//! A service's NATS connection with credentials and TLS, against a real nats-server that
//! requires them (issue 15's client side): anonymous and wrong credentials are refused, the
//! right ones connect; a TLS server is reached with the configured CA and refused without it.

use std::time::Duration;

use e2e::pki::TestPki;
use e2e::servers::NatsServer;
use service_kit::config::{Env, NatsUrl};
use service_kit::nats::{NatsClientSettings, connect};

const LIMIT: Duration = Duration::from_secs(2);

/// Reads the client settings as a service would, from exactly `pairs`.
fn settings(url: &str, pairs: &[(&str, &str)]) -> (NatsUrl, NatsClientSettings) {
    let url: NatsUrl = url.parse().expect("NATS URL");
    let mut env = Env::from_pairs(pairs.iter().copied());
    let settings = NatsClientSettings::from_env(&mut env, &url);
    env.finish().expect("valid settings");
    (url, settings)
}

/// Connects (within [`LIMIT`]) and proves the connection works with a request-free flush.
async fn reaches(url: &str, pairs: &[(&str, &str)]) -> Result<(), String> {
    let (url, settings) = settings(url, pairs);
    let ns = schemas::subjects::Namespace::default();
    let client = connect(&url, &settings, &ns, "nats-client-test", LIMIT)
        .await
        .map_err(|e| e.to_string())?;
    client
        .publish("probe", "x".into())
        .await
        .map_err(|e| e.to_string())?;
    client.flush().await.map_err(|e| e.to_string())
}

#[tokio::test]
async fn anonymous_and_wrong_credentials_are_refused_the_right_ones_connect() {
    service_kit::tls::install_crypto_provider();
    let server = NatsServer::start_with(&[
        "--user".into(),
        "metadata-worker".into(),
        "--pass".into(),
        "a-long-random-password".into(),
    ]);
    let url = server.url();
    let anonymous = reaches(&url, &[]).await;
    assert!(anonymous.is_err(), "anonymous connection accepted");
    let wrong = reaches(
        &url,
        &[
            ("NATS_USER", "metadata-worker"),
            ("NATS_PASSWORD", "not-the-password"),
        ],
    )
    .await;
    assert!(wrong.is_err(), "wrong password accepted");
    let error = wrong.unwrap_err();
    assert!(
        !error.contains("not-the-password"),
        "the password was echoed: {error}"
    );
    reaches(
        &url,
        &[
            ("NATS_USER", "metadata-worker"),
            ("NATS_PASSWORD", "a-long-random-password"),
        ],
    )
    .await
    .expect("the right credentials connect");
}

#[tokio::test]
async fn a_tls_server_is_reached_with_the_configured_ca_and_refused_without_it() {
    service_kit::tls::install_crypto_provider();
    let pki = TestPki::new();
    let ca = &pki.ca;
    let server = NatsServer::start_with(&[
        "--tls".into(),
        "--tlscert".into(),
        pki.server_cert.clone(),
        "--tlskey".into(),
        pki.server_key.clone(),
    ]);
    let url = server.url();
    reaches(&url, &[("NATS_TLS_CA_FILE", ca.as_str())])
        .await
        .expect("TLS with the configured CA connects");
    // Without the CA the server's certificate is not trusted (and plaintext is not offered).
    assert!(
        reaches(&url, &[]).await.is_err(),
        "untrusted server accepted"
    );
}

#[tokio::test]
async fn mutual_tls_needs_the_client_certificate() {
    service_kit::tls::install_crypto_provider();
    let pki = TestPki::new();
    let ca = &pki.ca;
    let server = NatsServer::start_with(&[
        "--tlsverify".into(),
        "--tlscert".into(),
        pki.server_cert.clone(),
        "--tlskey".into(),
        pki.server_key.clone(),
        "--tlscacert".into(),
        ca.clone(),
    ]);
    let url = server.url();
    assert!(
        reaches(&url, &[("NATS_TLS_CA_FILE", ca.as_str())])
            .await
            .is_err(),
        "a client without a certificate accepted"
    );
    reaches(
        &url,
        &[
            ("NATS_TLS_CA_FILE", ca.as_str()),
            ("NATS_TLS_CERT_FILE", pki.client_cert.as_str()),
            ("NATS_TLS_KEY_FILE", pki.client_key.as_str()),
        ],
    )
    .await
    .expect("the client certificate connects");
}

#[test]
fn plaintext_to_a_server_off_loopback_is_a_configuration_problem() {
    let url: NatsUrl = "nats://10.0.0.5:4222".parse().expect("url");
    let mut env = Env::from_pairs(Vec::<(String, String)>::new());
    NatsClientSettings::from_env(&mut env, &url);
    let error = env.finish().expect_err("refused").to_string();
    assert!(error.contains("NATS_URL"), "{error}");
    assert!(error.contains("NATS_ALLOW_PLAINTEXT"), "{error}");
    for allowed in [
        settings("tls://10.0.0.5:4222", &[]),
        settings("nats://10.0.0.5:4222", &[("NATS_ALLOW_PLAINTEXT", "true")]),
        settings("nats://localhost:4222", &[]),
        settings("nats://[::1]:4222", &[]),
    ] {
        drop(allowed);
    }
    let mut env = Env::from_pairs([("NATS_USER", "alone")]);
    NatsClientSettings::from_env(&mut env, &"nats://127.0.0.1:4222".parse().expect("url"));
    assert!(env.finish().is_err(), "a user without a password");
}
