/* MySQL / MariaDB packet parsers (see mysql.h). */
#include "protocols/mysql.h"

#include <string.h>

size_t mysql__lenenc(const char *p, size_t len, uint64_t *v)
{
	if (!len)
		return 0;
	uint8_t b = (uint8_t)p[0];
	size_t n;
	if (b < 0xfb) {
		*v = b;
		return 1;
	}
	if (b == 0xfc)
		n = 2;
	else if (b == 0xfd)
		n = 3;
	else if (b == 0xfe)
		n = 8;
	else
		return 0; /* 0xfb is NULL in rows, 0xff is an error header */
	if (len < n + 1)
		return 0;
	uint64_t x = 0;
	for (size_t i = n; i > 0; i--)
		x = x << 8 | (uint8_t)p[i];
	*v = x;
	return n + 1;
}

bool mysql__parse_greeting(const char *p, size_t len, struct mysql_greeting *out)
{
	memset(out, 0, sizeof(*out));
	if (len < 2 || p[0] != 10)
		return false;
	const char *nul = memchr(p + 1, '\0', len - 1);
	if (!nul)
		return false;
	out->version = (struct db_slice){p + 1, (size_t)(nul - p - 1)};
	if (!out->version.len || !db__is_text(out->version.p, out->version.len))
		return false;
	out->mariadb = memmem(out->version.p, out->version.len, "MariaDB", 7) != NULL;
	size_t o = (size_t)(nul - p) + 1 + 4 + 8; /* connection id, scramble part 1 */
	if (o + 3 > len || p[o] != 0)            /* filler */
		return o + 1 > len; /* cut: the version is enough */
	out->caps = db__le16(p + o + 1);
	if (o + 8 <= len)
		out->caps |= (uint32_t)db__le16(p + o + 6) << 16;
	return true;
}

bool mysql__parse_login(const char *p, size_t len, struct mysql_login *out)
{
	memset(out, 0, sizeof(*out));
	if (len < 32)
		return false;
	out->caps = db__le32(p);
	if (!(out->caps & MYSQL_CLIENT_PROTOCOL_41))
		return false;
	if (len == 32) {
		out->ssl_request = (out->caps & MYSQL_CLIENT_SSL) != 0;
		return true;
	}
	size_t o = 32;
	const char *nul = memchr(p + o, '\0', len - o);
	if (!nul)
		return true;
	out->user = (struct db_slice){p + o, (size_t)(nul - p - o)};
	o = (size_t)(nul - p) + 1;
	uint64_t auth_len = 0;
	if (out->caps & MYSQL_CLIENT_PLUGIN_AUTH_LENENC) {
		size_t n = mysql__lenenc(p + o, len - o, &auth_len);
		if (!n)
			return true;
		o += n;
	} else if (out->caps & MYSQL_CLIENT_SECURE_CONNECTION) {
		if (o >= len)
			return true;
		auth_len = (uint8_t)p[o++];
	} else {
		nul = memchr(p + o, '\0', len - o);
		if (!nul)
			return true;
		auth_len = (uint64_t)(nul - p - o) + 1;
	}
	if (auth_len > len - o)
		return true;
	o += auth_len;
	if ((out->caps & MYSQL_CLIENT_CONNECT_WITH_DB) && o < len) {
		nul = memchr(p + o, '\0', len - o);
		if (nul)
			out->database = (struct db_slice){p + o, (size_t)(nul - p - o)};
	}
	return true;
}

bool mysql__parse_ok(const char *p, size_t len, uint16_t *status)
{
	uint64_t v;
	if (len < 7 || ((uint8_t)p[0] != 0x00 && (uint8_t)p[0] != 0xfe))
		return false;
	size_t o = 1, n;
	if (!(n = mysql__lenenc(p + o, len - o, &v))) /* affected rows */
		return false;
	o += n;
	if (!(n = mysql__lenenc(p + o, len - o, &v))) /* last insert id */
		return false;
	o += n;
	if (o + 2 > len)
		return false;
	*status = db__le16(p + o);
	return true;
}

bool mysql__is_eof(const char *p, size_t len, uint16_t *status)
{
	if (len != 5 || (uint8_t)p[0] != 0xfe)
		return false;
	*status = db__le16(p + 3);
	return true;
}

