#include "protocols/conntrack.h"

#include <stdlib.h>
#include <string.h>

#include "common/u64map.h"
#include "discover/discover.h"
#include "log.h"

/* Chunks without a recognised protocol before a connection is ignored. */
#define MAX_DETECT_ATTEMPTS 8
#define STASH_MAX 48
/* A connection moves to the recent end of the idle list at most this often:
 * a move writes its two neighbours (cache misses on every event otherwise),
 * and expiry (minutes) does not need a finer order. */
#define LRU_STEP_NS 1000000000ull

static const struct proto_ops *const protocols[] = {
	&http2_proto, /* before http1: the preface "PRI * HTTP/2.0" reads like a request line */
	&http1_proto,
	/* Database clients: exact framing checks, never ports. */
	&postgres_proto,
	&mysql_proto,
	&redis_proto,
	&sql_heuristic_proto, /* only when ebpf.heuristic_sql_detect is on */
};

/* A first chunk too short to tell the protocol ("GE"), kept to be read again
 * together with the next one. Rare: allocated only then. */
struct conn_stash {
	uint64_t ts;
	uint32_t tid, seq;
	uint8_t len, dir;
	char data[STASH_MAX];
};

/* One per open connection of a traced process (10,000 open connections are
 * 10,000 of these): fields ordered so that there are no holes. */
struct conn {
	uint64_t id;
	uint64_t last_ns;
	uint64_t lru_ns; /* when it last moved in the idle list */
	struct service *service;
	const struct proto_ops *proto;
	void *state;
	struct conn_stash *stash; /* usually NULL */
	struct conn *lru_prev, *lru_next; /* least recently active first */
	struct conntrack *ct;
	struct rastro_tuple tuple;
	uint32_t tgid;
	uint32_t next_seq[2];
	uint8_t role_hint;
	bool opaque; /* no known protocol: events are ignored */
	uint8_t detect_attempts;
	bool seq_known[2];
	bool waiting; /* has events in ct->waits */
	bool late;    /* ended by a reset, waits for its unread bytes (ct->late) */
	bool muted;   /* opaque, and the kernel no longer sends its data (ct->mute) */
};

/* A data event read before earlier events of its connection: one sent ahead
 * of the batch that holds them (RASTRO_EV_DATA_AFTER), or one that came
 * after such an event. Parsed once that batch is read. */
struct waiting {
	struct waiting *next;
	uint64_t since_ns; /* the event's time */
	uint32_t cpu, gen; /* the batch it follows; cpu NO_BATCH: none of its own */
	struct rastro_data_event ev; /* followed by its ev.captured bytes */
};

#define NO_BATCH UINT32_MAX

/*
 * A connection a peer's reset ended while its process had not read all the
 * peer sent yet (rastro_close_event.unread: a response the server sent
 * before it reset the connection). The process can still read those bytes;
 * the kernel has no state for the closed socket, so they come as events
 * without connection state, named by the socket's address. The connection
 * stays and parses them, until they have read that much or for LATE_NS
 * (the process may never read them; checked by conntrack__expire, at the
 * agent's discovery rescans); then it ends at its last read, or at the
 * reset when none came (late_end).
 */
struct late_conn {
	struct conn *conn;
	uint64_t sock, ts;
	uint32_t unread;
};
#define LATE_MAX 1024
#define LATE_NS 1000000000ull

/* A connection's waiting events, in the order they came. */
struct conn_wait {
	struct conn *conn;
	struct waiting *head, *tail;
};

