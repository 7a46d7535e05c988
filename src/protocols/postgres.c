/* PostgreSQL protocol 3 message parsers (see postgres.h). */
#include "protocols/postgres.h"

#include <string.h>

/* A NUL-terminated string at *off; *off moves past the NUL. Without a NUL
 * (a cut body) the slice runs to the end and false is returned. */
static bool cstring(const char *b, size_t len, size_t *off, struct db_slice *out)
{
	size_t o = *off < len ? *off : len;
	const char *nul = memchr(b + o, '\0', len - o);
	out->p = b + o;
	if (!nul) {
		out->len = len - o;
		*off = len;
		return false;
	}
	out->len = (size_t)(nul - (b + o));
	*off = o + out->len + 1;
	return true;
}

enum pg_untyped pg__untyped_kind(const char *buf, size_t len, size_t total)
{
	if (len < 8)
		return PG_UNTYPED_NONE;
	uint32_t l = db__be32(buf), code = db__be32(buf + 4);
	if (l != total)
		return PG_UNTYPED_NONE;
	if (l == 8 && code == PG_SSL_REQUEST_CODE)
		return PG_UNTYPED_SSL;
	if (l == 8 && code == PG_GSSENC_REQUEST_CODE)
		return PG_UNTYPED_GSSENC;
	if (l == 16 && code == PG_CANCEL_REQUEST_CODE)
		return PG_UNTYPED_CANCEL;
	/* Major version 3; minor 0 (up to 17) or 2 (18+). Parameters end in a NUL. */
	if (code >> 16 == 3 && (code & 0xffff) < 16 && l > 8 && l <= 10000 &&
	    (len < l || buf[l - 1] == '\0'))
		return PG_UNTYPED_STARTUP;
	return PG_UNTYPED_NONE;
}

bool pg__frontend_type(char t)
{
	return t && strchr("QPBEDSHCXFpdcf", t);
}

bool pg__backend_type(char t)
{
	return t && strchr("RSKZTDCEN123ntsIGHWdcAvV", t);
}

bool pg__looks_like_frontend(const char *buf, size_t captured, size_t total)
{
	size_t off = 0;
	bool strong = false;
	if (captured > total)
		return false;
	while (off < captured) {
		if (captured - off < 5)
			return false;
		char t = buf[off];
		uint32_t l = db__be32(buf + off + 1);
		if (!pg__frontend_type(t) || l < 4 || l > (1u << 30))
			return false;
		size_t end = off + 1 + l;
		if (end > total)
			return false;
		const char *body = buf + off + 5;
		size_t blen = l - 4, avail = (end <= captured ? end : captured) - (off + 5);
		bool full = end <= captured;
		struct db_slice a, b;
		size_t o = 0;
		switch (t) {
		case 'Q':
			if (full) {
				if (blen < 2 || body[blen - 1] != '\0' ||
				    memchr(body, '\0', blen - 1) || !db__is_text(body, blen - 1))
					return false;
			} else if (avail < 8 || !db__is_text(body, avail)) {
				return false;
			}
			strong = true;
			break;
		case 'P':
			if (!cstring(body, avail, &o, &a))
				return false;
			if (full) {
				if (!cstring(body, blen, &o, &b) || o + 2 > blen ||
				    o + 2 +
					    4 * (size_t)(((uint8_t)body[o] << 8) |
							 (uint8_t)body[o + 1]) !=
					blen ||
				    !db__is_text(b.p, b.len))
					return false;
			} else {
				cstring(body, avail, &o, &b);
				if (!db__is_text(b.p, b.len))
					return false;
			}
			strong = true;
			break;
		case 'S':
		case 'H':
		case 'X':
			if (l != 4)
				return false;
			break;
		case 'E':
			if (full && (!cstring(body, blen, &o, &a) || o + 4 != blen))
				return false;
			break;
		case 'D':
		case 'C':
			if (full && (blen < 2 || (body[0] != 'S' && body[0] != 'P') ||
				     body[blen - 1] != '\0' || memchr(body + 1, '\0', blen - 2)))
				return false;
			break;
		case 'B':
			if (blen < 8)
				return false;
			break;
		default:
			/* Copy data, function calls, passwords: too little shape to go on. */
			return false;
		}
		off = end;
	}
	return strong;
}

void pg__parse_query(const char *body, size_t len, struct db_slice *sql)
{
	size_t o = 0;
	cstring(body, len, &o, sql);
}

bool pg__parse_parse(const char *body, size_t len, struct db_slice *name, struct db_slice *sql)
{
	size_t o = 0;
	if (!cstring(body, len, &o, name))
		return false;
	cstring(body, len, &o, sql);
	return true;
}

bool pg__parse_bind(const char *body, size_t len, struct db_slice *portal, struct db_slice *stmt)
{
	size_t o = 0;
	return cstring(body, len, &o, portal) && cstring(body, len, &o, stmt);
}

bool pg__parse_execute(const char *body, size_t len, struct db_slice *portal)
{
	size_t o = 0;
	return cstring(body, len, &o, portal);
}

bool pg__parse_close(const char *body, size_t len, char *what, struct db_slice *name)
{
	size_t o = 1;
	if (len < 2 || (body[0] != 'S' && body[0] != 'P'))
		return false;
	*what = body[0];
	return cstring(body, len, &o, name);
}

bool pg__parse_startup(const char *body, size_t len, struct db_slice *user,
		       struct db_slice *database)
{
	size_t o = 4;
	*user = *database = (struct db_slice){0};
	if (len < 4)
		return false;
	while (o < len && body[o]) {
		struct db_slice k, v;
		if (!cstring(body, len, &o, &k) || !cstring(body, len, &o, &v))
			break;
		if (k.len == 4 && !memcmp(k.p, "user", 4))
			*user = v;
		else if (k.len == 8 && !memcmp(k.p, "database", 8))
			*database = v;
	}
	return true;
}

bool pg__parse_error(const char *body, size_t len, struct pg_error *out)
{
	size_t o = 0;
	memset(out, 0, sizeof(*out));
	while (o < len && body[o]) {
		char field = body[o++];
		struct db_slice v;
		bool whole = cstring(body, len, &o, &v);
		switch (field) {
		case 'C':
			if (whole)
				out->code = v;
			break;
		case 'V':
			out->severity = v;
			break;
		case 'S':
			if (!out->severity.len)
				out->severity = v;
			break;
		case 'M':
			out->message = v;
			break;
		default:
			break;
		}
	}
	return out->code.len > 0;
}

bool pg__ends_with_ready(const char *buf, size_t len)
{
	if (len < 6)
		return false;
	const char *z = buf + len - 6;
	char st = z[5];
	return z[0] == 'Z' && db__be32(z + 1) == 5 && (st == 'I' || st == 'T' || st == 'E');
}
