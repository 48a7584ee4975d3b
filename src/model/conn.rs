//! The records a collector hands to the model: connections with their byte totals,
//! lifecycle events and overflow counters, one `Sample` per reading. Plain data, no I/O.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

/// How long a UDP flow may go without a datagram before it is over, unless `--udp-idle` says.
pub const DEFAULT_UDP_IDLE: Duration = Duration::from_secs(10);

/// One reading of a collector.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sample {
    /// Every live connection, with totals counted since tcptop first saw it: the model takes
    /// a TCP connection missing here for closed, whether or not its close event came. In a
    /// partial sample (`unchanged` is `Some`), only the TCP connections that changed since the
    /// previous sample (and every UDP flow): one missing is idle, not closed.
    pub conns: Vec<Conn>,
    /// Lifecycle events since the previous sample, oldest first. A `Closed` event carries the
    /// connection's final totals; the connection is absent from `conns` from then on.
    pub events: Vec<ConnEvent>,
    /// Cumulative counts of what could not be recorded.
    pub overflow: Overflow,
    /// `None` for a complete sample; for a partial one, how many live TCP connections it
    /// leaves out as unchanged. The eBPF collector counts the slots in use it did not list,
    /// which include those of connections its filters leave out that sent or read.
    pub unchanged: Option<u64>,
}

impl Sample {
    /// A partial sample in which nothing changed: where no table was read yet.
    pub fn nothing_changed() -> Sample {
        Sample { unchanged: Some(0), ..Sample::default() }
    }

    /// Whether `conns` lists every live connection.
    pub fn is_complete(&self) -> bool {
        self.unchanged.is_none()
    }
}

/// What a collector had to drop; shown to the user, never hidden.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Overflow {
    /// Connections that found no room in the collector's table.
    pub untracked_conns: u64,
    /// Lifecycle events lost because their queue was full.
    pub lost_events: u64,
    /// Packets the capture backend dropped: its own queue's, libpcap's, and packets it could
    /// not decode.
    pub dropped_packets: u64,
}

impl Overflow {
    pub fn is_zero(&self) -> bool {
        *self == Overflow::default()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "TCP",
            Proto::Udp => "UDP",
        })
    }
}

/// TCP states, numbered as in the kernel's include/net/tcp_states.h.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TcpState {
    Established,
    SynSent,
    SynRecv,
    FinWait1,
    FinWait2,
    TimeWait,
    Close,
    CloseWait,
    LastAck,
    Listen,
    Closing,
    NewSynRecv,
    Unknown(u8),
}

impl TcpState {
    pub fn from_kernel(state: u8) -> TcpState {
        use TcpState::*;
        match state {
            1 => Established,
            2 => SynSent,
            3 => SynRecv,
            4 => FinWait1,
            5 => FinWait2,
            6 => TimeWait,
            7 => Close,
            8 => CloseWait,
            9 => LastAck,
            10 => Listen,
            11 => Closing,
            12 => NewSynRecv,
            other => Unknown(other),
        }
    }

    pub fn name(self) -> &'static str {
        use TcpState::*;
        match self {
            Established => "ESTABLISHED",
            SynSent => "SYN_SENT",
            SynRecv => "SYN_RECV",
            FinWait1 => "FIN_WAIT1",
            FinWait2 => "FIN_WAIT2",
            TimeWait => "TIME_WAIT",
            Close => "CLOSE",
            CloseWait => "CLOSE_WAIT",
            LastAck => "LAST_ACK",
            Listen => "LISTEN",
            Closing => "CLOSING",
            NewSynRecv => "NEW_SYN_RECV",
            Unknown(_) => "UNKNOWN",
        }
    }
}

impl fmt::Display for TcpState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for TcpState {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

/// One connection as a collector last saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conn {
    /// The collector's key for the connection, unique for one run.
    pub id: u64,
    /// The owning process; `None` until a process was seen sending or reading.
    pub pid: Option<u32>,
    pub comm: Arc<str>,
    pub proto: Proto,
    /// IPv4-mapped IPv6 addresses are given as IPv4.
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// `None` for UDP.
    pub state: Option<TcpState>,
    /// Bytes the application wrote, since tcptop first saw the connection.
    pub tx_bytes: u64,
    /// Bytes the application read, since tcptop first saw the connection.
    pub rx_bytes: u64,
    /// Inode number of the socket's network namespace, when the collector knows it: two
    /// connections with the same addresses in two namespaces are two connections.
    pub netns: Option<u32>,
    /// The owning process's cgroup path (e.g. "/system.slice/docker-<id>.scope"), when known:
    /// one string shared by the connections of a cgroup.
    pub cgroup: Option<Arc<str>>,
    /// The health figures of a TCP connection; `None` for UDP.
    pub health: Option<TcpHealth>,
}

