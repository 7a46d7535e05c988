/* PostgreSQL protocol 3: parsers, and the session through the connection
 * tracker with every input split at every byte boundary. */
#include <arpa/inet.h>
#include <stdarg.h>

#include "db_harness.h"
#include "protocols/postgres.h"

/* ---- building messages */

static void pg_msg(struct buf *b, char type, const struct buf *body)
{
	uint32_t len = htonl((uint32_t)body->len + 4);
	if (type)
		buf_u8(b, (uint8_t)type);
	buf_put(b, &len, 4);
	buf_put(b, body->p, body->len);
}

static void cstr(struct buf *b, const char *s)
{
	buf_put(b, s, strlen(s) + 1);
}

static void be32(struct buf *b, uint32_t v)
{
	v = htonl(v);
	buf_put(b, &v, 4);
}

static void be16(struct buf *b, uint16_t v)
{
	v = htons(v);
	buf_put(b, &v, 2);
}

/* Appends a message whose body is made of C strings (NULL ends the list). */
static void msg_strs(struct buf *b, char type, const char *first, ...)
{
	struct buf body = {0};
	va_list ap;
	va_start(ap, first);
	for (const char *s = first; s; s = va_arg(ap, const char *))
		cstr(&body, s);
	va_end(ap);
	pg_msg(b, type, &body);
	buf_free(&body);
}

static void msg_empty(struct buf *b, char type)
{
	struct buf body = {0};
	pg_msg(b, type, &body);
}

static void m_ready(struct buf *b)
{
	struct buf body = {0};
	buf_u8(&body, 'I');
	pg_msg(b, 'Z', &body);
	buf_free(&body);
}

static void m_ssl_request(struct buf *b)
{
	be32(b, 8);
	be32(b, PG_SSL_REQUEST_CODE);
}

static void m_startup(struct buf *b, const char *user, const char *db)
{
	struct buf body = {0};
	be32(&body, 0x00030000);
	cstr(&body, "user");
	cstr(&body, user);
	if (db) {
		cstr(&body, "database");
		cstr(&body, db);
	}
	buf_u8(&body, 0);
	pg_msg(b, 0, &body);
	buf_free(&body);
}

static void m_auth_ok_and_ready(struct buf *b)
{
	struct buf body = {0};
	be32(&body, 0);
	pg_msg(b, 'R', &body);
	buf_free(&body);
	msg_strs(b, 'S', "server_version", "15.8", NULL);
	body = (struct buf){0};
	be32(&body, 1234);
	be32(&body, 5678);
	pg_msg(b, 'K', &body);
	buf_free(&body);
	m_ready(b);
}

static void m_parse(struct buf *b, const char *name, const char *sql)
{
	struct buf body = {0};
	cstr(&body, name);
	cstr(&body, sql);
	be16(&body, 1);
	be32(&body, 23); /* int4 */
	pg_msg(b, 'P', &body);
	buf_free(&body);
}

static void m_bind(struct buf *b, const char *portal, const char *stmt, const char *param)
{
	struct buf body = {0};
	cstr(&body, portal);
	cstr(&body, stmt);
	be16(&body, 0);
	be16(&body, 1);
	be32(&body, (uint32_t)strlen(param));
	buf_str(&body, param);
	be16(&body, 0);
	pg_msg(b, 'B', &body);
	buf_free(&body);
}

static void m_execute(struct buf *b, const char *portal)
{
	struct buf body = {0};
	cstr(&body, portal);
	be32(&body, 0);
	pg_msg(b, 'E', &body);
	buf_free(&body);
}

static void m_describe_portal(struct buf *b)
{
	struct buf body = {0};
	buf_u8(&body, 'P');
	cstr(&body, "");
	pg_msg(b, 'D', &body);
	buf_free(&body);
}

static void m_close_stmt(struct buf *b, const char *name)
{
	struct buf body = {0};
	buf_u8(&body, 'S');
	cstr(&body, name);
	pg_msg(b, 'C', &body);
	buf_free(&body);
}

