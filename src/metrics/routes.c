/*
 * Routes: patterns are split into segments once, at start; matching a path
 * walks it once per pattern without copying. Empty segments ("//", a
 * trailing "/") are skipped when matching, as web frameworks route them.
 */
#include "metrics/routes.h"

#include <stdlib.h>
#include <string.h>

enum seg_type {
	SEG_LITERAL,
	SEG_ANY,  /* {name}, :name or *: exactly one non-empty segment */
	SEG_REST, /* a final **: whatever follows, possibly nothing */
};

struct seg {
	enum seg_type type;
	uint16_t off, len; /* literal text within the pattern */
};

struct pattern {
	char *text; /* as configured: it becomes http.route */
	size_t len;
	int nsegs;
	struct seg *segs;
};

struct routes {
	struct pattern *patterns, *ignored;
	int npatterns, nignored;
	enum route_unmatched unmatched;
	uint64_t ignored_count;
};

static int compile(const char *text, struct pattern *p)
{
	size_t len = strlen(text);
	if (len > UINT16_MAX)
		len = UINT16_MAX;
	p->text = strndup(text, len);
	p->len = len;
	p->nsegs = 0;
	p->segs = calloc(len / 2 + 1, sizeof(*p->segs)); /* a segment takes >= 2 bytes */
	if (!p->text || !p->segs)
		return -1;
	size_t i = 0;
	while (i < len) {
		while (i < len && text[i] == '/')
			i++;
		if (i >= len)
			break;
		size_t start = i;
		while (i < len && text[i] != '/')
			i++;
		size_t n = i - start;
		struct seg *s = &p->segs[p->nsegs++];
		s->off = (uint16_t)start;
		s->len = (uint16_t)n;
		if (text[start] == ':' || (text[start] == '{' && text[i - 1] == '}') ||
		    (n == 1 && text[start] == '*'))
			s->type = SEG_ANY;
		else if (n == 2 && !memcmp(text + start, "**", 2))
			s->type = SEG_REST;
		else
			s->type = SEG_LITERAL;
	}
	/* ** before the end would need backtracking: it stands for one segment. */
	for (int k = 0; k + 1 < p->nsegs; k++)
		if (p->segs[k].type == SEG_REST)
			p->segs[k].type = SEG_ANY;
	return 0;
}

static void free_patterns(struct pattern *p, int n)
{
	for (int i = 0; i < n; i++) {
		free(p[i].text);
		free(p[i].segs);
	}
	free(p);
}

static int compile_list(const struct string_list *list, struct pattern **out, int *n)
{
	*n = 0;
	*out = NULL;
	if (!list || !list->count)
		return 0;
	*out = calloc((size_t)list->count, sizeof(**out));
	if (!*out)
		return -1;
	for (int i = 0; i < list->count; i++) {
		int err = compile(list->item[i], &(*out)[i]);
		(*n)++;
		if (err)
			return -1;
	}
	return 0;
}

struct routes *routes__new(const struct string_list *patterns, const struct string_list *ignored,
			   enum route_unmatched unmatched)
{
	struct routes *rt = calloc(1, sizeof(*rt));
	if (!rt)
		return NULL;
	rt->unmatched = unmatched;
	if (compile_list(patterns, &rt->patterns, &rt->npatterns) ||
	    compile_list(ignored, &rt->ignored, &rt->nignored)) {
		routes__free(rt);
		return NULL;
	}
	return rt;
}

void routes__free(struct routes *rt)
{
	if (!rt)
		return;
	free_patterns(rt->patterns, rt->npatterns);
	free_patterns(rt->ignored, rt->nignored);
	free(rt);
}

uint64_t routes__ignored(const struct routes *rt)
{
	return rt ? rt->ignored_count : 0;
}

static bool pattern_matches(const struct pattern *p, const char *path, size_t len)
{
	size_t i = 0;
	for (int k = 0; k < p->nsegs; k++) {
		const struct seg *s = &p->segs[k];
		if (s->type == SEG_REST)
			return true;
		while (i < len && path[i] == '/')
			i++;
		if (i >= len)
			return false;
		size_t start = i;
		while (i < len && path[i] != '/')
			i++;
		if (s->type == SEG_LITERAL &&
		    (i - start != s->len || memcmp(path + start, p->text + s->off, s->len)))
			return false;
	}
	while (i < len && path[i] == '/')
		i++;
	return i >= len;
}

static bool is_hex(char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static bool is_uuid(const char *s, size_t n)
{
	if (n != 36)
		return false;
	for (size_t i = 0; i < n; i++) {
		bool dash = i == 8 || i == 13 || i == 18 || i == 23;
		if (dash ? s[i] != '-' : !is_hex(s[i]))
			return false;
	}
	return true;
}

bool routes__looks_like_id(const char *s, size_t n)
{
	if (!n)
		return false;
	if (is_uuid(s, n))
		return true;
	size_t digits = 0, letters = 0, hex = 0;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (c >= '0' && c <= '9')
			digits++;
		else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
			letters++;
		hex += is_hex(c);
	}
	/* 42, 2024-01-31, 1.5: numbers, dates, versions */
	if (digits && !letters)
		return true;
	/* 5f3a9b2c, a git hash, an object id */
	if (hex == n && ((n >= 8 && digits) || n >= 16))
		return true;
	/* session ids, base64 tokens, slugs with serial numbers: long and mixed */
	if (n >= 16 && digits && letters)
		return true;
	return false;
}

size_t routes__heuristic(const char *path, size_t len, char *out, size_t cap)
{
	size_t o = 0, i = 0;
	if (!cap)
		return 0;
	while (i < len && o + 1 < cap) {
		if (path[i] == '/') {
			out[o++] = path[i++];
			continue;
		}
		size_t start = i;
		while (i < len && path[i] != '/')
			i++;
		size_t n = i - start;
		if (routes__looks_like_id(path + start, n)) {
			out[o++] = '*';
		} else {
			size_t room = cap - 1 - o;
			size_t k = n < room ? n : room;
			memcpy(out + o, path + start, k);
			o += k;
		}
	}
	out[o] = '\0';
	return o;
}

bool routes__match(struct routes *rt, const char *path, size_t len, char *out, size_t cap,
		   const char **route, size_t *route_len)
{
	for (int i = 0; i < rt->nignored; i++) {
		if (pattern_matches(&rt->ignored[i], path, len)) {
			rt->ignored_count++;
			return false;
		}
	}
	for (int i = 0; i < rt->npatterns; i++) {
		if (pattern_matches(&rt->patterns[i], path, len)) {
			*route = rt->patterns[i].text;
			*route_len = rt->patterns[i].len;
			return true;
		}
	}
	switch (rt->unmatched) {
	case UNMATCHED_PATH:
		*route = path;
		*route_len = len;
		break;
	case UNMATCHED_WILDCARD:
		*route = "/**";
		*route_len = 3;
		break;
	case UNMATCHED_HEURISTIC:
	default:
		*route_len = routes__heuristic(path, len, out, cap);
		*route = out;
		break;
	}
	return true;
}
