/* libFuzzer target: HPACK. The input is a sequence of header blocks decoded
 * with one dynamic table (byte 0: table size and whether the start was seen;
 * then blocks of [flags][length][bytes]), and Huffman decoding of the whole
 * input. Checks the table's invariants and that every field is readable. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "protocols/hpack.h"

static uint64_t sink;

static void on_field(void *ctx, const struct hpack_field *f)
{
	(void)ctx;
	/* Touch every byte so ASan sees reads past the strings. */
	for (uint32_t i = 0; i < f->name_len; i++)
		sink += (unsigned char)f->name[i];
	for (uint32_t i = 0; i < f->value_len; i++)
		sink += (unsigned char)f->value[i];
	if ((f->flags & HPACK_F_NAME_UNKNOWN) && f->name_len)
		abort(); /* an unknown name must never carry a guessed one */
	if ((f->flags & HPACK_F_VALUE_UNKNOWN) && f->value_len)
		abort();
}

static void check_table(const struct hpack_table *t)
{
	if (t->size > t->max_size || t->max_size > HPACK_TABLE_LIMIT)
		abort();
	uint32_t n = hpack__known_entries(t);
	for (uint32_t i = 0; i < n; i++) {
		const char *name, *value;
		uint32_t nl, vl;
		if (!hpack__dynamic_entry(t, HPACK_STATIC_ENTRIES + 1 + i, &name, &nl, &value, &vl))
			abort();
		for (uint32_t k = 0; k < nl; k++)
			sink += (unsigned char)name[k];
		for (uint32_t k = 0; k < vl; k++)
			sink += (unsigned char)value[k];
	}
	const char *name, *value;
	uint32_t nl, vl;
	if (hpack__dynamic_entry(t, HPACK_STATIC_ENTRIES + 1 + n, &name, &nl, &value, &vl))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char scratch[512]; /* small: truncation paths get exercised */
	static char out[8192];
	static uint8_t enc[16384];
	/* Huffman: decoding anything is safe; encoding round-trips. */
	hpack__huffman_decode(data, size, out, sizeof(out));
	if (size <= 4096) {
		size_t n = hpack__huffman_encode((const char *)data, size, enc, sizeof(enc));
		if (size && !n)
			abort();
		int64_t d = hpack__huffman_decode(enc, n, out, sizeof(out));
		if (d != (int64_t)size || memcmp(out, data, size))
			abort();
	}
	if (!size)
		return 0;

	struct hpack_table t;
	hpack__init(&t, data[0] & 1);
	hpack__set_max_size(&t, (uint32_t)(data[0] >> 1) * 64);
	size_t i = 1;
	while (i + 2 <= size) {
		uint8_t flags = data[i];
		size_t len = data[i + 1] | (size_t)(flags & 0x70) << 4;
		i += 2;
		if (len > size - i)
			len = size - i;
		bool cut = flags & 1;
		if (flags & 2)
			hpack__lost(&t);
		if (flags & 4)
			hpack__set_max_size(&t, (uint32_t)len * 97);
		hpack__decode(&t, data + i, len, cut, scratch, sizeof(scratch), on_field, NULL);
		check_table(&t);
		i += len;
	}
	hpack__free(&t);
	return 0;
}
