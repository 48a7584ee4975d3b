//! Runs tcptop: parses the flags, opens the collector and drives a front end from the one
//! event loop.

use std::io::{self, BufWriter, IsTerminal};
use std::iter;
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Result;
use clap::Parser;
use ratatui::backend::CrosstermBackend;

use crate::cli::{Args, Format};
use crate::collector::Collector;
use crate::event::{self, Event};
use crate::model::{Model, Query, Retention};
use crate::platform;
use crate::view::batch::BatchTable;
use crate::view::record::{Encoding, RecordSink};
use crate::view::tui::screen::Header;
use crate::view::tui::state::TuiState;
use crate::view::tui::{TerminalSession, Tui};
use crate::view::IntervalSink;
use crate::view::{events as lifecycle, log};

/// tcptop's `main`: the process exit code. A closed stdout (`tcptop -b | head`) is a clean exit.
pub fn main() -> i32 {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => 0,
        Err(e) if is_broken_pipe(&e) => 0,
        Err(e) => {
            eprintln!("tcptop: {e:#}");
            1
        }
    }
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error
        .chain()
        .any(|cause| cause.downcast_ref::<io::Error>().is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe))
}

pub fn run(args: &Args) -> Result<()> {
    let (sender, events) = mpsc::channel();
    // Before the probes load, so that a Ctrl-C during start-up still ends cleanly.
    event::spawn_signal_listener(sender.clone())?;
    // Before the probes attach: a log path tcptop must not or cannot write ends it here.
    let log = args.log.as_deref().map(log::open).transpose()?;
    let verbose = args.verbose;
    let mut collector = platform::open_collector(args, &mut |note| {
        if verbose {
            eprintln!("tcptop: {note}");
        }
    })?;
    if verbose {
        eprintln!("tcptop: using the {} probe strategy", collector.backend());
    }
    event::spawn_ticker(sender.clone(), args.interval());
    if args.events {
        return lifecycle::run(collector.as_mut(), &events, &mut io::stdout().lock());
    }
    let query = Query { all: args.all, text: String::new(), sort: args.sort.into(), reverse: args.reverse };
    let mut sinks: Vec<Box<dyn IntervalSink>> = Vec::new();
    sinks.extend(log.map(|log| Box::new(log) as Box<dyn IntervalSink>));
    if !args.batch && args.format.is_none() && io::stdout().is_terminal() {
        event::spawn_input_reader(sender);
        return run_tui(collector.as_mut(), args, &events, &mut sinks);
    }
    sinks.extend(stdout_sink(args, query));
    run_headless(collector.as_mut(), args.count, args.udp_idle(), &events, &mut sinks)
}

/// What headless mode prints: the `--format` asked for, text by default, and nothing when
/// tcptop only logs (`--log` without --batch or --format, and no terminal).
fn stdout_sink(args: &Args, query: Query) -> Option<Box<dyn IntervalSink>> {
    let format = match args.format {
        Some(format) => format,
        None if args.log.is_some() && !args.batch && !io::stdout().is_terminal() => return None,
        None => Format::Text,
    };
    let out = BufWriter::new(io::stdout().lock());
    Some(match format {
        Format::Text => Box::new(BatchTable { out, query }),
        Format::Json => Box::new(RecordSink::new(out, Encoding::JsonLines, query, true)),
        Format::Csv => Box::new(RecordSink::new(out, Encoding::Csv, query, true)),
    })
}

/// Feeds every interval to the sinks until `count` intervals or a stop; a stop still
/// records the interval it cut short.
pub fn run_headless(
    collector: &mut dyn Collector,
    count: Option<u64>,
    udp_idle: Duration,
    events: &Receiver<Event>,
    sinks: &mut [Box<dyn IntervalSink>],
) -> Result<()> {
    let start = Instant::now();
    let mut model = Model::new(Duration::ZERO, Retention { closed_intervals: 0, history: 1, udp_idle });
    let mut done = 0;
    for event in events {
        record_interval(collector, &mut model, start, sinks)?;
        done += 1;
        if matches!(event, Event::Stop) || count == Some(done) {
            break;
        }
    }
    Ok(())
}

/// Ends an interval: the model takes a sample and every sink records it.
fn record_interval(
    collector: &mut dyn Collector,
    model: &mut Model,
    start: Instant,
    sinks: &mut [Box<dyn IntervalSink>],
) -> Result<()> {
    model.update(collector.collect()?, start.elapsed());
    let wall = SystemTime::now();
    for sink in sinks.iter_mut() {
        sink.interval(model, collector.backend(), wall)?;
    }
    Ok(())
}

/// Runs the live screen until `q`, a stop or `count` intervals, feeding every interval to the
/// sinks as well; a stop or `q` still records the interval it cut short. Whatever ends it, the
/// terminal is restored.
pub fn run_tui(
    collector: &mut dyn Collector,
    args: &Args,
    events: &Receiver<Event>,
    sinks: &mut [Box<dyn IntervalSink>],
) -> Result<()> {
    let _session = TerminalSession::enter()?;
    let header = Header {
        host: gethostname::gethostname().to_string_lossy().into_owned(),
        backend: collector.backend().to_string(),
        interval: args.interval(),
    };
    let state = TuiState {
        sort_choice: args.sort.into(),
        reverse: args.reverse,
        raw_bytes: args.bytes,
        ..TuiState::default()
    };
    let mut tui = Tui::new(CrosstermBackend::new(io::stdout()), header, state)?;
    let start = Instant::now();
    let mut model =
        Model::new(Duration::ZERO, Retention { udp_idle: args.udp_idle(), ..Retention::default() });
    let mut done = 0;
    tui.draw(&model)?;
    while let Ok(first) = events.recv() {
        let mut stop = false;
        // Whatever queued up while drawing is handled before the next frame.
        for event in iter::once(first).chain(events.try_iter()) {
            match event {
                Event::Tick => {
                    record_interval(collector, &mut model, start, sinks)?;
                    tui.interval(&model);
                    done += 1;
                }
                Event::Input(input) => tui.input(&input, &model),
                Event::Stop => stop = true,
            }
        }
        if args.count.is_some_and(|count| done >= count) {
            break;
        }
        if stop || tui.quit() {
            return record_interval(collector, &mut model, start, sinks);
        }
        tui.draw(&model)?;
    }
    Ok(())
}
