// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * tcptop's kernel side: exact per-connection byte counters, kept in the kernel.
 *
 * How TCP bytes are counted. A sample reads the socket's own sequence counters
 * and adds what they advanced since the last sample:
 *   sent     = advance of tcp_sock.write_seq  (bytes the kernel accepted from
 *              send/write/sendfile/splice; sampled only before our FIN is
 *              queued, since the FIN takes a sequence number too)
 *   received = advance of tcp_sock.copied_seq (bytes handed to the reader by
 *              recv/read/splice/zerocopy; capped at the peer's FIN, which the
 *              reader consumes as one more sequence number)
 * So the count is what the application wrote and read, whichever hook fires
 * and however often: tcp_cleanup_rbuf reporting a running total twice for one
 * MSG_WAITALL read (bcc issue 5352) or tcp_sendmsg being asked for more than it
 * accepts cannot double count, and a path no hook sees (sendpage before 6.5,
 * splice reads under sock_recv_length) is caught up by the next sample. A sample
 * stores the counter's advance since the connection's base (see `advance`), so
 * two CPUs sampling one socket never count the same bytes twice, with no atomics
 * (which Linux before 5.12 lacks). Samples are taken at every state change and
 * when the socket is destroyed, and:
 *   - where `hooks_sample` (bpf_rdonly_cast, Linux 6.2+, makes tcp_sock's fields
 *     plain loads, and the hooks see every send and read path): by the send and
 *     read hooks at every call, with the health figures. Each connection that
 *     changes puts its slot on the `changed` ring once per read epoch, and a read
 *     of the table copies just those slots from the mapped `conns` array: its cost
 *     follows the connections that changed, not those held. A walk of every socket
 *     (the table iterators) still samples now and then, for idle connections'
 *     health and paths no hook sees (kTLS sends under fentry);
 *   - else by that walk before every read of the table, which puts what changed on
 *     `changed`; the hooks sample only every SAMPLE_DISTANCE bytes, so that the
 *     32-bit difference cannot wrap between two walks.
 *
 * The hot path makes one helper call, bpf_sk_storage_get: a helper call costs
 * about as much as the rest of a hook (some 20 ns where returns are mitigated,
 * as on AMD hosts with Safe RET). So the hooks read tcp_sock only with plain loads
 * (never through bpf_skc_to_tcp_sock or probed reads), and they ask who is calling
 * (pid, comm, cgroup) once per connection and read epoch, not on every call.
 *
 * How UDP bytes are counted. A flow is one socket and one peer, so an
 * unconnected socket has a flow for each address it talks to. A send or receive
 * call returns exactly the payload it moved (no running totals), so that is
 * added as it is; MSG_PEEK and error-queue reads move nothing. The peer is the
 * address the call named or was told (the kernel's copy in msg_name), else the
 * socket's connected peer: all zero for a receive on an unconnected socket that
 * does not ask who sent (recv, read). A flow idle for longer than udp_idle_ns is
 * reported once more by the table dump, then deleted.
 *
 * Three sets of counting hooks run the same handlers; user space chooses them, and
 * each other part (where TCP state lives, how the table is read, the UDP hooks),
 * by what this kernel loads and attaches (src/ebpf/plan.rs):
 *   fentry:     fexit/tcp_sendmsg, fentry/tcp_cleanup_rbuf, tp_btf state hooks;
 *               fexit/udp{,v6}_{send,recv}msg
 *   kprobe:     kprobe+kretprobe/tcp_sendmsg, kprobe/tcp_cleanup_rbuf, raw_tp
 *               state hooks (the same tracepoints, without needing tracefs);
 *               kprobe+kretprobe/udp{,v6}_{send,recv}msg
 *   tracepoint: tp_btf/sock_send_length and sock_recv_length (6.3+, both
 *               protocols), tp_btf state hooks; as these tracepoints do not
 *               carry a UDP peer, cgroup/{send,recv}msg{4,6}, which run in the
 *               same call, leave it per thread
 * BTF-typed programs (fentry, tp_btf, iterators) keep per-connection state in
 * socket-local storage from Linux 5.11; kprobe and raw_tp programs may not use
 * it, so they (and all on older kernels) key a hash map by the socket's address
 * (`conns_in_hash`); either leads to the connection's slot in `conns`. UDP flows,
 * several per socket, live in a hash keyed by socket and peer for every plan. The
 * walk is a map iterator, or where the kernel refuses those, iter/tcp in each
 * network namespace (UDP flows are then read from user space).
 *
 * To add a probe: write a SEC() program that finds the connection (conn_of) and
 * calls one of the handlers below (count_sent, count_received, on_state_change,
 * destroyed; count_datagram for UDP), then list it with its part in
 * src/ebpf/plan.rs.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "tcptop.h"

_Static_assert(sizeof(struct conn) == 192, "a slot of `conns` is three whole cache lines");

#define AF_INET 2
#define AF_INET6 10
#define MSG_PEEK 2
#define MSG_ERRQUEUE 0x2000
#define RCV_SHUTDOWN 1

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Settings, fixed by user space between open and load (0 = no filter). */
const volatile __u32 filter_pid = 0;
const volatile __u16 filter_port = 0;
const volatile __u16 filter_family = 0;
const volatile __u64 filter_cgroup = 0;	/* cgroup v2 id (the cgroup directory's inode) */
const volatile __u8 filter_proto = 0;	/* IPPROTO_TCP or IPPROTO_UDP */
const volatile __u64 udp_idle_ns = 10000000000;	/* a UDP flow this long without a datagram is over */

/* The plan: which of its ways each part of this file uses on this kernel, chosen by user
 * space before load (src/ebpf/plan.rs). The verifier drops the branches not taken, so a
 * program may name a helper or map that this kernel refuses in a branch it never takes. */
const volatile bool conns_in_hash = false;	/* TCP state in hash_conns, not socket storage */
const volatile bool tracepoints_count_tcp = true;	/* sock_*_length count TCP */
const volatile bool tracepoints_count_udp = true;	/* sock_*_length count UDP */
/* udp{,v6}_recvmsg take (sk, msg, len, noblock, flags, addr_len) before Linux 5.19, and
 * (sk, msg, len, flags, ...) since: where their flags are, by the kernel's BTF. */
const volatile bool udp_recvmsg_has_noblock = false;
/* The TCP hooks sample the socket at every call, so that a read of the table needs to look only
 * at the connections that changed (set where bpf_rdonly_cast makes tcp_sock's fields plain
 * loads and the hooks see every send and read, src/ebpf/plan.rs). */
const volatile bool hooks_sample = false;
/* Slots in `conns`, as user space sized it. */
const volatile __u32 slot_count = 0;

struct drop_counters drops = {};

/* Instances only so that the skeleton generates these types, which user space reads from
 * the ring buffer and the UDP flow map. */
struct conn_event unused_conn_event = {};
struct conn unused_conn = {};
struct udp_flow_key unused_udp_flow_key = {};

/* Every TCP connection, in user space's memory map: a read of the table copies the slots that
 * `changed` names, with no kernel walk. User space sizes it to the host before load. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct conn);
} conns SEC(".maps");

/* Slots ready for a new connection: user space hands out fresh ones, a destroyed
 * connection's returns here. */
struct {
	__uint(type, BPF_MAP_TYPE_QUEUE);
	__uint(max_entries, 16384);
	__type(value, __u32);
} free_slots SEC(".maps");

/* The slots of the connections that changed in the current read epoch, each once; user
 * space sizes it with `conns`. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} changed SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct conn_ref);
} sk_conns SEC(".maps");

/* Preallocated, as every hash here: one allocated at run time in a kprobe or raw_tp program
 * makes Linux before 5.13 print a WARNING and taint itself (and panic with panic_on_warn). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);	/* as many as `conns`, set by user space */
	__type(key, __u64);	/* the socket's kernel address */
	__type(value, struct conn_ref);
} hash_conns SEC(".maps");

