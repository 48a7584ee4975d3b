//! Pure: the connections sock_diag reports, kept from one read to the next: their baselines,
//! owners and last totals, and the state changes and closes that the reads and the destroy
//! group show.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use super::netlink::TcpSocket;
use crate::collector::{Conn, ConnEvent, EventKind, Proto, Rtt, TcpHealth, TcpState};
use crate::procfs::Owner;

/// Every connection reported and not closed yet, by socket cookie.
#[derive(Default)]
pub struct Tracker {
    tracked: HashMap<u64, Tracked>,
    /// Closed for want of their destroy message: one that comes late is not a second close.
    closed_unheard: HashSet<u64>,
}

struct Tracked {
    /// The application's totals when tcptop first saw the connection, if it predates tcptop.
    baseline: (u64, u64),
    /// As last reported.
    conn: Conn,
}

impl Tracker {
    /// A connection the first read found: it predates tcptop, which counts it from here.
    pub fn baseline(&mut self, netns: u32, socket: &TcpSocket) {
        let baseline = (socket.counters.written(false), socket.counters.read(false));
        let conn = conn_from(socket, netns, baseline, false);
        self.tracked.insert(socket.cookie, Tracked { baseline, conn });
    }

    /// `socket` as a read at `at` found it; `owner` if /proc names one. A connection new since
    /// the last read, or in another state, is a state change (one event from the state last
    /// seen: the reads do not see the states in between).
    pub fn dumped(
        &mut self,
        netns: u32,
        socket: &TcpSocket,
        owner: Option<Owner>,
        at: Duration,
    ) -> Option<ConnEvent> {
        let old = self.tracked.get(&socket.cookie);
        let baseline = old.map_or((0, 0), |t| t.baseline);
        let mut conn = conn_from(socket, netns, baseline, false);
        let old_state = old.map_or(Some(TcpState::Close), |t| t.conn.state);
        if let Some(owner) = owner {
            (conn.pid, conn.comm) = (Some(owner.pid), owner.comm);
        } else if let Some(old) = self.tracked.remove(&socket.cookie) {
            (conn.pid, conn.comm) = (old.conn.pid, old.conn.comm);
        }
        let event = state_change(old_state, &conn, at);
        self.tracked.insert(socket.cookie, Tracked { baseline, conn });
        event
    }

    /// Whether `cookie` is tracked and named by a process already.
    pub fn has_owner(&self, cookie: u64) -> bool {
        self.tracked.get(&cookie).is_some_and(|t| t.conn.pid.is_some())
    }

    /// The destroy group's final word on `socket`: the change to its last state, if one was
    /// not seen, and its close with its final totals. Listeners and sockets that never
    /// connected are destroyed too, and are no connection.
    pub fn destroyed(&mut self, netns: u32, socket: &TcpSocket, at: Duration, events: &mut Vec<ConnEvent>) {
        if self.closed_unheard.remove(&socket.cookie) {
            return;
        }
        let tracked = self.tracked.remove(&socket.cookie);
        let baseline = tracked.as_ref().map_or((0, 0), |t| t.baseline);
        let mut conn = conn_from(socket, netns, baseline, true);
        if conn.remote.port() == 0 {
            return;
        }
        if let Some(last) = tracked {
            (conn.pid, conn.comm) = (last.conn.pid, last.conn.comm);
            events.extend(state_change(last.conn.state, &conn, at));
        }
        events.push(ConnEvent { at, kind: EventKind::Closed, conn });
    }

