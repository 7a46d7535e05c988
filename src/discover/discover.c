#include "discover/discover.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fnmatch.h>
#include <limits.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "capture/capture.h"
#include "common/u64map.h"
#include "common/utf8.h"
#include "log.h"

/* A listening TCP socket of a network namespace. */
struct listener {
	uint64_t inode;
	uint16_t port;
};

/* The listening sockets of one network namespace, kept across scans: see
 * netns_listeners. */
struct listeners {
	uint64_t netns;     /* its inode; 0: a free slot */
	uint64_t loaded_ms; /* CLOCK_MONOTONIC */
	uint32_t gen;       /* listen_gen when loaded */
	uint32_t scan;      /* scan_gen when loaded */
	int count, cap;
	struct listener *items;
};

#define NETNS_CACHED 32
#define LISTENERS_MAX_AGE_MS 30000

struct discovery {
	const struct rastro_config *cfg;
	struct capture *cap;
	struct service *services; /* slots, indexed by service id */
	uint32_t nservices;
	uint32_t next_slot;       /* round robin: a freed id is reused late */
	struct u64map pids;       /* traced tgid -> service id + 1 */
	uint32_t self;
	uint64_t self_netns;
	/* Bumped by every listen() of the machine (RASTRO_EV_LISTEN): the
	 * cached listeners of every namespace are read again after one. */
	uint32_t listen_gen;
	/* Bumped by every scan: rastro's own namespace, read through socket
	 * diagnostics (cheap), is read again by each. */
	uint32_t scan_gen;
	struct listeners netns[NETNS_CACHED];
	struct listeners unknown_netns; /* a process whose namespace rastro cannot read */
	/* Processes a scan examined and did not select, tgid -> the inode
	 * number of their /proc directory: see discovery__scan. */
	struct u64map examined;
	uint64_t losses; /* the kernel's lost control events and skipped runs, last scan */
	uint64_t full_scan_ms; /* when a scan last examined every process */
	uint64_t full_wait_ms; /* and how long until the next one */
	char hostname[64];
	bool any_exe_rule;
	bool lose_fork_events; /* RASTRO_SELFTEST_LOSE_FORK_EVENTS=1: as if the
				* control ring were full at every fork */
};

bool discovery__exe_matches(const char *glob, const char *exe_path)
{
	return fnmatch(glob, exe_path, 0) == 0;
}

void service__ref(struct service *s)
{
	s->refs++;
}

void service__unref(struct service *s)
{
	if (s && s->refs)
		s->refs--;
}

struct service *discovery__service(struct discovery *d, uint32_t id)
{
	if (id >= d->nservices || !d->services[id].refs)
		return NULL;
	return &d->services[id];
}

uint32_t discovery__traced_processes(const struct discovery *d)
{
	return d->pids.count;
}

static int read_exe(uint32_t pid, char *buf, size_t len)
{
	static bool warned;
	char path[64];
	snprintf(path, sizeof(path), "/proc/%u/exe", pid);
	ssize_t n = readlink(path, buf, len - 1);
	if (n < 0) {
		/* Without CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH, other users'
		 * processes are invisible: say so once instead of finding nothing. */
		if ((errno == EACCES || errno == EPERM) && !warned) {
			warned = true;
			log_warn("cannot read %s (%s): discovery needs CAP_SYS_PTRACE and "
				 "CAP_DAC_READ_SEARCH to see processes of other users; they are "
				 "not instrumented",
				 path, strerror(errno));
		}
		return -1;
	}
	buf[n] = '\0';
	/* A binary replaced on disk shows as "/path (deleted)". */
	char *del = strstr(buf, " (deleted)");
	if (del && del[10] == '\0')
		*del = '\0';
	return 0;
}

