//! Pure packet decoding over byte slices: link layer (PKTAP, Linux cooked, Ethernet,
//! loopback, raw IP), IPv4/IPv6 and TCP/UDP headers, down to what assembly needs.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::collector::Proto;

/// The link-layer framings tcptop decodes, from libpcap's DLT_ numbers (pcap/dlt.h).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkType {
    /// Apple's per-packet process metadata, then the packet in its own link type.
    Pktap,
    /// Linux cooked capture v2, from the `any` device.
    LinuxSll2,
    /// Linux cooked capture v1, the `any` device's default before libpcap 1.10.
    LinuxSll,
    Ethernet,
    /// BSD loopback: a 4-byte address family in the capturing host's byte order.
    Null,
    /// OpenBSD loopback: the address family in network byte order.
    Loop,
    /// A bare IPv4 or IPv6 packet.
    Raw,
}

impl LinkType {
    pub fn from_dlt(dlt: i32) -> Option<LinkType> {
        Some(match dlt {
            0 => LinkType::Null,
            1 => LinkType::Ethernet,
            // DLT_RAW is 12 on most systems and 14 on OpenBSD; 101, 228 and 229 are the
            // LINKTYPE_RAW/IPV4/IPV6 values some captures report.
            12 | 14 | 101 | 228 | 229 => LinkType::Raw,
            108 => LinkType::Loop,
            113 => LinkType::LinuxSll,
            // Apple's libpcap reports DLT_PKTAP as DLT_USER2 (149); tcpdump.org's as 258.
            // tcptop never opens a DLT_USERn device for anything else.
            149 | 258 => LinkType::Pktap,
            276 => LinkType::LinuxSll2,
            _ => return None,
        })
    }
}

/// Which way a packet went, as the capturing kernel saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    In,
    Out,
}

/// The process PKTAP names for a packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PacketProcess {
    pub pid: u32,
    pub comm: String,
    /// Whose socket the pid belongs to: the sender's (out) or the receiver's (in).
    pub direction: Direction,
}

/// The TCP header fields that assembly uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpHeader {
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
}

impl TcpHeader {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const ACK: u8 = 0x10;

    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

/// One TCP segment or UDP datagram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    pub proto: Proto,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    /// Application bytes carried, from the IP and transport length fields (the capture
    /// keeps only the headers).
    pub payload: u32,
    /// `None` for UDP.
    pub tcp: Option<TcpHeader>,
    /// Only PKTAP captures name the process; boxed, as most packets wait in the capture's
    /// queue without one (24 bytes fewer each).
    pub process: Option<Box<PacketProcess>>,
}

/// Why a packet could not be decoded; such packets are counted and skipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The capture ended inside a header.
    Truncated,
    /// A header contradicts itself or the frame it came in.
    Malformed(&'static str),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated => f.write_str("truncated packet"),
            DecodeError::Malformed(why) => write!(f, "malformed packet: {why}"),
        }
    }
}

/// What a decoded frame is: a TCP/UDP packet, or something else (ARP, ICMP, a later
/// fragment) that carries no connection bytes.
pub type Decoded = Result<Option<Packet>, DecodeError>;

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: [u16; 3] = [0x8100, 0x88a8, 0x9100];
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

/// Decodes one captured frame. `data` is what was captured, `wire_len` the frame's length
/// on the wire (the capture may have cut the payload off).
pub fn decode(link: LinkType, data: &[u8], wire_len: u32) -> Decoded {
    let frame = Frame { data, wire_len: wire_len.max(data.len() as u32) };
    match link {
        LinkType::Pktap => decode_pktap(frame),
        other => decode_link(other, frame),
    }
}

/// The rest of a frame: captured bytes and the length it had on the wire.
#[derive(Clone, Copy)]
struct Frame<'a> {
    data: &'a [u8],
    wire_len: u32,
}

