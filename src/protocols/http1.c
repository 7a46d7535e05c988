#include "protocols/http1.h"

#include <string.h>
#include <strings.h>

/* RFC 9110 tchar, one table lookup per byte of every header name. */
#define T1(c) [c] = true
static const bool tchar[256] = {
	T1('!'), T1('#'), T1('$'), T1('%'), T1('&'), T1('\''), T1('*'), T1('+'), T1('-'), T1('.'),
	T1('^'), T1('_'), T1('`'), T1('|'), T1('~'),
	T1('0'), T1('1'), T1('2'), T1('3'), T1('4'), T1('5'), T1('6'), T1('7'), T1('8'), T1('9'),
	T1('A'), T1('B'), T1('C'), T1('D'), T1('E'), T1('F'), T1('G'), T1('H'), T1('I'), T1('J'),
	T1('K'), T1('L'), T1('M'), T1('N'), T1('O'), T1('P'), T1('Q'), T1('R'), T1('S'), T1('T'),
	T1('U'), T1('V'), T1('W'), T1('X'), T1('Y'), T1('Z'),
	T1('a'), T1('b'), T1('c'), T1('d'), T1('e'), T1('f'), T1('g'), T1('h'), T1('i'), T1('j'),
	T1('k'), T1('l'), T1('m'), T1('n'), T1('o'), T1('p'), T1('q'), T1('r'), T1('s'), T1('t'),
	T1('u'), T1('v'), T1('w'), T1('x'), T1('y'), T1('z'),
};
#undef T1

static inline bool is_tchar(unsigned char c)
{
	return tchar[c];
}

static bool is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

#define MAX_METHOD 32

bool http1__looks_like_request(const char *buf, size_t len)
{
	size_t i = 0;
	while (i < len && i < MAX_METHOD && is_tchar((unsigned char)buf[i]))
		i++;
	if (i == 0 || i == len)
		return i > 0 && len < MAX_METHOD; /* all token so far: cannot tell yet */
	if (buf[i] != ' ')
		return false;
	/* The target starts with '/', '*', or an absolute URI (scheme ':'); an
	 * authority-form target only follows CONNECT. */
	if (i + 1 >= len)
		return true;
	unsigned char t = (unsigned char)buf[i + 1];
	if (t == '/' || t == '*')
		return true;
	if (i == 7 && !memcmp(buf, "CONNECT", 7))
		return t > ' ' && t < 0x7f;
	return (t >= 'a' && t <= 'z') || (t >= 'A' && t <= 'Z');
}

bool http1__looks_like_response(const char *buf, size_t len)
{
	static const char prefix[] = "HTTP/1.";
	size_t n = len < 7 ? len : 7;
	if (memcmp(buf, prefix, n))
		return false;
	if (len > 7 && !is_digit((unsigned char)buf[7]))
		return false;
	if (len > 8 && buf[8] != ' ')
		return false;
	return true;
}

bool http1__method_known(const char *m, size_t len)
{
	static const char *const known[] = {"GET",     "HEAD",    "POST",  "PUT",  "DELETE",
					    "CONNECT", "OPTIONS", "TRACE", "PATCH"};
	for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
		if (strlen(known[i]) == len && !memcmp(known[i], m, len))
			return true;
	return false;
}

bool http1__response_has_no_body(const char *method, size_t method_len, int status)
{
	if (status < 200 || status == 204 || status == 304)
		return true;
	if (method_len == 4 && !memcmp(method, "HEAD", 4))
		return true;
	/* A 2xx to CONNECT turns the connection into a tunnel. */
	if (method_len == 7 && !memcmp(method, "CONNECT", 7) && status < 300)
		return true;
	return false;
}

/* Finds the end of the line starting at buf[i]: returns the index of '\n'
 * or -1. Lines end in CRLF; a bare LF is tolerated (RFC 9112 2.2). */
static long line_end(const char *buf, size_t len, size_t i)
{
	const char *nl = memchr(buf + i, '\n', len - i);
	return nl ? nl - buf : -1;
}

/* Whether p[0, n) equals lit, a lowercase literal, ignoring ASCII case.
 * Header names are ASCII (RFC 9110 5.1): no locale-aware strncasecmp, which
 * perf showed at 4% of the agent's CPU under load. */
static inline bool ascii_ieq(const char *p, const char *lit, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)p[i];
		if ((c >= 'A' && c <= 'Z' ? c + 32 : c) != (unsigned char)lit[i])
			return false;
	}
	return true;
}

/* Whether slice s equals lit, a lowercase string literal, ignoring ASCII
 * case; the literal's length is a constant, not a strlen at every header. */
#define ieq(s, lit) ieq_n((s), "" lit, sizeof(lit) - 1)

