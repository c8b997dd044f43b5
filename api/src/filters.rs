//! Routes: paths and methods, state injection, body limits, and the one `recover` that turns
//! every rejection into the JSON error body. Paths are matched before methods so an unknown
//! path answers 404 and a known path with the wrong method 405.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::StreamExt;
use warp::filters::body::BodyDeserializeError;
use warp::http::header::{HeaderMap, HeaderValue};
use warp::http::{Method, StatusCode};
use warp::reject::{
    InvalidHeader, InvalidQuery, LengthRequired, MethodNotAllowed, MissingHeader, PayloadTooLarge,
    UnsupportedMediaType,
};
use warp::reply::{Reply, Response};
use warp::{Filter, Rejection};

use crate::access::{bearer, Access, Scope};
use crate::error::ApiError;
use crate::handlers;
use crate::kinds;
use crate::metrics::{HttpCounters, Refusal};
use crate::models::{
    ChatQuery, ErrorBody, ErrorDetail, ReactionRequest, StreamId, StreamsQuery, SummaryQuery,
    TokenQuery, WindowQuery,
};
use crate::origin::{Origins, ALLOWED_HEADERS, ALLOWED_METHODS};
use crate::push::{serve_websocket, sse_events, Slot};
use crate::state::AppState;

/// Injects the shared state.
pub fn with_state(
    state: AppState,
) -> impl Filter<Extract = (AppState,), Error = Infallible> + Clone {
    warp::any().map(move || state.clone())
}

/// The request body, refused with 413 beyond `limit` bytes whether or not a Content-Length
/// is sent (chunked bodies are counted as they arrive), and with 408 when it has not arrived
/// whole within `timeout`.
fn limited_body(
    limit: u64,
    timeout: Duration,
    counters: Arc<HttpCounters>,
) -> impl Filter<Extract = (Bytes,), Error = Rejection> + Clone {
    warp::header::optional::<u64>("content-length")
        .and_then(move |length: Option<u64>| async move {
            match length {
                Some(length) if length > limit => {
                    Err(warp::reject::custom(ApiError::PayloadTooLarge(limit)))
                }
                _ => Ok(()),
            }
        })
        .untuple_one()
        .and(warp::body::stream())
        .and_then(move |body| {
            let counters = Arc::clone(&counters);
            async move {
                tokio::time::timeout(timeout, collect_limited(body, limit))
                    .await
                    .unwrap_or_else(|_| {
                        counters.refuse(Refusal::BodyTimeout);
                        Err(warp::reject::custom(ApiError::BodyTimeout(timeout)))
                    })
            }
        })
}

/// A slot for a new live client, refused while `max` are taken.
fn live_client_slot(state: &AppState) -> impl Filter<Extract = (Slot,), Error = Rejection> + Clone {
    let (clients, http) = (Arc::clone(&state.clients), Arc::clone(&state.http));
    let max = state.settings.limits.max_live_clients;
    warp::any().and_then(move || {
        let (clients, http) = (Arc::clone(&clients), Arc::clone(&http));
        async move {
            clients.take_slot(max).ok_or_else(|| {
                http.refuse(Refusal::LiveClients);
                warp::reject::custom(ApiError::TooManyClients(max))
            })
        }
    })
}

async fn collect_limited<S, B>(body: S, limit: u64) -> Result<Bytes, Rejection>
where
    S: futures_util::Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let mut body = Box::pin(body);
    let mut collected = BytesMut::new();
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk.map_err(|e| {
            warp::reject::custom(ApiError::BadRequest(format!("reading the body: {e}")))
        })?;
        if (collected.len() + chunk.remaining()) as u64 > limit {
            return Err(warp::reject::custom(ApiError::PayloadTooLarge(limit)));
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            collected.extend_from_slice(part);
            let n = part.len();
            chunk.advance(n);
        }
    }
    Ok(collected.freeze())
}

/// Passes requests whose `Authorization: Bearer` token grants `scope`.
fn authorized(
    access: &Arc<Access>,
    scope: Scope,
) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    let access = Arc::clone(access);
    warp::header::optional::<String>("authorization")
        .and_then(move |header: Option<String>| {
            let access = Arc::clone(&access);
            async move {
                access
                    .check(bearer(header.as_deref()), scope)
                    .map_err(warp::reject::custom)
            }
        })
        .untuple_one()
}

