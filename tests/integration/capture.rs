//! The libpcap capture collector against loopback traffic made here: exact payload bytes
//! each way, the pid, the close, forged segments that make nothing, connections older than
//! the capture, paused UDP flows, and agreement with the eBPF collector on the same
//! traffic. Capturing needs root too.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

use tcptop::capture::procfs::ProcNetOwners;
use tcptop::capture::{CaptureCollector, CaptureConfig};
use tcptop::collector::{Collector, Conn, EventKind, Filters, TcpState};

use crate::helpers::{as_traffic, bpf_allowed, open_collector, start_tcptop, stop_tcptop, Ip, Pair};

/// How long the capture may take to deliver what was sent before a test fails.
const SETTLE: Duration = Duration::from_secs(5);
/// Longer than the capture's read timeout: a packet counted twice shows within it.
const QUIET: Duration = Duration::from_millis(300);

/// Captures on `lo`, only the port of `listener`: the other tests' loopback traffic, running
/// at the same time, must not crowd the test's packets out.
fn open_capture(listener: &TcpListener) -> CaptureCollector {
    let port = listener.local_addr().unwrap().port();
    open_capture_with(Filters { port: Some(port), ..Filters::default() })
}

/// An IPv4 listener and a capture of its port.
fn listening() -> (TcpListener, Seen<CaptureCollector>) {
    let listener = Pair::listen(Ip::V4);
    let seen = Seen::new(open_capture(&listener));
    (listener, seen)
}

fn open_capture_with(filters: Filters) -> CaptureCollector {
    let config =
        CaptureConfig { device: "lo".into(), filters, processes: Some(Box::new(ProcNetOwners::default())) };
    CaptureCollector::open(config).expect("opening the capture collector on lo")
}

/// What a collector reported about each connection, closed ones included.
struct Seen<C> {
    collector: C,
    latest: Vec<Conn>,
    closed: Vec<u64>,
}

impl<C: Collector> Seen<C> {
    fn new(collector: C) -> Self {
        Seen { collector, latest: Vec::new(), closed: Vec::new() }
    }

    fn poll(&mut self) {
        let sample = self.collector.collect().expect("collecting");
        for event in &sample.events {
            if event.kind == EventKind::Closed {
                self.closed.push(event.conn.id);
            }
        }
        let newest = sample.events.into_iter().map(|e| e.conn).chain(sample.conns);
        for conn in newest {
            self.latest.retain(|c| c.id != conn.id);
            self.latest.push(conn);
        }
    }

    fn find(&self, (local, remote): (SocketAddr, SocketAddr)) -> Option<&Conn> {
        self.latest.iter().rev().find(|c| c.local == local && c.remote == remote)
    }

    /// The connection `ends` once it reports these totals (or the last it reported after
    /// a few seconds), then once more after a quiet spell, so that a double count shows.
    fn settled(&mut self, ends: (SocketAddr, SocketAddr), tx: u64, rx: u64) -> Conn {
        let deadline = Instant::now() + SETTLE;
        while self.find(ends).is_none_or(|c| (c.tx_bytes, c.rx_bytes) != (tx, rx))
            && Instant::now() < deadline
        {
            thread::sleep(Duration::from_millis(20));
            self.poll();
        }
        thread::sleep(QUIET);
        self.poll();
        self.find(ends).unwrap_or_else(|| panic!("no connection {} -> {}", ends.0, ends.1)).clone()
    }
}

fn exchange(pair: &mut Pair, up: usize, down: usize) {
    let (client, server) = (&mut pair.client, &mut pair.server);
    as_traffic(|| {
        thread::scope(|s| {
            s.spawn(|| {
                for chunk in vec![0x5a; up].chunks(1000) {
                    client.write_all(chunk).unwrap();
                }
            });
            server.read_exact(&mut vec![0; up]).unwrap();
        });
        thread::scope(|s| {
            s.spawn(|| server.write_all(&vec![0xa5; down]).unwrap());
            client.read_exact(&mut vec![0; down]).unwrap();
        });
    });
}

