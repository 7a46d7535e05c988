/* Configuration: the seed's file, Beyla's keys, precedence, errors with file
 * and line, endpoint rules, OTEL_RESOURCE_ATTRIBUTES, ports. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "config/config.h"

static char dir[] = "/tmp/rastro-config-test-XXXXXX";

static const char *write_file(const char *name, const char *text)
{
	static char path[256];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	FILE *f = fopen(path, "w");
	fputs(text, f);
	fclose(f);
	return path;
}

/* Loads with argv {"rastro", "--config", path, extra...}; stderr to a file. */
static int load(struct rastro_config *cfg, const char *path, const char *extra, char *err,
		size_t errlen)
{
	char errpath[256];
	snprintf(errpath, sizeof(errpath), "%s/stderr", dir);
	fflush(stderr);
	int saved = dup(2);
	FILE *ef = fopen(errpath, "w");
	dup2(fileno(ef), 2);
	char *argv[5] = {"rastro", "--config", (char *)path, (char *)extra, NULL};
	int rc = config__load(cfg, extra ? 4 : 3, argv);
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	fclose(ef);
	ef = fopen(errpath, "r");
	size_t n = fread(err, 1, errlen - 1, ef);
	err[n] = '\0';
	fclose(ef);
	return rc;
}

static void clear_env(void)
{
	const char *vars[] = {"RASTRO_LOG_LEVEL", "BEYLA_LOG_LEVEL", "RASTRO_OPEN_PORT",
			      "BEYLA_OPEN_PORT", "OTEL_EXPORTER_OTLP_ENDPOINT",
			      "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
			      "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES", "RASTRO_TRACE_PRINTER",
			      "BEYLA_TRACE_PRINTER", "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG",
			      "OTEL_EXPORTER_OTLP_PROTOCOL", "RASTRO_CONFIG_PATH", "BEYLA_CONFIG_PATH"};
	for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
		unsetenv(vars[i]);
}

static const char seed[] =
	"log_level: INFO\n"
	"\n"
	"discovery:\n"
	"  instrument:\n"
	"    # Diz ao Beyla para procurar processos escutando na porta 1337\n"
	"    - open_ports: 1337\n"
	"      # Define o nome do serviço para a telemetria\n"
	"      name: perlapp\n"
	"      namespace: poc-ebpf\n"
	"\n"
	"attributes:\n"
	"  heuristic_sql_detect: true\n"
	"\n"
	"otel_traces_export:\n"
	"  endpoint: http://grafana:4318\n"
	"otel_metrics_export:\n"
	"  endpoint: http://grafana:4318\n";

static void test_seed(void)
{
	struct rastro_config cfg;
	char err[4096];
	clear_env();
	CHECK_INT(load(&cfg, write_file("seed.yml", seed), NULL, err, sizeof(err)), 0);
	CHECK_STR(err, "");
	CHECK_INT(cfg.rule_count, 1);
	CHECK_INT(cfg.rules[0].open_ports.count, 1);
	CHECK_INT(cfg.rules[0].open_ports.range[0].lo, 1337);
	CHECK_STR(cfg.rules[0].name, "perlapp");
	CHECK_STR(cfg.rules[0].namespace_, "poc-ebpf");
	CHECK_INT(cfg.rules[0].line, 6);
	CHECK(cfg.heuristic_sql_detect);
	CHECK_STR(cfg.otlp_traces.endpoint, "http://grafana:4318/v1/traces");
	CHECK_STR(cfg.otlp_metrics.endpoint, "http://grafana:4318/v1/metrics");
	CHECK_INT(cfg.log_level, LOG_INFO);
	CHECK_INT(cfg.trace_printer, PRINTER_DISABLED);
	CHECK_INT(cfg.duration_buckets.count, 14);
	CHECK(cfg.duration_buckets.value[0] == 0.005 && cfg.duration_buckets.value[13] == 10);
	CHECK_INT(cfg.sampler, SAMPLER_PARENTBASED_ALWAYS_ON);
	config__free(&cfg);

	/* Environment overrides the file; signal-specific endpoints are used as is. */
	setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://localhost:4318/base/", 1);
	setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://tempo:4318/custom", 1);
	setenv("BEYLA_LOG_LEVEL", "debug", 1);
	setenv("BEYLA_TRACE_PRINTER", "json", 1);
	setenv("RASTRO_TRACE_PRINTER", "text", 1); /* RASTRO_ wins over BEYLA_ */
	CHECK_INT(load(&cfg, write_file("seed.yml", seed), NULL, err, sizeof(err)), 0);
	CHECK_STR(cfg.otlp_metrics.endpoint, "http://localhost:4318/base/v1/metrics");
	CHECK_STR(cfg.otlp_traces.endpoint, "http://tempo:4318/custom");
	CHECK_INT(cfg.log_level, LOG_DEBUG);
	CHECK_INT(cfg.trace_printer, PRINTER_TEXT);
	config__free(&cfg);

	/* The command line overrides the environment. */
	CHECK_INT(load(&cfg, write_file("seed.yml", seed), "--log-level=ERROR", err, sizeof(err)), 0);
	CHECK_INT(cfg.log_level, LOG_ERROR);
	config__free(&cfg);
	clear_env();
}

