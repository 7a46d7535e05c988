// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * rastro's kernel side. Hooks that exist on kernels without kprobes or
 * fentry: BTF tracepoints only, so nothing here needs tracefs either.
 *
 *   tp_btf/sock_send_length,   data a traced process sent or received on a
 *   tp_btf/sock_recv_length    TCP socket (Linux 6.3 and later)
 *   tp_btf/sys_exit            the same, from every syscall, on older
 *                              kernels; also accept, connect, and listen of
 *                              any process there
 *   tp_btf/inet_sock_set_state end of tracked connections; with the socket
 *                              hooks also connect and listen
 *   tp_btf/sched_process_*     exec (discovery), fork (inherit), exit
 *   tp_btf/sched_migrate_task  a traced thread moves to another CPU: the
 *                              events its old CPU holds go first
 *   raw_tp rastro_flush        not attached: the agent runs it before each
 *                              periodic drain, to deliver the data events
 *                              the CPUs hold back (socket hooks: hold_begin)
 *
 * The agent loads one of the first two sets (socket_hooks). Syscall
 * arguments are read from the task's saved user registers, so no sys_enter
 * program runs.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "rastro.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define AF_INET 2
#define AF_INET6 10
#define SOCK_STREAM 1
#define IPPROTO_TCP 6
#define MSG_PEEK 2
#define EINPROGRESS 115
#define S_IFMT 00170000
#define S_IFSOCK 0140000
#define RCV_SHUTDOWN 1

#if defined(__TARGET_ARCH_x86)
#define NR_read 0
#define NR_write 1
#define NR_readv 19
#define NR_writev 20
#define NR_sendfile 40
#define NR_connect 42
#define NR_accept 43
#define NR_sendto 44
#define NR_recvfrom 45
#define NR_sendmsg 46
#define NR_recvmsg 47
#define NR_listen 50
#define NR_accept4 288
/* At sys_exit the entry registers are still in pt_regs; only ax holds the
 * return value. */
#define SYSCALL_NR(r) ((long)(r)->orig_ax)
#define SYSCALL_ARG0(r) ((r)->di)
#define SYSCALL_ARG1(r) ((r)->si)
#define SYSCALL_ARG2(r) ((r)->dx)
#define SYSCALL_ARG3(r) ((r)->r10)
#elif defined(__TARGET_ARCH_arm64)
#define NR_read 63
#define NR_write 64
#define NR_readv 65
#define NR_writev 66
#define NR_sendfile 71
#define NR_listen 201
#define NR_accept 202
#define NR_connect 203
#define NR_sendto 206
#define NR_recvfrom 207
#define NR_sendmsg 211
#define NR_recvmsg 212
#define NR_accept4 242
/* x0 is overwritten by the return value; orig_x0 keeps the first argument. */
#define SYSCALL_NR(r) ((long)(r)->syscallno)
#define SYSCALL_ARG0(r) ((r)->orig_x0)
#define SYSCALL_ARG1(r) ((r)->regs[1])
#define SYSCALL_ARG2(r) ((r)->regs[2])
#define SYSCALL_ARG3(r) ((r)->regs[3])
#else
#error "rastro supports x86_64 and arm64"
#endif

/* Set by the agent before load. */
const volatile __u32 capture_bytes = RASTRO_CAPTURE_MAX; /* <= RASTRO_CAPTURE_MAX */
const volatile __u32 wakeup_bytes = 1024 * 1024;         /* batch ring buffer wakeups */
/* Self-test of the load-failure report (RASTRO_SELFTEST_REJECT=1): makes the
 * verifier reject rastro_sock_state (loaded with either set of hooks). Dead
 * code otherwise: the verifier prunes it because the value is known at load
 * time. */
const volatile __u32 selftest_reject = 0;
/* Self-test of events sent ahead (RASTRO_SELFTEST_SEND_AHEAD). 1: a thread's
 * move does not deliver its old CPU's events, and an event of a connection
 * another CPU holds events of does not try to deliver them: it is sent ahead
 * of them (output_after), as when that CPU's vCPU is descheduled. 2: an event
 * of a CPU that holds events is sent ahead of them (hold_begin), as when
 * another CPU is delivering them and is descheduled. */
const volatile __u32 selftest_send_ahead = 0;
/* 1: data comes from the socket hooks (rastro_sock_send/recv), connect and
 * listen from rastro_sock_state; 0: all three from rastro_sys_exit. */
const volatile __u32 socket_hooks = 0;
/* Possible CPUs (libbpf_num_possible_cpus), for rastro_flush. */
const volatile __u32 nr_cpus = 1;

/* Unique connection ids; 0 is never used. */
__u64 next_conn_id = 1;

/* One bit per possible tgid, set while the process has an entry in the
 * traced map (set after the insert, cleared before the delete, by the agent
 * through the mmap'ed .bss and by the fork/exit hooks). Every read/write of
 * every process on the machine asks whether it is traced: a bit test costs
 * a load, the hash lookup it saves a hash and a bucket walk. */
__u64 traced_bits[RASTRO_TRACED_BITS_WORDS];

/* One bit per TCP port that a traced process listens on (set by the agent,
 * through the mmap'ed .bss, when it starts tracing a process and at each
 * listen() of one; never cleared while rastro runs). A traced client's
 * request to such a port goes out at once: the server's side of the
 * connection may be traced too, and is linked to it (see hold_begin). */
__u64 server_ports[65536 / 64];

/* How many batches each CPU has delivered (or lost), one cache line each:
 * a CPU writes its own on every batch, and the state hook of another reads
 * it to tell whether a connection's held events went out already. held: 1
 * while the CPU holds events, read by the agent (the mmap'ed .bss) to run
 * rastro_flush on that CPU only. */
struct {
	__u32 n;
	__u32 held;
	__u32 _pad[14];
} batch_gen[RASTRO_HOLD_CPUS];

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 << 20); /* resized by the agent */
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096); /* resized by the agent */
	__type(key, __u32);        /* tgid */
	__type(value, struct rastro_traced);
} traced SEC(".maps");

/* Connection state in a hash map keyed by the socket's address: with the
 * sys_exit fallback, every connection's (that program finds sockets through
 * the file table, pointers the socket-storage helpers do not take); with the
 * socket hooks, a young connection's (conn_settle). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536); /* resized by the agent */
	__type(key, __u64);         /* struct sock * */
	__type(value, struct rastro_conn);
} conns SEC(".maps");

/*
 * Connections whose data the agent ignores: no protocol it knows (TLS, a
 * server it has no parser for: a traced Redis server's own connections).
 * The agent adds a connection's id here when it gives up on it, then adds
 * one to mute_gen (mmap'ed .bss); a connection's next data event asks this
 * map only when mute_gen moved since its last ask, and one found here is
 * marked muted: its data events stop at that mark, before the payload copy
 * and the ring buffer (counted, RASTRO_STAT_MUTED). Its close still goes to
 * the agent, which then removes the id. So the common case, no mute since a
 * connection's last event, costs one load and compare.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64);   /* conn_id */
	__type(value, __u8);
} mutes SEC(".maps");

__u32 mute_gen;

/* Connection state, with the socket hooks, once a connection carries a
 * second request: kept in the socket itself (socket local storage), found
 * without hashing (a few loads where the hash map's lookup costs about 20
 * ns more), freed with the socket if the close hook missed it. Making and
 * freeing an entry costs about three times the hash map's (bench/bpf_ops),
 * which a connection that carries one request (Connection: close, a client
 * that connects per query) would pay in full. conn_count: the entries of
 * both maps, at most max_connections, read by the agent (the mmap'ed .bss). */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct rastro_conn);
} conn_store SEC(".maps");

