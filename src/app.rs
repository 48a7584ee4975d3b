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
    error.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
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
    run_batch(
        collector.as_mut(),
        args,
        &events,
        &mut BufWriter::new(io::stdout().lock()),
    )
}

/// Prints one table per tick until `args.count` tables or a stop; a stop still prints the
/// interval it cut short.
pub fn run_batch(
    collector: &mut dyn Collector,
    args: &Args,
    events: &Receiver<Event>,
    out: &mut dyn Write,
) -> Result<()> {
    let start = Instant::now();
    let mut model = Model::new(
        Duration::ZERO,
        Retention {
            closed_intervals: 0,
            history: 1,
        },
    );
    let query = Query {
        all: args.all,
        text: String::new(),
        sort: args.sort,
        reverse: args.reverse,
    };
    let mut shown = 0;
    for event in events {
        model.update(collector.collect()?, start.elapsed());
        batch::write_interval(out, &model, &query, collector.backend(), SystemTime::now())?;
        out.flush()?;
        shown += 1;
        if matches!(event, Event::Stop) || args.count == Some(shown) {
            break;
        }
    }
    Ok(())
}
