//! UDP through the real eBPF collector: exact payload bytes per flow (a socket and one peer)
//! in each direction, with pid and comm, over IPv4 and IPv6 loopback, connected and
//! unconnected; `--tcp` / `--udp`; idle flows leaving the kernel's table. Needs root.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::thread;
use std::time::Duration;

use tcptop::collector::{Collector, Conn, Filters, Proto};

use crate::helpers::{as_traffic, bpf_allowed, open_collector, Ip, Pair, Watch};

fn bind(address: SocketAddr) -> UdpSocket {
    UdpSocket::bind(address).expect("binding on loopback")
}

fn address(socket: &UdpSocket) -> SocketAddr {
    socket.local_addr().unwrap()
}

/// Sends one datagram of each size, to `to` or (`None`) to the connected peer; returns the
/// payload bytes.
fn send_all(socket: &UdpSocket, to: Option<SocketAddr>, sizes: &[usize]) -> u64 {
    for &size in sizes {
        let data = vec![0x42; size];
        let sent = match to {
            Some(to) => socket.send_to(&data, to),
            None => socket.send(&data),
        };
        assert_eq!(sent.unwrap(), size);
    }
    sizes.iter().sum::<usize>() as u64
}

/// Receives one datagram of each size: with recv_from, which asks for the sender and checks
/// it is `from`, or (`None`) with recv, which does not ask.
fn receive_all(socket: &UdpSocket, from: Option<SocketAddr>, sizes: &[usize]) {
    let mut buf = [0; 2048];
    for &size in sizes {
        let got = match from {
            Some(from) => {
                let (got, sender) = socket.recv_from(&mut buf).unwrap();
                assert_eq!(sender, from);
                got
            }
            None => socket.recv(&mut buf).unwrap(),
        };
        assert_eq!(got, size);
    }
}

/// Asserts the flow `local -> remote` with exactly these totals, the test's pid and comm,
/// and no TCP state.
fn expect_flow(watch: &mut Watch, local: SocketAddr, remote: SocketAddr, tx: u64, rx: u64) -> Conn {
    let flow = watch.expect_bytes(local, remote, tx, rx);
    assert_eq!((flow.proto, flow.state), (Proto::Udp, None), "{local} -> {remote}");
    flow
}

/// A connected client, and a server that answers with send_to; the server peeks before it
/// reads, which must not count.
#[test]
fn connected_socket_counts_each_direction_exactly() {
    let Some(mut watch) = open_collector(Filters::default()) else {
        return;
    };
    for ip in Ip::BOTH {
        let server = bind(ip.loopback());
        let client = bind(ip.loopback());
        client.connect(address(&server)).unwrap();
        let (client_end, server_end) = (address(&client), address(&server));
        let (up, down) = as_traffic(|| {
            let up = send_all(&client, None, &[1, 100, 1400, 37]);
            let (peeked, _) = server.peek_from(&mut [0; 8]).unwrap();
            assert_eq!(peeked, 1);
            receive_all(&server, Some(client_end), &[1, 100, 1400, 37]);
            let down = send_all(&server, Some(client_end), &[512, 3]);
            receive_all(&client, None, &[512, 3]);
            (up, down)
        });
        expect_flow(&mut watch, client_end, server_end, up, down);
        expect_flow(&mut watch, server_end, client_end, down, up);
    }
}

/// An unconnected socket talking to two servers: a flow per server, on each side.
#[test]
fn unconnected_socket_has_a_flow_per_peer() {
    let Some(mut watch) = open_collector(Filters::default()) else {
        return;
    };
    for ip in Ip::BOTH {
        let client = bind(ip.loopback());
        let [a, b] = [bind(ip.loopback()), bind(ip.loopback())];
        let (c, a_end, b_end) = (address(&client), address(&a), address(&b));
        as_traffic(|| {
            send_all(&client, Some(a_end), &[300, 5]);
            send_all(&client, Some(b_end), &[77]);
            receive_all(&a, Some(c), &[300, 5]);
            receive_all(&b, Some(c), &[77]);
            send_all(&a, Some(c), &[9]);
            send_all(&b, Some(c), &[1000, 1]);
            receive_all(&client, Some(a_end), &[9]);
            receive_all(&client, Some(b_end), &[1000, 1]);
        });
        expect_flow(&mut watch, c, a_end, 305, 9);
        expect_flow(&mut watch, c, b_end, 77, 1001);
        expect_flow(&mut watch, a_end, c, 9, 305);
        expect_flow(&mut watch, b_end, c, 1001, 77);
    }
}

