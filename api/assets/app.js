// crowdpulse dashboard: stream list and global statistics over REST, the selected stream's
// windows, emojis, viewers, sentiment, categories, moments and chat over its WebSocket (a snapshot,
// then updates); chat searches over REST.
"use strict";

const BUTTONS = ["🔥", "😂", "❤️", "👏", "🎉", "😮"];
const BASE = "10s";          // the base window the charts show
const TOP_WINDOW = "1m";
const $ = (id) => document.getElementById(id);

let selected = null;
let socket = null;
let connection = "not connected"; // or "open", "reconnecting"
let rows = new Map();          // row key -> row, for the selected stream
let chat = [];                 // the selected stream's latest chat messages, newest first
let search = null;             // {path, messages, next} while a chat search is shown
const CHAT_SHOWN = 50;
let dirty = false;
const charts = {};

// Whether summary `a` replaces the one shown, `b`: summaries are ordered by the last message they
// cover, and the same summary comes again once the summarizer has written its text.
function replacesSummary(a, b) {
  if (!b) return true;
  const key = (s) => [s.last_ts, s.last_source, s.last_partition, s.last_offset];
  const [x, y] = [key(a), key(b)];
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return x[i] > y[i];
  return Boolean(a.text) && !b.text;
}

function rowKey(r) {
  switch (r.table) {
    case "window_metrics":
    case "window_top_emojis": return `${r.table}|${r.window}|${r.window_start}`;
    case "window_emojis": return `${r.table}|${r.window}|${r.window_start}|${r.emoji}`;
    case "window_revenue": return `${r.table}|${r.window}|${r.window_start}|${r.kind}|${r.currency}`;
    case "moments": return `${r.table}|${r.metric}|${r.start}`;
    default: return r.table;
  }
}

// A token given as /#token=... (a fragment never reaches the server or its logs) is kept for the
// tab's session and sent with every request; without tokens configured none is needed.
const token = (() => {
  const given = new URLSearchParams(location.hash.slice(1)).get("token");
  if (given) {
    sessionStorage.setItem("crowdpulse-token", given);
    history.replaceState(null, "", location.pathname + location.search);
  }
  return sessionStorage.getItem("crowdpulse-token");
})();
const authorization = token ? { authorization: `Bearer ${token}` } : {};

async function getJson(path) {
  const response = await fetch(path, { cache: "no-store", headers: authorization });
  if (!response.ok) throw new Error(`${path}: ${response.status}`);
  return response.json();
}

function fmtDuration(ms) {
  const s = Math.floor(ms / 1000);
  return `${Math.floor(s / 3600)}h ${Math.floor(s / 60) % 60}m ${s % 60}s`;
}

async function refreshGlobal() {
  try {
    const stats = await getJson("/v1/statistics");
    $("g-emojis").textContent = stats.total_emojis;
    $("g-rate").textContent = stats.rate_per_minute.toFixed(0);
    $("g-streams").textContent = stats.streams;
    $("g-session").textContent = fmtDuration(stats.session_duration_ms);
    $("g-dead").textContent = stats.dead_letters;
    const list = await getJson("/v1/streams");
    const ul = $("streams");
    ul.replaceChildren(...list.streams.map((s) => {
      const li = document.createElement("li");
      const button = document.createElement("button");
      button.dataset.stream = s.stream_id;
      button.className = s.stream_id === selected ? "selected" : "";
      button.textContent = s.title || s.stream_id;
      const small = document.createElement("small");
      small.textContent = `${s.stream_id} · ${s.current_viewers} viewers · ${s.reactions} reactions`;
      button.append(small);
      button.onclick = () => select(s.stream_id);
      li.append(button);
      return li;
    }));
    // A stream named in the address is followed before it has any results.
    const first = new URLSearchParams(location.search).get("stream") || list.streams[0]?.stream_id;
    if (!selected && first) select(first);
  } catch (error) {
    console.warn(error);
  }
}