const volatile __u32 max_connections = 65536;
__s64 conn_count;

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, RASTRO_STAT__COUNT);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

struct scratch {
	/* Data bytes this CPU submitted since it last asked the ring how full
	 * it is (data_wakeup_flags). */
	__u32 unqueried;
	__u32 _pad;
	/* Right before ev: the header of an event sent ahead (output_after). */
	struct rastro_after_event after;
	struct rastro_data_event ev;
	/* Twice the capture size: a copy starts at an offset masked below
	 * RASTRO_CAPTURE_MAX and is at most RASTRO_CAPTURE_MAX long. */
	__u8 data[2 * RASTRO_CAPTURE_MAX];
	/* 1 + the CPU whose program is changing or delivering the held events
	 * now, 0 when none: see hold_lock. */
	__u32 busy;
	__u32 cpu1; /* 1 + this CPU's number, once known */
	/* The last held event: its offset in held, and its socket. */
	__u32 last_off;
	__u32 _pad2;
	__u64 last_sk;
	/* How many of the held events are connections' ends (hold_close). */
	__u32 held_closes;
	__u32 _pad3;
	/* Bit tid % 64 of every thread with a held event (rastro_migrate). */
	__u64 held_tids;
	__u64 regs_seen[2]; /* syscall_regs */
	/* The data events of the thread running on this CPU, held back: batch
	 * and the first batch.len bytes of held (right after it) are delivered
	 * as one record. An event starts at an offset masked below
	 * RASTRO_HOLD_BYTES and its payload is copied as into data above, hence
	 * the room after it. */
	struct rastro_batch_event batch;
	__u8 held[RASTRO_HOLD_BYTES + sizeof(struct rastro_data_event) + 2 * RASTRO_CAPTURE_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} scratch_map SEC(".maps");

extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym;

static __always_inline void stat_add(__u32 idx, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &idx);
	if (v)
		*v += n;
}

static __always_inline void stat_inc(__u32 idx)
{
	stat_add(idx, 1);
}

/* Bit i of a bitmap of nwords (a power of two) words. */
static __always_inline bool bit_of(const __u64 *words, __u32 nwords, __u32 i)
{
	return words[(i >> 6) & (nwords - 1)] & (1ull << (i & 63));
}

static __always_inline bool traced_bit(__u32 tgid)
{
	return bit_of(traced_bits, RASTRO_TRACED_BITS_WORDS, tgid);
}

/* The traced-map entry of process tgid, or NULL; the bitmap answers first
 * for the processes that are not traced. */
static __always_inline struct rastro_traced *traced_entry(__u32 tgid)
{
	if (!traced_bit(tgid))
		return NULL;
	return bpf_map_lookup_elem(&traced, &tgid);
}

static __always_inline __u64 wakeup_flags(void)
{
	return bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >= wakeup_bytes
		       ? BPF_RB_FORCE_WAKEUP
		       : BPF_RB_NO_WAKEUP;
}

/* The same, asked once per wakeup_bytes / 16 of data per CPU rather than on
 * every event: the query reads the consumer position, a cache line the agent
 * writes from another CPU. The wakeup may come up to that much later per
 * CPU; a drain every ebpf.poll_interval bounds it anyway. */
static __always_inline __u64 data_wakeup_flags(struct scratch *s, __u32 size)
{
	s->unqueried += size;
	if (s->unqueried < wakeup_bytes / 16)
		return BPF_RB_NO_WAKEUP;
	s->unqueried = 0;
	return wakeup_flags();
}

/* The TCP socket behind file descriptor fd of the current task, or NULL. */
static __always_inline struct sock *fd_to_tcp_sock(__u64 fd)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct fdtable *fdt = task->files->fdt;
	struct file *fp = NULL;
	struct file **fds;

	if (fd >= fdt->max_fds)
		return NULL;
	fds = fdt->fd;
	if (bpf_probe_read_kernel(&fp, sizeof(fp), &fds[fd]) || !fp)
		return NULL;
	fp = bpf_rdonly_cast(fp, bpf_core_type_id_kernel(struct file));
	if ((fp->f_inode->i_mode & S_IFMT) != S_IFSOCK)
		return NULL;
	struct socket *sock = bpf_rdonly_cast(fp->private_data, bpf_core_type_id_kernel(struct socket));
	struct sock *sk = sock->sk;
	if (!sk)
		return NULL;
	__u16 family = sk->__sk_common.skc_family;
	if ((family != AF_INET && family != AF_INET6) || sk->sk_type != SOCK_STREAM ||
	    sk->sk_protocol != IPPROTO_TCP)
		return NULL;
	return sk;
}

/* sk is a BTF pointer in every caller: its fields are read with plain loads
 * (the verifier makes them fault-safe), not with a helper call each. */
static __always_inline void read_tuple(struct sock *sk, struct rastro_tuple *t)
{
	__u16 family = sk->__sk_common.skc_family;

	t->family = family;
	t->local_port = sk->__sk_common.skc_num;
	t->remote_port = bpf_ntohs(sk->__sk_common.skc_dport);
	if (family == AF_INET) {
		__u32 l = sk->__sk_common.skc_rcv_saddr;
		__u32 r = sk->__sk_common.skc_daddr;
		t->local_addr[10] = 0xff;
		t->local_addr[11] = 0xff;
		t->remote_addr[10] = 0xff;
		t->remote_addr[11] = 0xff;
		__builtin_memcpy(&t->local_addr[12], &l, 4);
		__builtin_memcpy(&t->remote_addr[12], &r, 4);
	} else {
		__builtin_memcpy(t->local_addr, sk->__sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8, 16);
		__builtin_memcpy(t->remote_addr, sk->__sk_common.skc_v6_daddr.in6_u.u6_addr8, 16);
	}
}

/* Whether entry c is sk's: an entry for an earlier socket at the same
 * address (one the state-change hook could not free) names other ports and
 * is never taken for this connection. The local port is 0 in an entry made
 * at connect()'s SYN_SENT, before it is bound. */
static __always_inline bool conn_is_sk(const struct rastro_conn *c, struct sock *sk)
{
	return c->tuple.remote_port == bpf_ntohs(sk->__sk_common.skc_dport) &&
	       (!c->tuple.local_port || c->tuple.local_port == sk->__sk_common.skc_num);
}

/* sk's connection state, or NULL: in the socket's storage (socket hooks),
 * else in the hash map, where an earlier socket's entry at the same address
 * is taken only unless exact (the close hook takes and frees it). Which
 * stores is decided at load time (socket_hooks, read-only data): the
 * verifier does not follow the other branch, so the fallback's untrusted
 * socket pointers never reach the storage helper. */
static __always_inline struct rastro_conn *conn_find(struct sock *sk, bool exact)
{
	if (socket_hooks) {
		struct rastro_conn *c = bpf_sk_storage_get(&conn_store, sk, 0, 0);
		if (c)
			return c;
	}
	__u64 key = (__u64)sk;
	struct rastro_conn *c = bpf_map_lookup_elem(&conns, &key);
	return c && (!exact || conn_is_sk(c, sk)) ? c : NULL;
}

/* Makes sk's entry in the hash map from nc, within max_connections (how:
 * BPF_ANY replaces an earlier socket's entry at the same address, which was
 * counted). */
