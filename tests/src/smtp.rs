//! A real SMTP server for tests and for the local run: [`SmtpSink`] accepts mail on a loopback
//! port (mailin-embedded) and keeps every message in memory for the test to read.
//!
//! - Any recipient whose local part starts with `reject` is refused with `550`, so a test can
//!   provoke a permanent failure; [`SmtpSink::defer_next_recipients`] answers the next `n`
//!   recipients with `451` (a transient failure); [`SmtpSink::delay_acceptance`] makes the
//!   server slow to accept a message it already holds.
//! - [`SmtpSink::start_journaled`] also appends each message to a file, fsynced, before it
//!   answers `250`, and reads that file back on start: a sink that is killed loses nothing it
//!   accepted (the local run's `dev-smtp-sink --journal`).
//! - mailin-embedded's server blocks in `accept` forever and has no stop: a sink lives until the
//!   process ends. Dropping an [`SmtpSink`] only makes it answer `421` to new sessions. To test
//!   "SMTP is down", reserve a port with [`crate::process::free_port`], point the mailer at it
//!   while nothing listens, and [`SmtpSink::start_on`] that port later.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use chrono::{DateTime, Utc};
use mailin_embedded::{Handler, Response, Server, SslConfig, response};
use tokio::sync::watch;

/// One message as the server received it, with helpers to read its MIME structure.
#[derive(Debug, Clone)]
pub struct ReceivedMessage {
    /// The envelope sender (`MAIL FROM`).
    pub from: String,
    /// The accepted envelope recipients (`RCPT TO`).
    pub to: Vec<String>,
    /// The message exactly as sent after `DATA` (headers and body, dot-unstuffed).
    pub data: Vec<u8>,
    pub received_at: DateTime<Utc>,
}

impl ReceivedMessage {
    /// The whole message as text (lossy for non-UTF-8 bytes).
    pub fn raw(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }

    /// A top-level header, unfolded and with RFC 2047 encoded words decoded.
    pub fn header(&self, name: &str) -> Option<String> {
        let (head, _) = split_head_body(&self.data);
        header_in(&head, name).map(|v| decode_words(&v))
    }

    pub fn subject(&self) -> Option<String> {
        self.header("Subject")
    }

    /// Every leaf part as `(content type, decoded body)`, in order; a message that is not
    /// multipart is one part. Bodies are decoded from quoted-printable or base64, with `\n`
    /// line ends.
    pub fn parts(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        collect_parts(&self.data, &mut out);
        out
    }

    /// The first `text/plain` part, decoded.
    pub fn text(&self) -> Option<String> {
        self.part("text/plain")
    }

    /// The first `text/html` part, decoded.
    pub fn html(&self) -> Option<String> {
        self.part("text/html")
    }

    fn part(&self, mime: &str) -> Option<String> {
        self.parts()
            .into_iter()
            .find(|(content_type, _)| content_type.eq_ignore_ascii_case(mime))
            .map(|(_, body)| body)
    }
}

/// What every session of one sink shares.
#[derive(Debug)]
struct Inbox {
    messages: Mutex<Vec<ReceivedMessage>>,
    /// The number of messages received, for waiters.
    count: watch::Sender<usize>,
    /// Recipients still to be answered `451`.
    deferrals: AtomicUsize,
    /// Set when the [`SmtpSink`] is dropped: new sessions get `421`.
    closed: AtomicBool,
    /// How long the `250` after DATA is held back (milliseconds); the message is in the inbox
    /// meanwhile, as on a real server that stored it but has not answered yet.
    accept_delay_ms: AtomicU64,
    /// Where accepted messages are appended (one JSON line each), if anywhere.
    journal: Option<Mutex<std::fs::File>>,
}

