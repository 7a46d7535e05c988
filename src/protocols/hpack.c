#include "protocols/hpack.h"

#include <stdlib.h>
#include <string.h>

/* Code of each symbol (RFC 7541 Appendix B), most significant bit first. */
static const struct {
	uint32_t code;
	uint8_t bits;
} huffman_codes[257] = {
    {0x1ff8, 13},     {0x7fffd8, 23},	{0xfffffe2, 28},  {0xfffffe3, 28},  {0xfffffe4, 28},
    {0xfffffe5, 28},  {0xfffffe6, 28},	{0xfffffe7, 28},  {0xfffffe8, 28},  {0xffffea, 24},
    {0x3ffffffc, 30}, {0xfffffe9, 28},	{0xfffffea, 28},  {0x3ffffffd, 30}, {0xfffffeb, 28},
    {0xfffffec, 28},  {0xfffffed, 28},	{0xfffffee, 28},  {0xfffffef, 28},  {0xffffff0, 28},
    {0xffffff1, 28},  {0xffffff2, 28},	{0x3ffffffe, 30}, {0xffffff3, 28},  {0xffffff4, 28},
    {0xffffff5, 28},  {0xffffff6, 28},	{0xffffff7, 28},  {0xffffff8, 28},  {0xffffff9, 28},
    {0xffffffa, 28},  {0xffffffb, 28},	{0x14, 6},	  {0x3f8, 10},	    {0x3f9, 10},
    {0xffa, 12},      {0x1ff9, 13},	{0x15, 6},	  {0xf8, 8},	    {0x7fa, 11},
    {0x3fa, 10},      {0x3fb, 10},	{0xf9, 8},	  {0x7fb, 11},	    {0xfa, 8},
    {0x16, 6},	      {0x17, 6},	{0x18, 6},	  {0x0, 5},	    {0x1, 5},
    {0x2, 5},	      {0x19, 6},	{0x1a, 6},	  {0x1b, 6},	    {0x1c, 6},
    {0x1d, 6},	      {0x1e, 6},	{0x1f, 6},	  {0x5c, 7},	    {0xfb, 8},
    {0x7ffc, 15},     {0x20, 6},	{0xffb, 12},	  {0x3fc, 10},	    {0x1ffa, 13},
    {0x21, 6},	      {0x5d, 7},	{0x5e, 7},	  {0x5f, 7},	    {0x60, 7},
    {0x61, 7},	      {0x62, 7},	{0x63, 7},	  {0x64, 7},	    {0x65, 7},
    {0x66, 7},	      {0x67, 7},	{0x68, 7},	  {0x69, 7},	    {0x6a, 7},
    {0x6b, 7},	      {0x6c, 7},	{0x6d, 7},	  {0x6e, 7},	    {0x6f, 7},
    {0x70, 7},	      {0x71, 7},	{0x72, 7},	  {0xfc, 8},	    {0x73, 7},
    {0xfd, 8},	      {0x1ffb, 13},	{0x7fff0, 19},	  {0x1ffc, 13},	    {0x3ffc, 14},
    {0x22, 6},	      {0x7ffd, 15},	{0x3, 5},	  {0x23, 6},	    {0x4, 5},
    {0x24, 6},	      {0x5, 5},		{0x25, 6},	  {0x26, 6},	    {0x27, 6},
    {0x6, 5},	      {0x74, 7},	{0x75, 7},	  {0x28, 6},	    {0x29, 6},
    {0x2a, 6},	      {0x7, 5},		{0x2b, 6},	  {0x76, 7},	    {0x2c, 6},
    {0x8, 5},	      {0x9, 5},		{0x2d, 6},	  {0x77, 7},	    {0x78, 7},
    {0x79, 7},	      {0x7a, 7},	{0x7b, 7},	  {0x7ffe, 15},	    {0x7fc, 11},
    {0x3ffd, 14},     {0x1ffd, 13},	{0xffffffc, 28},  {0xfffe6, 20},    {0x3fffd2, 22},
    {0xfffe7, 20},    {0xfffe8, 20},	{0x3fffd3, 22},	  {0x3fffd4, 22},   {0x3fffd5, 22},
    {0x7fffd9, 23},   {0x3fffd6, 22},	{0x7fffda, 23},	  {0x7fffdb, 23},   {0x7fffdc, 23},
    {0x7fffdd, 23},   {0x7fffde, 23},	{0xffffeb, 24},	  {0x7fffdf, 23},   {0xffffec, 24},
    {0xffffed, 24},   {0x3fffd7, 22},	{0x7fffe0, 23},	  {0xffffee, 24},   {0x7fffe1, 23},
    {0x7fffe2, 23},   {0x7fffe3, 23},	{0x7fffe4, 23},	  {0x1fffdc, 21},   {0x3fffd8, 22},
    {0x7fffe5, 23},   {0x3fffd9, 22},	{0x7fffe6, 23},	  {0x7fffe7, 23},   {0xffffef, 24},
    {0x3fffda, 22},   {0x1fffdd, 21},	{0xfffe9, 20},	  {0x3fffdb, 22},   {0x3fffdc, 22},
    {0x7fffe8, 23},   {0x7fffe9, 23},	{0x1fffde, 21},	  {0x7fffea, 23},   {0x3fffdd, 22},
    {0x3fffde, 22},   {0xfffff0, 24},	{0x1fffdf, 21},	  {0x3fffdf, 22},   {0x7fffeb, 23},
    {0x7fffec, 23},   {0x1fffe0, 21},	{0x1fffe1, 21},	  {0x3fffe0, 22},   {0x1fffe2, 21},
    {0x7fffed, 23},   {0x3fffe1, 22},	{0x7fffee, 23},	  {0x7fffef, 23},   {0xfffea, 20},
    {0x3fffe2, 22},   {0x3fffe3, 22},	{0x3fffe4, 22},	  {0x7ffff0, 23},   {0x3fffe5, 22},
    {0x3fffe6, 22},   {0x7ffff1, 23},	{0x3ffffe0, 26},  {0x3ffffe1, 26},  {0xfffeb, 20},
    {0x7fff1, 19},    {0x3fffe7, 22},	{0x7ffff2, 23},	  {0x3fffe8, 22},   {0x1ffffec, 25},
    {0x3ffffe2, 26},  {0x3ffffe3, 26},	{0x3ffffe4, 26},  {0x7ffffde, 27},  {0x7ffffdf, 27},
    {0x3ffffe5, 26},  {0xfffff1, 24},	{0x1ffffed, 25},  {0x7fff2, 19},    {0x1fffe3, 21},
    {0x3ffffe6, 26},  {0x7ffffe0, 27},	{0x7ffffe1, 27},  {0x3ffffe7, 26},  {0x7ffffe2, 27},
    {0xfffff2, 24},   {0x1fffe4, 21},	{0x1fffe5, 21},	  {0x3ffffe8, 26},  {0x3ffffe9, 26},
    {0xffffffd, 28},  {0x7ffffe3, 27},	{0x7ffffe4, 27},  {0x7ffffe5, 27},  {0xfffec, 20},
    {0xfffff3, 24},   {0xfffed, 20},	{0x1fffe6, 21},	  {0x3fffe9, 22},   {0x1fffe7, 21},
    {0x1fffe8, 21},   {0x7ffff3, 23},	{0x3fffea, 22},	  {0x3fffeb, 22},   {0x1ffffee, 25},
    {0x1ffffef, 25},  {0xfffff4, 24},	{0xfffff5, 24},	  {0x3ffffea, 26},  {0x7ffff4, 23},
    {0x3ffffeb, 26},  {0x7ffffe6, 27},	{0x3ffffec, 26},  {0x3ffffed, 26},  {0x7ffffe7, 27},
    {0x7ffffe8, 27},  {0x7ffffe9, 27},	{0x7ffffea, 27},  {0x7ffffeb, 27},  {0xffffffe, 28},
    {0x7ffffec, 27},  {0x7ffffed, 27},	{0x7ffffee, 27},  {0x7ffffef, 27},  {0x7fffff0, 27},
    {0x3ffffee, 26},  {0x3fffffff, 30},
};

