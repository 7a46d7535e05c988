/*
 * The metrics registry. A record's attribute set is serialised into a key
 * (kind, service, then each attribute of its kind's schema); the key's hash
 * finds the series in one map lookup, a memcmp confirms it. A series holds
 * every histogram of its kind (HTTP: duration and both body sizes share one
 * attribute set), so one lookup serves all of them.
 *
 * Series are listed per service and kind, in creation order: the Prometheus
 * endpoint walks them metric by metric, the OTLP encoder service by service.
 */
#include "metrics/metrics.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#include "common/u64map.h"
#include "discover/discover.h"

static const struct metric_desc descs[METRIC__COUNT] = {
    [METRIC_HTTP_SERVER_DURATION] = {"http.server.request.duration", "s",
				     "Duration of HTTP server requests.",
				     "http_server_request_duration_seconds", REQ_HTTP_SERVER, 0},
    [METRIC_HTTP_SERVER_REQUEST_SIZE] = {"http.server.request.body.size", "By",
					 "Size of HTTP server request bodies.",
					 "http_server_request_body_size_bytes", REQ_HTTP_SERVER, 1},
    [METRIC_HTTP_SERVER_RESPONSE_SIZE] = {"http.server.response.body.size", "By",
					  "Size of HTTP server response bodies.",
					  "http_server_response_body_size_bytes", REQ_HTTP_SERVER,
					  2},
    [METRIC_HTTP_CLIENT_DURATION] = {"http.client.request.duration", "s",
				     "Duration of HTTP client requests.",
				     "http_client_request_duration_seconds", REQ_HTTP_CLIENT, 0},
    [METRIC_HTTP_CLIENT_REQUEST_SIZE] = {"http.client.request.body.size", "By",
					 "Size of HTTP client request bodies.",
					 "http_client_request_body_size_bytes", REQ_HTTP_CLIENT, 1},
    [METRIC_HTTP_CLIENT_RESPONSE_SIZE] = {"http.client.response.body.size", "By",
					  "Size of HTTP client response bodies.",
					  "http_client_response_body_size_bytes", REQ_HTTP_CLIENT,
					  2},
    [METRIC_RPC_SERVER_DURATION] = {"rpc.server.call.duration", "s", "Duration of RPCs served.",
				    "rpc_server_call_duration_seconds", REQ_GRPC_SERVER, 0},
    [METRIC_RPC_CLIENT_DURATION] = {"rpc.client.call.duration", "s", "Duration of RPCs made.",
				    "rpc_client_call_duration_seconds", REQ_GRPC_CLIENT, 0},
    [METRIC_DB_CLIENT_DURATION] = {"db.client.operation.duration", "s",
				   "Duration of database client operations.",
				   "db_client_operation_duration_seconds", REQ_DB_CLIENT, 0},
};

static const int kind_metric[REQ__COUNT] = {
    [REQ_HTTP_SERVER] = METRIC_HTTP_SERVER_DURATION,
    [REQ_HTTP_CLIENT] = METRIC_HTTP_CLIENT_DURATION,
    [REQ_GRPC_SERVER] = METRIC_RPC_SERVER_DURATION,
    [REQ_GRPC_CLIENT] = METRIC_RPC_CLIENT_DURATION,
    [REQ_DB_CLIENT] = METRIC_DB_CLIENT_DURATION,
};

/* The semantic conventions' advice for db.client.operation.duration. */
static const double db_bounds[] = {0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10};

/* ---- attribute schemas: the key holds these fields in this order */

enum field_type { F_STR, F_INT };

struct field {
	const char *key;
	enum field_type type;
};

struct schema {
	int nfields;
	struct field fields[METRICS_MAX_ATTRS];
};

static const struct schema schemas[REQ__COUNT] = {
    [REQ_HTTP_SERVER] = {6,
			 {{"http.request.method", F_STR},
			  {"http.response.status_code", F_INT},
			  {"http.route", F_STR},
			  {"url.scheme", F_STR},
			  {"server.port", F_INT},
			  {"error.type", F_STR}}},
    [REQ_HTTP_CLIENT] = {6,
			 {{"http.request.method", F_STR},
			  {"http.response.status_code", F_INT},
			  {"server.address", F_STR},
			  {"server.port", F_INT},
			  {"url.scheme", F_STR},
			  {"error.type", F_STR}}},
    [REQ_GRPC_SERVER] = {4,
			 {{"rpc.system.name", F_STR},
			  {"rpc.method", F_STR},
			  {"rpc.response.status_code", F_STR},
			  {"error.type", F_STR}}},
    [REQ_GRPC_CLIENT] = {4,
			 {{"rpc.system.name", F_STR},
			  {"rpc.method", F_STR},
			  {"rpc.response.status_code", F_STR},
			  {"error.type", F_STR}}},
    [REQ_DB_CLIENT] = {6,
		       {{"db.system.name", F_STR},
			{"db.operation.name", F_STR},
			{"db.collection.name", F_STR},
			{"server.address", F_STR},
			{"server.port", F_INT},
			{"error.type", F_STR}}},
};

