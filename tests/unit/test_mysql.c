/* MySQL / MariaDB protocol: parsers, and the session through the connection
 * tracker with every input split at every byte boundary. */
#include "db_harness.h"
#include "protocols/mysql.h"

#define CAPS_BASE                                                                                  \
	(MYSQL_CLIENT_PROTOCOL_41 | MYSQL_CLIENT_SECURE_CONNECTION | 0x80000u /* plugin auth */ |  \
	 MYSQL_CLIENT_PLUGIN_AUTH_LENENC | MYSQL_CLIENT_CONNECT_WITH_DB)

static void le16(struct buf *b, uint16_t v)
{
	buf_u8(b, (uint8_t)v);
	buf_u8(b, (uint8_t)(v >> 8));
}

static void le32(struct buf *b, uint32_t v)
{
	le16(b, (uint16_t)v);
	le16(b, (uint16_t)(v >> 16));
}

static void cstr(struct buf *b, const char *s)
{
	buf_put(b, s, strlen(s) + 1);
}

static void lenstr(struct buf *b, const char *s)
{
	buf_u8(b, (uint8_t)strlen(s));
	buf_str(b, s);
}

/* Appends a packet with the given payload. */
static void packet(struct buf *b, uint8_t seq, const struct buf *payload)
{
	uint32_t n = (uint32_t)payload->len;
	buf_u8(b, (uint8_t)n);
	buf_u8(b, (uint8_t)(n >> 8));
	buf_u8(b, (uint8_t)(n >> 16));
	buf_u8(b, seq);
	buf_put(b, payload->p, payload->len);
}

static void packet_bytes(struct buf *b, uint8_t seq, const void *p, size_t n)
{
	struct buf t = {0};
	buf_put(&t, p, n);
	packet(b, seq, &t);
	buf_free(&t);
}

static void greeting(struct buf *b, const char *version, uint32_t caps)
{
	struct buf p = {0};
	buf_u8(&p, 10);
	cstr(&p, version);
	le32(&p, 77);
	buf_str(&p, "abcdefgh");
	buf_u8(&p, 0);
	le16(&p, (uint16_t)caps);
	buf_u8(&p, 45);
	le16(&p, 2);
	le16(&p, (uint16_t)(caps >> 16));
	buf_u8(&p, 21);
	buf_put(&p, "\0\0\0\0\0\0\0\0\0\0", 10);
	buf_put(&p, "ijklmnopqrst", 13);
	cstr(&p, "mysql_native_password");
	packet(b, 0, &p);
	buf_free(&p);
}

static void login(struct buf *b, uint32_t caps, const char *db)
{
	struct buf p = {0};
	le32(&p, caps);
	le32(&p, 1 << 24);
	buf_u8(&p, 45);
	for (int i = 0; i < 23; i++)
		buf_u8(&p, 0);
	cstr(&p, "app");
	buf_u8(&p, 20);
	buf_str(&p, "01234567890123456789");
	if (db)
		cstr(&p, db);
	cstr(&p, "mysql_native_password");
	packet(b, 1, &p);
	buf_free(&p);
}

static void ok(struct buf *b, uint8_t seq, uint8_t header, uint16_t status)
{
	struct buf p = {0};
	buf_u8(&p, header);
	buf_u8(&p, 0);
	buf_u8(&p, 0);
	le16(&p, status);
	le16(&p, 0);
	packet(b, seq, &p);
	buf_free(&p);
}

static void eof(struct buf *b, uint8_t seq, uint16_t status)
{
	struct buf p = {0};
	buf_u8(&p, 0xfe);
	le16(&p, 0);
	le16(&p, status);
	packet(b, seq, &p);
	buf_free(&p);
}

static void err(struct buf *b, uint8_t seq, uint16_t code, const char *state, const char *msg)
{
	struct buf p = {0};
	buf_u8(&p, 0xff);
	le16(&p, code);
	buf_u8(&p, '#');
	buf_str(&p, state);
	buf_str(&p, msg);
	packet(b, seq, &p);
	buf_free(&p);
}

static void command(struct buf *b, uint8_t cmd, const char *text)
{
	struct buf p = {0};
	buf_u8(&p, cmd);
	buf_str(&p, text);
	packet(b, 0, &p);
	buf_free(&p);
}

