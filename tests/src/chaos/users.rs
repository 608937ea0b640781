//! What a person does: asks the platform for a link (`sendEmail: true`), consents at Google and
//! lands on our callback. A step that fails is retried a few times after a short wait, as a
//! person clicks again; a callback that says the link is spent sends them back to the start
//! (another round, at most [`ROUNDS`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use rand::{RngExt as _, SeedableRng as _};
use serde_json::json;

use super::report::{Ending, Log, Request, Step};
use super::{HUNG_AFTER, JWT_SECRET, Options};
use crate::cluster::Cluster;
use crate::fake_google::{Decision, FakeGoogle};
use crate::jwt::{MintToken as _, UserClaims};

/// Tries of one step before the person starts over (connect, callback) or gives up.
const TRIES: usize = 5;
/// Start-overs of a flow.
const ROUNDS: usize = 3;

/// A link the api answered with.
#[derive(Debug, Clone)]
pub struct Link {
    pub state: String,
    pub email_sent: bool,
    pub correlation_id: Option<String>,
}

/// One person's connection attempt, start to end.
#[derive(Debug, Clone)]
pub struct Flow {
    pub index: usize,
    pub subaccount: String,
    /// The Google account connected (and the address the link is mailed to).
    pub account: String,
    /// Every link the api answered with, in order.
    pub links: Vec<Link>,
    /// The callback page said "connected".
    pub connected: bool,
    /// Why the person gave up, when they did.
    pub gave_up: Option<String>,
}

impl Flow {
    pub fn correlation_ids(&self) -> Vec<String> {
        self.links
            .iter()
            .filter_map(|l| l.correlation_id.clone())
            .collect()
    }
}

/// The people, and what they share.
#[derive(Debug)]
pub struct Users {
    http: reqwest::Client,
    api: String,
    google: FakeGoogle,
    log: Arc<Log>,
    pub subaccounts: Vec<String>,
    seed: u64,
    pub mailbox: String,
    pub mongodb_uri: String,
    pub database_template: String,
    pub nats_url: String,
    pub namespace: String,
}

impl Users {
    pub fn new(options: &Options, cluster: &Cluster, google: FakeGoogle, log: Arc<Log>) -> Self {
        let subaccounts = (0..options.subaccounts)
            .map(|i| format!("{:024x}", 0xc4a0_5000_0000_u64 + i as u64))
            .collect();
        Self {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                // A new connection per request: a request is routed by the kernel to a live
                // replica, never sent down a kept-alive connection of one killed since.
                .pool_max_idle_per_host(0)
                // Beyond the bound, so a hung request is seen as one, not cut short.
                .timeout(HUNG_AFTER + Duration::from_secs(5))
                .build()
                .expect("an HTTP client"),
            api: format!("http://{}", cluster.api),
            google,
            log,
            subaccounts,
            seed: options.seed,
            mailbox: format!("http://{}/messages", cluster.mailbox),
            mongodb_uri: cluster.mongodb_uri.clone(),
            database_template: format!("{}_{{subaccountId}}", cluster.namespace),
            nats_url: cluster.nats_url.clone(),
            namespace: cluster.namespace.clone(),
        }
    }

    fn token(subaccount: &str) -> String {
        UserClaims::for_subaccount(subaccount, Duration::from_secs(6 * 3600))
            .sign_hs256(JWT_SECRET.as_bytes())
    }

    /// Adds the `google-calendar` connector to every subaccount, through the api.
    pub async fn seed_connectors(&self) -> Result<(), String> {
        for subaccount in &self.subaccounts {
            let body = json!({
                "connectorId": "google-calendar",
                "connectorType": "calendar",
            });
            let (ending, answer) = self
                .send(
                    usize::MAX,
                    Step::Seed,
                    self.http
                        .post(format!("{}/api/connectors/{subaccount}", self.api))
                        .bearer_auth(Self::token(subaccount))
                        .json(&body),
                )
                .await;
            match ending {
                Ending::Answered(200 | 201 | 409) => {}
                other => {
                    return Err(format!(
                        "seeding {subaccount}: {other:?} {}",
                        answer.map(|a| a.body).unwrap_or_default()
                    ));
                }
            }
        }
        Ok(())
    }

    /// Runs `options.flows` flows, `options.users` at a time.
    pub async fn run(&self, options: &Options) -> Vec<Flow> {
        let mut flows: Vec<Flow> = futures::stream::iter(0..options.flows)
            .map(|index| self.flow(index))
            .buffer_unordered(options.users)
            .collect()
            .await;
        flows.sort_by_key(|f| f.index);
        flows
    }

    async fn flow(&self, index: usize) -> Flow {
        let mut rng = rand::rngs::StdRng::seed_from_u64(self.seed ^ (index as u64) << 20);
        let subaccount = self.subaccounts[index % self.subaccounts.len()].clone();
        let mut flow = Flow {
            index,
            account: format!("chaos-{index}@example.com"),
            subaccount,
            links: Vec::new(),
            connected: false,
            gave_up: None,
        };
        let token = Self::token(&flow.subaccount);
        for _round in 0..ROUNDS {
            // A person reads a little before each click.
            think(&mut rng).await;
            let Some(link) = self.connect(&mut flow, &token, &mut rng).await else {
                flow.gave_up = Some("the connect request kept failing".into());
                return flow;
            };
            think(&mut rng).await;
            let callback = match self
                .google
                .consent(
                    &link,
                    Decision::Allow {
                        account: Some(flow.account.clone()),
                        scopes: None,
                    },
                )
                .await
            {
                Ok(url) => url.to_string(),
                Err(e) => {
                    flow.gave_up = Some(format!("consent at Google failed: {e:#}"));
                    return flow;
                }
            };
            match self.callback(&flow, &callback, &mut rng).await {
                Landing::Connected => {
                    flow.connected = true;
                    flow.gave_up = None;
                    return flow;
                }
                Landing::StartOver(why) => flow.gave_up = Some(why),
            }
        }
        flow
    }