#[test]
fn loopback_payload_and_pid_are_exact() {
    if !bpf_allowed() {
        return;
    }
    for ip in Ip::BOTH {
        let listener = Pair::listen(ip);
        let mut seen = Seen::new(open_capture(&listener));
        let mut pair = Pair::connect_to(&listener);
        const UP: usize = 100_000;
        const DOWN: usize = 3_500;
        exchange(&mut pair, UP, DOWN);
        for (ends, tx, rx) in [(pair.client_ends(), UP, DOWN), (pair.server_ends(), DOWN, UP)] {
            let conn = seen.settled(ends, tx as u64, rx as u64);
            assert_eq!((conn.tx_bytes, conn.rx_bytes), (tx as u64, rx as u64), "payload of {ends:?}");
            assert_eq!(conn.pid, Some(std::process::id()), "pid of {ends:?}");
            assert_eq!(conn.state, Some(TcpState::Established), "state of {ends:?}");
        }
    }
}

#[test]
fn a_closed_connection_keeps_its_final_totals() {
    if !bpf_allowed() {
        return;
    }
    let (listener, mut seen) = listening();
    let mut pair = Pair::connect_to(&listener);
    let (client_ends, server_ends) = (pair.client_ends(), pair.server_ends());
    pair.client.write_all(b"0123456789").unwrap();
    pair.client.shutdown(Shutdown::Write).unwrap();
    let mut got = Vec::new();
    pair.server.read_to_end(&mut got).unwrap();
    pair.server.write_all(b"bye").unwrap();
    drop(pair.server);
    pair.client.read_to_end(&mut got).unwrap();
    drop(pair.client);
    let client = seen.settled(client_ends, 10, 3);
    let server = seen.settled(server_ends, 3, 10);
    assert_eq!((client.tx_bytes, client.rx_bytes, server.tx_bytes, server.rx_bytes), (10, 3, 3, 10));
    assert!(seen.closed.contains(&client.id) && seen.closed.contains(&server.id), "both ends close");
}

/// eBPF counts what the application wrote and read, capture what crossed loopback: at the
/// end of an exchange they must agree on every connection, to the byte.
#[test]
fn agrees_with_ebpf_on_the_same_traffic() {
    let Some(mut ebpf) = open_collector(Filters::default()) else {
        return;
    };
    for ip in Ip::BOTH {
        let listener = Pair::listen(ip);
        let mut capture = Seen::new(open_capture(&listener));
        let mut pair = Pair::connect_to(&listener);
        const UP: usize = 1 << 20;
        const DOWN: usize = 70_001;
        exchange(&mut pair, UP, DOWN);
        for (ends, tx, rx) in [(pair.client_ends(), UP, DOWN), (pair.server_ends(), DOWN, UP)] {
            let by_ebpf = ebpf.expect_bytes(ends.0, ends.1, tx as u64, rx as u64);
            let by_capture = capture.settled(ends, tx as u64, rx as u64);
            let summary = |c: &Conn| (c.proto, c.local, c.remote, c.tx_bytes, c.rx_bytes, c.pid, c.state);
            assert_eq!(summary(&by_capture), summary(&by_ebpf), "capture vs eBPF for {ends:?}");
        }
    }
}

const SYN: u8 = 0x02;
const PSH_ACK: u8 = 0x18;
const ACK: u8 = 0x10;

/// Sends a TCP segment with a wrong checksum from a raw socket: the kernel drops it, so no
/// socket ever acknowledges it (nor answers it with a reset).
fn forge(from: SocketAddr, to: SocketAddr, seq: u32, payload: &[u8]) {
    forge_segment(from, to, (seq, 0), PSH_ACK, payload);
}

