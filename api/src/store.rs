//! The live view store: the dataflow's output rows kept per stream and window (with retention),
//! session totals, the latest reactions, and a push channel per stream that carries its changes
//! (at most one update per push interval).

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use crowdpulse_connectors::config::MAX_PUSH_INTERVAL_MS;
use crowdpulse_connectors::live_input::wall_clock_ms;
use crowdpulse_connectors::postgres::tables::RowKey;
use crowdpulse_connectors::sink::{Flush, Sink};
use crowdpulse_connectors::summarizer::SummaryTextListener;
use crowdpulse_dataflow::analytics::{top_with_ties, Top};
use crowdpulse_dataflow::event::Millis;
#[cfg(test)]
use crowdpulse_dataflow::rows::Reaction;
use crowdpulse_dataflow::rows::{ChatMessage, DeadLetter, Row, WindowKey};
use crowdpulse_dataflow::rows_json::RowJson;
use crowdpulse_dataflow::summary::ChatSummary;
use serde_json::{json, Value};
use tokio::sync::broadcast;

use crate::kind_store::KindViews;
use crate::models::{RecentReaction, StreamSummary};

/// How many reactions are remembered per stream and overall.
pub const RECENT_REACTIONS: usize = 10;
/// How many dead letters are remembered for inspection.
const RECENT_DEAD_LETTERS: usize = 100;
/// Messages a live client may fall behind before it is moved on to a fresh snapshot.
const PUSH_BACKLOG: usize = 256;
/// Windows of the base window sent in a snapshot (10 minutes of 10 s windows by default).
const SNAPSHOT_WINDOWS: usize = 60;
/// Chat messages kept per stream (the latest, within the retention); older ones are Postgres's.
pub const CHAT_KEPT: usize = 1_000;
/// Chat messages sent in a snapshot.
const SNAPSHOT_CHAT: usize = 20;
/// Chat summaries kept per stream (the latest); older ones are Postgres's.
pub const SUMMARIES_KEPT: usize = 10;

/// Orders a stream's chat messages: by time, then where they were read (unique).
pub type ChatKey = (Millis, Arc<str>, u32, u64);

/// Orders a stream's summaries: by their last message (time, then where it was read).
pub type SummaryKey = (Millis, String, u32, u64);

/// The key of a chat summary.
pub fn summary_key(summary: &ChatSummary) -> SummaryKey {
    (
        summary.last_ts,
        summary.last_source.clone(),
        summary.last_partition,
        summary.last_offset,
    )
}

/// The key of a chat message.
pub fn chat_key(message: &ChatMessage) -> ChatKey {
    (
        message.ts,
        Arc::clone(&message.source),
        message.partition,
        message.offset,
    )
}

/// A chat summary, with the text the summarizer made for it once it has.
#[derive(Debug, Clone)]
pub struct StoredSummary {
    /// The `chat_summaries` row.
    pub row: Row,
    /// The abstractive text (`[summarizer]`).
    pub text: Option<Arc<str>>,
}

impl StoredSummary {
    /// The row's object with its `text` (null while it has none).
    pub fn value(&self) -> Value {
        let mut value = row_value(&self.row);
        value["text"] = self.text.as_deref().map_or(Value::Null, Value::from);
        value
    }
}

/// The rows of one window of one stream.
#[derive(Debug, Default)]
pub struct WindowView {
    /// `window_metrics` row.
    pub metrics: Option<Row>,
    /// `window_top_emojis` row.
    pub top: Option<Row>,
    /// `window_emojis` rows by emoji.
    pub emojis: BTreeMap<String, Row>,
    /// `window_revenue` rows by (kind, currency).
    pub revenue: BTreeMap<(String, String), Row>,
}

impl WindowView {
    fn rows(&self) -> impl Iterator<Item = &Row> {
        self.metrics
            .iter()
            .chain(self.top.iter())
            .chain(self.emojis.values())
            .chain(self.revenue.values())
    }
}

/// Everything kept about one stream.
#[derive(Debug)]
pub struct StreamView {
    /// Windows by (label, start).
    pub windows: BTreeMap<(Arc<str>, Millis), WindowView>,
    /// Moments by (metric, start).
    pub moments: BTreeMap<(String, Millis), Row>,
    /// The `stream_totals` row.
    pub totals: Option<Row>,
    /// Reactions per emoji since this process started (from the base window's rows).
    pub emoji_totals: BTreeMap<String, u64>,
    /// The latest reactions, newest first.
    pub recent_reactions: VecDeque<RecentReaction>,
    /// The latest [`CHAT_KEPT`] chat messages.
    pub chat: BTreeMap<ChatKey, Arc<ChatMessage>>,
    /// The latest [`SUMMARIES_KEPT`] chat summaries, by their last message.
    pub summaries: BTreeMap<SummaryKey, StoredSummary>,
    /// Sends to the stream's followers: made for the first one and dropped by eviction once
    /// none is left, since a channel holds its whole backlog's slots (about 12 KiB), which the
    /// view of every stream nobody follows would otherwise carry (1.2 GB for 100,000 streams).
    push: Option<broadcast::Sender<Arc<str>>>,
    /// Changes applied but not pushed yet: the stream was pushed less than a push interval ago.
    pending: Vec<(Row, isize)>,
    /// When the stream may be pushed again.
    next_push: Option<Instant>,
    /// The output frontier when the view was created (or first seen by eviction, when there was
    /// none yet; 0 when a follower created it: [`StoreState::followed_view`]), moved up to the
    /// time of each reaction ingested since: a view that has nothing yet stays while this is
    /// within the retention. A reaction is pending in the dataflow until
    /// the frontier passes its time, so a frontier that lagged when it was ingested (a source
    /// with nothing to read yet) must not retire it before its rows arrive.
    active: Option<Millis>,
}

impl StreamView {
    fn new(active: Option<Millis>) -> Self {
        Self {
            active,
            windows: BTreeMap::new(),
            moments: BTreeMap::new(),
            totals: None,
            emoji_totals: BTreeMap::new(),
            recent_reactions: VecDeque::new(),
            chat: BTreeMap::new(),
            summaries: BTreeMap::new(),
            push: None,
            pending: Vec::new(),
            next_push: None,
        }
    }

