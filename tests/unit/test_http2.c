/* HTTP/2: the framer (every split, uncopied bytes), plausibility checks, and
 * the session through the connection tracker: server and client side,
 * concurrent streams, gRPC, resets, connections seen from their middle, the
 * h2c upgrade from HTTP/1.1, lost events. */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "config/config.h"
#include "discover/discover.h"
#include "protocols/conntrack.h"
#include "protocols/hpack.h"
#include "protocols/http2_frame.h"
#include "request.h"

/* ---- stubs for the connection tracker's view of discovery */

static struct service test_service = {.id = 1, .refs = 1, .name = "svc"};

static struct service *const stub_services[] = {NULL, &test_service};
#include "discovery_stub.h"

/* ---- collected records */

#define MAX_RECS 64
struct rec {
	int kind, status, grpc_status, http_version;
	char method[16], path[128], query[64], host[64], ua[64], err[32], rpc[128], tp[64];
	uint8_t unresolved;
	uint64_t start, end, req_body, resp_body;
	uint32_t seq;
};
static struct rec recs[MAX_RECS];
static int nrecs;

static void sink(void *ctx, struct request *r)
{
	(void)ctx;
	if (nrecs == MAX_RECS)
		return;
	struct rec *o = &recs[nrecs++];
	memset(o, 0, sizeof(*o));
	o->kind = r->kind;
	o->status = r->status;
	o->grpc_status = r->grpc_status;
	o->http_version = r->http_version;
	snprintf(o->method, sizeof(o->method), "%s", request__str(r, r->method));
	snprintf(o->path, sizeof(o->path), "%s", request__str(r, r->path));
	snprintf(o->query, sizeof(o->query), "%s", request__str(r, r->query));
	snprintf(o->host, sizeof(o->host), "%s", request__str(r, r->host));
	snprintf(o->ua, sizeof(o->ua), "%s", request__str(r, r->user_agent));
	snprintf(o->err, sizeof(o->err), "%s", request__str(r, r->error_type));
	snprintf(o->rpc, sizeof(o->rpc), "%s", request__str(r, r->rpc_method));
	snprintf(o->tp, sizeof(o->tp), "%s", request__str(r, r->traceparent));
	o->unresolved = r->unresolved;
	o->start = r->start_ns;
	o->end = r->end_ns;
	o->req_body = r->request_body_bytes;
	o->resp_body = r->response_body_bytes;
	o->seq = r->request_seq;
}

static const struct rec *find(uint64_t start_ts, const char *path)
{
	for (int i = 0; i < nrecs; i++)
		if ((!start_ts || recs[i].start == start_ts) &&
		    (!path || !strcmp(recs[i].path, path)))
			return &recs[i];
	return NULL;
}

static struct rastro_config cfg;

static void event_role(struct conntrack *ct, uint64_t conn, int dir, uint64_t ts, uint32_t *seq,
		       const void *data, uint32_t captured, uint32_t bytes, uint8_t role)
{
	static char buf[sizeof(struct rastro_data_event) + 70000];
	struct rastro_data_event *ev = (void *)buf;
	memset(ev, 0, sizeof(*ev));
	ev->hdr.type = RASTRO_EV_DATA;
	ev->hdr.tgid = 42;
	ev->hdr.ts_ns = ts;
	ev->tid = 42;
	ev->service_id = 1;
	ev->conn_id = conn;
	ev->bytes = bytes;
	ev->captured = captured;
	ev->seq = seq[dir];
	ev->direction = (uint8_t)dir;
	ev->role = role;
	seq[dir] += bytes;
	memcpy(buf + sizeof(*ev), data, captured);
	conntrack__on_data(ct, ev, buf + sizeof(*ev));
}

static void event(struct conntrack *ct, uint64_t conn, int dir, uint64_t ts, uint32_t *seq,
		  const void *data, uint32_t captured, uint32_t bytes)
{
	event_role(ct, conn, dir, ts, seq, data, captured, bytes, RASTRO_ROLE_UNKNOWN);
}

static void close_conn(struct conntrack *ct, uint64_t conn, uint64_t ts)
{
	struct rastro_close_event ev = {.hdr = {.type = RASTRO_EV_CLOSE, .ts_ns = ts},
					.conn_id = conn};
	conntrack__on_close(ct, &ev);
}

static struct conntrack *new_ct(void)
{
	nrecs = 0;
	return conntrack__new(&cfg, NULL, NULL, sink, NULL);
}

#define IN RASTRO_DIR_INGRESS
#define OUT RASTRO_DIR_EGRESS

/* ---- building frames and header blocks */

struct buf {
	uint8_t d[65536];
	size_t n;
};

static void put(struct buf *b, const void *p, size_t n)
{
	memcpy(b->d + b->n, p, n);
	b->n += n;
}

static void frame(struct buf *b, uint8_t type, uint8_t flags, uint32_t sid, const void *payload,
		  size_t len)
{
	uint8_t h[9] = {
	    (uint8_t)(len >> 16), (uint8_t)(len >> 8),	(uint8_t)len,	     type,	  flags,
	    (uint8_t)(sid >> 24), (uint8_t)(sid >> 16), (uint8_t)(sid >> 8), (uint8_t)sid};
	put(b, h, 9);
	if (len)
		put(b, payload, len);
}

