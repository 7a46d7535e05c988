/*
 * The HTTP/1.1 server of the Prometheus endpoint, on rastro's event loop.
 *
 * A connection is in one of three states: reading a request head, sending a
 * response (the socket is not read meanwhile: pipelined requests wait in the
 * kernel), or lingering (response sent and write side shut, the client's
 * leftovers drained so that closing does not turn into a reset that could
 * destroy the response before the client has read it). Responses go out
 * with sendmsg straight from the handler's memory: the framing (status line,
 * headers, chunk-size lines) in a small buffer of the connection, the body
 * as the handler's fixed text or the stream's current piece.
 */
#include "export/http_server.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "common/loop.h"
#include "log.h"
#include "protocols/http1.h"

/* A request head larger than this gets a 431 (Prometheus sends ~250 bytes). */
#define HEAD_MAX 8192
/* The input buffer starts at this size and doubles up to HEAD_MAX. */
#define HEAD_BUF_MIN 1024
/* After a response that ends the connection, the client's remaining bytes
 * are read and dropped for at most this long and this much before closing. */
#define LINGER_MS 2000
#define LINGER_MAX_BYTES (64 * 1024)
/* Body pieces produced per wakeup: a large scrape to a fast client still lets
 * the rest of the loop (ring buffer, exporters) run between pieces. */
#define PIECES_PER_WAKEUP 4
/* Connections accepted per wakeup (level-triggered: the rest comes next). */
#define ACCEPTS_PER_WAKEUP 64
/* accept() out of descriptors or memory: retried after this pause rather
 * than spinning on a listening socket that stays readable. */
#define ACCEPT_RETRY_MS 100

enum conn_state {
	CONN_READ,   /* waiting for (the rest of) a request head */
	CONN_WRITE,  /* sending a response */
	CONN_LINGER, /* response sent, write side shut: draining until EOF */
};

/* What sending (or answering) left the connection in. */
enum progress {
	CONN_IDLE, /* response complete, connection kept: next request */
	CONN_WAIT, /* waiting for the socket (or lingering) */
	CONN_GONE, /* closed and freed: do not touch it any more */
};

struct conn {
	struct http_server *srv;
	struct conn *prev, *next;
	int fd;
	enum conn_state state;
	uint32_t events; /* what the loop watches for it; 0 before the first */
	int64_t timer;
	uint64_t timer_due_ns; /* when the timer fires */
	uint64_t deadline_ns;  /* when the connection is closed */

	char *in; /* received, not consumed yet */
	size_t in_len, in_cap;

	/* The response in progress: out[0] is the unsent end of frame, out[1]
	 * the unsent end of the body (fixed text or the stream's piece). */
	char frame[512];
	size_t frame_len;
	struct iovec out[2];
	bool chunked;	  /* HTTP/1.1 stream: chunked framing */
	bool in_chunk;	  /* a chunk was sent: its CRLF is still due */
	bool streaming;	  /* stream holds a body not finished yet */
	bool close_after; /* the connection ends with this response */
	struct http_body_stream stream;
	size_t drained; /* while lingering */
};

struct http_server {
	struct loop *loop;
	int fd;
	struct http_server_opts opts;
	http_handler_fn handler;
	void *ctx;
	struct conn *conns;
	int nconns;
	int64_t accept_timer;
};

/* ---- connection lifetime */

static void conn_free(struct conn *c)
{
	struct http_server *s = c->srv;
	if (c->streaming)
		c->stream.release(c->stream.ctx);
	if (c->timer)
		loop__cancel(s->loop, c->timer);
	if (c->events)
		loop__unwatch(s->loop, c->fd);
	close(c->fd);
	if (c->prev)
		c->prev->next = c->next;
	else
		s->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	s->nconns--;
	free(c->in);
	free(c);
}

/* Closes c on a failure the client caused or suffered: debug only, as a
 * scraper hanging up is nothing the operator has to act on. */
