#include "request.h"

#include <string.h>

#include "common/utf8.h"

void request__init(struct request *r, enum request_kind kind)
{
	/* The arena is left uninitialised: only arena_used bytes are ever read. */
	memset(r, 0, offsetof(struct request, arena));
	r->kind = kind;
	r->grpc_status = -1;
	r->arena_used = 1; /* offset 0 means "absent" */
	r->arena[0] = '\0';
}

struct rstr request__store(struct request *r, const char *s, size_t len)
{
	size_t room = REQUEST_ARENA - r->arena_used;
	if (!len || room < 2)
		return (struct rstr){0, 0};
	/* Request bytes are whatever a peer sent; what rastro reports must be
	 * valid UTF-8 (a Go collector refuses a whole OTLP batch otherwise).
	 * Plain ASCII, the usual case, is copied as is. */
	size_t ascii = 0;
	while (ascii < len && (unsigned char)s[ascii] < 0x80)
		ascii++;
	size_t n;
	if (ascii == len) {
		n = len < room - 1 ? len : room - 1;
		memcpy(r->arena + r->arena_used, s, n);
	} else {
		n = utf8__sanitize(s, len, r->arena + r->arena_used, room - 1);
	}
	if (!n)
		return (struct rstr){0, 0};
	struct rstr out = {r->arena_used, (uint16_t)n};
	r->arena[r->arena_used + n] = '\0';
	r->arena_used += (uint16_t)(n + 1);
	return out;
}
