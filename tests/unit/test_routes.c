/* Routes: pattern matching ({id}, :id, *, **), ignored patterns, and the
 * three `unmatched` modes, the heuristic segment by segment. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "config/config.h"
#include "metrics/routes.h"

static struct string_list list(int n, const char **items)
{
	struct string_list l = {.count = n};
	for (int i = 0; i < n; i++)
		l.item[i] = (char *)items[i];
	return l;
}

/* The route of path, or "IGNORED". */
static const char *route_of(struct routes *rt, const char *path)
{
	static char result[8192];
	char scratch[4096 + 4];
	const char *route;
	size_t len;
	if (!routes__match(rt, path, strlen(path), scratch, sizeof(scratch), &route, &len))
		return "IGNORED";
	memcpy(result, route, len);
	result[len] = '\0';
	return result;
}

static void test_patterns(void)
{
	const char *pats[] = {"/users/{id}", "/users/{id}/orders/:order",
			      "/static/**",  "/files/*/meta",
			      "/",	     "/api/v1/items"};
	struct string_list p = list(6, pats);
	struct routes *rt = routes__new(&p, NULL, UNMATCHED_PATH);
	CHECK(rt != NULL);
	CHECK_STR(route_of(rt, "/users/42"), "/users/{id}");
	CHECK_STR(route_of(rt, "/users/alice"), "/users/{id}");
	CHECK_STR(route_of(rt, "/users/42/"), "/users/{id}");  /* trailing slash */
	CHECK_STR(route_of(rt, "//users//42"), "/users/{id}"); /* empty segments */
	CHECK_STR(route_of(rt, "/users/42/orders/7"), "/users/{id}/orders/:order");
	CHECK_STR(route_of(rt, "/users"), "/users"); /* a parameter needs a segment */
	CHECK_STR(route_of(rt, "/users/42/orders"), "/users/42/orders");
	CHECK_STR(route_of(rt, "/users/42/orders/7/x"), "/users/42/orders/7/x");
	CHECK_STR(route_of(rt, "/static"), "/static/**"); /* ** may match nothing */
	CHECK_STR(route_of(rt, "/static/css/site.css"), "/static/**");
	CHECK_STR(route_of(rt, "/files/a.txt/meta"), "/files/*/meta");
	CHECK_STR(route_of(rt, "/files/a.txt/other"), "/files/a.txt/other");
	CHECK_STR(route_of(rt, "/"), "/");
	CHECK_STR(route_of(rt, ""), "/");
	CHECK_STR(route_of(rt, "/api/v1/items"), "/api/v1/items");
	CHECK_STR(route_of(rt, "/api/v1/itemsx"), "/api/v1/itemsx"); /* whole segments only */
	CHECK_STR(route_of(rt, "/api/v1/item"), "/api/v1/item");
	CHECK_STR(route_of(rt, "/Users/42"), "/Users/42"); /* case matters */
	CHECK_INT(routes__ignored(rt), 0);
	routes__free(rt);
}

static void test_first_match_wins(void)
{
	const char *pats[] = {"/users/me", "/users/{id}", "/users/admin"};
	struct string_list p = list(3, pats);
	struct routes *rt = routes__new(&p, NULL, UNMATCHED_HEURISTIC);
	CHECK_STR(route_of(rt, "/users/me"), "/users/me");
	CHECK_STR(route_of(rt, "/users/admin"), "/users/{id}");
	routes__free(rt);
}

static void test_ignored(void)
{
	const char *pats[] = {"/users/{id}"};
	const char *ign[] = {"/metrics", "/health/**", "/users/{id}/avatar"};
	struct string_list p = list(1, pats), i = list(3, ign);
	struct routes *rt = routes__new(&p, &i, UNMATCHED_HEURISTIC);
	CHECK_STR(route_of(rt, "/metrics"), "IGNORED");
	CHECK_STR(route_of(rt, "/metrics/"), "IGNORED");
	CHECK_STR(route_of(rt, "/health"), "IGNORED");
	CHECK_STR(route_of(rt, "/health/live"), "IGNORED");
	CHECK_STR(route_of(rt, "/users/7/avatar"), "IGNORED"); /* ignored before patterns */
	CHECK_STR(route_of(rt, "/users/7"), "/users/{id}");
	CHECK_STR(route_of(rt, "/metricsx"), "/metricsx");
	CHECK_INT(routes__ignored(rt), 5);
	routes__free(rt);
}

