//! The sock_diag collector against loopback traffic made here: exact bytes and owners for the
//! traffic shapes the eBPF tests use, closes between two reads, two network namespaces, an
//! unprivileged run of the binary, and agreement with the eBPF collector. Needs root.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::thread;

use tcptop::collector::{Collector, Conn, EventKind, Filters};
use tcptop::sockdiag::SockDiagCollector;

use crate::helpers::{as_traffic, bpf_allowed, open_collector, Ip, Pair, Watch};
use crate::ns::connect_from;

/// The collector, where the tests run (as root, or skipped as helpers::bpf_allowed says).
fn open_sockdiag() -> Option<Watch<SockDiagCollector>> {
    if !bpf_allowed() {
        return None;
    }
    let collector = SockDiagCollector::open(&Filters::default(), &mut |note| eprintln!("{note}"))
        .expect("opening the sock_diag collector");
    Some(Watch { collector, latest: HashMap::new(), events: Vec::new() })
}

/// This process as /proc names it: sock_diag's owners come from /proc/<pid>/fd and
/// /proc/<pid>/comm, so the comm is the process's, not the traffic thread's.
fn this_process() -> (Option<u32>, String) {
    let comm = std::fs::read_to_string("/proc/self/comm").unwrap();
    (Some(std::process::id()), comm.trim_end().to_string())
}

/// Waits until `ends` report these totals, then asserts them and the owner, if one is given.
fn expect_totals(
    watch: &mut Watch<SockDiagCollector>,
    (local, remote): (SocketAddr, SocketAddr),
    tx: u64,
    rx: u64,
    owner: Option<(Option<u32>, String)>,
) -> Conn {
    let reached = |w: &Watch<SockDiagCollector>| {
        w.find(local, remote).is_some_and(|c| c.tx_bytes >= tx && c.rx_bytes >= rx)
    };
    watch.until(reached);
    watch.poll();
    let conn =
        watch.find(local, remote).unwrap_or_else(|| panic!("no connection {local} -> {remote}")).clone();
    assert_eq!((conn.tx_bytes, conn.rx_bytes), (tx, rx), "tx/rx bytes of {local} -> {remote}");
    if let Some(owner) = owner {
        assert_eq!((conn.pid, conn.comm.to_string()), owner, "owner of {local} -> {remote}");
    }
    conn
}

/// Both ends of `pair` after `up` bytes went up and `down` came down.
fn expect_pair(watch: &mut Watch<SockDiagCollector>, pair: &Pair, up: usize, down: usize) {
    expect_totals(watch, pair.client_ends(), up as u64, down as u64, Some(this_process()));
    expect_totals(watch, pair.server_ends(), down as u64, up as u64, Some(this_process()));
}

/// `total` bytes from `from` to `to`, written `chunk` at a time and read as they come.
fn send(from: &mut TcpStream, to: &mut TcpStream, total: usize, chunk: usize) {
    thread::scope(|s| {
        s.spawn(|| {
            let data = vec![0x5a; chunk];
            for start in (0..total).step_by(chunk) {
                from.write_all(&data[..chunk.min(total - start)]).unwrap();
            }
        });
        let mut buf = vec![0; total];
        to.read_exact(&mut buf).unwrap();
    });
}

/// `up` bytes from client to server in `up_chunk` writes, then `down` back in `down_chunk`
/// writes, over IPv4 and IPv6; both ends are checked exactly.
fn exchange_and_check(up: usize, up_chunk: usize, down: usize, down_chunk: usize) {
    let Some(mut watch) = open_sockdiag() else { return };
    for ip in Ip::BOTH {
        let mut pair = Pair::connect(ip);
        as_traffic(|| {
            send(&mut pair.client, &mut pair.server, up, up_chunk);
            send(&mut pair.server, &mut pair.client, down, down_chunk);
        });
        expect_pair(&mut watch, &pair, up, down);
    }
}

#[test]
fn many_small_writes_count_exactly() {
    exchange_and_check(100_000, 100, 3_500, 7);
}

#[test]
fn one_large_write_counts_exactly() {
    exchange_and_check(8 << 20, 8 << 20, 1, 1);
}

#[test]
fn msg_waitall_reads_count_once() {
    let Some(mut watch) = open_sockdiag() else { return };
    const TOTAL: usize = 1 << 20;
    for ip in Ip::BOTH {
        let mut pair = Pair::connect(ip);
        thread::scope(|s| {
            s.spawn(|| {
                for _ in 0..16 {
                    pair.client.write_all(&[3; TOTAL / 16]).unwrap();
                    thread::sleep(std::time::Duration::from_millis(5));
                }
            });
            let mut buf = vec![0u8; TOTAL];
            let got = unsafe {
                libc::recv(pair.server.as_raw_fd(), buf.as_mut_ptr().cast(), TOTAL, libc::MSG_WAITALL)
            };
            assert_eq!(got, TOTAL as isize);
        });
        expect_pair(&mut watch, &pair, TOTAL, 0);
    }
}