__attribute__((format(printf, 2, 3))) static enum progress conn_drop(struct conn *c,
								     const char *fmt, ...)
{
	if (LOG_DEBUG >= log__threshold) {
		char why[256];
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(why, sizeof(why), fmt, ap);
		va_end(ap);
		log_debug("%s: closing connection %d: %s", c->srv->opts.log_name, c->fd, why);
	}
	conn_free(c);
	return CONN_GONE;
}

static void on_conn_event(void *ctx, int fd, uint32_t events);

/* Watches for what the state waits for: EPOLLIN, or EPOLLOUT alone while a
 * response is sent (the socket is not read then). */
static int conn_watch(struct conn *c, uint32_t events)
{
	if (c->events == events)
		return 0;
	if (loop__watch(c->srv->loop, c->fd, events, on_conn_event, c))
		return -1;
	c->events = events;
	return 0;
}

static void on_conn_timer(void *ctx);

static int conn_arm(struct conn *c, uint64_t due_ns)
{
	uint64_t now = loop__now_ns();
	uint64_t ms = due_ns > now ? (due_ns - now + 999999) / 1000000 : 0;
	if (c->timer)
		loop__cancel(c->srv->loop, c->timer);
	c->timer = loop__after(c->srv->loop, ms, on_conn_timer, c);
	if (c->timer < 0) {
		c->timer = 0;
		return -1;
	}
	c->timer_due_ns = due_ns;
	return 0;
}

/* Moves the connection's deadline; the timer is re-armed only when the
 * deadline comes earlier, so progress on a busy connection costs no timer
 * work (a timer that fires early re-arms itself for the rest). */
static int conn_deadline(struct conn *c, uint64_t ms)
{
	c->deadline_ns = loop__now_ns() + ms * 1000000ull;
	if (c->timer && c->deadline_ns >= c->timer_due_ns)
		return 0;
	return conn_arm(c, c->deadline_ns);
}

/* Bytes moved: the idle timeout starts again (not while lingering, which
 * has its own, shorter, bound). */
static void conn_progress(struct conn *c)
{
	if (c->state != CONN_LINGER)
		c->deadline_ns = loop__now_ns() + c->srv->opts.idle_timeout_ms * 1000000ull;
}

static void on_conn_timer(void *ctx)
{
	struct conn *c = ctx;
	c->timer = 0;
	if (loop__now_ns() < c->deadline_ns) {
		if (conn_arm(c, c->deadline_ns))
			conn_drop(c, "out of memory for its timer");
		return;
	}
	conn_drop(c, c->state == CONN_LINGER ? "lingered long enough" : "timed out");
}

/* ---- sending */

static const char *reason(int status)
{
	switch (status) {
	case 200:
		return "OK";
	case 400:
		return "Bad Request";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 431:
		return "Request Header Fields Too Large";
	case 500:
		return "Internal Server Error";
	default:
		return "Unknown";
	}
}

/* Appends to the framing still to send. false if it does not fit (a bug:
 * the frame is sized for our own headers). */
__attribute__((format(printf, 2, 3))) static bool frame_add(struct conn *c, const char *fmt, ...)
{
	if (!c->out[0].iov_len)
		c->frame_len = 0; /* all sent: start over */
	size_t room = sizeof(c->frame) - c->frame_len;
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(c->frame + c->frame_len, room, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= room)
		return false;
	c->frame_len += (size_t)n;
	c->out[0].iov_len += (size_t)n;
	c->out[0].iov_base = c->frame + c->frame_len - c->out[0].iov_len;
	return true;
}

/* Takes the stream's next piece, with its chunk framing. At the end of the
 * body the stream is released. */
static int pull_piece(struct conn *c)
{
	const char *data;
	size_t len = 0;
	if (c->stream.next(c->stream.ctx, &data, &len))
		return -1;
	if (c->chunked) {
		bool ok = true;
		if (c->in_chunk)
			ok = frame_add(c, "\r\n");
		ok = ok && (len ? frame_add(c, "%zx\r\n", len) : frame_add(c, "0\r\n\r\n"));
		if (!ok)
			return -1;
		c->in_chunk = len > 0;
	}
	if (!len) {
		c->streaming = false;
		c->stream.release(c->stream.ctx);
		return 0;
	}
	c->out[1] = (struct iovec){(void *)data, len};
	return 0;
}

