/* Between the OTLP client (queue, retries, outcomes: otlp_client.c) and the
 * two ways it sends a request:
 *
 * - http:// endpoints: a small HTTP/1.1 client of rastro's own
 *   (otlp_http.c). No library: libcurl pulls in OpenSSL, GnuTLS, Kerberos,
 *   LDAP and a dozen more, about 7 MB of resident memory that plain HTTP does
 *   not need.
 * - https:// endpoints: libcurl, loaded at run time (otlp_curl.c), so TLS
 *   costs memory only where it is used.
 *
 * A transport sends one request at a time. Its sockets and its one timer go
 * through the client (otlp_client__watch, otlp_client__set_timer), which puts
 * them on the loop, or polls them itself during the shutdown flush. */
#ifndef RASTRO_OTLP_TRANSPORT_H
#define RASTRO_OTLP_TRANSPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"

struct otlp_client;

/* Why an attempt got no HTTP status. */
enum otlp_err {
	OTLP_ERR_NONE,
	OTLP_ERR_RESOLVE,  /* the host name did not resolve */
	OTLP_ERR_CONNECT,  /* refused, unreachable, ... */
	OTLP_ERR_TIMEOUT,  /* no complete answer within the timeout */
	OTLP_ERR_SEND,     /* the connection failed while sending */
	OTLP_ERR_RECV,     /* the connection failed or closed while receiving */
	OTLP_ERR_RESPONSE, /* the answer is not HTTP */
	OTLP_ERR_TLS,      /* handshake or certificate */
	OTLP_ERR_URL,      /* the endpoint cannot be used at all: never retried */
	OTLP_ERR_NOMEM,    /* never retried: the request is dropped */
};

struct otlp_transport {
	const char *name;
	/* State for one client; NULL with *why set (one line) on failure. */
	void *(*open)(struct otlp_client *c, const struct otlp_signal *cfg, const char **why);
	/* Starts sending body (kept by the caller until the attempt ends);
	 * false when out of memory. */
	bool (*start)(void *t, const uint8_t *body, size_t len);
	void (*io)(void *t, int fd, uint32_t events);
	void (*timeout)(void *t);
	/* Ends the attempt in flight, if any, without a callback. */
	void (*abort)(void *t);
	void (*close)(void *t);
};

extern const struct otlp_transport otlp_http_transport, otlp_curl_transport;

/* Calls from a transport into its client. */

/* Whether a configured header can be sent (else warned about, once per call). */
bool otlp_header_ok(const char *key, const char *value);

/* Watches fd for EPOLLIN/EPOLLOUT; events 0 stops watching it. 0 or -1. */
int otlp_client__watch(struct otlp_client *c, int fd, uint32_t events);
/* The transport's one timer, in ms from now; -1 cancels it. 0 or -1. */
int otlp_client__set_timer(struct otlp_client *c, int64_t ms);
/* A header line of the answer ("Name: value", its line end optional); the
 * client keeps what it uses (Retry-After). */
void otlp_client__header(struct otlp_client *c, const char *line, size_t len);
/* Bytes of the answer's body (kept up to 64 KiB, for partial success). */
void otlp_client__body(struct otlp_client *c, const void *data, size_t len);
/* The attempt ended: an HTTP status (err OTLP_ERR_NONE), or an error with
 * its text for the log. The transport is ready for the next start() before
 * it calls this: the client may start the next request from here. */
void otlp_client__finished(struct otlp_client *c, enum otlp_err err, long status,
			   const char *text);

#endif