struct conntrack {
	const struct rastro_config *cfg;
	struct discovery *disc;
	request_sink_fn start;
	request_sink_fn sink;
	void *sink_ctx;
	struct u64map conns;
	struct conn *recent; /* of the last event: syscalls of one connection come in runs */
	struct conn *lru_head, *lru_tail;
	/* A hand-over asked for by the protocol being fed (conn__switch_protocol),
	 * taken by proto_feed as soon as data() returns: one at a time, so it
	 * lives here rather than in every connection. */
	const struct proto_ops *switch_to;
	void *switch_state;
	uint32_t switch_offset;
	struct conntrack_stats stats;
	/* Per CPU, 1 + the number of the last batch read (0: none yet). */
	uint32_t *batch_seen;
	uint32_t batch_cpus;
	/* Ends that wait for a CPU's batch (rastro_close_event.held_cpu): few,
	 * and only while a peer's reset races the thread that held its data. */
	struct pending_close {
		uint64_t conn_id, ts, since_ns, sock;
		uint32_t cpu, gen, unread;
	} *pending;
	uint32_t npending, cap_pending;
	struct late_conn *late;
	uint32_t nlate, cap_late;
	/* Connections with events that wait for a batch (few, and only for as
	 * long as a descheduled vCPU keeps that batch), and the bytes they
	 * hold in all. */
	struct conn_wait *waits;
	uint32_t nwaits, cap_waits;
	size_t wait_bytes;
	/* The batch whose events are being read (conntrack__batch_begin), or
	 * batch_cpu NO_BATCH. */
	uint32_t batch_cpu, batch_gen;
	/* Connections that became opaque since the last conntrack__mute_pending,
	 * by id (one may have ended since), and who mutes them. */
	conn_mute_fn mute;
	void *mute_ctx;
	uint64_t *to_mute;
	uint32_t nmute, cap_mute;
};

/* Bytes of waiting events, at most: past it the oldest connection's go now,
 * out of order (counted). A connection waits for a batch for at most a
 * second; this is about 10,000 events. */
#define WAIT_BYTES_MAX (2u << 20)
#define WAIT_NS_MAX 1000000000ull

static const char *const counter_names[CONN__COUNTERS] = {
	[CONN_LOST_PIPELINE_OVERFLOW] = "pipeline_overflow",
	[CONN_LOST_EVENTS] = "events_lost",
	[CONN_LOST_NO_MEMORY] = "out_of_memory",
	[CONN_PARSE_ERRORS] = "parse_errors",
};

const char *conntrack__counter_name(int which)
{
	return which >= 0 && which < CONN__COUNTERS ? counter_names[which] : "?";
}

uint8_t conn__role_hint(const struct conn *c)
{
	return c->role_hint;
}

const struct rastro_config *conn__config(const struct conn *c)
{
	return c->ct->cfg;
}

void conn__count(struct conn *c, enum conn_counter which, uint64_t n)
{
	c->ct->stats.counters[which] += n;
}

void conn__start(struct conn *c, struct request *r)
{
	if (r->started)
		return;
	r->started = true;
	r->service = c->service;
	r->pid = c->tgid;
	r->conn_id = c->id;
	r->tuple = c->tuple;
	if (c->ct->start)
		c->ct->start(c->ct->sink_ctx, r);
}

void conn__switch_protocol(struct conn *c, const struct proto_ops *to, void *state,
			   uint32_t offset)
{
	struct conntrack *ct = c->ct;
	if (ct->switch_to)
		ct->switch_to->free(ct->switch_state);
	ct->switch_to = to;
	ct->switch_state = state;
	ct->switch_offset = offset;
}

static bool room_for_one(void *arr, uint32_t n, uint32_t *cap, size_t elem, uint32_t first);

void conn__ignore_rest(struct conn *c)
{
	struct conntrack *ct = c->ct;
	if (c->opaque)
		return;
	c->opaque = true;
	/* Out of memory: its events keep coming, and are ignored here. */
	if (ct->mute && room_for_one(&ct->to_mute, ct->nmute, &ct->cap_mute, sizeof(uint64_t), 64))
		ct->to_mute[ct->nmute++] = c->id;
}

/* Feeds a chunk to the connection's protocol; when the protocol hands the
 * connection over, the new one gets the rest of the chunk. */
