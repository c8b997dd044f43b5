//! The API crate's error type; every variant maps to one HTTP status and error code.

use thiserror::Error;
use warp::http::StatusCode;

/// What a request (or starting the server) can fail with.
#[derive(Debug, Error)]
pub enum ApiError {
    /// The request is malformed (400).
    #[error("{0}")]
    BadRequest(String),
    /// The stream or route does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// The method is not allowed on the route (405).
    #[error("method not allowed")]
    MethodNotAllowed,
    /// No token, or one that is not configured (401).
    #[error("{}", if *invalid_token { "the bearer token is not valid" } else { "a bearer token is required" })]
    Unauthorized {
        /// A token was presented but matched none.
        invalid_token: bool,
    },
    /// The token lacks the route's scope (403).
    #[error("{0}")]
    Forbidden(String),
    /// A browser origin that is neither the server's own nor in `api.cors_origins` (403).
    #[error("origin {0} is not allowed")]
    ForbiddenOrigin(String),
    /// A server without tokens reached by a host name it does not know (403).
    #[error("host {0} is not allowed: add it to api.allowed_hosts, or configure tokens")]
    ForbiddenHost(String),
    /// `api.tokens`, `api.tokens_file` or `api.cors_origins` is unusable (at start).
    #[error("api access: {0}")]
    AccessConfig(String),
    /// The body exceeds the limit (413).
    #[error("body larger than {0} bytes")]
    PayloadTooLarge(u64),
    /// The body did not arrive within `api.limits.body_timeout` (408).
    #[error("the body did not arrive within {0:?}")]
    BodyTimeout(std::time::Duration),
    /// `api.limits.max_live_clients` are connected (503).
    #[error("{0} live clients are connected, the most this server takes")]
    TooManyClients(usize),
    /// More records in one request than `api.limits.max_events_per_request` (413).
    #[error("more than {0} events in one request")]
    TooManyEvents(usize),
    /// The body's content type is not accepted (415).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The input queue is full; retry after the given seconds (503).
    #[error("ingest queue full, retry later")]
    Busy {
        /// Seconds for the Retry-After header.
        retry_after: u64,
    },
    /// Kafka did not confirm produced events (503).
    #[error("kafka did not confirm the events: {0}")]
    Produce(String),
    /// The server is shutting down (503).
    #[error("shutting down")]
    ShuttingDown,
    /// No connection to read history from Postgres (503).
    #[error("history unavailable: {0}")]
    HistoryPool(#[from] deadpool_postgres::PoolError),
    /// A history query failed (503).
    #[error("history unavailable: {0}")]
    HistoryQuery(#[from] tokio_postgres::Error),
    /// Binding or serving failed.
    #[error("server: {0}")]
    Server(String),
    /// The dataflow could not be built or run.
    #[error(transparent)]
    Dataflow(#[from] crowdpulse_dataflow::Error),
    /// A connector (Kafka, configuration) could not start.
    #[error(transparent)]
    Connector(#[from] crowdpulse_connectors::ConnectorError),
}

impl warp::reject::Reject for ApiError {}

impl ApiError {
    /// HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) | ApiError::ForbiddenOrigin(_) | ApiError::ForbiddenHost(_) => {
                StatusCode::FORBIDDEN
            }
            ApiError::PayloadTooLarge(_) | ApiError::TooManyEvents(_) => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Busy { .. }
            | ApiError::TooManyClients(_)
            | ApiError::Produce(_)
            | ApiError::ShuttingDown
            | ApiError::HistoryPool(_)
            | ApiError::HistoryQuery(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Server(_)
            | ApiError::AccessConfig(_)
            | ApiError::Dataflow(_)
            | ApiError::Connector(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Machine-readable code of the JSON error body.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Unauthorized { .. } => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::ForbiddenOrigin(_) => "forbidden_origin",
            ApiError::ForbiddenHost(_) => "forbidden_host",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::TooManyEvents(_) => "too_many_events",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::Busy { .. } => "busy",
            ApiError::BodyTimeout(_) => "request_timeout",
            ApiError::TooManyClients(_) => "too_many_clients",
            ApiError::Produce(_) => "kafka_unavailable",
            ApiError::ShuttingDown => "shutting_down",
            ApiError::HistoryPool(_) | ApiError::HistoryQuery(_) => "history_unavailable",
            ApiError::Server(_)
            | ApiError::AccessConfig(_)
            | ApiError::Dataflow(_)
            | ApiError::Connector(_) => "internal",
        }
    }
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, ApiError>;
