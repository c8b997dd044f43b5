//! Output rows of DESIGN §4a and their NDJSON form (`{"table": ..., columns...}`).
//!
//! Rows hold integers and [`Score`]s only, so they can be ordered, hashed, consolidated and
//! exchanged, and two runs print byte-identical lines.

use crate::category::Category;
use std::cmp::Ordering;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::event::Millis;
use crate::sentiment::{Label, COMPOUND_SCALE};
use crate::summary::ChatSummary;

/// A float column computed deterministically (moment statistics); ordered by `total_cmp`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Score(pub f64);

impl PartialEq for Score {
    fn eq(&self, other: &Self) -> bool {
        self.0.total_cmp(&other.0) == Ordering::Equal
    }
}
impl Eq for Score {}
impl PartialOrd for Score {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Score {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}
impl Hash for Score {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.to_bits().hash(state)
    }
}

/// Identifies one window of one stream.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WindowKey {
    /// The stream (shared: every row of a window carries it).
    pub stream_id: Arc<str>,
    /// Window label (`10s`, `1m`, `1m/10s`).
    pub window: Arc<str>,
    /// Inclusive start, epoch ms.
    pub start: Millis,
    /// Exclusive end, epoch ms.
    pub end: Millis,
}

/// `window_metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WindowMetrics {
    /// Chat messages.
    pub chat_messages: u64,
    /// Distinct chat authors.
    pub unique_chatters: u64,
    /// Sum of compound scores in [`COMPOUND_SCALE`] units.
    pub sentiment_sum: i64,
    /// Messages labelled positive.
    pub positive: u64,
    /// Messages labelled neutral.
    pub neutral: u64,
    /// Messages labelled negative.
    pub negative: u64,
    /// Messages categorized as praise.
    pub praise: u64,
    /// Messages categorized as toxic.
    pub toxic: u64,
    /// Messages categorized as humor.
    pub humor: u64,
    /// Messages categorized as questions.
    pub question: u64,
    /// Messages in no other category.
    pub other: u64,
    /// Reactions.
    pub reactions: u64,
    /// Presence joins.
    pub viewer_joins: u64,
    /// Presence leaves.
    pub viewer_leaves: u64,
    /// Most concurrent viewers at any instant of the window.
    pub viewers_peak: u64,
    /// Concurrent viewers at `window_end - 1`.
    pub viewers_end: u64,
    /// Transactions.
    pub transactions: u64,
}

impl WindowMetrics {
    /// Counts one chat message with its compound score (in `COMPOUND_SCALE` units) and category.
    pub fn add_chat(&mut self, compound: i64, category: Category) {
        self.chat_messages += 1;
        *match category {
            Category::Praise => &mut self.praise,
            Category::Toxic => &mut self.toxic,
            Category::Humor => &mut self.humor,
            Category::Question => &mut self.question,
            Category::Other => &mut self.other,
        } += 1;
        self.sentiment_sum += compound;
        match Label::of_scaled(compound) {
            Label::Positive => self.positive += 1,
            Label::Neutral => self.neutral += 1,
            Label::Negative => self.negative += 1,
        }
    }

    /// Mean compound score, rounded to 4 decimals; None without chat.
    pub fn sentiment_mean(&self) -> Option<f64> {
        (self.chat_messages > 0).then(|| {
            let mean = self.sentiment_sum as f64 / self.chat_messages as f64;
            mean.round() / COMPOUND_SCALE as f64
        })
    }
}

/// `moments`: a run of consecutive anomalous windows of one metric.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Moment {
    /// The stream.
    pub stream_id: String,
    /// chat_rate, reaction_rate, viewer_joins, revenue, negative_share or toxic_share.
    pub metric: String,
    /// Start of the first anomalous window.
    pub start: Millis,
    /// End of the last anomalous window.
    pub end: Millis,
    /// Start of the window with the highest z-score.
    pub peak_window_start: Millis,
    /// The metric's value in that window.
    pub peak_value: Score,
    /// Baseline mean for that window.
    pub baseline_mean: Score,
    /// Baseline standard deviation for that window.
    pub baseline_std: Score,
    /// Its z-score.
    pub zscore: Score,
}

