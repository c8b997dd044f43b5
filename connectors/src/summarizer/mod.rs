//! Optional abstractive chat summaries: an OpenAI-compatible chat-completions endpoint turns
//! each extractive summary into a sentence or two, outside the dataflow; texts are stored keyed
//! by the summary so a replay reuses them.

pub mod client;
pub mod config;
pub mod sink;
pub mod texts;

pub use config::SummarizerConfig;
pub use sink::{SummarizerMetrics, SummaryTextListener, SummaryTexts};
