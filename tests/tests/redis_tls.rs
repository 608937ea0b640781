//! The services' Redis connection over TLS (issue 15 §3), against a real redis-server that
//! serves TLS only: reached with `rediss://` and the configured CA, refused without the CA, and
//! plaintext to a server off loopback is a configuration problem.

use std::time::Duration;

use e2e::pki::TestPki;
use e2e::servers::RedisServer;
use service_kit::config::Env;
use service_kit::redis::{RedisSettings, connect};

const LIMIT: Duration = Duration::from_secs(2);

fn settings(pairs: &[(&str, &str)]) -> Result<RedisSettings, String> {
    let mut env = Env::from_pairs(pairs.iter().copied());
    let settings = RedisSettings::from_env(&mut env);
    env.finish().map(|()| settings).map_err(|e| e.to_string())
}

#[tokio::test]
async fn a_tls_redis_is_reached_with_the_configured_ca_and_refused_without_it() {
    service_kit::tls::install_crypto_provider();
    let pki = TestPki::new();
    let ca = &pki.ca;
    let server = RedisServer::start_tls(&pki.server_cert, &pki.server_key, ca);
    let url = server.url();
    assert!(url.starts_with("rediss://"), "{url}");

    let with_ca = settings(&[
        ("REDIS_URL", url.as_str()),
        ("REDIS_TLS_CA_FILE", ca.as_str()),
    ])
    .expect("valid settings");
    let mut conn = connect(&with_ca, LIMIT)
        .await
        .expect("TLS with the configured CA connects");
    service_kit::redis::ping(&mut conn).await.expect("PING");

    // The system's roots do not know the test CA.
    let system_roots = settings(&[("REDIS_URL", url.as_str())]).expect("valid settings");
    assert!(
        connect(&system_roots, LIMIT).await.is_err(),
        "a server certificate from an unknown CA was trusted"
    );
    // Plaintext to a TLS-only server does not get through either.
    let plain = url.replacen("rediss://", "redis://", 1);
    let plaintext = settings(&[("REDIS_URL", plain.as_str())]).expect("valid settings");
    assert!(connect(&plaintext, LIMIT).await.is_err());
}

#[test]
fn plaintext_to_a_redis_off_loopback_is_a_configuration_problem() {
    let refused = settings(&[("REDIS_URL", "redis://10.0.0.5:6379")]).expect_err("refused");
    assert!(refused.contains("REDIS_URL"), "{refused}");
    assert!(refused.contains("REDIS_ALLOW_PLAINTEXT"), "{refused}");
    for allowed in [
        vec![("REDIS_URL", "rediss://10.0.0.5:6379")],
        vec![
            ("REDIS_URL", "redis://10.0.0.5:6379"),
            ("REDIS_ALLOW_PLAINTEXT", "true"),
        ],
        vec![("REDIS_URL", "redis://localhost:6379")],
        vec![("REDIS_URL", "redis://[::1]:6379")],
    ] {
        settings(&allowed).unwrap_or_else(|e| panic!("{allowed:?}: {e}"));
    }
    let ca_without_tls = settings(&[
        ("REDIS_URL", "redis://127.0.0.1:6379"),
        ("REDIS_TLS_CA_FILE", "/ca.pem"),
    ])
    .expect_err("a CA for a plaintext URL");
    assert!(
        ca_without_tls.contains("REDIS_TLS_CA_FILE"),
        "{ca_without_tls}"
    );
}
