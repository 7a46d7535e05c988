/* RED metrics: histograms per the OpenTelemetry semantic conventions,
 * aggregated per service instance and attribute set, with CUMULATIVE
 * temporality. Read by the Prometheus endpoint and the OTLP encoder.
 *
 * Memory is bounded whatever the traffic: at most cfg->max_series series per
 * metric (further attribute sets share one overflow series per service with
 * otel.metric.overflow="true"), and series idle for cfg->metrics_ttl_ms are
 * removed. Recording into an existing series is one hash lookup and no
 * allocation. */
#ifndef RASTRO_METRICS_H
#define RASTRO_METRICS_H

#include <stdbool.h>
#include <stdint.h>

#include "config/config.h"
#include "request.h"
#include "semconv.h"

struct metrics;
struct service;

enum metric_id {
	METRIC_HTTP_SERVER_DURATION = 0,
	METRIC_HTTP_SERVER_REQUEST_SIZE,
	METRIC_HTTP_SERVER_RESPONSE_SIZE,
	METRIC_HTTP_CLIENT_DURATION,
	METRIC_HTTP_CLIENT_REQUEST_SIZE,
	METRIC_HTTP_CLIENT_RESPONSE_SIZE,
	METRIC_RPC_SERVER_DURATION,
	METRIC_RPC_CLIENT_DURATION,
	METRIC_DB_CLIENT_DURATION,
	METRIC__COUNT,
};

struct metric_desc {
	const char *name; /* OpenTelemetry name: http.server.request.duration */
	const char *unit; /* UCUM: s, By */
	const char *description;
	const char *prom_name;	/* http_server_request_duration_seconds */
	enum request_kind kind; /* records it is computed from */
	int hist;		/* which histogram of the kind's series */
};

const struct metric_desc *metrics__desc(int metric);
/* The duration metric of records of this kind (the one max_series and the
 * self-metrics are named after: a kind's histograms share attribute sets). */
int metrics__kind_metric(enum request_kind kind);

#define METRICS_MAX_ATTRS 8

/* One data point: a series' histogram of one metric. */
struct metric_point {
	int metric;
	const struct service *service;
	bool overflow;
	int nattrs;
	struct attr attrs[METRICS_MAX_ATTRS];
	uint64_t start_ns; /* CLOCK_MONOTONIC: when the series was created */
	uint64_t last_ns;  /* CLOCK_MONOTONIC: last update */
	uint64_t count;
	double sum, min, max;
	int nbounds;
	const double *bounds;
	const uint64_t *buckets; /* nbounds + 1 counts, not cumulative; the last is +Inf */
};

typedef void (*metric_point_fn)(void *ctx, const struct metric_point *p);
typedef void (*metric_service_fn)(void *ctx, const struct service *s);

enum metrics_drop {
	METRICS_DROP_NO_SERVICE = 0, /* a record without a service: nothing to attribute it to */
	METRICS_DROP_NO_MEMORY,	     /* a new series could not be allocated */
	METRICS_DROP__COUNT,
};

struct metrics_stats {
	uint64_t series[REQ__COUNT];	       /* now, overflow series excluded */
	uint64_t overflow_series[REQ__COUNT];  /* now */
	uint64_t overflow_records[REQ__COUNT]; /* records that went to an overflow series */
	uint64_t expired_series;
	uint64_t dropped[METRICS_DROP__COUNT];
	uint64_t services; /* service instances with at least one series */
};

/* now_ns: CLOCK_MONOTONIC, the self-metrics' start time. NULL when out of
 * memory. */
struct metrics *metrics__new(const struct rastro_config *cfg, uint64_t now_ns);
void metrics__free(struct metrics *m);

/* Adds a finished record; now_ns (CLOCK_MONOTONIC) marks the series fresh. */
void metrics__record(struct metrics *m, const struct request *r, uint64_t now_ns);
/* Removes series not updated for cfg->metrics_ttl_ms; returns how many. */
int metrics__expire(struct metrics *m, uint64_t now_ns);

/* Services with at least one series, in order of first appearance. */
void metrics__foreach_service(const struct metrics *m, metric_service_fn fn, void *ctx);
/* Data points of one metric with at least one measurement, of one service
 * (or of all, service by service, when svc is NULL), in creation order. */
void metrics__foreach_point(const struct metrics *m, int metric, const struct service *svc,
			    metric_point_fn fn, void *ctx);

/* A reader's place in the registry that stays valid while series and
 * services come and go (a streamed scrape renders a few points at a time
 * from the event loop, and records and expiry run in between): it holds
 * creation numbers, never pointers. Zero-initialised: the start. */
struct metrics_cursor {
	uint64_t svc_seq;    /* the service entry being read */
	uint64_t series_seq; /* its last series already read */
};
typedef bool (*metric_point_more_fn)(void *ctx, const struct metric_point *p);
/* The service after *cursor (0: the first), in foreach_service's order;
 * advances *cursor. NULL at the end. */
const struct service *metrics__next_service(const struct metrics *m, uint64_t *cursor);
/* Like foreach_point for all services, from *cur on: calls fn for each point
 * not read yet until fn returns false (that point counts as read). Returns
 * true when the end was reached. Points of series created after the cursor
 * passed their service are not seen; none is seen twice. */
bool metrics__points_from(const struct metrics *m, int metric, struct metrics_cursor *cur,
			  metric_point_more_fn fn, void *ctx);

void metrics__stats(const struct metrics *m, struct metrics_stats *out);
uint64_t metrics__start_ns(const struct metrics *m);
/* Unit tests: keeps only these bits of every key hash, so that different
 * attribute sets collide and share a chain. */
void metrics__set_hash_mask(struct metrics *m, uint64_t mask);
const char *metrics__drop_name(int which);

#endif
