//! Benchmark of `POST /api/connectors/{id}/handlegooglecalendar` against its floor, measured
//! in the same run so the ratio means something on a noisy machine.
//!
//! - **stack**: the real api, oauth-worker, mailer-worker and metadata-worker as release
//!   processes on real NATS, Redis and the MongoDB-wire server (started by the e2e harness),
//!   plus the dev SMTP sink. Each request is JWT-verified, validated, checked against the
//!   tenant's connector, sent to the oauth-worker (state + PKCE into Redis, and with
//!   `sendEmail` the auth-link-issued event into JetStream, acknowledged) and answered.
//! - **floor**: an axum handler that verifies the same JWT with the same verifier and does one
//!   NATS request/reply to an echo responder: the least any design with this shape must do.
//!   Measured twice: as the issue words it, inside the load generator's process (server,
//!   echo and clients share one runtime and one NATS connection, so the request and its reply
//!   travel over the same socket), and in the stack's process shape — server and echo each
//!   in a process of their own with their own NATS connection, as the api and the
//!   oauth-worker are (this binary re-run with `--floor-server` / `--floor-echo`).
//!
//! 64 concurrent keep-alive clients; each phase runs `BENCH_SECONDS` (default 10) after a
//! 2-second warm-up; floor and stack alternate so drift hits both. Prints req/s, p50/p99, the
//! ratio to the floor, and each service's peak RSS (VmHWM) and its memory at the end.
//!
//! Run: `cargo bench -p e2e --bench connect` (builds the release binaries first).
//!
//! CI: `BENCH_SHORT=1` runs 3-second phases and exits non-zero when a request failed, when the
//! ratio falls below `GOAL` less `NOISE`, when the p99 exceeds `GOAL_P99_MS`, or when a
//! service's peak RSS reaches `PEAK_RSS_MIB`. The goal's own verdict is printed too.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use e2e::jwt::{MintToken, UserClaims};

const SUBACCOUNT: &str = "68cf05f060d294db17c0685e";
const SECRET: &str = "bench-secret-bench-secret-bench-secret";
const CLIENTS: usize = 64;
/// The issue's goal for the connect endpoint (`sendEmail: false`): this share of the in-bench
/// floor's req/s, and this p99.
const GOAL: f64 = 0.60;
const GOAL_P99_MS: f64 = 20.0;
/// How far below the goal the short mode (`BENCH_SHORT=1`, CI) lets the ratio fall: the
/// ratio's spread between runs of one build on the 2-core machine is 5 points (56.0-61.0 %
/// over nine full and short runs, 2026-12-03); the gate allows twice that, as CI runs the
/// benches right after the test suite, on a machine of its own.
const NOISE: f64 = 0.10;
const PEAK_RSS_MIB: f64 = 64.0;
/// Runs this binary as the floor's HTTP server process (`FLOOR_HTTP_ADDR`, `FLOOR_NATS_URL`,
/// `FLOOR_SUBJECT`).
const FLOOR_SERVER_ARG: &str = "--floor-server";
/// Runs this binary as the floor's echo responder process (`FLOOR_NATS_URL`, `FLOOR_SUBJECT`).
const FLOOR_ECHO_ARG: &str = "--floor-echo";

// Like the services, so the floor processes cost what a service built the same way would.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod support;

use support::{
    Summary, build_release_binaries, floor_router, load, seed_connector, serve_echo, spawn,
    start_floor, wait_ready,
};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("runtime")
    };
    // The floor's own processes: this binary started again by `bench`.
    if args.iter().any(|a| a == FLOOR_SERVER_ARG) {
        runtime().block_on(floor_server_process());
        return;
    }
    if args.iter().any(|a| a == FLOOR_ECHO_ARG) {
        runtime().block_on(floor_echo_process());
        return;
    }
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this binary without it, and
    // a benchmark is no test (it builds release binaries and runs for minutes).
    if !args.iter().any(|a| a == "--bench") {
        println!("connect benchmark: run it with `cargo bench -p e2e --bench connect`");
        return;
    }
    runtime().block_on(bench());
}

