/* Redis RESP2/RESP3: the reader, and the session through the connection
 * tracker with every input split at every byte boundary. */
#include "db_harness.h"
#include "protocols/redis.h"

static void send_str(struct conntrack *ct, uint64_t conn, int dir, uint64_t ts, uint32_t *seq,
		     const char *s)
{
	send_all(ct, conn, dir, ts, seq, s, strlen(s));
}

/* Reads buf as a sequence of top-level values; returns how many, or -1. */
static int count_values(struct redis_reader *r, const char *buf, size_t len)
{
	int n = 0;
	while (len) {
		bool done;
		int64_t used = redis__feed(r, buf, len, &done);
		if (used < 0)
			return -1;
		buf += used;
		len -= (size_t)used;
		n += done;
	}
	return n;
}

static void test_reader_every_split(void)
{
	/* RESP2 and RESP3 values, nested, with nulls, an attribute and a push */
	static const char replies[] = "+OK\r\n"
				      "-ERR wrong number of arguments\r\n"
				      ":1000\r\n"
				      "$5\r\nhello\r\n"
				      "$-1\r\n"
				      "*-1\r\n"
				      "*0\r\n"
				      "*3\r\n:1\r\n*2\r\n$1\r\na\r\n+b\r\n$0\r\n\r\n"
				      "%2\r\n+k1\r\n:1\r\n+k2\r\n~2\r\n#t\r\n,1.5\r\n"
				      "_\r\n"
				      "|1\r\n+ttl\r\n:3600\r\n"
				      ">3\r\n+message\r\n+ch\r\n+hi\r\n"
				      "!21\r\nSYNTAX invalid syntax\r\n"
				      "=15\r\ntxt:Some string\r\n"
				      "(3492890328409238509324850943850943825024385\r\n";
	size_t len = sizeof(replies) - 1;
	for (size_t k = 0; k <= len; k++) {
		struct redis_reader r;
		redis__reader_init(&r);
		int a = count_values(&r, replies, k);
		int b = count_values(&r, replies + k, len - k);
		CHECK(a >= 0 && b >= 0);
		CHECK_INT(a + b, 15);
		CHECK(redis__between(&r));
	}
	/* the error's text is kept for its prefix */
	struct redis_reader r;
	bool done;
	redis__reader_init(&r);
	CHECK_INT(redis__feed(&r, "-WRONGTYPE Operation\r\n", 22, &done), 22);
	CHECK(done);
	CHECK_INT(r.top, '-');
	CHECK_MEM(r.err, r.err_len, "WRONGTYPE Operation");
	/* a command: its name and first argument */
	const char *cmd = "*3\r\n$3\r\nset\r\n$4\r\nuser\r\n$6\r\nsecret\r\n";
	redis__reader_init(&r);
	CHECK_INT(redis__feed(&r, cmd, strlen(cmd), &done), (int64_t)strlen(cmd));
	CHECK(done);
	CHECK_INT(r.elements, 3);
	CHECK(r.bulk_elements);
	CHECK_MEM(r.arg[0], r.arg_len[0], "set");
	CHECK_MEM(r.arg[1], r.arg_len[1], "user");
	/* skipping bytes not copied inside a bulk string, never elsewhere */
	redis__reader_init(&r);
	CHECK_INT(redis__feed(&r, "$10\r\nab", 7, &done), 7);
	CHECK(redis__skip(&r, 6, &done));
	CHECK(!done);
	CHECK(redis__skip(&r, 4, &done)); /* the rest and CRLF */
	CHECK(done);
	CHECK(!redis__skip(&r, 1, &done));
	redis__reader_init(&r);
	CHECK_INT(redis__feed(&r, "+OK", 3, &done), 3);
	CHECK(!redis__skip(&r, 2, &done)); /* a line cannot be skipped */
	/* not RESP */
	redis__reader_init(&r);
	CHECK_INT(redis__feed(&r, "GET / HTTP/1.1\r\n", 16, &done), REDIS_ERROR);
	redis__reader_init(&r);
	CHECK_INT(redis__feed(&r, "+OK\n", 4, &done), REDIS_ERROR);

	CHECK_INT(redis__looks_like_command(cmd, strlen(cmd), strlen(cmd)), 1);
	CHECK_INT(redis__looks_like_command(cmd, 6, 6), -1); /* too short to tell */
	CHECK_INT(redis__looks_like_command("*1\r\n$4\r\n1234\r\n", 14, 14), 0);
	CHECK_INT(redis__looks_like_command("PING\r\n", 6, 6), 0);
	CHECK(redis__known_command("hgetall", 7));
	CHECK(redis__known_command("GET", 3));
	CHECK(!redis__known_command("GETX", 4));
	CHECK(!redis__known_command("foo", 3));
}