#[test]
fn sendfile_counts_what_was_sent() {
    let Some(mut watch) = open_sockdiag() else { return };
    const SIZE: usize = 300_001;
    let path = std::env::temp_dir().join(format!("tcptop-sockdiag-sendfile-{}", std::process::id()));
    std::fs::write(&path, vec![7u8; SIZE]).unwrap();
    for ip in Ip::BOTH {
        let mut pair = Pair::connect(ip);
        let file = File::open(&path).unwrap();
        thread::scope(|s| {
            s.spawn(|| {
                let mut offset: libc::off_t = 0;
                while (offset as usize) < SIZE {
                    let left = SIZE - offset as usize;
                    let sent = unsafe {
                        libc::sendfile(pair.client.as_raw_fd(), file.as_raw_fd(), &mut offset, left)
                    };
                    assert!(sent > 0, "sendfile: {}", std::io::Error::last_os_error());
                }
            });
            pair.server.read_exact(&mut vec![0; SIZE]).unwrap();
        });
        expect_pair(&mut watch, &pair, SIZE, 0);
    }
    std::fs::remove_file(path).unwrap();
}

/// Opens, sends and closes before the collector reads again: the totals arrive with the close,
/// through the destroy group. No read saw the sockets in /proc, so their owners are unknown.
#[test]
fn a_connection_closed_between_two_reads_reports_its_final_totals() {
    let Some(mut watch) = open_sockdiag() else { return };
    for ip in Ip::BOTH {
        let mut pair = Pair::connect(ip);
        let (client_ends, server_ends) = (pair.client_ends(), pair.server_ends());
        send(&mut pair.client, &mut pair.server, 10, 10);
        pair.client.shutdown(Shutdown::Write).unwrap();
        assert_eq!(pair.server.read(&mut [0; 1]).unwrap(), 0, "end of file");
        send(&mut pair.server, &mut pair.client, 3, 3);
        drop(pair.server);
        assert_eq!(pair.client.read(&mut [0; 1]).unwrap(), 0, "end of file");
        drop(pair.client);
        let client = expect_totals(&mut watch, client_ends, 10, 3, Some((None, String::new())));
        let server = expect_totals(&mut watch, server_ends, 3, 10, Some((None, String::new())));
        assert!(watch.until(|w| w.is_closed(client.id) && w.is_closed(server.id)), "both ends close");
    }
}

/// Seen open first, then closed between two reads: the close keeps the owner and adds what
/// came after the last read, the peer's FIN not counted as a byte.
#[test]
fn a_connection_seen_open_keeps_its_owner_at_the_close() {
    let Some(mut watch) = open_sockdiag() else { return };
    let mut pair = Pair::connect(Ip::V4);
    send(&mut pair.client, &mut pair.server, 100, 100);
    let (client_ends, server_ends) = (pair.client_ends(), pair.server_ends());
    let client = expect_totals(&mut watch, client_ends, 100, 0, Some(this_process()));
    send(&mut pair.server, &mut pair.client, 55, 5);
    drop(pair.server);
    assert_eq!(pair.client.read(&mut [0; 8]).unwrap(), 0, "end of file");
    drop(pair.client);
    assert!(watch.until(|w| w.is_closed(client.id)), "the client end closes");
    expect_totals(&mut watch, client_ends, 100, 55, Some(this_process()));
    expect_totals(&mut watch, server_ends, 55, 100, Some(this_process()));
}

/// A connection open before the collector counts what comes after its start.
#[test]
fn a_connection_open_before_start_counts_from_start() {
    if !bpf_allowed() {
        return;
    }
    let mut pair = Pair::connect(Ip::V6);
    send(&mut pair.client, &mut pair.server, 300, 300);
    let Some(mut watch) = open_sockdiag() else { return };
    send(&mut pair.client, &mut pair.server, 4_444, 1_000);
    expect_pair(&mut watch, &pair, 4_444, 0);
}

