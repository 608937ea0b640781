//! Benchmark of the access-token RPC (`<namespace>.rpc.access-token-requested`, issue 17)
//! against its floor, measured in the same run so the ratio means something on a noisy
//! machine, and of a mass expiry against the fake provider's own latency.
//!
//! The stack: the shared NATS (auth + TLS; `BENCH_NATS_TLS=off` for a plaintext one), Redis
//! and MongoDB-wire servers (TLS), the fake Google as a process of its own (the `fake-google`
//! binary) and **two** oauth-worker replicas as release-build processes in the queue group.
//! `ACCOUNTS` (1,000) Google accounts, 10 per subaccount, are connected through the real flow
//! (connect request over NATS, consent at the fake, the callback on the worker), so their
//! tokens are in MongoDB exactly as the service stores them (encrypted by its vault).
//! Callers connect as the `token-client` identity (its credentials, its private reply inbox)
//! and send the envelope any platform service sends.
//!
//! - **cache hit**: 64 concurrent callers ask for tokens of the 1,000 accounts (round robin),
//!   every token cached in Redis and held in the replicas' memory (`ACCESS_TOKEN_MEMORY_TTL`,
//!   the default 2 s; the share answered from each, by the workers' `access_tokens_total`, is
//!   printed). req/s, p50/p99.
//! - **floor**: the same 64 callers, the same request envelopes and the same reply size (an
//!   issued reply with a dummy token of the real token's length) against a NATS request/reply
//!   echo: two echo processes (this binary re-run with `--floor-echo`) in the `oauth-worker`
//!   queue group, connected as the oauth-worker identity of a namespace of the same length,
//!   as the two replicas are. The least any design of this RPC must pay. Goal: cache hit
//!   ≥ 70 % of the floor's req/s. Floor and stack alternate (2 rounds, the order flipped in
//!   the second) so drift hits both; the ratio of each round and of the merged rounds is
//!   printed.
//! - **echo + Redis GET** (full mode only, a diagnostic with no goal): the floor's echo
//!   processes in a third namespace, each request first reading a copy of a real cache entry
//!   from the same Redis (TLS, the worker's client type) on a task of its own: how much of the
//!   distance to the floor the Redis round trip alone accounts for.
//! - **mass expiry**: the provider's latency is set to `PROVIDER_LATENCY` (50 ms); every
//!   account's access token expires at the same instant (the stored `expiresAt` set to one
//!   moment in the past, the cached copies deleted and the replicas' memory TTL waited out —
//!   what the cache TTLs running out and the clock passing the stored expiry amount to); then 10 callers per account ask at once
//!   (10,000 requests, in an interleaved order, over 10 `token-client` connections) across
//!   the two replicas. The bench **fails** (non-zero exit) unless the fake provider saw
//!   exactly one refresh per account (its per-account counter, and 1,000 refresh requests in
//!   all), every caller got an issued token, the 10 callers of an account got the same one, it
//!   is new, and the provider accepts it (userinfo). The wall time (first request → last
//!   reply) is reported against the provider's latency: as a multiple of the configured and
//!   the measured single-request latency L, against the ideal with the concurrency the
//!   service allows (2 replicas × `rpc::MAX_IN_FLIGHT` requests in flight: if each held a
//!   refresh, ⌈1000 / 512⌉ = 2 waves of L), and against the provider floor measured in the same
//!   run: 1,000 refresh requests sent straight to the fake at that same concurrency.
//!
//! Also printed: CPU per request of every process (from /proc; the bench process runs the
//! callers) for each phase, and peak RSS (VmHWM) of each process.
//!
//! Run: `cargo bench -p e2e --bench access_token` (builds the release binaries first; source
//! `scripts/infra/env.sh` for the servers). `BENCH_SECONDS` (default 10) sets the length of a
//! measured phase (after 2 s of warm-up); the full mode runs the mass expiry twice.
//!
//! CI: `BENCH_SHORT=1 cargo bench -p e2e --bench access_token` runs 3-second phases (1 s
//! warm-up), 2 rounds and one mass expiry, and exits non-zero if the cache-hit ratio is below
//! the goal minus the measured noise (`SHORT_NOISE`), if the mass expiry is wrong, or if an
//! oauth-worker replica's peak RSS reached `PEAK_RSS_MIB`. With a
//! Redis round trip per cache hit this reached about 53 % of the floor (the echo with one Redis
//! GET alone 63–65 %); since the replicas hold tokens in memory (`ACCESS_TOKEN_MEMORY_TTL`) it
//! reaches about 80 %.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::Client;
use e2e::fake_google::{self, Decision};
use futures::StreamExt;
use mongodb::bson::{self, doc};
use schemas::bus_access::Identity;
use schemas::events::{
    AccessTokenReply, AccessTokenRequested, ConnectRequested, ConnectRequestedReply,
};
use schemas::subjects::{Namespace, OAUTH_WORKER_QUEUE};
use schemas::{Envelope, SubaccountId, UserEmail};
use serde_json::Value;

mod support;

use support::{Summary, build_release_binaries, cpu_during, peak_rss_kib, spawn, wait_ready};

// Like the services, so the floor processes cost what a service built the same way would.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Concurrent callers in the cache-hit and floor phases.
const CALLERS: usize = 64;
/// Connected Google accounts.
const ACCOUNTS: usize = 1_000;
/// Accounts per subaccount: the default `MAX_GOOGLE_ACCOUNTS`.
const ACCOUNTS_PER_SUBACCOUNT: usize = 10;
/// Callers asking for the same account at once in the mass expiry.
const CALLERS_PER_ACCOUNT: usize = 10;
/// The fake provider's latency during the mass expiry.
const PROVIDER_LATENCY: Duration = Duration::from_millis(50);
/// Concurrent connect flows while seeding.
/// `ACCESS_TOKEN_MEMORY_TTL` of the replicas (the default): the mass expiry waits it out
/// after expiring the stored and cached tokens.
const MEMORY_TTL: Duration = Duration::from_secs(2);
const SEED_CONCURRENCY: usize = 16;
/// Cache-hit req/s as a share of the floor's: the issue's goal.
const GOAL: f64 = 0.70;
/// How far the short mode's ratio moves between runs of the same build, measured on the 2-core
/// development machine: with tokens held in memory, 4 `BENCH_SHORT=1` runs in a row merged to
/// 73.7-75.9 % (single rounds 72.5-76.7 %: 4.2 points), the full mode 79.7 %. (Before, with a
/// Redis read per hit and other builds running beside it, 13 short runs spread over 9.1 points.)
/// Rounded up to 5 points: below `GOAL - SHORT_NOISE` (65 %) the short mode fails.
const SHORT_NOISE: f64 = 0.05;
/// Peak RSS each oauth-worker replica stays under (the issue's memory goal under load).
const PEAK_RSS_MIB: f64 = 64.0;