/// `forge` with its acknowledgement number and flags.
fn forge_segment(from: SocketAddr, to: SocketAddr, (seq, ack): (u32, u32), flags: u8, payload: &[u8]) {
    let (SocketAddr::V4(from), SocketAddr::V4(to)) = (from, to) else { panic!("IPv4 only") };
    let mut segment = vec![0u8; 20];
    segment[0..2].copy_from_slice(&from.port().to_be_bytes());
    segment[2..4].copy_from_slice(&to.port().to_be_bytes());
    segment[4..8].copy_from_slice(&seq.to_be_bytes());
    segment[8..12].copy_from_slice(&ack.to_be_bytes());
    segment[12] = 5 << 4;
    segment[13] = flags;
    segment[14..16].copy_from_slice(&1024u16.to_be_bytes());
    segment[16..18].copy_from_slice(&0xdeadu16.to_be_bytes());
    segment.extend_from_slice(payload);
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_TCP);
        assert!(fd >= 0, "a raw socket: {}", std::io::Error::last_os_error());
        let address = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(to.ip().octets()) },
            sin_zero: [0; 8],
        };
        let sent = libc::sendto(
            fd,
            segment.as_ptr().cast(),
            segment.len(),
            0,
            (&raw const address).cast(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        assert_eq!(sent, segment.len() as isize, "{}", std::io::Error::last_os_error());
        libc::close(fd);
    }
}

#[test]
fn forged_segments_make_no_row_and_do_not_hide_a_real_connection() {
    if !bpf_allowed() {
        return;
    }
    let (listener, mut seen) = listening();
    let server = listener.local_addr().unwrap();
    let forger: SocketAddr = "127.0.0.1:40001".parse().unwrap();
    for seq in [1, 0x8000_0000, 0xffff_0000] {
        forge(forger, server, seq, b"x");
    }
    for port in 0..500u16 {
        forge(SocketAddr::from(([127, 0, 0, 1], 41_000 + port)), server, u32::from(port), b"flood");
    }
    let mut pair = Pair::connect_to(&listener);
    exchange(&mut pair, 10, 20);
    let conn = seen.settled(pair.client_ends(), 10, 20);
    assert_eq!((conn.tx_bytes, conn.rx_bytes), (10, 20));
    let real = [pair.client_ends(), pair.server_ends()];
    let strays: Vec<&Conn> = seen.latest.iter().filter(|c| !real.contains(&(c.local, c.remote))).collect();
    assert!(strays.is_empty(), "forged rows: {strays:?}");
}

/// Both directions forged, a handshake and acknowledged data each way, for ports no socket
/// has: before, a row with bytes until the socket list's next check; now never a row, and
/// counted among the untracked connections.
#[test]
fn a_conversation_forged_both_ways_never_shows_and_is_counted() {
    if !bpf_allowed() {
        return;
    }
    let unused = |ip| Pair::listen(ip).local_addr().unwrap(); // bound, then free again
    let (client, server) = (unused(Ip::V4), unused(Ip::V4));
    let mut seen = Seen::new(open_capture_with(Filters { port: Some(server.port()), ..Filters::default() }));
    forge_segment(client, server, (100, 0), SYN, b"");
    forge_segment(server, client, (900, 101), SYN | ACK, b"");
    forge_segment(client, server, (101, 901), ACK, b"");
    forge_segment(client, server, (101, 901), PSH_ACK, b"forged request");
    forge_segment(server, client, (901, 115), PSH_ACK, b"forged answer");
    forge_segment(client, server, (115, 914), ACK, b"");
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut untracked = 0;
    while untracked < 2 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
        let sample = seen.collector.collect().unwrap();
        untracked = sample.overflow.untracked_conns;
        let rows: Vec<Conn> =
            sample.conns.into_iter().chain(sample.events.into_iter().map(|e| e.conn)).collect();
        assert!(rows.is_empty(), "forged rows: {rows:?}");
    }
    assert_eq!(untracked, 2, "both forged ends are counted");
}

