/* A small HTTP/1.1 server on rastro's event loop, for the Prometheus
 * endpoint: no thread, no TLS, GET-style requests without bodies. Request
 * heads are parsed by protocols/http1 (the parser that reads traced
 * traffic); responses have a fixed body or a body streamed piece by piece
 * (chunked for HTTP/1.1, up to the connection's end for HTTP/1.0), so that
 * a response is never held whole. Keep-alive and pipelining, at most
 * max_conns connections, each closed after idle_timeout_ms without progress. */
#ifndef RASTRO_HTTP_SERVER_H
#define RASTRO_HTTP_SERVER_H

#include <stdbool.h>
#include <stddef.h>

struct loop;
struct http_server;

struct http_request {
	const char *method;
	size_t method_len;
	const char *path; /* the request target up to '?', not decoded */
	size_t path_len;
};

/* A body produced as it is sent. next() gives the next piece, which stays
 * valid until the following call (or release); a piece of length 0 ends the
 * body. -1: it cannot be produced (the connection is cut, so the client sees
 * an incomplete response). release() is called exactly once, when the
 * response is over for any reason (sent, HEAD, client gone, server stopped). */
struct http_body_stream {
	int (*next)(void *ctx, const char **data, size_t *len);
	void (*release)(void *ctx);
	void *ctx;
};

struct http_response {
	int status;
	const char *content_type;
	const char *allow;		/* an Allow header (405), or NULL */
	const char *body;		/* a fixed body that outlives the response, sent */
	size_t body_len;		/* with a Content-Length; or: */
	struct http_body_stream stream; /* when stream.next is set */
};

/* Fills *resp for a request. The server sends it (headers only for HEAD). */
typedef void (*http_handler_fn)(void *ctx, const struct http_request *req,
				struct http_response *resp);

struct http_server_opts {
	int max_conns;		  /* more are accepted and closed at once */
	unsigned idle_timeout_ms; /* without reading or writing a byte */
	const char *log_name;	  /* prefix of the debug messages */
};

/* Serves the listening socket listen_fd (non-blocking; owned from here on,
 * also on failure). NULL when out of memory or the loop cannot watch it. */
struct http_server *http_server__start(struct loop *loop, int listen_fd,
				       const struct http_server_opts *opts, http_handler_fn handler,
				       void *ctx);
/* Closes every connection (releasing their bodies) and the listening socket. */
void http_server__stop(struct http_server *s);

#endif