impl<'a> Frame<'a> {
    fn skip(self, n: usize) -> Result<Frame<'a>, DecodeError> {
        let data = self.data.get(n..).ok_or(DecodeError::Truncated)?;
        Ok(Frame { data, wire_len: self.wire_len - n as u32 })
    }

    fn bytes<const N: usize>(&self, at: usize) -> Result<[u8; N], DecodeError> {
        let slice = self.data.get(at..at + N).ok_or(DecodeError::Truncated)?;
        Ok(slice.try_into().expect("the slice has N bytes"))
    }

    fn u8(&self, at: usize) -> Result<u8, DecodeError> {
        self.data.get(at).copied().ok_or(DecodeError::Truncated)
    }

    fn be16(&self, at: usize) -> Result<u16, DecodeError> {
        self.bytes(at).map(u16::from_be_bytes)
    }

    fn be32(&self, at: usize) -> Result<u32, DecodeError> {
        self.bytes(at).map(u32::from_be_bytes)
    }

    fn le16(&self, at: usize) -> Result<u16, DecodeError> {
        self.bytes(at).map(u16::from_le_bytes)
    }

    fn le32(&self, at: usize) -> Result<u32, DecodeError> {
        self.bytes(at).map(u32::from_le_bytes)
    }
}

fn decode_link(link: LinkType, frame: Frame<'_>) -> Decoded {
    let (ethertype, offset) = match link {
        LinkType::Pktap => return Err(DecodeError::Malformed("PKTAP nested in PKTAP")),
        LinkType::Raw => match frame.u8(0)? >> 4 {
            4 => (ETHERTYPE_IPV4, 0),
            6 => (ETHERTYPE_IPV6, 0),
            _ => return Ok(None),
        },
        LinkType::Ethernet => {
            let mut offset = 12;
            let mut ethertype = frame.be16(offset)?;
            // Up to two 802.1Q/802.1ad tags.
            for _ in 0..2 {
                if !ETHERTYPE_VLAN.contains(&ethertype) {
                    break;
                }
                offset += 4;
                ethertype = frame.be16(offset)?;
            }
            (ethertype, offset + 2)
        }
        LinkType::Null | LinkType::Loop => {
            let raw = frame.bytes::<4>(0)?;
            let family = if link == LinkType::Loop || raw[0..2] == [0, 0] {
                u32::from_be_bytes(raw)
            } else {
                u32::from_le_bytes(raw)
            };
            // AF_INET is 2 everywhere; AF_INET6 is 10 (Linux), 24 (NetBSD, OpenBSD),
            // 28 (FreeBSD) or 30 (Darwin).
            match family {
                2 => (ETHERTYPE_IPV4, 4),
                10 | 24 | 28 | 30 => (ETHERTYPE_IPV6, 4),
                _ => return Ok(None),
            }
        }
        // struct sll_header: pkttype, hatype, halen, addr[8], protocol (pcap/sll.h).
        LinkType::LinuxSll => (frame.be16(14)?, 16),
        // struct sll2_header: protocol, reserved, if_index, hatype, pkttype, halen, addr[8].
        LinkType::LinuxSll2 => (frame.be16(0)?, 20),
    };
    let ip = frame.skip(offset)?;
    match ethertype {
        ETHERTYPE_IPV4 => decode_ipv4(ip),
        ETHERTYPE_IPV6 => decode_ipv6(ip),
        _ => Ok(None),
    }
}

