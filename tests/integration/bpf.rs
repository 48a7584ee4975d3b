//! The real eBPF collector against loopback traffic made here: exact bytes, pid, comm and
//! lifecycle, for every traffic shape that has tripped other tools. Needs root.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::thread;
use std::time::Duration;

use tcptop::collector::{Collector, Family, Filters, TcpState};

use crate::helpers::{
    as_traffic, bpf_allowed, open_collector, selected_strategy_unsupported, start_tcptop, stop_tcptop,
    tcptop_command, Ip, Pair, Watch, TRAFFIC_COMM,
};

// A file of its own, named `bpf::udp::...` so that the kernel matrix runs it too.
#[path = "udp.rs"]
mod udp;

fn write_in_chunks(stream: &mut TcpStream, total: usize, chunk: usize) {
    let data = vec![0x5a; chunk];
    let mut left = total;
    while left > 0 {
        let n = left.min(chunk);
        stream.write_all(&data[..n]).unwrap();
        left -= n;
    }
}

fn read_exactly(stream: &mut TcpStream, total: usize) {
    let mut buf = vec![0; total];
    stream.read_exact(&mut buf).unwrap();
}

/// Client writes `up` bytes in `up_chunk` pieces while the server reads them, then the server
/// writes `down` bytes in `down_chunk` pieces while the client reads them; both ends are
/// checked exactly.
fn exchange_and_check(watch: &mut Watch, ip: Ip, up: usize, up_chunk: usize, down: usize, down_chunk: usize) {
    let mut pair = Pair::connect(ip);
    as_traffic(|| {
        thread::scope(|s| {
            s.spawn(|| write_in_chunks(&mut pair.client, up, up_chunk));
            read_exactly(&mut pair.server, up);
        });
        thread::scope(|s| {
            s.spawn(|| write_in_chunks(&mut pair.server, down, down_chunk));
            read_exactly(&mut pair.client, down);
        });
    });
    let (cl, cr) = pair.client_ends();
    let (sl, sr) = pair.server_ends();
    watch.expect_bytes(cl, cr, up as u64, down as u64);
    watch.expect_bytes(sl, sr, down as u64, up as u64);
}

#[test]
fn many_small_writes_count_exactly() {
    let Some(mut watch) = open_collector(Filters::default()) else {
        return;
    };
    for ip in Ip::BOTH {
        exchange_and_check(&mut watch, ip, 100_000, 100, 3_500, 7);
    }
}

#[test]
fn one_large_write_counts_exactly() {
    let Some(mut watch) = open_collector(Filters::default()) else {
        return;
    };
    for ip in Ip::BOTH {
        exchange_and_check(&mut watch, ip, 8 << 20, 8 << 20, 1, 1);
    }
}

/// A MSG_WAITALL read wakes up several times, and tcp_cleanup_rbuf reports the running
/// total each time (bcc issue 5352): it must still count once.
#[test]
fn msg_waitall_reads_count_once() {
    let Some(mut watch) = open_collector(Filters::default()) else {
        return;
    };
    for ip in Ip::BOTH {
        let mut pair = Pair::connect(ip);
        const TOTAL: usize = 1 << 20;
        as_traffic(|| {
            thread::scope(|s| {
                s.spawn(|| {
                    for _ in 0..16 {
                        write_in_chunks(&mut pair.client, TOTAL / 16, TOTAL / 16);
                        thread::sleep(Duration::from_millis(5));
                    }
                });
                let mut buf = vec![0u8; TOTAL];
                let got = unsafe {
                    libc::recv(pair.server.as_raw_fd(), buf.as_mut_ptr().cast(), TOTAL, libc::MSG_WAITALL)
                };
                assert_eq!(got, TOTAL as isize);
            });
        });
        let (cl, cr) = pair.client_ends();
        let (sl, sr) = pair.server_ends();
        watch.expect_bytes(sl, sr, 0, TOTAL as u64);
        watch.expect_bytes(cl, cr, TOTAL as u64, 0);
    }
}

