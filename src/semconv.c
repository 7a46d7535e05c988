#include "semconv.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "discover/discover.h"

static const uint8_t v4_mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

/* "a.b.c.d" into out (at least 16 bytes); returns its length. inet_ntop
 * goes through sprintf: this runs for every span, twice. */
static size_t format_v4(const uint8_t a[4], char *out)
{
	char *p = out;
	for (int i = 0; i < 4; i++) {
		unsigned v = a[i];
		if (v >= 100) {
			*p++ = (char)('0' + v / 100);
			v %= 100;
			*p++ = (char)('0' + v / 10);
		} else if (v >= 10) {
			*p++ = (char)('0' + v / 10);
		}
		*p++ = (char)('0' + v % 10);
		*p++ = '.';
	}
	p[-1] = '\0';
	return (size_t)(p - 1 - out);
}

void semconv__format_addr(const uint8_t addr[16], char *out, size_t len)
{
	if (!memcmp(addr, v4_mapped, 12) && len >= INET_ADDRSTRLEN)
		format_v4(addr + 12, out);
	else if (!memcmp(addr, v4_mapped, 12))
		inet_ntop(AF_INET, addr + 12, out, (socklen_t)len);
	else
		inet_ntop(AF_INET6, addr, out, (socklen_t)len);
}

size_t semconv__scrub_query(const char *q, size_t len, char *out, size_t cap)
{
	size_t o = 0;
	bool in_value = false;
	for (size_t i = 0; i < len && o + 2 < cap; i++) {
		char c = q[i];
		if (c == '&' || c == ';') {
			in_value = false;
			out[o++] = c;
		} else if (c == '=' && !in_value) {
			in_value = true;
			out[o++] = '=';
			out[o++] = '?';
		} else if (!in_value) {
			out[o++] = c;
		}
	}
	out[o] = '\0';
	return o;
}

bool semconv__is_server(const struct request *r)
{
	return r->kind == REQ_HTTP_SERVER || r->kind == REQ_GRPC_SERVER;
}

const char *semconv__method(const struct request *r)
{
	return r->method_known ? request__str(r, r->method) : "_OTHER";
}

int semconv__span_kind(const struct request *r)
{
	return semconv__is_server(r) ? 2 : 3;
}

/* gRPC status codes by number (grpc/doc/statuscodes.md). */
static const char *const grpc_status_names[] = {
	"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
	"ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
	"ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
	"UNAUTHENTICATED",
};

const char *semconv__grpc_status_name(int code, char *buf, size_t len)
{
	if (code >= 0 && (size_t)code < sizeof(grpc_status_names) / sizeof(grpc_status_names[0]))
		return grpc_status_names[code];
	snprintf(buf, len, "%d", code);
	return buf;
}

/* RPC conventions, gRPC: on the server only the codes that mean a server
 * fault are errors; on the client every code but OK. */
static bool grpc_status_is_error(const struct request *r)
{
	int c = r->grpc_status;
	if (r->kind == REQ_GRPC_CLIENT)
		return c > 0;
	return c == 2 || c == 4 || c == 12 || c == 13 || c == 14 || c == 15;
}

const char *semconv__error_type(const struct request *r, char *buf, size_t len)
{
	if (request__has(r->error_type))
		return request__str(r, r->error_type);
	switch (r->kind) {
	case REQ_HTTP_SERVER:
		if (r->status >= 500) {
			snprintf(buf, len, "%d", r->status);
			return buf;
		}
		return NULL;
	case REQ_HTTP_CLIENT:
		if (r->status >= 400) {
			snprintf(buf, len, "%d", r->status);
			return buf;
		}
		return NULL;
	case REQ_GRPC_SERVER:
	case REQ_GRPC_CLIENT:
		if (grpc_status_is_error(r))
			return semconv__grpc_status_name(r->grpc_status, buf, len);
		return NULL;
	case REQ_DB_CLIENT:
		if (request__has(r->db_status))
			return request__str(r, r->db_status);
		return NULL;
	default:
		return NULL;
	}
}

const char *semconv__status_message(const struct request *r, char *buf, size_t len, size_t *n)
{
	const char *type = semconv__error_type(r, buf, len);
	if (type && request__has(r->error_message)) {
		*n = r->error_message.len;
		return request__str(r, r->error_message);
	}
	*n = type ? strlen(type) : 0;
	return type;
}

