//! The real broker the Kafka tests use (`scripts/kafka.sh` starts it), and brokers of a test's
//! own.

#![allow(dead_code)] // each test file uses its own subset

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where the broker listens.
pub const BROKER: &str = "127.0.0.1:9092";

/// The broker's command (scripts/kafka.sh installs it with cargo; its bin directory may not be
/// on PATH).
pub fn tansu() -> std::path::PathBuf {
    std::env::var("HOME")
        .map(|home| std::path::PathBuf::from(home).join(".cargo/bin/tansu"))
        .ok()
        .filter(|path| path.exists())
        .unwrap_or_else(|| "tansu".into())
}

/// Starts a broker of the caller's own on `address` (listening there and advertising it, memory
/// storage) and waits until it accepts connections.
pub fn spawn_broker(address: &str) -> Child {
    let url = format!("tcp://{address}");
    let child = Command::new(tansu())
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
        ])
        .args(["--storage-engine", "memory://tansu/"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("tansu is installed (bash scripts/kafka.sh)");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(address).is_err() {
        assert!(Instant::now() < deadline, "the test's broker did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

/// Creates a topic of its own for this run (the broker keeps earlier runs' messages) and
/// returns its name.
pub fn fresh_topic(prefix: &str, partitions: usize) -> String {
    let topic = format!(
        "{prefix}-{}-{}",
        std::process::id(),
        crowdpulse_connectors::live_input::wall_clock_ms()
    );
    let status = Command::new(tansu())
        .args([
            "topic",
            "create",
            "--broker",
            &format!("tcp://{BROKER}"),
            "--partitions",
        ])
        .arg(partitions.to_string())
        .arg(&topic)
        .status()
        .expect("tansu is installed (bash scripts/kafka.sh)");
    assert!(
        status.success(),
        "creating {topic}: is the broker up? (bash scripts/kafka.sh)"
    );
    topic
}
