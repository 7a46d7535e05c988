/* The Prometheus scrape endpoint: a small HTTP/1.1 server on rastro's event
 * loop (export/http_server), text exposition format 0.0.4 streamed as it is
 * rendered, names per the OpenTelemetry to Prometheus compatibility rules. */
#ifndef RASTRO_PROMETHEUS_H
#define RASTRO_PROMETHEUS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "app.h"
#include "config/config.h"
#include "metrics/metrics.h"

struct loop;
struct prometheus;

#define PROMETHEUS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* Runs when a scrape begins, before anything is rendered: brings the
 * registry up to date and fills the self-metrics' sources (app.c). */
typedef void (*prometheus_self_fn)(void *ctx, struct self_stats *out);

/* Listens on cfg->prom_address:cfg->prom_port. *out stays NULL when the port
 * is 0, or when it is busy and was not set explicitly (port_explicit false:
 * a warning is logged). -1 (reported in one line) when the port was given and
 * cannot be used, or on another failure. */
int prometheus__start(struct prometheus **out, struct loop *loop, const struct rastro_config *cfg,
		      bool port_explicit, const struct metrics *m, prometheus_self_fn self_fn,
		      void *self_ctx);
void prometheus__stop(struct prometheus *p);
/* The port actually bound. */
uint16_t prometheus__port(const struct prometheus *p);

/* The exposition: target_info (one series per service instance with its
 * resource attributes), the RED histograms with service_name and
 * service_namespace labels, then the self-metrics (st may be NULL).
 * Returns 0, or -1 on a write error. */
int prometheus__render(FILE *out, const struct metrics *m, const struct rastro_config *cfg,
		       const struct self_stats *st);

/* Label name of an attribute key: anything outside [a-zA-Z0-9_] becomes _
 * and a leading digit gets "key_" before it. Returns the length. */
size_t prometheus__label_name(const char *key, char *out, size_t cap);

#endif