static inline bool ieq_n(struct http1_slice s, const char *lit, size_t n)
{
	return s.len == n && ascii_ieq(s.p, lit, n);
}

/* The next element of a comma-separated header value from *pos, without
 * its parameters (";...") and surrounding whitespace: empty after a
 * trailing comma; false past the end. */
static bool list_next(struct http1_slice v, size_t *pos, struct http1_slice *elem)
{
	size_t i = *pos;
	if (i >= v.len)
		return false;
	while (i < v.len && (v.p[i] == ' ' || v.p[i] == '\t' || v.p[i] == ','))
		i++;
	size_t start = i;
	while (i < v.len && v.p[i] != ',' && v.p[i] != ';')
		i++;
	size_t end = i;
	while (end > start && (v.p[end - 1] == ' ' || v.p[end - 1] == '\t'))
		end--;
	while (i < v.len && v.p[i] != ',')
		i++; /* skip parameters */
	*pos = i;
	*elem = (struct http1_slice){v.p + start, end - start};
	return true;
}

/* Whether a comma-separated header value contains token (a lowercase string
 * literal), case-insensitive; last_only: as its last element. Empty
 * elements are ignored (RFC 9110 5.6.1): "chunked," ends in chunked. */
#define list_has(v, token, last_only) list_has_n((v), "" token, sizeof(token) - 1, (last_only))

static bool list_has_n(struct http1_slice v, const char *token, size_t n, bool last_only)
{
	bool found = false;
	struct http1_slice elem;
	for (size_t i = 0; list_next(v, &i, &elem);) {
		if (!elem.len)
			continue;
		found = ieq_n(elem, token, n);
		if (found && !last_only)
			return true;
	}
	return found;
}

static int parse_content_length(struct http1_slice v, int64_t *out)
{
	/* "Content-Length: 5, 5" is allowed when the values agree. */
	int64_t value = -1;
	size_t i = 0;
	while (i < v.len) {
		while (i < v.len && (v.p[i] == ' ' || v.p[i] == '\t' || v.p[i] == ','))
			i++;
		if (i == v.len)
			break;
		if (!is_digit((unsigned char)v.p[i]))
			return -1;
		int64_t n = 0;
		while (i < v.len && is_digit((unsigned char)v.p[i])) {
			if (n > (INT64_MAX - 9) / 10)
				return -1;
			n = n * 10 + (v.p[i] - '0');
			i++;
		}
		while (i < v.len && (v.p[i] == ' ' || v.p[i] == '\t'))
			i++;
		if (i < v.len && v.p[i] != ',')
			return -1;
		if (value >= 0 && value != n)
			return -1;
		value = n;
	}
	if (value < 0)
		return -1;
	*out = value;
	return 0;
}

/* Parses header lines from buf[i]; returns the head length or NEED_MORE or
 * ERROR. */
static int parse_headers(const char *buf, size_t len, size_t i, struct http1_head *h)
{
	h->content_length = -1;
	for (;;) {
		long e = line_end(buf, len, i);
		if (e < 0)
			return HTTP1_NEED_MORE;
		size_t end = (size_t)e;
		size_t content_end = end > i && buf[end - 1] == '\r' ? end - 1 : end;
		if (content_end == i) { /* empty line: end of head */
			h->head_len = end + 1;
			if (h->head_len > 0x7fffffff)
				return HTTP1_ERROR;
			return (int)h->head_len;
		}
		if (buf[i] == ' ' || buf[i] == '\t') { /* obsolete line folding: ignore */
			i = end + 1;
			continue;
		}
		size_t colon = i;
		while (colon < content_end && is_tchar((unsigned char)buf[colon]))
			colon++;
		if (colon == i || colon == content_end || buf[colon] != ':')
			return HTTP1_ERROR;
		struct http1_slice name = {buf + i, colon - i};
		size_t vs = colon + 1, ve = content_end;
		while (vs < ve && (buf[vs] == ' ' || buf[vs] == '\t'))
			vs++;
		while (ve > vs && (buf[ve - 1] == ' ' || buf[ve - 1] == '\t'))
			ve--;
		struct http1_slice value = {buf + vs, ve - vs};

		switch (name.len) {
		case 4:
			if (ieq(name, "host"))
				h->host = value;
			break;
		case 6:
			if (ieq(name, "expect"))
				h->expect_continue = ieq(value, "100-continue");
			break;
		case 7:
			if (ieq(name, "upgrade"))
				h->upgrade_h2c = list_has(value, "h2c", false);
			break;
		case 10:
			if (ieq(name, "user-agent"))
				h->user_agent = value;
			else if (ieq(name, "connection")) {
				/* Both options in one pass over the list. */
				struct http1_slice opt;
				for (size_t at = 0; list_next(value, &at, &opt);) {
					h->connection_close |= ieq(opt, "close");
					h->connection_keep_alive |= ieq(opt, "keep-alive");
				}
			} else if (ieq(name, "tracestate"))
				h->tracestate = value;
			break;
		case 11:
			if (ieq(name, "traceparent"))
				h->traceparent = value;
			break;
		case 12:
			if (ieq(name, "content-type"))
				h->content_type = value;
			break;
		case 14:
			if (ieq(name, "content-length")) {
				int64_t n;
				if (parse_content_length(value, &n) ||
				    (h->content_length >= 0 && h->content_length != n))
					return HTTP1_ERROR;
				h->content_length = n;
			} else if (ieq(name, "http2-settings"))
				h->http2_settings = true;
			break;
		case 17:
			if (ieq(name, "transfer-encoding")) {
				h->has_transfer_encoding = true;
				h->chunked = list_has(value, "chunked", true);
			}
			break;
		}
		i = end + 1;
	}
}

