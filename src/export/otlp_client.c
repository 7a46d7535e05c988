/*
 * OTLP/HTTP client for one signal, on the agent's single event loop.
 *
 * A transport (otlp_transport.h: rastro's own HTTP/1.1 client for http://,
 * libcurl loaded at run time for https://) does the HTTP; its sockets and its
 * timer are mapped onto loop__watch / loop__after, so a slow or unreachable
 * backend never blocks event processing. Requests wait in a FIFO bounded by
 * bytes; one is in flight at a time (order is kept, and one connection is
 * enough for rastro's volumes).
 *
 * Failure handling follows the OTLP exporter specification: 429, 502, 503,
 * 504 and transport errors are retried with exponential backoff and jitter
 * (Retry-After honoured); any other status drops the request. Every cause is
 * logged once and counted always, so a backend that is down for hours costs
 * one log line.
 */
#include "export/otlp_client.h"

#include <ctype.h>
#include <errno.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <zlib.h>

#include "common/loop.h"
#include "export/otlp_transport.h"
#include "log.h"
#include "opentelemetry/proto/collector/metrics/v1/metrics_service.pb-c.h"
#include "opentelemetry/proto/collector/trace/v1/trace_service.pb-c.h"

#define BACKOFF_INITIAL_MS 1000
#define BACKOFF_MAX_MS 5000
/* A request still failing after this long is given up: it is stale, and
 * newer data waits behind it. */
#define RETRY_MAX_ELAPSED_NS (60ull * 1000000000)
#define RETRY_AFTER_MAX_MS (600 * 1000)
/* Response bodies are read for partial success only; bigger ones are cut. */
#define MAX_RESPONSE_BYTES (64 * 1024)
#define MAX_CAUSES 32

struct otlp_req {
	struct otlp_req *next;
	uint64_t items;
	uint64_t first_attempt_ns; /* 0: never sent */
	uint32_t attempts;
	size_t len;
	uint8_t body[];
};

struct watched_socket {
	int fd;
	uint32_t events; /* EPOLLIN, EPOLLOUT */
};

struct otlp_client {
	struct loop *loop;
	const struct otlp_signal *cfg;
	char signal[16];
	const char *items_name; /* "spans" / "data points", for logs */
	bool is_traces;
	uint64_t max_queue_bytes;

	const struct otlp_transport *tr;
	void *t;

	/* FIFO; head is the request in flight or waiting for its retry. */
	struct otlp_req *head, *tail;
	bool in_flight;
	int64_t retry_timer; /* 0: none */
	uint64_t retry_at_ns;
	int64_t t_timer; /* the transport's */
	uint64_t t_timer_at_ns; /* 0: none (for flush, which runs without the loop) */

	struct watched_socket *socks;
	int nsocks, capsocks;

	/* current response */
	uint8_t *resp;
	size_t resp_len;
	int64_t retry_after_ms; /* -1: no Retry-After header */

	uint64_t rng;
	bool down_warned, recovery_logged;
	uint64_t causes[MAX_CAUSES]; /* hashes of causes already logged */
	int ncauses;

	void (*ready_fn)(void *ctx);
	void *ready_ctx;

	struct otlp_client_stats stats;
};

/* ---- pure helpers (unit-tested) */

enum otlp_outcome otlp_client__classify(enum otlp_err err, long status)
{
	/* An endpoint that cannot be used never gets better; anything else on
	 * the way to a response is a transport error, which the spec retries. */
	if (err == OTLP_ERR_URL || err == OTLP_ERR_NOMEM)
		return OTLP_DROP;
	if (err != OTLP_ERR_NONE)
		return OTLP_RETRY;
	if (status >= 200 && status < 300)
		return OTLP_OK;
	if (status == 429 || status == 502 || status == 503 || status == 504)
		return OTLP_RETRY;
	return OTLP_DROP;
}

/* HTTP-date (RFC 9110 5.6.7) as Unix time: IMF-fixdate, or the obsolete
 * RFC 850 and asctime forms, all in GMT; -1 when it is none of them. */
