//! Epoch-aligned tumbling and hopping windows, and the panes (slices) they are built from.

use crate::config::WindowConfig;
use crate::error::{Error, Result};

/// A resolved window definition: windows start at multiples of `slide` and last `size`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowSpec {
    /// Label in output rows (`10s`, `1m`, `1m/10s`).
    pub label: String,
    /// Length in ms.
    pub size: u64,
    /// Distance between starts in ms (= size for tumbling windows).
    pub slide: u64,
}

/// The most windows one event may be in, per window (built-in or of a configured kind).
pub const MAX_SLIDES: u64 = 60;
/// The longest window, ms (366 days).
pub const MAX_WINDOW: u64 = 366 * 86_400_000;
/// The most panes a window may span: its state holds them until it is final, and its live row
/// sums them.
pub const MAX_PANES: u64 = 10_000;

/// Why a window of `size` and `slide` cannot be computed in ticks of `tick` ms (None: it can):
/// the rules the built-in windows and every configured kind's windows follow.
pub fn window_fault(size: u64, slide: u64, tick: u64) -> Option<String> {
    if size == 0 || slide == 0 || slide > size || !size.is_multiple_of(slide) {
        Some("size must be a positive multiple of slide".into())
    } else if size / slide > MAX_SLIDES || size > MAX_WINDOW {
        // Every event is in size / slide windows, each a row and a live row to keep up to date.
        Some(format!(
            "at most {MAX_SLIDES} slides to a window, and at most 366d"
        ))
    } else if !slide.is_multiple_of(tick) {
        Some(format!(
            "size and slide must be multiples of the tick ({tick} ms)"
        ))
    } else {
        None
    }
}

/// Why a window of `size` spans too many panes of `pane` ms (None: it does not).
pub fn panes_fault(size: u64, pane: u64) -> Option<String> {
    (size / pane > MAX_PANES).then(|| {
        format!(
            "spans {} panes of {pane} ms (the greatest common divisor of the windows' sizes \
             and slides): at most {MAX_PANES}",
            size / pane
        )
    })
}

impl WindowSpec {
    /// Resolves and checks a configured window against the tick.
    pub fn new(config: &WindowConfig, tick: u64) -> Result<Self> {
        let size = config.size.0;
        let slide = config.slide.map_or(size, |s| s.0);
        let label = config.label.clone().unwrap_or_else(|| {
            if slide == size {
                config.size.to_string()
            } else {
                format!("{}/{}", config.size, crate::config::Span(slide))
            }
        });
        match window_fault(size, slide, tick) {
            Some(why) => Err(Error::Config(format!("window {label:?}: {why}"))),
            None => Ok(Self { label, size, slide }),
        }
    }

    /// Starts of the windows that contain `ts`, ascending.
    pub fn starts_containing(&self, ts: u64) -> impl Iterator<Item = u64> + '_ {
        let last = ts - ts % self.slide;
        let first = last.saturating_sub(self.size - self.slide);
        (first..=last).step_by(self.slide as usize)
    }

    /// The first window start `s` with `s + size > boundary`: every window starting before it
    /// ends at or before `boundary`.
    pub fn first_start_ending_after(&self, boundary: u64) -> u64 {
        match boundary.checked_sub(self.size) {
            None => 0,
            Some(latest_closed) => latest_closed - latest_closed % self.slide + self.slide,
        }
    }
}

/// The pane length: the largest span that divides every window's size and slide, so each window
/// is an exact union of consecutive panes.
pub fn pane_size(specs: &[WindowSpec]) -> u64 {
    fn gcd(a: u64, b: u64) -> u64 {
        if b == 0 {
            a
        } else {
            gcd(b, a % b)
        }
    }
    specs
        .iter()
        .fold(0, |acc, s| gcd(gcd(acc, s.size), s.slide))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PipelineConfig;
    use crate::plan::Plan;

    #[test]
    fn windows_containing_a_timestamp() {
        let plan = Plan::new(PipelineConfig::default()).unwrap();
        let specs = plan.windows();
        let starts = |i: usize, ts| specs[i].starts_containing(ts).collect::<Vec<_>>();
        assert_eq!(starts(0, 125_000), [120_000]);
        assert_eq!(starts(1, 125_000), [120_000]);
        assert_eq!(
            starts(2, 125_000),
            [70_000, 80_000, 90_000, 100_000, 110_000, 120_000]
        );
        assert_eq!(starts(2, 15_000), [0, 10_000]);
        assert_eq!(pane_size(specs), 10_000);
    }

    #[test]
    fn first_open_window_start() {
        let plan = Plan::new(PipelineConfig::default()).unwrap();
        let specs = plan.windows();
        assert_eq!(specs[0].first_start_ending_after(5_000), 0);
        assert_eq!(specs[0].first_start_ending_after(10_000), 10_000);
        assert_eq!(specs[2].first_start_ending_after(60_000), 10_000);
        assert_eq!(specs[2].first_start_ending_after(65_000), 10_000);
        assert_eq!(specs[2].first_start_ending_after(70_000), 20_000);
    }
}
