//! Request bodies: an app-owned JSON extractor (so malformed bodies get the fault envelope)
//! and a field reader that produces WSME-style messages for missing, unknown, mistyped and
//! out-of-range attributes.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::str::FromStr;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::error::{ApiError, ApiResult};

/// A JSON request body. Any failure (not JSON, too large, unreadable) is an [`ApiError`].
#[derive(Debug)]
pub struct JsonBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &S) -> Result<Self, Self::Rejection> {
        let limit = req
            .extensions()
            .get::<BodyLimit>()
            .map(|l| l.0)
            .unwrap_or(usize::MAX);
        let (parts, body) = req.into_parts();
        let bytes = read_request_body(&parts.headers, body, limit).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(JsonBody(Value::Null));
        }
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::BadRequest(format!("Invalid JSON body: {e}")))
    }
}

/// Middleware: reads the whole request body (at most `limit` bytes, as [`read_limited`])
/// before routing, and hands the handler an in-memory body.
///
/// A handler that answers without reading the body (404 and 405 fallbacks, 406, an identity
/// header refused before the JSON extractor, a GET with a body) left it unread, and hyper then
/// closed the connection after the answer without announcing it: a keep-alive client that had
/// already sent its next request on it saw a reset (the reliability suite's fuzzer: 2 in
/// 20,000 requests; one in five with a client sending head and body separately).
pub async fn read_body_first(
    req: Request,
    next: axum::middleware::Next,
    limit: usize,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let (parts, body) = req.into_parts();
    match read_request_body(&parts.headers, body, limit).await {
        Ok(bytes) => {
            next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
                .await
        }
        Err(e) => e.into_response(),
    }
}

/// The body limit in force (set by the router so the 413 message can name it).
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

/// How much of a body over the limit is read and thrown away, past the limit, before the 413
/// is answered.
pub const DISCARD_BYTES: usize = 64 * 1024 * 1024;

/// Reads the body of a request with these `headers`, at most `limit` bytes: the one way in for
/// [`JsonBody`] and [`read_body_first`].
///
/// A declared `Content-Length` over the limit is refused before anything is read when the
/// client waits for `100 Continue` (it has sent nothing yet: the 413 comes first and it never
/// sends the body) or when the excess is too large to read away (the 413 at once); otherwise
/// as [`read_limited`].
async fn read_request_body(
    headers: &axum::http::HeaderMap,
    body: axum::body::Body,
    limit: usize,
) -> ApiResult<Bytes> {
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let expects_continue = headers
        .get(axum::http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if let Some(n) = declared
        && n > limit as u64
        && (expects_continue || n - limit as u64 > DISCARD_BYTES as u64)
    {
        return Err(ApiError::PayloadTooLarge(limit));
    }
    read_limited(body, limit).await
}

/// Reads a request body of at most `limit` bytes.
///
/// A longer body is answered 413 only once the client has sent all of it (read and
/// discarded, never buffered): HTTP/1.1 clients that do not wait for `100 Continue` (Python's
/// requests, curl for small bodies) are still sending when the answer is ready, and a server
/// that answers and closes then makes them see a connection reset or a broken pipe instead of
/// the 413. Past [`DISCARD_BYTES`] more than the limit the 413 is answered at once (and the
/// connection is closed). Memory stays bounded by `limit` either way.
pub async fn read_limited(body: axum::body::Body, limit: usize) -> ApiResult<Bytes> {
    use futures::StreamExt;
    let unreadable =
        |e: axum::Error| ApiError::BadRequest(format!("Could not read the request body: {e}"));
    let mut stream = body.into_data_stream();
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut total: usize = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(unreadable)?;
        total = total.saturating_add(chunk.len());
        if total > limit {
            chunks.clear();
            while let Some(rest) = stream.next().await {
                total = total.saturating_add(rest.map_err(unreadable)?.len());
                if total - limit > DISCARD_BYTES {
                    break;
                }
            }
            return Err(ApiError::PayloadTooLarge(limit));
        }
        chunks.push(chunk);
    }
    Ok(match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.swap_remove(0),
        _ => Bytes::from(chunks.concat()),
    })
}

