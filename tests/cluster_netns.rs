//! Two processes on two "hosts": the root network namespace and a fresh one, joined by a veth
//! pair, each process listening on its own side's address, with a broker of the test's own on the
//! root side. `replay` across them writes the bytes of one process of two workers. Needs root
//! (creating namespaces and links); skipped with a message saying so otherwise.

#[path = "../connectors/tests/support/mod.rs"]
mod kafka_support;

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use kafka_support::{spawn_broker, tansu};
use support::wait_cluster;

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_crowdpulse"))
}

fn ip(args: &[&str]) -> std::io::Result<std::process::Output> {
    Command::new("ip").args(args).output()
}

/// A namespace linked to the root one by a veth pair: `10.<a>.<b>.1` on the root side,
/// `.2` inside. Removed (with the pair) when dropped.
struct Namespace {
    name: String,
    root_address: String,
    inner_address: String,
}

impl Namespace {
    /// None (after saying why) when this machine does not let the test create one.
    fn create() -> Option<Self> {
        let id = std::process::id();
        let name = format!("crowdpulse-{id}");
        let (outer, inner) = (
            format!("cpa{}", id % 100_000),
            format!("cpb{}", id % 100_000),
        );
        let subnet = format!("10.{}.{}", 100 + (id >> 8) % 100, id % 256);
        let namespace = Self {
            name: name.clone(),
            root_address: format!("{subnet}.1"),
            inner_address: format!("{subnet}.2"),
        };
        let steps: [Vec<String>; 7] = [
            vec!["netns".into(), "add".into(), name.clone()],
            vec![
                "link", "add", &outer, "type", "veth", "peer", "name", &inner,
            ]
            .into_iter()
            .map(String::from)
            .collect(),
            vec![
                "link".into(),
                "set".into(),
                inner.clone(),
                "netns".into(),
                name.clone(),
            ],
            vec![
                "addr".into(),
                "add".into(),
                format!("{subnet}.1/24"),
                "dev".into(),
                outer.clone(),
            ],
            vec!["link".into(), "set".into(), outer.clone(), "up".into()],
            vec![
                "-n".into(),
                name.clone(),
                "addr".into(),
                "add".into(),
                format!("{subnet}.2/24"),
                "dev".into(),
                inner.clone(),
            ],
            vec![
                "-n".into(),
                name.clone(),
                "link".into(),
                "set".into(),
                inner.clone(),
                "up".into(),
            ],
        ];
        for step in steps {
            let args: Vec<&str> = step.iter().map(String::as_str).collect();
            match ip(&args) {
                Ok(out) if out.status.success() => {}
                Ok(out) => {
                    eprintln!(
                        "SKIPPED: `ip {}` failed ({}); creating network namespaces needs root",
                        args.join(" "),
                        String::from_utf8_lossy(&out.stderr).trim()
                    );
                    return None;
                }
                Err(error) => {
                    eprintln!("SKIPPED: cannot run `ip` ({error}): iproute2 is not installed");
                    return None;
                }
            }
        }
        let _ = ip(&["-n", &name, "link", "set", "lo", "up"]);
        Some(namespace)
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        // Deleting the namespace deletes the veth pair with it.
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// A broker of the test's own, listening on (and advertising) `address`.
struct Broker(Child);

impl Broker {
    fn start(address: &str) -> Self {
        Self(spawn_broker(address))
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{cmd:?} failed: {stderr}");
    stderr
}

#[test]
fn two_processes_in_two_network_namespaces_replay_the_bytes_of_one() {
    let Some(namespace) = Namespace::create() else {
        return;
    };
    let broker_address = format!("{}:19092", namespace.root_address);
    let _broker = Broker::start(&broker_address);
    let topic = "cluster-netns";
    run_ok(
        Command::new(tansu())
            .args([
                "topic",
                "create",
                "--broker",
                &format!("tcp://{broker_address}"),
            ])
            .args(["--partitions", "4", topic]),
    );
    run_ok(Command::new(bin()).args([
        "generate",
        "--events",
        "20000",
        "--seed",
        "5",
        "--rate",
        "400",
        "--streams",
        "7",
        "--kafka",
        &broker_address,
        "--topic",
        topic,
    ]));
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
    let processes = format!(
        "[\"{}:19101\", \"{}:19101\"]",
        namespace.root_address, namespace.inner_address
    );
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