/// An IPv6 socket sending to an IPv4 peer goes through udpv6_sendmsg and then udp_sendmsg:
/// it counts once, and the peer shows as IPv4, however the address was given.
#[test]
fn ipv6_socket_talking_to_an_ipv4_peer_counts_once() {
    let Some(mut watch) = open_collector(Filters::default()) else {
        return;
    };
    let mapped_loopback = Ipv4Addr::LOCALHOST.to_ipv6_mapped().into();
    let client = bind(SocketAddr::new(mapped_loopback, 0));
    let server = bind(Ip::V4.loopback());
    let server_end = address(&server);
    let mapped_server_end = SocketAddr::new(mapped_loopback, server_end.port());
    let client_end = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), address(&client).port());
    as_traffic(|| {
        send_all(&client, Some(server_end), &[64]);
        send_all(&client, Some(mapped_server_end), &[36]);
        receive_all(&server, Some(client_end), &[64, 36]);
        send_all(&server, Some(client_end), &[7]);
        receive_all(&client, Some(mapped_server_end), &[7]);
    });
    expect_flow(&mut watch, client_end, server_end, 100, 7);
    expect_flow(&mut watch, server_end, client_end, 7, 100);
}

/// `--udp` hides TCP and `--tcp` hides UDP, in the kernel.
#[test]
fn protocol_filters_keep_only_their_protocol() {
    if !bpf_allowed() {
        return;
    }
    for shown in [Proto::Udp, Proto::Tcp] {
        let Some(mut watch) = open_collector(Filters { proto: Some(shown), ..Filters::default() }) else {
            return;
        };
        let mut pair = Pair::connect(Ip::V4);
        let [client, server] = [bind(Ip::V4.loopback()), bind(Ip::V4.loopback())];
        let (udp_local, udp_remote) = (address(&client), address(&server));
        as_traffic(|| {
            pair.client.write_all(&[3; 600]).unwrap();
            pair.server.read_exact(&mut [0; 600]).unwrap();
            send_all(&client, Some(udp_remote), &[400]);
            receive_all(&server, Some(udp_local), &[400]);
        });
        let (tcp_local, tcp_remote) = pair.client_ends();
        let (hidden_local, hidden_remote) = match shown {
            Proto::Udp => {
                expect_flow(&mut watch, udp_local, udp_remote, 400, 0);
                (tcp_local, tcp_remote)
            }
            Proto::Tcp => {
                watch.expect_bytes(tcp_local, tcp_remote, 600, 0);
                (udp_local, udp_remote)
            }
        };
        assert!(watch.find(hidden_local, hidden_remote).is_none(), "--{shown:?} showed the other protocol");
    }
}

/// A flow idle for longer than the timeout is reported once more, then leaves the kernel's
/// table: a datagram after that starts a new flow that counts only itself.
#[test]
fn an_idle_flow_leaves_the_kernel_table() {
    let idle = Duration::from_millis(10);
    let Some(mut watch) = open_collector(Filters { udp_idle: idle, ..Filters::default() }) else {
        return;
    };
    let [client, server] = [bind(Ip::V4.loopback()), bind(Ip::V4.loopback())];
    let (local, remote) = (address(&client), address(&server));
    let exchange = |size| {
        as_traffic(|| {
            send_all(&client, Some(remote), &[size]);
            receive_all(&server, Some(local), &[size]);
        })
    };
    exchange(64);
    let first = expect_flow(&mut watch, local, remote, 64, 0);
    thread::sleep(idle * 5);
    // This read may still report the idle flow, once; the next one must not.
    watch.poll();
    let sample = watch.collector.collect().expect("collecting");
    assert!(sample.conns.iter().all(|c| c.id != first.id), "an idle flow stayed in the kernel's table");
    watch.latest.clear();
    exchange(32);
    let second = expect_flow(&mut watch, local, remote, 32, 0);
    assert_ne!(second.id, first.id);
}