static void test_errors(void)
{
	struct rastro_config cfg;
	char err[4096];
	clear_env();
	const char *unknown = write_file("unknown.yml", "open_port: 80\n"
							"discovery:\n"
							"  instrument:\n"
							"    - open_ports: 81\n"
							"      cmd_args: foo\n"
							"otel_traces_export:\n"
							"  endpoitn: http://x\n");
	CHECK_INT(load(&cfg, unknown, NULL, err, sizeof(err)), 0);
	CHECK(strstr(err, "unknown.yml, line 5: unknown configuration key "
			  "discovery.instrument[].cmd_args") != NULL);
	CHECK(strstr(err, "line 7: unknown configuration key otel_traces_export.endpoitn") != NULL);
	CHECK_INT(cfg.rule_count, 2); /* the entry, plus open_port */
	config__free(&cfg);

	struct {
		const char *yaml, *want;
	} bad[] = {
		{"open_port: 80\nlog_level: loud\n",
		 "line 2: log_level: expected one of DEBUG|INFO|WARN|ERROR"},
		{"open_port: 70000\n", "line 1: open_port: expected a port or a list"},
		{"discovery:\n  instrument:\n    - open_ports: 80-x\n",
		 "line 3: discovery.instrument[].open_ports: expected a port"},
		{"open_port: 80\notel_metrics_export:\n  interval: soon\n",
		 "line 3: otel_metrics_export.interval: expected a duration"},
		{"open_port: 80\notel_traces_export:\n  sampler:\n    name: sometimes\n",
		 "line 4: otel_traces_export.sampler.name: expected one of parentbased_always_on"},
		{"open_port: 80\notel_traces_export:\n  sampler:\n    arg: 2\n",
		 "line 4: otel_traces_export.sampler.arg: expected a number from 0 to 1"},
		{"open_port: 80\nprometheus_export:\n  port: [1, 2]\n",
		 "line 3: prometheus_export.port: expected a plain value"},
		{"open_port: 80\nroutes: yes\n", "line 2: routes: expected a section"},
		{"discovery:\n  instrument:\n    - name: x\n",
		 "line 3: discovery.instrument: expected each entry to have open_ports or exe_path"},
		{"log_level: INFO\n", "nothing to instrument"},
		{"open_port: 80\notel_metrics_export:\n  endpoint: grafana:4318\n",
		 "expected an http:// or https:// URL"},
		{"open_port: 80\notel_metrics_export:\n  endpoint: http://x\n  protocol: grpc\n",
		 "only http/protobuf is implemented"},
		{"open_port: 80\notel_metrics_export:\n  buckets:\n    duration_histogram: [1, 2]\n"
		 "prometheus_export:\n  buckets:\n    duration_histogram: [1, 3]\n",
		 "otel_metrics_export.buckets.duration_histogram and "
		 "prometheus_export.buckets.duration_histogram differ"},
		{"open_port: 80\nfoo: [unclosed\n", "YAML syntax"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int rc = load(&cfg, write_file("bad.yml", bad[i].yaml), NULL, err, sizeof(err));
		CHECK_INT(rc, CONFIG_EXIT_INVALID);
		if (!strstr(err, bad[i].want))
			fprintf(stderr, "case %zu: got: %s\n", i, err);
		CHECK(strstr(err, bad[i].want) != NULL);
		config__free(&cfg);
	}

	/* An invalid environment variable names itself. */
	setenv("BEYLA_OPEN_PORT", "eighty", 1);
	CHECK_INT(load(&cfg, write_file("ok.yml", "open_port: 80\n"), NULL, err, sizeof(err)),
		  CONFIG_EXIT_INVALID);
	CHECK(strstr(err, "environment variable BEYLA_OPEN_PORT (open_port)") != NULL);
	config__free(&cfg);
	clear_env();
}

static void test_helpers(void)
{
	struct port_ranges p;
	CHECK_INT(config__parse_ports("80,443, 8000-8999", &p), 0);
	CHECK_INT(p.count, 3);
	CHECK(config__port_in(&p, 8500) && config__port_in(&p, 443) && !config__port_in(&p, 9000));
	CHECK_INT(config__parse_ports("9-8", &p), -1);
	CHECK_INT(config__parse_ports("", &p), -1);
	CHECK_INT(config__parse_ports("0", &p), -1);

	struct key_values kv = {0};
	CHECK_INT(config__parse_key_values("deployment.environment=dev,team=a%20b,x=%3D", &kv), 0);
	CHECK_INT(kv.count, 3);
	CHECK_STR(kv.value[1], "a b");
	CHECK_STR(kv.value[2], "=");
	/* Malformed: the whole value is rejected and kv is left as it was. */
	CHECK_INT(config__parse_key_values("a=1,broken", &kv), -1);
	CHECK_INT(config__parse_key_values("a=%zz", &kv), -1);
	CHECK_INT(kv.count, 3);
	for (int i = 0; i < kv.count; i++) {
		free(kv.key[i]);
		free(kv.value[i]);
	}

	char *u = config__signal_url("http://h:4318", "traces");
	CHECK_STR(u, "http://h:4318/v1/traces");
	free(u);
	u = config__signal_url("http://h:4318/otlp/", "metrics");
	CHECK_STR(u, "http://h:4318/otlp/v1/metrics");
	free(u);
}

static void test_resource_attributes_env(void)
{
	struct rastro_config cfg;
	char err[4096];
	clear_env();
	setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=dev,k=v%2Cw", 1);
	CHECK_INT(load(&cfg, write_file("ok.yml", "open_port: 80\n"), NULL, err, sizeof(err)), 0);
	CHECK_INT(cfg.resource_attributes.count, 2);
	CHECK_STR(cfg.resource_attributes.value[1], "v,w");
	config__free(&cfg);
	setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment", 1);
	CHECK_INT(load(&cfg, write_file("ok.yml", "open_port: 80\n"), NULL, err, sizeof(err)), 0);
	CHECK_INT(cfg.resource_attributes.count, 0);
	CHECK(strstr(err, "OTEL_RESOURCE_ATTRIBUTES is malformed") != NULL);
	config__free(&cfg);
	clear_env();
}

/* The sampler in YAML, block and flow forms, and the environment over the file. */
static void test_sampler_yaml(void)
{
	struct rastro_config cfg;
	char err[4096];
	clear_env();
	CHECK_INT(load(&cfg,
		       write_file("sampler.yml", "open_port: 80\n"
						 "otel_traces_export: {sampler: {name: traceidratio, "
						 "arg: 0.25}}\n"),
		       NULL, err, sizeof(err)),
		  0);
	CHECK(strstr(err, "WARN") == NULL && strstr(err, "ERROR") == NULL);
	CHECK_INT(cfg.sampler, SAMPLER_TRACEIDRATIO);
	CHECK(cfg.sampler_arg == 0.25);
	config__free(&cfg);

	CHECK_INT(load(&cfg,
		       write_file("sampler.yml", "open_port: 80\n"
						 "otel_traces_export:\n"
						 "  sampler:\n"
						 "    name: parentbased_traceidratio\n"
						 "    arg: 0.125\n"),
		       NULL, err, sizeof(err)),
		  0);
	CHECK(strstr(err, "WARN") == NULL && strstr(err, "ERROR") == NULL);
	CHECK_INT(cfg.sampler, SAMPLER_PARENTBASED_TRACEIDRATIO);
	CHECK(cfg.sampler_arg == 0.125);
	config__free(&cfg);

	/* defaults: parentbased_always_on, ratio 1 */
	CHECK_INT(load(&cfg, write_file("sampler.yml", "open_port: 80\n"), NULL, err, sizeof(err)),
		  0);
	CHECK_INT(cfg.sampler, SAMPLER_PARENTBASED_ALWAYS_ON);
	CHECK(cfg.sampler_arg == 1.0);
	config__free(&cfg);

	setenv("OTEL_TRACES_SAMPLER", "always_off", 1);
	setenv("OTEL_TRACES_SAMPLER_ARG", "0.5", 1);
	CHECK_INT(load(&cfg,
		       write_file("sampler.yml", "open_port: 80\n"
						 "otel_traces_export: {sampler: {name: traceidratio, "
						 "arg: 0.25}}\n"),
		       NULL, err, sizeof(err)),
		  0);
	CHECK_INT(cfg.sampler, SAMPLER_ALWAYS_OFF);
	CHECK(cfg.sampler_arg == 0.5);
	config__free(&cfg);
	clear_env();
}

int main(void)
{
	if (!mkdtemp(dir))
		return 1;
	test_seed();
	test_errors();
	test_helpers();
	test_resource_attributes_env();
	test_sampler_yaml();
	char cmd[300];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (system(cmd))
		return 1;
	return check_done("test_config");
}