const CLIENT_ID: &str = "bench-client";
const CLIENT_SECRET: &str = "bench-client-secret";
/// A key of the bench's own (32 bytes, base64), so the worker does not run on the dev key.
const TOKEN_KEY: &str = "bench:YmVuY2gtYWNjZXNzLXRva2VuLWtleS0zMi1ieXRlcyE=";

/// The diagnostic phase of the full mode: the floor's echo with one Redis GET per request.
const REDIS_FLOOR: &str = "echo + Redis GET";

/// Runs this binary as a floor echo responder (`FLOOR_NATS_URL`, `FLOOR_NATS_CREDS`,
/// `FLOOR_NATS_CA`, `FLOOR_SUBJECT`, `FLOOR_REPLY`).
const FLOOR_ECHO_ARG: &str = "--floor-echo";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("runtime")
    };
    if args.iter().any(|a| a == FLOOR_ECHO_ARG) {
        runtime().block_on(floor_echo_process());
        return;
    }
    // `cargo test --all-targets` runs this binary without --bench: a benchmark is no test.
    if !args.iter().any(|a| a == "--bench") {
        println!("access-token benchmark: run it with `cargo bench -p e2e --bench access_token`");
        return;
    }
    if !runtime().block_on(bench()) {
        std::process::exit(1);
    }
}

/// Phase lengths and repetitions: `BENCH_SHORT=1` for CI, else the full run.
struct Mode {
    short: bool,
    phase: Duration,
    warmup: Duration,
    rounds: usize,
    expiry_rounds: usize,
}

