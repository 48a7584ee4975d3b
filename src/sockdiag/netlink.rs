//! NETLINK_SOCK_DIAG sockets of the network namespace they were opened in: dumps of its TCP
//! sockets with their tcp_info, and the final tcp_info of each TCP socket it destroys.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;

use anyhow::{anyhow, Context, Result};
use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6, IPPROTO_TCP};
use netlink_packet_sock_diag::inet::nlas::Nla;
pub use netlink_packet_sock_diag::inet::StateFlags;
use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, InetResponse, SocketId};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_sys::{protocols::NETLINK_SOCK_DIAG, Socket};

use super::bytes::Counters;
use crate::collector::Family;

/// The multicast groups of destroyed TCP sockets, IPv4 and IPv6 (linux/sock_diag.h).
const SKNLGRP_INET_TCP_DESTROY: u32 = 1;
const SKNLGRP_INET6_TCP_DESTROY: u32 = 3;
/// A netlink dump sends at most 32 KiB at a time (netlink_dump); room for more is harmless.
const RECEIVE_BUFFER: usize = 64 << 10;

/// A TCP socket as one sock_diag message gave it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpSocket {
    /// The kernel's socket cookie: unique for the life of the host, never reused.
    pub cookie: u64,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// 0 in destroy messages: the socket has no inode by then.
    pub inode: u32,
    pub counters: Counters,
}

/// A TCP socket as a dump without extensions gives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ListedSocket {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// The kernel's state number (include/net/tcp_states.h).
    pub state: u8,
    /// 0 for a socket no file stands for (not yet accept()ed, TIME_WAIT).
    pub inode: u32,
}

/// A sock_diag socket of one network namespace.
pub struct DiagSocket {
    socket: Socket,
    buffer: Vec<u8>,
}

impl DiagSocket {
    /// A socket of the calling thread's network namespace, for dumps.
    pub fn open() -> io::Result<DiagSocket> {
        let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
        socket.bind_auto()?;
        Ok(DiagSocket { socket, buffer: vec![0; RECEIVE_BUFFER] })
    }

    /// A socket of the calling thread's network namespace that hears of every TCP socket the
    /// kernel destroys there. Any user may join the group (the kernel's sock_diag socket is
    /// made with NL_CFG_F_NONROOT_RECV, diag_net_init); only its queue size needs privilege.
    /// The kernel may queue `queue` bytes of messages for it.
    pub fn open_destroy_listener(queue: usize) -> io::Result<DiagSocket> {
        let listener = DiagSocket::open()?;
        for group in [SKNLGRP_INET_TCP_DESTROY, SKNLGRP_INET6_TCP_DESTROY] {
            listener.socket.add_membership(group)?;
        }
        listener.socket.set_non_blocking(true)?;
        let fd = listener.socket.as_raw_fd();
        // SO_RCVBUFFORCE passes net.core.rmem_max, with CAP_NET_ADMIN.
        let queue = libc::c_int::try_from(queue).unwrap_or(libc::c_int::MAX);
        if set_int_option(fd, libc::SO_RCVBUFFORCE, queue).is_err() {
            set_int_option(fd, libc::SO_RCVBUF, queue)?;
        }
        Ok(listener)
    }

    /// Every TCP socket of `family` in this namespace but listeners and TIME_WAIT sockets
    /// (which have no counters left), with the counters that have.
    pub fn dump(&mut self, family: Family, into: &mut Vec<TcpSocket>) -> Result<()> {
        let states = StateFlags::all() - StateFlags::LISTEN - StateFlags::TIME_WAIT;
        self.request(family, ExtensionFlags::INFO, states, |response| {
            into.extend(found_socket(response));
        })
    }

    /// Every TCP socket of `family` in `states`, without its tcp_info: a dump a fraction the
    /// size of `dump`'s.
    pub fn list(
        &mut self,
        family: Family,
        states: StateFlags,
        mut found: impl FnMut(ListedSocket),
    ) -> Result<()> {
        self.request(family, ExtensionFlags::empty(), states, |response| {
            let (local, remote) = ends(&response.header.socket_id);
            found(ListedSocket { local, remote, state: response.header.state, inode: response.header.inode });
        })
    }

