/*
 * HTTP/1.x over one connection: pairs requests with responses, both when the
 * traced process is the server (requests arrive) and when it is the client
 * (requests leave). Handles keep-alive, pipelining, heads split across
 * syscalls, Content-Length and chunked bodies, HEAD/1xx/204/304, and bytes the
 * kernel did not copy.
 *
 * Timing: a request starts when the syscall that moved the first byte of its
 * head returns, and ends when the syscall that moved the last byte of its
 * response returns.
 */
#include <stdlib.h>
#include <string.h>

#include "protocols/http1.h"
#include "protocols/proto.h"

/* A head longer than this is treated as cut short. */
#define MAX_HEAD (16 * 1024)

enum dir_state_kind {
	S_IDLE = 0,     /* between messages */
	S_HEAD,         /* collecting a head */
	S_BODY_LEN,     /* Content-Length body */
	S_BODY_CHUNKED,
	S_BODY_EOF,     /* response body delimited by the connection's end */
	S_UNTIL_FLIP,   /* framing unknown: the message ends when the other side speaks */
	S_DESYNC,       /* lost track: wait for the other side to speak, then resync */
};

struct dir_state {
	enum dir_state_kind st;
	char *buf; /* head bytes collected across syscalls */
	uint32_t buf_len, buf_cap;
	uint64_t remaining;
	struct http1_chunked chunked;
	uint64_t head_ts;
	uint32_t head_tid;
	uint32_t head_seq;
	uint64_t last_ts;
	uint64_t body_bytes;
};

struct pending {
	struct pending *next;
	bool has_response; /* a final response head arrived */
	bool orphan;       /* response without a request we saw: consume, do not report */
	bool h2c;          /* asked to upgrade to cleartext HTTP/2 */
	struct request rec;
};

struct http1_session {
	bool requests_ingress; /* the traced process is the server */
	bool upgraded;         /* 101 Switching Protocols: no longer HTTP/1 */
	int last_dir;
	struct dir_state req, resp;
	struct pending *head, *tail; /* awaiting or receiving a response, oldest first */
	struct pending *receiving;   /* request whose body is still arriving */
	uint32_t npending;
	void *h2c;                   /* HTTP/2 state taking over after a 101 to h2c */
	struct conn *conn;
};

/* Pending records are recycled: no allocation per request once warm. */
static struct pending *free_list;
static uint32_t free_count;

static struct pending *pending_new(void)
{
	struct pending *p = free_list;
	if (p) {
		free_list = p->next;
		free_count--;
	} else {
		p = malloc(sizeof(*p));
		if (!p)
			return NULL;
	}
	p->next = NULL;
	p->has_response = false;
	p->orphan = false;
	p->h2c = false;
	return p;
}

static void pending_free(struct pending *p)
{
	if (free_count >= 256) {
		free(p);
		return;
	}
	p->next = free_list;
	free_list = p;
	free_count++;
}

static enum proto_verdict http1_detect(const struct conn *c, const struct chunk *ch)
{
	(void)c;
	if (!ch->captured)
		return PROTO_NO;
	if (http1__looks_like_request(ch->data, ch->captured) ||
	    http1__looks_like_response(ch->data, ch->captured)) {
		/* Short prefixes ("GE") cannot be told apart from other protocols. */
		return ch->captured >= 9 ? PROTO_YES : PROTO_MAYBE;
	}
	return PROTO_NO;
}

static void *http1_open(struct conn *c, const struct chunk *first)
{
	struct http1_session *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->conn = c;
	bool is_request = http1__looks_like_request(first->data, first->captured);
	/* Requests flow in the direction a request was seen in. */
	s->requests_ingress = is_request == (first->dir == RASTRO_DIR_INGRESS);
	s->last_dir = -1;
	return s;
}

static void dir_reset(struct dir_state *d)
{
	free(d->buf);
	memset(d, 0, sizeof(*d));
}

