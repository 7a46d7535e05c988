#include "export/resource.h"

#include <string.h>
#include <unistd.h>

#include "discover/discover.h"
#include "version.h"

const char *resource__language(const char *exe_path)
{
	static const struct {
		const char *prefix, *language;
	} known[] = {
		{"perl", "perl"},   {"python", "python"}, {"java", "java"}, {"node", "nodejs"},
		{"ruby", "ruby"},   {"php", "php"},       {"dotnet", "dotnet"}, {"beam", "erlang"},
		{"erl", "erlang"},  {"cobcrun", "cobol"},
	};
	const char *base = strrchr(exe_path, '/');
	base = base ? base + 1 : exe_path;
	for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
		if (!strncmp(base, known[i].prefix, strlen(known[i].prefix)))
			return known[i].language;
	return "native";
}

static const char *hostname(void)
{
	static char name[256];
	if (!name[0] && gethostname(name, sizeof(name) - 1))
		strcpy(name, "localhost");
	return name;
}

static void add(struct attr *out, int *n, const char *key, const char *value)
{
	for (int i = 0; i < *n; i++)
		if (!strcmp(out[i].key, key))
			return; /* first writer wins: discovery over OTEL_RESOURCE_ATTRIBUTES */
	out[*n] = (struct attr){.key = key, .type = ATTR_STRING, .str = value, .len = strlen(value)};
	(*n)++;
}

int resource__attributes(const struct service *s, const struct rastro_config *cfg,
			 struct attr *out)
{
	int n = 0;
	add(out, &n, "service.name", s->name);
	if (s->namespace_[0])
		add(out, &n, "service.namespace", s->namespace_);
	add(out, &n, "service.instance.id", s->instance_id);
	add(out, &n, "telemetry.sdk.name", "rastro");
	add(out, &n, "telemetry.sdk.language", resource__language(s->exe_path));
	add(out, &n, "telemetry.sdk.version", RASTRO_VERSION);
	add(out, &n, "host.name", hostname());
	add(out, &n, "process.executable.path", s->exe_path);
	out[n++] = (struct attr){.key = "process.pid", .type = ATTR_INT, .num = s->root_pid};
	for (int i = 0; i < cfg->resource_attributes.count && n < RESOURCE_MAX_ATTRS; i++)
		add(out, &n, cfg->resource_attributes.key[i], cfg->resource_attributes.value[i]);
	return n;
}