static __always_inline struct rastro_conn *conn_hash_new(struct sock *sk, struct rastro_conn *nc,
							 __u64 how)
{
	__u64 key = (__u64)sk;
	if (how == BPF_NOEXIST && __sync_fetch_and_add(&conn_count, 1) >= max_connections) {
		__sync_fetch_and_add(&conn_count, -1);
		return NULL;
	}
	if (bpf_map_update_elem(&conns, &key, nc, how)) {
		if (how == BPF_NOEXIST)
			__sync_fetch_and_add(&conn_count, -1);
		/* Made first by a program on another CPU: that one is used. */
		return conn_find(sk, true);
	}
	return bpf_map_lookup_elem(&conns, &key);
}

/* Connection state for sk, created on first sight with role and the
 * service of process tgid. An existing connection takes role only when it
 * is certain (accept, connect). NULL when there is no room
 * (ebpf.max_connections, counted); the caller then reports the data
 * without state. */
static __always_inline struct rastro_conn *conn_get(struct sock *sk, __u32 tgid, __u32 service_id,
						    __u8 role, bool certain)
{
	__u64 how = BPF_NOEXIST;
	struct rastro_conn *c = conn_find(sk, false);
	if (c && c->young && !conn_is_sk(c, sk)) {
		c = NULL;
		how = BPF_ANY; /* an earlier socket's entry, replaced */
	}
	if (c) {
		if (certain)
			c->role = role;
		return c;
	}
	struct rastro_conn nc = {};
	nc.conn_id = __sync_fetch_and_add(&next_conn_id, 1);
	nc.tgid = tgid;
	nc.service_id = service_id;
	nc.role = role;
	nc.young = 1;
	nc.mute_gen = mute_gen; /* a new id: not in the mutes map */
	read_tuple(sk, &nc.tuple);
	c = conn_hash_new(sk, &nc, how);
	if (!c)
		stat_inc(RASTRO_LOSS_CONN_MAP_FULL);
	return c;
}

/* A young connection's data event (socket hooks): when its data turns
 * direction a second time, it carries a second request (or a second
 * response: the client's side), and its entry moves to the socket's storage,
 * where a long-lived connection is found cheapest. Returns the entry to use
 * from here on (c if it stays). */
static __always_inline struct rastro_conn *conn_settle(struct sock *sk, struct rastro_conn *c,
						       __u8 direction)
{
	if (!socket_hooks || !c->young)
		return c;
	if (c->last_dir && c->last_dir != direction + 1)
		c->turns++;
	c->last_dir = direction + 1;
	if (c->turns < 2)
		return c;
	struct rastro_conn nc = *c;
	nc.young = 0;
	struct rastro_conn *n =
		bpf_sk_storage_get(&conn_store, sk, &nc, BPF_SK_STORAGE_GET_F_CREATE);
	if (!n) /* no memory for it: it stays */
		return c;
	__u64 key = (__u64)sk;
	if (n->conn_id == nc.conn_id)
		bpf_map_delete_elem(&conns, &key);
	stat_inc(RASTRO_STAT_CONN_SETTLED);
	return n;
}

/* Forgets sk's connection state (its end). */
static __always_inline void conn_forget(struct sock *sk)
{
	if (socket_hooks && !bpf_sk_storage_delete(&conn_store, sk)) {
		__sync_fetch_and_add(&conn_count, -1);
		return;
	}
	__u64 key = (__u64)sk;
	if (!bpf_map_delete_elem(&conns, &key))
		__sync_fetch_and_add(&conn_count, -1);
}

/* Copies up to want bytes from a user buffer to dst (a map value with
 * 2 * RASTRO_CAPTURE_MAX bytes of room after it). */
static __always_inline __u32 copy_buf(__u8 *dst, __u64 ubuf, __u32 want)
{
	if (want > RASTRO_CAPTURE_MAX)
		want = RASTRO_CAPTURE_MAX;
	barrier_var(want); /* keep clang from reusing the unclamped register */
	if (bpf_probe_read_user(dst, want, (const void *)ubuf))
		return 0;
	return want;
}

/* Copies up to want bytes spread over an iovec array to dst. */
static __always_inline __u32 copy_iov(__u8 *dst, __u64 uiov, __u64 iovcnt, __u32 want,
				      __u8 *flags)
{
	__u32 off = 0;
	int i;

	for (i = 0; i < RASTRO_MAX_IOV; i++) {
		struct iovec iov;
		if (i >= iovcnt || off >= want)
			break;
		if (bpf_probe_read_user(&iov, sizeof(iov), (const void *)(uiov + i * sizeof(iov))))
			break;
		__u32 n = want - off;
		if (iov.iov_len < n)
			n = iov.iov_len;
		if (n > RASTRO_CAPTURE_MAX)
			n = RASTRO_CAPTURE_MAX;
		barrier_var(n);
		if (bpf_probe_read_user(&dst[off & (RASTRO_CAPTURE_MAX - 1)], n, iov.iov_base))
			break;
		off += n;
	}
	if (off < want && i == RASTRO_MAX_IOV)
		*flags |= RASTRO_DATA_F_IOV_LIMIT;
	return off;
}

/* Where the bytes of a data syscall are, decoded from its saved registers. */
struct io_args {
	__u64 buf;    /* read/write/recvfrom/sendto */
	__u64 iov;    /* readv/writev/recvmsg/sendmsg */
	__u64 iovcnt;
	__u8 direction, syscall;
};

/* false: not a data syscall, or one whose bytes will be read again
 * (MSG_PEEK). */
static __always_inline bool decode_io(struct pt_regs *regs, long nr, struct io_args *a)
{
	__u64 arg1 = SYSCALL_ARG1(regs);

	a->buf = a->iov = a->iovcnt = 0;
	switch (nr) {
	case NR_read:
		a->direction = RASTRO_DIR_INGRESS, a->syscall = RASTRO_SYS_READ, a->buf = arg1;
		return true;
	case NR_write:
		a->direction = RASTRO_DIR_EGRESS, a->syscall = RASTRO_SYS_WRITE, a->buf = arg1;
		return true;
	case NR_recvfrom:
		if (SYSCALL_ARG3(regs) & MSG_PEEK)
			return false;
		a->direction = RASTRO_DIR_INGRESS, a->syscall = RASTRO_SYS_RECVFROM, a->buf = arg1;
		return true;
	case NR_sendto:
		a->direction = RASTRO_DIR_EGRESS, a->syscall = RASTRO_SYS_SENDTO, a->buf = arg1;
		return true;
	case NR_readv:
		a->direction = RASTRO_DIR_INGRESS, a->syscall = RASTRO_SYS_READV;
		a->iov = arg1, a->iovcnt = SYSCALL_ARG2(regs);
		return true;
	case NR_writev:
		a->direction = RASTRO_DIR_EGRESS, a->syscall = RASTRO_SYS_WRITEV;
		a->iov = arg1, a->iovcnt = SYSCALL_ARG2(regs);
		return true;
	case NR_recvmsg:
	case NR_sendmsg: {
		struct user_msghdr msg;
		if (nr == NR_recvmsg && (SYSCALL_ARG2(regs) & MSG_PEEK))
			return false;
		if (bpf_probe_read_user(&msg, sizeof(msg), (const void *)arg1))
			return false;
		a->direction = nr == NR_recvmsg ? RASTRO_DIR_INGRESS : RASTRO_DIR_EGRESS;
		a->syscall = nr == NR_recvmsg ? RASTRO_SYS_RECVMSG : RASTRO_SYS_SENDMSG;
		a->iov = (__u64)msg.msg_iov, a->iovcnt = msg.msg_iovlen;
		return true;
	}
	case NR_sendfile:
		a->direction = RASTRO_DIR_EGRESS, a->syscall = RASTRO_SYS_SENDFILE;
		return true;
	default:
		return false;
	}
}

