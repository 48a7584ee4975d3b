//! Shared helpers: opening the eBPF collector as the environment asks, watching what it
//! reports, and making loopback traffic with known byte counts.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tcptop::collector::{Collector, Conn, ConnEvent, EventKind, Filters};
use tcptop::ebpf::{EbpfCollector, Strategy};
use tcptop::strategy::parse_probe;

/// The comm of the threads that make test traffic (at most 15 bytes, as the kernel keeps).
pub const TRAFFIC_COMM: &str = "tcptop-traffic";

/// How long to wait for the kernel's view to catch up before a test fails.
const SETTLE: Duration = Duration::from_secs(5);

fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Whether BPF tests can run here. Without root they are skipped with a note, unless CI
/// asked for them (`TCPTOP_REQUIRE_BPF=1`, or `CI` set): then the missing BPF is a failure.
pub fn bpf_allowed() -> bool {
    let root = unsafe { libc::geteuid() } == 0;
    if !root && (env_flag("TCPTOP_REQUIRE_BPF") || env_flag("CI")) {
        panic!("BPF tests were required (TCPTOP_REQUIRE_BPF or CI) but the tests do not run as root");
    }
    if !root {
        eprintln!("SKIPPED: BPF tests need root (set TCPTOP_REQUIRE_BPF=1 to make this a failure)");
    }
    root
}

/// The strategies `TCPTOP_PROBE` (a `--probe` value; default auto) selects.
pub fn strategies() -> Vec<Strategy> {
    match parse_probe(&probe_flag()) {
        Ok(None) => Strategy::AUTO_ORDER.to_vec(),
        Ok(Some(hooks)) => vec![hooks],
        Err(e) => panic!("TCPTOP_PROBE: {e}"),
    }
}

/// The `--probe` value matching `TCPTOP_PROBE`, for tests that run the binary.
pub fn probe_flag() -> String {
    std::env::var("TCPTOP_PROBE").ok().filter(|p| !p.is_empty()).unwrap_or_else(|| "auto".into())
}

/// Whether the kernel under test is expected to refuse the selected strategy: the kernel
/// matrix lists such strategies in `TCPTOP_EXPECT_UNSUPPORTED` (e.g. "fentry,kprobe").
pub fn selected_strategy_unsupported() -> bool {
    let probe = probe_flag();
    std::env::var("TCPTOP_EXPECT_UNSUPPORTED").is_ok_and(|list| list.split(',').any(|s| s.trim() == probe))
}

/// Opens the collector the environment selects. Where that strategy is expected to be
/// unsupported, asserts tcptop's one-line explanation instead and returns `None`.
pub fn open_collector(filters: Filters) -> Option<Watch> {
    if !bpf_allowed() {
        return None;
    }
    let result = EbpfCollector::open(&strategies(), &filters, &mut |note| eprintln!("{note}"));
    if selected_strategy_unsupported() {
        let error = format!("{:#}", result.err().expect("the strategy was expected to fail here"));
        assert!(error.contains("cannot run on this kernel"), "unclear error: {error}");
        assert!(!error.contains('\n'), "the error is one line: {error}");
        eprintln!("as expected here: {error}");
        return None;
    }
    let collector = result.expect("opening the eBPF collector");
    eprintln!("collector strategy: {}", collector.backend());
    Some(Watch { collector, latest: HashMap::new(), events: Vec::new() })
}

/// A collector and everything it reported so far.
pub struct Watch<C: Collector = EbpfCollector> {
    pub collector: C,
    /// The newest record of each connection id (from the table or from its close event).
    pub latest: HashMap<u64, Conn>,
    pub events: Vec<ConnEvent>,
}

impl<C: Collector> Watch<C> {
    pub fn poll(&mut self) {
        let sample = self.collector.collect().expect("collecting");
        for event in &sample.events {
            self.latest.insert(event.conn.id, event.conn.clone());
        }
        for conn in sample.conns {
            if !self.is_closed(conn.id) {
                self.latest.insert(conn.id, conn);
            }
        }
        self.events.extend(sample.events);
    }

    pub fn is_closed(&self, id: u64) -> bool {
        self.events.iter().any(|e| e.conn.id == id && e.kind == EventKind::Closed)
    }

    /// The connection whose local and remote ends are these.
    pub fn find(&self, local: SocketAddr, remote: SocketAddr) -> Option<&Conn> {
        self.latest.values().find(|c| c.local == local && c.remote == remote)
    }

