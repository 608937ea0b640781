//! Benchmark of the metadata-worker against its floor, measured in the same run.
//!
//! - **drain**: 20,000 connection-succeeded events for 2,000 connectors (2,000 tenant
//!   databases) are preloaded into JetStream; then the release metadata-worker starts and the
//!   time until its consumer has nothing pending or unacknowledged gives events/s.
//! - **floor**: the same 20,000 conditional updates (the worker's own filter and update
//!   pipeline, `metadata_worker::metadata::succeeded_write`, on the same documents, metadata
//!   reset in between) issued straight from the mongodb driver at the
//!   worker's concurrency: what any design must pay for the writes themselves.
//! - **latency**: events published at a steady 200/s for `BENCH_SECONDS` (default 10) while
//!   the worker runs; each one's time from publish until its metadata is visible in MongoDB
//!   (polled every millisecond), p50/p99.
//!
//! Run: `cargo bench -p e2e --bench metadata_drain`. The goal (issue 17): the drain from ready
//! at ≥ 80 % of the floor.
//!
//! CI: `BENCH_SHORT=1` drains 5,000 events for 500 connectors, measures latency for 2 s, and
//! exits non-zero when the ratio is below the goal minus the noise (`SHORT_NOISE`).

mod support;

use std::time::{Duration, Instant};

use async_nats::jetstream;
use futures::StreamExt;
use mongodb::bson::{Document, doc};
use schemas::events::ConnectionSucceeded;
use schemas::subjects::{METADATA_CONSUMER, Namespace};
use schemas::{Envelope, SubaccountId};
use support::{build_release_binaries, cpu_seconds, peak_rss_kib, spawn, wait_ready};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CONNECTORS: usize = 2_000;
/// Connectors in the short mode (`BENCH_SHORT=1`, for CI).
const SHORT_CONNECTORS: usize = 500;
/// Drain from ready as a share of the floor's rate: the goal.
const GOAL: f64 = 0.80;
/// How far the short mode's ratio moves between runs of the same build, measured on the 2-core
/// development machine: 3 `BENCH_SHORT=1` runs in a row gave 83.8, 90.0 and 94.9 % (11
/// points; the full mode 83-87 % over two runs). Below `GOAL - SHORT_NOISE` (69 %) the short
/// mode fails.
const SHORT_NOISE: f64 = 0.11;
const EVENTS_PER_CONNECTOR: usize = 10;
const CONCURRENCY: usize = 32;
const STEADY_RATE: u64 = 200;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "metadata drain benchmark: run it with `cargo bench -p e2e --bench metadata_drain`"
        );
        return;
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(bench());
}

fn subaccount(i: usize) -> SubaccountId {
    SubaccountId::parse(&format!("{:024x}", 0xbe00_0000_u64 + i as u64)).expect("id")
}