/* Delivers the events CPU s->cpu1 - 1 holds back, as one RASTRO_EV_BATCH
 * record; the caller holds them (hold_lock). */
static __always_inline void flush_held(struct scratch *s)
{
	__u32 n = s->batch.count;
	if (!n)
		return;
	__u32 size = s->batch.len;
	if (size > RASTRO_HOLD_BYTES)
		size = RASTRO_HOLD_BYTES;
	barrier_var(size);
	size += sizeof(s->batch);
	__u32 cpu = (s->cpu1 - 1) & (RASTRO_HOLD_CPUS - 1);
	s->batch.cpu = cpu;
	s->batch.gen = batch_gen[cpu].n;
	__u32 closes = s->held_closes;
	if (bpf_ringbuf_output(&events, &s->batch, size, data_wakeup_flags(s, size))) {
		stat_add(RASTRO_LOSS_RINGBUF_FULL, n - closes);
		stat_add(RASTRO_LOSS_CONTROL_RINGBUF, closes);
	} else {
		stat_add(RASTRO_STAT_DATA_EVENTS, n - closes);
		stat_inc(RASTRO_STAT_DATA_RECORDS);
	}
	/* After the record is in the ring (see rastro_sock_state), and after
	 * the held flag: see held_batch. */
	batch_gen[cpu].held = 0;
#if defined(__TARGET_ARCH_x86)
	barrier(); /* x86 keeps stores in order */
	batch_gen[cpu].n++;
#else
	__sync_lock_test_and_set(&batch_gen[cpu].n, batch_gen[cpu].n + 1); /* a full barrier */
#endif
	s->held_tids = 0;
	s->held_closes = 0;
	s->batch.count = 0;
	s->batch.len = 0;
}

/* How many times hold_lock asks again while another CPU holds the events:
 * that CPU is inside a program (preemption is off in tracepoints and in
 * rastro_flush), which takes well under a microsecond to deliver them. */
#define HOLD_LOCK_TRIES 64

/*
 * Takes the held events of scratch s (any CPU's) for a program running on
 * CPU me - 1. 1: taken, release with hold_unlock. 0: a program on this very
 * CPU has them (this one interrupted it, or runs inside it): it cannot be
 * waited for. -1: another CPU kept them through every try (its vCPU was
 * descheduled by the host, say).
 */
struct hold_try {
	struct scratch *s;
	__u32 me;
	int got;
};

static long hold_lock_again(__u64 i, void *arg)
{
	struct hold_try *t = arg;
	__u32 owner = __sync_val_compare_and_swap(&t->s->busy, 0, t->me);
	if (owner && owner != t->me)
		return 0;
	t->got = !owner;
	return 1;
}

static __always_inline int hold_lock(struct scratch *s, __u32 me)
{
	__u32 owner = __sync_val_compare_and_swap(&s->busy, 0, me);
	if (!owner)
		return 1;
	if (owner == me)
		return 0;
	/* The retries in a bpf_loop: verified once, where an unrolled loop
	 * made the verifier walk every try on every path to it. */
	struct hold_try t = {s, me, -1};
	bpf_loop(HOLD_LOCK_TRIES - 1, hold_lock_again, &t, 0);
	return t.got;
}

static __always_inline void hold_unlock(struct scratch *s)
{
#if defined(__TARGET_ARCH_x86)
	barrier(); /* x86 keeps stores in order: the events are written before */
	s->busy = 0;
#else
	__sync_lock_test_and_set(&s->busy, 0); /* a full barrier (BPF_XCHG) */
#endif
}

/*
 * The batch this CPU (s->cpu1 - 1) holds, which another CPU is delivering
 * (it holds the lock): an event that cannot wait for it names it (1 + the
 * CPU in *cpu1, its number in *gen), or leaves *cpu1 0 when nothing is held.
 * flush_held clears the held flag before it counts the batch delivered: a
 * number read here before a held flag still set is the batch's own. The
 * other order could name the next batch, which this CPU has not begun.
 */
static __always_inline void held_batch(struct scratch *s, __u32 *cpu1, __u32 *gen)
{
	__u32 cpu = (s->cpu1 - 1) & (RASTRO_HOLD_CPUS - 1);
	__u32 n = __sync_fetch_and_add(&batch_gen[cpu].n, 0); /* a full barrier */
	if (*(volatile __u32 *)&batch_gen[cpu].held) {
		*cpu1 = s->cpu1;
		*gen = n;
	}
}

static __always_inline bool server_port(__u16 port)
{
	return bit_of(server_ports, 65536 / 64, port);
}

/* Delivers what this CPU holds, from the hooks that are not data events (the
 * state and process hooks), unless a program of this CPU is changing them. */
static __always_inline void flush_own(struct scratch *s)
{
	if (s->batch.count && hold_lock(s, s->cpu1) == 1) {
		flush_held(s);
		hold_unlock(s);
	}
}

static __always_inline void flush_cpu(void)
{
	__u32 zero = 0;
	struct scratch *s = bpf_map_lookup_elem(&scratch_map, &zero);
	if (s)
		flush_own(s);
}

/* Delivers what CPU cpu holds (r: its scratch), from a program on CPU me - 1
 * (possibly the same; counted when not). 1: done (or nothing held); else
 * hold_lock's answer: 0, a program of CPU me - 1 has them; -1, another
 * CPU kept them through every try. */
static __always_inline int flush_scratch(struct scratch *r, __u32 cpu, __u32 me)
{
	if (!r->batch.count)
		return 1;
	int locked = hold_lock(r, me);
	if (locked != 1)
		return locked;
	if (r->batch.count && cpu != me - 1)
		stat_inc(RASTRO_STAT_BATCH_TAKEN_OVER);
	flush_held(r);
	hold_unlock(r);
	return 1;
}

static __always_inline bool flush_other(__u32 cpu, __u32 me)
{
	__u32 zero = 0;
	struct scratch *r = bpf_map_lookup_percpu_elem(&scratch_map, &zero, cpu);
	return !r || flush_scratch(r, cpu, me) == 1;
}

/* Whether c's last held event is still held by another CPU's batch: its
 * mark (set in emit_data) names a batch that CPU has not delivered yet. */
static __always_inline bool held_still(const struct rastro_conn *c)
{
	return c->held_cpu &&
	       batch_gen[(c->held_cpu - 1) & (RASTRO_HOLD_CPUS - 1)].n == c->held_gen;
}

static long flush_one(__u64 cpu, void *me)
{
	flush_other(cpu, *(__u32 *)me);
	return 0;
}

/* Delivers what every CPU holds. */
static __always_inline void flush_all(void)
{
	__u32 me = bpf_get_smp_processor_id() + 1;
	bpf_loop(nr_cpus < RASTRO_HOLD_CPUS ? nr_cpus : RASTRO_HOLD_CPUS, flush_one, &me, 0);
}

static __always_inline void output_one(struct scratch *s, const void *rec, __u32 size)
{
	if (bpf_ringbuf_output(&events, (void *)rec, size, data_wakeup_flags(s, size))) {
		stat_inc(RASTRO_LOSS_RINGBUF_FULL);
	} else {
		stat_inc(RASTRO_STAT_DATA_EVENTS);
		stat_inc(RASTRO_STAT_DATA_RECORDS);
	}
}

