#include "protocols/db.h"

#include "common/u64map.h"

#include <stdlib.h>
#include <string.h>

/* ---- framer */

static uint8_t header_size(enum db_frame_kind k)
{
	switch (k) {
	case DB_FRAME_PG_TYPED:
		return 5;
	case DB_FRAME_PG_UNTYPED:
	case DB_FRAME_MYSQL:
		return 4;
	case DB_FRAME_BYTE:
	default:
		return 1;
	}
}

/* Body length announced by a complete header, or -1 when it cannot be. */
static int64_t body_length(enum db_frame_kind k, const uint8_t *h)
{
	uint32_t l;
	switch (k) {
	case DB_FRAME_PG_TYPED:
		/* PostgreSQL refuses messages over 1 GiB. */
		l = db__be32(h + 1);
		return l < 4 || l > (1u << 30) ? -1 : (int64_t)l - 4;
	case DB_FRAME_PG_UNTYPED:
		/* Startup packets are small: the server refuses more than 10000 bytes. */
		l = db__be32(h);
		return l < 8 || l > 10000 ? -1 : (int64_t)l - 4;
	case DB_FRAME_MYSQL:
		return db__le24(h);
	case DB_FRAME_BYTE:
	default:
		return 0;
	}
}

static bool deliver(struct db_framer *f, const struct chunk *ch, const char *body, uint32_t kept,
		    db_msg_fn fn, void *ctx)
{
	struct db_msg m = {.hdr_len = header_size(f->kind), .len = f->body_len, .body = body,
			   .kept = kept, .cut = kept < f->body_len, .start = f->start};
	memcpy(m.hdr, f->hdr, sizeof(m.hdr));
	f->in_body = false;
	f->hdr_have = 0;
	f->buf_len = 0;
	return fn(ctx, &m, ch);
}

static void keep_bytes(struct db_framer *f, const char *p, size_t n)
{
	if (!n || f->buf_len >= f->want)
		return;
	if (n > f->want - f->buf_len)
		n = f->want - f->buf_len;
	if (f->buf_len + n > f->buf_cap) {
		uint32_t cap = f->buf_cap ? f->buf_cap : 256;
		while (cap < f->buf_len + n)
			cap *= 2;
		char *b = realloc(f->buf, cap);
		if (!b) {
			f->want = f->buf_len; /* deliver what we have, cut */
			return;
		}
		f->buf = b;
		f->buf_cap = cap;
	}
	memcpy(f->buf + f->buf_len, p, n);
	f->buf_len += (uint32_t)n;
}

bool db_framer__feed(struct db_framer *f, const struct chunk *ch, const char *buf, size_t len,
		     db_keep_fn keep, db_msg_fn fn, void *ctx)
{
	const char *p = buf, *end = buf + len;
	if (f->lost)
		return false;
	while (p < end) {
		if (!f->in_body) {
			uint8_t size = header_size(f->kind);
			if (f->hdr_have >= size) {
				/* The kind changed to a shorter header in the middle
				 * of one (not by db_framer__restart): lost, not
				 * overrun. */
				f->lost = true;
				return false;
			}
			if (!f->hdr_have)
				f->start = db__start_at(ch, p);
			size_t take = size - f->hdr_have;
			if (take > (size_t)(end - p))
				take = (size_t)(end - p);
			memcpy(f->hdr + f->hdr_have, p, take);
			f->hdr_have += (uint8_t)take;
			p += take;
			if (f->hdr_have < size)
				return true;
			int64_t bl = body_length(f->kind, f->hdr);
			if (bl < 0) {
				f->lost = true;
				return false;
			}
			f->body_len = f->body_left = (uint32_t)bl;
			f->want = keep ? keep(ctx, f->hdr) : 0;
			if (f->want > f->body_len)
				f->want = f->body_len;
			f->in_body = true;
			f->buf_len = 0;
		}
		size_t avail = (size_t)(end - p);
		if (f->body_left == f->body_len && avail >= f->body_len) {
			/* The whole body is here: no copy. */
			const char *body = p;
			p += f->body_len;
			if (!deliver(f, ch, body, f->want, fn, ctx))
				return false;
			continue;
		}
		size_t take = avail < f->body_left ? avail : f->body_left;
		keep_bytes(f, p, take);
		p += take;
		f->body_left -= (uint32_t)take;
		if (!f->body_left && !deliver(f, ch, f->buf, f->buf_len, fn, ctx))
			return false;
	}
	return true;
}