function select(streamId) {
  selected = streamId;
  history.replaceState(null, "", `?stream=${encodeURIComponent(streamId)}`);
  document.querySelectorAll("#streams button").forEach((b) => b.classList.toggle("selected", b.dataset.stream === streamId));
  rows = new Map();
  chat = [];
  search = null;
  // The latest summary may predate this page (and this server): ask for it once.
  getJson(`/v1/streams/${encodeURIComponent(streamId)}/summary`).then((answer) => {
    const latest = answer.summaries[0];
    if (selected === streamId && latest && replacesSummary(latest, rows.get("chat_summaries"))) {
      rows.set("chat_summaries", latest);
      if (!dirty) { dirty = true; requestAnimationFrame(render); }
    }
  }).catch((error) => console.warn(error));
  $("chat-q").value = "";
  $("chat-category").value = "";
  connect();
  render();
}

function connect() {
  if (socket) socket.close();
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const query = token ? `?access_token=${encodeURIComponent(token)}` : "";
  const ws = new WebSocket(`${scheme}://${location.host}/v1/streams/${encodeURIComponent(selected)}/live${query}`);
  socket = ws;
  ws.onopen = () => { connection = "open"; badge(); };
  ws.onclose = () => {
    if (socket !== ws) return;
    connection = "reconnecting";
    badge();
    setTimeout(() => { if (socket === ws) connect(); }, 1000);
  };
  ws.onmessage = (message) => {
    const data = JSON.parse(message.data);
    if (data.type === "snapshot") { rows = new Map(); chat = []; }
    for (const r of data.removed || []) {
      const key = rowKey(r);
      if (JSON.stringify(rows.get(key)) === JSON.stringify(r)) rows.delete(key);
    }
    for (const r of data.rows || []) {
      if (r.table === "chat_messages") chat.push(r);
      else if (r.table !== "chat_summaries" || replacesSummary(r, rows.get("chat_summaries"))) rows.set(rowKey(r), r);
    }
    chat.sort((a, b) => b.ts - a.ts || b.offset - a.offset);
    chat.length = Math.min(chat.length, CHAT_SHOWN);
    if (!dirty) { dirty = true; requestAnimationFrame(render); }
  };
}

async function react(emoji) {
  if (!selected) return;
  const response = await fetch(`/v1/streams/${encodeURIComponent(selected)}/reactions`, {
    method: "POST",
    headers: { "content-type": "application/json", ...authorization },
    body: JSON.stringify({ emoji, user_id: "dashboard" }),
  });
  if (response.ok) return;
  const text = await response.text();
  console.warn("reaction refused", text);
  // A read token (or one no longer valid) shows what it may but cannot react: say so once and
  // stop offering the buttons, rather than letting clicks fail silently.
  if (response.status === 401 || response.status === 403) {
    let message = text;
    try { message = JSON.parse(text).error.message ?? text; } catch { /* not the API's JSON */ }
    $("react-note").textContent = `reactions refused: ${message}`;
    $("react-note").hidden = false;
    for (const button of $("buttons").querySelectorAll("button")) button.disabled = true;
  }
}

function buildButtons() {
  $("buttons").replaceChildren(...BUTTONS.map((emoji) => {
    const button = document.createElement("button");
    button.dataset.emoji = emoji;
    button.setAttribute("aria-label", `react ${emoji}`);
    button.textContent = emoji;
    const count = document.createElement("span");
    count.className = "count";
    count.textContent = "0";
    button.append(count);
    button.onclick = () => react(emoji);
    return button;
  }));
}

function chart(id, series, data) {
  const el = $(id);
  const width = Math.max(el.clientWidth, 260);
  if (!charts[id] || charts[id].series.length !== series.length + 1) {
    if (charts[id]) charts[id].destroy();
    const opts = {
      width, height: 180,
      series: [{}, ...series.map((s) => ({ label: s.label, stroke: s.color, width: 2, spanGaps: true }))],
      axes: [{ stroke: "#8a97a6", grid: { stroke: "#2b333d" } }, { stroke: "#8a97a6", grid: { stroke: "#2b333d" } }],
      legend: { live: false },
    };
    charts[id] = new uPlot(opts, data, el);
  } else {
    if (charts[id].width !== width) charts[id].setSize({ width, height: 180 });
    charts[id].setData(data);
  }
  // uPlot spreads a lone point's time axis over years (a scale range function is not consulted
  // for it): show a minute either side instead.
  if (data[0].length === 1) charts[id].setScale("x", { min: data[0][0] - 60, max: data[0][0] + 60 });
}