static int64_t http_date(const char *s)
{
	static const char *const forms[] = {
		"%a, %d %b %Y %H:%M:%S GMT", /* Sun, 06 Nov 1994 08:49:37 GMT */
		"%A, %d-%b-%y %H:%M:%S GMT", /* Sunday, 06-Nov-94 08:49:37 GMT */
		"%a %b %e %H:%M:%S %Y",      /* Sun Nov  6 08:49:37 1994 */
	};
	for (size_t i = 0; i < sizeof(forms) / sizeof(forms[0]); i++) {
		struct tm tm = {0};
		const char *end = strptime(s, forms[i], &tm);
		if (end && !*end)
			return (int64_t)timegm(&tm);
	}
	return -1;
}

int64_t otlp_client__retry_after_ms(const char *value, size_t len, int64_t now_unix)
{
	char buf[128];
	while (len && isspace((unsigned char)*value))
		value++, len--;
	while (len && isspace((unsigned char)value[len - 1]))
		len--;
	if (!len || len >= sizeof(buf))
		return -1;
	memcpy(buf, value, len);
	buf[len] = '\0';

	if (isdigit((unsigned char)buf[0])) {
		int64_t secs = 0;
		for (size_t i = 0; i < len; i++) {
			if (!isdigit((unsigned char)buf[i]))
				return -1;
			if (secs < RETRY_AFTER_MAX_MS)
				secs = secs * 10 + (buf[i] - '0');
		}
		return secs * 1000 > RETRY_AFTER_MAX_MS ? RETRY_AFTER_MAX_MS : secs * 1000;
	}
	/* HTTP-date: it must name a weekday, so that a stray word is not
	 * taken for a date. */
	if (!isalpha((unsigned char)buf[0]))
		return -1;
	int64_t when = http_date(buf);
	if (when == -1)
		return -1;
	int64_t ms = ((int64_t)when - now_unix) * 1000;
	if (ms < 0)
		return 0;
	return ms > RETRY_AFTER_MAX_MS ? RETRY_AFTER_MAX_MS : ms;
}

uint64_t otlp_client__backoff_ms(uint32_t attempt, uint64_t rnd)
{
	uint64_t base = BACKOFF_INITIAL_MS;
	for (uint32_t i = 1; i < attempt && base < BACKOFF_MAX_MS; i++)
		base *= 2;
	if (base > BACKOFF_MAX_MS)
		base = BACKOFF_MAX_MS;
	/* Jitter in [base/2, base]: many agents restarted together do not
	 * retry in lockstep. */
	return base / 2 + rnd % (base / 2 + 1);
}

static uint64_t next_random(struct otlp_client *c)
{
	uint64_t x = c->rng;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	c->rng = x;
	return x * 0x2545F4914F6CDD1DULL;
}

static uint64_t hash_str(const char *s)
{
	uint64_t h = 0xcbf29ce484222325ULL;
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 0x100000001b3ULL;
	return h;
}

/* Whether cause is new (then remembered): logs say each cause once. */
static bool first_time(struct otlp_client *c, const char *cause)
{
	uint64_t h = hash_str(cause);
	for (int i = 0; i < c->ncauses; i++)
		if (c->causes[i] == h)
			return false;
	if (c->ncauses == MAX_CAUSES)
		return false; /* enough said: the counters tell the rest */
	c->causes[c->ncauses++] = h;
	return true;
}

/* ---- queue */

static void pop_head(struct otlp_client *c)
{
	struct otlp_req *r = c->head;
	c->head = r->next;
	if (!c->head)
		c->tail = NULL;
	c->stats.queue_bytes -= r->len;
	c->stats.queue_requests--;
	free(r);
}

static void drop_head(struct otlp_client *c)
{
	c->stats.dropped_items += c->head->items;
	pop_head(c);
}

/* Drops the oldest request that is not in flight; false when there is none. */
static bool drop_oldest(struct otlp_client *c)
{
	struct otlp_req *prev = NULL, *r = c->head;
	if (c->in_flight && r) {
		prev = r; /* the transport is reading its bytes */
		r = r->next;
	}
	if (!r)
		return false;
	if (!prev && c->retry_timer) {
		loop__cancel(c->loop, c->retry_timer); /* it was waiting for its retry */
		c->retry_timer = 0;
	}
	if (prev)
		prev->next = r->next;
	else
		c->head = r->next;
	if (c->tail == r)
		c->tail = prev;
	c->stats.queue_bytes -= r->len;
	c->stats.queue_requests--;
	c->stats.dropped_queue_full++;
	c->stats.dropped_items += r->items;
	free(r);
	return true;
}

