//! What the run saw, as it happened ([`Log`]), and the report written from it ([`Report`]).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::Options;
use super::users::Flow;

/// A step of a person's flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    /// `POST /api/connectors/{id}` before the run (no kills yet).
    Seed,
    /// `POST …/handlegooglecalendar` with `sendEmail: true`.
    Connect,
    /// The consent page at the (fake) Google.
    Consent,
    /// The browser following Google's redirect to our callback.
    Callback,
}

/// How a request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// An HTTP answer with this status.
    Answered(u16),
    /// The connection was refused: nothing listened.
    Refused,
    /// No answer: the connection broke, or the client's deadline passed.
    Unanswered(String),
}

impl Ending {
    pub fn is_answer(&self) -> bool {
        matches!(self, Ending::Answered(_))
    }
}

/// One HTTP request of a person.
#[derive(Debug, Clone)]
pub struct Request {
    pub flow: usize,
    pub step: Step,
    /// Sent as `X-Request-Id`: the services log it as `request_id`.
    pub request_id: uuid::Uuid,
    /// `X-Correlation-Id` of the answer, when there was one.
    pub correlation_id: Option<String>,
    /// Since the run started.
    pub started: Duration,
    pub elapsed: Duration,
    pub ending: Ending,
}

/// One kill and what followed.
#[derive(Debug, Clone)]
pub struct Kill {
    pub member: String,
    pub pid: Option<u32>,
    /// Since the run started.
    pub at: Duration,
    /// When it was started again, and when it was ready (`None`: it never was).
    pub restarted_at: Option<Duration>,
    pub ready_at: Option<Duration>,
    pub ready_error: Option<String>,
    /// Requests in flight at the kill: `step request_id (flow n)`.
    pub in_flight: Vec<String>,
}

/// A `/readyz` answer that took longer than a second.
#[derive(Debug, Clone)]
pub struct SlowProbe {
    pub target: String,
    pub at: Duration,
    pub elapsed: Duration,
    pub status: Option<u16>,
}

#[derive(Debug)]
struct Inner {
    kills: Vec<Kill>,
    requests: Vec<Request>,
    in_flight: HashMap<uuid::Uuid, (usize, Step, Duration)>,
    probes: usize,
    slowest_probe: Duration,
    slow_probes: Vec<SlowProbe>,
}

/// Everything recorded during the run; shared by the people, the killer and the prober.
#[derive(Debug)]
pub struct Log {
    start: Instant,
    inner: Mutex<Inner>,
}

impl Default for Log {
    fn default() -> Self {
        Self {
            start: Instant::now(),
            inner: Mutex::new(Inner {
                kills: Vec::new(),
                requests: Vec::new(),
                in_flight: HashMap::new(),
                probes: 0,
                slowest_probe: Duration::ZERO,
                slow_probes: Vec::new(),
            }),
        }
    }
}

impl Log {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Time since the run started.
    pub fn now(&self) -> Duration {
        self.start.elapsed()
    }

    pub fn request_started(&self, flow: usize, step: Step, id: uuid::Uuid) -> Duration {
        let now = self.now();
        self.lock().in_flight.insert(id, (flow, step, now));
        now
    }

    pub fn request_ended(&self, request: Request) {
        let mut inner = self.lock();
        inner.in_flight.remove(&request.request_id);
        inner.requests.push(request);
    }

    /// Records a kill; returns its index for [`Log::restarted`] and [`Log::ready`].
    pub fn killed(&self, member: &str, pid: Option<u32>) -> usize {
        let at = self.now();
        let mut inner = self.lock();
        let mut in_flight: Vec<_> = inner
            .in_flight
            .iter()
            .map(|(id, (flow, step, _))| format!("{step:?} {id} (flow {flow})"))
            .collect();
        in_flight.sort();
        inner.kills.push(Kill {
            member: member.to_owned(),
            pid,
            at,
            restarted_at: None,
            ready_at: None,
            ready_error: None,
            in_flight,
        });
        inner.kills.len() - 1
    }

    pub fn restarted(&self, kill: usize) {
        let now = self.now();
        if let Some(k) = self.lock().kills.get_mut(kill) {
            k.restarted_at = Some(now);
        }
    }

    pub fn ready(&self, kill: usize, result: Result<(), String>) {
        let now = self.now();
        if let Some(k) = self.lock().kills.get_mut(kill) {
            match result {
                Ok(()) => k.ready_at = Some(now),
                Err(e) => k.ready_error = Some(e),
            }
        }
    }

