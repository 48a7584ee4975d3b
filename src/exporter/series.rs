//! The exporter's per-connection series: totals by label set that only grow, kept within a
//! bound by folding the smallest into one `other` series. Pure: model rows in, totals out.

use std::collections::HashMap;
use std::ops::{AddAssign, RangeInclusive};
use std::time::Duration;

use clap::ValueEnum;

use super::histogram::Histogram;
use crate::cache::BoundedCache;
use crate::model::{Conn, ConnRow, Proto};

/// A connection attribute that labels the series (`--prometheus-labels`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum Label {
    Comm,
    Container,
    RemoteHost,
    RemotePort,
    LocalPort,
    Proto,
    Family,
    Netns,
}

impl Label {
    /// No pids and no local ports: a client's ephemeral port would make a series per
    /// connection.
    pub const DEFAULT: [Label; 5] =
        [Label::Comm, Label::Container, Label::RemoteHost, Label::RemotePort, Label::Proto];

    /// The label's name, as `--prometheus-labels` spells it.
    pub fn name(self) -> String {
        self.to_possible_value().expect("no variant is skipped").get_name().to_string()
    }

    /// The row's value of this label; "" (which Prometheus treats as no label) when unknown.
    /// `ephemeral_ports`: the range this host picks client ports from.
    fn value(self, row: &ConnRow, ephemeral_ports: &RangeInclusive<u16>) -> String {
        let conn = &row.conn;
        match self {
            Label::Comm => conn.comm.to_string(),
            Label::Container => conn.container().unwrap_or_default(),
            Label::RemoteHost => conn.remote.ip().to_string(),
            Label::RemotePort if remote_port_is_ephemeral(conn, ephemeral_ports) => "ephemeral".to_string(),
            Label::RemotePort => conn.remote.port().to_string(),
            Label::LocalPort => conn.local.port().to_string(),
            Label::Proto => proto_name(conn.proto).to_string(),
            Label::Family => if conn.remote.is_ipv4() { "ipv4" } else { "ipv6" }.to_string(),
            Label::Netns => conn.netns.map(|netns| netns.to_string()).unwrap_or_default(),
        }
    }
}

/// Whether the remote port is a client's, picked for this connection alone (the server end of
/// a connection): one in the ephemeral range while the local port is not. As a label value it
/// would make a series per connection, so it is shown as "ephemeral".
fn remote_port_is_ephemeral(conn: &Conn, ephemeral_ports: &RangeInclusive<u16>) -> bool {
    ephemeral_ports.contains(&conn.remote.port()) && !ephemeral_ports.contains(&conn.local.port())
}

/// The protocol as a label value.
pub fn proto_name(proto: Proto) -> &'static str {
    match proto {
        Proto::Tcp => "tcp",
        Proto::Udp => "udp",
    }
}

/// What the connections of one label set did since tcptop started. A health figure is
/// `None` while no connection of the set had it known: unknown, not zero.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub opened: u64,
    pub closed: u64,
    pub retransmits: Option<u64>,
    pub resets_sent: Option<u64>,
    pub resets_received: Option<u64>,
    /// The smoothed RTT of each connection in each interval it moved data.
    pub rtt: Option<Histogram>,
    /// The handshake of each connection that connected, once.
    pub connect: Option<Histogram>,
    /// Connects that failed (SYN_SENT to CLOSE), known with `connect`.
    pub failed_connects: Option<u64>,
}

impl Totals {
    fn add(&mut self, other: &Totals) {
        self.rx_bytes += other.rx_bytes;
        self.tx_bytes += other.tx_bytes;
        self.opened += other.opened;
        self.closed += other.closed;
        add_known(&mut self.retransmits, &other.retransmits);
        add_known(&mut self.resets_sent, &other.resets_sent);
        add_known(&mut self.resets_received, &other.resets_received);
        add_known(&mut self.rtt, &other.rtt);
        add_known(&mut self.connect, &other.connect);
        add_known(&mut self.failed_connects, &other.failed_connects);
    }