/// [`authorized`] for live push, which also takes the token as `?access_token=`: browsers
/// cannot set headers on WebSocket and EventSource requests.
fn authorized_push(access: &Arc<Access>) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    let access = Arc::clone(access);
    warp::header::optional::<String>("authorization")
        .and(warp::query::<TokenQuery>())
        .and_then(move |header: Option<String>, query: TokenQuery| {
            let access = Arc::clone(&access);
            async move {
                let token = bearer(header.as_deref()).or(query.access_token.as_deref());
                access
                    .check(token, Scope::Read)
                    .map_err(warp::reject::custom)
            }
        })
        .untuple_one()
}

/// Refuses requests from browser origins that are neither the server's own nor listed.
fn same_or_listed_origin(
    origins: &Arc<Origins>,
) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    let origins = Arc::clone(origins);
    warp::header::headers_cloned()
        .and_then(move |headers: HeaderMap| {
            let origins = Arc::clone(&origins);
            async move { origins.check(&headers).map_err(warp::reject::custom) }
        })
        .untuple_one()
}

/// CORS preflight (`OPTIONS` on any path): allowed for listed origins only.
fn preflight(
    origins: &Arc<Origins>,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let origins = Arc::clone(origins);
    // Not `warp::options()`: its 405 for every other method would outrank the 404 of unknown
    // paths.
    warp::method()
        .and_then(|method: Method| async move {
            if method == Method::OPTIONS {
                Ok(())
            } else {
                Err(warp::reject::not_found())
            }
        })
        .untuple_one()
        .and(warp::header::headers_cloned())
        .and_then(move |headers: HeaderMap| {
            let origins = Arc::clone(&origins);
            async move {
                let allow = origins.allow_header(&headers).ok_or_else(|| {
                    let origin = headers
                        .get("origin")
                        .and_then(|o| o.to_str().ok())
                        .unwrap_or("(none)");
                    warp::reject::custom(ApiError::ForbiddenOrigin(
                        crowdpulse_dataflow::error::excerpt(origin),
                    ))
                })?;
                let mut response = StatusCode::NO_CONTENT.into_response();
                let headers = response.headers_mut();
                headers.insert("access-control-allow-origin", allow);
                headers.insert(
                    "access-control-allow-methods",
                    HeaderValue::from_static(ALLOWED_METHODS),
                );
                headers.insert(
                    "access-control-allow-headers",
                    HeaderValue::from_static(ALLOWED_HEADERS),
                );
                headers.insert("access-control-max-age", HeaderValue::from_static("600"));
                headers.insert("vary", HeaderValue::from_static("origin"));
                Ok::<_, Rejection>(response)
            }
        })
}

/// A stream or kind id from the path, refused (400) beyond `pipeline.limits.id_bytes` or with a
/// NUL character: no event can carry such an id (and Postgres, asked for its history, would fail
/// the query as if it were down), and following it would hold a stream view for nothing.
fn path_id(
    max_bytes: usize,
) -> impl Fn(StreamId) -> std::future::Ready<Result<String, Rejection>> + Clone {
    move |StreamId(id)| {
        std::future::ready(if id.len() > max_bytes {
            Err(warp::reject::custom(ApiError::BadRequest(format!(
                "an id of {} bytes: events carry at most {max_bytes}",
                id.len()
            ))))
        } else if id.contains('\0') {
            Err(warp::reject::custom(ApiError::BadRequest(
                "an id with a NUL character: events carry none".into(),
            )))
        } else {
            Ok(id)
        })
    }
}

/// Window query parameters.
fn window_query() -> impl Filter<Extract = (WindowQuery,), Error = Rejection> + Clone {
    warp::query::<WindowQuery>()
}

