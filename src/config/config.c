/*
 * Configuration. One table (settings[]) names every key, its environment
 * variables, type, default, range and help; parsing, --help and the
 * configuration reference in docs/ are all derived from it.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <yaml.h>

#include "version.h"

enum setting_type {
	T_STRING,
	T_BOOL,
	T_UINT,     /* decimal integer in [min, max] */
	T_DURATION, /* "500ms", "5s", "1m"; a bare number is milliseconds */
	T_BYTES,    /* "4096", "64KiB", "8MiB" */
	T_FLOAT,    /* in [min, max] */
	T_ENUM,     /* one of choices, stored as its index */
	T_LOGLEVEL,
	T_PORTS,    /* "80,443,8000-8999" or a number */
	T_FLOATS,   /* ascending list of numbers */
	T_STRINGS,
	T_KEYVALUES, /* YAML mapping, or "k=v,k2=v2" percent-encoded */
	T_RULES,     /* discovery.instrument */
};

struct setting {
	const char *key;
	const char *alias; /* another accepted YAML key, e.g. Beyla's older name */
	const char *env[4];
	enum setting_type type;
	size_t offset;
	const char *def; /* default as text, parsed like any value; NULL = unset */
	double min, max;
	const char *choices; /* T_ENUM: "a|b|c" */
	const char *help;
	const char *beyla; /* how Beyla spells it, for the reference; NULL = rastro only */
};

#define OFF(field) offsetof(struct rastro_config, field)
#define RULE_OFF(field) offsetof(struct instrument_rule, field)