async fn bench() {
    let short = std::env::var_os("BENCH_SHORT").is_some_and(|v| v == "1");
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if short { 3 } else { 10 });
    let phase = Duration::from_secs(seconds);
    let bins = build_release_binaries();
    let infra = e2e::shared::shared();
    // NATS with TLS (the shared server), or without on one of its own: BENCH_NATS_TLS=off.
    let plaintext_nats = (!support::nats_tls()).then(e2e::servers::NatsServer::start_plaintext);
    let nats = plaintext_nats.as_ref().unwrap_or(&infra.nats);
    println!(
        "NATS: auth on, TLS {}",
        if plaintext_nats.is_some() {
            "off"
        } else {
            "on"
        }
    );
    let namespace = format!("bench{}", std::process::id());
    let common = vec![
        ("NATS_URL".to_owned(), nats.url()),
        ("NATS_NAMESPACE".to_owned(), namespace.clone()),
        ("MONGODB_URI".to_owned(), infra.mongo.uri()),
        (
            "MONGODB_DATABASE_TEMPLATE".to_owned(),
            format!("{namespace}_{{subaccountId}}"),
        ),
        ("REDIS_URL".to_owned(), infra.redis.url()),
        ("REDIS_KEY_PREFIX".to_owned(), namespace.clone()),
        ("JWT_SECRET".to_owned(), SECRET.to_owned()),
        ("RUST_LOG".to_owned(), "warn".to_owned()),
        // The limits stay on (every connect runs the limit script) but never refuse: the
        // bench measures their cost, one subaccount and one recipient at ~10k requests/s.
        (
            "RATE_LIMIT_CONNECT_PER_SUBACCOUNT".to_owned(),
            "1000000000/1s".to_owned(),
        ),
        (
            "RATE_LIMIT_EMAILS_PER_SUBACCOUNT".to_owned(),
            "1000000000/1s".to_owned(),
        ),
        (
            "RATE_LIMIT_EMAILS_PER_RECIPIENT".to_owned(),
            "1000000000/1s".to_owned(),
        ),
        (
            "MAX_LIVE_OAUTH_STATES_PER_SUBACCOUNT".to_owned(),
            "10000000".to_owned(),
        ),
    ];
    seed_connector(
        &infra.mongo.uri(),
        &format!("{namespace}_{SUBACCOUNT}"),
        SUBACCOUNT,
    )
    .await;

    let smtp_port = e2e::process::free_port();
    let sink_http = e2e::process::free_port();
    let mut processes = vec![spawn(
        "dev-smtp-sink",
        &bins,
        &[],
        &[
            ("DEV_SMTP_SINK_SMTP_ADDR", format!("127.0.0.1:{smtp_port}")),
            ("DEV_SMTP_SINK_HTTP_ADDR", format!("127.0.0.1:{sink_http}")),
        ],
    )];
    let api_port = e2e::process::free_port();
    let services: [(&str, &str, u16); 4] = [
        ("api", "API_HTTP_ADDR", api_port),
        (
            "oauth-worker",
            "OAUTH_WORKER_HTTP_ADDR",
            e2e::process::free_port(),
        ),
        (
            "metadata-worker",
            "METADATA_WORKER_HEALTH_ADDR",
            e2e::process::free_port(),
        ),
        (
            "mailer-worker",
            "MAILER_WORKER_HEALTH_ADDR",
            e2e::process::free_port(),
        ),
    ];
    for (name, setting, port) in services {
        let extra = [
            (setting.to_owned(), format!("127.0.0.1:{port}")),
            (
                "SMTP_URL".to_owned(),
                format!("smtp://127.0.0.1:{smtp_port}"),
            ),
        ];
        processes.push(spawn(name, &bins, &common, &extra));
    }
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(CLIENTS)
        .build()
        .expect("client");
    for (name, _, port) in services {
        wait_ready(&http, name, port).await;
    }

    let floor_port = start_floor(&nats.url(), &namespace, SECRET).await;
    let (floor_processes_port, floor_processes) = start_floor_processes(&nats.url(), &namespace);
    let token = UserClaims::for_subaccount(SUBACCOUNT, Duration::from_secs(3600))
        .sign_hs256(SECRET.as_bytes());
    let stack_url =
        format!("http://127.0.0.1:{api_port}/api/connectors/{SUBACCOUNT}/handlegooglecalendar");
    let floor_url = format!("http://127.0.0.1:{floor_port}/floor/{SUBACCOUNT}");
    let floor_processes_url = format!("http://127.0.0.1:{floor_processes_port}/floor/{SUBACCOUNT}");
    let no_email = r#"{"userEmail":"bench@example.com","sendEmail":false}"#;
    let with_email = r#"{"userEmail":"bench@example.com","sendEmail":true}"#;

    // Every process that works for a request, for CPU accounting.
    let mut accounted: Vec<(&str, u32)> = vec![("bench (clients, floor)", std::process::id())];
    for (name, pid) in [
        ("nats-server", nats.pid()),
        ("redis-server", infra.redis.pid()),
        ("secantusd-rs", infra.mongo.pid()),
    ] {
        accounted.extend(pid.map(|p| (name, p)));
    }
    for (child, name) in processes.iter().zip([
        "dev-smtp-sink",
        "api",
        "oauth-worker",
        "metadata-worker",
        "mailer-worker",
    ]) {
        accounted.push((name, child.id()));
    }
    for (child, name) in floor_processes
        .iter()
        .zip(["floor echo process", "floor server process"])
    {
        accounted.push((name, child.id()));
    }
    wait_floor(&http, &floor_processes_url, &token, no_email).await;

    let mut floor = Vec::new();
    let mut floor_processes_results = Vec::new();
    let mut stack = Vec::new();
    let mut stack_email = Vec::new();
    let mut cpu: Vec<(&str, Vec<f64>, usize)> = Vec::new();
    for round in 0..2 {
        for (label, url, body, results) in [
            ("floor", &floor_url, no_email, &mut floor),
            (
                "floor, own processes",
                &floor_processes_url,
                no_email,
                &mut floor_processes_results,
            ),
            ("stack, sendEmail=false", &stack_url, no_email, &mut stack),
            (
                "stack, sendEmail=true",
                &stack_url,
                with_email,
                &mut stack_email,
            ),
        ] {
            println!("round {}: {label}", round + 1);
            let pids: Vec<u32> = accounted.iter().map(|(_, pid)| *pid).collect();
            let (summary, used) = load(&http, url, &token, body, CLIENTS, phase, &pids).await;
            match cpu.iter_mut().find(|(l, _, _)| *l == label) {
                Some((_, total, requests)) => {
                    total.iter_mut().zip(&used).for_each(|(t, u)| *t += u);
                    *requests += summary.latencies.len();
                }
                None => cpu.push((label, used, summary.latencies.len())),
            }
            results.push(summary);
        }
    }

    let floor = Summary::merge(&floor);
    let floor_processes_summary = Summary::merge(&floor_processes_results);
    let stack = Summary::merge(&stack);
    let stack_email = Summary::merge(&stack_email);
    println!();
    println!(
        "{CLIENTS} concurrent clients, {seconds}s per phase, 2 rounds, floor and stack interleaved"
    );
    println!(
        "{:<34} {:>9} {:>8} {:>8} {:>7} {:>10} {:>14}",
        "", "req/s", "p50 ms", "p99 ms", "errors", "vs floor", "vs own-process"
    );
    for (label, s) in [
        ("floor (JWT + NATS echo, in-bench)", &floor),
        ("floor, own processes", &floor_processes_summary),
        ("stack, sendEmail=false", &stack),
        ("stack, sendEmail=true", &stack_email),
    ] {
        println!(
            "{label:<34} {:>9.0} {:>8.2} {:>8.2} {:>7} {:>9.0}% {:>13.0}%",
            s.rate(),
            s.percentile(0.50).as_secs_f64() * 1000.0,
            s.percentile(0.99).as_secs_f64() * 1000.0,
            s.errors,
            100.0 * s.rate() / floor.rate(),
            100.0 * s.rate() / floor_processes_summary.rate()
        );
    }
    println!();
    println!("CPU per request, µs (the bench process also runs the 64 clients):");
    print!("{:<24}", "");
    for (label, _, _) in &cpu {
        print!(" {label:>24}");
    }
    println!();
    for (i, (name, _)) in accounted.iter().enumerate() {
        print!("{name:<24}");
        for (_, used, requests) in &cpu {
            print!(" {:>24.0}", used[i] * 1e6 / (*requests).max(1) as f64);
        }
        println!();
    }
    println!();
    println!(
        "memory, MiB: peak RSS (VmHWM) during the run; RSS at the end and its anonymous, file-backed and transparent-huge-page parts:"
    );
    println!(
        "  {:<16} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "", "peak", "RSS", "anon", "file", "anonTHP"
    );
    let mib = |kib: u64| kib as f64 / 1024.0;
    for (child, name) in processes.iter().zip([
        "dev-smtp-sink",
        "api",
        "oauth-worker",
        "metadata-worker",
        "mailer-worker",
    ]) {
        let memory = support::Memory::read(child.id());
        println!(
            "  {name:<16} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1}",
            mib(memory.hwm),
            mib(memory.rss),
            mib(memory.anon),
            mib(memory.file),
            mib(memory.anon_huge)
        );
    }
    let peaks: Vec<(&str, f64)> = processes
        .iter()
        .zip([
            "dev-smtp-sink",
            "api",
            "oauth-worker",
            "metadata-worker",
            "mailer-worker",
        ])
        .skip(1)
        .map(|(child, name)| (name, mib(support::Memory::read(child.id()).hwm)))
        .collect();
    for mut child in processes.into_iter().chain(floor_processes) {
        e2e::process::terminate(&mut child);
    }

    let ratio = stack.rate() / floor.rate();
    let p99_ms = stack.percentile(0.99).as_secs_f64() * 1000.0;
    println!();
    println!(
        "connect (sendEmail=false) vs floor: {:.1} %, p99 {p99_ms:.1} ms (goal ≥ {:.0} %, p99 ≤ {GOAL_P99_MS:.0} ms: {})",
        100.0 * ratio,
        100.0 * GOAL,
        if ratio >= GOAL && p99_ms <= GOAL_P99_MS {
            "met"
        } else {
            "NOT met"
        }
    );
    let mut problems = Vec::new();
    let errors = floor.errors + stack.errors + stack_email.errors + floor_processes_summary.errors;
    if errors > 0 {
        problems.push(format!("{errors} requests failed"));
    }
    if ratio < GOAL - NOISE {
        problems.push(format!(
            "the ratio fell below {:.0} %, the goal less the noise",
            100.0 * (GOAL - NOISE)
        ));
    }
    if p99_ms > GOAL_P99_MS {
        problems.push(format!("p99 {p99_ms:.1} ms over {GOAL_P99_MS:.0} ms"));
    }
    for (name, peak) in &peaks {
        if *peak >= PEAK_RSS_MIB {
            problems.push(format!(
                "{name} peaked at {peak:.1} MiB (goal < {PEAK_RSS_MIB:.0})"
            ));
        }
    }
    if short && !problems.is_empty() {
        println!("FAILED: {}", problems.join("; "));
        std::process::exit(1);
    }
}

