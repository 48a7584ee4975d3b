/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The single definition of everything that crosses from the kernel to user
 * space. Fixed-width types only: Rust reads these through the skeleton's
 * generated `types` module, never through a hand-copied struct.
 */
#ifndef TCPTOP_H
#define TCPTOP_H

#define TCPTOP_COMM_LEN 16

/* One TCP connection or UDP flow as user space sees it: identity, owner, byte totals and,
 * for TCP, the kernel's own health figures. */
struct conn_info {
	/* What the hooks write at each send and read first (see struct conn): */
	__u64 tx_bytes;		/* bytes the application wrote and the kernel accepted */
	__u64 rx_bytes;		/* bytes the application read */
	__u32 retrans;		/* segments retransmitted, SYNs included (tcp_sock.total_retrans) */
	__u32 srtt_us;		/* smoothed RTT (tcp_sock.srtt_us >> 3) */
	__u32 rttvar_us;	/* its mean deviation (mdev_us >> 2) */
	__u32 min_rtt_us;	/* the windowed minimum RTT (rtt_min.s[0].v) */
	/* One byte each, so that a store to one never races another: */
	__u8 health_read;	/* retrans (and, if rtt_known, the RTT fields) were read from tcp_sock */
	__u8 rtt_known;		/* the kernel has taken an RTT sample */
	__u8 state;		/* TCP_ESTABLISHED ... as in include/net/tcp_states.h; 0 for UDP */
	__u8 proto;		/* IPPROTO_TCP or IPPROTO_UDP */
	__u8 connect_known;	/* connect_ns was measured */
	__u8 connect_failed;	/* SYN_SENT to CLOSE: connect_ns is how long it tried */
	__u16 family;		/* AF_INET or AF_INET6 */
	__u64 id;		/* tcptop's random number for the socket or flow, never 0 */
	__u64 cgroup_id;	/* cgroup v2 id of the owning thread; 0 if unknown */
	__u64 sock_ino;		/* inode of the socket's file, to find its owner in /proc; 0 if none */
	__u64 connect_ns;	/* SYN_SENT or SYN_RECV to ESTABLISHED, or SYN_SENT to CLOSE; before
				 * connect_known, when the handshake began (TCP conns) */
	__u32 resets_sent;	/* RSTs the kernel sent on this socket */
	__u32 resets_received;
	__u32 pid;		/* tgid of the last process that sent or read; 0 if none yet */
	__u32 netns;		/* inode number of the socket's network namespace */
	__u8 comm[TCPTOP_COMM_LEN];
	__u8 laddr[16];		/* IPv4 uses the first 4 bytes */
	__u8 raddr[16];
	__u16 lport;		/* host byte order */
	__u16 rport;
	__u8 pad[4];
};

enum conn_event_kind {
	CONN_EVENT_STATE = 1,	/* old_state -> new_state; info is the connection at that moment */
	CONN_EVENT_CLOSED = 2,	/* the socket is destroyed; info carries its final totals */
};

/* A lifecycle record on the `events` ring buffer. */
struct conn_event {
	__u64 timestamp_ns;	/* CLOCK_MONOTONIC (bpf_ktime_get_ns) */
	struct conn_info info;
	__u8 kind;		/* enum conn_event_kind */
	__u8 old_state;
	__u8 new_state;
	__u8 pad[5];
};

/* What the kernel keeps per connection (and per UDP flow). A TCP connection lives in a slot
 * of the `conns` array, which user space maps into its memory and reads directly; a UDP flow
 * in the UDP flow map. 192 bytes, three cache lines: a slot shares none with its neighbours,
 * which other CPUs write. What every send and read looks at or writes comes first, through
 * the start of info, so that a hook touches one cache line: the send and the read of a
 * connection often run on two CPUs, and each line they both write moves between them. */
struct conn {
	__u8 ignored;		/* outside the --port / -4 / -6 filters */
	__u8 counting;		/* tx_base and rx_base are valid */
	__u8 fin_seen;
	__u8 pad;
	__u32 named_epoch;	/* the read epoch in which pid, comm and cgroup were last set */
	__u32 listed_epoch;	/* TCP: the read epoch in which the slot was last put on `changed` */
	__u32 tx_base;		/* write_seq less the low 32 bits of tx_bytes: where sending began */
	__u64 rx_base;		/* the bytes read (bytes_read in tcptop.bpf.c) when counting began */
	struct conn_info info;
	__u32 fin_seq;		/* sequence number of the peer's FIN, once fin_seen */
	__u32 unsampled;	/* TCP, where the hooks do not sample: about how many bytes moved since */
	__u32 slot;		/* TCP: this slot's index in `conns` */
	__u32 pad2;
	__u64 last_ns;		/* UDP: bpf_ktime_get_ns() at the flow's last datagram */
};

/* What socket storage, or the hash of the plans that may not use it, keeps per TCP socket. */
struct conn_ref {
	__u32 slot;		/* in `conns` */
};

/* The other end of a UDP flow, in the socket's family: an IPv6 socket sees an IPv4
 * peer as ::ffff:a.b.c.d, as the kernel itself reports it to such a socket. */
struct udp_peer {
	__u8 addr[16];		/* IPv4 uses the first 4 bytes */
	__u16 port;		/* host byte order */
	__u16 pad[3];
};

/* The key of the UDP flow map. */
struct udp_flow_key {
	__u64 sock_ino;		/* the socket's inode: unique while it lives, unlike its address */
	struct udp_peer peer;
};

/* Overflow that user space must show: nothing is ever lost silently. */
struct drop_counters {
	__u64 conns_untracked;	/* a connection or UDP flow found no room in its map */
	__u64 events_lost;	/* the events ring buffer was full */
	__u64 changes_lost;	/* the `changed` ring buffer was full: the next read lists every connection */
};

#endif /* TCPTOP_H */
