//! The connectors crate's error type.

use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

/// Errors of sources, sinks, configuration loading and the generator.
#[derive(Debug, Error)]
pub enum ConnectorError {
    /// A file could not be opened, read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// The configuration file or an override is unusable.
    #[error("config: {0}")]
    Config(String),
    /// A Kafka client could not be created, or a lookup or assignment failed.
    #[error("kafka: {0}")]
    Kafka(String),
    /// A Postgres statement or connection failed.
    #[error("postgres: {}", postgres_message(.0))]
    Postgres(#[from] tokio_postgres::Error),
    /// The Postgres sink gave up (a write the server refuses, or no database at shutdown): the
    /// tables lack what it had not committed.
    #[error("postgres sink: {0}")]
    PostgresWriter(String),
    /// A run's output broke an invariant of DESIGN §3 (a bug, never bad input).
    #[error("inconsistent output: {0}")]
    Inconsistent(String),
    /// The NDJSON output of a bounded run could not be rendered (its renderer thread panicked,
    /// or the rows were taken already).
    #[error("ndjson output: {0}")]
    NdjsonOutput(String),
    /// The summarizer's endpoint gave no answer within the timeout.
    #[error("summarizer: no answer within the timeout")]
    SummaryTimeout,
    /// The stored texts (Postgres) did not answer within the summarizer's timeout.
    #[error("summarizer: the stored texts did not answer within the timeout")]
    StoredTextsTimeout,
    /// The summarizer's endpoint answered with an error status, and maybe when to try again.
    #[error("summarizer: the endpoint answered {status}")]
    SummaryStatus {
        /// The HTTP status.
        status: u16,
        /// The wait its `Retry-After` asks for, when it has one (`Duration::MAX` when unreadable).
        retry_after: Option<Duration>,
    },
    /// The summarizer's endpoint answered no chat completion with text, or too much.
    #[error("summarizer: unusable answer: {0}")]
    SummaryAnswer(&'static str),
    /// The summarizer's request failed on the way (connection, TLS).
    #[error("summarizer: request failed: {0}")]
    SummaryTransport(String),
    /// A stored checkpoint cannot be used.
    #[error("{0}")]
    Checkpoint(#[from] crowdpulse_dataflow::checkpoint::CheckpointError),
    /// A checkpoint part's state is longer than PostgreSQL stores in one value (1 GiB).
    #[error("checkpoint part of {bytes} bytes ({role} of worker {worker}) is too large to store")]
    CheckpointPartTooLarge {
        /// Index of the worker that wrote it.
        worker: usize,
        /// The part's operator.
        role: &'static str,
        /// The state's length.
        bytes: usize,
    },
    /// The dataflow rejected its settings or failed.
    #[error(transparent)]
    Dataflow(#[from] crowdpulse_dataflow::Error),
}

/// A Postgres error with its cause (tokio-postgres shows "db error" and keeps the server's
/// message in the source).
fn postgres_message(error: &tokio_postgres::Error) -> String {
    match std::error::Error::source(error) {
        Some(cause) => format!("{error}: {cause}"),
        None => error.to_string(),
    }
}

impl ConnectorError {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, ConnectorError>;