/* kprobe strategy: tcp_sendmsg's socket, from entry to return, by thread id. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u64);
} sendmsg_sockets SEC(".maps");

/* UDP flows, for every strategy: a socket has one per peer. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct udp_flow_key);
	__type(value, struct conn);
} udp_flows SEC(".maps");

/* kprobe strategy: a UDP call's arguments, from entry to return, by thread id. */
struct udp_call {
	__u64 sk;
	__u64 msg;
	__s32 flags;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct udp_call);
} udp_calls SEC(".maps");

/* tracepoint strategy: the peer a cgroup sock_addr hook saw, by thread id, for the
 * sock_*_length tracepoint that ends the same call. */
struct peer_note {
	__u64 sock_cookie;	/* the socket the call is on */
	struct udp_peer peer;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct peer_note);
} udp_peers SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1024 * 1024);	/* some 6,500 events: a burst of short connections */
} events SEC(".maps");

/* The rows of the last read of the UDP flows, in user space's memory map. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct conn_info);
} table SEC(".maps");

/* User space starts each read of the table with a new epoch: a connection's first change in
 * an epoch puts its slot on `changed`, its first send or read names its owner again. */
__u32 read_epoch = 1;
__u32 table_rows = 0;	/* rows of the current read of the UDP flows, in `table` or beyond its end */
/* adopt_tcp_socks runs in one or, on a host of two CPUs or more, two of user space's threads at
 * once: each claims the sockets of its half of the hash and takes every other slot of those user
 * space has not handed out, from its own cursor, so the two never take the same one. */
__u32 next_fresh_slot[2] = {};
__u32 second_adopter_tid = 0;	/* 0: one thread adopts */
__u64 slots_taken = 0;	/* from free_slots */
__u64 slots_returned = 0;	/* to free_slots */
/* Where the hooks sample: walks that found bytes moved that no hook had counted (splice reads
 * under the tracepoint hooks, kTLS sends under fentry), which tell user space to walk more often. */
__u64 unhooked_moves = 0;

/* A field of a kernel object (a one-level path): where hooks_sample (the kernel has
 * bpf_rdonly_cast, which the verifier turns into no instruction) a plain load, else a
 * probed read, which is a helper call. */
#define KREAD(type, ptr, field) \
	(hooks_sample ? bpf_core_cast(ptr, type)->field : BPF_CORE_READ((type *)(ptr), field))

/* A tcp_sock field, read as KREAD reads where `plain` is hooks_sample. The hooks, which run only
 * where it is set, pass a constant true: `tp` comes from one cast and each field is one load,
 * with no test of hooks_sample (a volatile setting, loaded again at each test). */
#define TCP_FIELD(plain, tp, field) ((plain) ? (tp)->field : BPF_CORE_READ(tp, field))

/* sk as the tcp_sock that TCP_FIELD(plain, ...) reads. */
static __always_inline struct tcp_sock *tcp_of(struct sock *sk, bool plain)
{
	return plain ? bpf_core_cast(sk, struct tcp_sock) : (struct tcp_sock *)sk;
}

/* Whether --tcp / --udp let this protocol through. */
static __always_inline bool counts(__u8 proto)
{
	return !filter_proto || filter_proto == proto;
}

/* Whether the --pid and --cgroup filters let the current thread's traffic through
 * (without them, the verifier drops the helper calls as dead code). */
static __always_inline bool thread_wanted(void)
{
	return (!filter_pid || bpf_get_current_pid_tgid() >> 32 == filter_pid) &&
	       (!filter_cgroup || bpf_get_current_cgroup_id() == filter_cgroup);
}

/* Sending is possible until our FIN is queued; after that write_seq counts it. */
static __always_inline bool can_send(int state)
{
	return state == TCP_ESTABLISHED || state == TCP_CLOSE_WAIT;
}

static __always_inline bool reportable(const struct conn *c)
{
	return c->info.id && !c->ignored && (!filter_pid || c->info.pid == filter_pid) &&
	       (!filter_cgroup || c->info.cgroup_id == filter_cgroup);
}

/* How far behind the total a reading of a sequence counter can be, when another CPU
 * stored a newer total between this one's reading and its store: such a reading adds
 * nothing. Any larger distance is a real advance, up to 4 GiB minus this. */
#define STALE_LIMIT (1u << 30)

/* Brings `total` up to the sequence counter's reading `seq`: the total is the counter's
 * advance since `base`, its 32-bit difference extended by what the total already holds.
 * A store, not an add: two CPUs sampling at once each store a count that was true at their
 * reading, so the same bytes are never counted twice and no atomics are needed; a stale
 * store that lands last is corrected by the next sample (user space keeps the largest). */
static __always_inline void advance(__u32 base, __u64 *total, __u32 seq)
{
	__u64 counted = *(volatile __u64 *)total;
	__u32 delta = seq - base - (__u32)counted;

	if (delta && delta < -STALE_LIMIT)
		*(volatile __u64 *)total = counted + delta;
}

/* Orders the memory accesses before it before the ones after it, for the compiler (x86 keeps
 * stores in order, and loads). */
#define barrier() asm volatile("" ::: "memory")

/* copied_seq counts the peer's FIN once the reader reaches it: stop there. */
static __always_inline __u32 read_end(const struct conn *c, __u32 copied_seq)
{
	if (c->fin_seen && (__s32)(copied_seq - c->fin_seq) > 0)
		return c->fin_seq;
	return copied_seq;
}

/* The bytes the reader has taken, in 64 bits, so that no gap between samples is too long:
 * all that arrived in order (bytes_received, the FIN included) less what still waits past
 * read_end. bytes_received is read first, and the softirq that receives stores it before
 * rcv_nxt, so a sample racing a receive can count less than was read, never more. */
static __always_inline __u64 bytes_read(const struct conn *c, struct sock *sk, bool plain)
{
	struct tcp_sock *tp = tcp_of(sk, plain);
	__u64 received = TCP_FIELD(plain, tp, bytes_received);
	__u32 rcv_nxt, copied_seq;

	barrier();
	rcv_nxt = TCP_FIELD(plain, tp, rcv_nxt);
	copied_seq = read_end(c, TCP_FIELD(plain, tp, copied_seq));
	return received - (rcv_nxt - copied_seq);
}

/* An IPv4 address where 16 bytes are kept: the first 4 for an IPv4 socket,
 * ::ffff:a.b.c.d for an IPv6 one. */
static __always_inline void put_ipv4(__u8 *addr, __be32 ip, __u16 sk_family)
{
	if (sk_family == AF_INET6) {
		addr[10] = 0xff;
		addr[11] = 0xff;
		__builtin_memcpy(addr + 12, &ip, 4);
	} else {
		__builtin_memcpy(addr, &ip, 4);
	}
}

/* One of sk's IPv6 addresses, the sock_common `field`, into the 16 bytes at `to`: as KREAD,
 * a plain copy or a probed read. */
