/* HPACK (RFC 7541) decoding: integers, strings (Huffman), the static table
 * and one dynamic table per connection and direction. Pure: no I/O, no
 * globals; memory is bounded by the table size limit.
 *
 * A connection seen from its middle (it predates rastro, or a header block
 * was lost) has entries in its dynamic table that were never seen inserted.
 * Positions in the table count from the newest entry, so an entry inserted
 * after the loss keeps an exact position; a reference past the entries known
 * is reported as unknown, never guessed. */
#ifndef RASTRO_HPACK_H
#define RASTRO_HPACK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HPACK_STATIC_ENTRIES 61
#define HPACK_DEFAULT_TABLE_SIZE 4096
/* Largest dynamic table kept, whatever the peers allow: bigger tables are
 * clamped and references to what was evicted early read as unknown. */
#define HPACK_TABLE_LIMIT (64 * 1024)

#define HPACK_ERROR (-1)      /* malformed block: the table is no longer reliable */
#define HPACK_INCOMPLETE (-2) /* the block ended inside a representation */

/* Field flags */
#define HPACK_F_NAME_UNKNOWN 0x01  /* indexed name whose insertion was not seen */
#define HPACK_F_VALUE_UNKNOWN 0x02 /* indexed field whose insertion was not seen */
#define HPACK_F_TRUNCATED 0x04	   /* value longer than the scratch space: cut */
#define HPACK_F_INDEXED 0x08	   /* represented as an index (dynamic or static) */
#define HPACK_F_SENSITIVE 0x10	   /* never-indexed literal */

struct hpack_field {
	const char *name, *value; /* valid during the callback only */
	uint32_t name_len, value_len;
	uint8_t flags;
};

typedef void (*hpack_field_fn)(void *ctx, const struct hpack_field *f);

struct hpack_entry;

struct hpack_table {
	char *buf; /* entry bytes, live between start and end */
	uint32_t buf_cap, start, end;
	struct hpack_entry *ents; /* ring of entries, oldest at `first` */
	uint32_t ent_cap, first, count;
	uint32_t size;	       /* RFC 7541 4.1 size of the entries held */
	uint32_t max_size;     /* set by the encoder's size updates */
	bool complete;	       /* every insertion since the start was seen */
	bool clamped;	       /* max_size was cut to HPACK_TABLE_LIMIT */
	uint64_t unknown_refs; /* references to entries never seen */
};

/* complete: the decoder sees the connection from its first header block. */
void hpack__init(struct hpack_table *t, bool complete);
void hpack__free(struct hpack_table *t);
/* Sets the table's maximum size, as a size update does (evicting). */
void hpack__set_max_size(struct hpack_table *t, uint32_t size);
/* Header blocks were lost: forget the entries, stop trusting old positions. */
void hpack__lost(struct hpack_table *t);
/* Number of entries known (dynamic indexes 62 .. 61 + count resolve). */
static inline uint32_t hpack__known_entries(const struct hpack_table *t)
{
	return t->count;
}

/* Decodes one complete header block, calling fn for each field in order.
 * Huffman-coded strings are decoded into scratch (name and value share it).
 * Returns the number of fields, HPACK_INCOMPLETE when the block ends inside
 * a representation (pass cut=true when the block is known to be cut short:
 * the table is then marked lost), or HPACK_ERROR (the table is marked lost). */
int hpack__decode(struct hpack_table *t, const uint8_t *block, size_t len, bool cut, char *scratch,
		  size_t scratch_cap, hpack_field_fn fn, void *ctx);

/* The static table entry at index 1..61 (name and value), false otherwise. */
bool hpack__static_entry(uint32_t index, const char **name, const char **value);

/* The entry at dynamic index (62 = newest); false when unknown. For tests. */
bool hpack__dynamic_entry(const struct hpack_table *t, uint32_t index, const char **name,
			  uint32_t *name_len, const char **value, uint32_t *value_len);

/* Integer with an N-bit prefix (RFC 7541 5.1). Returns bytes used, 0 when
 * more bytes are needed, HPACK_ERROR on overflow (values over 2^32 - 1). */
int hpack__decode_int(const uint8_t *p, size_t len, int prefix_bits, uint32_t *out);

/* Huffman (RFC 7541 5.2, Appendix B). decode returns the decoded length
 * (which may exceed cap: only cap bytes are written) or HPACK_ERROR. */
int64_t hpack__huffman_decode(const uint8_t *in, size_t len, char *out, size_t cap);
/* encode returns the encoded length, or 0 if it does not fit in cap. */
size_t hpack__huffman_encode(const char *in, size_t len, uint8_t *out, size_t cap);

#endif