static void fifo_push(struct http1_session *s, struct pending *p)
{
	if (s->tail)
		s->tail->next = p;
	else
		s->head = p;
	s->tail = p;
	s->npending++;
}

static struct pending *fifo_pop(struct http1_session *s)
{
	struct pending *p = s->head;
	if (!p)
		return NULL;
	s->head = p->next;
	if (!s->head)
		s->tail = NULL;
	s->npending--;
	if (s->receiving == p)
		s->receiving = NULL;
	return p;
}

static void emit(struct http1_session *s, struct pending *p, uint64_t end_ts, uint64_t body)
{
	struct request *r = &p->rec;
	r->end_ns = end_ts;
	if (r->status) {
		r->response_body_bytes = body;
		r->has_response_body_size = true;
	} else {
		r->error_type = request__store(r, "no_response", 11);
	}
	conn__emit(s->conn, r);
}

/* The response to the oldest pending request is complete. */
static void response_done(struct http1_session *s, uint64_t ts)
{
	struct pending *p = s->head;
	if (!p || !p->has_response)
		return;
	fifo_pop(s);
	if (!p->orphan)
		emit(s, p, ts, s->resp.body_bytes);
	pending_free(p);
}

/* Splits request-target into path and query, stores them. */
static void store_target(struct request *r, const char *t, size_t len, size_t max_path,
			 bool target_cut)
{
	/* absolute-form: scheme://authority/path?query */
	const char *scheme_end = len > 8 ? memchr(t, ':', len < 16 ? len : 16) : NULL;
	if (t[0] != '/' && scheme_end && (size_t)(scheme_end - t) + 3 <= len &&
	    !memcmp(scheme_end, "://", 3)) {
		const char *auth = scheme_end + 3;
		const char *slash = memchr(auth, '/', len - (size_t)(auth - t));
		if (!slash) {
			r->path = request__store(r, "/", 1);
			return;
		}
		len -= (size_t)(slash - t);
		t = slash;
	}
	const char *q = memchr(t, '?', len);
	const char *frag = memchr(t, '#', len);
	size_t path_len = q ? (size_t)(q - t) : frag ? (size_t)(frag - t) : len;
	r->path_truncated = target_cut && !q;
	if (path_len > max_path) {
		path_len = max_path;
		r->path_truncated = true;
	}
	r->path = request__store(r, t, path_len);
	if (q) {
		size_t qlen = len - (size_t)(q - t) - 1;
		const char *qf = memchr(q + 1, '#', qlen);
		if (qf)
			qlen = (size_t)(qf - q - 1);
		r->query = request__store(r, q + 1, qlen);
	}
}

static void store_slice(struct request *r, struct rstr *dst, struct http1_slice s, size_t max)
{
	if (s.p && s.len)
		*dst = request__store(r, s.p, s.len < max ? s.len : max);
}