static const struct setting settings[] = {
	/* general */
	{"log_level", NULL, {"RASTRO_LOG_LEVEL", "BEYLA_LOG_LEVEL"}, T_LOGLEVEL, OFF(log_level), "INFO",
	 0, 0, "DEBUG|INFO|WARN|ERROR", "Log verbosity; libbpf's messages appear at DEBUG.", "log_level"},
	{"trace_printer", NULL, {"RASTRO_TRACE_PRINTER", "BEYLA_TRACE_PRINTER"}, T_ENUM,
	 OFF(trace_printer), NULL, 0, 0, "disabled|text|json",
	 "Print every request to stdout: one human line, or one JSON object per line. Not set: "
	 "text when stdout is a terminal and no OTLP traces endpoint is configured, else disabled "
	 "(the choice and its reason are logged: at INFO when it is text, else at DEBUG).",
	 "trace_printer"},

	/* discovery */
	{"open_port", NULL, {"RASTRO_OPEN_PORT", "BEYLA_OPEN_PORT"}, T_PORTS, OFF(open_port), NULL, 0, 0,
	 NULL, "Instrument processes listening on any of these ports, e.g. 80,443,8000-8999.",
	 "open_port"},
	{"auto_target_exe", NULL, {"RASTRO_AUTO_TARGET_EXE", "BEYLA_AUTO_TARGET_EXE"}, T_STRING,
	 OFF(auto_target_exe), NULL, 0, 0, NULL,
	 "Instrument processes whose executable path matches this glob.", "auto_target_exe"},
	{"service_name", NULL, {"RASTRO_SERVICE_NAME", "OTEL_SERVICE_NAME", "BEYLA_SERVICE_NAME"},
	 T_STRING, OFF(service_name), NULL, 0, 0, NULL,
	 "service.name for instrumented processes whose discovery entry has no name (default: "
	 "the executable's name).",
	 "service_name"},
	{"service_namespace", NULL, {"RASTRO_SERVICE_NAMESPACE", "BEYLA_SERVICE_NAMESPACE"}, T_STRING,
	 OFF(service_namespace), NULL, 0, 0, NULL,
	 "service.namespace for entries without a namespace.", "service_namespace"},
	{"discovery.instrument", "discovery.services", {0}, T_RULES, 0, NULL, 0, 0, NULL,
	 "List of selection entries: open_ports, exe_path (glob), name, namespace. All selectors "
	 "of one entry must match; a process matching several entries takes the first.",
	 "discovery.instrument"},
	{"discovery.poll_interval", NULL, {"RASTRO_DISCOVERY_POLL_INTERVAL"}, T_DURATION,
	 OFF(discovery_poll_ms), "5s", 100, 3600000, NULL,
	 "/proc rescan period, a safety net behind the exec/fork/listen events that discover "
	 "processes within milliseconds: it examines new and exec'd processes, and every process "
	 "once a minute or after a lost event.",
	 "discovery.poll_interval"},

	/* capture */
	{"ebpf.heuristic_sql_detect", "attributes.heuristic_sql_detect",
	 {"RASTRO_HEURISTIC_SQL_DETECT", "BEYLA_HEURISTIC_SQL_DETECT"}, T_BOOL,
	 OFF(heuristic_sql_detect), "false", 0, 0, NULL,
	 "Report TCP requests that start with SQL text (SELECT, INSERT, ...) as database calls "
	 "with db.system.name=other_sql.",
	 "ebpf.heuristic_sql_detect"},
	{"ebpf.hooks", NULL, {"RASTRO_EBPF_HOOKS"}, T_ENUM, OFF(ebpf_hooks), "auto", 0, 0,
	 "auto|socket|syscall",
	 "Kernel hooks that see the data: socket (the sock_send_length and sock_recv_length "
	 "tracepoints, Linux 6.3 and later: only socket I/O runs a program), syscall (sys_exit, any "
	 "kernel with BTF: every syscall of every process runs one), auto (socket where the kernel "
	 "has it). The choice is logged at start-up.",
	 NULL},
	{"ebpf.capture_bytes", NULL, {"RASTRO_CAPTURE_BYTES"}, T_BYTES, OFF(capture_bytes), "4096", 64,
	 4096, NULL, "Bytes of payload copied per socket syscall for protocol parsing.", NULL},
	{"ebpf.ring_buffer_size", NULL, {"RASTRO_RING_BUFFER_SIZE"}, T_BYTES, OFF(ring_buffer_bytes),
	 "8MiB", 65536, 1073741824, NULL,
	 "Kernel-to-agent ring buffer (rounded up to a power of two).", NULL},
	{"ebpf.wakeup_bytes", NULL, {"RASTRO_WAKEUP_BYTES"}, T_BYTES, OFF(wakeup_bytes), "1MiB", 0,
	 1073741824, NULL,
	 "Wake the agent only when this much is queued; otherwise it drains every poll_interval "
	 "(an exec or listen() wakes it at once, at most every 2 ms: discovery).",
	 NULL},
	{"ebpf.poll_interval", NULL, {"RASTRO_POLL_INTERVAL"}, T_DURATION, OFF(poll_ms), "50ms", 1,
	 1000, NULL,
	 "Longest time an event waits in the ring buffer, or held back on its CPU, under load; "
	 "after a drain that finds none, or less than 1/16 of wakeup_bytes (a light load), the "
	 "wait doubles, up to 500ms (or this value when longer), and halves back after one that "
	 "finds four times that.",
	 NULL},
	{"ebpf.max_connections", NULL, {"RASTRO_MAX_CONNECTIONS"}, T_UINT, OFF(max_connections),
	 "65536", 1024, 16777216, NULL,
	 "TCP connections tracked at once in the kernel (rastro_kernel_connections); a "
	 "connection beyond it is still reported, counted as conn_map_full. A quarter of it "
	 "bounds the connections without a known protocol muted in the kernel at once "
	 "(rastro_connections_mute_failed_total past it).",
	 NULL},
	{"ebpf.max_processes", NULL, {"RASTRO_MAX_PROCESSES"}, T_UINT, OFF(max_processes), "8192", 16,
	 1048576, NULL, "Processes instrumented at once.", NULL},
	{"http.max_path_length", NULL, {"RASTRO_MAX_PATH_LENGTH"}, T_UINT, OFF(max_path_length), "512",
	 16, 4096, NULL, "url.path longer than this is truncated (the request is still reported).",
	 NULL},
	{"http.max_pipelined_requests", NULL, {"RASTRO_MAX_PIPELINED_REQUESTS"}, T_UINT,
	 OFF(max_pending_requests), "64", 1, 4096, NULL,
	 "Requests awaiting a response on one connection (pipelining); beyond it, HTTP reports "
	 "the oldest without a response and database protocols stop reporting the extra ones; "
	 "both are counted as pipeline_overflow.",
	 NULL},

	/* routes */
	{"routes.patterns", NULL, {"RASTRO_ROUTES_PATTERNS"}, T_STRINGS, OFF(route_patterns), NULL, 0, 0,
	 NULL, "Route templates such as /users/{id}; the first match is http.route.",
	 "routes.patterns"},
	{"routes.ignored_patterns", NULL, {"RASTRO_ROUTES_IGNORED_PATTERNS"}, T_STRINGS,
	 OFF(route_ignored), NULL, 0, 0, NULL,
	 "Requests whose path matches one of these templates are not reported at all.",
	 "routes.ignored_patterns"},
	{"routes.unmatched", NULL, {"RASTRO_ROUTES_UNMATCHED"}, T_ENUM, OFF(route_unmatched),
	 "heuristic", 0, 0, "heuristic|path|wildcard",
	 "http.route of a path that matches no pattern: heuristic (ids, UUIDs, hex and random "
	 "tokens become *), path (the path as is), wildcard (/**).",
	 "routes.unmatched"},

	/* OTLP metrics */
	{"otel_metrics_export.endpoint", NULL, {"OTEL_EXPORTER_OTLP_ENDPOINT"}, T_STRING,
	 OFF(raw.metrics_endpoint), NULL, 0, 0, NULL,
	 "OTLP/HTTP base URL; v1/metrics is appended. OTEL_EXPORTER_OTLP_METRICS_ENDPOINT, used as "
	 "is, overrides both. Unset: no OTLP metrics.",
	 "otel_metrics_export.endpoint"},
	{"otel_metrics_export.protocol", NULL,
	 {"OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"}, T_ENUM,
	 OFF(otlp_metrics.protocol), "http/protobuf", 0, 0, "http/protobuf|http/json|grpc",
	 "Only http/protobuf is implemented; the others are refused with an error.",
	 "otel_metrics_export.protocol"},
	{"otel_metrics_export.headers", NULL,
	 {"OTEL_EXPORTER_OTLP_METRICS_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS"}, T_KEYVALUES,
	 OFF(otlp_metrics.headers), NULL, 0, 0, NULL, "Extra HTTP headers, e.g. Authorization.",
	 NULL},
	{"otel_metrics_export.compression", NULL,
	 {"OTEL_EXPORTER_OTLP_METRICS_COMPRESSION", "OTEL_EXPORTER_OTLP_COMPRESSION"}, T_ENUM,
	 OFF(otlp_metrics.gzip), "none", 0, 0, "none|gzip", "Request body compression.", NULL},
	{"otel_metrics_export.timeout", NULL,
	 {"OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"}, T_DURATION,
	 OFF(otlp_metrics.timeout_ms), "10s", 100, 600000, NULL, "Timeout of one export request.",
	 NULL},
	{"otel_metrics_export.interval", NULL, {"OTEL_METRIC_EXPORT_INTERVAL", "BEYLA_METRICS_INTERVAL"},
	 T_DURATION, OFF(metrics_interval_ms), "60s", 100, 3600000, NULL,
	 "Period between two OTLP metric exports.", "otel_metrics_export.interval"},
	{"otel_metrics_export.buckets.duration_histogram", NULL, {0}, T_FLOATS, OFF(duration_buckets),
	 "0.005,0.01,0.025,0.05,0.075,0.1,0.25,0.5,0.75,1,2.5,5,7.5,10", 0, 0, NULL,
	 "Bucket boundaries (seconds) of http.server.request.duration and the other duration "
	 "histograms except db.client.operation.duration.",
	 "otel_metrics_export.buckets.duration_histogram"},
	{"otel_metrics_export.buckets.request_size_histogram", NULL, {0}, T_FLOATS, OFF(size_buckets),
	 "0,32,64,128,256,512,1024,2048,4096,8192", 0, 0, NULL,
	 "Bucket boundaries (bytes) of the body size histograms.",
	 "otel_metrics_export.buckets.request_size_histogram"},
	{"otel_metrics_export.ttl", NULL, {"RASTRO_METRICS_TTL"}, T_DURATION, OFF(metrics_ttl_ms), "5m",
	 1000, 86400000, NULL, "A series not updated for this long is removed.",
	 "otel_metrics_export.ttl"},
	{"otel_metrics_export.max_series", NULL, {"RASTRO_MAX_SERIES"}, T_UINT, OFF(max_series), "2000",
	 1, 10000000, NULL,
	 "Series per metric; further attribute sets go to one series with "
	 "otel.metric.overflow=\"true\", counted in rastro_metric_overflow_total.",
	 NULL},

	/* OTLP traces */
	{"otel_traces_export.endpoint", NULL, {"OTEL_EXPORTER_OTLP_ENDPOINT"}, T_STRING,
	 OFF(raw.traces_endpoint), NULL, 0, 0, NULL,
	 "OTLP/HTTP base URL; v1/traces is appended. OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, used as "
	 "is, overrides both. Unset: no OTLP traces.",
	 "otel_traces_export.endpoint"},
	{"otel_traces_export.protocol", NULL,
	 {"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"}, T_ENUM,
	 OFF(otlp_traces.protocol), "http/protobuf", 0, 0, "http/protobuf|http/json|grpc",
	 "Only http/protobuf is implemented; the others are refused with an error.",
	 "otel_traces_export.protocol"},
	{"otel_traces_export.headers", NULL,
	 {"OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS"}, T_KEYVALUES,
	 OFF(otlp_traces.headers), NULL, 0, 0, NULL, "Extra HTTP headers, e.g. Authorization.", NULL},
	{"otel_traces_export.compression", NULL,
	 {"OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "OTEL_EXPORTER_OTLP_COMPRESSION"}, T_ENUM,
	 OFF(otlp_traces.gzip), "none", 0, 0, "none|gzip", "Request body compression.", NULL},
	{"otel_traces_export.timeout", NULL,
	 {"OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"}, T_DURATION,
	 OFF(otlp_traces.timeout_ms), "10s", 100, 600000, NULL, "Timeout of one export request.",
	 NULL},
	{"otel_traces_export.sampler.name", NULL, {"OTEL_TRACES_SAMPLER"}, T_ENUM, OFF(sampler),
	 "parentbased_always_on", 0, 0,
	 "parentbased_always_on|always_on|always_off|traceidratio|parentbased_always_off|"
	 "parentbased_traceidratio",
	 "Head sampler, as in the OpenTelemetry SDK.", "otel_traces_export.sampler.name"},
	{"otel_traces_export.sampler.arg", NULL, {"OTEL_TRACES_SAMPLER_ARG"}, T_FLOAT, OFF(sampler_arg),
	 "1.0", 0, 1, NULL, "Ratio for the traceidratio samplers.",
	 "otel_traces_export.sampler.arg"},
	{"otel_traces_export.max_export_batch_size", NULL, {"OTEL_BSP_MAX_EXPORT_BATCH_SIZE"}, T_UINT,
	 OFF(traces_batch_size), "512", 1, 65536, NULL, "Spans per export request.",
	 "otel_traces_export.max_export_batch_size"},
	{"otel_traces_export.schedule_delay", NULL, {"OTEL_BSP_SCHEDULE_DELAY"}, T_DURATION,
	 OFF(traces_schedule_delay_ms), "5s", 10, 3600000, NULL,
	 "Longest time a span waits for a full batch.", "otel_traces_export.schedule_delay"},
	{"otel_traces_export.max_queue_size", NULL, {"OTEL_BSP_MAX_QUEUE_SIZE"}, T_UINT,
	 OFF(traces_queue_size), "4096", 1, 1048576, NULL,
	 "Spans held while the backend is slow or down; beyond it spans are dropped and counted. "
	 "While it is nearly full, events wait in the ring buffer for the exporter (up to half "
	 "the ring, and 200ms without progress: docs/architecture.md).",
	 "otel_traces_export.max_queue_size"},

	/* data minimisation */
	{"attributes.keep_query_values", NULL, {"RASTRO_KEEP_QUERY_VALUES"}, T_BOOL,
	 OFF(keep_query_values), "false", 0, 0, NULL,
	 "Keep url.query values in spans; by default each value is replaced by ?.", NULL},
	{"attributes.keep_db_literals", NULL, {"RASTRO_KEEP_DB_LITERALS"}, T_BOOL,
	 OFF(keep_db_literals), "false", 0, 0, NULL,
	 "Keep SQL and Redis literals in db.query.text, and a database server's error message "
	 "in the failed span's status; by default literals are replaced by ?.", NULL},
	{"otel_export.max_queue_bytes", NULL, {"RASTRO_OTLP_MAX_QUEUE_BYTES"}, T_BYTES,
	 OFF(otlp_max_queue_bytes), "4MiB", 65536, 1073741824, NULL,
	 "Encoded OTLP requests held for retry, per signal; the oldest is dropped and counted "
	 "beyond it.",
	 NULL},

	/* prometheus */
	{"prometheus_export.port", NULL, {"RASTRO_PROMETHEUS_PORT", "BEYLA_PROMETHEUS_PORT"}, T_UINT,
	 OFF(prom_port), "9400", 0, 65535, NULL, "Prometheus scrape endpoint port; 0 turns it off.",
	 "prometheus_export.port"},
	{"prometheus_export.address", NULL, {"RASTRO_PROMETHEUS_ADDRESS"}, T_STRING, OFF(prom_address),
	 "127.0.0.1", 0, 0, NULL,
	 "Address the endpoint listens on; 0.0.0.0 or :: to be scraped from other hosts.", NULL},
	{"prometheus_export.path", NULL, {"RASTRO_PROMETHEUS_PATH", "BEYLA_PROMETHEUS_PATH"}, T_STRING,
	 OFF(prom_path), "/metrics", 0, 0, NULL, "Scrape path.", "prometheus_export.path"},
	{"prometheus_export.buckets.duration_histogram", NULL, {0}, T_FLOATS,
	 OFF(raw.prom_duration_buckets), NULL, 0, 0, NULL,
	 "Same as otel_metrics_export.buckets.duration_histogram (one aggregation serves both "
	 "exporters; giving both with different values is an error).",
	 "prometheus_export.buckets.duration_histogram"},
	{"prometheus_export.buckets.request_size_histogram", NULL, {0}, T_FLOATS,
	 OFF(raw.prom_size_buckets), NULL, 0, 0, NULL,
	 "Same as otel_metrics_export.buckets.request_size_histogram.",
	 "prometheus_export.buckets.request_size_histogram"},
	{"prometheus_export.ttl", NULL, {0}, T_DURATION, OFF(raw.prom_ttl_ms), NULL, 1000, 86400000,
	 NULL, "Same as otel_metrics_export.ttl.", "prometheus_export.ttl"},
};

#define N_SETTINGS (sizeof(settings) / sizeof(settings[0]))
_Static_assert(N_SETTINGS <= sizeof(((struct rastro_config *)0)->raw.set), "raw.set too small");

/* Keys of one discovery.instrument entry. */
static const struct setting rule_settings[] = {
	{"open_ports", NULL, {0}, T_PORTS, RULE_OFF(open_ports), NULL, 0, 0, NULL,
	 "Ports the process listens on.", "open_ports"},
	{"exe_path", NULL, {0}, T_STRING, RULE_OFF(exe_path), NULL, 0, 0, NULL,
	 "Glob over the executable's full path.", "exe_path"},
	{"name", NULL, {0}, T_STRING, RULE_OFF(name), NULL, 0, 0, NULL, "service.name.", "name"},
	{"namespace", NULL, {0}, T_STRING, RULE_OFF(namespace_), NULL, 0, 0, NULL,
	 "service.namespace.", "namespace"},
};

#define N_RULE_SETTINGS (sizeof(rule_settings) / sizeof(rule_settings[0]))

/* ---- value parsers: text -> field; on failure, `expected` says what is wanted. */

static void set_expected(char *expected, size_t len, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void set_expected(char *expected, size_t len, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(expected, len, fmt, ap);
	va_end(ap);
}

static char *trim(char *s)
{
	while (isspace((unsigned char)*s))
		s++;
	char *e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		*--e = '\0';
	return s;
}

static int parse_u64(const char *text, uint64_t *out, const char **rest)
{
	char *end;
	errno = 0;
	if (!isdigit((unsigned char)*text))
		return -1;
	unsigned long long v = strtoull(text, &end, 10);
	if (errno)
		return -1;
	*out = v;
	*rest = end;
	return 0;
}

static int parse_duration_ms(const char *text, uint64_t *ms)
{
	char *end;
	errno = 0;
	double v = strtod(text, &end);
	if (errno || end == text || v < 0 || !isfinite(v))
		return -1;
	while (isspace((unsigned char)*end))
		end++;
	double scale;
	if (!*end || !strcmp(end, "ms"))
		scale = 1;
	else if (!strcmp(end, "s"))
		scale = 1000;
	else if (!strcmp(end, "m"))
		scale = 60000;
	else if (!strcmp(end, "h"))
		scale = 3600000;
	else if (!strcmp(end, "us") || !strcmp(end, "µs"))
		scale = 0.001;
	else if (!strcmp(end, "ns"))
		scale = 0.000001;
	else
		return -1;
	*ms = (uint64_t)llround(v * scale);
	return 0;
}

static int parse_bytes(const char *text, uint64_t *out)
{
	const char *rest;
	uint64_t v;
	if (parse_u64(text, &v, &rest))
		return -1;
	while (isspace((unsigned char)*rest))
		rest++;
	uint64_t scale = 1;
	if (!*rest || !strcasecmp(rest, "b"))
		scale = 1;
	else if (!strcasecmp(rest, "k") || !strcasecmp(rest, "kb") || !strcasecmp(rest, "kib"))
		scale = 1024;
	else if (!strcasecmp(rest, "m") || !strcasecmp(rest, "mb") || !strcasecmp(rest, "mib"))
		scale = 1024 * 1024;
	else if (!strcasecmp(rest, "g") || !strcasecmp(rest, "gb") || !strcasecmp(rest, "gib"))
		scale = 1024ull * 1024 * 1024;
	else
		return -1;
	*out = v * scale;
	return 0;
}

static int parse_bool(const char *text, bool *out)
{
	static const char *const yes[] = {"true", "yes", "on", "1"};
	static const char *const no[] = {"false", "no", "off", "0"};
	for (size_t i = 0; i < 4; i++) {
		if (!strcasecmp(text, yes[i]))
			return *out = true, 0;
		if (!strcasecmp(text, no[i]))
			return *out = false, 0;
	}
	return -1;
}

/* Index of text among "a|b|c", or -1. */
static int choice_index(const char *choices, const char *text)
{
	int idx = 0;
	const char *p = choices;
	size_t len = strlen(text);
	while (*p) {
		const char *bar = strchr(p, '|');
		size_t n = bar ? (size_t)(bar - p) : strlen(p);
		if (n == len && !strncasecmp(p, text, n))
			return idx;
		if (!bar)
			break;
		p = bar + 1;
		idx++;
	}
	return -1;
}

int config__parse_ports(const char *text, struct port_ranges *out)
{
	struct port_ranges r = {0};
	char *copy = strdup(text), *save = NULL;
	int rc = 0;
	if (!copy)
		return -1;
	for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		tok = trim(tok);
		uint64_t lo, hi;
		const char *rest;
		if (parse_u64(tok, &lo, &rest)) {
			rc = -1;
			break;
		}
		hi = lo;
		while (isspace((unsigned char)*rest))
			rest++;
		if (*rest == '-') {
			rest++;
			while (isspace((unsigned char)*rest))
				rest++;
			if (parse_u64(rest, &hi, &rest)) {
				rc = -1;
				break;
			}
		}
		if (*rest || lo < 1 || hi > 65535 || lo > hi || r.count == CONFIG_MAX_PORT_RANGES) {
			rc = -1;
			break;
		}
		r.range[r.count].lo = (uint16_t)lo;
		r.range[r.count].hi = (uint16_t)hi;
		r.count++;
	}
	free(copy);
	if (rc || r.count == 0)
		return -1;
	*out = r;
	return 0;
}

bool config__port_in(const struct port_ranges *ports, uint16_t port)
{
	for (int i = 0; i < ports->count; i++)
		if (port >= ports->range[i].lo && port <= ports->range[i].hi)
			return true;
	return false;
}

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = tolower(c);
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* Percent-decodes s in place; -1 on a malformed escape. */
static int percent_decode(char *s)
{
	char *w = s;
	for (char *r = s; *r; r++) {
		if (*r == '%') {
			int h = hexval((unsigned char)r[1]), l = h < 0 ? -1 : hexval((unsigned char)r[2]);
			if (h < 0 || l < 0)
				return -1;
			*w++ = (char)(h * 16 + l);
			r += 2;
		} else {
			*w++ = *r;
		}
	}
	*w = '\0';
	return 0;
}

static void key_values_free(struct key_values *kv)
{
	for (int i = 0; i < kv->count; i++) {
		free(kv->key[i]);
		free(kv->value[i]);
	}
	kv->count = 0;
}

static int key_values_add(struct key_values *kv, const char *k, const char *v)
{
	for (int i = 0; i < kv->count; i++) {
		if (!strcmp(kv->key[i], k)) { /* later entries win */
			char *nv = strdup(v);
			if (!nv)
				return -1;
			free(kv->value[i]);
			kv->value[i] = nv;
			return 0;
		}
	}
	if (kv->count == CONFIG_MAX_LIST)
		return -1;
	kv->key[kv->count] = strdup(k);
	kv->value[kv->count] = strdup(v);
	if (!kv->key[kv->count] || !kv->value[kv->count])
		return -1;
	kv->count++;
	return 0;
}

int config__parse_key_values(const char *text, struct key_values *out)
{
	struct key_values kv = {0};
	char *copy = strdup(text), *save = NULL;
	int rc = 0;
	if (!copy)
		return -1;
	for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(tok, '=');
		if (!eq) {
			if (*trim(tok) == '\0')
				continue; /* tolerate "a=b," */
			rc = -1;
			break;
		}
		*eq = '\0';
		char *k = trim(tok), *v = trim(eq + 1);
		if (!*k || percent_decode(k) || percent_decode(v) || key_values_add(&kv, k, v)) {
			rc = -1;
			break;
		}
	}
	free(copy);
	if (rc) {
		key_values_free(&kv);
		return -1;
	}
	key_values_free(out);
	*out = kv;
	return 0;
}