const COLORS = ["#ff6b3d", "#ffd23d", "#3dc1ff", "#b36bff", "#3dff8b", "#ff3d9e"];

// One badge: the connection while it is not open, else the stream's status (live, offline, or
// "following" before a stream_meta record told it).
function badge() {
  const totals = [...rows.values()].find((r) => r.table === "stream_totals");
  const status = totals && totals.status;
  const el = $("s-badge");
  if (connection !== "open") {
    el.textContent = connection;
    el.className = "badge";
  } else {
    el.textContent = status || "following";
    el.className = `badge ${status === "live" ? "live" : "open"}`;
  }
}

function render() {
  dirty = false;
  const all = [...rows.values()];
  const metrics = all.filter((r) => r.table === "window_metrics" && r.window === BASE).sort((a, b) => a.window_start - b.window_start);
  const totals = all.find((r) => r.table === "stream_totals");
  $("s-title").textContent = selected ? (totals && totals.title) || selected : "Pick a stream";
  badge();
  const last = metrics[metrics.length - 1];
  $("s-viewers").textContent = last ? last.viewers_end : "–";
  $("s-peak").textContent = totals ? totals.peak_viewers : "–";
  $("s-chat").textContent = totals ? totals.chat_messages : "–";
  $("s-reactions").textContent = totals ? totals.reactions : "–";

  // Reactions per emoji over the base windows held (the last 10 minutes).
  const emojiRows = all.filter((r) => r.table === "window_emojis" && r.window === BASE);
  const perEmoji = new Map();
  for (const r of emojiRows) perEmoji.set(r.emoji, (perEmoji.get(r.emoji) || 0) + r.count);
  document.querySelectorAll("#buttons button").forEach((b) => {
    b.querySelector(".count").textContent = perEmoji.get(b.dataset.emoji) || 0;
  });

  const x = metrics.map((r) => r.window_start / 1000);
  chart("c-chat", [{ label: "messages", color: COLORS[0] }], [x, metrics.map((r) => r.chat_messages)]);
  chart("c-viewers", [{ label: "end", color: COLORS[2] }, { label: "peak", color: COLORS[1] }],
    [x, metrics.map((r) => r.viewers_end), metrics.map((r) => r.viewers_peak)]);
  chart("c-sentiment", [{ label: "compound", color: COLORS[4] }], [x, metrics.map((r) => r.sentiment_mean)]);
  const categories = ["praise", "toxic", "humor", "question"];
  chart("c-categories", categories.map((c, i) => ({ label: c, color: COLORS[(i + 1) % COLORS.length] })),
    [x, ...categories.map((c) => metrics.map((r) => r[c]))]);
  const ranked = [...perEmoji.entries()].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1)).slice(0, 5).map((e) => e[0]);
  const byWindow = new Map(emojiRows.map((r) => [`${r.window_start}|${r.emoji}`, r.count]));
  chart("c-emojis", ranked.map((e, i) => ({ label: e, color: COLORS[i % COLORS.length] })),
    [x, ...ranked.map((e) => metrics.map((m) => byWindow.get(`${m.window_start}|${e}`) || 0))]);

  // The cloud: reactions per emoji over the base windows of the latest minute held, each emoji
  // sized by its share of the largest count.
  const newest = metrics.length ? metrics[metrics.length - 1].window_end : 0;
  const recent = new Map();
  for (const r of emojiRows) {
    if (r.window_end > newest - 60000) recent.set(r.emoji, (recent.get(r.emoji) || 0) + r.count);
  }
  const most = Math.max(1, ...recent.values());
  $("cloud").replaceChildren(...[...recent.entries()]
    .sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))
    .slice(0, 40)
    .map(([emoji, count]) => {
      const span = document.createElement("span");
      span.dataset.emoji = emoji;
      span.title = `${emoji} ${count}`;
      span.textContent = emoji;
      span.style.fontSize = `${(1 + 2 * count / most).toFixed(2)}rem`;
      return span;
    }));

  const tops = all.filter((r) => r.table === "window_top_emojis" && r.window === TOP_WINDOW).sort((a, b) => b.window_start - a.window_start);
  $("top").replaceChildren(...((tops[0] && tops[0].top) || []).map((t) => {
    const li = document.createElement("li");
    li.textContent = `${t.emoji} ${t.count}`;
    return li;
  }));
  renderChat();
  renderSummary(rows.get("chat_summaries"));
  const moments = all.filter((r) => r.table === "moments").sort((a, b) => b.start - a.start);
  $("moments").replaceChildren(...moments.slice(0, 20).map((m) => {
    const li = document.createElement("li");
    const at = new Date(m.start).toLocaleTimeString();
    li.textContent = `${at} ${m.metric}: peak ${m.peak_value} (z ${Number(m.zscore).toFixed(1)}, ${(m.end - m.start) / 1000}s)`;
    return li;
  }));
}

