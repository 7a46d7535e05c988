/*
 * HTTP/2 (cleartext: prior knowledge and h2c upgrade) and gRPC over one
 * connection, when the traced process is the server (requests arrive) and
 * when it is the client (requests leave).
 *
 * Each direction has a framer and an HPACK table. A stream is created by the
 * client's request HEADERS and reported when the server ends it (END_STREAM),
 * or either side resets it, or the connection ends.
 *
 * Timing: a stream starts when the syscall that moved the first byte of its
 * request HEADERS returns, and ends when the syscall that moved the last byte
 * of its last frame returns (streaming RPCs: first frame to last frame).
 *
 * Connections seen from the middle (they predate rastro) are picked up at a
 * syscall whose bytes start with plausible frames. Their HPACK tables hold
 * entries never seen inserted: streams are created only from blocks whose
 * request pseudo-headers decoded, and whatever did not decode is reported as
 * unresolved, never guessed.
 */
#include <stdlib.h>
#include <string.h>

#include "common/u64map.h"
#include "protocols/hpack.h"
#include "protocols/http1.h"
#include "protocols/http2_frame.h"
#include "protocols/proto.h"

/* Concurrent streams followed per connection (SETTINGS_MAX_CONCURRENT_STREAMS
 * is commonly 100 to 256); beyond, the oldest is reported early. */
#define MAX_STREAMS 256
/* A field block (HEADERS + CONTINUATION) longer than this is cut. */
#define MAX_BLOCK (64 * 1024)

struct h2_stream {
	struct h2_stream *next_free;
	uint32_t id;
	bool req_ended;	   /* END_STREAM from the client */
	bool resp_headers; /* final (non-1xx) response headers arrived */
	bool resp_ended;
	bool grpc;	   /* content-type application/grpc* */
	bool kind_unknown; /* neither content-type decoded */
	bool damaged[2];   /* frames of this direction may have been lost, none seen since */
	bool lost[2];	   /* frames of this direction may have been lost at some point */
	uint64_t last_ts;  /* the latest frame of the stream */
	int64_t content_length[2]; /* per direction; -1 = not sent */
	uint32_t rst_code;
	bool rst;
	struct request rec;
};

struct h2_dir {
	struct http2_framer fr;
	struct hpack_table hpack;
	/* the syscall that moved the first byte of the current frame */
	uint64_t frame_ts;
	uint32_t frame_tid, frame_seq;
	/* field block in progress */
	bool in_block, block_end_stream;
	bool block_cut; /* some of the block was not seen: decode the prefix only */
	bool block_gap; /* bytes are missing inside it: append no more fragments */
	uint8_t block_type;
	uint32_t block_stream;
	uint64_t block_ts;
	uint32_t block_tid, block_seq;
	uint8_t *block;
	uint32_t block_len, block_cap;
	uint32_t blocks; /* field blocks decoded */
	/* the last complete frame, for what follows it in bytes not copied */
	uint8_t last_type;
	bool last_end_stream;
	uint32_t last_stream, last_len;
};

struct http2_session {
	struct conn *conn;
	int requests_dir;    /* RASTRO_DIR_* the requests flow in; -1 not known yet */
	bool from_start;     /* the connection was seen from its first byte */
	uint32_t max_stream; /* highest client stream id seen */
	struct h2_dir dir[2];
	struct u64map streams;
	uint32_t nstreams;
};

/* Huffman-decoded strings of the block being decoded; the agent runs the
 * parsers on one thread. */
static char scratch[16 * 1024];

static struct h2_stream *free_list;
static uint32_t free_count;

static struct h2_stream *stream_alloc(void)
{
	struct h2_stream *st = free_list;
	if (st) {
		free_list = st->next_free;
		free_count--;
	} else {
		st = malloc(sizeof(*st));
		if (!st)
			return NULL;
	}
	memset(st, 0, offsetof(struct h2_stream, rec));
	return st;
}

static void stream_release(struct h2_stream *st)
{
	if (free_count >= 256) {
		free(st);
		return;
	}
	st->next_free = free_list;
	free_list = st;
	free_count++;
}

static bool is_server(const struct http2_session *s)
{
	return s->requests_dir == RASTRO_DIR_INGRESS;
}

/* ---- fields of one block */

struct h2_fields {
	char method[32], path[2048], authority[256], user_agent[256], content_type[128];
	char traceparent[64], tracestate[512];
	uint16_t method_len, path_len, authority_len, user_agent_len, content_type_len;
	uint16_t traceparent_len, tracestate_len;
	bool path_truncated;
	bool request_pseudo;	/* a request pseudo-header decoded */
	int64_t content_length; /* -1 = absent */
	int status;		/* :status; 0 = absent */
	int grpc_status;	/* -1 = absent */
	uint32_t unknown;	/* fields whose name did not decode */
};