    /// The TCP socket with these ends, if there is one: a lookup in the kernel's hash (one
    /// system call, however many sockets there are) rather than a dump.
    pub fn find(&mut self, local: SocketAddr, remote: SocketAddr) -> Result<Option<ListedSocket>> {
        let socket_id = SocketId {
            source_port: local.port(),
            destination_port: remote.port(),
            source_address: local.ip(),
            destination_address: remote.ip(),
            interface_id: 0,
            cookie: [0xff; 8], // INET_DIAG_NOCOOKIE
        };
        let family = if local.is_ipv4() { AF_INET } else { AF_INET6 };
        let states = StateFlags::all();
        let request = InetRequest {
            family,
            protocol: IPPROTO_TCP,
            extensions: ExtensionFlags::empty(),
            states,
            socket_id,
        };
        self.send(NLM_F_REQUEST, request)?;
        let received =
            self.socket.recv(&mut &mut self.buffer[..], 0).context("reading a sock_diag answer")?;
        let message = NetlinkMessage::<SockDiagMessage>::deserialize(&self.buffer[..received])
            .map_err(|e| anyhow!("an unreadable sock_diag message: {e}"))?;
        match message.payload {
            NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(response)) => {
                let header = &response.header;
                let ends = ends(&header.socket_id);
                // With no connection the kernel answers with a listener on the port.
                let found =
                    ListedSocket { local: ends.0, remote: ends.1, state: header.state, inode: header.inode };
                Ok((ends == (local, remote)).then_some(found))
            }
            NetlinkPayload::Error(error) if error.raw_code() == -libc::ENOENT => Ok(None),
            NetlinkPayload::Error(error) => {
                Err(io::Error::from_raw_os_error(-error.raw_code())).context("the sock_diag lookup failed")
            }
            _ => Err(anyhow!("an unexpected answer to a sock_diag lookup")),
        }
    }

    /// Sends one request.
    fn send(&mut self, flags: u16, request: InetRequest) -> Result<()> {
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        let mut message = NetlinkMessage::new(header, SockDiagMessage::InetRequest(request).into());
        message.finalize();
        let mut bytes = vec![0; message.buffer_len()];
        message.serialize(&mut bytes);
        self.socket.send(&bytes, 0).context("sending a sock_diag request")?;
        Ok(())
    }

    /// Sends one dump request and hands each response to `found`, to the dump's end.
    fn request(
        &mut self,
        family: Family,
        extensions: ExtensionFlags,
        states: StateFlags,
        mut found: impl FnMut(&InetResponse),
    ) -> Result<()> {
        let (family, socket_id) = match family {
            Family::V4 => (AF_INET, SocketId::new_v4()),
            Family::V6 => (AF_INET6, SocketId::new_v6()),
        };
        let request = InetRequest { family, protocol: IPPROTO_TCP, extensions, states, socket_id };
        self.send(NLM_F_REQUEST | NLM_F_DUMP, request)?;
        loop {
            let received =
                self.socket.recv(&mut &mut self.buffer[..], 0).context("reading a sock_diag dump")?;
            if for_each_message(&self.buffer[..received], &mut found)? {
                return Ok(());
            }
        }
    }

    /// The sockets destroyed since the last call, oldest first: all those queued, and then
    /// Err(Overflow) if the kernel had to drop some (ENOBUFS: the queue was full).
    pub fn destroyed(&mut self, into: &mut Vec<TcpSocket>) -> Result<(), DestroyedLost> {
        let mut overflowed = false;
        loop {
            match self.socket.recv(&mut &mut self.buffer[..], 0) {
                Ok(received) => {
                    let found = |response: &InetResponse| {
                        into.extend(found_socket(response));
                    };
                    for_each_message(&self.buffer[..received], found).map_err(DestroyedLost::Unreadable)?;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && overflowed => {
                    return Err(DestroyedLost::Overflow)
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => overflowed = true,
                Err(e) => {
                    return Err(DestroyedLost::Unreadable(anyhow!(e).context("reading destroyed sockets")))
                }
            }
        }
    }
}

/// Why some destroyed sockets' final counters are missing.
pub enum DestroyedLost {
    /// The kernel found the queue full and dropped messages.
    Overflow,
    Unreadable(anyhow::Error),
}

fn set_int_option(fd: i32, option: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: setsockopt reads an int of the size given.
    let result =
        unsafe { libc::setsockopt(fd, libc::SOL_SOCKET, option, (&value as *const libc::c_int).cast(), 4) };
    if result != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Hands each response of one datagram to `found`; true once the dump's end is in it.
fn for_each_message(mut datagram: &[u8], mut found: impl FnMut(&InetResponse)) -> Result<bool> {
    while !datagram.is_empty() {
        let message = NetlinkMessage::<SockDiagMessage>::deserialize(datagram)
            .map_err(|e| anyhow!("an unreadable sock_diag message: {e}"))?;
        let length = (message.header.length as usize).max(1).min(datagram.len());
        datagram = &datagram[netlink_aligned(length).min(datagram.len())..];
        match message.payload {
            NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(response)) => found(&response),
            NetlinkPayload::Done(_) => return Ok(true),
            NetlinkPayload::Error(error) if error.code.is_some() => {
                let error = io::Error::from_raw_os_error(-error.raw_code());
                // The kernel answers ENOENT where no handler for TCP is registered.
                let why = if error.kind() == io::ErrorKind::NotFound {
                    "this kernel has no TCP sock_diag (the tcp_diag module is not loaded)"
                } else {
                    "the sock_diag request failed"
                };
                return Err(error).context(why);
            }
            _ => {}
        }
    }
    Ok(false)
}

fn netlink_aligned(length: usize) -> usize {
    length.next_multiple_of(4)
}

/// A socket's local and remote ends, IPv4-mapped addresses as IPv4.
fn ends(id: &SocketId) -> (SocketAddr, SocketAddr) {
    let canonical = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_canonical(),
        v4 => v4,
    };
    (
        SocketAddr::new(canonical(id.source_address), id.source_port),
        SocketAddr::new(canonical(id.destination_address), id.destination_port),
    )
}

/// The socket a response describes, if it came with its tcp_info (request sockets do not).
fn found_socket(response: &InetResponse) -> Option<TcpSocket> {
    let info = response.nlas.iter().find_map(|nla| match nla {
        Nla::TcpInfo(info) => Some(info),
        _ => None,
    })?;
    let header = &response.header;
    let id = &header.socket_id;
    // Two native-endian halves, the low one first (sock_diag_save_cookie).
    let half = |at: usize| u64::from(u32::from_ne_bytes(id.cookie[at..at + 4].try_into().unwrap()));
    let (local, remote) = ends(id);
    Some(TcpSocket {
        cookie: half(4) << 32 | half(0),
        local,
        remote,
        inode: header.inode,
        counters: Counters {
            state: header.state,
            bytes_sent: info.bytes_sent,
            bytes_retrans: info.bytes_retrans,
            notsent_bytes: info.notsent_bytes,
            bytes_received: info.bytes_received,
            unread: header.recv_queue,
            rtt_us: info.rtt,
            rttvar_us: info.rttvar,
            min_rtt_us: info.min_rtt,
            total_retrans: info.total_retrans,
        },
    })
}