static void coldef(struct buf *b, uint8_t *seq, const char *name)
{
	struct buf p = {0};
	lenstr(&p, "def");
	lenstr(&p, "shop");
	lenstr(&p, "products");
	lenstr(&p, "products");
	lenstr(&p, name);
	lenstr(&p, name);
	buf_u8(&p, 0x0c);
	le16(&p, 45);
	le32(&p, 256);
	buf_u8(&p, 253);
	le16(&p, 0);
	buf_u8(&p, 0);
	le16(&p, 0);
	packet(b, (*seq)++, &p);
	buf_free(&p);
}

/* A text result set of n rows of one column; classic EOFs or DEPRECATE_EOF. */
static void result(struct buf *b, int n, size_t width, bool deprecate_eof, uint16_t last_status)
{
	uint8_t seq = 1;
	packet_bytes(b, seq++, "\x01", 1);
	coldef(b, &seq, "name");
	if (!deprecate_eof)
		eof(b, seq++, 0x22);
	char *v = malloc(width + 3);
	memset(v, 'r', width + 3);
	for (int i = 0; i < n; i++) {
		struct buf p = {0};
		if (width < 251) {
			buf_u8(&p, (uint8_t)width);
		} else {
			buf_u8(&p, 0xfc);
			le16(&p, (uint16_t)width);
		}
		buf_put(&p, v, width);
		packet(b, seq++, &p);
		buf_free(&p);
	}
	free(v);
	if (deprecate_eof)
		ok(b, seq, 0xfe, last_status);
	else
		eof(b, seq, last_status);
}

/* Greeting, login, OK: what a client sees connecting. */
static void handshake(struct conntrack *ct, uint64_t conn, uint32_t *seq, const char *version,
		      uint32_t caps)
{
	struct buf b = {0};
	greeting(&b, version, caps);
	send_all(ct, conn, IN, 1, seq, b.p, b.len);
	buf_free(&b);
	login(&b, caps, "shop");
	send_all(ct, conn, OUT, 2, seq, b.p, b.len);
	buf_free(&b);
	ok(&b, 2, 0, 2);
	send_all(ct, conn, IN, 3, seq, b.p, b.len);
	buf_free(&b);
}

/* ---- pure parsers */

static void test_parsers(void)
{
	struct buf b = {0};
	struct mysql_greeting g;
	greeting(&b, "5.5.5-10.11.19-MariaDB-0+deb12u1", CAPS_BASE);
	CHECK(mysql__looks_like_greeting(b.p, b.len, b.len));
	CHECK(!mysql__looks_like_greeting(b.p, b.len, b.len + 1));
	CHECK(mysql__parse_greeting(b.p + 4, b.len - 4, &g));
	CHECK(g.mariadb);
	CHECK_INT(g.caps, CAPS_BASE);
	buf_free(&b);
	greeting(&b, "8.0.36", CAPS_BASE);
	CHECK(mysql__parse_greeting(b.p + 4, b.len - 4, &g));
	CHECK(!g.mariadb);
	buf_free(&b);

	struct mysql_login l;
	login(&b, CAPS_BASE, "shop");
	CHECK(mysql__parse_login(b.p + 4, b.len - 4, &l));
	CHECK_MEM(l.user.p, l.user.len, "app");
	CHECK_MEM(l.database.p, l.database.len, "shop");
	CHECK(!l.ssl_request);
	buf_free(&b);

	struct mysql_error e;
	err(&b, 1, 1146, "42S02", "Table 'shop.nope' doesn't exist");
	CHECK(mysql__parse_err(b.p + 4, b.len - 4, &e));
	CHECK_INT(e.code, 1146);
	CHECK_STR(e.sqlstate, "42S02");
	buf_free(&b);

	uint64_t v;
	CHECK_INT(mysql__lenenc("\xfc\x10\x27", 3, &v), 3);
	CHECK_INT(v, 10000);
	CHECK_INT(mysql__lenenc("\xfd\x01\x00", 3, &v), 0); /* cut */
	CHECK_INT(mysql__lenenc("\xfb", 1, &v), 0);

	command(&b, MYSQL_COM_QUERY, "SELECT 1");
	CHECK(mysql__looks_like_command(b.p, b.len, b.len));
	CHECK(!mysql__looks_like_command(b.p, b.len, b.len + 3));
	buf_free(&b);
	command(&b, MYSQL_COM_QUERY, "\x01\x02\x03\x04 binary");
	CHECK(!mysql__looks_like_command(b.p, b.len, b.len));
	buf_free(&b);
	const char *get = "GET / HTTP/1.1\r\n\r\n";
	CHECK(!mysql__looks_like_command(get, strlen(get), strlen(get)));

	struct db_slice sql;
	CHECK(mysql__query_text("\0\1SELECT 1", 10, 1, &sql)); /* query attributes, none */
	CHECK_MEM(sql.p, sql.len, "SELECT 1");
	CHECK(mysql__query_text("SELECT 1", 8, 0, &sql));
	CHECK_MEM(sql.p, sql.len, "SELECT 1");

	eof(&b, 5, 0x22);
	CHECK(mysql__ends_with_terminator(b.p, b.len));
	buf_free(&b);
	eof(&b, 5, 0x22 | MYSQL_SERVER_MORE_RESULTS);
	CHECK(!mysql__ends_with_terminator(b.p, b.len));
	buf_free(&b);
	ok(&b, 5, 0xfe, 0x22);
	CHECK(mysql__ends_with_terminator(b.p, b.len));
	buf_free(&b);
}

