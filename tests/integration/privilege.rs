//! Least privilege while tcptop runs: what /proc says of its threads' capabilities once the
//! collector is open, for each backend, and the errors that name a missing privilege. Needs root.

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use crate::helpers::{bpf_allowed, start_tcptop, stop_tcptop};

/// CapEff and the seccomp mode of each of `pid`'s threads, by thread name.
fn effective_by_thread(pid: u32) -> Vec<(String, String, String)> {
    let mut threads: Vec<(String, String, String)> = fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .map(|task| {
            let status = fs::read_to_string(task.path().join("status")).unwrap();
            let field = |name: &str| {
                status.lines().find_map(|line| line.strip_prefix(name)).unwrap().trim().to_string()
            };
            (field("Name:"), field("CapEff:"), field("Seccomp:"))
        })
        .collect();
    threads.sort();
    threads.dedup();
    threads
}

/// As README's "Security" section documents: the collection thread keeps CAP_SYS_ADMIN,
/// CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH (capture: the last two), every other thread none,
/// and no_new_privs is set; in capture mode every thread has the seccomp filter (mode 2).
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
        for (name, effective, seccomp) in effective_by_thread(child.id()) {
            let expected = if name == "tcptop-collect" { collection } else { "0000000000000000" };
            assert_eq!(effective, expected, "{backend}: thread {name}");
            assert_eq!(seccomp, if backend == "capture" { "2" } else { "0" }, "{backend}: thread {name}");
        }
        stop_tcptop(&mut child);
    }
}

/// tcptop under `wrapper` (a command that takes away a privilege, then runs the rest).
fn run_under(wrapper: &[&str], args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(wrapper[0])
        .args(&wrapper[1..])
        .arg(env!("CARGO_BIN_EXE_tcptop"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// A backend that cannot run says in one line what is missing: the capabilities root's exec
/// did not get (setpriv took them from the bounding set), or the host's user namespace
/// (`unshare -r` gives every capability, of a namespace the kernel does not count for BPF
/// or the host's packets). `--backend auto` runs there all the same, on sock_diag.
#[test]
fn a_missing_privilege_is_named() {
    if !bpf_allowed() {
        return;
    }
    let without_bpf: &[&str] = &["setpriv", "--bounding-set=-bpf,-perfmon,-sys_admin"];
    let without_net_raw: &[&str] = &["setpriv", "--bounding-set=-net_raw"];
    // The host's network namespace for capture, whose packets that user namespace may not
    // see; a new one for the rest, where sock_diag has only what is in it to read.
    let user_namespace: &[&str] = &["unshare", "--map-root-user"];
    let own_namespaces: &[&str] = &["unshare", "--map-root-user", "--net"];
    for (wrapper, backend, says) in [
        (without_bpf, "ebpf", "to load its eBPF probes, and this process lacks CAP_PERFMON and CAP_BPF:"),
        (
            without_net_raw,
            "capture",
            "needs root, or CAP_NET_RAW, to capture packets, and this process lacks CAP_NET_RAW:",
        ),
        (
            own_namespaces,
            "ebpf",
            "in the host's user namespace to load its eBPF probes, and tcptop runs in another (uid_map `0 0 1`)",
        ),
        (user_namespace, "capture", "needs root, or CAP_NET_RAW, in the host's user namespace to capture packets"),
    ] {
        let (status, stdout, stderr) = run_under(wrapper, &["--backend", backend, "-b", "0.1", "1"]);
        assert_eq!(status, Some(1), "{wrapper:?} {backend}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{wrapper:?} {backend}: {stderr}");
        assert!(stderr.starts_with("tcptop: ") && stderr.contains(says), "{wrapper:?} {backend}: {stderr}");
        assert!(stdout.is_empty(), "{wrapper:?} {backend}: {stdout}");
    }
    let (status, stdout, stderr) = run_under(own_namespaces, &["-b", "0.1", "1"]);
    assert_eq!(status, Some(0), "{stderr}");
    assert!(stderr.contains("runs in another (uid_map `0 0 1`)"), "{stderr}");
    assert!(stdout.contains(" probe=sockdiag"), "{stdout}");
}

/// Capture mode under its sandbox (seccomp, Landlock but in the collection thread) still
/// counts a connection and names its process from /proc.
#[test]
fn capture_still_names_processes_in_its_sandbox() {
    if !bpf_allowed() {
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (mut server, _) = listener.accept().unwrap();
    let done = AtomicBool::new(false);
    let out = thread::scope(|scope| {
        scope.spawn(|| {
            let mut buffer = [0; 100];
            while !done.load(Ordering::SeqCst) {
                client.write_all(&buffer).unwrap();
                server.read_exact(&mut buffer).unwrap();
                thread::sleep(Duration::from_millis(50));
            }
        });
        let out = Command::new(env!("CARGO_BIN_EXE_tcptop"))
            .args(["--backend", "capture", "-b", "--port", &port, "0.5", "3"])
            .output()
            .unwrap();
        done.store(true, Ordering::SeqCst);
        out
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let ours = format!("{} ", std::process::id());
    assert!(stdout.lines().any(|row| row.starts_with(&ours) && row.contains(&port)), "{stdout}");
}
