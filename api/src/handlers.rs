//! Request handlers: each reads the shared state and answers JSON, or rejects with an
//! [`ApiError`] that `recover` turns into the JSON error body.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use crowdpulse_connectors::live_input::wall_clock_ms;
use crowdpulse_dataflow::error::excerpt;
use crowdpulse_dataflow::event::Millis;
use crowdpulse_dataflow::rows::ChatMessage;
use crowdpulse_dataflow::timestamp::parse_rfc3339;
use serde_json::{json, Value};
use tracing::warn;
use warp::http::StatusCode;
use warp::reply::{self, Reply, Response};
use warp::Rejection;

use crate::chat::{self, ChatFilter};
use crate::error::ApiError;
use crate::metrics::{render, MetricsSources};
use crate::models::{
    limit_within, ChatQuery, ReactionRequest, Statistics, StreamsQuery, SummaryQuery, WindowQuery,
};
use crate::state::AppState;
use crate::store::{row_value, StoreState, StreamView, SummaryKey};

/// Largest `limit` of summary queries.
const MAX_SUMMARIES: usize = 100;

/// Default and largest `limit` of window queries.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 10_000;

pub(crate) fn reject(error: ApiError) -> Rejection {
    warp::reject::custom(error)
}

pub(crate) fn json_reply(value: &impl serde::Serialize, status: StatusCode) -> Response {
    reply::with_status(reply::json(value), status).into_response()
}

/// `GET /health`: the process is up.
pub async fn health(state: AppState) -> Result<Response, Rejection> {
    Ok(match state.failed.get() {
        None => json_reply(&json!({"status": "ok"}), StatusCode::OK),
        Some(reason) => json_reply(
            &json!({"status": "failing", "reason": reason}),
            StatusCode::SERVICE_UNAVAILABLE,
        ),
    })
}

/// How long the Kafka broker may leave the progress lookups unanswered before `/ready` fails.
const KAFKA_SILENCE_MS: u64 = 10_000;

/// `GET /ready`: the process is not failing (see `/health`), the dataflow's frontier is moving
/// (within the expected delay of wall clock), when reading Kafka the broker answered recently,
/// and when writing Postgres its last write succeeded.
pub async fn ready(state: AppState) -> Result<Response, Rejection> {
    let failing = state.failed.get();
    let now = wall_clock_ms();
    let frontier = state.store.read().frontier;
    let delay = frontier.map(|f| now.saturating_sub(f));
    let kafka = state.kafka_lag.as_ref().map(|lag| {
        lag.answered_at()
            .is_some_and(|at| now.saturating_sub(at) <= KAFKA_SILENCE_MS)
    });
    let postgres = state
        .postgres
        .as_ref()
        .map(|sink| sink.connected.load(std::sync::atomic::Ordering::Relaxed) == 1);
    let ready = failing.is_none()
        && delay.is_some_and(|d| d <= state.settings.ready_delay_ms)
        && kafka != Some(false)
        && postgres != Some(false);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "ready": ready,
        "frontier": frontier,
        "frontier_delay_ms": delay,
        "kafka_reachable": kafka,
        "postgres_reachable": postgres,
        "failing": failing,
    });
    Ok(json_reply(&body, status))
}

/// `GET /metrics`: Prometheus text.
pub async fn metrics(state: AppState) -> Result<Response, Rejection> {
    let (frontier, view_streams) = {
        let store = state.store.read();
        (store.frontier, store.streams.len())
    };
    let text = render(&MetricsSources {
        source: &state.source_counters,
        ingest: &state.ingest.counters,
        queued: state.ingest.queued(),
        http: &state.http,
        live_clients: state.clients.count(),
        view_streams,
        push_interval: state.store.push_interval_in_effect(),
        frontier,
        kafka_lag: state.kafka_lag.as_deref(),
        dead_letter_topic: state.dead_letter_topic.as_deref(),
        postgres: state.postgres.as_deref(),
        summarizer: state.summarizer.as_deref(),
    });
    Ok(reply::with_header(text, "content-type", "text/plain; version=0.0.4").into_response())
}

/// `GET /openapi.json`.
pub async fn openapi() -> Result<Response, Rejection> {
    Ok(reply::with_header(crate::OPENAPI, "content-type", "application/json").into_response())
}