static void copy_value(char *dst, size_t cap, uint16_t *len, const struct hpack_field *f,
		       bool *truncated)
{
	size_t n = f->value_len < cap ? f->value_len : cap;
	memcpy(dst, f->value, n);
	*len = (uint16_t)n;
	if (truncated)
		*truncated = n < f->value_len || (f->flags & HPACK_F_TRUNCATED);
}

static int parse_small_int(const char *p, uint32_t len)
{
	if (!len || len > 4)
		return -1;
	int v = 0;
	for (uint32_t i = 0; i < len; i++) {
		if (p[i] < '0' || p[i] > '9')
			return -1;
		v = v * 10 + (p[i] - '0');
	}
	return v;
}

#define NAME_IS(f, lit)                                                                            \
	((f)->name_len == sizeof(lit) - 1 && !memcmp((f)->name, lit, sizeof(lit) - 1))

static void on_field(void *ctx, const struct hpack_field *f)
{
	struct h2_fields *out = ctx;
	if (f->flags & HPACK_F_NAME_UNKNOWN) {
		out->unknown++;
		return;
	}
	if (!f->name_len)
		return;
	if (f->name[0] == ':') {
		if (NAME_IS(f, ":method")) {
			copy_value(out->method, sizeof(out->method), &out->method_len, f, NULL);
			out->request_pseudo = true;
		} else if (NAME_IS(f, ":path")) {
			copy_value(out->path, sizeof(out->path), &out->path_len, f,
				   &out->path_truncated);
			out->request_pseudo = true;
		} else if (NAME_IS(f, ":authority")) {
			copy_value(out->authority, sizeof(out->authority), &out->authority_len, f,
				   NULL);
			out->request_pseudo = true;
		} else if (NAME_IS(f, ":scheme") || NAME_IS(f, ":protocol")) {
			out->request_pseudo = true;
		} else if (NAME_IS(f, ":status")) {
			int v = parse_small_int(f->value, f->value_len);
			out->status = v >= 100 && v <= 999 ? v : 0;
		}
		return;
	}
	switch (f->name_len) {
	case 4:
		if (NAME_IS(f, "host") && !out->authority_len)
			copy_value(out->authority, sizeof(out->authority), &out->authority_len, f,
				   NULL);
		break;
	case 10:
		if (NAME_IS(f, "user-agent"))
			copy_value(out->user_agent, sizeof(out->user_agent), &out->user_agent_len,
				   f, NULL);
		else if (NAME_IS(f, "tracestate"))
			copy_value(out->tracestate, sizeof(out->tracestate), &out->tracestate_len,
				   f, NULL);
		break;
	case 11:
		if (NAME_IS(f, "traceparent"))
			copy_value(out->traceparent, sizeof(out->traceparent),
				   &out->traceparent_len, f, NULL);
		else if (NAME_IS(f, "grpc-status"))
			out->grpc_status = parse_small_int(f->value, f->value_len);
		break;
	case 12:
		if (NAME_IS(f, "content-type"))
			copy_value(out->content_type, sizeof(out->content_type),
				   &out->content_type_len, f, NULL);
		break;
	case 14:
		if (NAME_IS(f, "content-length") && f->value_len && f->value_len <= 15) {
			int64_t v = 0;
			for (uint32_t i = 0; i < f->value_len && v >= 0; i++)
				v = f->value[i] >= '0' && f->value[i] <= '9'
					? v * 10 + (f->value[i] - '0')
					: -1;
			out->content_length = v;
		}
		break;
	}
}

static bool is_grpc_type(const char *ct, size_t len)
{
	return len >= 16 && !memcmp(ct, "application/grpc", 16) &&
	       (len == 16 || ct[16] == '+' || ct[16] == ';');
}

/* ---- streams */

static void stream_forget(struct http2_session *s, struct h2_stream *st)
{
	u64map__remove(&s->streams, st->id);
	s->nstreams--;
	stream_release(st);
}

/* gRPC status a client library reports for a stream reset with this HTTP/2
 * error code (gRPC's PROTOCOL-HTTP2.md, "Errors"). */
static int grpc_status_of_reset(uint32_t code)
{
	switch (code) {
	case 0x7:	   /* REFUSED_STREAM */
		return 14; /* UNAVAILABLE */
	case 0x8:	   /* CANCEL */
		return 1;  /* CANCELLED */
	case 0xb:	   /* ENHANCE_YOUR_CALM */
		return 8;  /* RESOURCE_EXHAUSTED */
	case 0xc:	   /* INADEQUATE_SECURITY */
		return 7;  /* PERMISSION_DENIED */
	default:
		return 13; /* INTERNAL */
	}
}

