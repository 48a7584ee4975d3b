//! The packet-capture collector (libpcap): tcptop's collector on macOS, where PKTAP names
//! each packet's process, and on Linux where eBPF cannot run. A capture thread decodes
//! packets into a bounded queue; `collect` assembles them into connections.

pub mod assemble;
pub mod decode;
#[cfg(target_os = "linux")]
pub mod procfs;
mod table;

use std::collections::HashSet;
use std::fmt;
use std::mem;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use pcap::{Activated, Capture, Device, Linktype};

use crate::collector::{Collector, ConnEvent, Filters, Overflow, Proto, Sample};
use assemble::{Assembler, Endpoints, ListedSockets};
use decode::{decode, LinkType, Packet};

/// Packets waiting for `collect`; past this the capture thread drops and counts them. Over a
/// second at 200,000 packets/s, some 35 MiB when full: the collection thread stops assembling
/// while it reads the kernel's socket list or looks up processes, which on a host with
/// 100,000 sockets takes a good part of a second.
const QUEUE_PACKETS: usize = 262_144;
/// At most this many packets are read in one go and handed on together: one clock read and
/// one queue handoff per batch, not per packet.
const BATCH_PACKETS: usize = 4096;
/// How long the collection thread lets batches gather once one arrived: woken for each (one
/// per libpcap block, hundreds a second under load), it would spend more on wake-ups than on
/// assembling their packets.
const BATCH_GATHER: Duration = Duration::from_millis(20);
/// Emptied batches go back to the capture thread to be filled again, up to this many: no
/// allocation per batch, nor the page faults of fresh memory, nor a free across threads.
const SPARE_BATCHES: usize = 8;
/// Enough for PKTAP's 156 bytes, Ethernet, IPv6 with options and a full TCP header; the
/// payload is counted from the length fields, never copied.
const SNAPLEN: i32 = 512;
/// How long a read waits, so that the thread notices it should stop.
const READ_TIMEOUT_MS: i32 = 100;
const KERNEL_BUFFER_BYTES: i32 = 8 << 20;
/// Interfaces come and go (DHCP, VPNs): how often the local addresses are read again.
const ADDRESS_REFRESH: Duration = Duration::from_secs(30);
/// How often the table is checked against the kernel's socket list, where there is one.
const LIST_EVERY: Duration = Duration::from_secs(1);
/// How often, at most, the socket list is read for new connections that wait for it: a
/// bounded cost however many connections open, and soon enough that most are still there.
const VERIFY_EVERY: Duration = Duration::from_millis(100);
/// Up to this many sockets of waiting connections are looked up one by one (a system call
/// each) rather than in a list of every socket, which walks the kernel's whole table: some
/// 150 ms with 100,000 sockets here.
const LOOK_UP_AT_MOST: usize = 64;

/// What the kernel says of sockets where the packets do not: the processes behind
/// connections whose packets did not name one, and which TCP connections still exist.
pub trait ProcessLookup {
    /// (pid, comm) of each connection's socket, `None` where no process is known to hold it.
    fn lookup(&mut self, conns: &[Endpoints]) -> Vec<Option<(u32, String)>>;

    /// Every TCP socket of the network namespace the capture sees, where the system can
    /// list them.
    fn tcp_sockets(&mut self) -> Option<ListedSockets> {
        None
    }

    /// Those TCP sockets with these (local, remote) ends that exist, where they can be looked
    /// up one by one: cheaper than `tcp_sockets` for a few on a host with many.
    fn tcp_sockets_among(&mut self, _ends: &[(SocketAddr, SocketAddr)]) -> Option<ListedSockets> {
        None
    }

    /// Whether `tcp_sockets` lists them: then a new connection counts once listed.
    fn lists_sockets(&self) -> bool {
        false
    }
}

/// What to capture and how to name processes.
pub struct CaptureConfig {
    /// A libpcap device: "any" on Linux, "pktap,all" on macOS, or one interface.
    pub device: String,
    pub filters: Filters,
    /// `None` where the packets name their processes (PKTAP).
    pub processes: Option<Box<dyn ProcessLookup>>,
}