impl Inbox {
    /// Appends `message` to the journal and syncs it; an error means "not accepted".
    fn journal(&self, message: &ReceivedMessage) -> std::io::Result<()> {
        use std::io::Write;
        let Some(journal) = &self.journal else {
            return Ok(());
        };
        let mut line = serde_json::to_vec(&serde_json::json!({
            "from": message.from,
            "to": message.to,
            "data": base64::engine::general_purpose::STANDARD.encode(&message.data),
            "receivedAt": message.received_at.to_rfc3339(),
        }))?;
        line.push(b'\n');
        let mut file = journal
            .lock()
            .map_err(|_| std::io::Error::other("journal lock poisoned"))?;
        file.write_all(&line)?;
        file.sync_data()
    }

    fn deliver(&self, message: ReceivedMessage) {
        let n = match self.messages.lock() {
            Ok(mut messages) => {
                messages.push(message);
                messages.len()
            }
            Err(_) => return,
        };
        self.count.send_replace(n);
    }

    fn snapshot(&self, from: usize) -> Vec<ReceivedMessage> {
        self.messages
            .lock()
            .map(|m| m.get(from..).map(<[_]>::to_vec).unwrap_or_default())
            .unwrap_or_default()
    }
}

/// One SMTP session's state (mailin-embedded clones the handler per connection).
#[derive(Debug, Clone)]
struct Session {
    inbox: Arc<Inbox>,
    from: String,
    to: Vec<String>,
    data: Vec<u8>,
}

impl Handler for Session {
    fn helo(&mut self, _ip: IpAddr, _domain: &str) -> Response {
        if self.inbox.closed.load(Ordering::SeqCst) {
            response::NO_SERVICE
        } else {
            response::OK
        }
    }

    fn rcpt(&mut self, to: &str) -> Response {
        let address = strip_brackets(to);
        if address.to_ascii_lowercase().starts_with("reject") {
            return Response::custom(550, "5.1.1 Recipient refused by the test sink".to_owned());
        }
        let deferred = self
            .inbox
            .deferrals
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if deferred {
            return Response::custom(451, "4.3.0 Try again later (test sink deferral)".to_owned());
        }
        response::OK
    }

    fn data_start(&mut self, _domain: &str, from: &str, _is8bit: bool, to: &[String]) -> Response {
        self.from = strip_brackets(from).to_owned();
        self.to = to.iter().map(|t| strip_brackets(t).to_owned()).collect();
        self.data.clear();
        response::OK
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.data.extend_from_slice(buf);
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        let message = ReceivedMessage {
            from: std::mem::take(&mut self.from),
            to: std::mem::take(&mut self.to),
            data: std::mem::take(&mut self.data),
            received_at: Utc::now(),
        };
        if let Err(e) = self.inbox.journal(&message) {
            eprintln!("SMTP sink: message not journaled, refused for a retry: {e}");
            return Response::custom(451, "4.3.0 Cannot store the message now".to_owned());
        }
        self.inbox.deliver(message);
        let delay = self.inbox.accept_delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            // This session's own thread: holding it back delays only this client.
            std::thread::sleep(Duration::from_millis(delay));
        }
        response::OK
    }
}

/// A running SMTP server that keeps what it receives.
#[derive(Debug)]
pub struct SmtpSink {
    addr: SocketAddr,
    inbox: Arc<Inbox>,
}

