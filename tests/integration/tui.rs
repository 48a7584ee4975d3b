//! The live screen end to end: the real binary in a tmux terminal, watching a loopback
//! connection made here, driven by keys, and leaving the terminal as it found it, or ending
//! when the terminal goes. Needs root.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::helpers::{as_traffic, bpf_allowed, probe_flag, selected_strategy_unsupported, TRAFFIC_COMM};

/// How long the screen may take to show what a step expects.
const SETTLE: Duration = Duration::from_secs(10);
/// How long tcptop may take to end once its terminal is gone.
const HANGUP_EXIT: Duration = Duration::from_secs(60);

/// A tmux server of its own (so no user's tmux is touched) with one 120x40 window; the
/// server goes away with the value.
pub(crate) struct Tmux {
    socket: String,
}

impl Tmux {
    pub(crate) fn start(command: &str) -> Tmux {
        static SERVERS: AtomicUsize = AtomicUsize::new(0);
        let n = SERVERS.fetch_add(1, Ordering::Relaxed);
        let tmux = Tmux { socket: format!("tcptop-test-{}-{n}", std::process::id()) };
        tmux.run(&["-f", "/dev/null", "new-session", "-d", "-x", "120", "-y", "40", command]);
        tmux
    }

    /// tcptop with `flags` (and the test's probe, five frames a second), then `after` in
    /// the shell, which outlives it; returns once the first frame is drawn, which is once
    /// the probes are attached.
    fn tcptop(flags: &str, after: &str) -> Tmux {
        let command = format!(
            "'{}' --probe {} --interval 0.2 {flags}; {after}; exec sleep 60",
            env!("CARGO_BIN_EXE_tcptop"),
            probe_flag(),
        );
        let tmux = Tmux::start(&command);
        tmux.wait_for("the header", |s| s.contains("tcptop on"));
        tmux
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("running tmux (install it: apt-get install tmux)");
        assert!(out.status.success(), "tmux {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p"])
    }

    pub(crate) fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys"];
        args.extend(keys);
        self.run(&args);
    }

    pub(crate) fn display(&self, format: &str) -> String {
        self.run(&["display-message", "-p", format]).trim().to_string()
    }

    /// Polls the screen until `done` holds; fails with the last screen after `SETTLE`.
    pub(crate) fn wait_for(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + SETTLE;
        loop {
            let screen = self.screen();
            if done(&screen) {
                return screen;
            }
            assert!(Instant::now() < deadline, "the screen never showed {what}:\n{screen}");
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux").args(["-L", &self.socket, "kill-server"]).status();
    }
}

/// The table cells of the row whose LOCAL and REMOTE are these, if on screen.
fn row(screen: &str, local: SocketAddr, remote: SocketAddr) -> Option<Vec<String>> {
    let (local, remote) = (local.to_string(), remote.to_string());
    screen
        .lines()
        .map(|line| line.split_whitespace().map(String::from).collect::<Vec<_>>())
        .find(|cells| cells.len() >= 10 && cells[2] == "TCP" && cells[3] == local && cells[4] == remote)
}

