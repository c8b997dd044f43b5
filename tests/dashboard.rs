//! The dashboard in headless Chromium at phone width: it loads from the binary's embedded
//! assets, follows a stream over its WebSocket, and a click on an emoji button posts a reaction
//! whose count then changes on the page. Saves a screenshot.

mod support;

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};
use support::completions::{serve as serve_completions, Answer};
use support::{eventually, get_json, http, post_reaction, Demo};

const CHROMIUM: &str = "/usr/bin/chromium";

struct Browser {
    child: Child,
    socket: tungstenite::WebSocket<TcpStream>,
    next_id: u64,
}

impl Browser {
    /// Opens `url` in headless Chromium and attaches to the page over the DevTools protocol.
    fn open(url: &str, profile: &Path) -> Self {
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
    fn call(&mut self, method: &str, params: Value) -> Value {
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

    /// Evaluates a JavaScript expression in the page.
    /// Waits up to 20 s for `expression` to evaluate to `expected`; fails naming `what` and the
    /// last value otherwise.
    fn wait_for(&mut self, expression: &str, expected: Value, what: &str) {
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

    fn eval(&mut self, expression: &str) -> Value {
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

#[test]
fn clicking_an_emoji_button_changes_its_count_on_the_page() {
    if !Path::new(CHROMIUM).exists() {
        assert!(
            std::env::var_os("CROWDPULSE_SKIP_BROWSER_TEST").is_some(),
            "{CHROMIUM} is missing: install it with `bash scripts/setup.sh` (or set CROWDPULSE_SKIP_BROWSER_TEST=1)"
        );
        eprintln!("skipped: no chromium");
        return;
    }
    // A summary every 2 messages, settled within seconds (a short lateness), and its text from
    // a local chat-completions endpoint.
    let completions = serve_completions(Answer::Text);
    let demo = Demo::start_with_env(
        &["--rate", "0", "--workers", "2"],
        &[
            ("CROWDPULSE__PIPELINE__ALLOWED_LATENESS", "2s"),
            ("CROWDPULSE__PIPELINE__SUMMARY__EVERY", "2"),
            ("CROWDPULSE__SUMMARIZER__URL", &completions.url),
            ("CROWDPULSE__SUMMARIZER__API_KEY", "sk-dashboard"),
        ],
    );
    let address = demo.address.clone();
    post_reaction(&address, "browser", "🔥", "seed");
    eventually("the stream", || {
        get_json(&address, "/v1/streams/browser").0 == 200
    });

    let scratch = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let profile = scratch.join(format!("chromium-profile-{}", std::process::id()));
    let mut browser = Browser::open(&format!("http://{address}/?stream=browser"), &profile);

    let count = r#"document.querySelector('#buttons button[data-emoji="🎉"] .count')?.textContent"#;
    let connected = "document.getElementById('s-badge').textContent";
    let reactions = "document.getElementById('s-reactions').textContent";
    // Loaded: following the stream live, with the seed reaction counted in its totals (the
    // stream_totals row may arrive in a later push than the window rows).
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(browser.eval(count) == json!("0")
        && browser.eval(connected) == json!("following")
        && browser.eval(reactions) == json!("1"))
    {
        assert!(
            Instant::now() < deadline,
            "dashboard did not load: count {}, connection {}, reactions {}",
            browser.eval(count),
            browser.eval(connected),
            browser.eval(reactions)
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // One window so far: a chart of a lone point shows the minute either side, not years.
    let lone_points =
        "(() => { const lone = Object.values(charts).filter((c) => c.data[0].length === 1); \
        return lone.length > 0 && lone.every((c) => c.scales.x.max - c.scales.x.min === 120); })()";
    browser.wait_for(lone_points, json!(true), "two minutes around a lone point");

    browser.eval(r#"document.querySelector('#buttons button[data-emoji="🎉"]').click()"#);
    browser.wait_for(count, json!("1"), "the count after the click");
    // The clicked emoji joins the seed's in the latest minute's cloud.
    let cloud = "[...document.querySelectorAll('#cloud span')].map((s) => s.dataset.emoji).sort().join(' ')";
    browser.wait_for(cloud, json!("🎉 🔥"), "the cloud");
    let (_, top) = get_json(&address, "/v1/streams/browser/emojis/top");
    assert!(
        top["top"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["emoji"] == "🎉"),
        "{top}"
    );

    // An insult in chat shows in the category chart's toxic series.
    let chat = json!({"type": "chat", "stream_id": "browser", "user_id": "troll", "text": "you are trash, idiot"});
    let (status, body) = http(
        &address,
        "POST",
        "/v1/events",
        Some(("application/json", json!([chat]).to_string().as_bytes())),
    );
    assert_eq!(status, 202, "{body}");
    let toxic = "Boolean(charts['c-categories'] && charts['c-categories'].data[2].includes(1))";
    browser.wait_for(
        toxic,
        json!(true),
        "the toxic message in the category chart",
    );

    // ... and in the chat panel, tagged with its category; a search finds it among others.
    let latest = "document.querySelector('#chat li')?.textContent";
    browser.wait_for(
        latest,
        json!("toxic troll you are trash, idiot"),
        "the message in the chat panel",
    );
    let friendly =
        json!({"type": "chat", "stream_id": "browser", "user_id": "fan", "text": "great stream"});
    let (status, body) = http(
        &address,
        "POST",
        "/v1/events",
        Some(("application/json", json!([friendly]).to_string().as_bytes())),
    );
    assert_eq!(status, 202, "{body}");
    let texts =
        "[...document.querySelectorAll('#chat li')].map((li) => li.textContent).join(' | ')";
    browser.wait_for(
        texts,
        json!("praise fan great stream | toxic troll you are trash, idiot"),
        "both messages, newest first",
    );
    // The two messages make the first summary, shown in its panel.
    let summary =
        "document.querySelector('#summary p')?.textContent.startsWith('#1 2 messages to')";
    browser.wait_for(summary, json!(true), "the summary panel");
    let in_short = "[...document.querySelectorAll('#summary p')].map((p) => p.textContent)[1]";
    browser.wait_for(
        in_short,
        json!("in short browser talks about nothing"),
        "the summarizer's text",
    );
    browser.eval("document.getElementById('chat-q').value = 'TRASH'; document.getElementById('chat-search').requestSubmit()");
    browser.wait_for(
        texts,
        json!("toxic troll you are trash, idiot"),
        "the search's one match",
    );

    // At phone and desktop sizes: no sideways scrolling, every chart inside the viewport and
    // filling its panel; a screenshot of each.
    for (name, width, height) in [("phone", 390, 844), ("desktop", 1400, 1000)] {
        browser.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 700}),
        );
        let layout = "(() => { const w = window.innerWidth; \
            const charts = [...document.querySelectorAll('.chart canvas')]; \
            const out = charts.filter((c) => { const r = c.getBoundingClientRect(); return r.left < 0 || r.right > w || r.width < 0.9 * c.closest('.chart').clientWidth; }); \
            return `${w} ${document.documentElement.scrollWidth <= w} ${charts.length} ${out.length}`; })()";
        browser.wait_for(
            layout,
            json!(format!("{width} true 5 0")),
            &format!("the layout at {name} size"),
        );
        let shot = browser.call(
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true}),
        );
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        let path = scratch.join(format!("dashboard-{name}.png"));
        std::fs::write(&path, png).unwrap();
        eprintln!("screenshot: {}", path.display());
    }
    drop(browser);
    let _ = std::fs::remove_dir_all(&profile);
    demo.stop();
}
