//! The pipeline plan: the validated, resolved form of [`PipelineConfig`], built once when a
//! command starts and handed to every part of the dataflow (source, analytics, sinks).

use std::sync::Arc;

use crate::config::{MomentsConfig, PipelineConfig};
use crate::error::{Error, Result};
use crate::event::Millis;
use crate::kinds::config::{resolve_kinds, KindSpec};
use crate::windows::{pane_size, panes_fault, window_fault, WindowSpec};

/// Settings resolved once; the dataflow only runs on a plan.
#[derive(Debug, Clone)]
pub struct Plan {
    config: PipelineConfig,
    pub(crate) specs: Vec<WindowSpec>,
    /// The specs' labels, shared by every row.
    pub(crate) labels: Vec<Arc<str>>,
    pub(crate) pane: u64,
    /// Frontier distance past a window's end at which it becomes final: max(allowed lateness, 1).
    pub(crate) final_delay: u64,
    pub(crate) top_k: usize,
    pub(crate) live_rows: bool,
    /// Emit each stream's latest reactions as rows (the live view's "last reactions").
    pub(crate) reaction_rows: bool,
    pub(crate) moments: MomentsConfig,
    /// The kinds defined in configuration, checked.
    pub(crate) kinds: Arc<[KindSpec]>,
    /// Index in `specs` of the window scored for moments.
    pub(crate) moment_spec: usize,
}

impl Plan {
    /// How long a join or heartbeat keeps its viewer present (None: until a leave).
    pub(crate) fn viewer_timeout(&self) -> Option<Millis> {
        Some(self.config.viewer_timeout.0).filter(|t| *t > 0)
    }

    /// Checks the settings and resolves the windows.
    pub fn new(config: PipelineConfig) -> Result<Self> {
        let specs = resolve_windows(&config)?;
        let pane = pane_size(&specs);
        for spec in &specs {
            if let Some(why) = panes_fault(spec.size, pane) {
                return Err(Error::Config(format!("window {:?}: {why}", spec.label)));
            }
        }
        let moment_spec = specs
            .iter()
            .position(|s| s.label == config.moments.window)
            .expect("resolve_windows checked the moments window");
        Ok(Self {
            pane,
            final_delay: config.allowed_lateness.0.max(1),
            top_k: config.top_k,
            live_rows: config.live_rows,
            reaction_rows: false,
            moments: config.moments.clone(),
            kinds: checked_kinds(resolve_kinds(&config.kinds)?, config.tick.0)?.into(),
            moment_spec,
            labels: specs.iter().map(|s| Arc::from(s.label.as_str())).collect(),
            specs,
            config,
        })
    }

    /// The same plan emitting, or not, `reactions` rows: of every batch a source reads, each
    /// stream's latest [`crate::rows::RECENT_REACTIONS`] admitted reactions, as live rows (never
    /// final, so no table keeps them). A live server's "last reactions" come from them, whatever
    /// the input (HTTP or Kafka).
    pub fn with_reaction_rows(mut self, reaction_rows: bool) -> Self {
        self.reaction_rows = reaction_rows;
        self
    }

    /// Whether `reactions` rows are emitted.
    pub fn reaction_rows(&self) -> bool {
        self.reaction_rows
    }

    /// The same plan emitting live rows (early results replaced as windows change) or not.
    /// Bounded runs that keep only final rows turn them off; final rows are identical either way.
    pub fn with_live_rows(mut self, live_rows: bool) -> Self {
        self.live_rows = live_rows;
        self.config.live_rows = live_rows;
        self
    }

    /// The kinds defined in configuration, in name order (a kind's index is its place here).
    pub fn kinds(&self) -> &[KindSpec] {
        &self.kinds
    }

    /// The same plan with each Avro kind's schemas, read by `read` (the reader schema, then the
    /// writer schemas by id); errors name the kind's key.
    pub fn with_avro_schemas(
        mut self,
        read: impl Fn(&std::path::Path) -> std::result::Result<String, String>,
    ) -> Result<Self> {
        let mut kinds: Vec<KindSpec> = self.kinds.to_vec();
        for kind in &mut kinds {
            kind.load_avro(&read)?;
        }
        self.kinds = kinds.into();
        Ok(self)
    }

    /// The settings the plan was resolved from.
    pub fn config(&self) -> &PipelineConfig {
        &self.config
    }

