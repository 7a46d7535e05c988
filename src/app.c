/*
 * The stages after the protocol parsers. Each stage has its own section with
 * its start/stop functions; app__start_stages calls them in order.
 */
#include "app.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "capture/capture.h"
#include "common/loop.h"
#include "discover/discover.h"
#include "export/otlp_metrics.h"
#include "export/otlp_traces.h"
#include "export/prometheus.h"
#include "log.h"
#include "metrics/metrics.h"
#include "metrics/routes.h"
#include "protocols/conntrack.h"
#include "traces/traces.h"

/* ==== traces stage: trace context, correlation, sampling ==== */

static void traces_tick(void *ctx)
{
	struct app *app = ctx;
	traces__expire(app->traces, loop__now_ns());
	loop__after(app->loop, 10000, traces_tick, app);
}

static int traces_start(struct app *app)
{
	uint64_t seed = loop__now_ns() ^ ((uint64_t)getpid() << 32);
	FILE *f = fopen("/dev/urandom", "r");
	if (f) {
		if (fread(&seed, sizeof(seed), 1, f) != 1)
			seed ^= (uint64_t)time(NULL);
		fclose(f);
	}
	app->traces = traces__new(&app->cfg, seed);
	if (!app->traces)
		return error("out of memory");
	loop__after(app->loop, 10000, traces_tick, app);
	return 0;
}

static void traces_stop(struct app *app)
{
	traces__free(app->traces);
	app->traces = NULL;
}

void app__trace_start(struct app *app, struct request *r)
{
	traces__start(app->traces, r);
}

void app__trace(struct app *app, struct request *r)
{
	traces__finish(app->traces, r);
}

void app__trace_drop(struct app *app, struct request *r)
{
	traces__drop(app->traces, r);
}

/* ==== span export: batching, OTLP encoding, OTLP/HTTP client ==== */

/* SIGTERM must see everything flushed within 5 s; this leaves room for the
 * rest of the shutdown (BPF detach, freeing). */
#define EXPORT_FLUSH_MS 4000

static int span_export_start(struct app *app)
{
	struct rastro_config *cfg = &app->cfg;
	/* The metrics client lives here too: both share the shutdown flush. */
	if (cfg->otlp_metrics.endpoint) {
		const char *why;
		app->metrics_client = otlp_client__new(app->loop, &cfg->otlp_metrics, "metrics",
						       cfg->otlp_max_queue_bytes, &why);
		if (!app->metrics_client)
			return error("otel_metrics_export.endpoint %s: %s",
				     cfg->otlp_metrics.endpoint, why);
		log_info("OTLP metrics export to %s%s", cfg->otlp_metrics.endpoint,
			 cfg->otlp_metrics.gzip ? " (gzip)" : "");
	}
	if (cfg->otlp_traces.endpoint) {
		const char *why;
		app->traces_client = otlp_client__new(app->loop, &cfg->otlp_traces, "traces",
						      cfg->otlp_max_queue_bytes, &why);
		if (!app->traces_client)
			return error("otel_traces_export.endpoint %s: %s",
				     cfg->otlp_traces.endpoint, why);
		app->span_export = otlp_traces__new(app->loop, cfg, app->traces_client,
						    &app->unix_offset_ns);
		if (!app->span_export)
			return error("cannot create the OTLP traces exporter (out of memory)");
		log_info("OTLP traces export to %s%s", cfg->otlp_traces.endpoint,
			 cfg->otlp_traces.gzip ? " (gzip)" : "");
	}
	return 0;
}

/* One line per exporter at exit: what a short run did, without self-metrics. */
static void log_client_stats(struct otlp_client *c)
{
	struct otlp_client_stats s;
	if (!c)
		return;
	otlp_client__stats(c, &s);
	log_info("%s export: requests_sent=%llu requests_ok=%llu retryable_failures=%llu "
		 "retries=%llu permanent_failures=%llu expired=%llu dropped_queue_full=%llu "
		 "unsent=%llu items_ok=%llu items_dropped=%llu items_rejected=%llu",
		 otlp_client__signal(c), (unsigned long long)s.requests_sent,
		 (unsigned long long)s.requests_ok, (unsigned long long)s.failed_retryable,
		 (unsigned long long)s.retries, (unsigned long long)s.failed_permanent,
		 (unsigned long long)s.dropped_expired, (unsigned long long)s.dropped_queue_full,
		 (unsigned long long)s.queue_requests, (unsigned long long)s.items_ok,
		 (unsigned long long)s.dropped_items, (unsigned long long)s.rejected_items);
}