/* RowDescription, n DataRows of `width` bytes, CommandComplete. */
static void m_rows(struct buf *b, int n, size_t width)
{
	struct buf body = {0};
	be16(&body, 1);
	cstr(&body, "name");
	be32(&body, 0);
	be16(&body, 0);
	be32(&body, 25);
	be16(&body, (uint16_t)-1);
	be32(&body, (uint32_t)-1);
	be16(&body, 0);
	pg_msg(b, 'T', &body);
	buf_free(&body);
	char *v = malloc(width);
	memset(v, 'v', width);
	for (int i = 0; i < n; i++) {
		body = (struct buf){0};
		be16(&body, 1);
		be32(&body, (uint32_t)width);
		buf_put(&body, v, width);
		pg_msg(b, 'D', &body);
		buf_free(&body);
	}
	free(v);
	char tag[32];
	snprintf(tag, sizeof(tag), "SELECT %d", n);
	msg_strs(b, 'C', tag, NULL);
}

static void m_error(struct buf *b, const char *code, const char *message)
{
	struct buf body = {0};
	buf_u8(&body, 'S');
	cstr(&body, "ERROR");
	buf_u8(&body, 'V');
	cstr(&body, "ERROR");
	buf_u8(&body, 'C');
	cstr(&body, code);
	buf_u8(&body, 'M');
	cstr(&body, message);
	buf_u8(&body, 0);
	pg_msg(b, 'E', &body);
	buf_free(&body);
}

/* ---- pure parsers */

static void test_parsers(void)
{
	struct buf b = {0};
	m_ssl_request(&b);
	CHECK_INT(pg__untyped_kind(b.p, b.len, b.len), PG_UNTYPED_SSL);
	CHECK_INT(pg__untyped_kind(b.p, b.len, b.len + 1), PG_UNTYPED_NONE);
	buf_free(&b);
	m_startup(&b, "u", "d");
	CHECK_INT(pg__untyped_kind(b.p, b.len, b.len), PG_UNTYPED_STARTUP);
	struct db_slice user, db;
	CHECK(pg__parse_startup(b.p + 4, b.len - 4, &user, &db));
	CHECK_MEM(user.p, user.len, "u");
	CHECK_MEM(db.p, db.len, "d");
	buf_free(&b);

	msg_strs(&b, 'Q', "SELECT 1", NULL);
	CHECK(pg__looks_like_frontend(b.p, b.len, b.len));
	/* what follows was not copied: cannot be checked, the Query is enough */
	CHECK(pg__looks_like_frontend(b.p, b.len, b.len + 5));
	/* the message claims more bytes than the syscall moved */
	CHECK(!pg__looks_like_frontend(b.p, b.len - 1, b.len - 1));
	buf_free(&b);
	m_parse(&b, "s", "SELECT $1");
	m_bind(&b, "", "s", "7");
	m_execute(&b, "");
	msg_empty(&b, 'S');
	CHECK(pg__looks_like_frontend(b.p, b.len, b.len));
	buf_free(&b);
	m_bind(&b, "", "s", "7"); /* no Query or Parse: not enough to tell */
	m_execute(&b, "");
	msg_empty(&b, 'S');
	CHECK(!pg__looks_like_frontend(b.p, b.len, b.len));
	buf_free(&b);
	const char *http = "POST /x HTTP/1.1\r\n\r\n";
	CHECK(!pg__looks_like_frontend(http, strlen(http), strlen(http)));
	CHECK(!pg__looks_like_frontend("Q\0\0\0\x05\x01", 6, 6)); /* not text */

	m_error(&b, "42P01", "relation \"x\" does not exist");
	struct pg_error e;
	CHECK(pg__parse_error(b.p + 5, b.len - 5, &e));
	CHECK_MEM(e.code.p, e.code.len, "42P01");
	CHECK_MEM(e.severity.p, e.severity.len, "ERROR");
	CHECK(!pg__parse_error(b.p + 5, 8, &e)); /* cut before the code */
	buf_free(&b);

	m_ready(&b);
	CHECK(pg__ends_with_ready(b.p, b.len));
	CHECK(!pg__ends_with_ready(b.p, b.len - 1));
	buf_free(&b);
}

/* ---- sessions */

/* SSLRequest refused, startup, authentication, then a simple query whose
 * request and reply are each split at every byte. */
