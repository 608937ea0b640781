//! The scale curve: how cost grows with load on the cluster shape ([`e2e::cluster`]: three
//! NATS nodes with auth and TLS and R3 streams, Redis fsyncing every write, the MongoDB-wire
//! server with `--sync-on-commit`, the SMTP sink, and the services), as more replicas of one
//! service share the work.
//!
//! - **drain** at 1, 2 and 4 metadata-worker replicas: with every replica stopped,
//!   `BENCH_EVENTS` connection-succeeded events (default 10,000; round-robin over 1,000
//!   connectors in 1,000 tenant databases, each connector's events in time order) are
//!   preloaded into JetStream; then the replicas start together and the time until the
//!   `metadata-worker` consumer has nothing pending or unacknowledged gives events/s, from the
//!   first replica's readiness (as tests/benches/metadata_drain.rs's "from ready") and from
//!   the processes' start. Every connector must then hold its newest event. The **floor**,
//!   once per cluster: the same conditional updates (`metadata_worker::metadata::
//!   succeeded_write`) straight from the driver at one replica's concurrency (32).
//! - **connect** at 1 and 2 api replicas (one address, `SO_REUSEPORT`): 64 keep-alive
//!   clients POST `/api/connectors/{id}/handlegooglecalendar` with `sendEmail:false` for
//!   `BENCH_SECONDS` (default 10) after a 2-second warm-up; req/s, p50, p99, errors. A fresh
//!   HTTP client per row, so its connections spread over the replicas that run. The
//!   **floor**, once: tests/benches/connect.rs's in-bench floor (the same JWT verification and
//!   one NATS request/reply, here through the cluster's NATS).
//!
//! One cluster for everything, started with 4 metadata-worker and 2 api replicas (the other
//! services 1): each drain row starts the first R of the stopped metadata-worker replicas and
//! stops them again after it; the connect rows run with `api-2` stopped, then started again.
//! Stopping is a SIGKILL of an idle replica, and restarting is cheaper than a new cluster.
//!
//! CPU per event or request of each process kind comes from /proc (summed over the kind's
//! processes: three NATS nodes, the replicas). A metadata-worker row counts each replica's
//! whole life, its start-up included (it starts in the row); the others count the measured
//! part. The services log at `warn` (and the `listening` line the harness waits for), as in
//! the other benches.
//!
//! The services are this binary again (`scale --serve <service>` runs the service's
//! `main_from_env`, the code of its real binary), so they are the bench profile's release
//! build. Replicas add CPU only if the machine has idle cores: the output states the core
//! count, and on 2 cores the rows show what replicas cost, not what they could gain.
//!
//! Run: `cargo bench -p e2e --bench scale` (on 2 cores about 1.5 minutes once built; the
//! bench profile's fat-LTO build of this binary takes 4-10 more). `BENCH_SHORT=1`: 2,000
//! events for 200 connectors and 3-second connect phases, about 40 seconds. No timed assertions; it exits non-zero when a
//! connect request failed, a drain did not finish within a generous bound, an event was lost
//! (a connector not holding its newest event) or a replica did not become ready.

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use e2e::cluster::{Cluster, ClusterOptions, Role};
use e2e::jwt::{MintToken, UserClaims};
use futures::StreamExt;
use mongodb::bson::{Document, doc};
use schemas::events::ConnectionSucceeded;
use schemas::subjects::{METADATA_CONSUMER, Namespace};
use schemas::{Envelope, SubaccountId};
use support::{Summary, cpu_seconds, load, seed_connector, start_floor_on};