function chatItem(m) {
  const li = document.createElement("li");
  li.title = `${new Date(m.ts).toLocaleTimeString()}, sentiment ${m.sentiment}`;
  const tag = document.createElement("span");
  tag.className = `tag ${m.category}`;
  tag.textContent = m.category;
  const who = document.createElement("b");
  who.textContent = m.user_id;
  li.append(tag, " ", who, " ", m.text);
  return li;
}

// The latest summary: what the chat talks about, its mood and its emotes.
function renderSummary(summary) {
  const el = $("summary");
  if (!summary) { el.textContent = "no summary yet"; return; }
  const line = (label, text) => {
    const p = document.createElement("p");
    const b = document.createElement("b");
    b.textContent = `${label} `;
    p.append(b, text);
    return p;
  };
  const at = new Date(summary.last_ts).toLocaleTimeString();
  el.replaceChildren(
    line(`#${summary.seq}`, `${summary.messages} messages to ${at}`),
    ...(summary.text ? [line("in short", summary.text)] : []),
    line("about", summary.key_phrases.map((k) => k.phrase).join(", ") || "–"),
    line("mood", `${summary.sentiment_label} (${summary.sentiment}), mostly ${summary.category}`),
    line("emotes", summary.top_emotes.map((e) => `${e.emote} ${e.count}`).join("  ") || "–"),
    ...summary.representative.map((q) => {
      const quote = document.createElement("blockquote");
      quote.textContent = `${q.user_id}: ${q.text}`;
      return quote;
    }));
}

function renderChat() {
  const shown = search ? search.messages : chat;
  $("chat").replaceChildren(...shown.map(chatItem));
  $("chat-more").hidden = !(search && search.next);
}

// A search (words and/or a category) pages through the stream's whole chat history; an empty
// one goes back to following the live chat.
async function searchChat(more) {
  if (!selected) return;
  if (!more) {
    const params = new URLSearchParams({ limit: String(CHAT_SHOWN) });
    const q = $("chat-q").value.trim();
    const category = $("chat-category").value;
    if (q) params.set("q", q);
    if (category) params.set("category", category);
    search = q || category ? { path: `/v1/streams/${encodeURIComponent(selected)}/chat?${params}`, messages: [], next: null } : null;
  }
  const current = search;
  if (current && !current.loading) {
    current.loading = true;
    try {
      const page = await getJson(current.path + (more && current.next ? `&before=${current.next}` : ""));
      current.messages = current.messages.concat(page.messages);
      current.next = page.next;
    } catch (error) {
      // A refused search (e.g. no word in it) shows as an empty result.
      console.warn(error);
      current.next = null;
    }
    current.loading = false;
  }
  // An answer to a search replaced meanwhile (another search, another stream) is not shown.
  if (search === current) renderChat();
}

$("chat-search").addEventListener("submit", (event) => { event.preventDefault(); searchChat(false); });
$("chat-more").addEventListener("click", () => searchChat(true));
buildButtons();
// Configured kinds: a measure per window of one dimension combination, each combination's
// latest window, and the alerts; polled, as kinds are not pushed.
let kinds = [];
const kindState = { rows: [], series: [], alerts: [] };

