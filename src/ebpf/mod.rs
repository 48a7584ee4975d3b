//! The Linux eBPF collector: loads tcptop.bpf.c with the best plan this kernel allows, part by
//! part (plan.rs), then reads the in-kernel connection table once per interval.

mod libbpf_log;
mod plan;
mod probe;
mod skel;
mod table;
mod walks;

pub use plan::{Feature, Plan, Refusals, Strategy};

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::mem::MaybeUninit;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};
use libbpf_rs::{
    Iter, Link, MapCore, MapFlags, MapHandle, MapType, ProgramType, RingBuffer, RingBufferBuilder,
};

use crate::cache::BoundedCache;
use crate::collector::{
    Collector, Conn, ConnEvent, EventKind, Family, Filters, Handshake, Overflow, Proto, Rtt, Sample,
    TcpHealth, TcpState,
};
use crate::model::ById;
use crate::procfs::{self, CgroupPaths, Owner, SocketOwners};
use plan::{counted, TableRead, UdpRead};
use skel::{types, TcptopSkel, TcptopSkelBuilder};
use table::MappedArray;
use walks::WalkSchedule;

// SAFETY: plain C structs of integers and byte arrays, valid for any bit pattern.
unsafe impl plain::Plain for types::conn_info {}
unsafe impl plain::Plain for types::conn_event {}
unsafe impl plain::Plain for types::conn {}

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const CONN_EVENT_CLOSED: u8 = 2;
const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";
/// The test switch that treats kernel features as refused (`map-iter,func-ret`), so that
/// every way of every part runs somewhere.
const DISABLE_ENV: &str = "TCPTOP_DISABLE";
/// How long the table may go unsampled where the hooks do not sample (see `max_collect_gap`).
const MAX_COLLECT_GAP: Duration = Duration::from_millis(500);
/// Every this many samples one lists every connection, not only those that changed: the
/// model closes a TCP connection a complete sample leaves out, which catches one whose close
/// event was lost in a way no counter saw, and a change a read missed.
const FULL_READ_EVERY: u32 = 60;
/// Slots a read lists again once a late /proc scan named their owners: a million connections
/// in 16 reads, each of them little more work than the reads of changes beside it.
const RENAMED_PER_READ: u32 = 1 << 16;
/// Connection slots beyond which the `conns` map is made on a thread of its own (see
/// `PremadeSlots`); up to here clearing its memory takes a few milliseconds.
const PREMADE_FROM_SLOTS: u32 = 1 << 16;
/// Free slots the kernel side has for new connections after each hand-out, at least: a burst
/// of more new connections than it has between two hand-outs (at most 100 ms apart) is
/// counted untracked.
const SLOTS_IN_HAND: u64 = 8192;

/// The eBPF collector. Dropping it detaches every program.
pub struct EbpfCollector {
    plan: Plan,
    refused: Refusals,
    /// `plan` as one token, for `backend`.
    plan_name: String,
    protos: &'static [Proto],
    // Fields drop in order: links and the ring buffer before the object they use.
    _hooks: Vec<Link>,
    /// The TCP table iterator, if TCP is counted.
    tcp_dump: Option<Link>,
    /// The UDP flow iterator, if UDP is counted and a map iterator reads it.
    udp_dump: Option<Link>,
    ring: RingBuffer<'static>,
    arrived: Rc<RefCell<Vec<types::conn_event>>>,
    /// The `changed` ring: slots of the connections that changed since the last read.
    changes: RingBuffer<'static>,
    changed: Rc<RefCell<Vec<u32>>>,
    skel: TcptopSkel<'static>,
    /// The TCP connections, in the `conns` slots.
    slots: MappedArray<types::conn>,
    supply: SlotSupply,
    /// When every connection is sampled in the kernel next, where the hooks sample.
    walks: WalkSchedule,
    /// The connections adoption claimed at start.
    adopted: u32,
    /// `changes_lost` as of the last read.
    changes_lost: u64,
    /// The rows of the last UDP flow read.
    table: MappedArray<types::conn_info>,
    /// Rows that did not fit in the table, as the iterators wrote them.
    dump_buf: Vec<u8>,
    filters: Filters,
    cgroup_id: u64,
    owners: SocketOwners,
    /// The next slot to list again, named, once a late /proc scan ended (`RENAMED_PER_READ`
    /// a read).
    renaming: Option<u32>,
    /// Slots the next read lists again (see `listed_slots`).
    carried: Vec<u32>,
    cgroups: CgroupPaths,
    comms: Comms,
    /// Samples since the last complete one; `None` before the first.
    since_full_read: Option<u32>,
    /// `lost_events` as of the last complete sample.
    lost_at_full_read: u64,
}

/// How one try of a plan ended, when it did not load and attach.
enum Attempt {
    /// The kernel refused `feature`: the next plan does without it.
    Refused(Feature, String),
    /// Anything else: no other plan would fare better.
    Failed(anyhow::Error),
}

impl From<anyhow::Error> for Attempt {
    fn from(error: anyhow::Error) -> Self {
        Attempt::Failed(error)
    }
}

/// Checks what the kernel side needs before anything is loaded, so that each missing piece
/// gets its own one-line explanation.
pub fn preflight() -> Result<()> {
    crate::privilege::EBPF.check()?;
    if !Path::new(VMLINUX_BTF).exists() {
        bail!(
            "this kernel has no BTF ({VMLINUX_BTF} is missing): tcptop's eBPF probes need a \
             kernel built with CONFIG_DEBUG_INFO_BTF=y"
        );
    }
    Ok(())
}