static void test_pipeline_every_split(void)
{
	/* three commands in one write; the replies arrive split anywhere */
	static const char set[] = "*3\r\n$3\r\nSET\r\n$4\r\nuser\r\n$5\r\nalice\r\n";
	static const char cmds[] = "*3\r\n$3\r\nSET\r\n$4\r\nuser\r\n$5\r\nalice\r\n"
				   "*2\r\n$4\r\nINCR\r\n$4\r\nuser\r\n"
				   "*2\r\n$3\r\nget\r\n$4\r\nuser\r\n";
	static const char r1[] = "+OK\r\n",
			  r2[] = "-ERR value is not an integer or out of range\r\n";
	static const char replies[] = "+OK\r\n"
				      "-ERR value is not an integer or out of range\r\n"
				      "$5\r\nalice\r\n";
	size_t rl = sizeof(replies) - 1;
	for (size_t j = 0; j <= rl; j++) {
		for (size_t k = 0; k <= rl; k += 1 + j % 5) {
			if (k && k < j)
				continue;
			struct conntrack *ct = new_ct();
			uint32_t seq[2] = {1, 100};
			send_all(ct, 1, OUT, 10, seq, cmds, sizeof(cmds) - 1);
			/* up to three reads: [0, j), [j, k), [k, rl) */
			size_t cuts[4] = {0, j, k > j ? k : j, rl};
			for (int i = 0; i < 3; i++)
				if (cuts[i + 1] > cuts[i])
					send_all(ct, 1, IN, 20 + (uint64_t)i, seq,
						 replies + cuts[i], cuts[i + 1] - cuts[i]);
			CHECK_INT(nrecs, 3);
			if (nrecs == 3) {
				CHECK_STR(recs[0].name, "SET");
				CHECK_STR(recs[0].query, "SET ? ?");
				CHECK_STR(recs[0].ns, "0");
				CHECK_STR(recs[1].name, "INCR");
				CHECK_STR(recs[1].status, "ERR");
				CHECK_STR(recs[1].err, "ERR");
				CHECK_STR(recs[2].name, "GET");
				CHECK_STR(recs[2].query, "GET ?");
				CHECK_STR(recs[2].err, "");
				for (int i = 0; i < 3; i++) {
					CHECK_INT(recs[i].start, 10);
					CHECK_INT(recs[i].system, DB_REDIS);
				}
				/* each ends with the read that completed its reply */
				size_t ends[3] = {sizeof(r1) - 1, sizeof(r1) + sizeof(r2) - 2, rl};
				for (int i = 0; i < 3; i++) {
					int read = ends[i] <= cuts[1]	? 0
						   : ends[i] <= cuts[2] ? 1
									: 2;
					CHECK_INT(recs[i].end, 20 + (uint64_t)read);
				}
				CHECK_INT(recs[1].seq, 100 + sizeof(set) - 1);
			}
			conntrack__free(ct);
		}
	}
}

