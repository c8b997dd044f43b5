//! Two processes on two "hosts": the root network namespace and a fresh one, joined by a veth
//! pair, each process listening on its own side's address, with a broker of the test's own on the
//! root side. `replay` across them writes the bytes of one process of two workers; a live pair
//! whose link is cut notices within `cluster.peer_timeout`. Needs root (creating namespaces and
//! links); skipped with a message saying so otherwise.

#[path = "../connectors/tests/support/mod.rs"]
mod kafka_support;

mod support;

use std::path::PathBuf;
use std::process::{Command, Stdio};

use std::time::{Duration, Instant};

use kafka_support::{spawn_broker, tansu};
use support::netns::Namespace;
use support::{wait_cluster, Demo, Killed};

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_crowdpulse"))
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{cmd:?} failed: {stderr}");
    stderr
}

/// Creates `topic` (4 partitions) on the broker at `address` and writes `events` generated
/// events to it.
fn fill_topic(address: &str, topic: &str, events: usize) {
    run_ok(
        Command::new(tansu())
            .args(["topic", "create", "--broker", &format!("tcp://{address}")])
            .args(["--partitions", "4", topic]),
    );
    run_ok(Command::new(bin()).args([
        "generate",
        "--events",
        &events.to_string(),
        "--seed",
        "5",
        "--rate",
        "400",
        "--streams",
        "7",
        "--kafka",
        address,
        "--topic",
        topic,
    ]));
}

/// Namespace `test` (see [`Namespace::create`]), a broker of the test's own on its root side and
/// `topic` filled with `events` generated events there; None when namespaces cannot be made.
fn hosts_with_a_topic(
    test: u32,
    topic: &str,
    events: usize,
) -> Option<(Namespace, Killed, String)> {
    let namespace = Namespace::create(test)?;
    let broker_address = format!("{}:19092", namespace.root_address);
    let broker = Killed(spawn_broker(&broker_address));
    fill_topic(&broker_address, topic, events);
    Some((namespace, broker, broker_address))
}

/// `processes` of one worker each: process 0 on the root side, process 1 inside.
fn cluster_settings(namespace: &Namespace, port: u16) -> String {
    format!(
        "[\"{}:{port}\", \"{}:{port}\"]",
        namespace.root_address, namespace.inner_address
    )
}

#[test]
fn two_processes_in_two_network_namespaces_replay_the_bytes_of_one() {
    let topic = "cluster-netns";
    let Some((namespace, _broker, broker_address)) = hosts_with_a_topic(0, topic, 20_000) else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("crowdpulse-netns-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let topics = (
        "CROWDPULSE__KAFKA__TOPICS",
        format!("[{{name = \"{topic}\"}}]"),
    );
    let replay = |cmd: &mut Command, output: &PathBuf| {
        cmd.args([
            "replay",
            "--from",
            "earliest",
            "--quiet",
            "--brokers",
            &broker_address,
        ])
        .arg("--output")
        .arg(output)
        .env(topics.0, &topics.1)
        .env("RUST_LOG", "warn")
        .stderr(Stdio::piped());
    };
    let one = dir.join("one.ndjson");
    let mut single = Command::new(bin());
    replay(&mut single, &one);
    run_ok(single.args(["--workers", "2"]));

    let two = dir.join("two.ndjson");
    let processes = cluster_settings(&namespace, 19101);
    let spawn = |process: usize| {
        let mut cmd = if process == 0 {
            Command::new(bin())
        } else {
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", &namespace.name]).arg(bin());
            cmd
        };
        replay(&mut cmd, &two);
        cmd.args(["--process", &process.to_string()])
            .env("CROWDPULSE__CLUSTER__WORKERS", "1")
            .env("CROWDPULSE__CLUSTER__PROCESSES", &processes)
            .spawn()
            .expect("starts")
    };
    let summaries = wait_cluster(vec![spawn(0), spawn(1)]);
    assert!(summaries[1].contains("(process 1 of 2"), "{}", summaries[1]);
    assert_eq!(
        std::fs::read(&one).unwrap(),
        std::fs::read(&two).unwrap(),
        "two processes across namespaces wrote other bytes than one process"
    );
    assert!(std::fs::metadata(&one).unwrap().len() > 100_000);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A network cut (the link between the "hosts" goes down, nothing is closed) is noticed within
/// about `cluster.peer_timeout`: the process on the root side stops naming the other.
#[test]
fn a_cut_network_stops_the_cluster_within_the_peer_timeout() {
    let topic = "cluster-cut";
    let Some((namespace, _broker, broker_address)) = hosts_with_a_topic(1, topic, 2_000) else {
        return;
    };
    let processes = cluster_settings(&namespace, 19102);
    let env = [
        (
            "CROWDPULSE__KAFKA__TOPICS",
            format!("[{{name = \"{topic}\"}}]"),
        ),
        ("CROWDPULSE__CLUSTER__WORKERS", "1".to_owned()),
        ("CROWDPULSE__CLUSTER__PROCESSES", processes),
        ("CROWDPULSE__CLUSTER__PEER_TIMEOUT", "\"3s\"".to_owned()),
    ];
    let args = ["--from", "earliest", "--brokers", &broker_address];
    let mut inner = Command::new("ip");
    inner
        .args(["netns", "exec", &namespace.name])
        .arg(bin())
        .args(["run", "--process", "1"])
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut inner = Killed(inner.spawn().expect("process 1 starts"));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // Returns once the API listens, i.e. once the pair is connected.
    let (mut outer, _rows) = Demo::run(&[&["--process", "0"][..], &args].concat(), &env);
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        outer.exit_within(Duration::ZERO).is_none() && inner.0.try_wait().unwrap().is_none(),
        "the pair runs"
    );
    namespace.cut();
    let started = Instant::now();
    // The exit also waits up to 10 s for the dead letters, whose topic this broker lacks.
    let status = outer
        .exit_within(Duration::from_secs(30))
        .expect("process 0 stops after the cut");
    eprintln!("process 0 stopped {:?} after the cut", started.elapsed());
    assert!(!status.success(), "{status}");
    let log = outer.stderr();
    assert!(log.contains("lost the connection to process 1"), "{log}");
    inner.0.kill().unwrap();
}
