/*
 * Open-loop HTTP/1.1 load generator for the benchmarks: sends GET requests at
 * a fixed rate over keep-alive connections (or as fast as possible with
 * --rate 0), counts complete responses and measures latency from the
 * scheduled send time (no coordinated omission). Prints one JSON line.
 * --close: every request on a connection of its own ("Connection: close",
 * as old clients and CGI-era services do); the server closes it after its
 * response, the load generator closes its side then; --connections bounds
 * how many are open at once.
 *
 *   loadgen --port P [--host 127.0.0.1] [--path /] [--rate R] [--requests N]
 *           [--connections C] [--seconds S] [--close]
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONN 1024
#define MAX_INFLIGHT 64

struct conn {
	int fd;
	char buf[65536];
	size_t len;
	uint64_t sent_at[MAX_INFLIGHT]; /* scheduled send times of requests awaiting answers */
	int head, count;
};

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static int connect_to(const char *host, int port)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	inet_pton(AF_INET, host, &sa.sin_addr);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
		perror("connect");
		exit(1);
	}
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	fcntl(fd, F_SETFL, O_NONBLOCK);
	return fd;
}

/* Consumes complete responses at the start of c->buf; returns how many. */
static int take_responses(struct conn *c, uint64_t now, uint64_t *lat, uint64_t *nlat,
			  uint64_t cap)
{
	int done = 0;
	for (;;) {
		char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
		if (!end)
			break;
		size_t head = (size_t)(end - c->buf) + 4, body = 0;
		char *cl = memmem(c->buf, head, "Content-Length:", 15);
		if (!cl)
			cl = memmem(c->buf, head, "content-length:", 15);
		if (cl)
			body = strtoul(cl + 15, NULL, 10);
		if (c->len < head + body)
			break;
		memmove(c->buf, c->buf + head + body, c->len - head - body);
		c->len -= head + body;
		if (c->count) {
			if (*nlat < cap)
				lat[(*nlat)++] = now - c->sent_at[c->head];
			c->head = (c->head + 1) % MAX_INFLIGHT;
			c->count--;
		}
		done++;
	}
	return done;
}

