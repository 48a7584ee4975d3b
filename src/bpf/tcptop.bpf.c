// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * tcptop's kernel side: exact per-connection byte counters, kept in the kernel.
 *
 * How bytes are counted. Every hook reads the socket's own sequence counters
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
 * accepts cannot double count, and a hook that misses a path (sendpage before
 * 6.5, splice reads) is caught up by the next sample. The counters are a
 * compare-and-swap on the last sample plus an atomic add, so two CPUs sampling
 * one socket never count the same bytes twice.
 *
 * Three attach strategies run the same handlers; user space loads the first
 * that loads and attaches (src/ebpf/strategy.rs names the programs of each):
 *   fentry:     fexit/tcp_sendmsg, fentry/tcp_cleanup_rbuf, tp_btf state hooks
 *   kprobe:     kprobe+kretprobe/tcp_sendmsg, kprobe/tcp_cleanup_rbuf, raw_tp
 *               state hooks (the same tracepoints, without needing tracefs)
 *   tracepoint: tp_btf/sock_send_length and sock_recv_length (6.3+), tp_btf
 *               state hooks
 * BTF-typed programs (fentry, tp_btf) keep per-connection state in socket-local
 * storage and read the hot fields directly; kprobe and raw_tp programs may not
 * use socket storage, so they key a hash map by the socket's address.
 *
 * To add a probe: write a SEC() program that finds the connection (conn_of_sk
 * or conn_of_hash) and calls one of the handlers below (count_sent,
 * count_received, on_state_change, on_destroy), then list it under its
 * strategy in src/ebpf/strategy.rs.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "tcptop.h"

#define AF_INET 2
#define AF_INET6 10
#define MSG_PEEK 2
#define RCV_SHUTDOWN 1

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Settings, fixed by user space between open and load (0 = no filter). */
const volatile __u32 filter_pid = 0;
const volatile __u16 filter_port = 0;
const volatile __u16 filter_family = 0;
const volatile __u64 filter_cgroup = 0;	/* cgroup v2 id (the cgroup directory's inode) */

struct drop_counters drops = {};
__u64 last_conn_id = 0;

/* Instances only so that the skeleton generates these ring-buffer types. */
struct conn_event unused_conn_event = {};

/* What the kernel keeps per connection. */
struct conn {
	struct conn_info info;
	__u32 tx_seq;		/* write_seq at the last send sample */
	__u32 rx_seq;		/* copied_seq (capped at the FIN) at the last read sample */
	__u32 fin_seq;		/* sequence number of the peer's FIN, once fin_seen */
	__u8 fin_seen;
	__u8 counting;		/* tx_seq and rx_seq are valid baselines */
	__u8 ignored;		/* outside the --port / -4 / -6 filters */
	__u8 pad;
	__u64 owner;		/* pid_tgid of the thread last seen sending or reading */
};

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct conn);
} sk_conns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 65536);
	__type(key, __u64);	/* the socket's kernel address */
	__type(value, struct conn);
} hash_conns SEC(".maps");