/* The code is canonical: codes of one length are consecutive, in symbol order, so
 * the number of codes of each length and the symbols sorted by (length, symbol)
 * are enough to decode (as zlib's puff does). */
static const uint8_t huffman_count[31] = {0, 0, 0, 0, 0, 10, 26, 32, 6,	 0, 5,	3,  2,	6, 2, 3,
					  0, 0, 0, 3, 8, 13, 26, 29, 12, 4, 15, 19, 29, 0, 4};
static const uint16_t huffman_symbols[257] = {
    48,	 49,  50,  97,	99,  101, 105, 111, 115, 116, 32,  37,	45,  46,  47,  51,  52,	 53,  54,
    55,	 56,  57,  61,	65,  95,  98,  100, 102, 103, 104, 108, 109, 110, 112, 114, 117, 58,  66,
    67,	 68,  69,  70,	71,  72,  73,  74,  75,	 76,  77,  78,	79,  80,  81,  82,  83,	 84,  85,
    86,	 87,  89,  106, 107, 113, 118, 119, 120, 121, 122, 38,	42,  44,  59,  88,  90,	 33,  34,
    40,	 41,  63,  39,	43,  124, 35,  62,  0,	 36,  64,  91,	93,  126, 94,  125, 60,	 96,  123,
    92,	 195, 208, 128, 130, 131, 162, 184, 194, 224, 226, 153, 161, 167, 172, 176, 177, 179, 209,
    216, 217, 227, 229, 230, 129, 132, 133, 134, 136, 146, 154, 156, 160, 163, 164, 169, 170, 173,
    178, 181, 185, 186, 187, 189, 190, 196, 198, 228, 232, 233, 1,   135, 137, 138, 139, 140, 141,
    143, 147, 149, 150, 151, 152, 155, 157, 158, 165, 166, 168, 174, 175, 180, 182, 183, 188, 191,
    197, 231, 239, 9,	142, 144, 145, 148, 159, 171, 206, 215, 225, 236, 237, 199, 207, 234, 235,
    192, 193, 200, 201, 202, 205, 210, 213, 218, 219, 238, 240, 242, 243, 255, 203, 204, 211, 212,
    214, 221, 222, 223, 241, 244, 245, 246, 247, 248, 250, 251, 252, 253, 254, 2,   3,	 4,   5,
    6,	 7,   8,   11,	12,  14,  15,  16,  17,	 18,  19,  20,	21,  23,  24,  25,  26,	 27,  28,
    29,	 30,  31,  127, 220, 249, 10,  13,  22,	 256,
};