#[test]
fn sendfile_counts_what_was_sent() {
    let Some(mut watch) = open_collector(Filters::default()) else {
        return;
    };
    const SIZE: usize = 300_001;
    let path = std::env::temp_dir().join(format!("tcptop-sendfile-{}", std::process::id()));
    std::fs::write(&path, vec![7u8; SIZE]).unwrap();
    for ip in Ip::BOTH {
        // Connected by the traffic thread: before Linux 6.5 sendfile bypasses tcp_sendmsg, so
        // the sender is only ever seen at connect().
        let mut pair = as_traffic(|| Pair::connect(ip));
        let file = std::fs::File::open(&path).unwrap();
        as_traffic(|| {
            thread::scope(|s| {
                s.spawn(|| {
                    let mut offset: libc::off_t = 0;
                    while (offset as usize) < SIZE {
                        let sent = unsafe {
                            libc::sendfile(
                                pair.client.as_raw_fd(),
                                file.as_raw_fd(),
                                &mut offset,
                                SIZE - offset as usize,
                            )
                        };
                        assert!(sent > 0, "sendfile: {}", std::io::Error::last_os_error());
                    }
                });
                read_exactly(&mut pair.server, SIZE);
            });
        });
        let (cl, cr) = pair.client_ends();
        watch.expect_bytes(cl, cr, SIZE as u64, 0);
        let (sl, sr) = pair.server_ends();
        watch.expect_bytes(sl, sr, 0, SIZE as u64);
    }
    std::fs::remove_file(path).unwrap();
}

/// Opens, sends and closes within about a millisecond: the close event carries the totals,
/// and the lifecycle shows the handshake and the close.
#[test]
fn short_lived_connection_reports_lifecycle_and_final_bytes() {
    let Some(mut watch) = open_collector(Filters::default()) else {
        return;
    };
    for ip in Ip::BOTH {
        let mut pair = Pair::connect(ip);
        let (cl, cr) = pair.client_ends();
        let (sl, sr) = pair.server_ends();
        as_traffic(|| {
            pair.client.write_all(b"0123456789").unwrap();
            pair.client.shutdown(Shutdown::Write).unwrap();
            let mut got = Vec::new();
            pair.server.read_to_end(&mut got).unwrap();
            assert_eq!(got.len(), 10);
            pair.server.write_all(b"bye").unwrap();
            drop(pair.server);
            let mut reply = Vec::new();
            pair.client.read_to_end(&mut reply).unwrap();
            assert_eq!(reply, b"bye");
            drop(pair.client);
        });
        let client = watch.expect_bytes(cl, cr, 10, 3);
        let server = watch.expect_bytes(sl, sr, 3, 10);
        assert!(watch.until(|w| w.is_closed(client.id) && w.is_closed(server.id)), "both ends close");
        let client_steps = watch.transitions(client.id);
        assert_eq!(
            client_steps.first().map(|(o, n)| (o.as_str(), n.as_str())),
            Some(("CLOSE", "SYN_SENT")),
            "{client_steps:?}"
        );
        assert!(client_steps.contains(&("SYN_SENT".into(), "ESTABLISHED".into())), "{client_steps:?}");
        let server_steps = watch.transitions(server.id);
        assert!(server_steps.contains(&("SYN_RECV".into(), "ESTABLISHED".into())), "{server_steps:?}");
        // The close came after everything was read: the final totals did not change.
        assert_eq!(watch.find(cl, cr).map(|c| (c.tx_bytes, c.rx_bytes)), Some((10, 3)));
    }
}

/// The reader closes first, before any FIN from its peer: close() marks the socket shut
/// for reading, which must not be taken for the peer's FIN (that would lose a byte).
#[test]
fn closing_before_the_peer_keeps_every_byte_read() {
    let Some(mut watch) = open_collector(Filters::default()) else { return };
    for ip in Ip::BOTH {
        let mut pair = Pair::connect(ip);
        let (cl, cr) = pair.client_ends();
        as_traffic(|| {
            pair.server.write_all(b"done\n").unwrap();
            read_exactly(&mut pair.client, 5);
            drop(pair.client);
        });
        let client = watch.expect_bytes(cl, cr, 0, 5);
        // FIN_WAIT2 is the last change the close itself makes: the socket may then wait for
        // the FIN_WAIT2 timer (60 s) before it is destroyed, when the peer's ACK came while
        // close() still held the socket.
        let closed = |w: &Watch| {
            w.is_closed(client.id) || w.transitions(client.id).iter().any(|(_, new)| new == "FIN_WAIT2")
        };
        assert!(watch.until(closed), "the client end closes");
        assert_eq!(watch.find(cl, cr).map(|c| (c.tx_bytes, c.rx_bytes)), Some((0, 5)));
    }
}