/// `stream_totals`.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct StreamTotals {
    /// The stream.
    pub stream_id: String,
    /// Latest title.
    pub title: Option<String>,
    /// Latest category.
    pub category: Option<String>,
    /// Latest status (`live`/`offline`).
    pub status: Option<String>,
    /// Start of the current live session.
    pub live_since: Option<Millis>,
    /// Chat messages seen.
    pub chat_messages: u64,
    /// Reactions seen.
    pub reactions: u64,
    /// Transactions seen.
    pub transactions: u64,
    /// Most concurrent viewers seen.
    pub peak_viewers: u64,
}

/// `chat_messages`: one accepted chat message with its analysis, where it was read.
///
/// Ordered by stream and time first, so sorted outputs list each stream's chat in event order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ChatMessage {
    /// The stream.
    pub stream_id: String,
    /// Event time, epoch ms.
    pub ts: Millis,
    /// Topic or file it was read from.
    pub source: Arc<str>,
    /// Partition (file index for files).
    pub partition: u32,
    /// Offset in the partition: with source and partition, the message's identity, so writing
    /// it again (a replay, a restart) changes nothing.
    pub offset: u64,
    /// The author.
    pub user_id: String,
    /// The text.
    pub text: String,
    /// Compound sentiment score in [`COMPOUND_SCALE`] units.
    pub sentiment: i64,
    /// Its category.
    pub category: Category,
}

impl ChatMessage {
    /// The compound score, as in the other outputs (4 decimals).
    pub fn sentiment_score(&self) -> f64 {
        self.sentiment as f64 / COMPOUND_SCALE as f64
    }
}

/// Why a record went to the dead-letter path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadLetterReason {
    /// Not decodable.
    Decode,
    /// Decoded but not valid.
    Invalid,
    /// Beyond the allowed lateness.
    Late,
    /// Too far ahead of its reference time (`max_future`).
    Future,
    /// Repeats the `event_id` of an event its partition admitted within the lateness horizon.
    Duplicate,
}

impl DeadLetterReason {
    /// Lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Decode => "decode",
            Self::Invalid => "invalid",
            Self::Late => "late",
            Self::Future => "future",
            Self::Duplicate => "duplicate",
        }
    }
}

/// `dead_letters`: a record that did not enter the analytics.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Topic or file.
    pub source: String,
    /// Partition (file index for files).
    pub partition: u32,
    /// Offset (zero-based line number for files).
    pub offset: u64,
    /// Category.
    pub reason: DeadLetterReason,
    /// Human-readable cause.
    pub error: String,
    /// The raw bytes, capped at [`DEAD_LETTER_PAYLOAD_LIMIT`] bytes (text outputs render them as
    /// lossy UTF-8; the dead-letter topic gets them as they were).
    pub payload: Vec<u8>,
}

/// Dead letters keep at most this many bytes of the record, so one huge bad record cannot blow up
/// memory or the sink.
pub const DEAD_LETTER_PAYLOAD_LIMIT: usize = 4096;

impl DeadLetter {
    /// A dead letter for raw bytes, truncating the payload to the limit.
    pub fn new(
        source: &str,
        partition: u32,
        offset: u64,
        reason: DeadLetterReason,
        error: String,
        payload: &[u8],
    ) -> Self {
        let cut = &payload[..payload.len().min(DEAD_LETTER_PAYLOAD_LIMIT)];
        Self {
            source: source.to_owned(),
            partition,
            offset,
            reason,
            error,
            payload: cut.to_vec(),
        }
    }
}

