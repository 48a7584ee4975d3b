//! The sock_diag collector: exact TCP byte counts without eBPF and without root, from the
//! counters the kernel keeps per socket (what `ss -ti` shows), read once per interval through
//! netlink in every network namespace tcptop may enter, and from the destroy multicast group
//! for the final counters of sockets that close between two reads.

mod bytes;
mod netlink;

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::collector::{
    Collector, Conn, ConnEvent, EventKind, Family, Filters, Overflow, Proto, Rtt, Sample, TcpHealth, TcpState,
};
use crate::procfs::{self, SocketOwners};
use netlink::{DestroyedLost, DiagSocket, TcpSocket};

/// The sock_diag collector.
pub struct SockDiagCollector {
    namespaces: Vec<Namespace>,
    /// Every connection reported and not closed yet, by socket cookie.
    tracked: HashMap<u64, Tracked>,
    owners: SocketOwners,
    filters: Filters,
    families: Vec<Family>,
    lost_events: u64,
    /// `backend`: "sockdiag", then what it cannot see, as the eBPF plan names its degraded
    /// parts ("sockdiag/unprivileged/no-destroy"), for the header, summary line and records.
    name: String,
    /// Namespaces whose destroy messages were missed since the last `collect`.
    unheard: HashSet<u32>,
    started: Instant,
}

/// One network namespace's sockets.
struct Namespace {
    inode: u32,
    dumps: DiagSocket,
    /// `None` where the kernel refused the destroy group.
    destroyed: Option<DiagSocket>,
}

struct Tracked {
    netns: u32,
    /// The application's totals when tcptop first saw the connection, if it predates tcptop.
    baseline: (u64, u64),
    /// As last reported.
    conn: Conn,
}

impl SockDiagCollector {
    /// Opens sock_diag in this network namespace and in every other one this process may enter.
    /// `note` hears what it cannot see, and why.
    pub fn open(filters: &Filters, note: &mut dyn FnMut(&str)) -> Result<Self> {
        if filters.proto == Some(Proto::Udp) {
            bail!("sock_diag has no byte counts for UDP: --udp needs eBPF or packet capture");
        }
        if filters.cgroup.is_some() {
            bail!("sock_diag does not tell a socket's cgroup: --cgroup needs eBPF");
        }
        let own = Namespace::open(fs::metadata("/proc/self/ns/net").map_or(0, |meta| meta.ino() as u32))
            .context("opening a NETLINK_SOCK_DIAG socket")?;
        if own.destroyed.is_none() {
            note(
                "sock_diag: the kernel refused tcptop its destroy group: a connection that closes \
                 between two reads keeps the totals of the last read, one that opens and closes \
                 between two reads is not shown",
            );
        }
        if filters.proto.is_none() {
            note("sock_diag: TCP alone is counted (the kernel keeps no byte counts of UDP sockets)");
        }
        let mut name = String::from("sockdiag");
        let unprivileged = unsafe { libc::geteuid() } != 0;
        if unprivileged {
            name.push_str("/unprivileged");
        }
        if own.destroyed.is_none() {
            name.push_str("/no-destroy");
        }
        if unprivileged {
            note(
                "sock_diag: not root: other users' processes are not named (their /proc/<pid>/fd is \
                 closed to you), and other network namespaces are not read",
            );
        }
        let families = match filters.family {
            Some(family) => vec![family],
            None => vec![Family::V4, Family::V6],
        };
        let mut collector = SockDiagCollector {
            namespaces: vec![own],
            tracked: HashMap::new(),
            owners: SocketOwners::default(),
            filters: filters.clone(),
            families,
            lost_events: 0,
            name,
            unheard: HashSet::new(),
            started: Instant::now(),
        };
        collector.enter_new_namespaces()?;
        // What the first read finds predates tcptop: it counts from here.
        let sockets = collector.dump_all()?;
        for (netns, socket) in sockets {
            let baseline = (socket.counters.written(false), socket.counters.read(false));
            let conn = collector.conn_from(&socket, netns, baseline, false);
            collector.tracked.insert(socket.cookie, Tracked { netns, baseline, conn });
        }
        Ok(collector)
    }

    /// Opens sockets in each network namespace in use that has none yet, and closes those of
    /// namespaces no longer in use. A namespace it may not enter (no CAP_SYS_ADMIN) is left out.
    fn enter_new_namespaces(&mut self) -> Result<()> {
        let own = File::open("/proc/thread-self/ns/net").context("opening tcptop's network namespace")?;
        let mut in_use = HashSet::from([self.namespaces[0].inode]);
        for path in procfs::other_network_namespaces() {
            let Ok(file) = File::open(&path) else { continue };
            let Ok(meta) = file.metadata() else { continue };
            let inode = meta.ino() as u32;
            in_use.insert(inode);
            if self.namespaces.iter().any(|ns| ns.inode == inode) || enter(&file).is_err() {
                continue;
            }
            let opened = Namespace::open(inode);
            enter(&own).context("returning to tcptop's network namespace")?;
            self.namespaces.extend(opened.ok());
        }
        self.namespaces.retain(|ns| in_use.contains(&ns.inode));
        Ok(())
    }

    /// One dump of every namespace, each socket with its namespace's inode.
    fn dump_all(&mut self) -> Result<Vec<(u32, TcpSocket)>> {
        let mut all = Vec::new();
        let mut sockets = Vec::new();
        for ns in &mut self.namespaces {
            for &family in &self.families {
                ns.dumps.dump(family, &mut sockets)?;
            }
            all.extend(sockets.drain(..).map(|socket| (ns.inode, socket)));
        }
        Ok(all)
    }

