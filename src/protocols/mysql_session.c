/*
 * MySQL / MariaDB client connections: one record per COM_QUERY and
 * COM_STMT_EXECUTE (whose text comes from the COM_STMT_PREPARE that made the
 * statement, kept per connection by statement id); a COM_STMT_PREPARE is
 * reported only when it fails. Other commands (ping, init db, statistics,
 * ...) are followed to keep the reply framing, not reported.
 *
 * A reply is followed packet by packet, counting packets by their length
 * headers: OK, ERR, or a result set (column count, column definitions, an
 * EOF unless CLIENT_DEPRECATE_EOF, rows, a terminating EOF or OK), possibly
 * several when SERVER_MORE_RESULTS is set. Whether EOF packets are sent is
 * read from the handshake when it was seen, else from the packets
 * themselves (an EOF is exactly 5 bytes; an OK that ends rows is longer).
 * Bytes the kernel did not copy are skipped by length; when a reply's
 * packet boundaries fall into them (the client reads more at once than is
 * copied), the reply ends with the read that ends in its terminator, or
 * when the client sends its next command: the protocol has one command in
 * flight at a time.
 *
 * The server greeting tells MariaDB from MySQL and the handshake response
 * gives the database (db.namespace) and the capabilities; a client that
 * switches to TLS is ignored from then on.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "protocols/db.h"
#include "protocols/mysql.h"
#include "protocols/proto.h"

#define MY_KEEP_SQL 4096
#define MY_NAME_MAX 64

enum my_phase { PH_GREETING, PH_LOGIN, PH_AUTH, PH_COMMAND };

enum my_state {
	RS_FIRST = 0,   /* OK, ERR, EOF, LOCAL INFILE request or a column count */
	RS_COLDEFS,     /* column definitions */
	RS_AFTER_DEFS,  /* EOF (classic), or already rows / the terminator */
	RS_ROWS,        /* rows up to the terminator */
	RS_PREP_PARAMS, /* COM_STMT_PREPARE_OK's parameter definitions */
	RS_PREP_EOF1,   /* their EOF, if EOFs are sent */
	RS_PREP_COLS,   /* then column definitions */
	RS_PREP_EOF2,   /* their EOF, if EOFs are sent */
};

struct my_op {
	uint8_t cmd;
	uint8_t state;
	bool failed;
	bool report; /* COM_QUERY, COM_STMT_EXECUTE; others only when they fail */
	uint16_t columns;
	uint64_t left; /* definitions still to come */
	uint8_t use_db_len;
	char use_db[MY_NAME_MAX]; /* db.namespace once this succeeds */
	struct request *rec;
};

struct my_session {
	struct conn *conn;
	struct db_framer fe, be; /* client = egress, server = ingress */
	struct db_queue ops;     /* struct my_op */
	struct db_stmts stmts;
	enum my_phase phase;
	bool mariadb;
	uint32_t server_caps;
	int8_t deprecate_eof; /* -1: not known yet */
	int8_t query_attrs;   /* -1: not known */
	bool meta_first;      /* MySQL's optional metadata: its flag precedes the column count */
	bool dead, fe_lost, be_lost;
	bool fe_continued, be_continued; /* the last packet was MYSQL_MAX_PACKET long */
	bool swallow_eof; /* an EOF may still follow the last completed reply */
	int last_dir;
	uint64_t be_last_ts;
	uint8_t ns_len;
	char ns[MY_NAME_MAX];
};

static enum proto_verdict my_detect(const struct conn *c, const struct chunk *ch)
{
	if (conn__role_hint(c) == RASTRO_ROLE_SERVER)
		return PROTO_NO;
	if (ch->dir == RASTRO_DIR_INGRESS) {
		/* The server speaks first. A client reading the 4-byte header alone
		 * gets it joined with the next read. */
		if (ch->captured == 4 && ch->bytes == 4 && ch->data[3] == 0 &&
		    db__le24(ch->data) < 1024 && db__le24(ch->data) > 20)
			return PROTO_MAYBE;
		return mysql__looks_like_greeting(ch->data, ch->captured, ch->bytes) ? PROTO_YES
										     : PROTO_NO;
	}
	return mysql__looks_like_command(ch->data, ch->captured, ch->bytes) ? PROTO_YES : PROTO_NO;
}

