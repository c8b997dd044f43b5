//! crowdpulse's pure computation: the event model and codecs, the sentiment scorer, event-time
//! windows and the analytics dataflow. No I/O happens here; sources hand records in through
//! [`source::PartitionReader`], and results leave as a differential collection of [`rows::Row`].

pub mod codec;
pub mod error;
pub mod hashing;
pub mod event;
pub mod timestamp;

pub use error::{Error, Result};
pub mod sentiment;
pub mod clock;
pub mod config;
pub mod windows;
pub mod rows;
pub mod analytics;
pub mod source;
pub mod pipeline;
pub mod memory_reader;
pub mod reference;
