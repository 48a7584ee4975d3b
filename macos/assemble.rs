//! Connection assembly from decoded packets, in user space and without I/O: which end is
//! local, payload bytes per direction counted once the other side acknowledged them, TCP
//! state from SYN/FIN/RST, health estimated from sequence numbers and timing, the kernel's
//! socket list where there is one, and the lifecycle events the model expects. Time is
//! passed in.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::decode::{Direction, Packet, TcpHeader};
use super::table::{FlowTable, Limits};
use crate::collector::{
    Conn, ConnEvent, EventKind, Family, Filters, Handshake, Proto, Rtt, TcpHealth, TcpState,
};

/// As many connections as the eBPF collector's table holds; no remote address and no local
/// port may take more than half of it, and a quarter as many wait for confirmation.
const LIMITS: Limits =
    Limits { confirmed: 65_536, per_remote: 32_768, per_local_port: 32_768, pending: 16_384 };
/// A silent TCP connection may be one whose close the capture missed; after this long it
/// leaves the table (unless the kernel still lists it).
const TCP_IDLE: Duration = Duration::from_secs(600);
/// How long a flow may wait for the other side's acknowledgement before it is forgotten.
const PENDING_IDLE: Duration = Duration::from_secs(10);
/// How long a closed connection's stray packets (the last ACK, a retransmitted FIN) are
/// recognised and ignored, as TIME_WAIT does.
const CLOSED_LINGER: Duration = Duration::from_secs(60);
/// How long the kernel's socket list may go without a connection before it is closed: the
/// capture hands packets on up to a read timeout (and a batch's gathering) late, so a list
/// read just after a close may be ahead of the packets that tell it.
const UNLISTED_GRACE: Duration = Duration::from_secs(1);
/// How long a connection in TIME_WAIT waits for its acknowledgement of the other side's FIN,
/// which counts the bytes that came before it.
const FINAL_ACK_WAIT: Duration = Duration::from_secs(1);
/// Lookups of a connection's process before it is left unknown: the first may come before
/// the server accept()ed the socket.
const MAX_LOOKUPS: u8 = 3;
/// How long a connection the packets confirmed may wait for the kernel's socket list to
/// show it, where there is one: its close may still be in the capture's queue when a list
/// read misses it.
const LIST_CONFIRM_WAIT: Duration = Duration::from_secs(1);

/// A connection as one local socket sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoints {
    pub proto: Proto,
    pub local: SocketAddr,
    pub remote: SocketAddr,
}

/// Hashed for each side of every packet: three words, where the derived hash would feed the
/// hasher each field and each address's length apart. Equal endpoints hash alike (the
/// fields of an IPv6 address left out only make more of them collide).
impl Hash for Endpoints {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let ip = |addr: &SocketAddr| match addr.ip() {
            IpAddr::V4(ip) => u128::from(ip.to_bits()),
            IpAddr::V6(ip) => ip.to_bits(),
        };
        state.write_u128(ip(&self.local));
        state.write_u128(ip(&self.remote));
        let proto = matches!(self.proto, Proto::Udp);
        state.write_u64(
            u64::from(self.local.port()) << 17 | u64::from(self.remote.port()) << 1 | u64::from(proto),
        );
    }
}

/// The kernel's TCP sockets by (local, remote), with their states.
pub type ListedSockets = HashMap<(SocketAddr, SocketAddr), TcpState>;

/// Whether sequence number `a` comes after `b`: sequence space wraps, so `a` is ahead when
/// the difference is positive as an i32.
fn ahead(a: u32, b: u32) -> bool {
    a.wrapping_sub(b) as i32 > 0
}

/// One direction of a TCP stream. Its bytes count when the other side acknowledges them,
/// and never beyond what this side was seen to send: a forged segment, or one the
/// receiver dropped, is never acknowledged; a retransmission is acknowledged once.
#[derive(Clone, Copy, Debug, Default)]
struct Stream {
    /// Every sequence number before this one is acknowledged and counted.
    acked: Option<u32>,
    /// Just past the highest sequence number this side was seen to use.
    end: Option<u32>,
    /// Where this side's SYN and FIN sit: each takes a sequence number but is no payload.
    syn: Option<u32>,
    fin: Option<u32>,
    /// The SYN answered the other side's (a SYN-ACK): acknowledging it ends a handshake.
    answers_syn: bool,
    /// The segment timed for an RTT sample: where it ends, and when it crossed the wire.
    timed: Option<(u32, Duration)>,
}

/// What one acknowledgement covered of a stream.
#[derive(Clone, Copy, Debug, Default)]
struct Covered {
    payload: u64,
    /// It acknowledged payload, a FIN or a SYN-ACK: the connection is real, not one
    /// side's forgery nor a half-open SYN.
    confirms: bool,
    /// From the timed segment to this acknowledgement: a round trip, seen from this
    /// stream's sender.
    round_trip: Option<Duration>,
}

impl Stream {
    /// Notes the sequence numbers a segment of this side takes, seen at `wire`; true for a
    /// retransmission: a segment taking sequence numbers this side was seen to use before
    /// (but a keep-alive, which repeats the last acknowledged byte on purpose).
    fn send(&mut self, tcp: &TcpHeader, payload: u32, wire: Duration) -> bool {
        let (syn, fin) = (tcp.has(TcpHeader::SYN), tcp.has(TcpHeader::FIN));
        let keepalive = !syn && !fin && payload <= 1 && self.acked == Some(tcp.seq.wrapping_add(1));
        let takes_numbers = payload > 0 || syn || fin;
        let repeated = takes_numbers && !keepalive && self.end.is_some_and(|highest| ahead(highest, tcp.seq));
        if syn {
            self.syn = Some(tcp.seq);
            self.answers_syn = tcp.has(TcpHeader::ACK);
            self.acked.get_or_insert(tcp.seq);
        }
        let data_end = tcp.seq.wrapping_add(u32::from(syn)).wrapping_add(payload);
        if fin {
            self.fin = Some(data_end);
        }
        let end = data_end.wrapping_add(u32::from(fin));
        // Karn's rule: an acknowledgement after a retransmission may answer either copy.
        if repeated {
            self.timed = None;
        } else if takes_numbers && self.timed.is_none() {
            self.timed = Some((end, wire));
        }
        if self.end.is_none_or(|highest| ahead(end, highest)) {
            self.end = Some(end);
        }
        repeated
    }

