//! The summarizer against a local chat-completions server: texts made once, stored in Postgres
//! and reused by a replay; failures, timeouts and unusable answers leave summaries extractive.

mod support;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crowdpulse_api::history::History;
use crowdpulse_connectors::postgres::{apply_migrations, PostgresSink};
use crowdpulse_connectors::sink::{Flush, Sink};
use crowdpulse_connectors::summarizer::{
    SummarizerConfig, SummarizerMetrics, SummaryTextListener, SummaryTexts,
};
use crowdpulse_dataflow::config::Span;
use crowdpulse_dataflow::rows::Row;
use crowdpulse_dataflow::summary::{ChatSummary, Quote};
use support::completions::{serve, text_for, Answer};
use support::postgres::{fresh_config, Db};

/// Summary `seq` of `stream`, about `phrase`, ending at message `offset`.
fn summary(stream: &str, seq: u64, phrase: &str, offset: u64) -> ChatSummary {
    ChatSummary {
        stream_id: stream.into(),
        seq,
        messages: 20,
        first_ts: 1_000,
        last_ts: 1_000 + offset,
        last_source: "events".into(),
        last_partition: 1,
        last_offset: offset,
        key_phrases: vec![(phrase.into(), 12), ("stream".into(), 3)],
        representative: vec![Quote {
            text: format!("the {phrase} was great"),
            ts: 1_000 + offset,
            user_id: "u1".into(),
        }],
        sentiment: 4_000,
        categories: [2, 1, 0, 3, 14],
        top_emotes: vec![("PogChamp".into(), 9)],
    }
}

fn flush_of(summaries: &[ChatSummary]) -> Arc<Flush> {
    Arc::new(Flush {
        frontier: None,
        updates: summaries
            .iter()
            .map(|s| (Row::ChatSummary(Box::new(s.clone())), s.last_ts, 1))
            .collect(),
        ..Flush::default()
    })
}

/// Remembers the texts told.
#[derive(Default)]
struct Told(Mutex<Vec<(u64, String)>>);

impl SummaryTextListener for Told {
    fn summary_text(&self, summary: &ChatSummary, text: &str) {
        self.0.lock().unwrap().push((summary.seq, text.to_owned()));
    }
}

impl Told {
    fn sorted(&self) -> Vec<(u64, String)> {
        let mut told = self.0.lock().unwrap().clone();
        told.sort();
        told
    }
}

fn config(url: &str) -> SummarizerConfig {
    SummarizerConfig {
        url: url.into(),
        model: "tiny-model".into(),
        api_key: Some("sk-test-key".into()),
        timeout: Span(300),
        ..SummarizerConfig::default()
    }
}

/// Runs the summarizer over `summaries` to its end; returns what it told and its counters.
fn summarize_all(
    config: &SummarizerConfig,
    postgres: Option<&crowdpulse_connectors::postgres::PostgresConfig>,
    summaries: &[ChatSummary],
) -> (Vec<(u64, String)>, Arc<SummarizerMetrics>) {
    let texts = SummaryTexts::start(config, postgres).unwrap();
    let told = Arc::new(Told::default());
    texts.listen(Arc::clone(&told) as Arc<dyn SummaryTextListener>);
    texts.flush(&flush_of(summaries));
    texts.finish().unwrap();
    (told.sorted(), texts.metrics())
}

fn counts(metrics: &SummarizerMetrics) -> [u64; 6] {
    [
        &metrics.made,
        &metrics.reused,
        &metrics.timeouts,
        &metrics.failures,
        &metrics.skipped,
        &metrics.unsaved,
    ]
    .map(|c| c.load(Ordering::Relaxed))
}

