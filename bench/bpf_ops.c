/*
 * What one operation of rastro's data programs costs on this machine (in a
 * loop, hot caches: a lower bound): loads bench/bpf/ops.bpf.c, sends on a
 * loopback TCP connection of its own, and prints each operation's cost in
 * ns, net of the loop's own. The ring buffer's records are consumed after
 * every send (a full ring would time the failure path: a round with a failed
 * operation is reported as void). docs/performance.md quotes a run.
 *
 *   bpf_ops OBJECT [ROUNDS]
 */
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static const char *const names[] = {
	"(the loop alone)",
	"hash map lookup, 8-byte key (a connection, fallback)",
	"bpf_sk_storage_get (a connection, socket hooks)",
	"bpf_ktime_get_ns",
	"bpf_probe_read_user, 16 bytes",
	"bpf_probe_read_user, 256 bytes",
	"bpf_get_current_task_btf + bpf_task_pt_regs",
	"bpf_get_current_pid_tgid",
	"bpf_ringbuf_output, 2 KiB",
	"bpf_ringbuf_reserve + discard, 64 bytes",
	"compare-and-swap + store (hold_lock, uncontended)",
	"per-CPU array lookup",
	"two tcp_sock loads (sequence numbers)",
	"bpf_get_current_task_btf + task->stack + a learned offset",
	"bpf_probe_read_user, 16 bytes, into a per-CPU array",
	"bpf_probe_read_user, 16 bytes, into a 4 KiB array (kmalloc)",
	"bpf_probe_read_user, 16 bytes, into a 64 KiB array (vmalloc)",
	"ringbuf reserve + bpf_probe_read_user 16 bytes + discard",
	"bpf_sk_storage_get with create + bpf_sk_storage_delete",
	"hash map update + delete, 8-byte key (prealloc)",
	"hash map update + delete, 8-byte key (BPF_F_NO_PREALLOC)",
};
#define NOPS (sizeof(names) / sizeof(names[0]))

struct globals { /* g in ops.bpf.c */
	__u32 tgid, op, iters, lock;
	__u64 total_ns, total_ops, sink;
	__u64 regs_seen[2];
	__u64 failed;
};

static int drop(void *ctx, void *data, size_t size)
{
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 2 || argc > 3) {
		fprintf(stderr, "usage: bpf_ops OBJECT [ROUNDS]\n");
		return 2;
	}
	int rounds = argc == 3 ? atoi(argv[2]) : 3;
	struct bpf_object *obj = bpf_object__open_file(argv[1], NULL);
	if (!obj || bpf_object__load(obj)) {
		fprintf(stderr, "bpf_ops: cannot load %s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	struct bpf_program *prog = bpf_object__find_program_by_name(obj, "ops_send");
	if (!prog || !bpf_program__attach(prog)) {
		fprintf(stderr, "bpf_ops: cannot attach: %s\n", strerror(errno));
		return 1;
	}
	struct bpf_map *bss = NULL, *m;
	bpf_object__for_each_map(m, obj) if (strstr(bpf_map__name(m), ".bss")) bss = m;
	if (!bss) {
		fprintf(stderr, "bpf_ops: no .bss map\n");
		return 1;
	}
	int fd = bpf_map__fd(bss);
	__u32 zero = 0;
	struct bpf_map *ring = bpf_object__find_map_by_name(obj, "ring");
	struct ring_buffer *rb = ring ? ring_buffer__new(bpf_map__fd(ring), drop, NULL, NULL) : NULL;
	if (!rb) {
		fprintf(stderr, "bpf_ops: no ring buffer: %s\n", strerror(errno));
		return 1;
	}

	int ls = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t alen = sizeof(a);
	if (bind(ls, (struct sockaddr *)&a, alen) || listen(ls, 1) ||
	    getsockname(ls, (struct sockaddr *)&a, &alen)) {
		perror("bpf_ops: listen");
		return 1;
	}
	int cs = socket(AF_INET, SOCK_STREAM, 0);
	if (connect(cs, (struct sockaddr *)&a, alen)) {
		perror("bpf_ops: connect");
		return 1;
	}
	int ss = accept(ls, NULL, NULL);
	char buf[4096];
	memset(buf, 'x', sizeof(buf));

	double per[NOPS][16];
	for (int r = 0; r < rounds && r < 16; r++) {
		for (unsigned op = 0; op < NOPS; op++) {
			struct globals g = {.tgid = (__u32)getpid(), .op = op, .iters = 2000};
			if (bpf_map_update_elem(fd, &zero, &g, 0)) {
				perror("bpf_ops: .bss");
				return 1;
			}
			for (int i = 0; i < 50; i++) {
				if (send(cs, buf, 300, 0) != 300 || recv(ss, buf, sizeof(buf), 0) <= 0) {
					perror("bpf_ops: send");
					return 1;
				}
				ring_buffer__consume(rb);
			}
			if (bpf_map_lookup_elem(fd, &zero, &g)) {
				perror("bpf_ops: .bss");
				return 1;
			}
			per[op][r] = g.total_ops && !g.failed ? (double)g.total_ns / (double)g.total_ops
							      : -1;
		}
	}
	printf("%-56s %s\n", "operation", "ns each, net of the loop (per round)");
	for (unsigned op = 0; op < NOPS; op++) {
		printf("%-56s", names[op]);
		for (int r = 0; r < rounds && r < 16; r++) {
			if (per[op][r] < 0 || per[0][r] < 0)
				printf("   void");
			else
				printf(" %6.1f", op ? per[op][r] - per[0][r] : per[0][r]);
		}
		printf("\n");
	}
	ring_buffer__free(rb);
	bpf_object__close(obj);
	return 0;
}
