/* HPACK: RFC 7541 Appendix C (C.1 to C.6, plain and Huffman, the dynamic
 * table checked after each block), Huffman edge cases, blocks cut at every
 * byte, and decoding without having seen the connection's start. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "protocols/hpack.h"

/* ---- helpers */

static size_t unhex(const char *hex, uint8_t *out, size_t cap)
{
	size_t n = 0;
	int hi = -1;
	for (; *hex; hex++) {
		int v;
		if (*hex >= '0' && *hex <= '9')
			v = *hex - '0';
		else if (*hex >= 'a' && *hex <= 'f')
			v = *hex - 'a' + 10;
		else
			continue;
		if (hi < 0) {
			hi = v;
		} else {
			if (n < cap)
				out[n++] = (uint8_t)(hi << 4 | v);
			hi = -1;
		}
	}
	return n;
}

#define MAX_FIELDS 16
struct got {
	int n;
	char text[MAX_FIELDS][256]; /* "name: value" */
	uint8_t flags[MAX_FIELDS];
};

static void collect(void *ctx, const struct hpack_field *f)
{
	struct got *g = ctx;
	if (g->n == MAX_FIELDS)
		return;
	snprintf(g->text[g->n], sizeof(g->text[0]), "%.*s: %.*s", (int)f->name_len, f->name,
		 (int)f->value_len, f->value);
	g->flags[g->n] = f->flags;
	g->n++;
}

static char scratch[4096];

static int decode_hex(struct hpack_table *t, const char *hex, struct got *g)
{
	static uint8_t buf[1024];
	size_t n = unhex(hex, buf, sizeof(buf));
	memset(g, 0, sizeof(*g));
	return hpack__decode(t, buf, n, false, scratch, sizeof(scratch), collect, g);
}

/* Checks the fields decoded, NULL-terminated list of "name: value". */
static void check_fields(const struct got *g, const char *const *want)
{
	int n = 0;
	while (want[n])
		n++;
	CHECK_INT(g->n, n);
	for (int i = 0; i < n && i < g->n; i++)
		CHECK_STR(g->text[i], want[i]);
}

/* Checks the dynamic table, newest first, and its size. */
static void check_table(const struct hpack_table *t, const char *const *want, uint32_t size)
{
	int n = 0;
	while (want[n])
		n++;
	CHECK_INT(hpack__known_entries(t), n);
	CHECK_INT(t->size, size);
	for (int i = 0; i < n; i++) {
		const char *name, *value;
		uint32_t nl, vl;
		char text[256] = "";
		if (hpack__dynamic_entry(t, HPACK_STATIC_ENTRIES + 1 + (uint32_t)i, &name, &nl,
					 &value, &vl))
			snprintf(text, sizeof(text), "%.*s: %.*s", (int)nl, name, (int)vl, value);
		CHECK_STR(text, want[i]);
	}
	const char *name, *value;
	uint32_t nl, vl;
	CHECK(!hpack__dynamic_entry(t, HPACK_STATIC_ENTRIES + 1 + (uint32_t)n, &name, &nl, &value,
				    &vl));
}

#define LIST(...) ((const char *const[]){__VA_ARGS__, NULL})
#define EMPTY ((const char *const[]){NULL})

/* ---- C.1 integers */

static void test_integers(void)
{
	uint32_t v;
	const uint8_t c11[] = {0xea}; /* 3 flag bits then 10 */
	CHECK_INT(hpack__decode_int(c11, 1, 5, &v), 1);
	CHECK_INT(v, 10);
	const uint8_t c12[] = {0x1f, 0x9a, 0x0a};
	for (size_t k = 0; k < 3; k++)
		CHECK_INT(hpack__decode_int(c12, k, 5, &v), 0);
	CHECK_INT(hpack__decode_int(c12, 3, 5, &v), 3);
	CHECK_INT(v, 1337);
	const uint8_t c13[] = {0x2a};
	CHECK_INT(hpack__decode_int(c13, 1, 8, &v), 1);
	CHECK_INT(v, 42);
	/* 2^32 - 1 fits, 2^32 does not; endless continuation is refused */
	const uint8_t max[] = {0x1f, 0xe0, 0xff, 0xff, 0xff, 0x0f};
	CHECK_INT(hpack__decode_int(max, sizeof(max), 5, &v), 6);
	CHECK(v == UINT32_MAX);
	const uint8_t over[] = {0x1f, 0xe1, 0xff, 0xff, 0xff, 0x0f};
	CHECK_INT(hpack__decode_int(over, sizeof(over), 5, &v), HPACK_ERROR);
	const uint8_t endless[] = {0x1f, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00};
	CHECK_INT(hpack__decode_int(endless, sizeof(endless), 5, &v), HPACK_ERROR);
}