/* Reports a stream that ended at `end` and forgets it. */
static void stream_emit(struct http2_session *s, struct h2_stream *st, uint64_t end)
{
	struct request *r = &st->rec;
	bool server = is_server(s);
	int resp_dir = !s->requests_dir;
	r->end_ns = end;
	r->http_version = 20;
	if (st->lost[resp_dir]) {
		/* Frames of the response may be among the bytes lost: what was not
		 * seen is unknown, not absent. */
		if (!st->resp_headers)
			r->unresolved |= REQ_UNRESOLVED_STATUS;
		if (r->grpc_status < 0)
			r->unresolved |= REQ_UNRESOLVED_RPC_STATUS;
	}
	if (st->grpc) {
		r->kind = server ? REQ_GRPC_SERVER : REQ_GRPC_CLIENT;
		const char *path = request__str(r, r->path);
		if (r->path.len > 1 && path[0] == '/')
			r->rpc_method = request__store(r, path + 1, r->path.len - 1u);
		if (r->grpc_status < 0 && st->rst)
			r->grpc_status = grpc_status_of_reset(st->rst_code);
		if (r->grpc_status < 0 && !(r->unresolved & REQ_UNRESOLVED_RPC_STATUS) &&
		    !request__has(r->error_type))
			r->error_type = request__store(r, st->rst ? "stream_reset" : "no_response",
						       st->rst ? 12 : 11);
	} else {
		r->kind = server ? REQ_HTTP_SERVER : REQ_HTTP_CLIENT;
		if (st->kind_unknown)
			r->unresolved |= REQ_UNRESOLVED_KIND;
		if (!r->status && !(r->unresolved & REQ_UNRESOLVED_STATUS) &&
		    !request__has(r->error_type))
			r->error_type = request__store(r, st->rst ? "stream_reset" : "no_response",
						       st->rst ? 12 : 11);
	}
	r->has_response_body_size = r->status != 0 && !st->lost[resp_dir];
	if (st->lost[s->requests_dir])
		r->has_request_body_size = false;
	conn__emit(s->conn, r);
	stream_forget(s, st);
}

static int cmp_stream(const void *a, const void *b)
{
	uint32_t x = (*(struct h2_stream *const *)a)->id, y = (*(struct h2_stream *const *)b)->id;
	return x < y ? -1 : x > y;
}

/* The open streams, oldest (lowest id) first; returns how many. */
static uint32_t open_streams(const struct http2_session *s, struct h2_stream **out)
{
	uint32_t n = 0;
	for (uint32_t i = 0; i < s->streams.capacity && n < MAX_STREAMS; i++)
		if (s->streams.keys[i])
			out[n++] = s->streams.values[i];
	qsort(out, n, sizeof(*out), cmp_stream);
	return n;
}

/* Stores :path as url.path and url.query. */
static void store_path(struct request *r, const char *p, size_t len, size_t max_path,
		       bool truncated)
{
	const char *q = memchr(p, '?', len);
	size_t path_len = q ? (size_t)(q - p) : len;
	r->path_truncated = truncated && !q;
	if (path_len > max_path) {
		path_len = max_path;
		r->path_truncated = true;
	}
	r->path = request__store(r, p, path_len);
	if (q && len > path_len + 1)
		r->query = request__store(r, q + 1, len - path_len - 1);
}

static struct h2_stream *stream_open(struct http2_session *s, uint32_t id, uint64_t ts,
				     uint32_t tid, uint32_t seq)
{
	if (s->nstreams >= MAX_STREAMS) {
		/* Make room: a stream whose end may have been lost goes first (its
		 * end is unknown: dropped); else the oldest is reported unanswered. */
		struct h2_stream *all[MAX_STREAMS];
		uint32_t n = open_streams(s, all), i = 0;
		while (i < n && !all[i]->damaged[0] && !all[i]->damaged[1])
			i++;
		if (i < n) {
			conn__count(s->conn, CONN_LOST_EVENTS, 1);
			stream_forget(s, all[i]);
		} else {
			conn__count(s->conn, CONN_LOST_PIPELINE_OVERFLOW, 1);
			stream_emit(s, all[0], ts);
		}
	}
	struct h2_stream *st = stream_alloc();
	if (!st || u64map__put(&s->streams, id, st)) {
		if (st)
			stream_release(st);
		conn__count(s->conn, CONN_LOST_NO_MEMORY, 1);
		return NULL;
	}
	s->nstreams++;
	st->id = id;
	request__init(&st->rec, is_server(s) ? REQ_HTTP_SERVER : REQ_HTTP_CLIENT);
	st->rec.start_ns = ts;
	st->rec.tid = tid;
	st->rec.request_seq = seq;
	st->rec.request_seq_valid = true;
	st->rec.http_version = 20;
	st->last_ts = ts;
	st->content_length[0] = st->content_length[1] = -1;
	return st;
}

