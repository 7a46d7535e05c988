/*
 * OTLP metrics encoder. The protobuf is written directly, field by field, in
 * two passes over the registry: the first only measures, the second writes
 * into a buffer of exactly that size. A message tree (protobuf-c structs, one
 * per attribute, value and point) would cost several times the encoded size
 * at every export: 3.8 MB of structs for 1.2 MB of protobuf with 3,000
 * histogram series. The bytes are those protobuf-c packs (fields in number
 * order, proto3 zero values left out).
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
#include "version.h"

struct otlp_metrics {
	const struct rastro_config *cfg;
	char hostname[256];
	char instance_id[300];
};

/* ---- protobuf wire format (https://protobuf.dev/programming-guides/encoding/) */

enum { WIRE_VARINT = 0, WIRE_I64 = 1, WIRE_LEN = 2 };
enum { AGGREGATION_TEMPORALITY_CUMULATIVE = 2 };
/* Room for a length prefix while the message it measures is written. */
#define LEN_ROOM 5

/* Measures (b NULL) or writes (b sized by a measuring pass, plus slack for
 * the LEN_ROOM of the messages open at once). */
struct pbw {
	uint8_t *b;
	size_t len;
};

static void w_bytes(struct pbw *w, const void *p, size_t n)
{
	if (w->b && n)
		memcpy(w->b + w->len, p, n);
	w->len += n;
}

static int varint_to(uint8_t *t, uint64_t v)
{
	int k = 0;
	do {
		t[k] = (uint8_t)(v & 0x7f);
		v >>= 7;
		if (v)
			t[k] |= 0x80;
		k++;
	} while (v);
	return k;
}

static void w_varint(struct pbw *w, uint64_t v)
{
	uint8_t t[10];
	w_bytes(w, t, (size_t)varint_to(t, v));
}

static void w_tag(struct pbw *w, uint32_t field, int wire)
{
	w_varint(w, (uint64_t)field << 3 | (uint64_t)wire);
}

static void w_fixed64_raw(struct pbw *w, uint64_t v)
{
	uint8_t t[8];
	for (int i = 0; i < 8; i++)
		t[i] = (uint8_t)(v >> (8 * i));
	w_bytes(w, t, 8);
}

static void w_fixed64(struct pbw *w, uint32_t field, uint64_t v)
{
	w_tag(w, field, WIRE_I64);
	w_fixed64_raw(w, v);
}

static void w_double(struct pbw *w, uint32_t field, double d)
{
	uint64_t u;
	memcpy(&u, &d, 8);
	w_fixed64(w, field, u);
}

/* A proto3 string field: left out when empty, as protobuf-c does. */
static void w_string(struct pbw *w, uint32_t field, const char *s)
{
	size_t n = strlen(s);
	if (!n)
		return;
	w_tag(w, field, WIRE_LEN);
	w_varint(w, n);
	w_bytes(w, s, n);
}

/* A string from traffic or configuration: invalid UTF-8 is replaced by
 * U+FFFD (receivers reject the whole request otherwise). Written even when
 * empty (AnyValue.string_value is a oneof member). */
static void w_utf8(struct pbw *w, uint32_t field, const char *s, size_t len)
{
	size_t out = 0;
	for (size_t i = 0; i < len;) {
		size_t n = utf8__char_len(s + i, len - i);
		out += n ? n : 3;
		i += n ? n : 1;
	}
	w_tag(w, field, WIRE_LEN);
	w_varint(w, out);
	if (out == len) {
		w_bytes(w, s, len);
		return;
	}
	for (size_t i = 0; i < len;) {
		size_t n = utf8__char_len(s + i, len - i);
		if (n) {
			w_bytes(w, s + i, n);
			i += n;
		} else {
			w_bytes(w, "\xEF\xBF\xBD", 3);
			i++;
		}
	}
}

/* An embedded message: its length is known once it is written, so it is
 * written LEN_ROOM bytes on and moved back behind its (shortest) prefix. */
static size_t w_open(struct pbw *w, uint32_t field)
{
	w_tag(w, field, WIRE_LEN);
	size_t at = w->len;
	w->len += LEN_ROOM;
	return at;
}

static void w_close(struct pbw *w, size_t at)
{
	size_t n = w->len - at - LEN_ROOM;
	uint8_t t[10];
	int k = varint_to(t, n);
	if (w->b) {
		memmove(w->b + at + k, w->b + at + LEN_ROOM, n);
		memcpy(w->b + at, t, (size_t)k);
	}
	w->len -= (size_t)(LEN_ROOM - k);
}