/* ---- the transport on the loop */

static void maybe_start(struct otlp_client *c);

static void on_socket_ready(void *ctx, int fd, uint32_t events)
{
	struct otlp_client *c = ctx;
	c->tr->io(c->t, fd, events);
}

int otlp_client__watch(struct otlp_client *c, int fd, uint32_t events)
{
	int i;
	for (i = 0; i < c->nsocks && c->socks[i].fd != fd; i++)
		;
	if (!events) {
		loop__unwatch(c->loop, fd);
		if (i < c->nsocks)
			c->socks[i] = c->socks[--c->nsocks];
		return 0;
	}
	if (i == c->nsocks) {
		if (c->nsocks == c->capsocks) {
			int cap = c->capsocks ? c->capsocks * 2 : 4;
			struct watched_socket *n = realloc(c->socks, (size_t)cap * sizeof(*n));
			if (!n)
				return -1;
			c->socks = n;
			c->capsocks = cap;
		}
		c->nsocks++;
	}
	c->socks[i] = (struct watched_socket){fd, events};
	return loop__watch(c->loop, fd, events, on_socket_ready, c) ? -1 : 0;
}

static void on_transport_timer(void *ctx)
{
	struct otlp_client *c = ctx;
	c->t_timer = 0;
	c->t_timer_at_ns = 0;
	c->tr->timeout(c->t);
}

int otlp_client__set_timer(struct otlp_client *c, int64_t ms)
{
	if (c->t_timer)
		loop__cancel(c->loop, c->t_timer);
	c->t_timer = 0;
	c->t_timer_at_ns = 0;
	if (ms < 0)
		return 0;
	c->t_timer_at_ns = loop__now_ns() + (uint64_t)ms * 1000000 + 1;
	c->t_timer = loop__after(c->loop, (uint64_t)ms, on_transport_timer, c);
	return c->t_timer < 0 ? -1 : 0;
}

void otlp_client__body(struct otlp_client *c, const void *data, size_t len)
{
	size_t keep = len;
	if (c->resp_len + keep > MAX_RESPONSE_BYTES)
		keep = MAX_RESPONSE_BYTES - c->resp_len;
	if (keep) {
		memcpy(c->resp + c->resp_len, data, keep);
		c->resp_len += keep;
	}
}

void otlp_client__header(struct otlp_client *c, const char *line, size_t len)
{
	static const char name[] = "retry-after:";
	const size_t n = sizeof(name) - 1;
	if (len <= n || strncasecmp(line, name, n))
		return;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	/* the value's surrounding blanks and line end are trimmed there */
	c->retry_after_ms = otlp_client__retry_after_ms(line + n, len - n, (int64_t)ts.tv_sec);
}

/* ---- outcomes */

static void on_retry_timer(void *ctx)
{
	struct otlp_client *c = ctx;
	c->retry_timer = 0;
	maybe_start(c);
}

/* Printable excerpt of a response body for a log line ("" when binary). */
static void body_excerpt(const struct otlp_client *c, char *out, size_t cap)
{
	size_t n = 0;
	for (size_t i = 0; i < c->resp_len && n + 1 < cap; i++) {
		unsigned char ch = c->resp[i];
		if (ch == '\n' || ch == '\r' || ch == '\t')
			ch = ' ';
		else if (ch < 0x20 || ch >= 0x7f) {
			n = 0; /* binary (e.g. a google.rpc.Status): not worth printing */
			break;
		}
		out[n++] = (char)ch;
	}
	out[n] = '\0';
}

/* protobuf-c's generated names are long. */
typedef Opentelemetry__Proto__Collector__Trace__V1__ExportTraceServiceResponse TraceResponse;
typedef Opentelemetry__Proto__Collector__Metrics__V1__ExportMetricsServiceResponse MetricsResponse;
#define trace_response_unpack \
	opentelemetry__proto__collector__trace__v1__export_trace_service_response__unpack
#define trace_response_free \
	opentelemetry__proto__collector__trace__v1__export_trace_service_response__free_unpacked
#define metrics_response_unpack \
	opentelemetry__proto__collector__metrics__v1__export_metrics_service_response__unpack
