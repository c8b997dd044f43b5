//! Live sources: a partition that is behind (nothing to read, but not at its end: a stalled fetch,
//! an unreachable broker) holds the watermark back however long it stays so; a caught-up
//! partition stops holding it back after `idle_timeout`; wall clock moves it when every
//! partition is idle; a record that arrives behind the advanced capability is dead-lettered as
//! late instead of touching a final window.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crowdpulse_dataflow::codec::{DecodeContext, Format};
use crowdpulse_dataflow::config::{PipelineConfig, Span};
use crowdpulse_dataflow::event::Millis;
use crowdpulse_dataflow::pipeline::analytics_dataflow;
use crowdpulse_dataflow::plan::Plan;
use crowdpulse_dataflow::rows::{DeadLetterReason, Row};
use crowdpulse_dataflow::sentiment::{Analyzer, Lexicons};
use crowdpulse_dataflow::source::{PartitionReader, ReadStatus, RecordBatch, SourceCounters};
use timely::dataflow::ProbeHandle;
use timely::scheduling::SyncActivator;

/// A partition fed by the test, with a wall clock the test sets.
#[derive(Clone)]
struct ScriptedPartition {
    index: u32,
    records: Arc<Mutex<VecDeque<Vec<u8>>>>,
    activator: Arc<Mutex<Option<SyncActivator>>>,
    wall: Arc<AtomicU64>,
    closed: Arc<AtomicBool>,
    /// Answers that it is behind rather than caught up.
    behind: Arc<AtomicBool>,
}

impl ScriptedPartition {
    fn wake(&self) {
        if let Some(activator) = &*self.activator.lock().unwrap() {
            activator.activate().unwrap();
        }
    }

    fn push(&self, ts: Millis) {
        let record = format!(
            r#"{{"type":"reaction","stream_id":"s{}","user_id":"u","emoji":"🔥","ts":{ts}}}"#,
            self.index
        );
        self.records.lock().unwrap().push_back(record.into_bytes());
        self.wake();
    }
}

impl PartitionReader for ScriptedPartition {
    fn source_name(&self) -> &str {
        "scripted"
    }
    fn partition(&self) -> u32 {
        self.index
    }
    fn format(&self) -> (Format, DecodeContext) {
        (Format::Json, DecodeContext::default())
    }
    fn read(&mut self, _max: usize, out: &mut RecordBatch) -> Result<ReadStatus, String> {
        for (offset, record) in self.records.lock().unwrap().drain(..).enumerate() {
            out.push(offset as u64, &record, None);
        }
        Ok(if self.closed.load(Ordering::SeqCst) {
            ReadStatus::Done
        } else if self.behind.load(Ordering::SeqCst) {
            ReadStatus::Behind
        } else {
            ReadStatus::CaughtUp
        })
    }
    fn attach(&mut self, activator: SyncActivator) {
        *self.activator.lock().unwrap() = Some(activator);
    }
    fn wall_clock(&self) -> Option<Millis> {
        Some(self.wall.load(Ordering::SeqCst))
    }
}

#[test]
fn idle_partitions_release_the_watermark_and_late_arrivals_are_dead_lettered() {
    timely::execute_directly(|worker| {
        let wall = Arc::new(AtomicU64::new(1_000_000));
        let partitions: Vec<ScriptedPartition> = (0..2)
            .map(|index| ScriptedPartition {
                index,
                records: Arc::default(),
                activator: Arc::default(),
                wall: Arc::clone(&wall),
                closed: Arc::default(),
                behind: Arc::default(),
            })
            .collect();
        let plan = Plan::new(PipelineConfig {
            idle_timeout: Span(5_000),
            ..PipelineConfig::default()
        })
        .unwrap();
        let probe = ProbeHandle::new();
        let dead: Rc<RefCell<Vec<(u32, DeadLetterReason)>>> = Rc::default();
        let sink = Rc::clone(&dead);
        worker.dataflow::<u64, _, _>(|scope| {
            let readers = partitions
                .iter()
                .map(|p| Box::new(p.clone()) as Box<dyn PartitionReader>)
                .collect();
            let analyzer = Arc::new(Analyzer::new(Lexicons::builtin()));
            let output = analytics_dataflow(
                scope,
                readers,
                &plan,
                analyzer,
                Arc::new(SourceCounters::default()),
                None,
                None,
            );
            output
                .rows
                .inspect(move |(row, _, _)| {
                    if let Row::DeadLetter(letter) = row {
                        sink.borrow_mut().push((letter.partition, letter.reason));
                    }
                })
                .probe_with(&probe);
        });
        // Steps until the frontier reaches `time`, for at most `wait` (timers need real time).
        let settle_within = |worker: &mut timely::worker::Worker, time: u64, wait: u64| -> bool {
            let deadline = Instant::now() + Duration::from_millis(wait);
            while Instant::now() < deadline {
                worker.step_or_park(Some(Duration::from_millis(20)));
                if !probe.less_than(&time) {
                    return true;
                }
            }
            false
        };
        let (a, b) = (&partitions[0], &partitions[1]);

        b.behind.store(true, Ordering::SeqCst);
        a.push(1_000_000);
        a.push(1_004_000);
        let settle =
            |worker: &mut timely::worker::Worker, time: u64| settle_within(worker, time, 5_000);
        assert!(
            !settle_within(worker, 1, 500),
            "b has seen nothing and is not idle yet: it holds the frontier"
        );
        // Far past the idle timeout, but b's records may be on their way: never idle.
        wall.store(1_020_000, Ordering::SeqCst);
        a.wake();
        b.wake();
        assert!(
            !settle_within(worker, 1, 500),
            "b is behind, not caught up: it still holds the frontier"
        );
        // b catches up now; idle only once it has stayed so for the idle timeout.
        b.behind.store(false, Ordering::SeqCst);
        b.wake();
        assert!(!settle_within(worker, 1, 300), "b has just caught up");

        wall.store(1_025_500, Ordering::SeqCst);
        a.push(1_005_500);
        assert!(
            settle(worker, 1_003_500),
            "b idle: a's watermark (1_005_500 - 2 s) leads"
        );
        assert!(probe.less_than(&1_003_501), "but not beyond a's watermark");

        wall.store(1_080_000, Ordering::SeqCst);
        assert!(
            settle(worker, 1_078_000),
            "all idle: wall clock - 2 s leads"
        );

        b.push(1_010_000); // behind the capability by more than the allowed lateness
        b.push(1_050_000); // within it
        let deadline = Instant::now() + Duration::from_secs(5);
        while dead.borrow().is_empty() && Instant::now() < deadline {
            worker.step_or_park(Some(Duration::from_millis(20)));
        }
        assert_eq!(*dead.borrow(), vec![(1, DeadLetterReason::Late)]);
        // End the input so the dataflow completes.
        for partition in &partitions {
            partition.closed.store(true, Ordering::SeqCst);
            partition.wake();
        }
    });
}