#define KEY_HEAD (1 + sizeof(void *))
/* Every string of a record lives in its arena, plus a few short constants. */
#define KEY_MAX (KEY_HEAD + REQUEST_ARENA + 512)

struct keybuf {
	size_t n;
	unsigned char b[KEY_MAX];
};

/* ---- series and services */

struct hist {
	uint64_t count;
	double sum, min, max;
	uint64_t *buckets;
};

struct svc_entry;

struct series {
	struct series *hash_next;   /* same hash: collision chain */
	struct series *prev, *next; /* its service's list for its kind */
	struct svc_entry *svc;
	uint64_t hash;
	uint64_t start_ns, last_ns;
	enum request_kind kind;
	bool overflow;
	uint32_t klen;
	int nhist;
	uint64_t seq; /* creation order, for readers that resume (struct metrics_cursor) */
	struct hist hist[3];
	unsigned char *key;
};

struct svc_entry {
	struct service *service; /* referenced while the entry exists */
	struct svc_entry *prev, *next;
	struct series *head[REQ__COUNT], *tail[REQ__COUNT];
	struct series *overflow[REQ__COUNT];
	uint32_t nseries;
	uint64_t seq; /* creation order, from the same counter as the series' */
};

struct metrics {
	uint64_t start_ns, ttl_ns;
	uint32_t max_series;
	struct u64map by_hash;	  /* key hash -> first series of its chain */
	uint64_t hash_mask;	  /* all ones; fewer bits in unit tests force collisions */
	struct u64map by_service; /* struct service * -> svc_entry */
	struct svc_entry *first, *last;
	/* The series of the previous record: consecutive records of one service
	 * mostly share their attributes (one route under load), and comparing
	 * the key costs less than hashing it and probing the map. */
	struct series *recent;
	int nhist[REQ__COUNT];
	const double *bounds[REQ__COUNT][3];
	int nbounds[REQ__COUNT][3];
	struct metrics_stats stats;
	uint64_t next_seq; /* of the next service entry or series: lists are in seq order */
};

const struct metric_desc *metrics__desc(int metric)
{
	return metric >= 0 && metric < METRIC__COUNT ? &descs[metric] : NULL;
}

int metrics__kind_metric(enum request_kind kind)
{
	return (unsigned)kind < REQ__COUNT ? kind_metric[kind] : -1;
}

const char *metrics__drop_name(int which)
{
	static const char *const names[METRICS_DROP__COUNT] = {
	    [METRICS_DROP_NO_SERVICE] = "no_service",
	    [METRICS_DROP_NO_MEMORY] = "out_of_memory",
	};
	return which >= 0 && which < METRICS_DROP__COUNT ? names[which] : "?";
}

struct metrics *metrics__new(const struct rastro_config *cfg, uint64_t now_ns)
{
	struct metrics *m = calloc(1, sizeof(*m));
	if (!m)
		return NULL;
	m->start_ns = now_ns;
	m->ttl_ns = (uint64_t)cfg->metrics_ttl_ms * 1000000ull;
	m->max_series = cfg->max_series;
	m->hash_mask = ~0ull;
	u64map__init(&m->by_hash);
	u64map__init(&m->by_service);
	for (int k = 0; k < REQ__COUNT; k++) {
		bool http = k == REQ_HTTP_SERVER || k == REQ_HTTP_CLIENT;
		m->nhist[k] = http ? 3 : 1;
		if (k == REQ_DB_CLIENT) {
			m->bounds[k][0] = db_bounds;
			m->nbounds[k][0] = sizeof(db_bounds) / sizeof(db_bounds[0]);
		} else {
			m->bounds[k][0] = cfg->duration_buckets.value;
			m->nbounds[k][0] = cfg->duration_buckets.count;
		}
		for (int h = 1; h < m->nhist[k]; h++) {
			m->bounds[k][h] = cfg->size_buckets.value;
			m->nbounds[k][h] = cfg->size_buckets.count;
		}
	}
	return m;
}

