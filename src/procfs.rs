//! What Linux's /proc and cgroup filesystem say about sockets, cgroups and processes: which
//! process holds a socket inode, which path a cgroup id names, a process's command line.
//! Socket owners and cgroup paths are cached (bounded), and rescanned only for ids not seen
//! lately.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::mem;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::sync::Arc;
use std::thread;

use crate::cache::BoundedCache;
use crate::model::ById;

/// Entries per cache generation: as many connections as the eBPF collector's table holds,
/// so that a full table's sockets are looked up once, not once per interval.
const CACHE_GENERATION: usize = 65_536;
/// Threads at most that read /proc's fd links at once.
const SCAN_THREADS: usize = 4;
/// Unknown sockets beyond which a lookup does not wait for the scan. A scan reads every fd of
/// every process, some 3 µs of a core each: a host with more sockets than this would wait
/// seconds for its first table, which lists them at once instead, their owners unknown until
/// the scan ends.
const NOT_AWAITED: usize = 100_000;
/// The nice value of a scan no lookup waits for any more: the cores go first to what does.
const UNHURRIED_NICE: i32 = 10;

/// A process that holds a socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub pid: u32,
    pub comm: Arc<str>,
}

/// Socket inode -> owning process, from /proc/<pid>/fd, scanned on threads of their own.
pub struct SocketOwners {
    /// A process's name is shared by the entries of all its sockets.
    known: BoundedCache<u64, Option<Holder>, ById>,
    /// Sockets asked about that no scan has answered, each with the number of scans started
    /// before it was asked: only a scan started later is sure to find it.
    unanswered: HashMap<u64, u64, ById>,
    scans_started: u64,
    /// The scan under way, if any: the last one started.
    running: Option<Scan>,
    /// Every socket inode held by a process, with the holder: `scan_socket_owners` but in tests.
    scan: Arc<ScanFn>,
    /// Unknown sockets beyond which a lookup does not wait for the scan.
    not_awaited: usize,
    /// A lookup left sockets unknown, not waiting for the scan under way.
    left_unknown: bool,
    /// The scan such a lookup left running has answered since `answered_late` last said so.
    answered_late: bool,
}

/// A scan of /proc: told when no lookup waits for it any more.
type ScanFn = dyn Fn(&AtomicBool) -> Holders + Send + Sync;

/// A scan running on a thread of its own.
struct Scan {
    found: Receiver<Holders>,
    /// Set once a lookup did not wait for it.
    unhurried: Arc<AtomicBool>,
}

impl Default for SocketOwners {
    fn default() -> Self {
        SocketOwners::new(CACHE_GENERATION, Arc::new(scan_socket_owners), NOT_AWAITED)
    }
}

impl fmt::Debug for SocketOwners {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SocketOwners").field("known", &self.known.len()).finish_non_exhaustive()
    }
}

impl SocketOwners {
    fn new(generation: usize, scan: Arc<ScanFn>, not_awaited: usize) -> SocketOwners {
        SocketOwners {
            known: BoundedCache::new(generation),
            unanswered: HashMap::default(),
            scans_started: 0,
            running: None,
            scan,
            not_awaited,
            left_unknown: false,
            answered_late: false,
        }
    }

    /// The owner of each of `inodes`, where known. Sockets not seen lately start a scan of
    /// /proc (one for them all, never one per socket), which the lookup waits for unless
    /// more than `not_awaited` sockets are unknown: then they are `None` now, and known at a
    /// lookup after the scan ends. A socket no process holds any more stays unknown. The
    /// cache grows to hold the largest batch, or a host with more sockets than it holds would
    /// rescan /proc at every read that lists them all.
    pub fn lookup(&mut self, inodes: impl IntoIterator<Item = u64>) -> Vec<Option<Owner>> {
        let inodes: Vec<u64> = inodes.into_iter().collect();
        self.known.hold_at_least(inodes.len());
        for &ino in &inodes {
            if self.known.get(&ino).is_none() {
                self.unanswered.entry(ino).or_insert(self.scans_started);
            }
        }
        self.await_answers();
        let owner = |holder: &Holder| Owner { pid: holder.pid, comm: Arc::clone(&holder.comm) };
        inodes.iter().map(|ino| self.known.get(ino).and_then(|holder| holder.as_ref().map(owner))).collect()
    }

