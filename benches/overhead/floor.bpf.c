// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The floor of the overhead benchmark: programs that do nothing, on the hooks
 * tcptop's strategies count bytes on. Whatever these cost is the price of
 * hooking the kernel at all; tcptop's own cost is what it adds on top.
 * The benchmark loads one pair at a time (by name prefix).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* tracepoint strategy */
SEC("tp_btf/sock_send_length")
int tracepoint_send(void *ctx) { return 0; }

SEC("tp_btf/sock_recv_length")
int tracepoint_recv(void *ctx) { return 0; }

/* fentry strategy */
SEC("fexit/tcp_sendmsg")
int fentry_send(void *ctx) { return 0; }

SEC("fentry/tcp_cleanup_rbuf")
int fentry_recv(void *ctx) { return 0; }
