//! The processes of a cluster: connecting to every peer before timely starts (bounded, logged,
//! with a handshake that refuses a peer of another layout), and noticing when one is lost.
//!
//! Why not timely's own connection code: it retries forever, prints to stdout (where `replay`
//! may write its rows) and cannot tell a peer of another layout. The connected sockets are handed
//! to timely's networking unchanged.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Once, OnceLock};
use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use crate::error::{Result, RuntimeError};

/// First word of the handshake: "crowdpulse cluster", version 1.
const MAGIC: u64 = 0x6370_636c_7573_7401;
/// How long to sleep between tries.
const RETRY: Duration = Duration::from_millis(250);
/// How often the wait is logged.
const LOG_EVERY: Duration = Duration::from_secs(5);

/// What a process tells each peer when connecting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Handshake {
    process: u64,
    processes: u64,
    workers: u64,
}

impl Handshake {
    fn write(&self, stream: &mut TcpStream) -> std::io::Result<()> {
        let mut bytes = Vec::with_capacity(32);
        for word in [MAGIC, self.process, self.processes, self.workers] {
            bytes.extend_from_slice(&word.to_be_bytes());
        }
        stream.write_all(&bytes)
    }

    fn read(stream: &mut TcpStream) -> std::io::Result<Option<Self>> {
        let mut bytes = [0u8; 32];
        stream.read_exact(&mut bytes)?;
        let word = |i: usize| u64::from_be_bytes(bytes[i * 8..i * 8 + 8].try_into().expect("8"));
        Ok((word(0) == MAGIC).then(|| Self {
            process: word(1),
            processes: word(2),
            workers: word(3),
        }))
    }
}

/// Bytes this process sent to and received from its peers (the dataflow's exchanges and
/// progress messages).
static SENT: AtomicU64 = AtomicU64::new(0);
static RECEIVED: AtomicU64 = AtomicU64::new(0);

/// Bytes sent to and received from the other processes so far.
pub fn traffic() -> (u64, u64) {
    (
        SENT.load(Ordering::Relaxed),
        RECEIVED.load(Ordering::Relaxed),
    )
}

/// A connection to a peer that counts its bytes into [`traffic`].
#[derive(Debug)]
pub struct PeerStream(TcpStream);

impl Read for PeerStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let read = self.0.read(buf)?;
        RECEIVED.fetch_add(read as u64, Ordering::Relaxed);
        Ok(read)
    }
}

impl Write for PeerStream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let written = self.0.write(buf)?;
        SENT.fetch_add(written as u64, Ordering::Relaxed);
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

impl timely::communication::allocator::zero_copy::stream::Stream for PeerStream {
    fn try_clone(&self) -> std::io::Result<Self> {
        self.0.try_clone().map(Self)
    }

    fn set_nonblocking(&self, nonblocking: bool) -> std::io::Result<()> {
        self.0.set_nonblocking(nonblocking)
    }

    fn shutdown(&self, how: Shutdown) -> std::io::Result<()> {
        self.0.shutdown(how)
    }
}

/// Connects process `me` of `addresses` (each `host:port`) to every other: it connects to the
/// processes before it and accepts the ones after it, within `timeout`. Returns one stream per
/// process, None for itself, as timely's networking takes them.
pub fn connect(
    addresses: &[String],
    me: usize,
    workers: usize,
    timeout: Duration,
) -> Result<Vec<Option<PeerStream>>> {
    let deadline = Instant::now() + timeout;
    let ours = Handshake {
        process: me as u64,
        processes: addresses.len() as u64,
        workers: workers as u64,
    };
    let listener =
        TcpListener::bind(&addresses[me]).map_err(|error| RuntimeError::ClusterListen {
            address: addresses[me].clone(),
            error,
        })?;
    listener
        .set_nonblocking(true)
        .map_err(|error| RuntimeError::ClusterListen {
            address: addresses[me].clone(),
            error,
        })?;
    let mut streams: Vec<Option<TcpStream>> = (0..addresses.len()).map(|_| None).collect();
    let mut logged = Instant::now();
    info!(
        process = me,
        processes = addresses.len(),
        "connecting to the other processes"
    );
    loop {
        for (peer, address) in addresses.iter().enumerate().take(me) {
            if streams[peer].is_none() {
                streams[peer] = dial(address, &ours);
            }
        }
        while let Some(stream) = accept(&listener, &ours, addresses)? {
            let (peer, stream) = stream;
            streams[peer] = Some(stream);
        }
        let missing: Vec<usize> = (0..addresses.len())
            .filter(|&p| p != me && streams[p].is_none())
            .collect();
        if missing.is_empty() {
            info!(process = me, "every process is connected");
            return Ok(streams.into_iter().map(|s| s.map(PeerStream)).collect());
        }
        if Instant::now() >= deadline {
            let peer = missing[0];
            return Err(RuntimeError::PeerUnreachable {
                process: peer,
                address: addresses[peer].clone(),
                waited: timeout,
            });
        }
        if logged.elapsed() >= LOG_EVERY {
            logged = Instant::now();
            let waiting: Vec<&str> = missing.iter().map(|&p| addresses[p].as_str()).collect();
            warn!(
                process = me,
                ?missing,
                ?waiting,
                "waiting for processes to start"
            );
        }
        std::thread::sleep(RETRY);
    }
}

/// One try to connect to a peer before us.
fn dial(address: &str, ours: &Handshake) -> Option<TcpStream> {
    let target = address.to_socket_addrs().ok()?.next()?;
    let mut stream = TcpStream::connect_timeout(&target, RETRY).ok()?;
    stream.set_nodelay(true).ok()?;
    ours.write(&mut stream).ok()?;
    Some(stream)
}