    /// The windows, in configuration order.
    pub fn windows(&self) -> &[WindowSpec] {
        &self.specs
    }

    /// Pane length (ms) every window is built from.
    pub fn pane(&self) -> u64 {
        self.pane
    }

    /// The smallest tumbling window, if any (per-stream session totals are summed from it).
    pub fn base_window(&self) -> Option<&WindowSpec> {
        self.specs
            .iter()
            .filter(|spec| spec.size == spec.slide)
            .min_by_key(|spec| spec.size)
    }

    /// The frontier a window ending at `end` must reach to be final: every record accepted for it
    /// carries a timely time below `end + max(allowed_lateness, 1)` (see the source's invariant).
    pub fn final_time(&self, end: u64) -> u64 {
        end.saturating_add(self.final_delay)
    }

    /// Every event before this time has arrived at `frontier` (None: input exhausted): the start
    /// of the first pane that is not final, as a window of one pane would be.
    pub(crate) fn settled_below(&self, frontier: Option<u64>) -> Option<u64> {
        frontier.map(|f| {
            let final_end = f.saturating_sub(self.final_delay);
            final_end - final_end % self.pane
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

/// One day in ms.
const DAY: u64 = 86_400_000;

/// Checks the settings and resolves the windows.
fn resolve_windows(config: &PipelineConfig) -> Result<Vec<WindowSpec>> {
    if config.tick.0 == 0 {
        return Err(Error::Config("tick must be > 0".into()));
    }
    if config.windows.is_empty() {
        return Err(Error::Config("at least one window is required".into()));
    }
    if config.top_k == 0 {
        return Err(Error::Config("top_k must be >= 1".into()));
    }
    if config.top_max_entries < config.top_k {
        return Err(Error::Config("top_max_entries must be >= top_k".into()));
    }
    let summary = &config.summary;
    if summary.every > 0
        && (summary.window == 0
            || summary.window > 1_000
            || summary.every > summary.window as u64
            || !(1..=DAY).contains(&summary.horizon.0))
    {
        return Err(Error::Config(
            "summary.window must be 1..=1000 and at least summary.every, and summary.horizon \
             between 1ms and 1d (a quiet stream keeps its messages that long)"
                .into(),
        ));
    }
    if config.max_event_ids == 0 {
        return Err(Error::Config("max_event_ids must be >= 1".into()));
    }
    let limits = &config.limits;
    let fields = [
        ("id_bytes", limits.id_bytes),
        ("emoji_bytes", limits.emoji_bytes),
        ("label_bytes", limits.label_bytes),
        ("text_bytes", limits.text_bytes),
    ];
    if let Some((name, _)) = fields.iter().find(|(_, bytes)| *bytes == 0) {
        // Every record with the field would be refused.
        return Err(Error::Config(format!("limits.{name} must be >= 1")));
    }
    let mut specs: Vec<WindowSpec> = Vec::new();
    for w in &config.windows {
        let spec = WindowSpec::new(w, config.tick.0)?;
        if specs.iter().any(|s| s.label == spec.label) {
            return Err(Error::Config(format!(
                "window label {:?} is used twice",
                spec.label
            )));
        }
        specs.push(spec);
    }
    if !specs.iter().any(|s| s.label == config.moments.window) {
        return Err(Error::Config(format!(
            "moments.window {:?} names no configured window",
            config.moments.window
        )));
    }
    if !(2..=1_000).contains(&config.moments.baseline_windows) {
        return Err(Error::Config(
            "moments.baseline_windows must be 2..=1000".into(),
        ));
    }
    if !config.moments.min_revenue.is_finite()
        || config.moments.min_revenue <= 0.0
        || !config.moments.min_zscore.is_finite()
    {
        return Err(Error::Config(
            "moments.min_revenue must be > 0 and min_zscore a finite number".into(),
        ));
    }
    if [
        config.moments.min_chat_messages,
        config.moments.min_reactions,
        config.moments.min_viewer_joins,
    ]
    .contains(&0)
    {
        // A zero minimum would let an empty window fire, and the detector's pause over silent
        // stretches relies on empty windows never being anomalous.
        return Err(Error::Config("moments minimum volumes must be >= 1".into()));
    }
    Ok(specs)
}

/// The kinds' windows held to the built-in windows' rules that depend on the tick: a window
/// that is no multiple of it could be made final before a held record of its own arrived, and
/// then a second final row came (alerts judged twice); and the same bounds on size and panes.
fn checked_kinds(kinds: Vec<KindSpec>, tick: u64) -> Result<Vec<KindSpec>> {
    for kind in &kinds {
        for (i, (label, size, slide)) in kind.windows.iter().enumerate() {
            let fault = window_fault(*size, *slide, tick).or_else(|| panes_fault(*size, kind.pane));
            if let Some(why) = fault {
                return Err(Error::Config(format!(
                    "pipeline.kinds.{}.windows[{i}]: {label:?}: {why}",
                    kind.name
                )));
            }
        }
    }
    Ok(kinds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::WindowConfig;

    #[test]
    fn default_plan_has_the_three_documented_windows() {
        let labels: Vec<_> = Plan::new(PipelineConfig::default())
            .unwrap()
            .windows()
            .iter()
            .map(|s| s.label.clone())
            .collect();
        assert_eq!(labels, ["10s", "1m", "1m/10s"]);
    }

    #[test]
    fn rejects_unusable_settings() {
        let mut c = PipelineConfig::default();
        c.moments.window = "5m".into();
        assert!(Plan::new(c).is_err());
        let mut c = PipelineConfig::default();
        c.windows.push(WindowConfig::new(10_000, None));
        assert!(Plan::new(c).is_err());
        let c = PipelineConfig {
            windows: vec![WindowConfig::new(10_050, None)],
            ..PipelineConfig::default()
        };
        assert!(Plan::new(c).is_err());
    }

    /// Settings that were accepted and then took gigabytes, or overflowed: a window of
    /// thousands of slides (every event in each), of more panes than its state should hold, an
    /// absurd size, an unbounded moment baseline, an infinite z-score.
    #[test]
    fn rejects_settings_that_cost_without_bound() {
        let with_windows = |windows: Vec<WindowConfig>| {
            let moments_window = windows[0].clone();
            let mut c = PipelineConfig {
                windows,
                ..PipelineConfig::default()
            };
            c.moments.window = WindowSpec::new(&moments_window, c.tick.0)
                .map_or_else(|_| "none".into(), |spec| spec.label);
            Plan::new(c)
        };
        const HOUR: u64 = 3_600_000;
        let refused = [
            vec![WindowConfig::new(HOUR, Some(1_000))],
            vec![
                WindowConfig::new(24 * HOUR, None),
                WindowConfig::new(1_000, None),
            ],
            vec![WindowConfig::new(1_000 * 24 * HOUR, None)],
        ];
        for windows in refused {
            let error = with_windows(windows).unwrap_err().to_string();
            assert!(error.contains("at most"), "{error}");
        }
        assert!(with_windows(vec![WindowConfig::new(HOUR, Some(60_000))]).is_ok());
        let day_of_10s = vec![
            WindowConfig::new(24 * HOUR, None),
            WindowConfig::new(10_000, None),
        ];
        assert!(with_windows(day_of_10s).is_ok());
        let mut c = PipelineConfig::default();
        c.moments.baseline_windows = 1_001;
        assert!(Plan::new(c).is_err());
        let mut c = PipelineConfig::default();
        c.moments.min_zscore = f64::INFINITY;
        assert!(Plan::new(c).is_err());
    }

    /// A kind's windows follow the built-in windows' rules on the tick, the size and the panes
    /// (a 250 ms window with a 100 ms tick could be made final before a held record of its own,
    /// which then made a second final row).
    #[test]
    fn kind_windows_are_held_to_the_tick_and_the_bounds() {
        let with_kind_windows = |windows: &[&str]| {
            let mut kind = crate::kinds::config::content_downloads();
            kind.windows = Some(windows.iter().map(|w| w.to_string()).collect());
            let mut c = PipelineConfig::default();
            c.kinds.insert("downloads".into(), kind);
            Plan::new(c)
        };
        for (windows, why) in [
            (&["250ms"][..], "multiples of the tick"),
            (&["1d", "1s"], "panes"),
            (&["400d"], "366d"),
        ] {
            let error = with_kind_windows(windows).unwrap_err().to_string();
            assert!(
                error.contains("pipeline.kinds.downloads.windows") && error.contains(why),
                "{windows:?}: {error}"
            );
        }
        assert!(with_kind_windows(&["1d", "10s", "5m/1m"]).is_ok());
    }
}