impl EbpfCollector {
    /// Loads the best plan with the first of `hooks` that this kernel allows. `note` hears the
    /// plan, part by part, with why the better ways were refused.
    pub fn open(hooks: &[Strategy], filters: &Filters, note: &mut dyn FnMut(&str)) -> Result<Self> {
        let mut refused = disabled_features()?;
        // The map is made meanwhile: libbpf takes it before it loads the object.
        let slots = table::slots_for(procfs::sockets_in_use());
        let mut premade = PremadeSlots::start(slots);
        for (feature, why) in &probe::kernel_facts().refused {
            refused.entry(*feature).or_insert_with(|| why.clone());
        }
        libbpf_log::capture();
        let mut tried = None;
        loop {
            let plan = Plan::best(hooks, &refused).map_err(|why| match hooks {
                [only] => anyhow!("the {only} probe strategy cannot run on this kernel: {why}"),
                _ => anyhow!("eBPF counting cannot run on this kernel: {why}"),
            })?;
            if tried == Some(plan) {
                bail!("the {plan} plan failed again without a new refusal");
            }
            tried = Some(plan);
            match Self::open_sized(plan, filters, slots, &mut premade) {
                Ok(mut collector) => {
                    for line in plan.describe(&refused) {
                        note(&line);
                    }
                    collector.refused = refused;
                    return Ok(collector);
                }
                Err(Attempt::Refused(feature, why)) => {
                    refused.insert(feature, why);
                }
                Err(Attempt::Failed(e)) => return Err(e),
            }
        }
    }

    /// Loads and attaches `plan` with room for `slots` connections, then adopts the
    /// connections already open.
    fn open_sized(
        plan: Plan,
        filters: &Filters,
        slots: u32,
        premade: &mut PremadeSlots,
    ) -> Result<Self, Attempt> {
        let mut collector = Self::open_with(plan, filters, slots, premade)?;
        collector.adopt()?;
        Ok(collector)
    }