/// Rate limits and overloaded servers answer "try again": the request is repeated after the
/// answer's `Retry-After` (else 0.5 s doubling), at most `retries` times, never for a wait
/// longer than a request's timeout, and never for an answer that says the request is wrong.
#[test]
fn try_again_answers_are_retried_after_the_wait_they_ask_for() {
    let summaries = [summary("talky", 1, "goal", 20)];
    let text = vec![(1, "talky talks about goal".to_owned())];
    let config = |url: &str| SummarizerConfig {
        timeout: Span(2_000),
        ..config(url)
    };
    let busy = |status, times, retry_after| Answer::Busy {
        status,
        times,
        retry_after,
    };
    // (answer, told, counts, requests, retries, least wait)
    let cases = [
        // Retry-After: 1 is honoured (the backoff alone would wait 0.5 s).
        (
            busy(429, 1, Some(1)),
            text.clone(),
            [1, 0, 0, 0, 0, 0],
            2,
            1,
            1_000,
        ),
        // Without it, 0.5 s then 1 s.
        (
            busy(503, 2, None),
            text.clone(),
            [1, 0, 0, 0, 0, 0],
            3,
            2,
            1_500,
        ),
        // Still busy after the default 2 retries: failed, extractive.
        (busy(502, 5, None), vec![], [0, 0, 0, 1, 0, 0], 3, 2, 1_500),
        // A wait beyond the request timeout (2 s) is not made, nor one reaching past the run's
        // deadline (its end, here at once, plus the timeout), nor one of an unreadable date.
        (busy(429, 1, Some(5)), vec![], [0, 0, 0, 1, 0, 0], 1, 0, 0),
        (busy(429, 1, Some(2)), vec![], [0, 0, 0, 1, 0, 0], 1, 0, 0),
        // Not "try again" answers.
        (busy(400, 1, Some(1)), vec![], [0, 0, 0, 1, 0, 0], 1, 0, 0),
        (busy(501, 1, Some(1)), vec![], [0, 0, 0, 1, 0, 0], 1, 0, 0),
    ];
    for (answer, told_expected, counts_expected, requests, retries, least_wait) in cases {
        let server = serve(answer);
        let started = Instant::now();
        let (told, metrics) = summarize_all(&config(&server.url), None, &summaries);
        let waited = started.elapsed();
        assert_eq!(told, told_expected, "{answer:?}");
        assert_eq!(counts(&metrics), counts_expected, "{answer:?}");
        assert_eq!(server.requests().len(), requests, "{answer:?}");
        assert_eq!(
            metrics.retries.load(Ordering::Relaxed),
            retries,
            "{answer:?}"
        );
        // Each wait made is at least the one asked for; none is made without a retry.
        let most_wait = if retries == 0 { 1_000 } else { u64::MAX };
        assert!(
            (least_wait..most_wait).contains(&(waited.as_millis() as u64)),
            "{answer:?}: done after {waited:?}"
        );
    }
    // With retries = 0, a busy endpoint is asked once.
    let server = serve(busy(429, 1, Some(1)));
    let no_retries = SummarizerConfig {
        retries: 0,
        ..config(&server.url)
    };
    let (told, metrics) = summarize_all(&no_retries, None, &summaries);
    assert_eq!((told, counts(&metrics)), (vec![], [0, 0, 0, 1, 0, 0]));
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn texts_are_made_once_stored_and_reused_by_a_replay() {
    let server = serve(Answer::Text);
    let postgres = fresh_config("summary_texts");
    apply_migrations(&postgres).unwrap();
    let summaries = [
        summary("talky", 1, "goal", 20),
        summary("talky", 2, "penalty", 40),
        summary("quiet", 1, "music", 20),
    ];
    let expected = vec![
        (1, "quiet talks about music".to_owned()),
        (1, "talky talks about goal".to_owned()),
        (2, "talky talks about penalty".to_owned()),
    ];

    let (told, metrics) = summarize_all(&config(&server.url), Some(&postgres), &summaries);
    assert_eq!(told, expected);
    assert_eq!(counts(&metrics), [3, 0, 0, 0, 0, 0]);
    let requests = server.requests();
    assert_eq!(requests.len(), 3);
    for request in &requests {
        assert_eq!(request.authorization.as_deref(), Some("Bearer sk-test-key"));
        assert_eq!(request.body["model"], "tiny-model");
        assert_eq!(request.body["messages"][0]["role"], "system");
        let prompt = request.body["messages"][1]["content"].as_str().unwrap();
        assert!(prompt.contains("\"mostly\":\"other\""), "{prompt}");
        assert!(
            prompt.contains("PogChamp") && prompt.contains("was great"),
            "{prompt}"
        );
    }

    let db = Db::connect();
    let stored = db.column(&format!(
        "SELECT stream_id || '/' || last_offset || ' ' || model || ': ' || text \
         FROM \"{}\".chat_summary_texts ORDER BY 1",
        postgres.schema
    ));
    assert_eq!(
        stored,
        [
            "quiet/20 tiny-model: quiet talks about music",
            "talky/20 tiny-model: talky talks about goal",
            "talky/40 tiny-model: talky talks about penalty",
        ]
    );

    // A replay makes the same summaries: their texts are read back, nothing is asked.
    let (told, metrics) = summarize_all(&config(&server.url), Some(&postgres), &summaries);
    assert_eq!(told, expected);
    assert_eq!(counts(&metrics), [0, 3, 0, 0, 0, 0]);
    assert_eq!(server.requests().len(), 3);

    // The API's history serves each summary with its text.
    let sink = PostgresSink::start(&postgres, Duration::from_millis(10)).unwrap();
    sink.flush(&flush_of(&summaries));
    sink.finish().unwrap();
    let history = History::new(&postgres).unwrap();
    let served = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(history.summaries("talky", 5))
        .unwrap();
    let texts: Vec<(u64, &str)> = served
        .iter()
        .map(|s| (s["seq"].as_u64().unwrap(), s["text"].as_str().unwrap()))
        .collect();
    assert_eq!(
        texts,
        [
            (2, "talky talks about penalty"),
            (1, "talky talks about goal")
        ]
    );
}

#[test]
fn failed_slow_and_unusable_answers_leave_summaries_extractive() {
    let summaries = [summary("talky", 1, "goal", 20)];
    for (answer, expected) in [
        (Answer::Status(500), [0, 0, 0, 1, 0, 0]),
        (Answer::Status(401), [0, 0, 0, 1, 0, 0]),
        (Answer::Garbage, [0, 0, 0, 1, 0, 0]),
        (Answer::Slow(Duration::from_secs(3)), [0, 0, 1, 0, 0, 0]),
    ] {
        let server = serve(answer);
        let started = Instant::now();
        // Retries of a 500 are the test above's.
        let config = SummarizerConfig {
            retries: 0,
            ..config(&server.url)
        };
        let (told, metrics) = summarize_all(&config, None, &summaries);
        assert!(told.is_empty(), "{answer:?}: {told:?}");
        assert_eq!(counts(&metrics), expected, "{answer:?}");
        assert_eq!(server.requests().len(), 1, "{answer:?}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{answer:?}: the run waited {:?} for the endpoint",
            started.elapsed()
        );
    }
    // Nothing listening: a connection error, the same way.
    let (told, metrics) = summarize_all(&config("http://127.0.0.1:9/v1"), None, &summaries);
    assert_eq!((told, counts(&metrics)), (vec![], [0, 0, 0, 1, 0, 0]));
}

#[test]
fn a_slow_endpoint_holds_at_most_the_queue_and_concurrency_it_is_given() {
    let server = serve(Answer::Slow(Duration::from_millis(200)));
    let config = SummarizerConfig {
        timeout: Span(1_000),
        max_concurrency: 1,
        queue: 2,
        ..config(&server.url)
    };
    let summaries: Vec<ChatSummary> = (1..=6)
        .map(|seq| summary("talky", seq, &format!("topic{seq}"), seq * 20))
        .collect();
    let (told, metrics) = summarize_all(&config, None, &summaries);
    let [made, .., skipped, _] = counts(&metrics);
    // Two wait in the queue, one more waits for the slot the first holds (when the worker took
    // them off yet): the others find the queue full.
    assert!(
        (2..=4).contains(&made) && made + skipped == 6,
        "{:?}",
        counts(&metrics)
    );
    assert_eq!(told.len() as u64, made);
    assert_eq!(
        told[0],
        (1, text_for(&server.requests()[0].body)),
        "the first is answered"
    );
}

/// A run that stops while Postgres does not answer (its network cut) ends within a few request
/// timeouts: each lookup of a stored text waited for Postgres' 10 s connect timeout, one at a
/// time, for every queued summary.
#[test]
fn a_stopping_run_does_not_wait_for_a_silent_database() {
    // Both accept connections (the kernel's backlog) and never answer.
    let silent_database = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_endpoint = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let postgres = crowdpulse_connectors::postgres::PostgresConfig {
        url: format!(
            "postgresql://crowdpulse@{}/db",
            silent_database.local_addr().unwrap()
        ),
        ..crowdpulse_connectors::postgres::PostgresConfig::default()
    };
    let endpoint = format!("http://{}/v1", silent_endpoint.local_addr().unwrap());
    let summaries: Vec<ChatSummary> = (1..=12)
        .map(|seq| summary("talky", seq, "goal", seq * 20))
        .collect();
    let started = Instant::now();
    let (told, metrics) = summarize_all(&config(&endpoint), Some(&postgres), &summaries);
    assert!(told.is_empty());
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the stop waited {:?}",
        started.elapsed()
    );
    let [made, reused, .., skipped, _] = counts(&metrics);
    assert_eq!((made, reused), (0, 0));
    assert!(skipped > 0, "{:?}", counts(&metrics));
}