bool semconv__is_error(const struct request *r)
{
	char buf[16];
	return semconv__error_type(r, buf, sizeof(buf)) != NULL;
}

static const char *db_system_name(enum db_system s);

/* Appends n bytes of s at out[*o], truncating at cap - 1 (room for the NUL). */
static void append(char *out, size_t cap, size_t *o, const char *s, size_t n)
{
	if (*o + n >= cap)
		n = cap - 1 - *o;
	memcpy(out + *o, s, n);
	*o += n;
}

/* Built with memcpy: snprintf's format parsing cost more than the rest of
 * a span's encoding. */
size_t semconv__span_name(const struct request *r, char *out, size_t len)
{
	const char *a = NULL, *b = NULL;
	size_t alen = 0, blen = 0, o = 0;
	if (!len)
		return 0;
	switch (r->kind) {
	case REQ_HTTP_SERVER:
	case REQ_HTTP_CLIENT:
		if (request__has(r->route) && r->kind == REQ_HTTP_SERVER) {
			a = semconv__method(r);
			alen = r->method_known ? r->method.len : strlen(a);
			b = request__str(r, r->route), blen = r->route.len;
		} else if (r->method_known) {
			a = request__str(r, r->method), alen = r->method.len;
		} else {
			a = "HTTP", alen = 4;
		}
		break;
	case REQ_GRPC_SERVER:
	case REQ_GRPC_CLIENT:
		/* {rpc.method}, or {rpc.system.name} when the method is not known */
		if (request__has(r->rpc_method))
			a = request__str(r, r->rpc_method), alen = r->rpc_method.len;
		else
			a = "grpc", alen = 4;
		break;
	case REQ_DB_CLIENT:
		if (request__has(r->db_operation)) {
			a = request__str(r, r->db_operation), alen = r->db_operation.len;
			if (request__has(r->db_collection))
				b = request__str(r, r->db_collection), blen = r->db_collection.len;
		} else { /* the conventions' fallback: the system's name */
			a = db_system_name(r->db_system), alen = strlen(a);
		}
		break;
	default:
		a = "request", alen = 7;
	}
	append(out, len, &o, a, alen);
	if (b) {
		append(out, len, &o, " ", 1);
		append(out, len, &o, b, blen);
	}
	out[o] = '\0';
	return o;
}

/* Keys are string literals: their length is known at compile time (the ""
 * concatenation refuses anything else), so encoders need no strlen. */
#define KEY(k) "" k "", sizeof("" k "") - 1

static void str_attr_k(attr_fn fn, void *ctx, const char *key, size_t klen, const char *s,
		       size_t len)
{
	struct attr a = {.key = key, .klen = (uint16_t)klen, .type = ATTR_STRING, .str = s,
			 .len = len};
	fn(ctx, &a);
}

static void rstr_attr_k(attr_fn fn, void *ctx, const char *key, size_t klen,
			const struct request *r, struct rstr s)
{
	if (request__has(s))
		str_attr_k(fn, ctx, key, klen, request__str(r, s), s.len);
}

static void int_attr_k(attr_fn fn, void *ctx, const char *key, size_t klen, int64_t v)
{
	struct attr a = {.key = key, .klen = (uint16_t)klen, .type = ATTR_INT, .num = v};
	fn(ctx, &a);
}

#define str_attr(fn, ctx, key, s, len) str_attr_k(fn, ctx, KEY(key), s, len)
#define rstr_attr(fn, ctx, key, r, s) rstr_attr_k(fn, ctx, KEY(key), r, s)
#define int_attr(fn, ctx, key, v) int_attr_k(fn, ctx, KEY(key), v)

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
	case DB_OTHER_SQL:
		return "other_sql";
	default:
		return "other_sql";
	}
}

/* Host header without its port. */
static size_t host_name(const struct request *r, const char **out)
{
	const char *h = request__str(r, r->host);
	size_t n = r->host.len;
	if (n && h[0] == '[') { /* [v6]:port */
		const char *e = memchr(h, ']', n);
		*out = h + 1;
		return e ? (size_t)(e - h - 1) : n - 1;
	}
	const char *colon = memchr(h, ':', n);
	*out = h;
	return colon ? (size_t)(colon - h) : n;
}

