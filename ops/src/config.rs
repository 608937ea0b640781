//! Where the CLI connects: the same two settings the services read (`NATS_URL`,
//! `NATS_NAMESPACE`, from the environment or `.env` through service-kit's [`Env`]), each
//! overridden by its flag.

use std::time::Duration;

use anyhow::anyhow;
use schemas::subjects::Namespace;
use service_kit::config::{ConfigError, Env, NatsUrl};
use service_kit::nats::NatsClientSettings;
use service_kit::startup::StartupError;

use crate::cli::GlobalArgs;

/// The settings the CLI needs.
#[derive(Debug, Clone)]
pub struct Settings {
    pub nats_url: NatsUrl,
    /// Credentials and TLS, from the environment as the services read them.
    pub nats: NatsClientSettings,
    pub namespace: Namespace,
}

/// Flags win; a setting is read from `env` only when its flag is absent, so a bad value in
/// the environment does not stand in the way of a flag that replaces it.
pub fn resolve(flags: &GlobalArgs, mut env: Env) -> Result<Settings, ConfigError> {
    let nats_url = match &flags.nats_url {
        Some(url) => url.clone(),
        None => env.value(
            "NATS_URL",
            "nats://127.0.0.1:4222",
            "NATS server with JetStream enabled.",
        ),
    };
    let namespace = read_namespace(flags, &mut env);
    let nats = NatsClientSettings::from_env(&mut env, &nats_url);
    env.finish()?;
    Ok(Settings {
        nats_url,
        nats,
        namespace,
    })
}

/// The namespace alone (`nats-auth`, which connects to nothing): the flag, else
/// `NATS_NAMESPACE`, else `gcal`.
pub fn namespace(flags: &GlobalArgs, mut env: Env) -> Result<Namespace, ConfigError> {
    let namespace = read_namespace(flags, &mut env);
    env.finish()?;
    Ok(namespace)
}

fn read_namespace(flags: &GlobalArgs, env: &mut Env) -> Namespace {
    match &flags.namespace {
        Some(ns) => ns.clone(),
        None => env.value(
            "NATS_NAMESPACE",
            "gcal",
            "Prefix of every NATS subject and stream name of this deployment.",
        ),
    }
}

/// Connects, retrying for at most `limit`. The error names the server (never the URL, which
/// may carry credentials) and what to change.
pub async fn connect(settings: &Settings, limit: Duration) -> anyhow::Result<async_nats::Client> {
    service_kit::nats::connect(
        &settings.nats_url,
        &settings.nats,
        &settings.namespace,
        schemas::bus_access::client_name(schemas::bus_access::Identity::Operator),
        limit,
    )
    .await
    .map_err(|e| {
        let cause = match e {
            StartupError::Unreachable { cause, .. } => cause,
            other => other.to_string(),
        };
        let hint = if cause.contains("authorization violation") {
            " — the server wants credentials: set NATS_CREDS_FILE to the operator's .creds \
             file (operator-readonly.creds to look only; the local run's are in \
             .local/nats-auth/creds/)"
        } else {
            ""
        };
        anyhow!(
            "cannot reach NATS at {} within {limit:?} (check NATS_URL or --nats-url; \
                 --connect-timeout waits longer): {cause}{hint}",
            settings.nats_url
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::Parser;

    fn flags(args: &[&str]) -> GlobalArgs {
        let mut argv = vec!["gcal-ops"];
        argv.extend_from_slice(args);
        argv.extend_from_slice(&["dlq", "list"]);
        Cli::try_parse_from(argv).expect("valid").global
    }

    #[test]
    fn defaults_then_environment_then_flags() {
        let s = resolve(&flags(&[]), Env::from_pairs(Vec::<(String, String)>::new()))
            .expect("defaults");
        assert_eq!(s.namespace.prefix(), "gcal");
        assert_eq!(s.nats_url.0[0].port(), 4222);

        let env = || {
            Env::from_pairs([
                ("NATS_URL", "nats://127.0.0.1:5555"),
                ("NATS_NAMESPACE", "prod"),
            ])
        };
        let s = resolve(&flags(&[]), env()).expect("env");
        assert_eq!(
            (s.namespace.prefix(), s.nats_url.0[0].port()),
            ("prod", 5555)
        );

        let s = resolve(
            &flags(&["--namespace", "t-9", "--nats-url", "nats://127.0.0.1:6666"]),
            env(),
        )
        .expect("flags");
        assert_eq!(
            (s.namespace.prefix(), s.nats_url.0[0].port()),
            ("t-9", 6666)
        );
    }

    #[test]
    fn a_bad_setting_is_named_unless_a_flag_replaces_it() {
        let env = || Env::from_pairs([("NATS_NAMESPACE", "Not.Valid")]);
        let err = resolve(&flags(&[]), env()).expect_err("invalid");
        assert!(err.to_string().contains("NATS_NAMESPACE"), "{err}");
        assert!(resolve(&flags(&["--namespace", "ok"]), env()).is_ok());
    }
}
