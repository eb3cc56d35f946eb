//! One authenticated session for every OpenStack service klb calls.
//!
//! Keystone v3 authentication, the service catalog (region, interface), version discovery,
//! token renewal (before expiry and once more on a 401), the CA bundle / `insecure` options and
//! HTTP timeouts come from `openstack_sdk`'s [`AsyncOpenStack`]. Requests are klb's own typed
//! bodies sent through the SDK's `RestEndpoint` seam ([`Call`]): the SDK's generated endpoint
//! crates are one builder per microversion with private fields (23 server-create variants), add
//! minutes of build time, and Aodh and Barbican have none, so one small endpoint type serves
//! Nova, Neutron, Glance, Aodh and Barbican alike over the same session.

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use openstack_sdk::api::{ApiError, QueryAsync, QueryParams, RestEndpoint, raw};
use openstack_sdk::config::{Auth, CloudConfig};
use openstack_sdk::types::{ApiVersion, ServiceType};
use openstack_sdk::{AsyncOpenStack, RenewHandle, RestError};
use secrecy::SecretString;
use serde::de::DeserializeOwned;

use klb_cloud::{CloudError, CloudErrorKind, CloudResult};

/// How klb's service user authenticates with Keystone.
#[derive(Clone)]
pub enum Credentials {
    /// User name and password, scoped to a project.
    Password {
        /// Keystone user name.
        username: String,
        /// Its password (never logged).
        password: SecretString,
        /// Domain of the user.
        user_domain_name: String,
        /// Project to scope the token to.
        project_name: String,
        /// Domain of that project.
        project_domain_name: String,
    },
    /// An application credential (already scoped to its project).
    ApplicationCredential {
        /// Application credential id.
        id: String,
        /// Its secret (never logged).
        secret: SecretString,
    },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Password {
                username,
                project_name,
                ..
            } => f
                .debug_struct("Password")
                .field("username", username)
                .field("project_name", project_name)
                .finish_non_exhaustive(),
            Credentials::ApplicationCredential { id, .. } => f
                .debug_struct("ApplicationCredential")
                .field("id", id)
                .finish_non_exhaustive(),
        }
    }
}

/// Where and how to reach the cloud.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Keystone v3 URL (`auth_url`); a legacy `/v2.0` URL is rewritten to `/v3` with a warning.
    pub auth_url: String,
    /// How klb authenticates.
    pub credentials: Credentials,
    /// Catalog region (`None`: the only one).
    pub region: Option<String>,
    /// Catalog interface: `public`, `internal` or `admin`.
    pub interface: String,
    /// Extra CA bundle (PEM) for the cloud's TLS endpoints.
    pub ca_bundle: Option<PathBuf>,
    /// Skip TLS verification (test clouds only; logged as a warning).
    pub insecure: bool,
    /// Timeout of every HTTP call.
    pub timeout: Duration,
    /// Neutron endpoint instead of the catalog's (the seed's `endpoint_url`).
    pub network_endpoint: Option<String>,
}

/// An authenticated session (cheap to clone).
#[derive(Clone)]
pub struct Session {
    client: AsyncOpenStack,
    timeout: Duration,
    /// Renews the token before it expires while any clone of the session lives.
    _renew: Arc<RenewHandle>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").finish_non_exhaustive()
    }
}

/// Keystone v3 URL from the configured one (the seed shows a `/v2.0` URL).
pub fn v3_auth_url(url: &str) -> String {
    let trimmed = url.trim_end_matches('/');
    match trimmed.strip_suffix("/v2.0") {
        Some(base) => {
            tracing::warn!(auth_url = url, "Keystone v2.0 URL given; using v3");
            format!("{base}/v3")
        }
        None if trimmed.ends_with("/v3") => trimmed.to_owned(),
        None => format!("{trimmed}/v3"),
    }
}