/* kprobe strategy: tcp_sendmsg's socket, from entry to return, by thread id. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u64);
} sendmsg_sockets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");

/* Whether the --pid and --cgroup filters let the current thread's traffic through. */
static __always_inline bool thread_wanted(__u64 pid_tgid)
{
	return (!filter_pid || pid_tgid >> 32 == filter_pid) &&
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

/* Adds the bytes between the last sample and `seq` to `total`, exactly once. */
static __always_inline void advance(__u32 *last_seq, __u64 *total, __u32 seq)
{
	__u32 last = *(volatile __u32 *)last_seq;
	__s32 delta = seq - last;

	if (delta > 0 && __sync_val_compare_and_swap(last_seq, last, seq) == last)
		__sync_fetch_and_add(total, delta);
}

/* copied_seq counts the peer's FIN once the reader reaches it: stop there. */
static __always_inline __u32 read_end(const struct conn *c, __u32 copied_seq)
{
	if (c->fin_seen && (__s32)(copied_seq - c->fin_seq) > 0)
		return c->fin_seq;
	return copied_seq;
}

/* The tuple, read when a connection is first seen and at each state change
 * (ports and addresses are settled during the handshake), never per byte. */
static __always_inline void read_identity(struct conn *c, struct sock *sk)
{
	struct inet_sock *inet = (struct inet_sock *)sk;
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);

	c->info.family = family;
	c->info.netns = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
	c->info.lport = bpf_ntohs(BPF_CORE_READ(inet, inet_sport));
	c->info.rport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	if (family == AF_INET6) {
		BPF_CORE_READ_INTO(&c->info.laddr, sk, __sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8);
		BPF_CORE_READ_INTO(&c->info.raddr, sk, __sk_common.skc_v6_daddr.in6_u.u6_addr8);
	} else {
		BPF_CORE_READ_INTO(&c->info.laddr, sk, __sk_common.skc_rcv_saddr);
		BPF_CORE_READ_INTO(&c->info.raddr, sk, __sk_common.skc_daddr);
	}
	c->ignored = (filter_family && family != filter_family) ||
		     (filter_port && c->info.lport != filter_port && c->info.rport != filter_port);
}

/* The peer's FIN sets RCV_SHUTDOWN after rcv_nxt has moved past it. */
static __always_inline void note_fin(struct conn *c, struct sock *sk)
{
	if (c->fin_seen || !(BPF_CORE_READ_BITFIELD_PROBED(sk, sk_shutdown) & RCV_SHUTDOWN))
		return;
	c->fin_seq = BPF_CORE_READ((struct tcp_sock *)sk, rcv_nxt) - 1;
	c->fin_seen = 1;
}

/* Gives a new slot its id, tuple and baselines; true for the one caller that did. */
static __always_inline bool claim(struct conn *c, struct sock *sk)
{
	struct tcp_sock *tp = (struct tcp_sock *)sk;
	__u64 id;
	int state;

	if (c->info.id)
		return false;
	id = __sync_fetch_and_add(&last_conn_id, 1) + 1;
	if (__sync_val_compare_and_swap(&c->info.id, 0, id) != 0)
		return false;
	read_identity(c, sk);
	note_fin(c, sk);
	state = BPF_CORE_READ(sk, __sk_common.skc_state);
	c->info.state = state;
	/* Before the handshake ends the sequence numbers are not set yet. */
	c->counting = state != TCP_SYN_SENT && state != TCP_SYN_RECV && state != TCP_CLOSE;
	c->tx_seq = BPF_CORE_READ(tp, write_seq);
	c->rx_seq = read_end(c, BPF_CORE_READ(tp, copied_seq));
	return true;
}

/* The thread that sends or reads owns the connection (comm is per thread). Only
 * process-context hooks call this: state changes often run in softirq, on whoever's
 * time. */
