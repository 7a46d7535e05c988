/*
 * OTLP metrics encoder. The message tree is built in a bump arena (one
 * export every otel_metrics_export.interval: allocation here costs nothing
 * that matters), packed by protobuf-c, and the arena freed in one go.
 */
#include "export/otlp_metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/utf8.h"
#include "discover/discover.h"
#include "export/resource.h"
#include "metrics/self_metrics.h"
#include "opentelemetry/proto/collector/metrics/v1/metrics_service.pb-c.h"
#include "version.h"

typedef Opentelemetry__Proto__Common__V1__KeyValue KeyValue;
typedef Opentelemetry__Proto__Common__V1__AnyValue AnyValue;
typedef Opentelemetry__Proto__Common__V1__InstrumentationScope Scope;
typedef Opentelemetry__Proto__Resource__V1__Resource Resource;
typedef Opentelemetry__Proto__Metrics__V1__ResourceMetrics ResourceMetrics;
typedef Opentelemetry__Proto__Metrics__V1__ScopeMetrics ScopeMetrics;
typedef Opentelemetry__Proto__Metrics__V1__Metric Metric;
typedef Opentelemetry__Proto__Metrics__V1__Histogram Histogram;
typedef Opentelemetry__Proto__Metrics__V1__HistogramDataPoint HistogramDataPoint;
typedef Opentelemetry__Proto__Metrics__V1__Sum Sum;
typedef Opentelemetry__Proto__Metrics__V1__Gauge Gauge;
typedef Opentelemetry__Proto__Metrics__V1__NumberDataPoint NumberDataPoint;
typedef Opentelemetry__Proto__Collector__Metrics__V1__ExportMetricsServiceRequest ExportRequest;

#define CUMULATIVE                                                                                 \
	OPENTELEMETRY__PROTO__METRICS__V1__AGGREGATION_TEMPORALITY__AGGREGATION_TEMPORALITY_CUMULATIVE
#define REQUEST_INIT                                                                               \
	OPENTELEMETRY__PROTO__COLLECTOR__METRICS__V1__EXPORT_METRICS_SERVICE_REQUEST__INIT
#define request_packed_size                                                                        \
	opentelemetry__proto__collector__metrics__v1__export_metrics_service_request__get_packed_size
#define request_pack                                                                               \
	opentelemetry__proto__collector__metrics__v1__export_metrics_service_request__pack
#define SELF_MAX_FAMILIES 64

struct otlp_metrics {
	const struct rastro_config *cfg;
	char hostname[256];
	char instance_id[300];
};

/* ---- arena */

struct arena_chunk {
	struct arena_chunk *next;
	size_t used, cap;
	_Alignas(16) unsigned char data[];
};

struct arena {
	struct arena_chunk *head;
	bool failed;
};

static void *arena_alloc(struct arena *a, size_t n)
{
	n = (n + 15) & ~(size_t)15;
	struct arena_chunk *c = a->head;
	if (!c || c->cap - c->used < n) {
		size_t cap = n > 65536 ? n : 65536;
		c = malloc(sizeof(*c) + cap);
		if (!c) {
			a->failed = true;
			return NULL;
		}
		c->next = a->head;
		c->used = 0;
		c->cap = cap;
		a->head = c;
	}
	void *p = c->data + c->used;
	c->used += n;
	memset(p, 0, n);
	return p;
}

static void arena_free(struct arena *a)
{
	while (a->head) {
		struct arena_chunk *next = a->head->next;
		free(a->head);
		a->head = next;
	}
}

/* A NUL-terminated copy with invalid UTF-8 replaced by U+FFFD (protobuf
 * strings must be UTF-8; receivers reject the whole request otherwise). */