/* rastro.unresolved: the attributes left out because the header blocks that
 * carried them could not be decoded (HTTP/2 seen from the middle of a
 * connection), so that "absent" is not read as "not sent". */
static void unresolved_attribute(const struct request *r, attr_fn fn, void *ctx)
{
	bool grpc = r->kind == REQ_GRPC_SERVER || r->kind == REQ_GRPC_CLIENT;
	const char *names[5];
	size_t n = 0;
	if (!r->unresolved)
		return;
	if ((r->unresolved & REQ_UNRESOLVED_METHOD) && !grpc)
		names[n++] = "http.request.method";
	if (r->unresolved & REQ_UNRESOLVED_PATH)
		names[n++] = grpc ? "rpc.method" : semconv__is_server(r) ? "url.path" : "url.full";
	if ((r->unresolved & REQ_UNRESOLVED_STATUS) && !grpc)
		names[n++] = "http.response.status_code";
	if ((r->unresolved & REQ_UNRESOLVED_RPC_STATUS) && grpc)
		names[n++] = "rpc.response.status_code";
	if ((r->unresolved & REQ_UNRESOLVED_KIND) && !grpc)
		names[n++] = "rpc.system.name";
	char buf[160];
	size_t len = 0;
	for (size_t i = 0; i < n; i++)
		len += (size_t)snprintf(buf + len, sizeof(buf) - len, "%s%s", i ? "," : "", names[i]);
	if (len)
		str_attr(fn, ctx, "rastro.unresolved", buf, len);
}

/* RPC conventions for gRPC: the method names the span, status codes by name. */
static void grpc_attributes(const struct request *r, const char *local, const char *remote,
			    const char *err, attr_fn fn, void *ctx)
{
	char buf[16];
	const char *h;
	size_t hn = host_name(r, &h);
	str_attr(fn, ctx, "rpc.system.name", "grpc", 4);
	rstr_attr(fn, ctx, "rpc.method", r, r->rpc_method);
	if (r->grpc_status >= 0) {
		const char *code = semconv__grpc_status_name(r->grpc_status, buf, sizeof(buf));
		str_attr(fn, ctx, "rpc.response.status_code", code, strlen(code));
	}
	if (semconv__is_server(r)) {
		if (hn)
			str_attr(fn, ctx, "server.address", h, hn);
		else
			str_attr(fn, ctx, "server.address", local, strlen(local));
		int_attr(fn, ctx, "server.port", r->tuple.local_port);
		str_attr(fn, ctx, "client.address", remote, strlen(remote));
		int_attr(fn, ctx, "client.port", r->tuple.remote_port);
	} else {
		if (hn)
			str_attr(fn, ctx, "server.address", h, hn);
		else
			str_attr(fn, ctx, "server.address", remote, strlen(remote));
		int_attr(fn, ctx, "server.port", r->tuple.remote_port);
		str_attr(fn, ctx, "network.peer.address", remote, strlen(remote));
		int_attr(fn, ctx, "network.peer.port", r->tuple.remote_port);
	}
	str_attr(fn, ctx, "network.protocol.name", "http", 4);
	str_attr(fn, ctx, "network.protocol.version", "2", 1);
	if (err)
		str_attr(fn, ctx, "error.type", err, strlen(err));
	unresolved_attribute(r, fn, ctx);
}