#define READ_IPV6(to, sk, field)                                                              \
	(hooks_sample ? (void)__builtin_memcpy(to, &bpf_core_cast(sk, struct sock)->__sk_common.field, 16) \
		      : (void)bpf_core_read(to, 16, &(sk)->__sk_common.field))

/* The peer sk is connected to (all zero for an unconnected UDP socket). */
static __always_inline void read_peer(struct sock *sk, __u16 family, __u8 *addr, __u16 *port)
{
	*port = bpf_ntohs(KREAD(struct sock, sk, __sk_common.skc_dport));
	if (family == AF_INET6)
		READ_IPV6(addr, sk, skc_v6_daddr);
	else
		put_ipv4(addr, KREAD(struct sock, sk, __sk_common.skc_daddr), family);
}

/* The socket's own end: family, network namespace, local address and port. */
static __always_inline void read_local_end(struct conn *c, struct sock *sk)
{
	__u16 family = KREAD(struct sock, sk, __sk_common.skc_family);

	c->info.family = family;
	c->info.netns = hooks_sample ? bpf_core_cast(sk, struct sock)->__sk_common.skc_net.net->ns.inum
				     : BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
	c->info.lport = bpf_ntohs(KREAD(struct inet_sock, sk, inet_sport));
	if (family == AF_INET6)
		READ_IPV6(c->info.laddr, sk, skc_v6_rcv_saddr);
	else
		put_ipv4(c->info.laddr, KREAD(struct sock, sk, __sk_common.skc_rcv_saddr), family);
}

/* Whether the --port / -4 / -6 filters let a connection of this family and ports through. */
static __always_inline bool tuple_wanted(__u16 family, __u16 lport, __u16 rport)
{
	return (!filter_family || family == filter_family) &&
	       (!filter_port || lport == filter_port || rport == filter_port);
}

/* The filters, once the tuple is known. */
static __always_inline void apply_filters(struct conn *c)
{
	c->ignored = !tuple_wanted(c->info.family, c->info.lport, c->info.rport);
}

/* The tuple, read when a connection is first seen and at each state change
 * (ports and addresses are settled during the handshake), never per byte. */
static __always_inline void read_identity(struct conn *c, struct sock *sk)
{
	read_local_end(c, sk);
	read_peer(sk, c->info.family, c->info.raddr, &c->info.rport);
	apply_filters(c);
}

/* The inode of sk's socket, which /proc/<pid>/fd names too; 0 if none. The
 * socket is the first member of its socket_alloc, with the inode after it. */
static __always_inline __u64 socket_ino(struct sock *sk)
{
	struct socket *sock = KREAD(struct sock, sk, sk_socket);

	return sock ? KREAD(struct socket_alloc, container_of(sock, struct socket_alloc, socket), vfs_inode.i_ino) : 0;
}

/* Notes where the peer's FIN is, once it arrived: rcv_nxt has moved past it. */
static __always_inline void note_fin(struct conn *c, struct sock *sk)
{
	if (c->fin_seen)
		return;
	c->fin_seq = KREAD(struct tcp_sock, sk, rcv_nxt) - 1;
	c->fin_seen = 1;
}

/* Whether the peer's FIN has arrived by the time a socket is in `state`. */
static __always_inline bool fin_received(int state)
{
	return state == TCP_CLOSE_WAIT || state == TCP_CLOSING || state == TCP_LAST_ACK;
}

/* Whether this transition is the peer's FIN arriving. In FIN_WAIT2 the FIN ends the
 * socket (time-wait, seen as CLOSE) after setting RCV_SHUTDOWN. close() sets that flag
 * too, so alone it is no FIN, but a closed socket is read no more. */
static __always_inline bool fin_arrives(struct sock *sk, int old_state, int new_state)
{
	return fin_received(new_state) ||
	       (old_state == TCP_FIN_WAIT2 && new_state == TCP_CLOSE &&
		(BPF_CORE_READ_BITFIELD_PROBED(sk, sk_shutdown) & RCV_SHUTDOWN));
}


/* A new slot's tuple and baselines, written by the one program that created the slot. */
static __always_inline void claim(struct conn *c, struct sock *sk)
{
	struct tcp_sock *tp = (struct tcp_sock *)sk;
	int state;

	c->info.proto = IPPROTO_TCP;
	read_identity(c, sk);
	state = KREAD(struct sock, sk, __sk_common.skc_state);
	if (fin_received(state))
		note_fin(c, sk);
	c->info.state = state;
	c->tx_base = KREAD(struct tcp_sock, tp, write_seq);
	c->rx_base = bytes_read(c, sk, hooks_sample);
	/* Published after the bases: a table read on another CPU that sees `counting` must
	 * not sample against a base of 0. Before the handshake ends the sequence numbers are
	 * not set yet. */
	barrier();
	c->counting = state != TCP_SYN_SENT && state != TCP_SYN_RECV && state != TCP_CLOSE;
}

/* Who owns a connection: the thread that first sends or reads on it after each read
 * of the table (comm is per thread). Asking takes three helper calls, more than the
 * rest of a hook, so it is asked once per connection and interval, not per call.
 * Only process-context hooks call this: state changes often run in softirq, on
 * whoever's time. */
static __always_inline void name_owner(struct conn *c)
{
	c->info.pid = bpf_get_current_pid_tgid() >> 32;
	c->info.cgroup_id = bpf_get_current_cgroup_id();
	bpf_get_current_comm(&c->info.comm, sizeof(c->info.comm));
}

static __always_inline void attribute(struct conn *c)
{
	__u32 epoch = read_epoch;

	if (c->named_epoch != epoch) {
		c->named_epoch = epoch;
		name_owner(c);
	}
}

/* Puts a TCP connection's slot on `changed`, once per read epoch, for the next read to list.
 * A hook that saw the old epoch just as user space began a read may leave a change the read
 * misses: the next change, or the next read of every slot, lists it. */
static __always_inline void touch(struct conn *c)
{
	__u32 epoch = read_epoch;

	if (c->listed_epoch == epoch)
		return;
	c->listed_epoch = epoch;
	if (bpf_ringbuf_output(&changed, &c->slot, sizeof(c->slot), BPF_RB_NO_WAKEUP))
		__sync_fetch_and_add(&drops.changes_lost, 1);
}

static __always_inline void emit(const struct conn *c, __u8 kind, __u8 old_state, __u8 new_state)
{
	struct conn_event *e;

	if (!reportable(c))
		return;
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		__sync_fetch_and_add(&drops.events_lost, 1);
		return;
	}
	e->timestamp_ns = bpf_ktime_get_ns();
	e->info = c->info;
	e->kind = kind;
	e->old_state = old_state;
	e->new_state = new_state;
	bpf_ringbuf_submit(e, 0);
}

/* The kernel's own health figures, as TCP_INFO reports them (tcpi_total_retrans, tcpi_rtt,
 * tcpi_rttvar, tcpi_min_rtt): read where a connection is sampled by a hook, a walk, a state
 * change, a retransmit or its destruction. total_retrans
 * counts every retransmitted segment, SYNs included, so it is exact where a hook on
 * tcp_retransmit_skb could miss none. */
static __always_inline void read_health(struct conn *c, struct sock *sk, bool plain)
{
	struct tcp_sock *tp = tcp_of(sk, plain);
	__u32 srtt = TCP_FIELD(plain, tp, srtt_us);

	c->info.retrans = TCP_FIELD(plain, tp, total_retrans);
	c->info.health_read = 1;
	/* srtt_us stays 0 until the first RTT sample. */
	if (!srtt)
		return;
	c->info.srtt_us = srtt >> 3;
	c->info.rttvar_us = TCP_FIELD(plain, tp, mdev_us) >> 2;
	c->info.min_rtt_us = TCP_FIELD(plain, tp, rtt_min.s[0].v);
	c->info.rtt_known = 1;
}

