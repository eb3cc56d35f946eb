//! Keystone v3 token validation, the way keystonemiddleware's `auth_token` does it.
//!
//! The user's `X-Auth-Token` is validated with `GET {auth_url}/auth/tokens?nocatalog`, sending
//! klb's own service token in `X-Auth-Token` and the user's token in `X-Subject-Token`. The
//! service token comes from password authentication (`POST {auth_url}/auth/tokens`, scoped to
//! the service project); it is renewed shortly before it expires and once more when Keystone
//! answers 401 to a validation (revoked, or Keystone restarted with new fernet keys).
//!
//! Validated tokens are cached in memory until the earlier of `cache_seconds` and the token's
//! own `expires_at`; the cache is bounded (expired entries are dropped first, then the
//! entries closest to expiry). A revoked token therefore stays accepted for at most
//! `cache_seconds`, exactly keystonemiddleware's `token_cache_time` trade-off.
//!
//! Secrets (the service password, the service token, users' tokens) are held as
//! [`Secret`] or only as map keys and never appear in logs or error messages.

use std::collections::HashMap;
use std::sync::{Arc, Once};
use std::time::Duration;

use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::Mutex;

use crate::auth::Secret;
use crate::auth::policy::{OctaviaPolicy, PolicyOptions};
use crate::context::{AuthError, Authenticator, RequestContext};

/// The 401 message keystonemiddleware uses for a missing or invalid token.
pub const UNAUTHORIZED: &str = "The request you have made requires authentication.";

/// How long before its expiry the service token is renewed.
const SERVICE_TOKEN_MARGIN: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

/// Longest `X-Auth-Token` accepted; real tokens (fernet, JWS) are a few hundred bytes.
const MAX_TOKEN_LEN: usize = 8192;

/// Settings of the Keystone authenticator (`[keystone]` in `klb.toml`). `Debug` redacts the
/// password (a [`Secret`]) and any credentials in `auth_url`.
#[derive(Clone)]
pub struct KeystoneConfig {
    /// Identity endpoint, e.g. `https://keystone.example:5000/v3`. An unversioned URL gets
    /// `/v3` appended; a legacy `/v2.0` URL is mapped to `/v3` (with one warning).
    pub auth_url: String,
    /// klb's service user.
    pub username: String,
    /// Its password.
    pub password: Secret,
    /// The service project the service token is scoped to.
    pub project_name: String,
    /// Domain of the service user.
    pub user_domain_name: String,
    /// Domain of the service project.
    pub project_domain_name: String,
    /// Upper bound for caching a validated token (keystonemiddleware's `token_cache_time`).
    pub cache_ttl: Duration,
    /// Largest number of cached tokens.
    pub cache_max_entries: usize,
    /// Timeout of each call to Keystone.
    pub request_timeout: Duration,
    /// Policy knobs that shape the context (`is_admin`, scope enforcement).
    pub policy: PolicyOptions,
}

impl std::fmt::Debug for KeystoneConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeystoneConfig")
            .field("auth_url", &redact_userinfo(&self.auth_url))
            .field("username", &self.username)
            .field("password", &self.password)
            .field("project_name", &self.project_name)
            .field("user_domain_name", &self.user_domain_name)
            .field("project_domain_name", &self.project_domain_name)
            .field("cache_ttl", &self.cache_ttl)
            .field("cache_max_entries", &self.cache_max_entries)
            .field("request_timeout", &self.request_timeout)
            .field("policy", &self.policy)
            .finish()
    }
}

impl KeystoneConfig {
    /// Defaults for everything but the endpoint and the credentials: domains `Default`,
    /// cache 300 s / 10,000 tokens, 10 s timeout.
    pub fn new(
        auth_url: impl Into<String>,
        username: impl Into<String>,
        password: Secret,
        project_name: impl Into<String>,
    ) -> KeystoneConfig {
        KeystoneConfig {
            auth_url: auth_url.into(),
            username: username.into(),
            password,
            project_name: project_name.into(),
            user_domain_name: "Default".to_owned(),
            project_domain_name: "Default".to_owned(),
            cache_ttl: Duration::from_secs(300),
            cache_max_entries: 10_000,
            request_timeout: Duration::from_secs(10),
            policy: PolicyOptions::default(),
        }
    }
}

