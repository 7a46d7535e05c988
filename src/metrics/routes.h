/* The routes stage (Beyla's `routes` section): turns a URL path into the
 * low-cardinality http.route that metrics and span names use. Pure: no I/O,
 * no allocation after routes__new. */
#ifndef RASTRO_ROUTES_H
#define RASTRO_ROUTES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"

struct routes;

/* Compiles the patterns. A pattern is a path whose segments are literals,
 * parameters ({name} or :name, one non-empty segment), * (one segment) or a
 * final ** (the rest of the path, possibly nothing). NULL when out of memory. */
struct routes *routes__new(const struct string_list *patterns, const struct string_list *ignored,
			   enum route_unmatched unmatched);
void routes__free(struct routes *rt);

/* http.route of path[0..len): the first pattern that matches, else per
 * `unmatched`. *route points into the routes object, into path or into out
 * (scratch of cap bytes, at least len + 4 for a whole heuristic route).
 * Returns false, and counts it, when path matches an ignored pattern: the
 * request is not reported at all. */
bool routes__match(struct routes *rt, const char *path, size_t len, char *out, size_t cap,
		   const char **route, size_t *route_len);

/* Requests dropped by ignored_patterns, for self-metrics. */
uint64_t routes__ignored(const struct routes *rt);

/* The heuristic alone: segments that look like ids (numbers, UUIDs, hex,
 * long random tokens) become "*". Returns the length written to out (at
 * most cap - 1, NUL-terminated). */
size_t routes__heuristic(const char *path, size_t len, char *out, size_t cap);
/* Whether one path segment looks like an id (exposed for unit tests). */
bool routes__looks_like_id(const char *seg, size_t len);

#endif