    /// Takes the other side's acknowledgement number, seen at `wire`.
    fn acknowledge(&mut self, ack: u32, wire: Duration) -> Covered {
        let Some(acked) = self.acked else {
            // Met mid-stream: the count starts where the other side's receipt stood.
            self.acked = Some(ack);
            return Covered::default();
        };
        let Some(end) = self.end else { return Covered::default() };
        let upto = if ahead(ack, end) { end } else { ack };
        if !ahead(upto, acked) {
            return Covered::default();
        }
        self.acked = Some(upto);
        let covers = |at: Option<u32>| at.is_some_and(|at| at.wrapping_sub(acked) < upto.wrapping_sub(acked));
        let (syn, fin) = (covers(self.syn), covers(self.fin));
        let payload = upto.wrapping_sub(acked) - u32::from(syn) - u32::from(fin);
        let round_trip = match self.timed {
            Some((end, sent)) if !ahead(end, upto) => {
                self.timed = None;
                Some(wire.saturating_sub(sent))
            }
            _ => None,
        };
        Covered {
            payload: u64::from(payload),
            confirms: payload > 0 || fin || (syn && self.answers_syn),
            round_trip,
        }
    }

    fn fin_acknowledged(&self) -> bool {
        self.fin.zip(self.acked).is_some_and(|(fin, acked)| ahead(acked, fin))
    }
}

#[derive(Debug)]
struct Flow {
    conn: Conn,
    sent: Stream,
    received: Stream,
    last_seen: Duration,
    closed_at: Option<Duration>,
    /// Since when the kernel's socket list has been without it.
    unlisted_since: Option<Duration>,
    /// Since when a flow the packets confirmed waits for the kernel's socket list to show it.
    awaits_list_since: Option<Duration>,
    /// The events of a flow not confirmed yet, handed on when it is.
    held: Vec<ConnEvent>,
    lookups: u8,
    /// When its handshake began (its first SYN sent or received), on the wire's clock.
    handshake_from: Option<Duration>,
}

impl Flow {
    /// Over: closed by a reset or the last ACK, or in TIME_WAIT once it acknowledged the
    /// other side's FIN (and so all the bytes before it).
    fn is_over(&self) -> bool {
        match self.conn.state {
            Some(TcpState::Close) => true,
            Some(TcpState::TimeWait) => self.received.fin_acknowledged(),
            _ => false,
        }
    }

    /// Estimates health from one segment this connection's `direction` end saw: a reset,
    /// a retransmission, a round trip of this end's own data, a state change.
    fn note_health(&mut self, segment: Segment, change: Option<(TcpState, TcpState)>, wire: Duration) {
        let Some(health) = self.conn.health.as_mut() else { return };
        let add = |count: &mut Option<u32>| *count = Some(count.unwrap_or(0) + 1);
        if segment.reset {
            add(match segment.direction {
                Direction::Out => &mut health.resets_sent,
                Direction::In => &mut health.resets_received,
            });
        }
        if segment.retransmitted && segment.direction == Direction::Out {
            health.retrans = Some(health.retrans.unwrap_or(0) + 1);
        }
        if let (Some(round_trip), Direction::In) = (segment.round_trip, segment.direction) {
            health.rtt = Some(smoothed(health.rtt, round_trip));
        }
        use TcpState::*;
        match change {
            Some((Close, SynSent | SynRecv)) => self.handshake_from = Some(wire),
            Some((SynSent | SynRecv, new @ (Established | Close))) => {
                if let Some(from) = self.handshake_from.take() {
                    let failed = new == Close;
                    health.connect = Some(Handshake { took: wire.saturating_sub(from), failed });
                }
            }
            _ => {}
        }
    }
}

/// What one segment told of a connection's health, seen from one end.
#[derive(Clone, Copy, Debug)]
struct Segment {
    direction: Direction,
    reset: bool,
    /// This end sent it before.
    retransmitted: bool,
    /// It acknowledged the segment being timed: one round trip.
    round_trip: Option<Duration>,
}

/// RTT smoothed as RFC 6298 (and the kernel) does: the mean deviation first, from the old
/// mean, then the mean; the minimum is the connection's.
fn smoothed(rtt: Option<Rtt>, sample: Duration) -> Rtt {
    let sample = u32::try_from(sample.as_micros()).unwrap_or(u32::MAX);
    let Some(old) = rtt else {
        return Rtt { smoothed_us: sample, variation_us: sample / 2, min_us: sample };
    };
    let weigh =
        |old: u32, weight: u64, new: u32| ((u64::from(old) * weight + u64::from(new)) / (weight + 1)) as u32;
    Rtt {
        variation_us: weigh(old.variation_us, 3, old.smoothed_us.abs_diff(sample)),
        smoothed_us: weigh(old.smoothed_us, 7, sample),
        min_us: old.min_us.min(sample),
    }
}

/// Every connection the packets showed, keyed by the local socket's view of it.
#[derive(Debug)]
pub struct Assembler {
    local: HashSet<IpAddr>,
    filters: Filters,
    table: FlowTable<Flow>,
    /// Lifecycle events since the last sample, oldest first.
    events: Vec<ConnEvent>,
    next_id: u64,
    /// Established sockets the kernel listed, the packets had not shown, at the last check:
    /// still listed at the next, they are adopted.
    listed_unknown: HashSet<Endpoints>,
    /// There is a socket list (`verify_with_socket_list`): a connection counts once it shows
    /// there, so that packets forged in both directions make none.
    list_confirms: bool,
    /// Connections the packets confirmed that the socket list never showed.
    never_listed: u64,
}

impl Assembler {
    /// `local` lists this host's addresses (loopback addresses are always local).
    pub fn new(local: HashSet<IpAddr>, filters: Filters) -> Assembler {
        Assembler {
            local,
            filters,
            table: FlowTable::new(LIMITS),
            events: Vec::new(),
            next_id: 1,
            listed_unknown: HashSet::new(),
            list_confirms: false,
            never_listed: 0,
        }
    }

    /// From now on a new TCP connection waits for the kernel's socket list (`verify`,
    /// `reconcile`) to show it before it is shown or its bytes are: packets forged in both
    /// directions, a handshake and acknowledged data included, never are. A refused connect
    /// is shown at once (its socket is gone when the reset arrives; it carries no bytes).
    pub fn verify_with_socket_list(&mut self) {
        self.list_confirms = true;
    }

    /// Whether a connection waits for the socket list.
    pub fn awaits_socket_list(&self) -> bool {
        self.awaiting().next().is_some()
    }