int main(int argc, char **argv)
{
	const char *host = "127.0.0.1", *path = "/";
	int port = 0, nconn = 8;
	double rate = 0, seconds = 0;
	long long total = 0;
	bool close_each = false;
	static const struct option opts[] = {
		{"host", 1, 0, 'h'}, {"port", 1, 0, 'p'},     {"path", 1, 0, 'P'},
		{"rate", 1, 0, 'r'}, {"requests", 1, 0, 'n'}, {"connections", 1, 0, 'c'},
		{"seconds", 1, 0, 's'}, {"close", 0, 0, 'x'}, {0, 0, 0, 0},
	};
	int o;
	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (o) {
		case 'h': host = optarg; break;
		case 'p': port = atoi(optarg); break;
		case 'P': path = optarg; break;
		case 'r': rate = atof(optarg); break;
		case 'n': total = atoll(optarg); break;
		case 'c': nconn = atoi(optarg); break;
		case 's': seconds = atof(optarg); break;
		case 'x': close_each = true; break;
		default: return 2;
		}
	}
	if (!port || nconn < 1 || nconn > MAX_CONN || (!total && !seconds)) {
		fprintf(stderr, "usage: loadgen --port P [--rate R] (--requests N | --seconds S) "
				"[--connections C] [--path /] [--host 127.0.0.1] [--close]\n");
		return 2;
	}
	char req[512];
	int reqlen = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: %s\r\n%s\r\n", path, host,
			      close_each ? "Connection: close\r\n" : "");

	static struct conn conns[MAX_CONN];
	int ep = epoll_create1(0);
	for (int i = 0; i < nconn; i++) {
		conns[i].fd = close_each ? -1 : connect_to(host, port);
		struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
		if (!close_each)
			epoll_ctl(ep, EPOLL_CTL_ADD, conns[i].fd, &ev);
	}
	uint64_t cap = total ? (uint64_t)total : (uint64_t)(rate > 0 ? rate * seconds * 1.2 : 5e7);
	if (cap > 50000000)
		cap = 50000000;
	uint64_t *lat = malloc(cap * sizeof(uint64_t)), nlat = 0;
	uint64_t start = now_ns(), deadline = seconds ? start + (uint64_t)(seconds * 1e9) : UINT64_MAX;
	long long sent = 0, completed = 0, errors = 0;
	double interval = rate > 0 ? 1e9 / rate : 0;
	int rr = 0;
	uint64_t give_up = 0;

	for (;;) {
		uint64_t now = now_ns();
		bool more = (!total || sent < total) && now < deadline;
		/* Send what the schedule says is due (open loop), or keep every
		 * connection busy (closed loop, rate 0). */
		while (more) {
			uint64_t due = start + (uint64_t)(interval * (double)sent);
			if (interval && due > now)
				break;
			struct conn *c = NULL;
			for (int k = 0; k < nconn; k++) {
				struct conn *cand = &conns[(rr + k) % nconn];
				if (close_each ? cand->fd < 0
					       : cand->count < (interval ? MAX_INFLIGHT : 1)) {
					c = cand;
					rr = (rr + k + 1) % nconn;
					break;
				}
			}
			if (!c)
				break;
			if (close_each) {
				c->fd = connect_to(host, port);
				c->len = 0;
				struct epoll_event ev = {.events = EPOLLIN,
							 .data.u32 = (uint32_t)(c - conns)};
				epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
			}
			if (write(c->fd, req, (size_t)reqlen) != reqlen) {
				errors++;
				break;
			}
			c->sent_at[(c->head + c->count) % MAX_INFLIGHT] = interval ? due : now;
			c->count++;
			sent++;
			more = (!total || sent < total) && now < deadline;
		}
		int inflight = 0;
		for (int k = 0; k < nconn; k++)
			inflight += conns[k].count;
		if (!more && !inflight)
			break;
		/* Give up on answers 5 s after the last request went out. */
		if (!more && !give_up)
			give_up = now + 5000000000ull;
		if (give_up && now > give_up)
			break;
		int timeout = 1;
		struct epoll_event evs[64];
		int n = epoll_wait(ep, evs, 64, interval ? 0 : timeout);
		if (interval && n == 0) {
			/* Spin briefly: sub-millisecond sending precision. */
			struct timespec ts = {0, 20000};
			nanosleep(&ts, NULL);
		}
		now = now_ns();
		for (int i = 0; i < n; i++) {
			struct conn *c = &conns[evs[i].data.u32];
			ssize_t r = read(c->fd, c->buf + c->len, sizeof(c->buf) - c->len);
			if (r <= 0) {
				if (r < 0 && errno == EAGAIN)
					continue;
				if (close_each) { /* the server's close after its response */
					if (c->count)
						errors++;
					close(c->fd);
					c->fd = -1;
					c->count = 0;
					continue;
				}
				errors++;
				close(c->fd);
				epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
				c->fd = connect_to(host, port);
				c->len = 0;
				c->count = 0;
				struct epoll_event ev = {.events = EPOLLIN, .data.u32 = evs[i].data.u32};
				epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
				continue;
			}
			c->len += (size_t)r;
			completed += take_responses(c, now, lat, &nlat, cap);
		}
	}
	double elapsed = (double)(now_ns() - start) / 1e9;
	qsort(lat, nlat, sizeof(uint64_t), cmp_u64);
	double p50 = nlat ? (double)lat[nlat / 2] / 1e6 : 0;
	double p99 = nlat ? (double)lat[(nlat * 99) / 100] / 1e6 : 0;
	printf("{\"sent\":%lld,\"completed\":%lld,\"errors\":%lld,\"seconds\":%.3f,"
	       "\"rate\":%.1f,\"p50_ms\":%.3f,\"p99_ms\":%.3f}\n",
	       sent, completed, errors, elapsed, (double)completed / elapsed, p50, p99);
	return 0;
}
