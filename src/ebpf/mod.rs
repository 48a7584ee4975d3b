//! The Linux eBPF collector: loads tcptop.bpf.c with the first attach strategy that loads and
//! attaches, then reads the in-kernel connection table once per interval.

mod skel;
mod strategy;
mod table;

pub use strategy::{Strategy, Table};

use std::cell::RefCell;
use std::fs::{self, File};
use std::io::Read;
use std::mem::MaybeUninit;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};
use libbpf_rs::{Iter, Link, ProgramType, RingBuffer, RingBufferBuilder};

use crate::collector::{
    Collector, Conn, ConnEvent, EventKind, Family, Filters, Overflow, Proto, Sample, TcpState,
};
use crate::procfs::{self, CgroupPaths, SocketOwners};
use skel::{types, TcptopSkel, TcptopSkelBuilder};
use strategy::counted;
use table::TableView;

// SAFETY: plain C structs of integers and byte arrays, valid for any bit pattern.
unsafe impl plain::Plain for types::conn_info {}
unsafe impl plain::Plain for types::conn_event {}

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const CONN_EVENT_CLOSED: u8 = 2;
const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// The eBPF collector. Dropping it detaches every program.
pub struct EbpfCollector {
    strategy: Strategy,
    // Fields drop in order: links and the ring buffer before the object they use.
    _hooks: Vec<Link>,
    /// The table iterators of the protocols counted: TCP connections, UDP flows.
    dumps: Vec<Link>,
    ring: RingBuffer<'static>,
    arrived: Rc<RefCell<Vec<types::conn_event>>>,
    skel: TcptopSkel<'static>,
    table: TableView,
    /// Rows that did not fit in the table, as the iterators wrote them.
    dump_buf: Vec<u8>,
    owners: SocketOwners,
    cgroups: CgroupPaths,
}

/// Checks what the kernel side needs before anything is loaded, so that each missing piece
/// gets its own one-line explanation.
pub fn preflight() -> Result<()> {
    if !has_bpf_capabilities(&fs::read_to_string("/proc/self/status").unwrap_or_default()) {
        bail!(
            "needs root, or the CAP_BPF and CAP_PERFMON capabilities, to load its eBPF \
             probes: run it as `sudo tcptop`"
        );
    }
    if !Path::new(VMLINUX_BTF).exists() {
        bail!(
            "this kernel has no BTF ({VMLINUX_BTF} is missing): tcptop's eBPF probes need a \
             kernel built with CONFIG_DEBUG_INFO_BTF=y"
        );
    }
    Ok(())
}

/// CAP_SYS_ADMIN, or CAP_BPF with CAP_PERFMON, in the effective set of a /proc status file.
fn has_bpf_capabilities(status: &str) -> bool {
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_PERFMON: u32 = 38;
    const CAP_BPF: u32 = 39;
    let Some(effective) = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
    else {
        return false;
    };
    let has = |cap: u32| effective & (1 << cap) != 0;
    has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON))
}

impl EbpfCollector {
    /// Loads the first of `strategies` that loads and attaches. `note` hears why each one
    /// that was tried failed.
    pub fn open(strategies: &[Strategy], filters: &Filters, note: &mut dyn FnMut(&str)) -> Result<Self> {
        let mut failures = Vec::new();
        for &strategy in strategies {
            match Self::open_with(strategy, filters) {
                Ok(collector) => return Ok(collector),
                Err(e) => {
                    note(&format!("probe strategy {strategy} failed: {e:#}"));
                    failures.push((strategy, e));
                }
            }
        }
        match failures.pop() {
            Some((strategy, e)) if failures.is_empty() => {
                Err(e.context(format!("the {strategy} probe strategy cannot run on this kernel")))
            }
            last => {
                let all: Vec<String> =
                    failures.iter().chain(&last).map(|(s, e)| format!("{s}: {e:#}")).collect();
                bail!("no probe strategy works on this kernel ({})", all.join("; "))
            }
        }
    }