/// One output row of any table, with its `final` flag.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Row {
    /// `window_metrics`
    WindowMetrics {
        /// Which window.
        key: WindowKey,
        /// Its numbers.
        metrics: Box<WindowMetrics>,
        /// Whether the window can no longer change.
        is_final: bool,
    },
    /// `window_emojis`
    WindowEmoji {
        /// Which window.
        key: WindowKey,
        /// The emoji.
        emoji: String,
        /// Reactions with it.
        count: u64,
        /// Whether the window can no longer change.
        is_final: bool,
    },
    /// `window_top_emojis`
    WindowTopEmojis {
        /// Which window.
        key: WindowKey,
        /// (emoji, count) by count desc then emoji asc, ties at the k-th count included up to
        /// `pipeline.top_max_entries`.
        top: Vec<(String, u64)>,
        /// Whether ties beyond `pipeline.top_max_entries` were left out.
        truncated: bool,
        /// Whether the window can no longer change.
        is_final: bool,
    },
    /// `window_revenue`
    WindowRevenue {
        /// Which window.
        key: WindowKey,
        /// Transaction kind.
        kind: String,
        /// Currency.
        currency: String,
        /// Count.
        transactions: u64,
        /// Sum in 1/[`crate::event::AMOUNT_SCALE`] units (128 bits: no count of events at the
        /// largest amount overflows it).
        amount: i128,
        /// Whether the window can no longer change.
        is_final: bool,
    },
    /// `moments`
    Moment {
        /// The moment.
        moment: Box<Moment>,
        /// Whether it has ended for good.
        is_final: bool,
    },
    /// `stream_totals`
    StreamTotals {
        /// The totals.
        totals: Box<StreamTotals>,
        /// True once the input is exhausted (bounded runs).
        is_final: bool,
    },
    /// `dead_letters` (always final)
    DeadLetter(DeadLetter),
    /// `chat_messages` (always final)
    ChatMessage(Arc<ChatMessage>),
    /// `chat_summaries` (always final)
    ChatSummary(Box<ChatSummary>),
    /// `reactions`: a reaction as read (live only, never final; see
    /// [`crate::plan::Plan::with_reaction_rows`]).
    Reaction(Box<Reaction>),
    /// `custom_metrics`: a configured kind's measures over one window of one dimension
    /// combination.
    CustomMetrics {
        /// Which window of which combination.
        key: CustomKey,
        /// Records in the window.
        records: u64,
        /// Each measure's value, in the kind's order (None: nothing to compute it from).
        values: Vec<Option<Score>>,
        /// Whether the window has ended for good.
        is_final: bool,
    },
    /// `alerts` (always final): a kind's alert rule fired for a final window.
    Alert(Box<Alert>),
}

/// A configured kind's names, shared by all its rows.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct KindNames {
    /// The kind.
    pub kind: String,
    /// Its dimensions (field paths).
    pub dimensions: Vec<String>,
    /// Its measures.
    pub measures: Vec<String>,
}

/// A window of a configured kind's dimension combination.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CustomKey {
    /// The kind.
    pub kind: Arc<KindNames>,
    /// The dimensions' values, in the kind's order.
    pub dims: Arc<[String]>,
    /// Window label.
    pub window: Arc<str>,
    /// Inclusive start, epoch ms.
    pub start: Millis,
    /// Exclusive end, epoch ms.
    pub end: Millis,
}

/// A fired alert rule.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Alert {
    /// The window it fired for.
    pub key: CustomKey,
    /// The rule.
    pub rule: String,
    /// The measure watched.
    pub measure: String,
    /// Its value in the window.
    pub value: Score,
    /// The threshold crossed (threshold rules).
    pub threshold: Option<Score>,
    /// The value's z-score against the combination's previous windows (z-score rules).
    pub zscore: Option<Score>,
    /// Records in the window.
    pub records: u64,
}

/// Reactions rows a source emits per stream and batch at most: what a live view shows.
pub const RECENT_REACTIONS: usize = 10;

/// A reaction as read.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Reaction {
    /// The stream.
    pub stream_id: String,
    /// Event time.
    pub ts: Millis,
    /// Who reacted.
    pub user_id: String,
    /// The emoji.
    pub emoji: String,
    /// The producer's event id, if it sent one.
    pub event_id: Option<String>,
}