/* The handshake's time, from the state changes: SYN_SENT (connect) or SYN_RECV (the full
 * socket of a passive open, which Linux makes when the handshake's last ACK arrives, or at
 * the SYN with Fast Open) to ESTABLISHED, or SYN_SENT to CLOSE, a connect that failed. */
static __always_inline void time_handshake(struct conn *c, int old_state, int new_state)
{
	bool handshaking = old_state == TCP_SYN_SENT || old_state == TCP_SYN_RECV;
	bool failed = old_state == TCP_SYN_SENT && new_state == TCP_CLOSE;

	/* Until connect_known, connect_ns holds when the handshake began (user space reads it
	 * only once known). */
	if (new_state == TCP_SYN_SENT || new_state == TCP_SYN_RECV) {
		c->info.connect_ns = bpf_ktime_get_ns();
	} else if (c->info.connect_ns && !c->info.connect_known && handshaking &&
		   (new_state == TCP_ESTABLISHED || failed)) {
		c->info.connect_ns = bpf_ktime_get_ns() - c->info.connect_ns;
		c->info.connect_failed = failed;
		barrier();
		c->info.connect_known = 1;
	}
}

/* Adds what the sequence counters advanced since the last sample; the socket is, or
 * was until this moment, in `state`. */
static __always_inline void sample_sent(struct conn *c, struct sock *sk, int state, bool plain)
{
	if (c->counting && can_send(state))
		advance(c->tx_base, &c->info.tx_bytes, TCP_FIELD(plain, tcp_of(sk, plain), write_seq));
}

/* A store of the larger reading, as in `advance`. */
static __always_inline void sample_read(struct conn *c, struct sock *sk, bool plain)
{
	__u64 read;

	if (!c->counting)
		return;
	read = bytes_read(c, sk, plain) - c->rx_base;
	if ((__s64)(read - *(volatile __u64 *)&c->info.rx_bytes) > 0)
		*(volatile __u64 *)&c->info.rx_bytes = read;
}

static __always_inline void sample(struct conn *c, struct sock *sk, int state)
{
	c->unsampled = 0;
	sample_sent(c, sk, state, hooks_sample);
	sample_read(c, sk, hooks_sample);
}

/* A send (`sent`) or read hook's sample of that side and the health figures, where
 * hooks_sample: a few plain loads, no helper calls, so that a read lists the RTT of the
 * connection's last call. The first in a read epoch puts the slot on `changed`. */
static __always_inline void sample_in_call(struct conn *c, struct sock *sk, bool sent)
{
	if (sent)
		sample_sent(c, sk, bpf_core_cast(sk, struct sock)->__sk_common.skc_state, true);
	else
		sample_read(c, sk, true);
	read_health(c, sk, true);
	touch(c);
}

/* How many bytes the hooks let pass before they sample: with one more call of the
 * largest size (MAX_RW_COUNT, just under 2 GiB) still short of what `advance` takes
 * as an advance, and far above what moves between two reads of the table on most
 * connections. */
#define SAMPLE_DISTANCE (1u << 29)

/* A call moved about `bytes` (tcp_cleanup_rbuf's running totals may say more). This
 * only decides when to sample, never what is counted, so a lost update between two
 * CPUs costs nothing and a plain add does. */
static __always_inline void moved(struct conn *c, struct sock *sk, int bytes)
{
	c->unsampled += bytes;
	if (c->unsampled >= SAMPLE_DISTANCE)
		sample(c, sk, BPF_CORE_READ(sk, __sk_common.skc_state));
}

/* A send call on sk accepted `accepted` > 0 bytes; write_seq is after it. Calls that
 * moved nothing (EAGAIN, errors) are left out before the storage lookup: they change
 * no count, and non-blocking servers make many. */
static __always_inline void count_sent(struct conn *c, bool created, struct sock *sk, int accepted)
{
	/* First sight mid-connection (it predates tcptop): this call's bytes count. */
	if (created) {
		claim(c, sk);
		c->tx_base -= accepted;
	}
	if (c->ignored)
		return;
	attribute(c);
	if (hooks_sample)
		sample_in_call(c, sk, true);
	else
		moved(c, sk, accepted);
}

/* A read on sk handed `copied` > 0 bytes to the reader; copied_seq is after it. */
static __always_inline void count_received(struct conn *c, bool created, struct sock *sk, int copied)
{
	if (created) {
		claim(c, sk);
		c->rx_base -= copied;
	}
	if (c->ignored)
		return;
	attribute(c);
	if (hooks_sample)
		sample_in_call(c, sk, false);
	else
		moved(c, sk, copied);
}

/* Which transitions start tracking a connection we have not seen yet. */
static __always_inline bool opens(int new_state)
{
	return new_state == TCP_SYN_SENT || new_state == TCP_SYN_RECV || new_state == TCP_ESTABLISHED;
}

/* inet_sock_set_state fires before sk_state changes: the counters still
 * describe `old_state`. */
static __always_inline void on_state_change(struct conn *c, bool created, struct sock *sk,
					    int old_state, int new_state)
{
	struct tcp_sock *tp = (struct tcp_sock *)sk;

	if (created)
		claim(c, sk);
	read_identity(c, sk);
	read_health(c, sk, hooks_sample);
	time_handshake(c, old_state, new_state);
	if (fin_arrives(sk, old_state, new_state))
		note_fin(c, sk);
	if (new_state == TCP_ESTABLISHED && (old_state == TCP_SYN_SENT || old_state == TCP_SYN_RECV)) {
		/* The data phase begins: nothing was written or read yet. */
		c->tx_base = KREAD(struct tcp_sock, tp, write_seq);
		c->rx_base = bytes_read(c, sk, hooks_sample);
		barrier();
		c->counting = 1;
	} else {
		/* The last sample before our FIN (or a reset) ends the sending side. */
		sample(c, sk, old_state);
	}
	/* connect() runs in the caller's context: the one state change that may name the
	 * owner, until the first send or read names the thread that does the talking. */
	if (new_state == TCP_SYN_SENT)
		name_owner(c);
	c->info.state = new_state;
	touch(c);
	emit(c, CONN_EVENT_STATE, old_state, new_state);
}

/* The socket is being freed: report its final totals once. */
static __always_inline void on_destroy(struct conn *c, struct sock *sk)
{
	read_health(c, sk, hooks_sample);
	sample(c, sk, TCP_CLOSE);
	emit(c, CONN_EVENT_CLOSED, c->info.state, TCP_CLOSE);
}

static __always_inline struct conn *find_conn(struct sock *sk);
static __always_inline void release_slot(__u32 slot);

/* tcp_destroy_sock: the last word on a connection. Its slot is free once the close event
 * carries its final totals; the socket's way to it goes first, so nothing finds it again. */
static __always_inline void destroyed(struct sock *sk)
{
	__u64 key = (__u64)sk;
	struct conn *c = find_conn(sk);
	__u32 slot;

	if (!c)
		return;
	on_destroy(c, sk);
	slot = c->slot;
	if (conns_in_hash)
		bpf_map_delete_elem(&hash_conns, &key);
	else
		bpf_sk_storage_delete(&sk_conns, sk);
	release_slot(slot);
}

/* ---- Finding a connection's slot ---------------------------------------- */