    /// Whether rows within the retention keep the view (windows, moments, chat).
    fn holds_rows(&self) -> bool {
        !self.windows.is_empty() || !self.moments.is_empty() || !self.chat.is_empty()
    }

    /// Clients following the stream.
    fn followers(&self) -> usize {
        self.push
            .as_ref()
            .map_or(0, broadcast::Sender::receiver_count)
    }

    fn subscribe(&mut self) -> broadcast::Receiver<Arc<str>> {
        self.push
            .get_or_insert_with(|| broadcast::channel(PUSH_BACKLOG).0)
            .subscribe()
    }

    /// Whether the dataflow has produced anything for the stream (a stream known only from a
    /// subscription or an ingested reaction still counts as unknown).
    pub fn has_results(&self) -> bool {
        self.totals.is_some() || !self.windows.is_empty() || !self.chat.is_empty()
    }

    /// The view of one window, created empty on first use.
    fn window_mut(&mut self, key: &WindowKey) -> &mut WindowView {
        self.windows
            .entry((key.window.clone(), key.start))
            .or_default()
    }

    /// The latest `window_metrics` row of a window label.
    pub fn latest_metrics(&self, label: &str) -> Option<&Row> {
        self.windows
            .iter()
            .rev()
            .filter(|((l, _), _)| &**l == label)
            .find_map(|(_, view)| view.metrics.as_ref())
    }
}

/// Store-wide state behind one lock.
#[derive(Debug, Default)]
pub struct StoreState {
    /// Streams by id.
    pub streams: BTreeMap<String, StreamView>,
    /// Reactions per emoji over all streams since this process started.
    pub emoji_totals: BTreeMap<String, u64>,
    /// The latest reactions over all streams, newest first.
    pub recent_reactions: VecDeque<RecentReaction>,
    /// The dataflow's output frontier (None once the input ended).
    pub frontier: Option<Millis>,
    /// When the store reached `frontier` (epoch ms): an update's `computed_at`.
    pub frontier_at: Millis,
    /// Dead letters seen.
    pub dead_letters: u64,
    /// The latest dead letters, newest first.
    pub recent_dead_letters: VecDeque<DeadLetter>,
    /// Configured kinds' rows.
    pub kinds: KindViews,
    evicted_below: Millis,
    /// Followed streams with pending changes.
    pending_streams: BTreeSet<String>,
}

impl StoreState {
    /// The view of a stream, created (as of the current frontier) when there is none.
    fn view_mut(&mut self, stream_id: &str) -> &mut StreamView {
        let created = self.frontier;
        self.streams
            .entry(stream_id.to_owned())
            .or_insert_with(|| StreamView::new(created))
    }

    /// The view of a stream a client follows, created as never active when there is none: such
    /// a view holds nothing but its followers, so it goes with the last of them, where one
    /// active from the current frontier would stay for the whole retention (ids named by the
    /// thousand, a view and its push channel each).
    fn followed_view(&mut self, stream_id: &str) -> &mut StreamView {
        self.streams
            .entry(stream_id.to_owned())
            .or_insert_with(|| StreamView::new(Some(0)))
    }
}

/// Shape of the store: which window feeds session totals, retention, k of top-k.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// Label of the smallest tumbling window: each event is in exactly one of its windows, so
    /// its emoji rows add up to exact totals.
    pub base_window: String,
    /// Windows ending more than this before the frontier are dropped from memory.
    pub retention: Millis,
    /// k of the top-k lists.
    pub top_k: usize,
    /// Longest top-k list, ties included.
    pub top_max_entries: usize,
    /// Shortest time between two updates of one stream to its clients: the changes of flushes
    /// in between are sent together, one version per row key (zero: every flush).
    pub push_interval: Duration,
    /// Updates a second all live clients together may be sent (zero: no bound): while they
    /// would need more at `push_interval`, every stream's interval widens to clients / budget
    /// (`ViewStore::measure_push_interval`).
    pub push_budget: u64,
}

impl StoreSettings {
    /// The top emojis of `counts` as this server lists them.
    pub fn top(&self, counts: &BTreeMap<String, u64>) -> Top {
        top_with_ties(counts, self.top_k, self.top_max_entries)
    }
}

/// The store shared by the dataflow sinks (writers) and the API (readers).
#[derive(Debug)]
pub struct ViewStore {
    state: RwLock<StoreState>,
    /// Held by a sink from applying a flush until its pushes are sent, so clients get the
    /// workers' flushes in the order they were applied; readers never wait for it.
    publishing: Mutex<()>,
    /// Its settings.
    pub settings: StoreSettings,
    /// The push interval in effect (microseconds): `push_interval`, or wider past the budget
    /// (`measure_push_interval`).
    push_interval_in_effect: AtomicU64,
}

/// One row change of a flush, as the push channel reports it.
struct Change<'a> {
    row: &'a Row,
    diff: isize,
}

/// An update ready to be sent: a stream's changes since its last update.
struct Due {
    push: broadcast::Sender<Arc<str>>,
    changes: Vec<(Row, isize)>,
}

impl Due {
    fn send(self, frontier: Option<Millis>, computed_at: Millis) {
        let message = update_message(frontier, computed_at, &self.changes);
        // No receiver left is not an error: the clients went away.
        let _ = self.push.send(Arc::from(message));
    }
}

/// A view's pending changes as an update, whether or not its interval has passed; the stream's
/// next update waits `interval` from `now` whichever way this one went out.
fn take_pending(view: &mut StreamView, now: Instant, interval: Duration) -> Option<Due> {
    if view.pending.is_empty() {
        return None;
    }
    let Some(push) = view.push.clone() else {
        // Its followers left and eviction took the channel: nobody to send the changes to.
        view.pending.clear();
        return None;
    };
    view.next_push = Some(now + interval);
    Some(Due {
        push,
        changes: std::mem::take(&mut view.pending),
    })
}

fn push_front_bounded<T>(ring: &mut VecDeque<T>, item: T, limit: usize) {
    ring.push_front(item);
    ring.truncate(limit);
}

impl Sink for ViewStore {
    fn flush(&self, flush: &Arc<Flush>) {
        self.apply(flush.frontier, &flush.updates);
    }
}