static void proto_feed(struct conn *c, const struct chunk *ch)
{
	struct conntrack *ct = c->ct;
	struct chunk rest;
	c->proto->data(c->state, c, ch);
	while (ct->switch_to) {
		uint32_t off = ct->switch_offset;
		c->proto->free(c->state);
		c->proto = ct->switch_to;
		c->state = ct->switch_state;
		ct->switch_to = NULL;
		if (off >= ch->bytes)
			return;
		rest = *ch;
		rest.data = ch->data + (off < ch->captured ? off : ch->captured);
		rest.captured = off < ch->captured ? ch->captured - off : 0;
		rest.bytes = ch->bytes - off;
		rest.seq = ch->seq + off;
		rest.gap = false;
		ch = &rest;
		c->proto->data(c->state, c, ch);
	}
}

void conn__emit(struct conn *c, struct request *r)
{
	conn__start(c, r);
	c->ct->stats.requests++;
	c->ct->sink(c->ct->sink_ctx, r);
}

static void lru_unlink(struct conntrack *ct, struct conn *c)
{
	if (c->lru_prev)
		c->lru_prev->lru_next = c->lru_next;
	else
		ct->lru_head = c->lru_next;
	if (c->lru_next)
		c->lru_next->lru_prev = c->lru_prev;
	else
		ct->lru_tail = c->lru_prev;
	c->lru_prev = c->lru_next = NULL;
}

static void lru_append(struct conntrack *ct, struct conn *c)
{
	c->lru_prev = ct->lru_tail;
	c->lru_next = NULL;
	if (ct->lru_tail)
		ct->lru_tail->lru_next = c;
	else
		ct->lru_head = c;
	ct->lru_tail = c;
}

static bool wait_release(struct conntrack *ct, uint32_t i, bool force, uint64_t now_ns);

/* When a connection kept for its late reads ends (a request read after the
 * reset, whose response cannot go out, ends there, not before it began). */
static uint64_t late_end(const struct late_conn *l)
{
	return l->conn->last_ns > l->ts ? l->conn->last_ns : l->ts;
}

static void late_remove(struct conntrack *ct, const struct conn *c)
{
	for (uint32_t i = 0; i < ct->nlate; i++)
		if (ct->late[i].conn == c) {
			ct->late[i] = ct->late[--ct->nlate];
			return;
		}
}

static void conn_destroy(struct conntrack *ct, struct conn *c, uint64_t ts)
{
	if (c->muted)
		ct->mute(ct->mute_ctx, c->id, false);
	if (c->late)
		late_remove(ct, c);
	/* Events still waiting for a batch are parsed before the end. */
	for (uint32_t i = 0; c->waiting && i < ct->nwaits; i++)
		if (ct->waits[i].conn == c)
			wait_release(ct, i, true, 0);
	if (c->proto) {
		c->proto->close(c->state, c, ts);
		c->proto->free(c->state);
	}
	u64map__remove(&ct->conns, c->id);
	if (ct->recent == c)
		ct->recent = NULL;
	lru_unlink(ct, c);
	service__unref(c->service);
	free(c->stash);
	free(c);
}

static struct conn *conn_create(struct conntrack *ct, const struct rastro_data_event *ev,
				struct service *svc)
{
	struct conn *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->id = ev->conn_id;
	c->tgid = ev->hdr.tgid;
	c->last_ns = c->lru_ns = ev->hdr.ts_ns; /* its first event may wait (data_in) */
	c->role_hint = ev->role;
	c->tuple = ev->tuple;
	c->service = svc;
	c->ct = ct;
	service__ref(svc);
	if (u64map__put(&ct->conns, c->id, c)) {
		service__unref(svc);
		free(c);
		return NULL;
	}
	lru_append(ct, c);
	return c;
}

static enum proto_verdict detect_one(struct conn *c, const struct chunk *ch)
{
	bool maybe = false;
	for (size_t i = 0; i < sizeof(protocols) / sizeof(protocols[0]); i++) {
		enum proto_verdict v = protocols[i]->detect(c, ch);
		if (v == PROTO_YES) {
			c->state = protocols[i]->open(c, ch);
			if (c->state)
				c->proto = protocols[i];
			return c->state ? PROTO_YES : PROTO_NO;
		}
		maybe |= v == PROTO_MAYBE;
	}
	return maybe ? PROTO_MAYBE : PROTO_NO;
}

