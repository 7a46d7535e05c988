/*
 * PostgreSQL client connections: pairs what the traced process sends (the
 * frontend) with what the server answers (the backend), one record per
 * Query and per Execute.
 *
 * Operations queue in the order they were sent and the server answers in
 * that order:
 *   Query        ends with ReadyForQuery ('Z'); an ErrorResponse before it
 *                marks it failed.
 *   Execute      ends with CommandComplete, EmptyQueryResponse,
 *                PortalSuspended or ErrorResponse. Its text is the statement
 *                its portal was bound to, from that statement's Parse, which
 *                may have come in an earlier request (prepared statements
 *                are kept per connection by name).
 *   Sync         ends with ReadyForQuery; Executes still queued before it
 *                were skipped by the server after an error and are dropped.
 *   a Parse without Execute before its Sync (a prepare): reported only when
 *                it fails.
 * A record starts at the syscall that sent the operation's first message
 * (its Parse or Bind for an Execute) and ends at the syscall that received
 * the last byte of its answer.
 *
 * The startup phase (StartupMessage, SSLRequest, authentication) is parsed
 * and skipped; after an accepted SSLRequest or GSSENCRequest the bytes are
 * encrypted and the connection is ignored. When the client's reads are
 * larger than what the kernel copies, a long reply's message boundaries are
 * lost: the reply then ends with the read that ends in ReadyForQuery, or
 * when the client speaks again.
 */
#include <stdlib.h>
#include <string.h>

#include "protocols/db.h"
#include "protocols/postgres.h"
#include "protocols/proto.h"

/* Body bytes kept of messages carrying SQL: enough for SQL_TEXT_MAX after
 * sanitizing a text with long literals cut away. */
#define PG_KEEP_SQL 4096
#define PG_PORTALS 4
#define PG_NAME_MAX 64 /* PostgreSQL names are at most 63 bytes */

enum pg_op_kind { OP_QUERY, OP_EXECUTE, OP_PREPARE, OP_SYNC };

struct pg_op {
	uint8_t kind;
	bool failed;
	struct request *rec; /* NULL for syncs and placeholders */
};

struct pg_portal {
	bool used;
	uint8_t name_len, stmt_len;
	char name[PG_NAME_MAX], stmt[PG_NAME_MAX];
};

struct pg_session {
	struct conn *conn;
	struct db_framer fe, be; /* frontend = egress, backend = ingress */
	struct db_queue ops;     /* struct pg_op, oldest first */
	struct db_stmts stmts;
	struct pg_portal portals[PG_PORTALS]; /* [0] is the unnamed portal */
	bool dead;      /* encrypted or not PostgreSQL: ignored from now on */
	bool fe_lost;   /* request framing lost: resync at a message start after a turn */
	bool be_lost;   /* reply framing lost: the reply ends at ReadyForQuery or a turn */
	int last_dir;
	uint64_t be_last_ts;
	/* extended-query batch since the last Sync */
	bool op_start_set, batch_parsed, batch_executed;
	struct db_start op_start;
	uint8_t last_parse_len;
	char last_parse[PG_NAME_MAX];
	uint8_t ns_len;
	char ns[PG_NAME_MAX]; /* db.namespace: the database from the startup message */
};

static enum proto_verdict pg_detect(const struct conn *c, const struct chunk *ch)
{
	/* The traced process is the client: its requests leave (egress). */
	if (conn__role_hint(c) == RASTRO_ROLE_SERVER || ch->dir != RASTRO_DIR_EGRESS)
		return PROTO_NO;
	if (pg__untyped_kind(ch->data, ch->captured, ch->bytes))
		return PROTO_YES;
	return pg__looks_like_frontend(ch->data, ch->captured, ch->bytes) ? PROTO_YES : PROTO_NO;
}

static void *pg_open(struct conn *c, const struct chunk *first)
{
	struct pg_session *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->conn = c;
	s->last_dir = -1;
	db_queue__init(&s->ops, sizeof(struct pg_op));
	s->fe.kind = pg__untyped_kind(first->data, first->captured, first->bytes)
			     ? DB_FRAME_PG_UNTYPED
			     : DB_FRAME_PG_TYPED;
	s->be.kind = DB_FRAME_PG_TYPED;
	return s;
}