static size_t put_int(uint8_t *out, int prefix, uint8_t flags, uint32_t v)
{
	uint32_t max = (1u << prefix) - 1;
	if (v < max) {
		out[0] = flags | (uint8_t)v;
		return 1;
	}
	size_t n = 0;
	out[n++] = flags | (uint8_t)max;
	v -= max;
	while (v >= 128) {
		out[n++] = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	out[n++] = (uint8_t)v;
	return n;
}

static size_t put_str(uint8_t *out, const char *s, bool huffman)
{
	size_t len = strlen(s);
	if (huffman) {
		uint8_t h[512];
		size_t hl = hpack__huffman_encode(s, len, h, sizeof(h));
		size_t n = put_int(out, 7, 0x80, (uint32_t)hl);
		memcpy(out + n, h, hl);
		return n + hl;
	}
	size_t n = put_int(out, 7, 0, (uint32_t)len);
	memcpy(out + n, s, len);
	return n + len;
}

/* Header block from a spec string of entries separated by '|':
 *   "#2"        indexed field 2
 *   "+4=/path"  literal with indexing, name index 4
 *   "+name=v"   literal with indexing, new name
 *   "-name=v"   literal without indexing, new name; "-4=v" name index 4
 * Values are Huffman-coded when huffman is set. */
static size_t hblock(uint8_t *out, bool huffman, const char *spec)
{
	char tmp[2048];
	snprintf(tmp, sizeof(tmp), "%s", spec);
	size_t n = 0;
	for (char *save = NULL, *e = strtok_r(tmp, "|", &save); e; e = strtok_r(NULL, "|", &save)) {
		if (e[0] == '#') {
			n += put_int(out + n, 7, 0x80, (uint32_t)atoi(e + 1));
			continue;
		}
		bool indexing = e[0] == '+';
		char *eq = strchr(e, '=');
		*eq = '\0';
		const char *name = e + 1, *value = eq + 1;
		int prefix = indexing ? 6 : 4;
		uint8_t flags = indexing ? 0x40 : 0;
		if (name[0] >= '0' && name[0] <= '9') {
			n += put_int(out + n, prefix, flags, (uint32_t)atoi(name));
		} else {
			n += put_int(out + n, prefix, flags, 0);
			n += put_str(out + n, name, false);
		}
		n += put_str(out + n, value, huffman);
	}
	return n;
}

static void headers(struct buf *b, uint32_t sid, uint8_t flags, bool huffman, const char *spec)
{
	uint8_t blk[4096];
	size_t n = hblock(blk, huffman, spec);
	frame(b, HTTP2_HEADERS, flags | HTTP2_F_END_HEADERS, sid, blk, n);
}

static void data(struct buf *b, uint32_t sid, uint8_t flags, size_t len)
{
	static uint8_t zeros[65536];
	frame(b, HTTP2_DATA, flags, sid, zeros, len);
}

static void settings(struct buf *b)
{
	const uint8_t s[] = {0, 3, 0, 0, 0, 100, 0, 4, 0, 0, 0xff, 0xff};
	frame(b, HTTP2_SETTINGS, 0, 0, s, sizeof(s));
}

static void preface(struct buf *b)
{
	put(b, HTTP2_PREFACE, HTTP2_PREFACE_LEN);
	settings(b);
	const uint8_t wu[] = {0, 0x0f, 0, 1};
	frame(b, HTTP2_WINDOW_UPDATE, 0, 0, wu, 4);
}

/* ---- the framer */

struct frames {
	int n;
	struct http2_frame_header h[32];
	uint32_t payload_len[32];
	uint8_t first[32];
	bool cut[32];
};

static void feed_all(struct http2_framer *f, const uint8_t *p, size_t len, struct frames *out)
{
	size_t off = 0;
	while (off < len) {
		struct http2_frame fr;
		bool have;
		int64_t n = http2_framer__feed(f, p + off, len - off, &fr, &have);
		if (n <= 0)
			break;
		off += (size_t)n;
		if (have && out->n < 32) {
			out->h[out->n] = fr.h;
			out->payload_len[out->n] = fr.payload_len;
			out->first[out->n] = fr.payload_len ? fr.payload[0] : 0;
			out->cut[out->n] = fr.cut;
			out->n++;
		}
	}
}

static void test_framer_every_split(void)
{
	struct buf b = {.n = 0};
	preface(&b);
	headers(&b, 1, 0, false, "#2|#6|-4=/x");
	/* HEADERS cut into HEADERS + CONTINUATION, padded with priority */
	uint8_t hp[64] = {3, 0, 0, 0, 0, 16, 0x82, 0x86, 0x84}; /* pad 3, priority 5, block */
	frame(&b, HTTP2_HEADERS, HTTP2_F_PADDED | HTTP2_F_PRIORITY, 3, hp, 9 + 3);
	frame(&b, HTTP2_CONTINUATION, HTTP2_F_END_HEADERS, 3, "\x41\x01h", 3);
	uint8_t dp[20] = {4}; /* padded DATA: 15 data bytes, 4 padding */
	frame(&b, HTTP2_DATA, HTTP2_F_PADDED | HTTP2_F_END_STREAM, 1, dp, 20);
	frame(&b, HTTP2_RST_STREAM, 0, 3, "\0\0\0\x08", 4);
	frame(&b, HTTP2_GOAWAY, 0, 0, "\0\0\0\x03\0\0\0\0", 8);
	frame(&b, HTTP2_PING, 0, 0, "12345678", 8);
	frame(&b, 0x42, 0, 0, "unknown", 7); /* extension frame: ignored */

	struct http2_framer f;
	struct frames whole = {0};
	http2_framer__init(&f, true);
	feed_all(&f, b.d, b.n, &whole);
	http2_framer__free(&f);
	CHECK_INT(whole.n, 10);
	CHECK_INT(whole.h[2].type, HTTP2_HEADERS);
	CHECK_INT(whole.h[3].type, HTTP2_HEADERS);
	CHECK_INT(whole.h[4].type, HTTP2_CONTINUATION);
	CHECK_INT(whole.h[5].type, HTTP2_DATA);
	CHECK_INT(whole.payload_len[5], HTTP2_DATA_PEEK);
	CHECK_INT(whole.first[5], 4);
	CHECK_INT(whole.h[9].type, 0x42);

	/* Two pieces, split at every byte, give the same frames; so does one
	 * byte at a time. */
	for (size_t k = 0; k <= b.n; k++) {
		struct frames got = {0};
		http2_framer__init(&f, true);
		feed_all(&f, b.d, k, &got);
		feed_all(&f, b.d + k, b.n - k, &got);
		CHECK_INT(got.n, whole.n);
		for (int i = 0; i < got.n && i < whole.n; i++) {
			CHECK(!memcmp(&got.h[i], &whole.h[i], sizeof(got.h[i])));
			CHECK_INT(got.payload_len[i], whole.payload_len[i]);
			CHECK_INT(got.first[i], whole.first[i]);
			CHECK(!got.cut[i]);
		}
		http2_framer__free(&f);
	}
	struct frames got = {0};
	http2_framer__init(&f, true);
	for (size_t k = 0; k < b.n; k++)
		feed_all(&f, b.d + k, 1, &got);
	CHECK_INT(got.n, whole.n);
	http2_framer__free(&f);

	/* A bad preface is refused. */
	http2_framer__init(&f, true);
	struct http2_frame fr;
	bool have;
	CHECK_INT(http2_framer__feed(&f, (const uint8_t *)"GET / HTTP/1.1\r\n", 16, &fr, &have),
		  HTTP2_FRAMER_ERROR);
	CHECK(f.lost);
	http2_framer__free(&f);
}

static void test_framer_skip(void)
{
	struct buf b = {.n = 0};
	data(&b, 1, 0, 1000);
	headers(&b, 1, HTTP2_F_END_STREAM, false, "-grpc-status=0");
	struct http2_framer f;
	struct frames got = {0};
	struct http2_frame fr;
	/* The DATA payload beyond the first 100 bytes is not copied: skipped by
	 * length, the HEADERS that follows is found. */
	http2_framer__init(&f, false);
	feed_all(&f, b.d, 100, &got);
	CHECK_INT(got.n, 0);
	CHECK(!http2_framer__skip(&f, 500, &fr));
	CHECK(http2_framer__skip(&f, 409, &fr));
	CHECK_INT(fr.h.length, 1000);
	CHECK(fr.cut);
	CHECK(!f.lost);
	feed_all(&f, b.d + 1009, b.n - 1009, &got);
	CHECK_INT(got.n, 1);
	CHECK_INT(got.h[0].type, HTTP2_HEADERS);
	http2_framer__free(&f);
	/* Unseen bytes that reach past the frame hold a header: alignment lost. */
	http2_framer__init(&f, false);
	feed_all(&f, b.d, 100, &got);
	CHECK(http2_framer__skip(&f, 920, &fr));
	CHECK(f.lost);
	http2_framer__resync(&f);
	CHECK(!f.lost);
	http2_framer__free(&f);
	/* A HEADERS frame partly unseen is reported cut, with the prefix seen. */
	struct buf h = {.n = 0};
	headers(&h, 5, 0, false, "#2|#6|-4=/a/long/path/that/is/cut");
	http2_framer__init(&f, false);
	memset(&got, 0, sizeof(got));
	feed_all(&f, h.d, 15, &got);
	CHECK(http2_framer__skip(&f, h.n - 15, &fr));
	CHECK(fr.cut);
	CHECK_INT(fr.payload_len, 6);
	const uint8_t *frag;
	uint32_t len;
	bool cut;
	CHECK(http2__field_fragment(&fr, &frag, &len, &cut));
	CHECK(cut);
	CHECK_INT(len, 6);
	http2_framer__free(&f);
}

static void test_plausible(void)
{
	struct buf b = {.n = 0};
	settings(&b);
	headers(&b, 1, HTTP2_F_END_STREAM, false, "#2|#6|#4");
	CHECK(http2__looks_like_frames(b.d, b.n, b.n));
	CHECK(http2__looks_like_frames(b.d, 30, b.n));	/* two headers seen, rest unseen */
	CHECK(!http2__looks_like_frames(b.d, 20, b.n)); /* one header seen: too little */
	CHECK(http2__starts_with_frames(b.d, 20, b.n));
	/* One frame that ends exactly with the syscall's bytes */
	struct buf one = {.n = 0};
	frame(&one, HTTP2_WINDOW_UPDATE, 0, 0, "\0\0\x10\0", 4);
	CHECK(http2__looks_like_frames(one.d, one.n, one.n));
	CHECK(!http2__looks_like_frames(one.d, one.n, one.n + 5));
	const char *not_h2[] = {
	    "GET / HTTP/1.1\r\nHost: x\r\n\r\n",
	    "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", /* TLS ClientHello */
	    "\x00\x00\x00\x08\x04\xd2\x16\x2f",		    /* PostgreSQL SSLRequest */
	    "*1\r\n$4\r\nPING\r\n",			    /* Redis */
	    "\x00\x00\x00\x00\x00\x00\x00\x00\x00",	    /* zeros: SETTINGS needs id 0, */
	};
	for (size_t i = 0; i < 4; i++)
		CHECK(!http2__looks_like_frames((const uint8_t *)not_h2[i], strlen(not_h2[i]),
						strlen(not_h2[i])));
	/* A DATA frame on stream 0 or with undefined flags is not plausible. */
	struct http2_frame_header h = {.length = 10, .type = HTTP2_DATA, .stream_id = 0};
	CHECK(!http2__frame_header_plausible(&h, HTTP2_DEFAULT_MAX_FRAME));
	h.stream_id = 1;
	CHECK(http2__frame_header_plausible(&h, HTTP2_DEFAULT_MAX_FRAME));
	h.flags = 0x40;
	CHECK(!http2__frame_header_plausible(&h, HTTP2_DEFAULT_MAX_FRAME));
	CHECK_INT(http2__match_preface("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 24), 1);
	CHECK_INT(http2__match_preface("PRI * HT", 8), 0);
	CHECK_INT(http2__match_preface("PRIV", 4), -1);
}

/* ---- the session */

/* Client to server: preface, one GET on stream 1 with a dynamic-table
 * entry for :authority and user-agent. Server: SETTINGS, ACK, response. */
static void build_simple(struct buf *c, struct buf *s, bool huffman)
{
	preface(c);
	headers(c, 1, HTTP2_F_END_STREAM, huffman,
		"#2|#6|+4=/items?id=7|+1=example.com:8080|+58=ua/1.0|"
		"-traceparent=00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
	settings(s);
	frame(s, HTTP2_SETTINGS, HTTP2_F_ACK, 0, NULL, 0);
	headers(s, 1, 0, huffman, "+8=201|-content-type=text/plain");
	data(s, 1, 0, 3);
	data(s, 1, HTTP2_F_END_STREAM, 2);
}

static void check_simple(const struct rec *r, int kind)
{
	CHECK_INT(r->kind, kind);
	CHECK_STR(r->method, "GET");
	CHECK_STR(r->path, "/items");
	CHECK_STR(r->query, "id=7");
	CHECK_STR(r->host, "example.com:8080");
	CHECK_STR(r->ua, "ua/1.0");
	CHECK_STR(r->tp, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
	CHECK_INT(r->status, 201);
	CHECK_INT(r->http_version, 20);
	CHECK_INT(r->req_body, 0);
	CHECK_INT(r->resp_body, 5);
	CHECK_INT(r->unresolved, 0);
	CHECK_STR(r->err, "");
}

static void test_server_every_split(void)
{
	for (int huffman = 0; huffman < 2; huffman++) {
		struct buf c = {.n = 0}, s = {.n = 0};
		build_simple(&c, &s, huffman);
		for (size_t k = 1; k < c.n; k++) {
			for (size_t j = 1; j < s.n; j += (k % 5) + 1) {
				struct conntrack *ct = new_ct();
				uint32_t seq[2] = {1000, 5000};
				event(ct, 1, IN, 100, seq, c.d, (uint32_t)k, (uint32_t)k);
				event(ct, 1, IN, 200, seq, c.d + k, (uint32_t)(c.n - k),
				      (uint32_t)(c.n - k));
				event(ct, 1, OUT, 300, seq, s.d, (uint32_t)j, (uint32_t)j);
				CHECK_INT(nrecs, 0);
				event(ct, 1, OUT, 400, seq, s.d + j, (uint32_t)(s.n - j),
				      (uint32_t)(s.n - j));
				CHECK_INT(nrecs, 1);
				if (nrecs == 1) {
					check_simple(&recs[0], REQ_HTTP_SERVER);
					/* the HEADERS frame starts after the 24 + 21 + 13 bytes of
					 * preface, SETTINGS and WINDOW_UPDATE */
					CHECK_INT(recs[0].start, k > 58 ? 100 : 200);
					CHECK_INT(recs[0].seq, 1000 + 58);
					CHECK_INT(recs[0].end, 400);
				}
				conntrack__free(ct);
			}
		}
	}
}

static void test_client_side(void)
{
	struct buf c = {.n = 0}, s = {.n = 0};
	build_simple(&c, &s, true);
	struct conntrack *ct = new_ct();
	uint32_t seq[2] = {1, 1};
	event(ct, 2, OUT, 10, seq, c.d, (uint32_t)c.n, (uint32_t)c.n);
	event(ct, 2, IN, 20, seq, s.d, (uint32_t)s.n, (uint32_t)s.n);
	CHECK_INT(nrecs, 1);
	check_simple(&recs[0], REQ_HTTP_CLIENT);
	CHECK_INT(recs[0].start, 10);
	CHECK_INT(recs[0].end, 20);
	conntrack__free(ct);
}

/* Three concurrent streams, requests in one read, responses interleaved and
 * finishing in another order; the second request reuses table entries. */
static void test_concurrent_streams(void)
{
	struct buf c1 = {.n = 0}, c2 = {.n = 0}, s1 = {.n = 0}, s2 = {.n = 0}, s3 = {.n = 0};
	preface(&c1);
	headers(&c1, 1, 0, true, "#3|#6|+4=/upload|+1=h");
	data(&c1, 1, HTTP2_F_END_STREAM, 100);
	headers(&c1, 3, HTTP2_F_END_STREAM, true, "#2|#6|+4=/slow|#63"); /* h */
	headers(&c2, 5, HTTP2_F_END_STREAM, true, "#2|#6|#64|#63");	 /* /upload again, h */
	settings(&s1);
	headers(&s1, 3, 0, true, "#8");
	headers(&s1, 1, 0, true, "#13");
	data(&s1, 3, 0, 10);
	headers(&s2, 5, HTTP2_F_END_STREAM, true, "#9");
	data(&s2, 1, HTTP2_F_END_STREAM, 7);
	data(&s3, 3, HTTP2_F_END_STREAM, 20);
	struct conntrack *ct = new_ct();
	uint32_t seq[2] = {1, 1};
	event(ct, 3, IN, 10, seq, c1.d, (uint32_t)c1.n, (uint32_t)c1.n);
	event(ct, 3, OUT, 20, seq, s1.d, (uint32_t)s1.n, (uint32_t)s1.n);
	event(ct, 3, IN, 30, seq, c2.d, (uint32_t)c2.n, (uint32_t)c2.n);
	event(ct, 3, OUT, 40, seq, s2.d, (uint32_t)s2.n, (uint32_t)s2.n);
	CHECK_INT(nrecs, 2);
	event(ct, 3, OUT, 50, seq, s3.d, (uint32_t)s3.n, (uint32_t)s3.n);
	CHECK_INT(nrecs, 3);
	const struct rec *up = find(10, "/upload"), *slow = find(10, "/slow"),
			 *again = find(30, "/upload");
	CHECK(up && slow && again);
	if (up && slow && again) {
		CHECK_STR(up->method, "POST");
		CHECK_INT(up->status, 404);
		CHECK_INT(up->req_body, 100);
		CHECK_INT(up->resp_body, 7);
		CHECK_INT(up->end, 40);
		CHECK_STR(slow->method, "GET");
		CHECK_STR(slow->host, "h");
		CHECK_INT(slow->status, 200);
		CHECK_INT(slow->resp_body, 30);
		CHECK_INT(slow->end, 50);
		CHECK_STR(again->host, "h");
		CHECK_INT(again->status, 204);
		CHECK_INT(again->end, 40);
	}
	conntrack__free(ct);
}

static void test_grpc(void)
{
	struct buf c = {.n = 0}, s = {.n = 0};
	preface(&c);
	const char *req = "#3|#6|+4=/helloworld.Greeter/SayHello|+1=localhost:50051|"
			  "+31=application/grpc|+te=trailers|+58=grpc-python/1.51";
	headers(&c, 1, 0, false, req);
	uint8_t msg[12] = {0, 0, 0, 0, 7};
	frame(&c, HTTP2_DATA, HTTP2_F_END_STREAM, 1, msg, 12);
	headers(&c, 3, 0, false, "#3|#6|+4=/helloworld.Greeter/Missing|#66|#65|#64|#63");
	frame(&c, HTTP2_DATA, HTTP2_F_END_STREAM, 3, msg, 12);
	headers(&c, 5, 0, false, "#3|#6|#62|#66|#65|#64|#63");
	frame(&c, HTTP2_DATA, HTTP2_F_END_STREAM, 5, msg, 12);
	headers(&c, 7, 0, false, "#3|#6|#62|#66|#65|#64|#63");
	frame(&c, HTTP2_DATA, HTTP2_F_END_STREAM, 7, msg, 12);
	settings(&s);
	headers(&s, 1, 0, false, "#8|+31=application/grpc");
	frame(&s, HTTP2_DATA, 0, 1, msg, 12);
	headers(&s, 1, HTTP2_F_END_STREAM, false, "+grpc-status=0|-grpc-message=");
	/* Trailers-only: NOT_FOUND */
	headers(&s, 3, HTTP2_F_END_STREAM, false, "#8|#62|-grpc-status=5|-grpc-message=nope");
	/* reset by the server: CANCEL */
	frame(&s, HTTP2_RST_STREAM, 0, 5, "\0\0\0\x08", 4);
	/* INTERNAL after two messages (server streaming) */
	headers(&s, 7, 0, false, "#8|#63");
	frame(&s, HTTP2_DATA, 0, 7, msg, 12);
	frame(&s, HTTP2_DATA, 0, 7, msg, 12);
	headers(&s, 7, HTTP2_F_END_STREAM, false, "-grpc-status=13");
	struct conntrack *ct = new_ct();
	uint32_t seq[2] = {1, 1};
	event(ct, 4, IN, 10, seq, c.d, (uint32_t)c.n, (uint32_t)c.n);
	event(ct, 4, OUT, 20, seq, s.d, (uint32_t)s.n, (uint32_t)s.n);
	CHECK_INT(nrecs, 4);
	const char *methods[] = {"helloworld.Greeter/SayHello", "helloworld.Greeter/Missing",
				 "helloworld.Greeter/Missing", "helloworld.Greeter/Missing"};
	int status[] = {0, 5, 1, 13};
	for (int i = 0; i < 4 && i < nrecs; i++) {
		CHECK_INT(recs[i].kind, REQ_GRPC_SERVER);
		CHECK_STR(recs[i].rpc, methods[i]);
		CHECK_INT(recs[i].grpc_status, status[i]);
		CHECK_STR(recs[i].method, "POST");
		CHECK_STR(recs[i].ua, "grpc-python/1.51");
		CHECK_STR(recs[i].err, "");
	}
	CHECK_INT(recs[0].req_body, 12);
	CHECK_INT(recs[0].resp_body, 12);
	CHECK_INT(recs[3].resp_body, 24);
	conntrack__free(ct);
}

/* A connection seen from its middle: the first bytes seen are frames; the
 * tables hold entries never seen inserted. */
static void test_mid_connection(void)
{
	struct buf c = {.n = 0}, s = {.n = 0}, s0 = {.n = 0};
	/* before rastro: stream 1 inserted /a and the authority (not seen) */
	frame(&s0, HTTP2_DATA, HTTP2_F_END_STREAM, 1, "xyz", 3);    /* end of an older stream */
	headers(&c, 3, HTTP2_F_END_STREAM, false, "#2|#6|#63|#62"); /* :path, :authority unknown */
	headers(&c, 5, HTTP2_F_END_STREAM, false, "#2|#6|+4=/b|#63"); /* :path literal */
	headers(&c, 7, HTTP2_F_END_STREAM, false, "#2|#6|#62|#64");   /* :path /b from the table */
	headers(&s, 3, HTTP2_F_END_STREAM, false, "#8");
	headers(&s, 5, HTTP2_F_END_STREAM, false, "#70"); /* :status unknown */
	headers(&s, 7, HTTP2_F_END_STREAM, false, "#13");
	struct conntrack *ct = new_ct();
	uint32_t seq[2] = {1, 1};
	event_role(ct, 5, OUT, 5, seq, s0.d, (uint32_t)s0.n, (uint32_t)s0.n, RASTRO_ROLE_UNKNOWN);
	event(ct, 5, IN, 10, seq, c.d, (uint32_t)c.n, (uint32_t)c.n);
	event(ct, 5, OUT, 20, seq, s.d, (uint32_t)s.n, (uint32_t)s.n);
	CHECK_INT(nrecs, 3);
	if (nrecs == 3) {
		CHECK_INT(recs[0].kind, REQ_HTTP_SERVER);
		CHECK_STR(recs[0].method, "GET");
		CHECK_STR(recs[0].path, ""); /* never guessed */
		CHECK_INT(recs[0].unresolved, REQ_UNRESOLVED_PATH | REQ_UNRESOLVED_KIND);
		CHECK_INT(recs[0].status, 200);
		CHECK_STR(recs[1].path, "/b");
		CHECK_INT(recs[1].status, 0);
		CHECK(recs[1].unresolved & REQ_UNRESOLVED_STATUS);
		CHECK_STR(recs[1].err, ""); /* an unknown status is not a missing response */
		CHECK_STR(recs[2].path, "/b");
		CHECK_INT(recs[2].status, 404);
	}
	conntrack__free(ct);

	/* The traced process is the client (connect()), seen from the middle. */
	ct = new_ct();
	seq[0] = seq[1] = 1;
	event_role(ct, 6, OUT, 10, seq, c.d, (uint32_t)c.n, (uint32_t)c.n, RASTRO_ROLE_CLIENT);
	event_role(ct, 6, IN, 20, seq, s.d, (uint32_t)s.n, (uint32_t)s.n, RASTRO_ROLE_CLIENT);
	CHECK_INT(nrecs, 3);
	CHECK_INT(recs[0].kind, REQ_HTTP_CLIENT);
	conntrack__free(ct);
}

/* h2c: an HTTP/1.1 request with Upgrade: h2c, answered by 101 and HTTP/2 in
 * the same write; the request is stream 1. */
static void test_h2c_upgrade(void)
{
	const char *up = "GET /up?q=1 HTTP/1.1\r\nHost: h2c.example\r\nUser-Agent: curl/7.88\r\n"
			 "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
			 "HTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n";
	const char *sw =
	    "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n";
	struct buf s = {.n = 0}, c = {.n = 0}, s2 = {.n = 0};
	put(&s, sw, strlen(sw));
	settings(&s);
	headers(&s, 1, 0, false, "#8");
	data(&s, 1, HTTP2_F_END_STREAM, 11);
	preface(&c);
	frame(&c, HTTP2_SETTINGS, HTTP2_F_ACK, 0, NULL, 0);
	headers(&c, 3, HTTP2_F_END_STREAM, false, "#2|#6|-4=/second|-1=h2c.example");
	headers(&s2, 3, HTTP2_F_END_STREAM, false, "#13");
	for (size_t k = 1; k < s.n; k++) {
		struct conntrack *ct = new_ct();
		uint32_t seq[2] = {1, 1};
		event(ct, 7, IN, 10, seq, up, (uint32_t)strlen(up), (uint32_t)strlen(up));
		event(ct, 7, OUT, 20, seq, s.d, (uint32_t)k, (uint32_t)k);
		event(ct, 7, OUT, 30, seq, s.d + k, (uint32_t)(s.n - k), (uint32_t)(s.n - k));
		event(ct, 7, IN, 40, seq, c.d, (uint32_t)c.n, (uint32_t)c.n);
		event(ct, 7, OUT, 50, seq, s2.d, (uint32_t)s2.n, (uint32_t)s2.n);
		CHECK_INT(nrecs, 2);
		if (nrecs == 2) {
			CHECK_INT(recs[0].kind, REQ_HTTP_SERVER);
			CHECK_STR(recs[0].path, "/up");
			CHECK_STR(recs[0].query, "q=1");
			CHECK_STR(recs[0].host, "h2c.example");
			CHECK_STR(recs[0].ua, "curl/7.88");
			CHECK_INT(recs[0].status, 200);
			CHECK_INT(recs[0].http_version, 20);
			CHECK_INT(recs[0].resp_body, 11);
			CHECK_INT(recs[0].start, 10);
			CHECK_INT(recs[0].end, 30);
			CHECK_STR(recs[1].path, "/second");
			CHECK_INT(recs[1].status, 404);
			CHECK_INT(recs[1].end, 50);
		}
		conntrack__free(ct);
	}
	/* A 101 to a WebSocket upgrade is still reported as HTTP/1 and left alone. */
	struct conntrack *ct = new_ct();
	uint32_t seq[2] = {1, 1};
	const char *ws = "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
	const char *ws101 =
	    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x05hello";
	event(ct, 8, IN, 10, seq, ws, (uint32_t)strlen(ws), (uint32_t)strlen(ws));
	event(ct, 8, OUT, 20, seq, ws101, (uint32_t)strlen(ws101), (uint32_t)strlen(ws101));
	CHECK_INT(nrecs, 1);
	CHECK_INT(recs[0].status, 101);
	CHECK_INT(recs[0].http_version, 11);
	conntrack__free(ct);
}

/* The preface arriving in pieces, the first shorter than HTTP/1 can judge. */
static void test_preface_in_pieces(void)
{
	struct buf c = {.n = 0}, s = {.n = 0};
	build_simple(&c, &s, false);
	for (size_t k = 1; k <= 24; k++) {
		struct conntrack *ct = new_ct();
		uint32_t seq[2] = {1, 1};
		event(ct, 9, IN, 10, seq, c.d, (uint32_t)k, (uint32_t)k);
		event(ct, 9, IN, 11, seq, c.d + k, (uint32_t)(c.n - k), (uint32_t)(c.n - k));
		event(ct, 9, OUT, 20, seq, s.d, (uint32_t)s.n, (uint32_t)s.n);
		CHECK_INT(nrecs, 1);
		if (nrecs == 1)
			check_simple(&recs[0], REQ_HTTP_SERVER);
		conntrack__free(ct);
	}
}

/* Uncopied bytes. A DATA payload cut by the capture limit is skipped by
 * length and counted. When unseen bytes hold frame headers, alignment is
 * lost until a syscall starts with frames; a stream whose end may have been
 * among them is dropped and counted at close, never given a made-up end. */
static void test_uncaptured(void)
{
	struct buf c = {.n = 0}, s = {.n = 0};
	preface(&c);
	headers(&c, 1, HTTP2_F_END_STREAM, false, "#2|#6|+4=/big");
	settings(&s);
	headers(&s, 1, 0, false, "#8");
	data(&s, 1, HTTP2_F_END_STREAM, 16384);
	struct conntrack *ct = new_ct();
	uint32_t seq[2] = {1, 1};
	event(ct, 10, IN, 10, seq, c.d, (uint32_t)c.n, (uint32_t)c.n);
	event(ct, 10, OUT, 20, seq, s.d, 4096, (uint32_t)s.n); /* one write, 4096 copied */
	CHECK_INT(nrecs, 1);
	CHECK_INT(recs[0].resp_body, 16384);
	CHECK_INT(recs[0].end, 20);

	/* Stream 3: two DATA frames in one write, the second's header unseen. */
	struct buf c3 = {.n = 0}, r = {.n = 0};
	headers(&c3, 3, HTTP2_F_END_STREAM, false, "#2|#6|+4=/two");
	headers(&c3, 5, HTTP2_F_END_STREAM, false, "#2|#6|+4=/next");
	event(ct, 10, IN, 30, seq, c3.d, (uint32_t)c3.n, (uint32_t)c3.n);
	headers(&r, 3, 0, false, "#8");
	data(&r, 3, 0, 16384);
	data(&r, 3, HTTP2_F_END_STREAM, 100);
	event(ct, 10, OUT, 40, seq, r.d, 4096, (uint32_t)r.n);
	CHECK_INT(nrecs, 1);
	/* Stream 5's response: its HEADERS cut after the :status field (the
	 * rest of the block and a DATA frame unseen), then END_STREAM in the
	 * next write, which starts with a frame: found again. */
	struct buf r5 = {.n = 0}, r6 = {.n = 0};
	headers(&r5, 5, 0, false, "+8=200|+content-type=text/x");
	data(&r5, 5, 0, 5000);
	data(&r6, 5, HTTP2_F_END_STREAM, 10);
	event(ct, 10, OUT, 50, seq, r5.d, 9 + 5 + 3, (uint32_t)r5.n);
	event(ct, 10, OUT, 60, seq, r6.d, (uint32_t)r6.n, (uint32_t)r6.n);
	CHECK_INT(nrecs, 2);
	if (nrecs == 2) {
		CHECK_STR(recs[1].path, "/next");
		CHECK_INT(recs[1].status, 200);
		CHECK_INT(recs[1].end, 60);
	}
	close_conn(ct, 10, 70);
	CHECK_INT(nrecs, 2); /* /two: its end is unknown */
	struct conntrack_stats st;
	conntrack__stats(ct, &st);
	CHECK_INT(st.counters[CONN_LOST_EVENTS], 1);
	conntrack__free(ct);
}

/* A request's HEADERS beyond the bytes copied of a write: its response is
 * the only trace of it, and it is counted as lost once (not for its
 * trailers too); a stream that began before rastro looked is not. */
static void test_request_headers_uncaptured(void)
{
	struct buf c = {.n = 0}, s = {.n = 0}, r = {.n = 0};
	preface(&c);
	headers(&c, 1, 0, false, "#3|#6|+4=/upload");
	data(&c, 1, HTTP2_F_END_STREAM, 5000);
	headers(&c, 3, HTTP2_F_END_STREAM, false, "#2|#6|+4=/unseen");
	settings(&s);
	headers(&r, 1, HTTP2_F_END_STREAM, false, "#8");
	headers(&r, 3, 0, false, "#8");
	data(&r, 3, 0, 10);
	headers(&r, 3, HTTP2_F_END_STREAM, false, "+grpc-status=0"); /* trailers */
	struct conntrack *ct = new_ct();
	uint32_t seq[2] = {1, 1};
	event(ct, 13, IN, 10, seq, c.d, 4096, (uint32_t)c.n); /* one write, 4096 copied */
	event(ct, 13, OUT, 20, seq, s.d, (uint32_t)s.n, (uint32_t)s.n);
	event(ct, 13, OUT, 30, seq, r.d, (uint32_t)r.n, (uint32_t)r.n);
	CHECK_INT(nrecs, 1);
	if (nrecs == 1)
		CHECK_STR(recs[0].path, "/upload");
	close_conn(ct, 13, 40);
	struct conntrack_stats st;
	conntrack__stats(ct, &st);
	CHECK_INT(st.counters[CONN_LOST_EVENTS], 1);
	conntrack__free(ct);

	/* Seen from the middle: stream 1 began before; 3 is followed. */
	struct buf c3 = {.n = 0}, r1 = {.n = 0}, r3 = {.n = 0};
	headers(&c3, 3, HTTP2_F_END_STREAM, false, "#2|#6|+4=/seen");
	headers(&r1, 1, HTTP2_F_END_STREAM, false, "+8=200");
	headers(&r3, 3, HTTP2_F_END_STREAM, false, "+8=200");
	ct = new_ct();
	seq[0] = seq[1] = 1;
	event(ct, 14, IN, 10, seq, c3.d, (uint32_t)c3.n, (uint32_t)c3.n);
	event(ct, 14, OUT, 20, seq, r1.d, (uint32_t)r1.n, (uint32_t)r1.n);
	event(ct, 14, OUT, 30, seq, r3.d, (uint32_t)r3.n, (uint32_t)r3.n);
	CHECK_INT(nrecs, 1);
	close_conn(ct, 14, 40);
	conntrack__stats(ct, &st);
	CHECK_INT(st.counters[CONN_LOST_EVENTS], 0);
	conntrack__free(ct);
}

/* Lost events: a response write never arrived. The streams it may have ended
 * are dropped and counted at close, not reported with a made-up end. */
static void test_lost_events(void)
{
	struct buf c = {.n = 0}, s = {.n = 0}, s2 = {.n = 0}, c2 = {.n = 0}, s3 = {.n = 0};
	preface(&c);
	headers(&c, 1, HTTP2_F_END_STREAM, false, "#2|#6|-4=/lost");
	settings(&s);
	headers(&s2, 1, HTTP2_F_END_STREAM, false, "#8");
	headers(&c2, 3, HTTP2_F_END_STREAM, false, "#2|#6|-4=/after");
	headers(&s3, 3, HTTP2_F_END_STREAM, false, "#8");
	struct conntrack *ct = new_ct();
	uint32_t seq[2] = {1, 1};
	event(ct, 11, IN, 10, seq, c.d, (uint32_t)c.n, (uint32_t)c.n);
	event(ct, 11, OUT, 20, seq, s.d, (uint32_t)s.n, (uint32_t)s.n);
	seq[OUT] += (uint32_t)s2.n; /* this write's event was lost */
	event(ct, 11, IN, 30, seq, c2.d, (uint32_t)c2.n, (uint32_t)c2.n);
	event(ct, 11, OUT, 40, seq, s3.d, (uint32_t)s3.n, (uint32_t)s3.n);
	CHECK_INT(nrecs, 1);
	CHECK_STR(recs[0].path, "/after");
	close_conn(ct, 11, 50);
	CHECK_INT(nrecs, 1);
	struct conntrack_stats st;
	conntrack__stats(ct, &st);
	CHECK_INT(st.counters[CONN_LOST_EVENTS], 1);
	conntrack__free(ct);

	/* Close with a stream unanswered: reported without a response. */
	ct = new_ct();
	seq[0] = seq[1] = 1;
	event(ct, 12, IN, 10, seq, c.d, (uint32_t)c.n, (uint32_t)c.n);
	close_conn(ct, 12, 99);
	CHECK_INT(nrecs, 1);
	CHECK_STR(recs[0].err, "no_response");
	CHECK_INT(recs[0].end, 99);
	conntrack__free(ct);
}

/* More concurrent streams than followed: the oldest is reported early and
 * counted. */
static void test_stream_limit(void)
{
	struct buf c = {.n = 0};
	preface(&c);
	struct conntrack *ct = new_ct();
	uint32_t seq[2] = {1, 1};
	event(ct, 13, IN, 10, seq, c.d, (uint32_t)c.n, (uint32_t)c.n);
	for (uint32_t i = 0; i < 257; i++) {
		struct buf h = {.n = 0};
		headers(&h, 1 + 2 * i, HTTP2_F_END_STREAM, false, "#2|#6|#4");
		event(ct, 13, IN, 20 + i, seq, h.d, (uint32_t)h.n, (uint32_t)h.n);
	}
	CHECK_INT(nrecs, 1);
	CHECK_INT(recs[0].start, 20);
	struct conntrack_stats st;
	conntrack__stats(ct, &st);
	CHECK_INT(st.counters[CONN_LOST_PIPELINE_OVERFLOW], 1);
	conntrack__free(ct);
}

/* Servers (nghttpd, gRPC C-core) send SETTINGS on accept, before reading the
 * client's preface: the first bytes seen are frames, and the preface that
 * follows proves the connection's start. Tables are complete from there. */
static void test_server_speaks_first(void)
{
	struct buf c = {.n = 0}, s = {.n = 0}, s0 = {.n = 0};
	settings(&s0);
	build_simple(&c, &s, false);
	struct conntrack *ct = new_ct();
	uint32_t seq[2] = {1, 1};
	event_role(ct, 14, OUT, 5, seq, s0.d, (uint32_t)s0.n, (uint32_t)s0.n, RASTRO_ROLE_SERVER);
	event(ct, 14, IN, 10, seq, c.d, (uint32_t)c.n, (uint32_t)c.n);
	event(ct, 14, OUT, 20, seq, s.d, (uint32_t)s.n, (uint32_t)s.n);
	/* the next request refers to the entries the first one added */
	struct buf c2 = {.n = 0}, s2 = {.n = 0};
	headers(&c2, 3, HTTP2_F_END_STREAM, false, "#2|#6|#64|#63|#62");
	headers(&s2, 3, HTTP2_F_END_STREAM, false, "#62");
	event(ct, 14, IN, 30, seq, c2.d, (uint32_t)c2.n, (uint32_t)c2.n);
	event(ct, 14, OUT, 40, seq, s2.d, (uint32_t)s2.n, (uint32_t)s2.n);
	CHECK_INT(nrecs, 2);
	if (nrecs == 2) {
		check_simple(&recs[0], REQ_HTTP_SERVER);
		CHECK_STR(recs[1].path, "/items");
		CHECK_STR(recs[1].host, "example.com:8080");
		CHECK_STR(recs[1].ua, "ua/1.0");
		CHECK_INT(recs[1].status, 201);
		CHECK_INT(recs[1].unresolved, 0);
	}
	conntrack__free(ct);
}

/* nghttpd writes a 100000-byte body as HEADERS + 3 DATA frames of 16384 and
 * then 3 more + the rest, ~49 KB per write, of which 4096 bytes are copied.
 * The frames not seen are the rest of the body in equal frames: the byte
 * counts say when the body ended. Padding or a mismatch is a loss. */
static void test_data_run_in_unseen_bytes(void)
{
	for (int variant = 0; variant < 3; variant++) {
		struct buf c = {.n = 0}, w1 = {.n = 0}, w2 = {.n = 0};
		preface(&c);
		headers(&c, 1, HTTP2_F_END_STREAM, false, "#2|#6|-4=/big.bin");
		headers(&w1, 1, 0, false, "#8|-28=100000");
		for (int i = 0; i < 3; i++)
			data(&w1, 1, 0, 16384);
		for (int i = 0; i < 3; i++)
			data(&w2, 1, 0, 16384);
		data(&w2, 1, HTTP2_F_END_STREAM, 100000 - 6 * 16384);
		if (variant == 2)
			w2.n -= 1; /* one byte short: the arithmetic does not hold */
		struct conntrack *ct = new_ct();
		uint32_t seq[2] = {1, 1};
		event(ct, 15, IN, 10, seq, c.d, (uint32_t)c.n, (uint32_t)c.n);
		event(ct, 15, OUT, 20, seq, w1.d, 4096, (uint32_t)w1.n);
		CHECK_INT(nrecs, 0);
		if (variant == 1) { /* the second write in two syscalls, cut at a frame */
			event(ct, 15, OUT, 30, seq, w2.d, 4096, 16393);
			event(ct, 15, OUT, 40, seq, w2.d + 16393, 4096, (uint32_t)(w2.n - 16393));
		} else {
			event(ct, 15, OUT, 40, seq, w2.d, 4096, (uint32_t)w2.n);
		}
		if (variant < 2) {
			CHECK_INT(nrecs, 1);
			if (nrecs == 1) {
				CHECK_INT(recs[0].resp_body, 100000);
				CHECK_INT(recs[0].end, 40);
				CHECK_INT(recs[0].status, 200);
			}
		} else {
			CHECK_INT(nrecs, 0);
			close_conn(ct, 15, 50);
			CHECK_INT(nrecs, 0); /* its end was lost: dropped and counted */
			struct conntrack_stats st;
			conntrack__stats(ct, &st);
			CHECK_INT(st.counters[CONN_LOST_EVENTS], 1);
		}
		conntrack__free(ct);
	}
}

/* A connection seen from its middle whose content-type refers to an entry
 * never seen: a decoded grpc-status still says it is gRPC. */
static void test_grpc_status_tells_grpc(void)
{
	struct buf c = {.n = 0}, s = {.n = 0};
	headers(&c, 7, HTTP2_F_END_STREAM, false, "#3|#6|-4=/pkg.Svc/Get|#70");
	headers(&s, 7, 0, false, "#8|#71");
	headers(&s, 7, HTTP2_F_END_STREAM, false, "-grpc-status=14");
	struct conntrack *ct = new_ct();
	uint32_t seq[2] = {1, 1};
	event_role(ct, 16, IN, 10, seq, c.d, (uint32_t)c.n, (uint32_t)c.n, RASTRO_ROLE_SERVER);
	event_role(ct, 16, OUT, 20, seq, s.d, (uint32_t)s.n, (uint32_t)s.n, RASTRO_ROLE_SERVER);
	CHECK_INT(nrecs, 1);
	if (nrecs == 1) {
		CHECK_INT(recs[0].kind, REQ_GRPC_SERVER);
		CHECK_STR(recs[0].rpc, "pkg.Svc/Get");
		CHECK_INT(recs[0].grpc_status, 14);
		CHECK_INT(recs[0].unresolved, 0);
	}
	conntrack__free(ct);
}

/* h2c: the 101 was seen, stream 1's HTTP/2 response never was. */
static void test_h2c_response_never_seen(void)
{
	const char *up = "GET /up HTTP/1.1\r\nHost: h\r\nUpgrade: h2c\r\n"
			 "Connection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABk\r\n\r\n";
	const char *sw = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n";
	struct conntrack *ct = new_ct();
	uint32_t seq[2] = {1, 1};
	event(ct, 17, IN, 10, seq, up, (uint32_t)strlen(up), (uint32_t)strlen(up));
	event(ct, 17, OUT, 20, seq, sw, (uint32_t)strlen(sw), (uint32_t)strlen(sw));
	close_conn(ct, 17, 30);
	CHECK_INT(nrecs, 1);
	if (nrecs == 1) {
		CHECK_INT(recs[0].status, 0); /* not the 101 */
		CHECK_STR(recs[0].err, "no_response");
		CHECK_INT(recs[0].end, 30);
	}
	conntrack__free(ct);
}

/* At the stream limit, a stream whose end may have been lost is dropped
 * (counted) rather than reported with an end that would be made up. */
static void test_stream_limit_drops_damaged_first(void)
{
	struct buf c = {.n = 0};
	preface(&c);
	headers(&c, 1, 0, false, "#3|#6|#4"); /* its DATA is still to come */
	struct conntrack *ct = new_ct();
	uint32_t seq[2] = {1, 1};
	event(ct, 18, IN, 10, seq, c.d, (uint32_t)c.n, (uint32_t)c.n);
	seq[IN] += 100; /* client bytes lost: stream 1 may have ended in them */
	for (uint32_t i = 1; i < 257; i++) {
		struct buf h = {.n = 0};
		headers(&h, 1 + 2 * i, HTTP2_F_END_STREAM, false, "#2|#6|#4");
		event(ct, 18, IN, 20 + i, seq, h.d, (uint32_t)h.n, (uint32_t)h.n);
	}
	CHECK_INT(nrecs, 0);
	struct conntrack_stats st;
	conntrack__stats(ct, &st);
	CHECK_INT(st.counters[CONN_LOST_EVENTS], 1);
	CHECK_INT(st.counters[CONN_LOST_PIPELINE_OVERFLOW], 0);
	conntrack__free(ct);
}

int main(void)
{
	cfg.max_path_length = 512;
	cfg.max_pending_requests = 64;
	test_framer_every_split();
	test_framer_skip();
	test_plausible();
	test_server_every_split();
	test_client_side();
	test_concurrent_streams();
	test_grpc();
	test_mid_connection();
	test_h2c_upgrade();
	test_preface_in_pieces();
	test_uncaptured();
	test_request_headers_uncaptured();
	test_lost_events();
	test_stream_limit();
	test_server_speaks_first();
	test_data_run_in_unseen_bytes();
	test_grpc_status_tells_grpc();
	test_h2c_response_never_seen();
	test_stream_limit_drops_damaged_first();
	return check_done("test_http2");
}
