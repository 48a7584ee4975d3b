//! The interface every data source implements, and the filters it applies. The records it
//! hands on are the model's input types (`model::conn`), re-exported here for collectors.

use std::time::Duration;

use anyhow::Result;

pub use crate::model::conn::{
    Conn, ConnEvent, EventKind, Handshake, Overflow, Proto, Rtt, Sample, TcpHealth, TcpState,
    DEFAULT_UDP_IDLE,
};

/// A source of connection data: the eBPF collector on Linux, packet capture elsewhere.
/// It is built and used on the collection thread alone, so it need not be `Send`.
pub trait Collector {
    /// The backend in use, as shown to the user ("fentry", "kprobe", "tracepoint", "capture").
    fn backend(&self) -> &str;

    /// Everything observed since the previous call: every live connection with its byte
    /// totals (a TCP connection absent from `conns` is over), the lifecycle events in order,
    /// and the overflow counters.
    fn collect(&mut self) -> Result<Sample>;

    /// `collect` for the last interval, before tcptop ends: a collector whose reads leave some
    /// sampling for later does it all now, so that the last totals are exact.
    fn collect_last(&mut self) -> Result<Sample> {
        self.collect()
    }

    /// Waits up to `timeout` for lifecycle events and returns those that arrived, oldest
    /// first; `collect` does not return them again. A collector without an event stream
    /// has nothing to wait on: it sleeps the whole `timeout`, then hands on the events that
    /// `collect` finds (the collection thread waits at most 100 ms at a time, so this also
    /// drains such a collector's queues that often).
    fn wait_events(&mut self, timeout: Duration) -> Result<Vec<ConnEvent>> {
        std::thread::sleep(timeout);
        Ok(self.collect()?.events)
    }

    /// The longest time `collect` may go uncalled without losing counts (the kernel's
    /// counters can wrap on a fast connection); the collection thread calls it at least this
    /// often, whatever the display interval. `None`: once per display interval is enough.
    fn max_collect_gap(&self) -> Option<Duration> {
        None
    }

    /// Brings the counters up to date without a table for the model: the reads between two
    /// interval ends that `max_collect_gap` asks for. Returns the lifecycle events it took,
    /// which `collect` does not return again. By default a whole `collect`.
    fn refresh(&mut self) -> Result<Vec<ConnEvent>> {
        Ok(self.collect()?.events)
    }
}

/// What the user asked to watch; collectors apply it as early as they can (in the kernel
/// for eBPF).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filters {
    pub pid: Option<u32>,
    /// Matches the local or the remote port.
    pub port: Option<u16>,
    pub family: Option<Family>,
    /// A cgroup path, absolute or below the cgroup root (/sys/fs/cgroup).
    pub cgroup: Option<String>,
    /// TCP or UDP alone; `None` for both.
    pub proto: Option<Proto>,
    /// A UDP flow without a datagram for this long is over: the collector stops reporting it.
    pub udp_idle: Duration,
}

impl Default for Filters {
    fn default() -> Self {
        Filters { pid: None, port: None, family: None, cgroup: None, proto: None, udp_idle: DEFAULT_UDP_IDLE }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}