static void op_drop(struct pg_session *s)
{
	struct pg_op *op = db_queue__head(&s->ops);
	if (op)
		db__record_free(op->rec);
	db_queue__pop(&s->ops);
}

static void op_emit(struct pg_session *s, uint64_t end_ts)
{
	struct pg_op *op = db_queue__head(&s->ops);
	struct request *r = op ? op->rec : NULL;
	if (r) {
		r->end_ns = end_ts;
		if (s->ns_len)
			r->db_namespace = request__store(r, s->ns, s->ns_len);
		conn__emit(s->conn, r);
	}
	op_drop(s);
}

/* Drops every queued operation: their answers cannot be told apart. */
static void ops_abandon(struct pg_session *s, enum conn_counter why)
{
	uint64_t n = 0;
	while (s->ops.count) {
		struct pg_op *op = db_queue__head(&s->ops);
		n += op->rec && op->kind != OP_PREPARE;
		op_drop(s);
	}
	if (n)
		conn__count(s->conn, why, n);
}

static struct pg_op *op_push(struct pg_session *s, enum pg_op_kind kind, bool want_record)
{
	const struct rastro_config *cfg = conn__config(s->conn);
	/* Syncs and placeholders are small; records are bounded by the config. */
	struct pg_op *op = db_queue__push(&s->ops, cfg->max_pending_requests + 4096);
	if (!op) {
		conn__count(s->conn, CONN_LOST_NO_MEMORY, 1);
		return NULL;
	}
	op->kind = (uint8_t)kind;
	if (!want_record)
		return op;
	uint32_t records = 0;
	for (uint32_t i = 0; i + 1 < s->ops.count; i++)
		records += ((struct pg_op *)db_queue__at(&s->ops, i))->rec != NULL;
	if (records >= cfg->max_pending_requests) {
		/* Keep the place in the queue so later answers pair right. */
		conn__count(s->conn, CONN_LOST_PIPELINE_OVERFLOW, 1);
		return op;
	}
	op->rec = db__record_new();
	if (!op->rec)
		conn__count(s->conn, CONN_LOST_NO_MEMORY, 1);
	return op;
}

static struct pg_portal *portal_find(struct pg_session *s, struct db_slice name, bool create)
{
	if (!name.len)
		return &s->portals[0];
	if (name.len >= PG_NAME_MAX)
		return NULL;
	struct pg_portal *free_slot = NULL;
	for (int i = 1; i < PG_PORTALS; i++) {
		struct pg_portal *p = &s->portals[i];
		if (p->used && p->name_len == name.len && !memcmp(p->name, name.p, name.len))
			return p;
		if (!p->used && !free_slot)
			free_slot = p;
	}
	if (!create)
		return NULL;
	if (!free_slot)
		free_slot = &s->portals[1]; /* named portals are rare: reuse */
	free_slot->used = true;
	free_slot->name_len = (uint8_t)name.len;
	memcpy(free_slot->name, name.p, name.len);
	return free_slot;
}

static void set_namespace(struct pg_session *s, struct db_slice v)
{
	if (!v.len || v.len >= PG_NAME_MAX)
		return;
	memcpy(s->ns, v.p, v.len);
	s->ns_len = (uint8_t)v.len;
}

static void on_startup(struct pg_session *s, const struct db_msg *m)
{
	/* The body starts with the request code; hdr holds the length. */
	uint32_t code = m->kept >= 4 ? db__be32(m->body) : 0;
	if (code == PG_SSL_REQUEST_CODE || code == PG_GSSENC_REQUEST_CODE) {
		/* The answer is one byte, 'S'/'G' (accepted) or 'N'; what the
		 * backend framer had of a message before it (a connection seen
		 * from its middle) is dropped. */
		db_framer__restart(&s->be, DB_FRAME_BYTE);
		return;
	}
	if (code >> 16 != 3) {
		s->dead = true; /* CancelRequest or an unknown protocol */
		return;
	}
	struct db_slice user, database;
	pg__parse_startup(m->body, m->kept, &user, &database);
	set_namespace(s, database.len ? database : user);
	s->fe.kind = DB_FRAME_PG_TYPED;
}

