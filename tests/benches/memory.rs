//! Idle memory of the services against two floors measured in the same run, so the
//! differences mean something on another machine.
//!
//! - **services**: the api, oauth-worker, metadata-worker and mailer-worker as release processes
//!   on real NATS, Redis and the MongoDB-wire server (TLS and auth on, started by the e2e
//!   harness), plus the dev SMTP sink (not measured).
//! - **floor: hello**: this binary again (`--floor-hello`), built like the services (release,
//!   mimalloc, a default multi-thread tokio runtime): an axum server answering `/readyz`.
//! - **floor: clients**: the same, plus the three infrastructure connections exactly as a
//!   service opens them (`service_kit::Infrastructure::connect`: NATS over TLS with
//!   credentials, the MongoDB driver's pool, the Redis connection manager).
//!
//! Each binary's pages are dropped from the page cache before it starts (as from a cold disk,
//! in a fresh container). Every process is started, waited on until `/readyz` answers 200,
//! left idle for `BENCH_IDLE_SECONDS` (default 10), then read from /proc: VmRSS and its parts
//! (RssAnon; RssFile, mostly the binary's own code as the kernel maps it), AnonHugePages and
//! Pss from smaps_rollup, VmHWM, and the thread count. Prints one row per process and its
//! difference to each floor. `BENCH_MEMORY_DETAIL=1` adds, per process, where the resident
//! memory lies (the binary's own pages, shared libraries, thread stacks, allocator arenas,
//! glibc's heap) and its threads by name.
//!
//! `BENCH_SERVICE_ENV="NAME=value NAME=value"` adds settings to every measured process (the
//! floors too), to compare runs: e.g. `MIMALLOC_ALLOW_THP=1`, `TOKIO_WORKER_THREADS=1`,
//! `OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318`. `BENCH_SERVICES_DIR` runs services
//! built elsewhere (another profile or commit) instead of building them; the floors stay this
//! binary.
//!
//! Run: `cargo bench -p e2e --bench memory` (builds the release binaries first).
//!
//! CI: `BENCH_SHORT=1` idles 3 s and exits non-zero when a service's RSS is at or above
//! `IDLE_GOAL_MIB` (the goal, 20 MiB).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use axum::routing::get;

// Like the services, so the floors cost what a service built the same way would.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod support;

use support::{Memory, build_release_binaries, spawn, wait_ready};

/// Runs this binary as the hello floor (`FLOOR_HTTP_ADDR`).
const FLOOR_HELLO_ARG: &str = "--floor-hello";
/// Runs this binary as the clients floor (`FLOOR_HTTP_ADDR` and the common settings).
const FLOOR_CLIENTS_ARG: &str = "--floor-clients";

/// Idle RSS every service stays under: the goal, enforced by the short mode (the
/// services idle 1-3 MiB under it, and an idle process's RSS barely moves between runs).
const IDLE_GOAL_MIB: f64 = 20.0;

const SERVICES: [(&str, &str); 4] = [
    ("api", "API_HTTP_ADDR"),
    ("oauth-worker", "OAUTH_WORKER_HTTP_ADDR"),
    ("metadata-worker", "METADATA_WORKER_HEALTH_ADDR"),
    ("mailer-worker", "MAILER_WORKER_HEALTH_ADDR"),
];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("runtime")
    };
    if args.iter().any(|a| a == FLOOR_HELLO_ARG) {
        runtime().block_on(floor_hello());
        return;
    }
    if args.iter().any(|a| a == FLOOR_CLIENTS_ARG) {
        runtime().block_on(floor_clients());
        return;
    }
    // `cargo test --all-targets` runs this binary without --bench: a benchmark is no test.
    if !args.iter().any(|a| a == "--bench") {
        println!("memory benchmark: run it with `cargo bench -p e2e --bench memory`");
        return;
    }
    runtime().block_on(bench());
}

