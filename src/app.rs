//! Runs tcptop: parses the flags, opens the collector and drives a front end from the one
//! event loop.

use std::io::{self, BufWriter};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Result;
use clap::Parser;

use crate::cli::Args;
use crate::collector::Collector;
use crate::event::{self, Event};
use crate::model::{Model, Query, Retention};
use crate::platform;
use crate::view::batch::BatchTable;
use crate::view::IntervalSink;

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
    let verbose = args.verbose;
    let mut collector = platform::open_collector(args, &mut |note| {
        if verbose {
            eprintln!("tcptop: {note}");
        }
    })?;
    if verbose {
        eprintln!("tcptop: using the {} probe strategy", collector.backend());
    }
    event::spawn_ticker(sender, args.interval());
    let query = Query { all: args.all, text: String::new(), sort: args.sort, reverse: args.reverse };
    let mut sinks: Vec<Box<dyn IntervalSink>> =
        vec![Box::new(BatchTable { out: BufWriter::new(io::stdout().lock()), query })];
    run_headless(collector.as_mut(), args.count, &events, &mut sinks)
}

/// Feeds every interval to the sinks until `count` intervals or a stop; a stop still
/// records the interval it cut short.
pub fn run_headless(
    collector: &mut dyn Collector,
    count: Option<u64>,
    events: &Receiver<Event>,
    sinks: &mut [Box<dyn IntervalSink>],
) -> Result<()> {
    let start = Instant::now();
    let mut model = Model::new(Duration::ZERO, Retention { closed_intervals: 0, history: 1 });
    let mut done = 0;
    for event in events {
        model.update(collector.collect()?, start.elapsed());
        let wall = SystemTime::now();
        for sink in sinks.iter_mut() {
            sink.interval(&model, collector.backend(), wall)?;
        }
        done += 1;
        if matches!(event, Event::Stop) || count == Some(done) {
            break;
        }
    }
    Ok(())
}
