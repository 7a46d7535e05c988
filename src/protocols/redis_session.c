/*
 * Redis client connections (RESP2 and RESP3): one record per command. A
 * client may pipeline many commands before reading; the server answers in
 * order, so commands queue and each top-level reply answers the oldest.
 * RESP3 push messages and attributes are not replies. An error reply (-ERR,
 * -WRONGTYPE, !bulk error) marks the command failed with its prefix.
 *
 * db.query.text is the command with every argument replaced by "?" (values
 * are never shown; with attributes.keep_db_literals the first argument, the
 * key, is kept). SELECT n changes db.namespace once it succeeds; a
 * connection rastro saw open starts at database 0.
 *
 * After SUBSCRIBE / PSUBSCRIBE / SSUBSCRIBE or MONITOR the server pushes
 * messages nobody asked for: the command is reported and the connection is
 * ignored from then on.
 */
#include <stdlib.h>
#include <string.h>

#include "protocols/db.h"
#include "protocols/proto.h"
#include "protocols/redis.h"

#define CMD_NAME_MAX 24
#define DB_INDEX_MAX 8

enum cmd_flags {
	CMD_SUBSCRIBE = 1 << 0, /* the connection leaves request/reply mode after it */
	CMD_SELECT = 1 << 1,
};

struct redis_cmd {
	struct request *rec; /* NULL: a placeholder beyond the limit, keeping its place */
	uint8_t flags;
	uint8_t db_len;
	char db[DB_INDEX_MAX]; /* SELECT's argument */
};

struct redis_session {
	struct conn *conn;
	struct redis_reader req, rep;
	struct db_queue cmds; /* struct redis_cmd, oldest first */
	struct db_start req_start;
	uint32_t reports; /* queued commands with a record */
	bool dead, req_lost, rep_lost;
	int last_dir;
	uint64_t rep_last_ts;
	uint8_t ns_len;
	char ns[DB_INDEX_MAX];
};

static enum proto_verdict redis_detect(const struct conn *c, const struct chunk *ch)
{
	if (conn__role_hint(c) == RASTRO_ROLE_SERVER || ch->dir != RASTRO_DIR_EGRESS)
		return PROTO_NO;
	int v = redis__looks_like_command(ch->data, ch->captured, ch->bytes);
	if (v > 0 && conn__role_hint(c) == RASTRO_ROLE_UNKNOWN) {
		/* "*<n>\r\n$<m>\r\n" then the name: a reply array reads alike. */
		const char *name = memchr(ch->data + 1, '$', ch->captured - 1);
		const char *nl =
		    name ? memchr(name, '\n', ch->captured - (size_t)(name - ch->data)) : NULL;
		const char *end =
		    nl ? memchr(nl, '\r', ch->captured - (size_t)(nl - ch->data)) : NULL;
		if (!end || !redis__known_command(nl + 1, (size_t)(end - nl - 1)))
			return PROTO_NO;
	}
	return v > 0 ? PROTO_YES : v < 0 ? PROTO_MAYBE : PROTO_NO;
}

static void *redis_open(struct conn *c, const struct chunk *first)
{
	(void)first;
	struct redis_session *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->conn = c;
	s->last_dir = -1;
	redis__reader_init(&s->req);
	redis__reader_init(&s->rep);
	db_queue__init(&s->cmds, sizeof(struct redis_cmd));
	/* A connection seen from its connect() starts at database 0. */
	if (conn__role_hint(c) == RASTRO_ROLE_CLIENT) {
		s->ns[0] = '0';
		s->ns_len = 1;
	}
	return s;
}

static void cmd_pop(struct redis_session *s)
{
	struct redis_cmd *cmd = db_queue__head(&s->cmds);
	if (cmd && cmd->rec) {
		s->reports--;
		db__record_free(cmd->rec);
	}
	db_queue__pop(&s->cmds);
}

static void abandon(struct redis_session *s, enum conn_counter why)
{
	uint64_t n = s->reports;
	while (s->cmds.count)
		cmd_pop(s);
	if (n)
		conn__count(s->conn, why, n);
}

static bool is_name(const char *name, const char *cmd, size_t len)
{
	return strlen(name) == len && !memcmp(cmd, name, len);
}

/* db.query.text: the command, its arguments as "?" (with keep, the first
 * argument, the key, as it is). */