    /// The connection `socket` is, with totals since `baseline`, inside the --port filter.
    fn conn_from(&self, socket: &TcpSocket, netns: u32, baseline: (u64, u64), destroyed: bool) -> Conn {
        let c = &socket.counters;
        Conn {
            id: socket.cookie,
            pid: None,
            comm: String::new(),
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

    fn wanted(&self, conn: &Conn) -> bool {
        let port = self.filters.port;
        port.is_none_or(|port| conn.local.port() == port || conn.remote.port() == port)
            && self.filters.pid.is_none_or(|pid| conn.pid == Some(pid))
    }

    /// The Closed events of destroyed sockets, and whether each namespace missed some.
    fn read_destroyed(&mut self, events: &mut Vec<ConnEvent>) -> Result<HashSet<u32>> {
        let mut lost_in = HashSet::new();
        let mut destroyed = Vec::new();
        for ns in &mut self.namespaces {
            let Some(listener) = &mut ns.destroyed else {
                lost_in.insert(ns.inode);
                continue;
            };
            let mut sockets = Vec::new();
            match listener.destroyed(&mut sockets) {
                Ok(()) => {}
                Err(DestroyedLost::Overflow) => {
                    self.lost_events += 1;
                    lost_in.insert(ns.inode);
                }
                Err(DestroyedLost::Unreadable(e)) => return Err(e),
            }
            destroyed.extend(sockets.into_iter().map(|socket| (ns.inode, socket)));
        }
        let at = self.started.elapsed();
        for (netns, socket) in destroyed {
            let tracked = self.tracked.remove(&socket.cookie);
            let baseline = tracked.as_ref().map_or((0, 0), |t| t.baseline);
            let mut conn = self.conn_from(&socket, netns, baseline, true);
            if let Some(last) = tracked {
                (conn.pid, conn.comm) = (last.conn.pid, last.conn.comm);
            }
            // Listeners and sockets that never connected are destroyed too.
            if conn.remote.port() != 0 && self.wanted(&conn) {
                events.push(ConnEvent { at, kind: EventKind::Closed, conn });
            }
        }
        Ok(lost_in)
    }
}

impl Namespace {
    /// Sockets of the calling thread's network namespace, whose inode is `inode`.
    fn open(inode: u32) -> std::io::Result<Namespace> {
        Ok(Namespace {
            inode,
            dumps: DiagSocket::open()?,
            destroyed: DiagSocket::open_destroy_listener().ok(),
        })
    }
}

/// Moves this thread into the network namespace `namespace` is a file of.
fn enter(namespace: &File) -> std::io::Result<()> {
    // SAFETY: setns only reads the descriptor; a network namespace change affects no memory.
    if unsafe { libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

impl Collector for SockDiagCollector {
    fn backend(&self) -> &str {
        &self.name
    }

    /// The closes the destroy group told of meanwhile, without a dump: the collection thread
    /// calls this every 100 ms, and a dump per call would cost far more than the closes.
    fn wait_events(&mut self, timeout: Duration) -> Result<Vec<ConnEvent>> {
        std::thread::sleep(timeout);
        let mut events = Vec::new();
        let unheard = self.read_destroyed(&mut events)?;
        self.unheard.extend(unheard);
        Ok(events)
    }

    fn collect(&mut self) -> Result<Sample> {
        // Destroyed sockets first: one destroyed after this point is still in the dump, and
        // its close arrives with the next sample.
        let mut events = Vec::new();
        let mut unheard = self.read_destroyed(&mut events)?;
        unheard.extend(self.unheard.drain());
        self.enter_new_namespaces()?;
        let sockets = self.dump_all()?;
        self.owners.lookup(sockets.iter().map(|(_, s)| u64::from(s.inode)).filter(|&ino| ino != 0));
        let mut present = HashSet::new();
        for (netns, socket) in &sockets {
            present.insert(socket.cookie);
            let baseline = self.tracked.get(&socket.cookie).map_or((0, 0), |t| t.baseline);
            let mut conn = self.conn_from(socket, *netns, baseline, false);
            let owner = self.owners.lookup([u64::from(socket.inode)]).pop().flatten();
            let known = self.tracked.get(&socket.cookie).map(|t| (t.conn.pid, t.conn.comm.clone()));
            match (owner, known) {
                (Some(owner), _) => (conn.pid, conn.comm) = (Some(owner.pid), owner.comm),
                (None, Some(known)) => (conn.pid, conn.comm) = known,
                (None, None) => {}
            }
            self.tracked.insert(socket.cookie, Tracked { netns: *netns, baseline, conn });
        }
        // A connection gone from the dump but not destroyed (TIME_WAIT, or closed while its
        // file is still open) keeps its last totals until its destroy message; where none can
        // come, its close is now.
        let namespaces: HashSet<u32> = self.namespaces.iter().map(|ns| ns.inode).collect();
        let at = self.started.elapsed();
        let gone: Vec<u64> = self
            .tracked
            .iter()
            .filter(|(cookie, t)| {
                !present.contains(cookie) && (unheard.contains(&t.netns) || !namespaces.contains(&t.netns))
            })
            .map(|(&cookie, _)| cookie)
            .collect();
        for cookie in gone {
            let conn = self.tracked.remove(&cookie).expect("listed").conn;
            if self.wanted(&conn) {
                events.push(ConnEvent { at, kind: EventKind::Closed, conn });
            }
        }
        let conns = self.tracked.values().map(|t| t.conn.clone()).filter(|conn| self.wanted(conn)).collect();
        let overflow = Overflow { lost_events: self.lost_events, ..Overflow::default() };
        Ok(Sample { conns, events, overflow })
    }
}