#[test]
fn live_screen_shows_a_connection_filters_and_quits_cleanly() {
    if !bpf_allowed() || selected_strategy_unsupported() {
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let server_addr = listener.local_addr().unwrap();
    // The shell outlives tcptop to show its exit status and the terminal modes it left (a
    // dead tmux pane reports no cursor).
    let tmux = Tmux::tcptop(
        &format!("--bytes --numeric --port {}", server_addr.port()),
        "echo tcptop-exit=$?; stty -a; echo shell-done",
    );

    let (sent, received) = (12_345, 678);
    let mut client = TcpStream::connect(server_addr).unwrap();
    let (mut server, _) = listener.accept().unwrap();
    as_traffic(|| {
        client.write_all(&vec![7; sent]).unwrap();
        server.read_exact(&mut vec![0; sent]).unwrap();
        server.write_all(&vec![8; received]).unwrap();
        client.read_exact(&mut vec![0; received]).unwrap();
    });
    let client_addr = client.local_addr().unwrap();
    let pid = std::process::id().to_string();
    // PID COMM PROTO LOCAL REMOTE STATE [RTT] RX/s TX/s RX-TOTAL TX-TOTAL
    let totals = |rx: usize, tx: usize| {
        let pid = pid.clone();
        move |cells: &Vec<String>| {
            cells[0] == pid
                && cells[1] == TRAFFIC_COMM
                && cells[cells.len() - 2] == rx.to_string()
                && cells[cells.len() - 1] == tx.to_string()
        }
    };
    let client_row = totals(received, sent);
    let server_row = totals(sent, received);
    tmux.wait_for("both ends of the connection with their exact totals", |s| {
        row(s, client_addr, server_addr).is_some_and(|cells| client_row(&cells))
            && row(s, server_addr, client_addr).is_some_and(|cells| server_row(&cells))
    });

    // Filter on the client's port: only its row stays.
    let port = client_addr.port().to_string();
    tmux.keys(&["/"]);
    tmux.keys(&["-l", &port]);
    tmux.wait_for("the filter being typed", |s| s.contains(&format!("/{port}")));
    tmux.keys(&["Enter"]);
    let filtered = tmux.wait_for("the kept filter", |s| s.contains(&format!("filter: {port}")));
    assert!(row(&filtered, client_addr, server_addr).is_some_and(|cells| client_row(&cells)), "{filtered}");
    tmux.keys(&["/", "x"]);
    tmux.wait_for("no match", |s| s.contains(&format!("no connection matches “{port}x”")));

    tmux.keys(&["Escape"]);
    tmux.wait_for("the filter cleared", |s| s.contains("q quit") && !s.contains("filter:"));
    tmux.keys(&["q"]);
    let after = tmux.wait_for("tcptop's exit", |s| s.contains("shell-done"));
    assert!(after.contains("tcptop-exit=0"), "{after}");
    // Back on the normal screen, cursor shown, line editing and echo on.
    assert_eq!(tmux.display("#{alternate_on} #{cursor_flag}"), "0 1");
    assert!(after.contains(" icanon ") && after.contains(" echo "), "{after}");
}

/// An /etc/hosts line of the test's own, taken out again (that line only) when dropped.
/// Other test processes (other worktrees' runs) may edit the file meanwhile: each edit is a
/// read and a write under an exclusive `flock` of the file, and each process has its own
/// address and name (`unique`), so no run takes out or shadows another's line.
struct HostsEntry {
    line: String,
}

impl HostsEntry {
    const PATH: &str = "/etc/hosts";

    /// An address of loopback's 127/8 and a name that no other process uses.
    fn unique() -> (String, String) {
        let pid = std::process::id();
        (format!("127.77.{}.{}", pid >> 8 & 0xff, pid & 0xff), format!("tcptop-test-peer-{pid}.example"))
    }

    fn add(ip: &str, name: &str) -> HostsEntry {
        let line = format!("{ip} {name}");
        Self::edit(|text| format!("{text}{line}\n"));
        HostsEntry { line }
    }

    /// Rewrites the file as `change` says, under its lock.
    fn edit(change: impl FnOnce(&str) -> String) {
        let file = std::fs::File::open(Self::PATH).unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
        assert_eq!(unsafe { libc::flock(fd, libc::LOCK_EX) }, 0, "locking {}", Self::PATH);
        let text = std::fs::read_to_string(Self::PATH).unwrap();
        std::fs::write(Self::PATH, change(&text)).unwrap();
        // The lock goes with `file`.
    }
}

impl Drop for HostsEntry {
    fn drop(&mut self) {
        Self::edit(|text| text.lines().filter(|l| *l != self.line).map(|l| format!("{l}\n")).collect());
    }
}

/// The connection the detail pane shows: its `TCP local → remote` line.
fn detail_of(screen: &str) -> Option<String> {
    screen.lines().map(str::trim).find(|l| l.starts_with("TCP ") && l.contains(" → ")).map(|l| {
        let end = l.find("  ").unwrap_or(l.len());
        l[..end].to_string()
    })
}

#[test]
fn live_screen_names_hosts_puts_closed_rows_below_live_ones_sorts_on_a_click_or_the_menu_follows_and_filters()
{
    if !bpf_allowed() || selected_strategy_unsupported() {
        return;
    }
    let (peer, name) = HostsEntry::unique();
    let _hosts = HostsEntry::add(&peer, &name);
    let listener = TcpListener::bind((&*peer, 0)).unwrap();
    let server_addr = listener.local_addr().unwrap();
    let tmux = Tmux::tcptop(&format!("--port {}", server_addr.port()), "echo tcptop-exit=$?");
    assert!(tmux.screen().contains(&format!("only port {}", server_addr.port())));

    // Two connections; the first one closes once both moved bytes.
    let connect = || {
        let client = TcpStream::connect(server_addr).unwrap();
        let (server, _) = listener.accept().unwrap();
        (client, server)
    };
    let (mut closing, closing_server) = connect();
    let (mut live, mut live_server) = connect();
    let closing_port = closing.local_addr().unwrap().port().to_string();
    let live_port = live.local_addr().unwrap().port().to_string();
    as_traffic(|| {
        closing.write_all(b"bye").unwrap();
        live.write_all(b"hello").unwrap();
        live_server.read_exact(&mut [0; 5]).unwrap();
    });
    // The detail pane keeps the numbers.
    tmux.wait_for("the peer's name from /etc/hosts", |s| s.contains(&format!("{name}:")));
    drop((closing, closing_server));
    // Both ends of the closed connection (one of them moved the most bytes) below both
    // ends of the live one.
    let rows_of = |screen: &str, port: &str| -> Vec<usize> {
        let table = screen.lines().enumerate().filter(|(_, l)| l.contains(" TCP "));
        table.filter(|(_, l)| l.contains(&format!(":{port} "))).map(|(i, _)| i).collect()
    };
    tmux.wait_for("the closed connection below the live one", |s| {
        let (closed, live) = (rows_of(s, &closing_port), rows_of(s, &live_port));
        let closed_shown =
            closed.len() == 2 && closed.iter().all(|&i| s.lines().nth(i).unwrap().contains("CLOSE"));
        closed_shown && live.len() == 2 && live.iter().max() < closed.iter().min()
    });

    // A click on the COMM heading (an SGR mouse report, as a terminal sends it) sorts by it.
    let screen = tmux.screen();
    let headings = screen.lines().position(|l| l.contains("PID COMM")).unwrap();
    let comm = screen.lines().nth(headings).unwrap().find("COMM").unwrap() + 1;
    // The report counts rows and columns from 1.
    let row = headings + 1;
    tmux.keys(&["-l", &format!("\x1b[<0;{comm};{row}M\x1b[<0;{comm};{row}m")]);
    tmux.wait_for("the sort by COMM", |s| s.contains("sort COMM ▲") && s.contains("COMM▲"));

    // n: numbers instead of names.
    tmux.keys(&["n"]);
    tmux.wait_for("numeric addresses", |s| {
        s.contains(&format!("{peer}:{}", server_addr.port())) && !s.contains(&name)
    });

    // F6, the sort menu: PID, COMM, LOCAL; Enter sorts by it.
    tmux.keys(&["F6"]);
    tmux.wait_for("the sort menu", |s| s.contains(" sort by "));
    tmux.keys(&["Home", "Down", "Down", "Enter"]);
    tmux.wait_for("the sort by LOCAL", |s| s.contains("sort LOCAL ▲") && !s.contains(" sort by "));

    // F: the cursor follows the second row when the reversed sort moves it to the top (the
    // two ends of the live connection differ in LOCAL); unfollowed, it would stay second.
    tmux.keys(&["Home", "Down", "F"]);
    let followed = tmux.wait_for("following", |s| s.contains(" following ") && detail_of(s).is_some());
    let selected = detail_of(&followed).unwrap();
    let local = selected.split_whitespace().nth(1).unwrap().to_string();
    let first_local = |screen: &str| {
        let first = screen
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|c| c.get(2) == Some(&"TCP"));
        first.map(|cells| cells[3].to_string())
    };
    assert_ne!(first_local(&followed).as_ref(), Some(&local), "{followed}");
    tmux.keys(&["r"]);
    tmux.wait_for("the followed row at the top", |s| {
        s.contains("sort LOCAL ▼")
            && detail_of(s).as_ref() == Some(&selected)
            && first_local(s) == Some(local.clone())
    });

    // A structured filter: the live connection's port, either end.
    tmux.keys(&["/"]);
    tmux.keys(&["-l", &format!("port:{live_port}")]);
    tmux.keys(&["Enter"]);
    tmux.wait_for("the live connection's two ends alone", |s| {
        let rows: Vec<&str> = s.lines().filter(|l| l.contains(" TCP ")).collect();
        rows.len() == 2 && rows.iter().all(|l| l.contains(&format!(":{live_port} ")) && !l.contains("CLOSE"))
    });
    tmux.keys(&["q"]);
    tmux.wait_for("tcptop's exit", |s| s.contains("tcptop-exit=0"));
}

/// Whether process `pid` still runs (a zombie has ended).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')))
}

#[test]
fn live_screen_ends_when_its_terminal_goes_away() {
    if !bpf_allowed() || selected_strategy_unsupported() {
        return;
    }
    let tmux = Tmux::tcptop("--port 9", "true");
    let shell: u32 = tmux.display("#{pane_pid}").parse().unwrap();
    let children = std::fs::read_to_string(format!("/proc/{shell}/task/{shell}/children")).unwrap();
    let tcptop: u32 =
        children.split_whitespace().next().expect("tcptop under the pane's shell").parse().unwrap();
    // The terminal goes, as with a closed ssh session: SIGHUP, and reads that fail. tcptop
    // then records its last interval, which a busy machine may take seconds to read (a
    // tcptop stuck on the dead terminal would never end).
    drop(tmux);
    let deadline = Instant::now() + HANGUP_EXIT;
    while running(tcptop) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    let left = running(tcptop);
    if left {
        // Not left spinning on the machine.
        unsafe { libc::kill(tcptop as i32, libc::SIGKILL) };
    }
    assert!(!left, "tcptop outlived its terminal by {HANGUP_EXIT:?}");
}
