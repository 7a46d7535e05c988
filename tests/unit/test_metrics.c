/* The metrics registry (series, buckets, overflow, TTL, service references),
 * the Prometheus exposition of a known registry checked line by line, and the
 * OTLP metrics encoding decoded back with the protobuf-c generated code. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "config/config.h"
#include "discover/discover.h"
#include "export/otlp_metrics.h"
#include "export/prometheus.h"
#include "metrics/metrics.h"
#include "metrics/self_metrics.h"
#include "opentelemetry/proto/collector/metrics/v1/metrics_service.pb-c.h"
#include "request.h"
#include "version.h"

typedef Opentelemetry__Proto__Collector__Metrics__V1__ExportMetricsServiceRequest ExportRequest;
typedef Opentelemetry__Proto__Metrics__V1__ResourceMetrics ResourceMetrics;
typedef Opentelemetry__Proto__Metrics__V1__Metric Metric;
typedef Opentelemetry__Proto__Metrics__V1__HistogramDataPoint HistogramDataPoint;
typedef Opentelemetry__Proto__Metrics__V1__NumberDataPoint NumberDataPoint;
typedef Opentelemetry__Proto__Common__V1__KeyValue KeyValue;
#define request_unpack                                                                             \
	opentelemetry__proto__collector__metrics__v1__export_metrics_service_request__unpack
#define request_free                                                                               \
	opentelemetry__proto__collector__metrics__v1__export_metrics_service_request__free_unpacked
#define CUMULATIVE                                                                                 \
	OPENTELEMETRY__PROTO__METRICS__V1__AGGREGATION_TEMPORALITY__AGGREGATION_TEMPORALITY_CUMULATIVE

/* ---- stubs for discovery: the registry only references services */

static struct service svc_a = {.id = 1,
			       .refs = 1,
			       .root_pid = 100,
			       .name = "svc",
			       .namespace_ = "ns",
			       .instance_id = "host-a:100",
			       .exe_path = "/usr/bin/perl"};
static struct service svc_b = {.id = 2,
			       .refs = 1,
			       .root_pid = 200,
			       .name = "web",
			       .instance_id = "host-b:200",
			       .exe_path = "/usr/sbin/nginx"};

static struct service *const stub_services[] = {NULL, &svc_a, &svc_b};
#include "discovery_stub.h"

/* ---- helpers */

#define NS 1000000000ull
#define BASE (1000 * NS) /* CLOCK_MONOTONIC of the first record */

static struct rastro_config cfg;
static struct request req;

static void setup_config(uint32_t max_series)
{
	memset(&cfg, 0, sizeof(cfg));
	cfg.duration_buckets = (struct float_list){3, {0.1, 0.5, 1}};
	cfg.size_buckets = (struct float_list){2, {10, 100}};
	cfg.max_series = max_series;
	cfg.metrics_ttl_ms = 1000;
	cfg.resource_attributes.count = 1;
	cfg.resource_attributes.key[0] = "deployment.environment";
	cfg.resource_attributes.value[0] = "test";
}

/* An HTTP server record; body sizes < 0 are absent. */
static struct request *http_server(struct service *s, const char *method, int status,
				   const char *route, uint16_t port, uint64_t dur_ns,
				   int64_t req_body, int64_t resp_body)
{
	struct request *r = &req;
	request__init(r, REQ_HTTP_SERVER);
	r->service = s;
	r->method = request__store(r, method, strlen(method));
	r->method_known = !strcmp(method, "GET") || !strcmp(method, "POST");
	r->status = status;
	if (route)
		r->route = request__store(r, route, strlen(route));
	r->path = request__store(r, "/x", 2);
	r->tuple.local_port = port;
	r->tuple.remote_port = 40000;
	r->start_ns = BASE;
	r->end_ns = BASE + dur_ns;
	if (req_body >= 0) {
		r->has_request_body_size = true;
		r->request_body_bytes = (uint64_t)req_body;
	}
	if (resp_body >= 0) {
		r->has_response_body_size = true;
		r->response_body_bytes = (uint64_t)resp_body;
	}
	return r;
}

#define MS 1000000ull

/* svc A: GET /users/{id} 200 three times, POST /fail 500, a request without
 * response; svc B: one request whose route needs escaping. */
static struct metrics *known_registry(void)
{
	struct metrics *m = metrics__new(&cfg, BASE - NS);
	uint64_t t = BASE + NS;
	metrics__record(m, http_server(&svc_a, "GET", 200, "/users/{id}", 8080, 250 * MS, 0, 5), t);
	metrics__record(m, http_server(&svc_a, "GET", 200, "/users/{id}", 8080, 500 * MS, 50, 500),
			t);
	metrics__record(m, http_server(&svc_a, "GET", 200, "/users/{id}", 8080, 2 * NS, -1, -1), t);
	metrics__record(m, http_server(&svc_a, "POST", 500, "/fail", 8080, 100 * MS, 10, 0), t);
	struct request *r = http_server(&svc_a, "GET", 0, "/slow", 8080, 750 * MS, 0, -1);
	r->error_type = request__store(r, "no_response", 11);
	metrics__record(m, r, t);
	metrics__record(
	    m, http_server(&svc_b, "GET", 200, "/a\"b\\c\nd\xff", 9090, 62500000, -1, -1), t);
	return m;
}

/* ---- collecting points */

#define MAX_POINTS 16
struct collected {
	int n;
	struct {
		const struct service *svc;
		bool overflow;
		int nattrs;
		char attrs[512]; /* "k=v k=v" */
		uint64_t count, start_ns;
		double sum, min, max;
		int nbounds;
		uint64_t buckets[16];
	} p[MAX_POINTS];
};

