//! crowdpulse's I/O around the pure dataflow: configuration loading, the NDJSON file source, the
//! Kafka source and producers, the sink interface with its NDJSON and Postgres sinks, the
//! in-process live input, the summarizer's endpoint client, the line-oriented sentiment tool and the event generator.

pub mod config;
pub mod dead_letter_topic;
pub mod download_generator;
pub mod error;
pub mod file_source;
pub mod generator;
pub mod ingest_producer;
pub mod kafka_config;
pub mod kafka_delivery;
pub mod kafka_generate;
pub mod kafka_progress;
pub mod kafka_reader;
pub mod kafka_source;
pub mod live_input;
pub mod partitioner;
pub mod position;
pub mod postgres;
pub mod sentiment_lines;
pub mod sink;
pub mod sorted_output;
pub mod summarizer;

pub use error::{ConnectorError, Result};