bool db_framer__skip(struct db_framer *f, const struct chunk *ch, uint64_t n, db_msg_fn fn,
		     void *ctx)
{
	if (f->lost)
		return false;
	if (!n)
		return true;
	if (!f->in_body || n > f->body_left) {
		f->lost = true;
		return false;
	}
	f->body_left -= (uint32_t)n;
	f->want = f->buf_len; /* bytes after the hole would not follow the kept ones */
	if (!f->body_left)
		return deliver(f, ch, f->buf, f->buf_len, fn, ctx);
	return true;
}

void db_framer__reset(struct db_framer *f)
{
	f->in_body = false;
	f->hdr_have = 0;
	f->buf_len = 0;
	f->lost = false;
}

void db_framer__restart(struct db_framer *f, enum db_frame_kind kind)
{
	db_framer__reset(f);
	f->kind = kind;
}

void db_framer__free(struct db_framer *f)
{
	free(f->buf);
	f->buf = NULL;
	f->buf_len = f->buf_cap = 0;
}

/* ---- queue */

void db_queue__init(struct db_queue *q, uint32_t elem_size)
{
	memset(q, 0, sizeof(*q));
	q->elem = elem_size;
}

void *db_queue__at(const struct db_queue *q, uint32_t i)
{
	return q->v + (size_t)((q->head + i) % q->cap) * q->elem;
}

void *db_queue__push(struct db_queue *q, uint32_t limit)
{
	if (q->count >= limit)
		return NULL;
	if (q->count == q->cap) {
		uint32_t cap = q->cap ? q->cap * 2 : 4;
		char *v = malloc((size_t)cap * q->elem);
		if (!v)
			return NULL;
		for (uint32_t i = 0; i < q->count; i++)
			memcpy(v + (size_t)i * q->elem, db_queue__at(q, i), q->elem);
		free(q->v);
		q->v = v;
		q->cap = cap;
		q->head = 0;
	}
	void *slot = q->v + (size_t)((q->head + q->count) % q->cap) * q->elem;
	memset(slot, 0, q->elem);
	q->count++;
	return slot;
}

void db_queue__pop(struct db_queue *q)
{
	if (!q->count)
		return;
	q->head = (q->head + 1) % q->cap;
	q->count--;
}

void db_queue__free(struct db_queue *q)
{
	free(q->v);
	q->v = NULL;
	q->count = q->cap = q->head = 0;
}

/* ---- records: recycled, no allocation per request once warm */

struct free_record {
	struct free_record *next;
};
static struct free_record *free_records;
static uint32_t free_record_count;

struct request *db__record_new(void)
{
	struct free_record *f = free_records;
	if (f) {
		free_records = f->next;
		free_record_count--;
		return (struct request *)f;
	}
	return malloc(sizeof(struct request));
}

void db__record_free(struct request *r)
{
	if (!r)
		return;
	if (free_record_count >= 64) {
		free(r);
		return;
	}
	struct free_record *f = (struct free_record *)r;
	f->next = free_records;
	free_records = f;
	free_record_count++;
}

/* ---- SQL text */