/// A connect to a closed port (a SYN answered by a reset) is a row in state FAILED with one
/// reset received, as the eBPF collector reports it.
#[test]
fn a_refused_connect_is_a_failed_row_with_one_reset_received() {
    if !bpf_allowed() {
        return;
    }
    let closed = Pair::listen(Ip::V4).local_addr().unwrap(); // bound, then closed again
    let mut seen = Seen::new(open_capture_with(Filters { port: Some(closed.port()), ..Filters::default() }));
    let refused = TcpStream::connect(closed).unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    let deadline = Instant::now() + SETTLE;
    while seen.closed.is_empty() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
        seen.poll();
    }
    assert_eq!(seen.latest.len(), 1, "only the connecting end is a row: {:?}", seen.latest);
    let conn = &seen.latest[0];
    let health = conn.health.unwrap();
    assert_eq!((conn.remote, conn.state_label()), (closed, Some("FAILED")));
    assert_eq!((health.resets_received, health.resets_sent, health.estimated), (Some(1), Some(0), true));
    assert!(health.connect.is_some_and(|c| c.failed) && seen.closed.contains(&conn.id));
}

/// RTT estimated from data-to-ACK times and retransmits from sequence ranges seen twice,
/// marked estimated: on lo nothing is lost, so no retransmits, as the kernel counts.
#[test]
fn rtt_and_retransmits_are_estimated_from_the_packets() {
    if !bpf_allowed() {
        return;
    }
    let (listener, mut seen) = listening();
    let mut pair = Pair::connect_to(&listener);
    exchange(&mut pair, 50_000, 2_000);
    let conn = seen.settled(pair.client_ends(), 50_000, 2_000);
    let health = conn.health.expect("a TCP connection's health");
    let rtt = health.rtt.expect("an RTT sample from the handshake and the data");
    eprintln!("estimated: {health:?}");
    assert!(health.estimated && rtt.min_us <= rtt.smoothed_us, "{health:?}");
    let kernel_retrans = tcp_total_retrans(&pair.client);
    assert_eq!(health.retrans, Some(u64::from(kernel_retrans)));
    assert!(health.connect.is_some_and(|c| !c.failed), "the handshake was seen: {health:?}");
}

/// The kernel's count of a socket's retransmitted segments (TCP_INFO's tcpi_total_retrans).
fn tcp_total_retrans(stream: &TcpStream) -> u32 {
    use std::os::fd::AsRawFd;
    // SAFETY: getsockopt writes at most `len` bytes into the zeroed struct.
    unsafe {
        let mut info: libc::tcp_info = std::mem::zeroed();
        let mut len = size_of::<libc::tcp_info>() as libc::socklen_t;
        let ok = libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &mut len,
        );
        assert_eq!(ok, 0, "getsockopt(TCP_INFO)");
        info.tcpi_total_retrans
    }
}

#[test]
fn short_connections_to_a_long_lived_server_carry_its_pid() {
    if !bpf_allowed() {
        return;
    }
    let (listener, mut seen) = listening();
    let mut servers = Vec::new();
    for _ in 0..3 {
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, remote) = listener.accept().unwrap();
        client.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        server.read_exact(&mut [0; 18]).unwrap();
        server.write_all(b"HTTP/1.0 200 OK\r\n\r\n").unwrap();
        drop(server);
        client.read_to_end(&mut Vec::new()).unwrap();
        servers.push((listener.local_addr().unwrap(), remote));
    }
    for ends in servers {
        let conn = seen.settled(ends, 19, 18);
        assert_eq!((conn.tx_bytes, conn.rx_bytes, conn.pid), (19, 18, Some(std::process::id())), "{ends:?}");
    }
}

#[test]
fn an_idle_connection_older_than_the_capture_is_listed() {
    if !bpf_allowed() {
        return;
    }
    let listener = Pair::listen(Ip::V4);
    let pair = Pair::connect_to(&listener);
    let mut seen = Seen::new(open_capture(&listener));
    let conn = seen.settled(pair.client_ends(), 0, 0);
    assert_eq!((conn.state, conn.pid), (Some(TcpState::Established), Some(std::process::id())));
    drop(pair);
    thread::sleep(Duration::from_secs(3));
    seen.poll();
    assert!(seen.closed.contains(&conn.id), "closed once the kernel stops listing it");
}