static __always_inline void attribute(struct conn *c, __u64 pid_tgid)
{
	if (c->owner != pid_tgid) {
		c->owner = pid_tgid;
		c->info.pid = pid_tgid >> 32;
		c->info.cgroup_id = bpf_get_current_cgroup_id();
		bpf_get_current_comm(&c->info.comm, sizeof(c->info.comm));
	}
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

/* A send call on sk returned `accepted` (<= 0: nothing); write_seq is after it. */
static __always_inline void count_sent(struct conn *c, struct sock *sk, __u64 pid_tgid, int accepted,
				       int state, __u32 write_seq)
{
	/* First sight mid-connection (it predates tcptop): this call's bytes count. */
	if (claim(c, sk) && accepted > 0)
		c->tx_seq -= accepted;
	if (c->ignored)
		return;
	attribute(c, pid_tgid);
	if (c->counting && can_send(state))
		advance(&c->tx_seq, &c->info.tx_bytes, write_seq);
}

/* A read on sk handed `copied` bytes to the reader; copied_seq is after it. */
static __always_inline void count_received(struct conn *c, struct sock *sk, __u64 pid_tgid, int copied,
					   __u32 copied_seq)
{
	if (claim(c, sk) && copied > 0)
		c->rx_seq -= copied;
	if (c->ignored)
		return;
	attribute(c, pid_tgid);
	if (c->counting)
		advance(&c->rx_seq, &c->info.rx_bytes, read_end(c, copied_seq));
}

/* Which transitions start tracking a connection we have not seen yet. */
static __always_inline bool opens(int new_state)
{
	return new_state == TCP_SYN_SENT || new_state == TCP_SYN_RECV || new_state == TCP_ESTABLISHED;
}

/* inet_sock_set_state fires before sk_state changes: the counters still
 * describe `old_state`. */
static __always_inline void on_state_change(struct conn *c, struct sock *sk, int old_state,
					    int new_state)
{
	struct tcp_sock *tp = (struct tcp_sock *)sk;

	claim(c, sk);
	read_identity(c, sk);
	note_fin(c, sk);
	if (new_state == TCP_ESTABLISHED && (old_state == TCP_SYN_SENT || old_state == TCP_SYN_RECV)) {
		/* The data phase begins: nothing was written or read yet. */
		c->tx_seq = BPF_CORE_READ(tp, write_seq);
		c->rx_seq = BPF_CORE_READ(tp, copied_seq);
		c->counting = 1;
	} else if (c->counting) {
		/* Last sample before our FIN (or a reset) ends the sending side. */
		if (can_send(old_state))
			advance(&c->tx_seq, &c->info.tx_bytes, BPF_CORE_READ(tp, write_seq));
		advance(&c->rx_seq, &c->info.rx_bytes, read_end(c, BPF_CORE_READ(tp, copied_seq)));
	}
	/* connect() runs in the caller's context: the one state change we may attribute. */
	if (new_state == TCP_SYN_SENT)
		attribute(c, bpf_get_current_pid_tgid());
	c->info.state = new_state;
	emit(c, CONN_EVENT_STATE, old_state, new_state);
}

/* The socket is being freed: report its final totals once. */
static __always_inline void on_destroy(struct conn *c, struct sock *sk)
{
	if (c->counting)
		advance(&c->rx_seq, &c->info.rx_bytes,
			read_end(c, BPF_CORE_READ((struct tcp_sock *)sk, copied_seq)));
	emit(c, CONN_EVENT_CLOSED, c->info.state, TCP_CLOSE);
}

/* ---- Finding a connection's slot ---------------------------------------- */

/* Socket-local storage: freed with the socket, no size limit, no hashing. */
static __always_inline struct conn *conn_of_sk(struct sock *sk, bool create)
{
	struct conn *c = bpf_sk_storage_get(&sk_conns, sk, 0,
					    create ? BPF_SK_STORAGE_GET_F_CREATE : 0);

	if (!c && create)
		__sync_fetch_and_add(&drops.conns_untracked, 1);
	return c;
}

static const struct conn empty_conn;

/* The hash map, for program types that may not use socket-local storage. */
static __always_inline struct conn *conn_of_hash(struct sock *sk, bool create)
{
	__u64 key = (__u64)sk;
	struct conn *c = bpf_map_lookup_elem(&hash_conns, &key);

	if (c || !create)
		return c;
	bpf_map_update_elem(&hash_conns, &key, &empty_conn, BPF_NOEXIST);
	c = bpf_map_lookup_elem(&hash_conns, &key);
	if (!c)
		__sync_fetch_and_add(&drops.conns_untracked, 1);
	return c;
}

/* ---- fentry strategy ------------------------------------------------------ */

SEC("fexit/tcp_sendmsg")
int BPF_PROG(fexit_tcp_sendmsg, struct sock *sk, struct msghdr *msg, size_t size, int ret)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct tcp_sock *tp;
	struct conn *c;

	if (!thread_wanted(pid_tgid))
		return 0;
	tp = bpf_skc_to_tcp_sock(sk);
	if (!tp || !(c = conn_of_sk(sk, true)))
		return 0;
	count_sent(c, sk, pid_tgid, ret, sk->__sk_common.skc_state, tp->write_seq);
	return 0;
}

