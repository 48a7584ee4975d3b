//! What Linux says of captured connections: a connection's socket inode, from sock_diag for
//! TCP (a netlink dump, a fraction of /proc/net/tcp's cost: no text to print and parse) and
//! from /proc/net/{udp,udp6} (and /proc/net/{tcp,tcp6} where sock_diag fails), the process
//! holding that inode from /proc/<pid>/fd (cached by `crate::procfs::SocketOwners`, which
//! rescans only for inodes it never saw), and every TCP socket with its state, which tells
//! which connections still exist.

use std::collections::HashMap;
use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::assemble::{Endpoints, ListedSockets};
use super::ProcessLookup;
use crate::collector::{Family, Proto, TcpState};
use crate::procfs::{SocketOwners, Tcp6InUse};
use crate::sockdiag::netlink::{DiagSocket, ListedSocket, StateFlags};

/// Socket owners as the kernel tells them, for this network namespace.
#[derive(Default)]
pub struct ProcNetOwners {
    owners: SocketOwners,
    tcp: TcpList,
    /// How many sockets the last list held: the next table starts that large, as one grown
    /// by doubling holds its old and its new half at once (17 MiB more at 250,000 sockets).
    listed: usize,
}

/// Where the TCP sockets are read from.
#[derive(Default)]
enum TcpList {
    /// Not yet needed: sock_diag is opened on first use, by the thread that reads it.
    #[default]
    Unopened,
    /// `tcp6` counts the IPv6 sockets: a dump walks the kernel's whole connection hash, so
    /// the IPv6 one is left out while there are none (the count leaves out TIME_WAIT
    /// sockets, which then go unlisted: those of a host without any other IPv6 socket).
    SockDiag { socket: DiagSocket, tcp6: Option<Tcp6InUse> },
    /// sock_diag cannot be opened or dumped here (no tcp_diag): the same rows, from text.
    ProcNet,
}

impl TcpList {
    /// The TCP sockets of this network namespace, listeners only if `listeners`, each
    /// `add`ed to an `empty()` collection as it is read: on a host with 100,000 sockets a
    /// list of rows, then a table made from it, would take twice the memory of the table.
    fn rows<C>(
        &mut self,
        listeners: bool,
        empty: impl Fn() -> C,
        mut add: impl FnMut(&mut C, ListedSocket),
    ) -> C {
        if matches!(self, TcpList::Unopened) {
            *self = match DiagSocket::open() {
                Ok(socket) => TcpList::SockDiag { socket, tcp6: Tcp6InUse::open().ok() },
                Err(_) => TcpList::ProcNet,
            };
        }
        if let TcpList::SockDiag { socket, tcp6 } = self {
            let states = match listeners {
                true => StateFlags::all(),
                false => StateFlags::all() - StateFlags::LISTEN,
            };
            let v6 = tcp6.as_mut().is_none_or(Tcp6InUse::any);
            let mut rows = empty();
            let mut dump = |family| socket.list(family, states.clone(), |row| add(&mut rows, row));
            match dump(Family::V4).and_then(|()| if v6 { dump(Family::V6) } else { Ok(()) }) {
                Ok(()) => return rows,
                // What the failed dump added is read again from text.
                Err(_) => *self = TcpList::ProcNet,
            }
        }
        let mut rows = empty();
        let wanted = proc_net_rows(Proto::Tcp)
            .filter(|row| listeners || TcpState::from_kernel(row.state) != TcpState::Listen);
        for row in wanted {
            add(&mut rows, row);
        }
        rows
    }
}

/// (proto, local, remote) -> socket inode.
type SocketTable = HashMap<(Proto, SocketAddr, SocketAddr), u64>;

impl ProcessLookup for ProcNetOwners {
    fn lookup(&mut self, conns: &[Endpoints]) -> Vec<Option<(u32, String)>> {
        let wanted = |proto| conns.iter().any(|c: &Endpoints| c.proto == proto);
        let mut table = match wanted(Proto::Tcp) {
            true => self.tcp.rows(true, SocketTable::new, |table, row| add_owned(table, Proto::Tcp, row)),
            false => SocketTable::new(),
        };
        if wanted(Proto::Udp) {
            proc_net_rows(Proto::Udp).for_each(|row| add_owned(&mut table, Proto::Udp, row));
        }
        let inodes: Vec<Option<u64>> = conns.iter().map(|c| socket_inode(&table, c)).collect();
        let mut owners = self.owners.lookup(inodes.iter().flatten().copied()).into_iter();
        inodes
            .iter()
            .map(|inode| {
                inode.and_then(|_| owners.next().flatten()).map(|owner| (owner.pid, owner.comm.to_string()))
            })
            .collect()
    }

