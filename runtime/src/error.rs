//! The runtime crate's error type.

use thiserror::Error;

/// What starting or running a dataflow can fail with.
#[derive(Debug, Error)]
pub enum RuntimeError {
    /// `--process` names no process of `[cluster] processes`.
    #[error("process {process} does not exist: cluster.processes lists {processes} processes (indexes from 0)")]
    NoSuchProcess {
        /// The index asked for.
        process: usize,
        /// Processes listed.
        processes: usize,
    },
    /// This process cannot listen on its own address.
    #[error("cannot listen on {address} (this process's entry in cluster.processes): {error}")]
    ClusterListen {
        /// Its `host:port`.
        address: String,
        /// Why.
        error: std::io::Error,
    },
    /// A peer did not connect within the start-up timeout.
    #[error("process {process} ({address}) did not connect within {waited:?} (cluster.startup_timeout); is it started, with the same cluster.processes?")]
    PeerUnreachable {
        /// Its index.
        process: usize,
        /// Its `host:port`.
        address: String,
        /// How long this process waited.
        waited: std::time::Duration,
    },
    /// A peer runs with another layout.
    #[error("process {process} runs {processes} processes of {workers} worker(s) each, this one {our_processes} of {our_workers}: every process needs the same [cluster]")]
    PeerMismatch {
        /// Its index.
        process: usize,
        /// Its process count.
        processes: u64,
        /// Its workers per process.
        workers: u64,
        /// Ours.
        our_processes: u64,
        /// Ours.
        our_workers: u64,
    },
    /// A peer runs another job: other `[pipeline]` settings, sources, pacing or sink process.
    #[error("process {process} runs another job than this one: every process needs the same [pipeline], [sentiment] lexicons, [kafka] topics, --from/--until, [postgres] (on or off, max_lead, checkpoint_interval, and with checkpoints the database and schema) and api.serve_on")]
    PeerJob {
        /// Its index.
        process: usize,
    },
    /// A peer speaks another version of the cluster handshake (another crowdpulse build).
    #[error("{peer} speaks cluster protocol version {version}, this one {ours}: run the same crowdpulse build everywhere")]
    PeerVersion {
        /// Which (index and address, or the address it connected from).
        peer: String,
        /// Its version.
        version: u64,
        /// Ours.
        ours: u64,
    },
    /// The connection to a peer could not be given its keepalive and timeout settings.
    #[error("setting up the connection to process {process}: {error}")]
    PeerSocket {
        /// Its index.
        process: usize,
        /// Why.
        error: std::io::Error,
    },
    /// A peer resumes from another checkpoint (or none): the processes loaded the latest
    /// checkpoint at different moments, or one was started with an explicit --from.
    #[error("process {process} resumes from {}, this one from {}: start every process the same way (the latest checkpoint, or the same --from), at the same time", checkpoint_name(*.theirs), checkpoint_name(*.ours))]
    PeerCheckpoint {
        /// Its index.
        process: usize,
        /// The time of the checkpoint it resumes from.
        theirs: Option<u64>,
        /// Ours.
        ours: Option<u64>,
    },
    /// timely could not start its workers.
    #[error("starting the workers: {0}")]
    Start(String),
    /// A worker could not open the partitions it reads.
    #[error("worker {worker} could not open its partitions: {error}")]
    Unopened {
        /// Global worker index.
        worker: usize,
        /// Why.
        error: String,
    },
    /// Partitions of a bounded run could not be read to their end (see the log).
    #[error(
        "{errors} failed reads: the output lacks the records of the partitions named in the log"
    )]
    Incomplete {
        /// Failed reads.
        errors: u64,
    },
    /// The latest checkpoint cannot be resumed from.
    #[error(
        "{0}; nothing was started. Either run the build that wrote it, or recompute with an \
         explicit --from (e.g. --from earliest), which ignores the checkpoint and replaces it \
         with the run's first"
    )]
    Checkpoint(crowdpulse_dataflow::checkpoint::CheckpointError),
    /// The run could not go on: a worker panicked, a sink can take nothing more (its output
    /// broke, Postgres refused a write), or a process of the cluster was lost.
    #[error("the run stopped: {0}")]
    Failed(String),
    /// The dataflow rejected its settings.
    #[error(transparent)]
    Dataflow(#[from] crowdpulse_dataflow::Error),
    /// A source or sink failed.
    #[error(transparent)]
    Connector(#[from] crowdpulse_connectors::ConnectorError),
    /// The API server failed.
    #[error(transparent)]
    Api(#[from] crowdpulse_api::ApiError),
}

fn checkpoint_name(time: Option<u64>) -> String {
    time.map_or_else(
        || "no checkpoint".to_owned(),
        |time| format!("the checkpoint at {time}"),
    )
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, RuntimeError>;
