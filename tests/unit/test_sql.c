/* SQL sanitizer and summary, and the heuristic SQL session. */
#include "db_harness.h"
#include "protocols/db.h"
#include "protocols/sql.h"

static const char *san(const char *q, enum sql_dialect d, bool keep)
{
	static char out[SQL_TEXT_MAX];
	sql__sanitize(q, strlen(q), d, keep, out, sizeof(out));
	return out;
}

#define ANSI SQL_DIALECT_ANSI
#define MYSQL SQL_DIALECT_MYSQL

static void test_sanitize(void)
{
	CHECK_STR(san("SELECT * FROM t WHERE a = 'x' AND b = 42", ANSI, false),
		  "SELECT * FROM t WHERE a = ? AND b = ?");
	CHECK_STR(san("select a\n\t  from   t", ANSI, false), "select a from t");
	CHECK_STR(san("  SELECT 1  ", ANSI, false), "SELECT ?");
	/* escaped quotes, both dialects */
	CHECK_STR(san("SELECT 'it''s', 'x'", ANSI, false), "SELECT ?, ?");
	CHECK_STR(san("SELECT 'a\\'b' FROM t", MYSQL, false), "SELECT ? FROM t");
	CHECK_STR(san("SELECT E'a\\'b', x FROM t", ANSI, false), "SELECT ?, x FROM t");
	/* standard strings: a backslash is a character, the quote ends it */
	CHECK_STR(san("SELECT 'a\\', b FROM t", ANSI, false), "SELECT ?, b FROM t");
	/* double quotes: identifier in PostgreSQL, string in MySQL */
	CHECK_STR(san("SELECT \"Name\" FROM \"T\" WHERE x = \"v\"", ANSI, false),
		  "SELECT \"Name\" FROM \"T\" WHERE x = \"v\"");
	CHECK_STR(san("SELECT `Name` FROM t WHERE x = \"secret\"", MYSQL, false),
		  "SELECT `Name` FROM t WHERE x = ?");
	/* numbers, but not inside identifiers; parameters kept */
	CHECK_STR(
	    san("SELECT t1.c2 FROM t1 WHERE a=-1.5e-3 AND b=.5 AND c=$1 AND d=?", ANSI, false),
	    "SELECT t1.c2 FROM t1 WHERE a=-? AND b=? AND c=$1 AND d=?");
	CHECK_STR(san("UPDATE t SET v = 0x1F, w = X'0A', z = b'101' WHERE id = 1e10", MYSQL, false),
		  "UPDATE t SET v = ?, w = ?, z = ? WHERE id = ?");
	CHECK_STR(san("SELECT * FROM t WHERE ok = TRUE OR no = false OR t.true = 1", ANSI, false),
		  "SELECT * FROM t WHERE ok = ? OR no = ? OR t.true = ?");
	CHECK_STR(san("SELECT NULL, :name, @v FROM t", ANSI, false),
		  "SELECT NULL, :name, @v FROM t");
	/* dollar quotes */
	CHECK_STR(san("SELECT $$a 'b' c$$, $tag$x$$y$tag$, $2", ANSI, false), "SELECT ?, ?, $2");
	/* comments go */
	CHECK_STR(san("SELECT a -- the 'secret' 42\nFROM t /* 99 /* nested */ 'x' */ WHERE b=1",
		      ANSI, false),
		  "SELECT a FROM t WHERE b=?");
	CHECK_STR(san("SELECT a # 42\nFROM t WHERE b=1--1", MYSQL, false),
		  "SELECT a FROM t WHERE b=?--?");
	/* text cut by the capture: an open literal becomes one ? */
	CHECK_STR(san("SELECT * FROM t WHERE name = 'very long sec", ANSI, false),
		  "SELECT * FROM t WHERE name = ?");
	CHECK_STR(san("INSERT INTO t VALUES (12345", ANSI, false), "INSERT INTO t VALUES (?");
	/* the text ends at a NUL */
	CHECK_STR(san("SELECT 1\0garbage 'x'", ANSI, false), "SELECT ?");
	/* kept literals */
	CHECK_STR(san("SELECT * FROM t WHERE a = 'x  y' AND b = 42 -- c", ANSI, true),
		  "SELECT * FROM t WHERE a = 'x  y' AND b = 42");
	/* a small output buffer truncates, never overflows */
	char small[12];
	size_t n = sql__sanitize("SELECT abcdefghijklmnop", 23, ANSI, false, small, sizeof(small));
	CHECK_INT(n, 11);
	CHECK_STR(small, "SELECT abcd");
}