    pub fn probed(&self, target: &str, at: Duration, elapsed: Duration, status: Option<u16>) {
        let mut inner = self.lock();
        inner.probes += 1;
        inner.slowest_probe = inner.slowest_probe.max(elapsed);
        if elapsed > Duration::from_secs(1) {
            inner.slow_probes.push(SlowProbe {
                target: target.to_owned(),
                at,
                elapsed,
                status,
            });
        }
    }

    pub fn kills(&self) -> Vec<Kill> {
        self.lock().kills.clone()
    }

    pub fn requests(&self) -> Vec<Request> {
        self.lock().requests.clone()
    }

    /// Probes sent, the slowest answer, and the answers slower than a second.
    pub fn probes(&self) -> (usize, Duration, Vec<SlowProbe>) {
        let inner = self.lock();
        (inner.probes, inner.slowest_probe, inner.slow_probes.clone())
    }
}

/// One assertion after the run.
#[derive(Debug, Clone)]
pub struct Check {
    pub name: &'static str,
    pub passed: bool,
    /// The figure shown in the summary (`0 lost of 412`).
    pub summary: String,
    /// Every offending item, with its ids.
    pub details: Vec<String>,
}

/// The figures of the table in docs/failure-behaviour.md.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    pub flows: usize,
    pub connected: usize,
    pub kills: usize,
    pub lost: usize,
    pub duplicated: usize,
    /// Copies of one event's email sent again after a mailer died mid-send (same Message-ID).
    pub resent: usize,
    pub hung: usize,
    pub dead_letters: usize,
    pub emails: usize,
    pub requests: usize,
    pub failed_requests: usize,
}

/// The report file.
#[derive(Debug)]
pub struct Report {
    pub figures: Figures,
    pub checks: Vec<Check>,
    text: String,
}