static void *my_open(struct conn *c, const struct chunk *first)
{
	struct my_session *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->conn = c;
	s->last_dir = -1;
	s->deprecate_eof = -1;
	s->query_attrs = -1;
	s->fe.kind = s->be.kind = DB_FRAME_MYSQL;
	db_queue__init(&s->ops, sizeof(struct my_op));
	s->phase = first->dir == RASTRO_DIR_INGRESS ? PH_GREETING : PH_COMMAND;
	return s;
}

static void op_drop(struct my_session *s)
{
	struct my_op *op = db_queue__head(&s->ops);
	if (op)
		db__record_free(op->rec);
	db_queue__pop(&s->ops);
}

static void set_namespace(struct my_session *s, const char *p, size_t len)
{
	if (!len || len >= MY_NAME_MAX)
		return;
	memcpy(s->ns, p, len);
	s->ns_len = (uint8_t)len;
}

/* The reply to the head operation is complete. */
static void op_done(struct my_session *s, uint64_t ts)
{
	struct my_op *op = db_queue__head(&s->ops);
	if (!op)
		return;
	if (!op->failed && op->use_db_len)
		set_namespace(s, op->use_db, op->use_db_len);
	struct request *r = op->rec;
	if (r && (op->report || op->failed)) {
		r->end_ns = ts;
		r->db_system = s->mariadb ? DB_MARIADB : DB_MYSQL;
		if (s->ns_len)
			r->db_namespace = request__store(r, s->ns, s->ns_len);
		conn__emit(s->conn, r);
	}
	op_drop(s);
}

static void ops_abandon(struct my_session *s, enum conn_counter why)
{
	uint64_t n = 0;
	while (s->ops.count) {
		struct my_op *op = db_queue__head(&s->ops);
		n += op->rec && op->report;
		op_drop(s);
	}
	if (n)
		conn__count(s->conn, why, n);
}

static struct my_op *op_push(struct my_session *s, uint8_t cmd, bool want_record)
{
	const struct rastro_config *cfg = conn__config(s->conn);
	struct my_op *op = db_queue__push(&s->ops, cfg->max_pending_requests + 64);
	if (!op) {
		conn__count(s->conn, CONN_LOST_PIPELINE_OVERFLOW, 1);
		return NULL;
	}
	op->cmd = cmd;
	if (!want_record)
		return op;
	if (s->ops.count > cfg->max_pending_requests) {
		conn__count(s->conn, CONN_LOST_PIPELINE_OVERFLOW, 1);
		return op; /* keeps its place, reported by nobody */
	}
	op->rec = db__record_new();
	if (!op->rec)
		conn__count(s->conn, CONN_LOST_NO_MEMORY, 1);
	return op;
}

static void on_login(struct my_session *s, const struct db_msg *m)
{
	struct mysql_login l;
	if (!mysql__parse_login(m->body, m->kept, &l)) {
		s->phase = PH_AUTH;
		return;
	}
	if (l.ssl_request) {
		s->dead = true;
		return;
	}
	uint32_t caps = l.caps;
	if (s->server_caps)
		caps &= s->server_caps;
	s->deprecate_eof = (caps & MYSQL_CLIENT_DEPRECATE_EOF) != 0;
	s->query_attrs = (caps & MYSQL_CLIENT_QUERY_ATTRIBUTES) != 0;
	s->meta_first = (caps & MYSQL_CLIENT_OPTIONAL_RESULTSET_METADATA) != 0;
	set_namespace(s, l.database.p, l.database.len);
	s->phase = PH_AUTH;
}

/* "USE db" switches the namespace once it succeeds. */
static void note_use(struct my_op *op, struct db_slice sql)
{
	const char *p = sql.p, *end = sql.p + sql.len;
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\n'))
		p++;
	if (end - p < 5 || strncasecmp(p, "use", 3) || (p[3] != ' ' && p[3] != '\t'))
		return;
	p += 4;
	while (p < end && (*p == ' ' || *p == '\t'))
		p++;
	bool quoted = p < end && *p == '`';
	p += quoted;
	const char *e = p;
	while (e < end && *e != '`' && *e != ';' && *e != ' ' && *e != '\n' && *e != '\r')
		e++;
	if (e > p && (size_t)(e - p) < MY_NAME_MAX) {
		memcpy(op->use_db, p, (size_t)(e - p));
		op->use_db_len = (uint8_t)(e - p);
	}
}