    /// After a read of the namespaces `read` (`present`: the cookies it found), closes what it
    /// no longer found in a namespace whose destroy messages were missed (`unheard`), with the
    /// totals of its last read: no final word can come. Elsewhere a connection gone from a
    /// read (TIME_WAIT, closed while its file is still open) waits for its destroy message,
    /// and one in a namespace not read keeps its baseline. Returns the namespace of each one
    /// closed so.
    pub fn sweep(
        &mut self,
        present: &HashSet<u64>,
        read: &HashSet<u32>,
        unheard: &HashSet<u32>,
        at: Duration,
        events: &mut Vec<ConnEvent>,
    ) -> Vec<u32> {
        let lost = |cookie: &u64, t: &Tracked| {
            let netns = t.conn.netns.unwrap_or_default();
            !present.contains(cookie) && read.contains(&netns) && unheard.contains(&netns)
        };
        let gone: Vec<u64> = self.tracked.iter().filter(|(c, t)| lost(c, t)).map(|(&c, _)| c).collect();
        let mut closed_in = Vec::with_capacity(gone.len());
        for cookie in gone {
            let Tracked { conn, .. } = self.tracked.remove(&cookie).expect("listed");
            closed_in.push(conn.netns.unwrap_or_default());
            let mut closed = conn.clone();
            closed.state = Some(TcpState::Close);
            events.extend(state_change(conn.state, &closed, at));
            events.push(ConnEvent { at, kind: EventKind::Closed, conn: closed });
            self.closed_unheard.insert(cookie);
        }
        closed_in
    }

    /// Forgets the connections closed for want of a destroy message whose message did not
    /// come by now (the destroy group was read since the read that missed them).
    pub fn forget_unheard(&mut self) {
        self.closed_unheard.clear();
    }

    /// Whether a connection in network namespace `netns` is tracked.
    pub fn holds(&self, netns: u32) -> bool {
        self.tracked.values().any(|t| t.conn.netns == Some(netns))
    }

    pub fn conns(&self) -> impl Iterator<Item = &Conn> {
        self.tracked.values().map(|t| &t.conn)
    }
}

/// The change from `old` to `conn`'s state, if it is one.
fn state_change(old: Option<TcpState>, conn: &Conn, at: Duration) -> Option<ConnEvent> {
    match (old, conn.state) {
        (Some(old), Some(new)) if old != new => {
            Some(ConnEvent { at, kind: EventKind::State { old, new }, conn: conn.clone() })
        }
        _ => None,
    }
}