/* A new slot's id: 64 random bits, never 0. Random rather than counted, as counting needs a
 * fetching atomic, which Linux before 5.12 refuses in any instruction of a program, even
 * one never run: two ids alike among a million connections is about one chance in 3e7. */
static __always_inline __u64 new_id(void)
{
	__u64 id = (__u64)bpf_get_prandom_u32() << 32 | bpf_get_prandom_u32();

	return id ?: 1;
}

/* Which of the adopting threads runs this program: 1 for the second, else 0. */
static __always_inline __u32 adopter(void)
{
	return second_adopter_tid && (__u32)bpf_get_current_pid_tgid() == second_adopter_tid;
}

/* A slot for a new connection: from free_slots, or for adopt_tcp_socks the next one of its
 * thread's cursor (each thread's cursor is its own: a plain add). */
static __always_inline bool take_slot(bool adopting, __u32 *slot)
{
	if (adopting) {
		__u32 *next = &next_fresh_slot[adopter()];

		if (*next >= slot_count)
			return false;
		*slot = *next;
		*next += second_adopter_tid ? 2 : 1;
		return true;
	}
	if (bpf_map_pop_elem(&free_slots, slot))
		return false;
	__sync_fetch_and_add(&slots_taken, 1);
	return true;
}

/* Empties a slot and gives it back. Its id goes first: user space lists no slot without one,
 * and a hook that still holds it counts nothing once `counting` is clear. */
static __always_inline void release_slot(__u32 slot)
{
	struct conn *c = bpf_map_lookup_elem(&conns, &slot);

	if (c) {
		c->info.id = 0;
		c->counting = 0;
	}
	bpf_map_push_elem(&free_slots, &slot, 0);
	__sync_fetch_and_add(&slots_returned, 1);
}

/* A fresh connection in a slot of its own, ready before any other program can find it: only
 * its id and slot set, the id last, as user space tells a used slot by it. */
static __always_inline struct conn *new_conn(bool adopting, __u32 *slot)
{
	struct conn *c;

	if (!take_slot(adopting, slot) || !(c = bpf_map_lookup_elem(&conns, slot))) {
		__sync_fetch_and_add(&drops.conns_untracked, 1);
		return NULL;
	}
	c->info.id = 0;
	barrier();
	__builtin_memset(c, 0, sizeof(*c));
	c->slot = *slot;
	barrier();
	c->info.id = new_id();
	return c;
}

/* The connection a socket storage or hash entry leads to. The slot number is copied first:
 * a map iterator's value is a buffer that Linux before 6.2 does not take as a map key. */
static __always_inline struct conn *conn_at(const struct conn_ref *ref)
{
	__u32 slot;

	if (!ref)
		return NULL;
	slot = ref->slot;
	return bpf_map_lookup_elem(&conns, &slot);
}

/* The connection of a socket, in socket-local storage (freed with the socket, no size limit,
 * no hashing) or in the hash of the plans that may not use it; made if `create` and missing.
 * Of programs racing to make it, the one whose slot the socket got created it (`*created`)
 * and claims it; the others give theirs back. */
static __always_inline struct conn *conn_of_socket(struct sock *sk, bool create, bool adopting, bool *created)
{
	struct conn_ref *ref, fresh;
	__u64 key = (__u64)sk;
	struct conn *c;

	*created = false;
	/* Adoption skips the lookup: it meets each socket before anything else does, mostly. */
	if (!adopting || conns_in_hash) {
		ref = conns_in_hash ? bpf_map_lookup_elem(&hash_conns, &key)
				    : bpf_sk_storage_get(&sk_conns, sk, 0, 0);
		if (ref || !create)
			return conn_at(ref);
	}
	if (!(c = new_conn(adopting, &fresh.slot)))
		return NULL;
	if (conns_in_hash) {
		*created = bpf_map_update_elem(&hash_conns, &key, &fresh, BPF_NOEXIST) == 0;
		ref = bpf_map_lookup_elem(&hash_conns, &key);
	} else {
		ref = bpf_sk_storage_get(&sk_conns, sk, &fresh, BPF_SK_STORAGE_GET_F_CREATE);
		*created = ref && ref->slot == fresh.slot;
	}
	if (!*created) {
		release_slot(fresh.slot);
		if (!ref)
			__sync_fetch_and_add(&drops.conns_untracked, 1);
	}
	return conn_at(ref);
}

/* The UDP flow under `key`, made with a new id if `create` and missing; `*created` for the
 * one program whose insertion made it. */
static __always_inline struct conn *conn_in(void *map, const void *key, bool create, bool *created)
{
	struct conn *c = bpf_map_lookup_elem(map, key);
	struct conn fresh = {};

	*created = false;
	if (c || !create)
		return c;
	fresh.info.id = new_id();
	*created = bpf_map_update_elem(map, key, &fresh, BPF_NOEXIST) == 0;
	c = bpf_map_lookup_elem(map, key);
	if (!c) {
		*created = false;
		__sync_fetch_and_add(&drops.conns_untracked, 1);
	}
	return c;
}

/* The connection's slot, made if missing. */
static __always_inline struct conn *conn_of(struct sock *sk, bool *created)
{
	return conn_of_socket(sk, true, false, created);
}

/* The connection's slot, if it has one. */
static __always_inline struct conn *find_conn(struct sock *sk)
{
	bool created;

	return conn_of_socket(sk, false, false, &created);
}

/* The slot of a TCP state change: one that opens a connection makes it. */
static __always_inline struct conn *conn_of_change(struct sock *sk, int new_state, bool *created)
{
	*created = false;
	return opens(new_state) ? conn_of(sk, created) : find_conn(sk);
}

/* ---- UDP ------------------------------------------------------------------ */

/* Whether a receive with these flags takes payload: a peek or an error-queue read does not. */
static __always_inline bool reads_payload(int flags)
{
	return !(flags & (MSG_PEEK | MSG_ERRQUEUE));
}

/* The peer in a sockaddr, as a UDP socket of `sk_family` keys it; false if it is
 * neither IPv4 nor IPv6. */
static __always_inline bool peer_of_sockaddr(struct udp_peer *p, const struct sockaddr *sa, __u16 sk_family)
{
	const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;
	const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;

	switch (BPF_CORE_READ(sa, sa_family)) {
	case AF_INET:
		put_ipv4(p->addr, BPF_CORE_READ(sin, sin_addr.s_addr), sk_family);
		p->port = bpf_ntohs(BPF_CORE_READ(sin, sin_port));
		return true;
	case AF_INET6:
		bpf_core_read(p->addr, 16, &sin6->sin6_addr);
		p->port = bpf_ntohs(BPF_CORE_READ(sin6, sin6_port));
		return true;
	}
	return false;
}

/* The peer of a send or receive call: the address it named or was told (the
 * kernel's copy in msg_name, always given to recvmsg, to recvfrom when asked), else
 * the socket's connected peer. */
static __always_inline void peer_of_call(struct udp_peer *p, struct sock *sk, struct msghdr *msg)
{
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
	const struct sockaddr *name = BPF_CORE_READ(msg, msg_name);

	if (!name || !peer_of_sockaddr(p, name, family))
		read_peer(sk, family, p->addr, &p->port);
}

/* A new flow's tuple: the socket's end, and the peer from its key. */
static __always_inline void claim_flow(struct conn *c, struct sock *sk, const struct udp_flow_key *key)
{
	c->info.proto = IPPROTO_UDP;
	c->info.sock_ino = key->sock_ino;
	read_local_end(c, sk);
	__builtin_memcpy(c->info.raddr, key->peer.addr, sizeof(c->info.raddr));
	c->info.rport = key->peer.port;
	apply_filters(c);
}