static bool on_client(void *ctx, const struct db_msg *m, const struct chunk *ch)
{
	struct my_session *s = ctx;
	(void)ch;
	bool continued = s->fe_continued;
	s->fe_continued = m->len == MYSQL_MAX_PACKET;
	if (continued)
		return true; /* the rest of a long packet */
	if (s->phase == PH_LOGIN) {
		on_login(s, m);
		return !s->dead;
	}
	/* During authentication and LOCAL INFILE the client sends packets that
	 * continue a sequence; a command always starts one. */
	if (s->phase != PH_COMMAND || m->hdr[3] != 0 || !m->kept)
		return true;
	const struct rastro_config *cfg = conn__config(s->conn);
	uint8_t cmd = (uint8_t)m->body[0];
	const char *p = m->body + 1;
	size_t n = m->kept - 1;
	struct my_op *op;
	struct db_slice sql;
	switch (cmd) {
	case MYSQL_COM_QUERY:
		if (!mysql__query_text(p, n, s->query_attrs, &sql))
			sql = (struct db_slice){0};
		op = op_push(s, cmd, true);
		if (!op)
			break;
		op->report = true;
		note_use(op, sql);
		if (op->rec) {
			db__record_start(op->rec, s->mariadb ? DB_MARIADB : DB_MYSQL, m->start);
			db__record_sql(op->rec, sql.p, sql.len, SQL_DIALECT_MYSQL, cfg);
			conn__start(s->conn, op->rec);
		}
		break;
	case MYSQL_COM_STMT_PREPARE:
		op = op_push(s, cmd, true);
		if (op && op->rec) {
			db__record_start(op->rec, s->mariadb ? DB_MARIADB : DB_MYSQL, m->start);
			db__record_sql(op->rec, p, n, SQL_DIALECT_MYSQL, cfg);
		}
		break;
	case MYSQL_COM_STMT_EXECUTE:
	case MYSQL_COM_STMT_BULK_EXECUTE:
		op = op_push(s, cmd, true);
		if (!op)
			break;
		op->report = true;
		if (op->rec) {
			db__record_start(op->rec, s->mariadb ? DB_MARIADB : DB_MYSQL, m->start);
			struct db_stmt *st =
				n >= 4 ? db_stmts__get(&s->stmts, NULL, 0, db__le32(p)) : NULL;
			if (st)
				db__record_stmt(op->rec, st);
			conn__start(s->conn, op->rec);
		}
		break;
	case MYSQL_COM_STMT_CLOSE:
		if (n >= 4)
			db_stmts__remove(&s->stmts, NULL, 0, db__le32(p));
		break;
	case MYSQL_COM_STMT_SEND_LONG_DATA:
	case MYSQL_COM_QUIT:
		break; /* no reply */
	case MYSQL_COM_INIT_DB:
		op = op_push(s, cmd, false);
		if (op && n && n < MY_NAME_MAX) {
			memcpy(op->use_db, p, n);
			op->use_db_len = (uint8_t)n;
		}
		break;
	case MYSQL_COM_CHANGE_USER:
		op_push(s, cmd, false);
		s->phase = PH_AUTH; /* an authentication exchange follows */
		break;
	case MYSQL_COM_STMT_FETCH:
		op = op_push(s, cmd, false);
		if (op)
			op->state = RS_ROWS;
		break;
	default:
		/* Ping, statistics, field list, reset, set option ...: one reply each. */
		op_push(s, cmd, false);
		break;
	}
	return true;
}

static void on_err(struct my_session *s, struct my_op *op, const struct db_msg *m)
{
	struct mysql_error e;
	op->failed = true;
	if (!op->rec)
		return;
	struct request *r = op->rec;
	if (!mysql__parse_err(m->body, m->kept, &e)) {
		r->error_type = request__store(r, "_OTHER", 6);
		return;
	}
	char code[8], msg[300];
	int n = snprintf(code, sizeof(code), "%u", e.code);
	r->db_status = request__store(r, code, (size_t)n);
	/* The message may quote values: kept only when literals are. */
	if (!conn__config(s->conn)->keep_db_literals)
		return;
	n = snprintf(msg, sizeof(msg), "%s%s%.*s", e.sqlstate, e.sqlstate[0] ? " " : "",
		     (int)(e.message.len < 255 ? e.message.len : 255), e.message.p);
	if (n > 0)
		r->error_message = request__store(r, msg, (size_t)n);
}

