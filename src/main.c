/*
 * rastro: zero-code observability for Linux services.
 *
 *   config ─► capture (BPF) ─► discovery / conntrack ─► protocol parsers
 *          ─► request records ─► routes ─► traces ─► printer, metrics, exporters
 *
 * One thread runs everything from one event loop: no locks on the hot path.
 */
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/capability.h>
#include <malloc.h>
#include <sys/prctl.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "app.h"
#include "capture/capture.h"
#include "common/loop.h"
#include "config/config.h"
#include "discover/discover.h"
#include "export/otlp_traces.h"
#include "export/printer.h"
#include "log.h"
#include "protocols/conntrack.h"
#include "traces/traces.h"
#include "version.h"

static uint64_t wall_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Monotonic timestamps become Unix time with one offset, re-read only when
 * the wall clock was stepped: records close in time keep exact differences. */
static void refresh_clock(struct app *app)
{
	int64_t off = (int64_t)wall_ns() - (int64_t)loop__now_ns();
	int64_t drift = off - app->unix_offset_ns;
	if (!app->unix_offset_ns || drift > 1000000 || drift < -1000000)
		app->unix_offset_ns = off;
}

/* A request began: it gets its trace context now, so that the requests it
 * causes (in this process or, through the connection, in another) can name
 * it as their parent. */
static void on_request_start(void *ctx, struct request *r)
{
	app__trace_start(ctx, r);
}

/* Every record a parser finishes passes here, in order. */
static void on_request(void *ctx, struct request *r)
{
	struct app *app = ctx;
	if (!app__route(app, r)) {
		/* routes.ignored_patterns: its trace context goes now, not after
		 * the 60 s link window (a busy health check would fill the cap) */
		app__trace_drop(app, r);
		return;
	}
	app__trace(app, r);
	if (app->cfg.trace_printer != PRINTER_DISABLED) {
		printer__print(stdout, r, &app->cfg, app->unix_offset_ns);
		fflush(stdout);
	}
	app__measure(app, r);
	if (r->sampled)
		app__export_span(app, r);
}

/* An exec or a listen() wakes the agent at once, but at most once every 2 ms
 * (rastro.bpf.c, proc_wakeup_flags): one that comes in that window after the
 * agent has drained waits for the next wakeup, which the poll timer of an
 * idle agent may put 500 ms away, and a client started that way would make
 * its first requests untraced. A drain that read such an event comes back
 * once the window is over. An exec storm costs at most one more wakeup per
 * wakeup it causes. */
#define DISCOVERY_FOLLOW_MS 3

/* A drain read an exec or listen() event. */
static bool discovery_events;

static void on_event(void *ctx, const void *data, size_t size)
{
	struct app *app = ctx;
	const struct rastro_event_hdr *hdr = data;
	if (size < sizeof(*hdr))
		return;
	switch (hdr->type) {
	case RASTRO_EV_DATA: {
		const struct rastro_data_event *ev = data;
		if (size < sizeof(*ev) || size < sizeof(*ev) + ev->captured)
			return;
		conntrack__on_data(app->ct, ev, (const char *)(ev + 1));
		break;
	}
	case RASTRO_EV_DATA_AFTER: {
		const struct rastro_after_event *a = data;
		const struct rastro_data_event *ev = (const void *)(a + 1);
		if (size < sizeof(*a) + sizeof(*ev) || size - sizeof(*a) - sizeof(*ev) < ev->captured ||
		    ev->hdr.type != RASTRO_EV_DATA)
			return;
		conntrack__on_data_after(app->ct, ev, (const char *)(ev + 1), a->cpu, a->gen);
		break;
	}
	case RASTRO_EV_BATCH: {
		const struct rastro_batch_event *b = data;
		if (size < sizeof(*b) || b->len > size - sizeof(*b))
			return;
		const uint8_t *p = (const uint8_t *)(b + 1), *end = p + b->len;
		conntrack__batch_begin(app->ct, b->cpu, b->gen);
		for (uint32_t i = 0; i < b->count; i++) {
			const struct rastro_close_event *close = (const void *)p;
			if ((size_t)(end - p) >= sizeof(*close) && close->hdr.type == RASTRO_EV_CLOSE) {
				/* A connection's end, after its events (hold_close) */
				conntrack__on_close(app->ct, close);
				p += (sizeof(*close) + 7) & ~(size_t)7;
				continue;
			}
			const struct rastro_data_event *ev = (const void *)p;
			if ((size_t)(end - p) < sizeof(*ev) ||
			    (size_t)(end - p) - sizeof(*ev) < ev->captured ||
			    ev->hdr.type != RASTRO_EV_DATA)
				break;
			conntrack__on_data(app->ct, ev, (const char *)(ev + 1));
			p += (sizeof(*ev) + ev->captured + 7) & ~(size_t)7;
		}
		conntrack__on_batch(app->ct, b->cpu, b->gen);
		break;
	}
	case RASTRO_EV_CLOSE:
		if (size >= sizeof(struct rastro_close_event))
			conntrack__on_close(app->ct, data);
		break;
	case RASTRO_EV_EXEC:
	case RASTRO_EV_LISTEN:
		discovery_events = true;
		/* fall through */
	case RASTRO_EV_FORK:
	case RASTRO_EV_EXIT:
		if (size >= sizeof(struct rastro_proc_event))
			discovery__on_event(app->disc, data);
		break;
	}
}