    fn awaiting(&self) -> impl Iterator<Item = &Endpoints> {
        let table = &self.table;
        table.pending_keys().filter(|key| table.get(key).is_some_and(|f| f.awaits_list_since.is_some()))
    }

    /// The sockets whose listing would confirm a connection that waits for the socket list:
    /// its own, and its peer's where both ends are local (as `verify` takes them).
    pub fn awaiting_list(&self) -> Vec<(SocketAddr, SocketAddr)> {
        let peer = |key: &Endpoints| self.is_local(key.remote.ip()).then_some((key.remote, key.local));
        let mut ends: Vec<(SocketAddr, SocketAddr)> = self
            .awaiting()
            .flat_map(|key| std::iter::once((key.local, key.remote)).chain(peer(key)))
            .collect();
        // Both ends of a loopback connection wait, each naming the other.
        ends.sort_unstable();
        ends.dedup();
        ends
    }

    pub fn set_local_addresses(&mut self, local: HashSet<IpAddr>) {
        self.local = local;
    }

    fn is_local(&self, ip: IpAddr) -> bool {
        ip.is_loopback() || self.local.contains(&ip)
    }

    /// Flows refused or pushed out of the table for want of room, and connections the
    /// socket list never showed.
    pub fn untracked(&self) -> u64 {
        self.table.refused() + self.never_listed
    }

    /// Counts one packet handed on at `now`, which crossed the wire at `wire` (the
    /// capture's timestamp, for the health estimates: only differences matter).
    pub fn packet(&mut self, packet: &Packet, now: Duration, wire: Duration) {
        if !self.wanted(packet.proto, packet.src, packet.dst) {
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
            self.count(endpoints, direction, packet, (now, wire));
        }
    }

    /// Counts `packet` for the socket at the `direction` end of it.
    fn count(
        &mut self,
        endpoints: Endpoints,
        direction: Direction,
        packet: &Packet,
        (now, wire): (Duration, Duration),
    ) {
        let (flow, confirmed) = match self.table.current(&endpoints, |flow| flow.closed_at.is_none()) {
            Ok(found) => found,
            Err(closed) => match self.open_flow(endpoints, closed, packet, now) {
                true => self.table.lookup(&endpoints).expect("a flow just made"),
                false => return,
            },
        };
        flow.last_seen = now;
        if flow.conn.pid.is_none() {
            if let Some(process) = packet.process.as_ref().filter(|p| p.direction == direction) {
                flow.conn.pid = Some(process.pid);
                flow.conn.comm = process.comm.as_str().into();
            }
        }
        let Some(tcp) = &packet.tcp else {
            match direction {
                Direction::Out => flow.conn.tx_bytes += u64::from(packet.payload),
                Direction::In => flow.conn.rx_bytes += u64::from(packet.payload),
            }
            return;
        };
        // This end's segment acknowledges what the other end sent, and the reverse.
        let (own, other, acknowledged_total) = match direction {
            Direction::Out => (&mut flow.sent, &mut flow.received, &mut flow.conn.rx_bytes),
            Direction::In => (&mut flow.received, &mut flow.sent, &mut flow.conn.tx_bytes),
        };
        let retransmitted = own.send(tcp, packet.payload, wire);
        let reset = tcp.has(TcpHeader::RST);
        // A reset's acknowledgement number answers whatever provoked it, forged or not.
        let covered = if tcp.has(TcpHeader::ACK) && !reset {
            other.acknowledge(tcp.ack, wire)
        } else {
            Covered::default()
        };
        *acknowledged_total += covered.payload;
        // A reset acknowledging this end's SYN refuses its connect: a connection that failed.
        let answers_syn = flow.sent.syn.is_some_and(|syn| tcp.ack == syn.wrapping_add(1));
        let change = track_state(flow, direction, tcp);
        let refused = direction == Direction::In
            && tcp.has(TcpHeader::ACK)
            && answers_syn
            && change == Some((TcpState::SynSent, TcpState::Close));
        let segment = Segment { direction, reset, retransmitted, round_trip: covered.round_trip };
        flow.note_health(segment, change, wire);
        let over = flow.is_over();
        if refused {
            self.confirm(endpoints);
        } else if covered.confirms && !confirmed {
            self.confirmed_by_packets(endpoints, now);
        }
        if let Some((old, new)) = change {
            self.push_event(endpoints, EventKind::State { old, new }, now);
        }
        if over {
            self.close(endpoints, now);
        }
    }

    fn wanted(&self, proto: Proto, src: SocketAddr, dst: SocketAddr) -> bool {
        let Filters { port, family, proto: only, .. } = &self.filters;
        let proto_ok = only.is_none_or(|p| proto == p);
        let port_ok = port.is_none_or(|p| src.port() == p || dst.port() == p);
        let family_ok = match family {
            None => true,
            Some(Family::V4) => src.is_ipv4(),
            Some(Family::V6) => src.is_ipv6(),
        };
        proto_ok && port_ok && family_ok
    }

    /// Makes the flow a packet without one opens (`closed`: one that closed is there): a TCP
    /// one waits for confirmation. False for a closed connection's stragglers and when there
    /// is no room.
    fn open_flow(&mut self, endpoints: Endpoints, closed: bool, packet: &Packet, now: Duration) -> bool {
        // Any datagram may start a UDP flow; a TCP connection may reuse the ports of one
        // that closed.
        let opens = packet.tcp.is_none_or(|t| t.has(TcpHeader::SYN) && !t.has(TcpHeader::ACK));
        if closed && !opens {
            return false;
        }
        // Seen from its first SYN, a connection goes through its states from CLOSE; met in
        // the middle, it is simply established.
        let state = match packet.tcp {
            None => None,
            Some(_) if opens => Some(TcpState::Close),
            Some(_) => Some(TcpState::Established),
        };
        let flow = self.new_flow(endpoints, state, now);
        if packet.tcp.is_none() {
            return self.table.insert_confirmed(endpoints, flow);
        }
        self.table.insert_pending(endpoints, flow);
        true
    }

    fn new_flow(&mut self, endpoints: Endpoints, state: Option<TcpState>, now: Duration) -> Flow {
        let conn = Conn {
            id: self.next_id,
            pid: None,
            comm: "".into(),
            proto: endpoints.proto,
            local: endpoints.local,
            remote: endpoints.remote,
            state,
            tx_bytes: 0,
            rx_bytes: 0,
            netns: None,
            cgroup: None,
            // What the packets show of a TCP connection, from when they showed it.
            health: (endpoints.proto == Proto::Tcp).then_some(TcpHealth {
                retrans: Some(0),
                resets_sent: Some(0),
                resets_received: Some(0),
                estimated: true,
                ..TcpHealth::default()
            }),
        };
        self.next_id += 1;
        Flow {
            conn,
            sent: Stream::default(),
            received: Stream::default(),
            last_seen: now,
            closed_at: None,
            unlisted_since: None,
            awaits_list_since: None,
            held: Vec::new(),
            lookups: 0,
            handshake_from: None,
        }
    }

