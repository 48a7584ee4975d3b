//! Runs every part of the benchmark and prints its tables.

use std::collections::BTreeSet;
use std::io::{self, BufRead, BufReader};
use std::net::Ipv4Addr;
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
use crate::measure::{self, ProgramRuns};
use crate::peers::{self, Peer};
use crate::scrape;

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

    /// Only these watchers (tcptop's backends `ebpf`, `capture`, `sockdiag`, `floor` for the
    /// empty programs on the hooks tcptop's auto plan uses, `storage` for the counter in socket
    /// storage, or a peer by its program's name), comma-separated, beside the run without
    /// tcptop: their request/response rows (those that hook the kernel timed by it too) and
    /// bulk rows, nothing else. `--only million`: the million sockets' table alone.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,

    /// A smoke run of a few seconds (CI): one short round, 1,000 connections, no peers.
    #[arg(long)]
    quick: bool,

    /// Also 100,000 connections (1,000 of them active each second, then all) and, when the
    /// memory allows, 1,000,000 sockets held: minutes, and gigabytes of kernel memory.
    #[arg(long)]
    huge: bool,

    /// The tcptop binary [default: the release binary cargo built].
    #[arg(long)]
    tcptop: Option<PathBuf>,

    /// Internal: hold this many sockets until stdin closes (see load::Holders).
    #[arg(long, hide = true)]
    hold: Option<usize>,

    /// Internal: the address a holder listens on.
    #[arg(long, hide = true, default_value_t = Ipv4Addr::LOCALHOST)]
    hold_address: Ipv4Addr,

    /// Internal: the connections a holder keeps busy each second.
    #[arg(long, hide = true, default_value_t = 0)]
    hold_active_pairs: usize,

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

    /// Connection counts of the scale table, each with the sockets active each second (`None`:
    /// all of them).
    fn scale_points(&self) -> Vec<(usize, Option<usize>)> {
        let huge = [(HUGE, Some(HUGE_ACTIVE)), (HUGE, None)];
        self.scale.iter().map(|&n| (n, None)).chain(huge.into_iter().filter(|_| self.huge)).collect()
    }

    /// Connections held while `/metrics` is scraped (issue: 10,000 with the default labels).
    fn scrape_sockets(&self) -> usize {
        if self.quick {
            1_000
        } else {
            10_000
        }
    }
}

/// The large scale of `--huge`, and the sockets active each second in its mostly idle case.
const HUGE: usize = 100_000;
const HUGE_ACTIVE: usize = 1_000;
/// Sockets held in `--huge`'s largest case, when the memory allows it.
const MILLION: usize = 1_000_000;
/// Memory the largest case needs, roughly: the kernel's sockets (about 4 KiB each) and
/// tcptop's rows (about 2.5 KiB each at 50,000), with room to spare for the rest of the machine.
const MILLION_MEMORY: u64 = 12 << 30;
/// Start-ups timed with a million sockets held (their median is the figure).
const MILLION_STARTUPS: usize = 3;

/// What watches the traffic during a run.
#[derive(Clone, Debug)]
enum Watcher {
    Nothing,
    Floor(Yardstick),
    /// tcptop in batch mode with these extra flags.
    Tcptop(Vec<&'static str>),
    /// A tool a user would pick instead.
    Peer(Peer),
}

impl Watcher {
    /// Whether it attaches BPF programs to the kernel's hooks (the capture and sock_diag
    /// backends do not).
    fn hooks_kernel(&self) -> bool {
        match self {
            Watcher::Nothing => false,
            Watcher::Floor(_) => true,
            Watcher::Tcptop(flags) => !flags.contains(&"capture") && !flags.contains(&"sockdiag"),
            Watcher::Peer(_) => false,
        }
    }