char *config__signal_url(const char *base, const char *signal)
{
	size_t n = strlen(base);
	char *url = malloc(n + strlen(signal) + 5);
	if (!url)
		return NULL;
	/* OTLP exporter spec: the base URL's path gets "v1/<signal>" appended,
	 * with exactly one slash in between. */
	sprintf(url, "%s%sv1/%s", base, n && base[n - 1] == '/' ? "" : "/", signal);
	return url;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* items[n] -> field. */
static int apply_list(const struct setting *st, void *field, char **items, int n, char *expected,
		      size_t elen)
{
	if (st->type == T_FLOATS) {
		struct float_list fl = {0};
		for (int i = 0; i < n; i++) {
			char *end;
			errno = 0;
			double v = strtod(items[i], &end);
			if (errno || end == items[i] || *trim(end) || !isfinite(v) ||
			    fl.count == CONFIG_MAX_LIST) {
				set_expected(expected, elen,
					     "a list of at most %d numbers, got \"%s\"",
					     CONFIG_MAX_LIST, items[i]);
				return -1;
			}
			fl.value[fl.count++] = v;
		}
		qsort(fl.value, fl.count, sizeof(double), cmp_double);
		for (int i = 1; i < fl.count; i++) {
			if (fl.value[i] == fl.value[i - 1]) {
				set_expected(expected, elen, "distinct bucket boundaries");
				return -1;
			}
		}
		*(struct float_list *)field = fl;
		return 0;
	}
	/* T_STRINGS */
	struct string_list *sl = field;
	for (int i = 0; i < sl->count; i++)
		free(sl->item[i]);
	sl->count = 0;
	for (int i = 0; i < n; i++) {
		if (sl->count == CONFIG_MAX_LIST) {
			set_expected(expected, elen, "at most %d entries", CONFIG_MAX_LIST);
			return -1;
		}
		sl->item[sl->count] = strdup(items[i]);
		if (!sl->item[sl->count])
			return -1;
		sl->count++;
	}
	return 0;
}

/* Parses one scalar value into the field of a setting. */
static int apply_scalar(const struct setting *st, void *field, const char *text, char *expected,
			size_t elen)
{
	uint64_t u;
	switch (st->type) {
	case T_STRING: {
		char **s = field;
		free(*s);
		*s = *text ? strdup(text) : NULL;
		return 0;
	}
	case T_BOOL:
		if (parse_bool(text, field)) {
			set_expected(expected, elen, "true or false");
			return -1;
		}
		return 0;
	case T_UINT: {
		const char *rest;
		if (parse_u64(text, &u, &rest) || *rest || u < st->min || u > st->max) {
			set_expected(expected, elen, "an integer from %.0f to %.0f", st->min, st->max);
			return -1;
		}
		*(uint32_t *)field = (uint32_t)u;
		return 0;
	}
	case T_DURATION:
		if (parse_duration_ms(text, &u) || u < st->min || u > st->max) {
			set_expected(expected, elen,
				     "a duration such as 500ms, 5s or 1m, from %.0fms to %.0fms", st->min,
				     st->max);
			return -1;
		}
		*(uint32_t *)field = (uint32_t)u;
		return 0;
	case T_BYTES:
		if (parse_bytes(text, &u) || u < st->min || u > st->max) {
			set_expected(expected, elen,
				     "a size such as 4096, 64KiB or 8MiB, from %.0f to %.0f bytes",
				     st->min, st->max);
			return -1;
		}
		*(uint32_t *)field = (uint32_t)u;
		return 0;
	case T_FLOAT: {
		char *end;
		errno = 0;
		double v = strtod(text, &end);
		if (errno || end == text || *trim(end) || !(v >= st->min && v <= st->max)) {
			set_expected(expected, elen, "a number from %g to %g", st->min, st->max);
			return -1;
		}
		*(double *)field = v;
		return 0;
	}
	case T_ENUM: {
		int idx = choice_index(st->choices, text);
		if (idx < 0) {
			set_expected(expected, elen, "one of %s", st->choices);
			return -1;
		}
		if (st->offset == OFF(otlp_metrics.gzip) || st->offset == OFF(otlp_traces.gzip))
			*(bool *)field = idx == 1;
		else
			*(int *)field = idx;
		return 0;
	}
	case T_LOGLEVEL: {
		int lvl = log__parse_level(text);
		if (lvl < 0) {
			set_expected(expected, elen, "one of %s", st->choices);
			return -1;
		}
		*(enum log_level *)field = lvl;
		return 0;
	}
	case T_PORTS:
		if (config__parse_ports(text, field)) {
			set_expected(expected, elen,
				     "a port or a list of ports and ranges such as 80,443,8000-8999");
			return -1;
		}
		return 0;
	case T_FLOATS:
	case T_STRINGS: {
		char *copy = strdup(text), *save = NULL, *items[CONFIG_MAX_LIST + 1];
		int n = 0, rc;
		if (!copy)
			return -1;
		for (char *tok = strtok_r(copy, ",", &save); tok && n <= CONFIG_MAX_LIST;
		     tok = strtok_r(NULL, ",", &save))
			items[n++] = trim(tok);
		rc = apply_list(st, field, items, n, expected, elen);
		free(copy);
		return rc;
	}
	case T_KEYVALUES:
		if (config__parse_key_values(text, field)) {
			set_expected(expected, elen, "key=value pairs separated by commas");
			return -1;
		}
		return 0;
	case T_RULES:
		set_expected(expected, elen, "a list of entries");
		return -1;
	}
	return -1;
}

/* ---- YAML */

struct loader {
	struct rastro_config *cfg;
	const char *path;
	yaml_document_t doc;
	int errors;
};

static const char *scalar(yaml_node_t *n)
{
	return n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

static void invalid(struct loader *ld, const char *key, yaml_node_t *n, const char *expected)
{
	fprintf(stderr, "rastro: invalid configuration: %s, line %lu: %s: expected %s\n", ld->path,
		(unsigned long)n->start_mark.line + 1, key, expected);
	ld->errors++;
}

static int apply_node(struct loader *ld, const struct setting *st, const char *key, void *field,
		      yaml_node_t *n)
{
	char expected[256] = "";
	if (n->type == YAML_SCALAR_NODE) {
		if (apply_scalar(st, field, scalar(n), expected, sizeof(expected))) {
			invalid(ld, key, n, expected);
			return -1;
		}
		return 0;
	}
	if (n->type == YAML_SEQUENCE_NODE && (st->type == T_FLOATS || st->type == T_STRINGS)) {
		char *items[CONFIG_MAX_LIST + 1];
		int count = 0;
		for (yaml_node_item_t *it = n->data.sequence.items.start;
		     it < n->data.sequence.items.top; it++) {
			const char *s = scalar(yaml_document_get_node(&ld->doc, *it));
			if (!s) {
				invalid(ld, key, n, "a list of plain values");
				return -1;
			}
			if (count <= CONFIG_MAX_LIST)
				items[count++] = (char *)s;
		}
		if (apply_list(st, field, items, count, expected, sizeof(expected))) {
			invalid(ld, key, n, expected);
			return -1;
		}
		return 0;
	}
	if (n->type == YAML_MAPPING_NODE && st->type == T_KEYVALUES) {
		struct key_values *kv = field;
		key_values_free(kv);
		for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top;
		     p++) {
			const char *k = scalar(yaml_document_get_node(&ld->doc, p->key));
			const char *v = scalar(yaml_document_get_node(&ld->doc, p->value));
			if (!k || !v || key_values_add(kv, k, v)) {
				invalid(ld, key, n, "a mapping of names to plain values");
				return -1;
			}
		}
		return 0;
	}
	invalid(ld, key, n, "a plain value");
	return -1;
}

static void unknown_key(struct loader *ld, const char *key, yaml_node_t *keynode)
{
	log_warn("%s, line %lu: unknown configuration key %s (ignored)", ld->path,
		 (unsigned long)keynode->start_mark.line + 1, key);
}

static void load_rules(struct loader *ld, const char *key, yaml_node_t *n)
{
	struct rastro_config *cfg = ld->cfg;
	if (n->type == YAML_SCALAR_NODE && !*scalar(n))
		return; /* "instrument:" with nothing under it */
	if (n->type != YAML_SEQUENCE_NODE) {
		invalid(ld, key, n, "a list of entries (- open_ports: ..., name: ...)");
		return;
	}
	for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top;
	     it++) {
		yaml_node_t *entry = yaml_document_get_node(&ld->doc, *it);
		if (entry->type != YAML_MAPPING_NODE) {
			invalid(ld, key, entry, "an entry with open_ports, exe_path, name, namespace");
			continue;
		}
		if (cfg->rule_count == CONFIG_MAX_LIST) {
			invalid(ld, key, entry, "at most 64 entries");
			return;
		}
		struct instrument_rule *rule = &cfg->rules[cfg->rule_count++];
		memset(rule, 0, sizeof(*rule));
		rule->line = (int)entry->start_mark.line + 1;
		for (yaml_node_pair_t *p = entry->data.mapping.pairs.start;
		     p < entry->data.mapping.pairs.top; p++) {
			yaml_node_t *kn = yaml_document_get_node(&ld->doc, p->key);
			yaml_node_t *vn = yaml_document_get_node(&ld->doc, p->value);
			const char *k = scalar(kn);
			char full[512];
			if (snprintf(full, sizeof(full), "%s[].%s", key, k ? k : "?") < 0)
				continue;
			const struct setting *st = NULL;
			for (size_t i = 0; k && i < N_RULE_SETTINGS; i++)
				if (!strcmp(rule_settings[i].key, k))
					st = &rule_settings[i];
			if (!st) {
				unknown_key(ld, full, kn);
				continue;
			}
			apply_node(ld, st, full, (char *)rule + st->offset, vn);
		}
		if (rule->open_ports.count == 0 && !rule->exe_path) {
			invalid(ld, key, entry, "each entry to have open_ports or exe_path");
		}
	}
}

