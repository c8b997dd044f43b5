//! What a run reads: the partitions each worker opens, and how the run ends.

use std::path::PathBuf;
use std::sync::Arc;

use crowdpulse_connectors::file_source::FileReader;
use crowdpulse_connectors::kafka_source::{worker_readers, KafkaSourceOptions};
use crowdpulse_connectors::live_input::LiveInput;
use crowdpulse_dataflow::event::Millis;
use crowdpulse_dataflow::source::PartitionReader;

/// Opens the partitions global worker `index` of `workers` reads, given the run's clock (the
/// wall-clock time, epoch ms, that times relative to now count from: process 0's in a cluster).
pub type ReadersFor = Arc<
    dyn Fn(usize, usize, Millis) -> std::result::Result<Vec<Box<dyn PartitionReader>>, String>
        + Send
        + Sync,
>;

/// Partitions to read, and what they are (every process of a cluster must read the same).
#[derive(Clone)]
pub struct Partitions {
    /// Opens a worker's partitions.
    pub open: ReadersFor,
    /// What is read, from where to where (topics and positions; not how to reach them).
    pub identity: String,
}

/// A run's input.
#[derive(Clone)]
pub enum Sources {
    /// Partitions that end (files, a bounded Kafka range, memory): the run ends when every
    /// partition is read, and every window is then final.
    Bounded(Partitions),
    /// Partitions that never end (live Kafka). Stopping abandons them where they are: open
    /// windows stay open, their data stays in Kafka for the next run.
    Unbounded(Partitions),
    /// The in-process inputs (demo, HTTP ingest): events, then each configured kind's; partition
    /// p of each read by worker p % workers. Stopping closes them: what is queued is read and
    /// every window becomes final.
    Input(Vec<LiveInput>),
}

impl Sources {
    /// Partitions that end, opened by `open`.
    pub fn bounded(open: ReadersFor, identity: impl Into<String>) -> Self {
        Self::Bounded(Partitions {
            open,
            identity: identity.into(),
        })
    }

    /// NDJSON files, file i being partition i.
    pub fn files(paths: Vec<PathBuf>) -> Self {
        let identity = format!("files {paths:?}");
        let open: ReadersFor = Arc::new(move |index, workers, _| {
            paths
                .iter()
                .enumerate()
                .filter(|(partition, _)| partition % workers == index)
                .map(|(partition, path)| {
                    FileReader::open(path, partition as u32)
                        .map(|reader| Box::new(reader) as Box<dyn PartitionReader>)
                        .map_err(|error| error.to_string())
                })
                .collect()
        });
        Self::bounded(open, identity)
    }

    /// Kafka partitions, partition p of each topic read by worker p % workers; bounded when
    /// `options.end` is set.
    pub fn kafka(options: KafkaSourceOptions) -> Self {
        let identity = format!(
            "kafka topics {:?} from {:?} until {:?}",
            options.topics, options.start, options.end
        );
        let bounded = options.end.is_some();
        let open: ReadersFor = Arc::new(move |index, workers, clock| {
            worker_readers(&options, index, workers, clock).map_err(|error| error.to_string())
        });
        let partitions = Partitions { open, identity };
        if bounded {
            Self::Bounded(partitions)
        } else {
            Self::Unbounded(partitions)
        }
    }

    /// What is read (see [`Partitions::identity`]).
    pub fn identity(&self) -> &str {
        match self {
            Self::Bounded(partitions) | Self::Unbounded(partitions) => &partitions.identity,
            Self::Input(_) => "the in-process input",
        }
    }

    /// The partitions worker `index` of `workers` reads.
    pub(crate) fn readers_for(&self) -> ReadersFor {
        match self {
            Self::Bounded(partitions) | Self::Unbounded(partitions) => Arc::clone(&partitions.open),
            Self::Input(inputs) => {
                let inputs = inputs.clone();
                Arc::new(move |index, workers, _| {
                    Ok(inputs
                        .iter()
                        .flat_map(|input| {
                            (index..input.partitions())
                                .step_by(workers)
                                .map(|p| Box::new(input.reader(p)) as Box<dyn PartitionReader>)
                        })
                        .collect())
                })
            }
        }
    }
}