    fn open_with(strategy: Strategy, filters: &Filters) -> Result<Self> {
        // The skeleton borrows its object storage for as long as it lives; one small box
        // per attempt, for the life of the process.
        let storage = Box::leak(Box::new(MaybeUninit::uninit()));
        let mut open = TcptopSkelBuilder::default().open(storage).context("opening the BPF object")?;
        let settings = open.maps.rodata_data.as_deref_mut().expect("tcptop.bpf.c has settings");
        settings.filter_pid = filters.pid.unwrap_or(0);
        settings.filter_port = filters.port.unwrap_or(0);
        settings.filter_family = match filters.family {
            None => 0,
            Some(Family::V4) => AF_INET,
            Some(Family::V6) => AF_INET6,
        };
        if let Some(path) = &filters.cgroup {
            settings.filter_cgroup =
                procfs::cgroup_id(path).with_context(|| format!("no cgroup directory at {path}"))?;
        }
        settings.filter_proto = match filters.proto {
            None => 0,
            Some(Proto::Tcp) => IPPROTO_TCP,
            Some(Proto::Udp) => IPPROTO_UDP,
        };
        settings.udp_idle_ns = filters.udp_idle.as_nanos().try_into().unwrap_or(u64::MAX);
        let protos = counted(filters.proto);
        for mut prog in open.open_object_mut().progs_mut() {
            let load = strategy.loads(&prog.name().to_string_lossy(), protos);
            prog.set_autoload(load);
        }
        for mut map in open.open_object_mut().maps_mut() {
            let create = strategy.creates(&map.name().to_string_lossy());
            map.set_autocreate(create)?;
        }
        let table_rows = table::rows_for(procfs::sockets_in_use());
        open.maps.table.set_max_entries(table_rows)?;
        let skel = open.load().map_err(|e| explain_load_failure(strategy, e.into()))?;

        let mut skel = skel;
        let mut hooks = Vec::new();
        // cgroup hooks attach to the root of the cgroup v2 tree: every process is below it.
        let mut cgroup_root = None;
        for prog in skel.object_mut().progs_mut() {
            let name = prog.name().to_string_lossy().into_owned();
            if !protos.iter().any(|&proto| strategy.hooks(proto).contains(&name.as_str())) {
                continue;
            }
            let link = if prog.prog_type() == ProgramType::CgroupSockAddr {
                let root = match &cgroup_root {
                    Some(root) => root,
                    None => cgroup_root.insert(open_cgroup_root()?),
                };
                prog.attach_cgroup(root.as_raw_fd())
            } else {
                prog.attach()
            };
            hooks.push(link.with_context(|| format!("attaching {name}"))?);
        }
        let (progs, maps) = (&skel.progs, &skel.maps);
        let mut dumps = Vec::new();
        for proto in protos {
            let dump = match (proto, strategy.table()) {
                (Proto::Tcp, Table::SocketStorage) => progs.dump_sk_conns.attach_iter(maps.sk_conns.as_fd()),
                (Proto::Tcp, Table::Hash) => progs.dump_hash_conns.attach_iter(maps.hash_conns.as_fd()),
                (Proto::Udp, _) => progs.dump_udp_flows.attach_iter(maps.udp_flows.as_fd()),
            };
            dumps.push(dump.context("attaching the table iterator")?);
        }
        // With the hooks attached, claim the connections that were open before tcptop.
        if protos.contains(&Proto::Tcp) {
            let adopt = match strategy.table() {
                Table::SocketStorage => &progs.adopt_tcp_socks,
                Table::Hash => &progs.adopt_tcp_socks_hash,
            };
            adopt
                .attach()
                .map_err(Into::into)
                .and_then(|link| adopt_in_every_namespace(&link))
                .context("listing the connections open before tcptop")?;
        }

        let arrived = Rc::new(RefCell::new(Vec::new()));
        let sink = Rc::clone(&arrived);
        let mut builder = RingBufferBuilder::new();
        builder.add(&skel.maps.events, move |data: &[u8]| {
            let mut raw = types::conn_event::default();
            if plain::copy_from_bytes(&mut raw, data).is_ok() {
                sink.borrow_mut().push(raw);
            }
            0
        })?;
        let ring = builder.build()?;
        let table = TableView::map(skel.maps.table.as_fd(), table_rows).context("mapping the table")?;
        Ok(EbpfCollector {
            strategy,
            _hooks: hooks,
            dumps,
            ring,
            arrived,
            skel,
            table,
            dump_buf: Vec::new(),
            owners: SocketOwners::default(),
            cgroups: CgroupPaths::default(),
        })
    }

    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// Rows the memory-mapped table holds; more arrive through the iterator's output.
    pub fn table_rows(&self) -> usize {
        self.table.capacity()
    }

    /// tcptop.bpf.c's global variables, which the kernel changes behind the compiler's back.
    fn globals(&mut self) -> &mut types::bss {
        self.skel.maps.bss_data.as_deref_mut().expect("tcptop.bpf.c has global variables")
    }

    fn overflow(&mut self) -> Overflow {
        // SAFETY: a read of memory-mapped .bss, which is always valid.
        let drops = unsafe { std::ptr::read_volatile(&self.globals().drops) };
        Overflow {
            untracked_conns: drops.conns_untracked,
            lost_events: drops.events_lost,
            dropped_packets: 0,
        }
    }
}

