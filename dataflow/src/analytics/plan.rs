//! The resolved, validated settings every stream's state consults.

use std::sync::Arc;

use crate::config::{MomentsConfig, PipelineConfig};
use crate::error::Result;
use crate::windows::{pane_size, WindowSpec};

/// Settings resolved once per operator.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) specs: Vec<WindowSpec>,
    /// The specs' labels, shared by every row.
    pub(crate) labels: Vec<Arc<str>>,
    pub(crate) pane: u64,
    /// Frontier distance past a window's end at which it becomes final: max(allowed lateness, 1).
    pub(crate) final_delay: u64,
    pub(crate) top_k: usize,
    pub(crate) live_rows: bool,
    pub(crate) moments: MomentsConfig,
    /// Index in `specs` of the window scored for moments.
    pub(crate) moment_spec: usize,
}

impl Plan {
    pub(crate) fn new(config: &PipelineConfig) -> Result<Self> {
        let specs = config.window_specs()?;
        let moment_spec = specs
            .iter()
            .position(|s| s.label == config.moments.window)
            .expect("window_specs checked the moments window");
        Ok(Self {
            pane: pane_size(&specs),
            final_delay: config.final_time(0),
            top_k: config.top_k,
            live_rows: config.live_rows,
            moments: config.moments.clone(),
            moment_spec,
            labels: specs.iter().map(|s| Arc::from(s.label.as_str())).collect(),
            specs,
        })
    }

    /// Per spec, the first window start that is not final at `frontier` (None: input exhausted,
    /// everything is final).
    pub(crate) fn open_from(&self, frontier: Option<u64>) -> Vec<u64> {
        self.specs
            .iter()
            .map(|spec| match frontier {
                None => u64::MAX,
                Some(f) => spec.first_start_ending_after(f.saturating_sub(self.final_delay)),
            })
            .collect()
    }
}
