/*
 * Span export. A record becomes its OTLP Span bytes at once (the cheapest
 * compact copy there is), so batching is appending bytes and a batch is
 * wrapped into an ExportTraceServiceRequest with a few length prefixes.
 *
 * Queueing follows the OpenTelemetry batch span processor: spans wait in a
 * queue of at most max_queue_size (new spans are dropped, and counted, when
 * it is full); a batch goes out when max_export_batch_size spans are ready or
 * schedule_delay passed, and only while the OTLP client has nothing else
 * waiting, so a slow backend holds spans here, bounded, rather than in
 * ever more encoded requests.
 */
#include "export/otlp_traces.h"

#include <stdlib.h>
#include <string.h>

#include "common/loop.h"
#include "discover/discover.h"
#include "export/otlp_client.h"
#include "export/resource.h"
#include "log.h"
#include "semconv.h"
#include "version.h"

/* ---- protobuf wire format (https://protobuf.dev/programming-guides/encoding/) */

enum { WIRE_VARINT = 0, WIRE_I64 = 1, WIRE_LEN = 2, WIRE_I32 = 5 };
#define TAG(field, wire) (((field) << 3) | (wire))

static inline size_t varint_len(uint64_t v)
{
	size_t n = 1;
	while (v >= 0x80) {
		v >>= 7;
		n++;
	}
	return n;
}