/// PKTAP, from Apple's xnu `bsd/net/pktap.h` (struct pktap_header and pktap_v2_hdr) and
/// tcpdump's `print-pktap.c`, which reads the fields little-endian as every Apple machine
/// writes them. Version 1 (what libpcap delivers by default):
///
/// | offset | field                                                 |
/// |--------|-------------------------------------------------------|
/// | 0      | u32 pth_length (header length; at least 108)          |
/// | 4      | u32 pth_type_next (1: a packet follows)               |
/// | 8      | u32 pth_dlt (link type of the packet that follows)    |
/// | 12     | char pth_ifname[24]                                   |
/// | 36     | u32 pth_flags                                         |
/// | 52     | i32 pth_pid, then char pth_comm[17] at 56             |
/// | 84     | i32 pth_epid, then char pth_ecomm[17] at 88           |
///
/// Version 2 keeps pth_flags at 36 and marks itself with PTH_FLAG_V2_HDR: u8 pth_length
/// at 0, u8 comm offsets at 4 (pth_comm_offset) and 5 (pth_e_comm_offset), u16 pth_dlt at
/// 6, i32 pth_pid at 28, i32 pth_e_pid at 32; 40 bytes, then the strings.
fn decode_pktap(frame: Frame<'_>) -> Decoded {
    const PTH_FLAG_DIR_IN: u32 = 0x1;
    const PTH_FLAG_DIR_OUT: u32 = 0x2;
    const PTH_FLAG_PROC_DELEGATED: u32 = 0x4;
    const PTH_FLAG_V2_HDR: u32 = 0x8_0000;
    const PTH_TYPE_PACKET: u32 = 1;
    const COMM_SIZE: usize = 17;

    let flags = frame.le32(36)?;
    let text = |at: usize| -> String {
        let field = frame.data.get(at..).unwrap_or_default();
        let field = &field[..field.len().min(COMM_SIZE)];
        let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
        String::from_utf8_lossy(&field[..end]).into_owned()
    };
    let (header_len, dlt, pid, comm, epid, ecomm) = if flags & PTH_FLAG_V2_HDR != 0 {
        let header_len = usize::from(frame.u8(0)?);
        if header_len < 40 {
            return Err(DecodeError::Malformed("PKTAP v2 header shorter than 40 bytes"));
        }
        let string_at = |offset_field: usize| -> Result<String, DecodeError> {
            let offset = usize::from(frame.u8(offset_field)?);
            Ok(if offset == 0 { String::new() } else { text(offset) })
        };
        let dlt = u32::from(frame.le16(6)?);
        (header_len, dlt, frame.le32(28)?, string_at(4)?, frame.le32(32)?, string_at(5)?)
    } else {
        let header_len = usize::try_from(frame.le32(0)?).unwrap_or(usize::MAX);
        if header_len < 108 {
            return Err(DecodeError::Malformed("PKTAP header shorter than 108 bytes"));
        }
        if frame.le32(4)? != PTH_TYPE_PACKET {
            return Ok(None);
        }
        (header_len, frame.le32(8)?, frame.le32(52)?, text(56), frame.le32(84)?, text(88))
    };
    let inner_link = i32::try_from(dlt).ok().and_then(LinkType::from_dlt);
    let Some(inner_link) = inner_link else { return Ok(None) };
    let inner = frame.skip(header_len)?;
    let Some(mut packet) = decode_link(inner_link, inner)? else { return Ok(None) };
    // A delegated socket works for another process (an app behind a system daemon): the
    // effective process is the one the user knows.
    let (pid, comm) = if flags & PTH_FLAG_PROC_DELEGATED != 0 { (epid, ecomm) } else { (pid, comm) };
    let direction = match flags & (PTH_FLAG_DIR_IN | PTH_FLAG_DIR_OUT) {
        PTH_FLAG_DIR_IN => Some(Direction::In),
        PTH_FLAG_DIR_OUT => Some(Direction::Out),
        _ => None,
    };
    // pid_t -1 (and 0, the kernel) mean the packet belongs to no known process.
    let pid = i32::try_from(pid).ok().filter(|&p| p > 0);
    packet.process = pid
        .zip(direction)
        .map(|(pid, direction)| Box::new(PacketProcess { pid: pid as u32, comm, direction }));
    Ok(Some(packet))
}

/// Where the transport header starts and how long the transport segment is.
struct Transport<'a> {
    proto: u8,
    src: IpAddr,
    dst: IpAddr,
    segment: Frame<'a>,
    /// Length of the transport header plus payload.
    len: u32,
    /// Whether later fragments carry part of the segment.
    first_fragment: bool,
}