/* A request head was parsed (or, when cut, its request line). */
static void on_request_head(struct http1_session *s, const struct http1_head *h, bool cut,
			    bool target_cut)
{
	struct dir_state *d = &s->req;
	const struct rastro_config *cfg = conn__config(s->conn);
	if (s->npending >= cfg->max_pending_requests) {
		/* Responses stopped coming: report the oldest as unanswered. */
		struct pending *old = fifo_pop(s);
		conn__count(s->conn, CONN_LOST_PIPELINE_OVERFLOW, 1);
		if (old && !old->orphan)
			emit(s, old, d->head_ts, 0);
		if (old)
			pending_free(old);
	}
	struct pending *p = pending_new();
	if (!p) {
		conn__count(s->conn, CONN_LOST_NO_MEMORY, 1);
		d->st = S_DESYNC;
		return;
	}
	struct request *r = &p->rec;
	request__init(r, s->requests_ingress ? REQ_HTTP_SERVER : REQ_HTTP_CLIENT);
	r->start_ns = d->head_ts;
	r->tid = d->head_tid;
	r->request_seq = d->head_seq;
	r->request_seq_valid = true;
	r->http_version = (uint8_t)h->version;
	r->method = request__store(r, h->method.p, h->method.len);
	r->method_known = http1__method_known(h->method.p, h->method.len);
	store_target(r, h->target.p, h->target.len, cfg->max_path_length, target_cut);
	store_slice(r, &r->host, h->host, 255);
	store_slice(r, &r->user_agent, h->user_agent, 255);
	store_slice(r, &r->content_type, h->content_type, 127);
	store_slice(r, &r->traceparent, h->traceparent, 63);
	store_slice(r, &r->tracestate, h->tracestate, 512);
	p->h2c = h->upgrade_h2c;
	fifo_push(s, p);
	conn__start(s->conn, r);

	d->body_bytes = 0;
	if (cut) {
		/* The rest of the head was not captured: assume no body and resync when
		 * the other side answers. */
		r->has_request_body_size = false;
		d->st = S_UNTIL_FLIP;
		return;
	}
	r->has_request_body_size = true;
	if (h->chunked) {
		http1__chunked_init(&d->chunked);
		d->st = S_BODY_CHUNKED;
		s->receiving = p;
	} else if (h->content_length > 0 && !h->has_transfer_encoding) {
		d->remaining = (uint64_t)h->content_length;
		d->st = S_BODY_LEN;
		s->receiving = p;
	} else {
		d->st = S_IDLE;
	}
}

static void request_body_done(struct http1_session *s)
{
	if (s->receiving) {
		s->receiving->rec.request_body_bytes = s->req.body_bytes;
		s->receiving = NULL;
	}
	s->req.st = S_IDLE;
}

static void on_response_head(struct http1_session *s, const struct http1_head *h, uint64_t ts)
{
	struct dir_state *d = &s->resp;
	struct pending *p = s->head;
	if (p && p->has_response)
		p = NULL; /* cannot happen: the previous response is still open */
	bool interim = h->status >= 100 && h->status < 200 && h->status != 101;
	if (!p && interim) {
		d->st = S_IDLE;
		return;
	}
	if (!p) {
		/* A response to a request we did not see (the connection predates
		 * rastro, or events were lost): follow its framing, report nothing. */
		/* Allocated when needed, not kept in every session: a record is
		 * 4 KiB, and idle keep-alive connections are many. */
		p = pending_new();
		if (!p) {
			conn__count(s->conn, CONN_LOST_NO_MEMORY, 1);
			d->st = S_DESYNC;
			return;
		}
		memset(&p->rec, 0, offsetof(struct request, arena));
		p->orphan = true;
		fifo_push(s, p);
	}
	if (interim) {
		d->st = S_IDLE; /* interim (100 Continue, 103 Early Hints): keep waiting */
		return;
	}
	p->has_response = true;
	p->rec.status = h->status;
	d->body_bytes = 0;
	const char *method = request__str(&p->rec, p->rec.method);
	if (h->status == 101) {
		/* The connection now speaks another protocol (WebSocket, h2c). */
		if (p->h2c && !p->orphan) {
			/* h2c: the request is HTTP/2 stream 1, answered in HTTP/2. */
			fifo_pop(s);
			s->h2c = http2__open_upgraded(s->conn, &p->rec,
						      s->requests_ingress ? RASTRO_DIR_INGRESS
									  : RASTRO_DIR_EGRESS);
			if (!s->h2c)
				conn__count(s->conn, CONN_LOST_NO_MEMORY, 1);
			pending_free(p);
			s->upgraded = true;
			return;
		}
		response_done(s, ts);
		s->upgraded = true;
		conn__ignore_rest(s->conn);
		return;
	}
	if (http1__response_has_no_body(method, p->rec.method.len, h->status)) {
		d->st = S_IDLE;
		response_done(s, ts);
	} else if (h->chunked) {
		http1__chunked_init(&d->chunked);
		d->st = S_BODY_CHUNKED;
	} else if (h->content_length >= 0 && !h->has_transfer_encoding) {
		d->remaining = (uint64_t)h->content_length;
		d->st = S_BODY_LEN;
		if (!d->remaining) {
			d->st = S_IDLE;
			response_done(s, ts);
		}
	} else {
		d->st = S_BODY_EOF;
	}
}

