/* OpenTelemetry semantic conventions: the attributes of a request record,
 * shared by the trace printer and the span exporter so both say the same. */
#ifndef RASTRO_SEMCONV_H
#define RASTRO_SEMCONV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "request.h"

enum attr_type { ATTR_STRING, ATTR_INT };

struct attr {
	const char *key;
	uint16_t klen;   /* strlen(key), when the producer knows it (0: not known) */
	enum attr_type type;
	const char *str; /* ATTR_STRING */
	size_t len;
	int64_t num;     /* ATTR_INT */
};

typedef void (*attr_fn)(void *ctx, const struct attr *a);

/* Span attributes of r, in a stable order. Values are sanitised per config
 * (query values scrubbed, literals replaced). scratch holds formatted
 * strings and must stay valid while fn runs. */
void semconv__span_attributes(const struct request *r, const struct rastro_config *cfg,
			      attr_fn fn, void *ctx);

/* Span name per the conventions ("GET /users/{id}", "SELECT orders"). */
size_t semconv__span_name(const struct request *r, char *out, size_t len);
/* SPAN_KIND_SERVER (2) or SPAN_KIND_CLIENT (3), OTLP's numbering. */
int semconv__span_kind(const struct request *r);
/* Whether the span's status is an error, per the conventions for its kind. */
bool semconv__is_error(const struct request *r);
/* error.type value of r, or NULL when it did not fail. */
const char *semconv__error_type(const struct request *r, char *buf, size_t len);
/* A failed span's status description: the server's own error message where
 * it was kept (attributes.keep_db_literals: it may quote values), else the
 * error type. NULL when the request did not fail; *n is its length. */
const char *semconv__status_message(const struct request *r, char *buf, size_t len, size_t *n);
/* The name of a gRPC status code ("NOT_FOUND"), or its number as text. */
const char *semconv__grpc_status_name(int code, char *buf, size_t len);

/* Text form of an address: IPv4 (also for IPv4-mapped IPv6) or IPv6. */
void semconv__format_addr(const uint8_t addr[16], char *out, size_t len);
/* url.query with every value replaced by "?" (keys kept). */
size_t semconv__scrub_query(const char *q, size_t len, char *out, size_t cap);
/* "_OTHER" for methods outside RFC 9110 + PATCH, else the method. */
const char *semconv__method(const struct request *r);
/* Whether r is a server-side operation. */
bool semconv__is_server(const struct request *r);

#endif