    /// What a series weighs when the smallest are folded.
    fn bytes(&self) -> u64 {
        self.rx_bytes + self.tx_bytes
    }

    /// Whether anything was counted or observed: what a row adds when it did nothing (its
    /// known figures at zero) makes no series.
    fn counts_something(&self) -> bool {
        let counted = |n: Option<u64>| n.is_some_and(|n| n > 0);
        let observed = |h: Option<Histogram>| h.is_some_and(|h| h.count() > 0);
        self.bytes() > 0
            || self.opened > 0
            || self.closed > 0
            || [self.retransmits, self.resets_sent, self.resets_received, self.failed_connects]
                .into_iter()
                .any(counted)
            || observed(self.rtt)
            || observed(self.connect)
    }

    /// What a row did in the last interval; `counted` is what of its health totals earlier
    /// intervals took, brought up to date.
    fn of_interval(row: &ConnRow, counted: &mut Counted) -> Totals {
        let health = row.conn.health.unwrap_or_default();
        let since = |total: Option<u32>, counted: &mut u32| {
            total.map(|total| {
                let new = total.saturating_sub(*counted);
                *counted = (*counted).max(total);
                u64::from(new)
            })
        };
        let moved = row.rx_bytes > 0 || row.tx_bytes > 0;
        let rtt = health.rtt.map(|rtt| {
            let mut histogram = Histogram::default();
            if moved {
                histogram.observe(Duration::from_micros(rtt.smoothed_us.into()));
            }
            histogram
        });
        let handshake = health.connect.filter(|_| !counted.handshake);
        counted.handshake |= handshake.is_some();
        Totals {
            rx_bytes: row.rx_bytes,
            tx_bytes: row.tx_bytes,
            opened: u64::from(row.opened),
            closed: u64::from(row.closed_for == Some(0)),
            retransmits: row.retransmits(),
            resets_sent: since(health.resets_sent, &mut counted.resets_sent),
            resets_received: since(health.resets_received, &mut counted.resets_received),
            rtt,
            connect: handshake.map(|h| if h.failed { Histogram::default() } else { Histogram::of(h.took) }),
            failed_connects: handshake.map(|h| u64::from(h.failed)),
        }
    }
}

/// Adds a figure where `more` knows it; an unknown one leaves the total as it was.
fn add_known<T: Default + for<'a> AddAssign<&'a T>>(total: &mut Option<T>, more: &Option<T>) {
    if let Some(more) = more {
        *total.get_or_insert_with(T::default) += more;
    }
}

/// What of one connection's health totals (kept by the kernel since it began, or since
/// tcptop started) its series already has.
#[derive(Clone, Copy, Debug, Default)]
struct Counted {
    resets_sent: u32,
    resets_received: u32,
    handshake: bool,
}

/// The value of every label of the fold series.
pub const OTHER: &str = "other";

/// Linux's default `net.ipv4.ip_local_port_range`.
pub const LINUX_EPHEMERAL_PORTS: RangeInclusive<u16> = 32768..=60999;

/// The series, by the values of the chosen labels in their order.
#[derive(Debug)]
pub struct Series {
    labels: Vec<Label>,
    max_series: usize,
    /// The range client ports come from (`ip_local_port_range`), for `remote_port`.
    ephemeral_ports: RangeInclusive<u16>,
    totals: HashMap<Vec<String>, Totals>,
    /// What the folded series had, and what their label sets did since.
    other: Option<Totals>,
    folded: u64,
    /// Label sets folded into `other`, whose later traffic goes on counting there: a series
    /// that came back would start again from 0 (a counter reset to Prometheus) while `other`
    /// already holds its past. Bounded: one forgotten for a whole generation may come back.
    folded_sets: BoundedCache<Vec<String>, ()>,
    /// By connection id, for the TCP rows of the last interval.
    counted: HashMap<u64, Counted>,
}

impl Series {
    pub fn new(labels: Vec<Label>, max_series: usize) -> Series {
        Series {
            labels,
            max_series,
            ephemeral_ports: LINUX_EPHEMERAL_PORTS,
            totals: HashMap::new(),
            other: None,
            folded: 0,
            folded_sets: BoundedCache::new(max_series.max(1)),
            counted: HashMap::new(),
        }
    }

