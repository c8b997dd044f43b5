//! Live push per stream over WebSocket and Server-Sent Events: a snapshot on connect, then the
//! stream's changes (one update per push interval at most). A client that falls behind is moved
//! on to a fresh snapshot (the per stream channel keeps a bounded backlog), and one that stops
//! reading is disconnected.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crowdpulse_connectors::live_input::wall_clock_ms;
use crowdpulse_dataflow::event::Millis;
use futures_util::stream::SplitStream;
use futures_util::{SinkExt, Stream, StreamExt};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::broadcast::Receiver;
use tokio_util::task::AbortOnDropHandle;
use warp::filters::sse::Event;
use warp::filters::ws::{Message, WebSocket};

use crate::metrics::{HttpCounters, Refusal};
use crate::models::ClientInfo;
use crate::store::ViewStore;

/// The connected live clients.
#[derive(Debug, Default)]
pub struct Clients {
    next_id: AtomicU64,
    connected: Mutex<BTreeMap<u64, Arc<Client>>>,
    /// Slots taken: the connected clients and those still being set up.
    slots: AtomicUsize,
}

/// A place among the live clients, taken before a connection is set up, so that clients arriving
/// together cannot overshoot `api.limits.max_live_clients`; given back when dropped.
#[derive(Debug)]
pub struct Slot {
    clients: Arc<Clients>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.clients.slots.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One connected client. Its counters are atomics of its own: they move with every message, and
/// a lock shared by all clients there would be taken hundreds of thousands of times a second
/// under a large fan-out.
#[derive(Debug)]
struct Client {
    id: u64,
    transport: &'static str,
    stream_id: String,
    connected_at: Millis,
    messages: AtomicU64,
    resyncs: AtomicU64,
}

impl Client {
    fn info(&self) -> ClientInfo {
        ClientInfo {
            id: self.id,
            transport: self.transport.to_owned(),
            stream_id: self.stream_id.clone(),
            connected_at: self.connected_at,
            messages: self.messages.load(Ordering::Relaxed),
            resyncs: self.resyncs.load(Ordering::Relaxed),
        }
    }
}

impl Clients {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, Arc<Client>>> {
        self.connected.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every connected client.
    pub fn list(&self) -> Vec<ClientInfo> {
        self.lock().values().map(|client| client.info()).collect()
    }

    /// How many are connected.
    pub fn count(&self) -> usize {
        self.lock().len()
    }

    /// A slot, while fewer than `max` are taken.
    pub fn take_slot(self: &Arc<Self>, max: usize) -> Option<Slot> {
        self.slots
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |taken| {
                (taken < max).then_some(taken + 1)
            })
            .ok()?;
        Some(Slot {
            clients: Arc::clone(self),
        })
    }

    fn register(slot: Slot, transport: &'static str, stream_id: &str) -> ClientGuard {
        let clients = &slot.clients;
        let client = Arc::new(Client {
            id: clients.next_id.fetch_add(1, Ordering::Relaxed),
            transport,
            stream_id: stream_id.to_owned(),
            connected_at: wall_clock_ms(),
            messages: AtomicU64::new(0),
            resyncs: AtomicU64::new(0),
        });
        clients.lock().insert(client.id, Arc::clone(&client));
        ClientGuard { slot, client }
    }
}

/// Registration of one client; dropping it (disconnect) unregisters it.
struct ClientGuard {
    slot: Slot,
    client: Arc<Client>,
}

impl ClientGuard {
    /// Whether anything was sent yet (a later snapshot is a resync).
    fn sent_before(&self) -> bool {
        self.client.messages.load(Ordering::Relaxed) > 0
    }

    /// Counts `messages` delivered, `resyncs` of them snapshots after falling behind.
    fn sent(&self, messages: u64, resyncs: u64) {
        self.client.messages.fetch_add(messages, Ordering::Relaxed);
        self.client.resyncs.fetch_add(resyncs, Ordering::Relaxed);
    }
}

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.slot.clients.lock().remove(&self.client.id);
    }
}

/// What a client is sent.
enum Push {
    /// The whole current state (on connect, and after falling behind).
    Snapshot(String),
    /// The stream's changes since its last update.
    Update(Arc<str>),
}