/// What the capture thread shares with the collector.
#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    /// Packets in the queue, which the capture thread keeps within `QUEUE_PACKETS`.
    queued: AtomicUsize,
    queue_full: AtomicU64,
    undecodable: AtomicU64,
    pcap_dropped: AtomicU64,
    /// Why the capture thread stopped early, for the next `collect` to report.
    failure: Mutex<Option<String>>,
}

/// A decoded packet, and when it crossed the interface (libpcap's timestamp, since the
/// epoch).
struct Captured {
    packet: Packet,
    wire: Duration,
}

/// Packets read in one go, and when, counted from the collector's start.
struct Batch {
    at: Duration,
    packets: Vec<Captured>,
}

/// The capture collector. Dropping it stops the capture thread.
pub struct CaptureCollector {
    queue: Receiver<Batch>,
    spare: SyncSender<Vec<Captured>>,
    shared: Arc<Shared>,
    breaker: pcap::BreakLoop,
    reader: Option<JoinHandle<()>>,
    assembler: Assembler,
    processes: Option<Box<dyn ProcessLookup>>,
    start: Instant,
    addresses_read_at: Duration,
    listed_at: Option<Duration>,
    verified_at: Option<Duration>,
}

impl CaptureCollector {
    pub fn open(config: CaptureConfig) -> Result<CaptureCollector> {
        if config.filters.cgroup.is_some() {
            bail!("--cgroup needs the eBPF backend: captured packets do not say which cgroup sent them");
        }
        let device = config.device.as_str();
        let mut capture = Capture::from_device(device)
            .and_then(|c| c.snaplen(SNAPLEN).timeout(READ_TIMEOUT_MS).buffer_size(KERNEL_BUFFER_BYTES).open())
            .map_err(|e| explain_open_failure(device, e))?;
        // Linux's `any` device offers cooked v2 (with the interface index) besides v1.
        if capture.list_datalinks().is_ok_and(|links| links.contains(&Linktype::LINUX_SLL2)) {
            capture.set_datalink(Linktype::LINUX_SLL2).context("choosing the Linux cooked v2 link type")?;
        }
        let datalink = capture.get_datalink();
        if let Some(program) = kernel_filter(&config.filters, datalink)? {
            capture
                .filter(&program, true)
                .with_context(|| format!("setting the capture filter {program}"))?;
        }
        let link = LinkType::from_dlt(datalink.0).ok_or_else(|| {
            let name = datalink.get_name().unwrap_or_else(|_| datalink.0.to_string());
            anyhow!("capturing on {device}: tcptop cannot decode its link type {name}")
        })?;
        let mut assembler = Assembler::new(local_addresses()?, config.filters);
        if config.processes.as_ref().is_some_and(|p| p.lists_sockets()) {
            assembler.verify_with_socket_list();
        }
        let start = Instant::now();
        let shared = Arc::new(Shared::default());
        let (sender, queue) = mpsc::channel();
        let (spare, spares) = mpsc::sync_channel(SPARE_BATCHES);
        let breaker = capture.breakloop_handle();
        let thread_shared = Arc::clone(&shared);
        let reader = thread::Builder::new()
            .name("tcptop-capture".into())
            .spawn(move || read_packets(capture, link, (&sender, &spares), &thread_shared, start))
            .context("starting the capture thread")?;
        Ok(CaptureCollector {
            queue,
            spare,
            shared,
            breaker,
            reader: Some(reader),
            assembler,
            processes: config.processes,
            start,
            addresses_read_at: Duration::ZERO,
            listed_at: None,
            verified_at: None,
        })
    }

    /// Assembles a batch from the queue, and hands its room back.
    fn assemble(&mut self, mut batch: Batch) {
        self.shared.queued.fetch_sub(batch.packets.len(), Ordering::Relaxed);
        for captured in &batch.packets {
            self.assembler.packet(&captured.packet, batch.at, captured.wire);
        }
        batch.packets.clear();
        // Enough spares already: this one is freed.
        let _ = self.spare.try_send(batch.packets);
    }

