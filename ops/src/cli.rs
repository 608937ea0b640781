//! The command line, parsed by clap. A value that cannot be right (a malformed subject filter,
//! a time that is neither RFC 3339 nor a duration) is refused here, as a usage error (exit 2),
//! before anything connects.

use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::{ArgGroup, Args, Parser, Subcommand};
use schemas::subjects::Namespace;
use service_kit::config::{HumanDuration, NatsUrl};

use crate::subject::{ConsumerName, SubjectFilter};

/// Inspect and replay the calendar connector's events in NATS JetStream.
///
/// Settings come from the environment or a `.env` file, like the services' (`NATS_URL`,
/// `NATS_NAMESPACE`); the flags below win over both.
#[derive(Debug, Clone, Parser)]
#[command(name = "gcal-ops", version, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// NATS server with JetStream [default: $NATS_URL, else nats://127.0.0.1:4222]
    #[arg(long, global = true, value_name = "URL")]
    pub nats_url: Option<NatsUrl>,
    /// Subject and stream prefix of the deployment [default: $NATS_NAMESPACE, else gcal]
    #[arg(long, global = true, value_name = "PREFIX")]
    pub namespace: Option<Namespace>,
    /// Machine-readable output: one JSON document per command (a JSON array for lists)
    #[arg(long, global = true)]
    pub json: bool,
    /// How long to keep trying to reach NATS before giving up
    #[arg(long, global = true, value_name = "DURATION", default_value = "5s")]
    pub connect_timeout: HumanDuration,
    /// Overall bound on a replay: at the deadline it stops, reports what it did and what it
    /// did not, and exits 75
    #[arg(long, global = true, value_name = "DURATION", default_value = "10m", value_parser = parse_deadline)]
    pub deadline: HumanDuration,
}

impl GlobalArgs {
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout.0
    }
}

/// `--deadline`: a duration, not zero.
fn parse_deadline(raw: &str) -> Result<HumanDuration, String> {
    let parsed: HumanDuration = raw
        .parse()
        .map_err(|e: <HumanDuration as std::str::FromStr>::Err| e.to_string())?;
    if parsed.0.is_zero() {
        return Err("must be longer than zero".into());
    }
    Ok(parsed)
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// The dead-letter stream `<PREFIX>_DEAD_LETTERS`: events a consumer gave up on
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// The domain stream `<PREFIX>_EVENTS`
    #[command(subcommand)]
    Events(EventsCommand),
    /// Secrets for a deployment (connects to nothing)
    #[command(subcommand)]
    Secrets(SecretsCommand),
    /// NATS credentials and permissions for every service (connects to nothing)
    #[command(subcommand)]
    NatsAuth(NatsAuthCommand),
}

#[derive(Debug, Clone, Subcommand)]
pub enum NatsAuthCommand {
    /// Write a new operator and account, the server configuration and one `.creds` file per
    /// identity (api, oauth-worker, metadata-worker, mailer-worker, token-client, operator,
    /// operator-readonly), with the permissions of the namespace
    Generate(NatsAuthGenerateArgs),
    /// New credentials for one identity (rotation), signed by the account in --dir
    Mint(NatsAuthMintArgs),
    /// Revoke one user's credentials; the server applies it on its next reload
    Revoke(NatsAuthRevokeArgs),
    /// Print who may do what: every subject against every identity (Markdown)
    Permissions,
}

#[derive(Debug, Clone, Args)]
pub struct NatsAuthGenerateArgs {
    /// Directory to write to (must not hold keys yet)
    #[arg(long, value_name = "DIR")]
    pub out: std::path::PathBuf,
    /// Also write a CA and a server certificate for these names or addresses, and make the
    /// server require TLS (repeatable)
    #[arg(long = "tls-host", value_name = "HOST")]
    pub tls_hosts: Vec<String>,
    /// Let the api read the domain stream (its try-it page, API_DEV_MODE; local runs only)
    #[arg(long)]
    pub api_reads_events: bool,
}

#[derive(Debug, Clone, Args)]
pub struct NatsAuthMintArgs {
    /// The directory `generate` wrote
    #[arg(long, value_name = "DIR")]
    pub dir: std::path::PathBuf,
    /// api, oauth-worker, metadata-worker, mailer-worker, token-client, operator or
    /// operator-readonly
    #[arg(long, value_name = "NAME", value_parser = parse_identity)]
    pub identity: schemas::bus_access::Identity,
    /// Where to write the credentials [default: DIR/creds/<NAME>.creds, the old file kept as
    /// <NAME>.creds.previous]
    #[arg(long, value_name = "FILE")]
    pub out: Option<std::path::PathBuf>,
    /// As `generate --api-reads-events`
    #[arg(long)]
    pub api_reads_events: bool,
}