impl Report {
    pub fn new(
        options: &Options,
        members: &[String],
        cluster_dir: &Path,
        flow_time: Duration,
        flows: Vec<Flow>,
        log: &Log,
        (figures, checks): (Figures, Vec<Check>),
    ) -> Self {
        let kills = log.kills();
        let requests = log.requests();
        let (probes, slowest, _) = log.probes();
        let mut text = String::new();
        let passed = checks.iter().all(|c| c.passed);
        let _ = writeln!(
            text,
            "# Chaos run: {}\n",
            if passed { "passed" } else { "FAILED" }
        );
        let _ = writeln!(
            text,
            "Reproduce: `CHAOS_SEED={} CHAOS_FLOWS={} CHAOS_USERS={} CHAOS_SUBACCOUNTS={} \
             CHAOS_KILL_EVERY={:?}..{:?} CHAOS_PAUSE={:?}..{:?} CHAOS_REPLICAS={} \
             CHAOS_VICTIMS={} scripts/test.sh -p e2e --test chaos` (the kill schedule depends \
             on timing too).\n",
            options.seed,
            options.flows,
            options.users,
            options.subaccounts,
            options.kill_every.0,
            options.kill_every.1,
            options.pause.0,
            options.pause.1,
            options.replicas,
            options.victims.join(","),
        );
        let _ = writeln!(
            text,
            "Processes: {}. Logs and data: {}.\n",
            members.join(", "),
            cluster_dir.display()
        );
        let _ = writeln!(text, "## Figures\n");
        let _ = writeln!(
            text,
            "| flows | connected | kills | lost | duplicated | resent (same Message-ID) | hung | dead letters | emails | requests | failed requests | flow time |"
        );
        let _ = writeln!(text, "|---|---|---|---|---|---|---|---|---|---|---|---|");
        let _ = writeln!(
            text,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0} s |\n",
            figures.flows,
            figures.connected,
            figures.kills,
            figures.lost,
            figures.duplicated,
            figures.resent,
            figures.hung,
            figures.dead_letters,
            figures.emails,
            figures.requests,
            figures.failed_requests,
            flow_time.as_secs_f64(),
        );
        let _ = writeln!(
            text,
            "`/readyz` probes: {probes}, slowest {:.0} ms.\n",
            slowest.as_secs_f64() * 1000.0
        );
        let _ = writeln!(text, "## Checks\n");
        for check in &checks {
            let _ = writeln!(
                text,
                "- [{}] {}: {}",
                if check.passed { "x" } else { " " },
                check.name,
                check.summary
            );
            for detail in check.details.iter().take(200) {
                let _ = writeln!(text, "  - {detail}");
            }
            if check.details.len() > 200 {
                let _ = writeln!(text, "  - … {} more", check.details.len() - 200);
            }
        }
        let _ = writeln!(text, "\n## What each kill did to requests\n");
        let _ = writeln!(
            text,
            "A failed request (no answer, or 5xx) is put down to a kill during it (held), else to \
             the member that was down when it started.\n"
        );
        let _ = writeln!(
            text,
            "| member | kills | failed, held at the kill | failed, started while down | of which refused or unanswered |"
        );
        let _ = writeln!(text, "|---|---|---|---|---|");
        for (member, [count, held, down, unanswered]) in per_member(&kills, &requests) {
            let _ = writeln!(
                text,
                "| {member} | {count} | {held} | {down} | {unanswered} |"
            );
        }
        let _ = writeln!(text, "\n## Kills\n");
        for kill in &kills {
            let _ = writeln!(
                text,
                "- {:>8.3}s kill {} (pid {}); restarted {}; ready {}{}",
                kill.at.as_secs_f64(),
                kill.member,
                kill.pid.map_or("?".into(), |p| p.to_string()),
                secs(kill.restarted_at),
                secs(kill.ready_at),
                kill.ready_error
                    .as_deref()
                    .map(|e| format!(" — NOT READY: {}", first_line(e)))
                    .unwrap_or_default(),
            );
            for request in &kill.in_flight {
                let _ = writeln!(text, "  - in flight: {request}");
            }
        }
        let _ = writeln!(text, "\n## Failed requests\n");
        for request in requests.iter().filter(|r| r.failed()) {
            let _ = writeln!(
                text,
                "- {:>8.3}s flow {} {:?} {:?} after {:.0} ms; request {} correlation {}",
                request.started.as_secs_f64(),
                request.flow,
                request.step,
                request.ending,
                request.elapsed.as_secs_f64() * 1000.0,
                request.request_id,
                request.correlation_id.as_deref().unwrap_or("-"),
            );
        }
        let _ = writeln!(text, "\n## Flows that did not connect\n");
        for flow in flows.iter().filter(|f| !f.connected) {
            let _ = writeln!(
                text,
                "- flow {} ({} on {}): {}; correlation ids {}",
                flow.index,
                flow.account,
                flow.subaccount,
                flow.gave_up.as_deref().unwrap_or("?"),
                flow.correlation_ids().join(", ")
            );
        }
        Self {
            figures,
            checks,
            text,
        }
    }

    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.passed)
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, &self.text)
    }
}

impl Request {
    /// Whether it failed: no answer, or a 5xx.
    pub fn failed(&self) -> bool {
        !matches!(self.ending, Ending::Answered(s) if s < 500)
    }
}

/// The kill a failed request is put down to: one that happened while it was in flight (it was
/// held by the process killed, or waited on it), else the last one before it started whose
/// member was not ready yet (it started while that member was down). `held` says which.
pub fn cause<'k>(request: &Request, kills: &'k [Kill]) -> Option<(&'k Kill, bool)> {
    let end = request.started + request.elapsed;
    if let Some(kill) = kills
        .iter()
        .rev()
        .find(|k| k.at >= request.started && k.at <= end)
    {
        return Some((kill, true));
    }
    kills
        .iter()
        .rev()
        .find(|k| k.at < request.started && k.ready_at.is_none_or(|ready| ready > request.started))
        .map(|k| (k, false))
}

/// Per member: kills, failed requests held at one of its kills, failed requests started while
/// it was down, and how many of those two got no answer at all.
fn per_member(kills: &[Kill], requests: &[Request]) -> Vec<(String, [usize; 4])> {
    let mut table: std::collections::BTreeMap<String, [usize; 4]> =
        std::collections::BTreeMap::new();
    for kill in kills {
        table.entry(kill.member.clone()).or_default()[0] += 1;
    }
    for request in requests.iter().filter(|r| r.failed()) {
        if let Some((kill, held)) = cause(request, kills) {
            let row = table.entry(kill.member.clone()).or_default();
            row[if held { 1 } else { 2 }] += 1;
            if !request.ending.is_answer() {
                row[3] += 1;
            }
        }
    }
    table.into_iter().collect()
}

fn secs(at: Option<Duration>) -> String {
    at.map_or("never".into(), |d| format!("{:.3}s", d.as_secs_f64()))
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}