static const struct {
	const char *name, *value;
} static_table[HPACK_STATIC_ENTRIES + 1] = {
    {NULL, NULL},
    {":authority", ""},
    {":method", "GET"},
    {":method", "POST"},
    {":path", "/"},
    {":path", "/index.html"},
    {":scheme", "http"},
    {":scheme", "https"},
    {":status", "200"},
    {":status", "204"},
    {":status", "206"},
    {":status", "304"},
    {":status", "400"},
    {":status", "404"},
    {":status", "500"},
    {"accept-charset", ""},
    {"accept-encoding", "gzip, deflate"},
    {"accept-language", ""},
    {"accept-ranges", ""},
    {"accept", ""},
    {"access-control-allow-origin", ""},
    {"age", ""},
    {"allow", ""},
    {"authorization", ""},
    {"cache-control", ""},
    {"content-disposition", ""},
    {"content-encoding", ""},
    {"content-language", ""},
    {"content-length", ""},
    {"content-location", ""},
    {"content-range", ""},
    {"content-type", ""},
    {"cookie", ""},
    {"date", ""},
    {"etag", ""},
    {"expect", ""},
    {"expires", ""},
    {"from", ""},
    {"host", ""},
    {"if-match", ""},
    {"if-modified-since", ""},
    {"if-none-match", ""},
    {"if-range", ""},
    {"if-unmodified-since", ""},
    {"last-modified", ""},
    {"link", ""},
    {"location", ""},
    {"max-forwards", ""},
    {"proxy-authenticate", ""},
    {"proxy-authorization", ""},
    {"range", ""},
    {"referer", ""},
    {"refresh", ""},
    {"retry-after", ""},
    {"server", ""},
    {"set-cookie", ""},
    {"strict-transport-security", ""},
    {"transfer-encoding", ""},
    {"user-agent", ""},
    {"vary", ""},
    {"via", ""},
    {"www-authenticate", ""},
};