/* Finds the protocol of a connection from its first chunks and feeds them.
 * The first bytes of a connection seen mid-stream can be anything: keep
 * looking for a message start for a while. */
static void detect(struct conn *c, struct chunk *ch)
{
	struct chunk stashed = {0};
	char joined[STASH_MAX + 256];
	struct chunk view = *ch;
	struct conn_stash *st = c->stash; /* read below, freed or reused at the end */
	c->stash = NULL;
	bool have_stash = st && st->dir == ch->dir && st->seq + st->len == ch->seq && !ch->gap;
	if (have_stash) {
		stashed = (struct chunk){.dir = st->dir, .ts = st->ts, .tid = st->tid,
					 .seq = st->seq, .data = st->data,
					 .captured = st->len, .bytes = st->len};
		size_t extra = ch->captured < sizeof(joined) - st->len
				       ? ch->captured
				       : sizeof(joined) - st->len;
		memcpy(joined, st->data, st->len);
		memcpy(joined + st->len, ch->data, extra);
		view = stashed;
		view.data = joined;
		view.captured = (uint32_t)(st->len + extra);
		view.bytes = view.captured;
	}
	enum proto_verdict v = detect_one(c, &view);
	if (v == PROTO_YES) {
		if (have_stash)
			proto_feed(c, &stashed);
		ch->gap = false;
		proto_feed(c, ch);
		free(st);
		return;
	}
	if (v == PROTO_MAYBE && view.captured == view.bytes && view.captured <= STASH_MAX) {
		if (!st)
			st = malloc(sizeof(*st));
		if (st) { /* else out of memory: counts as an attempt */
			memcpy(st->data, view.data, view.captured);
			st->len = (uint8_t)view.captured;
			st->dir = view.dir;
			st->ts = view.ts;
			st->tid = view.tid;
			st->seq = view.seq;
			c->stash = st;
			return;
		}
	}
	free(st);
	if (++c->detect_attempts >= MAX_DETECT_ATTEMPTS)
		conn__ignore_rest(c);
}

/* The connection a reset ended that an event without connection state is a
 * late read of (struct late_conn), or NULL. */
static struct conn *late_of(const struct conntrack *ct, const struct rastro_data_event *ev)
{
	for (uint32_t i = 0; i < ct->nlate; i++) {
		struct conn *c = ct->late[i].conn;
		if (ct->late[i].sock == ev->conn_id && c->tgid == ev->hdr.tgid &&
		    c->tuple.remote_port == ev->tuple.remote_port)
			return c;
	}
	return NULL;
}

/* The connection of an event, made at its first; NULL when it cannot be
 * (counted). */
static struct conn *conn_of(struct conntrack *ct, const struct rastro_data_event *ev)
{
	if (ct->nlate && (ev->flags & RASTRO_DATA_F_NO_CONN_STATE)) {
		struct conn *late = late_of(ct, ev);
		if (late)
			return late;
	}
	struct conn *c = ct->recent;
	if (!c || c->id != ev->conn_id)
		c = u64map__get(&ct->conns, ev->conn_id);
	if (!c) {
		struct service *svc = discovery__service(ct->disc, ev->service_id);
		if (!svc) {
			ct->stats.unknown_service_events++;
			return NULL;
		}
		c = conn_create(ct, ev, svc);
		if (!c) {
			ct->stats.counters[CONN_LOST_NO_MEMORY]++;
			return NULL;
		}
	}
	return c;
}