static uint32_t read_ppid(uint32_t pid)
{
	char path[64], buf[512];
	snprintf(path, sizeof(path), "/proc/%u/stat", pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return 0;
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	/* comm may contain spaces and parentheses: parse after the last ')'. */
	char *p = strrchr(buf, ')');
	unsigned ppid = 0;
	if (!p || sscanf(p + 1, " %*c %u", &ppid) != 1)
		return 0;
	return ppid;
}

static uint64_t read_netns(uint32_t pid)
{
	char path[64], link[64];
	snprintf(path, sizeof(path), "/proc/%u/ns/net", pid);
	ssize_t n = readlink(path, link, sizeof(link) - 1);
	if (n < 0)
		return 0;
	link[n] = '\0';
	unsigned long long ino = 0;
	sscanf(link, "net:[%llu]", &ino);
	return ino;
}

static bool add_listener(struct listeners *l, uint64_t inode, uint16_t port)
{
	if (l->count == l->cap) {
		int ncap = l->cap ? l->cap * 2 : 32;
		struct listener *n = realloc(l->items, ncap * sizeof(*n));
		if (!n)
			return false;
		l->items = n;
		l->cap = ncap;
	}
	l->items[l->count++] = (struct listener){inode, port};
	return true;
}

static void load_listeners_file(const char *path, struct listeners *l)
{
	FILE *f = fopen(path, "r");
	char line[512];
	if (!f)
		return;
	if (!fgets(line, sizeof(line), f)) { /* header */
		fclose(f);
		return;
	}
	while (fgets(line, sizeof(line), f)) {
		char local[128];
		unsigned state;
		unsigned long long inode;
		/* sl local rem st tx:rx tr:tm retr uid timeout inode */
		if (sscanf(line, " %*s %127s %*s %x %*s %*s %*s %*s %*s %llu", local, &state, &inode) != 3)
			continue;
		if (state != TCP_LISTEN)
			continue;
		char *colon = strrchr(local, ':');
		if (!colon)
			continue;
		if (!add_listener(l, inode, (uint16_t)strtoul(colon + 1, NULL, 16)))
			break;
	}
	fclose(f);
}

/* The listening TCP sockets of family in rastro's own network namespace,
 * from the kernel's socket diagnostics (what `ss -lt` asks). Only the
 * listening hash is walked: /proc/PID/net/tcp and tcp6 walk every bucket of
 * the established hash as well, about 4 ms each on this project's reference
 * machine (262,144 buckets), which was most of an idle rastro's CPU. -1 when
 * the kernel does not answer (no inet_diag): /proc then. */
static int diag_listeners(int family, struct listeners *l)
{
	int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
	if (fd < 0)
		return -1;
	struct {
		struct nlmsghdr nlh;
		struct inet_diag_req_v2 req;
	} msg = {
		.nlh = {.nlmsg_len = sizeof(msg),
			.nlmsg_type = SOCK_DIAG_BY_FAMILY,
			.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP,
			.nlmsg_seq = 1},
		.req = {.sdiag_family = (uint8_t)family,
			.sdiag_protocol = IPPROTO_TCP,
			.idiag_states = 1u << TCP_LISTEN},
	};
	struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
	int start = l->count, rc = -1;
	if (sendto(fd, &msg, sizeof(msg), 0, (struct sockaddr *)&kernel, sizeof(kernel)) < 0)
		goto out;
	for (;;) {
		long buf[16384 / sizeof(long)];
		ssize_t n = recv(fd, buf, sizeof(buf), 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			goto out;
		for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, n); h = NLMSG_NEXT(h, n)) {
			if (h->nlmsg_type == NLMSG_DONE) {
				rc = 0;
				goto out;
			}
			if (h->nlmsg_type == NLMSG_ERROR)
				goto out;
			if (h->nlmsg_len < NLMSG_LENGTH(sizeof(struct inet_diag_msg)))
				continue;
			const struct inet_diag_msg *m = NLMSG_DATA(h);
			if (m->idiag_state == TCP_LISTEN &&
			    !add_listener(l, m->idiag_inode, ntohs(m->id.idiag_sport)))
				goto out;
		}
	}
out:
	close(fd);
	if (rc)
		l->count = start; /* partial: the caller reads /proc instead */
	return rc;
}

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/*
 * The listening sockets of pid's network namespace. Each namespace's
 * are read once and kept (NETNS_CACHED namespaces) until the next listen()
 * anywhere on the machine (every one is an event: listen_gen), and for
 * rastro's own namespace until the next scan, for the others
 * LISTENERS_MAX_AGE_MS: a listen event can be lost (a full ring), and the
 * scan is what finds its server then. Rastro's own namespace is asked
 * through socket diagnostics, others through /proc/PID/net/tcp{,6} (about
 * 4 ms a file here): a netlink socket answers for its own namespace only,
 * and entering another takes CAP_SYS_ADMIN, which rastro gives up after
 * start-up.
 */