/* A result set ended with a packet whose status is `status`. */
static void result_end(struct my_session *s, struct my_op *op, uint16_t status, uint64_t ts)
{
	if (status & MYSQL_SERVER_MORE_RESULTS)
		op->state = RS_FIRST;
	else
		op_done(s, ts);
}

static uint16_t terminator_status(const struct db_msg *m)
{
	uint16_t status = 0;
	if (!mysql__is_eof(m->body, m->len == m->kept ? m->kept : 0, &status))
		mysql__parse_ok(m->body, m->kept, &status);
	return status;
}

static void prepare_columns(struct my_session *s, struct my_op *op, uint64_t ts)
{
	if (op->columns) {
		op->state = RS_PREP_COLS;
		op->left = op->columns;
	} else {
		op_done(s, ts);
	}
}

static void prepare_ok(struct my_session *s, struct my_op *op, const struct db_msg *m,
		       uint64_t ts)
{
	uint32_t id;
	uint16_t columns, params;
	if (!mysql__parse_prepare_ok(m->body, m->kept, &id, &columns, &params)) {
		op_done(s, ts);
		return;
	}
	struct request *r = op->rec;
	if (r) {
		struct sql_summary sum = {0};
		snprintf(sum.operation, sizeof(sum.operation), "%s",
			 request__str(r, r->db_operation));
		snprintf(sum.collection, sizeof(sum.collection), "%s",
			 request__str(r, r->db_collection));
		if (!db_stmts__put_text(&s->stmts, NULL, 0, id, request__str(r, r->db_query),
					r->db_query.len, &sum))
			conn__count(s->conn, CONN_LOST_NO_MEMORY, 1);
	}
	op->columns = columns;
	if (params) {
		op->state = RS_PREP_PARAMS;
		op->left = params;
	} else {
		prepare_columns(s, op, ts);
	}
}

enum step { STEP_DONE, STEP_AGAIN };

/* One packet of the head operation's reply. STEP_AGAIN: the packet belongs
 * to the next operation's reply. */
