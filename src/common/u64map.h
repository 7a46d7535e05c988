/* Open-addressing hash map from non-zero 64-bit keys to pointers (linear
 * probing, backward-shift deletion: no tombstones, no allocation per entry). */
#ifndef RASTRO_U64MAP_H
#define RASTRO_U64MAP_H

#include <stdint.h>
#include <string.h>

struct u64map {
	uint64_t *keys; /* 0 = empty slot */
	void **values;
	uint32_t capacity; /* power of two */
	uint32_t count;
};

void u64map__init(struct u64map *m);
void u64map__free(struct u64map *m);
void *u64map__get(const struct u64map *m, uint64_t key);
/* Inserts or replaces; -1 if out of memory. key must not be 0. */
int u64map__put(struct u64map *m, uint64_t key, void *value);
/* Removes and returns the value, or NULL. */
void *u64map__remove(struct u64map *m, uint64_t key);

/* for (uint32_t i = 0; i < m->capacity; i++) if (m->keys[i]) ... m->values[i] */

static inline uint64_t u64map__hash(uint64_t x)
{
	/* splitmix64 finaliser */
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ULL;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebULL;
	x ^= x >> 31;
	return x;
}

/* A hash of n bytes, 8 at a time: keys and texts of tens to hundreds of
 * bytes (metric series keys, SQL texts). */
static inline uint64_t u64map__hash_bytes(const void *data, size_t n, uint64_t seed)
{
	const unsigned char *p = data;
	uint64_t h = 0x9E3779B97F4A7C15ull ^ seed ^ n;
	while (n >= 8) {
		uint64_t w;
		memcpy(&w, p, 8);
		h = (h ^ w) * 0xff51afd7ed558ccdull;
		h ^= h >> 32;
		p += 8;
		n -= 8;
	}
	uint64_t w = 0;
	memcpy(&w, p, n);
	return u64map__hash(h ^ w);
}

#endif
