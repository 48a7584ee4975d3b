//! One scrape of tcptop's `/metrics`, as Prometheus makes it: a whole HTTP/1.1 GET.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};

/// A loopback port nothing listens on now, for `--prometheus`.
pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port())
}

/// The body of `GET /metrics` from `address`, read to its end.
pub fn metrics(address: &str) -> io::Result<String> {
    let mut stream = TcpStream::connect(address)?;
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    if !head.starts_with("HTTP/1.1 200") {
        let status = head.lines().next().unwrap_or("nothing");
        return Err(io::Error::other(format!("GET /metrics answered {status}")));
    }
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        return Err(io::Error::other("GET /metrics answered in chunks, which this reader does not join"));
    }
    Ok(body.to_string())
}

/// Samples in a text-format body: its lines that are not comments.
pub fn samples(body: &str) -> usize {
    body.lines().filter(|line| !line.is_empty() && !line.starts_with('#')).count()
}