#[derive(Debug, Clone, Args)]
pub struct NatsAuthRevokeArgs {
    /// The directory `generate` wrote
    #[arg(long, value_name = "DIR")]
    pub dir: std::path::PathBuf,
    /// The `.creds` file to revoke, or the user's public key (U...)
    #[arg(value_name = "CREDS")]
    pub creds: String,
}

fn parse_identity(raw: &str) -> Result<schemas::bus_access::Identity, String> {
    schemas::bus_access::Identity::from_name(raw).ok_or_else(|| {
        let names: Vec<_> = schemas::bus_access::Identity::ALL
            .iter()
            .map(|i| i.name())
            .collect();
        format!("unknown identity; one of {}", names.join(", "))
    })
}

#[derive(Debug, Clone, Subcommand)]
pub enum SecretsCommand {
    /// Print a `.env` with fresh values for every setting whose default is public:
    /// `gcal-ops secrets generate > .env`
    Generate,
}

#[derive(Debug, Clone, Subcommand)]
pub enum DlqCommand {
    /// List dead letters, oldest first
    List(DlqListArgs),
    /// Everything about one dead letter: headers, payload, errors
    Show(DlqShowArgs),
    /// Re-publish dead letters to their original subjects, then delete them from the DLQ
    Replay(DlqReplayArgs),
    /// Delete dead letters without replaying them
    Purge(DlqPurgeArgs),
}

#[derive(Debug, Clone, Subcommand)]
pub enum EventsCommand {
    /// Re-publish stored domain events (with new message ids) so consumers see them again
    Replay(EventsReplayArgs),
}

#[derive(Debug, Clone, Args)]
pub struct DlqListArgs {
    /// Only dead letters parked by this consumer (e.g. mailer-worker)
    #[arg(long, value_name = "CONSUMER")]
    pub consumer: Option<ConsumerName>,
    /// Only dead letters whose original subject matches this NATS filter (`*`, `>` wildcards)
    #[arg(long, value_name = "FILTER")]
    pub subject: Option<SubjectFilter>,
    /// Only dead letters parked at or after this time: RFC 3339, or a duration ago such as 2h
    #[arg(long, value_name = "TIME", value_parser = parse_since)]
    pub since: Option<DateTime<Utc>>,
    /// At most this many (the oldest matching ones)
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
}

#[derive(Debug, Clone, Args)]
pub struct DlqShowArgs {
    /// Stream sequence of the dead letter (the SEQ column of `dlq list`)
    pub sequence: u64,
}

#[derive(Debug, Clone, Args)]
#[command(group(ArgGroup::new("which").required(true).args(["sequences", "all"])))]
pub struct DlqReplayArgs {
    /// Stream sequences of the dead letters to replay
    #[arg(value_name = "SEQ")]
    pub sequences: Vec<u64>,
    /// Every dead letter (narrowed by --consumer, --subject, --since)
    #[arg(long)]
    pub all: bool,
    /// With --all: only those parked by this consumer
    #[arg(long, value_name = "CONSUMER", conflicts_with = "sequences")]
    pub consumer: Option<ConsumerName>,
    /// With --all: only those whose original subject matches this filter
    #[arg(long, value_name = "FILTER", conflicts_with = "sequences")]
    pub subject: Option<SubjectFilter>,
    /// With --all: only those parked at or after this time (RFC 3339 or a duration ago)
    #[arg(long, value_name = "TIME", value_parser = parse_since, conflicts_with = "sequences")]
    pub since: Option<DateTime<Utc>>,
    /// Say what would be replayed; publish and delete nothing
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Clone, Args)]
#[command(group(ArgGroup::new("which").required(true).args(["sequences", "all"])))]
pub struct DlqPurgeArgs {
    /// Stream sequences of the dead letters to delete
    #[arg(value_name = "SEQ")]
    pub sequences: Vec<u64>,
    /// Every dead letter present now (narrowed by --consumer)
    #[arg(long)]
    pub all: bool,
    /// With --all: only those parked by this consumer
    #[arg(long, value_name = "CONSUMER", conflicts_with = "sequences")]
    pub consumer: Option<ConsumerName>,
    /// Say what would be deleted; delete nothing
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Clone, Args)]
#[command(group(ArgGroup::new("start").required(true).args(["since", "from_seq"])))]
pub struct EventsReplayArgs {
    /// Which events: a NATS subject filter under `<prefix>.events.`, e.g.
    /// `gcal.events.connection.*.*` or `gcal.events.>`
    #[arg(long, value_name = "FILTER")]
    pub subject: SubjectFilter,
    /// Events stored at or after this time: RFC 3339, or a duration ago such as 2h
    #[arg(long, value_name = "TIME", value_parser = parse_since)]
    pub since: Option<DateTime<Utc>>,
    /// Events from this stream sequence on
    #[arg(long, value_name = "N")]
    pub from_seq: Option<u64>,
    /// Up to and including this stream sequence (default: the last one stored when the
    /// command starts; what the replay itself publishes is never replayed again)
    #[arg(long, value_name = "M")]
    pub to_seq: Option<u64>,
    /// Say what would be replayed; publish nothing
    #[arg(long)]
    pub dry_run: bool,
}