impl ViewStore {
    /// An empty store.
    pub fn new(settings: StoreSettings) -> Self {
        Self {
            state: RwLock::new(StoreState::default()),
            publishing: Mutex::new(()),
            push_interval_in_effect: AtomicU64::new(settings.push_interval.as_micros() as u64),
            settings,
        }
    }

    /// The push interval in effect: `push_interval`, or wider past `push_budget`.
    pub fn push_interval_in_effect(&self) -> Duration {
        Duration::from_micros(self.push_interval_in_effect.load(Ordering::Relaxed))
    }

    /// Reads the state. A poisoned lock is recovered: every writer leaves the maps consistent
    /// between statements, and readers must keep serving.
    pub fn read(&self) -> RwLockReadGuard<'_, StoreState> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, StoreState> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies one flush of consolidated changes `(row, time, diff)` that the `frontier` has
    /// passed, then pushes the changes of each followed stream whose push interval has passed
    /// (the others wait for a later flush or the server's timer).
    /// `updates` come in time order, a time's retractions first (a replaced row is -old +new).
    pub fn apply(&self, frontier: Option<Millis>, updates: &[(Row, Millis, isize)]) {
        let mut by_stream: BTreeMap<&str, Vec<Change<'_>>> = BTreeMap::new();
        let mut dead_letters = Vec::new();
        let mut reactions = Vec::new();
        let mut kind_rows = Vec::new();
        for (row, _, diff) in updates.iter() {
            match (row, row.stream_id()) {
                (Row::DeadLetter(dead), _) => dead_letters.push((dead, *diff)),
                (Row::CustomMetrics { .. } | Row::Alert(_), _) => kind_rows.push((row, *diff)),
                // Shown as "last reactions", not pushed: clients read them with the statistics.
                // Equal reactions at one time are one row counted `diff` times.
                (Row::Reaction(reaction), _) => {
                    let copies = (*diff).clamp(0, RECENT_REACTIONS as isize) as usize;
                    reactions.extend(std::iter::repeat_n(reaction, copies));
                }
                (_, Some(stream_id)) => by_stream
                    .entry(stream_id)
                    .or_default()
                    .push(Change { row, diff: *diff }),
                (_, None) => {}
            }
        }
        let _publishing = self.publishing.lock().unwrap_or_else(|p| p.into_inner());
        let applied_at = wall_clock_ms();
        // One stream per write lock: a reader waits for at most one stream's changes, not for a
        // whole flush (every live window of every stream changes at each tick).
        for (stream_id, changes) in by_stream {
            let mut state = self.write();
            let StoreState {
                streams,
                emoji_totals,
                frontier: created,
                ..
            } = &mut *state;
            let view = streams
                .entry(stream_id.to_owned())
                .or_insert_with(|| StreamView::new(*created));
            for change in &changes {
                self.apply_row(view, emoji_totals, change.row, change.diff);
            }
            if view.followers() > 0 {
                let changed = changes.iter().map(|c| (c.row.clone(), c.diff));
                view.pending.extend(changed);
                if !state.pending_streams.contains(stream_id) {
                    state.pending_streams.insert(stream_id.to_owned());
                }
            }
        }
        let mut state = self.write();
        let StoreState {
            streams,
            recent_reactions,
            frontier: created,
            ..
        } = &mut *state;
        for reaction in reactions {
            let recent = RecentReaction::from(&**reaction);
            let view = streams
                .entry(reaction.stream_id.clone())
                .or_insert_with(|| StreamView::new(*created));
            push_front_bounded(&mut view.recent_reactions, recent.clone(), RECENT_REACTIONS);
            push_front_bounded(recent_reactions, recent, RECENT_REACTIONS);
        }
        for (row, diff) in kind_rows {
            state.kinds.apply(row, diff);
        }
        for (dead, diff) in dead_letters {
            state.dead_letters += diff.max(0) as u64;
            push_front_bounded(
                &mut state.recent_dead_letters,
                dead.clone(),
                RECENT_DEAD_LETTERS,
            );
        }
        state.frontier = frontier;
        state.frontier_at = applied_at;
        self.evict(&mut state);
        let due = self.take_due(&mut state);
        // Messages are built after the readers are let back in.
        drop(state);
        for update in due {
            update.send(frontier, applied_at);
        }
    }

    /// Sends the pending changes whose push interval has passed, after measuring the interval
    /// against the push budget for `live_clients`; the server calls this every push interval,
    /// also for streams whose changes stopped coming.
    pub fn publish_due(&self, live_clients: usize) {
        let _publishing = self.publishing.lock().unwrap_or_else(|p| p.into_inner());
        self.measure_push_interval(live_clients);
        let mut state = self.write();
        let due = self.take_due(&mut state);
        let (frontier, frontier_at) = (state.frontier, state.frontier_at);
        drop(state);
        for update in due {
            update.send(frontier, frontier_at);
        }
    }

    /// Takes the pending changes of every followed stream that may be pushed now.
    fn take_due(&self, state: &mut StoreState) -> Vec<Due> {
        let now = Instant::now();
        let interval = self.push_interval_in_effect();
        let mut due = Vec::new();
        let StoreState {
            streams,
            pending_streams,
            ..
        } = state;
        pending_streams.retain(|stream_id| {
            let Some(view) = streams.get_mut(stream_id) else {
                return false;
            };
            if view.followers() == 0 {
                view.pending.clear();
                return false;
            }
            if view.next_push.is_some_and(|next| next > now) {
                return true;
            }
            due.extend(take_pending(view, now, interval));
            false
        });
        due
    }