static struct listeners *netns_listeners(struct discovery *d, uint32_t pid)
{
	uint64_t netns = read_netns(pid), now = now_ms();
	struct listeners *l = NULL, *oldest = &d->netns[0];
	if (!netns)
		l = &d->unknown_netns; /* never taken as still valid */
	for (int i = 0; i < NETNS_CACHED && !l; i++) {
		struct listeners *c = &d->netns[i];
		if (c->netns == netns) {
			l = c;
			break;
		}
		if (c->loaded_ms < oldest->loaded_ms)
			oldest = c;
	}
	bool own = netns && netns == d->self_netns;
	if (l && netns && l->gen == d->listen_gen &&
	    (own ? l->scan == d->scan_gen : now - l->loaded_ms < LISTENERS_MAX_AGE_MS))
		return l;
	if (!l)
		l = oldest; /* a free slot has loaded_ms 0 */
	l->netns = netns;
	l->loaded_ms = now;
	l->gen = d->listen_gen;
	l->scan = d->scan_gen;
	l->count = 0;
	char path[64];
	if (!own || diag_listeners(AF_INET, l)) {
		snprintf(path, sizeof(path), "/proc/%u/net/tcp", pid);
		load_listeners_file(path, l);
	}
	if (!own || diag_listeners(AF_INET6, l)) {
		snprintf(path, sizeof(path), "/proc/%u/net/tcp6", pid);
		load_listeners_file(path, l);
	}
	return l;
}

/* Calls back with every TCP port pid listens on; stops when fn returns true.
 * Its namespace's listening sockets are read once it is seen to hold a
 * socket: in another namespace (a container's) that read costs about 7 ms
 * here (netns_listeners: tcp and tcp6), and many processes there hold
 * none (a pause container, a health check's shell). */
static bool any_listening_port(struct discovery *d, uint32_t pid,
			       bool (*fn)(uint16_t port, const void *arg), const void *arg)
{
	const struct listeners *cache = NULL;
	char path[64];
	snprintf(path, sizeof(path), "/proc/%u/fd", pid);
	DIR *dir = opendir(path);
	if (!dir)
		return false;
	bool found = false;
	struct dirent *de;
	while (!found && (de = readdir(dir))) {
		char fdpath[320], link[64];
		if (de->d_name[0] == '.')
			continue;
		snprintf(fdpath, sizeof(fdpath), "%s/%s", path, de->d_name);
		ssize_t n = readlink(fdpath, link, sizeof(link) - 1);
		if (n <= 8 || strncmp(link, "socket:[", 8))
			continue;
		link[n] = '\0';
		uint64_t inode = strtoull(link + 8, NULL, 10);
		if (!cache && !(cache = netns_listeners(d, pid))->count)
			break; /* it listens on nothing there */
		for (int i = 0; i < cache->count; i++)
			if (cache->items[i].inode == inode && fn(cache->items[i].port, arg)) {
				found = true;
				break;
			}
	}
	closedir(dir);
	return found;
}

static bool port_in_rule(uint16_t port, const void *arg)
{
	return config__port_in(&((const struct instrument_rule *)arg)->open_ports, port);
}

enum port_check {
	PORTS_SCAN,    /* read the process's listening sockets from /proc */
	PORTS_EVENT,   /* only the port of a listen event */
	PORTS_SKIP,    /* entries with port selectors cannot match */
};