impl Session {
    /// Authenticates and reads the catalog; fails if Keystone refuses or is unreachable.
    pub async fn connect(cfg: &SessionConfig) -> CloudResult<Session> {
        let mut auth = Auth {
            auth_url: Some(v3_auth_url(&cfg.auth_url)),
            ..Auth::default()
        };
        let auth_type = match &cfg.credentials {
            Credentials::Password {
                username,
                password,
                user_domain_name,
                project_name,
                project_domain_name,
            } => {
                auth.username = Some(username.clone());
                auth.password = Some(password.clone());
                auth.user_domain_name = Some(user_domain_name.clone());
                auth.project_name = Some(project_name.clone());
                auth.project_domain_name = Some(project_domain_name.clone());
                "v3password"
            }
            Credentials::ApplicationCredential { id, secret } => {
                auth.application_credential_id = Some(id.clone());
                auth.application_credential_secret = Some(secret.clone());
                "v3applicationcredential"
            }
        };
        let mut config = CloudConfig {
            auth: Some(auth),
            auth_type: Some(auth_type.to_owned()),
            interface: Some(cfg.interface.clone()),
            region_name: cfg.region.clone(),
            name: Some("klb".to_owned()),
            cacert: cfg
                .ca_bundle
                .as_ref()
                .map(|p| p.to_string_lossy().into_owned()),
            verify: Some(!cfg.insecure),
            // Tokens are secrets: never written to a cache file.
            auth_cache: Some(false),
            ..CloudConfig::default()
        };
        if let Some(endpoint) = &cfg.network_endpoint {
            config.options.insert(
                "network_endpoint_override".to_owned(),
                endpoint.clone().into(),
            );
        }
        if cfg.insecure {
            tracing::warn!("TLS verification of the OpenStack endpoints is disabled");
        }
        let client = AsyncOpenStack::builder(&config)
            .disable_auth_cache(true)
            .renew_auth(true)
            .max_auth_retries(1)
            .http_timeout(cfg.timeout)
            .http_connect_timeout(cfg.timeout.min(Duration::from_secs(5)))
            .connect();
        let client = tokio::time::timeout(cfg.timeout * 2, client)
            .await
            .map_err(|_| {
                CloudError::new(
                    "authenticate",
                    &cfg.auth_url,
                    CloudErrorKind::Timeout,
                    "Keystone did not answer",
                )
            })?
            .map_err(|e| {
                let text = e.to_string();
                let kind = if text.contains("401")
                    || text.contains("nauthorized")
                    || text.contains("requires authentication")
                {
                    CloudErrorKind::Auth
                } else {
                    CloudErrorKind::Unavailable
                };
                CloudError::new("authenticate", &cfg.auth_url, kind, text)
            })?;
        // Renew a minute before expiry so calls rarely meet an expired token.
        let renew = client.enable_auto_renew(chrono::TimeDelta::minutes(1));
        Ok(Session {
            client,
            timeout: cfg.timeout,
            _renew: Arc::new(renew),
        })
    }

    /// Sends `call` and decodes the JSON reply (under `call.key` when set).
    pub async fn json<T: DeserializeOwned>(&self, call: &Call) -> CloudResult<T> {
        let (status, body) = self.send(call).await?;
        if body.is_empty() || status == StatusCode::NO_CONTENT {
            return Err(call.error(CloudErrorKind::Other, "empty reply where JSON was expected"));
        }
        let mut value: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| call.error(CloudErrorKind::Other, format!("bad JSON reply: {e}")))?;
        if let Some(key) = call.key {
            value = value
                .get_mut(key)
                .map(serde_json::Value::take)
                .ok_or_else(|| call.error(CloudErrorKind::Other, format!("reply has no {key}")))?;
        }
        serde_json::from_value(value)
            .map_err(|e| call.error(CloudErrorKind::Other, format!("unexpected reply: {e}")))
    }

    /// Sends `call`, ignoring the body (deletes, actions). A 404 is `Ok(false)`.
    pub async fn send_ok(&self, call: &Call) -> CloudResult<bool> {
        match self.send(call).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind == CloudErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Sends `call` and returns status and body of a successful reply; errors are classified.
    pub async fn send(&self, call: &Call) -> CloudResult<(StatusCode, Bytes)> {
        let query = raw(call.clone()).skip_error_check(true);
        let reply: Result<http::Response<Bytes>, _> =
            tokio::time::timeout(self.timeout, query.query_async(&self.client))
                .await
                .map_err(|_| call.error(CloudErrorKind::Timeout, "no answer in time"))?;
        let response = reply.map_err(|e| call.classify_transport(e))?;
        let status = response.status();
        let body = response.into_body();
        if status.is_success() {
            Ok((status, body))
        } else {
            Err(call.classify(status, &body))
        }
    }

    /// The project klb's token is scoped to.
    pub fn project_id(&self) -> Option<String> {
        use openstack_sdk::api::RestClient;
        self.client.get_current_project().and_then(|p| p.id)
    }
}

