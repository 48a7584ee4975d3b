//! The sock_diag collector: exact TCP byte counts without eBPF and without root, from the
//! counters the kernel keeps per socket (what `ss -ti` shows), read once per interval through
//! netlink in every network namespace tcptop may enter, and from the destroy multicast group
//! for the final counters of sockets that close between two reads.

mod bytes;
pub(crate) mod netlink;
mod track;

use std::collections::HashSet;
use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::collector::{Collector, Conn, ConnEvent, Family, Filters, Overflow, Proto, Sample};
use crate::procfs::{self, SocketOwners};
use netlink::{DestroyedLost, DiagSocket, TcpSocket};
use track::Tracker;

/// What the kernel may queue for the destroy group between two reads: some 50,000 closes as
/// root; for anyone else net.core.rmem_max caps it (212,992 bytes by default: some 200).
const DESTROY_QUEUE: usize = 64 << 20;

/// The sock_diag collector.
pub struct SockDiagCollector {
    namespaces: Vec<Namespace>,
    connections: Tracker,
    owners: SocketOwners,
    filters: Filters,
    families: Vec<Family>,
    lost_events: u64,
    /// `backend`: "sockdiag", then what it cannot see, as the eBPF plan names its degraded
    /// parts ("sockdiag/unprivileged/no-destroy"), for the header, summary line and records.
    name: String,
    /// Bytes each destroy group socket may queue.
    destroy_queue: usize,
    /// Namespaces whose destroy messages were missed since the last `collect`.
    unheard: HashSet<u32>,
    /// Those of them whose queue overflowed (the others have no destroy group).
    overflowed: HashSet<u32>,
    started: Instant,
}

/// One network namespace's sockets.
struct Namespace {
    inode: u32,
    dumps: DiagSocket,
    /// `None` where the kernel refused the destroy group.
    destroyed: Option<DiagSocket>,
    /// Its count of IPv6 TCP sockets: a dump walks the kernel's whole connection hash, so the
    /// IPv6 one is left out while there are none. `None` where it cannot be read.
    tcp6_in_use: Option<procfs::Tcp6InUse>,
}

impl SockDiagCollector {
    /// Opens sock_diag in this network namespace and in every other one this process may enter.
    /// `note` hears what it cannot see, and why.
    pub fn open(filters: &Filters, note: &mut dyn FnMut(&str)) -> Result<Self> {
        SockDiagCollector::with_destroy_queue(filters, note, DESTROY_QUEUE)
    }

    /// `open`, with a destroy group queue of `bytes` in each namespace (the kernel doubles
    /// it, and sets a floor): a small one shows what a full queue loses.
    pub fn with_destroy_queue(filters: &Filters, note: &mut dyn FnMut(&str), bytes: usize) -> Result<Self> {
        if filters.proto == Some(Proto::Udp) {
            bail!("sock_diag has no byte counts for UDP: --udp needs eBPF or packet capture");
        }
        if filters.cgroup.is_some() {
            bail!("sock_diag does not tell a socket's cgroup: --cgroup needs eBPF");
        }
        let own =
            Namespace::open(fs::metadata("/proc/self/ns/net").map_or(0, |meta| meta.ino() as u32), bytes)
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
            connections: Tracker::default(),
            owners: SocketOwners::default(),
            filters: filters.clone(),
            families,
            lost_events: 0,
            name,
            destroy_queue: bytes,
            unheard: HashSet::new(),
            overflowed: HashSet::new(),
            started: Instant::now(),
        };
        collector.enter_new_namespaces()?;
        // What the first read finds predates tcptop: it counts from here.
        for (netns, socket) in collector.dump_all()? {
            collector.connections.baseline(netns, &socket);
        }
        Ok(collector)
    }

    /// Opens sockets in each network namespace in use that has none yet, and closes those of
    /// namespaces no longer in use once none of their connections is tracked (a namespace
    /// that a scan missed for a moment keeps its connections' baselines). A namespace it may
    /// not enter (no CAP_SYS_ADMIN) is left out.
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
            let opened = Namespace::open(inode, self.destroy_queue);
            enter(&own).context("returning to tcptop's network namespace")?;
            self.namespaces.extend(opened.ok());
        }
        let connections = &self.connections;
        self.namespaces.retain(|ns| in_use.contains(&ns.inode) || connections.holds(ns.inode));
        Ok(())
    }

    /// One dump of every namespace, each socket with its namespace's inode.
    fn dump_all(&mut self) -> Result<Vec<(u32, TcpSocket)>> {
        let mut all = Vec::new();
        let mut sockets = Vec::new();
        for ns in &mut self.namespaces {
            for &family in &self.families {
                if family == Family::V6 && ns.tcp6_in_use.as_mut().is_some_and(|count| !count.any()) {
                    continue;
                }
                ns.dumps.dump(family, &mut sockets)?;
            }
            all.extend(sockets.drain(..).map(|socket| (ns.inode, socket)));
        }
        Ok(all)
    }

    /// Inside the --port and --pid filters.
    fn wanted(&self, conn: &Conn) -> bool {
        let port = self.filters.port;
        port.is_none_or(|port| conn.local.port() == port || conn.remote.port() == port)
            && self.filters.pid.is_none_or(|pid| conn.pid == Some(pid))
    }

    /// The events of destroyed sockets; notes the namespaces that missed some (the kernel
    /// found their queue full, or refused the group) in `unheard`.
    fn read_destroyed(&mut self, events: &mut Vec<ConnEvent>) -> Result<()> {
        let mut destroyed = Vec::new();
        for ns in &mut self.namespaces {
            let Some(listener) = &mut ns.destroyed else {
                self.unheard.insert(ns.inode);
                continue;
            };
            let mut sockets = Vec::new();
            match listener.destroyed(&mut sockets) {
                Ok(()) => {}
                Err(DestroyedLost::Overflow) => {
                    self.unheard.insert(ns.inode);
                    self.overflowed.insert(ns.inode);
                }
                Err(DestroyedLost::Unreadable(e)) => return Err(e),
            }
            destroyed.extend(sockets.into_iter().map(|socket| (ns.inode, socket)));
        }
        let at = self.started.elapsed();
        let mut all = Vec::new();
        for (netns, socket) in destroyed {
            self.connections.destroyed(netns, &socket, at, &mut all);
        }
        events.extend(all.into_iter().filter(|event| self.wanted(&event.conn)));
        Ok(())
    }
}