/* ---- sessions */

static void test_query_every_split(void)
{
	for (int dep = 0; dep <= 1; dep++) {
		uint32_t caps = CAPS_BASE | (dep ? MYSQL_CLIENT_DEPRECATE_EOF : 0);
		const char *version = dep ? "8.0.36" : "5.5.5-10.11.19-MariaDB-0+deb12u1";
		struct buf q = {0}, reply = {0};
		command(&q, MYSQL_COM_QUERY, "SELECT name FROM products WHERE price > 10.5");
		result(&reply, 3, 4, dep, 0x22);
		for (size_t k = 0; k <= q.len; k++) {
			for (size_t j = 0; j <= reply.len; j++) {
				struct conntrack *ct = new_ct();
				uint32_t seq[2] = {1, 1};
				handshake(ct, 1, seq, version, caps);
				send_split(ct, 1, OUT, 10, seq, q.p, q.len, k);
				send_split(ct, 1, IN, 20, seq, reply.p, reply.len, j);
				CHECK_INT(nrecs, 1);
				if (nrecs != 1) {
					conntrack__free(ct);
					continue;
				}
				CHECK_INT(recs[0].system, dep ? DB_MYSQL : DB_MARIADB);
				CHECK_STR(recs[0].name, "SELECT products");
				CHECK_STR(recs[0].query,
					  "SELECT name FROM products WHERE price > ?");
				CHECK_STR(recs[0].ns, "shop");
				CHECK_STR(recs[0].err, "");
				CHECK_INT(recs[0].start, 10);
				CHECK_INT(recs[0].end, j && j < reply.len ? 21 : 20);
				conntrack__free(ct);
			}
		}
		buf_free(&q);
		buf_free(&reply);
	}
}

