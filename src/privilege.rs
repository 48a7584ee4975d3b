//! Least privilege on Linux: what a backend lacks, named; no core dumps of a process holding
//! kernel handles and host-wide data; once the collector is open, every capability dropped in
//! every thread but the few the collection thread needs for its table reads, with
//! no_new_privs set; and in capture mode, which parses every packet, Landlock and seccomp.

use std::collections::HashSet;
use std::fmt;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use landlock::{Access, AccessFs, PathBeneath, PathFd, Ruleset, RulesetAttr, RulesetCreatedAttr, ABI};
use rustix::thread::{CapabilitySet, CapabilitySets};

/// What reading the eBPF table or sock_diag in other network namespaces needs: entering them
/// (setns: CAP_SYS_ADMIN), and naming the owners of sockets and namespaces of other users'
/// processes in /proc (CAP_SYS_PTRACE for their fd and ns links, CAP_DAC_READ_SEARCH for
/// their directories).
pub const TABLE_READS: CapabilitySet =
    CapabilitySet::SYS_ADMIN.union(CapabilitySet::SYS_PTRACE).union(CapabilitySet::DAC_READ_SEARCH);
/// What the capture backend's attribution needs: /proc only. Its packets are parsed with none.
pub const PROC_READS: CapabilitySet = CapabilitySet::SYS_PTRACE.union(CapabilitySet::DAC_READ_SEARCH);

/// What a backend needs of the kernel: capabilities of the initial user namespace, the
/// kernel counting no others for BPF, perf events or the host's packets.
pub struct Need {
    /// What for, as the error says it: "to load its eBPF probes".
    pub doing: &'static str,
    pub all_of: CapabilitySet,
    /// Stands in for `all_of` (CAP_SYS_ADMIN for the BPF ones, before Linux 5.8 the only way;
    /// the error says "root" for it).
    pub or_instead: CapabilitySet,
}

pub const EBPF: Need = Need {
    doing: "to load its eBPF probes",
    all_of: CapabilitySet::BPF.union(CapabilitySet::PERFMON),
    or_instead: CapabilitySet::SYS_ADMIN,
};
pub const CAPTURE: Need =
    Need { doing: "to capture packets", all_of: CapabilitySet::NET_RAW, or_instead: CapabilitySet::empty() };

/// A backend cannot run for want of a privilege, which the message names.
#[derive(Debug)]
pub struct Missing(String);

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Missing {}

impl Need {
    /// What this process lacks for the job, from its effective capabilities and its user
    /// namespace; Ok when nothing visible is missing.
    pub fn check(&self) -> Result<(), Missing> {
        let effective =
            rustix::thread::capabilities(None).map_or(CapabilitySet::empty(), |sets| sets.effective);
        let uid_map = fs::read_to_string("/proc/self/uid_map").unwrap_or_default();
        match self.lacking(effective, &uid_map) {
            Some(why) => Err(Missing(why)),
            None => Ok(()),
        }
    }

    fn lacking(&self, effective: CapabilitySet, uid_map: &str) -> Option<String> {
        let (needs, doing) = (capability_names(self.all_of), self.doing);
        // The initial user namespace maps every id onto itself; `unshare -r` makes another.
        let initial = uid_map.trim().is_empty() || uid_map.split_whitespace().eq(["0", "0", "4294967295"]);
        if !initial {
            let map = uid_map.split_whitespace().collect::<Vec<_>>().join(" ");
            return Some(format!(
                "needs root, or {needs}, in the host's user namespace {doing}, and tcptop runs in \
                 another (uid_map `{map}`), whose capabilities do not count: run it as root outside \
                 (`--backend sockdiag` reads what it may in here)"
            ));
        }
        if !self.or_instead.is_empty() && effective.contains(self.or_instead) {
            return None;
        }
        let lacks = self.all_of - effective;
        (!lacks.is_empty()).then(|| {
            format!(
                "needs root, or {needs}, {doing}, and this process lacks {}: run it as `sudo \
                 tcptop`, or give the binary the capabilities (README, \"Security\")",
                capability_names(lacks)
            )
        })
    }
}

fn capability_names(set: CapabilitySet) -> String {
    set.iter_names().map(|(name, _)| format!("CAP_{name}")).collect::<Vec<_>>().join(" and ")
}

/// How long the other threads have to drop theirs.
const BROADCAST_TIMEOUT: Duration = Duration::from_secs(2);

/// No core file, and no ptrace by tcptop's own user: memory holds other users' connections.
pub fn forbid_core_dumps() -> Result<()> {
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
        .context("turning core dumps off")
}

/// Keeps `keep` (as far as it holds them) in the calling thread, the collection thread, and
/// drops every capability in all the others; sets no_new_privs everywhere, so that no
/// program run later gains any.
pub fn drop_after_open(keep: CapabilitySet) -> Result<()> {
    drop_everywhere(keep, None)
}

