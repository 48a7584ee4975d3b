//! tcptop's integration tests: one binary, shared helpers in `helpers`.
//! Tests that load BPF live in `bpf` (names `bpf::...`, also run in the kernel matrix), `ns`
//! (namespaces and cgroups, host only), `scale` (many connections, host only) and `wrap` (more
//! than 4 GiB in one interval, host only); they need root.

mod helpers;

mod bpf;
mod capture;
mod cli;
mod log;
mod ns;
mod prometheus;
mod scale;
mod sockdiag;
mod tui;
mod wrap;