/* Errors, USE / COM_INIT_DB, an empty result set, several result sets. */
static void test_replies(void)
{
	for (int dep = 0; dep <= 1; dep++) {
		uint32_t caps = CAPS_BASE | (dep ? MYSQL_CLIENT_DEPRECATE_EOF : 0);
		cfg.keep_db_literals = dep; /* the server's message only with literals */
		struct conntrack *ct = new_ct();
		uint32_t seq[2] = {1, 1};
		struct buf c = {0}, s = {0};
		handshake(ct, 2, seq, "5.5.5-10.11.2-MariaDB", caps);
		command(&c, MYSQL_COM_QUERY, "SELECT * FROM nope");
		send_all(ct, 2, OUT, 10, seq, c.p, c.len);
		buf_free(&c);
		err(&s, 1, 1146, "42S02", "Table 'shop.nope' doesn't exist");
		send_all(ct, 2, IN, 11, seq, s.p, s.len);
		buf_free(&s);
		command(&c, MYSQL_COM_INIT_DB, "other");
		send_all(ct, 2, OUT, 20, seq, c.p, c.len);
		buf_free(&c);
		ok(&s, 1, 0, 2);
		send_all(ct, 2, IN, 21, seq, s.p, s.len);
		buf_free(&s);
		command(&c, MYSQL_COM_QUERY, "SELECT name FROM products WHERE 1 = 0");
		send_all(ct, 2, OUT, 30, seq, c.p, c.len);
		buf_free(&c);
		result(&s, 0, 0, dep, 0x22);
		send_all(ct, 2, IN, 31, seq, s.p, s.len);
		buf_free(&s);
		command(&c, MYSQL_COM_QUERY, "USE `third`");
		send_all(ct, 2, OUT, 40, seq, c.p, c.len);
		buf_free(&c);
		ok(&s, 1, 0, 2);
		send_all(ct, 2, IN, 41, seq, s.p, s.len);
		buf_free(&s);
		/* a procedure: two result sets and an OK */
		command(&c, MYSQL_COM_QUERY, "CALL two_results()");
		send_all(ct, 2, OUT, 50, seq, c.p, c.len);
		buf_free(&c);
		result(&s, 2, 3, dep, 0x22 | MYSQL_SERVER_MORE_RESULTS);
		send_all(ct, 2, IN, 51, seq, s.p, s.len);
		buf_free(&s);
		result(&s, 1, 3, dep, 0x22 | MYSQL_SERVER_MORE_RESULTS);
		ok(&s, 9, 0, 0x22);
		send_all(ct, 2, IN, 52, seq, s.p, s.len);
		buf_free(&s);
		command(&c, MYSQL_COM_PING, "");
		send_all(ct, 2, OUT, 60, seq, c.p, c.len);
		buf_free(&c);
		ok(&s, 1, 0, 2);
		send_all(ct, 2, IN, 61, seq, s.p, s.len);
		buf_free(&s);

		CHECK_INT(nrecs, 4);
		CHECK_STR(recs[0].name, "SELECT nope");
		CHECK_STR(recs[0].status, "1146");
		CHECK_STR(recs[0].err, "1146");
		CHECK_STR(recs[0].msg, dep ? "42S02 Table 'shop.nope' doesn't exist" : "");
		CHECK_STR(recs[0].ns, "shop");
		CHECK_INT(recs[0].end, 11);
		CHECK_STR(recs[1].ns, "other");
		CHECK_STR(recs[1].query, dep ? "SELECT name FROM products WHERE 1 = 0"
					     : "SELECT name FROM products WHERE ? = ?");
		CHECK_INT(recs[1].end, 31);
		CHECK_STR(recs[2].name, "USE");
		CHECK_STR(recs[2].ns, "third");
		CHECK_STR(recs[3].name, "CALL");
		CHECK_INT(recs[3].start, 50);
		CHECK_INT(recs[3].end, 52);
		CHECK_STR(recs[3].ns, "third");
		conntrack__free(ct);
	}
	cfg.keep_db_literals = false;
}

/* COM_STMT_PREPARE's reply: OK, parameter and column definitions. */
static void prepare_ok(struct buf *b, uint32_t id, uint16_t params, uint16_t cols, bool dep)
{
	struct buf p = {0};
	uint8_t seq = 1;
	buf_u8(&p, 0);
	le32(&p, id);
	le16(&p, cols);
	le16(&p, params);
	buf_u8(&p, 0);
	le16(&p, 0);
	packet(b, seq++, &p);
	buf_free(&p);
	for (int i = 0; i < params; i++)
		coldef(b, &seq, "?");
	if (params && !dep)
		eof(b, seq++, 2);
	for (int i = 0; i < cols; i++)
		coldef(b, &seq, "name");
	if (cols && !dep)
		eof(b, seq++, 2);
}

static void stmt_execute(struct buf *b, uint32_t id)
{
	struct buf p = {0};
	buf_u8(&p, MYSQL_COM_STMT_EXECUTE);
	le32(&p, id);
	buf_u8(&p, 0);
	le32(&p, 1);
	buf_u8(&p, 0);  /* null bitmap */
	buf_u8(&p, 1);  /* new params bound */
	le16(&p, 3);    /* MYSQL_TYPE_LONG */
	le32(&p, 2);
	packet(b, 0, &p);
	buf_free(&p);
}

static void binary_result(struct buf *b, bool dep)
{
	uint8_t seq = 1;
	packet_bytes(b, seq++, "\x01", 1);
	coldef(b, &seq, "name");
	if (!dep)
		eof(b, seq++, 2);
	packet_bytes(b, seq++, "\x00\x00\x03pen", 6);
	if (dep)
		ok(b, seq, 0xfe, 2);
	else
		eof(b, seq, 2);
}

