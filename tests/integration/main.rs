//! tcptop's integration tests: one binary, shared helpers in `helpers`.
//! Tests that load BPF live in `bpf` (names `bpf::...`, also run in the kernel matrix), `health`
//! (RTT, retransmits, handshakes and resets under nftables drops, host only), `ns`
//! (namespaces and cgroups, host only), `scale` (many connections, host only) and `wrap` (more
//! than 4 GiB in one interval, host only); they need root.

mod helpers;

mod bpf;
mod capture;
mod cli;
mod health;
mod log;
mod ns;
mod privilege;
mod prometheus;
mod scale;
mod sockdiag;
mod tui;
mod wrap;