    /// Sets the time a stream's next update waits after one: `push_interval`, or longer while
    /// `live_clients` would need more than `push_budget` messages a second at that interval.
    /// Each message costs a wake-up, a frame, a system call and a TCP segment per client
    /// whatever its size, so a large audience gets fewer, larger updates instead of a backlog
    /// that delays them all (issue 11's fan-out: 10,000 clients on two shared cores kept up with
    /// ~40,000 messages a second, not ~100,000). Every client counts, whether or not its stream
    /// changes now: counted from the streams with pending changes, a stream pushed as soon as it
    /// changed would never be seen, and the budget would not hold. Never beyond the longest
    /// configurable interval. Without an interval every flush is pushed (and no ticker runs).
    fn measure_push_interval(&self, live_clients: usize) {
        let StoreSettings {
            push_interval,
            push_budget,
            ..
        } = self.settings;
        if push_interval.is_zero() || push_budget == 0 {
            return;
        }
        let shared = Duration::from_secs_f64(live_clients as f64 / push_budget as f64);
        let interval = push_interval.max(shared.min(Duration::from_millis(MAX_PUSH_INTERVAL_MS)));
        self.push_interval_in_effect
            .store(interval.as_micros() as u64, Ordering::Relaxed);
    }

    /// Applies one row change to its stream's view (and, for base-window emoji rows, to the
    /// process-wide emoji totals).
    fn apply_row(
        &self,
        view: &mut StreamView,
        all_emoji_totals: &mut BTreeMap<String, u64>,
        row: &Row,
        diff: isize,
    ) {
        let base = self.settings.base_window.as_str();
        let insert = diff > 0;
        // Replace on insert; on retraction, remove only the row retracted (a newer one stays).
        fn put<K: Ord>(map: &mut BTreeMap<K, Row>, key: K, row: &Row, insert: bool) {
            if insert {
                map.insert(key, row.clone());
            } else if map.get(&key) == Some(row) {
                map.remove(&key);
            }
        }
        fn put_one(slot: &mut Option<Row>, row: &Row, insert: bool) {
            if insert {
                *slot = Some(row.clone());
            } else if slot.as_ref() == Some(row) {
                *slot = None;
            }
        }
        match row {
            Row::WindowMetrics { key, .. } => {
                let window = view.window_mut(key);
                put_one(&mut window.metrics, row, insert);
            }
            Row::WindowTopEmojis { key, .. } => {
                let window = view.window_mut(key);
                put_one(&mut window.top, row, insert);
            }
            Row::WindowEmoji {
                key, emoji, count, ..
            } => {
                let window = view.window_mut(key);
                put(&mut window.emojis, emoji.clone(), row, insert);
                if &*key.window == base {
                    let delta = *count as i128 * diff as i128;
                    for totals in [&mut view.emoji_totals, all_emoji_totals] {
                        add_session_count(totals, emoji, delta);
                    }
                }
            }
            Row::WindowRevenue {
                key,
                kind,
                currency,
                ..
            } => {
                let window = view.window_mut(key);
                put(
                    &mut window.revenue,
                    (kind.clone(), currency.clone()),
                    row,
                    insert,
                );
            }
            Row::Moment { moment, .. } => {
                put(
                    &mut view.moments,
                    (moment.metric.clone(), moment.start),
                    row,
                    insert,
                );
            }
            Row::StreamTotals { .. } => put_one(&mut view.totals, row, insert),
            Row::ChatMessage(message) if insert => {
                view.chat.insert(chat_key(message), Arc::clone(message));
                if view.chat.len() > CHAT_KEPT {
                    view.chat.pop_first();
                }
            }
            Row::ChatSummary(summary) if insert => {
                let text = view
                    .summaries
                    .remove(&summary_key(summary))
                    .and_then(|s| s.text);
                let stored = StoredSummary {
                    row: row.clone(),
                    text,
                };
                view.summaries.insert(summary_key(summary), stored);
                if view.summaries.len() > SUMMARIES_KEPT {
                    view.summaries.pop_first();
                }
            }
            Row::ChatMessage(_)
            | Row::ChatSummary(_)
            | Row::DeadLetter(_)
            | Row::Reaction(_)
            | Row::CustomMetrics { .. }
            | Row::Alert(_) => {}
        }
    }

    /// Drops windows and moments that ended more than the retention before the frontier, and
    /// then streams with nothing left and nobody following them (one only subscribed to, or
    /// quiet for longer than the retention): memory follows the retention, not how many stream
    /// ids were ever named. At most once per second of the frontier.
    fn evict(&self, state: &mut StoreState) {
        let Some(frontier) = state.frontier else {
            return;
        };
        let cutoff = frontier.saturating_sub(self.settings.retention);
        if cutoff < state.evicted_below + 1_000 {
            return;
        }
        state.evicted_below = cutoff;
        state.kinds.evict(cutoff);
        for view in state.streams.values_mut() {
            // A window whose rows were all withdrawn has nothing to show, whatever its end.
            view.windows.retain(|_, window| {
                window
                    .rows()
                    .next()
                    .and_then(window_end)
                    .is_some_and(|end| end > cutoff)
            });
            view.moments.retain(|_, row| match row {
                Row::Moment { moment, .. } => moment.end > cutoff,
                _ => true,
            });
            view.chat.retain(|(ts, ..), _| *ts >= cutoff);
            if view.followers() == 0 {
                view.push = None;
            }
        }
        state.streams.retain(|_, view| {
            let active = *view.active.get_or_insert(frontier);
            view.holds_rows() || view.followers() > 0 || active > cutoff
        });
    }

    /// Notes a reaction as it was ingested: its stream's view stays (see `active`) until the
    /// rows it leads to arrive, "last reactions" among them.
    pub fn note_ingested_reaction(&self, stream_id: &str, ts: Millis) {
        let mut state = self.write();
        let view = state.view_mut(stream_id);
        // Not beyond the wall clock: a far-future time (the dataflow dead-letters it) must not
        // keep the view for ever.
        let pending = ts.min(wall_clock_ms());
        view.active = Some(view.active.map_or(pending, |active| active.max(pending)));
    }

    /// A follower of `stream_id` left, its receiver dropped: once nobody follows the stream, its
    /// push channel goes, and so does its view if followers alone kept it. Eviction would do
    /// both, but only when the frontier moves: while a source stalls, every stream id followed
    /// and left would stay in memory.
    pub fn unfollowed(&self, stream_id: &str) {
        // A follow holds this throughout: no view goes between its creation and the subscription.
        let _publishing = self.publishing.lock().unwrap_or_else(|p| p.into_inner());
        let mut state = self.write();
        let Some(view) = state.streams.get_mut(stream_id) else {
            return;
        };
        if view.followers() > 0 {
            return;
        }
        view.push = None;
        if view.active == Some(0) && !view.holds_rows() {
            state.streams.remove(stream_id);
        }
    }

