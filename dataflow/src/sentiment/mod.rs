//! Per-message sentiment: a VADER-compatible scorer extended with emoji and Twitch-emote lexicons.
//!
//! The lexicons are data: VADER's word and emoji lexicons (MIT, see `lexicon/VADER-LICENSE.txt`)
//! and crowdpulse's emote lexicon are embedded in the binary and can each be replaced by a file.

mod lexicon;
mod vader;

pub use lexicon::Lexicons;
pub use vader::{Analyzer, Scores};

/// Fixed-point scale of compound scores in the dataflow: VADER rounds compound to 4 decimals, so
/// an integer of 1/10_000 units keeps sums exact and independent of summation order.
pub const COMPOUND_SCALE: i64 = 10_000;

/// A message's label by the VADER convention: positive at compound >= 0.05, negative at <= -0.05.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Label {
    /// compound >= 0.05
    Positive,
    /// -0.05 < compound < 0.05
    Neutral,
    /// compound <= -0.05
    Negative,
}

impl Label {
    /// The label of a compound score given in [`COMPOUND_SCALE`] units.
    pub fn of_scaled(compound: i64) -> Self {
        if compound >= 500 {
            Label::Positive
        } else if compound <= -500 {
            Label::Negative
        } else {
            Label::Neutral
        }
    }

    /// Lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            Label::Positive => "positive",
            Label::Neutral => "neutral",
            Label::Negative => "negative",
        }
    }
}