/* No prefix of a statement ever shows a piece of its literals. */
static void test_sanitize_every_prefix_hides_values(void)
{
	const char *q = "INSERT INTO cards (holder, number, cvv, note) VALUES ('Ana Secret', "
			"4111111111111111, 0x737, E'multi\\'line') -- 'Ana Secret'";
	const char *mq = "UPDATE users SET pass = \"hunter2\", pin = 987654 WHERE mail = 'a@b.c'";
	char out[512];
	for (size_t k = 0; k <= strlen(q); k++) {
		sql__sanitize(q, k, ANSI, false, out, sizeof(out));
		CHECK(!strstr(out, "Secret") && !strstr(out, "4111") && !strstr(out, "737") &&
		      !strstr(out, "line") && !strstr(out, "Ana"));
	}
	for (size_t k = 0; k <= strlen(mq); k++) {
		sql__sanitize(mq, k, MYSQL, false, out, sizeof(out));
		CHECK(!strstr(out, "hunter") && !strstr(out, "9876") && !strstr(out, "a@b"));
	}
	sql__sanitize(q, strlen(q), ANSI, false, out, sizeof(out));
	CHECK_STR(out, "INSERT INTO cards (holder, number, cvv, note) VALUES (?, ?, ?, ?)");
}

/* Summarizes text and checks the result; what names the text in a failure. */
static void summary_of(const char *text, enum sql_dialect d, const char *op, const char *coll,
		       const char *what, const char *q)
{
	struct sql_summary s;
	sql__summarize(text, strlen(text), d, &s);
	CHECK_STR(s.operation, op);
	CHECK_STR(s.collection, coll);
	if (strcmp(s.operation, op) || strcmp(s.collection, coll))
		fprintf(stderr, "  for %s: %s\n", what, q);
}

static void summary(const char *q, enum sql_dialect d, const char *op, const char *coll)
{
	summary_of(q, d, op, coll, "the statement", q);
	/* The summary cache (db.c) summarizes the sanitized text instead: the
	 * same answer, with literals hidden or kept. */
	for (int keep = 0; keep < 2; keep++)
		summary_of(san(q, d, keep), d, op, coll, "the sanitized text of", q);
}

/* db__record_sql remembers summaries by sanitized text: a statement repeated
 * with other literals is a hit and gets the same summary; another dialect, a
 * kept literal, or a text cut at SQL_TEXT_MAX is summarized again. */
static void record(const char *q, enum sql_dialect d, const char *op, const char *coll)
{
	struct request *r = db__record_new();
	if (!r) {
		CHECK(r != NULL);
		return;
	}
	request__init(r, REQ_DB_CLIENT);
	db__record_sql(r, q, strlen(q), d, &cfg);
	CHECK_STR(request__str(r, r->db_operation), op);
	CHECK_STR(request__str(r, r->db_collection), coll);
	db__record_free(r);
}

static void test_summary_cache(void)
{
	struct db_summary_stats s0 = db__summary_stats();
	record("SELECT abalance FROM pgbench_accounts WHERE aid = 1;", ANSI, "SELECT",
	       "pgbench_accounts");
	record("SELECT abalance FROM pgbench_accounts WHERE aid = 97531;", ANSI, "SELECT",
	       "pgbench_accounts");
	record("select  abalance from pgbench_accounts /* c */ where aid = 2;", ANSI, "SELECT",
	       "pgbench_accounts"); /* other text: its own entry */
	record("SELECT abalance FROM pgbench_accounts WHERE aid = 3;", MYSQL, "SELECT",
	       "pgbench_accounts");
	record("UPDATE t SET a = 'x' WHERE id = 1", ANSI, "UPDATE", "t");
	record("UPDATE t SET a = 'y' WHERE id = 2", ANSI, "UPDATE", "t");
	struct db_summary_stats s1 = db__summary_stats();
	CHECK_INT((int)(s1.hits - s0.hits), 2);
	CHECK_INT((int)(s1.misses - s0.misses), 4);

	/* The table after the cut: summarized from the whole statement. */
	static char big[SQL_TEXT_MAX + 64];
	size_t n = 0;
	n += (size_t)snprintf(big, sizeof(big), "SELECT a");
	while (n < SQL_TEXT_MAX + 8)
		n += (size_t)snprintf(big + n, sizeof(big) - n, ", c%zu", n);
	snprintf(big + n, sizeof(big) - n, " FROM wide");
	record(big, ANSI, "SELECT", "wide");
	record(big, ANSI, "SELECT", "wide");
	cfg.keep_db_literals = true;
	record("UPDATE t SET a = 'z' WHERE id = 3", ANSI, "UPDATE", "t");
	cfg.keep_db_literals = false;
	struct db_summary_stats s2 = db__summary_stats();
	CHECK_INT((int)(s2.hits - s1.hits), 0);
	CHECK_INT((int)(s2.misses - s1.misses), 0);
}

