//! Namespaces and cgroups, live (root, host only: they need `ip` and bash): traffic
//! between network namespaces made here is attributed to the right process and namespace,
//! identical tuples in two namespaces stay two connections, and `--cgroup` filters in the
//! kernel.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::thread;

use tcptop::collector::{Filters, TcpState};
use tcptop::procfs::cgroup2_root;

use crate::helpers::{as_traffic, in_netns, open_collector, TRAFFIC_COMM};

fn run(args: &[&str]) {
    let status = Command::new(args[0]).args(&args[1..]).status().expect(args[0]);
    assert!(status.success(), "{args:?} failed");
}

/// Two namespaces joined by a veth pair, with addresses only they use; deleted on drop,
/// also when the test fails.
struct NetnsPair {
    names: [String; 2],
}

const SERVER_IP: &str = "10.231.0.1";
const CLIENT_IP: &str = "10.231.0.2";

impl NetnsPair {
    fn new(tag: &str) -> NetnsPair {
        let base = format!("tcptop{}{tag}", std::process::id());
        let pair = NetnsPair { names: [format!("{base}s"), format!("{base}c")] };
        let [server, client] = &pair.names;
        run(&["ip", "netns", "add", server]);
        run(&["ip", "netns", "add", client]);
        run(&[
            "ip", "link", "add", "veth-s", "netns", server, "type", "veth", "peer", "name", "veth-c",
            "netns", client,
        ]);
        for (ns, dev, ip) in [(server, "veth-s", SERVER_IP), (client, "veth-c", CLIENT_IP)] {
            run(&["ip", "-n", ns, "addr", "add", &format!("{ip}/30"), "dev", dev]);
            run(&["ip", "-n", ns, "link", "set", dev, "up"]);
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        pair
    }

    /// The inode that identifies a namespace (what tcptop reports as netns).
    fn inode(name: &str) -> u32 {
        fs::metadata(format!("/run/netns/{name}")).unwrap().ino() as u32
    }

    fn inside<T: Send>(name: &str, work: impl FnOnce() -> T + Send) -> T {
        in_netns(name, work)
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

/// Server in one namespace, client (bound to a fixed port) in the other: `bytes` up.
fn transfer(pair: &NetnsPair, bytes: usize) {
    let server_addr: SocketAddr = format!("{SERVER_IP}:5555").parse().unwrap();
    let listener = NetnsPair::inside(&pair.names[0], || TcpListener::bind(server_addr).unwrap());
    thread::scope(|s| {
        s.spawn(|| {
            NetnsPair::inside(&pair.names[1], || {
                let socket = connect_from(format!("{CLIENT_IP}:40000").parse().unwrap(), server_addr);
                let mut client = socket;
                client.write_all(&vec![3; bytes]).unwrap();
            })
        });
        let (mut server, _) = listener.accept().unwrap();
        as_traffic(|| {
            let mut got = vec![0; bytes];
            server.read_exact(&mut got).unwrap();
        });
    });
}

/// A TCP connection from a fixed local address (std has no bind-before-connect).
pub(crate) fn connect_from(local: SocketAddr, remote: SocketAddr) -> TcpStream {
    use std::os::fd::FromRawFd;
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0);
        let one: libc::c_int = 1;
        libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, (&one as *const libc::c_int).cast(), 4);
        let to_sockaddr = |addr: SocketAddr| {
            let SocketAddr::V4(v4) = addr else { panic!("IPv4 only") };
            libc::sockaddr_in {
                sin_family: libc::AF_INET as u16,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from(*v4.ip()).to_be() },
                sin_zero: [0; 8],
            }
        };
        let (l, r) = (to_sockaddr(local), to_sockaddr(remote));
        let len = size_of::<libc::sockaddr_in>() as u32;
        assert_eq!(libc::bind(fd, (&l as *const libc::sockaddr_in).cast(), len), 0, "bind");
        assert_eq!(libc::connect(fd, (&r as *const libc::sockaddr_in).cast(), len), 0, "connect");
        TcpStream::from_raw_fd(fd)
    }
}

