//! The consume-only ceiling for `scripts/bench-kafka`: one rdkafka BaseConsumer per thread reads
//! its share of a topic's partitions (partition p by thread p % threads, as crowdpulse assigns
//! them to workers) from the beginning to partition EOF and only counts the messages.
//! Usage: kafka_ceiling --brokers HOST:PORT --topic NAME [--threads 2]

use std::time::{Duration, Instant};

use crowdpulse_connectors::kafka_reader::close_in_background;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn count(brokers: &str, topic: &str, partitions: Vec<i32>) -> u64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "crowdpulse-ceiling")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        // The same as crowdpulse's source (kafka.fetch_wait_max), so the two compare fairly.
        .set("fetch.wait.max.ms", "10")
        .create()
        .expect("consumer");
    // As crowdpulse's source does (it counts the partitions first): with the partitions' leaders
    // known before the assignment, the first message comes about 0.1 s after the start instead
    // of 0.55 s.
    consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let mut assignment = TopicPartitionList::new();
    for p in &partitions {
        assignment
            .add_partition_offset(topic, *p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).expect("assign");
    let (mut messages, mut ended) = (0u64, 0usize);
    while ended < partitions.len() {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(_)) => messages += 1,
            Some(Err(KafkaError::PartitionEOF(_))) => ended += 1,
            Some(Err(error)) => eprintln!("consumer: {error}"),
            None => {}
        }
    }
    // As crowdpulse's source does, so the two compare fairly.
    close_in_background(consumer);
    messages
}

fn main() {
    let brokers = arg("--brokers").unwrap_or_else(|| "127.0.0.1:9092".into());
    let topic = arg("--topic").expect("--topic NAME");
    let threads: i32 = arg("--threads").map_or(2, |t| t.parse().expect("--threads N"));
    let partitions: i32 = arg("--partitions").map_or(4, |p| p.parse().expect("--partitions N"));
    let started = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (brokers, topic) = (brokers.clone(), topic.clone());
            let mine: Vec<i32> = (0..partitions).filter(|p| p % threads == t).collect();
            std::thread::spawn(move || count(&brokers, &topic, mine))
        })
        .collect();
    let messages: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "consume-only ceiling: {messages} messages in {seconds:.3} s, {:.0} messages/s",
        messages as f64 / seconds
    );
}