    /// Loads and attaches `plan`, with room for `slots` TCP connections, in the premade map
    /// where there is one.
    fn open_with(
        plan: Plan,
        filters: &Filters,
        slots: u32,
        premade: &mut PremadeSlots,
    ) -> Result<Self, Attempt> {
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
        let cgroup_id = match &filters.cgroup {
            Some(path) => {
                procfs::cgroup_id(path).with_context(|| format!("no cgroup directory at {path}"))?
            }
            None => 0,
        };
        settings.filter_cgroup = cgroup_id;
        settings.filter_proto = match filters.proto {
            None => 0,
            Some(Proto::Tcp) => IPPROTO_TCP,
            Some(Proto::Udp) => IPPROTO_UDP,
        };
        settings.udp_idle_ns = filters.udp_idle.as_nanos().try_into().unwrap_or(u64::MAX);
        settings.conns_in_hash = plan.storage == plan::Storage::Hash;
        settings.tracepoints_count_tcp = plan.tracepoints_count_tcp();
        settings.tracepoints_count_udp = plan.tracepoints_count_udp();
        settings.udp_recvmsg_has_noblock = probe::kernel_facts().udp_recvmsg_has_noblock;
        settings.hooks_sample = plan.hooks_sample;
        settings.slot_count = slots;
        let protos = counted(filters.proto);
        let programs = plan.programs(protos);
        for mut prog in open.open_object_mut().progs_mut() {
            prog.set_autoload(programs.contains(&&*prog.name().to_string_lossy()));
        }
        for mut map in open.open_object_mut().maps_mut() {
            let create = plan.creates(&map.name().to_string_lossy());
            map.set_autocreate(create).map_err(anyhow::Error::from)?;
        }
        let maps = &mut open.maps;
        for map in [&mut maps.conns, &mut maps.free_slots, &mut maps.hash_conns] {
            map.set_max_entries(slots).map_err(anyhow::Error::from)?;
        }
        if let Some(conns) = premade.map() {
            maps.conns.reuse_fd(conns.as_fd()).map_err(anyhow::Error::from)?;
        }
        // Each record of the ring takes 8 bytes of header and 8 of slot number and padding:
        // room for half the slots to change in one interval (more makes a read of them all).
        let ring_bytes = (u64::from(slots) * 8).next_power_of_two().max(1 << 16);
        maps.changed
            .set_max_entries(ring_bytes.try_into().unwrap_or(u32::MAX))
            .map_err(anyhow::Error::from)?;
        maps.table.set_max_entries(table::UDP_ROWS).map_err(anyhow::Error::from)?;
        let mut skel = open.load().map_err(|e| refusal_at_load(&plan, e.into()))?;
        // Its programs may fill slots from here: a later try, if this one fails, needs a map
        // of its own.
        premade.spend();
        let mut supply = SlotSupply { issued: 0, pushed: 0, taken: 0 };
        supply.hand_out(&mut skel).context("handing out connection slots")?;

        let mut hooks = Vec::new();
        // cgroup hooks attach to the root of the cgroup v2 tree: every process is below it.
        let mut cgroup_root = None;
        let wanted_hooks = plan.hooks(protos);
        for prog in skel.object_mut().progs_mut() {
            let name = prog.name().to_string_lossy().into_owned();
            if !wanted_hooks.contains(&name.as_str()) {
                continue;
            }
            let link = if prog.prog_type() == ProgramType::CgroupSockAddr {
                let root = match &cgroup_root {
                    Some(root) => root,
                    None => cgroup_root.insert(
                        open_cgroup_root()
                            .map_err(|e| Attempt::Refused(Feature::CgroupSockAddr, format!("{e:#}")))?,
                    ),
                };
                prog.attach_cgroup(root.as_raw_fd())
            } else {
                prog.attach()
            };
            let refused = |e: libbpf_rs::Error| match plan.blame(&name, true) {
                Some(feature) => Attempt::Refused(
                    feature,
                    format!(
                        "{name}: attaching it failed: {}",
                        libbpf_log::take_last().unwrap_or_else(|| e.to_string())
                    ),
                ),
                None => Attempt::Failed(anyhow::Error::from(e).context(format!("attaching {name}"))),
            };
            hooks.push(link.map_err(refused)?);
        }
        let (progs, maps) = (&skel.progs, &skel.maps);
        let tcp = protos.contains(&Proto::Tcp);
        let tcp_dump = tcp
            .then(|| {
                let link = match (plan.table, plan.storage) {
                    (TableRead::MapIter, plan::Storage::SocketStorage) => {
                        progs.dump_sk_conns.attach_iter(maps.sk_conns.as_fd())
                    }
                    (TableRead::MapIter, plan::Storage::Hash) => {
                        progs.dump_hash_conns.attach_iter(maps.hash_conns.as_fd())
                    }
                    (TableRead::TcpIter, _) => progs.dump_tcp_socks.attach(),
                };
                link.map_err(|e| {
                    Attempt::Refused(
                        iterator_feature(plan.table),
                        format!("attaching the table iterator: {e}"),
                    )
                })
            })
            .transpose()?;
        let udp_dump = (protos.contains(&Proto::Udp) && plan.udp_table == UdpRead::MapIter)
            .then(|| {
                progs
                    .dump_udp_flows
                    .attach_iter(maps.udp_flows.as_fd())
                    .map_err(|e| Attempt::Refused(Feature::MapIter, format!("attaching dump_udp_flows: {e}")))
            })
            .transpose()?;
        // No walk yet: the first read walks (a walk that took no time is due at once).
        let now = Instant::now();
        let walks = WalkSchedule::new(now, now);

        let arrived = Rc::new(RefCell::new(Vec::new()));
        let sink = Rc::clone(&arrived);
        let mut builder = RingBufferBuilder::new();
        builder
            .add(&skel.maps.events, move |data: &[u8]| {
                let mut raw = types::conn_event::default();
                if plain::copy_from_bytes(&mut raw, data).is_ok() {
                    sink.borrow_mut().push(raw);
                }
                0
            })
            .map_err(anyhow::Error::from)?;
        let ring = builder.build().map_err(anyhow::Error::from)?;
        let changed = Rc::new(RefCell::new(Vec::new()));
        let sink = Rc::clone(&changed);
        let mut builder = RingBufferBuilder::new();
        builder
            .add(&skel.maps.changed, move |data: &[u8]| {
                if let Ok(slot) = <[u8; 4]>::try_from(data) {
                    sink.borrow_mut().push(u32::from_ne_bytes(slot));
                }
                0
            })
            .map_err(anyhow::Error::from)?;
        let changes = builder.build().map_err(anyhow::Error::from)?;
        let slots =
            MappedArray::map(skel.maps.conns.as_fd(), slots).context("mapping the connection slots")?;
        let table =
            MappedArray::map(skel.maps.table.as_fd(), table::UDP_ROWS).context("mapping the UDP table")?;
        Ok(EbpfCollector {
            plan,
            refused: Refusals::new(),
            plan_name: plan.to_string(),
            protos,
            _hooks: hooks,
            tcp_dump,
            udp_dump,
            ring,
            arrived,
            changes,
            changed,
            skel,
            slots,
            supply,
            walks,
            adopted: 0,
            changes_lost: 0,
            table,
            dump_buf: Vec::new(),
            filters: filters.clone(),
            cgroup_id,
            owners: SocketOwners::default(),
            renaming: None,
            carried: Vec::new(),
            cgroups: CgroupPaths::default(),
            comms: Comms(BoundedCache::new(COMMS_KEPT)),
            since_full_read: None,
            lost_at_full_read: 0,
        })
    }

    /// With the hooks attached, claims the connections that were open before tcptop: on two
    /// threads where there are two CPUs, as a host of a million sockets takes seconds to walk.
    fn adopt(&mut self) -> Result<(), Attempt> {
        if !self.protos.contains(&Proto::Tcp) || !self.plan.adopt {
            return Ok(());
        }
        let adopting = Instant::now();
        let adopt = self
            .skel
            .progs
            .adopt_tcp_socks
            .attach()
            .map_err(|e| Attempt::Refused(Feature::TcpIter, format!("attaching adopt_tcp_socks: {e}")))?;
        let before = self.supply.issued;
        let adopters: u32 =
            if std::thread::available_parallelism().is_ok_and(|n| n.get() > 1) { 2 } else { 1 };
        let globals = self.globals();
        globals.next_fresh_slot = [before, before + 1];
        globals.second_adopter_tid = 0;
        if adopters == 1 {
            in_every_namespace(&adopt, &mut Vec::new())
        } else {
            self.adopt_on_two_threads(&adopt)
        }
        .context("listing the connections open before tcptop")?;
        // SAFETY: a read of memory-mapped .bss, which is always valid.
        let ends = unsafe { std::ptr::read_volatile(&self.globals().next_fresh_slot) };
        let ends = &ends[..adopters as usize];
        let issued = ends.iter().copied().max().unwrap_or(before).min(self.skel.maps.conns.max_entries());
        self.adopted = (0..adopters).zip(ends).map(|(lane, end)| (end - before - lane) / adopters).sum();
        // The slots of the thread that claimed fewer, up to where the other stopped, are free.
        self.supply.issued = issued;
        for (lane, &end) in (0..adopters).zip(ends) {
            debug_assert!(end >= before + lane);
            for slot in (end..issued).step_by(adopters as usize) {
                self.supply.push(&mut self.skel, slot).context("handing out connection slots")?;
            }
        }
        // Adoption sampled every connection it claimed.
        self.walks = WalkSchedule::new(adopting, Instant::now());
        Ok(())
    }