static void remove_series(struct metrics *m, struct series *s);

void metrics__free(struct metrics *m)
{
	if (!m)
		return;
	/* Each pass removes one series; an entry goes with its last one. */
	while (m->first) {
		struct svc_entry *e = m->first;
		for (int k = 0; k < REQ__COUNT; k++) {
			if (e->head[k]) {
				remove_series(m, e->head[k]);
				break;
			}
		}
	}
	u64map__free(&m->by_hash);
	u64map__free(&m->by_service);
	free(m);
}

void metrics__set_hash_mask(struct metrics *m, uint64_t mask)
{
	m->hash_mask = mask;
}

uint64_t metrics__start_ns(const struct metrics *m)
{
	return m->start_ns;
}

void metrics__stats(const struct metrics *m, struct metrics_stats *out)
{
	*out = m->stats;
}

/* ---- keys */

/* Every string of a record fits (see KEY_MAX); the checks only make sure a
 * future field cannot write past the buffer. */
static void key_str(struct keybuf *k, const char *s, size_t len)
{
	if (k->n + 2 > KEY_MAX)
		return;
	size_t room = KEY_MAX - k->n - 2;
	if (len > room)
		len = room;
	if (len > UINT16_MAX)
		len = UINT16_MAX;
	uint16_t l = (uint16_t)len;
	memcpy(k->b + k->n, &l, 2);
	memcpy(k->b + k->n + 2, s, len);
	k->n += 2 + len;
}

static void key_cstr(struct keybuf *k, const char *s)
{
	key_str(k, s ? s : "", s ? strlen(s) : 0);
}

static void key_rstr(struct keybuf *k, const struct request *r, struct rstr s)
{
	key_str(k, request__str(r, s), s.len);
}

static void key_int(struct keybuf *k, bool present, int64_t v)
{
	if (k->n + 9 > KEY_MAX)
		return;
	k->b[k->n++] = present;
	if (present) {
		memcpy(k->b + k->n, &v, 8);
		k->n += 8;
	}
}

static uint64_t key_hash(const unsigned char *p, size_t n)
{
	uint64_t h = u64map__hash_bytes(p, n, 0);
	return h ? h : 1; /* u64map keys are non-zero */
}

/* semconv__method's value, without its strlen. */
static void key_method(struct keybuf *k, const struct request *r)
{
	if (r->method_known)
		key_rstr(k, r, r->method);
	else
		key_str(k, "_OTHER", 6);
}

/* Host header without its port, else the peer's address. */
static void key_server_address(struct keybuf *k, const struct request *r, bool use_host)
{
	if (use_host && request__has(r->host)) {
		const char *h = request__str(r, r->host);
		size_t n = r->host.len;
		if (h[0] == '[') { /* [v6]:port */
			const char *e = memchr(h, ']', n);
			key_str(k, h + 1, e ? (size_t)(e - h - 1) : n - 1);
			return;
		}
		const char *colon = memchr(h, ':', n);
		key_str(k, h, colon ? (size_t)(colon - h) : n);
		return;
	}
	char addr[INET6_ADDRSTRLEN];
	semconv__format_addr(r->tuple.remote_addr, addr, sizeof(addr));
	key_cstr(k, addr);
}

static const char *db_system_name(enum db_system s)
{
	switch (s) {
	case DB_POSTGRESQL:
		return "postgresql";
	case DB_MYSQL:
		return "mysql";
	case DB_MARIADB:
		return "mariadb";
	case DB_REDIS:
		return "redis";
	default:
		return "other_sql";
	}
}