    fn label(&self) -> String {
        match self {
            Watcher::Nothing => "no tcptop".into(),
            Watcher::Floor(yardstick) => yardstick.label().into(),
            Watcher::Tcptop(flags) => format!("`tcptop -b {}`", flags.join(" ")),
            Watcher::Peer(peer) => peer.label(),
        }
    }
}

/// A watcher at work; stopping it detaches it.
enum Watching {
    Nothing,
    Floor(Floor),
    Tcptop(Tcptop),
    Peer(peers::Running),
}

/// Everything a run needs besides its configuration.
struct Bench {
    tcptop: PathBuf,
    floor_object: PathBuf,
    /// Tracing BPF programs seen during runs that were neither tcptop's nor the floor's.
    others: BTreeSet<String>,
    /// Ids of the programs tcptop or the floor held at some point.
    own_programs: BTreeSet<u32>,
}

impl Bench {
    fn start(&self, watcher: &Watcher) -> Result<Watching> {
        Ok(match watcher {
            Watcher::Nothing => Watching::Nothing,
            Watcher::Floor(yardstick) => Watching::Floor(Floor::attach(&self.floor_object, *yardstick)?),
            Watcher::Tcptop(flags) => {
                Watching::Tcptop(Tcptop::start(&self.tcptop, &[flags, &["1"][..]].concat())?)
            }
            Watcher::Peer(peer) => Watching::Peer(peers::Running::start(*peer)?),
        })
    }
}

/// A running `tcptop -b`; of its output only the summary lines are kept.
struct Tcptop {
    child: Child,
    pid: u32,
    cpu: measure::CpuAccount,
    /// The backend its first line names (`probe=...`).
    probe: String,
    /// Its first summary line.
    first_line: String,
    /// Each later summary line, as it is printed.
    summaries: mpsc::Receiver<String>,
}

impl Tcptop {
    /// Starts `tcptop -b ARGS` and waits for its first interval, so the probes are attached.
    fn start(binary: &Path, args: &[&str]) -> Result<Tcptop> {
        let mut child = Command::new(binary)
            .arg("-b")
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let cpu = measure::CpuAccount::of(child.id()).inspect_err(|_| {
            let _ = child.kill().and_then(|()| child.wait());
        })?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let (summary, summaries) = mpsc::channel();
        thread::spawn(move || {
            // A summary line's second word is `probe=...`; rows never have one.
            let summary_lines = BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .filter(|line| line.split_whitespace().nth(1).is_some_and(|word| word.starts_with("probe=")));
            for line in summary_lines {
                // Once tcptop is stopped nobody listens: its output only needs draining.
                let _ = summary.send(line);
            }
        });
        let Ok(first_line) = summaries.recv_timeout(FIRST_LINE_TIMEOUT) else {
            let _ = child.kill();
            bail!(
                "tcptop -b {} printed nothing in {} s ({})",
                args.join(" "),
                FIRST_LINE_TIMEOUT.as_secs(),
                child.wait()?
            );
        };
        let probe =
            first_line.split_whitespace().find_map(|word| word.strip_prefix("probe=")).unwrap_or("?").into();
        let pid = child.id();
        Ok(Tcptop { child, pid, cpu, probe, first_line, summaries })
    }

    /// Ends it as Ctrl-C would.
    fn stop(mut self) -> Result<()> {
        crate::child::terminate(&mut self.child, "tcptop")
    }
}

impl Watching {
    /// The watcher's process, when it has one of its own.
    fn pid(&self) -> Option<u32> {
        match self {
            Watching::Tcptop(tcptop) => Some(tcptop.pid),
            Watching::Peer(peer) => Some(peer.pid),
            Watching::Nothing | Watching::Floor(_) => None,
        }
    }

    /// Its CPU time so far, where it is a process of its own.
    fn cpu(&self) -> io::Result<Option<Duration>> {
        match self {
            Watching::Tcptop(tcptop) => tcptop.cpu.cpu().map(Some),
            Watching::Peer(peer) => peer.cpu.cpu().map(Some),
            Watching::Nothing | Watching::Floor(_) => Ok(None),
        }
    }

