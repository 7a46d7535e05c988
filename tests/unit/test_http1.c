/* HTTP/1.x parser and session: every input split at every byte boundary. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "config/config.h"
#include "discover/discover.h"
#include "protocols/conntrack.h"
#include "protocols/http1.h"
#include "request.h"

/* ---- stubs for the connection tracker's view of discovery */

static struct service test_service = {.id = 1, .refs = 1, .name = "svc"};

static struct service *const stub_services[] = {NULL, &test_service};
#include "discovery_stub.h"

/* ---- collected records */

#define MAX_RECS 32
struct rec {
	char method[16], path[600], query[128], ua[64], err[32];
	int status;
	uint64_t start, end, req_body, resp_body;
	bool has_req_body;
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
	snprintf(o->method, sizeof(o->method), "%s", request__str(r, r->method));
	snprintf(o->path, sizeof(o->path), "%s", request__str(r, r->path));
	snprintf(o->query, sizeof(o->query), "%s", request__str(r, r->query));
	snprintf(o->ua, sizeof(o->ua), "%s", request__str(r, r->user_agent));
	snprintf(o->err, sizeof(o->err), "%s", request__str(r, r->error_type));
	o->status = r->status;
	o->start = r->start_ns;
	o->end = r->end_ns;
	o->req_body = r->request_body_bytes;
	o->resp_body = r->response_body_bytes;
	o->has_req_body = r->has_request_body_size;
}

static struct rastro_config cfg;

/* An event of conn at sequence number seq, of `bytes` bytes of which the
 * first `captured` are given: its payload follows it. */
static struct rastro_data_event *make_event(uint64_t conn, int dir, uint64_t ts, uint32_t seq,
					    const char *data, uint32_t captured, uint32_t bytes)
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
	ev->seq = seq;
	ev->direction = (uint8_t)dir;
	memcpy(buf + sizeof(*ev), data, captured);
	return ev;
}

/* Feeds an event of `bytes` bytes of which the first `captured` are given. */
static void event(struct conntrack *ct, uint64_t conn, int dir, uint64_t ts, uint32_t *seq,
		  const char *data, uint32_t captured, uint32_t bytes)
{
	struct rastro_data_event *ev = make_event(conn, dir, ts, seq[dir], data, captured, bytes);
	seq[dir] += bytes;
	conntrack__on_data(ct, ev, (const char *)(ev + 1));
}

static void close_conn(struct conntrack *ct, uint64_t conn, uint64_t ts)
{
	struct rastro_close_event ev = {.hdr = {.type = RASTRO_EV_CLOSE, .ts_ns = ts},
					.conn_id = conn};
	conntrack__on_close(ct, &ev);
}

#define IN RASTRO_DIR_INGRESS
#define OUT RASTRO_DIR_EGRESS

/* ---- pure parser */

