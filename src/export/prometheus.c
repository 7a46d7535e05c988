/*
 * Prometheus endpoint, served by export/http_server on rastro's own loop
 * (plain HTTP: no HTTP library, and none of the TLS stack one would load).
 * The exposition is rendered at scrape time from the live registry, so a
 * scrape sees the same cumulative values the OTLP export sends.
 */
#include "export/prometheus.h"

#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/utf8.h"
#include "discover/discover.h"
#include "export/http_server.h"
#include "export/resource.h"
#include "log.h"
#include "metrics/self_metrics.h"

/* ---- rendering */

/* Shortest text that reads back as the same double, like Go's
 * strconv.FormatFloat(v, 'g', -1, 64) that Prometheus' own clients use. */
static void format_double(double v, char *out, size_t cap)
{
	if (isnan(v)) {
		snprintf(out, cap, "NaN");
		return;
	}
	if (isinf(v)) {
		snprintf(out, cap, v > 0 ? "+Inf" : "-Inf");
		return;
	}
	int prec = 1;
	for (; prec < 17; prec++) {
		snprintf(out, cap, "%.*g", prec, v);
		if (strtod(out, NULL) == v)
			break;
	}
	/* Go writes 10 and 8192, not 1e+01 and 8.192e+03: exponents below 6
	 * stay in plain notation. */
	int exp10 = v != 0 ? (int)floor(log10(fabs(v))) : 0;
	if (exp10 >= prec && exp10 < 6)
		prec = exp10 + 1;
	snprintf(out, cap, "%.*g", prec, v);
}

size_t prometheus__label_name(const char *key, char *out, size_t cap)
{
	size_t o = 0;
	if (!cap)
		return 0;
	if (key[0] >= '0' && key[0] <= '9')
		o = (size_t)snprintf(out, cap, "key_") < cap ? 4 : 0;
	for (const char *k = key; *k && o + 1 < cap; k++) {
		char c = *k;
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			  (c >= '0' && c <= '9') || c == '_';
		out[o++] = ok ? c : '_';
	}
	out[o] = '\0';
	return o;
}

/* The text being rendered: a growable buffer instead of a FILE, so that a
 * scrape is produced a piece at a time (struct scrape) and only that piece
 * is ever held. */
struct outbuf {
	char *b;
	size_t len, cap;
	bool failed; /* out of memory: the output is incomplete */
};

static bool ob_reserve(struct outbuf *o, size_t n)
{
	if (o->failed)
		return false;
	if (o->len + n <= o->cap)
		return true;
	size_t cap = o->cap ? o->cap : 4096;
	while (cap < o->len + n)
		cap *= 2;
	char *b = realloc(o->b, cap);
	if (!b) {
		o->failed = true;
		return false;
	}
	o->b = b;
	o->cap = cap;
	return true;
}

static void ob_write(struct outbuf *o, const char *s, size_t n)
{
	if (!ob_reserve(o, n))
		return;
	memcpy(o->b + o->len, s, n);
	o->len += n;
}

static void ob_puts(struct outbuf *o, const char *s)
{
	ob_write(o, s, strlen(s));
}

static void ob_putc(struct outbuf *o, char c)
{
	ob_write(o, &c, 1);
}

__attribute__((format(printf, 2, 3))) static void ob_printf(struct outbuf *o, const char *fmt,
							    ...)
{
	va_list ap;
	if (!ob_reserve(o, 256))
		return;
	va_start(ap, fmt);
	int n = vsnprintf(o->b + o->len, o->cap - o->len, fmt, ap);
	va_end(ap);
	if (n < 0) {
		o->failed = true;
		return;
	}
	if ((size_t)n >= o->cap - o->len) {
		if (!ob_reserve(o, (size_t)n + 1))
			return;
		va_start(ap, fmt);
		vsnprintf(o->b + o->len, o->cap - o->len, fmt, ap);
		va_end(ap);
	}
	o->len += (size_t)n;
}

