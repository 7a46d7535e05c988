/* libFuzzer target: the HTTP/2 framer and session (and the HTTP/1 hand-over
 * of an h2c upgrade) fed through the connection tracker as a sequence of
 * syscall events: [ctl][len hi][len lo][bytes]. ctl bit 0: direction; bits
 * 1-3: bytes moved but not copied (x 1500); bit 7: events lost before this
 * one; 0xff closes the connection. Byte 0 is the connection's role. Also the
 * plausibility checks and a standalone framer over the whole input. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "discover/discover.h"
#include "protocols/conntrack.h"
#include "protocols/http2_frame.h"

static struct service svc = {.id = 1, .refs = 1};
static struct service *const stub_services[] = {NULL, &svc};
#include "../unit/discovery_stub.h"

static uint64_t emitted;
static void sink(void *ctx, struct request *r)
{
	(void)ctx;
	/* Touch every string so ASan sees out-of-bounds offsets. */
	emitted += strlen(request__str(r, r->path)) + strlen(request__str(r, r->method)) +
		   strlen(request__str(r, r->rpc_method)) + strlen(request__str(r, r->host)) +
		   strlen(request__str(r, r->error_type)) + (uint64_t)r->status;
	if (r->end_ns < r->start_ns)
		abort();
	/* What did not decode is marked, never filled with something else. */
	if ((r->unresolved & REQ_UNRESOLVED_PATH) && r->path.len)
		abort();
	if ((r->unresolved & REQ_UNRESOLVED_STATUS) && r->status)
		abort();
}

static void framer_alone(const uint8_t *data, size_t size)
{
	struct http2_framer f;
	http2_framer__init(&f, size && (data[0] & 1));
	size_t off = 0;
	while (off < size && !f.lost) {
		size_t piece = 1 + data[off] % 64;
		if (piece > size - off)
			piece = size - off;
		size_t used = 0;
		while (used < piece && !f.lost) {
			struct http2_frame fr;
			bool have;
			int64_t n =
			    http2_framer__feed(&f, data + off + used, piece - used, &fr, &have);
			if (n <= 0)
				break;
			used += (size_t)n;
			if (have) {
				const uint8_t *frag;
				uint32_t len;
				bool cut, known;
				if (http2__field_fragment(&fr, &frag, &len, &cut))
					for (uint32_t i = 0; i < len; i++)
						emitted += frag[i];
				emitted += http2__data_length(&fr, &known);
				for (uint32_t i = 0; i < fr.payload_len; i++)
					emitted += fr.payload[i];
			}
		}
		off += piece;
		if (off < size && (data[off - 1] & 0x40)) {
			struct http2_frame fr;
			http2_framer__skip(&f, data[off - 1] & 0x3f, &fr);
		}
	}
	http2_framer__free(&f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct rastro_config cfg = {.max_path_length = 64, .max_pending_requests = 8};
	http2__looks_like_frames(data, size, size);
	http2__starts_with_frames(data, size, size + 7);
	framer_alone(data, size);
	if (!size)
		return 0;

	struct conntrack *ct = conntrack__new(&cfg, NULL, NULL, sink, NULL);
	static char buf[sizeof(struct rastro_data_event) + 65536];
	struct rastro_data_event *ev = (void *)buf;
	uint32_t seq[2] = {0, 0};
	uint64_t ts = 1;
	uint8_t role = data[0] % 3;
	size_t i = 1;
	while (i + 3 <= size) {
		uint8_t ctl = data[i];
		size_t n = (size_t)data[i + 1] << 8 | data[i + 2];
		i += 3;
		if (ctl == 0xff) {
			struct rastro_close_event ce = {
			    .hdr = {.type = RASTRO_EV_CLOSE, .ts_ns = ts}, .conn_id = 1};
			conntrack__on_close(ct, &ce);
			continue;
		}
		size_t len = n < size - i ? n : size - i;
		if (len > RASTRO_CAPTURE_MAX)
			len = RASTRO_CAPTURE_MAX;
		memset(ev, 0, sizeof(*ev));
		ev->hdr.type = RASTRO_EV_DATA;
		ev->hdr.ts_ns = ts++;
		ev->service_id = 1;
		ev->conn_id = 1;
		ev->role = role;
		ev->direction = ctl & 1;
		ev->captured = (uint32_t)len;
		ev->bytes = (uint32_t)len + (uint32_t)((ctl >> 1) & 7) * 1500;
		ev->seq = seq[ctl & 1];
		if (!(ctl & 0x80))
			seq[ctl & 1] += ev->bytes;
		else
			ev->seq += 1000; /* events lost before this one */
		memcpy(buf + sizeof(*ev), data + i, len);
		conntrack__on_data(ct, ev, buf + sizeof(*ev));
		i += len;
	}
	conntrack__close_all(ct, ts);
	conntrack__free(ct);
	return 0;
}
