/*
 * What rastro's socket hooks add to the socket I/O of a process they do not
 * trace, measured inside one process with the programs attached and
 * detached in turn, a short block at a time: the host's load, which moves a
 * syscall's cost by more than the hooks add when runs with and without
 * rastro are seconds apart, is then about the same in both halves of a pair.
 *
 *   untraced [--blocks N] [--rounds M] [--noop OBJECT] [--unix]
 *
 * Loads rastro's own programs (its BPF skeleton, set up as the agent sets it
 * up for the socket hooks) and attaches the two data programs,
 * rastro_sock_send and rastro_sock_recv; no process is traced, so every run
 * stops at the traced-process test, as for any process the agent does not
 * trace. With --noop, the programs of OBJECT (bench/bpf/noop.bpf.c: return
 * at once) instead: what the kernel's dispatch of a program costs by itself.
 *
 * A block is M rounds of write(1 byte) + read(1 byte) over a loopback TCP
 * connection (with --unix, a unix stream socket pair: the programs run and
 * return at their socket test), 2M syscalls, each running one program when
 * attached, timed with the thread's CPU clock. Blocks go in pairs, detached
 * and attached, in alternating order (ABBA...), after one warm-up pair.
 * Prints one JSON line: the medians of the blocks' ns per syscall without
 * and with, and of the pairs' differences, with their quartiles.
 */
#include <bpf/libbpf.h>
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "loopback.h"
#include "rastro.skel.h"

/* ns per syscall of one block, or a negative number on an I/O error. */
static double block(const int fds[2], long rounds)
{
	char c = 'x';
	uint64_t t0 = cpu_clock_ns(CLOCK_THREAD_CPUTIME_ID);
	for (long i = 0; i < rounds; i++) {
		if (write(fds[0], &c, 1) != 1 || read(fds[1], &c, 1) != 1)
			return -1;
	}
	return (double)(cpu_clock_ns(CLOCK_THREAD_CPUTIME_ID) - t0) / (2.0 * (double)rounds);
}

struct hooks {
	struct bpf_program *prog[2];
	struct bpf_link *link[2];
};

static int attach(struct hooks *h)
{
	for (int i = 0; i < 2; i++) {
		h->link[i] = bpf_program__attach(h->prog[i]);
		if (!h->link[i]) {
			fprintf(stderr, "untraced: cannot attach %s: %s\n",
				bpf_program__name(h->prog[i]), strerror(errno));
			return -1;
		}
	}
	return 0;
}