static const struct setting *find_setting(const char *key)
{
	for (size_t i = 0; i < N_SETTINGS; i++)
		if (!strcmp(settings[i].key, key) || (settings[i].alias && !strcmp(settings[i].alias, key)))
			return &settings[i];
	return NULL;
}

static bool is_section(const char *prefix)
{
	size_t n = strlen(prefix);
	for (size_t i = 0; i < N_SETTINGS; i++) {
		if (!strncmp(settings[i].key, prefix, n) && settings[i].key[n] == '.')
			return true;
		if (settings[i].alias && !strncmp(settings[i].alias, prefix, n) &&
		    settings[i].alias[n] == '.')
			return true;
	}
	return false;
}

static void load_mapping(struct loader *ld, yaml_node_t *map, const char *prefix)
{
	for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
	     p++) {
		yaml_node_t *kn = yaml_document_get_node(&ld->doc, p->key);
		yaml_node_t *vn = yaml_document_get_node(&ld->doc, p->value);
		const char *k = scalar(kn);
		char key[256];
		if (!k) {
			invalid(ld, prefix[0] ? prefix : "(top level)", kn, "plain keys");
			continue;
		}
		if (snprintf(key, sizeof(key), "%s%s%s", prefix, prefix[0] ? "." : "", k) < 0)
			continue;
		const struct setting *st = find_setting(key);
		if (st) {
			ld->cfg->raw.set[st - settings] = true;
			if (st->type == T_RULES)
				load_rules(ld, key, vn);
			else
				apply_node(ld, st, key, (char *)ld->cfg + st->offset, vn);
		} else if (is_section(key)) {
			if (vn->type == YAML_MAPPING_NODE)
				load_mapping(ld, vn, key);
			else if (!(vn->type == YAML_SCALAR_NODE && !*scalar(vn)))
				invalid(ld, key, vn, "a section (a mapping of keys)");
		} else {
			unknown_key(ld, key, kn);
		}
	}
}

