/* OTLP export: retry decisions, Retry-After, backoff, endpoint URL rules, the
 * client's bounded queue, the hand-written span encoder, whose output is
 * decoded back with the protobuf-c generated code and checked field by field,
 * and the span queue's reuse of its batches. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zlib.h>

#include "check.h"
#include "common/loop.h"
#include "config/config.h"
#include "discover/discover.h"
#include "export/otlp_client.h"
#include "export/otlp_traces.h"
#include "export/resource.h"
#include "protocols/http1.h"
#include "opentelemetry/proto/collector/trace/v1/trace_service.pb-c.h"
#include "request.h"
#include "semconv.h"
#include "version.h"

typedef Opentelemetry__Proto__Collector__Trace__V1__ExportTraceServiceRequest ExportRequest;
typedef Opentelemetry__Proto__Trace__V1__Span Span;
typedef Opentelemetry__Proto__Common__V1__KeyValue KeyValue;
typedef Opentelemetry__Proto__Trace__V1__ScopeSpans ScopeSpans;
#define request_unpack \
	opentelemetry__proto__collector__trace__v1__export_trace_service_request__unpack
#define request_free \
	opentelemetry__proto__collector__trace__v1__export_trace_service_request__free_unpacked
#define STATUS_CODE_ERROR OPENTELEMETRY__PROTO__TRACE__V1__STATUS__STATUS_CODE__STATUS_CODE_ERROR

/* ---- retry decisions */

static void test_classify(void)
{
	CHECK_INT(otlp_client__classify(OTLP_ERR_NONE, 200), OTLP_OK);
	CHECK_INT(otlp_client__classify(OTLP_ERR_NONE, 202), OTLP_OK);
	CHECK_INT(otlp_client__classify(OTLP_ERR_NONE, 204), OTLP_OK);
	/* the OTLP/HTTP spec's retryable statuses, and only those */
	CHECK_INT(otlp_client__classify(OTLP_ERR_NONE, 429), OTLP_RETRY);
	CHECK_INT(otlp_client__classify(OTLP_ERR_NONE, 502), OTLP_RETRY);
	CHECK_INT(otlp_client__classify(OTLP_ERR_NONE, 503), OTLP_RETRY);
	CHECK_INT(otlp_client__classify(OTLP_ERR_NONE, 504), OTLP_RETRY);
	static const long dropped[] = {100, 301, 302, 400, 401, 403, 404, 405, 408, 413,
				       415, 500, 501, 505, 599};
	for (size_t i = 0; i < sizeof(dropped) / sizeof(dropped[0]); i++)
		CHECK_INT(otlp_client__classify(OTLP_ERR_NONE, dropped[i]), OTLP_DROP);
	/* transport errors are retried; an unusable URL or no memory is not */
	CHECK_INT(otlp_client__classify(OTLP_ERR_CONNECT, 0), OTLP_RETRY);
	CHECK_INT(otlp_client__classify(OTLP_ERR_RESOLVE, 0), OTLP_RETRY);
	CHECK_INT(otlp_client__classify(OTLP_ERR_TIMEOUT, 0), OTLP_RETRY);
	CHECK_INT(otlp_client__classify(OTLP_ERR_RECV, 0), OTLP_RETRY);
	CHECK_INT(otlp_client__classify(OTLP_ERR_SEND, 0), OTLP_RETRY);
	CHECK_INT(otlp_client__classify(OTLP_ERR_RESPONSE, 0), OTLP_RETRY);
	CHECK_INT(otlp_client__classify(OTLP_ERR_TLS, 0), OTLP_RETRY);
	CHECK_INT(otlp_client__classify(OTLP_ERR_URL, 0), OTLP_DROP);
	CHECK_INT(otlp_client__classify(OTLP_ERR_NOMEM, 0), OTLP_DROP);
}

static int64_t ra(const char *v, int64_t now)
{
	return otlp_client__retry_after_ms(v, strlen(v), now);
}

