/* libFuzzer target: the SQL sanitizer and summary in both dialects, the
 * statement finder, and the heuristic SQL session fed through the
 * connection tracker as syscall events (see fuzz_db.h). */
#include "fuzz_db.h"
#include "protocols/sql.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct rastro_config cfg = {.max_path_length = 64, .max_pending_requests = 8,
					   .heuristic_sql_detect = true};
	const char *q = (const char *)data;
	char out[SQL_TEXT_MAX], small[16];
	struct sql_summary s;
	for (int d = 0; d <= 1; d++) {
		size_t n = sql__sanitize(q, size, d, false, out, sizeof(out));
		if (n >= sizeof(out) || out[n] != '\0')
			abort();
		n = sql__sanitize(q, size, d, true, small, sizeof(small));
		if (n >= sizeof(small))
			abort();
		sql__summarize(q, size, d, &s);
		if (strlen(s.operation) >= sizeof(s.operation) ||
		    strlen(s.collection) >= sizeof(s.collection))
			abort();
		/* The summary cache (db.c) summarizes the sanitized text: it must
		 * read as the statement does, unless the text was cut or lexes
		 * otherwise once sanitized (garbage such as "--" then a comment
		 * becomes "-- ", a comment: then sanitizing it again changes it). */
		n = sql__sanitize(q, size, d, false, out, sizeof(out));
		static char again[SQL_TEXT_MAX];
		if (n + 1 < sizeof(out) &&
		    sql__sanitize(out, n, d, false, again, sizeof(again)) == n &&
		    !memcmp(out, again, n)) {
			struct sql_summary t;
			sql__summarize(out, n, d, &t);
			if (strcmp(s.operation, t.operation) || strcmp(s.collection, t.collection))
				abort();
		}
	}
	int off = sql__find_statement(q, size, 8);
	if (off > 8 || (off >= 0 && (size_t)off >= size))
		abort();
	/* The first two bytes: a statement prefix for the session, or not. */
	if (size && data[0] & 1)
		fuzz_drive(&cfg, data + 1, size - 1, "\0\0\0\x10SELECT * FROM t", 20,
			   RASTRO_DIR_EGRESS, RASTRO_ROLE_CLIENT);
	else
		fuzz_drive(&cfg, data, size, NULL, 0, 0, RASTRO_ROLE_UNKNOWN);
	return 0;
}
