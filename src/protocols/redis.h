/* Redis serialization protocol, RESP2 and RESP3: an incremental reader of
 * values (a request is an array of bulk strings; a reply is any value),
 * fed bytes in order, that can skip bytes the kernel did not copy inside
 * bulk strings. No I/O, no globals, no allocation. */
#ifndef RASTRO_REDIS_H
#define RASTRO_REDIS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define REDIS_ERROR (-1)
#define REDIS_MAX_DEPTH 32
#define REDIS_ARG_MAX 32   /* bytes kept of each of the first arguments */
#define REDIS_ARGS_KEPT 2  /* command name and its first argument */
#define REDIS_LINE_MAX 64  /* bytes kept of a line (simple string, error, header) */

struct redis_reader {
	/* state of the value being read */
	uint8_t state;
	uint8_t depth;
	bool cr;            /* a CR ended the previous byte of a line */
	char type;          /* type byte of the current line */
	uint16_t line_len;  /* bytes kept of the current line */
	char line[REDIS_LINE_MAX];
	uint64_t bulk_left; /* bulk bytes + CRLF still to come */
	int64_t left[REDIS_MAX_DEPTH]; /* elements left in each open aggregate */
	int64_t count0;     /* elements of the top-level aggregate */
	int kept_arg;       /* argument being kept (-1: none) */

	/* what the last (or current) top-level value was */
	char top;           /* its type byte: '*', '+', '-', '$', '>' ... */
	int64_t elements;   /* top-level aggregate's element count (-1: null) */
	bool bulk_elements; /* every top-level element read so far was a bulk string */
	uint8_t arg_len[REDIS_ARGS_KEPT];
	char arg[REDIS_ARGS_KEPT][REDIS_ARG_MAX];
	bool arg_cut[REDIS_ARGS_KEPT];
	uint16_t err_len;   /* error text ('-' line or '!' bulk), first bytes */
	char err[REDIS_LINE_MAX];
};

void redis__reader_init(struct redis_reader *r);
/* Whether the reader is between top-level values. */
bool redis__between(const struct redis_reader *r);
/* Reads up to the end of the current top-level value. Returns bytes
 * consumed (*done set when the value ended), or REDIS_ERROR. */
int64_t redis__feed(struct redis_reader *r, const char *buf, size_t len, bool *done);
/* Skips n bytes that were not copied. Only possible inside bulk string
 * data; false otherwise (the framing is lost). *done as for feed. */
bool redis__skip(struct redis_reader *r, uint64_t n, bool *done);

/* Whether a chunk a client sent starts like a RESP command: an array of
 * bulk strings whose first is a command name. 1: yes, 0: no, -1: too short
 * to tell. */
int redis__looks_like_command(const char *buf, size_t captured, size_t total);
/* Whether name (any case) is a common Redis command. A reply array of bulk
 * strings reads like a command; on a connection whose side is unknown (a
 * traced Redis server's, opened before rastro) the name tells them apart. */
bool redis__known_command(const char *name, size_t len);

#endif
