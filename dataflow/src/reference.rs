//! A plain sequential reference implementation of every output table: no timely, no panes, no
//! incremental state; each number is recomputed from the accepted events by its definition in
//! DESIGN §4a. The dataflow is tested against it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::category::Category;
use crate::codec::{decode_json, DecodeContext};
use crate::config::{PipelineConfig, SummaryConfig};
use crate::error::Result;
use crate::event::{Event, EventBody, Millis, PresenceAction, StreamStatus, AMOUNT_SCALE};
use crate::plan::Plan;
use crate::rows::{
    ChatMessage, DeadLetter, DeadLetterReason, Moment, Row, Score, StreamTotals, WindowKey,
    WindowMetrics,
};
use crate::sentiment::{Analyzer, Label, COMPOUND_SCALE};
use crate::source::{duplicate_message, late_message, rejection};
use crate::summary::{summarize, ChatLine};

/// One partition's records, in order.
#[derive(Debug, Clone)]
pub struct ReferencePartition {
    /// Source name for dead letters.
    pub source: String,
    /// Partition number.
    pub partition: u32,
    /// JSON records.
    pub payloads: Vec<Vec<u8>>,
}

fn compound(analyzer: &Analyzer, text: &str) -> i64 {
    (analyzer.polarity_scores(text).compound * COMPOUND_SCALE as f64).round() as i64
}

/// Viewers at instant `t` by definition: the latest gauge reading at or before `t` (largest value
/// among same-ms readings) if any, else the users whose latest action at or before `t` (leave
/// outranking heartbeat outranking join at the same ms) is not a leave and, with a viewer
/// timeout, happened less than that before `t`.
fn viewers_at(events: &[&Event], t: Millis, timeout: Millis) -> u64 {
    let gauge = events
        .iter()
        .filter_map(|e| match e.body {
            EventBody::ViewerCount { viewer_count } if e.ts <= t => Some((e.ts, viewer_count)),
            _ => None,
        })
        .max();
    if let Some((_, count)) = gauge {
        return count;
    }
    let rank = |a: PresenceAction| match a {
        PresenceAction::Join => 0,
        PresenceAction::Heartbeat => 1,
        PresenceAction::Leave => 2,
    };
    let mut latest: BTreeMap<&str, (Millis, u8, bool)> = BTreeMap::new();
    for e in events {
        if let EventBody::Presence { user_id, action } = &e.body {
            if e.ts <= t {
                let candidate = (e.ts, rank(*action), action.is_present());
                let slot = latest.entry(user_id).or_insert(candidate);
                *slot = (*slot).max(candidate);
            }
        }
    }
    latest
        .values()
        .filter(|(ts, _, present)| *present && (timeout == 0 || t < ts + timeout))
        .count() as u64
}

/// Per-window values the moments need, besides the row.
struct WindowFacts {
    metrics: WindowMetrics,
    revenue: i128,
}