static void test_unmatched_modes(void)
{
	struct routes *path = routes__new(NULL, NULL, UNMATCHED_PATH);
	struct routes *wild = routes__new(NULL, NULL, UNMATCHED_WILDCARD);
	struct routes *heur = routes__new(NULL, NULL, UNMATCHED_HEURISTIC);
	CHECK_STR(route_of(path, "/users/123"), "/users/123");
	CHECK_STR(route_of(wild, "/users/123"), "/**");
	CHECK_STR(route_of(wild, "/"), "/**");
	CHECK_STR(route_of(heur, "/users/123"), "/users/*");
	routes__free(path);
	routes__free(wild);
	routes__free(heur);
}

static void test_heuristic(void)
{
	struct routes *rt = routes__new(NULL, NULL, UNMATCHED_HEURISTIC);
	static const struct {
		const char *path, *route;
	} cases[] = {
	    {"/", "/"},
	    {"", ""},
	    {"/products", "/products"},
	    {"/users/123", "/users/*"},
	    {"/users/123/", "/users/*/"},
	    {"/users/123/orders/456", "/users/*/orders/*"},
	    {"/api/v1/users", "/api/v1/users"}, /* v1: a word with a digit */
	    {"/api/v2.1/users", "/api/v2.1/users"},
	    {"/items/2024-01-31", "/items/*"}, /* dates */
	    {"/price/1.5", "/price/*"},
	    {"/o/550e8400-e29b-41d4-a716-446655440000", "/o/*"}, /* UUID */
	    {"/o/550E8400-E29B-41D4-A716-446655440000/x", "/o/*/x"},
	    {"/commit/5f3a9b2c", "/commit/*"},			/* hex id */
	    {"/commit/5f3a9b2", "/commit/5f3a9b2"},		/* too short for hex */
	    {"/blob/deadbeefdeadbeef", "/blob/*"},		/* long hex without digits */
	    {"/blob/deadbeef", "/blob/deadbeef"},		/* could be a word */
	    {"/s/aZ3kQ9xT2mW7pL0v", "/s/*"},			/* random token */
	    {"/s/a1b2c3d4e5f6g7h", "/s/a1b2c3d4e5f6g7h"},	/* 15 chars: kept */
	    {"/internationalization", "/internationalization"}, /* long word, no digit */
	    {"/user-profile-settings", "/user-profile-settings"},
	    {"/index.html", "/index.html"},
	    {"/file2.txt", "/file2.txt"},
	    {"/v1", "/v1"},
	    {"/%20", "/*"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *got = route_of(rt, cases[i].path);
		if (strcmp(got, cases[i].route))
			fprintf(stderr, "heuristic(\"%s\") = \"%s\", want \"%s\"\n", cases[i].path,
				got, cases[i].route);
		CHECK_STR(got, cases[i].route);
	}
	routes__free(rt);
}

static void test_heuristic_bounds(void)
{
	/* The output never exceeds cap - 1 bytes and is NUL-terminated. */
	char out[8];
	size_t n = routes__heuristic("/abcdefghijklmnop", 17, out, sizeof(out));
	CHECK_INT(n, 7);
	CHECK_STR(out, "/abcdef");
	n = routes__heuristic("/1/2/3/4/5/6", 12, out, sizeof(out));
	CHECK_INT(n, 7);
	CHECK_STR(out, "/*/*/*/");
	n = routes__heuristic("/x", 2, out, 1);
	CHECK_INT(n, 0);
	CHECK_STR(out, "");
	/* Not NUL-terminated input: only len bytes are read. */
	const char path[] = {'/', 'a', '/', '1', '2'};
	n = routes__heuristic(path, 3, out, sizeof(out));
	CHECK_STR(out, "/a/");
	CHECK(routes__looks_like_id("12", 2));
	CHECK(!routes__looks_like_id("12", 0));
	CHECK(!routes__looks_like_id("abc", 3));
}

static void test_long_pattern_list(void)
{
	/* CONFIG_MAX_LIST patterns: the last one still matches. */
	struct string_list p = {.count = CONFIG_MAX_LIST};
	char bufs[CONFIG_MAX_LIST][32];
	for (int i = 0; i < CONFIG_MAX_LIST; i++) {
		snprintf(bufs[i], sizeof(bufs[i]), "/r%d/{id}", i);
		p.item[i] = bufs[i];
	}
	struct routes *rt = routes__new(&p, NULL, UNMATCHED_HEURISTIC);
	char want[32];
	snprintf(want, sizeof(want), "/r%d/{id}", CONFIG_MAX_LIST - 1);
	char path[32];
	snprintf(path, sizeof(path), "/r%d/xyz", CONFIG_MAX_LIST - 1);
	CHECK_STR(route_of(rt, path), want);
	routes__free(rt);
}

int main(void)
{
	test_patterns();
	test_first_match_wins();
	test_ignored();
	test_unmatched_modes();
	test_heuristic();
	test_heuristic_bounds();
	test_long_pattern_list();
	return check_done("test_routes");
}