impl Push {
    fn kind(&self) -> &'static str {
        match self {
            Push::Snapshot(_) => "snapshot",
            Push::Update(_) => "update",
        }
    }

    fn into_text(self) -> String {
        match self {
            Push::Snapshot(text) => text,
            Push::Update(text) => text.to_string(),
        }
    }
}

/// One client's subscription to a stream. Dropped (the client left), it tells the store once its
/// receiver is gone ([`ViewStore::unfollowed`]).
struct Following {
    /// Present until dropped.
    receiver: Option<Receiver<Arc<str>>>,
    store: Arc<ViewStore>,
    stream_id: String,
}

impl Following {
    /// Follows `stream_id`; returns the subscription and the stream's snapshot.
    fn new(store: Arc<ViewStore>, stream_id: String) -> (Self, String) {
        let (receiver, snapshot) = store.follow(&stream_id);
        let following = Self {
            receiver: Some(receiver),
            store,
            stream_id,
        };
        (following, snapshot)
    }

    fn receiver(&mut self) -> &mut Receiver<Arc<str>> {
        self.receiver.as_mut().expect("present until dropped")
    }

    /// The next message: the next change, or a fresh snapshot after falling behind; None when
    /// the store is gone. Cancel-safe (a `select!` branch).
    async fn next_message(&mut self) -> Option<Push> {
        match self.receiver().recv().await {
            Ok(message) => Some(Push::Update(message)),
            Err(RecvError::Lagged(_)) => {
                // Skip everything missed: a snapshot is the latest state.
                Some(self.resync())
            }
            Err(RecvError::Closed) => None,
        }
    }

    /// The next message if one is already waiting: what a write can take along with the one it
    /// sends.
    fn ready_message(&mut self) -> Option<Push> {
        match self.receiver().try_recv() {
            Ok(message) => Some(Push::Update(message)),
            Err(TryRecvError::Lagged(_)) => Some(self.resync()),
            Err(TryRecvError::Empty | TryRecvError::Closed) => None,
        }
    }

    /// Follows the stream afresh after falling behind: the latest snapshot, and the changes after
    /// it.
    fn resync(&mut self) -> Push {
        let (fresh, snapshot) = self.store.follow(&self.stream_id);
        self.receiver = Some(fresh);
        Push::Snapshot(snapshot)
    }
}

impl Drop for Following {
    fn drop(&mut self) {
        drop(self.receiver.take());
        self.store.unfollowed(&self.stream_id);
    }
}

/// How many bytes of waiting messages one write to a WebSocket client may take along.
const BATCHED_WRITE_BYTES: usize = 16 * 1024;

