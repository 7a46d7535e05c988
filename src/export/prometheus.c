/*
 * Prometheus endpoint. libmicrohttpd runs without a thread of its own
 * (MHD_USE_EPOLL, external polling): rastro's loop watches MHD's epoll fd and
 * calls MHD_run when it is readable or when MHD's timeout expires. The
 * exposition is rendered at scrape time from the live registry, so a scrape
 * sees the same cumulative values the OTLP export sends.
 */
#include "export/prometheus.h"

#include <errno.h>
#include <math.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/loop.h"
#include "common/utf8.h"
#include "discover/discover.h"
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

/* A label value: escaped per the text format, invalid UTF-8 replaced. */
static void write_value(FILE *out, const char *s, size_t len)
{
	size_t i = 0;
	while (i < len) {
		char c = s[i];
		if (c == '\\' || c == '"') {
			fputc('\\', out);
			fputc(c, out);
			i++;
		} else if (c == '\n') {
			fputs("\\n", out);
			i++;
		} else {
			size_t n = utf8__char_len(s + i, len - i);
			if (n) {
				fwrite(s + i, 1, n, out);
				i += n;
			} else {
				fputs("\xEF\xBF\xBD", out); /* U+FFFD */
				i++;
			}
		}
	}
}

static void write_label(FILE *out, bool *first, const char *name, const char *value, size_t len)
{
	fputs(*first ? "{" : ",", out);
	*first = false;
	fputs(name, out);
	fputs("=\"", out);
	write_value(out, value, len);
	fputc('"', out);
}

static void write_attr(FILE *out, bool *first, const struct attr *a)
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

static void write_service_labels(FILE *out, bool *first, const struct service *s)
{
	write_label(out, first, "service_name", s->name, strlen(s->name));
	write_label(out, first, "service_namespace", s->namespace_, strlen(s->namespace_));
}

struct render {
	FILE *out;
	const struct rastro_config *cfg;
	bool header_done;
};

static void target_info(void *ctx, const struct service *s)
{
	struct render *r = ctx;
	struct attr attrs[RESOURCE_MAX_ATTRS];
	char names[RESOURCE_MAX_ATTRS][256];
	int n = resource__attributes(s, r->cfg, attrs);
	if (!r->header_done) {
		fputs("# HELP target_info Target metadata\n# TYPE target_info gauge\n", r->out);
		r->header_done = true;
	}
	fputs("target_info", r->out);
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
			write_label(r->out, &first, name, num, (size_t)len);
		} else {
			write_label(r->out, &first, name, attrs[i].str, attrs[i].len);
		}
	}
	fputs(first ? " 1\n" : "} 1\n", r->out);
}

struct family_render {
	FILE *out;
	const struct metric_desc *desc;
	bool header_done;
};

static void series_labels(FILE *out, const struct metric_point *p)
{
	bool first = true;
	write_service_labels(out, &first, p->service);
	for (int i = 0; i < p->nattrs; i++)
		write_attr(out, &first, &p->attrs[i]);
}

static void histogram_point(void *ctx, const struct metric_point *p)
{
	struct family_render *f = ctx;
	FILE *out = f->out;
	const char *name = f->desc->prom_name;
	char num[32];
	if (!f->header_done) {
		fprintf(out, "# HELP %s %s\n# TYPE %s histogram\n", name, f->desc->description,
			name);
		f->header_done = true;
	}
	uint64_t cumulative = 0;
	for (int i = 0; i <= p->nbounds; i++) {
		cumulative += p->buckets[i];
		if (i < p->nbounds)
			format_double(p->bounds[i], num, sizeof(num));
		else
			snprintf(num, sizeof(num), "+Inf");
		fprintf(out, "%s_bucket", name);
		series_labels(out, p);
		fprintf(out, ",le=\"%s\"} %llu\n", num, (unsigned long long)cumulative);
	}
	format_double(p->sum, num, sizeof(num));
	fprintf(out, "%s_sum", name);
	series_labels(out, p);
	fprintf(out, "} %s\n", num);
	fprintf(out, "%s_count", name);
	series_labels(out, p);
	fprintf(out, "} %llu\n", (unsigned long long)p->count);
}

static void self_family(void *ctx, const struct self_family *fam)
{
	FILE *out = ctx;
	const char *suffix = fam->counter ? "_total" : "";
	fprintf(out, "# HELP %s%s %s\n# TYPE %s%s %s\n", fam->name, suffix, fam->help, fam->name,
		suffix, fam->counter ? "counter" : "gauge");
	for (int i = 0; i < fam->nsamples; i++) {
		const struct self_sample *s = &fam->samples[i];
		fprintf(out, "%s%s", fam->name, suffix);
		bool first = true;
		for (int l = 0; l < s->nlabels; l++)
			write_label(out, &first, s->label_key[l], s->label_value[l],
				    strlen(s->label_value[l]));
		fprintf(out, "%s %llu\n", first ? "" : "}", (unsigned long long)s->value);
	}
}

int prometheus__render(FILE *out, const struct metrics *m, const struct rastro_config *cfg,
		       const struct self_stats *st)
{
	struct render r = {.out = out, .cfg = cfg};
	metrics__foreach_service(m, target_info, &r);
	for (int i = 0; i < METRIC__COUNT; i++) {
		struct family_render f = {.out = out, .desc = metrics__desc(i)};
		metrics__foreach_point(m, i, NULL, histogram_point, &f);
	}
	self_metrics__collect(st, m, self_family, out);
	return ferror(out) ? -1 : 0;
}

/* ---- the HTTP server */

