/* Connection tracker: one entry per TCP connection of a traced process,
 * holding its protocol parser. Detects the protocol from the first bytes,
 * spots lost bytes from TCP sequence numbers, expires idle entries. */
#ifndef RASTRO_CONNTRACK_H
#define RASTRO_CONNTRACK_H

#include <stdbool.h>
#include <stdint.h>

#include "bpf/rastro.h"
#include "config/config.h"
#include "protocols/proto.h"
#include "request.h"

struct conntrack;
struct discovery;

typedef void (*request_sink_fn)(void *ctx, struct request *r);

struct conntrack_stats {
	uint64_t connections;           /* tracked now */
	uint64_t requests;              /* records emitted */
	uint64_t unknown_service_events; /* events of a process no longer known */
	uint64_t reordered; /* events that waited for a batch with earlier ones */
	uint64_t unordered; /* events parsed before earlier ones of their connection */
	uint64_t late_reads; /* reads of a reset connection's last bytes (late_conn) */
	uint64_t late_not_kept; /* reset with bytes unread, not kept for them (LATE_MAX) */
	uint64_t muted;       /* opaque connections whose data the kernel stopped sending */
	uint64_t mute_failed; /* opaque connections the kernel could not be told of */
	uint64_t counters[CONN__COUNTERS];
};

/* Asks the kernel to stop (on) sending a connection's data events, or
 * forgets that (its end); 0 or -errno. */
typedef int (*conn_mute_fn)(void *ctx, uint64_t conn_id, bool on);

/* start runs when a request begins, sink when it is finished. */
struct conntrack *conntrack__new(const struct rastro_config *cfg, struct discovery *disc,
				 request_sink_fn start, request_sink_fn sink, void *sink_ctx);
void conntrack__free(struct conntrack *ct);

/* An event of a record of its own. */
void conntrack__on_data(struct conntrack *ct, const struct rastro_data_event *ev,
			const char *payload);
/* An event sent ahead of batch gen of CPU cpu (RASTRO_EV_DATA_AFTER): parsed
 * after that batch's events, as are its connection's events that come
 * until then (at most a second: then it is parsed, counted unordered). */
void conntrack__on_data_after(struct conntrack *ct, const struct rastro_data_event *ev,
			      const char *payload, uint32_t cpu, uint32_t gen);
/* The events of batch gen of CPU cpu follow (conntrack__on_data for each),
 * then conntrack__on_batch. */
void conntrack__batch_begin(struct conntrack *ct, uint32_t cpu, uint32_t gen);
/* A connection's end: at once, or once the batch of held events it names
 * is read (conntrack__on_batch). */
void conntrack__on_close(struct conntrack *ct, const struct rastro_close_event *ev);
/* After the events of batch gen of CPU cpu: the ends that waited for it. */
void conntrack__on_batch(struct conntrack *ct, uint32_t cpu, uint32_t gen);
/* Closes connections without events for idle_ns (their close was missed),
 * and those whose end waited for a batch for more than a second (the batch
 * was lost: counted as ringbuf_full). */
void conntrack__expire(struct conntrack *ct, uint64_t now_ns, uint64_t idle_ns);
/* Closes every connection (at shutdown), reporting what is pending. */
void conntrack__close_all(struct conntrack *ct, uint64_t now_ns);
/* A connection that turns out to carry no protocol rastro knows (its first
 * chunks, or a protocol that hands it over to one it does not, as HTTP/1's
 * 101 to WebSocket: conn__ignore_rest) is ignored from then on; with fn set,
 * conntrack__mute_pending, called after each drain, asks fn to mute those
 * still open, and returns how many it did (the kernel then learns of them:
 * capture__mute_publish). */
void conntrack__on_mute(struct conntrack *ct, conn_mute_fn fn, void *ctx);
uint32_t conntrack__mute_pending(struct conntrack *ct);
void conntrack__stats(const struct conntrack *ct, struct conntrack_stats *out);
const char *conntrack__counter_name(int which);

#endif
