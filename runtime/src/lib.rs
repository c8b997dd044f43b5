//! The one runtime: it builds timely's configuration from `[cluster]`, is the only place a
//! dataflow is executed, wires sources → analytics → the frontier-gated sink stage, and carries
//! source positions as data next to the rows. `process`, `replay`, `run` and `demo` differ only
//! in the [`sources::Sources`] and [`crowdpulse_connectors::sink::Sink`]s they hand it.

pub mod cluster;
pub mod error;
pub mod execute;
pub mod live;
mod peers;
pub mod process;
pub mod replay;
pub mod run;
pub mod sink_stage;
pub mod sources;

pub use error::{Result, RuntimeError};
