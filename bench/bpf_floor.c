/*
 * Loads and attaches bench/bpf/noop.bpf.c (programs that return at once, on
 * sock_send_length and sock_recv_length), prints "ready" and waits for
 * SIGTERM. With kernel.bpf_stats_enabled=1, the run_time_ns that the kernel
 * reports for them per run is what bpf_stats itself adds to every program
 * run (its clock reads): the floor under rastro's in-kernel figures.
 *
 *   bpf_floor OBJECT
 */
#include <bpf/libbpf.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: bpf_floor OBJECT\n");
		return 2;
	}
	struct bpf_object *obj = bpf_object__open_file(argv[1], NULL);
	if (!obj || bpf_object__load(obj)) {
		fprintf(stderr, "bpf_floor: cannot load %s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	struct bpf_program *prog;
	bpf_object__for_each_program(prog, obj)
	{
		if (!bpf_program__attach(prog)) {
			fprintf(stderr, "bpf_floor: cannot attach %s: %s\n", bpf_program__name(prog),
				strerror(errno));
			return 1;
		}
	}
	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);
	printf("ready\n");
	fflush(stdout);
	while (!stop)
		pause();
	bpf_object__close(obj);
	return 0;
}
