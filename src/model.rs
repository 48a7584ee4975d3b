//! The pure model: turns collector samples into a connection table with per-interval bytes,
//! rates and totals, and sorts and filters it. No I/O, no platform code; time is an argument.

pub mod conn;
pub mod filter;
pub mod group;
pub mod history;
mod table;

use std::cmp::{Ordering, Reverse};
use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::mem;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

pub use conn::{
    Conn, ConnEvent, EventKind, Handshake, Overflow, Proto, Rtt, Sample, TcpHealth, TcpState,
    DEFAULT_UDP_IDLE,
};
pub use filter::{Filter, FilterError};
pub use history::History;
pub(crate) use table::ById;
use table::{Slot, Table};

/// How long the model remembers things.
#[derive(Clone, Copy, Debug)]
pub struct Retention {
    /// Intervals a closed connection stays in the table after the one it closed in.
    pub closed_intervals: u32,
    /// Per-interval byte counts kept per connection (for sparklines).
    pub history: usize,
    /// How long a UDP flow without traffic stays in the table, once its collector has
    /// stopped reporting it.
    pub udp_idle: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention { closed_intervals: 3, history: 60, udp_idle: DEFAULT_UDP_IDLE }
    }
}

/// A connection in the table, with what happened to it in the last interval.
#[derive(Clone, Debug, PartialEq)]
pub struct ConnRow {
    /// The connection as last seen; its byte fields are totals.
    pub conn: Conn,
    /// Bytes read and written in the last interval.
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// Bytes per second over the last interval.
    pub rx_rate: f64,
    pub tx_rate: f64,
    /// Segments retransmitted in the last interval (see `retransmits`).
    retrans: u64,
    /// Per-interval bytes, oldest first, at most `Retention::history` long.
    pub rx_history: History,
    pub tx_history: History,
    /// Per-interval smoothed RTT in µs (0: unknown), oldest first, as long as the byte
    /// histories once the connection's RTT was first known.
    pub rtt_history: History,
    /// Lifecycle events of this connection, oldest first (state changes, then the close).
    pub events: Vec<ConnEvent>,
    /// How many of `events` happened in the last interval.
    pub new_events: usize,
    /// When the model first saw the connection.
    pub first_seen: Duration,
    /// When bytes last moved (or, until they do, when the model first saw the connection).
    pub last_traffic: Duration,
    /// Whether the connection first appeared in the last interval.
    pub opened: bool,
    /// Updates since the close, if closed (0: it closed in the last interval).
    pub closed_for: Option<u32>,
    /// Intervals in a row that ended with no bytes moved: once the whole history is such
    /// intervals, an update that leaves the row out changes nothing in it.
    quiet_intervals: u32,
    /// The pid this row counts for in `Model::pids`.
    counted_pid: Option<u32>,
    /// The numbers of the updates that last visited the row and whose sample listed it:
    /// marks on the row, not sets of ids, so that an active row costs no extra hashing.
    visited_in: u64,
    listed_in: u64,
}

impl ConnRow {
    fn new(conn: Conn, now: Duration) -> ConnRow {
        ConnRow {
            conn,
            rx_bytes: 0,
            tx_bytes: 0,
            rx_rate: 0.0,
            tx_rate: 0.0,
            retrans: 0,
            rx_history: History::default(),
            tx_history: History::default(),
            rtt_history: History::default(),
            events: Vec::new(),
            new_events: 0,
            first_seen: now,
            last_traffic: now,
            opened: true,
            closed_for: None,
            quiet_intervals: 0,
            counted_pid: None,
            visited_in: 0,
            listed_in: 0,
        }
    }

    /// The row of a connection first seen at `now` in `conn`: all its bytes and retransmits
    /// so far count in the current interval, as a blank row absorbing `conn` would count them.
    fn first_seen(conn: Conn, now: Duration) -> ConnRow {
        let (rx_bytes, tx_bytes) = (conn.rx_bytes, conn.tx_bytes);
        let retrans = conn.health.and_then(|h| h.retrans).unwrap_or(0);
        ConnRow { rx_bytes, tx_bytes, retrans, ..ConnRow::new(conn, now) }
    }

    /// What happened in the interval before is over: its counts start again from zero.
    fn start_interval(&mut self) {
        self.rx_bytes = 0;
        self.tx_bytes = 0;
        self.retrans = 0;
        self.new_events = 0;
        self.opened = false;
        if let Some(n) = self.closed_for.as_mut() {
            *n += 1;
        }
    }

    /// Ends the interval of `secs` seconds at `now`: rates, history, the last traffic.
    fn end_interval(&mut self, secs: f64, history: usize, now: Duration) {
        (self.rx_rate, self.tx_rate) =
            if secs > 0.0 { (self.rx_bytes as f64 / secs, self.tx_bytes as f64 / secs) } else { (0.0, 0.0) };
        self.rx_history.push(self.rx_bytes, history);
        self.tx_history.push(self.tx_bytes, history);
        let rtt = self.conn.health.and_then(|h| h.rtt).map(|rtt| u64::from(rtt.smoothed_us));
        if rtt.is_some() || !self.rtt_history.is_empty() {
            self.rtt_history.push(rtt.unwrap_or(0), history);
        }
        if self.rx_bytes > 0 || self.tx_bytes > 0 {
            self.last_traffic = now;
            self.quiet_intervals = 0;
        } else {
            self.quiet_intervals = self.quiet_intervals.saturating_add(1);
        }
    }

    /// Puts the row (in `slot`) on `visits` of update `update`, once.
    fn visit(&mut self, slot: Slot, update: u64, visits: &mut Vec<Slot>) {
        if self.visited_in != update {
            self.visited_in = update;
            visits.push(slot);
        }
    }

    /// Whether updates may leave the row alone until a sample or an event names it: an open
    /// TCP connection with nothing in its last interval and only zeros in its history (a UDP
    /// flow times out, a closed row leaves). Its history then stops growing: a shorter one
    /// moved nothing before it starts, so its rates and sums read the same.
    fn is_settled(&self) -> bool {
        self.conn.proto == Proto::Tcp
            && !self.is_closed()
            && !self.is_active()
            && self.quiet_intervals as usize >= self.rx_history.len().max(1)
    }