    /// Adopts on this thread and a second one, whose thread id the program is told first.
    fn adopt_on_two_threads(&mut self, adopt: &Link) -> Result<()> {
        std::thread::scope(|scope| {
            let (tid_sender, tid) = std::sync::mpsc::channel();
            let (start, started) = std::sync::mpsc::channel::<()>();
            let second = scope.spawn(move || {
                // SAFETY: gettid has no preconditions.
                tid_sender.send(unsafe { libc::gettid() } as u32).ok();
                started.recv().ok().map(|()| in_every_namespace(adopt, &mut Vec::new()))
            });
            self.globals().second_adopter_tid =
                tid.recv().map_err(|_| anyhow!("the second adopting thread did not start"))?;
            start.send(()).ok();
            let first = in_every_namespace(adopt, &mut Vec::new());
            let second = second.join().map_err(|_| anyhow!("the second adopting thread panicked"))?;
            first.and(second.unwrap_or_else(|| Err(anyhow!("the second adopting thread did not run"))))
        })
    }

    /// The plan in use.
    pub fn plan(&self) -> Plan {
        self.plan
    }

    /// What the kernel refused on the way to the plan, and why.
    pub fn refused(&self) -> &Refusals {
        &self.refused
    }

    /// The connections open before tcptop that it claimed at start (those the filters let
    /// through).
    pub fn adopted(&self) -> u32 {
        self.adopted
    }