/* Parses an event of connection c. */
static void feed_event(struct conntrack *ct, struct conn *c, const struct rastro_data_event *ev,
		       const char *payload)
{
	ct->recent = c;
	c->last_ns = ev->hdr.ts_ns;
	if (c->lru_next && c->last_ns - c->lru_ns >= LRU_STEP_NS) { /* to the most recent end */
		lru_unlink(ct, c);
		lru_append(ct, c);
		c->lru_ns = c->last_ns;
	}
	if (c->role_hint == RASTRO_ROLE_UNKNOWN)
		c->role_hint = ev->role;

	int dir = ev->direction & 1;
	struct chunk ch = {
		.dir = (uint8_t)dir,
		.ts = ev->hdr.ts_ns,
		.tid = ev->tid,
		.seq = ev->seq,
		.data = payload,
		.captured = ev->captured,
		.bytes = ev->bytes,
		.gap = c->seq_known[dir] && c->next_seq[dir] != ev->seq,
	};
	if (ch.gap)
		log_debug("connection %llu (pid %u, port %u->%u): %s bytes lost: expected sequence %u, "
			  "got %u (%u bytes, syscall %u)",
			  (unsigned long long)c->id, ev->hdr.tgid, ev->tuple.local_port,
			  ev->tuple.remote_port, dir == RASTRO_DIR_INGRESS ? "received" : "sent",
			  c->next_seq[dir], ev->seq, ev->bytes, ev->syscall);
	c->seq_known[dir] = true;
	c->next_seq[dir] = ev->seq + ev->bytes;

	if (c->opaque)
		return;
	if (!c->proto)
		detect(c, &ch);
	else
		proto_feed(c, &ch);
}

/* Whether batch gen of cpu has been read (numbers wrap: compared by their
 * difference). */
static bool batch_read(const struct conntrack *ct, uint32_t cpu, uint32_t gen)
{
	return cpu < ct->batch_cpus && ct->batch_seen[cpu] &&
	       (int32_t)(ct->batch_seen[cpu] - 1 - gen) >= 0;
}

static struct conn_wait *wait_of(struct conntrack *ct, const struct conn *c)
{
	for (uint32_t i = 0; i < ct->nwaits; i++)
		if (ct->waits[i].conn == c)
			return &ct->waits[i];
	return NULL;
}

static size_t waiting_size(const struct waiting *e)
{
	return sizeof(*e) + e->ev.captured;
}

/* Parses the waiting events of ct->waits[i] from the first, as long as each
 * may go: its batch has been read, or it has none of its own (it came after
 * the one before it). force: all of them; now_ns: also those waiting since
 * more than WAIT_NS_MAX before it. An event parsed before its batch is
 * counted unordered: that batch was lost (counted where it was) or is
 * later still, and the parser reads a gap. true when none waits any more:
 * the entry is removed, and the next one is now entry i. */
static bool wait_release(struct conntrack *ct, uint32_t i, bool force, uint64_t now_ns)
{
	struct conn *c = ct->waits[i].conn;
	struct waiting *e;
	while ((e = ct->waits[i].head)) {
		bool ready = e->cpu == NO_BATCH || batch_read(ct, e->cpu, e->gen);
		if (!ready && !force && !(now_ns && e->since_ns + WAIT_NS_MAX < now_ns))
			break;
		if (!ready) {
			ct->stats.unordered++;
			log_debug("connection %llu: an event parsed without CPU %u's batch %u",
				  (unsigned long long)c->id, e->cpu, e->gen);
		}
		ct->waits[i].head = e->next;
		ct->wait_bytes -= waiting_size(e);
		feed_event(ct, c, &e->ev, (const char *)(&e->ev + 1));
		free(e);
	}
	if (ct->waits[i].head)
		return false;
	c->waiting = false;
	memmove(&ct->waits[i], &ct->waits[i + 1], (ct->nwaits - i - 1) * sizeof(ct->waits[0]));
	ct->nwaits--;
	return true;
}

/* Makes room for one more element in the array *arr of n elements of size
 * elem (capacity *cap, doubled from `first`); false when out of memory. */
static bool room_for_one(void *arr, uint32_t n, uint32_t *cap, size_t elem, uint32_t first)
{
	if (n < *cap)
		return true;
	uint32_t c = *cap ? 2 * *cap : first;
	void *p = realloc(*(void **)arr, c * elem);
	if (!p)
		return false;
	*(void **)arr = p;
	*cap = c;
	return true;
}

