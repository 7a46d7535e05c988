/* Trace contexts: the link index grows from a few pages to its bound and
 * stays correct through growth, eviction and expiry; a context evicted and
 * recycled for another request is never mistaken for the one it was; a
 * finished request's context is freed 100 ms after its end, or after the
 * longer grace the agent sets. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "config/config.h"
#include "request.h"
#include "traces/traces.h"

#define NS 1000000000ull
#define MAX_CONTEXTS 32768 /* traces.c */

static struct rastro_config cfg;

/* One TCP connection per n: client 10.0.0.1:(n % 60000 + 1), the server
 * 10.0.0.2:80 (its address says which thousand n is in). */
static void tuple_of(uint32_t n, bool server_side, struct request *r)
{
	uint8_t client[16] = {10, 0, 0, 1}, server[16] = {10, 0, 0, 2};
	memcpy(server + 4, &n, 4);
	uint16_t cport = (uint16_t)(n % 60000 + 1);
	memcpy(server_side ? r->tuple.remote_addr : r->tuple.local_addr, client, 16);
	memcpy(server_side ? r->tuple.local_addr : r->tuple.remote_addr, server, 16);
	r->tuple.local_port = server_side ? 80 : cport;
	r->tuple.remote_port = server_side ? cport : 80;
}

static void start(struct traces *t, struct request *r, enum request_kind kind, uint32_t n,
		  uint64_t ts)
{
	request__init(r, kind);
	r->pid = kind == REQ_HTTP_SERVER ? 100 : 200;
	r->tid = r->pid + n % 7;
	tuple_of(n, kind == REQ_HTTP_SERVER, r);
	r->request_seq = 1000 + n;
	r->request_seq_valid = true;
	r->start_ns = ts;
	r->end_ns = ts + 1000;
	r->started = true;
	traces__start(t, r);
}

static void test_growth_and_links(void)
{
	memset(&cfg, 0, sizeof(cfg));
	cfg.sampler = SAMPLER_ALWAYS_ON;
	struct traces *t = traces__new(&cfg, 42);
	static struct request srv[1000], cli;
	struct traces_stats st;
	const uint32_t total = MAX_CONTEXTS + 5000;
	uint64_t ts = 10 * NS;
	/* Servers waiting for their client ends: both indexes grow from their
	 * smallest size to their largest, then the oldest contexts go. */
	for (uint32_t n = 0; n < total; n++) {
		struct request *r = n >= total - 1000 ? &srv[n - (total - 1000)] : &cli;
		start(t, r, REQ_HTTP_SERVER, n, ts + n);
	}
	traces__stats(t, &st);
	CHECK_INT(st.contexts, MAX_CONTEXTS);
	CHECK_INT(st.contexts_evicted, total - MAX_CONTEXTS);
	/* The client ends of the last 1000 arrive: each server span becomes its
	 * client span's child, and keeps that parent when it finishes. */
	int linked = 0, parent_ok = 0;
	for (uint32_t i = 0; i < 1000; i++) {
		uint32_t n = total - 1000 + i;
		start(t, &cli, REQ_HTTP_CLIENT, n, ts + total + i);
		traces__finish(t, &cli);
		traces__finish(t, &srv[i]);
		linked += srv[i].has_parent;
		parent_ok += !memcmp(srv[i].parent_span_id, cli.span_id, 8) &&
			     !memcmp(srv[i].trace_id, cli.trace_id, 16);
	}
	CHECK_INT(linked, 1000);
	CHECK_INT(parent_ok, 1000);
	traces__stats(t, &st);
	CHECK_INT(st.linked_remote, 1000);
	/* An evicted server's client end finds nothing and starts a trace. */
	start(t, &cli, REQ_HTTP_CLIENT, 0, ts + total + 2000);
	traces__finish(t, &cli);
	CHECK(!cli.has_parent);
	/* Everything expires; the tables still work afterwards. */
	traces__expire(t, ts + total + 3000 + 61 * NS);
	traces__stats(t, &st);
	CHECK_INT(st.contexts, 0);
	start(t, &srv[0], REQ_HTTP_SERVER, 7, ts + 100 * NS);
	start(t, &cli, REQ_HTTP_CLIENT, 7, ts + 100 * NS + 1);
	traces__finish(t, &srv[0]);
	CHECK(srv[0].has_parent);
	CHECK(!memcmp(srv[0].parent_span_id, cli.span_id, 8));
	traces__free(t);
}