/* RFC 7541 4.1: an entry's size counts 32 bytes of overhead. */
#define ENTRY_OVERHEAD 32

struct hpack_entry {
	uint32_t off;		      /* of the name in buf; the value follows */
	uint32_t name_len, value_len; /* bytes kept */
	uint32_t size;		      /* RFC size, from the true lengths */
	uint8_t flags;		      /* HPACK_F_NAME_UNKNOWN, HPACK_F_TRUNCATED */
};

bool hpack__static_entry(uint32_t index, const char **name, const char **value)
{
	if (index < 1 || index > HPACK_STATIC_ENTRIES)
		return false;
	*name = static_table[index].name;
	*value = static_table[index].value;
	return true;
}

/* ---- integers and Huffman */

int hpack__decode_int(const uint8_t *p, size_t len, int prefix_bits, uint32_t *out)
{
	if (!len)
		return 0;
	uint32_t max = (1u << prefix_bits) - 1;
	uint64_t v = p[0] & max;
	if (v < max) {
		*out = (uint32_t)v;
		return 1;
	}
	unsigned shift = 0;
	for (size_t i = 1; i < len; i++) {
		v += (uint64_t)(p[i] & 0x7f) << shift;
		if (v > UINT32_MAX)
			return HPACK_ERROR;
		if (!(p[i] & 0x80)) {
			*out = (uint32_t)v;
			return (int)i + 1;
		}
		shift += 7;
		if (shift > 28)
			return HPACK_ERROR; /* only zero continuation bytes could follow */
	}
	return 0;
}

int64_t hpack__huffman_decode(const uint8_t *in, size_t len, char *out, size_t cap)
{
	int64_t n = 0;
	uint32_t code = 0, first = 0, index = 0, bits = 0;
	uint32_t pending = 0; /* the bits read since the last symbol, for the padding check */
	for (size_t i = 0; i < len; i++) {
		for (int b = 7; b >= 0; b--) {
			uint32_t bit = (in[i] >> b) & 1;
			code |= bit;
			pending = pending << 1 | bit;
			bits++;
			uint32_t count = huffman_count[bits];
			if (code >= first && code - first < count) {
				uint16_t sym = huffman_symbols[index + code - first];
				if (sym == 256)
					return HPACK_ERROR; /* EOS inside a string */
				if ((size_t)n < cap)
					out[n] = (char)sym;
				n++;
				code = first = index = bits = pending = 0;
				continue;
			}
			index += count;
			first = (first + count) << 1;
			code <<= 1;
			if (bits >= 30)
				return HPACK_ERROR;
		}
	}
	/* Padding: fewer than 8 bits, all ones (a prefix of EOS). */
	if (bits > 7 || pending != (1u << bits) - 1)
		return HPACK_ERROR;
	return n;
}

size_t hpack__huffman_encode(const char *in, size_t len, uint8_t *out, size_t cap)
{
	uint64_t acc = 0;
	unsigned nbits = 0;
	size_t n = 0;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)in[i];
		acc = acc << huffman_codes[c].bits | huffman_codes[c].code;
		nbits += huffman_codes[c].bits;
		while (nbits >= 8) {
			if (n == cap)
				return 0;
			out[n++] = (uint8_t)(acc >> (nbits - 8));
			nbits -= 8;
		}
	}
	if (nbits) {
		if (n == cap)
			return 0;
		out[n++] = (uint8_t)(acc << (8 - nbits) | (0xffu >> nbits));
	}
	return n;
}