static void test_retry_after(void)
{
	/* 2015-10-21 07:28:00 UTC */
	const int64_t t = 1445412480;
	CHECK_INT(ra("120", t), 120000);
	CHECK_INT(ra(" 3\r\n", t), 3000);
	CHECK_INT(ra("0", t), 0);
	CHECK_INT(ra("99999999999999999999", t), 600000); /* capped, no overflow */
	CHECK_INT(ra("", t), -1);
	CHECK_INT(ra("  \r\n", t), -1);
	CHECK_INT(ra("1.5", t), -1);
	CHECK_INT(ra("-1", t), -1);
	CHECK_INT(ra("soon", t), -1);
	CHECK_INT(ra("12abc", t), -1);
	/* HTTP-date, in its three forms (RFC 9110 5.6.7) */
	CHECK_INT(ra("Wed, 21 Oct 2015 07:28:10 GMT", t), 10000);
	CHECK_INT(ra("Wednesday, 21-Oct-15 07:28:30 GMT", t), 30000);
	CHECK_INT(ra("Wed Oct 21 07:29:00 2015", t), 60000);
	CHECK_INT(ra(" Wed, 21 Oct 2015 07:28:02 GMT\r\n", t), 2000);
	CHECK_INT(ra("Wed, 21 Oct 2015 07:27:00 GMT", t), 0);     /* in the past: now */
	CHECK_INT(ra("Wed, 21 Oct 2016 07:28:00 GMT", t), 600000); /* capped */
	CHECK_INT(ra("Wed, 99 Foo 2015 77:28:00 GMT", t), -1);
}

static void test_backoff(void)
{
	/* jitter in [base/2, base], base 1 s doubling up to 5 s */
	static const uint64_t base[] = {0, 1000, 2000, 4000, 5000, 5000, 5000};
	for (uint32_t a = 1; a <= 6; a++) {
		CHECK_INT(otlp_client__backoff_ms(a, 0), base[a] / 2);
		CHECK_INT(otlp_client__backoff_ms(a, base[a] / 2), base[a]);
		for (uint64_t rnd = 1; rnd < 1000000; rnd = rnd * 7 + 3) {
			uint64_t d = otlp_client__backoff_ms(a, rnd * 0x9E3779B97F4A7C15ULL);
			CHECK(d >= base[a] / 2 && d <= base[a]);
		}
	}
	CHECK_INT(otlp_client__backoff_ms(1000, ~0ull) <= 5000, 1);
}

/* ---- endpoint rules (OTLP exporter spec) */

static void check_url(const char *base, const char *signal, const char *want)
{
	char *u = config__signal_url(base, signal);
	CHECK_STR(u, want);
	free(u);
}

static void test_signal_url(void)
{
	check_url("http://collector:4318", "traces", "http://collector:4318/v1/traces");
	check_url("http://collector:4318/", "traces", "http://collector:4318/v1/traces");
	check_url("http://collector:4318", "metrics", "http://collector:4318/v1/metrics");
	check_url("https://h.example/otlp", "traces", "https://h.example/otlp/v1/traces");
	check_url("https://h.example/otlp/", "metrics", "https://h.example/otlp/v1/metrics");

	/* through config__load: the signal variable is used as is, the base one
	 * gets v1/<signal> appended */
	struct rastro_config cfg;
	char *argv[] = {"rastro", NULL};
	setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://base:4318/", 1);
	setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:9999/custom/path", 1);
	CHECK_INT(config__load(&cfg, 1, argv), 0);
	CHECK_STR(cfg.otlp_traces.endpoint, "http://traces:9999/custom/path");
	CHECK_STR(cfg.otlp_metrics.endpoint, "http://base:4318/v1/metrics");
	config__free(&cfg);
	unsetenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
	CHECK_INT(config__load(&cfg, 1, argv), 0);
	CHECK_STR(cfg.otlp_traces.endpoint, "http://base:4318/v1/traces");
	config__free(&cfg);
	unsetenv("OTEL_EXPORTER_OTLP_ENDPOINT");
	CHECK_INT(config__load(&cfg, 1, argv), 0);
	CHECK(cfg.otlp_traces.endpoint == NULL && cfg.otlp_metrics.endpoint == NULL);
	config__free(&cfg);
}

