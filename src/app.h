/* The agent's state and the stages every request record passes through.
 * main.c owns start-up, the event loop and the kernel side; app.c wires the
 * stages after the parsers: routes, traces, metrics and their exporters. */
#ifndef RASTRO_APP_H
#define RASTRO_APP_H

#include <stdbool.h>
#include <stdint.h>

#include "bpf/rastro.h"
#include "config/config.h"
#include "export/otlp_client.h"
#include "protocols/conntrack.h"
#include "request.h"

struct loop;
struct capture;
struct discovery;
struct conntrack;
struct routes;
struct metrics;
struct prometheus;
struct traces;
struct otlp_traces;
struct otlp_metrics;

struct app {
	struct rastro_config cfg;
	struct loop *loop;
	struct capture *cap;
	struct discovery *disc;
	struct conntrack *ct;
	int signal_fd;
	int64_t unix_offset_ns; /* CLOCK_REALTIME - CLOCK_MONOTONIC */

	/* stages */
	struct routes *routes;
	struct metrics *metrics;
	struct prometheus *prom;
	struct traces *traces;
	struct otlp_client *metrics_client; /* NULL: no OTLP metrics endpoint */
	struct otlp_client *traces_client;  /* NULL: no OTLP traces endpoint */
	struct otlp_traces *span_export;
	struct otlp_metrics *metrics_export;
	/* Drains that stopped while the span queue was nearly full, leaving
	 * the rest in the ring buffer for the exporter to catch up (main.c). */
	uint64_t span_queue_waits;
	/* Reads now what the kernel side has (the events the CPUs hold back
	 * and the ring buffer), before a scrape renders anything, so that it
	 * counts every request answered before it (main.c). Timers, the
	 * metrics export's among them, run after the drain of the wakeup that
	 * made them due (loop.c) and need no such call. */
	void (*catch_up)(struct app *app);
};

/* rastro's view of itself, for the rastro_* self-metrics and logs. */
struct self_stats {
	uint64_t kernel[RASTRO_STAT__COUNT]; /* loss causes and data events, summed per CPU */
	uint64_t kernel_skipped_runs;        /* program runs the kernel skipped (recursion) */
	struct conntrack_stats conns;        /* requests, parser losses, open connections */
	uint32_t traced_processes;
	uint64_t bpf_map_bytes;
	uint64_t kernel_connections;
	uint64_t requests_ignored;      /* dropped by routes.ignored_patterns */
	bool has_metrics_client, has_traces_client;
	struct otlp_client_stats metrics_client, traces_client;
	uint64_t spans_queued;          /* waiting for a batch */
	uint64_t spans_dropped_queue;   /* otel_traces_export.max_queue_size exceeded */
	uint64_t spans_dropped_no_memory; /* out of memory queueing or encoding them */
	uint64_t spans_sampled_out;     /* not exported by the sampler's decision */
	uint64_t spans_exported;        /* handed to the OTLP client */
	uint64_t span_queue_waits;      /* drains that waited for the span exporter */
};

/* Creates the stages after the kernel side is up; -1 on a fatal error
 * (already reported). */
int app__start_stages(struct app *app);
/* Flushes (spans, a last metrics export) and frees the stages. */
void app__stop_stages(struct app *app);

/* Sets r->route; false when the request matches routes.ignored_patterns and
 * must not be reported at all. */
bool app__route(struct app *app, struct request *r);
/* A request began: span id and parent. */
void app__trace_start(struct app *app, struct request *r);
/* A request finished: trace id, parent and sampling are final. */
void app__trace(struct app *app, struct request *r);
/* A request that is not reported lets go of its trace context. */
void app__trace_drop(struct app *app, struct request *r);
/* Adds r to the RED metrics. */
void app__measure(struct app *app, struct request *r);
/* Queues r's span for OTLP export (sampled records only). */
void app__export_span(struct app *app, const struct request *r);
/* Gathers the self-metrics' sources. */
void app__self_stats(struct app *app, struct self_stats *out);

#endif
