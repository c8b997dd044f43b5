//! A TCP proxy in front of a PostgreSQL server, listening where the test says, until cut: then
//! it refuses new connections and ends those it carried, so the database is unreachable for
//! whoever connects through it (and only for them).

use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct Proxy {
    address: String,
    /// The server's url, with the proxy's address for the server's.
    pub url: String,
    cut: Arc<AtomicBool>,
    carried: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    /// Listens on `bind` (`host:0` for a free port) for the server of the postgres `url`
    /// (`postgresql://[user@]host:port/database`).
    pub fn start(bind: &str, url: &str) -> Self {
        let (scheme, rest) = url.split_once("://").expect("a postgres url");
        let (user, rest) = rest.rsplit_once('@').unwrap_or(("", rest));
        let (server, path) = rest.split_once('/').unwrap_or((rest, ""));
        let server = server.to_owned();
        let listener = TcpListener::bind(bind).unwrap();
        listener.set_nonblocking(true).unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let at = if user.is_empty() { "" } else { "@" };
        let url = format!("{scheme}://{user}{at}{address}/{path}");
        let cut = Arc::new(AtomicBool::new(false));
        let carried = Arc::new(Mutex::new(Vec::<TcpStream>::new()));
        let (stop, streams) = (Arc::clone(&cut), Arc::clone(&carried));
        std::thread::spawn(move || {
            // Dropping the listener when cut makes new connections fail at once.
            while !stop.load(Ordering::Relaxed) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                client.set_nonblocking(false).unwrap();
                let Ok(upstream) = TcpStream::connect(&server) else {
                    continue; // the client sees its connection closed
                };
                let mut streams = streams.lock().unwrap();
                // Accepted while being cut: not carried.
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), upstream.try_clone().unwrap()),
                    (upstream.try_clone().unwrap(), client.try_clone().unwrap()),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(Shutdown::Both);
                    });
                }
                streams.extend([client, upstream]);
            }
        });
        Self {
            address,
            url,
            cut,
            carried,
        }
    }

    /// Where it listens.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Refuses new connections and ends the carried ones.
    pub fn cut(&self) {
        let carried = self.carried.lock().unwrap();
        self.cut.store(true, Ordering::Relaxed);
        for stream in carried.iter() {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}
