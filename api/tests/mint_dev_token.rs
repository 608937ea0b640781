//! `mint-dev-token` prints a token the api accepts, for the README's try-it command.

use std::process::Command;

use service_kit::Env;
use service_kit::auth::{JwtConfig, JwtVerifier, MANAGE_CONNECTORS};

const SUBACCOUNT: &str = "68cf05f060d294db17c0685e";

/// Runs the binary with exactly `settings` (no inherited environment; an empty working
/// directory, so no `.env` is read).
fn mint(args: &[&str], settings: &[(&str, &str)]) -> std::process::Output {
    let dir = std::env::temp_dir().join(format!("mint-dev-token-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let output = Command::new(env!("CARGO_BIN_EXE_mint-dev-token"))
        .args(args)
        .env_clear()
        .envs(settings.iter().copied())
        .current_dir(&dir)
        .output()
        .expect("run mint-dev-token");
    let _ = std::fs::remove_dir_all(&dir);
    output
}

fn verifier(settings: &[(&str, &str)]) -> JwtVerifier {
    let mut env = Env::from_pairs(settings.iter().copied());
    let config = JwtConfig::from_env(&mut env);
    env.finish().expect("config");
    JwtVerifier::new(&config).expect("verifier")
}

#[tokio::test]
async fn with_no_configuration_it_mints_a_token_the_default_api_accepts() {
    let output = mint(&[SUBACCOUNT], &[]);
    assert!(output.status.success(), "{output:?}");
    let token = String::from_utf8(output.stdout).expect("utf-8");
    let claims = verifier(&[])
        .verify(token.trim())
        .await
        .expect("the api accepts it");
    assert_eq!(claims.subaccount_ids, [SUBACCOUNT]);
    assert!(claims.has_permission(MANAGE_CONNECTORS));
    let note = String::from_utf8_lossy(&output.stderr);
    assert!(note.contains("development secret"), "{note}");
}

#[tokio::test]
async fn it_signs_with_the_configured_secret_issuer_audience_and_ttl() {
    let settings = [
        ("JWT_SECRET", "a-deployment-secret-of-at-least-32-bytes"),
        ("JWT_ISSUER", "https://auth.example"),
        ("JWT_AUDIENCE", "gcal"),
    ];
    let output = mint(&[SUBACCOUNT, "--ttl", "10m", "--admin"], &settings);
    assert!(output.status.success(), "{output:?}");
    let token = String::from_utf8(output.stdout).expect("utf-8");
    let claims = verifier(&settings)
        .verify(token.trim())
        .await
        .expect("accepted");
    assert!(claims.is_admin());
    let lifetime = claims.exp - claims.iat.expect("iat");
    assert_eq!(lifetime, 600);
    // The default api (dev secret) does not accept it.
    assert!(verifier(&[]).verify(token.trim()).await.is_err());
}

#[test]
fn it_refuses_bad_input_and_asymmetric_algorithms() {
    assert_eq!(mint(&["not-an-id"], &[]).status.code(), Some(2));
    assert_eq!(mint(&[], &[]).status.code(), Some(2));
    let rs256 = mint(
        &[SUBACCOUNT],
        &[
            ("JWT_ALGORITHM", "RS256"),
            ("JWT_JWKS_URL", "http://127.0.0.1:9/jwks.json"),
        ],
    );
    assert_eq!(rs256.status.code(), Some(2), "{rs256:?}");
    assert!(rs256.stdout.is_empty(), "no token printed");
    let short = mint(&[SUBACCOUNT], &[("JWT_SECRET", "s3cr3t-x")]);
    assert_eq!(short.status.code(), Some(78));
    assert!(!String::from_utf8_lossy(&short.stderr).contains("s3cr3t-x"));
}
