//! Fair scheduling between tenants for one durable consumer.
//!
//! Without it the runner serves one FIFO: a tenant that floods the stream sits in front of
//! every other tenant's events. With a [`Fairness`] the runner pulls up to `buffer` messages
//! ahead into one FIFO per tenant (the subaccount id, the last token of every domain-event
//! subject) and starts them round-robin across tenants, at most `per_tenant_concurrency` of one
//! tenant and `concurrency` in all at a time. Order within a tenant is kept; a waiting message
//! is kept alive with progress acks; once started it is handled exactly as without fairness.
//!
//! The look-ahead is what makes it fair, and it is bounded: another tenant's event is pulled
//! only after the flood in front of it in the stream, so a flood longer than every replica's
//! buffer together still delays others (by what does not fit).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer::PullConsumer};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Consumable, ConsumerSpec, EventHandler, Worker};

/// How a consumer shares its capacity between tenants (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fairness {
    /// Messages of one tenant handled at the same time by one replica. Below the consumer's
    /// `concurrency`, so a flooding tenant always leaves slots to the others; the cluster-wide
    /// cap is replicas × this.
    pub per_tenant_concurrency: usize,
    /// Messages one replica holds, waiting and in flight: how far it looks ahead past a flood.
    /// Every one of them is unacknowledged, so the consumer's `max_ack_pending` must leave
    /// room for the buffers of all replicas (see [`Fairness::max_ack_pending`]).
    pub buffer: usize,
}

/// The names and texts of one fair consumer's two settings, for [`Fairness::read`].
#[derive(Debug, Clone, Copy)]
pub struct FairnessSettings {
    /// The consumer's concurrency setting, which bounds the per-tenant cap and the buffer.
    pub concurrency: &'static str,
    pub per_tenant: &'static str,
    pub per_tenant_default: &'static str,
    pub per_tenant_description: &'static str,
    pub buffer: &'static str,
    pub buffer_default: &'static str,
    pub buffer_description: &'static str,
}

/// The largest buffer a setting may ask for.
pub const MAX_BUFFER: usize = 100_000;

impl Fairness {
    /// Reads the per-tenant cap (1 to `concurrency`) and the buffer (`concurrency` to
    /// [`MAX_BUFFER`]), each checked by name.
    pub fn read(env: &mut crate::Env, settings: &FairnessSettings, concurrency: usize) -> Self {
        let per_tenant_concurrency: usize = env.value(
            settings.per_tenant,
            settings.per_tenant_default,
            settings.per_tenant_description,
        );
        if per_tenant_concurrency == 0 || per_tenant_concurrency > concurrency {
            env.problem(
                settings.per_tenant,
                format!("must be between 1 and {}", settings.concurrency),
            );
        }
        let buffer: usize = env.value(
            settings.buffer,
            settings.buffer_default,
            settings.buffer_description,
        );
        if buffer < concurrency || buffer > MAX_BUFFER {
            env.problem(
                settings.buffer,
                format!("must be between {} and {MAX_BUFFER}", settings.concurrency),
            );
        }
        Self {
            per_tenant_concurrency,
            buffer,
        }
    }
}

/// Replicas whose full buffers [`Fairness::max_ack_pending`] makes room for. Twice the
/// two-replica cluster shape; with more replicas the look-ahead is shared, not lost.
pub const BUFFERED_REPLICAS: i64 = 4;

impl Fairness {
    /// The `max_ack_pending` for a fair consumer: `headroom` for messages that wait for a
    /// redelivery delay (what the consumer needs without fairness) plus the full buffers of
    /// [`BUFFERED_REPLICAS`] replicas, so buffered messages never use up the pending limit and
    /// stop the server from handing out the events behind a flood.
    pub fn max_ack_pending(&self, headroom: i64) -> i64 {
        let buffer = i64::try_from(self.buffer).unwrap_or(i64::MAX);
        headroom.saturating_add(buffer.saturating_mul(BUFFERED_REPLICAS))
    }