static char *arena_str(struct arena *a, const char *s, size_t len)
{
	char *out = arena_alloc(a, len * 3 + 1);
	if (!out)
		return (char *)"";
	size_t o = 0, i = 0;
	while (i < len) {
		size_t n = utf8__char_len(s + i, len - i);
		if (n) {
			memcpy(out + o, s + i, n);
			o += n;
			i += n;
		} else {
			memcpy(out + o, "\xEF\xBF\xBD", 3);
			o += 3;
			i++;
		}
	}
	out[o] = '\0';
	return out;
}

#define NEW(a, type, init)                                                                         \
	({                                                                                         \
		type *p_ = arena_alloc((a), sizeof(type));                                         \
		if (p_)                                                                            \
			*p_ = (type)init;                                                          \
		p_;                                                                                \
	})

static KeyValue *key_value(struct arena *a, const struct attr *at)
{
	KeyValue *kv = NEW(a, KeyValue, OPENTELEMETRY__PROTO__COMMON__V1__KEY_VALUE__INIT);
	AnyValue *v = NEW(a, AnyValue, OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__INIT);
	if (!kv || !v)
		return NULL;
	kv->key = arena_str(a, at->key, strlen(at->key));
	if (at->type == ATTR_INT) {
		v->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_INT_VALUE;
		v->int_value = at->num;
	} else {
		v->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE;
		v->string_value = arena_str(a, at->str, at->len);
	}
	kv->value = v;
	return kv;
}

static KeyValue **key_values(struct arena *a, const struct attr *attrs, int n)
{
	KeyValue **out = arena_alloc(a, sizeof(*out) * (size_t)(n ? n : 1));
	if (!out)
		return NULL;
	for (int i = 0; i < n; i++)
		if (!(out[i] = key_value(a, &attrs[i])))
			return NULL;
	return out;
}

static ScopeMetrics *scope_metrics(struct arena *a, size_t nmetrics)
{
	ScopeMetrics *sm =
	    NEW(a, ScopeMetrics, OPENTELEMETRY__PROTO__METRICS__V1__SCOPE_METRICS__INIT);
	Scope *scope = NEW(a, Scope, OPENTELEMETRY__PROTO__COMMON__V1__INSTRUMENTATION_SCOPE__INIT);
	Metric **metrics = arena_alloc(a, sizeof(*metrics) * (nmetrics ? nmetrics : 1));
	if (!sm || !scope || !metrics)
		return NULL;
	scope->name = (char *)"rastro";
	scope->version = (char *)RASTRO_VERSION;
	sm->scope = scope;
	sm->metrics = metrics;
	return sm;
}

static ResourceMetrics *resource_metrics(struct arena *a, const struct attr *attrs, int nattrs,
					 ScopeMetrics *sm)
{
	ResourceMetrics *rm =
	    NEW(a, ResourceMetrics, OPENTELEMETRY__PROTO__METRICS__V1__RESOURCE_METRICS__INIT);
	Resource *res = NEW(a, Resource, OPENTELEMETRY__PROTO__RESOURCE__V1__RESOURCE__INIT);
	ScopeMetrics **sms = arena_alloc(a, sizeof(*sms));
	if (!rm || !res || !sms || !sm)
		return NULL;
	res->attributes = key_values(a, attrs, nattrs);
	res->n_attributes = (size_t)nattrs;
	sms[0] = sm;
	rm->resource = res;
	rm->scope_metrics = sms;
	rm->n_scope_metrics = 1;
	return rm;
}

/* ---- the registry's histograms */

struct encode {
	struct arena arena;
	const struct rastro_config *cfg;
	int64_t offset;
	uint64_t now_unix;
	uint64_t points;
	/* current metric */
	size_t n, cap;
	HistogramDataPoint **dps;
};

static void count_point(void *ctx, const struct metric_point *p)
{
	(void)p;
	(*(size_t *)ctx)++;
}