static void apply_content_type(struct h2_stream *st, const struct h2_fields *f, bool cut)
{
	if (f->content_type_len) {
		st->grpc = is_grpc_type(f->content_type, f->content_type_len);
		st->kind_unknown = false;
	} else if (f->unknown || cut) {
		st->kind_unknown = true;
	}
}

static void on_request_block(struct http2_session *s, struct h2_dir *d, const struct h2_fields *f,
			     bool cut)
{
	uint32_t id = d->block_stream;
	struct h2_stream *st = u64map__get(&s->streams, id);
	if (st) { /* trailers of a request */
		st->damaged[s->requests_dir] = false;
		if (d->block_end_stream)
			st->req_ended = true;
		return;
	}
	/* A block without a request pseudo-header on a stream we do not follow
	 * is the trailers of a stream that began before we looked. */
	bool fresh = s->from_start && id > s->max_stream && id % 2 == 1;
	if ((!f->request_pseudo && !fresh) || id <= s->max_stream)
		return;
	s->max_stream = id;
	st = stream_open(s, id, d->block_ts, d->block_tid, d->block_seq);
	if (!st)
		return;
	struct request *r = &st->rec;
	const struct rastro_config *cfg = conn__config(s->conn);
	bool unsure = f->unknown || cut;
	if (f->method_len) {
		r->method = request__store(r, f->method, f->method_len);
		r->method_known = http1__method_known(f->method, f->method_len);
	} else if (unsure) {
		r->unresolved |= REQ_UNRESOLVED_METHOD;
	}
	if (f->path_len)
		store_path(r, f->path, f->path_len, cfg->max_path_length, f->path_truncated);
	else if (unsure)
		r->unresolved |= REQ_UNRESOLVED_PATH;
	if (f->authority_len)
		r->host = request__store(r, f->authority, f->authority_len);
	if (f->user_agent_len)
		r->user_agent = request__store(r, f->user_agent, f->user_agent_len);
	if (f->content_type_len)
		r->content_type = request__store(r, f->content_type, f->content_type_len);
	if (f->traceparent_len)
		r->traceparent = request__store(r, f->traceparent, f->traceparent_len);
	if (f->tracestate_len)
		r->tracestate = request__store(r, f->tracestate, f->tracestate_len);
	r->has_request_body_size = true;
	st->content_length[s->requests_dir] = f->content_length;
	apply_content_type(st, f, cut);
	if (st->grpc)
		r->kind = is_server(s) ? REQ_GRPC_SERVER : REQ_GRPC_CLIENT;
	st->req_ended = d->block_end_stream;
	conn__start(s->conn, r);
}

static void on_response_block(struct http2_session *s, struct h2_dir *d, const struct h2_fields *f,
			      bool cut, uint64_t ts)
{
	uint32_t id = d->block_stream;
	struct h2_stream *st = u64map__get(&s->streams, id);
	if (!st) {
		/* A stream that began before we looked, or a pushed one; or a
		 * request whose HEADERS were among bytes lost or not copied (a
		 * client stream newer than any seen, while streams were followed):
		 * a request lost, counted once. */
		if (id % 2 == 1 && id > s->max_stream && (s->from_start || s->max_stream)) {
			s->max_stream = id;
			conn__count(s->conn, CONN_LOST_EVENTS, 1);
		}
		return;
	}
	int resp_dir = !s->requests_dir;
	struct request *r = &st->rec;
	bool unsure = f->unknown || cut;
	st->damaged[resp_dir] = false;
	st->last_ts = ts;
	if (!st->resp_headers) {
		if (f->status >= 100 && f->status < 200 && !d->block_end_stream)
			return; /* interim response (100, 103) */
		if (f->status) {
			r->status = f->status;
			r->unresolved &= (uint8_t)~REQ_UNRESOLVED_STATUS;
		} else if (unsure) {
			r->unresolved |= REQ_UNRESOLVED_STATUS;
		}
		st->resp_headers = true;
		st->content_length[resp_dir] = f->content_length;
		if (st->kind_unknown || !request__has(r->content_type))
			apply_content_type(st, f, cut);
	}
	if (f->grpc_status >= 0) {
		/* grpc-status is gRPC's own: it says so when no content-type decoded. */
		if (st->kind_unknown && !st->grpc)
			st->grpc = true;
		st->kind_unknown = false;
		r->grpc_status = f->grpc_status;
		r->unresolved &= (uint8_t)~REQ_UNRESOLVED_RPC_STATUS;
	} else if (d->block_end_stream && unsure) {
		r->unresolved |= REQ_UNRESOLVED_RPC_STATUS;
	}
	if (d->block_end_stream) {
		st->resp_ended = true;
		stream_emit(s, st, ts);
	}
}