static void on_query(struct pg_session *s, const struct db_msg *m)
{
	struct db_slice sql;
	pg__parse_query(m->body, m->kept, &sql);
	struct pg_op *op = op_push(s, OP_QUERY, true);
	if (op && op->rec) {
		db__record_start(op->rec, DB_POSTGRESQL, m->start);
		db__record_sql(op->rec, sql.p, sql.len, SQL_DIALECT_ANSI, conn__config(s->conn));
		conn__start(s->conn, op->rec);
	}
}

static void on_parse(struct pg_session *s, const struct db_msg *m)
{
	struct db_slice name, sql;
	if (!pg__parse_parse(m->body, m->kept, &name, &sql) || name.len >= PG_NAME_MAX)
		return;
	if (!db_stmts__put(&s->stmts, name.p, name.len, 0, sql.p, sql.len, SQL_DIALECT_ANSI,
			   conn__config(s->conn)))
		conn__count(s->conn, CONN_LOST_NO_MEMORY, 1);
	s->batch_parsed = true;
	memcpy(s->last_parse, name.p, name.len);
	s->last_parse_len = (uint8_t)name.len;
}

static void on_bind(struct pg_session *s, const struct db_msg *m)
{
	struct db_slice portal, stmt;
	if (!pg__parse_bind(m->body, m->kept, &portal, &stmt) || stmt.len >= PG_NAME_MAX)
		return;
	struct pg_portal *p = portal_find(s, portal, true);
	if (!p)
		return;
	memcpy(p->stmt, stmt.p, stmt.len);
	p->stmt_len = (uint8_t)stmt.len;
}

/* A record for an operation on a statement; without text when the statement
 * was prepared before rastro saw the connection. */
static void start_stmt_record(struct pg_session *s, struct request *r, const char *name,
			      size_t name_len)
{
	db__record_start(r, DB_POSTGRESQL, s->op_start);
	struct db_stmt *st = db_stmts__get(&s->stmts, name, name_len, 0);
	if (st)
		db__record_stmt(r, st);
}

static void on_execute(struct pg_session *s, const struct db_msg *m)
{
	struct db_slice portal;
	if (!pg__parse_execute(m->body, m->kept, &portal))
		portal = (struct db_slice){0};
	struct pg_portal *p = portal_find(s, portal, false);
	struct pg_op *op = op_push(s, OP_EXECUTE, true);
	if (op && op->rec) {
		start_stmt_record(s, op->rec, p ? p->stmt : "", p ? p->stmt_len : 0);
		conn__start(s->conn, op->rec);
	}
	s->batch_executed = true;
	s->op_start_set = false;
}

static void on_close(struct pg_session *s, const struct db_msg *m)
{
	char what;
	struct db_slice name;
	if (!pg__parse_close(m->body, m->kept, &what, &name))
		return;
	if (what == 'S') {
		db_stmts__remove(&s->stmts, name.p, name.len, 0);
	} else {
		struct pg_portal *p = portal_find(s, name, false);
		if (p && p != &s->portals[0])
			p->used = false;
	}
}

static void on_sync(struct pg_session *s)
{
	if (s->batch_parsed && !s->batch_executed) {
		/* A prepare: reported only if it fails. */
		struct pg_op *op = op_push(s, OP_PREPARE, true);
		if (op && op->rec)
			start_stmt_record(s, op->rec, s->last_parse, s->last_parse_len);
	}
	op_push(s, OP_SYNC, false);
	s->batch_parsed = s->batch_executed = false;
	s->op_start_set = false;
}

static bool on_frontend(void *ctx, const struct db_msg *m, const struct chunk *ch)
{
	struct pg_session *s = ctx;
	(void)ch;
	if (s->fe.kind == DB_FRAME_PG_UNTYPED) {
		on_startup(s, m);
		return !s->dead;
	}
	if (!s->op_start_set) {
		s->op_start = m->start;
		s->op_start_set = true;
	}
	switch (m->hdr[0]) {
	case 'Q':
		on_query(s, m);
		s->op_start_set = false;
		break;
	case 'P':
		on_parse(s, m);
		break;
	case 'B':
		on_bind(s, m);
		break;
	case 'E':
		on_execute(s, m);
		break;
	case 'C':
		on_close(s, m);
		break;
	case 'S':
		on_sync(s);
		break;
	case 'F':
		/* FunctionCall: answered up to ReadyForQuery, not reported. */
		op_push(s, OP_SYNC, false);
		s->op_start_set = false;
		break;
	default:
		/* Describe, Flush, Terminate, copy data, passwords: nothing to pair. */
		break;
	}
	return true;
}

