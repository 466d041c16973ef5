//! Every error the API returns, mapped to a status code and a JSON body in one place.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use callbacks::{CreateError, FailureReason, ModifyError, Refused, Rejection, StoreError};
use serde_json::json;

/// An API failure: `{"error": {"code", "message"}}`, with the receipt when a modification was
/// refused.
#[derive(Debug)]
pub enum ApiError {
    Request {
        status: StatusCode,
        code: &'static str,
        message: String,
    },
    Refused(Box<Refused>),
    /// Refused because the callback is no longer at the version in `If-Match`.
    Conditional(Box<Refused>),
    Store(StoreError),
}

impl ApiError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::Request {
            status: StatusCode::BAD_REQUEST,
            code,
            message: message.into(),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::Request {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            message: message.into(),
        }
    }

    /// A conflict with a version the client named in `If-Match` is a failed precondition
    /// (412), not a race (409).
    pub fn precondition(self, conditional: bool) -> Self {
        match self {
            ApiError::Refused(r)
                if conditional && r.rejection.reason() == FailureReason::Conflict =>
            {
                ApiError::Conditional(r)
            }
            other => other,
        }
    }

    pub fn unauthorized() -> Self {
        ApiError::Request {
            status: StatusCode::UNAUTHORIZED,
            code: "unauthorized",
            message: "send Authorization: Bearer <token> with the configured API token".into(),
        }
    }
}

fn status_of(reason: FailureReason) -> StatusCode {
    match reason {
        FailureReason::NotFound => StatusCode::NOT_FOUND,
        FailureReason::VerificationFailed => StatusCode::FORBIDDEN,
        FailureReason::IllegalInState | FailureReason::Conflict => StatusCode::CONFLICT,
        FailureReason::OutsideCallingWindow
        | FailureReason::BlockedByPolicy
        | FailureReason::InvalidInput => StatusCode::UNPROCESSABLE_ENTITY,
    }
}

impl From<Rejection> for ApiError {
    fn from(rejection: Rejection) -> Self {
        let reason = rejection.reason();
        ApiError::Request {
            status: status_of(reason),
            code: reason.as_str(),
            message: rejection.to_string(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::Store(e)
    }
}

impl From<CreateError> for ApiError {
    fn from(e: CreateError) -> Self {
        match e {
            CreateError::Rejected(r) => r.into(),
            CreateError::Store(s) => s.into(),
        }
    }
}

impl From<ModifyError> for ApiError {
    fn from(e: ModifyError) -> Self {
        match e {
            ModifyError::Refused(r) => ApiError::Refused(r),
            ModifyError::Store(s) => s.into(),
        }
    }
}

impl From<crate::chat::Refused> for ApiError {
    fn from(refused: crate::chat::Refused) -> Self {
        use crate::chat::Refused;
        let (status, code) = match refused {
            Refused::Full => (StatusCode::SERVICE_UNAVAILABLE, "too_many_chats"),
            Refused::TooManyFromAddress => (StatusCode::TOO_MANY_REQUESTS, "too_many_chats"),
            Refused::TooFast => (StatusCode::TOO_MANY_REQUESTS, "too_many_messages"),
            Refused::TooLong => (StatusCode::PAYLOAD_TOO_LARGE, "conversation_too_long"),
            Refused::Gone => (StatusCode::NOT_FOUND, "not_found"),
            Refused::Busy => (StatusCode::CONFLICT, "conversation_busy"),
            Refused::Store(e) => return e.into(),
        };
        ApiError::Request {
            status,
            code,
            message: refused.to_string(),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        ApiError::Request {
            status: r.status(),
            code: "bad_request_body",
            message: r.body_text(),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::bad_request("bad_query", r.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::bad_request("bad_path", r.body_text())
    }
}

fn refused_body(refused: &Refused) -> serde_json::Value {
    json!({
        "error": {"code": refused.rejection.reason().as_str(), "message": refused.rejection.to_string()},
        "receipt": refused.receipt,
    })
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = match self {
            ApiError::Request {
                status,
                code,
                message,
            } => (status, json!({"error": {"code": code, "message": message}})),
            ApiError::Refused(refused) => (
                status_of(refused.rejection.reason()),
                refused_body(&refused),
            ),
            ApiError::Conditional(refused) => {
                (StatusCode::PRECONDITION_FAILED, refused_body(&refused))
            }
            ApiError::Store(e) => {
                // The details are for the operator's log, not for the client.
                tracing::error!(error = %e, "store failure while serving the API");
                let (status, message) = match e {
                    StoreError::Unavailable(_) => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the store is unavailable; try again shortly",
                    ),
                    _ => (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "the store failed; the error is in callbackd's log",
                    ),
                };
                (
                    status,
                    json!({"error": {"code": "store_error", "message": message}}),
                )
            }
        };
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}