/* Called after every read path (recvmsg, splice, zerocopy) has moved copied_seq. */
SEC("fentry/tcp_cleanup_rbuf")
int BPF_PROG(fentry_tcp_cleanup_rbuf, struct sock *sk, int copied)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct tcp_sock *tp;
	struct conn *c;

	if (!thread_wanted(pid_tgid))
		return 0;
	tp = bpf_skc_to_tcp_sock(sk);
	if (!tp || !(c = conn_of_sk(sk, true)))
		return 0;
	count_received(c, sk, pid_tgid, copied, tp->copied_seq);
	return 0;
}

/* ---- tracepoint strategy (sock_*_length exist from Linux 6.3) ------------ */

SEC("tp_btf/sock_send_length")
int BPF_PROG(tp_sock_send_length, struct sock *sk, int ret, int flags)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct tcp_sock *tp;
	struct conn *c;

	if (!thread_wanted(pid_tgid))
		return 0;
	tp = bpf_skc_to_tcp_sock(sk);	/* NULL for every non-TCP socket */
	if (!tp || !(c = conn_of_sk(sk, true)))
		return 0;
	count_sent(c, sk, pid_tgid, ret, sk->__sk_common.skc_state, tp->write_seq);
	return 0;
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(tp_sock_recv_length, struct sock *sk, int ret, int flags)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct tcp_sock *tp;
	struct conn *c;

	if ((flags & MSG_PEEK) || !thread_wanted(pid_tgid))
		return 0;
	tp = bpf_skc_to_tcp_sock(sk);
	if (!tp || !(c = conn_of_sk(sk, true)))
		return 0;
	count_received(c, sk, pid_tgid, ret, tp->copied_seq);
	return 0;
}

/* ---- state hooks of the fentry and tracepoint strategies ----------------- */

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(tp_inet_sock_set_state, struct sock *sk, int old_state, int new_state)
{
	struct conn *c;

	if (sk->sk_protocol != IPPROTO_TCP || !(c = conn_of_sk(sk, opens(new_state))))
		return 0;
	on_state_change(c, sk, old_state, new_state);
	return 0;
}

SEC("tp_btf/tcp_destroy_sock")
int BPF_PROG(tp_tcp_destroy_sock, struct sock *sk)
{
	struct conn *c = conn_of_sk(sk, false);

	if (c)
		on_destroy(c, sk);
	return 0;
}

/* ---- kprobe strategy ------------------------------------------------------ */

SEC("kprobe/tcp_sendmsg")
int BPF_KPROBE(kprobe_tcp_sendmsg, struct sock *sk)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)pid_tgid;
	__u64 skaddr = (__u64)sk;

	if (!thread_wanted(pid_tgid))
		return 0;
	bpf_map_update_elem(&sendmsg_sockets, &tid, &skaddr, BPF_ANY);
	return 0;
}

SEC("kretprobe/tcp_sendmsg")
int BPF_KRETPROBE(kretprobe_tcp_sendmsg, int ret)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)pid_tgid;
	__u64 *skaddr = bpf_map_lookup_elem(&sendmsg_sockets, &tid);
	struct sock *sk;
	struct conn *c;

	if (!skaddr)
		return 0;
	sk = (struct sock *)*skaddr;
	bpf_map_delete_elem(&sendmsg_sockets, &tid);
	if (!(c = conn_of_hash(sk, true)))
		return 0;
	count_sent(c, sk, pid_tgid, ret, BPF_CORE_READ(sk, __sk_common.skc_state),
		   BPF_CORE_READ((struct tcp_sock *)sk, write_seq));
	return 0;
}