/* ---- the client's queue (nothing is sent: the loop never runs) */

static void test_client_queue(void)
{
	struct loop *loop = loop__new();
	struct otlp_signal sig = {.endpoint = "http://127.0.0.1:9/v1/traces", .timeout_ms = 1000};
	const char *why;
	struct otlp_client *c = otlp_client__new(loop, &sig, "traces", 1000, &why);
	struct otlp_client_stats st;
	uint8_t body[400];
	memset(body, 'x', sizeof(body));
	CHECK(c != NULL);
	CHECK_STR(otlp_client__signal(c), "traces");

	otlp_client__send(c, body, sizeof(body), 10); /* A: in flight */
	otlp_client__send(c, body, sizeof(body), 20); /* B */
	otlp_client__stats(c, &st);
	CHECK_INT(st.requests_sent, 1);
	CHECK_INT(st.queue_requests, 2);
	CHECK_INT(st.queue_bytes, 800);
	CHECK_INT(otlp_client__waiting(c), 1);

	/* C does not fit: the oldest request not in flight (B) goes */
	otlp_client__send(c, body, sizeof(body), 30);
	otlp_client__stats(c, &st);
	CHECK_INT(st.queue_requests, 2);
	CHECK_INT(st.queue_bytes, 800);
	CHECK_INT(st.dropped_queue_full, 1);
	CHECK_INT(st.dropped_items, 20);

	/* bigger than the whole queue: dropped at once */
	uint8_t big[1001] = {0};
	otlp_client__send(c, big, sizeof(big), 7);
	otlp_client__stats(c, &st);
	CHECK_INT(st.queue_requests, 2);
	CHECK_INT(st.dropped_queue_full, 2);
	CHECK_INT(st.dropped_items, 27);
	otlp_client__free(c);

	/* gzip: the queue holds (and counts) compressed bytes */
	sig.gzip = true;
	c = otlp_client__new(loop, &sig, "metrics", 1000, &why);
	uint8_t zeros[4000] = {0};
	otlp_client__send(c, zeros, sizeof(zeros), 1);
	otlp_client__stats(c, &st);
	CHECK_INT(st.queue_requests, 1);
	CHECK(st.queue_bytes > 18 && st.queue_bytes < 100);
	CHECK_INT(st.dropped_queue_full, 0);
	otlp_client__free(c);
	loop__free(loop);
}

/* ---- span encoding, decoded back with protobuf-c */

struct expected_attr {
	char key[64];
	enum attr_type type;
	char str[4096];
	size_t len;
	int64_t num;
};

struct expected {
	struct expected_attr a[48];
	int n;
};

static void collect(void *ctx, const struct attr *a)
{
	struct expected *e = ctx;
	if (e->n == 48)
		return;
	struct expected_attr *x = &e->a[e->n++];
	snprintf(x->key, sizeof(x->key), "%s", a->key);
	x->type = a->type;
	x->num = a->num;
	x->len = a->type == ATTR_STRING ? a->len : 0;
	if (x->len)
		memcpy(x->str, a->str, a->len);
}

/* Checks decoded key-values against what semconv/resource produce, in order. */
static void check_attrs(KeyValue **kv, size_t n, const struct expected *e)
{
	CHECK_INT(n, e->n);
	for (size_t i = 0; i < n && (int)i < e->n; i++) {
		const struct expected_attr *x = &e->a[i];
		CHECK_STR(kv[i]->key, x->key);
		CHECK(kv[i]->value != NULL);
		if (!kv[i]->value)
			continue;
		if (x->type == ATTR_INT) {
			CHECK_INT(kv[i]->value->value_case,
				  OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_INT_VALUE);
			CHECK_INT(kv[i]->value->int_value, x->num);
		} else {
			CHECK_INT(kv[i]->value->value_case,
				  OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE);
			CHECK_INT(strlen(kv[i]->value->string_value), x->len);
			CHECK(!memcmp(kv[i]->value->string_value, x->str, x->len));
		}
	}
}