    /// Scans until every socket asked about is answered, but for too many to wait for. The
    /// scan under way is waited for even if it started too early for some of them, then
    /// another starts.
    fn await_answers(&mut self) {
        while !self.unanswered.is_empty() {
            let running = match self.running.take() {
                Some(running) => running,
                None => self.start_scan(),
            };
            let found = if self.unanswered.len() > self.not_awaited {
                match running.found.try_recv() {
                    Err(TryRecvError::Empty) => {
                        running.unhurried.store(true, Ordering::Relaxed);
                        self.running = Some(running);
                        self.left_unknown = true;
                        return;
                    }
                    found => found.ok(),
                }
            } else {
                running.found.recv().ok()
            };
            match found {
                Some(holders) => self.answer(&holders),
                // The scan's thread failed (it panicked): the next lookup starts another.
                None => return,
            }
        }
    }

    /// Whether the scan a lookup did not wait for has ended since, answering the sockets that
    /// lookup left unknown: a reader that listed them may list them again, named. Never waits;
    /// true once per such scan.
    pub fn answered_late(&mut self) -> bool {
        if let Some(running) = self.running.as_ref().filter(|_| self.left_unknown) {
            match running.found.try_recv() {
                Err(TryRecvError::Empty) => {}
                found => {
                    self.running = None;
                    if let Ok(holders) = found {
                        self.answer(&holders);
                    }
                }
            }
        }
        std::mem::take(&mut self.answered_late)
    }

    /// Starts scan number `scans_started + 1` on a thread of its own; named as the collection
    /// thread, whose privileges it shares.
    fn start_scan(&mut self) -> Scan {
        self.scans_started += 1;
        let (sender, found) = mpsc::channel();
        let unhurried = Arc::new(AtomicBool::new(false));
        let (scan, told) = (Arc::clone(&self.scan), Arc::clone(&unhurried));
        let spawned = thread::Builder::new().name("tcptop-collect".into()).spawn({
            let sender = sender.clone();
            move || {
                let _ = sender.send(scan(&told));
            }
        });
        if spawned.is_err() {
            // No thread to spare: scan here.
            let _ = sender.send((self.scan)(&unhurried));
        }
        Scan { found, unhurried }
    }

    /// What the last scan started found, for every socket asked about before it started.
    fn answer(&mut self, holders: &Holders) {
        self.answered_late |= std::mem::take(&mut self.left_unknown);
        let scan = self.scans_started;
        self.known.hold_at_least(self.unanswered.len());
        let known = &mut self.known;
        self.unanswered.retain(|&ino, &mut asked| {
            let answered = asked < scan;
            if answered {
                known.insert(ino, holders.of(ino));
            }
            !answered
        });
    }
}

/// A process holding sockets, its name shared by all of them.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Holder {
    pid: u32,
    comm: Arc<str>,
}

/// What one scan of /proc found: each socket inode with the lowest pid holding it (about 20
/// bytes a socket however many there are), and each holder's name.
#[derive(Default)]
pub struct Holders {
    sockets: HashMap<u64, u32, ById>,
    comms: HashMap<u32, Arc<str>>,
}

impl Holders {
    fn of(&self, ino: u64) -> Option<Holder> {
        let pid = *self.sockets.get(&ino)?;
        Some(Holder { pid, comm: self.comms.get(&pid).cloned().unwrap_or_else(|| "".into()) })
    }

    /// Notes that `pid` holds `ino`: the lowest pid of a socket several processes hold is kept.
    fn add(&mut self, ino: u64, pid: u32) {
        let holder = self.sockets.entry(ino).or_insert(pid);
        *holder = (*holder).min(pid);
    }

    fn extend(&mut self, other: Holders) {
        self.sockets.reserve(other.sockets.len());
        for (ino, pid) in other.sockets {
            self.add(ino, pid);
        }
        self.comms.extend(other.comms);
    }
}

