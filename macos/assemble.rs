//! Connection assembly from decoded packets, in user space and without I/O: which end is
//! local, payload bytes per direction (retransmissions once), TCP state from SYN/FIN/RST,
//! and the lifecycle events the model expects. Time is passed in.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::decode::{Direction, Packet, TcpHeader};
use crate::collector::{Conn, ConnEvent, EventKind, Family, Filters, Proto, TcpState};

/// As many connections as the eBPF collector's table holds.
const MAX_FLOWS: usize = 65_536;
/// A silent TCP connection may be one whose close the capture missed; after this long it
/// leaves the table.
const TCP_IDLE: Duration = Duration::from_secs(600);
/// How long a closed connection's stray packets (the last ACK, a retransmitted FIN) are
/// recognised and ignored, as TIME_WAIT does.
const CLOSED_LINGER: Duration = Duration::from_secs(60);
/// Lookups of a connection's process before it is left unknown: the first may come before
/// the server accept()ed the socket.
const MAX_LOOKUPS: u8 = 3;

/// A connection as one local socket sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Endpoints {
    pub proto: Proto,
    pub local: SocketAddr,
    pub remote: SocketAddr,
}

/// Bytes of one direction of a TCP stream, counted by how far its sequence numbers
/// advance: a retransmission adds nothing, and a segment the capture lost is counted by
/// the next one that goes past it.
#[derive(Clone, Copy, Debug, Default)]
struct Stream {
    /// Sequence number just past the highest payload byte seen.
    highest: Option<u32>,
}

impl Stream {
    /// The new payload bytes `tcp` carries.
    fn advance(&mut self, tcp: &TcpHeader, payload: u32) -> u64 {
        let syn = tcp.has(TcpHeader::SYN);
        // Only a SYN or a segment with data says where data starts: a keep-alive or a
        // zero-window probe sits one byte before it.
        if payload == 0 && !syn {
            return 0;
        }
        let start = tcp.seq.wrapping_add(u32::from(syn));
        let highest = *self.highest.get_or_insert(start);
        let end = start.wrapping_add(payload);
        // Sequence space wraps: `end` is ahead when the difference is positive as an i32.
        let ahead = end.wrapping_sub(highest) as i32;
        if ahead <= 0 {
            return 0;
        }
        self.highest = Some(end);
        ahead as u64
    }
}

#[derive(Debug)]
struct Flow {
    conn: Conn,
    sent: Stream,
    received: Stream,
    /// Sequence number the peer acknowledges once it has our FIN.
    fin_acked_at: Option<u32>,
    last_seen: Duration,
    closed_at: Option<Duration>,
    lookups: u8,
}

/// Every connection the packets showed, keyed by the local socket's view of it.
#[derive(Debug)]
pub struct Assembler {
    local: HashSet<IpAddr>,
    filters: Filters,
    flows: HashMap<Endpoints, Flow>,
    /// Lifecycle events since the last sample, oldest first.
    events: Vec<ConnEvent>,
    next_id: u64,
    untracked: u64,
}

impl Assembler {
    /// `local` lists this host's addresses (loopback addresses are always local).
    pub fn new(local: HashSet<IpAddr>, filters: Filters) -> Assembler {
        Assembler { local, filters, flows: HashMap::new(), events: Vec::new(), next_id: 1, untracked: 0 }
    }

    pub fn set_local_addresses(&mut self, local: HashSet<IpAddr>) {
        self.local = local;
    }

    fn is_local(&self, ip: IpAddr) -> bool {
        ip.is_loopback() || self.local.contains(&ip)
    }

    /// Packets that could not start a connection because the table was full.
    pub fn untracked(&self) -> u64 {
        self.untracked
    }

