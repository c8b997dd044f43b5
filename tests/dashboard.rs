//! The dashboard in headless Chromium at phone width: it loads from the binary's embedded
//! assets, follows a stream over its WebSocket, and a click on an emoji button posts a reaction
//! whose count then changes on the page. Saves a screenshot.

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;
use support::browser::{chromium_or_skip, Browser};
use support::completions::{serve as serve_completions, Answer};
use support::{eventually, get_json, http, post_reaction, Demo};

#[test]
fn clicking_an_emoji_button_changes_its_count_on_the_page() {
    if !chromium_or_skip() {
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
        browser.screenshot(&scratch.join(format!("dashboard-{name}.png")));
    }
    drop(browser);
    let _ = std::fs::remove_dir_all(&profile);
    demo.stop();
}

/// With tokens configured, the dashboard opened with `#token=` follows its stream: with a
/// `read,write` token its emoji buttons post; with a `read` token it shows the same counts, and a
/// click says why it was refused and disables the buttons. The API refuses requests without one.
#[test]
fn the_dashboard_works_with_a_token() {
    if !chromium_or_skip() {
        return;
    }
    const READ: &str = "dashboard-read-0123456789";
    const WRITE: &str = "dashboard-write-0123456789";
    let demo = Demo::start_with_env(
        &["--rate", "0", "--workers", "2"],
        &[(
            "CROWDPULSE__API__TOKENS",
            &format!("read:{READ};read,write:{WRITE}"),
        )],
    );
    let address = demo.address.clone();
    assert_eq!(get_json(&address, "/v1/streams").0, 401);

    let scratch = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let connected = "document.getElementById('s-badge').textContent";
    let count = r#"document.querySelector('#buttons button[data-emoji="🎉"] .count')?.textContent"#;
    let click = r#"document.querySelector('#buttons button[data-emoji="🎉"]').click()"#;
    let open = |token: &str, name: &str| {
        let profile = scratch.join(format!("chromium-profile-{name}-{}", std::process::id()));
        let browser = Browser::open(
            &format!("http://{address}/?stream=guarded#token={token}"),
            &profile,
        );
        (browser, profile)
    };

    let (mut writer, profile) = open(WRITE, "write");
    writer.wait_for(
        connected,
        json!("following"),
        "following with the write token",
    );
    writer.eval(click);
    writer.wait_for(count, json!("1"), "the count after the click");
    drop(writer);
    let _ = std::fs::remove_dir_all(&profile);

    let (mut reader, profile) = open(READ, "read");
    reader.wait_for(
        connected,
        json!("following"),
        "following with the read token",
    );
    reader.wait_for(count, json!("1"), "the count the read token sees");
    reader.eval(click);
    let note = "document.getElementById('react-note').hidden ? null : document.getElementById('react-note').textContent";
    reader.wait_for(
        note,
        json!("reactions refused: this token lacks the write scope"),
        "the refusal shown",
    );
    let disabled = "[...document.querySelectorAll('#buttons button')].every((b) => b.disabled)";
    assert_eq!(reader.eval(disabled), json!(true));
    assert_eq!(reader.eval(count), json!("1"));
    drop(reader);
    let _ = std::fs::remove_dir_all(&profile);
    demo.stop();
}