    fn stop(self) -> Result<()> {
        match self {
            Watching::Tcptop(tcptop) => tcptop.stop(),
            Watching::Peer(peer) => peer.stop(),
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
    /// Connections ended by resets, for the health hooks (load::Workload::resets).
    Resets,
}

/// One measured run.
#[derive(Clone, Debug)]
struct Run {
    secs: f64,
    done: Totals,
    machine_busy: Duration,
    tcptop_cpu: Option<Duration>,
    tcptop_rss: Option<u64>,
    /// Run time of the BPF programs, when the kernel timed them.
    bpf_time: Option<Duration>,
    /// What each of the watcher's own BPF programs ran, when the kernel timed them.
    programs: Vec<ProgramRuns>,
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

    /// The watcher's CPU as a share of one core.
    fn tcptop_core_share(&self) -> Option<f64> {
        self.tcptop_cpu.map(|cpu| cpu.as_secs_f64() / self.secs)
    }
}

impl Bench {
    /// Remembers the tracing programs loaded now that are neither ours nor `tcptop`'s.
    fn note_others(&mut self, tcptop: Option<u32>) -> Result<()> {
        let ours: Vec<u32> = [std::process::id()].into_iter().chain(tcptop).collect();
        self.others.extend(measure::foreign_tracing_programs(&ours, &mut self.own_programs)?);
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
            Traffic::Resets => Workload::resets(conns)?,
        };
        thread::sleep(WARM_UP);
        let stats = timed.then(measure::BpfStats::enable).transpose().context("enabling BPF statistics")?;
        let pid = watching.pid();
        let programs = || pid.filter(|_| timed).map(measure::program_runs).transpose();
        let programs_before = programs()?;
        let (cpu_before, busy_before, done_before, bpf_before, start) = (
            watching.cpu()?,
            measure::machine_busy()?,
            workload.totals(),
            measure::bpf_run_time(),
            Instant::now(),
        );
        self.note_others(pid)?;
        thread::sleep(Duration::from_secs_f64(secs));
        let (done_after, elapsed, busy_after, cpu_after, bpf_after) = (
            workload.totals(),
            start.elapsed(),
            measure::machine_busy()?,
            watching.cpu()?,
            measure::bpf_run_time(),
        );
        let programs = programs()?
            .zip(programs_before)
            .map_or_else(Vec::new, |(after, before)| measure::runs_since(after, &before));
        drop(stats);
        let tcptop_rss = pid.map(measure::peak_rss).transpose()?;
        workload.stop()?;
        watching.stop()?;
        Ok(Run {
            secs: elapsed.as_secs_f64(),
            done: done_after - done_before,
            machine_busy: busy_after - busy_before,
            tcptop_cpu: cpu_after.zip(cpu_before).map(|(after, before)| after.saturating_sub(before)),
            tcptop_rss,
            bpf_time: timed.then(|| bpf_after.saturating_sub(bpf_before)),
            programs,
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

    /// One request/response run of each watcher that hooks the kernel (`None` for the others),
    /// with the kernel timing the BPF programs.
    fn timed_runs(&mut self, watchers: &[Watcher], args: &Args) -> Result<Vec<Option<Run>>> {
        let mut runs = Vec::new();
        for watcher in watchers {
            if !watcher.hooks_kernel() {
                runs.push(None);
                continue;
            }
            eprintln!("overhead: RequestResponse timed by the kernel: {}", watcher.label());
            runs.push(Some(self.measure(watcher, Traffic::RequestResponse, args.conns, args.secs, true)?));
        }
        Ok(runs)
    }
}

/// The BPF run time per event of a run the kernel timed.
fn bpf_time_per_event(run: &Run) -> Option<f64> {
    run.bpf_time.map(|time| time.as_nanos() as f64 / run.done.calls.max(1) as f64)
}

/// What one connection count cost.
struct Scale {
    sockets: usize,
    /// Sockets that moved bytes each second (`None`: all of them).
    active: Option<usize>,
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
    fn scale(&mut self, sockets: usize, active: Option<usize>, intervals: u32) -> Result<Scale> {
        eprintln!("overhead: scale: {sockets} sockets, {} active", active_label(active));
        let held = Holders::open(sockets, active).with_context(|| format!("opening {sockets} sockets"))?;
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
            active,
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
        let tcptop = Tcptop::start(&self.tcptop, &[flags, &["1"][..]].concat())?;
        thread::sleep(Duration::from_secs(1));
        self.note_others(Some(tcptop.pid))?;
        let (cpu_before, start) = (tcptop.cpu.cpu()?, Instant::now());
        thread::sleep(Duration::from_secs(intervals.into()));
        let cpu = tcptop.cpu.cpu()?.saturating_sub(cpu_before);
        let rss = measure::peak_rss(tcptop.pid)?;
        tcptop.stop()?;
        Ok((cpu.mul_f64(1.0 / start.elapsed().as_secs_f64()), rss))
    }

    /// Time from exec to tcptop's first batch line, `repeat` times.
    fn startup(&self, flags: &[&'static str], repeat: usize) -> Result<Startup> {
        let mut startup = Startup { times: Vec::new(), probe: String::new() };
        for _ in 0..repeat {
            let start = Instant::now();
            let tcptop = Tcptop::start(&self.tcptop, &[flags, &["0.01"][..]].concat())?;
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

/// `/metrics` scraped once a second, as Prometheus would, with many connections held.
struct Scrape {
    sockets: usize,
    /// Time from connect to the last byte of each scrape.
    times: Vec<Duration>,
    bytes: usize,
    samples: usize,
    /// tcptop's CPU per one-second interval, with and without the exporter.
    cpu_per_interval: Duration,
    plain_cpu_per_interval: Duration,
    rss: u64,
}

/// A million sockets held: does tcptop start, see them all, and keep up?
struct Million {
    /// Time the holders took to open every socket.
    opened_in: Duration,
    /// Exec to the first line of `tcptop -b -a 0.01`, each of `MILLION_STARTUPS` times, and
    /// the first run's line past its time stamp. No COUNT: a run's last interval walks every
    /// socket first, for exact last totals, and a user's first table is no last one.
    startups: Vec<Duration>,
    first_table: String,
    /// Each `interval=` that `tcptop -b 1` printed, and how many intervals were due.
    intervals: Vec<f64>,
    due: u32,
    cpu_per_interval: Duration,
    rss: u64,
}

impl Million {
    fn startup(&self) -> Duration {
        Duration::from_secs_f64(median(self.startups.iter().map(Duration::as_secs_f64).collect()))
    }

    /// Whether the first table listed every socket held, with nothing dropped.
    fn complete(&self) -> bool {
        let listed = self.first_table.split_whitespace().find_map(|w| w.strip_prefix("connections="));
        listed.and_then(|n| n.parse::<usize>().ok()).is_some_and(|n| n >= MILLION)
            && !self.first_table.contains("OVERFLOW")
    }

    /// Whether every interval due was printed, none of them late.
    fn keeps_up(&self) -> bool {
        self.intervals.len() as u32 + 1 >= self.due && self.intervals.iter().all(|&secs| secs < 1.1)
    }
}

impl Bench {
    fn scrape(&mut self, sockets: usize, intervals: u32) -> Result<Scrape> {
        eprintln!("overhead: /metrics with {sockets} sockets");
        let held = Holders::open(sockets, None).with_context(|| format!("opening {sockets} sockets"))?;
        let (plain_cpu_per_interval, _) = self.cpu_per_interval(&[], intervals)?;
        let address = format!("127.0.0.1:{}", scrape::free_port()?);
        let tcptop = Tcptop::start(&self.tcptop, &["--prometheus", &address, "1"])?;
        // The first interval took in every socket: not a steady one.
        thread::sleep(Duration::from_secs(1));
        let (cpu_before, start) = (tcptop.cpu.cpu()?, Instant::now());
        let (mut times, mut body) = (Vec::new(), String::new());
        for _ in 0..intervals {
            let time = Instant::now();
            body = scrape::metrics(&address).context("scraping /metrics")?;
            times.push(time.elapsed());
            thread::sleep(Duration::from_secs(1).saturating_sub(time.elapsed()));
        }
        let cpu = tcptop.cpu.cpu()?.saturating_sub(cpu_before);
        let rss = measure::peak_rss(tcptop.pid)?;
        let cpu_per_interval = cpu.mul_f64(1.0 / start.elapsed().as_secs_f64());
        tcptop.stop()?;
        held.close()?;
        Ok(Scrape {
            sockets,
            times,
            bytes: body.len(),
            samples: scrape::samples(&body),
            cpu_per_interval,
            plain_cpu_per_interval,
            rss,
        })
    }

    fn million(&mut self, intervals: u32) -> Result<Million> {
        eprintln!("overhead: {MILLION} sockets");
        let opening = Instant::now();
        let held = Holders::open(MILLION, Some(HUGE_ACTIVE)).context("opening the sockets")?;
        let opened_in = opening.elapsed();
        let (mut startups, mut first_table) = (Vec::new(), String::new());
        for _ in 0..MILLION_STARTUPS {
            let start = Instant::now();
            let first = Tcptop::start(&self.tcptop, &["-a", "0.01"])?;
            startups.push(start.elapsed());
            if first_table.is_empty() {
                first_table = first.first_line.split_once(' ').map_or("", |(_, rest)| rest).to_string();
            }
            first.stop()?;
        }

        let tcptop = Tcptop::start(&self.tcptop, &["1"])?;
        let (cpu_before, start) = (tcptop.cpu.cpu()?, Instant::now());
        thread::sleep(Duration::from_secs(intervals.into()));
        let cpu = tcptop.cpu.cpu()?.saturating_sub(cpu_before);
        let cpu_per_interval = cpu.mul_f64(1.0 / start.elapsed().as_secs_f64());
        let intervals_printed = tcptop.summaries.try_iter().filter_map(|line| {
            let secs = line.split_whitespace().find_map(|w| w.strip_prefix("interval="))?;
            secs.trim_end_matches('s').parse::<f64>().ok()
        });
        let million = Million {
            opened_in,
            startups,
            first_table,
            intervals: intervals_printed.collect(),
            due: intervals,
            cpu_per_interval,
            rss: measure::peak_rss(tcptop.pid)?,
        };
        tcptop.stop()?;
        held.close()?;
        Ok(million)
    }
}

pub fn run(args: Args) -> Result<()> {
    if let Some(sockets) = args.hold {
        return load::hold(sockets, args.hold_address, args.hold_active_pairs).context("holding sockets");
    }
    let args = args.quickened();
    let mut bench = Bench {
        tcptop: args.tcptop.clone().unwrap_or_else(|| env!("CARGO_BIN_EXE_tcptop").into()),
        floor_object: floor::compile()?,
        others: BTreeSet::new(),
        own_programs: BTreeSet::new(),
    };
    libbpf_rs::set_print(None);
    if !args.only.is_empty() {
        return run_only(&mut bench, &args);
    }
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
    let ebpf = Watcher::Tcptop(ebpf);
    watchers.push(ebpf.clone());
    if startups.iter().any(|(backend, _)| *backend == "capture") {
        watchers.push(Watcher::Tcptop(capture));
    }
    watchers.push(Watcher::Tcptop(sockdiag));
    // The peers run in the same rounds; one that cannot is named in the tables as skipped.
    let mut skipped = Vec::new();
    for peer in Peer::ALL {
        let trial = || peers::Running::start(peer)?.stop();
        match (args.quick, peer.binary()) {
            (true, _) => skipped.push((peer.label(), "skipped (not run with --quick)".to_string())),
            (false, None) => {
                skipped.push((peer.label(), "skipped: not installed (see benches/overhead/setup)".into()))
            }
            (false, Some(_)) => match trial() {
                Ok(()) => watchers.push(Watcher::Peer(peer)),
                Err(e) => skipped.push((peer.label(), format!("skipped: {e:#}"))),
            },
        }
    }

    let request_response = bench.interleaved(&watchers, Traffic::RequestResponse, &args, args.secs)?;
    let timed = bench.timed_runs(&watchers, &args)?;
    eprintln!("overhead: Resets timed by the kernel: {}", ebpf.label());
    let resets = bench.measure(&ebpf, Traffic::Resets, args.conns, args.secs / 2.0, true)?;
    let bulk = bench.interleaved(&watchers, Traffic::Bulk, &args, args.secs / 2.0)?;
    let (mut scales, mut failed_scales) = (Vec::new(), Vec::new());
    for (sockets, active) in args.scale_points() {
        match bench.scale(sockets, active, args.intervals) {
            Ok(scale) => scales.push(scale),
            // Issue 20's scales may be beyond this tcptop: its row says so, the rest still runs.
            Err(e) if sockets >= HUGE => failed_scales.push((sockets, active, format!("{e:#}"))),
            Err(e) => return Err(e),
        }
    }
    let scrape = bench.scrape(args.scrape_sockets(), args.intervals)?;
    let million = args.huge.then(|| {
        let available = measure::memory_available().unwrap_or(0);
        if !failed_scales.is_empty() {
            return Err(format!("not run: tcptop failed at {} connections already", thousands(HUGE as f64)));
        }
        if available < MILLION_MEMORY {
            return Err(format!(
                "not run: {:.1} GiB of memory available, {} GiB wanted",
                available as f64 / GIB,
                MILLION_MEMORY >> 30
            ));
        }
        bench.million(args.intervals).map_err(|e| format!("failed: {e:#}"))
    });
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
    print_request_response(&watchers, &request_response, &timed, &skipped, &args);
    let ebpf_timed = watchers.iter().zip(&timed).find(|(w, _)| w.label() == ebpf.label());
    let ebpf_timed = ebpf_timed.and_then(|(_, run)| run.as_ref()).expect("eBPF hooks the kernel");
    print_programs(&ebpf.label(), ebpf_timed, &resets, &args);
    print_bulk(&watchers, &bulk, &skipped, &args);
    print_scale(&scales, &failed_scales, args.intervals);
    print_scrape(&scrape);
    if let Some(million) = &million {
        print_million(million);
    }
    print_startup(&startups);
    let million = million.as_ref().and_then(|m| m.as_ref().ok());
    print_targets(&watchers, &request_response, ebpf_timed, &scales, &startups, million);
    println!(
        "Frame render at 10,000 rows (the live screen): `cargo bench --bench render` (benches/render.rs)."
    );
    Ok(())
}

/// `--only`: the named watchers' request/response and bulk rows, beside the run without tcptop.
fn run_only(bench: &mut Bench, args: &Args) -> Result<()> {
    if args.only == ["million"] {
        print_million(&bench.million(args.intervals).map_err(|e| format!("failed: {e:#}")));
        return Ok(());
    }
    let backends = [
        ("ebpf", vec!["--probe", "auto"]),
        ("capture", vec!["--backend", "capture"]),
        ("sockdiag", vec!["--backend", "sockdiag"]),
    ];
    let mut watchers = vec![Watcher::Nothing];
    for name in &args.only {
        if name == "storage" {
            watchers.push(Watcher::Floor(Yardstick::StorageTracepoint));
            continue;
        }
        if name == "floor" {
            // fentry where the kernel allows it, as tcptop's auto plan prefers it.
            let floor = [Yardstick::EmptyFentry, Yardstick::EmptyTracepoint]
                .into_iter()
                .find(|yardstick| Floor::attach(&bench.floor_object, *yardstick).is_ok())
                .context("--only floor: neither empty floor attaches here")?;
            watchers.push(Watcher::Floor(floor));
            continue;
        }
        let backend = backends.iter().find(|(backend, _)| backend == name);
        let peer = Peer::ALL.into_iter().find(|peer| peer.program() == name);
        watchers.push(match (backend, peer) {
            (Some((_, flags)), _) => Watcher::Tcptop(flags.clone()),
            (None, Some(peer)) if peer.binary().is_some() => Watcher::Peer(peer),
            (None, Some(_)) => bail!("--only {name}: not installed (see benches/overhead/setup)"),
            (None, None) => {
                bail!("--only {name}: not a watcher (ebpf, capture, sockdiag, floor, storage, nethogs, bandwhich, iftop)")
            }
        });
    }
    let request_response = bench.interleaved(&watchers, Traffic::RequestResponse, args, args.secs)?;
    let timed = bench.timed_runs(&watchers, args)?;
    let bulk = bench.interleaved(&watchers, Traffic::Bulk, args, args.secs / 2.0)?;
    print_header(args, &[]);
    print_request_response(&watchers, &request_response, &timed, &[], args);
    print_bulk(&watchers, &bulk, &[], args);
    let targets = capture_targets(&watchers, &request_response);
    if !targets.is_empty() {
        println!("### Targets\n");
        let rows: Vec<Vec<String>> = targets
            .into_iter()
            .map(|(target, measured, met)| vec![target.into(), measured, met_or_missed(met)])
            .collect();
        table(&["target", "measured", "result"], &rows);
    }
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

fn print_request_response(
    watchers: &[Watcher],
    all: &[Vec<Run>],
    timed: &[Option<Run>],
    skipped: &[(String, String)],
    args: &Args,
) {
    println!("### Request/response: {} connections, {MESSAGE}-byte requests and answers\n", args.conns);
    let rows = watchers
        .iter()
        .zip(all)
        .zip(timed)
        .map(|((watcher, runs), timed)| {
            let round_trips = median(runs.iter().map(Run::units_per_sec).collect());
            let bpf_time = timed.as_ref().and_then(bpf_time_per_event);
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
        .chain(skipped_rows(skipped, 9))
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
            "watcher CPU (one core)",
            "watcher peak RSS",
        ],
        &rows,
    );
}

fn print_bulk(watchers: &[Watcher], all: &[Vec<Run>], skipped: &[(String, String)], args: &Args) {
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
        .chain(skipped_rows(skipped, 6))
        .collect::<Vec<_>>();
    table(
        &["run", "throughput", "events/s", "vs no tcptop", "watcher CPU (one core)", "watcher peak RSS"],
        &rows,
    );
}

/// A row for each peer that did not run, saying why, in a table of `columns` columns.
fn skipped_rows(skipped: &[(String, String)], columns: usize) -> impl Iterator<Item = Vec<String>> + '_ {
    skipped.iter().map(move |(label, why)| padded(vec![label.clone(), why.clone()], columns))
}

/// `cells`, then "-" up to `columns` cells: a row that has nothing more to show.
fn padded(mut cells: Vec<String>, columns: usize) -> Vec<String> {
    cells.resize(columns.max(cells.len()), "-".into());
    cells
}

/// Where tcptop's BPF programs are written, for their whole names.
const TCPTOP_BPF_SOURCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/bpf/tcptop.bpf.c");

fn print_programs(label: &str, request_response: &Run, resets: &Run, args: &Args) {
    println!("### BPF time per program: {label}, timed by the kernel\n");
    println!(
        "Each program tcptop loaded, on the request/response load above and on {} threads ending \
         connections with resets ({} rounds/s, each a refused connect and a connection closed with \
         a zero linger, {} s): runs and run time as the kernel counts them (BPF_ENABLE_STATS). The \
         programs on slow paths (state changes, resets, retransmits) should run on no \
         request/response event, so that they cannot lower its ratio.\n",
        args.conns,
        thousands(resets.units_per_sec()),
        args.secs / 2.0,
    );
    let source = std::fs::read_to_string(TCPTOP_BPF_SOURCE).unwrap_or_default();
    let mut programs = request_response.programs.clone();
    programs.sort_by(|a, b| b.runs.cmp(&a.runs).then_with(|| a.name.cmp(&b.name)));
    let per_run = |p: &ProgramRuns| match p.runs {
        0 => "-".to_string(),
        runs => format!("{:.0} ns", p.run_time.as_nanos() as f64 / runs as f64),
    };
    let rows = programs
        .iter()
        .map(|program| {
            let on_resets = resets.programs.iter().find(|p| p.name == program.name);
            vec![
                format!("`{}` ({:?})", full_name(&program.name, &source), program.ty),
                format!("{:.3}", program.runs as f64 / request_response.done.calls.max(1) as f64),
                per_run(program),
                on_resets.map_or("-".into(), |p| thousands(p.runs as f64 / resets.secs)),
                on_resets.map_or("-".into(), per_run),
            ]
        })
        .collect::<Vec<_>>();
    table(
        &["program", "request/response: runs per event", "time per run", "resets: runs/s", "time per run"],
        &rows,
    );
}

/// The kernel keeps 15 characters of a program's name: the whole name from tcptop's BPF
/// source, when exactly one there starts with them.
fn full_name(short: &str, source: &str) -> String {
    let names: BTreeSet<&str> = source
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with(short))
        .collect();
    match names.into_iter().collect::<Vec<_>>()[..] {
        [name] => name.to_string(),
        _ => short.to_string(),
    }
}

/// Runs per request/response event of tcptop's programs on slow paths, all together.
fn slow_path_runs_per_event(run: &Run) -> f64 {
    let slow = run.programs.iter().filter(|p| SLOW_PATHS.iter().any(|hook| p.name.contains(hook)));
    slow.map(|p| p.runs).sum::<u64>() as f64 / run.done.calls.max(1) as f64
}

/// What the names of the programs on slow paths contain.
const SLOW_PATHS: [&str; 3] = ["reset", "retrans", "state"];

fn print_scale(scales: &[Scale], failed: &[(usize, Option<usize>, String)], intervals: u32) {
    println!(
        "### Scale: `tcptop -b 1` with many connections, the active sockets sending and receiving \
         {MESSAGE} bytes once a second\n\nConnections are sockets, both ends of loopback connections, \
         as tcptop lists them, held by processes of up to {} sockets each; where not all are active, \
         a different set is each second. CPU and RSS are the tcptop process's over {intervals} \
         interval(s); collect (the kernel table read and decoded), model update and batch table are \
         the same steps timed in the benchmark's own process.\n",
        thousands(load::SOCKETS_PER_PROCESS as f64)
    );
    let rows = scales
        .iter()
        .map(|s| {
            let cpu = s.cpu_per_interval.as_secs_f64();
            vec![
                thousands(s.sockets as f64),
                active_label(s.active),
                thousands(s.tracked as f64),
                format!("{:.1} ms", millis(s.cpu_per_interval)),
                format!("{:.2}%", 100.0 * cpu),
                format!("{:.2} µs", cpu * 1e6 / s.sockets as f64),
                format!("{:.2} µs", cpu * 1e6 / s.active.unwrap_or(s.sockets) as f64),
                format!("{:.1} MiB", s.rss as f64 / MIB),
                format!("{:.2} ms", millis(s.collect)),
                format!("{:.2} ms", millis(s.update)),
                format!("{:.2} ms", millis(s.table)),
                s.sockdiag_cpu_per_interval.map_or("-".into(), |cpu| format!("{:.1} ms", millis(cpu))),
            ]
        })
        .chain(failed.iter().map(|(sockets, active, why)| {
            padded(vec![thousands(*sockets as f64), active_label(*active), format!("**failed**: {why}")], 12)
        }))
        .collect::<Vec<_>>();
    table(
        &[
            "connections",
            "active each second",
            "in tcptop's table",
            "tcptop CPU per interval",
            "of one core",
            "per connection",
            "per active connection",
            "tcptop peak RSS",
            "collect",
            "model update",
            "batch table",
            "sock_diag CPU per interval",
        ],
        &rows,
    );
}

fn active_label(active: Option<usize>) -> String {
    active.map_or("all".into(), |n| thousands(n as f64))
}

fn print_scrape(scrape: &Scrape) {
    println!(
        "### Prometheus: `tcptop -b --prometheus 127.0.0.1:PORT 1` with {} connections, default labels\n\n\
         `/metrics` fetched once a second (a whole HTTP GET, as Prometheus makes it) over {} \
         interval(s), all sockets active; tcptop's CPU per interval beside the same without the \
         exporter.\n",
        thousands(scrape.sockets as f64),
        scrape.times.len()
    );
    let ms: Vec<f64> = scrape.times.iter().map(|&t| millis(t)).collect();
    let cpu = |cpu: Duration| format!("{:.1} ms ({:.2}%)", millis(cpu), 100.0 * cpu.as_secs_f64());
    let row = vec![
        thousands(scrape.sockets as f64),
        format!("{:.1} ms", median(ms.clone())),
        format!("{:.1} ms", ms.iter().copied().fold(0.0, f64::max)),
        format!("{:.0} KiB", scrape.bytes as f64 / 1024.0),
        thousands(scrape.samples as f64),
        cpu(scrape.cpu_per_interval),
        cpu(scrape.plain_cpu_per_interval),
        format!("{:.1} MiB", scrape.rss as f64 / MIB),
    ];
    table(
        &[
            "connections",
            "scrape median",
            "slowest",
            "body",
            "samples",
            "tcptop CPU per interval",
            "without --prometheus",
            "tcptop peak RSS",
        ],
        &[row],
    );
}

fn print_million(million: &std::result::Result<Million, String>) {
    println!(
        "### {} sockets held ({} active each second)\n",
        thousands(MILLION as f64),
        thousands(HUGE_ACTIVE as f64)
    );
    let m = match million {
        Ok(m) => m,
        Err(why) => return println!("{why}\n"),
    };
    println!(
        "Held by {} processes, opened in {:.0} s. Start-up: exec to the first line of \
         `tcptop -b -a 0.01` (the first table, every socket listed), the median of {MILLION_STARTUPS} \
         runs; then `tcptop -b 1` over {} interval(s).\n",
        MILLION.div_ceil(load::SOCKETS_PER_PROCESS),
        m.opened_in.as_secs_f64(),
        m.due
    );
    let intervals = m.intervals.iter().map(|secs| format!("{secs:.2}")).collect::<Vec<_>>().join(" ");
    let startups = m.startups.iter().map(|&t| format!("{:.0}", millis(t))).collect::<Vec<_>>().join(", ");
    let row = vec![
        format!("{:.0} ms ({startups} ms)", millis(m.startup())),
        format!("{} ({})", if m.complete() { "yes" } else { "**no**" }, m.first_table),
        format!(
            "{} ({} of {} printed: {intervals} s)",
            if m.keeps_up() { "yes" } else { "**no**" },
            m.intervals.len(),
            m.due
        ),
        format!("{:.0} ms ({:.0}%)", millis(m.cpu_per_interval), 100.0 * m.cpu_per_interval.as_secs_f64()),
        format!("{:.0} MiB", m.rss as f64 / MIB),
    ];
    table(
        &[
            "start-up (each run)",
            "first table complete",
            "keeps up with 1 s",
            "tcptop CPU per interval",
            "tcptop peak RSS",
        ],
        &[row],
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

/// The capture backend against nethogs on request/response, when both ran: each target,
/// what was measured, whether it was met.
fn capture_targets(watchers: &[Watcher], runs: &[Vec<Run>]) -> Vec<(&'static str, String, bool)> {
    let runs_of = |label: &str| watchers.iter().position(|w| w.label() == label).map(|i| &runs[i][..]);
    let (Some(capture), Some(nethogs)) =
        (runs_of("`tcptop -b --backend capture`"), runs_of(&Peer::Nethogs.label()))
    else {
        return Vec::new();
    };
    let (ours, theirs) = (median(ratios(capture, &runs[0])), median(ratios(nethogs, &runs[0])));
    let ratio = (
        "capture backend's request/response ratio at least nethogs'",
        format!("{ours:.3} against {theirs:.3}"),
        ours >= theirs,
    );
    // 64-byte messages with TCP_NODELAY: one segment per sendmsg, two per round trip.
    let per_packet = |runs: &[Run]| {
        let ns = runs.iter().filter_map(|run| run.tcptop_cpu.map(|cpu| cpu.as_nanos() as f64));
        median(ns.zip(runs).map(|(ns, run)| ns / (2.0 * run.done.units.max(1) as f64)).collect())
    };
    let (ours, theirs) = (per_packet(capture), per_packet(nethogs));
    let cpu = (
        "capture backend's CPU per packet at most nethogs'",
        format!("{ours:.0} ns against {theirs:.0} ns"),
        ours <= theirs,
    );
    vec![ratio, cpu]
}

fn met_or_missed(met: bool) -> String {
    (if met { "met" } else { "**missed**" }).into()
}

/// The targets for this machine, against what was measured.
fn print_targets(
    watchers: &[Watcher],
    runs: &[Vec<Run>],
    ebpf_timed: &Run,
    scales: &[Scale],
    startups: &[(&str, Startup)],
    million: Option<&Million>,
) {
    println!("### Targets\n");
    let mut rows = Vec::new();
    let mut check = |target: &str, measured: String, met: bool| {
        rows.push(vec![target.to_string(), measured, met_or_missed(met)]);
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
    let slow = slow_path_runs_per_event(ebpf_timed);
    check(
        "the health hooks (resets, retransmits, state changes) stay off the request/response path",
        format!("{slow:.4} runs per event"),
        slow < 0.001,
    );
    for (target, measured, met) in capture_targets(watchers, runs) {
        check(target, measured, met);
    }
    // CPU (share of a core) and RSS (MiB) budgets: connections, of them active, their words.
    let budgets = [
        (10_000, None, "10,000 connections", 0.05, 64.0),
        (HUGE, Some(HUGE_ACTIVE), "100,000 connections, 1,000 active", 0.01, 128.0),
    ];
    for (sockets, active, what, cpu_budget, rss_budget) in budgets {
        let Some(s) = scales.iter().find(|s| s.sockets == sockets && s.active == active) else { continue };
        let share = s.cpu_per_interval.as_secs_f64();
        check(
            &format!("tcptop CPU <= {:.0}% of a core with {what}, 1 s interval", 100.0 * cpu_budget),
            format!("{:.2}%", 100.0 * share),
            share <= cpu_budget,
        );
        let rss = s.rss as f64 / MIB;
        check(&format!("RSS <= {rss_budget:.0} MiB with {what}"), format!("{rss:.1} MiB"), rss <= rss_budget);
    }
    if let Some(s) = scales.iter().find(|s| s.sockets == HUGE && s.active.is_none()) {
        let micros = s.cpu_per_interval.as_secs_f64() * 1e6 / s.sockets as f64;
        check(
            "<= 1 µs per active connection per interval, 100,000 all active",
            format!("{micros:.2} µs"),
            micros <= 1.0,
        );
    }
    if let Some(m) = million {
        let ms = millis(m.startup());
        check("start-up within 2 s with 1,000,000 sockets", format!("{ms:.0} ms"), ms <= 2000.0);
        check("first table complete with 1,000,000 sockets", m.first_table.clone(), m.complete());
        let slowest = m.intervals.iter().copied().fold(0.0, f64::max);
        check(
            "keeps up with a 1 s interval with 1,000,000 sockets",
            format!("{} of {} intervals, slowest {slowest:.2} s", m.intervals.len(), m.due),
            m.keeps_up(),
        );
    }
    for (backend, startup) in startups {
        let ms = median(startup.times.iter().map(|&t| millis(t)).collect());
        check(&format!("start-up < 500 ms ({backend})"), format!("{ms:.0} ms"), ms < 500.0);
    }
    table(&["target", "measured", "result"], &rows);
}

const MIB: f64 = 1024.0 * 1024.0;
const GIB: f64 = 1024.0 * MIB;

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
