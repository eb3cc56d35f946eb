//! `ApiError`: every failure a handler can return, rendered as Octavia's WSME fault body
//! `{"faultcode", "faultstring", "debuginfo": null}`. Client errors keep their message; server
//! errors are logged in detail and answered generically.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use klb_model::Kind;
use serde_json::json;

/// A failed request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400 with a fault string.
    #[error("{0}")]
    BadRequest(String),
    /// 401.
    #[error("{0}")]
    Unauthorized(String),
    /// 403 from the policy hook.
    #[error("Policy does not allow this request to be performed.")]
    Forbidden,
    /// 403 for another reason (quota).
    #[error("{0}")]
    ForbiddenWith(String),
    /// 404 with a fault string.
    #[error("{0}")]
    NotFound(String),
    /// 405.
    #[error("The method is not allowed for this resource.")]
    MethodNotAllowed,
    /// 406.
    #[error("Only content type application/json is accepted.")]
    NotAcceptable,
    /// 409 with a fault string.
    #[error("{0}")]
    Conflict(String),
    /// 413.
    #[error("Request body is larger than the limit of {0} bytes.")]
    PayloadTooLarge(usize),
    /// 501.
    #[error("{0}")]
    NotImplemented(String),
    /// 503.
    #[error("{0}")]
    Unavailable(String),
    /// 500: the detail is logged, never sent.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Result alias for handlers.
pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    /// `<Resource> <id> not found.`
    pub fn not_found(kind: Kind, id: &str) -> ApiError {
        ApiError::NotFound(format!("{} {} not found.", kind.display_name(), id))
    }

    /// WSME's `Invalid input for field/attribute <field>. Value: '<value>'. <reason>`.
    pub fn invalid(field: &str, value: &serde_json::Value, reason: &str) -> ApiError {
        let shown = match value {
            serde_json::Value::String(s) => klb_model::validate::printable(s),
            serde_json::Value::Null => "None".to_owned(),
            other => klb_model::validate::printable(&other.to_string()),
        };
        ApiError::BadRequest(format!(
            "Invalid input for field/attribute {field}. Value: '{shown}'. {reason}"
        ))
    }

    /// `Validation failure: <detail>`.
    pub fn validation(detail: impl std::fmt::Display) -> ApiError {
        ApiError::BadRequest(format!("Validation failure: {detail}"))
    }

    /// 400 `<value> is not a valid option for <option>`.
    pub fn invalid_option(value: &str, option: &str) -> ApiError {
        ApiError::BadRequest(format!(
            "{} is not a valid option for {option}",
            klb_model::validate::printable(value)
        ))
    }

    /// Any unexpected failure.
    pub fn internal(e: impl std::error::Error + Send + Sync + 'static) -> ApiError {
        ApiError::Internal(Box::new(e))
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden | ApiError::ForbiddenWith(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::NotAcceptable => StatusCode::NOT_ACCEPTABLE,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let ApiError::Internal(e) = &self {
            // Full chain in the log; the client gets a generic message.
            let mut chain = e.to_string();
            let mut source = e.source();
            while let Some(s) = source {
                chain.push_str(": ");
                chain.push_str(&s.to_string());
                source = s.source();
            }
            tracing::error!(error = %chain, "request failed");
        }
        if let ApiError::NotAcceptable = self {
            let body = json!({"errors": [{"status": 406, "title": "Not Acceptable",
                "detail": "Only content type application/json is accepted.", "request_id": null}]});
            return (status, axum::Json(body)).into_response();
        }
        let faultstring = match &self {
            ApiError::Internal(_) => {
                "An unexpected error occurred while processing the request.".to_owned()
            }
            other => other.to_string(),
        };
        let faultcode = if status.is_server_error() {
            "Server"
        } else {
            "Client"
        };
        let body = json!({"faultcode": faultcode, "faultstring": faultstring, "debuginfo": null});
        (status, axum::Json(body)).into_response()
    }
}

impl From<klb_store::StoreError> for ApiError {
    fn from(e: klb_store::StoreError) -> Self {
        if e.is_retryable() {
            tracing::warn!(error = %e, "retryable store error");
            return ApiError::Unavailable("The database is busy, please try again.".to_owned());
        }
        if e.is_invalid_text() {
            // A NUL in a path or filter value that reached a PostgreSQL query.
            return ApiError::BadRequest(
                "Invalid input: the request contains a character that cannot be stored.".to_owned(),
            );
        }
        ApiError::internal(e)
    }
}

impl From<klb_model::Conflict> for ApiError {
    fn from(e: klb_model::Conflict) -> Self {
        ApiError::Conflict(e.to_string())
    }
}
