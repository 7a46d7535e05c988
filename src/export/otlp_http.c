/*
 * The http:// transport: a small HTTP/1.1 client, enough for OTLP/HTTP.
 *
 * One request at a time on one kept-alive connection: POST with a
 * Content-Length, the answer read with Content-Length, chunked or
 * close-delimited framing (its body kept for partial success, Retry-After
 * passed on). A request sent on a kept-alive connection that the server had
 * closed meanwhile (no byte of answer, then EOF or reset) is sent again once
 * on a new connection, as browsers and curl do; any other failure goes to the
 * client, which retries per the OTLP specification.
 *
 * Host names resolve with getaddrinfo_a, polled from the transport's timer,
 * so a slow DNS server never stalls the loop; numeric addresses resolve at
 * once. The timer also bounds each attempt (otel_*_export.timeout).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "common/loop.h"
#include "export/otlp_transport.h"
#include "protocols/http1.h"
#include "version.h"

#define RESOLVE_POLL_MS 2
/* The answer's head (status line and headers) must fit here. */
#define HEAD_MAX 16384

enum state { IDLE, RESOLVING, CONNECTING, SENDING, RECV_HEAD, RECV_BODY };
enum framing { BY_LENGTH, CHUNKED, UNTIL_CLOSE };

/* One getaddrinfo_a request; glibc writes into it until it completes, so it
 * lives apart from the transport (see http_close). */
struct resolve {
	struct gaicb cb;
	struct addrinfo hints;
	char node[256];
	char service[8];
};

struct http_t {
	struct otlp_client *c;
	char node[256];    /* host without brackets, for getaddrinfo */
	char service[8];   /* port */
	char hostport[300]; /* as in the URL, for the log lines */
	uint32_t timeout_ms;

	char *head; /* the request head without its Content-Length line */
	size_t head_fixed, head_cap;

	enum state st;
	int fd;           /* -1: no connection */
	bool reused;      /* the request went on a kept-alive connection */
	bool resent;      /* ... and was sent again on a new one */
	bool answered;    /* a byte of the answer arrived */
	bool in_start;    /* failures inside start() are reported from the timer */
	enum otlp_err pending; /* a failure to report from the timer */
	char text[256];        /* its text */

	struct resolve *res;     /* resolution in progress */
	struct addrinfo *addrs;  /* resolved, being tried */
	struct addrinfo *next;   /* next address to try */
	int last_errno;

	/* the request */
	const uint8_t *body;
	size_t body_len, head_len, sent;
	uint64_t deadline_ns;

	/* the answer */
	char in[HEAD_MAX];
	size_t in_len;
	long status;
	enum framing framing;
	bool close_after;
	uint64_t remaining;       /* BY_LENGTH */
	struct http1_chunked chunked; /* CHUNKED */
};

static void arm(struct http_t *t);
static void connect_next(struct http_t *t);
static void do_send(struct http_t *t);

/* ---- connection and attempt endings */

static void close_fd(struct http_t *t)
{
	if (t->fd < 0)
		return;
	otlp_client__watch(t->c, t->fd, 0);
	close(t->fd);
	t->fd = -1;
}

static void free_addrs(struct http_t *t)
{
	if (t->addrs)
		freeaddrinfo(t->addrs);
	t->addrs = t->next = NULL;
}

/* Ends the attempt in flight with an error. */
static void fail(struct http_t *t, enum otlp_err err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void fail(struct http_t *t, enum otlp_err err, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(t->text, sizeof(t->text), fmt, ap);
	va_end(ap);
	close_fd(t);
	free_addrs(t);
	t->st = IDLE;
	if (t->in_start) {
		/* The client must not hear of the end before start() returns. */
		t->pending = err;
		arm(t);
		return;
	}
	arm(t);
	otlp_client__finished(t->c, err, 0, t->text);
}

static void succeed(struct http_t *t)
{
	if (t->close_after)
		close_fd(t);
	else
		otlp_client__watch(t->c, t->fd, EPOLLIN); /* to see the server close it */
	t->st = IDLE;
	arm(t);
	otlp_client__finished(t->c, OTLP_ERR_NONE, t->status, NULL);
}

/* ---- the timer: attempt deadline, resolver polling, deferred failures */

static void arm(struct http_t *t)
{
	int64_t ms = -1;
	if (t->pending != OTLP_ERR_NONE) {
		ms = 0;
	} else {
		if (t->st != IDLE) {
			uint64_t now = loop__now_ns();
			ms = t->deadline_ns > now ? (int64_t)((t->deadline_ns - now + 999999) / 1000000)
						  : 0;
		}
		if (t->res && (ms < 0 || ms > RESOLVE_POLL_MS))
			ms = RESOLVE_POLL_MS;
	}
	otlp_client__set_timer(t->c, ms);
}

/* ---- resolving and connecting */

static void resolved(struct http_t *t, int rc, struct addrinfo *ai)
{
	if (t->st != RESOLVING) { /* the attempt ended meanwhile */
		if (ai)
			freeaddrinfo(ai);
		return;
	}
	if (rc) {
		fail(t, OTLP_ERR_RESOLVE, "cannot resolve %s: %s", t->node,
		     rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc));
		return;
	}
	t->addrs = t->next = ai;
	t->last_errno = ECONNREFUSED;
	connect_next(t);
}

