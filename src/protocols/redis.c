/* RESP2 / RESP3 reader (see redis.h). */
#include "protocols/redis.h"

#include <string.h>

enum { R_TYPE = 0, R_LINE, R_BULK };

/* Bulk strings and aggregates beyond these sizes are not Redis talking. */
#define MAX_BULK (1ull << 34)
#define MAX_ELEMENTS (1ll << 32)

void redis__reader_init(struct redis_reader *r)
{
	memset(r, 0, sizeof(*r));
	r->kept_arg = -1;
}

bool redis__between(const struct redis_reader *r)
{
	return r->state == R_TYPE && r->depth == 0;
}

static void begin_top(struct redis_reader *r, char type)
{
	r->top = type;
	r->elements = 0;
	r->count0 = 0;
	r->bulk_elements = true;
	memset(r->arg_len, 0, sizeof(r->arg_len));
	memset(r->arg_cut, 0, sizeof(r->arg_cut));
	r->err_len = 0;
}

/* An element ended; true when that ended the top-level value. */
static bool element_done(struct redis_reader *r)
{
	r->state = R_TYPE;
	r->kept_arg = -1;
	while (r->depth) {
		if (--r->left[r->depth - 1] > 0)
			return false;
		r->depth--;
	}
	return true;
}

static bool parse_int(const char *p, size_t len, int64_t *out)
{
	bool neg = len && p[0] == '-';
	size_t i = neg;
	int64_t v = 0;
	if (i >= len || len - i > 18)
		return false;
	for (; i < len; i++) {
		if (p[i] < '0' || p[i] > '9')
			return false;
		v = v * 10 + (p[i] - '0');
	}
	*out = neg ? -v : v;
	return true;
}

/* A line (after its type byte, without CRLF) is complete. Returns -1 on a
 * protocol error, 1 when the top-level value ended, else 0. */
static int line_done(struct redis_reader *r)
{
	const char *l = r->line;
	size_t n = r->line_len;
	int64_t v;
	r->state = R_TYPE;
	switch (r->type) {
	case '+':
	case '-':
	case ':':
	case '_':
	case '#':
	case ',':
	case '(':
		if (r->type == '-' && r->depth == 0) {
			memcpy(r->err, l, n);
			r->err_len = (uint16_t)n;
		}
		return element_done(r);
	case '$':
	case '!':
	case '=':
		if (!parse_int(l, n, &v) || v < -1 || (v >= 0 && (uint64_t)v > MAX_BULK))
			return -1;
		if (r->depth == 1 && r->top == '*' && r->type != '$')
			r->bulk_elements = false;
		if (v < 0)
			return element_done(r); /* null bulk string */
		r->bulk_left = (uint64_t)v + 2;
		r->state = R_BULK;
		r->kept_arg = -1;
		if (r->depth == 1) {
			int64_t index = r->count0 - r->left[0];
			if (index >= 0 && index < REDIS_ARGS_KEPT) {
				r->kept_arg = (int)index;
				r->arg_cut[index] = v > REDIS_ARG_MAX;
			}
		}
		return 0;
	case '*':
	case '~':
	case '>':
	case '%':
	case '|':
		if (!parse_int(l, n, &v) || v < -1 || v > MAX_ELEMENTS)
			return -1;
		if (r->type == '%' || r->type == '|')
			v *= 2;
		if (r->depth == 0) {
			r->elements = v;
			r->count0 = v;
		} else if (r->depth == 1 && r->top == '*') {
			r->bulk_elements = false;
		}
		if (v <= 0)
			return element_done(r);
		if (r->depth >= REDIS_MAX_DEPTH)
			return -1;
		r->left[r->depth++] = v;
		return 0;
	default:
		return -1;
	}
}