struct prometheus {
	struct loop *loop;
	const struct rastro_config *cfg;
	const struct metrics *m;
	prometheus_self_fn self_fn;
	void *self_ctx;
	struct MHD_Daemon *daemon;
	int epoll_fd;
	int64_t timer;
	uint16_t port;
};

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned int status, char *body,
			     size_t len, enum MHD_ResponseMemoryMode mode, const char *type)
{
	struct MHD_Response *resp = MHD_create_response_from_buffer(len, body, mode);
	if (!resp) {
		if (mode == MHD_RESPMEM_MUST_FREE)
			free(body);
		return MHD_NO;
	}
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
	if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
	enum MHD_Result ret = MHD_queue_response(conn, status, resp);
	MHD_destroy_response(resp);
	return ret;
}

static enum MHD_Result on_http(void *cls, struct MHD_Connection *conn, const char *url,
			       const char *method, const char *version, const char *upload_data,
			       size_t *upload_data_size, void **req_cls)
{
	struct prometheus *p = cls;
	static const char text[] = "text/plain; charset=utf-8";
	(void)version;
	(void)upload_data;
	(void)upload_data_size;
	(void)req_cls;
	if (strcmp(method, MHD_HTTP_METHOD_GET) && strcmp(method, MHD_HTTP_METHOD_HEAD)) {
		static char msg[] = "method not allowed\n";
		return reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED, msg, sizeof(msg) - 1,
			     MHD_RESPMEM_PERSISTENT, text);
	}
	if (strcmp(url, p->cfg->prom_path)) {
		static char msg[] = "not found\n";
		return reply(conn, MHD_HTTP_NOT_FOUND, msg, sizeof(msg) - 1, MHD_RESPMEM_PERSISTENT,
			     text);
	}
	struct self_stats st, *stp = NULL;
	if (p->self_fn) {
		p->self_fn(p->self_ctx, &st);
		stp = &st;
	}
	char *body = NULL;
	size_t len = 0;
	FILE *out = open_memstream(&body, &len);
	if (!out)
		return MHD_NO;
	int err = prometheus__render(out, p->m, p->cfg, stp);
	if (fclose(out) || err) {
		free(body);
		static char msg[] = "out of memory\n";
		return reply(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, msg, sizeof(msg) - 1,
			     MHD_RESPMEM_PERSISTENT, text);
	}
	return reply(conn, MHD_HTTP_OK, body, len, MHD_RESPMEM_MUST_FREE, PROMETHEUS_CONTENT_TYPE);
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
	(void)cls;
	if (LOG_DEBUG >= log__threshold) {
		char line[512];
		vsnprintf(line, sizeof(line), fmt, ap);
		log_debug("prometheus endpoint: %s", line);
	}
}

static void run(struct prometheus *p);

static void on_timer(void *ctx)
{
	struct prometheus *p = ctx;
	p->timer = 0;
	run(p);
}

static void on_ready(void *ctx, int fd, uint32_t events)
{
	(void)fd;
	(void)events;
	run(ctx);
}

/* Lets MHD work, then wakes it again when it asks to be (connection
 * timeouts, or data it already holds: a zero timeout). */
static void run(struct prometheus *p)
{
	MHD_run(p->daemon);
	MHD_UNSIGNED_LONG_LONG ms;
	if (p->timer) {
		loop__cancel(p->loop, p->timer);
		p->timer = 0;
	}
	if (MHD_get_timeout(p->daemon, &ms) == MHD_YES) {
		int64_t id = loop__after(p->loop, ms, on_timer, p);
		p->timer = id > 0 ? id : 0;
	}
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
	p->loop = loop;
	p->cfg = cfg;
	p->m = m;
	p->self_fn = self_fn;
	p->self_ctx = self_ctx;
	p->port = bound_port(fd);
	p->daemon = MHD_start_daemon(MHD_USE_EPOLL | MHD_USE_ERROR_LOG | (v6 ? MHD_USE_IPv6 : 0), 0,
				     NULL, NULL, on_http, p, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, p,
				     MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_CONNECTION_LIMIT,
				     (unsigned int)64, MHD_OPTION_CONNECTION_TIMEOUT,
				     (unsigned int)30, MHD_OPTION_END);
	if (!p->daemon) {
		close(fd);
		free(p);
		return error("cannot start the Prometheus endpoint (libmicrohttpd) on %s:%u",
			     cfg->prom_address, cfg->prom_port);
	}
	const union MHD_DaemonInfo *info = MHD_get_daemon_info(p->daemon, MHD_DAEMON_INFO_EPOLL_FD);
	p->epoll_fd = info ? info->epoll_fd : -1;
	if (p->epoll_fd < 0 || loop__watch(loop, p->epoll_fd, EPOLLIN, on_ready, p)) {
		MHD_stop_daemon(p->daemon);
		free(p);
		return error("cannot watch the Prometheus endpoint's epoll descriptor");
	}
	run(p);
	log_info("Prometheus endpoint on http://%s%s%s:%u%s", v6 ? "[" : "", cfg->prom_address,
		 v6 ? "]" : "", p->port, cfg->prom_path);
	*out = p;
	return 0;
}

void prometheus__stop(struct prometheus *p)
{
	if (!p)
		return;
	if (p->timer)
		loop__cancel(p->loop, p->timer);
	loop__unwatch(p->loop, p->epoll_fd);
	MHD_stop_daemon(p->daemon); /* closes the listening socket */
	free(p);
}

uint16_t prometheus__port(const struct prometheus *p)
{
	return p ? p->port : 0;
}
