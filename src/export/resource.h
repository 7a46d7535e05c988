/* The OpenTelemetry resource of an instrumented service instance: the same
 * attributes go to OTLP resources and to Prometheus target_info. */
#ifndef RASTRO_RESOURCE_H
#define RASTRO_RESOURCE_H

#include <stddef.h>

#include "config/config.h"
#include "semconv.h"

struct service;

#define RESOURCE_MAX_ATTRS (12 + CONFIG_MAX_LIST)

/* Fills out[] (at most RESOURCE_MAX_ATTRS) and returns the count. Strings
 * point into s, cfg or static storage. */
int resource__attributes(const struct service *s, const struct rastro_config *cfg,
			 struct attr *out);

/* Language of an executable, as telemetry.sdk.language ("perl", "python",
 * "java", ...; "native" when unknown). */
const char *resource__language(const char *exe_path);

#endif