/* Index of the first discovery entry the process matches, or -1. */
static int match_rule(struct discovery *d, uint32_t pid, const char *exe, enum port_check how,
		      uint16_t event_port)
{
	for (int i = 0; i < d->cfg->rule_count; i++) {
		const struct instrument_rule *r = &d->cfg->rules[i];
		if (r->exe_path && !discovery__exe_matches(r->exe_path, exe))
			continue;
		if (r->open_ports.count) {
			if (how == PORTS_SKIP)
				continue;
			if (how == PORTS_EVENT) {
				if (!config__port_in(&r->open_ports, event_port))
					continue;
			} else if (!any_listening_port(d, pid, port_in_rule, r)) {
				continue;
			}
		}
		return i;
	}
	return -1;
}

static struct service *alloc_service(struct discovery *d)
{
	for (uint32_t n = 0; n < d->nservices; n++) {
		uint32_t id = (d->next_slot + n) % d->nservices;
		if (!d->services[id].refs) {
			d->next_slot = id + 1;
			struct service *s = &d->services[id];
			memset(s, 0, sizeof(*s));
			s->id = id;
			return s;
		}
	}
	return NULL;
}

static void base_name(const char *path, char *out, size_t len)
{
	const char *slash = strrchr(path, '/');
	const char *base = slash ? slash + 1 : path;
	/* Whole characters only when it has to be cut. */
	size_t n = utf8__sanitize(base, strlen(base), out, len - 1);
	out[n] = '\0';
}

static bool mark_server_port(uint16_t port, const void *arg)
{
	capture__server_port((struct capture *)arg, port);
	return false; /* every one */
}

static int trace_pid(struct discovery *d, uint32_t pid, struct service *s)
{
	int err = capture__trace(d->cap, pid, s->id);
	if (err) {
		log_warn("cannot trace process %u (%s): %s (ebpf.max_processes is %u)", pid, s->name,
			 strerror(-err), d->cfg->max_processes);
		return err;
	}
	if (u64map__put(&d->pids, pid, (void *)(uintptr_t)(s->id + 1))) {
		capture__untrace(d->cap, pid);
		return -ENOMEM;
	}
	s->processes++;
	service__ref(s);
	/* The ports it listens on already (a later listen() is an event; a
	 * child forked once it is traced shares its parent's). */
	any_listening_port(d, pid, mark_server_port, d->cap);
	return 0;
}

/* Forgets pid in user space (the kernel entry is already gone or removed). */
static void forget_pid(struct discovery *d, uint32_t pid)
{
	void *v = u64map__remove(&d->pids, pid);
	if (!v)
		return;
	struct service *s = &d->services[(uintptr_t)v - 1];
	if (s->processes)
		s->processes--;
	service__unref(s);
	if (!s->processes)
		log_info("service %s%s%s (pid %u) is no longer running", s->namespace_,
			 s->namespace_[0] ? "/" : "", s->name, s->root_pid);
}

static int start_service(struct discovery *d, uint32_t pid, int rule, const char *exe)
{
	const struct instrument_rule *r = &d->cfg->rules[rule];
	struct service *s = alloc_service(d);
	if (!s) {
		log_warn("cannot trace process %u: ebpf.max_processes (%u) services are in use", pid,
			 d->cfg->max_processes);
		return -ENOSPC;
	}
	s->root_pid = pid;
	s->rule = rule;
	/* A file name is any bytes; what rastro reports is UTF-8. */
	size_t n = utf8__sanitize(exe, strlen(exe), s->exe_path, sizeof(s->exe_path) - 1);
	s->exe_path[n] = '\0';
	if (r->name)
		snprintf(s->name, sizeof(s->name), "%s", r->name);
	else if (d->cfg->service_name)
		snprintf(s->name, sizeof(s->name), "%s", d->cfg->service_name);
	else
		base_name(s->exe_path, s->name, sizeof(s->name));
	const char *ns = r->namespace_ ? r->namespace_ : d->cfg->service_namespace;
	snprintf(s->namespace_, sizeof(s->namespace_), "%s", ns ? ns : "");
	snprintf(s->instance_id, sizeof(s->instance_id), "%s:%u", d->hostname, pid);
	int err = trace_pid(d, pid, s);
	if (err)
		return err;
	log_info("instrumenting pid %u (%s) as service %s%s%s", pid, exe, s->namespace_,
		 s->namespace_[0] ? "/" : "", s->name);
	return 0;
}

