//! Linux process attribution for captured connections: a connection's socket inode from
//! /proc/net/{tcp,tcp6,udp,udp6}, and the process holding that inode from /proc/<pid>/fd
//! (cached by `crate::procfs::SocketOwners`, which rescans only for inodes it never saw).

use std::collections::HashMap;
use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::assemble::Endpoints;
use super::ProcessLookup;
use crate::collector::Proto;
use crate::procfs::SocketOwners;

/// Socket owners as /proc tells them, for this network namespace.
#[derive(Debug, Default)]
pub struct ProcNetOwners {
    owners: SocketOwners,
}

/// (proto, local, remote) -> socket inode.
type SocketTable = HashMap<(Proto, SocketAddr, SocketAddr), u64>;

impl ProcessLookup for ProcNetOwners {
    fn lookup(&mut self, conns: &[Endpoints]) -> Vec<Option<(u32, String)>> {
        let mut table = SocketTable::new();
        for (proto, files) in [(Proto::Tcp, ["tcp", "tcp6"]), (Proto::Udp, ["udp", "udp6"])] {
            if conns.iter().any(|c| c.proto == proto) {
                for file in files {
                    let text = fs::read_to_string(format!("/proc/net/{file}")).unwrap_or_default();
                    parse_socket_table(proto, &text, &mut table);
                }
            }
        }
        let inodes: Vec<Option<u64>> = conns.iter().map(|c| socket_inode(&table, c)).collect();
        let mut owners = self.owners.lookup(inodes.iter().flatten().copied()).into_iter();
        inodes
            .iter()
            .map(|inode| inode.and_then(|_| owners.next().flatten()).map(|owner| (owner.pid, owner.comm)))
            .collect()
    }
}

/// The inode of the socket behind `conn`: the connected socket, or for UDP an unconnected
/// one bound to the local port.
fn socket_inode(table: &SocketTable, conn: &Endpoints) -> Option<u64> {
    let exact = table.get(&(conn.proto, conn.local, conn.remote));
    if exact.is_some() || conn.proto == Proto::Tcp {
        return exact.copied();
    }
    let port = conn.local.port();
    let any_v4 = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    let any_v6 = IpAddr::V6(Ipv6Addr::UNSPECIFIED);
    let locals = [conn.local, SocketAddr::new(any_v4, port), SocketAddr::new(any_v6, port)];
    let unconnected = [SocketAddr::new(any_v4, 0), SocketAddr::new(any_v6, 0)];
    locals
        .iter()
        .flat_map(|local| unconnected.iter().map(move |remote| (Proto::Udp, *local, *remote)))
        .find_map(|key| table.get(&key).copied())
}

/// Adds the rows of one /proc/net/{tcp,udp}[6] file; rows without an inode (sockets not
/// yet accept()ed, TIME_WAIT) are left out.
fn parse_socket_table(proto: Proto, text: &str, table: &mut SocketTable) {
    for line in text.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(local), Some(remote), Some(inode)) = (fields.get(1), fields.get(2), fields.get(9)) else {
            continue;
        };
        let (Some(local), Some(remote), Ok(inode)) =
            (parse_address(local), parse_address(remote), inode.parse())
        else {
            continue;
        };
        if inode != 0 {
            table.insert((proto, local, remote), inode);
        }
    }
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
}
