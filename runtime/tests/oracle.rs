//! The dataflow against the sequential reference, for 1, 2 and 4 workers and arbitrary splits of
//! each partition into input batches, over random events with disorder, in-allowance late and
//! beyond-allowance late records, and malformed input.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crowdpulse_connectors::sink::{Flush, Sink};
use crowdpulse_dataflow::config::PipelineConfig;
use crowdpulse_dataflow::memory_reader::MemoryReader;
use crowdpulse_dataflow::plan::Plan;
use crowdpulse_dataflow::reference::{reference_rows, ReferencePartition};
use crowdpulse_dataflow::rows::Row;
use crowdpulse_dataflow::sentiment::{Analyzer, Lexicons};
use crowdpulse_dataflow::source::{PartitionReader, SourceCounters};
use crowdpulse_runtime::cluster::Cluster;
use crowdpulse_runtime::execute::{start, Job};
use crowdpulse_runtime::sources::Sources;
use proptest::prelude::*;
use serde_json::json;
use support::run_bounded;

mod support;

const T0: u64 = 1_795_341_600_000;

/// A config under which random inputs of a few hundred records exercise moments too.
fn sensitive_config() -> PipelineConfig {
    let mut config = PipelineConfig::default();
    config.moments.baseline_windows = 3;
    config.moments.min_zscore = 1.5;
    config.moments.min_chat_messages = 2;
    config.moments.min_reactions = 2;
    config.moments.min_viewer_joins = 1;
    config.moments.min_revenue = 1.0;
    // Short enough that random inputs time viewers out.
    config.viewer_timeout = crowdpulse_dataflow::config::Span(20_000);
    // Summaries often, over windows short enough to be full and horizons short enough to cut.
    config.summary.every = 3;
    config.summary.window = 7;
    config.summary.horizon = crowdpulse_dataflow::config::Span(45_000);
    config
}

fn run(
    partitions: &[ReferencePartition],
    batches: &[Vec<usize>],
    workers: usize,
    config: &PipelineConfig,
) -> Vec<Row> {
    let analyzer = Arc::new(Analyzer::new(Lexicons::builtin()));
    let parts = partitions.to_vec();
    let batches = batches.to_vec();
    run_bounded(
        workers,
        config,
        analyzer,
        Arc::new(SourceCounters::default()),
        move |index, peers| {
            Ok(parts
                .iter()
                .enumerate()
                .filter(|(p, _)| p % peers == index)
                .map(|(p, part)| {
                    let reader =
                        MemoryReader::new(&part.source, part.partition, part.payloads.clone())
                            .with_batches(batches.get(p).cloned().unwrap_or_default());
                    Box::new(reader) as Box<dyn PartitionReader>
                })
                .collect())
        },
    )
    .map(|mut rows| {
        rows.sort();
        rows
    })
    .expect("bounded run")
}

fn lines(rows: &[Row]) -> Vec<String> {
    let mut lines: Vec<String> = rows.iter().map(|r| r.to_json_line()).collect();
    lines.sort();
    lines
}

fn check(
    partitions: &[ReferencePartition],
    batches: &[Vec<usize>],
    config: &PipelineConfig,
) -> Vec<Row> {
    let analyzer = Analyzer::new(Lexicons::builtin());
    let expected = reference_rows(partitions, config, &analyzer).unwrap();
    let without_live = PipelineConfig {
        live_rows: false,
        ..config.clone()
    };
    for (workers, config) in [(1, config), (2, config), (4, config), (2, &without_live)] {
        let got = run(partitions, batches, workers, config);
        if got != expected {
            let (g, e) = (lines(&got), lines(&expected));
            let missing: Vec<_> = e.iter().filter(|l| !g.contains(l)).take(5).collect();
            let extra: Vec<_> = g.iter().filter(|l| !e.contains(l)).take(5).collect();
            panic!("{workers} workers (live rows: {}) differ from the reference\nmissing: {missing:#?}\nextra: {extra:#?}", config.live_rows);
        }
    }
    expected
}

