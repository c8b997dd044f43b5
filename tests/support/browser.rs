//! Headless Chromium driven over the DevTools protocol, for the dashboard tests.

#![allow(dead_code)] // each test file uses its own subset

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{eventually, http};

/// Whether the browser tests can run: Chromium is installed, or the test fails unless
/// CROWDPULSE_SKIP_BROWSER_TEST is set (then it is skipped).
pub fn chromium_or_skip() -> bool {
    if Path::new(CHROMIUM).exists() {
        return true;
    }
    assert!(
        std::env::var_os("CROWDPULSE_SKIP_BROWSER_TEST").is_some(),
        "{CHROMIUM} is missing: install it with `bash scripts/setup.sh` (or set CROWDPULSE_SKIP_BROWSER_TEST=1)"
    );
    eprintln!("skipped: no chromium");
    false
}

/// Debian's Chromium.
pub const CHROMIUM: &str = "/usr/bin/chromium";

pub struct Browser {
    child: Child,
    socket: tungstenite::WebSocket<TcpStream>,
    next_id: u64,
}

impl Browser {
    /// Opens `url` in headless Chromium and attaches to the page over the DevTools protocol.
    pub fn open(url: &str, profile: &Path) -> Self {
        let mut child = Command::new(CHROMIUM)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--no-first-run",
                "--remote-debugging-port=0",
                "--window-size=390,844",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(url)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("chromium starts");
        let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
        let port = stderr
            .by_ref()
            .map_while(Result::ok)
            .find_map(|line| {
                line.split("DevTools listening on ws://127.0.0.1:")
                    .nth(1)
                    .and_then(|rest| rest.split('/').next().map(str::to_owned))
            })
            .expect("chromium announces its DevTools port");
        // Keep draining its stderr: a closed pipe would fail Chromium's later log writes.
        std::thread::spawn(move || stderr.for_each(drop));
        let devtools = format!("127.0.0.1:{port}");
        let mut page_socket = None;
        eventually("the page target", || {
            let (_, body) = http(&devtools, "GET", "/json/list", None);
            let targets: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            page_socket = targets.as_array().and_then(|ts| {
                ts.iter()
                    .find(|t| t["type"] == "page")
                    .and_then(|t| t["webSocketDebuggerUrl"].as_str().map(str::to_owned))
            });
            page_socket.is_some()
        });
        let stream = TcpStream::connect(&devtools).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let (socket, _) =
            tungstenite::client(page_socket.unwrap(), stream).expect("devtools websocket");
        Self {
            child,
            socket,
            next_id: 1,
        }
    }

    /// Calls a DevTools method and returns its result.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let request = json!({"id": id, "method": method, "params": params}).to_string();
        self.socket
            .send(tungstenite::Message::text(request))
            .unwrap();
        loop {
            if let tungstenite::Message::Text(text) = self.socket.read().expect("devtools answers")
            {
                let message: Value = serde_json::from_str(&text).unwrap();
                if message["id"] == id {
                    assert!(message.get("error").is_none(), "{method}: {message}");
                    return message["result"].clone();
                }
            }
        }
    }

    /// Waits up to 20 s for `expression` to evaluate to `expected`; fails naming `what` and the
    /// last value otherwise.
    pub fn wait_for(&mut self, expression: &str, expected: Value, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let value = self.eval(expression);
            if value == expected {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: {value}, expected {expected}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Saves a screenshot of the whole page as PNG.
    pub fn screenshot(&mut self, path: &Path) {
        use base64::Engine;
        let shot = self.call(
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true}),
        );
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        std::fs::write(path, png).unwrap();
        eprintln!("screenshot: {}", path.display());
    }

    /// Evaluates a JavaScript expression in the page.
    pub fn eval(&mut self, expression: &str) -> Value {
        let result = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true}),
        );
        result["result"]["value"].clone()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
