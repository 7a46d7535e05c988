/* HTTP/1.x message heads and chunked framing (RFC 9112): pure functions over
 * (buf, len), no I/O, no globals, no allocation. */
#ifndef RASTRO_HTTP1_H
#define RASTRO_HTTP1_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HTTP1_NEED_MORE 0
#define HTTP1_ERROR (-1)

struct http1_slice {
	const char *p;
	size_t len;
};

struct http1_head {
	/* request line */
	struct http1_slice method;
	struct http1_slice target; /* request-target as sent */
	/* status line */
	int status;
	int version; /* 10 or 11 */

	/* headers rastro uses */
	struct http1_slice host, user_agent, content_type, traceparent, tracestate;
	int64_t content_length; /* -1: absent */
	bool chunked;           /* Transfer-Encoding ends in chunked */
	bool has_transfer_encoding;
	bool connection_close;
	bool connection_keep_alive;
	bool expect_continue;
	bool upgrade_h2c;       /* Upgrade offers h2c, cleartext HTTP/2 (RFC 7540 3.2) */
	bool http2_settings;    /* HTTP2-Settings header (h2c upgrade request) */
	size_t head_len;        /* bytes up to and including the empty line */
};

/* Quick classifiers for the first bytes of a message. They look only at the
 * start of the buffer (at most 16 bytes) and may be fooled by binary data
 * that happens to begin like HTTP; the full parsers confirm. */
bool http1__looks_like_request(const char *buf, size_t len);
bool http1__looks_like_response(const char *buf, size_t len);

/* Full head parsers. Return the head length (> 0), HTTP1_NEED_MORE when the
 * empty line has not arrived yet, or HTTP1_ERROR when the bytes are not a
 * valid HTTP/1.x head. */
int http1__parse_request_head(const char *buf, size_t len, struct http1_head *out);
int http1__parse_response_head(const char *buf, size_t len, struct http1_head *out);

/* Parses just the request line of a head known to be cut short (longer than
 * what was captured). The target may itself be cut: *target_cut says so.
 * Returns 0 or HTTP1_ERROR. */
int http1__parse_request_line_prefix(const char *buf, size_t len, struct http1_head *out,
				     bool *target_cut);

/* RFC 9110 method (GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE)
 * or PATCH (RFC 5789). */
bool http1__method_known(const char *m, size_t len);

/* Whether a response to this request carries no body (RFC 9112 6.3). */
bool http1__response_has_no_body(const char *request_method, size_t method_len, int status);

/* Chunked transfer coding, streaming. Feed bytes in order; bytes the kernel
 * did not copy can be skipped while inside chunk data. */
struct http1_chunked {
	int state;
	uint64_t chunk_left;   /* data bytes left in the current chunk */
	uint64_t payload;      /* decoded payload bytes so far */
	unsigned line_len;     /* guards against endless size/trailer lines */
	bool size_digits;
};

void http1__chunked_init(struct http1_chunked *c);
/* Consumes up to len bytes. Returns bytes consumed; *done is set when the
 * last chunk and trailers ended (the rest of buf is the next message).
 * Returns HTTP1_ERROR on a malformed chunk. */
int64_t http1__chunked_feed(struct http1_chunked *c, const char *buf, size_t len, bool *done);
/* The same, for a reader that wants the payload: stops after the first run
 * of chunk data, which is buf's *data_len bytes at *data (0 when the bytes
 * consumed held none). */
int64_t http1__chunked_data(struct http1_chunked *c, const char *buf, size_t len, bool *done,
			    const char **data, size_t *data_len);
/* Skips n unseen bytes; false when they do not all lie inside chunk data
 * (framing lost). */
bool http1__chunked_skip(struct http1_chunked *c, uint64_t n);

#endif
