//! crowdpulse's serving layer: the live view store (a sink of the runtime), REST under `/v1` with
//! history from Postgres, WebSocket/SSE push, HTTP ingest, `/metrics`, `/openapi.json` and the
//! embedded dashboard. It serves and ingests; the runtime assembles the pipelines.

pub mod access;
pub mod chat;
pub mod dashboard;
pub mod error;
pub mod filters;
pub mod handlers;
pub mod history;
pub mod ingest;
pub mod kind_store;
pub mod kinds;
pub mod metrics;
pub mod models;
pub mod origin;
pub mod push;
pub mod server;
pub mod state;
pub mod store;

pub use error::{ApiError, Result};

/// The OpenAPI 3 description of every endpoint.
pub const OPENAPI: &str = include_str!("../openapi.json");
