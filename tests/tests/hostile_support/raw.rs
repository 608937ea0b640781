//! A bare HTTP/1.1 client: the request goes out byte for byte as written, so a test can send
//! what a well-behaved client library would repair or refuse to send — `..` segments, raw
//! percent-encodings, non-ASCII header bytes, duplicate or contradictory headers.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest a hostile request may take to be answered: the services refuse them cheaply.
const ANSWER_WITHIN: Duration = Duration::from_secs(20);

/// A request being written: method, target (sent verbatim), headers, body.
#[derive(Debug, Clone)]
pub struct RawRequest {
    method: String,
    target: Vec<u8>,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
    /// `Content-Length` is added for the body unless the test frames the body itself.
    frame_body: bool,
}

impl RawRequest {
    pub fn new(method: &str, target: impl Into<Vec<u8>>) -> Self {
        Self {
            method: method.to_owned(),
            target: target.into(),
            headers: Vec::new(),
            body: Vec::new(),
            frame_body: true,
        }
    }

    pub fn get(target: impl Into<Vec<u8>>) -> Self {
        Self::new("GET", target)
    }

    pub fn post(target: impl Into<Vec<u8>>) -> Self {
        Self::new("POST", target)
    }

    pub fn delete(target: impl Into<Vec<u8>>) -> Self {
        Self::new("DELETE", target)
    }

    /// Adds a header (a second one with the same name is a second header line).
    pub fn header(mut self, name: &str, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    pub fn bearer(self, token: &str) -> Self {
        self.header("Authorization", format!("Bearer {token}"))
    }

    /// A body with its content type.
    pub fn body(mut self, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self.header("Content-Type", content_type)
    }

    pub fn json(self, value: &Value) -> Self {
        self.body("application/json", value.to_string())
    }

    /// A body without a content type.
    pub fn untyped_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// The test writes `Content-Length` / `Transfer-Encoding` itself (or leaves them out).
    pub fn unframed(mut self) -> Self {
        self.frame_body = false;
        self
    }

    fn to_bytes(&self, host: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.body.len() + 512);
        out.extend_from_slice(self.method.as_bytes());
        out.push(b' ');
        out.extend_from_slice(&self.target);
        out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        out.extend_from_slice(host.as_bytes());
        out.extend_from_slice(b"\r\nConnection: close\r\n");
        for (name, value) in &self.headers {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        }
        if self.frame_body && (!self.body.is_empty() || self.method != "GET") {
            out.extend_from_slice(format!("Content-Length: {}\r\n", self.body.len()).as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }

    /// Sends the request to `base_url` (`http://host:port`) and reads the answer.
    pub async fn send(&self, base_url: &str) -> Result<RawReply, String> {
        let host = base_url.trim_start_matches("http://").to_owned();
        let bytes = self.to_bytes(&host);
        tokio::time::timeout(ANSWER_WITHIN, exchange(&host, bytes))
            .await
            .map_err(|_| format!("no answer within {ANSWER_WITHIN:?}"))?
    }
}

async fn exchange(host: &str, request: Vec<u8>) -> Result<RawReply, String> {
    let stream = TcpStream::connect(host)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut reader, mut writer) = stream.into_split();
    // Written while the answer is read: a server may answer (413, 431) before it has read a
    // large request, and then stop reading it.
    let writing = tokio::spawn(async move {
        let _ = writer.write_all(&request).await;
        writer
    });
    let mut received = Vec::new();
    let read = reader.read_to_end(&mut received).await;
    drop(writing.await);
    if received.is_empty() {
        return Err(format!("connection closed without an answer ({read:?})"));
    }
    RawReply::parse(&received)
}

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct RawReply {
    pub status: u16,
    /// Names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawReply {
    fn parse(mut raw: &[u8]) -> Result<Self, String> {
        // Interim answers (`100 Continue`) come first; the final one follows.
        while raw.starts_with(b"HTTP/1.1 1") {
            match raw.windows(4).position(|w| w == b"\r\n\r\n") {
                Some(end) => raw = &raw[end + 4..],
                None => break,
            }
        }
        let end = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or("no end of the header section")?;
        let head = String::from_utf8_lossy(&raw[..end]);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line {status_line:?}"))?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
            .collect();
        let rest = &raw[end + 4..];
        let mut reply = Self {
            status,
            headers,
            body: Vec::new(),
        };
        reply.body = if reply
            .header("transfer-encoding")
            .is_some_and(|te| te.eq_ignore_ascii_case("chunked"))
        {
            dechunk(rest)?
        } else if let Some(length) = reply
            .header("content-length")
            .and_then(|l| l.parse::<usize>().ok())
        {
            rest[..length.min(rest.len())].to_vec()
        } else {
            rest.to_vec()
        };
        Ok(reply)
    }

    /// The first header `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// `error.code` of a house error body.
    pub fn code(&self) -> Option<String> {
        self.json()["error"]["code"].as_str().map(str::to_owned)
    }
}

fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("truncated chunk size")?;
        let size_text = String::from_utf8_lossy(&rest[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if rest.len() < size {
            return Err("truncated chunk".into());
        }
        out.extend_from_slice(&rest[..size]);
        rest = rest.get(size + 2..).unwrap_or_default();
    }
}