/// A connection opened before the collector is listed at once, with its state and owner
/// (found in /proc), and counts exactly what comes after the start.
#[test]
fn connection_open_before_start_counts_from_start() {
    if !bpf_allowed() {
        return;
    }
    let mut pair = Pair::connect(Ip::V4);
    as_traffic(|| {
        pair.client.write_all(&[9; 300]).unwrap();
        read_exactly(&mut pair.server, 300);
    });
    let Some(mut watch) = open_collector(Filters::default()) else { return };
    watch.poll();
    let (cl, cr) = pair.client_ends();
    let listed = watch.find(cl, cr).expect("listed at once").clone();
    assert_eq!(
        (listed.tx_bytes, listed.rx_bytes, listed.state, listed.pid),
        (0, 0, Some(TcpState::Established), Some(std::process::id()))
    );
    as_traffic(|| {
        pair.client.write_all(&[9; 4444]).unwrap();
        read_exactly(&mut pair.server, 4444);
    });
    watch.expect_bytes(cl, cr, 4444, 0);
    let (sl, sr) = pair.server_ends();
    watch.expect_bytes(sl, sr, 0, 4444);
}

#[test]
fn two_connections_at_once_are_kept_apart() {
    let Some(mut watch) = open_collector(Filters::default()) else {
        return;
    };
    let mut a = Pair::connect(Ip::V4);
    let mut b = Pair::connect(Ip::V4);
    as_traffic(|| {
        thread::scope(|s| {
            s.spawn(|| write_in_chunks(&mut a.client, 4_000, 1_000));
            s.spawn(|| write_in_chunks(&mut b.client, 9_000, 3_000));
            read_exactly(&mut a.server, 4_000);
            read_exactly(&mut b.server, 9_000);
        });
    });
    let (l, r) = a.client_ends();
    watch.expect_bytes(l, r, 4_000, 0);
    let (l, r) = b.client_ends();
    watch.expect_bytes(l, r, 9_000, 0);
}

/// The owner shown is the thread that first sends or reads after each read of the table, so
/// a connection handed to another thread shows that thread from the next interval on.
#[test]
fn a_connection_handed_to_another_thread_shows_it_next() {
    let Some(mut watch) = open_collector(Filters::default()) else {
        return;
    };
    let mut pair = Pair::connect(Ip::V4);
    let (cl, cr) = pair.client_ends();
    pair.client.write_all(&[1; 10]).unwrap();
    read_exactly(&mut pair.server, 10);
    assert!(watch.until(|w| w.find(cl, cr).is_some_and(|c| c.tx_bytes == 10)));
    assert_ne!(&*watch.find(cl, cr).unwrap().comm, TRAFFIC_COMM, "the test's own thread sent first");
    as_traffic(|| {
        pair.client.write_all(&[2; 20]).unwrap();
        read_exactly(&mut pair.server, 20);
    });
    watch.expect_bytes(cl, cr, 30, 0);
}

/// Traffic that the filters exclude never appears; what they include does.
fn assert_filtered(filters: Filters, mut hidden_pair: Pair, mut shown_pair: Pair) {
    let Some(mut watch) = open_collector(filters) else {
        return;
    };
    as_traffic(|| {
        for pair in [&mut hidden_pair, &mut shown_pair] {
            pair.client.write_all(&[1; 500]).unwrap();
            read_exactly(&mut pair.server, 500);
        }
    });
    let (l, r) = shown_pair.client_ends();
    watch.expect_bytes(l, r, 500, 0);
    let (hl, hr) = hidden_pair.client_ends();
    let (sl, sr) = hidden_pair.server_ends();
    assert!(watch.find(hl, hr).is_none() && watch.find(sl, sr).is_none(), "filtered traffic was reported");
}

#[test]
fn port_filter_keeps_only_that_port() {
    if !bpf_allowed() {
        return;
    }
    let shown = Pair::connect(Ip::V4);
    let port = shown.server.local_addr().unwrap().port();
    assert_filtered(Filters { port: Some(port), ..Filters::default() }, Pair::connect(Ip::V4), shown);
}

/// Adoption gives a slot only to the connections the filters let through: a host with a
/// million sockets and `--port 443` claims the few on that port.
#[test]
fn adoption_claims_only_the_connections_the_filters_let_through() {
    if !bpf_allowed() {
        return;
    }
    let shown = Pair::connect(Ip::V4);
    let others = Pair::listen(Ip::V4);
    let _left_out: Vec<Pair> = (0..40).map(|_| Pair::connect_to(&others)).collect();
    let port = shown.server.local_addr().unwrap().port();
    let Some(filtered) = open_collector(Filters { port: Some(port), ..Filters::default() }) else {
        return;
    };
    assert_eq!(filtered.collector.adopted(), 2, "the two ends of the pair on the port");
    drop(filtered);
    let all = open_collector(Filters::default()).unwrap();
    assert!(all.collector.adopted() >= 82, "without a filter every end: {}", all.collector.adopted());
}