static void poll_resolver(struct http_t *t)
{
	int rc = gai_error(&t->res->cb);
	if (rc == EAI_INPROGRESS)
		return;
	struct resolve *r = t->res;
	t->res = NULL;
	struct addrinfo *ai = rc ? NULL : r->cb.ar_result;
	free(r);
	resolved(t, rc, ai);
}

static void start_resolving(struct http_t *t)
{
	t->st = RESOLVING;
	struct addrinfo hints = {.ai_family = AF_UNSPEC,
				 .ai_socktype = SOCK_STREAM,
				 .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV};
	struct addrinfo *ai;
	/* An address needs no resolver. */
	if (!getaddrinfo(t->node, t->service, &hints, &ai)) {
		resolved(t, 0, ai);
		return;
	}
	if (t->res)
		return; /* an earlier resolution is still running: its answer serves */
	struct resolve *r = calloc(1, sizeof(*r));
	if (!r) {
		fail(t, OTLP_ERR_NOMEM, "out of memory");
		return;
	}
	snprintf(r->node, sizeof(r->node), "%s", t->node);
	snprintf(r->service, sizeof(r->service), "%s", t->service);
	/* Every address, whatever families the host has configured (no
	 * AI_ADDRCONFIG): one the host cannot reach fails at connect at once,
	 * and the next is tried. */
	r->hints = (struct addrinfo){.ai_family = AF_UNSPEC,
				     .ai_socktype = SOCK_STREAM,
				     .ai_flags = AI_NUMERICSERV};
	r->cb.ar_name = r->node;
	r->cb.ar_service = r->service;
	r->cb.ar_request = &r->hints;
	struct gaicb *list[1] = {&r->cb};
	struct sigevent sev = {.sigev_notify = SIGEV_NONE};
	int rc = getaddrinfo_a(GAI_NOWAIT, list, 1, &sev);
	if (rc) {
		free(r);
		fail(t, OTLP_ERR_RESOLVE, "cannot resolve %s: %s", t->node, gai_strerror(rc));
		return;
	}
	t->res = r;
	arm(t);
}

