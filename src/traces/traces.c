#include "traces/traces.h"

#include <stdlib.h>
#include <string.h>

#include "common/u64map.h"
#include "log.h"

/* A context lives this long after its last use: long enough for children and
 * for the other end of a connection to find it. */
#define LINK_WINDOW_NS (60ull * 1000000000ull)
/* A finished request's context is kept this long after its end (in the
 * kernel's event time, so a backlog in rastro does not shorten it), then
 * freed. Its span's trace is decided by then; what may still need it: the
 * other end of its connection, whose event can reach the ring buffer after
 * this end's when its thread was held up inside the syscall, and children
 * still running, which otherwise fall back to the copy of the trace id they
 * took at their start. Freed this early, a server at tens of thousands of
 * requests per second holds a fraction of a second of contexts, recycled
 * while still in the CPU's cache, instead of MAX_CONTEXTS cold ones. A
 * finished server that no context names as its parent is needed by nothing
 * (its client end's event can no longer change its span: traces__finish) and
 * is freed at once. The grace is at least DONE_GRACE_NS, and longer when
 * the CPUs hold their events longer (traces__set_grace): the other end's
 * event may wait on its CPU until the agent's next delivery of what the
 * CPUs hold, while this CPU's later events, read first, move the event time
 * on. */
#define DONE_GRACE_NS (100ull * 1000000ull)
#define MAX_CONTEXTS 32768
#define MAX_DEPTH 64

/* Contexts are found through pointers (the request's trace_ctx, a child's
 * parent, the serving-thread map), never through a span-id index: a pointer
 * is one cache line, an index entry one more, and eviction two more. A
 * pointer is checked against the span id it was taken with: contexts live in
 * chunks that are never freed while traces run, and a recycled one has a new
 * span id (0 while free). */
struct ctx {
	uint64_t span_id;        /* 0: free */
	uint64_t parent_span_id; /* 0: none */
	struct ctx *parent;      /* the parent's context when local: valid while
				  * parent->span_id == parent_span_id */
	uint8_t trace_id[16];    /* final when explicit, else a fallback */
	uint8_t flags;           /* W3C flags of a remote parent */
	bool explicit_trace;     /* a root, or joined a trace through traceparent */
	bool remote_parent;      /* the parent came from a traceparent header */
	bool server;
	bool in_threads;         /* put in the serving-thread map, not yet taken out */
	bool done : 1;           /* finished: in the done list, not the live one */
	bool parent_elsewhere : 1; /* set_parent gave it another process's span */
	uint16_t children;       /* contexts whose parent it is, not yet freed
				  * (UINT16_MAX: that many or more, for good) */
	uint32_t pid, tid;
	/* Registered in the link index under this key: as the client end of a
	 * connection (client, until freed), or as a server waiting for its
	 * client end (until it finishes). */
	uint64_t link_key;
	uint64_t last_ns;
	struct ctx *prev, *next; /* in its list (live or done), oldest first */
};

struct ctx_list {
	struct ctx *head, *tail;
};

/* The link index (link key -> context) is an open addressing table of (key,
 * context) pairs: a lookup, insert or removal is one cache line, where a map
 * with separate key and value arrays costs two and chained buckets one per
 * link walked. It doubles when half full, from INDEX_MIN_SLOTS: each context
 * is in it at most once, so it never needs more than twice MAX_CONTEXTS
 * slots (1 MiB), and a few hundred contexts cost a few pages rather than
 * that. */
#define INDEX_MIN_SLOTS 1024
#define INDEX_MAX_SLOTS (2 * MAX_CONTEXTS)

struct slot {
	uint64_t key; /* 0: empty */
	struct ctx *c;
};

struct index {
	struct slot *s;
	uint32_t mask; /* slots - 1 */
	uint32_t count;
};

/* Contexts come from chunks, recycled through a free list: a request costs
 * no malloc/free, and the bound (MAX_CONTEXTS) bounds the memory too. */
#define CHUNK_CONTEXTS 256

struct ctx_chunk {
	struct ctx_chunk *next;
	struct ctx items[CHUNK_CONTEXTS];
};