/* Traces the descendants of pid that already exist: a prefork server forks
 * its workers right after listen(), before rastro has reacted to the listen
 * event, so the kernel's fork hook did not see a traced parent. */
static void trace_existing_children(struct discovery *d, uint32_t pid, struct service *s)
{
	uint32_t parents[64] = {pid};
	int nparents = 1;
	for (int depth = 0; depth < 4 && nparents; depth++) {
		uint32_t next[64];
		int nnext = 0;
		DIR *proc = opendir("/proc");
		struct dirent *de;
		while (proc && (de = readdir(proc))) {
			char *end;
			unsigned long child = strtoul(de->d_name, &end, 10);
			if (*end || !child || u64map__get(&d->pids, child))
				continue;
			uint32_t ppid = read_ppid((uint32_t)child);
			for (int i = 0; i < nparents; i++) {
				if (ppid != parents[i])
					continue;
				if (!trace_pid(d, (uint32_t)child, s)) {
					log_debug("pid %u forked %lu before being traced: traced as %s",
						  ppid, child, s->name);
					if (nnext < 64)
						next[nnext++] = (uint32_t)child;
				}
				break;
			}
		}
		if (proc)
			closedir(proc);
		memcpy(parents, next, sizeof(uint32_t) * (size_t)nnext);
		nparents = nnext;
	}
}

/* Evaluates pid against the discovery entries and traces or untraces it. */
static void evaluate(struct discovery *d, uint32_t pid, enum port_check how, uint16_t port)
{
	char exe[PATH_MAX];
	if (pid == d->self || read_exe(pid, exe, sizeof(exe)))
		return;
	int rule = match_rule(d, pid, exe, how, port);
	void *cur = u64map__get(&d->pids, pid);
	if (cur) {
		struct service *s = &d->services[(uintptr_t)cur - 1];
		/* The service's own process exec'd the same program again (a hot
		 * restart): nothing changes. */
		if (pid == s->root_pid && rule == s->rule && !strcmp(exe, s->exe_path))
			return;
		/* A forked child that exec'd a program (a CGI, a `sh -c`, another
		 * server) is no longer its parent's worker: it becomes a service
		 * instance of its own if it matches an entry, else untraced. */
		capture__untrace(d->cap, pid);
		forget_pid(d, pid);
	}
	if (rule >= 0 && !start_service(d, pid, rule, exe))
		trace_existing_children(d, pid,
					&d->services[(uintptr_t)u64map__get(&d->pids, pid) - 1]);
}

/* Whether the kernel lost a control event (exec, listen, fork, exit) or
 * skipped a program run since the last call. The lost one may have been a
 * listen(): every namespace's cached listeners are read again. */
static bool events_lost(struct discovery *d)
{
	uint64_t stats[RASTRO_STAT__COUNT];
	bool lost = true;
	if (!capture__stats(d->cap, stats)) {
		uint64_t n = stats[RASTRO_LOSS_CONTROL_RINGBUF] + capture__skipped_runs(d->cap);
		lost = n != d->losses;
		d->losses = n;
	}
	if (lost)
		d->listen_gen++;
	return lost;
}

