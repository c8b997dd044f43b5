//! Live rows: after every advance, the net collection of window rows (live and final) equals the
//! reference computed from the events applied so far. Checks the early results a dashboard sees,
//! not only the final ones.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crowdpulse_dataflow::analytics::{Delta, Engine, PaneAggregator};
use crowdpulse_dataflow::codec::{decode_json, DecodeContext};
use crowdpulse_dataflow::config::PipelineConfig;
use crowdpulse_dataflow::plan::Plan;
use crowdpulse_dataflow::reference::{reference_rows, ReferencePartition};
use crowdpulse_dataflow::rows::Row;
use crowdpulse_dataflow::sentiment::{Analyzer, Lexicons};
use proptest::prelude::*;
use serde_json::json;

const T0: u64 = 1_795_341_600_000;

/// Window-table rows without their `final` flag, as comparable JSON lines.
fn window_lines(rows: impl IntoIterator<Item = Row>) -> BTreeSet<String> {
    rows.into_iter()
        .filter(|row| row.table().starts_with("window_"))
        .map(|row| {
            let mut value: serde_json::Value = serde_json::from_str(&row.to_json_line()).unwrap();
            value.as_object_mut().unwrap().remove("final");
            value.to_string()
        })
        .collect()
}

/// (cursor step, how far behind the cursor the event is, body): disorder stays within the
/// allowed lateness, so no event lands in a final window.
fn event() -> impl Strategy<Value = (u64, u64, serde_json::Value)> {
    let user = (0..5u8).prop_map(|u| format!("u{u}"));
    let body = prop_oneof![
        (user.clone(), prop::sample::select(vec!["gg PogChamp", "so bad", "ok"]))
            .prop_map(|(u, t)| json!({"type": "chat", "user_id": u, "text": t})),
        (user.clone(), prop::sample::select(vec!["🔥", "😂", "👍"])).prop_map(|(u, e)| json!({"type": "reaction", "user_id": u, "emoji": e})),
        (user.clone(), prop::sample::select(vec!["join", "leave", "heartbeat"]))
            .prop_map(|(u, a)| json!({"type": "viewer", "user_id": u, "action": a})),
        (user, 1u32..500).prop_map(|(u, c)| json!({"type": "transaction", "user_id": u, "kind": "bits", "amount": f64::from(c), "currency": "BITS"})),
    ];
    let back = prop_oneof![3 => Just(0u64), 1 => 0u64..50_000];
    // Rare long gaps and a rare stream: streams go quiet and wake again.
    (
        prop_oneof![30 => 0u64..4_000, 1 => 240_000u64..900_000],
        back,
        prop_oneof![8 => Just("s0"), 1 => Just("s1")],
        body,
    )
        .prop_map(|(step, back, stream, mut body)| {
            body["stream_id"] = json!(stream);
            (step, back, body)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn live_window_rows_follow_the_events_applied(events in prop::collection::vec(event(), 1..150), chunk in 1usize..30) {
        let config = PipelineConfig::default();
        let analyzer = Arc::new(Analyzer::new(Lexicons::builtin()));
        let mut aggregator = PaneAggregator::new(10_000, Arc::clone(&analyzer));
        let mut engine = Engine::new(&Plan::new(config.clone()).unwrap());
        let mut net: BTreeMap<Row, isize> = BTreeMap::new();
        let mut payloads = Vec::new();
        let mut cursor = T0;
        let lag = config.max_out_of_orderness.0 + config.allowed_lateness.0;
        for batch in events.chunks(chunk) {
            for (step, back, body) in batch {
                cursor += step;
                let ts = cursor.saturating_sub(*back).max(T0);
                let mut body = body.clone();
                body["ts"] = json!(ts);
                let line = body.to_string().into_bytes();
                let decoded = decode_json(&line, &DecodeContext::default()).unwrap();
                aggregator.add(decoded, ts, None);
                payloads.push(line);
            }
            for (_, delta) in aggregator.drain() {
                engine.apply(Delta::Stream(delta));
            }
            // Windows ending before the cursor minus the lateness bound are final; no event is
            // older than that.
            let mut changes = Vec::new();
            engine.advance(Some(cursor.saturating_sub(lag)), &mut changes);
            for (row, diff) in changes {
                *net.entry(row).or_insert(0) += diff;
            }
            net.retain(|_, count| *count != 0);
            prop_assert!(net.values().all(|c| *c == 1), "a row is present more than once");
            let expected = reference_rows(
                &[ReferencePartition { source: "p".into(), partition: 0, payloads: payloads.clone() }],
                &config,
                &analyzer,
            )
            .unwrap();
            prop_assert_eq!(window_lines(net.keys().cloned()), window_lines(expected));
        }
    }
}