static void collect(void *ctx, const struct metric_point *p)
{
	struct collected *c = ctx;
	if (c->n == MAX_POINTS)
		return;
	typeof(c->p[0]) *o = &c->p[c->n++];
	o->svc = p->service;
	o->overflow = p->overflow;
	o->nattrs = p->nattrs;
	o->attrs[0] = '\0';
	for (int i = 0; i < p->nattrs; i++) {
		size_t used = strlen(o->attrs);
		if (p->attrs[i].type == ATTR_INT)
			snprintf(o->attrs + used, sizeof(o->attrs) - used, "%s%s=%lld",
				 i ? " " : "", p->attrs[i].key, (long long)p->attrs[i].num);
		else
			snprintf(o->attrs + used, sizeof(o->attrs) - used, "%s%s=%.*s",
				 i ? " " : "", p->attrs[i].key, (int)p->attrs[i].len,
				 p->attrs[i].str);
	}
	o->count = p->count;
	o->start_ns = p->start_ns;
	o->sum = p->sum;
	o->min = p->min;
	o->max = p->max;
	o->nbounds = p->nbounds;
	for (int i = 0; i <= p->nbounds && i < 16; i++)
		o->buckets[i] = p->buckets[i];
}

static struct collected points(struct metrics *m, int metric, const struct service *svc)
{
	struct collected c = {0};
	metrics__foreach_point(m, metric, svc, collect, &c);
	return c;
}

/* ---- registry */

static void test_series_and_buckets(void)
{
	setup_config(100);
	struct metrics *m = known_registry();
	struct collected c = points(m, METRIC_HTTP_SERVER_DURATION, NULL);
	CHECK_INT(c.n, 4);
	CHECK_STR(c.p[0].attrs, "http.request.method=GET http.response.status_code=200 "
				"http.route=/users/{id} url.scheme=http server.port=8080");
	CHECK(c.p[0].svc == &svc_a);
	CHECK_INT(c.p[0].count, 3);
	/* bounds 0.1, 0.5, 1 are upper-inclusive: 0.25 and 0.5 in the second */
	CHECK_INT(c.p[0].buckets[0], 0);
	CHECK_INT(c.p[0].buckets[1], 2);
	CHECK_INT(c.p[0].buckets[2], 0);
	CHECK_INT(c.p[0].buckets[3], 1);
	CHECK(c.p[0].sum == 2.75);
	CHECK(c.p[0].min == 0.25);
	CHECK(c.p[0].max == 2.0);
	CHECK_INT(c.p[0].start_ns, BASE + NS);
	CHECK_STR(c.p[1].attrs, "http.request.method=POST http.response.status_code=500 "
				"http.route=/fail url.scheme=http server.port=8080 error.type=500");
	CHECK_INT(c.p[1].buckets[0], 1); /* exactly 0.1 s */
	CHECK_STR(c.p[2].attrs, "http.request.method=GET http.route=/slow url.scheme=http "
				"server.port=8080 error.type=no_response");
	CHECK(c.p[3].svc == &svc_b);

	/* Body sizes: only records that carry one count. */
	c = points(m, METRIC_HTTP_SERVER_REQUEST_SIZE, &svc_a);
	CHECK_INT(c.n, 3);
	CHECK_INT(c.p[0].count, 2);
	CHECK_INT(c.p[0].buckets[0], 1);
	CHECK_INT(c.p[0].buckets[1], 1);
	CHECK_INT(c.p[0].buckets[2], 0);
	CHECK(c.p[0].sum == 50);
	c = points(m, METRIC_HTTP_SERVER_RESPONSE_SIZE, &svc_a);
	CHECK_INT(c.n, 2);
	CHECK_INT(c.p[0].buckets[2], 1); /* 500 > 100 */
	CHECK(points(m, METRIC_HTTP_SERVER_REQUEST_SIZE, &svc_b).n == 0);

	/* Once a series exists, recording adds to it. */
	for (int i = 0; i < 1000; i++)
		metrics__record(
		    m, http_server(&svc_a, "GET", 200, "/users/{id}", 8080, 1 * MS, -1, -1),
		    BASE + 2 * NS);
	struct metrics_stats st;
	metrics__stats(m, &st);
	CHECK_INT(st.series[REQ_HTTP_SERVER], 4);
	CHECK_INT(st.services, 2);
	c = points(m, METRIC_HTTP_SERVER_DURATION, &svc_a);
	CHECK_INT(c.p[0].count, 1003);
	CHECK_INT(c.p[0].buckets[0], 1000);
	CHECK(c.p[0].min == 0.001);

	/* One reference per service while it has series. */
	CHECK_INT(svc_a.refs, 2);
	CHECK_INT(svc_b.refs, 2);

	/* A record without a service is counted, not stored. */
	struct request *r = http_server(&svc_a, "GET", 200, "/", 80, MS, -1, -1);
	r->service = NULL;
	metrics__record(m, r, BASE);
	metrics__stats(m, &st);
	CHECK_INT(st.dropped[METRICS_DROP_NO_SERVICE], 1);
	metrics__free(m);
	CHECK_INT(svc_a.refs, 1);
	CHECK_INT(svc_b.refs, 1);
}

