//! What Linux's /proc and cgroup filesystem say about sockets, cgroups and processes: which
//! process holds a socket inode, which path a cgroup id names, a process's command line.
//! Socket owners and cgroup paths are cached (bounded), and rescanned only for ids not seen
//! lately.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::cache::BoundedCache;

/// Entries per cache generation: as many connections as the eBPF collector's table holds,
/// so that a full table's sockets are looked up once, not once per interval.
const CACHE_GENERATION: usize = 65_536;

/// A process that holds a socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub pid: u32,
    pub comm: String,
}

/// Socket inode -> owning process, from /proc/<pid>/fd.
pub struct SocketOwners {
    known: BoundedCache<u64, Option<Owner>>,
    /// Every socket inode held by a process, with the holder: `scan_socket_owners` but in tests.
    scan: Box<dyn FnMut() -> HashMap<u64, Owner> + Send>,
}

impl Default for SocketOwners {
    fn default() -> Self {
        SocketOwners::new(CACHE_GENERATION, Box::new(scan_socket_owners))
    }
}

impl fmt::Debug for SocketOwners {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SocketOwners").field("known", &self.known.len()).finish_non_exhaustive()
    }
}

impl SocketOwners {
    fn new(generation: usize, scan: Box<dyn FnMut() -> HashMap<u64, Owner> + Send>) -> SocketOwners {
        SocketOwners { known: BoundedCache::new(generation), scan }
    }

    /// The owner of each of `inodes`, scanning /proc at most once for those never seen. A
    /// socket no process holds any more stays unknown. Answers come from the scan itself, so
    /// a batch larger than the cache is still answered whole: callers ask once per table
    /// read, never once per row, or a host with more sockets than the cache holds would
    /// rescan /proc for each row.
    pub fn lookup(&mut self, inodes: impl IntoIterator<Item = u64>) -> Vec<Option<Owner>> {
        let mut scanned: Option<HashMap<u64, Owner>> = None;
        let mut owners = Vec::new();
        for ino in inodes {
            let owner = match self.known.get(&ino) {
                Some(owner) => owner.clone(),
                None => {
                    let found = scanned.get_or_insert_with(&mut self.scan);
                    let owner = found.get(&ino).cloned();
                    self.known.insert(ino, owner.clone());
                    owner
                }
            };
            owners.push(owner);
        }
        owners
    }
}

/// Every socket inode open in any process, with the first process found holding it.
pub fn scan_socket_owners() -> HashMap<u64, Owner> {
    let mut owners = HashMap::new();
    for (pid, entry) in processes() {
        let Ok(fds) = fs::read_dir(entry.path().join("fd")) else { continue };
        let mut comm = None;
        for fd in fds.flatten() {
            let Some(ino) = fs::read_link(fd.path()).ok().as_deref().and_then(socket_inode) else {
                continue;
            };
            let comm = comm.get_or_insert_with(|| {
                fs::read_to_string(entry.path().join("comm")).unwrap_or_default().trim_end().to_string()
            });
            owners.entry(ino).or_insert_with(|| Owner { pid, comm: comm.clone() });
        }
    }
    owners
}

/// Every process's pid and /proc directory.
fn processes() -> impl Iterator<Item = (u32, fs::DirEntry)> {
    let entries = fs::read_dir("/proc").into_iter().flatten().flatten();
    entries.filter_map(|entry| Some((entry.file_name().to_str()?.parse().ok()?, entry)))
}

/// The inode of an fd link target such as `socket:[12345]`.
fn socket_inode(target: &Path) -> Option<u64> {
    target.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
}

/// cgroup v2 id -> path below the cgroup v2 root (the id is the directory's inode).
#[derive(Debug)]
pub struct CgroupPaths {
    known: BoundedCache<u64, Option<String>>,
}

impl Default for CgroupPaths {
    fn default() -> Self {
        CgroupPaths { known: BoundedCache::new(CACHE_GENERATION) }
    }
}

impl CgroupPaths {
    /// The path of cgroup `id`, walking the cgroup tree again only for an id not seen lately.
    pub fn lookup(&mut self, id: u64) -> Option<String> {
        if let Some(known) = self.known.get(&id) {
            return known.clone();
        }
        let mut found = HashMap::new();
        if let Some(root) = cgroup2_root() {
            walk_cgroups(&root, &root, &mut found);
        }
        let path = found.remove(&id);
        // The others found on the way save walks for them; `id` goes last, so it is kept.
        for (other, other_path) in found {
            self.known.insert(other, Some(other_path));
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

    #[test]
    fn socket_inode_parses_fd_link_targets() {
        assert_eq!(socket_inode(Path::new("socket:[4242]")), Some(4242));
        assert_eq!(socket_inode(Path::new("/dev/null")), None);
        assert_eq!(socket_inode(Path::new("socket:[x]")), None);
    }

    #[test]
    fn finds_the_owner_of_our_own_socket() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let link = fs::read_link(format!("/proc/self/fd/{}", listener.as_raw_fd())).unwrap();
        let ino = socket_inode(&link).unwrap();
        let owners = SocketOwners::default().lookup([ino]);
        assert_eq!(owners[0].as_ref().map(|o| o.pid), Some(std::process::id()));
    }

    #[test]
    fn socket_owners_stay_bounded_across_100_000_connections_that_come_and_go() {
        use std::sync::{Arc, Mutex};
        // A host where 1,000 connections at a time are open, each replaced by a new one.
        let live: Arc<Mutex<HashMap<u64, Owner>>> = Arc::default();
        let scanned = Arc::clone(&live);
        let mut owners = SocketOwners::new(4_096, Box::new(move || scanned.lock().unwrap().clone()));
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
        let mut owners = SocketOwners::new(
            1_000,
            Box::new(move || {
                counted.fetch_add(1, Ordering::Relaxed);
                held.clone()
            }),
        );
        let found = owners.lookup(0..10_000);
        assert!(found.iter().all(|o| o.as_ref() == Some(&owner)));
        assert_eq!(scans.load(Ordering::Relaxed), 1);
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