/* A drain hands the loop back after this many events, so that the exporters'
 * sockets are served during a long backlog (a span batch is sent only once
 * the previous one is answered; the queue would fill and drop spans): more_fd,
 * written when events remain, makes the next epoll_wait return at once. */
#define DRAIN_CHUNK 2048
static int more_fd = -1;
static bool mute_warned; /* capture__mute failed once: said so */

/* Inside a drain the agent gives its CPU back (sched_yield) every
 * YIELD_RECORDS records: a drain turns what ebpf.poll_interval gathered into
 * spans in one go (about 1 ms of CPU at 20,000 requests a second here), and
 * a server's thread woken on this CPU meanwhile waited for all of it: nginx's
 * p99 latency at 20k was 1.0 to 1.9 ms with rastro against 0.3 to 0.5 without
 * (docs/performance.md). A yield with nothing else to run returns at once;
 * the agent's share of the CPU is its weight's, as before. */
#define YIELD_RECORDS 32

static void poll_tick(void *ctx);
static int64_t poll_timer;
/* The poll timer's current interval, between ebpf.poll_interval and
 * POLL_MAX_MS (drain). */
static uint64_t poll_ms;

/* A wakeup costs this VM's kernel about 70 µs (two context switches and a
 * timer): 1.4 ms of CPU a second at 50 ms, idle or not. At a light load, 200
 * requests a second (the seed's Perl app), those wakeups were most of the
 * agent's CPU, 11 µs per request (docs/performance.md). So the wait grows,
 * doubling after each drain, up to POLL_MAX_MS (or ebpf.poll_interval when
 * longer), while drains find less than LIGHT_SHARE of ebpf.wakeup_bytes
 * (64 KiB by default), and halves, down to ebpf.poll_interval, after one
 * that found four times that; the ring buffer's wakeups at wakeup_bytes
 * keep the drains of a heavy load as they were. An event then waits up to
 * 500 ms, still well within a span batch's own wait
 * (otel_traces_export.schedule_delay, 5 s) and a metrics interval. */
#define POLL_MAX_MS 500
#define LIGHT_SHARE 16

/* Longest a CPU's held events wait for the next delivery (deliver_held):
 * the time between two deliveries, counted up to this. */
#define HELD_SPAN_MAX_MS 1000

/* The data events the CPUs hold back (rastro.bpf.c, hold_begin) go to the
 * ring buffer once per ebpf.poll_interval, from the first drain after it (or
 * now, with force): under load, when its wakeups keep the poll timer from
 * firing, as well as when idle. */
