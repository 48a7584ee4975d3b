//! The whole app without root: flags -> the collection thread (a scripted collector on a
//! fake clock) -> the event loop -> sinks on stdout, and the screen on a TestBackend.

use std::future::Future;
use std::sync::{mpsc as std_mpsc, Arc};
use std::time::Duration;

use clap::Parser;

use super::*;
use crate::model::conn::test_conn;
use crate::model::{ConnEvent, EventKind, Overflow, Sample, TcpState};
use crate::testing::{os, FakeClock, Io, Scripted};

fn args(flags: &[&str]) -> Args {
    Args::try_parse_from(std::iter::once("tcptop").chain(flags.iter().copied())).unwrap()
}

fn curl(rx: u64) -> crate::model::Conn {
    test_conn(1, 4242, "curl", ("127.0.0.1:50000", "127.0.0.1:8080"), (rx, 7))
}

fn samples(totals: &[u64]) -> Vec<Sample> {
    totals.iter().map(|&rx| Sample { conns: vec![curl(rx)], ..Sample::default() }).collect()
}

/// Runs the app on the collector `script` makes, next to `user`, which plays the user and
/// hands the app's I/O back; on one thread, as tcptop runs. Returns what the app returned and
/// its I/O. The script's samples are the intervals' reads: the first read, before the first
/// interval, finds nothing.
fn run_app<F: Future<Output = Io>>(
    flags: &[&str],
    terminal: bool,
    script: impl FnOnce(Arc<FakeClock>) -> Scripted,
    user: impl FnOnce(Io) -> F,
) -> (Result<()>, Io) {
    let clock = Arc::new(FakeClock::default());
    let mut collector = script(Arc::clone(&clock));
    collector.samples.push_front(Sample::nothing_changed());
    let read_cmdline = |pid| (pid == 4242).then(|| "curl -O http://127.0.0.1:8080/big".to_string());
    let (os, io) = os(collector, clock, terminal, read_cmdline);
    let args = args(flags);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async { tokio::join!(run(&args, os), user(io)) })
}

fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines().map(|line| serde_json::from_str(line).unwrap()).collect()
}

#[test]
fn batch_mode_prints_count_intervals_timed_by_the_collection_clock() {
    let (result, mut io) = run_app(
        &["-b", "2", "2"],
        false,
        |clock| Scripted::new(clock, samples(&[100, 350])),
        |io| async { io },
    );
    result.unwrap();
    let expected = "\
1970-01-01T00:00:02.000Z probe=scripted interval=2.000s connections=1 rx=50B/s tx=4B/s
PID  COMM LADDR:LPORT     RADDR:RPORT    STATE       RX_BYTES TX_BYTES RTT_US RETRANS
4242 curl 127.0.0.1:50000 127.0.0.1:8080 ESTABLISHED      100        7      -       -

1970-01-01T00:00:04.000Z probe=scripted interval=2.000s connections=1 rx=125B/s tx=0B/s
PID  COMM LADDR:LPORT     RADDR:RPORT    STATE       RX_BYTES TX_BYTES RTT_US RETRANS
4242 curl 127.0.0.1:50000 127.0.0.1:8080 ESTABLISHED      250        0      -       -

";
    assert_eq!(io.written(), expected);
}

#[test]
fn a_stop_signal_records_the_interval_it_cut_short_then_ends_cleanly() {
    let (result, mut io) = run_app(
        &["--format", "json", "-a", "1"],
        false,
        |clock| Scripted::new(clock, samples(&[100])),
        |mut io| async {
            let first = io.stdout.recv().await.unwrap();
            io.stop_signals.send(()).unwrap();
            io.unread(first);
            io
        },
    );
    result.unwrap();
    let lines = json_lines(&io.written());
    let summary: Vec<(&serde_json::Value, &serde_json::Value)> =
        lines.iter().map(|line| (&line["timestamp"], &line["interval_ms"])).collect();
    let at_1s = serde_json::json!("1970-01-01T00:00:01.000Z");
    assert_eq!(summary, [(&at_1s, &1000.into()), (&at_1s, &0.into())]);
}

#[test]
fn events_mode_prints_events_as_they_arrive_and_overflow_from_the_model() {
    let opened = ConnEvent {
        at: Duration::from_millis(100),
        kind: EventKind::State { old: TcpState::SynRecv, new: TcpState::Established },
        conn: curl(0),
    };
    let closed = ConnEvent { at: Duration::from_millis(900), kind: EventKind::Closed, conn: curl(100) };
    let overflow = Overflow { lost_events: 2, ..Overflow::default() };
    let script = |clock| {
        let mut collector =
            Scripted::new(clock, [Sample { events: vec![closed], overflow, ..Sample::default() }]);
        collector.events.push_back(opened);
        collector
    };
    let (result, mut io) = run_app(&["--events"], false, script, |mut io| async {
        let mut chunks = Vec::new();
        for _ in 0..3 {
            chunks.push(io.stdout.recv().await.unwrap());
        }
        io.stop_signals.send(()).unwrap();
        io.unread(chunks.concat());
        io
    });
    result.unwrap();
    let lines = json_lines(&io.written());
    let events: Vec<&str> = lines.iter().map(|line| line["event"].as_str().unwrap()).collect();
    assert_eq!(events, ["opened", "closed", "overflow"]);
    assert_eq!(
        (&lines[0]["timestamp"], &lines[1]["rx_total"]),
        (&"1970-01-01T00:00:00.100Z".into(), &100.into())
    );
    assert_eq!(lines[2]["lost_events"], 2);
}