/// The connection `socket` is, with totals since `baseline`.
fn conn_from(socket: &TcpSocket, netns: u32, baseline: (u64, u64), destroyed: bool) -> Conn {
    let c = &socket.counters;
    Conn {
        id: socket.cookie,
        pid: None,
        comm: "".into(),
        proto: Proto::Tcp,
        local: socket.local,
        remote: socket.remote,
        state: Some(TcpState::from_kernel(c.state)),
        tx_bytes: c.written(destroyed).saturating_sub(baseline.0),
        rx_bytes: c.read(destroyed).saturating_sub(baseline.1),
        netns: Some(netns),
        cgroup: None,
        // What tcp_info holds; resets and the handshake are not in it.
        health: Some(TcpHealth {
            rtt: (c.rtt_us != 0).then_some(Rtt {
                smoothed_us: c.rtt_us,
                variation_us: c.rttvar_us,
                min_us: c.min_rtt_us,
            }),
            retrans: Some(c.total_retrans.into()),
            connect: None,
            resets_sent: None,
            resets_received: None,
            estimated: false,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sockdiag::bytes::Counters;

    const ESTABLISHED: u8 = 1;
    const FIN_WAIT1: u8 = 4;
    const CLOSE: u8 = 7;

    /// Socket `cookie` in `state`, having written `sent` and read `received` bytes.
    fn socket(cookie: u64, state: u8, sent: u64, received: u64) -> TcpSocket {
        TcpSocket {
            cookie,
            local: "10.0.0.1:40000".parse().unwrap(),
            remote: "10.0.0.2:80".parse().unwrap(),
            inode: 1,
            counters: Counters { state, bytes_sent: sent, bytes_received: received, ..Counters::default() },
        }
    }

    fn at(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    fn totals(tracker: &Tracker) -> Vec<(u64, u64, u64)> {
        tracker.conns().map(|c| (c.id, c.tx_bytes, c.rx_bytes)).collect()
    }

    /// A namespace left out of one read (no process listed in it for a moment): its
    /// connections keep their baselines and are not closed, so nothing is counted twice.
    #[test]
    fn a_namespace_missing_from_one_read_is_not_counted_again() {
        let mut tracker = Tracker::default();
        tracker.baseline(7, &socket(1, ESTABLISHED, 1_000, 500));
        let (mut events, none) = (Vec::new(), HashSet::new());
        tracker.dumped(7, &socket(1, ESTABLISHED, 1_100, 550), None, at(1));
        // Namespace 7 was not read, and its destroy messages could not be heard.
        let unheard = HashSet::from([7]);
        assert_eq!(tracker.sweep(&none, &HashSet::new(), &unheard, at(2), &mut events), Vec::<u32>::new());
        assert_eq!(events, []);
        tracker.dumped(7, &socket(1, ESTABLISHED, 1_200, 600), None, at(3));
        assert_eq!(totals(&tracker), [(1, 200, 100)]);
    }

    #[test]
    fn a_connection_gone_where_destroys_were_missed_closes_with_its_last_totals() {
        let mut tracker = Tracker::default();
        let mut events = Vec::new();
        tracker.dumped(3, &socket(1, ESTABLISHED, 40, 20), None, at(1));
        events.clear();
        let (read, unheard) = (HashSet::from([3]), HashSet::from([3]));
        assert_eq!(tracker.sweep(&HashSet::new(), &read, &unheard, at(2), &mut events), [3]);
        let kinds: Vec<_> = events.iter().map(|e| (e.kind, e.conn.tx_bytes, e.conn.rx_bytes)).collect();
        let to_close = EventKind::State { old: TcpState::Established, new: TcpState::Close };
        assert_eq!(kinds, [(to_close, 40, 20), (EventKind::Closed, 40, 20)]);
        // Its destroy message, late: not a second close.
        tracker.destroyed(3, &socket(1, CLOSE, 40, 20), at(3), &mut events);
        assert_eq!(events.len(), 2);
        // Gone where destroys are heard: it waits for its message.
        tracker.dumped(3, &socket(2, ESTABLISHED, 1, 1), None, at(4));
        assert_eq!(
            tracker.sweep(&HashSet::new(), &read, &HashSet::new(), at(5), &mut events),
            Vec::<u32>::new()
        );
        assert_eq!(totals(&tracker), [(2, 1, 1)]);
    }

    #[test]
    fn state_changes_between_reads_and_at_the_destroy_are_events() {
        let mut tracker = Tracker::default();
        let owner = Owner { pid: 9, comm: "curl".into() };
        let kinds = |events: &[ConnEvent]| events.iter().map(|e| e.kind).collect::<Vec<_>>();
        let state = |old, new| EventKind::State { old, new };
        let opened = tracker.dumped(5, &socket(1, ESTABLISHED, 0, 0), Some(owner.clone()), at(1));
        assert_eq!(kinds(&Vec::from_iter(opened)), [state(TcpState::Close, TcpState::Established)]);
        assert_eq!(tracker.dumped(5, &socket(1, ESTABLISHED, 10, 0), None, at(2)), None);
        let closing = tracker.dumped(5, &socket(1, FIN_WAIT1, 10, 0), None, at(3)).unwrap();
        assert_eq!(closing.kind, state(TcpState::Established, TcpState::FinWait1));
        assert_eq!((closing.conn.pid, closing.conn.tx_bytes), (Some(9), 10));
        let mut events = Vec::new();
        tracker.destroyed(5, &socket(1, CLOSE, 10, 0), at(4), &mut events);
        assert_eq!(kinds(&events), [state(TcpState::FinWait1, TcpState::Close), EventKind::Closed]);
        assert!(events.iter().all(|e| e.conn.pid == Some(9) && e.at == at(4)));
        // A connection that predates tcptop is no state change when first read.
        tracker.baseline(5, &socket(2, ESTABLISHED, 7, 7));
        assert_eq!(tracker.dumped(5, &socket(2, ESTABLISHED, 8, 7), None, at(5)), None);
        // One never read: its close alone; a listener's destroy is no connection's.
        events.clear();
        tracker.destroyed(5, &socket(3, CLOSE, 4, 4), at(6), &mut events);
        let mut listener = socket(4, CLOSE, 0, 0);
        listener.remote = "0.0.0.0:0".parse().unwrap();
        tracker.destroyed(5, &listener, at(6), &mut events);
        assert_eq!(kinds(&events), [EventKind::Closed]);
    }
}