/* ---- the dynamic table */

void hpack__init(struct hpack_table *t, bool complete)
{
	memset(t, 0, sizeof(*t));
	t->max_size = HPACK_DEFAULT_TABLE_SIZE;
	t->complete = complete;
}

void hpack__free(struct hpack_table *t)
{
	free(t->buf);
	free(t->ents);
	t->buf = NULL;
	t->ents = NULL;
	t->buf_cap = t->ent_cap = 0;
	t->count = t->size = t->start = t->end = t->first = 0;
}

static struct hpack_entry *entry_at(const struct hpack_table *t, uint32_t i) /* 0 = oldest */
{
	return &t->ents[(t->first + i) % t->ent_cap];
}

static void evict_oldest(struct hpack_table *t)
{
	struct hpack_entry *e = entry_at(t, 0);
	t->size -= e->size;
	t->first = (t->first + 1) % t->ent_cap;
	t->count--;
	if (t->count)
		t->start = entry_at(t, 0)->off;
	else
		t->start = t->end = 0;
}

static void evict_to(struct hpack_table *t, uint32_t size)
{
	while (t->count && t->size > size)
		evict_oldest(t);
}

void hpack__lost(struct hpack_table *t)
{
	while (t->count)
		evict_oldest(t);
	t->complete = false;
}

/* Makes room for a table of max_size: buffers are sized for the limit, so an
 * insertion never needs to allocate. Returns false when out of memory. */
static bool reserve(struct hpack_table *t, uint32_t max_size)
{
	uint32_t ent_cap = max_size / ENTRY_OVERHEAD + 1;
	if (t->buf_cap >= max_size && t->ent_cap >= ent_cap)
		return true;
	char *buf = malloc(max_size ? max_size : 1);
	struct hpack_entry *ents = malloc(ent_cap * sizeof(*ents));
	if (!buf || !ents) {
		free(buf);
		free(ents);
		return false;
	}
	uint32_t off = 0;
	for (uint32_t i = 0; i < t->count; i++) {
		struct hpack_entry e = *entry_at(t, i);
		memcpy(buf + off, t->buf + e.off, e.name_len + e.value_len);
		e.off = off;
		off += e.name_len + e.value_len;
		ents[i] = e;
	}
	free(t->buf);
	free(t->ents);
	t->buf = buf;
	t->ents = ents;
	t->buf_cap = max_size;
	t->ent_cap = ent_cap;
	t->first = 0;
	t->start = 0;
	t->end = off;
	return true;
}

void hpack__set_max_size(struct hpack_table *t, uint32_t size)
{
	if (size > HPACK_TABLE_LIMIT) {
		size = HPACK_TABLE_LIMIT;
		t->clamped = true;
	}
	t->max_size = size;
	evict_to(t, size);
}

/* Adds an entry; true_name_len and true_value_len give its RFC size when
 * the bytes kept are fewer (truncated or unknown name). */
static void insert(struct hpack_table *t, const char *name, uint32_t name_len,
		   uint32_t true_name_len, const char *value, uint32_t value_len,
		   uint32_t true_value_len, uint8_t flags)
{
	uint64_t size = (uint64_t)true_name_len + true_value_len + ENTRY_OVERHEAD;
	if (size > t->max_size) {
		/* RFC 7541 4.4: an entry larger than the table empties it. */
		evict_to(t, 0);
		return;
	}
	evict_to(t, t->max_size - (uint32_t)size);
	if (!reserve(t, t->max_size)) {
		/* Without memory the table cannot be followed any more. */
		hpack__lost(t);
		return;
	}
	uint32_t bytes = name_len + value_len;
	if (t->end + bytes > t->buf_cap) {
		/* Move the live entries to the front; they fit with the new one, as the
		 * bytes kept never exceed the RFC sizes. */
		memmove(t->buf, t->buf + t->start, t->end - t->start);
		for (uint32_t i = 0; i < t->count; i++)
			entry_at(t, i)->off -= t->start;
		t->end -= t->start;
		t->start = 0;
	}
	struct hpack_entry *e = &t->ents[(t->first + t->count) % t->ent_cap];
	e->off = t->end;
	e->name_len = name_len;
	e->value_len = value_len;
	e->size = (uint32_t)size;
	e->flags = flags;
	if (name_len)
		memcpy(t->buf + t->end, name, name_len);
	if (value_len)
		memcpy(t->buf + t->end + name_len, value, value_len);
	if (!t->count)
		t->start = t->end;
	t->end += bytes;
	t->count++;
	t->size += (uint32_t)size;
}