    /// The connect request, tried up to [`TRIES`] times; the link's auth URL.
    async fn connect(
        &self,
        flow: &mut Flow,
        token: &str,
        rng: &mut rand::rngs::StdRng,
    ) -> Option<String> {
        let url = format!(
            "{}/api/connectors/{}/handlegooglecalendar",
            self.api, flow.subaccount
        );
        for attempt in 0..TRIES {
            let (ending, answer) = self
                .send(
                    flow.index,
                    Step::Connect,
                    self.http
                        .post(&url)
                        .bearer_auth(token)
                        .json(&json!({"userEmail": flow.account, "sendEmail": true})),
                )
                .await;
            if let (Ending::Answered(200), Some(answer)) = (&ending, answer) {
                let body: serde_json::Value =
                    serde_json::from_str(&answer.body).unwrap_or_default();
                let auth_url = body["data"]["authUrl"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                let state = url::Url::parse(&auth_url)
                    .ok()
                    .and_then(|u| {
                        u.query_pairs()
                            .find(|(k, _)| k == "state")
                            .map(|(_, v)| v.into_owned())
                    })
                    .unwrap_or_default();
                flow.links.push(Link {
                    state,
                    email_sent: body["data"]["emailSent"] == true,
                    correlation_id: answer.correlation_id,
                });
                return Some(auth_url);
            }
            backoff(attempt, rng).await;
        }
        None
    }

    /// The browser landing on our callback, tried up to [`TRIES`] times while nothing answers
    /// or the answer is a 5xx.
    async fn callback(&self, flow: &Flow, url: &str, rng: &mut rand::rngs::StdRng) -> Landing {
        let mut last = String::new();
        for attempt in 0..TRIES {
            let (ending, answer) = self
                .send(flow.index, Step::Callback, self.http.get(url))
                .await;
            match (&ending, answer) {
                (Ending::Answered(200), Some(answer))
                    if answer.body.contains("data-status=\"success\"") =>
                {
                    return Landing::Connected;
                }
                (Ending::Answered(status), Some(answer)) if *status < 500 => {
                    return Landing::StartOver(format!(
                        "callback answered {status}: {}",
                        page_title(&answer.body)
                    ));
                }
                (ending, answer) => {
                    last = format!(
                        "callback {ending:?} {}",
                        answer.map(|a| page_title(&a.body)).unwrap_or_default()
                    );
                }
            }
            backoff(attempt, rng).await;
        }
        Landing::StartOver(last)
    }

    /// Sends one request with its own `X-Request-Id`, recording it in the log.
    async fn send(
        &self,
        flow: usize,
        step: Step,
        request: reqwest::RequestBuilder,
    ) -> (Ending, Option<Answer>) {
        let request_id = uuid::Uuid::now_v7();
        let started = self.log.request_started(flow, step, request_id);
        let clock = Instant::now();
        let result = request
            .header("x-request-id", request_id.to_string())
            .send()
            .await;
        let (ending, answer) = match result {
            Ok(response) => {
                let status = response.status().as_u16();
                let correlation_id = response
                    .headers()
                    .get("x-correlation-id")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                match response.text().await {
                    Ok(body) => (
                        Ending::Answered(status),
                        Some(Answer {
                            body,
                            correlation_id,
                        }),
                    ),
                    Err(e) => (Ending::Unanswered(format!("body: {e}")), None),
                }
            }
            Err(e) if e.is_connect() && refused(&e) => (Ending::Refused, None),
            Err(e) if e.is_timeout() => (Ending::Unanswered("timed out".into()), None),
            Err(e) => (Ending::Unanswered(error_chain(&e)), None),
        };
        self.log.request_ended(Request {
            flow,
            step,
            request_id,
            correlation_id: answer.as_ref().and_then(|a| a.correlation_id.clone()),
            started,
            elapsed: clock.elapsed(),
            ending: ending.clone(),
        });
        (ending, answer)
    }

    /// Every email the SMTP sink holds, as JSON.
    pub async fn mailbox(&self) -> Result<Vec<serde_json::Value>, String> {
        let response = self
            .http
            .get(&self.mailbox)
            .send()
            .await
            .map_err(|e| format!("the mailbox: {e}"))?;
        let messages: serde_json::Value = response
            .json()
            .await
            .map_err(|e| format!("the mailbox: {e}"))?;
        Ok(messages.as_array().cloned().unwrap_or_default())
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub async fn shutdown(self) {
        self.google.shutdown().await;
    }
}

/// Where a callback left the person.
enum Landing {
    Connected,
    StartOver(String),
}

#[derive(Debug)]
struct Answer {
    body: String,
    correlation_id: Option<String>,
}

async fn think(rng: &mut rand::rngs::StdRng) {
    let millis = rng.random_range(100..600);
    tokio::time::sleep(Duration::from_millis(millis)).await;
}

/// A person waits a little longer after each failure.
async fn backoff(attempt: usize, rng: &mut rand::rngs::StdRng) {
    let base = 500 * (attempt as u64 + 1);
    let millis = rng.random_range(base..base * 2);
    tokio::time::sleep(Duration::from_millis(millis)).await;
}

fn refused(error: &reqwest::Error) -> bool {
    error_chain(error).contains("Connection refused")
}

fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn page_title(html: &str) -> String {
    html.split_once("<title>")
        .and_then(|(_, rest)| rest.split_once("</title>"))
        .map(|(title, _)| title.to_owned())
        .unwrap_or_else(|| html.chars().take(120).collect())
}
