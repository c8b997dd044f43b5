//! Chat history queries: the filter of `GET /v1/streams/{id}/chat`, its keyset cursor, and how
//! the view store's latest messages and Postgres's pages merge into one answer.

use std::collections::BTreeMap;
use std::sync::Arc;

use crowdpulse_dataflow::category::Category;
use crowdpulse_dataflow::error::excerpt;
use crowdpulse_dataflow::event::Millis;
use crowdpulse_dataflow::rows::{ChatMessage, Row};
use serde_json::Value;

use crate::error::{ApiError, Result};
use crate::handlers::time_bound;
use crate::models::{limit_within, ChatQuery};
use crate::store::{chat_key, row_value, ChatKey};

/// Messages per page by default.
const DEFAULT_LIMIT: usize = 100;
/// The largest page.
const MAX_LIMIT: usize = 1_000;
/// The longest search text.
const MAX_QUERY_CHARS: usize = 200;

/// What a chat query selects.
#[derive(Debug, Clone)]
pub struct ChatFilter {
    /// Earliest time (inclusive).
    pub from: Millis,
    /// Latest time (exclusive).
    pub to: Millis,
    /// Only this category.
    pub category: Option<Category>,
    /// The search text, as given.
    pub q: Option<String>,
    /// Its words, lowercased (for the view store's match).
    words: Vec<String>,
    /// Page size.
    pub limit: usize,
    /// Only messages ordered before this one.
    pub before: Option<ChatKey>,
}

/// Words as both sides match them: lowercase runs of letters and digits.
fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
}

fn bad(message: String) -> ApiError {
    ApiError::BadRequest(message)
}

/// The cursor naming `key`: `ts.partition.offset.hex(source)` (safe in a URL as it is).
pub fn cursor(key: &ChatKey) -> String {
    let (ts, source, partition, offset) = key;
    let hex: String = source.bytes().map(|b| format!("{b:02x}")).collect();
    format!("{ts}.{partition}.{offset}.{hex}")
}

fn parse_cursor(text: &str) -> Result<ChatKey> {
    let invalid = || {
        bad(format!(
            "before={} is not a cursor this API returned",
            excerpt(text)
        ))
    };
    let mut parts = text.splitn(4, '.');
    let mut number = || parts.next().and_then(|p| p.parse::<u64>().ok());
    let (ts, partition, offset) = (number(), number(), number());
    let hex = parts.next().ok_or_else(invalid)?;
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|b| u8::from_str_radix(b, 16).ok())
        })
        .collect::<Option<Vec<u8>>>();
    // No source name has a NUL (it is a Kafka topic or a file's name), and Postgres refuses one.
    let source = bytes
        .and_then(|b| String::from_utf8(b).ok())
        .filter(|source| !source.contains('\0'));
    match (
        ts,
        partition.and_then(|p| u32::try_from(p).ok()),
        offset,
        source,
    ) {
        (Some(ts), Some(partition), Some(offset), Some(source)) => {
            Ok((ts, Arc::from(source), partition, offset))
        }
        _ => Err(invalid()),
    }
}

impl ChatFilter {
    /// Checks the query.
    pub fn parse(query: &ChatQuery) -> Result<Self> {
        let category = match query.category.as_deref() {
            None => None,
            Some(name) => Some(
                Category::ALL
                    .into_iter()
                    .find(|c| c.name() == name)
                    .ok_or_else(|| {
                        bad(format!(
                            "category={} is not one of praise, toxic, humor, question, other",
                            excerpt(name)
                        ))
                    })?,
            ),
        };
        let q = query.q.as_deref().map(str::trim).filter(|q| !q.is_empty());
        let words: Vec<String> = q.map(|q| words(q).collect()).unwrap_or_default();
        if let Some(q) = q {
            if q.chars().count() > MAX_QUERY_CHARS || words.is_empty() || q.contains('\0') {
                return Err(bad(format!(
                    "q must hold a word and at most {MAX_QUERY_CHARS} characters"
                )));
            }
        }
        let limit = limit_within(query.limit, DEFAULT_LIMIT, MAX_LIMIT)?;
        Ok(Self {
            from: query
                .from
                .as_deref()
                .map(|t| time_bound("from", t))
                .transpose()?
                .unwrap_or(0),
            to: query
                .to
                .as_deref()
                .map(|t| time_bound("to", t))
                .transpose()?
                .unwrap_or(Millis::MAX),
            category,
            q: q.map(str::to_owned),
            words,
            limit,
            before: query.before.as_deref().map(parse_cursor).transpose()?,
        })
    }

    /// Whether a message of the view store is selected (the search: every word of `q` is a
    /// word of the text).
    pub fn matches(&self, message: &ChatMessage) -> bool {
        (self.from..self.to).contains(&message.ts)
            && self.category.is_none_or(|c| c == message.category)
            && self.before.as_ref().is_none_or(|b| chat_key(message) < *b)
            && (self.words.is_empty() || {
                let text: Vec<String> = words(&message.text).collect();
                self.words.iter().all(|w| text.contains(w))
            })
    }
}