static int parse_version(const char *p, size_t len)
{
	if (len != 8 || memcmp(p, "HTTP/1.", 7) || !is_digit((unsigned char)p[7]))
		return -1;
	return p[7] == '0' ? 10 : 11;
}

int http1__parse_request_line_prefix(const char *buf, size_t len, struct http1_head *out,
				     bool *target_cut)
{
	memset(out, 0, sizeof(*out));
	size_t i = 0;
	while (i < len && i < MAX_METHOD && is_tchar((unsigned char)buf[i]))
		i++;
	if (i == 0 || i >= len || buf[i] != ' ')
		return HTTP1_ERROR;
	out->method = (struct http1_slice){buf, i};
	size_t ts = ++i;
	while (i < len && buf[i] != ' ' && buf[i] != '\r' && buf[i] != '\n') {
		if ((unsigned char)buf[i] < 0x21 || (unsigned char)buf[i] == 0x7f)
			return HTTP1_ERROR;
		i++;
	}
	if (i == ts)
		return HTTP1_ERROR;
	out->target = (struct http1_slice){buf + ts, i - ts};
	*target_cut = i == len;
	out->version = 11;
	out->content_length = -1;
	if (!*target_cut && buf[i] == ' ') {
		size_t vs = i + 1, ve = vs;
		while (ve < len && buf[ve] != '\r' && buf[ve] != '\n')
			ve++;
		int v = parse_version(buf + vs, ve - vs);
		if (ve < len && v < 0)
			return HTTP1_ERROR;
		if (v > 0)
			out->version = v;
	}
	return 0;
}

int http1__parse_request_head(const char *buf, size_t len, struct http1_head *out)
{
	memset(out, 0, sizeof(*out));
	if (!len)
		return HTTP1_NEED_MORE;
	long e = line_end(buf, len, 0);
	if (e < 0) {
		/* Fail fast on bytes that cannot start a request. */
		if (!http1__looks_like_request(buf, len) || len > 64 * 1024)
			return HTTP1_ERROR;
		return HTTP1_NEED_MORE;
	}
	size_t end = (size_t)e, content_end = end > 0 && buf[end - 1] == '\r' ? end - 1 : end;
	size_t i = 0;
	while (i < content_end && i < MAX_METHOD && is_tchar((unsigned char)buf[i]))
		i++;
	if (i == 0 || i >= content_end || buf[i] != ' ')
		return HTTP1_ERROR;
	out->method = (struct http1_slice){buf, i};
	size_t ts = ++i;
	while (i < content_end && buf[i] != ' ') {
		if ((unsigned char)buf[i] < 0x21 || (unsigned char)buf[i] == 0x7f)
			return HTTP1_ERROR;
		i++;
	}
	if (i == ts || i >= content_end)
		return HTTP1_ERROR;
	out->target = (struct http1_slice){buf + ts, i - ts};
	out->version = parse_version(buf + i + 1, content_end - i - 1);
	if (out->version < 0)
		return HTTP1_ERROR;
	return parse_headers(buf, len, end + 1, out);
}

int http1__parse_response_head(const char *buf, size_t len, struct http1_head *out)
{
	memset(out, 0, sizeof(*out));
	if (!len)
		return HTTP1_NEED_MORE;
	long e = line_end(buf, len, 0);
	if (e < 0) {
		if (!http1__looks_like_response(buf, len) || len > 64 * 1024)
			return HTTP1_ERROR;
		return HTTP1_NEED_MORE;
	}
	size_t end = (size_t)e, content_end = end > 0 && buf[end - 1] == '\r' ? end - 1 : end;
	if (content_end < 12)
		return HTTP1_ERROR;
	out->version = parse_version(buf, 8);
	if (out->version < 0 || buf[8] != ' ' || !is_digit((unsigned char)buf[9]) ||
	    !is_digit((unsigned char)buf[10]) || !is_digit((unsigned char)buf[11]) ||
	    (content_end > 12 && buf[12] != ' '))
		return HTTP1_ERROR;
	out->status = (buf[9] - '0') * 100 + (buf[10] - '0') * 10 + (buf[11] - '0');
	if (out->status < 100)
		return HTTP1_ERROR;
	return parse_headers(buf, len, end + 1, out);
}