struct traces {
	const struct rastro_config *cfg;
	uint64_t rng;
	struct ctx_chunk *chunks;
	struct ctx *free_ctx; /* linked through next */
	uint32_t count;       /* contexts held */
	/* link key -> the newest client request registered under it, or a
	 * server request waiting for its client end (c->server tells) */
	struct index links;
	struct u64map threads; /* tid -> ctx of the server request it serves */
	struct ctx_list live;  /* started, not finished: in the order they started */
	struct ctx_list done;  /* finished: in the order they finished */
	uint64_t event_ns;     /* the newest event time seen (a request's start or end) */
	uint64_t grace_ns;     /* of a finished context: >= DONE_GRACE_NS */
	struct traces_stats stats;
};

static uint64_t next_random(struct traces *t)
{
	uint64_t x = t->rng;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	t->rng = x;
	return x * 0x2545F4914F6CDD1DULL;
}

static uint64_t nonzero_random(struct traces *t)
{
	uint64_t v;
	while (!(v = next_random(t)))
		;
	return v;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1; /* uppercase is invalid in traceparent */
}

static bool parse_hex(const char *s, size_t n, uint8_t *out)
{
	bool nonzero = false;
	for (size_t i = 0; i < n; i++) {
		int h = hexval(s[2 * i]), l = hexval(s[2 * i + 1]);
		if (h < 0 || l < 0)
			return false;
		out[i] = (uint8_t)(h << 4 | l);
		nonzero |= out[i] != 0;
	}
	return nonzero;
}

int traces__parse_traceparent(const char *s, size_t len, uint8_t trace_id[16],
			      uint8_t parent_id[8], uint8_t *flags)
{
	/* version "-" trace-id(32) "-" parent-id(16) "-" flags(2) */
	uint8_t version;
	if (len < 55 || s[2] != '-' || s[35] != '-' || s[52] != '-')
		return -1;
	if (hexval(s[0]) < 0 || hexval(s[1]) < 0)
		return -1;
	version = (uint8_t)(hexval(s[0]) << 4 | hexval(s[1]));
	if (version == 0xff)
		return -1;
	/* Version 00 has exactly these fields; later versions may append more. */
	if (version == 0 && len != 55)
		return -1;
	if (len > 55 && s[55] != '-')
		return -1;
	uint8_t f;
	if (!parse_hex(s + 3, 16, trace_id) || !parse_hex(s + 36, 8, parent_id))
		return -1;
	if (hexval(s[53]) < 0 || hexval(s[54]) < 0)
		return -1;
	f = (uint8_t)(hexval(s[53]) << 4 | hexval(s[54]));
	*flags = f;
	return 0;
}

bool traces__ratio_keeps(const uint8_t trace_id[16], double ratio)
{
	if (ratio >= 1.0)
		return true;
	if (ratio <= 0.0)
		return false;
	/* The low 8 bytes of the trace id, big-endian, against ratio * 2^64. */
	uint64_t v = 0;
	for (int i = 8; i < 16; i++)
		v = v << 8 | trace_id[i];
	return (double)v < ratio * 18446744073709551616.0;
}

static void list_unlink(struct ctx_list *l, struct ctx *c)
{
	if (c->prev)
		c->prev->next = c->next;
	else
		l->head = c->next;
	if (c->next)
		c->next->prev = c->prev;
	else
		l->tail = c->prev;
	c->prev = c->next = NULL;
}

static void list_append(struct ctx_list *l, struct ctx *c)
{
	c->prev = l->tail;
	c->next = NULL;
	if (l->tail)
		l->tail->next = c;
	else
		l->head = c;
	l->tail = c;
}

static struct ctx_list *list_of(struct traces *t, const struct ctx *c)
{
	return c->done ? &t->done : &t->live;
}

/* The context to evict first: the one that finished first, else the live
 * one that started first. */
static struct ctx *oldest(const struct traces *t)
{
	return t->done.head ? t->done.head : t->live.head;
}

/* Removes a thread's entry only if it still names this context. */
static void unindex(struct u64map *m, uint64_t key, const struct ctx *c)
{
	if (key && u64map__get(m, key) == c)
		u64map__remove(m, key);
}

/* Span ids are random and link keys are hashes: their own bits spread them. */
static uint32_t slot_of(const struct index *ix, uint64_t key)
{
	return (uint32_t)(key ^ (key >> 32)) & ix->mask;
}