static inline uint8_t *put_varint(uint8_t *p, uint64_t v)
{
	while (v >= 0x80) {
		*p++ = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	*p++ = (uint8_t)v;
	return p;
}

/* Tags of fields 1..15 fit in one byte; flags (16) needs two. */
static inline uint8_t *put_tag(uint8_t *p, uint32_t field, uint32_t wire)
{
	return put_varint(p, TAG(field, wire));
}

static inline uint8_t *put_bytes(uint8_t *p, uint32_t field, const void *data, size_t len)
{
	p = put_tag(p, field, WIRE_LEN);
	p = put_varint(p, len);
	memcpy(p, data, len);
	return p + len;
}

static inline uint8_t *put_fixed64(uint8_t *p, uint32_t field, uint64_t v)
{
	p = put_tag(p, field, WIRE_I64);
	for (int i = 0; i < 8; i++)
		*p++ = (uint8_t)(v >> (8 * i));
	return p;
}

static inline uint8_t *put_fixed32(uint8_t *p, uint32_t field, uint32_t v)
{
	p = put_tag(p, field, WIRE_I32);
	for (int i = 0; i < 4; i++)
		*p++ = (uint8_t)(v >> (8 * i));
	return p;
}

/* Length of a length-delimited field with a one-byte tag and a body of n. */
static inline size_t len_field(size_t n)
{
	return 1 + varint_len(n) + n;
}

/* AnyValue of an attribute: string_value (1) or int_value (3). */
static inline size_t any_value_len(const struct attr *a)
{
	return a->type == ATTR_INT ? 1 + varint_len((uint64_t)a->num) : len_field(a->len);
}

/* KeyValue{key = 1, value = 2}. */
static inline size_t key_value_len(const struct attr *a, size_t klen)
{
	return len_field(klen) + len_field(any_value_len(a));
}

static uint8_t *put_key_value(uint8_t *p, uint32_t field, const struct attr *a, size_t klen)
{
	p = put_tag(p, field, WIRE_LEN);
	p = put_varint(p, key_value_len(a, klen));
	p = put_bytes(p, 1, a->key, klen);
	p = put_tag(p, 2, WIRE_LEN);
	p = put_varint(p, any_value_len(a));
	if (a->type == ATTR_INT) {
		p = put_tag(p, 3, WIRE_VARINT);
		p = put_varint(p, (uint64_t)a->num); /* int64: two's complement, 10 bytes if < 0 */
	} else {
		p = put_bytes(p, 1, a->str, a->len);
	}
	return p;
}

/* ---- span batches */

struct span_entry {
	uint32_t off, len; /* the Span message's bytes in buf */
	uint32_t service;  /* index into services */
};

struct span_batch {
	uint8_t *buf;
	size_t len, cap;
	struct span_entry *spans;
	uint32_t count, cap_spans;
	struct service **services;
	uint32_t nservices, cap_services;
	uint32_t last_service;
};

/* Spans of records without a service (not expected: the connection tracker
 * names one) still go out, under OpenTelemetry's unknown_service. */
static struct service unknown_service = {.name = "unknown_service"};

static bool grow(void **p, size_t elem, uint32_t *cap, uint32_t need)
{
	if (need <= *cap)
		return true;
	uint32_t n = *cap ? *cap : 8;
	while (n < need)
		n *= 2;
	void *np = realloc(*p, (size_t)n * elem);
	if (!np)
		return false;
	*p = np;
	*cap = n;
	return true;
}

static bool reserve(struct span_batch *b, size_t more)
{
	if (b->len + more <= b->cap)
		return true;
	size_t n = b->cap ? b->cap : 16384;
	while (n < b->len + more)
		n *= 2;
	uint8_t *np = realloc(b->buf, n);
	if (!np)
		return false;
	b->buf = np;
	b->cap = n;
	return true;
}

struct span_batch *span_batch__new(void)
{
	return calloc(1, sizeof(struct span_batch));
}

void span_batch__clear(struct span_batch *b)
{
	for (uint32_t i = 0; i < b->nservices; i++)
		if (b->services[i] != &unknown_service)
			service__unref(b->services[i]);
	b->nservices = 0;
	b->count = 0;
	b->len = 0;
}

void span_batch__free(struct span_batch *b)
{
	if (!b)
		return;
	span_batch__clear(b);
	free(b->buf);
	free(b->spans);
	free(b->services);
	free(b);
}

uint32_t span_batch__count(const struct span_batch *b)
{
	return b->count;
}

/* Index of s in b->services, referencing it on first use; -1 on OOM. */
static int64_t service_index(struct span_batch *b, struct service *s)
{
	if (b->last_service < b->nservices && b->services[b->last_service] == s)
		return b->last_service;
	for (uint32_t i = 0; i < b->nservices; i++)
		if (b->services[i] == s)
			return b->last_service = i;
	if (!grow((void **)&b->services, sizeof(*b->services), &b->cap_services,
		  b->nservices + 1))
		return -1;
	if (s != &unknown_service)
		service__ref(s);
	b->services[b->nservices] = s;
	return b->last_service = b->nservices++;
}

struct attr_writer {
	struct span_batch *b;
	bool oom;
};

/* Nearly every attribute is short: its KeyValue, key and value lengths are
 * one varint byte each, so it is written with fixed offsets (the generic
 * path below costs three times as much per attribute). */
static void write_short_attr(struct span_batch *b, const struct attr *a, size_t klen)
{
	size_t any = a->type == ATTR_INT ? 1 + varint_len((uint64_t)a->num) : 2 + a->len;
	size_t kv = 2 + klen + 2 + any; /* < 128: checked by the caller */
	uint8_t *p = b->buf + b->len;
	p[0] = TAG(9, WIRE_LEN);
	p[1] = (uint8_t)kv;
	p[2] = TAG(1, WIRE_LEN);
	p[3] = (uint8_t)klen;
	memcpy(p + 4, a->key, klen);
	p += 4 + klen;
	p[0] = TAG(2, WIRE_LEN);
	p[1] = (uint8_t)any;
	if (a->type == ATTR_INT) {
		p[2] = TAG(3, WIRE_VARINT);
		p = put_varint(p + 3, (uint64_t)a->num);
	} else {
		p[2] = TAG(1, WIRE_LEN);
		p[3] = (uint8_t)a->len;
		memcpy(p + 4, a->str, a->len);
		p += 4 + a->len;
	}
	b->len = (size_t)(p - b->buf);
}

static void write_attr(void *ctx, const struct attr *a)
{
	struct attr_writer *w = ctx;
	size_t klen = a->klen ? a->klen : strlen(a->key);
	if (!w->oom && klen < 100 && (a->type == ATTR_INT || klen + a->len < 120)) {
		/* 2 + klen + 2 + 2 + len < 128 for strings, 2 + klen + 2 + 11 for ints */
		if (!reserve(w->b, 2 + 2 + klen + 2 + 2 + (a->type == ATTR_INT ? 11 : a->len)))
			w->oom = true;
		else
			write_short_attr(w->b, a, klen);
		return;
	}
	size_t n = key_value_len(a, klen);
	if (w->oom || !reserve(w->b, len_field(n))) {
		w->oom = true;
		return;
	}
	w->b->len = (size_t)(put_key_value(w->b->buf + w->b->len, 9, a, klen) - w->b->buf);
}

bool span_batch__add(struct span_batch *b, const struct request *r,
		     const struct rastro_config *cfg, int64_t unix_offset_ns)
{
	char name[256], ebuf[16];
	size_t name_len = semconv__span_name(r, name, sizeof(name));
	const char *state = request__str(r, r->tracestate);
	size_t state_len = r->tracestate.len;
	size_t message_len;
	const char *message = semconv__status_message(r, ebuf, sizeof(ebuf), &message_len);
	bool error = message != NULL; /* semconv__is_error, without a second pass */
	/* W3C trace flags (sampled bit included), and bits 8-9: whether the
	 * parent is remote is known (8), and it is (9): another process's span,
	 * from a traceparent header or the client end of a traced connection. */
	uint32_t flags = r->trace_flags | (r->sampled ? 1u : 0u) | 0x100u |
			 (r->parent_remote ? 0x200u : 0u);

	size_t start = b->len;
	if (!grow((void **)&b->spans, sizeof(*b->spans), &b->cap_spans, b->count + 1))
		return false;
	int64_t svc = service_index(b, r->service ? (struct service *)r->service
						  : &unknown_service);
	if (svc < 0)
		return false;
	/* Fixed part: ids, state, name, kind, times, status, flags. */
	if (!reserve(b, 80 + len_field(state_len) + len_field(name_len) + len_field(message_len)))
		return false;

	uint8_t *p = b->buf + b->len;
	p = put_bytes(p, 1, r->trace_id, 16);
	p = put_bytes(p, 2, r->span_id, 8);
	if (state_len)
		p = put_bytes(p, 3, state, state_len);
	if (r->has_parent)
		p = put_bytes(p, 4, r->parent_span_id, 8);
	p = put_bytes(p, 5, name, name_len);
	p = put_tag(p, 6, WIRE_VARINT);
	p = put_varint(p, (uint64_t)semconv__span_kind(r));
	p = put_fixed64(p, 7, (uint64_t)((int64_t)r->start_ns + unix_offset_ns));
	p = put_fixed64(p, 8, (uint64_t)((int64_t)r->end_ns + unix_offset_ns));
	b->len = (size_t)(p - b->buf);

	struct attr_writer w = {b, false};
	semconv__span_attributes(r, cfg, write_attr, &w);
	if (w.oom || !reserve(b, 32 + len_field(message_len))) {
		b->len = start;
		return false;
	}

	p = b->buf + b->len;
	if (error) {
		/* Status{message = 2, code = 3 (STATUS_CODE_ERROR = 2)} */
		size_t status_len = (message_len ? len_field(message_len) : 0) + 2;
		p = put_tag(p, 15, WIRE_LEN);
		p = put_varint(p, status_len);
		if (message_len)
			p = put_bytes(p, 2, message, message_len);
		p = put_tag(p, 3, WIRE_VARINT);
		*p++ = 2;
	}
	if (flags)
		p = put_fixed32(p, 16, flags);
	b->len = (size_t)(p - b->buf);

	b->spans[b->count++] = (struct span_entry){(uint32_t)start, (uint32_t)(b->len - start),
						   (uint32_t)svc};
	return true;
}

static size_t scope_len(void)
{
	/* InstrumentationScope{name = 1, version = 2} */
	return len_field(strlen("rastro")) + len_field(strlen(RASTRO_VERSION));
}

/* Sizes of one service's ResourceSpans parts; false when it has no span (its
 * only span failed to encode). Fills attrs/nattrs with its resource. */
struct resource_sizes {
	size_t spans, resource, scope_spans, total;
	int nattrs;
};

static bool resource_sizes(const struct span_batch *b, uint32_t s,
			   const struct rastro_config *cfg, struct attr *attrs,
			   struct resource_sizes *z)
{
	z->spans = z->resource = 0;
	for (uint32_t i = 0; i < b->count; i++)
		if (b->spans[i].service == s)
			z->spans += len_field(b->spans[i].len);
	if (!z->spans)
		return false;
	z->nattrs = resource__attributes(b->services[s], cfg, attrs);
	for (int a = 0; a < z->nattrs; a++)
		z->resource += len_field(key_value_len(&attrs[a], strlen(attrs[a].key)));
	z->scope_spans = len_field(scope_len()) + z->spans;
	z->total = len_field(z->resource) + len_field(z->scope_spans);
	return true;
}

size_t span_batch__encoded_len(const struct span_batch *b, const struct rastro_config *cfg)
{
	struct attr attrs[RESOURCE_MAX_ATTRS];
	struct resource_sizes z;
	size_t total = 0;
	/* Sizes first, as every message is prefixed by its length. */
	for (uint32_t s = 0; s < b->nservices; s++)
		if (resource_sizes(b, s, cfg, attrs, &z))
			total += len_field(z.total);
	return total;
}

size_t span_batch__encode(const struct span_batch *b, const struct rastro_config *cfg,
			  uint8_t **out, size_t *cap)
{
	size_t total = span_batch__encoded_len(b, cfg);
	if (total > *cap) {
		uint8_t *np = realloc(*out, total);
		if (!np)
			return 0;
		*out = np;
		*cap = total;
	}
	return span_batch__write(b, cfg, *out);
}

size_t span_batch__write(const struct span_batch *b, const struct rastro_config *cfg,
			 uint8_t *out)
{
	struct attr attrs[RESOURCE_MAX_ATTRS];
	struct resource_sizes z;
	/* ExportTraceServiceRequest{resource_spans = 1: ResourceSpans{
	 *   resource = 1: Resource{attributes = 1},
	 *   scope_spans = 2: ScopeSpans{scope = 1, spans = 2}}}
	 * Spans are grouped by service, in order of first appearance. */
	uint8_t *p = out;
	for (uint32_t s = 0; s < b->nservices; s++) {
		if (!resource_sizes(b, s, cfg, attrs, &z))
			continue;
		p = put_tag(p, 1, WIRE_LEN);
		p = put_varint(p, z.total);
		p = put_tag(p, 1, WIRE_LEN);
		p = put_varint(p, z.resource);
		for (int a = 0; a < z.nattrs; a++)
			p = put_key_value(p, 1, &attrs[a], strlen(attrs[a].key));
		p = put_tag(p, 2, WIRE_LEN);
		p = put_varint(p, z.scope_spans);
		p = put_tag(p, 1, WIRE_LEN);
		p = put_varint(p, scope_len());
		p = put_bytes(p, 1, "rastro", strlen("rastro"));
		p = put_bytes(p, 2, RASTRO_VERSION, strlen(RASTRO_VERSION));
		for (uint32_t i = 0; i < b->count; i++)
			if (b->spans[i].service == s)
				p = put_bytes(p, 2, b->buf + b->spans[i].off, b->spans[i].len);
	}
	return (size_t)(p - out);
}

/* ---- the queue */

/* Sent batches kept for the next ones. A drain turns up to 2,048 records
 * into spans without returning to the event loop, so the client cannot
 * finish a request meanwhile: at 20k requests/s the ring held up to five
 * batches at once, and with two spares about 11 batches a second were
 * allocated again (none with four). At most this many buffers of a full
 * batch's size (about 256 KiB at 512 spans) stay allocated. */
#define SPARE_BATCHES 4

struct otlp_traces {
	struct loop *loop;
	const struct rastro_config *cfg;
	struct otlp_client *client;
	const int64_t *unix_offset_ns;
	uint32_t batch_size, queue_size;

	/* Ring of batches: the oldest (head) goes out first, spans are added
	 * to the newest; only the newest may be partly filled. A sent batch
	 * leaves the ring for the spares, which the next new batch takes
	 * first, so steady state allocates nothing (the buffer keeps the size
	 * a full batch needed); at most SPARE_BATCHES are kept: a backlog (the
	 * backend slow for a while) allocates one batch per
	 * max_export_batch_size spans queued, and that memory goes back once
	 * the backlog is sent. */
	struct span_batch **ring;
	uint32_t nring, head, count;
	struct span_batch *spare[SPARE_BATCHES];
	uint32_t nspare;

	int64_t timer;
	bool due;      /* the oldest span waited schedule_delay: send partial batches */
	bool flushing; /* shutdown: send everything now */

	struct otlp_traces_stats stats;
};

static void export_ready(struct otlp_traces *t)
{
	while (t->count) {
		struct span_batch *b = t->ring[t->head];
		uint32_t n = span_batch__count(b);
		if (n < t->batch_size && !t->due && !t->flushing)
			break;
		/* One request waiting in the client is enough: the rest wait
		 * here, as spans, within max_queue_size. */
		if (otlp_client__waiting(t->client) && !t->flushing)
			break;
		/* Written in place in the client's request: a batch is copied
		 * once (its spans into the request), not twice. */
		size_t len = span_batch__encoded_len(b, t->cfg);
		uint8_t *body = len ? otlp_client__body_new(len) : NULL;
		if (body) {
			otlp_client__send_body(t->client, body,
					       span_batch__write(b, t->cfg, body), n);
			t->stats.exported += n;
		} else {
			t->stats.dropped_no_memory += n;
		}
		span_batch__clear(b);
		t->stats.queued -= n;
		t->ring[t->head] = NULL;
		if (t->nspare < SPARE_BATCHES)
			t->spare[t->nspare++] = b;
		else
			span_batch__free(b);
		t->head = (t->head + 1) % t->nring;
		t->count--;
	}
	if (!t->count)
		t->due = false;
}

static void on_client_ready(void *ctx)
{
	export_ready(ctx);
}

static void on_timer(void *ctx);

static void arm_timer(struct otlp_traces *t)
{
	t->timer = loop__after(t->loop, t->cfg->traces_schedule_delay_ms, on_timer, t);
	if (t->timer < 0)
		t->timer = 0; /* out of memory: the next add tries again */
}

static void on_timer(void *ctx)
{
	struct otlp_traces *t = ctx;
	t->timer = 0;
	if (t->count)
		t->due = true;
	export_ready(t);
	if (t->count)
		arm_timer(t);
}

struct otlp_traces *otlp_traces__new(struct loop *loop, const struct rastro_config *cfg,
				     struct otlp_client *client, const int64_t *unix_offset_ns)
{
	struct otlp_traces *t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	t->loop = loop;
	t->cfg = cfg;
	t->client = client;
	t->unix_offset_ns = unix_offset_ns;
	t->queue_size = cfg->traces_queue_size ? cfg->traces_queue_size : 1;
	t->batch_size = cfg->traces_batch_size ? cfg->traces_batch_size : 1;
	if (t->batch_size > t->queue_size)
		t->batch_size = t->queue_size; /* as the SDK: a batch never exceeds the queue */
	t->nring = (t->queue_size + t->batch_size - 1) / t->batch_size + 1;
	t->ring = calloc(t->nring, sizeof(*t->ring));
	if (!t->ring) {
		free(t);
		return NULL;
	}
	otlp_client__on_ready(client, on_client_ready, t);
	return t;
}

void otlp_traces__free(struct otlp_traces *t)
{
	if (!t)
		return;
	if (t->timer)
		loop__cancel(t->loop, t->timer);
	otlp_client__on_ready(t->client, NULL, NULL);
	if (t->stats.queued)
		log_warn("traces export: %llu spans still queued at shutdown were dropped",
			 (unsigned long long)t->stats.queued);
	for (uint32_t i = 0; i < t->nring; i++)
		span_batch__free(t->ring[i]);
	for (uint32_t i = 0; i < t->nspare; i++)
		span_batch__free(t->spare[i]);
	free(t->ring);
	free(t);
}

void otlp_traces__add(struct otlp_traces *t, const struct request *r)
{
	if (t->stats.queued >= t->queue_size) {
		t->stats.dropped_queue++;
		return;
	}
	uint32_t slot;
	if (t->count && span_batch__count(t->ring[(t->head + t->count - 1) % t->nring]) <
				t->batch_size) {
		slot = (t->head + t->count - 1) % t->nring;
	} else {
		slot = (t->head + t->count) % t->nring;
		if (!t->ring[slot]) {
			if (t->nspare) {
				t->ring[slot] = t->spare[--t->nspare];
			} else if ((t->ring[slot] = span_batch__new())) {
				t->stats.batches_allocated++;
			} else {
				t->stats.dropped_no_memory++;
				return;
			}
		}
		t->count++;
	}
	struct span_batch *b = t->ring[slot];
	if (!span_batch__add(b, r, t->cfg, *t->unix_offset_ns)) { /* out of memory */
		t->stats.dropped_no_memory++;
		if (!span_batch__count(b))
			t->count--; /* it was a fresh (tail) batch: give the slot back */
		return;
	}
	t->stats.queued++;
	if (!t->timer)
		arm_timer(t);
	if (span_batch__count(b) == t->batch_size)
		export_ready(t);
}

void otlp_traces__flush(struct otlp_traces *t)
{
	t->flushing = true;
	export_ready(t);
	t->flushing = false;
}

void otlp_traces__stats(const struct otlp_traces *t, struct otlp_traces_stats *out)
{
	*out = t->stats;
}

bool otlp_traces__nearly_full(const struct otlp_traces *t)
{
	uint32_t margin = t->queue_size / 4 < 256 ? t->queue_size / 4 : 256;
	return t->stats.queued + margin >= t->queue_size;
}