/// 404 for a stream the API knows nothing of.
fn unknown_stream(id: &str) -> Rejection {
    reject(ApiError::NotFound(format!(
        "unknown stream {}",
        excerpt(id)
    )))
}

/// A stream that has produced results, or 404.
fn stream<'a>(state: &'a StoreState, id: &str) -> Result<&'a StreamView, Rejection> {
    state
        .streams
        .get(id)
        .filter(|view| view.has_results())
        .ok_or_else(|| unknown_stream(id))
}

/// `GET /v1/streams` answers at most this many streams.
const MAX_STREAMS: usize = 10_000;

/// `GET /v1/streams`: the most active `limit` streams with results, and how many there are. The
/// answer is bounded: the store may hold a stream for every id ever sent within its retention.
pub async fn list_streams(query: StreamsQuery, state: AppState) -> Result<Response, Rejection> {
    let limit = limit_within(query.limit, 1_000, MAX_STREAMS).map_err(reject)?;
    let store = state.store.read();
    let mut ranked: Vec<_> = store
        .streams
        .iter()
        .filter(|(_, view)| view.has_results())
        .map(|(id, view)| (state.store.activity(view, store.frontier), id, view))
        .collect();
    let total = ranked.len();
    // The most active first; ties (quiet streams) by id, so the order is stable.
    let order = |a: &(u64, &String, _), b: &(u64, &String, _)| b.0.cmp(&a.0).then(a.1.cmp(b.1));
    if total > limit {
        ranked.select_nth_unstable_by(limit - 1, order);
        ranked.truncate(limit);
    }
    ranked.sort_unstable_by(order);
    let streams: Vec<_> = ranked
        .into_iter()
        .map(|(activity, id, view)| state.store.summary_with(id, view, activity))
        .collect();
    Ok(json_reply(
        &json!({"streams": streams, "total": total}),
        StatusCode::OK,
    ))
}

/// `GET /v1/streams/{id}`.
pub async fn get_stream(id: String, state: AppState) -> Result<Response, Rejection> {
    let store = state.store.read();
    let view = stream(&store, &id)?;
    Ok(json_reply(
        &state.store.summary(&id, view, store.frontier),
        StatusCode::OK,
    ))
}

/// A time bound given as epoch ms or RFC 3339.
pub(crate) fn time_bound(name: &str, text: &str) -> crate::error::Result<Millis> {
    text.parse::<Millis>()
        .or_else(|_| parse_rfc3339(text))
        .map_err(|_| {
            ApiError::BadRequest(format!(
                "{name}={} is neither epoch milliseconds nor RFC 3339",
                excerpt(text)
            ))
        })
}

fn parse_time(name: &str, text: &str) -> Result<Millis, Rejection> {
    time_bound(name, text).map_err(reject)
}

/// The window label asked for (the base window by default), checked against the configured ones.
fn window_label(state: &AppState, query: &WindowQuery) -> Result<String, Rejection> {
    let label = query
        .window
        .clone()
        .unwrap_or_else(|| state.store.settings.base_window.clone());
    if state.settings.windows.contains(&label) {
        Ok(label)
    } else {
        Err(reject(ApiError::BadRequest(format!(
            "unknown window {}; configured: {}",
            excerpt(&label),
            state.settings.windows.join(", ")
        ))))
    }
}

/// History rows, or none when Postgres cannot be read but the store knows the stream: live
/// results stay available through a database outage (logged); 503 when nothing is known.
fn or_store_only(
    history: crate::error::Result<Vec<Value>>,
    store_knows: bool,
) -> Result<Vec<Value>, Rejection> {
    match history {
        Ok(rows) => Ok(rows),
        Err(error) if store_knows => {
            warn!(%error, "history unavailable; answering from the view store only");
            Ok(Vec::new())
        }
        Err(error) => Err(reject(error)),
    }
}

/// What a series query selects.
struct SeriesQuery {
    label: String,
    from: Millis,
    to: Millis,
    limit: usize,
}