/* A complete field block (HEADERS or PUSH_PROMISE, with its CONTINUATIONs). */
static void on_block(struct http2_session *s, int dir, const uint8_t *block, uint32_t len, bool cut,
		     uint64_t ts)
{
	struct h2_dir *d = &s->dir[dir];
	struct h2_fields f;
	f.method_len = f.path_len = f.authority_len = f.user_agent_len = f.content_type_len = 0;
	f.traceparent_len = f.tracestate_len = 0;
	f.path_truncated = f.request_pseudo = false;
	f.status = 0;
	f.content_length = -1;
	f.grpc_status = -1;
	f.unknown = 0;
	int n = hpack__decode(&d->hpack, block, len, cut, scratch, sizeof(scratch), on_field, &f);
	d->blocks++;
	if (n == HPACK_ERROR) {
		conn__count(s->conn, CONN_PARSE_ERRORS, 1);
		cut = true;
	} else if (n == HPACK_INCOMPLETE) {
		cut = true;
	}
	if (d->block_type == HTTP2_PUSH_PROMISE)
		return; /* decoded only to keep the table in step */
	if (s->requests_dir < 0) {
		/* Seen from the middle without knowing who is who: the block says. */
		if (f.request_pseudo)
			s->requests_dir = dir;
		else if (f.status)
			s->requests_dir = !dir;
		else
			return;
	}
	if (dir == s->requests_dir)
		on_request_block(s, d, &f, cut);
	else
		on_response_block(s, d, &f, cut, ts);
}

/* ---- frames */

static void block_abort(struct h2_dir *d)
{
	d->in_block = false;
	d->block_cut = d->block_gap = false;
	d->block_len = 0;
	if (d->block_cap > 16 * 1024) {
		free(d->block);
		d->block = NULL;
		d->block_cap = 0;
	}
}

static bool block_append(struct h2_dir *d, const uint8_t *p, uint32_t n)
{
	if (d->block_len + n > MAX_BLOCK) {
		n = MAX_BLOCK - d->block_len;
		d->block_cut = true;
	}
	if (d->block_len + n > d->block_cap) {
		uint32_t cap = d->block_cap ? d->block_cap : 1024;
		while (cap < d->block_len + n)
			cap *= 2;
		uint8_t *b = realloc(d->block, cap);
		if (!b)
			return false;
		d->block = b;
		d->block_cap = cap;
	}
	memcpy(d->block + d->block_len, p, n);
	d->block_len += n;
	return true;
}

/* This direction lost bytes: its table and any block in progress are
 * unreliable, and streams may have lost frames. */
static void on_loss(struct http2_session *s, int dir)
{
	struct h2_dir *d = &s->dir[dir];
	hpack__lost(&d->hpack);
	block_abort(d);
	for (uint32_t i = 0; i < s->streams.capacity; i++) {
		if (!s->streams.keys[i])
			continue;
		struct h2_stream *st = s->streams.values[i];
		bool ended = dir == s->requests_dir ? st->req_ended : st->resp_ended;
		if (!ended)
			st->damaged[dir] = st->lost[dir] = true;
	}
}

