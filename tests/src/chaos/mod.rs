//! The chaos run: N people connect a calendar (connect → consent → callback, `sendEmail:
//! true`) on the [`crate::cluster`] shape while a scheduler SIGKILLs a random process every
//! few seconds and starts it again after a random pause; then, once everything is quiet, it
//! checks that nothing was lost, doubled or left hanging. tests/tests/chaos.rs runs it;
//! docs/failure-behaviour.md says how to run it and what a 1,000-flow run showed.
//!
//! - [`users`]: what a person does, retrying a failed step a few times;
//! - [`killer`]: the kills, the pauses and the restarts (one process down at a time);
//! - [`probes`]: `/readyz` of every service address, twice a second, timed;
//! - [`checks`]: the assertions after quiescence;
//! - [`report`]: the report file, every kill and every failed check with the request and
//!   correlation ids around it.

pub mod checks;
pub mod killer;
pub mod probes;
pub mod report;
pub mod users;

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use service_kit::config::HumanDuration;

use crate::cluster::{Cluster, ClusterOptions};
use crate::fake_google::{FakeGoogle, FakeGoogleConfig};

/// A request that takes longer than this "hung" (the connect request's own deadline is 5 s).
pub const HUNG_AFTER: Duration = Duration::from_secs(10);

/// What to run, from the environment (`CHAOS_*`, see [`Options::from_env`]).
#[derive(Debug, Clone)]
pub struct Options {
    /// Connect flows to drive (`CHAOS_FLOWS`).
    pub flows: usize,
    /// People at work at once (`CHAOS_USERS`).
    pub users: usize,
    /// Subaccounts the flows are spread over (`CHAOS_SUBACCOUNTS`).
    pub subaccounts: usize,
    /// Time between the end of one outage and the next kill (`CHAOS_KILL_EVERY`, `1s..4s`).
    pub kill_every: (Duration, Duration),
    /// How long a killed process stays down (`CHAOS_PAUSE`, `200ms..3s`).
    pub pause: (Duration, Duration),
    /// Seed of every random choice (`CHAOS_SEED`; default: from the clock, printed).
    pub seed: u64,
    /// The report file (`CHAOS_REPORT`).
    pub report: PathBuf,
    /// Replicas of each service (`CHAOS_REPLICAS`, 2).
    pub replicas: usize,
    /// Where the processes' logs and data go (`CHAOS_DIR`, `gcal-chaos-<pid>` in the temporary
    /// directory); removed after a run that passed unless `CHAOS_KEEP=1`.
    pub dir: PathBuf,
    pub keep: bool,
    /// Which members may be killed (`CHAOS_VICTIMS`): names or name prefixes, comma-separated
    /// (`nats,redis` kills only NATS nodes and Redis); empty, every member.
    pub victims: Vec<String>,
}

impl Options {
    /// Reads `CHAOS_FLOWS` (default `default_flows`), `CHAOS_USERS` (8), `CHAOS_SUBACCOUNTS`
    /// (10), `CHAOS_KILL_EVERY` (`1s..4s`), `CHAOS_PAUSE` (`200ms..3s`), `CHAOS_SEED`,
    /// `CHAOS_REPORT` (`chaos-report.md` in the temporary directory), `CHAOS_REPLICAS` (2),
    /// `CHAOS_DIR`, `CHAOS_KEEP`, `CHAOS_VICTIMS` (every member).
    pub fn from_env(default_flows: usize) -> Result<Self, String> {
        let seed = match std::env::var("CHAOS_SEED") {
            Ok(raw) => parse("CHAOS_SEED", &raw)?,
            Err(_) => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1),
        };
        let options = Self {
            flows: env_or("CHAOS_FLOWS", default_flows)?,
            users: env_or("CHAOS_USERS", 8)?,
            subaccounts: env_or("CHAOS_SUBACCOUNTS", 10)?,
            kill_every: range("CHAOS_KILL_EVERY", "1s..4s")?,
            pause: range("CHAOS_PAUSE", "200ms..3s")?,
            seed,
            report: std::env::var_os("CHAOS_REPORT")
                .map(PathBuf::from)
                .unwrap_or_else(|| std::env::temp_dir().join("chaos-report.md")),
            replicas: env_or("CHAOS_REPLICAS", 2)?,
            dir: std::env::var_os("CHAOS_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    std::env::temp_dir().join(format!("gcal-chaos-{}", std::process::id()))
                }),
            keep: env_or("CHAOS_KEEP", 0u8)? == 1,
            victims: std::env::var("CHAOS_VICTIMS")
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
                .collect(),
        };
        if options.flows == 0 || options.users == 0 || options.subaccounts == 0 {
            return Err("CHAOS_FLOWS, CHAOS_USERS and CHAOS_SUBACCOUNTS must be at least 1".into());
        }
        if options.replicas == 0 {
            return Err("CHAOS_REPLICAS must be at least 1".into());
        }
        Ok(options)
    }
}

fn parse<T: FromStr>(name: &str, raw: &str) -> Result<T, String> {
    raw.trim()
        .parse()
        .map_err(|_| format!("{name}={raw:?} is not valid"))
}

fn env_or<T: FromStr>(name: &str, default: T) -> Result<T, String> {
    match std::env::var(name) {
        Ok(raw) => parse(name, &raw),
        Err(_) => Ok(default),
    }
}