static void build_key(struct keybuf *k, const struct request *r)
{
	char ebuf[32], sbuf[16];
	const char *err = semconv__error_type(r, ebuf, sizeof(ebuf));
	const struct service *svc = r->service;
	k->n = 0;
	k->b[k->n++] = (unsigned char)r->kind;
	memcpy(k->b + k->n, &svc, sizeof(svc));
	k->n += sizeof(svc);
	switch (r->kind) {
	case REQ_HTTP_SERVER:
		key_method(k, r);
		key_int(k, r->status > 0, r->status);
		key_rstr(k, r, r->route);
		key_str(k, "http", 4);
		key_int(k, true, r->tuple.local_port);
		key_cstr(k, err);
		break;
	case REQ_HTTP_CLIENT:
		key_method(k, r);
		key_int(k, r->status > 0, r->status);
		key_server_address(k, r, true);
		key_int(k, true, r->tuple.remote_port);
		key_str(k, "http", 4);
		key_cstr(k, err);
		break;
	case REQ_GRPC_SERVER:
	case REQ_GRPC_CLIENT:
		key_str(k, "grpc", 4);
		key_rstr(k, r, r->rpc_method);
		key_cstr(k, r->grpc_status >= 0
				? semconv__grpc_status_name(r->grpc_status, sbuf, sizeof(sbuf))
				: NULL);
		key_cstr(k, err);
		break;
	case REQ_DB_CLIENT:
		key_cstr(k, db_system_name(r->db_system));
		key_rstr(k, r, r->db_operation);
		key_rstr(k, r, r->db_collection);
		key_server_address(k, r, false);
		key_int(k, true, r->tuple.remote_port);
		key_cstr(k, err);
		break;
	default:
		break;
	}
}

/* Attributes of a series, decoded from its key. Strings point into the key
 * and are not NUL-terminated. */
static int decode_key(const struct series *s, struct attr *out)
{
	if (s->overflow) {
		out[0] = (struct attr){
		    .key = "otel.metric.overflow", .type = ATTR_STRING, .str = "true", .len = 4};
		return 1;
	}
	const struct schema *sc = &schemas[s->kind];
	const unsigned char *p = s->key + KEY_HEAD;
	int n = 0;
	for (int i = 0; i < sc->nfields; i++) {
		const struct field *f = &sc->fields[i];
		if (f->type == F_STR) {
			uint16_t len;
			memcpy(&len, p, 2);
			if (len)
				out[n++] = (struct attr){.key = f->key,
							 .type = ATTR_STRING,
							 .str = (const char *)p + 2,
							 .len = len};
			p += 2 + len;
		} else {
			bool present = *p++;
			if (present) {
				int64_t v;
				memcpy(&v, p, 8);
				p += 8;
				out[n++] = (struct attr){.key = f->key, .type = ATTR_INT, .num = v};
			}
		}
	}
	return n;
}

/* ---- series life */

static struct svc_entry *service_entry(struct metrics *m, const struct service *svc)
{
	struct svc_entry *e = u64map__get(&m->by_service, (uintptr_t)svc);
	if (e)
		return e;
	e = calloc(1, sizeof(*e));
	if (!e)
		return NULL;
	if (u64map__put(&m->by_service, (uintptr_t)svc, e)) {
		free(e);
		return NULL;
	}
	/* The record only lends its service; the series keep it alive (and its
	 * slot from being reused) until they expire. */
	e->service = (struct service *)svc;
	e->seq = ++m->next_seq;
	service__ref(e->service);
	e->prev = m->last;
	if (m->last)
		m->last->next = e;
	else
		m->first = e;
	m->last = e;
	m->stats.services++;
	return e;
}

static void drop_entry_if_empty(struct metrics *m, struct svc_entry *e)
{
	if (e->nseries)
		return;
	if (e->prev)
		e->prev->next = e->next;
	else
		m->first = e->next;
	if (e->next)
		e->next->prev = e->prev;
	else
		m->last = e->prev;
	u64map__remove(&m->by_service, (uintptr_t)e->service);
	service__unref(e->service);
	m->stats.services--;
	free(e);
}

static struct series *alloc_series(struct metrics *m, struct svc_entry *e, enum request_kind kind,
				   const struct keybuf *k, uint64_t hash, uint64_t now_ns)
{
	size_t nbuckets = 0;
	for (int h = 0; h < m->nhist[kind]; h++)
		nbuckets += (size_t)m->nbounds[kind][h] + 1;
	size_t klen = k ? k->n : 0;
	struct series *s = calloc(1, sizeof(*s) + nbuckets * sizeof(uint64_t) + klen);
	if (!s)
		return NULL;
	uint64_t *b = (uint64_t *)(s + 1);
	s->nhist = m->nhist[kind];
	for (int h = 0; h < s->nhist; h++) {
		s->hist[h].buckets = b;
		b += m->nbounds[kind][h] + 1;
	}
	s->key = (unsigned char *)b;
	if (klen)
		memcpy(s->key, k->b, klen);
	s->klen = (uint32_t)klen;
	s->hash = hash;
	s->kind = kind;
	s->overflow = k == NULL;
	s->start_ns = s->last_ns = now_ns;
	s->svc = e;
	s->seq = ++m->next_seq;
	s->prev = e->tail[kind];
	if (e->tail[kind])
		e->tail[kind]->next = s;
	else
		e->head[kind] = s;
	e->tail[kind] = s;
	e->nseries++;
	return s;
}