    /// Takes newer totals, crediting the growth to the current interval. The health figures
    /// are the newer record's, but for the retransmit total, which only grows.
    fn absorb(&mut self, conn: Conn) {
        self.rx_bytes += conn.rx_bytes.saturating_sub(self.conn.rx_bytes);
        self.tx_bytes += conn.tx_bytes.saturating_sub(self.conn.tx_bytes);
        let retrans = |c: &Conn| c.health.and_then(|h| h.retrans);
        let (known, newer) = (retrans(&self.conn), retrans(&conn));
        self.retrans += newer.unwrap_or(0).saturating_sub(known.unwrap_or(0));
        let rx = self.conn.rx_bytes.max(conn.rx_bytes);
        let tx = self.conn.tx_bytes.max(conn.tx_bytes);
        let health = conn.health.map(|h| TcpHealth { retrans: newer.max(known), ..h });
        self.conn = Conn { rx_bytes: rx, tx_bytes: tx, health, ..conn };
    }

    /// Segments retransmitted in the last interval, where the collector knows the total.
    pub fn retransmits(&self) -> Option<u64> {
        self.conn.health?.retrans.map(|_| self.retrans)
    }

    /// Whether anything happened to the connection in the last interval.
    pub fn is_active(&self) -> bool {
        self.rx_bytes > 0 || self.tx_bytes > 0 || self.retrans > 0 || self.new_events > 0 || self.opened
    }

    pub fn is_closed(&self) -> bool {
        self.closed_for.is_some()
    }

    /// Marks the connection closed in the current interval.
    fn close(&mut self) {
        self.show_closed_state();
        self.closed_for = Some(0);
    }

    /// A closed TCP connection shows CLOSE whatever state its last record had; UDP has none.
    fn show_closed_state(&mut self) {
        self.conn.state = Some(TcpState::Close).filter(|_| self.conn.state.is_some());
    }

    /// The event that happened in the last interval and best describes it:
    /// "opened", "closed" or "state".
    pub fn event_label(&self) -> Option<&'static str> {
        if self.closed_for == Some(0) {
            Some("closed")
        } else if self.opened {
            Some("opened")
        } else if self.new_events > 0 {
            Some("state")
        } else {
            None
        }
    }
}

/// The connection table.
/// Cloned to freeze what a paused display shows while collection goes on.
#[derive(Clone, Debug)]
pub struct Model {
    rows: Table,
    /// The slots of the rows the next update visits, in memory order: every row but the
    /// settled ones (`is_settled`), so that on a host of many idle connections an update
    /// costs what the active ones do.
    busy: Vec<Slot>,
    /// Updates applied so far.
    updates: u64,
    /// The sum of the rows' rates (settled rows have none).
    total_rates: (f64, f64),
    /// Rows per pid, which `set_cmdlines` keeps the command lines of without a pass over
    /// every row.
    pids: HashMap<u32, usize, ById>,
    retention: Retention,
    last_update: Duration,
    elapsed: Duration,
    overflow: Overflow,
    /// How long the collector took to read and decode the last sample.
    collection_time: Duration,
    /// The command lines of the processes in the table, where the collection side knew them.
    cmdlines: HashMap<u32, String>,
    /// Whether a sample was applied: the first one also lists connections older than tcptop.
    updated: bool,
    /// The length of each interval of the rows' histories, oldest first, as long as they.
    intervals: VecDeque<Duration>,
}

impl Model {
    /// An empty table whose first interval starts at `start`.
    pub fn new(start: Duration, retention: Retention) -> Model {
        Model {
            rows: Table::default(),
            busy: Vec::new(),
            updates: 0,
            total_rates: (0.0, 0.0),
            pids: HashMap::default(),
            retention,
            last_update: start,
            elapsed: Duration::ZERO,
            overflow: Overflow::default(),
            collection_time: Duration::ZERO,
            cmdlines: HashMap::new(),
            updated: false,
            intervals: VecDeque::new(),
        }
    }

    /// Takes in the command lines that came with the last sample; those of processes no
    /// longer in the table are forgotten.
    pub fn set_cmdlines(&mut self, cmdlines: HashMap<u32, String>) {
        self.cmdlines.extend(cmdlines);
        self.cmdlines.retain(|pid, _| self.pids.contains_key(pid));
    }

    /// Takes in how long the collection of the last sample took, as the collection side
    /// measured it.
    pub fn set_collection_time(&mut self, took: Duration) {
        self.collection_time = took;
    }

    /// How long the collection of the last sample took.
    pub fn collection_time(&self) -> Duration {
        self.collection_time
    }

    /// The command line of `pid`, when known.
    pub fn cmdline(&self, pid: u32) -> Option<&str> {
        self.cmdlines.get(&pid).map(String::as_str)
    }

