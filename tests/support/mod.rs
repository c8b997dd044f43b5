//! Helpers for tests that drive a running `crowdpulse demo` or `crowdpulse run`: start it on a
//! free port, speak HTTP/1.1 and WebSocket to it, stop it with Ctrl-C.

#![allow(dead_code)] // each test file uses its own subset

pub mod browser;
mod http;
pub mod netns;
pub mod proxy;

/// The local chat-completions server of the summarizer's tests.
#[path = "../../runtime/tests/support/completions.rs"]
pub mod completions;

pub use http::HttpConnection;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A `crowdpulse demo` child process.
pub struct Demo {
    child: Child,
    /// `127.0.0.1:port`.
    pub address: String,
    /// `crowdpulse run`: its stderr lines, as they come.
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

/// The address in a "... http://ADDR/" line.
fn address_in(line: &str) -> String {
    line.split("http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_owned()
}

impl Demo {
    /// Starts the demo on a free port with `extra` arguments and waits for its address line.
    pub fn start(extra: &[&str]) -> Self {
        Self::start_with_env(extra, &[])
    }

    /// [`Self::start`] with environment `env` (configuration overrides).
    pub fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_crowdpulse"))
            .args(["demo", "--bind", "127.0.0.1:0"])
            .args(extra)
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("demo starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("demo prints its address");
        let address = address_in(&line);
        Self {
            child,
            address,
            log: std::sync::Arc::default(),
        }
    }

    /// Starts `crowdpulse run` on a free port with `extra` arguments and environment `env`;
    /// returns it and its stdout lines (the rows), read by a thread.
    pub fn run(extra: &[&str], env: &[(&str, &str)]) -> (Self, std::sync::mpsc::Receiver<String>) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_crowdpulse"))
            .args(["run", "--bind", "127.0.0.1:0"])
            .args(extra)
            .env("RUST_LOG", "warn,crowdpulse=info")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run starts");
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let log = std::sync::Arc::<std::sync::Mutex<Vec<String>>>::default();
        let address = loop {
            let mut line = String::new();
            let read = stderr.read_line(&mut line).expect("run's stderr");
            assert!(read > 0, "run exited before listening");
            eprint!("{line}");
            log.lock().unwrap().push(line.trim_end().to_owned());
            if line.starts_with("crowdpulse run: api at") {
                break address_in(&line);
            }
        };
        // Keep draining stderr (a full pipe would block the child) into the test's log.
        let kept = std::sync::Arc::clone(&log);
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                eprintln!("{line}");
                kept.lock().unwrap().push(line);
            }
        });
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (sender, rows) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    return;
                }
            }
        });
        (
            Self {
                child,
                address,
                log,
            },
            rows,
        )
    }

    /// Its exit status, once it has exited within `timeout`.
    pub fn exit_within(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// `crowdpulse run`'s stderr so far.
    pub fn stderr(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends Ctrl-C and waits for a clean exit.
    pub fn stop(self) {
        self.stop_with("INT");
    }

    /// Sends SIGTERM; its exit status once it has exited within `timeout`.
    pub fn terminate_within(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        send_signal(self.child.id(), "TERM");
        self.exit_within(timeout)
    }

    /// Sends `signal` (`INT`, `TERM`) and expects a clean exit within 20 s.
    pub fn stop_with(mut self, signal: &str) {
        send_signal(self.child.id(), signal);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "demo exited with {status}");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "demo did not stop after SIG{signal}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Sends `signal` (`INT`, `TERM`, ...) to process `pid`.
fn send_signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal} {pid}");
}

/// A child (a broker, a producer, a cluster process) killed when dropped.
pub struct Killed(pub Child);

impl Killed {
    /// Sends SIGTERM; its exit status once it has exited within `timeout`.
    pub fn terminate_within(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        send_signal(self.0.id(), "TERM");
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.0.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request on a fresh connection; returns the status and the body.
pub fn http(address: &str, method: &str, path: &str, body: Option<(&str, &[u8])>) -> (u16, String) {
    HttpConnection::open(address).request(method, path, body)
}

/// Records the running `crowdpulse run` at `address` has read so far, from `/metrics`.
pub fn offsets_read(address: &str) -> u64 {
    let (_, text) = http(address, "GET", "/metrics", None);
    text.lines()
        .filter(|l| l.starts_with("crowdpulse_partition_next_offset{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// GET returning JSON.
pub fn get_json(address: &str, path: &str) -> (u16, Value) {
    let (status, body) = http(address, "GET", path, None);
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// Posts one reaction.
pub fn post_reaction(address: &str, stream: &str, emoji: &str, user: &str) {
    let body = serde_json::json!({"emoji": emoji, "user_id": user}).to_string();
    let (status, answer) = http(
        address,
        "POST",
        &format!("/v1/streams/{stream}/reactions"),
        Some(("application/json", body.as_bytes())),
    );
    assert_eq!(status, 202, "{answer}");
}

/// Polls `check` every 50 ms for up to 20 s.
pub fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

/// The environment that makes a command one of `processes` loopback processes of one worker
/// each (free ports, found now), with the sinks on process 0.
pub fn cluster_env(processes: usize) -> Vec<(&'static str, String)> {
    let listeners: Vec<std::net::TcpListener> = (0..processes)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let addresses: Vec<String> = listeners
        .iter()
        .map(|l| format!("\"{}\"", l.local_addr().unwrap()))
        .collect();
    vec![
        ("CROWDPULSE__CLUSTER__WORKERS", "1".to_owned()),
        (
            "CROWDPULSE__CLUSTER__PROCESSES",
            format!("[{}]", addresses.join(", ")),
        ),
    ]
}

/// Starts `command` once per process of a cluster (`--process N` appended), every process but
/// 0 with its output discarded; returns the children, process 0 first.
pub fn spawn_cluster(processes: usize, mut command: impl FnMut() -> Command) -> Vec<Child> {
    (0..processes)
        .map(|process| {
            let mut cmd = command();
            cmd.args(["--process", &process.to_string()]);
            if process > 0 {
                cmd.stdout(Stdio::null());
            }
            cmd.spawn().expect("a cluster process starts")
        })
        .collect()
}

/// Waits for every child, reading their pipes at once (one blocked on a full pipe would stall
/// the others); returns their stderr, and panics naming the first that failed.
pub fn wait_cluster(children: Vec<Child>) -> Vec<String> {
    let waits: Vec<_> = children
        .into_iter()
        .map(|child| std::thread::spawn(move || child.wait_with_output().expect("waits")))
        .collect();
    waits
        .into_iter()
        .enumerate()
        .map(|(process, wait)| {
            let out = wait.join().expect("the wait ends");
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            assert!(out.status.success(), "process {process} failed: {stderr}");
            stderr
        })
        .collect()
}