static void test_other_kinds(void)
{
	setup_config(100);
	struct metrics *m = metrics__new(&cfg, BASE);
	struct request *r = &req;

	/* HTTP client: server.address from Host (without port), 4xx is an error */
	request__init(r, REQ_HTTP_CLIENT);
	r->service = &svc_a;
	r->method = request__store(r, "PURGE", 5); /* not a known method */
	r->status = 404;
	r->host = request__store(r, "api.example.com:8443", 20);
	r->tuple.remote_port = 8443;
	r->start_ns = BASE;
	r->end_ns = BASE + 20 * MS;
	r->has_response_body_size = true;
	r->response_body_bytes = 7;
	metrics__record(m, r, BASE);
	/* ...and the peer's address without a Host header */
	request__init(r, REQ_HTTP_CLIENT);
	r->service = &svc_a;
	r->method = request__store(r, "GET", 3);
	r->method_known = true;
	r->status = 200;
	r->tuple.remote_addr[10] = r->tuple.remote_addr[11] = 0xff;
	r->tuple.remote_addr[12] = 10;
	r->tuple.remote_addr[15] = 7;
	r->tuple.remote_port = 80;
	r->start_ns = BASE;
	r->end_ns = BASE + 20 * MS;
	metrics__record(m, r, BASE);
	struct collected c = points(m, METRIC_HTTP_CLIENT_DURATION, NULL);
	CHECK_INT(c.n, 2);
	CHECK_STR(c.p[0].attrs, "http.request.method=_OTHER http.response.status_code=404 "
				"server.address=api.example.com server.port=8443 url.scheme=http "
				"error.type=404");
	CHECK_STR(c.p[1].attrs, "http.request.method=GET http.response.status_code=200 "
				"server.address=10.0.0.7 server.port=80 url.scheme=http");
	CHECK_INT(points(m, METRIC_HTTP_CLIENT_RESPONSE_SIZE, NULL).n, 1);

	/* Database: the conventions' own buckets */
	request__init(r, REQ_DB_CLIENT);
	r->service = &svc_a;
	r->db_system = DB_POSTGRESQL;
	r->db_operation = request__store(r, "SELECT", 6);
	r->db_collection = request__store(r, "users", 5);
	r->db_status = request__store(r, "42P01", 5);
	r->tuple.remote_addr[10] = r->tuple.remote_addr[11] = 0xff;
	r->tuple.remote_addr[12] = 127;
	r->tuple.remote_addr[15] = 1;
	r->tuple.remote_port = 5432;
	r->start_ns = BASE;
	r->end_ns = BASE + 3 * MS;
	metrics__record(m, r, BASE);
	c = points(m, METRIC_DB_CLIENT_DURATION, NULL);
	CHECK_INT(c.n, 1);
	CHECK_STR(c.p[0].attrs, "db.system.name=postgresql db.operation.name=SELECT "
				"db.collection.name=users server.address=127.0.0.1 "
				"server.port=5432 error.type=42P01");
	CHECK_INT(c.p[0].nbounds, 9);
	CHECK_INT(c.p[0].buckets[0], 0);
	CHECK_INT(c.p[0].buckets[1], 1); /* 3 ms in (1 ms, 5 ms] */

	/* gRPC: on the server only server faults are errors */
	for (int status = 0; status < 3; status++) {
		static const int codes[] = {0, 5, 13};
		request__init(r, REQ_GRPC_SERVER);
		r->service = &svc_a;
		r->rpc_method = request__store(r, "shop.Cart/Get", 13);
		r->grpc_status = codes[status];
		r->start_ns = BASE;
		r->end_ns = BASE + MS;
		metrics__record(m, r, BASE);
	}
	request__init(r, REQ_GRPC_CLIENT);
	r->service = &svc_b;
	r->rpc_method = request__store(r, "shop.Cart/Get", 13);
	r->grpc_status = 5;
	metrics__record(m, r, BASE);
	c = points(m, METRIC_RPC_SERVER_DURATION, NULL);
	CHECK_INT(c.n, 3);
	CHECK_STR(c.p[0].attrs, "rpc.system.name=grpc rpc.method=shop.Cart/Get "
				"rpc.response.status_code=OK");
	CHECK_STR(c.p[1].attrs, "rpc.system.name=grpc rpc.method=shop.Cart/Get "
				"rpc.response.status_code=NOT_FOUND");
	CHECK_STR(c.p[2].attrs, "rpc.system.name=grpc rpc.method=shop.Cart/Get "
				"rpc.response.status_code=INTERNAL error.type=INTERNAL");
	c = points(m, METRIC_RPC_CLIENT_DURATION, NULL);
	CHECK_INT(c.n, 1);
	CHECK_STR(c.p[0].attrs, "rpc.system.name=grpc rpc.method=shop.Cart/Get "
				"rpc.response.status_code=NOT_FOUND error.type=NOT_FOUND");
	metrics__free(m);
	CHECK_INT(svc_a.refs, 1);
	CHECK_INT(svc_b.refs, 1);
}

static void test_overflow(void)
{
	setup_config(3);
	struct metrics *m = metrics__new(&cfg, BASE);
	const char *routes[] = {"/a", "/b", "/c", "/d", "/e"};
	for (int i = 0; i < 5; i++)
		metrics__record(m, http_server(&svc_a, "GET", 200, routes[i], 80, MS, -1, -1),
				BASE);
	/* existing series still take their records at the limit */
	metrics__record(m, http_server(&svc_a, "GET", 200, "/a", 80, MS, -1, -1), BASE);
	/* the limit is per metric, over all services: B overflows at once */
	metrics__record(m, http_server(&svc_b, "GET", 200, "/a", 80, MS, -1, -1), BASE);
	struct metrics_stats st;
	metrics__stats(m, &st);
	CHECK_INT(st.series[REQ_HTTP_SERVER], 3);
	CHECK_INT(st.overflow_series[REQ_HTTP_SERVER], 2);
	CHECK_INT(st.overflow_records[REQ_HTTP_SERVER], 3);
	struct collected c = points(m, METRIC_HTTP_SERVER_DURATION, &svc_a);
	CHECK_INT(c.n, 4);
	CHECK_INT(c.p[0].count, 2);
	CHECK(c.p[3].overflow);
	CHECK_STR(c.p[3].attrs, "otel.metric.overflow=true");
	CHECK_INT(c.p[3].count, 2);
	c = points(m, METRIC_HTTP_SERVER_DURATION, &svc_b);
	CHECK_INT(c.n, 1);
	CHECK_STR(c.p[0].attrs, "otel.metric.overflow=true");
	/* other kinds have their own limit */
	struct request *r = &req;
	request__init(r, REQ_DB_CLIENT);
	r->service = &svc_a;
	metrics__record(m, r, BASE);
	metrics__stats(m, &st);
	CHECK_INT(st.series[REQ_DB_CLIENT], 1);
	CHECK_INT(st.overflow_records[REQ_DB_CLIENT], 0);

	/* the overflow series is rendered with its single attribute */
	char *text = NULL;
	size_t len = 0;
	FILE *out = open_memstream(&text, &len);
	prometheus__render(out, m, &cfg, NULL);
	fclose(out);
	CHECK(strstr(text, "\nhttp_server_request_duration_seconds_count{service_name=\"svc\","
			   "service_namespace=\"ns\",otel_metric_overflow=\"true\"} 2\n") != NULL);
	CHECK(strstr(text, "\nrastro_metric_overflow_total{metric=\"http.server.request.duration\"}"
			   " 3\n") != NULL);
	CHECK(strstr(text, "\nrastro_metric_series{metric=\"http.server.request.duration\"} 3\n") !=
	      NULL);
	free(text);
	metrics__free(m);
}