static void set(struct request *r, struct rstr *f, const char *s)
{
	*f = request__store(r, s, strlen(s));
}

static void v4(uint8_t out[16], uint8_t a, uint8_t b, uint8_t c, uint8_t d)
{
	memset(out, 0, 16);
	out[10] = out[11] = 0xff;
	out[12] = a, out[13] = b, out[14] = c, out[15] = d;
}

static struct service svc_a = {.id = 1, .refs = 1, .root_pid = 4242, .name = "perlapp",
			       .namespace_ = "poc-ebpf", .instance_id = "host:4242",
			       .exe_path = "/usr/bin/perl"};
static struct service svc_b = {.id = 2, .refs = 1, .root_pid = 77, .name = "backend",
			       .instance_id = "host:77", .exe_path = "/usr/sbin/nginx"};

static void make_server(struct request *r, const char *path)
{
	request__init(r, REQ_HTTP_SERVER);
	r->service = &svc_a;
	r->pid = r->tid = 4242;
	v4(r->tuple.local_addr, 127, 0, 0, 1);
	v4(r->tuple.remote_addr, 10, 1, 2, 3);
	r->tuple.local_port = 8080;
	r->tuple.remote_port = 51234;
	r->start_ns = 1000000000ull;
	r->end_ns = 1002500000ull;
	set(r, &r->method, "GET");
	r->method_known = true;
	set(r, &r->path, path);
	set(r, &r->query, "id=42&name=bob");
	set(r, &r->route, "/users/{id}");
	set(r, &r->host, "shop.example:8080");
	set(r, &r->user_agent, "curl/7.88.1");
	set(r, &r->tracestate, "vendor=abc,other=1");
	r->status = 200;
	r->http_version = 11;
	r->response_body_bytes = 300;
	r->has_response_body_size = true;
	r->request_body_bytes = 0;
	r->has_request_body_size = true;
	for (int i = 0; i < 16; i++)
		r->trace_id[i] = (uint8_t)(0xa0 + i);
	for (int i = 0; i < 8; i++) {
		r->span_id[i] = (uint8_t)(0x10 + i);
		r->parent_span_id[i] = (uint8_t)(0xe0 + i);
	}
	r->has_parent = true;
	r->parent_remote = true; /* a traceparent header's, or a client end's */
	r->sampled = true;
	r->trace_flags = 1;
}

static void make_client(struct request *r)
{
	request__init(r, REQ_HTTP_CLIENT);
	r->service = &svc_b;
	r->pid = r->tid = 77;
	v4(r->tuple.local_addr, 127, 0, 0, 1);
	v4(r->tuple.remote_addr, 127, 0, 0, 2);
	r->tuple.local_port = 40000;
	r->tuple.remote_port = 9200;
	r->start_ns = 5000000000ull;
	r->end_ns = 5000000100ull;
	set(r, &r->method, "POST");
	r->method_known = true;
	set(r, &r->path, "/api/items");
	r->status = 503;
	r->http_version = 10;
	r->request_body_bytes = 12;
	r->has_request_body_size = true;
	memset(r->trace_id, 0x33, 16);
	memset(r->span_id, 0x44, 8);
	r->has_parent = false;
	r->sampled = true;
	r->trace_flags = 0; /* the sampled bit still goes out: exported spans are sampled */
}