/* Prepared statements: text from the prepare, by statement id; with the
 * handshake seen, and on a connection that predates rastro (capabilities
 * unknown, EOF packets told apart by their shape). */
static void test_prepared(void)
{
	for (int variant = 0; variant < 4; variant++) {
		bool dep = variant & 1, seen = variant & 2;
		uint32_t caps = CAPS_BASE | (dep ? MYSQL_CLIENT_DEPRECATE_EOF : 0);
		struct conntrack *ct = new_ct();
		uint32_t seq[2] = {1, 1};
		struct buf c = {0}, s = {0};
		if (seen)
			handshake(ct, 3, seq, "5.5.5-10.11.2-MariaDB", caps);
		command(&c, MYSQL_COM_STMT_PREPARE, "SELECT name FROM products WHERE id = ?");
		send_all(ct, 3, OUT, 10, seq, c.p, c.len);
		buf_free(&c);
		prepare_ok(&s, 7, 1, 1, dep);
		send_all(ct, 3, IN, 11, seq, s.p, s.len);
		buf_free(&s);
		for (int i = 0; i < 2; i++) {
			stmt_execute(&c, 7);
			send_all(ct, 3, OUT, 20 + i * 10, seq, c.p, c.len);
			buf_free(&c);
			binary_result(&s, dep);
			send_all(ct, 3, IN, 25 + i * 10, seq, s.p, s.len);
			buf_free(&s);
		}
		/* close: no reply; then a plain query pairs right */
		packet_bytes(&c, 0, "\x19\x07\x00\x00\x00", 5);
		send_all(ct, 3, OUT, 40, seq, c.p, c.len);
		buf_free(&c);
		command(&c, MYSQL_COM_QUERY, "DELETE FROM orders WHERE id = 3");
		send_all(ct, 3, OUT, 50, seq, c.p, c.len);
		buf_free(&c);
		ok(&s, 1, 0, 2);
		send_all(ct, 3, IN, 55, seq, s.p, s.len);
		buf_free(&s);
		/* executing the closed statement: no text, the server's error */
		stmt_execute(&c, 7);
		send_all(ct, 3, OUT, 60, seq, c.p, c.len);
		buf_free(&c);
		err(&s, 1, 1243, "HY000", "Unknown prepared statement handler");
		send_all(ct, 3, IN, 65, seq, s.p, s.len);
		buf_free(&s);

		CHECK_INT(nrecs, 4);
		for (int i = 0; i < 2 && nrecs == 4; i++) {
			CHECK_STR(recs[i].name, "SELECT products");
			CHECK_STR(recs[i].query, "SELECT name FROM products WHERE id = ?");
			CHECK_INT(recs[i].start, 20 + i * 10);
			CHECK_INT(recs[i].end, 25 + i * 10);
			CHECK_INT(recs[i].system, seen ? DB_MARIADB : DB_MYSQL);
		}
		CHECK_STR(recs[2].name, "DELETE orders");
		CHECK_INT(recs[2].end, 55);
		CHECK_STR(recs[3].name, seen ? "mariadb" : "mysql");
		CHECK_STR(recs[3].status, "1243");
		CHECK_INT(counter(ct, CONN_PARSE_ERRORS), 0);
		conntrack__free(ct);
	}
}