SEC("kprobe/tcp_cleanup_rbuf")
int BPF_KPROBE(kprobe_tcp_cleanup_rbuf, struct sock *sk, int copied)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct conn *c;

	if (!thread_wanted(pid_tgid) || !(c = conn_of_hash(sk, true)))
		return 0;
	count_received(c, sk, pid_tgid, copied, BPF_CORE_READ((struct tcp_sock *)sk, copied_seq));
	return 0;
}

SEC("raw_tp/inet_sock_set_state")
int BPF_PROG(raw_tp_inet_sock_set_state, struct sock *sk, int old_state, int new_state)
{
	struct conn *c;

	if (BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP ||
	    !(c = conn_of_hash(sk, opens(new_state))))
		return 0;
	on_state_change(c, sk, old_state, new_state);
	return 0;
}

SEC("raw_tp/tcp_destroy_sock")
int BPF_PROG(raw_tp_tcp_destroy_sock, struct sock *sk)
{
	__u64 key = (__u64)sk;
	struct conn *c = conn_of_hash(sk, false);

	if (!c)
		return 0;
	on_destroy(c, sk);
	bpf_map_delete_elem(&hash_conns, &key);
	return 0;
}

/* ---- connections that predate tcptop ------------------------------------- */

/* Run once at start over every TCP socket: claims the connected ones, so they are
 * listed at once and count from now on. Their owner is found in /proc by inode. */
static __always_inline void adopt(struct sock_common *skc, bool hash)
{
	struct tcp_sock *tp;
	struct sock *sk;
	struct conn *c;
	int state;

	if (!skc)
		return;
	state = skc->skc_state;
	/* Listeners carry no data; time-wait and request socks are not full sockets. */
	if (state == TCP_LISTEN || state == TCP_TIME_WAIT || state == TCP_NEW_SYN_RECV ||
	    !(tp = bpf_skc_to_tcp_sock(skc)))
		return;
	sk = (struct sock *)tp;
	c = hash ? conn_of_hash(sk, true) : conn_of_sk(sk, true);
	if (c && claim(c, sk))
		c->info.sock_ino = BPF_CORE_READ(sk, sk_socket, file, f_inode, i_ino);
}

SEC("iter/tcp")
int adopt_tcp_socks(struct bpf_iter__tcp *ctx)
{
	adopt(ctx->sk_common, false);
	return 0;
}

SEC("iter/tcp")
int adopt_tcp_socks_hash(struct bpf_iter__tcp *ctx)
{
	adopt(ctx->sk_common, true);
	return 0;
}

/* ---- reading the table: one read() returns every live connection --------- */

/* A sample at each read of the table, so that bytes moved by a path no hook sees
 * (sendpage before Linux 6.5, splice reads) show within one interval. */
static __always_inline void sample(struct conn *c, struct sock *sk)
{
	struct tcp_sock *tp = (struct tcp_sock *)sk;

	if (!c->counting)
		return;
	if (can_send(BPF_CORE_READ(sk, __sk_common.skc_state)))
		advance(&c->tx_seq, &c->info.tx_bytes, BPF_CORE_READ(tp, write_seq));
	advance(&c->rx_seq, &c->info.rx_bytes, read_end(c, BPF_CORE_READ(tp, copied_seq)));
}

static __always_inline void dump(struct seq_file *seq, struct conn *c, struct sock *sk)
{
	sample(c, sk);
	if (reportable(c))
		bpf_seq_write(seq, &c->info, sizeof(c->info));
}

SEC("iter/bpf_sk_storage_map")
int dump_sk_conns(struct bpf_iter__bpf_sk_storage_map *ctx)
{
	struct conn *c = ctx->value;
	struct sock *sk = ctx->sk;

	if (c && sk)
		dump(ctx->meta->seq, c, sk);
	return 0;
}

SEC("iter/bpf_map_elem")
int dump_hash_conns(struct bpf_iter__bpf_map_elem *ctx)
{
	struct conn *c = ctx->value;
	__u64 *skaddr = ctx->key;

	if (c && skaddr)
		dump(ctx->meta->seq, c, (struct sock *)*skaddr);
	return 0;
}
