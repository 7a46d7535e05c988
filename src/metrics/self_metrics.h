/* rastro's own metrics (rastro_*): what it received, lost, exported and holds.
 * One list serves both exporters, so the Prometheus endpoint and OTLP say the
 * same thing under the same names. */
#ifndef RASTRO_SELF_METRICS_H
#define RASTRO_SELF_METRICS_H

#include <stdbool.h>
#include <stdint.h>

#include "app.h"
#include "metrics/metrics.h"

#define SELF_MAX_LABELS 2
#define SELF_MAX_SAMPLES 16

struct self_sample {
	int nlabels;
	const char *label_key[SELF_MAX_LABELS];
	const char *label_value[SELF_MAX_LABELS];
	uint64_t value;
};

struct self_family {
	const char *name; /* rastro_events_lost; Prometheus adds _total to counters */
	const char *help;
	const char *unit; /* UCUM, for OTLP */
	bool counter;	  /* a monotonic cumulative sum; else a gauge */
	int nsamples;
	struct self_sample samples[SELF_MAX_SAMPLES];
};

typedef void (*self_family_fn)(void *ctx, const struct self_family *f);

/* Calls fn for every family with at least one sample. st (sources gathered
 * by app__self_stats) and m may each be NULL: their families are left out. */
void self_metrics__collect(const struct self_stats *st, const struct metrics *m, self_family_fn fn,
			   void *ctx);

#endif