/* Queues an event of c (which has waiting events when w is not NULL) to be
 * parsed after batch gen of cpu (NO_BATCH: after the ones before it); false
 * when out of memory. */
static bool wait_add(struct conntrack *ct, struct conn *c, struct conn_wait *w,
		     const struct rastro_data_event *ev, const char *payload, uint32_t cpu,
		     uint32_t gen)
{
	if (!w && !room_for_one(&ct->waits, ct->nwaits, &ct->cap_waits, sizeof(*ct->waits), 8))
		return false;
	struct waiting *e = malloc(sizeof(*e) + ev->captured);
	if (!e)
		return false;
	e->next = NULL;
	e->since_ns = ev->hdr.ts_ns;
	e->cpu = cpu;
	e->gen = gen;
	memcpy(&e->ev, ev, sizeof(*ev));
	memcpy(&e->ev + 1, payload, ev->captured);
	if (!w) {
		w = &ct->waits[ct->nwaits++];
		*w = (struct conn_wait){.conn = c, .head = e};
		c->waiting = true;
	} else {
		w->tail->next = e;
	}
	w->tail = e;
	ct->stats.reordered++;
	ct->wait_bytes += waiting_size(e);
	if (cpu != NO_BATCH)
		log_debug("connection %llu: an event waits for CPU %u's batch %u",
			  (unsigned long long)c->id, cpu, gen);
	/* Past the bound the longest-waiting connection's go now. */
	while (ct->wait_bytes > WAIT_BYTES_MAX && ct->nwaits)
		wait_release(ct, 0, true, 0);
	return true;
}

/* A connection's late read (struct late_conn) of bytes: it ends once it has
 * read what was unread at the reset. */
static void late_read(struct conntrack *ct, struct conn *c, uint32_t bytes)
{
	for (uint32_t i = 0; i < ct->nlate; i++) {
		struct late_conn *l = &ct->late[i];
		if (l->conn != c)
			continue;
		ct->stats.late_reads++;
		if (bytes < l->unread) {
			l->unread -= bytes;
			return;
		}
		conn_destroy(ct, c, late_end(l));
		return;
	}
}

/* An event of ct's batch being read (batch_cpu, batch_gen), of another
 * record (batch_cpu NO_BATCH), or one sent ahead of batch gen of cpu
 * (RASTRO_EV_DATA_AFTER; otherwise cpu is NO_BATCH). A connection's events
 * are parsed in the order they happened: one sent ahead waits for its
 * batch, and the connection's later events wait behind it, except those of
 * that very batch, which are earlier. */
static void data_in(struct conntrack *ct, const struct rastro_data_event *ev, const char *payload,
		    uint32_t cpu, uint32_t gen)
{
	struct conn *c = conn_of(ct, ev);
	if (!c)
		return;
	if (c->waiting) {
		struct conn_wait *w = wait_of(ct, c);
		if (!(w->head->cpu == ct->batch_cpu && w->head->gen == ct->batch_gen)) {
			if (wait_add(ct, c, w, ev, payload, cpu, gen))
				return;
			ct->stats.unordered++; /* out of memory: parsed now */
		}
	} else if (cpu != NO_BATCH && !batch_read(ct, cpu, gen)) {
		if (wait_add(ct, c, NULL, ev, payload, cpu, gen))
			return;
		ct->stats.unordered++; /* out of memory: parsed now */
	}
	feed_event(ct, c, ev, payload);
	if (c->late && ev->direction == RASTRO_DIR_INGRESS)
		late_read(ct, c, ev->bytes);
}

void conntrack__on_data(struct conntrack *ct, const struct rastro_data_event *ev,
			const char *payload)
{
	data_in(ct, ev, payload, NO_BATCH, 0);
}

void conntrack__on_data_after(struct conntrack *ct, const struct rastro_data_event *ev,
			      const char *payload, uint32_t cpu, uint32_t gen)
{
	data_in(ct, ev, payload, cpu, gen);
}

void conntrack__batch_begin(struct conntrack *ct, uint32_t cpu, uint32_t gen)
{
	ct->batch_cpu = cpu;
	ct->batch_gen = gen;
}