/* ---- common messages */

static void key_value(struct pbw *w, uint32_t field, const struct attr *at)
{
	size_t kv = w_open(w, field);
	size_t klen = strlen(at->key);
	if (klen)
		w_utf8(w, 1, at->key, klen); /* KeyValue.key */
	size_t v = w_open(w, 2);                 /* KeyValue.value: AnyValue */
	if (at->type == ATTR_INT) {
		w_tag(w, 3, WIRE_VARINT); /* int_value */
		w_varint(w, (uint64_t)at->num);
	} else {
		w_utf8(w, 1, at->str, at->len); /* string_value */
	}
	w_close(w, v);
	w_close(w, kv);
}

/* ResourceMetrics.resource and the start of ResourceMetrics.scope_metrics
 * (with its scope); returns where scope_metrics opened. */
static size_t resource_and_scope(struct pbw *w, const struct attr *attrs, int nattrs)
{
	size_t res = w_open(w, 1); /* Resource */
	for (int i = 0; i < nattrs; i++)
		key_value(w, 1, &attrs[i]);
	w_close(w, res);
	size_t sm = w_open(w, 2); /* ScopeMetrics */
	size_t scope = w_open(w, 1);
	w_string(w, 1, "rastro");
	w_string(w, 2, RASTRO_VERSION);
	w_close(w, scope);
	return sm;
}

/* ---- the registry's histograms */

struct encode {
	struct pbw w;
	const struct rastro_config *cfg;
	int64_t offset;
	uint64_t now_unix;
	uint64_t points;
};

static void count_point(void *ctx, const struct metric_point *p)
{
	(void)p;
	(*(size_t *)ctx)++;
}

static void histogram_point(void *ctx, const struct metric_point *p)
{
	struct encode *e = ctx;
	struct pbw *w = &e->w;
	size_t dp = w_open(w, 1); /* Histogram.data_points */
	uint64_t start = (uint64_t)((int64_t)p->start_ns + e->offset);
	if (start)
		w_fixed64(w, 2, start);
	if (e->now_unix)
		w_fixed64(w, 3, e->now_unix);
	if (p->count)
		w_fixed64(w, 4, p->count);
	w_double(w, 5, p->sum);
	w_tag(w, 6, WIRE_LEN); /* bucket_counts, packed */
	w_varint(w, 8 * ((uint64_t)p->nbounds + 1));
	for (int i = 0; i <= p->nbounds; i++)
		w_fixed64_raw(w, p->buckets[i]);
	if (p->nbounds) {
		w_tag(w, 7, WIRE_LEN); /* explicit_bounds, packed */
		w_varint(w, 8 * (uint64_t)p->nbounds);
		for (int i = 0; i < p->nbounds; i++) {
			uint64_t u;
			memcpy(&u, &p->bounds[i], 8);
			w_fixed64_raw(w, u);
		}
	}
	for (int i = 0; i < p->nattrs; i++)
		key_value(w, 9, &p->attrs[i]);
	w_double(w, 11, p->min);
	w_double(w, 12, p->max);
	w_close(w, dp);
	e->points++;
}

/* One ResourceMetrics per service instance with at least one point. */
static void service_metrics(struct encode *e, const struct metrics *m, const struct service *svc)
{
	struct pbw *w = &e->w;
	size_t n[METRIC__COUNT], total = 0;
	for (int id = 0; id < METRIC__COUNT; id++) {
		n[id] = 0;
		metrics__foreach_point(m, id, svc, count_point, &n[id]);
		total += n[id];
	}
	if (!total)
		return;
	struct attr attrs[RESOURCE_MAX_ATTRS];
	int na = resource__attributes(svc, e->cfg, attrs);
	size_t rm = w_open(w, 1); /* ExportMetricsServiceRequest.resource_metrics */
	size_t sm = resource_and_scope(w, attrs, na);
	for (int id = 0; id < METRIC__COUNT; id++) {
		if (!n[id])
			continue;
		const struct metric_desc *d = metrics__desc(id);
		size_t mt = w_open(w, 2); /* ScopeMetrics.metrics */
		w_string(w, 1, d->name);
		w_string(w, 2, d->description);
		w_string(w, 3, d->unit);
		size_t h = w_open(w, 9); /* Metric.histogram */
		metrics__foreach_point(m, id, svc, histogram_point, e);
		w_tag(w, 2, WIRE_VARINT);
		w_varint(w, AGGREGATION_TEMPORALITY_CUMULATIVE);
		w_close(w, h);
		w_close(w, mt);
	}
	w_close(w, sm);
	w_close(w, rm);
}

