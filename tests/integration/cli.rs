//! The binary's behaviour at its edges: bad flags, missing privileges, signals.

use std::io::Read;
use std::process::Command;

use crate::helpers::{bpf_allowed, probe_flag, selected_strategy_unsupported, start_tcptop, stop_tcptop};
use crate::tui::Tmux;

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
    let out = stop_tcptop(&mut child);
    assert_eq!(out.lines().filter(|l| l.contains(" probe=")).count(), 1, "{out}");
    assert!(out.lines().nth(1).is_some_and(|l| l.starts_with("PID")), "{out}");
}

/// The live screen's command line for a shell in tmux, on an idle port.
fn live_screen_command() -> String {
    format!("'{}' --probe {} --interval 0.2 --port 9", env!("CARGO_BIN_EXE_tcptop"), probe_flag())
}

/// The terminal as a shell finds it: the normal screen, the cursor shown, no mouse reporting.
const TERMINAL_GIVEN_BACK: &str = "0 1 0";

fn terminal_modes(tmux: &Tmux) -> String {
    tmux.display("#{alternate_on} #{cursor_flag} #{mouse_any_flag}")
}

/// SIGQUIT (`kill -QUIT`) ends the live screen as SIGTERM does: terminal restored, exit 0, and
/// no core file even where core files are allowed.
#[test]
fn sigquit_restores_the_terminal_and_dumps_no_core() {
    if !bpf_allowed() || selected_strategy_unsupported() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    let command = format!(
        "cd '{}'; ulimit -c unlimited; sh -c 'echo $$ > pid; exec {}'; echo tcptop-exit=$?; echo shell-done; exec sleep 60",
        dir.path().display(),
        live_screen_command()
    );
    let tmux = Tmux::start(&command);
    tmux.wait_for("the header", |s| s.contains("tcptop on"));
    let pid: i32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    unsafe { libc::kill(pid, libc::SIGQUIT) };
    let after = tmux.wait_for("tcptop's exit", |s| s.contains("shell-done"));
    assert!(after.contains("tcptop-exit=0"), "{after}");
    assert_eq!(terminal_modes(&tmux), TERMINAL_GIVEN_BACK);
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, ["pid"], "no core file");
}

/// Ctrl-Z in an interactive shell suspends tcptop with the terminal given back; `fg` brings
/// the live screen back, drawn anew, and `q` still quits cleanly.
#[test]
fn ctrl_z_suspends_and_fg_resumes_the_live_screen() {
    if !bpf_allowed() || selected_strategy_unsupported() {
        return;
    }
    let tmux = Tmux::start("PS1='shell> ' exec bash --norc --noprofile -i");
    tmux.wait_for("the prompt", |s| s.contains("shell>"));
    tmux.keys(&["-l", &live_screen_command()]);
    tmux.keys(&["Enter"]);
    tmux.wait_for("the header", |s| s.contains("tcptop on"));
    tmux.keys(&["C-z"]);
    tmux.wait_for("the job stopped", |s| s.contains("Stopped"));
    assert_eq!(terminal_modes(&tmux), TERMINAL_GIVEN_BACK);
    tmux.keys(&["-l", "fg"]);
    tmux.keys(&["Enter"]);
    tmux.wait_for("the screen drawn again", |s| s.contains("tcptop on") && !s.contains("Stopped"));
    assert_eq!(tmux.display("#{alternate_on}"), "1");
    tmux.keys(&["q"]);
    tmux.wait_for("the prompt again", |s| s.trim_end().ends_with("shell>"));
    tmux.keys(&["-l", "echo tcptop-exit=$?"]);
    tmux.keys(&["Enter"]);
    tmux.wait_for("tcptop's exit", |s| s.contains("tcptop-exit=0"));
    assert_eq!(terminal_modes(&tmux), TERMINAL_GIVEN_BACK);
}

/// After SIGSTOP and SIGCONT a batch run goes on from the real clock: one long interval for
/// the time stopped, then whole ones; none of zero length using up COUNT.
#[test]
fn a_stop_and_continue_makes_one_long_interval_and_no_empty_ones() {
    let Some(mut child) = start_tcptop(&["--batch", "--port", "9", "0.2", "5"]) else { return };
    std::thread::sleep(std::time::Duration::from_millis(300));
    unsafe { libc::kill(child.id() as i32, libc::SIGSTOP) };
    std::thread::sleep(std::time::Duration::from_secs(1));
    unsafe { libc::kill(child.id() as i32, libc::SIGCONT) };
    assert_eq!(child.wait().unwrap().code(), Some(0));
    let mut out = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    let intervals: Vec<f64> = out
        .split_whitespace()
        .filter_map(|word| word.strip_prefix("interval=")?.strip_suffix('s')?.parse().ok())
        .collect();
    assert_eq!(intervals.len(), 5, "{out}");
    assert!(intervals.iter().all(|&secs| secs >= 0.15), "{intervals:?}");
    assert!(intervals.iter().any(|&secs| secs >= 0.9), "the stop is one interval: {intervals:?}");
}