impl SmtpSink {
    /// A sink on a free loopback port.
    pub fn start() -> Self {
        Self::start_at(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .unwrap_or_else(|e| panic!("SMTP sink cannot start: {e}"))
    }

    /// A sink on `127.0.0.1:port` (a port reserved earlier, for "SMTP comes up late").
    pub fn start_on(port: u16) -> Self {
        Self::start_at(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
            .unwrap_or_else(|e| panic!("SMTP sink cannot start on port {port}: {e}"))
    }

    /// A sink on `addr`; the port is listening when this returns.
    pub fn start_at(addr: SocketAddr) -> std::io::Result<Self> {
        Self::start_journaled(addr, None)
    }

    /// A sink on `addr` that appends every message it accepts to `journal` (synced before the
    /// `250`) and starts with the messages already there.
    pub fn start_journaled(
        addr: SocketAddr,
        journal: Option<&std::path::Path>,
    ) -> std::io::Result<Self> {
        let listener = std::net::TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let (kept, journal) = match journal {
            Some(path) => (
                read_journal(path)?,
                Some(Mutex::new(
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(path)?,
                )),
            ),
            None => (Vec::new(), None),
        };
        let inbox = Arc::new(Inbox {
            count: watch::Sender::new(kept.len()),
            messages: Mutex::new(kept),
            deferrals: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            accept_delay_ms: AtomicU64::new(0),
            journal,
        });
        let mut server = Server::new(Session {
            inbox: inbox.clone(),
            from: String::new(),
            to: Vec::new(),
            data: Vec::new(),
        });
        server
            .with_name("smtp-sink.localhost")
            .with_num_threads(4)
            .with_tcp_listener(listener)
            .with_ssl(SslConfig::None)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        std::thread::Builder::new()
            .name(format!("smtp-sink-{}", addr.port()))
            .spawn(move || {
                if let Err(e) = server.serve() {
                    eprintln!("SMTP sink on {addr} stopped: {e}");
                }
            })?;
        Ok(Self { addr, inbox })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The `SMTP_URL` that points a mailer here.
    pub fn url(&self) -> String {
        format!("smtp://{}", self.addr)
    }

    /// Answers the next `n` recipients with `451 4.3.0` (transient), then accepts again.
    pub fn defer_next_recipients(&self, n: usize) {
        self.inbox.deferrals.store(n, Ordering::SeqCst);
    }

    /// Holds back the `250` that accepts each message for `delay` (the message is already in
    /// [`Self::messages`]): a slow server, to catch the sender mid-send.
    pub fn delay_acceptance(&self, delay: Duration) {
        let millis = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.inbox.accept_delay_ms.store(millis, Ordering::SeqCst);
    }

    /// Every message received so far.
    pub fn messages(&self) -> Vec<ReceivedMessage> {
        self.inbox.snapshot(0)
    }

    /// Every message received so far, oldest first, as the mailbox's JSON (`dev-smtp-sink`'s
    /// `/messages`, which the api's try-it page reads): `[{id, receivedAt, from, to, subject,
    /// messageId, text, html}]`, `id` counting from 1.
    pub fn messages_json(&self) -> serde_json::Value {
        serde_json::Value::Array(
            self.messages()
                .iter()
                .enumerate()
                .map(|(i, message)| {
                    serde_json::json!({
                        "id": i + 1,
                        "receivedAt": message.received_at.to_rfc3339(),
                        "from": message.header("From").unwrap_or_else(|| message.from.clone()),
                        "to": message.to,
                        "subject": message.subject(),
                        "messageId": message.header("Message-ID"),
                        "text": message.text(),
                        "html": message.html(),
                    })
                })
                .collect(),
        )
    }

    /// Waits until at least `n` messages have arrived and returns all of them; panics with
    /// what did arrive after `timeout`.
    pub async fn wait_for_messages(&self, n: usize, timeout: Duration) -> Vec<ReceivedMessage> {
        let mut count = self.inbox.count.subscribe();
        let arrived = tokio::time::timeout(timeout, count.wait_for(|c| *c >= n)).await;
        if arrived.is_err() {
            let got: Vec<_> = self
                .messages()
                .iter()
                .map(|m| format!("to {:?}: {:?}", m.to, m.subject()))
                .collect();
            panic!(
                "SMTP sink on {}: expected {n} message(s) within {timeout:?}, got {}: {got:?}",
                self.addr,
                got.len()
            );
        }
        self.messages()
    }

    /// Waits (without limit) until more than `seen` messages have arrived; returns the new ones.
    pub async fn next_messages(&self, seen: usize) -> Vec<ReceivedMessage> {
        let mut count = self.inbox.count.subscribe();
        // The sender lives as long as `self`, so waiting cannot fail.
        let _ = count.wait_for(|c| *c > seen).await;
        self.inbox.snapshot(seen)
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.inbox.closed.store(true, Ordering::SeqCst);
    }
}

/// The messages a journal holds; a torn last line (a crash mid-write, never acknowledged) is
/// skipped.
fn read_journal(path: &std::path::Path) -> std::io::Result<Vec<ReceivedMessage>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(text
        .lines()
        .filter_map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).ok()?;
            Some(ReceivedMessage {
                from: v["from"].as_str()?.to_owned(),
                to: v["to"]
                    .as_array()?
                    .iter()
                    .filter_map(|t| t.as_str().map(str::to_owned))
                    .collect(),
                data: base64::engine::general_purpose::STANDARD
                    .decode(v["data"].as_str()?)
                    .ok()?,
                received_at: DateTime::parse_from_rfc3339(v["receivedAt"].as_str()?)
                    .ok()?
                    .with_timezone(&Utc),
            })
        })
        .collect())
}