static void out_advance(struct conn *c, size_t n)
{
	for (int i = 0; i < 2 && n; i++) {
		size_t k = n < c->out[i].iov_len ? n : c->out[i].iov_len;
		c->out[i].iov_base = (char *)c->out[i].iov_base + k;
		c->out[i].iov_len -= k;
		n -= k;
	}
}

/* The response is out: wait for the next request, or shut the write side
 * (the client reads the end of the body as EOF) and linger. */
static enum progress response_done(struct conn *c)
{
	if (!c->close_after) {
		c->state = CONN_READ;
		return CONN_IDLE;
	}
	shutdown(c->fd, SHUT_WR);
	c->state = CONN_LINGER;
	if (conn_watch(c, EPOLLIN) || conn_deadline(c, LINGER_MS))
		return conn_drop(c, "cannot linger");
	return CONN_WAIT;
}

/* Sends what the socket takes, producing stream pieces as it goes. */
static enum progress conn_send(struct conn *c)
{
	for (int pulled = 0;;) {
		if (c->streaming && !c->out[1].iov_len) {
			if (pulled == PIECES_PER_WAKEUP) /* EPOLLOUT fires again at once */
				break;
			if (pull_piece(c))
				return conn_drop(c, "the response body failed");
			pulled++;
		}
		if (!c->out[0].iov_len && !c->out[1].iov_len)
			return response_done(c);
		struct msghdr msg = {.msg_iov = c->out, .msg_iovlen = 2};
		ssize_t n = sendmsg(c->fd, &msg, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			return conn_drop(c, "send: %s", strerror(errno));
		}
		out_advance(c, (size_t)n);
		conn_progress(c);
	}
	if (conn_watch(c, EPOLLOUT))
		return conn_drop(c, "cannot watch the socket");
	return CONN_WAIT;
}

/* Starts sending resp: the head now, the body as the socket takes it. */
static enum progress conn_respond(struct conn *c, const struct http_response *resp, int version,
				  bool head_only, bool keep_alive)
{
	bool stream = resp->stream.next != NULL;
	c->state = CONN_WRITE;
	c->stream = resp->stream;
	c->streaming = stream && !head_only;
	if (stream && head_only)
		resp->stream.release(resp->stream.ctx);
	c->chunked = stream && version == 11;
	c->in_chunk = false;
	/* A stream to an HTTP/1.0 client has no length: it ends at the close. */
	c->close_after = !keep_alive || (stream && !c->chunked);

	char date[64];
	time_t now = time(NULL);
	struct tm tm;
	gmtime_r(&now, &tm);
	strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm);

	c->out[0].iov_len = c->out[1].iov_len = 0;
	bool ok = frame_add(c, "HTTP/1.1 %d %s\r\nDate: %s\r\nContent-Type: %s\r\n", resp->status,
			    reason(resp->status), date, resp->content_type);
	if (ok && resp->allow)
		ok = frame_add(c, "Allow: %s\r\n", resp->allow);
	if (ok && !stream)
		ok = frame_add(c, "Content-Length: %zu\r\n", resp->body_len);
	else if (ok && c->chunked)
		ok = frame_add(c, "Transfer-Encoding: chunked\r\n");
	if (ok && c->close_after)
		ok = frame_add(c, "Connection: close\r\n");
	if (ok)
		ok = frame_add(c, "\r\n");
	if (!ok)
		return conn_drop(c, "response head too large");
	if (!stream && !head_only)
		c->out[1] = (struct iovec){(void *)resp->body, resp->body_len};
	return conn_send(c);
}

/* Answers a request this server refuses itself, and closes. */
static enum progress conn_refuse(struct conn *c, int status, const char *body)
{
	log_debug("%s: connection %d: %d %s", c->srv->opts.log_name, c->fd, status, reason(status));
	struct http_response resp = {.status = status,
				     .content_type = "text/plain; charset=utf-8",
				     .body = body,
				     .body_len = strlen(body)};
	return conn_respond(c, &resp, 11, false, false);
}

/* ---- receiving */