    /// Applies a sample taken at `now`, which ends the current interval. It visits the rows
    /// the last update left busy and those the sample names (all rows only for a complete
    /// sample's closes): a settled row keeps its totals and its zero rates untouched.
    pub fn update(&mut self, sample: Sample, now: Duration) {
        let keep = self.retention.closed_intervals;
        let complete = sample.is_complete();
        self.updates += 1;
        let update = self.updates;
        let mut visits = Vec::with_capacity(self.busy.len() + sample.conns.len());
        if complete {
            // A first sample of a million connections grows the map once, not twenty times.
            self.rows.reserve(sample.conns.len().saturating_sub(self.rows.len()));
        }
        for slot in mem::take(&mut self.busy) {
            let row = self.rows.at_mut(slot);
            if row.closed_for.is_some_and(|n| n >= keep) {
                let counted = row.counted_pid;
                self.rows.remove(slot);
                count_pid(&mut self.pids, counted, None);
                continue;
            }
            row.start_interval();
            row.visit(slot, update, &mut visits);
        }
        for event in sample.events {
            let (slot, row) = row_for(&mut self.rows, &event.conn, now);
            row.visit(slot, update, &mut visits);
            let closed_before = row.is_closed();
            row.absorb(event.conn.clone());
            if closed_before {
                // The table showed the close first (see below): the event only brings the
                // final totals, not a second close.
                row.show_closed_state();
            } else {
                match event.kind {
                    EventKind::State { new, .. } => row.conn.state = Some(new),
                    EventKind::Closed => row.close(),
                }
                row.new_events += 1;
            }
            row.events.push(event);
        }
        // The rows' slots looked up in one pass, in which many lookups wait on memory at once.
        let known: Vec<Option<Slot>> = sample.conns.iter().map(|conn| self.rows.slot(conn.id)).collect();
        // Rows the sample listed, once each: when they are all the table's, no row is left to
        // close below.
        let mut listed = 0;
        for (conn, known) in sample.conns.into_iter().zip(known) {
            let (slot, row, conn) = match known {
                Some(slot) => (slot, self.rows.at_mut(slot), conn),
                None => {
                    // First sight: the row is built from its record at once, with nothing to
                    // absorb (a first sample of a million rows copies none twice); an id
                    // listed twice absorbs its second record.
                    let id = conn.id;
                    let mut record = Some(conn);
                    let (slot, row) = self.rows.get_or_insert_with(id, || {
                        ConnRow::first_seen(record.take().expect("taken once"), now)
                    });
                    match record {
                        None => {
                            (row.listed_in, listed) = (update, listed + 1);
                            row.visit(slot, update, &mut visits);
                            continue;
                        }
                        Some(conn) => (slot, row, conn),
                    }
                }
            };
            if row.listed_in != update {
                (row.listed_in, listed) = (update, listed + 1);
            }
            // A settled row listed unchanged (a complete sample lists every row) is left alone,
            // as a sample of changes leaves it out.
            let settled = row.visited_in != 0 && row.visited_in != update;
            if settled && row.conn == conn {
                continue;
            }
            row.visit(slot, update, &mut visits);
            // A closed connection's final totals came with its close event.
            if !row.is_closed() {
                row.absorb(conn);
            }
        }
        if complete && listed < self.rows.len() {
            // The collector's table is the truth: a TCP connection it no longer lists is
            // over, even when its close event was lost or comes later. A partial sample
            // leaves out the idle ones.
            for (slot, row) in self.rows.iter_mut() {
                if row.conn.proto == Proto::Tcp && !row.is_closed() && row.listed_in != update {
                    row.close();
                    row.visit(slot, update, &mut visits);
                }
            }
        }
        self.elapsed = now.saturating_sub(self.last_update);
        self.last_update = now;
        let secs = self.elapsed.as_secs_f64();
        let history = self.retention.history;
        if self.intervals.len() == history {
            self.intervals.pop_front();
        }
        self.intervals.push_back(self.elapsed);
        let first = !self.updated;
        self.updated = true;
        let idle = self.retention.udp_idle;
        self.total_rates = (0.0, 0.0);
        // In memory order: the rows' memory is read ahead of the visits.
        visits.sort_unstable();
        visits.retain(|&slot| {
            let row = self.rows.at_mut(slot);
            // In the first sample, only a connection with lifecycle events is new; the others
            // were open before tcptop started.
            row.opened &= !first || row.new_events > 0;
            row.end_interval(secs, history, now);
            // A row's pid changes only where it is visited, as here.
            count_pid(&mut self.pids, mem::replace(&mut row.counted_pid, row.conn.pid), row.conn.pid);
            // A UDP flow has no close: it is over once idle for long enough. A row its
            // collector still reports stays, or it would come back with its totals counted
            // again.
            let timed_out = row.conn.proto == Proto::Udp
                && row.listed_in != update
                && now.saturating_sub(row.last_traffic) >= idle;
            if timed_out {
                count_pid(&mut self.pids, row.conn.pid, None);
                self.rows.remove(slot);
                return false;
            }
            self.total_rates.0 += row.rx_rate;
            self.total_rates.1 += row.tx_rate;
            if row.is_settled() {
                // Only zeros: left alone from now on, it needs no storage for them.
                row.rx_history.compact();
                row.tx_history.compact();
                return false;
            }
            true
        });
        self.rows.compact(&mut visits);
        self.busy = visits;
        self.overflow = sample.overflow;
    }

    /// Every connection in the table, in no particular order.
    pub fn rows(&self) -> impl Iterator<Item = &ConnRow> {
        self.rows.iter()
    }

    pub fn row(&self, id: u64) -> Option<&ConnRow> {
        self.rows.get(id)
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Length of the last interval.
    pub fn elapsed(&self) -> Duration {
        self.elapsed
    }

    /// The collector's cumulative overflow counters, as of the last sample.
    pub fn overflow(&self) -> Overflow {
        self.overflow
    }

    /// Total (rx, tx) bytes per second over the last interval.
    pub fn total_rates(&self) -> (f64, f64) {
        self.total_rates
    }

    /// The rows a view shows: filtered, then sorted.
    pub fn select(&self, query: &Query) -> Vec<&ConnRow> {
        self.select_named(query, &HashMap::new())
    }

    /// `select`, with the host names known for the addresses for the filter to match.
    pub fn select_named(&self, query: &Query, names: &HashMap<IpAddr, String>) -> Vec<&ConnRow> {
        let mut rows = self.matching(query, names);
        sort_rows(&mut rows, query.sort, query.reverse, query.rate_intervals);
        rows
    }

    /// The rows `select` gives, in no particular order: one pass over them in the order they
    /// lie in memory is much faster than one in a sorted order on a host of many rows.
    pub fn matching(&self, query: &Query, names: &HashMap<IpAddr, String>) -> Vec<&ConnRow> {
        // Active rows are busy ones: without idle rows, only those are looked at.
        let (candidates, most): (Box<dyn Iterator<Item = &ConnRow>>, _) = if query.all {
            (Box::new(self.rows()), self.rows.len())
        } else {
            let busy = self.busy.iter().map(|&slot| self.rows.at(slot));
            (Box::new(busy.filter(|r| r.is_active())), self.busy.len())
        };
        // Room for them all at once: a list grown step by step is copied at every step.
        let mut rows = Vec::with_capacity(most);
        rows.extend(candidates.filter(|r| query.filter.matches(r, names)));
        rows
    }

    /// The newest intervals `averaging` spans: those whose middle lies within its span
    /// (at least the last one), as far back as the histories go.
    pub fn window(&self, averaging: Averaging) -> Window {
        let span = averaging.span().unwrap_or(Duration::ZERO);
        let mut window = Window { intervals: 0, seconds: 0.0 };
        let mut covered = Duration::ZERO;
        for &interval in self.intervals.iter().rev() {
            if window.intervals > 0 && covered + interval / 2 > span {
                break;
            }
            covered += interval;
            window.intervals += 1;
        }
        window.seconds = covered.as_secs_f64();
        window
    }

    /// Total (rx, tx) bytes per second over `window`, of the rows still in the table.
    pub fn total_rates_over(&self, window: Window) -> (f64, f64) {
        self.rows.iter().fold((0.0, 0.0), |(rx, tx), r| {
            (rx + window.rate(r.rx_history.iter()), tx + window.rate(r.tx_history.iter()))
        })
    }
}

/// How far back the rate columns look, as iftop's 2, 10 and 40 s averages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Averaging {
    /// The last interval.
    #[default]
    Interval,
    TenSeconds,
    FortySeconds,
}

impl Averaging {
    /// The next window, cycling.
    pub fn next(self) -> Averaging {
        match self {
            Averaging::Interval => Averaging::TenSeconds,
            Averaging::TenSeconds => Averaging::FortySeconds,
            Averaging::FortySeconds => Averaging::Interval,
        }
    }

    /// How long the window is; `None`: one interval, however long.
    pub fn span(self) -> Option<Duration> {
        match self {
            Averaging::Interval => None,
            Averaging::TenSeconds => Some(Duration::from_secs(10)),
            Averaging::FortySeconds => Some(Duration::from_secs(40)),
        }
    }
}