static void test_ttl(void)
{
	setup_config(2);
	struct metrics *m = metrics__new(&cfg, BASE);
	metrics__record(m, http_server(&svc_a, "GET", 200, "/x", 80, MS, -1, -1), BASE);
	metrics__record(m, http_server(&svc_a, "GET", 200, "/y", 80, MS, -1, -1), BASE + 600 * MS);
	metrics__record(m, http_server(&svc_a, "GET", 200, "/z", 80, MS, -1, -1), BASE + 600 * MS);
	CHECK_INT(svc_a.refs, 2);
	CHECK_INT(metrics__expire(m, BASE + 999 * MS), 0);
	CHECK_INT(metrics__expire(m, BASE + 1000 * MS), 1); /* /x */
	struct collected c = points(m, METRIC_HTTP_SERVER_DURATION, NULL);
	CHECK_INT(c.n, 2);
	CHECK_STR(c.p[0].attrs, "http.request.method=GET http.response.status_code=200 "
				"http.route=/y url.scheme=http server.port=80");
	CHECK(c.p[1].overflow);
	/* room again below the limit: /x comes back as a new series, from zero */
	metrics__record(m, http_server(&svc_a, "GET", 200, "/x", 80, MS, -1, -1), BASE + 1100 * MS);
	c = points(m, METRIC_HTTP_SERVER_DURATION, NULL);
	CHECK_INT(c.n, 3);
	CHECK_INT(c.p[2].count, 1);
	CHECK_INT(c.p[2].start_ns, BASE + 1100 * MS);
	CHECK_INT(metrics__expire(m, BASE + 1600 * MS), 2); /* /y and the overflow series */
	CHECK_INT(metrics__expire(m, BASE + 2100 * MS), 1);
	struct metrics_stats st;
	metrics__stats(m, &st);
	CHECK_INT(st.series[REQ_HTTP_SERVER], 0);
	CHECK_INT(st.overflow_series[REQ_HTTP_SERVER], 0);
	CHECK_INT(st.expired_series, 4);
	CHECK_INT(st.services, 0);
	CHECK_INT(svc_a.refs, 1); /* the last series let the service go */
	CHECK_INT(points(m, METRIC_HTTP_SERVER_DURATION, NULL).n, 0);
	metrics__free(m);
}

struct count_ctx {
	uint64_t sum, n;
};

static void count_all(void *ctx, const struct metric_point *p)
{
	struct count_ctx *x = ctx;
	x->sum += p->count;
	x->n++;
}

/* Enough series to grow the maps and exercise removal in every order; with
 * hash_mask, every key hash is one of a few values and series share chains. */
static void many_series(uint64_t hash_mask)
{
	setup_config(5000);
	struct metrics *m = metrics__new(&cfg, BASE);
	metrics__set_hash_mask(m, hash_mask);
	char route[32];
	for (int i = 0; i < 4000; i++) {
		snprintf(route, sizeof(route), "/r/%d", i);
		struct service *s = i % 2 ? &svc_a : &svc_b;
		metrics__record(m, http_server(s, "GET", 200, route, 80, MS, -1, -1),
				BASE + (uint64_t)(i % 10) * 100 * MS);
	}
	struct metrics_stats st;
	metrics__stats(m, &st);
	CHECK_INT(st.series[REQ_HTTP_SERVER], 4000);
	/* records still find their series after removals around them */
	CHECK_INT(metrics__expire(m, BASE + 1500 * MS), 2400); /* last update <= 500 ms */
	for (int i = 0; i < 4000; i++) {
		snprintf(route, sizeof(route), "/r/%d", i);
		struct service *s = i % 2 ? &svc_a : &svc_b;
		metrics__record(m, http_server(s, "GET", 200, route, 80, MS, -1, -1),
				BASE + 1500 * MS);
	}
	metrics__stats(m, &st);
	CHECK_INT(st.series[REQ_HTTP_SERVER], 4000);
	struct count_ctx cc = {0, 0};
	metrics__foreach_point(m, METRIC_HTTP_SERVER_DURATION, NULL, count_all, &cc);
	uint64_t total = cc.sum;
	CHECK_INT(cc.n, 4000);
	CHECK_INT(total, 4000 + 1600); /* 1600 series kept their first record */
	metrics__free(m);
	CHECK_INT(svc_a.refs, 1);
	CHECK_INT(svc_b.refs, 1);
}

static void test_many_series(void)
{
	many_series(~0ull);
	many_series(7); /* chains of about 570 series */
}

/* ---- a reader that resumes (the streamed scrape) */

struct one_point {
	int seen[64]; /* by route number */
	int n;
};

static bool take_one(void *ctx, const struct metric_point *p)
{
	struct one_point *o = ctx;
	for (int i = 0; i < p->nattrs; i++) {
		if (!strcmp(p->attrs[i].key, "http.route")) {
			int route = atoi(p->attrs[i].str + 3); /* "/r/N" */
			if (route >= 0 && route < 64)
				o->seen[route]++;
		}
	}
	o->n++;
	return false; /* one point per call, like a scrape cut in small pieces */
}

static void record_route(struct metrics *m, struct service *s, int route, uint64_t now)
{
	char r[16];
	snprintf(r, sizeof(r), "/r/%d", route);
	metrics__record(m, http_server(s, "GET", 200, r, 80, MS, -1, -1), now);
}

/* Between two pieces, series are added and expired, and a service leaves:
 * every point is read at most once, none that was removed is touched (ASan),
 * and series created ahead of the cursor are read. */