/// Every route, with rejections recovered into JSON errors and requests counted.
pub fn routes(state: AppState) -> impl Filter<Extract = (impl Reply,), Error = Infallible> + Clone {
    let limit = state.settings.max_body_bytes;
    let limits = state.settings.limits.clone();
    let body_counters = Arc::clone(&state.http);
    let live_slot = live_client_slot(&state);
    let http = state.http.clone();
    let errors = Arc::clone(&state.http);
    let id_bytes = state.ingest.field_limits().id_bytes;
    let access = Arc::clone(&state.access);
    let origins = Arc::clone(&state.origins);
    // What every write route asks: a POST with a write token from an allowed origin...
    let may_write = || {
        warp::post()
            .and(authorized(&access, Scope::Write))
            .and(same_or_listed_origin(&origins))
    };
    // ...then gives its content type and its body, within the limits (read only once the path's
    // id, if any, passed).
    let write_body = || {
        warp::header::optional::<String>("content-type").and(limited_body(
            limit,
            limits.body_timeout.duration(),
            Arc::clone(&body_counters),
        ))
    };
    let state = with_state(state);
    let read = || authorized(&access, Scope::Read);
    let admin = || authorized(&access, Scope::Admin);

    let health = warp::path!("health")
        .and(warp::get())
        .and(state.clone())
        .and_then(handlers::health);
    let ready = warp::path!("ready")
        .and(warp::get())
        .and(state.clone())
        .and_then(handlers::ready);
    let metrics = warp::path!("metrics")
        .and(warp::get())
        .and(admin())
        .and(state.clone())
        .and_then(handlers::metrics);
    let openapi = warp::path!("openapi.json")
        .and(warp::get())
        .and_then(handlers::openapi);
    let ops = health
        .or(ready)
        .unify()
        .or(metrics)
        .unify()
        .or(openapi)
        .unify()
        .boxed();

    let streams = warp::path!("v1" / "streams")
        .and(warp::get())
        .and(read())
        .and(warp::query::<StreamsQuery>())
        .and(state.clone())
        .and_then(handlers::list_streams);
    let stream = warp::path!("v1" / "streams" / StreamId)
        .and(warp::get())
        .and(read())
        .and_then(path_id(id_bytes))
        .and(state.clone())
        .and_then(handlers::get_stream);
    let metrics_rows = warp::path!("v1" / "streams" / StreamId / "metrics")
        .and(warp::get())
        .and(read())
        .and_then(path_id(id_bytes))
        .and(window_query())
        .and(state.clone())
        .and_then(handlers::stream_metrics);
    let top = warp::path!("v1" / "streams" / StreamId / "emojis" / "top")
        .and(warp::get())
        .and(read())
        .and_then(path_id(id_bytes))
        .and(window_query())
        .and(state.clone())
        .and_then(handlers::stream_top_emojis);
    let viewers = warp::path!("v1" / "streams" / StreamId / "viewers")
        .and(warp::get())
        .and(read())
        .and_then(path_id(id_bytes))
        .and(window_query())
        .and(state.clone())
        .and_then(handlers::stream_viewers);
    let sentiment = warp::path!("v1" / "streams" / StreamId / "sentiment")
        .and(warp::get())
        .and(read())
        .and_then(path_id(id_bytes))
        .and(window_query())
        .and(state.clone())
        .and_then(handlers::stream_sentiment);
    let categories = warp::path!("v1" / "streams" / StreamId / "categories")
        .and(warp::get())
        .and(read())
        .and_then(path_id(id_bytes))
        .and(window_query())
        .and(state.clone())
        .and_then(handlers::stream_categories);
    let chat = warp::path!("v1" / "streams" / StreamId / "chat")
        .and(warp::get())
        .and(read())
        .and_then(path_id(id_bytes))
        .and(warp::query::<ChatQuery>())
        .and(state.clone())
        .and_then(handlers::stream_chat);
    let summary = warp::path!("v1" / "streams" / StreamId / "summary")
        .and(warp::get())
        .and(read())
        .and_then(path_id(id_bytes))
        .and(warp::query::<SummaryQuery>())
        .and(state.clone())
        .and_then(handlers::stream_summary);
    let moments = warp::path!("v1" / "streams" / StreamId / "moments")
        .and(warp::get())
        .and(read())
        .and_then(path_id(id_bytes))
        .and(state.clone())
        .and_then(handlers::stream_moments);
    let statistics = warp::path!("v1" / "statistics")
        .and(warp::get())
        .and(read())
        .and(state.clone())
        .and_then(handlers::statistics);
    let kinds = warp::path!("v1" / "kinds")
        .and(warp::get())
        .and(read())
        .and(state.clone())
        .and_then(kinds::list_kinds);
    let kind_metrics = warp::path!("v1" / "kinds" / StreamId / "metrics")
        .map(|StreamId(kind)| kind)
        .and(warp::get())
        .and(read())
        .and(warp::query::<HashMap<String, String>>())
        .and(state.clone())
        .and_then(kinds::kind_metrics);
    let kind_alerts = warp::path!("v1" / "kinds" / StreamId / "alerts")
        .map(|StreamId(kind)| kind)
        .and(warp::get())
        .and(read())
        .and(warp::query::<HashMap<String, String>>())
        .and(state.clone())
        .and_then(kinds::kind_alerts);
    let clients = warp::path!("v1" / "clients")
        .and(warp::get())
        .and(admin())
        .and(state.clone())
        .and_then(handlers::clients);
    let reads = streams
        .or(stream)
        .unify()
        .or(metrics_rows)
        .unify()
        .or(top)
        .unify()
        .or(viewers)
        .unify()
        .or(sentiment)
        .unify()
        .or(categories)
        .unify()
        .or(chat)
        .unify()
        .or(summary)
        .unify()
        .or(moments)
        .unify()
        .or(statistics)
        .unify()
        .or(clients)
        .unify()
        .or(kinds)
        .unify()
        .or(kind_metrics)
        .unify()
        .or(kind_alerts)
        .unify()
        .boxed();

    let ingest = warp::path!("v1" / "events")
        .and(may_write())
        .and(write_body())
        .and(state.clone())
        .and_then(handlers::ingest_events);
    let kind_records = warp::path!("v1" / "kinds" / StreamId / "records")
        .map(|StreamId(kind)| kind)
        .and(may_write())
        .and(write_body())
        .and(state.clone())
        .and_then(handlers::ingest_kind);
    let reaction = warp::path!("v1" / "streams" / StreamId / "reactions")
        .and(may_write())
        .and_then(path_id(id_bytes))
        .and(write_body())
        .and(state.clone())
        .and_then(
            |id: String, content_type: Option<String>, body: Bytes, state: AppState| async move {
                // Required, not assumed: a cross-site form or `text/plain` post is a "simple"
                // request that browsers send without asking first.
                let format = handlers::BodyFormat::from_content_type(content_type.as_deref());
                if !matches!(format, Ok(handlers::BodyFormat::JsonArray)) {
                    return Err(warp::reject::custom(ApiError::UnsupportedMediaType(
                        "reactions are posted as application/json".into(),
                    )));
                }
                let request: ReactionRequest = serde_json::from_slice(&body).map_err(|e| {
                    warp::reject::custom(ApiError::BadRequest(format!("reaction body: {e}")))
                })?;
                handlers::post_reaction(id, request, state).await
            },
        );
    let writes = ingest.or(reaction).unify().or(kind_records).unify().boxed();

    let max_message = limits.max_websocket_message_bytes;
    let silence = limits.websocket_silence.duration();
    let websocket = warp::path!("v1" / "streams" / StreamId / "live")
        .and(warp::get())
        .and(authorized_push(&access))
        .and(same_or_listed_origin(&origins))
        .and_then(path_id(id_bytes))
        .and(warp::ws())
        .and(live_slot.clone())
        .and(state.clone())
        .map(
            move |id: String, ws: warp::ws::Ws, slot: Slot, state: AppState| {
                ws.max_message_size(max_message)
                    .max_frame_size(max_message)
                    .on_upgrade(move |socket| {
                        serve_websocket(socket, state.store, slot, (state.http, silence), id)
                    })
                    .into_response()
            },
        );
    let sse = warp::path!("v1" / "streams" / StreamId / "events")
        .and(warp::get())
        .and(authorized_push(&access))
        .and_then(path_id(id_bytes))
        .and(live_slot)
        .and(state.clone())
        .map(|id: String, slot: Slot, state: AppState| {
            let events = sse_events(state.store, slot, id);
            warp::sse::reply(warp::sse::keep_alive().stream(events)).into_response()
        });
    let push = websocket.or(sse).unify().boxed();

    let cors = Arc::clone(&origins);
    let hosts = Arc::clone(&origins);
    let known_host = warp::header::headers_cloned()
        .and_then(move |headers: HeaderMap| {
            let hosts = Arc::clone(&hosts);
            async move { hosts.check_host(&headers).map_err(warp::reject::custom) }
        })
        .untuple_one();
    let api = preflight(&origins)
        .or(ops)
        .unify()
        .or(reads)
        .unify()
        .or(writes)
        .unify()
        .or(push)
        .unify()
        .or(crate::dashboard::routes())
        .unify();
    known_host
        .and(api)
        .recover(recover)
        .unify()
        .and(warp::header::headers_cloned())
        .map(move |mut response: Response, request: HeaderMap| {
            if let Some(ErrorCode(code)) = response.extensions().get() {
                errors.record_error(code);
            }
            let headers = response.headers_mut();
            // Lets listed sites read answers; a browser hides them from any other site.
            if let Some(allow) = cors.allow_header(&request) {
                headers.insert("access-control-allow-origin", allow);
                headers.insert(
                    "access-control-expose-headers",
                    HeaderValue::from_static("retry-after"),
                );
            }
            // Caches must not hand one site's answer (with or without CORS) to another.
            if cors.any_listed() {
                headers.append("vary", HeaderValue::from_static("origin"));
            }
            response
        })
        .with(warp::log::custom(move |info| {
            http.record(info.path(), info.status().as_u16(), info.elapsed())
        }))
}