    /// Counts one packet seen at `now`.
    pub fn packet(&mut self, packet: &Packet, now: Duration) {
        if !self.wanted(packet) {
            return;
        }
        let outgoing = Endpoints { proto: packet.proto, local: packet.src, remote: packet.dst };
        let incoming = Endpoints { proto: packet.proto, local: packet.dst, remote: packet.src };
        let hint = packet.process.as_ref().map(|p| p.direction);
        // Between two local sockets (loopback) the one packet is sent by one and received by
        // the other: each gets its own row, as each is its own socket.
        let sides = match (self.is_local(packet.src.ip()), self.is_local(packet.dst.ip()), hint) {
            (true, true, _) => [Some((outgoing, Direction::Out)), Some((incoming, Direction::In))],
            (true, false, _) | (false, false, Some(Direction::Out)) => {
                [Some((outgoing, Direction::Out)), None]
            }
            (false, true, _) | (false, false, Some(Direction::In)) => [Some((incoming, Direction::In)), None],
            (false, false, None) => return, // forwarded or bridged: no local socket
        };
        for (endpoints, direction) in sides.into_iter().flatten() {
            let Some(flow) = self.flow(endpoints, packet, now) else { continue };
            flow.last_seen = now;
            if flow.conn.pid.is_none() {
                if let Some(process) = packet.process.as_ref().filter(|p| p.direction == direction) {
                    flow.conn.pid = Some(process.pid);
                    flow.conn.comm.clone_from(&process.comm);
                }
            }
            let (stream, total) = match direction {
                Direction::Out => (&mut flow.sent, &mut flow.conn.tx_bytes),
                Direction::In => (&mut flow.received, &mut flow.conn.rx_bytes),
            };
            match &packet.tcp {
                Some(tcp) => {
                    *total += stream.advance(tcp, packet.payload);
                    let change = track_state(flow, direction, tcp, packet.payload);
                    if let Some((old, new)) = change {
                        self.record_state(endpoints, old, new, now);
                    }
                }
                None => *total += u64::from(packet.payload),
            }
        }
    }

    fn wanted(&self, packet: &Packet) -> bool {
        let Filters { port, family, proto, .. } = &self.filters;
        let proto_ok = proto.is_none_or(|p| packet.proto == p);
        let port_ok = port.is_none_or(|p| packet.src.port() == p || packet.dst.port() == p);
        let family_ok = match family {
            None => true,
            Some(Family::V4) => packet.src.is_ipv4(),
            Some(Family::V6) => packet.src.is_ipv6(),
        };
        proto_ok && port_ok && family_ok
    }

    /// The flow `packet` belongs to, new if need be; `None` for a closed connection's
    /// stragglers and when the table is full.
    fn flow(&mut self, endpoints: Endpoints, packet: &Packet, now: Duration) -> Option<&mut Flow> {
        let opens = packet.tcp.is_some_and(|t| t.has(TcpHeader::SYN) && !t.has(TcpHeader::ACK));
        match self.flows.get(&endpoints) {
            // A new connection may reuse the ports of one that closed.
            Some(flow) if flow.closed_at.is_some() && !opens => return None,
            Some(flow) if flow.closed_at.is_none() => return self.flows.get_mut(&endpoints),
            None if self.flows.len() >= MAX_FLOWS => {
                self.untracked += 1;
                return None;
            }
            _ => {}
        }
        // Seen from its first SYN, a connection goes through its states from CLOSE; met in
        // the middle, it is simply established.
        let state = match packet.tcp {
            None => None,
            Some(_) if opens => Some(TcpState::Close),
            Some(_) => Some(TcpState::Established),
        };
        let conn = Conn {
            id: self.next_id,
            pid: None,
            comm: String::new(),
            proto: endpoints.proto,
            local: endpoints.local,
            remote: endpoints.remote,
            state,
            tx_bytes: 0,
            rx_bytes: 0,
            netns: None,
            cgroup: None,
            health: None,
        };
        self.next_id += 1;
        let flow = Flow {
            conn,
            sent: Stream::default(),
            received: Stream::default(),
            fin_acked_at: None,
            last_seen: now,
            closed_at: None,
            lookups: 0,
        };
        self.flows.insert(endpoints, flow);
        self.flows.get_mut(&endpoints)
    }

    fn record_state(&mut self, endpoints: Endpoints, old: TcpState, new: TcpState, now: Duration) {
        let flow = self.flows.get_mut(&endpoints).expect("the flow just changed state");
        let conn = flow.conn.clone();
        self.events.push(ConnEvent { at: now, kind: EventKind::State { old, new }, conn });
        if matches!(new, TcpState::Close | TcpState::TimeWait) {
            self.close(endpoints, now);
        }
    }