static void deliver_held(struct app *app, bool force)
{
	static uint64_t last_ns, last_span;
	static bool warned;
	uint64_t now = loop__now_ns();
	if (!force && now - last_ns < app->cfg.poll_ms * 1000000ull)
		return;
	/* What a CPU delivers now may have waited since the last delivery,
	 * while the other CPUs' later events were read: a finished request's
	 * trace context must outlive that, for its connection's other end
	 * (traces__set_grace). Twice the longer of the last two spans, as a
	 * drain can leave records for the next one. */
	uint64_t span = last_ns ? now - last_ns : app->cfg.poll_ms * 1000000ull;
	if (span > HELD_SPAN_MAX_MS * 1000000ull)
		span = HELD_SPAN_MAX_MS * 1000000ull;
	last_ns = now;
	int err = capture__flush(app->cap);
	if (err)
		span = HELD_SPAN_MAX_MS * 1000000ull; /* they wait for other reasons */
	if (app->traces) /* not when start-up failed before the stages */
		traces__set_grace(app->traces, 2 * (span > last_span ? span : last_span));
	last_span = span;
	if (err && !warned) {
		warned = true;
		log_warn("cannot deliver the data events the CPUs hold back (BPF_PROG_TEST_RUN: %s): "
			 "they wait until a CPU's batch fills, a client sends, or a connection ends",
			 strerror(-err));
	}
}

/*
 * The span queue as the drain's brake. A drain turns each record (up to 4
 * KiB of events) into spans as fast as it reads them, and the exporter
 * sends one batch at a time, between drains: after the agent is held up (a
 * busy CPU, a slow scrape) the backlog in the ring would overflow the span
 * queue (otel_traces_export.max_queue_size) and those spans were dropped
 * while the ring still had room for them. So a drain stops while the queue
 * is nearly full (otlp_traces__nearly_full), and the exporter's answers
 * (their socket wakes the loop) let it go on. It does not stop:
 * - once the ring is half full: from there, spans are dropped (counted),
 *   not events, which would cost the metrics too;
 * - when the exporter has handed no batch to its client for HOLD_MAX_MS
 *   (a backend down or too slow): the metrics must not wait for it; the
 *   spans that do not fit are dropped, as before, until it moves again.
 * While it stops, the ring's wakeups are not watched (they would wake the
 * loop for nothing) and the poll timer comes back after HOLD_RETRY_MS.
 */
#define HOLD_MAX_MS 200
#define HOLD_RETRY_MS 5

static bool ring_watched = true;
static uint64_t hold_since_ns, hold_exported;

static void on_ring(void *ctx, int fd, uint32_t events);

static bool hold_for_spans(void *ctx, uint64_t used, uint64_t size)
{
	struct app *app = ctx;
	if (!app->span_export || used >= size / 2 || !otlp_traces__nearly_full(app->span_export)) {
		hold_since_ns = 0;
		return false;
	}
	uint64_t now = loop__now_ns();
	struct otlp_traces_stats st;
	otlp_traces__stats(app->span_export, &st);
	if (!hold_since_ns || st.exported != hold_exported) { /* the exporter moved */
		hold_since_ns = now;
		hold_exported = st.exported;
	}
	return now - hold_since_ns < HOLD_MAX_MS * 1000000ull;
}

/* Runs after every wakeup of the loop, whatever woke it (the ring buffer
 * past ebpf.wakeup_bytes, an exporter's socket, a timer, the poll timer's
 * own timeout), and moves the poll timer to poll_ms after this drain: under
 * load the wakeups that happen anyway drain the ring, and that timer wakes an
 * otherwise idle agent only. A drain that finds nothing, or less than
 * 1/LIGHT_SHARE of ebpf.wakeup_bytes, doubles poll_ms (up to POLL_MAX_MS, or
 * ebpf.poll_interval when longer); one that finds four times that halves it
 * (down to ebpf.poll_interval). */
