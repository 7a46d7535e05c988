/* Shared by the database protocol unit tests: stubs for the connection
 * tracker's view of discovery, syscall events fed through the real
 * connection tracker, and the records it emits, flattened to strings. */
#ifndef RASTRO_DB_HARNESS_H
#define RASTRO_DB_HARNESS_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "config/config.h"
#include "discover/discover.h"
#include "protocols/conntrack.h"
#include "request.h"
#include "semconv.h"

static struct service test_service = {.id = 1, .refs = 1, .name = "svc"};

static struct service *const stub_services[] = {NULL, &test_service};
#include "discovery_stub.h"

#define MAX_RECS 64
struct rec {
	int kind;
	int system;
	char name[128], op[32], coll[128], ns[64], query[2100], status[16], err[32], msg[300];
	uint64_t start, end;
	uint32_t tid, seq;
};
static struct rec recs[MAX_RECS];
static int nrecs;

static __attribute__((unused)) void sink(void *ctx, struct request *r)
{
	(void)ctx;
	if (nrecs == MAX_RECS)
		return;
	struct rec *o = &recs[nrecs++];
	char ebuf[16];
	memset(o, 0, sizeof(*o));
	o->kind = r->kind;
	o->system = r->db_system;
	semconv__span_name(r, o->name, sizeof(o->name));
	snprintf(o->op, sizeof(o->op), "%s", request__str(r, r->db_operation));
	snprintf(o->coll, sizeof(o->coll), "%s", request__str(r, r->db_collection));
	snprintf(o->ns, sizeof(o->ns), "%s", request__str(r, r->db_namespace));
	snprintf(o->query, sizeof(o->query), "%s", request__str(r, r->db_query));
	snprintf(o->status, sizeof(o->status), "%s", request__str(r, r->db_status));
	const char *e = semconv__error_type(r, ebuf, sizeof(ebuf));
	snprintf(o->err, sizeof(o->err), "%s", e ? e : "");
	snprintf(o->msg, sizeof(o->msg), "%s", request__str(r, r->error_message));
	o->start = r->start_ns;
	o->end = r->end_ns;
	o->tid = r->tid;
	o->seq = r->request_seq;
}

static struct rastro_config cfg;

static __attribute__((unused)) struct conntrack *new_ct(void)
{
	nrecs = 0;
	memset(recs, 0, sizeof(recs));
	return conntrack__new(&cfg, NULL, NULL, sink, NULL);
}

#define IN RASTRO_DIR_INGRESS
#define OUT RASTRO_DIR_EGRESS

/* One syscall: `bytes` bytes moved, the first `captured` of them given. */
static __attribute__((unused)) void event_role(struct conntrack *ct, uint64_t conn, int dir,
					       uint64_t ts, uint32_t *seq, const void *data,
					       uint32_t captured, uint32_t bytes, uint8_t role)
{
	static char buf[sizeof(struct rastro_data_event) + 8192];
	struct rastro_data_event *ev = (void *)buf;
	if (captured > 8192)
		captured = 8192;
	memset(ev, 0, sizeof(*ev));
	ev->hdr.type = RASTRO_EV_DATA;
	ev->hdr.tgid = 42;
	ev->hdr.ts_ns = ts;
	ev->tid = 43;
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

static __attribute__((unused)) void event(struct conntrack *ct, uint64_t conn, int dir, uint64_t ts,
					  uint32_t *seq, const void *data, uint32_t captured,
					  uint32_t bytes)
{
	event_role(ct, conn, dir, ts, seq, data, captured, bytes, RASTRO_ROLE_CLIENT);
}

/* All of it, copied. */
static __attribute__((unused)) void send_all(struct conntrack *ct, uint64_t conn, int dir,
					     uint64_t ts, uint32_t *seq, const void *data,
					     size_t len)
{
	event(ct, conn, dir, ts, seq, data, (uint32_t)len, (uint32_t)len);
}

/* Split at byte k into two syscalls at ts and ts + 1 (k = 0 or len: one, at ts). */
static __attribute__((unused)) void send_split(struct conntrack *ct, uint64_t conn, int dir,
					       uint64_t ts, uint32_t *seq, const void *data,
					       size_t len, size_t k)
{
	const char *p = data;
	if (k && k < len) {
		send_all(ct, conn, dir, ts, seq, p, k);
		send_all(ct, conn, dir, ts + 1, seq, p + k, len - k);
	} else {
		send_all(ct, conn, dir, ts, seq, p, len);
	}
}

static __attribute__((unused)) void close_conn(struct conntrack *ct, uint64_t conn, uint64_t ts)
{
	struct rastro_close_event ev = {.hdr = {.type = RASTRO_EV_CLOSE, .ts_ns = ts},
					.conn_id = conn};
	conntrack__on_close(ct, &ev);
}

static __attribute__((unused)) uint64_t counter(struct conntrack *ct, enum conn_counter which)
{
	struct conntrack_stats st;
	conntrack__stats(ct, &st);
	return st.counters[which];
}

/* A growable byte buffer to build protocol messages. */
struct buf {
	char *p;
	size_t len, cap;
};

static __attribute__((unused)) void buf_put(struct buf *b, const void *data, size_t n)
{
	if (!n)
		return;
	if (b->len + n > b->cap) {
		b->cap = (b->len + n) * 2 + 64;
		b->p = realloc(b->p, b->cap);
	}
	memcpy(b->p + b->len, data, n);
	b->len += n;
}

static __attribute__((unused)) void buf_str(struct buf *b, const char *s)
{
	buf_put(b, s, strlen(s));
}

static __attribute__((unused)) void buf_u8(struct buf *b, uint8_t v)
{
	buf_put(b, &v, 1);
}

static __attribute__((unused)) void buf_free(struct buf *b)
{
	free(b->p);
	memset(b, 0, sizeof(*b));
}

#endif