static bool index_init(struct index *ix)
{
	ix->s = calloc(INDEX_MIN_SLOTS, sizeof(*ix->s));
	ix->mask = INDEX_MIN_SLOTS - 1;
	ix->count = 0;
	return ix->s != NULL;
}

static struct ctx *index_get(const struct index *ix, uint64_t key)
{
	for (uint32_t i = slot_of(ix, key);; i = (i + 1) & ix->mask) {
		if (ix->s[i].key == key)
			return ix->s[i].c;
		if (!ix->s[i].key)
			return NULL;
	}
}

static uint32_t index_find(const struct index *ix, uint64_t key)
{
	uint32_t i = slot_of(ix, key);
	while (ix->s[i].key && ix->s[i].key != key)
		i = (i + 1) & ix->mask;
	return i;
}

static bool index_grow(struct index *ix)
{
	uint32_t n = (ix->mask + 1) * 2;
	if (n > INDEX_MAX_SLOTS)
		return false;
	struct slot *s = calloc(n, sizeof(*s));
	if (!s)
		return false;
	struct index bigger = {.s = s, .mask = n - 1, .count = ix->count};
	for (uint32_t i = 0; i <= ix->mask; i++)
		if (ix->s[i].key)
			s[index_find(&bigger, ix->s[i].key)] = ix->s[i];
	free(ix->s);
	*ix = bigger;
	return true;
}

/* Inserts or replaces. false (out of memory) only when the table could not
 * grow and has a single empty slot left, which lookups need. */
static bool index_put(struct index *ix, uint64_t key, struct ctx *c)
{
	uint32_t i = index_find(ix, key);
	if (!ix->s[i].key) {
		if ((ix->count + 1) * 2 > ix->mask + 1 && index_grow(ix))
			i = index_find(ix, key);
		else if (ix->count + 1 >= ix->mask + 1)
			return false;
		ix->count++;
	}
	ix->s[i].key = key;
	ix->s[i].c = c;
	return true;
}

/* Removes key's entry if it still names c (a newer context may have taken
 * the key over). Backward-shift deletion: no tombstones. */
static void index_remove(struct index *ix, uint64_t key, const struct ctx *c)
{
	const uint32_t mask = ix->mask;
	struct slot *s = ix->s;
	uint32_t i = slot_of(ix, key);
	while (s[i].key != key) {
		if (!s[i].key)
			return;
		i = (i + 1) & mask;
	}
	if (s[i].c != c)
		return;
	for (uint32_t j = (i + 1) & mask; s[j].key; j = (j + 1) & mask) {
		uint32_t home = slot_of(ix, s[j].key);
		/* Entry j may fill hole i if its home is not in (i, j]. */
		if (((j - home) & mask) >= ((j - i) & mask)) {
			s[i] = s[j];
			i = j;
		}
	}
	s[i].key = 0;
	s[i].c = NULL;
	ix->count--;
}

/* c stops counting as a child of its parent's context, if that is still
 * the context c names (a saturated count stays). */
static void leave_parent(struct ctx *c)
{
	struct ctx *p = c->parent;
	if (p && c->parent_span_id && p->span_id == c->parent_span_id && p->children &&
	    p->children != UINT16_MAX)
		p->children--;
}

static void ctx_free(struct traces *t, struct ctx *c)
{
	leave_parent(c);
	if (c->link_key)
		index_remove(&t->links, c->link_key, c);
	if (c->in_threads)
		unindex(&t->threads, c->tid, c);
	c->span_id = 0;
	t->count--;
	list_unlink(list_of(t, c), c);
	c->next = t->free_ctx;
	t->free_ctx = c;
}

static struct ctx *ctx_alloc(struct traces *t)
{
	if (!t->free_ctx) {
		struct ctx_chunk *k = malloc(sizeof(*k));
		if (!k)
			return NULL;
		k->next = t->chunks;
		t->chunks = k;
		for (int i = CHUNK_CONTEXTS - 1; i >= 0; i--) {
			k->items[i].next = t->free_ctx;
			t->free_ctx = &k->items[i];
		}
	}
	struct ctx *c = t->free_ctx;
	t->free_ctx = c->next;
	memset(c, 0, sizeof(*c));
	return c;
}

/* Hash of a TCP connection's client and server ends and the sequence number
 * of a request's first byte: the same on both ends of a loopback connection. */