#[test]
fn identical_tuples_in_two_namespaces_are_two_connections() {
    let Some(mut watch) = open_collector(Filters::default()) else { return };
    let first = NetnsPair::new("a");
    let second = NetnsPair::new("b");
    transfer(&first, 1_000);
    transfer(&second, 2_000);
    let client: SocketAddr = format!("{CLIENT_IP}:40000").parse().unwrap();
    let server: SocketAddr = format!("{SERVER_IP}:5555").parse().unwrap();
    for (pair, bytes) in [(&first, 1_000), (&second, 2_000)] {
        for (side, (local, remote), tx, rx) in
            [(1, (client, server), bytes, 0), (0, (server, client), 0, bytes)]
        {
            let netns = NetnsPair::inode(&pair.names[side]);
            assert!(
                watch.until(|w| w.latest.values().any(|c| c.local == local
                    && c.remote == remote
                    && c.netns == Some(netns)
                    && c.tx_bytes == tx
                    && c.rx_bytes == rx)),
                "no {local} -> {remote} in netns {netns} with tx {tx} rx {rx}: {:?}",
                watch.latest.values().filter(|c| c.local == local).collect::<Vec<_>>()
            );
            let conn = watch.latest.values().find(|c| c.local == local && c.netns == Some(netns)).unwrap();
            assert_eq!((conn.pid, &*conn.comm), (Some(std::process::id()), TRAFFIC_COMM));
        }
    }
}

/// A connection in another network namespace, open before tcptop starts, is listed at once
/// with its namespace, state and owner, though no process is in that namespace any more.
#[test]
fn connections_in_other_namespaces_are_listed_at_start() {
    if !crate::helpers::bpf_allowed() {
        return;
    }
    let pair = NetnsPair::new("o");
    let server_addr: SocketAddr = format!("{SERVER_IP}:5555").parse().unwrap();
    let listener = NetnsPair::inside(&pair.names[0], || TcpListener::bind(server_addr).unwrap());
    let client = NetnsPair::inside(&pair.names[1], || TcpStream::connect(server_addr).unwrap());
    let (server, _) = listener.accept().unwrap();
    let Some(mut watch) = open_collector(Filters::default()) else { return };
    watch.poll();
    for (stream, side) in [(&client, 1), (&server, 0)] {
        let (local, remote) = (stream.local_addr().unwrap(), stream.peer_addr().unwrap());
        let netns = NetnsPair::inode(&pair.names[side]);
        let conn = watch
            .latest
            .values()
            .find(|c| c.local == local && c.remote == remote && c.netns == Some(netns))
            .unwrap_or_else(|| panic!("{local} -> {remote} in netns {netns} is not listed at start"));
        assert_eq!((conn.state, conn.pid), (Some(TcpState::Established), Some(std::process::id())));
    }
}

/// A cgroup of our own, removed on drop.
struct Cgroup {
    dir: std::path::PathBuf,
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = fs::remove_dir(&self.dir);
    }
}

#[test]
fn cgroup_filter_keeps_only_that_cgroup() {
    if !crate::helpers::bpf_allowed() {
        return;
    }
    let root = cgroup2_root().expect("a cgroup v2 hierarchy");
    let name = format!("tcptop-test-{}", std::process::id());
    let cgroup = Cgroup { dir: root.join(&name) };
    fs::create_dir(&cgroup.dir).unwrap();
    let Some(mut watch) = open_collector(Filters { cgroup: Some(name.clone()), ..Filters::default() }) else {
        return;
    };

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let procs = std::ffi::CString::new(cgroup.dir.join("cgroup.procs").into_os_string().into_encoded_bytes())
        .unwrap();
    // bash joins the cgroup before exec ("0" moves the writer), so all it does is inside it.
    // Between fork and exec only async-signal-safe calls: open, write, close.
    let join_cgroup = move || {
        let fd = unsafe { libc::open(procs.as_ptr(), libc::O_WRONLY) };
        let written = unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) };
        unsafe { libc::close(fd) };
        if written == 1 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    let mut child = unsafe {
        Command::new("bash")
            .args([
                "-c",
                &format!(
                    "exec 3<>/dev/tcp/127.0.0.1/{port}; printf '%0500d' 0 >&3; read -r -u 3 _; exec 3>&-"
                ),
            ])
            .pre_exec(join_cgroup)
            .spawn()
            .expect("bash")
    };
    let (mut server, peer) = listener.accept().unwrap();
    let mut got = vec![0; 500];
    server.read_exact(&mut got).unwrap();
    server.write_all(b"done\n").unwrap();
    assert!(child.wait().unwrap().success());

    let child_pid = child.id();
    assert!(
        watch.until(|w| w.find(peer, listener.local_addr().unwrap()).is_some_and(|c| c.tx_bytes == 500)),
        "the child's connection was not reported"
    );
    let conn = watch.find(peer, listener.local_addr().unwrap()).unwrap();
    assert_eq!((conn.pid, &*conn.comm, conn.rx_bytes), (Some(child_pid), "bash", 5));
    assert_eq!(conn.cgroup.as_deref(), Some(format!("/{name}").as_str()));
    let server_end = watch.find(listener.local_addr().unwrap(), peer);
    assert!(server_end.is_none(), "our own end is outside the cgroup: {server_end:?}");
}
