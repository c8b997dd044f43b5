//! Start and end positions against the real broker on 127.0.0.1:9092 (`scripts/kafka.sh`),
//! whose answers to offset lookups by time are imprecise (tansu answers offset 0) and whose
//! reported latest offset can be stale: the source's semantics must hold anyway.

use std::time::{Duration, Instant};

use crowdpulse_connectors::kafka_source::{worker_readers, KafkaSourceOptions, TopicSource};
use crowdpulse_connectors::live_input::wall_clock_ms;
use crowdpulse_connectors::position::{PartitionOffset, Position};
use crowdpulse_dataflow::codec::{DecodeContext, Format};
use crowdpulse_dataflow::source::{ReadStatus, RecordBatch};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use support::{fresh_topic, BROKER};

mod support;

/// A fresh 2-partition topic holding, in each partition p, messages "p-i" for i in 0..10 with
/// timestamps 1,000,000 + 1,000 i.
fn topic_with_messages() -> String {
    let topic = fresh_topic("positions", 2);
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", BROKER)
        // One record per batch: tansu reports a partition's end as the start of its last batch
        // + 1, and librdkafka treats a start offset beyond that end as out of range.
        .set("batch.num.messages", "1")
        .create()
        .unwrap();
    for partition in 0..2 {
        for i in 0..10i64 {
            let payload = format!("{partition}-{i}");
            let record = BaseRecord::<(), _>::to(&topic)
                .partition(partition)
                .payload(&payload)
                .timestamp(1_000_000 + 1_000 * i);
            producer.send(record).map_err(|(e, _)| e).unwrap();
        }
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    topic
}

/// Every payload a single worker reads between `start` and `end`, sorted.
fn read(topic: &str, start: Position, end: Position) -> Vec<String> {
    let options = KafkaSourceOptions {
        brokers: BROKER.into(),
        group_id: "crowdpulse-test".into(),
        topics: vec![TopicSource {
            name: topic.into(),
            format: (Format::Json, DecodeContext::default()),
        }],
        start,
        end: Some(end),
        fetch_wait_max_ms: 10,
        liveness: None,
    };
    let mut readers = worker_readers(&options, 0, 1, wall_clock_ms()).unwrap();
    let mut payloads = Vec::new();
    let mut batch = RecordBatch::default();
    let deadline = Instant::now() + Duration::from_secs(20);
    for reader in &mut readers {
        loop {
            batch.clear();
            let status = reader.read(100, &mut batch).unwrap();
            payloads.extend(
                batch
                    .iter()
                    .map(|r| String::from_utf8_lossy(r.payload).into_owned()),
            );
            if status == ReadStatus::Done {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "partition {} never finished: {:?} to {:?}",
                reader.partition(),
                options.start,
                options.end
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    payloads.sort();
    payloads
}

fn expected(partitions: &[i32], indexes: std::ops::Range<i64>) -> Vec<String> {
    let mut all: Vec<String> = partitions
        .iter()
        .flat_map(|p| indexes.clone().map(move |i| format!("{p}-{i}")))
        .collect();
    all.sort();
    all
}

#[test]
fn every_start_and_end_position_holds_on_the_real_broker() {
    let topic = topic_with_messages();
    assert_eq!(
        read(&topic, Position::Earliest, Position::Latest),
        expected(&[0, 1], 0..10)
    );
    // Nothing is produced after the start: reading from latest finishes with nothing.
    assert_eq!(
        read(&topic, Position::Latest, Position::Latest),
        Vec::<String>::new()
    );
    // From the time of message 4 (the broker's lookup answers offset 0; the reader skips).
    assert_eq!(
        read(&topic, Position::Timestamp(1_004_000), Position::Latest),
        expected(&[0, 1], 4..10)
    );
    // Until the time of message 7, exclusive.
    assert_eq!(
        read(&topic, Position::Earliest, Position::Timestamp(1_007_000)),
        expected(&[0, 1], 0..7)
    );
    // Explicit offsets: partition 1 from 8, partition 0 (unlisted) from the earliest; until
    // offset 3 in partition 0, partition 1 (unlisted) to its end.
    let start = Position::Offsets(vec![PartitionOffset {
        topic: topic.clone(),
        partition: 1,
        offset: 8,
    }]);
    let end = Position::Offsets(vec![PartitionOffset {
        topic: topic.clone(),
        partition: 0,
        offset: 3,
    }]);
    let mut want = expected(&[0], 0..3);
    want.extend(expected(&[1], 8..10));
    want.sort();
    assert_eq!(read(&topic, start, end), want);
}