/// The key of a message as JSON (from Postgres or the store).
fn key_of(value: &Value) -> Option<ChatKey> {
    Some((
        value.get("ts")?.as_u64()?,
        Arc::from(value.get("source")?.as_str()?),
        u32::try_from(value.get("partition")?.as_u64()?).ok()?,
        value.get("offset")?.as_u64()?,
    ))
}

/// One page: the store's selected messages and Postgres's, newest first, each once; and the
/// cursor of the next page when the page is full.
pub fn page<'a>(
    filter: &ChatFilter,
    stored: impl Iterator<Item = &'a Arc<ChatMessage>>,
    from_postgres: Vec<Value>,
) -> (Vec<Value>, Option<String>) {
    let mut merged: BTreeMap<ChatKey, Value> = from_postgres
        .into_iter()
        .filter_map(|value| Some((key_of(&value)?, value)))
        .collect();
    for message in stored.filter(|m| filter.matches(m)) {
        merged
            .entry(chat_key(message))
            .or_insert_with(|| row_value(&Row::ChatMessage(Arc::clone(message))));
    }
    let newest: Vec<(ChatKey, Value)> = merged.into_iter().rev().take(filter.limit).collect();
    let next = (newest.len() == filter.limit)
        .then(|| newest.last().map(|(key, _)| cursor(key)))
        .flatten();
    (newest.into_iter().map(|(_, value)| value).collect(), next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(ts: Millis, offset: u64, text: &str, category: Category) -> ChatMessage {
        ChatMessage {
            stream_id: "s".into(),
            ts,
            source: Arc::from("chat topic/1"),
            partition: 2,
            offset,
            user_id: "u".into(),
            text: text.into(),
            sentiment: 0,
            category,
        }
    }

    fn filter(query: ChatQuery) -> ChatFilter {
        ChatFilter::parse(&query).unwrap()
    }

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let key = (17, Arc::from("chat topic/1 é"), 3, 99);
        assert_eq!(parse_cursor(&cursor(&key)).unwrap(), key);
        for bad in ["", "1.2.3", "1.2.3.zz", "x.2.3.61", "1.2.3.6"] {
            assert!(parse_cursor(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn pages_follow_each_other_without_gaps_or_repeats() {
        let messages: Vec<Arc<ChatMessage>> = (0..25)
            .map(|i| Arc::new(message(1_000 + i / 2, i, "gg", Category::Other)))
            .collect();
        let mut seen = Vec::new();
        let mut before = None;
        loop {
            let f = filter(ChatQuery {
                limit: Some(10),
                before: before.clone(),
                ..ChatQuery::default()
            });
            let (page, next) = page(&f, messages.iter(), Vec::new());
            seen.extend(page.iter().map(|v| v["offset"].as_u64().unwrap()));
            match next {
                Some(next) => before = Some(next),
                None => break,
            }
        }
        assert_eq!(seen, (0..25).rev().collect::<Vec<_>>());
    }

    #[test]
    fn filters_select_by_time_category_and_words() {
        let messages = [
            message(1, 0, "What a PLAY!", Category::Praise),
            message(2, 1, "play it again?", Category::Question),
            message(3, 2, "replay", Category::Other),
        ]
        .map(Arc::new);
        let offsets = |query: ChatQuery| -> Vec<u64> {
            let (page, _) = page(&filter(query), messages.iter(), Vec::new());
            page.iter().map(|v| v["offset"].as_u64().unwrap()).collect()
        };
        let q = |q: &str| ChatQuery {
            q: Some(q.into()),
            ..ChatQuery::default()
        };
        assert_eq!(offsets(q("play")), vec![1, 0]);
        assert_eq!(offsets(q("a play")), vec![0]);
        let category = ChatQuery {
            category: Some("question".into()),
            ..ChatQuery::default()
        };
        assert_eq!(offsets(category), vec![1]);
        let range = ChatQuery {
            from: Some("2".into()),
            to: Some("3".into()),
            ..ChatQuery::default()
        };
        assert_eq!(offsets(range), vec![1]);
        for bad in [
            ChatQuery {
                category: Some("rude".into()),
                ..ChatQuery::default()
            },
            q("!!!"),
            q(&"a".repeat(201)),
            q("nul\0"),
            ChatQuery {
                limit: Some(0),
                ..ChatQuery::default()
            },
        ] {
            assert!(ChatFilter::parse(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn postgres_and_store_rows_merge_once() {
        let stored = [Arc::new(message(5, 1, "a", Category::Other))];
        let f = filter(ChatQuery::default());
        let from_postgres = vec![
            row_value(&Row::ChatMessage(Arc::clone(&stored[0]))),
            row_value(&Row::ChatMessage(Arc::new(message(
                4,
                0,
                "b",
                Category::Other,
            )))),
        ];
        let (page, next) = page(&f, stored.iter(), from_postgres);
        assert_eq!(page.len(), 2);
        assert_eq!(page[0]["text"], "a");
        assert_eq!(next, None);
    }
}