fn series_query(state: &AppState, query: &WindowQuery) -> Result<SeriesQuery, Rejection> {
    let label = window_label(state, query)?;
    let bound =
        |name, text: &Option<String>| text.as_deref().map(|t| parse_time(name, t)).transpose();
    let limit = limit_within(query.limit, DEFAULT_LIMIT, MAX_LIMIT).map_err(reject)?;
    Ok(SeriesQuery {
        label,
        from: bound("from", &query.from)?.unwrap_or(0),
        to: bound("to", &query.to)?.unwrap_or(Millis::MAX),
        limit,
    })
}

/// The latest `limit` `window_metrics` rows of the query's label and range, oldest first, as
/// JSON: from the view store, and from Postgres for the earlier ones the store no longer (or
/// never) held. `extra` reads the stream's view while the store is locked (None: the store does
/// not know the stream). 404 when neither knows the stream.
async fn metric_values<T>(
    state: &AppState,
    id: &str,
    query: &WindowQuery,
    extra: impl FnOnce(&StreamView) -> T,
) -> Result<(String, Vec<Value>, Option<T>), Rejection> {
    let query = series_query(state, query)?;
    let (mut rows, earliest, extra) = {
        let store = state.store.read();
        match stream(&store, id) {
            Ok(view) => {
                let mut rows: Vec<(Millis, Value)> = view
                    .windows
                    .iter()
                    .filter(|((l, start), _)| {
                        **l == *query.label && *start >= query.from && *start < query.to
                    })
                    .filter_map(|((_, start), window)| {
                        window.metrics.as_ref().map(|row| (*start, row_value(row)))
                    })
                    .collect();
                let skip = rows.len().saturating_sub(query.limit);
                rows.drain(..skip);
                let earliest = rows.first().map(|(start, _)| *start);
                let rows = rows.into_iter().map(|(_, value)| value).collect();
                (rows, earliest, Some(extra(view)))
            }
            Err(rejection) if state.history.is_none() => return Err(rejection),
            Err(_) => (Vec::new(), None, None),
        }
    };
    if let (Some(history), true) = (&state.history, rows.len() < query.limit) {
        let before = earliest.unwrap_or(query.to).min(query.to);
        let older = history
            .window_metrics(
                id,
                &query.label,
                (query.from, before),
                query.limit - rows.len(),
            )
            .await;
        let older = or_store_only(older, extra.is_some())?;
        if older.is_empty() && extra.is_none() {
            return Err(unknown_stream(id));
        }
        rows.splice(0..0, older);
    }
    Ok((query.label, rows, extra))
}

/// `GET /v1/streams/{id}/metrics`.
pub async fn stream_metrics(
    id: String,
    query: WindowQuery,
    state: AppState,
) -> Result<Response, Rejection> {
    let (label, rows, _) = metric_values(&state, &id, &query, |_| ()).await?;
    Ok(json_reply(
        &json!({"stream_id": id, "window": label, "rows": rows}),
        StatusCode::OK,
    ))
}

/// Picks some fields of each metrics row.
fn series(rows: Vec<Value>, fields: &[&str]) -> Vec<Value> {
    rows.into_iter()
        .map(|full| {
            let picked = fields
                .iter()
                .map(|f| {
                    (
                        (*f).to_owned(),
                        full.get(*f).cloned().unwrap_or(Value::Null),
                    )
                })
                .collect::<serde_json::Map<_, _>>();
            Value::Object(picked)
        })
        .collect()
}

