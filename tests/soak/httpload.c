/*
 * HTTP/1.1 load for the soak test: GET requests at a fixed rate over C
 * keep-alive connections, at most one request in flight per connection (no
 * pipelining, so that every request's head reaches the server in a read of its
 * own), every request counted: sent, answered 200, answered otherwise, and
 * "late" (sent more than 10 ms after its scheduled time because every
 * connection was busy). When the time is up it waits for the answers of the
 * requests in flight (10 s at most). Prints one JSON line.
 *
 *   httpload PORT PATH RATE CONNECTIONS SECONDS
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
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

struct conn {
	int fd;
	bool busy;
	size_t len;
	char buf[16384];
};

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int connect_to(int port)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	int one = 1;
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
		perror("httpload: connect");
		exit(1);
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

/* Length of the complete response at the start of buf, or 0 when more is
 * needed; -1 when it cannot be framed (no Content-Length). */
static long response_length(const char *buf, size_t len, int *status)
{
	const char *end = memmem(buf, len, "\r\n\r\n", 4);
	if (!end)
		return 0;
	size_t head = (size_t)(end - buf) + 4;
	*status = len > 12 ? atoi(buf + 9) : 0;
	const char *cl = memmem(buf, head, "Content-Length:", 15);
	if (!cl)
		cl = memmem(buf, head, "content-length:", 15);
	if (!cl)
		return -1;
	long body = strtol(cl + 15, NULL, 10);
	return head + (size_t)body <= len ? (long)(head + (size_t)body) : 0;
}

int main(int argc, char **argv)
{
	if (argc != 6) {
		fprintf(stderr, "usage: httpload PORT PATH RATE CONNECTIONS SECONDS\n");
		return 2;
	}
	int port = atoi(argv[1]), nconn = atoi(argv[4]);
	double rate = atof(argv[3]), seconds = atof(argv[5]);
	char req[512];
	int reqlen = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: soak\r\n\r\n", argv[2]);
	struct conn *conns = calloc((size_t)nconn, sizeof(*conns));
	int ep = epoll_create1(0);
	for (int i = 0; i < nconn; i++) {
		conns[i].fd = connect_to(port);
		struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
		epoll_ctl(ep, EPOLL_CTL_ADD, conns[i].fd, &ev);
	}
	long long total = (long long)(rate * seconds), sent = 0, ok = 0, other = 0, errors = 0,
		  late = 0;
	uint64_t start = now_ns(), step = (uint64_t)(1e9 / rate);
	uint64_t give_up = start + (uint64_t)(seconds * 1e9) + 10000000000ull;
	int inflight = 0, next = 0;
	while ((sent < total || inflight) && now_ns() < give_up) {
		uint64_t now = now_ns();
		while (sent < total && start + (uint64_t)sent * step <= now) {
			struct conn *c = NULL;
			for (int k = 0; k < nconn && !c; k++) {
				struct conn *cand = &conns[(next + k) % nconn];
				if (!cand->busy && cand->fd >= 0) {
					c = cand;
					next = (next + k + 1) % nconn;
				}
			}
			if (!c)
				break; /* every connection busy: the request waits */
			if (now - (start + (uint64_t)sent * step) > 10000000)
				late++;
			if (write(c->fd, req, (size_t)reqlen) != reqlen) {
				errors++;
				close(c->fd);
				c->fd = -1;
				continue;
			}
			c->busy = true;
			inflight++;
			sent++;
		}
		int timeout_ms = 1;
		struct epoll_event evs[64];
		int n = epoll_wait(ep, evs, 64, timeout_ms);
		for (int i = 0; i < n; i++) {
			struct conn *c = &conns[evs[i].data.u32];
			ssize_t r = read(c->fd, c->buf + c->len, sizeof(c->buf) - c->len);
			if (r <= 0) {
				if (r < 0 && errno == EAGAIN)
					continue;
				errors += c->busy;
				inflight -= c->busy;
				c->busy = false;
				epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
				close(c->fd);
				c->fd = -1;
				continue;
			}
			c->len += (size_t)r;
			int status = 0;
			long used = response_length(c->buf, c->len, &status);
			if (used < 0 || (used == 0 && c->len == sizeof(c->buf))) {
				errors++;
				used = (long)c->len;
			}
			if (used > 0) {
				if (status == 200)
					ok++;
				else
					other++;
				memmove(c->buf, c->buf + used, c->len - (size_t)used);
				c->len -= (size_t)used;
				c->busy = false;
				inflight--;
			}
		}
	}
	double elapsed = (double)(now_ns() - start) / 1e9;
	printf("{\"sent\": %lld, \"completed\": %lld, \"non_200\": %lld, \"errors\": %lld, "
	       "\"unanswered\": %d, \"late\": %lld, \"seconds\": %.3f}\n",
	       sent, ok + other, other, errors, inflight, late, elapsed);
	return 0;
}