static uint64_t link_key(const uint8_t client_addr[16], uint16_t client_port,
			 const uint8_t server_addr[16], uint16_t server_port, uint32_t seq)
{
	uint64_t h = 0x9E3779B97F4A7C15ULL ^ seq;
	uint64_t w[4];
	memcpy(w, client_addr, 16);
	memcpy(w + 2, server_addr, 16);
	for (int i = 0; i < 4; i++)
		h = u64map__hash(h ^ w[i]);
	h = u64map__hash(h ^ ((uint64_t)client_port << 16 | server_port));
	return h ? h : 1;
}

static bool is_server(const struct request *r)
{
	return r->kind == REQ_HTTP_SERVER || r->kind == REQ_GRPC_SERVER;
}

/* Walks up to the context that holds the trace id. */
static struct ctx *root_of(struct traces *t, struct ctx *c)
{
	for (int depth = 0; depth < MAX_DEPTH && !c->explicit_trace; depth++) {
		struct ctx *p = c->parent;
		if (!p || !c->parent_span_id || p->span_id != c->parent_span_id)
			break; /* gone: c keeps the fallback trace id */
		c = p;
	}
	return c;
}

/* Fetches the next victim's link slot and list neighbour (its own lines
 * were fetched as the neighbour of the one before): an evicted or freed
 * context's lines, slot and neighbour have long left the cache, and the next
 * eviction would wait on them. A context is 88 bytes, two or three cache
 * lines, and the expiry check reads last_ns, which is never in the first:
 * every line is fetched. Always inlined: as a function of its own, GCC finds
 * it "pure" (a prefetch is no side effect), and a pure function whose result
 * is unused is a call it deletes, prefetches and all. */
static inline __attribute__((always_inline)) void prefetch_victim(struct traces *t,
								  const struct ctx *next)
{
	if (!next)
		return;
	if (next->link_key)
		__builtin_prefetch(&t->links.s[slot_of(&t->links, next->link_key)], 1);
	const char *n = (const char *)next->next;
	if (n) {
		__builtin_prefetch(n, 1);
		__builtin_prefetch(n + 64, 1);
		__builtin_prefetch(n + sizeof(struct ctx) - 1, 1);
	}
}

static bool done_expired(const struct traces *t, const struct ctx *c, uint64_t event_ns)
{
	return c->last_ns + t->grace_ns < event_ns;
}

/* Frees the finished contexts whose grace ended by event_ns; about one per
 * request at a steady rate. */
static void free_done(struct traces *t, uint64_t event_ns)
{
	if (!t->done.head || !done_expired(t, t->done.head, event_ns))
		return;
	do
		ctx_free(t, t->done.head);
	while (t->done.head && done_expired(t, t->done.head, event_ns));
	prefetch_victim(t, t->done.head);
}

static struct ctx *ctx_new(struct traces *t, struct request *r, uint64_t now)
{
	if (t->count >= MAX_CONTEXTS) {
		while (t->count >= MAX_CONTEXTS) {
			ctx_free(t, oldest(t));
			t->stats.contexts_evicted++;
		}
		prefetch_victim(t, oldest(t)); /* every new context at the cap evicts one */
	}
	struct ctx *c = ctx_alloc(t);
	if (!c)
		return NULL;
	c->span_id = nonzero_random(t);
	c->pid = r->pid;
	c->tid = r->tid;
	c->server = is_server(r);
	c->last_ns = now;
	t->count++;
	list_append(&t->live, c);
	return c;
}

static void make_root(struct traces *t, struct ctx *c)
{
	uint64_t a = nonzero_random(t), b = next_random(t);
	memcpy(c->trace_id, &a, 8);
	memcpy(c->trace_id + 8, &b, 8);
	c->explicit_trace = true;
}

static void set_parent(struct traces *t, struct ctx *c, struct ctx *parent)
{
	leave_parent(c);
	if (parent->children != UINT16_MAX)
		parent->children++;
	c->parent_span_id = parent->span_id;
	c->parent = parent;
	c->parent_elsewhere = parent->pid != c->pid;
	memcpy(c->trace_id, root_of(t, parent)->trace_id, 16); /* fallback if it expires */
	c->explicit_trace = false;
}