static void test_recycled_contexts(void)
{
	memset(&cfg, 0, sizeof(cfg));
	cfg.sampler = SAMPLER_ALWAYS_ON;
	struct traces *t = traces__new(&cfg, 7);
	static struct request srv, child, other, last;
	uint64_t ts = 10 * NS;
	start(t, &srv, REQ_HTTP_SERVER, 1, ts);
	/* A database call made by the thread serving srv: its child. */
	request__init(&child, REQ_DB_CLIENT);
	child.pid = srv.pid;
	child.tid = srv.tid;
	child.start_ns = ts + 1;
	child.end_ns = ts + 2;
	child.started = true;
	traces__start(t, &child);
	/* Enough other requests that srv's context, the oldest, is evicted by
	 * the last one, which takes over its memory. */
	for (uint32_t i = 0; i < MAX_CONTEXTS - 2; i++)
		start(t, &other, REQ_HTTP_SERVER, 1000 + i, ts + 2 + i);
	start(t, &last, REQ_HTTP_SERVER, 999, ts + MAX_CONTEXTS);
	traces__finish(t, &last);
	traces__finish(t, &child);
	traces__finish(t, &srv);
	/* The child still names srv as its parent and keeps srv's trace (its
	 * copy), not the trace of the request that recycled srv's context. */
	CHECK(child.has_parent);
	CHECK(!child.parent_remote); /* the same process's span */
	CHECK(!memcmp(child.parent_span_id, srv.span_id, 8));
	CHECK(memcmp(child.trace_id, last.trace_id, 16));
	/* srv itself was evicted: a root of its own, not last's trace. */
	CHECK(!srv.has_parent);
	CHECK(memcmp(srv.trace_id, last.trace_id, 16));
	CHECK(memcmp(srv.span_id, last.span_id, 8));
	traces__free(t);
}

/* A finished request's context is kept 100 ms after its end (in event time),
 * for a late event of its connection's other end and for children still
 * running; then freed, without counting as an eviction. */
static void test_finished_contexts_freed(void)
{
	memset(&cfg, 0, sizeof(cfg));
	cfg.sampler = SAMPLER_ALWAYS_ON;
	struct traces *t = traces__new(&cfg, 9);
	static struct request srv, cli, child, other;
	struct traces_stats st;
	const uint64_t ms = 1000000ull;
	uint64_t ts = 10 * NS;

	/* 20,000 server requests at 20,000 per second, each finished, none a
	 * parent: each is freed as it finishes. */
	for (uint32_t n = 0; n < 20000; n++) {
		start(t, &other, REQ_HTTP_SERVER, n, ts + n * 50000ull);
		traces__finish(t, &other);
	}
	traces__stats(t, &st);
	CHECK_INT(st.contexts, 0);
	/* 20,000 client requests the same way: about 100 ms of them are held
	 * (for their server ends' events), not the 32,768 of the cap. */
	ts += 2 * NS;
	for (uint32_t n = 0; n < 20000; n++) {
		start(t, &other, REQ_HTTP_CLIENT, n, ts + n * 50000ull);
		traces__finish(t, &other);
	}
	traces__stats(t, &st);
	CHECK(st.contexts >= 1999 && st.contexts <= 2002);
	CHECK_INT(st.contexts_evicted, 0);

	/* The server end of a finished client, 50 ms late: still linked. */
	ts += 2 * NS;
	start(t, &cli, REQ_HTTP_CLIENT, 1, ts);
	traces__finish(t, &cli);
	start(t, &srv, REQ_HTTP_SERVER, 1, ts + 50 * ms);
	traces__finish(t, &srv);
	CHECK(srv.has_parent && !memcmp(srv.parent_span_id, cli.span_id, 8));
	CHECK(srv.parent_remote); /* another process's client end */
	CHECK(!cli.parent_remote);
	CHECK(!memcmp(srv.trace_id, cli.trace_id, 16));
	traces__stats(t, &st);
	CHECK_INT(st.linked_remote, 1);
	/* 150 ms late: the client's context is gone, the server starts a trace. */
	start(t, &cli, REQ_HTTP_CLIENT, 2, ts + 200 * ms);
	traces__finish(t, &cli);
	start(t, &srv, REQ_HTTP_SERVER, 2, ts + 351 * ms);
	traces__finish(t, &srv);
	CHECK(!srv.has_parent);
	traces__stats(t, &st);
	CHECK_INT(st.linked_remote, 1);
	/* The client end of a finished server: the server's span went out at
	 * its end, a root, and stopped waiting; the client is not made its
	 * parent after the fact (nor counted as linked). */
	start(t, &srv, REQ_HTTP_SERVER, 3, ts + 400 * ms);
	traces__finish(t, &srv);
	CHECK(!srv.has_parent);
	start(t, &cli, REQ_HTTP_CLIENT, 3, ts + 401 * ms);
	traces__finish(t, &cli);
	CHECK(!cli.has_parent);
	traces__stats(t, &st);
	CHECK_INT(st.linked_remote, 1);

	/* A child still running when its parent's context is freed keeps the
	 * parent's trace (its copy) and names the parent. */
	ts += 1 * NS;
	start(t, &srv, REQ_HTTP_SERVER, 3, ts);
	request__init(&child, REQ_DB_CLIENT);
	child.pid = srv.pid;
	child.tid = srv.tid;
	child.start_ns = ts + 1;
	child.end_ns = ts + 500 * ms;
	child.started = true;
	traces__start(t, &child);
	traces__finish(t, &srv);
	traces__stats(t, &st);
	CHECK_INT(st.contexts, 2); /* srv, a parent, is kept for its grace */
	for (uint32_t n = 0; n < 100; n++) { /* recycle the memory of srv's */
		start(t, &other, REQ_HTTP_SERVER, 100 + n, ts + 200 * ms + n);
		traces__finish(t, &other);
	}
	traces__finish(t, &child);
	CHECK(child.has_parent);
	CHECK(!memcmp(child.parent_span_id, srv.span_id, 8));
	CHECK(!memcmp(child.trace_id, srv.trace_id, 16));

	/* The timer's expiry frees finished contexts the same way, in event
	 * time: the child, the last to end (at 500 ms), is kept when the timer
	 * runs 10 s later (within the link window); the others, which ended
	 * over 100 ms before it, are freed. */
	traces__expire(t, ts + 10 * NS);
	traces__stats(t, &st);
	CHECK_INT(st.contexts, 1);
	/* A later request's end moves event time on: the child goes too. */
	start(t, &other, REQ_HTTP_CLIENT, 999, ts + 700 * ms);
	traces__finish(t, &other);
	traces__expire(t, ts + 10 * NS);
	traces__stats(t, &st);
	CHECK_INT(st.contexts, 1); /* only the newest */
	/* With no event since, the link window (60 s) frees it too. */
	traces__expire(t, ts + 700 * ms + 61 * NS);
	traces__stats(t, &st);
	CHECK_INT(st.contexts, 0);
	CHECK_INT(st.contexts_evicted, 0);
	traces__free(t);
}

