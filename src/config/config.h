/* rastro's configuration: defaults < YAML file < environment < command line.
 * Loaded once at start into one immutable struct that every module reads. */
#ifndef RASTRO_CONFIG_H
#define RASTRO_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "log.h"

#define CONFIG_MAX_PORT_RANGES 64
#define CONFIG_MAX_LIST 64

enum trace_printer { PRINTER_DISABLED = 0, PRINTER_TEXT, PRINTER_JSON };
/* Which kernel hooks see socket data (ebpf.hooks). */
enum ebpf_hooks { HOOKS_AUTO = 0, HOOKS_SOCKET, HOOKS_SYSCALL };
enum route_unmatched { UNMATCHED_HEURISTIC = 0, UNMATCHED_PATH, UNMATCHED_WILDCARD };
enum sampler_kind {
	SAMPLER_PARENTBASED_ALWAYS_ON = 0,
	SAMPLER_ALWAYS_ON,
	SAMPLER_ALWAYS_OFF,
	SAMPLER_TRACEIDRATIO,
	SAMPLER_PARENTBASED_ALWAYS_OFF,
	SAMPLER_PARENTBASED_TRACEIDRATIO,
};
enum otlp_protocol { OTLP_HTTP_PROTOBUF = 0, OTLP_HTTP_JSON, OTLP_GRPC };

struct port_ranges {
	int count;
	struct {
		uint16_t lo, hi;
	} range[CONFIG_MAX_PORT_RANGES];
};

struct string_list {
	int count;
	char *item[CONFIG_MAX_LIST];
};

struct float_list {
	int count;
	double value[CONFIG_MAX_LIST];
};

struct key_values {
	int count;
	char *key[CONFIG_MAX_LIST];
	char *value[CONFIG_MAX_LIST];
};

/* One entry of discovery.instrument: every selector given must match. */
struct instrument_rule {
	struct port_ranges open_ports; /* count 0: not a selector */
	char *exe_path;                /* glob over the full executable path */
	char *name;
	char *namespace_;
	int line; /* where the entry starts in the config file */
};

struct rastro_config {
	char *config_path;
	enum log_level log_level;
	enum trace_printer trace_printer;

	/* discovery */
	char *service_name;      /* applies to processes selected by open_port/auto_target_exe */
	char *service_namespace;
	struct port_ranges open_port;
	char *auto_target_exe;
	int rule_count;
	struct instrument_rule rules[CONFIG_MAX_LIST];
	uint32_t discovery_poll_ms;

	/* capture */
	enum ebpf_hooks ebpf_hooks;
	uint32_t capture_bytes;
	uint32_t ring_buffer_bytes;
	uint32_t wakeup_bytes;
	uint32_t poll_ms;
	uint32_t max_connections;
	uint32_t max_processes;
	bool heuristic_sql_detect;
	uint32_t max_path_length;
	uint32_t max_pending_requests; /* per connection: pipelined requests awaiting a response */

	/* routes */
	struct string_list route_patterns;
	struct string_list route_ignored;
	enum route_unmatched route_unmatched;

	/* OTLP exporters, one per signal */
	struct otlp_signal {
		char *endpoint; /* final URL; NULL = this export is off */
		enum otlp_protocol protocol;
		struct key_values headers;
		bool gzip;
		uint32_t timeout_ms;
	} otlp_metrics, otlp_traces;

	/* metrics */
	uint32_t metrics_interval_ms;
	struct float_list duration_buckets;
	struct float_list size_buckets;
	uint32_t max_series;
	uint32_t metrics_ttl_ms;

	/* traces */
	enum sampler_kind sampler;
	double sampler_arg;
	uint32_t traces_batch_size;
	uint32_t traces_schedule_delay_ms;
	uint32_t traces_queue_size;

	/* data minimisation */
	bool keep_query_values; /* url.query values kept (default: scrubbed) */
	bool keep_db_literals;  /* SQL/Redis literals kept (default: replaced by ?) */
	uint32_t otlp_max_queue_bytes;

	/* resource */
	struct key_values resource_attributes; /* OTEL_RESOURCE_ATTRIBUTES */

	/* prometheus */
	uint32_t prom_port; /* 0 = off */
	char *prom_path;
	char *prom_address;

	/* Read from the file or environment, then reconciled into the fields
	 * above by config__load; not for other modules. */
	struct {
		struct float_list prom_duration_buckets, prom_size_buckets;
		uint32_t prom_ttl_ms;
		char *metrics_endpoint, *traces_endpoint; /* base URLs */
		bool set[128]; /* which settings were given explicitly, by table index */
	} raw;
};

/* Exit code for invalid configuration. */
#define CONFIG_EXIT_INVALID 2

/* Parses argv and the environment, loads the YAML file. Returns 0 and fills
 * cfg; or prints a one-line error naming the problem and returns
 * CONFIG_EXIT_INVALID; or returns 1 after --help/--version (exit 0). */
int config__load(struct rastro_config *cfg, int argc, char **argv);
void config__free(struct rastro_config *cfg);
/* The file stage of config__load on YAML text (no command line, no
 * environment variables but those finish() reads): the fuzz target's entry.
 * cfg is always filled enough for config__free, also on error. */
int config__load_text(struct rastro_config *cfg, const char *text, size_t len);

/* Markdown table of every setting, from the settings table (docs generator). */
void config__write_reference(FILE *out);
/* Plain-text settings summary for --help. */
void config__write_help(FILE *out);

/* Whether a setting (by its YAML key) was given in the file, the environment
 * or the command line rather than left at its default. */
bool config__is_set(const struct rastro_config *cfg, const char *key);

/* Helpers shared with other modules and the unit tests. */
int config__parse_ports(const char *text, struct port_ranges *out);
bool config__port_in(const struct port_ranges *ports, uint16_t port);
/* W3C-baggage-like "k=v,k2=v2" with percent-decoding (OTEL_RESOURCE_ATTRIBUTES,
 * OTEL_EXPORTER_OTLP_HEADERS). Returns -1 on malformed input, out untouched. */
int config__parse_key_values(const char *text, struct key_values *out);
/* OTLP exporter endpoint rules: signal_env is used as is; otherwise base
 * (from env or file) gets "v1/<signal>" appended. Returns malloc'd URL. */
char *config__signal_url(const char *base, const char *signal);

#endif
