//! The process layout (`[cluster]`) as timely's execution configuration.

use crowdpulse_connectors::config::ClusterConfig;
use timely::CommunicationConfig;

use crate::error::{Result, RuntimeError};

/// How many workers run where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// Worker threads of this process.
    pub workers: usize,
    /// `host:port` of every process, in index order (empty: this process alone).
    pub processes: Vec<String>,
}

impl Cluster {
    /// The layout `[cluster]` describes, with `workers` (a command-line override) replacing
    /// `cluster.workers` when given.
    pub fn new(config: &ClusterConfig, workers: Option<usize>) -> Self {
        Self {
            workers: workers.unwrap_or(config.workers).max(1),
            processes: config.processes.clone(),
        }
    }

    /// One process with `workers` threads (tests, the demo).
    pub fn local(workers: usize) -> Self {
        Self {
            workers: workers.max(1),
            processes: Vec::new(),
        }
    }

    /// Workers across all processes.
    pub fn total_workers(&self) -> usize {
        self.workers * self.processes.len().max(1)
    }

    /// timely's configuration for this layout.
    pub fn timely_config(&self) -> Result<timely::Config> {
        let communication = match self.processes.len() {
            0 | 1 => CommunicationConfig::Process(self.workers),
            n => {
                return Err(RuntimeError::Cluster(format!(
                    "cluster.processes lists {n} processes; running several processes is not \
                     supported yet (list one process, or none)"
                )))
            }
        };
        Ok(timely::Config {
            communication,
            worker: timely::WorkerConfig::default(),
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
        };
        assert_eq!(Cluster::new(&config, None).workers, 3);
        assert_eq!(Cluster::new(&config, Some(2)).total_workers(), 2);
        assert!(Cluster::new(&config, None).timely_config().is_ok());
        let two = ClusterConfig {
            processes: vec!["a:1".into(), "b:1".into()],
            ..config
        };
        let err = Cluster::new(&two, None).timely_config().unwrap_err();
        assert!(err.to_string().contains("2 processes"), "{err}");
    }
}