static void add_point(void *ctx, const struct metric_point *p)
{
	struct encode *e = ctx;
	struct arena *a = &e->arena;
	if (e->n == e->cap)
		return; /* cannot happen: counted just before, on the same thread */
	HistogramDataPoint *dp = NEW(a, HistogramDataPoint,
				     OPENTELEMETRY__PROTO__METRICS__V1__HISTOGRAM_DATA_POINT__INIT);
	uint64_t *counts = arena_alloc(a, sizeof(uint64_t) * ((size_t)p->nbounds + 1));
	double *bounds = arena_alloc(a, sizeof(double) * ((size_t)p->nbounds + 1));
	if (!dp || !counts || !bounds)
		return;
	dp->attributes = key_values(a, p->attrs, p->nattrs);
	dp->n_attributes = (size_t)p->nattrs;
	dp->start_time_unix_nano = (uint64_t)((int64_t)p->start_ns + e->offset);
	dp->time_unix_nano = e->now_unix;
	dp->count = p->count;
	dp->sum_present_case =
	    OPENTELEMETRY__PROTO__METRICS__V1__HISTOGRAM_DATA_POINT__SUM_PRESENT_SUM;
	dp->sum = p->sum;
	dp->min_present_case =
	    OPENTELEMETRY__PROTO__METRICS__V1__HISTOGRAM_DATA_POINT__MIN_PRESENT_MIN;
	dp->min = p->min;
	dp->max_present_case =
	    OPENTELEMETRY__PROTO__METRICS__V1__HISTOGRAM_DATA_POINT__MAX_PRESENT_MAX;
	dp->max = p->max;
	memcpy(counts, p->buckets, sizeof(uint64_t) * ((size_t)p->nbounds + 1));
	memcpy(bounds, p->bounds, sizeof(double) * (size_t)p->nbounds);
	dp->bucket_counts = counts;
	dp->n_bucket_counts = (size_t)p->nbounds + 1;
	dp->explicit_bounds = bounds;
	dp->n_explicit_bounds = (size_t)p->nbounds;
	e->dps[e->n++] = dp;
	e->points++;
}

static Metric *histogram_metric(struct encode *e, const struct metrics *m, int metric,
				const struct service *svc)
{
	struct arena *a = &e->arena;
	size_t n = 0;
	metrics__foreach_point(m, metric, svc, count_point, &n);
	if (!n)
		return NULL;
	const struct metric_desc *d = metrics__desc(metric);
	Metric *mt = NEW(a, Metric, OPENTELEMETRY__PROTO__METRICS__V1__METRIC__INIT);
	Histogram *h = NEW(a, Histogram, OPENTELEMETRY__PROTO__METRICS__V1__HISTOGRAM__INIT);
	e->dps = arena_alloc(a, sizeof(*e->dps) * n);
	if (!mt || !h || !e->dps)
		return NULL;
	e->n = 0;
	e->cap = n;
	metrics__foreach_point(m, metric, svc, add_point, e);
	mt->name = (char *)d->name;
	mt->description = (char *)d->description;
	mt->unit = (char *)d->unit;
	mt->data_case = OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_HISTOGRAM;
	mt->histogram = h;
	h->aggregation_temporality = CUMULATIVE;
	h->data_points = e->dps;
	h->n_data_points = e->n;
	return mt;
}

struct services {
	size_t n, cap;
	const struct service **items;
	struct arena *arena;
};

static void count_service(void *ctx, const struct service *s)
{
	(void)s;
	((struct services *)ctx)->cap++;
}

static void add_service(void *ctx, const struct service *s)
{
	struct services *sv = ctx;
	if (sv->n < sv->cap)
		sv->items[sv->n++] = s;
}

/* ---- self-metrics */

struct self_encode {
	struct encode *e;
	uint64_t start_unix;
	size_t n;
	Metric *metrics[SELF_MAX_FAMILIES];
};