/// Serves one WebSocket client until it leaves, stops reading, falls silent for `silence`
/// (pinged every third of it), or the server stops.
pub async fn serve_websocket(
    socket: WebSocket,
    store: Arc<ViewStore>,
    slot: Slot,
    (http, silence): (Arc<HttpCounters>, Duration),
    stream_id: String,
) {
    let guard = Clients::register(slot, "websocket", &stream_id);
    let (mut following, snapshot) = Following::new(store, stream_id);
    let (mut outgoing, incoming) = socket.split();
    // The client's frames are read by a task of its own, woken only when the client sends
    // something: polled from this loop, the read half would run once per message sent, and each
    // read attempt zeroes tungstenite's whole read buffer (128 KiB) first.
    let mut client_left =
        AbortOnDropHandle::new(tokio::spawn(until_closed(incoming, http, silence)));
    let every = silence / 3;
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pending = Some(Push::Snapshot(snapshot));
    loop {
        if let Some(push) = pending.take() {
            // A client that fell behind gets what is waiting in the same write: one flush (and
            // system call) for several frames instead of one each, up to a bound so a slow
            // reader's buffer stays small. Whether each message is a resync is noted, and
            // counted once the flush went through.
            let mut resyncs = vec![guard.sent_before() && push.kind() == "snapshot"];
            let mut fed_bytes = 0;
            let mut next = Some(push);
            let mut failed = false;
            while let Some(push) = next.take() {
                let text = push.into_text();
                fed_bytes += text.len();
                // A client that takes nothing for `api.limits.send_timeout` fails here or in
                // the flush: the server's stall guard on its socket (`crate::server`) covers
                // every connection.
                if outgoing.feed(Message::text(text)).await.is_err() {
                    failed = true;
                    break;
                }
                if fed_bytes < BATCHED_WRITE_BYTES {
                    next = following.ready_message();
                    if let Some(push) = &next {
                        resyncs.push(push.kind() == "snapshot");
                    }
                }
            }
            if failed || outgoing.flush().await.is_err() {
                break;
            }
            let resynced = resyncs.iter().filter(|r| **r).count() as u64;
            guard.sent(resyncs.len() as u64, resynced);
        }
        tokio::select! {
            next = following.next_message() => match next {
                Some(push) => pending = Some(push),
                None => break,
            },
            _ = &mut client_left => break,
            _ = ping.tick() => {
                if outgoing.send(Message::ping(Vec::new())).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = outgoing.close().await;
}

/// Reads a WebSocket client's frames until it closes, fails or sends nothing for `silence`
/// (counted; a client answers the server's pings, so only one whose network went away is
/// silent that long). Client messages are not part of the protocol (pings are answered by
/// warp); one beyond `api.limits.max_websocket_message_bytes` ends the connection and is counted.
async fn until_closed(
    mut incoming: SplitStream<WebSocket>,
    http: Arc<HttpCounters>,
    silence: Duration,
) {
    loop {
        let Ok(message) = tokio::time::timeout(silence, incoming.next()).await else {
            http.refuse(Refusal::WebSocketSilence);
            break;
        };
        let Some(message) = message else { break };
        match message {
            Ok(message) if message.is_close() => break,
            Ok(_) => {}
            Err(error) => {
                let cause = std::error::Error::source(&error)
                    .and_then(|cause| cause.downcast_ref::<tungstenite::Error>());
                if matches!(cause, Some(tungstenite::Error::Capacity(_))) {
                    http.refuse(Refusal::WebSocketMessage);
                }
                break;
            }
        }
    }
}

/// The event stream of one SSE client: `snapshot` first, then `update` events.
pub fn sse_events(
    store: Arc<ViewStore>,
    slot: Slot,
    stream_id: String,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
    let guard = Clients::register(slot, "sse", &stream_id);
    let (following, snapshot) = Following::new(store, stream_id);
    let first = Some(Push::Snapshot(snapshot));
    futures_util::stream::unfold(
        (following, first, guard),
        |(mut following, first, guard)| async move {
            let push = match first {
                Some(push) => push,
                None => following.next_message().await?,
            };
            let resynced = guard.sent_before() && push.kind() == "snapshot";
            guard.sent(1, u64::from(resynced));
            let event = Event::default().event(push.kind()).data(push.into_text());
            Some((Ok(event), (following, None, guard)))
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Slots are taken before a connection is set up and given back when it ends (or never
    /// starts), so clients arriving together cannot overshoot the cap.
    #[test]
    fn live_client_slots_are_capped_from_the_moment_they_are_taken() {
        let clients = Arc::new(Clients::default());
        let first = clients.take_slot(2).unwrap();
        let second = clients.take_slot(2).unwrap();
        assert!(
            clients.take_slot(2).is_none(),
            "two set up, none connected yet"
        );
        let guard = Clients::register(first, "sse", "s1");
        assert_eq!(clients.count(), 1);
        assert!(clients.take_slot(2).is_none());
        drop(second);
        let third = clients.take_slot(2).expect("a slot given back");
        drop(guard);
        assert_eq!(clients.count(), 0);
        assert!(clients.take_slot(2).is_some());
        drop(third);
        let racers: Vec<_> = (0..8)
            .map(|_| {
                let clients = Arc::clone(&clients);
                std::thread::spawn(move || clients.take_slot(3))
            })
            .collect();
        let taken: Vec<_> = racers
            .into_iter()
            .filter_map(|r| r.join().unwrap())
            .collect();
        assert_eq!(taken.len(), 3);
    }
}