static void test_ssl_and_local_infile(void)
{
	struct conntrack *ct = new_ct();
	uint32_t seq[2] = {1, 1};
	struct buf b = {0};
	greeting(&b, "8.0.36", CAPS_BASE | MYSQL_CLIENT_SSL);
	send_all(ct, 4, IN, 1, seq, b.p, b.len);
	buf_free(&b);
	struct buf p = {0};
	le32(&p, CAPS_BASE | MYSQL_CLIENT_SSL);
	le32(&p, 1 << 24);
	buf_u8(&p, 45);
	for (int i = 0; i < 23; i++)
		buf_u8(&p, 0);
	packet(&b, 1, &p);
	buf_free(&p);
	send_all(ct, 4, OUT, 2, seq, b.p, b.len);
	buf_free(&b);
	send_all(ct, 4, OUT, 3, seq, "\x16\x03\x01\x02\x00\x01", 6);
	command(&b, MYSQL_COM_QUERY, "SELECT 1"); /* not possible under TLS: must be ignored */
	send_all(ct, 4, OUT, 4, seq, b.p, b.len);
	buf_free(&b);
	ok(&b, 1, 0, 2);
	send_all(ct, 4, IN, 5, seq, b.p, b.len);
	buf_free(&b);
	CHECK_INT(nrecs, 0);
	conntrack__free(ct);

	/* LOAD DATA LOCAL: the client sends the file inside the reply's sequence */
	ct = new_ct();
	seq[0] = seq[1] = 1;
	handshake(ct, 5, seq, "5.5.5-10.11.2-MariaDB", CAPS_BASE);
	command(&b, MYSQL_COM_QUERY, "LOAD DATA LOCAL INFILE '/tmp/x.csv' INTO TABLE orders");
	send_all(ct, 5, OUT, 10, seq, b.p, b.len);
	buf_free(&b);
	packet_bytes(&b, 1, "\xfb/tmp/x.csv", 11);
	send_all(ct, 5, IN, 11, seq, b.p, b.len);
	buf_free(&b);
	packet_bytes(&b, 2, "1,2\n3,4\n", 8);
	packet_bytes(&b, 3, "", 0);
	send_all(ct, 5, OUT, 12, seq, b.p, b.len);
	buf_free(&b);
	ok(&b, 4, 0, 2);
	send_all(ct, 5, IN, 13, seq, b.p, b.len);
	buf_free(&b);
	command(&b, MYSQL_COM_QUERY, "SELECT 2");
	send_all(ct, 5, OUT, 20, seq, b.p, b.len);
	buf_free(&b);
	result(&b, 1, 1, false, 2);
	send_all(ct, 5, IN, 21, seq, b.p, b.len);
	buf_free(&b);
	CHECK_INT(nrecs, 2);
	CHECK_STR(recs[0].name, "LOAD");
	CHECK_STR(recs[0].query, "LOAD DATA LOCAL INFILE ? INTO TABLE orders");
	CHECK_INT(recs[0].end, 13);
	CHECK_STR(recs[1].query, "SELECT ?");
	CHECK_INT(recs[1].start, 20);
	close_conn(ct, 5, 30);
	conntrack__free(ct);
}

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

/* 100k rows read 16 KiB at a time, 4 KiB copied of each; a 1 MiB query. */
static void test_large_result_and_large_query(void)
{
	for (int variant = 0; variant < 4; variant++) {
		bool dep = variant & 1, last_copied = variant & 2;
		struct buf big = {0}, q = {0}, small = {0};
		result(&big, 100000, 32, dep, 0x22);
		result(&small, 1, 1, dep, 0x22);
		struct conntrack *ct = new_ct();
		uint32_t seq[2] = {1, 1};
		handshake(ct, 6, seq, "5.5.5-10.11.2-MariaDB",
			  CAPS_BASE | (dep ? MYSQL_CLIENT_DEPRECATE_EOF : 0));
		command(&q, MYSQL_COM_QUERY, "SELECT id, payload FROM big");
		send_all(ct, 6, OUT, 10, seq, q.p, q.len);
		buf_free(&q);
		size_t read = 16000, tail;
		while ((tail = big.len % read) == 0 || (last_copied ? tail > 4096 : tail <= 4096))
			read++;
		uint64_t last = read_big(ct, 6, seq, &big, read, 4096, 100);
		CHECK_INT(nrecs, last_copied ? 1 : 0);
		command(&q, MYSQL_COM_QUERY, "SELECT 1");
		send_all(ct, 6, OUT, 1000, seq, q.p, q.len);
		buf_free(&q);
		CHECK_INT(nrecs, 1);
		CHECK_STR(recs[0].name, "SELECT big");
		CHECK_INT(recs[0].end, last);
		CHECK_STR(recs[0].err, "");
		send_all(ct, 6, IN, 1001, seq, small.p, small.len);
		CHECK_INT(nrecs, 2);
		CHECK_STR(recs[1].query, "SELECT ?");
		CHECK_INT(recs[1].end, 1001);

		size_t n = 1 << 20;
		char *text = malloc(n + 1);
		int h = snprintf(text, 64, "SELECT count(*) FROM products WHERE name <> '");
		memset(text + h, 'x', n - (size_t)h - 1);
		text[n - 1] = '\'';
		text[n] = '\0';
		command(&q, MYSQL_COM_QUERY, text);
		free(text);
		/* written in two parts, 4 KiB of each copied */
		event(ct, 6, OUT, 2000, seq, q.p, 4096, (uint32_t)(q.len / 2));
		event(ct, 6, OUT, 2001, seq, q.p + q.len / 2, 4096, (uint32_t)(q.len - q.len / 2));
		buf_free(&q);
		send_all(ct, 6, IN, 2002, seq, small.p, small.len);
		command(&q, MYSQL_COM_QUERY, "DELETE FROM orders");
		send_all(ct, 6, OUT, 2003, seq, q.p, q.len);
		buf_free(&q);
		ok(&q, 1, 0, 2);
		send_all(ct, 6, IN, 2004, seq, q.p, q.len);
		buf_free(&q);
		CHECK_INT(nrecs, 4);
		CHECK_STR(recs[2].query, "SELECT count(*) FROM products WHERE name <> ?");
		CHECK_INT(recs[2].start, 2000);
		CHECK_INT(recs[2].end, 2002);
		CHECK_STR(recs[3].name, "DELETE orders");
		CHECK_INT(recs[3].end, 2004);
		CHECK_INT(counter(ct, CONN_PARSE_ERRORS), 0);
		conntrack__free(ct);
		buf_free(&big);
		buf_free(&small);
	}
}