static void self_family(void *ctx, const struct self_family *f)
{
	struct self_encode *se = ctx;
	struct arena *a = &se->e->arena;
	if (se->n == SELF_MAX_FAMILIES)
		return;
	Metric *mt = NEW(a, Metric, OPENTELEMETRY__PROTO__METRICS__V1__METRIC__INIT);
	NumberDataPoint **dps = arena_alloc(a, sizeof(*dps) * (size_t)f->nsamples);
	if (!mt || !dps)
		return;
	for (int i = 0; i < f->nsamples; i++) {
		const struct self_sample *s = &f->samples[i];
		NumberDataPoint *dp = NEW(
		    a, NumberDataPoint, OPENTELEMETRY__PROTO__METRICS__V1__NUMBER_DATA_POINT__INIT);
		if (!dp)
			return;
		struct attr attrs[SELF_MAX_LABELS];
		for (int l = 0; l < s->nlabels; l++)
			attrs[l] = (struct attr){.key = s->label_key[l],
						 .type = ATTR_STRING,
						 .str = s->label_value[l],
						 .len = strlen(s->label_value[l])};
		dp->attributes = key_values(a, attrs, s->nlabels);
		dp->n_attributes = (size_t)s->nlabels;
		if (f->counter)
			dp->start_time_unix_nano = se->start_unix;
		dp->time_unix_nano = se->e->now_unix;
		dp->value_case = OPENTELEMETRY__PROTO__METRICS__V1__NUMBER_DATA_POINT__VALUE_AS_INT;
		dp->as_int = (int64_t)s->value;
		dps[i] = dp;
	}
	mt->name = (char *)f->name;
	mt->description = (char *)f->help;
	mt->unit = (char *)f->unit;
	if (f->counter) {
		Sum *sum = NEW(a, Sum, OPENTELEMETRY__PROTO__METRICS__V1__SUM__INIT);
		if (!sum)
			return;
		sum->aggregation_temporality = CUMULATIVE;
		sum->is_monotonic = 1;
		sum->data_points = dps;
		sum->n_data_points = (size_t)f->nsamples;
		mt->data_case = OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_SUM;
		mt->sum = sum;
	} else {
		Gauge *g = NEW(a, Gauge, OPENTELEMETRY__PROTO__METRICS__V1__GAUGE__INIT);
		if (!g)
			return;
		g->data_points = dps;
		g->n_data_points = (size_t)f->nsamples;
		mt->data_case = OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_GAUGE;
		mt->gauge = g;
	}
	se->metrics[se->n++] = mt;
	se->e->points += (uint64_t)f->nsamples;
}

static ResourceMetrics *self_resource_metrics(struct otlp_metrics *om, struct encode *e,
					      const struct metrics *m, const struct self_stats *st)
{
	struct self_encode se = {.e = e};
	uint64_t start = m ? metrics__start_ns(m) : 0;
	se.start_unix = (uint64_t)((int64_t)start + e->offset);
	self_metrics__collect(st, m, self_family, &se);
	if (!se.n)
		return NULL;
	ScopeMetrics *sm = scope_metrics(&e->arena, se.n);
	if (!sm)
		return NULL;
	memcpy(sm->metrics, se.metrics, sizeof(se.metrics[0]) * se.n);
	sm->n_metrics = se.n;

	struct attr attrs[8 + CONFIG_MAX_LIST];
	int n = 0;
	attrs[n++] =
	    (struct attr){.key = "service.name", .type = ATTR_STRING, .str = "rastro", .len = 6};
	attrs[n++] = (struct attr){.key = "service.instance.id",
				   .type = ATTR_STRING,
				   .str = om->instance_id,
				   .len = strlen(om->instance_id)};
	attrs[n++] = (struct attr){.key = "service.version",
				   .type = ATTR_STRING,
				   .str = RASTRO_VERSION,
				   .len = strlen(RASTRO_VERSION)};
	attrs[n++] = (struct attr){
	    .key = "telemetry.sdk.name", .type = ATTR_STRING, .str = "rastro", .len = 6};
	attrs[n++] = (struct attr){
	    .key = "telemetry.sdk.language", .type = ATTR_STRING, .str = "native", .len = 6};
	attrs[n++] = (struct attr){.key = "telemetry.sdk.version",
				   .type = ATTR_STRING,
				   .str = RASTRO_VERSION,
				   .len = strlen(RASTRO_VERSION)};
	attrs[n++] = (struct attr){.key = "host.name",
				   .type = ATTR_STRING,
				   .str = om->hostname,
				   .len = strlen(om->hostname)};
	/* OTEL_RESOURCE_ATTRIBUTES, except what names rastro itself */
	const struct key_values *ra = &om->cfg->resource_attributes;
	for (int i = 0; i < ra->count; i++) {
		bool taken = false;
		for (int j = 0; j < n && !taken; j++)
			taken = !strcmp(attrs[j].key, ra->key[i]);
		if (!taken)
			attrs[n++] = (struct attr){.key = ra->key[i],
						   .type = ATTR_STRING,
						   .str = ra->value[i],
						   .len = strlen(ra->value[i])};
	}
	return resource_metrics(&e->arena, attrs, n, sm);
}

