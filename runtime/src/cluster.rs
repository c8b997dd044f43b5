//! The process layout (`[cluster]`) and how its workers are connected: one process with
//! `workers` threads, or several processes (one per `host:port`) joined by timely's networking.

use std::any::Any;
use std::time::Duration;

use crowdpulse_connectors::config::ClusterConfig;
use crowdpulse_connectors::live_input::wall_clock_ms;
use crowdpulse_dataflow::event::Millis;
use timely::communication::allocator::zero_copy::initialize::initialize_networking_from_sockets;
use timely::communication::allocator::ProcessBuilder;
use timely::communication::{AllocatorBuilder, Hooks};
use timely::CommunicationConfig;

use crate::error::{Result, RuntimeError};
use crate::peers;
pub use crate::peers::traffic;

/// How many workers run where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// Worker threads of each process.
    pub workers: usize,
    /// `host:port` of every process, in index order (empty: this process alone).
    pub processes: Vec<String>,
    /// This process's index in `processes`.
    pub process: usize,
    /// How long start-up waits for the other processes.
    pub startup_timeout: Duration,
    /// How long a peer may leave this process's messages unanswered before it counts as lost.
    pub peer_timeout: Duration,
    /// The process whose first worker gathers the rows and hosts the sinks.
    pub sink_process: usize,
}

/// timely's workers of this process, connected as the layout says.
pub(crate) struct Communication {
    pub builders: Vec<AllocatorBuilder>,
    /// Keeps the network threads alive (joins them when dropped).
    pub guard: Box<dyn Any + Send>,
    /// The run's clock: the wall-clock time (epoch ms) at process 0's start, which times
    /// relative to now (`--from now-15m`) count from in every process.
    pub clock: Millis,
}

impl Cluster {
    /// The layout `[cluster]` describes for process `process`, with `workers` (a command-line
    /// override) replacing `cluster.workers` when given.
    pub fn new(config: &ClusterConfig, workers: Option<usize>, process: usize) -> Result<Self> {
        let cluster = Self {
            workers: workers.unwrap_or(config.workers).max(1),
            processes: config.processes.clone(),
            process,
            startup_timeout: config.startup_timeout.duration(),
            peer_timeout: config.peer_timeout.duration(),
            sink_process: 0,
        };
        let count = cluster.processes.len().max(1);
        if process >= count {
            return Err(RuntimeError::NoSuchProcess {
                process,
                processes: count,
            });
        }
        Ok(cluster)
    }

    /// One process with `workers` threads (tests, the demo).
    pub fn local(workers: usize) -> Self {
        Self {
            workers: workers.max(1),
            processes: Vec::new(),
            process: 0,
            startup_timeout: Duration::ZERO,
            peer_timeout: Duration::ZERO,
            sink_process: 0,
        }
    }

    /// The same layout with the sinks on process `process` (`api.serve_on`).
    pub fn with_sinks_on(self, process: usize) -> Result<Self> {
        let count = self.processes.len().max(1);
        if process >= count {
            return Err(RuntimeError::NoSuchProcess {
                process,
                processes: count,
            });
        }
        Ok(Self {
            sink_process: process,
            ..self
        })
    }

    /// Workers across all processes.
    pub fn total_workers(&self) -> usize {
        self.workers * self.processes.len().max(1)
    }

    /// Whether the sinks run in this process.
    pub fn hosts_sinks(&self) -> bool {
        self.process == self.sink_process
    }

    /// The global worker that gathers the rows for the sinks.
    pub fn sink_worker(&self) -> usize {
        self.sink_process * self.workers
    }

    /// Global indexes of this process's workers.
    pub fn local_workers(&self) -> std::ops::Range<usize> {
        let first = self.process * self.workers;
        first..first + self.workers
    }

    /// Whether this process is one of several.
    pub fn is_clustered(&self) -> bool {
        self.processes.len() > 1
    }

    /// Connects this process's workers: threads of one process, or (several processes) after
    /// every peer has connected within the start-up timeout, agreeing on the `job` (a digest of
    /// what it computes) and the `checkpoint` resumed from.
    pub(crate) fn connect(&self, job: u64, checkpoint: Option<u64>) -> Result<Communication> {
        let clock = wall_clock_ms();
        if !self.is_clustered() {
            let (builders, guard) = CommunicationConfig::Process(self.workers)
                .try_build()
                .map_err(RuntimeError::Start)?;
            return Ok(Communication {
                builders,
                guard,
                clock,
            });
        }
        let terms = peers::Terms {
            workers: self.workers,
            job,
            checkpoint,
            clock,
            peer_timeout: self.peer_timeout,
        };
        let joined = peers::connect(&self.processes, self.process, terms, self.startup_timeout)?;
        let sockets = joined.streams;
        peers::watch(&self.processes);
        let hooks = Hooks::default();
        let local = ProcessBuilder::new_typed_vector(self.workers, hooks.refill.clone(), None);
        let (builders, guard) =
            initialize_networking_from_sockets(local, sockets, self.process, self.workers, hooks)
                .map_err(|e| RuntimeError::Start(e.to_string()))?;
        Ok(Communication {
            builders: builders.into_iter().map(AllocatorBuilder::Tcp).collect(),
            guard: Box::new(guard),
            clock: joined.clock,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_come_from_the_config_unless_overridden() {
        let config = ClusterConfig {
            workers: 3,
            processes: vec!["127.0.0.1:2101".into()],
            ..ClusterConfig::default()
        };
        assert_eq!(Cluster::new(&config, None, 0).unwrap().workers, 3);
        assert_eq!(
            Cluster::new(&config, Some(2), 0).unwrap().total_workers(),
            2
        );
        let two = ClusterConfig {
            processes: vec!["a:1".into(), "b:1".into()],
            ..config
        };
        let second = Cluster::new(&two, None, 1).unwrap();
        assert_eq!(second.total_workers(), 6);
        assert_eq!(second.local_workers(), 3..6);
        assert!(!second.hosts_sinks());
        let serving = second.clone().with_sinks_on(1).unwrap();
        assert!(serving.hosts_sinks() && serving.sink_worker() == 3);
        assert!(second.with_sinks_on(2).is_err());
        let err = Cluster::new(&two, None, 2).unwrap_err();
        assert!(err.to_string().contains("2 processes"), "{err}");
    }
}