static enum step reply_step(struct my_session *s, struct my_op *op, const struct db_msg *m,
			    uint64_t ts)
{
	int first = m->kept ? (uint8_t)m->body[0] : -1;
	bool eof5 = first == 0xfe && m->len == 5;
	uint16_t status = 0;
	switch (op->state) {
	case RS_FIRST:
		if (op->cmd == MYSQL_COM_STATISTICS) {
			op_done(s, ts); /* a bare string */
		} else if (first == 0xff) {
			on_err(s, op, m);
			op_done(s, ts);
		} else if (first == 0x00 && op->cmd == MYSQL_COM_STMT_PREPARE) {
			prepare_ok(s, op, m, ts);
		} else if (first == 0x00) {
			mysql__parse_ok(m->body, m->kept, &status);
			result_end(s, op, status, ts);
		} else if (first == 0xfe && m->len < 9) {
			op_done(s, ts); /* EOF: COM_SET_OPTION, an empty COM_FIELD_LIST */
		} else if (first == 0xfb) {
			/* LOCAL INFILE: the client sends the file, then OK or ERR follows. */
		} else if (op->cmd == MYSQL_COM_FIELD_LIST) {
			op->state = RS_ROWS; /* definitions up to an EOF */
		} else {
			uint64_t n = 0;
			size_t used;
			bool no_meta;
			if (s->meta_first) {
				/* MySQL's optional metadata: a flag, then the count. */
				used = m->kept > 1 ? mysql__lenenc(m->body + 1, m->kept - 1, &n) : 0;
				no_meta = m->body[0] == 0;
			} else {
				/* MariaDB's cached metadata: a byte after the count says
				 * whether definitions follow. */
				used = mysql__lenenc(m->body, m->kept, &n);
				no_meta = used && m->len > used && m->kept > used &&
					  m->body[used] == 0;
			}
			if (!used) {
				op_done(s, ts);
				return STEP_DONE;
			}
			op->left = no_meta ? 0 : n;
			op->state = op->left ? RS_COLDEFS : RS_AFTER_DEFS;
		}
		return STEP_DONE;
	case RS_COLDEFS:
		if (first == 0xff) {
			on_err(s, op, m);
			op_done(s, ts);
		} else if (--op->left == 0) {
			op->state = RS_AFTER_DEFS;
		}
		return STEP_DONE;
	case RS_AFTER_DEFS:
		if (eof5) {
			s->deprecate_eof = 0;
			mysql__is_eof(m->body, m->kept, &status);
			if (status & MYSQL_SERVER_CURSOR_EXISTS)
				op_done(s, ts); /* rows come with COM_STMT_FETCH */
			else
				op->state = RS_ROWS;
		} else if (mysql__is_terminator(m->body, m->kept, m->len)) {
			s->deprecate_eof = 1;
			result_end(s, op, terminator_status(m), ts);
		} else if (first == 0xff) {
			on_err(s, op, m);
			op_done(s, ts);
		} else {
			s->deprecate_eof = 1; /* a row right after the definitions */
			op->state = RS_ROWS;
		}
		return STEP_DONE;
	case RS_ROWS:
		if (mysql__is_terminator(m->body, m->kept, m->len)) {
			result_end(s, op, terminator_status(m), ts);
		} else if (first == 0xff) {
			on_err(s, op, m); /* the query failed while sending rows */
			op_done(s, ts);
		}
		return STEP_DONE;
	case RS_PREP_PARAMS:
		if (--op->left == 0) {
			if (s->deprecate_eof == 1)
				prepare_columns(s, op, ts);
			else
				op->state = RS_PREP_EOF1;
		}
		return STEP_DONE;
	case RS_PREP_EOF1:
		if (eof5) {
			s->deprecate_eof = 0;
			prepare_columns(s, op, ts);
			return STEP_DONE;
		}
		s->deprecate_eof = 1;
		if (op->columns) {
			prepare_columns(s, op, ts);
			return reply_step(s, op, m, ts);
		}
		op_done(s, ts);
		return STEP_AGAIN;
	case RS_PREP_COLS:
		if (--op->left == 0) {
			if (s->deprecate_eof == 0) {
				op->state = RS_PREP_EOF2;
			} else {
				s->swallow_eof = s->deprecate_eof < 0;
				op_done(s, ts);
			}
		}
		return STEP_DONE;
	case RS_PREP_EOF2:
		op_done(s, ts);
		return eof5 ? STEP_DONE : STEP_AGAIN;
	}
	return STEP_DONE;
}

static bool on_server(void *ctx, const struct db_msg *m, const struct chunk *ch)
{
	struct my_session *s = ctx;
	bool continued = s->be_continued;
	s->be_continued = m->len == MYSQL_MAX_PACKET;
	if (continued)
		return true;
	int first = m->kept ? (uint8_t)m->body[0] : -1;
	switch (s->phase) {
	case PH_GREETING: {
		struct mysql_greeting g;
		if (mysql__parse_greeting(m->body, m->kept, &g)) {
			s->mariadb = g.mariadb;
			s->server_caps = g.caps;
		}
		s->phase = PH_LOGIN;
		return true;
	}
	case PH_LOGIN:
		return true;
	case PH_AUTH:
		/* Auth switch (0xFE), more data (0x01) ... until OK or ERR. */
		if (first == 0x00 || first == 0xff) {
			struct my_op *op = db_queue__head(&s->ops);
			if (op && op->cmd == MYSQL_COM_CHANGE_USER)
				op_drop(s);
			s->phase = PH_COMMAND;
		}
		return true;
	case PH_COMMAND:
		break;
	}
	struct my_op *op = db_queue__head(&s->ops);
	bool swallow = s->swallow_eof;
	s->swallow_eof = false;
	if (swallow && first == 0xfe && m->len == 5 && (!op || op->state == RS_FIRST)) {
		s->deprecate_eof = 0; /* that EOF was the previous reply's */
		return true;
	}
	while (op && reply_step(s, op, m, ch->ts) == STEP_AGAIN)
		op = db_queue__head(&s->ops);
	return true;
}