static void ob_u64(struct outbuf *o, uint64_t v)
{
	char tmp[24];
	int i = sizeof(tmp);
	do {
		tmp[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	ob_write(o, tmp + i, sizeof(tmp) - (size_t)i);
}

/* A label value: escaped per the text format, invalid UTF-8 replaced. */
static void write_value(struct outbuf *out, const char *s, size_t len)
{
	size_t i = 0;
	while (i < len) {
		char c = s[i];
		if (c == '\\' || c == '"') {
			ob_putc(out, '\\');
			ob_putc(out, c);
			i++;
		} else if (c == '\n') {
			ob_puts(out, "\\n");
			i++;
		} else {
			size_t n = utf8__char_len(s + i, len - i);
			if (n) {
				ob_write(out, s + i, n);
				i += n;
			} else {
				ob_puts(out, "\xEF\xBF\xBD"); /* U+FFFD */
				i++;
			}
		}
	}
}

static void write_label(struct outbuf *out, bool *first, const char *name, const char *value,
			size_t len)
{
	ob_puts(out, *first ? "{" : ",");
	*first = false;
	ob_puts(out, name);
	ob_puts(out, "=\"");
	write_value(out, value, len);
	ob_putc(out, '"');
}

static void write_attr(struct outbuf *out, bool *first, const struct attr *a)
{
	char name[256];
	prometheus__label_name(a->key, name, sizeof(name));
	if (a->type == ATTR_INT) {
		char num[24];
		int n = snprintf(num, sizeof(num), "%lld", (long long)a->num);
		write_label(out, first, name, num, (size_t)n);
	} else {
		write_label(out, first, name, a->str, a->len);
	}
}

static void write_service_labels(struct outbuf *out, bool *first, const struct service *s)
{
	write_label(out, first, "service_name", s->name, strlen(s->name));
	write_label(out, first, "service_namespace", s->namespace_, strlen(s->namespace_));
}

/* One scrape in progress. The exposition is cut into items (a target_info
 * line, a histogram point with all its lines, the self-metrics) rendered a
 * few at a time into `out`; the endpoint sends them before rendering more,
 * so memory is bounded by one chunk, not by the number of series. Between
 * two pieces the event loop runs and the registry changes: the cursors are
 * creation numbers (struct metrics_cursor), so a scrape never shows a series
 * twice nor touches a freed one, and stays a valid exposition. */
enum scrape_phase { SCRAPE_TARGET_INFO = 0, SCRAPE_HISTOGRAMS, SCRAPE_SELF, SCRAPE_DONE };

struct scrape {
	const struct metrics *m;
	const struct rastro_config *cfg;
	bool has_self;
	struct self_stats self;
	enum scrape_phase phase;
	uint64_t svc_cursor;	/* SCRAPE_TARGET_INFO */
	int metric;		/* SCRAPE_HISTOGRAMS */
	struct metrics_cursor points;
	bool header_done;	/* of the current family */
	size_t want;		/* render until this much is pending */
	struct outbuf out;	/* pending text */
	struct outbuf labels;	/* scratch: one point's label set */
};

/* Rendered ahead of what the HTTP connection asks for, so that the registry
 * is walked once per chunk rather than once per point. */
#define SCRAPE_CHUNK (32 * 1024)

static void target_info(struct scrape *sc, const struct service *s)
{
	struct outbuf *out = &sc->out;
	struct attr attrs[RESOURCE_MAX_ATTRS];
	char names[RESOURCE_MAX_ATTRS][256];
	int n = resource__attributes(s, sc->cfg, attrs);
	if (!sc->header_done) {
		ob_puts(out, "# HELP target_info Target metadata\n# TYPE target_info gauge\n");
		sc->header_done = true;
	}
	ob_puts(out, "target_info");
	bool first = true;
	int written = 0;
	for (int i = 0; i < n; i++) {
		char *name = names[written];
		prometheus__label_name(attrs[i].key, name, sizeof(names[0]));
		/* Two keys may map to one label name (a.b, a_b): the first wins. */
		bool dup = false;
		for (int j = 0; j < written && !dup; j++)
			dup = !strcmp(names[j], name);
		if (dup)
			continue;
		written++;
		if (attrs[i].type == ATTR_INT) {
			char num[24];
			int len = snprintf(num, sizeof(num), "%lld", (long long)attrs[i].num);
			write_label(out, &first, name, num, (size_t)len);
		} else {
			write_label(out, &first, name, attrs[i].str, attrs[i].len);
		}
	}
	ob_puts(out, first ? " 1\n" : "} 1\n");
}

/* The label set of a point without its closing brace, rendered once and
 * repeated on each of its lines. */
static void series_labels(struct outbuf *out, const struct metric_point *p)
{
	bool first = true;
	write_service_labels(out, &first, p->service);
	for (int i = 0; i < p->nattrs; i++)
		write_attr(out, &first, &p->attrs[i]);
}

/* "name_suffix{labels" of one line of a histogram series; the caller closes
 * the braces and writes the value. */
static void series_line(struct outbuf *out, const char *name, size_t name_len,
			const char *suffix, const struct outbuf *labels)
{
	ob_write(out, name, name_len);
	ob_puts(out, suffix);
	ob_write(out, labels->b, labels->len);
}

static bool histogram_point(void *ctx, const struct metric_point *p)
{
	struct scrape *sc = ctx;
	struct outbuf *out = &sc->out;
	const struct metric_desc *desc = metrics__desc(p->metric);
	const char *name = desc->prom_name;
	size_t name_len = strlen(name);
	char num[32];
	if (!sc->header_done) {
		ob_printf(out, "# HELP %s %s\n# TYPE %s histogram\n", name, desc->description,
			  name);
		sc->header_done = true;
	}
	sc->labels.len = 0;
	series_labels(&sc->labels, p);
	if (sc->labels.failed) {
		out->failed = true;
		return false;
	}
	uint64_t cumulative = 0;
	for (int i = 0; i <= p->nbounds; i++) {
		cumulative += p->buckets[i];
		if (i < p->nbounds)
			format_double(p->bounds[i], num, sizeof(num));
		else
			snprintf(num, sizeof(num), "+Inf");
		series_line(out, name, name_len, "_bucket", &sc->labels);
		ob_puts(out, ",le=\"");
		ob_puts(out, num);
		ob_puts(out, "\"} ");
		ob_u64(out, cumulative);
		ob_putc(out, '\n');
	}
	format_double(p->sum, num, sizeof(num));
	series_line(out, name, name_len, "_sum", &sc->labels);
	ob_puts(out, "} ");
	ob_puts(out, num);
	ob_putc(out, '\n');
	series_line(out, name, name_len, "_count", &sc->labels);
	ob_puts(out, "} ");
	ob_u64(out, p->count);
	ob_putc(out, '\n');
	return !out->failed && out->len < sc->want;
}

static void self_family(void *ctx, const struct self_family *fam)
{
	struct outbuf *out = ctx;
	const char *suffix = fam->counter ? "_total" : "";
	ob_printf(out, "# HELP %s%s %s\n# TYPE %s%s %s\n", fam->name, suffix, fam->help,
		  fam->name, suffix, fam->counter ? "counter" : "gauge");
	for (int i = 0; i < fam->nsamples; i++) {
		const struct self_sample *s = &fam->samples[i];
		ob_puts(out, fam->name);
		ob_puts(out, suffix);
		bool first = true;
		for (int l = 0; l < s->nlabels; l++)
			write_label(out, &first, s->label_key[l], s->label_value[l],
				    strlen(s->label_value[l]));
		ob_puts(out, first ? " " : "} ");
		ob_u64(out, s->value);
		ob_putc(out, '\n');
	}
}

static void scrape_init(struct scrape *sc, const struct metrics *m,
			const struct rastro_config *cfg, const struct self_stats *st)
{
	memset(sc, 0, sizeof(*sc));
	sc->m = m;
	sc->cfg = cfg;
	if (st) {
		sc->has_self = true;
		sc->self = *st;
	}
}

static void scrape_release(struct scrape *sc)
{
	free(sc->out.b);
	free(sc->labels.b);
}

/* Renders the next items until `want` bytes are pending or the exposition
 * is complete. false when out of memory. */
static bool scrape_fill(struct scrape *sc, size_t want)
{
	sc->want = want;
	while (!sc->out.failed && sc->out.len < want && sc->phase != SCRAPE_DONE) {
		switch (sc->phase) {
		case SCRAPE_TARGET_INFO: {
			const struct service *s = metrics__next_service(sc->m, &sc->svc_cursor);
			if (s) {
				target_info(sc, s);
			} else {
				sc->phase = SCRAPE_HISTOGRAMS;
				sc->header_done = false;
			}
			break;
		}
		case SCRAPE_HISTOGRAMS:
			if (sc->metric >= METRIC__COUNT) {
				sc->phase = SCRAPE_SELF;
			} else if (metrics__points_from(sc->m, sc->metric, &sc->points,
							histogram_point, sc)) {
				sc->metric++;
				sc->points = (struct metrics_cursor){0};
				sc->header_done = false;
			}
			break;
		case SCRAPE_SELF:
			self_metrics__collect(sc->has_self ? &sc->self : NULL, sc->m, self_family,
					      &sc->out);
			sc->phase = SCRAPE_DONE;
			break;
		case SCRAPE_DONE:
			break;
		}
	}
	return !sc->out.failed;
}

int prometheus__render(FILE *out, const struct metrics *m, const struct rastro_config *cfg,
		       const struct self_stats *st)
{
	struct scrape *sc = malloc(sizeof(*sc));
	if (!sc)
		return -1;
	scrape_init(sc, m, cfg, st);
	int err = 0;
	do {
		sc->out.len = 0;
		if (!scrape_fill(sc, SCRAPE_CHUNK)) {
			err = -1;
			break;
		}
		if (sc->out.len && fwrite(sc->out.b, 1, sc->out.len, out) != sc->out.len)
			err = -1;
	} while (!err && sc->phase != SCRAPE_DONE);
	scrape_release(sc);
	free(sc);
	return err || ferror(out) ? -1 : 0;
}

/* The HTTP server sends the body a chunk at a time: the next one is
 * rendered once the previous one is out. */
static int scrape_next(void *ctx, const char **data, size_t *len)
{
	struct scrape *sc = ctx;
	sc->out.len = 0;
	if (!scrape_fill(sc, SCRAPE_CHUNK))
		return -1;
	*data = sc->out.b;
	*len = sc->out.len; /* 0 once the exposition is complete */
	return 0;
}

static void scrape_free(void *ctx)
{
	struct scrape *sc = ctx;
	scrape_release(sc);
	free(sc);
}

/* ---- the HTTP server */

/* Connections served at once, and the idle timeout of each: what
 * libmicrohttpd was given before. */
#define PROMETHEUS_MAX_CONNS 64
#define PROMETHEUS_IDLE_TIMEOUT_MS 30000

struct prometheus {
	const struct rastro_config *cfg;
	const struct metrics *m;
	prometheus_self_fn self_fn;
	void *self_ctx;
	struct http_server *server;
	uint16_t port;
};

static void reply(struct http_response *resp, int status, const char *body)
{
	*resp = (struct http_response){.status = status,
				       .content_type = "text/plain; charset=utf-8",
				       .allow = status == 405 ? "GET, HEAD" : NULL,
				       .body = body,
				       .body_len = strlen(body)};
}

static bool method_is(const struct http_request *req, const char *method)
{
	return req->method_len == strlen(method) && !memcmp(req->method, method, req->method_len);
}

static void on_http(void *ctx, const struct http_request *req, struct http_response *resp)
{
	struct prometheus *p = ctx;
	if (!method_is(req, "GET") && !method_is(req, "HEAD")) {
		reply(resp, 405, "method not allowed\n");
		return;
	}
	/* The path without the query string, as libmicrohttpd compared it. */
	if (req->path_len != strlen(p->cfg->prom_path) ||
	    memcmp(req->path, p->cfg->prom_path, req->path_len)) {
		reply(resp, 404, "not found\n");
		return;
	}
	struct self_stats st, *stp = NULL;
	if (p->self_fn) {
		p->self_fn(p->self_ctx, &st);
		stp = &st;
	}
	/* Streamed: rendered as it is sent (chunked transfer encoding, or the
	 * connection's end for HTTP/1.0), never held whole. */
	struct scrape *sc = malloc(sizeof(*sc));
	if (!sc) {
		reply(resp, 500, "out of memory\n");
		return;
	}
	scrape_init(sc, p->m, p->cfg, stp);
	*resp = (struct http_response){
	    .status = 200,
	    .content_type = PROMETHEUS_CONTENT_TYPE,
	    .stream = {.next = scrape_next, .release = scrape_free, .ctx = sc},
	};
}

/* Binds the listening socket ourselves to tell "port in use" apart from the
 * other failures. Returns the fd or -errno. */
static int listen_on(const char *address, uint16_t port, bool *v6)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC,
				 .ai_socktype = SOCK_STREAM,
				 .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
	struct addrinfo *res;
	char service[8];
	snprintf(service, sizeof(service), "%u", port);
	if (getaddrinfo(address && *address ? address : NULL, service, &hints, &res))
		return -EADDRNOTAVAIL;
	int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		int err = -errno;
		freeaddrinfo(res);
		return err;
	}
	int one = 1, zero = 0;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	*v6 = res->ai_family == AF_INET6;
	if (*v6) /* "::" also serves IPv4 */
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
	int err = 0;
	if (bind(fd, res->ai_addr, res->ai_addrlen) || listen(fd, 64))
		err = -errno;
	freeaddrinfo(res);
	if (err) {
		close(fd);
		return err;
	}
	return fd;
}