static void on_headers_frame(struct http2_session *s, int dir, const struct http2_frame *fr,
			     const struct chunk *ch)
{
	struct h2_dir *d = &s->dir[dir];
	const uint8_t *frag;
	uint32_t len;
	bool cut;
	if (fr->h.type == HTTP2_CONTINUATION) {
		if (!d->in_block || fr->h.stream_id != d->block_stream) {
			/* The block it continues is lost (or the peer broke the rules). */
			conn__count(s->conn, CONN_PARSE_ERRORS, 1);
			hpack__lost(&d->hpack);
			block_abort(d);
			return;
		}
	} else {
		if (d->in_block) { /* a block never finished: its table updates are lost */
			conn__count(s->conn, CONN_PARSE_ERRORS, 1);
			hpack__lost(&d->hpack);
		}
		block_abort(d);
		d->in_block = true;
		d->block_type = fr->h.type;
		d->block_stream = fr->h.stream_id;
		d->block_end_stream =
		    fr->h.type == HTTP2_HEADERS && (fr->h.flags & HTTP2_F_END_STREAM);
		d->block_ts = d->frame_ts;
		d->block_tid = d->frame_tid;
		d->block_seq = d->frame_seq;
	}
	if (!http2__field_fragment(fr, &frag, &len, &cut)) {
		conn__count(s->conn, CONN_PARSE_ERRORS, 1);
		cut = true;
		len = 0;
	}
	bool end = fr->h.flags & HTTP2_F_END_HEADERS;
	if (end && !d->block_len && !d->block_gap) { /* the usual case: one frame, no copy */
		on_block(s, dir, frag, len, cut, ch->ts);
		block_abort(d);
		return;
	}
	if (len && !d->block_gap && !block_append(d, frag, len)) {
		conn__count(s->conn, CONN_LOST_NO_MEMORY, 1);
		d->block_gap = d->block_cut = true;
	}
	if (cut)
		d->block_gap = d->block_cut = true;
	if (end) {
		on_block(s, dir, d->block, d->block_len, d->block_cut, ch->ts);
		block_abort(d);
	}
}

static void on_frame(struct http2_session *s, int dir, const struct http2_frame *fr,
		     const struct chunk *ch)
{
	struct h2_dir *d = &s->dir[dir];
	if (d->in_block && fr->h.type != HTTP2_CONTINUATION) {
		/* RFC 9113 6.10: nothing may come between a block's frames. */
		conn__count(s->conn, CONN_PARSE_ERRORS, 1);
		hpack__lost(&d->hpack);
		block_abort(d);
	}
	switch (fr->h.type) {
	case HTTP2_HEADERS:
	case HTTP2_PUSH_PROMISE:
	case HTTP2_CONTINUATION:
		on_headers_frame(s, dir, fr, ch);
		return;
	case HTTP2_DATA: {
		struct h2_stream *st = u64map__get(&s->streams, fr->h.stream_id);
		if (!st)
			return;
		bool known;
		uint32_t n = http2__data_length(fr, &known);
		st->damaged[dir] = false;
		st->last_ts = ch->ts;
		if (dir == s->requests_dir) {
			st->rec.request_body_bytes += n;
			if (fr->h.flags & HTTP2_F_END_STREAM)
				st->req_ended = true;
		} else {
			st->rec.response_body_bytes += n;
			if (fr->h.flags & HTTP2_F_END_STREAM) {
				st->resp_ended = true;
				stream_emit(s, st, ch->ts);
			}
		}
		return;
	}
	case HTTP2_RST_STREAM: {
		struct h2_stream *st = u64map__get(&s->streams, fr->h.stream_id);
		if (!st)
			return;
		st->rst = true;
		st->rst_code = fr->payload_len >= 4 ? http2__u32(fr->payload) : 0;
		stream_emit(s, st, ch->ts);
		return;
	}
	case HTTP2_GOAWAY: {
		/* Streams the sender never processed are retried elsewhere by the
		 * client: they were not requests served here. */
		if (fr->payload_len < 4 || dir == s->requests_dir || s->requests_dir < 0)
			return;
		uint32_t last = http2__u32(fr->payload) & 0x7fffffffu;
		struct h2_stream *all[MAX_STREAMS];
		uint32_t n = open_streams(s, all);
		for (uint32_t i = 0; i < n; i++)
			if (all[i]->id > last && !all[i]->resp_headers)
				stream_forget(s, all[i]);
		return;
	}
	default:
		return;
	}
}

/* ---- proto_ops */

static enum proto_verdict http2_detect(const struct conn *c, const struct chunk *ch)
{
	(void)c;
	if (!ch->captured)
		return PROTO_NO;
	int m = http2__match_preface(ch->data, ch->captured);
	if (m == 1)
		return PROTO_YES;
	if (m == 0) /* "PRI" is no HTTP/1 method anyone uses: it is the preface */
		return ch->captured >= 3 ? PROTO_YES : PROTO_MAYBE;
	/* A connection seen from its middle (it predates rastro). */
	if (http2__looks_like_frames((const uint8_t *)ch->data, ch->captured, ch->bytes))
		return PROTO_YES;
	return PROTO_NO;
}

static struct http2_session *session_new(struct conn *c)
{
	struct http2_session *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->conn = c;
	s->requests_dir = -1;
	u64map__init(&s->streams);
	return s;
}