/// Until the floor processes answer a request (the echo may subscribe after the server binds).
async fn wait_floor(http: &reqwest::Client, url: &str, token: &str, body: &'static str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(r) = http
            .post(url)
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            && r.status() == StatusCode::OK
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the floor processes do not answer on {url}");
}

/// The floor in the stack's process shape: the HTTP server and the echo responder each in
/// a process of their own (this binary again), with their own NATS connections, as the api
/// and the oauth-worker are. Returns the server's port and both children.
fn start_floor_processes(nats_url: &str, namespace: &str) -> (u16, Vec<Child>) {
    let exe = std::env::current_exe().expect("bench binary path");
    let subject = format!("{namespace}.floor-processes.echo");
    let port = e2e::process::free_port();
    let [creds, ca] = support::driver_settings();
    let child = |arg: &str| {
        Command::new(&exe)
            .arg(arg)
            .env(creds.0, &creds.1)
            .env(ca.0, &ca.1)
            .env("FLOOR_HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("FLOOR_NATS_URL", nats_url)
            .env("FLOOR_SUBJECT", &subject)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("floor process starts")
    };
    (port, vec![child(FLOOR_ECHO_ARG), child(FLOOR_SERVER_ARG)])
}

fn floor_setting(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is set by the bench"))
}

async fn floor_nats() -> async_nats::Client {
    support::connect_with(
        &floor_setting("FLOOR_NATS_URL"),
        &floor_setting("FLOOR_NATS_CREDS"),
        &floor_setting("FLOOR_NATS_CA"),
    )
    .await
}

async fn floor_server_process() {
    let nats = floor_nats().await;
    let listener = tokio::net::TcpListener::bind(floor_setting("FLOOR_HTTP_ADDR"))
        .await
        .expect("bind");
    let app = floor_router(SECRET, nats, floor_setting("FLOOR_SUBJECT"));
    axum::serve(listener, app).await.expect("floor server");
}

async fn floor_echo_process() {
    let nats = floor_nats().await;
    serve_echo(nats, floor_setting("FLOOR_SUBJECT")).await;
    std::future::pending::<()>().await;
}