static void drain(void *ctx)
{
	struct app *app = ctx;
	uint64_t one = 1, bytes = capture__consumed(app->cap);
	bool held;
	refresh_clock(app);
	deliver_held(app, false);
	int n = 0;
	for (;;) {
		int got = capture__drain_hold(app->cap, YIELD_RECORDS, hold_for_spans, app, &held);
		n += got;
		if (got < YIELD_RECORDS || held || n >= DRAIN_CHUNK)
			break;
		sched_yield();
	}
	if (conntrack__mute_pending(app->ct))
		capture__mute_publish(app->cap);
	if (n >= DRAIN_CHUNK && more_fd >= 0 && write(more_fd, &one, sizeof(one)) < 0)
		log_debug("cannot signal the rest of the ring buffer: %s", strerror(errno));
	if (held)
		app->span_queue_waits++;
	if (held == ring_watched) {
		ring_watched = !held;
		loop__watch(app->loop, capture__fd(app->cap), held ? 0 : EPOLLIN, on_ring, app);
	}
	bytes = capture__consumed(app->cap) - bytes;
	uint64_t light = app->cfg.wakeup_bytes / LIGHT_SHARE;
	uint64_t max_ms = app->cfg.poll_ms > POLL_MAX_MS ? app->cfg.poll_ms : POLL_MAX_MS;
	if (held || !poll_ms)
		poll_ms = app->cfg.poll_ms;
	else if (!n || bytes < light)
		poll_ms = poll_ms * 2 < max_ms ? poll_ms * 2 : max_ms;
	else if (bytes >= 4 * light)
		poll_ms = poll_ms / 2 > app->cfg.poll_ms ? poll_ms / 2 : app->cfg.poll_ms;
	uint64_t next = held && HOLD_RETRY_MS < poll_ms ? HOLD_RETRY_MS : poll_ms;
	if (discovery_events && DISCOVERY_FOLLOW_MS < next)
		next = DISCOVERY_FOLLOW_MS;
	discovery_events = false;
	if (poll_timer)
		loop__cancel(app->loop, poll_timer);
	poll_timer = loop__after(app->loop, next, poll_tick, app);
}

/* conntrack's connections without a protocol rastro knows: the kernel stops
 * sending their data (rastro.bpf.c, mutes). */
static int mute(void *ctx, uint64_t conn_id, bool on)
{
	struct app *app = ctx;
	if (!on) {
		capture__unmute(app->cap, conn_id);
		return 0;
	}
	int err = capture__mute(app->cap, conn_id);
	if (err && !mute_warned) {
		mute_warned = true;
		log_warn("cannot tell the kernel to stop sending a connection's data (%s): "
			 "connections without a known protocol keep sending it, ignored "
			 "(rastro_connections_mute_failed_total)", strerror(-err));
	}
	return err;
}

/* Before a scrape (app->catch_up): what the CPUs hold and the ring buffer
 * has, read now. The drain of the scrape's own wakeup runs after it, and a
 * scrape on a kept-alive connection (Prometheus keeps them) is one wakeup:
 * it showed what the previous drain read, up to 500 ms before at a light
 * load. */
static void catch_up(struct app *app)
{
	deliver_held(app, true);
	drain(app);
}

/* The ring buffer and more_fd only wake the loop: drain, the loop's idle
 * callback, runs after every wakeup. */
static void on_more(void *ctx, int fd, uint32_t events)
{
	uint64_t n;
	(void)ctx;
	(void)events;
	if (read(fd, &n, sizeof(n)) < 0)
		log_debug("cannot read the rest-of-the-ring signal: %s", strerror(errno));
}

static void on_ring(void *ctx, int fd, uint32_t events)
{
	(void)ctx;
	(void)fd;
	(void)events;
}

/* The ring buffer wakes the loop only past ebpf.wakeup_bytes; this timer,
 * re-armed by every drain, bounds how long an event waits otherwise. */
static void poll_tick(void *ctx)
{
	poll_timer = 0;
	drain(ctx);
}

/* Memory freed after a peak (an export backlog, a burst of connections)
 * stays in rastro's heap when blocks allocated meanwhile sit above it, as the
 * heap only shrinks from its top: every 10 s, when at least 1 MiB of the heap
 * is free, its free pages are given back. */
#define MEMORY_TICK_MS 10000

static void memory_tick(void *ctx)
{
	struct app *app = ctx;
	struct mallinfo2 mi = mallinfo2();
	if (mi.fordblks >= 1u << 20)
		malloc_trim(0);
	loop__after(app->loop, MEMORY_TICK_MS, memory_tick, app);
}

static void discovery_tick(void *ctx)
{
	struct app *app = ctx;
	discovery__scan(app->disc);
	conntrack__expire(app->ct, loop__now_ns(), 15ull * 60 * 1000000000);
	loop__after(app->loop, app->cfg.discovery_poll_ms, discovery_tick, app);
}

static void on_signal(void *ctx, int fd, uint32_t events)
{
	struct app *app = ctx;
	struct signalfd_siginfo si;
	(void)events;
	if (read(fd, &si, sizeof(si)) == sizeof(si)) {
		log_info("received %s: stopping", strsignal((int)si.ssi_signo));
		loop__stop(app->loop);
	}
}