static void span_export_stop(struct app *app)
{
	if (app->span_export) {
		struct otlp_traces_stats ts;
		otlp_traces__flush(app->span_export);
		otlp_traces__stats(app->span_export, &ts);
		log_info("span export: spans handed to the client=%llu dropped_queue_full=%llu "
			 "dropped_out_of_memory=%llu",
			 (unsigned long long)ts.exported, (unsigned long long)ts.dropped_queue,
			 (unsigned long long)ts.dropped_no_memory);
	}
	struct otlp_client *clients[] = {app->traces_client, app->metrics_client};
	if (app->traces_client || app->metrics_client)
		otlp_client__flush_many(clients, 2, loop__now_ns() / 1000000 + EXPORT_FLUSH_MS);
	log_client_stats(app->traces_client);
	log_client_stats(app->metrics_client);
	otlp_traces__free(app->span_export);
	app->span_export = NULL;
	otlp_client__free(app->traces_client);
	app->traces_client = NULL;
	otlp_client__free(app->metrics_client);
	app->metrics_client = NULL;
}

void app__export_span(struct app *app, const struct request *r)
{
	if (app->span_export)
		otlp_traces__add(app->span_export, r);
}

/* ==== routes and metrics: RED aggregation, Prometheus, OTLP metrics ==== */

static int64_t metrics_export_timer, metrics_expire_timer;

/* A scrape begins: the registry is brought up to date first, as at a light
 * load the agent reads its events up to 500 ms after they happen. */
static void scrape_begins(void *ctx, struct self_stats *out)
{
	struct app *app = ctx;
	if (app->catch_up)
		app->catch_up(app);
	app__self_stats(app, out);
}

/* Hands the cumulative snapshot to the OTLP client. While an earlier one
 * still waits behind a request in flight (backend slow or down), a new one
 * would only repeat it with newer values: it is skipped, which loses nothing
 * with cumulative data and keeps the queue short. The last one always goes. */
static void metrics_export(struct app *app, bool last)
{
	if (!app->metrics_client || !app->metrics_export || !app->metrics)
		return;
	if (!last && otlp_client__waiting(app->metrics_client)) {
		log_debug("OTLP metrics: the previous export is still waiting; skipping this one");
		return;
	}
	struct self_stats st;
	app__self_stats(app, &st);
	size_t len = 0;
	uint64_t points = 0;
	uint8_t *body = otlp_metrics__encode(app->metrics_export, app->metrics, &st,
					     app->unix_offset_ns, loop__now_ns(), &len, &points);
	if (!body) {
		log_warn("OTLP metrics: cannot encode the export request (out of memory)");
		return;
	}
	otlp_client__send(app->metrics_client, body, len, points);
	free(body);
}

static void metrics_export_tick(void *ctx)
{
	struct app *app = ctx;
	metrics_export(app, false);
	metrics_export_timer =
		loop__after(app->loop, app->cfg.metrics_interval_ms, metrics_export_tick, app);
}

/* Series outlive their TTL by at most a quarter of it. */
static uint64_t metrics_expire_period_ms(const struct app *app)
{
	uint64_t ms = app->cfg.metrics_ttl_ms / 4;
	return ms < 250 ? 250 : ms > 30000 ? 30000 : ms;
}

static void metrics_expire_tick(void *ctx)
{
	struct app *app = ctx;
	metrics__expire(app->metrics, loop__now_ns());
	metrics_expire_timer =
		loop__after(app->loop, metrics_expire_period_ms(app), metrics_expire_tick, app);
}

