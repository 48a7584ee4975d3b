//! Least privilege on Linux: what a backend lacks, named; no core dumps of a process holding
//! kernel handles and host-wide data; and, once the collector is open, every capability
//! dropped in every thread but the few the collection thread needs for its table reads, with
//! no_new_privs set.

use std::collections::HashSet;
use std::fmt;
use std::fs;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
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
    /// What for, as an error begins: "loading the eBPF probes".
    pub doing: &'static str,
    pub all_of: CapabilitySet,
    /// Stands in for `all_of` (CAP_SYS_ADMIN for the BPF ones, before Linux 5.8 the only way).
    pub or_instead: CapabilitySet,
}

pub const EBPF: Need = Need {
    doing: "loading the eBPF probes",
    all_of: CapabilitySet::BPF.union(CapabilitySet::PERFMON),
    or_instead: CapabilitySet::SYS_ADMIN,
};
pub const CAPTURE: Need =
    Need { doing: "capturing packets", all_of: CapabilitySet::NET_RAW, or_instead: CapabilitySet::empty() };

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
        let needs = capability_names(self.all_of, " and ");
        let needs = match self.or_instead.is_empty() {
            true => needs,
            false => format!("{needs} (or {})", capability_names(self.or_instead, " and ")),
        };
        // The initial user namespace maps every id onto itself; `unshare -r` makes another.
        let initial = uid_map.trim().is_empty() || uid_map.split_whitespace().eq(["0", "0", "4294967295"]);
        if !initial {
            let map = uid_map.split_whitespace().collect::<Vec<_>>().join(" ");
            return Some(format!(
                "{} needs {needs} in the host's user namespace, and tcptop runs in another (uid_map \
                 `{map}`), whose capabilities do not count: run it as root outside (`--backend \
                 sockdiag` reads what it may in here)",
                self.doing
            ));
        }
        if !self.or_instead.is_empty() && effective.contains(self.or_instead) {
            return None;
        }
        let lacks = self.all_of - effective;
        (!lacks.is_empty()).then(|| {
            format!(
                "{} needs {needs}, and this process lacks {}: run it as `sudo tcptop`, or give the \
                 binary the capabilities (README, \"Security\")",
                self.doing,
                capability_names(lacks, " and ")
            )
        })
    }
}

fn capability_names(set: CapabilitySet, separator: &str) -> String {
    set.iter_names().map(|(name, _)| format!("CAP_{name}")).collect::<Vec<_>>().join(separator)
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
    let held = rustix::thread::capabilities(None)?.permitted;
    drop_in_every_other_thread()?;
    restrict_this_thread(keep & held).context("dropping capabilities")
}

fn restrict_this_thread(keep: CapabilitySet) -> io::Result<()> {
    rustix::thread::set_no_new_privs(true)?;
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
        bail!("a thread could not drop its capabilities");
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
        assert!(lacks.starts_with("loading the eBPF probes needs CAP_PERFMON and CAP_BPF (or CAP_SYS_ADMIN), and this process lacks CAP_PERFMON:"), "{lacks}");
        let lacks = CAPTURE.lacking(CapabilitySet::empty(), HOST).unwrap();
        assert!(
            lacks.starts_with("capturing packets needs CAP_NET_RAW, and this process lacks CAP_NET_RAW:"),
            "{lacks}"
        );
        let namespaced = CAPTURE.lacking(all, "0 1000 1\n").unwrap();
        assert!(
            namespaced
                .contains("in the host's user namespace, and tcptop runs in another (uid_map `0 1000 1`)"),
            "{namespaced}"
        );
    }

    /// The CapEff values README documents for the collection thread.
    #[test]
    fn the_table_read_sets_are_the_documented_bits() {
        assert_eq!(format!("{:016x}", TABLE_READS.bits()), "0000000000280004");
        assert_eq!(format!("{:016x}", PROC_READS.bits()), "0000000000080004");
    }
}