fn strip_brackets(path: &str) -> &str {
    let path = path.trim();
    path.strip_prefix('<')
        .and_then(|p| p.strip_suffix('>'))
        .unwrap_or(path)
}

/// Header block and body of a message or part (split at the first empty line).
fn split_head_body(data: &[u8]) -> (String, &[u8]) {
    let text = data;
    for (sep, len) in [(&b"\r\n\r\n"[..], 4), (&b"\n\n"[..], 2)] {
        if let Some(i) = text.windows(len).position(|w| w == sep) {
            return (
                String::from_utf8_lossy(&text[..i]).into_owned(),
                &text[i + len..],
            );
        }
    }
    (String::from_utf8_lossy(text).into_owned(), &[])
}

/// The value of header `name` in a header block, with folded lines joined.
fn header_in(head: &str, name: &str) -> Option<String> {
    let mut unfolded: Vec<String> = Vec::new();
    for line in head.lines() {
        let line = line.trim_end_matches('\r');
        match unfolded.last_mut() {
            Some(last) if line.starts_with([' ', '\t']) => {
                last.push(' ');
                last.push_str(line.trim_start());
            }
            _ => unfolded.push(line.to_owned()),
        }
    }
    unfolded.into_iter().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim()
            .eq_ignore_ascii_case(name)
            .then(|| value.trim().to_owned())
    })
}

/// A parameter of a header value: `boundary` in `multipart/alternative; boundary="x"`.
fn parameter(value: &str, name: &str) -> Option<String> {
    value.split(';').skip(1).find_map(|param| {
        let (key, val) = param.split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case(name)
            .then(|| val.trim().trim_matches('"').to_owned())
    })
}

fn collect_parts(data: &[u8], out: &mut Vec<(String, String)>) {
    let (head, body) = split_head_body(data);
    let content_type = header_in(&head, "Content-Type").unwrap_or_else(|| "text/plain".into());
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if mime.starts_with("multipart/") {
        if let Some(boundary) = parameter(&content_type, "boundary") {
            for part in split_multipart(body, &boundary) {
                collect_parts(part, out);
            }
        }
        return;
    }
    let encoding = header_in(&head, "Content-Transfer-Encoding")
        .unwrap_or_default()
        .to_ascii_lowercase();
    let decoded = match encoding.as_str() {
        "quoted-printable" => quoted_printable::decode(body, quoted_printable::ParseMode::Robust)
            .unwrap_or_else(|_| body.to_vec()),
        "base64" => {
            let compact: Vec<u8> = body
                .iter()
                .copied()
                .filter(|b| !b.is_ascii_whitespace())
                .collect();
            base64::engine::general_purpose::STANDARD
                .decode(compact)
                .unwrap_or_else(|_| body.to_vec())
        }
        _ => body.to_vec(),
    };
    out.push((
        mime,
        String::from_utf8_lossy(&decoded).replace("\r\n", "\n"),
    ));
}