/// A text with control characters is stored without them (Postgres refuses a NUL: such a text
/// was shown live, counted unsaved, and asked for again by every replay), line breaks kept; an
/// answer of nothing else is unusable.
#[test]
fn control_characters_are_dropped_from_a_text_before_it_is_stored() {
    let server = serve(Answer::Content("Big\u{0}\u{7} goal\nthen a\tsave\u{1b}"));
    let postgres = fresh_config("summary_controls");
    apply_migrations(&postgres).unwrap();
    let summaries = [summary("talky", 1, "goal", 20)];
    let (told, metrics) = summarize_all(&config(&server.url), Some(&postgres), &summaries);
    assert_eq!(told, [(1, "Big goal\nthen a save".to_owned())]);
    assert_eq!(counts(&metrics), [1, 0, 0, 0, 0, 0]);
    let db = Db::connect();
    let stored = db.column(&format!(
        "SELECT text FROM \"{}\".chat_summary_texts",
        postgres.schema
    ));
    assert_eq!(stored, ["Big goal\nthen a save"]);
    let server = serve(Answer::Content("\u{0}\u{7}"));
    let (told, metrics) = summarize_all(&config(&server.url), None, &summaries);
    assert!(told.is_empty());
    assert_eq!(counts(&metrics), [0, 0, 0, 1, 0, 0]);
}