fn window(
    key: WindowKey,
    all: &[&Event],
    config: &PipelineConfig,
    analyzer: &Analyzer,
    rows: &mut Vec<Row>,
) -> WindowFacts {
    let (start, end) = (key.start, key.end);
    let inside: Vec<&Event> = all
        .iter()
        .copied()
        .filter(|e| start <= e.ts && e.ts < end)
        .collect();
    let mut m = WindowMetrics::default();
    let mut chatters = BTreeSet::new();
    let mut emojis: BTreeMap<String, u64> = BTreeMap::new();
    let mut revenue: BTreeMap<(String, String), (u64, i128)> = BTreeMap::new();
    for e in &inside {
        match &e.body {
            EventBody::Chat { user_id, text } => {
                m.chat_messages += 1;
                chatters.insert(user_id.clone());
                let c = compound(analyzer, text);
                m.sentiment_sum += c;
                match Label::of_scaled(c) {
                    Label::Positive => m.positive += 1,
                    Label::Neutral => m.neutral += 1,
                    Label::Negative => m.negative += 1,
                }
                match analyzer.category(text) {
                    Category::Praise => m.praise += 1,
                    Category::Toxic => m.toxic += 1,
                    Category::Humor => m.humor += 1,
                    Category::Question => m.question += 1,
                    Category::Other => m.other += 1,
                }
            }
            EventBody::Reaction { emoji, .. } => {
                m.reactions += 1;
                *emojis.entry(emoji.clone()).or_default() += 1;
            }
            EventBody::Presence {
                action: PresenceAction::Join,
                ..
            } => m.viewer_joins += 1,
            EventBody::Presence {
                action: PresenceAction::Leave,
                ..
            } => m.viewer_leaves += 1,
            EventBody::Transaction {
                kind,
                amount,
                currency,
                ..
            } => {
                m.transactions += 1;
                let slot = revenue.entry((kind.clone(), currency.clone())).or_default();
                slot.0 += 1;
                slot.1 += i128::from(*amount);
            }
            _ => {}
        }
    }
    m.unique_chatters = chatters.len() as u64;
    let instants = std::iter::once(start).chain(
        inside
            .iter()
            .filter(|e| {
                matches!(
                    e.body,
                    EventBody::Presence { .. } | EventBody::ViewerCount { .. }
                )
            })
            .map(|e| e.ts),
    );
    let timeout = config.viewer_timeout.0;
    m.viewers_peak = instants
        .map(|t| viewers_at(all, t, timeout))
        .max()
        .unwrap_or(0);
    m.viewers_end = viewers_at(all, end - 1, timeout);
    if !emojis.is_empty() {
        let mut ranked: Vec<(String, u64)> = emojis.clone().into_iter().collect();
        ranked.sort_by_key(|(e, c)| (std::cmp::Reverse(*c), e.clone()));
        let (top_k, top_max_entries) = (config.top_k, config.top_max_entries);
        let kth = ranked[(top_k - 1).min(ranked.len() - 1)].1;
        let tied: Vec<(String, u64)> = ranked.into_iter().filter(|(_, c)| *c >= kth).collect();
        rows.push(Row::WindowTopEmojis {
            key: key.clone(),
            truncated: tied.len() > top_max_entries,
            top: tied.into_iter().take(top_max_entries).collect(),
            is_final: true,
        });
    }
    for (emoji, count) in emojis {
        rows.push(Row::WindowEmoji {
            key: key.clone(),
            emoji,
            count,
            is_final: true,
        });
    }
    let total_revenue = revenue.values().map(|(_, a)| a).sum();
    for ((kind, currency), (transactions, amount)) in revenue {
        rows.push(Row::WindowRevenue {
            key: key.clone(),
            kind,
            currency,
            transactions,
            amount,
            is_final: true,
        });
    }
    rows.push(Row::WindowMetrics {
        key,
        metrics: Box::new(m.clone()),
        is_final: true,
    });
    WindowFacts {
        metrics: m,
        revenue: total_revenue,
    }
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

/// Moments by definition: for each metric, windows from the stream's first to its last active
/// moment window (empty ones count as zero), each scored against the K before it.
fn moments(
    stream: &str,
    series: &[(Millis, Millis, Option<&WindowFacts>)],
    config: &PipelineConfig,
    rows: &mut Vec<Row>,
) {
    let mc = &config.moments;
    let k = mc.baseline_windows;
    for metric in crate::analytics::METRICS {
        let values: Vec<(f64, bool, f64)> = series
            .iter()
            .map(|(_, _, facts)| {
                let (chat, negative, toxic, reactions, joins, revenue) =
                    facts.map_or((0, 0, 0, 0, 0, 0.0), |f| {
                        let m = &f.metrics;
                        (
                            m.chat_messages,
                            m.negative,
                            m.toxic,
                            m.reactions,
                            m.viewer_joins,
                            f.revenue as f64 / AMOUNT_SCALE as f64,
                        )
                    });
                let share = |part: u64| {
                    if chat == 0 {
                        0.0
                    } else {
                        part as f64 / chat as f64
                    }
                };
                match metric {
                    "chat_rate" => (chat as f64, chat >= mc.min_chat_messages, 1.0),
                    "reaction_rate" => (reactions as f64, reactions >= mc.min_reactions, 1.0),
                    "viewer_joins" => (joins as f64, joins >= mc.min_viewer_joins, 1.0),
                    "revenue" => (revenue, revenue >= mc.min_revenue, 1.0),
                    "negative_share" => (share(negative), chat >= mc.min_chat_messages, 0.05),
                    "toxic_share" => (share(toxic), chat >= mc.min_chat_messages, 0.05),
                    other => panic!("the reference does not know the moment metric {other}"),
                }
            })
            .collect();
        let mut open: Option<Moment> = None;
        for (i, &(value, volume_ok, floor)) in values.iter().enumerate() {
            let (start, end, _) = series[i];
            let mut anomalous = None;
            if i >= k {
                let baseline: Vec<f64> = values[i - k..i].iter().map(|v| v.0).collect();
                let mean = baseline.iter().sum::<f64>() / k as f64;
                let std = (baseline
                    .iter()
                    .map(|x| (x - mean) * (x - mean))
                    .sum::<f64>()
                    / k as f64)
                    .sqrt();
                let z = (value - mean) / std.max(floor);
                if volume_ok && z >= mc.min_zscore {
                    anomalous = Some((mean, std, z));
                }
            }
            match anomalous {
                Some((mean, std, z)) => {
                    let moment = open.get_or_insert_with(|| Moment {
                        stream_id: stream.to_owned(),
                        metric: metric.to_owned(),
                        start,
                        end,
                        peak_window_start: start,
                        peak_value: Score(0.0),
                        baseline_mean: Score(0.0),
                        baseline_std: Score(0.0),
                        zscore: Score(f64::NEG_INFINITY),
                    });
                    moment.end = end;
                    if round4(z) > moment.zscore.0 {
                        moment.peak_window_start = start;
                        moment.peak_value = Score(round4(value));
                        moment.baseline_mean = Score(round4(mean));
                        moment.baseline_std = Score(round4(std));
                        moment.zscore = Score(round4(z));
                    }
                }
                None => {
                    if let Some(moment) = open.take() {
                        rows.push(Row::Moment {
                            moment: Box::new(moment),
                            is_final: true,
                        });
                    }
                }
            }
        }
        if let Some(moment) = open {
            rows.push(Row::Moment {
                moment: Box::new(moment),
                is_final: true,
            });
        }
    }
}

fn totals(stream: &str, events: &[&Event], peak_viewers: u64) -> StreamTotals {
    let mut t = StreamTotals {
        stream_id: stream.to_owned(),
        peak_viewers,
        ..StreamTotals::default()
    };
    let mut title: Option<(Millis, String)> = None;
    let mut category: Option<(Millis, String)> = None;
    let mut statuses: Vec<(Millis, u8)> = Vec::new();
    for e in events {
        match &e.body {
            EventBody::Chat { .. } => t.chat_messages += 1,
            EventBody::Reaction { .. } => t.reactions += 1,
            EventBody::Transaction { .. } => t.transactions += 1,
            EventBody::StreamMeta {
                title: ti,
                category: ca,
                status,
            } => {
                if let Some(v) = ti {
                    title = title.max(Some((e.ts, v.clone())));
                }
                if let Some(v) = ca {
                    category = category.max(Some((e.ts, v.clone())));
                }
                match status {
                    Some(StreamStatus::Live) => statuses.push((e.ts, 0)),
                    Some(StreamStatus::Offline) => statuses.push((e.ts, 1)),
                    None => {}
                }
            }
            _ => {}
        }
    }
    statuses.sort();
    let last_offline = statuses.iter().rev().find(|s| s.1 == 1).copied();
    let session: Vec<Millis> = statuses
        .iter()
        .filter(|s| s.1 == 0 && Some(**s) > last_offline)
        .map(|s| s.0)
        .collect();
    t.status = match (session.is_empty(), last_offline) {
        (false, _) => Some("live".into()),
        (true, Some(_)) => Some("offline".into()),
        (true, None) => None,
    };
    t.live_since = session.first().copied();
    t.title = title.map(|(_, v)| v);
    t.category = category.map(|(_, v)| v);
    t
}

/// Every table's final rows for the given partitions, sorted.
pub fn reference_rows(
    partitions: &[ReferencePartition],
    config: &PipelineConfig,
    analyzer: &Analyzer,
) -> Result<Vec<Row>> {
    let specs = Plan::new(config.clone())?.windows().to_vec();
    let mut rows = Vec::new();
    let mut by_stream: BTreeMap<String, Vec<Event>> = BTreeMap::new();
    let mut chats: BTreeMap<String, Vec<ChatLine>> = BTreeMap::new();
    for p in partitions {
        let mut max_seen: Option<Millis> = None;
        // Every admitted occurrence of (type, stream, event_id) in this partition: (ts, offset).
        type IdKey = (&'static str, String, String);
        let mut admitted_ids: BTreeMap<IdKey, Vec<(Millis, u64)>> = BTreeMap::new();
        for (offset, payload) in p.payloads.iter().enumerate() {
            let dead = |reason, error| {
                Row::DeadLetter(DeadLetter::new(
                    &p.source,
                    p.partition,
                    offset as u64,
                    reason,
                    error,
                    payload,
                ))
            };
            match decode_json(payload, &DecodeContext::default()) {
                Err(e) => {
                    let (reason, error) = rejection(e);
                    rows.push(dead(reason, error));
                }
                Ok(event) => {
                    // The watermark before this record; none while it would be negative.
                    let watermark =
                        max_seen.and_then(|m| m.checked_sub(config.max_out_of_orderness.0));
                    let admissible = |ts: Millis| {
                        watermark.is_none_or(|w| {
                            ts as i128 >= w as i128 - config.allowed_lateness.0 as i128
                        })
                    };
                    // The id as the record spells it (a string, or an integer as its text), so a
                    // decoder that dropped or mangled it would show here.
                    let id_key = serde_json::from_slice::<serde_json::Value>(payload)
                        .ok()
                        .and_then(|v| match v.get("event_id")? {
                            serde_json::Value::String(id) => Some(id.clone()),
                            serde_json::Value::Number(n) if n.is_i64() || n.is_u64() => {
                                Some(n.to_string())
                            }
                            _ => None,
                        })
                        .map(|id| (event.kind().name(), event.stream_id.clone(), id));
                    // A duplicate repeats an admitted occurrence that would itself still be
                    // admitted now.
                    let repeated = id_key.as_ref().and_then(|key| {
                        admitted_ids
                            .get(key)?
                            .iter()
                            .find(|(ts, _)| admissible(*ts))
                    });
                    if let (Some((_, first)), Some((_, _, id))) = (repeated, &id_key) {
                        rows.push(dead(
                            DeadLetterReason::Duplicate,
                            duplicate_message(id, *first),
                        ));
                    } else if !admissible(event.ts) {
                        rows.push(dead(
                            DeadLetterReason::Late,
                            late_message(event.ts, watermark.unwrap_or(0)),
                        ));
                    } else {
                        if let Some(key) = id_key {
                            admitted_ids
                                .entry(key)
                                .or_default()
                                .push((event.ts, offset as u64));
                        }
                        max_seen = max_seen.max(Some(event.ts));
                        if let EventBody::Chat { user_id, text } = &event.body {
                            let message = ChatMessage {
                                stream_id: event.stream_id.clone(),
                                ts: event.ts,
                                source: p.source.as_str().into(),
                                partition: p.partition,
                                offset: offset as u64,
                                user_id: user_id.clone(),
                                text: text.clone(),
                                sentiment: compound(analyzer, text),
                                category: analyzer.category(text),
                            };
                            if config.chat_history {
                                rows.push(Row::ChatMessage(Arc::new(message.clone())));
                            }
                            chats
                                .entry(event.stream_id.clone())
                                .or_default()
                                .push(ChatLine::new(message, analyzer.emotes(text)));
                        }
                        by_stream
                            .entry(event.stream_id.clone())
                            .or_default()
                            .push(event);
                    }
                }
            }
        }
    }
    for (stream, events) in &by_stream {
        let all: Vec<&Event> = events.iter().collect();
        let mut peak = 0;
        for spec in &specs {
            let starts: BTreeSet<Millis> = all
                .iter()
                .flat_map(|e| spec.starts_containing(e.ts))
                .collect();
            let mut facts = BTreeMap::new();
            for &start in &starts {
                let key = WindowKey {
                    stream_id: stream.as_str().into(),
                    window: spec.label.as_str().into(),
                    start,
                    end: start + spec.size,
                };
                let f = window(key, &all, config, analyzer, &mut rows);
                peak = peak.max(f.metrics.viewers_peak);
                facts.insert(start, f);
            }
            if spec.label == config.moments.window {
                if let (Some(&first), Some(&last)) = (starts.first(), starts.last()) {
                    let series: Vec<_> = (first..=last)
                        .step_by(spec.slide as usize)
                        .map(|s| (s, s + spec.size, facts.get(&s)))
                        .collect();
                    moments(stream, &series, config, &mut rows);
                }
            }
        }
        rows.push(Row::StreamTotals {
            totals: Box::new(totals(stream, &all, peak)),
            is_final: true,
        });
    }
    if config.summary.every > 0 {
        for (stream, lines) in chats {
            summaries(&stream, lines, &config.summary, &mut rows);
        }
    }
    rows.sort();
    Ok(rows)
}

/// A stream's summaries by definition: its messages in event order (time, then source,
/// partition, offset); after every `every`-th, the summary of the latest `window` of them that
/// lie within `horizon` of it.
fn summaries(stream: &str, mut lines: Vec<ChatLine>, config: &SummaryConfig, rows: &mut Vec<Row>) {
    lines.sort_by(|a, b| {
        let key = |l: &ChatLine| {
            let m = &l.message;
            (m.ts, m.source.clone(), m.partition, m.offset)
        };
        key(a).cmp(&key(b))
    });
    for (index, line) in lines.iter().enumerate() {
        let n = index as u64 + 1;
        if !n.is_multiple_of(config.every) {
            continue;
        }
        let first = index + 1 - (index + 1).min(config.window);
        let covered: Vec<ChatLine> = lines[first..=index]
            .iter()
            .filter(|l| l.message.ts.saturating_add(config.horizon.0) >= line.message.ts)
            .cloned()
            .collect();
        rows.push(Row::ChatSummary(Box::new(summarize(
            stream,
            n / config.every,
            &covered,
        ))));
    }
}