    /// Polls until `done` holds, for at most a few seconds; false if it never did.
    pub fn until(&mut self, mut done: impl FnMut(&Self) -> bool) -> bool {
        let deadline = Instant::now() + SETTLE;
        loop {
            self.poll();
            if done(self) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the connection `local -> remote` reports exactly these totals and asserts
    /// it, with the test's pid and traffic comm.
    pub fn expect_bytes(&mut self, local: SocketAddr, remote: SocketAddr, tx: u64, rx: u64) -> Conn {
        self.until(|w| w.find(local, remote).is_some_and(|c| c.tx_bytes >= tx && c.rx_bytes >= rx));
        // Let a double count show itself before asserting.
        thread::sleep(Duration::from_millis(50));
        self.poll();
        let conn =
            self.find(local, remote).unwrap_or_else(|| panic!("no connection {local} -> {remote}")).clone();
        assert_eq!((conn.tx_bytes, conn.rx_bytes), (tx, rx), "tx/rx bytes of {local} -> {remote}");
        assert_eq!(conn.pid, Some(std::process::id()), "pid of {local} -> {remote}");
        assert_eq!(&*conn.comm, TRAFFIC_COMM, "comm of {local} -> {remote}");
        conn
    }

    /// The state changes (old, new) reported for connection `id`, in order.
    pub fn transitions(&self, id: u64) -> Vec<(String, String)> {
        self.events
            .iter()
            .filter(|e| e.conn.id == id)
            .filter_map(|e| match e.kind {
                EventKind::State { old, new } => Some((old.to_string(), new.to_string())),
                EventKind::Closed => None,
            })
            .collect()
    }
}

#[derive(Clone, Copy, Debug)]
pub enum Ip {
    V4,
    V6,
}

impl Ip {
    pub const BOTH: [Ip; 2] = [Ip::V4, Ip::V6];

    pub fn loopback(self) -> SocketAddr {
        match self {
            Ip::V4 => (Ipv4Addr::LOCALHOST, 0).into(),
            Ip::V6 => (Ipv6Addr::LOCALHOST, 0).into(),
        }
    }
}

/// A connected client and the server's accepted end, on loopback.
pub struct Pair {
    pub client: TcpStream,
    pub server: TcpStream,
}

impl Pair {
    pub fn connect(ip: Ip) -> Pair {
        Pair::connect_to(&Pair::listen(ip))
    }

    /// A listener on loopback, for tests that need its port before the connection.
    pub fn listen(ip: Ip) -> TcpListener {
        TcpListener::bind(ip.loopback()).expect("binding on loopback")
    }

    pub fn connect_to(listener: &TcpListener) -> Pair {
        let client = TcpStream::connect(listener.local_addr().unwrap()).expect("connecting");
        let (server, _) = listener.accept().expect("accepting");
        Pair { client, server }
    }

    /// (local, remote) of the client end.
    pub fn client_ends(&self) -> (SocketAddr, SocketAddr) {
        (self.client.local_addr().unwrap(), self.client.peer_addr().unwrap())
    }

    /// (local, remote) of the server end.
    pub fn server_ends(&self) -> (SocketAddr, SocketAddr) {
        (self.server.local_addr().unwrap(), self.server.peer_addr().unwrap())
    }
}

/// Runs `work` on a thread named TRAFFIC_COMM (the kernel records a thread's name as comm).
pub fn as_traffic<T: Send>(work: impl FnOnce() -> T + Send) -> T {
    thread::scope(|scope| {
        thread::Builder::new()
            .name(TRAFFIC_COMM.into())
            .spawn_scoped(scope, work)
            .expect("spawning a traffic thread")
            .join()
            .expect("traffic thread")
    })
}

/// Runs `work` as test traffic on a thread that has entered the network namespace `ip netns`
/// named `name` (setns is per thread).
pub fn in_netns<T: Send>(name: &str, work: impl FnOnce() -> T + Send) -> T {
    let ns = std::fs::File::open(format!("/run/netns/{name}")).unwrap();
    as_traffic(|| {
        assert_eq!(unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) }, 0, "setns");
        work()
    })
}

/// The tcptop binary with `-v` and the environment's `--probe`, stdout and stderr piped.
pub fn tcptop_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tcptop"));
    command.args(["-v", "--probe", &probe_flag()]).stdout(Stdio::piped()).stderr(Stdio::piped());
    command
}

/// Starts tcptop with `args` and returns once its probes are attached; `None` where BPF
/// tests do not run or the selected strategy is expected not to run (the `bpf` tests check
/// that error).
pub fn start_tcptop(args: &[&str]) -> Option<Running> {
    if !bpf_allowed() || selected_strategy_unsupported() {
        return None;
    }
    let mut child = Running(tcptop_command().args(args).spawn().expect("starting tcptop"));
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while stderr.read_line(&mut line).unwrap() > 0 && !line.contains("using the") {
        line.clear();
    }
    assert!(line.contains("using the"), "tcptop did not start");
    child.stderr = Some(stderr.into_inner());
    Some(child)
}

/// A tcptop the test started, killed if the test ends without stopping it (a failed
/// assertion), so that no probes stay attached behind it.
pub struct Running(Child);

impl std::ops::Deref for Running {
    type Target = Child;

    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// SIGTERM, then the exit status must be 0.
/// What tcptop wrote to stdout (unless the test took the pipe), read while it exits: its last
/// interval may be more than a pipe holds on a busy host, and an unread pipe would block it.
pub fn stop_tcptop(child: &mut Child) -> String {
    let stdout = child.stdout.take();
    let reader = thread::spawn(move || {
        let mut out = String::new();
        if let Some(mut stdout) = stdout {
            stdout.read_to_string(&mut out).unwrap();
        }
        out
    });
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(child.wait().unwrap().code(), Some(0));
    reader.join().unwrap()
}
