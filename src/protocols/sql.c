/*
 * SQL sanitizer and summary. A small lexer, not a parser: enough to tell
 * literals from identifiers in every dialect rastro meets, and to find the
 * statement's verb and main table. Anything it does not understand is copied
 * (identifiers, operators) or replaced (anything quoted as a value), so the
 * failure mode is a less readable text, never a leaked value.
 */
#include "protocols/sql.h"

#include <stdint.h>
#include <string.h>

/* Character classes, one load per byte: the sanitizer reads every byte of
 * every statement. Bytes >= 0x80 are UTF-8 letters as far as SQL goes. */
enum { C_SPACE = 1, C_DIGIT = 2, C_ALPHA = 4, C_IDENT_START = 8, C_IDENT = 16 };

static const uint8_t char_class[256] = {
	[' '] = C_SPACE, ['\t'] = C_SPACE, ['\n'] = C_SPACE, ['\r'] = C_SPACE, ['\f'] = C_SPACE,
	['\v'] = C_SPACE,
	['0' ... '9'] = C_DIGIT | C_IDENT,
	['a' ... 'z'] = C_ALPHA | C_IDENT_START | C_IDENT,
	['A' ... 'Z'] = C_ALPHA | C_IDENT_START | C_IDENT,
	['_'] = C_IDENT_START | C_IDENT,
	['$'] = C_IDENT,
	[0x80 ... 0xff] = C_IDENT_START | C_IDENT,
};

static bool is_space(unsigned char c)
{
	return char_class[c] & C_SPACE;
}

static bool is_digit(unsigned char c)
{
	return char_class[c] & C_DIGIT;
}

static bool is_alpha(unsigned char c)
{
	return char_class[c] & C_ALPHA;
}

static bool is_ident_start(unsigned char c)
{
	return char_class[c] & C_IDENT_START;
}

static bool is_ident(unsigned char c)
{
	return char_class[c] & C_IDENT;
}

static char upper(char c)
{
	return c >= 'a' && c <= 'z' ? (char)(c - 32) : c;
}

/* Whether p is keyword kw (upper case), in any case. The first letter is
 * compared before the keyword's length is taken: most words are not the one
 * asked for. */
static bool word_is(const char *p, size_t len, const char *kw)
{
	if (!len || upper(p[0]) != kw[0])
		return false;
	size_t n = strlen(kw);
	if (len != n)
		return false;
	for (size_t i = 0; i < n; i++)
		if (upper(p[i]) != kw[i])
			return false;
	return true;
}

/* Whether the word at p is the value TRUE or FALSE: not after a ".", where
 * it names a column. The sanitizer hides it as a literal, and the summary
 * takes it as one too. */
static bool is_boolean(const char *p, size_t len, char prev)
{
	return prev != '.' && (word_is(p, len, "TRUE") || word_is(p, len, "FALSE"));
}

/* Index after the closing quote of a quoted run starting after its opening
 * quote at i; len when it is not closed (cut text). A doubled quote is an
 * escaped quote; backslash escapes where the dialect has them. */
static size_t skip_quoted(const char *q, size_t i, size_t len, char quote, bool backslash)
{
	while (i < len) {
		char c = q[i];
		if (c == '\0')
			return len;
		if (backslash && c == '\\') {
			i = i + 2 < len ? i + 2 : len;
			continue;
		}
		if (c == quote) {
			if (i + 1 < len && q[i + 1] == quote) {
				i += 2;
				continue;
			}
			return i + 1;
		}
		i++;
	}
	return len;
}

/* The letters of X'..', B'..', E'..' and N'..' literals. */
static bool is_literal_prefix(unsigned char c)
{
	c |= 0x20;
	return c == 'x' || c == 'b' || c == 'e' || c == 'n';
}

/* Whether a comment can start with c (comment_end says whether one does). */
static bool may_start_comment(unsigned char c)
{
	return c == '-' || c == '/' || c == '#';
}

/* End of a comment starting at i ("--", "#" or slash-star), or 0 when none
 * starts there. PostgreSQL block comments nest; MySQL's do not. */
