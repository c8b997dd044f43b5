//! A pane: the aggregates of one stream over one slice of event time. Windows are sums of panes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::rows::WindowMetrics;

/// Additive aggregates of the events in one pane.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Pane {
    /// Any event of the stream fell here: windows containing the pane produce rows.
    pub(crate) events: u64,
    /// Counters that add up across panes (unique chatters and viewers are not among them).
    pub(crate) metrics: WindowMetrics,
    /// Reactions per emoji.
    pub(crate) emojis: BTreeMap<String, u64>,
    /// (kind, currency) -> (transactions, amount).
    pub(crate) revenue: BTreeMap<(String, String), (u64, i128)>,
}

impl Pane {
    /// Adds another pane into this one.
    pub(crate) fn merge(&mut self, other: &Pane) {
        self.events += other.events;
        let (m, o) = (&mut self.metrics, &other.metrics);
        m.chat_messages += o.chat_messages;
        m.sentiment_sum += o.sentiment_sum;
        m.positive += o.positive;
        m.neutral += o.neutral;
        m.negative += o.negative;
        m.praise += o.praise;
        m.toxic += o.toxic;
        m.humor += o.humor;
        m.question += o.question;
        m.other += o.other;
        m.reactions += o.reactions;
        m.viewer_joins += o.viewer_joins;
        m.viewer_leaves += o.viewer_leaves;
        m.transactions += o.transactions;
        for (emoji, count) in &other.emojis {
            *self.emojis.entry(emoji.clone()).or_default() += count;
        }
        for (key, (n, amount)) in &other.revenue {
            let entry = self.revenue.entry(key.clone()).or_default();
            entry.0 += n;
            entry.1 += amount;
        }
    }
}

/// The top `k` emojis by count desc then emoji asc, with every emoji tied at the k-th count,
/// cut after `max_entries` in that order (then `truncated`): ties must not make an answer as long
/// as the number of distinct emojis.
pub fn top_with_ties(emojis: &BTreeMap<String, u64>, k: usize, max_entries: usize) -> Top {
    let mut ranked: Vec<(&String, u64)> = emojis.iter().map(|(e, c)| (e, *c)).collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    if let Some(&(_, kth)) = ranked.get(k.saturating_sub(1)) {
        ranked.retain(|(_, c)| *c >= kth);
    }
    let truncated = ranked.len() > max_entries;
    ranked.truncate(max_entries);
    Top {
        entries: ranked.into_iter().map(|(e, c)| (e.clone(), c)).collect(),
        truncated,
    }
}

/// The result of [`top_with_ties`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Top {
    /// (emoji, count), count desc then emoji asc.
    pub entries: Vec<(String, u64)>,
    /// Whether ties beyond the cap were left out.
    pub truncated: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_at_the_kth_count_are_included() {
        let emojis: BTreeMap<String, u64> = [("a", 5), ("b", 3), ("c", 3), ("d", 3), ("e", 1)]
            .into_iter()
            .map(|(e, c)| (e.to_string(), c))
            .collect();
        let top = top_with_ties(&emojis, 2, 100);
        assert!(!top.truncated);
        assert_eq!(
            top.entries,
            [
                ("a".to_string(), 5),
                ("b".into(), 3),
                ("c".into(), 3),
                ("d".into(), 3)
            ]
        );
        assert_eq!(top_with_ties(&emojis, 10, 100).entries.len(), 5);
        let capped = top_with_ties(&emojis, 2, 3);
        assert!(capped.truncated);
        assert_eq!(
            capped.entries,
            [("a".to_string(), 5), ("b".into(), 3), ("c".into(), 3)]
        );
    }
}