static void check_span(const Span *s, const struct request *r, const struct rastro_config *cfg,
		       int64_t offset)
{
	char name[256], ebuf[16];
	semconv__span_name(r, name, sizeof(name));
	CHECK_INT(s->trace_id.len, 16);
	CHECK(s->trace_id.len == 16 && !memcmp(s->trace_id.data, r->trace_id, 16));
	CHECK_INT(s->span_id.len, 8);
	CHECK(s->span_id.len == 8 && !memcmp(s->span_id.data, r->span_id, 8));
	if (r->has_parent) {
		CHECK_INT(s->parent_span_id.len, 8);
		CHECK(s->parent_span_id.len == 8 &&
		      !memcmp(s->parent_span_id.data, r->parent_span_id, 8));
	} else {
		CHECK_INT(s->parent_span_id.len, 0);
	}
	CHECK_STR(s->trace_state, request__str(r, r->tracestate));
	CHECK_STR(s->name, name);
	CHECK_INT(s->kind, semconv__span_kind(r));
	CHECK_INT(s->start_time_unix_nano, (int64_t)r->start_ns + offset);
	CHECK_INT(s->end_time_unix_nano, (int64_t)r->end_ns + offset);
	/* Bit 8: whether the parent is remote is known; bit 9: it is. */
	CHECK_INT(s->flags, r->trace_flags | 1 | 0x100 | (r->parent_remote ? 0x200 : 0));
	CHECK_INT(s->dropped_attributes_count, 0);
	CHECK_INT(s->n_events, 0);
	CHECK_INT(s->n_links, 0);
	struct expected e = {0};
	semconv__span_attributes(r, cfg, collect, &e);
	check_attrs(s->attributes, s->n_attributes, &e);
	if (semconv__is_error(r)) {
		CHECK(s->status != NULL);
		if (s->status) {
			CHECK_INT(s->status->code, STATUS_CODE_ERROR);
			CHECK_STR(s->status->message, semconv__error_type(r, ebuf, sizeof(ebuf)));
		}
	} else {
		CHECK(s->status == NULL); /* UNSET */
	}
}

static void check_resource(const Opentelemetry__Proto__Trace__V1__ResourceSpans *rs,
			   const struct service *svc, const struct rastro_config *cfg)
{
	struct attr attrs[RESOURCE_MAX_ATTRS];
	struct expected e = {0};
	int n = resource__attributes(svc, cfg, attrs);
	for (int i = 0; i < n; i++)
		collect(&e, &attrs[i]);
	CHECK(rs->resource != NULL);
	if (rs->resource)
		check_attrs(rs->resource->attributes, rs->resource->n_attributes, &e);
	CHECK_INT(rs->n_scope_spans, 1);
	if (rs->n_scope_spans == 1) {
		CHECK(rs->scope_spans[0]->scope != NULL);
		CHECK_STR(rs->scope_spans[0]->scope->name, "rastro");
		CHECK_STR(rs->scope_spans[0]->scope->version, RASTRO_VERSION);
		CHECK_INT(rs->scope_spans[0]->scope->n_attributes, 0);
	}
}