static void test_cursor(void)
{
	setup_config(100);
	struct metrics *m = metrics__new(&cfg, BASE);
	for (int i = 0; i < 10; i++)
		record_route(m, i % 2 ? &svc_a : &svc_b, i, BASE + (uint64_t)i * 100 * MS);
	/* services in order of first appearance: b (even routes), then a (odd) */
	uint64_t sc = 0;
	CHECK(metrics__next_service(m, &sc) == &svc_b);
	CHECK(metrics__next_service(m, &sc) == &svc_a);
	CHECK(metrics__next_service(m, &sc) == NULL);

	struct metrics_cursor cur = {0};
	struct one_point o = {{0}, 0};
	CHECK(!metrics__points_from(m, METRIC_HTTP_SERVER_DURATION, &cur, take_one, &o));
	CHECK(!metrics__points_from(m, METRIC_HTTP_SERVER_DURATION, &cur, take_one, &o));
	CHECK_INT(o.n, 2); /* routes 0 and 2 of b */
	CHECK_INT(o.seen[0] + o.seen[2], 2);
	/* routes 0..4 expire, among them the series the cursor is on (2) */
	CHECK_INT(metrics__expire(m, BASE + 1450 * MS), 5);
	record_route(m, &svc_b, 20, BASE + 1500 * MS); /* after the cursor, in b */
	record_route(m, &svc_a, 21, BASE + 1500 * MS); /* in a, not read yet */
	while (!metrics__points_from(m, METRIC_HTTP_SERVER_DURATION, &cur, take_one, &o))
		;
	CHECK_INT(o.seen[0], 1);
	CHECK_INT(o.seen[2], 1);
	for (int r = 5; r < 10; r++)
		CHECK_INT(o.seen[r], 1);
	CHECK_INT(o.seen[20], 1);
	CHECK_INT(o.seen[21], 1);
	CHECK_INT(o.seen[1] + o.seen[3] + o.seen[4], 0);
	CHECK_INT(o.n, 2 + 5 + 2);
	/* at the end, stays at the end */
	CHECK(metrics__points_from(m, METRIC_HTTP_SERVER_DURATION, &cur, take_one, &o));
	CHECK_INT(o.n, 9);

	/* the whole service the cursor is in goes away */
	cur = (struct metrics_cursor){0};
	memset(&o, 0, sizeof(o));
	CHECK(!metrics__points_from(m, METRIC_HTTP_SERVER_DURATION, &cur, take_one, &o));
	CHECK_INT(metrics__expire(m, BASE + 2550 * MS), 7); /* all of them */
	record_route(m, &svc_a, 31, BASE + 2600 * MS); /* new entries for both services */
	record_route(m, &svc_b, 30, BASE + 2600 * MS);
	while (!metrics__points_from(m, METRIC_HTTP_SERVER_DURATION, &cur, take_one, &o))
		;
	CHECK_INT(o.seen[6], 1); /* the one read before */
	CHECK_INT(o.seen[30], 1);
	CHECK_INT(o.seen[31], 1);
	CHECK_INT(o.n, 3);
	metrics__free(m);
	CHECK_INT(svc_a.refs, 1);
	CHECK_INT(svc_b.refs, 1);
}

/* ---- Prometheus text */

static char *render(struct metrics *m, const struct self_stats *st)
{
	char *text = NULL;
	size_t len = 0;
	FILE *out = open_memstream(&text, &len);
	CHECK_INT(prometheus__render(out, m, &cfg, st), 0);
	fclose(out);
	return text;
}

#define A_GET                                                                                      \
	"service_name=\"svc\",service_namespace=\"ns\",http_request_method=\"GET\","               \
	"http_response_status_code=\"200\",http_route=\"/users/{id}\",url_scheme=\"http\","        \
	"server_port=\"8080\""
#define A_POST                                                                                     \
	"service_name=\"svc\",service_namespace=\"ns\",http_request_method=\"POST\","              \
	"http_response_status_code=\"500\",http_route=\"/fail\",url_scheme=\"http\","              \
	"server_port=\"8080\",error_type=\"500\""
#define A_SLOW                                                                                     \
	"service_name=\"svc\",service_namespace=\"ns\",http_request_method=\"GET\","               \
	"http_route=\"/slow\",url_scheme=\"http\",server_port=\"8080\",error_type=\"no_response\""
#define B_ODD                                                                                      \
	"service_name=\"web\",service_namespace=\"\",http_request_method=\"GET\","                 \
	"http_response_status_code=\"200\",http_route=\"/a\\\"b\\\\c\\nd\xEF\xBF\xBD\","           \
	"url_scheme=\"http\",server_port=\"9090\""
#define DUR "http_server_request_duration_seconds"
#define REQ "http_server_request_body_size_bytes"
#define RESP "http_server_response_body_size_bytes"