void traces__start(struct traces *t, struct request *r)
{
	uint64_t now = r->start_ns;
	/* The request's slot in the link index is a cache miss (keys are
	 * hashes): start fetching it before the eviction's own misses. */
	uint64_t key = 0;
	if (r->request_seq_valid) {
		if (is_server(r))
			key = link_key(r->tuple.remote_addr, r->tuple.remote_port,
				       r->tuple.local_addr, r->tuple.local_port, r->request_seq);
		else if (r->kind == REQ_HTTP_CLIENT || r->kind == REQ_GRPC_CLIENT)
			key = link_key(r->tuple.local_addr, r->tuple.local_port,
				       r->tuple.remote_addr, r->tuple.remote_port, r->request_seq);
		if (key)
			__builtin_prefetch(&t->links.s[slot_of(&t->links, key)]);
	}
	if (now > t->event_ns)
		t->event_ns = now;
	free_done(t, now);
	struct ctx *c = ctx_new(t, r, now);
	if (!c)
		return; /* finish() gives it a root of its own */
	memcpy(r->span_id, &c->span_id, 8);
	r->trace_ctx = c;

	uint8_t parent[8], flags;
	bool header = request__has(r->traceparent) &&
		      !traces__parse_traceparent(request__str(r, r->traceparent), r->traceparent.len,
						 c->trace_id, parent, &flags);
	if (header) {
		memcpy(&c->parent_span_id, parent, 8);
		c->flags = flags;
		c->explicit_trace = true;
		c->remote_parent = true;
		if (c->server)
			t->stats.linked_header++;
	}

	if (c->server) {
		if (!header) {
			struct ctx *client = NULL;
			if (key) {
				client = index_get(&t->links, key);
				if (client && client->server)
					client = NULL; /* another server waiting under this key */
			}
			if (client) {
				set_parent(t, c, client);
				t->stats.linked_remote++;
			} else {
				make_root(t, c);
				/* The client's event may still be on its way. */
				if (key && index_put(&t->links, key, c))
					c->link_key = key;
			}
		}
		if (!u64map__put(&t->threads, r->tid, c))
			c->in_threads = true;
		return;
	}

	/* CLIENT and database requests */
	if (!header) {
		struct ctx *server = u64map__get(&t->threads, r->tid);
		if (server && server->pid == r->pid)
			set_parent(t, c, server);
		else
			make_root(t, c);
	}
	if (key) {
		/* A server whose request arrived before this one's event. */
		struct ctx *srv = index_get(&t->links, key);
		if (srv && srv->server && !srv->remote_parent) {
			set_parent(t, srv, c);
			srv->link_key = 0; /* no longer waiting: the put below replaces it */
			t->stats.linked_remote++;
		}
		if (index_put(&t->links, key, c))
			c->link_key = key;
	}
}

static bool sample(struct traces *t, const struct ctx *root, const uint8_t trace_id[16])
{
	const struct rastro_config *cfg = t->cfg;
	switch (cfg->sampler) {
	case SAMPLER_ALWAYS_ON:
		return true;
	case SAMPLER_ALWAYS_OFF:
		return false;
	case SAMPLER_TRACEIDRATIO:
		return traces__ratio_keeps(trace_id, cfg->sampler_arg);
	case SAMPLER_PARENTBASED_ALWAYS_ON:
		return root->remote_parent ? (root->flags & 1) : true;
	case SAMPLER_PARENTBASED_ALWAYS_OFF:
		return root->remote_parent ? (root->flags & 1) : false;
	case SAMPLER_PARENTBASED_TRACEIDRATIO:
		return root->remote_parent ? (root->flags & 1)
					   : traces__ratio_keeps(trace_id, cfg->sampler_arg);
	}
	return true;
}

/* The request's context, if it still is (not evicted, maybe recycled). */
static struct ctx *ctx_of(const struct request *r)
{
	uint64_t span_id;
	memcpy(&span_id, r->span_id, 8);
	struct ctx *c = r->started ? r->trace_ctx : NULL;
	return c && span_id && c->span_id == span_id ? c : NULL;
}

/* A request is over (its span decided, or dropped): its context moves to the
 * done list, leaves the indexes it no longer needs, and is freed at once when
 * nothing needs it any more. */
