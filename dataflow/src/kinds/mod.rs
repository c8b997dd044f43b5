//! Event kinds defined in configuration (StreamPulse's content downloads, or any other): their
//! settings and presets, record decoding (JSON, bincode, Avro), conditions, and the mergeable
//! quantile sketch their percentiles use.

pub mod aggregate;
pub mod avro;
pub mod condition;
pub mod config;
pub mod panes;
pub mod record;
pub mod sketch;
pub mod windows;