/// A stream's `window_metrics` series reduced to `fields`, with `extra` top-level fields (null
/// when only Postgres knows the stream).
async fn series_reply(
    id: &str,
    query: &WindowQuery,
    state: &AppState,
    fields: &[&str],
    extra: impl FnOnce(&StreamView) -> Vec<(&'static str, Value)>,
) -> Result<Response, Rejection> {
    let (label, rows, extra) = metric_values(state, id, query, extra).await?;
    let mut body = json!({"stream_id": id, "window": label, "series": series(rows, fields)});
    for (name, value) in extra.unwrap_or_default() {
        body[name] = value;
    }
    Ok(json_reply(&body, StatusCode::OK))
}

/// `GET /v1/streams/{id}/viewers`.
pub async fn stream_viewers(
    id: String,
    query: WindowQuery,
    state: AppState,
) -> Result<Response, Rejection> {
    let fields = [
        "window_start",
        "window_end",
        "viewers_peak",
        "viewers_end",
        "viewer_joins",
        "viewer_leaves",
        "final",
    ];
    let store = Arc::clone(&state.store);
    series_reply(&id, &query, &state, &fields, |view| {
        let summary = store.summary(&id, view, None);
        vec![
            ("current", summary.current_viewers.into()),
            ("peak", summary.peak_viewers.into()),
        ]
    })
    .await
}

/// `GET /v1/streams/{id}/sentiment`.
pub async fn stream_sentiment(
    id: String,
    query: WindowQuery,
    state: AppState,
) -> Result<Response, Rejection> {
    let fields = [
        "window_start",
        "window_end",
        "chat_messages",
        "sentiment_mean",
        "positive",
        "neutral",
        "negative",
        "final",
    ];
    series_reply(&id, &query, &state, &fields, |_| Vec::new()).await
}

/// `GET /v1/streams/{id}/categories`: chat messages per category and window.
pub async fn stream_categories(
    id: String,
    query: WindowQuery,
    state: AppState,
) -> Result<Response, Rejection> {
    let fields = [
        "window_start",
        "window_end",
        "chat_messages",
        "praise",
        "toxic",
        "humor",
        "question",
        "other",
        "final",
    ];
    series_reply(&id, &query, &state, &fields, |_| Vec::new()).await
}

/// `GET /v1/streams/{id}/emojis/top`: the latest window's top-k of a label, or (without
/// `window`) the ranking since this process started; ties at the k-th count included.
pub async fn stream_top_emojis(
    id: String,
    query: WindowQuery,
    state: AppState,
) -> Result<Response, Rejection> {
    let store = state.store.read();
    let view = stream(&store, &id)?;
    if query.window.is_none() {
        let summary = state.store.summary(&id, view, store.frontier);
        return Ok(json_reply(
            &json!({"stream_id": id, "window": null, "top": summary.top_emojis, "truncated": summary.top_emojis_truncated}),
            StatusCode::OK,
        ));
    }
    let label = window_label(&state, &query)?;
    let latest = view
        .windows
        .iter()
        .rev()
        .filter(|((l, _), _)| **l == *label)
        .find_map(|(_, window)| window.top.as_ref());
    let body = match latest {
        Some(row) => {
            let mut value = row_value(row);
            value["stream_id"] = json!(id);
            value
        }
        None => json!({"stream_id": id, "window": label, "top": []}),
    };
    Ok(json_reply(&body, StatusCode::OK))
}

/// `GET /v1/streams/{id}/moments`: the store's moments, preceded by the earlier ones Postgres
/// holds.
pub async fn stream_moments(id: String, state: AppState) -> Result<Response, Rejection> {
    let (mut moments, earliest, known): (Vec<Value>, _, _) = {
        let store = state.store.read();
        match stream(&store, &id) {
            Ok(view) => {
                let earliest = view.moments.keys().map(|(_, start)| *start).min();
                let moments = view.moments.values().map(row_value).collect();
                (moments, earliest, true)
            }
            Err(rejection) if state.history.is_none() => return Err(rejection),
            Err(_) => (Vec::new(), None, false),
        }
    };
    if let Some(history) = &state.history {
        let older = history.moments(&id, earliest.unwrap_or(Millis::MAX)).await;
        let older = or_store_only(older, known)?;
        if older.is_empty() && !known {
            return Err(unknown_stream(&id));
        }
        moments.splice(0..0, older);
    }
    Ok(json_reply(
        &json!({"stream_id": id, "moments": moments}),
        StatusCode::OK,
    ))
}

/// `GET /v1/streams/{id}/chat`: the stream's chat history, newest first: the view store's latest
/// messages merged with Postgres's (each once), so the page is complete and current. A search
/// (`q`) is Postgres's alone when there is one, so its syntax means one thing; when Postgres
/// cannot answer, only a full page from the store (complete by construction) is served.
pub async fn stream_chat(
    id: String,
    query: ChatQuery,
    state: AppState,
) -> Result<Response, Rejection> {
    let filter = ChatFilter::parse(&query).map_err(reject)?;
    let searched_in_postgres = filter.q.is_some() && state.history.is_some();
    let (stored, known): (Vec<Arc<ChatMessage>>, bool) = {
        let store = state.store.read();
        match stream(&store, &id) {
            Ok(_) if searched_in_postgres => (Vec::new(), true),
            Ok(view) => {
                let selected = view.chat.values().rev().filter(|m| filter.matches(m));
                (selected.take(filter.limit).cloned().collect(), true)
            }
            Err(rejection) if state.history.is_none() => return Err(rejection),
            Err(_) => (Vec::new(), false),
        }
    };
    let from_postgres = match &state.history {
        Some(history) => match history.chat(&id, &filter).await {
            Ok(rows) => rows,
            Err(error) if stored.len() == filter.limit => {
                warn!(%error, "chat history unavailable; the store's page is complete");
                Vec::new()
            }
            Err(error) => return Err(reject(error)),
        },
        None => Vec::new(),
    };
    let (messages, next) = chat::page(&filter, stored.iter(), from_postgres);
    if let (true, false, Some(history)) = (messages.is_empty(), known, &state.history) {
        if !history.has_chat(&id).await.map_err(reject)? {
            return Err(unknown_stream(&id));
        }
    }
    Ok(json_reply(
        &json!({"stream_id": id, "messages": messages, "next": next}),
        StatusCode::OK,
    ))
}

/// `GET /v1/streams/{id}/summary`: the stream's latest chat summaries (by their last message),
/// newest first, from the view store and, for older ones, Postgres.
pub async fn stream_summary(
    id: String,
    query: SummaryQuery,
    state: AppState,
) -> Result<Response, Rejection> {
    let limit = limit_within(query.limit, 1, MAX_SUMMARIES).map_err(reject)?;
    let (mut summaries, known): (BTreeMap<SummaryKey, Value>, bool) = {
        let store = state.store.read();
        match stream(&store, &id) {
            Ok(view) => {
                let latest = view.summaries.iter().rev().take(limit);
                let latest = latest.map(|(key, summary)| (key.clone(), summary.value()));
                (latest.collect(), true)
            }
            Err(rejection) if state.history.is_none() => return Err(rejection),
            Err(_) => (BTreeMap::new(), false),
        }
    };
    // Only a full page from the store is complete without Postgres.
    if let (Some(history), true) = (&state.history, summaries.len() < limit) {
        let older = history.summaries(&id, limit).await.map_err(reject)?;
        if older.is_empty() && !known && !history.has_chat(&id).await.map_err(reject)? {
            return Err(unknown_stream(&id));
        }
        let keyed = older.into_iter().filter_map(|row| {
            let key = (
                row["last_ts"].as_u64()?,
                row["last_source"].as_str()?.to_owned(),
                u32::try_from(row["last_partition"].as_u64()?).ok()?,
                row["last_offset"].as_u64()?,
            );
            Some((key, row))
        });
        for (key, row) in keyed {
            summaries.entry(key).or_insert(row);
        }
    }
    let newest: Vec<Value> = summaries.into_values().rev().take(limit).collect();
    Ok(json_reply(
        &json!({"stream_id": id, "summaries": newest}),
        StatusCode::OK,
    ))
}

/// `GET /v1/statistics`.
pub async fn statistics(state: AppState) -> Result<Response, Rejection> {
    let store = state.store.read();
    let total: u64 = store.emoji_totals.values().sum();
    let session = wall_clock_ms().saturating_sub(state.settings.started_at);
    let minutes = (session as f64 / 60_000.0).max(1.0 / 60.0);
    let top = state.store.settings.top(&store.emoji_totals);
    let body = Statistics {
        total_emojis: total,
        last_reactions: store.recent_reactions.iter().cloned().collect(),
        top_emojis: top.entries.into_iter().map(Into::into).collect(),
        top_emojis_truncated: top.truncated,
        rate_per_minute: total as f64 / minutes,
        session_duration_ms: session,
        streams: store.streams.values().filter(|v| v.has_results()).count(),
        dead_letters: store.dead_letters,
        frontier: store.frontier,
    };
    Ok(json_reply(&body, StatusCode::OK))
}

/// `GET /v1/clients`.
pub async fn clients(state: AppState) -> Result<Response, Rejection> {
    Ok(json_reply(
        &json!({"clients": state.clients.list()}),
        StatusCode::OK,
    ))
}

/// How an ingest body is framed, from its Content-Type.
#[derive(Debug, Clone, Copy)]
pub enum BodyFormat {
    /// A JSON array of events.
    JsonArray,
    /// One event per line.
    Ndjson,
}

impl BodyFormat {
    /// The framing of a Content-Type, or 415.
    pub fn from_content_type(content_type: Option<&str>) -> Result<Self, ApiError> {
        let essence = content_type
            .and_then(|c| c.split(';').next())
            .map(|c| c.trim().to_ascii_lowercase());
        match essence.as_deref() {
            Some("application/json") => Ok(Self::JsonArray),
            Some("application/x-ndjson" | "application/ndjson" | "application/jsonl") => {
                Ok(Self::Ndjson)
            }
            other => Err(ApiError::UnsupportedMediaType(format!(
                "content type {} is not accepted; use application/json (an array of events) or application/x-ndjson",
                other.map_or("(none)".into(), excerpt)
            ))),
        }
    }
}

/// Splits an ingest body into its records.
pub fn split_records(body: &Bytes, format: BodyFormat) -> Result<Vec<&[u8]>, ApiError> {
    match format {
        BodyFormat::JsonArray => {
            let items: Vec<&serde_json::value::RawValue> = serde_json::from_slice(body)
                .map_err(|e| ApiError::BadRequest(format!("body is not a JSON array: {e}")))?;
            Ok(items.into_iter().map(|raw| raw.get().as_bytes()).collect())
        }
        BodyFormat::Ndjson => Ok(body
            .split(|b| *b == b'\n')
            .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
            .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
            .collect()),
    }
}

fn accepted(result: &crate::models::IngestResult) -> Response {
    json_reply(result, StatusCode::ACCEPTED)
}

/// The records of an ingest request's body (a JSON array or NDJSON), at least one and at most
/// `api.limits.max_events_per_request`.
fn request_records<'a>(
    content_type: Option<&str>,
    body: &'a Bytes,
    state: &AppState,
) -> Result<Vec<&'a [u8]>, Rejection> {
    let format = BodyFormat::from_content_type(content_type).map_err(reject)?;
    let records = split_records(body, format).map_err(reject)?;
    if records.is_empty() {
        return Err(reject(ApiError::BadRequest(
            "no records in the body".into(),
        )));
    }
    let limits = &state.settings.limits;
    if records.len() > limits.max_events_per_request {
        return Err(reject(ApiError::TooManyEvents(
            limits.max_events_per_request,
        )));
    }
    Ok(records)
}

