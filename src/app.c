/*
 * The stages after the protocol parsers. Each stage has its own section with
 * its start/stop functions; app__start_stages calls them in order.
 */
#include "app.h"

#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "capture/capture.h"
#include "common/loop.h"
#include "discover/discover.h"
#include "log.h"
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

/* ==== span export: batching, OTLP encoding, OTLP/HTTP client ==== */

static int span_export_start(struct app *app)
{
	(void)app;
	return 0;
}

static void span_export_stop(struct app *app)
{
	(void)app;
}

void app__export_span(struct app *app, const struct request *r)
{
	(void)app;
	(void)r;
}

/* ==== routes and metrics: RED aggregation, Prometheus, OTLP metrics ==== */

static int metrics_start(struct app *app)
{
	(void)app;
	return 0;
}

static void metrics_stop(struct app *app)
{
	(void)app;
}

bool app__route(struct app *app, struct request *r)
{
	(void)app;
	(void)r;
	return true;
}

void app__measure(struct app *app, struct request *r)
{
	(void)app;
	(void)r;
}

/* ==== self-observation ==== */

void app__self_stats(struct app *app, struct self_stats *out)
{
	memset(out, 0, sizeof(*out));
	capture__stats(app->cap, out->kernel);
	conntrack__stats(app->ct, &out->conns);
	out->traced_processes = discovery__traced_processes(app->disc);
	out->bpf_map_bytes = capture__map_bytes(app->cap);
	if (app->traces) {
		struct traces_stats ts;
		traces__stats(app->traces, &ts);
		out->spans_sampled_out = ts.sampled_out;
	}
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
	span_export_stop(app);
	traces_stop(app);
	metrics_stop(app);
}