/* ---- self-metrics */

struct self_encode {
	struct encode *e;
	uint64_t start_unix;
};

static void self_family(void *ctx, const struct self_family *f)
{
	struct self_encode *se = ctx;
	struct pbw *w = &se->e->w;
	size_t mt = w_open(w, 2); /* ScopeMetrics.metrics */
	w_string(w, 1, f->name);
	w_string(w, 2, f->help);
	w_string(w, 3, f->unit);
	size_t data = w_open(w, f->counter ? 7 : 5); /* Metric.sum or Metric.gauge */
	for (int i = 0; i < f->nsamples; i++) {
		const struct self_sample *s = &f->samples[i];
		size_t dp = w_open(w, 1); /* NumberDataPoint */
		if (f->counter && se->start_unix)
			w_fixed64(w, 2, se->start_unix);
		if (se->e->now_unix)
			w_fixed64(w, 3, se->e->now_unix);
		w_fixed64(w, 6, s->value); /* as_int (sfixed64) */
		for (int l = 0; l < s->nlabels; l++) {
			struct attr at = {.key = s->label_key[l],
					  .type = ATTR_STRING,
					  .str = s->label_value[l],
					  .len = strlen(s->label_value[l])};
			key_value(w, 7, &at);
		}
		w_close(w, dp);
	}
	if (f->counter) {
		w_tag(w, 2, WIRE_VARINT);
		w_varint(w, AGGREGATION_TEMPORALITY_CUMULATIVE);
		w_tag(w, 3, WIRE_VARINT); /* is_monotonic */
		w_varint(w, 1);
	}
	w_close(w, data);
	w_close(w, mt);
	se->e->points += (uint64_t)f->nsamples;
}

static void count_family(void *ctx, const struct self_family *f)
{
	(void)f;
	(*(size_t *)ctx)++;
}

/* rastro's own metrics, under a resource of their own. */
static void self_metrics(struct otlp_metrics *om, struct encode *e, const struct metrics *m,
			 const struct self_stats *st)
{
	struct pbw *w = &e->w;
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

	size_t families = 0;
	self_metrics__collect(st, m, count_family, &families);
	if (!families) /* nothing to say: no ResourceMetrics at all */
		return;
	struct self_encode se = {.e = e};
	uint64_t start = m ? metrics__start_ns(m) : 0;
	se.start_unix = (uint64_t)((int64_t)start + e->offset);
	size_t rm = w_open(w, 1);
	size_t sm = resource_and_scope(w, attrs, n);
	self_metrics__collect(st, m, self_family, &se);
	w_close(w, sm);
	w_close(w, rm);
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

static void encode_request(struct otlp_metrics *om, struct encode *e, const struct metrics *m,
			   const struct self_stats *st)
{
	if (m) {
		uint64_t cursor = 0;
		const struct service *svc;
		while ((svc = metrics__next_service(m, &cursor)))
			service_metrics(e, m, svc);
	}
	self_metrics(om, e, m, st);
}

uint8_t *otlp_metrics__encode(struct otlp_metrics *om, const struct metrics *m,
			      const struct self_stats *st, int64_t unix_offset_ns, uint64_t now_ns,
			      size_t *len, uint64_t *points)
{
	struct encode e = {.cfg = om->cfg, .offset = unix_offset_ns};
	e.now_unix = (uint64_t)((int64_t)now_ns + unix_offset_ns);
	encode_request(om, &e, m, st); /* measures */
	size_t size = e.w.len;
	/* Messages nest at most 7 deep (request, resource metrics, scope
	 * metrics, metric, histogram, point, attribute value), each holding
	 * LEN_ROOM bytes until it closes. */
	uint8_t *out = malloc(size + 8 * LEN_ROOM);
	if (!out)
		return NULL;
	e.w = (struct pbw){.b = out};
	e.points = 0;
	encode_request(om, &e, m, st); /* writes: the same calls, nothing changed in between */
	if (e.w.len != size) {
		free(out); /* cannot happen: a bug, not a reason to send garbage */
		return NULL;
	}
	*len = size;
	*points = e.points;
	return out;
}
