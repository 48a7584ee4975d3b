//! The metrics of one snapshot, as a `prometheus-client` registry: the series' counters, the
//! open connections by state, the collector's plan and its overflow counters.

use std::collections::BTreeMap;

use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use super::series::{proto_name, Series, Totals, OTHER};
use crate::model::Model;

type Labels = Vec<(String, String)>;

/// The registry for the model as of its last interval; `backend` is the collector's plan.
pub fn registry(series: &Series, model: &Model, backend: &str) -> Registry {
    let mut registry = Registry::default();
    let bytes = Family::<Labels, Counter>::default();
    let opened = Family::<Labels, Counter>::default();
    let closed = Family::<Labels, Counter>::default();
    let names: Vec<String> = series.labels().iter().map(|label| label.name()).collect();
    let other = vec![OTHER.to_string(); names.len()];
    let folded = series.other().map(|totals| (other.as_slice(), totals));
    for (values, totals) in series.iter().chain(folded) {
        let labels: Labels = names.iter().cloned().zip(values.iter().cloned()).collect();
        let Totals { rx_bytes, tx_bytes, opened: opens, closed: closes } = *totals;
        for (direction, count) in [("rx", rx_bytes), ("tx", tx_bytes)] {
            let with_direction = std::iter::once(("direction".to_string(), direction.to_string()));
            bytes.get_or_create(&with_direction.chain(labels.iter().cloned()).collect()).inc_by(count);
        }
        opened.get_or_create(&labels).inc_by(opens);
        closed.get_or_create(&labels).inc_by(closes);
    }
    registry.register_with_unit(
        "tcptop",
        "Bytes applications read (rx) and wrote (tx) on TCP connections and UDP flows",
        Unit::Bytes,
        bytes,
    );
    registry.register("tcptop_connections_opened", "Connections and UDP flows that opened", opened);
    registry.register("tcptop_connections_closed", "Connections and UDP flows that closed", closed);
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
