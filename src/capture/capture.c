#include "capture/capture.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <stdbool.h>
#include <linux/capability.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "log.h"
#include "rastro.skel.h"

struct capture {
	struct rastro_bpf *skel;
	struct ring_buffer *rb;
	capture_event_fn fn;
	void *ctx;
	int ncpus;
	uint64_t map_bytes;
};

static const char *const stat_names[RASTRO_STAT__COUNT] = {
	[RASTRO_LOSS_RINGBUF_FULL] = "ringbuf_full",
	[RASTRO_LOSS_CONN_MAP_FULL] = "conn_map_full",
	[RASTRO_LOSS_CONTROL_RINGBUF] = "control_ringbuf_full",
	[RASTRO_LOSS_TRACED_MAP_FULL] = "traced_map_full",
	[RASTRO_STAT_TRUNCATED] = "truncated",
	[RASTRO_STAT_DATA_EVENTS] = "data_events",
};

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

static int on_event(void *ctx, void *data, size_t size)
{
	struct capture *cap = ctx;
	cap->fn(cap->ctx, data, size);
	return 0;
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
	bpf_map__set_max_entries(cap->skel->maps.events, cfg->ring_buffer_bytes);
	bpf_map__set_max_entries(cap->skel->maps.conns, cfg->max_connections);
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
		{cap->skel->progs.rastro_sock_state, &cap->skel->links.rastro_sock_state},
		{cap->skel->progs.rastro_exec, &cap->skel->links.rastro_exec},
		{cap->skel->progs.rastro_fork, &cap->skel->links.rastro_fork},
		{cap->skel->progs.rastro_exit, &cap->skel->links.rastro_exit},
	};
	for (size_t i = 0; i < sizeof(progs) / sizeof(progs[0]); i++) {
		*progs[i].link = bpf_program__attach(progs[i].prog);
		if (!*progs[i].link) {
			err = -errno;
			fprintf(stderr, "rastro: cannot attach BPF program %s: %s\n",
				bpf_program__name(progs[i].prog), strerror(-err));
			goto cleanup;
		}
	}

	cap->rb = ring_buffer__new(bpf_map__fd(cap->skel->maps.events), on_event, cap, NULL);
	if (!cap->rb) {
		err = -errno;
		fprintf(stderr, "rastro: cannot map the ring buffer: %s\n", strerror(-err));
		goto cleanup;
	}
	cap->map_bytes = (uint64_t)cfg->ring_buffer_bytes +
			 (uint64_t)cfg->max_connections * (sizeof(struct rastro_conn) + 8 + 64) +
			 (uint64_t)cfg->max_processes * (sizeof(struct rastro_traced) + 4 + 64) +
			 (uint64_t)cap->ncpus * (sizeof(struct rastro_data_event) + 2 * RASTRO_CAPTURE_MAX);
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
	ring_buffer__free(cap->rb);
	rastro_bpf__destroy(cap->skel);
	free(cap);
}

int capture__fd(const struct capture *cap)
{
	return ring_buffer__epoll_fd(cap->rb);
}

int capture__drain(struct capture *cap)
{
	return ring_buffer__consume(cap->rb);
}

int capture__trace(struct capture *cap, uint32_t tgid, uint32_t service_id)
{
	struct rastro_traced t = {.service_id = service_id};
	if (bpf_map__update_elem(cap->skel->maps.traced, &tgid, sizeof(tgid), &t, sizeof(t), BPF_ANY))
		return -errno;
	return 0;
}

int capture__untrace(struct capture *cap, uint32_t tgid)
{
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

uint64_t capture__map_bytes(const struct capture *cap)
{
	return cap->map_bytes;
}