/* Sends the event in s->ev (size bytes with its payload) ahead of batch gen
 * of CPU cpu1 - 1, which holds earlier events of its connection: the agent
 * reads it after that batch (RASTRO_EV_DATA_AFTER). */
static __always_inline void output_after(struct scratch *s, __u32 size, __u32 cpu1, __u32 gen)
{
	s->after.hdr.type = RASTRO_EV_DATA_AFTER;
	s->after.hdr._pad = 0;
	s->after.hdr.tgid = s->ev.hdr.tgid;
	s->after.hdr.ts_ns = s->ev.hdr.ts_ns;
	s->after.cpu = (cpu1 - 1) & (RASTRO_HOLD_CPUS - 1);
	s->after.gen = gen;
	stat_inc(RASTRO_STAT_SENT_AHEAD);
	output_one(s, &s->after, sizeof(s->after) + size);
}

/*
 * Every ring buffer record costs a reservation (a lock that disables
 * interrupts) and a commit, so the data events of a CPU are held back in its
 * scratch, written there in place, and delivered as one record
 * (RASTRO_EV_BATCH):
 * - when the next would not fit (RASTRO_HOLD_BYTES);
 * - when a client sends a request to a port a traced process listens on
 *   (server_ports): the server's side of that connection, traced too, is
 *   linked to it and must not be read first (traces.c). A request to any
 *   other server (a database, another host) waits with the rest: that
 *   record per request was most of a traced database client's cost;
 * - before any other event of the CPU (close, exec, fork, listen);
 * - before a process's exit event, from every CPU: the agent forgets the
 *   process there, and would drop its events read later;
 * - when a thread of a traced process moves to another CPU, before it runs
 *   there (rastro_migrate);
 * - before an event of a connection whose earlier events another CPU holds
 *   (a thread handed the socket to a thread there): that CPU's go first,
 *   delivered by this one (emit_data);
 * - at the latest at the agent's next periodic drain (rastro_flush).
 * A CPU's batch can hold the events of several threads and processes; the
 * agent reads each thread's events, and each connection's, in the order they
 * happened. Events of different threads on different CPUs can arrive in
 * another order than they happened, as they could before batching. Nothing
 * runs at context switches: a program on sched_switch, which delivered the
 * held events of a thread that blocked, cost every process of the machine
 * about 120 ns per blocking syscall, traced or not; threads move between
 * CPUs far less often.
 * A peer's reset can end a connection from another CPU while its last
 * events are held: each held event marks its connection with the CPU and its
 * batch number (batch_gen), and the close event names the batch the agent
 * must read before it ends the connection (rastro_sock_state).
 *
 * Held events are changed or delivered by one program at a time, of any CPU
 * (hold_lock). hold_begin returns where the next event goes, with room for
 * its header and `want` bytes of payload, and takes them; NULL when it cannot
 * be held: too large (it goes after the held ones), or a program this one
 * interrupted owns them, or another CPU is delivering them and kept them
 * through every try (then *after_cpu1 and *after_gen name that batch, which
 * the event is sent ahead of: held_batch). Then it goes alone, from s->ev.
 */
static __always_inline struct rastro_data_event *hold_begin(struct scratch *s, __u32 want,
							    __u32 *after_cpu1, __u32 *after_gen)
{
	__u32 need = (sizeof(struct rastro_data_event) + want + 7) & ~7u;
	/* Not with the sys_exit fallback: its one program, for every syscall,
	 * would exceed the verifier's budget with both ways to place an event. */
	if (!socket_hooks || s->cpu1 > RASTRO_HOLD_CPUS)
		return NULL;
	int locked = hold_lock(s, s->cpu1);
	if (selftest_send_ahead == 2 && locked == 1 && s->batch.count) {
		hold_unlock(s);
		locked = -1; /* as if another CPU were delivering them */
	}
	if (locked != 1) {
		if (locked < 0)
			held_batch(s, after_cpu1, after_gen);
		return NULL;
	}
	if (s->batch.len + need > RASTRO_HOLD_BYTES)
		flush_held(s); /* the held ones first */
	if (need > RASTRO_HOLD_BYTES) {
		hold_unlock(s);
		return NULL;
	}
	return (struct rastro_data_event *)&s->held[s->batch.len & (RASTRO_HOLD_BYTES - 1)];
}

/* The first held event of a batch: its header, and the flag the agent's
 * periodic drain reads (rastro_flush). */
static __always_inline void batch_start(struct scratch *s, __u32 tgid)
{
	s->batch.hdr.type = RASTRO_EV_BATCH;
	s->batch.hdr._pad = 0;
	s->batch.hdr.tgid = tgid;
	batch_gen[(s->cpu1 - 1) & (RASTRO_HOLD_CPUS - 1)].held = 1;
}

/* Adds the event hold_begin placed (size bytes with its payload) to the held
 * ones, and delivers them all unless hold. */
static __always_inline void hold_commit(struct scratch *s, struct rastro_data_event *ev, __u32 size,
					struct sock *sk, bool hold)
{
	if (!s->batch.count)
		batch_start(s, ev->hdr.tgid);
	s->batch.hdr.ts_ns = ev->hdr.ts_ns;
	s->last_off = s->batch.len;
	s->last_sk = (__u64)sk;
	s->batch.count++;
	s->batch.len += (size + 7) & ~7u;
	s->held_tids |= 1ull << (ev->tid & 63);
	if (!hold)
		flush_held(s);
	hold_unlock(s);
}

/*
 * A sendfile() that continues the last held event, on the same socket and in
 * the same direction, with no byte between them: a server's headers by
 * writev() then its body from a file (nginx, Apache). The file's bytes are
 * never captured, so that event grows by them and now ends at this time;
 * one event less to deliver, without a map lookup. Never a client's request:
 * its event's time is when the request began to go out.
 */
static __always_inline bool merge_sendfile(struct scratch *s, struct sock *sk, __u32 seq,
					   __u32 moved)
{
	if (!s->batch.count || s->last_sk != (__u64)sk || hold_lock(s, s->cpu1) != 1)
		return false;
	/* Asked again: a program that interrupted the test above (the state
	 * hook in a softirq), or another CPU, may have delivered them. */
	bool merged = false;
	struct rastro_data_event *prev =
		(struct rastro_data_event *)&s->held[s->last_off & (RASTRO_HOLD_BYTES - 1)];
	if (s->batch.count && s->last_sk == (__u64)sk && prev->direction == RASTRO_DIR_EGRESS &&
	    prev->role != RASTRO_ROLE_CLIENT && prev->seq + prev->bytes == seq &&
	    prev->bytes + moved > prev->bytes) {
		prev->bytes += moved;
		prev->hdr.ts_ns = bpf_ktime_get_ns();
		s->batch.hdr.ts_ns = prev->hdr.ts_ns;
		stat_inc(RASTRO_STAT_DATA_MERGED);
		merged = true;
	}
	hold_unlock(s);
	return merged;
}

/* Connection c's end: its close event. */
static __always_inline void close_event(struct rastro_close_event *e, const struct rastro_conn *c,
					__u32 flags, __u64 ts, __u32 held_cpu, __u32 held_gen,
					const struct sock *sk, __u32 unread)
{
	e->hdr.type = RASTRO_EV_CLOSE;
	e->hdr._pad = 0;
	e->hdr.tgid = c->tgid;
	e->hdr.ts_ns = ts;
	e->conn_id = c->conn_id;
	e->flags = flags;
	e->held_cpu = held_cpu;
	e->held_gen = held_gen;
	e->unread = unread;
	e->sock = (__u64)sk;
}