    /// The packets showed a pending flow real: a connection at once, or once the socket
    /// list shows it too.
    fn confirmed_by_packets(&mut self, endpoints: Endpoints, now: Duration) {
        if !self.list_confirms {
            self.confirm(endpoints);
        } else {
            let flow = self.table.get_mut(&endpoints).expect("a flow just counted");
            flow.awaits_list_since.get_or_insert(now);
        }
    }

    /// Makes a pending flow a connection, handing on the events it held.
    fn confirm(&mut self, endpoints: Endpoints) {
        if self.table.is_confirmed(&endpoints) || !self.table.confirm(&endpoints) {
            return;
        }
        let flow = self.table.get_mut(&endpoints).expect("the flow was just confirmed");
        self.events.append(&mut flow.held);
    }

    /// Records an event of a connection, or holds it until the connection is confirmed.
    fn push_event(&mut self, endpoints: Endpoints, kind: EventKind, now: Duration) {
        let confirmed = self.table.is_confirmed(&endpoints);
        let flow = self.table.get_mut(&endpoints).expect("an event of a known flow");
        let event = ConnEvent { at: now, kind, conn: flow.conn.clone() };
        if confirmed {
            self.events.push(event);
        } else {
            flow.held.push(event);
        }
    }

    /// Ends a connection; one never confirmed is forgotten without a trace, but one that
    /// waits for the socket list keeps its close for when the list shows it.
    fn close(&mut self, endpoints: Endpoints, now: Duration) {
        let confirmed = self.table.is_confirmed(&endpoints);
        let flow = self.table.get_mut(&endpoints).expect("closing a known flow");
        if !confirmed && flow.awaits_list_since.is_none() {
            self.table.remove(&endpoints);
            return;
        }
        flow.closed_at = Some(now);
        self.push_event(endpoints, EventKind::Closed, now);
    }

    /// Ends flows that went quiet, forgets closed ones after their linger time and pending
    /// ones nobody confirmed.
    pub fn expire(&mut self, now: Duration) {
        let since = |at: Duration| now.saturating_sub(at);
        self.table.retain(|flow, confirmed| match flow.closed_at {
            Some(at) => since(at) < CLOSED_LINGER,
            None => confirmed || since(flow.last_seen) < PENDING_IDLE,
        });
        let udp_idle = self.filters.udp_idle;
        let idle: Vec<Endpoints> = self
            .table
            .confirmed()
            .filter(|(key, flow)| {
                let limit = match (key.proto, flow.conn.state) {
                    (Proto::Udp, _) => udp_idle,
                    (_, Some(TcpState::TimeWait)) => FINAL_ACK_WAIT,
                    _ => TCP_IDLE,
                };
                flow.closed_at.is_none() && since(flow.last_seen) >= limit
            })
            .map(|(key, _)| *key)
            .collect();
        for endpoints in idle {
            self.close(endpoints, now);
        }
    }

    /// Checks the flows that wait for confirmation against the kernel's socket list: one it
    /// lists is real, and so is one whose other end it lists, where both ends are local (a
    /// loopback connection whose one end is already gone, while the other waits in
    /// TIME_WAIT). One the packets confirmed but the list does not show is forgotten and
    /// counted once it closed, or once it waited too long: forged, or gone before the list
    /// was read.
    pub fn verify(&mut self, listed: &ListedSockets, now: Duration) {
        let mut real = Vec::new();
        let mut unlisted = Vec::new();
        for key in self.table.pending_keys() {
            let local_peer = self.is_local(key.remote.ip());
            if listed.contains_key(&(key.local, key.remote))
                || (local_peer && listed.contains_key(&(key.remote, key.local)))
            {
                real.push(*key);
                continue;
            }
            let flow = self.table.get(key).expect("a pending key");
            let waited_enough =
                flow.awaits_list_since.is_some_and(|since| now.saturating_sub(since) >= LIST_CONFIRM_WAIT);
            if flow.awaits_list_since.is_some() && (flow.closed_at.is_some() || waited_enough) {
                unlisted.push(*key);
            }
        }
        for key in real {
            self.confirm(key);
        }
        for key in unlisted {
            self.table.remove(&key);
            self.never_listed += 1;
        }
    }

    /// Checks the TCP flows against the kernel's socket list, the truth where there is one:
    /// a connection it stopped listing closes with its totals; pending flows are verified;
    /// an established socket the packets did not show (idle, or older than tcptop) is
    /// adopted when two checks in a row list it.
    pub fn reconcile(&mut self, listed: &ListedSockets, now: Duration) {
        let is_listed = |key: &Endpoints| listed.contains_key(&(key.local, key.remote));
        let mut gone = Vec::new();
        for (key, flow) in self.table.confirmed_mut() {
            if key.proto != Proto::Tcp || flow.closed_at.is_some() {
                continue;
            }
            if is_listed(key) {
                flow.unlisted_since = None;
                flow.last_seen = now;
            } else if now.saturating_sub(*flow.unlisted_since.get_or_insert(now)) >= UNLISTED_GRACE {
                gone.push(*key);
            }
        }
        for key in gone {
            self.close(key, now);
        }
        self.verify(listed, now);
        let unknown: HashSet<Endpoints> = listed
            .iter()
            .filter(|(_, state)| **state == TcpState::Established)
            .map(|(&(local, remote), _)| Endpoints { proto: Proto::Tcp, local, remote })
            .filter(|key| self.wanted(key.proto, key.local, key.remote) && self.table.get(key).is_none())
            .collect();
        let adopted: Vec<Endpoints> = unknown.intersection(&self.listed_unknown).copied().collect();
        self.listed_unknown = unknown;
        for key in adopted {
            if self.table.has_room(&key) {
                let flow = self.new_flow(key, Some(TcpState::Established), now);
                self.table.insert_confirmed(key, flow);
            }
        }
    }