static void connected(struct http_t *t)
{
	free_addrs(t);
	int one = 1;
	/* The head and body go in one sendmsg; nothing to gain from Nagle. */
	setsockopt(t->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(t->fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
	t->st = SENDING;
	do_send(t);
}

static void connect_next(struct http_t *t)
{
	while (t->next) {
		struct addrinfo *ai = t->next;
		t->next = ai->ai_next;
		int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd < 0) {
			t->last_errno = errno;
			continue;
		}
		if (!connect(fd, ai->ai_addr, ai->ai_addrlen) || errno == EINPROGRESS) {
			t->fd = fd;
			t->st = CONNECTING;
			if (otlp_client__watch(t->c, fd, EPOLLOUT)) {
				fail(t, OTLP_ERR_NOMEM, "cannot watch the connection to %s",
				     t->hostport);
				return;
			}
			arm(t);
			return;
		}
		t->last_errno = errno;
		close(fd);
	}
	fail(t, OTLP_ERR_CONNECT, "cannot connect to %s: %s", t->hostport,
	     strerror(t->last_errno));
}

static void on_connecting(struct http_t *t)
{
	int err = 0;
	socklen_t len = sizeof(err);
	if (getsockopt(t->fd, SOL_SOCKET, SO_ERROR, &err, &len))
		err = errno;
	if (err == EINPROGRESS || err == EALREADY)
		return;
	if (!err) {
		connected(t);
		return;
	}
	t->last_errno = err;
	close_fd(t);
	connect_next(t);
}

/* ---- sending */

static void begin(struct http_t *t)
{
	t->sent = 0;
	t->in_len = 0;
	t->answered = false;
	if (t->fd >= 0) {
		t->reused = true;
		t->st = SENDING;
		do_send(t);
	} else {
		t->reused = false;
		start_resolving(t);
	}
}

/* A kept-alive connection the server closed before our request reached it:
 * the request was never processed, so it is sent again on a new one. */
static bool resend_on_new_connection(struct http_t *t)
{
	if (!t->reused || t->resent || t->answered)
		return false;
	t->resent = true;
	close_fd(t);
	begin(t);
	return true;
}

static void do_send(struct http_t *t)
{
	size_t total = t->head_len + t->body_len;
	while (t->sent < total) {
		struct iovec iov[2];
		int n = 0;
		if (t->sent < t->head_len)
			iov[n++] = (struct iovec){t->head + t->sent, t->head_len - t->sent};
		size_t body_off = t->sent > t->head_len ? t->sent - t->head_len : 0;
		if (t->body_len > body_off)
			iov[n++] = (struct iovec){(void *)(t->body + body_off),
						  t->body_len - body_off};
		struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)n};
		ssize_t w = sendmsg(t->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				otlp_client__watch(t->c, t->fd, EPOLLOUT);
				return;
			}
			if (!resend_on_new_connection(t))
				fail(t, OTLP_ERR_SEND, "connection to %s lost while sending: %s",
				     t->hostport, strerror(errno));
			return;
		}
		t->sent += (size_t)w;
	}
	t->st = RECV_HEAD;
	otlp_client__watch(t->c, t->fd, EPOLLIN);
}

/* ---- the answer (parsed by the HTTP/1 protocol parser's head parser and
 * chunked decoder) */

/* Passes the header lines of the head t->in[0, len) to the client. */
static void pass_headers(struct http_t *t, size_t len)
{
	const char *p = memchr(t->in, '\n', len), *end = t->in + len, *eol;
	for (p = p ? p + 1 : end; p < end && (eol = memchr(p, '\n', (size_t)(end - p)));
	     p = eol + 1)
		otlp_client__header(t->c, p, (size_t)(eol - p));
}

/* How the body of the answer whose head is h is delimited (RFC 9112 6.3). */
static void set_framing(struct http_t *t, const struct http1_head *h)
{
	t->status = h->status;
	t->close_after = h->version == 10 ? !h->connection_keep_alive : h->connection_close;
	if (http1__response_has_no_body("POST", 4, h->status)) {
		t->framing = BY_LENGTH;
		t->remaining = 0;
	} else if (h->chunked) {
		t->framing = CHUNKED;
		http1__chunked_init(&t->chunked);
	} else if (!h->has_transfer_encoding && h->content_length >= 0) {
		t->framing = BY_LENGTH;
		t->remaining = (uint64_t)h->content_length;
	} else {
		t->framing = UNTIL_CLOSE;
		t->close_after = true;
	}
}

/* Takes body bytes. 1: the body is complete, 0: more to come, -1:
 * malformed chunked framing. Bytes after the body (nothing was asked for
 * them) make the connection unfit for reuse. */
static int feed_body(struct http_t *t, const char *p, size_t len)
{
	if (t->framing == UNTIL_CLOSE) {
		otlp_client__body(t->c, p, len);
		return 0;
	}
	if (t->framing == BY_LENGTH) {
		size_t n = len < t->remaining ? len : (size_t)t->remaining;
		otlp_client__body(t->c, p, n);
		t->remaining -= n;
		if (!t->remaining && n < len)
			t->close_after = true;
		return t->remaining == 0;
	}
	for (size_t i = 0; i < len;) {
		const char *data;
		size_t data_len;
		bool done;
		int64_t n = http1__chunked_data(&t->chunked, p + i, len - i, &done, &data, &data_len);
		if (n < 0)
			return -1;
		otlp_client__body(t->c, data, data_len);
		i += (size_t)n;
		if (done) {
			if (i < len)
				t->close_after = true;
			return 1;
		}
	}
	return 0;
}

/* Hands body bytes on; true when the attempt ended (succeeded or failed). */
static bool take_body(struct http_t *t, const char *p, size_t len)
{
	int done = feed_body(t, p, len);
	if (done < 0)
		fail(t, OTLP_ERR_RESPONSE, "malformed chunked answer from %s", t->hostport);
	else if (done)
		succeed(t);
	return done != 0;
}

/* Reads what the socket has; once the attempt ends, t may already serve the
 * next request, so nothing touches it after succeed() or fail(). */
