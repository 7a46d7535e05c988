/*
 * Cost of read()/write() syscalls, for the benchmark's "untraced process"
 * row and for measuring the kernel program's per-event cost.
 *
 *   syscalls [rounds]                 write(1 byte) + read(1 byte) on a pipe
 *   syscalls --tcp [rounds] [bytes]   write + read of `bytes` over a loopback
 *                                     TCP connection (a data event each when
 *                                     the process is traced)
 *   syscalls --block [rounds]         two processes on one CPU pass a byte
 *                                     back and forth over two pipes: each
 *                                     read blocks, so a round is 4 syscalls
 *                                     and 2 context switches
 *
 * For a process rastro does not trace, its socket hooks run on each TCP
 * send and receive and must stop at the traced-process test; pipe I/O runs
 * no program (with the sys_exit fallback, every syscall runs one).
 * Prints one JSON line with the CPU time (CLOCK_PROCESS_CPUTIME_ID; with
 * --block, both processes' rusage) per syscall. With SYSCALLS_WAIT=1 in the environment it reads one byte from
 * stdin before the loop (after connecting): the bench starts it, waits for
 * rastro to trace it, then lets it run.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "loopback.h"

static uint64_t cpu_ns(void)
{
	return cpu_clock_ns(CLOCK_PROCESS_CPUTIME_ID);
}

static uint64_t rusage_ns(int who)
{
	struct rusage ru;
	getrusage(who, &ru);
	return ((uint64_t)ru.ru_utime.tv_sec + (uint64_t)ru.ru_stime.tv_sec) * 1000000000ull +
	       ((uint64_t)ru.ru_utime.tv_usec + (uint64_t)ru.ru_stime.tv_usec) * 1000ull;
}

/* --block: a parent and a child pinned to CPU 0 (a wakeup is then a context
 * switch there, not an interrupt to another CPU) take turns. */
static int block(long rounds)
{
	int a[2], b[2];
	char c = 'x';
	cpu_set_t one;
	CPU_ZERO(&one);
	CPU_SET(0, &one);
	if (pipe(a) || pipe(b) || sched_setaffinity(0, sizeof(one), &one))
		return 1;
	uint64_t t0 = rusage_ns(RUSAGE_SELF);
	pid_t child = fork();
	if (child < 0)
		return 1;
	if (!child) {
		for (long i = 0; i < rounds; i++)
			if (read(a[0], &c, 1) != 1 || write(b[1], &c, 1) != 1)
				_exit(1);
		_exit(0);
	}
	for (long i = 0; i < rounds; i++)
		if (write(a[1], &c, 1) != 1 || read(b[0], &c, 1) != 1)
			return 1;
	int status;
	if (waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status))
		return 1;
	uint64_t t = rusage_ns(RUSAGE_SELF) - t0 + rusage_ns(RUSAGE_CHILDREN);
	printf("{\"syscalls\":%ld,\"switches\":%ld,\"cpu_ns\":%llu,\"ns_per_syscall\":%.2f}\n",
	       4 * rounds, 2 * rounds, (unsigned long long)t, (double)t / (4.0 * (double)rounds));
	return 0;
}

int main(int argc, char **argv)
{
	if (argc > 1 && !strcmp(argv[1], "--block"))
		return block(argc > 2 ? atol(argv[2]) : 500000);
	int tcp = argc > 1 && !strcmp(argv[1], "--tcp");
	long rounds = argc > 1 + tcp ? atol(argv[1 + tcp]) : 2000000;
	size_t bytes = tcp && argc > 3 ? (size_t)atol(argv[3]) : 1;
	int p[2];
	char *buf = calloc(1, bytes);
	if (!buf || (tcp ? tcp_pair(p) : pipe(p)))
		return 1;
	if (!tcp) { /* pipe: p[0] reads, p[1] writes */
		int t = p[0];
		p[0] = p[1];
		p[1] = t;
	}
	const char *wait = getenv("SYSCALLS_WAIT");
	char go;
	if (wait && !strcmp(wait, "1") && read(0, &go, 1) != 1)
		return 1;
	uint64_t t0 = cpu_ns();
	for (long i = 0; i < rounds; i++) {
		if (write(p[0], buf, bytes) != (ssize_t)bytes)
			return 1;
		for (size_t got = 0; got < bytes;) {
			ssize_t r = read(p[1], buf + got, bytes - got);
			if (r <= 0)
				return 1;
			got += (size_t)r;
		}
	}
	uint64_t t = cpu_ns() - t0;
	printf("{\"syscalls\":%ld,\"cpu_ns\":%llu,\"ns_per_syscall\":%.2f}\n", 2 * rounds,
	       (unsigned long long)t, (double)t / (2.0 * (double)rounds));
	return 0;
}
