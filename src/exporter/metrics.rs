//! The metrics of one snapshot, as a `prometheus-client` registry: the series' counters, the
//! TCP health figures, the open connections by state, the collector's plan, its overflow
//! counters and the time of its collections.

use std::collections::BTreeMap;

use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use super::histogram::{Histogram, HistogramFamily};
use super::series::{proto_name, Series, OTHER};
use crate::model::Model;

type Labels = Vec<(String, String)>;

/// The registry for the model as of its last interval; `backend` is the collector's plan,
/// `collections` the time of every collection so far.
pub fn registry(series: &Series, model: &Model, backend: &str, collections: &Histogram) -> Registry {
    let mut registry = Registry::default();
    let bytes = Family::<Labels, Counter>::default();
    let opened = Family::<Labels, Counter>::default();
    let closed = Family::<Labels, Counter>::default();
    let retransmits = Family::<Labels, Counter>::default();
    let resets = Family::<Labels, Counter>::default();
    let failed_connects = Family::<Labels, Counter>::default();
    let mut rtt = Vec::new();
    let mut connect = Vec::new();
    let names: Vec<String> = series.labels().iter().map(|label| label.name()).collect();
    let other = vec![OTHER.to_string(); names.len()];
    let folded = series.other().map(|totals| (other.as_slice(), totals));
    for (values, totals) in series.iter().chain(folded) {
        let labels: Labels = names.iter().cloned().zip(values.iter().cloned()).collect();
        let with_direction = |direction: &str| -> Labels {
            std::iter::once(("direction".to_string(), direction.to_string()))
                .chain(labels.iter().cloned())
                .collect()
        };
        for (direction, count) in [("rx", totals.rx_bytes), ("tx", totals.tx_bytes)] {
            bytes.get_or_create(&with_direction(direction)).inc_by(count);
        }
        opened.get_or_create(&labels).inc_by(totals.opened);
        closed.get_or_create(&labels).inc_by(totals.closed);
        if let Some(count) = totals.retransmits {
            retransmits.get_or_create(&labels).inc_by(count);
        }
        for (direction, count) in [("sent", totals.resets_sent), ("received", totals.resets_received)] {
            if let Some(count) = count {
                resets.get_or_create(&with_direction(direction)).inc_by(count);
            }
        }
        if let Some(count) = totals.failed_connects {
            failed_connects.get_or_create(&labels).inc_by(count);
        }
        rtt.extend(totals.rtt.map(|histogram| (labels.clone(), histogram)));
        connect.extend(totals.connect.map(|histogram| (labels.clone(), histogram)));
    }
    registry.register_with_unit(
        "tcptop",
        "Bytes applications read (rx) and wrote (tx) on TCP connections and UDP flows",
        Unit::Bytes,
        bytes,
    );
    registry.register("tcptop_connections_opened", "Connections and UDP flows that opened", opened);
    registry.register("tcptop_connections_closed", "Connections and UDP flows that closed", closed);
    registry.register("tcptop_tcp_retransmits", "TCP segments retransmitted, SYNs included", retransmits);
    registry.register("tcptop_tcp_resets", "TCP resets sent and received", resets);
    registry.register(
        "tcptop_tcp_connect_failures",
        "Connects that failed: SYN_SENT to CLOSE (refused, timed out, aborted)",
        failed_connects,
    );
    registry.register_collector(Box::new(HistogramFamily {
        name: "tcptop_tcp_rtt",
        help: "The kernel's smoothed RTT of each TCP connection in each interval it moved data",
        series: rtt,
    }));
    registry.register_collector(Box::new(HistogramFamily {
        name: "tcptop_tcp_connect_duration",
        help: "How long each TCP connection took to establish: SYN_SENT or SYN_RECV to ESTABLISHED",
        series: connect,
    }));
    registry.register_with_unit(
        "tcptop_collection_duration",
        "How long each interval's table read and decode took",
        Unit::Seconds,
        *collections,
    );
    registry.register(
        "tcptop_connections",
        "Open connections by TCP state (UDP flows have none)",
        by_state(model),
    );
    registry.register(
        "tcptop_folded_series",
        "Series folded into the one whose labels are all \"other\", beyond --prometheus-max-series",
        ConstCounter::new(series.folded()),
    );
    registry.register(
        "tcptop_collector",
        "The collector's plan",
        Info::new(vec![("probe".to_string(), backend.to_string())]),
    );
    let overflow = model.overflow();
    for (name, help, count) in [
        (
            "tcptop_untracked_connections",
            "Connections that found no room in the collector's table",
            overflow.untracked_conns,
        ),
        ("tcptop_lost_events", "Lifecycle events lost because their queue was full", overflow.lost_events),
        (
            "tcptop_dropped_packets",
            "Packets the capture collector dropped or could not decode",
            overflow.dropped_packets,
        ),
    ] {
        registry.register(name, help, ConstCounter::new(count));
    }
    registry
}

/// The open connections by protocol and state, in a stable order.
fn by_state(model: &Model) -> Family<Labels, Gauge> {
    let mut counts: BTreeMap<(&str, &str), i64> = BTreeMap::new();
    for row in model.rows().filter(|row| !row.is_closed()) {
        let state = row.conn.state.map_or("", |state| state.name());
        *counts.entry((proto_name(row.conn.proto), state)).or_default() += 1;
    }
    let gauges = Family::<Labels, Gauge>::default();
    for ((proto, state), count) in counts {
        gauges
            .get_or_create(&vec![("proto".into(), proto.into()), ("state".into(), state.into())])
            .set(count);
    }
    gauges
}