    fn tcp_sockets(&mut self) -> Option<ListedSockets> {
        let empty = || ListedSockets::with_capacity(self.listed);
        let listed = self.tcp.rows(false, empty, |listed, row| {
            listed.insert((row.local, row.remote), TcpState::from_kernel(row.state));
        });
        self.listed = listed.len();
        Some(listed)
    }

    fn tcp_sockets_among(&mut self, ends: &[(SocketAddr, SocketAddr)]) -> Option<ListedSockets> {
        let TcpList::SockDiag { socket, .. } = &mut self.tcp else { return None };
        let mut listed = ListedSockets::new();
        for &(local, remote) in ends {
            if let Some(row) = socket.find(local, remote).ok()? {
                listed.insert((row.local, row.remote), TcpState::from_kernel(row.state));
            }
        }
        Some(listed)
    }

    fn lists_sockets(&self) -> bool {
        true
    }
}

/// Adds a row's socket inode; rows without one (not yet accept()ed, TIME_WAIT) have no owner.
fn add_owned(table: &mut SocketTable, proto: Proto, row: ListedSocket) {
    if row.inode != 0 {
        table.insert((proto, row.local, row.remote), u64::from(row.inode));
    }
}

/// The inode of the socket behind `conn`: the connected socket, or one bound to the local
/// port and connected to nothing: an unconnected UDP socket, or the listener of a server
/// end whose accepted socket is already gone (a short connection belongs to the server).
fn socket_inode(table: &SocketTable, conn: &Endpoints) -> Option<u64> {
    if let Some(inode) = table.get(&(conn.proto, conn.local, conn.remote)) {
        return Some(*inode);
    }
    let port = conn.local.port();
    let any_v4 = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    let any_v6 = IpAddr::V6(Ipv6Addr::UNSPECIFIED);
    let locals = [conn.local, SocketAddr::new(any_v4, port), SocketAddr::new(any_v6, port)];
    let unconnected = [SocketAddr::new(any_v4, 0), SocketAddr::new(any_v6, 0)];
    locals
        .iter()
        .flat_map(|local| unconnected.iter().map(move |remote| (conn.proto, *local, *remote)))
        .find_map(|key| table.get(&key).copied())
}

/// The rows of /proc/net/{proto} and /proc/net/{proto}6.
fn proc_net_rows(proto: Proto) -> impl Iterator<Item = ListedSocket> {
    let files = match proto {
        Proto::Tcp => ["tcp", "tcp6"],
        Proto::Udp => ["udp", "udp6"],
    };
    files.into_iter().flat_map(|file| {
        let text = fs::read_to_string(format!("/proc/net/{file}")).unwrap_or_default();
        text.lines().skip(1).filter_map(parse_socket_row).collect::<Vec<_>>()
    })
}

fn parse_socket_row(line: &str) -> Option<ListedSocket> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    Some(ListedSocket {
        local: parse_address(fields.get(1)?)?,
        remote: parse_address(fields.get(2)?)?,
        state: u8::from_str_radix(fields.get(3)?, 16).ok()?,
        inode: fields.get(9)?.parse().ok()?,
    })
}

