/* libFuzzer target: route patterns and paths from the input. Layout: one byte
 * of mode (unmatched, how many of the patterns are ignored ones), then
 * newline-separated patterns up to a NUL, then the path. Checks what callers
 * rely on: the route fits its buffer, heuristic routes are never longer than
 * the path, and the same input always gives the same answer. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "metrics/routes.h"

#define MAX_PATTERNS 8

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	uint8_t mode = data[0];
	const char *p = (const char *)data + 1;
	size_t n = size - 1;
	const char *nul = memchr(p, '\0', n);
	size_t pat_len = nul ? (size_t)(nul - p) : 0;
	const char *path = nul ? nul + 1 : p;
	size_t path_len = n - (size_t)(path - p);

	static char texts[MAX_PATTERNS][256];
	struct string_list pats = {0}, ign = {0};
	size_t start = 0;
	int nignored = (mode >> 2) & 3;
	for (int count = 0; start < pat_len && count < MAX_PATTERNS; count++) {
		const char *e = memchr(p + start, '\n', pat_len - start);
		size_t len = e ? (size_t)(e - (p + start)) : pat_len - start;
		if (len > 255)
			len = 255;
		memcpy(texts[count], p + start, len);
		texts[count][len] = '\0';
		if (count < nignored)
			ign.item[ign.count++] = texts[count];
		else
			pats.item[pats.count++] = texts[count];
		start += len + 1;
	}
	struct routes *rt = routes__new(&pats, &ign, (enum route_unmatched)(mode % 3));
	if (!rt)
		return 0;

	char *scratch = malloc(path_len + 4);
	const char *route, *route2;
	size_t len = 0, len2 = 0;
	bool kept = routes__match(rt, path, path_len, scratch, path_len + 4, &route, &len);
	if (kept) {
		/* every byte of the route is readable (ASan checks the copy) */
		char *copy = malloc(len + 1);
		memcpy(copy, route, len);
		free(copy);
		if ((mode % 3) == UNMATCHED_HEURISTIC && route == scratch && len > path_len)
			abort();
		char *again = malloc(path_len + 4);
		bool kept2 = routes__match(rt, path, path_len, again, path_len + 4, &route2, &len2);
		if (!kept2 || len2 != len || memcmp(route, route2, len))
			abort();
		free(again);
	}
	/* a scratch buffer smaller than the path truncates, never overflows */
	char small[8];
	size_t h = routes__heuristic(path, path_len, small, sizeof(small));
	if (h >= sizeof(small) || small[h] != '\0')
		abort();
	free(scratch);
	routes__free(rt);
	return 0;
}