static size_t comment_end(const char *q, size_t i, size_t len, enum sql_dialect d)
{
	bool line = false;
	if (q[i] == '-' && i + 1 < len && q[i + 1] == '-') {
		/* MySQL needs white space after "--": "1--1" is arithmetic. */
		if (d == SQL_DIALECT_MYSQL && i + 2 < len && !is_space((unsigned char)q[i + 2]) &&
		    (unsigned char)q[i + 2] >= 0x20)
			return 0;
		line = true;
	} else if (q[i] == '#' && d == SQL_DIALECT_MYSQL) {
		line = true;
	}
	if (line) {
		const char *nl = memchr(q + i, '\n', len - i);
		return nl ? (size_t)(nl - q) + 1 : len;
	}
	if (q[i] == '/' && i + 1 < len && q[i + 1] == '*') {
		int depth = 1;
		size_t j = i + 2;
		while (j < len && depth > 0) {
			if (q[j] == '*' && j + 1 < len && q[j + 1] == '/') {
				depth--;
				j += 2;
			} else if (d == SQL_DIALECT_ANSI && q[j] == '/' && j + 1 < len &&
				   q[j + 1] == '*') {
				depth++;
				j += 2;
			} else {
				j++;
			}
		}
		return j;
	}
	return 0;
}

/* A PostgreSQL dollar quote opening at i ("$$" or "$tag$"): its length, or
 * 0. "$1" is a parameter, not a quote. */
static size_t dollar_tag(const char *q, size_t i, size_t len)
{
	size_t j = i + 1;
	if (j < len && is_digit((unsigned char)q[j]))
		return 0;
	while (j < len && is_ident((unsigned char)q[j]) && q[j] != '$')
		j++;
	return j < len && q[j] == '$' ? j - i + 1 : 0;
}

/* End of a "$1" parameter at i, or 0 when there is none. The sanitizer and
 * the summary's lexer must read it alike (the summary cache relies on it). */
static size_t param_end(const char *q, size_t i, size_t len)
{
	size_t j = i + 1;
	if (j >= len || !is_digit((unsigned char)q[j]))
		return 0;
	while (j < len && is_digit((unsigned char)q[j]))
		j++;
	return j;
}

/* End of a number starting at i: digits, letters (hex 0x.., suffixes),
 * '_', '.', and an exponent's sign. */
static size_t number_end(const char *q, size_t i, size_t len)
{
	bool hex = q[i] == '0' && i + 1 < len && (q[i + 1] == 'x' || q[i + 1] == 'X');
	size_t j = i;
	while (j < len) {
		unsigned char c = (unsigned char)q[j];
		if (is_digit(c) || is_alpha(c) || c == '_' || c == '.') {
			j++;
		} else if ((c == '+' || c == '-') && !hex && j > i &&
			   (q[j - 1] == 'e' || q[j - 1] == 'E') && j + 1 < len &&
			   is_digit((unsigned char)q[j + 1])) {
			j++;
		} else {
			break;
		}
	}
	return j;
}

struct out {
	char *p;
	size_t n, cap;
	bool space; /* white space seen since the last token */
};

static void put_space(struct out *o)
{
	if (o->space && o->n && o->n + 1 < o->cap)
		o->p[o->n++] = ' ';
	o->space = false;
}

static void put(struct out *o, const char *s, size_t len)
{
	put_space(o);
	if (o->n + 1 >= o->cap)
		return;
	if (len > o->cap - 1 - o->n)
		len = o->cap - 1 - o->n;
	memcpy(o->p + o->n, s, len);
	o->n += len;
}

/* A literal: its text when kept, else "?". Kept text has its white space
 * runs collapsed like the rest. */
static void put_literal(struct out *o, const char *s, size_t len, bool keep)
{
	if (!keep) {
		put(o, "?", 1);
		return;
	}
	put_space(o);
	for (size_t i = 0; i < len && o->n + 1 < o->cap; i++)
		o->p[o->n++] = s[i];
}