#[test]
fn family_filter_keeps_only_that_family() {
    if !bpf_allowed() {
        return;
    }
    assert_filtered(
        Filters { family: Some(Family::V6), ..Filters::default() },
        Pair::connect(Ip::V4),
        Pair::connect(Ip::V6),
    );
}

#[test]
fn pid_filter_hides_other_processes() {
    let other_pid = std::process::id() + 1_000_000;
    let Some(mut watch) = open_collector(Filters { pid: Some(other_pid), ..Filters::default() }) else {
        return;
    };
    let mut pair = Pair::connect(Ip::V4);
    as_traffic(|| {
        pair.client.write_all(&[1; 700]).unwrap();
        read_exactly(&mut pair.server, 700);
    });
    thread::sleep(Duration::from_millis(200));
    watch.poll();
    let (l, r) = pair.client_ends();
    assert!(watch.find(l, r).is_none(), "a connection of another pid was reported");
    let Some(mut mine) = open_collector(Filters { pid: Some(std::process::id()), ..Filters::default() })
    else {
        return;
    };
    as_traffic(|| {
        pair.client.write_all(&[1; 800]).unwrap();
        read_exactly(&mut pair.server, 800);
    });
    mine.expect_bytes(l, r, 800, 0);
}

/// `tcptop --batch` as a process prints the test's connection with its bytes; where the
/// selected strategy cannot run, it says so in one line and exits 1.
#[test]
fn batch_mode_prints_the_connection() {
    if !bpf_allowed() {
        return;
    }
    if selected_strategy_unsupported() {
        // eBPF alone: with `--probe auto` tcptop would fall back to packet capture.
        let out = tcptop_command().args(["--backend", "ebpf", "--batch", "1", "1"]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        let last = stderr.lines().last().unwrap_or_default();
        assert!(last.starts_with("tcptop: ") && last.contains("cannot run on this kernel"), "{stderr}");
        return;
    }
    // One long interval, cut short by SIGTERM once the traffic is done: it holds all of it.
    // Only this port, so that a busy host cannot fill the pipe read after the exit.
    let listener = Pair::listen(Ip::V4);
    let port = listener.local_addr().unwrap().port().to_string();
    let mut child = start_tcptop(&["--batch", "--port", &port, "3600"]).expect("tcptop starts");
    let mut pair = Pair::connect_to(&listener);
    as_traffic(|| {
        pair.client.write_all(&[2; 1234]).unwrap();
        read_exactly(&mut pair.server, 1234);
    });
    let out = stop_tcptop(&mut child);
    let (l, r) = pair.client_ends();
    let (l, r) = (l.to_string(), r.to_string());
    let (row, fields) = out
        .lines()
        .map(|row| (row, row.split_whitespace().collect::<Vec<_>>()))
        .find(|(_, fields)| fields.len() > 4 && fields[2] == l && fields[3] == r)
        .unwrap_or_else(|| panic!("no row for {l} -> {r} in:\n{out}"));
    assert_eq!(fields[0], std::process::id().to_string(), "{row}\nin:\n{out}");
    assert_eq!(&fields[5..7], ["0", "1234"], "{row}\nin:\n{out}");
}

/// After the first, complete read, a read lists only the connections that moved bytes since
/// the last one, with their exact totals, and counts the idle ones it left out.
#[test]
fn a_read_lists_only_the_connections_that_changed() {
    let Some(mut watch) = open_collector(Filters::default()) else {
        return;
    };
    let (mut busy, mut idle) = (Pair::connect(Ip::V4), Pair::connect(Ip::V4));
    let exchange = |pair: &mut Pair, bytes: usize| {
        as_traffic(|| {
            write_in_chunks(&mut pair.client, bytes, bytes);
            read_exactly(&mut pair.server, bytes);
        })
    };
    exchange(&mut busy, 10);
    exchange(&mut idle, 20);
    let first = watch.collector.collect().expect("collecting");
    assert!(first.is_complete(), "the first read lists every connection");
    exchange(&mut busy, 5);
    let changes = watch.collector.collect().expect("collecting");
    let listed = |pair: &Pair| {
        let ends = [pair.client_ends(), pair.server_ends()];
        let mut bytes: Vec<(u64, u64)> = changes
            .conns
            .iter()
            .filter(|c| ends.contains(&(c.local, c.remote)))
            .map(|c| (c.tx_bytes, c.rx_bytes))
            .collect();
        bytes.sort_unstable();
        bytes
    };
    assert_eq!(listed(&busy), [(0, 15), (15, 0)], "the busy pair, each end once");
    assert_eq!(listed(&idle), [], "the idle pair is left out");
    assert!(changes.unchanged >= Some(2), "the idle ends are counted: {:?}", changes.unchanged);
}