/* Loads one YAML document from an initialised parser (file or text). */
static int load_yaml(struct rastro_config *cfg, const char *path, yaml_parser_t *parser)
{
	struct loader ld = {.cfg = cfg, .path = path};
	if (!yaml_parser_load(parser, &ld.doc)) {
		fprintf(stderr, "rastro: invalid configuration: %s, line %lu: YAML syntax: %s\n", path,
			(unsigned long)parser->problem_mark.line + 1,
			parser->problem ? parser->problem : "unreadable");
		return -1;
	}
	yaml_node_t *root = yaml_document_get_root_node(&ld.doc);
	if (root && root->type == YAML_MAPPING_NODE)
		load_mapping(&ld, root, "");
	else if (root && !(root->type == YAML_SCALAR_NODE && !*scalar(root)))
		invalid(&ld, "(top level)", root, "a mapping of configuration keys");
	yaml_document_delete(&ld.doc);
	return ld.errors ? -1 : 0;
}

static int load_file(struct rastro_config *cfg, const char *path)
{
	yaml_parser_t parser;
	FILE *f = fopen(path, "r");
	if (!f) {
		fprintf(stderr, "rastro: cannot read configuration file %s: %s\n", path,
			strerror(errno));
		return -1;
	}
	yaml_parser_initialize(&parser);
	yaml_parser_set_input_file(&parser, f);
	int rc = load_yaml(cfg, path, &parser);
	yaml_parser_delete(&parser);
	fclose(f);
	return rc;
}

