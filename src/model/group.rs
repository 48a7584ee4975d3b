//! Grouping: sums the connection table's rows by process, remote host or container, and
//! folds the two ends of a connection within the host into one row. Pure, like the model it
//! reads.

use std::cmp::Ordering;
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use super::{recent, ConnRow, History, Proto, SortKey};

/// What one row of a view stands for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Grouping {
    /// One row per connection.
    #[default]
    Connection,
    /// One row per process, its connections summed.
    Process,
    /// One row per remote address, its connections summed.
    RemoteHost,
    /// One row per container (`Conn::container`), its connections summed.
    Container,
}

impl Grouping {
    /// Every grouping, in the order of the screen's tabs.
    pub const ALL: [Grouping; 4] =
        [Grouping::Connection, Grouping::Process, Grouping::RemoteHost, Grouping::Container];

    /// The next grouping, cycling.
    pub fn next(self) -> Grouping {
        let at = Grouping::ALL.iter().position(|g| *g == self).unwrap_or(0);
        Grouping::ALL[(at + 1) % Grouping::ALL.len()]
    }

    pub fn name(self) -> &'static str {
        match self {
            Grouping::Connection => "connection",
            Grouping::Process => "process",
            Grouping::RemoteHost => "remote host",
            Grouping::Container => "container",
        }
    }

    /// The sort keys that mean something for this grouping's rows, in column order.
    pub fn sort_keys(self) -> &'static [SortKey] {
        use SortKey::*;
        match self {
            Grouping::Connection => &SortKey::ALL,
            Grouping::Process => &[Pid, Comm, Rx, Tx, Total, RxTotal, TxTotal],
            Grouping::RemoteHost => &[Remote, Rx, Tx, Total, RxTotal, TxTotal],
            Grouping::Container => &[Rx, Tx, Total, RxTotal, TxTotal],
        }
    }

    /// The group `row` belongs to.
    pub fn key(self, row: &ConnRow) -> GroupKey {
        let conn = &row.conn;
        match self {
            Grouping::Connection => GroupKey::Connection(conn.id),
            Grouping::Process => GroupKey::Process { pid: conn.pid, comm: conn.comm.clone() },
            Grouping::RemoteHost => GroupKey::RemoteHost(conn.remote.ip()),
            Grouping::Container => GroupKey::Container(conn.container()),
        }
    }
}

/// What the connections of a group have in common.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GroupKey {
    Connection(u64),
    Process {
        pid: Option<u32>,
        comm: Arc<str>,
    },
    RemoteHost(IpAddr),
    /// `None`: connections whose cgroup is unknown.
    Container(Option<String>),
}

/// Connections summed: this interval's bytes and rates, totals and per-interval histories.
#[derive(Clone, Debug, PartialEq)]
pub struct Group {
    pub key: GroupKey,
    /// The ids of the member connections, in the order they were given.
    pub members: Vec<u64>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_rate: f64,
    pub tx_rate: f64,
    pub rx_total: u64,
    pub tx_total: u64,
    /// Per-interval bytes, oldest first, the members' histories added up aligned at the newest.
    pub rx_history: VecDeque<u64>,
    pub tx_history: VecDeque<u64>,
    /// Whether every member first appeared in the last interval.
    pub opened: bool,
    /// Intervals since the last member closed, once every member is closed.
    pub closed_for: Option<u32>,
}

impl Group {
    fn new(key: GroupKey) -> Group {
        Group {
            key,
            members: Vec::new(),
            rx_bytes: 0,
            tx_bytes: 0,
            rx_rate: 0.0,
            tx_rate: 0.0,
            rx_total: 0,
            tx_total: 0,
            rx_history: VecDeque::new(),
            tx_history: VecDeque::new(),
            opened: true,
            closed_for: None,
        }
    }

    fn add(&mut self, row: &ConnRow) {
        self.closed_for = match self.members.is_empty() {
            true => row.closed_for,
            false => self.closed_for.zip(row.closed_for).map(|(a, b)| a.min(b)),
        };
        self.members.push(row.conn.id);
        self.rx_bytes += row.rx_bytes;
        self.tx_bytes += row.tx_bytes;
        self.rx_rate += row.rx_rate;
        self.tx_rate += row.tx_rate;
        self.rx_total += row.conn.rx_bytes;
        self.tx_total += row.conn.tx_bytes;
        add_aligned(&mut self.rx_history, &row.rx_history);
        add_aligned(&mut self.tx_history, &row.tx_history);
        self.opened &= row.opened;
    }

    pub fn is_closed(&self) -> bool {
        self.closed_for.is_some()
    }

