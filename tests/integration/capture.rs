//! The libpcap capture collector against loopback traffic made here: exact payload bytes
//! each way, the pid, the close, and agreement with the eBPF collector on the same
//! traffic. Capturing needs root too.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener};
use std::thread;
use std::time::{Duration, Instant};

use tcptop::capture::procfs::ProcNetOwners;
use tcptop::capture::{CaptureCollector, CaptureConfig};
use tcptop::collector::{Collector, Conn, EventKind, Filters, TcpState};

use crate::helpers::{as_traffic, bpf_allowed, open_collector, Ip, Pair};

/// How long the capture may take to deliver what was sent before a test fails.
const SETTLE: Duration = Duration::from_secs(5);
/// Longer than the capture's read timeout: a packet counted twice shows within it.
const QUIET: Duration = Duration::from_millis(300);

/// Captures on `lo`, only the port of `listener`: the other tests' loopback traffic, running
/// at the same time, must not crowd the test's packets out.
fn open_capture(listener: &TcpListener) -> CaptureCollector {
    let port = listener.local_addr().unwrap().port();
    let config = CaptureConfig {
        device: "lo".into(),
        filters: Filters { port: Some(port), ..Filters::default() },
        processes: Some(Box::new(ProcNetOwners::default())),
    };
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
    let listener = Pair::listen(Ip::V4);
    let mut seen = Seen::new(open_capture(&listener));
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