/// `ruleset`: the Landlock ruleset every other thread restricts itself with.
fn drop_everywhere(keep: CapabilitySet, ruleset: Option<&OwnedFd>) -> Result<()> {
    let held = rustix::thread::capabilities(None)?.permitted;
    LANDLOCK_RULESET.store(ruleset.map_or(-1, |fd| fd.as_raw_fd()), Ordering::SeqCst);
    let others = drop_in_every_other_thread();
    LANDLOCK_RULESET.store(-1, Ordering::SeqCst);
    others?;
    restrict_this_thread(keep & held).context("dropping capabilities")
}

/// Capture mode's drop: as `drop_after_open`, with every thread but the calling one (the
/// packet thread among them) restricted by Landlock to reading /proc, /sys, /etc and the
/// system's libraries and to the terminal (the log is open already), then a seccomp filter
/// in all of them refusing what tcptop never does once running (running a program, ptrace,
/// mounts, modules, BPF, namespaces, keys). The collection thread stays out of Landlock: its
/// domain would refuse it other processes' /proc/<pid>/fd, as it refuses ptrace. A kernel
/// without Landlock or seccomp is named.
pub fn drop_and_sandbox(keep: CapabilitySet) -> Result<()> {
    let ruleset = file_ruleset().context("building the Landlock ruleset")?;
    if ruleset.is_none() {
        eprintln!("tcptop: this kernel has no Landlock: capture runs without its file restrictions");
    }
    drop_everywhere(keep, ruleset.as_ref())?;
    if let Err(error) = refuse_dangerous_syscalls() {
        eprintln!("tcptop: no seccomp filter ({error:#}): capture runs without it");
    }
    Ok(())
}

/// The Landlock ruleset each thread restricts itself with when it drops (-1: none).
static LANDLOCK_RULESET: AtomicI32 = AtomicI32::new(-1);

/// None where the kernel has no Landlock.
fn file_ruleset() -> Result<Option<OwnedFd>> {
    let abi = ABI::V5;
    let read = AccessFs::from_read(abi);
    let terminal = AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::IoctlDev;
    let mut ruleset = Ruleset::default().handle_access(AccessFs::from_all(abi))?.create()?;
    // /sys and /proc/net: libpcap's interface list; /etc: names, services, the time zone;
    // /usr and /lib: what the C library loads for name lookups, and the time zones.
    for (path, access) in [
        ("/proc", read),
        ("/sys", read),
        ("/etc", read),
        ("/usr", read),
        ("/lib", read),
        ("/lib64", read),
        ("/dev/tty", terminal),
        ("/dev/null", terminal),
    ] {
        if let Ok(fd) = PathFd::new(path) {
            ruleset = ruleset.add_rule(PathBeneath::new(fd, access))?;
        }
    }
    Ok(ruleset.into())
}

/// Refused with EPERM in every thread (the filter is synchronised to all of them).
fn refuse_dangerous_syscalls() -> Result<()> {
    use seccompiler::{BpfProgram, SeccompAction, SeccompFilter};

    let refused = [
        libc::SYS_execve,
        libc::SYS_execveat,
        libc::SYS_ptrace,
        libc::SYS_process_vm_readv,
        libc::SYS_process_vm_writev,
        libc::SYS_mount,
        libc::SYS_umount2,
        libc::SYS_pivot_root,
        libc::SYS_chroot,
        libc::SYS_fsopen,
        libc::SYS_fsmount,
        libc::SYS_move_mount,
        libc::SYS_open_tree,
        libc::SYS_bpf,
        libc::SYS_perf_event_open,
        libc::SYS_init_module,
        libc::SYS_finit_module,
        libc::SYS_delete_module,
        libc::SYS_kexec_load,
        libc::SYS_kexec_file_load,
        libc::SYS_reboot,
        libc::SYS_swapon,
        libc::SYS_swapoff,
        libc::SYS_setns,
        libc::SYS_unshare,
        libc::SYS_keyctl,
        libc::SYS_add_key,
        libc::SYS_request_key,
        libc::SYS_userfaultfd,
        libc::SYS_open_by_handle_at,
    ];
    let rules = refused.into_iter().map(|number| (number, Vec::new())).collect();
    let arch = std::env::consts::ARCH.try_into().context("an architecture seccompiler does not know")?;
    let filter =
        SeccompFilter::new(rules, SeccompAction::Allow, SeccompAction::Errno(libc::EPERM as u32), arch)?;
    let program: BpfProgram = filter.try_into()?;
    seccompiler::apply_filter_all_threads(&program)?;
    Ok(())
}

