//! Readings from /proc, cgroups and the kernel: a process's CPU time and peak memory, the whole
//! machine's busy time, which tracing BPF programs are loaded, and how long they ran.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use libbpf_rs::libbpf_sys;
use libbpf_rs::query::{ProgInfoIter, ProgramInfo};
use libbpf_rs::ProgramType;

/// A cgroup of one watcher's own, whose CPU time it counts to the nanosecond, its threads that
/// ended included (tcptop scans /proc on threads of their own, which a sum over the live
/// threads would miss). cgroup v2 where it is the unified hierarchy, else v1's cpuacct.
pub struct CpuAccount {
    dir: PathBuf,
    v2: bool,
}

impl CpuAccount {
    /// Moves `pid` (every thread) into a new cgroup, removed when this is dropped.
    pub fn of(pid: u32) -> io::Result<CpuAccount> {
        let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
        let root = if v2 { "/sys/fs/cgroup" } else { "/sys/fs/cgroup/cpuacct" };
        let dir = Path::new(root).join(format!("tcptop-bench-{pid}"));
        let made = fs::create_dir(&dir).and_then(|()| fs::write(dir.join("cgroup.procs"), pid.to_string()));
        // Made first, so that a cgroup made but not joined is removed too.
        let account = CpuAccount { dir, v2 };
        made.map_err(|e| io::Error::other(format!("a cgroup of its own in {root}: {e}")))?;
        Ok(account)
    }

    /// CPU time of the cgroup's processes since they joined it.
    pub fn cpu(&self) -> io::Result<Duration> {
        Ok(if self.v2 {
            let stat = fs::read_to_string(self.dir.join("cpu.stat"))?;
            let usage = stat.lines().find_map(|line| line.strip_prefix("usage_usec "));
            Duration::from_micros(first_number(usage.ok_or_else(|| invalid("no usage_usec in cpu.stat"))?)?)
        } else {
            Duration::from_nanos(first_number(&fs::read_to_string(self.dir.join("cpuacct.usage"))?)?)
        })
    }
}

impl Drop for CpuAccount {
    /// Once its process has exited (else the cgroup stays, empty once it does).
    fn drop(&mut self) {
        let _ = fs::remove_dir(&self.dir);
    }
}

/// Memory the kernel could give out now without swapping (MemAvailable), in bytes.
pub fn memory_available() -> io::Result<u64> {
    kib_field("/proc/meminfo", "MemAvailable:")
}

/// Peak resident memory of `pid`, in bytes (VmHWM).
pub fn peak_rss(pid: u32) -> io::Result<u64> {
    kib_field(&format!("/proc/{pid}/status"), "VmHWM:")
}

/// A `NAME: N kB` line of a /proc file, in bytes.
fn kib_field(path: &str, name: &str) -> io::Result<u64> {
    let text = fs::read_to_string(path)?;
    let kib = text.lines().find_map(|l| l.strip_prefix(name)).map(first_number);
    Ok(kib.unwrap_or_else(|| Err(invalid(&format!("no {name} in {path}"))))? * 1024)
}

/// Time all CPUs together spent not idle since boot (user, nice, system, irq, softirq, steal).
pub fn machine_busy() -> io::Result<Duration> {
    let stat = fs::read_to_string("/proc/stat")?;
    let total =
        stat.lines().next().and_then(|l| l.strip_prefix("cpu ")).ok_or_else(|| invalid("no cpu line"))?;
    let ticks: Vec<u64> = total.split_whitespace().map(|n| n.parse().unwrap_or(0)).collect();
    let busy: u64 = [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| ticks.get(i)).sum();
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Ok(Duration::from_nanos(busy * 1_000_000_000 / hz))
}