    /// Why these numbers cannot work with `spec`, if they cannot.
    pub fn check(&self, spec: &ConsumerSpec) -> Result<(), String> {
        if self.per_tenant_concurrency == 0 {
            return Err("the per-tenant concurrency must be at least 1".into());
        }
        if self.per_tenant_concurrency > spec.concurrency {
            return Err(format!(
                "the per-tenant concurrency ({}) must not exceed the concurrency ({})",
                self.per_tenant_concurrency, spec.concurrency
            ));
        }
        if self.buffer < spec.concurrency {
            return Err(format!(
                "the buffer ({}) must hold at least the concurrency ({}): it counts the messages in flight too",
                self.buffer, spec.concurrency
            ));
        }
        if i64::try_from(self.buffer).unwrap_or(i64::MAX) > spec.max_ack_pending {
            return Err(format!(
                "the buffer ({}) exceeds the consumer's max_ack_pending ({}): the server would stop handing out messages before it fills",
                self.buffer, spec.max_ack_pending
            ));
        }
        Ok(())
    }
}

/// Messages waiting per tenant and the round-robin over them, with the in-flight caps. No I/O,
/// no clock: [`pull_fairly`] feeds it and starts what it hands out.
#[derive(Debug)]
pub(crate) struct TenantQueues<T> {
    /// Waiting messages per tenant, oldest first; a tenant with none waiting has no entry.
    waiting: HashMap<Arc<str>, VecDeque<T>>,
    /// The tenants that may start a message now (one waiting, below their cap), in turn order,
    /// each once. A tenant that starts one goes to the back.
    turns: VecDeque<Arc<str>>,
    /// Messages in flight per tenant; an idle tenant has no entry, so the map stays as small
    /// as the set of tenants with work.
    running: HashMap<Arc<str>, usize>,
    waiting_total: usize,
    running_total: usize,
    per_tenant: usize,
    concurrency: usize,
}

impl<T> TenantQueues<T> {
    pub(crate) fn new(concurrency: usize, per_tenant: usize) -> Self {
        let concurrency = concurrency.max(1);
        Self {
            waiting: HashMap::new(),
            turns: VecDeque::new(),
            running: HashMap::new(),
            waiting_total: 0,
            running_total: 0,
            per_tenant: per_tenant.clamp(1, concurrency),
            concurrency,
        }
    }

    /// Queues `message` behind the tenant's earlier ones.
    pub(crate) fn push(&mut self, tenant: &str, message: T) {
        self.waiting_total += 1;
        if let Some(queue) = self.waiting.get_mut(tenant) {
            queue.push_back(message);
            return;
        }
        let tenant: Arc<str> = Arc::from(tenant);
        self.waiting
            .insert(tenant.clone(), VecDeque::from([message]));
        if self.running_of(&tenant) < self.per_tenant {
            self.turns.push_back(tenant);
        }
    }

    /// The next message to start, if one may start: the oldest of the tenant whose turn it is.
    /// It counts as in flight until [`finished`](Self::finished) is called with its tenant.
    pub(crate) fn next(&mut self) -> Option<(Arc<str>, T)> {
        if self.running_total >= self.concurrency {
            return None;
        }
        let tenant = self.turns.pop_front()?;
        let queue = self.waiting.get_mut(&tenant)?;
        let message = queue.pop_front()?;
        let more = !queue.is_empty();
        if !more {
            self.waiting.remove(&tenant);
        }
        self.waiting_total -= 1;
        self.running_total += 1;
        let running = self.running.entry(tenant.clone()).or_insert(0);
        *running += 1;
        if more && *running < self.per_tenant {
            self.turns.push_back(tenant.clone());
        }
        Some((tenant, message))
    }

    /// A message of `tenant` that [`next`](Self::next) handed out is done.
    pub(crate) fn finished(&mut self, tenant: &Arc<str>) {
        let Some(running) = self.running.get_mut(tenant) else {
            return;
        };
        let was_at_cap = *running >= self.per_tenant;
        *running -= 1;
        if *running == 0 {
            self.running.remove(tenant);
        }
        self.running_total -= 1;
        if was_at_cap && self.waiting.contains_key(tenant) {
            self.turns.push_back(tenant.clone());
        }
    }

    /// Messages held: waiting and in flight.
    pub(crate) fn held(&self) -> usize {
        self.waiting_total + self.running_total
    }

    pub(crate) fn waiting_len(&self) -> usize {
        self.waiting_total
    }

    /// Every waiting message, in no particular order.
    pub(crate) fn waiting(&self) -> impl Iterator<Item = &T> {
        self.waiting.values().flatten()
    }

    /// Takes every waiting message out (in flight ones stay counted).
    pub(crate) fn take_waiting(&mut self) -> Vec<T> {
        self.turns.clear();
        self.waiting_total = 0;
        self.waiting.drain().flat_map(|(_, queue)| queue).collect()
    }

