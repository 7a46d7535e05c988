/* OTLP/HTTP client for one signal: queues encoded export requests (bounded
 * by bytes), POSTs them on the event loop (rastro's own HTTP/1.1 client for
 * http://, libcurl loaded at run time for https://: otlp_transport.h),
 * retries per the OTLP specification, counts every outcome. Never blocks.
 *
 * One request is in flight at a time, in order. 429, 502, 503, 504 and
 * transport errors are retried (Retry-After honoured, else exponential backoff
 * with jitter from 1 s to 5 s); a request still failing after 60 s of retries
 * is given up. Other statuses drop the request. Each cause is logged once. */
#ifndef RASTRO_OTLP_CLIENT_H
#define RASTRO_OTLP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "export/otlp_transport.h"

struct loop;
struct otlp_client;

struct otlp_client_stats {
	uint64_t requests_sent;      /* HTTP attempts, retries included */
	uint64_t requests_ok;        /* 2xx */
	uint64_t retries;
	uint64_t failed_retryable;   /* 429/502/503/504 and connection errors (then retried) */
	uint64_t failed_permanent;   /* other statuses: dropped */
	uint64_t dropped_queue_full; /* requests dropped because the queue was full */
	uint64_t dropped_items;      /* spans or data points in dropped requests (any cause) */
	uint64_t rejected_items;     /* partial success: rejected by the backend */
	uint64_t dropped_expired;    /* requests given up after retrying for too long */
	uint64_t items_ok;           /* spans or data points in 2xx requests (rejected included) */
	uint64_t queue_bytes;        /* now, the request in flight included */
	uint64_t queue_requests;     /* now, the request in flight included */
};

/* What to do after one attempt (OTLP/HTTP exporter specification). */
enum otlp_outcome { OTLP_OK, OTLP_RETRY, OTLP_DROP };

/* signal: "traces" or "metrics" (for logs and metric labels). NULL with *why
 * set (e.g. libcurl, needed for https, cannot be loaded) on failure. */
struct otlp_client *otlp_client__new(struct loop *loop, const struct otlp_signal *cfg,
				     const char *signal, uint64_t max_queue_bytes,
				     const char **why);
void otlp_client__free(struct otlp_client *c);

/* Queues one encoded Export*ServiceRequest (copied) holding `items` spans or
 * data points. Never blocks; when the queue is full the oldest request is
 * dropped and counted. */
void otlp_client__send(struct otlp_client *c, const uint8_t *body, size_t len, uint64_t items);
/* The same without the copy: the body is written in place, in a buffer of
 * len bytes from otlp_client__body_new (NULL when out of memory), which
 * otlp_client__send_body takes over (len may be less than asked for). */
uint8_t *otlp_client__body_new(size_t len);
void otlp_client__send_body(struct otlp_client *c, uint8_t *body, size_t len, uint64_t items);

/* Called after each request finished (sent, or dropped): a producer that holds
 * data back while the client is busy (see otlp_client__waiting) sends now. */
void otlp_client__on_ready(struct otlp_client *c, void (*fn)(void *ctx), void *ctx);
/* Requests queued behind the one in flight (or waiting for a retry). */
uint64_t otlp_client__waiting(const struct otlp_client *c);

/* Shutdown: sends what is queued, driving the transport itself (the loop has stopped)
 * until every queue is empty or deadline_ms (CLOCK_MONOTONIC milliseconds, as
 * loop__now_ns() / 1000000) passed; retries whose wait ends after the deadline
 * are given up. true when everything was sent. NULL entries are skipped. */
bool otlp_client__flush(struct otlp_client *c, uint64_t deadline_ms);
bool otlp_client__flush_many(struct otlp_client **cs, int n, uint64_t deadline_ms);

void otlp_client__stats(const struct otlp_client *c, struct otlp_client_stats *out);
const char *otlp_client__signal(const struct otlp_client *c);

/* Exposed for unit tests. err: why there is no status; status: the HTTP
 * status (0: no response). */
enum otlp_outcome otlp_client__classify(enum otlp_err err, long status);
/* Retry-After value (delta-seconds or HTTP-date, RFC 9110 10.2.3) as a wait in
 * milliseconds from now_unix (capped at 10 minutes); -1 when malformed. */
int64_t otlp_client__retry_after_ms(const char *value, size_t len, int64_t now_unix);
/* Backoff before retry number attempt (1 = first retry) without Retry-After:
 * exponential from 1 s, at most 5 s, with jitter from rnd (any 64-bit value). */
uint64_t otlp_client__backoff_ms(uint32_t attempt, uint64_t rnd);

#endif