size_t sql__sanitize(const char *q, size_t len, enum sql_dialect d, bool keep, char *out,
		     size_t cap)
{
	struct out o = {.p = out, .cap = cap};
	if (!cap)
		return 0;
	const char *nul = memchr(q, '\0', len);
	if (nul)
		len = (size_t)(nul - q);
	bool mysql = d == SQL_DIALECT_MYSQL;
	size_t i = 0;
	char prev = 0; /* last significant input character before the token */
	while (i < len && o.n + 1 < o.cap) {
		unsigned char c = (unsigned char)q[i];
		size_t start = i, e;
		if (is_space(c)) {
			o.space = true;
			i++;
			continue;
		}
		if (may_start_comment(c) && (e = comment_end(q, i, len, d))) {
			o.space = true;
			i = e;
			continue;
		}
		if (c == '\'' || (c == '"' && mysql)) {
			i = skip_quoted(q, i + 1, len, (char)c, mysql);
			put_literal(&o, q + start, i - start, keep);
		} else if (c == '"' || c == '`') {
			/* a quoted identifier */
			i = skip_quoted(q, i + 1, len, (char)c, false);
			put(&o, q + start, i - start);
		} else if (c == '$' && !mysql && (e = dollar_tag(q, i, len))) {
			const char *end = memmem(q + i + e, len - i - e, q + i, e);
			i = end ? (size_t)(end - q) + e : len;
			put_literal(&o, q + start, i - start, keep);
		} else if (c == '$' && (e = param_end(q, i, len))) {
			i = e;
			put(&o, q + start, i - start);
		} else if (is_literal_prefix(c) && i + 1 < len && q[i + 1] == '\'') {
			/* X'0f', B'01', E'esc\'aped', N'national' */
			bool bs = mysql || c == 'e' || c == 'E';
			i = skip_quoted(q, i + 2, len, '\'', bs);
			put_literal(&o, q + start, i - start, keep);
		} else if (is_digit(c) ||
			   (c == '.' && i + 1 < len && is_digit((unsigned char)q[i + 1]))) {
			i = number_end(q, i, len);
			put_literal(&o, q + start, i - start, keep);
		} else if (is_ident_start(c)) {
			while (i < len && is_ident((unsigned char)q[i]))
				i++;
			if (is_boolean(q + start, i - start, prev))
				put_literal(&o, q + start, i - start, keep);
			else
				put(&o, q + start, i - start);
		} else {
			i++;
			put(&o, q + start, 1);
		}
		prev = q[i - 1];
	}
	o.p[o.n] = '\0';
	return o.n;
}

/* ---- summary */

enum tok_kind { T_END = 0, T_WORD, T_QUOTED_ID, T_OPEN, T_CLOSE, T_DOT, T_OTHER };

struct tok {
	enum tok_kind kind;
	const char *p;
	size_t len;
};

struct lexer {
	const char *q;
	size_t len, i;
	enum sql_dialect d;
	char prev; /* the last byte of the last token, as in the sanitizer */
};

static struct tok next_tok(struct lexer *lx)
{
	const char *q = lx->q;
	size_t len = lx->len;
	bool mysql = lx->d == SQL_DIALECT_MYSQL;
	for (;;) {
		size_t i = lx->i, e;
		if (i >= len || q[i] == '\0')
			return (struct tok){T_END, q + i, 0};
		unsigned char c = (unsigned char)q[i];
		if (is_space(c)) {
			lx->i++;
			continue;
		}
		if (may_start_comment(c) && (e = comment_end(q, i, len, lx->d))) {
			lx->i = e;
			continue;
		}
		struct tok t = {T_OTHER, q + i, 1};
		if (c == '(') {
			t.kind = T_OPEN;
			lx->i++;
		} else if (c == ')') {
			t.kind = T_CLOSE;
			lx->i++;
		} else if (c == '.' && !(i + 1 < len && is_digit((unsigned char)q[i + 1]))) {
			t.kind = T_DOT;
			lx->i++;
		} else if ((c == '"' && !mysql) || c == '`') {
			e = skip_quoted(q, i + 1, len, (char)c, false);
			t.kind = T_QUOTED_ID;
			t.p = q + i + 1;
			t.len = e > i + 1 && q[e - 1] == (char)c ? e - i - 2 : e - i - 1;
			lx->i = e;
		} else if (c == '\'' || c == '"') {
			lx->i = skip_quoted(q, i + 1, len, (char)c, mysql);
		} else if (c == '$' && !mysql && (e = dollar_tag(q, i, len))) {
			const char *end = memmem(q + i + e, len - i - e, q + i, e);
			lx->i = end ? (size_t)(end - q) + e : len;
		} else if (c == '$' && (e = param_end(q, i, len))) {
			/* "$1e'x'" is a parameter, then a literal, not "$" and the
			 * number "1e" */
			lx->i = e;
		} else if (is_digit(c) || c == '.') {
			lx->i = number_end(q, i, len);
		} else if (is_literal_prefix(c) && i + 1 < len && q[i + 1] == '\'') {
			lx->i = skip_quoted(q, i + 2, len, '\'', mysql || c == 'e' || c == 'E');
		} else if (is_ident_start(c)) {
			e = i;
			while (e < len && is_ident((unsigned char)q[e]))
				e++;
			t.len = e - i;
			t.kind = is_boolean(t.p, t.len, lx->prev) ? T_OTHER : T_WORD;
			lx->i = e;
		} else {
			lx->i++;
		}
		lx->prev = q[lx->i - 1];
		return t;
	}
}

