/* PostgreSQL frontend/backend protocol 3 (the wire protocol since 7.4):
 * pure functions over message bodies, no I/O, no globals, no allocation.
 * Bodies may be cut short (a capture limit): parsers take what is there. */
#ifndef RASTRO_POSTGRES_H
#define RASTRO_POSTGRES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "protocols/db.h"

/* Request codes of untyped startup-phase messages. */
#define PG_CANCEL_REQUEST_CODE 80877102u
#define PG_SSL_REQUEST_CODE 80877103u
#define PG_GSSENC_REQUEST_CODE 80877104u

enum pg_untyped {
	PG_UNTYPED_NONE = 0,
	PG_UNTYPED_STARTUP, /* protocol 3.x StartupMessage */
	PG_UNTYPED_SSL,     /* SSLRequest */
	PG_UNTYPED_GSSENC,  /* GSSENCRequest */
	PG_UNTYPED_CANCEL,  /* CancelRequest */
};

/* What an untyped message is, from its length field and code (the first 8
 * bytes); total is the length the sender moved, which must match. */
enum pg_untyped pg__untyped_kind(const char *buf, size_t len, size_t total);

/* Message types each side sends (typed messages). */
bool pg__frontend_type(char t);
bool pg__backend_type(char t);

/* Whether bytes a client sent read as whole typed frontend messages with at
 * least one that only PostgreSQL would send (a Query with text, a Parse with
 * an exact layout). captured of total bytes were copied. Used for
 * connections opened before rastro, whose startup was never seen. */
bool pg__looks_like_frontend(const char *buf, size_t captured, size_t total);

/* Query ('Q'): the SQL text, without its terminating NUL. */
void pg__parse_query(const char *body, size_t len, struct db_slice *sql);
/* Parse ('P'): statement name and SQL. False when the name is not there. */
bool pg__parse_parse(const char *body, size_t len, struct db_slice *name, struct db_slice *sql);
/* Bind ('B'): portal and statement names. */
bool pg__parse_bind(const char *body, size_t len, struct db_slice *portal, struct db_slice *stmt);
/* Execute ('E'): portal name. */
bool pg__parse_execute(const char *body, size_t len, struct db_slice *portal);
/* Close ('C') and Describe ('D'): 'S' (statement) or 'P' (portal), name. */
bool pg__parse_close(const char *body, size_t len, char *what, struct db_slice *name);
/* StartupMessage body after the length: protocol code, then name/value
 * pairs; user and database when present. */
bool pg__parse_startup(const char *body, size_t len, struct db_slice *user,
		       struct db_slice *database);

struct pg_error {
	struct db_slice severity; /* V (non-localized) or S */
	struct db_slice code;     /* SQLSTATE */
	struct db_slice message;  /* M */
};
/* ErrorResponse ('E') / NoticeResponse ('N') fields. False without a code. */
bool pg__parse_error(const char *body, size_t len, struct pg_error *out);

/* Whether the bytes end with a ReadyForQuery message (the end of a reply). */
bool pg__ends_with_ready(const char *buf, size_t len);

#endif