static void test_prometheus_text(void)
{
	setup_config(100);
	struct metrics *m = known_registry();
	char host[256] = "";
	gethostname(host, sizeof(host) - 1);
	char target_a[1024], target_b[1024];
	snprintf(target_a, sizeof(target_a),
		 "target_info{service_name=\"svc\",service_namespace=\"ns\",service_instance_id="
		 "\"host-a:100\",telemetry_sdk_name=\"rastro\",telemetry_sdk_language=\"perl\","
		 "telemetry_sdk_version=\"%s\",host_name=\"%s\",process_executable_path="
		 "\"/usr/bin/perl\",process_pid=\"100\",deployment_environment=\"test\"} 1",
		 RASTRO_VERSION, host);
	snprintf(target_b, sizeof(target_b),
		 "target_info{service_name=\"web\",service_instance_id=\"host-b:200\","
		 "telemetry_sdk_name=\"rastro\",telemetry_sdk_language=\"native\","
		 "telemetry_sdk_version=\"%s\",host_name=\"%s\",process_executable_path="
		 "\"/usr/sbin/nginx\",process_pid=\"200\",deployment_environment=\"test\"} 1",
		 RASTRO_VERSION, host);
	const char *want[] = {
	    "# HELP target_info Target metadata",
	    "# TYPE target_info gauge",
	    target_a,
	    target_b,
	    "# HELP " DUR " Duration of HTTP server requests.",
	    "# TYPE " DUR " histogram",
	    DUR "_bucket{" A_GET ",le=\"0.1\"} 0",
	    DUR "_bucket{" A_GET ",le=\"0.5\"} 2",
	    DUR "_bucket{" A_GET ",le=\"1\"} 2",
	    DUR "_bucket{" A_GET ",le=\"+Inf\"} 3",
	    DUR "_sum{" A_GET "} 2.75",
	    DUR "_count{" A_GET "} 3",
	    DUR "_bucket{" A_POST ",le=\"0.1\"} 1",
	    DUR "_bucket{" A_POST ",le=\"0.5\"} 1",
	    DUR "_bucket{" A_POST ",le=\"1\"} 1",
	    DUR "_bucket{" A_POST ",le=\"+Inf\"} 1",
	    DUR "_sum{" A_POST "} 0.1",
	    DUR "_count{" A_POST "} 1",
	    DUR "_bucket{" A_SLOW ",le=\"0.1\"} 0",
	    DUR "_bucket{" A_SLOW ",le=\"0.5\"} 0",
	    DUR "_bucket{" A_SLOW ",le=\"1\"} 1",
	    DUR "_bucket{" A_SLOW ",le=\"+Inf\"} 1",
	    DUR "_sum{" A_SLOW "} 0.75",
	    DUR "_count{" A_SLOW "} 1",
	    DUR "_bucket{" B_ODD ",le=\"0.1\"} 1",
	    DUR "_bucket{" B_ODD ",le=\"0.5\"} 1",
	    DUR "_bucket{" B_ODD ",le=\"1\"} 1",
	    DUR "_bucket{" B_ODD ",le=\"+Inf\"} 1",
	    DUR "_sum{" B_ODD "} 0.0625",
	    DUR "_count{" B_ODD "} 1",
	    "# HELP " REQ " Size of HTTP server request bodies.",
	    "# TYPE " REQ " histogram",
	    REQ "_bucket{" A_GET ",le=\"10\"} 1",
	    REQ "_bucket{" A_GET ",le=\"100\"} 2",
	    REQ "_bucket{" A_GET ",le=\"+Inf\"} 2",
	    REQ "_sum{" A_GET "} 50",
	    REQ "_count{" A_GET "} 2",
	    REQ "_bucket{" A_POST ",le=\"10\"} 1",
	    REQ "_bucket{" A_POST ",le=\"100\"} 1",
	    REQ "_bucket{" A_POST ",le=\"+Inf\"} 1",
	    REQ "_sum{" A_POST "} 10",
	    REQ "_count{" A_POST "} 1",
	    REQ "_bucket{" A_SLOW ",le=\"10\"} 1",
	    REQ "_bucket{" A_SLOW ",le=\"100\"} 1",
	    REQ "_bucket{" A_SLOW ",le=\"+Inf\"} 1",
	    REQ "_sum{" A_SLOW "} 0",
	    REQ "_count{" A_SLOW "} 1",
	    "# HELP " RESP " Size of HTTP server response bodies.",
	    "# TYPE " RESP " histogram",
	    RESP "_bucket{" A_GET ",le=\"10\"} 1",
	    RESP "_bucket{" A_GET ",le=\"100\"} 1",
	    RESP "_bucket{" A_GET ",le=\"+Inf\"} 2",
	    RESP "_sum{" A_GET "} 505",
	    RESP "_count{" A_GET "} 2",
	    RESP "_bucket{" A_POST ",le=\"10\"} 1",
	    RESP "_bucket{" A_POST ",le=\"100\"} 1",
	    RESP "_bucket{" A_POST ",le=\"+Inf\"} 1",
	    RESP "_sum{" A_POST "} 0",
	    RESP "_count{" A_POST "} 1",
	};
	size_t nwant = sizeof(want) / sizeof(want[0]);
	char *text = render(m, NULL);
	char *save, *line = strtok_r(text, "\n", &save);
	size_t i = 0;
	for (; line && i < nwant; i++, line = strtok_r(NULL, "\n", &save)) {
		if (strcmp(line, want[i]))
			fprintf(stderr, "line %zu:\n got: %s\nwant: %s\n", i + 1, line, want[i]);
		CHECK_STR(line, want[i]);
	}
	CHECK_INT(i, nwant);
	/* then the registry's own metrics */
	CHECK(line && !strncmp(line, "# HELP rastro_metric_series ", 28));
	free(text);

	/* self-metrics: counters get _total, labels per cause and signal */
	struct self_stats st;
	memset(&st, 0, sizeof(st));
	st.kernel[RASTRO_STAT_DATA_EVENTS] = 1234;
	st.kernel[RASTRO_LOSS_RINGBUF_FULL] = 3;
	st.kernel_skipped_runs = 6;
	st.conns.counters[CONN_PARSE_ERRORS] = 2;
	st.conns.connections = 5;
	st.traced_processes = 2;
	st.requests_ignored = 9;
	st.has_metrics_client = true;
	st.metrics_client.requests_sent = 11;
	st.metrics_client.failed_retryable = 4;
	st.metrics_client.queue_bytes = 4096;
	text = render(m, &st);
	static const char *const self_lines[] = {
	    "# TYPE rastro_events_received_total counter\nrastro_events_received_total 1234\n",
	    "rastro_events_lost_total{source=\"kernel\",cause=\"ringbuf_full\"} 3\n",
	    "rastro_events_lost_total{source=\"kernel\",cause=\"program_skipped\"} 6\n",
	    "rastro_events_lost_total{source=\"parser\",cause=\"parse_errors\"} 2\n",
	    "# TYPE rastro_connections gauge\nrastro_connections 5\n",
	    "rastro_instrumented_processes 2\n",
	    "rastro_requests_ignored_total 9\n",
	    "rastro_export_requests_total{signal=\"metrics\"} 11\n",
	    "rastro_export_failures_total{signal=\"metrics\",cause=\"retryable\"} 4\n",
	    "rastro_export_queue_bytes{signal=\"metrics\"} 4096\n",
	    "rastro_metric_series{metric=\"http.server.request.duration\"} 4\n",
	    "rastro_metric_records_dropped_total{cause=\"out_of_memory\"} 0\n",
	};
	for (size_t k = 0; k < sizeof(self_lines) / sizeof(self_lines[0]); k++) {
		if (!strstr(text, self_lines[k]))
			fprintf(stderr, "missing: %s", self_lines[k]);
		CHECK(strstr(text, self_lines[k]) != NULL);
	}
	CHECK(strstr(text, "signal=\"traces\"") == NULL); /* no traces client */
	CHECK(strstr(text, "rastro_spans_") == NULL);
	free(text);
	metrics__free(m);
}