static void test_summarize(void)
{
	summary("SELECT id, name FROM products WHERE price > 10", ANSI, "SELECT", "products");
	summary("select * from Shop.Products p join orders o on o.pid = p.id", ANSI, "SELECT",
		"Shop.Products");
	summary("SELECT * FROM \"Odd Name\".\"T\"", ANSI, "SELECT", "Odd Name.T");
	summary("SELECT * FROM `db`.`t1`", MYSQL, "SELECT", "db.t1");
	summary("SELECT EXTRACT(YEAR FROM ts) FROM events", ANSI, "SELECT", "events");
	summary("SELECT count(*) FROM (SELECT a FROM inner_t) sub", ANSI, "SELECT", "inner_t");
	summary("SELECT * FROM generate_series(1, 10)", ANSI, "SELECT", "");
	summary("SELECT 1", ANSI, "SELECT", "");
	summary("(SELECT a FROM t1) UNION (SELECT a FROM t2)", ANSI, "SELECT", "t1");
	summary("WITH recent AS (SELECT * FROM orders) SELECT * FROM recent JOIN users u ON true",
		ANSI, "SELECT", "recent");
	summary("WITH x AS (SELECT 1) INSERT INTO log SELECT * FROM x", ANSI, "INSERT", "log");
	summary("INSERT INTO orders (product_id, qty) VALUES ($1, $2)", ANSI, "INSERT", "orders");
	/* A parameter, then an E'' literal (not "$" and the number "1e", then a
	 * quote whose backslash escapes nothing, swallowing FROM t): read as
	 * the sanitizer reads it (a fuzzer's find). */
	summary("SELECT $1e'a\\'' FROM t WHERE x = 'b'", ANSI, "SELECT", "t");
	summary("INSERT IGNORE t VALUES (1)", MYSQL, "INSERT", "t");
	summary("REPLACE INTO t (a) VALUES (1)", MYSQL, "REPLACE", "t");
	summary("update ONLY accounts set x = 1", ANSI, "UPDATE", "accounts");
	summary("UPDATE LOW_PRIORITY t SET a = 1", MYSQL, "UPDATE", "t");
	summary("DELETE FROM sessions WHERE expires < now()", ANSI, "DELETE", "sessions");
	summary("CREATE TABLE IF NOT EXISTS public.items (id int)", ANSI, "CREATE", "public.items");
	summary("CREATE TEMPORARY TABLE tmp (id int)", ANSI, "CREATE", "tmp");
	summary("DROP TABLE IF EXISTS old_items", ANSI, "DROP", "old_items");
	summary("ALTER TABLE items ADD COLUMN c int", ANSI, "ALTER", "items");
	summary("TRUNCATE logs", ANSI, "TRUNCATE", "logs");
	summary("TRUNCATE TABLE ONLY logs", ANSI, "TRUNCATE", "logs");
	summary("CREATE UNIQUE INDEX idx ON items (c)", ANSI, "CREATE", "items");
	summary("CREATE VIEW v AS SELECT * FROM t", ANSI, "CREATE", "");
	summary("  /* hint */ begin", ANSI, "BEGIN", "");
	summary("SET NAMES utf8mb4", MYSQL, "SET", "");
	summary("COPY items FROM STDIN", ANSI, "COPY", "items");
	summary("", ANSI, "", "");
	summary("'not sql'", ANSI, "", "");
	summary("\x01\x02 binary", ANSI, "", "");
}

