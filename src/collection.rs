//! The collection thread: builds the collector inside it (the eBPF one is not `Send`),
//! drains its lifecycle events as they come, reads its table at least as often as the
//! collector needs, and hands the event loop one merged sample per display interval, with
//! the command lines of its processes. The screen never waits for it; it waits for the
//! loop to take one interval before it sends the next.

use std::collections::{HashMap, HashSet};
use std::mem;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::Arc;
use std::thread::{self, Thread};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use crate::cache::BoundedCache;
use crate::collector::Collector;
use crate::model::{Conn, ConnEvent, Sample};
use crate::os::{Clock, CmdlineReader, CollectorFactory};

/// How late a request to finish is noticed while the collector waits for events.
const FINISH_CHECK: Duration = Duration::from_millis(100);
/// Processes whose command lines are remembered per cache generation.
const CMDLINE_GENERATION: usize = 4_096;

/// What the collection thread tells the event loop.
#[derive(Debug)]
pub enum Collected {
    /// The collector is running and read its first table: `backend` names it; its first
    /// interval starts at `at`.
    Started { backend: String, at: Duration },
    /// Lifecycle events as they arrived, sent only when the loop asked for them.
    Events { events: Vec<ConnEvent>, wall: SystemTime },
    /// A display interval ended.
    Interval(Interval),
    /// Opening or reading the collector failed; the thread is done.
    Failed(anyhow::Error),
}

/// The thread's end of its reports to the event loop.
pub struct Reporter {
    out: UnboundedSender<Collected>,
    /// A message for each interval the loop took.
    taken: Receiver<()>,
    /// Intervals sent that the loop has not taken yet.
    untaken: u64,
}

impl Reporter {
    /// Sends `report`; false once the loop is gone.
    pub(crate) fn send(&mut self, report: Collected) -> bool {
        if matches!(report, Collected::Interval(_)) {
            self.untaken += 1;
        }
        self.out.send(report).is_ok()
    }

    /// Waits up to `timeout` for the loop to take every interval sent; false while one waits.
    /// A loop slower than the interval (a table of a million rows into a slow pipe) so gets
    /// longer intervals, not a queue that grows and that a stop would wait behind.
    fn all_taken(&mut self, timeout: Duration) -> bool {
        while self.untaken > 0 {
            match self.taken.recv_timeout(timeout) {
                Ok(()) => self.untaken -= 1,
                Err(RecvTimeoutError::Timeout) => return false,
                // The loop is gone: the next send says so.
                Err(RecvTimeoutError::Disconnected) => return true,
            }
        }
        true
    }
}

/// The event loop's end of the thread's reports.
pub struct Reports {
    reports: UnboundedReceiver<Collected>,
    taken: Sender<()>,
}

impl Reports {
    /// The next report; `None` once the thread is gone.
    pub async fn recv(&mut self) -> Option<Collected> {
        let report = self.reports.recv().await;
        self.taken(report)
    }

    /// The same, outside the runtime.
    pub fn blocking_recv(&mut self) -> Option<Collected> {
        let report = self.reports.blocking_recv();
        self.taken(report)
    }

    fn taken(&self, report: Option<Collected>) -> Option<Collected> {
        if matches!(report, Some(Collected::Interval(_))) {
            // A thread that is gone needs no answer.
            let _ = self.taken.send(());
        }
        report
    }
}

/// A channel for the thread's reports.
pub fn reports() -> (Reporter, Reports) {
    let (out, reports) = unbounded_channel();
    let (taken_sender, taken) = mpsc::channel();
    (Reporter { out, taken, untaken: 0 }, Reports { reports, taken: taken_sender })
}

/// One display interval's readings, merged.
#[derive(Debug)]
pub struct Interval {
    pub sample: Sample,
    /// The command lines of the processes in `sample`, where known.
    pub cmdlines: HashMap<u32, String>,
    /// When it ended, on the clock's monotonic time and on the wall.
    pub at: Duration,
    pub wall: SystemTime,
    /// How long the table read and decode that ended it took, on the clock.
    pub collect_took: Duration,
}