    /// The group's bytes over the newest `intervals` (0 or 1: the last), read and written.
    fn recent(&self, intervals: usize) -> (u64, u64) {
        match intervals {
            0 | 1 => (self.rx_bytes, self.tx_bytes),
            n => (recent(self.rx_history.iter().copied(), n), recent(self.tx_history.iter().copied(), n)),
        }
    }

    fn compare(&self, other: &Group, key: SortKey, intervals: usize) -> Ordering {
        use GroupKey::*;
        let ((rx, tx), (other_rx, other_tx)) = (self.recent(intervals), other.recent(intervals));
        match (key, &self.key, &other.key) {
            (SortKey::Total, ..) => (other_rx + other_tx).cmp(&(rx + tx)),
            (SortKey::Rx, ..) => other_rx.cmp(&rx),
            (SortKey::Tx, ..) => other_tx.cmp(&tx),
            (SortKey::RxTotal, ..) => other.rx_total.cmp(&self.rx_total),
            (SortKey::TxTotal, ..) => other.tx_total.cmp(&self.tx_total),
            (SortKey::Pid, Process { pid: a, .. }, Process { pid: b, .. }) => a.cmp(b),
            (SortKey::Comm, Process { comm: a, .. }, Process { comm: b, .. }) => a.cmp(b),
            // Other keys say nothing about these groups: the key order decides.
            _ => Ordering::Equal,
        }
    }
}

/// Adds `history` into `sum` so that both end at the newest interval.
fn add_aligned(sum: &mut VecDeque<u64>, history: &History) {
    while sum.len() < history.len() {
        sum.push_front(0);
    }
    let skip = sum.len() - history.len();
    for (total, value) in sum.iter_mut().skip(skip).zip(history.iter()) {
        *total += value;
    }
}

/// Sums `rows` into the groups of `grouping`, sorted by `key` (see `SortKey`; bytes over the
/// newest `intervals`), ties broken by the group key so the order is stable between frames.
pub fn group(
    rows: &[&ConnRow],
    grouping: Grouping,
    key: SortKey,
    reverse: bool,
    intervals: usize,
) -> Vec<Group> {
    let mut index: HashMap<GroupKey, usize> = HashMap::new();
    let mut groups: Vec<Group> = Vec::new();
    for row in rows {
        let group_key = grouping.key(row);
        let at = *index.entry(group_key.clone()).or_insert_with(|| {
            groups.push(Group::new(group_key));
            groups.len() - 1
        });
        groups[at].add(row);
    }
    groups.sort_by(|a, b| {
        let order = a.compare(b, key, intervals);
        let order = if reverse { order.reverse() } else { order };
        order.then_with(|| a.key.cmp(&b.key))
    });
    groups
}

/// The other end of each folded connection, by the id of the end kept.
pub type Peers<'m> = HashMap<u64, &'m ConnRow>;

