// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Yardsticks for the overhead benchmark, on the hooks tcptop's strategies count
 * bytes on. The empty programs are the floor: the price of hooking the kernel
 * at all. The helper programs make one helper call each, the unit tcptop's hot
 * path is budgeted in. The storage programs are the least a per-connection
 * count can cost: find the socket's local storage and add one. tcptop's own
 * cost reads against them. The benchmark loads one pair at a time, by name
 * prefix.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* empty: fentry strategy */
SEC("fexit/tcp_sendmsg")
int BPF_PROG(empty_fentry_send) { return 0; }

SEC("fentry/tcp_cleanup_rbuf")
int BPF_PROG(empty_fentry_recv) { return 0; }

/* empty: tracepoint strategy */
SEC("tp_btf/sock_send_length")
int BPF_PROG(empty_tracepoint_send) { return 0; }

SEC("tp_btf/sock_recv_length")
int BPF_PROG(empty_tracepoint_recv) { return 0; }

/* one helper call and nothing else, on the tracepoint strategy's hooks: what a helper
 * call costs on this machine, the unit tcptop's hot path is budgeted in */
__u64 never_written;

static __always_inline void call_one_helper(void)
{
	if (bpf_get_current_pid_tgid() == 0)	/* never: no task has pid 0 here */
		never_written = 1;
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(helper_tracepoint_send) { call_one_helper(); return 0; }

SEC("tp_btf/sock_recv_length")
int BPF_PROG(helper_tracepoint_recv) { call_one_helper(); return 0; }

/* one counter per socket, on the tracepoint strategy's hooks */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u64);
} calls SEC(".maps");

static __always_inline void count(struct sock *sk)
{
	__u64 *n = bpf_sk_storage_get(&calls, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);

	if (n)
		*n += 1;
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(storage_tracepoint_send, struct sock *sk) { count(sk); return 0; }

SEC("tp_btf/sock_recv_length")
int BPF_PROG(storage_tracepoint_recv, struct sock *sk) { count(sk); return 0; }
