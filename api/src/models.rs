//! JSON bodies of the API: responses, request bodies and query parameters.

use crowdpulse_dataflow::event::Millis;
use crowdpulse_dataflow::rows::Reaction;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// `{"emoji", "count"}` of a top-k list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmojiCount {
    /// The emoji.
    pub emoji: String,
    /// Reactions with it.
    pub count: u64,
}

impl From<(String, u64)> for EmojiCount {
    fn from((emoji, count): (String, u64)) -> Self {
        Self { emoji, count }
    }
}

/// A reaction as ingested.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecentReaction {
    /// The stream.
    pub stream_id: String,
    /// Who reacted.
    pub user_id: String,
    /// The emoji.
    pub emoji: String,
    /// Event time, epoch ms.
    pub ts: Millis,
    /// The producer's event id, if it sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
}

impl From<&Reaction> for RecentReaction {
    fn from(reaction: &Reaction) -> Self {
        Self {
            stream_id: reaction.stream_id.clone(),
            user_id: reaction.user_id.clone(),
            emoji: reaction.emoji.clone(),
            ts: reaction.ts,
            event_id: reaction.event_id.clone(),
        }
    }
}

/// One stream: status, totals, current viewers; session emoji ranking and recent reactions.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StreamSummary {
    /// The stream.
    pub stream_id: String,
    /// Latest title.
    pub title: Option<String>,
    /// Latest category.
    pub category: Option<String>,
    /// `live` or `offline`, when known.
    pub status: Option<String>,
    /// Start of the current live session, epoch ms.
    pub live_since: Option<Millis>,
    /// Chat messages in total.
    pub chat_messages: u64,
    /// Reactions in total.
    pub reactions: u64,
    /// Transactions in total.
    pub transactions: u64,
    /// Most concurrent viewers seen.
    pub peak_viewers: u64,
    /// Concurrent viewers at the end of the latest base window.
    pub current_viewers: u64,
    /// Chat messages, reactions and transactions in the base windows ending in the minute
    /// before the output frontier or later: `GET /v1/streams` lists the most active first.
    pub activity: u64,
    /// Top emojis since this process started, ties at the k-th count included up to
    /// `pipeline.top_max_entries`.
    pub top_emojis: Vec<EmojiCount>,
    /// Present and true when ties were cut from `top_emojis`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub top_emojis_truncated: bool,
    /// The latest reactions, newest first.
    pub recent_reactions: Vec<RecentReaction>,
}

/// `GET /v1/statistics`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Statistics {
    /// Reactions counted over all streams since this process started.
    pub total_emojis: u64,
    /// The latest reactions over all streams, newest first.
    pub last_reactions: Vec<RecentReaction>,
    /// Top emojis over all streams, ties at the k-th count included up to
    /// `pipeline.top_max_entries`.
    pub top_emojis: Vec<EmojiCount>,
    /// Present and true when ties were cut from `top_emojis`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub top_emojis_truncated: bool,
    /// `total_emojis` per minute of session.
    pub rate_per_minute: f64,
    /// Milliseconds since this process started.
    pub session_duration_ms: u64,
    /// Streams known.
    pub streams: usize,
    /// Records dead-lettered.
    pub dead_letters: u64,
    /// The output frontier (event time all results are complete up to), epoch ms.
    pub frontier: Option<Millis>,
}

/// One refused record of an ingest request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejected {
    /// Zero-based position in the request.
    pub index: usize,
    /// Why.
    pub error: String,
}

/// `202` answer of ingest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestResult {
    /// Records queued for the dataflow.
    pub accepted: usize,
    /// Records refused (they also go to the dead-letter path), the first
    /// `api.limits.max_rejections_listed` of them.
    pub rejected: Vec<Rejected>,
    /// How many records were refused, listed or not.
    pub rejected_total: usize,
}

/// Body of `POST /v1/streams/{id}/reactions`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReactionRequest {
    /// The emoji.
    pub emoji: String,
    /// Who reacted (defaults to `anonymous`).
    #[serde(default)]
    pub user_id: Option<String>,
}

/// The token of a live push request, for browsers that cannot send an `Authorization` header.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TokenQuery {
    /// A bearer token.
    pub access_token: Option<String>,
}

/// A query's `limit`: `default` when absent, refused outside 1..=`max`.
pub fn limit_within(limit: Option<usize>, default: usize, max: usize) -> Result<usize, ApiError> {
    match limit.unwrap_or(default) {
        limit @ 1.. if limit <= max => Ok(limit),
        _ => Err(ApiError::BadRequest(format!(
            "limit must be between 1 and {max}"
        ))),
    }
}

/// Query of window endpoints.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowQuery {
    /// Window label (`10s`, `1m`, `1m/10s`); the base window when absent.
    pub window: Option<String>,
    /// Earliest window start, epoch ms or RFC 3339 (inclusive).
    pub from: Option<String>,
    /// Latest window start, epoch ms or RFC 3339 (exclusive).
    pub to: Option<String>,
    /// At most this many windows, the latest ones (default 100, at most 10000).
    pub limit: Option<usize>,
}

/// Query of `GET /v1/streams/{id}/chat`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatQuery {
    /// Earliest message time, epoch ms or RFC 3339 (inclusive).
    pub from: Option<String>,
    /// Latest message time, epoch ms or RFC 3339 (exclusive).
    pub to: Option<String>,
    /// Only this category (praise, toxic, humor, question, other).
    pub category: Option<String>,
    /// Words the text must contain.
    pub q: Option<String>,
    /// At most this many messages (default 100, at most 1000).
    pub limit: Option<usize>,
    /// The previous page's `next` cursor.
    pub before: Option<String>,
}

/// Query of `GET /v1/streams`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamsQuery {
    /// The most active this many streams (default 1,000, at most 10,000).
    pub limit: Option<usize>,
}

/// Query of `GET /v1/streams/{id}/summary`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SummaryQuery {
    /// The latest this many summaries (default 1, at most 100).
    pub limit: Option<usize>,
}

/// One connected live client.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientInfo {
    /// Client number.
    pub id: u64,
    /// `websocket` or `sse`.
    pub transport: String,
    /// The stream it follows.
    pub stream_id: String,
    /// Connected since, epoch ms.
    pub connected_at: Millis,
    /// Messages sent.
    pub messages: u64,
    /// Times it fell behind and was moved on to a fresh snapshot.
    pub resyncs: u64,
}

/// The JSON error body: `{"error": {"code", "message"}}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// Code and message of an error.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Machine-readable code (`bad_request`, `not_found`, ...).
    pub code: String,
    /// What went wrong.
    pub message: String,
}

/// A stream id taken from a URL path segment, percent-decoded (`caf%C3%A9%20live` is the stream
/// `café live`, the id events carry in their body). A segment that does not decode to UTF-8
/// matches no route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamId(pub String);

impl std::str::FromStr for StreamId {
    type Err = std::str::Utf8Error;

    fn from_str(segment: &str) -> Result<Self, Self::Err> {
        let decoded = percent_encoding::percent_decode_str(segment).decode_utf8()?;
        Ok(Self(decoded.into_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limit_is_its_default_when_absent_and_refused_outside_one_to_max() {
        assert_eq!(limit_within(None, 7, 10).unwrap(), 7);
        assert_eq!(limit_within(Some(1), 7, 10).unwrap(), 1);
        assert_eq!(limit_within(Some(10), 7, 10).unwrap(), 10);
        for refused in [0, 11, usize::MAX] {
            assert_eq!(
                limit_within(Some(refused), 7, 10).unwrap_err().to_string(),
                "limit must be between 1 and 10"
            );
        }
    }
}