/// An IP length field: 0 (TSO and BIG TCP super-packets) means "the rest of the frame".
fn ip_length(field: u32, frame: Frame<'_>) -> Result<u32, DecodeError> {
    match field {
        0 => Ok(frame.wire_len),
        n if n > frame.wire_len => Err(DecodeError::Malformed("IP length beyond the frame")),
        n => Ok(n),
    }
}

fn decode_ipv4(frame: Frame<'_>) -> Decoded {
    let first = frame.u8(0)?;
    if first >> 4 != 4 {
        return Err(DecodeError::Malformed("IPv4 header with another version"));
    }
    let header_len = u32::from(first & 0x0f) * 4;
    if header_len < 20 {
        return Err(DecodeError::Malformed("IPv4 header shorter than 20 bytes"));
    }
    let total = ip_length(u32::from(frame.be16(2)?), frame)?;
    if total < header_len {
        return Err(DecodeError::Malformed("IPv4 total length shorter than its header"));
    }
    let fragment = frame.be16(6)?;
    const MORE_FRAGMENTS: u16 = 0x2000;
    if fragment & 0x1fff != 0 {
        return Ok(None); // a later fragment: no transport header
    }
    let src = IpAddr::V4(Ipv4Addr::from(frame.bytes::<4>(12)?));
    let dst = IpAddr::V4(Ipv4Addr::from(frame.bytes::<4>(16)?));
    decode_transport(Transport {
        proto: frame.u8(9)?,
        src,
        dst,
        segment: frame.skip(header_len as usize)?,
        len: total - header_len,
        first_fragment: fragment & MORE_FRAGMENTS != 0,
    })
}

fn decode_ipv6(frame: Frame<'_>) -> Decoded {
    if frame.u8(0)? >> 4 != 6 {
        return Err(DecodeError::Malformed("IPv6 header with another version"));
    }
    let total = ip_length(u32::from(frame.be16(4)?), frame.skip(40)?)?;
    let src = IpAddr::V6(Ipv6Addr::from(frame.bytes::<16>(8)?));
    let dst = IpAddr::V6(Ipv6Addr::from(frame.bytes::<16>(24)?));
    let mut next = frame.u8(6)?;
    let mut rest = frame.skip(40)?;
    let mut len = total;
    let mut first_fragment = false;
    // Extension headers, each at least 8 bytes long, so the walk ends within the packet.
    loop {
        let header_len = match next {
            IPPROTO_TCP | IPPROTO_UDP => break,
            0 | 43 | 60 => (u32::from(rest.u8(1)?) + 1) * 8, // hop-by-hop, routing, destination
            44 => {
                // fragment
                let offset_and_flags = rest.be16(2)?;
                if offset_and_flags & 0xfff8 != 0 {
                    return Ok(None);
                }
                first_fragment = offset_and_flags & 1 != 0;
                8
            }
            51 => (u32::from(rest.u8(1)?) + 2) * 4, // authentication header
            _ => return Ok(None),                   // ESP, no next header, ICMPv6, ...
        };
        if header_len > len {
            return Err(DecodeError::Malformed("IPv6 extension header beyond the payload"));
        }
        next = rest.u8(0)?;
        rest = rest.skip(header_len as usize)?;
        len -= header_len;
    }
    decode_transport(Transport {
        proto: next,
        src: src.to_canonical(),
        dst: dst.to_canonical(),
        segment: rest,
        len,
        first_fragment,
    })
}

