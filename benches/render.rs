//! How long the live screen takes to build and draw one frame of 10,000 connections: filter,
//! sort, the visible rows, the detail pane, on a 200x60 TestBackend; with addresses as
//! numbers, then with host and service names (a fake resolver that answers every address at
//! once, all answers in before timing). Prints the median of each. Then the steps after the
//! collector at issue 20's scales, as batch mode runs them: the model's first update of
//! 100,000 and 1,000,000 connections and their whole batch table (`-a`), then intervals of
//! 100,000 connections of which 1,000 (and then all) changed, each a partial sample as the
//! eBPF collector reads them: the update and the batch table of the active rows. These steps
//! are timed by the thread's CPU clock, which a busy machine's other work does not stretch.
//! Run: cargo bench --bench render

use std::net::IpAddr;
use std::time::{Duration, Instant};

use ratatui::backend::TestBackend;
use std::time::UNIX_EPOCH;
use tcptop::model::{Conn, Proto, Sample, TcpState};
use tcptop::model::{Model, Query, Retention};
use tcptop::resolve::{Lookup, Names, Services};
use tcptop::view::batch::write_interval;
use tcptop::view::tui::screen::Header;
use tcptop::view::tui::state::TuiState;
use tcptop::view::tui::Tui;

const CONNECTIONS: u64 = 10_000;
const RUNS: usize = 101;
/// How long no new answer may come before all the frame's names are taken to be in.
const ANSWERS_SETTLED: Duration = Duration::from_millis(500);

fn sample(round: u64) -> Sample {
    Sample { conns: (0..CONNECTIONS).map(|id| conn(id, round)).collect(), ..Sample::default() }
}

/// Connection `id` after `round` rounds of its traffic.
fn conn(id: u64, round: u64) -> Conn {
    Conn {
        id,
        pid: Some(1000 + (id % 300) as u32),
        comm: format!("worker-{}", id % 300).into(),
        proto: Proto::Tcp,
        local: format!("10.0.{}.{}:{}", id / 250 % 250, id % 250, 20_000 + id % 40_000).parse().unwrap(),
        remote: format!("192.0.2.{}:443", id % 200).parse().unwrap(),
        state: Some(TcpState::Established),
        rx_bytes: round * (id * 37 % 100_000),
        tx_bytes: round * (id * 11 % 50_000),
        netns: None,
        cgroup: None,
        health: None,
    }
}

/// Names every address, as long as a data centre's names tend to be.
struct Fake;

impl Lookup for Fake {
    fn reverse(&mut self, ip: IpAddr) -> Option<String> {
        Some(format!("host-{}.rack-7.dc-east.example.net", ip.to_string().replace('.', "-")))
    }
}

fn tui() -> Tui<TestBackend> {
    let header = Header {
        host: "bench".into(),
        backend: "fentry".into(),
        interval: Duration::from_secs(1),
        filters: Vec::new(),
    };
    Tui::new(TestBackend::new(200, 60), header, TuiState::default()).unwrap()
}

/// Median, least and most time of a frame over `RUNS` frames.
fn frames(tui: &mut Tui<TestBackend>, model: &Model) -> [Duration; 3] {
    let mut times: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            tui.draw(model).unwrap();
            start.elapsed()
        })
        .collect();
    times.sort();
    [times[RUNS / 2], times[0], times[RUNS - 1]]
}

fn report(what: &str, [median, min, max]: [Duration; 3]) {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "build and draw one frame of {CONNECTIONS} connections (200x60), {what}: median {:.2} ms, min {:.2} ms, max {:.2} ms over {RUNS} runs",
        ms(median),
        ms(min),
        ms(max),
    );
}

/// Batch mode's retention (app.rs): no history, closed rows gone after their interval.
const BATCH: Retention =
    Retention { closed_intervals: 0, history: 1, udp_idle: tcptop::model::DEFAULT_UDP_IDLE };
const INTERVALS: u64 = 21;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The CPU time `work` took on this thread: what it costs, whatever else the machine runs.
fn timed(work: impl FnOnce()) -> Duration {
    let start = thread_cpu_time();
    work();
    thread_cpu_time() - start
}

fn thread_cpu_time() -> Duration {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec it is given.
    let read = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    assert_eq!(read, 0, "the thread's CPU clock");
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

fn batch_table(model: &Model, all: bool) -> Duration {
    let query = Query { all, ..Query::default() };
    timed(|| write_interval(&mut std::io::sink(), model, &query, "bench", UNIX_EPOCH).unwrap())
}

/// A first update of `connections` and the table of them all.
fn first_table(connections: u64) {
    let mut model = Model::new(Duration::ZERO, BATCH);
    let first = Sample { conns: (0..connections).map(|id| conn(id, 0)).collect(), ..Sample::default() };
    let update = timed(|| model.update(first, Duration::from_secs(1)));
    let table = batch_table(&model, true);
    println!(
        "first update of {connections} connections: {:.1} ms, then their batch table (-a): {:.1} ms",
        ms(update),
        ms(table)
    );
}

/// Median update and batch table of intervals where `changing` of `SCALE` connections changed.
fn intervals(changing: u64) {
    const SCALE: u64 = 100_000;
    let mut model = Model::new(Duration::ZERO, BATCH);
    model.update(
        Sample { conns: (0..SCALE).map(|id| conn(id, 0)).collect(), ..Sample::default() },
        Duration::from_secs(1),
    );
    let (mut updates, mut tables) = (Vec::new(), Vec::new());
    for round in 1..=INTERVALS {
        // A different set each interval, as the benchmark's load moves them, listed out of
        // the order the table holds them, as the collector's ring of changes lists them.
        let spread = |i: u64| (round * changing + i * 7_919) % SCALE;
        let changed: Vec<Conn> = (0..changing).map(|i| conn(spread(i), round)).collect();
        let sample = Sample { conns: changed, unchanged: Some(SCALE - changing), ..Sample::default() };
        updates.push(timed(|| model.update(sample, Duration::from_secs(1 + round))));
        tables.push(batch_table(&model, false));
    }
    updates.sort();
    tables.sort();
    let (update, table) = (updates[updates.len() / 2], tables[tables.len() / 2]);
    println!(
        "{SCALE} connections, {changing} changed per interval: update {:.2} ms ({:.0} ns per changed), batch table {:.2} ms, median of {INTERVALS}",
        ms(update),
        update.as_nanos() as f64 / changing as f64,
        ms(table)
    );
}

fn main() {
    let mut model = Model::new(Duration::ZERO, Retention::default());
    for round in 1..=3 {
        model.update(sample(round), Duration::from_secs(round));
    }
    let mut numeric = tui();
    numeric.interval(&model);
    report("addresses as numbers", frames(&mut numeric, &model));

    let (names, mut answers) = Names::start(Fake).unwrap();
    let services = Services::parse("https 443/tcp\n");
    let mut named = tui().with_names(names, services);
    named.interval(&model);
    // Frames ask for the names they show; the resolver answers one at a time.
    let (mut last_answer, mut named_addresses) = (Instant::now(), 0);
    while last_answer.elapsed() < ANSWERS_SETTLED {
        named.draw(&model).unwrap();
        while let Ok(answer) = answers.try_recv() {
            named.resolved(answer);
            (last_answer, named_addresses) = (Instant::now(), named_addresses + 1);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    report(&format!("with host and service names ({named_addresses} hosts)"), frames(&mut named, &model));

    first_table(100_000);
    first_table(1_000_000);
    intervals(1_000);
    intervals(100_000);
}