static void unlink_series(struct svc_entry *e, struct series *s)
{
	if (s->prev)
		s->prev->next = s->next;
	else
		e->head[s->kind] = s->next;
	if (s->next)
		s->next->prev = s->prev;
	else
		e->tail[s->kind] = s->prev;
	e->nseries--;
}

static void remove_series(struct metrics *m, struct series *s)
{
	struct svc_entry *e = s->svc;
	if (m->recent == s)
		m->recent = NULL;
	unlink_series(e, s);
	if (s->overflow) {
		e->overflow[s->kind] = NULL;
		m->stats.overflow_series[s->kind]--;
	} else {
		struct series *head = u64map__get(&m->by_hash, s->hash);
		if (head == s) {
			/* Remove, then put: the map never grows on that put, so it
			 * cannot fail and leave a dangling pointer behind. */
			u64map__remove(&m->by_hash, s->hash);
			if (s->hash_next)
				u64map__put(&m->by_hash, s->hash, s->hash_next);
		} else {
			while (head && head->hash_next != s)
				head = head->hash_next;
			if (head)
				head->hash_next = s->hash_next;
		}
		m->stats.series[s->kind]--;
	}
	free(s);
	drop_entry_if_empty(m, e);
}

static struct series *new_series(struct metrics *m, const struct request *r, const struct keybuf *k,
				 uint64_t hash, uint64_t now_ns)
{
	enum request_kind kind = r->kind;
	struct svc_entry *e = service_entry(m, r->service);
	if (!e)
		goto no_memory;
	if (m->stats.series[kind] >= m->max_series) {
		struct series *o = e->overflow[kind];
		if (!o) {
			o = alloc_series(m, e, kind, NULL, 0, now_ns);
			if (!o) {
				drop_entry_if_empty(m, e);
				goto no_memory;
			}
			e->overflow[kind] = o;
			m->stats.overflow_series[kind]++;
		}
		m->stats.overflow_records[kind]++;
		return o;
	}
	struct series *s = alloc_series(m, e, kind, k, hash, now_ns);
	if (!s) {
		drop_entry_if_empty(m, e);
		goto no_memory;
	}
	s->hash_next = u64map__get(&m->by_hash, hash);
	if (u64map__put(&m->by_hash, hash, s)) {
		unlink_series(e, s);
		free(s);
		drop_entry_if_empty(m, e);
		goto no_memory;
	}
	m->stats.series[kind]++;
	return s;
no_memory:
	m->stats.dropped[METRICS_DROP_NO_MEMORY]++;
	return NULL;
}

/* ---- recording */

static void hist_add(struct hist *h, const double *bounds, int nbounds, double v)
{
	/* First bucket whose upper bound is >= v (bounds are upper-inclusive,
	 * as Prometheus' le and OTLP's explicit_bounds say). */
	int lo = 0, hi = nbounds;
	while (lo < hi) {
		int mid = (lo + hi) / 2;
		if (v <= bounds[mid])
			hi = mid;
		else
			lo = mid + 1;
	}
	h->buckets[lo]++;
	if (!h->count || v < h->min)
		h->min = v;
	if (!h->count || v > h->max)
		h->max = v;
	h->count++;
	h->sum += v;
}

void metrics__record(struct metrics *m, const struct request *r, uint64_t now_ns)
{
	if ((unsigned)r->kind >= REQ__COUNT)
		return;
	if (!r->service) {
		m->stats.dropped[METRICS_DROP_NO_SERVICE]++;
		return;
	}
	struct keybuf k;
	build_key(&k, r);
	struct series *s = m->recent;
	if (!s || s->overflow || s->klen != k.n || memcmp(s->key, k.b, k.n)) {
		uint64_t hash = key_hash(k.b, k.n) & m->hash_mask;
		hash = hash ? hash : 1; /* u64map keys are non-zero */
		s = u64map__get(&m->by_hash, hash);
		while (s && (s->klen != k.n || memcmp(s->key, k.b, k.n)))
			s = s->hash_next;
		if (!s && !(s = new_series(m, r, &k, hash, now_ns)))
			return;
		m->recent = s;
	}
	s->last_ns = now_ns;

	enum request_kind kind = r->kind;
	double seconds = r->end_ns > r->start_ns ? (double)(r->end_ns - r->start_ns) / 1e9 : 0.0;
	hist_add(&s->hist[0], m->bounds[kind][0], m->nbounds[kind][0], seconds);
	if (s->nhist == 3) {
		if (r->has_request_body_size)
			hist_add(&s->hist[1], m->bounds[kind][1], m->nbounds[kind][1],
				 (double)r->request_body_bytes);
		if (r->has_response_body_size)
			hist_add(&s->hist[2], m->bounds[kind][2], m->nbounds[kind][2],
				 (double)r->response_body_bytes);
	}
}

