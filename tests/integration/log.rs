//! Machine-readable output of the real binary: the `--log` CSV, `--format json|csv`,
//! `--events`, stops by SIGTERM and closed pipes, and log paths tcptop must refuse.
//! Tests that load BPF need root.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{ChildStdout, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use serde::Deserialize;

use crate::helpers::{
    as_traffic, bpf_allowed, start_tcptop as start, stop_tcptop, tcptop_command as tcptop, Ip, Pair,
};

/// The columns these tests check; the others are ignored.
#[derive(Debug, Deserialize)]
struct Row {
    timestamp: String,
    pid: Option<u32>,
    local_addr: String,
    local_port: u16,
    remote_addr: String,
    remote_port: u16,
    rx_bytes: u64,
    tx_bytes: u64,
    rx_total: u64,
    tx_total: u64,
}

impl Row {
    fn is(&self, (local, remote): (SocketAddr, SocketAddr)) -> bool {
        (self.local_addr.parse(), self.local_port, self.remote_addr.parse(), self.remote_port)
            == (Ok(local.ip()), local.port(), Ok(remote.ip()), remote.port())
    }
}

/// A connection that keeps sending until dropped: traffic in flight when tcptop is stopped.
struct Flood {
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Flood {
    fn start() -> Flood {
        let Pair { mut client, mut server } = Pair::connect(Ip::V4);
        let stop = Arc::new(AtomicBool::new(false));
        let running = stop.clone();
        let writer = thread::spawn(move || {
            // Bounded: at most 20 000 chunks of 4 KiB, whatever happens to the test.
            for _ in 0..20_000 {
                if running.load(Ordering::Relaxed) || client.write_all(&[3; 4096]).is_err() {
                    return;
                }
                thread::sleep(Duration::from_micros(200));
            }
        });
        let reader = thread::spawn(move || while server.read(&mut [0; 65536]).is_ok_and(|n| n > 0) {});
        Flood { stop, threads: vec![writer, reader] }
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            thread.join().unwrap();
        }
    }
}

/// Bytes (up, down) moved in three rounds a little over an interval apart: the client
/// sends `up` bytes and the server answers `down`.
const ROUNDS: [(usize, usize); 3] = [(10_000, 7), (123_457, 1), (1, 65_536)];

fn exchange_rounds(pair: &mut Pair) {
    for (i, &(up, down)) in ROUNDS.iter().enumerate() {
        if i > 0 {
            thread::sleep(Duration::from_millis(250));
        }
        as_traffic(|| {
            thread::scope(|s| {
                s.spawn(|| pair.client.write_all(&vec![1; up]).unwrap());
                pair.server.read_exact(&mut vec![0; up]).unwrap();
            });
            pair.server.write_all(&vec![2; down]).unwrap();
            pair.client.read_exact(&mut vec![0; down]).unwrap();
        });
    }
}

/// The rows of each end of `pair` sum exactly to what it moved, and the last row of each
/// has those totals.
fn assert_sums(rows: &[Row], pair: &Pair, rounds: &[(usize, usize)]) {
    let up: u64 = rounds.iter().map(|r| r.0 as u64).sum();
    let down: u64 = rounds.iter().map(|r| r.1 as u64).sum();
    for (ends, tx, rx) in [(pair.client_ends(), up, down), (pair.server_ends(), down, up)] {
        let mine: Vec<&Row> = rows.iter().filter(|r| r.is(ends)).collect();
        let sums = mine.iter().fold((0, 0), |(t, r), row| (t + row.tx_bytes, r + row.rx_bytes));
        assert_eq!(sums, (tx, rx), "tx/rx of {ends:?} in {mine:#?}");
        let last = mine.last().unwrap();
        assert_eq!((last.tx_total, last.rx_total), (tx, rx), "{last:?}");
    }
    let client = rows.iter().find(|r| r.is(pair.client_ends())).unwrap();
    assert_eq!(client.pid, Some(std::process::id()));
}