impl Row {
    /// The table the row belongs to.
    pub fn table(&self) -> &'static str {
        match self {
            Row::WindowMetrics { .. } => "window_metrics",
            Row::WindowEmoji { .. } => "window_emojis",
            Row::WindowTopEmojis { .. } => "window_top_emojis",
            Row::WindowRevenue { .. } => "window_revenue",
            Row::Moment { .. } => "moments",
            Row::StreamTotals { .. } => "stream_totals",
            Row::DeadLetter(_) => "dead_letters",
            Row::ChatMessage(_) => "chat_messages",
            Row::ChatSummary(_) => "chat_summaries",
            Row::Reaction(_) => "reactions",
            Row::CustomMetrics { .. } => "custom_metrics",
            Row::Alert(_) => "alerts",
        }
    }

    /// Whether the row can no longer change.
    pub fn is_final(&self) -> bool {
        match self {
            Row::WindowMetrics { is_final, .. }
            | Row::WindowEmoji { is_final, .. }
            | Row::WindowTopEmojis { is_final, .. }
            | Row::WindowRevenue { is_final, .. }
            | Row::Moment { is_final, .. }
            | Row::StreamTotals { is_final, .. }
            | Row::CustomMetrics { is_final, .. } => *is_final,
            Row::DeadLetter(_) | Row::ChatMessage(_) | Row::ChatSummary(_) | Row::Alert(_) => true,
            Row::Reaction(_) => false,
        }
    }

    /// Where the record of a row read from a source was read (source, partition, offset): chat
    /// messages and dead letters. Each is inserted once, when its record is read, and never
    /// retracted, so within a run this identifies it. None for every other row.
    pub fn origin(&self) -> Option<(&str, u32, u64)> {
        match self {
            Row::ChatMessage(m) => Some((&m.source, m.partition, m.offset)),
            Row::DeadLetter(d) => Some((&d.source, d.partition, d.offset)),
            _ => None,
        }
    }

    /// The stream a row is about (None for dead letters and configured kinds' rows).
    pub fn stream_id(&self) -> Option<&str> {
        match self {
            Row::WindowMetrics { key, .. }
            | Row::WindowEmoji { key, .. }
            | Row::WindowTopEmojis { key, .. }
            | Row::WindowRevenue { key, .. } => Some(&key.stream_id),
            Row::Moment { moment, .. } => Some(&moment.stream_id),
            Row::StreamTotals { totals, .. } => Some(&totals.stream_id),
            Row::ChatMessage(message) => Some(&message.stream_id),
            Row::ChatSummary(summary) => Some(&summary.stream_id),
            Row::Reaction(reaction) => Some(&reaction.stream_id),
            Row::DeadLetter(_) | Row::CustomMetrics { .. } | Row::Alert(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentiment_mean_is_null_without_chat_and_rounded_otherwise() {
        let mut m = WindowMetrics::default();
        assert_eq!(m.sentiment_mean(), None);
        m.chat_messages = 3;
        m.sentiment_sum = 10_001;
        assert_eq!(m.sentiment_mean(), Some(0.3334));
    }

    #[test]
    fn ndjson_carries_table_and_final() {
        let row = Row::WindowRevenue {
            key: WindowKey {
                stream_id: Arc::from("s"),
                window: Arc::from("10s"),
                start: 0,
                end: 10_000,
            },
            kind: "donation".into(),
            currency: "USD".into(),
            transactions: 2,
            amount: 99_800,
            is_final: true,
        };
        assert_eq!(
            row.to_json_line(),
            r#"{"amount":9.98,"currency":"USD","final":true,"kind":"donation","stream_id":"s","table":"window_revenue","transactions":2,"window":"10s","window_end":10000,"window_start":0}"#
        );
        let dead = DeadLetter::new(
            "f",
            0,
            1,
            DeadLetterReason::Decode,
            "x".into(),
            &vec![b'a'; 10_000],
        );
        assert_eq!(dead.payload.len(), DEAD_LETTER_PAYLOAD_LIMIT);
    }
}