/// Runs an iterator to its end. A read() that visits a million objects without output fails
/// with EAGAIN, and the next one goes on from there (bpf_seq_read in kernel/bpf/bpf_iter.c).
fn read_iterator(link: &Link, out: &mut Vec<u8>) -> Result<()> {
    let mut iter = Iter::new(link)?;
    loop {
        match iter.read_to_end(out) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            result => return Ok(result.map(drop)?),
        }
    }
}

/// Runs the iterator that claims the connections open before tcptop in every network
/// namespace: iter/tcp lists the namespace of the thread that opens it, so this thread enters
/// each in turn, then returns. A namespace it may not enter (no CAP_SYS_ADMIN) or that is gone
/// is left out: its connections show at their first send or read.
fn adopt_in_every_namespace(adopt: &Link) -> Result<()> {
    read_iterator(adopt, &mut Vec::new())?;
    let own = File::open("/proc/thread-self/ns/net").context("opening tcptop's network namespace")?;
    for path in procfs::other_network_namespaces() {
        let Ok(namespace) = File::open(&path) else { continue };
        if enter_network_namespace(&namespace).is_err() {
            continue;
        }
        let adopted = read_iterator(adopt, &mut Vec::new());
        enter_network_namespace(&own).context("returning to tcptop's network namespace")?;
        adopted.with_context(|| format!("in the network namespace of {}", path.display()))?;
    }
    Ok(())
}