static void test_span_encoding(void)
{
	struct rastro_config cfg;
	char *argv[] = {"rastro", NULL};
	setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test%20env,team=a%2Cb", 1);
	CHECK_INT(config__load(&cfg, 1, argv), 0);
	unsetenv("OTEL_RESOURCE_ATTRIBUTES");
	CHECK_INT(cfg.resource_attributes.count, 2);

	static struct request r[5];
	make_server(&r[0], "/users/42");
	make_client(&r[1]);
	/* a 500 without route, an unknown method, and a long path (multi-byte
	 * lengths) */
	make_server(&r[2], "/fail");
	r[2].route = (struct rstr){0, 0};
	r[2].status = 500;
	r[2].has_parent = false;
	r[2].tracestate = (struct rstr){0, 0};
	make_server(&r[3], "/x");
	set(&r[3], &r[3].method, "BREW");
	r[3].method_known = false;
	r[3].status = 0; /* no response */
	set(&r[3], &r[3].error_type, "response_missing");
	char longpath[3000];
	memset(longpath, 'p', sizeof(longpath) - 1);
	longpath[0] = '/';
	longpath[sizeof(longpath) - 1] = '\0';
	make_server(&r[4], longpath);
	r[4].service = &svc_b;

	const int64_t offset = 1700000000000000000ll;
	struct span_batch *b = span_batch__new();
	for (int i = 0; i < 5; i++)
		CHECK(span_batch__add(b, &r[i], &cfg, offset));
	CHECK_INT(span_batch__count(b), 5);
	CHECK_INT(svc_a.refs, 2); /* one reference per batch, not per span */
	CHECK_INT(svc_b.refs, 2);

	uint8_t *out = NULL;
	size_t cap = 0;
	size_t len = span_batch__encode(b, &cfg, &out, &cap);
	CHECK(len > 0 && len <= cap);
	ExportRequest *req = request_unpack(NULL, len, out);
	CHECK(req != NULL);
	if (req) {
		/* grouped by service, in order of first appearance */
		CHECK_INT(req->n_resource_spans, 2);
		if (req->n_resource_spans == 2) {
			check_resource(req->resource_spans[0], &svc_a, &cfg);
			check_resource(req->resource_spans[1], &svc_b, &cfg);
			ScopeSpans *a = req->resource_spans[0]->scope_spans[0];
			ScopeSpans *bb = req->resource_spans[1]->scope_spans[0];
			CHECK_INT(a->n_spans, 3);
			CHECK_INT(bb->n_spans, 2);
			if (a->n_spans == 3 && bb->n_spans == 2) {
				check_span(a->spans[0], &r[0], &cfg, offset);
				check_span(a->spans[1], &r[2], &cfg, offset);
				check_span(a->spans[2], &r[3], &cfg, offset);
				check_span(bb->spans[0], &r[1], &cfg, offset);
				check_span(bb->spans[1], &r[4], &cfg, offset);
				/* spot checks of values, not only agreement with semconv */
				CHECK_STR(a->spans[0]->name, "GET /users/{id}");
				CHECK_STR(a->spans[1]->name, "GET");
				CHECK_STR(a->spans[1]->status->message, "500");
				CHECK_STR(a->spans[2]->status->message, "response_missing");
				CHECK_STR(bb->spans[0]->name, "POST");
				CHECK_INT(bb->spans[0]->kind, 3);
				CHECK_STR(bb->spans[0]->status->message, "503");
				CHECK_INT(a->spans[0]->start_time_unix_nano, 1700000001000000000ll);
				CHECK_INT(a->spans[0]->end_time_unix_nano, 1700000001002500000ll);
			}
			KeyValue **ra = req->resource_spans[0]->resource->attributes;
			CHECK_STR(ra[0]->key, "service.name");
			CHECK_STR(ra[0]->value->string_value, "perlapp");
			size_t nra = req->resource_spans[0]->resource->n_attributes;
			CHECK_STR(ra[nra - 2]->key, "deployment.environment");
			CHECK_STR(ra[nra - 2]->value->string_value, "test env");
			CHECK_STR(ra[nra - 1]->value->string_value, "a,b");
		}
		request_free(req, NULL);
	}

	/* cleared: references dropped, memory kept; an empty batch encodes to
	 * an empty request */
	span_batch__clear(b);
	CHECK_INT(svc_a.refs, 1);
	CHECK_INT(svc_b.refs, 1);
	CHECK_INT(span_batch__encode(b, &cfg, &out, &cap), 0);

	/* many spans, one service: every span comes back in order */
	for (int i = 0; i < 1000; i++) {
		r[0].span_id[0] = (uint8_t)i;
		r[0].span_id[1] = (uint8_t)(i >> 8);
		CHECK(span_batch__add(b, &r[0], &cfg, offset));
	}
	len = span_batch__encode(b, &cfg, &out, &cap);
	req = request_unpack(NULL, len, out);
	CHECK(req && req->n_resource_spans == 1);
	if (req && req->n_resource_spans == 1) {
		ScopeSpans *s = req->resource_spans[0]->scope_spans[0];
		CHECK_INT(s->n_spans, 1000);
		for (size_t i = 0; i < s->n_spans; i++)
			CHECK_INT(s->spans[i]->span_id.data[0] | s->spans[i]->span_id.data[1] << 8,
				  (int)i);
		check_span(s->spans[999], &r[0], &cfg, offset);
	}
	if (req)
		request_free(req, NULL);
	span_batch__free(b);
	CHECK_INT(svc_a.refs, 1);
	free(out);
	config__free(&cfg);
}

