/*
 * OTLP/HTTP sink for the benchmarks: accepts POST /v1/traces and /v1/metrics
 * (protobuf, uncompressed), answers 200 with an empty body, and counts the
 * spans it received by walking the protobuf tags (ExportTraceServiceRequest
 * -> ResourceSpans -> ScopeSpans -> Span), which costs next to nothing next
 * to a real collector: the benchmark measures rastro, not the receiver.
 *
 *   otlp_sink PORT          GET /count -> {"spans":N,"requests":N,"bytes":N,"bad":N}
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_FDS 4096

struct client {
	char *buf;
	size_t len, cap;
};

static struct client clients[MAX_FDS];
static unsigned long long spans, requests, bytes, bad;

/* Reads a varint at *p (< end); 0 when malformed. */
static int varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
	uint64_t x = 0;
	for (int shift = 0; shift < 64 && *p < end; shift += 7) {
		uint8_t b = *(*p)++;
		x |= (uint64_t)(b & 0x7f) << shift;
		if (!(b & 0x80)) {
			*v = x;
			return 1;
		}
	}
	return 0;
}

/* Counts the occurrences of LEN field `want` of a message; with depth > 0,
 * descends into LEN field `path[0]` first. -1 when malformed. */
static long long count_field(const uint8_t *p, const uint8_t *end, const int *path, int depth)
{
	long long n = 0;
	while (p < end) {
		uint64_t tag, len;
		if (!varint(&p, end, &tag))
			return -1;
		switch (tag & 7) {
		case 0:
			if (!varint(&p, end, &len))
				return -1;
			break;
		case 1:
			p += 8;
			break;
		case 5:
			p += 4;
			break;
		case 2:
			if (!varint(&p, end, &len) || len > (uint64_t)(end - p))
				return -1;
			if ((int)(tag >> 3) == path[0]) {
				if (depth == 0) {
					n++;
				} else {
					long long k = count_field(p, p + len, path + 1, depth - 1);
					if (k < 0)
						return -1;
					n += k;
				}
			}
			p += len;
			break;
		default:
			return -1;
		}
	}
	return p == end ? n : -1;
}

static void reply(int fd, const char *status, const char *type, const char *body)
{
	char out[512];
	int n = snprintf(out, sizeof(out),
			 "HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n\r\n%s", status,
			 type, strlen(body), body);
	if (write(fd, out, (size_t)n) != n)
		bad++;
}

/* Handles every complete request at the start of c->buf. */
static int serve(int fd, struct client *c)
{
	for (;;) {
		char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
		if (!end)
			return 0;
		size_t head = (size_t)(end - c->buf) + 4, body = 0;
		for (char *l = c->buf; l < end; l = strstr(l, "\r\n") + 2) {
			if (!strncasecmp(l, "Content-Length:", 15))
				body = strtoul(l + 15, NULL, 10);
		}
		if (c->len < head + body)
			return 0;
		if (!strncmp(c->buf, "GET /count", 10)) {
			char j[256];
			snprintf(j, sizeof(j),
				 "{\"spans\":%llu,\"requests\":%llu,\"bytes\":%llu,\"bad\":%llu}\n", spans,
				 requests, bytes, bad);
			reply(fd, "200 OK", "application/json", j);
		} else if (!strncmp(c->buf, "POST /v1/traces", 15)) {
			static const int path[] = {1, 2, 2}; /* resource_spans, scope_spans, spans */
			const uint8_t *b = (const uint8_t *)c->buf + head;
			long long n = count_field(b, b + body, path, 2);
			if (n < 0)
				bad++;
			else
				spans += (unsigned long long)n;
			requests++;
			bytes += body;
			reply(fd, "200 OK", "application/x-protobuf", "");
		} else {
			reply(fd, "200 OK", "application/x-protobuf", "");
		}
		memmove(c->buf, c->buf + head + body, c->len - head - body);
		c->len -= head + body;
		c->buf[c->len] = '\0';
	}
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: otlp_sink PORT\n");
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
	setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1])),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	if (bind(ls, (struct sockaddr *)&sa, sizeof(sa)) || listen(ls, 128)) {
		perror("otlp_sink");
		return 1;
	}
	int ep = epoll_create1(0);
	struct epoll_event ev = {.events = EPOLLIN, .data.fd = ls};
	epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
	for (;;) {
		struct epoll_event evs[64];
		int n = epoll_wait(ep, evs, 64, -1);
		for (int i = 0; i < n; i++) {
			int fd = evs[i].data.fd;
			if (fd == ls) {
				int c;
				while ((c = accept4(ls, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
					if (c >= MAX_FDS) {
						close(c);
						continue;
					}
					setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
					struct epoll_event ce = {.events = EPOLLIN, .data.fd = c};
					epoll_ctl(ep, EPOLL_CTL_ADD, c, &ce);
				}
				continue;
			}
			struct client *c = &clients[fd];
			for (;;) {
				if (c->cap - c->len < 65536) {
					size_t cap = c->cap ? c->cap * 2 : 1 << 20;
					char *nb = realloc(c->buf, cap);
					if (!nb)
						return 1;
					c->buf = nb;
					c->cap = cap;
				}
				ssize_t r = read(fd, c->buf + c->len, c->cap - c->len - 1);
				if (r > 0) {
					c->len += (size_t)r;
					c->buf[c->len] = '\0';
					continue;
				}
				if (r < 0 && errno == EAGAIN) {
					serve(fd, c);
					break;
				}
				epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
				close(fd);
				c->len = 0;
				break;
			}
		}
	}
}