/* A client reading the greeting's 4-byte header alone, then the rest. */
static void test_greeting_in_two_reads(void)
{
	struct conntrack *ct = new_ct();
	uint32_t seq[2] = {1, 1};
	struct buf b = {0};
	greeting(&b, "5.5.5-10.6.1-MariaDB", CAPS_BASE);
	send_all(ct, 8, IN, 1, seq, b.p, 4);
	send_all(ct, 8, IN, 2, seq, b.p + 4, b.len - 4);
	buf_free(&b);
	login(&b, CAPS_BASE, "inventory");
	send_all(ct, 8, OUT, 3, seq, b.p, b.len);
	buf_free(&b);
	ok(&b, 2, 0, 2);
	send_all(ct, 8, IN, 4, seq, b.p, b.len);
	buf_free(&b);
	command(&b, MYSQL_COM_QUERY, "SELECT 1");
	send_all(ct, 8, OUT, 10, seq, b.p, b.len);
	buf_free(&b);
	result(&b, 1, 1, false, 2);
	send_all(ct, 8, IN, 11, seq, b.p, b.len);
	buf_free(&b);
	CHECK_INT(nrecs, 1);
	CHECK_INT(recs[0].system, DB_MARIADB);
	CHECK_STR(recs[0].ns, "inventory");
	conntrack__free(ct);
}

static void test_no_reply_and_predating(void)
{
	struct conntrack *ct = new_ct();
	uint32_t seq[2] = {1, 1};
	struct buf b = {0};
	/* a connection open before rastro: found from its first query */
	command(&b, MYSQL_COM_QUERY, "UPDATE products SET price = 2 WHERE id = 2");
	event_role(ct, 7, OUT, 10, seq, b.p, (uint32_t)b.len, (uint32_t)b.len, RASTRO_ROLE_UNKNOWN);
	buf_free(&b);
	ok(&b, 1, 0, 2);
	event_role(ct, 7, IN, 11, seq, b.p, (uint32_t)b.len, (uint32_t)b.len, RASTRO_ROLE_UNKNOWN);
	buf_free(&b);
	command(&b, MYSQL_COM_QUERY, "SELECT SLEEP(100)");
	event_role(ct, 7, OUT, 20, seq, b.p, (uint32_t)b.len, (uint32_t)b.len, RASTRO_ROLE_UNKNOWN);
	buf_free(&b);
	close_conn(ct, 7, 30);
	CHECK_INT(nrecs, 2);
	CHECK_STR(recs[0].name, "UPDATE products");
	CHECK_STR(recs[0].query, "UPDATE products SET price = ? WHERE id = ?");
	CHECK_INT(recs[0].system, DB_MYSQL);
	CHECK_STR(recs[0].ns, "");
	CHECK_STR(recs[1].err, "no_response");
	CHECK_INT(recs[1].end, 30);
	conntrack__free(ct);
}

int main(void)
{
	cfg.max_path_length = 512;
	cfg.max_pending_requests = 64;
	test_parsers();
	test_query_every_split();
	test_replies();
	test_prepared();
	test_ssl_and_local_infile();
	test_large_result_and_large_query();
	test_no_reply_and_predating();
	test_greeting_in_two_reads();
	return check_done("test_mysql");
}