/// Failures of the Keystone authenticator. None of them carries a secret.
#[derive(Debug, thiserror::Error)]
pub enum KeystoneError {
    /// `auth_url` is not a usable http(s) URL.
    #[error("invalid Keystone auth_url {url:?}: {reason}")]
    InvalidUrl {
        /// The configured value.
        url: String,
        /// Why.
        reason: String,
    },
    /// A required setting is empty.
    #[error("the Keystone setting {0} is required")]
    MissingSetting(&'static str),
    /// The HTTP client could not be built.
    #[error("cannot build the Keystone HTTP client")]
    Client(#[source] reqwest::Error),
    /// Keystone could not be reached or its answer could not be read.
    #[error("Keystone request {operation} failed")]
    Unreachable {
        /// `authenticate` or `validate`.
        operation: &'static str,
        /// The transport error (its text names the URL, never a token).
        #[source]
        source: reqwest::Error,
    },
    /// Keystone refused klb's service credentials.
    #[error("Keystone refused the service credentials of user {username:?} (HTTP {status})")]
    ServiceAuth {
        /// The service user.
        username: String,
        /// Keystone's status.
        status: u16,
    },
    /// An answer klb does not expect.
    #[error("Keystone answered HTTP {status} to {operation}")]
    Unexpected {
        /// `authenticate` or `validate`.
        operation: &'static str,
        /// Keystone's status.
        status: u16,
    },
    /// A token body klb cannot read.
    #[error("malformed Keystone token response: {0}")]
    Malformed(String),
    /// The user's token is missing, unknown, revoked or expired.
    #[error("the token is missing, invalid or expired")]
    InvalidToken,
}

impl KeystoneError {
    /// True when the user's token is at fault (401); false when Keystone or klb's own
    /// credentials are (keystonemiddleware answers 503 then).
    pub fn is_client_error(&self) -> bool {
        matches!(self, KeystoneError::InvalidToken)
    }
}

/// What a valid token says about its bearer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedToken {
    /// User id.
    pub user_id: String,
    /// User name.
    pub user_name: Option<String>,
    /// Project id of a project-scoped token.
    pub project_id: Option<String>,
    /// Project name of a project-scoped token.
    pub project_name: Option<String>,
    /// Domain id of a domain-scoped token.
    pub domain_id: Option<String>,
    /// `Some("all")` for a system-scoped token.
    pub system_scope: Option<String>,
    /// Effective role names, lower-case (Keystone includes implied roles).
    pub roles: Vec<String>,
    /// When Keystone stops accepting the token.
    pub expires_at: DateTime<Utc>,
}

/// The Keystone [`Authenticator`]. Cheap to share behind an `Arc`.
pub struct KeystoneAuth {
    config: KeystoneConfig,
    /// Normalized identity URL ending in `/v3`, no trailing slash.
    base: String,
    http: reqwest::Client,
    service: Mutex<Option<ServiceToken>>,
    cache: Mutex<HashMap<String, CacheEntry>>,
    /// One gate per token being validated, so concurrent first requests with the same token
    /// make one Keystone call (the others wait, then read the cache).
    inflight: Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

impl std::fmt::Debug for KeystoneAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeystoneAuth")
            .field("base", &self.base)
            .field("username", &self.config.username)
            .finish()
    }
}

struct ServiceToken {
    token: Secret,
    expires_at: DateTime<Utc>,
}

/// A cached validation: `Some` for a valid token, `None` for one Keystone refused (token ids
/// are never reused, so "unknown" stays true; keystonemiddleware caches those too).
struct CacheEntry {
    token: Option<ValidatedToken>,
    until: DateTime<Utc>,
}

static V2_WARNING: Once = Once::new();

/// Maps `auth_url` to the v3 endpoint: `/v3` kept, `/v2.0` replaced (one warning per
/// process), anything else gets `/v3` appended.
pub fn v3_url(auth_url: &str) -> Result<String, KeystoneError> {
    let invalid = |reason: &str| KeystoneError::InvalidUrl {
        url: redact_userinfo(auth_url),
        reason: reason.to_owned(),
    };
    let parsed = reqwest::Url::parse(auth_url.trim()).map_err(|e| invalid(&e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(invalid("the scheme must be http or https"));
    }
    // Credentials belong in username/password: a URL is logged and shown in errors.
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(invalid("credentials in the URL are not allowed"));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(invalid("a query or fragment is not allowed"));
    }
    let trimmed = parsed.as_str().trim_end_matches('/');
    if trimmed.ends_with("/v3") {
        Ok(trimmed.to_owned())
    } else if let Some(root) = trimmed.strip_suffix("/v2.0") {
        V2_WARNING.call_once(|| {
            tracing::warn!(auth_url = %trimmed, "Keystone v2.0 is retired: using the v3 API at the same root");
        });
        Ok(format!("{root}/v3"))
    } else {
        Ok(format!("{trimmed}/v3"))
    }
}

