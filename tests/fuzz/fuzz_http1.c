/* libFuzzer target: the HTTP/1 head parsers, the chunked decoder and the
 * HTTP/1 session fed through the connection tracker as a sequence of syscall
 * events (direction, bytes copied, bytes not copied, closes, a reset's
 * unread bytes and the reads of them that come without connection state). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "discover/discover.h"
#include "protocols/conntrack.h"
#include "protocols/http1.h"

static struct service svc = {.id = 1, .refs = 1};
static struct service *const stub_services[] = {NULL, &svc};
#include "../unit/discovery_stub.h"

static uint64_t emitted;
static void sink(void *ctx, struct request *r)
{
	(void)ctx;
	/* Touch every string so ASan sees out-of-bounds offsets. */
	emitted += strlen(request__str(r, r->path)) + strlen(request__str(r, r->method)) +
		   (uint64_t)r->status;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct rastro_config cfg = {.max_path_length = 64, .max_pending_requests = 8};
	struct http1_head h;
	http1__parse_request_head((const char *)data, size, &h);
	http1__parse_response_head((const char *)data, size, &h);
	struct http1_chunked c;
	bool done;
	http1__chunked_init(&c);
	http1__chunked_feed(&c, (const char *)data, size, &done);

	struct conntrack *ct = conntrack__new(&cfg, NULL, NULL, sink, NULL);
	static char buf[sizeof(struct rastro_data_event) + 4096];
	struct rastro_data_event *ev = (void *)buf;
	uint32_t seq[2] = {0, 0};
	uint64_t ts = 1;
	size_t i = 0;
	bool no_state = false;
	while (i + 2 <= size) {
		uint8_t ctl = data[i], n = data[i + 1];
		i += 2;
		if (ctl == 0xff) { /* n bytes unread at the end: a reset's */
			struct rastro_close_event ce = {.hdr = {.type = RASTRO_EV_CLOSE, .ts_ns = ts},
							.conn_id = 1, .flags = RASTRO_CLOSE_F_FINAL,
							.unread = n, .sock = 2};
			conntrack__on_close(ct, &ce);
			continue;
		}
		if (ctl == 0xfe) { /* the next event is read on the closed socket */
			no_state = true;
			continue;
		}
		if (ctl == 0xfd) { /* time passes: a reset's wait ends */
			conntrack__expire(ct, ts += 2000000000ull, 3600000000000ull);
			continue;
		}
		size_t len = n < size - i ? n : size - i;
		memset(ev, 0, sizeof(*ev));
		ev->hdr.type = RASTRO_EV_DATA;
		ev->hdr.ts_ns = ts++;
		ev->service_id = 1;
		ev->conn_id = no_state ? 2 : 1;
		ev->flags = no_state ? RASTRO_DATA_F_NO_CONN_STATE : 0;
		no_state = false;
		ev->direction = ctl & 1;
		ev->captured = (uint32_t)len;
		ev->bytes = (uint32_t)len + ((ctl & 6) ? (uint32_t)(ctl >> 1) * 97 : 0);
		ev->seq = seq[ctl & 1];
		if (!(ctl & 0x80)) /* else: simulate lost events */
			seq[ctl & 1] += ev->bytes;
		else
			ev->seq += 1000;
		memcpy(buf + sizeof(*ev), data + i, len);
		conntrack__on_data(ct, ev, buf + sizeof(*ev));
		i += len;
	}
	conntrack__close_all(ct, ts);
	conntrack__free(ct);
	return 0;
}