static void test_label_names(void)
{
	char out[64];
	prometheus__label_name("http.response.status_code", out, sizeof(out));
	CHECK_STR(out, "http_response_status_code");
	prometheus__label_name("k8s.pod-name/x", out, sizeof(out));
	CHECK_STR(out, "k8s_pod_name_x");
	prometheus__label_name("9lives", out, sizeof(out));
	CHECK_STR(out, "key_9lives");
	prometheus__label_name("abcdefgh", out, 5);
	CHECK_STR(out, "abcd");
}

/* ---- OTLP */

static const KeyValue *find_attr(KeyValue **kv, size_t n, const char *key)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(kv[i]->key, key))
			return kv[i];
	return NULL;
}

static const char *str_attr(KeyValue **kv, size_t n, const char *key)
{
	const KeyValue *a = find_attr(kv, n, key);
	if (!a ||
	    a->value->value_case != OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE)
		return NULL;
	return a->value->string_value;
}

static long long int_attr(KeyValue **kv, size_t n, const char *key)
{
	const KeyValue *a = find_attr(kv, n, key);
	if (!a ||
	    a->value->value_case != OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_INT_VALUE)
		return -1;
	return a->value->int_value;
}

static const Metric *find_metric(const ResourceMetrics *rm, const char *name)
{
	for (size_t i = 0; i < rm->scope_metrics[0]->n_metrics; i++)
		if (!strcmp(rm->scope_metrics[0]->metrics[i]->name, name))
			return rm->scope_metrics[0]->metrics[i];
	return NULL;
}