    /// Free slots the kernel side gets at start and after each hand-out.
    pub fn slots_in_hand(&self) -> u64 {
        SLOTS_IN_HAND
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

    /// Samples every TCP connection in the kernel, which puts those that changed on `changed`.
    fn walk(&mut self) -> Result<()> {
        let started = Instant::now();
        if let Some(dump) = &self.tcp_dump {
            let mut output = Vec::new();
            match self.plan.table {
                TableRead::MapIter => read_iterator(dump, &mut output),
                TableRead::TcpIter => in_every_namespace(dump, &mut output),
            }
            .context("sampling the connections")?;
        }
        // SAFETY: a read of memory-mapped .bss, which is always valid.
        let unhooked = unsafe { std::ptr::read_volatile(&self.globals().unhooked_moves) };
        self.walks.walked(started, Instant::now(), unhooked);
        Ok(())
    }

    /// Whether `collect` samples every connection first: always where the hooks do not sample,
    /// else as `WalkSchedule` says.
    fn walk_due(&self) -> bool {
        !self.plan.hooks_sample || self.walks.due(Instant::now())
    }

    /// Starts a read epoch: what changes from now on is the next read's, and each connection's
    /// next send or read names its owner again.
    fn new_epoch(&mut self) {
        let next = self.read_epoch() + 1;
        let data = self.skel.maps.data_data.as_deref_mut().expect("tcptop.bpf.c has initialised globals");
        // SAFETY: a write of memory-mapped .data, which is always valid.
        unsafe { std::ptr::write_volatile(&mut data.read_epoch, next) };
        // The new epoch before any slot is read: a hook that still sees the old one changed
        // its slot before this read copies it.
        fence(Ordering::SeqCst);
    }

    fn read_epoch(&self) -> u32 {
        let data = self.skel.maps.data_data.as_deref().expect("tcptop.bpf.c has initialised globals");
        // SAFETY: a read of memory-mapped .data, which is always valid.
        unsafe { std::ptr::read_volatile(&data.read_epoch) }
    }

    /// The slots of the TCP connections to list: those that changed in the last epoch (from
    /// `changed`, each once) and the next share of those to name again, or with `all` every
    /// slot handed out.
    fn listed_slots(&mut self, all: bool) -> Result<Vec<u32>> {
        self.changes.consume().context("reading the changed connections")?;
        let mut changed = std::mem::take(&mut *self.changed.borrow_mut());
        // A slot put on the ring in the epoch that just began is listed now, but a later change
        // in that epoch no longer puts it there: the next read lists it again.
        let epoch = self.read_epoch();
        let touched_now = |slot: &u32| {
            // SAFETY: the address of a field of the slot.
            let listed = unsafe { self.slots.field(*slot as usize, |c| &raw const (*c).listed_epoch) };
            listed == Some(epoch)
        };
        let carry = changed.iter().copied().filter(touched_now).collect();
        changed.extend(std::mem::replace(&mut self.carried, carry));
        let issued = self.supply.issued;
        if all {
            self.renaming = None;
            return Ok((0..issued).collect());
        }
        if let Some(from) = self.renaming {
            let to = from.saturating_add(RENAMED_PER_READ).min(issued);
            changed.extend(from..to);
            self.renaming = (to < issued).then_some(to);
        }
        changed.sort_unstable();
        changed.dedup();
        Ok(changed)
    }

    /// The connection in `slot`, if it holds a reportable one. Copied from the mapped slot at
    /// each call: a read copies each slot twice rather than keep a copy of every row.
    fn tcp_row(&self, slot: u32) -> Option<types::conn_info> {
        self.slots.get(slot as usize).filter(|conn| self.reportable(conn)).map(|conn| conn.info)
    }

    /// TCP slots in use: handed out, less those free in the kernel's queue.
    fn slots_in_use(&mut self) -> u64 {
        let free =
            self.supply.free(self.skel.maps.bss_data.as_deref().expect("tcptop.bpf.c has global variables"));
        u64::from(self.supply.issued).saturating_sub(free)
    }

    /// The UDP flows: by the map iterator, into `table` and beyond its end into its output, or
    /// by batch lookups where no map iterator runs.
    fn udp_rows(&mut self) -> Result<Vec<types::conn_info>> {
        let mut rows = Vec::new();
        if !self.protos.contains(&Proto::Udp) {
            return Ok(rows);
        }
        let Some(dump) = &self.udp_dump else {
            self.read_udp_flows(&mut rows).context("reading the UDP flows")?;
            return Ok(rows);
        };
        self.dump_buf.clear();
        // SAFETY: a write of memory-mapped .bss, which is always valid.
        unsafe {
            std::ptr::write_volatile(
                &mut self.skel.maps.bss_data.as_deref_mut().expect("globals").table_rows,
                0,
            )
        };
        read_iterator(dump, &mut self.dump_buf).context("reading the UDP flows")?;
        // SAFETY: a read of memory-mapped .bss, which is always valid.
        let in_table = unsafe { std::ptr::read_volatile(&self.globals().table_rows) } as usize;
        rows.extend(self.table.first(in_table));
        rows.extend(self.dump_buf.chunks_exact(size_of::<types::conn_info>()).map(|record| {
            let mut info = types::conn_info::default();
            plain::copy_from_bytes(&mut info, record).expect("records are whole");
            info
        }));
        Ok(rows)
    }

    /// Reads the UDP flow map from user space, where no map iterator may, and deletes the
    /// flows idle for longer than `--udp-idle` once they are reported (as dump_udp_flows does in
    /// the kernel). The owner of such a flow is the first one named: the kernel's per-interval
    /// renaming needs the dump to clear a flag, which user space cannot do without a race.
    fn read_udp_flows(&self, into: &mut Vec<types::conn_info>) -> Result<()> {
        let flows = &self.skel.maps.udp_flows;
        let now = monotonic_ns();
        let idle = self.filters.udp_idle.as_nanos();
        let mut expired = Vec::new();
        for (key, value) in flows.lookup_batch(1024, MapFlags::ANY, MapFlags::ANY)? {
            let mut flow = types::conn::default();
            plain::copy_from_bytes(&mut flow, &value).map_err(|e| anyhow!("a UDP flow record: {e:?}"))?;
            if self.reportable(&flow) {
                into.push(flow.info);
            }
            if u128::from(now.saturating_sub(flow.last_ns)) > idle {
                expired.push(key);
            }
        }
        for key in expired {
            // Looked up again right before: a flow that traffic revived since the batch read
            // stays. One revived between this lookup and the delete is gone with its last
            // datagrams: the one way a flow can miss some, as in the kernel's expiry.
            let revived = flows.lookup(&key, MapFlags::ANY)?.is_some_and(|value| {
                let mut flow = types::conn::default();
                plain::copy_from_bytes(&mut flow, &value).is_ok()
                    && u128::from(monotonic_ns().saturating_sub(flow.last_ns)) <= idle
            });
            if !revived {
                flows.delete(&key).ok();
            }
        }
        Ok(())
    }

    /// The kernel's `reportable`: a claimed flow inside the --port, family, pid and cgroup filters.
    fn reportable(&self, c: &types::conn) -> bool {
        c.info.id != 0
            && c.ignored == 0
            && self.filters.pid.is_none_or(|pid| c.info.pid == pid)
            && (self.cgroup_id == 0 || c.info.cgroup_id == self.cgroup_id)
    }
}

/// The free slots the kernel side takes new TCP connections' slots from: fresh ones handed out
/// in order, a destroyed connection's given back by the kernel.
struct SlotSupply {
    /// Slots handed out so far, from 0.
    issued: u32,
    /// Of them, those pushed onto `free_slots` (the others adopt_tcp_socks took directly).
    pushed: u64,
    /// `slots_taken` at the last hand-out.
    taken: u64,
}

impl SlotSupply {
    /// Slots taken from the kernel's queue, and given back to it, so far.
    fn counts(globals: &types::bss) -> (u64, u64) {
        // SAFETY: reads of memory-mapped .bss, which is always valid.
        unsafe {
            (std::ptr::read_volatile(&globals.slots_taken), std::ptr::read_volatile(&globals.slots_returned))
        }
    }

    /// Slots free in the kernel's queue.
    fn free(&self, globals: &types::bss) -> u64 {
        let (taken, returned) = Self::counts(globals);
        (self.pushed + returned).saturating_sub(taken)
    }

