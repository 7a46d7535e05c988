/* A request record: one client or server operation seen on a connection,
 * produced by a protocol parser and consumed by the printer, metrics and
 * traces. Strings live in the record's own arena: no allocation per record. */
#ifndef RASTRO_REQUEST_H
#define RASTRO_REQUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bpf/rastro.h"

enum request_kind {
	REQ_HTTP_SERVER = 0,
	REQ_HTTP_CLIENT,
	REQ_GRPC_SERVER,
	REQ_GRPC_CLIENT,
	REQ_DB_CLIENT,
	REQ__COUNT,
};

enum db_system {
	DB_NONE = 0,
	DB_POSTGRESQL,
	DB_MYSQL,
	DB_MARIADB,
	DB_REDIS,
	DB_OTHER_SQL,
};

#define REQ_UNRESOLVED_METHOD 0x01
#define REQ_UNRESOLVED_PATH 0x02       /* url.path, url.full, rpc.method */
#define REQ_UNRESOLVED_STATUS 0x04     /* http.response.status_code */
#define REQ_UNRESOLVED_RPC_STATUS 0x08 /* rpc.response.status_code */
#define REQ_UNRESOLVED_KIND 0x10       /* whether it was gRPC (content-type) */

/* A string stored in the record's arena; len 0 and off 0 = absent. */
struct rstr {
	uint16_t off, len;
};

#define REQUEST_ARENA 4096

struct service;

struct request {
	enum request_kind kind;
	const struct service *service; /* set by the connection tracker */
	uint32_t pid, tid;
	uint64_t conn_id;
	struct rastro_tuple tuple; /* local = the traced process's side */

	uint64_t start_ns, end_ns; /* CLOCK_MONOTONIC */

	/* HTTP (also HTTP/2 and gRPC) */
	struct rstr method;      /* as sent; see method_known */
	bool method_known;       /* one of the RFC 9110 methods (else _OTHER) */
	struct rstr path;        /* url.path, truncated at http.max_path_length */
	bool path_truncated;
	struct rstr query;       /* url.query without '?', raw */
	struct rstr route;       /* http.route, set by the routes stage */
	struct rstr host;        /* Host header / :authority */
	struct rstr user_agent;
	struct rstr content_type;
	struct rstr traceparent;
	struct rstr tracestate;
	int status;              /* 0 = no response */
	uint8_t http_version;    /* 10, 11, 20 */
	uint64_t request_body_bytes;
	uint64_t response_body_bytes;
	bool has_request_body_size;
	bool has_response_body_size;
	/* REQ_UNRESOLVED_*: fields absent because they could not be decoded (an
	 * HTTP/2 header block referred to table entries never seen), not because
	 * the peer did not send them. */
	uint8_t unresolved;

	/* gRPC */
	struct rstr rpc_method;  /* package.Service/Method */
	int grpc_status;         /* -1 = none */

	/* database */
	enum db_system db_system;
	struct rstr db_operation;  /* SELECT, GET, ... */
	struct rstr db_collection; /* table / key space */
	struct rstr db_namespace;  /* database name, Redis db index */
	struct rstr db_query;      /* sanitized statement text */
	struct rstr db_status;     /* SQLSTATE / error code */
	struct rstr error_message; /* short, sanitized */

	/* Outcome */
	struct rstr error_type;    /* error.type when the operation failed */

	bool started;  /* conn__start ran */

	/* Trace context, filled by the traces stage */
	uint8_t trace_id[16];
	uint8_t span_id[8];
	void *trace_ctx; /* the traces stage's context; valid while it has span_id */
	uint8_t parent_span_id[8];
	uint8_t trace_flags;
	bool has_parent;
	bool parent_remote; /* the parent span is another process's */
	bool sampled;

	/* Correlation keys */
	uint32_t request_seq;  /* TCP seq of the request's first byte */
	bool request_seq_valid;

	uint16_t arena_used;
	char arena[REQUEST_ARENA];
};

/* Starts an empty record of the given kind. */
void request__init(struct request *r, enum request_kind kind);
/* Copies len bytes into the arena (truncating when full); returns the rstr. */
struct rstr request__store(struct request *r, const char *s, size_t len);
static inline const char *request__str(const struct request *r, struct rstr s)
{
	return s.len ? r->arena + s.off : "";
}
static inline bool request__has(struct rstr s)
{
	return s.len != 0;
}

#endif