/// The newest intervals of the rows' histories that a rate averages over.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Window {
    /// How many intervals, newest first (0 before the first sample).
    pub intervals: usize,
    /// Their length together.
    pub seconds: f64,
}

impl Window {
    /// Bytes per second over the window of `history` (per-interval bytes, oldest first; a
    /// shorter history moved nothing before it starts).
    pub fn rate(self, history: impl DoubleEndedIterator<Item = u64>) -> f64 {
        if self.seconds > 0.0 {
            recent(history, self.intervals) as f64 / self.seconds
        } else {
            0.0
        }
    }
}

/// The bytes of the newest `intervals` entries of `history`.
pub fn recent(history: impl DoubleEndedIterator<Item = u64>, intervals: usize) -> u64 {
    history.rev().take(intervals).sum()
}

/// The row of `conn`, new ones starting from zero so that their first totals count. A new
/// row's record takes everything from `conn` when it absorbs it: its strings are not copied.
fn row_for<'a>(rows: &'a mut Table, conn: &Conn, now: Duration) -> (Slot, &'a mut ConnRow) {
    rows.get_or_insert_with(conn.id, || {
        let blank = Conn {
            // Shared, not a new empty string: a first sample of a million rows allocates none.
            comm: Arc::clone(&conn.comm),
            cgroup: None,
            rx_bytes: 0,
            tx_bytes: 0,
            health: None,
            id: conn.id,
            pid: conn.pid,
            proto: conn.proto,
            local: conn.local,
            remote: conn.remote,
            state: conn.state,
            netns: conn.netns,
        };
        ConnRow::new(blank, now)
    })
}

/// Moves one row's count from pid `from` to `to` (either may be none).
fn count_pid(pids: &mut HashMap<u32, usize, ById>, from: Option<u32>, to: Option<u32>) {
    if from == to {
        return;
    }
    if let Some(pid) = from {
        if let Entry::Occupied(mut rows) = pids.entry(pid) {
            *rows.get_mut() -= 1;
            if *rows.get() == 0 {
                rows.remove();
            }
        }
    }
    if let Some(pid) = to {
        *pids.entry(pid).or_default() += 1;
    }
}

/// Which rows a view wants, in which order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Query {
    /// Include connections with no traffic or event in the last interval.
    pub all: bool,
    /// What the rows must match; the default matches everything.
    pub filter: Filter,
    pub sort: SortKey,
    /// Reverse the natural order of `sort`.
    pub reverse: bool,
    /// How many of the newest intervals the byte sorts (total, RX, TX) add up, as the rate
    /// columns average them (`Window::intervals`); 0 or 1: the last.
    pub rate_intervals: usize,
}

/// A sortable column. Byte, rate and health columns sort largest first (unknown last), the
/// others ascending.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SortKey {
    /// Bytes read + written in the last interval.
    #[default]
    Total,
    Rx,
    Tx,
    RxTotal,
    TxTotal,
    Pid,
    Comm,
    Local,
    Remote,
    State,
    /// Smoothed RTT.
    Rtt,
    /// Retransmits in the last interval, then in total: the least healthy first.
    Retrans,
}

impl SortKey {
    /// In the order a view's columns show them.
    pub const ALL: [SortKey; 12] = [
        SortKey::Pid,
        SortKey::Comm,
        SortKey::Local,
        SortKey::Remote,
        SortKey::State,
        SortKey::Rtt,
        SortKey::Retrans,
        SortKey::Rx,
        SortKey::Tx,
        SortKey::Total,
        SortKey::RxTotal,
        SortKey::TxTotal,
    ];

    /// What `row` sorts by under this key, its bytes over the newest `intervals`.
    fn value(self, row: &ConnRow, intervals: usize) -> SortValue<'_> {
        let c = &row.conn;
        let largest = |n: u64| SortValue::Largest(Reverse(Some(n)));
        let (rx, tx) = match intervals {
            0 | 1 => (row.rx_bytes, row.tx_bytes),
            n => (recent(row.rx_history.iter(), n), recent(row.tx_history.iter(), n)),
        };
        match self {
            SortKey::Total => largest(rx + tx),
            SortKey::Rx => largest(rx),
            SortKey::Tx => largest(tx),
            SortKey::RxTotal => largest(c.rx_bytes),
            SortKey::TxTotal => largest(c.tx_bytes),
            SortKey::Rtt => {
                SortValue::Largest(Reverse(c.health.and_then(|h| h.rtt).map(|r| u64::from(r.smoothed_us))))
            }
            SortKey::Retrans => {
                let total = c.health.and_then(|h| h.retrans).unwrap_or(0);
                SortValue::LargestPair(Reverse(row.retransmits().map(|now| (now, total))))
            }
            SortKey::Pid => SortValue::Pid(c.pid),
            SortKey::Comm => SortValue::Text(&c.comm),
            SortKey::Local => SortValue::Address(c.local),
            SortKey::Remote => SortValue::Address(c.remote),
            SortKey::State => SortValue::State(c.state),
        }
    }
}

/// A row's sort key, copied out of the row: sorting then compares keys side by side in
/// memory instead of following two pointers per comparison, which dominated the sort of
/// tens of thousands of rows.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum SortValue<'a> {
    /// Largest first, unknown (`None`) last.
    Largest(Reverse<Option<u64>>),
    /// Largest first by the first figure, then the second; unknown last.
    LargestPair(Reverse<Option<(u64, u64)>>),
    Pid(Option<u32>),
    Text(&'a str),
    Address(SocketAddr),
    State(Option<TcpState>),
}

/// Sorts by `key` (bytes over the newest `intervals`), ties broken by connection id so the
/// order is stable between frames.
pub fn sort_rows(rows: &mut [&ConnRow], key: SortKey, reverse: bool, intervals: usize) {
    Order { key, reverse, intervals, closed_last: false }.sort(rows);
}

/// An order of rows: by `key` (bytes over the newest `intervals`), reversed if asked, closed
/// rows below the others if `closed_last`, ties broken by connection id.
#[derive(Clone, Copy, Debug)]
pub struct Order {
    pub key: SortKey,
    pub reverse: bool,
    pub intervals: usize,
    pub closed_last: bool,
}

impl SortValue<'_> {
    /// The value as a number in the same order (at most 2^64), where it is one: sorting
    /// numbers side by side is several times faster than sorting `SortValue`s.
    fn number(&self) -> Option<u128> {
        match *self {
            SortValue::Largest(Reverse(n)) => Some(n.map_or(1 << 64, |n| u128::from(!n))),
            SortValue::Pid(pid) => Some(pid.map_or(0, |pid| u128::from(pid) + 1)),
            _ => None,
        }
    }
}