int metrics__expire(struct metrics *m, uint64_t now_ns)
{
	int removed = 0;
	struct svc_entry *e = m->first;
	while (e) {
		struct svc_entry *next_e = e->next;
		bool gone = false; /* the entry is freed with its last series */
		for (int k = 0; k < REQ__COUNT && !gone; k++) {
			struct series *s = e->head[k];
			while (s) {
				struct series *next = s->next;
				if (now_ns >= s->last_ns && now_ns - s->last_ns >= m->ttl_ns) {
					gone = e->nseries == 1;
					remove_series(m, s);
					m->stats.expired_series++;
					removed++;
					if (gone)
						break;
				}
				s = next;
			}
		}
		e = next_e;
	}
	return removed;
}

/* ---- reading */

void metrics__foreach_service(const struct metrics *m, metric_service_fn fn, void *ctx)
{
	for (const struct svc_entry *e = m->first; e; e = e->next)
		fn(ctx, e->service);
}

static void fill_point(const struct metrics *m, const struct svc_entry *e, const struct series *s,
		       int metric, struct metric_point *p)
{
	const struct metric_desc *d = &descs[metric];
	const struct hist *h = &s->hist[d->hist];
	p->metric = metric;
	p->service = e->service;
	p->overflow = s->overflow;
	p->nattrs = decode_key(s, p->attrs);
	p->start_ns = s->start_ns;
	p->last_ns = s->last_ns;
	p->count = h->count;
	p->sum = h->sum;
	p->min = h->min;
	p->max = h->max;
	p->nbounds = m->nbounds[d->kind][d->hist];
	p->bounds = m->bounds[d->kind][d->hist];
	p->buckets = h->buckets;
}

static void entry_points(const struct metrics *m, const struct svc_entry *e, int metric,
			 metric_point_fn fn, void *ctx)
{
	const struct metric_desc *d = &descs[metric];
	struct metric_point p;
	for (const struct series *s = e->head[d->kind]; s; s = s->next) {
		if (!s->hist[d->hist].count)
			continue;
		fill_point(m, e, s, metric, &p);
		fn(ctx, &p);
	}
}

const struct service *metrics__next_service(const struct metrics *m, uint64_t *cursor)
{
	for (const struct svc_entry *e = m->first; e; e = e->next) {
		if (e->seq > *cursor) {
			*cursor = e->seq;
			return e->service;
		}
	}
	return NULL;
}

bool metrics__points_from(const struct metrics *m, int metric, struct metrics_cursor *cur,
			  metric_point_more_fn fn, void *ctx)
{
	if (metric < 0 || metric >= METRIC__COUNT)
		return true;
	const struct metric_desc *d = &descs[metric];
	struct metric_point p;
	/* Entries and series are appended in seq order and only ever unlinked:
	 * the first one past the cursor is where reading resumes, whatever was
	 * added or removed since. */
	for (const struct svc_entry *e = m->first; e; e = e->next) {
		if (e->seq < cur->svc_seq)
			continue;
		if (e->seq > cur->svc_seq) {
			cur->svc_seq = e->seq;
			cur->series_seq = 0;
		}
		for (const struct series *s = e->head[d->kind]; s; s = s->next) {
			if (s->seq <= cur->series_seq)
				continue;
			cur->series_seq = s->seq;
			if (!s->hist[d->hist].count)
				continue;
			fill_point(m, e, s, metric, &p);
			if (!fn(ctx, &p))
				return false;
		}
	}
	return true;
}

void metrics__foreach_point(const struct metrics *m, int metric, const struct service *svc,
			    metric_point_fn fn, void *ctx)
{
	if (metric < 0 || metric >= METRIC__COUNT)
		return;
	if (svc) {
		const struct svc_entry *e = u64map__get(&m->by_service, (uintptr_t)svc);
		if (e)
			entry_points(m, e, metric, fn, ctx);
		return;
	}
	for (const struct svc_entry *e = m->first; e; e = e->next)
		entry_points(m, e, metric, fn, ctx);
}
