//! A worker's metadata lookup that the broker leaves unanswered (seen once under parallel tests:
//! 10 s of silence, which failed the run) is tried again on a fresh connection. The silence is
//! made by a proxy in front of the real broker (`scripts/kafka.sh`) that holds its first
//! connection open without ever forwarding it.

use std::io::copy;
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use crowdpulse_connectors::kafka_source::{worker_readers, KafkaSourceOptions, TopicSource};
use crowdpulse_connectors::live_input::wall_clock_ms;
use crowdpulse_connectors::position::Position;
use crowdpulse_dataflow::codec::{DecodeContext, Format};
use support::{fresh_topic, BROKER};

mod support;

/// Listens on a free port; its first connection is held and never answered, later ones are
/// forwarded to the broker. Returns its address.
fn silent_first_proxy() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for client in listener.incoming().flatten() {
            if held.is_empty() {
                held.push(client);
                continue;
            }
            let Ok(broker) = TcpStream::connect(BROKER) else {
                continue;
            };
            let (mut client_in, mut broker_out) =
                (client.try_clone().unwrap(), broker.try_clone().unwrap());
            let (mut broker_in, mut client_out) = (broker, client);
            std::thread::spawn(move || copy(&mut client_in, &mut broker_out));
            std::thread::spawn(move || copy(&mut broker_in, &mut client_out));
        }
    });
    address
}

#[test]
fn a_worker_lookup_the_broker_leaves_unanswered_is_tried_again_on_a_fresh_connection() {
    let topic = fresh_topic("lookup", 2);
    let options = KafkaSourceOptions {
        brokers: silent_first_proxy(),
        group_id: "crowdpulse-lookup-test".into(),
        topics: vec![TopicSource {
            name: topic,
            format: (Format::Json, DecodeContext::default()),
        }],
        start: Position::Earliest,
        end: Some(Position::Latest),
        fetch_wait_max_ms: 10,
        liveness: None,
    };
    let began = Instant::now();
    let readers = worker_readers(&options, 0, 1, wall_clock_ms())
        .unwrap_or_else(|error| panic!("the lookup failed after {:?}: {error}", began.elapsed()));
    assert_eq!(readers.len(), 2);
    // The first attempt waited out its 10 s on the held connection: the answer came from a retry.
    assert!(
        began.elapsed() >= Duration::from_secs(9),
        "answered after {:?}: the held connection was not the one asked",
        began.elapsed()
    );
}
