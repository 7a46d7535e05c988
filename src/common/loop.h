/* The agent's single event loop: epoll for file descriptors plus one-shot
 * timers. Everything (ring buffer, exporters' sockets, the Prometheus
 * endpoint, signals) runs on it, so no state is shared between threads. */
#ifndef RASTRO_LOOP_H
#define RASTRO_LOOP_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/epoll.h> /* EPOLLIN, EPOLLOUT for loop__watch */

struct loop;

typedef void (*loop_fd_fn)(void *ctx, int fd, uint32_t events);
typedef void (*loop_timer_fn)(void *ctx);

struct loop *loop__new(void);
void loop__free(struct loop *l);

/* Watches fd for EPOLLIN/EPOLLOUT (events); re-adding an fd updates it. */
int loop__watch(struct loop *l, int fd, uint32_t events, loop_fd_fn fn, void *ctx);
void loop__unwatch(struct loop *l, int fd);

/* Runs fn once, delay_ms from now. Returns a timer id (> 0) or -1. */
int64_t loop__after(struct loop *l, uint64_t delay_ms, loop_timer_fn fn, void *ctx);
void loop__cancel(struct loop *l, int64_t timer_id);

/* Called after every batch of fd/timer callbacks (used to drain the ring
 * buffer on any wakeup). */
void loop__set_idle(struct loop *l, loop_timer_fn fn, void *ctx);

/* Runs until loop__stop; returns 0. */
int loop__run(struct loop *l);
void loop__stop(struct loop *l);

/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t loop__now_ns(void);

#endif
