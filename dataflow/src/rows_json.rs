//! The NDJSON form of rows (DESIGN §4a): one object per row, `"table"` naming the table, keys in
//! alphabetical order. Serialized straight from borrowed views, without building JSON values.

use serde::{Serialize, Serializer};

use crate::category::Category;
use crate::event::AMOUNT_SCALE;
use crate::rows::{CustomKey, Row, Score, WindowKey};
use crate::sentiment::COMPOUND_SCALE;
use crate::summary::Quote;

/// A score as every output shows it: rounded to 4 decimals.
pub fn score(value: Score) -> f64 {
    (value.0 * 10_000.0).round() / 10_000.0
}

/// An amount in 1/[`AMOUNT_SCALE`] units, written as its exact decimal: a JSON number like the
/// one `f64` printed for every amount it can hold, without its rounding for larger sums.
struct ExactAmount(i128);

impl ExactAmount {
    fn decimal(&self) -> String {
        let scale = i128::from(AMOUNT_SCALE);
        let (whole, fraction) = (self.0 / scale, (self.0 % scale).unsigned_abs());
        let sign = if self.0 < 0 && whole == 0 { "-" } else { "" };
        let digits = format!("{fraction:04}");
        let digits = digits.trim_end_matches('0');
        format!(
            "{sign}{whole}.{}",
            if digits.is_empty() { "0" } else { digits }
        )
    }
}

impl Serialize for ExactAmount {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serde_json::value::RawValue::from_string(self.decimal())
            .expect("a decimal is a JSON number")
            .serialize(serializer)
    }
}

#[derive(Serialize)]
struct PhraseEntry<'a> {
    messages: u64,
    phrase: &'a str,
}

#[derive(Serialize)]
struct EmoteEntry<'a> {
    count: u64,
    emote: &'a str,
}

#[derive(Serialize)]
struct TopEntry<'a> {
    count: u64,
    emoji: &'a str,
}

#[derive(Serialize)]
#[serde(untagged)]
enum View<'a> {
    WindowMetrics {
        chat_messages: u64,
        #[serde(rename = "final")]
        is_final: bool,
        humor: u64,
        negative: u64,
        neutral: u64,
        other: u64,
        positive: u64,
        praise: u64,
        question: u64,
        reactions: u64,
        sentiment_mean: Option<f64>,
        stream_id: &'a str,
        table: &'static str,
        toxic: u64,
        transactions: u64,
        unique_chatters: u64,
        viewer_joins: u64,
        viewer_leaves: u64,
        viewers_end: u64,
        viewers_peak: u64,
        window: &'a str,
        window_end: u64,
        window_start: u64,
    },
    WindowEmoji {
        count: u64,
        emoji: &'a str,
        #[serde(rename = "final")]
        is_final: bool,
        stream_id: &'a str,
        table: &'static str,
        window: &'a str,
        window_end: u64,
        window_start: u64,
    },
    WindowTopEmojis {
        #[serde(rename = "final")]
        is_final: bool,
        stream_id: &'a str,
        table: &'static str,
        top: Vec<TopEntry<'a>>,
        /// Written only when true, so rows without a cut read as before the cap existed.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        truncated: bool,
        window: &'a str,
        window_end: u64,
        window_start: u64,
    },
    WindowRevenue {
        amount: ExactAmount,
        currency: &'a str,
        #[serde(rename = "final")]
        is_final: bool,
        kind: &'a str,
        stream_id: &'a str,
        table: &'static str,
        transactions: u64,
        window: &'a str,
        window_end: u64,
        window_start: u64,
    },
    Moment {
        baseline_mean: f64,
        baseline_std: f64,
        end: u64,
        #[serde(rename = "final")]
        is_final: bool,
        metric: &'a str,
        peak_value: f64,
        peak_window_start: u64,
        start: u64,
        stream_id: &'a str,
        table: &'static str,
        zscore: f64,
    },
    StreamTotals {
        category: Option<&'a str>,
        chat_messages: u64,
        #[serde(rename = "final")]
        is_final: bool,
        live_since: Option<u64>,
        peak_viewers: u64,
        reactions: u64,
        status: Option<&'a str>,
        stream_id: &'a str,
        table: &'static str,
        title: Option<&'a str>,
        transactions: u64,
    },
    DeadLetter {
        error: &'a str,
        #[serde(rename = "final")]
        is_final: bool,
        offset: u64,
        partition: u32,
        payload: std::borrow::Cow<'a, str>,
        reason: &'static str,
        source: &'a str,
        table: &'static str,
    },
    ChatSummary {
        categories: std::collections::BTreeMap<&'static str, u64>,
        category: &'static str,
        #[serde(rename = "final")]
        is_final: bool,
        first_ts: u64,
        key_phrases: Vec<PhraseEntry<'a>>,
        last_offset: u64,
        last_partition: u32,
        last_source: &'a str,
        last_ts: u64,
        messages: u64,
        representative: &'a [Quote],
        sentiment: f64,
        sentiment_label: &'static str,
        seq: u64,
        stream_id: &'a str,
        table: &'static str,
        top_emotes: Vec<EmoteEntry<'a>>,
    },
    ChatMessage {
        category: &'static str,
        #[serde(rename = "final")]
        is_final: bool,
        offset: u64,
        partition: u32,
        sentiment: f64,
        source: &'a str,
        stream_id: &'a str,
        table: &'static str,
        text: &'a str,
        ts: u64,
        user_id: &'a str,
    },
    CustomMetrics {
        dims: std::collections::BTreeMap<&'a str, &'a str>,
        #[serde(rename = "final")]
        is_final: bool,
        kind: &'a str,
        records: u64,
        table: &'static str,
        values: std::collections::BTreeMap<&'a str, Option<f64>>,
        window: &'a str,
        window_end: u64,
        window_start: u64,
    },
    Alert {
        dims: std::collections::BTreeMap<&'a str, &'a str>,
        #[serde(rename = "final")]
        is_final: bool,
        kind: &'a str,
        measure: &'a str,
        records: u64,
        rule: &'a str,
        table: &'static str,
        threshold: Option<f64>,
        value: f64,
        window: &'a str,
        window_end: u64,
        window_start: u64,
        zscore: Option<f64>,
    },
    Reaction {
        emoji: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        event_id: Option<&'a str>,
        #[serde(rename = "final")]
        is_final: bool,
        stream_id: &'a str,
        table: &'static str,
        ts: u64,
        user_id: &'a str,
    },
}

