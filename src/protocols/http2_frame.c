#include "protocols/http2_frame.h"

#include <stdlib.h>
#include <string.h>

int http2__match_preface(const char *buf, size_t len)
{
	size_t n = len < HTTP2_PREFACE_LEN ? len : HTTP2_PREFACE_LEN;
	if (memcmp(buf, HTTP2_PREFACE, n))
		return -1;
	return n == HTTP2_PREFACE_LEN ? 1 : 0;
}

void http2__parse_frame_header(const uint8_t *p, struct http2_frame_header *h)
{
	h->length = (uint32_t)p[0] << 16 | (uint32_t)p[1] << 8 | p[2];
	h->type = p[3];
	h->flags = p[4];
	h->reserved_bit = p[5] & 0x80;
	h->stream_id = http2__u32(p + 5) & 0x7fffffffu;
}

bool http2__frame_header_plausible(const struct http2_frame_header *h, uint32_t max_len)
{
	if (h->reserved_bit || h->length > max_len)
		return false;
	bool stream = h->stream_id != 0;
	switch (h->type) {
	case HTTP2_DATA:
		return stream && !(h->flags & ~(HTTP2_F_END_STREAM | HTTP2_F_PADDED));
	case HTTP2_HEADERS:
		return stream && !(h->flags & ~(HTTP2_F_END_STREAM | HTTP2_F_END_HEADERS |
						HTTP2_F_PADDED | HTTP2_F_PRIORITY));
	case HTTP2_PRIORITY:
		return stream && !h->flags && h->length == 5;
	case HTTP2_RST_STREAM:
		return stream && !h->flags && h->length == 4;
	case HTTP2_SETTINGS:
		return !stream && !(h->flags & ~HTTP2_F_ACK) && h->length % 6 == 0 &&
		       (!(h->flags & HTTP2_F_ACK) || !h->length);
	case HTTP2_PUSH_PROMISE:
		return stream && !(h->flags & ~(HTTP2_F_END_HEADERS | HTTP2_F_PADDED)) &&
		       h->length >= 4;
	case HTTP2_PING:
		return !stream && !(h->flags & ~HTTP2_F_ACK) && h->length == 8;
	case HTTP2_GOAWAY:
		return !stream && !h->flags && h->length >= 8;
	case HTTP2_WINDOW_UPDATE:
		return !h->flags && h->length == 4;
	case HTTP2_CONTINUATION:
		return stream && !(h->flags & ~HTTP2_F_END_HEADERS);
	default:
		return false;
	}
}

bool http2__looks_like_frames(const uint8_t *buf, size_t captured, size_t bytes)
{
	size_t off = 0;
	int complete = 0;
	while (off + HTTP2_FRAME_HEADER_LEN <= captured) {
		struct http2_frame_header h;
		http2__parse_frame_header(buf + off, &h);
		if (!http2__frame_header_plausible(&h, HTTP2_DEFAULT_MAX_FRAME))
			return false;
		off += HTTP2_FRAME_HEADER_LEN + h.length;
		if (off > bytes)
			break;
		complete++;
	}
	return (complete >= 1 && off == bytes) || complete >= 2;
}

bool http2__starts_with_frames(const uint8_t *buf, size_t captured, size_t bytes)
{
	size_t off = 0;
	int seen = 0;
	while (off + HTTP2_FRAME_HEADER_LEN <= captured && off < bytes) {
		struct http2_frame_header h;
		http2__parse_frame_header(buf + off, &h);
		if (!http2__frame_header_plausible(&h, HTTP2_DEFAULT_MAX_FRAME))
			return false;
		seen++;
		off += HTTP2_FRAME_HEADER_LEN + h.length;
	}
	return seen > 0;
}

bool http2__field_fragment(const struct http2_frame *f, const uint8_t **frag, uint32_t *len,
			   bool *cut)
{
	uint32_t start = 0, pad = 0, total = f->h.length, avail = f->payload_len;
	bool padded = f->h.flags & HTTP2_F_PADDED;
	*frag = NULL;
	*len = 0;
	*cut = f->cut;
	switch (f->h.type) {
	case HTTP2_HEADERS:
		start = (padded ? 1 : 0) + (f->h.flags & HTTP2_F_PRIORITY ? 5 : 0);
		break;
	case HTTP2_PUSH_PROMISE:
		start = (padded ? 1 : 0) + 4;
		break;
	case HTTP2_CONTINUATION:
		padded = false;
		break;
	default:
		return false;
	}
	if (padded) {
		if (!avail) { /* the pad length was not seen: neither was the block */
			*cut = true;
			return true;
		}
		pad = f->payload[0];
	}
	if ((uint64_t)start + pad > total)
		return false;
	uint32_t end = total - pad;
	if (avail <= start) {
		*cut = avail < total;
		return true;
	}
	*frag = f->payload + start;
	*len = (avail < end ? avail : end) - start;
	*cut = avail < end;
	return true;
}

uint32_t http2__data_length(const struct http2_frame *f, bool *known)
{
	*known = true;
	if (!(f->h.flags & HTTP2_F_PADDED))
		return f->h.length;
	if (!f->payload_len) {
		*known = false;
		return f->h.length;
	}
	uint32_t pad = (uint32_t)f->payload[0] + 1;
	return pad <= f->h.length ? f->h.length - pad : 0;
}

/* ---- the framer */

