//! The binary's behaviour at its edges: bad flags, missing privileges, signals.

use std::io::Read;
use std::process::Command;

use crate::helpers::{start_tcptop, stop_tcptop};

fn tcptop() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tcptop"))
}

#[test]
fn bad_flags_are_a_usage_error() {
    let bad: [&[&str]; 7] = [
        &["--interval", "0"],
        &["--sort", "nope"],
        &["-4", "-6"],
        &["--port", "x"],
        &["--port", "0"],
        &["-p", "0"],
        &["--cgroup", "../../../../etc"],
    ];
    for args in bad {
        let out = tcptop().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

/// Without root (or CAP_BPF + CAP_PERFMON) eBPF says what it needs in one line, before
/// touching the kernel (`--backend auto` falls back to sock_diag: tests `sockdiag`).
#[test]
fn without_privileges_one_line_and_exit_1() {
    let mut command = if unsafe { libc::geteuid() } == 0 {
        let mut drop_root = Command::new("setpriv");
        drop_root.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"]);
        drop_root.arg(env!("CARGO_BIN_EXE_tcptop"));
        drop_root
    } else {
        tcptop()
    };
    let out = command.args(["--backend", "ebpf", "-b", "1", "1"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("tcptop: needs root, or the CAP_BPF and CAP_PERFMON capabilities"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

/// SIGTERM ends a batch run with status 0, after printing the interval it cut short.
#[test]
fn sigterm_prints_the_last_interval_and_exits_0() {
    // Port 9 (discard) has no traffic here: the output stays small enough for the pipe.
    let Some(mut child) = start_tcptop(&["--batch", "--port", "9", "3600"]) else { return };
    stop_tcptop(&mut child);
    let mut out = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    assert_eq!(out.lines().filter(|l| l.contains(" probe=")).count(), 1, "{out}");
    assert!(out.lines().nth(1).is_some_and(|l| l.starts_with("PID")), "{out}");
}
