/* HTTP/2 framing (RFC 9113): the connection preface, frame headers, and a
 * streaming framer that turns one direction's bytes, in whatever pieces the
 * syscalls moved them, into frames. Pure: no I/O, no globals.
 *
 * Bytes the kernel did not copy are skipped by frame length, never parsed:
 * a DATA payload can be skipped without losing the framing, a frame header
 * in unseen bytes cannot (the framer then says it lost alignment). */
#ifndef RASTRO_HTTP2_FRAME_H
#define RASTRO_HTTP2_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HTTP2_PREFACE "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#define HTTP2_PREFACE_LEN 24
#define HTTP2_FRAME_HEADER_LEN 9
#define HTTP2_DEFAULT_MAX_FRAME 16384
/* Payload bytes of a HEADERS/CONTINUATION/PUSH_PROMISE/... frame the framer
 * keeps; beyond, the frame is reported cut. */
#define HTTP2_MAX_KEPT_PAYLOAD (64 * 1024)
/* Leading payload bytes of a DATA frame kept (pad length, gRPC prefix). */
#define HTTP2_DATA_PEEK 8

enum http2_frame_type {
	HTTP2_DATA = 0,
	HTTP2_HEADERS = 1,
	HTTP2_PRIORITY = 2,
	HTTP2_RST_STREAM = 3,
	HTTP2_SETTINGS = 4,
	HTTP2_PUSH_PROMISE = 5,
	HTTP2_PING = 6,
	HTTP2_GOAWAY = 7,
	HTTP2_WINDOW_UPDATE = 8,
	HTTP2_CONTINUATION = 9,
};

#define HTTP2_F_END_STREAM 0x01
#define HTTP2_F_ACK 0x01
#define HTTP2_F_END_HEADERS 0x04
#define HTTP2_F_PADDED 0x08
#define HTTP2_F_PRIORITY 0x20

#define HTTP2_SETTINGS_HEADER_TABLE_SIZE 1
#define HTTP2_SETTINGS_MAX_FRAME_SIZE 5

struct http2_frame_header {
	uint32_t length; /* payload length, 24 bits */
	uint8_t type;
	uint8_t flags;
	uint32_t stream_id; /* reserved bit cleared */
	bool reserved_bit;
};

struct http2_frame {
	struct http2_frame_header h;
	/* The payload from its first byte: all of it, or as much as was seen (for
	 * DATA at most HTTP2_DATA_PEEK bytes). NULL when none was seen. */
	const uint8_t *payload;
	uint32_t payload_len;
	bool cut; /* some payload bytes were not seen (not copied, or over the limit) */
};

/* 1: buf holds the whole preface; 0: buf is a strict prefix of it (len < 24);
 * -1: it is not the preface. */
int http2__match_preface(const char *buf, size_t len);

/* Reads the 9-byte frame header at p. */
void http2__parse_frame_header(const uint8_t *p, struct http2_frame_header *h);

/* Whether a header looks like one a real peer sends: a known type, only the
 * flags that type defines, the stream id and length rules of RFC 9113 and a
 * length no larger than max_len. For finding frames in a stream seen from
 * its middle, where a false match would attribute garbage. */
bool http2__frame_header_plausible(const struct http2_frame_header *h, uint32_t max_len);

/* Whether buf (captured bytes of a syscall that moved `bytes`) begins with
 * HTTP/2 frames: either frames that end exactly where the syscall's bytes
 * end, or at least two complete plausible frames. */
bool http2__looks_like_frames(const uint8_t *buf, size_t captured, size_t bytes);

/* Weaker, for a connection already known to be HTTP/2 whose alignment was
 * lost: every frame header visible in buf is plausible (the last frame may
 * run past the bytes copied, or past the syscall). */
bool http2__starts_with_frames(const uint8_t *buf, size_t captured, size_t bytes);

/* The field block fragment of a HEADERS or PUSH_PROMISE frame (padding,
 * priority and the promised stream id removed) or of a CONTINUATION frame.
 * *cut is set when some of it was not seen. Returns false when malformed. */
bool http2__field_fragment(const struct http2_frame *f, const uint8_t **frag, uint32_t *len,
			   bool *cut);

/* The data length of a DATA frame (payload minus padding); *known is false
 * when its padding length was not seen (the payload length is returned). */
uint32_t http2__data_length(const struct http2_frame *f, bool *known);

/* Reads a 32-bit big-endian value. */
static inline uint32_t http2__u32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* One direction's framer. */
struct http2_framer {
	uint32_t preface_left; /* client preface bytes still expected */
	uint8_t hdr[HTTP2_FRAME_HEADER_LEN];
	uint8_t hdr_len; /* header bytes collected */
	bool in_payload;
	bool lost; /* alignment lost: feed and skip do nothing */
	bool cut;  /* the current frame's payload was not all seen */
	struct http2_frame_header cur;
	uint32_t done; /* payload bytes consumed (seen or skipped) */
	uint32_t kept; /* payload bytes kept in buf */
	uint32_t peek_len;
	uint8_t peek[HTTP2_DATA_PEEK];
	uint8_t *buf; /* payload of a kept frame split across pieces */
	uint32_t buf_cap;
};

/* expect_preface: this direction starts with the client connection preface. */
void http2_framer__init(struct http2_framer *f, bool expect_preface);
void http2_framer__free(struct http2_framer *f);
/* Whether the next byte fed starts a frame (or the preface). */
static inline bool http2_framer__at_boundary(const struct http2_framer *f)
{
	return !f->hdr_len && !f->in_payload && !f->lost;
}

#define HTTP2_FRAMER_ERROR (-1) /* bad preface, or out of memory: f->lost is set */

/* Consumes bytes of buf. Returns how many (> 0 when len > 0 and not lost),
 * with *have set when a frame completed; its payload points into buf or into
 * the framer and stays valid until the next call. */
int64_t http2_framer__feed(struct http2_framer *f, const uint8_t *buf, size_t len,
			   struct http2_frame *out, bool *have);
/* n bytes were moved but not copied. Returns true (filling *out) when they
 * complete the current frame. When a frame header lies among them, the
 * framer loses alignment (f->lost). */
bool http2_framer__skip(struct http2_framer *f, uint64_t n, struct http2_frame *out);
/* Starts over at a frame boundary (after the caller found one). */
void http2_framer__resync(struct http2_framer *f);

#endif