/// What is known of a TCP connection's health: the kernel's own figures, or (`estimated`)
/// what the capture collector inferred from packets. Each figure is `None` where the
/// collector cannot know it: unknown, never a made-up zero.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TcpHealth {
    /// `None` until an RTT sample was taken.
    pub rtt: Option<Rtt>,
    /// Segments retransmitted since the connection began (or, estimated, since it was first
    /// seen), SYNs included.
    pub retrans: Option<u64>,
    /// The handshake, where its start was seen.
    pub connect: Option<Handshake>,
    pub resets_sent: Option<u32>,
    pub resets_received: Option<u32>,
    /// The figures come from packets seen on the wire, not from the kernel's socket: RTT
    /// from data-to-ACK times, retransmits from sequence ranges seen twice.
    pub estimated: bool,
}

/// Round-trip times as the kernel's estimator holds them (TCP_INFO's tcpi_rtt, tcpi_rttvar,
/// tcpi_min_rtt), or as the capture collector estimates them the same way, in microseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Rtt {
    pub smoothed_us: u32,
    /// The smoothed mean deviation.
    pub variation_us: u32,
    /// The minimum over the kernel's window (5 minutes by default); estimated, over the
    /// connection's life.
    pub min_us: u32,
}

/// How a connection's handshake went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Handshake {
    /// From SYN_SENT (or SYN_RECV) to ESTABLISHED; for a failed connect, to CLOSE.
    pub took: Duration,
    /// The connect failed: SYN_SENT went to CLOSE (refused, timed out, aborted).
    pub failed: bool,
}

impl Conn {
    /// The state as views show it: FAILED for a connect that failed (its state is CLOSE);
    /// `None` for UDP.
    pub fn state_label(&self) -> Option<&'static str> {
        let failed = self.health.and_then(|h| h.connect).is_some_and(|c| c.failed);
        self.state.map(|state| if failed { "FAILED" } else { state.name() })
    }

    /// A short name for the connection's container or service, from its cgroup path.
    pub fn container(&self) -> Option<String> {
        self.cgroup.as_deref().map(container_name)
    }
}

/// Shortens a cgroup path to what identifies a container: the 12-character id of a
/// Docker, containerd, CRI-O or Podman container, or the systemd unit; else the path.
pub fn container_name(cgroup_path: &str) -> String {
    let leaf = cgroup_path.rsplit('/').next().unwrap_or(cgroup_path);
    let id = ["docker-", "cri-containerd-", "crio-", "libpod-", "containerd-"]
        .iter()
        .find_map(|prefix| leaf.strip_prefix(prefix))
        .map(|rest| rest.trim_end_matches(".scope"))
        .unwrap_or(leaf);
    if id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        id[..12].to_string()
    } else if leaf.ends_with(".service") || leaf.ends_with(".scope") {
        leaf.to_string()
    } else {
        cgroup_path.to_string()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    State { old: TcpState, new: TcpState },
    Closed,
}

/// A lifecycle event, delivered as it happened rather than sampled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnEvent {
    /// When the event happened, on the collector's monotonic clock (CLOCK_MONOTONIC for
    /// eBPF, time since the capture started for capture): only differences mean anything.
    pub at: Duration,
    pub kind: EventKind,
    pub conn: Conn,
}

/// An established TCP connection with these ends and totals: the fixture of unit tests.
#[cfg(test)]
pub(crate) fn test_conn(id: u64, pid: u32, comm: &str, ends: (&str, &str), (rx, tx): (u64, u64)) -> Conn {
    Conn {
        id,
        pid: Some(pid),
        comm: comm.into(),
        proto: Proto::Tcp,
        local: ends.0.parse().unwrap(),
        remote: ends.1.parse().unwrap(),
        state: Some(TcpState::Established),
        rx_bytes: rx,
        tx_bytes: tx,
        netns: None,
        cgroup: None,
        health: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_names_from_cgroup_paths() {
        let id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        for (path, name) in [
            (format!("/system.slice/docker-{id}.scope"), "0123456789ab"),
            (format!("/docker/{id}"), "0123456789ab"),
            (format!("/kubepods.slice/kubepods-pod1.slice/cri-containerd-{id}.scope"), "0123456789ab"),
            (format!("/machine.slice/libpod-{id}.scope"), "0123456789ab"),
            (format!("/kubepods/burstable/pod1/crio-{id}.scope"), "0123456789ab"),
            ("/system.slice/nginx.service".into(), "nginx.service"),
            ("/user.slice/user-1000.slice/session-2.scope".into(), "session-2.scope"),
            ("/my/group".into(), "/my/group"),
            ("/".into(), "/"),
        ] {
            assert_eq!(container_name(&path), name, "{path}");
        }
    }
}