/* Ends c at ts, or keeps it for its late reads (struct late_conn) when the
 * process had not read unread bytes the peer sent before its reset. */
static void conn_end(struct conntrack *ct, struct conn *c, uint64_t ts, uint64_t sock,
		     uint32_t unread)
{
	if (!unread || c->late) {
		conn_destroy(ct, c, ts);
		return;
	}
	/* A socket at the same address as one still kept: that one was freed,
	 * its unread bytes with it, before the address was reused. */
	for (uint32_t i = 0; i < ct->nlate; i++)
		if (ct->late[i].sock == sock) {
			conn_destroy(ct, ct->late[i].conn, late_end(&ct->late[i]));
			break;
		}
	if (ct->nlate == LATE_MAX ||
	    !room_for_one(&ct->late, ct->nlate, &ct->cap_late, sizeof(*ct->late), 8)) {
		ct->stats.late_not_kept++;
		conn_destroy(ct, c, ts);
		return;
	}
	log_debug("connection %llu reset with %u bytes unread: waits for them",
		  (unsigned long long)c->id, unread);
	ct->late[ct->nlate++] = (struct late_conn){c, sock, ts, unread};
	c->late = true;
}

static void end_conn(struct conntrack *ct, uint64_t conn_id, uint64_t ts, uint64_t sock,
		     uint32_t unread)
{
	struct conn *c = u64map__get(&ct->conns, conn_id);
	if (c)
		conn_end(ct, c, ts, sock, unread);
}

void conntrack__on_close(struct conntrack *ct, const struct rastro_close_event *ev)
{
	uint32_t cpu = ev->held_cpu - 1, gen = ev->held_gen;
	if (!ev->held_cpu || batch_read(ct, cpu, gen)) {
		struct conn *c = u64map__get(&ct->conns, ev->conn_id);
		if (!c || !c->waiting) {
			if (c)
				conn_end(ct, c, ev->hdr.ts_ns, ev->sock, ev->unread);
			return;
		}
		/* After its waiting events, which came before it. */
		struct waiting *first = wait_of(ct, c)->head;
		cpu = first->cpu, gen = first->gen;
	}
	if (!room_for_one(&ct->pending, ct->npending, &ct->cap_pending, sizeof(*ct->pending), 16)) {
		/* ends now: its last events may make it anew */
		end_conn(ct, ev->conn_id, ev->hdr.ts_ns, ev->sock, ev->unread);
		return;
	}
	log_debug("connection %llu ends once CPU %u's batch %u is read",
		  (unsigned long long)ev->conn_id, cpu, gen);
	ct->pending[ct->npending++] = (struct pending_close){
		.conn_id = ev->conn_id, .ts = ev->hdr.ts_ns, .since_ns = ev->hdr.ts_ns,
		.sock = ev->sock, .cpu = cpu, .gen = gen, .unread = ev->unread};
}

/* Ends the connections that waited for a batch of cpu now read, or for more
 * than a second by now_ns (that batch was lost). */
static void end_pending(struct conntrack *ct, uint32_t cpu, uint64_t now_ns)
{
	for (uint32_t i = 0; i < ct->npending;) {
		struct pending_close *p = &ct->pending[i];
		if ((p->cpu == cpu && batch_read(ct, cpu, p->gen)) ||
		    p->since_ns + 1000000000ull < now_ns) {
			struct pending_close done = *p;
			*p = ct->pending[--ct->npending];
			end_conn(ct, done.conn_id, done.ts, done.sock, done.unread);
		} else {
			i++;
		}
	}
}

