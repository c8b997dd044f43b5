//! Pipeline settings (DESIGN §3/§4): tick, watermarks, lateness, windows, top-k and moments.
//! Serde structs with `deny_unknown_fields`; every field has the documented default.

use std::collections::BTreeMap;
use std::fmt;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};
use crate::event::FieldLimits;
use crate::kinds::config::KindConfig;

/// A duration in milliseconds, written `250ms`, `10s`, `1m`, `2h`, `1d` or as a bare number of ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Span(pub u64);

impl Span {
    /// As a [`std::time::Duration`].
    pub fn duration(self) -> std::time::Duration {
        std::time::Duration::from_millis(self.0)
    }

    /// Parses the text form.
    pub fn parse(text: &str) -> Result<Self> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (digits, unit) = text.split_at(split);
        let value: u64 = digits.parse().map_err(|_| {
            Error::Config(format!(
                "duration {text:?} must look like 250ms, 10s, 1m, 2h or 1d"
            ))
        })?;
        let scale = match unit.trim() {
            "" | "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            other => {
                return Err(Error::Config(format!(
                    "duration {text:?} has unknown unit {other:?}"
                )))
            }
        };
        value
            .checked_mul(scale)
            .map(Span)
            .ok_or_else(|| Error::Config(format!("duration {text:?} is too large")))
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0;
        for (scale, unit) in [
            (86_400_000, "d"),
            (3_600_000, "h"),
            (60_000, "m"),
            (1_000, "s"),
        ] {
            if ms != 0 && ms.is_multiple_of(scale) {
                return write!(f, "{}{unit}", ms / scale);
            }
        }
        write!(f, "{ms}ms")
    }
}

impl Serialize for Span {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Text {
            Millis(u64),
            Text(String),
        }
        match Text::deserialize(d)? {
            Text::Millis(ms) => Ok(Span(ms)),
            Text::Text(t) => Span::parse(&t).map_err(de::Error::custom),
        }
    }
}

/// One window definition: tumbling when `slide` is absent, hopping otherwise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowConfig {
    /// Label in output rows; defaults to `size` (tumbling) or `size/slide` (hopping).
    #[serde(default)]
    pub label: Option<String>,
    /// Window length.
    pub size: Span,
    /// Distance between window starts; defaults to `size`.
    #[serde(default)]
    pub slide: Option<Span>,
}

impl WindowConfig {
    pub(crate) fn new(size: u64, slide: Option<u64>) -> Self {
        Self {
            label: None,
            size: Span(size),
            slide: slide.map(Span),
        }
    }
}

/// Chat summary settings: after every `every` chat messages of a stream (in event order), a
/// summary of its last `window` messages, those within `horizon` of the last one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SummaryConfig {
    /// Messages between summaries (0: no summaries).
    pub every: u64,
    /// Messages a summary covers at most.
    pub window: usize,
    /// Messages older than this before a summary's last message are not part of it: a stream
    /// that fell silent starts afresh, and a quiet stream keeps no messages.
    pub horizon: Span,
}

impl Default for SummaryConfig {
    fn default() -> Self {
        Self {
            every: 20,
            window: 100,
            horizon: Span(600_000),
        }
    }
}

/// Anomaly ("moment") detection settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MomentsConfig {
    /// Label of the window whose series is scored (one of `windows`).
    pub window: String,
    /// K: how many previous windows form the baseline.
    pub baseline_windows: usize,
    /// A window is anomalous at z >= this.
    pub min_zscore: f64,
    /// Minimum chat messages in a window for chat rate and negative share to fire.
    pub min_chat_messages: u64,
    /// Minimum reactions in a window for reaction rate to fire.
    pub min_reactions: u64,
    /// Minimum joins in a window for viewer joins to fire.
    pub min_viewer_joins: u64,
    /// Minimum total amount in a window for revenue to fire.
    pub min_revenue: f64,
}

impl Default for MomentsConfig {
    fn default() -> Self {
        Self {
            window: "10s".into(),
            baseline_windows: 12,
            min_zscore: 3.0,
            min_chat_messages: 20,
            min_reactions: 20,
            min_viewer_joins: 10,
            min_revenue: 50.0,
        }
    }
}

/// Everything that shapes the analytics dataflow's results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Event times are rounded up to a multiple of this to batch work.
    pub tick: Span,
    /// Watermark = largest event time seen in a partition minus this.
    pub max_out_of_orderness: Span,
    /// Records older than watermark minus this are dropped as late.
    pub allowed_lateness: Span,
    /// A partition caught up this long stops holding the watermark back (live sources only).
    pub idle_timeout: Span,
    /// Records whose event time is more than this ahead of their reference time (broker
    /// timestamp, arrival time) are dead-lettered as `future`.
    pub max_future: Span,
    /// Window definitions.
    pub windows: Vec<WindowConfig>,
    /// k of the top emojis (ties at the k-th count are included).
    pub top_k: usize,
    /// Longest top-emoji list, ties included; a longer one is cut and marked `truncated`.
    pub top_max_entries: usize,
    /// Emit live rows (early results, replaced as windows change) besides final ones. Bounded
    /// runs that only keep final rows turn this off; final rows are identical either way.
    pub live_rows: bool,
    /// Moment detection.
    pub moments: MomentsConfig,
    /// The longest accepted fields of an event (`[pipeline.limits]`).
    pub limits: FieldLimits,
    /// A viewer whose latest join or heartbeat is this old counts as gone (`0s`: never).
    pub viewer_timeout: Span,
    /// Event ids each partition remembers at most: beyond, the oldest (by ts, then offset) is
    /// forgotten first, and a later repeat of it counts.
    pub max_event_ids: usize,
    /// Emit every accepted chat message as a `chat_messages` row (the chat history).
    pub chat_history: bool,
    /// Chat summaries (`[pipeline.summary]`).
    pub summary: SummaryConfig,
    /// Event kinds defined in configuration (`[pipeline.kinds.NAME]`).
    pub kinds: BTreeMap<String, KindConfig>,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            tick: Span(100),
            max_out_of_orderness: Span(2_000),
            allowed_lateness: Span(60_000),
            idle_timeout: Span(5_000),
            max_future: Span(300_000),
            windows: vec![
                WindowConfig::new(10_000, None),
                WindowConfig::new(60_000, None),
                WindowConfig::new(60_000, Some(10_000)),
            ],
            top_k: 3,
            top_max_entries: 100,
            live_rows: true,
            moments: MomentsConfig::default(),
            limits: FieldLimits::default(),
            viewer_timeout: Span(600_000),
            max_event_ids: 1_000_000,
            chat_history: true,
            summary: SummaryConfig::default(),
            kinds: BTreeMap::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_parse_and_print() {
        assert_eq!(Span::parse("250ms").unwrap(), Span(250));
        assert_eq!(Span::parse("10s").unwrap(), Span(10_000));
        assert_eq!(Span::parse("1m").unwrap(), Span(60_000));
        assert_eq!(Span::parse("42").unwrap(), Span(42));
        assert!(Span::parse("ten seconds").is_err());
        assert!(Span::parse("5w").is_err());
        assert_eq!(Span(60_000).to_string(), "1m");
        assert_eq!(Span(1_500).to_string(), "1500ms");
    }
}
