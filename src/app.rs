//! Runs tcptop: parses the flags, starts the collection thread and feeds the front ends from
//! the one event loop.

use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use ratatui::backend::Backend;

use crate::cli::{Args, Format};
use crate::collection::{self, Collected, CollectionThread, Interval, Schedule};
use crate::event::{Event, Sources};
use crate::exporter::Exporter;
use crate::model::{Model, Query, Retention};
use crate::os::Os;
use crate::resolve::{Names, Services, SystemLookup};
use crate::view::batch::BatchTable;
use crate::view::events::EventLines;
use crate::view::log;
use crate::view::record::{Encoding, RecordSink};
use crate::view::tui::screen::Header;
use crate::view::tui::state::TuiState;
use crate::view::tui::Tui;
use crate::view::Sink;

/// tcptop's `main`: the process exit code. A closed stdout (`tcptop -b | head`) is a clean exit.
pub fn main() -> i32 {
    crate::platform::return_freed_memory();
    let args = Args::parse();
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the event loop")
        .and_then(|runtime| runtime.block_on(async { run(&args, Os::real(&args)?).await }));
    match result {
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

/// Runs tcptop on `os` as `args` ask, until `count` intervals, a stop or `q`.
pub async fn run<B: Backend>(args: &Args, os: Os<B>) -> Result<()>
where
    B::Error: Send + Sync + 'static,
{
    // Before the probes attach: a log path tcptop must not or cannot write ends it here.
    let log = args.log.as_deref().map(log::open).transpose()?;
    let exporter = args
        .prometheus
        .as_deref()
        .map(|address| Exporter::start(address, &args.prometheus_labels, args.prometheus_max_series))
        .transpose()?;
    let (sender, collected) = collection::reports();
    let schedule = Schedule { interval: args.interval(), live_events: args.events, intervals: args.count };
    let collection =
        CollectionThread::spawn(os.open_collector, os.read_cmdline, Arc::clone(&os.clock), schedule, sender)?;
    let mut sources = Sources { collected, input: None, stop_signals: Some(os.stop_signals), resolved: None };
    let Some(Started { backend, start, stopped }) = started(&mut sources).await? else {
        return Ok(());
    };
    let live_screen = !args.events && !args.batch && args.format.is_none() && os.stdout_is_terminal;
    let retention = if live_screen {
        Retention { udp_idle: args.udp_idle(), ..Retention::default() }
    } else {
        Retention { closed_intervals: 0, history: 1, udp_idle: args.udp_idle() }
    };
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    sinks.extend(log.map(|log| Box::new(log) as Box<dyn Sink>));
    sinks.extend(exporter.map(|exporter| Box::new(exporter) as Box<dyn Sink>));
    let mut screen = None;
    // Restores the terminal when dropped, after the loop.
    let mut _session = None;
    if args.events {
        sinks.push(Box::new(EventLines::new(os.stdout)));
    } else if live_screen {
        let terminal = (os.open_terminal)()?;
        _session = terminal.session;
        sources.input = Some(terminal.input);
        let header = Header {
            host: os.hostname,
            backend: backend.clone(),
            interval: args.interval(),
            filters: Header::describe(&args.filters()),
        };
        let state = TuiState {
            sort_choice: args.sort.into(),
            reverse: args.reverse,
            raw_bytes: args.bytes,
            names: !args.numeric,
            fold_pairs: args.fold_loopback,
            no_color: os.no_color,
            // The collector wrote it before it reported its start.
            collector_notice: os.collector_notice.lock().unwrap_or_else(|e| e.into_inner()).take(),
            ..TuiState::default()
        };
        let (names, answers) = Names::start(SystemLookup)?;
        sources.resolved = Some(answers);
        let services = Services::read(Path::new("/etc/services"));
        screen = Some(Tui::new(terminal.backend, header, state)?.with_names(names, services));
    } else {
        sinks.extend(stdout_sink(args, os.stdout, os.stdout_is_terminal));
    }
    let model = Model::new(start, retention);
    let mut event_loop =
        EventLoop { sources, collection, model, sinks, screen, backend, count: args.count, finishing: false };
    if stopped {
        event_loop.finish();
    }
    event_loop.run().await
}

/// The collector as it started.
struct Started {
    backend: String,
    start: Duration,
    /// A stop came while the probes loaded: the first interval is also the last.
    stopped: bool,
}

/// Waits for the collector to start: `None` if a second stop came first. Its failure to start
/// ends tcptop before anything is printed.
async fn started(sources: &mut Sources) -> Result<Option<Started>> {
    let mut stopped = false;
    loop {
        match sources.next().await {
            Event::Collected(Collected::Started { backend, at }) => {
                return Ok(Some(Started { backend, start: at, stopped }))
            }
            Event::Collected(Collected::Failed(error)) => return Err(error),
            Event::Stop if stopped => return Ok(None),
            Event::Stop => stopped = true,
            Event::CollectionEnded => bail!("the collection thread stopped"),
            // Nothing else comes before the start.
            Event::Collected(_) | Event::Input(_) | Event::Resolved(_) => {}
        }
    }
}

/// What headless mode prints: the `--format` asked for, text by default, and nothing when
/// tcptop only logs or serves metrics (`--log` or `--prometheus` without --batch or
/// --format, and no terminal).
fn stdout_sink(args: &Args, stdout: Box<dyn Write>, is_terminal: bool) -> Option<Box<dyn Sink>> {
    let format = match args.format {
        Some(format) => format,
        None if (args.log.is_some() || args.prometheus.is_some()) && !args.batch && !is_terminal => {
            return None
        }
        None => Format::Text,
    };
    let query = Query { all: args.all, sort: args.sort.into(), reverse: args.reverse, ..Query::default() };
    let out = BufWriter::new(stdout);
    Some(match format {
        Format::Text => Box::new(BatchTable { out, query }),
        Format::Json => Box::new(RecordSink::new(out, Encoding::JsonLines, query, true)),
        Format::Csv => Box::new(RecordSink::new(out, Encoding::Csv, query, true)),
    })
}

/// The one event loop: each interval goes to the model, then to every sink and the screen;
/// events as they arrive go to the sinks; input goes to the screen, which draws once what
/// queued up is handled. A stop or `q` still records the interval it cut short.
struct EventLoop<B: Backend> {
    sources: Sources,
    collection: CollectionThread,
    model: Model,
    sinks: Vec<Box<dyn Sink>>,
    screen: Option<Tui<B>>,
    backend: String,
    count: Option<u64>,
    /// Whether the collection thread was asked for its last interval.
    finishing: bool,
}

impl<B: Backend> EventLoop<B>
where
    B::Error: Send + Sync + 'static,
{
    async fn run(mut self) -> Result<()> {
        let mut intervals = 0;
        self.draw()?;
        loop {
            let mut next = Some(self.sources.next().await);
            while let Some(event) = next {
                match event {
                    Event::Collected(Collected::Interval(interval)) => {
                        self.record(interval)?;
                        intervals += 1;
                        if self.count == Some(intervals) {
                            return Ok(());
                        }
                    }
                    Event::Collected(Collected::Events { events, wall }) => {
                        for sink in &mut self.sinks {
                            sink.events(&events, &self.backend, wall)?;
                        }
                    }
                    Event::Collected(Collected::Failed(error)) => return Err(error),
                    // Sent once, and taken before the loop.
                    Event::Collected(Collected::Started { .. }) => {}
                    Event::CollectionEnded if self.finishing => return Ok(()),
                    Event::CollectionEnded => bail!("the collection thread stopped"),
                    Event::Input(input) => {
                        if let Some(tui) = &mut self.screen {
                            tui.input(&input, &self.model);
                            if tui.quit() {
                                self.finish();
                            }
                        }
                    }
                    Event::Resolved(answer) => {
                        if let Some(tui) = &mut self.screen {
                            tui.resolved(answer);
                        }
                    }
                    // A second stop does not wait for the last interval.
                    Event::Stop if self.finishing => return Ok(()),
                    Event::Stop => self.finish(),
                }
                next = self.sources.ready().await;
            }
            if !self.finishing {
                self.draw()?;
            }
        }
    }

    fn record(&mut self, interval: Interval) -> Result<()> {
        self.model.update(interval.sample, interval.at);
        self.model.set_cmdlines(interval.cmdlines);
        self.model.set_collection_time(interval.collect_took);
        for sink in &mut self.sinks {
            sink.interval(&self.model, &self.backend, interval.wall)?;
        }
        if let Some(tui) = &mut self.screen {
            tui.interval(&self.model);
        }
        Ok(())
    }

    fn finish(&mut self) {
        if !self.finishing {
            self.finishing = true;
            self.collection.finish();
        }
    }

    fn draw(&mut self) -> Result<()> {
        match &mut self.screen {
            Some(tui) => tui.draw(&self.model),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests;