/* Keeps bulk data bytes: the first arguments of a request, an error's text. */
static void keep_bulk(struct redis_reader *r, const char *p, size_t take)
{
	uint64_t data_left = r->bulk_left > 2 ? r->bulk_left - 2 : 0;
	size_t data = take < data_left ? take : (size_t)data_left;
	if (r->kept_arg >= 0) {
		int k = r->kept_arg;
		size_t room = REDIS_ARG_MAX - r->arg_len[k];
		size_t n = data < room ? data : room;
		memcpy(r->arg[k] + r->arg_len[k], p, n);
		r->arg_len[k] += (uint8_t)n;
	} else if (r->depth == 0 && r->type == '!') {
		size_t room = REDIS_LINE_MAX - r->err_len;
		size_t n = data < room ? data : room;
		memcpy(r->err + r->err_len, p, n);
		r->err_len += (uint16_t)n;
	}
}

int64_t redis__feed(struct redis_reader *r, const char *buf, size_t len, bool *done)
{
	size_t i = 0;
	*done = false;
	while (i < len) {
		switch (r->state) {
		case R_TYPE: {
			char c = buf[i++];
			if (!c || !strchr("+-:_#,($!=*~>%|", c))
				return REDIS_ERROR;
			if (r->depth == 0)
				begin_top(r, c);
			else if (r->depth == 1 && c != '$')
				r->bulk_elements = false;
			r->type = c;
			r->line_len = 0;
			r->cr = false;
			r->state = R_LINE;
			break;
		}
		case R_LINE: {
			const char *nl = memchr(buf + i, '\n', len - i);
			size_t end = nl ? (size_t)(nl - buf) : len;
			bool had_cr = end > i ? buf[end - 1] == '\r' : r->cr;
			size_t take = end - i;
			if (take > (size_t)(REDIS_LINE_MAX - r->line_len))
				take = (size_t)(REDIS_LINE_MAX - r->line_len);
			memcpy(r->line + r->line_len, buf + i, take);
			r->line_len += (uint16_t)take;
			if (!nl) {
				r->cr = had_cr;
				i = len;
				break;
			}
			if (!had_cr)
				return REDIS_ERROR;
			if (r->line_len && r->line[r->line_len - 1] == '\r')
				r->line_len--;
			i = end + 1;
			int d = line_done(r);
			if (d < 0)
				return REDIS_ERROR;
			if (d) {
				*done = true;
				return (int64_t)i;
			}
			break;
		}
		case R_BULK: {
			size_t take = len - i < r->bulk_left ? len - i : (size_t)r->bulk_left;
			keep_bulk(r, buf + i, take);
			r->bulk_left -= take;
			i += take;
			if (!r->bulk_left) {
				if (i >= 2 && (buf[i - 1] != '\n' || buf[i - 2] != '\r') &&
				    take >= 2)
					return REDIS_ERROR;
				if (element_done(r)) {
					*done = true;
					return (int64_t)i;
				}
			}
			break;
		}
		}
	}
	return (int64_t)i;
}

bool redis__skip(struct redis_reader *r, uint64_t n, bool *done)
{
	*done = false;
	if (!n)
		return true;
	if (r->state != R_BULK || n > r->bulk_left)
		return false;
	if (r->kept_arg >= 0 && r->bulk_left > 2)
		r->arg_cut[r->kept_arg] = true;
	r->kept_arg = -1; /* bytes after the hole would not follow the kept ones */
	r->bulk_left -= n;
	if (!r->bulk_left)
		*done = element_done(r);
	return true;
}

/* Reads "<c><digits>\r\n" at *i: 1 ok, 0 no, -1 cut short. */
static int header(const char *buf, size_t len, size_t *i, char c, int64_t *v)
{
	size_t j = *i;
	if (j >= len)
		return -1;
	if (buf[j++] != c)
		return 0;
	size_t start = j;
	while (j < len && buf[j] >= '0' && buf[j] <= '9' && j - start < 10)
		j++;
	if (j >= len)
		return -1;
	if (j == start || buf[j] != '\r')
		return 0;
	if (j + 1 >= len)
		return -1;
	if (buf[j + 1] != '\n')
		return 0;
	parse_int(buf + start, j - start, v);
	*i = j + 2;
	return 1;
}