static uint32_t client_keep(void *ctx, const uint8_t *hdr)
{
	struct my_session *s = ctx;
	(void)hdr;
	if (s->phase == PH_LOGIN)
		return 1024;
	return s->phase == PH_COMMAND && !s->fe_continued ? MY_KEEP_SQL + 8 : 0;
}

static uint32_t server_keep(void *ctx, const uint8_t *hdr)
{
	struct my_session *s = ctx;
	(void)hdr;
	if (s->phase != PH_COMMAND)
		return 1024;
	struct my_op *op = db_queue__head(&s->ops);
	/* Rows and definitions: the header byte and a terminator's status are enough. */
	return op && op->state != RS_FIRST ? 32 : 1024;
}

static void finish_lost_reply(struct my_session *s, uint64_t ts)
{
	if (ts && s->ops.count)
		op_done(s, ts);
	ops_abandon(s, CONN_PARSE_ERRORS);
	s->be_continued = false;
	s->swallow_eof = false;
}

static void my_data(void *state, struct conn *c, const struct chunk *ch)
{
	struct my_session *s = state;
	(void)c;
	if (s->dead)
		return;
	bool fe = ch->dir == RASTRO_DIR_EGRESS;
	bool turn = s->last_dir >= 0 && s->last_dir != ch->dir;
	s->last_dir = ch->dir;

	if (fe && turn && s->be_lost) {
		finish_lost_reply(s, s->be_last_ts); /* one command at a time: its reply is over */
		/* No reply byte of the next command is seen yet: a close now ends it
		 * without a response, not at the old reply's time (before it began). */
		s->be_last_ts = 0;
	}
	if (ch->gap) {
		ops_abandon(s, CONN_LOST_EVENTS);
		if (fe)
			s->fe_lost = true;
		else
			s->be_lost = true;
		s->be_last_ts = 0;
	}
	if (fe && s->fe_lost) {
		if ((!turn && !ch->gap) || ch->captured < 5 || ch->data[3] != 0)
			return;
		ops_abandon(s, CONN_PARSE_ERRORS);
		db_framer__reset(&s->fe);
		s->fe_lost = s->fe_continued = false;
		s->phase = PH_COMMAND;
		s->be_lost = true;
		s->be_last_ts = 0;
	}
	if (!fe && s->be_lost) {
		if (turn && !ch->gap && !s->fe_lost) {
			db_framer__reset(&s->be);
			s->be_lost = s->be_continued = false;
		} else {
			s->be_last_ts = ch->ts;
			if (ch->captured == ch->bytes &&
			    mysql__ends_with_terminator(ch->data, ch->captured)) {
				finish_lost_reply(s, ch->ts);
				db_framer__reset(&s->be);
				s->be_lost = false;
			}
			return;
		}
	}

	struct db_framer *f = fe ? &s->fe : &s->be;
	db_msg_fn fn = fe ? on_client : on_server;
	bool ok = db_framer__feed(f, ch, ch->data, ch->captured, fe ? client_keep : server_keep, fn,
				  s);
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
		if (ch->captured == ch->bytes &&
		    mysql__ends_with_terminator(ch->data, ch->captured)) {
			finish_lost_reply(s, ch->ts);
			db_framer__reset(&s->be);
			s->be_lost = false;
		}
	}
}

static void my_close(void *state, struct conn *c, uint64_t ts)
{
	struct my_session *s = state;
	(void)c;
	if (s->dead)
		return;
	if (s->be_lost && s->be_last_ts)
		finish_lost_reply(s, s->be_last_ts);
	struct my_op *op;
	while ((op = db_queue__head(&s->ops))) {
		if (op->rec && op->report) {
			if (!op->failed)
				op->rec->error_type = request__store(op->rec, "no_response", 11);
			op->failed = true;
			op_done(s, ts);
		} else {
			op_drop(s);
		}
	}
}

static void my_free(void *state)
{
	struct my_session *s = state;
	while (s->ops.count)
		op_drop(s);
	db_queue__free(&s->ops);
	db_stmts__free(&s->stmts);
	db_framer__free(&s->fe);
	db_framer__free(&s->be);
	free(s);
}

const struct proto_ops mysql_proto = {
	.name = "mysql",
	.detect = my_detect,
	.open = my_open,
	.data = my_data,
	.close = my_close,
	.free = my_free,
};