    /// Checks the table against the kernel's socket list, once per `LIST_EVERY`, and new
    /// connections that wait for it at most once per `VERIFY_EVERY`.
    fn reconcile(&mut self, now: Duration) {
        let Some(processes) = self.processes.as_mut() else { return };
        let due = |at: Option<Duration>, every| at.is_none_or(|at| now.saturating_sub(at) >= every);
        let whole = due(self.listed_at, LIST_EVERY);
        if !(whole || self.assembler.awaits_socket_list() && due(self.verified_at, VERIFY_EVERY)) {
            return;
        }
        self.verified_at = Some(now);
        if whole {
            self.listed_at = Some(now);
        }
        if whole {
            if let Some(listed) = processes.tcp_sockets() {
                self.assembler.reconcile(&listed, now);
            }
            return;
        }
        let waiting = self.assembler.awaiting_list();
        let few = (waiting.len() <= LOOK_UP_AT_MOST).then(|| processes.tcp_sockets_among(&waiting));
        if let Some(listed) = few.flatten().or_else(|| processes.tcp_sockets()) {
            self.assembler.verify(&listed, now);
        }
    }

    /// Names the processes of new connections, at most a few tries each.
    fn attribute(&mut self) {
        let Some(processes) = self.processes.as_mut() else { return };
        let unknown = self.assembler.unattributed();
        if unknown.is_empty() {
            return;
        }
        for (endpoints, owner) in unknown.iter().zip(processes.lookup(&unknown)) {
            if let Some((pid, comm)) = owner {
                self.assembler.attribute(endpoints, pid, &comm);
            }
        }
    }

    /// Assembles what was captured so far, checks the socket list, names processes and
    /// expires flows: everything `collect` and `wait_events` do before handing on.
    fn catch_up(&mut self) -> Result<()> {
        if let Some(failure) = self.shared.failure.lock().unwrap_or_else(|e| e.into_inner()).take() {
            bail!("packet capture stopped: {failure}");
        }
        let now = self.start.elapsed();
        if now.saturating_sub(self.addresses_read_at) >= ADDRESS_REFRESH {
            self.assembler.set_local_addresses(local_addresses()?);
            self.addresses_read_at = now;
        }
        // Everything captured so far, however much: what is captured meanwhile waits for the
        // next call, so that a flood cannot keep this loop from returning.
        while let Ok(batch) = self.queue.try_recv() {
            let last = batch.at >= now;
            self.assemble(batch);
            if last {
                break;
            }
        }
        self.reconcile(now);
        self.attribute();
        self.assembler.expire(now);
        Ok(())
    }

    fn overflow(&self) -> Overflow {
        let count = |n: &AtomicU64| n.load(Ordering::Relaxed);
        let shared = &self.shared;
        Overflow {
            untracked_conns: self.assembler.untracked(),
            lost_events: 0,
            dropped_packets: count(&shared.queue_full)
                + count(&shared.pcap_dropped)
                + count(&shared.undecodable),
        }
    }
}

/// What the kernel should hand the capture, as a libpcap filter, if not everything:
/// - the port and protocol asked for, so that other traffic can neither crowd them out
///   nor count among the dropped packets;
/// - on Linux's `any` device, only the copy of each loopback packet that arrives: the kernel
///   offers it twice (as sent, then as received) and libpcap skips the first, but only
///   after both took room in its ring, where a flood would drop either and count it. (On
///   `lo` itself the test cannot be made: libpcap also runs a new filter in user space,
///   over the packets already in its ring, and there the direction of an Ethernet frame is
///   unknown; in the cooked header of `any` it is a field.)
fn kernel_filter(filters: &Filters, datalink: Linktype) -> Result<Option<String>> {
    let mut clauses = Vec::new();
    if let Some(port) = filters.port {
        clauses.push(match filters.proto {
            Some(Proto::Tcp) => format!("tcp port {port}"),
            Some(Proto::Udp) => format!("udp port {port}"),
            None => format!("port {port}"),
        });
    }
    if datalink == Linktype::LINUX_SLL2 {
        let devices = Device::list().context("listing the network interfaces")?;
        let loopbacks = devices.iter().filter(|d| d.flags.is_loopback());
        let indexes = loopbacks.filter_map(|d| interface_index(&d.name));
        clauses.extend(indexes.map(|index| format!("not (outbound and ifindex {index})")));
    }
    Ok((!clauses.is_empty()).then(|| clauses.join(" and ")))
}