static void test_otlp(void)
{
	setup_config(100);
	struct metrics *m = known_registry();
	struct otlp_metrics *om = otlp_metrics__new(&cfg);
	struct self_stats st;
	memset(&st, 0, sizeof(st));
	st.kernel[RASTRO_STAT_DATA_EVENTS] = 77;
	st.kernel_skipped_runs = 5;
	st.conns.connections = 3;
	const int64_t offset = 1700000000ll * (int64_t)NS;
	const uint64_t now = BASE + 5 * NS;
	size_t len = 0;
	uint64_t npoints = 0;
	uint8_t *buf = otlp_metrics__encode(om, m, &st, offset, now, &len, &npoints);
	CHECK(buf != NULL);
	ExportRequest *req_msg = request_unpack(NULL, len, buf);
	CHECK(req_msg != NULL);
	if (!req_msg)
		return;
	CHECK_INT(req_msg->n_resource_metrics, 3); /* svc, web, rastro itself */

	/* svc: resource, scope, three histograms */
	const ResourceMetrics *rm = req_msg->resource_metrics[0];
	KeyValue **ra = rm->resource->attributes;
	size_t nra = rm->resource->n_attributes;
	CHECK_STR(str_attr(ra, nra, "service.name"), "svc");
	CHECK_STR(str_attr(ra, nra, "service.namespace"), "ns");
	CHECK_STR(str_attr(ra, nra, "service.instance.id"), "host-a:100");
	CHECK_STR(str_attr(ra, nra, "telemetry.sdk.name"), "rastro");
	CHECK_STR(str_attr(ra, nra, "telemetry.sdk.language"), "perl");
	CHECK_STR(str_attr(ra, nra, "deployment.environment"), "test");
	CHECK_INT(int_attr(ra, nra, "process.pid"), 100);
	CHECK_INT(rm->n_scope_metrics, 1);
	CHECK_STR(rm->scope_metrics[0]->scope->name, "rastro");
	CHECK_STR(rm->scope_metrics[0]->scope->version, RASTRO_VERSION);
	CHECK_INT(rm->scope_metrics[0]->n_metrics, 3);
	const Metric *dur = rm->scope_metrics[0]->metrics[0];
	CHECK_STR(dur->name, "http.server.request.duration");
	CHECK_STR(dur->unit, "s");
	CHECK_INT(dur->data_case, OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_HISTOGRAM);
	CHECK_INT(dur->histogram->aggregation_temporality, CUMULATIVE);
	CHECK_INT(dur->histogram->n_data_points, 3);
	const HistogramDataPoint *dp = dur->histogram->data_points[0];
	CHECK_INT(dp->n_attributes, 5);
	CHECK_STR(str_attr(dp->attributes, dp->n_attributes, "http.request.method"), "GET");
	CHECK_INT(int_attr(dp->attributes, dp->n_attributes, "http.response.status_code"), 200);
	CHECK_STR(str_attr(dp->attributes, dp->n_attributes, "http.route"), "/users/{id}");
	CHECK_STR(str_attr(dp->attributes, dp->n_attributes, "url.scheme"), "http");
	CHECK_INT(int_attr(dp->attributes, dp->n_attributes, "server.port"), 8080);
	CHECK(dp->start_time_unix_nano == (uint64_t)((int64_t)(BASE + NS) + offset));
	CHECK(dp->time_unix_nano == (uint64_t)((int64_t)now + offset));
	CHECK_INT(dp->count, 3);
	CHECK_INT(dp->sum_present_case,
		  OPENTELEMETRY__PROTO__METRICS__V1__HISTOGRAM_DATA_POINT__SUM_PRESENT_SUM);
	CHECK(dp->sum == 2.75);
	CHECK_INT(dp->min_present_case,
		  OPENTELEMETRY__PROTO__METRICS__V1__HISTOGRAM_DATA_POINT__MIN_PRESENT_MIN);
	CHECK(dp->min == 0.25);
	CHECK(dp->max == 2.0);
	CHECK_INT(dp->n_explicit_bounds, 3);
	CHECK(dp->explicit_bounds[0] == 0.1 && dp->explicit_bounds[1] == 0.5 &&
	      dp->explicit_bounds[2] == 1);
	CHECK_INT(dp->n_bucket_counts, 4);
	CHECK_INT(dp->bucket_counts[0], 0);
	CHECK_INT(dp->bucket_counts[1], 2);
	CHECK_INT(dp->bucket_counts[2], 0);
	CHECK_INT(dp->bucket_counts[3], 1);
	dp = dur->histogram->data_points[1];
	CHECK_STR(str_attr(dp->attributes, dp->n_attributes, "error.type"), "500");
	const Metric *reqsz = rm->scope_metrics[0]->metrics[1];
	CHECK_STR(reqsz->name, "http.server.request.body.size");
	CHECK_STR(reqsz->unit, "By");
	CHECK_INT(reqsz->histogram->n_data_points, 3);
	CHECK(reqsz->histogram->data_points[0]->sum == 50);
	const Metric *respsz = rm->scope_metrics[0]->metrics[2];
	CHECK_STR(respsz->name, "http.server.response.body.size");
	CHECK_INT(respsz->histogram->n_data_points, 2);

	/* web: no namespace, its odd route made valid UTF-8 */
	rm = req_msg->resource_metrics[1];
	CHECK_STR(str_attr(rm->resource->attributes, rm->resource->n_attributes, "service.name"),
		  "web");
	CHECK(find_attr(rm->resource->attributes, rm->resource->n_attributes,
			"service.namespace") == NULL);
	CHECK_INT(rm->scope_metrics[0]->n_metrics, 1);
	dp = rm->scope_metrics[0]->metrics[0]->histogram->data_points[0];
	CHECK_STR(str_attr(dp->attributes, dp->n_attributes, "http.route"),
		  "/a\"b\\c\nd\xEF\xBF\xBD");

	/* rastro itself: sums and gauges */
	rm = req_msg->resource_metrics[2];
	CHECK_STR(str_attr(rm->resource->attributes, rm->resource->n_attributes, "service.name"),
		  "rastro");
	CHECK_STR(str_attr(rm->resource->attributes, rm->resource->n_attributes,
			   "deployment.environment"),
		  "test");
	const Metric *ev = find_metric(rm, "rastro_events_received");
	CHECK(ev != NULL);
	if (ev) {
		CHECK_INT(ev->data_case, OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_SUM);
		CHECK(ev->sum->is_monotonic);
		CHECK_INT(ev->sum->aggregation_temporality, CUMULATIVE);
		CHECK_INT(ev->sum->n_data_points, 1);
		const NumberDataPoint *np = ev->sum->data_points[0];
		CHECK_INT(np->value_case,
			  OPENTELEMETRY__PROTO__METRICS__V1__NUMBER_DATA_POINT__VALUE_AS_INT);
		CHECK_INT(np->as_int, 77);
		CHECK(np->start_time_unix_nano == (uint64_t)((int64_t)(BASE - NS) + offset));
	}
	const Metric *conns = find_metric(rm, "rastro_connections");
	CHECK(conns && conns->data_case == OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_GAUGE);
	if (conns)
		CHECK_INT(conns->gauge->data_points[0]->as_int, 3);
	const Metric *lost = find_metric(rm, "rastro_events_lost");
	CHECK(lost && lost->sum->n_data_points == 5 + CONN__COUNTERS);
	if (lost) {
		const NumberDataPoint *np = lost->sum->data_points[0];
		CHECK_STR(str_attr(np->attributes, np->n_attributes, "source"), "kernel");
		CHECK_STR(str_attr(np->attributes, np->n_attributes, "cause"), "ringbuf_full");
		np = lost->sum->data_points[4];
		CHECK_STR(str_attr(np->attributes, np->n_attributes, "source"), "kernel");
		CHECK_STR(str_attr(np->attributes, np->n_attributes, "cause"), "program_skipped");
		CHECK_INT(np->as_int, 5);
	}

	/* every data point is counted for the client's statistics */
	uint64_t total = 0;
	for (size_t r = 0; r < req_msg->n_resource_metrics; r++) {
		const Opentelemetry__Proto__Metrics__V1__ScopeMetrics *sm =
		    req_msg->resource_metrics[r]->scope_metrics[0];
		for (size_t i = 0; i < sm->n_metrics; i++) {
			const Metric *mt = sm->metrics[i];
			total +=
			    mt->data_case ==
				    OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_HISTOGRAM
				? mt->histogram->n_data_points
			    : mt->data_case == OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_SUM
				? mt->sum->n_data_points
				: mt->gauge->n_data_points;
		}
	}
	CHECK_INT(npoints, total);
	request_free(req_msg, NULL);
	free(buf);

	/* an empty registry and no sources: only the registry's self-metrics */
	struct metrics *empty = metrics__new(&cfg, BASE);
	buf = otlp_metrics__encode(om, empty, NULL, offset, now, &len, &npoints);
	req_msg = request_unpack(NULL, len, buf);
	CHECK(req_msg && req_msg->n_resource_metrics == 1);
	if (req_msg)
		request_free(req_msg, NULL);
	free(buf);
	metrics__free(empty);
	otlp_metrics__free(om);
	metrics__free(m);
}

int main(void)
{
	test_series_and_buckets();
	test_other_kinds();
	test_overflow();
	test_ttl();
	test_many_series();
	test_cursor();
	test_prometheus_text();
	test_label_names();
	test_otlp();
	return check_done("test_metrics");
}