static void report_losses(struct app *app)
{
	uint64_t stats[RASTRO_STAT__COUNT];
	struct conntrack_stats cs;
	if (capture__stats(app->cap, stats))
		return;
	conntrack__stats(app->ct, &cs);
	log_info("events: %llu data events, %llu requests reported; kernel losses: ringbuf_full=%llu "
		 "conn_map_full=%llu control_ringbuf_full=%llu traced_map_full=%llu "
		 "program_skipped=%llu; "
		 "truncated payloads=%llu; parser: events_lost=%llu pipeline_overflow=%llu "
		 "parse_errors=%llu",
		 (unsigned long long)stats[RASTRO_STAT_DATA_EVENTS], (unsigned long long)cs.requests,
		 (unsigned long long)stats[RASTRO_LOSS_RINGBUF_FULL],
		 (unsigned long long)stats[RASTRO_LOSS_CONN_MAP_FULL],
		 (unsigned long long)stats[RASTRO_LOSS_CONTROL_RINGBUF],
		 (unsigned long long)stats[RASTRO_LOSS_TRACED_MAP_FULL],
		 (unsigned long long)capture__skipped_runs(app->cap),
		 (unsigned long long)stats[RASTRO_STAT_TRUNCATED],
		 (unsigned long long)cs.counters[CONN_LOST_EVENTS],
		 (unsigned long long)cs.counters[CONN_LOST_PIPELINE_OVERFLOW],
		 (unsigned long long)cs.counters[CONN_PARSE_ERRORS]);
}

static int start(struct app *app)
{
	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGTERM);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	signal(SIGPIPE, SIG_IGN);
	app->signal_fd = signalfd(-1, &mask, SFD_CLOEXEC);
	app->loop = loop__new();
	if (app->signal_fd < 0 || !app->loop)
		return error("cannot set up the event loop: %s", strerror(errno));
	loop__watch(app->loop, app->signal_fd, EPOLLIN, on_signal, app);

	int err = capture__open(&app->cap, &app->cfg, on_event, app);
	if (err)
		return err;
	if (discovery__open(&app->disc, &app->cfg, app->cap))
		return error("out of memory");
	app->ct = conntrack__new(&app->cfg, app->disc, on_request_start, on_request, app);
	if (!app->ct)
		return error("out of memory");
	conntrack__on_mute(app->ct, mute, app);
	app->catch_up = catch_up;
	if (app__start_stages(app))
		return -1;
	loop__watch(app->loop, capture__fd(app->cap), EPOLLIN, on_ring, app);
	more_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (more_fd >= 0)
		loop__watch(app->loop, more_fd, EPOLLIN, on_more, app);
	loop__set_idle(app->loop, drain, app);
	poll_timer = loop__after(app->loop, app->cfg.poll_ms, poll_tick, app);
	loop__after(app->loop, app->cfg.discovery_poll_ms, discovery_tick, app);
	loop__after(app->loop, MEMORY_TICK_MS, memory_tick, app);
	/* Loading the BPF object parsed the kernel's BTF (several MB, freed
	 * since): give those pages back rather than keep them for the life of
	 * the agent. */
	malloc_trim(0);
	log_info("rastro %s started: %d discovery entr%s, capture %u bytes per syscall", RASTRO_VERSION,
		 app->cfg.rule_count, app->cfg.rule_count == 1 ? "y" : "ies", app->cfg.capture_bytes);
	discovery__scan(app->disc);
	return 0;
}

#define CAP_BIT(c) (1ull << (c))
#ifndef CAP_PERFMON
#define CAP_PERFMON 38
#endif
#ifndef CAP_BPF
#define CAP_BPF 39
#endif

static int caps_get(uint64_t *eff, uint64_t *prm)
{
	struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3};
	struct __user_cap_data_struct d[2] = {0};
	if (syscall(SYS_capget, &hdr, d))
		return -errno;
	*eff = (uint64_t)d[1].effective << 32 | d[0].effective;
	*prm = (uint64_t)d[1].permitted << 32 | d[0].permitted;
	return 0;
}