static void test_find_statement(void)
{
	CHECK_INT(sql__find_statement("SELECT 1", 8, 8), 0);
	CHECK_INT(sql__find_statement("\0\0\0\x0eselect * from t", 18, 8), 4);
	CHECK_INT(sql__find_statement("Q\0\0\0\x0e  INSERT INTO t", 19, 8), 7);
	CHECK_INT(sql__find_statement("delete(", 7, 8), -1); /* too short to tell */
	CHECK_INT(sql__find_statement("DROP TABLE x", 12, 0), 0);
	CHECK_INT(sql__find_statement("xxxxxxxxxSELECT 1", 17, 8), -1); /* too far in */
	CHECK_INT(sql__find_statement("SELECTION of things", 19, 8), -1);
	CHECK_INT(sql__find_statement("preSELECT 1", 11, 8), -1);
	/* a length byte that happens to be a letter or '$' */
	CHECK_INT(sql__find_statement("\0\0\0$SELECT 1", 14, 8), 4);
	CHECK_INT(sql__find_statement("\0\0\0ASELECT 1", 14, 8), 4);
	CHECK_INT(sql__find_statement("GET / HTTP/1.1\r\n", 16, 8), -1);
	CHECK_INT(sql__find_statement("SELECT \x01\x02\x03\x04", 11, 8), -1);
	CHECK_INT(sql__find_statement("SET a = 1", 9, 8), -1); /* not a statement keyword here */
}

/* ---- heuristic SQL through the connection tracker */

static void test_heuristic_session(void)
{
	/* A 4-byte length prefix (an unknown framing) before the SQL. */
	static const char req[] = "\0\0\0\x2bSELECT name FROM users WHERE id = 7 LIMIT 1";
	static const char resp[] = "\0\0\0\x05hello";
	for (int on = 0; on <= 1; on++) {
		cfg.heuristic_sql_detect = on;
		struct conntrack *ct = new_ct();
		uint32_t seq[2] = {100, 900};
		send_all(ct, 1, OUT, 10, seq, req, sizeof(req) - 1);
		send_all(ct, 1, IN, 20, seq, resp, 5);
		send_all(ct, 1, IN, 25, seq, resp + 5, sizeof(resp) - 6);
		send_all(ct, 1, OUT, 30, seq, "\0\0\0\x10UPDATE t SET a=1", 20);
		send_all(ct, 1, IN, 40, seq, "\0\0\0\x02ok", 6);
		send_all(ct, 1, OUT, 50, seq, "\x07\x08 binary ping",
			 13); /* not SQL: not reported */
		send_all(ct, 1, IN, 60, seq, "pong", 4);
		send_all(ct, 1, OUT, 70, seq, "DELETE FROM t", 13); /* never answered */
		close_conn(ct, 1, 80);
		if (!on) {
			CHECK_INT(nrecs, 0);
		} else {
			CHECK_INT(nrecs, 2);
			CHECK_INT(recs[0].kind, REQ_DB_CLIENT);
			CHECK_INT(recs[0].system, DB_OTHER_SQL);
			CHECK_STR(recs[0].name, "SELECT users");
			CHECK_STR(recs[0].query, "SELECT name FROM users WHERE id = ? LIMIT ?");
			CHECK_INT(recs[0].start, 10);
			CHECK_INT(recs[0].end, 20);
			CHECK_INT(recs[0].seq, 900); /* seq[OUT] */
			CHECK_STR(recs[1].name, "UPDATE t");
			CHECK_STR(recs[1].query, "UPDATE t SET a=?");
			CHECK_INT(recs[1].end, 40);
		}
		conntrack__free(ct);
	}
	/* HTTP is never taken for SQL, even with the switch on */
	cfg.heuristic_sql_detect = true;
	struct conntrack *ct = new_ct();
	uint32_t seq[2] = {1, 1};
	const char *get = "GET /?q=SELECT+1 HTTP/1.1\r\nHost: x\r\n\r\n";
	const char *ok = "HTTP/1.1 204 No Content\r\n\r\n";
	send_all(ct, 2, OUT, 10, seq, get, strlen(get));
	send_all(ct, 2, IN, 20, seq, ok, strlen(ok));
	CHECK_INT(nrecs, 1);
	CHECK_INT(recs[0].kind, REQ_HTTP_CLIENT);
	conntrack__free(ct);
	cfg.heuristic_sql_detect = false;
}

int main(void)
{
	cfg.max_path_length = 512;
	cfg.max_pending_requests = 64;
	test_sanitize();
	test_sanitize_every_prefix_hides_values();
	test_summarize();
	test_summary_cache();
	test_find_statement();
	test_heuristic_session();
	return check_done("test_sql");
}