fn first_number(text: &str) -> io::Result<u64> {
    text.split_whitespace().next().and_then(|n| n.parse().ok()).ok_or_else(|| invalid("expected a number"))
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// Names of the tracing BPF programs loaded now that belong to none of `ours` (process ids)
/// and were not among `seen`, which gains ours: programs of other tools or tests on the
/// machine slow the traffic too, where one of ours that lingers after its process let it go
/// (the kernel frees a program some time after its last holder) does not.
pub fn foreign_tracing_programs(ours: &[u32], seen: &mut BTreeSet<u32>) -> io::Result<Vec<String>> {
    for pid in ours {
        seen.extend(programs_of(*pid)?);
    }
    Ok(tracing_programs()
        .filter(|p| !seen.contains(&p.id))
        .map(|p| p.name.to_string_lossy().into_owned())
        .collect())
}

/// The BPF programs loaded now that hook kernel functions, tracepoints or iterators.
fn tracing_programs() -> impl Iterator<Item = ProgramInfo> {
    ProgInfoIter::default().filter(|p| {
        matches!(
            p.ty,
            ProgramType::Tracing | ProgramType::Kprobe | ProgramType::RawTracepoint | ProgramType::Tracepoint
        )
    })
}

/// How long the tracing BPF programs loaded now have run, in all; the kernel counts only
/// while its statistics are on (`BpfStats`).
pub fn bpf_run_time() -> Duration {
    Duration::from_nanos(tracing_programs().map(|p| p.run_time_ns).sum())
}

/// One BPF program's runs as the kernel counts them (only while `BpfStats` lives).
#[derive(Clone, Debug)]
pub struct ProgramRuns {
    pub id: u32,
    /// The kernel keeps 15 characters of a program's name.
    pub name: String,
    pub ty: ProgramType,
    pub runs: u64,
    pub run_time: Duration,
}

/// The BPF programs `pid` holds, with their run counts and times so far.
pub fn program_runs(pid: u32) -> io::Result<Vec<ProgramRuns>> {
    let ids = programs_of(pid)?;
    Ok(ProgInfoIter::default()
        .filter(|p| ids.contains(&p.id))
        .map(|p| ProgramRuns {
            id: p.id,
            name: p.name.to_string_lossy().into_owned(),
            ty: p.ty,
            runs: p.run_cnt,
            run_time: Duration::from_nanos(p.run_time_ns),
        })
        .collect())
}

/// What each program of `after` ran since `before` (programs loaded in between count whole).
pub fn runs_since(after: Vec<ProgramRuns>, before: &[ProgramRuns]) -> Vec<ProgramRuns> {
    after
        .into_iter()
        .map(|mut program| {
            if let Some(earlier) = before.iter().find(|b| b.id == program.id) {
                program.runs -= earlier.runs;
                program.run_time = program.run_time.saturating_sub(earlier.run_time);
            }
            program
        })
        .collect()
}

/// While this lives, the kernel times every BPF program run (BPF_ENABLE_STATS), which
/// costs two clock reads per run: measure throughput without it.
pub struct BpfStats {
    _enabled: OwnedFd,
}

impl BpfStats {
    pub fn enable() -> io::Result<BpfStats> {
        // SAFETY: a plain syscall wrapper; it returns a new descriptor or a negative errno.
        let fd = unsafe { libbpf_sys::bpf_enable_stats(libbpf_sys::BPF_STATS_RUN_TIME) };
        if fd < 0 {
            return Err(io::Error::from_raw_os_error(-fd));
        }
        // SAFETY: the descriptor is new and nothing else owns it.
        Ok(BpfStats { _enabled: unsafe { OwnedFd::from_raw_fd(fd) } })
    }
}

/// Ids of the BPF programs a process holds, from its descriptors' fdinfo (`prog_id:`).
fn programs_of(pid: u32) -> io::Result<Vec<u32>> {
    let mut ids = Vec::new();
    for fd in fs::read_dir(format!("/proc/{pid}/fdinfo"))? {
        // A descriptor closed since the listing has no fdinfo any more.
        let Ok(info) = fs::read_to_string(fd?.path()) else { continue };
        ids.extend(
            info.lines()
                .filter_map(|l| l.strip_prefix("prog_id:"))
                .filter_map(|id| id.trim().parse::<u32>().ok()),
        );
    }
    Ok(ids)
}

/// Whether the kernel times every BPF program run (`kernel.bpf_stats_enabled`), which adds
/// two clock reads to each hook and so to every figure here.
pub fn bpf_stats_enabled() -> bool {
    fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").is_ok_and(|v| v.trim() != "0")
}
