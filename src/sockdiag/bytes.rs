//! What an application wrote to and read from a TCP socket, worked out from the counters
//! sock_diag reports with it (struct tcp_info and inet_diag_msg's queues).
//!
//! Written: `tcpi_bytes_sent - tcpi_bytes_retrans + tcpi_notsent_bytes`, less the FIN when it
//! waits among the unsent bytes. `tcpi_bytes_sent` adds the payload of every segment
//! __tcp_transmit_skb sends, retransmissions included, and tcp_retransmit_skb adds each
//! retransmission to `tcpi_bytes_retrans`, so their difference is the payload sent once; the
//! SYN and FIN flags carry no payload. `tcpi_notsent_bytes` is write_seq - snd_nxt: written,
//! not sent yet, with the FIN (one sequence number) if close() or shutdown() queued it behind
//! such data. `tcpi_bytes_acked` would need the SYN taken off on the side that sent it alone
//! (a fresh connect()ed socket reports bytes_acked 1, an accept()ed one 0, and sock_diag says
//! nothing of which side a socket opened), and the FIN too, which a destroyed socket (state
//! CLOSE) no longer shows. The one inexactness left: a transmission that fails in this host
//! (a qdisc or firewall drop) counts as sent, and again when TCP sends it anew.
//!
//! Read: `tcpi_bytes_received - idiag_rqueue`, less the FIN once the application read it.
//! `tcpi_bytes_received` counts every sequence number rcv_nxt passed (the data and the peer's
//! FIN, not its SYN); idiag_rqueue is rcv_nxt - copied_seq, what arrived and was not read
//! yet, the FIN included until a read returns end-of-file (tcp_recvmsg steps copied_seq over
//! it). So with the FIN in, a queue of 0 means it was read. A destroyed socket is taken to have
//! had its peer's FIN, as every orderly close has: after a reset without one, the read total
//! of a socket that read everything is one byte short.

use crate::collector::TcpState;

/// The counters of one socket, as one sock_diag message gave them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub state: u8,
    pub bytes_sent: u64,
    pub bytes_retrans: u64,
    pub notsent_bytes: u32,
    pub bytes_received: u64,
    /// idiag_rqueue: received, not yet read.
    pub unread: u32,
    /// tcp_info's RTT estimator (µs; a smoothed RTT of 0 means no sample yet) and
    /// retransmitted segments.
    pub rtt_us: u32,
    pub rttvar_us: u32,
    pub min_rtt_us: u32,
    pub total_retrans: u32,
}

impl Counters {
    /// Bytes the application wrote. `destroyed` is true for a socket's final message.
    pub fn written(&self, destroyed: bool) -> u64 {
        let fin_unsent = !destroyed && self.notsent_bytes > 0 && self.fin_queued();
        (self.bytes_sent.saturating_sub(self.bytes_retrans) + u64::from(self.notsent_bytes))
            .saturating_sub(u64::from(fin_unsent))
    }

    /// Bytes the application read. `destroyed` is true for a socket's final message.
    pub fn read(&self, destroyed: bool) -> u64 {
        let fin_in = if destroyed { self.bytes_received > 0 } else { self.fin_received() };
        let fin_read = fin_in && self.unread == 0;
        self.bytes_received.saturating_sub(u64::from(self.unread) + u64::from(fin_read))
    }

    /// Whether this socket has queued its FIN (which close() or shutdown(SHUT_WR) do).
    fn fin_queued(&self) -> bool {
        use TcpState::*;
        matches!(TcpState::from_kernel(self.state), FinWait1 | FinWait2 | Closing | LastAck | TimeWait)
    }

    /// Whether the peer's FIN arrived.
    fn fin_received(&self) -> bool {
        use TcpState::*;
        matches!(TcpState::from_kernel(self.state), CloseWait | LastAck | Closing | TimeWait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ESTABLISHED: u8 = 1;
    const FIN_WAIT1: u8 = 4;
    const CLOSE: u8 = 7;
    const CLOSE_WAIT: u8 = 8;

    fn counters(state: u8) -> Counters {
        Counters { state, ..Counters::default() }
    }

    #[test]
    fn written_is_what_was_sent_once_and_what_waits() {
        let c =
            Counters { bytes_sent: 1_500, bytes_retrans: 500, notsent_bytes: 20, ..counters(ESTABLISHED) };
        assert_eq!(c.written(false), 1_020);
        // After close(), the FIN waits behind the 20 unsent bytes: one sequence number, no byte.
        let closing = Counters { state: FIN_WAIT1, ..c };
        assert_eq!(closing.written(false), 1_019);
        // Sent, the FIN is in no counter.
        assert_eq!(Counters { notsent_bytes: 0, ..closing }.written(false), 1_000);
        assert_eq!(Counters { state: CLOSE, notsent_bytes: 0, ..c }.written(true), 1_000);
    }

    #[test]
    fn read_is_what_arrived_less_what_waits_and_the_fin() {
        let c = Counters { bytes_received: 300, unread: 100, ..counters(ESTABLISHED) };
        assert_eq!(c.read(false), 200);
        // The peer's FIN arrived (one more sequence number) and waits after the unread bytes.
        let fin = Counters { state: CLOSE_WAIT, bytes_received: 301, unread: 101, ..c };
        assert_eq!(fin.read(false), 200);
        // Everything read but the end-of-file, then the end-of-file too.
        assert_eq!(Counters { unread: 1, ..fin }.read(false), 300);
        assert_eq!(Counters { unread: 0, ..fin }.read(false), 300);
        // A destroyed socket is taken to have had its peer's FIN.
        assert_eq!(Counters { state: CLOSE, unread: 0, ..fin }.read(true), 300);
        assert_eq!(counters(CLOSE).read(true), 0);
    }
}