/// When the thread reports.
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    /// The display interval.
    pub interval: Duration,
    /// Whether to send `Collected::Events` as events arrive (`--events`).
    pub live_events: bool,
    /// The intervals to send before the thread ends (`COUNT`); `None`: until asked to finish.
    pub intervals: Option<u64>,
}

/// The running thread. Dropping it stops the thread without a last interval.
pub struct CollectionThread {
    finish: Sender<()>,
    thread: Thread,
}

impl CollectionThread {
    /// Starts the thread, which first builds its collector with `open`.
    pub fn spawn(
        open: CollectorFactory,
        read_cmdline: CmdlineReader,
        clock: Arc<dyn Clock>,
        schedule: Schedule,
        mut out: Reporter,
    ) -> Result<CollectionThread> {
        let (finish, finish_requests) = mpsc::channel();
        let handle = thread::Builder::new()
            .name("tcptop-collect".into())
            .spawn(move || {
                let collector = match open() {
                    Ok(collector) => collector,
                    Err(error) => {
                        out.send(Collected::Failed(error));
                        return;
                    }
                };
                let mut run = Run {
                    collector,
                    cmdlines: CommandLines::new(read_cmdline),
                    clock: &*clock,
                    schedule,
                    finish_requests,
                    finishing: false,
                    out: &mut out,
                };
                if let Err(error) = run.collect_until_finished() {
                    out.send(Collected::Failed(error));
                }
            })
            .context("starting the collection thread")?;
        Ok(CollectionThread { finish, thread: handle.thread().clone() })
    }

    /// Asks for the interval so far: the thread sends it as its last and ends.
    pub fn finish(&self) {
        let _ = self.finish.send(());
        // A collector waiting by parking (a test's) notices at once.
        self.thread.unpark();
    }
}

impl Drop for CollectionThread {
    fn drop(&mut self) {
        self.thread.unpark();
    }
}

struct Run<'a> {
    collector: Box<dyn Collector>,
    cmdlines: CommandLines,
    clock: &'a dyn Clock,
    schedule: Schedule,
    finish_requests: Receiver<()>,
    /// The loop asked for the last interval (each request is received once).
    finishing: bool,
    out: &'a mut Reporter,
}

impl Run<'_> {
    /// Until asked to finish (after the last interval) or the loop is gone.
    fn collect_until_finished(&mut self) -> Result<()> {
        // The first read lists every connection, which on a big host takes long (each one
        // decoded, owners looked up): it is the first interval's starting table, read before
        // that interval starts, so that every interval is as long as asked, the first too.
        let mut pending = self.collector.collect()?;
        let start = self.clock.now();
        let backend = self.collector.backend().to_string();
        if !self.out.send(Collected::Started { backend, at: start }) {
            return Ok(());
        }
        self.send_live(&pending.events);
        let max_gap = self.collector.max_collect_gap();
        let interval = self.schedule.interval;
        let mut interval_end = start + interval;
        let mut collected_at = start;
        let mut intervals_sent = 0;
        loop {
            let Some(finishing) = self.finish_asked() else { return Ok(()) };
            let now = self.clock.now();
            if finishing || now >= interval_end {
                // The loop takes each interval before the next is read: a loop slower than the
                // interval (a table of a million rows into a slow pipe) gets longer intervals,
                // not a queue that grows and that a stop would wait behind.
                while !self.out.all_taken(FINISH_CHECK) {
                    if self.finish_asked().is_none() {
                        return Ok(());
                    }
                }
                let Some(finishing) = self.finish_asked() else { return Ok(()) };
                let now = self.clock.now();
                let last = finishing || self.schedule.intervals == Some(intervals_sent + 1);
                let sample = if last { self.collector.collect_last()? } else { self.collector.collect()? };
                let collect_took = self.clock.now().saturating_sub(now);
                collected_at = now;
                self.send_live(&sample.events);
                let sample = merge(mem::replace(&mut pending, Sample::nothing_changed()), sample);
                let cmdlines = self.cmdlines.of(&sample);
                let wall = self.clock.wall();
                let ended = Interval { sample, cmdlines, at: now, wall, collect_took };
                let sent = self.out.send(Collected::Interval(ended));
                intervals_sent += 1;
                if !sent || last {
                    return Ok(());
                }
                // A collection slower than the interval, or a stop (SIGSTOP), skips the ends
                // it missed, and the next interval is a whole one from this one's end.
                let after = self.clock.now();
                interval_end += interval;
                if interval_end <= after {
                    interval_end = now + interval;
                    while interval_end <= after {
                        interval_end += interval;
                    }
                }
            } else if max_gap.is_some_and(|gap| now >= collected_at + gap) {
                let events = self.collector.refresh()?;
                collected_at = now;
                self.send_live(&events);
                pending.events.extend(events);
            }
            let next_collect = max_gap.map_or(interval_end, |gap| interval_end.min(collected_at + gap));
            let timeout = next_collect.saturating_sub(self.clock.now()).min(FINISH_CHECK);
            let arrived = self.collector.wait_events(timeout)?;
            self.send_live(&arrived);
            pending.events.extend(arrived);
        }
    }

    /// Whether the loop asked for the last interval, now or before; `None` once it is gone.
    fn finish_asked(&mut self) -> Option<bool> {
        match self.finish_requests.try_recv() {
            Ok(()) => self.finishing = true,
            Err(TryRecvError::Empty) => {}
            Err(TryRecvError::Disconnected) => return None,
        }
        Some(self.finishing)
    }

    fn send_live(&mut self, events: &[ConnEvent]) {
        if self.schedule.live_events && !events.is_empty() {
            // A loop that is gone stops the thread at the interval's end.
            self.out.send(Collected::Events { events: events.to_vec(), wall: self.clock.wall() });
        }
    }
}