static void on_readable(struct http_t *t)
{
	for (;;) {
		size_t room = sizeof(t->in) - t->in_len;
		if (!room) { /* RECV_HEAD only: the body is consumed as it comes */
			fail(t, OTLP_ERR_RESPONSE, "the answer of %s has a head over %d bytes",
			     t->hostport, HEAD_MAX);
			return;
		}
		ssize_t r = read(t->fd, t->in + t->in_len, room);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return;
			if (!resend_on_new_connection(t))
				fail(t, OTLP_ERR_RECV, "connection to %s lost: %s", t->hostport,
				     strerror(errno));
			return;
		}
		if (r == 0) {
			if (t->st == RECV_BODY && t->framing == UNTIL_CLOSE) {
				succeed(t);
				return;
			}
			if (!resend_on_new_connection(t))
				fail(t, OTLP_ERR_RECV, "%s closed the connection before a "
				     "complete answer", t->hostport);
			return;
		}
		t->answered = true;
		if (t->st == RECV_BODY) {
			if (take_body(t, t->in, (size_t)r))
				return;
			continue;
		}
		t->in_len += (size_t)r;
		/* RECV_HEAD: interim (1xx) answers are skipped. */
		for (;;) {
			struct http1_head h;
			int head = http1__parse_response_head(t->in, t->in_len, &h);
			if (head == HTTP1_NEED_MORE)
				break;
			if (head < 0) {
				fail(t, OTLP_ERR_RESPONSE, "the answer of %s is not HTTP/1.x",
				     t->hostport);
				return;
			}
			pass_headers(t, (size_t)head);
			set_framing(t, &h);
			size_t rest = t->in_len - (size_t)head;
			memmove(t->in, t->in + head, rest);
			t->in_len = rest;
			if (h.status < 200)
				continue;
			t->st = RECV_BODY;
			t->in_len = 0;
			if (take_body(t, t->in, rest))
				return;
			break;
		}
	}
}

/* ---- the transport interface */

static void http_io(void *tp, int fd, uint32_t events)
{
	struct http_t *t = tp;
	if (fd != t->fd)
		return; /* an event polled before the socket was replaced */
	switch (t->st) {
	case CONNECTING:
		on_connecting(t);
		break;
	case SENDING:
		do_send(t);
		break;
	case RECV_HEAD:
	case RECV_BODY:
		on_readable(t);
		break;
	default: {
		/* Idle kept-alive connection: EOF (the server closed it), an
		 * error, or bytes nobody asked for: it is not reused. */
		char b[256];
		ssize_t r = recv(t->fd, b, sizeof(b), MSG_DONTWAIT | MSG_PEEK);
		if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
			break;
		close_fd(t);
		break;
	}
	}
}

static void http_timeout(void *tp)
{
	struct http_t *t = tp;
	if (t->pending != OTLP_ERR_NONE) {
		enum otlp_err err = t->pending;
		t->pending = OTLP_ERR_NONE;
		arm(t);
		otlp_client__finished(t->c, err, 0, t->text);
		return;
	}
	if (t->res)
		poll_resolver(t);
	if (t->st != IDLE && loop__now_ns() >= t->deadline_ns) {
		fail(t, OTLP_ERR_TIMEOUT, "timed out: no complete answer from %s within %u ms",
		     t->hostport, t->timeout_ms);
		return;
	}
	arm(t);
}

static bool http_start(void *tp, const uint8_t *body, size_t len)
{
	struct http_t *t = tp;
	int n = snprintf(NULL, 0, "Content-Length: %zu\r\n\r\n", len);
	if (t->head_fixed + (size_t)n + 1 > t->head_cap)
		return false; /* cannot happen: the head has room for any length */
	t->head_len = t->head_fixed + (size_t)snprintf(t->head + t->head_fixed,
						       t->head_cap - t->head_fixed,
						       "Content-Length: %zu\r\n\r\n", len);
	t->body = body;
	t->body_len = len;
	t->resent = false;
	t->deadline_ns = loop__now_ns() + (uint64_t)t->timeout_ms * 1000000;
	t->in_start = true;
	begin(t);
	t->in_start = false;
	arm(t);
	return true;
}

static void http_abort(void *tp)
{
	struct http_t *t = tp;
	if (t->st != IDLE)
		close_fd(t); /* half a request went out: the connection is unusable */
	free_addrs(t);
	t->st = IDLE;
	t->pending = OTLP_ERR_NONE;
	arm(t);
}