static void test_commands_split_and_namespace(void)
{
	static const char cmd[] = "*2\r\n$6\r\nSELECT\r\n$1\r\n3\r\n";
	for (size_t k = 0; k <= sizeof(cmd) - 1; k++) {
		struct conntrack *ct = new_ct();
		uint32_t seq[2] = {1, 1};
		send_split(ct, 2, OUT, 10, seq, cmd, sizeof(cmd) - 1, k);
		send_str(ct, 2, IN, 20, seq, "+OK\r\n");
		send_str(ct, 2, OUT, 30, seq, "*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
		send_str(ct, 2, IN, 40, seq, "$-1\r\n");
		send_str(ct, 2, OUT, 50, seq, "*2\r\n$6\r\nSELECT\r\n$2\r\n99\r\n");
		send_str(ct, 2, IN, 60, seq, "-ERR DB index is out of range\r\n");
		send_str(ct, 2, OUT, 70, seq, "*1\r\n$4\r\nPING\r\n");
		send_str(ct, 2, IN, 80, seq, "+PONG\r\n");
		CHECK_INT(nrecs, 4);
		if (nrecs == 4) {
			CHECK_STR(recs[0].name, "SELECT");
			CHECK_STR(recs[0].ns, "3");
			CHECK_INT(recs[0].start, 10);
			CHECK_INT(recs[0].end, 20);
			CHECK_STR(recs[1].ns, "3");
			CHECK_STR(recs[2].err, "ERR");
			CHECK_STR(recs[3].name, "PING");
			CHECK_STR(recs[3].query, "PING");
			CHECK_STR(recs[3].ns, "3"); /* the failed SELECT changed nothing */
		}
		conntrack__free(ct);
	}
}

static void test_resp3_push_and_subscribe(void)
{
	struct conntrack *ct = new_ct();
	uint32_t seq[2] = {1, 1};
	/* a traced Redis server's connection opened before rastro: its replies
	 * read like commands, but "alice" is no command */
	const char *reply = "*2\r\n$5\r\nalice\r\n$3\r\nbob\r\n";
	event_role(ct, 9, OUT, 1, seq, reply, (uint32_t)strlen(reply), (uint32_t)strlen(reply),
		   RASTRO_ROLE_UNKNOWN);
	event_role(ct, 9, IN, 2, seq, "*1\r\n$4\r\nPING\r\n", 14, 14, RASTRO_ROLE_UNKNOWN);
	event_role(ct, 9, OUT, 3, seq, reply, (uint32_t)strlen(reply), (uint32_t)strlen(reply),
		   RASTRO_ROLE_UNKNOWN);
	event_role(ct, 9, IN, 4, seq, "*1\r\n$4\r\nPING\r\n", 14, 14, RASTRO_ROLE_UNKNOWN);
	CHECK_INT(nrecs, 0);
	/* a connection open before rastro: database unknown */
	const char *hello = "*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n";
	event_role(ct, 3, OUT, 10, seq, hello, (uint32_t)strlen(hello), (uint32_t)strlen(hello),
		   RASTRO_ROLE_UNKNOWN);
	const char *map = "%1\r\n+server\r\n+redis\r\n";
	event_role(ct, 3, IN, 11, seq, map, (uint32_t)strlen(map), (uint32_t)strlen(map),
		   RASTRO_ROLE_UNKNOWN);
	/* an invalidation push arrives before the reply: it is no reply */
	const char *get = "*2\r\n$3\r\nGET\r\n$1\r\nk\r\n";
	send_all(ct, 3, OUT, 20, seq, get, strlen(get));
	const char *push =
	    ">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n|1\r\n+a\r\n+b\r\n$1\r\nv\r\n";
	send_all(ct, 3, IN, 21, seq, push, strlen(push));
	const char *sub = "*2\r\n$9\r\nSUBSCRIBE\r\n$2\r\nch\r\n";
	send_all(ct, 3, OUT, 30, seq, sub, strlen(sub));
	const char *conf = ">3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n";
	send_all(ct, 3, IN, 31, seq, conf, strlen(conf));
	/* from now on the server pushes messages: nothing is paired */
	const char *msg = ">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n";
	send_all(ct, 3, IN, 40, seq, msg, strlen(msg));
	send_str(ct, 3, OUT, 50, seq, "*1\r\n$4\r\nPING\r\n");
	send_all(ct, 3, IN, 51, seq, msg, strlen(msg));
	close_conn(ct, 3, 60);
	CHECK_INT(nrecs, 3);
	CHECK_STR(recs[0].name, "HELLO");
	CHECK_STR(recs[0].ns, "");
	CHECK_STR(recs[1].name, "GET");
	CHECK_INT(recs[1].end, 21);
	CHECK_STR(recs[2].name, "SUBSCRIBE");
	CHECK_INT(recs[2].end, 31);
	conntrack__free(ct);
}

/* A 1 MiB value in a SET, a large reply read 16 KiB at a time with 4 KiB
 * copied: pairing holds. */
static void test_large_values(void)
{
	struct conntrack *ct = new_ct();
	uint32_t seq[2] = {1, 1};
	size_t n = 1 << 20;
	char *big = malloc(n + 64);
	int h = snprintf(big, 64, "*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$%zu\r\n", n);
	memset(big + h, 'v', n);
	memcpy(big + h + n, "\r\n", 2);
	size_t total = (size_t)h + n + 2;
	event(ct, 4, OUT, 10, seq, big, 4096, (uint32_t)total);
	send_str(ct, 4, IN, 11, seq, "+OK\r\n");
	send_str(ct, 4, OUT, 20, seq, "*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n");
	h = snprintf(big, 64, "$%zu\r\n", n);
	memset(big + h, 'v', n);
	memcpy(big + h + n, "\r\n", 2);
	total = (size_t)h + n + 2;
	uint64_t ts = 30;
	for (size_t off = 0; off < total; off += 16384, ts++) {
		size_t len = total - off < 16384 ? total - off : 16384;
		event(ct, 4, IN, ts, seq, big + off, (uint32_t)(len < 4096 ? len : 4096),
		      (uint32_t)len);
	}
	send_str(ct, 4, OUT, 500, seq, "*1\r\n$4\r\nPING\r\n");
	send_str(ct, 4, IN, 501, seq, "+PONG\r\n");
	free(big);
	CHECK_INT(nrecs, 3);
	CHECK_STR(recs[0].name, "SET");
	CHECK_INT(recs[0].end, 11);
	CHECK_STR(recs[1].name, "GET");
	CHECK_INT(recs[1].end, ts - 1);
	CHECK_STR(recs[2].name, "PING");
	CHECK_INT(recs[2].end, 501);
	CHECK_INT(counter(ct, CONN_PARSE_ERRORS), 0);

	/* a reply whose framing is lost mid-way: it ends when the client speaks */
	send_str(ct, 4, OUT, 600, seq, "*2\r\n$6\r\nLRANGE\r\n$1\r\nl\r\n");
	event(ct, 4, IN, 601, seq, "*3\r\n$1\r\na\r\n", 11, 40000);
	event(ct, 4, IN, 602, seq, "zzzz", 4, 30000);
	send_str(ct, 4, OUT, 700, seq, "*1\r\n$4\r\nPING\r\n");
	CHECK_INT(nrecs, 4);
	CHECK_STR(recs[3].name, "LRANGE");
	CHECK_INT(recs[3].end, 602);
	CHECK_STR(recs[3].err, "");
	send_str(ct, 4, IN, 701, seq, "+PONG\r\n");
	CHECK_INT(nrecs, 5);
	CHECK_INT(recs[4].end, 701);
	/* unanswered at close */
	send_str(ct, 4, OUT, 800, seq, "*2\r\n$5\r\nBLPOP\r\n$1\r\nq\r\n");
	close_conn(ct, 4, 900);
	CHECK_INT(nrecs, 6);
	CHECK_STR(recs[5].err, "no_response");
	conntrack__free(ct);
}

static void test_keep_literals_and_overflow(void)
{
	cfg.keep_db_literals = true;
	struct conntrack *ct = new_ct();
	uint32_t seq[2] = {1, 1};
	const char *set = "*3\r\n$3\r\nSET\r\n$7\r\nuser:42\r\n$6\r\nsecret\r\n";
	send_all(ct, 5, OUT, 10, seq, set, strlen(set));
	send_str(ct, 5, IN, 11, seq, "+OK\r\n");
	CHECK_INT(nrecs, 1);
	CHECK_STR(recs[0].query, "SET user:42 ?"); /* the key, never the value */
	conntrack__free(ct);
	cfg.keep_db_literals = false;

	/* more pipelined commands than tracked: the extra ones keep their place */
	cfg.max_pending_requests = 4;
	ct = new_ct();
	seq[0] = seq[1] = 1;
	struct buf cmds = {0}, replies = {0};
	for (int i = 0; i < 10; i++) {
		buf_str(&cmds, "*2\r\n$4\r\nINCR\r\n$1\r\nc\r\n");
		char r[16];
		snprintf(r, sizeof(r), ":%d\r\n", i + 1);
		buf_str(&replies, r);
	}
	send_all(ct, 6, OUT, 10, seq, cmds.p, cmds.len);
	send_all(ct, 6, IN, 20, seq, replies.p, replies.len);
	send_str(ct, 6, OUT, 30, seq, "*1\r\n$4\r\nPING\r\n");
	send_str(ct, 6, IN, 40, seq, "-ERR x\r\n");
	CHECK_INT(nrecs, 5);
	CHECK_INT(counter(ct, CONN_LOST_PIPELINE_OVERFLOW), 6);
	CHECK_STR(recs[4].name, "PING");
	CHECK_STR(recs[4].err, "ERR");
	CHECK_INT(recs[4].start, 30);
	conntrack__free(ct);
	buf_free(&cmds);
	buf_free(&replies);
	cfg.max_pending_requests = 64;
}

int main(void)
{
	cfg.max_path_length = 512;
	cfg.max_pending_requests = 64;
	test_reader_every_split();
	test_pipeline_every_split();
	test_commands_split_and_namespace();
	test_resp3_push_and_subscribe();
	test_large_values();
	test_keep_literals_and_overflow();
	return check_done("test_redis");
}