static void on_response_head_cut(struct http1_session *s, const char *buf, size_t len)
{
	/* Only the status line matters when the head was cut. */
	struct pending *p = s->head;
	int status = 0;
	if (len >= 12)
		status = (buf[9] - '0') * 100 + (buf[10] - '0') * 10 + (buf[11] - '0');
	if (!p || p->has_response || status < 100 || status > 999) {
		s->resp.st = S_DESYNC;
		return;
	}
	p->has_response = true;
	p->rec.status = status;
	s->resp.body_bytes = 0;
	s->resp.st = S_UNTIL_FLIP;
}

static bool append(struct dir_state *d, const char *buf, size_t len)
{
	if (d->buf_len + len > MAX_HEAD)
		len = MAX_HEAD - d->buf_len;
	if (d->buf_len + len > d->buf_cap) {
		uint32_t cap = d->buf_cap ? d->buf_cap : 512;
		while (cap < d->buf_len + len)
			cap *= 2;
		char *n = realloc(d->buf, cap);
		if (!n)
			return false;
		d->buf = n;
		d->buf_cap = cap;
	}
	memcpy(d->buf + d->buf_len, buf, len);
	d->buf_len += (uint32_t)len;
	return true;
}

static void drop_buffer(struct dir_state *d)
{
	free(d->buf);
	d->buf = NULL;
	d->buf_len = d->buf_cap = 0;
}

/* A head could not be completed: the bytes after it were not captured, or it
 * grew past MAX_HEAD. Report what the start of it says. */
static void head_cut(struct http1_session *s, bool is_req, const char *buf, size_t len)
{
	if (is_req) {
		struct http1_head h;
		bool target_cut;
		if (!http1__parse_request_line_prefix(buf, len, &h, &target_cut))
			on_request_head(s, &h, true, target_cut);
		else
			s->req.st = S_DESYNC;
	} else {
		on_response_head_cut(s, buf, len);
	}
}

/* Feeds bytes of one direction. */
static void feed(struct http1_session *s, bool is_req, const struct chunk *ch, const char *buf,
		 size_t len)
{
	struct dir_state *d = is_req ? &s->req : &s->resp;
	while (len > 0 && !s->upgraded) {
		switch (d->st) {
		case S_IDLE:
			d->head_ts = ch->ts;
			d->head_tid = ch->tid;
			d->head_seq = ch->seq + (uint32_t)(buf - ch->data);
			d->st = S_HEAD;
			/* fallthrough */
		case S_HEAD: {
			struct http1_head h;
			const char *src = buf;
			size_t src_len = len, old = d->buf_len;
			if (old) {
				if (!append(d, buf, len)) {
					d->st = S_DESYNC;
					drop_buffer(d);
					return;
				}
				src = d->buf;
				src_len = d->buf_len;
			}
			int r = is_req ? http1__parse_request_head(src, src_len, &h)
				       : http1__parse_response_head(src, src_len, &h);
			if (r == HTTP1_ERROR) {
				d->st = S_DESYNC;
				drop_buffer(d);
				conn__count(s->conn, CONN_PARSE_ERRORS, 1);
				return;
			}
			if (r == HTTP1_NEED_MORE) {
				if (!old && !append(d, buf, len)) {
					d->st = S_DESYNC;
					return;
				}
				if (d->buf_len >= MAX_HEAD) {
					head_cut(s, is_req, d->buf, d->buf_len);
					drop_buffer(d);
					if (d->st == S_HEAD)
						d->st = S_DESYNC;
				}
				return;
			}
			size_t used = (size_t)r - old; /* head bytes taken from buf */
			if (is_req)
				on_request_head(s, &h, false, false);
			else
				on_response_head(s, &h, ch->ts);
			drop_buffer(d);
			buf += used;
			len -= used;
			if (s->h2c) { /* HTTP/2 starts right after the 101's head */
				conn__switch_protocol(s->conn, &http2_proto, s->h2c,
						      (uint32_t)(buf - ch->data));
				s->h2c = NULL;
			}
			break;
		}
		case S_BODY_LEN: {
			size_t n = len < d->remaining ? len : (size_t)d->remaining;
			d->remaining -= n;
			d->body_bytes += n;
			buf += n;
			len -= n;
			if (!d->remaining) {
				if (is_req) {
					request_body_done(s);
				} else {
					d->st = S_IDLE;
					response_done(s, ch->ts);
				}
			}
			break;
		}
		case S_BODY_CHUNKED: {
			bool done;
			uint64_t before = d->chunked.payload;
			int64_t n = http1__chunked_feed(&d->chunked, buf, len, &done);
			if (n < 0) {
				d->st = S_DESYNC;
				conn__count(s->conn, CONN_PARSE_ERRORS, 1);
				return;
			}
			d->body_bytes += d->chunked.payload - before;
			buf += n;
			len -= (size_t)n;
			if (done) {
				if (is_req) {
					request_body_done(s);
				} else {
					d->st = S_IDLE;
					response_done(s, ch->ts);
				}
			}
			break;
		}
		case S_BODY_EOF:
		case S_UNTIL_FLIP:
			d->body_bytes += len;
			return;
		case S_DESYNC:
			return;
		}
	}
}