    /// Takes the host's range of client ports instead of Linux's default.
    pub fn with_ephemeral_ports(self, ephemeral_ports: RangeInclusive<u16>) -> Series {
        Series { ephemeral_ports, ..self }
    }

    pub fn labels(&self) -> &[Label] {
        &self.labels
    }

    /// Adds what each row did in the last interval to its series: a closed connection's
    /// bytes stay where they were counted. Then folds the smallest series beyond the bound.
    pub fn add_interval<'a>(&mut self, rows: impl IntoIterator<Item = &'a ConnRow>) {
        // Rebuilt from the rows, which forgets the connections the model forgot.
        let mut counted = HashMap::with_capacity(self.counted.len());
        for row in rows {
            let mut health_counted = self.counted.remove(&row.conn.id).unwrap_or_default();
            let done = Totals::of_interval(row, &mut health_counted);
            if row.conn.health.is_some() {
                counted.insert(row.conn.id, health_counted);
            }
            if done.counts_something() {
                let values: Vec<String> =
                    self.labels.iter().map(|label| label.value(row, &self.ephemeral_ports)).collect();
                let series = if self.folded_sets.get(&values).is_some() {
                    self.other.get_or_insert_with(Totals::default)
                } else {
                    self.totals.entry(values).or_default()
                };
                series.add(&done);
            }
        }
        self.counted = counted;
        self.fold();
    }

    /// Folds the smallest series (fewest bytes, then by labels, so that the choice is
    /// stable) into `other`, until `max_series` are left.
    fn fold(&mut self) {
        let excess = self.totals.len().saturating_sub(self.max_series);
        if excess == 0 {
            return;
        }
        let mut by_size: Vec<(u64, &Vec<String>)> =
            self.totals.iter().map(|(values, totals)| (totals.bytes(), values)).collect();
        by_size.select_nth_unstable(excess - 1);
        let smallest: Vec<Vec<String>> =
            by_size[..excess].iter().map(|(_, values)| (*values).clone()).collect();
        let other = self.other.get_or_insert_with(Totals::default);
        for values in smallest {
            other.add(&self.totals.remove(&values).expect("a listed series"));
            self.folded_sets.insert(values, ());
        }
        self.folded += excess as u64;
    }

    /// Every series by its label values, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&[String], &Totals)> {
        self.totals.iter().map(|(values, totals)| (values.as_slice(), totals))
    }

    /// The fold series, once something was folded.
    pub fn other(&self) -> Option<&Totals> {
        self.other.as_ref()
    }

    /// How many series were folded into `other` so far.
    pub fn folded(&self) -> u64 {
        self.folded
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::model::conn::test_conn;
    use crate::model::{ConnEvent, EventKind, Handshake, Model, Retention, Rtt, Sample, TcpHealth};

    fn sum(series: &Series) -> Totals {
        let mut sum = series.other().copied().unwrap_or_default();
        series.iter().for_each(|(_, totals)| sum.add(totals));
        sum
    }

    /// 5,000 connections, each to one of 3 servers from one of 50 client ports (the local
    /// ports repeat across the servers' addresses), as a busy client host has them.
    fn five_thousand_conns() -> Vec<crate::model::Conn> {
        (0..5_000u64)
            .map(|id| {
                let local = format!("10.0.0.{}:{}", id % 7, 40_000 + id % 50);
                let remote = format!("192.0.2.{}:{}", id % 3, [443, 5432, 6379][(id % 3) as usize]);
                test_conn(id, 100 + (id % 9) as u32, "client", (&local, &remote), (id, 2 * id))
            })
            .collect()
    }

    fn model_after(samples: Vec<Sample>) -> Vec<Model> {
        let mut model =
            Model::new(Duration::ZERO, Retention { closed_intervals: 0, history: 1, ..Retention::default() });
        samples
            .into_iter()
            .zip(1..)
            .map(|(sample, second)| {
                model.update(sample, Duration::from_secs(second));
                model.clone()
            })
            .collect()
    }

    #[test]
    fn the_default_labels_give_a_series_per_server_not_per_connection() {
        let models = model_after(vec![Sample { conns: five_thousand_conns(), ..Sample::default() }]);
        let mut series = Series::new(Label::DEFAULT.to_vec(), 2000);
        series.add_interval(models[0].rows());
        assert_eq!(series.iter().count(), 3);
        let expected: u64 = (0..5_000).sum();
        assert_eq!(sum(&series), Totals { rx_bytes: expected, tx_bytes: 2 * expected, ..Totals::default() });
    }

    #[test]
    fn a_server_end_has_no_series_per_client_port() {
        let server_end = |id, port| {
            let remote = format!("10.0.0.1:{port}");
            test_conn(id, 7, "nginx", ("10.0.0.2:443", &remote), (10, 0))
        };
        let client_end = test_conn(9, 8, "curl", ("10.0.0.2:45000", "192.0.2.1:443"), (10, 0));
        let models = model_after(vec![Sample {
            conns: vec![server_end(1, 40_001), server_end(2, 40_002), client_end],
            ..Sample::default()
        }]);
        let mut series = Series::new(vec![Label::RemotePort], 10);
        series.add_interval(models[0].rows());
        let mut ports: Vec<String> = series.iter().map(|(values, _)| values[0].clone()).collect();
        ports.sort();
        assert_eq!(ports, ["443", "ephemeral"]);
    }

    #[test]
    fn beyond_the_bound_the_smallest_series_fold_into_other_with_the_sum_kept() {
        let models = model_after(vec![Sample { conns: five_thousand_conns(), ..Sample::default() }]);
        // 3 servers x 50 client ports.
        let mut series = Series::new(vec![Label::RemotePort, Label::LocalPort], 20);
        series.add_interval(models[0].rows());
        assert_eq!((series.iter().count(), series.folded()), (20, 130));
        let expected: u64 = (0..5_000).sum();
        assert_eq!(sum(&series).rx_bytes, expected);
        let smallest_kept = series.iter().map(|(_, totals)| totals.bytes()).min().unwrap();
        let other = series.other().unwrap();
        assert!(other.bytes() > 0 && smallest_kept >= other.bytes() / 130, "{smallest_kept} vs {other:?}");
    }

    #[test]
    fn a_folded_series_goes_on_counting_in_other_and_never_comes_back_from_zero() {
        let conn =
            |id, port, rx| test_conn(id, 7, "c", ("10.0.0.1:40000", &format!("192.0.2.1:{port}")), (rx, 0));
        // Two series, room for one: the smaller (port 2) folds.
        let models = model_after(vec![
            Sample { conns: vec![conn(1, 1, 1_000), conn(2, 2, 10)], ..Sample::default() },
            Sample { conns: vec![conn(1, 1, 1_000), conn(2, 2, 25)], ..Sample::default() },
        ]);
        let mut series = Series::new(vec![Label::RemotePort], 1);
        series.add_interval(models[0].rows());
        assert_eq!(series.other().map(|o| o.rx_bytes), Some(10));
        series.add_interval(models[1].rows());
        let kept: Vec<Vec<String>> = series.iter().map(|(values, _)| values.to_vec()).collect();
        assert_eq!(kept, [vec!["1".to_string()]]);
        assert_eq!((series.other().map(|o| o.rx_bytes), series.folded()), (Some(25), 1));
    }

    #[test]
    fn a_closed_connection_keeps_its_bytes_in_its_series() {
        let conn = |rx| test_conn(1, 7, "psql", ("10.0.0.1:40000", "192.0.2.1:5432"), (rx, 5));
        let closed = ConnEvent { at: Duration::from_millis(1500), kind: EventKind::Closed, conn: conn(300) };
        let models = model_after(vec![
            Sample { conns: vec![conn(100)], ..Sample::default() },
            Sample { events: vec![closed], ..Sample::default() },
            Sample::default(),
        ]);
        let mut series = Series::new(vec![Label::Comm, Label::RemotePort], 10);
        let mut seen = Vec::new();
        for model in &models {
            series.add_interval(model.rows());
            seen.push(series.iter().map(|(values, totals)| (values.to_vec(), *totals)).collect::<Vec<_>>());
        }
        let psql = |rx_bytes, closed| {
            vec![(
                vec!["psql".to_string(), "5432".to_string()],
                Totals { rx_bytes, tx_bytes: 5, closed, ..Totals::default() },
            )]
        };
        assert_eq!(seen, [psql(100, 0), psql(300, 1), psql(300, 1)]);
    }

    fn healthy(id: u64, port: u16, rx: u64, health: TcpHealth) -> crate::model::Conn {
        let remote = format!("192.0.2.1:{port}");
        crate::model::Conn {
            health: Some(health),
            ..test_conn(id, 7, "c", ("10.0.0.1:40000", &remote), (rx, 0))
        }
    }

    fn rtt_us(smoothed_us: u32) -> Option<Rtt> {
        Some(Rtt { smoothed_us, variation_us: 0, min_us: 0 })
    }

    #[test]
    fn health_counts_each_reset_and_handshake_once_and_rtt_where_data_moved() {
        let connected = Handshake { took: Duration::from_millis(2), failed: false };
        let health = |retrans, resets_received, rtt| TcpHealth {
            rtt,
            retrans: Some(retrans),
            connect: Some(connected),
            resets_sent: Some(0),
            resets_received: Some(resets_received),
            estimated: false,
        };
        let refused = Handshake { took: Duration::from_micros(50), failed: true };
        let failed = TcpHealth { connect: Some(refused), resets_received: Some(1), ..health(0, 0, None) };
        let models = model_after(vec![
            Sample { conns: vec![healthy(1, 80, 100, health(2, 0, rtt_us(500)))], ..Sample::default() },
            // No data moved: the RTT is not observed; the reset counts once, though reported twice.
            Sample { conns: vec![healthy(1, 80, 100, health(3, 1, rtt_us(600)))], ..Sample::default() },
            Sample {
                conns: vec![healthy(1, 80, 150, health(3, 1, rtt_us(20_000)))],
                events: vec![ConnEvent {
                    at: Duration::ZERO,
                    kind: EventKind::Closed,
                    conn: healthy(2, 81, 0, failed),
                }],
                ..Sample::default()
            },
        ]);
        let mut series = Series::new(vec![Label::Comm], 10);
        models.iter().for_each(|model| series.add_interval(model.rows()));
        let totals = *series.iter().next().unwrap().1;
        let mut rtt = Histogram::of(Duration::from_micros(500));
        rtt.observe(Duration::from_millis(20));
        let expected = Totals {
            rx_bytes: 150,
            // The failed connect, which had an event.
            opened: 1,
            closed: 1,
            retransmits: Some(3),
            resets_sent: Some(0),
            resets_received: Some(2),
            rtt: Some(rtt),
            connect: Some(Histogram::of(Duration::from_millis(2))),
            failed_connects: Some(1),
            ..Totals::default()
        };
        assert_eq!(totals, expected);
    }

    #[test]
    fn unknown_health_is_no_figure_not_zero_and_folding_keeps_what_is_known() {
        let unknown = TcpHealth::default();
        let known = TcpHealth { retrans: Some(4), rtt: rtt_us(100), ..TcpHealth::default() };
        let models = model_after(vec![Sample {
            conns: vec![healthy(1, 1, 10, unknown), healthy(2, 2, 20, known), healthy(3, 3, 30, unknown)],
            ..Sample::default()
        }]);
        let mut series = Series::new(vec![Label::RemotePort], 1);
        series.add_interval(models[0].rows());
        let kept = *series.iter().next().unwrap().1;
        assert_eq!((kept.rx_bytes, kept.retransmits, kept.rtt, kept.connect), (30, None, None, None));
        let other = series.other().unwrap();
        assert_eq!((other.rx_bytes, other.retransmits, other.resets_sent), (30, Some(4), None));
        assert_eq!(other.rtt.map(|rtt| rtt.count()), Some(1));
    }
}