    fn close(&mut self, endpoints: Endpoints, now: Duration) {
        let flow = self.flows.get_mut(&endpoints).expect("closing a known flow");
        flow.closed_at = Some(now);
        let conn = flow.conn.clone();
        self.events.push(ConnEvent { at: now, kind: EventKind::Closed, conn });
    }

    /// Ends flows that went quiet and forgets closed ones after their linger time.
    pub fn expire(&mut self, now: Duration) {
        self.flows.retain(|_, flow| flow.closed_at.is_none_or(|at| now.saturating_sub(at) < CLOSED_LINGER));
        let idle: Vec<Endpoints> = self
            .flows
            .iter()
            .filter(|(key, flow)| {
                let limit = if key.proto == Proto::Udp { self.filters.udp_idle } else { TCP_IDLE };
                flow.closed_at.is_none() && now.saturating_sub(flow.last_seen) >= limit
            })
            .map(|(key, _)| *key)
            .collect();
        for endpoints in idle {
            self.close(endpoints, now);
        }
    }

    /// Connections whose process is unknown and worth another lookup; each is offered a
    /// few times only, so a socket nobody here holds does not cost a scan every interval.
    pub fn unattributed(&mut self) -> Vec<Endpoints> {
        let mut wanted = Vec::new();
        for (endpoints, flow) in &mut self.flows {
            if flow.conn.pid.is_none() && flow.closed_at.is_none() && flow.lookups < MAX_LOOKUPS {
                flow.lookups += 1;
                wanted.push(*endpoints);
            }
        }
        wanted
    }

    /// Names the process of a connection, in its record and in its pending events.
    pub fn attribute(&mut self, endpoints: &Endpoints, pid: u32, comm: &str) {
        let Some(flow) = self.flows.get_mut(endpoints) else { return };
        let id = flow.conn.id;
        let pending = self.events.iter_mut().map(|e| &mut e.conn).filter(|c| c.id == id);
        for conn in std::iter::once(&mut flow.conn).chain(pending) {
            conn.pid = Some(pid);
            comm.clone_into(&mut conn.comm);
        }
    }

    /// The live connections and the events since the previous call, as the `Collector`
    /// trait hands them on.
    pub fn sample(&mut self) -> (Vec<Conn>, Vec<ConnEvent>) {
        let pid = self.filters.pid;
        let wanted = |conn: &Conn| pid.is_none() || conn.pid == pid;
        let conns = self
            .flows
            .values()
            .filter(|flow| flow.closed_at.is_none() && wanted(&flow.conn))
            .map(|flow| flow.conn.clone())
            .collect();
        let events = self.events.drain(..).filter(|e| wanted(&e.conn)).collect();
        (conns, events)
    }
}

/// Moves a connection's state on for one segment, seen from its local socket; returns the
/// change, if any.
fn track_state(
    flow: &mut Flow,
    direction: Direction,
    tcp: &TcpHeader,
    payload: u32,
) -> Option<(TcpState, TcpState)> {
    use TcpState::*;
    let old = flow.conn.state?;
    let has = |flag| tcp.has(flag);
    let mut new = old;
    if has(TcpHeader::RST) {
        new = Close;
    } else if has(TcpHeader::SYN) {
        new = match (direction, has(TcpHeader::ACK), old) {
            (Direction::Out, false, _) => SynSent,
            (Direction::In, false, _) => SynRecv,
            (Direction::Out, true, _) => SynRecv,
            (Direction::In, true, _) => Established,
        };
    } else {
        if matches!(old, SynSent | SynRecv) && has(TcpHeader::ACK) {
            new = Established;
        }
        let acks_our_fin = direction == Direction::In
            && has(TcpHeader::ACK)
            && flow.fin_acked_at.is_some_and(|at| tcp.ack.wrapping_sub(at) as i32 >= 0);
        if has(TcpHeader::FIN) {
            new = match (direction, new) {
                (Direction::Out, CloseWait) => LastAck,
                (Direction::Out, Established) => FinWait1,
                (Direction::In, Established) => CloseWait,
                (Direction::In, FinWait1) if acks_our_fin => TimeWait,
                (Direction::In, FinWait1) => Closing,
                (Direction::In, FinWait2) => TimeWait,
                (_, state) => state,
            };
            if direction == Direction::Out {
                // The FIN takes the sequence number after the segment's data.
                flow.fin_acked_at = Some(tcp.seq.wrapping_add(payload).wrapping_add(1));
            }
        } else if acks_our_fin {
            new = match new {
                FinWait1 => FinWait2,
                Closing => TimeWait,
                LastAck => Close,
                state => state,
            };
        }
    }
    flow.conn.state = Some(new);
    (new != old).then_some((old, new))
}

