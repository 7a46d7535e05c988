#include "capture/capture.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <stdbool.h>
#include <linux/capability.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "log.h"
#include "rastro.skel.h"

/* The ring buffer, read in place (see capture__drain). */
struct ring {
	uint64_t *consumer_pos;     /* the page the agent writes */
	const uint64_t *producer_pos; /* the page the kernel writes, then the data, mapped twice */
	const uint8_t *data;
	uint64_t mask;              /* data size - 1 */
	uint64_t release_every;     /* bytes consumed between two updates of consumer_pos */
	size_t page;
	int fd;
};

struct capture {
	struct rastro_bpf *skel;
	struct ring ring;
	capture_event_fn fn;
	void *ctx;
	int ncpus;
	uint64_t map_bytes; /* the fixed part */
	uint64_t mutes;     /* entries in the mutes map */
	bool socket_hooks;
};

static const char *const stat_names[RASTRO_STAT__COUNT] = {
	[RASTRO_LOSS_RINGBUF_FULL] = "ringbuf_full",
	[RASTRO_LOSS_CONN_MAP_FULL] = "conn_map_full",
	[RASTRO_LOSS_CONTROL_RINGBUF] = "control_ringbuf_full",
	[RASTRO_LOSS_TRACED_MAP_FULL] = "traced_map_full",
	[RASTRO_STAT_TRUNCATED] = "truncated",
	[RASTRO_STAT_DATA_EVENTS] = "data_events",
	[RASTRO_STAT_DATA_RECORDS] = "data_records",
	[RASTRO_STAT_DATA_MERGED] = "data_merged",
	[RASTRO_STAT_BATCH_TAKEN_OVER] = "batch_taken_over",
	[RASTRO_STAT_SENT_AHEAD] = "sent_ahead",
	[RASTRO_STAT_CONN_SETTLED] = "conn_settled",
	[RASTRO_STAT_MUTED] = "muted",
};

/* Connections muted at once (the mutes map): a quarter of max_connections. */
static uint32_t mute_entries(const struct rastro_config *cfg)
{
	return cfg->max_connections / 4;
}

/* The buckets of a hash map of n entries: n rounded up to a power of two. */
static uint64_t hash_buckets(uint64_t n)
{
	uint64_t b = 1;
	while (b < n)
		b <<= 1;
	return b;
}

const char *capture__stat_name(int idx)
{
	return idx >= 0 && idx < RASTRO_STAT__COUNT ? stat_names[idx] : "?";
}

/* The verifier's reason for the last failed load, collected from libbpf's
 * log while loading so the error can name the program. */
static struct {
	char prog[64];
	char reason[256];
} load_failure;

static int load_log(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	char text[8192];
	va_list copy;
	va_copy(copy, ap);
	vsnprintf(text, sizeof(text), fmt, copy);
	va_end(copy);
	(void)level;
	const char *p = strstr(text, "prog '");
	if (p && strstr(text, "failed to load")) {
		p += 6;
		size_t n = strcspn(p, "'");
		if (n >= sizeof(load_failure.prog))
			n = sizeof(load_failure.prog) - 1;
		memcpy(load_failure.prog, p, n);
		load_failure.prog[n] = '\0';
	}
	/* The verifier's verdict is the line before "processed N insns". */
	const char *end = strstr(text, "\nprocessed ");
	if (end) {
		const char *start = end;
		while (start > text && start[-1] != '\n')
			start--;
		size_t n = (size_t)(end - start);
		if (n >= sizeof(load_failure.reason))
			n = sizeof(load_failure.reason) - 1;
		memcpy(load_failure.reason, start, n);
		load_failure.reason[n] = '\0';
	}
	if (log__threshold <= LOG_DEBUG)
		log__write(LOG_DEBUG, "%s", text);
	return 0;
}

