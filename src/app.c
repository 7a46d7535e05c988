/*
 * The stages after the protocol parsers. Each stage has its own section with
 * its start/stop functions; app__start_stages calls them in order.
 */
#include "app.h"

#include <string.h>
#include <time.h>
#include <unistd.h>

#include "capture/capture.h"
#include "common/loop.h"
#include "discover/discover.h"
#include "log.h"
#include "protocols/conntrack.h"

/* ==== traces stage: trace context, correlation, sampling ==== */

static uint64_t rng_state;

static uint64_t next_random(void)
{
	/* xorshift64*: ids only need to be unique and unpredictable enough. */
	uint64_t x = rng_state;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	rng_state = x;
	return x * 0x2545F4914F6CDD1DULL;
}

static int traces_start(struct app *app)
{
	rng_state = loop__now_ns() ^ ((uint64_t)getpid() << 32) ^ 0x9E3779B97F4A7C15ULL;
	(void)app;
	return 0;
}

static void traces_stop(struct app *app)
{
	(void)app;
}

void app__trace_start(struct app *app, struct request *r)
{
	(void)app;
	(void)r;
}

void app__trace(struct app *app, struct request *r)
{
	(void)app;
	uint64_t a = next_random(), b = next_random(), c = next_random();
	memcpy(r->trace_id, &a, 8);
	memcpy(r->trace_id + 8, &b, 8);
	memcpy(r->span_id, &c, 8);
	r->sampled = true;
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
