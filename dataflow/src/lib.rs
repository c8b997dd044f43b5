//! crowdpulse's pure computation: the event model and codecs, the sentiment scorer, event-time
//! windows and the analytics dataflow. No I/O happens here; sources hand records in through
//! [`source::PartitionReader`], and results leave as a differential collection of [`rows::Row`].

pub mod codec;
pub mod error;
pub mod event;
mod flat_json;
pub mod hashing;
pub mod kinds;
pub mod timestamp;

pub use error::{Error, Result};
pub mod analytics;
pub mod category;
pub mod checkpoint;
pub mod clock;
pub mod config;
pub mod fact_rows;
pub mod memory_reader;
pub mod pacing;
pub mod pending;
pub mod pipeline;
pub mod plan;
pub mod progress;
pub mod recent_reactions;
pub mod reference;
pub mod rows;
pub mod rows_json;
pub mod seen_ids;
pub mod sentiment;
pub mod source;
pub mod summary;
pub mod windows;