static void test_simple_query_every_split(void)
{
	struct buf hello = {0}, q = {0}, reply = {0}, auth = {0};
	m_ssl_request(&hello);
	m_startup(&auth, "postgres", "shop");
	msg_strs(&q, 'Q', "SELECT name FROM products WHERE id = 42 AND note = 'x'", NULL);
	m_rows(&reply, 2, 5);
	m_ready(&reply);
	struct buf server_auth = {0};
	m_auth_ok_and_ready(&server_auth);
	for (size_t k = 0; k <= q.len; k++) {
		for (size_t j = 0; j <= reply.len; j += 1 + (k % 3)) {
			struct conntrack *ct = new_ct();
			uint32_t seq[2] = {5000, 1000};
			send_all(ct, 1, OUT, 1, seq, hello.p, hello.len);
			send_all(ct, 1, IN, 2, seq, "N", 1);
			send_all(ct, 1, OUT, 3, seq, auth.p, auth.len);
			send_all(ct, 1, IN, 4, seq, server_auth.p, server_auth.len);
			send_split(ct, 1, OUT, 10, seq, q.p, q.len, k);
			CHECK_INT(nrecs, 0);
			send_split(ct, 1, IN, 20, seq, reply.p, reply.len, j);
			CHECK_INT(nrecs, 1);
			if (nrecs == 1) {
				CHECK_INT(recs[0].kind, REQ_DB_CLIENT);
				CHECK_INT(recs[0].system, DB_POSTGRESQL);
				CHECK_STR(recs[0].name, "SELECT products");
				CHECK_STR(recs[0].op, "SELECT");
				CHECK_STR(recs[0].coll, "products");
				CHECK_STR(recs[0].query,
					  "SELECT name FROM products WHERE id = ? AND note = ?");
				CHECK_STR(recs[0].ns, "shop");
				CHECK_STR(recs[0].err, "");
				CHECK_INT(recs[0].start, 10);
				CHECK_INT(recs[0].end, j && j < reply.len ? 21 : 20);
				CHECK_INT(recs[0].seq, 1000 + hello.len + auth.len);
				CHECK_INT(recs[0].tid, 43);
			}
			conntrack__free(ct);
		}
	}
	buf_free(&hello);
	buf_free(&q);
	buf_free(&reply);
	buf_free(&auth);
	buf_free(&server_auth);
}

/* A statement prepared once and executed in later requests shows the text
 * of its Parse; the unnamed statement too; a closed one has no text. */