impl Namespace {
    /// Sockets of the calling thread's network namespace, whose inode is `inode`.
    fn open(inode: u32, destroy_queue: usize) -> std::io::Result<Namespace> {
        Ok(Namespace {
            inode,
            dumps: DiagSocket::open()?,
            destroyed: DiagSocket::open_destroy_listener(destroy_queue).ok(),
            tcp6_in_use: procfs::Tcp6InUse::open().ok(),
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
        self.read_destroyed(&mut events)?;
        Ok(events)
    }

    fn collect(&mut self) -> Result<Sample> {
        // Destroyed sockets first: one destroyed after this point is still in the dump, and
        // its close arrives with the next sample.
        let mut events = Vec::new();
        self.read_destroyed(&mut events)?;
        let unheard = std::mem::take(&mut self.unheard);
        // What the last sweep closed unheard had its destroy message read by now, if any came.
        self.connections.forget_unheard();
        self.enter_new_namespaces()?;
        let sockets = self.dump_all()?;
        // Owners for the connections not named yet: a /proc scan only if one is new.
        let unnamed: Vec<u64> = sockets
            .iter()
            .filter(|(_, s)| s.inode != 0 && !self.connections.has_owner(s.cookie))
            .map(|(_, s)| u64::from(s.inode))
            .collect();
        let mut owners = self.owners.lookup(unnamed.iter().copied()).into_iter();
        let at = self.started.elapsed();
        let mut all = Vec::new();
        let mut present = HashSet::with_capacity(sockets.len());
        for (netns, socket) in &sockets {
            present.insert(socket.cookie);
            let unnamed = socket.inode != 0 && !self.connections.has_owner(socket.cookie);
            let owner = if unnamed { owners.next().flatten() } else { None };
            all.extend(self.connections.dumped(*netns, socket, owner, at));
        }
        let read = self.namespaces.iter().map(|ns| ns.inode).collect();
        // Each connection closed with the totals of its last read lost its destroy message;
        // a namespace whose queue overflowed lost one at least.
        let closed_in = self.connections.sweep(&present, &read, &unheard, at, &mut all);
        for netns in self.overflowed.drain() {
            self.lost_events += closed_in.iter().filter(|&&closed| closed == netns).count().max(1) as u64;
        }
        events.extend(all.into_iter().filter(|event| self.wanted(&event.conn)));
        let conns = self.connections.conns().filter(|conn| self.wanted(conn)).cloned().collect();
        let overflow = Overflow { lost_events: self.lost_events, ..Overflow::default() };
        Ok(Sample { conns, events, overflow, unchanged: None })
    }
}