void http2_framer__init(struct http2_framer *f, bool expect_preface)
{
	memset(f, 0, sizeof(*f));
	f->preface_left = expect_preface ? HTTP2_PREFACE_LEN : 0;
}

void http2_framer__free(struct http2_framer *f)
{
	free(f->buf);
	f->buf = NULL;
	f->buf_cap = 0;
}

void http2_framer__resync(struct http2_framer *f)
{
	f->preface_left = 0;
	f->hdr_len = 0;
	f->in_payload = false;
	f->lost = false;
	f->cut = false;
}

/* Frames whose payload the session reads; DATA and unknown types are only
 * measured. */
static bool keeps_payload(uint8_t type)
{
	return type != HTTP2_DATA && type <= HTTP2_CONTINUATION;
}

static void complete(struct http2_framer *f, const uint8_t *zero_copy, struct http2_frame *out)
{
	out->h = f->cur;
	if (!keeps_payload(f->cur.type)) {
		out->payload = f->peek_len ? f->peek : NULL;
		out->payload_len = f->peek_len;
		out->cut = f->cut;
	} else if (zero_copy) {
		out->payload = zero_copy;
		out->payload_len = f->cur.length;
		out->cut = false;
	} else {
		out->payload = f->kept ? f->buf : NULL;
		out->payload_len = f->kept;
		out->cut = f->cut || f->kept < f->cur.length;
	}
	f->in_payload = false;
}

/* Appends payload bytes of a kept frame; false when out of memory. */
static bool keep(struct http2_framer *f, const uint8_t *p, uint32_t n)
{
	if (f->kept + n > HTTP2_MAX_KEPT_PAYLOAD) {
		n = HTTP2_MAX_KEPT_PAYLOAD - f->kept;
		f->cut = true;
	}
	if (!n)
		return true;
	if (f->kept + n > f->buf_cap) {
		uint32_t want =
		    f->cur.length < HTTP2_MAX_KEPT_PAYLOAD ? f->cur.length : HTTP2_MAX_KEPT_PAYLOAD;
		uint8_t *b = realloc(f->buf, want);
		if (!b)
			return false;
		f->buf = b;
		f->buf_cap = want;
	}
	memcpy(f->buf + f->kept, p, n);
	f->kept += n;
	return true;
}

int64_t http2_framer__feed(struct http2_framer *f, const uint8_t *buf, size_t len,
			   struct http2_frame *out, bool *have)
{
	*have = false;
	if (f->lost || !len)
		return (int64_t)len;
	if (f->preface_left) {
		size_t n = len < f->preface_left ? len : f->preface_left;
		if (memcmp(buf, &HTTP2_PREFACE[HTTP2_PREFACE_LEN - f->preface_left], n)) {
			f->lost = true;
			return HTTP2_FRAMER_ERROR;
		}
		f->preface_left -= (uint32_t)n;
		return (int64_t)n;
	}
	size_t i = 0;
	if (!f->in_payload) {
		size_t n = HTTP2_FRAME_HEADER_LEN - f->hdr_len;
		if (n > len)
			n = len;
		memcpy(f->hdr + f->hdr_len, buf, n);
		f->hdr_len += (uint8_t)n;
		i = n;
		if (f->hdr_len < HTTP2_FRAME_HEADER_LEN)
			return (int64_t)i;
		http2__parse_frame_header(f->hdr, &f->cur);
		f->hdr_len = 0;
		f->in_payload = true;
		f->done = f->kept = f->peek_len = 0;
		f->cut = false;
		if (f->buf_cap > 16 * 1024) { /* give back what a rare big frame took */
			free(f->buf);
			f->buf = NULL;
			f->buf_cap = 0;
		}
		if (!f->cur.length) {
			complete(f, NULL, out);
			*have = true;
			return (int64_t)i;
		}
	}
	uint32_t rem = f->cur.length - f->done;
	uint32_t take = len - i < rem ? (uint32_t)(len - i) : rem;
	const uint8_t *p = buf + i;
	const uint8_t *zero_copy = NULL;
	if (f->cur.type == HTTP2_DATA) {
		if (f->peek_len == f->done && f->peek_len < HTTP2_DATA_PEEK) {
			uint32_t n = HTTP2_DATA_PEEK - f->peek_len;
			if (n > take)
				n = take;
			memcpy(f->peek + f->peek_len, p, n);
			f->peek_len += n;
		}
	} else if (keeps_payload(f->cur.type) && f->kept == f->done) {
		if (!f->done && take == f->cur.length) {
			zero_copy = p; /* the whole payload is here: no copy */
		} else if (!keep(f, p, take)) {
			f->lost = true;
			return HTTP2_FRAMER_ERROR;
		}
	}
	f->done += take;
	i += take;
	if (f->done == f->cur.length) {
		complete(f, zero_copy, out);
		*have = true;
	}
	return (int64_t)i;
}

bool http2_framer__skip(struct http2_framer *f, uint64_t n, struct http2_frame *out)
{
	if (f->lost || !n)
		return false;
	if (!f->in_payload) {
		/* A frame header (or the preface) was among the unseen bytes. */
		f->lost = true;
		return false;
	}
	uint32_t rem = f->cur.length - f->done;
	f->cut = true;
	if (n < rem) {
		f->done += (uint32_t)n;
		return false;
	}
	f->done = f->cur.length;
	complete(f, NULL, out);
	if (n > rem)
		f->lost = true;
	return true;
}