static void test_extended_and_prepared_reuse(void)
{
	struct conntrack *ct = new_ct();
	uint32_t seq[2] = {1, 1};
	struct buf c = {0}, s = {0};
	m_startup(&c, "app", NULL);
	send_all(ct, 2, OUT, 1, seq, c.p, c.len);
	buf_free(&c);
	m_auth_ok_and_ready(&s);
	send_all(ct, 2, IN, 2, seq, s.p, s.len);
	buf_free(&s);

	m_parse(&c, "dbdpg_p1_1", "SELECT name, price FROM products WHERE id = $1");
	m_bind(&c, "", "dbdpg_p1_1", "2");
	m_describe_portal(&c);
	m_execute(&c, "");
	msg_empty(&c, 'S');
	send_all(ct, 2, OUT, 10, seq, c.p, c.len);
	buf_free(&c);
	msg_empty(&s, '1');
	msg_empty(&s, '2');
	m_rows(&s, 1, 3);
	m_ready(&s);
	send_all(ct, 2, IN, 20, seq, s.p, s.len);
	buf_free(&s);

	for (int i = 0; i < 3; i++) { /* later requests: Bind/Execute only */
		m_bind(&c, "", "dbdpg_p1_1", "3");
		m_execute(&c, "");
		msg_empty(&c, 'S');
		send_all(ct, 2, OUT, 30 + i * 10, seq, c.p, c.len);
		buf_free(&c);
		msg_empty(&s, '2');
		m_rows(&s, 1, 3);
		m_ready(&s);
		send_all(ct, 2, IN, 35 + i * 10, seq, s.p, s.len);
		buf_free(&s);
	}
	/* unnamed statement, sent in pieces: Parse/Bind, then Execute/Sync */
	m_parse(&c, "", "INSERT INTO orders (product_id, qty) VALUES ($1, 5)");
	m_bind(&c, "", "", "1");
	send_all(ct, 2, OUT, 70, seq, c.p, c.len);
	buf_free(&c);
	m_execute(&c, "");
	msg_empty(&c, 'S');
	send_all(ct, 2, OUT, 71, seq, c.p, c.len);
	buf_free(&c);
	msg_empty(&s, '1');
	msg_empty(&s, '2');
	msg_strs(&s, 'C', "INSERT 0 1", NULL);
	m_ready(&s);
	send_all(ct, 2, IN, 75, seq, s.p, s.len);
	buf_free(&s);
	/* closed, then executed anyway (the server would fail it) */
	m_close_stmt(&c, "dbdpg_p1_1");
	msg_empty(&c, 'S');
	send_all(ct, 2, OUT, 80, seq, c.p, c.len);
	buf_free(&c);
	msg_empty(&s, '3');
	m_ready(&s);
	send_all(ct, 2, IN, 81, seq, s.p, s.len);
	buf_free(&s);
	m_bind(&c, "", "dbdpg_p1_1", "3");
	m_execute(&c, "");
	msg_empty(&c, 'S');
	send_all(ct, 2, OUT, 90, seq, c.p, c.len);
	buf_free(&c);
	m_error(&s, "26000", "prepared statement does not exist");
	m_ready(&s);
	send_all(ct, 2, IN, 95, seq, s.p, s.len);
	buf_free(&s);

	CHECK_INT(nrecs, 6);
	for (int i = 0; i < 4; i++) {
		CHECK_STR(recs[i].query, "SELECT name, price FROM products WHERE id = $1");
		CHECK_STR(recs[i].name, "SELECT products");
		CHECK_STR(recs[i].ns, "app"); /* no database: the user's name */
	}
	CHECK_INT(recs[0].start, 10);
	CHECK_INT(recs[0].end, 20);
	CHECK_INT(recs[3].start, 50);
	CHECK_INT(recs[3].end, 55);
	CHECK_STR(recs[4].name, "INSERT orders");
	CHECK_STR(recs[4].query, "INSERT INTO orders (product_id, qty) VALUES ($1, ?)");
	CHECK_INT(recs[4].start, 70);
	CHECK_INT(recs[4].end, 75);
	CHECK_STR(recs[5].name, "postgresql");
	CHECK_STR(recs[5].query, "");
	CHECK_STR(recs[5].status, "26000");
	CHECK_STR(recs[5].err, "26000");
	conntrack__free(ct);
}

