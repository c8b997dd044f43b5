//! crowdpulse's serving layer: the live view store fed by the dataflow, REST under `/v1`,
//! WebSocket/SSE push, HTTP ingest, `/metrics`, `/openapi.json` and the embedded dashboard, plus
//! the in-process demo that runs it all on a laptop.

pub mod dashboard;
pub mod error;
pub mod filters;
pub mod handlers;
pub mod history;
pub mod ingest;
pub mod metrics;
pub mod models;
pub mod push;
pub mod state;
pub mod store;

pub use error::{ApiError, Result};

/// The OpenAPI 3 description of every endpoint.
pub const OPENAPI: &str = include_str!("../openapi.json");