/// A network namespace made here with its loopback up; deleted on drop.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("tcptop-diag{}{tag}", std::process::id());
        for args in [vec!["netns", "add", &name], vec!["-n", &name, "link", "set", "lo", "up"]] {
            assert!(Command::new("ip").args(&args).status().unwrap().success(), "ip {args:?}");
        }
        Netns(name)
    }

    /// Runs `work` on a thread inside this namespace (setns is per thread).
    fn inside<T: Send>(&self, work: impl FnOnce() -> T + Send) -> T {
        let ns = File::open(format!("/run/netns/{}", self.0)).unwrap();
        as_traffic(|| {
            assert_eq!(unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) }, 0, "setns");
            work()
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// The same addresses and ports in two namespaces are two connections, each counted exactly.
#[test]
fn identical_tuples_in_two_namespaces_stay_apart() {
    let Some(mut watch) = open_sockdiag() else { return };
    let namespaces = [Netns::new("a"), Netns::new("b")];
    let server: SocketAddr = "127.0.0.1:5557".parse().unwrap();
    let client: SocketAddr = "127.0.0.1:40557".parse().unwrap();
    let pairs: Vec<Pair> = namespaces
        .iter()
        .zip([1_000, 2_000])
        .map(|(ns, bytes)| {
            ns.inside(|| {
                let listener = TcpListener::bind(server).unwrap();
                let client = connect_from(client, server);
                let mut pair = Pair { client, server: listener.accept().unwrap().0 };
                send(&mut pair.client, &mut pair.server, bytes, 100);
                pair
            })
        })
        .collect();
    let reported = |w: &Watch<SockDiagCollector>| {
        let mut totals: Vec<u64> = w
            .latest
            .values()
            .filter(|c| c.local == client && c.remote == server)
            .map(|c| c.tx_bytes)
            .collect();
        totals.sort();
        totals == [1_000, 2_000]
    };
    assert!(watch.until(reported), "both connections, exactly: {:?}", watch.latest);
    let netns: Vec<Option<u32>> =
        watch.latest.values().filter(|c| c.local == client && c.remote == server).map(|c| c.netns).collect();
    assert!(netns[0].is_some() && netns[0] != netns[1], "two namespaces: {netns:?}");
    drop(pairs);
}

/// The binary as nobody, `--backend sockdiag -b`, counts a connection root made here: exact
/// bytes, no owner (root's /proc/<pid>/fd is closed to nobody).
#[test]
fn an_unprivileged_run_counts_a_loopback_connection() {
    if !bpf_allowed() {
        return;
    }
    let listener = Pair::listen(Ip::V4);
    let port = listener.local_addr().unwrap().port().to_string();
    let mut child = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", env!("CARGO_BIN_EXE_tcptop")])
        .args(["-v", "--backend", "sockdiag", "-b", "--port", &port, "3600"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting tcptop as nobody");
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut said = String::new();
    while !said.contains("using the") && stderr.read_line(&mut said).unwrap() > 0 {}
    assert!(said.contains("using the sockdiag"), "tcptop did not start: {said}");
    let mut pair = Pair::connect_to(&listener);
    send(&mut pair.client, &mut pair.server, 1_234, 100);
    thread::sleep(std::time::Duration::from_millis(100));
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(child.wait().unwrap().code(), Some(0), "{said}");
    let mut out = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    let (l, r) = pair.client_ends();
    let (l, r) = (l.to_string(), r.to_string());
    let fields = out
        .lines()
        .map(|row| row.split_whitespace().collect::<Vec<_>>())
        .find(|fields| fields.len() > 4 && fields[2] == l && fields[3] == r)
        .unwrap_or_else(|| panic!("no row for {l} -> {r} in:\n{out}"));
    assert_eq!((fields[0], &fields[5..7]), ("-", &["0", "1234"][..]), "RX_BYTES, TX_BYTES: {fields:?}");
    // The summary line says what it cannot see.
    assert!(out.lines().next().is_some_and(|l| l.contains(" probe=sockdiag/unprivileged ")), "{out}");
}

/// As nobody, `--backend auto` says in one line that eBPF cannot run and sock_diag stands in.
#[test]
fn an_unprivileged_auto_run_falls_back_to_sock_diag_in_one_line() {
    if !bpf_allowed() {
        return;
    }
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", env!("CARGO_BIN_EXE_tcptop")])
        .args(["-b", "--port", "9", "1", "1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("tcptop: eBPF cannot run here (needs root"), "{stderr}");
    assert!(stderr.contains("through sock_diag instead"), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("probe=sockdiag"));
}

/// Both collectors on one workload report the same totals for every connection in it.
#[test]
fn agrees_with_the_ebpf_collector_byte_for_byte() {
    let Some(mut diag) = open_sockdiag() else { return };
    let Some(mut ebpf) = open_collector(Filters::default()) else { return };
    let mut pairs: Vec<Pair> = Vec::new();
    for (ip, up, chunk, down) in
        [(Ip::V4, 70_001, 13, 900), (Ip::V6, 3 << 20, 64 << 10, 5), (Ip::V4, 1, 1, 0)]
    {
        let mut pair = Pair::connect(ip);
        as_traffic(|| {
            send(&mut pair.client, &mut pair.server, up, chunk);
            send(&mut pair.server, &mut pair.client, down, 7.min(down.max(1)));
        });
        pairs.push(pair);
    }
    for pair in &pairs {
        for (local, remote) in [pair.client_ends(), pair.server_ends()] {
            let totals = |c: &Conn| (c.tx_bytes, c.rx_bytes);
            let settled = |w: &Watch, diag: &Watch<SockDiagCollector>| {
                w.find(local, remote)
                    .map(totals)
                    .is_some_and(|t| diag.find(local, remote).map(totals) == Some(t))
            };
            for _ in 0..100 {
                ebpf.poll();
                diag.poll();
                if settled(&ebpf, &diag) {
                    break;
                }
                thread::sleep(std::time::Duration::from_millis(20));
            }
            let (e, d) = (ebpf.find(local, remote).map(totals), diag.find(local, remote).map(totals));
            assert!(e.is_some() && e == d, "{local} -> {remote}: eBPF {e:?}, sock_diag {d:?}");
        }
    }
}

/// State changes between two reads are events, as the eBPF collector sends them: the first
/// read of a new connection, a change a later read sees, and the last one at the destroy.
#[test]
fn state_changes_seen_between_reads_are_events() {
    let Some(mut watch) = open_sockdiag() else { return };
    let mut pair = Pair::connect(Ip::V4);
    let server = expect_totals(&mut watch, pair.server_ends(), 0, 0, Some(this_process()));
    pair.client.shutdown(Shutdown::Write).unwrap();
    assert_eq!(pair.server.read(&mut [0; 1]).unwrap(), 0, "end of file");
    let state = |old: &str, new: &str| (old.to_string(), new.to_string());
    let half_closed = [state("CLOSE", "ESTABLISHED"), state("ESTABLISHED", "CLOSE_WAIT")];
    assert!(watch.until(|w| w.transitions(server.id) == half_closed), "{:?}", watch.transitions(server.id));
    drop(pair);
    assert!(watch.until(|w| w.is_closed(server.id)), "the server end closes");
    assert_eq!(watch.transitions(server.id).last(), Some(&state("CLOSE_WAIT", "CLOSE")));
}

/// More closes at once than the destroy group's queue holds: the kernel drops messages
/// (ENOBUFS). Each loss is counted, and every connection still closes, with its final totals
/// where its message came and the same totals of its last read where it was lost.
#[test]
fn a_full_destroy_queue_counts_its_losses_and_loses_no_close() {
    if !bpf_allowed() {
        return;
    }
    // The smallest queue the kernel allows: a few messages.
    let mut collector = SockDiagCollector::with_destroy_queue(&Filters::default(), &mut |_| {}, 1).unwrap();
    let mut pairs: Vec<Pair> = (0..64).map(|_| Pair::connect(Ip::V4)).collect();
    let mut expected = HashMap::new();
    for pair in &mut pairs {
        send(&mut pair.client, &mut pair.server, 10, 10);
        send(&mut pair.server, &mut pair.client, 20, 20);
        expected.insert(pair.client_ends(), (10, 20));
        expected.insert(pair.server_ends(), (20, 10));
    }
    let sample = collector.collect().unwrap();
    let ids: HashMap<u64, (u64, u64)> = sample
        .conns
        .iter()
        .filter_map(|conn| Some((conn.id, *expected.get(&(conn.local, conn.remote))?)))
        .collect();
    assert_eq!(ids.len(), expected.len(), "every end is read");
    assert!(sample
        .conns
        .iter()
        .filter(|c| ids.contains_key(&c.id))
        .all(|c| ids[&c.id] == (c.tx_bytes, c.rx_bytes)));
    drop(pairs);
    let (mut closed, mut lost_events) = (HashMap::new(), 0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while closed.len() < ids.len() && std::time::Instant::now() < deadline {
        thread::sleep(std::time::Duration::from_millis(50));
        let sample = collector.collect().unwrap();
        lost_events = sample.overflow.lost_events;
        for event in
            sample.events.iter().filter(|e| e.kind == EventKind::Closed && ids.contains_key(&e.conn.id))
        {
            assert!(
                closed.insert(event.conn.id, (event.conn.tx_bytes, event.conn.rx_bytes)).is_none(),
                "closed once"
            );
        }
    }
    assert_eq!(closed, ids, "every end closes once, with its totals");
    assert!(lost_events > 0, "the lost destroy messages are counted");
}
