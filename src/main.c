/*
 * rastro: zero-code observability for Linux services.
 *
 *   config ─► capture (BPF) ─► discovery / conntrack ─► protocol parsers
 *          ─► request records ─► traces, metrics ─► printer, Prometheus, OTLP
 *
 * One thread runs everything from an epoll loop: no locks on the hot path.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "capture/capture.h"
#include "config/config.h"
#include "discover/discover.h"
#include "export/printer.h"
#include "log.h"
#include "protocols/conntrack.h"
#include "version.h"

struct app {
	struct rastro_config cfg;
	struct capture *cap;
	struct discovery *disc;
	struct conntrack *ct;
	int64_t unix_offset_ns; /* CLOCK_REALTIME - CLOCK_MONOTONIC */
	uint64_t events;
	uint64_t rng;
};

static uint64_t now_ns(clockid_t clk)
{
	struct timespec ts;
	clock_gettime(clk, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t next_random(struct app *app)
{
	/* xorshift64*: ids only need to be unique and unpredictable enough. */
	uint64_t x = app->rng;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	app->rng = x;
	return x * 0x2545F4914F6CDD1DULL;
}

static void on_request(void *ctx, struct request *r)
{
	struct app *app = ctx;
	uint64_t a = next_random(app), b = next_random(app), c = next_random(app);
	memcpy(r->trace_id, &a, 8);
	memcpy(r->trace_id + 8, &b, 8);
	memcpy(r->span_id, &c, 8);
	r->sampled = true;
	if (app->cfg.trace_printer != PRINTER_DISABLED) {
		printer__print(stdout, r, &app->cfg, app->unix_offset_ns);
		fflush(stdout);
	}
}

static void on_event(void *ctx, const void *data, size_t size)
{
	struct app *app = ctx;
	const struct rastro_event_hdr *hdr = data;
	app->events++;
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

/* Monotonic timestamps become Unix time with one offset, re-read only when
 * the wall clock was stepped: records close in time keep exact differences. */
static void refresh_clock(struct app *app)
{
	int64_t off = (int64_t)now_ns(CLOCK_REALTIME) - (int64_t)now_ns(CLOCK_MONOTONIC);
	int64_t drift = off - app->unix_offset_ns;
	if (!app->unix_offset_ns || drift > 1000000 || drift < -1000000)
		app->unix_offset_ns = off;
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

static int run(struct app *app)
{
	int ep = -1, sfd = -1, tfd = -1, rc = 1;
	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGTERM);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	sfd = signalfd(-1, &mask, SFD_CLOEXEC);
	tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
	ep = epoll_create1(EPOLL_CLOEXEC);
	if (sfd < 0 || tfd < 0 || ep < 0) {
		error("cannot set up the event loop: %s", strerror(errno));
		goto out;
	}
	struct itimerspec its = {
		.it_interval = {app->cfg.poll_ms / 1000, (long)(app->cfg.poll_ms % 1000) * 1000000},
		.it_value = {app->cfg.poll_ms / 1000, (long)(app->cfg.poll_ms % 1000) * 1000000},
	};
	timerfd_settime(tfd, 0, &its, NULL);
	struct epoll_event ev = {.events = EPOLLIN};
	ev.data.fd = sfd;
	epoll_ctl(ep, EPOLL_CTL_ADD, sfd, &ev);
	ev.data.fd = tfd;
	epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &ev);
	ev.data.fd = capture__fd(app->cap);
	epoll_ctl(ep, EPOLL_CTL_ADD, ev.data.fd, &ev);

	uint64_t last_scan = now_ns(CLOCK_MONOTONIC);
	for (;;) {
		struct epoll_event events[8];
		int n = epoll_wait(ep, events, 8, -1);
		if (n < 0 && errno != EINTR) {
			error("event loop: %s", strerror(errno));
			goto out;
		}
		for (int i = 0; i < n; i++) {
			int fd = events[i].data.fd;
			if (fd == sfd) {
				struct signalfd_siginfo si;
				if (read(sfd, &si, sizeof(si)) == sizeof(si)) {
					log_info("received %s: stopping", strsignal((int)si.ssi_signo));
					rc = 0;
					goto out;
				}
			} else if (fd == tfd) {
				uint64_t ticks;
				if (read(tfd, &ticks, sizeof(ticks)) < 0)
					continue;
				refresh_clock(app);
				uint64_t now = now_ns(CLOCK_MONOTONIC);
				if (now - last_scan >= (uint64_t)app->cfg.discovery_poll_ms * 1000000) {
					discovery__scan(app->disc);
					conntrack__expire(app->ct, now, 15ull * 60 * 1000000000);
					last_scan = now;
				}
			}
		}
		/* Every wakeup drains the ring: events are batched by the kernel
		 * side's wakeup threshold and by the poll timer. */
		capture__drain(app->cap);
	}
out:
	capture__drain(app->cap);
	conntrack__close_all(app->ct, now_ns(CLOCK_MONOTONIC));
	report_losses(app);
	if (ep >= 0)
		close(ep);
	if (sfd >= 0)
		close(sfd);
	if (tfd >= 0)
		close(tfd);
	return rc;
}

int main(int argc, char **argv)
{
	struct app app = {0};
	int rc = config__load(&app.cfg, argc, argv);
	if (rc == 1)
		return 0;
	if (rc)
		return rc;
	log__set_level(app.cfg.log_level);
	log__attach_libbpf();
	app.rng = now_ns(CLOCK_REALTIME) ^ ((uint64_t)getpid() << 32) ^ 0x9E3779B97F4A7C15ULL;
	refresh_clock(&app);
	setvbuf(stdout, NULL, _IOFBF, 1 << 16);

	int err = capture__open(&app.cap, &app.cfg, on_event, &app);
	if (err) {
		config__free(&app.cfg);
		return 1;
	}
	if (discovery__open(&app.disc, &app.cfg, app.cap)) {
		error("out of memory");
		capture__close(app.cap);
		return 1;
	}
	app.ct = conntrack__new(&app.cfg, app.disc, on_request, &app);
	if (!app.ct) {
		error("out of memory");
		return 1;
	}
	log_info("rastro %s started: %d discovery entr%s, capture %u bytes per syscall", RASTRO_VERSION,
		 app.cfg.rule_count, app.cfg.rule_count == 1 ? "y" : "ies", app.cfg.capture_bytes);
	discovery__scan(app.disc);
	rc = run(&app);
	conntrack__free(app.ct);
	discovery__close(app.disc);
	capture__close(app.cap);
	config__free(&app.cfg);
	return rc;
}
