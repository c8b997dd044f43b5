//! PostgreSQL as the system of record: configuration, versioned migrations, the table mapping
//! and the transactional sink.

pub mod chat_partitions;
pub mod checkpoints;
pub mod config;
pub mod migrate;
pub mod numeric;
pub mod sink;
pub mod tables;

pub use config::PostgresConfig;
pub use sink::{apply_migrations, PostgresSink, PostgresSinkMetrics};