/// Every socket inode open in any process, with the first process (by pid) holding it. The
/// processes are shared among a few threads (each fd directory read with getdents, each link
/// read relative to it): a host with a million sockets has a million links to read. Once
/// `unhurried` is set, one thread finishes the scan alone, leaving the other cores to what
/// waits for none of it.
pub fn scan_socket_owners(unhurried: &AtomicBool) -> Holders {
    let pids: Vec<u32> = processes().map(|(pid, _)| pid).collect();
    let threads =
        thread::available_parallelism().map_or(1, |n| n.get()).min(SCAN_THREADS).min(pids.len().max(1));
    let next = AtomicUsize::new(0);
    let scan = |helper: bool| {
        let mut found = Holders::default();
        let mut link = Vec::new();
        let mut lowered = false;
        loop {
            if unhurried.load(Ordering::Relaxed) {
                if helper {
                    break;
                }
                if !lowered {
                    // Linux: the calling thread's nice value; a raise needs no privilege.
                    // SAFETY: setpriority changes no memory.
                    unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, UNHURRIED_NICE) };
                    lowered = true;
                }
            }
            let Some(&pid) = pids.get(next.fetch_add(1, Ordering::Relaxed)) else { break };
            scan_process(pid, &mut found, &mut link);
        }
        found
    };
    let parts: Vec<Holders> = thread::scope(|scope| {
        // Named as the collection thread, whose privileges they share while they run.
        let helpers: Vec<_> = (1..threads)
            .filter_map(|_| {
                thread::Builder::new().name("tcptop-collect".into()).spawn_scoped(scope, || scan(true)).ok()
            })
            .collect();
        let mut parts = vec![scan(false)];
        parts.extend(helpers.into_iter().filter_map(|helper| helper.join().ok()));
        parts
    });
    let mut parts = parts.into_iter();
    let mut all = parts.next().unwrap_or_default();
    for part in parts {
        all.extend(part);
    }
    all
}

/// Adds the sockets `pid` holds to `found`; `link`: a buffer for the fd links.
fn scan_process(pid: u32, found: &mut Holders, link: &mut Vec<u8>) {
    use rustix::fs::{openat, readlinkat, Dir, Mode, OFlags, CWD};
    let Ok(fds) = openat(
        CWD,
        format!("/proc/{pid}/fd"),
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) else {
        return;
    };
    let Ok(entries) = Dir::read_from(&fds) else { return };
    let mut holds_sockets = false;
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name.to_bytes().first() == Some(&b'.') {
            continue;
        }
        let Ok(target) = readlinkat(&fds, name, mem::take(link)) else { continue };
        let target = target.into_bytes();
        if let Some(ino) = socket_inode(&target) {
            found.add(ino, pid);
            holds_sockets = true;
        }
        *link = target;
    }
    if holds_sockets {
        let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        found.comms.insert(pid, comm.trim_end().into());
    }
}

/// Every process's pid and /proc directory.
fn processes() -> impl Iterator<Item = (u32, fs::DirEntry)> {
    let entries = fs::read_dir("/proc").into_iter().flatten().flatten();
    entries.filter_map(|entry| Some((entry.file_name().to_str()?.parse().ok()?, entry)))
}

/// The inode of an fd link target such as `socket:[12345]`.
fn socket_inode(target: &[u8]) -> Option<u64> {
    std::str::from_utf8(target.strip_prefix(b"socket:[")?.strip_suffix(b"]")?).ok()?.parse().ok()
}

/// cgroup v2 id -> path below the cgroup v2 root (the id is the directory's inode).
#[derive(Debug)]
pub struct CgroupPaths {
    known: BoundedCache<u64, Option<Arc<str>>, ById>,
}

impl Default for CgroupPaths {
    fn default() -> Self {
        CgroupPaths { known: BoundedCache::new(CACHE_GENERATION) }
    }
}

impl CgroupPaths {
    /// The path of cgroup `id`, walking the cgroup tree again only for an id not seen lately.
    pub fn lookup(&mut self, id: u64) -> Option<Arc<str>> {
        if let Some(known) = self.known.get(&id) {
            return known.clone();
        }
        let mut found = HashMap::new();
        if let Some(root) = cgroup2_root() {
            walk_cgroups(&root, &root, &mut found);
        }
        let path: Option<Arc<str>> = found.remove(&id).map(Into::into);
        // The others found on the way save walks for them; `id` goes last, so it is kept.
        for (other, other_path) in found {
            self.known.insert(other, Some(other_path.into()));
        }
        self.known.insert(id, path.clone());
        path
    }
}

/// The arguments of `pid` joined by spaces; `None` where /proc does not say (kernel threads,
/// exited processes).
pub fn read_cmdline(pid: u32) -> Option<String> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<String> = raw
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    (!args.is_empty()).then(|| args.join(" "))
}