/* Words that follow FROM/JOIN/INTO/TABLE but are not a table's name. */
static bool is_modifier(const struct tok *t)
{
	static const char *const words[] = {"ONLY",	    "LATERAL", "IF",	"NOT",	 "EXISTS",
					    "LOW_PRIORITY", "QUICK",   "IGNORE", "DELAYED",
					    "HIGH_PRIORITY", "INTO",   "FROM"};
	if (t->kind != T_WORD)
		return false;
	for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
		if (word_is(t->p, t->len, words[i]))
			return true;
	return false;
}

static bool is_reserved(const struct tok *t)
{
	static const char *const words[] = {"SELECT", "WHERE", "SET",	 "VALUES", "DEFAULT",
					    "AS",     "ON",    "USING", "WITH",	  "UNNEST"};
	if (t->kind != T_WORD)
		return false;
	for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
		if (word_is(t->p, t->len, words[i]))
			return true;
	return false;
}

/* Reads a (possibly qualified) table name at the lexer's position into out.
 * After FROM and JOIN (in_from), a name followed by "(" is a function call,
 * not a table; elsewhere "(" starts a column list. */
static bool read_name(struct lexer *lx, char *out, size_t cap, bool in_from)
{
	struct tok t = next_tok(lx);
	while (is_modifier(&t))
		t = next_tok(lx);
	if ((t.kind != T_WORD && t.kind != T_QUOTED_ID) || is_reserved(&t))
		return false;
	size_t n = 0;
	for (;;) {
		size_t take = t.len < cap - 1 - n ? t.len : cap - 1 - n;
		memcpy(out + n, t.p, take);
		n += take;
		struct lexer save = *lx;
		struct tok dot = next_tok(lx);
		if (dot.kind != T_DOT) {
			*lx = save;
			break;
		}
		t = next_tok(lx);
		if (t.kind != T_WORD && t.kind != T_QUOTED_ID)
			break;
		if (n + 1 < cap)
			out[n++] = '.';
	}
	out[n] = '\0';
	struct lexer save = *lx;
	bool call = in_from && next_tok(lx).kind == T_OPEN;
	*lx = save;
	if (call || !n) {
		out[0] = '\0';
		return false;
	}
	return true;
}

/* SELECT: the name after the outermost FROM or JOIN that names a table. */
static void select_collection(struct lexer *lx, char *out, size_t cap)
{
	int depth = 0, best = -1;
	char name[SQL_COLLECTION_MAX];
	for (;;) {
		struct tok t = next_tok(lx);
		if (t.kind == T_END)
			break;
		if (t.kind == T_OPEN) {
			depth++;
		} else if (t.kind == T_CLOSE) {
			depth--;
		} else if (t.kind == T_WORD &&
			   (word_is(t.p, t.len, "FROM") || word_is(t.p, t.len, "JOIN") ||
			    word_is(t.p, t.len, "STRAIGHT_JOIN"))) {
			if ((best < 0 || depth < best) && read_name(lx, name, sizeof(name), true)) {
				best = depth;
				memcpy(out, name, cap < sizeof(name) ? cap : sizeof(name));
				out[cap - 1] = '\0';
				if (depth <= 0)
					break;
			}
		}
	}
}

/* Finds a word among the next few tokens at depth 0; leaves the lexer after it. */
static bool find_word(struct lexer *lx, const char *w, int max_tokens)
{
	int depth = 0;
	for (int n = 0; n < max_tokens; n++) {
		struct tok t = next_tok(lx);
		if (t.kind == T_END)
			return false;
		if (t.kind == T_OPEN)
			depth++;
		else if (t.kind == T_CLOSE)
			depth--;
		else if (depth == 0 && t.kind == T_WORD && word_is(t.p, t.len, w))
			return true;
	}
	return false;
}