/// No new privileges, then the Landlock ruleset if there is one, then the capabilities: in
/// this order, as a thread seen holding nothing has done the rest.
fn restrict_this_thread(keep: CapabilitySet) -> io::Result<()> {
    rustix::thread::set_no_new_privs(true)?;
    let ruleset = LANDLOCK_RULESET.load(Ordering::SeqCst);
    // SAFETY: landlock_restrict_self reads a descriptor kept open until every thread is done.
    if ruleset >= 0 && unsafe { libc::syscall(libc::SYS_landlock_restrict_self, ruleset, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let sets = CapabilitySets { effective: keep, permitted: keep, inheritable: CapabilitySet::empty() };
    rustix::thread::set_capabilities(None, sets)?;
    Ok(())
}

/// Whether a thread could not drop its capabilities.
static DROP_FAILED: AtomicBool = AtomicBool::new(false);

/// Capabilities belong to threads: each thread is signalled to drop its own (as libpsx does),
/// until no thread is left that has not.
fn drop_in_every_other_thread() -> Result<()> {
    let signal = libc::SIGRTMIN() + 1;
    // SAFETY: the handler only makes two system calls and stores atomics.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_drop_signal as extern "C" fn(libc::c_int) as usize;
        action.sa_flags = libc::SA_RESTART;
        if libc::sigaction(signal, &action, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error()).context("installing the capability drop handler");
        }
    }
    let me = rustix::thread::gettid().as_raw_nonzero().get();
    let pid = std::process::id() as libc::pid_t;
    let mut done = HashSet::from([me]);
    loop {
        let others: Vec<libc::pid_t> = threads()?.into_iter().filter(|tid| !done.contains(tid)).collect();
        if others.is_empty() {
            break;
        }
        for &tid in &others {
            // SAFETY: tgkill signals one thread of this process; one that ended is skipped.
            unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, signal) };
            done.insert(tid);
        }
        // Done when each signalled thread holds nothing, or has ended: the kernel's word, not
        // a count of handlers run, which a thread ending in between would leave short.
        let deadline = Instant::now() + BROADCAST_TIMEOUT;
        while !others.iter().all(|&tid| holds_nothing(tid)) {
            if Instant::now() > deadline {
                bail!("a thread did not drop its capabilities");
            }
            thread::sleep(Duration::from_millis(1));
        }
    }
    if DROP_FAILED.load(Ordering::SeqCst) {
        bail!("a thread could not drop its capabilities (or restrict itself with Landlock)");
    }
    Ok(())
}

extern "C" fn on_drop_signal(_: libc::c_int) {
    if restrict_this_thread(CapabilitySet::empty()).is_err() {
        DROP_FAILED.store(true, Ordering::SeqCst);
    }
}

/// Whether thread `tid` of this process has no capability left in any set it could use, or
/// is gone.
fn holds_nothing(tid: libc::pid_t) -> bool {
    let Ok(status) = fs::read_to_string(format!("/proc/self/task/{tid}/status")) else {
        return true;
    };
    ["CapEff:", "CapPrm:"].iter().all(|field| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .is_some_and(|hex| u64::from_str_radix(hex.trim(), 16) == Ok(0))
    })
}

fn threads() -> Result<Vec<libc::pid_t>> {
    let tasks = fs::read_dir("/proc/self/task").context("listing tcptop's threads")?;
    Ok(tasks.flatten().filter_map(|task| task.file_name().to_str()?.parse().ok()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: &str = "         0          0 4294967295\n";

    #[test]
    fn what_is_missing_is_named() {
        let all = CapabilitySet::all();
        assert_eq!(EBPF.lacking(all, HOST), None);
        assert_eq!(EBPF.lacking(CapabilitySet::SYS_ADMIN, HOST), None);
        assert_eq!(EBPF.lacking(EBPF.all_of, ""), None);
        let lacks = EBPF.lacking(CapabilitySet::BPF, HOST).unwrap();
        let expected = "needs root, or CAP_PERFMON and CAP_BPF, to load its eBPF probes, and this process \
                        lacks CAP_PERFMON:";
        assert!(lacks.starts_with(expected), "{lacks}");
        let lacks = CAPTURE.lacking(CapabilitySet::empty(), HOST).unwrap();
        let expected = "needs root, or CAP_NET_RAW, to capture packets, and this process lacks CAP_NET_RAW:";
        assert!(lacks.starts_with(expected), "{lacks}");
        let namespaced = CAPTURE.lacking(all, "0 1000 1\n").unwrap();
        let expected = "needs root, or CAP_NET_RAW, in the host's user namespace to capture packets, and \
                        tcptop runs in another (uid_map `0 1000 1`)";
        assert!(namespaced.starts_with(expected), "{namespaced}");
    }

    /// The CapEff values README documents for the collection thread.
    #[test]
    fn the_table_read_sets_are_the_documented_bits() {
        assert_eq!(format!("{:016x}", TABLE_READS.bits()), "0000000000280004");
        assert_eq!(format!("{:016x}", PROC_READS.bits()), "0000000000080004");
    }
}