/// An address as /proc/net prints it: the raw network-order words in hex as the host reads
/// them, then the port in hex, e.g. `0100007F:1F90` for 127.0.0.1:8080 on little-endian.
fn parse_address(text: &str) -> Option<SocketAddr> {
    let (ip, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    if ip.len() != 8 && ip.len() != 32 {
        return None;
    }
    let mut octets = Vec::with_capacity(16);
    for word in ip.as_bytes().chunks(8) {
        let word = u32::from_str_radix(std::str::from_utf8(word).ok()?, 16).ok()?;
        octets.extend_from_slice(&word.to_ne_bytes());
    }
    let ip = match octets.len() {
        4 => IpAddr::from(<[u8; 4]>::try_from(octets).ok()?),
        16 => Ipv6Addr::from(<[u8; 16]>::try_from(octets).ok()?).to_canonical(),
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::net::{TcpListener, TcpStream, UdpSocket};

    #[test]
    fn parses_proc_net_addresses() {
        let loopback = u32::from_ne_bytes([127, 0, 0, 1]);
        assert_eq!(parse_address(&format!("{loopback:08X}:1F90")), Some("127.0.0.1:8080".parse().unwrap()));
        let mapped = Ipv4Addr::new(10, 1, 2, 3).to_ipv6_mapped().octets();
        let words: String =
            mapped.chunks(4).map(|w| format!("{:08X}", u32::from_ne_bytes(w.try_into().unwrap()))).collect();
        assert_eq!(parse_address(&format!("{words}:0050")), Some("10.1.2.3:80".parse().unwrap()));
        assert_eq!(parse_address("0100007F"), None);
        assert_eq!(parse_address("XYZ:0050"), None);
        assert_eq!(parse_address("0100:0050"), None);
    }

    #[test]
    fn sock_diag_lists_what_proc_net_tcp_does() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let listener6 = TcpListener::bind("[::1]:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let client6 = TcpStream::connect(listener6.local_addr().unwrap()).unwrap();
        let ends = |s: &TcpStream| (s.local_addr().unwrap(), s.peer_addr().unwrap());
        let (local6, remote6) = ends(&client6);
        let unaccepted = (remote6, local6);
        let listening = |l: &TcpListener, any: IpAddr| (l.local_addr().unwrap(), SocketAddr::new(any, 0));
        let mine = [
            ends(&client),
            ends(&server),
            (local6, remote6),
            unaccepted,
            listening(&listener, Ipv4Addr::UNSPECIFIED.into()),
            listening(&listener6, Ipv6Addr::UNSPECIFIED.into()),
        ];
        let ours = |rows: &mut HashSet<ListedSocket>, row: ListedSocket| {
            if mine.contains(&(row.local, row.remote)) {
                rows.insert(row);
            }
        };
        for listeners in [false, true] {
            let mut diag = TcpList::default();
            let listed: HashSet<ListedSocket> = diag.rows(listeners, HashSet::new, ours);
            assert!(matches!(diag, TcpList::SockDiag { .. }));
            assert_eq!(listed, TcpList::ProcNet.rows(listeners, HashSet::new, ours));
            // Both ends of each connection (the IPv6 server end never accept()ed), and the
            // listeners when asked for.
            assert_eq!(listed.len(), if listeners { 6 } else { 4 }, "{listed:?}");
        }
    }

    #[test]
    fn sock_diag_looks_up_one_connection_and_not_the_listener_on_its_port() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (client_end, server_end) = (client.local_addr().unwrap(), client.peer_addr().unwrap());
        let nobody = "127.0.0.1:9".parse().unwrap();
        let mut owners = ProcNetOwners::default();
        owners.tcp_sockets().unwrap(); // opens sock_diag
        let ends = [(client_end, server_end), (server_end, client_end), (server_end, nobody)];
        let found = owners.tcp_sockets_among(&ends).unwrap();
        let established = Some(&TcpState::Established);
        assert_eq!(found.get(&(client_end, server_end)), established);
        assert_eq!(found.get(&(server_end, client_end)), established, "not accept()ed yet");
        assert_eq!(found.len(), 2, "no connection from {nobody}: {found:?}");
    }

    #[test]
    fn finds_this_process_behind_its_own_sockets() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tcp = |s: &TcpStream| Endpoints {
            proto: Proto::Tcp,
            local: s.local_addr().unwrap(),
            remote: s.peer_addr().unwrap(),
        };
        let conns = [
            tcp(&client),
            tcp(&server),
            Endpoints {
                proto: Proto::Udp,
                local: udp.local_addr().unwrap(),
                remote: "127.0.0.1:9".parse().unwrap(),
            },
            Endpoints {
                proto: Proto::Tcp,
                local: "127.0.0.1:1".parse().unwrap(),
                remote: "127.0.0.1:2".parse().unwrap(),
            },
        ];
        let found = ProcNetOwners::default().lookup(&conns);
        let pids: Vec<Option<u32>> = found.iter().map(|o| o.as_ref().map(|(pid, _)| *pid)).collect();
        let me = Some(std::process::id());
        assert_eq!(pids, [me, me, me, None]);
    }

    #[test]
    fn a_server_end_without_its_own_socket_belongs_to_the_listener() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let waiting = TcpStream::connect(listener.local_addr().unwrap()).unwrap(); // never accepted
        let server_end = Endpoints {
            proto: Proto::Tcp,
            local: listener.local_addr().unwrap(),
            remote: waiting.local_addr().unwrap(),
        };
        let mut owners = ProcNetOwners::default();
        assert_eq!(owners.lookup(&[server_end])[0].as_ref().map(|o| o.0), Some(std::process::id()));
        let listed = owners.tcp_sockets().unwrap();
        assert_eq!(
            listed.get(&(waiting.local_addr().unwrap(), server_end.local)),
            Some(&TcpState::Established)
        );
        assert!(!listed.contains_key(&(server_end.local, "0.0.0.0:0".parse().unwrap())), "no listeners");
    }
}