/* The dynamic entry at index (62 = newest), or NULL. */
static const struct hpack_entry *dynamic_entry(const struct hpack_table *t, uint32_t index)
{
	uint32_t pos = index - HPACK_STATIC_ENTRIES; /* 1 = newest */
	if (index <= HPACK_STATIC_ENTRIES || pos > t->count)
		return NULL;
	return entry_at(t, t->count - pos);
}

bool hpack__dynamic_entry(const struct hpack_table *t, uint32_t index, const char **name,
			  uint32_t *name_len, const char **value, uint32_t *value_len)
{
	const struct hpack_entry *e = dynamic_entry(t, index);
	if (!e)
		return false;
	*name = t->buf + e->off;
	*name_len = e->name_len;
	*value = t->buf + e->off + e->name_len;
	*value_len = e->value_len;
	return true;
}

/* ---- header blocks */

/* Resolves an index into f; returns false for index 0 (malformed). */
static bool lookup(struct hpack_table *t, uint32_t index, struct hpack_field *f, bool name_only)
{
	if (!index)
		return false;
	if (index <= HPACK_STATIC_ENTRIES) {
		f->name = static_table[index].name;
		f->name_len = (uint32_t)strlen(f->name);
		if (!name_only) {
			f->value = static_table[index].value;
			f->value_len = (uint32_t)strlen(f->value);
		}
		return true;
	}
	const struct hpack_entry *e = dynamic_entry(t, index);
	if (!e) {
		/* Inserted before we were looking (or evicted early by our clamp). */
		t->unknown_refs++;
		f->flags |= HPACK_F_NAME_UNKNOWN | (name_only ? 0 : HPACK_F_VALUE_UNKNOWN);
		f->name = f->value = "";
		f->name_len = f->value_len = 0;
		return true;
	}
	f->name = t->buf + e->off;
	f->name_len = e->name_len;
	f->flags |= e->flags & HPACK_F_NAME_UNKNOWN;
	if (!name_only) {
		f->value = t->buf + e->off + e->name_len;
		f->value_len = e->value_len;
		f->flags |= e->flags & HPACK_F_TRUNCATED;
	}
	return true;
}

/* A string literal (RFC 7541 5.2). Huffman strings are decoded into
 * *scratch, which advances. Returns bytes used, 0 when incomplete, or
 * HPACK_ERROR. *true_len is the decoded length even when cut. */
static int read_string(const uint8_t *p, size_t len, char **scratch, size_t *room, const char **out,
		       uint32_t *out_len, uint32_t *true_len, bool *truncated)
{
	uint32_t slen;
	int n = hpack__decode_int(p, len, 7, &slen);
	if (n <= 0)
		return n;
	if (len - (size_t)n < slen)
		return 0;
	const uint8_t *s = p + n;
	if (!(p[0] & 0x80)) {
		*out = (const char *)s;
		*out_len = *true_len = slen;
		return n + (int)slen;
	}
	int64_t dl = hpack__huffman_decode(s, slen, *scratch, *room);
	if (dl < 0)
		return HPACK_ERROR;
	*out = *scratch;
	*true_len = (uint32_t)dl;
	if ((uint64_t)dl > *room) {
		*truncated = true;
		dl = (int64_t)*room;
	}
	*out_len = (uint32_t)dl;
	*scratch += dl;
	*room -= (size_t)dl;
	return n + (int)slen;
}