void semconv__span_attributes(const struct request *r, const struct rastro_config *cfg,
			      attr_fn fn, void *ctx)
{
	char local[INET6_ADDRSTRLEN] = "", remote[INET6_ADDRSTRLEN], buf[16];
	const char *host;
	bool server = semconv__is_server(r);
	/* The local address is only the fallback server.address of a server
	 * span without a Host (:authority): formatted only then. */
	semconv__format_addr(r->tuple.remote_addr, remote, sizeof(remote));
	if (server && !host_name(r, &host))
		semconv__format_addr(r->tuple.local_addr, local, sizeof(local));
	const char *err = semconv__error_type(r, buf, sizeof(buf));

	if (r->kind == REQ_DB_CLIENT) {
		str_attr(fn, ctx, "db.system.name", db_system_name(r->db_system),
			 strlen(db_system_name(r->db_system)));
		rstr_attr(fn, ctx, "db.operation.name", r, r->db_operation);
		rstr_attr(fn, ctx, "db.collection.name", r, r->db_collection);
		rstr_attr(fn, ctx, "db.namespace", r, r->db_namespace);
		rstr_attr(fn, ctx, "db.query.text", r, r->db_query);
		rstr_attr(fn, ctx, "db.response.status_code", r, r->db_status);
		str_attr(fn, ctx, "server.address", remote, strlen(remote));
		int_attr(fn, ctx, "server.port", r->tuple.remote_port);
		if (err)
			str_attr(fn, ctx, "error.type", err, strlen(err));
		return;
	}

	if (r->kind == REQ_GRPC_SERVER || r->kind == REQ_GRPC_CLIENT) {
		grpc_attributes(r, local, remote, err, fn, ctx);
		return;
	}

	/* HTTP */
	const char *method = semconv__method(r);
	str_attr(fn, ctx, "http.request.method", method, strlen(method));
	if (!r->method_known && request__has(r->method))
		rstr_attr(fn, ctx, "http.request.method_original", r, r->method);
	if (r->status)
		int_attr(fn, ctx, "http.response.status_code", r->status);
	if (server) {
		rstr_attr(fn, ctx, "url.path", r, r->path);
		if (request__has(r->query)) {
			if (cfg->keep_query_values) {
				rstr_attr(fn, ctx, "url.query", r, r->query);
			} else {
				char q[1024];
				size_t n = semconv__scrub_query(request__str(r, r->query), r->query.len, q,
								sizeof(q));
				str_attr(fn, ctx, "url.query", q, n);
			}
		}
		str_attr(fn, ctx, "url.scheme", "http", 4);
		rstr_attr(fn, ctx, "http.route", r, r->route);
		str_attr(fn, ctx, "client.address", remote, strlen(remote));
		int_attr(fn, ctx, "client.port", r->tuple.remote_port);
		const char *h;
		size_t hn = host_name(r, &h);
		if (hn)
			str_attr(fn, ctx, "server.address", h, hn);
		else
			str_attr(fn, ctx, "server.address", local, strlen(local));
		int_attr(fn, ctx, "server.port", r->tuple.local_port);
	} else {
		/* url.full: scheme://host[:port]/path[?scrubbed query] */
		char url[1024], q[768];
		const char *h;
		size_t hn = host_name(r, &h);
		size_t qn = 0;
		if (request__has(r->query))
			qn = cfg->keep_query_values
				     ? (size_t)snprintf(q, sizeof(q), "%s", request__str(r, r->query))
				     : semconv__scrub_query(request__str(r, r->query), r->query.len, q,
							    sizeof(q));
		int n = snprintf(url, sizeof(url), "http://%.*s:%u%s%s%.*s", hn ? (int)hn : (int)strlen(remote),
				 hn ? h : remote, r->tuple.remote_port,
				 request__has(r->path) ? request__str(r, r->path) : "/", qn ? "?" : "",
				 (int)qn, q);
		if (n > 0 && !(r->unresolved & REQ_UNRESOLVED_PATH))
			str_attr(fn, ctx, "url.full", url, (size_t)n < sizeof(url) ? (size_t)n : sizeof(url) - 1);
		if (hn)
			str_attr(fn, ctx, "server.address", h, hn);
		else
			str_attr(fn, ctx, "server.address", remote, strlen(remote));
		int_attr(fn, ctx, "server.port", r->tuple.remote_port);
		str_attr(fn, ctx, "network.peer.address", remote, strlen(remote));
	}
	const char *ver = r->http_version == 10 ? "1.0" : r->http_version == 20 ? "2" : "1.1";
	str_attr(fn, ctx, "network.protocol.version", ver, strlen(ver));
	rstr_attr(fn, ctx, "user_agent.original", r, r->user_agent);
	if (r->has_request_body_size)
		int_attr(fn, ctx, "http.request.body.size", (int64_t)r->request_body_bytes);
	if (r->has_response_body_size)
		int_attr(fn, ctx, "http.response.body.size", (int64_t)r->response_body_bytes);
	if (err)
		str_attr(fn, ctx, "error.type", err, strlen(err));
	unresolved_attribute(r, fn, ctx);
}
