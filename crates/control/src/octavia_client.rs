//! A small client of klb's own Octavia API, used by `klb demo` and the end-to-end tests to
//! drive a load balancer the way tenants do (HTTP, JSON envelopes, polling for ACTIVE).

use std::time::{Duration, Instant};

use serde_json::Value;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The request did not get a reply.
    #[error("{method} {path}: {source}")]
    Transport {
        /// HTTP method.
        method: &'static str,
        /// Request path.
        path: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// The reply was an error.
    #[error("{method} {path}: HTTP {status}: {body}")]
    Status {
        /// HTTP method.
        method: &'static str,
        /// Request path.
        path: String,
        /// HTTP status.
        status: u16,
        /// Reply body.
        body: String,
    },
    /// A status was not reached in time.
    #[error("{path}: {what} not reached within {waited:?} (last: {last})")]
    Timeout {
        /// The polled object.
        path: String,
        /// The awaited status.
        what: String,
        /// How long the client polled.
        waited: Duration,
        /// The last status seen.
        last: String,
    },
    /// The object went to ERROR.
    #[error("{path}: went to ERROR: {body}")]
    Failed {
        /// The polled object.
        path: String,
        /// Its last body.
        body: String,
    },
}

/// Octavia API client (noauth: the project rides in `X-Project-Id`).
#[derive(Debug, Clone)]
pub struct OctaviaClient {
    http: reqwest::Client,
    base: String,
    project_id: String,
}

impl OctaviaClient {
    /// A client of the API at `base` (e.g. `http://127.0.0.1:9876`).
    pub fn new(base: impl Into<String>, project_id: impl Into<String>) -> Self {
        OctaviaClient {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .no_proxy()
                .build()
                .unwrap_or_default(),
            base: base.into().trim_end_matches('/').to_owned(),
            project_id: project_id.into(),
        }
    }

    async fn call(
        &self,
        method: &'static str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Option<Value>, ClientError> {
        let url = format!("{}{}", self.base, path);
        let mut req = match method {
            "POST" => self.http.post(&url),
            "PUT" => self.http.put(&url),
            "DELETE" => self.http.delete(&url),
            _ => self.http.get(&url),
        }
        .header("X-Project-Id", &self.project_id);
        if let Some(body) = body {
            req = req.json(body);
        }
        let transport = |source| ClientError::Transport {
            method,
            path: path.to_owned(),
            source,
        };
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status();
        let text = resp.text().await.map_err(transport)?;
        if status.as_u16() == 404 && method == "GET" {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(ClientError::Status {
                method,
                path: path.to_owned(),
                status: status.as_u16(),
                body: text,
            });
        }
        Ok(if text.is_empty() {
            Some(Value::Null)
        } else {
            Some(serde_json::from_str(&text).unwrap_or(Value::String(text)))
        })
    }

    /// POST `body` to `path`; returns the object inside the reply's `key` envelope.
    pub async fn create(&self, path: &str, key: &str, body: Value) -> Result<Value, ClientError> {
        let reply = self
            .call("POST", path, Some(&body))
            .await?
            .unwrap_or_default();
        Ok(reply.get(key).cloned().unwrap_or(reply))
    }

    /// PUT `body` to `path`.
    pub async fn update(&self, path: &str, body: Value) -> Result<Value, ClientError> {
        Ok(self
            .call("PUT", path, Some(&body))
            .await?
            .unwrap_or_default())
    }

    /// GET `path`; `None` on 404.
    pub async fn get(&self, path: &str) -> Result<Option<Value>, ClientError> {
        self.call("GET", path, None).await
    }

    /// DELETE `path`.
    pub async fn delete(&self, path: &str) -> Result<(), ClientError> {
        self.call("DELETE", path, None).await.map(|_| ())
    }

    /// Polls `path` until `envelope.field == want` (ERROR provisioning fails fast).
    pub async fn wait_for(
        &self,
        path: &str,
        envelope: &str,
        field: &str,
        want: &str,
        limit: Duration,
    ) -> Result<Duration, ClientError> {
        let start = Instant::now();
        let mut last = String::from("-");
        while start.elapsed() < limit {
            if let Some(reply) = self.get(path).await? {
                let obj = &reply[envelope];
                let value = obj[field].as_str().unwrap_or("-");
                if value == want {
                    return Ok(start.elapsed());
                }
                if obj["provisioning_status"] == "ERROR" && want != "ERROR" {
                    return Err(ClientError::Failed {
                        path: path.to_owned(),
                        body: obj.to_string(),
                    });
                }
                last = value.to_owned();
            }
            // 10 ms: the demo reports these waits as latencies (a member change takes tens
            // of ms), so the poll must be finer than what it measures.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Err(ClientError::Timeout {
            path: path.to_owned(),
            what: format!("{field} = {want}"),
            waited: limit,
            last,
        })
    }

    /// Polls `path` until it answers 404.
    pub async fn wait_gone(&self, path: &str, limit: Duration) -> Result<Duration, ClientError> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if self.get(path).await?.is_none() {
                return Ok(start.elapsed());
            }
            // 10 ms: the demo reports these waits as latencies (a member change takes tens
            // of ms), so the poll must be finer than what it measures.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Err(ClientError::Timeout {
            path: path.to_owned(),
            what: "deletion".to_owned(),
            waited: limit,
            last: "present".to_owned(),
        })
    }
}
