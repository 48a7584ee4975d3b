//! Runs every part of the benchmark and prints its tables.

use std::collections::BTreeSet;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use clap::Parser;
use tcptop::collector::{Collector, Filters};
use tcptop::ebpf::{EbpfCollector, Strategy};
use tcptop::model::{Model, Query, Retention};
use tcptop::view::batch::write_interval;

use crate::floor::{self, Floor, Yardstick};
use crate::load::{self, Holders, Totals, Workload, MESSAGE};
use crate::measure;

/// Time for the traffic to reach a steady rate before a run is measured.
const WARM_UP: Duration = Duration::from_millis(500);
/// How long tcptop may take to load its probes and print its first interval.
const FIRST_LINE_TIMEOUT: Duration = Duration::from_secs(20);

/// Measures tcptop's overhead on loopback TCP traffic and its cost with many connections.
#[derive(Debug, Parser)]
pub struct Args {
    /// Seconds each measured run lasts.
    #[arg(long, default_value_t = 4.0)]
    secs: f64,

    /// Interleaved rounds; each runs every configuration once.
    #[arg(long, default_value_t = 6)]
    rounds: usize,

    /// Connections of the request/response workload.
    #[arg(long, default_value_t = 8)]
    conns: usize,

    /// Open connections held for the scale table, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1_000, 10_000, 50_000])]
    scale: Vec<usize>,

    /// Intervals of one second measured at each scale.
    #[arg(long, default_value_t = 5)]
    intervals: u32,

    /// A smoke run of a few seconds (CI): one short round, 1,000 connections.
    #[arg(long)]
    quick: bool,

    /// The tcptop binary [default: the release binary cargo built].
    #[arg(long)]
    tcptop: Option<PathBuf>,

    /// Internal: hold this many sockets until stdin closes (see load::Holders).
    #[arg(long, hide = true)]
    hold: Option<usize>,

    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

impl Args {
    fn quickened(mut self) -> Args {
        if self.quick {
            (self.secs, self.rounds, self.scale, self.intervals) = (0.5, 1, vec![1_000], 1);
        }
        self
    }
}

/// What watches the traffic during a run.
#[derive(Clone, Debug)]
enum Watcher {
    Nothing,
    Floor(Yardstick),
    /// tcptop in batch mode with these extra flags.
    Tcptop(Vec<&'static str>),
}

impl Watcher {
    /// Whether it attaches BPF programs to the kernel's hooks (the capture and sock_diag
    /// backends do not).
    fn hooks_kernel(&self) -> bool {
        match self {
            Watcher::Nothing => false,
            Watcher::Floor(_) => true,
            Watcher::Tcptop(flags) => !flags.contains(&"capture") && !flags.contains(&"sockdiag"),
        }
    }

    fn label(&self) -> String {
        match self {
            Watcher::Nothing => "no tcptop".into(),
            Watcher::Floor(yardstick) => yardstick.label().into(),
            Watcher::Tcptop(flags) => format!("`tcptop -b {}`", flags.join(" ")),
        }
    }
}

/// A watcher at work; stopping it detaches it.
enum Watching {
    Nothing,
    Floor(Floor),
    Tcptop(Tcptop),
}

/// Everything a run needs besides its configuration.
struct Bench {
    tcptop: PathBuf,
    floor_object: PathBuf,
    /// Tracing BPF programs seen during runs that were neither tcptop's nor the floor's.
    others: BTreeSet<String>,
}

impl Bench {
    fn start(&self, watcher: &Watcher) -> Result<Watching> {
        Ok(match watcher {
            Watcher::Nothing => Watching::Nothing,
            Watcher::Floor(yardstick) => Watching::Floor(Floor::attach(&self.floor_object, *yardstick)?),
            Watcher::Tcptop(flags) => Watching::Tcptop(Tcptop::start(&self.tcptop, flags, "1")?),
        })
    }
}

/// A running `tcptop -b`, its output discarded after the first line.
struct Tcptop {
    child: Child,
    pid: u32,
    /// The backend its first line names (`probe=...`).
    probe: String,
}

impl Tcptop {
    /// Starts tcptop and waits for its first interval, so the probes are attached.
    fn start(binary: &Path, flags: &[&str], interval: &str) -> Result<Tcptop> {
        let mut child = Command::new(binary)
            .arg("-b")
            .args(flags)
            .arg(interval)
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let (first_line, printed) = mpsc::channel();
        thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = first_line.send(line);
            }
            lines.for_each(drop);
        });
        let Ok(line) = printed.recv_timeout(FIRST_LINE_TIMEOUT) else {
            let _ = child.kill();
            bail!("tcptop -b {} printed nothing ({})", flags.join(" "), child.wait()?);
        };
        let probe =
            line.split_whitespace().find_map(|word| word.strip_prefix("probe=")).unwrap_or("?").into();
        let pid = child.id();
        Ok(Tcptop { child, pid, probe })
    }

    /// Ends it as Ctrl-C would.
    fn stop(mut self) -> Result<()> {
        // SAFETY: kill only sends a signal to our own child, which has not been reaped yet.
        unsafe { libc::kill(self.pid as i32, libc::SIGTERM) };
        self.child.wait()?;
        Ok(())
    }
}