void sql__summarize(const char *q, size_t len, enum sql_dialect d, struct sql_summary *out)
{
	memset(out, 0, sizeof(*out));
	/* As in the sanitizer: a comment does not run past a NUL. */
	const char *nul = memchr(q, '\0', len);
	if (nul)
		len = (size_t)(nul - q);
	struct lexer lx = {.q = q, .len = len, .d = d};
	struct tok t = next_tok(&lx);
	while (t.kind == T_OPEN)
		t = next_tok(&lx);
	if (t.kind != T_WORD || t.len >= SQL_OPERATION_MAX)
		return;
	for (size_t i = 0; i < t.len; i++)
		if (!is_alpha((unsigned char)t.p[i]) && t.p[i] != '_')
			return;
	if (word_is(t.p, t.len, "WITH")) {
		/* The statement after the common table expressions. */
		int depth = 0;
		for (;;) {
			t = next_tok(&lx);
			if (t.kind == T_END)
				return;
			if (t.kind == T_OPEN)
				depth++;
			else if (t.kind == T_CLOSE)
				depth--;
			else if (depth == 0 && t.kind == T_WORD &&
				 (word_is(t.p, t.len, "SELECT") || word_is(t.p, t.len, "INSERT") ||
				  word_is(t.p, t.len, "UPDATE") || word_is(t.p, t.len, "DELETE") ||
				  word_is(t.p, t.len, "MERGE")))
				break;
		}
	}
	for (size_t i = 0; i < t.len; i++)
		out->operation[i] = upper(t.p[i]);
	out->operation[t.len] = '\0';

	const char *op = out->operation;
	char *coll = out->collection;
	size_t cap = sizeof(out->collection);
	if (!strcmp(op, "SELECT")) {
		select_collection(&lx, coll, cap);
	} else if (!strcmp(op, "INSERT") || !strcmp(op, "REPLACE") || !strcmp(op, "UPDATE") ||
		   !strcmp(op, "MERGE") || !strcmp(op, "COPY")) {
		/* INSERT [modifiers] [INTO] name; UPDATE [modifiers] name; MERGE INTO name */
		read_name(&lx, coll, cap, false);
	} else if (!strcmp(op, "DELETE")) {
		if (find_word(&lx, "FROM", 6))
			read_name(&lx, coll, cap, false);
	} else if (!strcmp(op, "CREATE") || !strcmp(op, "DROP") || !strcmp(op, "ALTER") ||
		   !strcmp(op, "TRUNCATE")) {
		struct lexer save = lx;
		if (find_word(&lx, "TABLE", 6)) {
			read_name(&lx, coll, cap, false);
		} else if (!strcmp(op, "TRUNCATE")) {
			lx = save;
			read_name(&lx, coll, cap, false);
		} else {
			lx = save;
			if (find_word(&lx, "INDEX", 4) && find_word(&lx, "ON", 8))
				read_name(&lx, coll, cap, false);
		}
	}
}

int sql__find_statement(const char *buf, size_t len, size_t max_offset)
{
	static const char *const keywords[] = {"SELECT", "INSERT", "UPDATE", "DELETE",
					       "CREATE", "DROP",   "ALTER",  "TRUNCATE",
					       "REPLACE", "MERGE", "UPSERT", "WITH"};
	bool binary_prefix = false; /* framing bytes, not text, come first */
	for (size_t off = 0; off <= max_offset && off < len; off++) {
		if (off) {
			unsigned char prev = (unsigned char)buf[off - 1];
			binary_prefix |= prev < 0x20 || prev >= 0x7f;
			/* In text the keyword must start a word ("preSELECT" is not SQL);
			 * after binary framing any byte may precede it (a length). */
			if (!binary_prefix && is_ident(prev))
				continue;
		}
		if (!is_alpha((unsigned char)buf[off]))
			continue;
		size_t w = off;
		while (w < len && is_alpha((unsigned char)buf[w]))
			w++;
		bool known = false;
		for (size_t k = 0; k < sizeof(keywords) / sizeof(keywords[0]) && !known; k++)
			known = word_is(buf + off, w - off, keywords[k]);
		if (!known || w + 2 > len)
			continue;
		unsigned char after = (unsigned char)buf[w];
		if (!is_space(after) && after != '(' && after != '*')
			continue;
		/* What follows must read as text, at least for a while. */
		size_t end = w + 32 < len ? w + 32 : len, printable = 0;
		bool ok = true;
		for (size_t i = w; i < end && ok; i++) {
			unsigned char c = (unsigned char)buf[i];
			if (c == '\0')
				break;
			ok = c >= 0x20 || is_space(c);
			printable++;
		}
		if (ok && printable >= 2)
			return (int)off;
	}
	return -1;
}