fn decode_transport(t: Transport<'_>) -> Decoded {
    let s = t.segment;
    let fixed_header = match t.proto {
        IPPROTO_TCP => 20,
        IPPROTO_UDP => 8,
        _ => return Ok(None),
    };
    // The fixed header whole, options aside: a capture cut inside it is cut short.
    if s.data.len() < fixed_header {
        return Err(DecodeError::Truncated);
    }
    let (proto, payload, tcp) = match t.proto {
        IPPROTO_TCP => {
            let header_len = u32::from(s.u8(12)? >> 4) * 4;
            if header_len < 20 {
                return Err(DecodeError::Malformed("TCP header shorter than 20 bytes"));
            }
            let payload = t
                .len
                .checked_sub(header_len)
                .ok_or(DecodeError::Malformed("TCP header beyond the segment"))?;
            let tcp = TcpHeader { seq: s.be32(4)?, ack: s.be32(8)?, flags: s.u8(13)? };
            (Proto::Tcp, payload, Some(tcp))
        }
        IPPROTO_UDP => {
            let udp_len = u32::from(s.be16(4)?);
            // The UDP length covers every fragment; 0 is an IPv6 jumbogram's.
            let datagram = match udp_len {
                0 => t.len,
                n if n > t.len && !t.first_fragment => {
                    return Err(DecodeError::Malformed("UDP length beyond the IP payload"))
                }
                n => n,
            };
            let payload =
                datagram.checked_sub(8).ok_or(DecodeError::Malformed("UDP length shorter than 8 bytes"))?;
            (Proto::Udp, payload, None)
        }
        _ => return Ok(None),
    };
    let src = SocketAddr::new(t.src, s.be16(0)?);
    let dst = SocketAddr::new(t.dst, s.be16(2)?);
    Ok(Some(Packet { proto, src, dst, payload, tcp, process: None }))
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! Hand-built frames for the decoder and assembly tests.

    use super::*;

    /// A TCP or UDP segment with `payload` zero bytes, not yet wrapped in IP.
    pub fn tcp_segment(src_port: u16, dst_port: u16, seq: u32, flags: u8, payload: usize) -> Vec<u8> {
        let mut seg = vec![0u8; 20 + payload];
        seg[0..2].copy_from_slice(&src_port.to_be_bytes());
        seg[2..4].copy_from_slice(&dst_port.to_be_bytes());
        seg[4..8].copy_from_slice(&seq.to_be_bytes());
        seg[8..12].copy_from_slice(&7u32.to_be_bytes());
        seg[12] = 5 << 4;
        seg[13] = flags;
        seg
    }

    pub fn udp_segment(src_port: u16, dst_port: u16, payload: usize) -> Vec<u8> {
        let mut seg = vec![0u8; 8 + payload];
        seg[0..2].copy_from_slice(&src_port.to_be_bytes());
        seg[2..4].copy_from_slice(&dst_port.to_be_bytes());
        seg[4..6].copy_from_slice(&((8 + payload) as u16).to_be_bytes());
        seg
    }

    pub fn ipv4(src: [u8; 4], dst: [u8; 4], proto: u8, segment: &[u8]) -> Vec<u8> {
        let mut ip = vec![0u8; 20];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&((20 + segment.len()) as u16).to_be_bytes());
        ip[6] = 0x40; // don't fragment
        ip[8] = 64;
        ip[9] = proto;
        ip[12..16].copy_from_slice(&src);
        ip[16..20].copy_from_slice(&dst);
        ip.extend_from_slice(segment);
        ip
    }

    pub fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, proto: u8, segment: &[u8]) -> Vec<u8> {
        let mut ip = vec![0u8; 40];
        ip[0] = 0x60;
        ip[4..6].copy_from_slice(&(segment.len() as u16).to_be_bytes());
        ip[6] = proto;
        ip[7] = 64;
        ip[8..24].copy_from_slice(&src.octets());
        ip[24..40].copy_from_slice(&dst.octets());
        ip.extend_from_slice(segment);
        ip
    }

    pub fn sll2(ethertype: u16, ip: &[u8]) -> Vec<u8> {
        let mut frame = vec![0u8; 20];
        frame[0..2].copy_from_slice(&ethertype.to_be_bytes());
        frame[4..8].copy_from_slice(&1u32.to_be_bytes()); // if_index of lo
        frame[8..10].copy_from_slice(&772u16.to_be_bytes()); // ARPHRD_LOOPBACK
        frame.extend_from_slice(ip);
        frame
    }

    /// A version-1 PKTAP header (156 bytes, as macOS writes it) in front of `inner`.
    pub fn pktap(dlt: u32, flags: u32, pid: i32, comm: &str, inner: &[u8]) -> Vec<u8> {
        let mut frame = vec![0u8; 156];
        frame[0..4].copy_from_slice(&156u32.to_le_bytes());
        frame[4..8].copy_from_slice(&1u32.to_le_bytes());
        frame[8..12].copy_from_slice(&dlt.to_le_bytes());
        frame[12..15].copy_from_slice(b"en0");
        frame[36..40].copy_from_slice(&flags.to_le_bytes());
        frame[52..56].copy_from_slice(&pid.to_le_bytes());
        frame[56..56 + comm.len()].copy_from_slice(comm.as_bytes());
        frame[84..88].copy_from_slice(&pid.to_le_bytes());
        frame.extend_from_slice(inner);
        frame
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;

    const A: [u8; 4] = [10, 0, 0, 1];
    const B: [u8; 4] = [93, 184, 216, 34];

    fn addr(ip: [u8; 4], port: u16) -> SocketAddr {
        SocketAddr::from((ip, port))
    }

    fn whole(link: LinkType, frame: &[u8]) -> Decoded {
        decode(link, frame, frame.len() as u32)
    }

    fn tcp_v4(payload: usize) -> Vec<u8> {
        ipv4(A, B, IPPROTO_TCP, &tcp_segment(40000, 443, 1000, TcpHeader::ACK, payload))
    }

    fn expected_tcp_v4(payload: u32) -> Packet {
        Packet {
            proto: Proto::Tcp,
            src: addr(A, 40000),
            dst: addr(B, 443),
            payload,
            tcp: Some(TcpHeader { seq: 1000, ack: 7, flags: TcpHeader::ACK }),
            process: None,
        }
    }

    fn ethernet(ethertype: u16, ip: &[u8]) -> Vec<u8> {
        let mut frame = vec![0xaa; 12];
        frame.extend_from_slice(&ethertype.to_be_bytes());
        frame.extend_from_slice(ip);
        frame
    }

    #[test]
    fn every_link_type_yields_the_same_segment() {
        let ip = tcp_v4(100);
        let mut vlan = vec![0xaa; 12];
        vlan.extend_from_slice(&[0x81, 0x00, 0x00, 0x05, 0x08, 0x00]);
        vlan.extend_from_slice(&ip);
        let mut sll = vec![0u8; 16];
        sll[14..16].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        sll.extend_from_slice(&ip);
        let null_le = [&2u32.to_le_bytes()[..], &ip].concat();
        let null_be = [&2u32.to_be_bytes()[..], &ip].concat();
        let frames = [
            (LinkType::Raw, ip.clone()),
            (LinkType::Ethernet, ethernet(ETHERTYPE_IPV4, &ip)),
            (LinkType::Ethernet, vlan),
            (LinkType::LinuxSll, sll),
            (LinkType::LinuxSll2, sll2(ETHERTYPE_IPV4, &ip)),
            (LinkType::Null, null_le),
            (LinkType::Null, null_be.clone()),
            (LinkType::Loop, null_be),
        ];
        for (link, frame) in frames {
            assert_eq!(whole(link, &frame), Ok(Some(expected_tcp_v4(100))), "{link:?}");
        }
    }

    #[test]
    fn payload_comes_from_length_fields_not_from_the_capture() {
        let frame = sll2(ETHERTYPE_IPV4, &tcp_v4(1400));
        // Only the headers were captured (snaplen), the wire had all of it.
        let got = decode(LinkType::LinuxSll2, &frame[..80], frame.len() as u32);
        assert_eq!(got, Ok(Some(expected_tcp_v4(1400))));
        // Ethernet pads short frames: the IP length, not the frame, bounds the payload.
        let mut padded = ethernet(ETHERTYPE_IPV4, &tcp_v4(2));
        padded.resize(60, 0);
        assert_eq!(whole(LinkType::Ethernet, &padded), Ok(Some(expected_tcp_v4(2))));
    }

    #[test]
    fn a_zero_ip_length_means_the_rest_of_the_frame() {
        let mut ip = tcp_v4(70_000 - 40);
        ip[2..4].copy_from_slice(&[0, 0]); // BIG TCP super-packet
        assert_eq!(whole(LinkType::Raw, &ip), Ok(Some(expected_tcp_v4(70_000 - 40))));
    }

    #[test]
    fn ipv6_with_extension_headers() {
        let (src, dst) = ("2001:db8::1".parse().unwrap(), "2001:db8::2".parse().unwrap());
        let udp = udp_segment(5353, 53, 33);
        let mut hop_by_hop = vec![IPPROTO_UDP, 0, 0, 0, 0, 0, 0, 0];
        hop_by_hop.extend_from_slice(&udp);
        let mut fragment_header = vec![0u8, 0, 0, 1, 0, 0, 0, 9]; // first fragment, next: hop-by-hop
        fragment_header.extend_from_slice(&hop_by_hop);
        let ip = ipv6(src, dst, 44, &fragment_header);
        let expected = Packet {
            proto: Proto::Udp,
            src: SocketAddr::new(IpAddr::V6(src), 5353),
            dst: SocketAddr::new(IpAddr::V6(dst), 53),
            payload: 33,
            tcp: None,
            process: None,
        };
        assert_eq!(whole(LinkType::Raw, &ip), Ok(Some(expected)));
        let later_fragment = ipv6(src, dst, 44, &[IPPROTO_UDP, 0, 0, 0x08, 0, 0, 0, 9, 1, 2, 3]);
        assert_eq!(whole(LinkType::Raw, &later_fragment), Ok(None));
    }

    #[test]
    fn ipv4_mapped_ipv6_addresses_are_ipv4() {
        let mapped = Ipv4Addr::new(127, 0, 0, 1).to_ipv6_mapped();
        let ip = ipv6(mapped, mapped, IPPROTO_TCP, &tcp_segment(1, 2, 0, TcpHeader::SYN, 0));
        let packet = whole(LinkType::Raw, &ip).unwrap().unwrap();
        assert_eq!(packet.src, "127.0.0.1:1".parse().unwrap());
    }

    #[test]
    fn pktap_names_the_process_and_direction() {
        let inner = ethernet(ETHERTYPE_IPV4, &tcp_v4(5));
        let frame = pktap(1, 0x2, 4242, "curl", &inner);
        let mut expected = expected_tcp_v4(5);
        expected.process =
            Some(Box::new(PacketProcess { pid: 4242, comm: "curl".into(), direction: Direction::Out }));
        assert_eq!(whole(LinkType::Pktap, &frame), Ok(Some(expected.clone())));

        // lo0 packets come as DLT_NULL inside PKTAP, with the AF in host order.
        let inner = [&2u32.to_le_bytes()[..], &tcp_v4(5)].concat();
        let frame = pktap(0, 0x1, 4242, "curl", &inner);
        expected.process.as_mut().unwrap().direction = Direction::In;
        assert_eq!(whole(LinkType::Pktap, &frame), Ok(Some(expected)));

        // No pid, or no direction: no process, never a guess.
        for (flags, pid) in [(0x2, -1), (0x0, 4242)] {
            let frame = pktap(1, flags, pid, "", &ethernet(ETHERTYPE_IPV4, &tcp_v4(5)));
            assert_eq!(whole(LinkType::Pktap, &frame), Ok(Some(expected_tcp_v4(5))), "{flags} {pid}");
        }
    }

    #[test]
    fn pktap_v2_header() {
        let mut header = vec![0u8; 40];
        header[0] = 40 + 17;
        header[4] = 40; // pth_comm_offset
        header[6..8].copy_from_slice(&12u16.to_le_bytes()); // DLT_RAW
        header[28..32].copy_from_slice(&77i32.to_le_bytes());
        header[36..40].copy_from_slice(&(0x8_0000u32 | 0x2).to_le_bytes());
        let mut comm = b"Safari".to_vec();
        comm.resize(17, 0);
        let frame = [header, comm, tcp_v4(9)].concat();
        let packet = whole(LinkType::Pktap, &frame).unwrap().unwrap();
        let process = packet.process.unwrap();
        assert_eq!((process.pid, process.comm.as_str(), process.direction), (77, "Safari", Direction::Out));
    }

    #[test]
    fn other_protocols_are_skipped_quietly() {
        let arp = ethernet(0x0806, &[0u8; 28]);
        let icmp = ipv4(A, B, 1, &[8, 0, 0, 0, 0, 0, 0, 0]);
        let mut later_fragment = tcp_v4(10);
        later_fragment[6..8].copy_from_slice(&0x0010u16.to_be_bytes());
        assert_eq!(whole(LinkType::Ethernet, &arp), Ok(None));
        assert_eq!(whole(LinkType::Raw, &icmp), Ok(None));
        assert_eq!(whole(LinkType::Raw, &later_fragment), Ok(None));
        assert_eq!(whole(LinkType::Null, &[99, 0, 0, 0, 0x45]), Ok(None));
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let frames = [
            (LinkType::LinuxSll2, sll2(ETHERTYPE_IPV4, &tcp_v4(0))),
            (
                LinkType::LinuxSll2,
                sll2(
                    ETHERTYPE_IPV6,
                    &ipv6(Ipv6Addr::LOCALHOST, Ipv6Addr::LOCALHOST, IPPROTO_UDP, &udp_segment(1, 2, 0)),
                ),
            ),
            (LinkType::Pktap, pktap(1, 0x2, 1, "x", &ethernet(ETHERTYPE_IPV4, &tcp_v4(0)))),
        ];
        // The capture kept less than the wire carried.
        for (link, frame) in frames {
            for cut in 0..frame.len() {
                assert_eq!(
                    decode(link, &frame[..cut], frame.len() as u32),
                    Err(DecodeError::Truncated),
                    "{link:?} cut at {cut}"
                );
            }
        }
    }

    #[test]
    fn malformed_headers_are_errors() {
        let mut short_ihl = tcp_v4(0);
        short_ihl[0] = 0x44;
        let mut too_long = tcp_v4(0);
        too_long[2..4].copy_from_slice(&1000u16.to_be_bytes());
        let mut short_tcp = tcp_v4(0);
        short_tcp[20 + 12] = 4 << 4;
        let mut tcp_past_ip = tcp_v4(0);
        tcp_past_ip[20 + 12] = 15 << 4;
        let mut bad_udp = ipv4(A, B, IPPROTO_UDP, &udp_segment(1, 2, 4));
        bad_udp[20 + 4..20 + 6].copy_from_slice(&3u16.to_be_bytes());
        let mut wrong_version = sll2(ETHERTYPE_IPV6, &tcp_v4(0));
        wrong_version[20] = 0x45;
        let mut short_pktap = pktap(1, 0, 1, "x", &[]);
        short_pktap[0..4].copy_from_slice(&20u32.to_le_bytes());
        let nested_pktap = pktap(149, 0x2, 1, "x", &pktap(1, 0x2, 1, "x", &[]));
        let cases = [
            (LinkType::Raw, short_ihl),
            (LinkType::Raw, too_long),
            (LinkType::Raw, short_tcp),
            (LinkType::Raw, tcp_past_ip),
            (LinkType::Raw, bad_udp),
            (LinkType::LinuxSll2, wrong_version),
            (LinkType::Pktap, short_pktap),
            (LinkType::Pktap, nested_pktap),
        ];
        for (i, (link, frame)) in cases.into_iter().enumerate() {
            assert!(matches!(whole(link, &frame), Err(DecodeError::Malformed(_))), "case {i}");
        }
    }
}