/*
 * The scan, a safety net behind the kernel's events (docs/architecture.md,
 * "Discovery"). Examining a process reads its executable's link and, for
 * the entries with open_ports, the link of every file descriptor it has:
 * about 5 µs each here, so a host's every fd every 5 s (200 processes with
 * 50 each: 10 ms of CPU a second). A process examined and not selected is
 * examined again only when something could have changed the answer without
 * an event rastro saw:
 * - it is new: its /proc directory is not the one examined (a reused pid
 *   gets a new inode, as /proc/PID of the old process is gone);
 * - it exec'd (discovery__on_event forgets it): a new program, and a
 *   child that inherited a listening socket between its fork and its exec;
 * - the kernel lost a control event or skipped a program run since the
 *   last scan (a listen() unseen), or a while after the last scan that
 *   examined every process (a listening socket passed over a unix socket
 *   to a running process): FULL_SCAN_MS, or FULL_SCAN_SHARE times the CPU
 *   time that scan took when longer, so that on a host with very many
 *   descriptors these scans take at most a thousandth of a CPU.
 */
#define FULL_SCAN_MS 60000
#define FULL_SCAN_SHARE 1000

static uint64_t cpu_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000 + (uint64_t)ts.tv_nsec;
}

int discovery__scan(struct discovery *d)
{
	DIR *proc = opendir("/proc");
	if (!proc)
		return error("cannot read /proc: %s", strerror(errno));
	d->scan_gen++;
	uint64_t now = now_ms(), cpu0 = cpu_ns();
	bool full = events_lost(d) || !d->full_scan_ms || now - d->full_scan_ms >= d->full_wait_ms;
	struct u64map examined;
	u64map__init(&examined);
	uint32_t *found = NULL;
	size_t nfound = 0, cap = 0;
	struct dirent *de;
	while ((de = readdir(proc))) {
		char *end;
		unsigned long pid = strtoul(de->d_name, &end, 10);
		if (*end || !pid || pid == d->self)
			continue;
		if (u64map__get(&d->pids, pid))
			continue;
		/* The inode of /proc/PID, never 0 there (0 would never match). */
		void *ino = (void *)(uintptr_t)de->d_ino;
		if (!full && ino && u64map__get(&d->examined, pid) == ino) {
			u64map__put(&examined, pid, ino);
			continue;
		}
		char exe[PATH_MAX];
		int rule = -1;
		/* No executable: a kernel thread, or a process that exited. */
		if (!read_exe((uint32_t)pid, exe, sizeof(exe)))
			rule = match_rule(d, (uint32_t)pid, exe, PORTS_SCAN, 0);
		if (rule < 0) {
			if (ino)
				u64map__put(&examined, pid, ino);
			continue;
		}
		if (nfound == cap) {
			cap = cap ? cap * 2 : 64;
			uint32_t *n = realloc(found, cap * 2 * sizeof(uint32_t));
			if (!n)
				break;
			found = n;
		}
		found[nfound * 2] = (uint32_t)pid;
		found[nfound * 2 + 1] = (uint32_t)rule;
		nfound++;
	}
	closedir(proc);
	u64map__free(&d->examined);
	d->examined = examined;
	if (full) {
		uint64_t cost_ms = (cpu_ns() - cpu0) / 1000000;
		d->full_scan_ms = now;
		d->full_wait_ms = cost_ms * FULL_SCAN_SHARE > FULL_SCAN_MS ? cost_ms * FULL_SCAN_SHARE
									   : FULL_SCAN_MS;
	}

	/* Prefork servers: a worker whose parent matched the same entry joins the
	 * parent's service instead of becoming one of its own. Parents first. */
	for (int pass = 0; pass < 2; pass++) {
		for (size_t i = 0; i < nfound; i++) {
			uint32_t pid = found[i * 2], rule = found[i * 2 + 1];
			if (!pid)
				continue;
			uint32_t ppid = read_ppid(pid);
			bool parent_matched = false;
			for (size_t j = 0; j < nfound && ppid; j++)
				if (j != i && found[j * 2 + 1] == rule &&
				    (found[j * 2] == ppid || u64map__get(&d->pids, ppid)))
					parent_matched = true;
			if (ppid && u64map__get(&d->pids, ppid)) {
				struct service *s =
					&d->services[(uintptr_t)u64map__get(&d->pids, ppid) - 1];
				if (s->rule == (int)rule) {
					trace_pid(d, pid, s);
					found[i * 2] = 0;
					continue;
				}
			}
			if (pass == 0 && parent_matched)
				continue; /* wait for the parent */
			char exe[PATH_MAX];
			if (!read_exe(pid, exe, sizeof(exe)))
				start_service(d, pid, (int)rule, exe);
			found[i * 2] = 0;
		}
	}
	free(found);

	/* Forget processes that vanished without an exit event (lost when the
	 * ring buffer was full). Collected first: removal reorders the map. */
	uint32_t gone[256];
	int ngone = 0;
	for (uint32_t i = 0; i < d->pids.capacity && ngone < 256; i++) {
		char path[64];
		if (!d->pids.keys[i])
			continue;
		snprintf(path, sizeof(path), "/proc/%u", (unsigned)d->pids.keys[i]);
		if (access(path, F_OK))
			gone[ngone++] = (uint32_t)d->pids.keys[i];
	}
	for (int i = 0; i < ngone; i++) {
		capture__untrace(d->cap, gone[i]);
		forget_pid(d, gone[i]);
	}
	return 0;
}