/// The parts between `--boundary` delimiter lines, up to `--boundary--`.
fn split_multipart<'a>(body: &'a [u8], boundary: &str) -> Vec<&'a [u8]> {
    let delimiter = format!("--{boundary}");
    let mut parts = Vec::new();
    let mut current: Option<usize> = None;
    let mut offset = 0;
    for line in body.split_inclusive(|&b| b == b'\n') {
        let trimmed = line.trim_ascii_end();
        if trimmed.starts_with(delimiter.as_bytes()) {
            if let Some(start) = current {
                // The line break before a delimiter belongs to the delimiter (RFC 2046).
                let part = &body[start..offset];
                let part = part
                    .strip_suffix(b"\r\n")
                    .or_else(|| part.strip_suffix(b"\n"))
                    .unwrap_or(part);
                parts.push(part);
            }
            if trimmed == format!("{delimiter}--").as_bytes() {
                return parts;
            }
            current = Some(offset + line.len());
        }
        offset += line.len();
    }
    parts
}

/// Decodes RFC 2047 encoded words (`=?utf-8?b?...?=`, `=?utf-8?q?...?=`) in a header value.
fn decode_words(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    let mut after_word = false;
    while let Some(start) = rest.find("=?") {
        let before = &rest[..start];
        let Some((text, len)) = parse_word(&rest[start..]) else {
            out.push_str(&rest[..start + 2]);
            rest = &rest[start + 2..];
            after_word = false;
            continue;
        };
        // White space between two encoded words is not part of the text.
        if !(after_word && before.trim().is_empty()) {
            out.push_str(before);
        }
        out.push_str(&text);
        rest = &rest[start + len..];
        after_word = true;
    }
    out.push_str(rest);
    out
}

/// One encoded word at the start of `s`: its decoded text and its length in `s`.
fn parse_word(s: &str) -> Option<(String, usize)> {
    let inner = s.strip_prefix("=?")?;
    let end = inner.find("?=")?;
    let mut fields = inner[..end].splitn(3, '?');
    let _charset = fields.next()?;
    let encoding = fields.next()?;
    let text = fields.next()?;
    let bytes = match encoding {
        "b" | "B" => base64::engine::general_purpose::STANDARD
            .decode(text)
            .ok()?,
        "q" | "Q" => quoted_printable::decode(
            text.replace('_', " ").as_bytes(),
            quoted_printable::ParseMode::Robust,
        )
        .ok()?,
        _ => return None,
    };
    Some((String::from_utf8_lossy(&bytes).into_owned(), end + 4))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(data: &str) -> ReceivedMessage {
        ReceivedMessage {
            from: "a@example.com".into(),
            to: vec!["b@example.com".into()],
            data: data.replace('\n', "\r\n").into_bytes(),
            received_at: Utc::now(),
        }
    }

    #[test]
    fn reads_multipart_alternative_with_quoted_printable_and_base64() {
        let m = message(
            "From: a@example.com\n\
             Subject: =?utf-8?b?SGVsbG8g8J+TrA==?=\n\
             Content-Type: multipart/alternative;\n boundary=\"XYZ\"\n\
             \n\
             --XYZ\n\
             Content-Type: text/plain; charset=utf-8\n\
             Content-Transfer-Encoding: quoted-printable\n\
             \n\
             https://example.com/auth?a=3D1&b=3D=\n\
             2\n\
             --XYZ\n\
             Content-Type: text/html; charset=utf-8\n\
             Content-Transfer-Encoding: base64\n\
             \n\
             PHA+aGk8L3A+\n\
             --XYZ--\n",
        );
        assert_eq!(m.subject().as_deref(), Some("Hello 📬"));
        assert_eq!(
            m.text().as_deref(),
            Some("https://example.com/auth?a=1&b=2")
        );
        assert_eq!(m.html().as_deref(), Some("<p>hi</p>"));
        assert_eq!(m.parts().len(), 2);
    }

    #[test]
    fn a_plain_message_is_one_part() {
        let m = message("Subject: plain\n\nbody line\n");
        assert_eq!(m.subject().as_deref(), Some("plain"));
        assert_eq!(m.text().as_deref(), Some("body line\n"));
        assert_eq!(m.html(), None);
    }
}