/// `rows` with the two ends of each connection within the host (one end's local address the
/// other's remote one and back, same protocol and network namespace) folded into one row where
/// the first of them was: the end whose local port is the higher (the client's, as ephemeral
/// ports go) stays in `rows`, the other goes into the `Peers`.
pub fn fold_pairs<'m>(rows: Vec<&'m ConnRow>) -> (Vec<&'m ConnRow>, Peers<'m>) {
    type Ends = (Proto, Option<u32>, SocketAddr, SocketAddr);
    let ends = |row: &ConnRow| -> Ends { (row.conn.proto, row.conn.netns, row.conn.local, row.conn.remote) };
    let at: HashMap<Ends, usize> = rows.iter().enumerate().map(|(i, row)| (ends(row), i)).collect();
    let mut folded = vec![false; rows.len()];
    let mut kept = Vec::with_capacity(rows.len());
    let mut peers = Peers::new();
    for (i, &row) in rows.iter().enumerate() {
        if folded[i] {
            continue;
        }
        let (proto, netns, local, remote) = ends(row);
        let Some(&j) = at.get(&(proto, netns, remote, local)).filter(|&&j| j != i && !folded[j]) else {
            kept.push(row);
            continue;
        };
        folded[j] = true;
        let (shown, other) = if remote.port() > local.port() { (rows[j], row) } else { (row, rows[j]) };
        kept.push(shown);
        peers.insert(shown.conn.id, other);
    }
    (kept, peers)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use super::*;
    use crate::model::conn::test_conn as conn;
    use crate::model::{Conn, ConnEvent, EventKind, Sample};
    use crate::model::{Model, Retention};

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// Three connections: curl (pid 7) twice, to two hosts; ssh (pid 9) once, to the first.
    fn model() -> Model {
        let mut model = Model::new(secs(0), Retention::default());
        let first = vec![
            conn(1, 7, "curl", ("10.0.0.1:40001", "192.0.2.1:443"), (100, 10)),
            conn(2, 7, "curl", ("10.0.0.1:40002", "198.51.100.2:80"), (1000, 0)),
        ];
        model.update(Sample { conns: first, ..Sample::default() }, secs(1));
        let second = vec![
            conn(1, 7, "curl", ("10.0.0.1:40001", "192.0.2.1:443"), (300, 10)),
            conn(2, 7, "curl", ("10.0.0.1:40002", "198.51.100.2:80"), (1000, 0)),
            conn(3, 9, "ssh", ("10.0.0.1:40003", "192.0.2.1:22"), (5, 5)),
        ];
        model.update(Sample { conns: second, ..Sample::default() }, secs(2));
        model
    }

    fn rows(model: &Model) -> Vec<&ConnRow> {
        let mut rows: Vec<&ConnRow> = model.rows().collect();
        rows.sort_by_key(|r| r.conn.id);
        rows
    }

    #[test]
    fn by_process_sums_bytes_totals_and_histories() {
        let model = model();
        let groups = group(&rows(&model), Grouping::Process, SortKey::RxTotal, false, 1);
        let curl = &groups[0];
        assert_eq!(curl.key, GroupKey::Process { pid: Some(7), comm: "curl".into() });
        assert_eq!(curl.members, [1, 2]);
        assert_eq!((curl.rx_bytes, curl.tx_bytes, curl.rx_total, curl.tx_total), (200, 0, 1300, 10));
        assert_eq!(curl.rx_history, [1100, 200]);
        assert!(!curl.opened && !curl.is_closed());
        let ssh = &groups[1];
        assert_eq!((ssh.members.as_slice(), ssh.rx_bytes), (&[3][..], 5));
        // A member that is one interval old adds only to the newest slot.
        assert_eq!(ssh.rx_history, [5]);
        assert!(ssh.opened);
    }

    #[test]
    fn by_remote_host_ignores_the_port_and_sorts_stably() {
        let model = model();
        let groups = group(&rows(&model), Grouping::RemoteHost, SortKey::Total, false, 1);
        let hosts: Vec<_> = groups.iter().map(|g| (g.key.clone(), g.members.clone())).collect();
        let ip = |s: &str| GroupKey::RemoteHost(s.parse().unwrap());
        assert_eq!(hosts, [(ip("192.0.2.1"), vec![1, 3]), (ip("198.51.100.2"), vec![2])]);
        // Equal under the key: the host order decides, whichever the direction.
        let by_tx = group(&rows(&model), Grouping::RemoteHost, SortKey::Tx, true, 1);
        assert_eq!(by_tx[0].key, ip("198.51.100.2"));
        let by_pid = group(&rows(&model), Grouping::RemoteHost, SortKey::Pid, false, 1);
        assert_eq!(by_pid[0].key, ip("192.0.2.1"));
    }

    #[test]
    fn a_group_is_closed_only_when_every_member_is() {
        let mut model = model();
        let gone = conn(2, 7, "curl", ("10.0.0.1:40002", "198.51.100.2:80"), (1000, 0));
        let events = vec![ConnEvent { at: secs(3), kind: EventKind::Closed, conn: gone }];
        // The table still lists the two others.
        let conns = [1, 3].map(|id| model.row(id).unwrap().conn.clone()).to_vec();
        model.update(Sample { conns, events, ..Sample::default() }, secs(3));
        let groups = group(&rows(&model), Grouping::RemoteHost, SortKey::Remote, false, 1);
        assert_eq!(groups.iter().map(|g| g.closed_for).collect::<Vec<_>>(), [None, Some(0)]);
        let groups = group(&rows(&model), Grouping::Process, SortKey::Pid, true, 1);
        assert_eq!(
            groups.iter().map(|g| (g.members.len(), g.is_closed())).collect::<Vec<_>>(),
            [(1, false), (2, false)]
        );
    }

    #[test]
    fn grouping_cycles_through_the_tabs() {
        let mut g = Grouping::default();
        let mut seen = Vec::new();
        for _ in 0..5 {
            seen.push(g);
            g = g.next();
        }
        use Grouping::*;
        assert_eq!(seen, [Connection, Process, RemoteHost, Container, Connection]);
    }

    #[test]
    fn by_container_sums_the_connections_of_each_cgroup_unknown_ones_apart() {
        let id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let in_cgroup = |c: Conn, cgroup: Option<String>| Conn { cgroup: cgroup.map(Into::into), ..c };
        let docker = Some(format!("/system.slice/docker-{id}.scope"));
        let mut model = Model::new(secs(0), Retention::default());
        let conns = vec![
            in_cgroup(conn(1, 7, "nginx", ("172.17.0.2:80", "10.0.0.9:50000"), (10, 500)), docker.clone()),
            in_cgroup(conn(2, 8, "nginx", ("172.17.0.2:80", "10.0.0.9:50001"), (20, 700)), docker),
            in_cgroup(
                conn(3, 9, "sshd", ("10.0.0.1:22", "10.0.0.9:50002"), (5, 5)),
                Some("/system.slice/ssh.service".into()),
            ),
            conn(4, 10, "curl", ("10.0.0.1:40000", "192.0.2.1:443"), (1, 1)),
        ];
        model.update(Sample { conns, ..Sample::default() }, secs(1));
        let groups = group(&rows(&model), Grouping::Container, SortKey::Total, false, 1);
        let summary: Vec<_> = groups.iter().map(|g| (g.key.clone(), g.members.clone(), g.tx_bytes)).collect();
        let container = |name: Option<&str>| GroupKey::Container(name.map(String::from));
        assert_eq!(
            summary,
            [
                (container(Some("0123456789ab")), vec![1, 2], 1200),
                (container(Some("ssh.service")), vec![3], 5),
                (container(None), vec![4], 1),
            ]
        );
    }

    #[test]
    fn groups_sort_by_their_bytes_over_the_window() {
        let mut model = model();
        // Over the three intervals curl read 1300 bytes and ssh 10, in the last one curl none.
        let mut conns: Vec<Conn> = [1, 2, 3].map(|id| model.row(id).unwrap().conn.clone()).to_vec();
        conns[2].rx_bytes += 5;
        model.update(Sample { conns, ..Sample::default() }, secs(3));
        let order = |intervals| {
            let groups = group(&rows(&model), Grouping::Process, SortKey::Rx, false, intervals);
            groups.iter().map(|g| g.members.len()).collect::<Vec<_>>()
        };
        assert_eq!((order(3), order(1)), (vec![2, 1], vec![1, 2]));
    }

    /// The ends of loopback connections as both processes see them.
    fn pair_rows() -> Model {
        let mut model = Model::new(secs(0), Retention::default());
        let in_netns = |c: Conn, netns| Conn { netns: Some(netns), ..c };
        let conns = vec![
            conn(1, 7, "client", ("127.0.0.1:40000", "127.0.0.1:8080"), (100, 10)),
            conn(2, 8, "server", ("127.0.0.1:8080", "127.0.0.1:40000"), (10, 100)),
            // The same addresses in another network namespace: another connection.
            in_netns(conn(3, 9, "other", ("127.0.0.1:40000", "127.0.0.1:8080"), (1, 1)), 5),
            // The same ports over UDP: another flow.
            Conn {
                proto: Proto::Udp,
                state: None,
                ..conn(4, 8, "server", ("127.0.0.1:8080", "127.0.0.1:40000"), (1, 1))
            },
            // A connection to itself (simultaneous open on one port) has no other end.
            conn(5, 6, "self", ("127.0.0.1:9000", "127.0.0.1:9000"), (1, 1)),
            conn(6, 6, "remote", ("10.0.0.1:40000", "192.0.2.1:8080"), (1, 1)),
        ];
        model.update(Sample { conns, ..Sample::default() }, secs(1));
        model
    }

    #[test]
    fn both_ends_of_a_connection_within_the_host_fold_into_the_first() {
        let model = pair_rows();
        let ids = |rows: &[&ConnRow]| rows.iter().map(|r| r.conn.id).collect::<Vec<_>>();
        let mut rows = rows(&model);
        rows.reverse();
        // The pair takes the place of its first end, and shows the client's (port 40000).
        let (kept, peers) = fold_pairs(rows.clone());
        assert_eq!(ids(&kept), [6, 5, 4, 3, 1]);
        assert_eq!(peers.iter().map(|(id, peer)| (*id, peer.conn.id)).collect::<Vec<_>>(), [(1, 2)]);
        rows.reverse();
        let (kept, peers) = fold_pairs(rows);
        assert_eq!((ids(&kept), &*peers[&1].conn.comm), (vec![1, 3, 4, 5, 6], "server"));
        // One end alone (the other filtered out) stays as it is.
        let (kept, peers) = fold_pairs(vec![model.row(2).unwrap()]);
        assert_eq!((ids(&kept), peers.len()), (vec![2], 0));
    }
}