void discovery__on_event(struct discovery *d, const struct rastro_proc_event *ev)
{
	switch (ev->hdr.type) {
	case RASTRO_EV_EXEC:
		/* A traced process that exec'd is re-examined in full; others are
		 * checked against exe_path entries only (their listen() comes later
		 * and is an event of its own), and in full by the next scan. */
		u64map__remove(&d->examined, ev->pid);
		if (u64map__get(&d->pids, ev->pid))
			evaluate(d, ev->pid, PORTS_SCAN, 0);
		else if (d->any_exe_rule)
			evaluate(d, ev->pid, PORTS_SKIP, 0);
		break;
	case RASTRO_EV_LISTEN:
		d->listen_gen++;
		if (u64map__get(&d->pids, ev->pid))
			capture__server_port(d->cap, ev->port);
		else /* traced from here, its ports are marked (trace_pid) */
			evaluate(d, ev->pid, PORTS_EVENT, ev->port);
		break;
	case RASTRO_EV_FORK: {
		if (d->lose_fork_events)
			break;
		/* The kernel already traces the child under the parent's id. */
		struct service *s = discovery__service(d, ev->service_id);
		if (!s || u64map__put(&d->pids, ev->pid, (void *)(uintptr_t)(s->id + 1))) {
			capture__untrace(d->cap, ev->pid);
			break;
		}
		s->processes++;
		service__ref(s);
		log_debug("pid %u forked %u: traced as %s", ev->ppid, ev->pid, s->name);
		break;
	}
	case RASTRO_EV_EXIT:
		forget_pid(d, ev->pid);
		break;
	}
}

int discovery__open(struct discovery **out, const struct rastro_config *cfg, struct capture *cap)
{
	struct discovery *d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	d->cfg = cfg;
	d->cap = cap;
	d->nservices = cfg->max_processes;
	d->services = calloc(d->nservices, sizeof(*d->services));
	if (!d->services) {
		free(d);
		return -ENOMEM;
	}
	u64map__init(&d->pids);
	u64map__init(&d->examined);
	d->self = (uint32_t)getpid();
	d->self_netns = read_netns(d->self);
	if (gethostname(d->hostname, sizeof(d->hostname) - 1))
		snprintf(d->hostname, sizeof(d->hostname), "localhost");
	for (int i = 0; i < cfg->rule_count; i++)
		if (cfg->rules[i].exe_path)
			d->any_exe_rule = true;
	const char *lose = getenv("RASTRO_SELFTEST_LOSE_FORK_EVENTS");
	d->lose_fork_events = lose && !strcmp(lose, "1");
	*out = d;
	return 0;
}

void discovery__close(struct discovery *d)
{
	if (!d)
		return;
	u64map__free(&d->pids);
	u64map__free(&d->examined);
	for (int i = 0; i < NETNS_CACHED; i++)
		free(d->netns[i].items);
	free(d->unknown_netns.items);
	free(d->services);
	free(d);
}