/// A configured kind's dimensions by name.
fn dims(key: &CustomKey) -> std::collections::BTreeMap<&str, &str> {
    key.kind
        .dimensions
        .iter()
        .map(String::as_str)
        .zip(key.dims.iter().map(String::as_str))
        .collect()
}

fn window(key: &WindowKey) -> (&str, &str, u64, u64) {
    (&key.stream_id, &key.window, key.start, key.end)
}

impl<'a> View<'a> {
    fn of(row: &'a Row) -> Self {
        let (table, is_final) = (row.table(), row.is_final());
        match row {
            Row::WindowMetrics {
                key, metrics: m, ..
            } => {
                let (stream_id, window, window_start, window_end) = window(key);
                View::WindowMetrics {
                    chat_messages: m.chat_messages,
                    is_final,
                    humor: m.humor,
                    negative: m.negative,
                    neutral: m.neutral,
                    other: m.other,
                    positive: m.positive,
                    praise: m.praise,
                    question: m.question,
                    reactions: m.reactions,
                    sentiment_mean: m.sentiment_mean(),
                    stream_id,
                    table,
                    toxic: m.toxic,
                    transactions: m.transactions,
                    unique_chatters: m.unique_chatters,
                    viewer_joins: m.viewer_joins,
                    viewer_leaves: m.viewer_leaves,
                    viewers_end: m.viewers_end,
                    viewers_peak: m.viewers_peak,
                    window,
                    window_end,
                    window_start,
                }
            }
            Row::WindowEmoji {
                key, emoji, count, ..
            } => {
                let (stream_id, window, window_start, window_end) = window(key);
                View::WindowEmoji {
                    count: *count,
                    emoji,
                    is_final,
                    stream_id,
                    table,
                    window,
                    window_end,
                    window_start,
                }
            }
            Row::WindowTopEmojis {
                key,
                top,
                truncated,
                ..
            } => {
                let (stream_id, window, window_start, window_end) = window(key);
                let top = top
                    .iter()
                    .map(|(emoji, count)| TopEntry {
                        count: *count,
                        emoji,
                    })
                    .collect();
                View::WindowTopEmojis {
                    is_final,
                    stream_id,
                    table,
                    top,
                    truncated: *truncated,
                    window,
                    window_end,
                    window_start,
                }
            }
            Row::WindowRevenue {
                key,
                kind,
                currency,
                transactions,
                amount,
                ..
            } => {
                let (stream_id, window, window_start, window_end) = window(key);
                View::WindowRevenue {
                    amount: ExactAmount(*amount),
                    currency,
                    is_final,
                    kind,
                    stream_id,
                    table,
                    transactions: *transactions,
                    window,
                    window_end,
                    window_start,
                }
            }
            Row::Moment { moment: m, .. } => View::Moment {
                baseline_mean: score(m.baseline_mean),
                baseline_std: score(m.baseline_std),
                end: m.end,
                is_final,
                metric: &m.metric,
                peak_value: score(m.peak_value),
                peak_window_start: m.peak_window_start,
                start: m.start,
                stream_id: &m.stream_id,
                table,
                zscore: score(m.zscore),
            },
            Row::StreamTotals { totals: t, .. } => View::StreamTotals {
                category: t.category.as_deref(),
                chat_messages: t.chat_messages,
                is_final,
                live_since: t.live_since,
                peak_viewers: t.peak_viewers,
                reactions: t.reactions,
                status: t.status.as_deref(),
                stream_id: &t.stream_id,
                table,
                title: t.title.as_deref(),
                transactions: t.transactions,
            },
            Row::DeadLetter(d) => View::DeadLetter {
                error: &d.error,
                is_final,
                offset: d.offset,
                partition: d.partition,
                payload: String::from_utf8_lossy(&d.payload),
                reason: d.reason.name(),
                source: &d.source,
                table,
            },
            Row::ChatSummary(summary) => View::ChatSummary {
                categories: Category::ALL
                    .into_iter()
                    .map(|c| (c.name(), summary.categories[c as usize]))
                    .collect(),
                category: summary.category().name(),
                is_final,
                first_ts: summary.first_ts,
                key_phrases: summary
                    .key_phrases
                    .iter()
                    .map(|(phrase, messages)| PhraseEntry {
                        messages: *messages,
                        phrase,
                    })
                    .collect(),
                last_offset: summary.last_offset,
                last_partition: summary.last_partition,
                last_source: &summary.last_source,
                last_ts: summary.last_ts,
                messages: summary.messages,
                representative: &summary.representative,
                sentiment: summary.sentiment as f64 / COMPOUND_SCALE as f64,
                sentiment_label: summary.sentiment_label().name(),
                seq: summary.seq,
                stream_id: &summary.stream_id,
                table,
                top_emotes: summary
                    .top_emotes
                    .iter()
                    .map(|(emote, count)| EmoteEntry {
                        count: *count,
                        emote,
                    })
                    .collect(),
            },
            Row::ChatMessage(m) => View::ChatMessage {
                category: m.category.name(),
                is_final,
                offset: m.offset,
                partition: m.partition,
                sentiment: m.sentiment_score(),
                source: &m.source,
                stream_id: &m.stream_id,
                table,
                text: &m.text,
                ts: m.ts,
                user_id: &m.user_id,
            },
            Row::CustomMetrics {
                key,
                records,
                values,
                ..
            } => View::CustomMetrics {
                dims: dims(key),
                is_final,
                kind: &key.kind.kind,
                records: *records,
                table,
                values: key
                    .kind
                    .measures
                    .iter()
                    .map(String::as_str)
                    .zip(values.iter().map(|v| v.map(|s| s.0)))
                    .collect(),
                window: &key.window,
                window_end: key.end,
                window_start: key.start,
            },
            Row::Alert(alert) => View::Alert {
                dims: dims(&alert.key),
                is_final,
                kind: &alert.key.kind.kind,
                measure: &alert.measure,
                records: alert.records,
                rule: &alert.rule,
                table,
                threshold: alert.threshold.map(|s| s.0),
                value: alert.value.0,
                window: &alert.key.window,
                window_end: alert.key.end,
                window_start: alert.key.start,
                zscore: alert.zscore.map(|s| s.0),
            },
            Row::Reaction(r) => View::Reaction {
                emoji: &r.emoji,
                event_id: r.event_id.as_deref(),
                is_final,
                stream_id: &r.stream_id,
                table,
                ts: r.ts,
                user_id: &r.user_id,
            },
        }
    }
}

/// A row in its NDJSON shape, for any serde serializer.
pub struct RowJson<'a>(pub &'a Row);

impl Serialize for RowJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        View::of(self.0).serialize(serializer)
    }
}

impl Row {
    /// The row as one NDJSON line (without newline).
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(&RowJson(self)).expect("rows serialize")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_amounts_read_like_the_float_they_replace_and_stay_exact_beyond_it() {
        for units in [
            0_i128,
            1,
            10,
            9_999,
            10_000,
            12_345,
            99_800,
            4_990_000,
            123_456_789_012,
        ] {
            let float = serde_json::to_string(&(units as f64 / AMOUNT_SCALE as f64)).unwrap();
            assert_eq!(serde_json::to_string(&ExactAmount(units)).unwrap(), float);
        }
        let thousand_largest = 1000 * i128::from(crate::event::MAX_AMOUNT_UNITS) + 7;
        assert_eq!(
            serde_json::to_string(&ExactAmount(thousand_largest)).unwrap(),
            "1000000000000000.0007"
        );
    }
}