#[cfg(test)]
mod tests {
    use super::super::decode::PacketProcess;
    use super::*;

    fn process(pid: u32, comm: &str, direction: Direction) -> PacketProcess {
        PacketProcess { pid, comm: comm.into(), direction }
    }

    const ME: &str = "10.0.0.1:40000";
    const PEER: &str = "93.184.216.34:443";

    fn assembler() -> Assembler {
        Assembler::new(HashSet::from(["10.0.0.1".parse().unwrap()]), Filters::default())
    }

    fn tcp(src: &str, dst: &str, seq: u32, ack: u32, flags: u8, payload: u32) -> Packet {
        Packet {
            proto: Proto::Tcp,
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            payload,
            tcp: Some(TcpHeader { seq, ack, flags }),
            process: None,
        }
    }

    const SYN: u8 = TcpHeader::SYN;
    const ACK: u8 = TcpHeader::ACK;
    const FIN: u8 = TcpHeader::FIN;
    const RST: u8 = TcpHeader::RST;

    fn feed(asm: &mut Assembler, packets: &[Packet]) {
        for (i, p) in packets.iter().enumerate() {
            asm.packet(p, Duration::from_millis(i as u64));
        }
    }

    fn only_conn(asm: &mut Assembler) -> (Conn, Vec<ConnEvent>) {
        let (conns, events) = asm.sample();
        assert_eq!(conns.len(), 1, "{conns:?}");
        (conns[0].clone(), events)
    }

    fn steps(events: &[ConnEvent]) -> Vec<String> {
        events
            .iter()
            .map(|e| match e.kind {
                EventKind::State { old, new } => format!("{old}>{new}"),
                EventKind::Closed => "closed".into(),
            })
            .collect()
    }

    #[test]
    fn counts_payload_each_way_not_headers() {
        let mut asm = assembler();
        feed(
            &mut asm,
            &[
                tcp(ME, PEER, 100, 0, SYN, 0),
                tcp(PEER, ME, 900, 101, SYN | ACK, 0),
                tcp(ME, PEER, 101, 901, ACK, 0),
                tcp(ME, PEER, 101, 901, ACK, 1400),
                tcp(ME, PEER, 1501, 901, ACK, 600),
                tcp(PEER, ME, 901, 2101, ACK, 5),
            ],
        );
        let (conn, events) = only_conn(&mut asm);
        assert_eq!((conn.local, conn.remote), (ME.parse().unwrap(), PEER.parse().unwrap()));
        assert_eq!((conn.tx_bytes, conn.rx_bytes, conn.state), (2000, 5, Some(TcpState::Established)));
        assert_eq!(steps(&events), ["CLOSE>SYN_SENT", "SYN_SENT>ESTABLISHED"]);
    }

    #[test]
    fn a_retransmission_counts_once() {
        let mut asm = assembler();
        feed(
            &mut asm,
            &[
                tcp(ME, PEER, 1, 0, ACK, 1000),
                tcp(ME, PEER, 1, 0, ACK, 1000),    // the same segment again
                tcp(ME, PEER, 501, 0, ACK, 1000),  // overlaps half of it
                tcp(ME, PEER, 3001, 0, ACK, 500),  // after a segment the capture lost
                tcp(ME, PEER, 1501, 0, ACK, 1500), // the lost segment, retransmitted
            ],
        );
        assert_eq!(only_conn(&mut asm).0.tx_bytes, 3500);
    }