/*
 * A connection's end (close event: flags, ts) added to the events this CPU
 * holds, after them, when none of the connection's are held by another CPU:
 * a server that closes after its response (Connection: close) ends its
 * connection inside the batch that holds its request and response, where a
 * record of its own would first deliver that batch, then itself (two
 * records per connection instead of one per 4 KiB of events). False when
 * this CPU holds nothing, or cannot add to what it holds now: the caller
 * sends it alone.
 */
static __always_inline bool hold_close(struct rastro_conn *c, __u32 flags, __u64 ts,
				       const struct sock *sk, __u32 unread)
{
	__u32 zero = 0;
	struct scratch *s = bpf_map_lookup_elem(&scratch_map, &zero);
	if (!s || !s->batch.count || !s->cpu1 || (held_still(c) && c->held_cpu != s->cpu1))
		return false;
	__u32 after_cpu1 = 0, after_gen = 0;
	struct rastro_close_event *e = (void *)hold_begin(s, 0, &after_cpu1, &after_gen);
	if (!e)
		return false;
	close_event(e, c, flags, ts, 0, 0, sk, unread);
	if (!s->batch.count) /* hold_begin delivered a full batch */
		batch_start(s, c->tgid);
	s->batch.hdr.ts_ns = ts;
	s->last_sk = 0; /* no sendfile() continues it */
	s->batch.count++;
	s->held_closes++;
	s->batch.len += (sizeof(*e) + 7) & ~7u;
	hold_unlock(s);
	return true;
}

/* Reports `moved` bytes that the current thread (pid_tgid: its process's
 * traced bit is set) moved on TCP socket sk. role: what a connection first
 * seen here is known to be. */
static __always_inline int emit_data(struct sock *sk, long ret, __u64 pid_tgid, struct io_args *a,
				     __u8 role)
{
	__u32 tgid = pid_tgid >> 32;
	__u8 direction = a->direction, flags = 0;
	__u32 zero = 0, service_id;
	struct scratch *s = bpf_map_lookup_elem(&scratch_map, &zero);
	if (!s)
		return 0;
	if (!s->cpu1)
		s->cpu1 = bpf_get_smp_processor_id() + 1;

	/* A socket already closed (data read after a reset, sent after the
	 * peer's) gets no state: the close hook that frees it has run. The
	 * connection's entry keeps the service of the process that made it:
	 * the traced map is asked only for a new connection or another
	 * process's (the agent, too, names a connection's service once, at
	 * its first event). */
	struct rastro_conn *c = NULL;
	bool open = sk->__sk_common.skc_state != TCP_CLOSE;
	if (open) {
		c = conn_find(sk, true);
		if (c && c->tgid != tgid)
			c = NULL;
	}
	if (c) {
		service_id = c->service_id;
		__u32 gen = mute_gen;
		if (c->mute_gen != gen) {
			c->mute_gen = gen;
			if (bpf_map_lookup_elem(&mutes, &c->conn_id))
				c->muted = 1;
		}
		if (c->muted) {
			stat_inc(RASTRO_STAT_MUTED);
			return 0;
		}
		c = conn_settle(sk, c, direction);
	} else {
		struct rastro_traced *t = bpf_map_lookup_elem(&traced, &tgid);
		if (!t)
			return 0;
		service_id = t->service_id;
		if (open)
			c = conn_get(sk, tgid, service_id, role, false);
		else /* the connection's end, which any CPU may hold, goes first */
			flush_all();
	}
	/* Earlier events of this connection still held by another CPU go
	 * first (see hold_begin). When that CPU's lock could not be had, this
	 * event goes alone, after what this CPU holds, and names the batch the
	 * agent must read before it (output_after). */
	__u32 after_cpu1 = 0, after_gen = 0;
	if (c && c->held_cpu != s->cpu1 && held_still(c) &&
	    (selftest_send_ahead == 1 ||
	     !flush_other((c->held_cpu - 1) & (RASTRO_HOLD_CPUS - 1), s->cpu1))) {
		after_cpu1 = c->held_cpu;
		after_gen = c->held_gen;
		flush_own(s);
	}
	struct tcp_sock *tp = bpf_rdonly_cast(sk, bpf_core_type_id_kernel(struct tcp_sock));
	__u32 seq_after = direction == RASTRO_DIR_EGRESS ? tp->write_seq : tp->copied_seq;
	/* A read that consumed the peer's FIN advanced copied_seq one past the
	 * data (the FIN takes a sequence number): then everything up to rcv_nxt
	 * is consumed and the receive side is shut down. */
	if (direction == RASTRO_DIR_INGRESS && (sk->sk_shutdown & RCV_SHUTDOWN) &&
	    seq_after == tp->rcv_nxt)
		seq_after--;

	/* 32-bit copy through a barrier: clang otherwise reuses the 64-bit
	 * return value, whose bounds the verifier cannot see. */
	__u32 moved = ret;
	barrier_var(moved);
	__u32 want = 0;
	if (a->buf || a->iov)
		want = moved < capture_bytes ? moved : capture_bytes;

	/* Written in place among the held events, or alone in s->ev. */
	struct rastro_data_event *ev = after_cpu1 ? NULL : hold_begin(s, want, &after_cpu1, &after_gen);
	bool held = ev;
	if (!ev)
		ev = &s->ev;
	else if (c) {
		/* Before the event is held: a state hook that finds the mark
		 * and this CPU's batch number unchanged knows it is held. */
		c->held_cpu = s->cpu1;
		c->held_gen = batch_gen[(s->cpu1 - 1) & (RASTRO_HOLD_CPUS - 1)].n;
	}
	/* A traced client's request to a port a traced process listens on is
	 * delivered at once (with what this CPU holds): that server's span is
	 * linked to it, and the agent must read it first. Decided here: c is
	 * not used past this block, which the verifier needs (c is an entry of
	 * either connection map; it would explore the payload copies below once
	 * for each, several times as long). */
	bool hold = true;
	if (c) {
		/* Created at connect()'s SYN_SENT, before the local port is bound. */
		if (!c->tuple.local_port)
			read_tuple(sk, &c->tuple);
		ev->conn_id = c->conn_id;
		ev->role = c->role;
		ev->tuple = c->tuple;
		hold = !(direction == RASTRO_DIR_EGRESS && c->role == RASTRO_ROLE_CLIENT &&
			 server_port(c->tuple.remote_port));
	} else {
		flags |= RASTRO_DATA_F_NO_CONN_STATE;
		ev->conn_id = (__u64)sk;
		ev->role = RASTRO_ROLE_UNKNOWN;
		read_tuple(sk, &ev->tuple);
	}
	__u32 captured = 0;
	if (a->buf)
		captured = copy_buf((__u8 *)(ev + 1), a->buf, want);
	else if (a->iov)
		captured = copy_iov((__u8 *)(ev + 1), a->iov, a->iovcnt, want, &flags);
	if (captured < moved && a->syscall != RASTRO_SYS_SENDFILE)
		stat_inc(RASTRO_STAT_TRUNCATED);
	if (captured > RASTRO_CAPTURE_MAX)
		captured = RASTRO_CAPTURE_MAX;
	barrier_var(captured);

	ev->hdr.type = RASTRO_EV_DATA;
	ev->hdr._pad = 0;
	ev->hdr.tgid = tgid;
	ev->hdr.ts_ns = bpf_ktime_get_ns();
	ev->tid = (__u32)pid_tgid;
	ev->service_id = service_id;
	ev->bytes = moved;
	ev->captured = captured;
	ev->seq = seq_after - moved;
	ev->direction = direction;
	ev->syscall = a->syscall;
	ev->flags = flags;

	__u32 size = sizeof(*ev) + captured;
	if (held)
		hold_commit(s, ev, size, sk, hold);
	else if (after_cpu1)
		output_after(s, size, after_cpu1, after_gen);
	else
		output_one(s, ev, size);
	return 0;
}