/* ---- environment and defaults */

static int apply_defaults(struct rastro_config *cfg)
{
	for (size_t i = 0; i < N_SETTINGS; i++) {
		const struct setting *st = &settings[i];
		char expected[256];
		if (!st->def)
			continue;
		if (apply_scalar(st, (char *)cfg + st->offset, st->def, expected, sizeof(expected))) {
			fprintf(stderr, "rastro: bug: default of %s: expected %s\n", st->key, expected);
			return -1;
		}
	}
	return 0;
}

static int apply_env(struct rastro_config *cfg)
{
	int errors = 0;
	for (size_t i = 0; i < N_SETTINGS; i++) {
		const struct setting *st = &settings[i];
		for (int e = 0; e < 4 && st->env[e]; e++) {
			const char *v = getenv(st->env[e]);
			char expected[256];
			if (!v)
				continue;
			/* The first variable listed wins: RASTRO_ over BEYLA_, signal-specific
			 * over generic. */
			if (apply_scalar(st, (char *)cfg + st->offset, v, expected, sizeof(expected))) {
				fprintf(stderr,
					"rastro: invalid configuration: environment variable %s (%s): "
					"expected %s\n",
					st->env[e], st->key, expected);
				errors++;
			}
			cfg->raw.set[i] = true;
			break;
		}
	}
	return errors ? -1 : 0;
}

static bool same_floats(const struct float_list *a, const struct float_list *b)
{
	if (a->count != b->count)
		return false;
	for (int i = 0; i < a->count; i++)
		if (a->value[i] != b->value[i])
			return false;
	return true;
}

static size_t setting_index(const char *key)
{
	return (size_t)(find_setting(key) - settings);
}

bool config__is_set(const struct rastro_config *cfg, const char *key)
{
	const struct setting *st = find_setting(key);
	return st && cfg->raw.set[st - settings];
}

/* One metrics aggregation serves both exporters: fold prometheus_export's
 * copies of shared settings into the main ones. */
static int reconcile_shared(struct rastro_config *cfg)
{
	struct {
		const char *otel_key, *prom_key;
	} pairs[] = {
		{"otel_metrics_export.buckets.duration_histogram",
		 "prometheus_export.buckets.duration_histogram"},
		{"otel_metrics_export.buckets.request_size_histogram",
		 "prometheus_export.buckets.request_size_histogram"},
		{"otel_metrics_export.ttl", "prometheus_export.ttl"},
	};
	for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++) {
		size_t oi = setting_index(pairs[i].otel_key), pi = setting_index(pairs[i].prom_key);
		if (!cfg->raw.set[pi])
			continue;
		bool differ;
		if (i == 0)
			differ = !same_floats(&cfg->duration_buckets, &cfg->raw.prom_duration_buckets);
		else if (i == 1)
			differ = !same_floats(&cfg->size_buckets, &cfg->raw.prom_size_buckets);
		else
			differ = cfg->metrics_ttl_ms != cfg->raw.prom_ttl_ms;
		if (cfg->raw.set[oi] && differ) {
			fprintf(stderr,
				"rastro: invalid configuration: %s and %s differ: rastro computes "
				"metrics once for both exporters; give one of them\n",
				pairs[i].otel_key, pairs[i].prom_key);
			return -1;
		}
		if (i == 0)
			cfg->duration_buckets = cfg->raw.prom_duration_buckets;
		else if (i == 1)
			cfg->size_buckets = cfg->raw.prom_size_buckets;
		else
			cfg->metrics_ttl_ms = cfg->raw.prom_ttl_ms;
	}
	return 0;
}

