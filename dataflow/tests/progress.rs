//! What the source reports of each partition's progress (the offsets committed to the consumer
//! group, and the lag `/metrics` shows, are measured from it).

use std::sync::Arc;

use crowdpulse_dataflow::config::PipelineConfig;
use crowdpulse_dataflow::memory_reader::MemoryReader;
use crowdpulse_dataflow::pipeline::analytics_dataflow;
use crowdpulse_dataflow::plan::Plan;
use crowdpulse_dataflow::sentiment::{Analyzer, Lexicons};
use crowdpulse_dataflow::source::{PartitionReader, SourceCounters};

/// A partition that read nothing reports where it began, not nothing: a partition started at
/// its end (`latest`) otherwise showed everything the topic held as lag until its first record.
#[test]
fn a_partition_that_read_nothing_reports_where_it_began() {
    let counters = Arc::new(SourceCounters::default());
    let reported = Arc::clone(&counters);
    timely::execute_directly(move |worker| {
        let plan = Plan::new(PipelineConfig::default()).unwrap();
        worker.dataflow::<u64, _, _>(|scope| {
            // Offsets 0..3 held, reading begins at 5: nothing to read.
            let reader = MemoryReader::new("m", 0, vec![b"{}".to_vec(); 3]).starting_at(5);
            analytics_dataflow(
                scope,
                vec![Box::new(reader) as Box<dyn PartitionReader>],
                &plan,
                Arc::new(Analyzer::new(Lexicons::builtin())),
                reported,
                None,
                None,
            );
        });
    });
    let progress = counters.partition_progress();
    assert_eq!(progress[&("m".to_owned(), 0)].next_offset, Some(5));
}
