//! What the benchmarks share: release builds of the services, starting them, waiting for
//! readiness, reading CPU time and peak RSS of a process from /proc, the connect load (64
//! keep-alive clients) and its floor (JWT + NATS echo), and the connector it needs.
#![allow(dead_code)] // each benchmark uses its own part

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use futures::StreamExt;
use service_kit::auth::{JwtConfig, JwtVerifier};

/// Builds the services as release binaries in a target directory of their own: `cargo bench`
/// resolves features with the e2e crate's dev-dependencies, a plain build without them, and
/// sharing one directory would rebuild half the dependency tree on every run.
/// `BENCH_SERVICES_DIR` names a directory of binaries built otherwise (another profile, another
/// commit) to run instead, without building.
pub fn build_release_binaries() -> PathBuf {
    if let Some(dir) = std::env::var_os("BENCH_SERVICES_DIR") {
        return PathBuf::from(dir);
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join("bench-services");
    let status = Command::new(cargo)
        .args(["build", "--release", "--bins"])
        .args([
            "-p",
            "api",
            "-p",
            "oauth-worker",
            "-p",
            "metadata-worker",
            "-p",
            "mailer-worker",
            "-p",
            "e2e",
        ])
        .arg("--target-dir")
        .arg(&target)
        .status()
        .expect("cargo runs");
    assert!(status.success(), "release build failed");
    target.join("release")
}

pub fn spawn(
    name: &str,
    bins: &std::path::Path,
    common: &[(String, String)],
    extra: &[(impl AsRef<str>, String)],
) -> Child {
    let mut command = Command::new(bins.join(name));
    // A service connects as its own NATS identity, over TLS, as in production.
    let namespace = common
        .iter()
        .find(|(k, _)| k == "NATS_NAMESPACE")
        .map(|(_, v)| v.as_str());
    let mut identity = match (namespace, schemas::bus_access::Identity::from_name(name)) {
        (Some(ns), Some(_)) => e2e::nats_auth::auth().binary_settings(name, ns).to_vec(),
        _ => Vec::new(),
    };
    if !nats_tls() {
        identity.retain(|(k, _)| *k != "NATS_TLS_CA_FILE");
    }
    command
        .env_clear()
        .envs(common.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .envs(identity.iter().map(|(k, v)| (*k, v.as_str())))
        .envs(STREAM_BUDGETS)
        .envs(extra.iter().map(|(k, v)| (k.as_ref(), v.as_str())))
        .envs(service_env())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {name}: {e}"))
}

/// The stream budgets of every service a benchmark starts (a bench's `extra` may override
/// them). The defaults (10 GiB of events, 1 GiB of dead letters) are reserved on the NATS server
/// for each bench's namespace, and a machine with less free disk refuses the streams: a
/// clean-clone CI run once failed that way. A bench stores at most a few tens of MiB.
pub const STREAM_BUDGETS: [(&str, &str); 2] = [
    ("EVENTS_MAX_BYTES", "1GiB"),
    ("DEAD_LETTER_MAX_BYTES", "64MiB"),
];

/// `BENCH_SERVICE_ENV="NAME=value NAME=value"`: settings added to every service a benchmark
/// starts (and to the memory benchmark's floors), to compare runs: e.g.
/// `MIMALLOC_ALLOW_THP=1`, `TOKIO_WORKER_THREADS=1`,
/// `OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318`.
pub fn service_env() -> Vec<(String, String)> {
    std::env::var("BENCH_SERVICE_ENV")
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// A NATS client of the benchmark itself (the suite's `driver` user, over TLS): what it
/// preloads and measures floors with. Also the settings a floor process connects with.
pub async fn driver_nats(url: &str) -> async_nats::Client {
    let [creds, ca] = driver_settings();
    connect_with(url, &creds.1, &ca.1).await
}

/// Whether NATS runs with TLS (the default); `BENCH_NATS_TLS=off` measures without it, on a
/// NATS server of the benchmark's own (auth stays on; Redis and MongoDB keep TLS).
pub fn nats_tls() -> bool {
    !matches!(std::env::var("BENCH_NATS_TLS").as_deref(), Ok("off"))
}

/// `FLOOR_NATS_CREDS` and `FLOOR_NATS_CA`: the driver's credentials and the CA (empty
/// without TLS).
pub fn driver_settings() -> [(&'static str, String); 2] {
    let auth = e2e::nats_auth::auth();
    let creds = auth.mint_driver(&auth.dir.join("bench"));
    let ca = if nats_tls() {
        auth.ca.clone()
    } else {
        String::new()
    };
    [("FLOOR_NATS_CREDS", creds), ("FLOOR_NATS_CA", ca)]
}

/// Connects with `creds`, over TLS trusting `ca` unless it is empty.
pub async fn connect_with(url: &str, creds: &str, ca: &str) -> async_nats::Client {
    connect_with_inbox(url, creds, ca, None).await
}

/// As [`connect_with`], with replies to `inbox` (an identity's private inbox prefix) when set.
pub async fn connect_with_inbox(
    url: &str,
    creds: &str,
    ca: &str,
    inbox: Option<String>,
) -> async_nats::Client {
    service_kit::tls::install_crypto_provider();
    let mut options = async_nats::ConnectOptions::with_credentials_file(creds)
        .await
        .expect("creds");
    if let Some(inbox) = inbox {
        options = options.custom_inbox_prefix(inbox);
    }
    if !ca.is_empty() {
        options = options.add_root_certificates(ca.into()).require_tls(true);
    }
    options.connect(url).await.expect("nats")
}

/// Credentials of `identity` in namespace `ns` (a file under the run's auth directory), with
/// exactly the permissions production gives it.
pub fn identity_creds(identity: schemas::bus_access::Identity, ns: &str) -> String {
    let auth = e2e::nats_auth::auth();
    let ns = schemas::subjects::Namespace::new(ns).expect("namespace");
    let dir = auth.dir.join("bench-identities").join(ns.prefix());
    auth.mint(identity, &ns, schemas::bus_access::Options::default(), &dir)
}

/// A client connected as `identity` of namespace `ns`, with its credentials and its private
/// reply inbox, as a platform service of that identity connects (over TLS unless
/// `BENCH_NATS_TLS=off`).
pub async fn connect_as(
    url: &str,
    identity: schemas::bus_access::Identity,
    ns: &str,
) -> async_nats::Client {
    let creds = identity_creds(identity, ns);
    let [_, ca] = driver_settings();
    let namespace = schemas::subjects::Namespace::new(ns).expect("namespace");
    let inbox =
        schemas::bus_access::inbox_prefix(&namespace, schemas::bus_access::client_name(identity));
    connect_with_inbox(url, &creds, &ca.1, Some(inbox)).await
}

/// A Redis client over TLS trusting `ca_file` (the run's CA: `e2e::nats_auth::auth().ca`,
/// passed on to floor processes) when the URL says `rediss://`.
pub fn redis_client(url: &str, ca_file: &str) -> redis::Client {
    if url.starts_with("rediss://") {
        let ca = std::fs::read(ca_file).expect("CA file");
        redis::Client::build_with_tls(
            url,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(ca),
            },
        )
        .expect("redis URL")
    } else {
        redis::Client::open(url).expect("redis URL")
    }
}

/// A service's `/metrics` (Prometheus text), or empty if it does not answer.
pub async fn scrape_metrics(http: &reqwest::Client, port: u16) -> String {
    match http
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
    {
        Ok(response) => response.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// The sum of the samples of `name` whose labels include `label` (as written in Prometheus
/// text, e.g. `source="cache"`; empty for any), 0 when there are none.
pub fn metric(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let labels = match series.strip_prefix(name)? {
                "" => "",
                rest => rest.strip_prefix('{')?.strip_suffix('}')?,
            };
            labels
                .split(',')
                .any(|l| label.is_empty() || l == label)
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

/// Latencies of one phase (sorted), its failures, and how long it ran.
pub struct Summary {
    pub latencies: Vec<Duration>,
    pub errors: usize,
    pub elapsed: Duration,
}

impl Summary {
    /// Waits for load tasks that each answer `(latencies, errors)`; `elapsed` runs from the
    /// first poll of this future until the last task ends.
    pub async fn gather(tasks: Vec<tokio::task::JoinHandle<(Vec<Duration>, usize)>>) -> Summary {
        let started = Instant::now();
        let mut latencies = Vec::new();
        let mut errors = 0;
        for task in tasks {
            let (l, e) = task.await.expect("load task");
            latencies.extend(l);
            errors += e;
        }
        latencies.sort_unstable();
        Summary {
            latencies,
            errors,
            elapsed: started.elapsed(),
        }
    }

    pub fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    pub fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let index = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[index]
    }

    pub fn merge(parts: &[Summary]) -> Summary {
        let mut latencies: Vec<Duration> = parts
            .iter()
            .flat_map(|s| s.latencies.iter().copied())
            .collect();
        latencies.sort_unstable();
        Summary {
            latencies,
            errors: parts.iter().map(|s| s.errors).sum(),
            elapsed: parts.iter().map(|s| s.elapsed).sum(),
        }
    }
}

/// CPU seconds each of `pids` uses while `work` runs.
pub async fn cpu_during<T>(
    pids: &[u32],
    work: impl std::future::Future<Output = T>,
) -> (T, Vec<f64>) {
    let before: Vec<f64> = pids.iter().map(|pid| cpu_seconds(*pid)).collect();
    let out = work.await;
    let used = pids
        .iter()
        .zip(&before)
        .map(|(pid, b)| cpu_seconds(*pid) - b)
        .collect();
    (out, used)
}

/// Prints CPU per request (µs) of every accounted process, one column per phase: `phases`
/// holds each phase's label, the CPU seconds of each process (in `processes`' order) and the
/// requests it answered.
pub fn print_cpu_per_request(processes: &[(&str, u32)], phases: &[(&str, Vec<f64>, usize)]) {
    print!("{:<28}", "");
    for (label, _, _) in phases {
        print!(" {label:>22}");
    }
    println!();
    for (i, (name, _)) in processes.iter().enumerate() {
        print!("{name:<28}");
        for (_, used, requests) in phases {
            print!(" {:>22.1}", used[i] * 1e6 / (*requests).max(1) as f64);
        }
        println!();
    }
    print!("{:<28}", "total");
    for (_, used, requests) in phases {
        print!(
            " {:>22.1}",
            used.iter().sum::<f64>() * 1e6 / (*requests).max(1) as f64
        );
    }
    println!();
}

pub async fn wait_ready(http: &reqwest::Client, name: &str, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(r) = http
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await
            && r.status() == StatusCode::OK
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{name} not ready on port {port}");
}

/// Peak resident set size of a process, from /proc (KiB).
pub fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        })
        .and_then(|kib| kib.parse().ok())
        .unwrap_or(0)
}

/// A process's memory as /proc shows it (KiB): VmRSS and its anonymous and file-backed
/// parts, the peak (VmHWM), transparent huge pages and Pss (smaps_rollup), and its threads.
#[derive(Debug, Default, Clone, Copy)]
pub struct Memory {
    pub rss: u64,
    pub anon: u64,
    pub file: u64,
    pub hwm: u64,
    pub anon_huge: u64,
    pub pss: u64,
    pub threads: u64,
}

impl Memory {
    pub fn read(pid: u32) -> Self {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let rollup =
            std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
        Self {
            rss: field(&status, "VmRSS:"),
            anon: field(&status, "RssAnon:"),
            file: field(&status, "RssFile:"),
            hwm: field(&status, "VmHWM:"),
            threads: field(&status, "Threads:"),
            anon_huge: field(&rollup, "AnonHugePages:"),
            pss: field(&rollup, "Pss:"),
        }
    }
}

/// The number after `name` on its line of a /proc file.
fn field(text: &str, name: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// CPU time (user + system) a process has used so far, in seconds, from /proc/PID/stat.
pub fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / clock_ticks_per_second()
}

fn clock_ticks_per_second() -> f64 {
    #[allow(unsafe_code)]
    // SAFETY: sysconf has no memory-safety preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// `clients` tasks POST `body` to `url` in a loop: 2 s of warm-up (not counted), then `phase`
/// measured, with the CPU seconds each of `pids` used during the measured part. A request
/// counts as an error unless it is answered 200.
pub async fn load(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    body: &'static str,
    clients: usize,
    phase: Duration,
    pids: &[u32],
) -> (Summary, Vec<f64>) {
    let run = |duration: Duration| {
        let tasks: Vec<_> = (0..clients)
            .map(|_| {
                let http = http.clone();
                let url = url.to_owned();
                let auth = format!("Bearer {token}");
                tokio::spawn(async move {
                    let mut latencies = Vec::new();
                    let mut errors = 0;
                    let deadline = Instant::now() + duration;
                    while Instant::now() < deadline {
                        let started = Instant::now();
                        let ok = http
                            .post(&url)
                            .header("authorization", &auth)
                            .header("content-type", "application/json")
                            .body(body)
                            .send()
                            .await
                            .map(|r| r.status() == StatusCode::OK)
                            .unwrap_or(false);
                        if ok {
                            latencies.push(started.elapsed());
                        } else {
                            errors += 1;
                        }
                    }
                    (latencies, errors)
                })
            })
            .collect();
        Summary::gather(tasks)
    };
    run(Duration::from_secs(2)).await;
    cpu_during(pids, run(phase)).await
}

#[derive(Clone)]
struct Floor {
    verifier: Arc<JwtVerifier>,
    nats: async_nats::Client,
    subject: String,
}

/// The connect floor and its NATS echo responder, on this process's runtime (the floor as
/// the issue words it: one process besides NATS, sharing the load generator's runtime):
/// `POST /floor/{subaccount}` verifies a JWT signed with `secret` and does one NATS request.
/// Returns the server's port.
pub async fn start_floor(nats_url: &str, namespace: &str, secret: &str) -> u16 {
    start_floor_on(driver_nats(nats_url).await, namespace, secret).await
}

/// [`start_floor`] on a NATS connection of the caller's.
pub async fn start_floor_on(nats: async_nats::Client, namespace: &str, secret: &str) -> u16 {
    let subject = format!("{namespace}.floor.echo");
    serve_echo(nats.clone(), subject.clone()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let app = floor_router(secret, nats, subject);
    tokio::spawn(async move { axum::serve(listener, app).await });
    port
}

/// Answers every request on `subject` with its own payload; subscribed when this returns.
pub async fn serve_echo(nats: async_nats::Client, subject: String) {
    let mut echo = nats
        .queue_subscribe(subject, "echo".into())
        .await
        .expect("subscribe");
    tokio::spawn(async move {
        while let Some(message) = echo.next().await {
            if let Some(reply) = message.reply {
                let _ = nats.publish(reply, message.payload).await;
            }
        }
    });
}

/// `POST /floor/{subaccount}`: the same JWT verification as the api (`JWT_SECRET` =
/// `secret`), then one NATS request to `subject`.
pub fn floor_router(secret: &str, nats: async_nats::Client, subject: String) -> axum::Router {
    let mut env = service_kit::Env::from_pairs([("JWT_SECRET", secret)]);
    let jwt = JwtConfig::from_env(&mut env);
    env.finish().expect("floor config");
    let state = Floor {
        verifier: Arc::new(JwtVerifier::new(&jwt).expect("verifier")),
        nats,
        subject,
    };
    axum::Router::new()
        .route("/floor/{subaccount}", post(floor_handler))
        .with_state(state)
}

async fn floor_handler(
    State(floor): State<Floor>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if floor.verifier.verify(token).await.is_err() {
        return StatusCode::UNAUTHORIZED;
    }
    match floor.nats.request(floor.subject.clone(), body).await {
        Ok(_) => StatusCode::OK,
        Err(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// The `google-calendar` connector of `subaccount` the connect endpoint requires, in
/// `database`.
pub async fn seed_connector(uri: &str, database: &str, subaccount: &str) {
    let client = mongodb::Client::with_uri_str(uri).await.expect("mongo");
    let now = mongodb::bson::DateTime::now();
    client
        .database(database)
        .collection::<mongodb::bson::Document>("connectorsubaccount")
        .insert_one(mongodb::bson::doc! {
            "subaccountId": subaccount, "connectorId": "google-calendar", "connectorType": "calendar",
            "config": {}, "metadata": {}, "isActive": true, "createdAt": now, "updatedAt": now,
        })
        .await
        .expect("seed connector");
}

/// One google-calendar connector in each of `tenants` (database, subaccount), `concurrency` at a
/// time, with the services' indexes ensured first, as in a running deployment (the drain and
/// scale benches' thousands of tenant databases).
pub async fn seed_tenant_connectors(
    tenants: impl IntoIterator<Item = (mongodb::Database, schemas::SubaccountId)>,
    concurrency: usize,
) {
    futures::stream::iter(tenants)
        .for_each_concurrent(concurrency, |(db, subaccount)| async move {
            service_kit::mongo::ensure_indexes(&db)
                .await
                .expect("indexes");
            let now = mongodb::bson::DateTime::now();
            db.collection::<mongodb::bson::Document>("connectorsubaccount")
                .insert_one(mongodb::bson::doc! {
                    "subaccountId": subaccount.as_str(), "connectorId": "google-calendar",
                    "connectorType": "calendar", "config": {}, "metadata": {}, "isActive": true,
                    "createdAt": now, "updatedAt": now,
                })
                .await
                .expect("seed");
        })
        .await;
}

/// The metadata drain's floor: for each `(connector, n)` the worker's own conditional update
/// (`metadata_worker::metadata::succeeded_write`) of `event(connector, n)`, straight from the
/// driver into `db_name(connector)`, `concurrency` at a time.
pub async fn floor_updates(
    mongo: &mongodb::Client,
    items: impl IntoIterator<Item = (usize, usize)>,
    concurrency: usize,
    db_name: &impl Fn(usize) -> String,
    event: impl Fn(usize, usize) -> schemas::Envelope<schemas::events::ConnectionSucceeded>,
) {
    futures::stream::iter(items)
        .for_each_concurrent(concurrency, |(i, n)| {
            let collection = mongo
                .database(&db_name(i))
                .collection::<mongodb::bson::Document>("connectorsubaccount");
            let e = event(i, n);
            async move {
                let write = metadata_worker::metadata::succeeded_write(&e);
                collection
                    .update_one(write.filter, write.pipeline)
                    .await
                    .expect("floor update");
            }
        })
        .await;
}