static uint16_t bound_port(int fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	if (getsockname(fd, (struct sockaddr *)&ss, &len))
		return 0;
	if (ss.ss_family == AF_INET6)
		return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

int prometheus__start(struct prometheus **out, struct loop *loop, const struct rastro_config *cfg,
		      bool port_explicit, const struct metrics *m, prometheus_self_fn self_fn,
		      void *self_ctx)
{
	*out = NULL;
	if (!cfg->prom_port)
		return 0;
	bool v6 = false;
	int fd = listen_on(cfg->prom_address, (uint16_t)cfg->prom_port, &v6);
	if (fd < 0) {
		const char *why = fd == -EADDRINUSE ? "the port is already in use" : strerror(-fd);
		if (port_explicit)
			return error("prometheus_export.port: cannot listen on %s:%u: %s",
				     cfg->prom_address, cfg->prom_port, why);
		log_warn("Prometheus endpoint off: cannot listen on %s:%u (the default "
			 "prometheus_export.port): %s; set prometheus_export.port or "
			 "RASTRO_PROMETHEUS_PORT to another port, or 0 to silence this",
			 cfg->prom_address, cfg->prom_port, why);
		return 0;
	}
	struct prometheus *p = calloc(1, sizeof(*p));
	if (!p) {
		close(fd);
		return error("out of memory");
	}
	p->cfg = cfg;
	p->m = m;
	p->self_fn = self_fn;
	p->self_ctx = self_ctx;
	p->port = bound_port(fd);
	struct http_server_opts opts = {.max_conns = PROMETHEUS_MAX_CONNS,
					.idle_timeout_ms = PROMETHEUS_IDLE_TIMEOUT_MS,
					.log_name = "prometheus endpoint"};
	p->server = http_server__start(loop, fd, &opts, on_http, p); /* owns fd */
	if (!p->server) {
		free(p);
		return error("cannot start the Prometheus endpoint on %s:%u", cfg->prom_address,
			     cfg->prom_port);
	}
	log_info("Prometheus endpoint on http://%s%s%s:%u%s", v6 ? "[" : "", cfg->prom_address,
		 v6 ? "]" : "", p->port, cfg->prom_path);
	*out = p;
	return 0;
}

void prometheus__stop(struct prometheus *p)
{
	if (!p)
		return;
	http_server__stop(p->server); /* closes the listening socket */
	free(p);
}

uint16_t prometheus__port(const struct prometheus *p)
{
	return p ? p->port : 0;
}