    fn running_of(&self, tenant: &str) -> usize {
        self.running.get(tenant).copied().unwrap_or(0)
    }

    /// Tenants with anything waiting or in flight (the maps hold no one else).
    #[cfg(test)]
    fn tenants(&self) -> usize {
        let mut all: std::collections::HashSet<&Arc<str>> = self.waiting.keys().collect();
        all.extend(self.running.keys());
        all.len()
    }
}

/// The tenant of a domain-event message: the last token of its subject
/// (`<prefix>.events.<family>.<fact>.<subaccountId>`).
fn tenant_of(subject: &str) -> &str {
    subject.rsplit('.').next().unwrap_or(subject)
}

/// How long one pull request waits on the server for messages. Short, as the pull carries no
/// heartbeat: a request lost with a connection is noticed within this (plus the client's 5 s).
const PULL_EXPIRES: Duration = Duration::from_secs(5);

/// On shutdown, how long to wait for messages of the last pull that may be on their way, so
/// they are handed back at once instead of after `ack_wait`.
const PULL_DRAIN: Duration = Duration::from_millis(200);

/// After a failed pull, the wait before the next.
const PULL_RETRY: Duration = Duration::from_secs(1);

/// [`super::run`]'s loop with fairness: pulls into the tenant queues while they hold fewer than
/// `buffer`, starts their messages on `tracker` as the caps allow, keeps the waiting ones alive
/// with progress acks, and on `shutdown` hands the waiting ones back (NAK, no delay) and
/// returns, leaving the ones in flight to finish on `tracker`.
pub(super) async fn pull_fairly<E, H>(
    consumer: &PullConsumer,
    worker: &Arc<Worker<H>>,
    fairness: Fairness,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) where
    E: Consumable,
    H: EventHandler<E>,
{
    let durable = worker.spec.durable;
    let concurrency = worker.spec.concurrency.max(1);
    let buffer = fairness.buffer.max(concurrency);
    let mut queues = TenantQueues::new(concurrency, fairness.per_tenant_concurrency);
    let (finished_tx, mut finished_rx) = mpsc::unbounded_channel::<Arc<str>>();
    // The same rhythm as a handler's progress acks: well inside `ack_wait`.
    let mut progress = tokio::time::interval_at(
        Instant::now() + worker.progress_interval(),
        worker.progress_interval(),
    );
    progress.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let buffered = metrics::gauge!("consumer_buffered_messages", "consumer" => durable);
    // One pull at a time, for exactly the room left: what it may still bring plus what is held
    // never exceeds `buffer`.
    let mut pull: Option<jetstream::consumer::pull::Batch> = None;
    let mut pull_again_at = Instant::now();
    tracing::info!(
        consumer = durable,
        per_tenant = queues.per_tenant,
        buffer,
        "scheduling fairly between tenants"
    );
    loop {
        while let Some((tenant, message)) = queues.next() {
            let worker = worker.clone();
            let finished = finished_tx.clone();
            tracker.spawn(async move {
                worker.process::<E>(message).await;
                // The scheduler may be gone (shutdown); nothing waits for this then.
                let _ = finished.send(tenant);
            });
        }
        buffered.set(queues.waiting_len() as f64);
        let room = buffer.saturating_sub(queues.held());
        if pull.is_none() && room > 0 && Instant::now() >= pull_again_at {
            match consumer
                .batch()
                .max_messages(room)
                .expires(PULL_EXPIRES)
                .messages()
                .await
            {
                Ok(batch) => pull = Some(batch),
                Err(e) => {
                    tracing::warn!(consumer = durable, error = %e, "cannot pull; retrying in 1 s");
                    pull_again_at = Instant::now() + PULL_RETRY;
                }
            }
        }
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            // Ready once per interval, so it cannot crowd out the rest, and first so that a
            // busy stretch cannot delay it past `ack_wait`.
            _ = progress.tick() => {
                for message in queues.waiting() {
                    let _ = message.ack_with(AckKind::Progress).await;
                }
            }
            Some(tenant) = finished_rx.recv() => queues.finished(&tenant),
            pulled = next_pulled(&mut pull) => match pulled {
                Some(Ok(message)) => {
                    let tenant = tenant_of(message.subject.as_str()).to_owned();
                    queues.push(&tenant, message);
                }
                Some(Err(e)) => {
                    tracing::warn!(consumer = durable, error = %e, "pull interrupted; renewing in 1 s");
                    pull = None;
                    pull_again_at = Instant::now() + PULL_RETRY;
                }
                // This pull brought all it asked for, or expired: the next one asks anew.
                None => pull = None,
            },
            () = tokio::time::sleep_until(pull_again_at), if pull.is_none() && room > 0 => {}
        }
    }
    // Stop pulling; what the last pull still brings is handed back with the rest.
    if let Some(mut batch) = pull.take() {
        while let Ok(Some(Ok(message))) = tokio::time::timeout(PULL_DRAIN, batch.next()).await {
            let tenant = tenant_of(message.subject.as_str()).to_owned();
            queues.push(&tenant, message);
        }
    }
    let waiting = queues.take_waiting();
    buffered.set(0.0);
    if !waiting.is_empty() {
        tracing::info!(
            consumer = durable,
            returned = waiting.len(),
            "returning buffered messages that had not started, for another replica"
        );
    }
    for message in waiting {
        let _ = message.ack_with(AckKind::Nak(None)).await;
    }
}

