//! Windowed analytics per stream: window metrics, emojis and top emojis, revenue, viewers,
//! moments and stream totals, built from panes with bounded state.

mod delta;
mod engine;
mod moments;
mod operator;
mod pane;
mod stream_state;
mod summaries;
mod text_cache;
mod totals;
mod viewers;

pub use delta::{Delta, Origin, PaneAggregator, PaneDelta};
pub use engine::Engine;
pub(crate) use engine::{decode_quiet, QuietState};
pub use moments::METRICS;
pub use operator::{stream_hash, WindowAnalytics};
pub use pane::{top_with_ties, Top};
pub use stream_state::RowChanges;
pub(crate) use stream_state::StreamState;