/// An attribute as found in a body: absent, explicit `null`, or a value.
#[derive(Debug, Clone, PartialEq)]
pub enum Field<T> {
    /// Not in the body.
    Absent,
    /// `null`.
    Null,
    /// A value.
    Set(T),
}

impl<T> Field<T> {
    /// `None` for absent or null.
    pub fn opt(self) -> Option<T> {
        match self {
            Field::Set(v) => Some(v),
            _ => None,
        }
    }

    /// The value, or `default` for absent or null.
    pub fn or(self, default: T) -> T {
        self.opt().unwrap_or(default)
    }

    /// True unless absent.
    pub fn present(&self) -> bool {
        !matches!(self, Field::Absent)
    }

    /// For PUT: `Some(new)` when present (null → `None`), `None` when absent.
    pub fn update(self) -> Option<Option<T>> {
        match self {
            Field::Absent => None,
            Field::Null => Some(None),
            Field::Set(v) => Some(Some(v)),
        }
    }
}

/// A JSON object being read attribute by attribute.
#[derive(Debug, Clone, Copy)]
pub struct Obj<'a> {
    map: &'a Map<String, Value>,
}

static EMPTY: std::sync::LazyLock<Map<String, Value>> = std::sync::LazyLock::new(Map::new);

impl<'a> Obj<'a> {
    /// Reads `{"<envelope>": {...}}`, rejecting unknown keys of the inner object (reported
    /// for WSME argument `arg`).
    pub fn envelope(
        body: &'a Value,
        envelope: &str,
        arg: &str,
        allowed: &[&str],
    ) -> ApiResult<Obj<'a>> {
        let Value::Object(outer) = body else {
            return Err(ApiError::invalid(
                envelope,
                body,
                "Mandatory field missing.",
            ));
        };
        let unknown: Vec<&str> = outer
            .keys()
            .filter(|k| k.as_str() != envelope)
            .map(String::as_str)
            .collect();
        if !unknown.is_empty() {
            return Err(unknown_attrs(arg, &unknown));
        }
        match outer.get(envelope) {
            Some(Value::Object(map)) => {
                let obj = Obj { map };
                obj.only(arg, allowed)?;
                Ok(obj)
            }
            None | Some(Value::Null) => Err(ApiError::invalid(
                envelope,
                &Value::Null,
                "Mandatory field missing.",
            )),
            Some(other) => Err(ApiError::invalid(
                envelope,
                other,
                "Value should be an object",
            )),
        }
    }

    /// Wraps an already-extracted object.
    pub fn new(map: &'a Map<String, Value>) -> Obj<'a> {
        Obj { map }
    }

    /// An empty object.
    pub fn empty() -> Obj<'static> {
        Obj { map: &EMPTY }
    }

    /// Rejects keys not in `allowed`.
    pub fn only(&self, arg: &str, allowed: &[&str]) -> ApiResult<()> {
        let unknown: Vec<&str> = self
            .map
            .keys()
            .map(String::as_str)
            .filter(|k| !allowed.contains(k))
            .collect();
        if unknown.is_empty() {
            Ok(())
        } else {
            Err(unknown_attrs(arg, &unknown))
        }
    }

    /// True when the object has no keys.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Raw access.
    pub fn raw(&self, name: &str) -> Option<&'a Value> {
        self.map.get(name)
    }

    fn get(&self, name: &str) -> Field<&'a Value> {
        match self.map.get(name) {
            None => Field::Absent,
            Some(Value::Null) => Field::Null,
            Some(v) => Field::Set(v),
        }
    }

    fn read<T>(
        &self,
        name: &str,
        f: impl FnOnce(&'a Value) -> ApiResult<T>,
    ) -> ApiResult<Field<T>> {
        Ok(match self.get(name) {
            Field::Absent => Field::Absent,
            Field::Null => Field::Null,
            Field::Set(v) => Field::Set(f(v)?),
        })
    }

    /// A string of at most `max` characters (no control characters).
    pub fn string(&self, name: &str, max: usize) -> ApiResult<Field<String>> {
        self.read(name, |v| {
            let s = v
                .as_str()
                .ok_or_else(|| ApiError::invalid(name, v, "Wrong type. Expected 'str'"))?;
            if s.chars().count() > max {
                return Err(ApiError::invalid(
                    name,
                    v,
                    &format!("Value should have a maximum character requirement of {max}"),
                ));
            }
            Ok(s.to_owned())
        })
    }

    /// Free text (a name, description or tag): a string of at most `max` characters without
    /// control characters ([`klb_model::validate::free_text`]).
    pub fn text(&self, name: &str, max: usize) -> ApiResult<Field<String>> {
        self.checked(name, max, |s| klb_model::validate::free_text(s, max))
    }

    /// A string that must also pass `check`.
    pub fn checked<E: std::fmt::Display>(
        &self,
        name: &str,
        max: usize,
        check: impl FnOnce(&str) -> Result<(), E>,
    ) -> ApiResult<Field<String>> {
        let f = self.string(name, max)?;
        if let Field::Set(s) = &f {
            check(s).map_err(|reason| {
                ApiError::invalid(name, &Value::from(s.as_str()), &reason.to_string())
            })?;
        }
        Ok(f)
    }

    /// A UUID string.
    pub fn uuid(&self, name: &str) -> ApiResult<Field<Uuid>> {
        self.read(name, |v| {
            v.as_str()
                .and_then(|s| Uuid::parse_str(s).ok())
                .ok_or_else(|| ApiError::invalid(name, v, "Value should be UUID format"))
        })
    }

    /// An integer in `[min, max]`.
    pub fn int(&self, name: &str, min: i64, max: i64) -> ApiResult<Field<i64>> {
        self.read(name, |v| {
            // WSME converts numeric strings (python-octaviaclient sends `--connection-limit`
            // as one), so klb does too; anything else is a wrong type.
            let n = v
                .as_i64()
                .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
                .ok_or_else(|| ApiError::invalid(name, v, "Wrong type. Expected 'int'"))?;
            if n < min {
                return Err(ApiError::invalid(
                    name,
                    v,
                    &format!("Value should be greater or equal to {min}"),
                ));
            }
            if n > max {
                return Err(ApiError::invalid(
                    name,
                    v,
                    &format!("Value should be lower or equal to {max}"),
                ));
            }
            Ok(n)
        })
    }

    /// A boolean.
    pub fn bool(&self, name: &str) -> ApiResult<Field<bool>> {
        self.read(name, |v| {
            v.as_bool()
                .ok_or_else(|| ApiError::invalid(name, v, "Wrong type. Expected 'bool'"))
        })
    }

    /// `admin_state_up`-style boolean where `null` means false (Octavia's BaseType.to_dict).
    pub fn bool_null_false(&self, name: &str) -> ApiResult<Field<bool>> {
        Ok(match self.bool(name)? {
            Field::Null => Field::Set(false),
            other => other,
        })
    }

    /// One of an enum's spellings.
    pub fn enumerated<E: FromStr + std::fmt::Display>(
        &self,
        name: &str,
        all: &[E],
    ) -> ApiResult<Field<E>> {
        self.read(name, |v| {
            v.as_str().and_then(|s| s.parse().ok()).ok_or_else(|| {
                let values: Vec<String> = all.iter().map(|e| format!("'{e}'")).collect();
                ApiError::invalid(
                    name,
                    v,
                    &format!("Value should be one of: {}", values.join(", ")),
                )
            })
        })
    }

    /// An IP address.
    pub fn ip(&self, name: &str) -> ApiResult<Field<IpAddr>> {
        self.read(name, |v| {
            v.as_str()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| ApiError::invalid(name, v, "Value should be IPv4 or IPv6 format"))
        })
    }

    /// A list of strings, each at most `max` characters and passing `check`.
    pub fn string_list<E: std::fmt::Display>(
        &self,
        name: &str,
        max: usize,
        check: impl Fn(&str) -> Result<(), E>,
    ) -> ApiResult<Field<Vec<String>>> {
        self.read(name, |v| {
            let items = v
                .as_array()
                .ok_or_else(|| ApiError::invalid(name, v, "Wrong type. Expected 'list'"))?;
            items
                .iter()
                .map(|item| {
                    let s = item.as_str().ok_or_else(|| {
                        ApiError::invalid(name, v, "Wrong type. Expected a list of 'str'")
                    })?;
                    if s.chars().count() > max {
                        return Err(ApiError::invalid(
                            name,
                            item,
                            &format!("Value should have a maximum character requirement of {max}"),
                        ));
                    }
                    check(s)
                        .map_err(|reason| ApiError::invalid(name, item, &reason.to_string()))?;
                    Ok(s.to_owned())
                })
                .collect()
        })
    }

    /// A list of enum values.
    pub fn enum_list<E: FromStr + std::fmt::Display>(
        &self,
        name: &str,
        all: &[E],
    ) -> ApiResult<Field<Vec<E>>> {
        self.read(name, |v| {
            let items = v
                .as_array()
                .ok_or_else(|| ApiError::invalid(name, v, "Wrong type. Expected 'list'"))?;
            items
                .iter()
                .map(|item| {
                    item.as_str().and_then(|s| s.parse().ok()).ok_or_else(|| {
                        let values: Vec<String> = all.iter().map(|e| format!("'{e}'")).collect();
                        ApiError::invalid(
                            name,
                            item,
                            &format!("Value should be one of: {}", values.join(", ")),
                        )
                    })
                })
                .collect()
        })
    }

    /// A list of UUIDs.
    pub fn uuid_list(&self, name: &str) -> ApiResult<Field<Vec<Uuid>>> {
        self.read(name, |v| {
            let items = v
                .as_array()
                .ok_or_else(|| ApiError::invalid(name, v, "Wrong type. Expected 'list'"))?;
            items
                .iter()
                .map(|item| {
                    item.as_str()
                        .and_then(|s| Uuid::parse_str(s).ok())
                        .ok_or_else(|| ApiError::invalid(name, item, "Value should be UUID format"))
                })
                .collect()
        })
    }

    /// A string → string map.
    pub fn string_map(&self, name: &str, max: usize) -> ApiResult<Field<BTreeMap<String, String>>> {
        self.read(name, |v| {
            let map = v
                .as_object()
                .ok_or_else(|| ApiError::invalid(name, v, "Wrong type. Expected 'dict'"))?;
            map.iter()
                .map(|(k, item)| {
                    let s = match item {
                        Value::String(s) => s.clone(),
                        Value::Bool(b) => b.to_string(),
                        Value::Number(n) => n.to_string(),
                        _ => {
                            return Err(ApiError::invalid(
                                name,
                                v,
                                "Wrong type. Expected a dict of 'str'",
                            ));
                        }
                    };
                    if s.chars().count() > max || k.chars().count() > max {
                        return Err(ApiError::invalid(
                            name,
                            item,
                            &format!("Value should have a maximum character requirement of {max}"),
                        ));
                    }
                    Ok((k.clone(), s))
                })
                .collect()
        })
    }

    /// A nested object.
    pub fn object(&self, name: &str) -> ApiResult<Field<Obj<'a>>> {
        self.read(name, |v| {
            v.as_object()
                .map(|map| Obj { map })
                .ok_or_else(|| ApiError::invalid(name, v, "Wrong type. Expected 'dict'"))
        })
    }

    /// A list of nested objects.
    pub fn objects(&self, name: &str) -> ApiResult<Field<Vec<Obj<'a>>>> {
        self.read(name, |v| {
            let items = v
                .as_array()
                .ok_or_else(|| ApiError::invalid(name, v, "Wrong type. Expected 'list'"))?;
            items
                .iter()
                .map(|item| {
                    item.as_object()
                        .map(|map| Obj { map })
                        .ok_or_else(|| ApiError::invalid(name, item, "Wrong type. Expected 'dict'"))
                })
                .collect()
        })
    }
}

fn unknown_attrs(arg: &str, names: &[&str]) -> ApiError {
    let mut names: Vec<String> = names
        .iter()
        .map(|n| klb_model::validate::printable(n))
        .collect();
    names.sort();
    if names.len() == 1 {
        ApiError::BadRequest(format!(
            "Unknown attribute for argument {arg}: {}",
            names[0]
        ))
    } else {
        ApiError::BadRequest(format!(
            "Unknown attributes for argument {arg}: {}",
            names.join(", ")
        ))
    }
}

/// A required attribute: absent or null → `Mandatory field missing.`
pub fn required<T>(name: &str, f: Field<T>) -> ApiResult<T> {
    match f {
        Field::Set(v) => Ok(v),
        _ => Err(ApiError::invalid(
            name,
            &Value::Null,
            "Mandatory field missing.",
        )),
    }
}
