//! The collection thread on a scripted collector and a fake clock.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::UNIX_EPOCH;

use tokio::sync::mpsc::unbounded_channel;

use super::*;
use crate::model::conn::test_conn;
use crate::model::{EventKind, Overflow};
use crate::testing::{FakeClock, Scripted};

fn conn(id: u64, rx: u64) -> crate::model::Conn {
    test_conn(id, 7, "curl", ("127.0.0.1:40000", "127.0.0.1:443"), (rx, 0))
}

fn closed(id: u64, at_ms: u64) -> ConnEvent {
    ConnEvent { at: Duration::from_millis(at_ms), kind: EventKind::Closed, conn: conn(id, 1) }
}

fn reading(events: Vec<ConnEvent>, conns: Vec<crate::model::Conn>, lost_events: u64) -> Sample {
    Sample { conns, events, overflow: Overflow { lost_events, ..Overflow::default() }, unchanged: None }
}

/// A script whose first read, before the first interval, finds nothing: each of `samples`
/// is then an interval's read.
fn scripted(clock: &Arc<FakeClock>, samples: impl IntoIterator<Item = Sample>) -> Scripted {
    Scripted::new(Arc::clone(clock), std::iter::once(Sample::nothing_changed()).chain(samples))
}

fn spawn(
    collector: impl Collector + Send + 'static,
    clock: Arc<FakeClock>,
    schedule: Schedule,
) -> (CollectionThread, Reports) {
    let (sender, receiver) = reports();
    let open: CollectorFactory = Box::new(move || Ok(Box::new(collector) as Box<dyn Collector>));
    let thread = CollectionThread::spawn(open, Box::new(|_| None), clock, schedule, sender).unwrap();
    (thread, receiver)
}

#[test]
fn merging_keeps_every_event_in_order_and_the_newest_table_and_counters() {
    let earlier = reading(vec![closed(1, 1), closed(2, 2)], vec![conn(3, 10), conn(4, 5)], 1);
    let later = reading(vec![closed(3, 3)], vec![conn(4, 9)], 2);
    assert_eq!(
        merge(earlier, later),
        reading(vec![closed(1, 1), closed(2, 2), closed(3, 3)], vec![conn(4, 9)], 2)
    );
    assert_eq!(merge(Sample::default(), reading(vec![], vec![conn(4, 9)], 0)).conns, [conn(4, 9)]);
}

#[test]
fn merging_a_partial_sample_updates_the_earlier_table() {
    let changes = |conns, unchanged| Sample { unchanged: Some(unchanged), ..reading(vec![], conns, 0) };
    let complete = reading(vec![], vec![conn(3, 10), conn(4, 5)], 0);
    // A complete table updated by changes is complete.
    assert_eq!(
        merge(complete, changes(vec![conn(4, 9)], 1)),
        reading(vec![], vec![conn(3, 10), conn(4, 9)], 0)
    );
    // Changes on changes: what the later left out, but the earlier listed, is no longer left out.
    let merged = merge(changes(vec![conn(3, 10)], 5), changes(vec![conn(4, 9)], 6));
    assert_eq!((merged.conns, merged.unchanged), (vec![conn(3, 10), conn(4, 9)], Some(5)));
    // Before any read nothing changed: the later's changes stay changes.
    let merged = merge(Sample::nothing_changed(), changes(vec![conn(4, 9)], 2));
    assert_eq!((merged.conns, merged.unchanged), (vec![conn(4, 9)], Some(2)));
}

#[test]
fn the_table_is_read_every_max_gap_and_one_merged_sample_sent_per_interval() {
    let clock = Arc::new(FakeClock::default());
    let samples = [
        reading(vec![closed(1, 900)], vec![conn(5, 10)], 0),
        reading(vec![closed(2, 1_900)], vec![conn(5, 20)], 1),
        reading(vec![closed(3, 2_900)], vec![conn(5, 30)], 2),
    ];
    let mut collector = scripted(&clock, samples);
    collector.max_gap = Some(Duration::from_secs(1));
    collector.events.push_back(closed(4, 1_500));
    let (collecting, mut collects) = unbounded_channel();
    collector.collecting = Some(collecting);
    let schedule = Schedule { interval: Duration::from_secs(3), live_events: false, intervals: None };
    let (_thread, mut received) = spawn(collector, Arc::clone(&clock), schedule);
    assert!(matches!(received.blocking_recv(), Some(Collected::Started { at: Duration::ZERO, .. })));
    let Some(Collected::Interval(interval)) = received.blocking_recv() else { panic!("no interval") };
    let ids: Vec<u64> = interval.sample.events.iter().map(|event| event.conn.id).collect();
    assert_eq!(ids, [1, 4, 2, 3]);
    assert_eq!(interval.sample.conns, [conn(5, 30)]);
    assert_eq!(interval.sample.overflow.lost_events, 2);
    assert_eq!((interval.at, interval.wall), (Duration::from_secs(3), UNIX_EPOCH + Duration::from_secs(3)));
    // The first read at the start, before the interval.
    let times: Vec<u64> = (0..4).map(|_| collects.blocking_recv().unwrap().as_secs()).collect();
    assert_eq!(times, [0, 1, 2, 3]);
}