/// `2025-10-05T12:00:0N.000Z` style, increasing with `n`.
fn connected_at(n: usize) -> String {
    let base = chrono::DateTime::parse_from_rfc3339("2025-10-05T12:00:00Z")
        .expect("time")
        .with_timezone(&chrono::Utc);
    (base + chrono::Duration::milliseconds(n as i64 * 1000))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn event(i: usize, n: usize) -> Envelope<ConnectionSucceeded> {
    Envelope::new(
        subaccount(i),
        uuid::Uuid::now_v7(),
        ConnectionSucceeded {
            calendar_id: format!("{:024x}", i),
            user_email: "user@example.com".into(),
            google_email: format!("g{i}@gmail.example"),
            connected_at: connected_at(n),
        },
    )
}

async fn bench() {
    let short = std::env::var_os("BENCH_SHORT").is_some_and(|v| v == "1");
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if short { 2 } else { 10 });
    let connectors = if short { SHORT_CONNECTORS } else { CONNECTORS };
    let bins = build_release_binaries();
    let infra = e2e::shared::shared();
    let namespace = format!("benchmeta{}", std::process::id());
    let template = format!("{namespace}_{{subaccountId}}");
    let db_name = |i: usize| format!("{namespace}_{}", subaccount(i));
    let mongo = mongodb::Client::with_uri_str(infra.mongo.uri())
        .await
        .expect("mongo");

    println!("seeding {connectors} connectors in {connectors} tenant databases ...");
    // The worker's indexes exist already, as they would in a running deployment.
    support::seed_tenant_connectors(
        (0..connectors).map(|i| (mongo.database(&db_name(i)), subaccount(i))),
        CONCURRENCY,
    )
    .await;

    // Round-robin over connectors, each connector's events in time order.
    let order: Vec<(usize, usize)> = (0..EVENTS_PER_CONNECTOR)
        .flat_map(|n| (0..connectors).map(move |i| (i, n)))
        .collect();
    let total = order.len();

    // Floor: the worker's conditional update, straight from the driver.
    println!("floor: {total} conditional updates at concurrency {CONCURRENCY} ...");
    let mongo_pid = infra.mongo.pid();
    let mongo_cpu_before = mongo_pid.map(cpu_seconds).unwrap_or_default();
    let started = Instant::now();
    support::floor_updates(&mongo, order.iter().copied(), CONCURRENCY, &db_name, event).await;
    let floor_elapsed = started.elapsed();
    let floor_mongo_cpu = mongo_pid.map(cpu_seconds).unwrap_or_default() - mongo_cpu_before;
    let floor_rate = total as f64 / floor_elapsed.as_secs_f64();

    // Reset, then preload the events.
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
    let nats = support::driver_nats(&infra.nats.url()).await;
    let js = jetstream::new(nats.clone());
    let ns = Namespace::new(&namespace).expect("ns");
    let mut env = service_kit::Env::from_pairs([("NATS_NAMESPACE", namespace.as_str())]);
    let common = service_kit::CommonConfig::from_env(&mut env);
    env.finish().expect("config");
    service_kit::nats::ensure_streams(&js, &ns, &common.streams)
        .await
        .expect("streams");
    println!("preloading {total} events into JetStream ...");
    futures::stream::iter(order.iter().copied())
        .for_each_concurrent(256, |(i, n)| {
            let js = js.clone();
            let ns = ns.clone();
            async move {
                service_kit::nats::publish_event(&js, &ns, &event(i, n))
                    .await
                    .expect("publish");
            }
        })
        .await;

    println!("drain: starting the metadata-worker ...");
    let health = e2e::process::free_port();
    let settings = vec![
        ("NATS_URL".to_owned(), infra.nats.url()),
        ("NATS_NAMESPACE".to_owned(), namespace.clone()),
        ("MONGODB_URI".to_owned(), infra.mongo.uri()),
        ("MONGODB_DATABASE_TEMPLATE".to_owned(), template.clone()),
        ("REDIS_URL".to_owned(), infra.redis.url()),
        ("REDIS_KEY_PREFIX".to_owned(), namespace.clone()),
        ("RUST_LOG".to_owned(), "warn".to_owned()),
        ("METADATA_CONCURRENCY".to_owned(), CONCURRENCY.to_string()),
    ];
    let extra = [("METADATA_WORKER_HEALTH_ADDR", format!("127.0.0.1:{health}"))];
    let mongo_cpu_before = mongo_pid.map(cpu_seconds).unwrap_or_default();
    let started = Instant::now();
    let mut worker = spawn("metadata-worker", &bins, &settings, &extra);
    let worker_pid = worker.id();
    let http = reqwest::Client::new();
    wait_ready(&http, "metadata-worker", health).await;
    let ready_after = started.elapsed();
    let stream = js.get_stream(ns.events_stream()).await.expect("stream");
    loop {
        let mut consumer: jetstream::consumer::PullConsumer = stream
            .get_consumer(METADATA_CONSUMER)
            .await
            .expect("consumer");
        let info = consumer.info().await.expect("info");
        if info.num_pending == 0
            && info.num_ack_pending == 0
            && info.delivered.stream_sequence >= total as u64
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drain_elapsed = started.elapsed();
    let worker_cpu = cpu_seconds(worker_pid);
    let drain_mongo_cpu = mongo_pid.map(cpu_seconds).unwrap_or_default() - mongo_cpu_before;
    let drain_rate = total as f64 / drain_elapsed.as_secs_f64();
    // Every connector holds its newest event.
    let last = connected_at(EVENTS_PER_CONNECTOR - 1);
    for i in [0, connectors / 2, connectors - 1] {
        let stored = mongo
            .database(&db_name(i))
            .collection::<Document>("connectorsubaccount")
            .find_one(doc! {})
            .await
            .expect("read")
            .expect("connector");
        assert_eq!(
            stored
                .get_document("metadata")
                .and_then(|m| m.get_str("connectedAt"))
                .expect("metadata"),
            last,
            "connector {i} does not hold its newest event"
        );
    }

    // Latency at a steady rate.
    println!("latency: {STEADY_RATE} events/s for {seconds}s ...");
    let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / STEADY_RATE));
    let mut waits = Vec::new();
    let count = (STEADY_RATE * seconds) as usize;
    for k in 0..count {
        ticker.tick().await;
        let i = (k * 7919) % connectors;
        let e = event(i, EVENTS_PER_CONNECTOR + k);
        let expected = e.payload.connected_at.clone();
        let collection = mongo
            .database(&db_name(i))
            .collection::<Document>("connectorsubaccount");
        let js = js.clone();
        let ns = ns.clone();
        waits.push(tokio::spawn(async move {
            let published = Instant::now();
            service_kit::nats::publish_event(&js, &ns, &e)
                .await
                .expect("publish");
            loop {
                let stored = collection
                    .find_one(doc! { "metadata.connectedAt": &expected })
                    .projection(doc! { "_id": 1 })
                    .await
                    .expect("poll");
                if stored.is_some() {
                    return published.elapsed();
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }));
    }
    let mut latencies = Vec::new();
    for wait in waits {
        latencies.push(wait.await.expect("poller"));
    }
    latencies.sort_unstable();
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];

    println!();
    println!("{total} events for {connectors} connectors, concurrency {CONCURRENCY}");
    println!(
        "{:<48} {:>10} {:>10} {:>10}",
        "", "events/s", "seconds", "vs floor"
    );
    println!(
        "{:<48} {:>10.0} {:>10.2} {:>9.0}%",
        "floor (conditional updates from the driver)",
        floor_rate,
        floor_elapsed.as_secs_f64(),
        100.0
    );
    println!(
        "{:<48} {:>10.0} {:>10.2} {:>9.0}%",
        "metadata-worker drain (from process start)",
        drain_rate,
        drain_elapsed.as_secs_f64(),
        100.0 * drain_rate / floor_rate
    );
    let net = total as f64 / (drain_elapsed - ready_after).as_secs_f64();
    println!(
        "{:<48} {:>10.0} {:>10.2} {:>9.0}%",
        "metadata-worker drain (from ready)",
        net,
        (drain_elapsed - ready_after).as_secs_f64(),
        100.0 * net / floor_rate
    );
    println!();
    println!(
        "CPU per event, µs: MongoDB-wire server {:.0} (floor) vs {:.0} (drain); metadata-worker {:.0}",
        floor_mongo_cpu * 1e6 / total as f64,
        drain_mongo_cpu * 1e6 / total as f64,
        worker_cpu * 1e6 / total as f64
    );
    println!(
        "publish → metadata visible at {STEADY_RATE} events/s ({} events): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        latencies.len(),
        pct(0.50).as_secs_f64() * 1000.0,
        pct(0.99).as_secs_f64() * 1000.0,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1000.0
    );
    println!(
        "metadata-worker peak RSS: {:.1} MiB",
        peak_rss_kib(worker_pid) as f64 / 1024.0
    );
    e2e::process::terminate(&mut worker);
    for i in 0..connectors {
        let _ = mongo.database(&db_name(i)).drop().await;
    }
    let threshold = GOAL - SHORT_NOISE;
    let ratio = net / floor_rate;
    println!();
    println!(
        "drain (from ready) vs floor: {:.1} % (goal {:.0} %: {})",
        100.0 * ratio,
        100.0 * GOAL,
        if ratio >= GOAL { "met" } else { "NOT met" }
    );
    if short && ratio < threshold {
        println!(
            "FAILED: below the goal minus the noise ({:.0} %)",
            100.0 * threshold
        );
        std::process::exit(1);
    }
}