impl Watching {
    fn tcptop(&self) -> Option<&Tcptop> {
        match self {
            Watching::Tcptop(tcptop) => Some(tcptop),
            _ => None,
        }
    }

    fn stop(self) -> Result<()> {
        match self {
            Watching::Tcptop(tcptop) => tcptop.stop(),
            Watching::Floor(floor) => {
                drop(floor); // detaches the programs
                Ok(())
            }
            Watching::Nothing => Ok(()),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Traffic {
    RequestResponse,
    Bulk,
}

/// One measured run.
#[derive(Clone, Copy, Debug)]
struct Run {
    secs: f64,
    done: Totals,
    machine_busy: Duration,
    tcptop_cpu: Option<Duration>,
    tcptop_rss: Option<u64>,
    /// Run time of the BPF programs, when the kernel timed them.
    bpf_time: Option<Duration>,
}

impl Run {
    fn units_per_sec(&self) -> f64 {
        self.done.units as f64 / self.secs
    }

    fn calls_per_sec(&self) -> f64 {
        self.done.calls as f64 / self.secs
    }

    /// CPU the whole machine spent per send or receive call.
    fn busy_ns_per_call(&self) -> f64 {
        self.machine_busy.as_nanos() as f64 / self.done.calls.max(1) as f64
    }

    /// tcptop's CPU as a share of one core.
    fn tcptop_core_share(&self) -> Option<f64> {
        self.tcptop_cpu.map(|cpu| cpu.as_secs_f64() / self.secs)
    }
}

impl Bench {
    /// Remembers the tracing programs loaded now that are neither ours nor `tcptop`'s.
    fn note_others(&mut self, tcptop: Option<u32>) -> Result<()> {
        let ours: Vec<u32> = [std::process::id()].into_iter().chain(tcptop).collect();
        self.others.extend(measure::foreign_tracing_programs(&ours)?);
        Ok(())
    }

    /// One run of `watcher` on `traffic`; with `timed`, the kernel times the BPF programs.
    fn measure(
        &mut self,
        watcher: &Watcher,
        traffic: Traffic,
        conns: usize,
        secs: f64,
        timed: bool,
    ) -> Result<Run> {
        let watching = self.start(watcher)?;
        let workload = match traffic {
            Traffic::RequestResponse => Workload::request_response(conns)?,
            Traffic::Bulk => Workload::bulk(conns)?,
        };
        thread::sleep(WARM_UP);
        let stats = timed.then(measure::BpfStats::enable).transpose().context("enabling BPF statistics")?;
        let tcptop_cpu = || watching.tcptop().map(|t| measure::process_cpu(t.pid)).transpose();
        let (cpu_before, busy_before, done_before, bpf_before, start) = (
            tcptop_cpu()?,
            measure::machine_busy()?,
            workload.totals(),
            measure::bpf_run_time(),
            Instant::now(),
        );
        let tcptop_pid = watching.tcptop().map(|t| t.pid);
        self.note_others(tcptop_pid)?;
        thread::sleep(Duration::from_secs_f64(secs));
        let (done_after, elapsed, busy_after, cpu_after, bpf_after) = (
            workload.totals(),
            start.elapsed(),
            measure::machine_busy()?,
            tcptop_cpu()?,
            measure::bpf_run_time(),
        );
        drop(stats);
        let tcptop_rss = watching.tcptop().map(|t| measure::peak_rss(t.pid)).transpose()?;
        workload.stop()?;
        watching.stop()?;
        Ok(Run {
            secs: elapsed.as_secs_f64(),
            done: done_after - done_before,
            machine_busy: busy_after - busy_before,
            tcptop_cpu: cpu_after.zip(cpu_before).map(|(after, before)| after - before),
            tcptop_rss,
            bpf_time: timed.then(|| bpf_after.saturating_sub(bpf_before)),
        })
    }

    /// Runs every watcher once per round, interleaved; `runs[w][r]` is watcher w in round r.
    fn interleaved(
        &mut self,
        watchers: &[Watcher],
        traffic: Traffic,
        args: &Args,
        secs: f64,
    ) -> Result<Vec<Vec<Run>>> {
        let mut runs = vec![Vec::new(); watchers.len()];
        for round in 1..=args.rounds {
            for (watcher, runs) in watchers.iter().zip(&mut runs) {
                eprintln!("overhead: {traffic:?} round {round}/{}: {}", args.rounds, watcher.label());
                runs.push(self.measure(watcher, traffic, args.conns, secs, false)?);
            }
        }
        Ok(runs)
    }

    /// The BPF run time per event of each watcher that hooks the kernel (`None` for the
    /// others), from one request/response run each with the kernel timing the programs.
    fn bpf_time_per_event(&mut self, watchers: &[Watcher], args: &Args) -> Result<Vec<Option<f64>>> {
        let mut times = Vec::new();
        for watcher in watchers {
            if !watcher.hooks_kernel() {
                times.push(None);
                continue;
            }
            eprintln!("overhead: RequestResponse timed by the kernel: {}", watcher.label());
            let run = self.measure(watcher, Traffic::RequestResponse, args.conns, args.secs, true)?;
            times.push(run.bpf_time.map(|time| time.as_nanos() as f64 / run.done.calls.max(1) as f64));
        }
        Ok(times)
    }
}

/// What one connection count cost.
struct Scale {
    sockets: usize,
    tracked: usize,
    /// tcptop's CPU per one-second interval.
    cpu_per_interval: Duration,
    rss: u64,
    /// The same with `--backend sockdiag`, where it runs.
    sockdiag_cpu_per_interval: Option<Duration>,
    /// The same work timed inside this process: collector, model, batch table.
    collect: Duration,
    update: Duration,
    table: Duration,
}

impl Bench {
    fn scale(&mut self, sockets: usize, intervals: u32) -> Result<Scale> {
        eprintln!("overhead: scale: {sockets} sockets");
        let held = Holders::open(sockets).with_context(|| format!("opening {sockets} sockets"))?;
        let (cpu_per_interval, rss) = self.cpu_per_interval(&[], intervals)?;
        let sockdiag_cpu_per_interval =
            self.cpu_per_interval(&["--backend", "sockdiag"], intervals).ok().map(|(cpu, _)| cpu);

        let mut collector = EbpfCollector::open(&Strategy::AUTO_ORDER, &Filters::default(), &mut |_| {})?;
        let mut model =
            Model::new(Duration::ZERO, Retention { closed_intervals: 0, history: 1, ..Retention::default() });
        let (mut collect, mut update, mut table, mut tracked) = (Vec::new(), Vec::new(), Vec::new(), 0);
        let start = Instant::now();
        for _ in 0..=intervals {
            thread::sleep(Duration::from_secs(1));
            let time = Instant::now();
            let sample = collector.collect()?;
            collect.push(time.elapsed());
            tracked = sample.conns.len();
            let time = Instant::now();
            model.update(sample, start.elapsed());
            update.push(time.elapsed());
            let time = Instant::now();
            write_interval(
                &mut io::sink(),
                &model,
                &Query::default(),
                collector.backend(),
                SystemTime::now(),
            )?;
            table.push(time.elapsed());
        }
        drop(collector);
        held.close()?;
        // The first reading took in every socket: not a steady interval.
        let steady = |mut times: Vec<Duration>| median(times.drain(1..).map(|t| t.as_secs_f64()).collect());
        Ok(Scale {
            sockets,
            tracked,
            cpu_per_interval,
            rss,
            sockdiag_cpu_per_interval,
            collect: Duration::from_secs_f64(steady(collect)),
            update: Duration::from_secs_f64(steady(update)),
            table: Duration::from_secs_f64(steady(table)),
        })
    }

    /// `tcptop -b 1` with `flags`: its CPU per interval over `intervals` whole intervals, after
    /// one to take in every socket, and its peak RSS.
    fn cpu_per_interval(&mut self, flags: &[&str], intervals: u32) -> Result<(Duration, u64)> {
        let tcptop = Tcptop::start(&self.tcptop, flags, "1")?;
        thread::sleep(Duration::from_secs(1));
        self.note_others(Some(tcptop.pid))?;
        let (cpu_before, start) = (measure::process_cpu(tcptop.pid)?, Instant::now());
        thread::sleep(Duration::from_secs(intervals.into()));
        let cpu = measure::process_cpu(tcptop.pid)? - cpu_before;
        let rss = measure::peak_rss(tcptop.pid)?;
        tcptop.stop()?;
        Ok((cpu.mul_f64(1.0 / start.elapsed().as_secs_f64()), rss))
    }

    /// Time from exec to tcptop's first batch line, `repeat` times.
    fn startup(&self, flags: &[&'static str], repeat: usize) -> Result<Startup> {
        let mut startup = Startup { times: Vec::new(), probe: String::new() };
        for _ in 0..repeat {
            let start = Instant::now();
            let tcptop = Tcptop::start(&self.tcptop, flags, "0.01")?;
            startup.times.push(start.elapsed());
            startup.probe = tcptop.probe.clone();
            tcptop.stop()?;
        }
        Ok(startup)
    }
}

struct Startup {
    times: Vec<Duration>,
    /// The backend tcptop chose.
    probe: String,
}

pub fn run(args: Args) -> Result<()> {
    if let Some(sockets) = args.hold {
        return load::hold(sockets).context("holding sockets");
    }
    let args = args.quickened();
    let mut bench = Bench {
        tcptop: args.tcptop.clone().unwrap_or_else(|| env!("CARGO_BIN_EXE_tcptop").into()),
        floor_object: floor::compile()?,
        others: BTreeSet::new(),
    };
    libbpf_rs::set_print(None);
    let mut notes = Vec::new();
    let ebpf = vec!["--probe", "auto"];
    let capture = vec!["--backend", "capture"];
    let sockdiag = vec!["--backend", "sockdiag"];
    let repeat = if args.quick { 1 } else { 5 };
    let mut startups = vec![("eBPF", bench.startup(&ebpf, repeat)?)];
    notes.push(format!("`--probe auto` chose the {} strategy here.", startups[0].1.probe));
    match capture_unavailable(&bench, &capture) {
        None => startups.push(("capture", bench.startup(&capture, repeat)?)),
        Some(why) => notes.push(format!("The capture backend was not measured: {why}.")),
    }
    startups.push(("sock_diag", bench.startup(&sockdiag, repeat)?));

    let mut watchers = vec![Watcher::Nothing];
    for yardstick in [
        Yardstick::EmptyFentry,
        Yardstick::EmptyTracepoint,
        Yardstick::HelperTracepoint,
        Yardstick::StorageTracepoint,
    ] {
        match Floor::attach(&bench.floor_object, yardstick) {
            Ok(_) => watchers.push(Watcher::Floor(yardstick)),
            Err(e) => notes.push(format!("Not measured: {}: {e:#}.", yardstick.label())),
        }
    }
    watchers.push(Watcher::Tcptop(ebpf));
    if startups.iter().any(|(backend, _)| *backend == "capture") {
        watchers.push(Watcher::Tcptop(capture));
    }
    watchers.push(Watcher::Tcptop(sockdiag));

    let request_response = bench.interleaved(&watchers, Traffic::RequestResponse, &args, args.secs)?;
    let bpf_times = bench.bpf_time_per_event(&watchers, &args)?;
    let bulk = bench.interleaved(&watchers, Traffic::Bulk, &args, args.secs / 2.0)?;
    let scales = args.scale.iter().map(|&n| bench.scale(n, args.intervals)).collect::<Result<Vec<_>>>()?;
    if measure::bpf_stats_enabled() {
        notes.push(
            "**Disturbed**: kernel.bpf_stats_enabled is on, so the kernel timed every BPF program \
             run: `sysctl kernel.bpf_stats_enabled=0` and re-run."
                .into(),
        );
    }
    if !bench.others.is_empty() {
        let names: Vec<&str> = bench.others.iter().map(String::as_str).collect();
        notes.push(format!(
            "**Disturbed**: other tracing BPF programs were loaded during some runs ({}): other tools \
             or tests on this machine. Re-run on a quiet machine.",
            names.join(", ")
        ));
    }

    print_header(&args, &notes);
    print_request_response(&watchers, &request_response, &bpf_times, &args);
    print_bulk(&watchers, &bulk, &args);
    print_scale(&scales, args.intervals);
    print_startup(&startups);
    print_targets(&watchers, &request_response, &scales, &startups);
    println!(
        "Frame render at 10,000 rows (the live screen): `cargo bench --bench render` (benches/render.rs)."
    );
    Ok(())
}

/// Why the capture backend cannot be measured with this binary, if it cannot.
fn capture_unavailable(bench: &Bench, capture: &[&'static str]) -> Option<String> {
    let help = Command::new(&bench.tcptop).arg("--help").output().map(|o| o.stdout);
    if !help.is_ok_and(|help| String::from_utf8_lossy(&help).contains("--backend")) {
        return Some("this tcptop has no `--backend` flag yet".into());
    }
    bench.startup(capture, 1).err().map(|e| format!("`tcptop -b {}` failed: {e:#}", capture.join(" ")))
}

fn print_header(args: &Args, notes: &[String]) {
    let cores = thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let flags: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    println!(
        "## tcptop overhead: {}, {cores} cores, Linux {}\n",
        humantime::format_rfc3339_seconds(SystemTime::now()),
        kernel.trim()
    );
    let command: Vec<&str> = ["cargo", "bench", "--bench", "overhead"]
        .into_iter()
        .chain((!flags.is_empty()).then_some("--"))
        .chain(flags.iter().map(String::as_str))
        .collect();
    println!("`{}`\n", command.join(" "));
    println!(
        "{} interleaved round(s) of every configuration, {} s per run; medians. Loopback TCP; \
         events are send and receive calls (each one runs tcptop's hooks); \"extra CPU per \
         event\" is the whole machine's busy time per event, minus the same without tcptop in \
         the same round; \"BPF time per event\" is the hooks' run time as the kernel counts \
         it (BPF_ENABLE_STATS, in one more run of its own, as the count costs time too) per \
         event.\n",
        args.rounds, args.secs
    );
    for note in notes {
        println!("{note}");
    }
    println!();
}

fn print_request_response(watchers: &[Watcher], all: &[Vec<Run>], bpf_times: &[Option<f64>], args: &Args) {
    println!("### Request/response: {} connections, {MESSAGE}-byte requests and answers\n", args.conns);
    let rows = watchers
        .iter()
        .zip(all)
        .zip(bpf_times)
        .map(|((watcher, runs), bpf_time)| {
            let round_trips = median(runs.iter().map(Run::units_per_sec).collect());
            vec![
                watcher.label(),
                thousands(round_trips),
                // Every round trip is one send on each end.
                thousands(2.0 * round_trips),
                thousands(median(runs.iter().map(Run::calls_per_sec).collect())),
                ratio_to_baseline(runs, &all[0]),
                extra_cpu_per_event(runs, &all[0]),
                bpf_time.map_or_else(|| "-".into(), |ns| format!("{ns:.0} ns")),
                tcptop_cpu(runs),
                tcptop_rss(runs),
            ]
        })
        .collect::<Vec<_>>();
    table(
        &[
            "run",
            "round trips/s",
            "sendmsg/s",
            "events/s",
            "vs no tcptop",
            "extra CPU per event",
            "BPF time per event",
            "tcptop CPU (one core)",
            "tcptop peak RSS",
        ],
        &rows,
    );
}

fn print_bulk(watchers: &[Watcher], all: &[Vec<Run>], args: &Args) {
    println!(
        "### Bulk transfer: {} connections, 128 KiB writes, {} s per run\n",
        args.conns,
        args.secs / 2.0
    );
    let rows = watchers
        .iter()
        .zip(all)
        .map(|(watcher, runs)| {
            vec![
                watcher.label(),
                format!("{:.0} MiB/s", median(runs.iter().map(Run::units_per_sec).collect()) / MIB),
                thousands(median(runs.iter().map(Run::calls_per_sec).collect())),
                ratio_to_baseline(runs, &all[0]),
                tcptop_cpu(runs),
                tcptop_rss(runs),
            ]
        })
        .collect::<Vec<_>>();
    table(
        &["run", "throughput", "events/s", "vs no tcptop", "tcptop CPU (one core)", "tcptop peak RSS"],
        &rows,
    );
}

fn print_scale(scales: &[Scale], intervals: u32) {
    println!(
        "### Scale: `tcptop -b 1` with many connections, each socket sending and receiving {MESSAGE} bytes \
         once a second\n\nConnections are sockets, both ends of loopback connections, as tcptop lists \
         them. CPU and RSS are the tcptop process's over {intervals} interval(s); collect (the kernel \
         table read and decoded), model update and batch table are the same steps timed in the \
         benchmark's own process.\n"
    );
    let rows = scales
        .iter()
        .map(|s| {
            vec![
                thousands(s.sockets as f64),
                thousands(s.tracked as f64),
                format!("{:.1} ms", millis(s.cpu_per_interval)),
                format!("{:.2}%", 100.0 * s.cpu_per_interval.as_secs_f64()),
                format!("{:.2} µs", s.cpu_per_interval.as_secs_f64() * 1e6 / s.sockets as f64),
                format!("{:.1} MiB", s.rss as f64 / MIB),
                format!("{:.2} ms", millis(s.collect)),
                format!("{:.2} ms", millis(s.update)),
                format!("{:.2} ms", millis(s.table)),
                s.sockdiag_cpu_per_interval.map_or("-".into(), |cpu| format!("{:.1} ms", millis(cpu))),
            ]
        })
        .collect::<Vec<_>>();
    table(
        &[
            "connections",
            "in tcptop's table",
            "tcptop CPU per interval",
            "of one core",
            "per connection",
            "tcptop peak RSS",
            "collect",
            "model update",
            "batch table",
            "sock_diag CPU per interval",
        ],
        &rows,
    );
}

fn print_startup(startups: &[(&str, Startup)]) {
    println!("### Start-up: exec to the first line of `tcptop -b 0.01`\n");
    let rows = startups
        .iter()
        .map(|(backend, startup)| {
            let ms: Vec<f64> = startup.times.iter().map(|&t| millis(t)).collect();
            vec![
                backend.to_string(),
                ms.len().to_string(),
                format!("{:.0} ms", median(ms.clone())),
                format!("{:.0} ms", ms.iter().copied().fold(0.0, f64::max)),
            ]
        })
        .collect::<Vec<_>>();
    table(&["backend", "runs", "median", "slowest"], &rows);
}

/// The targets for this machine, against what was measured.
fn print_targets(watchers: &[Watcher], runs: &[Vec<Run>], scales: &[Scale], startups: &[(&str, Startup)]) {
    println!("### Targets\n");
    let mut rows = Vec::new();
    let mut check = |target: &str, measured: String, met: bool| {
        rows.push(vec![target.to_string(), measured, (if met { "met" } else { "**missed**" }).to_string()]);
    };
    let ebpf =
        watchers.iter().position(|w| w.label() == "`tcptop -b --probe auto`").expect("always measured");
    let ebpf_runs = &runs[ebpf];
    let ratio = median(ratios(ebpf_runs, &runs[0]));
    let sendmsg = 2.0 * median(ebpf_runs.iter().map(Run::units_per_sec).collect());
    // The floor of the same run, to read the ratio against.
    let floors: Vec<String> = watchers
        .iter()
        .zip(runs)
        .filter(|(watcher, _)| {
            matches!(watcher, Watcher::Floor(Yardstick::EmptyFentry | Yardstick::EmptyTracepoint))
        })
        .map(|(watcher, floor_runs)| {
            format!("{} {:.3}", watcher.label(), median(ratios(floor_runs, &runs[0])))
        })
        .collect();
    check(
        "request/response with eBPF >= 97% of no tcptop, at >= 100k sendmsg/s",
        format!("{:.3} at {} sendmsg/s ({})", ratio, thousands(sendmsg), floors.join(", ")),
        ratio >= 0.97 && sendmsg >= 100_000.0,
    );
    let share = median(ebpf_runs.iter().filter_map(Run::tcptop_core_share).collect());
    let events = median(ebpf_runs.iter().map(Run::calls_per_sec).collect());
    check(
        "tcptop CPU <= 1% of a core at >= 100k events/s",
        format!("{:.2}% at {} events/s", 100.0 * share, thousands(events)),
        share <= 0.01 && events >= 100_000.0,
    );
    if let Some(s) = scales.iter().find(|s| s.sockets == 10_000) {
        let share = s.cpu_per_interval.as_secs_f64();
        check(
            "tcptop CPU <= 5% of a core with 10,000 connections, 1 s interval",
            format!("{:.2}%", 100.0 * share),
            share <= 0.05,
        );
        let rss = s.rss as f64 / MIB;
        check("RSS <= 64 MiB with 10,000 connections", format!("{rss:.1} MiB"), rss <= 64.0);
    }
    for (backend, startup) in startups {
        let ms = median(startup.times.iter().map(|&t| millis(t)).collect());
        check(&format!("start-up < 500 ms ({backend})"), format!("{ms:.0} ms"), ms < 500.0);
    }
    table(&["target", "measured", "result"], &rows);
}

const MIB: f64 = 1024.0 * 1024.0;

/// Each round's throughput relative to the run without tcptop in that round.
fn ratios(runs: &[Run], baseline: &[Run]) -> Vec<f64> {
    runs.iter().zip(baseline).map(|(run, none)| run.units_per_sec() / none.units_per_sec()).collect()
}

/// Throughput relative to the run without tcptop in the same round: the median over rounds,
/// and the lowest and highest, which show how much the machine's noise moves it.
fn ratio_to_baseline(runs: &[Run], baseline: &[Run]) -> String {
    let ratios = ratios(runs, baseline);
    if std::ptr::eq(runs, baseline) || ratios.len() < 2 {
        return format!("{:.3}", median(ratios));
    }
    let (low, high) = ratios.iter().fold((f64::MAX, f64::MIN), |(low, high), &r| (low.min(r), high.max(r)));
    format!("{:.3} ({low:.2}-{high:.2})", median(ratios))
}

fn extra_cpu_per_event(runs: &[Run], baseline: &[Run]) -> String {
    if std::ptr::eq(runs, baseline) {
        return "-".into();
    }
    let extra = runs.iter().zip(baseline).map(|(run, none)| run.busy_ns_per_call() - none.busy_ns_per_call());
    format!("{:.0} ns", median(extra.collect()))
}

/// tcptop's CPU time per second of wall time, as a share of one core.
fn tcptop_cpu(runs: &[Run]) -> String {
    let shares: Vec<f64> = runs.iter().filter_map(Run::tcptop_core_share).collect();
    if shares.is_empty() {
        return "-".into();
    }
    format!("{:.2}%", 100.0 * median(shares))
}

fn tcptop_rss(runs: &[Run]) -> String {
    match runs.iter().filter_map(|run| run.tcptop_rss).max() {
        Some(rss) => format!("{:.1} MiB", rss as f64 / MIB),
        None => "-".into(),
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn millis(time: Duration) -> f64 {
    time.as_secs_f64() * 1e3
}

/// 1234567 as "1,234,567".
fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value);
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// A Markdown table: the first column left-aligned, the others right-aligned.
fn table(headings: &[&str], rows: &[Vec<String>]) {
    println!("| {} |", headings.join(" | "));
    let rule: Vec<&str> = (0..headings.len()).map(|i| if i == 0 { "---" } else { "---:" }).collect();
    println!("|{}|", rule.join("|"));
    for row in rows {
        println!("| {} |", row.join(" | "));
    }
    println!();
}
