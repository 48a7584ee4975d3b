//! tcptop: `top` for network connections. Data flows one way: collector (eBPF on Linux) ->
//! model -> views; see ARCHITECTURE.md.

pub mod app;
pub mod cache;
// The libpcap collector (macOS, and Linux without eBPF) lives in the design's macos/ tree.
#[path = "../macos/mod.rs"]
pub mod capture;
pub mod cli;
pub mod collection;
pub mod collector;
#[cfg(target_os = "linux")]
pub mod ebpf;
pub mod event;
pub mod exporter;
pub mod model;
pub mod os;
pub mod platform;
#[cfg(target_os = "linux")]
pub mod privilege;
#[cfg(target_os = "linux")]
pub mod procfs;
pub mod resolve;
#[cfg(target_os = "linux")]
pub mod sockdiag;
pub mod strategy;
pub mod view;

#[cfg(test)]
mod testing;
