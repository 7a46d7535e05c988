#include "request.h"

#include <string.h>

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
	if (len > room - 1)
		len = room - 1;
	if (len > UINT16_MAX)
		len = UINT16_MAX;
	struct rstr out = {r->arena_used, (uint16_t)len};
	memcpy(r->arena + r->arena_used, s, len);
	r->arena[r->arena_used + len] = '\0';
	r->arena_used += (uint16_t)(len + 1);
	return out;
}