    /// Tops the queue up to SLOTS_IN_HAND free slots, or twice what was taken since the last
    /// hand-out if more, with fresh ones while any are left: one syscall each, so only once
    /// fewer than half remain.
    fn hand_out(&mut self, skel: &mut TcptopSkel<'_>) -> Result<()> {
        let globals = skel.maps.bss_data.as_deref().expect("tcptop.bpf.c has global variables");
        let free = self.free(globals);
        let (taken, _) = Self::counts(globals);
        let wanted = SLOTS_IN_HAND.max(2 * taken.saturating_sub(self.taken));
        self.taken = taken;
        if free >= wanted / 2 {
            return Ok(());
        }
        let capacity = skel.maps.conns.max_entries();
        let end = u64::from(self.issued).saturating_add(wanted - free).min(u64::from(capacity)) as u32;
        for slot in self.issued..end {
            self.push(skel, slot)?;
            self.issued = slot + 1;
        }
        Ok(())
    }

    /// Puts a slot handed out onto the kernel's queue.
    fn push(&mut self, skel: &mut TcptopSkel<'_>, slot: u32) -> Result<()> {
        skel.maps.free_slots.update(&[], &slot.to_ne_bytes(), MapFlags::ANY)?;
        self.pushed += 1;
        Ok(())
    }
}

/// The `conns` map of a host that needs more than `PREMADE_FROM_SLOTS`, made on a thread of
/// its own while the kernel's BTF is read and the BPF object opened: the kernel clears the
/// memory of 1.25 million slots (some 240 MiB) as it makes the map, which takes a fifth of a
/// second or more. Each plan the kernel refuses as it loads uses it again.
struct PremadeSlots {
    making: Option<std::thread::JoinHandle<libbpf_rs::Result<MapHandle>>>,
    made: Option<MapHandle>,
}

impl PremadeSlots {
    fn start(slots: u32) -> PremadeSlots {
        let making = (slots > PREMADE_FROM_SLOTS).then(|| {
            std::thread::spawn(move || {
                let opts = libbpf_rs::libbpf_sys::bpf_map_create_opts {
                    sz: size_of::<libbpf_rs::libbpf_sys::bpf_map_create_opts>() as _,
                    map_flags: libbpf_rs::libbpf_sys::BPF_F_MMAPABLE,
                    ..Default::default()
                };
                let value = size_of::<types::conn>() as u32;
                MapHandle::create(MapType::Array, Some("conns"), 4, value, slots, &opts)
            })
        });
        PremadeSlots { making, made: None }
    }

    /// The map, empty. None once spent, or if it could not be made (libbpf then makes it, and
    /// says why it cannot).
    fn map(&mut self) -> Option<&MapHandle> {
        if let Some(making) = self.making.take() {
            self.made = making.join().ok().and_then(Result::ok);
        }
        self.made.as_ref()
    }