static int check_privileges(void)
{
	struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
	struct __user_cap_data_struct data[2] = {0};
	if (syscall(SYS_capget, &hdr, data))
		return 0; /* cannot tell: let the load report */
	uint64_t eff = ((uint64_t)data[1].effective << 32) | data[0].effective;
	bool has_sys_admin = eff & (1ull << CAP_SYS_ADMIN);
	bool has_bpf = has_sys_admin || (eff & (1ull << 39 /* CAP_BPF */));
	bool has_perfmon = has_sys_admin || (eff & (1ull << 38 /* CAP_PERFMON */));
	if (!has_bpf || !has_perfmon) {
		fprintf(stderr,
			"rastro: missing privileges: run as root, or grant CAP_BPF and CAP_PERFMON "
			"(plus CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH for discovery); this process "
			"has%s%s\n",
			has_bpf ? " CAP_BPF" : " no CAP_BPF", has_perfmon ? " CAP_PERFMON" : " no CAP_PERFMON");
		return -EPERM;
	}
	return 0;
}

/* Maps the ring as libbpf does: the consumer page read-write, the producer
 * page and the data read-only, the data twice in a row so that a record that
 * wraps around the end reads as one. */
static int ring_map(struct ring *r, int fd, uint64_t size)
{
	r->fd = fd;
	r->page = (size_t)sysconf(_SC_PAGESIZE);
	r->mask = size - 1;
	r->release_every = size / 4;
	void *c = mmap(NULL, r->page, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (c == MAP_FAILED)
		return -errno;
	void *p = mmap(NULL, r->page + 2 * size, PROT_READ, MAP_SHARED, fd, (off_t)r->page);
	if (p == MAP_FAILED) {
		int err = -errno;
		munmap(c, r->page);
		return err;
	}
	r->consumer_pos = c;
	r->producer_pos = p;
	r->data = (const uint8_t *)p + r->page;
	return 0;
}

static void ring_unmap(struct ring *r)
{
	if (r->consumer_pos)
		munmap(r->consumer_pos, r->page);
	if (r->producer_pos)
		munmap((void *)r->producer_pos, r->page + 2 * (r->mask + 1));
	r->consumer_pos = NULL;
	r->producer_pos = NULL;
}

/* Which hooks report data (ebpf.hooks): the socket tracepoints where the
 * kernel has them (6.3 and later), sys_exit otherwise. 1 socket, 0 syscall,
 * negative: an error was printed. */
static int choose_hooks(enum ebpf_hooks want)
{
	if (want == HOOKS_SYSCALL)
		return 0;
	bool have = libbpf_find_vmlinux_btf_id("sock_send_length", BPF_TRACE_RAW_TP) > 0 &&
		    libbpf_find_vmlinux_btf_id("sock_recv_length", BPF_TRACE_RAW_TP) > 0;
	if (want == HOOKS_SOCKET && !have) {
		fprintf(stderr, "rastro: ebpf.hooks is socket, but this kernel has no "
				"sock_send_length/sock_recv_length tracepoints (Linux 6.3 and later "
				"have them); use auto or syscall\n");
		return -ENOENT;
	}
	return have;
}

int capture__open(struct capture **out, const struct rastro_config *cfg, capture_event_fn fn,
		  void *ctx)
{
	struct capture *cap = NULL;
	int err;

	if ((err = check_privileges()))
		return err;
	if (access("/sys/kernel/btf/vmlinux", R_OK)) {
		fprintf(stderr,
			"rastro: this kernel exposes no BTF (/sys/kernel/btf/vmlinux is missing): "
			"rastro needs a kernel built with CONFIG_DEBUG_INFO_BTF=y\n");
		return -ENOENT;
	}
	cap = calloc(1, sizeof(*cap));
	if (!cap)
		return -ENOMEM;
	cap->fn = fn;
	cap->ctx = ctx;
	cap->ncpus = libbpf_num_possible_cpus();

	int socket_hooks = choose_hooks(cfg->ebpf_hooks);
	if (socket_hooks < 0) {
		err = socket_hooks;
		goto cleanup;
	}

	cap->skel = rastro_bpf__open();
	if (!cap->skel) {
		err = -errno;
		fprintf(stderr, "rastro: cannot open the BPF object: %s\n", strerror(-err));
		goto cleanup;
	}
	cap->skel->rodata->capture_bytes = cfg->capture_bytes;
	cap->skel->rodata->wakeup_bytes = cfg->wakeup_bytes;
	/* Test hook: exercises the report of a program the verifier refuses. */
	const char *reject = getenv("RASTRO_SELFTEST_REJECT");
	cap->skel->rodata->selftest_reject = reject && !strcmp(reject, "1");
	/* Test hook: every event that should wait for another CPU's held ones
	 * (1), or that finds its own CPU holding events (2), is sent ahead of
	 * them, as when a CPU is descheduled while it delivers them. */
	const char *ahead = getenv("RASTRO_SELFTEST_SEND_AHEAD");
	cap->skel->rodata->selftest_send_ahead =
		ahead && (!strcmp(ahead, "1") || !strcmp(ahead, "2")) ? (__u32)(ahead[0] - '0') : 0;
	cap->skel->rodata->socket_hooks = socket_hooks;
	cap->skel->rodata->nr_cpus = cap->ncpus;
	bpf_program__set_autoload(cap->skel->progs.rastro_sys_exit, !socket_hooks);
	bpf_program__set_autoload(cap->skel->progs.rastro_sock_send, socket_hooks);
	bpf_program__set_autoload(cap->skel->progs.rastro_sock_recv, socket_hooks);
	/* Only the socket hooks hold events back (rastro.bpf.c, hold_begin). */
	bpf_program__set_autoload(cap->skel->progs.rastro_flush, socket_hooks);
	bpf_program__set_autoload(cap->skel->progs.rastro_migrate, socket_hooks);
	bpf_map__set_max_entries(cap->skel->maps.events, cfg->ring_buffer_bytes);
	/* Every connection's entry starts in the hash map; with the socket
	 * hooks one that carries a second request moves to its socket's
	 * storage (conn_store, rastro.bpf.c), so there the map allocates its
	 * entries as they come (Linux 6.3 has the kernel's BPF allocator,
	 * about as fast) instead of holding max_connections from the start. */
	bpf_map__set_max_entries(cap->skel->maps.conns, cfg->max_connections);
	/* Its buckets are allocated whole (16 bytes each): a quarter of the
	 * connections muted at once is room enough. */
	bpf_map__set_max_entries(cap->skel->maps.mutes, mute_entries(cfg));
	if (socket_hooks)
		bpf_map__set_map_flags(cap->skel->maps.conns,
				       bpf_map__map_flags(cap->skel->maps.conns) | BPF_F_NO_PREALLOC);
	cap->skel->rodata->max_connections = cfg->max_connections;
	cap->socket_hooks = socket_hooks;
	bpf_map__set_max_entries(cap->skel->maps.traced, cfg->max_processes);

	memset(&load_failure, 0, sizeof(load_failure));
	libbpf_print_fn_t previous = libbpf_set_print(load_log);
	err = rastro_bpf__load(cap->skel);
	libbpf_set_print(previous);
	if (err) {
		if (load_failure.prog[0])
			fprintf(stderr,
				"rastro: the kernel refused BPF program %s (%s)%s\n",
				load_failure.prog, strerror(-err),
				log__threshold <= LOG_DEBUG ? "" : "; run with --log-level DEBUG for the verifier's log");
		else
			fprintf(stderr, "rastro: cannot load the BPF programs: %s\n", strerror(-err));
		if (load_failure.reason[0])
			log_debug("the verifier's reason for %s: %s", load_failure.prog,
				  load_failure.reason);
		goto cleanup;
	}

	/* BTF tracepoints attach through bpf_raw_tracepoint_open: no tracefs. */
	struct {
		struct bpf_program *prog;
		struct bpf_link **link;
	} progs[] = {
		{cap->skel->progs.rastro_sys_exit, &cap->skel->links.rastro_sys_exit},
		{cap->skel->progs.rastro_sock_send, &cap->skel->links.rastro_sock_send},
		{cap->skel->progs.rastro_sock_recv, &cap->skel->links.rastro_sock_recv},
		{cap->skel->progs.rastro_sock_state, &cap->skel->links.rastro_sock_state},
		{cap->skel->progs.rastro_exec, &cap->skel->links.rastro_exec},
		{cap->skel->progs.rastro_fork, &cap->skel->links.rastro_fork},
		{cap->skel->progs.rastro_exit, &cap->skel->links.rastro_exit},
		{cap->skel->progs.rastro_migrate, &cap->skel->links.rastro_migrate},
	};
	for (size_t i = 0; i < sizeof(progs) / sizeof(progs[0]); i++) {
		if (!bpf_program__autoload(progs[i].prog))
			continue;
		*progs[i].link = bpf_program__attach(progs[i].prog);
		if (!*progs[i].link) {
			err = -errno;
			fprintf(stderr, "rastro: cannot attach BPF program %s: %s\n",
				bpf_program__name(progs[i].prog), strerror(-err));
			goto cleanup;
		}
	}

	err = ring_map(&cap->ring, bpf_map__fd(cap->skel->maps.events),
		       bpf_map__max_entries(cap->skel->maps.events));
	if (err) {
		fprintf(stderr, "rastro: cannot map the ring buffer: %s\n", strerror(-err));
		goto cleanup;
	}
	/* The connections' hash map: its buckets, and its entries when
	 * preallocated (the fallback); the mutes map's buckets;
	 * capture__map_bytes adds the others. */
	uint64_t buckets = hash_buckets(cfg->max_connections) + hash_buckets(mute_entries(cfg));
	cap->map_bytes = (uint64_t)cfg->ring_buffer_bytes + buckets * 16 +
			 (socket_hooks ? 0 : (uint64_t)cfg->max_connections *
						     (sizeof(struct rastro_conn) + 8 + 64)) +
			 (uint64_t)cfg->max_processes * (sizeof(struct rastro_traced) + 4 + 64) +
			 (uint64_t)cap->ncpus * (8 + sizeof(struct rastro_data_event) + 2 * RASTRO_CAPTURE_MAX +
						 8 + sizeof(struct rastro_batch_event) + RASTRO_HOLD_BYTES +
						 sizeof(struct rastro_data_event) + 2 * RASTRO_CAPTURE_MAX) +
			 sizeof(cap->skel->bss->traced_bits);
	log_info("data hooks: %s", socket_hooks
		 ? "sock_send_length/sock_recv_length (socket I/O only)"
		 : "sys_exit (every syscall of every process runs a program; Linux 6.3 and "
		   "later have cheaper socket hooks)");
	*out = cap;
	return 0;

cleanup:
	capture__close(cap);
	return err < 0 ? err : -EINVAL;
}

void capture__close(struct capture *cap)
{
	if (!cap)
		return;
	ring_unmap(&cap->ring);
	rastro_bpf__destroy(cap->skel);
	free(cap);
}

int capture__fd(const struct capture *cap)
{
	return cap->ring.fd; /* readable when the kernel forces a wakeup and data waits */
}

uint64_t capture__consumed(const struct capture *cap)
{
	return __atomic_load_n(cap->ring.consumer_pos, __ATOMIC_ACQUIRE);
}

/* Record header of the BPF ring buffer (kernel's struct bpf_ringbuf_hdr). */
#define RING_HDR 8

/*
 * Delivers every record the kernel committed, in order. Unlike libbpf's
 * ring_buffer__consume, which publishes its position after every record, the
 * position is published once per drain (and every quarter ring during a long
 * one): the kernel reads it on every reservation, so each publication costs
 * the traced thread's CPU a cache miss on that line.
 */
int capture__drain(struct capture *cap)
{
	return capture__drain_hold(cap, 0, NULL, NULL, NULL);
}

int capture__drain_hold(struct capture *cap, int max, capture_hold_fn hold, void *ctx, bool *held)
{
	struct ring *r = &cap->ring;
	uint64_t cons = __atomic_load_n(r->consumer_pos, __ATOMIC_ACQUIRE);
	uint64_t published = cons;
	int n = 0;
	if (held)
		*held = false;
	for (;;) {
		uint64_t prod = __atomic_load_n(r->producer_pos, __ATOMIC_ACQUIRE);
		if (cons >= prod)
			break;
		while (cons < prod) {
			if (max > 0 && n >= max)
				goto done;
			if (hold && hold(ctx, prod - cons, r->mask + 1)) {
				if (held)
					*held = true;
				goto done;
			}
			const uint32_t *hdr = (const uint32_t *)(r->data + (cons & r->mask));
			uint32_t len = __atomic_load_n(hdr, __ATOMIC_ACQUIRE);
			if (len & BPF_RINGBUF_BUSY_BIT)
				goto done; /* still being written: the next drain takes it */
			uint32_t size = len & ~(BPF_RINGBUF_BUSY_BIT | BPF_RINGBUF_DISCARD_BIT);
			if (!(len & BPF_RINGBUF_DISCARD_BIT)) {
				cap->fn(cap->ctx, (const uint8_t *)hdr + RING_HDR, size);
				n++;
			}
			cons += (size + RING_HDR + 7) & ~7ull;
			if (cons - published >= r->release_every) {
				__atomic_store_n(r->consumer_pos, cons, __ATOMIC_RELEASE);
				published = cons;
			}
		}
	}
done:
	if (cons != published)
		__atomic_store_n(r->consumer_pos, cons, __ATOMIC_RELEASE);
	return n;
}

/* The kernel's prefilter bit of tgid (traced_bits in rastro.bpf.c), in the
 * mmap'ed .bss; set and cleared atomically, as the fork/exit hooks change
 * other bits of the same word. */
static void traced_bit(struct capture *cap, uint32_t tgid, bool on)
{
	__u64 *word = &cap->skel->bss->traced_bits[(tgid >> 6) & (RASTRO_TRACED_BITS_WORDS - 1)];
	__u64 bit = 1ull << (tgid & 63);
	if (on)
		__atomic_fetch_or(word, bit, __ATOMIC_SEQ_CST);
	else
		__atomic_fetch_and(word, ~bit, __ATOMIC_SEQ_CST);
}

int capture__trace(struct capture *cap, uint32_t tgid, uint32_t service_id)
{
	struct rastro_traced t = {.service_id = service_id};
	if (bpf_map__update_elem(cap->skel->maps.traced, &tgid, sizeof(tgid), &t, sizeof(t), BPF_ANY))
		return -errno;
	traced_bit(cap, tgid, true); /* after the entry exists */
	return 0;
}

void capture__server_port(struct capture *cap, uint16_t port)
{
	__atomic_fetch_or(&cap->skel->bss->server_ports[port >> 6], 1ull << (port & 63),
			  __ATOMIC_SEQ_CST);
}

int capture__mute(struct capture *cap, uint64_t conn_id)
{
	__u8 one = 1;
	if (bpf_map__update_elem(cap->skel->maps.mutes, &conn_id, sizeof(conn_id), &one,
				 sizeof(one), BPF_NOEXIST))
		return -errno;
	cap->mutes++;
	return 0;
}

void capture__mute_publish(struct capture *cap)
{
	__atomic_fetch_add(&cap->skel->bss->mute_gen, 1, __ATOMIC_SEQ_CST);
}

void capture__unmute(struct capture *cap, uint64_t conn_id)
{
	if (!bpf_map__delete_elem(cap->skel->maps.mutes, &conn_id, sizeof(conn_id), 0))
		cap->mutes--;
}

int capture__untrace(struct capture *cap, uint32_t tgid)
{
	traced_bit(cap, tgid, false); /* before the entry goes */
	if (bpf_map__delete_elem(cap->skel->maps.traced, &tgid, sizeof(tgid), 0) && errno != ENOENT)
		return -errno;
	return 0;
}

int capture__stats(struct capture *cap, uint64_t out[RASTRO_STAT__COUNT])
{
	uint64_t *percpu = calloc(cap->ncpus, sizeof(uint64_t));
	if (!percpu)
		return -ENOMEM;
	for (uint32_t i = 0; i < RASTRO_STAT__COUNT; i++) {
		out[i] = 0;
		if (bpf_map__lookup_elem(cap->skel->maps.stats, &i, sizeof(i), percpu,
					 sizeof(uint64_t) * cap->ncpus, 0))
			continue;
		for (int c = 0; c < cap->ncpus; c++)
			out[i] += percpu[c];
	}
	free(percpu);
	return 0;
}

uint64_t capture__skipped_runs(struct capture *cap)
{
	struct bpf_program *prog;
	uint64_t sum = 0;
	bpf_object__for_each_program(prog, cap->skel->obj)
	{
		struct bpf_prog_info info = {0};
		__u32 len = sizeof(info);
		int fd = bpf_program__fd(prog);
		if (fd >= 0 && !bpf_obj_get_info_by_fd(fd, &info, &len))
			sum += info.recursion_misses;
	}
	return sum;
}

/* Runs rastro_flush once: on CPU cpu (an interrupt there) or, with cpu < 0,
 * here for every CPU. */
static int run_flush(struct capture *cap, int cpu)
{
	__u64 all = cpu < 0;
	LIBBPF_OPTS(bpf_test_run_opts, opts, .ctx_in = &all, .ctx_size_in = sizeof(all));
	if (cpu >= 0) {
		opts.flags = BPF_F_TEST_RUN_ON_CPU;
		opts.cpu = cpu;
	}
	if (bpf_prog_test_run_opts(bpf_program__fd(cap->skel->progs.rastro_flush), &opts))
		return -errno;
	return 0;
}

int capture__flush(struct capture *cap)
{
	if (!bpf_program__autoload(cap->skel->progs.rastro_flush))
		return 0; /* nothing is held back (sys_exit hooks) */
	int n = cap->ncpus < RASTRO_HOLD_CPUS ? cap->ncpus : RASTRO_HOLD_CPUS;
	for (int cpu = 0; cpu < n; cpu++) {
		if (!__atomic_load_n(&cap->skel->bss->batch_gen[cpu].held, __ATOMIC_RELAXED))
			continue;
		int err = run_flush(cap, cpu);
		if (err == -ENXIO) { /* offline: what it held is delivered from here */
			log_debug("CPU %d is offline: the events it held are delivered from another",
				  cpu);
			err = run_flush(cap, -1);
		}
		if (err)
			return err;
	}
	return 0;
}

int capture__check_map_access(struct capture *cap)
{
	uint64_t *percpu = calloc(cap->ncpus, sizeof(uint64_t));
	uint32_t key = 0;
	int err = 0;
	if (!percpu)
		return -ENOMEM;
	if (bpf_map__lookup_elem(cap->skel->maps.stats, &key, sizeof(key), percpu,
				 sizeof(uint64_t) * cap->ncpus, 0))
		err = -errno;
	free(percpu);
	if (!err && bpf_program__autoload(cap->skel->progs.rastro_flush))
		err = run_flush(cap, -1);
	return err;
}

uint64_t capture__connections(const struct capture *cap)
{
	int64_t n = __atomic_load_n(&cap->skel->bss->conn_count, __ATOMIC_RELAXED);
	return n > 0 ? (uint64_t)n : 0;
}

/* A connection's entry beyond its value, in either map: a socket's storage
 * element (list links, the map) and, for the socket's first, the storage
 * header, about this much on Linux 6.x; a hash map entry (its links, the
 * key, the allocator's size class) less. */
#define CONN_ENTRY_OVERHEAD 224
/* An entry of the mutes map (not preallocated): element header, key, value. */
#define MUTE_ENTRY_BYTES 64

uint64_t capture__map_bytes(const struct capture *cap)
{
	uint64_t fixed = cap->map_bytes + cap->mutes * MUTE_ENTRY_BYTES;
	if (!cap->socket_hooks)
		return fixed;
	return fixed +
	       capture__connections(cap) * (sizeof(struct rastro_conn) + CONN_ENTRY_OVERHEAD);
}