static void test_request_head_every_prefix(void)
{
	const char *req = "POST /a/b?x=1&y=2 HTTP/1.1\r\nHost: example.com:8080\r\n"
			  "User-Agent: curl/8\r\nContent-Length: 12\r\n"
			  "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n\r\n"
			  "hello world!";
	size_t head_len = strstr(req, "\r\n\r\n") - req + 4;
	struct http1_head h;
	for (size_t k = 0; k < head_len; k++)
		CHECK_INT(http1__parse_request_head(req, k, &h), HTTP1_NEED_MORE);
	CHECK_INT(http1__parse_request_head(req, strlen(req), &h), (int)head_len);
	CHECK_MEM(h.method.p, h.method.len, "POST");
	CHECK_MEM(h.target.p, h.target.len, "/a/b?x=1&y=2");
	CHECK_MEM(h.host.p, h.host.len, "example.com:8080");
	CHECK_MEM(h.user_agent.p, h.user_agent.len, "curl/8");
	CHECK_MEM(h.traceparent.p, h.traceparent.len,
		  "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
	CHECK_INT(h.content_length, 12);
	CHECK_INT(h.version, 11);
}

static void test_response_heads(void)
{
	struct http1_head h;
	const char *r1 = "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n";
	CHECK_INT(http1__parse_response_head(r1, strlen(r1), &h), (int)strlen(r1));
	CHECK_INT(h.status, 200);
	CHECK(h.chunked);
	/* Header names and these tokens match in any case, and only those
	 * letters: "chunkeD" is chunked, "chunke\xc4" is not. */
	const char *r3 = "HTTP/1.1 200 OK\r\nCONTENT-length: 12\r\nconnection: Keep-ALIVE, "
			 "CLOSE\r\nTRANSFER-ENCODING: gzip\r\nX-Chunked: chunked\r\n\r\n";
	CHECK_INT(http1__parse_response_head(r3, strlen(r3), &h), (int)strlen(r3));
	CHECK_INT(h.content_length, 12);
	CHECK(h.connection_close && h.connection_keep_alive && !h.chunked);
	/* Header lists: each Connection option alone, both, neither, and
	 * look-alikes (one pass over the list finds both); chunked must be the
	 * last coding (an empty element after it is not one: RFC 9110 5.6.1),
	 * in any case of those letters only; h2c anywhere in Upgrade, but not
	 * a versioned or longer name. */
	static const struct {
		const char *line;
		bool close, keep_alive, chunked, h2c;
	} lists[] = {
		{"Connection: close", true, false, false, false},
		{"Connection: keep-alive", false, true, false, false},
		{"Connection:  , keep-alive ;x=1,, close ,", true, true, false, false},
		{"Connection: Upgrade, HTTP2-Settings", false, false, false, false},
		{"Connection: closed, keep-alives, clos", false, false, false, false},
		{"Transfer-Encoding: gzip, chunked ,", false, false, true, false},
		{"Transfer-Encoding: chunked, gzip", false, false, false, false},
		{"Transfer-Encoding: chunkeD", false, false, true, false},
		{"Transfer-Encoding: chunke\xc4", false, false, false, false},
		{"Upgrade: h2c", false, false, false, true},
		{"Upgrade: websocket, H2C ", false, false, false, true},
		{"Upgrade: h2c/1, h2, h2cx", false, false, false, false},
	};
	for (size_t k = 0; k < sizeof(lists) / sizeof(lists[0]); k++) {
		char head[128];
		snprintf(head, sizeof(head), "HTTP/1.1 200 OK\r\n%s\r\n\r\n", lists[k].line);
		CHECK_INT(http1__parse_response_head(head, strlen(head), &h), (int)strlen(head));
		CHECK(h.connection_close == lists[k].close);
		CHECK(h.connection_keep_alive == lists[k].keep_alive);
		CHECK(h.chunked == lists[k].chunked);
		CHECK(h.upgrade_h2c == lists[k].h2c);
	}
	const char *r2 = "HTTP/1.0 404\r\n\r\n"; /* no reason phrase */
	CHECK_INT(http1__parse_response_head(r2, strlen(r2), &h), (int)strlen(r2));
	CHECK_INT(h.status, 404);
	CHECK_INT(h.version, 10);
	const char *bad[] = {"HTTP/1.1 20 OK\r\n\r\n", "HTTP/2.0 200 OK\r\n\r\n",
			     "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
			     "HTTP/1.1 200 OK\r\nbad header\r\n\r\n"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		CHECK_INT(http1__parse_response_head(bad[i], strlen(bad[i]), &h), HTTP1_ERROR);
	/* Not HTTP at all fails fast, without waiting for a line end. */
	CHECK_INT(http1__parse_request_head("\x16\x03\x01\x02", 4, &h), HTTP1_ERROR);
	CHECK_INT(http1__parse_request_head("GET /x HTTP/1.1", 15, &h), HTTP1_NEED_MORE);
	CHECK(!http1__looks_like_request("PING\r\n", 6));
	CHECK(http1__looks_like_request("DELETE /x", 9));
	CHECK(http1__looks_like_response("HTTP/1.1 2", 10));
	CHECK(http1__method_known("PATCH", 5));
	CHECK(!http1__method_known("PURGE", 5));
	CHECK(http1__response_has_no_body("HEAD", 4, 200));
	CHECK(http1__response_has_no_body("GET", 3, 304));
	CHECK(!http1__response_has_no_body("GET", 3, 200));
}

static void test_chunked_every_split(void)
{
	const char *body = "5;ext=1\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT";
	size_t total = strlen(body), msg = total - 4;
	for (size_t k = 0; k <= msg; k++) {
		struct http1_chunked c;
		bool done;
		http1__chunked_init(&c);
		int64_t a = http1__chunked_feed(&c, body, k, &done);
		CHECK_INT(a, (int64_t)k);
		CHECK(!done || k == msg);
		int64_t b = http1__chunked_feed(&c, body + k, total - k, &done);
		CHECK(done);
		CHECK_INT(a + b, (int64_t)msg);
		CHECK_INT(c.payload, 31);
	}
	/* byte by byte */
	struct http1_chunked c;
	bool done = false;
	http1__chunked_init(&c);
	size_t i = 0;
	for (; i < total && !done; i++)
		CHECK_INT(http1__chunked_feed(&c, body + i, 1, &done), 1);
	CHECK_INT(i, msg);
	/* skipping unseen bytes inside chunk data */
	http1__chunked_init(&c);
	CHECK_INT(http1__chunked_feed(&c, "10\r\n0123", 8, &done), 8);
	CHECK(http1__chunked_skip(&c, 12));
	CHECK(!http1__chunked_skip(&c, 1)); /* CRLF is not data */
	CHECK_INT(http1__chunked_feed(&c, "\r\n0\r\n\r\n", 7, &done), 7);
	CHECK(done);
	CHECK_INT(c.payload, 16);
	http1__chunked_init(&c);
	CHECK_INT(http1__chunked_feed(&c, "zz\r\n", 4, &done), HTTP1_ERROR);
}

/* The payload comes out of http1__chunked_data whole, at every split. */
static void test_chunked_data_every_split(void)
{
	const char *body = "5;ext=1\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT";
	size_t total = strlen(body), msg = total - 4;
	for (size_t k = 0; k <= total; k++) {
		struct http1_chunked c;
		char out[64];
		size_t out_len = 0, used = 0;
		bool done = false;
		http1__chunked_init(&c);
		for (size_t part = 0; part < 2 && !done; part++) {
			size_t end = part ? total : k, i = part ? k : 0;
			while (i < end && !done) {
				const char *d;
				size_t dl;
				int64_t n = http1__chunked_data(&c, body + i, end - i, &done, &d, &dl);
				CHECK(n > 0);
				CHECK(!dl || (d >= body + i && d + dl <= body + i + n));
				if (dl) {
					memcpy(out + out_len, d, dl);
					out_len += dl;
				}
				i += (size_t)n;
			}
			used = i;
		}
		CHECK(done);
		CHECK_INT(used, msg);
		CHECK_INT(out_len, 31);
		CHECK(!memcmp(out, "helloabcdefghijklmnopqrstuvwxyz", 31));
	}
}

/* ---- session through the connection tracker */

static struct conntrack *new_ct(void)
{
	nrecs = 0;
	return conntrack__new(&cfg, NULL, NULL, sink, NULL);
}

static void test_request_response_every_split(void)
{
	const char *req = "GET /items?id=7 HTTP/1.1\r\nHost: h\r\nUser-Agent: ua\r\n\r\n";
	const char *resp = "HTTP/1.1 201 Created\r\nContent-Length: 5\r\n\r\nabcde";
	size_t rl = strlen(req), pl = strlen(resp);
	for (size_t k = 1; k < rl; k++) {
		for (size_t j = 1; j < pl; j += (k % 7) + 1) {
			struct conntrack *ct = new_ct();
			uint32_t seq[2] = {1000, 5000};
			event(ct, 1, IN, 100, seq, req, (uint32_t)k, (uint32_t)k);
			event(ct, 1, IN, 200, seq, req + k, (uint32_t)(rl - k), (uint32_t)(rl - k));
			event(ct, 1, OUT, 300, seq, resp, (uint32_t)j, (uint32_t)j);
			CHECK_INT(nrecs, 0);
			event(ct, 1, OUT, 400, seq, resp + j, (uint32_t)(pl - j), (uint32_t)(pl - j));
			CHECK_INT(nrecs, 1);
			if (nrecs == 1) {
				CHECK_STR(recs[0].method, "GET");
				CHECK_STR(recs[0].path, "/items");
				CHECK_STR(recs[0].query, "id=7");
				CHECK_STR(recs[0].ua, "ua");
				CHECK_INT(recs[0].status, 201);
				CHECK_INT(recs[0].start, 100);
				CHECK_INT(recs[0].end, 400);
				CHECK_INT(recs[0].resp_body, 5);
			}
			conntrack__free(ct);
		}
	}
}

static void test_pipelined_in_one_read(void)
{
	struct conntrack *ct = new_ct();
	uint32_t seq[2] = {1, 1};
	const char *reqs = "GET /a HTTP/1.1\r\n\r\nPOST /b HTTP/1.1\r\nContent-Length: 3\r\n\r\nxyz"
			   "HEAD /c HTTP/1.1\r\n\r\n";
	event(ct, 7, IN, 10, seq, reqs, (uint32_t)strlen(reqs), (uint32_t)strlen(reqs));
	const char *r1 = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
	const char *r2 = "HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nbad\r\n0\r\n\r\n";
	const char *r3 = "HTTP/1.1 200 OK\r\nContent-Length: 999\r\n\r\n"; /* HEAD: no body */
	event(ct, 7, OUT, 20, seq, r1, (uint32_t)strlen(r1), (uint32_t)strlen(r1));
	event(ct, 7, OUT, 30, seq, r2, (uint32_t)strlen(r2), (uint32_t)strlen(r2));
	event(ct, 7, OUT, 40, seq, r3, (uint32_t)strlen(r3), (uint32_t)strlen(r3));
	CHECK_INT(nrecs, 3);
	CHECK_STR(recs[0].path, "/a");
	CHECK_INT(recs[0].end, 20);
	CHECK_STR(recs[1].path, "/b");
	CHECK_INT(recs[1].status, 500);
	CHECK_INT(recs[1].req_body, 3);
	CHECK_INT(recs[1].resp_body, 3);
	CHECK_INT(recs[1].end, 30);
	CHECK_STR(recs[2].method, "HEAD");
	CHECK_INT(recs[2].resp_body, 0);
	CHECK_INT(recs[2].end, 40);
	CHECK(recs[0].start == 10 && recs[1].start == 10 && recs[2].start == 10);
	conntrack__free(ct);
}

static void test_client_role_and_interim(void)
{
	struct conntrack *ct = new_ct();
	uint32_t seq[2] = {1, 1};
	const char *req = "PUT /up HTTP/1.1\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n";
	event(ct, 8, OUT, 10, seq, req, (uint32_t)strlen(req), (uint32_t)strlen(req));
	event(ct, 8, IN, 20, seq, "HTTP/1.1 100 Continue\r\n\r\n", 25, 25);
	event(ct, 8, OUT, 30, seq, "data", 4, 4);
	const char *resp = "HTTP/1.1 204 No Content\r\n\r\n";
	event(ct, 8, IN, 40, seq, resp, (uint32_t)strlen(resp), (uint32_t)strlen(resp));
	CHECK_INT(nrecs, 1);
	CHECK_INT(recs[0].status, 204);
	CHECK_INT(recs[0].req_body, 4);
	CHECK_INT(recs[0].start, 10);
	CHECK_INT(recs[0].end, 40);
	conntrack__free(ct);
}

static void test_uncaptured_bytes(void)
{
	/* A 100000-byte body of which the kernel copied only the first 4096
	 * bytes of each write. */
	struct conntrack *ct = new_ct();
	uint32_t seq[2] = {1, 1};
	static char big[4096];
	const char *req = "GET /big HTTP/1.1\r\n\r\n";
	event(ct, 9, IN, 10, seq, req, (uint32_t)strlen(req), (uint32_t)strlen(req));
	const char *head = "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n";
	size_t hl = strlen(head);
	memcpy(big, head, hl);
	memset(big + hl, 'b', sizeof(big) - hl);
	uint32_t left = 100000 + (uint32_t)hl, first = 60000;
	event(ct, 9, OUT, 20, seq, big, 4096, first);
	left -= first;
	memset(big, 'b', sizeof(big));
	event(ct, 9, OUT, 30, seq, big, 4096, left);
	CHECK_INT(nrecs, 1);
	CHECK_INT(recs[0].resp_body, 100000);
	CHECK_INT(recs[0].end, 30);

	/* A chunked body whose terminator lies in uncaptured bytes ends when the
	 * client speaks again, at the time of the last response write. */
	event(ct, 9, IN, 40, seq, req, (uint32_t)strlen(req), (uint32_t)strlen(req));
	const char *ch = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2000\r\n";
	size_t cl = strlen(ch);
	memcpy(big, ch, cl);
	event(ct, 9, OUT, 50, seq, big, 4096, (uint32_t)(cl + 0x2000 + 2 + 0x1000 + 4));
	CHECK_INT(nrecs, 1);
	event(ct, 9, IN, 60, seq, req, (uint32_t)strlen(req), (uint32_t)strlen(req));
	CHECK_INT(nrecs, 2);
	CHECK_INT(recs[1].end, 50);
	CHECK_INT(recs[1].status, 200);
	conntrack__free(ct);
}

static void test_close_without_response_and_gap(void)
{
	struct conntrack *ct = new_ct();
	uint32_t seq[2] = {1, 1};
	const char *req = "GET /gone HTTP/1.1\r\n\r\n";
	event(ct, 10, IN, 10, seq, req, (uint32_t)strlen(req), (uint32_t)strlen(req));
	close_conn(ct, 10, 99);
	CHECK_INT(nrecs, 1);
	CHECK_INT(recs[0].status, 0);
	CHECK_STR(recs[0].err, "no_response");
	CHECK_INT(recs[0].end, 99);

	/* Lost events: a response write was never delivered, so the response
	 * sequence numbers jump. The request it answered is dropped and counted;
	 * the next exchange is reported normally. */
	const char *resp = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
	size_t rl = strlen(req), pl = strlen(resp);
	event(ct, 11, IN, 10, seq, req, (uint32_t)rl, (uint32_t)rl);
	event(ct, 11, OUT, 20, seq, resp, (uint32_t)pl, (uint32_t)pl);
	event(ct, 11, IN, 30, seq, req, (uint32_t)rl, (uint32_t)rl);
	seq[OUT] += (uint32_t)pl; /* its response was lost */
	event(ct, 11, IN, 50, seq, req, (uint32_t)rl, (uint32_t)rl);
	event(ct, 11, OUT, 60, seq, resp, (uint32_t)pl, (uint32_t)pl);
	CHECK_INT(nrecs, 3);
	CHECK_INT(recs[1].start, 10);
	CHECK_INT(recs[2].start, 50);
	CHECK_INT(recs[2].status, 200);
	struct conntrack_stats st;
	conntrack__stats(ct, &st);
	CHECK_INT(st.counters[CONN_LOST_EVENTS], 1);
	conntrack__free(ct);
}

/* ---- events sent ahead of the batch that holds earlier ones */

/* An event of conn at sequence number seq, fed as sent ahead of batch gen of
 * CPU cpu (cpu UINT32_MAX: an event of its own record). */
static void event_at(struct conntrack *ct, uint64_t conn, int dir, uint64_t ts, uint32_t seq,
		     const char *data, uint32_t cpu, uint32_t gen)
{
	uint32_t len = (uint32_t)strlen(data);
	struct rastro_data_event *ev = make_event(conn, dir, ts, seq, data, len, len);
	if (cpu == UINT32_MAX)
		conntrack__on_data(ct, ev, (const char *)(ev + 1));
	else
		conntrack__on_data_after(ct, ev, (const char *)(ev + 1), cpu, gen);
}

static void test_events_sent_ahead(void)
{
	const char *req_a = "GET /a HTTP/1.1\r\n\r\n", *req_b = "GET /b HTTP/1.1\r\n\r\n";
	const char *resp = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
	uint32_t ql = (uint32_t)strlen(req_a), pl = (uint32_t)strlen(resp);
	struct conntrack_stats st;

	/* The response to /a comes ahead of CPU 0's batch 5, which holds /a;
	 * the next request, /b, comes meanwhile: both wait for that batch. */
	struct conntrack *ct = new_ct();
	conntrack__batch_begin(ct, 0, 4); /* batches 4 of CPU 0 and 1 of CPU 1 read */
	conntrack__on_batch(ct, 0, 4);
	conntrack__batch_begin(ct, 1, 1);
	conntrack__on_batch(ct, 1, 1);
	event_at(ct, 1, OUT, 20, 500, resp, 0, 5);
	event_at(ct, 1, IN, 30, 100 + ql, req_b, UINT32_MAX, 0);
	event_at(ct, 2, IN, 25, 100, req_a, UINT32_MAX, 0); /* another connection: not held */
	event_at(ct, 2, OUT, 26, 500, resp, 1, 1);           /* its batch was read already */
	CHECK_INT(nrecs, 1);
	conntrack__batch_begin(ct, 1, 2); /* another CPU's batch: nothing of connection 1 */
	conntrack__on_batch(ct, 1, 2);
	CHECK_INT(nrecs, 1);
	conntrack__batch_begin(ct, 0, 5);
	event_at(ct, 1, IN, 10, 100, req_a, UINT32_MAX, 0);
	CHECK_INT(nrecs, 1);
	conntrack__on_batch(ct, 0, 5);
	CHECK_INT(nrecs, 2);
	event_at(ct, 1, OUT, 40, 500 + pl, resp, UINT32_MAX, 0);
	CHECK_INT(nrecs, 3);
	if (nrecs == 3) {
		CHECK_STR(recs[1].path, "/a");
		CHECK_INT(recs[1].status, 200);
		CHECK_INT(recs[1].start, 10);
		CHECK_INT(recs[1].end, 20);
		CHECK_STR(recs[2].path, "/b");
		CHECK_INT(recs[2].end, 40);
	}
	conntrack__stats(ct, &st);
	CHECK_INT(st.reordered, 2);
	CHECK_INT(st.unordered, 0);
	CHECK_INT(st.counters[CONN_LOST_EVENTS], 0);

	/* A close that comes while events wait ends the connection after them. */
	event_at(ct, 1, IN, 50, 100 + 2 * ql + ql, req_b, 0, 6);
	struct rastro_close_event ce = {.hdr = {.type = RASTRO_EV_CLOSE, .ts_ns = 60}, .conn_id = 1};
	conntrack__on_close(ct, &ce);
	CHECK_INT(nrecs, 3);
	conntrack__batch_begin(ct, 0, 6);
	event_at(ct, 1, IN, 45, 100 + 2 * ql, req_a, UINT32_MAX, 0);
	conntrack__on_batch(ct, 0, 6);
	/* /a then /b, both without a response: the close ended them. */
	CHECK_INT(nrecs, 5);
	if (nrecs == 5) {
		CHECK_STR(recs[3].path, "/a");
		CHECK_STR(recs[3].err, "no_response");
		CHECK_STR(recs[4].path, "/b");
		CHECK_INT(recs[4].end, 60);
	}
	conntrack__free(ct);

	/* Two connections wait for the same batch: they are released in the
	 * order they began to wait (a thread's response, then its next
	 * request's events, all after CPU 0's batch 3, which holds the request
	 * of the first). */
	ct = new_ct();
	event_at(ct, 7, OUT, 20, 500, resp, 0, 3);
	event_at(ct, 8, IN, 21, 100, req_b, 0, 3);
	event_at(ct, 8, OUT, 22, 500, resp, UINT32_MAX, 0);
	CHECK_INT(nrecs, 0);
	conntrack__batch_begin(ct, 0, 3);
	event_at(ct, 7, IN, 10, 100, req_a, UINT32_MAX, 0);
	conntrack__on_batch(ct, 0, 3);
	CHECK_INT(nrecs, 2);
	if (nrecs == 2) {
		CHECK_STR(recs[0].path, "/a");
		CHECK_STR(recs[1].path, "/b");
	}
	conntrack__free(ct);

	/* A new connection whose first event waits is not idle meanwhile. */
	ct = new_ct();
	uint64_t t = 5000000000000ull;
	event_at(ct, 5, OUT, t + 20, 500, resp, 0, 9);
	conntrack__expire(ct, t + 500000000, 60000000000ull);
	conntrack__batch_begin(ct, 0, 9);
	event_at(ct, 5, IN, t + 10, 100, req_a, UINT32_MAX, 0);
	conntrack__on_batch(ct, 0, 9);
	CHECK_INT(nrecs, 1);
	conntrack__stats(ct, &st);
	CHECK_INT(st.unordered, 0);
	conntrack__free(ct);

	/* A batch that never comes (lost): its event, and the one behind it,
	 * are parsed after a second, the first counted as unordered. */
	ct = new_ct();
	event_at(ct, 3, IN, 10, 100, req_a, UINT32_MAX, 0);
	event_at(ct, 3, OUT, 15, 500, resp, UINT32_MAX, 0);
	event_at(ct, 3, IN, 20, 100 + ql, req_b, UINT32_MAX, 0);
	/* The batch holds the first pl bytes of /b's response. */
	event_at(ct, 3, OUT, 30, 500 + 2 * pl, resp, 1, 3);
	event_at(ct, 3, IN, 40, 100 + 2 * ql, req_a, UINT32_MAX, 0);
	conntrack__expire(ct, 900000030, 60000000000ull);
	CHECK_INT(nrecs, 1);
	conntrack__stats(ct, &st);
	CHECK_INT(st.reordered, 2);
	conntrack__expire(ct, 1100000000, 60000000000ull);
	conntrack__stats(ct, &st);
	CHECK_INT(st.unordered, 1);
	/* Both were parsed: the response ended /b (the parser takes a response
	 * head after a gap as the next response), and the close ends the
	 * last request. */
	CHECK_INT(nrecs, 2);
	close_conn(ct, 3, 1200000000);
	CHECK_INT(nrecs, 3);
	if (nrecs == 3) {
		CHECK_STR(recs[1].path, "/b");
		CHECK_INT(recs[1].end, 30);
		CHECK_STR(recs[2].path, "/a");
		CHECK_INT(recs[2].start, 40);
	}
	conntrack__free(ct);
}

static void test_not_http_is_ignored(void)
{
	struct conntrack *ct = new_ct();
	uint32_t seq[2] = {1, 1};
	for (int i = 0; i < 20; i++)
		event(ct, 12, i & 1, 10, seq, "\x16\x03\x01\x00\x05hello", 10, 10);
	CHECK_INT(nrecs, 0);
	conntrack__free(ct);
}

/* An event read on a socket already closed, named by its address (sock):
 * without connection state, as the kernel sends it. */
static void late_event(struct conntrack *ct, uint64_t sock, int dir, uint64_t ts, uint32_t seq,
		       const char *data, uint32_t captured, uint32_t bytes)
{
	struct rastro_data_event *ev = make_event(sock, dir, ts, seq, data, captured, bytes);
	ev->flags = RASTRO_DATA_F_NO_CONN_STATE;
	conntrack__on_data(ct, ev, (const char *)(ev + 1));
}

/* A server's response and then its reset, read by the client after the
 * reset: the kernel ends the connection with those bytes unread (the close
 * event's unread and sock), and the read comes without connection state,
 * named by the socket's address. It is the request's response. Bytes never
 * read: the connection ends a second after the reset, the request
 * unanswered at the reset's time. */
static void test_late_read_after_a_reset(void)
{
	const char *req = "GET /r HTTP/1.1\r\nHost: h\r\n\r\n";
	const char *resp = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
	uint32_t ql = (uint32_t)strlen(req), pl = (uint32_t)strlen(resp);
	const uint64_t sock = 0xffff888012345600ull;
	struct conntrack *ct = new_ct();
	uint32_t seq[2] = {100, 500};
	event(ct, 3, OUT, 10, seq, req, ql, ql);
	struct rastro_close_event ce = {.hdr = {.type = RASTRO_EV_CLOSE, .ts_ns = 20},
					.conn_id = 3, .flags = RASTRO_CLOSE_F_FINAL,
					.unread = pl, .sock = sock};
	conntrack__on_close(ct, &ce);
	CHECK_INT(nrecs, 0);
	/* Another socket's event without state is not this connection's. */
	late_event(ct, sock + 64, IN, 30, 900, resp, pl, pl);
	CHECK_INT(nrecs, 0);
	/* The response in two reads: the connection ends after the second. */
	late_event(ct, sock, IN, 70, 500, resp, 10, 10);
	CHECK_INT(nrecs, 0);
	late_event(ct, sock, IN, 71, 510, resp + 10, pl - 10, pl - 10);
	CHECK_INT(nrecs, 1);
	if (nrecs == 1) {
		CHECK_STR(recs[0].path, "/r");
		CHECK_INT(recs[0].status, 200);
		CHECK_STR(recs[0].err, "");
		CHECK_INT(recs[0].end, 71);
		CHECK_INT(recs[0].resp_body, 2);
	}
	struct conntrack_stats st;
	conntrack__stats(ct, &st);
	CHECK_INT(st.late_reads, 2);
	CHECK_INT(st.connections, 1); /* the other socket's, without a protocol */

	/* Never read: unanswered, at the reset, once a second has passed. */
	event(ct, 4, OUT, 1000, seq, req, ql, ql);
	ce.hdr.ts_ns = 2000;
	ce.conn_id = 4;
	conntrack__on_close(ct, &ce);
	conntrack__expire(ct, 2000 + 1000000000ull, 3600000000000ull);
	CHECK_INT(nrecs, 1);
	conntrack__expire(ct, 2000 + 1000000001ull, 3600000000000ull);
	CHECK_INT(nrecs, 2);
	if (nrecs == 2) {
		CHECK_STR(recs[1].err, "no_response");
		CHECK_INT(recs[1].end, 2000);
	}

	/* A socket whose unread bytes were never read, then another one at the
	 * same address (the first was freed), reset too: the late read is the
	 * second's, and the first ends, unanswered, when the second is kept. */
	event(ct, 6, OUT, 2500, seq, req, ql, ql);
	ce.hdr.ts_ns = 2510;
	ce.conn_id = 6;
	conntrack__on_close(ct, &ce);
	CHECK_INT(nrecs, 2);
	event(ct, 7, OUT, 2600, seq, "GET /s HTTP/1.1\r\n\r\n", 19, 19);
	ce.hdr.ts_ns = 2610;
	ce.conn_id = 7;
	conntrack__on_close(ct, &ce);
	CHECK_INT(nrecs, 3);
	late_event(ct, sock, IN, 2620, 500, resp, pl, pl);
	CHECK_INT(nrecs, 4);
	if (nrecs == 4) {
		CHECK_STR(recs[2].path, "/r");
		CHECK_STR(recs[2].err, "no_response");
		CHECK_INT(recs[2].end, 2510);
		CHECK_STR(recs[3].path, "/s");
		CHECK_INT(recs[3].status, 200);
	}
	nrecs = 2;

	/* A server that reads a request after its client's reset: it cannot
	 * answer; the request ends when it was read, not at the reset before. */
	ce.hdr.ts_ns = 3000;
	ce.conn_id = 5;
	ce.unread = ql;
	event(ct, 5, IN, 2900, seq, "", 0, 0); /* the connection, known before */
	conntrack__on_close(ct, &ce);
	late_event(ct, sock, IN, 3050, 100, req, ql, ql);
	CHECK_INT(nrecs, 3);
	if (nrecs == 3) {
		CHECK_STR(recs[2].path, "/r");
		CHECK_INT(recs[2].start, 3050);
		CHECK_INT(recs[2].end, 3050);
	}

	/* Past 1,024 kept, a connection reset with bytes unread ends at once:
	 * counted. */
	conntrack__stats(ct, &st);
	CHECK_INT(st.late_not_kept, 0);
	for (uint64_t i = 0; i < 1025; i++) {
		event(ct, 100 + i, OUT, 4000, seq, req, ql, ql);
		ce.hdr.ts_ns = 4001;
		ce.conn_id = 100 + i;
		ce.sock = sock + 4096 * (i + 1);
		conntrack__on_close(ct, &ce);
	}
	conntrack__stats(ct, &st);
	CHECK_INT(st.late_not_kept, 1);
	CHECK_INT(st.connections, 1 + 1024);
	conntrack__free(ct);
}

int main(void)
{
	cfg.max_path_length = 512;
	cfg.max_pending_requests = 64;
	test_request_head_every_prefix();
	test_response_heads();
	test_chunked_every_split();
	test_chunked_data_every_split();
	test_request_response_every_split();
	test_pipelined_in_one_read();
	test_client_role_and_interim();
	test_uncaptured_bytes();
	test_close_without_response_and_gap();
	test_events_sent_ahead();
	test_late_read_after_a_reset();
	test_not_http_is_ignored();
	return check_done("test_http1");
}
