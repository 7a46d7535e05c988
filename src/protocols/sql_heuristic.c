/*
 * Heuristic SQL (ebpf.heuristic_sql_detect): a TCP connection of the traced
 * process whose protocol is not otherwise known and whose request starts
 * with SQL text (within the first bytes: some framing of an unknown protocol
 * may come first) is reported as a database call, db.system.name=other_sql.
 *
 * Nothing is known of the framing, so a request is everything the client
 * sends until the other side speaks, and its answer is the next bytes the
 * other side sends: the record ends with the first read of them (answers
 * of unknown length cannot be told complete later). Requests of the
 * connection that do not start with SQL are not reported.
 */
#include <stdlib.h>
#include <string.h>

#include "protocols/db.h"
#include "protocols/proto.h"

/* How far into a request its SQL may start. */
#define HSQL_MAX_OFFSET 8

struct hsql_session {
	struct conn *conn;
	int last_dir;
	struct request *rec; /* a request awaiting the first byte of its answer */
};

static enum proto_verdict hsql_detect(const struct conn *c, const struct chunk *ch)
{
	if (!conn__config(c)->heuristic_sql_detect || conn__role_hint(c) == RASTRO_ROLE_SERVER ||
	    ch->dir != RASTRO_DIR_EGRESS)
		return PROTO_NO;
	return sql__find_statement(ch->data, ch->captured, HSQL_MAX_OFFSET) >= 0 ? PROTO_YES
										 : PROTO_NO;
}

static void *hsql_open(struct conn *c, const struct chunk *first)
{
	(void)first;
	struct hsql_session *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->conn = c;
	s->last_dir = -1;
	return s;
}

/* The SQL text ends where the bytes stop reading as text. */
static size_t text_length(const char *p, size_t len)
{
	size_t i = 0;
	while (i < len && db__is_text(p + i, 1))
		i++;
	return i;
}

static void on_request(struct hsql_session *s, const struct chunk *ch)
{
	/* A request that got no answer before the client spoke again is dropped:
	 * with an unknown protocol, not every message expects one. */
	db__record_free(s->rec);
	s->rec = NULL;
	int off = sql__find_statement(ch->data, ch->captured, HSQL_MAX_OFFSET);
	if (off < 0)
		return;
	s->rec = db__record_new();
	if (!s->rec) {
		conn__count(s->conn, CONN_LOST_NO_MEMORY, 1);
		return;
	}
	const char *sql = ch->data + off;
	db__record_start(s->rec, DB_OTHER_SQL, db__start_at(ch, ch->data));
	db__record_sql(s->rec, sql, text_length(sql, ch->captured - (size_t)off), SQL_DIALECT_ANSI,
		       conn__config(s->conn));
	conn__start(s->conn, s->rec);
}

static void hsql_data(void *state, struct conn *c, const struct chunk *ch)
{
	struct hsql_session *s = state;
	(void)c;
	bool egress = ch->dir == RASTRO_DIR_EGRESS;
	bool turn = s->last_dir != ch->dir;
	s->last_dir = ch->dir;
	if (egress && turn) {
		on_request(s, ch);
	} else if (!egress && s->rec) {
		s->rec->end_ns = ch->ts;
		conn__emit(s->conn, s->rec);
		db__record_free(s->rec);
		s->rec = NULL;
	}
}

static void hsql_close(void *state, struct conn *c, uint64_t ts)
{
	struct hsql_session *s = state;
	(void)c;
	(void)ts;
	db__record_free(s->rec);
	s->rec = NULL;
}

static void hsql_free(void *state)
{
	struct hsql_session *s = state;
	db__record_free(s->rec);
	free(s);
}

const struct proto_ops sql_heuristic_proto = {
	.name = "other_sql",
	.detect = hsql_detect,
	.open = hsql_open,
	.data = hsql_data,
	.close = hsql_close,
	.free = hsql_free,
};
