#include "export/printer.h"

#include <arpa/inet.h>
#include <string.h>
#include <time.h>

#include "discover/discover.h"
#include "semconv.h"

static void hex(char *out, const uint8_t *b, size_t n)
{
	static const char digits[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[b[i] >> 4];
		out[2 * i + 1] = digits[b[i] & 15];
	}
	out[2 * n] = '\0';
}

static void json_string(FILE *out, const char *s, size_t len)
{
	fputc('"', out);
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '"' || c == '\\')
			fprintf(out, "\\%c", c);
		else if (c < 0x20 || c == 0x7f)
			fprintf(out, "\\u%04x", c);
		else
			fputc(c, out);
	}
	fputc('"', out);
}

struct json_ctx {
	FILE *out;
};

static void json_attr(void *ctx, const struct attr *a)
{
	struct json_ctx *j = ctx;
	fprintf(j->out, ",\"%s\":", a->key);
	if (a->type == ATTR_INT)
		fprintf(j->out, "%lld", (long long)a->num);
	else
		json_string(j->out, a->str, a->len);
}

static const char *kind_name(const struct request *r)
{
	return semconv__is_server(r) ? "SERVER" : "CLIENT";
}

static void print_json(FILE *out, const struct request *r, const struct rastro_config *cfg,
		       int64_t offset)
{
	const struct service *s = r->service;
	char name[256], tid[33], sid[17], pid[17];
	semconv__span_name(r, name, sizeof(name));
	hex(tid, r->trace_id, 16);
	hex(sid, r->span_id, 8);
	hex(pid, r->parent_span_id, 8);
	fprintf(out, "{\"start_time_unix_nano\":%lld,\"end_time_unix_nano\":%lld,\"duration_ns\":%llu",
		(long long)((int64_t)r->start_ns + offset), (long long)((int64_t)r->end_ns + offset),
		(unsigned long long)(r->end_ns - r->start_ns));
	fprintf(out, ",\"name\":");
	json_string(out, name, strlen(name));
	fprintf(out, ",\"kind\":\"%s\",\"trace_id\":\"%s\",\"span_id\":\"%s\",\"parent_span_id\":\"%s\",\"sampled\":%s",
		kind_name(r), tid, sid, r->has_parent ? pid : "", r->sampled ? "true" : "false");
	fprintf(out, ",\"service.name\":");
	json_string(out, s ? s->name : "", s ? strlen(s->name) : 0);
	fprintf(out, ",\"service.namespace\":");
	json_string(out, s ? s->namespace_ : "", s ? strlen(s->namespace_) : 0);
	fprintf(out, ",\"service.instance.id\":");
	json_string(out, s ? s->instance_id : "", s ? strlen(s->instance_id) : 0);
	fprintf(out, ",\"process.pid\":%u,\"thread.id\":%u", r->pid, r->tid);
	struct json_ctx j = {out};
	semconv__span_attributes(r, cfg, json_attr, &j);
	char ebuf[16];
	size_t mlen;
	const char *message = semconv__status_message(r, ebuf, sizeof(ebuf), &mlen);
	if (message) {
		fprintf(out, ",\"status.code\":\"ERROR\",\"status.message\":");
		json_string(out, message, mlen);
	}
	fprintf(out, "}\n");
}

static void print_text(FILE *out, const struct request *r, const struct rastro_config *cfg,
		       int64_t offset)
{
	const struct service *s = r->service;
	char local[INET6_ADDRSTRLEN], remote[INET6_ADDRSTRLEN], stamp[32], tid[33], sid[17], pid[17];
	int64_t start = (int64_t)r->start_ns + offset;
	time_t secs = (time_t)(start / 1000000000);
	struct tm tm;
	gmtime_r(&secs, &tm);
	strftime(stamp, sizeof(stamp), "%Y-%m-%d %H:%M:%S", &tm);
	semconv__format_addr(r->tuple.local_addr, local, sizeof(local));
	semconv__format_addr(r->tuple.remote_addr, remote, sizeof(remote));
	hex(tid, r->trace_id, 16);
	hex(sid, r->span_id, 8);
	hex(pid, r->parent_span_id, 8);
	double ms = (double)(r->end_ns - r->start_ns) / 1e6;
	bool server = semconv__is_server(r);

	fprintf(out, "%s.%06lld (%.3fms) %s ", stamp, (long long)(start % 1000000000) / 1000, ms,
		kind_name(r));
	if (r->kind == REQ_DB_CLIENT) {
		char name[256];
		semconv__span_name(r, name, sizeof(name));
		fprintf(out, "DB %s", name);
	} else {
		char status[8] = "-";
		if (r->status)
			snprintf(status, sizeof(status), "%d", r->status);
		char q[1024] = "";
		if (request__has(r->query)) {
			if (cfg->keep_query_values)
				snprintf(q, sizeof(q), "%s", request__str(r, r->query));
			else
				semconv__scrub_query(request__str(r, r->query), r->query.len, q, sizeof(q));
		}
		fprintf(out, "HTTP/%s %s %s %s%s%s", r->http_version == 10 ? "1.0" : r->http_version == 20 ? "2" : "1.1",
			status, request__str(r, r->method), request__str(r, r->path), q[0] ? "?" : "", q);
		if (request__has(r->route))
			fprintf(out, " route=%s", request__str(r, r->route));
		fprintf(out, " req=%lluB resp=%lluB", (unsigned long long)r->request_body_bytes,
			(unsigned long long)r->response_body_bytes);
	}
	char ebuf[16];
	const char *err = semconv__error_type(r, ebuf, sizeof(ebuf));
	if (err)
		fprintf(out, " error=%s", err);
	if (err && request__has(r->error_message)) {
		/* The server's words (attributes.keep_db_literals), on this line. */
		fputs(" \"", out);
		const char *m = request__str(r, r->error_message);
		for (size_t i = 0; i < r->error_message.len; i++)
			fputc((unsigned char)m[i] < 0x20 ? ' ' : m[i], out);
		fputc('"', out);
	}
	if (server)
		fprintf(out, " [%s:%u]->[%s:%u]", remote, r->tuple.remote_port, local, r->tuple.local_port);
	else
		fprintf(out, " [%s:%u]->[%s:%u]", local, r->tuple.local_port, remote, r->tuple.remote_port);
	fprintf(out, " svc=%s%s%s pid=%u trace=%s span=%s parent=%s\n",
		s && s->namespace_[0] ? s->namespace_ : "", s && s->namespace_[0] ? "/" : "",
		s ? s->name : "?", r->pid, tid, sid, r->has_parent ? pid : "-");
}

void printer__print(FILE *out, const struct request *r, const struct rastro_config *cfg,
		    int64_t unix_offset_ns)
{
	if (cfg->trace_printer == PRINTER_JSON)
		print_json(out, r, cfg, unix_offset_ns);
	else if (cfg->trace_printer == PRINTER_TEXT)
		print_text(out, r, cfg, unix_offset_ns);
}