/// Every row of a CSV text, which must have the header and parse completely.
fn csv_rows(text: &str) -> Vec<Row> {
    assert!(text.ends_with('\n'), "the last row is unfinished: {text:?}");
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    assert_eq!(reader.headers().unwrap().get(0), Some("timestamp"));
    reader.deserialize().map(|row| row.expect("a complete row")).collect()
}

fn json_rows(text: &str) -> Vec<Row> {
    assert!(text.ends_with('\n'), "the last line is unfinished: {text:?}");
    text.lines().map(|line| serde_json::from_str(line).expect("a complete JSON line")).collect()
}

/// Runs tcptop with `args` during three rounds of traffic and a flood, stops it with
/// SIGTERM, and returns its stdout.
fn run_during_traffic(args: &[&str], pair: &mut Pair) -> Option<String> {
    let mut child = start(args)?;
    let mut stdout = child.stdout.take().unwrap();
    let output = thread::spawn(move || {
        let mut text = String::new();
        stdout.read_to_string(&mut text).unwrap();
        text
    });
    exchange_rounds(pair);
    let flood = Flood::start();
    thread::sleep(Duration::from_millis(100));
    stop_tcptop(&mut child);
    drop(flood);
    Some(output.join().unwrap())
}

#[test]
fn csv_log_rows_sum_to_the_bytes_moved_and_a_second_run_continues_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("tcptop.csv");
    let log_arg = log.to_str().unwrap();
    let mut earlier_rows = 0;
    for _ in 0..2 {
        let mut pair = Pair::connect(Ip::V4);
        // Without a terminal and without --batch, tcptop only logs.
        let Some(stdout) = run_during_traffic(&["--log", log_arg, "0.2"], &mut pair) else {
            return;
        };
        assert_eq!(stdout, "");
        let rows = csv_rows(&fs::read_to_string(&log).unwrap());
        assert_sums(&rows[earlier_rows..], &pair, &ROUNDS);
        assert!(rows.windows(2).all(|w| w[0].timestamp <= w[1].timestamp), "rows are in time order");
        earlier_rows = rows.len();
    }
}

#[test]
fn json_and_csv_on_stdout_sum_to_the_bytes_moved() {
    for format in ["json", "csv"] {
        let mut pair = Pair::connect(Ip::V6);
        let Some(stdout) = run_during_traffic(&["-b", "--format", format, "0.2"], &mut pair) else {
            return;
        };
        let rows = if format == "json" { json_rows(&stdout) } else { csv_rows(&stdout) };
        assert_sums(&rows, &pair, &ROUNDS);
    }
}

/// With an interval far longer than the test, the only interval is the one SIGTERM cut
/// short: it is in the log, complete, while a transfer was still running.
#[test]
fn sigterm_in_a_transfer_writes_the_interval_it_cut_short() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("cut.csv");
    let mut pair = Pair::connect(Ip::V4);
    let Some(mut child) = start(&["--log", log.to_str().unwrap(), "--batch", "3600"]) else {
        return;
    };
    let flood = Flood::start();
    exchange_rounds(&mut pair);
    stop_tcptop(&mut child);
    drop(flood);
    let rows = csv_rows(&fs::read_to_string(&log).unwrap());
    assert_sums(&rows, &pair, &ROUNDS);
    let timestamps: std::collections::HashSet<&str> = rows.iter().map(|r| r.timestamp.as_str()).collect();
    assert_eq!(timestamps.len(), 1, "one interval");
}