fn record() -> impl Strategy<Value = (u64, u64, serde_json::Value)> {
    // Now and then a gap long enough for every stream to go quiet and wake again.
    let step = prop_oneof![40 => 0u64..3_000, 1 => 240_000u64..900_000];
    let back =
        prop_oneof![6 => Just(0u64), 2 => 0u64..5_000, 1 => 0u64..70_000, 1 => 0u64..200_000];
    // Skewed, so a rare stream goes quiet while the others keep the frontier moving.
    let stream = prop_oneof![12 => Just("s0"), 6 => Just("s1"), 1 => Just("s2")];
    let user = (0..6u8).prop_map(|u| format!("u{u}"));
    let body = prop_oneof![
        4 => (user.clone(), prop::sample::select(vec!["PogChamp that was great", "this is bad", "love it 😂", "meh", "NOT good!!", "LUL", "you are trash", "why?", "is he stupid?"]))
            .prop_map(|(u, t)| json!({"type": "chat", "user_id": u, "text": t})),
        3 => (user.clone(), prop::sample::select(vec!["😂", "🔥", "❤️", "👍"]))
            .prop_map(|(u, e)| json!({"type": "reaction", "user_id": u, "emoji": e})),
        3 => (user.clone(), prop::sample::select(vec!["join", "leave", "heartbeat"]))
            .prop_map(|(u, a)| json!({"type": "viewer", "user_id": u, "action": a})),
        1 => (0u64..50).prop_map(|n| json!({"type": "viewer", "viewer_count": n})),
        1 => (user, prop::sample::select(vec!["donation", "bits"]), 0u32..10_000, prop::sample::select(vec!["USD", "EUR"]))
            .prop_map(|(u, k, cents, c)| json!({"type": "transaction", "user_id": u, "kind": k, "amount": f64::from(cents) / 100.0, "currency": c})),
        1 => (prop::option::of(prop::sample::select(vec!["live", "offline"])), prop::option::of(prop::sample::select(vec!["A", "B"])))
            .prop_map(|(s, t)| json!({"type": "stream_meta", "status": s, "title": t})),
    ];
    // A few ids shared by many records: repeats within and beyond the lateness horizon, in the
    // same and in other streams.
    let id = prop::option::weighted(0.4, (0..6u8).prop_map(|i| format!("e{i}")));
    (step, back, stream, body, id).prop_map(|(step, back, stream, mut body, id)| {
        body["stream_id"] = json!(stream);
        if let Some(id) = id {
            body["event_id"] = json!(id);
        }
        (step, back, body)
    })
}

fn malformed() -> impl Strategy<Value = Vec<u8>> {
    prop::sample::select(vec![
        b"{\"type\":\"chat\",\"stream_id\":\"s0\",".to_vec(),
        b"{\"type\":\"poll\",\"stream_id\":\"s0\",\"ts\":1}".to_vec(),
        b"{\"type\":\"chat\",\"stream_id\":\"s0\",\"user_id\":7,\"ts\":1,\"text\":\"x\"}".to_vec(),
        b"{\"type\":\"reaction\",\"stream_id\":\"s0\",\"ts\":1}".to_vec(),
        b"not json at all".to_vec(),
        b"{\"type\":\"chat\",\"stream_id\":\"s0\",\"user_id\":\"u\",\"ts\":18446744073709551615,\"text\":\"x\"}".to_vec(),
        b"{\"type\":\"chat\",\"stream_id\":\"s\xff\",\"user_id\":\"u\",\"ts\":1,\"text\":\"x\"}"
            .to_vec(),
    ])
}