/* ---- Huffman */

static void test_huffman(void)
{
	/* Every byte value, alone and all together, round trips. */
	uint8_t enc[1024];
	char dec[512], all[256];
	for (int c = 0; c < 256; c++) {
		char s[3] = {(char)c, 'a', (char)c};
		size_t n = hpack__huffman_encode(s, 3, enc, sizeof(enc));
		CHECK(n > 0);
		CHECK_INT(hpack__huffman_decode(enc, n, dec, sizeof(dec)), 3);
		CHECK(!memcmp(dec, s, 3));
		all[c] = (char)c;
	}
	size_t n = hpack__huffman_encode(all, 256, enc, sizeof(enc));
	CHECK_INT(hpack__huffman_decode(enc, n, dec, sizeof(dec)), 256);
	CHECK(!memcmp(dec, all, 256));
	/* A cap shorter than the text: the length is still the full one. */
	CHECK_INT(hpack__huffman_decode(enc, n, dec, 10), 256);
	CHECK(!memcmp(dec, all, 10));
	/* C.4.1's "www.example.com" */
	const uint8_t www[] = {0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a,
			       0x6b, 0xa0, 0xab, 0x90, 0xf4, 0xff};
	CHECK_INT(hpack__huffman_decode(www, sizeof(www), dec, sizeof(dec)), 15);
	CHECK(!memcmp(dec, "www.example.com", 15));
	n = hpack__huffman_encode("www.example.com", 15, enc, sizeof(enc));
	CHECK_INT(n, sizeof(www));
	CHECK(!memcmp(enc, www, sizeof(www)));
	/* Padding: at most 7 bits, all ones. "0" is 00000 (5 bits). */
	const uint8_t pad_ok[] = {0x07};	 /* 00000 111 */
	const uint8_t pad_zero[] = {0x06};	 /* 00000 110: a zero in the padding */
	const uint8_t pad_long[] = {0x07, 0xff}; /* 11 bits of padding */
	CHECK_INT(hpack__huffman_decode(pad_ok, 1, dec, sizeof(dec)), 1);
	CHECK_INT(hpack__huffman_decode(pad_zero, 1, dec, sizeof(dec)), HPACK_ERROR);
	CHECK_INT(hpack__huffman_decode(pad_long, 2, dec, sizeof(dec)), HPACK_ERROR);
	/* EOS (30 ones) inside a string */
	const uint8_t eos[] = {0xff, 0xff, 0xff, 0xfc};
	CHECK_INT(hpack__huffman_decode(eos, 4, dec, sizeof(dec)), HPACK_ERROR);
	CHECK_INT(hpack__huffman_decode(NULL, 0, dec, sizeof(dec)), 0);
}

/* ---- C.2 single representations */

static void test_c2(void)
{
	struct hpack_table t;
	struct got g;
	hpack__init(&t, true);
	CHECK_INT(
	    decode_hex(&t, "400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572", &g),
	    1);
	check_fields(&g, LIST("custom-key: custom-header"));
	check_table(&t, LIST("custom-key: custom-header"), 55);
	hpack__free(&t);

	hpack__init(&t, true);
	CHECK_INT(decode_hex(&t, "040c 2f73 616d 706c 652f 7061 7468", &g), 1);
	check_fields(&g, LIST(":path: /sample/path"));
	check_table(&t, EMPTY, 0);
	CHECK_INT(decode_hex(&t, "1008 7061 7373 776f 7264 0673 6563 7265 74", &g), 1);
	check_fields(&g, LIST("password: secret"));
	CHECK(g.flags[0] & HPACK_F_SENSITIVE);
	check_table(&t, EMPTY, 0);
	CHECK_INT(decode_hex(&t, "82", &g), 1);
	check_fields(&g, LIST(":method: GET"));
	CHECK(g.flags[0] & HPACK_F_INDEXED);
	check_table(&t, EMPTY, 0);
	hpack__free(&t);
}

/* ---- C.3 / C.4 requests, C.5 / C.6 responses */

static const char *const req_blocks[2][3] = {
    {"8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d", "8286 84be 5808 6e6f 2d63 6163 6865",
     "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65"},
    {"8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff", "8286 84be 5886 a8eb 1064 9cbf",
     "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf"},
};