/// Where the cgroup v2 hierarchy is mounted: /sys/fs/cgroup, or /sys/fs/cgroup/unified on
/// hosts that still mount the v1 controllers.
pub fn cgroup2_root() -> Option<PathBuf> {
    let mounts = fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let (_device, mount_point, fs_type) = (fields.next()?, fields.next()?, fields.next()?);
        (fs_type == "cgroup2").then(|| PathBuf::from(mount_point))
    })
}

fn walk_cgroups(root: &Path, dir: &Path, found: &mut HashMap<u64, String>) {
    let Ok(meta) = fs::metadata(dir) else { return };
    let relative = dir.strip_prefix(root).map_or(String::new(), |p| p.display().to_string());
    found.insert(meta.ino(), format!("/{relative}"));
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            walk_cgroups(root, &entry.path(), found);
        }
    }
}

/// The cgroup id (directory inode) of a cgroup path: absolute (under the cgroup v2 mount)
/// or relative to the cgroup v2 root.
pub fn cgroup_id(path: &str) -> io::Result<u64> {
    let root = cgroup2_root().ok_or_else(|| io::Error::other("no cgroup v2 hierarchy is mounted"))?;
    let dir = match Path::new(path).strip_prefix(&root) {
        Ok(relative) => root.join(relative),
        Err(_) => root.join(path.trim_start_matches('/')),
    };
    let meta = fs::metadata(&dir)?;
    if !meta.is_dir() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a cgroup directory"));
    }
    Ok(meta.ino())
}

/// A file of each network namespace in use other than ours: those processes are in
/// (/proc/<pid>/ns/net) and those `ip netns` named (/run/netns), which may hold sockets of
/// threads that entered them and left.
pub fn other_network_namespaces() -> Vec<PathBuf> {
    let own = fs::metadata("/proc/self/ns/net").map(|meta| meta.ino());
    let mut seen: HashSet<u64> = own.into_iter().collect();
    let in_use = processes().map(|(_, entry)| entry.path().join("ns/net"));
    let named = fs::read_dir("/run/netns").into_iter().flatten().flatten().map(|entry| entry.path());
    in_use.chain(named).filter(|path| fs::metadata(path).is_ok_and(|meta| seen.insert(meta.ino()))).collect()
}

/// Sockets in use, by /proc/net/sockstat: the larger of this namespace's sockets and the TCP
/// sockets of every namespace (`alloc` is a count of the whole host); 0 if it cannot be read.
pub fn sockets_in_use() -> u64 {
    let sockstat = fs::read_to_string("/proc/net/sockstat").unwrap_or_default();
    sockets_used(&sockstat)
}

fn sockets_used(sockstat: &str) -> u64 {
    sockstat_count(sockstat, "sockets:", "used").max(sockstat_count(sockstat, "TCP:", "alloc")).unwrap_or(0)
}

/// Whether the calling thread's network namespace may hold TCP connections: sockstat's
/// `TCP: inuse` (this namespace's hashed sockets) is not 0, or cannot be read.
pub fn tcp_sockets_in_this_namespace() -> bool {
    let sockstat = fs::read_to_string("/proc/thread-self/net/sockstat").unwrap_or_default();
    tcp_in_use(&sockstat) != Some(0)
}

fn tcp_in_use(sockstat: &str) -> Option<u64> {
    sockstat_count(sockstat, "TCP:", "inuse")
}

/// A network namespace's IPv6 TCP sockets (sockstat6's `TCP6: inuse`), from a file opened in
/// it: a proc net file reports the namespace it was opened in, wherever it is read from.
pub struct Tcp6InUse(fs::File);

impl Tcp6InUse {
    /// For the calling thread's network namespace.
    pub fn open() -> io::Result<Tcp6InUse> {
        fs::File::open("/proc/thread-self/net/sockstat6").map(Tcp6InUse)
    }

    /// Whether the namespace may hold IPv6 TCP sockets: true unless it has none now.
    pub fn any(&mut self) -> bool {
        let mut sockstat6 = String::new();
        let read = self.0.seek(SeekFrom::Start(0)).and_then(|_| self.0.read_to_string(&mut sockstat6));
        read.is_err() || sockstat_count(&sockstat6, "TCP6:", "inuse") != Some(0)
    }
}