static size_t query_text(const struct redis_reader *r, const char *name, size_t name_len,
			 bool keep, char *out, size_t cap)
{
	size_t o = name_len;
	memcpy(out, name, name_len);
	for (int64_t i = 1; i < r->elements && o + 3 < cap; i++) {
		out[o++] = ' ';
		size_t kl = r->arg_len[1];
		if (i == 1 && keep && kl && !r->arg_cut[1] && db__is_text(r->arg[1], kl) &&
		    o + kl + 1 < cap) {
			memcpy(out + o, r->arg[1], kl);
			o += kl;
		} else {
			out[o++] = '?';
		}
	}
	out[o] = '\0';
	return o;
}

/* A complete command array was read. */
static void on_command(struct redis_session *s)
{
	const struct redis_reader *r = &s->req;
	if (r->top != '*' || r->elements < 1 || !r->bulk_elements || !r->arg_len[0]) {
		conn__count(s->conn, CONN_PARSE_ERRORS, 1);
		return;
	}
	const struct rastro_config *cfg = conn__config(s->conn);
	struct redis_cmd *cmd = db_queue__push(&s->cmds, 65536);
	if (!cmd) {
		/* Far beyond any sane pipeline: pairing cannot be kept. */
		abandon(s, CONN_LOST_PIPELINE_OVERFLOW);
		s->rep_lost = true;
		return;
	}
	char name[CMD_NAME_MAX];
	size_t n = r->arg_len[0] < CMD_NAME_MAX ? r->arg_len[0] : CMD_NAME_MAX;
	for (size_t i = 0; i < n; i++) {
		char ch = r->arg[0][i];
		name[i] = ch >= 'a' && ch <= 'z' ? (char)(ch - 32) : ch;
	}
	size_t kl = r->elements > 1 ? r->arg_len[1] : 0;
	if (is_name("SELECT", name, n) && kl && kl < DB_INDEX_MAX && !r->arg_cut[1]) {
		cmd->flags |= CMD_SELECT;
		memcpy(cmd->db, r->arg[1], kl);
		cmd->db_len = (uint8_t)kl;
	}
	if (is_name("SUBSCRIBE", name, n) || is_name("PSUBSCRIBE", name, n) ||
	    is_name("SSUBSCRIBE", name, n) || is_name("MONITOR", name, n))
		cmd->flags |= CMD_SUBSCRIBE;
	if (s->reports >= cfg->max_pending_requests) {
		conn__count(s->conn, CONN_LOST_PIPELINE_OVERFLOW, 1); /* keeps its place */
		return;
	}
	cmd->rec = db__record_new();
	if (!cmd->rec) {
		conn__count(s->conn, CONN_LOST_NO_MEMORY, 1);
		return;
	}
	s->reports++;
	char text[SQL_TEXT_MAX];
	struct request *rec = cmd->rec;
	db__record_start(rec, DB_REDIS, s->req_start);
	rec->db_operation = request__store(rec, name, n);
	size_t tn = query_text(r, name, n, cfg->keep_db_literals, text, sizeof(text));
	rec->db_query = request__store(rec, text, tn);
	conn__start(s->conn, rec);
}

/* The head command's record ends. reply: its complete reply; NULL when it
 * was not (all) seen: answered says whether one came at all. */
static void emit(struct redis_session *s, struct redis_cmd *cmd, uint64_t end,
		 const struct redis_reader *reply, bool answered)
{
	struct request *r = cmd->rec;
	const struct rastro_config *cfg = conn__config(s->conn);
	if (!r)
		return;
	r->end_ns = end;
	if (s->ns_len)
		r->db_namespace = request__store(r, s->ns, s->ns_len);
	if (reply && (reply->top == '-' || reply->top == '!')) {
		/* The error's prefix: ERR, WRONGTYPE, NOSCRIPT ... */
		size_t p = 0;
		while (p < reply->err_len && p < 32 && reply->err[p] != ' ')
			p++;
		if (p)
			r->db_status = request__store(r, reply->err, p);
		else
			r->error_type = request__store(r, "_OTHER", 6);
		if (cfg->keep_db_literals && reply->err_len)
			r->error_message = request__store(r, reply->err, reply->err_len);
	} else if (!reply && !answered) {
		r->error_type = request__store(r, "no_response", 11);
	}
	conn__emit(s->conn, r);
}

