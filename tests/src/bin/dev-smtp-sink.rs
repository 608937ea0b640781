//! The local run's mailbox: a real SMTP server that keeps what it receives, prints each
//! message, and shows them over HTTP. `scripts/run-local.sh` starts it so the mailer-worker's
//! default `SMTP_URL` (smtp://127.0.0.1:1025) works with no configuration.
//!
//! ```text
//! dev-smtp-sink [--smtp ADDR] [--http ADDR] [--journal FILE]
//!   --smtp ADDR     where SMTP listens     (DEV_SMTP_SINK_SMTP_ADDR, default 127.0.0.1:1025)
//!   --http ADDR     where the mailbox is   (DEV_SMTP_SINK_HTTP_ADDR, default 127.0.0.1:8025)
//!   --journal FILE  keep messages in FILE  (DEV_SMTP_SINK_JOURNAL; default: memory only)
//!
//!   GET /          the received messages, newest first (HTML; each message's text part)
//!   GET /messages  the same as JSON: [{id, receivedAt, from, to, subject, text, html}]
//!   GET /healthz, /readyz   200 while it runs (run-local.sh waits on /readyz)
//! ```
//!
//! With `--journal` (the local run sets it) each message is appended to the file, synced,
//! before it is accepted, and the file is read back on start: killing the sink loses nothing it
//! accepted. Without it, messages live in memory only. Every recipient is accepted except local parts starting with
//! `reject` (550), as in the test suite. Not for production: anyone on loopback can read them.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::response::{Html, Json};
use axum::routing::get;
use e2e::smtp::SmtpSink;
use serde_json::json;

const USAGE: &str = "usage: dev-smtp-sink [--smtp ADDR] [--http ADDR] [--journal FILE]
  --smtp ADDR     SMTP listen address (env DEV_SMTP_SINK_SMTP_ADDR, default 127.0.0.1:1025)
  --http ADDR     mailbox web page    (env DEV_SMTP_SINK_HTTP_ADDR, default 127.0.0.1:8025)
  --journal FILE  append each accepted message to FILE and read it back on start
                  (env DEV_SMTP_SINK_JOURNAL; default: memory only)";

#[tokio::main]
async fn main() -> ExitCode {
    let (smtp_addr, http_addr, journal) = match addresses(std::env::args().skip(1)) {
        Ok(Some(addrs)) => addrs,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(problem) => {
            eprintln!("dev-smtp-sink: {problem}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let sink = match SmtpSink::start_journaled(smtp_addr, journal.as_deref()) {
        Ok(sink) => Arc::new(sink),
        Err(e) => {
            eprintln!("dev-smtp-sink: cannot listen for SMTP on {smtp_addr}: {e}");
            return ExitCode::from(1);
        }
    };
    let listener = match tokio::net::TcpListener::bind(http_addr).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("dev-smtp-sink: cannot serve the mailbox on {http_addr}: {e}");
            return ExitCode::from(1);
        }
    };
    println!(
        "dev-smtp-sink: SMTP on {}, mailbox at http://{http_addr}/ (JSON: /messages)",
        sink.addr()
    );

    tokio::spawn(print_messages(sink.clone()));
    let app = Router::new()
        .route("/", get(page))
        .route("/messages", get(messages))
        .route(
            "/healthz",
            get(|| async { Json(json!({ "status": "alive" })) }),
        )
        .route(
            "/readyz",
            get(|| async { Json(json!({ "status": "ready" })) }),
        )
        .with_state(sink);
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(stop_signal())
        .await;
    match served {
        Ok(()) => {
            println!("dev-smtp-sink: stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("dev-smtp-sink: mailbox server failed: {e}");
            ExitCode::from(1)
        }
    }
}

/// The SMTP and HTTP addresses from the flags, then the environment, then the defaults;
/// `None` when help was asked for.
/// The SMTP and HTTP addresses, and the journal file if any.
type Settings = (SocketAddr, SocketAddr, Option<std::path::PathBuf>);

fn addresses(mut args: impl Iterator<Item = String>) -> Result<Option<Settings>, String> {
    let mut smtp = std::env::var("DEV_SMTP_SINK_SMTP_ADDR").ok();
    let mut http = std::env::var("DEV_SMTP_SINK_HTTP_ADDR").ok();
    let mut journal = std::env::var("DEV_SMTP_SINK_JOURNAL")
        .ok()
        .filter(|v| !v.trim().is_empty());
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--smtp" => smtp = Some(args.next().ok_or("--smtp needs an address")?),
            "--http" => http = Some(args.next().ok_or("--http needs an address")?),
            "--journal" => journal = Some(args.next().ok_or("--journal needs a file")?),
            "-h" | "--help" => return Ok(None),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let parse = |value: Option<String>, default: &str, what: &str| {
        let value = value
            .filter(|v| !v.trim().is_empty())
            .unwrap_or_else(|| default.to_owned());
        value
            .trim()
            .parse::<SocketAddr>()
            .map_err(|_| format!("{what} address {value:?} is not host:port, e.g. {default}"))
    };
    Ok(Some((
        parse(smtp, "127.0.0.1:1025", "SMTP")?,
        parse(http, "127.0.0.1:8025", "HTTP")?,
        journal.map(std::path::PathBuf::from),
    )))
}

/// Prints each message as it arrives: who, what, and its text.
async fn print_messages(sink: Arc<SmtpSink>) {
    let mut seen = 0;
    loop {
        for message in sink.next_messages(seen).await {
            seen += 1;
            println!(
                "---- message {seen}, received {} ----\nFrom: {}\nTo: {}\nSubject: {}\n\n{}\n",
                message.received_at.to_rfc3339(),
                message
                    .header("From")
                    .unwrap_or_else(|| message.from.clone()),
                message.to.join(", "),
                message.subject().unwrap_or_default(),
                message
                    .text()
                    .unwrap_or_else(|| "(no text part)".into())
                    .trim_end(),
            );
        }
    }
}

async fn messages(State(sink): State<Arc<SmtpSink>>) -> Json<serde_json::Value> {
    Json(sink.messages_json())
}

async fn page(State(sink): State<Arc<SmtpSink>>) -> Html<String> {
    let all = sink.messages();
    let mut html = String::from(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"5\">\
         <title>Local mailbox</title>\
         <style>body{font-family:sans-serif;margin:2em}article{border-top:1px solid #ccc;padding:1em 0}\
         pre{white-space:pre-wrap;word-break:break-all;background:#f6f6f6;padding:1em}</style>\
         </head><body>\n",
    );
    html.push_str(&format!(
        "<h1>Local mailbox</h1>\n<p>{} message(s), newest first. JSON: <a href=\"/messages\">/messages</a>. \
         This page refreshes every 5 seconds.</p>\n",
        all.len()
    ));
    for (i, message) in all.iter().enumerate().rev() {
        html.push_str(&format!(
            "<article><h2>#{} {}</h2>\n<p>From: {}<br>To: {}<br>Received: {}</p>\n<pre>{}</pre></article>\n",
            i + 1,
            escape(&message.subject().unwrap_or_default()),
            escape(&message.header("From").unwrap_or_else(|| message.from.clone())),
            escape(&message.to.join(", ")),
            escape(&message.received_at.to_rfc3339()),
            escape(&message.text().unwrap_or_else(|| "(no text part)".into())),
        ));
    }
    html.push_str("</body></html>\n");
    Html(html)
}

fn escape(text: &str) -> String {
    html_escape::encode_quoted_attribute(text).into_owned()
}

async fn stop_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}