static void detach(struct hooks *h)
{
	for (int i = 0; i < 2; i++) {
		bpf_link__destroy(h->link[i]);
		h->link[i] = NULL;
	}
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

/* The q-quantile of v[0, n) (sorted in place), by linear interpolation. */
static double quantile(double *v, int n, double q)
{
	qsort(v, (size_t)n, sizeof(*v), cmp_double);
	double pos = q * (n - 1);
	int lo = (int)pos;
	if (lo + 1 >= n)
		return v[n - 1];
	return v[lo] + (pos - lo) * (v[lo + 1] - v[lo]);
}

static void usage(void)
{
	fprintf(stderr, "usage: untraced [--blocks N] [--rounds M] [--noop OBJECT] [--unix]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	int blocks = 100;
	long rounds = 5000;
	const char *noop = NULL;
	bool unix_pair = false;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--blocks") && i + 1 < argc)
			blocks = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--rounds") && i + 1 < argc)
			rounds = atol(argv[++i]);
		else if (!strcmp(argv[i], "--noop") && i + 1 < argc)
			noop = argv[++i];
		else if (!strcmp(argv[i], "--unix"))
			unix_pair = true;
		else
			usage();
	}
	if (blocks < 2 || blocks % 2 || rounds < 1) {
		fprintf(stderr, "untraced: --blocks must be even and at least 2, --rounds at least 1\n");
		return 2;
	}

	struct hooks h = {0};
	struct rastro_bpf *skel = NULL;
	struct bpf_object *obj = NULL;
	if (noop) {
		obj = bpf_object__open_file(noop, NULL);
		if (!obj || bpf_object__load(obj)) {
			fprintf(stderr, "untraced: cannot load %s: %s\n", noop, strerror(errno));
			return 1;
		}
		h.prog[0] = bpf_object__find_program_by_name(obj, "noop_send");
		h.prog[1] = bpf_object__find_program_by_name(obj, "noop_recv");
	} else {
		skel = rastro_bpf__open();
		if (!skel) {
			fprintf(stderr, "untraced: cannot open rastro's programs: %s\n", strerror(errno));
			return 1;
		}
		skel->rodata->socket_hooks = 1;
		skel->rodata->nr_cpus = (uint32_t)libbpf_num_possible_cpus();
		struct bpf_program *p;
		bpf_object__for_each_program(p, skel->obj)
			bpf_program__set_autoload(p, p == skel->progs.rastro_sock_send ||
							     p == skel->progs.rastro_sock_recv);
		bpf_map__set_map_flags(skel->maps.conns,
				       bpf_map__map_flags(skel->maps.conns) | BPF_F_NO_PREALLOC);
		if (rastro_bpf__load(skel)) {
			fprintf(stderr, "untraced: cannot load rastro's programs: %s\n", strerror(errno));
			return 1;
		}
		h.prog[0] = skel->progs.rastro_sock_send;
		h.prog[1] = skel->progs.rastro_sock_recv;
	}
	if (!h.prog[0] || !h.prog[1]) {
		fprintf(stderr, "untraced: %s has no send and receive programs\n", noop);
		return 1;
	}

	int fds[2];
	if (unix_pair ? socketpair(AF_UNIX, SOCK_STREAM, 0, fds) : tcp_pair(fds)) {
		fprintf(stderr, "untraced: %s socket pair: %s\n", unix_pair ? "unix" : "loopback TCP",
			strerror(errno));
		return 1;
	}
	double *without = calloc((size_t)blocks / 2, sizeof(double));
	double *with = calloc((size_t)blocks / 2, sizeof(double));
	double *added = calloc((size_t)blocks / 2, sizeof(double));
	if (!without || !with || !added)
		return 1;
	/* Pair -1 warms up; pair k runs attached second when k is even. */
	for (int k = -1; k < blocks / 2; k++) {
		double v[2]; /* [0] without, [1] with */
		for (int j = 0; j < 2; j++) {
			int on = (k % 2 == 0) ? j : !j;
			if (on && attach(&h))
				return 1;
			v[on] = block(fds, rounds);
			if (on)
				detach(&h);
			if (v[on] < 0) {
				fprintf(stderr, "untraced: loopback I/O failed: %s\n", strerror(errno));
				return 1;
			}
		}
		if (k >= 0) {
			without[k] = v[0];
			with[k] = v[1];
			added[k] = v[1] - v[0];
		}
	}
	int n = blocks / 2;
	double a_med = quantile(added, n, 0.5), a_q1 = quantile(added, n, 0.25),
	       a_q3 = quantile(added, n, 0.75);
	printf("{\"programs\": \"%s\", \"socket\": \"%s\", \"pairs\": %d, \"syscalls_per_block\": %ld, "
	       "\"ns_without\": %.2f, \"ns_with\": %.2f, \"ns_added\": %.2f, "
	       "\"ns_added_q1\": %.2f, \"ns_added_q3\": %.2f}\n",
	       noop ? "noop" : "rastro", unix_pair ? "unix" : "tcp", n, 2 * rounds,
	       quantile(without, n, 0.5), quantile(with, n, 0.5), a_med, a_q1, a_q3);
	free(without);
	free(with);
	free(added);
	rastro_bpf__destroy(skel);
	bpf_object__close(obj);
	return 0;
}