    #[test]
    fn sequence_numbers_wrap_around() {
        let mut asm = assembler();
        let near_end = u32::MAX - 99;
        feed(
            &mut asm,
            &[
                tcp(PEER, ME, near_end, 0, ACK, 100),
                tcp(PEER, ME, 0, 0, ACK, 100),
                tcp(PEER, ME, near_end, 0, ACK, 100), // a late retransmission from before the wrap
            ],
        );
        assert_eq!(only_conn(&mut asm).0.rx_bytes, 200);
    }

    #[test]
    fn keepalives_and_zero_window_probes_add_nothing() {
        let mut asm = assembler();
        feed(
            &mut asm,
            &[
                tcp(ME, PEER, 4999, 0, ACK, 0), // keep-alive before any data was seen
                tcp(ME, PEER, 5000, 0, ACK, 10),
                tcp(ME, PEER, 5009, 0, ACK, 1), // keep-alive with its one garbage byte
            ],
        );
        assert_eq!(only_conn(&mut asm).0.tx_bytes, 10);
    }

    #[test]
    fn fin_handshake_closes_both_ends_of_a_loopback_connection() {
        let client = "127.0.0.1:5000";
        let server = "127.0.0.1:80";
        let mut asm = assembler();
        feed(
            &mut asm,
            &[
                tcp(client, server, 10, 0, SYN, 0),
                tcp(server, client, 50, 11, SYN | ACK, 0),
                tcp(client, server, 11, 51, ACK, 0),
                tcp(client, server, 11, 51, ACK | FIN, 10),
                tcp(server, client, 51, 22, ACK, 3),
                tcp(server, client, 54, 22, ACK | FIN, 0),
                tcp(client, server, 22, 55, ACK, 0),
                tcp(client, server, 22, 55, ACK, 0), // a straggler after the close
            ],
        );
        let (conns, events) = asm.sample();
        assert!(conns.is_empty(), "{conns:?}");
        let closed: HashMap<String, &Conn> = events
            .iter()
            .filter(|e| e.kind == EventKind::Closed)
            .map(|e| (e.conn.local.to_string(), &e.conn))
            .collect();
        assert_eq!((closed[client].tx_bytes, closed[client].rx_bytes), (10, 3));
        assert_eq!((closed[server].tx_bytes, closed[server].rx_bytes), (3, 10));
        let of = |local: &str| {
            let mine: Vec<ConnEvent> =
                events.iter().filter(|e| e.conn.local.to_string() == local).cloned().collect();
            steps(&mine)
        };
        assert_eq!(
            of(client),
            [
                "CLOSE>SYN_SENT",
                "SYN_SENT>ESTABLISHED",
                "ESTABLISHED>FIN_WAIT1",
                "FIN_WAIT1>FIN_WAIT2",
                "FIN_WAIT2>TIME_WAIT",
                "closed"
            ]
        );
        assert_eq!(
            of(server),
            [
                "CLOSE>SYN_RECV",
                "SYN_RECV>ESTABLISHED",
                "ESTABLISHED>CLOSE_WAIT",
                "CLOSE_WAIT>LAST_ACK",
                "LAST_ACK>CLOSE",
                "closed"
            ]
        );
    }

    #[test]
    fn rst_closes_and_a_new_syn_reopens() {
        let mut asm = assembler();
        feed(
            &mut asm,
            &[tcp(ME, PEER, 1, 0, ACK, 7), tcp(PEER, ME, 1, 0, RST, 0), tcp(ME, PEER, 9, 0, ACK, 1)],
        );
        let (conns, events) = asm.sample();
        assert!(conns.is_empty());
        assert_eq!(steps(&events), ["ESTABLISHED>CLOSE", "closed"]);
        assert_eq!(events[1].conn.tx_bytes, 7);
        feed(&mut asm, &[tcp(ME, PEER, 500, 0, SYN, 0)]);
        let (conn, _) = only_conn(&mut asm);
        assert_ne!(conn.id, events[1].conn.id);
        assert_eq!(conn.state, Some(TcpState::SynSent));
    }

