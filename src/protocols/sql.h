/* SQL text as database spans show it: literals replaced by "?", the operation
 * (first keyword) and the collection (main table). Pure functions over
 * (buf, len): no I/O, no globals, no allocation. They never fail: text that
 * is not SQL yields an empty summary. */
#ifndef RASTRO_SQL_H
#define RASTRO_SQL_H

#include <stdbool.h>
#include <stddef.h>

enum sql_dialect {
	SQL_DIALECT_ANSI = 0, /* PostgreSQL and unknown servers: "x" is an identifier */
	SQL_DIALECT_MYSQL,    /* "x" is a string, `x` an identifier, \ escapes, # comments */
};

/* Longest db.query.text kept, in bytes. */
#define SQL_TEXT_MAX 2048

/* Writes q to out (NUL-terminated, at most cap - 1 bytes) with whitespace
 * runs collapsed to one space and, unless keep_literals, every literal
 * (string, number, hex/bit string, dollar-quoted body, TRUE/FALSE) replaced
 * by "?" and comments removed. Text that was cut before its end (a capture
 * limit) is safe: an unterminated literal becomes "?". The text ends at the
 * first NUL byte. Returns the length written. */
size_t sql__sanitize(const char *q, size_t len, enum sql_dialect d, bool keep_literals, char *out,
		     size_t cap);

#define SQL_OPERATION_MAX 24
#define SQL_COLLECTION_MAX 128

struct sql_summary {
	char operation[SQL_OPERATION_MAX];   /* SELECT, INSERT, ... upper-case; "" when none */
	char collection[SQL_COLLECTION_MAX]; /* schema.table without quotes; "" when none */
};

/* The statement's operation and the table it works on: FROM / JOIN for
 * SELECT (the outermost one), INTO for INSERT, UPDATE's table, DELETE FROM,
 * TABLE for CREATE/DROP/ALTER/TRUNCATE, ON for CREATE INDEX. WITH ... picks
 * the statement after the common table expressions. The text ends at the
 * first NUL byte, as for sql__sanitize. */
void sql__summarize(const char *q, size_t len, enum sql_dialect d, struct sql_summary *out);

/* Whether buf holds an SQL statement starting at most max_offset bytes in
 * (framing of an unknown protocol may come first): one of the statement
 * keywords SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, ALTER, TRUNCATE,
 * REPLACE, MERGE, UPSERT, WITH, followed by white space or "(" and printable
 * text. Returns the offset of the keyword or -1. */
int sql__find_statement(const char *buf, size_t len, size_t max_offset);

#endif