/* A UDP send (`sent`) or receive call on sk moved `bytes` > 0 of payload to or from `peer`. */
static __always_inline void count_datagram(struct sock *sk, const struct udp_peer *peer, int bytes,
					   bool sent)
{
	struct udp_flow_key key = { .peer = *peer };
	struct conn *c;
	bool created;

	key.sock_ino = socket_ino(sk);
	if (!(c = conn_in(&udp_flows, &key, true, &created)))
		return;
	if (created)
		claim_flow(c, sk, &key);
	if (c->ignored)
		return;
	attribute(c);
	/* Before the bytes: a flow with last_ns 0 would look idle to the dump. */
	c->last_ns = bpf_ktime_get_ns();
	__sync_fetch_and_add(sent ? &c->info.tx_bytes : &c->info.rx_bytes, bytes);
}

/* ---- fentry strategy ------------------------------------------------------ */

SEC("fexit/tcp_sendmsg")
int BPF_PROG(fexit_tcp_sendmsg, struct sock *sk, struct msghdr *msg, size_t size, int ret)
{
	struct conn *c;
	bool created;

	if (ret > 0 && thread_wanted() && (c = conn_of(sk, &created)))
		count_sent(c, created, sk, ret);
	return 0;
}

/* Called after every read path (recvmsg, splice, zerocopy) has moved copied_seq. */
SEC("fentry/tcp_cleanup_rbuf")
int BPF_PROG(fentry_tcp_cleanup_rbuf, struct sock *sk, int copied)
{
	struct conn *c;
	bool created;

	if (copied > 0 && thread_wanted() && (c = conn_of(sk, &created)))
		count_received(c, created, sk, copied);
	return 0;
}

/* A UDP call returned `ret`; the peer is read after it, when msg_name is filled in. */
static __always_inline void udp_call_returned(struct sock *sk, struct msghdr *msg, int ret, bool sent)
{
	struct udp_peer peer = {};

	if (ret <= 0 || sk->sk_protocol != IPPROTO_UDP || !thread_wanted())
		return;
	peer_of_call(&peer, sk, msg);
	count_datagram(sk, &peer, ret, sent);
}

/* An IPv6 socket's send to an IPv4 peer runs udp_sendmsg inside udpv6_sendmsg:
 * only the outer call counts. */
SEC("fexit/udp_sendmsg")
int BPF_PROG(fexit_udp_sendmsg, struct sock *sk, struct msghdr *msg, size_t len, int ret)
{
	if (sk->__sk_common.skc_family == AF_INET)
		udp_call_returned(sk, msg, ret, true);
	return 0;
}

SEC("fexit/udpv6_sendmsg")
int BPF_PROG(fexit_udpv6_sendmsg, struct sock *sk, struct msghdr *msg, size_t len, int ret)
{
	udp_call_returned(sk, msg, ret, true);
	return 0;
}

/* The recvmsg handlers lost their addr_len argument after Linux 6.12 (6.18 has none):
 * bpf_get_func_ret finds the return value either way. */
static __always_inline void udp_recvmsg_returned(__u64 *ctx, struct sock *sk, struct msghdr *msg)
{
	/* Both read, then one chosen: a load from a chosen offset of ctx is refused. The
	 * slot after the flags is an argument or the return value, readable either way. */
	__u64 after_noblock = ctx[4], after_len = ctx[3];
	int flags = udp_recvmsg_has_noblock ? after_noblock : after_len;
	__u64 ret = 0;

	if (reads_payload(flags) && !bpf_get_func_ret(ctx, &ret))
		udp_call_returned(sk, msg, ret, false);
}

SEC("fexit/udp_recvmsg")
int BPF_PROG(fexit_udp_recvmsg, struct sock *sk, struct msghdr *msg)
{
	udp_recvmsg_returned(ctx, sk, msg);
	return 0;
}

SEC("fexit/udpv6_recvmsg")
int BPF_PROG(fexit_udpv6_recvmsg, struct sock *sk, struct msghdr *msg)
{
	udp_recvmsg_returned(ctx, sk, msg);
	return 0;
}

/* ---- tracepoint strategy (sock_*_length exist from Linux 6.3) ------------ */

/* A UDP call on sk ended: takes the peer its cgroup hook left, if it left one for
 * this socket, so that a later call without an address never inherits it. */
static __always_inline void udp_length(struct sock *sk, int ret, bool sent)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct peer_note *note = bpf_map_lookup_elem(&udp_peers, &tid);
	struct udp_peer peer = {};
	bool noted = false;

	if (note) {
		noted = note->sock_cookie == bpf_get_socket_cookie(sk);
		peer = note->peer;
		bpf_map_delete_elem(&udp_peers, &tid);
	}
	if (ret <= 0)
		return;
	if (!noted)
		read_peer(sk, sk->__sk_common.skc_family, peer.addr, &peer.port);
	count_datagram(sk, &peer, ret, sent);
}

/* Both protocols, told apart by sk_protocol (the sockets here are full sockets). */
SEC("tp_btf/sock_send_length")
int BPF_PROG(tp_sock_send_length, struct sock *sk, int ret, int flags)
{
	struct conn *c;
	bool created;

	if (!thread_wanted())
		return 0;
	if (sk->sk_protocol == IPPROTO_TCP) {
		if (tracepoints_count_tcp && counts(IPPROTO_TCP) && ret > 0 && (c = conn_of(sk, &created)))
			count_sent(c, created, sk, ret);
	} else if (tracepoints_count_udp && counts(IPPROTO_UDP) && sk->sk_protocol == IPPROTO_UDP) {
		udp_length(sk, ret, true);
	}
	return 0;
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(tp_sock_recv_length, struct sock *sk, int ret, int flags)
{
	struct conn *c;
	bool created;

	if (!thread_wanted())
		return 0;
	if (sk->sk_protocol == IPPROTO_TCP) {
		if (tracepoints_count_tcp && counts(IPPROTO_TCP) && ret > 0 &&
		    !(flags & MSG_PEEK) && (c = conn_of(sk, &created)))
			count_received(c, created, sk, ret);
	} else if (tracepoints_count_udp && counts(IPPROTO_UDP) && sk->sk_protocol == IPPROTO_UDP) {
		udp_length(sk, reads_payload(flags) ? ret : 0, false);
	}
	return 0;
}

/* The address of a UDP sendto/sendmsg, or the sender a recvfrom/recvmsg is told:
 * noted for the sock_*_length tracepoint of the same call. These hooks run only when
 * the call carries an address (an unconnected send, or a receive that asks). The
 * verifier lets *4 programs read only user_ip4, *6 ones only user_ip6. */
static __always_inline int note_peer(struct bpf_sock_addr *ctx, bool ipv4)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct peer_note note = {};

	if (ctx->protocol != IPPROTO_UDP || !thread_wanted())
		return 1;
	note.sock_cookie = bpf_get_socket_cookie(ctx);
	if (ipv4) {
		put_ipv4(note.peer.addr, ctx->user_ip4, ctx->family);
	} else {
		__u32 *ip6 = (__u32 *)note.peer.addr;

		ip6[0] = ctx->user_ip6[0];
		ip6[1] = ctx->user_ip6[1];
		ip6[2] = ctx->user_ip6[2];
		ip6[3] = ctx->user_ip6[3];
	}
	note.peer.port = bpf_ntohs((__u16)ctx->user_port);
	bpf_map_update_elem(&udp_peers, &tid, &note, BPF_ANY);
	return 1;	/* allow: tcptop only watches */
}