/// `--since`: an RFC 3339 time, or a duration (`90s`, `2h`, `3d`) meaning that long ago.
pub fn parse_since(raw: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(at) = DateTime::parse_from_rfc3339(raw) {
        return Ok(at.with_timezone(&Utc));
    }
    let ago = humantime::parse_duration(raw).map_err(|_| {
        format!(
            "{raw:?} is neither an RFC 3339 time (2025-06-01T12:00:00Z) nor a duration (2h, 30m)"
        )
    })?;
    chrono::Duration::from_std(ago)
        .ok()
        .and_then(|ago| Utc::now().checked_sub_signed(ago))
        .ok_or_else(|| format!("{raw:?} reaches back too far"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn since_takes_a_time_or_a_duration_ago() {
        let at = parse_since("2025-06-01T12:00:00+02:00").expect("rfc 3339");
        assert_eq!(at.to_rfc3339(), "2025-06-01T10:00:00+00:00");
        let ago = parse_since("2h").expect("duration");
        let expected = Utc::now() - chrono::Duration::hours(2);
        assert!((ago - expected).num_seconds().abs() < 5, "{ago}");
        let err = parse_since("yesterday").expect_err("neither");
        assert!(err.contains("RFC 3339"), "{err}");
    }

    #[test]
    fn replay_needs_sequences_or_all_but_not_both() {
        assert!(Cli::try_parse_from(["gcal-ops", "dlq", "replay"]).is_err());
        assert!(Cli::try_parse_from(["gcal-ops", "dlq", "replay", "3", "--all"]).is_err());
        assert!(
            Cli::try_parse_from(["gcal-ops", "dlq", "replay", "3", "--consumer", "x"]).is_err(),
            "--consumer only narrows --all"
        );
        let cli = Cli::try_parse_from(["gcal-ops", "dlq", "replay", "3", "5", "--dry-run"])
            .expect("valid");
        match cli.command {
            Command::Dlq(DlqCommand::Replay(args)) => {
                assert_eq!(args.sequences, [3, 5]);
                assert!(args.dry_run && !args.all);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn events_replay_needs_a_subject_and_a_start() {
        assert!(Cli::try_parse_from(["gcal-ops", "events", "replay", "--from-seq", "1"]).is_err());
        assert!(
            Cli::try_parse_from(["gcal-ops", "events", "replay", "--subject", "gcal.events.>"])
                .is_err()
        );
        assert!(
            Cli::try_parse_from([
                "gcal-ops",
                "events",
                "replay",
                "--subject",
                "gcal.events.>",
                "--since",
                "1h",
                "--from-seq",
                "3"
            ])
            .is_err()
        );
        assert!(
            Cli::try_parse_from([
                "gcal-ops",
                "events",
                "replay",
                "--subject",
                "gcal.events.>",
                "--from-seq",
                "3",
                "--to-seq",
                "9",
                "--json"
            ])
            .is_ok()
        );
    }

    #[test]
    fn global_flags_go_anywhere_and_are_checked() {
        let cli = Cli::try_parse_from([
            "gcal-ops",
            "dlq",
            "list",
            "--json",
            "--namespace",
            "t-1",
            "--nats-url",
            "nats://127.0.0.1:4333",
        ])
        .expect("valid");
        assert!(cli.global.json);
        assert_eq!(cli.global.namespace.expect("ns").prefix(), "t-1");
        assert!(Cli::try_parse_from(["gcal-ops", "--namespace", "a.b", "dlq", "list"]).is_err());
        assert!(
            Cli::try_parse_from(["gcal-ops", "dlq", "list", "--subject", "a.>.b"]).is_err(),
            "'>' only last"
        );
    }
}
