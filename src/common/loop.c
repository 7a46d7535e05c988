#include "common/loop.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

struct watch {
	int fd;
	loop_fd_fn fn;
	void *ctx;
};

struct timer {
	int64_t id;
	uint64_t when_ns;
	loop_timer_fn fn;
	void *ctx;
};

struct loop {
	int ep;
	bool stop;
	struct watch *watches;
	int nwatches, capwatches;
	struct timer *timers;
	int ntimers, captimers;
	int64_t next_id;
	loop_timer_fn idle;
	void *idle_ctx;
};

uint64_t loop__now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

struct loop *loop__new(void)
{
	struct loop *l = calloc(1, sizeof(*l));
	if (!l)
		return NULL;
	l->ep = epoll_create1(EPOLL_CLOEXEC);
	if (l->ep < 0) {
		free(l);
		return NULL;
	}
	return l;
}

void loop__free(struct loop *l)
{
	if (!l)
		return;
	close(l->ep);
	free(l->watches);
	free(l->timers);
	free(l);
}

static struct watch *find_watch(struct loop *l, int fd)
{
	for (int i = 0; i < l->nwatches; i++)
		if (l->watches[i].fd == fd)
			return &l->watches[i];
	return NULL;
}

int loop__watch(struct loop *l, int fd, uint32_t events, loop_fd_fn fn, void *ctx)
{
	struct epoll_event ev = {.events = events, .data.fd = fd};
	struct watch *w = find_watch(l, fd);
	if (w) {
		w->fn = fn;
		w->ctx = ctx;
		return epoll_ctl(l->ep, EPOLL_CTL_MOD, fd, &ev);
	}
	if (l->nwatches == l->capwatches) {
		int cap = l->capwatches ? l->capwatches * 2 : 16;
		struct watch *n = realloc(l->watches, (size_t)cap * sizeof(*n));
		if (!n)
			return -1;
		l->watches = n;
		l->capwatches = cap;
	}
	if (epoll_ctl(l->ep, EPOLL_CTL_ADD, fd, &ev))
		return -1;
	l->watches[l->nwatches++] = (struct watch){fd, fn, ctx};
	return 0;
}

void loop__unwatch(struct loop *l, int fd)
{
	struct watch *w = find_watch(l, fd);
	if (!w)
		return;
	epoll_ctl(l->ep, EPOLL_CTL_DEL, fd, NULL);
	*w = l->watches[--l->nwatches];
}

int64_t loop__after(struct loop *l, uint64_t delay_ms, loop_timer_fn fn, void *ctx)
{
	if (l->ntimers == l->captimers) {
		int cap = l->captimers ? l->captimers * 2 : 16;
		struct timer *n = realloc(l->timers, (size_t)cap * sizeof(*n));
		if (!n)
			return -1;
		l->timers = n;
		l->captimers = cap;
	}
	int64_t id = ++l->next_id;
	l->timers[l->ntimers++] =
		(struct timer){id, loop__now_ns() + delay_ms * 1000000ull, fn, ctx};
	return id;
}

void loop__cancel(struct loop *l, int64_t id)
{
	for (int i = 0; i < l->ntimers; i++) {
		if (l->timers[i].id == id) {
			l->timers[i] = l->timers[--l->ntimers];
			return;
		}
	}
}

void loop__set_idle(struct loop *l, loop_timer_fn fn, void *ctx)
{
	l->idle = fn;
	l->idle_ctx = ctx;
}

void loop__stop(struct loop *l)
{
	l->stop = true;
}

/* Runs due timers; returns the wait until the next one in ms (-1: none). */
static int run_timers(struct loop *l)
{
	for (;;) {
		uint64_t now = loop__now_ns(), next = UINT64_MAX;
		int due = -1;
		for (int i = 0; i < l->ntimers; i++) {
			if (l->timers[i].when_ns <= now && (due < 0 || l->timers[i].when_ns < l->timers[due].when_ns))
				due = i;
			if (l->timers[i].when_ns < next)
				next = l->timers[i].when_ns;
		}
		if (due < 0) {
			if (next == UINT64_MAX)
				return -1;
			uint64_t ms = (next - now + 999999) / 1000000;
			return ms > 60000 ? 60000 : (int)ms;
		}
		struct timer t = l->timers[due];
		l->timers[due] = l->timers[--l->ntimers];
		t.fn(t.ctx);
		if (l->stop)
			return 0;
	}
}

int loop__run(struct loop *l)
{
	while (!l->stop) {
		int timeout = run_timers(l);
		if (l->stop)
			break;
		struct epoll_event events[16];
		int n = epoll_wait(l->ep, events, 16, timeout);
		if (n < 0 && errno != EINTR)
			return error("event loop: %s", strerror(errno));
		for (int i = 0; i < n && !l->stop; i++) {
			struct watch *w = find_watch(l, events[i].data.fd);
			if (w)
				w->fn(w->ctx, w->fd, events[i].events);
		}
		if (l->idle && !l->stop)
			l->idle(l->idle_ctx);
	}
	return 0;
}
