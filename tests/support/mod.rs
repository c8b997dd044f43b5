//! Helpers for tests that drive a running `crowdpulse demo`: start it on a free port, speak
//! HTTP/1.1 and WebSocket to it, stop it with Ctrl-C.

#![allow(dead_code)] // each test file uses its own subset

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A `crowdpulse demo` child process.
pub struct Demo {
    child: Child,
    /// `127.0.0.1:port`.
    pub address: String,
}

impl Demo {
    /// Starts the demo on a free port with `extra` arguments and waits for its address line.
    pub fn start(extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_crowdpulse"))
            .args(["demo", "--bind", "127.0.0.1:0"])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("demo starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("demo prints its address");
        let address = line
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_owned();
        Self { child, address }
    }

    /// Sends Ctrl-C and waits for a clean exit.
    pub fn stop(mut self) {
        let status = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "demo exited with {status}");
                return;
            }
            assert!(Instant::now() < deadline, "demo did not stop after Ctrl-C");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request; returns the status and the body. The body is read by its
/// Content-Length when there is one, because some servers (Chromium's DevTools) keep the
/// connection open despite `Connection: close`.
pub fn http(address: &str, method: &str, path: &str, body: Option<(&str, &[u8])>) -> (u16, String) {
    let mut stream = TcpStream::connect(address).expect("connects");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n");
    if let Some((content_type, bytes)) = body {
        request.push_str(&format!(
            "Content-Type: {content_type}\r\nContent-Length: {}\r\n",
            bytes.len()
        ));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    if let Some((_, bytes)) = body {
        stream.write_all(bytes).unwrap();
    }
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).expect("status line");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut content_length = None;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).expect("header line");
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                content_length = value.trim().parse::<usize>().ok();
            }
        }
    }
    let mut body = Vec::new();
    match content_length {
        Some(length) => {
            body.resize(length, 0);
            reader.read_exact(&mut body).expect("body");
        }
        None => {
            reader.read_to_end(&mut body).expect("body");
        }
    }
    (status, String::from_utf8_lossy(&body).into_owned())
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
