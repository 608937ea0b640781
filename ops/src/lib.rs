//! `gcal-ops`, the operator's tool for the connector's JetStream streams: list, show, replay
//! and purge dead letters, and replay ranges of domain events.
//!
//! `main.rs` only parses the command line and calls [`run`]; tests call [`run_with_env`]
//! in-process with their own settings and an output buffer. Whatever a command reports goes
//! to `out` (a table, or one JSON document with `--json`); a progress bar, when there is one,
//! goes to stderr.
//!
//! Replaying is safe because every consumer is idempotent: a replayed event leaves the same
//! state as its first delivery. A replay gets a fresh `Nats-Msg-Id` (the original inside the
//! stream's duplicate window would be dropped as a duplicate) and carries the original id in
//! `Gcal-Original-Msg-Id`.

mod cli;
mod commands;
mod config;
mod dead_letter;
mod deadline;
pub mod nats_auth;
mod output;
mod reader;
pub mod secrets;
mod subject;

use std::io::Write;

/// So callers (tests) can parse a [`Cli`] without depending on clap themselves.
pub use clap::Parser;
pub use cli::{
    Cli, Command, DlqCommand, DlqListArgs, DlqPurgeArgs, DlqReplayArgs, DlqShowArgs, EventsCommand,
    EventsReplayArgs, GlobalArgs, NatsAuthCommand, SecretsCommand,
};
pub use dead_letter::{Detail, Summary};
pub use deadline::DeadlineReached;
pub use output::{Action, Outcome, SomeFailed};
pub use subject::{ConsumerName, SubjectFilter};

use service_kit::Env;
use service_kit::config::ConfigError;

/// Exit code when every message was handled (or there was nothing to do).
pub const EXIT_OK: u8 = 0;
/// Exit code when a message failed, or the command could not do its work (unreachable NATS,
/// an unknown sequence, a missing stream).
pub const EXIT_FAILED: u8 = 1;
/// Exit code for a command line that does not make sense (clap uses it too).
pub const EXIT_USAGE: u8 = 2;
/// Exit code when a replay stopped at its `--deadline` (sysexits' EX_TEMPFAIL: running it
/// again goes on where it stopped). The report lists what was done, what was interrupted and
/// what was not attempted.
pub const EXIT_DEADLINE: u8 = 75;
/// Exit code for invalid configuration, as the services use (sysexits' EX_CONFIG).
pub const EXIT_CONFIG: u8 = service_kit::service::EXIT_CONFIG;

/// A command line that parsed but asks for something impossible.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Runs one command with settings from the process environment and `.env`.
pub async fn run(cli: Cli, out: &mut dyn Write) -> anyhow::Result<()> {
    run_with_env(cli, Env::from_process(), out).await
}

/// Runs one command with settings from `env` (flags still win).
pub async fn run_with_env(cli: Cli, env: Env, out: &mut dyn Write) -> anyhow::Result<()> {
    if let Command::Secrets(SecretsCommand::Generate) = cli.command {
        secrets::generate(chrono::Utc::now(), out)?;
        return Ok(());
    }
    if let Command::NatsAuth(command) = cli.command {
        let ns = config::namespace(&cli.global, env)?;
        return run_nats_auth(command, &ns, out);
    }
    let deadline = deadline::Deadline::start(cli.global.deadline.0);
    let settings = config::resolve(&cli.global, env)?;
    commands::check(&cli.command, &settings.namespace)?;
    let client = config::connect(&settings, cli.global.connect_timeout()).await?;
    let ops = commands::Ops {
        js: async_nats::jetstream::new(client.clone()),
        ns: settings.namespace,
        json: cli.global.json,
        deadline,
    };
    let result = commands::dispatch(&ops, cli.command, out).await;
    // Everything that matters was acknowledged already; this only sends what is buffered.
    let _ = client.flush().await;
    result
}

/// `gcal-ops nats-auth …`: files only, no connection.
fn run_nats_auth(
    command: NatsAuthCommand,
    ns: &schemas::subjects::Namespace,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    use schemas::bus_access::Options;
    match command {
        NatsAuthCommand::Generate(args) => nats_auth::generate(
            &args.out,
            ns,
            &nats_auth::GenerateOptions {
                options: Options {
                    api_reads_events: args.api_reads_events,
                },
                tls_hosts: args.tls_hosts,
            },
            out,
        ),
        NatsAuthCommand::Mint(args) => nats_auth::mint(
            &args.dir,
            ns,
            args.identity,
            Options {
                api_reads_events: args.api_reads_events,
            },
            args.out.as_deref(),
            out,
        ),
        NatsAuthCommand::Revoke(args) => nats_auth::revoke(&args.dir, &args.creds, out),
        NatsAuthCommand::Permissions => {
            write!(out, "{}", schemas::bus_access::table())?;
            Ok(())
        }
    }
}

/// The process exit code for an error [`run`] returned.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    if err.downcast_ref::<ConfigError>().is_some() {
        EXIT_CONFIG
    } else if err.downcast_ref::<UsageError>().is_some() {
        EXIT_USAGE
    } else if err.downcast_ref::<DeadlineReached>().is_some() {
        EXIT_DEADLINE
    } else {
        EXIT_FAILED
    }
}