static void test_errors(void)
{
	struct conntrack *ct = new_ct();
	uint32_t seq[2] = {1, 1};
	struct buf c = {0}, s = {0};
	/* simple query: the error, then ReadyForQuery ends it */
	msg_strs(&c, 'Q', "SELECT * FROM missing", NULL);
	send_all(ct, 3, OUT, 10, seq, c.p, c.len);
	buf_free(&c);
	m_error(&s, "42P01", "relation \"missing\" does not exist");
	send_all(ct, 3, IN, 20, seq, s.p, s.len);
	buf_free(&s);
	CHECK_INT(nrecs, 0);
	m_ready(&s);
	send_all(ct, 3, IN, 21, seq, s.p, s.len);
	buf_free(&s);
	CHECK_INT(nrecs, 1);
	/* a batch of two Executes whose first fails: the second never ran */
	m_parse(&c, "", "SELEC 1");
	m_bind(&c, "", "", "1");
	m_execute(&c, "");
	m_parse(&c, "", "SELECT 2");
	m_bind(&c, "", "", "1");
	m_execute(&c, "");
	msg_empty(&c, 'S');
	send_all(ct, 3, OUT, 30, seq, c.p, c.len);
	buf_free(&c);
	m_error(&s, "42601", "syntax error at or near \"SELEC\"");
	m_ready(&s);
	send_all(ct, 3, IN, 40, seq, s.p, s.len);
	buf_free(&s);
	/* a prepare alone: reported only when it fails */
	m_parse(&c, "ok", "SELECT 1");
	m_describe_portal(&c);
	msg_empty(&c, 'S');
	send_all(ct, 3, OUT, 50, seq, c.p, c.len);
	buf_free(&c);
	msg_empty(&s, '1');
	msg_empty(&s, 'n');
	m_ready(&s);
	send_all(ct, 3, IN, 55, seq, s.p, s.len);
	buf_free(&s);
	m_parse(&c, "bad", "SELECT FROM WHERE");
	msg_empty(&c, 'S');
	send_all(ct, 3, OUT, 60, seq, c.p, c.len);
	buf_free(&c);
	m_error(&s, "42601", "syntax error");
	m_ready(&s);
	send_all(ct, 3, IN, 65, seq, s.p, s.len);
	buf_free(&s);

	CHECK_INT(nrecs, 3);
	CHECK_STR(recs[0].name, "SELECT missing");
	CHECK_STR(recs[0].status, "42P01");
	CHECK_STR(recs[0].err, "42P01");
	CHECK_STR(recs[0].msg, ""); /* messages may quote values: not kept by default */
	CHECK_INT(recs[0].end, 21);
	CHECK_STR(recs[1].query, "SELEC ?");
	CHECK_STR(recs[1].status, "42601");
	CHECK_INT(recs[1].start, 30);
	CHECK_INT(recs[1].end, 40);
	CHECK_STR(recs[2].query, "SELECT FROM WHERE");
	CHECK_STR(recs[2].status, "42601");
	CHECK_INT(recs[2].start, 60);

	/* a query never answered: the connection closed under it */
	msg_strs(&c, 'Q', "SELECT pg_sleep(100)", NULL);
	send_all(ct, 3, OUT, 70, seq, c.p, c.len);
	buf_free(&c);
	close_conn(ct, 3, 80);
	CHECK_INT(nrecs, 4);
	CHECK_STR(recs[3].err, "no_response");
	CHECK_INT(recs[3].end, 80);
	conntrack__free(ct);
}