/// A scripted collector whose table reads take `took` on the fake clock, one after another,
/// the last of them for every read after.
struct SlowReads {
    script: Scripted,
    took: Vec<Duration>,
    reads: usize,
}

impl Collector for SlowReads {
    fn backend(&self) -> &str {
        self.script.backend()
    }

    fn collect(&mut self) -> Result<Sample> {
        self.script.clock.advance(self.took[self.reads.min(self.took.len() - 1)]);
        self.reads += 1;
        self.script.collect()
    }

    fn wait_events(&mut self, timeout: Duration) -> Result<Vec<ConnEvent>> {
        self.script.wait_events(timeout)
    }
}

#[test]
fn each_interval_carries_how_long_its_table_read_took() {
    let clock = Arc::new(FakeClock::default());
    let script = scripted(&clock, [reading(vec![], vec![conn(1, 10)], 0)]);
    let collector = SlowReads { script, took: vec![Duration::from_millis(40)], reads: 0 };
    let schedule = Schedule { interval: Duration::from_secs(1), live_events: false, intervals: None };
    let (_thread, mut received) = spawn(collector, clock, schedule);
    let Some(Collected::Started { at, .. }) = received.blocking_recv() else { panic!("no start") };
    assert_eq!(at, Duration::from_millis(40), "the first interval starts once the first read is done");
    let Some(Collected::Interval(interval)) = received.blocking_recv() else { panic!("no interval") };
    assert_eq!(
        (interval.at, interval.collect_took),
        (Duration::from_millis(1_040), Duration::from_millis(40))
    );
}

#[test]
fn a_slow_first_read_stretches_no_interval() {
    let clock = Arc::new(FakeClock::default());
    // The first read decodes a big host's every connection; later ones only what changed.
    let tables = (1..=3).map(|rx| reading(vec![], vec![conn(1, rx)], 0));
    let took = vec![Duration::from_secs(3), Duration::from_millis(10)];
    let collector = SlowReads { script: scripted(&clock, tables), took, reads: 0 };
    let schedule = Schedule { interval: Duration::from_secs(1), live_events: false, intervals: None };
    let (_thread, mut received) = spawn(collector, clock, schedule);
    let Some(Collected::Started { at, .. }) = received.blocking_recv() else { panic!("no start") };
    let mut ends = vec![at];
    while ends.len() < 4 {
        let Some(Collected::Interval(interval)) = received.blocking_recv() else { panic!("no interval") };
        ends.push(interval.at);
    }
    assert_eq!(ends, [3_000, 4_000, 5_000, 6_000].map(Duration::from_millis));
}

#[test]
fn finishing_sends_the_interval_so_far_and_ends_the_thread() {
    let clock = Arc::new(FakeClock::default());
    let collector = scripted(&clock, [reading(vec![], vec![conn(1, 10)], 0)]);
    let schedule = Schedule { interval: Duration::from_secs(1), live_events: true, intervals: None };
    let (thread, mut received) = spawn(collector, clock, schedule);
    assert!(matches!(received.blocking_recv(), Some(Collected::Started { .. })));
    assert!(matches!(received.blocking_recv(), Some(Collected::Interval(_))));
    thread.finish();
    let Some(Collected::Interval(last)) = received.blocking_recv() else { panic!("no last interval") };
    assert_eq!((last.at, last.sample.conns), (Duration::from_secs(1), vec![conn(1, 10)]));
    assert!(received.blocking_recv().is_none());
}

/// A collector whose reads list connection 1 with 1, 2 and 3 bytes read, and whose last read
/// (collect_last) 99.
fn three_tables_then_a_last(clock: &Arc<FakeClock>) -> Scripted {
    let tables = (1..=3).map(|rx| reading(vec![], vec![conn(1, rx)], 0));
    let mut collector = scripted(clock, tables);
    collector.last_read = Some(reading(vec![], vec![conn(1, 99)], 0));
    collector
}

#[test]
fn the_thread_ends_after_the_intervals_asked_for() {
    let clock = Arc::new(FakeClock::default());
    let collector = three_tables_then_a_last(&clock);
    let schedule = Schedule { interval: Duration::from_secs(1), live_events: false, intervals: Some(2) };
    let (_thread, mut received) = spawn(collector, clock, schedule);
    assert!(matches!(received.blocking_recv(), Some(Collected::Started { .. })));
    for rx in [1, 99] {
        let Some(Collected::Interval(interval)) = received.blocking_recv() else { panic!("no interval") };
        assert_eq!(interval.sample.conns, [conn(1, rx)], "the last one read by collect_last");
    }
    assert!(received.blocking_recv().is_none(), "no third read");
}