/*
 * A client sends the same few statements again and again with other
 * literals. The summary (operation, collection) of each sanitized text is
 * remembered, so a repeated statement costs the sanitizer and a lookup, not a
 * second pass of the lexer. The summary of the sanitized text is the
 * statement's own: the lexer skips literals, comments and white space, which
 * are all the sanitizer changes (tests/unit/test_sql.c checks it on every
 * summary case, tests/fuzz/fuzz_sql.c on any text that sanitizes to itself
 * again). Not used when literals are kept (then every text is new) or when
 * the text may have been cut at SQL_TEXT_MAX (the table can come after the
 * cut). Direct-mapped: a slot holds the last text that hashed to it.
 */
#define SUMMARY_SLOTS 256
#define SUMMARY_TEXT_MAX 1024
/* A text cut at SQL_TEXT_MAX is longer than that: never remembered. */
_Static_assert(SUMMARY_TEXT_MAX + 1 < SQL_TEXT_MAX, "cut texts must exceed SUMMARY_TEXT_MAX");

struct summary_slot {
	uint64_t hash;
	char *text; /* NULL while empty */
	uint16_t len;
	uint8_t dialect;
	struct sql_summary s;
};

static struct summary_slot summary_cache[SUMMARY_SLOTS];
static struct db_summary_stats summary_stats;

static size_t sql_text(const char *sql, size_t len, enum sql_dialect d,
		       const struct rastro_config *cfg, char *text, struct sql_summary *out)
{
	size_t n = sql__sanitize(sql, len, d, cfg->keep_db_literals, text, SQL_TEXT_MAX);
	if (cfg->keep_db_literals || n > SUMMARY_TEXT_MAX) {
		sql__summarize(sql, len, d, out);
		return n;
	}
	uint64_t h = u64map__hash_bytes(text, n, d);
	struct summary_slot *slot = &summary_cache[h % SUMMARY_SLOTS];
	if (slot->text && slot->hash == h && slot->len == n && slot->dialect == d &&
	    !memcmp(slot->text, text, n)) {
		summary_stats.hits++;
		*out = slot->s;
		return n;
	}
	summary_stats.misses++;
	sql__summarize(text, n, d, out);
	char *copy = realloc(slot->text, n ? n : 1);
	if (!copy)
		return n; /* the slot keeps its entry */
	memcpy(copy, text, n);
	*slot = (struct summary_slot){h, copy, (uint16_t)n, (uint8_t)d, *out};
	return n;
}

struct db_summary_stats db__summary_stats(void)
{
	return summary_stats;
}

/* ---- prepared statements */

static uint64_t stmt_hash(const char *name, size_t len, uint32_t id)
{
	uint64_t h = 1469598103934665603ULL ^ id;
	for (size_t i = 0; name && i < len; i++)
		h = (h ^ (uint8_t)name[i]) * 1099511628211ULL;
	return h;
}

static bool stmt_is(const struct db_stmt *s, uint64_t h, const char *name, size_t len, uint32_t id)
{
	if (s->hash != h || s->id != id)
		return false;
	if (!name)
		return !s->name;
	return s->name && strlen(s->name) == len && !memcmp(s->name, name, len);
}

static void stmt_clear(struct db_stmt *s)
{
	free(s->name);
	free(s->text);
	memset(s, 0, sizeof(*s));
}

struct db_stmt *db_stmts__get(struct db_stmts *t, const char *name, size_t name_len, uint32_t id)
{
	uint64_t h = stmt_hash(name, name_len, id);
	for (uint32_t i = 0; i < t->count; i++) {
		if (stmt_is(&t->v[i], h, name, name_len, id)) {
			t->v[i].last_use = ++t->clock;
			return &t->v[i];
		}
	}
	return NULL;
}