    #[test]
    fn udp_counts_every_datagram_and_expires_when_idle() {
        let mut asm = assembler();
        let datagram = |src: &str, dst: &str, payload| Packet {
            proto: Proto::Udp,
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            payload,
            tcp: None,
            process: None,
        };
        feed(&mut asm, &[datagram(ME, "9.9.9.9:53", 40), datagram("9.9.9.9:53", ME, 200)]);
        let (conn, _) = only_conn(&mut asm);
        assert_eq!((conn.proto, conn.state, conn.tx_bytes, conn.rx_bytes), (Proto::Udp, None, 40, 200));
        asm.expire(Filters::default().udp_idle + Duration::from_secs(1));
        let (conns, events) = asm.sample();
        assert!(conns.is_empty());
        assert_eq!(steps(&events), ["closed"]);
    }

    #[test]
    fn traffic_between_two_other_hosts_is_ignored() {
        let mut asm = assembler();
        feed(&mut asm, &[tcp("10.9.9.9:1", PEER, 1, 0, ACK, 100)]);
        assert_eq!(asm.sample(), (vec![], vec![]));
    }

    #[test]
    fn pktap_names_the_process_of_the_socket_it_belongs_to() {
        let mut asm = assembler();
        let mut packet = tcp("127.0.0.1:5000", "127.0.0.1:80", 1, 0, ACK, 4);
        packet.process = Some(process(321, "nc", Direction::In));
        feed(&mut asm, &[packet]);
        let (conns, _) = asm.sample();
        let by_local: HashMap<String, Option<u32>> =
            conns.iter().map(|c| (c.local.to_string(), c.pid)).collect();
        assert_eq!(by_local["127.0.0.1:80"], Some(321));
        assert_eq!(by_local["127.0.0.1:5000"], None);
    }

    #[test]
    fn attribution_reaches_pending_events_and_stops_after_a_few_tries() {
        let mut asm = assembler();
        feed(&mut asm, &[tcp(ME, PEER, 1, 0, SYN, 0)]);
        let key = Endpoints { proto: Proto::Tcp, local: ME.parse().unwrap(), remote: PEER.parse().unwrap() };
        assert_eq!(asm.unattributed(), [key]);
        asm.unattributed();
        asm.unattributed();
        assert_eq!(asm.unattributed(), []);
        asm.attribute(&key, 42, "curl");
        let (conn, events) = only_conn(&mut asm);
        assert_eq!((conn.pid, conn.comm.as_str()), (Some(42), "curl"));
        assert_eq!(events[0].conn.pid, Some(42));
    }

    #[test]
    fn filters_drop_packets_early_and_unknown_pids_late() {
        let mut asm = Assembler::new(
            HashSet::new(),
            Filters { port: Some(443), family: Some(Family::V4), ..Filters::default() },
        );
        feed(
            &mut asm,
            &[
                tcp("127.0.0.1:1", "127.0.0.1:443", 1, 0, ACK, 1),
                tcp("127.0.0.1:1", "127.0.0.1:80", 1, 0, ACK, 1),
                tcp("[::1]:1", "[::1]:443", 1, 0, ACK, 1),
            ],
        );
        assert_eq!(asm.sample().0.len(), 2);
        let mut asm = Assembler::new(HashSet::new(), Filters { pid: Some(42), ..Filters::default() });
        feed(&mut asm, &[tcp("127.0.0.1:1", "127.0.0.1:443", 1, 0, ACK, 1)]);
        assert_eq!(asm.sample().0.len(), 0);
    }

    #[test]
    fn a_full_table_counts_what_it_refused() {
        let mut asm = assembler();
        for port in 0..=MAX_FLOWS as u32 {
            let src = SocketAddr::from(([10, 0, 0, 1], (port % 60_000) as u16));
            let dst = SocketAddr::from(([93, 184, 216, 34], 1000 + (port / 60_000) as u16));
            asm.packet(&tcp(&src.to_string(), &dst.to_string(), 1, 0, ACK, 1), Duration::ZERO);
        }
        assert_eq!(asm.untracked(), 1);
    }
}