    /// Follows a stream: its changes from now on, and a snapshot of everything before them
    /// (creating its entry, so a client may wait for a stream that has not produced anything
    /// yet). The stream's pending changes go to its other clients first: they are in the
    /// snapshot, and a later update merged with them could withdraw a row the snapshot shows as
    /// a value the new client never had.
    pub fn follow(&self, stream_id: &str) -> (broadcast::Receiver<Arc<str>>, String) {
        // Held throughout: no flush comes between the pending update, the subscription and the
        // snapshot.
        let _publishing = self.publishing.lock().unwrap_or_else(|p| p.into_inner());
        let mut state = self.write();
        let interval = self.push_interval_in_effect();
        let pending = take_pending(state.followed_view(stream_id), Instant::now(), interval);
        let (frontier, frontier_at) = (state.frontier, state.frontier_at);
        drop(state);
        // Sent before the new client subscribes, so that its channel does not carry it.
        if let Some(update) = pending {
            update.send(frontier, frontier_at);
        }
        let receiver = self.write().followed_view(stream_id).subscribe();
        (receiver, self.snapshot(stream_id))
    }

    /// A stream's activity: the events of its base windows ending after the minute before
    /// `frontier` (live ones included; None: the minute before the stream's latest window ends).
    pub fn activity(&self, view: &StreamView, frontier: Option<Millis>) -> u64 {
        let base_windows = view
            .windows
            .iter()
            .filter(|((label, _), _)| **label == *self.settings.base_window);
        let base_metrics = base_windows.filter_map(|(_, window)| match &window.metrics {
            Some(Row::WindowMetrics { key, metrics, .. }) => Some((key.end, metrics)),
            _ => None,
        });
        let until = frontier.or_else(|| base_metrics.clone().map(|(end, _)| end).max());
        base_metrics
            .filter(|(end, _)| until.is_some_and(|until| *end + 60_000 > until))
            .map(|(_, m)| m.chat_messages + m.reactions + m.transactions)
            .sum()
    }

    /// The summary of one stream, with its [activity](ViewStore::activity).
    pub fn summary(
        &self,
        stream_id: &str,
        view: &StreamView,
        frontier: Option<Millis>,
    ) -> StreamSummary {
        self.summary_with(stream_id, view, self.activity(view, frontier))
    }

    /// The summary of one stream whose activity is known.
    pub fn summary_with(&self, stream_id: &str, view: &StreamView, activity: u64) -> StreamSummary {
        let totals = match &view.totals {
            Some(Row::StreamTotals { totals, .. }) => Some(totals),
            _ => None,
        };
        let current_viewers = match view.latest_metrics(&self.settings.base_window) {
            Some(Row::WindowMetrics { metrics, .. }) => metrics.viewers_end,
            _ => 0,
        };
        let top = self.settings.top(&view.emoji_totals);
        StreamSummary {
            stream_id: stream_id.to_owned(),
            title: totals.and_then(|t| t.title.clone()),
            category: totals.and_then(|t| t.category.clone()),
            status: totals.and_then(|t| t.status.clone()),
            live_since: totals.and_then(|t| t.live_since),
            chat_messages: totals.map_or(0, |t| t.chat_messages),
            reactions: totals.map_or(0, |t| t.reactions),
            transactions: totals.map_or(0, |t| t.transactions),
            peak_viewers: totals.map_or(0, |t| t.peak_viewers),
            current_viewers,
            activity,
            top_emojis: top.entries.into_iter().map(Into::into).collect(),
            top_emojis_truncated: top.truncated,
            recent_reactions: view.recent_reactions.iter().cloned().collect(),
        }
    }

    /// What a live client gets on connect: the stream's summary, its recent base windows, the
    /// latest window of every other label, its moments.
    pub fn snapshot(&self, stream_id: &str) -> String {
        let state = self.read();
        let Some(view) = state.streams.get(stream_id) else {
            return json!({"type": "snapshot", "stream_id": stream_id, "frontier": state.frontier, "summary": null, "rows": []}).to_string();
        };
        let base = self.settings.base_window.as_str();
        let mut rows: Vec<Value> = Vec::new();
        let mut labels: BTreeMap<&str, usize> = BTreeMap::new();
        for ((label, _), window) in view.windows.iter().rev() {
            let seen = labels.entry(label).or_default();
            let limit = if &**label == base {
                SNAPSHOT_WINDOWS
            } else {
                1
            };
            if *seen < limit {
                *seen += 1;
                rows.extend(window.rows().map(row_value));
            }
        }
        rows.extend(view.moments.values().map(row_value));
        rows.extend(view.totals.iter().map(row_value));
        rows.extend(
            view.summaries
                .values()
                .next_back()
                .map(StoredSummary::value),
        );
        let latest_chat = view.chat.values().rev().take(SNAPSHOT_CHAT);
        rows.extend(latest_chat.map(|m| row_value(&Row::ChatMessage(Arc::clone(m)))));
        json!({
            "type": "snapshot",
            "stream_id": stream_id,
            "frontier": state.frontier,
            "summary": self.summary(stream_id, view, state.frontier),
            "rows": rows,
        })
        .to_string()
    }
}

/// Texts are kept with the summaries the store still holds (older ones are Postgres's) and pushed
/// to the stream's live clients as an update of the summary row.
impl SummaryTextListener for ViewStore {
    fn summary_text(&self, summary: &ChatSummary, text: &str) {
        let _publishing = self.publishing.lock().unwrap_or_else(|p| p.into_inner());
        let (push, pending, message, frontier, frontier_at) = {
            let mut state = self.write();
            let (frontier, frontier_at) = (state.frontier, state.frontier_at);
            let interval = self.push_interval_in_effect();
            let Some(view) = state.streams.get_mut(&summary.stream_id) else {
                return;
            };
            let Some(stored) = view.summaries.get_mut(&summary_key(summary)) else {
                return;
            };
            stored.text = Some(Arc::from(text));
            let value = stored.value();
            let Some(push) = view.push.clone().filter(|p| p.receiver_count() > 0) else {
                return;
            };
            // The stream's pending changes go first: they may hold this summary without its text.
            let pending = take_pending(view, Instant::now(), interval);
            let message = update_json(frontier, frontier_at, vec![value], Vec::new());
            (push, pending, message.to_string(), frontier, frontier_at)
        };
        if let Some(update) = pending {
            update.send(frontier, frontier_at);
        }
        // No receiver left is not an error: the clients went away.
        let _ = push.send(Arc::from(message));
    }
}

