//! TCP health, live (root, host only: they need `ip` and `nft`): in a network namespace of its
//! own, nftables drops chosen segments on the input hook (a drop on output is reported to TCP
//! at once and resent without counting as a retransmit), and what tcptop reports agrees with
//! the kernel's own TCP_INFO of the same socket.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tcptop::collector::{Conn, Filters, TcpHealth};

use crate::helpers::{in_netns, open_collector, Watch};

/// A network namespace with its loopback up and an nftables input chain of `rules`; deleted on
/// drop, also when the test fails.
pub struct Netns {
    name: String,
}

impl Netns {
    pub fn new(tag: &str, rules: &str) -> Netns {
        let ns = Netns { name: format!("tcptop{}{tag}", std::process::id()) };
        run(Command::new("ip").args(["netns", "add", &ns.name]));
        run(Command::new("ip").args(["-n", &ns.name, "link", "set", "lo", "up"]));
        let ruleset = format!(
            "table inet tcptop_test {{\n chain input {{\n  type filter hook input priority 0;\n  {rules}\n }}\n}}\n"
        );
        let mut nft = Command::new("ip")
            .args(["netns", "exec", &ns.name, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .expect("nft (Debian package nftables) runs");
        nft.stdin.take().unwrap().write_all(ruleset.as_bytes()).unwrap();
        assert!(nft.wait().unwrap().success(), "nft refused: {ruleset}");
        ns
    }

    /// Runs `work` as test traffic inside the namespace.
    pub fn inside<T: Send>(&self, work: impl FnOnce() -> T + Send) -> T {
        in_netns(&self.name, work)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

fn run(command: &mut Command) {
    assert!(command.status().expect("ip runs").success(), "{command:?} failed");
}

/// The kernel's TCP_INFO of a socket.
fn tcp_info(stream: &TcpStream) -> libc::tcp_info {
    // SAFETY: getsockopt writes at most `len` bytes into the zeroed struct.
    unsafe {
        let mut info: libc::tcp_info = std::mem::zeroed();
        let mut len = size_of::<libc::tcp_info>() as libc::socklen_t;
        let ok = libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        );
        assert_eq!(ok, 0, "getsockopt(TCP_INFO)");
        info
    }
}

/// A client and the server end it connected to, in the namespace the caller is in.
fn connected(port: u16) -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
    let client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let (server, _) = listener.accept().unwrap();
    (client, server)
}

fn ends(stream: &TcpStream) -> (SocketAddr, SocketAddr) {
    (stream.local_addr().unwrap(), stream.peer_addr().unwrap())
}

/// The health of the connection `local -> remote`, once `ready` holds for it.
fn health_when(
    watch: &mut Watch,
    (local, remote): (SocketAddr, SocketAddr),
    ready: impl Fn(&TcpHealth) -> bool,
) -> TcpHealth {
    let found = |w: &Watch| w.find(local, remote).and_then(|c| c.health).filter(&ready);
    assert!(
        watch.until(|w| found(w).is_some()),
        "no health as expected for {local} -> {remote}: {:?}",
        watch.find(local, remote)
    );
    found(watch).unwrap()
}

#[test]
fn retransmits_equal_the_kernels_count_when_every_tenth_segment_is_dropped() {
    const PORT: u16 = 5561;
    const WRITES: usize = 300;
    let Some(mut watch) = open_collector(Filters { port: Some(PORT), ..Filters::default() }) else { return };
    let ns = Netns::new(
        "r",
        &format!("tcp dport {PORT} tcp flags & syn == 0 ip length > 100 numgen inc mod 10 == 0 drop"),
    );
    let (client, server, info) = ns.inside(|| {
        let (mut client, mut server) = connected(PORT);
        client.set_nodelay(true).unwrap();
        let reader = thread::spawn(move || {
            let mut got = Vec::new();
            server.read_to_end(&mut got).unwrap();
            (server, got.len())
        });
        for _ in 0..WRITES {
            client.write_all(&[7; 1000]).unwrap();
        }
        client.shutdown(Shutdown::Write).unwrap();
        let (server, read) = reader.join().unwrap();
        assert_eq!(read, WRITES * 1000);
        // Everything acknowledged, the FIN too: the count is final.
        let deadline = Instant::now() + Duration::from_secs(10);
        while tcp_info(&client).tcpi_unacked > 0 {
            assert!(Instant::now() < deadline, "data still unacknowledged");
            thread::sleep(Duration::from_millis(20));
        }
        let info = tcp_info(&client);
        (client, server, info)
    });
    let kernel = u64::from(info.tcpi_total_retrans);
    assert!(kernel > 0, "nftables dropped nothing that was resent");
    let health = health_when(&mut watch, ends(&client), |h| h.retrans == Some(kernel));
    eprintln!("retransmits: tcptop {:?}, TCP_INFO {kernel}", health.retrans);
    let (local, remote) = ends(&client);
    watch.expect_bytes(local, remote, (WRITES * 1000) as u64, 0);
    let server_end = watch.find(remote, local).cloned().expect("the server end");
    assert_eq!((server_end.rx_bytes, server_end.tx_bytes), ((WRITES * 1000) as u64, 0));
    drop(server);
}

#[test]
fn rtt_is_the_kernels_smoothed_rtt_of_the_socket() {
    const PORT: u16 = 5562;
    let Some(mut watch) = open_collector(Filters { port: Some(PORT), ..Filters::default() }) else { return };
    let ns = Netns::new("t", "");
    let (client, _server, info) = ns.inside(|| {
        let (mut client, mut server) = connected(PORT);
        let mut message = [0; 100];
        for _ in 0..20 {
            client.write_all(&message).unwrap();
            server.read_exact(&mut message).unwrap();
            server.write_all(&message).unwrap();
            client.read_exact(&mut message).unwrap();
        }
        // The last answer acknowledged the last request: the client's estimate stays put.
        thread::sleep(Duration::from_millis(100));
        let info = tcp_info(&client);
        (client, server, info)
    });
    let rtt = health_when(&mut watch, ends(&client), |h| h.rtt.is_some()).rtt.unwrap();
    eprintln!(
        "RTT: tcptop {rtt:?}, TCP_INFO rtt {} rttvar {} min_rtt {}",
        info.tcpi_rtt, info.tcpi_rttvar, info.tcpi_min_rtt
    );
    assert_eq!(
        (rtt.smoothed_us, rtt.variation_us, rtt.min_us),
        (info.tcpi_rtt, info.tcpi_rttvar, info.tcpi_min_rtt)
    );
}

#[test]
fn a_connect_to_a_closed_port_is_one_reset_received_and_failed() {
    const PORT: u16 = 5563;
    let Some(mut watch) = open_collector(Filters { port: Some(PORT), ..Filters::default() }) else { return };
    let ns = Netns::new("c", "");
    let refused = ns.inside(|| TcpStream::connect(("127.0.0.1", PORT)).unwrap_err());
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused);
    let failed = |c: &Conn| c.remote.port() == PORT && c.health.and_then(|h| h.connect).is_some();
    assert!(
        watch.until(|w| w.latest.values().any(|c| failed(c) && w.is_closed(c.id))),
        "no failed connect seen"
    );
    let conn = watch.latest.values().find(|c| failed(c)).unwrap();
    let health = conn.health.unwrap();
    eprintln!("closed port: {health:?}");
    assert_eq!((health.resets_received, health.resets_sent, health.retrans), (Some(1), Some(0), Some(0)));
    assert!(health.connect.unwrap().failed);
    assert_eq!(conn.state_label(), Some("FAILED"));
}

#[test]
fn a_lost_first_syn_makes_a_handshake_of_one_retransmit_timeout() {
    const PORT: u16 = 5564;
    let Some(mut watch) = open_collector(Filters { port: Some(PORT), ..Filters::default() }) else { return };
    // numgen counts from 0: only the first SYN is dropped.
    let ns = Netns::new(
        "s",
        &format!("tcp dport {PORT} tcp flags & (syn | ack) == syn numgen inc mod 1000000 == 0 drop"),
    );
    let (client, _server, waited, info) = ns.inside(|| {
        let listener = TcpListener::bind(("127.0.0.1", PORT)).unwrap();
        let start = Instant::now();
        let client = TcpStream::connect(("127.0.0.1", PORT)).unwrap();
        let waited = start.elapsed();
        let (server, _) = listener.accept().unwrap();
        let info = tcp_info(&client);
        (client, server, waited, info)
    });
    let health = health_when(&mut watch, ends(&client), |h| h.connect.is_some());
    let took = health.connect.unwrap().took;
    eprintln!(
        "handshake: tcptop {took:?}, connect() took {waited:?}, TCP_INFO total_retrans {}",
        info.tcpi_total_retrans
    );
    assert!(took >= Duration::from_millis(950) && took < Duration::from_secs(2), "{took:?}");
    assert!(took <= waited, "{took:?} > {waited:?}");
    assert!(!health.connect.unwrap().failed);
    assert_eq!((health.retrans, info.tcpi_total_retrans), (Some(1), 1));
}