/* Span status of a 4xx: an error on a CLIENT span (the call failed for the
 * caller), UNSET on a SERVER span (the client's fault, not the server's). */
static void test_span_status_4xx(void)
{
	struct rastro_config cfg;
	char *argv[] = {"rastro", NULL};
	CHECK_INT(config__load(&cfg, 1, argv), 0);

	static struct request r[2];
	make_client(&r[0]);
	r[0].service = &svc_a;
	r[0].status = 404;
	make_server(&r[1], "/missing");
	r[1].status = 404;
	CHECK(semconv__is_error(&r[0]));
	CHECK(!semconv__is_error(&r[1]));

	const int64_t offset = 1700000000000000000ll;
	struct span_batch *b = span_batch__new();
	for (int i = 0; i < 2; i++)
		CHECK(span_batch__add(b, &r[i], &cfg, offset));
	uint8_t *out = NULL;
	size_t cap = 0;
	size_t len = span_batch__encode(b, &cfg, &out, &cap);
	CHECK(len > 0 && len <= cap);
	ExportRequest *req = request_unpack(NULL, len, out);
	CHECK(req != NULL);
	if (req) {
		CHECK_INT(req->n_resource_spans, 1);
		ScopeSpans *s = req->n_resource_spans == 1 ? req->resource_spans[0]->scope_spans[0]
							   : NULL;
		CHECK(s && s->n_spans == 2);
		if (s && s->n_spans == 2) {
			check_span(s->spans[0], &r[0], &cfg, offset);
			check_span(s->spans[1], &r[1], &cfg, offset);
			/* the values themselves */
			CHECK_INT(s->spans[0]->kind, 3); /* SPAN_KIND_CLIENT */
			CHECK(s->spans[0]->status != NULL);
			if (s->spans[0]->status) {
				CHECK_INT(s->spans[0]->status->code, STATUS_CODE_ERROR);
				CHECK_STR(s->spans[0]->status->message, "404");
			}
			CHECK_INT(s->spans[1]->kind, 2); /* SPAN_KIND_SERVER */
			CHECK(s->spans[1]->status == NULL); /* UNSET */
		}
		request_free(req, NULL);
	}
	span_batch__free(b);
	CHECK_INT(svc_a.refs, 1);
	free(out);
	config__free(&cfg);
}

/* ---- the span queue reuses its batches */

/* A backend on a loopback port, in a thread: answers each OTLP request (one
 * keep-alive connection at a time) with 200 until it has answered want. */
struct backend {
	int fd, port, want, answered;
};

/* Reads one request, its head read by rastro's own HTTP/1 parser. */
static bool read_request(int c, char *buf, size_t cap)
{
	struct http1_head h;
	size_t len = 0;
	int head;
	while ((head = http1__parse_request_head(buf, len, &h)) == HTTP1_NEED_MORE) {
		ssize_t n = len < cap ? read(c, buf + len, cap - len) : -1;
		if (n <= 0)
			return false;
		len += (size_t)n;
	}
	if (head < 0 || h.content_length < 0)
		return false;
	size_t have = len - (size_t)head, body = (size_t)h.content_length;
	char sink[4096];
	while (have < body) {
		ssize_t n = read(c, sink, body - have < sizeof(sink) ? body - have : sizeof(sink));
		if (n <= 0)
			return false;
		have += (size_t)n;
	}
	return have == body; /* the client sends one request at a time */
}

static void *backend_run(void *arg)
{
	struct backend *b = arg;
	static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\n"
				 "Content-Length: 0\r\n\r\n";
	char buf[8192];
	while (b->answered < b->want) {
		int c = accept(b->fd, NULL, NULL);
		if (c < 0)
			break;
		while (b->answered < b->want && read_request(c, buf, sizeof(buf)) &&
		       write(c, ok, sizeof(ok) - 1) == (ssize_t)sizeof(ok) - 1)
			b->answered++; /* read by the test after the join */
		close(c);
	}
	return NULL;
}