/* n bytes of this direction were moved but not copied. */
static void skip(struct http1_session *s, bool is_req, uint64_t n)
{
	struct dir_state *d = is_req ? &s->req : &s->resp;
	switch (d->st) {
	case S_IDLE:
		/* A new message starts in bytes we cannot see. */
		d->st = S_DESYNC;
		break;
	case S_HEAD:
		head_cut(s, is_req, d->buf, d->buf_len);
		drop_buffer(d);
		if (d->st == S_HEAD)
			d->st = S_DESYNC;
		break;
	case S_BODY_LEN:
		if (n <= d->remaining) {
			d->remaining -= n;
			d->body_bytes += n;
			if (!d->remaining && is_req)
				request_body_done(s);
			else if (!d->remaining)
				d->st = S_IDLE; /* completed by the caller with this chunk's time */
		} else {
			/* The body ended inside the unseen bytes and more followed. */
			d->body_bytes += d->remaining;
			d->remaining = 0;
			d->st = S_UNTIL_FLIP;
		}
		break;
	case S_BODY_CHUNKED: {
		uint64_t before = d->chunked.payload;
		if (http1__chunked_skip(&d->chunked, n)) {
			d->body_bytes += d->chunked.payload - before;
		} else {
			/* A chunk boundary lies in the unseen bytes: the end of the body
			 * is found when the other side speaks or the connection ends. */
			d->body_bytes += n;
			d->st = S_UNTIL_FLIP;
		}
		break;
	}
	case S_BODY_EOF:
	case S_UNTIL_FLIP:
		d->body_bytes += n;
		break;
	case S_DESYNC:
		break;
	}
}

/* The side that was speaking stopped: messages with unknown framing end. */
static void on_flip(struct http1_session *s, bool now_req)
{
	if (now_req) {
		/* The client speaks again: a response of unknown length is over. */
		if (s->resp.st == S_UNTIL_FLIP || s->resp.st == S_BODY_EOF) {
			s->resp.st = S_IDLE;
			response_done(s, s->resp.last_ts);
		}
		if (s->req.st == S_DESYNC || s->req.st == S_UNTIL_FLIP) {
			if (s->req.st == S_UNTIL_FLIP)
				request_body_done(s);
			s->req.st = S_IDLE;
		}
	} else {
		if (s->req.st == S_UNTIL_FLIP)
			request_body_done(s);
		if (s->req.st == S_DESYNC)
			s->req.st = S_IDLE;
		if (s->resp.st == S_DESYNC)
			s->resp.st = S_IDLE;
	}
	/* A head cut short by the turn is junk, unless requests are pending: then
	 * the other side is answering earlier ones and the head is the start of a
	 * pipelined message (nginx reads 1 KiB, answers the requests in it, then
	 * reads the rest of the last one), continued by the next chunk. */
	if (!s->head)
		drop_buffer(now_req ? &s->resp : &s->req);
}