SEC("cgroup/sendmsg4")
int note_sendmsg4_peer(struct bpf_sock_addr *ctx)
{
	return note_peer(ctx, true);
}

SEC("cgroup/sendmsg6")
int note_sendmsg6_peer(struct bpf_sock_addr *ctx)
{
	return note_peer(ctx, false);
}

SEC("cgroup/recvmsg4")
int note_recvmsg4_peer(struct bpf_sock_addr *ctx)
{
	return note_peer(ctx, true);
}

SEC("cgroup/recvmsg6")
int note_recvmsg6_peer(struct bpf_sock_addr *ctx)
{
	return note_peer(ctx, false);
}

/* ---- state hooks of the fentry and tracepoint strategies ----------------- */

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(tp_inet_sock_set_state, struct sock *sk, int old_state, int new_state)
{
	struct conn *c;
	bool created;

	if (sk->sk_protocol != IPPROTO_TCP || !(c = conn_of_change(sk, new_state, &created)))
		return 0;
	on_state_change(c, created, sk, old_state, new_state);
	return 0;
}

SEC("tp_btf/tcp_destroy_sock")
int BPF_PROG(tp_tcp_destroy_sock, struct sock *sk)
{
	destroyed(sk);
	return 0;
}

/* A reset sent or received on sk. One sent in reply to a segment that no socket owns has
 * none, and one sent for a time-wait or request sock has no slot. */
static __always_inline void count_reset(struct sock *sk, bool sent)
{
	struct conn *c;
	int state;

	if (!sk)
		return;
	state = BPF_CORE_READ(sk, __sk_common.skc_state);
	if (state == TCP_TIME_WAIT || state == TCP_NEW_SYN_RECV || !(c = find_conn(sk)))
		return;
	__sync_fetch_and_add(sent ? &c->info.resets_sent : &c->info.resets_received, 1);
}

/* Only the first argument, which every kernel has (tcp_send_reset gained a reason in 6.10).
 * tcp_send_reset fires for the resets a socket sends on its own (tcp_send_active_reset: an
 * abort, a close with unread data) and in reply to a segment (tcp_v{4,6}_send_reset). */
SEC("tp_btf/tcp_send_reset")
int BPF_PROG(tp_tcp_send_reset, struct sock *sk)
{
	count_reset(sk, true);
	return 0;
}

SEC("tp_btf/tcp_receive_reset")
int BPF_PROG(tp_tcp_receive_reset, struct sock *sk)
{
	count_reset(sk, false);
	return 0;
}

/* A segment retransmitted: the health figures change with no call of the application's, so
 * where the hooks sample (and the walk is rare) the slot goes on `changed` with them. */
static __always_inline void retransmitted(struct sock *sk)
{
	struct conn *c;

	if (hooks_sample && sk && (c = find_conn(sk))) {
		read_health(c, sk, true);
		touch(c);
	}
}

SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(tp_tcp_retransmit_skb, const struct sock *sk)
{
	retransmitted((struct sock *)sk);
	return 0;
}

/* ---- kprobe strategy ------------------------------------------------------ */

SEC("kprobe/tcp_sendmsg")
int BPF_KPROBE(kprobe_tcp_sendmsg, struct sock *sk)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	__u64 skaddr = (__u64)sk;

	if (!thread_wanted())
		return 0;
	bpf_map_update_elem(&sendmsg_sockets, &tid, &skaddr, BPF_ANY);
	return 0;
}

SEC("kretprobe/tcp_sendmsg")
int BPF_KRETPROBE(kretprobe_tcp_sendmsg, int ret)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	__u64 *skaddr = bpf_map_lookup_elem(&sendmsg_sockets, &tid);
	struct sock *sk;
	struct conn *c;
	bool created;

	if (!skaddr)
		return 0;
	sk = (struct sock *)*skaddr;
	bpf_map_delete_elem(&sendmsg_sockets, &tid);
	if (ret <= 0 || !(c = conn_of(sk, &created)))
		return 0;
	count_sent(c, created, sk, ret);
	return 0;
}

SEC("kprobe/tcp_cleanup_rbuf")
int BPF_KPROBE(kprobe_tcp_cleanup_rbuf, struct sock *sk, int copied)
{
	struct conn *c;
	bool created;

	if (copied > 0 && thread_wanted() && (c = conn_of(sk, &created)))
		count_received(c, created, sk, copied);
	return 0;
}

/* Noted for every call, even one that will not count, so that a return never finds an
 * older call's arguments. */
static __always_inline void udp_call_began(struct sock *sk, struct msghdr *msg, int flags)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct udp_call call = { .sk = (__u64)sk, .msg = (__u64)msg, .flags = flags };

	bpf_map_update_elem(&udp_calls, &tid, &call, BPF_ANY);
}

static __always_inline void udp_call_ended(int ret, bool sent)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct udp_call *stashed = bpf_map_lookup_elem(&udp_calls, &tid);
	struct udp_peer peer = {};
	struct udp_call call;
	struct sock *sk;

	if (!stashed)
		return;
	call = *stashed;
	bpf_map_delete_elem(&udp_calls, &tid);
	sk = (struct sock *)call.sk;
	if (ret <= 0 || !reads_payload(call.flags) || BPF_CORE_READ(sk, sk_protocol) != IPPROTO_UDP ||
	    !thread_wanted())
		return;
	peer_of_call(&peer, sk, (struct msghdr *)call.msg);
	count_datagram(sk, &peer, ret, sent);
}

/* As for fexit: the udp_sendmsg inside an IPv6 socket's udpv6_sendmsg is not a call of
 * its own (and would overwrite the outer call's arguments). */
SEC("kprobe/udp_sendmsg")
int BPF_KPROBE(kprobe_udp_sendmsg, struct sock *sk, struct msghdr *msg)
{
	if (BPF_CORE_READ(sk, __sk_common.skc_family) == AF_INET)
		udp_call_began(sk, msg, 0);
	return 0;
}

SEC("kretprobe/udp_sendmsg")
int BPF_KRETPROBE(kretprobe_udp_sendmsg, int ret)
{
	udp_call_ended(ret, true);
	return 0;
}

SEC("kprobe/udpv6_sendmsg")
int BPF_KPROBE(kprobe_udpv6_sendmsg, struct sock *sk, struct msghdr *msg)
{
	udp_call_began(sk, msg, 0);
	return 0;
}

SEC("kretprobe/udpv6_sendmsg")
int BPF_KRETPROBE(kretprobe_udpv6_sendmsg, int ret)
{
	udp_call_ended(ret, true);
	return 0;
}

/* The flags of a udp{,v6}_recvmsg call, wherever this kernel has them. */
static __always_inline int recvmsg_flags(struct pt_regs *ctx)
{
	/* Both read, then one chosen: a load from a chosen offset of ctx is refused. */
	int fifth = PT_REGS_PARM5(ctx), fourth = PT_REGS_PARM4(ctx);

	return udp_recvmsg_has_noblock ? fifth : fourth;
}

SEC("kprobe/udp_recvmsg")
int BPF_KPROBE(kprobe_udp_recvmsg, struct sock *sk, struct msghdr *msg)
{
	udp_call_began(sk, msg, recvmsg_flags(ctx));
	return 0;
}

