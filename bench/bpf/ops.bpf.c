// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* What one operation of rastro's data programs costs on this machine: a
 * program on sock_send_length, for bench/bpf_ops.c's own sends only, runs
 * the operation `iters` times in a bpf_loop between two clock reads (bpf_ops
 * subtracts the loop's own cost, op 0). The caches are hot: a lower bound of
 * what the same operation costs inside a traced event. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym;

struct conn {
	__u8 bytes[72]; /* sizeof(struct rastro_conn) */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct conn);
} hash SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct conn);
} store SEC(".maps");

/* Entries allocated when made (op 20). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct conn);
} hash_noprealloc SEC(".maps");

/* Created and deleted in a loop (op 18): a connection's begin and end. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct conn);
} churn_store SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 << 20); /* a send's 2,000 records of 2 KiB; bpf_ops consumes them */
} ring SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u8[4096]);
} scratch SEC(".maps");

/* A plain array's value: kmalloc'ed when small, vmalloc'ed past 32 KiB. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u8[4096]);
} small_array SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 16);
	__type(key, __u32);
	__type(value, __u8[4096]);
} big_array SEC(".maps");

/* The whole .bss, one struct so that bpf_ops knows its layout: tgid, op and
 * iters set by bpf_ops before each measurement, the rest by the program. */
struct {
	__u32 tgid, op, iters, lock;
	__u64 total_ns, total_ops, sink;
	__u64 regs_seen[2]; /* made plain numbers by the trip through .bss */
	__u64 failed;       /* operations that failed (a full ring): the round is void */
} g;

struct ctx {
	struct sock *sk;
	__u64 buf; /* the send's user buffer */
	__u64 acc;
	__u64 regs_off; /* the syscall registers' distance from task->stack */
};

/* 16 bytes of the send's buffer into v, a map value (if found). */
static __always_inline void read_into(__u8 *v, struct ctx *c)
{
	if (v) {
		bpf_probe_read_user(v, 16, (void *)c->buf);
		c->acc += v[0];
	}
}

static long one(__u64 i, void *arg)
{
	struct ctx *c = arg;
	__u64 key = (__u64)c->sk;
	__u32 zero = 0;

	switch (g.op) {
	case 1: /* the connection's hash map entry */
		c->acc += bpf_map_lookup_elem(&hash, &key) ? 1 : 0;
		break;
	case 2: /* the connection's socket storage */
		c->acc += bpf_sk_storage_get(&store, c->sk, 0, 0) ? 1 : 0;
		break;
	case 3:
		c->acc += bpf_ktime_get_ns();
		break;
	case 4: {
		__u8 b[16];
		bpf_probe_read_user(b, sizeof(b), (void *)c->buf);
		c->acc += b[0];
		break;
	}
	case 5: {
		__u8 *v = bpf_map_lookup_elem(&scratch, &zero);
		if (v) {
			bpf_probe_read_user(v, 256, (void *)c->buf);
			c->acc += v[0];
		}
		break;
	}
	case 6: {
		struct pt_regs *r =
			(struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
		c->acc += r->si;
		break;
	}
	case 7:
		c->acc += bpf_get_current_pid_tgid();
		break;
	case 8: {
		__u8 *v = bpf_map_lookup_elem(&scratch, &zero);
		if (!v || bpf_ringbuf_output(&ring, v, 2048, BPF_RB_NO_WAKEUP))
			g.failed++;
		break;
	}
	case 9: {
		void *r = bpf_ringbuf_reserve(&ring, 64, 0);
		if (r)
			bpf_ringbuf_discard(r, BPF_RB_NO_WAKEUP);
		else
			g.failed++;
		break;
	}
	case 10: /* hold_lock and hold_unlock, uncontended */
		c->acc += __sync_val_compare_and_swap(&g.lock, 0, 1);
		g.lock = 0;
		break;
	case 11:
		c->acc += bpf_map_lookup_elem(&scratch, &zero) ? 1 : 0;
		break;
	case 12: {
		struct tcp_sock *tp = bpf_rdonly_cast(c->sk, bpf_core_type_id_kernel(struct tcp_sock));
		c->acc += tp->write_seq + tp->copied_seq;
		break;
	}
	case 13: { /* rastro.bpf.c's syscall_regs once the distance is known */
		struct task_struct *t = bpf_get_current_task_btf();
		struct pt_regs *r = bpf_rdonly_cast((void *)((__u64)t->stack + c->regs_off),
						    bpf_core_type_id_kernel(struct pt_regs));
		c->acc += r->si;
		break;
	}
	case 14: /* into a per-CPU array's value */
		read_into(bpf_map_lookup_elem(&scratch, &zero), c);
		break;
	case 15: /* into a small (kmalloc'ed) array's value */
		read_into(bpf_map_lookup_elem(&small_array, &zero), c);
		break;
	case 16: /* into a big (vmalloc'ed) array's value */
		read_into(bpf_map_lookup_elem(&big_array, &zero), c);
		break;
	case 17: { /* into ring buffer memory */
		__u8 *r = bpf_ringbuf_reserve(&ring, 64, 0);
		if (r) {
			bpf_probe_read_user(r, 16, (void *)c->buf);
			c->acc += r[0];
			bpf_ringbuf_discard(r, BPF_RB_NO_WAKEUP);
		} else {
			g.failed++;
		}
		break;
	}
	case 18: { /* a connection's socket storage made and freed */
		struct conn v = {};
		if (bpf_sk_storage_get(&churn_store, c->sk, &v, BPF_SK_STORAGE_GET_F_CREATE))
			c->acc += bpf_sk_storage_delete(&churn_store, c->sk) ? 0 : 1;
		else
			g.failed++;
		break;
	}
	case 19: { /* a connection's hash map entry made and freed */
		struct conn v = {};
		__u64 k = key + 1; /* not the send's own entry */
		if (!bpf_map_update_elem(&hash, &k, &v, BPF_NOEXIST))
			c->acc += bpf_map_delete_elem(&hash, &k) ? 0 : 1;
		else
			g.failed++;
		break;
	}
	case 20: { /* the same in a hash map that allocates its entries */
		struct conn v = {};
		__u64 k = key + 1;
		if (!bpf_map_update_elem(&hash_noprealloc, &k, &v, BPF_NOEXIST))
			c->acc += bpf_map_delete_elem(&hash_noprealloc, &k) ? 0 : 1;
		else
			g.failed++;
		break;
	}
	default: /* 0: the loop alone */
		break;
	}
	return 0;
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(ops_send, struct sock *sk, int ret, int flags)
{
	if ((bpf_get_current_pid_tgid() >> 32) != g.tgid)
		return 0;
	__u64 key = (__u64)sk;
	struct conn zero = {};
	bpf_map_update_elem(&hash, &key, &zero, BPF_NOEXIST);
	bpf_sk_storage_get(&store, sk, &zero, BPF_SK_STORAGE_GET_F_CREATE);
	struct task_struct *task = bpf_get_current_task_btf();
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(task);
	g.regs_seen[0] = (__u64)regs;
	g.regs_seen[1] = (__u64)task->stack;
	struct ctx c = {.sk = sk, .buf = regs->si, .regs_off = g.regs_seen[0] - g.regs_seen[1]};
	__u64 t0 = bpf_ktime_get_ns();
	bpf_loop(g.iters, one, &c, 0);
	g.total_ns += bpf_ktime_get_ns() - t0;
	g.total_ops += g.iters;
	g.sink += c.acc;
	return 0;
}