/* ---- the request */

struct otlp_metrics *otlp_metrics__new(const struct rastro_config *cfg)
{
	struct otlp_metrics *om = calloc(1, sizeof(*om));
	if (!om)
		return NULL;
	om->cfg = cfg;
	if (gethostname(om->hostname, sizeof(om->hostname) - 1))
		strcpy(om->hostname, "localhost");
	snprintf(om->instance_id, sizeof(om->instance_id), "%s:%d", om->hostname, (int)getpid());
	return om;
}

void otlp_metrics__free(struct otlp_metrics *om)
{
	free(om);
}

uint8_t *otlp_metrics__encode(struct otlp_metrics *om, const struct metrics *m,
			      const struct self_stats *st, int64_t unix_offset_ns, uint64_t now_ns,
			      size_t *len, uint64_t *points)
{
	struct encode e = {.cfg = om->cfg, .offset = unix_offset_ns};
	e.now_unix = (uint64_t)((int64_t)now_ns + unix_offset_ns);
	struct arena *a = &e.arena;
	uint8_t *out = NULL;

	struct services sv = {.arena = a};
	if (m) {
		metrics__foreach_service(m, count_service, &sv);
		sv.items = arena_alloc(a, sizeof(*sv.items) * (sv.cap ? sv.cap : 1));
		if (!sv.items)
			goto done;
		metrics__foreach_service(m, add_service, &sv);
	}
	ResourceMetrics **rms = arena_alloc(a, sizeof(*rms) * (sv.n + 1));
	if (!rms)
		goto done;
	size_t nrm = 0;
	for (size_t i = 0; i < sv.n; i++) {
		Metric *metrics[METRIC__COUNT];
		size_t nm = 0;
		for (int id = 0; id < METRIC__COUNT; id++) {
			Metric *mt = histogram_metric(&e, m, id, sv.items[i]);
			if (mt)
				metrics[nm++] = mt;
		}
		if (!nm)
			continue;
		ScopeMetrics *sm = scope_metrics(a, nm);
		if (!sm)
			goto done;
		memcpy(sm->metrics, metrics, sizeof(metrics[0]) * nm);
		sm->n_metrics = nm;
		struct attr attrs[RESOURCE_MAX_ATTRS];
		int na = resource__attributes(sv.items[i], om->cfg, attrs);
		ResourceMetrics *rm = resource_metrics(a, attrs, na, sm);
		if (!rm)
			goto done;
		rms[nrm++] = rm;
	}
	ResourceMetrics *self = self_resource_metrics(om, &e, m, st);
	if (self)
		rms[nrm++] = self;
	if (a->failed)
		goto done;

	ExportRequest req = REQUEST_INIT;
	req.resource_metrics = rms;
	req.n_resource_metrics = nrm;
	size_t size = request_packed_size(&req);
	out = malloc(size ? size : 1);
	if (!out)
		goto done;
	*len = request_pack(&req, out);
	*points = e.points;
done:
	arena_free(a);
	return out;
}