/// A row's place in an `Order`, copied out of the row, then its id and where the row was.
type Keyed<P> = (P, u64, usize);

impl Order {
    /// The places where the key is a number (`SortValue::number`): the closed rows' last,
    /// then the number, reversed if asked.
    fn numbered(self, rows: &[&ConnRow]) -> Option<Vec<Keyed<u128>>> {
        const CLOSED: u128 = 1 << 65;
        // A key is a number for every row or for none.
        self.key.value(rows.first()?, self.intervals).number()?;
        // Room for them all at once (collecting into an `Option` grows the list step by step).
        let mut keyed = Vec::with_capacity(rows.len());
        for (i, row) in rows.iter().enumerate() {
            let number = self.key.value(row, self.intervals).number()?;
            let number = if self.reverse { (1 << 64) - number } else { number };
            let closed = if self.closed_last && row.is_closed() { CLOSED } else { 0 };
            keyed.push((closed | number, row.conn.id, i));
        }
        Some(keyed)
    }

    fn keyed<'a>(self, rows: &[&'a ConnRow]) -> Vec<Keyed<(bool, SortValue<'a>)>> {
        let place = |(i, row): (usize, &&'a ConnRow)| {
            ((self.closed_last && row.is_closed(), self.key.value(row, self.intervals)), row.conn.id, i)
        };
        rows.iter().enumerate().map(place).collect()
    }

    fn compare(self, (a_closed, a): &(bool, SortValue), (b_closed, b): &(bool, SortValue)) -> Ordering {
        a_closed.cmp(b_closed).then_with(|| if self.reverse { b.cmp(a) } else { a.cmp(b) })
    }

    /// The positions of `rows` in this order.
    pub fn positions(self, rows: &[&ConnRow]) -> Vec<usize> {
        self.arrange(rows, rows.len(), None)
    }

    pub fn sort(self, rows: &mut [&ConnRow]) {
        self.sort_top(rows, rows.len(), None);
    }

    /// Puts the first `top` of `rows` in this order, and as far as the row of `follow` where
    /// it is among them; the others come after, in no particular order. A frame shows a page
    /// of rows: sorting all of a host's many rows would be most of its time.
    pub fn sort_top(self, rows: &mut [&ConnRow], top: usize, follow: Option<u64>) {
        let arranged: Vec<&ConnRow> = self.arrange(rows, top, follow).into_iter().map(|i| rows[i]).collect();
        rows.copy_from_slice(&arranged);
    }

    /// The positions of `rows` as `sort_top` puts them.
    fn arrange(self, rows: &[&ConnRow], top: usize, follow: Option<u64>) -> Vec<usize> {
        match self.numbered(rows) {
            Some(keyed) => arrange(keyed, top, follow, Ord::cmp),
            None => arrange(self.keyed(rows), top, follow, |a, b| self.compare(a, b)),
        }
    }
}