bool mysql__parse_err(const char *p, size_t len, struct mysql_error *out)
{
	memset(out, 0, sizeof(*out));
	if (len < 3 || (uint8_t)p[0] != 0xff)
		return false;
	out->code = db__le16(p + 1);
	size_t o = 3;
	if (len >= 9 && p[3] == '#') {
		memcpy(out->sqlstate, p + 4, 5);
		out->sqlstate[5] = '\0';
		o = 9;
	}
	out->message = (struct db_slice){p + o, len - o};
	return true;
}

bool mysql__parse_prepare_ok(const char *p, size_t len, uint32_t *stmt_id, uint16_t *columns,
			     uint16_t *params)
{
	if (len < 9 || p[0] != 0)
		return false;
	*stmt_id = db__le32(p + 1);
	*columns = db__le16(p + 5);
	*params = db__le16(p + 7);
	return true;
}

bool mysql__query_text(const char *p, size_t len, int attrs, struct db_slice *sql)
{
	size_t o = 0;
	if (attrs > 0 || (attrs < 0 && len >= 2 && p[0] == 0 && p[1] == 1)) {
		/* parameter_count, parameter_set_count (always 1) */
		uint64_t count, sets;
		size_t n = mysql__lenenc(p, len, &count);
		if (!n)
			return false;
		size_t m = mysql__lenenc(p + n, len - n, &sets);
		if (!m)
			return false;
		if (count)
			return false; /* typed attribute values precede the text: not worth it */
		o = n + m;
	}
	*sql = (struct db_slice){p + o, len - o};
	return true;
}

bool mysql__looks_like_greeting(const char *buf, size_t captured, size_t total)
{
	struct mysql_greeting g;
	if (captured < 4 + 20 || captured != total)
		return false;
	uint32_t len = db__le24(buf);
	if (buf[3] != 0 || len + 4 != total || len > 1024)
		return false;
	if (!mysql__parse_greeting(buf + 4, len, &g) || !(g.caps & MYSQL_CLIENT_PROTOCOL_41))
		return false;
	return g.version.p[0] >= '0' && g.version.p[0] <= '9';
}

static bool starts_like_sql(const char *p, size_t len)
{
	size_t i = 0;
	while (i < len && (p[i] == ' ' || p[i] == '\t' || p[i] == '\n' || p[i] == '\r'))
		i++;
	if (i >= len)
		return false;
	char c = p[i];
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '(' || c == '/';
}

bool mysql__looks_like_command(const char *buf, size_t captured, size_t total)
{
	if (captured < 5)
		return false;
	uint32_t len = db__le24(buf);
	if (buf[3] != 0 || (size_t)len + 4 != total || !len)
		return false;
	const char *p = buf + 5;
	size_t avail = captured - 5;
	switch ((uint8_t)buf[4]) {
	case MYSQL_COM_QUERY:
	case MYSQL_COM_STMT_PREPARE: {
		struct db_slice sql;
		if (!mysql__query_text(p, avail, -1, &sql) || sql.len < 4)
			return false;
		return starts_like_sql(sql.p, sql.len) && db__is_text(sql.p, sql.len);
	}
	case MYSQL_COM_STMT_EXECUTE:
		/* statement id, flags (cursor type), iteration count = 1 */
		return len >= 10 && avail >= 9 && (uint8_t)p[4] < 0x10 && db__le32(p + 5) == 1;
	default:
		return false;
	}
}

bool mysql__ends_with_terminator(const char *buf, size_t len)
{
	uint16_t status;
	if (len >= 9) {
		const char *t = buf + len - 9;
		if (db__le24(t) == 5 && mysql__is_eof(t + 4, 5, &status))
			return !(status & MYSQL_SERVER_MORE_RESULTS);
	}
	if (len >= 11) {
		const char *t = buf + len - 11;
		if (db__le24(t) == 7 && (uint8_t)t[4] == 0xfe && mysql__parse_ok(t + 4, 7, &status))
			return !(status & MYSQL_SERVER_MORE_RESULTS);
	}
	return false;
}
