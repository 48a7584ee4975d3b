//! The one place that picks the collector for the platform tcptop was built for, and tunes
//! its allocator.

use std::alloc::{GlobalAlloc, Layout, System};

use anyhow::Result;

#[cfg(any(target_os = "linux", target_os = "macos"))]
use crate::capture::{CaptureCollector, CaptureConfig};
use crate::cli::Args;
#[cfg(any(target_os = "linux", target_os = "macos"))]
use crate::cli::Backend;
use crate::collector::Collector;

/// Makes the allocator give large freed blocks back to the system at once: glibc raises its
/// threshold for that to the largest block freed, and a read of 100,000 rows frees large
/// ones, which it then kept (at 100,000 connections the peak fell from 153 to 125 MiB).
pub fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator; this runs before any other thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 10);
    }
}

/// The system's allocator, asking Linux for transparent huge pages under large blocks: with
/// large freed blocks given back at once (`return_freed_memory`), a read of 100,000 rows fills
/// fresh blocks of tens of MiB each interval, and one page fault per 2 MiB costs a fraction of
/// one per 4 KiB page. Where transparent huge pages are off, the advice changes nothing.
pub struct Allocator;

/// Blocks of these sizes get the advice (a huge page is 2 MiB on x86-64 and arm64 with 4 KiB
/// pages; the advice covers the huge pages that lie wholly inside the block). Not larger ones:
/// the first read of a million rows fills blocks of hundreds of MiB once, where huge pages
/// cleared whole, slack included, slowed start-up by 1.5 s.
const ADVISED: std::ops::RangeInclusive<usize> = (4 << 20)..=(64 << 20);
const HUGE_PAGE: usize = 2 << 20;

// SAFETY: every call is the system allocator's, with its contract; the advice only changes how
// the kernel backs a block's pages, never their contents.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        advise_huge_pages(unsafe { System.alloc(layout) }, layout.size())
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        advise_huge_pages(unsafe { System.alloc_zeroed(layout) }, layout.size())
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, size: usize) -> *mut u8 {
        advise_huge_pages(unsafe { System.realloc(block, layout, size) }, size)
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        unsafe { System.dealloc(block, layout) }
    }
}

fn advise_huge_pages(block: *mut u8, size: usize) -> *mut u8 {
    #[cfg(target_os = "linux")]
    if ADVISED.contains(&size) && !block.is_null() {
        let start = (block as usize).next_multiple_of(HUGE_PAGE);
        let end = (block as usize + size) / HUGE_PAGE * HUGE_PAGE;
        // SAFETY: advice on whole pages inside the block just allocated.
        unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) };
    }
    block
}

/// Opens the collector `args` ask for. `note` hears what a verbose run should explain,
/// `fallback` why the collector is not the one `--backend auto` prefers, where it is not.
#[cfg(target_os = "linux")]
pub fn open_collector(
    args: &Args,
    note: &mut dyn FnMut(&str),
    fallback: &mut dyn FnMut(&str),
) -> Result<Box<dyn Collector>> {
    match args.backend {
        Backend::Ebpf if args.interface.is_some() => {
            anyhow::bail!("--interface chooses a capture device: it goes with --backend capture, not ebpf")
        }
        Backend::Ebpf => open_ebpf(args, note),
        Backend::Sockdiag => open_sockdiag(args, note),
        Backend::Capture => open_capture(args),
        // Naming an interface asks for capture; naming a probe strategy asks for eBPF.
        Backend::Auto if args.interface.is_some() => open_capture(args),
        Backend::Auto if args.probe.is_some() => open_ebpf(args, note),
        Backend::Auto => open_ebpf(args, note).or_else(|ebpf_error| match open_sockdiag(args, note) {
            Ok(sockdiag) => {
                fallback(&format!(
                    "eBPF cannot run here ({ebpf_error:#}); reading the kernel's TCP counters through \
                     sock_diag instead (TCP only)"
                ));
                Ok(sockdiag)
            }
            Err(sockdiag_error) => open_capture_instead(args, ebpf_error, sockdiag_error, fallback),
        }),
    }
}