/// A row as its NDJSON object (with `table` and `final`).
pub fn row_value(row: &Row) -> Value {
    serde_json::to_value(RowJson(row)).unwrap_or(Value::Null)
}

fn window_end(row: &Row) -> Option<Millis> {
    match row {
        Row::WindowMetrics { key, .. }
        | Row::WindowEmoji { key, .. }
        | Row::WindowTopEmojis { key, .. }
        | Row::WindowRevenue { key, .. } => Some(key.end),
        _ => None,
    }
}

/// Distinct emojis a session total keeps: beyond, a new emoji replaces the least counted one, so
/// memory follows this bound rather than every emoji ever sent.
const MAX_SESSION_EMOJIS: usize = 10_000;

/// Adds `delta` to `emoji`'s session count; counts that reach zero are dropped.
fn add_session_count(totals: &mut BTreeMap<String, u64>, emoji: &str, delta: i128) {
    let current = totals.get(emoji).copied();
    let next = (i128::from(current.unwrap_or(0)) + delta).max(0) as u64;
    if next == 0 {
        totals.remove(emoji);
        return;
    }
    if current.is_none() && totals.len() >= MAX_SESSION_EMOJIS {
        let least = totals
            .iter()
            .min_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))
            .map(|(e, _)| e.clone());
        if let Some(least) = least {
            totals.remove(&least);
        }
    }
    totals.insert(emoji.to_owned(), next);
}

/// The push message of a stream's changes since its last update (one flush or several), keyed
/// like the tables: `rows` holds each key's row as the changes leave it, `removed` the previous
/// row of each key they withdrew without replacing. A replaced row is sent once, as its new value
/// (half the bytes of sending the retraction too, and the same for a client that keeps rows by
/// key).
fn update_message(
    frontier: Option<Millis>,
    computed_at: Millis,
    changes: &[(Row, isize)],
) -> String {
    // Per key, in order of first change: the row before the changes (the first change, when
    // that is a retraction) and after them (the last change, when that is an insertion). Changes
    // come in time order, a time's retractions first.
    let mut keys: HashMap<RowKey, usize> = HashMap::new();
    let mut versions: Vec<(Option<&Row>, Option<&Row>)> = Vec::new();
    for (row, diff) in changes {
        // Reactions, the only rows without a key, are not pushed.
        let Some(key) = RowKey::of(row) else {
            continue;
        };
        let after = (*diff > 0).then_some(row);
        match keys.entry(key) {
            Entry::Occupied(index) => versions[*index.get()].1 = after,
            Entry::Vacant(vacant) => {
                vacant.insert(versions.len());
                versions.push(((*diff < 0).then_some(row), after));
            }
        }
    }
    let (mut rows, mut removed) = (Vec::new(), Vec::new());
    for (before, after) in versions {
        match (before, after) {
            (_, Some(row)) => rows.push(row_value(row)),
            (Some(row), None) => removed.push(row_value(row)),
            (None, None) => {}
        }
    }
    update_json(frontier, computed_at, rows, removed)
}