static void on_error(struct pg_session *s, const struct db_msg *m, uint64_t ts)
{
	struct pg_op *op = db_queue__head(&s->ops);
	if (!op || op->kind == OP_SYNC)
		return; /* a FATAL at startup or shutdown, or an answer we cannot place */
	struct pg_error e;
	bool parsed = pg__parse_error(m->body, m->kept, &e);
	if (op->rec && !op->failed) {
		struct request *r = op->rec;
		const struct rastro_config *cfg = conn__config(s->conn);
		if (parsed)
			r->db_status = request__store(r, e.code.p, e.code.len);
		else
			r->error_type = request__store(r, "_OTHER", 6);
		if (cfg->keep_db_literals && e.message.len)
			r->error_message = request__store(
			    r, e.message.p, e.message.len < 255 ? e.message.len : 255);
	}
	op->failed = true;
	/* An Execute (or prepare) ends with its error; a Query with ReadyForQuery. */
	if (op->kind == OP_EXECUTE || op->kind == OP_PREPARE)
		op_emit(s, ts);
}

/* ReadyForQuery: the Query or Sync at the head is answered. */
static void on_ready(struct pg_session *s, uint64_t ts)
{
	struct pg_op *op;
	while ((op = db_queue__head(&s->ops))) {
		switch (op->kind) {
		case OP_QUERY:
			op_emit(s, ts);
			return;
		case OP_SYNC:
			op_drop(s);
			return;
		default:
			/* Skipped after an error, or a prepare that worked. */
			op_drop(s);
			break;
		}
	}
}

static bool on_backend(void *ctx, const struct db_msg *m, const struct chunk *ch)
{
	struct pg_session *s = ctx;
	if (s->be.kind == DB_FRAME_BYTE) {
		/* The answer to SSLRequest / GSSENCRequest. */
		if (m->hdr[0] == 'N') {
			s->be.kind = DB_FRAME_PG_TYPED;
			return true;
		}
		s->dead = true; /* encrypted from here on (or an old server's error) */
		return false;
	}
	struct pg_op *op = db_queue__head(&s->ops);
	switch (m->hdr[0]) {
	case 'E':
		on_error(s, m, ch->ts);
		break;
	case 'C':
	case 'I':
	case 's':
		if (op && op->kind == OP_EXECUTE)
			op_emit(s, ch->ts);
		break;
	case 'Z':
		on_ready(s, ch->ts);
		break;
	default:
		/* Rows, descriptions, parameter status, notices, auth: skipped by length. */
		break;
	}
	return true;
}

static uint32_t fe_keep(void *ctx, const uint8_t *hdr)
{
	struct pg_session *s = ctx;
	if (s->fe.kind == DB_FRAME_PG_UNTYPED)
		return 1024;
	switch (hdr[0]) {
	case 'Q':
	case 'P':
		return PG_KEEP_SQL + PG_NAME_MAX;
	case 'B':
		return 2 * PG_NAME_MAX + 2;
	case 'E':
	case 'C':
		return PG_NAME_MAX + 6;
	default:
		return 0;
	}
}

static uint32_t be_keep(void *ctx, const uint8_t *hdr)
{
	(void)ctx;
	return hdr[0] == 'E' ? 1024 : 0;
}

/* The reply being received can no longer be followed message by message:
 * its operation ends at ts (0: unknown); what is queued after it cannot be
 * placed. */
static void finish_lost_reply(struct pg_session *s, uint64_t ts)
{
	struct pg_op *op = db_queue__head(&s->ops);
	if (op && ts &&
	    (op->kind == OP_QUERY || op->kind == OP_EXECUTE ||
	     (op->kind == OP_PREPARE && op->failed)))
		op_emit(s, ts);
	ops_abandon(s, CONN_PARSE_ERRORS);
}