impl Mode {
    fn from_env() -> Self {
        let short = matches!(
            std::env::var("BENCH_SHORT").as_deref(),
            Ok("1") | Ok("true")
        );
        let seconds: u64 = std::env::var("BENCH_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(if short { 3 } else { 10 });
        Self {
            short,
            phase: Duration::from_secs(seconds),
            warmup: Duration::from_secs(if short { 1 } else { 2 }),
            rounds: 2,
            expiry_rounds: if short { 1 } else { 2 },
        }
    }
}

/// One connected Google account.
struct Account {
    subaccount: SubaccountId,
    email: String,
}

fn accounts() -> Vec<Account> {
    (0..ACCOUNTS)
        .map(|i| Account {
            subaccount: SubaccountId::parse(&format!(
                "{:024x}",
                0xac00_0000_u64 + (i / ACCOUNTS_PER_SUBACCOUNT) as u64
            ))
            .expect("subaccount id"),
            email: format!("person{i:04}@bench.example"),
        })
        .collect()
}

/// The request body a platform service sends for `account`.
fn request_body(account: &Account) -> Vec<u8> {
    Envelope::new(
        account.subaccount.clone(),
        uuid::Uuid::now_v7(),
        AccessTokenRequested {
            google_email: account.email.clone(),
        },
    )
    .to_bytes()
}

async fn bench() -> bool {
    let mode = Mode::from_env();
    let bins = build_release_binaries();
    let infra = e2e::shared::shared();
    let plaintext_nats = (!support::nats_tls()).then(e2e::servers::NatsServer::start_plaintext);
    let nats = plaintext_nats.as_ref().unwrap_or(&infra.nats);
    let nats_url = nats.url();
    let pid = std::process::id();
    // The same length, so the floor's subjects are as long as the stack's.
    let namespace = format!("benchat{pid}");
    let floor_namespace = format!("floorat{pid}");
    let redis_floor_namespace = format!("redisat{pid}");
    let ns = Namespace::new(&namespace).expect("namespace");
    let floor_ns = Namespace::new(&floor_namespace).expect("namespace");
    let redis_floor_ns = Namespace::new(&redis_floor_namespace).expect("namespace");
    println!(
        "NATS: auth on, TLS {}; {} mode",
        if plaintext_nats.is_some() {
            "off"
        } else {
            "on"
        },
        if mode.short { "short (CI)" } else { "full" }
    );

    // The fake Google, in a process of its own.
    let google_port = e2e::process::free_port();
    let worker_ports = [e2e::process::free_port(), e2e::process::free_port()];
    let redirect_uri = format!("http://127.0.0.1:{}/api/google/callback", worker_ports[0]);
    let google = format!("http://127.0.0.1:{google_port}");
    let mut processes: Vec<(&str, Child)> = vec![(
        "fake-google",
        spawn(
            "fake-google",
            &bins,
            &[],
            &[
                ("FAKE_GOOGLE_ADDR", format!("127.0.0.1:{google_port}")),
                ("GOOGLE_CLIENT_ID", CLIENT_ID.to_owned()),
                ("GOOGLE_CLIENT_SECRET", CLIENT_SECRET.to_owned()),
                ("OAUTH_REDIRECT_URI", redirect_uri.clone()),
                ("RUST_LOG", "warn".to_owned()),
            ],
        ),
    )];
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .build()
        .expect("client");
    wait_ready(&http, "fake-google", google_port).await;

    // Two oauth-worker replicas.
    let common: Vec<(String, String)> = [
        ("NATS_URL", nats_url.clone()),
        ("NATS_NAMESPACE", namespace.clone()),
        ("MONGODB_URI", infra.mongo.uri()),
        (
            "MONGODB_DATABASE_TEMPLATE",
            format!("{namespace}_{{subaccountId}}"),
        ),
        ("REDIS_URL", infra.redis.url()),
        ("REDIS_KEY_PREFIX", namespace.clone()),
        ("RUST_LOG", "warn".to_owned()),
        ("GOOGLE_CLIENT_ID", CLIENT_ID.to_owned()),
        ("GOOGLE_CLIENT_SECRET", CLIENT_SECRET.to_owned()),
        (
            "GOOGLE_AUTH_URL",
            format!("{google}{}", fake_google::AUTH_PATH),
        ),
        (
            "GOOGLE_TOKEN_URL",
            format!("{google}{}", fake_google::TOKEN_PATH),
        ),
        (
            "GOOGLE_USERINFO_URL",
            format!("{google}{}", fake_google::USERINFO_PATH),
        ),
        (
            "GOOGLE_REVOKE_URL",
            format!("{google}{}", fake_google::REVOKE_PATH),
        ),
        (
            "GOOGLE_CALENDAR_API_URL",
            format!("{google}{}", fake_google::CALENDAR_API_PATH),
        ),
        ("OAUTH_REDIRECT_URI", redirect_uri.clone()),
        ("TOKEN_ENCRYPTION_KEYS", TOKEN_KEY.to_owned()),
        ("TOKEN_ENCRYPTION_KEY_ID", "bench".to_owned()),
        (
            "ACCESS_TOKEN_MEMORY_TTL",
            format!("{}ms", MEMORY_TTL.as_millis()),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    for (name, port) in [
        ("oauth-worker 1", worker_ports[0]),
        ("oauth-worker 2", worker_ports[1]),
    ] {
        let extra = [("OAUTH_WORKER_HTTP_ADDR", format!("127.0.0.1:{port}"))];
        processes.push((name, spawn("oauth-worker", &bins, &common, &extra)));
    }
    for port in worker_ports {
        wait_ready(&http, "oauth-worker", port).await;
    }

    // Accounts, connected through the real flow.
    let accounts = Arc::new(accounts());
    let driver = support::driver_nats(&nats_url).await;
    let started = Instant::now();
    connect_accounts(&driver, &ns, &google, &accounts).await;
    let mongo = mongodb::Client::with_uri_str(infra.mongo.uri())
        .await
        .expect("mongo");
    let tenants: Vec<mongodb::Database> = accounts
        .chunks(ACCOUNTS_PER_SUBACCOUNT)
        .map(|chunk| mongo.database(&format!("{namespace}_{}", chunk[0].subaccount)))
        .collect();
    check_vault(&tenants).await;
    println!(
        "{ACCOUNTS} accounts connected through the consent flow in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // Callers: a platform service's identity and inbox, one connection per namespace.
    let stack_client = support::connect_as(&nats_url, Identity::TokenClient, &namespace).await;
    let floor_client =
        support::connect_as(&nats_url, Identity::TokenClient, &floor_namespace).await;
    // The first request of each account reads MongoDB and fills the cache.
    let (first_tokens, reply_len, canned) =
        warm_cache(&stack_client, &ns.access_token_requested(), &accounts).await;

    let mut floor_processes = start_floor_echoes(&nats_url, &floor_ns, &canned, None);
    wait_floor(
        &floor_client,
        &floor_ns.access_token_requested(),
        &accounts[0],
    )
    .await;
    // The diagnostic floor: the echo plus one Redis GET of a real cache entry per request.
    let redis_floor_client = if mode.short {
        None
    } else {
        let key = format!("{redis_floor_namespace}:floor:entry");
        copy_cache_entry(&infra.redis.url(), &namespace, &accounts[0], &key).await;
        floor_processes.extend(start_floor_echoes(
            &nats_url,
            &redis_floor_ns,
            &canned,
            Some((&infra.redis.url(), &key)),
        ));
        let client =
            support::connect_as(&nats_url, Identity::TokenClient, &redis_floor_namespace).await;
        wait_floor(
            &client,
            &redis_floor_ns.access_token_requested(),
            &accounts[0],
        )
        .await;
        Some(client)
    };
    println!(
        "reply size: stack {reply_len} bytes, floor {} bytes; request envelope {} bytes",
        canned.len(),
        request_body(&accounts[0]).len()
    );

    let mut accounted: Vec<(&str, u32)> = vec![("bench (callers)", pid)];
    for (name, p) in [
        ("nats-server", nats.pid()),
        ("redis-server", infra.redis.pid()),
        ("secantusd-rs (MongoDB)", infra.mongo.pid()),
    ] {
        accounted.extend(p.map(|p| (name, p)));
    }
    for (name, child) in &processes {
        accounted.push((name, child.id()));
    }
    for (i, child) in floor_processes.iter().enumerate() {
        let names = [
            "floor echo 1",
            "floor echo 2",
            "floor echo + Redis 1",
            "floor echo + Redis 2",
        ];
        accounted.push((names[i], child.id()));
    }
    let pids: Vec<u32> = accounted.iter().map(|(_, p)| *p).collect();

    // Cache hit against the floor, alternating.
    let stack_subject = ns.access_token_requested();
    let floor_subject = floor_ns.access_token_requested();
    let redis_floor_subject = redis_floor_ns.access_token_requested();
    let mut floor_runs = Vec::new();
    let mut stack_runs = Vec::new();
    let mut redis_floor_runs = Vec::new();
    let mut cpu: Vec<(&str, Vec<f64>, usize)> = Vec::new();
    let mut cache_hits = 0.0;
    let mut memory_hits = 0.0;
    for round in 0..mode.rounds {
        let mut order = if round % 2 == 0 {
            vec!["floor", "cache hit"]
        } else {
            vec!["cache hit", "floor"]
        };
        if redis_floor_client.is_some() {
            order.push(REDIS_FLOOR);
        }
        for label in order {
            println!("round {}: {label}", round + 1);
            let (client, subject) = match (label, &redis_floor_client) {
                ("floor", _) => (&floor_client, &floor_subject),
                (REDIS_FLOOR, Some(client)) => (client, &redis_floor_subject),
                _ => (&stack_client, &stack_subject),
            };
            load(client, subject, &accounts, mode.warmup).await;
            let before = worker_metrics(&http, &worker_ports).await;
            let (summary, used) =
                cpu_during(&pids, load(client, subject, &accounts, mode.phase)).await;
            if label == "cache hit" {
                let after = worker_metrics(&http, &worker_ports).await;
                cache_hits += after.cache - before.cache;
                memory_hits += after.memory - before.memory;
            }
            match cpu.iter_mut().find(|(l, _, _)| *l == label) {
                Some((_, total, requests)) => {
                    total.iter_mut().zip(&used).for_each(|(t, u)| *t += u);
                    *requests += summary.latencies.len();
                }
                None => cpu.push((label, used, summary.latencies.len())),
            }
            match label {
                "floor" => floor_runs.push(summary),
                REDIS_FLOOR => redis_floor_runs.push(summary),
                _ => stack_runs.push(summary),
            }
        }
    }
    let per_round: Vec<f64> = floor_runs
        .iter()
        .zip(&stack_runs)
        .map(|(f, s)| s.rate() / f.rate())
        .collect();
    let floor = Summary::merge(&floor_runs);
    let stack = Summary::merge(&stack_runs);
    let ratio = stack.rate() / floor.rate();

    // Mass expiry.
    let mut expiries = Vec::new();
    let mut expiry_ok = true;
    let mut old_tokens = first_tokens;
    for round in 0..mode.expiry_rounds {
        println!("mass expiry {}", round + 1);
        let outcome = mass_expiry(
            &nats_url,
            &namespace,
            &http,
            &google,
            &worker_ports,
            &accounts,
            &tenants,
            &old_tokens,
            &infra.redis.url(),
            &pids,
        )
        .await;
        match outcome {
            Ok((report, tokens)) => {
                for problem in &report.problems {
                    println!("MASS EXPIRY FAILED: {problem}");
                }
                expiry_ok &= report.problems.is_empty();
                old_tokens = tokens;
                cpu.push((
                    ["mass expiry 1", "mass expiry 2"][round.min(1)],
                    report.cpu.clone(),
                    ACCOUNTS * CALLERS_PER_ACCOUNT,
                ));
                expiries.push(report);
            }
            Err(problem) => {
                println!("MASS EXPIRY FAILED: {problem}");
                expiry_ok = false;
                break;
            }
        }
    }

    // Results.
    println!();
    println!(
        "{CALLERS} concurrent callers, {}s per phase after {}s warm-up, {} rounds, floor and \
         stack alternating; two oauth-worker replicas / two echo processes",
        mode.phase.as_secs(),
        mode.warmup.as_secs(),
        mode.rounds
    );
    println!(
        "{:<44} {:>9} {:>8} {:>8} {:>7} {:>9}",
        "", "req/s", "p50 ms", "p99 ms", "errors", "vs floor"
    );
    let redis_floor = Summary::merge(&redis_floor_runs);
    let mut rows = vec![
        ("floor (NATS request/reply echo)", &floor),
        ("access token, cache hit", &stack),
    ];
    if !redis_floor_runs.is_empty() {
        rows.push(("diagnostic: echo + one Redis GET", &redis_floor));
    }
    for (label, s) in rows {
        println!(
            "{label:<44} {:>9.0} {:>8.2} {:>8.2} {:>7} {:>8.0}%",
            s.rate(),
            s.percentile(0.50).as_secs_f64() * 1000.0,
            s.percentile(0.99).as_secs_f64() * 1000.0,
            s.errors,
            100.0 * s.rate() / floor.rate(),
        );
    }
    println!(
        "ratio per round: {}; answered from the replicas' memory: {:.1} %, from the Redis cache: \
         {:.1} % of the phase's replies",
        per_round
            .iter()
            .map(|r| format!("{:.1} %", r * 100.0))
            .collect::<Vec<_>>()
            .join(", "),
        100.0 * memory_hits / stack.latencies.len().max(1) as f64,
        100.0 * cache_hits / stack.latencies.len().max(1) as f64
    );
    for report in &expiries {
        report.print();
    }
    println!();
    println!("CPU per request, µs (the bench process runs the callers):");
    support::print_cpu_per_request(&accounted, &cpu);
    println!();
    println!("peak RSS (VmHWM) during the run:");
    for (name, pid) in &accounted[1..] {
        println!(
            "  {name:<24} {:>8.1} MiB",
            peak_rss_kib(*pid) as f64 / 1024.0
        );
    }

    let threshold = GOAL - SHORT_NOISE;
    let mut ok = expiry_ok && stack.errors == 0 && floor.errors == 0;
    println!();
    println!(
        "cache hit vs floor: {:.1} % (goal {:.0} %: {})",
        100.0 * ratio,
        100.0 * GOAL,
        if ratio >= GOAL { "met" } else { "NOT met" }
    );
    if mode.short && ratio < threshold {
        println!(
            "FAIL: below the goal minus the measured noise ({:.0} % − {:.0} points = {:.0} %)",
            100.0 * GOAL,
            100.0 * SHORT_NOISE,
            100.0 * threshold
        );
        ok = false;
    }
    if !expiry_ok {
        println!("FAIL: the mass expiry did not refresh exactly once per account for every caller");
    }
    if stack.errors + floor.errors > 0 {
        println!("FAIL: {} failed requests", stack.errors + floor.errors);
    }
    for (name, child) in &processes {
        let peak = peak_rss_kib(child.id()) as f64 / 1024.0;
        if name.starts_with("oauth-worker") && peak >= PEAK_RSS_MIB {
            println!("FAIL: {name} peaked at {peak:.1} MiB (goal < {PEAK_RSS_MIB:.0} MiB)");
            ok = false;
        }
    }
    for (_, mut child) in processes {
        e2e::process::terminate(&mut child);
    }
    for mut child in floor_processes {
        e2e::process::terminate(&mut child);
    }
    for tenant in tenants {
        let _ = tenant.drop().await;
    }
    ok
}

/// Link → consent → callback for every account, `SEED_CONCURRENCY` at once.
async fn connect_accounts(driver: &Client, ns: &Namespace, google: &str, accounts: &[Account]) {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    futures::stream::iter(accounts)
        .for_each_concurrent(SEED_CONCURRENCY, |account| {
            let http = http.clone();
            async move {
                let request = Envelope::new(
                    account.subaccount.clone(),
                    uuid::Uuid::now_v7(),
                    ConnectRequested {
                        user_email: UserEmail::parse(&account.email).expect("email"),
                        send_email: false,
                        tenant_name: None,
                    },
                );
                let reply = driver
                    .request(ns.connect_requested(), request.to_bytes().into())
                    .await
                    .expect("the oauth-worker answers connect requests");
                let auth_url = match serde_json::from_slice(&reply.payload).expect("reply") {
                    ConnectRequestedReply::Issued { auth_url, .. } => auth_url,
                    other => panic!("no link for {}: {other:?}", account.email),
                };
                let decision = Decision::Allow {
                    account: Some(account.email.clone()),
                    scopes: None,
                };
                let callback = fake_google::consent_at(&http, google, &auth_url, decision)
                    .await
                    .expect("consent");
                let page = http
                    .get(callback.as_str())
                    .send()
                    .await
                    .expect("the callback answers");
                let status = page.status();
                assert!(
                    status.is_success(),
                    "{} not connected: {status} {}",
                    account.email,
                    page.text().await.unwrap_or_default()
                );
            }
        })
        .await;
}

/// Every account is stored, its tokens encrypted by the worker's vault (key id, nonce,
/// ciphertext), with a refresh token.
async fn check_vault(tenants: &[mongodb::Database]) {
    let mut stored = 0;
    for tenant in tenants {
        let mut cursor = tenant
            .collection::<bson::Document>("googleauths")
            .find(doc! {})
            .await
            .expect("googleauths");
        while let Some(document) = cursor.next().await {
            let document = document.expect("document");
            for field in ["accessToken", "refreshToken"] {
                let token = document.get_document(field).expect("an encrypted token");
                assert_eq!(token.get_str("keyId"), Ok("bench"), "{field} key id");
                assert!(token.get_binary_generic("ciphertext").is_ok(), "{field}");
            }
            stored += 1;
        }
    }
    assert_eq!(stored, ACCOUNTS, "stored accounts");
}

/// The token of a reply, if issued.
fn issued(payload: &[u8]) -> Option<(String, chrono::DateTime<chrono::Utc>)> {
    match serde_json::from_slice(payload) {
        Ok(AccessTokenReply::Issued {
            access_token,
            expires_at,
        }) => Some((access_token, expires_at)),
        _ => None,
    }
}

/// Asks once for every account (filling the cache); returns each account's token, the size
/// of a real reply, and the floor's canned reply: the same reply with the token's characters
/// replaced, so it has the same size.
async fn warm_cache(
    client: &Client,
    subject: &str,
    accounts: &[Account],
) -> (Vec<String>, usize, String) {
    let replies: Vec<Vec<u8>> = futures::stream::iter(accounts)
        .map(|account| async move {
            client
                .request(subject.to_owned(), request_body(account).into())
                .await
                .expect("the oauth-worker answers")
                .payload
                .to_vec()
        })
        .buffered(CALLERS)
        .collect()
        .await;
    let tokens: Vec<String> = replies
        .iter()
        .zip(accounts)
        .map(|(reply, account)| {
            issued(reply)
                .unwrap_or_else(|| {
                    panic!(
                        "no token for {}: {}",
                        account.email,
                        String::from_utf8_lossy(reply)
                    )
                })
                .0
        })
        .collect();
    let (token, expires_at) = issued(&replies[0]).expect("issued");
    let canned = serde_json::to_string(&AccessTokenReply::Issued {
        access_token: "x".repeat(token.len()),
        expires_at,
    })
    .expect("reply");
    (tokens, replies[0].len(), canned)
}

/// The floor's echo processes: this binary again, twice, like the two replicas.
/// With `redis` (its URL and a key), each request first GETs the key, as the worker's cache
/// hit does, on a task of its own like the worker's requests.
fn start_floor_echoes(
    nats_url: &str,
    floor_ns: &Namespace,
    reply: &str,
    redis: Option<(&str, &str)>,
) -> Vec<Child> {
    let exe = std::env::current_exe().expect("bench binary path");
    let creds = support::identity_creds(Identity::OAuthWorker, floor_ns.prefix());
    let [_, ca] = support::driver_settings();
    let (redis_url, redis_key) = redis.unwrap_or_default();
    (0..2)
        .map(|_| {
            Command::new(&exe)
                .arg(FLOOR_ECHO_ARG)
                .env("FLOOR_REDIS_URL", redis_url)
                .env("FLOOR_REDIS_KEY", redis_key)
                .env("FLOOR_REDIS_CA", &e2e::nats_auth::auth().ca)
                .env("FLOOR_NATS_URL", nats_url)
                .env("FLOOR_NATS_CREDS", &creds)
                .env("FLOOR_NATS_CA", &ca.1)
                .env("FLOOR_SUBJECT", floor_ns.access_token_requested())
                .env("FLOOR_REPLY", reply)
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("floor echo starts")
        })
        .collect()
}

/// Until the floor answers (the echo processes subscribe after they start).
async fn wait_floor(client: &Client, subject: &str, account: &Account) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let asked = tokio::time::timeout(
            Duration::from_secs(1),
            client.request(subject.to_owned(), request_body(account).into()),
        )
        .await;
        if let Ok(Ok(reply)) = asked
            && issued(&reply.payload).is_some()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the floor echo does not answer on {subject}");
}

fn floor_setting(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is set by the bench"))
}

/// A floor echo: answers every request of the subject's queue group with the canned reply;
/// with `FLOOR_REDIS_URL`, after one Redis GET of `FLOOR_REDIS_KEY`.
async fn floor_echo_process() {
    let nats = support::connect_with(
        &floor_setting("FLOOR_NATS_URL"),
        &floor_setting("FLOOR_NATS_CREDS"),
        &floor_setting("FLOOR_NATS_CA"),
    )
    .await;
    let reply = axum::body::Bytes::from(floor_setting("FLOOR_REPLY"));
    let redis_url = floor_setting("FLOOR_REDIS_URL");
    let redis = if redis_url.is_empty() {
        None
    } else {
        let client = support::redis_client(&redis_url, &floor_setting("FLOOR_REDIS_CA"));
        let manager = redis::aio::ConnectionManager::new(client)
            .await
            .expect("redis");
        Some((manager, floor_setting("FLOOR_REDIS_KEY")))
    };
    let mut requests = nats
        .queue_subscribe(floor_setting("FLOOR_SUBJECT"), OAUTH_WORKER_QUEUE.into())
        .await
        .expect("subscribe");
    while let Some(message) = requests.next().await {
        let Some(to) = message.reply else { continue };
        match &redis {
            None => {
                let _ = nats.publish(to, reply.clone()).await;
            }
            Some((manager, key)) => {
                let (nats, mut manager) = (nats.clone(), manager.clone());
                let (key, reply) = (key.clone(), reply.clone());
                tokio::spawn(async move {
                    let entry: Option<String> =
                        redis::AsyncCommands::get(&mut manager, &key).await.ok();
                    if entry.is_some() {
                        let _ = nats.publish(to, reply).await;
                    }
                });
            }
        }
    }
}

/// Copies the cache entry of `account` (written by the worker) to `key`, for the diagnostic
/// floor to read an entry of the real size.
async fn copy_cache_entry(redis_url: &str, namespace: &str, account: &Account, key: &str) {
    let mut redis = support::redis_client(redis_url, &e2e::nats_auth::auth().ca)
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let source = service_kit::redis::RedisKeys::new(namespace)
        .access_token(&account.subaccount, &account.email);
    let entry: String = redis::AsyncCommands::get(&mut redis, &source)
        .await
        .expect("a cached entry");
    let () = redis::AsyncCommands::set(&mut redis, key, entry)
        .await
        .expect("copy");
}

/// `CALLERS` tasks ask in a loop for `duration`, each going round the accounts from its own
/// offset; a request counts when it is answered with an issued token.
async fn load(
    client: &Client,
    subject: &str,
    accounts: &Arc<Vec<Account>>,
    duration: Duration,
) -> Summary {
    let tasks: Vec<_> = (0..CALLERS)
        .map(|caller| {
            let client = client.clone();
            let subject = subject.to_owned();
            let accounts = accounts.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0;
                let mut next = caller * accounts.len() / CALLERS;
                let deadline = Instant::now() + duration;
                while Instant::now() < deadline {
                    let body = request_body(&accounts[next % accounts.len()]);
                    next += 1;
                    let started = Instant::now();
                    let ok = match client.request(subject.clone(), body.into()).await {
                        Ok(reply) => issued(&reply.payload).is_some(),
                        Err(_) => false,
                    };
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
    Summary::gather(tasks).await
}

/// The oauth-workers' counters that matter here, summed over both replicas.
#[derive(Debug, Default, Clone, Copy)]
struct WorkerCounters {
    memory: f64,
    cache: f64,
    database: f64,
    other_replica: f64,
    refreshed: f64,
}

async fn worker_metrics(http: &reqwest::Client, ports: &[u16]) -> WorkerCounters {
    let mut total = WorkerCounters::default();
    for port in ports {
        let text = support::scrape_metrics(http, *port).await;
        total.memory += support::metric(&text, "access_tokens_total", r#"source="memory""#);
        total.cache += support::metric(&text, "access_tokens_total", r#"source="cache""#);
        total.database += support::metric(&text, "access_tokens_total", r#"source="database""#);
        total.other_replica +=
            support::metric(&text, "access_tokens_total", r#"source="other_replica""#);
        total.refreshed +=
            support::metric(&text, "token_refreshes_total", r#"outcome="refreshed""#);
    }
    total
}

/// Refreshes per replica, for the report.
async fn refreshes_per_replica(http: &reqwest::Client, ports: &[u16]) -> Vec<f64> {
    let mut out = Vec::new();
    for port in ports {
        let text = support::scrape_metrics(http, *port).await;
        out.push(support::metric(
            &text,
            "token_refreshes_total",
            r#"outcome="refreshed""#,
        ));
    }
    out
}

/// What one mass expiry measured.
struct ExpiryReport {
    wall: Duration,
    latencies: Summary,
    provider_single: Duration,
    provider_floor: Duration,
    refreshes_per_replica: Vec<f64>,
    sources: WorkerCounters,
    /// CPU seconds of each accounted process during the burst.
    cpu: Vec<f64>,
    /// How many accounts the provider saw refreshed how many times (`{1: 1000}` is right).
    per_account: BTreeMap<u64, usize>,
    /// What was wrong: the bench fails unless this is empty.
    problems: Vec<String>,
}

impl ExpiryReport {
    fn print(&self) {
        let l = PROVIDER_LATENCY.as_secs_f64();
        let measured = self.provider_single.as_secs_f64();
        let concurrency = 2 * oauth_worker::rpc::MAX_IN_FLIGHT;
        let waves = ACCOUNTS.div_ceil(concurrency);
        let ideal = waves as f64 * measured;
        let wall = self.wall.as_secs_f64();
        println!();
        println!(
            "mass expiry: {ACCOUNTS} accounts expire at once, {CALLERS_PER_ACCOUNT} callers each \
             ({} requests at once), two replicas",
            ACCOUNTS * CALLERS_PER_ACCOUNT
        );
        if !self.problems.is_empty() {
            println!("  FAILED: {}", self.problems.join("; "));
        }
        println!(
            "  refreshes at the provider: {} (refreshes of an account → accounts: {:?}); by \
             replica: {}",
            self.per_account
                .iter()
                .map(|(r, a)| r * *a as u64)
                .sum::<u64>(),
            self.per_account,
            self.refreshes_per_replica
                .iter()
                .map(|r| format!("{r:.0}"))
                .collect::<Vec<_>>()
                .join(" + ")
        );
        println!(
            "  answers: {:.0} refreshed here, {:.0} after another's refresh (waited), {:.0} from \
             MongoDB, {:.0} from the Redis cache, {:.0} from memory",
            self.sources.refreshed,
            self.sources.other_replica,
            self.sources.database,
            self.sources.cache,
            self.sources.memory
        );
        println!(
            "  provider latency L: configured {:.0} ms, measured {:.1} ms (one refresh request, \
             median of 20)",
            l * 1000.0,
            measured * 1000.0
        );
        println!(
            "  provider floor: {ACCOUNTS} refresh requests straight to the fake at concurrency \
             {concurrency}: {:.0} ms",
            self.provider_floor.as_secs_f64() * 1000.0
        );
        println!("  {:<58} {:>9}", "", "ms");
        println!(
            "  {:<58} {:>9.0}",
            "wall time, first request → last reply",
            wall * 1000.0
        );
        println!(
            "  {:<58} {:>9.1}",
            "  ÷ configured L (the bound: every refresh in parallel)",
            wall / l
        );
        println!(
            "  {:<58} {:>9.1}",
            format!("  ÷ ideal at the service's concurrency ({waves} × measured L)"),
            wall / ideal
        );
        println!(
            "  {:<58} {:>9.1}",
            "  ÷ provider floor (same concurrency, from the bench)",
            wall / self.provider_floor.as_secs_f64()
        );
        println!(
            "  per caller: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            self.latencies.percentile(0.50).as_secs_f64() * 1000.0,
            self.latencies.percentile(0.99).as_secs_f64() * 1000.0,
            self.latencies
                .latencies
                .last()
                .copied()
                .unwrap_or_default()
                .as_secs_f64()
                * 1000.0
        );
    }
}

/// The fake's `GET /_fake/state`.
async fn fake_state(http: &reqwest::Client, google: &str) -> Value {
    http.get(format!("{google}/_fake/state"))
        .send()
        .await
        .expect("fake state")
        .json()
        .await
        .expect("fake state JSON")
}

async fn set_provider_latency(http: &reqwest::Client, google: &str, latency: Duration) {
    let set = http
        .post(format!("{google}/_fake/faults"))
        .json(&serde_json::json!({ "latencyMs": latency.as_millis() as u64 }))
        .send()
        .await
        .expect("fake faults");
    assert!(set.status().is_success(), "latency not set");
}

/// One refresh request straight to the provider, answered `invalid_grant` (an unknown refresh
/// token) after the same latency and client authentication as a real one.
async fn provider_probe(http: &reqwest::Client, google: &str) -> Duration {
    let started = Instant::now();
    let answer = http
        .post(format!("{google}{}", fake_google::TOKEN_PATH))
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", "1//bench-probe-unknown"),
        ])
        .send()
        .await
        .expect("token endpoint");
    let _ = answer.bytes().await;
    started.elapsed()
}

#[allow(clippy::too_many_arguments)]
async fn mass_expiry(
    nats_url: &str,
    namespace: &str,
    http: &reqwest::Client,
    google: &str,
    worker_ports: &[u16],
    accounts: &Arc<Vec<Account>>,
    tenants: &[mongodb::Database],
    old_tokens: &[String],
    redis_url: &str,
    pids: &[u32],
) -> Result<(ExpiryReport, Vec<String>), String> {
    // The provider's own latency, measured now.
    set_provider_latency(http, google, PROVIDER_LATENCY).await;
    let mut singles = Vec::new();
    for _ in 0..20 {
        singles.push(provider_probe(http, google).await);
    }
    singles.sort_unstable();
    let provider_single = singles[singles.len() / 2];
    let started = Instant::now();
    futures::stream::iter(0..ACCOUNTS)
        .for_each_concurrent(2 * oauth_worker::rpc::MAX_IN_FLIGHT, |_| async {
            provider_probe(http, google).await;
        })
        .await;
    let provider_floor = started.elapsed();

    // Expire every account's token at one instant.
    let past = bson::DateTime::from_millis(bson::DateTime::now().timestamp_millis() - 1000);
    let mut expired = 0;
    for tenant in tenants {
        expired += tenant
            .collection::<bson::Document>("googleauths")
            .update_many(doc! {}, doc! { "$set": { "expiresAt": past } })
            .await
            .map_err(|e| format!("expiring: {e}"))?
            .modified_count;
    }
    if expired != ACCOUNTS as u64 {
        return Err(format!("{expired} stored tokens expired, not {ACCOUNTS}"));
    }
    let keys = service_kit::redis::RedisKeys::new(namespace);
    let mut redis = support::redis_client(redis_url, &e2e::nats_auth::auth().ca)
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| format!("redis: {e}"))?;
    let mut pipe = redis::pipe();
    for account in accounts.iter() {
        pipe.del(keys.access_token(&account.subaccount, &account.email))
            .ignore();
    }
    let () = pipe
        .query_async(&mut redis)
        .await
        .map_err(|e| format!("redis: {e}"))?;
    // And what the replicas hold in memory runs out (ACCESS_TOKEN_MEMORY_TTL).
    tokio::time::sleep(MEMORY_TTL + Duration::from_millis(500)).await;

    let before_state = fake_state(http, google).await;
    let before_workers = worker_metrics(http, worker_ports).await;
    let before_replicas = refreshes_per_replica(http, worker_ports).await;

    // 10 callers per account, over 10 connections (caller c of every account on connection
    // c), in an interleaved order: account-major order would hand each replica a few accounts'
    // whole bursts.
    let mut clients = Vec::new();
    for _ in 0..CALLERS_PER_ACCOUNT {
        clients.push(support::connect_as(nats_url, Identity::TokenClient, namespace).await);
    }
    let total = ACCOUNTS * CALLERS_PER_ACCOUNT;
    let subject = Namespace::new(namespace)
        .expect("namespace")
        .access_token_requested();
    let (go, gate) = tokio::sync::watch::channel(false);
    let start = Arc::new(std::sync::OnceLock::<Instant>::new());
    let tasks: Vec<_> = (0..total)
        // 7919 is prime to 10,000: a permutation that spreads each account's callers.
        .map(|k| (k * 7919) % total)
        .map(|job| {
            let (account, caller) = (job / CALLERS_PER_ACCOUNT, job % CALLERS_PER_ACCOUNT);
            let client = clients[caller].clone();
            let subject = subject.clone();
            let body = request_body(&accounts[account]);
            let mut gate = gate.clone();
            let start = start.clone();
            tokio::spawn(async move {
                let _ = gate.wait_for(|go| *go).await;
                let reply = client.request(subject, body.into()).await;
                let at = start.get().map(Instant::elapsed).unwrap_or_default();
                let outcome = match reply {
                    Ok(reply) => issued(&reply.payload)
                        .ok_or_else(|| String::from_utf8_lossy(&reply.payload).into_owned()),
                    Err(e) => Err(format!("request failed: {e}")),
                };
                (account, outcome, at)
            })
        })
        .collect();
    let (results, cpu) = cpu_during(pids, async {
        let _ = start.set(Instant::now());
        let _ = go.send(true);
        let mut results = Vec::with_capacity(total);
        for task in tasks {
            results.push(task.await.expect("caller task"));
        }
        results
    })
    .await;
    let mut tokens: Vec<Option<String>> = vec![None; ACCOUNTS];
    let mut latencies = Vec::new();
    let mut failures: BTreeMap<String, usize> = BTreeMap::new();
    let mut mismatched = 0;
    let now = chrono::Utc::now();
    for (account, outcome, at) in results {
        latencies.push(at);
        match outcome {
            Ok((token, expires_at)) => {
                if expires_at <= now {
                    *failures.entry("an expired token".into()).or_default() += 1;
                }
                match &tokens[account] {
                    Some(seen) if *seen != token => mismatched += 1,
                    Some(_) => {}
                    None => tokens[account] = Some(token),
                }
            }
            Err(problem) => {
                let kind: String = problem.chars().take(120).collect();
                *failures.entry(kind).or_default() += 1;
            }
        }
    }
    latencies.sort_unstable();
    let wall = latencies.last().copied().unwrap_or_default();
    let after_state = fake_state(http, google).await;
    let after_workers = worker_metrics(http, worker_ports).await;
    let after_replicas = refreshes_per_replica(http, worker_ports).await;
    set_provider_latency(http, google, Duration::ZERO).await;

    let mut problems = Vec::new();
    if !failures.is_empty() {
        problems.push(format!("callers without a valid token: {failures:?}"));
    }
    if mismatched > 0 {
        problems.push(format!(
            "{mismatched} callers got another token than the other callers of their account"
        ));
    }
    // Exactly one refresh per account at the provider.
    let count = |state: &Value, account: &str| {
        state["refreshRequestsByAccount"][account]
            .as_u64()
            .unwrap_or(0)
    };
    let mut per_account: BTreeMap<u64, usize> = BTreeMap::new();
    for account in accounts.iter() {
        let refreshes = count(&after_state, &account.email) - count(&before_state, &account.email);
        *per_account.entry(refreshes).or_default() += 1;
    }
    if per_account.len() != 1 || !per_account.contains_key(&1) {
        problems.push(format!(
            "refreshes per account at the provider (refreshes → accounts): {per_account:?}"
        ));
    }
    let refresh_requests = |state: &Value| {
        state["tokenRequests"]["refresh_token"]
            .as_u64()
            .unwrap_or(0)
    };
    let all_refreshes = refresh_requests(&after_state) - refresh_requests(&before_state);
    if all_refreshes != ACCOUNTS as u64 {
        problems.push(format!(
            "{all_refreshes} refresh requests reached the provider, not {ACCOUNTS}"
        ));
    }
    // New, and accepted by the provider.
    let new_tokens: Vec<String> = tokens.into_iter().map(Option::unwrap_or_default).collect();
    let reused = new_tokens
        .iter()
        .zip(old_tokens)
        .filter(|(new, old)| new == old)
        .count();
    if reused > 0 {
        problems.push(format!("{reused} accounts got their expired token back"));
    }
    let rejected = futures::stream::iter(new_tokens.iter().zip(accounts.iter()))
        .map(|(token, account)| async move {
            let me: Option<Value> = match http
                .get(format!("{google}{}", fake_google::USERINFO_PATH))
                .bearer_auth(token)
                .send()
                .await
            {
                Ok(r) if r.status().is_success() => r.json().await.ok(),
                _ => None,
            };
            me.is_none_or(|me| me["email"] != account.email.as_str())
        })
        .buffer_unordered(CALLERS)
        .filter(|rejected| std::future::ready(*rejected))
        .count()
        .await;
    if rejected > 0 {
        problems.push(format!(
            "the provider does not accept {rejected} of the new tokens"
        ));
    }
    let sources = WorkerCounters {
        memory: after_workers.memory - before_workers.memory,
        cache: after_workers.cache - before_workers.cache,
        database: after_workers.database - before_workers.database,
        other_replica: after_workers.other_replica - before_workers.other_replica,
        refreshed: after_workers.refreshed - before_workers.refreshed,
    };
    Ok((
        ExpiryReport {
            wall,
            latencies: Summary {
                latencies,
                errors: 0,
                elapsed: wall,
            },
            provider_single,
            provider_floor,
            refreshes_per_replica: after_replicas
                .iter()
                .zip(&before_replicas)
                .map(|(a, b)| a - b)
                .collect(),
            sources,
            cpu,
            per_account,
            problems,
        },
        new_tokens,
    ))
}