SEC("kretprobe/udp_recvmsg")
int BPF_KRETPROBE(kretprobe_udp_recvmsg, int ret)
{
	udp_call_ended(ret, false);
	return 0;
}

SEC("kprobe/udpv6_recvmsg")
int BPF_KPROBE(kprobe_udpv6_recvmsg, struct sock *sk, struct msghdr *msg)
{
	udp_call_began(sk, msg, recvmsg_flags(ctx));
	return 0;
}

SEC("kretprobe/udpv6_recvmsg")
int BPF_KRETPROBE(kretprobe_udpv6_recvmsg, int ret)
{
	udp_call_ended(ret, false);
	return 0;
}

SEC("raw_tp/inet_sock_set_state")
int BPF_PROG(raw_tp_inet_sock_set_state, struct sock *sk, int old_state, int new_state)
{
	struct conn *c;
	bool created;

	if (BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP || !(c = conn_of_change(sk, new_state, &created)))
		return 0;
	on_state_change(c, created, sk, old_state, new_state);
	return 0;
}

SEC("raw_tp/tcp_destroy_sock")
int BPF_PROG(raw_tp_tcp_destroy_sock, struct sock *sk)
{
	destroyed(sk);
	return 0;
}

SEC("raw_tp/tcp_send_reset")
int BPF_PROG(raw_tp_tcp_send_reset, struct sock *sk)
{
	count_reset(sk, true);
	return 0;
}

SEC("raw_tp/tcp_receive_reset")
int BPF_PROG(raw_tp_tcp_receive_reset, struct sock *sk)
{
	count_reset(sk, false);
	return 0;
}

SEC("raw_tp/tcp_retransmit_skb")
int BPF_PROG(raw_tp_tcp_retransmit_skb, struct sock *sk)
{
	retransmitted(sk);
	return 0;
}

/* ---- connections that predate tcptop ------------------------------------- */

/* The full TCP socket an iter/tcp program is shown, if it is one that can carry data:
 * listeners carry none; time-wait and request socks are not full sockets. */
static __always_inline struct sock *data_socket(struct sock_common *skc)
{
	int state;

	if (!skc)
		return NULL;
	state = skc->skc_state;
	if (state == TCP_LISTEN || state == TCP_TIME_WAIT || state == TCP_NEW_SYN_RECV)
		return NULL;
	return (struct sock *)bpf_skc_to_tcp_sock(skc);
}

/* Run once at start over every TCP socket: claims the connected ones, so they are
 * listed at once and count from now on. Their owner is found in /proc by inode. */
SEC("iter/tcp")
int adopt_tcp_socks(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;
	struct sock *sk;
	struct conn *c;
	bool created;

	/* Where two threads adopt, each walks every socket and claims those of its half, by the
	 * top bit of a Fibonacci hash of its ports and IPv4 addresses (the low bits of skc_hash
	 * are not even). */
	if (skc && second_adopter_tid &&
	    ((skc->skc_addrpair ^ skc->skc_portpair) * 0x9e3779b97f4a7c15ULL) >> 63 != adopter())
		return 0;
	sk = data_socket(skc);
	/* A connection the filters leave out gets no slot unless it sends or reads. */
	if (sk && tuple_wanted(KREAD(struct sock, sk, __sk_common.skc_family),
			       bpf_ntohs(KREAD(struct inet_sock, sk, inet_sport)),
			       bpf_ntohs(KREAD(struct sock, sk, __sk_common.skc_dport))) &&
	    (c = conn_of_socket(sk, true, true, &created)) && created) {
		claim(c, sk);
		read_health(c, sk, hooks_sample);
		c->info.sock_ino = socket_ino(sk);
	}
	return 0;
}

/* ---- sampling where no hook looked ---------------------------------------- */

/* Samples a connection and reads its health, at every read of the table where the hooks do
 * not sample, else now and then: for the paths no hook sees and the health of an idle
 * connection. What changed goes on `changed`. */
static __always_inline void walk_sample(struct conn *c, struct sock *sk)
{
	__u64 tx = c->info.tx_bytes, rx = c->info.rx_bytes;
	__u32 retrans = c->info.retrans, srtt = c->info.srtt_us, rttvar = c->info.rttvar_us;
	__u32 min_rtt = c->info.min_rtt_us;
	__u8 health_read = c->info.health_read;

	read_health(c, sk, hooks_sample);
	sample(c, sk, KREAD(struct sock, sk, __sk_common.skc_state));
	/* One program walks at a time (user space's reading thread): a plain add. */
	if (hooks_sample && (tx != c->info.tx_bytes || rx != c->info.rx_bytes))
		unhooked_moves++;
	if (tx != c->info.tx_bytes || rx != c->info.rx_bytes || retrans != c->info.retrans ||
	    srtt != c->info.srtt_us || rttvar != c->info.rttvar_us || min_rtt != c->info.min_rtt_us ||
	    health_read != c->info.health_read)
		touch(c);
}

SEC("iter/bpf_sk_storage_map")
int dump_sk_conns(struct bpf_iter__bpf_sk_storage_map *ctx)
{
	struct conn *c = conn_at(ctx->value);
	struct sock *sk = ctx->sk;

	if (c && sk)
		walk_sample(c, sk);
	return 0;
}

/* Where no map iterator may run: every TCP socket of the network namespace user space runs
 * this in, with the slot the plan keeps it in. */
SEC("iter/tcp")
int dump_tcp_socks(struct bpf_iter__tcp *ctx)
{
	struct sock *sk = data_socket(ctx->sk_common);
	struct conn *c;

	if (sk && (c = find_conn(sk)))
		walk_sample(c, sk);
	return 0;
}

SEC("iter/bpf_map_elem")
int dump_hash_conns(struct bpf_iter__bpf_map_elem *ctx)
{
	struct conn *c = conn_at(ctx->value);
	__u64 *skaddr = ctx->key;

	if (c && skaddr)
		walk_sample(c, (struct sock *)*skaddr);
	return 0;
}

/* ---- reading the UDP flows ------------------------------------------------ */

/* Puts a flow's row where user space reads it: into `table`, which user space maps into its
 * memory, so that a read() of the iterator writes nothing and walks the whole map at once (a
 * read() that returns data ends at 32 KiB, and the next one starts the walk of its bucket
 * again). Rows beyond the table's end come through the iterator's output instead. */
static __always_inline void report(struct seq_file *seq, const struct conn *c)
{
	struct conn_info *slot;
	__u32 at;

	if (!reportable(c))
		return;
	at = table_rows++;
	slot = bpf_map_lookup_elem(&table, &at);
	if (slot)
		*slot = c->info;
	else
		bpf_seq_write(seq, &c->info, sizeof(c->info));
}

/* Every UDP flow; one idle for longer than udp_idle_ns is reported with its final
 * totals, then deleted. A datagram that races the deletion of its flow, after all
 * that silence, can be added to the deleted copy: the one way a flow can miss one. */
SEC("iter/bpf_map_elem")
int dump_udp_flows(struct bpf_iter__bpf_map_elem *ctx)
{
	struct udp_flow_key *key = ctx->key;
	struct conn *c = ctx->value;

	if (!key || !c)
		return 0;
	report(ctx->meta->seq, c);
	if (bpf_ktime_get_ns() - c->last_ns > udp_idle_ns) {
		struct udp_flow_key expired = *key;	/* the helper wants a writable key */

		bpf_map_delete_elem(&udp_flows, &expired);
	}
	return 0;
}
