//! The dataflow crate's error type: every way configuration, lexicons or records can be unusable.

use thiserror::Error;

/// Errors of the pure dataflow layer. Record errors are carried as data (dead letters), never panics.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum Error {
    /// The bytes are not a decodable record (not JSON, not an object, truncated, bad UTF-8, too large).
    #[error("decode: {0}")]
    Decode(String),
    /// The record decoded but breaks a validation rule of DESIGN §2.
    #[error("invalid: {0}")]
    Invalid(String),
    /// A configuration value is unusable.
    #[error("config: {0}")]
    Config(String),
    /// The dataflow could not run (a worker failed).
    #[error("runtime: {0}")]
    Runtime(String),
    /// A sentiment lexicon line could not be parsed.
    #[error("lexicon {name} line {line}: {message}")]
    Lexicon {
        /// Which lexicon (word, emoji, emote, category).
        name: String,
        /// One-based line number.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// A number from a record for an error message: plain while short, in exponent form beyond
/// (`1e308` would otherwise print 309 digits).
pub fn shown(value: f64) -> String {
    if value.abs() < 1e16 {
        format!("{value}")
    } else {
        format!("{value:e}")
    }
}

/// Longest part of a record's own text that an error message quotes, in bytes.
const EXCERPT_BYTES: usize = 48;

/// `text` quoted for an error message, cut to a few dozen bytes: messages travel into dead
/// letters, logs and HTTP answers, and must not grow with what a client sent.
pub fn excerpt(text: &str) -> String {
    if text.len() <= EXCERPT_BYTES {
        return format!("{text:?}");
    }
    let cut = text.floor_char_boundary(EXCERPT_BYTES);
    format!("{:?}… ({} bytes)", &text[..cut], text.len())
}