/// Events come from the event stream as they happen: with a one-hour interval, no tick
/// ever collects them.
#[test]
fn events_are_printed_as_they_happen() {
    let Some(mut child) = start(&["--events", "3600"]) else {
        return;
    };
    let (lines, arrived) = mpsc::channel();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let reader = thread::spawn(move || {
        for line in stdout.lines() {
            let line: serde_json::Value = serde_json::from_str(&line.unwrap()).expect("a JSON line");
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    let mut pair = Pair::connect(Ip::V4);
    let client = pair.client_ends();
    as_traffic(|| {
        pair.client.write_all(b"0123456789").unwrap();
        pair.server.read_exact(&mut [0; 10]).unwrap();
        pair.server.write_all(b"bye").unwrap();
        pair.client.read_exact(&mut [0; 3]).unwrap();
    });
    drop(pair);
    let end = |line: &serde_json::Value, side: &str| {
        format!("{}:{}", line[format!("{side}_addr")].as_str().unwrap_or("-"), line[format!("{side}_port")])
    };
    let (local, remote) = (client.0.to_string(), client.1.to_string());
    let mut all = Vec::new();
    while let Ok(line) = arrived.recv_timeout(Duration::from_secs(5)) {
        let ours = end(&line, "local") == local && end(&line, "remote") == remote;
        let closed = ours && line["event"] == "closed";
        all.push(line);
        if closed {
            break;
        }
    }
    // Matched by id: at SYN_SENT the connection has no local port yet.
    let id = &all.last().expect("events")["conn_id"];
    let seen: Vec<&serde_json::Value> = all.iter().filter(|l| &l["conn_id"] == id).collect();
    let events: Vec<(&str, &str)> =
        seen.iter().map(|l| (l["event"].as_str().unwrap(), l["new_state"].as_str().unwrap_or("-"))).collect();
    assert_eq!(events[..2], [("state", "SYN_SENT"), ("opened", "ESTABLISHED")], "{seen:#?}");
    assert_eq!(events.last(), Some(&("closed", "-")), "{seen:#?}");
    let closed = seen.last().unwrap();
    assert_eq!((&closed["tx_total"], &closed["rx_total"]), (&10.into(), &3.into()));
    stop_tcptop(&mut child);
    reader.join().unwrap();
}

/// `tcptop ... | head -3`: the closed pipe ends tcptop with status 0 and no error, in every
/// output mode.
#[test]
fn a_closed_pipe_is_a_clean_exit() {
    // An idle connection that `-a` lists every interval, and connections opened until tcptop
    // is gone for `--events`.
    let _idle = Pair::connect(Ip::V4);
    let modes: [&[&str]; 4] = [
        &["-b", "0.1"],
        &["-b", "-a", "--format", "json", "0.1"],
        &["-a", "--format", "csv", "0.1"],
        &["--events"],
    ];
    for args in modes {
        let Some(mut child) = start(args) else {
            return;
        };
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let done = AtomicBool::new(false);
        thread::scope(|s| {
            s.spawn(|| {
                for _ in 0..500 {
                    if done.load(Ordering::Relaxed) {
                        return;
                    }
                    drop(Pair::connect(Ip::V4));
                    thread::sleep(Duration::from_millis(10));
                }
            });
            read_lines_then_close(&mut stdout, 3);
            drop(stdout);
            let status = child.wait().unwrap();
            done.store(true, Ordering::Relaxed);
            let mut stderr = String::new();
            child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
            assert_eq!(status.code(), Some(0), "{args:?}: {stderr}");
            assert!(!stderr.contains("tcptop: "), "{args:?}: {stderr}");
        });
    }
}

fn read_lines_then_close(stdout: &mut BufReader<ChildStdout>, count: usize) {
    let mut line = String::new();
    for _ in 0..count {
        line.clear();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "tcptop stopped printing");
    }
}

/// Runs tcptop with `--log path` and checks it refuses at once, in one line, before any
/// probe is attached.
fn assert_refused(path: &Path, why: &str) {
    let out = tcptop().args(["--log", path.to_str().unwrap(), "-b", "1", "1"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line and no probe: {stderr}");
    let expected = format!("tcptop: cannot log to {}: ", path.display());
    assert!(stderr.starts_with(&expected) && stderr.contains(why), "{stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn symlinks_and_directories_are_refused_and_nothing_changes() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("precious");
    fs::write(&target, "keep me\n").unwrap();
    let link = dir.path().join("link.csv");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let dangling = dir.path().join("dangling.csv");
    std::os::unix::fs::symlink(dir.path().join("created"), &dangling).unwrap();
    let sub = dir.path().join("sub");
    fs::create_dir(&sub).unwrap();
    assert_refused(&link, "symbolic link");
    assert_refused(&dangling, "symbolic link");
    assert_refused(&sub, "directory");
    assert_eq!(fs::read_to_string(&target).unwrap(), "keep me\n");
    let mut names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    names.sort();
    assert_eq!(names, ["dangling.csv", "link.csv", "precious", "sub"]);
    assert_eq!(fs::read_dir(&sub).unwrap().count(), 0);
}

#[test]
fn another_header_is_refused_and_the_file_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other.csv");
    fs::write(&other, "name,size\nx,1\n").unwrap();
    assert_refused(&other, "not a tcptop CSV log");
    assert_eq!(fs::read_to_string(&other).unwrap(), "name,size\nx,1\n");
}

/// A read-only file system refuses even root: a tmpfs mounted read-only for the test.
#[test]
fn a_read_only_directory_is_refused_and_nothing_changes() {
    if !bpf_allowed() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mount = |options: &str| {
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tcptop-test", dir.path().to_str().unwrap()])
            .status()
            .unwrap();
        assert!(status.success(), "mount -o {options}");
    };
    mount("size=1m");
    let _unmount = Unmount(dir.path());
    let existing = dir.path().join("old.csv");
    fs::write(&existing, "old\n").unwrap();
    mount("remount,ro");
    assert_refused(&dir.path().join("new.csv"), "Read-only file system");
    assert_refused(&existing, "Read-only file system");
    assert_eq!(fs::read_to_string(&existing).unwrap(), "old\n");
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
}

struct Unmount<'a>(&'a Path);

impl Drop for Unmount<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0).status();
    }
}