static void http_close(void *tp)
{
	struct http_t *t = tp;
	http_abort(t);
	close_fd(t);
	if (t->res) {
		struct gaicb *list[1] = {&t->res->cb};
		if (gai_cancel(&t->res->cb) == EAI_NOTCANCELED) {
			struct timespec ts = {1, 0};
			gai_suspend((const struct gaicb *const *)list, 1, &ts);
		}
		int rc = gai_error(&t->res->cb);
		if (rc != EAI_INPROGRESS) {
			if (!rc)
				freeaddrinfo(t->res->cb.ar_result);
			free(t->res);
		}
		/* else glibc still writes into it: left allocated (exit follows). */
	}
	otlp_client__set_timer(t->c, -1);
	free(t->head);
	free(t);
}

/* Splits an http:// URL. false (why set) when it cannot be used. */
static bool parse_url(struct http_t *t, const char *url, const char **path, const char **why)
{
	const char *a = url + strlen("http://");
	size_t alen = strcspn(a, "/?#");
	*path = a + alen;
	if (memchr(a, '@', alen)) {
		*why = "user:password@ in the URL is not supported; send an Authorization "
		       "header with otel_*_export headers (OTEL_EXPORTER_OTLP_HEADERS)";
		return false;
	}
	if (!alen || alen >= sizeof(t->hostport)) {
		*why = "the URL has no host";
		return false;
	}
	memcpy(t->hostport, a, alen);
	t->hostport[alen] = '\0';
	const char *host = t->hostport, *port = NULL;
	size_t hlen;
	if (host[0] == '[') {
		const char *close = strchr(host, ']');
		if (!close) {
			*why = "the URL's IPv6 address has no ']'";
			return false;
		}
		host++;
		hlen = (size_t)(close - host);
		if (close[1] == ':')
			port = close + 2;
		else if (close[1]) {
			*why = "the URL's host is malformed";
			return false;
		}
	} else {
		const char *colon = strchr(host, ':');
		hlen = colon ? (size_t)(colon - host) : strlen(host);
		if (colon)
			port = colon + 1;
	}
	if (!hlen || hlen >= sizeof(t->node)) {
		*why = "the URL has no host";
		return false;
	}
	memcpy(t->node, host, hlen);
	t->node[hlen] = '\0';
	long p = 80;
	if (port) {
		char *end;
		p = strtol(port, &end, 10);
		if (!*port || *end || p < 1 || p > 65535) {
			*why = "the URL's port is not a number from 1 to 65535";
			return false;
		}
	}
	snprintf(t->service, sizeof(t->service), "%ld", p);
	return true;
}

static void *http_open(struct otlp_client *c, const struct otlp_signal *cfg, const char **why)
{
	*why = "out of memory";
	struct http_t *t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	t->c = c;
	t->fd = -1;
	t->timeout_ms = cfg->timeout_ms;
	const char *path;
	if (!parse_url(t, cfg->endpoint, &path, why)) {
		free(t);
		return NULL;
	}
	size_t plen = strcspn(path, "#");
	/* Request line, fixed headers, then room for the Content-Length line. */
	size_t cap = 256 + plen + strlen(t->hostport);
	for (int i = 0; i < cfg->headers.count; i++)
		cap += strlen(cfg->headers.key[i]) + strlen(cfg->headers.value[i]) + 4;
	t->head = malloc(cap);
	if (!t->head) {
		free(t);
		return NULL;
	}
	t->head_cap = cap;
	size_t n = (size_t)snprintf(t->head, cap,
				    "POST %s%.*s HTTP/1.1\r\nHost: %s\r\nUser-Agent: rastro/%s\r\n"
				    "Content-Type: application/x-protobuf\r\n%s",
				    path[0] == '/' ? "" : "/", (int)plen, path, t->hostport,
				    RASTRO_VERSION, cfg->gzip ? "Content-Encoding: gzip\r\n" : "");
	for (int i = 0; i < cfg->headers.count; i++) {
		const char *k = cfg->headers.key[i], *v = cfg->headers.value[i];
		if (otlp_header_ok(k, v))
			n += (size_t)snprintf(t->head + n, cap - n, "%s: %s\r\n", k, v);
	}
	t->head_fixed = n;
	return t;
}

const struct otlp_transport otlp_http_transport = {
	.name = "http",
	.open = http_open,
	.start = http_start,
	.io = http_io,
	.timeout = http_timeout,
	.abort = http_abort,
	.close = http_close,
};