fn partitions() -> impl Strategy<Value = (Vec<ReferencePartition>, Vec<Vec<usize>>)> {
    let partition = (
        prop::collection::vec(
            (record(), prop::option::weighted(0.05, malformed())),
            0..120,
        ),
        prop::collection::vec(1usize..40, 1..5),
    );
    prop::collection::vec(partition, 1..4).prop_map(|parts| {
        let mut out = Vec::new();
        let mut batches = Vec::new();
        for (p, (records, sizes)) in parts.into_iter().enumerate() {
            let mut cursor = T0;
            let payloads = records
                .into_iter()
                .map(|((step, back, mut body), bad)| {
                    cursor += step;
                    body["ts"] = json!(cursor.saturating_sub(back));
                    bad.unwrap_or_else(|| body.to_string().into_bytes())
                })
                .collect();
            out.push(ReferencePartition {
                source: format!("p{p}.ndjson"),
                partition: p as u32,
                payloads,
            });
            batches.push(sizes);
        }
        (out, batches)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn dataflow_matches_the_reference((parts, batches) in partitions()) {
        check(&parts, &batches, &sensitive_config());
    }
}

fn event(ts: u64, body: serde_json::Value) -> Vec<u8> {
    let mut body = body;
    body["ts"] = json!(ts);
    body["stream_id"] = json!("spiky");
    body.to_string().into_bytes()
}

/// A chat spike after a steady baseline becomes one moment, and every table has rows; the same
/// rows come out of every worker count and batch split.
#[test]
fn spike_becomes_a_moment_and_every_table_has_rows() {
    let mut payloads = vec![event(
        T0,
        json!({"type": "stream_meta", "status": "live", "title": "Finals"}),
    )];
    for window in 0..20u64 {
        let messages = if window == 15 || window == 16 {
            120
        } else {
            25 + window % 3
        };
        for i in 0..messages {
            let ts = T0 + window * 10_000 + i * 10_000 / messages;
            payloads.push(event(
                ts,
                json!({"type": "chat", "user_id": format!("u{}", i % 30), "text": "PogChamp"}),
            ));
        }
        payloads.push(event(
            T0 + window * 10_000 + 1,
            json!({"type": "reaction", "user_id": "u1", "emoji": "🔥"}),
        ));
        payloads.push(event(
            T0 + window * 10_000 + 2,
            json!({"type": "viewer", "user_id": format!("v{window}"), "action": "join"}),
        ));
        payloads.push(event(T0 + window * 10_000 + 3, json!({"type": "transaction", "user_id": "u2", "kind": "bits", "amount": 1.5, "currency": "USD"})));
    }
    payloads.push(b"{broken".to_vec());
    payloads.push(event(
        T0,
        json!({"type": "chat", "user_id": "late", "text": "too late"}),
    ));
    let parts = vec![ReferencePartition {
        source: "spiky.ndjson".into(),
        partition: 0,
        payloads,
    }];
    let rows = check(&parts, &[vec![7, 300, 1]], &PipelineConfig::default());
    let tables: std::collections::BTreeSet<&str> = rows.iter().map(Row::table).collect();
    assert_eq!(
        tables.into_iter().collect::<Vec<_>>(),
        [
            "chat_messages",
            "chat_summaries",
            "dead_letters",
            "moments",
            "stream_totals",
            "window_emojis",
            "window_metrics",
            "window_revenue",
            "window_top_emojis"
        ]
    );
    let moments: Vec<_> = rows
        .iter()
        .filter_map(|r| match r {
            Row::Moment { moment, .. } => Some(moment),
            _ => None,
        })
        .collect();
    assert_eq!(moments.len(), 1, "{moments:?}");
    assert_eq!(
        (moments[0].metric.as_str(), moments[0].start, moments[0].end),
        ("chat_rate", T0 + 150_000, T0 + 170_000)
    );
    let reasons: Vec<_> = rows
        .iter()
        .filter_map(|r| match r {
            Row::DeadLetter(d) => Some(d.reason.name()),
            _ => None,
        })
        .collect();
    assert_eq!(reasons, ["decode", "late"]);
}

/// Partition 0: a chat message a second, 50 of them.
fn fifty_chat_messages() -> Box<dyn PartitionReader> {
    Box::new(MemoryReader::new(
        "p",
        0,
        (0..50)
            .map(|i| {
                event(
                    T0 + i * 1_000,
                    json!({"type": "chat", "user_id": "u", "text": "hi"}),
                )
            })
            .collect(),
    ))
}

/// A worker that cannot open its partitions fails the run, naming itself, and nothing becomes
/// final before: a sink that commits what it is given (Postgres) must never get a window
/// finalized without that worker's partitions. (The worker
/// used to join the dataflow without partitions, as if its share had ended: the other's rows
/// came out final, and a live run went on without its partitions.)
#[test]
fn a_worker_that_cannot_open_its_partitions_lets_nothing_become_final() {
    /// Counts the final rows it is given.
    #[derive(Default)]
    struct Finals(AtomicUsize);

    impl Sink for Finals {
        fn flush(&self, flush: &Arc<Flush>) {
            let finals = flush
                .updates
                .iter()
                .filter(|(row, _, diff)| *diff > 0 && row.is_final())
                .count();
            self.0.fetch_add(finals, Ordering::Relaxed);
        }
    }

    let finals = Arc::new(Finals::default());
    let readers = |index: usize, _, _| match index {
        0 => Ok(vec![fifty_chat_messages()]),
        _ => Err("broker unreachable".to_owned()),
    };
    let error = start(Job {
        cluster: Cluster::local(2),
        plan: Plan::new(PipelineConfig::default()).unwrap(),
        analyzer: Arc::new(Analyzer::new(Lexicons::builtin())),
        counters: Arc::default(),
        sources: Sources::bounded(Arc::new(readers), "memory"),
        sinks: vec![Arc::clone(&finals) as Arc<dyn Sink>],
        lead: None,
        checkpoints: None,
    })
    .unwrap()
    .join()
    .expect_err("a worker could not open its partitions");
    assert!(error.to_string().contains("worker 1"), "{error}");
    assert!(error.to_string().contains("broker unreachable"), "{error}");
    assert_eq!(
        finals.0.load(Ordering::Relaxed),
        0,
        "final rows were flushed"
    );
}

/// A partition that fails midway (a file cut, offsets removed by retention).
struct FailingReader {
    served: bool,
}

impl PartitionReader for FailingReader {
    fn source_name(&self) -> &str {
        "failing"
    }
    fn partition(&self) -> u32 {
        1
    }
    fn format(
        &self,
    ) -> (
        crowdpulse_dataflow::codec::Format,
        crowdpulse_dataflow::codec::DecodeContext,
    ) {
        (
            crowdpulse_dataflow::codec::Format::Json,
            crowdpulse_dataflow::codec::DecodeContext::default(),
        )
    }
    fn read(
        &mut self,
        _max: usize,
        out: &mut crowdpulse_dataflow::source::RecordBatch,
    ) -> Result<crowdpulse_dataflow::source::ReadStatus, String> {
        if std::mem::replace(&mut self.served, true) {
            return Err("the rest is gone".into());
        }
        out.push(
            0,
            &event(T0, json!({"type": "chat", "user_id": "u", "text": "hi"})),
            None,
        );
        Ok(crowdpulse_dataflow::source::ReadStatus::More)
    }
}

#[test]
fn a_partition_that_cannot_be_read_to_its_end_fails_the_run() {
    let result = run_bounded(
        2,
        &PipelineConfig::default(),
        Arc::new(Analyzer::new(Lexicons::builtin())),
        Arc::new(SourceCounters::default()),
        |index, _| {
            Ok(match index {
                0 => vec![fifty_chat_messages()],
                _ => vec![Box::new(FailingReader { served: false }) as Box<dyn PartitionReader>],
            })
        },
    );
    let error = result.expect_err("an incomplete input must not pass for a complete run");
    assert!(error.to_string().contains("failed reads"), "{error}");
}
