//! `--prometheus`: a `Sink` that turns each interval into series counters and publishes a
//! snapshot of them, which a server on its own thread hands to scrapers at `/metrics`.

mod histogram;
mod metrics;
mod series;
mod server;
mod snapshot;

use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::{anyhow, Context, Result};
use tokio::sync::watch;

use histogram::Histogram;
pub use series::Label;
use series::Series;
use snapshot::Snapshot;

use crate::model::Model;
use crate::view::Sink;

pub const DEFAULT_MAX_SERIES: usize = 2000;

pub struct Exporter {
    series: Series,
    /// The time of every collection so far.
    collections: Histogram,
    snapshots: watch::Sender<Arc<Snapshot>>,
}

impl Exporter {
    /// Listens on `address` (a port alone means 127.0.0.1: metrics leave the host only when
    /// an address says so) and starts serving; before the probes load, so that a port in use
    /// ends tcptop at once. Scrapes before the first interval get no metrics.
    pub fn start(address: &str, labels: &[Label], max_series: usize) -> Result<Exporter> {
        let address = listen_address(address)?;
        let listener = TcpListener::bind(address).with_context(|| format!("--prometheus {address}"))?;
        let (snapshots, published) = watch::channel(Arc::default());
        server::spawn(listener, published).context("starting the --prometheus server")?;
        Ok(Exporter {
            series: Series::new(labels.to_vec(), max_series).with_ephemeral_ports(ephemeral_ports()),
            collections: Histogram::default(),
            snapshots,
        })
    }
}

/// The host's range of client ports (Linux's sysctl; its default where there is none).
fn ephemeral_ports() -> RangeInclusive<u16> {
    let sysctl = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    parse_port_range(&sysctl).unwrap_or(series::LINUX_EPHEMERAL_PORTS)
}

/// `ip_local_port_range`'s text: two numbers.
fn parse_port_range(text: &str) -> Option<RangeInclusive<u16>> {
    let mut ends = text.split_whitespace().map(str::parse::<u16>);
    Some(ends.next()?.ok()?..=ends.next()?.ok()?)
}

fn listen_address(text: &str) -> Result<SocketAddr> {
    if let Ok(port) = text.parse::<u16>() {
        return Ok((Ipv4Addr::LOCALHOST, port).into());
    }
    text.parse().map_err(|_| {
        anyhow!("--prometheus {text}: expected PORT or IP:PORT, as in 9494, 127.0.0.1:9494 or [::1]:9494")
    })
}

impl Sink for Exporter {
    fn interval(&mut self, model: &Model, backend: &str, _wall: SystemTime) -> io::Result<()> {
        self.series.add_interval(model.rows());
        self.collections.observe(model.collection_time());
        let registry = metrics::registry(&self.series, model, backend, &self.collections);
        self.snapshots.send_replace(Arc::new(Snapshot::new(registry)));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_alone_listens_on_loopback_and_other_addresses_must_be_spelled_out() {
        assert_eq!(listen_address("9494").unwrap(), "127.0.0.1:9494".parse().unwrap());
        assert_eq!(listen_address("[::1]:9494").unwrap(), "[::1]:9494".parse().unwrap());
        assert_eq!(listen_address("0.0.0.0:9494").unwrap(), "0.0.0.0:9494".parse().unwrap());
        let error = listen_address("localhost").unwrap_err().to_string();
        assert_eq!(
            error,
            "--prometheus localhost: expected PORT or IP:PORT, as in 9494, 127.0.0.1:9494 or [::1]:9494"
        );
    }

    #[test]
    fn the_client_port_range_comes_from_the_sysctl_text() {
        assert_eq!(parse_port_range("32768\t60999\n"), Some(32768..=60999));
        assert_eq!(parse_port_range("1024 65535"), Some(1024..=65535));
        assert_eq!(parse_port_range(""), None);
        assert!(ephemeral_ports().contains(&40_000));
    }
}
