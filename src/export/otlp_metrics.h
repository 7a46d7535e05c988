/* OTLP metrics encoding: the registry's cumulative snapshot as one
 * ExportMetricsServiceRequest (written directly, in the bytes protobuf-c
 * would pack from proto/; the unit tests decode it with protobuf-c): one
 * ResourceMetrics per service instance with its resource attributes, scope
 * "rastro", explicit-bucket histograms with CUMULATIVE temporality and sum
 * always set; then rastro's own metrics as sums and gauges under a resource
 * of their own (service.name "rastro"). */
#ifndef RASTRO_OTLP_METRICS_H
#define RASTRO_OTLP_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "app.h"
#include "config/config.h"
#include "metrics/metrics.h"

struct otlp_metrics;

struct otlp_metrics *otlp_metrics__new(const struct rastro_config *cfg);
void otlp_metrics__free(struct otlp_metrics *om);

/* Encodes the snapshot at now_ns (CLOCK_MONOTONIC; unix_offset_ns turns it
 * and the series' start times into Unix time) and the self-metrics (st may
 * be NULL). Returns a malloc'd buffer of *len bytes holding *points data
 * points (the caller frees it), or NULL when out of memory. */
uint8_t *otlp_metrics__encode(struct otlp_metrics *om, const struct metrics *m,
			      const struct self_stats *st, int64_t unix_offset_ns, uint64_t now_ns,
			      size_t *len, uint64_t *points);

#endif
