//! A bounded run whose sink can take nothing more (its output broke, Postgres refused a write)
//! stops at once with the sink's reason, rather than reading the rest of its input for nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crowdpulse_connectors::generator::{Generator, GeneratorConfig};
use crowdpulse_connectors::sink::{Flush, Sink};
use crowdpulse_connectors::ConnectorError;
use crowdpulse_dataflow::config::PipelineConfig;
use crowdpulse_dataflow::memory_reader::MemoryReader;
use crowdpulse_dataflow::plan::Plan;
use crowdpulse_dataflow::sentiment::{Analyzer, Lexicons};
use crowdpulse_dataflow::source::{PartitionReader, SourceCounters};
use crowdpulse_runtime::cluster::Cluster;
use crowdpulse_runtime::process::{run_into, BoundedRun};
use crowdpulse_runtime::sources::{ReadersFor, Sources};

/// Breaks at its first flush with rows, as an output whose reader went away.
#[derive(Default)]
struct BrokenSink {
    broken: AtomicBool,
}

impl Sink for BrokenSink {
    fn flush(&self, flush: &Arc<Flush>) {
        if !flush.updates.is_empty() {
            self.broken.store(true, Ordering::Relaxed);
        }
    }

    fn finish(&self) -> Result<(), ConnectorError> {
        match self.failure() {
            Some(reason) => Err(ConnectorError::NdjsonOutput(reason)),
            None => Ok(()),
        }
    }

    fn failure(&self) -> Option<String> {
        self.broken
            .load(Ordering::Relaxed)
            .then(|| "the output's reader went away".to_owned())
    }
}

#[test]
fn a_bounded_run_stops_when_its_sink_fails() {
    const EVENTS: u64 = 400_000;
    let events: Vec<Vec<u8>> = Generator::new(GeneratorConfig {
        events: EVENTS,
        streams: 4,
        ..GeneratorConfig::default()
    })
    .map(|generated| generated.line.into_bytes())
    .collect();
    let partition = MemoryReader::new("events", 0, events).with_batches(vec![1_000]);
    let open: ReadersFor = Arc::new(move |index, _, _| {
        Ok(match index {
            0 => vec![Box::new(partition.clone()) as Box<dyn PartitionReader>],
            _ => Vec::new(),
        })
    });
    let counters = Arc::new(SourceCounters::default());
    let run = BoundedRun {
        analyzer: Arc::new(Analyzer::new(Lexicons::builtin())),
        plan: Plan::new(PipelineConfig::default()).unwrap(),
        cluster: Cluster::local(2),
        counters: Arc::clone(&counters),
        sources: Sources::bounded(open, "generated events"),
    };
    let sink = Arc::new(BrokenSink::default());
    let error = run_into(run, vec![sink as Arc<dyn Sink>], None, None)
        .expect_err("a broken output fails the run")
        .to_string();
    let read = counters.records.load(Ordering::Relaxed);
    eprintln!("{read} of {EVENTS} records read");
    assert_eq!(error, "the run stopped: the output's reader went away");
    assert!(
        read < EVENTS / 2,
        "{read} of {EVENTS} records read after the sink broke"
    );
}