/* ---- chunked */

enum {
	CH_SIZE = 0,   /* hex digits of the chunk size */
	CH_EXT,        /* chunk extensions up to CRLF */
	CH_DATA,       /* chunk_left bytes of data */
	CH_DATA_CR,    /* CR after data */
	CH_DATA_LF,    /* LF after data */
	CH_TRAILER,    /* start of a trailer line (or the final empty line) */
	CH_TRAILER_LINE,
	CH_FINAL_LF,   /* LF of the final empty line */
	CH_DONE,
};

#define CH_MAX_LINE 4096

void http1__chunked_init(struct http1_chunked *c)
{
	memset(c, 0, sizeof(*c));
}

static int hexdigit(unsigned char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	ch |= 0x20;
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	return -1;
}

/* The decoder; with data set, it stops after the first run of chunk data
 * and says where that run lies in buf. */
static int64_t chunked_run(struct http1_chunked *c, const char *buf, size_t len, bool *done,
			   const char **data, size_t *data_len)
{
	size_t i = 0;
	*done = false;
	while (i < len) {
		unsigned char ch = (unsigned char)buf[i];
		switch (c->state) {
		case CH_SIZE: {
			int d = hexdigit(ch);
			if (d >= 0) {
				if (c->chunk_left >> 59)
					return HTTP1_ERROR; /* absurd size */
				c->chunk_left = c->chunk_left * 16 + (uint64_t)d;
				c->size_digits = true;
				i++;
				break;
			}
			if (!c->size_digits)
				return HTTP1_ERROR;
			c->state = CH_EXT;
			c->line_len = 0;
			break; /* re-examine ch in CH_EXT */
		}
		case CH_EXT:
			if (ch == '\n') {
				c->state = c->chunk_left ? CH_DATA : CH_TRAILER;
				c->size_digits = false;
				c->line_len = 0;
			} else if (++c->line_len > CH_MAX_LINE) {
				return HTTP1_ERROR;
			}
			i++;
			break;
		case CH_DATA: {
			size_t n = len - i;
			if (n > c->chunk_left)
				n = (size_t)c->chunk_left;
			c->chunk_left -= n;
			c->payload += n;
			if (data) {
				*data = buf + i;
				*data_len = n;
			}
			i += n;
			if (!c->chunk_left)
				c->state = CH_DATA_CR;
			if (data)
				return (int64_t)i;
			break;
		}
		case CH_DATA_CR:
			if (ch == '\r') {
				c->state = CH_DATA_LF;
				i++;
				break;
			}
			if (ch != '\n')
				return HTTP1_ERROR;
			/* fallthrough: bare LF */
			c->state = CH_DATA_LF;
			break;
		case CH_DATA_LF:
			if (ch != '\n')
				return HTTP1_ERROR;
			c->state = CH_SIZE;
			i++;
			break;
		case CH_TRAILER:
			if (ch == '\r') {
				c->state = CH_FINAL_LF;
				i++;
			} else if (ch == '\n') {
				i++;
				c->state = CH_DONE;
				*done = true;
				return (int64_t)i;
			} else {
				c->state = CH_TRAILER_LINE;
				c->line_len = 0;
			}
			break;
		case CH_TRAILER_LINE:
			if (ch == '\n')
				c->state = CH_TRAILER;
			else if (++c->line_len > CH_MAX_LINE)
				return HTTP1_ERROR;
			i++;
			break;
		case CH_FINAL_LF:
			if (ch != '\n')
				return HTTP1_ERROR;
			i++;
			c->state = CH_DONE;
			*done = true;
			return (int64_t)i;
		case CH_DONE:
			*done = true;
			return (int64_t)i;
		}
	}
	*done = c->state == CH_DONE;
	return (int64_t)i;
}

int64_t http1__chunked_feed(struct http1_chunked *c, const char *buf, size_t len, bool *done)
{
	return chunked_run(c, buf, len, done, NULL, NULL);
}

int64_t http1__chunked_data(struct http1_chunked *c, const char *buf, size_t len, bool *done,
			    const char **data, size_t *data_len)
{
	*data_len = 0;
	return chunked_run(c, buf, len, done, data, data_len);
}

bool http1__chunked_skip(struct http1_chunked *c, uint64_t n)
{
	if (c->state != CH_DATA || n > c->chunk_left)
		return false;
	c->chunk_left -= n;
	c->payload += n;
	if (!c->chunk_left)
		c->state = CH_DATA_CR;
	return true;
}