/// The positions of `keyed` as `Order::sort_top` puts them, places compared by `compare`,
/// ties broken by id (ids are unique, so an unstable sort gives one order).
fn arrange<P>(
    mut keyed: Vec<Keyed<P>>,
    top: usize,
    follow: Option<u64>,
    compare: impl Fn(&P, &P) -> Ordering,
) -> Vec<usize> {
    let compare = |a: &Keyed<P>, b: &Keyed<P>| compare(&a.0, &b.0).then(a.1.cmp(&b.1));
    let followed = follow.and_then(|id| keyed.iter().find(|k| k.1 == id));
    let rank = followed.map(|f| keyed.iter().filter(|k| compare(k, f).is_lt()).count());
    let top = top.max(rank.map_or(0, |rank| rank + 1));
    if top < keyed.len() {
        keyed.select_nth_unstable_by(top, compare);
        keyed[..top].sort_unstable_by(compare);
    } else {
        keyed.sort_unstable_by(compare);
    }
    keyed.into_iter().map(|(.., i)| i).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use conn::test_conn;

    fn conn(id: u64, rx: u64, tx: u64) -> Conn {
        let remote = format!("127.0.0.1:{}", 6000 + id);
        test_conn(id, 100 + id as u32, &format!("proc{id}"), ("127.0.0.1:5000", &remote), (rx, tx))
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn live(conns: Vec<Conn>) -> Sample {
        Sample { conns, ..Sample::default() }
    }

    fn udp(id: u64, rx: u64, tx: u64) -> Conn {
        Conn { proto: Proto::Udp, state: None, ..conn(id, rx, tx) }
    }

    fn closed(c: Conn, at: u64) -> ConnEvent {
        ConnEvent { at: secs(at), kind: EventKind::Closed, conn: c }
    }

    #[test]
    fn only_connections_with_events_count_as_opened_in_the_first_sample() {
        let mut model = Model::new(secs(0), Retention::default());
        let handshake = ConnEvent {
            at: secs(1),
            kind: EventKind::State { old: TcpState::SynSent, new: TcpState::Established },
            conn: conn(2, 0, 0),
        };
        model.update(
            Sample {
                conns: vec![conn(1, 0, 0), conn(2, 0, 0)],
                events: vec![handshake],
                ..Sample::default()
            },
            secs(1),
        );
        assert_eq!(model.row(1).unwrap().event_label(), None);
        assert_eq!(model.row(2).unwrap().event_label(), Some("opened"));
        model.update(live(vec![conn(1, 0, 0), conn(2, 0, 0), conn(3, 0, 0)]), secs(2));
        assert_eq!(model.row(3).unwrap().event_label(), Some("opened"));
    }

    #[test]
    fn interval_bytes_are_total_growth_and_rates_divide_by_elapsed() {
        let mut model = Model::new(secs(0), Retention::default());
        model.update(live(vec![conn(1, 100, 50)]), secs(1));
        let row = model.row(1).unwrap();
        assert_eq!((row.rx_bytes, row.tx_bytes), (100, 50));
        model.update(live(vec![conn(1, 400, 50)]), secs(3));
        let row = model.row(1).unwrap();
        assert_eq!((row.rx_bytes, row.tx_bytes), (300, 0));
        assert_eq!((row.rx_rate, row.tx_rate), (150.0, 0.0));
        assert_eq!(row.rx_history, [100, 300]);
        assert!(!row.opened);
        assert_eq!(model.elapsed(), secs(2));
    }

    #[test]
    fn a_connection_that_opens_and_closes_within_one_interval_reports_its_bytes_once() {
        let mut model =
            Model::new(secs(0), Retention { closed_intervals: 1, history: 4, ..Retention::default() });
        model.update(Sample { events: vec![closed(conn(7, 10, 20), 1)], ..Sample::default() }, secs(1));
        let row = model.row(7).unwrap();
        assert_eq!((row.rx_bytes, row.tx_bytes, row.event_label()), (10, 20, Some("closed")));
        // A late iterator record of the dead socket must not count again.
        model.update(live(vec![conn(7, 10, 20)]), secs(2));
        let row = model.row(7).unwrap();
        assert_eq!((row.rx_bytes, row.tx_bytes, row.closed_for), (0, 0, Some(1)));
        model.update(live(vec![]), secs(3));
        assert!(model.row(7).is_none());
    }

    #[test]
    fn close_event_adds_only_the_bytes_since_the_last_sample() {
        let mut model = Model::new(secs(0), Retention::default());
        model.update(live(vec![conn(1, 100, 100)]), secs(1));
        model.update(Sample { events: vec![closed(conn(1, 150, 100), 2)], ..Sample::default() }, secs(2));
        let row = model.row(1).unwrap();
        assert_eq!((row.rx_bytes, row.conn.rx_bytes, row.conn.state), (50, 150, Some(TcpState::Close)));
    }

    #[test]
    fn select_filters_idle_rows_and_text_then_sorts() {
        let mut model = Model::new(secs(0), Retention::default());
        model.update(live(vec![conn(1, 10, 0), conn(2, 500, 0), conn(3, 0, 0)]), secs(1));
        model.update(live(vec![conn(1, 20, 0), conn(2, 500, 0), conn(3, 0, 30)]), secs(2));
        let ids = |q: &Query| model.select(q).iter().map(|r| r.conn.id).collect::<Vec<_>>();
        assert_eq!(ids(&Query::default()), [3, 1]);
        assert_eq!(ids(&Query { all: true, ..Query::default() }), [3, 1, 2]);
        assert_eq!(ids(&Query { all: true, sort: SortKey::RxTotal, ..Query::default() }), [2, 1, 3]);
        assert_eq!(
            ids(&Query { all: true, sort: SortKey::Pid, reverse: true, ..Query::default() }),
            [3, 2, 1]
        );
        assert_eq!(
            ids(&Query { all: true, filter: Filter::parse("PROC2").unwrap(), ..Query::default() }),
            [2]
        );
        assert_eq!(
            ids(&Query { all: true, filter: Filter::parse("6003").unwrap(), ..Query::default() }),
            [3]
        );
    }

    #[test]
    fn a_udp_flow_leaves_once_idle_for_the_timeout_and_no_longer_reported() {
        let mut model = Model::new(secs(0), Retention { udp_idle: secs(10), ..Retention::default() });
        model.update(live(vec![udp(1, 100, 0), conn(2, 0, 0)]), secs(1));
        model.update(live(vec![udp(1, 100, 40), conn(2, 0, 0)]), secs(3));
        // Idle since 3 s: at 12 s it stays, though its collector no longer reports it.
        model.update(live(vec![conn(2, 0, 0)]), secs(12));
        assert_eq!(model.row(1).map(|r| r.last_traffic), Some(secs(3)));
        // Idle for 10 s but reported once more: it stays, and its bytes do not count again.
        model.update(live(vec![udp(1, 100, 40), conn(2, 0, 0)]), secs(13));
        let row = model.row(1).unwrap();
        assert_eq!((row.rx_bytes, row.tx_bytes, row.conn.tx_bytes), (0, 0, 40));
        model.update(live(vec![conn(2, 0, 0)]), secs(14));
        assert!(model.row(1).is_none());
        // An idle TCP connection is never timed out.
        assert!(model.row(2).is_some());
    }

    #[test]
    fn a_tcp_connection_the_table_no_longer_lists_closes_with_its_last_totals() {
        let mut model = Model::new(secs(0), Retention::default());
        model.update(live(vec![conn(1, 100, 0), conn(2, 50, 5), udp(3, 10, 0)]), secs(1));
        model.update(live(vec![conn(1, 150, 0)]), secs(2));
        let ghost = model.row(2).unwrap();
        assert_eq!(
            (ghost.closed_for, ghost.conn.state, ghost.event_label()),
            (Some(0), Some(TcpState::Close), Some("closed"))
        );
        assert_eq!((ghost.rx_bytes, ghost.conn.rx_bytes, ghost.conn.tx_bytes), (0, 50, 5));
        assert_eq!(model.row(1).unwrap().closed_for, None);
        // UDP has no table of live flows to be absent from: it times out instead.
        assert_eq!(model.row(3).unwrap().closed_for, None);
    }

    #[test]
    fn a_close_event_after_the_table_showed_the_close_only_adds_its_final_bytes() {
        let mut model = Model::new(secs(0), Retention::default());
        model.update(live(vec![conn(1, 100, 0), conn(2, 50, 5)]), secs(1));
        model.update(live(vec![conn(1, 100, 0)]), secs(2));
        let finishing = ConnEvent {
            at: secs(2),
            kind: EventKind::State { old: TcpState::Established, new: TcpState::FinWait1 },
            conn: conn(2, 60, 5),
        };
        let late = Sample {
            conns: vec![conn(1, 100, 0)],
            events: vec![finishing, closed(conn(2, 70, 5), 2)],
            ..Sample::default()
        };
        model.update(late, secs(3));
        let row = model.row(2).unwrap();
        assert_eq!((row.rx_bytes, row.conn.rx_bytes, row.conn.state), (20, 70, Some(TcpState::Close)));
        assert_eq!((row.closed_for, row.event_label(), row.events.len()), (Some(1), None, 2));
    }

    #[test]
    fn command_lines_are_kept_while_their_process_has_rows() {
        let mut model = Model::new(secs(0), Retention { closed_intervals: 0, ..Retention::default() });
        model.update(live(vec![conn(1, 0, 0)]), secs(1));
        model.set_cmdlines(HashMap::from([(101, "curl -O x".into()), (999, "gone".into())]));
        assert_eq!((model.cmdline(101), model.cmdline(999)), (Some("curl -O x"), None));
        model.update(live(vec![conn(1, 5, 0)]), secs(2));
        model.set_cmdlines(HashMap::new());
        assert_eq!(model.cmdline(101), Some("curl -O x"));
        model.update(live(vec![]), secs(3));
        model.update(live(vec![]), secs(4));
        model.set_cmdlines(HashMap::new());
        assert_eq!(model.cmdline(101), None);
    }

    fn with_retrans(c: Conn, total: u64, rtt_us: u32) -> Conn {
        let rtt = Rtt { smoothed_us: rtt_us, variation_us: 1, min_us: 1 };
        Conn { health: Some(TcpHealth { retrans: Some(total), rtt: Some(rtt), ..TcpHealth::default() }), ..c }
    }

    #[test]
    fn retransmits_per_interval_are_the_growth_of_the_kernel_total() {
        let mut model = Model::new(secs(0), Retention::default());
        model.update(live(vec![with_retrans(conn(1, 0, 0), 2, 50), conn(2, 5, 0)]), secs(1));
        assert_eq!(
            (model.row(1).unwrap().retransmits(), model.row(2).unwrap().retransmits()),
            (Some(2), None)
        );
        // A stale record (an event read before the table) never takes the total back.
        let stale = ConnEvent {
            at: secs(2),
            kind: EventKind::State { old: TcpState::Established, new: TcpState::Established },
            conn: with_retrans(conn(1, 0, 0), 1, 60),
        };
        let sample = Sample {
            conns: vec![with_retrans(conn(1, 0, 0), 7, 70)],
            events: vec![stale],
            ..Sample::default()
        };
        model.update(sample, secs(2));
        let row = model.row(1).unwrap();
        assert_eq!((row.retransmits(), row.conn.health.unwrap().retrans), (Some(5), Some(7)));
        model.update(live(vec![with_retrans(conn(1, 0, 0), 7, 40)]), secs(3));
        let row = model.row(1).unwrap();
        assert_eq!((row.retransmits(), row.is_active()), (Some(0), false));
        assert_eq!(row.conn.health.unwrap().rtt.unwrap().smoothed_us, 40);
    }

    #[test]
    fn health_columns_sort_largest_first_and_unknown_last() {
        let mut model = Model::new(secs(0), Retention::default());
        let conns =
            vec![with_retrans(conn(1, 1, 0), 1, 900), conn(2, 1, 0), with_retrans(conn(3, 1, 0), 4, 30)];
        model.update(live(conns), secs(1));
        let ids = |sort| {
            model.select(&Query { sort, ..Query::default() }).iter().map(|r| r.conn.id).collect::<Vec<_>>()
        };
        assert_eq!(ids(SortKey::Rtt), [1, 3, 2]);
        assert_eq!(ids(SortKey::Retrans), [3, 1, 2]);
    }

    fn partial(conns: Vec<Conn>, unchanged: u64) -> Sample {
        Sample { conns, unchanged: Some(unchanged), ..Sample::default() }
    }

    #[test]
    fn a_partial_sample_leaves_the_connections_it_omits_idle_not_closed() {
        let mut model = Model::new(secs(0), Retention::default());
        model.update(live(vec![conn(1, 100, 0), conn(2, 50, 5)]), secs(1));
        model.update(partial(vec![conn(1, 150, 0)], 1), secs(2));
        let idle = model.row(2).unwrap();
        assert_eq!((idle.closed_for, idle.rx_bytes, idle.rx_rate, idle.conn.rx_bytes), (None, 0, 0.0, 50));
        assert_eq!(idle.rx_history, [50, 0]);
        assert_eq!(model.total_rates(), (50.0, 0.0));
        // The next complete sample is the truth again.
        model.update(live(vec![conn(1, 150, 0)]), secs(3));
        assert_eq!(model.row(2).unwrap().event_label(), Some("closed"));
    }

    /// The same connections, fed to one model as complete samples and to another as samples
    /// of what changed: every row must read the same after every update.
    #[test]
    fn partial_samples_give_the_rows_complete_ones_give() {
        let retention = Retention { history: 3, closed_intervals: 1, ..Retention::default() };
        let (mut whole, mut changes) = (Model::new(secs(0), retention), Model::new(secs(0), retention));
        let mut totals: Vec<(u64, u64)> = vec![(0, 0); 6];
        let mut reported: Vec<Option<(u64, u64)>> = vec![None; 6];
        for step in 1..=12u64 {
            // Connection i moves bytes in the steps i divides; 5 closes at step 7.
            for (i, total) in totals.iter_mut().enumerate().skip(1) {
                if step % i as u64 == 0 {
                    total.0 += 10 * i as u64;
                }
            }
            let open = |i: &usize| *i > 0 && (*i != 5 || step < 7);
            let all: Vec<Conn> =
                (0..6).filter(open).map(|i| conn(i as u64, totals[i].0, totals[i].1)).collect();
            let changed: Vec<Conn> = all
                .iter()
                .filter(|c| reported[c.id as usize] != Some((c.rx_bytes, c.tx_bytes)))
                .cloned()
                .collect();
            for c in &changed {
                reported[c.id as usize] = Some((c.rx_bytes, c.tx_bytes));
            }
            let closes = if step == 7 { vec![closed(conn(5, totals[5].0, 0), step)] } else { vec![] };
            let unchanged = (all.len() - changed.len()) as u64;
            whole.update(Sample { conns: all, events: closes.clone(), ..Sample::default() }, secs(step));
            changes.update(
                Sample { conns: changed, events: closes, unchanged: Some(unchanged), ..Sample::default() },
                secs(step),
            );
            let sorted = |model: &Model| {
                // Left alone, a settled row stops counting its quiet intervals and its visits.
                let mut rows: Vec<ConnRow> = model
                    .rows()
                    .map(|row| ConnRow { quiet_intervals: 0, visited_in: 0, listed_in: 0, ..row.clone() })
                    .collect();
                rows.sort_by_key(|row| row.conn.id);
                rows
            };
            assert_eq!(sorted(&whole), sorted(&changes), "step {step}");
            assert_eq!(whole.total_rates(), changes.total_rates(), "step {step}");
            assert_eq!(whole.pids, changes.pids, "step {step}");
            for all in [false, true] {
                let ids = |model: &Model| {
                    model
                        .select(&Query { all, ..Query::default() })
                        .iter()
                        .map(|r| r.conn.id)
                        .collect::<Vec<_>>()
                };
                assert_eq!(ids(&whole), ids(&changes), "step {step}");
            }
        }
    }

    #[test]
    fn averages_cover_the_newest_intervals_within_their_span_as_far_as_the_histories_go() {
        let mut model = Model::new(secs(0), Retention { history: 12, ..Retention::default() });
        assert_eq!(model.window(Averaging::TenSeconds), Window { intervals: 0, seconds: 0.0 });
        // A burst of 900 bytes, then 10 bytes a second; conn 2 starts in the third interval.
        model.update(live(vec![conn(1, 900, 0)]), secs(1));
        model.update(live(vec![conn(1, 910, 0)]), secs(2));
        model.update(live(vec![conn(1, 920, 0), conn(2, 60, 30)]), secs(3));
        let window = model.window(Averaging::TenSeconds);
        assert_eq!(window, Window { intervals: 3, seconds: 3.0 });
        let (one, two) = (model.row(1).unwrap(), model.row(2).unwrap());
        assert_eq!(
            (window.rate(one.rx_history.iter()), window.rate(two.rx_history.iter())),
            (920.0 / 3.0, 20.0)
        );
        let last = model.window(Averaging::Interval);
        assert_eq!(
            (last, last.rate(one.rx_history.iter())),
            (Window { intervals: 1, seconds: 1.0 }, one.rx_rate)
        );
        let sum = window.rate(one.rx_history.iter()) + window.rate(two.rx_history.iter());
        assert_eq!(model.total_rates_over(window), (sum, 10.0));
        // Sorted by the window's bytes, the burst comes first; by the last interval, conn 2.
        let ids = |rate_intervals| {
            let query = Query { rate_intervals, ..Query::default() };
            model.select(&query).iter().map(|r| r.conn.id).collect::<Vec<_>>()
        };
        assert_eq!((ids(window.intervals), ids(1)), (vec![1, 2], vec![2, 1]));
        // Intervals a little longer than a second: ten of them still make the 10 s window,
        // and 40 s reach only as far back as the 12 intervals kept.
        let mut at = Duration::from_secs(3);
        for _ in 0..12 {
            at += Duration::from_millis(1_001);
            model.update(live(vec![conn(1, 920, 0), conn(2, 60, 30)]), at);
        }
        assert_eq!(model.window(Averaging::TenSeconds).intervals, 10);
        assert_eq!(model.window(Averaging::FortySeconds).intervals, 12);
        assert_eq!(model.row(1).unwrap().rx_history.len(), 12);
    }

    #[test]
    fn averaging_cycles_one_interval_ten_and_forty_seconds() {
        let a = Averaging::default();
        assert_eq!(
            (a, a.next(), a.next().next(), a.next().next().next()),
            (Averaging::Interval, Averaging::TenSeconds, Averaging::FortySeconds, Averaging::Interval)
        );
    }

    #[test]
    fn retransmits_sort_by_the_last_interval_then_the_total() {
        let mut model = Model::new(secs(0), Retention::default());
        let health = |retrans: [u64; 3]| {
            vec![
                with_retrans(conn(1, 1, 0), retrans[0], 10),
                conn(2, 1, 0),
                with_retrans(conn(3, 1, 0), retrans[1], 10),
                with_retrans(conn(4, 1, 0), retrans[2], 10),
            ]
        };
        model.update(live(health([1, 4, 0])), secs(1));
        model.update(live(health([1, 4, 2])), secs(2));
        let query = Query { all: true, sort: SortKey::Retrans, ..Query::default() };
        let ids: Vec<u64> = model.select(&query).iter().map(|r| r.conn.id).collect();
        assert_eq!(ids, [4, 3, 1, 2]);
    }

    #[test]
    fn rtt_history_starts_once_known_and_is_bounded_like_the_bytes() {
        let mut model = Model::new(secs(0), Retention { history: 3, ..Retention::default() });
        model.update(live(vec![conn(1, 0, 0), conn(2, 0, 0)]), secs(1));
        for (at, rtt) in [(2, Some(500)), (3, None), (4, Some(700)), (5, Some(900))] {
            let c = match rtt {
                Some(us) => with_retrans(conn(1, 0, 0), 0, us),
                None => conn(1, 0, 0),
            };
            model.update(live(vec![c, conn(2, 0, 0)]), secs(at));
        }
        assert_eq!(model.row(1).unwrap().rtt_history, [0, 700, 900]);
        assert!(model.row(2).unwrap().rtt_history.is_empty());
    }

    #[test]
    fn a_partial_sort_orders_the_top_and_the_followed_row_as_a_whole_sort_does() {
        let mut model = Model::new(secs(0), Retention::default());
        model.update(live((1..=50).map(|id| conn(id, id * 37 % 101, 0)).collect()), secs(1));
        model.update(live((1..=45).map(|id| conn(id, id * 37 % 101 + id % 7, 0)).collect()), secs(2));
        let order = Order { key: SortKey::Total, reverse: false, intervals: 1, closed_last: true };
        let mut whole: Vec<&ConnRow> = model.rows().collect();
        order.sort(&mut whole);
        assert!(whole[45..].iter().all(|row| row.is_closed()), "closed rows last");
        let ids = |rows: &[&ConnRow]| rows.iter().map(|row| row.conn.id).collect::<Vec<_>>();
        let followed = whole[30].conn.id;
        for (top, follow, sorted) in [(5, None, 5), (0, Some(followed), 31), (60, None, 50)] {
            let mut rows: Vec<&ConnRow> = model.rows().collect();
            order.sort_top(&mut rows, top, follow);
            assert_eq!(ids(&rows[..sorted]), ids(&whole[..sorted]), "top {top}");
            let (mut all, mut expected) = (ids(&rows), ids(&whole));
            all.sort_unstable();
            expected.sort_unstable();
            assert_eq!(all, expected);
        }
    }

    #[test]
    fn keys_sorted_as_numbers_order_rows_as_the_general_values_do() {
        let mut model = Model::new(secs(0), Retention::default());
        let conns = |round: u64| -> Vec<Conn> {
            (1..=30u64)
                .filter(|id| round == 1 || id % 7 != 0)
                .map(|id| {
                    let c = conn(id, id * 37 % 11 * round, id % 3 * round);
                    let c = Conn { pid: (id % 5 != 0).then_some(c.pid.unwrap_or(0) % 4), ..c };
                    if id % 4 == 0 {
                        with_retrans(c, id % 3, (id % 6) as u32 * 100)
                    } else {
                        c
                    }
                })
                .collect()
        };
        model.update(live(conns(1)), secs(1));
        model.update(live(conns(2)), secs(2));
        let rows: Vec<&ConnRow> = model.rows().collect();
        let mut numeric = 0;
        for key in SortKey::ALL {
            for (reverse, closed_last) in [(false, false), (true, false), (false, true), (true, true)] {
                let order = Order { key, reverse, intervals: 1, closed_last };
                let general = arrange(order.keyed(&rows), rows.len(), None, |a, b| order.compare(a, b));
                assert_eq!(
                    order.positions(&rows),
                    general,
                    "{key:?} reverse {reverse} closed last {closed_last}"
                );
                numeric += usize::from(order.numbered(&rows).is_some());
            }
        }
        assert_eq!(numeric, 7 * 4, "bytes, RTT and pid sort as numbers");
    }

    #[test]
    fn overflow_is_passed_through() {
        let mut model = Model::new(secs(0), Retention::default());
        let overflow = Overflow { lost_events: 2, ..Overflow::default() };
        model.update(Sample { overflow, ..Sample::default() }, secs(1));
        assert_eq!(model.overflow(), overflow);
    }
}