/// One REST call: a typed body over the shared session.
#[derive(Debug, Clone)]
pub struct Call {
    /// For errors: the cloud operation (`create_server`, ...).
    pub operation: &'static str,
    /// For errors: the resource id or name.
    pub resource: String,
    method: Method,
    service: ServiceType,
    path: String,
    query: Vec<(String, String)>,
    body: Option<Vec<u8>>,
    /// Reply JSON is under this key (`server`, `ports`, ...).
    key: Option<&'static str>,
    /// Microversion (Nova).
    version: Option<ApiVersion>,
    headers: HeaderMap,
}

impl Call {
    /// A call named `operation` on `resource` (both for errors and logs) to `path` of `service`.
    pub fn new(
        operation: &'static str,
        resource: impl Into<String>,
        method: Method,
        service: ServiceType,
        path: impl Into<String>,
    ) -> Self {
        Call {
            operation,
            resource: resource.into(),
            method,
            service,
            path: path.into(),
            query: Vec::new(),
            body: None,
            key: None,
            version: None,
            headers: HeaderMap::new(),
        }
    }

    /// Adds a query parameter.
    pub fn query(mut self, key: &str, value: impl Into<String>) -> Self {
        self.query.push((key.to_owned(), value.into()));
        self
    }

    /// Sets the JSON body.
    pub fn body(mut self, body: &serde_json::Value) -> Self {
        self.body = Some(body.to_string().into_bytes());
        self
    }

    /// The reply JSON is under this key.
    pub fn key(mut self, key: &'static str) -> Self {
        self.key = Some(key);
        self
    }

    /// Sends this microversion.
    pub fn version(mut self, major: u8, minor: u8) -> Self {
        self.version = Some(ApiVersion::new(major, minor));
        self
    }

    /// Sets `Accept` (e.g. Barbican payloads).
    pub fn accept(mut self, mime: &'static str) -> Self {
        self.headers
            .insert(http::header::ACCEPT, HeaderValue::from_static(mime));
        self
    }

    fn error(&self, kind: CloudErrorKind, message: impl Into<String>) -> CloudError {
        CloudError::new(self.operation, &self.resource, kind, message)
    }

    fn classify_transport(&self, e: ApiError<RestError>) -> CloudError {
        match e {
            ApiError::OpenStack { status, msg, .. } => self.classify(status, msg.as_bytes()),
            ApiError::OpenStackService { status, data, .. } => {
                self.classify(status, data.as_bytes())
            }
            ApiError::OpenStackUnrecognized { status, obj, .. } => {
                self.classify(status, obj.to_string().as_bytes())
            }
            other => self.error(CloudErrorKind::Unavailable, other.to_string()),
        }
    }

    /// Maps an error reply to the flows' retryable/permanent split.
    fn classify(&self, status: StatusCode, body: &[u8]) -> CloudError {
        let message = fault_message(body);
        let lower = message.to_ascii_lowercase();
        let quota = lower.contains("quota") || lower.contains("overquota");
        let kind = match status.as_u16() {
            404 => CloudErrorKind::NotFound,
            401 => CloudErrorKind::Auth,
            403 | 413 if quota => CloudErrorKind::Quota,
            409 if quota => CloudErrorKind::Quota,
            403 => CloudErrorKind::Auth,
            409 => CloudErrorKind::Conflict,
            400 | 405 | 406 | 415 | 422 => CloudErrorKind::Invalid,
            408 | 504 => CloudErrorKind::Timeout,
            429 | 500..=599 => CloudErrorKind::Unavailable,
            _ => CloudErrorKind::Other,
        };
        let mut err = self.error(kind, format!("{status}: {message}"));
        // An address or port already taken does not free itself: revert, with the reason.
        if kind == CloudErrorKind::Conflict
            && (lower.contains("already allocated")
                || lower.contains("in use")
                || lower.contains("inuse"))
        {
            err = err.with_retryable(false);
        }
        err
    }
}