/// Two readings of one display interval as one: the events of both in order, the overflow
/// counters of the later (they are cumulative), and the table as of the later: the later's if
/// complete, else the earlier's rows updated by the later's changes (complete if the earlier
/// was).
pub fn merge(earlier: Sample, later: Sample) -> Sample {
    let complete = later.is_complete();
    let mut events = earlier.events;
    events.extend(later.events);
    if complete || earlier.conns.is_empty() {
        // Nothing of the earlier table to keep (the usual case: one read per interval).
        let unchanged = earlier.unchanged.and(later.unchanged);
        return Sample { events, unchanged, ..later };
    }
    let changed: HashSet<u64> = later.conns.iter().map(|conn| conn.id).collect();
    let mut conns: Vec<Conn> = earlier.conns.into_iter().filter(|conn| !changed.contains(&conn.id)).collect();
    // What the later left out as unchanged, less the earlier's rows that now list it.
    let unchanged = earlier.unchanged.and(later.unchanged).map(|n| n.saturating_sub(conns.len() as u64));
    conns.extend(later.conns);
    Sample { conns, events, overflow: later.overflow, unchanged }
}

/// The command lines of the processes in each sample, each read once while it is seen.
struct CommandLines {
    /// By pid and comm: a pid reused by another program is read again.
    known: BoundedCache<(u32, String), Option<String>>,
    read: CmdlineReader,
}

impl CommandLines {
    fn new(read: CmdlineReader) -> CommandLines {
        CommandLines { known: BoundedCache::new(CMDLINE_GENERATION), read }
    }

    fn of(&mut self, sample: &Sample) -> HashMap<u32, String> {
        let conns = sample.conns.iter().chain(sample.events.iter().map(|event| &event.conn));
        let mut processes: HashMap<u32, &str> = HashMap::new();
        // A process's connections mostly come one after another: each run is hashed once.
        let mut previous = None;
        for owner in conns.filter_map(|conn| Some((conn.pid?, &*conn.comm))) {
            if previous != Some(owner) {
                processes.insert(owner.0, owner.1);
                previous = Some(owner);
            }
        }
        let mut cmdlines = HashMap::new();
        for (pid, comm) in processes {
            let key = (pid, comm.to_string());
            let cmdline = match self.known.get(&key) {
                Some(known) => known.clone(),
                None => {
                    let read = (self.read)(pid);
                    self.known.insert(key, read.clone());
                    read
                }
            };
            cmdlines.extend(cmdline.map(|cmdline| (pid, cmdline)));
        }
        cmdlines
    }
}

#[cfg(test)]
mod tests;