// Like the services' binaries (and the services here are this binary).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Runs this binary as a service replica: `--serve <service>`.
const SERVE_ARG: &str = "--serve";
const DRAIN_REPLICAS: [usize; 3] = [1, 2, 4];
const API_REPLICAS: [usize; 2] = [1, 2];
const CONNECTORS: usize = 1_000;
const SHORT_CONNECTORS: usize = 200;
const EVENTS: usize = 10_000;
const SHORT_EVENTS: usize = 2_000;
/// The floor's concurrency: one replica's (`METADATA_CONCURRENCY`'s default).
const CONCURRENCY: usize = 32;
const CLIENTS: usize = 64;
const SUBACCOUNT: &str = "68cf05f060d294db17c0685e";
const SECRET: &str = "bench-secret-bench-secret-bench-secret";
const METADATA_WORKER: &str = "metadata-worker";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == SERVE_ARG) {
        return serve(args.get(at + 1).map(String::as_str).unwrap_or_default());
    }
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this binary without it, and
    // a benchmark is no test (it starts a cluster and runs for minutes).
    if !args.iter().any(|a| a == "--bench") {
        println!("scale benchmark: run it with `cargo bench -p e2e --bench scale`");
        return ExitCode::SUCCESS;
    }
    let outcome = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(bench());
    match outcome {
        Ok(problems) if problems.is_empty() => ExitCode::SUCCESS,
        Ok(problems) => {
            println!();
            for problem in problems {
                println!("FAILED: {problem}");
            }
            ExitCode::FAILURE
        }
        Err(e) => {
            println!("FAILED: the bench could not be carried out: {e}");
            ExitCode::FAILURE
        }
    }
}

/// One service replica, as its binary runs it.
fn serve(service: &str) -> ExitCode {
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    runtime.block_on(async {
        match service {
            "api" => api::main_from_env().await,
            "oauth-worker" => oauth_worker::main_from_env().await,
            "metadata-worker" => metadata_worker::main_from_env().await,
            "mailer-worker" => mailer_worker::main_from_env().await,
            other => {
                eprintln!("scale {SERVE_ARG}: no service {other:?}");
                ExitCode::from(2)
            }
        }
    })
}

/// What the bench runs with, from the environment.
struct Settings {
    short: bool,
    connectors: usize,
    per_connector: usize,
    phase: Duration,
}

impl Settings {
    fn from_env() -> Result<Self, String> {
        let short = std::env::var_os("BENCH_SHORT").is_some_and(|v| v == "1");
        let number = |name: &str, default: u64| match std::env::var(name) {
            Ok(raw) => raw
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{name}={raw:?} is not a positive number")),
            Err(_) => Ok(default),
        };
        let events = number(
            "BENCH_EVENTS",
            if short { SHORT_EVENTS } else { EVENTS } as u64,
        )? as usize;
        let seconds = number("BENCH_SECONDS", if short { 3 } else { 10 })?;
        let connectors = events.min(if short { SHORT_CONNECTORS } else { CONNECTORS });
        Ok(Self {
            short,
            connectors,
            per_connector: events / connectors,
            phase: Duration::from_secs(seconds),
        })
    }

    fn events(&self) -> usize {
        self.connectors * self.per_connector
    }
}