#define metrics_response_free \
	opentelemetry__proto__collector__metrics__v1__export_metrics_service_response__free_unpacked

/* A 2xx answer may carry partial success: items the backend rejected. */
static void read_partial_success(struct otlp_client *c, uint64_t items)
{
	int64_t rejected = 0;
	char message[512] = "";
	bool valid;
	if (!c->resp_len)
		return;
	if (c->is_traces) {
		TraceResponse *m = trace_response_unpack(NULL, c->resp_len, c->resp);
		valid = m != NULL;
		if (m && m->partial_success) {
			rejected = m->partial_success->rejected_spans;
			snprintf(message, sizeof(message), "%s",
				 m->partial_success->error_message ?: "");
		}
		if (m)
			trace_response_free(m, NULL);
	} else {
		MetricsResponse *m = metrics_response_unpack(NULL, c->resp_len, c->resp);
		valid = m != NULL;
		if (m && m->partial_success) {
			rejected = m->partial_success->rejected_data_points;
			snprintf(message, sizeof(message), "%s",
				 m->partial_success->error_message ?: "");
		}
		if (m)
			metrics_response_free(m, NULL);
	}
	if (!valid) {
		if (first_time(c, "unparseable response"))
			log_warn("%s export: the backend answered 2xx with a body that is not an "
				 "OTLP Export%sServiceResponse (%zu bytes); taken as success "
				 "(logged once)",
				 c->signal, c->is_traces ? "Trace" : "Metrics", c->resp_len);
		return;
	}
	if (rejected > 0)
		c->stats.rejected_items += (uint64_t)rejected;
	if (rejected <= 0 && !message[0])
		return;
	char cause[600];
	snprintf(cause, sizeof(cause), "partial success: %s", message);
	if (first_time(c, cause))
		log_warn("%s export: partial success: the backend rejected %lld of %llu %s: \"%s\" "
			 "(each distinct message is logged once; rejections are counted)",
			 c->signal, (long long)rejected, (unsigned long long)items, c->items_name,
			 message);
}

static void notify_ready(struct otlp_client *c)
{
	if (c->ready_fn)
		c->ready_fn(c->ready_ctx);
}

static void on_success(struct otlp_client *c)
{
	struct otlp_req *r = c->head;
	c->stats.requests_ok++;
	c->stats.items_ok += r->items;
	read_partial_success(c, r->items);
	if (c->down_warned && !c->recovery_logged) {
		c->recovery_logged = true;
		log_info("%s export to %s works again (%llu attempts failed so far; the "
			 "rastro_export_* self-metrics count later failures)",
			 c->signal, c->cfg->endpoint,
			 (unsigned long long)c->stats.failed_retryable);
	}
	pop_head(c);
}

/* Schedules the retry; false when the request is given up instead. */
static bool on_retryable(struct otlp_client *c, enum otlp_err err, long status, const char *text,
			 const char *cause)
{
	struct otlp_req *r = c->head;
	c->stats.failed_retryable++;
	if (first_time(c, cause)) {
		c->down_warned = true;
		if (err != OTLP_ERR_NONE)
			log_warn("%s export to %s failed: %s; retrying with backoff (further "
				 "failures of this kind are only counted)",
				 c->signal, c->cfg->endpoint, text);
		else
			log_warn("%s export to %s: HTTP %ld; retrying with backoff%s (further "
				 "failures of this kind are only counted)",
				 c->signal, c->cfg->endpoint, status,
				 c->retry_after_ms >= 0 ? ", honouring Retry-After" : "");
	}
	uint64_t now = loop__now_ns();
	if (now - r->first_attempt_ns > RETRY_MAX_ELAPSED_NS) {
		if (first_time(c, "expired"))
			log_warn("%s export: a request still failing after %llu s of retries is "
				 "dropped (%llu %s); later ones are only counted",
				 c->signal, RETRY_MAX_ELAPSED_NS / 1000000000ull,
				 (unsigned long long)r->items, c->items_name);
		c->stats.dropped_expired++;
		drop_head(c);
		return false;
	}
	uint64_t delay = c->retry_after_ms >= 0
				 ? (uint64_t)c->retry_after_ms
				 : otlp_client__backoff_ms(r->attempts, next_random(c));
	c->stats.retries++;
	c->retry_at_ns = now + delay * 1000000;
	c->retry_timer = loop__after(c->loop, delay, on_retry_timer, c);
	if (c->retry_timer < 0)
		c->retry_timer = 0; /* out of memory: the next send or the flush retries */
	return true;
}