/// The last resort of `--backend auto`, where neither eBPF nor sock_diag can run.
#[cfg(target_os = "linux")]
fn open_capture_instead(
    args: &Args,
    ebpf_error: anyhow::Error,
    sockdiag_error: anyhow::Error,
    fallback: &mut dyn FnMut(&str),
) -> Result<Box<dyn Collector>> {
    let ebpf_error = anyhow::anyhow!("{ebpf_error:#}; sock_diag cannot stand in: {sockdiag_error:#}");
    match open_capture(args) {
        Ok(capture) => {
            fallback(&format!("eBPF cannot run here ({ebpf_error:#}); counting captured packets instead"));
            Ok(capture)
        }
        // Without privileges neither can run, and the eBPF error says what is missing already.
        Err(capture_error) if capture_error.is::<crate::privilege::Missing>() => Err(ebpf_error),
        Err(capture_error) => {
            Err(anyhow::anyhow!("{ebpf_error:#}; packet capture cannot stand in either: {capture_error:#}"))
        }
    }
}

#[cfg(target_os = "linux")]
fn open_sockdiag(args: &Args, note: &mut dyn FnMut(&str)) -> Result<Box<dyn Collector>> {
    let collector = crate::sockdiag::SockDiagCollector::open(&args.filters(), note)?;
    crate::privilege::drop_after_open(crate::privilege::TABLE_READS)?;
    Ok(Box::new(collector))
}

/// On Linux, capture on every interface with `any`, and find processes in /proc.
#[cfg(target_os = "linux")]
fn open_capture(args: &Args) -> Result<Box<dyn Collector>> {
    use crate::capture::{procfs::ProcNetOwners, NeedsRoot, ProcessLookup};

    let device = args.interface.clone().unwrap_or_else(|| "any".into());
    let processes: Option<Box<dyn ProcessLookup>> = Some(Box::new(ProcNetOwners::default()));
    let config = CaptureConfig { device, filters: args.filters(), processes };
    // Refused: say which capability (or user namespace) is missing, when that is visible.
    let collector = CaptureCollector::open(config).map_err(|error| match error.is::<NeedsRoot>() {
        true => crate::privilege::CAPTURE.check().err().map_or(error, anyhow::Error::from),
        false => error,
    })?;
    crate::privilege::drop_and_sandbox(crate::privilege::PROC_READS)?;
    Ok(Box::new(collector))
}

#[cfg(target_os = "linux")]
fn open_ebpf(args: &Args, note: &mut dyn FnMut(&str)) -> Result<Box<dyn Collector>> {
    use crate::ebpf::{preflight, EbpfCollector, Strategy};

    preflight()?;
    let strategies: &[Strategy] = match args.probe {
        None => &Strategy::AUTO_ORDER,
        Some(hooks) => &[hooks],
    };
    let collector = EbpfCollector::open(strategies, &args.filters(), note)?;
    crate::privilege::drop_after_open(crate::privilege::TABLE_READS)?;
    Ok(Box::new(collector))
}

/// On macOS, PKTAP: every packet comes with the process that sent or received it.
#[cfg(target_os = "macos")]
pub fn open_collector(
    args: &Args,
    _note: &mut dyn FnMut(&str),
    _fallback: &mut dyn FnMut(&str),
) -> Result<Box<dyn Collector>> {
    if matches!(args.backend, Backend::Ebpf | Backend::Sockdiag) {
        anyhow::bail!(
            "eBPF and sock_diag are Linux's: on macOS tcptop counts captured packets (--backend capture)"
        );
    }
    // "pktap,all" takes every interface, loopback and tunnels included; "pktap,en0" one.
    let device = match args.interface.as_deref() {
        Some(pktap) if pktap.starts_with("pktap") => pktap.to_string(),
        interface => format!("pktap,{}", interface.unwrap_or("all")),
    };
    Ok(Box::new(CaptureCollector::open(CaptureConfig { device, filters: args.filters(), processes: None })?))
}

#[cfg(not(any(target_os = "linux", target_os = "macos")))]
pub fn open_collector(
    _args: &Args,
    _note: &mut dyn FnMut(&str),
    _fallback: &mut dyn FnMut(&str),
) -> Result<Box<dyn Collector>> {
    anyhow::bail!("tcptop has no collector for this platform yet")
}