/* When an exec or listen event last forced the agent awake. */
__u64 discovery_wakeup_ns;

/*
 * An exec or a listen() may start a process the agent must trace: it cannot
 * wait for the next drain (ebpf.poll_interval, 50 ms), during which a client
 * like pgbench makes hundreds of requests nobody sees. Those events wake the
 * agent at once, at most once per 2 ms (an exec storm costs it at most 500
 * wakeups a second; an event inside that window goes with the next wakeup or
 * drain).
 */
static __always_inline __u64 proc_wakeup_flags(__u16 type, __u64 now)
{
	if ((type == RASTRO_EV_EXEC || type == RASTRO_EV_LISTEN) &&
	    now - discovery_wakeup_ns >= 2000000) {
		discovery_wakeup_ns = now;
		return BPF_RB_FORCE_WAKEUP;
	}
	return wakeup_flags();
}

static __always_inline void emit_proc(__u16 type, __u32 pid, __u32 ppid, __u32 service_id,
				      __u16 port)
{
	flush_cpu(); /* the current thread's data first */
	struct rastro_proc_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		stat_inc(RASTRO_LOSS_CONTROL_RINGBUF);
		return;
	}
	e->hdr.type = type;
	e->hdr._pad = 0;
	e->hdr.tgid = pid;
	e->hdr.ts_ns = bpf_ktime_get_ns();
	e->pid = pid;
	e->ppid = ppid;
	e->service_id = service_id;
	e->port = port;
	e->_pad = 0;
	bpf_ringbuf_submit(e, proc_wakeup_flags(type, e->hdr.ts_ns));
}

SEC("tp_btf/sys_exit")
int BPF_PROG(rastro_sys_exit, struct pt_regs *regs, long ret)
{
	long nr = SYSCALL_NR(regs);

	switch (nr) {
	case NR_read:
	case NR_write:
	case NR_readv:
	case NR_writev:
	case NR_recvfrom:
	case NR_sendto:
	case NR_recvmsg:
	case NR_sendmsg:
	case NR_sendfile:
		/* Nothing moved (EAGAIN, EOF, an error): nothing to report, for any
		 * process. Checked first: a nonblocking server ends each burst of
		 * reads with an EAGAIN. */
		if (ret <= 0)
			return 0;
		break;
	case NR_accept:
	case NR_accept4:
		if (ret < 0)
			return 0;
		break;
	case NR_connect:
		if (ret != 0 && ret != -EINPROGRESS)
			return 0;
		break;
	case NR_listen:
		/* Any process: discovery learns of new listening ports here. */
		if (ret == 0) {
			struct sock *sk = fd_to_tcp_sock(SYSCALL_ARG0(regs));
			if (sk)
				emit_proc(RASTRO_EV_LISTEN, bpf_get_current_pid_tgid() >> 32, 0, 0,
					  sk->__sk_common.skc_num);
		}
		return 0;
	default:
		return 0;
	}

	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tgid = pid_tgid >> 32;
	if (!traced_bit(tgid))
		return 0;

	if (nr == NR_accept || nr == NR_accept4 || nr == NR_connect) {
		struct rastro_traced *t = bpf_map_lookup_elem(&traced, &tgid);
		struct sock *sk = fd_to_tcp_sock(nr == NR_connect ? SYSCALL_ARG0(regs) : ret);
		if (t && sk)
			conn_get(sk, tgid, t->service_id,
				 nr == NR_connect ? RASTRO_ROLE_CLIENT : RASTRO_ROLE_SERVER, true);
		return 0;
	}
	struct io_args a;
	if (!decode_io(regs, nr, &a))
		return 0;
	struct sock *sk = fd_to_tcp_sock(SYSCALL_ARG0(regs));
	if (!sk)
		return 0;
	return emit_data(sk, ret, pid_tgid, &a, RASTRO_ROLE_UNKNOWN);
}

/* A syscall's registers sit at the same distance from every task's kernel
 * stack (task_pt_regs: at its top, less any padding the architecture keeps
 * there). Learned from bpf_task_pt_regs at the first traced event (its two
 * values go through this CPU's scratch, which makes them plain numbers);
 * from then on the registers are found with one load and an add instead of
 * a helper call. */
__u64 pt_regs_offset;

static __always_inline struct pt_regs *syscall_regs(void)
{
	struct task_struct *task = bpf_get_current_task_btf();
	__u64 off = pt_regs_offset;
	if (off)
		return bpf_rdonly_cast((void *)((__u64)task->stack + off),
				       bpf_core_type_id_kernel(struct pt_regs));
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(task);
	__u32 zero = 0;
	struct scratch *s = bpf_map_lookup_elem(&scratch_map, &zero);
	if (s) {
		s->regs_seen[0] = (__u64)regs;
		s->regs_seen[1] = (__u64)task->stack;
		off = s->regs_seen[0] - s->regs_seen[1];
		if (off && off < 65536) /* within the stack's pages: never 0 */
			pt_regs_offset = off;
	}
	return regs;
}

/*
 * The socket hooks (Linux 6.3 and later): sock_send_length and
 * sock_recv_length fire inside sock_sendmsg and sock_recvmsg, so only socket
 * I/O runs a program, and the other syscalls of every process keep the
 * kernel's fast path (any sys_exit program moves every syscall of every
 * process to the slow one). The syscall, its buffer and its iovecs come from
 * the task's saved user registers, as at sys_exit; its bytes are already in
 * the user buffer (received) or still there (sent).
 */
