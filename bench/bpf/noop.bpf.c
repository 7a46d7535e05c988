// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Programs that do nothing, on the hooks rastro's data programs use: what
 * kernel.bpf_stats reports for them is the measurement's own floor on this
 * machine (the clock reads around each run), see bench/bpf_floor.c. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

SEC("tp_btf/sock_send_length")
int BPF_PROG(noop_send, struct sock *sk, int ret, int flags)
{
	return 0;
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(noop_recv, struct sock *sk, int ret, int flags)
{
	return 0;
}