async fn bench() -> Result<Vec<String>, String> {
    let settings = Settings::from_env()?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "scale curve{}: {cores} cores, load average {}",
        if settings.short { " (short)" } else { "" },
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    service_kit::tls::install_crypto_provider();
    let namespace = format!("benchscale{}", std::process::id());
    let generous = "1000000000/1s";
    let service_env = [
        ("JWT_SECRET", SECRET),
        // The `listening` line is how the harness sees the api and oauth-worker ready.
        ("RUST_LOG", "warn,service_kit::http=info"),
        // The limits stay on (every connect runs the limit script) but never refuse.
        ("RATE_LIMIT_CONNECT_PER_SUBACCOUNT", generous),
        ("RATE_LIMIT_EMAILS_PER_SUBACCOUNT", generous),
        ("RATE_LIMIT_EMAILS_PER_RECIPIENT", generous),
        ("MAX_LIVE_OAUTH_STATES_PER_SUBACCOUNT", "10000000"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .chain(support::service_env())
    .collect();
    let max_workers = DRAIN_REPLICAS.into_iter().max().unwrap_or(1);
    let max_apis = API_REPLICAS.into_iter().max().unwrap_or(1);
    let options = ClusterOptions {
        namespace: namespace.clone(),
        service_program: std::env::current_exe().map_err(|e| e.to_string())?,
        service_args: vec![SERVE_ARG.into()],
        smtp_sink: PathBuf::from(env!("CARGO_BIN_EXE_dev-smtp-sink")),
        replicas: 1,
        replicas_of: vec![(METADATA_WORKER, max_workers), ("api", max_apis)],
        service_env,
        oauth: None,
        dir: None,
    };
    let started = Instant::now();
    let mut cluster = Cluster::start(&options).await?;
    println!(
        "cluster up in {:.1}s: {} processes, logs in {}",
        started.elapsed().as_secs_f64(),
        cluster.members.len(),
        cluster.dir().display()
    );
    let mut problems = Vec::new();
    let drain = drain_part(&mut cluster, &settings, &mut problems).await?;
    let connect = connect_part(&mut cluster, &settings, &mut problems).await?;

    println!();
    println!(
        "drain: {} connection-succeeded events for {} connectors, preloaded; metadata-worker concurrency {CONCURRENCY} per replica",
        settings.events(),
        settings.connectors
    );
    drain.print();
    println!();
    println!(
        "connect: {CLIENTS} keep-alive clients, sendEmail:false, {}s per row after 2s of warm-up",
        settings.phase.as_secs()
    );
    connect.print();
    println!();
    println!(
        "machine: {cores} cores (available_parallelism). Every process of the cluster shares them{}",
        if cores <= 2 {
            ": on 2 cores adding replicas cannot add CPU, so the rows show what replicas cost \
             (coordination, more connections, more processes competing), not the capacity they \
             would add on a machine with a core per replica."
        } else {
            "."
        }
    );
    Ok(problems)
}

/// The processes of a kind that run now.
fn pids(cluster: &mut Cluster, kind: impl Fn(Role) -> bool) -> Vec<u32> {
    cluster
        .members
        .iter_mut()
        .filter(|m| kind(m.role))
        .filter_map(|m| if m.is_running() { m.pid() } else { None })
        .collect()
}

fn cpu_of(pids: &[u32]) -> f64 {
    pids.iter().map(|pid| cpu_seconds(*pid)).sum()
}

/// The CPU of a process kind during a measured part.
struct Kind {
    name: &'static str,
    pids: Vec<u32>,
    before: f64,
}

impl Kind {
    fn start(name: &'static str, cluster: &mut Cluster, kind: impl Fn(Role) -> bool) -> Self {
        let pids = pids(cluster, kind);
        let before = cpu_of(&pids);
        Self { name, pids, before }
    }

    fn used(&self) -> f64 {
        cpu_of(&self.pids) - self.before
    }
}

fn infrastructure(cluster: &mut Cluster) -> Vec<Kind> {
    vec![
        Kind::start("NATS x3", cluster, |r| r == Role::Nats),
        Kind::start("MongoDB-wire", cluster, |r| r == Role::Mongo),
        Kind::start("Redis", cluster, |r| r == Role::Redis),
    ]
}

/// One row of a table: its label, its rate, the CPU seconds of each process kind, and what
/// else the part shows.
struct Row<T> {
    label: String,
    rate: f64,
    cpu: Vec<(&'static str, f64)>,
    work: usize,
    extra: T,
}

impl<T> Row<T> {
    fn cpu_cells(&self, kinds: &[&str]) -> String {
        let mut cells: Vec<String> = kinds
            .iter()
            .map(|kind| {
                self.cpu
                    .iter()
                    .find(|(k, _)| k == kind)
                    .map_or("-".to_owned(), |(_, s)| {
                        format!("{:.0}", s * 1e6 / self.work.max(1) as f64)
                    })
            })
            .collect();
        let total: f64 = self.cpu.iter().map(|(_, s)| s).sum();
        cells.push(format!("{:.0}", total * 1e6 / self.work.max(1) as f64));
        cells
            .iter()
            .zip(kinds.iter().copied().chain(["total"]))
            .map(|(cell, kind)| format!(" {cell:>width$}", width = kind.len().max(6)))
            .collect()
    }
}

fn kinds_header(kinds: &[&str]) -> String {
    kinds
        .iter()
        .copied()
        .chain(["total"])
        .map(|kind| format!(" {kind:>width$}", width = kind.len().max(6)))
        .collect()
}

fn percent(part: f64, whole: f64) -> String {
    if whole > 0.0 {
        format!("{:.0}%", 100.0 * part / whole)
    } else {
        "-".into()
    }
}

// ---- drain ----

struct DrainExtra {
    from_start: f64,
    last_ready: Option<Duration>,
    redelivered: u64,
    per_replica: Vec<f64>,
}

struct DrainTable {
    floor: Row<()>,
    rows: Vec<Row<DrainExtra>>,
}

const DRAIN_KINDS: [&str; 4] = ["metadata-worker", "NATS x3", "MongoDB-wire", "Redis"];

impl DrainTable {
    fn print(&self) {
        println!(
            "{:<10} {:>9} {:>12} {:>8} {:>11} {:>9} {:>5} | CPU µs per event:{}",
            "replicas",
            "events/s",
            "vs 1 replica",
            "vs floor",
            "from start",
            "ready s",
            "redel",
            kinds_header(&DRAIN_KINDS)
        );
        let one = self.rows.first().map_or(0.0, |r| r.rate);
        for row in &self.rows {
            println!(
                "{:<10} {:>9.0} {:>12} {:>8} {:>11.0} {:>9} {:>5} |                  {}",
                row.label,
                row.rate,
                percent(row.rate, one),
                percent(row.rate, self.floor.rate),
                row.extra.from_start,
                row.extra
                    .last_ready
                    .map_or("-".into(), |d| format!("{:.2}", d.as_secs_f64())),
                row.extra.redelivered,
                row.cpu_cells(&DRAIN_KINDS)
            );
        }
        println!(
            "{:<10} {:>9.0} {:>12} {:>8} {:>11} {:>9} {:>5} |                  {}",
            self.floor.label,
            self.floor.rate,
            "-",
            "100%",
            "-",
            "-",
            "-",
            self.floor.cpu_cells(&DRAIN_KINDS)
        );
        println!(
            "events/s from the first replica ready until drained; \"from start\" from the processes' start; \"ready s\": the last replica ready after its start; redel: redeliveries"
        );
        println!(
            "the floor row's metadata-worker column is the bench itself, issuing the updates through the driver"
        );
        for row in &self.rows {
            println!(
                "  {} replicas: CPU s per replica {}",
                row.label,
                row.extra
                    .per_replica
                    .iter()
                    .map(|s| format!("{s:.2}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        println!("(no p99: a drain of preloaded events has no per-event latency to speak of)");
    }
}

fn subaccount(i: usize) -> SubaccountId {
    SubaccountId::parse(&format!("{:024x}", 0x5ca1_e000_u64 + i as u64)).expect("id")
}

/// `2025-10-05T12:00:00.000Z` plus `n` seconds.
fn connected_at(n: usize) -> String {
    let base = chrono::DateTime::parse_from_rfc3339("2025-10-05T12:00:00Z")
        .expect("time")
        .with_timezone(&chrono::Utc);
    (base + chrono::Duration::seconds(n as i64))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn event(i: usize, n: usize) -> Envelope<ConnectionSucceeded> {
    Envelope::new(
        subaccount(i),
        uuid::Uuid::now_v7(),
        ConnectionSucceeded {
            calendar_id: format!("{i:024x}"),
            user_email: "user@example.com".into(),
            google_email: format!("g{i}@gmail.example"),
            connected_at: connected_at(n),
        },
    )
}

fn replica_name(service: &str, replica: usize) -> String {
    format!("{service}-{replica}")
}

async fn drain_part(
    cluster: &mut Cluster,
    settings: &Settings,
    problems: &mut Vec<String>,
) -> Result<DrainTable, String> {
    let connectors = settings.connectors;
    let per = settings.per_connector;
    let total = settings.events();
    let namespace = cluster.namespace.clone();
    let db_name = move |i: usize| format!("{namespace}_{}", subaccount(i));
    let mongo = mongodb::Client::with_uri_str(&cluster.mongodb_uri)
        .await
        .map_err(|e| e.to_string())?;
    // The replicas created the consumer when the cluster started; now they stop, idle.
    for member in &mut cluster.members {
        if member.role == Role::Service(METADATA_WORKER) {
            member.kill();
        }
    }
    println!("seeding {connectors} connectors in {connectors} tenant databases ...");
    // The worker's indexes exist already, as they would in a running deployment.
    support::seed_tenant_connectors(
        (0..connectors).map(|i| (mongo.database(&db_name(i)), subaccount(i))),
        CONCURRENCY,
    )
    .await;
    // Round-robin over connectors, each connector's events in time order; row `k` uses the
    // times after row `k - 1`'s, so every event is newer than what is stored.
    let order = |round: usize| -> Vec<(usize, usize)> {
        (round * per..(round + 1) * per)
            .flat_map(|n| (0..connectors).map(move |i| (i, n)))
            .collect()
    };

    println!("floor: {total} conditional updates at concurrency {CONCURRENCY} ...");
    let kinds = infrastructure(cluster);
    let bench_before = cpu_seconds(std::process::id());
    let started = Instant::now();
    support::floor_updates(&mongo, order(0), CONCURRENCY, &db_name, event).await;
    let floor_rate = total as f64 / started.elapsed().as_secs_f64();
    // The floor's writer is the bench: its CPU goes where the worker's does.
    let mut cpu = vec![(
        METADATA_WORKER,
        cpu_seconds(std::process::id()) - bench_before,
    )];
    cpu.extend(kinds.iter().map(|k| (k.name, k.used())));
    let floor = Row {
        label: "floor".into(),
        rate: floor_rate,
        cpu,
        work: total,
        extra: (),
    };
    // Back to no metadata, as the drain of row 1 finds it.
    futures::future::join_all((0..connectors).map(|i| {
        let collection = mongo
            .database(&db_name(i))
            .collection::<Document>("connectorsubaccount");
        async move {
            collection
                .update_one(doc! {}, doc! { "$set": { "metadata": {} } })
                .await
                .expect("reset");
        }
    }))
    .await;

    let nats = driver(&cluster.nats_url).await;
    let js = jetstream::new(nats);
    let ns = Namespace::new(&cluster.namespace).map_err(|e| e.to_string())?;
    let stream = js
        .get_stream(ns.events_stream())
        .await
        .map_err(|e| format!("the events stream: {e}"))?;
    let http = reqwest::Client::new();
    let bound = Duration::from_secs(120) + Duration::from_millis(20) * total as u32;
    let mut rows = Vec::new();
    for (round, replicas) in DRAIN_REPLICAS.into_iter().enumerate() {
        let round = round + 1;
        println!("drain with {replicas} metadata-worker replicas: preloading {total} events ...");
        let last_sequence = futures::stream::iter(order(round))
            .map(|(i, n)| {
                let js = js.clone();
                let ns = ns.clone();
                async move {
                    service_kit::nats::publish_event(&js, &ns, &event(i, n))
                        .await
                        .map(|ack| ack.sequence)
                        .map_err(|e| format!("publish: {e}"))
                }
            })
            .buffer_unordered(256)
            .fold(Ok::<u64, String>(0), |last, seq| async move {
                Ok(last?.max(seq?))
            })
            .await?;
        let mut kinds = infrastructure(cluster);
        let started = Instant::now();
        let names: Vec<String> = (1..=replicas)
            .map(|r| replica_name(METADATA_WORKER, r))
            .collect();
        let mut health = Vec::new();
        for name in &names {
            let member = cluster
                .member(name)
                .ok_or_else(|| format!("no member {name}"))?;
            member
                .restart()
                .map_err(|e| format!("{name} cannot start: {e}"))?;
            health.push(
                member
                    .health_addr()
                    .ok_or("a worker without health address")?,
            );
        }
        let (ready, drained) = tokio::join!(
            readiness(&http, &health, started),
            drained(&stream, last_sequence, started, bound)
        );
        let worker_pids: Vec<u32> = names
            .iter()
            .filter_map(|name| cluster.member(name).and_then(|m| m.pid()))
            .collect();
        let per_replica: Vec<f64> = worker_pids.iter().map(|pid| cpu_seconds(*pid)).collect();
        let mut cpu: Vec<(&'static str, f64)> = vec![(METADATA_WORKER, per_replica.iter().sum())];
        cpu.extend(kinds.iter_mut().map(|k| (k.name, k.used())));
        for name in &names {
            let member = cluster.member(name).ok_or("member")?;
            if let Err(e) = member.wait_ready(&http, Duration::from_secs(1)).await {
                problems.push(format!("drain, {replicas} replicas: {e}"));
            }
        }
        let (elapsed, redelivered) = match drained {
            Ok(done) => done,
            Err(e) => {
                problems.push(format!("drain, {replicas} replicas: {e}"));
                for name in &names {
                    cluster.member(name).ok_or("member")?.kill();
                }
                continue;
            }
        };
        let first_ready = ready.iter().flatten().min().copied();
        let last_ready = if ready.iter().all(Option::is_some) {
            ready.iter().flatten().max().copied()
        } else {
            None
        };
        let newest = connected_at((round + 1) * per - 1);
        let stale = stale_connectors(&mongo, connectors, &db_name, &newest).await;
        if !stale.is_empty() {
            problems.push(format!(
                "drain, {replicas} replicas: {} of {connectors} connectors do not hold their newest event ({newest}), e.g. {}",
                stale.len(),
                stale
                    .iter()
                    .take(5)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let from_ready = elapsed.saturating_sub(first_ready.unwrap_or_default());
        rows.push(Row {
            label: replicas.to_string(),
            rate: total as f64 / from_ready.as_secs_f64(),
            cpu,
            work: total,
            extra: DrainExtra {
                from_start: total as f64 / elapsed.as_secs_f64(),
                last_ready,
                redelivered,
                per_replica,
            },
        });
        for name in &names {
            cluster.member(name).ok_or("member")?.kill();
        }
    }
    // The cluster's shape again for the connect part: one replica.
    let first = replica_name(METADATA_WORKER, 1);
    let member = cluster.member(&first).ok_or("member")?;
    member.restart().map_err(|e| e.to_string())?;
    member
        .wait_ready(&http, e2e::cluster::READY_TIMEOUT)
        .await?;
    Ok(DrainTable { floor, rows })
}

/// When each health address answers `/readyz` 200, after `started` (`None`: not within a
/// minute).
async fn readiness(
    http: &reqwest::Client,
    health: &[SocketAddr],
    started: Instant,
) -> Vec<Option<Duration>> {
    futures::future::join_all(health.iter().map(|addr| async move {
        let deadline = started + e2e::cluster::READY_TIMEOUT;
        while Instant::now() < deadline {
            let ready = http
                .get(format!("http://{addr}/readyz"))
                .timeout(Duration::from_secs(1))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return Some(started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        None
    }))
    .await
}

/// Waits until the metadata consumer has delivered up to `last_sequence` and has nothing
/// pending or unacknowledged; the time since `started` and the redeliveries so far.
async fn drained(
    stream: &jetstream::stream::Stream,
    last_sequence: u64,
    started: Instant,
    bound: Duration,
) -> Result<(Duration, u64), String> {
    let mut last = String::new();
    while started.elapsed() < bound {
        match stream.consumer_info(METADATA_CONSUMER).await {
            Ok(info) => {
                if info.num_pending == 0
                    && info.num_ack_pending == 0
                    && info.delivered.stream_sequence >= last_sequence
                {
                    return Ok((started.elapsed(), info.num_redelivered as u64));
                }
                last = format!(
                    "{} pending, {} unacknowledged, delivered up to {} of {last_sequence}",
                    info.num_pending, info.num_ack_pending, info.delivered.stream_sequence
                );
            }
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(format!("not drained within {bound:?}: {last}"))
}

/// The connectors whose metadata does not show `newest` as their connection time.
async fn stale_connectors(
    mongo: &mongodb::Client,
    connectors: usize,
    db_name: &impl Fn(usize) -> String,
    newest: &str,
) -> Vec<String> {
    let found = futures::stream::iter(0..connectors)
        .map(|i| {
            let collection = mongo
                .database(&db_name(i))
                .collection::<Document>("connectorsubaccount");
            async move {
                let stored = collection.find_one(doc! {}).await;
                let at = match &stored {
                    Ok(Some(document)) => document
                        .get_document("metadata")
                        .ok()
                        .and_then(|m| m.get_str("connectedAt").ok())
                        .unwrap_or("none")
                        .to_owned(),
                    Ok(None) => "no connector".to_owned(),
                    Err(e) => format!("unreadable: {e}"),
                };
                (i, at)
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
    let mut stale: Vec<(usize, String)> =
        found.into_iter().filter(|(_, at)| at != newest).collect();
    stale.sort();
    stale
        .into_iter()
        .map(|(i, at)| format!("{} ({at})", subaccount(i)))
        .collect()
}

/// A client of the cluster's NATS as the suite's `driver` identity (every subject), over TLS.
async fn driver(nats_url: &str) -> async_nats::Client {
    let auth = e2e::nats_auth::auth();
    let creds = auth.mint_driver(&e2e::process::scratch_dir("scale-driver"));
    let seed = nats_url.split(',').next().unwrap_or(nats_url);
    support::connect_with(seed, &creds, &auth.ca).await
}

// ---- connect ----

struct ConnectExtra {
    p50: Duration,
    p99: Duration,
    errors: usize,
    /// CPU seconds of each api replica.
    api_replicas: Vec<f64>,
}

struct ConnectTable {
    floor: Row<ConnectExtra>,
    rows: Vec<Row<ConnectExtra>>,
}

const CONNECT_KINDS: [&str; 6] = [
    "bench",
    "api",
    "oauth-worker",
    "NATS x3",
    "MongoDB-wire",
    "Redis",
];

impl ConnectTable {
    fn print(&self) {
        println!(
            "{:<10} {:>9} {:>12} {:>8} {:>8} {:>8} {:>7} | CPU µs per request:{}",
            "replicas",
            "req/s",
            "vs 1 replica",
            "vs floor",
            "p50 ms",
            "p99 ms",
            "errors",
            kinds_header(&CONNECT_KINDS)
        );
        let one = self.rows.first().map_or(0.0, |r| r.rate);
        for (row, vs_one) in self
            .rows
            .iter()
            .map(|r| (r, percent(r.rate, one)))
            .chain([(&self.floor, "-".to_owned())])
        {
            println!(
                "{:<10} {:>9.0} {:>12} {:>8} {:>8.2} {:>8.2} {:>7} |                    {}",
                row.label,
                row.rate,
                vs_one,
                percent(row.rate, self.floor.rate),
                row.extra.p50.as_secs_f64() * 1000.0,
                row.extra.p99.as_secs_f64() * 1000.0,
                row.extra.errors,
                row.cpu_cells(&CONNECT_KINDS)
            );
        }
        println!(
            "bench: the {CLIENTS} clients (and, in the floor row, the floor's server and echo); floor: JWT verification + one NATS request/reply in the bench's process"
        );
        for row in &self.rows {
            println!(
                "  {} replicas: CPU s per api replica {}",
                row.label,
                row.extra
                    .api_replicas
                    .iter()
                    .map(|s| format!("{s:.2}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
}

fn connect_row(
    label: String,
    summary: &Summary,
    kinds: &[Kind],
    used: &[f64],
) -> Row<ConnectExtra> {
    // `used` is per process, in the order of the kinds' pids.
    let mut cpu = Vec::new();
    let mut api_replicas = Vec::new();
    let mut at = 0;
    for kind in kinds {
        let n = kind.pids.len();
        let of_kind = &used[at..at + n];
        cpu.push((kind.name, of_kind.iter().sum()));
        if kind.name == "api" {
            api_replicas = of_kind.to_vec();
        }
        at += n;
    }
    Row {
        label,
        rate: summary.rate(),
        cpu,
        work: summary.latencies.len(),
        extra: ConnectExtra {
            p50: summary.percentile(0.50),
            p99: summary.percentile(0.99),
            errors: summary.errors,
            api_replicas,
        },
    }
}

async fn connect_part(
    cluster: &mut Cluster,
    settings: &Settings,
    problems: &mut Vec<String>,
) -> Result<ConnectTable, String> {
    seed_connector(
        &cluster.mongodb_uri,
        &format!("{}_{SUBACCOUNT}", cluster.namespace),
        SUBACCOUNT,
    )
    .await;
    let token = UserClaims::for_subaccount(SUBACCOUNT, Duration::from_secs(3600))
        .sign_hs256(SECRET.as_bytes());
    let body = r#"{"userEmail":"bench@example.com","sendEmail":false}"#;
    let stack_url = format!(
        "http://{}/api/connectors/{SUBACCOUNT}/handlegooglecalendar",
        cluster.api
    );
    let kinds_now = |cluster: &mut Cluster| {
        let mut kinds = vec![Kind {
            name: "bench",
            pids: vec![std::process::id()],
            before: 0.0,
        }];
        kinds.push(Kind::start("api", cluster, |r| r == Role::Service("api")));
        kinds.push(Kind::start("oauth-worker", cluster, |r| {
            r == Role::Service("oauth-worker")
        }));
        kinds.extend(infrastructure(cluster));
        kinds
    };
    let client = || {
        reqwest::Client::builder()
            .pool_max_idle_per_host(CLIENTS)
            .build()
            .expect("client")
    };
    let phase = settings.phase;

    println!("connect floor (JWT + NATS echo in the bench) ...");
    let floor_port =
        start_floor_on(driver(&cluster.nats_url).await, &cluster.namespace, SECRET).await;
    let floor_url = format!("http://127.0.0.1:{floor_port}/floor/{SUBACCOUNT}");
    let kinds = kinds_now(cluster);
    let all: Vec<u32> = kinds.iter().flat_map(|k| k.pids.clone()).collect();
    let (summary, used) = load(&client(), &floor_url, &token, body, CLIENTS, phase, &all).await;
    if summary.errors > 0 {
        problems.push(format!("connect floor: {} errors", summary.errors));
    }
    let floor = connect_row("floor".into(), &summary, &kinds, &used);

    let mut rows = Vec::new();
    for replicas in API_REPLICAS {
        // The first `replicas` run, the others are stopped.
        for replica in 1..=API_REPLICAS.into_iter().max().unwrap_or(1) {
            let member = cluster
                .member(&replica_name("api", replica))
                .ok_or("no api member")?;
            if replica > replicas {
                member.kill();
            } else if !member.is_running() {
                member.restart().map_err(|e| e.to_string())?;
                member
                    .wait_ready(&client(), e2e::cluster::READY_TIMEOUT)
                    .await?;
            }
        }
        println!("connect with {replicas} api replicas ...");
        let kinds = kinds_now(cluster);
        let all: Vec<u32> = kinds.iter().flat_map(|k| k.pids.clone()).collect();
        let (summary, used) = load(&client(), &stack_url, &token, body, CLIENTS, phase, &all).await;
        if summary.errors > 0 {
            problems.push(format!(
                "connect, {replicas} api replicas: {} of {} requests failed",
                summary.errors,
                summary.errors + summary.latencies.len()
            ));
        }
        rows.push(connect_row(replicas.to_string(), &summary, &kinds, &used));
    }
    Ok(ConnectTable { floor, rows })
}