static void test_batches_reused(void)
{
	struct rastro_config cfg;
	char *argv[] = {"rastro", NULL};
	CHECK_INT(config__load(&cfg, 1, argv), 0);
	cfg.traces_batch_size = 64;

	struct backend be = {.want = 24};
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t slen = sizeof(sa);
	be.fd = socket(AF_INET, SOCK_STREAM, 0);
	CHECK(be.fd >= 0 && !bind(be.fd, (struct sockaddr *)&sa, sizeof(sa)) && !listen(be.fd, 4) &&
	      !getsockname(be.fd, (struct sockaddr *)&sa, &slen));
	be.port = ntohs(sa.sin_port);
	pthread_t th;
	CHECK_INT(pthread_create(&th, NULL, backend_run, &be), 0);

	struct loop *loop = loop__new();
	char url[64];
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/traces", be.port);
	struct otlp_signal sig = {.endpoint = url, .timeout_ms = 5000};
	const char *why;
	struct otlp_client *c = otlp_client__new(loop, &sig, "traces", 1 << 20, &why);
	CHECK(c != NULL);
	int64_t offset = 0;
	struct otlp_traces *t = otlp_traces__new(loop, &cfg, c, &offset);
	static struct request r;
	make_server(&r, "/users/42");
	struct otlp_traces_stats st;

	/* Steady state: each full batch goes out, and the next one is the same
	 * batch again (before, the next batch went to the next ring slot and
	 * was allocated there, its buffer grown again from 16 KiB: 10 for 10). */
	for (int i = 0; i < 10; i++) {
		for (int k = 0; k < 64; k++)
			otlp_traces__add(t, &r);
		CHECK(otlp_client__flush(c, loop__now_ns() / 1000000 + 5000));
	}
	otlp_traces__stats(t, &st);
	CHECK_INT(st.exported, 640);
	CHECK_INT(st.queued, 0);
	CHECK_INT(st.batches_allocated, 1);

	/* A backlog of 7 batches: the first two go to the client at once (one
	 * in flight, one waiting), each the spare again; the other five wait
	 * in the ring: the spare and four new ones. Once all are sent, four
	 * are kept (SPARE_BATCHES; the fifth is freed), so the same backlog
	 * again allocates one. */
	for (int k = 0; k < 64 * 7; k++)
		otlp_traces__add(t, &r);
	otlp_traces__stats(t, &st);
	CHECK_INT(st.batches_allocated, 5);
	CHECK_INT(st.queued, 64 * 5);
	CHECK(otlp_client__flush(c, loop__now_ns() / 1000000 + 5000));
	for (int k = 0; k < 64 * 7; k++)
		otlp_traces__add(t, &r);
	otlp_traces__stats(t, &st);
	CHECK_INT(st.batches_allocated, 6);
	CHECK(otlp_client__flush(c, loop__now_ns() / 1000000 + 5000));
	otlp_traces__stats(t, &st);
	CHECK_INT(st.exported, 640 + 2 * 448);
	CHECK_INT(st.queued, 0);

	/* The client's close ends the backend's connection, and the shutdown
	 * its accept, whatever went wrong above: the join cannot hang. */
	otlp_traces__free(t);
	otlp_client__free(c);
	shutdown(be.fd, SHUT_RDWR);
	pthread_join(th, NULL);
	CHECK_INT(be.answered, 24);
	loop__free(loop);
	close(be.fd);
	config__free(&cfg);
}

int main(void)
{
	log__set_level(LOG_ERROR);
	setenv("RASTRO_OPEN_PORT", "8080", 1); /* config__load wants something to instrument */
	test_classify();
	test_retry_after();
	test_backoff();
	test_signal_url();
	test_client_queue();
	test_span_encoding();
	test_span_status_4xx();
	test_batches_reused();
	return check_done("test_otlp");
}