/// The 202 answer of an ingest: its size is bounded whatever the body held; every refusal is
/// still counted.
fn ingested(mut result: crate::models::IngestResult, state: &AppState) -> Response {
    result
        .rejected
        .truncate(state.settings.limits.max_rejections_listed);
    accepted(&result)
}

/// `POST /v1/events`.
pub async fn ingest_events(
    content_type: Option<String>,
    body: Bytes,
    state: AppState,
) -> Result<Response, Rejection> {
    let records = request_records(content_type.as_deref(), &body, &state)?;
    let result = state.ingest.submit(&records).await.map_err(reject)?;
    Ok(ingested(result, &state))
}

/// `POST /v1/kinds/{kind}/records`.
pub async fn ingest_kind(
    kind: String,
    content_type: Option<String>,
    body: Bytes,
    state: AppState,
) -> Result<Response, Rejection> {
    let records = request_records(content_type.as_deref(), &body, &state)?;
    let result = state.ingest.submit_kind(&kind, &records).map_err(reject)?;
    Ok(ingested(result, &state))
}

/// `POST /v1/streams/{id}/reactions`.
pub async fn post_reaction(
    id: String,
    request: ReactionRequest,
    state: AppState,
) -> Result<Response, Rejection> {
    let event = json!({
        "type": "reaction",
        "stream_id": id,
        "user_id": request.user_id.unwrap_or_else(|| "anonymous".to_owned()),
        "emoji": request.emoji,
    })
    .to_string();
    let result = state
        .ingest
        .submit(&[event.as_bytes()])
        .await
        .map_err(reject)?;
    if let Some(refused) = result.rejected.first() {
        return Err(reject(ApiError::BadRequest(refused.error.clone())));
    }
    Ok(accepted(&result))
}
