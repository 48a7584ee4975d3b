//! What one frame of the live screen shows: the table's rows for the state's filter, sort and
//! grouping, and the figures around them. Built from the model; drawing only reads it.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::time::Duration;

use crate::collector::{Family, Filters};
use crate::model::group::{fold_pairs, group, Group, GroupKey, Grouping, Peers};
use crate::model::{ConnRow, Filter, Model, Order, Proto, Query};
use crate::resolve::Services;

use super::state::TuiState;

/// What does not change while tcptop runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub host: String,
    pub backend: String,
    pub interval: Duration,
    /// The command line's filters, described ("port 443"): the collector sees nothing else.
    pub filters: Vec<String>,
}

impl Header {
    /// `filters` described for the header, as the flags name them.
    pub fn describe(filters: &Filters) -> Vec<String> {
        let family = filters.family.map(|family| match family {
            Family::V4 => "IPv4".to_string(),
            Family::V6 => "IPv6".to_string(),
        });
        [
            filters.pid.map(|pid| format!("pid {pid}")),
            filters.port.map(|port| format!("port {port}")),
            filters.cgroup.as_ref().map(|cgroup| format!("cgroup {cgroup}")),
            family,
            filters.proto.map(|proto| proto.to_string()),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

/// The table's rows, filtered and sorted: connections (with the other ends of those folded
/// into them), or their sums per group.
#[derive(Debug)]
pub enum Rows<'m> {
    Conns(Vec<&'m ConnRow>, Peers<'m>),
    Groups(Vec<Group>),
}

impl<'m> Rows<'m> {
    /// The rows `state` asks for: the connections matching the filter (by `names` too, the
    /// host names known for their addresses; none for a filter that does not parse), idle
    /// and closed ones unless hidden, grouped and sorted (by bytes over the averaging
    /// window), closed ones below the live ones, the two ends of a connection within the
    /// host in one if asked. Connections apart are in order as far as the first `top` and the
    /// followed one (the rest, off screen, in no particular order); groups and folded rows all.
    pub fn build(
        model: &'m Model,
        state: &TuiState,
        names: &HashMap<IpAddr, String>,
        top: usize,
    ) -> Rows<'m> {
        let filter = Filter::parse(&state.filter);
        let query = Query {
            all: !state.hide_idle,
            filter: filter.clone().unwrap_or_default(),
            sort: state.sort(),
            reverse: state.reverse,
            rate_intervals: model.window(state.averaging).intervals,
        };
        let mut conns = model.matching(&query, names);
        if filter.is_err() {
            conns.clear();
        }
        if state.hide_closed {
            conns.retain(|row| !row.is_closed());
        }
        let order = Order {
            key: query.sort,
            reverse: query.reverse,
            intervals: query.rate_intervals,
            closed_last: true,
        };
        match state.grouping {
            Grouping::Connection if !state.fold_pairs => {
                let follow = match &state.selected_key {
                    Some(GroupKey::Connection(id)) if state.following => Some(*id),
                    _ => None,
                };
                order.sort_top(&mut conns, top, follow);
                Rows::Conns(conns, Peers::new())
            }
            Grouping::Connection => {
                order.sort(&mut conns);
                let (conns, peers) = fold_pairs(conns);
                Rows::Conns(conns, peers)
            }
            grouping => {
                order.sort(&mut conns);
                let mut groups = group(&conns, grouping, query.sort, query.reverse, query.rate_intervals);
                groups.sort_by_key(Group::is_closed);
                Rows::Groups(groups)
            }
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Rows::Conns(rows, _) => rows.len(),
            Rows::Groups(groups) => groups.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What identifies each row across frames, in order.
    pub fn keys(&self) -> Vec<GroupKey> {
        match self {
            Rows::Conns(rows, _) => rows.iter().map(|r| GroupKey::Connection(r.conn.id)).collect(),
            Rows::Groups(groups) => groups.iter().map(|g| g.key.clone()).collect(),
        }
    }

    /// The addresses rows `range` show (clipped to the rows), in order, with repeats.
    pub fn addresses(&self, range: Range<usize>) -> Vec<IpAddr> {
        let range = range.start.min(self.len())..range.end.min(self.len());
        match self {
            Rows::Conns(rows, _) => {
                rows[range].iter().flat_map(|r| [r.conn.local.ip(), r.conn.remote.ip()]).collect()
            }
            Rows::Groups(groups) => groups[range]
                .iter()
                .filter_map(|g| match g.key {
                    GroupKey::RemoteHost(ip) => Some(ip),
                    GroupKey::Connection(_) | GroupKey::Process { .. } | GroupKey::Container(_) => None,
                })
                .collect(),
        }
    }

    /// The process of row `index`, where the row has one.
    pub fn pid(&self, index: usize) -> Option<u32> {
        match self {
            Rows::Conns(rows, _) => rows.get(index)?.conn.pid,
            Rows::Groups(groups) => match &groups.get(index)?.key {
                GroupKey::Process { pid, .. } => *pid,
                GroupKey::Connection(_) | GroupKey::RemoteHost(_) | GroupKey::Container(_) => None,
            },
        }
    }
}

/// Everything a frame draws besides the state.
pub struct Screen<'a> {
    pub header: &'a Header,
    /// The model as shown: the live one, or the copy frozen by a pause.
    pub model: &'a Model,
    pub rows: &'a Rows<'a>,
    /// Total bytes per second of each interval over the last minute, oldest first.
    pub throughput: &'a VecDeque<u64>,
    /// The selected process's command line, when known.
    pub cmdline: Option<&'a str>,
    /// Whether the model has seen only its first sample, when every connection is new to it
    /// and "opened" says nothing.
    pub first_interval: bool,
    /// Names for the addresses and ports on screen; `None`: numbers.
    pub naming: Option<Naming<'a>>,
    /// The table shown beside this one on a wide screen (`render::beside`), if any.
    pub beside: Option<&'a Screen<'a>>,
}

/// The names one frame shows: the hosts known for its addresses, the system's services.
pub struct Naming<'a> {
    pub hosts: HashMap<IpAddr, String>,
    pub services: &'a Services,
}

/// `ip` by name where `naming` knows one (IPv6 in brackets when it is to take a port).
pub fn host(ip: IpAddr, naming: Option<&Naming>) -> String {
    match naming.and_then(|n| n.hosts.get(&ip)) {
        Some(name) => name.clone(),
        None => ip.to_string(),
    }
}

/// `address` as host:port, each by name where `naming` knows one.
pub fn address(address: SocketAddr, proto: Proto, naming: Option<&Naming>) -> String {
    let Some(naming) = naming else {
        return address.to_string();
    };
    let host = match (naming.hosts.get(&address.ip()), address.ip()) {
        (Some(name), _) => name.clone(),
        (None, IpAddr::V6(ip)) => format!("[{ip}]"),
        (None, IpAddr::V4(ip)) => ip.to_string(),
    };
    match naming.services.name(address.port(), proto) {
        Some(service) => format!("{host}:{service}"),
        None => format!("{host}:{}", address.port()),
    }
}