static bool name_char(char c, bool first)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (!first && ((c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-' || c == '|'));
}

int redis__looks_like_command(const char *buf, size_t captured, size_t total)
{
	size_t i = 0;
	int64_t n = 0, m = 0;
	/* A prefix that is all there is may still become a command. */
	int cut = captured == total && captured < 48 ? -1 : 0;
	int h = header(buf, captured, &i, '*', &n);
	if (h <= 0)
		return h < 0 ? cut : 0;
	if (n < 1 || n > (1 << 20))
		return 0;
	h = header(buf, captured, &i, '$', &m);
	if (h <= 0)
		return h < 0 ? cut : 0;
	if (m < 1 || m > 32)
		return 0;
	for (int64_t k = 0; k < m; k++) {
		if (i + (size_t)k >= captured)
			return cut;
		if (!name_char(buf[i + (size_t)k], k == 0))
			return 0;
	}
	i += (size_t)m;
	if (i + 2 > captured)
		return cut;
	return buf[i] == '\r' && buf[i + 1] == '\n' ? 1 : 0;
}

bool redis__known_command(const char *name, size_t len)
{
	static const char *const commands[] = {
		"APPEND", "AUTH", "BLMOVE", "BLPOP", "BRPOP", "BZPOPMIN", "BZPOPMAX", "CLIENT",
		"CLUSTER", "COMMAND", "CONFIG", "COPY", "DBSIZE", "DECR", "DECRBY", "DEL", "DISCARD",
		"DUMP", "ECHO", "EVAL", "EVALSHA", "EXEC", "EXISTS", "EXPIRE", "EXPIREAT", "FCALL",
		"FLUSHALL", "FLUSHDB", "FUNCTION", "GEOADD", "GEORADIUS", "GEOSEARCH", "GET",
		"GETDEL", "GETEX", "GETRANGE", "GETSET", "HDEL", "HELLO", "HEXISTS", "HGET",
		"HGETALL", "HINCRBY", "HINCRBYFLOAT", "HKEYS", "HLEN", "HMGET", "HMSET", "HSCAN",
		"HSET", "HSETNX", "HVALS", "INCR", "INCRBY", "INCRBYFLOAT", "INFO", "KEYS", "LINDEX",
		"LINSERT", "LLEN", "LMOVE", "LPOP", "LPUSH", "LPUSHX", "LRANGE", "LREM", "LSET",
		"LTRIM", "MGET", "MONITOR", "MSET", "MSETNX", "MULTI", "PERSIST", "PEXPIRE", "PFADD",
		"PFCOUNT", "PING", "PSETEX", "PSUBSCRIBE", "PTTL", "PUBLISH", "QUIT", "RENAME",
		"RESET", "RPOP", "RPOPLPUSH", "RPUSH", "RPUSHX", "SADD", "SCAN", "SCARD", "SCRIPT",
		"SDIFF", "SELECT", "SET", "SETEX", "SETNX", "SETRANGE", "SINTER", "SISMEMBER",
		"SMEMBERS", "SMOVE", "SPOP", "SRANDMEMBER", "SREM", "SSCAN", "STRLEN", "SUBSCRIBE",
		"SUNION", "TIME", "TOUCH", "TTL", "TYPE", "UNLINK", "UNSUBSCRIBE", "UNWATCH", "WATCH",
		"XACK", "XADD", "XCLAIM", "XDEL", "XGROUP", "XLEN", "XRANGE", "XREAD", "XREADGROUP",
		"XTRIM", "ZADD", "ZCARD", "ZCOUNT", "ZINCRBY", "ZPOPMIN", "ZRANGE", "ZRANGEBYSCORE",
		"ZRANK", "ZREM", "ZREVRANGE", "ZSCAN", "ZSCORE", "ZUNIONSTORE",
	};
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
		if (strlen(commands[i]) != len)
			continue;
		size_t k = 0;
		while (k < len && (name[k] == commands[i][k] || name[k] == commands[i][k] + 32))
			k++;
		if (k == len)
			return true;
	}
	return false;
}
