/* Shared by the database protocol fuzz targets: discovery stubs, a sink that
 * touches every string of a record, and a driver that feeds the input to the
 * connection tracker as a sequence of syscall events:
 *   [ctl][n][n bytes] ...   ctl bit 0: direction (1 = the client sends),
 *   bits 1-2: that many times 97 bytes moved but not copied, bit 7: events
 *   were lost before this one; ctl 0xff closes the connection. */
#ifndef RASTRO_FUZZ_DB_H
#define RASTRO_FUZZ_DB_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "discover/discover.h"
#include "protocols/conntrack.h"

static struct service svc = {.id = 1, .refs = 1};
static struct service *const stub_services[] = {NULL, &svc};
#include "../unit/discovery_stub.h"

static uint64_t emitted;
static void sink(void *ctx, struct request *r)
{
	(void)ctx;
	/* Touch every string so ASan sees out-of-bounds offsets. */
	struct rstr all[] = {r->db_operation, r->db_collection, r->db_namespace, r->db_query,
			     r->db_status,    r->error_message, r->error_type};
	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
		emitted += strlen(request__str(r, all[i])) + all[i].len;
	emitted += r->end_ns - r->start_ns;
}

struct fuzz_feed {
	struct conntrack *ct;
	uint32_t seq[2];
	uint64_t ts;
	uint8_t role;
};

static void fuzz_event(struct fuzz_feed *f, int dir, const void *data, size_t captured,
		       size_t bytes, bool lost)
{
	static char buf[sizeof(struct rastro_data_event) + 4096];
	struct rastro_data_event *ev = (void *)buf;
	if (captured > 4096)
		captured = 4096;
	memset(ev, 0, sizeof(*ev));
	ev->hdr.type = RASTRO_EV_DATA;
	ev->hdr.ts_ns = f->ts++;
	ev->tid = 7;
	ev->service_id = 1;
	ev->conn_id = 1;
	ev->direction = (uint8_t)dir;
	ev->role = f->role;
	ev->captured = (uint32_t)captured;
	ev->bytes = (uint32_t)bytes;
	ev->seq = f->seq[dir] + (lost ? 1000 : 0);
	f->seq[dir] = ev->seq + ev->bytes;
	memcpy(buf + sizeof(*ev), data, captured);
	conntrack__on_data(f->ct, ev, buf + sizeof(*ev));
}

/* Feeds data as events; `prefix` (client bytes) goes first when given. */
static void fuzz_drive(const struct rastro_config *cfg, const uint8_t *data, size_t size,
		       const void *prefix, size_t prefix_len, int prefix_dir, uint8_t role)
{
	struct fuzz_feed f = {.ct = conntrack__new(cfg, NULL, NULL, sink, NULL), .ts = 1,
			      .role = role};
	if (prefix_len)
		fuzz_event(&f, prefix_dir, prefix, prefix_len, prefix_len, false);
	size_t i = 0;
	while (i + 2 <= size) {
		uint8_t ctl = data[i], n = data[i + 1];
		i += 2;
		if (ctl == 0xff) {
			struct rastro_close_event ce = {
				.hdr = {.type = RASTRO_EV_CLOSE, .ts_ns = f.ts}, .conn_id = 1};
			conntrack__on_close(f.ct, &ce);
			continue;
		}
		size_t len = n < size - i ? n : size - i;
		fuzz_event(&f, ctl & 1 ? RASTRO_DIR_EGRESS : RASTRO_DIR_INGRESS, data + i, len,
			   len + ((ctl >> 1) & 3) * 97, ctl & 0x80);
		i += len;
	}
	conntrack__close_all(f.ct, f.ts);
	conntrack__free(f.ct);
}

#endif