/// The kernel's index of a network interface, `None` for one it does not know.
fn interface_index(name: &str) -> Option<u32> {
    let name = std::ffi::CString::new(name).ok()?;
    // SAFETY: a NUL-terminated name; if_nametoindex only reads it.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (index != 0).then_some(index)
}

/// This host's addresses, which tell the local end of a packet from the remote one.
fn local_addresses() -> Result<HashSet<IpAddr>> {
    let devices = Device::list().context("listing the network interfaces")?;
    Ok(devices.iter().flat_map(|d| &d.addresses).map(|a| a.addr.to_canonical()).collect())
}

/// Capturing was refused for want of privileges.
#[derive(Debug)]
pub struct NeedsRoot {
    device: String,
}

impl fmt::Display for NeedsRoot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "needs root to capture packets on {}: run it as `sudo tcptop`", self.device)
    }
}

impl std::error::Error for NeedsRoot {}

fn explain_open_failure(device: &str, error: pcap::Error) -> anyhow::Error {
    let text = error.to_string();
    if text.contains("ermission") || text.contains("not permitted") {
        NeedsRoot { device: device.into() }.into()
    } else {
        anyhow!("capturing packets on {device}: {text}")
    }
}

/// A libpcap timestamp as time since the epoch (before it, as the epoch: only differences
/// matter).
fn wire_time(ts: &libc::timeval) -> Duration {
    // The fields' types differ by platform (macOS's microseconds are an i32).
    match (u64::try_from(ts.tv_sec), u64::try_from(ts.tv_usec)) {
        (Ok(secs), Ok(micros)) => Duration::from_secs(secs) + Duration::from_micros(micros),
        _ => Duration::ZERO,
    }
}

/// The capture thread: reads, decodes and queues packets until told to stop, filling the
/// spare batches the collector hands back. It never waits for the collector: what a full
/// queue has no room for is dropped and counted.
fn read_packets(
    mut capture: Capture<pcap::Active>,
    link: LinkType,
    (queue, spares): (&Sender<Batch>, &Receiver<Vec<Captured>>),
    shared: &Shared,
    start: Instant,
) {
    let mut packets = Vec::new();
    while !shared.stop.load(Ordering::Relaxed) {
        match read_batch(&mut capture, link, shared, &mut packets) {
            Ok(()) => {}
            // The collector's breakloop on drop.
            Err(_) if shared.stop.load(Ordering::Relaxed) => return,
            Err(error) => {
                *shared.failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(error.to_string());
                return;
            }
        }
        // The drops before these packets, before they are handed on: where traffic stops,
        // Linux's TPACKET_V3 wakes this thread no more (libpcap waits for the kernel's block
        // timeout, which only a block with packets has), so a count read on a timer missed
        // the drops of a flood's end.
        if let Ok(stats) = capture.stats() {
            shared.pcap_dropped.store(u64::from(stats.dropped), Ordering::Relaxed);
        }
        let at = start.elapsed();
        if !packets.is_empty() {
            let full = mem::replace(&mut packets, spares.try_recv().unwrap_or_default());
            if !hand_on(Batch { at, packets: full }, queue, shared) {
                return;
            }
        }
    }
}

/// Adds to `packets` those libpcap has ready, decoded, up to `BATCH_PACKETS` (none when its
/// read timeout passes first); those that cannot be decoded are counted.
fn read_batch<T: Activated + ?Sized>(
    capture: &mut Capture<T>,
    link: LinkType,
    shared: &Shared,
    packets: &mut Vec<Captured>,
) -> Result<(), pcap::Error> {
    let mut undecodable = 0;
    capture.dispatch(Some(BATCH_PACKETS), |frame| match decode(link, frame.data, frame.header.len) {
        Ok(Some(packet)) => packets.push(Captured { packet, wire: wire_time(&frame.header.ts) }),
        Ok(None) => {}
        Err(_) => undecodable += 1,
    })?;
    shared.undecodable.fetch_add(undecodable, Ordering::Relaxed);
    Ok(())
}

