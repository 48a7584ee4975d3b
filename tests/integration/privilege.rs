//! Least privilege while tcptop runs: what /proc says of its threads' capabilities once the
//! collector is open, for each backend. Needs root.

use std::fs;
use std::thread;
use std::time::Duration;

use crate::helpers::{start_tcptop, stop_tcptop};

/// CapEff of each of `pid`'s threads, by thread name.
fn effective_by_thread(pid: u32) -> Vec<(String, String)> {
    let mut threads: Vec<(String, String)> = fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .map(|task| {
            let status = fs::read_to_string(task.path().join("status")).unwrap();
            let field = |name: &str| {
                status.lines().find_map(|line| line.strip_prefix(name)).unwrap().trim().to_string()
            };
            (field("Name:"), field("CapEff:"))
        })
        .collect();
    threads.sort();
    threads.dedup();
    threads
}

/// As README's "Security" section documents: the collection thread keeps CAP_SYS_ADMIN,
/// CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH (capture: the last two), every other thread none,
/// and no_new_privs is set.
#[test]
fn capabilities_are_dropped_once_the_collector_is_open() {
    for (backend, collection) in
        [("ebpf", "0000000000280004"), ("sockdiag", "0000000000280004"), ("capture", "0000000000080004")]
    {
        let Some(mut child) = start_tcptop(&["--batch", "--backend", backend, "--port", "9", "0.2"]) else {
            return;
        };
        // Dropped before the first interval starts; the capture thread may take a moment to start.
        thread::sleep(Duration::from_millis(300));
        let status = fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
        assert!(status.contains("\nCapEff:\t0000000000000000\n"), "{backend}: {status}");
        assert!(status.contains("\nNoNewPrivs:\t1\n"), "{backend}: {status}");
        for (name, effective) in effective_by_thread(child.id()) {
            let expected = if name == "tcptop-collect" { collection } else { "0000000000000000" };
            assert_eq!(effective, expected, "{backend}: thread {name}");
        }
        stop_tcptop(&mut child);
    }
}