#[test]
fn a_collector_that_cannot_start_ends_the_app_with_its_error_and_no_output() {
    let clock = Arc::new(FakeClock::default());
    let (mut os, mut io) = os(Scripted::new(Arc::clone(&clock), []), clock, false, |_| None);
    os.open_collector = Box::new(|| anyhow::bail!("needs root, or the CAP_BPF and CAP_PERFMON capabilities"));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let error = runtime.block_on(run(&args(&["-b"]), os)).unwrap_err();
    assert_eq!(error.to_string(), "needs root, or the CAP_BPF and CAP_PERFMON capabilities");
    assert_eq!(io.written(), "");
}

/// The collector's second interval's read blocks, as a 50,000-row table read with its /proc
/// scans takes long: the screen still takes a key and draws it in the next frame.
#[test]
fn the_screen_answers_a_key_within_one_frame_while_a_slow_collection_runs() {
    let (go, gate) = std_mpsc::channel();
    let (collecting, mut collections) = tokio::sync::mpsc::unbounded_channel();
    let script = |clock| {
        let mut collector = Scripted::new(clock, samples(&[100, 350, 600]));
        collector.gate = Some(gate);
        collector.collecting = Some(collecting);
        collector
    };
    let (result, _io) = run_app(&[], true, script, |mut io| async move {
        // The first read, at the start, and the first interval's.
        go.send(()).unwrap();
        go.send(()).unwrap();
        let first = io.frame_with("curl").await;
        // Gathered on the collection side, shown in the detail pane of the selected row.
        assert!(first.contains("cmd: curl -O http://127.0.0.1:8080/big"), "{first}");
        assert_eq!(collections.recv().await, Some(Duration::ZERO));
        assert_eq!(collections.recv().await, Some(Duration::from_secs(1)));
        assert_eq!(collections.recv().await, Some(Duration::from_secs(2)));
        // The second read is under way and held.
        io.key('g');
        let grouped = io.frame_with("CONNS").await;
        assert!(grouped.contains("1 connection"), "still the first interval: {grouped}");
        io.key('q');
        drop(go);
        io
    });
    result.unwrap();
}

#[test]
fn fold_loopback_starts_the_screen_with_both_ends_of_a_local_connection_in_one_row() {
    let both_ends = |rx| {
        let server = test_conn(2, 4343, "server", ("127.0.0.1:8080", "127.0.0.1:50000"), (7, rx));
        Sample { conns: vec![curl(rx), server], ..Sample::default() }
    };
    let script = |clock| Scripted::new(clock, vec![both_ends(100), both_ends(350)]);
    let (result, _io) = run_app(&["--fold-loopback"], true, script, |mut io| async move {
        let frame = io.frame_with("curl↔server").await;
        assert!(frame.contains("4242↔4343") && frame.contains("local pairs folded"), "{frame}");
        io.key('q');
        io
    });
    result.unwrap();
}

#[test]
fn a_second_stop_leaves_without_waiting_for_a_slow_last_interval() {
    let (go, gate) = std_mpsc::channel();
    let script = |clock| {
        let mut collector = Scripted::new(clock, samples(&[100]));
        collector.gate = Some(gate);
        collector
    };
    let first_go = go.clone();
    let (result, mut io) = run_app(&["-b", "1"], false, script, |mut io| async move {
        // The first read, at the start, and the first interval's.
        first_go.send(()).unwrap();
        first_go.send(()).unwrap();
        let first = io.stdout.recv().await.unwrap();
        io.unread(first);
        // The last interval's read never ends: a second stop leaves anyway.
        io.stop_signals.send(()).unwrap();
        io.stop_signals.send(()).unwrap();
        io
    });
    result.unwrap();
    assert_eq!(io.written().matches(" probe=scripted ").count(), 1);
    // The read ends only now, and the thread with it.
    drop(go);
}

mod prometheus;

#[test]
fn why_the_collector_fell_back_shows_in_the_status_line() {
    let clock = Arc::new(FakeClock::default());
    let collector = Scripted::new(Arc::clone(&clock), samples(&[100, 200]));
    let (mut os, io) = os(collector, clock, true, |_| None);
    // As platform::open_collector reports a fallback, on the collection thread.
    let notice = Arc::clone(&os.collector_notice);
    let open = std::mem::replace(&mut os.open_collector, Box::new(|| unreachable!()));
    os.open_collector = Box::new(move || {
        *notice.lock().unwrap() = Some("eBPF cannot run here (test)".into());
        open()
    });
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let user = |mut io: Io| async move {
        let frame = io.frame_with("curl").await;
        let status = frame.lines().last().unwrap();
        assert!(status.contains(" scripted: eBPF cannot run here (test) "), "{frame}");
        io.key('q');
        io
    };
    let args = args(&[]);
    let (result, _io) = runtime.block_on(async { tokio::join!(run(&args, os), user(io)) });
    result.unwrap();
}