static void *http2_open(struct conn *c, const struct chunk *first)
{
	struct http2_session *s = session_new(c);
	if (!s)
		return NULL;
	int req = first->dir, resp = !first->dir;
	if (http2__match_preface(first->data, first->captured) >= 0) {
		/* The client's preface: everything from the start is seen. */
		s->from_start = true;
		s->requests_dir = req;
		http2_framer__init(&s->dir[req].fr, true);
		http2_framer__init(&s->dir[resp].fr, false);
		hpack__init(&s->dir[req].hpack, true);
		hpack__init(&s->dir[resp].hpack, true);
		return s;
	}
	/* From the middle: this direction is aligned at this chunk, the other
	 * one will be at its first chunk that starts with frames. */
	uint8_t role = conn__role_hint(c);
	if (role == RASTRO_ROLE_SERVER)
		s->requests_dir = RASTRO_DIR_INGRESS;
	else if (role == RASTRO_ROLE_CLIENT)
		s->requests_dir = RASTRO_DIR_EGRESS;
	for (int i = 0; i < 2; i++) {
		http2_framer__init(&s->dir[i].fr, false);
		hpack__init(&s->dir[i].hpack, false);
	}
	s->dir[resp].fr.lost = true;
	return s;
}

void *http2__open_upgraded(struct conn *c, const struct request *upgrade, int requests_dir)
{
	struct http2_session *s = session_new(c);
	if (!s)
		return NULL;
	int req = requests_dir, resp = !requests_dir;
	s->from_start = true;
	s->requests_dir = req;
	http2_framer__init(&s->dir[req].fr, true);
	http2_framer__init(&s->dir[resp].fr, false);
	hpack__init(&s->dir[req].hpack, true);
	hpack__init(&s->dir[resp].hpack, true);
	/* RFC 9113 3.2 (RFC 7540 3.2): the request that asked for the upgrade is
	 * stream 1, half-closed; its response comes as HTTP/2. */
	struct h2_stream *st = stream_alloc();
	if (st && !u64map__put(&s->streams, 1, st)) {
		s->nstreams = 1;
		s->max_stream = 1;
		st->id = 1;
		st->rec = *upgrade;
		st->rec.http_version = 20;
		st->rec.status = 0; /* the 101: its real response is stream 1's HEADERS */
		st->rec.has_response_body_size = false;
		st->rec.response_body_bytes = 0;
		st->req_ended = true;
		st->last_ts = upgrade->start_ns;
		st->content_length[0] = st->content_length[1] = -1;
	} else {
		if (st)
			stream_release(st);
		conn__count(c, CONN_LOST_NO_MEMORY, 1);
	}
	return s;
}

static void frame_done(struct http2_session *s, int dir, const struct http2_frame *fr,
		       const struct chunk *ch)
{
	struct h2_dir *d = &s->dir[dir];
	d->last_type = fr->h.type;
	d->last_end_stream = fr->h.flags & HTTP2_F_END_STREAM;
	d->last_stream = fr->h.stream_id;
	d->last_len = fr->h.length;
	on_frame(s, dir, fr, ch);
}

/* Bytes not copied follow a DATA frame of a stream that declared its
 * content-length. Senders write a body as a run of equal-sized DATA frames,
 * so when the unseen bytes are exactly the rest of the body in such frames,
 * the stream ended with this syscall; when they are exactly a whole number
 * of such frames, the body goes on and the next syscall starts with a frame.
 * Anything else is a loss. Returns whether the bytes were accounted for. */
static bool data_run(struct http2_session *s, int dir, uint64_t unseen, const struct chunk *ch)
{
	struct h2_dir *d = &s->dir[dir];
	if (d->last_type != HTTP2_DATA || d->last_end_stream || !d->last_len || s->requests_dir < 0)
		return false;
	struct h2_stream *st = u64map__get(&s->streams, d->last_stream);
	if (!st || st->content_length[dir] < 0)
		return false;
	bool req = dir == s->requests_dir;
	uint64_t *body = req ? &st->rec.request_body_bytes : &st->rec.response_body_bytes;
	if ((uint64_t)st->content_length[dir] <= *body)
		return false;
	uint64_t rest = (uint64_t)st->content_length[dir] - *body, size = d->last_len;
	uint64_t frame = size + HTTP2_FRAME_HEADER_LEN;
	uint64_t needed = rest + HTTP2_FRAME_HEADER_LEN * ((rest + size - 1) / size);
	if (unseen == needed) {
		*body += rest;
		st->last_ts = ch->ts;
		d->last_end_stream = true;
		if (req) {
			st->req_ended = true;
		} else {
			st->resp_ended = true;
			stream_emit(s, st, ch->ts);
		}
		return true;
	}
	if (unseen < needed && unseen % frame == 0) {
		*body += unseen / frame * size;
		st->last_ts = ch->ts;
		return true;
	}
	return false;
}

