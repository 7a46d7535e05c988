/* libFuzzer target: the configuration loader on YAML text (config__load_text:
 * defaults, the YAML file stage, the final checks), as rastro reads a
 * beyla.yml. Checks what the rest of rastro relies on after a successful
 * load: at least one discovery entry, each with a selector; a power-of-two
 * ring buffer; ascending buckets; NUL-terminated strings. config__free runs
 * after every input, so leaks on error paths are found too. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "log.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	/* The loader's one-line errors would drown libFuzzer's output; the
	 * sanitizers write to fd 2 directly and are not affected. */
	FILE *null = fopen("/dev/null", "w");
	if (null)
		stderr = null;
	log__set_level(LOG_OFF);
	/* finish() reads these: the outcome must depend on the input only. */
	static const char *const vars[] = {
		"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
		"OTEL_RESOURCE_ATTRIBUTES"};
	for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
		unsetenv(vars[i]);
	return 0;
}

static void check_floats(const struct float_list *l)
{
	if (l->count < 1 || l->count > CONFIG_MAX_LIST)
		abort();
	for (int i = 1; i < l->count; i++)
		if (!(l->value[i - 1] < l->value[i]))
			abort();
}

static size_t touch(const char *s)
{
	return s ? strlen(s) : 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct rastro_config cfg;
	int rc = config__load_text(&cfg, (const char *)data, size);
	if (rc == 0) {
		size_t n = 0;
		if (cfg.rule_count < 1 || cfg.rule_count > CONFIG_MAX_LIST)
			abort();
		for (int i = 0; i < cfg.rule_count; i++) {
			const struct instrument_rule *r = &cfg.rules[i];
			if (!r->open_ports.count && !r->exe_path)
				abort();
			for (int p = 0; p < r->open_ports.count; p++)
				if (!r->open_ports.range[p].lo ||
				    r->open_ports.range[p].lo > r->open_ports.range[p].hi)
					abort();
			n += touch(r->exe_path) + touch(r->name) + touch(r->namespace_);
		}
		uint32_t rb = cfg.ring_buffer_bytes;
		if (rb < 65536 || (rb & (rb - 1)) || cfg.wakeup_bytes > rb / 2)
			abort();
		if (cfg.capture_bytes < 64 || cfg.capture_bytes > 4096)
			abort();
		check_floats(&cfg.duration_buckets);
		check_floats(&cfg.size_buckets);
		if (!cfg.prom_path || cfg.prom_path[0] != '/')
			abort();
		n += touch(cfg.service_name) + touch(cfg.service_namespace) +
		     touch(cfg.otlp_metrics.endpoint) + touch(cfg.otlp_traces.endpoint) +
		     touch(cfg.prom_address);
		for (int i = 0; i < cfg.route_patterns.count; i++)
			n += touch(cfg.route_patterns.item[i]);
		for (int i = 0; i < cfg.otlp_traces.headers.count; i++)
			n += touch(cfg.otlp_traces.headers.key[i]) +
			     touch(cfg.otlp_traces.headers.value[i]);
		/* The endpoints that finish() accepted are URLs. */
		if (cfg.otlp_traces.endpoint && strncmp(cfg.otlp_traces.endpoint, "http", 4))
			abort();
		(void)n;
	} else if (rc != CONFIG_EXIT_INVALID) {
		abort();
	}
	config__free(&cfg);
	return 0;
}
