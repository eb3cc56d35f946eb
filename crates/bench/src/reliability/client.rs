//! The suite's HTTP client: every answer is classified (never an early error), so a phase can
//! count 2xx/4xx/5xx and transport failures per operation.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde::Serialize;
use serde_json::Value;

/// One request's outcome.
#[derive(Debug)]
pub enum Reply {
    /// An HTTP answer: status, body, time to the full body.
    Http {
        /// HTTP status.
        status: u16,
        /// Reply body.
        body: bytes::Bytes,
        /// Time to the full reply (or the failure).
        latency: Duration,
    },
    /// No answer (connect/reset/timeout): text and time until the failure.
    Transport {
        /// What failed.
        error: String,
        /// Time until the failure.
        latency: Duration,
    },
}

impl Reply {
    /// The HTTP status, if there was an answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            Reply::Http { status, .. } => Some(*status),
            Reply::Transport { .. } => None,
        }
    }

    /// Time until the answer or the failure.
    pub fn latency(&self) -> Duration {
        match self {
            Reply::Http { latency, .. } | Reply::Transport { latency, .. } => *latency,
        }
    }

    /// The JSON body (Null when absent or not JSON).
    pub fn json(&self) -> Value {
        match self {
            Reply::Http { body, .. } => serde_json::from_slice(body).unwrap_or(Value::Null),
            Reply::Transport { .. } => Value::Null,
        }
    }

    /// `HTTP <status>: <start of body>` or the transport error, for samples.
    pub fn describe(&self) -> String {
        match self {
            Reply::Http { status, body, .. } => {
                let text = String::from_utf8_lossy(body);
                format!(
                    "HTTP {status}: {}",
                    text.chars().take(200).collect::<String>()
                )
            }
            Reply::Transport { error, .. } => format!("transport: {error}"),
        }
    }
}

/// A reqwest client bound to one server; identity headers per call (noauth).
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    /// Base URL of the server.
    pub base: String,
}

impl Client {
    /// A client for `base` with a per-request `timeout`.
    pub fn new(base: &str, timeout: Duration) -> Result<Client, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(1024)
            .tcp_nodelay(true)
            .no_proxy()
            .build()?;
        Ok(Client {
            http,
            base: base.trim_end_matches('/').to_string(),
        })
    }

    /// A JSON request as `project` (admin when `admin`).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        project: &str,
        admin: bool,
    ) -> Reply {
        let mut req = self
            .http
            .request(method, format!("{}{}", self.base, path))
            .header("accept", "application/json")
            .header("x-project-id", project);
        if admin {
            req = req.header("x-roles", "admin");
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        self.send(req).await
    }

    /// Sends a prepared request (the fuzzer builds its own).
    pub async fn send(&self, req: reqwest::RequestBuilder) -> Reply {
        let start = Instant::now();
        match req.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                match resp.bytes().await {
                    Ok(body) => Reply::Http {
                        status,
                        body,
                        latency: start.elapsed(),
                    },
                    Err(e) => Reply::Transport {
                        error: format!("reading the body: {e}"),
                        latency: start.elapsed(),
                    },
                }
            }
            Err(e) => Reply::Transport {
                error: error_chain(&e),
                latency: start.elapsed(),
            },
        }
    }

    /// The underlying reqwest client.
    pub fn raw(&self) -> &reqwest::Client {
        &self.http
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(c) = source {
        s.push_str(": ");
        s.push_str(&c.to_string());
        source = c.source();
    }
    s
}

/// Answers by class, per operation.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Counts {
    /// 2xx.
    pub ok: u64,
    /// 409: the object was busy (PENDING_*), as Octavia answers; expected under concurrency.
    pub conflict: u64,
    /// Other 4xx.
    pub client_error: u64,
    /// 5xx other than 501 (a failure).
    pub server_error: u64,
    /// 501: Octavia's "provider does not support a requested option" (intended).
    pub not_implemented: u64,
    /// No HTTP answer (a failure).
    pub transport: u64,
}

impl Counts {
    /// Count one reply.
    pub fn add(&mut self, reply: &Reply) {
        match reply.status() {
            Some(s) if (200..300).contains(&s) => self.ok += 1,
            Some(409) => self.conflict += 1,
            Some(501) => self.not_implemented += 1,
            Some(s) if (400..500).contains(&s) => self.client_error += 1,
            Some(_) => self.server_error += 1,
            None => self.transport += 1,
        }
    }

    /// Add another tally to this one.
    pub fn merge(&mut self, other: &Counts) {
        self.ok += other.ok;
        self.conflict += other.conflict;
        self.client_error += other.client_error;
        self.server_error += other.server_error;
        self.not_implemented += other.not_implemented;
        self.transport += other.transport;
    }

    /// Every counted reply.
    pub fn total(&self) -> u64 {
        self.ok
            + self.conflict
            + self.client_error
            + self.server_error
            + self.not_implemented
            + self.transport
    }

    /// 5xx (but 501) plus transport failures.
    pub fn failures(&self) -> u64 {
        self.server_error + self.transport
    }
}

/// Merges per-operation counts.
pub fn merge_ops(into: &mut BTreeMap<String, Counts>, from: &BTreeMap<String, Counts>) {
    for (k, v) in from {
        into.entry(k.clone()).or_default().merge(v);
    }
}

/// Adds a description to a bounded sample list.
pub fn sample(list: &mut Vec<String>, text: String) {
    if list.len() < 10 {
        list.push(text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(status: u16) -> Reply {
        Reply::Http {
            status,
            body: bytes::Bytes::new(),
            latency: Duration::ZERO,
        }
    }

    #[test]
    fn counts_classify_statuses() {
        let mut c = Counts::default();
        for s in [200, 201, 204, 409, 400, 404, 501, 500, 503] {
            c.add(&http(s));
        }
        c.add(&Reply::Transport {
            error: "reset".into(),
            latency: Duration::ZERO,
        });
        assert_eq!(
            c,
            Counts {
                ok: 3,
                conflict: 1,
                client_error: 2,
                server_error: 2,
                not_implemented: 1,
                transport: 1
            }
        );
        assert_eq!(c.failures(), 3);
        assert_eq!(c.total(), 10);
    }
}
