/* The interface between the connection tracker and protocol parsers. A
 * parser sees the byte stream of one connection, both directions in order,
 * and emits request records through conn__emit. */
#ifndef RASTRO_PROTO_H
#define RASTRO_PROTO_H

#include <stdbool.h>
#include <stdint.h>

#include "bpf/rastro.h"
#include "config/config.h"
#include "request.h"

struct conn;

/* One socket syscall's worth of bytes. */
struct chunk {
	uint8_t dir;          /* enum rastro_direction */
	uint64_t ts;          /* CLOCK_MONOTONIC ns at the syscall's return */
	uint32_t tid;
	uint32_t seq;         /* TCP sequence number of data[0] */
	const char *data;     /* the first `captured` bytes moved */
	uint32_t captured;
	uint32_t bytes;       /* bytes moved; bytes - captured were not copied */
	bool gap;             /* bytes were lost before this chunk in this direction */
};

enum proto_verdict {
	PROTO_NO = 0,   /* not this protocol */
	PROTO_MAYBE,    /* cannot tell yet: ask again with the next chunk */
	PROTO_YES,
};

struct proto_ops {
	const char *name;
	/* Looks at a chunk of a connection whose protocol is not known yet. */
	enum proto_verdict (*detect)(const struct conn *c, const struct chunk *ch);
	/* Creates the parser state; the chunk passed to detect comes next. */
	void *(*open)(struct conn *c, const struct chunk *first);
	void (*data)(void *state, struct conn *c, const struct chunk *ch);
	/* The connection ended (FIN sent or socket closed) at ts. */
	void (*close)(void *state, struct conn *c, uint64_t ts);
	void (*free)(void *state);
};

/* Facts about the connection for parsers. */
uint8_t conn__role_hint(const struct conn *c);
const struct rastro_config *conn__config(const struct conn *c);
/* Tells the pipeline a request began (its head was parsed): fills service,
 * pid, tuple and conn_id, and gives it its trace context (span id, parent:
 * the request its thread is serving, or the client span at the other end of
 * the connection). Call it with start_ns, tid and request_seq set, before any
 * later request of the same connection starts. */
void conn__start(struct conn *c, struct request *r);
/* Hands a finished record to the pipeline (calls conn__start first if the
 * parser did not). The record is not kept: consumers copy what they need. */
void conn__emit(struct conn *c, struct request *r);
enum conn_counter {
	CONN_LOST_PIPELINE_OVERFLOW = 0, /* requests reported early: too many awaiting a response */
	CONN_LOST_EVENTS,                /* requests dropped because events were lost */
	CONN_LOST_NO_MEMORY,
	CONN_PARSE_ERRORS,               /* times a parser lost track of a stream */
	CONN__COUNTERS,
};
/* Counts what a parser could not report, for self-metrics. */
void conn__count(struct conn *c, enum conn_counter which, uint64_t n);
/* Hands the connection over to another protocol (an HTTP/1.1 upgrade), from
 * inside proto->data: `to` takes over with `state` (made by its own
 * constructor) from byte `offset` of the chunk being parsed, which it is
 * fed. The current state is freed, without close, once data() returns. */
void conn__switch_protocol(struct conn *c, const struct proto_ops *to, void *state,
			   uint32_t offset);
/* Nothing more on this connection is for its protocol (HTTP/1's 101 to
 * WebSocket): its later chunks are ignored, and the kernel is asked to stop
 * sending them. The protocol's close still runs at the connection's end. */
void conn__ignore_rest(struct conn *c);

/* Protocols, in detection order. */
extern const struct proto_ops http2_proto;
extern const struct proto_ops http1_proto;
extern const struct proto_ops postgres_proto;
extern const struct proto_ops mysql_proto;
extern const struct proto_ops redis_proto;
extern const struct proto_ops sql_heuristic_proto; /* last: any SQL text */

/* HTTP/2 state for a connection upgraded from HTTP/1.1 to h2c: `upgrade` is
 * the request that asked for it (it becomes stream 1), requests_dir the
 * direction requests flow in (RASTRO_DIR_*). NULL when out of memory. */
void *http2__open_upgraded(struct conn *c, const struct request *upgrade, int requests_dir);

#endif
