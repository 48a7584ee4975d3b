//! A TCP sequence counter wraps at 4 GiB: more than that through a path no hook sees (splice
//! reads; sendfile before Linux 6.5) within one long display interval must still count exactly.
//! Host only (the kernel matrix's emulated guests move bytes too slowly); needs root.

use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::thread;

use crate::helpers::{as_traffic, start_tcptop, stop_tcptop, Ip, Pair};

/// More than a wrap of the 32-bit counters, and more than the 3 GiB one sample may add.
const TOTAL: u64 = 5 << 30;

/// Runs tcptop with one interval of an hour (cut short by SIGTERM), moves TOTAL bytes with
/// `send` and `receive` on a fresh loopback pair, and returns the JSON records it printed.
fn records_of(
    send: fn(&mut TcpStream),
    receive: fn(&mut TcpStream),
) -> Option<(Pair, Vec<serde_json::Value>)> {
    let listener = Pair::listen(Ip::V4);
    let port = listener.local_addr().unwrap().port().to_string();
    let mut tcptop = start_tcptop(&["--format", "json", "--port", &port, "3600"])?;
    let mut pair = Pair::connect_to(&listener);
    as_traffic(|| {
        thread::scope(|s| {
            s.spawn(|| send(&mut pair.client));
            receive(&mut pair.server);
        })
    });
    let out = stop_tcptop(&mut tcptop);
    let records = out.lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    Some((pair, records))
}

/// The totals (tx, rx) of the record whose ends are (local, remote).
fn totals(
    records: &[serde_json::Value],
    (local, remote): (std::net::SocketAddr, std::net::SocketAddr),
) -> (u64, u64) {
    let record = records
        .iter()
        .rfind(|r| r["local_port"] == local.port() && r["remote_port"] == remote.port())
        .unwrap_or_else(|| panic!("no record of {local} -> {remote} in {records:?}"));
    (record["tx_total"].as_u64().unwrap(), record["rx_total"].as_u64().unwrap())
}

fn write_all(stream: &mut TcpStream) {
    let chunk = vec![0x5a; 4 << 20];
    for _ in 0..TOTAL / chunk.len() as u64 {
        stream.write_all(&chunk).unwrap();
    }
}

fn read_all(stream: &mut TcpStream) {
    let mut buf = vec![0; 4 << 20];
    let mut left = TOTAL;
    while left > 0 {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "the peer closed early");
        left -= n as u64;
    }
}

/// Reads with splice(2) into a pipe, and from the pipe into /dev/null: tcp_read_sock, which
/// neither sock_recvmsg's tracepoint nor its hooks see.
fn splice_all(stream: &mut TcpStream) {
    let mut fds = [0; 2];
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let (pipe_out, pipe_in) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let null = File::options().write(true).open("/dev/null").unwrap();
    let mut left = TOTAL;
    while left > 0 {
        let mut in_pipe = splice(stream.as_raw_fd(), pipe_in.as_raw_fd(), 1 << 20);
        left -= in_pipe as u64;
        while in_pipe > 0 {
            in_pipe -= splice(pipe_out.as_raw_fd(), null.as_raw_fd(), in_pipe);
        }
    }
}

/// One splice(2) call of up to `len` bytes, which must move some.
fn splice(from: RawFd, to: RawFd, len: usize) -> usize {
    let moved = unsafe { libc::splice(from, std::ptr::null_mut(), to, std::ptr::null_mut(), len, 0) };
    assert!(moved > 0, "splice: {}", std::io::Error::last_os_error());
    moved as usize
}

/// Sends TOTAL bytes with sendfile(2), a sparse file of 256 MiB over and over (its pages stay
/// in the page cache).
fn sendfile_all(stream: &mut TcpStream) {
    const FILE: u64 = 256 << 20;
    let file = tempfile::tempfile().unwrap();
    file.set_len(FILE).unwrap();
    for _ in 0..TOTAL / FILE {
        let mut offset: libc::off_t = 0;
        while (offset as u64) < FILE {
            let left = FILE as usize - offset as usize;
            let sent = unsafe { libc::sendfile(stream.as_raw_fd(), file.as_raw_fd(), &mut offset, left) };
            assert!(sent > 0, "sendfile: {}", std::io::Error::last_os_error());
        }
    }
}

#[test]
fn more_than_4_gib_of_splice_reads_in_one_interval_count_exactly() {
    let Some((pair, records)) = records_of(write_all, splice_all) else {
        return;
    };
    assert_eq!(totals(&records, pair.server_ends()), (0, TOTAL), "the reader");
    assert_eq!(totals(&records, pair.client_ends()), (TOTAL, 0), "the writer");
}

#[test]
fn more_than_4_gib_of_sendfile_in_one_interval_count_exactly() {
    let Some((pair, records)) = records_of(sendfile_all, read_all) else {
        return;
    };
    assert_eq!(totals(&records, pair.client_ends()), (TOTAL, 0), "the writer");
    assert_eq!(totals(&records, pair.server_ends()), (0, TOTAL), "the reader");
}