#[test]
fn no_table_is_read_until_the_loop_took_the_interval_before() {
    let clock = Arc::new(FakeClock::default());
    let mut collector = three_tables_then_a_last(&clock);
    let (collecting, mut reads) = unbounded_channel();
    collector.collecting = Some(collecting);
    let schedule = Schedule { interval: Duration::from_secs(1), live_events: false, intervals: None };
    let (thread, mut received) = spawn(collector, clock, schedule);
    assert!(matches!(received.blocking_recv(), Some(Collected::Started { .. })));
    // The first read, then the first interval's, whose interval nobody takes yet.
    assert_eq!([reads.blocking_recv(), reads.blocking_recv()], [0, 1].map(|s| Some(Duration::from_secs(s))));
    thread.finish();
    // The next read, once it was taken, is the last (by the next interval's end).
    for (at, rx) in [(1, 1), (2, 99)] {
        let Some(Collected::Interval(interval)) = received.blocking_recv() else { panic!("no interval") };
        assert!(interval.at <= Duration::from_secs(at), "{:?}", interval.at);
        assert_eq!(interval.sample.conns, [conn(1, rx)]);
    }
    assert!(received.blocking_recv().is_none());
    assert!(reads.try_recv().is_err(), "a table read with collect, not collect_last");
}

#[test]
fn the_last_interval_is_read_with_collect_last() {
    let clock = Arc::new(FakeClock::default());
    let mut collector = scripted(&clock, [reading(vec![], vec![conn(1, 10)], 0)]);
    collector.last_read = Some(reading(vec![], vec![conn(1, 25)], 0));
    let schedule = Schedule { interval: Duration::from_secs(1), live_events: false, intervals: None };
    let (thread, mut received) = spawn(collector, clock, schedule);
    assert!(matches!(received.blocking_recv(), Some(Collected::Started { .. })));
    let Some(Collected::Interval(first)) = received.blocking_recv() else { panic!("no interval") };
    assert_eq!(first.sample.conns, vec![conn(1, 10)]);
    thread.finish();
    let Some(Collected::Interval(last)) = received.blocking_recv() else { panic!("no last interval") };
    assert_eq!(last.sample.conns, vec![conn(1, 25)]);
}

#[test]
fn live_events_are_sent_as_they_arrive_and_again_with_their_interval() {
    let clock = Arc::new(FakeClock::default());
    let mut collector = scripted(&clock, [reading(vec![closed(2, 1_000)], vec![], 0)]);
    collector.events.push_back(closed(1, 300));
    let schedule = Schedule { interval: Duration::from_secs(1), live_events: true, intervals: None };
    let (_thread, mut received) = spawn(collector, clock, schedule);
    let mut order = Vec::new();
    while order.len() < 4 {
        match received.blocking_recv().unwrap() {
            Collected::Started { .. } => order.push("started".to_string()),
            Collected::Events { events, wall } => order.push(format!(
                "events {} at {:?}",
                events[0].conn.id,
                wall.duration_since(UNIX_EPOCH).unwrap()
            )),
            Collected::Interval(interval) => {
                order.push(format!("interval of {}", interval.sample.events.len()))
            }
            Collected::Failed(error) => panic!("{error:#}"),
        }
    }
    assert_eq!(order, ["started", "events 1 at 300ms", "events 2 at 1s", "interval of 2"]);
}

#[test]
fn a_collector_that_cannot_open_says_why() {
    let (sender, mut received) = reports();
    let open: CollectorFactory = Box::new(|| anyhow::bail!("needs root"));
    let schedule = Schedule { interval: Duration::from_secs(1), live_events: false, intervals: None };
    let _thread =
        CollectionThread::spawn(open, Box::new(|_| None), Arc::new(FakeClock::default()), schedule, sender)
            .unwrap();
    let Some(Collected::Failed(error)) = received.blocking_recv() else { panic!("no failure") };
    assert_eq!(error.to_string(), "needs root");
}

#[test]
fn command_lines_are_read_once_per_process() {
    let reads = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&reads);
    let mut cmdlines = CommandLines::new(Box::new(move |pid| {
        counted.fetch_add(1, Ordering::Relaxed);
        (pid == 7).then(|| "curl -O https://example.com/big.iso".to_string())
    }));
    let other = crate::model::Conn { pid: Some(8), comm: "sshd".into(), ..conn(2, 0) };
    let sample = reading(vec![closed(3, 1)], vec![conn(1, 0), other], 0);
    for _ in 0..3 {
        let found = cmdlines.of(&sample);
        assert_eq!(found, HashMap::from([(7, "curl -O https://example.com/big.iso".to_string())]));
    }
    assert_eq!(reads.load(Ordering::Relaxed), 2);
}
