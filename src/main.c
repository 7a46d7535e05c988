/*
 * rastro: zero-code observability for Linux services.
 *
 *   config ─► capture (BPF) ─► discovery / conntrack ─► protocol parsers
 *          ─► request records ─► routes ─► traces ─► printer, metrics, exporters
 *
 * One thread runs everything from one event loop: no locks on the hot path.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include "app.h"
#include "capture/capture.h"
#include "common/loop.h"
#include "config/config.h"
#include "discover/discover.h"
#include "export/printer.h"
#include "log.h"
#include "protocols/conntrack.h"
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
	if (!app__route(app, r))
		return; /* routes.ignored_patterns */
	app__trace(app, r);
	if (app->cfg.trace_printer != PRINTER_DISABLED) {
		printer__print(stdout, r, &app->cfg, app->unix_offset_ns);
		fflush(stdout);
	}
	app__measure(app, r);
	if (r->sampled)
		app__export_span(app, r);
}

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
	case RASTRO_EV_CLOSE:
		if (size >= sizeof(struct rastro_close_event))
			conntrack__on_close(app->ct, data);
		break;
	case RASTRO_EV_EXEC:
	case RASTRO_EV_FORK:
	case RASTRO_EV_EXIT:
	case RASTRO_EV_LISTEN:
		if (size >= sizeof(struct rastro_proc_event))
			discovery__on_event(app->disc, data);
		break;
	}
}

static void drain(void *ctx)
{
	struct app *app = ctx;
	capture__drain(app->cap);
}

static void on_ring(void *ctx, int fd, uint32_t events)
{
	(void)fd;
	(void)events;
	drain(ctx);
}

/* The ring buffer wakes the loop only past ebpf.wakeup_bytes; this timer
 * bounds how long an event waits otherwise. */
static void poll_tick(void *ctx)
{
	struct app *app = ctx;
	refresh_clock(app);
	drain(app);
	loop__after(app->loop, app->cfg.poll_ms, poll_tick, app);
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
		 "conn_map_full=%llu control_ringbuf_full=%llu traced_map_full=%llu; "
		 "truncated payloads=%llu; parser: events_lost=%llu pipeline_overflow=%llu "
		 "parse_errors=%llu",
		 (unsigned long long)stats[RASTRO_STAT_DATA_EVENTS], (unsigned long long)cs.requests,
		 (unsigned long long)stats[RASTRO_LOSS_RINGBUF_FULL],
		 (unsigned long long)stats[RASTRO_LOSS_CONN_MAP_FULL],
		 (unsigned long long)stats[RASTRO_LOSS_CONTROL_RINGBUF],
		 (unsigned long long)stats[RASTRO_LOSS_TRACED_MAP_FULL],
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
	if (app__start_stages(app))
		return -1;
	loop__watch(app->loop, capture__fd(app->cap), EPOLLIN, on_ring, app);
	loop__set_idle(app->loop, drain, app);
	loop__after(app->loop, app->cfg.poll_ms, poll_tick, app);
	loop__after(app->loop, app->cfg.discovery_poll_ms, discovery_tick, app);
	log_info("rastro %s started: %d discovery entr%s, capture %u bytes per syscall", RASTRO_VERSION,
		 app->cfg.rule_count, app->cfg.rule_count == 1 ? "y" : "ies", app->cfg.capture_bytes);
	discovery__scan(app->disc);
	return 0;
}

static void stop(struct app *app)
{
	if (app->cap)
		capture__drain(app->cap);
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
}

int main(int argc, char **argv)
{
	struct app app = {.signal_fd = -1};
	int rc = config__load(&app.cfg, argc, argv);
	if (rc == 1)
		return 0;
	if (rc)
		return rc;
	log__set_level(app.cfg.log_level);
	log__attach_libbpf();
	refresh_clock(&app);
	setvbuf(stdout, NULL, _IOFBF, 1 << 16);

	rc = start(&app) ? 1 : 0;
	if (!rc)
		loop__run(app.loop);
	stop(&app);
	config__free(&app.cfg);
	return rc;
}