/* Effective and permitted set to the same caps; nothing inheritable. */
static int caps_set(uint64_t eff, uint64_t prm)
{
	struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3};
	struct __user_cap_data_struct d[2] = {
		{.effective = (uint32_t)eff, .permitted = (uint32_t)prm},
		{.effective = (uint32_t)(eff >> 32), .permitted = (uint32_t)(prm >> 32)},
	};
	return syscall(SYS_capset, &hdr, d) ? -errno : 0;
}

/*
 * Once the programs are loaded and attached and the endpoint is bound, rastro
 * needs only what reading other users' /proc entries takes: CAP_SYS_PTRACE
 * (/proc/PID/exe, fd links, ns) and CAP_DAC_READ_SEARCH (/proc/PID/fd). Its
 * maps are used through descriptors it already holds, which Linux 6.5+ checks
 * against the descriptor, not the caller: that is probed with the effective
 * set cleared, and CAP_BPF (or CAP_SYS_ADMIN) is kept only on kernels that
 * still refuse. The bounding set is reduced too (when CAP_SETPCAP allows) and
 * no_new_privs set, so nothing can win the rest back.
 */
static void drop_capabilities(struct app *app)
{
	uint64_t eff = 0, prm = 0;
	if (caps_get(&eff, &prm)) {
		log_warn("cannot read this process's capabilities: %s; none dropped", strerror(errno));
		return;
	}
	uint64_t keep = prm & (CAP_BIT(CAP_SYS_PTRACE) | CAP_BIT(CAP_DAC_READ_SEARCH));
	if (caps_set(0, prm) == 0) {
		if (capture__check_map_access(app->cap))
			keep |= prm & (CAP_BIT(CAP_BPF) | CAP_BIT(CAP_SYS_ADMIN));
		if (caps_set(eff, prm)) {
			log_warn("cannot restore capabilities after the map access probe: %s",
				 strerror(errno));
			return;
		}
	}
	if (eff & CAP_BIT(CAP_SETPCAP))
		for (int c = 0; c <= 63; c++)
			if (!(keep & CAP_BIT(c)) && prctl(PR_CAPBSET_DROP, c, 0, 0, 0) &&
			    errno == EINVAL)
				break; /* past the kernel's last capability */
	prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
	prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
	int err = caps_set(keep, keep);
	if (err) {
		log_warn("cannot drop capabilities: %s; running with those it started with",
			 strerror(-err));
		return;
	}
	static const struct {
		int cap;
		const char *name;
	} names[] = {{CAP_SYS_PTRACE, "CAP_SYS_PTRACE"},
		     {CAP_DAC_READ_SEARCH, "CAP_DAC_READ_SEARCH"},
		     {CAP_BPF, "CAP_BPF"},
		     {CAP_SYS_ADMIN, "CAP_SYS_ADMIN"}};
	char kept[128] = "";
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (keep & CAP_BIT(names[i].cap))
			snprintf(kept + strlen(kept), sizeof(kept) - strlen(kept), "%s%s",
				 kept[0] ? " " : "", names[i].name);
	log_info("capabilities after start-up: %s (all others dropped)", kept[0] ? kept : "none");
}

static void stop(struct app *app)
{
	if (app->cap) {
		deliver_held(app, true);
		capture__drain(app->cap);
	}
	if (app->ct)
		conntrack__close_all(app->ct, loop__now_ns());
	if (app->cap && app->ct)
		report_losses(app);
	app__stop_stages(app);
	conntrack__free(app->ct);
	discovery__close(app->disc);
	capture__close(app->cap);
	loop__free(app->loop);
	if (app->signal_fd >= 0)
		close(app->signal_fd);
	if (more_fd >= 0)
		close(more_fd);
	more_fd = -1;
}

int main(int argc, char **argv)
{
	struct app app = {.signal_fd = -1};
	int rc = config__load(&app.cfg, argc, argv);
	if (rc) {
		/* --help/--version (1: exit 0) or invalid configuration: what was
		 * loaded before the error is freed all the same. */
		config__free(&app.cfg);
		return rc == 1 ? 0 : rc;
	}
	log__set_level(app.cfg.log_level);
	log__attach_libbpf();
	refresh_clock(&app);
	setvbuf(stdout, NULL, _IOFBF, 1 << 16);

	rc = start(&app) ? 1 : 0;
	if (!rc) {
		drop_capabilities(&app);
		loop__run(app.loop);
	}
	stop(&app);
	config__free(&app.cfg);
	return rc;
}
