/* Trace context of every request: span ids, parents and sampling.
 *
 * A request gets its span id and its parent when it begins (traces__start):
 *   1. an incoming W3C traceparent header (validated) names the parent;
 *   2. else a SERVER request whose connection's other end is a CLIENT request
 *      of another traced process on this host (same TCP connection, same
 *      TCP sequence number) is that client span's child;
 *   3. else a CLIENT or database request is the child of the SERVER request
 *      its thread is serving;
 *   4. else it starts a new trace.
 * Trace ids and sampling are resolved when it finishes (traces__finish), by
 * walking up to the root, so a parent learnt late (events of two processes
 * arrive in either order) still joins the trace. */
#ifndef RASTRO_TRACES_H
#define RASTRO_TRACES_H

#include <stdbool.h>
#include <stdint.h>

#include "config/config.h"
#include "request.h"

struct traces;

struct traces_stats {
	uint64_t contexts;        /* span contexts held now */
	uint64_t contexts_evicted; /* dropped to stay within the bound before they expired */
	uint64_t sampled_out;
	uint64_t linked_remote;   /* server spans parented by a traced client on this host */
	uint64_t linked_header;   /* server spans parented by an incoming traceparent */
};

struct traces *traces__new(const struct rastro_config *cfg, uint64_t seed);
void traces__free(struct traces *t);

void traces__start(struct traces *t, struct request *r);
/* Sets trace_id, parent_span_id, has_parent, trace_flags, sampled. */
void traces__finish(struct traces *t, struct request *r);
/* Lets go of a request's context without deciding its span (a request that
 * is not reported): as traces__finish does, without touching r. */
void traces__drop(struct traces *t, struct request *r);
/* Forgets contexts idle for longer than the link window (60 s, against
 * now_ns), and those of finished requests a grace after their end in event
 * time (against the newest request start or end seen; traces__start does
 * the same). */
void traces__expire(struct traces *t, uint64_t now_ns);
/* The grace of a finished request's context: at least 100 ms; the agent
 * makes it cover the longest time a CPU holds its events back (main.c,
 * deliver_held), as the other end of a connection may wait that long. */
void traces__set_grace(struct traces *t, uint64_t grace_ns);
uint64_t traces__grace(const struct traces *t);
void traces__stats(const struct traces *t, struct traces_stats *out);

/* W3C Trace Context traceparent: 0 when valid (ids and flags filled). */
int traces__parse_traceparent(const char *s, size_t len, uint8_t trace_id[16],
			      uint8_t parent_id[8], uint8_t *flags);
/* Whether the sampler keeps a root span of this trace id. */
bool traces__ratio_keeps(const uint8_t trace_id[16], double ratio);

#endif