static void http2_data(void *state, struct conn *c, const struct chunk *ch)
{
	struct http2_session *s = state;
	(void)c;
	int dir = ch->dir;
	struct h2_dir *d = &s->dir[dir];
	if (ch->gap && !d->fr.lost) {
		d->fr.lost = true;
		on_loss(s, dir);
	}
	if (d->fr.lost && !s->from_start && ch->captured >= HTTP2_PREFACE_LEN &&
	    http2__match_preface(ch->data, ch->captured) == 1) {
		/* The client's preface after all: the server spoke first (servers
		 * send SETTINGS on accept), so this is the connection's start. */
		struct h2_dir *other = &s->dir[!dir];
		s->from_start = true;
		s->requests_dir = dir;
		http2_framer__resync(&d->fr);
		d->fr.preface_left = HTTP2_PREFACE_LEN;
		hpack__free(&d->hpack);
		hpack__init(&d->hpack, true);
		if (!other->fr.lost && !other->blocks)
			other->hpack.complete = true;
	} else if (d->fr.lost) {
		/* Resume at a syscall whose bytes start with frames (stricter while
		 * neither end was seen from the start: that may not be HTTP/2 yet). */
		const uint8_t *p = (const uint8_t *)ch->data;
		if (!ch->captured || !(s->requests_dir >= 0 || s->nstreams
					   ? http2__starts_with_frames(p, ch->captured, ch->bytes)
					   : http2__looks_like_frames(p, ch->captured, ch->bytes)))
			return;
		http2_framer__resync(&d->fr);
		hpack__lost(&d->hpack);
		block_abort(d);
	}
	const uint8_t *p = (const uint8_t *)ch->data;
	size_t off = 0;
	while (off < ch->captured && !d->fr.lost) {
		if (http2_framer__at_boundary(&d->fr)) {
			d->frame_ts = ch->ts;
			d->frame_tid = ch->tid;
			d->frame_seq = ch->seq + (uint32_t)off;
		}
		struct http2_frame fr;
		bool have;
		int64_t n = http2_framer__feed(&d->fr, p + off, ch->captured - off, &fr, &have);
		if (n < 0) {
			conn__count(s->conn, CONN_PARSE_ERRORS, 1);
			break;
		}
		off += (size_t)n;
		if (have)
			frame_done(s, dir, &fr, ch);
	}
	if (ch->bytes > ch->captured && !d->fr.lost && !d->fr.hdr_len) {
		uint64_t unseen = ch->bytes - ch->captured;
		uint64_t rem = d->fr.in_payload ? d->fr.cur.length - d->fr.done : 0;
		struct http2_frame fr;
		if (http2_framer__skip(&d->fr, unseen, &fr))
			frame_done(s, dir, &fr, ch);
		if (d->fr.lost && data_run(s, dir, unseen - rem, ch))
			http2_framer__resync(&d->fr);
	} else if (ch->bytes > ch->captured) {
		d->fr.lost = true; /* a frame header among the bytes not copied */
	}
	if (d->fr.lost)
		on_loss(s, dir);
}

static void http2_close(void *state, struct conn *c, uint64_t ts)
{
	struct http2_session *s = state;
	(void)c;
	struct h2_stream *all[MAX_STREAMS];
	uint32_t n = open_streams(s, all);
	uint64_t lost = 0;
	for (uint32_t i = 0; i < n; i++) {
		struct h2_stream *st = all[i];
		if (st->damaged[0] || st->damaged[1]) {
			/* Its last frames were probably among the bytes lost: its end is
			 * unknown. */
			lost++;
			stream_forget(s, st);
			continue;
		}
		/* A response cut short by the connection's end ends with its last frame. */
		stream_emit(s, st, st->resp_headers ? st->last_ts : ts);
	}
	if (lost)
		conn__count(s->conn, CONN_LOST_EVENTS, lost);
}

static void http2_free(void *state)
{
	struct http2_session *s = state;
	for (uint32_t i = 0; i < s->streams.capacity; i++)
		if (s->streams.keys[i])
			stream_release(s->streams.values[i]);
	u64map__free(&s->streams);
	for (int i = 0; i < 2; i++) {
		http2_framer__free(&s->dir[i].fr);
		hpack__free(&s->dir[i].hpack);
		free(s->dir[i].block);
	}
	free(s);
}

const struct proto_ops http2_proto = {
    .name = "http2",
    .detect = http2_detect,
    .open = http2_open,
    .data = http2_data,
    .close = http2_close,
    .free = http2_free,
};