static bool slice_is(struct http1_slice s, const char *lit)
{
	return s.len == strlen(lit) && !memcmp(s.p, lit, s.len);
}

/* Hands a parsed head (head_len bytes at c->in) to the handler. */
static enum progress conn_answer(struct conn *c, const struct http1_head *h, size_t head_len)
{
	struct http_server *s = c->srv;
	const char *query = memchr(h->target.p, '?', h->target.len);
	struct http_request req = {
	    .method = h->method.p,
	    .method_len = h->method.len,
	    .path = h->target.p,
	    .path_len = query ? (size_t)(query - h->target.p) : h->target.len,
	};
	/* The server never reads request bodies: a request with one is
	 * answered, and the connection closed (lingering drains the body). */
	bool has_body = h->content_length > 0 || h->has_transfer_encoding;
	/* HTTP/1.0 keep-alive is not offered: Prometheus speaks HTTP/1.1. */
	bool keep_alive = h->version == 11 && !h->connection_close && !has_body;
	bool head_only = slice_is(h->method, "HEAD");
	struct http_response resp = {0};
	s->handler(s->ctx, &req, &resp);
	/* The request's slices are not used after the handler. */
	c->in_len -= head_len;
	memmove(c->in, c->in + head_len, c->in_len);
	return conn_respond(c, &resp, h->version, head_only, keep_alive);
}

/* RFC 9112 2.2: empty lines before a request line are ignored. */
static void skip_empty_lines(struct conn *c)
{
	size_t i = 0;
	while (i < c->in_len && (c->in[i] == '\r' || c->in[i] == '\n'))
		i++;
	if (i) {
		c->in_len -= i;
		memmove(c->in, c->in + i, c->in_len);
	}
}

/* Answers the requests already received, one after the other (pipelining),
 * until one is incomplete or its response has to wait for the socket. */
static void conn_process(struct conn *c)
{
	while (c->state == CONN_READ) {
		skip_empty_lines(c);
		struct http1_head h;
		int r =
		    c->in_len ? http1__parse_request_head(c->in, c->in_len, &h) : HTTP1_NEED_MORE;
		enum progress next;
		if (r == HTTP1_NEED_MORE && c->in_len < HEAD_MAX) {
			if (conn_watch(c, EPOLLIN))
				conn_drop(c, "cannot watch the socket");
			return;
		}
		if (r > 0)
			next = conn_answer(c, &h, (size_t)r);
		else if (r == HTTP1_NEED_MORE)
			next = conn_refuse(c, 431, "request header fields too large\n");
		else
			next = conn_refuse(c, 400, "bad request\n");
		if (next != CONN_IDLE)
			return;
	}
}

