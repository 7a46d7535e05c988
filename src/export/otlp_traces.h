/* Span export: each sampled request record becomes an OTLP span, encoded at
 * once into a compact byte form (the record itself is not kept), queued, and
 * sent in batches (otel_traces_export.max_export_batch_size, schedule_delay,
 * max_queue_size: the OpenTelemetry batch span processor's settings) as
 * ExportTraceServiceRequest messages grouped by service instance. */
#ifndef RASTRO_OTLP_TRACES_H
#define RASTRO_OTLP_TRACES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "request.h"

struct loop;
struct otlp_client;
struct otlp_traces;

struct otlp_traces_stats {
	uint64_t queued;        /* spans waiting for a batch (now) */
	uint64_t dropped_queue; /* max_queue_size reached */
	uint64_t dropped_no_memory; /* could not be queued or encoded: out of memory */
	uint64_t exported;      /* spans handed to the OTLP client */
	uint64_t batches_allocated; /* span batches allocated (a sent one is reused) */
};

/* unix_offset_ns: CLOCK_REALTIME - CLOCK_MONOTONIC, read at each add (the
 * agent refreshes it when the wall clock is stepped). */
struct otlp_traces *otlp_traces__new(struct loop *loop, const struct rastro_config *cfg,
				     struct otlp_client *client, const int64_t *unix_offset_ns);
void otlp_traces__free(struct otlp_traces *t);

/* Queues r's span; r may be reused as soon as this returns. */
void otlp_traces__add(struct otlp_traces *t, const struct request *r);
/* Shutdown: hands every queued span to the client now, whatever its state
 * (then otlp_client__flush sends them). */
void otlp_traces__flush(struct otlp_traces *t);
void otlp_traces__stats(const struct otlp_traces *t, struct otlp_traces_stats *out);
/* Whether the queue has room left for fewer than a quarter of
 * max_queue_size spans, or 256 (what a drain's next records could make). */
bool otlp_traces__nearly_full(const struct otlp_traces *t);

/* ---- the encoder, also used by the unit tests and bench/encode_spans.c
 *
 * A batch holds spans already encoded as OTLP Span messages (a hand-written
 * protobuf encoder: protobuf-c's generic packing costs more than 1 us per
 * span; tests/unit/test_otlp.c decodes the output with protobuf-c) and one
 * reference on each service they belong to. */
struct span_batch;

struct span_batch *span_batch__new(void);
void span_batch__free(struct span_batch *b);
/* Encodes r's span into b; false (b unchanged) when out of memory. */
bool span_batch__add(struct span_batch *b, const struct request *r,
		     const struct rastro_config *cfg, int64_t unix_offset_ns);
uint32_t span_batch__count(const struct span_batch *b);
/* Writes the ExportTraceServiceRequest of b into *out (grown as needed and
 * kept by the caller for reuse); returns its length, 0 when out of memory. */
size_t span_batch__encode(const struct span_batch *b, const struct rastro_config *cfg,
			  uint8_t **out, size_t *cap);
/* The same in two steps, into a buffer of the caller's: its length (0 when
 * there is nothing to send), then the bytes, exactly that many (returned). */
size_t span_batch__encoded_len(const struct span_batch *b, const struct rastro_config *cfg);
size_t span_batch__write(const struct span_batch *b, const struct rastro_config *cfg,
			 uint8_t *out);
/* Empties b (dropping its service references), keeping its memory. */
void span_batch__clear(struct span_batch *b);

#endif