/// The reproduction: in a UTS namespace of its own, a log to the hostname's sysctl
/// would have made the CSV header the namespace's hostname.
#[test]
fn procfs_is_refused_and_the_hostname_stays() {
    if !bpf_allowed() {
        return;
    }
    let script =
        format!("{} -b --log /proc/sys/kernel/hostname 0.01 1; echo; hostname", env!("CARGO_BIN_EXE_tcptop"));
    let out = Command::new("unshare").args(["-u", "sh", "-c", &script]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.trim_end(),
        "tcptop: cannot log to /proc/sys/kernel/hostname: it is on procfs, a kernel interface rather than a file system"
    );
    let hostname = gethostname::gethostname();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), hostname.to_string_lossy());
}

/// A disk that fills up mid-run: the one-line error names the log, and the log keeps every
/// interval before, each whole.
#[test]
fn a_full_disk_names_the_log_and_leaves_only_whole_rows() {
    if !bpf_allowed() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tcptop-test", dir.path().to_str().unwrap()])
        .status()
        .unwrap();
    assert!(status.success(), "mount");
    let _unmount = Unmount(dir.path());
    // All but two pages taken: a few intervals fit.
    fs::write(dir.path().join("filler"), vec![0; 56 << 10]).unwrap();
    let log = dir.path().join("full.csv");
    let Some(mut child) = start(&["--log", log.to_str().unwrap(), "-b", "0.05"]) else {
        return;
    };
    let flood = Flood::start();
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    let status = child.wait().unwrap();
    drop(flood);
    assert_eq!(status.code(), Some(1), "{stderr}");
    let line = stderr.lines().find(|line| line.starts_with("tcptop: ")).unwrap_or_default();
    let expected = format!("tcptop: writing to {}: No space left on device (os error 28)", log.display());
    assert!(line.starts_with(&expected), "{stderr}");
    let rows = csv_rows(&fs::read_to_string(&log).unwrap());
    assert!(!rows.is_empty(), "intervals were logged before the disk was full");
}