/// The human part of an OpenStack error body (`{"NeutronError": {"message": ..}}`,
/// `{"badRequest": {"message": ..}}`, `{"description": ..}`, ...), capped in length.
fn fault_message(body: &[u8]) -> String {
    fn find(v: &serde_json::Value) -> Option<String> {
        match v {
            serde_json::Value::Object(map) => {
                for key in ["message", "description", "faultstring", "title"] {
                    if let Some(serde_json::Value::String(s)) = map.get(key) {
                        return Some(s.clone());
                    }
                }
                map.values().find_map(find)
            }
            serde_json::Value::String(s) => Some(s.clone()),
            _ => None,
        }
    }
    let text = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| find(&v))
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    let text = text.trim();
    match text.char_indices().nth(300) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}

impl RestEndpoint for Call {
    fn method(&self) -> Method {
        self.method.clone()
    }

    fn endpoint(&self) -> Cow<'static, str> {
        Cow::Owned(self.path.clone())
    }

    fn service_type(&self) -> ServiceType {
        self.service.clone()
    }

    fn parameters(&self) -> QueryParams<'_> {
        let mut params = QueryParams::default();
        for (k, v) in &self.query {
            params.push(k.as_str(), v.as_str());
        }
        params
    }

    fn body(&self) -> Result<Option<(&'static str, Vec<u8>)>, openstack_sdk::api::BodyError> {
        Ok(self.body.clone().map(|b| ("application/json", b)))
    }

    fn request_headers(&self) -> Option<&HeaderMap> {
        (!self.headers.is_empty()).then_some(&self.headers)
    }

    fn api_version(&self) -> Option<ApiVersion> {
        self.version
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call() -> Call {
        Call::new(
            "create_port",
            "p",
            Method::POST,
            ServiceType::Network,
            "ports",
        )
    }

    #[test]
    fn errors_keep_the_flows_split() {
        let check = |status: u16, body: &str, kind: CloudErrorKind, retryable: bool| {
            let e = call().classify(StatusCode::from_u16(status).unwrap(), body.as_bytes());
            assert_eq!(
                (e.kind, e.retryable),
                (kind, retryable),
                "{status} {body}: {e}"
            );
        };
        check(
            409,
            r#"{"NeutronError":{"type":"OverQuota","message":"Quota exceeded for resources: ['port']."}}"#,
            CloudErrorKind::Quota,
            false,
        );
        check(
            403,
            r#"{"forbidden":{"message":"Quota exceeded for instances: Requested 1, but already used 10 of 10 instances"}}"#,
            CloudErrorKind::Quota,
            false,
        );
        check(
            409,
            r#"{"NeutronError":{"type":"IpAddressAlreadyAllocated","message":"IP address 198.19.0.5 already allocated in subnet x"}}"#,
            CloudErrorKind::Conflict,
            false,
        );
        check(
            409,
            r#"{"NeutronError":{"type":"PortInUse","message":"Unable to complete operation on port p for network n. The port is in use."}}"#,
            CloudErrorKind::Conflict,
            false,
        );
        check(
            409,
            r#"{"conflictingRequest":{"message":"Cannot 'delete' instance while it is in task_state spawning"}}"#,
            CloudErrorKind::Conflict,
            true,
        );
        check(
            400,
            r#"{"badRequest":{"message":"Image 1234 could not be found."}}"#,
            CloudErrorKind::Invalid,
            false,
        );
        check(
            503,
            "Service Unavailable",
            CloudErrorKind::Unavailable,
            true,
        );
        check(404, "{}", CloudErrorKind::NotFound, false);
    }

    #[test]
    fn fault_messages_are_found_and_capped() {
        assert_eq!(
            fault_message(br#"{"itemNotFound":{"message":"Image not found.","code":404}}"#),
            "Image not found."
        );
        assert_eq!(fault_message(b"plain text"), "plain text");
        assert!(fault_message("x".repeat(1000).as_bytes()).len() < 310);
    }

    #[test]
    fn legacy_auth_urls_become_v3() {
        assert_eq!(
            v3_auth_url("http://keystone:5000/v2.0/"),
            "http://keystone:5000/v3"
        );
        assert_eq!(v3_auth_url("http://k:5000/v3"), "http://k:5000/v3");
        assert_eq!(v3_auth_url("http://k:5000"), "http://k:5000/v3");
    }
}