    /// Gives the map up: a program that ran may have left connections in it.
    fn spend(&mut self) {
        self.made = None;
    }
}

/// The features `TCPTOP_DISABLE` treats as refused.
fn disabled_features() -> Result<Refusals> {
    let list = std::env::var(DISABLE_ENV).unwrap_or_default();
    let features = Feature::parse_list(&list).map_err(|e| anyhow!("{DISABLE_ENV}: {e}"))?;
    Ok(features.into_iter().map(|f| (f, format!("disabled by {DISABLE_ENV}"))).collect())
}

/// The feature a table iterator of this kind stands for.
fn iterator_feature(read: TableRead) -> Feature {
    match read {
        TableRead::MapIter => Feature::MapIter,
        TableRead::TcpIter => Feature::TcpIter,
    }
}

/// A load that failed: the feature of the program the kernel refused, by libbpf's word, or
/// the error itself where no program can be blamed.
fn refusal_at_load(plan: &Plan, error: anyhow::Error) -> Attempt {
    let Some(failed) = libbpf_log::take_failed_program() else {
        return Attempt::Failed(error.context(format!("loading the {plan} programs")));
    };
    match plan.blame(&failed.program, failed.denied()) {
        Some(feature) => Attempt::Refused(
            feature,
            format!("{}: the kernel refused to load it ({})", failed.program, failed.error),
        ),
        None => Attempt::Failed(error.context(format!("loading {} ({})", failed.program, failed.error))),
    }
}

/// CLOCK_MONOTONIC, which bpf_ktime_get_ns() reads, in nanoseconds.
fn monotonic_ns() -> u64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
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

/// Runs an iterator in every network namespace, its output appended to `out`: iter/tcp lists
/// the namespace of the thread that opens it, so this thread enters each in turn, then returns.
/// A namespace it may not enter (no CAP_SYS_ADMIN) or that is gone is left out: its
/// connections show at their first send or read. Each run walks the whole of the kernel's
/// (shared) connection hash, so a namespace without TCP sockets is not walked.
fn in_every_namespace(iterator: &Link, out: &mut Vec<u8>) -> Result<()> {
    read_iterator(iterator, out)?;
    let own = File::open("/proc/thread-self/ns/net").context("opening tcptop's network namespace")?;
    for path in procfs::other_network_namespaces() {
        let Ok(namespace) = File::open(&path) else { continue };
        if enter_network_namespace(&namespace).is_err() {
            continue;
        }
        let read =
            if procfs::tcp_sockets_in_this_namespace() { read_iterator(iterator, out) } else { Ok(()) };
        enter_network_namespace(&own).context("returning to tcptop's network namespace")?;
        read.with_context(|| format!("in the network namespace of {}", path.display()))?;
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

impl Collector for EbpfCollector {
    fn backend(&self) -> &str {
        &self.plan_name
    }

    /// Where the hooks do not sample, the bytes between two samples must stay under 3 GiB
    /// (`advance` in tcptop.bpf.c): at loopback's 6 GB/s that is half a second. Where they
    /// do, every call samples, and no call moves 2 GiB.
    fn max_collect_gap(&self) -> Option<Duration> {
        (!self.plan.hooks_sample).then_some(MAX_COLLECT_GAP)
    }

    /// Sampling alone, in the kernel: no rows are decoded, no owners looked up, and the
    /// events stay in the ring for `wait_events`.
    fn refresh(&mut self) -> Result<Vec<ConnEvent>> {
        self.walk()?;
        Ok(Vec::new())
    }

    /// Lists only the TCP connections that changed since the last sample (`Sample::unchanged`
    /// counts the others), but for every `FULL_READ_EVERY`-th sample, the first, and one after
    /// lost events, which list them all.
    fn collect(&mut self) -> Result<Sample> {
        // Events first: a connection closed after this point is still in its slot, and the
        // model keeps its totals until its close event arrives in the next sample.
        self.ring.consume().context("reading connection events")?;
        let raw_events = std::mem::take(&mut *self.arrived.borrow_mut());
        if self.walk_due() {
            self.walk()?;
        }
        let Overflow { lost_events: lost, .. } = self.overflow();
        // SAFETY: a read of memory-mapped .bss, which is always valid.
        let changes_lost = unsafe { std::ptr::read_volatile(&self.globals().drops.changes_lost) };
        // A scan of /proc that the first read did not wait for (a host with very many
        // sockets) names the connections it listed unowned: the next reads list them all
        // again, a share at a time.
        if self.owners.answered_late() {
            self.renaming = Some(0);
        }
        let full = match self.since_full_read {
            None => true,
            Some(since) => {
                since + 1 >= FULL_READ_EVERY
                    || lost != self.lost_at_full_read
                    || changes_lost != self.changes_lost
            }
        };
        self.changes_lost = changes_lost;
        if full {
            (self.since_full_read, self.lost_at_full_read) = (Some(0), lost);
        } else {
            self.since_full_read = self.since_full_read.map(|since| since + 1);
        }
        self.new_epoch();
        let slots = if self.protos.contains(&Proto::Tcp) { self.listed_slots(full)? } else { Vec::new() };
        let udp_rows = self.udp_rows()?;
        let unowned: Vec<u64> = (slots.iter().filter_map(|&slot| self.tcp_row(slot)))
            .chain(udp_rows.iter().copied())
            .chain(raw_events.iter().map(|raw| raw.info))
            .filter_map(|info| unowned_socket(&info))
            .collect();
        let owners = self.find_owners(unowned);
        let mut conns = Vec::with_capacity(slots.len() + udp_rows.len());
        for &slot in &slots {
            if let Some(info) = self.tcp_row(slot) {
                conns.push(self.conn_from(&info, &owners));
            }
        }
        let unchanged = (!full).then(|| self.slots_in_use().saturating_sub(conns.len() as u64));
        conns.extend(udp_rows.iter().map(|info| self.conn_from(info, &owners)));
        let events = raw_events.iter().map(|raw| self.event_from(raw, &owners)).collect();
        self.supply.hand_out(&mut self.skel).context("handing out connection slots")?;
        Ok(Sample { conns, events, overflow: self.overflow(), unchanged })
    }

    /// A walk first where the hooks sample (else `collect` walks anyway): bytes of the paths
    /// no hook sees since the last walk count in the last totals.
    fn collect_last(&mut self) -> Result<Sample> {
        if self.plan.hooks_sample {
            self.walk()?;
        }
        self.collect()
    }

    fn wait_events(&mut self, timeout: Duration) -> Result<Vec<ConnEvent>> {
        match self.ring.poll(timeout) {
            // A signal ended the wait early: hand on what arrived; the caller decides.
            Err(e) if e.kind() == libbpf_rs::ErrorKind::Interrupted => {}
            result => result.context("waiting for connection events")?,
        }
        let raw_events = std::mem::take(&mut *self.arrived.borrow_mut());
        self.supply.hand_out(&mut self.skel).context("handing out connection slots")?;
        let owners =
            self.find_owners(raw_events.iter().filter_map(|raw| unowned_socket(&raw.info)).collect());
        Ok(raw_events.iter().map(|raw| self.event_from(raw, &owners)).collect())
    }
}

impl EbpfCollector {
    fn event_from(&mut self, raw: &types::conn_event, owners: &HashMap<u64, Owner>) -> ConnEvent {
        let kind = if raw.kind == CONN_EVENT_CLOSED {
            EventKind::Closed
        } else {
            EventKind::State {
                old: TcpState::from_kernel(raw.old_state),
                new: TcpState::from_kernel(raw.new_state),
            }
        };
        ConnEvent {
            at: Duration::from_nanos(raw.timestamp_ns),
            kind,
            conn: self.conn_from(&raw.info, owners),
        }
    }

    /// The owners of the sockets of these inodes (`unowned_socket`), from at most one /proc
    /// scan for them all, never one per socket.
    fn find_owners(&mut self, inodes: Vec<u64>) -> HashMap<u64, Owner> {
        let owners = self.owners.lookup(inodes.iter().copied());
        inodes.into_iter().zip(owners).filter_map(|(ino, owner)| Some((ino, owner?))).collect()
    }

    /// The kernel's record, with what /proc and the cgroup tree add: the owner of a socket
    /// that predates tcptop, and the cgroup path.
    /// `owners`: what `find_owners` found for this read.
    fn conn_from(&mut self, info: &types::conn_info, owners: &HashMap<u64, Owner>) -> Conn {
        let mut conn = conn_from(info, self.plan.resets, self.comms.of(&info.comm));
        if let Some(owner) = owners.get(&info.sock_ino).filter(|_| conn.pid.is_none()) {
            conn.pid = Some(owner.pid);
            conn.comm = Arc::clone(&owner.comm);
        }
        if info.cgroup_id != 0 {
            conn.cgroup = self.cgroups.lookup(info.cgroup_id);
        }
        conn
    }
}

/// The inode of a record's socket, if the kernel side could not name its owner (it predates
/// tcptop): /proc names it.
fn unowned_socket(info: &types::conn_info) -> Option<u64> {
    (info.pid == 0 && info.sock_ino != 0).then_some(info.sock_ino)
}

/// Thread names as the kernel side records them (TASK_COMM_LEN bytes, NUL-padded), each
/// decoded once into a string the rows share, not once per row and read.
struct Comms(BoundedCache<[u8; 16], Arc<str>, ById>);

/// Names kept: far more than a host runs programs under.
const COMMS_KEPT: usize = 4096;

impl Comms {
    fn of(&mut self, comm: &[u8; 16]) -> Arc<str> {
        if let Some(name) = self.0.get(comm) {
            return Arc::clone(name);
        }
        let len = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
        let name: Arc<str> = String::from_utf8_lossy(&comm[..len]).into();
        self.0.insert(*comm, Arc::clone(&name));
        name
    }
}

/// The kernel's record alone, named `comm`; `resets_counted`: whether the plan counts resets.
fn conn_from(info: &types::conn_info, resets_counted: bool, comm: Arc<str>) -> Conn {
    let address = |bytes: &[u8; 16], port: u16| {
        let ip = if info.family == AF_INET6 {
            Ipv6Addr::from(*bytes).to_canonical()
        } else {
            IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
        };
        SocketAddr::new(ip, port)
    };
    let proto = if info.proto == IPPROTO_UDP { Proto::Udp } else { Proto::Tcp };
    Conn {
        id: info.id,
        pid: (info.pid != 0).then_some(info.pid),
        comm,
        proto,
        local: address(&info.laddr, info.lport),
        remote: address(&info.raddr, info.rport),
        state: (proto == Proto::Tcp).then(|| TcpState::from_kernel(info.state)),
        tx_bytes: info.tx_bytes,
        rx_bytes: info.rx_bytes,
        netns: (info.netns != 0).then_some(info.netns),
        cgroup: None,
        health: (proto == Proto::Tcp).then(|| health_from(info, resets_counted)),
    }
}

/// The health figures of a TCP record, each only where the kernel side had it.
fn health_from(info: &types::conn_info, resets_counted: bool) -> TcpHealth {
    let read = info.health_read != 0;
    TcpHealth {
        rtt: (read && info.rtt_known != 0).then_some(Rtt {
            smoothed_us: info.srtt_us,
            variation_us: info.rttvar_us,
            min_us: info.min_rtt_us,
        }),
        retrans: read.then_some(u64::from(info.retrans)),
        connect: (info.connect_known != 0).then_some(Handshake {
            took: Duration::from_nanos(info.connect_ns),
            failed: info.connect_failed != 0,
        }),
        resets_sent: resets_counted.then_some(info.resets_sent),
        resets_received: resets_counted.then_some(info.resets_received),
        estimated: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded(info: &types::conn_info, resets_counted: bool) -> Conn {
        conn_from(info, resets_counted, Comms(BoundedCache::new(1)).of(&info.comm))
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
        let conn = decoded(&info, true);
        assert_eq!(conn.local, "127.0.0.1:80".parse().unwrap());
        assert_eq!(conn.remote, "[::1]:5555".parse().unwrap());
        assert_eq!((&*conn.comm, conn.pid, conn.state), ("curl", None, Some(TcpState::Established)));
    }

    #[test]
    fn health_figures_the_kernel_side_did_not_have_are_unknown_not_zero() {
        let info = types::conn_info { family: AF_INET, proto: IPPROTO_TCP, ..Default::default() };
        assert_eq!(decoded(&info, false).health, Some(TcpHealth::default()));
        let info = types::conn_info {
            health_read: 1,
            retrans: 3,
            srtt_us: 42,
            connect_known: 1,
            connect_failed: 1,
            connect_ns: 1_500_000,
            ..info
        };
        let health = decoded(&info, true).health.unwrap();
        assert_eq!((health.rtt, health.retrans, health.resets_received), (None, Some(3), Some(0)));
        assert_eq!(health.connect, Some(Handshake { took: Duration::from_micros(1500), failed: true }));
    }

    #[test]
    fn udp_flows_have_no_state() {
        let info = types::conn_info { family: AF_INET, pid: 7, proto: IPPROTO_UDP, ..Default::default() };
        let conn = decoded(&info, true);
        assert_eq!((conn.proto, conn.state, conn.pid, conn.health), (Proto::Udp, None, Some(7), None));
    }
}