/* A complete top-level reply was read at ts. */
static void on_reply(struct redis_session *s, uint64_t ts)
{
	struct redis_cmd *cmd = db_queue__head(&s->cmds);
	char top = s->rep.top;
	if (!cmd)
		return; /* a reply to something sent before rastro looked */
	if (top == '|' || (top == '>' && !(cmd->flags & CMD_SUBSCRIBE)))
		return; /* RESP3 attribute or out-of-band push: not a reply */
	bool failed = top == '-' || top == '!';
	if ((cmd->flags & CMD_SELECT) && !failed) {
		memcpy(s->ns, cmd->db, cmd->db_len);
		s->ns_len = cmd->db_len;
	}
	emit(s, cmd, ts, &s->rep, true);
	bool subscribe = (cmd->flags & CMD_SUBSCRIBE) && !failed;
	cmd_pop(s);
	if (subscribe) {
		abandon(s, CONN_PARSE_ERRORS);
		s->dead = true;
	}
}

/* Feeds one direction; false when its framing was lost. */
static bool feed(struct redis_session *s, bool req, const struct chunk *ch)
{
	struct redis_reader *r = req ? &s->req : &s->rep;
	const char *p = ch->data;
	size_t left = ch->captured;
	bool done;
	while (left && !s->dead) {
		if (req && redis__between(r))
			s->req_start = db__start_at(ch, p);
		int64_t n = redis__feed(r, p, left, &done);
		if (n < 0)
			return false;
		p += n;
		left -= (size_t)n;
		if (done) {
			if (req)
				on_command(s);
			else
				on_reply(s, ch->ts);
		}
	}
	if (ch->bytes > ch->captured && !s->dead) {
		if (!redis__skip(r, ch->bytes - ch->captured, &done))
			return false;
		if (done) {
			if (req)
				on_command(s);
			else
				on_reply(s, ch->ts);
		}
	}
	return true;
}

static void redis_data(void *state, struct conn *c, const struct chunk *ch)
{
	struct redis_session *s = state;
	(void)c;
	if (s->dead)
		return;
	bool req = ch->dir == RASTRO_DIR_EGRESS;
	bool turn = s->last_dir >= 0 && s->last_dir != ch->dir;
	s->last_dir = ch->dir;

	if (req && turn && s->rep_lost) {
		/* The reply whose framing was lost ended before the client spoke;
		 * what was pipelined behind it cannot be placed. */
		struct redis_cmd *cmd = db_queue__head(&s->cmds);
		if (cmd && s->rep_last_ts) {
			emit(s, cmd, s->rep_last_ts, NULL, true);
			cmd_pop(s);
		}
		abandon(s, CONN_PARSE_ERRORS);
	}
	if (ch->gap) {
		abandon(s, CONN_LOST_EVENTS);
		if (req)
			s->req_lost = true;
		else
			s->rep_lost = true;
		s->rep_last_ts = 0;
	}
	if (req && s->req_lost) {
		if ((!turn && !ch->gap) || !ch->captured || ch->data[0] != '*')
			return;
		abandon(s, CONN_PARSE_ERRORS);
		redis__reader_init(&s->req);
		s->req_lost = false;
		s->rep_lost = true; /* replies resume after this turn */
		s->rep_last_ts = 0;
	}
	if (!req && s->rep_lost) {
		if (!(turn && !ch->gap && !s->req_lost)) {
			s->rep_last_ts = ch->ts;
			return;
		}
		redis__reader_init(&s->rep);
		s->rep_lost = false;
	}
	if (!feed(s, req, ch) && !s->dead) {
		if (req)
			s->req_lost = true;
		else
			s->rep_lost = true;
	}
	if (!req)
		s->rep_last_ts = ch->ts;
}

static void redis_close(void *state, struct conn *c, uint64_t ts)
{
	struct redis_session *s = state;
	(void)c;
	if (s->dead)
		return;
	struct redis_cmd *cmd = db_queue__head(&s->cmds);
	if (cmd && s->rep_lost && s->rep_last_ts) {
		emit(s, cmd, s->rep_last_ts, NULL, true);
		cmd_pop(s);
		abandon(s, CONN_PARSE_ERRORS);
	}
	while ((cmd = db_queue__head(&s->cmds))) {
		emit(s, cmd, ts, NULL, false);
		cmd_pop(s);
	}
}

static void redis_free(void *state)
{
	struct redis_session *s = state;
	while (s->cmds.count)
		cmd_pop(s);
	db_queue__free(&s->cmds);
	free(s);
}

const struct proto_ops redis_proto = {
	.name = "redis",
	.detect = redis_detect,
	.open = redis_open,
	.data = redis_data,
	.close = redis_close,
	.free = redis_free,
};