/// The number after `field` on sockstat's line starting with `prefix`.
fn sockstat_count(sockstat: &str, prefix: &str, field: &str) -> Option<u64> {
    let line = sockstat.lines().find_map(|line| line.strip_prefix(prefix))?;
    let mut words = line.split_whitespace().skip_while(|&word| word != field);
    words.nth(1)?.parse::<u64>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn sockstat_names_the_sockets_in_use() {
        let sockstat = "sockets: used 4312\nTCP: inuse 10 orphan 0 tw 2 alloc 12 mem 3\n";
        assert_eq!(sockets_used(sockstat), 4312);
        // Another namespace's view: few sockets here, many TCP sockets on the host.
        let sockstat = "sockets: used 7\nTCP: inuse 1 orphan 0 tw 0 alloc 50020 mem 3\n";
        assert_eq!(sockets_used(sockstat), 50_020);
        assert_eq!(sockets_used("UDP: inuse 10\n"), 0);
        assert_eq!(tcp_in_use(sockstat), Some(1));
        assert_eq!(tcp_in_use("sockets: used 7\n"), None);
        assert!(tcp_sockets_in_this_namespace(), "the listener below is a hashed TCP socket");
        let mut tcp6 = Tcp6InUse::open().unwrap();
        let _listener6 = std::net::TcpListener::bind("[::1]:0").unwrap();
        assert!(tcp6.any(), "read again, the count has the listener on ::1");
        let _listener = TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(sockets_in_use() > 0);
    }

    /// Lookups wait for every scan.
    const ALWAYS_AWAITED: usize = usize::MAX;

    /// What a scan of a /proc holding these sockets would find.
    fn holders(owners: &HashMap<u64, Owner>) -> Holders {
        let sockets = owners.iter().map(|(&ino, owner)| (ino, owner.pid)).collect();
        let comms = owners.values().map(|owner| (owner.pid, Arc::clone(&owner.comm))).collect();
        Holders { sockets, comms }
    }

    #[test]
    fn a_scan_finds_the_sockets_of_processes_and_the_lowest_pid_of_a_shared_one() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let link = fs::read_link(format!("/proc/self/fd/{}", listener.as_raw_fd())).unwrap();
        let ino = socket_inode(link.as_os_str().as_bytes()).unwrap();
        let found = scan_socket_owners(&AtomicBool::new(false)).of(ino).unwrap();
        let comm = fs::read_to_string("/proc/self/comm").unwrap();
        assert_eq!((found.pid, &*found.comm), (std::process::id(), comm.trim_end()));
        let mut shared = Holders::default();
        for (ino, pid) in [(5, 30), (9, 1), (5, 20)] {
            shared.add(ino, pid);
        }
        assert_eq!((shared.sockets[&5], shared.sockets[&9]), (20, 1));
    }

    #[test]
    fn socket_inode_parses_fd_link_targets() {
        assert_eq!(socket_inode(b"socket:[4242]"), Some(4242));
        assert_eq!(socket_inode(b"/dev/null"), None);
        assert_eq!(socket_inode(b"socket:[x]"), None);
    }

    #[test]
    fn finds_the_owner_of_our_own_socket() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let link = fs::read_link(format!("/proc/self/fd/{}", listener.as_raw_fd())).unwrap();
        let ino = socket_inode(link.as_os_str().as_bytes()).unwrap();
        let owners = SocketOwners::default().lookup([ino]);
        assert_eq!(owners[0].as_ref().map(|o| o.pid), Some(std::process::id()));
    }

    #[test]
    fn socket_owners_stay_bounded_across_100_000_connections_that_come_and_go() {
        use std::sync::{Arc, Mutex};
        // A host where 1,000 connections at a time are open, each replaced by a new one.
        let live: Arc<Mutex<HashMap<u64, Owner>>> = Arc::default();
        let scanned = Arc::clone(&live);
        let scan = Arc::new(move |_: &AtomicBool| holders(&scanned.lock().unwrap()));
        let mut owners = SocketOwners::new(4_096, scan, ALWAYS_AWAITED);
        let owner = Owner { pid: 7, comm: "server".into() };
        for batch in 0..100u64 {
            let inodes: Vec<u64> = (batch * 1_000..(batch + 1) * 1_000).collect();
            *live.lock().unwrap() = inodes.iter().map(|&ino| (ino, owner.clone())).collect();
            let found = owners.lookup(inodes.iter().copied());
            assert!(found.iter().all(|o| o.as_ref() == Some(&owner)));
            assert!(owners.known.len() <= 2 * 4_096, "{} entries", owners.known.len());
        }
    }

    #[test]
    fn a_batch_larger_than_the_cache_is_answered_whole_from_one_scan() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        let scans = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&scans);
        let owner = Owner { pid: 7, comm: "server".into() };
        let held: HashMap<u64, Owner> = (0..10_000).map(|ino| (ino, owner.clone())).collect();
        let scan = Arc::new(move |_: &AtomicBool| {
            counted.fetch_add(1, Ordering::Relaxed);
            holders(&held)
        });
        let mut owners = SocketOwners::new(1_000, scan, ALWAYS_AWAITED);
        let found = owners.lookup(0..10_000);
        assert!(found.iter().all(|o| o.as_ref() == Some(&owner)));
        assert_eq!(scans.load(Ordering::Relaxed), 1);
        // The cache grew to hold the batch: the next read of the same sockets scans nothing.
        owners.lookup(0..10_000);
        assert_eq!(scans.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_slow_scan_answers_later_and_one_started_before_a_socket_was_asked_about_does_not() {
        use std::sync::Mutex;
        // Each scan finds what the test hands it, when it does.
        let (finds, found) = mpsc::channel::<Holders>();
        let found = Mutex::new(found);
        let scan = Arc::new(move |_: &AtomicBool| found.lock().unwrap().recv().unwrap_or_default());
        let mut owners = SocketOwners::new(16, scan, 0);
        let owner = |pid| Owner { pid, comm: "server".into() };
        assert_eq!(owners.lookup([1]), [None], "the first scan is under way");
        assert_eq!(owners.lookup([1, 2]), [None, None], "2 is asked about after it started");
        // The first scan read 2's process before 2 opened; the second one finds it.
        finds.send(holders(&HashMap::from([(1, owner(7))]))).unwrap();
        finds.send(holders(&HashMap::from([(1, owner(7)), (2, owner(8))]))).unwrap();
        owners.not_awaited = ALWAYS_AWAITED;
        assert_eq!(owners.lookup([1, 2]), [Some(owner(7)), Some(owner(8))]);
        assert_eq!(owners.scans_started, 2);
    }

    #[test]
    fn a_lookup_of_too_many_unknown_sockets_answers_at_once_and_the_scan_goes_on_unhurried() {
        use std::sync::Mutex;
        let (finds, found) = mpsc::channel::<Holders>();
        let (tells, told) = mpsc::channel::<bool>();
        let (found, tells) = (Mutex::new(found), Mutex::new(tells));
        let scan = Arc::new(move |unhurried: &AtomicBool| {
            let holders = found.lock().unwrap().recv().unwrap_or_default();
            tells.lock().unwrap().send(unhurried.load(Ordering::Relaxed)).unwrap();
            holders
        });
        let mut owners = SocketOwners::new(16, scan, 2);
        // Answered while the scan waits for the test: had the lookup waited, it would not end.
        assert_eq!(owners.lookup(0..3), [None, None, None]);
        assert!(!owners.answered_late(), "the scan is still under way");
        let owner = Owner { pid: 7, comm: "server".into() };
        finds.send(holders(&(0..3).map(|ino| (ino, owner.clone())).collect())).unwrap();
        assert!(told.recv().unwrap(), "the scan was told that no lookup waits for it");
        // A lookup takes the answers in: the late scan is still told of, once.
        while owners.lookup([0]) != [Some(owner.clone())] {
            thread::yield_now();
        }
        assert!(owners.answered_late());
        assert!(!owners.answered_late(), "once");
        assert_eq!(owners.lookup(0..3), vec![Some(owner); 3], "answered without another scan");
    }

    #[test]
    fn command_lines_come_from_proc() {
        let own = read_cmdline(std::process::id()).unwrap();
        assert!(own.contains("tcptop"), "{own}");
        // Above the kernel's pid limit (2^22): no such process.
        assert_eq!(read_cmdline(5_000_000), None);
    }

    #[test]
    fn the_root_cgroup_maps_to_slash() {
        if let Ok(id) = cgroup_id("/") {
            assert_eq!(CgroupPaths::default().lookup(id).as_deref(), Some("/"));
        }
    }
}