function option(value, text) {
  const o = document.createElement("option");
  o.value = value;
  o.textContent = text ?? value;
  return o;
}

function dimsText(dims) {
  return Object.values(dims).join(" · ") || "all";
}

async function loadKinds() {
  try {
    kinds = (await getJson("/v1/kinds")).kinds;
  } catch (error) {
    console.warn(error);
    return;
  }
  $("kinds").hidden = kinds.length === 0;
  if (kinds.length === 0) return;
  $("k-kind").replaceChildren(...kinds.map((k) => option(k.name)));
  $("k-kind").onchange = () => { pickKind(); refreshKind(); };
  $("k-measure").onchange = renderKind;
  $("k-combo").onchange = refreshSeries;
  pickKind();
  refreshKind();
  setInterval(refreshKind, 2000);
}

function currentKind() {
  return kinds.find((k) => k.name === $("k-kind").value) || kinds[0];
}

function pickKind() {
  $("k-measure").replaceChildren(...currentKind().measures.map((m) => option(m.name)));
}

async function refreshKind() {
  const kind = currentKind();
  const path = `/v1/kinds/${encodeURIComponent(kind.name)}`;
  try {
    kindState.rows = (await getJson(`${path}/metrics?limit=1000`)).rows;
    kindState.alerts = (await getJson(`${path}/alerts?limit=20`)).alerts;
  } catch (error) {
    console.warn(error);
    return;
  }
  const combos = [...new Set(kindState.rows.map((r) => JSON.stringify(r.dims)))].sort();
  const chosen = $("k-combo").value;
  $("k-combo").replaceChildren(...combos.map((c) => option(c, dimsText(JSON.parse(c)))));
  if (combos.includes(chosen)) $("k-combo").value = chosen;
  await refreshSeries();
}

// The chosen combination's own windows: the newest rows over all combinations may hold only
// a few of its.
async function refreshSeries() {
  const combo = $("k-combo").value;
  kindState.series = [];
  if (combo) {
    const filters = new URLSearchParams({ ...JSON.parse(combo), limit: "200" });
    try {
      kindState.series = (await getJson(`/v1/kinds/${encodeURIComponent(currentKind().name)}/metrics?${filters}`)).rows;
    } catch (error) {
      console.warn(error);
    }
  }
  renderKind();
}

function renderKind() {
  const measure = $("k-measure").value;
  const combo = $("k-combo").value;
  const series = kindState.series;
  $("k-caption").textContent = `${measure} per ${currentKind().windows[0]} window, ${combo ? dimsText(JSON.parse(combo)) : "–"}`;
  chart("c-kind", [{ label: measure, color: COLORS[2] }],
    [series.map((r) => r.window_start / 1000), series.map((r) => r.values[measure])]);
  const latest = new Map();
  for (const r of kindState.rows) latest.set(JSON.stringify(r.dims), r);
  const head = document.createElement("tr");
  for (const text of ["combination", "records", measure]) {
    const th = document.createElement("th");
    th.textContent = text;
    head.append(th);
  }
  const body = [...latest.values()].map((r) => {
    const tr = document.createElement("tr");
    const value = r.values[measure];
    for (const text of [dimsText(r.dims), r.records, value === null ? "–" : Number(value.toFixed(3))]) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.append(td);
    }
    return tr;
  });
  $("k-table").replaceChildren(head, ...body);
  $("k-alerts").replaceChildren(...kindState.alerts.slice().reverse().map((a) => {
    const li = document.createElement("li");
    const at = new Date(a.window_start).toLocaleTimeString();
    const why = a.zscore !== null ? `z ${Number(a.zscore).toFixed(1)}` : `threshold ${a.threshold}`;
    li.textContent = `${at} ${a.rule} ${dimsText(a.dims)}: ${a.measure} ${Number(a.value.toFixed(3))} (${why})`;
    return li;
  }));
}

refreshGlobal();
setInterval(refreshGlobal, 2000);
loadKinds();
window.addEventListener("resize", () => { if (!dirty) { dirty = true; requestAnimationFrame(render); } });