static void pg_data(void *state, struct conn *c, const struct chunk *ch)
{
	struct pg_session *s = state;
	(void)c;
	if (s->dead)
		return;
	bool fe = ch->dir == RASTRO_DIR_EGRESS;
	bool turn = s->last_dir >= 0 && s->last_dir != ch->dir;
	s->last_dir = ch->dir;

	if (fe && turn && s->be_lost) {
		/* The client speaks again: the reply whose framing was lost is over. */
		finish_lost_reply(s, s->be_last_ts);
	}
	if (ch->gap) {
		/* Events were lost in this direction: requests we did not see, or
		 * answers to what is queued. Nothing queued can be paired now. */
		ops_abandon(s, CONN_LOST_EVENTS);
		if (fe)
			s->fe_lost = true;
		else
			s->be_lost = true;
		s->be_last_ts = 0;
	}
	if (fe && s->fe_lost) {
		if (!turn && !ch->gap)
			return;
		if (!pg__looks_like_frontend(ch->data, ch->captured, ch->bytes))
			return;
		/* Resume at this request; earlier ones cannot be paired any more. */
		ops_abandon(s, CONN_PARSE_ERRORS);
		db_framer__restart(&s->fe, DB_FRAME_PG_TYPED);
		s->fe_lost = false;
		s->op_start_set = s->batch_parsed = s->batch_executed = false;
		s->be_lost = true; /* the reply resumes after this turn */
		s->be_last_ts = 0;
	}
	if (!fe && s->be_lost) {
		if (turn && !ch->gap && !s->fe_lost) {
			db_framer__restart(&s->be, DB_FRAME_PG_TYPED); /* a new reply starts here */
			s->be_lost = false;
		} else {
			s->be_last_ts = ch->ts;
			if (ch->captured == ch->bytes &&
			    pg__ends_with_ready(ch->data, ch->captured)) {
				finish_lost_reply(s, ch->ts);
				db_framer__reset(&s->be);
				s->be_lost = false;
			}
			return;
		}
	}

	struct db_framer *f = fe ? &s->fe : &s->be;
	db_msg_fn fn = fe ? on_frontend : on_backend;
	bool ok = db_framer__feed(f, ch, ch->data, ch->captured, fe ? fe_keep : be_keep, fn, s);
	if (ok && ch->bytes > ch->captured)
		ok = db_framer__skip(f, ch, ch->bytes - ch->captured, fn, s);
	if (!fe)
		s->be_last_ts = ch->ts;
	if (ok || s->dead)
		return;
	if (fe) {
		s->fe_lost = true;
	} else {
		s->be_lost = true;
		/* The read that lost the framing may itself end the reply. */
		if (ch->captured == ch->bytes && pg__ends_with_ready(ch->data, ch->captured)) {
			finish_lost_reply(s, ch->ts);
			db_framer__reset(&s->be);
			s->be_lost = false;
		}
	}
}

static void pg_close(void *state, struct conn *c, uint64_t ts)
{
	struct pg_session *s = state;
	(void)c;
	(void)ts;
	if (s->be_lost && !s->dead)
		finish_lost_reply(s, s->be_last_ts);
	/* Operations never answered: the connection ended under them. */
	struct pg_op *op;
	while ((op = db_queue__head(&s->ops))) {
		if (op->rec && op->kind != OP_PREPARE && !s->dead) {
			if (!request__has(op->rec->db_status))
				op->rec->error_type = request__store(op->rec, "no_response", 11);
			op_emit(s, ts);
		} else {
			op_drop(s);
		}
	}
}

static void pg_free(void *state)
{
	struct pg_session *s = state;
	while (s->ops.count)
		op_drop(s);
	db_queue__free(&s->ops);
	db_stmts__free(&s->stmts);
	db_framer__free(&s->fe);
	db_framer__free(&s->be);
	free(s);
}

const struct proto_ops postgres_proto = {
	.name = "postgresql",
	.detect = pg_detect,
	.open = pg_open,
	.data = pg_data,
	.close = pg_close,
	.free = pg_free,
};
