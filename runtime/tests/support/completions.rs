//! A local OpenAI-compatible chat-completions server for the summarizer's tests: it answers as
//! told and records every request.

#![allow(dead_code)] // each test file uses its own subset

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use warp::http::StatusCode;
use warp::reply::{Reply, Response};
use warp::Filter;

/// How the server answers.
#[derive(Debug, Clone, Copy)]
pub enum Answer {
    /// A completion whose text names the prompt's stream and first key phrase.
    Text,
    /// A completion as `Text`, after this long.
    Slow(Duration),
    /// This status with an error body.
    Status(u16),
    /// 200 with a body that is no completion.
    Garbage,
    /// A completion of this text.
    Content(&'static str),
    /// `status` (with `Retry-After: retry_after` seconds when given) to the first `times`
    /// requests, then as `Text`.
    Busy {
        status: u16,
        times: usize,
        retry_after: Option<u64>,
    },
}

/// One request received.
#[derive(Debug, Clone)]
pub struct Request {
    /// Its `authorization` header.
    pub authorization: Option<String>,
    /// Its JSON body.
    pub body: Value,
}

/// A running server (it lives until the test process ends).
pub struct Completions {
    /// Base URL to configure (`/chat/completions` is appended by the client).
    pub url: String,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl Completions {
    /// The requests received so far.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

/// The text `Answer::Text` gives for a request body.
pub fn text_for(body: &Value) -> String {
    let prompt: Value =
        serde_json::from_str(body["messages"][1]["content"].as_str().unwrap_or("{}"))
            .unwrap_or_default();
    format!(
        "{} talks about {}",
        prompt["stream"].as_str().unwrap_or("?"),
        prompt["key_phrases"][0].as_str().unwrap_or("nothing")
    )
}

/// Starts a server answering `answer`.
pub fn serve(answer: Answer) -> Completions {
    let requests: Arc<Mutex<Vec<Request>>> = Arc::default();
    let recorded = Arc::clone(&requests);
    let busy_answers = Arc::new(AtomicUsize::new(0));
    let route = warp::post()
        .and(warp::path!("v1" / "chat" / "completions"))
        .and(warp::header::optional::<String>("authorization"))
        .and(warp::body::json())
        .then(move |authorization: Option<String>, body: Value| {
            let recorded = Arc::clone(&recorded);
            let busy_answers = Arc::clone(&busy_answers);
            async move {
                let text = text_for(&body);
                recorded.lock().unwrap().push(Request {
                    authorization,
                    body,
                });
                let completion = json!({"object": "chat.completion", "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                ]});
                let status = |code: u16| -> Response {
                    warp::reply::with_status(
                        warp::reply::json(&json!({"error": {"message": "overloaded"}})),
                        StatusCode::from_u16(code).unwrap(),
                    )
                    .into_response()
                };
                match answer {
                    Answer::Text => warp::reply::json(&completion).into_response(),
                    Answer::Slow(delay) => {
                        tokio::time::sleep(delay).await;
                        warp::reply::json(&completion).into_response()
                    }
                    Answer::Status(code) => status(code),
                    Answer::Garbage => warp::reply::json(&json!({"choices": []})).into_response(),
                    Answer::Content(content) => {
                        let completion = json!({"choices": [{"message": {"content": content}}]});
                        warp::reply::json(&completion).into_response()
                    }
                    Answer::Busy {
                        status: code,
                        times,
                        retry_after,
                    } => {
                        if busy_answers.fetch_add(1, Ordering::SeqCst) >= times {
                            return warp::reply::json(&completion).into_response();
                        }
                        let mut response = status(code);
                        if let Some(seconds) = retry_after {
                            response
                                .headers_mut()
                                .insert("retry-after", seconds.to_string().parse().unwrap());
                        }
                        response
                    }
                }
            }
        });
    let (sender, address) = std::sync::mpsc::channel::<SocketAddr>();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            sender.send(listener.local_addr().unwrap()).unwrap();
            warp::serve(route).incoming(listener).run().await;
        });
    });
    let address = address.recv().unwrap();
    Completions {
        url: format!("http://{address}/v1"),
        requests,
    }
}
