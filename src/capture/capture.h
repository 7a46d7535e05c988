/* Kernel capture: loads and attaches the BPF programs, drains the ring
 * buffer, maintains the traced-process map, reads the loss counters. */
#ifndef RASTRO_CAPTURE_H
#define RASTRO_CAPTURE_H

#include <stddef.h>
#include <stdint.h>

#include "bpf/rastro.h"
#include "config/config.h"

struct capture;

/* Called for every event, in ring buffer order. */
typedef void (*capture_event_fn)(void *ctx, const void *event, size_t size);

/* Checks privileges and kernel support, loads and attaches. On failure prints
 * one line naming the problem and returns a negative errno. */
int capture__open(struct capture **out, const struct rastro_config *cfg, capture_event_fn fn,
		  void *ctx);
void capture__close(struct capture *cap);

/* File descriptor that becomes readable when the kernel forces a wakeup. */
int capture__fd(const struct capture *cap);
/* Bytes of the ring buffer read so far (its consumer position: records with
 * their headers), published at the end of every drain. */
uint64_t capture__consumed(const struct capture *cap);
/* Moves the data events the CPUs hold back (rastro.bpf.c, hold_begin) to
 * the ring buffer, where the next drain reads them: 0 or a negative errno. */
int capture__flush(struct capture *cap);
/* Delivers every queued event; returns how many. */
int capture__drain(struct capture *cap);
/* Whether the consumer should leave the rest of the ring for later, asked
 * before each event: used and size are the ring's queued bytes and its
 * capacity. */
typedef bool (*capture_hold_fn)(void *ctx, uint64_t used, uint64_t size);
/* Delivers up to max queued events (all when max <= 0), stopping early when
 * hold (may be NULL) says so; returns how many. *held (may be NULL) tells
 * whether hold stopped it (events remain, left for a later drain). */
int capture__drain_hold(struct capture *cap, int max, capture_hold_fn hold, void *ctx, bool *held);

int capture__trace(struct capture *cap, uint32_t tgid, uint32_t service_id);
int capture__untrace(struct capture *cap, uint32_t tgid);
/* Marks a TCP port a traced process listens on: a traced client's request
 * to it is delivered at once, before the server's side can be read
 * (rastro.bpf.c, server_ports). Marks stay until rastro stops. */
void capture__server_port(struct capture *cap, uint16_t port);
/* Connections whose data the agent ignores (no protocol it knows): the
 * kernel stops sending their data events, counted as RASTRO_STAT_MUTED
 * (rastro.bpf.c, mutes). capture__mute adds a connection (-errno when the
 * map is full: its events keep coming); the kernel asks the map only after
 * capture__mute_publish, called once after a drain's mutes. capture__unmute
 * removes it, at the connection's end. */
int capture__mute(struct capture *cap, uint64_t conn_id);
void capture__mute_publish(struct capture *cap);
void capture__unmute(struct capture *cap, uint64_t conn_id);
/* Sums the per-CPU counters of enum rastro_loss_cause. */
int capture__stats(struct capture *cap, uint64_t out[RASTRO_STAT__COUNT]);
/* Runs of rastro's programs the kernel skipped because the same program was
 * already running on that CPU (an interrupt that hit the hook inside a run:
 * recursion_misses of each program, Linux 5.12 and later, 0 before). Each is
 * an event never seen: a data event, a connection's close, a fork or exit. */
uint64_t capture__skipped_runs(struct capture *cap);
/* Whether this process can still use its maps and programs (a lookup and a
 * flush), e.g. after dropping capabilities: 0, or the negative errno of the
 * refusal. */
int capture__check_map_access(struct capture *cap);
/* Kernel memory held by rastro's maps, in bytes (approximate; with the
 * socket hooks it grows with the connections tracked). */
uint64_t capture__map_bytes(const struct capture *cap);
/* TCP connections the kernel keeps state for now (ebpf.max_connections at
 * most). */
uint64_t capture__connections(const struct capture *cap);
/* Names of the loss causes, for metrics and logs. */
const char *capture__stat_name(int idx);

#endif
