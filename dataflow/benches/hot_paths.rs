//! Per-record costs of the hot paths: decoding, sentiment scoring and window analytics; the
//! cost of an advance when many streams have gone idle; one chat summary, from scratch and as
//! the analytics make it.
//! Run with `cargo bench -p crowdpulse-dataflow --bench hot_paths`.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use crowdpulse_dataflow::analytics::{Delta, Engine, PaneAggregator};
use crowdpulse_dataflow::category::Category;
use crowdpulse_dataflow::codec::{decode_json, DecodeContext};
use crowdpulse_dataflow::config::PipelineConfig;
use crowdpulse_dataflow::event::Event;
use crowdpulse_dataflow::plan::Plan;
use crowdpulse_dataflow::rows::ChatMessage;
use crowdpulse_dataflow::sentiment::{Analyzer, Lexicons};
use crowdpulse_dataflow::summary::{summarize, ChatLine, SummaryWindow};

const T0: u64 = 1_767_225_600_000;

fn sample_lines(n: usize) -> Vec<String> {
    let texts = [
        "PogChamp what a play",
        "this is so boring ResidentSleeper",
        "LUL",
        "gg",
        "I love this stream 😂",
    ];
    let emojis = ["😂", "🔥", "❤️", "👏"];
    (0..n)
        .map(|i| {
            let ts = T0 + i as u64;
            let stream = format!("stream-{}", i % 20);
            match i % 10 {
                0..=4 => format!(r#"{{"type":"chat","stream_id":"{stream}","user_id":"user-{}","ts":{ts},"text":"{}"}}"#, i % 5000, texts[i % texts.len()]),
                5..=7 => format!(r#"{{"type":"reaction","stream_id":"{stream}","user_id":"user-{}","ts":{ts},"emoji":"{}"}}"#, i % 5000, emojis[i % emojis.len()]),
                8 => format!(r#"{{"type":"viewer","stream_id":"{stream}","user_id":"viewer-{}","ts":{ts},"action":"join"}}"#, i % 3000),
                _ => format!(r#"{{"type":"transaction","stream_id":"{stream}","user_id":"user-{}","ts":{ts},"kind":"bits","amount":5,"currency":"BITS"}}"#, i % 5000),
            }
        })
        .collect()
}

fn hot_paths(c: &mut Criterion) {
    let lines = sample_lines(10_000);
    let events: Vec<Event> = lines
        .iter()
        .map(|l| decode_json(l.as_bytes(), &DecodeContext::default()).unwrap())
        .collect();
    let analyzer = Arc::new(Analyzer::new(Lexicons::builtin()));

    let mut group = c.benchmark_group("per_record");
    group.throughput(Throughput::Elements(lines.len() as u64));
    group.bench_function("decode_json", |b| {
        b.iter(|| {
            for line in &lines {
                black_box(decode_json(line.as_bytes(), &DecodeContext::default()).ok());
            }
        })
    });
    group.finish();
    let mut group = c.benchmark_group("per_text");
    group.throughput(Throughput::Elements(3));
    group.bench_function("sentiment_uncached", |b| {
        b.iter(|| {
            for text in [
                "PogChamp what a play",
                "this is so boring ResidentSleeper",
                "I love this stream 😂",
            ] {
                black_box(analyzer.polarity_scores(text));
            }
        })
    });
    group.finish();
    let mut group = c.benchmark_group("per_record");
    group.throughput(Throughput::Elements(events.len() as u64));
    group.bench_function("aggregate_apply_and_advance", |b| {
        b.iter(|| {
            let mut aggregator = PaneAggregator::new(10_000, Arc::clone(&analyzer));
            let mut engine = Engine::new(&Plan::new(PipelineConfig::default()).unwrap());
            let mut out = Vec::new();
            for (i, chunk) in events.chunks(1_000).enumerate() {
                for event in chunk {
                    aggregator.add(event.clone(), event.ts, None);
                }
                for (_, delta) in aggregator.drain() {
                    engine.apply(Delta::Stream(delta));
                }
                engine.advance(Some(T0 + (i as u64 + 1) * 1_000), &mut out);
                out.clear();
            }
            engine.advance(None, &mut out);
            black_box(out.len())
        })
    });
    group.finish();
    let mut group = c.benchmark_group("per_advance");
    group.sample_size(10);
    group.bench_function("100k_streams_idle_for_an_hour", |b| {
        let mut engine = Engine::new(&Plan::new(PipelineConfig::default()).unwrap());
        let mut aggregator = PaneAggregator::new(10_000, Arc::clone(&analyzer));
        for i in 0..100_000u64 {
            let line = format!(
                r#"{{"type":"reaction","stream_id":"s{i}","user_id":"u","emoji":"🔥","ts":{}}}"#,
                T0 + i
            );
            let event = decode_json(line.as_bytes(), &DecodeContext::default()).unwrap();
            aggregator.add(event, T0 + i, None);
        }
        for (_, delta) in aggregator.drain() {
            engine.apply(Delta::Stream(delta));
        }
        let mut out = Vec::new();
        let mut frontier = T0 + 100_000;
        while frontier < T0 + 3_600_000 {
            frontier += 10_000;
            engine.advance(Some(frontier), &mut out);
            out.clear();
        }
        b.iter(|| {
            frontier += 100;
            engine.advance(Some(frontier), &mut out);
            black_box(out.len())
        })
    });
    group.finish();
}

/// `count` chat messages in the shape `generate` writes chat: a few phrases and emotes drawn from
/// short lists, so phrases repeat across messages; with `topics`, each also names one of that
/// many topics in turn, so phrases leave a sliding window and new ones come.
fn chat_lines(analyzer: &Analyzer, count: u64, topics: Option<u64>) -> Vec<ChatLine> {
    let phrases = [
        "what a play",
        "this is amazing",
        "no way",
        "I love this stream",
        "worst call ever",
        "clip it",
        "first time here",
        "why would you do that",
        "bad luck",
        "nice one",
    ];
    let emotes = ["PogChamp", "LUL", "KEKW", "Sadge", "🔥", "😂"];
    (0..count)
        .map(|i| {
            let n = i as usize;
            let mut text = format!(
                "{} {} {}",
                phrases[n * 7 % phrases.len()],
                emotes[n % emotes.len()],
                phrases[n * 3 % phrases.len()]
            );
            if let Some(topics) = topics {
                text.push_str(&format!(" about topic{}", i % topics));
            }
            let message = ChatMessage {
                stream_id: "stream-1".into(),
                ts: T0 + i,
                source: Arc::from("events"),
                partition: 0,
                offset: i,
                user_id: format!("user-{}", i * 37 % 1000),
                text,
                sentiment: 0,
                category: Category::Other,
            };
            let found = analyzer.emotes(&message.text);
            ChatLine::new(message, found)
        })
        .collect()
}

fn summaries(c: &mut Criterion) {
    let analyzer = Analyzer::new(Lexicons::builtin());
    // The window of one summary (the default 100 messages).
    let lines = chat_lines(&analyzer, 100, None);
    let mut group = c.benchmark_group("per_summary");
    group.throughput(Throughput::Elements(1));
    group.bench_function("summarize_100_messages", |b| {
        b.iter(|| black_box(summarize("stream-1", 1, black_box(&lines))))
    });
    // What the analytics do per summary with the default settings: 20 messages in, the 20
    // oldest out, then a summary of the 100 held; as the window slides, topics leave it and
    // come back, so phrases are numbered and their numbers freed all along.
    let stream = chat_lines(&analyzer, 1_000, Some(97));
    let mut window = SummaryWindow::default();
    for line in &stream[..100] {
        window.push_back(line.clone());
    }
    let mut next = stream.iter().cycle().skip(100);
    group.bench_function("slide_20_and_summarize_100_messages", |b| {
        b.iter(|| {
            for line in next.by_ref().take(20) {
                window.push_back(line.clone());
                window.pop_front();
            }
            black_box(window.summarize("stream-1", 1))
        })
    });
    group.throughput(Throughput::Elements(lines.len() as u64));
    group.bench_function("chat_lines_of_100_messages", |b| {
        b.iter_batched(
            || {
                lines
                    .iter()
                    .map(|l| ((*l.message).clone(), l.features.emotes.clone()))
                    .collect::<Vec<_>>()
            },
            |messages| {
                for (message, emotes) in messages {
                    black_box(ChatLine::new(message, emotes));
                }
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, hot_paths, summaries);
criterion_main!(benches);