struct db_stmt *db_stmts__put_text(struct db_stmts *t, const char *name, size_t name_len,
				   uint32_t id, const char *text, size_t text_len,
				   const struct sql_summary *summary)
{
	if (text_len > UINT16_MAX)
		text_len = UINT16_MAX;
	char *copy = malloc(text_len + 1);
	char *name_copy = name ? strndup(name, name_len) : NULL;
	if (!copy || (name && !name_copy)) {
		free(copy);
		free(name_copy);
		return NULL;
	}
	memcpy(copy, text, text_len);
	copy[text_len] = '\0';

	struct db_stmt *s = db_stmts__get(t, name, name_len, id);
	if (!s && t->count < t->cap) {
		s = &t->v[t->count++];
		memset(s, 0, sizeof(*s));
	} else if (!s && t->cap < DB_STMTS_MAX) {
		uint32_t cap = t->cap ? t->cap * 2 : 8;
		struct db_stmt *v = realloc(t->v, cap * sizeof(*v));
		if (!v) {
			free(copy);
			free(name_copy);
			return NULL;
		}
		t->v = v;
		t->cap = cap;
		s = &t->v[t->count++];
		memset(s, 0, sizeof(*s));
	} else if (!s) {
		s = &t->v[0]; /* full: the least recently used goes */
		for (uint32_t i = 1; i < t->count; i++)
			if (t->v[i].last_use < s->last_use)
				s = &t->v[i];
	}
	stmt_clear(s);
	s->hash = stmt_hash(name, name_len, id);
	s->name = name_copy;
	s->id = id;
	s->text = copy;
	s->text_len = (uint16_t)text_len;
	s->last_use = ++t->clock;
	s->summary = *summary;
	return s;
}

struct db_stmt *db_stmts__put(struct db_stmts *t, const char *name, size_t name_len, uint32_t id,
			      const char *sql, size_t sql_len, enum sql_dialect d,
			      const struct rastro_config *cfg)
{
	char text[SQL_TEXT_MAX];
	struct sql_summary summary;
	size_t n = sql_text(sql, sql_len, d, cfg, text, &summary);
	return db_stmts__put_text(t, name, name_len, id, text, n, &summary);
}

void db_stmts__remove(struct db_stmts *t, const char *name, size_t name_len, uint32_t id)
{
	struct db_stmt *s = db_stmts__get(t, name, name_len, id);
	if (!s)
		return;
	stmt_clear(s);
	uint32_t last = --t->count;
	if (s != &t->v[last])
		*s = t->v[last];
	memset(&t->v[last], 0, sizeof(*s));
}

void db_stmts__free(struct db_stmts *t)
{
	for (uint32_t i = 0; i < t->count; i++)
		stmt_clear(&t->v[i]);
	free(t->v);
	memset(t, 0, sizeof(*t));
}

/* ---- records */

void db__record_start(struct request *r, enum db_system sys, struct db_start start)
{
	request__init(r, REQ_DB_CLIENT);
	r->db_system = sys;
	r->start_ns = start.ts;
	r->tid = start.tid;
	r->request_seq = start.seq;
	r->request_seq_valid = true;
}

static void store_summary(struct request *r, const struct sql_summary *s)
{
	if (s->operation[0])
		r->db_operation = request__store(r, s->operation, strlen(s->operation));
	if (s->collection[0])
		r->db_collection = request__store(r, s->collection, strlen(s->collection));
}

void db__record_sql(struct request *r, const char *sql, size_t len, enum sql_dialect d,
		    const struct rastro_config *cfg)
{
	char text[SQL_TEXT_MAX];
	struct sql_summary s;
	size_t n = sql_text(sql, len, d, cfg, text, &s);
	store_summary(r, &s);
	if (n)
		r->db_query = request__store(r, text, n);
}

void db__record_stmt(struct request *r, const struct db_stmt *st)
{
	store_summary(r, &st->summary);
	if (st->text_len)
		r->db_query = request__store(r, st->text, st->text_len);
}

bool db__is_text(const char *p, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)p[i];
		if (c < 0x20 && c != '\t' && c != '\n' && c != '\r')
			return false;
		if (c == 0x7f)
			return false;
	}
	return true;
}
