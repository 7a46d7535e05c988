/* The agent's state and the stages every request record passes through.
 * main.c owns start-up, the event loop and the kernel side; app.c wires the
 * stages after the parsers: routes, traces, metrics and their exporters. */
#ifndef RASTRO_APP_H
#define RASTRO_APP_H

#include <stdbool.h>
#include <stdint.h>

#include "config/config.h"
#include "request.h"

struct loop;
struct capture;
struct discovery;
struct conntrack;
struct routes;
struct metrics;
struct prometheus;
struct traces;
struct otlp_client;

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
	struct otlp_client *otlp_metrics;
	struct otlp_client *otlp_traces;
};

/* Creates the stages after the kernel side is up; -1 on a fatal error
 * (already reported). */
int app__start_stages(struct app *app);
/* Flushes (spans, a last metrics export) and frees the stages. */
void app__stop_stages(struct app *app);

/* Sets r->route; false when the request matches routes.ignored_patterns and
 * must not be reported at all. */
bool app__route(struct app *app, struct request *r);
/* Gives r its trace context (ids, parent, sampling) and queues its span. */
void app__trace(struct app *app, struct request *r);
/* Adds r to the RED metrics. */
void app__measure(struct app *app, struct request *r);

#endif