/* Bytes were lost before this chunk: whatever was in flight is unreliable. */
static void on_gap(struct http1_session *s, bool is_req, const struct chunk *ch)
{
	struct dir_state *d = is_req ? &s->req : &s->resp;
	/* Resume at once if this chunk starts a message, else at the next turn. */
	bool starts = ch->captured && (is_req ? http1__looks_like_request(ch->data, ch->captured)
					      : http1__looks_like_response(ch->data, ch->captured));
	drop_buffer(d);
	if (!is_req) {
		/* Responses were lost: they answered the older pending requests, which
		 * are dropped and counted. When this chunk starts a response, the
		 * newest request is kept for it (without pipelining, the usual case,
		 * that is right); otherwise its response was cut: dropped too. */
		uint64_t n = 0;
		while (s->head && (s->head != s->tail || !starts)) {
			struct pending *p = fifo_pop(s);
			if (!p->orphan)
				n++;
			pending_free(p);
		}
		if (s->head && s->head->has_response) {
			struct pending *p = fifo_pop(s);
			if (!p->orphan)
				n++;
			pending_free(p);
		}
		if (n)
			conn__count(s->conn, CONN_LOST_EVENTS, n);
	}
	d->st = starts ? S_IDLE : S_DESYNC;
}

static void http1_data(void *state, struct conn *c, const struct chunk *ch)
{
	struct http1_session *s = state;
	(void)c;
	if (s->upgraded)
		return;
	bool is_req = (ch->dir == RASTRO_DIR_INGRESS) == s->requests_ingress;
	if (s->last_dir >= 0 && s->last_dir != ch->dir)
		on_flip(s, is_req);
	s->last_dir = ch->dir;
	if (ch->gap)
		on_gap(s, is_req, ch);
	struct dir_state *d = is_req ? &s->req : &s->resp;
	feed(s, is_req, ch, ch->data, ch->captured);
	if (ch->bytes > ch->captured && !s->upgraded) {
		skip(s, is_req, ch->bytes - ch->captured);
		/* A response that ended in the unseen bytes ends with this chunk. */
		if (!is_req && d->st == S_IDLE && s->head && s->head->has_response)
			response_done(s, ch->ts);
	}
	d->last_ts = ch->ts;
}

static void http1_close(void *state, struct conn *c, uint64_t ts)
{
	struct http1_session *s = state;
	(void)c;
	/* A response delimited by the connection's end is complete. */
	if (s->head && s->head->has_response &&
	    (s->resp.st == S_BODY_EOF || s->resp.st == S_UNTIL_FLIP || s->upgraded)) {
		s->resp.st = S_IDLE;
		response_done(s, s->resp.last_ts);
	}
	/* Everything else still pending got no (complete) response. */
	struct pending *p;
	while ((p = fifo_pop(s))) {
		if (!p->orphan) {
			if (p->has_response)
				emit(s, p, s->resp.last_ts ? s->resp.last_ts : ts, s->resp.body_bytes);
			else
				emit(s, p, ts, 0);
		}
		pending_free(p);
	}
	s->req.st = s->resp.st = S_IDLE;
}

static void http1_free(void *state)
{
	struct http1_session *s = state;
	struct pending *p;
	while ((p = fifo_pop(s)))
		pending_free(p);
	dir_reset(&s->req);
	dir_reset(&s->resp);
	if (s->h2c)
		http2_proto.free(s->h2c);
	free(s);
}

const struct proto_ops http1_proto = {
	.name = "http1",
	.detect = http1_detect,
	.open = http1_open,
	.data = http1_data,
	.close = http1_close,
	.free = http1_free,
};