/* 400 (bad data), 401/403 (credentials), 404 (wrong URL), 413 ...: sending
 * the same bytes again cannot help. */
static void on_permanent(struct otlp_client *c, enum otlp_err err, long status, const char *text,
			 const char *cause)
{
	struct otlp_req *r = c->head;
	c->stats.failed_permanent++;
	if (first_time(c, cause)) {
		char excerpt[200];
		body_excerpt(c, excerpt, sizeof(excerpt));
		if (err != OTLP_ERR_NONE)
			log_warn("%s export to %s failed: %s; %llu %s dropped (logged once per "
				 "cause; drops are counted)",
				 c->signal, c->cfg->endpoint, text,
				 (unsigned long long)r->items, c->items_name);
		else
			log_warn("%s export to %s rejected with HTTP %ld%s%s%s; %llu %s dropped "
				 "(logged once per status; drops are counted)",
				 c->signal, c->cfg->endpoint, status, excerpt[0] ? " \"" : "",
				 excerpt, excerpt[0] ? "\"" : "", (unsigned long long)r->items,
				 c->items_name);
	}
	drop_head(c);
}

void otlp_client__finished(struct otlp_client *c, enum otlp_err err, long status,
			   const char *text)
{
	char cause[64];
	c->in_flight = false;
	if (!c->head)
		return;
	if (err != OTLP_ERR_NONE)
		snprintf(cause, sizeof(cause), "transport error %d", (int)err);
	else
		snprintf(cause, sizeof(cause), "HTTP %ld", status);

	switch (otlp_client__classify(err, status)) {
	case OTLP_OK:
		on_success(c);
		break;
	case OTLP_RETRY:
		if (on_retryable(c, err, status, text, cause))
			return; /* the head waits for its retry */
		break;
	case OTLP_DROP:
		on_permanent(c, err, status, text, cause);
		break;
	}
	maybe_start(c);
	notify_ready(c);
}

static void maybe_start(struct otlp_client *c)
{
	if (c->in_flight || c->retry_timer || !c->head)
		return;
	struct otlp_req *r = c->head;
	c->resp_len = 0;
	c->retry_after_ms = -1;
	if (!r->first_attempt_ns)
		r->first_attempt_ns = loop__now_ns();
	r->attempts++;
	c->in_flight = true;
	c->stats.requests_sent++;
	if (!c->tr->start(c->t, r->body, r->len)) {
		/* Out of memory: try again in a second rather than stall. */
		c->in_flight = false;
		c->stats.requests_sent--;
		r->attempts--;
		c->retry_at_ns = loop__now_ns() + 1000000000ull;
		c->retry_timer = loop__after(c->loop, 1000, on_retry_timer, c);
		if (c->retry_timer < 0)
			c->retry_timer = 0;
	}
}

/* ---- API */

bool otlp_header_ok(const char *key, const char *value)
{
	if (!*key || strpbrk(key, "\r\n:") || strpbrk(value, "\r\n")) {
		log_warn("OTLP header \"%s\" is not a valid HTTP header: not sent", key);
		return false;
	}
	return true;
}

struct otlp_client *otlp_client__new(struct loop *loop, const struct otlp_signal *cfg,
				     const char *signal, uint64_t max_queue_bytes,
				     const char **why)
{
	*why = "out of memory";
	struct otlp_client *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->loop = loop;
	c->cfg = cfg;
	snprintf(c->signal, sizeof(c->signal), "%s", signal);
	c->is_traces = !strcmp(signal, "traces");
	c->items_name = c->is_traces ? "spans" : "data points";
	c->max_queue_bytes = max_queue_bytes;
	c->retry_after_ms = -1;
	c->rng = loop__now_ns() ^ (uintptr_t)c ^ 0x9E3779B97F4A7C15ULL;
	c->resp = malloc(MAX_RESPONSE_BYTES);
	c->tr = strncmp(cfg->endpoint, "https://", 8) ? &otlp_http_transport
						      : &otlp_curl_transport;
	if (c->resp)
		c->t = c->tr->open(c, cfg, why);
	if (!c->t) {
		otlp_client__free(c);
		return NULL;
	}
	return c;
}

