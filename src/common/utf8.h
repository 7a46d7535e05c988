/* UTF-8 validity: every string rastro exports (OTLP strings, JSON, Prometheus
 * labels) must be valid UTF-8, and request bytes are whatever a client sent. */
#ifndef RASTRO_UTF8_H
#define RASTRO_UTF8_H

#include <stddef.h>

/* Length of the valid UTF-8 character at s (1-4), or 0 if s[0..n) does not
 * start with one (RFC 3629: no overlongs, no surrogates, <= U+10FFFF). */
size_t utf8__char_len(const char *s, size_t n);

/* Copies s[0..len) into out (at most cap bytes, whole characters only),
 * replacing each byte that does not start a valid character with U+FFFD.
 * Returns the bytes written; out is not NUL-terminated. */
size_t utf8__sanitize(const char *s, size_t len, char *out, size_t cap);

#endif