static __always_inline int on_sock_io(struct sock *sk, int ret, int flags, __u8 direction)
{
	if (ret <= 0 || (flags & MSG_PEEK))
		return 0;
	/* The socket before the process: most sockets of a host are not TCP
	 * (unix, UDP, netlink), and their I/O returns here, before the helper
	 * call that reads the process id (plain loads from a socket whose
	 * lines the kernel just used). */
	__u16 family = sk->__sk_common.skc_family;
	if ((family != AF_INET && family != AF_INET6) || sk->sk_type != SOCK_STREAM ||
	    sk->sk_protocol != IPPROTO_TCP)
		return 0;
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	if (!traced_bit(pid_tgid >> 32))
		return 0;
	/* A socket with a file is one a process holds; the kernel's own (NFS,
	 * SMB clients) send from inside other syscalls, whose buffers are not
	 * theirs. */
	struct socket *so = sk->sk_socket;
	if (!so || !so->file)
		return 0;
	struct pt_regs *regs = syscall_regs();
	struct io_args a;
	if (!decode_io(regs, SYSCALL_NR(regs), &a) || a.direction != direction)
		return 0;
	if (direction == RASTRO_DIR_EGRESS && a.syscall == RASTRO_SYS_SENDFILE) {
		__u32 zero = 0;
		struct scratch *s = bpf_map_lookup_elem(&scratch_map, &zero);
		struct tcp_sock *tp = bpf_rdonly_cast(sk, bpf_core_type_id_kernel(struct tcp_sock));
		if (s && merge_sendfile(s, sk, tp->write_seq - ret, ret))
			return 0;
	}
	/* No accept() is seen here: connect() marks the client side
	 * (rastro_sock_state); an accepted connection is left to the parsers,
	 * as one that predates rastro. */
	return emit_data(sk, ret, pid_tgid, &a, RASTRO_ROLE_UNKNOWN);
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(rastro_sock_send, struct sock *sk, int ret, int flags)
{
	return on_sock_io(sk, ret, flags, RASTRO_DIR_EGRESS);
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(rastro_sock_recv, struct sock *sk, int ret, int flags)
{
	return on_sock_io(sk, ret, flags, RASTRO_DIR_INGRESS);
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(rastro_sock_state, const struct sock *sk, const int oldstate, const int newstate)
{
	if (selftest_reject)
		return *(volatile int *)(long)newstate;
	/* With the socket hooks no sys_exit program sees connect() and
	 * listen(); both change the socket's state in the calling task. */
	if (socket_hooks && (newstate == TCP_SYN_SENT || newstate == TCP_LISTEN)) {
		if (sk->sk_protocol != IPPROTO_TCP)
			return 0;
		__u32 tgid = bpf_get_current_pid_tgid() >> 32;
		if (newstate == TCP_LISTEN) {
			/* Any process: discovery learns of new listening ports here. */
			emit_proc(RASTRO_EV_LISTEN, tgid, 0, 0, sk->__sk_common.skc_num);
			return 0;
		}
		/* The local port is not bound yet: the first data event reads the
		 * tuple again. */
		struct rastro_traced *t = traced_entry(tgid);
		if (t)
			conn_get((struct sock *)sk, tgid, t->service_id, RASTRO_ROLE_CLIENT, true);
		return 0;
	}
	if (newstate != TCP_FIN_WAIT1 && newstate != TCP_LAST_ACK && newstate != TCP_CLOSE)
		return 0;
	struct rastro_conn *c = conn_find((struct sock *)sk, false);
	if (!c)
		return 0;
	if (!c->fin_notified) {
		c->fin_notified = 1;
		__u32 flags = newstate == TCP_CLOSE ? RASTRO_CLOSE_F_FINAL : RASTRO_CLOSE_F_LOCAL_FIN;
		__u64 ts = bpf_ktime_get_ns();
		/* A peer's reset leaves what it sent before readable (a close()
		 * with unread data empties the queue first): the process may
		 * still read a response, which the agent must add to this
		 * connection (its events have no state: emit_data). */
		__u32 unread = 0;
		if (newstate == TCP_CLOSE && sk->sk_receive_queue.qlen) {
			struct tcp_sock *tp =
				bpf_rdonly_cast(sk, bpf_core_type_id_kernel(struct tcp_sock));
			unread = tp->rcv_nxt - tp->copied_seq;
		}
		if (hold_close(c, flags, ts, sk, unread))
			goto forget;
		flush_cpu(); /* what this CPU holds goes before the end */
		/* Events of this connection another CPU still holds (a peer's
		 * reset handled here while the thread that sent it its last
		 * response has not blocked yet): the agent waits for that
		 * CPU's batch before it ends the connection. */
		__u32 held_cpu = held_still(c) ? c->held_cpu : 0, held_gen = c->held_gen;
		struct rastro_close_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
		if (e) {
			close_event(e, c, flags, ts, held_cpu, held_gen, sk, unread);
			bpf_ringbuf_submit(e, wakeup_flags());
		} else {
			stat_inc(RASTRO_LOSS_CONTROL_RINGBUF);
		}
	}
forget:
	if (newstate == TCP_CLOSE)
		conn_forget((struct sock *)sk);
	return 0;
}

/* A thread moves to CPU dest_cpu (on a wakeup, or pulled by the load
 * balancer; this runs on any CPU, often inside the waker's send): what its
 * old CPU holds goes first when some of it may be that thread's, so the
 * agent reads its events in order. Its process is traced: the bit answers
 * first, as for socket I/O; then the old CPU's thread filter. */
SEC("tp_btf/sched_migrate_task")
int BPF_PROG(rastro_migrate, struct task_struct *p, int dest_cpu)
{
	if (!traced_bit(p->tgid))
		return 0;
	__u32 zero = 0, cpu = p->thread_info.cpu;
	struct scratch *r = bpf_map_lookup_percpu_elem(&scratch_map, &zero, cpu);
	if (!r || !(r->held_tids & (1ull << (p->pid & 63))) || selftest_send_ahead == 1)
		return 0;
	/* 0: the program this one runs inside (a wakeup from its ring buffer
	 * output) is delivering or changing them, and its thread's next event
	 * of the connection delivers them if it does not. -1: their CPU is
	 * descheduled inside a program; counted, and that next event goes
	 * ahead of them (emit_data). */
	if (flush_scratch(r, cpu, bpf_get_smp_processor_id() + 1) < 0)
		stat_inc(RASTRO_STAT_SENT_AHEAD);
	return 0;
}

/* Run by the agent (BPF_PROG_TEST_RUN), never attached: before each
 * periodic drain, on each CPU that holds events (batch_gen[].held), so none
 * waits longer than ebpf.poll_interval (or the idle agent's slower polls).
 * On that CPU (an interrupt): args[0] == 0, this CPU's events, left for the
 * next time if the interrupt came inside a program that holds them; from
 * another CPU holding the events the whole time, a program on their own CPU
 * that wants them would wait, and an interrupt on the delivering CPU can make
 * that wait longer than hold_lock's tries. args[0] == 1: every CPU's, from
 * this one (a CPU taken offline, the agent's start-up probe). */
SEC("raw_tp")
int rastro_flush(struct bpf_raw_tracepoint_args *ctx)
{
	if (ctx->args[0])
		flush_all();
	else
		flush_cpu();
	return 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(rastro_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	emit_proc(RASTRO_EV_EXEC, p->tgid, 0, 0, 0);
	return 0;
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(rastro_fork, struct task_struct *parent, struct task_struct *child)
{
	if (child->pid != child->tgid)
		return 0; /* a new thread, already covered by its process */
	__u32 ptgid = parent->tgid, ctgid = child->tgid;
	struct rastro_traced *t = traced_entry(ptgid);
	if (!t)
		return 0;
	/* Prefork servers: workers are traced from their first instruction. */
	struct rastro_traced nt = *t;
	if (bpf_map_update_elem(&traced, &ctgid, &nt, BPF_ANY)) {
		stat_inc(RASTRO_LOSS_TRACED_MAP_FULL);
		return 0;
	}
	__sync_fetch_and_or(&traced_bits[(ctgid >> 6) & (RASTRO_TRACED_BITS_WORDS - 1)],
			    1ull << (ctgid & 63));
	emit_proc(RASTRO_EV_FORK, ctgid, ptgid, nt.service_id, 0);
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(rastro_exit, struct task_struct *p)
{
	/* Whole process gone: the last thread leaves signal->live at zero (read
	 * instead of the tracepoint's group_dead argument, which older kernels
	 * do not have). */
	if (p->signal->live.counter != 0)
		return 0;
	__u32 tgid = p->tgid;
	struct rastro_traced *t = traced_entry(tgid);
	if (!t)
		return 0;
	__u32 service_id = t->service_id;
	__sync_fetch_and_and(&traced_bits[(tgid >> 6) & (RASTRO_TRACED_BITS_WORDS - 1)],
			     ~(1ull << (tgid & 63)));
	bpf_map_delete_elem(&traced, &tgid);
	if (socket_hooks)
		flush_all(); /* its events other CPUs hold go first */
	emit_proc(RASTRO_EV_EXIT, tgid, 0, service_id, 0);
	return 0;
}