void conntrack__on_batch(struct conntrack *ct, uint32_t cpu, uint32_t gen)
{
	if (cpu >= ct->batch_cpus) {
		if (cpu >= RASTRO_HOLD_CPUS)
			return;
		uint32_t n = cpu + 1 < 64 ? 64 : cpu + 1;
		uint32_t *s = realloc(ct->batch_seen, n * sizeof(*s));
		if (!s)
			return; /* pending ends of it wait for the expiry */
		memset(s + ct->batch_cpus, 0, (n - ct->batch_cpus) * sizeof(*s));
		ct->batch_seen = s;
		ct->batch_cpus = n;
	}
	ct->batch_seen[cpu] = gen + 1;
	ct->batch_cpu = NO_BATCH;
	/* In the order the connections began to wait: a thread's events sent
	 * ahead on two connections are parsed in the order it made them. */
	for (uint32_t i = 0; i < ct->nwaits;)
		if (!(ct->waits[i].head->cpu == cpu && wait_release(ct, i, false, 0)))
			i++; /* it waits on; a released one's successor moved to i */
	end_pending(ct, cpu, 0);
}

void conntrack__expire(struct conntrack *ct, uint64_t now_ns, uint64_t idle_ns)
{
	for (uint32_t i = 0; i < ct->nwaits;)
		if (!(ct->waits[i].head->since_ns + WAIT_NS_MAX < now_ns &&
		      wait_release(ct, i, false, now_ns)))
			i++;
	end_pending(ct, UINT32_MAX, now_ns);
	for (uint32_t i = 0; i < ct->nlate;) {
		struct late_conn *l = &ct->late[i];
		if (l->ts + LATE_NS < now_ns)
			conn_destroy(ct, l->conn, late_end(l)); /* entry i is now another's */
		else
			i++;
	}
	while (ct->lru_head && ct->lru_head->last_ns + idle_ns < now_ns) {
		log_debug("connection %llu idle for long: forgotten",
			  (unsigned long long)ct->lru_head->id);
		conn_destroy(ct, ct->lru_head, now_ns);
	}
}

void conntrack__close_all(struct conntrack *ct, uint64_t now_ns)
{
	while (ct->lru_head)
		conn_destroy(ct, ct->lru_head, now_ns);
}

void conntrack__on_mute(struct conntrack *ct, conn_mute_fn fn, void *ctx)
{
	ct->mute = fn;
	ct->mute_ctx = ctx;
}

uint32_t conntrack__mute_pending(struct conntrack *ct)
{
	uint32_t n = 0;
	for (uint32_t i = 0; i < ct->nmute; i++) {
		struct conn *c = u64map__get(&ct->conns, ct->to_mute[i]);
		if (!c || c->muted) /* ended in the same drain: not worth a mute */
			continue;
		if (ct->mute(ct->mute_ctx, c->id, true)) {
			ct->stats.mute_failed++;
			continue;
		}
		c->muted = true;
		ct->stats.muted++;
		n++;
	}
	ct->nmute = 0;
	return n;
}

void conntrack__stats(const struct conntrack *ct, struct conntrack_stats *out)
{
	*out = ct->stats;
	out->connections = ct->conns.count;
}

struct conntrack *conntrack__new(const struct rastro_config *cfg, struct discovery *disc,
				 request_sink_fn start, request_sink_fn sink, void *sink_ctx)
{
	struct conntrack *ct = calloc(1, sizeof(*ct));
	if (!ct)
		return NULL;
	ct->cfg = cfg;
	ct->disc = disc;
	ct->start = start;
	ct->sink = sink;
	ct->sink_ctx = sink_ctx;
	u64map__init(&ct->conns);
	ct->batch_cpu = NO_BATCH;
	return ct;
}

void conntrack__free(struct conntrack *ct)
{
	if (!ct)
		return;
	for (uint32_t i = 0; i < ct->nwaits; i++) {
		ct->waits[i].conn->waiting = false;
		for (struct waiting *e = ct->waits[i].head, *next; e; e = next) {
			next = e->next;
			free(e);
		}
	}
	free(ct->waits);
	free(ct->to_mute);
	while (ct->lru_head) {
		struct conn *c = ct->lru_head;
		if (c->proto)
			c->proto->free(c->state);
		c->proto = NULL;
		conn_destroy(ct, c, 0);
	}
	u64map__free(&ct->conns);
	free(ct->batch_seen);
	free(ct->pending);
	free(ct->late);
	free(ct);
}