/// `scheme://user:pass@host/...` → `scheme://***@host/...` (for messages about a bad URL).
fn redact_userinfo(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(start), Some(at)) if at > start + 3 => {
            format!("{}***{}", &url[..start + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

impl KeystoneAuth {
    /// Builds the authenticator; no request is sent until the first validation.
    pub fn new(config: KeystoneConfig) -> Result<KeystoneAuth, KeystoneError> {
        let base = v3_url(&config.auth_url)?;
        for (key, value) in [
            ("username", config.username.as_str()),
            ("password", config.password.expose()),
            ("project_name", config.project_name.as_str()),
            ("user_domain_name", config.user_domain_name.as_str()),
            ("project_domain_name", config.project_domain_name.as_str()),
        ] {
            if value.trim().is_empty() {
                return Err(KeystoneError::MissingSetting(key));
            }
        }
        let http = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .connect_timeout(config.request_timeout)
            .build()
            .map_err(KeystoneError::Client)?;
        Ok(KeystoneAuth {
            config,
            base,
            http,
            service: Mutex::new(None),
            cache: Mutex::new(HashMap::new()),
            inflight: Mutex::new(HashMap::new()),
        })
    }

    /// The v3 endpoint in use.
    pub fn endpoint(&self) -> &str {
        &self.base
    }

    /// Validates a user token, from the cache when possible.
    pub async fn validate(&self, token: &str) -> Result<ValidatedToken, KeystoneError> {
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return Err(KeystoneError::InvalidToken);
        }
        if let Some(hit) = self.cached(token).await {
            return hit;
        }
        let gate = self
            .inflight
            .lock()
            .await
            .entry(token.to_owned())
            .or_default()
            .clone();
        let result = {
            let _turn = gate.lock().await;
            // Whoever held the gate before may have filled the cache.
            match self.cached(token).await {
                Some(hit) => hit,
                None => self.validate_and_cache(token).await,
            }
        };
        let mut inflight = self.inflight.lock().await;
        // Every waiter drops its clone under this lock, so the last one out sees only the
        // map's reference and removes the gate.
        drop(gate);
        if inflight
            .get(token)
            .is_some_and(|g| Arc::strong_count(g) == 1)
        {
            inflight.remove(token);
        }
        result
    }

    /// A live cache entry for `token` (expired entries are dropped).
    async fn cached(&self, token: &str) -> Option<Result<ValidatedToken, KeystoneError>> {
        let now = Utc::now();
        let mut cache = self.cache.lock().await;
        match cache.get(token) {
            Some(e) if e.until > now => Some(e.token.clone().ok_or(KeystoneError::InvalidToken)),
            Some(_) => {
                cache.remove(token);
                None
            }
            None => None,
        }
    }

    async fn validate_and_cache(&self, token: &str) -> Result<ValidatedToken, KeystoneError> {
        let result = match self.validate_remote(token).await {
            Ok(v) if v.expires_at > Utc::now() => Ok(v),
            Ok(_) | Err(KeystoneError::InvalidToken) => Err(KeystoneError::InvalidToken),
            // Keystone or klb's credentials failed: nothing is known about the token.
            Err(e) => return Err(e),
        };
        let now = Utc::now();
        let ttl =
            chrono::TimeDelta::from_std(self.config.cache_ttl).unwrap_or(chrono::TimeDelta::MAX);
        let mut until = now
            .checked_add_signed(ttl)
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        if let Ok(v) = &result {
            until = until.min(v.expires_at);
        }
        if self.config.cache_max_entries > 0 && ttl > chrono::TimeDelta::zero() {
            let mut cache = self.cache.lock().await;
            if cache.len() >= self.config.cache_max_entries && !cache.contains_key(token) {
                evict(&mut cache, self.config.cache_max_entries, now);
            }
            cache.insert(
                token.to_owned(),
                CacheEntry {
                    token: result.as_ref().ok().cloned(),
                    until,
                },
            );
        }
        result
    }

    /// Number of cached tokens (for metrics and tests).
    pub async fn cached_tokens(&self) -> usize {
        self.cache.lock().await.len()
    }

    /// The request context of a validated token.
    pub fn context(&self, token: &ValidatedToken) -> RequestContext {
        let policy = OctaviaPolicy::new(self.config.policy);
        // Every Octavia rule is project-scoped: with scope enforcement a token of another
        // scope keeps its identity but carries no roles, so every policy check refuses (403).
        let roles = if self.config.policy.enforce_scope && token.project_id.is_none() {
            Vec::new()
        } else {
            token.roles.clone()
        };
        let is_admin = policy.context_is_admin(&roles);
        let mut ctx = RequestContext::new(token.project_id.clone(), roles, is_admin);
        ctx.user_id = Some(token.user_id.clone());
        ctx
    }

    /// One validation call, renewing the service token once if Keystone refuses it.
    async fn validate_remote(&self, token: &str) -> Result<ValidatedToken, KeystoneError> {
        let url = format!("{}/auth/tokens?nocatalog", self.base);
        let mut refused: Option<Secret> = None;
        for attempt in 0..2 {
            let service = self.service_token(refused.as_ref()).await?;
            let resp = self
                .http
                .get(&url)
                .header("X-Auth-Token", service.expose())
                .header("X-Subject-Token", token)
                .header("Accept", "application/json")
                .send()
                .await
                .map_err(|source| KeystoneError::Unreachable {
                    operation: "validate",
                    source,
                })?;
            match resp.status().as_u16() {
                200 => {
                    let body = resp
                        .bytes()
                        .await
                        .map_err(|source| KeystoneError::Unreachable {
                            operation: "validate",
                            source,
                        })?;
                    let validated = parse_token(&body)?;
                    tracing::debug!(user_id = %validated.user_id, project_id = ?validated.project_id, "token validated");
                    return Ok(validated);
                }
                // Keystone answers 404 for an unknown, revoked or expired subject token.
                404 => return Err(KeystoneError::InvalidToken),
                401 if attempt == 0 => {
                    tracing::info!("Keystone refused the service token; authenticating again");
                    refused = Some(service);
                }
                401 => {
                    return Err(KeystoneError::ServiceAuth {
                        username: self.config.username.clone(),
                        status: 401,
                    });
                }
                status => {
                    return Err(KeystoneError::Unexpected {
                        operation: "validate",
                        status,
                    });
                }
            }
        }
        Err(KeystoneError::ServiceAuth {
            username: self.config.username.clone(),
            status: 401,
        })
    }

    /// The current service token, authenticating when there is none, it is about to expire,
    /// or it is the one Keystone just `refused`. Requests refused together all pass the
    /// same token: the first to take the lock renews it, the others get that renewal instead
    /// of one password authentication each (a slow hash on Keystone's side).
    async fn service_token(&self, refused: Option<&Secret>) -> Result<Secret, KeystoneError> {
        let mut slot = self.service.lock().await;
        if let Some(t) = slot.as_ref()
            && refused != Some(&t.token)
            && t.expires_at - SERVICE_TOKEN_MARGIN > Utc::now()
        {
            return Ok(t.token.clone());
        }
        let fresh = self.password_auth().await?;
        let token = fresh.token.clone();
        *slot = Some(fresh);
        Ok(token)
    }

    /// Password authentication of klb's service user, scoped to the service project.
    async fn password_auth(&self) -> Result<ServiceToken, KeystoneError> {
        let c = &self.config;
        let body = json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": c.username, "domain": {"name": c.user_domain_name}, "password": c.password.expose()}}},
            "scope": {"project": {"name": c.project_name, "domain": {"name": c.project_domain_name}}}
        }});
        let resp = self
            .http
            .post(format!("{}/auth/tokens?nocatalog", self.base))
            .json(&body)
            .send()
            .await
            .map_err(|source| KeystoneError::Unreachable {
                operation: "authenticate",
                source,
            })?;
        let status = resp.status().as_u16();
        match status {
            200 | 201 => {}
            400 | 401 | 403 | 404 => {
                return Err(KeystoneError::ServiceAuth {
                    username: c.username.clone(),
                    status,
                });
            }
            _ => {
                return Err(KeystoneError::Unexpected {
                    operation: "authenticate",
                    status,
                });
            }
        }
        let token = resp
            .headers()
            .get("X-Subject-Token")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .map(Secret::new)
            .ok_or_else(|| {
                KeystoneError::Malformed(
                    "no X-Subject-Token header in the authentication answer".to_owned(),
                )
            })?;
        let body = resp
            .bytes()
            .await
            .map_err(|source| KeystoneError::Unreachable {
                operation: "authenticate",
                source,
            })?;
        let expires_at = parse_token(&body)?.expires_at;
        tracing::info!(user = %c.username, project = %c.project_name, %expires_at, "obtained a Keystone service token");
        Ok(ServiceToken { token, expires_at })
    }
}