static void test_ssl_accepted_is_ignored(void)
{
	struct conntrack *ct = new_ct();
	uint32_t seq[2] = {1, 1};
	struct buf c = {0};
	m_ssl_request(&c);
	send_all(ct, 4, OUT, 1, seq, c.p, c.len);
	send_all(ct, 4, IN, 2, seq, "S", 1);
	send_all(ct, 4, OUT, 3, seq, "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 11);
	send_all(ct, 4, IN, 4, seq, "\x16\x03\x03\x00\x7a\x02", 6);
	buf_free(&c);
	msg_strs(&c, 'Q', "SELECT 1", NULL); /* cannot happen under TLS; must not be read */
	send_all(ct, 4, OUT, 5, seq, c.p, c.len);
	send_all(ct, 4, IN, 6, seq, "Z\0\0\0\x05I", 6);
	buf_free(&c);
	close_conn(ct, 4, 7);
	CHECK_INT(nrecs, 0);
	conntrack__free(ct);
}

/* A connection open before rastro: no startup seen; found from a Query. */
static void test_connection_predating_rastro(void)
{
	struct conntrack *ct = new_ct();
	uint32_t seq[2] = {777, 999};
	struct buf c = {0}, s = {0};
	/* a reply to something sent before: not detected from it */
	m_rows(&s, 1, 4);
	m_ready(&s);
	event_role(ct, 5, IN, 1, seq, s.p, (uint32_t)s.len, (uint32_t)s.len, RASTRO_ROLE_UNKNOWN);
	/* Bind/Execute of a statement prepared before: too little to tell */
	m_bind(&c, "", "old", "1");
	m_execute(&c, "");
	msg_empty(&c, 'S');
	event_role(ct, 5, OUT, 2, seq, c.p, (uint32_t)c.len, (uint32_t)c.len, RASTRO_ROLE_UNKNOWN);
	event_role(ct, 5, IN, 3, seq, s.p, (uint32_t)s.len, (uint32_t)s.len, RASTRO_ROLE_UNKNOWN);
	buf_free(&c);
	msg_strs(&c, 'Q', "UPDATE products SET price = 13 WHERE id = 1", NULL);
	event_role(ct, 5, OUT, 10, seq, c.p, (uint32_t)c.len, (uint32_t)c.len, RASTRO_ROLE_UNKNOWN);
	buf_free(&c);
	buf_free(&s);
	msg_strs(&s, 'C', "UPDATE 1", NULL);
	m_ready(&s);
	event_role(ct, 5, IN, 20, seq, s.p, (uint32_t)s.len, (uint32_t)s.len, RASTRO_ROLE_UNKNOWN);
	buf_free(&s);
	/* later a Bind/Execute of that unknown statement is paired, without text */
	m_bind(&c, "", "old", "1");
	m_execute(&c, "");
	msg_empty(&c, 'S');
	event_role(ct, 5, OUT, 30, seq, c.p, (uint32_t)c.len, (uint32_t)c.len, RASTRO_ROLE_UNKNOWN);
	buf_free(&c);
	msg_empty(&s, '2');
	m_rows(&s, 1, 4);
	m_ready(&s);
	event_role(ct, 5, IN, 40, seq, s.p, (uint32_t)s.len, (uint32_t)s.len, RASTRO_ROLE_UNKNOWN);
	buf_free(&s);
	CHECK_INT(nrecs, 2);
	CHECK_STR(recs[0].name, "UPDATE products");
	CHECK_STR(recs[0].query, "UPDATE products SET price = ? WHERE id = ?");
	CHECK_STR(recs[0].ns, "");
	CHECK_INT(recs[0].start, 10);
	CHECK_INT(recs[0].end, 20);
	CHECK_STR(recs[1].name, "postgresql");
	CHECK_INT(recs[1].start, 30);
	CHECK_INT(recs[1].end, 40);
	conntrack__free(ct);
}

/* Feeds a reply as reads of `read` bytes of which the kernel copied
 * `copied`; returns the time of the last read. */
static uint64_t read_big(struct conntrack *ct, uint64_t conn, uint32_t *seq, const struct buf *b,
			 size_t read, size_t copied, uint64_t ts)
{
	for (size_t off = 0; off < b->len; off += read, ts++) {
		size_t n = b->len - off < read ? b->len - off : read;
		event(ct, conn, IN, ts, seq, b->p + off, (uint32_t)(n < copied ? n : copied),
		      (uint32_t)n);
	}
	return ts - 1;
}

/* 100k rows read 16 KiB at a time, 4 KiB copied of each: the reply still
 * ends where it ends and the next queries pair right. A 1 MiB query too. */
static void test_large_result_and_large_query(void)
{
	struct buf big = {0}, q = {0}, small = {0};
	m_rows(&big, 100000, 33);
	m_ready(&big);
	m_rows(&small, 1, 3);
	m_ready(&small);
	for (int last_copied = 0; last_copied <= 1; last_copied++) {
		struct conntrack *ct = new_ct();
		uint32_t seq[2] = {1, 1};
		msg_strs(&q, 'Q', "SELECT id, payload FROM big", NULL);
		send_all(ct, 6, OUT, 10, seq, q.p, q.len);
		buf_free(&q);
		/* reads of about 16 KiB; the last small enough to be copied whole, or not */
		size_t read = 16000, tail;
		while ((tail = big.len % read) == 0 || (last_copied ? tail > 4096 : tail <= 4096))
			read++;
		uint64_t last = read_big(ct, 6, seq, &big, read, 4096, 100);
		CHECK_INT(nrecs, last_copied ? 1 : 0); /* else: known when the client speaks */
		msg_strs(&q, 'Q', "SELECT 1", NULL);
		send_all(ct, 6, OUT, 1000, seq, q.p, q.len);
		buf_free(&q);
		CHECK_INT(nrecs, 1);
		CHECK_STR(recs[0].name, "SELECT big");
		CHECK_INT(recs[0].start, 10);
		CHECK_INT(recs[0].end, last);
		CHECK_STR(recs[0].err, "");
		send_all(ct, 6, IN, 1001, seq, small.p, small.len);
		CHECK_INT(nrecs, 2);
		CHECK_STR(recs[1].query, "SELECT ?");
		CHECK_INT(recs[1].end, 1001);

		/* a 1 MiB query, written at once, 4 KiB of it copied */
		size_t n = 1 << 20;
		char *text = malloc(n + 64);
		int h = snprintf(text, 64, "SELECT count(*) FROM products WHERE name <> '");
		memset(text + h, 'x', n - (size_t)h - 1);
		text[n - 1] = '\'';
		text[n] = '\0';
		msg_strs(&q, 'Q', text, NULL);
		free(text);
		event(ct, 6, OUT, 2000, seq, q.p, 4096, (uint32_t)q.len);
		buf_free(&q);
		send_all(ct, 6, IN, 2001, seq, small.p, small.len);
		msg_strs(&q, 'Q', "DELETE FROM orders", NULL);
		send_all(ct, 6, OUT, 2002, seq, q.p, q.len);
		buf_free(&q);
		msg_strs(&q, 'C', "DELETE 0", NULL);
		m_ready(&q);
		send_all(ct, 6, IN, 2003, seq, q.p, q.len);
		buf_free(&q);
		CHECK_INT(nrecs, 4);
		CHECK_STR(recs[2].query, "SELECT count(*) FROM products WHERE name <> ?");
		CHECK_INT(recs[2].end, 2001);
		CHECK_STR(recs[3].name, "DELETE orders");
		CHECK_INT(recs[3].end, 2003);
		CHECK_INT(counter(ct, CONN_PARSE_ERRORS), 0);
		conntrack__free(ct);
	}
	buf_free(&big);
	buf_free(&small);
}

static void test_lost_events(void)
{
	struct conntrack *ct = new_ct();
	uint32_t seq[2] = {1, 1};
	struct buf q = {0}, s = {0};
	msg_strs(&q, 'Q', "SELECT 1", NULL);
	m_rows(&s, 1, 2);
	m_ready(&s);
	send_all(ct, 7, OUT, 1, seq, q.p, q.len);
	send_all(ct, 7, IN, 2, seq, s.p, s.len);
	CHECK_INT(nrecs, 1);
	nrecs = 0;
	send_all(ct, 7, OUT, 10, seq, q.p, q.len);
	seq[IN] += 100; /* the reply's first read was lost */
	send_all(ct, 7, IN, 20, seq, s.p, s.len);
	CHECK_INT(nrecs, 0);
	CHECK_INT(counter(ct, CONN_LOST_EVENTS), 1);
	send_all(ct, 7, OUT, 30, seq, q.p, q.len); /* the next exchange is whole */
	send_all(ct, 7, IN, 40, seq, s.p, s.len);
	CHECK_INT(nrecs, 1);
	CHECK_INT(recs[0].start, 30);
	CHECK_INT(recs[0].end, 40);
	conntrack__free(ct);
	buf_free(&q);
	buf_free(&s);
}

/* Detection: never by port, never stealing HTTP. */
static void test_detection(void)
{
	struct conntrack *ct = new_ct();
	uint32_t seq[2] = {1, 1};
	const char *post = "POST /q HTTP/1.1\r\nContent-Length: 0\r\n\r\n";
	send_all(ct, 8, OUT, 1, seq, post, strlen(post));
	send_all(ct, 8, IN, 2, seq, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 38);
	CHECK_INT(nrecs, 1);
	CHECK_INT(recs[0].kind, REQ_HTTP_CLIENT);
	/* the server side of PostgreSQL (requests arriving) is not ours */
	struct buf q = {0};
	msg_strs(&q, 'Q', "SELECT 1", NULL);
	event_role(ct, 9, IN, 3, seq, q.p, (uint32_t)q.len, (uint32_t)q.len, RASTRO_ROLE_SERVER);
	event_role(ct, 9, OUT, 4, seq, "Z\0\0\0\x05I", 6, 6, RASTRO_ROLE_SERVER);
	CHECK_INT(nrecs, 1);
	buf_free(&q);
	conntrack__free(ct);
}

int main(void)
{
	cfg.max_path_length = 512;
	cfg.max_pending_requests = 64;
	test_parsers();
	test_simple_query_every_split();
	test_extended_and_prepared_reuse();
	test_errors();
	test_ssl_accepted_is_ignored();
	test_connection_predating_rastro();
	test_large_result_and_large_query();
	test_lost_events();
	test_detection();
	return check_done("test_postgres");
}