void otlp_client__free(struct otlp_client *c)
{
	if (!c)
		return;
	if (c->head) {
		uint64_t items = 0;
		for (struct otlp_req *r = c->head; r; r = r->next)
			items += r->items;
		log_warn("%s export: %llu %s in %llu requests were not exported at shutdown",
			 c->signal, (unsigned long long)items, c->items_name,
			 (unsigned long long)c->stats.queue_requests);
	}
	if (c->retry_timer)
		loop__cancel(c->loop, c->retry_timer);
	if (c->t) {
		if (c->in_flight)
			c->tr->abort(c->t);
		c->tr->close(c->t); /* unwatches its sockets, cancels its timer */
	}
	if (c->t_timer)
		loop__cancel(c->loop, c->t_timer);
	for (int i = 0; i < c->nsocks; i++)
		loop__unwatch(c->loop, c->socks[i].fd);
	while (c->head)
		pop_head(c);
	free(c->socks);
	free(c->resp);
	free(c);
}

/* gzip (RFC 1952) of body into a new request; NULL when out of memory. */
static struct otlp_req *gzip_request(const uint8_t *body, size_t len)
{
	z_stream z = {0};
	if (deflateInit2(&z, Z_BEST_SPEED, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) !=
	    Z_OK)
		return NULL;
	size_t bound = deflateBound(&z, (uLong)len);
	struct otlp_req *r = malloc(sizeof(*r) + bound);
	if (!r) {
		deflateEnd(&z);
		return NULL;
	}
	z.next_in = (Bytef *)body;
	z.avail_in = (uInt)len;
	z.next_out = r->body;
	z.avail_out = (uInt)bound;
	int rc = deflate(&z, Z_FINISH);
	size_t out = z.total_out;
	deflateEnd(&z);
	if (rc != Z_STREAM_END) {
		free(r);
		return NULL;
	}
	struct otlp_req *shrunk = realloc(r, sizeof(*r) + out);
	r = shrunk ? shrunk : r;
	r->len = out;
	return r;
}

uint8_t *otlp_client__body_new(size_t len)
{
	struct otlp_req *r = malloc(sizeof(*r) + len);
	if (!r)
		return NULL;
	r->len = len;
	return r->body;
}

static struct otlp_req *req_of(uint8_t *body)
{
	return (struct otlp_req *)(body - offsetof(struct otlp_req, body));
}

static void enqueue(struct otlp_client *c, struct otlp_req *r, size_t len, uint64_t items);

void otlp_client__send(struct otlp_client *c, const uint8_t *body, size_t len, uint64_t items)
{
	struct otlp_req *r;
	if (c->cfg->gzip) {
		r = gzip_request(body, len);
	} else {
		r = malloc(sizeof(*r) + len);
		if (r) {
			memcpy(r->body, body, len);
			r->len = len;
		}
	}
	enqueue(c, r, len, items);
}

void otlp_client__send_body(struct otlp_client *c, uint8_t *body, size_t len, uint64_t items)
{
	struct otlp_req *r = req_of(body);
	if (c->cfg->gzip) {
		struct otlp_req *z = gzip_request(body, len);
		free(r);
		r = z;
	} else {
		r->len = len;
	}
	enqueue(c, r, len, items);
}

/* Queues r (NULL: out of memory, counted), of len bytes before any gzip. */
static void enqueue(struct otlp_client *c, struct otlp_req *r, size_t len, uint64_t items)
{
	if (!r || r->len > c->max_queue_bytes) {
		if (first_time(c, r ? "too big" : "out of memory"))
			log_warn("%s export: a request of %zu bytes (%llu %s) was dropped: %s",
				 c->signal, r ? r->len : len, (unsigned long long)items,
				 c->items_name,
				 r ? "larger than otlp.max_queue_bytes" : "out of memory");
		c->stats.dropped_queue_full++;
		c->stats.dropped_items += items;
		free(r);
		return;
	}
	r->next = NULL;
	r->items = items;
	r->first_attempt_ns = 0;
	r->attempts = 0;
	/* Oldest data goes first: the newest describes the present best. The
	 * request in flight stays (the transport reads its bytes). */
	while (c->stats.queue_bytes + r->len > c->max_queue_bytes && drop_oldest(c))
		;
	if (c->tail)
		c->tail->next = r;
	else
		c->head = r;
	c->tail = r;
	c->stats.queue_bytes += r->len;
	c->stats.queue_requests++;
	maybe_start(c);
}