/* Reads what has arrived. 1: new bytes; 0: none yet; -1: c is gone. */
static int conn_receive(struct conn *c)
{
	if (c->in_len >= HEAD_MAX)
		return 1; /* not reached: conn_process refuses a full buffer */
	if (c->in_len == c->in_cap) {
		size_t cap = c->in_cap ? c->in_cap * 2 : HEAD_BUF_MIN;
		char *in = realloc(c->in, cap > HEAD_MAX ? HEAD_MAX : cap);
		if (!in) {
			conn_drop(c, "out of memory");
			return -1;
		}
		c->in = in;
		c->in_cap = cap > HEAD_MAX ? HEAD_MAX : cap;
	}
	for (;;) {
		ssize_t n = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
		if (n > 0) {
			c->in_len += (size_t)n;
			conn_progress(c);
			return 1;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return 0;
		if (n == 0 && !c->in_len)
			conn_free(c); /* between requests: the normal end */
		else if (n == 0)
			conn_drop(c, "closed by the client mid-request");
		else
			conn_drop(c, "recv: %s", strerror(errno));
		return -1;
	}
}

/* Drops what the client still sends after the last response, until it
 * closes, or the linger bounds are reached. */
static void conn_drain(struct conn *c)
{
	char sink[4096];
	for (;;) {
		ssize_t n = recv(c->fd, sink, sizeof(sink), 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (n <= 0) {
			conn_free(c); /* EOF: the normal end */
			return;
		}
		c->drained += (size_t)n;
		if (c->drained > LINGER_MAX_BYTES) {
			conn_drop(c, "the client keeps sending");
			return;
		}
	}
}

static void on_conn_event(void *ctx, int fd, uint32_t events)
{
	struct conn *c = ctx;
	(void)fd;
	(void)events; /* errors and hang-ups show in the next recv or send */
	switch (c->state) {
	case CONN_READ:
		if (conn_receive(c) > 0)
			conn_process(c);
		break;
	case CONN_WRITE:
		if (conn_send(c) == CONN_IDLE)
			conn_process(c);
		break;
	case CONN_LINGER:
		conn_drain(c);
		break;
	}
}

/* ---- accepting */

static void conn_new(struct http_server *s, int fd)
{
	struct conn *c = calloc(1, sizeof(*c));
	if (!c) {
		close(fd);
		return;
	}
	c->srv = s;
	c->fd = fd;
	c->next = s->conns;
	if (s->conns)
		s->conns->prev = c;
	s->conns = c;
	s->nconns++;
	/* The last piece of a body (the chunked terminator) is small and follows
	 * unacknowledged data: Nagle would hold it until the client's delayed
	 * ACK, adding ~40 ms to every scrape. */
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (conn_watch(c, EPOLLIN) || conn_deadline(c, s->opts.idle_timeout_ms))
		conn_drop(c, "cannot watch it");
}

static void on_accept(void *ctx, int fd, uint32_t events);

static void resume_accept(void *ctx)
{
	struct http_server *s = ctx;
	s->accept_timer = 0;
	if (loop__watch(s->loop, s->fd, EPOLLIN, on_accept, s))
		log_debug("%s: cannot watch the listening socket again", s->opts.log_name);
}

static void pause_accept(struct http_server *s, int err)
{
	log_debug("%s: accept: %s; pausing for %d ms", s->opts.log_name, strerror(err),
		  ACCEPT_RETRY_MS);
	int64_t id = loop__after(s->loop, ACCEPT_RETRY_MS, resume_accept, s);
	if (id <= 0)
		return; /* keep watching: retrying at once beats never */
	loop__unwatch(s->loop, s->fd);
	s->accept_timer = id;
}

static void on_accept(void *ctx, int fd, uint32_t events)
{
	struct http_server *s = ctx;
	(void)events;
	for (int i = 0; i < ACCEPTS_PER_WAKEUP; i++) {
		int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (cfd < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return;
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
			    errno == ENOMEM) {
				pause_accept(s, errno);
				return;
			}
			/* EINTR, ECONNABORTED, or a network error already pending
			 * on the new connection (accept(2)): the next one may do. */
			continue;
		}
		/* Over the limit, a connection is accepted and closed at once
		 * rather than left in the backlog: the client learns it now,
		 * and the listening socket does not stay readable (the loop
		 * is level-triggered) while nothing can be done about it. */
		if (s->nconns >= s->opts.max_conns) {
			log_debug("%s: %d connections already: closing a new one", s->opts.log_name,
				  s->nconns);
			close(cfd);
			continue;
		}
		conn_new(s, cfd);
	}
}

/* ---- the server */

struct http_server *http_server__start(struct loop *loop, int listen_fd,
				       const struct http_server_opts *opts, http_handler_fn handler,
				       void *ctx)
{
	struct http_server *s = calloc(1, sizeof(*s));
	if (!s) {
		close(listen_fd);
		return NULL;
	}
	s->loop = loop;
	s->fd = listen_fd;
	s->opts = *opts;
	s->handler = handler;
	s->ctx = ctx;
	if (loop__watch(loop, listen_fd, EPOLLIN, on_accept, s)) {
		close(listen_fd);
		free(s);
		return NULL;
	}
	return s;
}

void http_server__stop(struct http_server *s)
{
	if (!s)
		return;
	while (s->conns)
		conn_free(s->conns);
	if (s->accept_timer)
		loop__cancel(s->loop, s->accept_timer);
	else
		loop__unwatch(s->loop, s->fd);
	close(s->fd);
	free(s);
}