    /// Connections whose process is unknown and worth another lookup: open ones, and
    /// closed ones whose events are still to be handed on. Each is offered a few times
    /// only, so a socket nobody here holds does not cost a scan every interval.
    pub fn unattributed(&mut self) -> Vec<Endpoints> {
        let reported: HashSet<u64> = self.events.iter().map(|e| e.conn.id).collect();
        let mut wanted = Vec::new();
        for (endpoints, flow) in self.table.confirmed_mut() {
            let current = flow.closed_at.is_none() || reported.contains(&flow.conn.id);
            if flow.conn.pid.is_none() && current && flow.lookups < MAX_LOOKUPS {
                flow.lookups += 1;
                wanted.push(*endpoints);
            }
        }
        wanted
    }

    /// Names the process of a connection, in its record and in its pending events.
    pub fn attribute(&mut self, endpoints: &Endpoints, pid: u32, comm: &str) {
        let Some(flow) = self.table.get_mut(endpoints) else { return };
        let id = flow.conn.id;
        let pending = self.events.iter_mut().map(|e| &mut e.conn).filter(|c| c.id == id);
        for conn in std::iter::once(&mut flow.conn).chain(pending) {
            conn.pid = Some(pid);
            conn.comm = comm.into();
        }
    }

    /// The live connections and the events since the previous call, as the `Collector`
    /// trait hands them on.
    pub fn sample(&mut self) -> (Vec<Conn>, Vec<ConnEvent>) {
        let conns = self
            .table
            .confirmed()
            .filter(|(_, flow)| flow.closed_at.is_none() && self.wanted_pid(&flow.conn))
            .map(|(_, flow)| flow.conn.clone())
            .collect();
        (conns, self.events())
    }

    /// The events since the previous call (or `sample`).
    pub fn events(&mut self) -> Vec<ConnEvent> {
        let mut events = std::mem::take(&mut self.events);
        events.retain(|e| self.wanted_pid(&e.conn));
        events
    }

    fn wanted_pid(&self, conn: &Conn) -> bool {
        self.filters.pid.is_none() || conn.pid == self.filters.pid
    }
}