/// Moves this thread into the network namespace `namespace` is a file of.
fn enter_network_namespace(namespace: &File) -> std::io::Result<()> {
    // SAFETY: setns only reads the descriptor; a network namespace change affects no memory.
    if unsafe { libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The cgroup v2 root, where the tracepoint strategy's UDP peer hooks attach.
fn open_cgroup_root() -> Result<File> {
    let root = procfs::cgroup2_root().context(
        "no cgroup v2 hierarchy is mounted, which the UDP hooks of the tracepoint strategy need \
         (--tcp counts TCP alone without them)",
    )?;
    File::open(&root).with_context(|| format!("opening {}", root.display()))
}

/// Turns the kernel's terse refusals into what the user can act on.
fn explain_load_failure(strategy: Strategy, error: anyhow::Error) -> anyhow::Error {
    if strategy == Strategy::Tracepoint && !kernel_has_type("btf_trace_sock_send_length") {
        return anyhow!("this kernel has no sock:sock_send_length tracepoint (it came in Linux 6.3)");
    }
    error.context(format!("loading the {strategy} programs"))
}

fn kernel_has_type(name: &str) -> bool {
    libbpf_rs::btf::Btf::from_vmlinux()
        .is_ok_and(|btf| btf.type_by_name::<libbpf_rs::btf::BtfType<'_>>(name).is_some())
}

impl Collector for EbpfCollector {
    fn backend(&self) -> &str {
        self.strategy.name()
    }

    fn collect(&mut self) -> Result<Sample> {
        // Events first: a connection closed after this point is still in the dump, and the
        // model keeps its totals until its close event arrives in the next sample.
        self.ring.consume().context("reading connection events")?;
        let raw_events = std::mem::take(&mut *self.arrived.borrow_mut());
        // SAFETY: writes and reads of memory-mapped .bss, which is always valid.
        unsafe { std::ptr::write_volatile(&mut self.globals().table_rows, 0) };
        self.dump_buf.clear();
        for dump in &self.dumps {
            read_iterator(dump, &mut self.dump_buf).context("reading the connection table")?;
        }
        let rows = unsafe { std::ptr::read_volatile(&self.globals().table_rows) } as usize;
        let overflowed = self.dump_buf.chunks_exact(size_of::<types::conn_info>()).map(|record| {
            let mut info = types::conn_info::default();
            plain::copy_from_bytes(&mut info, record).expect("records are whole");
            info
        });
        let infos: Vec<types::conn_info> = self.table.rows(rows).chain(overflowed).collect();
        self.find_owners(infos.iter().chain(raw_events.iter().map(|raw| &raw.info)));
        let conns = infos.iter().map(|info| self.conn_from(info)).collect();
        let events = raw_events.iter().map(|raw| self.event_from(raw)).collect();
        Ok(Sample { conns, events, overflow: self.overflow() })
    }

    fn wait_events(&mut self, timeout: Duration) -> Result<Vec<ConnEvent>> {
        match self.ring.poll(timeout) {
            // A signal ended the wait early: hand on what arrived; the caller decides.
            Err(e) if e.kind() == libbpf_rs::ErrorKind::Interrupted => {}
            result => result.context("waiting for connection events")?,
        }
        let raw_events = std::mem::take(&mut *self.arrived.borrow_mut());
        self.find_owners(raw_events.iter().map(|raw| &raw.info));
        Ok(raw_events.iter().map(|raw| self.event_from(raw)).collect())
    }
}

impl EbpfCollector {
    fn event_from(&mut self, raw: &types::conn_event) -> ConnEvent {
        let kind = if raw.kind == CONN_EVENT_CLOSED {
            EventKind::Closed
        } else {
            EventKind::State {
                old: TcpState::from_kernel(raw.old_state),
                new: TcpState::from_kernel(raw.new_state),
            }
        };
        ConnEvent { at: Duration::from_nanos(raw.timestamp_ns), kind, conn: self.conn_from(&raw.info) }
    }

    /// Scans /proc once for the owners of all the sockets among `infos` that have none yet
    /// (those that predate tcptop), rather than once per socket.
    fn find_owners<'a>(&mut self, infos: impl Iterator<Item = &'a types::conn_info> + Clone) {
        self.owners
            .lookup(infos.filter(|info| info.pid == 0 && info.sock_ino != 0).map(|info| info.sock_ino));
    }

    /// The kernel's record, with what /proc and the cgroup tree add: the owner of a socket
    /// that predates tcptop, and the cgroup path.
    fn conn_from(&mut self, info: &types::conn_info) -> Conn {
        let mut conn = conn_from(info);
        if conn.pid.is_none() && info.sock_ino != 0 {
            if let Some(owner) = self.owners.lookup([info.sock_ino]).pop().flatten() {
                conn.pid = Some(owner.pid);
                conn.comm = owner.comm;
            }
        }
        if info.cgroup_id != 0 {
            conn.cgroup = self.cgroups.lookup(info.cgroup_id);
        }
        conn
    }
}

/// The kernel's record alone.
fn conn_from(info: &types::conn_info) -> Conn {
    let address = |bytes: &[u8; 16], port: u16| {
        let ip = if info.family == AF_INET6 {
            Ipv6Addr::from(*bytes).to_canonical()
        } else {
            IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
        };
        SocketAddr::new(ip, port)
    };
    let comm_len = info.comm.iter().position(|&b| b == 0).unwrap_or(info.comm.len());
    let proto = if info.proto == IPPROTO_UDP { Proto::Udp } else { Proto::Tcp };
    Conn {
        id: info.id,
        pid: (info.pid != 0).then_some(info.pid),
        comm: String::from_utf8_lossy(&info.comm[..comm_len]).into_owned(),
        proto,
        local: address(&info.laddr, info.lport),
        remote: address(&info.raddr, info.rport),
        state: (proto == Proto::Tcp).then(|| TcpState::from_kernel(info.state)),
        tx_bytes: info.tx_bytes,
        rx_bytes: info.rx_bytes,
        netns: (info.netns != 0).then_some(info.netns),
        cgroup: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_need_sys_admin_or_bpf_with_perfmon() {
        assert!(has_bpf_capabilities("Name:\ttcptop\nCapEff:\t000001ffffffffff\n"));
        assert!(has_bpf_capabilities("CapEff:\t000000c000000000\n"));
        assert!(!has_bpf_capabilities("CapEff:\t0000008000000000\n"));
        assert!(!has_bpf_capabilities("CapEff:\t0000000000000000\n"));
        assert!(!has_bpf_capabilities(""));
    }

    #[test]
    fn ipv4_mapped_addresses_are_shown_as_ipv4() {
        let mut info = types::conn_info {
            family: AF_INET6,
            lport: 80,
            rport: 5555,
            state: 1,
            proto: IPPROTO_TCP,
            ..Default::default()
        };
        info.laddr = Ipv4Addr::new(127, 0, 0, 1).to_ipv6_mapped().octets();
        info.raddr = Ipv6Addr::LOCALHOST.octets();
        info.comm[..4].copy_from_slice(b"curl");
        let conn = conn_from(&info);
        assert_eq!(conn.local, "127.0.0.1:80".parse().unwrap());
        assert_eq!(conn.remote, "[::1]:5555".parse().unwrap());
        assert_eq!((conn.comm.as_str(), conn.pid, conn.state), ("curl", None, Some(TcpState::Established)));
    }

    #[test]
    fn udp_flows_have_no_state() {
        let info = types::conn_info { family: AF_INET, pid: 7, proto: IPPROTO_UDP, ..Default::default() };
        let conn = conn_from(&info);
        assert_eq!((conn.proto, conn.state, conn.pid), (Proto::Udp, None, Some(7)));
    }
}