/// Drops expired entries; if the cache is still full, drops the tenth closest to expiry.
fn evict(cache: &mut HashMap<String, CacheEntry>, max: usize, now: DateTime<Utc>) {
    cache.retain(|_, e| e.until > now);
    if cache.len() < max {
        return;
    }
    let mut untils: Vec<DateTime<Utc>> = cache.values().map(|e| e.until).collect();
    untils.sort_unstable();
    let cut = untils[(max / 10).min(untils.len() - 1)];
    cache.retain(|_, e| e.until > cut);
}

#[derive(Deserialize)]
struct TokenBody {
    token: TokenData,
}

#[derive(Deserialize)]
struct TokenData {
    expires_at: String,
    user: Option<Named>,
    project: Option<Named>,
    domain: Option<Named>,
    system: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    roles: Vec<Named>,
}

#[derive(Deserialize)]
struct Named {
    id: Option<String>,
    name: Option<String>,
}

/// Reads a Keystone v3 token body (`{"token": {...}}`).
pub fn parse_token(body: &[u8]) -> Result<ValidatedToken, KeystoneError> {
    let parsed: TokenBody =
        serde_json::from_slice(body).map_err(|e| KeystoneError::Malformed(e.to_string()))?;
    let t = parsed.token;
    let expires_at = DateTime::parse_from_rfc3339(&t.expires_at)
        .map_err(|e| KeystoneError::Malformed(format!("expires_at: {e}")))?
        .with_timezone(&Utc);
    let user = t
        .user
        .ok_or_else(|| KeystoneError::Malformed("no user in the token".to_owned()))?;
    let user_id = user
        .id
        .ok_or_else(|| KeystoneError::Malformed("no user id in the token".to_owned()))?;
    let system_scope = t.system.map(|s| {
        let scopes: Vec<&str> = s
            .iter()
            .filter(|(_, v)| v.as_bool() == Some(true))
            .map(|(k, _)| k.as_str())
            .collect();
        scopes.join(",")
    });
    Ok(ValidatedToken {
        user_id,
        user_name: user.name,
        project_id: t.project.as_ref().and_then(|p| p.id.clone()),
        project_name: t.project.and_then(|p| p.name),
        domain_id: t.domain.and_then(|d| d.id),
        system_scope,
        roles: t
            .roles
            .into_iter()
            .filter_map(|r| r.name)
            .map(|r| r.to_lowercase())
            .collect(),
        expires_at,
    })
}

#[async_trait::async_trait]
impl Authenticator for KeystoneAuth {
    async fn authenticate(&self, headers: &HeaderMap) -> Result<RequestContext, AuthError> {
        let token = headers
            .get("x-auth-token")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .unwrap_or("");
        if token.is_empty() {
            return Err(AuthError::unauthorized(UNAUTHORIZED));
        }
        match self.validate(token).await {
            Ok(v) => Ok(self.context(&v)),
            Err(KeystoneError::InvalidToken) => Err(AuthError::unauthorized(UNAUTHORIZED)),
            Err(e) => {
                // keystonemiddleware answers 503 here; the cause goes to the log only.
                tracing::error!(error = %error_chain(&e), "cannot validate a token with Keystone");
                Err(AuthError::unavailable(
                    "The Keystone service is temporarily unavailable.",
                ))
            }
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

#[cfg(test)]
mod tests;
