//! Against the real broker on 127.0.0.1:9092 (`scripts/kafka.sh`): generated events produced to
//! 4 partitions, read back from earliest to latest by the Kafka source, give exactly the rows
//! that the same events give from 4 partition files, for 1 and 2 workers.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crowdpulse_connectors::file_source::FileReader;
use crowdpulse_connectors::generator::{write_files, GeneratorConfig};
use crowdpulse_connectors::kafka_source::{worker_readers, KafkaSourceOptions, TopicSource};
use crowdpulse_connectors::live_input::wall_clock_ms;
use crowdpulse_connectors::position::Position;
use crowdpulse_dataflow::codec::{DecodeContext, Format};
use crowdpulse_dataflow::config::PipelineConfig;
use crowdpulse_dataflow::sentiment::{Analyzer, Lexicons};
use crowdpulse_dataflow::source::{PartitionReader, SourceCounters};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use support::{fresh_topic, run_bounded, BROKER};

mod support;

const PARTITIONS: usize = 4;

fn produce(topic: &str, files: &[PathBuf]) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", BROKER)
        // One in-flight request per connection keeps each partition's order under retries.
        .set("max.in.flight.requests.per.connection", "1")
        .create()
        .unwrap();
    for (partition, file) in files.iter().enumerate() {
        for line in std::fs::read_to_string(file).unwrap().lines() {
            let mut record = BaseRecord::<(), str>::to(topic)
                .partition(partition as i32)
                .payload(line);
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((_, unsent)) => {
                        // Queue full: let deliveries complete, then retry.
                        producer.poll(Duration::from_millis(10));
                        record = unsent;
                    }
                }
            }
        }
    }
    producer
        .flush(Duration::from_secs(60))
        .expect("every message delivered");
}

fn lines(rows: Vec<crowdpulse_dataflow::rows::Row>, sources: &[(String, String)]) -> Vec<String> {
    let mut lines: Vec<String> = rows
        .iter()
        .map(|row| {
            let mut line = row.to_json_line();
            for (from, to) in sources {
                line = line.replace(from, to);
            }
            line
        })
        .collect();
    lines.sort();
    lines
}

#[test]
fn bounded_read_from_earliest_equals_the_same_events_from_files() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("kafka-bounded-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = GeneratorConfig {
        events: 20_000,
        seed: 5,
        streams: 8,
        rate: 500.0,
        start: 1_795_000_000_000,
    };
    let files = write_files(config, &dir.join("events.ndjson"), PARTITIONS).unwrap();
    let topic = fresh_topic("bounded", PARTITIONS);
    produce(&topic, &files);

    let pipeline = PipelineConfig {
        live_rows: false,
        ..PipelineConfig::default()
    };
    let analyzer = Arc::new(Analyzer::new(Lexicons::builtin()));
    let file_list = files.clone();
    let from_files = run_bounded(
        2,
        &pipeline,
        Arc::clone(&analyzer),
        Arc::default(),
        move |index, peers| {
            Ok(file_list
                .iter()
                .enumerate()
                .filter(|(p, _)| p % peers == index)
                .map(|(p, path)| {
                    Box::new(FileReader::open(path, p as u32).unwrap()) as Box<dyn PartitionReader>
                })
                .collect())
        },
    )
    .unwrap();
    // Dead letters name their source: the file here, the topic there.
    let sources: Vec<(String, String)> = files
        .iter()
        .map(|f| (f.display().to_string(), topic.clone()))
        .collect();
    let expected = lines(from_files, &sources);
    assert!(
        expected.iter().any(|l| l.contains("\"dead_letters\"")),
        "the events include malformed ones"
    );

    let options = KafkaSourceOptions {
        brokers: BROKER.into(),
        group_id: "crowdpulse-test".into(),
        topics: vec![TopicSource {
            name: topic.clone(),
            format: (Format::Json, DecodeContext::default()),
        }],
        start: Position::Earliest,
        end: Some(Position::Latest),
        fetch_wait_max_ms: 10,
        liveness: None,
    };
    for workers in [1, 2] {
        let counters = Arc::new(SourceCounters::default());
        let options = options.clone();
        let from_kafka = run_bounded(
            workers,
            &pipeline,
            Arc::clone(&analyzer),
            Arc::clone(&counters),
            move |index, peers| {
                worker_readers(&options, index, peers, wall_clock_ms()).map_err(|e| e.to_string())
            },
        )
        .unwrap();
        assert_eq!(
            counters.records.load(std::sync::atomic::Ordering::Relaxed),
            20_000
        );
        let got = lines(from_kafka, &[]);
        assert!(
            got == expected,
            "{workers} workers: {} rows from kafka, {} from files",
            got.len(),
            expected.len()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
