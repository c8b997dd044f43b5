//! A minimal HTTP/1.1 client over one kept-alive connection, for tests and the demo load tool:
//! no client library, so what is measured is the server.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// One kept-alive connection.
pub struct HttpConnection {
    address: String,
    reader: BufReader<TcpStream>,
}

impl HttpConnection {
    /// Connects to `address` (`host:port`).
    pub fn open(address: &str) -> Self {
        let stream = TcpStream::connect(address).expect("connects");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        // Requests are small and latency is what the load tool measures.
        stream.set_nodelay(true).unwrap();
        Self {
            address: address.to_owned(),
            reader: BufReader::new(stream),
        }
    }

    /// Sends one request and reads its answer; returns the status and the body. The body is
    /// read by its Content-Length when there is one (servers such as Chromium's DevTools keep
    /// connections open), else to the end of the connection.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        body: Option<(&str, &[u8])>,
    ) -> (u16, String) {
        let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.address);
        match body {
            Some((content_type, bytes)) => {
                request.push_str(&format!(
                    "Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
                    bytes.len()
                ));
                let mut whole = request.into_bytes();
                whole.extend_from_slice(bytes);
                self.reader
                    .get_mut()
                    .write_all(&whole)
                    .expect("request sent");
            }
            None => {
                request.push_str("\r\n");
                self.reader
                    .get_mut()
                    .write_all(request.as_bytes())
                    .expect("request sent");
            }
        }
        let mut status_line = String::new();
        self.reader
            .read_line(&mut status_line)
            .expect("status line");
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut content_length = None;
        loop {
            let mut header = String::new();
            self.reader.read_line(&mut header).expect("header line");
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
        let mut answer = Vec::new();
        match content_length {
            Some(length) => {
                answer.resize(length, 0);
                self.reader.read_exact(&mut answer).expect("body");
            }
            None => {
                self.reader.read_to_end(&mut answer).expect("body");
            }
        }
        (status, String::from_utf8_lossy(&answer).into_owned())
    }
}