static void test_requests(void)
{
	for (int huffman = 0; huffman < 2; huffman++) {
		struct hpack_table t;
		struct got g;
		hpack__init(&t, true);
		CHECK_INT(decode_hex(&t, req_blocks[huffman][0], &g), 4);
		check_fields(&g, LIST(":method: GET", ":scheme: http", ":path: /",
				      ":authority: www.example.com"));
		check_table(&t, LIST(":authority: www.example.com"), 57);
		CHECK_INT(decode_hex(&t, req_blocks[huffman][1], &g), 5);
		check_fields(&g, LIST(":method: GET", ":scheme: http", ":path: /",
				      ":authority: www.example.com", "cache-control: no-cache"));
		check_table(&t, LIST("cache-control: no-cache", ":authority: www.example.com"),
			    110);
		CHECK_INT(decode_hex(&t, req_blocks[huffman][2], &g), 5);
		check_fields(&g, LIST(":method: GET", ":scheme: https", ":path: /index.html",
				      ":authority: www.example.com", "custom-key: custom-value"));
		check_table(&t,
			    LIST("custom-key: custom-value", "cache-control: no-cache",
				 ":authority: www.example.com"),
			    164);
		hpack__free(&t);
	}
}

static const char *const resp_blocks[2][3] = {
    {"4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a"
     "3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
     "4803 3330 37c1 c0bf",
     "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d 54c0 5a04"
     "677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049 5541 5851 5745 4f49"
     "553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e 3d31"},
    {"4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 2d1b ff6e"
     "919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
     "4883 640e ffc1 c0bf",
     "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab 77ad 94e7"
     "821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587 3160 65c0 03ed"
     "4ee5 b106 3d50 07"},
};

#define DATE1 "date: Mon, 21 Oct 2013 20:13:21 GMT"
#define DATE2 "date: Mon, 21 Oct 2013 20:13:22 GMT"
#define COOKIE "set-cookie: foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1"

static void test_responses(void)
{
	for (int huffman = 0; huffman < 2; huffman++) {
		struct hpack_table t;
		struct got g;
		hpack__init(&t, true);
		hpack__set_max_size(&t, 256);
		CHECK_INT(decode_hex(&t, resp_blocks[huffman][0], &g), 4);
		check_fields(&g, LIST(":status: 302", "cache-control: private", DATE1,
				      "location: https://www.example.com"));
		check_table(&t,
			    LIST("location: https://www.example.com", DATE1,
				 "cache-control: private", ":status: 302"),
			    222);
		CHECK_INT(decode_hex(&t, resp_blocks[huffman][1], &g), 4);
		check_fields(&g, LIST(":status: 307", "cache-control: private", DATE1,
				      "location: https://www.example.com"));
		check_table(&t,
			    LIST(":status: 307", "location: https://www.example.com", DATE1,
				 "cache-control: private"),
			    222);
		CHECK_INT(decode_hex(&t, resp_blocks[huffman][2], &g), 6);
		check_fields(&g, LIST(":status: 200", "cache-control: private", DATE2,
				      "location: https://www.example.com", "content-encoding: gzip",
				      COOKIE));
		check_table(&t, LIST(COOKIE, "content-encoding: gzip", DATE2), 215);
		hpack__free(&t);
	}
}

/* ---- blocks cut short: every prefix */

static void test_every_prefix(void)
{
	uint8_t block[256];
	size_t len = unhex(resp_blocks[1][0], block, sizeof(block));
	for (size_t k = 0; k < len; k++) {
		struct hpack_table t;
		struct got g = {0};
		hpack__init(&t, true);
		hpack__set_max_size(&t, 256);
		int r = hpack__decode(&t, block, k, true, scratch, sizeof(scratch), collect, &g);
		CHECK(r == HPACK_INCOMPLETE);
		/* The fields reported are exactly the ones complete in the prefix. */
		const char *want[] = {":status: 302", "cache-control: private", DATE1,
				      "location: https://www.example.com"};
		for (int i = 0; i < g.n; i++)
			CHECK_STR(g.text[i], want[i]);
		CHECK(g.n < 4);
		/* What a cut block did to the table is unknown: nothing is trusted. */
		CHECK_INT(hpack__known_entries(&t), 0);
		CHECK(!t.complete);
		hpack__free(&t);
	}
	/* Without cut, an incomplete block is reported incomplete too. */
	struct hpack_table t;
	struct got g = {0};
	hpack__init(&t, true);
	CHECK_INT(hpack__decode(&t, block, 3, false, scratch, sizeof(scratch), collect, &g),
		  HPACK_INCOMPLETE);
	hpack__free(&t);
}

