//! The one place that picks the collector for the platform tcptop was built for.

use anyhow::Result;

use crate::cli::Args;
use crate::collector::Collector;

/// Opens the collector `args` ask for. `note` hears what a verbose run should explain.
#[cfg(target_os = "linux")]
pub fn open_collector(args: &Args, note: &mut dyn FnMut(&str)) -> Result<Box<dyn Collector>> {
    use crate::cli::Probe;
    use crate::ebpf::{preflight, EbpfCollector, Strategy};

    preflight()?;
    if !args.verbose {
        // libbpf explains each refused strategy at length; `-v` shows that, auto mode need not.
        libbpf_rs::set_print(None);
    }
    let strategies: &[Strategy] = match args.probe {
        Probe::Auto => &Strategy::AUTO_ORDER,
        Probe::Fentry => &[Strategy::Fentry],
        Probe::Kprobe => &[Strategy::Kprobe],
        Probe::Tracepoint => &[Strategy::Tracepoint],
    };
    Ok(Box::new(EbpfCollector::open(strategies, &args.filters(), note)?))
}

#[cfg(not(target_os = "linux"))]
pub fn open_collector(_args: &Args, _note: &mut dyn FnMut(&str)) -> Result<Box<dyn Collector>> {
    anyhow::bail!("tcptop has no collector for this platform yet")
}
