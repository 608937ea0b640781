//! A service under test: its `run(config, listener, shutdown)` on port 0, in this process.

use std::future::Future;
use std::time::{Duration, Instant};

use service_kit::{CancellationToken, StartupError};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

#[derive(Debug)]
pub struct RunningService {
    pub name: &'static str,
    /// `http://127.0.0.1:PORT`
    pub base_url: String,
    shutdown: CancellationToken,
    task: Option<JoinHandle<Result<(), StartupError>>>,
    http: reqwest::Client,
}

impl RunningService {
    /// Binds a free loopback port and starts `run` on it.
    pub async fn start<F, Fut>(name: &'static str, run: F) -> Self
    where
        F: FnOnce(TcpListener, CancellationToken) -> Fut,
        Fut: Future<Output = Result<(), StartupError>> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
        Self::start_on(listener, name, run)
    }

    /// Starts `run` on a listener the test bound itself (when the service's own URL must be
    /// known before its configuration, e.g. an OAuth redirect URI).
    pub fn start_on<F, Fut>(listener: TcpListener, name: &'static str, run: F) -> Self
    where
        F: FnOnce(TcpListener, CancellationToken) -> Fut,
        Fut: Future<Output = Result<(), StartupError>> + Send + 'static,
    {
        let base_url = format!("http://{}", listener.local_addr().expect("local addr"));
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(listener, shutdown.clone()));
        Self {
            name,
            base_url,
            shutdown,
            task: Some(task),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("http client"),
        }
    }

    /// GET `path`, returning the status and the body as JSON (or `Null` if not JSON).
    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.base_url))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{} GET {path}: {e}", self.name));
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        )
    }

    /// Polls `/readyz` until it answers 200 (returning its body), panicking with the last
    /// answer — or the service's start-up error — after `timeout`.
    pub async fn wait_ready(&mut self, timeout: Duration) -> serde_json::Value {
        self.wait_readyz(200, timeout).await
    }

    /// Polls `/readyz` until it answers `status`.
    pub async fn wait_readyz(&mut self, status: u16, timeout: Duration) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        let mut last = String::from("no answer yet");
        loop {
            if self.task.as_ref().is_some_and(JoinHandle::is_finished) {
                let result = self.task.take().expect("task").await;
                panic!(
                    "{} stopped while waiting for /readyz {status}: {result:?}",
                    self.name
                );
            }
            if let Ok(response) = self
                .http
                .get(format!("{}/readyz", self.base_url))
                .send()
                .await
            {
                let code = response.status().as_u16();
                let body: serde_json::Value = response.json().await.unwrap_or_default();
                if code == status {
                    return body;
                }
                last = format!("{code} {body}");
            }
            assert!(
                Instant::now() < deadline,
                "{} /readyz not {status} within {timeout:?}; last: {last}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Cancels the service and waits (at most 30 s) for it to finish, returning its result.
    pub async fn stop(mut self) -> Result<(), StartupError> {
        self.shutdown.cancel();
        let task = self.task.take().expect("service task");
        match tokio::time::timeout(Duration::from_secs(30), task).await {
            Ok(joined) => joined.unwrap_or_else(|e| panic!("{} panicked: {e}", self.name)),
            Err(_) => panic!("{} did not shut down within 30 s", self.name),
        }
    }
}

impl RunningService {
    /// Stops the service abruptly, like a crash: its task is aborted without a graceful
    /// shutdown (work it had handed to other tasks may still finish).
    pub async fn kill(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for RunningService {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