#[test]
fn a_paused_udp_flow_counts_every_datagram() {
    if !bpf_allowed() {
        return;
    }
    let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    sender.connect(receiver.local_addr().unwrap()).unwrap();
    let port = receiver.local_addr().unwrap().port();
    let filters = Filters { port: Some(port), udp_idle: Duration::from_millis(500), ..Filters::default() };
    let mut seen = Seen::new(open_capture_with(filters));
    let mut sent = 0;
    for burst in 0..3 {
        for size in [100, 1000, 1] {
            sender.send(&vec![7; size]).unwrap();
            sent += size as u64;
        }
        if burst < 2 {
            thread::sleep(Duration::from_millis(1200));
            seen.poll();
        }
    }
    thread::sleep(Duration::from_millis(1200));
    seen.poll();
    let ends = (sender.local_addr().unwrap(), receiver.local_addr().unwrap());
    let counted: u64 = seen.latest.iter().filter(|c| (c.local, c.remote) == ends).map(|c| c.tx_bytes).sum();
    assert_eq!(counted, sent, "{:?}", seen.latest);
}

/// The flood's datagrams: 64 bytes of payload each, so that a packet the capture dropped
/// stands for one datagram, 64 bytes each way.
const FLOOD_DATAGRAM: u64 = 64;

/// What one output of `tcptop --backend capture` said of the flood: the payload counted for
/// the sending socket and for the receiving one (sums of their per-interval bytes), and the
/// packets dropped (the largest, i.e. the last, cumulative count).
#[derive(Debug, Default, PartialEq)]
struct Counted {
    tx: u64,
    rx: u64,
    dropped_packets: u64,
}

/// A sender's and a receiver's UDP sockets on lo, and a flood between them.
struct Flood {
    sender: UdpSocket,
    receiver: UdpSocket,
}

impl Flood {
    fn new() -> Flood {
        // Bound, so that the datagrams reach a socket (which never reads them) rather than
        // draw ICMP errors that fail the sender's next send.
        let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        sender.connect(receiver.local_addr().unwrap()).unwrap();
        Flood { sender, receiver }
    }

    /// Sends 200,000 datagrams from the one socket, two threads at once, as fast as they
    /// can (the rate is printed); returns the payload bytes sent.
    fn send(&self) -> u64 {
        let datagram = [0x42; FLOOD_DATAGRAM as usize];
        let burst = || (0..100_000).filter(|_| self.sender.send(&datagram).is_ok()).count() as u64;
        let start = Instant::now();
        let sent: u64 = thread::scope(|s| {
            let threads: Vec<_> = (0..2).map(|_| s.spawn(burst)).collect();
            threads.into_iter().map(|t| t.join().unwrap()).sum()
        });
        eprintln!("flood: {sent} datagrams at {:.0}/s", sent as f64 / start.elapsed().as_secs_f64());
        sent * FLOOD_DATAGRAM
    }

    /// Runs the binary on Linux's default device (`any`) for the receiver's port with `args`,
    /// floods, and returns the bytes sent and the binary's stdout.
    fn through_binary(&self, args: &[&str]) -> (u64, String) {
        let port = self.receiver.local_addr().unwrap().port().to_string();
        let capture =
            ["--backend", "capture", "--interface", "any", "--udp", "--udp-idle", "1", "--port", &port];
        let mut child = start_tcptop(&[&capture, args, &["0.5"]].concat())
            .expect("the capture runs wherever BPF tests do");
        let sent = self.send();
        // The flow closes after a second of silence, which writes its last record.
        thread::sleep(Duration::from_secs(3));
        let out = stop_tcptop(&mut child);
        (sent, out)
    }

