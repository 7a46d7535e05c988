/* Process discovery: decides which processes are traced, from a /proc scan at
 * start, the kernel's exec/fork/exit/listen events, and a periodic rescan. */
#ifndef RASTRO_DISCOVER_H
#define RASTRO_DISCOVER_H

#include <stdbool.h>
#include <stdint.h>

#include "bpf/rastro.h"
#include "config/config.h"

/* One instrumented service instance: a process selected by a discovery entry,
 * together with the processes it forks. Reference-counted: records, spans and
 * metric series that name it keep it alive after its processes exit. */
struct service {
	uint32_t id;        /* the kernel's service_id for its processes */
	uint32_t refs;
	uint32_t processes; /* live processes that carry this id */
	uint32_t root_pid;
	int rule;           /* index into cfg->rules */
	char name[128];
	char namespace_[128];
	char instance_id[192];
	char exe_path[256];
};

struct discovery;
struct capture;

/* Callback run when a process starts or stops being traced (for self-metrics
 * and logs). */
int discovery__open(struct discovery **out, const struct rastro_config *cfg,
		    struct capture *cap);
void discovery__close(struct discovery *d);

/* Full /proc scan: traces every matching process not yet traced. */
int discovery__scan(struct discovery *d);
/* EXEC, FORK, EXIT and LISTEN events from the kernel. */
void discovery__on_event(struct discovery *d, const struct rastro_proc_event *ev);

/* The service a kernel service_id names, or NULL. */
struct service *discovery__service(struct discovery *d, uint32_t service_id);
void service__ref(struct service *s);
void service__unref(struct service *s);

/* Number of traced processes, for self-metrics. */
uint32_t discovery__traced_processes(const struct discovery *d);

/* Glob match used for exe_path (fnmatch without FNM_PATHNAME: '*' also
 * matches '/'), exposed for unit tests. */
bool discovery__exe_matches(const char *glob, const char *exe_path);

#endif