/// Queues what there is room for of a batch, counting the rest; false once the collector
/// is gone.
fn hand_on(mut batch: Batch, queue: &Sender<Batch>, shared: &Shared) -> bool {
    // The one capture thread adds to `queued`; the collector only takes from it.
    let room = QUEUE_PACKETS.saturating_sub(shared.queued.load(Ordering::Relaxed));
    if batch.packets.len() > room {
        let dropped = batch.packets.len() - room;
        shared.queue_full.fetch_add(dropped as u64, Ordering::Relaxed);
        batch.packets.truncate(room);
    }
    if batch.packets.is_empty() {
        return true;
    }
    shared.queued.fetch_add(batch.packets.len(), Ordering::Relaxed);
    queue.send(batch).is_ok()
}

impl Collector for CaptureCollector {
    fn backend(&self) -> &str {
        "capture"
    }

    fn collect(&mut self) -> Result<Sample> {
        self.catch_up()?;
        let (conns, events) = self.assembler.sample();
        Ok(Sample { conns, events, overflow: self.overflow(), unchanged: None })
    }

    /// Assembles packets as they arrive, a `BATCH_GATHER` at a time, so that the queue drains
    /// as fast as it fills; hands on the events without copying the table.
    fn wait_events(&mut self, timeout: Duration) -> Result<Vec<ConnEvent>> {
        let deadline = Instant::now() + timeout;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.queue.try_recv() {
                Ok(batch) => self.assemble(batch),
                // Caught up: wait for the next batch, then let others gather behind it.
                Err(TryRecvError::Empty) => match self.queue.recv_timeout(left) {
                    Ok(batch) => {
                        self.assemble(batch);
                        thread::sleep(BATCH_GATHER.min(deadline.saturating_duration_since(Instant::now())));
                    }
                    Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                },
                Err(TryRecvError::Disconnected) => break,
            }
        }
        self.catch_up()?;
        Ok(self.assembler.events())
    }
}

impl Drop for CaptureCollector {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.breaker.breakloop();
        if let Some(reader) = self.reader.take() {
            // The thread returns within one read timeout; its panic would already have
            // shown on stderr.
            let _ = reader.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::decode::fixtures::{ipv4, sll2, tcp_segment};
    use super::*;

    /// A savefile of cooked-v2 frames, read back as a capture.
    fn replay(frames: &[Vec<u8>]) -> Capture<pcap::Offline> {
        let path =
            std::env::temp_dir().join(format!("tcptop-replay-{}-{}.pcap", std::process::id(), frames.len()));
        let mut file = Capture::dead(Linktype::LINUX_SLL2).unwrap().savefile(&path).unwrap();
        for frame in frames {
            let len = frame.len() as u32;
            let header = pcap::PacketHeader { ts: libc::timeval { tv_sec: 0, tv_usec: 0 }, caplen: len, len };
            file.write(&pcap::Packet::new(&header, frame));
        }
        drop(file);
        let capture = Capture::from_file(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        capture
    }

    fn segment(payload: usize) -> Vec<u8> {
        let tcp = tcp_segment(40000, 443, 1, decode::TcpHeader::ACK, payload);
        sll2(0x0800, &ipv4([127, 0, 0, 1], [127, 0, 0, 2], 6, &tcp))
    }

    #[test]
    fn bad_packets_and_a_full_queue_are_counted_never_fatal() {
        let good = segment(10);
        let truncated = good[..30].to_vec();
        let mut capture = replay(&[good.clone(), truncated, good.clone(), good]);
        let shared = Shared::default();
        // Room for two more packets.
        shared.queued.store(QUEUE_PACKETS - 2, Ordering::Relaxed);
        let (sender, queue) = mpsc::channel();
        let mut packets = Vec::new();
        read_batch(&mut capture, LinkType::LinuxSll2, &shared, &mut packets).unwrap();
        assert!(hand_on(Batch { at: Duration::ZERO, packets }, &sender, &shared));
        let queued: Vec<Batch> = queue.try_iter().collect();
        let payloads: Vec<u32> = queued.iter().flat_map(|b| &b.packets).map(|c| c.packet.payload).collect();
        assert_eq!(payloads, [10, 10]);
        assert_eq!(shared.queued.load(Ordering::Relaxed), QUEUE_PACKETS);
        assert_eq!(shared.undecodable.load(Ordering::Relaxed), 1);
        assert_eq!(shared.queue_full.load(Ordering::Relaxed), 1);
    }
}
