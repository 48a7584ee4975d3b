//! tcptop's integration tests: one binary, shared helpers in `helpers`.
//! Tests that load BPF live in `bpf` (names `bpf::...`) and need root.

mod helpers;

mod bpf;
