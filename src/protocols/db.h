/* What the database protocol sessions (postgres, mysql, redis, heuristic
 * SQL) share: a framer for length-prefixed messages that skips bytes the
 * kernel did not copy, a queue of operations awaiting their reply, recycled
 * request records, a table of prepared statements, and the code that turns
 * SQL text into a record's db.* fields. */
#ifndef RASTRO_DB_H
#define RASTRO_DB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "protocols/proto.h"
#include "protocols/sql.h"
#include "request.h"

struct db_slice {
	const char *p;
	size_t len;
};

/* The syscall that moved the first byte of something. */
struct db_start {
	uint64_t ts;
	uint32_t tid;
	uint32_t seq;
};

static inline struct db_start db__start_at(const struct chunk *ch, const char *at)
{
	return (struct db_start){ch->ts, ch->tid, ch->seq + (uint32_t)(at - ch->data)};
}

/* ---- framing of length-prefixed messages */

enum db_frame_kind {
	DB_FRAME_PG_TYPED = 0, /* type byte, int32 BE length that counts itself */
	DB_FRAME_PG_UNTYPED,   /* int32 BE length that counts itself (startup messages) */
	DB_FRAME_BYTE,         /* one byte, no body (PostgreSQL's answer to SSLRequest) */
	DB_FRAME_MYSQL,        /* int24 LE payload length, sequence id */
};

/* A complete message. body holds its first `kept` bytes (kept < len when
 * the body was longer than asked for or not all copied by the kernel). */
struct db_msg {
	uint8_t hdr[5];
	uint8_t hdr_len;
	uint32_t len; /* body length */
	const char *body;
	uint32_t kept;
	bool cut; /* kept < len */
	struct db_start start;
};

/* Called for each complete message with the chunk that ended it; returns
 * false to stop (the session changed its mind about the stream). */
typedef bool (*db_msg_fn)(void *ctx, const struct db_msg *m, const struct chunk *ch);
/* How many body bytes of the message with this header to keep. */
typedef uint32_t (*db_keep_fn)(void *ctx, const uint8_t *hdr);

struct db_framer {
	enum db_frame_kind kind;
	uint8_t hdr[5], hdr_have;
	bool in_body;
	uint32_t body_len, body_left, want;
	char *buf; /* body bytes kept across chunks */
	uint32_t buf_len, buf_cap;
	bool lost; /* a boundary lay in unseen bytes or a header was invalid */
	struct db_start start;
};

/* Parses len captured bytes of ch at buf. Returns false when the framing
 * broke (an invalid header: the framer is then lost until reset) or when fn
 * asked to stop (the framer stays between two messages). */
bool db_framer__feed(struct db_framer *f, const struct chunk *ch, const char *buf, size_t len,
		     db_keep_fn keep, db_msg_fn fn, void *ctx);
/* Passes over n bytes the kernel moved but did not copy. They can only be
 * skipped inside a message body; a message that ends exactly there is
 * delivered (cut). Returns false (framer lost) when a message boundary lies
 * inside them. */
bool db_framer__skip(struct db_framer *f, const struct chunk *ch, uint64_t n, db_msg_fn fn,
		     void *ctx);
/* Forgets the message in progress: the next byte starts a new one. */
void db_framer__reset(struct db_framer *f);
/* The same, and the next bytes are framed as kind: the way to change a
 * framer's kind outside its own callback (a partial header of the old kind
 * must not meet the new kind's size). */
void db_framer__restart(struct db_framer *f, enum db_frame_kind kind);
void db_framer__free(struct db_framer *f);

/* ---- queue of operations awaiting a reply (a growable ring) */

struct db_queue {
	char *v;
	uint32_t head, count, cap, elem;
};

void db_queue__init(struct db_queue *q, uint32_t elem_size);
/* A zeroed slot at the tail, or NULL when out of memory or `limit` slots
 * are in use. */
void *db_queue__push(struct db_queue *q, uint32_t limit);
void *db_queue__at(const struct db_queue *q, uint32_t i);
static inline void *db_queue__head(const struct db_queue *q)
{
	return q->count ? db_queue__at(q, 0) : NULL;
}
void db_queue__pop(struct db_queue *q);
void db_queue__free(struct db_queue *q);

/* ---- request records kept while their reply is awaited, recycled */

struct request *db__record_new(void);
void db__record_free(struct request *r);

/* ---- prepared statements of a connection, by name or numeric id */

struct db_stmt {
	uint64_t hash;
	char *name; /* NULL when keyed by id */
	uint32_t id;
	uint64_t last_use;
	char *text; /* sanitized */
	uint16_t text_len;
	struct sql_summary summary;
};

struct db_stmts {
	struct db_stmt *v;
	uint32_t count, cap;
	uint64_t clock;
};

/* At most this many per connection; the least recently used goes first. */
#define DB_STMTS_MAX 256

/* Adds or replaces a statement; its SQL is sanitized per cfg now, once. */
struct db_stmt *db_stmts__put(struct db_stmts *t, const char *name, size_t name_len, uint32_t id,
			      const char *sql, size_t sql_len, enum sql_dialect d,
			      const struct rastro_config *cfg);
/* The same with text already sanitized and summarized. */
struct db_stmt *db_stmts__put_text(struct db_stmts *t, const char *name, size_t name_len,
				   uint32_t id, const char *text, size_t text_len,
				   const struct sql_summary *summary);
struct db_stmt *db_stmts__get(struct db_stmts *t, const char *name, size_t name_len, uint32_t id);
void db_stmts__remove(struct db_stmts *t, const char *name, size_t name_len, uint32_t id);
void db_stmts__free(struct db_stmts *t);

/* ---- filling records */

/* request__init(REQ_DB_CLIENT) plus where the request started. */
void db__record_start(struct request *r, enum db_system sys, struct db_start start);
/* Sets db.query.text (sanitized per cfg), db.operation.name and
 * db.collection.name from SQL text. */
void db__record_sql(struct request *r, const char *sql, size_t len, enum sql_dialect d,
		    const struct rastro_config *cfg);
/* The same from a prepared statement. */
void db__record_stmt(struct request *r, const struct db_stmt *st);

/* Big-endian / little-endian readers. */
static inline uint32_t db__be32(const void *p)
{
	const uint8_t *b = p;
	return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}
static inline uint16_t db__le16(const void *p)
{
	const uint8_t *b = p;
	return (uint16_t)(b[0] | b[1] << 8);
}
static inline uint32_t db__le24(const void *p)
{
	const uint8_t *b = p;
	return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16;
}
static inline uint32_t db__le32(const void *p)
{
	const uint8_t *b = p;
	return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

/* Whether the bytes read as text (printable ASCII, UTF-8, white space). */
bool db__is_text(const char *p, size_t len);

/* The summary cache of db__record_sql and db_stmts__put: statements whose
 * summary was found by their sanitized text, and those summarized. */
struct db_summary_stats {
	uint64_t hits, misses;
};
struct db_summary_stats db__summary_stats(void);

#endif