int hpack__decode(struct hpack_table *t, const uint8_t *block, size_t len, bool cut, char *scratch,
		  size_t scratch_cap, hpack_field_fn fn, void *ctx)
{
	size_t i = 0;
	int fields = 0;
	int ret = 0;
	while (i < len) {
		const uint8_t *p = block + i;
		size_t left = len - i;
		struct hpack_field f = {0};
		uint32_t index;
		int n;
		if (p[0] & 0x80) { /* indexed field */
			n = hpack__decode_int(p, left, 7, &index);
			if (n <= 0) {
				ret = n ? n : HPACK_INCOMPLETE;
				break;
			}
			f.flags |= HPACK_F_INDEXED;
			if (!lookup(t, index, &f, false)) {
				ret = HPACK_ERROR;
				break;
			}
			fn(ctx, &f);
			fields++;
			i += (size_t)n;
			continue;
		}
		if ((p[0] & 0xe0) == 0x20) { /* dynamic table size update */
			n = hpack__decode_int(p, left, 5, &index);
			if (n <= 0) {
				ret = n ? n : HPACK_INCOMPLETE;
				break;
			}
			hpack__set_max_size(t, index);
			i += (size_t)n;
			continue;
		}
		/* literals: with incremental indexing (6-bit index), without or
		 * never indexed (4-bit) */
		bool indexing = (p[0] & 0xc0) == 0x40;
		int prefix = indexing ? 6 : 4;
		if (!indexing && (p[0] & 0x10))
			f.flags |= HPACK_F_SENSITIVE;
		n = hpack__decode_int(p, left, prefix, &index);
		if (n <= 0) {
			ret = n ? n : HPACK_INCOMPLETE;
			break;
		}
		size_t used = (size_t)n;
		char *sp = scratch;
		size_t room = scratch_cap;
		bool truncated = false, name_truncated = false;
		uint32_t true_name_len, true_value_len;
		if (index) {
			if (!lookup(t, index, &f, true)) {
				ret = HPACK_ERROR;
				break;
			}
			true_name_len = f.name_len;
			if (index > HPACK_STATIC_ENTRIES && !(f.flags & HPACK_F_NAME_UNKNOWN)) {
				/* The name lives in the table, which the insertion below may
				 * evict or move: copy it first. */
				uint32_t keep = f.name_len < room ? f.name_len : (uint32_t)room;
				memcpy(sp, f.name, keep);
				f.name = sp;
				name_truncated = keep < f.name_len;
				f.name_len = keep;
				sp += keep;
				room -= keep;
			}
			if (f.flags & HPACK_F_NAME_UNKNOWN)
				true_name_len = 0; /* size unknown: counted low, so nothing
						    * is evicted that the encoder still has */
		} else {
			n = read_string(p + used, left - used, &sp, &room, &f.name, &f.name_len,
					&true_name_len, &name_truncated);
			if (n <= 0) {
				ret = n ? n : HPACK_INCOMPLETE;
				break;
			}
			used += (size_t)n;
		}
		n = read_string(p + used, left - used, &sp, &room, &f.value, &f.value_len,
				&true_value_len, &truncated);
		if (n <= 0) {
			ret = n ? n : HPACK_INCOMPLETE;
			break;
		}
		used += (size_t)n;
		if (truncated || name_truncated)
			f.flags |= HPACK_F_TRUNCATED;
		if (indexing)
			insert(t, f.name, f.name_len, true_name_len, f.value, f.value_len,
			       true_value_len,
			       f.flags & (HPACK_F_NAME_UNKNOWN | HPACK_F_TRUNCATED));
		fn(ctx, &f);
		fields++;
		i += used;
	}
	if (ret == HPACK_ERROR || ret == HPACK_INCOMPLETE || cut) {
		/* What follows the failure point may have changed the encoder's table. */
		hpack__lost(t);
		return ret ? ret : HPACK_INCOMPLETE;
	}
	return fields;
}