/// Takes one waiting connection from a peer after us, if any; refuses one of another layout.
fn accept(
    listener: &TcpListener,
    ours: &Handshake,
    addresses: &[String],
) -> Result<Option<(usize, TcpStream)>> {
    let mut stream = match listener.accept() {
        Ok((stream, _)) => stream,
        Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => return Ok(None),
        Err(error) => {
            warn!(%error, "accepting a connection failed");
            return Ok(None);
        }
    };
    let setup = stream
        .set_nonblocking(false)
        .and_then(|()| stream.set_nodelay(true))
        .and_then(|()| stream.set_read_timeout(Some(Duration::from_secs(5))));
    let theirs = match setup.and_then(|()| Handshake::read(&mut stream)) {
        Ok(Some(theirs)) => theirs,
        // Not a crowdpulse process, or one that gave up: wait for the real one.
        Ok(None) | Err(_) => {
            warn!(peer = ?stream.peer_addr().ok(), "a connection without a cluster handshake was dropped");
            return Ok(None);
        }
    };
    let peer = theirs.process as usize;
    if theirs.processes != ours.processes
        || theirs.workers != ours.workers
        || peer <= ours.process as usize
        || peer >= addresses.len()
    {
        return Err(RuntimeError::PeerMismatch {
            process: peer,
            processes: theirs.processes,
            workers: theirs.workers,
            our_processes: ours.processes,
            our_workers: ours.workers,
        });
    }
    stream
        .set_read_timeout(None)
        .map_err(|error| RuntimeError::ClusterListen {
            address: addresses[ours.process as usize].clone(),
            error,
        })?;
    Ok(Some((peer, stream)))
}

/// The addresses of the running cluster, so a lost connection can be named.
static ADDRESSES: Mutex<Vec<String>> = Mutex::new(Vec::new());
/// Set once a connection to a peer failed: which and why.
static LOST: OnceLock<String> = OnceLock::new();

/// A connection to a peer failed (it stopped, crashed or became unreachable): the reason, once so.
pub fn lost() -> Option<&'static str> {
    LOST.get().map(String::as_str)
}

/// Watches timely's communication threads: timely makes them panic when a connection fails,
/// "in an attempt to take down the computation", which alone would leave the workers waiting
/// for the peer forever. The panic is recorded as the peer lost (the runtime then stops) and
/// logged as one line naming the peer; so are the panics that joining those threads causes.
pub fn watch(addresses: &[String]) {
    *ADDRESSES.lock().unwrap_or_else(|p| p.into_inner()) = addresses.to_vec();
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let thread = std::thread::current();
            let name = thread.name().unwrap_or("");
            let message = info
                .payload()
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| info.payload().downcast_ref::<&str>().copied())
                .unwrap_or("");
            let peer = name
                .strip_prefix("timely:recv-")
                .or_else(|| name.strip_prefix("timely:send-"))
                .and_then(|p| p.parse::<usize>().ok());
            if let Some(peer) = peer {
                let address = ADDRESSES
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(peer)
                    .cloned()
                    .unwrap_or_default();
                let reason =
                    format!("lost the connection to process {peer} ({address}): {message}");
                if LOST.set(reason.clone()).is_ok() {
                    error!(process = peer, %address, cause = message, "lost the connection to a process; the cluster stops");
                }
                return;
            }
            // Once a peer is lost, timely's own threads fail on the broken connection as well.
            let consequence = name.starts_with("timely:")
                || message.starts_with("Send thread panic")
                || message.starts_with("Recv thread panic");
            if !(LOST.get().is_some() && consequence) {
                previous(info);
            }
        }));
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free_addresses(n: usize) -> Vec<String> {
        let listeners: Vec<_> = (0..n)
            .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        listeners
            .iter()
            .map(|l| l.local_addr().unwrap().to_string())
            .collect()
    }

    #[test]
    fn three_processes_connect_whatever_order_they_start_in() {
        let addresses = free_addresses(3);
        let handles: Vec<_> = [2, 0, 1]
            .into_iter()
            .map(|me| {
                let addresses = addresses.clone();
                std::thread::sleep(Duration::from_millis(100));
                std::thread::spawn(move || {
                    let streams = connect(&addresses, me, 2, Duration::from_secs(10)).unwrap();
                    (me, streams.iter().map(Option::is_some).collect::<Vec<_>>())
                })
            })
            .collect();
        for handle in handles {
            let (me, connected) = handle.join().unwrap();
            let expected: Vec<bool> = (0..3).map(|p| p != me).collect();
            assert_eq!(connected, expected, "process {me}");
        }
    }

    #[test]
    fn a_missing_peer_is_named_after_the_timeout() {
        let addresses = free_addresses(2);
        let started = Instant::now();
        let error = connect(&addresses, 1, 1, Duration::from_millis(600)).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        let text = error.to_string();
        assert!(
            text.contains("process 0") && text.contains(&addresses[0]),
            "{text}"
        );
    }

    #[test]
    fn a_peer_of_another_layout_is_refused() {
        let addresses = free_addresses(2);
        let first = {
            let addresses = addresses.clone();
            std::thread::spawn(move || connect(&addresses, 0, 2, Duration::from_secs(10)))
        };
        std::thread::sleep(Duration::from_millis(200));
        // Process 1 believes in one worker per process.
        let _second = connect(&addresses, 1, 1, Duration::from_secs(2));
        let error = first.join().unwrap().unwrap_err();
        assert!(error.to_string().contains("1 worker"), "{error}");
    }
}