/* The grace follows how long the CPUs hold events (traces__set_grace): a
 * server end read after a later request of its client's CPU, that much
 * later in event time, still finds its finished client. */
static void test_grace_set(void)
{
	memset(&cfg, 0, sizeof(cfg));
	cfg.sampler = SAMPLER_ALWAYS_ON;
	const uint64_t ms = 1000000ull;
	for (int longer = 0; longer <= 1; longer++) {
		struct traces *t = traces__new(&cfg, 13);
		static struct request srv, cli, next;
		CHECK_INT(traces__grace(t), 100 * ms);
		traces__set_grace(t, 10 * ms); /* never below 100 ms */
		CHECK_INT(traces__grace(t), 100 * ms);
		if (longer)
			traces__set_grace(t, 1000 * ms);
		uint64_t ts = 10 * NS;
		start(t, &cli, REQ_HTTP_CLIENT, 1, ts);
		traces__finish(t, &cli);
		/* The client's next request, 300 ms on, is read first ... */
		start(t, &next, REQ_HTTP_CLIENT, 2, ts + 300 * ms);
		traces__finish(t, &next);
		/* ... then the server's end of the first, held on its CPU. */
		start(t, &srv, REQ_HTTP_SERVER, 1, ts + 1 * ms);
		traces__finish(t, &srv);
		CHECK_INT(srv.has_parent, longer);
		if (longer)
			CHECK(!memcmp(srv.parent_span_id, cli.span_id, 8) &&
			      !memcmp(srv.trace_id, cli.trace_id, 16));
		traces__free(t);
	}
}

/* A request that is not reported (routes.ignored_patterns) lets go of its
 * context as a finished one does, without deciding a span: a server without
 * children is freed at once, not after the 60 s link window. */
static void test_dropped_contexts_freed(void)
{
	memset(&cfg, 0, sizeof(cfg));
	cfg.sampler = SAMPLER_ALWAYS_ON;
	struct traces *t = traces__new(&cfg, 11);
	static struct request srv, child, cli;
	struct traces_stats st;
	uint64_t ts = 10 * NS;

	for (uint32_t n = 0; n < 1000; n++) {
		start(t, &srv, REQ_HTTP_SERVER, n, ts + n * 1000);
		memset(srv.trace_id, 0, 16);
		traces__drop(t, &srv);
		CHECK(!srv.has_parent && !srv.sampled); /* not decided */
	}
	traces__stats(t, &st);
	CHECK_INT(st.contexts, 0);
	CHECK_INT(st.sampled_out, 0);
	/* A dropped server's child keeps it (and its trace) for the grace. */
	start(t, &srv, REQ_HTTP_SERVER, 5000, ts + NS);
	request__init(&child, REQ_DB_CLIENT);
	child.pid = srv.pid;
	child.tid = srv.tid;
	child.start_ns = ts + NS + 1;
	child.end_ns = ts + NS + 2;
	child.started = true;
	traces__start(t, &child);
	traces__drop(t, &srv);
	traces__finish(t, &child);
	CHECK(child.has_parent && !memcmp(child.parent_span_id, srv.span_id, 8));
	traces__stats(t, &st);
	CHECK_INT(st.contexts, 2);
	/* A dropped client is held like a finished one, for its server end. */
	start(t, &cli, REQ_HTTP_CLIENT, 6000, ts + 2 * NS);
	traces__drop(t, &cli);
	traces__stats(t, &st);
	CHECK_INT(st.contexts, 1);
	traces__free(t);
}

int main(void)
{
	test_growth_and_links();
	test_recycled_contexts();
	test_finished_contexts_freed();
	test_grace_set();
	test_dropped_contexts_freed();
	return check_done("test_traces");
}