static int resolve_endpoint(struct otlp_signal *sig, const char *base, const char *signal_env,
			    const char *signal, const char *key)
{
	const char *as_is = getenv(signal_env);
	free(sig->endpoint);
	sig->endpoint = NULL;
	if (as_is && *as_is)
		sig->endpoint = strdup(as_is);
	else if (base && *base)
		sig->endpoint = config__signal_url(base, signal);
	if (sig->endpoint && strncmp(sig->endpoint, "http://", 7) &&
	    strncmp(sig->endpoint, "https://", 8)) {
		fprintf(stderr,
			"rastro: invalid configuration: %s (%s): expected an http:// or https:// URL, "
			"got \"%s\"\n",
			key, as_is && *as_is ? signal_env : "base URL", sig->endpoint);
		return -1;
	}
	if (sig->endpoint && sig->protocol != OTLP_HTTP_PROTOBUF) {
		fprintf(stderr,
			"rastro: invalid configuration: %s.protocol: only http/protobuf is "
			"implemented (OTLP over gRPC and http/json are not yet)\n",
			key);
		return -1;
	}
	return 0;
}

static int finish(struct rastro_config *cfg)
{
	if (reconcile_shared(cfg))
		return -1;
	if (resolve_endpoint(&cfg->otlp_metrics, cfg->raw.metrics_endpoint,
			     "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "metrics", "otel_metrics_export"))
		return -1;
	if (resolve_endpoint(&cfg->otlp_traces, cfg->raw.traces_endpoint,
			     "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "traces", "otel_traces_export"))
		return -1;

	const char *ra = getenv("OTEL_RESOURCE_ATTRIBUTES");
	if (ra && config__parse_key_values(ra, &cfg->resource_attributes))
		log_warn("OTEL_RESOURCE_ATTRIBUTES is malformed (expected key=value pairs, "
			 "percent-encoded): the whole value is discarded");

	/* Top-level selection (open_port / auto_target_exe) is one more entry. */
	if (cfg->open_port.count || cfg->auto_target_exe) {
		if (cfg->rule_count == CONFIG_MAX_LIST) {
			fprintf(stderr, "rastro: invalid configuration: too many discovery entries\n");
			return -1;
		}
		struct instrument_rule *r = &cfg->rules[cfg->rule_count++];
		memset(r, 0, sizeof(*r));
		r->open_ports = cfg->open_port;
		r->exe_path = cfg->auto_target_exe ? strdup(cfg->auto_target_exe) : NULL;
	}
	if (cfg->rule_count == 0) {
		fprintf(stderr,
			"rastro: invalid configuration: nothing to instrument: set "
			"discovery.instrument in the file, or open_port / RASTRO_OPEN_PORT, or "
			"auto_target_exe / RASTRO_AUTO_TARGET_EXE\n");
		return -1;
	}
	/* The ring buffer must be a power of two of at least a page. */
	uint32_t rb = 1;
	while (rb < cfg->ring_buffer_bytes)
		rb <<= 1;
	cfg->ring_buffer_bytes = rb;
	if (cfg->wakeup_bytes > rb / 2)
		cfg->wakeup_bytes = rb / 2;
	if (cfg->duration_buckets.count == 0 || cfg->size_buckets.count == 0) {
		fprintf(stderr, "rastro: invalid configuration: histogram buckets cannot be empty\n");
		return -1;
	}
	/* An empty value ("path: \"\"") leaves no string at all. */
	if (!cfg->prom_path || cfg->prom_path[0] != '/') {
		fprintf(stderr,
			"rastro: invalid configuration: prometheus_export.path: expected a path "
			"starting with /\n");
		return -1;
	}
	return 0;
}

/* trace_printer set nowhere (file, environment, command line): someone trying
 * rastro at a terminal with no OTLP backend sees its requests; a service (its
 * stdout a journal, a pipe or a file) or one exporting spans stays quiet. */
static void choose_printer(struct rastro_config *cfg)
{
	bool tty = isatty(STDOUT_FILENO) == 1;
	const char *why;
	if (cfg->otlp_traces.endpoint) {
		cfg->trace_printer = PRINTER_DISABLED;
		why = "traces are exported over OTLP";
	} else if (!tty) {
		cfg->trace_printer = PRINTER_DISABLED;
		why = "stdout is not a terminal";
	} else {
		cfg->trace_printer = PRINTER_TEXT;
		why = "stdout is a terminal and no OTLP traces endpoint is configured";
	}
	/* Turning the printer on is news, said at INFO. Leaving it off is what
	 * rastro (and Beyla) always did, and what every service and test sees:
	 * DEBUG, so their start-up logs do not change. The logger's level is
	 * applied by the caller; honour the configured one. */
	enum log_level lvl = cfg->trace_printer == PRINTER_TEXT ? LOG_INFO : LOG_DEBUG;
	if (lvl >= cfg->log_level)
		log__write(lvl,
			   "trace printer: %s (trace_printer not set: %s; set it, "
			   "RASTRO_TRACE_PRINTER or --trace-printer to choose)",
			   cfg->trace_printer == PRINTER_TEXT ? "text" : "disabled", why);
}

/* ---- command line */

static void usage(FILE *out)
{
	fprintf(out,
		"Usage: rastro [--config FILE] [--log-level LEVEL] [--trace-printer MODE]\n"
		"\n"
		"Zero-code observability for Linux services: RED metrics and traces of the\n"
		"HTTP, database and other requests that the selected processes serve and\n"
		"make, seen from the kernel with eBPF, exported over OTLP/HTTP and as a\n"
		"Prometheus endpoint. Needs root, or CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE\n"
		"and CAP_DAC_READ_SEARCH; keeps only the last two once started\n"
		"(docs/security.md).\n"
		"\n"
		"Options:\n"
		"  -c, --config FILE        YAML configuration (also RASTRO_CONFIG_PATH or\n"
		"                           BEYLA_CONFIG_PATH); Beyla's beyla.yml is accepted\n"
		"  -l, --log-level LEVEL    DEBUG, INFO, WARN or ERROR (overrides the file)\n"
		"  -p, --trace-printer MODE disabled, text or json (overrides the file)\n"
		"      --config-reference   print every setting as a Markdown table and exit\n"
		"  -h, --help               this help, with every setting\n"
		"  -V, --version            print the version and exit\n"
		"\n"
		"Precedence: defaults < configuration file < environment < command line.\n"
		"Invalid configuration exits with status 2.\n\n");
}

static const char *type_name(const struct setting *st)
{
	switch (st->type) {
	case T_STRING:
		return "string";
	case T_BOOL:
		return "bool";
	case T_UINT:
		return "integer";
	case T_DURATION:
		return "duration";
	case T_BYTES:
		return "size";
	case T_FLOAT:
		return "number";
	case T_ENUM:
	case T_LOGLEVEL:
		return st->choices;
	case T_PORTS:
		return "ports";
	case T_FLOATS:
		return "list of numbers";
	case T_STRINGS:
		return "list of strings";
	case T_KEYVALUES:
		return "key=value list";
	case T_RULES:
		return "list of entries";
	}
	return "?";
}

static void env_list(const struct setting *st, char *buf, size_t len)
{
	buf[0] = '\0';
	for (int e = 0; e < 4 && st->env[e]; e++) {
		size_t n = strlen(buf);
		snprintf(buf + n, len - n, "%s%s", e ? ", " : "", st->env[e]);
	}
	if (!strcmp(st->key, "otel_metrics_export.endpoint"))
		snprintf(buf, len, "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT (as is), "
				   "OTEL_EXPORTER_OTLP_ENDPOINT (base)");
	else if (!strcmp(st->key, "otel_traces_export.endpoint"))
		snprintf(buf, len, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (as is), "
				   "OTEL_EXPORTER_OTLP_ENDPOINT (base)");
}

void config__write_help(FILE *out)
{
	usage(out);
	fprintf(out, "Settings (YAML key; environment variables; default):\n");
	for (size_t i = 0; i < N_SETTINGS; i++) {
		const struct setting *st = &settings[i];
		char envs[256];
		env_list(st, envs, sizeof(envs));
		fprintf(out, "  %s (%s)%s%s%s%s\n", st->key, type_name(st), envs[0] ? "; " : "", envs,
			st->def ? "; default " : "", st->def ? st->def : "");
		fprintf(out, "      %s\n", st->help);
	}
	fprintf(out, "  discovery.instrument[] entries:\n");
	for (size_t i = 0; i < N_RULE_SETTINGS; i++)
		fprintf(out, "      %s (%s): %s\n", rule_settings[i].key, type_name(&rule_settings[i]),
			rule_settings[i].help);
}

/* A Markdown table cell: '|' would end the cell. */
static void md_cell(FILE *out, const char *s)
{
	for (; *s; s++) {
		if (*s == '|')
			fputc('\\', out);
		fputc(*s, out);
	}
}

void config__write_reference(FILE *out)
{
	fprintf(out, "| Key | Environment | Type | Default | Beyla | Description |\n");
	fprintf(out, "|---|---|---|---|---|---|\n");
	for (size_t i = 0; i < N_SETTINGS; i++) {
		const struct setting *st = &settings[i];
		char envs[256];
		env_list(st, envs, sizeof(envs));
		fprintf(out, "| `%s`%s%s%s | %s | ", st->key, st->alias ? " (also `" : "",
			st->alias ? st->alias : "", st->alias ? "`)" : "", envs[0] ? envs : "-");
		md_cell(out, type_name(st));
		fprintf(out, " | %s", st->def ? "`" : "-");
		if (st->def)
			md_cell(out, st->def);
		fprintf(out, "%s | %s | ", st->def ? "`" : "", st->beyla ? "same" : "rastro only");
		md_cell(out, st->help);
		fprintf(out, " |\n");
	}
	for (size_t i = 0; i < N_RULE_SETTINGS; i++) {
		const struct setting *st = &rule_settings[i];
		fprintf(out, "| `discovery.instrument[].%s` | - | %s | - | same | %s |\n", st->key,
			type_name(st), st->help);
	}
}

int config__load(struct rastro_config *cfg, int argc, char **argv)
{
	static const struct option opts[] = {
		{"config", required_argument, 0, 'c'},
		{"log-level", required_argument, 0, 'l'},
		{"trace-printer", required_argument, 0, 'p'},
		{"config-reference", no_argument, 0, 'R'},
		{"help", no_argument, 0, 'h'},
		{"version", no_argument, 0, 'V'},
		{0, 0, 0, 0},
	};
	const char *path = NULL, *cli_level = NULL, *cli_printer = NULL;
	int c;

	memset(cfg, 0, sizeof(*cfg));
	optind = 1;
	while ((c = getopt_long(argc, argv, "c:l:p:hV", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			path = optarg;
			break;
		case 'l':
			cli_level = optarg;
			break;
		case 'p':
			cli_printer = optarg;
			break;
		case 'R':
			config__write_reference(stdout);
			return 1;
		case 'h':
			config__write_help(stdout);
			return 1;
		case 'V':
			printf("rastro %s\n", RASTRO_VERSION);
			return 1;
		default:
			fprintf(stderr, "rastro: invalid command line (see rastro --help)\n");
			return CONFIG_EXIT_INVALID;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "rastro: unexpected argument \"%s\" (see rastro --help)\n", argv[optind]);
		return CONFIG_EXIT_INVALID;
	}
	if (!path)
		path = getenv("RASTRO_CONFIG_PATH");
	if (!path)
		path = getenv("BEYLA_CONFIG_PATH");

	if (apply_defaults(cfg))
		return CONFIG_EXIT_INVALID;
	if (path) {
		cfg->config_path = strdup(path);
		if (load_file(cfg, path))
			return CONFIG_EXIT_INVALID;
	}
	if (apply_env(cfg))
		return CONFIG_EXIT_INVALID;
	char expected[256];
	if (cli_level) {
		int lvl = log__parse_level(cli_level);
		if (lvl < 0) {
			fprintf(stderr,
				"rastro: invalid configuration: --log-level: expected one of "
				"DEBUG|INFO|WARN|ERROR\n");
			return CONFIG_EXIT_INVALID;
		}
		cfg->log_level = lvl;
	}
	if (cli_printer && apply_scalar(find_setting("trace_printer"), &cfg->trace_printer,
					cli_printer, expected, sizeof(expected))) {
		fprintf(stderr, "rastro: invalid configuration: --trace-printer: expected %s\n",
			expected);
		return CONFIG_EXIT_INVALID;
	}
	if (finish(cfg))
		return CONFIG_EXIT_INVALID;
	if (!cli_printer && !config__is_set(cfg, "trace_printer"))
		choose_printer(cfg);
	return 0;
}

int config__load_text(struct rastro_config *cfg, const char *text, size_t len)
{
	yaml_parser_t parser;
	memset(cfg, 0, sizeof(*cfg));
	if (apply_defaults(cfg))
		return CONFIG_EXIT_INVALID;
	yaml_parser_initialize(&parser);
	yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
	int rc = load_yaml(cfg, "(text)", &parser);
	yaml_parser_delete(&parser);
	if (rc || finish(cfg))
		return CONFIG_EXIT_INVALID;
	return 0;
}

static void free_strings(struct string_list *l)
{
	for (int i = 0; i < l->count; i++)
		free(l->item[i]);
	l->count = 0;
}

void config__free(struct rastro_config *cfg)
{
	free(cfg->config_path);
	free(cfg->service_name);
	free(cfg->service_namespace);
	free(cfg->auto_target_exe);
	for (int i = 0; i < cfg->rule_count; i++) {
		free(cfg->rules[i].exe_path);
		free(cfg->rules[i].name);
		free(cfg->rules[i].namespace_);
	}
	free_strings(&cfg->route_patterns);
	free_strings(&cfg->route_ignored);
	free(cfg->otlp_metrics.endpoint);
	free(cfg->otlp_traces.endpoint);
	key_values_free(&cfg->otlp_metrics.headers);
	key_values_free(&cfg->otlp_traces.headers);
	key_values_free(&cfg->resource_attributes);
	free(cfg->prom_path);
	free(cfg->prom_address);
	free(cfg->raw.metrics_endpoint);
	free(cfg->raw.traces_endpoint);
	memset(cfg, 0, sizeof(*cfg));
}
