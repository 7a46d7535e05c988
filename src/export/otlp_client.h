/* OTLP/HTTP client for one signal: queues encoded export requests (bounded
 * by bytes), POSTs them with libcurl's multi interface on the event loop,
 * retries per the OTLP specification, counts every outcome. Never blocks. */
#ifndef RASTRO_OTLP_CLIENT_H
#define RASTRO_OTLP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"

struct loop;
struct otlp_client;

struct otlp_client_stats {
	uint64_t requests_sent;      /* HTTP attempts, retries included */
	uint64_t requests_ok;        /* 2xx */
	uint64_t retries;
	uint64_t failed_retryable;   /* 429/502/503/504 and connection errors (then retried) */
	uint64_t failed_permanent;   /* other statuses: dropped */
	uint64_t dropped_queue_full; /* requests dropped because the queue was full */
	uint64_t dropped_items;      /* spans or data points in dropped requests */
	uint64_t rejected_items;     /* partial success: rejected by the backend */
	uint64_t queue_bytes;        /* now */
	uint64_t queue_requests;     /* now */
};

/* signal: "traces" or "metrics" (for logs and metric labels). */
struct otlp_client *otlp_client__new(struct loop *loop, const struct otlp_signal *cfg,
				     const char *signal, uint64_t max_queue_bytes);
void otlp_client__free(struct otlp_client *c);

/* Queues one encoded Export*ServiceRequest (copied) holding `items` spans or
 * data points. Never blocks; when the queue is full the oldest request is
 * dropped and counted. */
void otlp_client__send(struct otlp_client *c, const uint8_t *body, size_t len, uint64_t items);

/* Runs the loop until the queue is empty or deadline_ms passed (shutdown). */
bool otlp_client__flush(struct otlp_client *c, uint64_t deadline_ms);

void otlp_client__stats(const struct otlp_client *c, struct otlp_client_stats *out);
const char *otlp_client__signal(const struct otlp_client *c);

#endif