/// The next message of the pull in progress; never ready without one.
async fn next_pulled(
    pull: &mut Option<jetstream::consumer::pull::Batch>,
) -> Option<Result<jetstream::Message, async_nats::Error>> {
    match pull {
        Some(batch) => batch.next().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Starts everything that may start; returns `(tenant, message)` in start order.
    fn start_all(queues: &mut TenantQueues<u32>) -> Vec<(String, u32)> {
        std::iter::from_fn(|| queues.next())
            .map(|(t, m)| (t.to_string(), m))
            .collect()
    }

    fn tenant(name: &str) -> Arc<str> {
        Arc::from(name)
    }

    #[test]
    fn takes_turns_between_tenants_in_arrival_order_within_each() {
        let mut queues = TenantQueues::new(100, 100);
        for n in 1..=4 {
            queues.push("a", n);
        }
        queues.push("b", 10);
        queues.push("c", 20);
        queues.push("b", 11);
        let started = start_all(&mut queues);
        let order: Vec<_> = started.iter().map(|(t, m)| format!("{t}{m}")).collect();
        assert_eq!(order, ["a1", "b10", "c20", "a2", "b11", "a3", "a4"]);
    }

    #[test]
    fn a_flooding_tenant_gets_no_more_than_its_cap_and_others_go_first() {
        let mut queues = TenantQueues::new(4, 2);
        for n in 0..300 {
            queues.push("a", n);
        }
        assert_eq!(start_all(&mut queues), [("a".into(), 0), ("a".into(), 1)]);
        // The newcomer starts at once, in a slot the flood may not use.
        queues.push("b", 1000);
        assert_eq!(start_all(&mut queues), [("b".into(), 1000)]);
        // One of the flood finishes: the flood's next takes its place, no more.
        queues.finished(&tenant("a"));
        assert_eq!(start_all(&mut queues), [("a".into(), 2)]);
        assert!(queues.next().is_none());
    }

    #[test]
    fn never_more_than_the_concurrency_in_flight_and_a_freed_slot_goes_round_robin() {
        let mut queues = TenantQueues::new(3, 3);
        for n in 0..10 {
            queues.push("a", n);
        }
        assert_eq!(start_all(&mut queues).len(), 3, "a alone fills the slots");
        queues.push("b", 100);
        queues.push("c", 200);
        assert!(queues.next().is_none(), "no slot free");
        queues.finished(&tenant("a"));
        assert_eq!(start_all(&mut queues), [("b".into(), 100)]);
        queues.finished(&tenant("a"));
        assert_eq!(start_all(&mut queues), [("c".into(), 200)]);
        queues.finished(&tenant("b"));
        assert_eq!(start_all(&mut queues), [("a".into(), 3)]);
    }

    #[test]
    fn idle_tenants_leave_nothing_behind() {
        let mut queues = TenantQueues::new(8, 2);
        for t in 0..50 {
            queues.push(&format!("t{t}"), t);
        }
        let mut started = start_all(&mut queues);
        while !started.is_empty() {
            for (t, _) in &started {
                queues.finished(&tenant(t));
            }
            started = start_all(&mut queues);
        }
        assert_eq!(queues.held(), 0);
        assert_eq!(queues.tenants(), 0, "no tenant kept in the maps");
        assert!(queues.turns.is_empty());
    }

    #[test]
    fn take_waiting_hands_back_only_what_has_not_started() {
        let mut queues = TenantQueues::new(2, 1);
        for n in 0..5 {
            queues.push("a", n);
        }
        queues.push("b", 10);
        let started = start_all(&mut queues);
        assert_eq!(started.len(), 2);
        let mut back = queues.take_waiting();
        back.sort_unstable();
        assert_eq!(back, [1, 2, 3, 4]);
        assert_eq!(queues.held(), 2, "the two in flight still count");
        assert!(queues.next().is_none());
        queues.finished(&tenant("a"));
        queues.finished(&tenant("b"));
        assert_eq!(queues.held(), 0);
        assert_eq!(queues.tenants(), 0);
    }

    /// Random arrivals and completions: the caps hold at every step, every message starts
    /// exactly once, in arrival order within its tenant, and no tenant waits while a slot it
    /// may use is free.
    #[test]
    fn the_caps_and_the_order_hold_under_any_interleaving() {
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut random = move |below: u64| {
            // xorshift64*: deterministic, so a failure reproduces.
            seed ^= seed >> 12;
            seed ^= seed << 25;
            seed ^= seed >> 27;
            (seed.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) % below
        };
        let (concurrency, per_tenant) = (5, 2);
        let mut queues = TenantQueues::new(concurrency, per_tenant);
        let mut next_id = [0u32; 4];
        let mut started: Vec<Vec<u32>> = vec![Vec::new(); 4];
        let mut running: Vec<(String, u32)> = Vec::new();
        for _ in 0..20_000 {
            if random(2) == 0 && !running.is_empty() {
                let index = usize::try_from(random(running.len() as u64)).unwrap_or(0);
                let (t, _) = running.swap_remove(index);
                queues.finished(&tenant(&t));
            } else {
                let t = usize::try_from(random(4)).unwrap_or(0);
                queues.push(&format!("t{t}"), next_id[t]);
                next_id[t] += 1;
            }
            record(&mut started, &mut running, start_all(&mut queues));
            assert!(running.len() <= concurrency);
            for t in 0..4 {
                let name = format!("t{t}");
                let of_tenant = running.iter().filter(|(r, _)| *r == name).count();
                assert!(of_tenant <= per_tenant, "{name} has {of_tenant} in flight");
                let waiting = queues.waiting.get(name.as_str()).map_or(0, VecDeque::len);
                if waiting > 0 && running.len() < concurrency {
                    assert_eq!(of_tenant, per_tenant, "{name} waits below its cap");
                }
            }
            assert_eq!(queues.held(), queues.waiting_len() + running.len());
        }
        // Let everything finish.
        while !running.is_empty() {
            for (t, _) in std::mem::take(&mut running) {
                queues.finished(&tenant(&t));
            }
            record(&mut started, &mut running, start_all(&mut queues));
        }
        for (t, ids) in started.iter().enumerate() {
            let expected: Vec<u32> = (0..next_id[t]).collect();
            assert!(
                *ids == expected,
                "t{t} did not start each message once, in order"
            );
        }
        assert_eq!(queues.tenants(), 0);
    }

    #[test]
    fn settings_that_cannot_work_are_refused_with_the_reason() {
        let spec = ConsumerSpec {
            durable: "test",
            filter_subject: "t.events.>".into(),
            ack_wait: Duration::from_secs(30),
            max_deliver: 5,
            max_ack_pending: 1000,
            concurrency: 8,
            retry_delays: vec![Duration::from_secs(1)],
        };
        let fair = |per_tenant_concurrency, buffer| Fairness {
            per_tenant_concurrency,
            buffer,
        };
        assert_eq!(fair(2, 500).check(&spec), Ok(()));
        assert_eq!(fair(8, 8).check(&spec), Ok(()));
        for (bad, reason) in [
            (fair(0, 500), "at least 1"),
            (fair(9, 500), "must not exceed the concurrency"),
            (fair(2, 7), "at least the concurrency"),
            (fair(2, 1001), "max_ack_pending"),
        ] {
            let problem = bad.check(&spec).expect_err("refused");
            assert!(problem.contains(reason), "{bad:?}: {problem}");
        }
        assert_eq!(
            fair(2, 500).max_ack_pending(256),
            256 + 500 * BUFFERED_REPLICAS
        );
    }

    /// Notes what just started, per tenant `t<n>`, and that it is in flight.
    fn record(started: &mut [Vec<u32>], running: &mut Vec<(String, u32)>, new: Vec<(String, u32)>) {
        for (t, m) in new {
            let index = t[1..].parse::<usize>().expect("tenant t<n>");
            started[index].push(m);
            running.push((t, m));
        }
    }
}