/// Longest error message answered, in bytes. Ours quote at most an excerpt of the input, but
/// serde's and warp's may quote what the client sent at any length.
const MAX_ERROR_MESSAGE_BYTES: usize = 256;

/// The error code of a JSON error answer, for `/metrics` to count once the answer is made.
#[derive(Debug, Clone, Copy)]
struct ErrorCode(&'static str);

fn error_response(status: StatusCode, code: &'static str, mut message: String) -> Response {
    if message.len() > MAX_ERROR_MESSAGE_BYTES {
        message.truncate(message.floor_char_boundary(MAX_ERROR_MESSAGE_BYTES));
        message.push('…');
    }
    let body = ErrorBody {
        error: ErrorDetail {
            code: code.to_owned(),
            message,
        },
    };
    let mut response = warp::reply::with_status(warp::reply::json(&body), status).into_response();
    response.extensions_mut().insert(ErrorCode(code));
    response
}

/// Maps every rejection to `{"error": {"code", "message"}}` with its status.
pub async fn recover(rejection: Rejection) -> Result<Response, Infallible> {
    if let Some(error) = rejection.find::<ApiError>() {
        let mut response = error_response(error.status(), error.code(), error.to_string());
        if let ApiError::Busy { retry_after } = error {
            if let Ok(value) = retry_after.to_string().parse() {
                response.headers_mut().insert("retry-after", value);
            }
        }
        if let ApiError::Unauthorized { invalid_token } = error {
            let challenge = if *invalid_token {
                r#"Bearer realm="crowdpulse", error="invalid_token""#
            } else {
                r#"Bearer realm="crowdpulse""#
            };
            response
                .headers_mut()
                .insert("www-authenticate", HeaderValue::from_static(challenge));
        }
        return Ok(response);
    }
    let (status, code, message) = if rejection.is_not_found() {
        (
            StatusCode::NOT_FOUND,
            "not_found",
            "no such route".to_owned(),
        )
    } else if rejection.find::<MethodNotAllowed>().is_some() {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "method not allowed on this route".to_owned(),
        )
    } else if rejection.find::<PayloadTooLarge>().is_some() {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "body too large".to_owned(),
        )
    } else if rejection.find::<UnsupportedMediaType>().is_some() {
        (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "content type not accepted".to_owned(),
        )
    } else if let Some(e) = rejection.find::<InvalidQuery>() {
        (
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("{e}: expected window, from, to, limit"),
        )
    } else if let Some(e) = rejection.find::<BodyDeserializeError>() {
        (StatusCode::BAD_REQUEST, "bad_request", e.to_string())
    } else if let Some(e) = rejection.find::<InvalidHeader>() {
        (StatusCode::BAD_REQUEST, "bad_request", e.to_string())
    } else if let Some(e) = rejection.find::<MissingHeader>() {
        (StatusCode::BAD_REQUEST, "bad_request", e.to_string())
    } else if rejection.find::<LengthRequired>().is_some() {
        (
            StatusCode::LENGTH_REQUIRED,
            "length_required",
            "a content-length header is required".to_owned(),
        )
    } else {
        // Remaining warp rejections concern WebSocket upgrades and headers: the client's fault.
        (
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("{rejection:?}"),
        )
    };
    Ok(error_response(status, code, message))
}