/* ---- a connection seen from its middle */

static void test_unknown_references(void)
{
	struct hpack_table t;
	struct got g;
	/* The encoder's table holds entries we never saw inserted: C.3.2's block
	 * refers to :authority at 62 (0xbe). */
	hpack__init(&t, false);
	CHECK_INT(decode_hex(&t, req_blocks[0][1], &g), 5);
	CHECK_STR(g.text[0], ":method: GET");
	CHECK_STR(g.text[2], ":path: /");
	CHECK(g.flags[3] & HPACK_F_NAME_UNKNOWN);
	CHECK(g.flags[3] & HPACK_F_VALUE_UNKNOWN);
	CHECK_STR(g.text[3], ": ");
	CHECK_STR(g.text[4], "cache-control: no-cache");
	CHECK_INT(t.unknown_refs, 1);
	/* The insertion seen is exact at position 62; 63 (:authority) is not. */
	check_table(&t, LIST("cache-control: no-cache"), 53);
	CHECK_INT(decode_hex(&t, req_blocks[0][2], &g), 5);
	check_fields(&g, LIST(":method: GET", ":scheme: https", ":path: /index.html", ": ",
			      "custom-key: custom-value"));
	CHECK(g.flags[3] & HPACK_F_NAME_UNKNOWN);
	check_table(&t, LIST("custom-key: custom-value", "cache-control: no-cache"), 107);
	/* A literal whose name is an unknown entry: the value is kept, the name
	 * is not guessed, and the entry it adds is known to be at 62. */
	CHECK_INT(decode_hex(&t, "4803 3330 32" /* :status 302, with indexing */, &g), 1);
	CHECK_INT(decode_hex(&t, "7f05 0178" /* name index 68 (unknown), value "x" */, &g), 1);
	CHECK(g.flags[0] & HPACK_F_NAME_UNKNOWN);
	CHECK(!(g.flags[0] & HPACK_F_VALUE_UNKNOWN));
	CHECK_STR(g.text[0], ": x");
	CHECK_INT(decode_hex(&t, "be bf", &g), 2);
	CHECK(g.flags[0] & HPACK_F_NAME_UNKNOWN);
	CHECK_STR(g.text[0], ": x");
	CHECK_STR(g.text[1], ":status: 302");
	/* Lost header blocks: every old position becomes unknown. */
	hpack__lost(&t);
	CHECK_INT(decode_hex(&t, "be", &g), 1);
	CHECK(g.flags[0] & HPACK_F_VALUE_UNKNOWN);
	hpack__free(&t);

	/* A complete table: an index past the end is a peer error, still never
	 * guessed; index 0 is malformed and the table is no longer trusted. */
	hpack__init(&t, true);
	CHECK_INT(decode_hex(&t, "be", &g), 1);
	CHECK(g.flags[0] & HPACK_F_VALUE_UNKNOWN);
	CHECK_INT(decode_hex(&t, "4003 6162 6301 78", &g), 1); /* abc: x */
	CHECK_INT(decode_hex(&t, "80", &g), HPACK_ERROR);
	CHECK(!t.complete);
	CHECK_INT(hpack__known_entries(&t), 0);
	hpack__free(&t);
}

/* ---- size updates, eviction, limits */