async fn bench() {
    let short = std::env::var_os("BENCH_SHORT").is_some_and(|v| v == "1");
    let idle = Duration::from_secs(
        std::env::var("BENCH_IDLE_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(if short { 3 } else { 10 }),
    );
    let detail = std::env::var_os("BENCH_MEMORY_DETAIL").is_some();
    let extra_env = support::service_env();
    let bins = build_release_binaries();
    let infra = e2e::shared::shared();
    let namespace = format!("mem{}", std::process::id());
    let common = vec![
        ("NATS_URL".to_owned(), infra.nats.url()),
        ("NATS_NAMESPACE".to_owned(), namespace.clone()),
        ("MONGODB_URI".to_owned(), infra.mongo.uri()),
        (
            "MONGODB_DATABASE_TEMPLATE".to_owned(),
            format!("{namespace}_{{subaccountId}}"),
        ),
        ("REDIS_URL".to_owned(), infra.redis.url()),
        ("REDIS_KEY_PREFIX".to_owned(), namespace.clone()),
        ("RUST_LOG".to_owned(), "warn".to_owned()),
    ];

    let smtp_port = e2e::process::free_port();
    let sink_http = e2e::process::free_port();
    let mut unmeasured = vec![spawn(
        "dev-smtp-sink",
        &bins,
        &[],
        &[
            ("DEV_SMTP_SINK_SMTP_ADDR", format!("127.0.0.1:{smtp_port}")),
            ("DEV_SMTP_SINK_HTTP_ADDR", format!("127.0.0.1:{sink_http}")),
        ],
    )];
    let http = reqwest::Client::new();
    let mut measured: Vec<(String, Child, u64)> = Vec::new();

    // The floors: this binary as the hello server, and a copy of it (its own page cache) as
    // the clients' holder.
    let exe = std::env::current_exe().expect("bench binary path");
    let exe_copy = exe.with_extension("clients-floor");
    std::fs::copy(&exe, &exe_copy).expect("copy of the bench binary");
    let [creds, ca] = support::driver_settings();
    let mut ports = Vec::new();
    for (label, arg) in [
        ("floor: hello", FLOOR_HELLO_ARG),
        ("floor: clients", FLOOR_CLIENTS_ARG),
    ] {
        let port = e2e::process::free_port();
        let binary = if arg == FLOOR_CLIENTS_ARG {
            &exe_copy
        } else {
            &exe
        };
        evict_from_page_cache(binary);
        let mut command = Command::new(binary);
        command.arg(arg).env_clear();
        if arg == FLOOR_CLIENTS_ARG {
            command
                .envs(common.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .env("NATS_CREDS_FILE", &creds.1)
                .env("NATS_TLS_CA_FILE", &ca.1)
                .env("REDIS_TLS_CA_FILE", &ca.1);
        }
        command.envs(extra_env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let child = command
            .env("FLOOR_HTTP_ADDR", format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("floor process starts");
        let size = file_size(binary);
        measured.push((label.to_owned(), child, size));
        ports.push((label, port));
    }
    for (name, setting) in SERVICES {
        let port = e2e::process::free_port();
        let extra = [
            (setting.to_owned(), format!("127.0.0.1:{port}")),
            (
                "SMTP_URL".to_owned(),
                format!("smtp://127.0.0.1:{smtp_port}"),
            ),
        ];
        evict_from_page_cache(&bins.join(name));
        let child = spawn(name, &bins, &common, &extra);
        measured.push((name.to_owned(), child, file_size(&bins.join(name))));
        ports.push((name, port));
    }
    for (name, port) in &ports {
        wait_ready(&http, name, *port).await;
    }
    let at_ready: Vec<Memory> = measured
        .iter()
        .map(|(_, child, _)| Memory::read(child.id()))
        .collect();
    println!(
        "all ready; idle for {}s (load average {})",
        idle.as_secs(),
        load_average()
    );
    tokio::time::sleep(idle).await;

    let idle_memory: Vec<Memory> = measured
        .iter()
        .map(|(_, child, _)| Memory::read(child.id()))
        .collect();
    let (floor, clients_floor) = (idle_memory[0].rss, idle_memory[1].rss);
    println!();
    if !extra_env.is_empty() {
        let settings: Vec<String> = extra_env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("extra settings: {}", settings.join(" "));
    }
    println!(
        "after {}s idle (MiB; `ready`: VmRSS when /readyz first answered; load average {})",
        idle.as_secs(),
        load_average()
    );
    println!(
        "{:<16} {:>7} {:>7} {:>7} {:>7} {:>8} {:>7} {:>7} {:>7} {:>7} {:>8} {:>9}",
        "",
        "ready",
        "VmRSS",
        "anon",
        "file",
        "anonTHP",
        "Pss",
        "VmHWM",
        "threads",
        "binary",
        "− hello",
        "− clients"
    );
    for ((label, _, size), (memory, ready)) in
        measured.iter().zip(idle_memory.iter().zip(&at_ready))
    {
        println!(
            "{label:<16} {:>7.1} {:>7.1} {:>7.1} {:>7.1} {:>8.1} {:>7.1} {:>7.1} {:>7} {:>7.1} {:>+8.1} {:>+9.1}",
            mib(ready.rss),
            mib(memory.rss),
            mib(memory.anon),
            mib(memory.file),
            mib(memory.anon_huge),
            mib(memory.pss),
            mib(memory.hwm),
            memory.threads,
            *size as f64 / (1 << 20) as f64,
            mib(memory.rss) - mib(floor),
            mib(memory.rss) - mib(clients_floor),
        );
    }
    if detail {
        for ((label, child, _), memory) in measured.iter().zip(&idle_memory) {
            println!();
            println!(
                "{label} (pid {}): {:.1} MiB resident",
                child.id(),
                mib(memory.rss)
            );
            for (what, kib) in mappings(child.id()) {
                if kib >= 64 {
                    println!("  {:>7.1} MiB  {what}", mib(kib));
                }
            }
            let threads = threads(child.id());
            let named: Vec<String> = threads
                .iter()
                .map(|(name, n)| format!("{name} ×{n}"))
                .collect();
            println!("  threads: {}", named.join(", "));
        }
    }
    let over: Vec<String> = measured
        .iter()
        .zip(&idle_memory)
        .skip(2)
        .filter(|(_, memory)| mib(memory.rss) >= IDLE_GOAL_MIB)
        .map(|((label, _, _), memory)| format!("{label} {:.1} MiB", mib(memory.rss)))
        .collect();
    println!();
    println!(
        "idle RSS of every service (goal < {IDLE_GOAL_MIB:.0} MiB): {}",
        if over.is_empty() {
            "met".to_owned()
        } else {
            format!("NOT met ({})", over.join(", "))
        }
    );
    for (_, mut child, _) in measured {
        e2e::process::terminate(&mut child);
    }
    for child in &mut unmeasured {
        e2e::process::terminate(child);
    }
    if short && !over.is_empty() {
        std::process::exit(1);
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Drops `binary`'s pages from the page cache (written back first: a fresh build leaves
/// them dirty), so that each process starts as from a cold disk, as in a fresh container, and
/// its RssFile holds what the kernel read for it rather than what the linker's writes left
/// cached.
fn evict_from_page_cache(binary: &Path) {
    use std::os::fd::AsRawFd;
    let Ok(file) = std::fs::File::open(binary) else {
        return;
    };
    let _ = file.sync_all();
    #[allow(unsafe_code)]
    // SAFETY: posix_fadvise has no memory-safety preconditions; the descriptor is open.
    unsafe {
        libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Resident KiB by kind of mapping, from /proc/PID/smaps, largest first. Anonymous mappings
/// are told apart by their size: mimalloc reserves its arenas 1 GiB (and more) at a time,
/// glibc its per-thread arenas 64 MiB at a time, threads get 2 MiB (Rust) or 8 MiB (glibc)
/// stacks.
fn mappings(pid: u32) -> Vec<(String, u64)> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut by_kind: BTreeMap<String, u64> = BTreeMap::new();
    let mut kind = String::new();
    let mut huge_kind = String::new();
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or_default();
        if first.contains('-') && !first.ends_with(':') {
            // A mapping's header: range, perms, offset, device, inode, path.
            let (start, end) = first.split_once('-').unwrap_or_default();
            let size = u64::from_str_radix(end, 16).unwrap_or(0)
                - u64::from_str_radix(start, 16).unwrap_or(0);
            let perms = words.next().unwrap_or_default();
            let path = words.nth(3).unwrap_or_default();
            kind = match path {
                p if !exe.is_empty() && p.starts_with(&exe) => format!("binary ({perms})"),
                "[heap]" => "[heap]: glibc malloc's main arena (brk)".to_owned(),
                "[stack]" => "[stack]: the main thread".to_owned(),
                p if p.starts_with('/') => {
                    let name = Path::new(p)
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    format!("library {name}")
                }
                p if p.starts_with('[') => p.to_owned(),
                _ if size >= 1 << 30 => "anonymous ≥ 1 GiB: mimalloc arenas".to_owned(),
                _ if size >= 32 << 20 => "anonymous 32 MiB – 1 GiB (glibc arenas?)".to_owned(),
                _ if size == 2 << 20 || size == 8 << 20 => {
                    "anonymous 2 or 8 MiB: thread stacks".to_owned()
                }
                _ => "anonymous, other".to_owned(),
            };
            huge_kind = format!("  of which transparent huge pages: {kind}");
        } else if first == "Rss:" {
            *by_kind.entry(kind.clone()).or_default() +=
                words.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        } else if first == "AnonHugePages:" {
            let kib: u64 = words.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            if kib > 0 {
                *by_kind.entry(huge_kind.clone()).or_default() += kib;
            }
        }
    }
    let mut sorted: Vec<(String, u64)> = by_kind.into_iter().collect();
    sorted.sort_by_key(|entry| std::cmp::Reverse(entry.1));
    sorted
}

/// Threads by name (/proc/PID/task/*/comm), with their count.
fn threads(pid: u32) -> Vec<(String, usize)> {
    let mut names: BTreeMap<String, usize> = BTreeMap::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            *names.entry(name.trim().to_owned()).or_default() += 1;
        }
    }
    names.into_iter().collect()
}

fn floor_setting(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is set by the bench"))
}

/// The least a service is: a tokio runtime and an axum server answering `/readyz`.
async fn floor_hello() {
    // As every service does first.
    service_kit::service::without_transparent_huge_pages();
    let listener = tokio::net::TcpListener::bind(floor_setting("FLOOR_HTTP_ADDR"))
        .await
        .expect("bind");
    let app = axum::Router::new().route("/readyz", get(|| async { "ok" }));
    axum::serve(listener, app).await.expect("floor server");
}

/// The hello floor holding the three infrastructure connections a service holds, opened by
/// the services' own code.
async fn floor_clients() {
    service_kit::service::without_transparent_huge_pages();
    let mut env = service_kit::Env::from_process();
    let common = service_kit::CommonConfig::from_env(&mut env);
    env.finish().expect("floor configuration");
    let shutdown = service_kit::CancellationToken::new();
    let infra = service_kit::Infrastructure::connect(&common, "floor", &shutdown)
        .await
        .expect("the floor connects");
    let listener = tokio::net::TcpListener::bind(floor_setting("FLOOR_HTTP_ADDR"))
        .await
        .expect("bind");
    let app = axum::Router::new().route(
        "/readyz",
        get(move || {
            let infra = infra.clone();
            async move {
                if infra.readiness(Duration::from_secs(2)).await.is_ready() {
                    axum::http::StatusCode::OK
                } else {
                    axum::http::StatusCode::SERVICE_UNAVAILABLE
                }
            }
        }),
    );
    axum::serve(listener, app).await.expect("floor server");
}
