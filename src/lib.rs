//! tcptop: `top` for network connections. Data flows one way: collector (eBPF on Linux) ->
//! model -> views; see ARCHITECTURE.md.

pub mod app;
// The libpcap collector (macOS, and Linux without eBPF) lives in the design's macos/ tree.
#[path = "../macos/mod.rs"]
pub mod capture;
pub mod cli;
pub mod collector;
#[cfg(target_os = "linux")]
pub mod ebpf;
pub mod event;
pub mod model;
pub mod platform;
#[cfg(target_os = "linux")]
pub mod procfs;
#[cfg(target_os = "linux")]
pub mod sockdiag;
pub mod view;