    fn is_sender(&self, local: SocketAddr) -> bool {
        local == self.sender.local_addr().unwrap()
    }

    fn is_receiver(&self, local: SocketAddr) -> bool {
        local == self.receiver.local_addr().unwrap()
    }

    /// Adds one record's bytes and overflow to `counted`.
    fn add(&self, counted: &mut Counted, local: SocketAddr, (rx, tx): (u64, u64), dropped: u64) {
        if self.is_sender(local) {
            counted.tx += tx;
        } else if self.is_receiver(local) {
            counted.rx += rx;
        }
        counted.dropped_packets = counted.dropped_packets.max(dropped);
    }

    /// Batch mode's text: each interval's summary line and rows.
    fn count_batch(&self, out: &str) -> Counted {
        let mut counted = Counted::default();
        for line in out.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if let Some(dropped) = fields.iter().find_map(|f| f.strip_prefix("dropped_packets=")) {
                counted.dropped_packets = counted.dropped_packets.max(dropped.parse().unwrap());
            } else if let [_, _, local, _, _, rx, tx, ..] = fields[..] {
                if let Ok(local) = local.parse() {
                    self.add(&mut counted, local, (rx.parse().unwrap(), tx.parse().unwrap()), 0);
                }
            }
        }
        counted
    }

    /// Records as JSON lines or CSV rows (with the header), read as field -> value.
    fn count_records(&self, records: impl Iterator<Item = HashMap<String, String>>) -> Counted {
        let mut counted = Counted::default();
        for record in records {
            let number = |field: &str| record[field].parse::<u64>().unwrap_or(0);
            let local = SocketAddr::new(record["local_addr"].parse().unwrap(), number("local_port") as u16);
            self.add(
                &mut counted,
                local,
                (number("rx_bytes"), number("tx_bytes")),
                number("dropped_packets"),
            );
        }
        counted
    }

    fn count_json(&self, out: &str) -> Counted {
        let as_text = |value: &serde_json::Value| match value {
            serde_json::Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        self.count_records(out.lines().map(|line| {
            let object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(line).unwrap();
            object.iter().map(|(key, value)| (key.clone(), as_text(value))).collect()
        }))
    }

    fn count_csv(&self, out: &str) -> Counted {
        let mut reader = csv::Reader::from_reader(out.as_bytes());
        self.count_records(reader.deserialize().map(Result::unwrap))
    }
}

/// Every output tells the whole flood: the bytes counted plus 64 for each dropped packet
/// (a datagram seen by neither end) equal the bytes sent, for the sender and the receiver.
#[test]
fn a_udp_flood_is_counted_exactly_or_dropped_visibly_in_every_output() {
    if !bpf_allowed() {
        return;
    }
    let log = tempfile::tempdir().unwrap();
    let log_path = log.path().join("flood.csv");
    let log_arg = log_path.to_str().unwrap();
    type Parse = fn(&Flood, &str) -> Counted;
    let outputs: [(&str, &[&str], Parse); 3] = [
        ("batch", &["-b"], Flood::count_batch),
        ("json", &["--format", "json"], Flood::count_json),
        ("csv", &["--format", "csv"], Flood::count_csv),
    ];
    for (name, args, parse) in outputs {
        let flood = Flood::new();
        let log_args = [args, &["--log", log_arg]].concat();
        let (sent, out) = flood.through_binary(if name == "batch" { &log_args } else { args });
        let mut reports = vec![(name, parse(&flood, &out))];
        if name == "batch" {
            reports.push(("--log", flood.count_csv(&std::fs::read_to_string(&log_path).unwrap())));
        }
        for (output, counted) in reports {
            eprintln!("{output}: sent {sent} B, {counted:?}");
            let lost = counted.dropped_packets * FLOOD_DATAGRAM;
            assert_eq!((counted.tx + lost, counted.rx + lost), (sent, sent), "{output}: {counted:?}");
        }
    }
}