static void test_table_sizes(void)
{
	struct hpack_table t;
	struct got g;
	hpack__init(&t, true);
	CHECK_INT(decode_hex(&t, req_blocks[0][0], &g), 4);
	CHECK_INT(decode_hex(&t, req_blocks[0][1], &g), 5);
	check_table(&t, LIST("cache-control: no-cache", ":authority: www.example.com"), 110);
	/* size update to 60 evicts the oldest; to 0 empties; back to 4096 */
	CHECK_INT(decode_hex(&t, "3f1d", &g), 0); /* 001 11111 + 29 = 60 */
	check_table(&t, LIST("cache-control: no-cache"), 53);
	CHECK_INT(decode_hex(&t, "20 3fe1 1f", &g), 0); /* 0, then 4096 */
	check_table(&t, EMPTY, 0);
	CHECK_INT(t.max_size, 4096);
	/* RFC 7541 4.4: a new entry may name the entry its insertion evicts. With
	 * a table of 100, "custom-key: custom-header" (55) is replaced by an
	 * entry named after it (index 62) whose value makes it not fit with it. */
	hpack__set_max_size(&t, 100);
	CHECK_INT(
	    decode_hex(&t, "400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572", &g),
	    1);
	CHECK_INT(decode_hex(&t, "7e 0e 6120 6c6f 6e67 6572 2076 616c 7565", &g), 1);
	check_fields(&g, LIST("custom-key: a longer value"));
	check_table(&t, LIST("custom-key: a longer value"), 56);
	/* An entry larger than the table empties it and is not added. */
	hpack__set_max_size(&t, 40);
	CHECK_INT(decode_hex(&t, "4003 6162 6305 7878 7878 78", &g), 1); /* abc: xxxxx = 40 */
	check_table(&t, LIST("abc: xxxxx"), 40);
	CHECK_INT(decode_hex(&t, "4003 6162 6306 7878 7878 7878", &g), 1); /* 41 */
	check_table(&t, EMPTY, 0);
	/* A peer allowing more than the limit is clamped. */
	CHECK_INT(decode_hex(&t, "3fe1 ff1f", &g), 0); /* 524288 */
	CHECK(t.max_size <= HPACK_TABLE_LIMIT);
	hpack__set_max_size(&t, 1u << 30);
	CHECK_INT(t.max_size, HPACK_TABLE_LIMIT);
	CHECK(t.clamped);
	hpack__free(&t);

	/* Many insertions wrap the entry ring and compact the byte buffer:
	 * positions stay exact. */
	hpack__init(&t, true);
	hpack__set_max_size(&t, 200);
	for (int i = 0; i < 500; i++) {
		uint8_t blk[64];
		char name[16], value[16];
		int nl = snprintf(name, sizeof(name), "k%d", i);
		int vl = snprintf(value, sizeof(value), "value-%d", i * 7);
		size_t n = 0;
		blk[n++] = 0x40;
		blk[n++] = (uint8_t)nl;
		memcpy(blk + n, name, (size_t)nl);
		n += (size_t)nl;
		blk[n++] = (uint8_t)vl;
		memcpy(blk + n, value, (size_t)vl);
		n += (size_t)vl;
		memset(&g, 0, sizeof(g));
		CHECK_INT(hpack__decode(&t, blk, n, false, scratch, sizeof(scratch), collect, &g),
			  1);
		if (i >= 3) {
			/* 62 is entry i, 64 is entry i - 2 */
			char want[64];
			snprintf(want, sizeof(want), "k%d: value-%d", i - 2, (i - 2) * 7);
			uint8_t ref = 0x80 | 64;
			memset(&g, 0, sizeof(g));
			CHECK_INT(hpack__decode(&t, &ref, 1, false, scratch, sizeof(scratch),
						collect, &g),
				  1);
			CHECK_STR(g.text[0], want);
		}
		CHECK(t.size <= 200);
	}
	hpack__free(&t);
}

/* A Huffman value longer than the scratch space is cut and flagged; the
 * table still accounts for its true size. */
static void test_truncated_value(void)
{
	struct hpack_table t;
	char value[300];
	uint8_t blk[400];
	memset(value, 'v', sizeof(value));
	size_t n = 0;
	blk[n++] = 0x40;
	blk[n++] = 1;
	blk[n++] = 'n';
	uint8_t huff[400];
	size_t hl = hpack__huffman_encode(value, sizeof(value), huff, sizeof(huff));
	CHECK(hl > 127);
	blk[n++] = 0x80 | 0x7f; /* Huffman, length 127 + the rest in 7-bit groups */
	for (size_t rest = hl - 127;; rest >>= 7) {
		blk[n++] = (uint8_t)((rest & 0x7f) | (rest > 0x7f ? 0x80 : 0));
		if (rest <= 0x7f)
			break;
	}
	memcpy(blk + n, huff, hl);
	n += hl;
	hpack__init(&t, true);
	struct got g = {0};
	char small[100];
	CHECK_INT(hpack__decode(&t, blk, n, false, small, sizeof(small), collect, &g), 1);
	CHECK(g.flags[0] & HPACK_F_TRUNCATED);
	CHECK_INT(strlen(g.text[0]), 3 + 100);
	CHECK_INT(t.size, 1 + 300 + 32);
	hpack__free(&t);
}

int main(void)
{
	test_integers();
	test_huffman();
	test_c2();
	test_requests();
	test_responses();
	test_every_prefix();
	test_unknown_references();
	test_table_sizes();
	test_truncated_value();
	return check_done("test_hpack");
}