void otlp_client__on_ready(struct otlp_client *c, void (*fn)(void *ctx), void *ctx)
{
	c->ready_fn = fn;
	c->ready_ctx = ctx;
}

uint64_t otlp_client__waiting(const struct otlp_client *c)
{
	uint64_t n = c->stats.queue_requests;
	return c->in_flight || c->retry_timer ? n - 1 : n;
}

void otlp_client__stats(const struct otlp_client *c, struct otlp_client_stats *out)
{
	*out = c->stats;
}

const char *otlp_client__signal(const struct otlp_client *c)
{
	return c->signal;
}

/* ---- shutdown flush: the loop no longer runs, so poll the transport's sockets here */

static bool flush_pending(struct otlp_client *c, uint64_t now, uint64_t deadline_ns)
{
	if (!c || !c->head)
		return false;
	if (!c->in_flight && c->retry_timer) {
		if (c->retry_at_ns > deadline_ns)
			return false; /* would wait past the deadline: given up */
		if (c->retry_at_ns <= now) {
			loop__cancel(c->loop, c->retry_timer);
			c->retry_timer = 0;
		}
	}
	if (!c->in_flight && !c->retry_timer)
		maybe_start(c);
	return c->in_flight || c->retry_timer;
}

bool otlp_client__flush_many(struct otlp_client **cs, int n, uint64_t deadline_ms)
{
	uint64_t deadline_ns = deadline_ms * 1000000;
	for (;;) {
		uint64_t now = loop__now_ns();
		bool pending = false;
		for (int i = 0; i < n; i++)
			pending |= flush_pending(cs[i], now, deadline_ns);
		if (!pending || now >= deadline_ns)
			break;

		struct pollfd fds[32];
		struct otlp_client *owner[32];
		int nfds = 0;
		uint64_t wake = deadline_ns;
		for (int i = 0; i < n; i++) {
			struct otlp_client *c = cs[i];
			if (!c)
				continue;
			for (int s = 0; s < c->nsocks && nfds < 32; s++, nfds++) {
				fds[nfds].fd = c->socks[s].fd;
				fds[nfds].events = (c->socks[s].events & EPOLLIN ? POLLIN : 0) |
						   (c->socks[s].events & EPOLLOUT ? POLLOUT : 0);
				fds[nfds].revents = 0;
				owner[nfds] = c;
			}
			if (c->t_timer_at_ns && c->t_timer_at_ns < wake)
				wake = c->t_timer_at_ns;
			if (!c->in_flight && c->retry_timer && c->retry_at_ns < wake)
				wake = c->retry_at_ns;
		}
		int timeout = wake > now ? (int)((wake - now + 999999) / 1000000) : 0;
		int ready = poll(fds, (nfds_t)nfds, timeout);
		if (ready < 0 && errno != EINTR)
			break;
		for (int f = 0; f < nfds && ready > 0; f++) {
			if (!fds[f].revents)
				continue;
			uint32_t ev = (fds[f].revents & POLLIN ? EPOLLIN : 0) |
				      (fds[f].revents & POLLOUT ? EPOLLOUT : 0) |
				      (fds[f].revents & (POLLERR | POLLHUP) ? EPOLLERR : 0);
			on_socket_ready(owner[f], fds[f].fd, ev);
		}
		now = loop__now_ns();
		for (int i = 0; i < n; i++)
			if (cs[i] && cs[i]->t_timer_at_ns && cs[i]->t_timer_at_ns <= now) {
				loop__cancel(cs[i]->loop, cs[i]->t_timer);
				on_transport_timer(cs[i]);
			}
	}
	bool all = true;
	for (int i = 0; i < n; i++)
		if (cs[i] && cs[i]->head)
			all = false;
	return all;
}

bool otlp_client__flush(struct otlp_client *c, uint64_t deadline_ms)
{
	return otlp_client__flush_many(&c, 1, deadline_ms);
}