/// Moves a connection's state on for one segment, seen from its local socket; returns the
/// change, if any.
fn track_state(flow: &mut Flow, direction: Direction, tcp: &TcpHeader) -> Option<(TcpState, TcpState)> {
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
        // The FIN takes the sequence number after its segment's data.
        let acks_our_fin = direction == Direction::In
            && has(TcpHeader::ACK)
            && flow.sent.fin.is_some_and(|fin| ahead(tcp.ack, fin));
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

    fn process(pid: u32, comm: &str, direction: Direction) -> Box<PacketProcess> {
        Box::new(PacketProcess { pid, comm: comm.into(), direction })
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

    fn datagram(src: &str, dst: &str, payload: u32) -> Packet {
        Packet {
            proto: Proto::Udp,
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            payload,
            tcp: None,
            process: None,
        }
    }

    const SYN: u8 = TcpHeader::SYN;
    const ACK: u8 = TcpHeader::ACK;
    const FIN: u8 = TcpHeader::FIN;
    const RST: u8 = TcpHeader::RST;

    /// A connection's three-way handshake, `client` starting at sequence number 100 and
    /// `server` at 900.
    fn handshake(client: &str, server: &str) -> [Packet; 3] {
        [
            tcp(client, server, 100, 0, SYN, 0),
            tcp(server, client, 900, 101, SYN | ACK, 0),
            tcp(client, server, 101, 901, ACK, 0),
        ]
    }

    fn feed(asm: &mut Assembler, packets: &[Packet]) {
        for (i, p) in packets.iter().enumerate() {
            let at = Duration::from_millis(i as u64);
            asm.packet(p, at, at);
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

    fn ends(local: &str, remote: &str) -> Endpoints {
        Endpoints { proto: Proto::Tcp, local: local.parse().unwrap(), remote: remote.parse().unwrap() }
    }

    #[test]
    fn counts_acknowledged_payload_each_way_not_headers() {
        let mut asm = assembler();
        feed(&mut asm, &handshake(ME, PEER));
        feed(
            &mut asm,
            &[
                tcp(ME, PEER, 101, 901, ACK, 1400),
                tcp(ME, PEER, 1501, 901, ACK, 600),
                tcp(PEER, ME, 901, 1501, ACK, 5), // acknowledges the first segment only
            ],
        );
        let (conn, events) = only_conn(&mut asm);
        assert_eq!((conn.local, conn.remote), (ME.parse().unwrap(), PEER.parse().unwrap()));
        assert_eq!((conn.tx_bytes, conn.rx_bytes, conn.state), (1400, 0, Some(TcpState::Established)));
        assert_eq!(steps(&events), ["CLOSE>SYN_SENT", "SYN_SENT>ESTABLISHED"]);
        feed(&mut asm, &[tcp(ME, PEER, 2101, 906, ACK, 0), tcp(PEER, ME, 906, 2101, ACK, 0)]);
        assert_eq!(only_conn(&mut asm).0.tx_bytes, 2000);
        assert_eq!(only_conn(&mut asm).0.rx_bytes, 5);
    }

    #[test]
    fn a_retransmission_counts_once_and_a_lost_segment_when_acknowledged() {
        let mut asm = assembler();
        feed(&mut asm, &handshake(ME, PEER));
        feed(
            &mut asm,
            &[
                tcp(ME, PEER, 101, 901, ACK, 1000),
                tcp(ME, PEER, 101, 901, ACK, 1000), // the same segment again
                tcp(PEER, ME, 901, 1101, ACK, 0),
                tcp(PEER, ME, 901, 1101, ACK, 0), // a duplicate acknowledgement
                tcp(ME, PEER, 2101, 901, ACK, 500), // after a segment the capture lost
                tcp(PEER, ME, 901, 2601, ACK, 0),
            ],
        );
        assert_eq!(only_conn(&mut asm).0.tx_bytes, 2500);
    }

    #[test]
    fn sequence_numbers_wrap_around() {
        let mut asm = assembler();
        let near_end = u32::MAX - 99;
        feed(
            &mut asm,
            &[
                tcp(PEER, ME, near_end - 1, 7, SYN, 0),
                tcp(ME, PEER, 6, near_end, SYN | ACK, 0),
                tcp(PEER, ME, near_end, 7, ACK, 100),
                tcp(ME, PEER, 7, 0, ACK, 0),
                tcp(PEER, ME, 0, 7, ACK, 100),
                tcp(ME, PEER, 7, 100, ACK, 0),
                tcp(ME, PEER, 7, 0, ACK, 0), // a late duplicate from before the wrap
            ],
        );
        assert_eq!(only_conn(&mut asm).0.rx_bytes, 200);
    }

    #[test]
    fn keepalives_and_zero_window_probes_add_nothing() {
        let mut asm = assembler();
        feed(&mut asm, &handshake(ME, PEER));
        feed(
            &mut asm,
            &[
                tcp(ME, PEER, 100, 901, ACK, 0), // keep-alive before any data
                tcp(PEER, ME, 901, 101, ACK, 0),
                tcp(ME, PEER, 101, 901, ACK, 10),
                tcp(PEER, ME, 901, 111, ACK, 0),
                tcp(ME, PEER, 110, 901, ACK, 1), // keep-alive with its one garbage byte
                tcp(PEER, ME, 901, 111, ACK, 0),
            ],
        );
        assert_eq!(only_conn(&mut asm).0.tx_bytes, 10);
    }

    #[test]
    fn fin_handshake_closes_both_ends_of_a_loopback_connection() {
        let client = "127.0.0.1:5000";
        let server = "127.0.0.1:80";
        let mut asm = assembler();
        feed(&mut asm, &handshake(client, server));
        feed(
            &mut asm,
            &[
                tcp(client, server, 101, 901, ACK | FIN, 10),
                tcp(server, client, 901, 112, ACK, 3),
                tcp(server, client, 904, 112, ACK | FIN, 0),
                tcp(client, server, 112, 905, ACK, 0),
                tcp(client, server, 112, 905, ACK, 0), // a straggler after the close
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
        feed(&mut asm, &handshake(ME, PEER));
        feed(
            &mut asm,
            &[
                tcp(ME, PEER, 101, 901, ACK, 7),
                tcp(PEER, ME, 901, 108, ACK, 0),
                tcp(PEER, ME, 901, 0, RST, 0),
            ],
        );
        feed(&mut asm, &[tcp(ME, PEER, 108, 901, ACK, 1)]);
        let (conns, events) = asm.sample();
        assert!(conns.is_empty());
        assert_eq!(steps(&events)[2..], ["ESTABLISHED>CLOSE", "closed"]);
        assert_eq!(events[3].conn.tx_bytes, 7);
        feed(&mut asm, &handshake(ME, PEER));
        let (conn, _) = only_conn(&mut asm);
        assert_ne!(conn.id, events[3].conn.id);
        assert_eq!(conn.state, Some(TcpState::Established));
    }

    #[test]
    fn forged_and_unacknowledged_segments_make_no_connection() {
        let (forger, victim, listener) = ("127.0.0.1:40001", "127.0.0.1:40002", "10.0.0.1:80");
        let mut asm = assembler();
        feed(
            &mut asm,
            &[
                // Bad checksums: the kernel drops them, so nothing answers.
                tcp(forger, victim, 1, 0, ACK, 1),
                tcp(forger, victim, 0x8000_0000, 0, ACK, 1),
                tcp(forger, victim, 0xffff_0000, 0, ACK, 1),
                // A SYN whose SYN-ACK nobody acknowledges: a half-open handshake.
                tcp(PEER, listener, 5, 0, SYN, 0),
                tcp(listener, PEER, 70, 6, SYN | ACK, 0),
                // A segment to a closed port, answered by a reset that acknowledges it.
                tcp(PEER, ME, 9, 0, 0, 50),
                tcp(ME, PEER, 0, 59, RST | ACK, 0),
            ],
        );
        assert_eq!(asm.sample(), (vec![], vec![]));
        asm.expire(PENDING_IDLE + Duration::from_secs(1));
        assert_eq!(asm.table.pending_keys().count(), 0, "nothing lingers");
    }

    #[test]
    fn a_refused_connect_is_a_failed_connection_with_one_reset_received() {
        let (client, closed_port) = ("127.0.0.1:5000", "127.0.0.1:9");
        for listed in [false, true] {
            let mut asm = assembler();
            if listed {
                asm.verify_with_socket_list(); // the reset came after the socket was gone
            }
            asm.packet(&tcp(client, closed_port, 100, 0, SYN, 0), Duration::ZERO, Duration::ZERO);
            let answer = tcp(closed_port, client, 0, 101, RST | ACK, 0);
            asm.packet(&answer, Duration::from_millis(1), Duration::from_micros(40));
            let (conns, events) = asm.sample();
            assert!(conns.is_empty());
            assert_eq!(steps(&events), ["CLOSE>SYN_SENT", "SYN_SENT>CLOSE", "closed"], "only the client's");
            let conn = &events[2].conn;
            assert_eq!((conn.local, conn.state_label()), (client.parse().unwrap(), Some("FAILED")));
            let health = conn.health.unwrap();
            let failed = Handshake { took: Duration::from_micros(40), failed: true };
            assert_eq!(
                (health.connect, health.resets_received, health.resets_sent, health.estimated),
                (Some(failed), Some(1), Some(0), true)
            );
        }
    }

    #[test]
    fn rtt_from_data_to_ack_and_retransmits_from_ranges_seen_twice() {
        let mut asm = assembler();
        let at = |ms: u64| Duration::from_millis(ms);
        for (ms, packet) in [
            (0, tcp(ME, PEER, 100, 0, SYN, 0)),
            (10, tcp(PEER, ME, 900, 101, SYN | ACK, 0)), // the handshake's round trip: 10 ms
            (10, tcp(ME, PEER, 101, 901, ACK, 0)),
            (20, tcp(ME, PEER, 101, 901, ACK, 1000)),
            (26, tcp(PEER, ME, 901, 1101, ACK, 0)), // 6 ms
            (30, tcp(ME, PEER, 1101, 901, ACK, 500)),
            (230, tcp(ME, PEER, 1101, 901, ACK, 500)), // retransmitted
            (240, tcp(PEER, ME, 901, 1601, ACK, 0)),   // answers either copy: no sample
            (250, tcp(PEER, ME, 901, 1601, ACK, 30)),
            (250, tcp(PEER, ME, 901, 1601, ACK, 30)), // the peer's retransmission, not ours
            (260, tcp(ME, PEER, 1600, 931, ACK, 1)),  // a keep-alive
        ] {
            asm.packet(&packet, at(ms), at(ms));
        }
        let (conn, _) = only_conn(&mut asm);
        let health = conn.health.unwrap();
        // RFC 6298: 10 ms, then 6 ms: variation (3 * 5000 + 4000) / 4, mean (7 * 10000 + 6000) / 8.
        let rtt = Rtt { smoothed_us: 9500, variation_us: 4750, min_us: 6000 };
        assert_eq!((health.rtt, health.retrans, health.estimated), (Some(rtt), Some(1), true));
        assert_eq!(health.connect, Some(Handshake { took: at(10), failed: false }));
        assert_eq!((conn.tx_bytes, conn.rx_bytes), (1500, 30));
    }

    #[test]
    fn health_a_capture_cannot_see_is_unknown_not_zero() {
        let mut asm = assembler();
        // Met mid-stream, nothing of its own acknowledged yet, no handshake.
        feed(&mut asm, &[tcp(PEER, ME, 5000, 77, ACK, 100), tcp(ME, PEER, 77, 5100, ACK, 0)]);
        feed(&mut asm, &[tcp(PEER, ME, 5100, 77, ACK, 40), tcp(ME, PEER, 77, 5140, ACK, 0)]);
        let health = only_conn(&mut asm).0.health.unwrap();
        assert_eq!((health.rtt, health.connect), (None, None));
        let mut asm = assembler();
        feed(&mut asm, &[datagram(ME, "9.9.9.9:53", 40)]);
        assert_eq!(only_conn(&mut asm).0.health, None, "UDP");
    }

    /// A handshake, data each way and its acknowledgements: all a forger sending both
    /// directions can make up.
    fn conversation(client: &str, server: &str) -> Vec<Packet> {
        let mut packets = handshake(client, server).to_vec();
        packets.extend([
            tcp(client, server, 101, 901, ACK, 50),
            tcp(server, client, 901, 151, ACK, 70),
            tcp(client, server, 151, 971, ACK, 0),
        ]);
        packets
    }

    #[test]
    fn with_a_socket_list_a_connection_counts_once_listed_and_forgeries_never() {
        let (forger, victim) = ("127.0.0.1:40001", "127.0.0.1:40002");
        let (client, server) = ("127.0.0.1:5000", "127.0.0.1:80");
        let mut asm = assembler();
        asm.verify_with_socket_list();
        feed(&mut asm, &conversation(forger, victim));
        feed(&mut asm, &conversation(client, server));
        assert_eq!(asm.sample(), (vec![], vec![]), "nothing before the list shows it");
        assert!(asm.awaits_socket_list());
        let pair = |local: &str, remote: &str| (local.parse().unwrap(), remote.parse().unwrap());
        let awaited: HashSet<(SocketAddr, SocketAddr)> = asm.awaiting_list().into_iter().collect();
        let both_ways =
            [pair(forger, victim), pair(victim, forger), pair(client, server), pair(server, client)];
        assert_eq!((awaited, asm.awaiting_list().len()), (HashSet::from(both_ways), 4));
        let listed: ListedSockets =
            [((client.parse().unwrap(), server.parse().unwrap()), TcpState::Established)].into();
        asm.verify(&listed, Duration::from_millis(100));
        let (conns, _) = asm.sample();
        let shown: HashSet<(String, u64, u64)> =
            conns.iter().map(|c| (c.local.to_string(), c.tx_bytes, c.rx_bytes)).collect();
        assert_eq!(shown, HashSet::from([(client.into(), 50, 70), (server.into(), 70, 50)]), "its peer too");
        asm.verify(&listed, LIST_CONFIRM_WAIT + Duration::from_millis(10));
        assert!(!asm.awaits_socket_list());
        assert_eq!((asm.sample().0.len(), asm.untracked()), (2, 2), "both forged ends counted, never shown");
    }

    #[test]
    fn a_short_connection_counts_when_one_end_is_listed_in_time_wait() {
        let (client, server) = ("127.0.0.1:5000", "127.0.0.1:80");
        let mut asm = assembler();
        asm.verify_with_socket_list();
        let mut packets = conversation(client, server);
        packets.extend([
            tcp(server, client, 971, 151, ACK | FIN, 0), // the server closes first
            tcp(client, server, 151, 972, ACK | FIN, 0),
            tcp(server, client, 972, 152, ACK, 0),
        ]);
        feed(&mut asm, &packets);
        let listed: ListedSockets =
            [((server.parse().unwrap(), client.parse().unwrap()), TcpState::TimeWait)].into();
        asm.verify(&listed, Duration::from_millis(100));
        let (conns, events) = asm.sample();
        let closed: HashSet<(String, u64, u64)> = events
            .iter()
            .filter(|e| e.kind == EventKind::Closed)
            .map(|e| (e.conn.local.to_string(), e.conn.tx_bytes, e.conn.rx_bytes))
            .collect();
        assert_eq!(closed, HashSet::from([(client.into(), 50, 70), (server.into(), 70, 50)]));
        assert_eq!((conns.len(), asm.untracked()), (0, 0));
    }

    #[test]
    fn a_connection_older_than_tcptop_counts_from_the_first_acknowledgement_seen() {
        let mut asm = assembler();
        feed(
            &mut asm,
            &[
                tcp(ME, PEER, 5000, 77, ACK, 100), // in flight when tcptop started
                tcp(PEER, ME, 77, 5100, ACK, 0),
            ],
        );
        assert_eq!(asm.sample().0, [], "one acknowledgement seen: not yet known to be real");
        feed(&mut asm, &[tcp(ME, PEER, 5100, 77, ACK, 40), tcp(PEER, ME, 77, 5140, ACK, 0)]);
        let (conn, events) = only_conn(&mut asm);
        assert_eq!((conn.tx_bytes, conn.state, events), (40, Some(TcpState::Established), vec![]));
    }

    #[test]
    fn a_flood_of_forged_flows_does_not_hide_a_real_handshake() {
        let mut asm = assembler();
        let forged = |n: u32| {
            let src = SocketAddr::from(([6, 6, (n >> 16) as u8, (n >> 8) as u8], n as u16));
            tcp(&src.to_string(), ME, n, 0, ACK, 1)
        };
        for n in 0..LIMITS.pending as u32 * 2 {
            asm.packet(&forged(n), Duration::ZERO, Duration::ZERO);
        }
        let [syn, syn_ack, ack] = handshake(ME, PEER);
        asm.packet(&syn, Duration::ZERO, Duration::ZERO);
        for n in 0..LIMITS.pending as u32 / 2 {
            asm.packet(&forged(n + 1_000_000), Duration::ZERO, Duration::ZERO);
        }
        asm.packet(&syn_ack, Duration::ZERO, Duration::ZERO);
        asm.packet(&ack, Duration::ZERO, Duration::ZERO);
        let (conn, _) = only_conn(&mut asm);
        assert_eq!(conn.remote, PEER.parse().unwrap());
        assert_eq!(asm.untracked(), LIMITS.pending as u64 * 3 / 2 + 1, "what was pushed out is counted");
    }

    #[test]
    fn one_remote_cannot_fill_the_table() {
        let mut asm = assembler();
        for port in 0..=LIMITS.per_remote as u32 {
            let src = SocketAddr::from(([9, 9, 9, 9], (port % 60_000) as u16));
            let dst = SocketAddr::from(([10, 0, 0, 1], 1000 + (port / 60_000) as u16));
            asm.packet(&datagram(&src.to_string(), &dst.to_string(), 1), Duration::ZERO, Duration::ZERO);
        }
        assert_eq!(asm.untracked(), 1);
        feed(&mut asm, &[datagram(ME, "9.9.9.8:53", 40)]);
        assert_eq!(asm.sample().0.len(), LIMITS.per_remote + 1, "another remote still has room");
    }

    #[test]
    fn udp_counts_every_datagram_and_expires_when_idle() {
        let mut asm = assembler();
        feed(&mut asm, &[datagram(ME, "9.9.9.9:53", 40), datagram("9.9.9.9:53", ME, 200)]);
        let (conn, _) = only_conn(&mut asm);
        assert_eq!((conn.proto, conn.state, conn.tx_bytes, conn.rx_bytes), (Proto::Udp, None, 40, 200));
        asm.expire(Filters::default().udp_idle + Duration::from_secs(1));
        let (conns, events) = asm.sample();
        assert!(conns.is_empty());
        assert_eq!(steps(&events), ["closed"]);
    }

    #[test]
    fn a_udp_flow_that_resumes_after_its_idle_time_is_a_new_flow() {
        let mut asm = assembler();
        feed(&mut asm, &[datagram(ME, "9.9.9.9:53", 40)]);
        let resumed = Filters::default().udp_idle + Duration::from_secs(1);
        asm.expire(resumed);
        let (_, events) = asm.sample();
        asm.packet(&datagram(ME, "9.9.9.9:53", 60), resumed, resumed);
        asm.packet(&datagram("9.9.9.9:53", ME, 7), resumed, resumed);
        let (conn, _) = only_conn(&mut asm);
        assert_ne!(conn.id, events[0].conn.id);
        assert_eq!((events[0].conn.tx_bytes, conn.tx_bytes, conn.rx_bytes), (40, 60, 7));
    }

    #[test]
    fn the_kernel_socket_list_closes_ghosts_confirms_and_adopts() {
        let mut asm = assembler();
        let (idle, other) = ("10.0.0.1:22", "10.0.0.9:5555");
        feed(&mut asm, &handshake(ME, PEER));
        feed(&mut asm, &[tcp(ME, PEER, 101, 901, ACK, 7), tcp(PEER, ME, 901, 108, ACK, 0)]);
        feed(&mut asm, &[tcp(other, ME, 1, 2, ACK, 0)]); // pending: met mid-stream
        let listed = |keys: &[(&str, &str)]| -> ListedSockets {
            keys.iter()
                .map(|(l, r)| ((l.parse().unwrap(), r.parse().unwrap()), TcpState::Established))
                .collect()
        };
        let second = Duration::from_secs(1);
        asm.reconcile(&listed(&[(ME, PEER), (ME, other), (idle, PEER)]), second);
        assert_eq!(asm.sample().0.len(), 2, "the listed pending flow is real; the idle socket waits a check");
        asm.reconcile(&listed(&[(ME, other), (idle, PEER)]), 2 * second);
        assert_eq!(asm.sample().0.len(), 3, "adopted once listed twice; the ghost gets its grace");
        asm.reconcile(&listed(&[(ME, other), (idle, PEER)]), 3 * second);
        let (conns, events) = asm.sample();
        let remaining: HashSet<Endpoints> =
            conns.iter().map(|c| Endpoints { proto: c.proto, local: c.local, remote: c.remote }).collect();
        assert_eq!(remaining, HashSet::from([ends(ME, other), ends(idle, PEER)]));
        assert_eq!((steps(&events), events[0].conn.tx_bytes), (vec!["closed".to_string()], 7));
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
        let mut packets = handshake("127.0.0.1:5000", "127.0.0.1:80");
        packets[2].process = Some(process(321, "nc", Direction::In));
        feed(&mut asm, &packets);
        let (conns, _) = asm.sample();
        let by_local: HashMap<String, Option<u32>> =
            conns.iter().map(|c| (c.local.to_string(), c.pid)).collect();
        assert_eq!(by_local["127.0.0.1:80"], Some(321));
        assert_eq!(by_local["127.0.0.1:5000"], None);
    }

    #[test]
    fn attribution_reaches_pending_events_and_stops_after_a_few_tries() {
        let mut asm = assembler();
        feed(&mut asm, &handshake(ME, PEER));
        let key = ends(ME, PEER);
        assert_eq!(asm.unattributed(), [key]);
        asm.unattributed();
        asm.unattributed();
        assert_eq!(asm.unattributed(), []);
        asm.attribute(&key, 42, "curl");
        let (conn, events) = only_conn(&mut asm);
        assert_eq!((conn.pid, &*conn.comm), (Some(42), "curl"));
        assert_eq!(events[0].conn.pid, Some(42));
    }

    #[test]
    fn a_connection_closed_before_its_lookup_is_still_looked_up() {
        let mut asm = assembler();
        feed(&mut asm, &handshake(ME, PEER));
        feed(&mut asm, &[tcp(PEER, ME, 901, 101, RST, 0)]);
        assert_eq!(asm.unattributed(), [ends(ME, PEER)]);
        asm.sample();
        assert_eq!(asm.unattributed(), [], "its events are handed on: too late");
    }

    #[test]
    fn filters_drop_packets_early_and_unknown_pids_late() {
        let mut asm = Assembler::new(
            HashSet::new(),
            Filters { port: Some(443), family: Some(Family::V4), ..Filters::default() },
        );
        for (client, server) in
            [("127.0.0.1:1", "127.0.0.1:443"), ("127.0.0.1:1", "127.0.0.1:80"), ("[::1]:1", "[::1]:443")]
        {
            feed(&mut asm, &handshake(client, server));
        }
        assert_eq!(asm.sample().0.len(), 2);
        let mut asm = Assembler::new(HashSet::new(), Filters { pid: Some(42), ..Filters::default() });
        feed(&mut asm, &handshake("127.0.0.1:1", "127.0.0.1:443"));
        assert_eq!(asm.sample().0.len(), 0);
    }
}
