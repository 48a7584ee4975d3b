//! tcptop's integration tests: one binary, shared helpers in `helpers`.
//! Tests that load BPF live in `bpf` (names `bpf::...`, also run in the kernel matrix) and
//! `ns` (namespaces and cgroups, host only); they need root.

mod helpers;

mod bpf;
mod capture;
mod cli;
mod log;
mod ns;
mod tui;