static void release(struct traces *t, struct ctx *c, uint64_t end_ns)
{
	if (end_ns > c->last_ns)
		c->last_ns = end_ns;
	if (c->last_ns > t->event_ns)
		t->event_ns = c->last_ns;
	/* A server that is no context's parent is needed by nothing now: freed
	 * while its lines are in cache, not after the grace (ctx_free takes it
	 * out of the indexes too). */
	if (c->server && !c->children) {
		ctx_free(t, c);
		return;
	}
	/* A server still waiting for its client end's event stops waiting: its
	 * span goes out now with the parent it has, which a later client event
	 * could not change. Its slot was touched when it started (in cache),
	 * where the free 100 ms later would miss; and the index holds only the
	 * servers in flight and the clients. */
	if (c->server && c->link_key) {
		index_remove(&t->links, c->link_key, c);
		c->link_key = 0;
	}
	/* The thread is done serving it (unless it already took a newer one). */
	if (c->in_threads) {
		unindex(&t->threads, c->tid, c);
		c->in_threads = false;
	}
	if (!c->done) {
		list_unlink(&t->live, c);
		c->done = true;
		list_append(&t->done, c);
	}
}

void traces__finish(struct traces *t, struct request *r)
{
	struct ctx *c = ctx_of(r);
	if (!c) {
		/* Never started, or its context was evicted: a root of its own. */
		struct ctx tmp = {0};
		uint64_t span_id;
		memcpy(&span_id, r->span_id, 8);
		if (!span_id) {
			span_id = nonzero_random(t);
			memcpy(r->span_id, &span_id, 8);
		}
		make_root(t, &tmp);
		memcpy(r->trace_id, tmp.trace_id, 16);
		r->has_parent = false;
		r->parent_remote = false;
		r->sampled = sample(t, &tmp, r->trace_id);
		r->trace_flags = r->sampled ? 1 : 0;
		if (!r->sampled)
			t->stats.sampled_out++;
		return;
	}
	struct ctx *root = root_of(t, c);
	memcpy(r->trace_id, root->trace_id, 16);
	r->has_parent = c->parent_span_id != 0;
	/* OTLP flag bit 9: a traceparent header's, or a linked client end's. */
	r->parent_remote = r->has_parent && (c->remote_parent || c->parent_elsewhere);
	memcpy(r->parent_span_id, &c->parent_span_id, 8);
	r->sampled = sample(t, root, r->trace_id);
	r->trace_flags = r->sampled ? 1 : 0;
	if (!r->sampled)
		t->stats.sampled_out++;
	release(t, c, r->end_ns);
}

void traces__drop(struct traces *t, struct request *r)
{
	struct ctx *c = ctx_of(r);
	if (c)
		release(t, c, r->end_ns);
}

void traces__expire(struct traces *t, uint64_t now_ns)
{
	while (t->live.head && t->live.head->last_ns + LINK_WINDOW_NS < now_ns)
		ctx_free(t, t->live.head);
	/* Finished ones by event time, as traces__start does (a backlog of
	 * events not yet read must not shorten their grace), or after the link
	 * window like the others when no event came since. */
	while (t->done.head && (done_expired(t, t->done.head, t->event_ns) ||
				t->done.head->last_ns + LINK_WINDOW_NS < now_ns))
		ctx_free(t, t->done.head);
}

void traces__set_grace(struct traces *t, uint64_t grace_ns)
{
	t->grace_ns = grace_ns > DONE_GRACE_NS ? grace_ns : DONE_GRACE_NS;
}

uint64_t traces__grace(const struct traces *t)
{
	return t->grace_ns;
}

void traces__stats(const struct traces *t, struct traces_stats *out)
{
	*out = t->stats;
	out->contexts = t->count;
}

struct traces *traces__new(const struct rastro_config *cfg, uint64_t seed)
{
	struct traces *t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	t->cfg = cfg;
	t->rng = seed ? seed : 0x9E3779B97F4A7C15ULL;
	t->grace_ns = DONE_GRACE_NS;
	u64map__init(&t->threads);
	if (!index_init(&t->links)) {
		traces__free(t);
		return NULL;
	}
	return t;
}

void traces__free(struct traces *t)
{
	if (!t)
		return;
	while (oldest(t))
		ctx_free(t, oldest(t));
	while (t->chunks) {
		struct ctx_chunk *k = t->chunks;
		t->chunks = k->next;
		free(k);
	}
	free(t->links.s);
	u64map__free(&t->threads);
	free(t);
}