/// `a..b` of two durations (`200ms..3s`).
fn range(name: &str, default: &str) -> Result<(Duration, Duration), String> {
    let raw = std::env::var(name).unwrap_or_else(|_| default.into());
    let (low, high) = raw
        .split_once("..")
        .ok_or_else(|| format!("{name}={raw:?} is not a range such as 2s..5s"))?;
    let low: HumanDuration = parse(name, low)?;
    let high: HumanDuration = parse(name, high)?;
    let (low, high) = (low.0, high.0);
    if low > high {
        return Err(format!("{name}={raw:?}: the low end is above the high end"));
    }
    Ok((low, high))
}

/// The secret the chaos api verifies user tokens with (HS256).
pub const JWT_SECRET: &str = "chaos-run-user-token-secret-at-least-32-bytes";

/// Everything a run produced.
#[derive(Debug)]
pub struct Outcome {
    pub report: report::Report,
    /// Whether every check passed.
    pub passed: bool,
}

/// Starts the cluster (services run as `service_program service_args… <service>`), drives
/// the flows under the killer, checks, and writes the report.
pub async fn run(
    options: &Options,
    service_program: PathBuf,
    service_args: Vec<String>,
    smtp_sink: PathBuf,
) -> Result<Outcome, String> {
    service_kit::tls::install_crypto_provider();
    let started = Instant::now();
    let namespace = format!("chaos{}", std::process::id());
    // Google is the one thing not killed: the run is about our processes.
    let google_addr: std::net::SocketAddr = ([127, 0, 0, 1], 0).into();
    let oauth: std::net::SocketAddr = ([127, 0, 0, 1], crate::process::free_port()).into();
    let callback = format!("http://{oauth}/api/google/callback");
    let google = FakeGoogle::start(
        FakeGoogleConfig::new("chaos-client", "chaos-secret", callback),
        google_addr,
    )
    .await
    .map_err(|e| format!("the fake Google does not start: {e}"))?;
    let base = google.base_url().to_owned();
    let generous = "1000000/1m";
    let service_env: Vec<(String, String)> = [
        ("GOOGLE_CLIENT_ID", "chaos-client".to_owned()),
        ("GOOGLE_CLIENT_SECRET", "chaos-secret".to_owned()),
        ("GOOGLE_AUTH_URL", google.auth_url()),
        ("GOOGLE_TOKEN_URL", google.token_url()),
        ("GOOGLE_USERINFO_URL", google.userinfo_url()),
        ("GOOGLE_REVOKE_URL", google.revoke_url()),
        ("GOOGLE_CALENDAR_API_URL", google.calendar_api_base()),
        ("JWT_SECRET", JWT_SECRET.to_owned()),
        // The run measures failures, not fairness: limits out of the way.
        ("RATE_LIMIT_CONNECT_PER_SUBACCOUNT", generous.to_owned()),
        ("RATE_LIMIT_EMAILS_PER_SUBACCOUNT", generous.to_owned()),
        ("RATE_LIMIT_EMAILS_PER_RECIPIENT", generous.to_owned()),
        ("MAX_LIVE_OAUTH_STATES_PER_SUBACCOUNT", "10000".to_owned()),
        ("MAX_GOOGLE_ACCOUNTS", "1000".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let cluster_options = ClusterOptions {
        namespace,
        service_program,
        service_args,
        smtp_sink,
        replicas: options.replicas,
        replicas_of: Vec::new(),
        service_env,
        oauth: Some(oauth),
        dir: Some(options.dir.clone()),
    };
    let mut cluster = Cluster::start(&cluster_options).await?;
    eprintln!(
        "chaos: cluster up in {:.1}s ({} processes, logs in {}); fake Google at {base}",
        started.elapsed().as_secs_f64(),
        cluster.members.len(),
        cluster.dir().display()
    );
    let log = Arc::new(report::Log::default());
    let users = users::Users::new(options, &cluster, google, log.clone());
    users.seed_connectors().await?;

    let cluster_dir = cluster.dir().to_path_buf();
    let probe_targets = probes::targets(&cluster);
    let stop = tokio_util::sync::CancellationToken::new();
    let probes = tokio::spawn(probes::run(probe_targets, log.clone(), stop.clone()));
    let killer_stop = stop.child_token();
    let names: Vec<String> = cluster.members.iter().map(|m| m.name.clone()).collect();
    let killer = {
        let log = log.clone();
        let options = options.clone();
        tokio::spawn(async move {
            killer::run(&mut cluster, &options, &log, killer_stop).await;
            cluster
        })
    };
    let run_started = Instant::now();
    let flows = users.run(options).await;
    let flow_time = run_started.elapsed();
    stop.cancel();
    let mut cluster = killer
        .await
        .map_err(|e| format!("the killer failed: {e}"))?;
    let _ = probes.await;
    eprintln!(
        "chaos: {} flows in {:.1}s, {} kills; waiting for quiescence",
        flows.len(),
        flow_time.as_secs_f64(),
        log.kills().len()
    );
    let results = checks::run(&mut cluster, &users, &flows, &log).await;
    let report = report::Report::new(
        options,
        &names,
        &cluster_dir,
        flow_time,
        flows,
        log.as_ref(),
        results,
    );
    let passed = report.passed();
    report
        .write(&options.report)
        .map_err(|e| format!("cannot write {}: {e}", options.report.display()))?;
    users.shutdown().await;
    drop(cluster);
    if passed && !options.keep {
        let _ = std::fs::remove_dir_all(&options.dir);
    }
    Ok(Outcome { report, passed })
}