/// An `update` push message.
fn update_json(
    frontier: Option<Millis>,
    computed_at: Millis,
    rows: Vec<Value>,
    removed: Vec<Value>,
) -> String {
    json!({
        "type": "update",
        "frontier": frontier,
        "computed_at": computed_at,
        "rows": rows,
        "removed": removed,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Millis = 3_600_000;

    fn store() -> ViewStore {
        ViewStore::new(StoreSettings {
            base_window: "10s".into(),
            retention: 60_000,
            top_k: 3,
            top_max_entries: 100,
            push_interval: Duration::ZERO,
            push_budget: 0,
        })
    }

    fn reaction(user_id: &str, ts: Millis) -> (Row, Millis, isize) {
        let reaction = Reaction {
            stream_id: "s1".into(),
            ts,
            user_id: user_id.into(),
            emoji: "🔥".into(),
            event_id: None,
        };
        (Row::Reaction(Box::new(reaction)), ts, 1)
    }

    fn recent_users(store: &ViewStore) -> Vec<String> {
        let state = store.read();
        state.streams.get("s1").map_or_else(Vec::new, |view| {
            view.recent_reactions
                .iter()
                .map(|r| r.user_id.clone())
                .collect()
        })
    }

    /// Session emoji totals hold at most `MAX_SESSION_EMOJIS` emojis, however many distinct
    /// ones arrive: a new one replaces the least counted, so a much-used emoji stays.
    #[test]
    fn session_emoji_totals_keep_their_bound_and_the_most_counted() {
        let mut totals = BTreeMap::new();
        add_session_count(&mut totals, "🔥", 5);
        for i in 0..MAX_SESSION_EMOJIS + 500 {
            add_session_count(&mut totals, &format!("e{i}"), 1);
            assert!(totals.len() <= MAX_SESSION_EMOJIS);
        }
        assert_eq!(totals.len(), MAX_SESSION_EMOJIS);
        assert_eq!(totals["🔥"], 5);
        assert_eq!(totals[&format!("e{}", MAX_SESSION_EMOJIS + 499)], 1);
        add_session_count(&mut totals, "🔥", -5);
        assert!(
            !totals.contains_key("🔥"),
            "a count back at zero is dropped"
        );
    }

    /// Following stream ids that nothing else names holds a view each only while followed:
    /// 1,000 of them go with their followers, not a retention later (an hour by default).
    #[test]
    fn views_only_followed_go_with_their_followers() {
        let store = store();
        store.apply(Some(HOUR), &[]);
        let followers: Vec<_> = (0..1_000)
            .map(|i| store.follow(&format!("ghost-{i}")))
            .collect();
        store.apply(Some(HOUR + 2_000), &[]);
        assert_eq!(store.read().streams.len(), 1_000, "followed views stay");
        drop(followers);
        store.apply(Some(HOUR + 4_000), &[]);
        assert!(store.read().streams.is_empty());
        // A followed stream that has rows keeps them for the retention like any other.
        let store = self::store();
        let follower = store.follow("s1");
        store.apply(Some(5_000), &[(emoji_row("🔥", 1), 5_000, 1)]);
        drop(follower);
        store.apply(Some(65_000), &[]);
        assert!(store.read().streams.contains_key("s1"));
        store.apply(Some(75_000), &[]);
        assert!(!store.read().streams.contains_key("s1"));
    }

    /// Only a followed stream's view holds a push channel (its backlog's slots, about 12 KiB),
    /// and it goes with the last follower: a view per stream nobody follows is small.
    #[test]
    fn push_channels_exist_while_streams_are_followed() {
        let store = store();
        let counted = |stream: usize, count: u64| {
            let mut row = emoji_row("🔥", count);
            if let Row::WindowEmoji { key, .. } = &mut row {
                key.stream_id = format!("s{stream}").into();
                (key.start, key.end) = (95_000, 105_000);
            }
            (row, 100_000, 1)
        };
        store.apply(
            Some(100_000),
            &(0..100).map(|i| counted(i, 1)).collect::<Vec<_>>(),
        );
        let views_and_channels = |store: &ViewStore| {
            let state = store.read();
            let channels = state.streams.values().filter(|v| v.push.is_some()).count();
            (state.streams.len(), channels)
        };
        assert_eq!(views_and_channels(&store), (100, 0));
        let (mut follower, _) = store.follow("s1");
        assert_eq!(views_and_channels(&store), (100, 1));
        store.apply(Some(102_000), &[counted(1, 2)]);
        assert!(follower.try_recv().is_ok(), "the follower got its update");
        drop(follower);
        store.apply(Some(104_000), &[]);
        assert_eq!(views_and_channels(&store), (100, 0));
        // A follower leaving says so: with the frontier standing still (a stalled source), the
        // channel goes, and a view only followers kept goes with it.
        let followers: Vec<_> = (0..1_000)
            .map(|i| store.follow(&format!("ghost-{i}")))
            .chain([store.follow("s2")])
            .collect();
        assert_eq!(views_and_channels(&store), (1_100, 1_001));
        drop(followers);
        for i in 0..1_000 {
            store.unfollowed(&format!("ghost-{i}"));
        }
        store.unfollowed("s2");
        assert_eq!(views_and_channels(&store), (100, 0));
    }

    /// A reaction ingested while the frontier still lags far behind its time (a source that
    /// had nothing to read yet) is pending in the dataflow: the frontier catching up must not
    /// retire its stream before the rows it leads to arrive.
    #[test]
    fn reactions_ingested_behind_a_lagging_frontier_stay_until_their_rows_arrive() {
        let store = store();
        store.apply(Some(0), &[]);
        let now = 1_000 * HOUR;
        store.note_ingested_reaction("s1", now);
        store.apply(Some(now - 5_000), &[]);
        assert!(store.read().streams.contains_key("s1"));
        store.apply(Some(now + 100), &[reaction("ann", now)]);
        assert_eq!(recent_users(&store), ["ann"]);
    }

    /// A stream that only ever had reactions, and no rows, retires once its latest reaction is
    /// older than the retention.
    #[test]
    fn streams_with_only_old_reactions_retire_after_the_retention() {
        let store = store();
        let now = 1_000 * HOUR;
        store.apply(Some(now), &[]);
        store.note_ingested_reaction("s1", now);
        store.apply(Some(now + 30_000), &[reaction("ann", now)]);
        assert_eq!(recent_users(&store), ["ann"]);
        store.apply(Some(now + 62_000), &[]);
        assert!(recent_users(&store).is_empty());
    }

    /// A window whose rows were all withdrawn holds nothing: it goes with the next eviction
    /// instead of keeping its stream's view for ever.
    #[test]
    fn windows_whose_rows_were_all_withdrawn_retire() {
        let store = store();
        store.apply(Some(5_000), &[(emoji_row("🔥", 1), 5_000, 1)]);
        store.apply(Some(6_000), &[(emoji_row("🔥", 1), 6_000, -1)]);
        // The first eviction notes when the view was last active; the next one retires it.
        store.apply(Some(HOUR), &[]);
        store.apply(Some(2 * HOUR), &[]);
        assert!(!store.read().streams.contains_key("s1"));
    }

    /// `reactions` rows are the latest reactions, newest first, per stream and overall; they
    /// are not pushed to the stream's clients.
    #[test]
    fn reaction_rows_are_the_last_reactions() {
        let store = store();
        let (mut pushed, _) = store.follow("s1");
        let rows: Vec<_> = (0..12)
            .map(|i| reaction(&format!("u{i}"), 1_000 + i))
            .collect();
        store.apply(Some(2_000), &rows);
        let newest: Vec<String> = (2..12).rev().map(|i| format!("u{i}")).collect();
        assert_eq!(recent_users(&store), newest);
        let overall: Vec<String> = store
            .read()
            .recent_reactions
            .iter()
            .map(|r| r.user_id.clone())
            .collect();
        assert_eq!(overall, newest);
        assert!(pushed.try_recv().is_err(), "nothing pushed");
    }

    fn emoji_row(emoji: &str, count: u64) -> Row {
        Row::WindowEmoji {
            key: WindowKey {
                stream_id: "s1".into(),
                window: "10s".into(),
                start: 0,
                end: 10_000,
            },
            emoji: emoji.into(),
            count,
            is_final: false,
        }
    }

    fn counts(rows: &Value) -> Vec<(String, u64)> {
        rows.as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["emoji"].as_str().unwrap().to_owned(),
                    r["count"].as_u64().unwrap(),
                )
            })
            .collect()
    }

    /// An update carries each key once: a replaced row as its new value only, a withdrawn row as
    /// the value clients hold (the one before the flush), a row both added and withdrawn in one
    /// flush not at all.
    #[test]
    fn updates_carry_each_row_key_once() {
        let store = store();
        store.apply(
            Some(1_000),
            &[(emoji_row("🔥", 1), 500, 1), (emoji_row("💀", 1), 500, 1)],
        );
        let (mut pushed, _) = store.follow("s1");
        store.apply(
            Some(2_000),
            &[
                (emoji_row("🔥", 1), 1_500, -1),
                (emoji_row("🔥", 2), 1_500, 1),
                (emoji_row("💀", 1), 1_500, -1),
                (emoji_row("💀", 2), 1_500, 1),
                (emoji_row("😂", 1), 1_500, 1),
                (emoji_row("💀", 2), 1_600, -1),
                (emoji_row("😂", 1), 1_600, -1),
            ],
        );
        let message: Value = serde_json::from_str(&pushed.try_recv().unwrap()).unwrap();
        assert_eq!(counts(&message["rows"]), [("🔥".to_owned(), 2)]);
        assert_eq!(counts(&message["removed"]), [("💀".to_owned(), 1)]);
    }

    fn pushed_counts(receiver: &mut broadcast::Receiver<Arc<str>>) -> Option<Vec<(String, u64)>> {
        let message: Value = serde_json::from_str(&receiver.try_recv().ok()?).unwrap();
        Some(counts(&message["rows"]))
    }

    /// Within a push interval, a stream's later flushes wait and go out together, each key
    /// once; a client that connects meanwhile gets them in its snapshot, not on its channel.
    #[test]
    fn flushes_within_the_push_interval_go_out_together() {
        let store = ViewStore::new(StoreSettings {
            push_interval: Duration::from_secs(3_600),
            ..store().settings
        });
        let (mut first, _) = store.follow("s1");
        store.apply(Some(1_000), &[(emoji_row("🔥", 1), 500, 1)]);
        assert_eq!(pushed_counts(&mut first), Some(vec![("🔥".into(), 1)]));
        store.apply(
            Some(2_000),
            &[
                (emoji_row("🔥", 1), 1_500, -1),
                (emoji_row("🔥", 2), 1_500, 1),
            ],
        );
        store.apply(
            Some(3_000),
            &[
                (emoji_row("🔥", 2), 2_500, -1),
                (emoji_row("🔥", 3), 2_500, 1),
            ],
        );
        store.publish_due(1);
        assert_eq!(
            pushed_counts(&mut first),
            None,
            "held back within the interval"
        );
        // The interval has passed.
        store.write().streams.get_mut("s1").unwrap().next_push = Some(Instant::now());
        store.publish_due(1);
        assert_eq!(pushed_counts(&mut first), Some(vec![("🔥".into(), 3)]));

        store.apply(
            Some(4_000),
            &[
                (emoji_row("🔥", 3), 3_500, -1),
                (emoji_row("🔥", 4), 3_500, 1),
            ],
        );
        let (mut second, snapshot) = store.follow("s1");
        assert!(snapshot.contains("\"count\":4"), "{snapshot}");
        assert_eq!(pushed_counts(&mut first), Some(vec![("🔥".into(), 4)]));
        assert_eq!(pushed_counts(&mut second), None, "already in its snapshot");
    }

    /// The wait set after an update of `stream_id` that `apply` sent between `before` and now.
    fn assert_next_push(store: &ViewStore, stream_id: &str, before: Instant, wait: Duration) {
        let after = Instant::now();
        let next = store.read().streams[stream_id].next_push.unwrap();
        assert!(
            next >= before + wait && next <= after + wait,
            "next push in {:?}, not {wait:?}",
            next.duration_since(before)
        );
    }

    /// Past the push budget, a stream's next update waits all live clients / budget instead of
    /// the push interval, measured at the push ticker; clients of other streams count too.
    #[test]
    fn the_push_budget_widens_the_interval_by_all_live_clients() {
        let store = ViewStore::new(StoreSettings {
            push_interval: Duration::from_millis(100),
            push_budget: 100,
            ..store().settings
        });
        // Within the budget: 5 clients at 10 updates a second.
        let mut followers: Vec<_> = (0..5).map(|_| store.follow("s1").0).collect();
        store.publish_due(5);
        let before = Instant::now();
        store.apply(Some(1_000), &[(emoji_row("🔥", 1), 500, 1)]);
        assert_next_push(&store, "s1", before, Duration::from_millis(100));
        assert_eq!(
            pushed_counts(&mut followers[0]),
            Some(vec![("🔥".into(), 1)])
        );

        // 50 clients in all, 45 of them of other streams: 100 messages a second allow one
        // update every 0.5 s.
        store.publish_due(50);
        assert_eq!(store.push_interval_in_effect(), Duration::from_millis(500));
        store.write().streams.get_mut("s1").unwrap().next_push = None;
        let before = Instant::now();
        store.apply(
            Some(2_000),
            &[
                (emoji_row("🔥", 1), 1_500, -1),
                (emoji_row("🔥", 2), 1_500, 1),
            ],
        );
        assert_next_push(&store, "s1", before, Duration::from_millis(500));
        assert_eq!(
            pushed_counts(&mut followers[0]),
            Some(vec![("🔥".into(), 2)])
        );

        // Once they leave, the push interval holds again.
        store.publish_due(5);
        assert_eq!(store.push_interval_in_effect(), Duration::from_millis(100));

        // Without a budget, any audience gets the push interval.
        let unbounded = ViewStore::new(StoreSettings {
            push_budget: 0,
            ..store.settings.clone()
        });
        unbounded.publish_due(500);
        assert_eq!(
            unbounded.push_interval_in_effect(),
            Duration::from_millis(100)
        );
    }

    /// However many followers, a stream is pushed at least every `MAX_PUSH_INTERVAL_MS`.
    #[test]
    fn the_push_budget_never_widens_beyond_the_longest_interval() {
        let store = ViewStore::new(StoreSettings {
            push_interval: Duration::from_millis(100),
            push_budget: 1,
            ..store().settings
        });
        let _followers: Vec<_> = (0..100).map(|_| store.follow("s1").0).collect();
        store.publish_due(100);
        let longest = Duration::from_millis(MAX_PUSH_INTERVAL_MS);
        assert_eq!(store.push_interval_in_effect(), longest);
        let before = Instant::now();
        store.apply(Some(1_000), &[(emoji_row("🔥", 1), 500, 1)]);
        assert_next_push(&store, "s1", before, longest);
    }
}