static int metrics_start(struct app *app)
{
	struct rastro_config *cfg = &app->cfg;
	app->routes = routes__new(&cfg->route_patterns, &cfg->route_ignored, cfg->route_unmatched);
	app->metrics = metrics__new(cfg, loop__now_ns());
	app->metrics_export = otlp_metrics__new(cfg);
	if (!app->routes || !app->metrics || !app->metrics_export)
		return error("cannot set up the metrics: out of memory");
	if (prometheus__start(&app->prom, app->loop, cfg,
			      config__is_set(cfg, "prometheus_export.port"), app->metrics,
			      scrape_begins, app))
		return -1;
	/* app->metrics_client appears later (span export section): each tick
	 * looks for it. */
	metrics_export_timer =
		loop__after(app->loop, cfg->metrics_interval_ms, metrics_export_tick, app);
	metrics_expire_timer =
		loop__after(app->loop, metrics_expire_period_ms(app), metrics_expire_tick, app);
	return 0;
}

/* At shutdown, before the OTLP clients are flushed and freed. */
static void metrics_final_export(struct app *app)
{
	metrics_export(app, true);
}

static void metrics_stop(struct app *app)
{
	if (app->loop) {
		if (metrics_export_timer > 0)
			loop__cancel(app->loop, metrics_export_timer);
		if (metrics_expire_timer > 0)
			loop__cancel(app->loop, metrics_expire_timer);
	}
	metrics_export_timer = metrics_expire_timer = 0;
	prometheus__stop(app->prom);
	app->prom = NULL;
	otlp_metrics__free(app->metrics_export);
	app->metrics_export = NULL;
	metrics__free(app->metrics);
	app->metrics = NULL;
	routes__free(app->routes);
	app->routes = NULL;
}

bool app__route(struct app *app, struct request *r)
{
	if (!app->routes || (r->kind != REQ_HTTP_SERVER && r->kind != REQ_HTTP_CLIENT))
		return true;
	char scratch[REQUEST_ARENA + 4];
	const char *route;
	size_t len;
	if (!routes__match(app->routes, request__str(r, r->path), r->path.len, scratch,
			   sizeof(scratch), &route, &len))
		return false;
	/* http.route is a server attribute; a parser that knows better keeps its own. */
	if (r->kind == REQ_HTTP_SERVER && !request__has(r->route) && len)
		r->route = request__store(r, route, len);
	return true;
}

void app__measure(struct app *app, struct request *r)
{
	/* The request's end (the kernel's CLOCK_MONOTONIC, as loop__now_ns)
	 * dates the series' use: no clock read per request. */
	if (app->metrics)
		metrics__record(app->metrics, r, r->end_ns ? r->end_ns : loop__now_ns());
}

/* ==== self-observation ==== */

void app__self_stats(struct app *app, struct self_stats *out)
{
	memset(out, 0, sizeof(*out));
	capture__stats(app->cap, out->kernel);
	out->kernel_skipped_runs = capture__skipped_runs(app->cap);
	conntrack__stats(app->ct, &out->conns);
	out->traced_processes = discovery__traced_processes(app->disc);
	out->bpf_map_bytes = capture__map_bytes(app->cap);
	out->kernel_connections = capture__connections(app->cap);
	out->requests_ignored = routes__ignored(app->routes);
	if (app->traces) {
		struct traces_stats ts;
		traces__stats(app->traces, &ts);
		out->spans_sampled_out = ts.sampled_out;
	}
	out->has_traces_client = app->traces_client != NULL;
	if (app->traces_client)
		otlp_client__stats(app->traces_client, &out->traces_client);
	out->has_metrics_client = app->metrics_client != NULL;
	if (app->metrics_client)
		otlp_client__stats(app->metrics_client, &out->metrics_client);
	if (app->span_export) {
		struct otlp_traces_stats ss;
		otlp_traces__stats(app->span_export, &ss);
		out->spans_queued = ss.queued;
		out->spans_dropped_queue = ss.dropped_queue;
		out->spans_dropped_no_memory = ss.dropped_no_memory;
		out->spans_exported = ss.exported;
	}
	out->span_queue_waits = app->span_queue_waits;
}

/* ==== lifecycle ==== */

int app__start_stages(struct app *app)
{
	if (metrics_start(app) || traces_start(app) || span_export_start(app))
		return -1;
	return 0;
}

void app__stop_stages(struct app *app)
{
	metrics_final_export(app);
	span_export_stop(app);
	traces_stop(app);
	metrics_stop(app);
}
